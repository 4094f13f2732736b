use std::path::PathBuf;
use std::time::Duration;
use tracing::Level;

use lambda_http::http::{self, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use stemvault_aws::log_capture::{Captured, capture_logs};
use stemvault_vault::{FileStatus, Timestamp};
use suno_callbacks::Family;
use suno_callbacks::Stage;
use suno_callbacks::signature::sign;

use super::*;
use crate::error::StoreError;
use crate::memory::MemoryPorts;
use crate::secret::CallbackSecret;

const NOW_SECS: i64 = 1_763_910_000;
const KEY: &str = "current-key";
const OLD_KEY: &str = "previous-key";
const TOKEN: &str = "0123456789abcdef-token";
const WAV_TASK: &str = "988e****c8d3";
const WAV: &[u8] =
    br#"{"code":200,"msg":"success","data":{"audioWavUrl":"https://h/s/a.wav?X-Sig=secret","task_id":"988e****c8d3"}}"#;

fn config() -> Config {
    Config {
        table_name: "t".into(),
        bucket_name: "b".into(),
        queue_url: "q".into(),
        callback_secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:callback-AbCdEf".into(),
        allow_unauthenticated: false,
        max_body_bytes: 4096,
        signature_tolerance: Duration::from_secs(300),
        reconcile_after: Duration::from_secs(600),
        event_bus_name: "stemvault-events".into(),
    }
}

/// The callback secret: the current and the previous HMAC key.
fn keys() -> CallbackSecret {
    CallbackSecret { hmac_keys: vec![KEY.into(), OLD_KEY.into()], callback_tokens: vec![] }
}

/// [`keys`] and [`TOKEN`]: both checked.
fn keys_and_token() -> CallbackSecret {
    CallbackSecret { callback_tokens: vec![TOKEN.into()], ..keys() }
}

fn token(token: &str) -> CallbackSecret {
    CallbackSecret { hmac_keys: vec![], callback_tokens: vec![token.into()] }
}

fn ports(secret: &CallbackSecret) -> MemoryPorts {
    MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(NOW_SECS * 1000)).with_secret(secret)
}

/// The app over in-memory ports holding `secret`.
async fn app_with(config: Config, secret: CallbackSecret) -> App<MemoryPorts> {
    App::with_ports(&config, ports(&secret)).await
}

/// The app checking signatures by [`keys`].
async fn app() -> App<MemoryPorts> {
    app_with(config(), keys()).await
}

fn request(path: &str, headers: &[(&str, String)], body: impl Into<Body>) -> Request {
    let mut builder = http::Request::builder().method("POST").uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(body.into()).unwrap()
}

fn signed_headers(key: &str, task_id: &str, ts: i64) -> Vec<(&'static str, String)> {
    vec![("X-Webhook-Timestamp", ts.to_string()), ("X-Webhook-Signature", sign(key.as_bytes(), task_id, ts))]
}

fn signed(body: &[u8], task_id: &str) -> Request {
    request("/callback", &signed_headers(KEY, task_id, NOW_SECS), body.to_vec())
}

fn json(response: &Response<Body>) -> Value {
    assert_eq!(response.headers()["content-type"], "application/json");
    serde_json::from_slice(response.body().as_ref()).unwrap()
}

/// Nothing was recorded, archived or sent.
fn assert_untouched(h: &App<MemoryPorts>) {
    assert_eq!(h.ports.record_count(), 0);
    assert!(h.ports.body_keys().is_empty());
    assert!(h.ports.messages().is_empty());
}

#[tokio::test]
async fn a_signed_callback_is_accepted_then_recognised_as_a_duplicate() {
    let h = app().await;
    let response = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json(&response),
        serde_json::json!({"status": "accepted", "task_id": WAV_TASK, "stage": "final", "task_stage": "final", "files": 1, "files_queued": 1})
    );
    let record = h.ports.record(WAV_TASK).unwrap();
    assert_eq!((record.family, record.files["wav"].status), (Family::Wav, FileStatus::Queued));
    assert_eq!(h.ports.messages()[0].1.key, format!("tasks/{WAV_TASK}/wav.wav"));

    let again = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(json(&again)["status"], "duplicate");
    assert_eq!(json(&again)["files_queued"], 0);
    assert_eq!(h.ports.messages().len(), 1);
}

#[tokio::test]
async fn a_base64_encoded_body_is_read_as_bytes() {
    let h = app().await;
    let response =
        h.handle(request("/callback", &signed_headers(KEY, WAV_TASK, NOW_SECS), Body::Binary(WAV.to_vec()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(h.ports.body_keys().len(), 1);
    assert_eq!(h.ports.body(&h.ports.body_keys()[0]).unwrap(), WAV);
}

#[tokio::test]
async fn every_documented_fixture_is_accepted_with_its_files_queued() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../fixtures/callbacks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        seen += 1;
        let body = std::fs::read(&path).unwrap();
        let event = suno_callbacks::parse_callback(&body).unwrap();
        let h = app().await;
        let response = h.handle(signed(&body, event.task_id.as_str())).await;
        assert_eq!(response.status(), StatusCode::OK, "{}: {:?}", path.display(), json(&response));
        assert_eq!(json(&response)["files_queued"], event.files.len(), "{}", path.display());
        let record = h.ports.record(event.task_id.as_str()).unwrap();
        assert_eq!(record.family, event.family, "{}", path.display());
        assert_eq!(record.files.len(), event.files.len(), "{}", path.display());
        assert!(record.files.values().all(|f| f.status == FileStatus::Queued));
        let names: Vec<String> = h.ports.messages().into_iter().map(|(_, job)| job.name).collect();
        if event.files.is_empty() {
            assert_eq!(names, ["manifest"], "{}: a task without files gets a manifest job", path.display());
        } else {
            assert_eq!(names.len(), event.files.len(), "{}", path.display());
        }
    }
    assert!(seen >= 17, "only {seen} fixtures found in {}", dir.display());
}

#[tokio::test]
async fn routes_only_post_callback() {
    let h = app().await;
    let get = h.handle(http::Request::builder().method("GET").uri("/callback").body(Body::Empty).unwrap()).await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers()["allow"], "POST");
    assert_eq!(json(&get)["error"], "method_not_allowed");
    for path in ["/", "/tasks/x", "/callbacks", "/callback/a/b", "/x/callback"] {
        let response = h.handle(request(path, &signed_headers(KEY, WAV_TASK, NOW_SECS), WAV.to_vec())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json(&response)["error"], "not_found");
    }
    assert_untouched(&h);
}

/// A request the checks in force refuse while the secret cannot be read again: 503 (the
/// provider retries), not a 401 the provider may take as final.
async fn in_doubt(h: &App<MemoryPorts>, req: Request) {
    let response = h.handle(req).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&response)["error"], "secret_unreadable");
}

async fn refusal(h: &App<MemoryPorts>, req: Request) -> String {
    let response = h.handle(req).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = json(&response);
    assert_eq!(body["error"], "unauthorized");
    let text = body.to_string();
    for secret in [KEY, OLD_KEY, TOKEN] {
        assert!(!text.contains(secret), "{text}");
    }
    body["reason"].as_str().unwrap().to_owned()
}

/// A header sent twice reaches the function with its values joined by commas (API Gateway's
/// HTTP APIs do so), or as two values (the local runner, the tests): either way a request
/// one of its signatures signs passes, a timestamp repeated with one value is that value, and
/// two timestamps, or signatures none of which is a key's, are refused.
#[tokio::test]
async fn a_repeated_signature_header_passes_when_one_of_its_signatures_is_a_key_s() {
    let h = app().await;
    let good = sign(KEY.as_bytes(), WAV_TASK, NOW_SECS);
    let wrong = sign(b"wrong-key", WAV_TASK, NOW_SECS);
    let ts = ("X-Webhook-Timestamp", NOW_SECS.to_string());
    let joined = [ts.clone(), ("X-Webhook-Signature", format!("{wrong},{good}"))];
    assert_eq!(h.handle(request("/callback", &joined, WAV.to_vec())).await.status(), StatusCode::OK, "joined");
    let apart = [ts.clone(), ("X-Webhook-Signature", wrong.clone()), ("X-Webhook-Signature", good.clone())];
    assert_eq!(h.handle(request("/callback", &apart, WAV.to_vec())).await.status(), StatusCode::OK, "apart");
    let same_twice = [("X-Webhook-Timestamp", format!("{0}, {0}", NOW_SECS)), ("X-Webhook-Signature", good.clone())];
    assert_eq!(h.handle(request("/callback", &same_twice, WAV.to_vec())).await.status(), StatusCode::OK);

    let two_times =
        [("X-Webhook-Timestamp", format!("{},{}", NOW_SECS, NOW_SECS - 1)), ("X-Webhook-Signature", good.clone())];
    assert_eq!(refusal(&h, request("/callback", &two_times, WAV.to_vec())).await, "malformed_timestamp");
    let none_a_key = [ts.clone(), ("X-Webhook-Signature", format!("{wrong},{wrong}"))];
    assert_eq!(refusal(&h, request("/callback", &none_a_key, WAV.to_vec())).await, "signature_mismatch");
    // The answer does not hang on the order: a well-formed signature's refusal first.
    let junk_first = [ts.clone(), ("X-Webhook-Signature", format!("not base64!,{wrong}"))];
    assert_eq!(refusal(&h, request("/callback", &junk_first, WAV.to_vec())).await, "signature_mismatch");
    // More than a sender would send: one malformed signature, none of them tried.
    let many = [ts, ("X-Webhook-Signature", [wrong.as_str(); 4].join(",") + "," + &good)];
    assert_eq!(refusal(&h, request("/callback", &many, WAV.to_vec())).await, "malformed_signature");
    assert_eq!(h.ports.record(WAV_TASK).unwrap().deliveries, 3);
}

