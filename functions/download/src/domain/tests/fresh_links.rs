//! Expired URLs copied from fresh links the provider gives (`crate::fresh_link`).

use super::*;

/// The fresh link the provider gives for the file `vocal`.
const FRESH: &str = "https://tempfile.suno.ai/vocal.mp3?sig=fresh";

fn fresh_links(ports: &MemoryPorts, links: &[(&str, Result<&str, crate::fresh_link::RefreshError>)]) {
    let links = links.iter().map(|(name, link)| (url(name), link.clone().map(str::to_owned))).collect();
    *ports.fresh_links.lock().unwrap() = Some(links);
}

#[tokio::test]
async fn an_expired_file_is_copied_from_a_fresh_link_and_the_record_keeps_its_url() {
    for status in [403, 410] {
        let ports = vocal_answering(status, "Forbidden");
        let data = deterministic_bytes(5000, 9);
        let body = Script::Body { data: data.clone(), declared: true, content_type: Some("audio/mpeg".into()) };
        ports.source(FRESH, body);
        fresh_links(&ports, &[("vocal", Ok(FRESH))]);

        let outcome = run(&ports, "vocal", 1).await;
        assert!(matches!(outcome, Outcome::Stored(_)), "{status}: {outcome:?}");
        let key = format!("tasks/{TASK}/vocal.mp3");
        assert_eq!(ports.store.object(&key).unwrap(), data);
        assert_eq!(ports.opened(), [url("vocal"), FRESH.to_owned()]);
        assert_eq!(*ports.refreshed.lock().unwrap(), [url("vocal")]);
        let r = ports.record(TASK);
        assert_eq!(
            (r.files["vocal"].status, r.files["vocal"].url.as_str()),
            (FileStatus::Stored, url("vocal").as_str())
        );
        assert_eq!(r.vault, VaultState::Complete);
        // The copy is of the original URL, as an earlier copy is recognised by it.
        let source = ports.store.stored(&key).unwrap().metadata[crate::upload::SOURCE_METADATA].clone();
        assert_eq!(source, stemvault_vault::shown::url_sha256(&url("vocal")));
    }
}

#[tokio::test]
async fn without_link_refresh_an_expired_file_fails_as_before() {
    let ports = vocal_answering(403, "Forbidden");
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    assert_eq!(outcome, Outcome::FailedForGood("source answered 403 Forbidden".into()));
    assert_eq!(ports.opened(), [url("vocal")]);
    assert!(ports.refreshed.lock().unwrap().is_empty());
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);
}

/// A URL answering as expired on its first receives may be one its source does not serve
/// yet: tried again (30 s, 60 s, 120 s, 240 s on: 7.5 minutes), and failed as expired on the
/// receive that confirms it; one served by then is stored.
#[tokio::test]
async fn a_url_answering_as_expired_is_tried_again_before_it_fails_so() {
    let ports = vocal_answering(404, "Not Found");
    for receive in 1..CONFIRMED {
        let outcome = run(&ports, "vocal", receive).await;
        assert!(matches!(outcome, Outcome::Retry(_)), "{receive}: {outcome:?}");
        assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued, "released");
    }
    let waited: Duration = ports.delays.lock().unwrap().iter().map(|(_, d)| *d).sum();
    let backoff = stemvault_vault::download::DOWNLOAD_BACKOFF;
    assert!(waited >= backoff.until(CONFIRMED) && waited <= backoff.longest_until(CONFIRMED), "{waited:?}");
    assert_eq!(backoff.until(CONFIRMED), Duration::from_secs(450));
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    assert_eq!(outcome, Outcome::FailedForGood("source answered 404 Not Found".into()));
    assert_eq!(ports.record(TASK).vault, VaultState::Partial);

    let ports = vocal_answering(404, "Not Found");
    assert!(matches!(run(&ports, "vocal", 1).await, Outcome::Retry(_)));
    serve(&ports, "vocal", b"vocal bytes, there now");
    assert!(matches!(run(&ports, "vocal", 2).await, Outcome::Stored(_)));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);
}

