//! The ingest function against the emulator, through its real AWS adapters: every documented
//! callback is recorded, archived and queued; concurrent and out-of-order deliveries; refusals
//! that write nothing (a callback too large to record included; a stale one a key signed
//! registers its task for polling instead, tests/tests/reconciler.rs); a queue that really fails
//! after the record was written; and the callback secret read from Secrets Manager at start-up
//! and again: after a refusal, once rotated, and when the checks are too old, once revoked.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stemvault_aws::secrets::SecretText;
use stemvault_ingest::credentials::RefreshPolicy;
use stemvault_ingest::domain::FUNCTION_TIMEOUT;
use stemvault_ingest::secret::CallbackSecret;
use stemvault_ingest::{App, Config};
use stemvault_tests::file_server::FileServer;
use stemvault_tests::{TestEnv, fixture, fixtures_dir};
use stemvault_vault::StoreError;
use stemvault_vault::download::MANIFEST_JOB_NAME;
use stemvault_vault::{FileJob, FileStatus, LeaseEnd, TaskRecord};
use suno_callbacks::parse::MAX_STEMS;
use suno_callbacks::signature::sign;
use suno_callbacks::{CallbackEvent, Family, Stage, parse_callback, s3_key};

const KEY: &str = "integration-test-key";

/// Put `secret` in the emulator as this test's callback secret (created, or rotated when it
/// exists); its ARN.
async fn put_secret(env: &TestEnv, secret: &CallbackSecret) -> String {
    put_secret_text(env, "callback", &SecretText::new(secret.to_json())).await
}

/// Put `text` in the emulator as this test's secret named by `suffix` (created, or rotated
/// when it exists); its ARN.
async fn put_secret_text(env: &TestEnv, suffix: &str, text: &SecretText) -> String {
    let name = format!("{}-{suffix}", env.resources.table_name);
    stemvault_aws::secrets::put_secret(&env.config, &name, text).await.expect("put the secret")
}

fn signing_key(key: &str) -> CallbackSecret {
    CallbackSecret { hmac_keys: vec![key.into()], callback_tokens: vec![] }
}

/// The test's resources, and a callback secret holding [`KEY`].
async fn config(env: &TestEnv) -> Config {
    Config { max_body_bytes: stemvault_ingest::config::DEFAULT_MAX_BODY_BYTES, ..env.ingest_config(KEY).await }
}

/// The function as it starts in Lambda: clients built, the callback secret read.
async fn start(env: &TestEnv, config: Config) -> App {
    App::new(config, &env.config).await
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn request(headers: &[(&str, String)], body: &[u8]) -> Request {
    let mut builder = lambda_http::http::Request::builder().method("POST").uri("/callback");
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

fn signed_by(key: &str, task_id: &str, ts: i64) -> Vec<(&'static str, String)> {
    vec![("X-Webhook-Timestamp", ts.to_string()), ("X-Webhook-Signature", sign(key.as_bytes(), task_id, ts))]
}

/// A delivery signed now with the right key for the body's own task id.
fn signed(body: &[u8]) -> Request {
    let event = parse_callback(body).expect("test bodies parse");
    request(&signed_by(KEY, event.task_id.as_str(), now_secs()), body)
}

fn json(response: &Response<Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

fn body_key(event: &CallbackEvent, body: &[u8]) -> String {
    s3_key::callback_body_key(&event.task_id, event.stage, &hex::encode(Sha256::digest(body)))
}

/// Drain the queue and decode every message.
async fn jobs(env: &TestEnv) -> Vec<FileJob> {
    env.drain_queue(200)
        .await
        .iter()
        .map(|m| serde_json::from_str(m.body().expect("message body")).expect("a FileJob"))
        .collect()
}

/// Each queued message matches its file in the record, and each file is queued under it; each
/// file of the record has the URL `events` gave it and the key derived from that URL.
fn assert_jobs_match_record(jobs: &[FileJob], record: &TaskRecord, events: &[&CallbackEvent]) {
    let brought: BTreeSet<&str> = events.iter().flat_map(|e| e.files.iter().map(|f| f.name.as_str())).collect();
    assert_eq!(record.files.keys().map(String::as_str).collect::<BTreeSet<_>>(), brought);
    for event in events {
        for file in &event.files {
            let recorded = &record.files[&file.name];
            assert_eq!(recorded.url, file.url, "{}", file.name);
            assert_eq!(recorded.key, s3_key::file_key(&event.task_id, &file.name, &file.url), "{}", file.name);
        }
    }
    for job in jobs {
        let file = &record.files[&job.name];
        assert_eq!(
            (job.task_id.as_str(), job.url.as_str(), job.key.as_str()),
            (record.task_id.as_str(), file.url.as_str(), file.key.as_str())
        );
        assert_eq!(file.status, FileStatus::Queued, "{}", job.name);
        assert_eq!(file.claim.as_deref().map(|c| !c.is_empty()), Some(true), "sent under a claim: {}", job.name);
    }
}

#[tokio::test]
async fn every_documented_fixture_is_recorded_archived_and_queued() {
    let mut names: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 17, "{names:?}");
    for name in names {
        // Several fixtures share a task id: each gets its own resources.
        let env = TestEnv::new().await;
        let app = start(&env, config(&env).await).await;
        let body = fixture(&name);
        let event = parse_callback(&body).unwrap();
        let response = app.handle(signed(&body)).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}: {}", json(&response));
        let answer = json(&response);
        assert_eq!(answer["status"], "accepted", "{name}");
        assert_eq!(answer["task_id"], event.task_id.as_str(), "{name}");
        assert_eq!(answer["files_queued"], event.files.len(), "{name}");

        let record = env.record(event.task_id.as_str()).await.expect(&name);
        assert_eq!(record.family, event.family, "{name}");
        assert_eq!(record.stage, event.stage, "{name}");
        assert_eq!((record.code, record.message.as_str(), record.deliveries), (event.code, event.message.as_str(), 1));
        let file_names: BTreeSet<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(record.files.keys().map(String::as_str).collect::<BTreeSet<_>>(), file_names, "{name}");
        assert_eq!(env.object(&body_key(&event, &body)).await.as_deref(), Some(&body[..]), "{name}: archived verbatim");

        // A task without files gets a manifest job instead (download::manifest_job).
        let (manifest_jobs, jobs): (Vec<FileJob>, Vec<FileJob>) =
            jobs(&env).await.into_iter().partition(|j| j.name == MANIFEST_JOB_NAME);
        assert_eq!(manifest_jobs.len(), usize::from(event.files.is_empty()), "{name}: {manifest_jobs:?}");
        assert_eq!(jobs.len(), event.files.len(), "{name}: one message per file");
        assert_eq!(jobs.iter().map(|j| j.name.as_str()).collect::<BTreeSet<_>>(), file_names, "{name}");
        assert_jobs_match_record(&jobs, &record, &[&event]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_have_exactly_one_effect() {
    let env = TestEnv::new().await;
    let app = Arc::new(start(&env, config(&env).await).await);
    let body = fixture("separate-vocals__kie__200-split_stem.json");
    let event = parse_callback(&body).unwrap();
    let mut deliveries = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (app, body) = (app.clone(), body.clone());
        // A 503 `timeout` is the provider's cue to deliver again, as it does: on a loaded
        // machine a delivery queued behind the others' parks can run out of its answer time.
        // Any other 503 (a contended record, claims held) fails the test.
        deliveries.spawn(async move {
            let mut out_of_time = 0;
            loop {
                let answer = app.handle(signed(&body)).await;
                let timed_out =
                    answer.status() == StatusCode::SERVICE_UNAVAILABLE && json(&answer)["error"] == "timeout";
                if !timed_out || out_of_time == 3 {
                    break (answer, out_of_time);
                }
                out_of_time += 1;
            }
        });
    }
    let mut redelivered = 0;
    let answers: Vec<Value> = deliveries
        .join_all()
        .await
        .iter()
        .map(|(r, out_of_time)| {
            assert_eq!(r.status(), StatusCode::OK, "{}", json(r));
            redelivered += out_of_time;
            json(r)
        })
        .collect();
    let count = |status: &str| answers.iter().filter(|a| a["status"] == status).count();
    let (accepted, duplicates, parked) = (count("accepted"), count("duplicate"), count("parked"));
    assert_eq!(accepted + duplicates + parked, 20, "{answers:?}");
    // On a loaded machine a delivery may run out of its answer time waiting for the others:
    // it is parked (answered 200, as the provider needs), and the reconciler's replay
    // records it. Whatever the split, the effect is one.
    assert!(accepted <= 1 && parked < 20, "{answers:?}");
    let queued: u64 = answers.iter().filter_map(|a| a["files_queued"].as_u64()).sum();
    if parked > 0 {
        let reconciler = env.reconciler_without_provider_key().await;
        let outcome = reconciler.run_within("replay", Duration::from_secs(60)).await.expect("a run");
        // The same bytes park under one key: one replay.
        let replayed = (outcome.replayed.callbacks_replayed, outcome.replayed.callbacks_still_parked);
        assert_eq!(replayed, (1, 0), "{outcome:?}");
    } else if redelivered == 0 {
        assert_eq!((accepted, queued), (1, 12), "{answers:?}");
    }
    // (A delivery that recorded the task and then ran out of time leaves every answer a
    // duplicate: the checks below still see one effect.)

    let record = env.record(event.task_id.as_str()).await.unwrap();
    // Parked deliveries count once more by their one replay, less those parked before
    // their count was written; a delivery answered 503 may have been counted before it failed.
    let replay = u64::from(parked > 0);
    let counted = (20 - parked as u64 + replay)..=(20 + redelivered + replay);
    assert!(counted.contains(&record.deliveries), "{}", record.deliveries);
    assert_eq!(record.callbacks.len(), 1);
    assert_eq!(record.callbacks.values().next().unwrap().deliveries, record.deliveries);
    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), 12, "exactly one message per file");
    assert_eq!(jobs.iter().map(|j| j.name.as_str()).collect::<BTreeSet<_>>().len(), 12);
    assert_jobs_match_record(&jobs, &record, &[&event]);
    assert_eq!(env.keys(&format!("tasks/{}/callbacks/", event.task_id)).await, vec![body_key(&event, &body)]);
}

/// A duplicate delivery leaves its body's one version: the bucket is versioned, and a second
/// PutObject of the same key kept a noncurrent copy for 30 days per delivery.
#[tokio::test]
async fn a_duplicate_delivery_leaves_one_version_of_its_body() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let body = fixture("separate-vocals__kie__200-split_stem.json");
    let event = parse_callback(&body).unwrap();
    for expected in ["accepted", "duplicate", "duplicate"] {
        let answer = app.handle(signed(&body)).await;
        assert_eq!(json(&answer)["status"], expected, "{}", json(&answer));
    }
    let prefix = format!("tasks/{}/callbacks/", event.task_id);
    let listed = env.s3.list_object_versions().bucket(&env.resources.bucket_name).prefix(&prefix).send().await;
    let versions: Vec<_> = listed.expect("list versions").versions().iter().filter_map(|v| v.key.clone()).collect();
    assert_eq!(versions, vec![body_key(&event, &body)]);
}