#[tokio::test]
async fn bad_signatures_are_refused_with_their_reason_and_write_nothing() {
    let h = app().await;
    let with = |headers: Vec<(&'static str, String)>| request("/callback", &headers, WAV.to_vec());
    assert_eq!(refusal(&h, with(signed_headers("wrong-key", WAV_TASK, NOW_SECS))).await, "signature_mismatch");
    assert_eq!(refusal(&h, with(signed_headers(KEY, "another-task", NOW_SECS))).await, "signature_mismatch");
    assert_eq!(refusal(&h, with(signed_headers("wrong-key", WAV_TASK, NOW_SECS - 301))).await, "timestamp_too_old");
    assert_eq!(refusal(&h, with(signed_headers("wrong-key", WAV_TASK, NOW_SECS + 301))).await, "timestamp_in_future");
    assert_eq!(refusal(&h, with(vec![])).await, "missing_timestamp");
    let only_ts = vec![("X-Webhook-Timestamp", NOW_SECS.to_string())];
    assert_eq!(refusal(&h, with(only_ts)).await, "missing_signature");
    let only_sig = vec![("X-Webhook-Signature", sign(KEY.as_bytes(), WAV_TASK, NOW_SECS))];
    assert_eq!(refusal(&h, with(only_sig)).await, "missing_timestamp");
    let mut bad_ts = signed_headers(KEY, WAV_TASK, NOW_SECS);
    bad_ts[0].1 = "2025-11-23T15:00:00Z".into();
    assert_eq!(refusal(&h, with(bad_ts)).await, "malformed_timestamp");
    let mut bad_sig = signed_headers(KEY, WAV_TASK, NOW_SECS);
    bad_sig[1].1 = "not base64!".into();
    assert_eq!(refusal(&h, with(bad_sig)).await, "malformed_signature");
    // Missing, stale or malformed headers are refused before the body is even parsed.
    assert_eq!(refusal(&h, request("/callback", &[], b"not json".to_vec())).await, "missing_timestamp");
    let stale = signed_headers(KEY, WAV_TASK, NOW_SECS - 301);
    assert_eq!(refusal(&h, request("/callback", &stale, b"not json".to_vec())).await, "timestamp_too_old");
    let mut junk = signed_headers(KEY, WAV_TASK, NOW_SECS);
    junk[1].1 = "not base64!".into();
    assert_eq!(refusal(&h, request("/callback", &junk, b"not json".to_vec())).await, "malformed_signature");
    assert_untouched(&h);
}

/// A callback refused for its timestamp alone, signed by a key at that time, is the
/// provider's (or a replay of one of its callbacks): its task is registered to be polled, and
/// only its id and the family the body names are taken. Still a 401: the body is not signed.
#[tokio::test]
async fn a_stale_callback_signed_by_a_key_registers_its_task_for_polling() {
    let h = app().await;
    let stale = || request("/callback", &signed_headers(OLD_KEY, WAV_TASK, NOW_SECS - 3600), WAV.to_vec());
    let response = h.handle(stale()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = json(&response);
    assert_eq!(
        (body["reason"].as_str(), &body["task_registered_for_polling"]),
        (Some("timestamp_too_old"), &Value::Bool(true))
    );
    let record = h.ports.record(WAV_TASK).expect("registered");
    assert_eq!((record.stage, record.family, record.files.len()), (Stage::Submitted, Family::Wav, 0));
    // Polled at the reconciler's next run: the provider called back already.
    let now = Timestamp::from_unix_ms(NOW_SECS * 1000);
    assert_eq!(record.reconcile_at, Some(now.plus(stemvault_vault::reconcile::FIRST_POLL_INTERVAL)));
    assert!(h.ports.body_keys().is_empty() && h.ports.messages().is_empty(), "nothing of the body is taken");
    let registered =
        |h: &App<MemoryPorts>| h.ports.measures().iter().filter(|m| **m == Measure::StaleRegistered).count();
    assert_eq!(registered(&h), 1);

    // Again, or for a task recorded otherwise: the table knows it, nothing is written.
    let again = h.handle(stale()).await;
    assert_eq!((again.status(), json(&again).get("task_registered_for_polling")), (StatusCode::UNAUTHORIZED, None));
    assert_eq!(h.ports.record(WAV_TASK), Some(record));
    assert_eq!(registered(&h), 1, "counted once, when registered");

    // Signed ahead of our clock (the sender's clock is fast): the provider's all the same.
    let body = String::from_utf8_lossy(WAV).replace(WAV_TASK, "t-ahead");
    let ahead = h.handle(request("/callback", &signed_headers(KEY, "t-ahead", NOW_SECS + 3600), body)).await;
    let body = json(&ahead);
    assert_eq!(
        (ahead.status(), body["reason"].as_str(), &body["task_registered_for_polling"]),
        (StatusCode::UNAUTHORIZED, Some("timestamp_in_future"), &Value::Bool(true))
    );
    assert_eq!(h.ports.record("t-ahead").map(|r| (r.stage, r.family)), Some((Stage::Submitted, Family::Wav)));
    assert_eq!(registered(&h), 2);

    // Signed by no key of ours, unreadable, or naming no family to poll: nothing.
    let h = app().await;
    let forged = request("/callback", &signed_headers("wrong-key", WAV_TASK, NOW_SECS - 3600), WAV.to_vec());
    assert_eq!(refusal(&h, forged).await, "timestamp_too_old");
    let unknown = br#"{"code":200,"data":{"task_id":"t-unknown","something":"else"}}"#;
    let unknown = request("/callback", &signed_headers(KEY, "t-unknown", NOW_SECS - 3600), unknown.to_vec());
    assert_eq!(refusal(&h, unknown).await, "timestamp_too_old");
    let unreadable = br#"{"code":200,"data":{"task_id":"t-broken","data":[{}],"duration":1e400}}"#;
    let unreadable = request("/callback", &signed_headers(KEY, "t-broken", NOW_SECS - 3600), unreadable.to_vec());
    assert_eq!(refusal(&h, unreadable).await, "timestamp_too_old");
    // Recorded by another request between the read and the put: known, nothing to add.
    h.ports.set_save_error(Some(StoreError::Conflict));
    let raced = h.handle(stale()).await;
    assert_eq!((raced.status(), json(&raced).get("task_registered_for_polling")), (StatusCode::UNAUTHORIZED, None));
    h.ports.set_save_error(None);
    assert_untouched(&h);

    // The table failing, or refusing the write as invalid (a build's fault a deploy fixes):
    // 503, so the provider's retry registers it.
    for error in [StoreError::Unavailable("injected".into()), StoreError::Invalid("injected".into())] {
        h.ports.set_save_error(Some(error));
        let failed = h.handle(stale()).await;
        assert_eq!(
            (failed.status(), json(&failed)["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("task_record_unavailable"))
        );
    }
    h.ports.set_save_error(None);
    assert_eq!(json(&h.handle(stale()).await)["task_registered_for_polling"], true, "the retry registers it");
}

/// A table that does not answer holds a stale callback's answer no longer than registering
/// may take: 503, within the answer's time.
#[tokio::test(start_paused = true)]
async fn a_stale_callback_whose_task_cannot_be_registered_in_time_is_503() {
    let h = app().await;
    h.ports.set_table_stalled(true);
    let began = tokio::time::Instant::now();
    let stale = request("/callback", &signed_headers(KEY, WAV_TASK, NOW_SECS - 3600), WAV.to_vec());
    let response = h.handle(stale).await;
    assert_eq!(
        (response.status(), json(&response)["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("task_record_unavailable"))
    );
    assert!(began.elapsed() <= REGISTER_WITHIN && began.elapsed() >= REGISTER_WITHIN / 2, "{:?}", began.elapsed());
}

/// Registering a stale callback's task takes what every other check takes: the path token
/// first, a failure's family only when the body tells it, and a key rotated in since the
/// secret was read (or, the secret unreadable, a 503 the retry may pass).
#[tokio::test]
async fn a_stale_callback_registers_only_past_every_other_check() {
    let stale_at = |key: &str, path: &str, body: &[u8], task: &str| {
        request(path, &signed_headers(key, task, NOW_SECS - 3600), body.to_vec())
    };
    let h = app_with(config(), keys_and_token()).await;
    assert_eq!(refusal(&h, stale_at(KEY, "/callback", WAV, WAV_TASK)).await, "missing_token");
    assert_eq!(refusal(&h, stale_at(KEY, "/callback/guess", WAV, WAV_TASK)).await, "invalid_token");
    // A failure without files reads as music whatever its family: a guess, not registered.
    let failure = br#"{"code":501,"msg":"failed","data":{"callbackType":"error","task_id":"t-failed"}}"#;
    assert_eq!(
        refusal(&h, stale_at(KEY, &format!("/callback/{TOKEN}"), failure, "t-failed")).await,
        "timestamp_too_old"
    );
    // Signed more than 14 days ago: the provider may have forgotten the task.
    let ancient = signed_headers(KEY, WAV_TASK, NOW_SECS - 15 * 24 * 3600);
    assert_eq!(refusal(&h, request(&format!("/callback/{TOKEN}"), &ancient, WAV.to_vec())).await, "timestamp_too_old");
    // As far ahead: no more a recent task's.
    let far_ahead = signed_headers(KEY, WAV_TASK, NOW_SECS + 15 * 24 * 3600);
    let refused = request(&format!("/callback/{TOKEN}"), &far_ahead, WAV.to_vec());
    assert_eq!(refusal(&h, refused).await, "timestamp_in_future");
    // A table that refuses the write for good: the refusal stands (no 503 retried forever).
    h.ports.set_save_error(Some(StoreError::Rejected("injected".into())));
    assert_eq!(refusal(&h, stale_at(KEY, &format!("/callback/{TOKEN}"), WAV, WAV_TASK)).await, "timestamp_too_old");
    h.ports.set_save_error(None);
    assert_untouched(&h);

    let h = app().await;
    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![NEW_KEY.into()], callback_tokens: vec![] });
    h.ports.set_secret_failing(true);
    h.ports.advance(Duration::from_secs(60));
    in_doubt(&h, stale_at(NEW_KEY, "/callback", WAV, WAV_TASK)).await;
    assert_untouched(&h);
    h.ports.set_secret_failing(false);
    h.ports.advance(Duration::from_secs(60));
    let rotated = h.handle(stale_at(NEW_KEY, "/callback", WAV, WAV_TASK)).await;
    assert_eq!(json(&rotated)["task_registered_for_polling"], true, "registered once the secret is read again");
}

/// The signature is checked against the task id alone, before the rest of the body is read:
/// a forged body the parse would refuse is refused as unsigned (and nothing is built from
/// it); signed, the same body is refused as unparsable, and kept whole (it came from the
/// provider: a retry would bring the same), nothing else written. A bucket failing or not
/// answering then answers 503, so the retry keeps it. So is one holding too many values to be
/// read (the memory they would take), whatever they are.
#[tokio::test(start_paused = true)]
async fn a_signed_body_the_parser_refuses_is_refused_and_kept() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let many = format!("[{}]", vec!["{}"; suno_callbacks::parse::MAX_JSON_MARKS].join(","));
    for (extra, error) in [("1e400".to_owned(), "invalid_json"), (deep, "invalid_json"), (many, "too_many_json_values")]
    {
        let h = app_with(Config { max_body_bytes: 4 << 20, ..config() }, keys()).await;
        let counted = || h.ports.measures().iter().filter(|m| **m == Measure::UnparsableKept).count();
        let body = format!(r#"{{"code":200,"data":{{"task_id":"{WAV_TASK}","data":[{{}}],"duration":{extra}}}}}"#);
        let forged = request("/callback", &signed_headers("wrong-key", WAV_TASK, NOW_SECS), body.clone().into_bytes());
        assert_eq!(refusal(&h, forged).await, "signature_mismatch");
        assert!(h.ports.body_keys().is_empty(), "nothing kept of a forged body");

        let signed = || request("/callback", &signed_headers(KEY, WAV_TASK, NOW_SECS), body.clone().into_bytes());
        h.ports.set_archive_failing(true);
        let failing = h.handle(signed()).await;
        assert_eq!(
            (failing.status(), json(&failing)["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("archive_failed"))
        );
        h.ports.set_archive_failing(false);
        h.ports.set_archive_stalled(true);
        assert_eq!(h.handle(signed()).await.status(), StatusCode::SERVICE_UNAVAILABLE, "within the answer's time");
        h.ports.set_archive_stalled(false);
        assert_eq!(counted(), 0, "counted only once kept");

        let kept = h.handle(signed()).await;
        assert_eq!(kept.status(), StatusCode::BAD_REQUEST);
        assert_eq!((json(&kept)["error"].as_str(), json(&kept)["body_kept"].as_bool()), (Some(error), Some(true)));
        let key = format!("tasks/{WAV_TASK}/callbacks/unparsable-{}.json", body_sha256_hex(body.as_bytes()));
        assert_eq!(h.ports.body_keys(), std::slice::from_ref(&key));
        assert!(h.ports.body(&key) == Some(body.into_bytes()), "verbatim");
        assert!(h.ports.record_count() == 0 && h.ports.messages().is_empty(), "nothing recorded");
        assert_eq!(counted(), 1);
    }
}

/// A message cut in the middle of an emoji (an unpaired surrogate escape, as JavaScript writes
/// one) or a byte that is not UTF-8 does not lose a signed callback: it is read with U+FFFD
/// there, and archived as received.
#[tokio::test]
async fn a_broken_character_in_a_signed_body_is_read_as_a_replacement() {
    for broken in [&br"Sunrise \ud83c"[..], b"Sunrise \xff"] {
        let h = app().await;
        let mut body = br#"{"code":200,"msg":""#.to_vec();
        body.extend_from_slice(broken);
        let rest = format!(r#"","data":{{"audioWavUrl":"https://h/s/a.wav","task_id":"{WAV_TASK}"}}}}"#);
        body.extend_from_slice(rest.as_bytes());
        let case = String::from_utf8_lossy(broken).into_owned();
        let response = h.handle(request("/callback", &signed_headers(KEY, WAV_TASK, NOW_SECS), body.clone())).await;
        assert_eq!(response.status(), StatusCode::OK, "{case}");
        let record = h.ports.record(WAV_TASK).expect("recorded");
        assert_eq!(record.files.keys().collect::<Vec<_>>(), ["wav"], "{case}");
        assert_eq!(record.message, "Sunrise \u{fffd}", "{case}");
        assert_eq!(h.ports.body(&h.ports.body_keys()[0]).unwrap(), body, "{case}: archived as received");
    }
}

#[tokio::test]
async fn a_signature_by_the_previous_key_or_at_the_window_edge_is_accepted() {
    let h = app().await;
    let response =
        h.handle(request("/callback", &signed_headers(OLD_KEY, WAV_TASK, NOW_SECS - 300), WAV.to_vec())).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_path_token_is_required_when_configured() {
    let h = app_with(config(), token(TOKEN)).await;
    assert_eq!(refusal(&h, request("/callback", &[], WAV.to_vec())).await, "missing_token");
    assert_eq!(refusal(&h, request("/callback/", &[], WAV.to_vec())).await, "missing_token");
    assert_eq!(refusal(&h, request("/callback/0123456789abcdef-tokem", &[], WAV.to_vec())).await, "invalid_token");
    let nested = h.handle(request(&format!("/callback/{TOKEN}/x"), &[], WAV.to_vec())).await;
    assert_eq!(nested.status(), StatusCode::NOT_FOUND);
    assert_untouched(&h);
    let ok = h.handle(request(&format!("/callback/{TOKEN}"), &[], WAV.to_vec())).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_and_signature_together_both_count() {
    let h = app_with(config(), keys_and_token()).await;
    let path = format!("/callback/{TOKEN}");
    assert_eq!(refusal(&h, request(&path, &[], WAV.to_vec())).await, "missing_timestamp");
    assert_eq!(refusal(&h, signed(WAV, WAV_TASK)).await, "missing_token");
    let ok = h.handle(request(&path, &signed_headers(KEY, WAV_TASK, NOW_SECS), WAV.to_vec())).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn unauthenticated_only_when_allowed() {
    let open = app_with(Config { allow_unauthenticated: true, ..config() }, CallbackSecret::default()).await;
    assert_eq!(open.handle(request("/callback", &[], WAV.to_vec())).await.status(), StatusCode::OK);
    // A secret with neither keys nor token accepts nothing unless that was allowed (the start
    // says why: `a_secret_that_cannot_be_used_starts_the_function_answering_503`).
    let captured = capture_logs();
    let closed = App::with_ports(&config(), ports(&CallbackSecret::default())).await;
    in_doubt(&closed, request("/callback", &[], WAV.to_vec())).await;
    assert!(captured.text().contains(crate::auth::NO_AUTHENTICATION), "{}", captured.text());
    assert_eq!(
        crate::auth::NO_AUTHENTICATION,
        "no callback authentication configured: put webhook_hmac_keys and/or callback_token in the callback \
         secret (CALLBACK_SECRET_ARN; the stack's WebhookHmacKeys or CallbackToken parameter); only make run \
         accepts unauthenticated callbacks (its ALLOW_UNAUTHENTICATED=true)"
    );
}

/// A refused request whose body names no task (a scanner's) is logged at INFO; one naming a
/// task (perhaps the provider's callback) at WARN, which the runbooks read.
#[tokio::test]
async fn refusals_naming_no_task_are_info_and_those_naming_one_warnings() {
    let h = app().await;
    let captured = capture_logs();
    assert_eq!(refusal(&h, request("/callback", &[], b"not json".to_vec())).await, "missing_timestamp");
    assert_eq!(refusal(&h, request("/callback", &[], WAV.to_vec())).await, "missing_timestamp");
    // Too large to be read: whether it names a task is not known (read, it would name none).
    let over = vec![b' '; config().max_body_bytes + 1];
    assert_eq!(refusal(&h, request("/callback", &[], over)).await, "missing_timestamp");
    let logs = captured.text();
    let levels: Vec<Level> = captured.lines_with("callback refused").iter().map(|l| l.level).collect();
    assert_eq!(levels, [Level::INFO, Level::WARN, Level::WARN], "{logs}");
}

/// A secret whose text cannot be used (an edit to fix), with no previous version to fall back
/// on, starts the function answering 503 `secret_unreadable`, as one that cannot be read
/// (here: missing) does: the start says why, showing no key, and is counted (alarmed); once
/// the secret is fixed, a read a minute on brings its checks and callbacks land.
#[tokio::test]
async fn a_secret_that_cannot_be_used_starts_the_function_answering_503() {
    let missing = App::with_ports(&config(), MemoryPorts::new()).await;
    in_doubt(&missing, signed_at(KEY, NOW_SECS)).await;

    let captured = capture_logs();
    let broken = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(NOW_SECS * 1000));
    broken.set_secret_text(&format!(r#"{{"webhook_hmac_keys": ["{KEY}", ""]}}"#));
    let h = App::with_ports(&config(), broken).await;
    assert_eq!(h.ports.measures(), [Measure::SecretRereadFailed], "counted, so alarmed");
    let logs = logs_without_keys(&captured);
    assert!(logs.contains("its text cannot be used") && logs.contains("key number 2 is empty"), "{logs}");
    assert!(logs.contains("its previous version, AWSPREVIOUS, cannot be read"), "{logs}");
    in_doubt(&h, signed_at(KEY, NOW_SECS)).await;

    h.ports.set_secret_text(&format!(r#"{{"webhook_hmac_keys": ["{KEY}"]}}"#));
    in_doubt(&h, signed_at(KEY, NOW_SECS)).await;
    h.ports.advance(Duration::from_secs(60));
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 60)).await.status(), StatusCode::OK, "read again: it lands");
}

/// A rotation's typo at a cold start: the secret's current text cannot be used, so the
/// instance checks with its previous version's (`AWSPREVIOUS`), as the instances started
/// before still do, instead of refusing every callback until the fix. The start is counted
/// (alarmed) and says so at ERROR; a callback signed with a key only the broken text names is
/// in doubt (503: the provider retries), and lands once the fixed text is read.
#[tokio::test]
async fn a_secret_whose_text_cannot_be_used_at_start_up_falls_back_on_its_previous_version() {
    let captured = capture_logs();
    let rotated = ports(&keys());
    rotated.set_secret_text(&format!(r#"{{"webhook_hmac_keys": ["{NEW_KEY}", ""]}}"#));
    let h = App::with_ports(&config(), rotated).await;
    assert_eq!(h.ports.measures(), [Measure::SecretRereadFailed], "counted, so alarmed");
    let logs = logs_without_keys(&captured);
    let said = captured.lines_with("checking callbacks with its previous version");
    assert!(said.len() == 1 && said[0].is(Level::ERROR, &["key number 2 is empty"]), "{logs}");

    assert_eq!(h.handle(signed_at(KEY, NOW_SECS)).await.status(), StatusCode::OK, "the previous version's key");
    assert_eq!(h.handle(signed_at(OLD_KEY, NOW_SECS)).await.status(), StatusCode::OK);
    in_doubt(&h, signed_at(NEW_KEY, NOW_SECS)).await;

    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![NEW_KEY.into()], callback_tokens: vec![] });
    h.ports.advance(Duration::from_secs(60));
    assert_eq!(h.handle(signed_at(NEW_KEY, NOW_SECS + 60)).await.status(), StatusCode::OK, "fixed: read again");
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS + 60)).await, "signature_mismatch", "rotated out");
}

/// A secret whose current text and previous version both cannot be used starts the function
/// answering 503 `secret_unreadable`, its log naming both faults (no key).
#[tokio::test]
async fn a_secret_neither_of_whose_versions_can_be_used_starts_the_function_answering_503() {
    let captured = capture_logs();
    let broken = MemoryPorts::with_virtual_clock(Timestamp::from_unix_ms(NOW_SECS * 1000));
    broken.set_secret_text(&format!(r#"{{"webhook_hmac_keys": ["{KEY}", ""]}}"#));
    broken.set_secret_text("not json");
    let h = App::with_ports(&config(), broken).await;
    assert_eq!(h.ports.measures(), [Measure::SecretRereadFailed], "counted, so alarmed");
    let logs = logs_without_keys(&captured);
    assert!(
        logs.contains("nor can its previous version's (AWSPREVIOUS)") && logs.contains("key number 2 is empty"),
        "{logs}"
    );
    in_doubt(&h, signed_at(KEY, NOW_SECS)).await;
}

/// The first request of an instance waited for it to start (the secret's read): its answer
/// is due that much sooner; later requests count from when they are handled, and so does a
/// first one handled long after the start (Lambda initialised the instance ahead of it).
#[tokio::test]
async fn the_first_request_counts_the_instance_s_start_as_spent() {
    let slow = ports(&keys());
    slow.set_latency(Duration::from_millis(50));
    let h = App::with_ports(&config(), slow).await;
    // Handled at once after the start (a real clock read could come over a second late on a
    // loaded machine, and read as a request that came after it).
    let now = h.built_at + Duration::from_millis(1);
    assert!(now - h.arrived(now) >= Duration::from_millis(50), "the start counted");
    assert_eq!(h.arrived(now), now, "only for the first request");

    let slow = ports(&keys());
    slow.set_latency(Duration::from_millis(50));
    let started_ahead = App::with_ports(&config(), slow).await;
    let later = started_ahead.built_at + WAITED_FOR_THE_START_WITHIN + Duration::from_millis(1);
    assert_eq!(started_ahead.arrived(later), later, "it came after the start");
}

/// A start-up read of the secret that never answers is given up (not held until Lambda's
/// init timeout), and the function starts without checks: callbacks are answered 503
/// `secret_unreadable` (the provider retries), and the start is counted (alarmed).
#[tokio::test(start_paused = true)]
async fn a_start_up_read_that_hangs_starts_the_function_answering_503() {
    let hanging = ports(&keys());
    hanging.hang_secret_reads();
    let config = config();
    let starting = App::with_ports(&config, hanging);
    let h = tokio::time::timeout(Duration::from_secs(60), starting).await.expect("given up");
    assert_eq!(h.ports.measures(), [Measure::SecretRereadFailed], "counted, so alarmed");
    in_doubt(&h, signed_at(KEY, NOW_SECS)).await;
    assert_untouched(&h);
}

/// With ALLOW_UNAUTHENTICATED, a secret unreadable at start-up answers 503 too (unread checks
/// accept nothing), and the empty secret a read brings later opens the endpoint, as it would
/// have at start-up.
#[tokio::test]
async fn an_open_endpoint_whose_secret_was_unreadable_opens_once_read() {
    let failing = ports(&CallbackSecret::default());
    failing.set_secret_failing(true);
    let h = App::with_ports(&Config { allow_unauthenticated: true, ..config() }, failing).await;
    in_doubt(&h, request("/callback", &[], WAV.to_vec())).await;
    h.ports.set_secret_failing(false);
    h.ports.advance(Duration::from_secs(60));
    assert_eq!(h.handle(request("/callback", &[], WAV.to_vec())).await.status(), StatusCode::OK);
}

/// A secret Secrets Manager refuses at start-up (unreadable, not unusable) starts the function
/// answering 503 `secret_unreadable`, reading the secret again after a refusal at most every
/// 5 s while it holds no checks (not once a minute: the provider retries a few times only):
/// once a read brings it, callbacks land.
#[tokio::test]
async fn a_secret_unreadable_at_start_up_is_read_again_until_callbacks_land() {
    let failing = ports(&keys());
    failing.set_secret_failing(true);
    let h = App::with_ports(&config(), failing).await;
    let reads = h.ports.secret_reads();
    in_doubt(&h, signed_at(KEY, NOW_SECS)).await;
    assert_eq!(h.ports.secret_reads(), reads, "not read again at once");
    h.ports.advance(crate::credentials::UNREAD_REFUSAL_REREAD_INTERVAL);
    in_doubt(&h, signed_at(KEY, NOW_SECS + 5)).await;
    assert_eq!(h.ports.secret_reads(), reads + 1, "read again 5 s on, failing still");
    h.ports.set_secret_failing(false);
    in_doubt(&h, signed_at(KEY, NOW_SECS + 5)).await;
    assert_eq!(h.ports.secret_reads(), reads + 1, "not read again within 5 s");
    h.ports.advance(crate::credentials::UNREAD_REFUSAL_REREAD_INTERVAL);
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 10)).await.status(), StatusCode::OK, "read again: it lands");
    assert_eq!(h.ports.secret_reads(), reads + 2);
}

#[tokio::test]
async fn bad_input_gets_a_specific_4xx_and_writes_nothing() {
    let h = app().await;
    let cases: [(&[u8], StatusCode, &str); 6] = [
        (&[b' '; 4097], StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (b"", StatusCode::BAD_REQUEST, "invalid_json"),
        (b"{\"code\":200,", StatusCode::BAD_REQUEST, "invalid_json"),
        (b"[1,2]", StatusCode::BAD_REQUEST, "not_a_json_object"),
        (b"{\"code\":200,\"data\":{}}", StatusCode::BAD_REQUEST, "missing_task_id"),
        (b"{\"code\":200,\"data\":{\"task_id\":\"../etc\"}}", StatusCode::BAD_REQUEST, "invalid_task_id"),
    ];
    for (body, status, code) in cases {
        let response = h.handle(signed(body, WAV_TASK)).await;
        assert_eq!(response.status(), status, "{code}");
        let answer = json(&response);
        assert_eq!(answer["error"], code);
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    let exactly_the_limit = [b' '; 4096];
    assert_eq!(h.handle(signed(&exactly_the_limit, WAV_TASK)).await.status(), StatusCode::BAD_REQUEST);
    assert_untouched(&h);
}

#[tokio::test]
async fn an_unknown_family_is_recorded() {
    let h = app().await;
    let body = br#"{"code":200,"msg":"ok","data":{"taskId":"new-kind-1","result":{"coverUrl":"https://h/c.png"}}}"#;
    let response = h.handle(signed(body, "new-kind-1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let record = h.ports.record("new-kind-1").unwrap();
    assert_eq!(record.family, Family::Unknown);
    assert_eq!(record.files.keys().collect::<Vec<_>>(), vec!["result/cover"]);
}

#[tokio::test]
async fn infrastructure_failures_are_5xx_when_not_parked_and_the_retry_completes() {
    let h = app().await;
    h.ports.set_enqueue_failing(true);
    h.ports.set_park_failing(true);
    let failed = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = json(&failed);
    assert_eq!(answer["error"], "enqueue_failed");
    assert!(!answer.to_string().contains("switched off"), "no internal error text: {answer}");
    assert_eq!(h.ports.record(WAV_TASK).unwrap().files["wav"].status, FileStatus::Pending);

    h.ports.set_enqueue_failing(false);
    let retry = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!((json(&retry)["status"].as_str(), json(&retry)["files_queued"].as_u64()), (Some("duplicate"), Some(1)));

    // Parking works: the provider is answered, and the reconciler's replay finishes it.
    let parked = app().await;
    parked.ports.set_enqueue_failing(true);
    let response = parked.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&response)["status"], "parked");

    // A record an operator must fix: parked for after the fix; 503 when parking fails.
    let broken = app().await;
    broken.ports.set_save_error(Some(StoreError::Malformed("bad item".into())));
    let response = broken.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!((response.status(), json(&response)["status"].as_str()), (StatusCode::OK, Some("parked")));
    broken.ports.set_park_failing(true);
    let response = broken.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "a retry may park it");
    assert_eq!(json(&response)["error"], "task_record_malformed");

    // A record the table refuses for good: no retry helps, and the body is kept, parked for
    // the replay to move to its archive key; 503 when parking fails (a retry may park it).
    let refused = app().await;
    refused.ports.set_save_error(Some(StoreError::Rejected("Item size has exceeded the maximum".into())));
    let response = refused.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!((response.status(), json(&response)["status"].as_str()), (StatusCode::OK, Some("parked")));
    assert_eq!(refused.ports.body_keys().iter().filter(|k| k.starts_with("parked/")).count(), 1);
    refused.ports.set_park_failing(true);
    let response = refused.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "a retry may park it");
    assert_eq!(json(&response)["error"], "task_record_rejected");
}

#[tokio::test]
async fn a_failed_publish_not_parked_is_a_503_and_the_provider_s_retry_publishes_the_same_event() {
    let h = app().await;
    h.ports.events.fail_next(1);
    h.ports.set_park_failing(true);
    let failed = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&failed)["error"], "publish_failed");
    assert!(h.ports.events.published().is_empty());

    let retry = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let published = h.ports.events.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].detail.event_id, format!("{WAV_TASK}.stage.{}", published[0].detail.stage.as_str()));
    assert_eq!(published[0].detail.bucket, "b", "the vault bucket, BUCKET_NAME");
}

/// A bug breaking a callback's handling is answered as a failure the provider retries (503,
/// JSON, counted), not with lambda_http's bare 500; the instance goes on to the next.
#[tokio::test]
async fn a_panic_handling_a_callback_is_answered_503_and_counted() {
    let captured = capture_logs();
    let h = app().await;
    let signed = || request("/callback", &signed_headers(KEY, WAV_TASK, NOW_SECS), WAV.to_vec());
    h.ports.set_archive_panicking(true);
    let broken = h.handle(signed()).await;
    assert_eq!((broken.status(), json(&broken)["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("panicked")));
    assert!(h.ports.measures().contains(&Measure::Failed { reason: "panicked" }), "{:?}", h.ports.measures());
    let said = captured.lines_with("handling panicked");
    assert!(said.len() == 1 && said[0].is(Level::ERROR, &[WAV_TASK]), "in the callback's span: {}", captured.text());

    h.ports.set_archive_panicking(false);
    let retried = h.handle(signed()).await;
    assert_eq!((retried.status(), json(&retried)["status"].as_str()), (StatusCode::OK, Some("accepted")));
}

#[tokio::test]
async fn a_callback_too_large_to_record_is_parked_unrecorded_or_else_a_503() {
    let captured = capture_logs();
    let h = app_with(Config { max_body_bytes: 1024 * 1024, ..config() }, keys()).await;
    // One track whose URL alone would make an item over DynamoDB's 400 KB.
    let tracks: Vec<Value> =
        vec![serde_json::json!({"id": "t0", "audio_url": format!("https://h/0.mp3?sig={}", "s".repeat(360_000))})];
    let body = serde_json::json!({"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "big-1", "data": tracks}});
    let body = body.to_string().into_bytes();
    let response = h.handle(signed(&body, "big-1")).await;
    assert_eq!((response.status(), json(&response)["status"].as_str()), (StatusCode::OK, Some("parked")));
    assert_eq!(h.ports.record_count(), 0);
    assert!(h.ports.messages().is_empty());
    let [key] = &h.ports.body_keys()[..] else { panic!("{:?}", h.ports.body_keys()) };
    assert!(key.starts_with("parked/big-1/"), "{key}");
    assert_eq!(h.ports.body(key).as_deref(), Some(&body[..]));
    let reason = "callback_too_large_to_record";
    assert_eq!(h.ports.measures(), [Measure::Parked { reason }]);
    let logs = captured.text();
    let parked = captured.lines_with(r#""message":"callback parked"#);
    assert!(parked.len() == 1 && parked[0].is(Level::ERROR, &[]), "{logs}");

    let h = app_with(Config { max_body_bytes: 1024 * 1024, ..config() }, keys()).await;
    h.ports.set_park_failing(true);
    let response = h.handle(signed(&body, "big-1")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "retried: a retry may park it");
    assert_eq!(json(&response)["error"], "callback_too_large_to_record");
    assert_eq!(h.ports.measures().last(), Some(&Measure::Refused { reason }), "counted as refused");
    assert_untouched(&h);
}

/// A request over its deadline parks the callback (answered 200, `parked`); when parking
/// cannot be done either, it is a 503 `timeout`, which the provider retries.
#[tokio::test]
async fn a_request_over_its_deadline_is_parked_or_else_a_503_timeout() {
    let h = app().await.with_settings(Settings { deadline: Duration::from_millis(50), ..Settings::default() });
    h.ports.set_latency(Duration::from_millis(200));
    let response = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(&response);
    assert_eq!((answer["status"].as_str(), answer["task_id"].as_str()), (Some("parked"), Some(WAV_TASK)));
    assert!(h.ports.body_keys().iter().any(|k| k.starts_with(&format!("parked/{WAV_TASK}/"))));

    h.ports.set_archive_failing(true);
    let response = h.handle(signed(WAV, WAV_TASK)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(&response)["error"], "timeout");
}

// --- the callback secret, rotated --------------------------------------------------------

const NEW_KEY: &str = "rotated-key";

/// A WAV callback signed by `key` at `secs`.
fn signed_at(key: &str, secs: i64) -> Request {
    request("/callback", &signed_headers(key, WAV_TASK, secs), WAV.to_vec())
}

#[tokio::test]
async fn a_key_rotated_into_the_secret_is_taken_after_a_refusal_at_most_once_a_minute() {
    let h = app().await;
    assert_eq!(h.ports.secret_reads(), 1, "read at start-up");
    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![NEW_KEY.into(), KEY.into()], callback_tokens: vec![] });

    // Within a minute of the last read: the refusal stands, and nothing is read.
    h.ports.advance(Duration::from_secs(59));
    assert_eq!(refusal(&h, signed_at(NEW_KEY, NOW_SECS + 59)).await, "signature_mismatch");
    assert_eq!(h.ports.secret_reads(), 1);

    // A minute on, the refused request reads the secret again and passes with the new key.
    h.ports.advance(Duration::from_secs(1));
    let response = h.handle(signed_at(NEW_KEY, NOW_SECS + 60)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    assert_eq!(h.ports.secret_reads(), 2);
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 60)).await.status(), StatusCode::OK, "the old key is still listed");

    // A flood of bad signatures reads it at most once a minute.
    for second in 0..120 {
        h.ports.advance(Duration::from_secs(1));
        assert_eq!(refusal(&h, signed_at("wrong-key", NOW_SECS + 61 + second)).await, "signature_mismatch");
    }
    assert_eq!(h.ports.secret_reads(), 4, "two more reads in two minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refusals_share_one_read() {
    let h = std::sync::Arc::new(app().await);
    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![NEW_KEY.into()], callback_tokens: vec![] });
    h.ports.advance(Duration::from_secs(60));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        // Each its own task: deliveries of one task would wait for each other in virtual time.
        let task = format!("wav-task-{i}");
        let body = String::from_utf8(WAV.to_vec()).unwrap().replace(WAV_TASK, &task);
        let req = request("/callback", &signed_headers(NEW_KEY, &task, NOW_SECS + 60), body.into_bytes());
        let h = h.clone();
        requests.spawn(async move { h.handle(req).await.status() });
    }
    for status in requests.join_all().await {
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(h.ports.secret_reads(), 2, "the start-up read and one refresh");
    // The old key left the secret: refused from now on.
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS + 60)).await, "signature_mismatch");
}

