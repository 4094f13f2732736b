//! Task events on the emulator's EventBridge, read the way a user's application subscribes:
//! a rule on the stack's bus for source `stemvault` targeting an SQS queue. A task run through
//! ingest and the download function gives one `Task Vaulted` per settle (by `detail.event_id`),
//! with the files as recorded; its stage, and a failure result's `Task Failed`, come too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::Body;
use lambda_http::http::StatusCode;
use serde_json::{Value, json};
use stemvault_tests::TestEnv;
use stemvault_tests::file_server::{FileServer, Gate, Reply};
use stemvault_vault::{FileStatus, TaskRecord, VaultState};
use suno_callbacks::Stage;
use suno_callbacks::signature::sign;

const KEY: &str = "events-test-key";

/// A queue subscribed to every stemvault event on the test's bus.
struct Subscriber {
    url: String,
}

impl Subscriber {
    async fn new(env: &TestEnv) -> Subscriber {
        let name = format!("{}-subscriber", env.resources.table_name);
        let (url, arn, _) = stemvault_aws::provision::create_queue_with_dlq(
            &env.sqs,
            &name,
            &stemvault_aws::provision::QueueSettings::DOWNLOADS,
        )
        .await
        .expect("the subscriber's queue");
        stemvault_aws::provision::subscribe_queue(&env.config, &env.resources.event_bus_name, &name, &url, &arn)
            .await
            .expect("the rule");
        Subscriber { url }
    }

    /// Receive (and delete) events until `done` holds for all received so far, or 20 s.
    async fn until(&self, env: &TestEnv, seen: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(seen) && Instant::now() < deadline {
            let out = env
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive events");
            for m in out.messages.unwrap_or_default() {
                seen.push(serde_json::from_str(m.body().unwrap_or_default()).expect("an EventBridge event"));
                let handle = m.receipt_handle().unwrap_or_default();
                env.sqs.delete_message().queue_url(&self.url).receipt_handle(handle).send().await.expect("delete");
            }
        }
    }

    /// Two more receives (a second each): an event published after those awaited, a
    /// second settle say, shows up.
    async fn two_more(&self, env: &TestEnv, seen: &mut Vec<Value>) {
        let receives = std::cell::Cell::new(0);
        self.until(env, seen, |_| {
            receives.set(receives.get() + 1);
            receives.get() > 2
        })
        .await;
    }
}

/// The distinct events (by `detail.event_id`) of `kind`, in the order first seen.
fn distinct<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    let mut ids = BTreeSet::new();
    events
        .iter()
        .filter(|e| e["detail-type"] == kind)
        .filter(|e| ids.insert(e["detail"]["event_id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Deliver `body` signed; an answer that parked it has the reconciler replay it, as it would.
async fn post(env: &TestEnv, app: &stemvault_ingest::App, task_id: &str, body: &Value) -> StatusCode {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/callback")
        .header("X-Webhook-Timestamp", ts.to_string())
        .header("X-Webhook-Signature", sign(KEY.as_bytes(), task_id, ts))
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.handle(request).await;
    if response.status() == StatusCode::OK {
        env.replay_if_parked(&serde_json::from_slice(response.body().as_ref()).expect("a JSON answer")).await;
    }
    response.status()
}

fn task_id(seed: &str) -> String {
    format!("{:0>32}", format!("{seed}{}", uuid::Uuid::new_v4().simple()).chars().take(32).collect::<String>())
}

fn vocal_separation(task: &str, vocal_url: &str, instrumental_url: &str) -> Value {
    json!({"code": 200, "msg": "vocal separation generated successfully.", "data": {"task_id": task,
        "vocal_separation_info": {"instrumental_url": instrumental_url, "origin_url": "", "vocal_url": vocal_url}}})
}

/// Run the download function over the queue until the task's vault is settled and its
/// manifest recorded.
async fn download_until_settled(env: &TestEnv, app: &stemvault_download::App, task: &str) -> TaskRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let record = env.record(task).await.expect("the task is recorded");
        let settled = record.vault != VaultState::Pending && record.manifest_key.is_some();
        if settled || Instant::now() > deadline {
            return record;
        }
        let (queued, _) = env.queue_depth().await;
        if queued == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let event = env.receive_event(1, 60).await;
        let lambda_deadline = tokio::time::Instant::now().into_std() + Duration::from_secs(120);
        let response = app.handle_batch(event.clone(), lambda_deadline).await;
        env.finish_batch(&event, &response).await;
        // An expired URL is failed so on a later receive: run it again at once.
        Box::pin(env.run_until_expiry_confirmed(app, event, response)).await;
    }
}

/// The files of an event as (name -> key, bytes, sha256, status, error?).
/// A file as an event and the record both show it: key, bytes, sha256, status, has an error.
type Shown = (String, Option<u64>, Option<String>, String, bool);

fn event_files(detail: &Value) -> BTreeMap<String, Shown> {
    detail["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().map(str::to_owned);
            let file = (
                text("key").unwrap(),
                f["bytes"].as_u64(),
                text("sha256"),
                text("status").unwrap(),
                text("error").is_some(),
            );
            (text("name").unwrap(), file)
        })
        .collect()
}