fn music(stage: &str, msg: &str, tracks: &[(&str, &str)]) -> Vec<u8> {
    let tracks: Vec<Value> = tracks
        .iter()
        .map(|(id, audio)| {
            serde_json::json!({
                "id": id, "audio_url": audio, "image_url": format!("https://cdn.example/{id}.jpeg"),
                "stream_audio_url": format!("https://cdn.example/stream/{id}"), "title": "Iron Man", "duration": 198.44
            })
        })
        .collect();
    let body = serde_json::json!({
        "code": 200, "msg": msg, "data": {"callbackType": stage, "task_id": "a1b2c3d4e5f6", "data": tracks}
    });
    body.to_string().into_bytes()
}

#[tokio::test]
async fn stages_arriving_out_of_order_never_move_the_task_back() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let complete = music(
        "complete",
        "All generated successfully.",
        &[("t1", "https://cdn.example/t1.mp3"), ("t2", "https://cdn.example/t2.mp3")],
    );
    // A late `first` that knows a track `complete` did not list.
    let first = music("first", "First track generated successfully.", &[("t0", "https://cdn.example/t0.mp3")]);
    let text = music("text", "Text generation completed.", &[]);

    for body in [&complete, &first, &text] {
        let response = app.handle(signed(body)).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
        assert_eq!(json(&response)["task_stage"], "complete");
    }
    let record = env.record("a1b2c3d4e5f6").await.unwrap();
    assert_eq!((record.stage, record.message.as_str()), (Stage::Complete, "All generated successfully."));
    assert_eq!(record.callbacks.len(), 3);
    assert_eq!(record.deliveries, 3);
    let expected: BTreeSet<&str> = [
        "tracks/t0/audio",
        "tracks/t0/cover",
        "tracks/t1/audio",
        "tracks/t1/cover",
        "tracks/t2/audio",
        "tracks/t2/cover",
    ]
    .into();
    assert_eq!(record.files.keys().map(String::as_str).collect::<BTreeSet<_>>(), expected);
    assert_eq!(record.files["tracks/t0/audio"].stage, Stage::First);
    assert_eq!(record.streams.len(), 3);

    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), 6, "each file queued once, whichever callback brought it");
    let events = [parse_callback(&complete).unwrap(), parse_callback(&first).unwrap()];
    assert_jobs_match_record(&jobs, &record, &[&events[0], &events[1]]);
    assert_eq!(env.keys("tasks/a1b2c3d4e5f6/callbacks/").await.len(), 3);
}

