//! Newer URLs a callback brings while a file is copied (`next_url`): copied in turn when the
//! old one fails for good, dropped when it is stored, released as the file's URL when the
//! time runs out.

use tracing::Level;

use super::*;

/// Newer URLs of the vocal a callback may bring while it is copied.
const NEWER_B: &str = "https://cdn1.suno.ai/vocal-b.wav?sig=s";
const NEWER_C: &str = "https://cdn1.suno.ai/vocal-c.flac?sig=s";

/// Ingest wrote a newer URL into the file's item (`next_url`) while the old one was copied:
/// should the old URL fail for good, its `failed` write is refused and the holder copies the
/// newer one; should the old be copied, the newer is dropped.
#[tokio::test]
async fn a_newer_url_written_during_the_copy_is_copied_when_the_old_one_fails_for_good() {
    let (newer_url, newer_key) =
        ("https://cdn1.suno.ai/vocal-final.wav?sig=s".to_owned(), format!("tasks/{TASK}/vocal.wav"));
    let data = deterministic_bytes(70_000, 3);
    let newer = Script::Body { data: data.clone(), declared: true, content_type: Some("audio/wav".into()) };

    let ports = vocal_answering(404, "Not Found");
    ports.source(&newer_url, newer.clone());
    ports.next_urls_meanwhile.lock().unwrap().push_back((newer_url.clone(), newer_key.clone()));
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    assert_eq!(ports.opened(), vec![url("vocal"), newer_url.clone()]);
    assert_eq!(ports.store.object(&newer_key), Some(data.clone()));
    let vocal = &ports.record(TASK).files["vocal"];
    assert_eq!(
        (vocal.status, vocal.url.as_str(), vocal.key.as_str()),
        (FileStatus::Stored, newer_url.as_str(), newer_key.as_str())
    );
    assert_eq!((vocal.error.as_deref(), vocal.attempts), (None, 1), "one claim copied both");
    assert_eq!((vocal.next_url.as_deref(), vocal.next_key.as_deref()), (None, None));
    assert_eq!(ports.record(TASK).vault, VaultState::Complete);

    // The old URL copied: the item names the URL and key of the object stored.
    let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
    serve(&ports, "vocal", &data);
    ports.source(&newer_url, newer);
    ports.next_urls_meanwhile.lock().unwrap().push_back((newer_url.clone(), newer_key.clone()));
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Stored(_)));
    let vocal = &ports.record(TASK).files["vocal"];
    let old_key = format!("tasks/{TASK}/vocal.mp3");
    assert_eq!(
        (vocal.status, vocal.url.clone(), vocal.key.as_str()),
        (FileStatus::Stored, url("vocal"), old_key.as_str())
    );
    assert_eq!((vocal.next_url.as_deref(), vocal.next_key.as_deref()), (None, None));
    assert_eq!(ports.opened(), vec![url("vocal")]);
    assert_eq!(ports.store.object(&newer_key), None);
}

/// Where the vocal goes under a URL ending in `extension`.
fn vocal_key(extension: &str) -> String {
    format!("tasks/{TASK}/vocal.{extension}")
}

/// The vocal queued, its own URL answering 404, and each of `newer` written as its
/// `next_url` just before one of the next file writes (in order).
fn vocal_gone_with_newer(newer: &[(&str, &str)]) -> MemoryPorts {
    let ports = vocal_answering(404, "scripted");
    let newer = newer.iter().map(|(url, extension)| (url.to_string(), vocal_key(extension)));
    ports.next_urls_meanwhile.lock().unwrap().extend(newer);
    ports
}