/// Only what reads as expired asks for a fresh link (the statuses a file fails as
/// `source_expired` with, and whose task the reconciler watches for a new URL); another final
/// status fails the file at once.
#[tokio::test]
async fn only_statuses_read_as_expired_ask_for_a_fresh_link() {
    for status in [404, 441] {
        let ports = vocal_answering(status, "Not Found");
        ports.source(FRESH, Script::Body { data: b"fresh".to_vec(), declared: true, content_type: None });
        fresh_links(&ports, &[("vocal", Ok(FRESH))]);
        assert!(matches!(run(&ports, "vocal", 1).await, Outcome::Stored(_)), "{status}");
        assert_eq!(*ports.refreshed.lock().unwrap(), [url("vocal")], "{status}");
    }
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued), ("drums", FileStatus::Queued)]));
    fresh_links(&ports, &[("vocal", Ok(FRESH)), ("drums", Ok(FRESH))]);
    ports.source(&url("vocal"), Script::http_error(400, "Bad Request"));
    ports.source(&url("drums"), Script::http_error(451, ""));
    assert_eq!(run(&ports, "vocal", 1).await, Outcome::FailedForGood("source answered 400 Bad Request".into()));
    assert_eq!(run(&ports, "drums", 1).await, Outcome::FailedForGood("source answered 451".into()));
    assert!(ports.refreshed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn no_fresh_link_fails_the_file_as_expired_with_the_reason() {
    use crate::fresh_link::RefreshError;
    use crate::source_policy::Refusal;
    // The error, the reason, and whether a later poll asks for a link again (the key or the
    // credits may be fixed: stemvault_vault::reconcile::awaits_retry).
    let cases = [
        (
            RefreshError::Provider { code: 422, message: "external URL".into() },
            "source answered 403 Forbidden; no fresh link: the provider answered 422 (not a URL the provider \
             generated): external URL",
            false,
        ),
        (
            RefreshError::Provider { code: 401, message: String::new() },
            "source answered 403 Forbidden; no fresh link: the provider answered 401 (unauthorized: check the API \
             key in PROVIDER_SECRET_ARN)",
            true,
        ),
        (
            RefreshError::Provider { code: 402, message: String::new() },
            "source answered 403 Forbidden; no fresh link: the provider answered 402 (insufficient credits)",
            true,
        ),
        (
            RefreshError::Provider { code: 505, message: String::new() },
            "source answered 403 Forbidden; no fresh link: the provider answered 505 (feature disabled)",
            false,
        ),
        (
            RefreshError::Refused(Refusal::Refused("host evil.example.com is not in ALLOWED_SOURCE_HOSTS".into())),
            "source answered 403 Forbidden; no fresh link: the fresh link: refused source: host evil.example.com \
             is not in ALLOWED_SOURCE_HOSTS",
            false,
        ),
    ];
    for (error, reason, asked_again) in cases {
        let ports = vocal_answering(403, "Forbidden");
        fresh_links(&ports, &[("vocal", Err(error))]);
        assert_eq!(run(&ports, "vocal", CONFIRMED).await, Outcome::FailedForGood(reason.into()));
        let file = &ports.record(TASK).files["vocal"];
        assert_eq!((file.status, file.error.as_deref()), (FileStatus::Failed, Some(reason)));
        // Still an expired file, for the reconciler.
        assert!(stemvault_vault::reconcile::failed_by_expiry(file), "{reason}");
        assert_eq!(stemvault_vault::reconcile::awaits_retry(file), asked_again, "{reason}");
        assert_eq!(ports.opened(), [url("vocal")], "nothing fetched but the original");
        assert_eq!(ports.measures.lock().unwrap()[0], Measure::Failed { reason: "source_expired" });
    }
    // A status without a reason phrase (kie's 441) says the same, asked again as well.
    let ports = vocal_answering(441, "");
    fresh_links(&ports, &[("vocal", Err(RefreshError::Provider { code: 402, message: String::new() }))]);
    let reason = "source answered 441; no fresh link: the provider answered 402 (insufficient credits)";
    assert_eq!(run(&ports, "vocal", CONFIRMED).await, Outcome::FailedForGood(reason.into()));
    let file = &ports.record(TASK).files["vocal"];
    assert!(stemvault_vault::reconcile::failed_by_expiry(file) && stemvault_vault::reconcile::awaits_retry(file));
}

/// The provider cannot give a link this time (unreachable, rate limited, failing): the file
/// is retried, not failed, and a later attempt copies from the link it then gives. On the
/// last receive it is dead-lettered, still read as expired (the reconciler watches it).
#[tokio::test]
async fn no_fresh_link_yet_is_retried_and_a_later_link_is_copied() {
    use crate::fresh_link::RefreshError;
    let passing = [
        RefreshError::Unreachable("connection reset".into()),
        RefreshError::Provider { code: 429, message: "slow down".into() },
        RefreshError::Provider { code: 455, message: String::new() },
        RefreshError::Provider { code: 500, message: String::new() },
    ];
    for error in passing {
        let ports = vocal_answering(403, "Forbidden");
        fresh_links(&ports, &[("vocal", Err(error.clone()))]);
        let outcome = run(&ports, "vocal", 1).await;
        let wanted = format!("source answered 403 Forbidden; no fresh link yet: {error}");
        assert!(matches!(&outcome, Outcome::Retry(e) if e.to_string() == wanted), "{outcome:?}");
        assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued, "released");

        fresh_links(&ports, &[("vocal", Ok(FRESH))]);
        let data = deterministic_bytes(1000, 3);
        ports.source(FRESH, Script::Body { data: data.clone(), declared: true, content_type: None });
        let outcome = run(&ports, "vocal", 2).await;
        assert!(matches!(outcome, Outcome::Stored(_)), "{error}: {outcome:?}");
    }

    let ports = vocal_answering(410, "Gone");
    fresh_links(&ports, &[("vocal", Err(RefreshError::Unreachable("timed out".into())))]);
    last_receive_leaves_it_expired(&ports).await;
}