#[tokio::test]
async fn a_failure_after_success_is_recorded_and_keeps_the_files() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let success = fixture("convert-to-wav__kie__200.json");
    let failure = br#"{"code":500,"msg":"Internal Error - Please try again later","data":{"audioWavUrl":null,"task_id":"988e****c8d3"}}"#;

    assert_eq!(json(&app.handle(signed(&success)).await)["status"], "accepted");
    let answer = json(&app.handle(signed(failure)).await);
    assert_eq!((answer["status"].as_str(), answer["stage"].as_str()), (Some("accepted"), Some("error")));
    assert_eq!((answer["task_stage"].as_str(), answer["files_queued"].as_u64()), (Some("final"), Some(0)));

    let record = env.record("988e****c8d3").await.unwrap();
    assert_eq!((record.stage, record.code, record.succeeded), (Stage::Final, 200, true));
    let failure_entry = record.failure.as_ref().expect("failure recorded");
    assert_eq!((failure_entry.code, failure_entry.message.as_str()), (500, "Internal Error - Please try again later"));
    assert_eq!(record.files["wav"].status, FileStatus::Queued);
    assert_eq!(record.callbacks.len(), 2);
    let failure_event = parse_callback(failure).unwrap();
    assert_eq!(env.object(&body_key(&failure_event, failure)).await.as_deref(), Some(&failure[..]));
    assert_eq!(jobs(&env).await.len(), 1);
}

/// The refusal's status and reason, after checking the answer leaks no secret.
async fn refused(app: &App, req: Request) -> (StatusCode, String) {
    let response = app.handle(req).await;
    let answer = json(&response);
    assert!(!answer.to_string().contains(KEY), "{answer}");
    let reason = answer.get("reason").or(answer.get("error")).and_then(Value::as_str).unwrap_or_default();
    (response.status(), reason.to_owned())
}

#[tokio::test]
async fn refusals_and_bad_input_write_nothing() {
    let env = TestEnv::new().await;
    let app = start(&env, Config { max_body_bytes: 2048, ..config(&env).await }).await;
    let body = fixture("separate-vocals__seed-000__200-separate_vocal.json");
    let task = "3e63b4cc88d52611159371f6af5571e7";
    let now = now_secs();
    let unauthorized = StatusCode::UNAUTHORIZED;

    let cases: Vec<(Request, StatusCode, &str)> = vec![
        (request(&signed_by("wrong-key", task, now), &body), unauthorized, "signature_mismatch"),
        // Signed by a key, their task would be registered for polling (tests/tests/reconciler.rs).
        (request(&signed_by("wrong-key", task, now - 301), &body), unauthorized, "timestamp_too_old"),
        // A minute past the window: the cases before it take time on a loaded machine, and
        // one second past it was inside the window once they had taken a second.
        (request(&signed_by("wrong-key", task, now + 360), &body), unauthorized, "timestamp_in_future"),
        (request(&[], &body), unauthorized, "missing_timestamp"),
        (request(&signed_by(KEY, task, now)[..1], &body), unauthorized, "missing_signature"),
        (request(&signed_by(KEY, "5e72d367bdfbe44785e28d72cb1697c7", now), &body), unauthorized, "signature_mismatch"),
        (
            request(&signed_by(KEY, task, now), b"{\"code\":200,\"data\":{\"task_id\""),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            request(&signed_by(KEY, task, now), b"{\"code\":200,\"data\":{}}"),
            StatusCode::BAD_REQUEST,
            "missing_task_id",
        ),
        (
            request(&signed_by(KEY, task, now), b"{\"code\":200,\"data\":{\"task_id\":\"a/../b\"}}"),
            StatusCode::BAD_REQUEST,
            "invalid_task_id",
        ),
        (request(&signed_by(KEY, task, now), &[b' '; 2049]), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    ];
    for (req, status, reason) in cases {
        assert_eq!(refused(&app, req).await, (status, reason.to_owned()));
    }
    assert!(env.record(task).await.is_none());
    assert!(env.keys("").await.is_empty());
    assert!(env.drain_queue(10).await.is_empty());
}

/// A verified callback no delivery could record (too large for the table) is parked, not
/// refused: its body is kept. The reconciler's replay moves it to its archive key, counted
/// as refused, and nothing is recorded or queued.
#[tokio::test]
async fn a_callback_too_large_to_record_is_kept_in_the_archive_unrecorded() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    // One URL that alone would make its file item larger than DynamoDB's 400 KB.
    let url = format!("https://cdn.example/0.mp3?sig={}", "s".repeat(360_000));
    let tracks = vec![serde_json::json!({"id": "t0", "audio_url": url})];
    let body = serde_json::json!({"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "big0task", "data": tracks}});
    let body = body.to_string().into_bytes();
    assert!(body.len() < stemvault_ingest::config::DEFAULT_MAX_BODY_BYTES, "within MAX_BODY_BYTES: {}", body.len());
    let response = app.handle(signed(&body)).await;
    assert_eq!((response.status(), json(&response)["status"].as_str()), (StatusCode::OK, Some("parked")));
    assert!(env.record("big0task").await.is_none());
    let [parked] = &env.keys("").await[..] else { panic!("one parked body") };
    assert!(parked.starts_with("parked/big0task/"), "{parked}");

    let reconciler = env.reconciler_without_provider_key().await;
    let outcome = reconciler.run_within("replay", Duration::from_secs(30)).await.expect("a run");
    assert_eq!((outcome.replayed.callbacks_refused, outcome.replayed.callbacks_replayed), (1, 0), "{outcome:?}");
    let [archived] = &env.keys("").await[..] else { panic!("one archived body") };
    assert!(archived.starts_with("tasks/big0task/callbacks/"), "{archived}");
    assert_eq!(env.object(archived).await.as_deref(), Some(&body[..]));
    assert!(env.record("big0task").await.is_none());
    assert!(env.drain_queue(10).await.is_empty());
}

/// A body bringing more files than a task's usual dozen (a separation claiming more stems than
/// documented): the first `MAX_STEMS` recorded and queued, their puts and sends a bounded
/// number at a time.
#[tokio::test]
async fn a_body_of_many_stems_records_and_queues_the_first_max_stems() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let task = "9a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let stems: serde_json::Map<String, Value> = (0..MAX_STEMS + 6)
        .map(|i| (format!("s{i}_url"), Value::from(format!("https://cdn1.suno.ai/{task}/s{i}.mp3"))))
        .collect();
    let body = serde_json::json!({"code": 200, "msg": "ok", "data": {"task_id": task, "vocal_separation_info": stems}});
    let body = body.to_string().into_bytes();
    let response = app.handle(signed(&body)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    let record = env.record(task).await.expect("recorded");
    assert_eq!(record.files.len(), MAX_STEMS);
    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), MAX_STEMS);
    assert_jobs_match_record(&jobs, &record, &[&parse_callback(&body).unwrap()]);
}