/// The newer URL fails too, for good: so does the file, at that URL (one answering as
/// expired on its first try is tried again first: it may be a source not serving the file
/// yet); or an even newer one came while it was copied: that is copied. Failing in a way a
/// retry may fix, the file is released at the newer URL, which the retry copies (not the URL
/// that failed for good).
#[tokio::test]
async fn a_newer_url_copied_in_turn_may_fail_be_replaced_again_or_be_released() {
    let (b, c) = (NEWER_B, NEWER_C);
    let (b_key, c_key) = (vocal_key("wav"), vocal_key("flac"));

    // B fails for good: the file fails at B.
    let ports = vocal_gone_with_newer(&[(b, "wav")]);
    ports.source(b, Script::http_error(400, "scripted"));
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::FailedForGood(_)));
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.url.as_str(), f.key.as_str(), f.next_url), (FileStatus::Failed, b, b_key.as_str(), None));

    // B answering `status` on its first try is released at B, to be tried again.
    let released_at_b = async |status| {
        let ports = vocal_gone_with_newer(&[(b, "wav")]);
        ports.source(b, Script::http_error(status, "scripted"));
        assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Retry(_)), "{status}");
        let f = ports.file_item(TASK, "vocal");
        let pending = (FileStatus::Pending, b, b_key.as_str(), None);
        assert_eq!((f.status, f.url.as_str(), f.key.as_str(), f.next_url), pending, "{status}");
        ports
    };

    // B answers as expired on its first try: released at B, and failed there on the next.
    let ports = released_at_b(404).await;
    assert!(matches!(run(&ports, "vocal", CONFIRMED + 1).await, Outcome::FailedForGood(_)));
    assert_eq!(ports.file_item(TASK, "vocal").status, FileStatus::Failed);
    assert_eq!(ports.opened(), vec![url("vocal"), b.to_owned(), b.to_owned()]);

    // C came while B was copied: C is copied.
    let ports = vocal_gone_with_newer(&[(b, "wav"), (c, "flac")]);
    ports.source(b, Script::http_error(400, "scripted"));
    ports.source(c, Script::Body { data: b"c".to_vec(), declared: true, content_type: None });
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Stored(_)));
    assert_eq!(ports.opened(), vec![url("vocal"), b.to_owned(), c.to_owned()]);
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.url.as_str(), f.key.as_str(), f.next_url), (FileStatus::Stored, c, c_key.as_str(), None));

    // B answers 503: released at B, and the retry copies B.
    let ports = released_at_b(503).await;
    ports.source(b, Script::Body { data: b"b".to_vec(), declared: true, content_type: None });
    assert!(matches!(run(&ports, "vocal", 2).await, Outcome::Stored(_)));
    assert_eq!(ports.opened(), vec![url("vocal"), b.to_owned(), b.to_owned()], "the failed URL not fetched again");
    assert_eq!(ports.store.object(&b_key), Some(b"b".to_vec()));
}

/// Releasing the newer URL being copied: an even newer one came meanwhile, and the release
/// makes that, the newest, the file's URL (the retry copies it, not the URL that failed for
/// good); or the release's answer was lost (the SDK's retry refused): released at the newer
/// URL all the same.
#[tokio::test]
async fn a_release_of_a_newer_url_replaced_meanwhile_or_answered_late_still_ends_the_claim() {
    let (b, c) = (NEWER_B, NEWER_C);
    let b_key = vocal_key("wav");

    let ports = vocal_gone_with_newer(&[(b, "wav"), (c, "flac")]);
    ports.source(b, Script::http_error(503, "scripted"));
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Retry(_)));
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.claim), (FileStatus::Pending, None), "released");
    let c_key = vocal_key("flac");
    assert_eq!((f.url.as_str(), f.key.as_str(), f.next_url.as_deref()), (c, c_key.as_str(), None));

    let ports = vocal_gone_with_newer(&[(b, "wav")]);
    ports.source(b, Script::http_error(503, "scripted"));
    // The failed write for the own URL is refused (B waits), so the first write applied is
    // the release at B: its answer lost, the plain release after it is refused too.
    *ports.lost_answers.lock().unwrap() = 1;
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    assert!(matches!(outcome, Outcome::Retry(_)), "{outcome:?}");
    let releases = ports.take_table_calls().iter().filter(|c| **c == "release_file").count();
    assert_eq!(releases, 2, "at the newer URL, then as it is");
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.claim, f.url.as_str(), f.key.as_str()), (FileStatus::Pending, None, b, b_key.as_str()));

    // The release at the newer URL fails (the table refuses the write): released as it is.
    let ports = vocal_gone_with_newer(&[(b, "wav")]);
    ports.source(b, Script::http_error(503, "scripted"));
    *ports.release_failures.lock().unwrap() = 1;
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Retry(_)));
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.claim, f.url, f.next_url.as_deref()), (FileStatus::Pending, None, url("vocal"), Some(b)));
}