#[tokio::test]
async fn a_fresh_link_that_fails_for_good_fails_the_file_and_one_that_may_recover_is_retried() {
    let ports = expired_with_fresh_link(410, "Gone");
    ports.source(FRESH, Script::http_error(503, "Service Unavailable"));
    let outcome = run(&ports, "vocal", 1).await;
    let not_yet = "source answered 410 Gone; no fresh link yet: the fresh link failed: source answered 503 Service \
                   Unavailable";
    assert!(matches!(&outcome, Outcome::Retry(e) if e.to_string() == not_yet), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued, "released");

    // The fresh link's own Retry-After is honoured.
    let busy = Duration::from_secs(600);
    let slow_down = FetchError::Status { status: 429, reason: "Too Many Requests".into(), retry_after: Some(busy) };
    ports.source(FRESH, Script::Fail(slow_down));
    let outcome = run(&ports, "vocal", 2).await;
    assert_eq!(outcome.retry_after(ports.now()), Some(busy), "{outcome:?}");

    ports.source(FRESH, Script::http_error(404, "Not Found"));
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    let reason = "source answered 410 Gone; the fresh link failed: source answered 404 Not Found";
    assert_eq!(outcome, Outcome::FailedForGood(reason.into()));
    assert_eq!(*ports.refreshed.lock().unwrap(), vec![url("vocal"); 3], "a new link each attempt");
    assert!(stemvault_vault::reconcile::failed_by_expiry(&ports.record(TASK).files["vocal"]));

    // Failing so on the last receive (at once, or while its body is read), the file is
    // dead-lettered as expired: the reconciler watches the task for a URL.
    for broken in [Script::http_error(503, "Service Unavailable"), Script::Reset { data: deterministic_bytes(1000, 3) }]
    {
        let ports = expired_with_fresh_link(410, "Gone");
        ports.source(FRESH, broken);
        last_receive_leaves_it_expired(&ports).await;
    }
    // ... and so is one whose fresh link opened but whose copy S3 did not take in time.
    let mut ports = expired_with_fresh_link(410, "Gone");
    ports.store.refuse = Some(StorageError::transient("PutObject", "dispatch failure: connection reset"));
    ports.source(FRESH, Script::Body { data: deterministic_bytes(1000, 3), declared: true, content_type: None });
    let outcome = run(&ports, "vocal", 1).await;
    let wanted = "source answered 410 Gone; no fresh link yet: copying from the fresh link failed: S3 PutObject";
    assert!(matches!(&outcome, Outcome::Retry(e) if e.to_string().starts_with(wanted)), "{outcome:?}");
    last_receive_leaves_it_expired(&ports).await;

    // A fresh link to a file over the limit fails it as too large, not as expired: no poll's
    // link would copy it.
    let ports = expired_with_fresh_link(403, "Forbidden");
    ports.source(FRESH, Script::Fail(FetchError::TooLarge { limit: 10, declared: Some(11) }));
    let outcome = run(&ports, "vocal", 1).await;
    let reason = "the file is larger than the 10-byte limit (MAX_FILE_BYTES); Content-Length is 11";
    assert_eq!(outcome, Outcome::FailedForGood(reason.into()));
    assert!(!stemvault_vault::reconcile::failed_by_expiry(&ports.record(TASK).files["vocal"]));
    assert_eq!(ports.measures.lock().unwrap()[0], Measure::Failed { reason: "too_large" });
}