#[tokio::test]
async fn an_unknown_family_is_still_recorded() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let body = br#"{"code":200,"msg":"success","data":{"taskId":"f00dfeed42","result":{"coverUrl":"https://cdn.example/c.png"}}}"#;
    let response = app.handle(signed(body)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    let record = env.record("f00dfeed42").await.unwrap();
    assert_eq!((record.family, record.stage), (Family::Unknown, Stage::Final));
    let files: Vec<(&str, &str, &str)> =
        record.files.iter().map(|(name, f)| (name.as_str(), f.url.as_str(), f.key.as_str())).collect();
    assert_eq!(files, vec![("result/cover", "https://cdn.example/c.png", "tasks/f00dfeed42/result/cover.png")]);
    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].key, "tasks/f00dfeed42/result/cover.png");
    assert_jobs_match_record(&jobs, &record, &[&parse_callback(body).unwrap()]);
}

/// A queue failing after the record was written parks the callback too (answered 200): its
/// files' messages, and its event, no longer wait on the provider's few retries; the
/// reconciler's replay, a duplicate, queues every file.
#[tokio::test]
async fn a_queue_failing_after_the_record_was_written_is_parked_and_the_replay_queues_everything() {
    let env = TestEnv::new().await;
    let missing_queue = format!("{}-missing", env.resources.queue_url);
    let broken = start(&env, Config { queue_url: missing_queue, ..config(&env).await }).await;
    let body = fixture("separate-vocals__seed-000__200-split_stem.json");
    let event = parse_callback(&body).unwrap();

    let response = broken.handle(signed(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(&response)["status"], "parked");
    let record = env.record(event.task_id.as_str()).await.expect("the record was written first");
    assert_eq!(record.files.len(), 12);
    assert!(record.files.values().all(|f| f.status == FileStatus::Pending && f.claim.is_none()), "claims released");
    assert_eq!(env.object(&body_key(&event, &body)).await.as_deref(), Some(&body[..]));
    let parked = s3_key::parked_body_key(&event.task_id, event.stage, &hex::encode(Sha256::digest(&body)));
    assert_eq!(env.object(&parked).await.as_deref(), Some(&body[..]));
    assert!(env.drain_queue(20).await.is_empty());

    let reconciler = env.reconciler_without_provider_key().await;
    let outcome = reconciler.run_within("replay", Duration::from_secs(30)).await.expect("a run");
    assert_eq!(outcome.replayed.callbacks_replayed, 1, "{outcome:?}");
    assert_eq!(env.object(&parked).await, None, "deleted once finished");
    let record = env.record(event.task_id.as_str()).await.unwrap();
    assert_eq!(record.deliveries, 2, "the replay is a duplicate");
    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), 12);
    assert_jobs_match_record(&jobs, &record, &[&event]);
}

