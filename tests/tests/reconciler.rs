//! The reconciler against the emulator and a provider we do not control (the fake provider of
//! `stemvault_tests::fake_provider`, answering the documented record-info answers over HTTP):
//! a task registered with `PUT /tasks/{id}` and never called back is vaulted by polling; a
//! task whose `complete` callback never came gets it by polling; a flapping provider (429,
//! 500) gets the task vaulted anyway with nothing duplicated; a wrong key is one clear error
//! and changes nothing but the poll bookkeeping; a key rotated at the provider and in the
//! secret is re-read on the first 401 and the poll succeeds; a callback after a poll, and a
//! poll repeating a poll, add nothing; a task still without a result at the retention is abandoned; a
//! callback signed too long ago has its task registered by ingest and vaulted by polling.
//!
//! Time is not waited for: between runs a test moves the task's `reconcile_at` (the index's
//! sort key) into the past, as the clock would.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use stemvault_aws::FromEnv;
use stemvault_aws::secrets::{SecretText, put_secret};
use stemvault_reconciler::domain::Outcome;
use stemvault_tests::TestEnv;
use stemvault_tests::fake_provider::{Answer, FakeProvider};
use stemvault_vault::{FileStatus, TaskRecord, Timestamp, VaultState};
use suno_callbacks::{Family, Stage};

const KEY: &str = "fake-provider-key-1";

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The provider secret in the emulator, holding `key`; its ARN.
async fn provider_secret(env: &TestEnv, key: &str) -> String {
    let name = format!("{}-provider", env.resources.table_name);
    put_secret(&env.config, &name, &SecretText::new(key)).await.expect("put the provider secret")
}

async fn reconciler(
    env: &TestEnv,
    provider: &FakeProvider,
    key: &str,
    extra: &[(&str, &str)],
) -> stemvault_reconciler::App {
    let secret = provider_secret(env, key).await;
    // An extra variable overrides the ones after it.
    let mut vars: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    vars.extend([
        ("PROVIDER", "kie".to_owned()),
        ("PROVIDER_BASE_URL", provider.origin()),
        ("PROVIDER_SECRET_ARN", secret),
        ("RECONCILE_AFTER_SECONDS", "600".to_owned()),
    ]);
    let config = env.reconciler_config(&vars);
    let app = stemvault_reconciler::App::new(config, &env.config).await.expect("the reconciler starts");
    assert!(app.is_on());
    app
}

fn results(env: &TestEnv) -> stemvault_results::App {
    env.results_app(Duration::from_secs(60))
}

async fn call(
    app: &stemvault_results::App,
    method: &str,
    task_id: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let request: Request = lambda_http::http::Request::builder()
        .method(method)
        .uri(format!("/tasks/{task_id}"))
        .body(Body::Text(body.to_owned()))
        .unwrap();
    let response = app.handle(request).await;
    (response.status(), serde_json::from_slice(response.body().as_ref()).expect("a JSON answer"))
}

