//! A fake Suno API provider on 127.0.0.1, for the reconciler's end-to-end tests and the local
//! runner's demo (`make demo`): a provider we do not control, answering as the documented
//! record-info endpoints do.
//!
//! * `GET /api/v1/<family>/record-info?taskId=<id>` (every path of
//!   [`suno_callbacks::poll::record_info_path`]) with `Authorization: Bearer <key>`: a wrong or
//!   missing key answers HTTP 401 (`{"code":401,...}`; [`FakeProvider::rotate_key`] changes the
//!   key it accepts, as an operator rotating it at the provider); a task it does not know, or
//!   asks for at another family's endpoint, answers `{"code":404,...}`; a known task answers the next [`Answer`] of its script (the last one
//!   again once the script is used up).
//! * Result answers are the documented answers (`fixtures/polls`, and section 7's shapes in
//!   `fixtures/polls/own`) for the task, their file URLs pointing at this server's
//!   own `GET /files/<task>/<name>`, which serves generated audio, or 403 once
//!   [`FakeProvider::expire`]d.
//! * It counts polls per task and hits per file.
//! * `POST /api/v1/common/download-url` with `{"url": "<one of its files>"}` (kie's fresh links,
//!   the same Bearer key) answers `{"code": 200, "msg": "success", "data": "<link>"}`, a link
//!   to `GET /fresh/<task>/<name>`, which serves the file even once expired; any other URL
//!   answers code 422 (not a file it generated), and [`FakeProvider::fail_fresh_links`] makes
//!   it answer a documented error code instead.
//! * `PUT /fake/tasks/<id>` with `{"family": "vocal_separation", "script": ["pending",
//!   "success", 429, {"code": 401}]}` makes a task known over HTTP (how `make demo` tells the
//!   fake provider of a running `make run` about its task).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use suno_callbacks::Family;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The documented kie.ai vocal-removal answer (stems vocal and instrumental).
const VOCAL_REMOVAL_SUCCESS: &str =
    include_str!("../../fixtures/polls/poll-vocal-removal-record-info__kie__200-separate_vocal.json");
/// A music task at its `first` and `complete` stages (section 7's shape).
const MUSIC_FIRST: &str =
    include_str!("../../fixtures/polls/own/poll-generate-record-info__own__200-FIRST_SUCCESS.json");
const MUSIC_SUCCESS: &str = include_str!("../../fixtures/polls/own/poll-generate-record-info__own__200-SUCCESS.json");
/// A WAV conversion done (docs.kie.ai's Chinese page's example).
const WAV_SUCCESS: &str = include_str!("../../fixtures/polls/poll-wav-record-info__kie-dogtest-cn__200.json");

/// Bytes each served file has.
pub const FILE_BYTES: usize = 48 * 1024;

/// One answer of a task's script.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `successFlag`/`status` PENDING: not done yet.
    Pending,
    /// The task's documented result: vocal separation SUCCESS (two stems), WAV SUCCESS, music
    /// SUCCESS (any other family).
    Success,
    /// Music only: FIRST_SUCCESS (the first track's audio only).
    First,
    /// This HTTP status, with an error body (429, 500, 502...).
    Status(u16),
    /// HTTP 200 carrying this error `code` (as the providers also report errors).
    Code(i64),
}

#[derive(Default)]
struct State {
    key: String,
    tasks: HashMap<String, (Family, VecDeque<Answer>)>,
    polls: HashMap<String, usize>,
    file_hits: HashMap<String, usize>,
    expired: Vec<String>,
    /// `common/download-url` requests, by the URL asked about.
    fresh_link_requests: Vec<String>,
    /// `common/download-url` requests refused for their key (401).
    fresh_links_refused: usize,
    /// Answer `common/download-url` with this error code (HTTP status and body code).
    fresh_link_failure: Option<u16>,
}

/// A running fake provider; stops when dropped.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
}

