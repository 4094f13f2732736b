//! `make demo`: post the documented 12-stem `split_stem` callback, its URLs pointed at the
//! local file server, under a fresh task id; wait for the vault; show the files, the manifest
//! and the task's events (from a queue of the demo's own subscribed to the runner's bus).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client_auth::ClientAuth;
use crate::events::EventWatch;
use crate::run_info::RunInfo;
use stemvault_aws::sdk_error::sdk_error_text;

/// The documented body, from the repository's `fixtures/callbacks/`, built into the binary.
const FIXTURE: &str = include_str!("../../../fixtures/callbacks/separate-vocals__seed-000__200-split_stem.json");
/// The provider's file host in the fixture.
pub const PROVIDER_FILE_ORIGIN: &str = "https://file.aiquickdraw.com";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The longest pause between two looks at a task: the recovered task waits for the
/// reconciler's next run (every 15 s), and each look is two lines in `make run`'s log.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long after the vault settles the demo waits for its `Task Vaulted` event (published
/// before the settle: normally already there).
pub const EVENTS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo fixture is not a callback body: {0}")]
    Fixture(String),
    #[error("could not reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the callback was refused: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the results endpoint answered HTTP {status}: {body}")]
    Results { status: u16, body: String },
    #[error("the vault did not settle within {seconds} s; last answer: {last}")]
    Timeout { seconds: u64, last: String },
    #[error("the reconciler gave the task up: {0}")]
    GivenUp(String),
    #[error("the manifest {key} could not be read: {message}")]
    Manifest { key: String, message: String },
}

/// The files of the documented `split_stem` callback the demo posts ([`fixture`]).
pub const STEMS: usize = 12;

/// The files of the documented vocal separation result the fake provider answers the
/// recovery demo's polls with: the vocal and the instrumental.
pub const RECOVERED_FILES: usize = 2;

/// The documented 12-stem `split_stem` callback body.
pub fn fixture() -> &'static str {
    FIXTURE
}

/// The task id of a callback body, looked up where the families put it.
fn task_id_of(body: &Value) -> Option<&str> {
    [&body["data"]["task_id"], &body["data"]["taskId"], &body["task_id"], &body["taskId"]]
        .into_iter()
        .find_map(Value::as_str)
}