/// Register `task_id` through `PUT /tasks/{id}`; checks GET answers it at once.
async fn register(env: &TestEnv, task_id: &str, family: &str) {
    let app = results(env);
    let body = format!(r#"{{"family":"{family}","client_ref":"order-{task_id}"}}"#);
    let (status, created) = call(&app, "PUT", task_id, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, got) = call(&app, "GET", task_id, "").await;
    assert_eq!(
        (status, got["stage"].as_str(), got["vault"].as_str()),
        (StatusCode::OK, Some("submitted"), Some("pending"))
    );
    assert_eq!(got["client_ref"].as_str(), Some(format!("order-{task_id}").as_str()));
}

/// A task registered as `family` whose record the provider answers with `answers` to its
/// polls, in turn; its id.
async fn registered(env: &TestEnv, provider: &FakeProvider, family: Family, answers: Vec<Answer>) -> String {
    let task = new_task_id();
    provider.add_task(&task, family, answers);
    register(env, &task, family.as_str()).await;
    task
}

/// A registered vocal separation task whose result the provider answers to a poll; its id.
async fn registered_vocal_separation(env: &TestEnv, provider: &FakeProvider) -> String {
    registered(env, provider, Family::VocalSeparation, vec![Answer::Success]).await
}

/// A registered vocal separation task whose result a keyed reconciler's poll recorded; its
/// id, and that reconciler.
async fn vaulted_by_a_poll(env: &TestEnv, provider: &FakeProvider) -> (String, stemvault_reconciler::App) {
    let task = registered_vocal_separation(env, provider).await;
    let app = reconciler(env, provider, KEY, &[]).await;
    assert_eq!(run_due(env, &app, &task).await.results, 1);
    (task, app)
}

/// Move the task's registration (and first delivery) `ago` into the past, as a task
/// registered that long ago.
async fn backdate_registration(env: &TestEnv, task: &str, ago: Duration) {
    let record = env.task_record(task).await;
    let long_ago = Timestamp::from_unix_ms(Timestamp::now().unix_ms - ago.as_millis() as i64);
    let mut backdated = record.clone();
    (backdated.registered_at, backdated.first_received_at) = (Some(long_ago), long_ago);
    backdated.version += 1;
    env.rewrite_record(&record, &backdated).await;
}

/// One run, with a task made due first; waits for the index (eventually consistent in AWS,
/// at once in the emulator).
async fn run_due(env: &TestEnv, app: &stemvault_reconciler::App, task_id: &str) -> Outcome {
    env.make_due(task_id).await;
    app.run_within("test", Duration::from_secs(30)).await.expect("a run")
}

/// Deliver the download queue to the downloader until it is empty.
async fn download_all(env: &TestEnv, provider: &FakeProvider) {
    let download = env.download_app(&provider.origin(), None).await;
    env.download_all(&download, 30).await;
}

fn stored_names(record: &TaskRecord) -> Vec<&str> {
    record.files.iter().filter(|(_, f)| f.status == FileStatus::Stored).map(|(n, _)| n.as_str()).collect()
}

/// A scheduled invocation as Lambda makes it (`App::handle`): a run whose next scheduled run
/// is less than the reconciler's margin away takes nothing (it would still be working when the
/// next starts); one scheduled now polls the due task.
#[tokio::test]
async fn a_scheduled_invocation_stops_in_time_for_the_next_run() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;
    env.make_due(&task).await;
    let invocation = |ago| stemvault_tests::scheduled_invocation("req-1", Duration::from_secs(90), Some(ago));
    // Scheduled 100 s ago: the next run is 20 s away, within the margin.
    let late = app.handle(invocation(Duration::from_secs(100))).await.expect("a run");
    assert_eq!((late.polls, provider.polls(&task)), (0, 0), "{late:?}");
    let on_time = app.handle(invocation(Duration::ZERO)).await.expect("a run");
    assert_eq!((on_time.polls, on_time.results), (1, 1), "{on_time:?}");
}

#[tokio::test]
async fn a_registered_task_never_called_back_is_vaulted_by_polling() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;

    // Not due yet: nothing polled.
    assert_eq!(app.run_within("early", Duration::from_secs(30)).await.unwrap().tasks_due, 0);
    assert_eq!(provider.polls(&task), 0);

    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.polls, outcome.results), (1, 1), "{outcome:?}");
    download_all(&env, &provider).await;

    let record = env.task_record(&task).await;
    assert_eq!((record.stage, record.vault), (Stage::Final, VaultState::Complete));
    assert_eq!(stored_names(&record), ["instrumental", "vocal"]);
    assert_eq!((record.reconcile.as_deref(), record.open.as_deref(), record.polls), (None, None, 1));
    assert_eq!(record.client_ref.as_deref(), Some(format!("order-{task}").as_str()));
    assert!(env.object(&format!("tasks/{task}/manifest.json")).await.is_some());
    let bodies = env.keys(&format!("tasks/{task}/callbacks/")).await;
    assert_eq!(bodies.len(), 1, "the answer is archived as a callback body: {bodies:?}");
    // GET shows it vaulted.
    let (_, got) = call(&results(&env), "GET", &task, "").await;
    assert_eq!((got["stage"].as_str(), got["vault"].as_str()), (Some("final"), Some("complete")));
}