/// A `next_url` equal to the URL that failed (never so as ingest writes it; an edited item)
/// is not copied again: the file fails for good at it, its `next_*` taken out (it held its
/// claim, refused, on every receive).
#[tokio::test]
async fn a_next_url_equal_to_the_failed_one_is_not_copied_again() {
    for key in [vocal_key("wav"), String::new()] {
        let ports = vocal_gone_with_newer(&[]);
        ports.next_urls_meanwhile.lock().unwrap().push_back((url("vocal"), key.clone()));
        let outcome = run(&ports, "vocal", CONFIRMED).await;
        assert!(matches!(outcome, Outcome::FailedForGood(_)), "{key:?}: {outcome:?}");
        assert_eq!(ports.opened(), vec![url("vocal")]);
        let f = ports.file_item(TASK, "vocal");
        assert_eq!((f.status, f.claim, f.url, f.key), (FileStatus::Failed, None, url("vocal"), vocal_key("mp3")));
        assert_eq!((f.next_url, f.next_key), (None, None), "{key:?}");
    }
}

/// Failing the file at an edited `next_url` equal to its own, refused because an even newer
/// URL came meanwhile: that one is copied.
#[tokio::test]
async fn an_even_newer_url_after_an_edited_one_is_copied() {
    let ports = vocal_gone_with_newer(&[]);
    ports.next_urls_meanwhile.lock().unwrap().push_back((url("vocal"), vocal_key("mp3")));
    ports.next_urls_meanwhile.lock().unwrap().push_back((NEWER_C.into(), vocal_key("flac")));
    let data = deterministic_bytes(10_000, 4);
    ports.source(NEWER_C, Script::Body { data, declared: true, content_type: None });
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Stored(_)));
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.url.as_str(), f.key.clone()), (FileStatus::Stored, NEWER_C, vocal_key("flac")));
}

/// A newer URL written without its key (an edited item) is copied under the key ingest
/// would have given it.
#[tokio::test]
async fn a_newer_url_without_its_key_is_copied_under_its_own_key() {
    let ports = vocal_gone_with_newer(&[]);
    ports.next_urls_meanwhile.lock().unwrap().push_back((NEWER_B.into(), String::new()));
    let data = deterministic_bytes(10_000, 3);
    ports.source(NEWER_B, Script::Body { data: data.clone(), declared: true, content_type: None });
    assert!(matches!(run(&ports, "vocal", CONFIRMED).await, Outcome::Stored(_)));
    let f = ports.file_item(TASK, "vocal");
    assert_eq!((f.status, f.url.as_str(), f.key.clone()), (FileStatus::Stored, NEWER_B, vocal_key("wav")));
    assert_eq!(ports.store.object(&vocal_key("wav")), Some(data));
}

/// An attempt copied the file but could not record it; a callback then brought a newer URL
/// (`next_url`), and the old URL expired: the redelivery finds the copy under the file's own
/// key and records it, fetching nothing (the newer URL waits beside the URL being copied, it
/// does not replace it).
#[tokio::test]
async fn an_unrecorded_copy_is_found_though_a_newer_url_came_after_it() {
    let (ports, _) = copied_but_not_recorded(50_000, 8).await;

    let newer_url = "https://cdn1.suno.ai/vocal-final.wav?sig=s";
    ports.edit_file_item(TASK, "vocal", |f| {
        (f.next_url, f.next_key) = (Some(newer_url.into()), Some(format!("tasks/{TASK}/vocal.wav")));
    });
    ports.source(&url("vocal"), Script::http_error(403, "Forbidden"));
    let lease_over = delivery(String::new(), 1).lease_until.plus(Duration::from_secs(1)).timestamp();
    *ports.now.lock().unwrap() = Some(lease_over);
    let outcome = run(&ports, "vocal", 2).await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    let f = &ports.record(TASK).files["vocal"];
    let key = format!("tasks/{TASK}/vocal.mp3");
    assert_eq!((f.status, f.url.clone(), f.key.as_str()), (FileStatus::Stored, url("vocal"), key.as_str()));
    assert_eq!((f.next_url.as_deref(), f.next_key.as_deref()), (None, None));
    assert_eq!(ports.opened(), vec![url("vocal")], "fetched once, by the first attempt");
}