/// Rewrite every string: the provider's file URLs to `file_origin`, the task id to `task_id`.
fn rewrite(value: &mut Value, old_task_id: &str, task_id: &str, file_origin: &str) {
    match value {
        Value::String(s) if s == old_task_id => *s = task_id.to_owned(),
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(PROVIDER_FILE_ORIGIN).filter(|rest| rest.starts_with('/')) {
                *s = format!("{file_origin}{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, old_task_id, task_id, file_origin)),
        Value::Object(map) => map.values_mut().for_each(|v| rewrite(v, old_task_id, task_id, file_origin)),
        _ => {}
    }
}

/// The demo body: `fixture` under `task_id`, its files served from `file_origin`.
pub fn demo_callback(fixture: &str, task_id: &str, file_origin: &str) -> Result<String, DemoError> {
    let mut body: Value = serde_json::from_str(fixture).map_err(|e| DemoError::Fixture(e.to_string()))?;
    let old = task_id_of(&body).ok_or_else(|| DemoError::Fixture("no task id".into()))?.to_owned();
    rewrite(&mut body, &old, task_id, file_origin);
    serde_json::to_string_pretty(&body).map_err(|e| DemoError::Fixture(e.to_string()))
}

/// A fresh task id shaped like the provider's (32 hex digits).
pub fn fresh_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One file as the results endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub name: String,
    pub status: String,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub key: String,
    pub error: Option<String>,
}

/// The files of a results answer (a list of objects with `name`, or an object keyed by name).
pub fn file_rows(task: &Value) -> Vec<FileRow> {
    let row = |name: &str, f: &Value| FileRow {
        name: name.to_owned(),
        status: f["status"].as_str().unwrap_or("?").to_owned(),
        bytes: f["bytes"].as_u64(),
        sha256: f["sha256"].as_str().map(str::to_owned),
        key: f["key"].as_str().unwrap_or_default().to_owned(),
        error: f["error"].as_str().map(str::to_owned),
    };
    match &task["files"] {
        Value::Array(files) => files.iter().map(|f| row(f["name"].as_str().unwrap_or("?"), f)).collect(),
        Value::Object(files) => files.iter().map(|(name, f)| row(name, f)).collect(),
        _ => Vec::new(),
    }
}

/// A plain-text table of the files.
pub fn files_table(rows: &[FileRow]) -> String {
    let width = |f: fn(&FileRow) -> usize, header: &str| rows.iter().map(f).max().unwrap_or(0).max(header.len());
    let name_w = width(|r| r.name.len(), "name");
    let status_w = width(|r| r.status.len(), "status");
    let mut out = format!("{:<name_w$}  {:<status_w$}  {:>9}  {:<12}  key\n", "name", "status", "bytes", "sha256");
    for r in rows {
        let bytes = r.bytes.map_or_else(|| "-".to_owned(), |b| b.to_string());
        let sha = r.sha256.as_deref().map_or("-", |s| &s[..s.len().min(12)]);
        let _ = writeln!(out, "{:<name_w$}  {:<status_w$}  {bytes:>9}  {sha:<12}  {}", r.name, r.status, r.key);
        if let Some(error) = r.error.as_deref().filter(|_| r.status == "failed") {
            let _ = writeln!(out, "{:<name_w$}  error: {error}", "");
        }
    }
    out
}

/// Where the demo sends its callback and reads the vault.
pub struct DemoTarget {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    pub auth: ClientAuth,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    /// The runner's built-in fake provider, when its reconciler polls one.
    pub fake_provider: Option<String>,
    /// The emulator, and the runner's event bus (a runner that did not say: no events shown).
    pub sdk: aws_config::SdkConfig,
    pub event_bus: Option<String>,
}

impl DemoTarget {
    /// The endpoint and bucket a runner described in its [`RunInfo`]. The emulator accepts
    /// any credentials, so none are needed from the environment.
    pub async fn from_run_info(info: &RunInfo) -> DemoTarget {
        let mut loader = aws_config::defaults(stemvault_aws::behavior_version()).credentials_provider(
            aws_sdk_s3::config::Credentials::new("local", "local", None, None, "stemvault-local"),
        );
        if let Some(endpoint) = &info.aws_endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let region = info.aws_region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        let sdk = loader.region(aws_config::Region::new(region)).load().await;
        // The emulator has no virtual-host DNS.
        let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build();
        DemoTarget {
            base_url: info.base_url.clone(),
            auth: info.auth.clone(),
            s3: aws_sdk_s3::Client::from_conf(s3),
            bucket: info.bucket_name.clone(),
            fake_provider: info.fake_provider.clone(),
            sdk,
            event_bus: info.event_bus_name.clone(),
        }
    }

    /// A subscription to the runner's bus, made before posting (None: no bus, or it failed,
    /// said once: the demo goes on without events).
    async fn watch_events(&self) -> Option<EventWatch> {
        let bus = self.event_bus.as_deref()?;
        match EventWatch::subscribe(&self.sdk, bus).await {
            Ok(watch) => Some(watch),
            Err(e) => {
                println!("(not showing events: subscribing to {bus} failed: {e})");
                None
            }
        }
    }
}

/// The task's events once its `Task Vaulted` came (or [`EVENTS_TIMEOUT`]); the watch removed.
async fn events_of(watch: Option<EventWatch>, task_id: &str) -> Vec<Value> {
    let Some(mut watch) = watch else { return Vec::new() };
    let events = watch.until(task_id, "Task Vaulted", EVENTS_TIMEOUT).await;
    watch.remove().await;
    events
}

#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub task_id: String,
    /// `complete` or `partial`.
    pub vault: String,
    pub files: Vec<FileRow>,
    pub manifest_key: String,
    pub manifest: Value,
    /// The task's events from the bus (EventBridge's envelope, `detail`), once each.
    pub events: Vec<Value>,
    /// Whether the demo subscribed to the bus (false: no bus known, or subscribing failed).
    pub events_watched: bool,
}

impl DemoOutcome {
    /// What the demo proves, or why it did not: the vault `complete` with `files` files, all
    /// stored, and, when the bus was watched, the task's `Task Vaulted` seen on it.
    pub fn check(&self, files: usize) -> Result<(), String> {
        let task = &self.task_id;
        if self.vault != "complete" {
            return Err(format!("the vault of task {task} is {}: see the failed files above", self.vault));
        }
        let stored = self.files.iter().filter(|f| f.status == "stored").count();
        if (self.files.len(), stored) != (files, files) {
            return Err(format!(
                "task {task} lists {} files, {stored} stored, where {files} were sent",
                self.files.len()
            ));
        }
        let vaulted = self.events.iter().any(|e| e["detail-type"] == "Task Vaulted");
        if self.events_watched && !vaulted {
            return Err(format!("no Task Vaulted event of task {task} reached the bus within {EVENTS_TIMEOUT:?}"));
        }
        Ok(())
    }
}

