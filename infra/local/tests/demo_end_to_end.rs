//! `make demo` in one process: the runner's pipeline (the real ingest, results and download
//! `App`s) against the emulator, the demo file server, and the demo client posting the
//! 12-stem `split_stem` callback. Run under `infra/local/emulator.sh` (make test does).

use std::time::Duration;

use sha2::Digest;
use stemvault_local::demo::{self, DemoTarget};
use stemvault_local::pipeline::{Pipeline, PipelineOptions};
use stemvault_local::shutdown::Shutdown;
use tokio::net::TcpListener;

/// The process environment without the settings a developer may have exported, so the
/// runner's first-run defaults (generated key, file server origin) are what is tested.
fn test_env(name: &str) -> Option<String> {
    match name {
        "WEBHOOK_HMAC_KEYS" | "CALLBACK_TOKEN" | "ALLOW_UNAUTHENTICATED" | "ALLOWED_SOURCE_HOSTS" | "PORT" => None,
        _ => std::env::var(name).ok(),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_callback_stores_all_twelve_stems_and_the_manifest() {
    stemvault_aws::logging::init();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file_origin = format!("http://{}", file_listener.local_addr().unwrap());
    let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let options = PipelineOptions { base, listener, file_server_origin: file_origin.clone(), pollers: 2 };
    let pipeline = Pipeline::start(options, test_env).await.expect("start the pipeline");
    assert!(pipeline.generated_key.is_some(), "no auth configured: a development key is generated");
    assert!(pipeline.allowed_source_hosts.split(',').any(|h| h == file_origin), "{}", pipeline.allowed_source_hosts);
    let files = Shutdown::new();
    let file_server = tokio::spawn(stemvault_local::file_server::serve(file_listener, files.signal()));
    let target = DemoTarget::from_run_info(&pipeline.info).await;

    // The generated key is enforced: an unsigned callback is refused.
    let unsigned = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/callback", pipeline.info.base_url))
        .body(demo::demo_callback(demo::fixture(), &demo::fresh_task_id(), &file_origin).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    let outcome = demo::run(&target, &file_origin, Duration::from_secs(90)).await.expect("the demo completes");
    println!("{}", demo::report(&outcome));

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
    tokio::time::timeout(Duration::from_secs(15), pipeline.stop()).await.expect("the pipeline stops promptly");
}

/// `make demo`'s second part: a task registered with `PUT /tasks/<id>` and never called back
/// is vaulted by the reconciler from the runner's built-in fake provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_recovers_a_registered_task_through_the_reconciler_and_the_fake_provider() {
    stemvault_aws::logging::init();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let options = PipelineOptions { base, listener, file_server_origin: "http://127.0.0.1:9".into(), pollers: 2 };
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

    tokio::time::timeout(Duration::from_secs(15), pipeline.stop()).await.expect("the pipeline stops promptly");
}