/// A task registered under the wrong family: its endpoint says "not found", and a second
/// registration naming the right one (200) has it polled there and vaulted.
#[tokio::test]
async fn a_task_registered_under_the_wrong_family_is_corrected_by_registering_it_again() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = new_task_id();
    provider.add_task(&task, Family::VocalSeparation, vec![Answer::Success]);
    register(&env, &task, "music").await;
    let app = reconciler(&env, &provider, KEY, &[]).await;
    let right = format!(r#"{{"family":"vocal_separation","client_ref":"order-{task}"}}"#);
    let (status, refused) = call(&results(&env), "PUT", &task, &right).await;
    assert_eq!((status, &refused["conflicting"]), (StatusCode::CONFLICT, &serde_json::json!(["family"])));

    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.polls, outcome.results), (1, 0), "{outcome:?}");
    assert!(env.task_record(&task).await.not_found_since.is_some());
    let (status, corrected) = call(&results(&env), "PUT", &task, &right).await;
    assert_eq!((status, corrected["stage"].as_str()), (StatusCode::OK, Some("submitted")), "{corrected}");
    let wrong = format!(r#"{{"family":"music","client_ref":"order-{task}"}}"#);
    assert_eq!(call(&results(&env), "PUT", &task, &wrong).await.0, StatusCode::CONFLICT);

    // Due at once: polled at the right endpoint without being made due.
    let outcome = app.run_within("test", Duration::from_secs(30)).await.expect("a run");
    assert_eq!((outcome.polls, outcome.results), (1, 1), "{outcome:?}");
    download_all(&env, &provider).await;
    let record = env.task_record(&task).await;
    assert_eq!((record.family, record.registered_family), (Family::VocalSeparation, Some(Family::VocalSeparation)));
    assert_eq!((record.stage, record.vault, record.not_found_since), (Stage::Final, VaultState::Complete, None));
    assert_eq!(stored_names(&record), ["instrumental", "vocal"]);
}

/// A file refused because ALLOWED_SOURCE_HOSTS did not allow its URL: once the operator lists
/// it, the first poll an hour after the failure (the test backdates it) reopens the file at
/// its URL, and it is copied.
#[tokio::test]
async fn a_file_refused_for_its_host_is_reopened_by_a_later_poll_once_the_host_is_listed() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let (task, app) = vaulted_by_a_poll(&env, &provider).await;

    // An allow-list without the provider's file host: refused at once, for good for now.
    let unlisted = env.download_app("files.example.net", None).await;
    env.download_all(&unlisted, 30).await;
    let refused = env.task_record(&task).await;
    let vocal = &refused.files["vocal"];
    assert_eq!(vocal.status, FileStatus::Failed);
    assert!(vocal.error.as_deref().is_some_and(|e| e.starts_with("refused source: ")), "{:?}", vocal.error);
    assert!(stemvault_vault::reconcile::awaits_retry(vocal));
    assert!(refused.reconcile.is_some(), "watched for the reopen");

    // The host listed; an hour on, a poll repeating the URL reopens the files, and they are copied.
    let mut waited = refused.clone();
    for file in waited.files.values_mut() {
        file.failed_at = file.failed_at.map(|at| at.minus(stemvault_vault::reconcile::FIRST_RELINK_AFTER));
    }
    waited.version += 1;
    env.rewrite_record(&refused, &waited).await;
    assert_eq!(run_due(&env, &app, &task).await.polls, 1);
    download_all(&env, &provider).await;
    let record = env.task_record(&task).await;
    assert_eq!((record.vault, stored_names(&record)), (VaultState::Complete, vec!["instrumental", "vocal"]));
    assert_eq!(record.files["vocal"].relinks, 1);
}