fn client() -> reqwest::Client {
    // Local only: never through a proxy from the environment.
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

fn unreachable(url: &str) -> impl FnOnce(reqwest::Error) -> DemoError + '_ {
    // Without the URL reqwest's text adds: it would show the callback token.
    move |e| DemoError::Unreachable { url: url.to_owned(), message: stemvault_aws::http::describe(e) }
}

/// Post the demo callback and wait (up to `timeout`) until its vault settles; its events.
pub async fn run(target: &DemoTarget, file_origin: &str, timeout: Duration) -> Result<DemoOutcome, DemoError> {
    let watch = target.watch_events().await;
    with_events(watch, post_and_wait(target, file_origin, timeout).await).await
}

/// The outcome with its task's events; the watch removed either way.
async fn with_events(
    watch: Option<EventWatch>,
    outcome: Result<DemoOutcome, DemoError>,
) -> Result<DemoOutcome, DemoError> {
    match outcome {
        Ok(mut outcome) => {
            outcome.events_watched = watch.is_some();
            outcome.events = events_of(watch, &outcome.task_id).await;
            Ok(outcome)
        }
        Err(e) => {
            if let Some(watch) = watch {
                watch.remove().await;
            }
            Err(e)
        }
    }
}

async fn post_and_wait(target: &DemoTarget, file_origin: &str, timeout: Duration) -> Result<DemoOutcome, DemoError> {
    let http = client();
    let task_id = fresh_task_id();
    let body = demo_callback(fixture(), &task_id, file_origin)?;
    let callback_url = target.auth.callback_url(&target.base_url);
    let mut request = http.post(&callback_url).header("content-type", "application/json").body(body);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for (name, value) in target.auth.headers(&task_id, now) {
        request = request.header(name, value);
    }
    let masked_url = target.auth.callback_url_masked(&target.base_url);
    println!("POST {masked_url}  (task {task_id}, 12 stems from {file_origin})");
    let response = request.send().await.map_err(unreachable(&masked_url))?;
    let status = response.status().as_u16();
    let answer = response.text().await.unwrap_or_default();
    println!("  -> HTTP {status} {answer}");
    if !(200..300).contains(&status) {
        return Err(DemoError::Refused { status, body: answer });
    }

    let task = wait_for_vault(&http, &target.base_url, &task_id, timeout).await?;
    let vault = task["vault"].as_str().unwrap_or_default().to_owned();
    let files = file_rows(&task);
    let manifest_key = format!("tasks/{task_id}/manifest.json");
    let manifest = read_manifest(target, &manifest_key).await?;
    Ok(DemoOutcome { task_id, vault, files, manifest_key, manifest, events: Vec::new(), events_watched: false })
}

/// How long the recovery demo waits: the first poll comes `RECONCILE_AFTER_SECONDS` (5 s
/// locally) after the registration, at the reconciler's next run (every 15 s).
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// A task recovered by the reconciler: registered with `PUT /tasks/<id>`, no callback ever
/// sent; the runner's fake provider answers its poll with the documented vocal separation
/// result, and the vault fills from it. Its events too.
pub async fn run_recovery(
    target: &DemoTarget,
    fake_provider: &str,
    timeout: Duration,
) -> Result<DemoOutcome, DemoError> {
    let watch = target.watch_events().await;
    with_events(watch, register_and_wait(target, fake_provider, timeout).await).await
}

async fn register_and_wait(
    target: &DemoTarget,
    fake_provider: &str,
    timeout: Duration,
) -> Result<DemoOutcome, DemoError> {
    let http = client();
    let task_id = fresh_task_id();
    let script_url = format!("{fake_provider}/fake/tasks/{task_id}");
    let script = serde_json::json!({"family": "vocal_separation", "script": ["success"]});
    let response = http
        .put(&script_url)
        .header("content-type", "application/json")
        .body(script.to_string())
        .send()
        .await
        .map_err(unreachable(&script_url))?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Err(DemoError::Refused { status, body: response.text().await.unwrap_or_default() });
    }
    let url = format!("{}/tasks/{task_id}", target.base_url);
    println!("\nPUT {url}  (registered; no callback will come: the fake provider {fake_provider} knows the result)");
    let body = serde_json::json!({"family": "vocal_separation", "client_ref": "make-demo"});
    let response = http
        .put(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(unreachable(&url))?;
    let status = response.status().as_u16();
    let answer = response.text().await.unwrap_or_default();
    println!("  -> HTTP {status} {answer}");
    if status != 201 {
        return Err(DemoError::Refused { status, body: answer });
    }
    println!("  waiting for the reconciler to poll the provider ...");
    let task = wait_for_vault(&http, &target.base_url, &task_id, timeout).await?;
    let vault = task["vault"].as_str().unwrap_or_default().to_owned();
    let files = file_rows(&task);
    let manifest_key = format!("tasks/{task_id}/manifest.json");
    let manifest = read_manifest(target, &manifest_key).await?;
    Ok(DemoOutcome { task_id, vault, files, manifest_key, manifest, events: Vec::new(), events_watched: false })
}

