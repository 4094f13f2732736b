//! The results function against the emulator: a recorded task answers with its files, and the
//! presigned link of a stored file fetches its bytes with a plain HTTP GET.

use std::collections::BTreeMap;
use std::time::Duration;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use stemvault_aws::TaskTable;
use stemvault_results::{App, Config};
use stemvault_tests::TestEnv;
use stemvault_vault::{FileEntry, FileStatus, TaskRecord, Timestamp, VaultState};
use suno_callbacks::{Family, Stage};

fn get(path: &str) -> Request {
    lambda_http::http::Request::builder().method("GET").uri(path).body(Body::Empty).unwrap()
}

fn json(response: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON body")
}

fn app(env: &TestEnv, expiry_seconds: u64) -> App {
    let config = Config {
        table_name: env.resources.table_name.clone(),
        bucket_name: env.resources.bucket_name.clone(),
        download_url_expiry: Duration::from_secs(expiry_seconds),
        reconcile_after: Duration::from_secs(600),
    };
    App::new(config, &env.config)
}

fn record(task_id: &str, files: BTreeMap<String, FileEntry>) -> TaskRecord {
    TaskRecord {
        files,
        vault: VaultState::Pending,
        ..TaskRecord::new(
            task_id,
            Family::VocalSeparation,
            Stage::Complete,
            200,
            "vocal separation done",
            Timestamp::now(),
        )
    }
}

#[tokio::test]
async fn recorded_task_answers_with_working_download_links() {
    let env = TestEnv::new().await;
    let task_id = "5c79****be8e";
    let stored_key = format!("tasks/{task_id}/vocal.mp3");
    let audio = b"ID3 not really an mp3, but bytes that must come back unchanged".to_vec();
    env.s3
        .put_object()
        .bucket(&env.resources.bucket_name)
        .key(&stored_key)
        .body(audio.clone().into())
        .content_type("audio/mpeg")
        .send()
        .await
        .unwrap();

    let stored = FileEntry {
        status: FileStatus::Stored,
        bytes: Some(audio.len() as u64),
        sha256: Some("0f".repeat(32)),
        content_type: Some("audio/mpeg".into()),
        ..FileEntry::pending("https://cdn.example/vocal.mp3", stored_key.clone(), Stage::Complete)
    };
    let queued = FileEntry {
        status: FileStatus::Queued,
        ..FileEntry::pending(
            "https://cdn.example/instrumental.mp3",
            format!("tasks/{task_id}/instrumental.mp3"),
            Stage::Complete,
        )
    };
    let files = BTreeMap::from([("instrumental".to_owned(), queued), ("vocal".to_owned(), stored)]);
    // As ingest writes it: the task item, then an item per file.
    let table = TaskTable::new(env.dynamo.clone(), &env.resources.table_name);
    table.save(None, &record(task_id, files)).await.unwrap();

    // `*` percent-encoded, as some clients send it.
    let response = app(&env, 300).handle(get("/tasks/5c79%2A%2A%2A%2Abe8e")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(&response);
    assert_eq!(body["task_id"], task_id);
    assert_eq!(body["family"], "vocal_separation");
    assert_eq!(body["stage"], "complete");
    assert_eq!(body["code"], 200);
    assert_eq!(body["message"], "vocal separation done");
    assert_eq!(body["vault"], "pending");

    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    // The manifest's fields, the link and the attempts, nothing else of the item's bookkeeping
    // (url, claim, rev, ...).
    for file in files {
        let mut fields: Vec<&str> = file.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "attempts",
                "bytes",
                "content_type",
                "download_url",
                "error",
                "error_code",
                "key",
                "last_attempt_error",
                "name",
                "sha256",
                "status"
            ]
        );
    }
    assert_eq!(files[0]["name"], "instrumental");
    assert_eq!(files[0]["status"], "pending");
    assert_eq!(files[0]["download_url"], serde_json::Value::Null);
    assert_eq!(files[1]["name"], "vocal");
    assert_eq!(files[1]["status"], "stored");
    assert_eq!(files[1]["key"], stored_key);
    assert_eq!(files[1]["bytes"], audio.len() as u64);
    assert_eq!(files[1]["content_type"], "audio/mpeg");

    let url = files[1]["download_url"].as_str().expect("stored file has a link");
    assert!(url.contains("X-Amz-Expires=300"), "expiry not applied: {url}");
    let download = reqwest::get(url).await.unwrap();
    assert_eq!(download.status(), 200);
    // The key after `tasks/`, all but letters, digits, `.`, `-` and `_` made `_` (this id's `*` too).
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"5c79____be8e_vocal.mp3\"",
        "a browser saves it rather than render it"
    );
    assert_eq!(download.bytes().await.unwrap().to_vec(), audio);
}