/// A callback signed by a key but delivered past the signature's window (a provider retry
/// not signed again) is refused, and its task registered: the reconciler's poll vaults it,
/// with the provider's answer's files, not the unsigned body's.
#[tokio::test]
async fn a_callback_signed_too_long_ago_gets_its_task_vaulted_by_polling() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = new_task_id();
    provider.add_task(&task, Family::VocalSeparation, vec![Answer::Success]);

    let hmac_key = "ingest-hmac-key";
    let ingest = env.ingest_app(hmac_key).await;
    let fixture = stemvault_tests::fixture("separate-vocals__seed-000__200-separate_vocal.json");
    let body = String::from_utf8(fixture).unwrap().replace("3e63b4cc88d52611159371f6af5571e7", &task);
    let an_hour_ago = Timestamp::now().unix_seconds() - 3600;
    let signature = suno_callbacks::signature::sign(hmac_key.as_bytes(), &task, an_hour_ago);
    let request = || -> Request {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/callback")
            .header("X-Webhook-Timestamp", an_hour_ago.to_string())
            .header("X-Webhook-Signature", signature.as_str())
            .body(Body::Text(body.clone()))
            .unwrap()
    };
    // Sent again, as the provider would, while the registration did not answer in time (a
    // loaded machine): a task never registered still fails the test.
    let mut response = ingest.handle(request()).await;
    let mut retried = false;
    for _ in 0..2 {
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        retried = true;
        response = ingest.handle(request()).await;
    }
    let answer: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!((response.status(), answer["reason"].as_str()), (StatusCode::UNAUTHORIZED, Some("timestamp_too_old")));
    // A registration that did not answer in time may still have landed: the retry then finds
    // the task known, and says nothing of registering it (the record below shows it).
    if !retried {
        assert_eq!(answer["task_registered_for_polling"], true, "{answer}");
    }
    let registered = env.task_record(&task).await;
    assert_eq!(
        (registered.stage, registered.family, registered.files.len()),
        (Stage::Submitted, Family::VocalSeparation, 0)
    );
    assert!(env.keys(&format!("tasks/{task}/")).await.is_empty(), "nothing of the unsigned body is kept");

    let app = reconciler(&env, &provider, KEY, &[]).await;
    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.polls, outcome.results), (1, 1), "{outcome:?}");
    download_all(&env, &provider).await;
    let record = env.task_record(&task).await;
    assert_eq!((record.stage, record.vault), (Stage::Final, VaultState::Complete));
    assert_eq!(stored_names(&record), ["instrumental", "vocal"]);
    assert!(record.files.values().all(|f| f.url.starts_with(&provider.origin())), "the provider's answer's files");
}

#[tokio::test]
async fn only_first_delivered_then_complete_is_fetched_by_polling() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered(&env, &provider, Family::Music, vec![Answer::First, Answer::Success]).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;

    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    let record = env.task_record(&task).await;
    assert_eq!(
        (record.stage, record.reconcile.as_deref()),
        (Stage::First, Some("due")),
        "stuck at first: still watched"
    );
    let first_files = record.files.len();
    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    download_all(&env, &provider).await;
    let record = env.task_record(&task).await;
    assert_eq!(
        (record.stage, record.vault, record.reconcile.as_deref()),
        (Stage::Complete, VaultState::Complete, None)
    );
    assert!(record.files.len() > first_files, "complete brought the second track");
    assert!(record.files.values().all(|f| f.status == FileStatus::Stored));
}

#[tokio::test]
async fn a_flapping_provider_still_gets_the_task_vaulted_with_nothing_duplicated() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let script = vec![Answer::Status(429), Answer::Status(500), Answer::Pending, Answer::Status(502), Answer::Success];
    let task = registered(&env, &provider, Family::VocalSeparation, script).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;

    let mut waits = Vec::new();
    for _ in 0..4 {
        let outcome = run_due(&env, &app, &task).await;
        assert_eq!((outcome.polls, outcome.pending), (1, 1), "{outcome:?}");
        let record = env.task_record(&task).await;
        assert!(record.files.is_empty() && record.stage == Stage::Submitted);
        waits.push(record.poll_interval_seconds.unwrap());
    }
    assert_eq!(waits, [30, 60, 120, 240], "429 and 5xx count as pending for the schedule");
    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    let record = env.task_record(&task).await;
    assert_eq!(record.reconcile, None, "a final result leaves the index");
    download_all(&env, &provider).await;

    let record = env.task_record(&task).await;
    assert_eq!((record.vault, record.polls), (VaultState::Complete, 5));
    assert_eq!(stored_names(&record), ["instrumental", "vocal"]);
    for name in ["instrumental", "vocal"] {
        let url = &record.files[name].url;
        let hits = provider.file_hits(&task, url.rsplit('/').next().unwrap());
        assert_eq!(hits, 1, "{name} fetched once");
    }
    assert_eq!(env.queue_depth().await, (0, 0));
}

