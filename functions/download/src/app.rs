//! The Lambda side: one SQS batch in, a partial batch response out.
//!
//! Messages of a batch run concurrently (at most [`MAX_CONCURRENT_MESSAGES`] at once), each
//! as its own tokio task in its own span (`message_id`, then `task_id` and `file`). A panic
//! fails only its own message. Each task that one of them asked for
//! ([`crate::domain::settle_check_for`]) gets one settle check
//! ([`crate::domain::check_settled`]: one Query, and the manifest and settle write
//! when its files are all settled), however many of its messages the batch held, in a span
//! of its own (`task_id`), as soon as the batch's last message of that task is done
//! (`app/checks.rs`). Only messages that should be tried again are reported as batch item
//! failures (including those whose task's settle check failed, so that their redeliveries
//! check again); every other message of the batch is deleted by Lambda.

mod checks;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::LambdaEvent;
use stemvault_aws::ConfigError;
use stemvault_aws::sqs_batch::{self, Invocation, Ran, receive_count};
use stemvault_vault::panic::{Guarded, guarded};
use stemvault_vault::{DEADLINE_MARGIN, LeaseEnd, Timestamp};

use crate::aws::AwsPorts;
use crate::config::{Config, FRESH_LINK_PROVIDER};
use crate::domain::{Delivery, Outcome, Ports, Settings, delay_retry, process_message, release_or_fail_claim};
use crate::error::DownloadError;
use crate::fresh_link;
use crate::source::HttpSource;
use crate::upload::part_size_for;
use checks::Checks;

/// Files copied at once by one invocation, the queue's whole batch (`BatchSize`): each holds
/// up to two 8 MiB parts in memory.
pub const MAX_CONCURRENT_MESSAGES: usize = 5;

/// The download function with its clients, built once per Lambda instance. Cheap to clone.
#[derive(Clone)]
pub struct App {
    ports: Arc<AwsPorts>,
    settings: Settings,
}

impl App {
    /// Build the clients and read the provider's API key, for fresh links of expired files
    /// (at start-up; [`stemvault_aws::provider::ProviderKey`] reads it again when it may have
    /// been rotated, or until it can be read: copies need no key). Only
    /// [`FRESH_LINK_PROVIDER`]'s. Fails only when the TLS backend cannot start.
    pub async fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<App, ConfigError> {
        let source = HttpSource::new(config.allowed_sources.clone())?;
        let key = if config.provider.provider == FRESH_LINK_PROVIDER {
            stemvault_aws::provider::read_provider_key(sdk, &config.provider, crate::LOGICAL_NAME).await.map(Arc::new)
        } else {
            None
        };
        let links = fresh_link::refresher(&config.provider, key, &config.allowed_sources);
        let source = source.with_fresh_links(links);
        let settings =
            Settings { max_file_bytes: config.max_file_bytes, part_size: part_size_for(config.max_file_bytes) };
        Ok(App { ports: Arc::new(AwsPorts::new(config, sdk, source)), settings })
    }

    /// Handle one invocation: its batch, until the deadline Lambda gives.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
        let invocation = Invocation::of(&event.context);
        self.handle_invocation(event.payload, invocation).await
    }

    /// Handle one batch; `deadline` is when the invocation must be done.
    pub async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        self.handle_invocation(event, Invocation::from(deadline)).await
    }

    async fn handle_invocation(&self, event: SqsEvent, invocation: Invocation) -> SqsBatchResponse {
        // Boxed: the batch's future nests deeply enough to overflow the compiler's query depth
        // where the runtime's handler embeds it.
        Box::pin(process_batch(self.ports.clone(), self.settings, event.records, invocation)).await
    }
}

/// Handle one batch over `ports`: every message, and one settle check per task that asked
/// for one, once its messages are done ([`checks`]); the partial batch response.
async fn process_batch<P: Ports + Send + Sync + 'static>(
    ports: Arc<P>,
    settings: Settings,
    messages: Vec<SqsMessage>,
    invocation: impl Into<Invocation>,
) -> SqsBatchResponse {
    let Invocation { deadline, lambda_request_id } = invocation.into();
    let checks = Arc::new(Checks::of(&messages, deadline, lambda_request_id.clone()));
    let (handling, checking) = (ports.clone(), checks.clone());
    let span_of = |id: &str| message_span(id, lambda_request_id.as_deref());
    let mut ran = sqs_batch::run_numbered(messages, MAX_CONCURRENT_MESSAGES, span_of, move |i, message| {
        let (ports, checks) = (handling.clone(), checking.clone());
        async move {
            let handled = handle_message(&*ports, &settings, message, deadline).await;
            checks.done(&*ports, i, &handled).await;
            handled
        }
    })
    .await;
    checks.finish(&*ports, &mut ran).await;
    respond(&ran)
}