/// A verified callback the table cannot take (here: no such table) is parked under `parked/`
/// and answered 200; the reconciler's next run, without a provider key (replaying needs
/// none), records, archives and queues it, and deletes the parked copy.
#[tokio::test]
async fn a_callback_the_table_cannot_take_is_parked_and_replayed_by_the_reconciler() {
    let env = TestEnv::new().await;
    let started = stemvault_vault::Timestamp::now();
    let missing_table = format!("{}-missing", env.resources.table_name);
    let broken = start(&env, Config { table_name: missing_table, ..config(&env).await }).await;
    let body = fixture("separate-vocals__seed-000__200-split_stem.json");
    let event = parse_callback(&body).unwrap();

    let response = broken.handle(signed(&body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json(&response);
    assert_eq!((answer["status"].as_str(), answer["task_id"].as_str()), (Some("parked"), Some(event.task_id.as_str())));
    assert!(env.record(event.task_id.as_str()).await.is_none());
    let parked = s3_key::parked_body_key(&event.task_id, event.stage, &hex::encode(Sha256::digest(&body)));
    assert_eq!(env.object(&parked).await.as_deref(), Some(&body[..]));

    // The provider delivers it again while the table still fails: parked, and the first copy
    // kept (its LastModified dates the callback): the (versioned) bucket has no newer version.
    let first = env.head(&parked).await.version_id;
    assert!(first.is_some(), "the bucket keeps versions");
    let again = broken.handle(signed(&body)).await;
    assert_eq!((again.status(), json(&again)["status"].as_str()), (StatusCode::OK, Some("parked")));
    assert_eq!(env.head(&parked).await.version_id, first, "the first park's copy is kept");

    let reconciler = env.reconciler_without_provider_key().await;
    assert!(!reconciler.is_on());
    let replayed_from = stemvault_vault::Timestamp::now();
    let outcome = reconciler.run_within("replay", Duration::from_secs(30)).await.expect("a run");
    assert_eq!((outcome.replayed.callbacks_replayed, outcome.replayed.callbacks_still_parked), (1, 0), "{outcome:?}");
    let record = env.record(event.task_id.as_str()).await.expect("recorded by the replay");
    assert_eq!((record.files.len(), record.deliveries), (12, 1));
    // Dated when parked (the object's LastModified, to the second), not when replayed.
    let parked_within = started.unix_seconds()..replayed_from.unix_seconds() + 1;
    assert!(parked_within.contains(&record.first_received_at.unix_seconds()), "{:?}", record.first_received_at);
    assert!(record.first_received_at < replayed_from, "{:?}", record.first_received_at);
    let received: Vec<_> = record.callbacks.values().map(|c| c.received_at).collect();
    assert_eq!(received, vec![record.first_received_at]);
    assert_eq!(env.object(&parked).await, None, "deleted once recorded");
    assert_eq!(env.object(&body_key(&event, &body)).await.as_deref(), Some(&body[..]), "archived");
    let jobs = jobs(&env).await;
    assert_eq!(jobs.len(), 12);
    assert_jobs_match_record(&jobs, &record, &[&event]);
    assert!(reconciler.run_within("again", Duration::from_secs(30)).await.expect("a run").is_idle());
}

#[test]
fn the_template_gives_the_lambda_the_timeout_the_claims_are_sized_for() {
    let path = stemvault_tests::repo_dir().join("template.yaml");
    let template: yaml_serde::Value = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let timeout = &template["Resources"]["IngestFunction"]["Properties"]["Timeout"];
    assert_eq!(timeout.as_u64(), Some(FUNCTION_TIMEOUT.as_secs()), "IngestFunction Timeout: {timeout:?}");
}

/// A MIDI callback of about `target` bytes: one instrument with as many notes as fit.
fn midi_body(task_id: &str, target: usize) -> Vec<u8> {
    let note = r#"{"pitch":61,"start":0.046875,"end":"0.19270833333333334","velocity":1}"#;
    let head = format!(
        r#"{{"task_id":"{task_id}","code":200,"msg":"success","data":{{"state":"complete","instruments":[{{"name":"Drums","notes":["#
    );
    let tail = "]}]}}";
    let count = (target - head.len() - tail.len()) / (note.len() + 1);
    format!("{head}{}{tail}", vec![note; count].join(",")).into_bytes()
}

#[tokio::test]
async fn a_midi_body_near_the_size_limit_is_recorded_with_a_pointer_to_its_details() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    // A whole song's notes: over 1 MiB, within the default limit.
    let limit = stemvault_ingest::config::DEFAULT_MAX_BODY_BYTES;
    let body = midi_body("midi0big0task", limit - 64);
    assert!(body.len() > 4_000_000 && body.len() <= limit, "{}", body.len());
    let event = parse_callback(&body).unwrap();
    assert_eq!(event.family.as_str(), "midi");

    let response = app.handle(signed(&body)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    env.replay_if_parked(&json(&response)).await;
    let record = env.record("midi0big0task").await.expect("recorded");
    let details = record.details.expect("details");
    assert_eq!(details["kind"], "in_body");
    assert_eq!(details["details_kind"], "midi");
    assert_eq!(details["body_key"], body_key(&event, &body));
    assert!(details["bytes"].as_u64().unwrap() > 64 * 1024, "{details}");
    assert_eq!(env.object(&body_key(&event, &body)).await.as_deref(), Some(&body[..]), "the notes are in the archive");

    // Kept whole as JSON beside it, and linked by the results function's GET.
    let notes = serde_json::to_vec(&event.details).unwrap();
    let details_key = s3_key::details_key(&event.task_id, event.stage, &hex::encode(Sha256::digest(&notes)));
    assert_eq!(details["details_key"], details_key);
    assert!(env.object(&details_key).await == Some(notes.clone()), "the details object holds the notes");
    let results = env.results_app(Duration::from_secs(60));
    let get = lambda_http::http::Request::builder().uri("/tasks/midi0big0task").body(Body::Empty).unwrap();
    let answer = json(&results.handle(get).await);
    assert_eq!(answer["details"], details);
    let url = answer["details_url"].as_str().expect("a link to the details");
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().await.unwrap().to_vec() == notes, "the link fetches the notes");
}

/// The task of the WAV fixture the table tests and the secret's tests deliver.
const WAV_TASK: &str = "988e****c8d3";

/// The WAV fixture signed now by `key`.
fn wav_signed_by(key: &str) -> Request {
    request(&signed_by(key, WAV_TASK, now_secs()), &fixture("convert-to-wav__kie__200.json"))
}

/// The test's resources with the WAV fixture's task recorded by ingest, and that record.
async fn wav_recorded() -> (TestEnv, TaskRecord) {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    assert_eq!(app.handle(wav_signed_by(KEY)).await.status(), StatusCode::OK);
    let record = env.task_record(WAV_TASK).await;
    (env, record)
}

#[tokio::test]
async fn an_item_over_the_table_limit_is_rejected_not_unavailable() {
    let (env, before) = wav_recorded().await;
    let expected = before.version;
    let mut record = before.clone();
    record.version += 1;
    record.details = Some(serde_json::json!({ "blob": "x".repeat(500 * 1024) }));

    let err = env.tasks().save(Some(&before), &record).await.unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(env.task_record(WAV_TASK).await.version, expected, "nothing written");
}

/// A write the table refuses as invalid for another reason than its size (here a value no
/// expression uses: what a faulty build would send) is Invalid, not Rejected: a callback it
/// fails stays parked until a fix, instead of being archived unrecorded as one too large
/// would be.
#[tokio::test]
async fn a_write_refused_as_invalid_is_not_an_item_too_large() {
    let (env, _) = wav_recorded().await;
    let mut faulty = stemvault_aws::table::Update::new("SET deliveries = deliveries", "attribute_exists(sk)");
    faulty.value(":unused", stemvault_aws::table::s("x"));
    let err = env.tasks().update("probing", WAV_TASK, stemvault_vault::items::TASK_SK, faulty).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(!err.is_retryable());
}

/// A file URL too long for a queue message (a signed body can bring anything): the job goes
/// out without it, and the download refuses the record's URL and records why, where the
/// queue refused the job on every try (and the file stayed pending).
#[tokio::test]
async fn a_file_url_too_long_for_a_message_is_queued_and_recorded_as_failed() {
    let env = TestEnv::new().await;
    let app = start(&env, config(&env).await).await;
    let server = FileServer::start().await;
    let url = format!("{}?{}", server.url("/s/a.wav"), "q".repeat(300 * 1024));
    let body =
        serde_json::json!({"code": 200, "msg": "success", "data": {"audioWavUrl": url, "task_id": "long-url-1"}});
    let body = serde_json::to_vec(&body).unwrap();
    let response = app.handle(signed(&body)).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    assert_eq!(json(&response)["files_queued"], 1);

    let event = env.receive_event(1, 60).await;
    let job: FileJob = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(job.name, "wav");
    assert!(job.url.is_empty(), "sent without the URL, not with {} bytes of it", job.url.len());
    let download = env.download_app(&server.origin(), None).await;
    assert!(env.run_download(&download, &event).await.batch_item_failures.is_empty(), "not retried");
    let record = env.record("long-url-1").await.unwrap();
    let wav = &record.files["wav"];
    assert_eq!((wav.status, wav.url.len()), (FileStatus::Failed, url.len()));
    let error = wav.error.as_deref().unwrap_or_default();
    assert!(error.contains("URL") && !error.contains("qqqq"), "{}", &error[..error.len().min(300)]);
}

/// A save whose put was applied by an attempt whose answer was lost, retried by the SDK and
/// refused by its own write, is applied; a save over the same read that puts anything else
/// is still a conflict.
#[tokio::test]
async fn a_put_refused_by_its_own_earlier_attempt_is_applied() {
    let (env, before) = wav_recorded().await;
    let mut record = before.clone();
    record.version += 1;
    record.details = Some(serde_json::json!({ "note": "the first" }));

    let table = env.tasks();
    table.save(Some(&before), &record).await.expect("the first attempt");
    table.save(Some(&before), &record).await.expect("its retry meets its own write");
    assert_eq!(env.task_record(WAV_TASK).await, record);

    let mut other = record.clone();
    other.details = Some(serde_json::json!({ "note": "another" }));
    assert_eq!(table.save(Some(&before), &other).await, Err(StoreError::Conflict), "another write over the same read");
}

/// A first save (no task item read) must not overwrite a file item another request
/// committed meanwhile and a downloader took and released (`pending` again, its revision
/// moved on): the save conflicts and reads again, and the item keeps its URL and history.
#[tokio::test]
async fn a_first_save_does_not_overwrite_a_file_released_since_its_read() {
    let (env, committed) = wav_recorded().await;
    let table = env.tasks();
    // A downloader's claim and release, as writes at the file's next revisions.
    let mut released = committed.clone();
    let wav = released.files.get_mut("wav").unwrap();
    (wav.status, wav.claim, wav.lease_until, wav.attempts) = (FileStatus::Pending, None, None, 1);
    wav.error = Some("the source timed out".into());
    wav.rev += 1;
    released.version += 1;
    env.rewrite_record(&committed, &released).await;
    let released = env.task_record(WAV_TASK).await;
    assert!(released.files["wav"].rev > 1, "{:?}", released.files["wav"]);

    // A request that read no task item before all that, saving its own first record.
    let mut late = committed.clone();
    let wav = late.files.get_mut("wav").unwrap();
    (wav.url, wav.rev, wav.attempts, wav.error) = ("https://example.com/s/other.wav".into(), 0, 0, None);
    late.version = 1;
    assert_eq!(table.save(None, &late).await, Err(StoreError::Conflict));
    assert_eq!(env.task_record(WAV_TASK).await.files["wav"], released.files["wav"], "untouched");
}

/// A task's record as a first save of `claim`'s writes it: `names`' files enqueuing under its
/// claim (lease until `lease_until`), its task item at version 1.
fn first_save_record(task: &str, claim: &str, lease_until: i64, names: &[&str]) -> TaskRecord {
    let at = stemvault_vault::Timestamp::from_unix_ms(now_secs() * 1000);
    let mut record = TaskRecord::new(task, Family::Wav, Stage::Final, 200, "ok", at);
    for name in names {
        let url = format!("https://cdn1.suno.ai/{name}.wav");
        let mut file = stemvault_vault::FileEntry::pending(&url, format!("tasks/{task}/{name}.wav"), Stage::Final);
        (file.status, file.claim, file.lease_until) =
            (FileStatus::Enqueuing, Some(claim.into()), Some(LeaseEnd::from_unix_seconds(lease_until)));
        record.files.insert((*name).into(), file);
    }
    record.version = 1;
    record
}

/// The file items the table holds for `task`, by name.
async fn file_items(env: &TestEnv, task: &str) -> Vec<(String, stemvault_vault::FileEntry)> {
    let items = env.tasks().items(task).await.expect("the task's items");
    items.into_iter().filter_map(|item| stemvault_vault::items::read_file_item(item).ok()).collect()
}

/// The file items of a first save without its task item: an attempt that stopped before it.
async fn first_save_stopped(env: &TestEnv, record: &TaskRecord) {
    env.tasks().save(None, record).await.expect("the stopped attempt's items");
    env.dynamo
        .delete_item()
        .table_name(&env.resources.table_name)
        .key(
            stemvault_vault::items::PARTITION_KEY,
            aws_sdk_dynamodb::types::AttributeValue::S(record.task_id.to_string()),
        )
        .key(
            stemvault_vault::items::SORT_KEY,
            aws_sdk_dynamodb::types::AttributeValue::S(stemvault_vault::items::TASK_SK.into()),
        )
        .send()
        .await
        .expect("its task item gone");
}

/// A first save over the file items of an attempt that stopped before its task item (here:
/// written, then its task item deleted) takes them over only when their claim's lease ran out
/// or the claim is its own (an SDK retry of its own put), never under another request's live
/// claim: the `Unclaimed` condition as the emulator, like DynamoDB, evaluates it.
#[tokio::test]
async fn a_first_save_takes_over_a_stopped_attempts_files_only_once_free() {
    let env = TestEnv::new().await;
    let table = env.tasks();
    let now = now_secs();
    for (i, (stopped_claim, stopped_lease, applies)) in
        [("stopped", now - 60, true), ("me", now + 60, true), ("another", now + 60, false)].into_iter().enumerate()
    {
        let task = format!("unclaimed{i}x{now}");
        first_save_stopped(&env, &first_save_record(&task, stopped_claim, stopped_lease, &["wav"])).await;
        let saved = table.save(None, &first_save_record(&task, "me", now + 30, &["wav"])).await;
        assert_eq!(saved.is_ok(), applies, "{stopped_claim}: {saved:?}");
        if !applies {
            assert_eq!(saved, Err(StoreError::Conflict));
        }
    }
}

/// Two first saves of one task whose file sets differ (a provider's retry of `first` beside
/// its `complete`, say) start with different files, so each may win a file the other needs.
/// The one that meets the other's claim gives its own files back, still at revision 1, and
/// the other's next attempt takes them; both would otherwise retry under their own live
/// claims until both ran out of time.
#[tokio::test]
async fn a_first_save_that_meets_another_gives_its_own_files_back() {
    let env = TestEnv::new().await;
    let table = env.tasks();
    let now = now_secs();
    let task = format!("givesback{now}");
    // The other request holds c (its first file).
    first_save_stopped(&env, &first_save_record(&task, "other", now + 60, &["c"])).await;

    // This one puts b (its first) alone, then meets the other's claim on c.
    let saved = table.save(None, &first_save_record(&task, "me", now + 60, &["b", "c"])).await;
    assert_eq!(saved, Err(StoreError::Conflict));
    let files = file_items(&env, &task).await;
    let b = &files.iter().find(|(name, _)| name == "b").expect("b was put").1;
    assert_eq!((b.status, b.claim.as_deref(), b.rev), (FileStatus::Pending, None, 1), "b given back");
    let c = &files.iter().find(|(name, _)| name == "c").expect("c").1;
    assert_eq!((c.claim.as_deref(), c.rev), (Some("other"), 1), "c still the other's");

    // The other's next attempt takes b, and its save applies.
    table.save(None, &first_save_record(&task, "other", now + 60, &["a", "b", "c"])).await.expect("the other saves");
    let record = env.task_record(&task).await;
    assert_eq!(record.files["b"].claim.as_deref(), Some("other"));
}

/// Fails the PutItem requests of one item (its sort key in the body) before they are sent,
/// as a table that fails a write (not its condition) would.
#[derive(Debug)]
struct FailPutOf(&'static str);

impl aws_sdk_dynamodb::config::Intercept for FailPutOf {
    fn name(&self) -> &'static str {
        "FailPutOf"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let put = request.headers().get("x-amz-target").is_some_and(|t| t.ends_with(".PutItem"));
        let body = request.body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
        match put && body.contains(self.0) {
            true => Err(format!("{} not written (injected)", self.0).into()),
            false => Ok(()),
        }
    }
}

/// The task table through a client whose PutItem requests of `item` fail ([`FailPutOf`]).
fn failing_puts_of(env: &TestEnv, item: &'static str) -> stemvault_aws::TaskTable {
    let failing = aws_sdk_dynamodb::config::Builder::from(&env.config).interceptor(FailPutOf(item)).build();
    stemvault_aws::TaskTable::new(aws_sdk_dynamodb::Client::from_conf(failing), &env.resources.table_name)
}

/// A first save whose put of a file item fails (not its condition: the table failing it)
/// gives back the file items it did put (pending, unclaimed, revision 1), as one meeting
/// another's claim does, so no other first delivery waits for their claims' lease.
#[tokio::test]
async fn a_first_save_whose_put_fails_gives_its_own_files_back() {
    let env = TestEnv::new().await;
    let now = now_secs();
    let task = format!("putfails{now}");
    let table = failing_puts_of(&env, "file#c");

    let saved = table.save(None, &first_save_record(&task, "me", now + 60, &["b", "c"])).await;
    assert!(matches!(&saved, Err(StoreError::Unavailable(why)) if why.contains("injected")), "{saved:?}");
    let files = file_items(&env, &task).await;
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["b"], "c never written, no task item");
    let b = &files[0].1;
    assert_eq!((b.status, b.claim.as_deref(), b.rev), (FileStatus::Pending, None, 1), "b given back");

    // Another first delivery takes b at once, and its save applies.
    env.tasks().save(None, &first_save_record(&task, "other", now + 60, &["b", "c"])).await.expect("the other saves");
    assert_eq!(env.task_record(&task).await.files["b"].claim.as_deref(), Some("other"));
}