#[tokio::test]
async fn a_wrong_key_is_one_clear_error_and_changes_nothing_but_the_poll_bookkeeping() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    let wrong = reconciler(&env, &provider, "not-the-key", &[]).await;
    let before = env.task_record(&task).await;

    let outcome = run_due(&env, &wrong, &task).await;
    assert_eq!((outcome.polls, outcome.unauthorized, outcome.results), (1, 1, 0), "{outcome:?}");
    let after = env.task_record(&task).await;
    assert_eq!(after.last_poll.as_ref().map(|p| p.outcome.as_str()), Some("http_401"));
    let only_bookkeeping = TaskRecord {
        polls: before.polls,
        last_poll: before.last_poll.clone(),
        reconcile_at: before.reconcile_at,
        poll_interval_seconds: before.poll_interval_seconds,
        version: before.version,
        ..after.clone()
    };
    assert_eq!(only_bookkeeping, before);
    assert!(env.keys(&format!("tasks/{task}/")).await.is_empty());
    assert_eq!(env.queue_depth().await, (0, 0));

    // The right key then vaults it.
    let right = reconciler(&env, &provider, KEY, &[]).await;
    assert_eq!(run_due(&env, &right, &task).await.results, 1);
    assert_eq!(env.task_record(&task).await.files.len(), 2);
}

#[tokio::test]
async fn a_key_rotated_at_the_provider_and_in_the_secret_is_used_after_the_first_401() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;

    // The operator rotates the key at the provider, then in the secret; the instance is warm.
    const ROTATED: &str = "fake-provider-key-2";
    provider.rotate_key(ROTATED);
    provider_secret(&env, ROTATED).await;

    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.polls, outcome.results, outcome.unauthorized), (1, 1, 0), "{outcome:?}");
    assert_eq!(provider.polls(&task), 2, "refused with the old key, answered with the new one");
    let record = env.task_record(&task).await;
    let last = record.last_poll.as_ref().map(|p| p.outcome.as_str());
    assert!(last.is_some_and(|o| o.starts_with("result:")), "{last:?}");
    assert_eq!(record.files.len(), 2);
}

/// (A poll after a callback: the reconciler's unit tests, functions/reconciler/src/domain/tests.rs.)
#[tokio::test]
async fn a_callback_after_a_poll_and_a_poll_repeating_a_poll_are_no_op_duplicates() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let app = reconciler(&env, &provider, KEY, &[]).await;
    let accept = stemvault_vault::accept::Settings::default();
    let ports = env.accept_ports();

    // Poll first, then the provider's own (late) callback of the same result.
    let task = registered_vocal_separation(&env, &provider).await;
    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    let polled = env.task_record(&task).await;
    let body = callback_like(&polled);
    let event = suno_callbacks::parse_callback(body.as_bytes()).unwrap();
    let late =
        stemvault_vault::accept::accept(&ports, &accept, &event, body.as_bytes(), "req-late", None).await.unwrap();
    assert_eq!(late.files_queued, 0, "{late:?}");
    let after = env.task_record(&task).await;
    assert_eq!((after.files.len(), after.stage), (2, Stage::Final));
    assert_eq!(env.queue_depth().await.0, 2, "each file queued once");

    // A poll that leaves the task at first, then one saying first again: nothing new.
    let task = registered(&env, &provider, Family::Music, vec![Answer::First]).await;
    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    let queued_before = env.queue_depth().await.0;
    assert_eq!(run_due(&env, &app, &task).await.results, 1);
    let record = env.task_record(&task).await;
    assert_eq!((record.stage, record.polls), (Stage::First, 2));
    assert_eq!(env.queue_depth().await.0, queued_before, "the second answer queued nothing");
}

/// The callback body of a recorded vocal separation result (docs.kie.ai's shape), with the
/// record's URLs.
fn callback_like(record: &TaskRecord) -> String {
    serde_json::json!({
        "code": 200,
        "msg": "vocal separation generated successfully.",
        "data": {
            "task_id": record.task_id,
            "vocal_removal_info": {
                "instrumental_url": record.files["instrumental"].url,
                "vocal_url": record.files["vocal"].url,
                "origin_url": ""
            }
        }
    })
    .to_string()
}