/// Another worker took the file over (our lease ran out) and a newer URL came: our `failed`
/// write is refused and the file is not ours, so we copy nothing more.
#[tokio::test]
async fn a_newer_url_of_a_file_another_worker_took_over_is_left_to_it() {
    let ports = vocal_answering(404, "Not Found");
    let newer_url = "https://cdn1.suno.ai/vocal-final.wav?sig=s";
    ports.source(newer_url, Script::Body { data: b"final".to_vec(), declared: true, content_type: None });
    let mut theirs = ports.file_item(TASK, "vocal");
    theirs.status = FileStatus::Downloading;
    (theirs.claim, theirs.lease_until) =
        (Some("another-worker".into()), Some(stemvault_vault::LeaseEnd::from_unix_seconds(1_900_000_000)));
    (theirs.next_url, theirs.next_key) = (Some(newer_url.into()), Some(format!("tasks/{TASK}/vocal.wav")));
    *ports.changed_meanwhile.lock().unwrap() = Some(theirs);
    let outcome = run(&ports, "vocal", CONFIRMED).await;
    assert!(matches!(outcome, Outcome::Retry(DownloadError::LostClaim)), "{outcome:?}");
    assert_eq!(ports.opened(), vec![url("vocal")]);
    assert_eq!(ports.file_item(TASK, "vocal").claim.as_deref(), Some("another-worker"));
}

/// On the last receive, the own URL fails and a newer URL came meanwhile, but the deadline
/// leaves no time to copy it (here the own URL hangs until then) or cuts its copy short (a
/// 503 first, then the newer URL hangs): the newer URL is not failed but becomes the file's,
/// its claim released (the message goes to the dead-letter queue; the sweeper sends the file
/// again once it is stranded), and a warning says so.
#[tokio::test(start_paused = true)]
async fn a_newer_url_the_deadline_cuts_short_on_the_last_receive_is_released_not_failed() {
    let (newer_url, newer_key) = ("https://cdn1.suno.ai/vocal-2.mp3?sig=s".to_owned(), format!("tasks/{TASK}/v2.mp3"));
    let unavailable = Script::http_error(503, "");
    for (own, newer) in [(Script::Hang, None), (unavailable, Some(Script::Hang))] {
        let captured = stemvault_aws::log_capture::capture_logs();
        let ports = MemoryPorts::with_record(record(&[("vocal", FileStatus::Queued)]));
        ports.source(&url("vocal"), own);
        if let Some(newer) = newer {
            ports.source(&newer_url, newer);
        }
        ports.next_urls_meanwhile.lock().unwrap().push_back((newer_url.clone(), newer_key.clone()));
        let mut d = delivery(job_body("vocal"), MAX_RECEIVE_COUNT);
        // On the paused clock, which the hangs advance (a loaded machine's real time cannot
        // use the deadline up before the first open).
        d.stop_at = tokio::time::Instant::now().into_std() + Duration::from_secs(60);
        let outcome = process_message(&ports, &SETTINGS, &d).await;
        assert_eq!(outcome, Outcome::Retry(CopyError::OutOfTime.into()));
        assert_eq!(ports.opened(), [url("vocal"), newer_url.clone()], "both URLs asked for");
        let f = &ports.record(TASK).files["vocal"];
        assert_eq!((f.status, f.claim.as_deref()), (FileStatus::Queued, None));
        assert_eq!(
            (f.url.as_str(), f.key.as_str(), f.next_url.as_deref()),
            (newer_url.as_str(), newer_key.as_str(), None)
        );
        let said = captured.lines_with("the invocation's time ran out before it was copied");
        assert!(said.len() == 1 && said[0].is(Level::WARN, &["for the sweeper"]), "{}", captured.text());
    }
}
