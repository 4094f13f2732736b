//! `make demo` in one process: the runner's pipeline (the real ingest, results and download
//! `App`s) against the emulator, the demo file server, and the demo client posting the
//! 12-stem `split_stem` callback. Run under `infra/local/emulator.sh` (make test does).

use std::time::Duration;

use sha2::Digest;
use stemvault_local::demo::{self, DemoTarget};
use stemvault_local::pipeline::{Pipeline, PipelineOptions};
use stemvault_local::shutdown::Shutdown;
use tokio::net::TcpListener;

/// A guard against a stop that hangs, not a speed: a stop waits for the work under way (a
/// sweep, a reconciler run, download batches), which a loaded runner can slow past seconds.
const STOPS_WITHIN: Duration = Duration::from_secs(120);

/// The emulator's settings (`AWS_*`, from `infra/local/emulator.sh`) and nothing else of the
/// process environment: the runner's first-run defaults (generated key, file server origin,
/// the built-in fake provider, no webhooks) are what is tested, whatever a developer exported
/// (a `PROVIDER_BASE_URL`, a `NOTIFY_URL` of a real receiver, a `MAX_FILE_BYTES`).
fn test_env(name: &str) -> Option<String> {
    name.starts_with("AWS_").then(|| std::env::var(name).ok()).flatten()
}

/// Stem name -> the file name in its URL, from the fixture (`bass_url` -> `..._Bass.mp3`).
fn fixture_stems() -> Vec<(String, String)> {
    let fixture: serde_json::Value = serde_json::from_str(demo::fixture()).unwrap();
    let info = fixture["data"]["vocal_separation_info"].as_object().unwrap();
    let mut stems: Vec<(String, String)> = info
        .iter()
        .filter_map(|(field, url)| {
            let url = url.as_str().filter(|u| !u.is_empty())?;
            Some((field.strip_suffix("_url")?.to_owned(), url.rsplit('/').next()?.to_owned()))
        })
        .collect();
    stems.sort();
    stems
}

/// A pipeline started with `env` and the demo file server it allows downloads from.
struct WithFiles {
    pipeline: Pipeline,
    file_origin: String,
    files: Shutdown,
    file_server: tokio::task::JoinHandle<()>,
}

impl WithFiles {
    async fn start(env: impl Fn(&str) -> Option<String>) -> WithFiles {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let file_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let file_origin = format!("http://{}", file_listener.local_addr().unwrap());
        let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let file_server_origin = file_origin.clone();
        let options = PipelineOptions { base, listener, file_server_origin, pollers: 2, print_events: false };
        let pipeline = Pipeline::start(options, env).await.expect("start the pipeline");
        let files = Shutdown::new();
        let file_server = tokio::spawn(stemvault_local::file_server::serve(file_listener, files.signal()));
        WithFiles { pipeline, file_origin, files, file_server }
    }
}

/// The demo's callback for a fresh task, posted to the pipeline unsigned.
async fn post_unsigned(pipeline: &Pipeline, file_origin: &str) -> reqwest::Response {
    let body = demo::demo_callback(demo::fixture(), &demo::fresh_task_id(), file_origin).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client.post(format!("{}/callback", pipeline.info.base_url)).body(body).send().await.unwrap()
}

/// The `detail-type`s of events, in order.
fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().map(|e| e["detail-type"].as_str().unwrap_or("?")).collect()
}