/// The settle checks end this long before the invocation's deadline at the latest: time for
/// the retries' delays and the answer. An invocation killed by its timeout answers nothing,
/// and its whole batch would come back only after the queue's visibility timeout.
const SETTLE_RESERVE: Duration = Duration::from_secs(3);
/// The retries' delays after the checks end this long before the deadline at the latest.
const ANSWER_RESERVE: Duration = Duration::from_secs(1);

// What a copy may spend past its `stop_at` (the request making the object, then an abort)
// leaves one AWS attempt to record the file before the message is given up. (A release after
// that write failed, on the deadline, is cut short: the claim then ends with its lease.)
const _: () = assert!(
    crate::upload::FINISH_RESERVE.as_millis()
        + stemvault_vault::BEST_EFFORT_CALL_TIMEOUT.as_millis()
        + stemvault_aws::ATTEMPT_TIMEOUT.as_millis()
        + SETTLE_RESERVE.as_millis()
        <= DEADLINE_MARGIN.as_millis()
);

/// The reason a claim given back (or, on the last receive, a file failed) after a panic keeps.
pub const PANICKED_REASON: &str = "the handler panicked (the download logs say where)";

/// One message handled: the delivery the domain saw, and how it ended.
#[derive(Debug, Clone)]
struct Handled {
    delivery: Delivery,
    outcome: Outcome,
}

/// Handle one message (in the caller's span); a retryable outcome delays its next delivery.
///
/// The copy stops at the delivery's `stop_at`, but a table or S3 call after it (recording
/// the file, releasing it) that hangs would still run the invocation into its timeout, which
/// answers nothing: the message is given up [`SETTLE_RESERVE`] before the deadline (retried,
/// its claim ending with its lease), and its delay [`ANSWER_RESERVE`] before.
async fn handle_message<P: Ports>(ports: &P, settings: &Settings, message: SqsMessage, deadline: Instant) -> Handled {
    let delivery = delivery(&message, deadline, ports.now());
    let reserves = Reserves::before(deadline);
    let outcome = reserves.guarded(process_message(ports, settings, &delivery)).await.unwrap_or_else(Outcome::Retry);
    // A panic's claim is given back; one the deadline cut short ends with its lease, but on
    // the last receive both are recorded failed (`release_or_fail_claim`).
    // A panic's own words (logged by the panic hook, shown URLs hidden) are not the file's
    // error, which GET, events and the manifest show once it fails.
    let cut_short = match &outcome {
        Outcome::Retry(DownloadError::Panicked) => Some(PANICKED_REASON.to_owned()),
        Outcome::Retry(e @ DownloadError::OutOfTime) if delivery.is_last_receive() => Some(e.to_string()),
        _ => None,
    };
    log_outcome(&outcome, &delivery, cut_short.is_some());
    if let Some(reason) = cut_short {
        // Bounded by the answer's reserve too: a panic caught just before the give-up leaves
        // less than the ending's own bound. One that takes all of it leaves the retry no delay
        // (the message then waits out its visibility timeout): a panic and a slow table at
        // once, rare enough.
        let ending = release_or_fail_claim(ports, &delivery, &reason);
        reserves.by_answer("no time left to end the claim; it ends with its lease", ending).await;
    }
    if outcome.is_failure() {
        reserves.delay(ports, &delivery, &outcome).await;
    }
    Handled { delivery, outcome }
}

/// When an invocation's work must end so that it still answers: [`SETTLE_RESERVE`] and
/// [`ANSWER_RESERVE`] before its deadline.
#[derive(Debug, Clone, Copy)]
struct Reserves {
    /// Handling and settle checks still running are given up.
    give_up_at: tokio::time::Instant,
    /// The retries' delays are given up.
    answer_by: tokio::time::Instant,
}

impl Reserves {
    fn before(deadline: Instant) -> Reserves {
        let at = |reserve| tokio::time::Instant::from_std(deadline.checked_sub(reserve).unwrap_or(deadline));
        Reserves { give_up_at: at(SETTLE_RESERVE), answer_by: at(ANSWER_RESERVE) }
    }

    /// `work`'s result, or why there is none: it panicked, or ran to [`Reserves::give_up_at`].
    async fn guarded<T>(&self, work: impl Future<Output = T>) -> Result<T, DownloadError> {
        match guarded(self.give_up_at, work).await {
            Guarded::Done(done) => Ok(done),
            Guarded::Panicked => Err(DownloadError::Panicked),
            Guarded::OutOfTime => Err(DownloadError::OutOfTime),
        }
    }

    /// [`delay_retry`], given up at [`Reserves::answer_by`] (the retry then comes once the
    /// visibility timeout is over).
    async fn delay<P: Ports>(&self, ports: &P, delivery: &Delivery, outcome: &Outcome) {
        self.by_answer("no time left to delay the retry", delay_retry(ports, delivery, outcome)).await;
    }

