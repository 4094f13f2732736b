//! Issue 11 part 6 against the emulator: a download message on its last receive
//! (`ApproximateReceiveCount` at the queue's `maxReceiveCount`) that fails again, retryably,
//! records its file `failed` with reason `dead_lettered` and stays a batch item failure (so
//! SQS moves it to the dead-letter queue); the task settles `partial`, and GET /tasks/{id}
//! shows why.

use std::time::{Duration, Instant};

use lambda_http::Body;
use lambda_http::http::StatusCode;
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_tests::file_server::{FileServer, Reply};
use stemvault_vault::download::MAX_RECEIVE_COUNT;
use stemvault_vault::{FileStatus, VaultState};
use suno_callbacks::Family;

#[tokio::test]
async fn a_file_failing_on_its_last_receive_is_recorded_dead_lettered_and_the_task_settles_partial() {
    let env = TestEnv::new().await;
    let server = FileServer::start().await;
    server.route("/vocal.mp3", Reply::Status(503));
    server.route("/drums.mp3", Reply::bytes(&b"drum bytes"[..], "audio/mpeg"));
    let task = uuid::Uuid::new_v4().simple().to_string();
    let record = queued_record(
        &task,
        Family::VocalSeparation,
        &[("vocal", &server.url("/vocal.mp3")), ("drums", &server.url("/drums.mp3"))],
    );
    env.put_record(&record).await;
    env.send_jobs(&[job_of(&record, "vocal"), job_of(&record, "drums")]).await;
    let app = env.download_app(&server.origin(), None).await;

    let mut event = env.receive_event(2, 60).await;
    // As SQS says it on the last receive before the dead-letter queue.
    for message in &mut event.records {
        message.attributes.insert("ApproximateReceiveCount".into(), MAX_RECEIVE_COUNT.to_string());
    }
    let response = app.handle_batch(event.clone(), Instant::now() + Duration::from_secs(60)).await;
    let vocal_message = event.records.iter().find(|m| m.body.as_deref().unwrap().contains("\"vocal\"")).unwrap();
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, [vocal_message.message_id.as_deref().unwrap()], "the vocal message goes on to the DLQ");
    env.finish_batch(&event, &response).await;

    let after = env.task_record(&task).await;
    let vocal = &after.files["vocal"];
    let reason =
        format!("dead_lettered: source answered 503 Service Unavailable (receive {MAX_RECEIVE_COUNT}, the last)");
    assert_eq!((vocal.status, vocal.error.as_deref()), (FileStatus::Failed, Some(reason.as_str())));
    assert_eq!(after.files["drums"].status, FileStatus::Stored);
    assert_eq!(after.vault, VaultState::Partial);
    assert!(after.manifest_key.is_some());

    // GET /tasks/{id} shows it.
    let results = env.results_app(Duration::from_secs(60));
    let request =
        lambda_http::http::Request::builder().method("GET").uri(format!("/tasks/{task}")).body(Body::Empty).unwrap();
    let response = results.handle(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["vault"], "partial");
    let files = body["files"].as_array().unwrap();
    let shown = files.iter().find(|f| f["name"] == "vocal").unwrap();
    assert_eq!((shown["status"].as_str(), shown["error"].as_str()), (Some("failed"), Some(reason.as_str())));
    assert_eq!(shown["error_code"], "dead_lettered", "the code a program matches on");
}