/// A first save whose task item write fails unanswered (the table unavailable: its answer may
/// have been lost after it applied) keeps its file items' claims, as a committed task's.
#[tokio::test]
async fn a_first_save_whose_task_item_write_fails_unanswered_keeps_its_claims() {
    let env = TestEnv::new().await;
    let now = now_secs();
    let task = format!("taskfails{now}");
    let table = failing_puts_of(&env, r#""S":"task""#);

    let saved = table.save(None, &first_save_record(&task, "me", now + 60, &["b", "c"])).await;
    assert!(matches!(&saved, Err(StoreError::Unavailable(why)) if why.contains("injected")), "{saved:?}");
    let files = file_items(&env, &task).await;
    let mut held: Vec<(&str, Option<&str>)> =
        files.iter().map(|(name, f)| (name.as_str(), f.claim.as_deref())).collect();
    held.sort();
    assert_eq!(held, [("b", Some("me")), ("c", Some("me"))], "claims kept");
}

/// As a file item's: a first save whose callback item put fails gives back the file items it
/// put, though each of them was applied.
#[tokio::test]
async fn a_first_save_whose_callback_item_put_fails_gives_its_own_files_back() {
    let env = TestEnv::new().await;
    let now = now_secs();
    let task = format!("callbackfails{now}");
    let table = failing_puts_of(&env, "callback#");
    let mut record = first_save_record(&task, "me", now + 60, &["b", "c"]);
    let callback = stemvault_vault::CallbackEntry {
        stage: Stage::Final,
        code: 200,
        message: "ok".into(),
        received_at: record.first_received_at,
        body_key: format!("tasks/{task}/callbacks/final.json"),
        bytes: 2,
        deliveries: 1,
    };
    record.callbacks.insert("final".into(), callback);

    let saved = table.save(None, &record).await;
    assert!(matches!(&saved, Err(StoreError::Unavailable(why)) if why.contains("injected")), "{saved:?}");
    let mut given_back: Vec<(String, FileStatus, Option<String>, u64)> =
        file_items(&env, &task).await.into_iter().map(|(name, f)| (name, f.status, f.claim, f.rev)).collect();
    given_back.sort_by(|a, b| a.0.cmp(&b.0));
    let pending = |name: &str| (name.to_owned(), FileStatus::Pending, None, 1);
    assert_eq!(given_back, [pending("b"), pending("c")], "both put, both given back");
}

/// A first save whose task item the table refuses for good (over DynamoDB's 400 KB: the
/// emulator refuses it as AWS does) was not committed, so it gives its file items back; the
/// error says the record was refused, not that the table is unavailable.
#[tokio::test]
async fn a_first_save_whose_task_item_is_refused_for_good_gives_its_own_files_back() {
    let env = TestEnv::new().await;
    let now = now_secs();
    let task = format!("taskrefused{now}");
    let record =
        TaskRecord { message: "x".repeat(410 * 1024), ..first_save_record(&task, "me", now + 60, &["b", "c"]) };

    let saved = env.tasks().save(None, &record).await;
    assert!(matches!(&saved, Err(StoreError::Rejected(why)) if why.contains("PutItem (task)")), "{saved:?}");
    let mut given_back: Vec<(String, FileStatus, Option<String>, u64)> =
        file_items(&env, &task).await.into_iter().map(|(name, f)| (name, f.status, f.claim, f.rev)).collect();
    given_back.sort_by(|a, b| a.0.cmp(&b.0));
    let pending = |name: &str| (name.to_owned(), FileStatus::Pending, None, 1);
    assert_eq!(given_back, [pending("b"), pending("c")]);
}

/// A first save meeting both a table error and another request's claim reports the error:
/// a conflict would have it read and tried again at once, against a table failing writes.
#[tokio::test]
async fn a_first_save_failing_and_conflicting_reports_the_failure() {
    let env = TestEnv::new().await;
    let now = now_secs();
    let task = format!("failsandconflicts{now}");
    first_save_stopped(&env, &first_save_record(&task, "other", now + 60, &["d"])).await;
    let table = failing_puts_of(&env, "file#c");

    // b alone first, then c (failing) and d (the other's) at once.
    let saved = table.save(None, &first_save_record(&task, "me", now + 60, &["b", "c", "d"])).await;
    assert!(matches!(&saved, Err(StoreError::Unavailable(why)) if why.contains("injected")), "{saved:?}");
    let mut claims: Vec<(String, Option<String>)> =
        file_items(&env, &task).await.into_iter().map(|(name, f)| (name, f.claim)).collect();
    claims.sort();
    assert_eq!(claims, [("b".to_owned(), None), ("d".to_owned(), Some("other".to_owned()))]);
}

/// Readers take the task item first (TaskTable::items): a file item a writer committed
/// before the task item it read is then read after it, so no reader sees a task item counting
/// a file it does not see.
#[tokio::test]
async fn a_collection_is_read_task_item_first() {
    let (env, _) = wav_recorded().await;
    let items = env.tasks().items(WAV_TASK).await.unwrap();
    let sort_keys: Vec<String> = items
        .into_iter()
        .map(|i| {
            let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = i.into();
            item["sk"].as_s().expect("a string sort key").clone()
        })
        .collect();
    assert!(sort_keys.len() >= 3, "a task, a file and a callback item: {sort_keys:?}");
    assert_eq!(sort_keys[0], "task", "{sort_keys:?}");
    assert!(
        sort_keys.iter().any(|sk| sk.starts_with("file#")) && sort_keys.iter().any(|sk| sk.starts_with("callback#"))
    );
}

// --- the callback secret in Secrets Manager ----------------------------------------------

/// A secret in another region than the function's (a central secrets region) is read there,
/// as its ARN says: Secrets Manager answers for its own region's secrets alone.
#[tokio::test]
async fn a_secret_in_another_region_is_read_where_its_arn_says() {
    let env = TestEnv::new().await;
    let elsewhere = env.config.to_builder().region(aws_config::Region::new("ap-southeast-2")).build();
    assert_ne!(env.config.region(), elsewhere.region());
    let name = format!("elsewhere-{}", uuid::Uuid::new_v4().simple());
    let arn = stemvault_aws::secrets::put_secret(&elsewhere, &name, &SecretText::new(r#"{"callback_token":"t"}"#))
        .await
        .expect("put in the other region");
    assert!(arn.contains(":ap-southeast-2:"), "{arn}");
    let read = stemvault_aws::secrets::SecretReader::new(&env.config, &arn).read().await.expect("read where it is");
    assert_eq!(read.expose(), r#"{"callback_token":"t"}"#);
}

/// Two instances over the test's resources, each having accepted a callback signed by
/// [`KEY`]: one as deployed, and one re-reading the secret by `policy`.
async fn deployed_and(env: &TestEnv, policy: RefreshPolicy) -> (App, App) {
    let config = config(env).await;
    let deployed = start(env, config.clone()).await;
    let other = start(env, config).await.with_secret_policy(policy);
    for app in [&deployed, &other] {
        assert_eq!(app.handle(wav_signed_by(KEY)).await.status(), StatusCode::OK, "the key read at start-up");
    }
    (deployed, other)
}

#[tokio::test]
async fn the_secret_is_read_at_start_and_a_rotated_key_is_taken_after_a_refusal() {
    let env = TestEnv::new().await;
    // The other instance may re-read at once after a refusal.
    let eager = RefreshPolicy { interval: Duration::ZERO, ..RefreshPolicy::default() };
    let (deployed, eager) = deployed_and(&env, eager).await;

    put_secret(&env, &signing_key("rotated-key")).await;
    let response = eager.handle(wav_signed_by("rotated-key")).await;
    assert_eq!(response.status(), StatusCode::OK, "refused, re-read, accepted: {}", json(&response));
    let refusal = (StatusCode::UNAUTHORIZED, "signature_mismatch".to_owned());
    assert_eq!(refused(&eager, wav_signed_by(KEY)).await, refusal, "rotated out");

    assert_eq!(
        refused(&deployed, wav_signed_by("rotated-key")).await,
        refusal,
        "read less than a minute ago: not read again yet"
    );
    assert_eq!(deployed.handle(wav_signed_by(KEY)).await.status(), StatusCode::OK);
    assert_eq!(env.record(WAV_TASK).await.unwrap().deliveries, 4);
}

#[tokio::test]
async fn a_key_revoked_from_the_secret_is_refused_once_the_checks_reach_their_age() {
    let env = TestEnv::new().await;
    // The other instance's checks are always too old: it reads the secret before every request.
    let aged = RefreshPolicy { max_age: Duration::ZERO, ..RefreshPolicy::default() };
    let (deployed, aged) = deployed_and(&env, aged).await;

    put_secret(&env, &signing_key("replacement-key")).await;
    assert_eq!(
        refused(&aged, wav_signed_by(KEY)).await,
        (StatusCode::UNAUTHORIZED, "signature_mismatch".into()),
        "revoked: read again for its age, though nothing was refused"
    );
    assert_eq!(aged.handle(wav_signed_by("replacement-key")).await.status(), StatusCode::OK);
    assert_eq!(deployed.handle(wav_signed_by(KEY)).await.status(), StatusCode::OK, "read less than five minutes ago");
    assert_eq!(env.record(WAV_TASK).await.unwrap().deliveries, 4);
}

/// A secret Secrets Manager cannot give (here: missing), or whose text opens nothing, starts
/// ingest answering 503 `secret_unreadable`, which the provider retries.
#[tokio::test]
async fn a_secret_unreadable_or_opening_nothing_starts_ingest_answering_503() {
    let env = TestEnv::new().await;
    let config = config(&env).await;
    let missing = Config { callback_secret_arn: format!("{}-none", config.callback_secret_arn), ..config.clone() };
    let unread = App::new(missing, &env.config).await;
    let answer = refused(&unread, wav_signed_by(KEY)).await;
    assert_eq!(answer, (StatusCode::SERVICE_UNAVAILABLE, "secret_unreadable".into()));
    assert!(env.record(WAV_TASK).await.is_none(), "nothing recorded");

    // A secret whose first text is empty (with no previous version to fall back on).
    let empty = put_secret_text(&env, "empty", &SecretText::new(CallbackSecret::default().to_json())).await;
    let config = Config { callback_secret_arn: empty, ..config };
    let closed = App::new(config.clone(), &env.config).await;
    let answer = refused(&closed, wav_signed_by(KEY)).await;
    assert_eq!(
        answer,
        (StatusCode::SERVICE_UNAVAILABLE, "secret_unreadable".into()),
        "an open endpoint must be allowed"
    );
    let open = start(&env, Config { allow_unauthenticated: true, ..config }).await;
    let body = fixture("convert-to-wav__kie__200.json");
    assert_eq!(open.handle(request(&[], &body)).await.status(), StatusCode::OK);
}

/// A rotation's typo at a cold start: the callback secret's current text cannot be used, so
/// ingest checks with its previous version (`AWSPREVIOUS`, as Secrets Manager labels it when
/// a new value is put) instead of answering every callback 503 until the fix; a key only the
/// broken text names is in doubt (503, retried by the provider). Without a previous version
/// (here: the broken text is the secret's first), 503 `secret_unreadable` as before (as for an
/// empty one: [`a_secret_unreadable_or_opening_nothing_starts_ingest_answering_503`]).
#[tokio::test]
async fn a_secret_whose_current_text_cannot_be_used_falls_back_on_its_previous_version() {
    let env = TestEnv::new().await;
    let config = config(&env).await;
    let broken = SecretText::new(r#"{"webhook_hmac_keys": ["rotated-key", ""]}"#);
    put_secret_text(&env, "callback", &broken).await;
    let started = start(&env, config.clone()).await;
    assert_eq!(started.handle(wav_signed_by(KEY)).await.status(), StatusCode::OK, "the previous version's key");
    assert_eq!(
        refused(&started, wav_signed_by("rotated-key")).await,
        (StatusCode::SERVICE_UNAVAILABLE, "secret_unreadable".into())
    );

    let first = put_secret_text(&env, "callback-first", &broken).await;
    let unread = start(&env, Config { callback_secret_arn: first, ..config }).await;
    assert_eq!(
        refused(&unread, wav_signed_by(KEY)).await,
        (StatusCode::SERVICE_UNAVAILABLE, "secret_unreadable".into()),
        "no previous version"
    );
}