/// The runner's printed event lines until one contains `needle` (or 20 s).
async fn lines_until(log: &mut tokio::sync::broadcast::Receiver<String>, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains(needle)) {
        match tokio::time::timeout_at(deadline, log.recv()).await {
            Ok(Ok(line)) => lines.push(line),
            Ok(Err(e)) => panic!("the event log: {e}"),
            Err(_) => panic!("no event line with {needle:?} within 20 s; printed: {lines:#?}"),
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_callback_stores_all_twelve_stems_and_the_manifest() {
    stemvault_aws::logging::init();
    let WithFiles { pipeline, file_origin, files, file_server } = WithFiles::start(test_env).await;
    assert!(pipeline.generated_key.is_some(), "no auth configured: a development key is generated");
    assert!(pipeline.allowed_source_hosts.split(',').any(|h| h == file_origin), "{}", pipeline.allowed_source_hosts);
    let target = DemoTarget::from_run_info(&pipeline.info).await;

    // The generated key is enforced: an unsigned callback is refused.
    let unsigned = post_unsigned(&pipeline, &file_origin).await;
    assert_eq!(unsigned.status().as_u16(), 401);

    let mut log = pipeline.events.subscribe();
    let outcome = demo::run(&target, &file_origin, Duration::from_secs(90)).await.expect("the demo completes");
    println!("{}", demo::report(&outcome));

    // The demo shows its task's events from its own subscription to the runner's bus ...
    let task = outcome.task_id.as_str();
    assert_eq!(kinds(&outcome.events), ["Task Stage Changed", "Task Vaulted"], "{:#?}", outcome.events);
    let vaulted = &outcome.events[1]["detail"];
    assert_eq!(vaulted["event_id"], format!("{task}.vaulted.1.final"));
    assert_eq!((vaulted["vault"].as_str(), vaulted["files"].as_array().map(Vec::len)), (Some("complete"), Some(12)));
    assert!(demo::report(&outcome).contains(&format!("Task Vaulted {task} stage=")), "the report shows them");
    // ... and `make run` prints each one as a line.
    let lines = lines_until(&mut log, &format!("Task Vaulted {task} ")).await;
    assert!(lines.iter().any(|l| l.starts_with(&format!("event: Task Stage Changed {task} "))), "{lines:#?}");

    assert_eq!(outcome.vault, "complete");
    let expected = fixture_stems();
    assert_eq!(expected.len(), 12);
    let mut rows = outcome.files.clone();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );
    for (row, (name, file)) in rows.iter().zip(&expected) {
        let audio = stemvault_local::audio::stem_mp3(file);
        assert_eq!(row.status, "stored", "{name}: {:?}", row.error);
        assert_eq!(row.bytes, Some(audio.len() as u64), "{name}");
        assert_eq!(row.sha256.as_deref(), Some(hex::encode(sha2::Sha256::digest(&audio)).as_str()), "{name}");
        assert_eq!(row.key, format!("tasks/{}/{name}.mp3", outcome.task_id));
        let object = target.s3.get_object().bucket(&target.bucket).key(&row.key).send().await.expect("stored object");
        let stored = object.body.collect().await.unwrap().into_bytes();
        assert!(stored.as_ref() == audio.as_slice(), "{name}: stored bytes differ from the served ones");
    }

    assert_eq!(outcome.manifest["task_id"], outcome.task_id.as_str());
    assert_eq!(outcome.manifest["vault"], "complete");
    let manifest_files = outcome.manifest["files"].as_array().expect("manifest files");
    assert_eq!(manifest_files.len(), 12);
    assert!(manifest_files.iter().all(|f| f["status"] == "stored"), "{manifest_files:?}");

    files.stop();
    file_server.await.unwrap();
    tokio::time::timeout(STOPS_WITHIN, pipeline.stop()).await.expect("the pipeline stops");
}

/// `ALLOW_UNAUTHENTICATED=true` is the runner's to set (the ingest function reads no such
/// variable): its pipeline's ingest then accepts an unsigned callback, and a value neither
/// `true` nor `false` stops the runner at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_callbacks_are_the_runners_to_allow() {
    stemvault_aws::logging::init();
    let with = |value: &'static str| {
        move |name: &str| if name == "ALLOW_UNAUTHENTICATED" { Some(value.to_owned()) } else { test_env(name) }
    };
    let WithFiles { pipeline, file_origin, files, file_server } = WithFiles::start(with("true")).await;
    assert!(pipeline.generated_key.is_none(), "no key generated: callbacks allowed unauthenticated");
    let unsigned = post_unsigned(&pipeline, &file_origin).await;
    assert_eq!(unsigned.status().as_u16(), 200);
    // Stopped while its files are served: the copies under way end.
    tokio::time::timeout(STOPS_WITHIN, pipeline.stop()).await.expect("the pipeline stops");
    files.stop();
    file_server.await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let options = PipelineOptions { base, listener, file_server_origin: file_origin, pollers: 1, print_events: false };
    let refused = Pipeline::start(options, with("yes")).await.err().expect("refused at start");
    assert!(refused.to_string().contains("ALLOW_UNAUTHENTICATED"), "{refused}");
}

/// `make demo`'s second part: a task registered with `PUT /tasks/<id>` and never called back
/// is vaulted by the reconciler from the runner's built-in fake provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_recovers_a_registered_task_through_the_reconciler_and_the_fake_provider() {
    stemvault_aws::logging::init();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let options = PipelineOptions {
        base,
        listener,
        file_server_origin: "http://127.0.0.1:9".into(),
        pollers: 2,
        print_events: false,
    };
    let pipeline = Pipeline::start(options, test_env).await.expect("start the pipeline");
    let fake = pipeline.info.fake_provider.clone().expect("no PROVIDER_BASE_URL: the built-in fake provider");
    assert!(pipeline.allowed_source_hosts.ends_with(&format!(",{fake}")), "{}", pipeline.allowed_source_hosts);
    let target = DemoTarget::from_run_info(&pipeline.info).await;

    let outcome = demo::run_recovery(&target, &fake, Duration::from_secs(90)).await.expect("the task is recovered");
    println!("{}", demo::report(&outcome));
    assert_eq!(outcome.vault, "complete");
    let mut names: Vec<&str> = outcome.files.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["instrumental", "vocal"]);
    assert!(outcome.files.iter().all(|r| r.status == "stored"), "{:?}", outcome.files);
    assert_eq!(outcome.manifest["vault"], "complete");
    assert_eq!(kinds(&outcome.events), ["Task Stage Changed", "Task Vaulted"], "{:#?}", outcome.events);
    assert_eq!(outcome.events[0]["detail"]["client_ref"], "make-demo");
    assert_eq!(outcome.events[1]["detail"]["vault"], "complete");

    tokio::time::timeout(STOPS_WITHIN, pipeline.stop()).await.expect("the pipeline stops");
}