/// The file of a task whose URL answers `status` (expired), its fresh link [`FRESH`].
fn expired_with_fresh_link(status: u16, reason: &str) -> MemoryPorts {
    let ports = vocal_answering(status, reason);
    fresh_links(&ports, &[("vocal", Ok(FRESH))]);
    ports
}

/// The file of a task whose URL expired, the provider never answering for a fresh link.
fn fresh_link_never_given() -> MemoryPorts {
    let ports = expired_with_fresh_link(410, "Gone");
    ports.fresh_link_hangs.store(true, std::sync::atomic::Ordering::SeqCst);
    ports
}

/// The provider not giving a fresh link before the invocation's deadline is no fresh link
/// yet: retried, and on the last receive the file is dead-lettered as expired (watched).
/// (A runtime each: paused time moves on to each deadline.)
#[tokio::test(start_paused = true)]
async fn a_fresh_link_not_given_in_time_is_no_fresh_link_yet() {
    let ports = fresh_link_never_given();
    let outcome = run(&ports, "vocal", 1).await;
    let wanted = "source answered 410 Gone; no fresh link yet: no answer before the invocation's deadline";
    assert!(matches!(&outcome, Outcome::Retry(e) if e.to_string() == wanted), "{outcome:?}");
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued, "released");
}

#[tokio::test(start_paused = true)]
async fn a_fresh_link_not_given_in_time_on_the_last_receive_leaves_the_file_expired() {
    last_receive_leaves_it_expired(&fresh_link_never_given()).await;
}

/// The file of a task whose URL expired, its fresh link's source never answering.
fn fresh_link_never_answering() -> MemoryPorts {
    let ports = expired_with_fresh_link(403, "Forbidden");
    ports.source(FRESH, Script::Hang);
    ports
}

/// A fresh link given whose source does not answer before the invocation's deadline is no
/// fresh link yet too: retried, and on the last receive the file is dead-lettered as expired
/// (watched). (A runtime each, as above.)
#[tokio::test(start_paused = true)]
async fn a_fresh_link_whose_source_does_not_answer_in_time_is_no_fresh_link_yet() {
    let ports = fresh_link_never_answering();
    let outcome = run(&ports, "vocal", 1).await;
    let wanted = "source answered 403 Forbidden; no fresh link yet: the fresh link failed: the copy did not finish";
    assert!(matches!(&outcome, Outcome::Retry(e) if e.to_string().starts_with(wanted)), "{outcome:?}");
    assert_eq!(ports.opened(), vec![url("vocal"), FRESH.to_owned()]);
    assert_eq!(ports.record(TASK).files["vocal"].status, FileStatus::Queued, "released");
}

/// ... and polls do not reopen it: a copy that ran into the invocation's deadline would take
/// the same again (stemvault_vault::reconcile::awaits_retry).
#[tokio::test(start_paused = true)]
async fn a_fresh_link_whose_source_does_not_answer_in_time_on_the_last_receive_leaves_the_file_expired() {
    let ports = fresh_link_never_answering();
    let outcome = run(&ports, "vocal", MAX_RECEIVE_COUNT).await;
    assert!(matches!(outcome, Outcome::DeadLettered(_)), "{outcome:?}");
    let file = &ports.record(TASK).files["vocal"];
    assert!(stemvault_vault::reconcile::failed_by_expiry(file), "{:?}", file.error);
    assert!(!stemvault_vault::reconcile::awaits_retry(file), "{:?}", file.error);
}