#[tokio::test]
async fn a_token_added_to_the_secret_is_required_from_then_on() {
    let h = app().await;
    let path = format!("/callback/{TOKEN}");
    let with_token = |at: i64| request(&path, &signed_headers(KEY, WAV_TASK, at), WAV.to_vec());
    assert_eq!(h.handle(with_token(NOW_SECS)).await.status(), StatusCode::OK, "no token yet: the signature decides");
    h.ports.set_secret(&keys_and_token());
    h.ports.advance(Duration::from_secs(300));
    assert_eq!(h.handle(with_token(NOW_SECS + 300)).await.status(), StatusCode::OK);
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS + 300)).await, "missing_token", "the token is now required");
}

/// A secret switched from keys to a token (a move to docs.sunoapi.org, which signs nothing)
/// while it cannot be read again: an unsigned callback to a token path, which the checks in
/// force refuse for its missing signature, may be one the new secret lets through: 503, so
/// the provider retries, not a 401 it may take as final.
#[tokio::test]
async fn an_unsigned_token_path_refused_while_the_secret_cannot_be_read_is_in_doubt() {
    let h = app().await;
    h.ports.set_secret(&token(TOKEN));
    h.ports.set_secret_failing(true);
    h.ports.advance(Duration::from_secs(60));
    let to_token = || request(&format!("/callback/{TOKEN}"), &[], WAV.to_vec());
    in_doubt(&h, to_token()).await;
    let timestamp_only = [("X-Webhook-Timestamp", (NOW_SECS + 60).to_string())];
    in_doubt(&h, request(&format!("/callback/{TOKEN}"), &timestamp_only, WAV.to_vec())).await;
    // Unsigned to /callback stays a 401: no token would let it through.
    assert_eq!(refusal(&h, request("/callback", &[], WAV.to_vec())).await, "missing_timestamp");
    h.ports.set_secret_failing(false);
    h.ports.advance(Duration::from_secs(60));
    assert_eq!(h.handle(to_token()).await.status(), StatusCode::OK, "read again: the token lets it in");

    // Keys and the token in force, switched to the token alone: the same.
    let h = app_with(config(), keys_and_token()).await;
    h.ports.set_secret(&token(TOKEN));
    h.ports.set_secret_failing(true);
    h.ports.advance(Duration::from_secs(60));
    in_doubt(&h, to_token()).await;
}