/// What the webhook receiver saw of one POST.
#[derive(Debug, Clone)]
struct Webhook {
    path: String,
    headers: std::collections::BTreeMap<String, String>,
    body: String,
}

/// A local webhook receiver: records every request, answers 204.
#[derive(Default)]
struct Receiver {
    seen: std::sync::Mutex<Vec<Webhook>>,
}

impl stemvault_local::http::LambdaHttp for Receiver {
    async fn call(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        let headers = req
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = String::from_utf8_lossy(req.body()).into_owned();
        self.seen.lock().unwrap().push(Webhook { path: req.uri().path().to_owned(), headers, body });
        lambda_http::Response::builder().status(204).body(lambda_http::Body::Empty).unwrap()
    }
}

/// Verify a Standard Webhooks signature from the specification, independently of the
/// notify function's signing code: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the
/// secret's bytes.
fn verifies(secret: &str, hook: &Webhook) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!("{}.{}.{}", hook.headers["webhook-id"], hook.headers["webhook-timestamp"], hook.body).as_bytes(),
    );
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    hook.headers["webhook-signature"].split(' ').any(|s| s == expected)
}

/// `NOTIFY_URL=http://127.0.0.1:<port>/hooks make run`: the demo task's events arrive at a
/// local receiver as signed webhooks, through the runner's rule on its bus and the notify queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_notify_url_the_demo_tasks_events_arrive_as_signed_webhooks() {
    use base64::Engine;
    stemvault_aws::logging::init();
    let receiver_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/hooks", receiver_listener.local_addr().unwrap());
    let receiver = std::sync::Arc::new(Receiver::default());
    let receiving = Shutdown::new();
    let served =
        tokio::spawn(stemvault_local::http::serve_lambda(receiver_listener, receiver.clone(), receiving.signal()));
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2))
    );
    let env = {
        let (notify_url, secret) = (notify_url.clone(), secret.clone());
        move |name: &str| match name {
            "NOTIFY_URL" => Some(notify_url.clone()),
            "NOTIFY_SECRET" => Some(secret.clone()),
            _ => test_env(name),
        }
    };

    let WithFiles { pipeline, file_origin, files, file_server } = WithFiles::start(env).await;
    assert_eq!(pipeline.notify.as_ref().map(|n| n.notify_url.as_str()), Some(notify_url.as_str()));
    assert!(pipeline.notify.as_ref().unwrap().generated_secret.is_none(), "NOTIFY_SECRET is used");
    // The notify queue as the template makes it, not the download queue's settings.
    let notify = pipeline.notify.as_ref().unwrap();
    let sqs = aws_sdk_sqs::Client::new(&stemvault_aws::sdk_config().await);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&notify.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy]).unwrap();
    let receives = stemvault_notify::domain::MAX_RECEIVE_COUNT.to_string();
    assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), receives);
    assert_eq!(attributes[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout], "360");
    let target = DemoTarget::from_run_info(&pipeline.info).await;

    let outcome = demo::run(&target, &file_origin, Duration::from_secs(90)).await.expect("the demo completes");
    assert_eq!(outcome.vault, "complete");
    let task = outcome.task_id.clone();
    let vaulted_id = format!("{task}.vaulted.1.final");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Both events: notify posts a batch's messages at once, so the stage's may come second.
    let stage_changed = |h: &Webhook| {
        h.headers.get("webhook-id").is_some_and(|id| id.starts_with(&task))
            && serde_json::from_str::<serde_json::Value>(&h.body).is_ok_and(|b| b["type"] == "task.stage_changed")
    };
    let hooks = loop {
        let hooks: Vec<Webhook> = receiver.seen.lock().unwrap().clone();
        if hooks.iter().any(|h| h.headers.get("webhook-id") == Some(&vaulted_id)) && hooks.iter().any(stage_changed) {
            break hooks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {vaulted_id} and stage-changed webhooks within 30 s; received {hooks:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mine: Vec<&Webhook> = hooks.iter().filter(|h| h.headers["webhook-id"].starts_with(&task)).collect();
    let mut types: Vec<String> = mine
        .iter()
        .map(|h| {
            assert_eq!(h.path, "/hooks");
            assert_eq!(h.headers["content-type"], "application/json");
            assert!(verifies(&secret, h), "the signature verifies: {h:#?}");
            let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
            assert_eq!(body["data"]["event_id"], h.headers["webhook-id"].as_str());
            assert_eq!(body["data"]["task_id"], task.as_str());
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    types.sort();
    types.dedup();
    assert_eq!(types, ["task.stage_changed", "task.vaulted"]);
    let vaulted = mine.iter().find(|h| h.headers["webhook-id"] == vaulted_id).unwrap();
    let body: serde_json::Value = serde_json::from_str(&vaulted.body).unwrap();
    assert_eq!(body["data"]["vault"], "complete");
    assert_eq!(body["data"]["files"].as_array().map(Vec::len), Some(12));

    files.stop();
    file_server.await.unwrap();
    tokio::time::timeout(STOPS_WITHIN, pipeline.stop()).await.expect("the pipeline stops");
    receiving.stop();
    served.await.unwrap();
}