#[tokio::test]
async fn a_task_still_without_a_result_at_the_retention_is_abandoned() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered(&env, &provider, Family::Wav, vec![Answer::Pending]).await;
    let give_up = [("RECONCILE_GIVE_UP_SECONDS", "60"), ("RECONCILE_AFTER_SECONDS", "30")];
    let app = reconciler(&env, &provider, KEY, &give_up).await;

    assert_eq!(run_due(&env, &app, &task).await.pending, 1, "polled while within the retention");
    // Registered longer ago than the retention.
    backdate_registration(&env, &task, Duration::from_secs(120)).await;

    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.abandoned, outcome.polls), (1, 0), "{outcome:?}");
    let record = env.task_record(&task).await;
    assert_eq!(record.abandoned.as_ref().map(|a| a.reason.as_str()), Some("abandoned"));
    assert_eq!((record.reconcile.as_deref(), record.open.as_deref()), (None, None));
    let (_, got) = call(&results(&env), "GET", &task, "").await;
    assert_eq!(got["abandoned"]["reason"], "abandoned");
    assert_eq!(provider.polls(&task), 1);
}

/// A task whose items this version cannot read is put off an hour (one UpdateItem that reads
/// and touches nothing else), rather than failing first in every run ahead of the other due
/// tasks.
#[tokio::test]
async fn an_unreadable_task_is_put_off_an_hour() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered(&env, &provider, Family::Wav, vec![Answer::Pending]).await;
    env.dynamo
        .put_item()
        .table_name(&env.resources.table_name)
        .item("task_id", AttributeValue::S(task.clone()))
        .item("sk", AttributeValue::S("file#wav".into()))
        .item("status", AttributeValue::S("no such status".into()))
        .send()
        .await
        .expect("an unreadable file item");
    let app = reconciler(&env, &provider, KEY, &[]).await;

    let before = Timestamp::now();
    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.unreadable, outcome.tasks_failed, outcome.polls), (1, 0, 0), "{outcome:?}");
    let item = env
        .dynamo
        .get_item()
        .table_name(&env.resources.table_name)
        .key("task_id", AttributeValue::S(task.clone()))
        .key("sk", AttributeValue::S("task".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the task item");
    let at: Timestamp = item["reconcile_at"].as_s().unwrap().parse().unwrap();
    let hour = 3_600_000;
    assert!(at.unix_ms >= before.unix_ms + hour && at.unix_ms < before.unix_ms + hour + 60_000, "{at}");
    assert_eq!(item["reconcile"].as_s().unwrap(), "due", "still watched");
    assert_eq!(item["version"].as_n().unwrap(), "1", "nothing else touched");
    assert_eq!(app.run_within("again", Duration::from_secs(30)).await.unwrap().tasks_due, 0, "not due now");
    assert_eq!(provider.polls(&task), 0);
}

#[tokio::test]
async fn without_a_key_the_reconciler_polls_nothing_and_gives_tasks_up_in_time() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered(&env, &provider, Family::Wav, vec![Answer::Success]).await;
    let config = env.reconciler_config(&[("PROVIDER_BASE_URL", provider.origin())]);
    let app = stemvault_reconciler::App::new(config, &env.config).await.unwrap();
    assert!(!app.is_on());
    env.make_due(&task).await;
    let outcome = app.run_within("off", Duration::from_secs(30)).await.unwrap();
    assert_eq!(outcome, Outcome { tasks_due: 1, put_off: 1, ..Outcome::default() });
    assert_eq!(provider.polls(&task), 0);
    // Put off an hour (the longest poll interval), not polled.
    let record = env.task_record(&task).await;
    let (put_off_at, within_an_hour) = (Timestamp::now(), Duration::from_secs(3600));
    let until = record.reconcile_at.expect("still watched");
    assert!(until > put_off_at && until <= put_off_at.plus(within_an_hour), "{until}");
    assert_eq!(app.run_within("off", Duration::from_secs(30)).await.unwrap(), Outcome::default(), "not due");

    // An instance started with a key since polls it when it is due again (within the hour).
    let keyed = reconciler(&env, &provider, KEY, &[]).await;
    let outcome = run_due(&env, &keyed, &task).await;
    assert_eq!((outcome.polls, outcome.results), (1, 1), "{outcome:?}");
    assert_eq!(provider.polls(&task), 1);

    // A task without its result by the give-up time is given up, with no key as with one: a
    // client waiting for its vault stops.
    let task = new_task_id();
    register(&env, &task, "wav").await;
    env.make_due(&task).await;
    backdate_registration(&env, &task, Duration::from_secs(15 * 24 * 3600)).await;
    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.abandoned, outcome.polls), (1, 0), "{outcome:?}");
    let record = env.task_record(&task).await;
    assert_eq!(record.abandoned.map(|a| a.reason.as_str()), Some("abandoned"));
    assert_eq!(provider.polls(&task), 0);
}