/// With HMAC keys, a path token taken out of the secret leaves the callbacks of tasks
/// submitted with it (to `/callback/<token>`) landing: without a token the path's segment
/// decides nothing, the signature does.
#[tokio::test]
async fn a_token_dropped_from_the_secret_leaves_its_signed_callbacks_landing() {
    let h = app_with(config(), keys_and_token()).await;
    let to =
        |token: &str, headers: &[(&'static str, String)]| request(&format!("/callback/{token}"), headers, WAV.to_vec());
    h.ports.set_secret(&keys());
    h.ports.advance(Duration::from_secs(300));
    let signed = signed_headers(KEY, WAV_TASK, NOW_SECS + 300);
    assert_eq!(h.handle(to(TOKEN, &signed)).await.status(), StatusCode::OK, "submitted with the token");
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 300)).await.status(), StatusCode::OK, "submitted without");
    let trailing_slash = request("/callback/", &signed, WAV.to_vec());
    assert_eq!(h.handle(trailing_slash).await.status(), StatusCode::OK, "an empty segment: as /callback");
    assert_eq!(refusal(&h, to(TOKEN, &[])).await, "missing_timestamp", "unsigned: refused");
    let forged = signed_headers("wrong-key", WAV_TASK, NOW_SECS + 300);
    assert_eq!(refusal(&h, to(TOKEN, &forged)).await, "signature_mismatch");
}