    /// `work`, given up (saying `given_up`) at [`Reserves::answer_by`].
    async fn by_answer(&self, given_up: &str, work: impl Future<Output = ()>) {
        if tokio::time::timeout_at(self.answer_by, work).await.is_err() {
            tracing::warn!("{given_up}");
        }
    }
}

/// A message's span: its id and Lambda's id of the invocation (None locally), the task and
/// file once read.
fn message_span(id: &str, lambda_request_id: Option<&str>) -> tracing::Span {
    tracing::error_span!(
        "message",
        message_id = %id,
        lambda_request_id,
        task_id = tracing::field::Empty,
        file = tracing::field::Empty
    )
}

/// The partial batch response: the messages whose outcome is a failure, or whose task
/// panicked.
fn respond(ran: &[Ran<Handled>]) -> SqsBatchResponse {
    sqs_batch::respond(ran, |handled| handled.outcome.is_failure())
}

/// The domain's view of one message.
fn delivery(message: &SqsMessage, deadline: Instant, now: Timestamp) -> Delivery {
    let started = Instant::now();
    let remaining = deadline.saturating_duration_since(started);
    Delivery {
        body: message.body.clone().unwrap_or_default(),
        receipt_handle: message.receipt_handle.clone().filter(|h| !h.is_empty()),
        receive_count: receive_count(message),
        worker: uuid::Uuid::new_v4().to_string(),
        stop_at: deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(started),
        // Rounded up: the lease must not end before the invocation does.
        lease_until: LeaseEnd::at(now.plus(remaining)).plus(Duration::from_secs(1)),
    }
}