/// Poll `GET /tasks/<task_id>` as README's "Polling" says, until the answer says `done` (its
/// final result vaulted, nothing more to come; or given up): each stage is vaulted on its
/// own, so a music task's `first` reads `complete` with its first track alone. A 404 (not
/// recorded yet), a 202 (parked) or a 503 is asked again, after its `Retry-After` if longer.
async fn wait_for_vault(
    http: &reqwest::Client,
    base_url: &str,
    task_id: &str,
    timeout: Duration,
) -> Result<Value, DemoError> {
    let url = format!("{base_url}/tasks/{task_id}");
    let started = Instant::now();
    let mut last_progress = String::new();
    let mut pause = POLL_INTERVAL;
    loop {
        let response = http.get(&url).send().await.map_err(unreachable(&url))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| stemvault_aws::http::retry_after(v.to_str().ok()?, std::time::SystemTime::now()));
        let text = response.text().await.unwrap_or_default();
        if !matches!(status, 200 | 202 | 404 | 503) {
            return Err(DemoError::Results { status, body: text });
        }
        let task: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let vault = task["vault"].as_str().unwrap_or("unknown");
        let rows = file_rows(&task);
        let stored = rows.iter().filter(|r| r.status == "stored").count();
        let progress = format!("  vault {vault}: {stored}/{} files stored", rows.len());
        if progress != last_progress {
            println!("{progress}");
            last_progress = progress;
        }
        if status == 200 && task["done"] == true {
            if let Some(given_up) = task.get("abandoned") {
                return Err(DemoError::GivenUp(given_up.to_string()));
            }
            return Ok(task);
        }
        if started.elapsed() >= timeout {
            return Err(DemoError::Timeout { seconds: timeout.as_secs(), last: format!("HTTP {status} {text}") });
        }
        tokio::time::sleep(pause.max(retry_after.unwrap_or_default())).await;
        pause = (pause * 2).min(MAX_POLL_INTERVAL);
    }
}