#[tokio::test]
async fn a_rotated_token_leaves_the_old_path_open_while_it_is_listed() {
    const NEW_TOKEN: &str = "fedcba9876543210-token";
    let h = app_with(config(), token(TOKEN)).await;
    let to = |token: &str| request(&format!("/callback/{token}"), &[], WAV.to_vec());
    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![], callback_tokens: vec![NEW_TOKEN.into(), TOKEN.into()] });
    h.ports.advance(Duration::from_secs(60));
    // The new token's refusal reads the secret again; tasks submitted with the old one still land.
    assert_eq!(h.handle(to(NEW_TOKEN)).await.status(), StatusCode::OK, "tasks submitted with the new token");
    assert_eq!(h.handle(to(TOKEN)).await.status(), StatusCode::OK, "tasks submitted with the old token");
    assert_eq!(refusal(&h, to("0123456789abcdef-tokem")).await, "invalid_token");

    // The old token taken out: refused once the checks are five minutes old.
    h.ports.set_secret(&token(NEW_TOKEN));
    h.ports.advance(Duration::from_secs(300));
    assert_eq!(refusal(&h, to(TOKEN)).await, "invalid_token");
    assert_eq!(h.handle(to(NEW_TOKEN)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_again_or_used_keeps_the_checks_in_force() {
    let captured = capture_logs();
    let h = app().await;
    h.ports.set_secret_failing(true);
    h.ports.advance(Duration::from_secs(60));
    in_doubt(&h, signed_at(NEW_KEY, NOW_SECS + 60)).await;
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 60)).await.status(), StatusCode::OK);

    h.ports.set_secret_failing(false);
    for unusable in [r#"{"webhook_hmac_keys": ["rotated-key", ""]}"#, "{}", "rotated-key"] {
        h.ports.set_secret_text(unusable);
        h.ports.advance(Duration::from_secs(60));
        in_doubt(&h, signed_at(NEW_KEY, NOW_SECS + 60)).await;
        assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 60)).await.status(), StatusCode::OK, "{unusable}");
    }
    // Readable and usable again: a refusal is final again.
    h.ports.set_secret(&keys());
    h.ports.advance(Duration::from_secs(60));
    assert_eq!(refusal(&h, signed_at(NEW_KEY, NOW_SECS + 60)).await, "signature_mismatch");
    assert_eq!(h.ports.secret_reads(), 6);
    let logs = logs_without_keys(&captured);
    assert_eq!(logs.matches("keeping the current one").count(), 4, "{logs}");
    assert_eq!(rereads_failed(&h), 4, "one per read that brought nothing usable, none per request");
}