/// `claim_ending`: the claim is ended below (`release_or_fail_claim`), which says how.
fn log_outcome(outcome: &Outcome, delivery: &Delivery, claim_ending: bool) {
    match outcome {
        Outcome::Stored(_) | Outcome::FailedForGood(_) | Outcome::DeadLettered(_) => {}
        Outcome::AlreadySettled => tracing::info!("done: the file was already settled"),
        Outcome::ManifestChecked => tracing::info!("done: the task's manifest is written"),
        Outcome::Dropped(e) => tracing::warn!(error = %e, "dropping the message"),
        Outcome::Unreadable(e) => tracing::error!(
            error = %e,
            "a message this build cannot read: sent back a minute per receive until its receives run out, on to \
             the dead-letter queue"
        ),
        // Its own words are the panic hook's line, shown URLs hidden.
        Outcome::Retry(DownloadError::Panicked) => {
            tracing::warn!(
                "the handler panicked; the message comes back, or after its last receive goes to the dead-letter queue"
            )
        }
        // Not done on its last receive, and the file not recorded failed.
        Outcome::Retry(e) if delivery.is_last_receive() && !claim_ending => {
            tracing::error!(
                error = %e,
                receive_count = delivery.receive_count,
                "not done on its last receive: the message goes to the dead-letter queue and the file is not recorded \
                 failed (its task stays open); redrive the message once the cause is gone, or the sweeper sends the \
                 file again once its message can no longer be on the queue"
            )
        }
        // A failure the copy path recorded on the last receive is `DeadLettered`, logged there.
        Outcome::Retry(e) => {
            tracing::warn!(error = %e, "not done; the message comes back, or after its last receive goes to the dead-letter queue")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stemvault_vault::{FileStatus, VaultState};

    use super::*;
    use crate::domain::Measure;
    use crate::error::FetchError;
    use crate::memory::{MemoryPorts, SETTINGS, Script, TASK, job_body, job_body_of, record, record_of, serve, url};
    use crate::upload::StoredObject;
    use tracing::Level;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body.to_owned());
        m
    }

    fn stored() -> Outcome {
        Outcome::Stored(StoredObject { bytes: 1, sha256_hex: String::new(), content_type: None, parts: 1 })
    }

    fn handled(m: &SqsMessage, outcome: Outcome) -> Handled {
        Handled { delivery: delivery(m, Instant::now(), Timestamp::now()), outcome }
    }

    async fn outcome_for(m: SqsMessage) -> Handled {
        let outcome = match m.body.as_deref() {
            Some("panic") => panic!("poisoned message"),
            Some("retry") => Outcome::Retry(DownloadError::LostClaim),
            Some("drop") => {
                Outcome::Dropped(DownloadError::Dropped(stemvault_vault::download::DropReason::TaskMissing))
            }
            _ => stored(),
        };
        handled(&m, outcome)
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    #[tokio::test]
    async fn only_failed_and_panicked_messages_are_reported() {
        let messages = vec![
            message("m1", "ok"),
            message("m2", "panic"),
            message("m3", "retry"),
            message("m4", "drop"),
            message("m5", "ok"),
        ];
        let span_of = |id: &str| message_span(id, None);
        let response = respond(&sqs_batch::run_messages(messages, 2, span_of, outcome_for).await);
        assert_eq!(failed_ids(&response), vec!["m2", "m3"]);
    }

    #[tokio::test]
    async fn a_poisoned_message_fails_only_itself() {
        // a is stored already; the message of a panics outside its guard (the handler itself),
        // so the task's check is made after the batch, with c's message, and settles it.
        let ports = Arc::new(MemoryPorts::with_record(record(&[("a", FileStatus::Stored), ("c", FileStatus::Queued)])));
        serve(&ports, "c", b"c bytes");
        let deadline = Instant::now() + Duration::from_secs(120);
        let messages = vec![message("m1", &job_body("a")), message("m2", &job_body("c"))];
        let checks = Arc::new(Checks::of(&messages, deadline, None));
        let (handling, checking) = (ports.clone(), checks.clone());
        let mut ran = sqs_batch::run_numbered(
            messages,
            4,
            |id: &str| message_span(id, None),
            move |i, message| {
                let (ports, checks) = (handling.clone(), checking.clone());
                async move {
                    if message.message_id.as_deref() == Some("m1") {
                        panic!("poisoned message");
                    }
                    let handled = handle_message(&*ports, &SETTINGS, message, deadline).await;
                    checks.done(&*ports, i, &handled).await;
                    handled
                }
            },
        )
        .await;
        assert_eq!(ports.record(TASK).vault, VaultState::Pending, "a's message never said it was done");
        checks.finish(&*ports, &mut ran).await;
        assert_eq!(failed_ids(&respond(&ran)), vec!["m1"]);
        let stored = ports.record(TASK);
        assert_eq!((stored.files["c"].status, stored.vault), (FileStatus::Stored, VaultState::Complete));
    }

    /// A message's lines name the invocation (Lambda's request id, which the platform's own
    /// lines carry: a timeout's, `REPORT`), the task and the file.
    #[tokio::test]
    async fn a_message_s_lines_name_its_invocation() {
        let captured = stemvault_aws::log_capture::capture_logs();
        let ports = Arc::new(MemoryPorts::with_record(record(&[("a", FileStatus::Queued)])));
        serve(&ports, "a", b"a bytes");
        let deadline = Instant::now() + Duration::from_secs(120);
        let invocation =
            Invocation { deadline, lambda_request_id: Some("8476a536-e9f4-11e8-9739-2dfe598c3fcd".into()) };
        let response = process_batch(ports.clone(), SETTINGS, vec![message("m1", &job_body("a"))], invocation).await;
        assert!(response.batch_item_failures.is_empty());
        let logs = captured.text();
        let stored = logs.lines().find(|l| l.contains(r#""message_id":"m1""#) && l.contains(r#""file":"a""#));
        let line = stored.unwrap_or_default();
        assert!(line.contains(r#""lambda_request_id":"8476a536-e9f4-11e8-9739-2dfe598c3fcd""#), "{logs}");
    }

    /// A message not done on its last receive (here its file is another worker's) goes to the
    /// dead-letter queue without its file recorded failed: an ERROR line says so and what is
    /// left to do (a WARN saying it "comes back" was all the operator had).
    #[tokio::test]
    async fn a_message_not_done_on_its_last_receive_says_so_in_an_error() {
        use crate::domain::MAX_RECEIVE_COUNT;
        let captured = stemvault_aws::log_capture::capture_logs();
        let mut held = record(&[("a", FileStatus::Downloading)]);
        let a = held.files.get_mut("a").unwrap();
        (a.claim, a.lease_until) = (Some("another-worker".into()), Some(LeaseEnd::from_unix_seconds(4_000_000_000)));
        let ports = Arc::new(MemoryPorts::with_record(held));
        let mut m = message("m1", &job_body("a"));
        m.attributes.insert("ApproximateReceiveCount".into(), MAX_RECEIVE_COUNT.to_string());
        let response = process_batch(ports.clone(), SETTINGS, vec![m], Instant::now() + Duration::from_secs(120)).await;
        assert_eq!(failed_ids(&response), vec!["m1"]);
        let logs = captured.text();
        let said = captured.lines_with("not done on its last receive");
        assert!(said.len() == 1 && said[0].is(Level::ERROR, &[]), "{logs}");
    }

    /// A copy that panics fails its own message only: the claim it held is given back (the
    /// file queued again, a panic its reason: not the panic's own words, which the panic hook
    /// logs with URLs hidden, and which GET would show once the file fails) and its retry is
    /// delayed, so that the next receive copies the file rather than wait out the claim's
    /// lease.
    #[tokio::test]
    async fn a_copy_that_panics_gives_its_claim_back_and_delays_its_retry() {
        let ports = Arc::new(MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)])));
        ports.source(&url("a"), Script::Panic);
        serve(&ports, "b", b"b bytes");
        let mut batch = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        batch[0].receipt_handle = Some("r1".to_owned());
        let response = process_batch(ports.clone(), SETTINGS, batch, Instant::now() + Duration::from_secs(120)).await;
        assert_eq!(failed_ids(&response), vec!["m1"]);
        let stored = ports.record(TASK);
        let a = &stored.files["a"];
        assert_eq!((a.status, a.claim.as_deref()), (FileStatus::Queued, None), "{a:?}");
        assert_eq!(a.error.as_deref(), Some(PANICKED_REASON));
        assert_eq!(stored.files["b"].status, FileStatus::Stored);
        let delays = ports.delays.lock().unwrap().clone();
        assert_eq!(delays.iter().map(|(handle, _)| handle.as_str()).collect::<Vec<_>>(), ["r1"]);
    }

    /// A batch with several messages of one task checks that task once, after them all:
    /// one Query (and one settle write) per task, however many of its files the batch held.
    #[tokio::test]
    async fn one_settle_check_per_task_per_batch() {
        const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let ports = MemoryPorts::with_record(record(&[
            ("a", FileStatus::Queued),
            ("b", FileStatus::Queued),
            ("c", FileStatus::Queued),
        ]));
        ports.put_record(record_of(OTHER, &[("x", FileStatus::Queued), ("y", FileStatus::Queued)]));
        for name in ["a", "b", "c", "x", "y"] {
            serve(&ports, name, name.as_bytes());
        }
        let ports = Arc::new(ports);
        let messages = vec![
            message("m1", &job_body("a")),
            message("m2", &job_body_of(OTHER, "x")),
            message("m3", &job_body("b")),
            message("m4", &job_body("c")),
            message("m5", &job_body_of(OTHER, "y")),
            message("m6", &job_body("a")),
            message("m7", "not json"),
        ];
        let response =
            process_batch(ports.clone(), SETTINGS, messages, Instant::now() + Duration::from_secs(120)).await;
        // The duplicate of a finds it stored or claimed; m7, unreadable, goes on to the DLQ.
        assert_eq!(failed_ids(&response), vec!["m7"]);
        let calls = ports.take_table_calls();
        let count = |port: &str| calls.iter().filter(|c| **c == port).count();
        assert_eq!((count("load_task"), count("settle_task")), (2, 2), "{calls:?}");
        assert_eq!((count("claim_file"), count("record_stored")), (6, 5), "{calls:?}");
        for task in [TASK, OTHER] {
            assert_eq!(ports.record(task).vault, VaultState::Complete, "{task}");
        }
        let settled = ports.measures.lock().unwrap().iter().filter(|m| matches!(m, Measure::Settled { .. })).count();
        assert_eq!(settled, 2);
    }

    /// A task whose messages are done is checked (and settled) at once, not once the batch's
    /// slowest copy ends: here another task's source never answers, and the copy waits for
    /// its stop, near the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_task_settles_without_waiting_for_a_slow_copy_of_another_task_in_its_batch() {
        const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)]));
        ports.put_record(record_of(OTHER, &[("x", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        serve(&ports, "b", b"b");
        ports.source(&crate::memory::url("x"), Script::Hang);
        let ports = Arc::new(ports);
        let batch =
            vec![message("m1", &job_body("a")), message("m2", &job_body_of(OTHER, "x")), message("m3", &job_body("b"))];
        let deadline = Instant::now() + Duration::from_secs(120);
        let batch = tokio::spawn(process_batch(ports.clone(), SETTINGS, batch, deadline));
        let vaulted = async {
            while ports.record(TASK).vault != VaultState::Complete {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Paused time: what happened first, not how long anything took.
        tokio::time::timeout(Duration::from_secs(10), vaulted).await.expect("vaulted while x is still being copied");
        assert!(!batch.is_finished(), "x's copy still runs");
        assert_eq!(ports.record(OTHER).files["x"].status, FileStatus::Downloading);
        let response = batch.await.expect("answered");
        assert_eq!(failed_ids(&response), vec!["m2"], "only x is tried again");
        let settled = ports.measures.lock().unwrap().iter().filter(|m| matches!(m, Measure::Settled { .. })).count();
        assert_eq!(settled, 1, "checked once");
    }

    /// A task whose check fails sends its messages back (delayed) at once too, not once the
    /// batch's slowest copy ends.
    #[tokio::test(start_paused = true)]
    async fn a_failed_check_sends_its_messages_back_without_waiting_for_the_batch() {
        const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued)]));
        ports.put_record(record_of(OTHER, &[("x", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        ports.source(&crate::memory::url("x"), Script::Hang);
        *ports.settle_failures.lock().unwrap() = 1;
        let ports = Arc::new(ports);
        // x first: a's message is the batch's second, and comes back as that one.
        let mut batch = vec![message("m1", &job_body_of(OTHER, "x")), message("m2", &job_body("a"))];
        for (m, receipt) in batch.iter_mut().zip(["r1", "r2"]) {
            m.receipt_handle = Some(receipt.to_owned());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let batch = tokio::spawn(process_batch(ports.clone(), SETTINGS, batch, deadline));
        let sent_back = async {
            while !ports.delays.lock().unwrap().iter().any(|(receipt, _)| receipt == "r2") {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Paused time: what happened first, not how long anything took.
        tokio::time::timeout(Duration::from_secs(10), sent_back).await.expect("a's message delayed while x is copied");
        assert!(!batch.is_finished(), "x's copy still runs");
        let response = batch.await.expect("answered");
        assert_eq!(failed_ids(&response), vec!["m1", "m2"]);
        let delayed = ports.delays.lock().unwrap().iter().filter(|(receipt, _)| receipt == "r2").count();
        assert_eq!(delayed, 1, "delayed once");
    }

    /// One file's batch whose settle checks fail and then panic (delaying the message they
    /// send back) `times` times: its answer, and the ports.
    async fn batch_whose_check_panics(times: u32) -> (SqsBatchResponse, Arc<MemoryPorts>) {
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        *ports.settle_failures.lock().unwrap() = times;
        *ports.delay_panics.lock().unwrap() = times;
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a"))];
        batch[0].receipt_handle = Some("r1".to_owned());
        let response = process_batch(ports.clone(), SETTINGS, batch, Instant::now() + Duration::from_secs(120)).await;
        (response, ports)
    }

    /// A check that panics outside its guard (here delaying a message it sends back) is made
    /// again after the batch, rather than lost with the message's task.
    #[tokio::test]
    async fn a_check_that_panics_is_made_again_after_the_batch() {
        let (response, ports) = batch_whose_check_panics(1).await;
        assert_eq!(failed_ids(&response), Vec::<&str>::new(), "the second check settled the task");
        assert_eq!(ports.record(TASK).vault, VaultState::Complete);
    }

    /// A check that panics again after the batch leaves the task open for the sweeper: its
    /// messages are not sent back (their files are settled).
    #[tokio::test]
    async fn a_check_that_panics_after_the_batch_too_leaves_the_task_to_the_sweeper() {
        let (response, ports) = batch_whose_check_panics(2).await;
        assert_eq!(failed_ids(&response), Vec::<&str>::new(), "its file is stored");
        let task = ports.record(TASK);
        assert_eq!((task.files["a"].status, task.vault), (FileStatus::Stored, VaultState::Pending));
        assert_eq!(task.open.as_deref(), Some("open"), "listed for the sweeper");
    }

    /// When a task's settle check fails, every message of the batch that asked for it goes
    /// back to the queue (delayed), and the next batch's check settles the task.
    #[tokio::test]
    async fn a_failed_settle_check_retries_the_messages_that_asked_for_it() {
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        serve(&ports, "b", b"b");
        *ports.settle_failures.lock().unwrap() = 1;
        let ports = Arc::new(ports);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut first = vec![message("m1", &job_body("a")), message("m2", &job_body("b")), message("m3", "{}")];
        for (m, receipt) in first.iter_mut().zip(["r1", "r2", "r3"]) {
            m.receipt_handle = Some(receipt.to_owned());
        }
        let response = process_batch(ports.clone(), SETTINGS, first, deadline).await;
        assert_eq!(failed_ids(&response), vec!["m1", "m2", "m3"], "m3, unreadable, goes on to the dead-letter queue");
        let mut delayed: Vec<String> = ports.delays.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
        delayed.sort();
        assert_eq!(delayed, ["r1", "r2", "r3"]);
        assert_eq!(ports.record(TASK).vault, VaultState::Pending);
        // Counted, so that failures no retry mends raise settle-checks-failing.
        let failed_checks = || {
            let measures = ports.measures.lock().unwrap();
            measures.iter().filter(|m| matches!(m, Measure::SettleCheckFailed { reason: "table" })).count()
        };
        assert_eq!(failed_checks(), 1);

        let again = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        let response = process_batch(ports.clone(), SETTINGS, again, deadline).await;
        assert_eq!(failed_ids(&response), Vec::<&str>::new());
        assert_eq!(ports.record(TASK).vault, VaultState::Complete);
        assert_eq!(ports.opened().len(), 2, "nothing copied again");
        assert_eq!(failed_checks(), 1, "the check that settled is not counted");
    }

    /// On a message's last receive, a failed settle check does not send it back: its file is
    /// stored, and another receive would only move it to the dead-letter queue (its alarm
    /// saying a file was lost). The task stays open for the sweeper to settle.
    #[tokio::test]
    async fn a_failed_settle_check_on_the_last_receive_keeps_the_message_out_of_the_dlq() {
        use crate::domain::MAX_RECEIVE_COUNT;
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        serve(&ports, "b", b"b");
        *ports.settle_failures.lock().unwrap() = 1;
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        for (m, (receipt, count)) in batch.iter_mut().zip([("r1", MAX_RECEIVE_COUNT), ("r2", 2)]) {
            m.receipt_handle = Some(receipt.to_owned());
            m.attributes.insert("ApproximateReceiveCount".into(), count.to_string());
        }
        let response = process_batch(ports.clone(), SETTINGS, batch, Instant::now() + Duration::from_secs(120)).await;
        assert_eq!(failed_ids(&response), vec!["m2"], "only the message with receives left checks again");
        let delayed: Vec<String> = ports.delays.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(delayed, ["r2"]);
        let task = ports.record(TASK);
        assert_eq!((task.files["a"].status, task.vault), (FileStatus::Stored, VaultState::Pending));
        assert_eq!(task.open.as_deref(), Some("open"), "listed for the sweeper");
    }

    /// A settle check still running near the deadline (here its manifest write never
    /// answers) is given up before it, and the messages that asked for it go back to the
    /// queue: the invocation answers in time instead of being killed with its whole batch.
    #[tokio::test(start_paused = true)]
    async fn a_settle_check_that_hangs_is_given_up_before_the_deadline() {
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        // The manifest write waits for a release that never comes.
        let (reached, _at_gate) = tokio::sync::oneshot::channel();
        let (_release, released) = tokio::sync::oneshot::channel();
        *ports.manifest_gate.lock().unwrap() = Some(crate::memory::ManifestGate { reached, release: released });
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a"))];
        batch[0].receipt_handle = Some("r1".to_owned());
        // On the paused clock (it stood still from the runtime's start, the real one did not).
        let started = tokio::time::Instant::now();
        let deadline = started.into_std() + Duration::from_secs(60);
        let response = process_batch(ports.clone(), SETTINGS, batch, deadline).await;
        assert_eq!(failed_ids(&response), vec!["m1"]);
        // Paused time: where the check was given up, not how long anything took.
        let given_up = started.elapsed();
        assert!(
            given_up >= Duration::from_secs(60) - SETTLE_RESERVE && given_up < Duration::from_secs(58),
            "{given_up:?}"
        );
        assert_eq!(ports.delays.lock().unwrap().len(), 1, "delayed like any retry");
        assert_eq!(ports.record(TASK).files["a"].status, FileStatus::Stored, "the copy itself is kept");
    }

    /// A message whose table writes never answer (recording its file stored; the release
    /// of another after a failed copy) is given up before the deadline, retried, and the
    /// batch answered: an invocation run into its timeout answers nothing for any message.
    #[tokio::test(start_paused = true)]
    async fn a_message_whose_table_write_hangs_is_given_up_before_the_deadline() {
        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        ports.source(&crate::memory::url("b"), Script::Fail(FetchError::Timeout("stalled".into())));
        ports.file_writes_hang.store(true, std::sync::atomic::Ordering::SeqCst);
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        for m in &mut batch {
            m.receipt_handle = m.message_id.clone();
        }
        // On the paused clock (it stood still from the runtime's start, the real one did not).
        let started = tokio::time::Instant::now();
        let deadline = started.into_std() + Duration::from_secs(60);
        let processing = process_batch(ports.clone(), SETTINGS, batch, deadline);
        let response = tokio::time::timeout(Duration::from_secs(120), processing).await.expect("answered");
        assert_eq!(failed_ids(&response), vec!["m1", "m2"]);
        let answered = started.elapsed();
        assert!(answered < Duration::from_secs(60) - ANSWER_RESERVE, "{answered:?}");
        assert_eq!(ports.delays.lock().unwrap().len(), 2, "each delayed like any retry");
    }

    /// A message cut short by the deadline on its last receive (here its `stored` write never
    /// answers) records its file failed as `dead_lettered`, saying so, rather than leaving it
    /// held until its lease and pending for the sweeper's stranded check; so too when that
    /// write was applied and its answer lost (the SDK's retry refused: the item is already
    /// ours). With receives left, the claim ends with its lease and the message comes back.
    #[tokio::test(start_paused = true)]
    async fn a_message_cut_short_on_its_last_receive_fails_its_file_as_dead_lettered() {
        use crate::domain::MAX_RECEIVE_COUNT;
        for (receive, lost_answer) in [(MAX_RECEIVE_COUNT, false), (MAX_RECEIVE_COUNT, true), (2, false)] {
            let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued)]));
            serve(&ports, "a", b"a");
            ports.file_writes_hang.store(true, std::sync::atomic::Ordering::SeqCst);
            *ports.lost_answers.lock().unwrap() = u32::from(lost_answer);
            let ports = Arc::new(ports);
            let mut m = message("m1", &job_body("a"));
            m.receipt_handle = Some("r1".to_owned());
            m.attributes.insert("ApproximateReceiveCount".into(), receive.to_string());
            let deadline = tokio::time::Instant::now().into_std() + Duration::from_secs(60);
            let processing = process_batch(ports.clone(), SETTINGS, vec![m], deadline);
            let response = tokio::time::timeout(Duration::from_secs(120), processing).await.expect("answered");
            assert_eq!(failed_ids(&response), vec!["m1"], "receive {receive}");
            let a = ports.record(TASK).files["a"].clone();
            let measures = ports.measures.lock().unwrap().clone();
            let dead_lettered = measures.iter().filter(|m| matches!(m, Measure::Failed { .. })).count();
            if receive < MAX_RECEIVE_COUNT {
                assert_eq!((a.status, a.error), (FileStatus::Downloading, None), "held until its lease");
                assert_eq!(dead_lettered, 0);
                continue;
            }
            let expected = format!("dead_lettered: {} (receive {receive}, the last)", DownloadError::OutOfTime);
            assert_eq!((a.status, a.claim.as_deref()), (FileStatus::Failed, None), "lost answer {lost_answer}");
            assert_eq!(a.error.as_deref(), Some(expected.as_str()), "lost answer {lost_answer}");
            assert_eq!(a.error_code, Some(crate::domain::FailureCode::DeadLettered), "lost answer {lost_answer}");
            assert_eq!(dead_lettered, 1, "counted once, lost answer {lost_answer}");
        }
    }

    /// A deferred check (another worker settled the task's last file, or the task moved on at
    /// every check) sends one of the messages that asked back to the queue, not all: one
    /// redelivery checks the whole task; the first not on its last receive.
    #[tokio::test]
    async fn a_deferred_settle_check_sends_one_message_back() {
        let mut r = record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued), ("c", FileStatus::Stored)]);
        // Another worker stored c last (its clock ahead of this batch's, MemoryPorts' fixed one).
        r.files.get_mut("c").unwrap().stored_at = Some(Timestamp::from_unix_ms(1_800_000_000_000 + 3_600_000));
        let ports = MemoryPorts::with_record(r);
        serve(&ports, "a", b"a");
        serve(&ports, "b", b"b");
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        for (m, receipt) in batch.iter_mut().zip(["r1", "r2"]) {
            m.receipt_handle = Some(receipt.to_owned());
        }
        let response = process_batch(ports.clone(), SETTINGS, batch, Instant::now() + Duration::from_secs(120)).await;
        assert_eq!(failed_ids(&response), vec!["m1"], "the first of the batch's order");
        let delayed: Vec<String> = ports.delays.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(delayed, ["r1"]);
        assert_eq!(ports.record(TASK).vault, VaultState::Pending, "deferred to the worker that stored c");

        let ports = MemoryPorts::with_record(record(&[("a", FileStatus::Queued), ("b", FileStatus::Queued)]));
        serve(&ports, "a", b"a");
        serve(&ports, "b", b"b");
        *ports.written_over_before_settle.lock().unwrap() = crate::domain::SETTLE_CHECKS;
        let ports = Arc::new(ports);
        let mut batch = vec![message("m1", &job_body("a")), message("m2", &job_body("b"))];
        let last = crate::domain::MAX_RECEIVE_COUNT.to_string();
        batch[0].attributes.insert("ApproximateReceiveCount".into(), last);
        let response = process_batch(ports.clone(), SETTINGS, batch, Instant::now() + Duration::from_secs(120)).await;
        assert_eq!(failed_ids(&response), vec!["m2"], "m1 would go to the dead-letter queue");
        assert_eq!(ports.record(TASK).vault, VaultState::Pending);
    }

    #[test]
    fn the_lambda_deadline_becomes_a_lease() {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut m = message("m", "{}");
        m.receipt_handle = Some("r".into());
        let d = delivery(&m, deadline, now);
        let left_after = deadline.saturating_duration_since(Instant::now());
        assert_eq!(d.stop_at, deadline - DEADLINE_MARGIN);
        // Not before the invocation's end (rounded up, not down), and at most a second after.
        let lease_ms = d.lease_until.timestamp().unix_ms;
        let ends_ms = 1_800_000_000_000 + i64::try_from(left_after.as_millis()).unwrap();
        let at_most = LeaseEnd::from_unix_seconds(1_800_000_061);
        assert!(lease_ms >= ends_ms && d.lease_until <= at_most, "{:?} against {ends_ms}", d.lease_until);
        assert_eq!(d.receipt_handle.as_deref(), Some("r"));
        assert_ne!(delivery(&m, deadline, now).worker, d.worker, "one worker id per attempt");
    }
}