fn record_files(record: &TaskRecord) -> BTreeMap<String, Shown> {
    record
        .files
        .iter()
        .map(|(name, f)| {
            let status = serde_json::to_value(f.status.public()).unwrap().as_str().unwrap().to_owned();
            let failed = f.status == stemvault_vault::FileStatus::Failed;
            (name.clone(), (f.key.clone(), f.bytes, f.sha256.clone(), status, failed && f.error.is_some()))
        })
        .collect()
}

#[tokio::test]
async fn one_task_vaulted_per_settle_with_the_right_files() {
    let env = TestEnv::new().await;
    let subscriber = Subscriber::new(&env).await;
    let server = FileServer::start().await;
    server.route("/vocal.mp3", Reply::bytes(&b"vocal bytes"[..], "audio/mpeg"));
    // The instrumental's first link is gone: the first settle is partial.
    server.route("/gone.mp3", Reply::Status(404));
    server.route("/instrumental.mp3", Reply::bytes(&b"instrumental bytes"[..], "audio/mpeg"));
    let ingest = env.ingest_app(KEY).await;
    let download = env.download_app(&server.origin(), None).await;
    let task = task_id("e1");

    let first = vocal_separation(&task, &server.url("/vocal.mp3"), &server.url("/gone.mp3"));
    assert_eq!(post(&env, &ingest, &task, &first).await, StatusCode::OK);
    let partial = download_until_settled(&env, &download, &task).await;
    assert_eq!(partial.vault, VaultState::Partial);
    // A redelivery of a settled file settles nothing again.
    let job = stemvault_tests::download::job_of(&partial, "vocal");
    env.send_jobs(&[job]).await;
    let event = env.receive_event(1, 60).await;
    let response = download.handle_batch(event.clone(), Instant::now() + Duration::from_secs(120)).await;
    env.finish_batch(&event, &response).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    assert_eq!(env.task_record(&task).await, partial, "the redelivery wrote nothing");

    let mut seen = Vec::new();
    subscriber.until(&env, &mut seen, |e| !distinct(e, "Task Vaulted").is_empty()).await;
    subscriber.two_more(&env, &mut seen).await;
    let vaulted = distinct(&seen, "Task Vaulted");
    assert_eq!(vaulted.len(), 1, "one Task Vaulted for one settle: {seen:#?}");
    // Nothing failed, so nothing was published twice: a second settle, even of the same id,
    // would be a second event on the bus.
    let published = seen.iter().filter(|e| e["detail-type"] == "Task Vaulted").count();
    assert_eq!(published, 1, "{seen:#?}");
    let detail = &vaulted[0]["detail"];
    assert_eq!(vaulted[0]["source"], "stemvault");
    assert_eq!(detail["event_id"], format!("{task}.vaulted.{}.{}", partial.generation, partial.stage.as_str()));
    assert_eq!((detail["task_id"].as_str(), detail["vault"].as_str()), (Some(task.as_str()), Some("partial")));
    assert_eq!(detail["bucket"], env.resources.bucket_name.as_str());
    assert_eq!(detail["manifest_key"].as_str(), partial.manifest_key.as_deref());
    assert_eq!(event_files(detail), record_files(&partial), "the files as recorded");
    assert_eq!(detail["files"].as_array().unwrap().len(), 2);
    let stages = distinct(&seen, "Task Stage Changed");
    assert_eq!(stages.len(), 1, "{stages:#?}");
    assert_eq!(stages[0]["detail"]["event_id"], format!("{task}.stage.{}", partial.stage.as_str()));
    assert!(distinct(&seen, "Task Failed").is_empty());

    // The instrumental brought again with a fresh link reopens the task: its second settle
    // is a second Task Vaulted, of the next generation, complete.
    let again = vocal_separation(&task, &server.url("/vocal.mp3"), &server.url("/instrumental.mp3"));
    assert_eq!(post(&env, &ingest, &task, &again).await, StatusCode::OK);
    let complete = download_until_settled(&env, &download, &task).await;
    assert_eq!(complete.vault, VaultState::Complete);
    assert!(complete.generation > partial.generation);
    subscriber.until(&env, &mut seen, |e| distinct(e, "Task Vaulted").len() >= 2).await;
    let vaulted = distinct(&seen, "Task Vaulted");
    assert_eq!(vaulted.len(), 2, "{seen:#?}");
    let detail = &vaulted[1]["detail"];
    assert_eq!(detail["event_id"], format!("{task}.vaulted.{}.{}", complete.generation, complete.stage.as_str()));
    assert_eq!(detail["vault"], "complete");
    assert_eq!(event_files(detail), record_files(&complete));
    let instrumental = &event_files(detail)["instrumental"];
    assert_eq!((instrumental.1, instrumental.3.as_str()), (Some(18), "stored"));
}