/// Without a key no poll repeats a URL: a file dead-lettered through a source outage is
/// reopened at its own URL by the reconciler once its wait is over, sent by the sweeper after
/// its grace period, and copied (a redrive of the dead-letter queue finds it settled).
#[tokio::test]
async fn without_a_key_a_dead_lettered_file_is_reopened_at_its_own_url_and_copied() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let (task, _) = vaulted_by_a_poll(&env, &provider).await;
    download_all(&env, &provider).await;
    // The vocal failed on its last receive through an outage an hour ago: settled partial, watched.
    let vaulted = env.task_record(&task).await;
    assert_eq!(vaulted.vault, VaultState::Complete);
    let mut failed = vaulted.clone();
    let vocal = failed.files.get_mut("vocal").unwrap();
    let an_hour_ago = Timestamp::now().minus(stemvault_vault::reconcile::FIRST_RELINK_AFTER);
    (vocal.status, vocal.failed_at, vocal.bytes, vocal.sha256, vocal.stored_at) =
        (FileStatus::Failed, Some(an_hour_ago), None, None, None);
    vocal.error = Some("dead_lettered: source answered 503 Service Unavailable (receive 8, the last)".into());
    (failed.vault, failed.version) = (VaultState::Partial, failed.version + 1);
    stemvault_vault::reconcile::watch(&mut failed, Timestamp::now(), Duration::ZERO);
    env.rewrite_record(&vaulted, &failed).await;

    let config = env.reconciler_config(&[("PROVIDER_BASE_URL", provider.origin())]);
    let keyless = stemvault_reconciler::App::new(config, &env.config).await.unwrap();
    let outcome = run_due(&env, &keyless, &task).await;
    assert_eq!((outcome.reopened, outcome.polls), (1, 0), "{outcome:?}");
    let reopened = env.task_record(&task).await;
    assert_eq!((reopened.files["vocal"].status, reopened.vault), (FileStatus::Pending, VaultState::Pending));
    assert_eq!(reopened.open.as_deref(), Some(stemvault_vault::OPEN_MARKER), "in the sweeper's index");

    let sweeper_config = stemvault_sweeper::Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(env.resources.table_name.clone()),
        "QUEUE_URL" => Some(env.resources.queue_url.clone()),
        _ => None,
    })
    .unwrap();
    let sweeper = stemvault_sweeper::App::new(sweeper_config, &env.config);
    let sweep = |run_id| sweeper.run(run_id, Timestamp::now().plus(Duration::from_secs(60)));
    // The reopen is its write's time: within the sweeper's grace period it is left alone.
    assert_eq!(sweep("run-1").await.expect("a sweep").files_requeued, 0);
    // Past it, the sweeper sends the file, and the downloader copies it.
    let mut aged = reopened.clone();
    (aged.last_received_at, aged.version) = (Timestamp::now().minus(Duration::from_secs(600)), aged.version + 1);
    env.rewrite_record(&reopened, &aged).await;
    let swept = sweep("run-2").await.expect("a sweep");
    assert_eq!(swept.files_requeued, 1, "{swept:?}");
    download_all(&env, &provider).await;
    let record = env.task_record(&task).await;
    assert_eq!((record.vault, stored_names(&record)), (VaultState::Complete, vec!["instrumental", "vocal"]));
    assert_eq!(record.files["vocal"].relinks, 1);
    assert_eq!(provider.polls(&task), 1, "the keyed run's poll only");
}

/// A provider secret that cannot be read at start-up (here: not created yet) does not stop the
/// reconciler: it starts, replays what is parked, and holds its polls back (no request with
/// no key; the task's poll recorded `unreachable`, polled again on its schedule, and not
/// counted as a poll) until a read of the secret brings a key.
#[tokio::test]
async fn an_unreadable_provider_secret_holds_polls_back_without_stopping_the_reconciler() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    let missing = format!("{}-provider-not-yet", env.resources.table_name);
    let config = env.reconciler_config(&[("PROVIDER_BASE_URL", provider.origin()), ("PROVIDER_SECRET_ARN", missing)]);
    let app = stemvault_reconciler::App::new(config, &env.config).await.expect("starts without the key");
    assert!(app.is_on());

    let outcome = run_due(&env, &app, &task).await;
    assert_eq!((outcome.polls, outcome.unanswered, outcome.not_sent), (0, 0, 1), "{outcome:?}");
    assert_eq!(provider.polls(&task), 0, "nothing sent without a key");
    let record = env.task_record(&task).await;
    assert_eq!(record.last_poll.as_ref().map(|p| p.outcome.as_str()), Some("unreachable"));
    assert_eq!(record.reconcile.as_deref(), Some("due"), "still watched");
}