impl FakeProvider {
    /// Start on a free port, accepting `api_key`.
    pub async fn start(api_key: &str) -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake provider");
        FakeProvider::on(listener, api_key)
    }

    /// Serve on `listener` (the local runner's PORT+2), accepting `api_key`.
    pub fn on(listener: TcpListener, api_key: &str) -> FakeProvider {
        let addr = listener.local_addr().expect("a local address");
        let state = Arc::new(Mutex::new(State { key: api_key.to_owned(), ..State::default() }));
        let (stop, mut stopped) = watch::channel(false);
        let served = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(state, addr, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeProvider { addr, state, stop }
    }

    /// `http://127.0.0.1:<port>`: the `PROVIDER_BASE_URL`, and the origin files are served from.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Know `task_id` (of `family`), answering polls with `script` in order, the last again.
    pub fn add_task(&self, task_id: &str, family: Family, script: Vec<Answer>) {
        self.lock().tasks.insert(task_id.to_owned(), (family, script.into()));
    }

    /// Replace a known task's script.
    pub fn script(&self, task_id: &str, script: Vec<Answer>) {
        if let Some((_, answers)) = self.lock().tasks.get_mut(task_id) {
            *answers = script.into();
        }
    }

    /// Accept `api_key` from now on, and refuse the one accepted so far (a rotation).
    pub fn rotate_key(&self, api_key: &str) {
        self.lock().key = api_key.to_owned();
    }

    /// How many times `task_id` was polled (with any key).
    pub fn polls(&self, task_id: &str) -> usize {
        self.lock().polls.get(task_id).copied().unwrap_or(0)
    }

    /// How many times the file `name` of `task_id` was fetched.
    pub fn file_hits(&self, task_id: &str, name: &str) -> usize {
        self.lock().file_hits.get(&format!("/files/{task_id}/{name}")).copied().unwrap_or(0)
    }

    /// Make the file `name` of `task_id` answer 403, as an expired URL does.
    pub fn expire(&self, task_id: &str, name: &str) {
        self.lock().expired.push(format!("/files/{task_id}/{name}"));
    }

    /// The URLs `common/download-url` was asked about, in order.
    pub fn fresh_link_requests(&self) -> Vec<String> {
        self.lock().fresh_link_requests.clone()
    }

    /// How many `common/download-url` requests were refused for their key.
    pub fn fresh_links_refused(&self) -> usize {
        self.lock().fresh_links_refused
    }

    /// Answer `common/download-url` with `code` (401, 402, 422, 429, 455, 500...) from now on;
    /// None: give links again.
    pub fn fail_fresh_links(&self, code: Option<u16>) {
        self.lock().fresh_link_failure = code;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type.parse().expect("a content type"));
    response
}

fn json_answer(status: StatusCode, body: &Value) -> Response<Body> {
    respond(status, "application/json", body.to_string().into_bytes())
}

/// Read an admin script entry: `"pending"`, `"success"`, `"first"`, an HTTP status, or
/// `{"code": n}`.
fn script_entry(value: &Value) -> Option<Answer> {
    match value {
        Value::String(s) if s == "pending" => Some(Answer::Pending),
        Value::String(s) if s == "success" => Some(Answer::Success),
        Value::String(s) if s == "first" => Some(Answer::First),
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()).map(Answer::Status),
        Value::Object(o) => o.get("code").and_then(Value::as_i64).map(Answer::Code),
        _ => None,
    }
}

/// `PUT /fake/tasks/<id>`: know a task over HTTP.
fn add_task_over_http(state: &mut State, task_id: &str, body: &[u8]) -> Response<Body> {
    let parsed: Option<(Family, Vec<Answer>)> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let family = v["family"].as_str()?.parse::<Family>().ok()?;
        let script = v["script"].as_array()?.iter().map(script_entry).collect::<Option<Vec<_>>>()?;
        Some((family, script))
    });
    match parsed {
        Some((family, script)) => {
            state.tasks.insert(task_id.to_owned(), (family, script.into()));
            json_answer(StatusCode::OK, &json!({"task_id": task_id}))
        }
        None => {
            json_answer(StatusCode::BAD_REQUEST, &json!({"error": "expected {\"family\": ..., \"script\": [...]}"}))
        }
    }
}