/// How many failed re-reads of the secret `h` counted.
fn rereads_failed(h: &App<MemoryPorts>) -> usize {
    h.ports.measures().iter().filter(|m| **m == Measure::SecretRereadFailed).count()
}

/// The logs captured, after checking they hold none of the keys.
fn logs_without_keys(captured: &Captured) -> String {
    let logs = captured.text();
    for secret in [KEY, OLD_KEY, NEW_KEY] {
        assert!(!logs.contains(secret), "{secret:?} logged: {logs}");
    }
    logs
}

// --- the callback secret, revoked ----------------------------------------------------------

/// The secret with [`KEY`] and [`OLD_KEY`] revoked: only [`NEW_KEY`] left.
fn revoked() -> CallbackSecret {
    CallbackSecret { hmac_keys: vec![NEW_KEY.into()], callback_tokens: vec![] }
}

#[tokio::test]
async fn a_key_removed_from_the_secret_is_refused_once_the_checks_are_five_minutes_old() {
    let h = app().await;
    h.ports.set_secret(&revoked());

    h.ports.advance(Duration::from_secs(299));
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 299)).await.status(), StatusCode::OK, "read 299 s ago: in force");
    assert_eq!(h.ports.secret_reads(), 1);

    // Nothing was refused, yet the checks are five minutes old: read again before checking.
    h.ports.advance(Duration::from_secs(1));
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS + 300)).await, "signature_mismatch", "revoked");
    assert_eq!(refusal(&h, signed_at(OLD_KEY, NOW_SECS + 300)).await, "signature_mismatch", "revoked");
    assert_eq!(h.handle(signed_at(NEW_KEY, NOW_SECS + 300)).await.status(), StatusCode::OK);
    assert_eq!(h.ports.secret_reads(), 2, "one read for the age; the refusals read nothing more within the minute");

    // The next read is five minutes after that one, unless a refusal comes first.
    h.ports.set_secret(&keys());
    h.ports.advance(Duration::from_secs(299));
    assert_eq!(h.handle(signed_at(NEW_KEY, NOW_SECS + 599)).await.status(), StatusCode::OK);
    assert_eq!(h.ports.secret_reads(), 2);
    h.ports.advance(Duration::from_secs(1));
    assert_eq!(refusal(&h, signed_at(NEW_KEY, NOW_SECS + 600)).await, "signature_mismatch");
    assert_eq!(h.ports.secret_reads(), 3);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_for_its_age_keeps_the_checks_without_a_read_per_request() {
    let captured = capture_logs();
    let h = app().await;
    h.ports.set_secret_failing(true);
    h.ports.advance(Duration::from_secs(300));
    for _ in 0..3 {
        assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 300)).await.status(), StatusCode::OK, "still in force");
    }
    in_doubt(&h, signed_at(NEW_KEY, NOW_SECS + 300)).await;
    // What no key decides stays a 401: a stale timestamp passes only a secret that drops the
    // signature altogether (a change of mode, not a rotation).
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS - 2)).await, "timestamp_too_old");
    assert_eq!(h.ports.secret_reads(), 2, "the failed read counts as one: none per request after it");
    assert_eq!(rereads_failed(&h), 1, "four requests, one failed read");

    h.ports.set_secret_failing(false);
    h.ports.set_secret_text("{}");
    h.ports.advance(Duration::from_secs(300));
    assert_eq!(h.handle(signed_at(KEY, NOW_SECS + 600)).await.status(), StatusCode::OK, "an unusable secret");
    assert_eq!(h.ports.secret_reads(), 3);
    assert_eq!(rereads_failed(&h), 2, "an unusable text counts too");

    h.ports.set_secret(&revoked());
    h.ports.advance(Duration::from_secs(300));
    assert_eq!(refusal(&h, signed_at(KEY, NOW_SECS + 900)).await, "signature_mismatch", "readable again");
    assert_eq!(h.ports.secret_reads(), 4);
    assert_eq!(rereads_failed(&h), 2, "a read that brought a usable secret counts nothing");

    let logs = logs_without_keys(&captured);
    let unusable = captured.lines_with("callback secret re-read for its age is unusable; keeping the current one");
    assert!(unusable.len() == 2 && unusable.iter().all(|l| l.level == Level::WARN), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_one_read_for_the_age() {
    let h = std::sync::Arc::new(app().await);
    h.ports.set_secret(&revoked());
    h.ports.advance(Duration::from_secs(300));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let task = format!("wav-task-{i}");
        let body = String::from_utf8(WAV.to_vec()).unwrap().replace(WAV_TASK, &task);
        let key = if i % 2 == 0 { NEW_KEY } else { KEY };
        let req = request("/callback", &signed_headers(key, &task, NOW_SECS + 300), body.into_bytes());
        let h = h.clone();
        requests.spawn(async move { (key, h.handle(req).await.status()) });
    }
    for (key, status) in requests.join_all().await {
        let expected = if key == NEW_KEY { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
        assert_eq!(status, expected, "signed by {key:?}");
    }
    assert_eq!(h.ports.secret_reads(), 2, "the start-up read and one for the age");
}

// --- API Gateway request fixtures (events/*.json) ---------------------------------------

fn event_file(name: &str) -> String {
    let path = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn events_signed_split_stem() {
    let req = lambda_http::request::from_str(&event_file("signed-split-stem.json")).unwrap();
    assert!(matches!(req.body(), Body::Binary(_)), "API Gateway's base64 body arrives decoded");
    assert_eq!(routed_path(&req), "/callback");
    let secret = CallbackSecret { hmac_keys: vec!["local-dev-hmac-key".into()], callback_tokens: vec![] };
    let h = app_with(config(), secret).await;
    let h = App { max_body_bytes: 1 << 20, ..h };
    let captured = capture_logs();
    let response = h.handle(req).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", json(&response));
    assert_eq!(json(&response)["files_queued"], 12, "twelve stems; the empty origin_url is no file");
    // Its lines are filed under API Gateway's id of the request, as in the access log.
    assert!(captured.text().contains(r#""api_request_id":"Kx1pHjVyoAMEYxw=""#), "{}", captured.text());
}

#[tokio::test]
async fn events_unsigned_separate_vocal() {
    let req = lambda_http::request::from_str(&event_file("unsigned-separate-vocal.json")).unwrap();
    assert_eq!(routed_path(&req), "/callback");
    let signed_only = app_with(Config { max_body_bytes: 1 << 20, ..config() }, keys()).await;
    assert_eq!(refusal(&signed_only, req).await, "missing_timestamp");

    let req = lambda_http::request::from_str(&event_file("unsigned-separate-vocal.json")).unwrap();
    let open = app_with(
        Config { allow_unauthenticated: true, max_body_bytes: 1 << 20, ..config() },
        CallbackSecret::default(),
    )
    .await;
    let response = open.handle(req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&response)["task_id"], "3e63b4cc88d52611159371f6af5571e7");
}

#[tokio::test]
async fn events_token_path_wav() {
    let req = lambda_http::request::from_str(&event_file("token-path-wav.json")).unwrap();
    assert_eq!(routed_path(&req), "/callback/local-dev-callback-token");
    let h = app_with(config(), token("local-dev-callback-token")).await;
    let response = h.handle(req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&response)["stage"], "final");
}

/// A body whose event names another task than the one its signature was checked against
/// (its own reader's) is refused and kept whole under the signed task, as a body the parser
/// refuses: a signature for one task never writes another.
#[test]
fn an_event_of_another_task_than_the_signed_one_is_refused() {
    let event = suno_callbacks::parse_callback(WAV).unwrap();
    let signed = event.task_id.clone();
    assert!(of_the_signed_task(signed.clone(), event.clone()).is_ok());
    let other = suno_callbacks::TaskId::parse("another-task").unwrap();
    let refused = of_the_signed_task(other.clone(), event).unwrap_err();
    assert_eq!((refused.status, refused.reason), (StatusCode::BAD_REQUEST, "task_id_mismatch"));
    assert!(matches!(refused.follow_up, FollowUp::Keep(ref kept) if *kept == other), "{:?}", refused.follow_up);
}

/// The token is the path's segment decoded once, as API Gateway passes path parameters: a
/// token sent percent-encoded is let in by the local runner (its raw path) as in AWS (the
/// route's parameter, decoded, encoded again), and an encoded character no token holds is not.
#[tokio::test]
async fn a_percent_encoded_token_reads_as_it_decodes() {
    let local = |raw_path: &str| {
        event_file("token-path-wav.json")
            .replace("\"POST /callback/{token}\"", "\"$default\"")
            .replace("\"rawPath\": \"/callback/local-dev-callback-token\"", &format!("\"rawPath\": \"{raw_path}\""))
    };
    let in_aws = |decoded: &str| {
        event_file("token-path-wav.json")
            .replace("\"token\": \"local-dev-callback-token\"", &format!("\"token\": \"{decoded}\""))
    };
    let h = app_with(config(), token("local-dev-callback-token")).await;
    for (raw, status) in [
        (local("/callback/local%2Ddev-callback%2dtoken"), StatusCode::OK),
        (in_aws("local-dev-callback-token"), StatusCode::OK),
        (local("/callback/local%2Fdev-callback-token"), StatusCode::UNAUTHORIZED),
        (in_aws("local/dev-callback-token"), StatusCode::UNAUTHORIZED),
        (local("/callback/local-dev-callback-token%FF"), StatusCode::UNAUTHORIZED),
    ] {
        let req = lambda_http::request::from_str(&raw).unwrap();
        assert_eq!(
            h.handle(req).await.status(),
            status,
            "{}",
            raw.lines().find(|l| l.contains("rawPath")).unwrap_or("")
        );
    }
}

/// What stands in front of the route in the raw path is not part of it: a named API Gateway
/// stage (`/prod`), or a custom domain's API mapping key (`https://api.example.com/hooks`),
/// should the raw path hold it (the API's route and path parameter say what it routed).
#[tokio::test]
async fn a_stage_or_a_custom_domain_mapping_key_is_not_part_of_the_route() {
    // No route named (a catch-all route): the stage is taken off the raw path.
    let named_stage = event_file("token-path-wav.json")
        .replace("\"$default\"", "\"prod\"")
        .replace("\"POST /callback/{token}\"", "\"$default\"")
        .replace("\"rawPath\": \"/callback/", "\"rawPath\": \"/prod/callback/");
    let mapping_key = event_file("token-path-wav.json")
        .replace("\"rawPath\": \"/callback/", "\"rawPath\": \"/hooks/callback/")
        .replace("\"path\": \"/callback/", "\"path\": \"/hooks/callback/");
    for (raw, prefix) in [(named_stage, "/prod"), (mapping_key, "/hooks")] {
        let req = lambda_http::request::from_str(&raw).unwrap();
        assert_eq!(req.uri().path(), format!("{prefix}/callback/local-dev-callback-token"));
        assert_eq!(routed_path(&req), "/callback/local-dev-callback-token");
        let h = app_with(config(), token("local-dev-callback-token")).await;
        assert_eq!(h.handle(req).await.status(), StatusCode::OK, "{prefix}");
    }
    let raw =
        event_file("signed-split-stem.json").replace("\"rawPath\": \"/callback\"", "\"rawPath\": \"/hooks/callback\"");
    let req = lambda_http::request::from_str(&raw).unwrap();
    assert_eq!((req.uri().path(), routed_path(&req).as_ref()), ("/hooks/callback", "/callback"));
}

// --- logs -------------------------------------------------------------------------------

#[tokio::test]
async fn logs_are_json_with_the_task_id_and_without_secrets_or_url_queries() {
    let captured = capture_logs();

    let h = app_with(config(), keys_and_token()).await;
    let path = format!("/callback/{TOKEN}");
    let signature = signed_headers(KEY, WAV_TASK, NOW_SECS);
    assert_eq!(h.handle(request(&path, &signature, WAV.to_vec())).await.status(), StatusCode::OK);
    assert_eq!(
        h.handle(request(&path, &signed_headers("wrong", WAV_TASK, NOW_SECS), WAV.to_vec())).await.status(),
        401
    );
    // Signed with the old key: a duplicate, let in by the second key.
    let by_old_key = signed_headers(OLD_KEY, WAV_TASK, NOW_SECS);
    assert_eq!(h.handle(request(&path, &by_old_key, WAV.to_vec())).await.status(), StatusCode::OK);
    // Refused for its path (no token) or headers (no signature), before its body was read.
    assert_eq!(h.handle(request("/callback", &signature, WAV.to_vec())).await.status(), 401);
    assert_eq!(h.handle(request(&path, &[], WAV.to_vec())).await.status(), 401);

    let logs = captured.text();
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let accepted = lines.iter().find(|l| l["fields"]["message"] == "callback accepted").expect("an accepted line");
    assert_eq!(accepted["span"]["task_id"], WAV_TASK);
    assert_eq!(accepted["fields"]["files_queued"], 1);
    // Which key and token let it in, by place: the first of each.
    assert_eq!(accepted["span"]["vouched_by"], "key 1, token 1");
    let by_old = lines.iter().find(|l| l["span"]["vouched_by"] == "key 2, token 1").expect("the old key's callback");
    assert_eq!(by_old["span"]["task_id"], WAV_TASK);
    let refused = lines.iter().find(|l| l["fields"]["reason"] == "signature_mismatch").expect("a refusal line");
    assert_eq!(refused["span"]["claimed_task_id"], WAV_TASK, "the id the body claims");
    assert_eq!(refused["span"]["task_id"], Value::Null, "no key vouched for it");
    for reason in ["missing_token", "missing_timestamp"] {
        let refused = lines.iter().find(|l| l["fields"]["reason"] == reason).expect(reason);
        assert_eq!(refused["span"]["claimed_task_id"], WAV_TASK, "{reason}: the id the body claims");
        assert_eq!(refused["span"]["task_id"], Value::Null, "{reason}");
        assert_eq!(refused["span"]["vouched_by"], Value::Null, "{reason}");
    }
    for secret in [KEY, OLD_KEY, TOKEN, "X-Sig", "secret", signature[1].1.as_str(), "https://"] {
        assert!(!logs.contains(secret), "{secret:?} logged: {logs}");
    }
}

// --- metrics ----------------------------------------------------------------------------

#[tokio::test]
async fn every_answer_is_counted_once_with_its_reason() {
    let h = app().await;
    h.ports.set_secret(&CallbackSecret { hmac_keys: vec![NEW_KEY.into()], callback_tokens: vec![] });
    h.ports.advance(Duration::from_secs(60));
    let now = NOW_SECS + 60;
    assert_eq!(h.handle(signed_at(KEY, now)).await.status(), StatusCode::OK, "still the start-up keys");
    assert_eq!(h.handle(signed_at(NEW_KEY, now)).await.status(), StatusCode::OK, "refused, refreshed, accepted");
    assert_eq!(refusal(&h, signed_at(KEY, now)).await, "signature_mismatch");
    let big = request("/callback", &signed_headers(NEW_KEY, WAV_TASK, now), vec![b' '; 4097]);
    assert_eq!(h.handle(big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let not_json = request("/callback", &signed_headers(NEW_KEY, WAV_TASK, now), b"{".to_vec());
    assert_eq!(h.handle(not_json).await.status(), StatusCode::BAD_REQUEST);
    h.ports.set_enqueue_failing(true);
    h.ports.set_park_failing(true);
    let other = br#"{"code":200,"msg":"ok","data":{"audioWavUrl":"https://h/s/b.wav","task_id":"other-task"}}"#;
    let failed = request("/callback", &signed_headers(NEW_KEY, "other-task", now), other.to_vec());
    assert_eq!(h.handle(failed).await.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(
        h.ports.measures(),
        [
            Measure::Accepted,
            Measure::Accepted,
            Measure::Refused { reason: "signature_mismatch" },
            Measure::Refused { reason: "body_too_large" },
            Measure::Refused { reason: "invalid_json" },
            Measure::Failed { reason: "enqueue_failed" },
        ]
    );
}

/// A callback refused for missing or malformed signature headers whose body names a task (the
/// provider not signing as the keys expect: every one of its callbacks lost so) is counted
/// apart, for the unauthorized alarm; a body naming none (a scanner's) is not, nor a refusal
/// for another reason.
#[tokio::test]
async fn an_unsigned_body_naming_a_task_is_counted_as_unverifiable() {
    let h = app().await;
    assert_eq!(refusal(&h, request("/callback", &[], WAV.to_vec())).await, "missing_timestamp");
    let only_timestamp = [("X-Webhook-Timestamp", NOW_SECS.to_string())];
    assert_eq!(refusal(&h, request("/callback", &only_timestamp, WAV.to_vec())).await, "missing_signature");
    let hex = [("X-Webhook-Timestamp", NOW_SECS.to_string()), ("X-Webhook-Signature", "ab".repeat(32))];
    assert_eq!(refusal(&h, request("/callback", &hex, WAV.to_vec())).await, "malformed_signature");
    assert_eq!(refusal(&h, request("/callback", &[], b"<html>".to_vec())).await, "missing_timestamp");
    assert_eq!(
        refusal(&h, request("/callback", &signed_headers("wrong", WAV_TASK, NOW_SECS), WAV.to_vec())).await,
        "signature_mismatch"
    );

    let unverifiable = h.ports.measures().iter().filter(|m| **m == Measure::Unverifiable).count();
    assert_eq!(unverifiable, 3, "{:?}", h.ports.measures());
}

/// A callback refused for its path token (none where one is required, or another) whose body
/// names a task (a `callBackUrl` submitted with the wrong token: every callback lost so) is
/// counted apart, for the unauthorized alarm; a request naming none (a scanner's, or a hand
/// trying the endpoint) is not.
#[tokio::test]
async fn a_token_refusal_naming_a_task_is_counted_as_unverifiable() {
    let h = app_with(config(), token(TOKEN)).await;
    for body in [WAV.to_vec(), b"<html>".to_vec(), Vec::new()] {
        assert_eq!(refusal(&h, request("/callback", &[], body.clone())).await, "missing_token");
        assert_eq!(refusal(&h, request("/callback/another-token-0123456789", &[], body)).await, "invalid_token");
    }
    let unverifiable = h.ports.measures().iter().filter(|m| **m == Measure::Unverifiable).count();
    assert_eq!(unverifiable, 2, "only the WAV body's two: {:?}", h.ports.measures());
}