/// A run that cannot list the parked callbacks (here: a bucket that does not exist) still
/// polls what is due, then fails, so the function's error alarm says so: without a listing
/// no CallbacksStillParked is emitted, and parked callbacks would wait unseen.
#[tokio::test]
async fn a_run_that_cannot_list_the_parked_callbacks_polls_then_fails() {
    let env = TestEnv::new().await;
    let provider = FakeProvider::start(KEY).await;
    let task = registered_vocal_separation(&env, &provider).await;
    env.make_due(&task).await;
    let app = reconciler(&env, &provider, KEY, &[("BUCKET_NAME", "no-such-bucket-for-parked")]).await;
    let err = app.run_within("unlisted", Duration::from_secs(30)).await.unwrap_err();
    assert!(err.to_string().contains("parked"), "{err}");
    assert_eq!(provider.polls(&task), 1, "polled all the same");
}

/// Whether a parked body is still there, as the reconciler asks S3 after a read that failed
/// (one ListObjectsV2 of `parked/` from just before the key: the only prefix its role lists);
/// and a listing from a key on, as a run after a full page lists.
#[tokio::test]
async fn a_parked_body_is_still_parked_until_it_is_deleted() {
    use stemvault_reconciler::replay::{ListParked, StillParked};
    let env = TestEnv::new().await;
    let ports = stemvault_reconciler::aws::AwsPorts::new(&env.reconciler_config(&[]), &env.config, None);
    let (first, after) = (format!("parked/t1/final-{}.json", "a".repeat(64)), "parked/t2/first-x.json".to_owned());
    for key in [&first, &after] {
        let put = env.s3.put_object().bucket(&env.resources.bucket_name).key(key).body(b"{}".to_vec().into());
        put.send().await.expect("park a body");
    }
    assert_eq!(ports.still_parked(&first).await, Ok(true));
    assert_eq!(ports.still_parked(&after).await, Ok(true));
    let gone = format!("parked/t1/final-{}.json", "b".repeat(64));
    assert_eq!(ports.still_parked(&gone).await, Ok(false), "the next key is another's");
    // A listing goes on after the key a window ended at, in key order.
    let listed = |after: Option<&'static str>| {
        let ports = &ports;
        async move {
            let bodies = ports.list_parked(after, 10).await.expect("listed");
            bodies.into_iter().map(|b| b.key).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(None).await, [first.clone(), after.clone()]);
    assert_eq!(listed(Some("parked/t1/")).await, [first.clone(), after.clone()]);
    assert_eq!(listed(Some("parked/t1/g")).await, std::slice::from_ref(&after));
    env.s3.delete_object().bucket(&env.resources.bucket_name).key(&first).send().await.expect("delete");
    assert_eq!(ports.still_parked(&first).await, Ok(false));
    assert_eq!(ports.still_parked("parked/t3/first-y.json").await, Ok(false), "none after it");
}

/// The due tasks, as the reconciler reads them from the index: each with when it was due, which
/// the run's oldest-due count (alarmed by `polls-behind`) is taken from.
#[tokio::test]
async fn the_due_tasks_say_when_each_was_due() {
    use stemvault_reconciler::domain::ListDueTasks;
    let env = TestEnv::new().await;
    let task = new_task_id();
    register(&env, &task, "vocal_separation").await;
    env.make_due(&task).await;
    let reconcile_at = env.task_record(&task).await.reconcile_at.expect("watched");
    let ports = stemvault_reconciler::aws::AwsPorts::new(&env.reconciler_config(&[]), &env.config, None);
    let due = ports.list_due_tasks(Timestamp::now(), 50).await.expect("the index read");
    let listed = due.iter().find(|d| d.task_id == task).expect("listed");
    assert_eq!(listed.reconcile_at, Some(reconcile_at));
}