async fn serve(state: Arc<Mutex<State>>, addr: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    if req.method() == hyper::Method::PUT {
        let task_id = req.uri().path().strip_prefix("/fake/tasks/").unwrap_or_default().to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        return add_task_over_http(&mut state, &task_id, &body);
    }
    if req.method() == hyper::Method::POST {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        return fresh_link(&mut state, addr, &parts, &body);
    }
    answer(&state, addr, req)
}

/// kie's `POST /api/v1/common/download-url`: a fresh link for one of its files.
fn fresh_link(state: &mut State, addr: SocketAddr, req: &hyper::http::request::Parts, body: &[u8]) -> Response<Body> {
    if req.uri.path() != "/api/v1/common/download-url" {
        return json_answer(StatusCode::NOT_FOUND, &json!({"code": 404, "msg": "no such endpoint", "data": null}));
    }
    let bearer = req.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(state.key.as_str()) {
        state.fresh_links_refused += 1;
        let body = json!({"code": 401, "msg": "You do not have access permissions", "data": null});
        return json_answer(StatusCode::UNAUTHORIZED, &body);
    }
    let url = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["url"].as_str().map(str::to_owned));
    let url = url.unwrap_or_default();
    state.fresh_link_requests.push(url.clone());
    if let Some(code) = state.fresh_link_failure {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return json_answer(status, &json!({"code": code, "msg": "scripted failure", "data": null}));
    }
    let origin = format!("http://{addr}");
    let Some(file) = url.strip_prefix(&format!("{origin}/files/")) else {
        let body = json!({"code": 422, "msg": "The URL is not a file generated by this service", "data": null});
        return json_answer(StatusCode::OK, &body);
    };
    let file = file.split('?').next().unwrap_or_default();
    let link = format!("{origin}/fresh/{file}?expires=1200&sig=fresh");
    json_answer(StatusCode::OK, &json!({"code": 200, "msg": "success", "data": link}))
}

fn answer(state: &Mutex<State>, addr: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = req.uri().path().to_owned();
    // A fresh link (common/download-url): the same bytes, expired or not.
    if let Some(file) = path.strip_prefix("/fresh/") {
        *state.file_hits.entry(path.clone()).or_default() += 1;
        let seed = file.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        return respond(StatusCode::OK, "audio/mpeg", crate::file_server::generated_bytes(FILE_BYTES, seed));
    }
    if let Some(file) = path.strip_prefix("/files/") {
        *state.file_hits.entry(path.clone()).or_default() += 1;
        if state.expired.contains(&path) {
            return respond(StatusCode::FORBIDDEN, "text/plain", b"expired\n".to_vec());
        }
        let seed = file.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let content_type = if file.ends_with(".jpeg") { "image/jpeg" } else { "audio/mpeg" };
        return respond(StatusCode::OK, content_type, crate::file_server::generated_bytes(FILE_BYTES, seed));
    }
    let Some(family) = family_of(&path) else {
        return json_answer(StatusCode::NOT_FOUND, &json!({"code": 404, "msg": "no such endpoint", "data": null}));
    };
    let task_id = req
        .uri()
        .query()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "taskId").map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    *state.polls.entry(task_id.clone()).or_default() += 1;
    let bearer = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(state.key.as_str()) {
        let body = json!({"code": 401, "msg": "You do not have access permissions", "data": null});
        return json_answer(StatusCode::UNAUTHORIZED, &body);
    }
    // A task asked for at another family's endpoint is one that endpoint does not know.
    let Some((_, script)) = state.tasks.get_mut(&task_id).filter(|(known, _)| *known == family) else {
        return json_answer(StatusCode::OK, &json!({"code": 404, "msg": "recordInfo is null", "data": null}));
    };
    let next = if script.len() > 1 { script.pop_front() } else { script.front().cloned() };
    match next.unwrap_or(Answer::Pending) {
        Answer::Pending => json_answer(StatusCode::OK, &pending(family, &task_id)),
        Answer::Success | Answer::First if family == Family::VocalSeparation => {
            json_answer(StatusCode::OK, &documented(VOCAL_REMOVAL_SUCCESS, &task_id, addr))
        }
        Answer::Success if family == Family::Wav => {
            json_answer(StatusCode::OK, &documented(WAV_SUCCESS, &task_id, addr))
        }
        Answer::First => json_answer(StatusCode::OK, &documented(MUSIC_FIRST, &task_id, addr)),
        Answer::Success => json_answer(StatusCode::OK, &documented(MUSIC_SUCCESS, &task_id, addr)),
        Answer::Status(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_answer(status, &json!({"code": status.as_u16(), "msg": "scripted failure", "data": null}))
        }
        Answer::Code(code) => {
            json_answer(StatusCode::OK, &json!({"code": code, "msg": "scripted error code", "data": null}))
        }
    }
}