/// The manifest from the bucket (written as the last file settles: allow it a moment).
async fn read_manifest(target: &DemoTarget, key: &str) -> Result<Value, DemoError> {
    let failed = |message: String| DemoError::Manifest { key: key.to_owned(), message };
    let mut attempts = 0;
    loop {
        match target.s3.get_object().bucket(&target.bucket).key(key).send().await {
            Ok(object) => {
                let bytes = object.body.collect().await.map_err(|e| failed(e.to_string()))?.into_bytes();
                return serde_json::from_slice(&bytes).map_err(|e| failed(format!("not JSON: {e}")));
            }
            Err(e) if attempts < 10 => {
                attempts += 1;
                tracing::debug!(error = sdk_error_text(&e), "manifest not there yet");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(failed(sdk_error_text(&e))),
        }
    }
}

/// The closing report.
pub fn report(outcome: &DemoOutcome) -> String {
    let mut out = format!("\nTask {}: vault {}\n\n", outcome.task_id, outcome.vault);
    out.push_str(&files_table(&outcome.files));
    let manifest = serde_json::to_string_pretty(&outcome.manifest).unwrap_or_default();
    let _ = write!(out, "\nManifest ({}):\n{manifest}\n", outcome.manifest_key);
    out.push_str(&events_text(&outcome.events));
    out
}

/// The task's events, one line each as `make run` prints them.
pub fn events_text(events: &[Value]) -> String {
    if events.is_empty() {
        return String::new();
    }
    let mut out = format!("\nEvents on the bus ({}):\n", events.len());
    for event in events {
        let _ = writeln!(out, "  {}", stemvault_aws::events::describe(&event.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo fails unless the vault is complete with every file sent stored and, when the
    /// bus was watched, its Task Vaulted seen.
    #[test]
    fn the_demo_checks_the_vault_its_files_and_its_event() {
        let row = |status: &str| FileRow {
            name: "vocal".into(),
            status: status.into(),
            bytes: None,
            sha256: None,
            key: String::new(),
            error: None,
        };
        let vaulted = serde_json::json!({"detail-type": "Task Vaulted", "detail": {}});
        let done = DemoOutcome {
            task_id: "t1".into(),
            vault: "complete".into(),
            files: vec![row("stored"), row("stored")],
            manifest_key: String::new(),
            manifest: Value::Null,
            events: vec![vaulted],
            events_watched: true,
        };
        assert_eq!(done.check(2), Ok(()));
        assert_eq!(DemoOutcome { events: vec![], events_watched: false, ..done.clone() }.check(2), Ok(()), "no bus");
        let failing = [
            DemoOutcome { vault: "partial".into(), ..done.clone() },
            DemoOutcome { files: vec![row("stored")], ..done.clone() },
            DemoOutcome { files: vec![row("stored"), row("pending")], ..done.clone() },
            DemoOutcome { events: vec![], ..done.clone() },
        ];
        for outcome in failing {
            assert!(outcome.check(2).is_err(), "{outcome:?}");
        }
    }

    #[test]
    fn rewrites_every_file_url_and_the_task_id() {
        let body = demo_callback(fixture(), "0123456789abcdef0123456789abcdef", "http://127.0.0.1:3001").unwrap();
        assert!(!body.contains("aiquickdraw"), "{body}");
        assert!(!body.contains("e649edb7abfd759285bd41a47a634b10"));
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["data"]["task_id"], "0123456789abcdef0123456789abcdef");
        let info = json["data"]["vocal_separation_info"].as_object().unwrap();
        let urls: Vec<&str> = info.values().filter_map(Value::as_str).filter(|u| !u.is_empty()).collect();
        assert_eq!(urls.len(), STEMS);
        assert!(urls.iter().all(|u| u.starts_with("http://127.0.0.1:3001/s/") && u.ends_with(".mp3")), "{urls:?}");
        assert_eq!(
            info["bass_url"], "http://127.0.0.1:3001/s/a3c2da5a-b364-4422-adb5-2692b9c26d33_Bass.mp3",
            "path kept"
        );
        assert_eq!(info["origin_url"], "", "empty URLs stay empty");
        assert_eq!(json["msg"], "vocal separation generated successfully.");
    }

    #[test]
    fn other_hosts_and_lookalikes_are_left_alone() {
        let fixture = r#"{"data":{"taskId":"t1","a":"https://file.aiquickdraw.com.evil/x.mp3","b":"https://cdn1.suno.ai/x.mp3","c":"t1-not"}}"#;
        let json: Value = serde_json::from_str(&demo_callback(fixture, "t2", "http://o").unwrap()).unwrap();
        assert_eq!(json["data"]["taskId"], "t2");
        assert_eq!(json["data"]["a"], "https://file.aiquickdraw.com.evil/x.mp3");
        assert_eq!(json["data"]["b"], "https://cdn1.suno.ai/x.mp3");
        assert_eq!(json["data"]["c"], "t1-not");
        assert!(matches!(demo_callback(r#"{"code":200}"#, "t", "http://o"), Err(DemoError::Fixture(_))));
    }

    #[test]
    fn fresh_ids_differ() {
        let (a, b) = (fresh_task_id(), fresh_task_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn reads_files_as_a_list_or_a_map_and_tabulates_them() {
        let list: Value = serde_json::json!({ "vault": "partial", "files": [
            { "name": "bass", "status": "stored", "bytes": 250_000, "sha256": "abcdef0123456789ffff", "key": "tasks/t/bass.mp3" },
            { "name": "drums", "status": "failed", "bytes": null, "sha256": null, "key": "tasks/t/drums.mp3", "error": "HTTP 404" }
        ]});
        let rows = file_rows(&list);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].bytes, Some(250_000));
        let map: Value = serde_json::json!({ "files": { "bass": list["files"][0].clone() } });
        assert_eq!(file_rows(&map)[0], FileRow { name: "bass".into(), ..rows[0].clone() });
        let table = files_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "name   status      bytes  sha256        key");
        assert_eq!(lines[1], "bass   stored     250000  abcdef012345  tasks/t/bass.mp3");
        assert_eq!(lines[2], "drums  failed          -  -             tasks/t/drums.mp3");
        assert_eq!(lines[3], "       error: HTTP 404");
    }
}