/// A callback brings a newer URL for a file while the downloader copies the old one: ingest
/// writes it beside the old one (`next_url`), and when the old URL fails for good (the
/// `failed` write is conditional on no newer URL waiting) the downloader copies the newer one
/// under the same claim. The task settles complete, once, and its Task Vaulted names the file
/// at the newer URL's key.
#[tokio::test]
async fn a_newer_url_that_came_during_a_copy_is_copied_when_the_old_one_fails_for_good() {
    let env = TestEnv::new().await;
    let subscriber = Subscriber::new(&env).await;
    let server = FileServer::start().await;
    // The old URL answers 404 only once the newer one is recorded.
    let gate = Gate::default();
    server.route("/old-vocal.mp3", Reply::gated(&gate, Reply::Status(404)));
    server.route("/vocal.wav", Reply::bytes(&b"vocal bytes, final"[..], "audio/wav"));
    server.route("/instrumental.mp3", Reply::bytes(&b"instrumental bytes"[..], "audio/mpeg"));
    let ingest = env.ingest_app(KEY).await;
    let download = env.download_app(&server.origin(), None).await;
    let task = task_id("e4");
    let first = vocal_separation(&task, &server.url("/old-vocal.mp3"), &server.url("/instrumental.mp3"));
    assert_eq!(post(&env, &ingest, &task, &first).await, StatusCode::OK);

    let newer = vocal_separation(&task, &server.url("/vocal.wav"), &server.url("/instrumental.mp3"));
    let bring_newer_during_the_copy = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.hits("/old-vocal.mp3") == 0 {
            assert!(Instant::now() < deadline, "the vocal was never fetched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(env.record(&task).await.expect("recorded").files["vocal"].status, FileStatus::Downloading);
        assert_eq!(post(&env, &ingest, &task, &newer).await, StatusCode::OK);
        gate.open();
    };
    let (settled, ()) = tokio::join!(download_until_settled(&env, &download, &task), bring_newer_during_the_copy);

    assert_eq!(settled.vault, VaultState::Complete, "{settled:#?}");
    let vocal = &settled.files["vocal"];
    assert_eq!((vocal.status, vocal.url.as_str()), (FileStatus::Stored, server.url("/vocal.wav").as_str()));
    assert_eq!(vocal.key, format!("tasks/{task}/vocal.wav"));
    assert_eq!(env.object(&vocal.key).await.as_deref(), Some(&b"vocal bytes, final"[..]));
    // The old URL answered as expired on each receive up to the one that confirms it.
    let confirmed = stemvault_download::domain::EXPIRY_CONFIRMED_ON_RECEIVE as usize;
    assert_eq!((server.hits("/old-vocal.mp3"), server.hits("/vocal.wav")), (confirmed, 1));

    let mut seen = Vec::new();
    subscriber.until(&env, &mut seen, |e| !distinct(e, "Task Vaulted").is_empty()).await;
    subscriber.two_more(&env, &mut seen).await;
    let vaulted = distinct(&seen, "Task Vaulted");
    assert_eq!(vaulted.len(), 1, "{seen:#?}");
    assert_eq!(vaulted[0]["detail"]["vault"], "complete");
    assert_eq!(event_files(&vaulted[0]["detail"]), record_files(&settled));
}

/// A music task's `first` callback settles its track; its `complete` brings the same track,
/// no file new: that stage is settled on its own, with its manifest and a `Task Vaulted`
/// naming it (so a subscriber matching `complete` hears of it).
#[tokio::test]
async fn a_new_stage_without_new_files_is_vaulted_again_for_that_stage() {
    let env = TestEnv::new().await;
    let subscriber = Subscriber::new(&env).await;
    let server = FileServer::start().await;
    server.route("/1.mp3", Reply::bytes(&b"track one"[..], "audio/mpeg"));
    server.route("/1.jpeg", Reply::bytes(&b"cover"[..], "image/jpeg"));
    let ingest = env.ingest_app(KEY).await;
    let download = env.download_app(&server.origin(), None).await;
    let task = task_id("e3");
    let music = |stage: &str, msg: &str| {
        json!({"code": 200, "msg": msg, "data": {"callbackType": stage, "task_id": task, "data": [{
            "id": "track-1", "audio_url": server.url("/1.mp3"), "image_url": server.url("/1.jpeg"),
            "prompt": "[Verse] Rain", "model_name": "chirp-v4-5", "title": "One", "tags": "piano",
            "createTime": "2025-03-04 05:06:07", "duration": 1.5}]}})
    };

    assert_eq!(
        post(&env, &ingest, &task, &music("first", "First track generated successfully.")).await,
        StatusCode::OK
    );
    let first = download_until_settled(&env, &download, &task).await;
    assert_eq!((first.stage, first.vault), (Stage::First, VaultState::Complete));
    assert_eq!(post(&env, &ingest, &task, &music("complete", "All generated successfully.")).await, StatusCode::OK);
    let complete = download_until_settled(&env, &download, &task).await;
    assert_eq!((complete.stage, complete.vault), (Stage::Complete, VaultState::Complete));
    assert_eq!(complete.generation, first.generation);
    assert_eq!(complete.files, first.files, "nothing copied again");
    let manifest: Value = serde_json::from_slice(&env.object(complete.manifest_key.as_deref().unwrap()).await.unwrap())
        .expect("the manifest");
    assert_eq!(manifest["stage"], "complete");

    let mut seen = Vec::new();
    let all_four = |e: &[Value]| distinct(e, "Task Vaulted").len() >= 2 && distinct(e, "Task Stage Changed").len() >= 2;
    subscriber.until(&env, &mut seen, all_four).await;
    // In stage order (a queue does not keep the order they were sent in).
    let mut vaulted: Vec<(&str, &str, u64)> = distinct(&seen, "Task Vaulted")
        .iter()
        .map(|e| {
            let d = &e["detail"];
            (d["event_id"].as_str().unwrap(), d["stage"].as_str().unwrap(), d["generation"].as_u64().unwrap())
        })
        .collect();
    vaulted.sort_by_key(|v| v.1 == "complete");
    let (first_id, complete_id) = (
        format!("{task}.vaulted.{}.first", first.generation),
        format!("{task}.vaulted.{}.complete", complete.generation),
    );
    assert_eq!(
        vaulted,
        [(first_id.as_str(), "first", first.generation), (complete_id.as_str(), "complete", complete.generation)],
        "{seen:#?}"
    );
    let stages = distinct(&seen, "Task Stage Changed");
    let last = &stages.iter().find(|e| e["detail"]["stage"] == "complete").expect("complete's stage event")["detail"];
    assert_eq!((last["stage"].as_str(), last["vault"].as_str()), (Some("complete"), Some("complete")));
    assert_eq!(last["generation"].as_u64(), Some(complete.generation));
}

#[tokio::test]
async fn a_failure_result_publishes_its_stage_and_task_failed() {
    let env = TestEnv::new().await;
    let subscriber = Subscriber::new(&env).await;
    let ingest = env.ingest_app(KEY).await;
    let task = task_id("e2");
    let failure = json!({"code": 500, "msg": "Vocal separation failed",
        "data": {"task_id": task, "vocal_separation_info": null}});
    assert_eq!(post(&env, &ingest, &task, &failure).await, StatusCode::OK);

    let mut seen = Vec::new();
    let both = |e: &[Value]| !distinct(e, "Task Failed").is_empty() && !distinct(e, "Task Stage Changed").is_empty();
    subscriber.until(&env, &mut seen, both).await;
    subscriber.two_more(&env, &mut seen).await;
    let stages = distinct(&seen, "Task Stage Changed");
    let failed = distinct(&seen, "Task Failed");
    assert_eq!(stages.len(), 1, "{seen:#?}");
    assert_eq!(failed.len(), 1, "{seen:#?}");
    assert_eq!(stages[0]["detail"]["event_id"], format!("{task}.stage.error"));
    let detail = &failed[0]["detail"];
    assert_eq!(detail["event_id"], format!("{task}.failed.error"));
    assert_eq!((detail["stage"].as_str(), detail["code"].as_i64()), (Some("error"), Some(500)));
    assert_eq!(detail["message"], "Vocal separation failed");
    assert_eq!(detail["files"], json!([]));
}

/// The JSON examples of the README that are events (an EventBridge event with a `detail`, or a
/// webhook body with its `data`): each as the code makes one. A detail reads as an
/// [`stemvault_vault::events::EventDetail`] and writes back the same JSON (no field the code
/// lacks, none it would write missing), its `event_id` names its kind and ends with its stage,
/// and a family without stages is only ever `final` or `error`. (An example of a stage a family
/// never reaches matched no rule copied from it.)
#[test]
fn the_readme_event_examples_are_events_the_code_makes() {
    use stemvault_vault::events::{EventDetail, EventType};
    let mut examples = Vec::new();
    for value in stemvault_tests::readme_json_examples() {
        let kind = match (&value["detail-type"], &value["type"]) {
            (Value::String(detail_type), _) => EventType::from_detail_type(detail_type),
            (_, Value::String(webhook_type)) if value["data"].is_object() => {
                [EventType::StageChanged, EventType::Vaulted, EventType::Failed]
                    .into_iter()
                    .find(|t| t.webhook_type() == webhook_type.as_str())
            }
            _ => continue,
        };
        let detail = if value["detail"].is_object() { &value["detail"] } else { &value["data"] };
        examples.push((kind.unwrap_or_else(|| panic!("an event type the code has: {value}")), detail.clone()));
    }
    assert!(examples.len() >= 4, "the three events and the webhook: {} found", examples.len());
    for (kind, shown) in examples {
        let detail: EventDetail = serde_json::from_value(shown.clone()).unwrap_or_else(|e| panic!("{e}: {shown}"));
        assert_eq!(serde_json::to_value(&detail).unwrap(), shown, "the same JSON as the code writes");
        let (task, rest) = detail.event_id.split_once('.').unwrap_or_else(|| panic!("{}", detail.event_id));
        assert_eq!(task, detail.task_id);
        let kind_part = match kind {
            EventType::StageChanged => "stage.",
            EventType::Vaulted => "vaulted.",
            EventType::Failed => "failed.",
        };
        assert!(rest.starts_with(kind_part), "{} for {kind:?}", detail.event_id);
        assert!(rest.ends_with(&format!(".{}", detail.stage.as_str())), "{} at {:?}", detail.event_id, detail.stage);
        if !detail.family.has_stages() {
            assert!(
                matches!(detail.stage, Stage::Final | Stage::Error),
                "{:?} never reaches {:?}",
                detail.family,
                detail.stage
            );
        }
    }
}