/// The family a record-info path belongs to.
fn family_of(path: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| suno_callbacks::poll::record_info_path(*f) == Some(path))
}

fn pending(family: Family, task_id: &str) -> Value {
    let flag = if family == Family::Music { "status" } else { "successFlag" };
    json!({"code": 200, "msg": "success", "data": {"taskId": task_id, flag: "PENDING", "response": null}})
}

/// A documented answer for `task_id`: its task ids replaced, and every https URL but stream
/// URLs pointing at this server's `/files/<task_id>/<last path segment>`.
fn documented(fixture: &str, task_id: &str, addr: SocketAddr) -> Value {
    fn rewrite(value: &mut Value, key: Option<&str>, task_id: &str, origin: &str) {
        match value {
            Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    if k == "taskId" || k == "task_id" {
                        *v = Value::String(task_id.to_owned());
                    } else {
                        rewrite(v, Some(k), task_id, origin);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| rewrite(v, key, task_id, origin)),
            Value::String(s)
                if s.starts_with("https://") && !key.unwrap_or("").to_ascii_lowercase().contains("stream") =>
            {
                let name = s.rsplit('/').next().unwrap_or("file").split('?').next().unwrap_or("file").to_owned();
                *s = format!("{origin}/files/{task_id}/{name}");
            }
            _ => {}
        }
    }
    let mut value: Value = serde_json::from_str(fixture).expect("a documented answer");
    rewrite(&mut value, None, task_id, &format!("http://{addr}"));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_can_be_scripted_over_http() {
        let mut state = State::default();
        let ok = add_task_over_http(
            &mut state,
            "t1",
            br#"{"family":"wav","script":["pending",429,{"code":401},"success"]}"#,
        );
        assert_eq!(ok.status(), StatusCode::OK);
        let (family, script) = &state.tasks["t1"];
        assert_eq!(*family, Family::Wav);
        assert_eq!(
            Vec::from(script.clone()),
            [Answer::Pending, Answer::Status(429), Answer::Code(401), Answer::Success]
        );
        let bad = add_task_over_http(&mut state, "t2", br#"{"family":"wav","script":["later"]}"#);
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn documented_answers_point_at_this_server_and_parse_as_results() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let answer = documented(VOCAL_REMOVAL_SUCCESS, "t-1", addr);
        let parsed = suno_callbacks::parse_poll(Family::VocalSeparation, answer.to_string().as_bytes()).unwrap();
        let suno_callbacks::PollResult::Result(event) = parsed else { panic!("a result") };
        assert_eq!(event.task_id.as_str(), "t-1");
        for file in &event.files {
            assert!(file.url.starts_with("http://127.0.0.1:4000/files/t-1/"), "{}", file.url);
        }
        let first = documented(MUSIC_FIRST, "t-2", addr);
        let parsed = suno_callbacks::parse_poll(Family::Music, first.to_string().as_bytes()).unwrap();
        assert!(matches!(parsed, suno_callbacks::PollResult::Result(e) if e.stage == suno_callbacks::Stage::First));
        let waiting = pending(Family::Music, "t-3").to_string();
        assert!(matches!(
            suno_callbacks::parse_poll(Family::Music, waiting.as_bytes()),
            Ok(suno_callbacks::PollResult::Pending { .. })
        ));
    }
}