#[tokio::test]
async fn unknown_task_is_404_and_invalid_id_is_400() {
    let env = TestEnv::new().await;
    let app = app(&env, 60);

    let response = app.handle(get("/tasks/never-seen")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(&response)["error"], "task_not_found");

    let response = app.handle(get("/tasks/..")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(&response)["error"], "invalid_task_id");
}

/// A task the table does not know but whose callback ingest parked is 202 `parked`: the
/// ListObjectsV2 of its own `parked/<task_id>/` prefix (another task's id that starts the
/// same is not it).
#[tokio::test]
async fn a_task_known_only_by_a_parked_callback_is_202() {
    let env = TestEnv::new().await;
    let app = app(&env, 60);
    let key = format!("parked/waiting-task/final-{}.json", "ab".repeat(32));
    env.s3
        .put_object()
        .bucket(&env.resources.bucket_name)
        .key(key)
        .body(b"{}".to_vec().into())
        .send()
        .await
        .expect("a parked body");

    let response = app.handle(get("/tasks/waiting-task")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json(&response)["status"], "parked");
    let response = app.handle(get("/tasks/waiting")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// `PUT /tasks/{task_id}` with `body`: a registration.
fn put(task_id: &str, body: String) -> Request {
    lambda_http::http::Request::builder().method("PUT").uri(format!("/tasks/{task_id}")).body(Body::Text(body)).unwrap()
}

/// The file `vocal` of `task_id` a callback brought, in `status`.
fn vocal(task_id: &str, status: FileStatus) -> FileEntry {
    FileEntry {
        status,
        ..FileEntry::pending("https://cdn.example/vocal.mp3", format!("tasks/{task_id}/vocal.mp3"), Stage::Complete)
    }
}

/// A task a callback recorded before its registration takes the registration's client_ref
/// (one PutItem conditional on the task item's version, through the real table), and keeps
/// its files; a second registration with another client_ref is then refused (409).
#[tokio::test]
async fn a_registration_after_the_callback_adds_its_client_ref() {
    let env = TestEnv::new().await;
    let task_id = "called0back0first";
    let queued = vocal(task_id, FileStatus::Queued);
    let table = TaskTable::new(env.dynamo.clone(), &env.resources.table_name);
    table.save(None, &record(task_id, BTreeMap::from([("vocal".to_owned(), queued)]))).await.unwrap();
    let version = table.load(task_id).await.unwrap().expect("recorded").version;

    let register =
        |client_ref: &str| put(task_id, format!(r#"{{"family":"vocal_separation","client_ref":"{client_ref}"}}"#));
    let app = app(&env, 300);
    let response = app.handle(register("order-17")).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    assert_eq!(json(&response)["client_ref"], "order-17");
    let recorded = table.load(task_id).await.unwrap().expect("recorded");
    assert_eq!((recorded.client_ref.as_deref(), recorded.version), (Some("order-17"), version + 1));
    assert_eq!((recorded.stage, recorded.files.len()), (Stage::Complete, 1), "the callback's record kept");
    assert_eq!(recorded.files["vocal"].status, FileStatus::Queued, "its queued mark untouched");

    let response = app.handle(register("order-18")).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "{}", json(&response));
    assert_eq!(table.load(task_id).await.unwrap().unwrap().client_ref.as_deref(), Some("order-17"));
}

/// A task the callbacks could not give a family, one of its files failed by an expired URL,
/// is not watched; a registration naming its family starts watching it (the reconciler can
/// then poll for a fresh URL), through the real table.
#[tokio::test]
async fn a_registration_giving_a_family_watches_a_task_with_an_expired_file() {
    let env = TestEnv::new().await;
    let task_id = "unknown0family0expired";
    let expired =
        FileEntry { error: Some("source answered 403 Forbidden".into()), ..vocal(task_id, FileStatus::Failed) };
    let table = TaskTable::new(env.dynamo.clone(), &env.resources.table_name);
    let called_back = TaskRecord {
        family: Family::Unknown,
        vault: VaultState::Partial,
        ..record(task_id, BTreeMap::from([("vocal".to_owned(), expired)]))
    };
    table.save(None, &called_back).await.unwrap();
    assert_eq!(table.load(task_id).await.unwrap().expect("recorded").reconcile, None);

    let response = app(&env, 300).handle(put(task_id, r#"{"family":"vocal_separation"}"#.into())).await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json(&response));
    let recorded = table.load(task_id).await.unwrap().expect("recorded");
    assert_eq!((recorded.family, recorded.reconcile.as_deref()), (Family::VocalSeparation, Some("due")));
    assert!(recorded.reconcile_at.is_some(), "{recorded:?}");
}
