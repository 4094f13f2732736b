//! HTTP in and out: routing, status codes and JSON bodies around [`crate::domain::task_view`]
//! (`GET /tasks/<task_id>`) and [`crate::domain::register`] (`PUT /tasks/<task_id>`).

use std::time::Duration;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use stemvault_aws::response;
use stemvault_vault::panic::{PANICKED, Panicked, catch_panic};
use stemvault_vault::register::Registration;
use stemvault_vault::{Clock, Timestamp};
use suno_callbacks::TaskId;
use tracing::Instrument;

use crate::aws::AwsPorts;
use crate::config::Config;
use crate::domain::{Found, Ports, Registered, register, task_view};
use crate::error::ResultsError;

/// The largest registration body accepted (`{"family": ..., "client_ref": <256 bytes>}`).
pub const MAX_REGISTRATION_BYTES: usize = 4096;

/// Every answer is given within this, under the function's 10 s timeout (template.yaml): one
/// AWS request may take 12 s through the SDK's three attempts of 3 s, and a request makes up
/// to three, so a stalled table would otherwise run the invocation into its timeout (API
/// Gateway's bare 500, and a cold start after).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(8);

/// When to ask again about a parked task: the reconciler replays parked callbacks every 2
/// minutes (template.yaml, ReconcilerFunction's schedule), so the next replay is a minute
/// away on average; a client asking every 2 minutes could wait almost 4.
const PARKED_RETRY_AFTER: Duration = Duration::from_secs(60);

/// When to ask again after the table or a link's signing failed.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `response` asking the caller to wait `wait` (`Retry-After`, whole seconds).
fn with_retry_after(mut response: Response<Body>, wait: Duration) -> Response<Body> {
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
    response
}

/// The results function with its clients, built once per Lambda instance.
pub struct App {
    ports: AwsPorts,
    settings: Settings,
}

/// What the answers depend on besides the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    link_expiry: Duration,
    reconcile_after: Duration,
}

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        let settings = Settings { link_expiry: config.download_url_expiry, reconcile_after: config.reconcile_after };
        App { ports: AwsPorts::new(&config, sdk), settings }
    }

    /// Answer one request; every outcome is an HTTP response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let body: &[u8] = req.body().as_ref();
        // The route API Gateway matched, whatever stands in front of it in the raw path (a
        // custom domain's API mapping key).
        let path = stemvault_aws::route::routed_path(&req);
        let request = Incoming {
            method: req.method(),
            path: &path,
            body,
            api_request_id: stemvault_aws::http_event::api_request_id(&req),
        };
        answer_in_time(&self.ports, self.settings, request, self.ports.now()).await
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `GET /tasks/<segment>`, the segment still percent-encoded.
    Task(&'a str),
    /// `PUT /tasks/<segment>`: register the task.
    Register(&'a str),
    MethodNotAllowed,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    match path.strip_prefix("/tasks/") {
        Some(segment) if !segment.is_empty() && !segment.contains('/') => match *method {
            Method::GET => Route::Task(segment),
            Method::PUT => Route::Register(segment),
            _ => Route::MethodNotAllowed,
        },
        _ => Route::NotFound,
    }
}

/// `request`'s answer ([`respond`]) within [`ANSWER_WITHIN`], in a span naming API Gateway's
/// id of it and, once read, its task: a timeout's or a refused id's line names them too.
async fn answer_in_time(
    ports: &impl Ports,
    settings: Settings,
    request: Incoming<'_>,
    now: Timestamp,
) -> Response<Body> {
    let span =
        tracing::error_span!("request", api_request_id = request.api_request_id, task_id = tracing::field::Empty);
    in_time(respond(ports, settings, request, now)).instrument(span).await
}

/// `responding`'s answer, or 503 when it takes longer than [`ANSWER_WITHIN`], or 500 (JSON,
/// as every other answer, not lambda_http's bare one) when it panics: a bug, which the same
/// request meets again.
async fn in_time(responding: impl Future<Output = Response<Body>>) -> Response<Body> {
    match tokio::time::timeout(ANSWER_WITHIN, catch_panic(responding)).await {
        Ok(Ok(response)) => response,
        Ok(Err(Panicked)) => {
            tracing::error!("answering panicked (its own line says where): answered 500");
            response::error(StatusCode::INTERNAL_SERVER_ERROR, PANICKED, "the request could not be answered")
        }
        Err(_) => {
            tracing::warn!(within_seconds = ANSWER_WITHIN.as_secs(), "no answer in time");
            try_again_soon("timeout", "the vault did not answer in time; try again")
        }
    }
}

/// What `respond` reads of a request.
#[derive(Debug, Clone, Copy)]
struct Incoming<'a> {
    method: &'a Method,
    /// The path API Gateway routed it by ([`stemvault_aws::route::routed_path`]).
    path: &'a str,
    body: &'a [u8],
    /// API Gateway's id of it, for its lines ([`stemvault_aws::http_event::api_request_id`]).
    api_request_id: Option<&'a str>,
}

/// The whole request cycle over the domain traits (so it is testable without AWS).
async fn respond(ports: &impl Ports, settings: Settings, request: Incoming<'_>, now: Timestamp) -> Response<Body> {
    let Incoming { method, path, body, api_request_id } = request;
    let (segment, registering) = match route(method, path) {
        Route::Task(segment) => (segment, false),
        Route::Register(segment) => (segment, true),
        Route::MethodNotAllowed => {
            let mut response = response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not supported; use GET or PUT"),
            );
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, PUT"));
            return response;
        }
        Route::NotFound => {
            return response::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; use GET or PUT /tasks/<task_id>",
            );
        }
    };
    // Clients may percent-encode characters task ids allow (`*`, `:`, ...); the routed path
    // is encoded as a raw path is, so it is decoded once, and TaskId refuses anything that
    // could still escape its S3 prefix after decoding (`/`, `..`, `%`).
    let task_id = match percent_encoding::percent_decode_str(segment).decode_utf8() {
        Ok(decoded) => TaskId::parse(&decoded).map_err(|e| e.to_string()),
        Err(_) => Err("task id is not valid UTF-8 once percent-decoded".to_owned()),
    };
    let task_id = match task_id {
        Ok(id) => {
            tracing::Span::current().record("task_id", id.as_str());
            id
        }
        Err(why) => {
            tracing::info!(error = %why, "invalid task id");
            return response::error(StatusCode::BAD_REQUEST, "invalid_task_id", why);
        }
    };
    if registering {
        let span = tracing::error_span!("register", task_id = %task_id, api_request_id);
        return register_task(ports, settings, &task_id, body, now).instrument(span).await;
    }
    let span = tracing::error_span!("results", task_id = %task_id, api_request_id);
    answer(ports, settings.link_expiry, &task_id).instrument(span).await
}

/// `PUT /tasks/<task_id>`: 201 created, 200 already registered (or called back) alike, 409
/// recorded otherwise, 400/413 for a body that is not a registration.
async fn register_task(
    ports: &impl Ports,
    settings: Settings,
    task_id: &TaskId,
    body: &[u8],
    now: Timestamp,
) -> Response<Body> {
    if body.len() > MAX_REGISTRATION_BYTES {
        let message = format!("the body is {} bytes; at most {MAX_REGISTRATION_BYTES} are accepted", body.len());
        return response::error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message);
    }
    let registration = match Registration::parse(body) {
        Ok(registration) => registration,
        Err(e) => {
            tracing::info!(error = %e, "registration refused");
            return response::error(StatusCode::BAD_REQUEST, "invalid_registration", e.to_string());
        }
    };
    match register(ports, task_id, &registration, now, settings.reconcile_after).await {
        Ok(Registered::Created(view)) => {
            tracing::info!(family = %registration.family, "task registered");
            response::json(StatusCode::CREATED, &view)
        }
        Ok(Registered::Existing(view)) => response::json(StatusCode::OK, &view),
        Ok(Registered::Disagrees { view, fields }) => {
            tracing::info!(family = %view.family, ?fields, "registration disagrees with the recorded task");
            // The family and which fields disagree, not the recorded client_ref: the recorded
            // task (another caller's client_ref, its files) is for whoever may read it (GET),
            // not for a registration that does not match it.
            let body = serde_json::json!({
                "error": "task_conflict",
                "message": format!(
                    "task {task_id} is recorded with family {} and disagrees with this registration on {}",
                    view.family,
                    fields.join(" and ")
                ),
                "family": view.family,
                "conflicting": fields,
            });
            response::json(StatusCode::CONFLICT, &body)
        }
        Err(e) => failure(&e),
    }
}

async fn answer(ports: &impl Ports, link_expiry: Duration, task_id: &TaskId) -> Response<Body> {
    match task_view(ports, task_id, link_expiry).await {
        Ok(Some(Found::Task(view))) => {
            tracing::info!(files = view.files.len(), vault = %view.vault, "task found");
            response::json(StatusCode::OK, &view)
        }
        Ok(Some(Found::Parked)) => {
            tracing::info!("task known only by a parked callback");
            let body = serde_json::json!({
                "task_id": task_id.as_str(),
                "status": "parked",
                // As a task view's: a client reading any 2xx for `done` keeps asking.
                "done": false,
                "message": "a callback of this task was received but not recorded yet (the task table \
                            could not take it); the reconciler records it, usually within minutes",
            });
            with_retry_after(response::json(StatusCode::ACCEPTED, &body), PARKED_RETRY_AFTER)
        }
        Ok(None) => {
            tracing::info!("task not found");
            response::error(
                StatusCode::NOT_FOUND,
                "task_not_found",
                format!(
                    "no callback has been recorded for task {task_id}, nor has it been registered (not final: \
                     PUT /tasks/{task_id} registers it for polling)"
                ),
            )
        }
        Err(e) => failure(&e),
    }
}

/// 503 with `Retry-After: 1`: the same request may be answered a second later.
fn try_again_soon(code: &str, message: &str) -> Response<Body> {
    with_retry_after(response::error(StatusCode::SERVICE_UNAVAILABLE, code, message), UNAVAILABLE_RETRY_AFTER)
}

/// The details go to the log, not to the caller.
fn failure(e: &ResultsError) -> Response<Body> {
    if !e.caller_may_retry() {
        tracing::error!(
            error = %e,
            "cannot answer: the task's record cannot be read, or the table refuses the write \
            for good; asking again will not mend it (fix or delete the task's items, or roll \
            back the build)"
        );
        let message =
            "the task's record cannot be read or written; an operator must fix it (asking again will not help)";
        return response::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message);
    }
    if e.is_build_fault() {
        tracing::error!(
            error = %e,
            "the table refused a write of this build as invalid: a deploy (or a rollback) mends it; \
            answered 503, so the caller asks again"
        );
    } else {
        tracing::warn!(error = %e, "cannot answer now");
    }
    try_again_soon("unavailable", "the task cannot be answered right now; try again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::MemoryPorts;
    use stemvault_vault::StoreError;
    use tracing::Level;

    const SETTINGS: Settings =
        Settings { link_expiry: Duration::from_secs(60), reconcile_after: Duration::from_secs(600) };

    /// A request's lines carry API Gateway's id of it, as the access log writes it.
    #[tokio::test]
    async fn a_request_s_lines_carry_api_gateway_s_id_of_it() {
        let captured = stemvault_aws::log_capture::capture_logs();
        let ports = MemoryPorts::with(&["t1"]);
        let request =
            Incoming { method: &Method::GET, path: "/tasks/t1", body: b"", api_request_id: Some("Kx1pHjVyoAMEYxw=") };
        let response = respond(&ports, SETTINGS, request, Timestamp::from_unix_ms(1_800_000_000_000)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let logs = captured.text();
        assert!(logs.contains("task found") && logs.contains(r#""api_request_id":"Kx1pHjVyoAMEYxw=""#), "{logs}");
    }

    async fn call(ports: &MemoryPorts, method: Method, path: &str) -> (StatusCode, serde_json::Value, Response<Body>) {
        put(ports, method, path, b"").await
    }

    async fn put(
        ports: &MemoryPorts,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> (StatusCode, serde_json::Value, Response<Body>) {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let request = Incoming { method: &method, path, body, api_request_id: Some("Kx1pHjVyoAMEYxw=") };
        let response = answer_in_time(ports, SETTINGS, request, now).await;
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).expect("JSON body");
        (response.status(), body, response)
    }

    #[test]
    fn routes_only_one_segment_under_tasks() {
        assert_eq!(route(&Method::GET, "/tasks/abc"), Route::Task("abc"));
        assert_eq!(route(&Method::PUT, "/tasks/abc"), Route::Register("abc"));
        assert_eq!(route(&Method::POST, "/tasks/abc"), Route::MethodNotAllowed);
        for path in ["/tasks/", "/tasks", "/tasks/a/b", "/callback", "/", "/taskss/a"] {
            assert_eq!(route(&Method::GET, path), Route::NotFound, "{path}");
        }
    }

    #[tokio::test]
    async fn answers_the_task_as_json() {
        let (status, body, response) = call(&MemoryPorts::with(&["t1"]), Method::GET, "/tasks/t1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(body["task_id"], "t1");
        assert_eq!(body["vault"], "pending");
        assert_eq!(body["files"][0]["name"], "tracks/a/audio");
        assert_eq!(body["files"][0]["status"], "stored");
        assert_eq!(body["files"][0]["download_url"], "signed:tasks/t1/tracks/a/audio.mp3?expires=60");
        assert_eq!(body["files"][1]["status"], "failed");
        assert_eq!(body["files"][1]["download_url"], serde_json::Value::Null);
        assert_eq!(body["files"][2]["status"], "pending");
        let keys: Vec<&String> = body["files"][0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 11, "{keys:?}");
        assert_eq!(body["files"][1]["error_code"], "source_expired");
        assert_eq!(
            (&body["files"][2]["attempts"], &body["files"][2]["last_attempt_error"]),
            (&1.into(), &"connection reset".into())
        );
    }

    #[tokio::test]
    async fn decodes_percent_encoded_ids() {
        let (status, body, _) =
            call(&MemoryPorts::with(&["2fac****9f72"]), Method::GET, "/tasks/2fac%2A%2A**9f72").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["task_id"], "2fac****9f72");
    }

    #[tokio::test]
    async fn refuses_invalid_ids_with_400() {
        for path in ["/tasks/..", "/tasks/a%2Fb", "/tasks/a%20b", "/tasks/%FF", "/tasks/a%252Fb"] {
            let (status, body, _) = call(&MemoryPorts::with(&[]), Method::GET, path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(body["error"], "invalid_task_id", "{path}");
            assert!(body["message"].as_str().unwrap().contains("task id"), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn a_task_known_only_by_a_parked_callback_is_202_with_retry_after() {
        let ports = MemoryPorts { parked: vec!["t2".into()], ..MemoryPorts::with(&["t1"]) };
        let (status, body, response) = call(&ports, Method::GET, "/tasks/t2").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!((body["task_id"].as_str(), body["status"].as_str()), (Some("t2"), Some("parked")));
        assert_eq!(body["done"], false, "a client reading done keeps asking");
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
    }

    #[tokio::test]
    async fn unknown_task_paths_and_methods() {
        let (status, body, _) = call(&MemoryPorts::with(&["t1"]), Method::GET, "/tasks/t2").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("task_not_found")));
        assert!(body["message"].as_str().unwrap().contains("t2"));

        let (status, body, _) = call(&MemoryPorts::with(&["t1"]), Method::GET, "/results/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

        let (status, body, response) = call(&MemoryPorts::with(&["t1"]), Method::DELETE, "/tasks/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
        assert_eq!(response.headers()[header::ALLOW], "GET, PUT");
    }

    #[tokio::test]
    async fn put_registers_once_get_answers_at_once_and_a_different_registration_is_409() {
        let ports = MemoryPorts::default();
        let body = br#"{"family":"vocal_separation","client_ref":"order-17"}"#;
        let (status, created, _) = put(&ports, Method::PUT, "/tasks/t7", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!((created["stage"].as_str(), created["vault"].as_str()), (Some("submitted"), Some("pending")));
        assert_eq!(created["client_ref"], "order-17");
        assert_eq!(created["files"], serde_json::json!([]));

        let (status, again, _) = put(&ports, Method::PUT, "/tasks/t7", body).await;
        assert_eq!((status, &again), (StatusCode::OK, &created));
        let (status, mut got, _) = call(&ports, Method::GET, "/tasks/t7").await;
        // Only an answer with links says when they expire (a PUT's has none).
        let expire_at = got.as_object_mut().and_then(|view| view.remove("links_expire_at"));
        assert_eq!(expire_at, Some(serde_json::json!("2027-01-15T08:01:00.000Z")), "{got}");
        assert_eq!((status, &got), (StatusCode::OK, &created));

        let (status, conflict, _) = put(&ports, Method::PUT, "/tasks/t7", br#"{"family":"wav"}"#).await;
        assert_eq!((status, conflict["error"].as_str()), (StatusCode::CONFLICT, Some("task_conflict")));
        assert_eq!(conflict["family"], "vocal_separation");
        assert_eq!(conflict["conflicting"], serde_json::json!(["family", "client_ref"]), "{conflict}");
        let (status, conflict, _) =
            put(&ports, Method::PUT, "/tasks/t7", br#"{"family":"vocal_separation","client_ref":"guess"}"#).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(conflict["conflicting"], serde_json::json!(["client_ref"]), "{conflict}");
        let body = br#"{"family":"wav","client_ref":"order-17"}"#;
        let (status, conflict, _) = put(&ports, Method::PUT, "/tasks/t7", body).await;
        assert_eq!((status, &conflict["conflicting"]), (StatusCode::CONFLICT, &serde_json::json!(["family"])));
        assert!(!conflict.to_string().contains("order-17"), "{conflict}");
        assert_eq!(conflict.get("task"), None, "{conflict}");
        assert_eq!(ports.put.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_registration_is_refused_and_nothing_written() {
        let ports = MemoryPorts::default();
        for body in [&b"{}"[..], b"not json", br#"{"family":"jazz"}"#, br#"{"family":"unknown"}"#] {
            let (status, answer, _) = put(&ports, Method::PUT, "/tasks/t7", body).await;
            assert_eq!((status, answer["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_registration")));
        }
        let huge = vec![b' '; MAX_REGISTRATION_BYTES + 1];
        let (status, _, _) = put(&ports, Method::PUT, "/tasks/t7", &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, _, _) = put(&ports, Method::PUT, "/tasks/..", br#"{"family":"wav"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(ports.put.lock().unwrap().is_empty());
    }

    /// A table that does not answer: 503 within the answer's bound, never the function's
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn a_table_that_does_not_answer_is_503_in_time() {
        let captured = stemvault_aws::log_capture::capture_logs();
        let stalled = MemoryPorts { hangs: true, ..MemoryPorts::with(&["t1"]) };
        let started = tokio::time::Instant::now();
        let (status, body, response) = call(&stalled, Method::GET, "/tasks/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("timeout")));
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(started.elapsed(), ANSWER_WITHIN);
        // Its line names the request and the task, as the answer's own lines would.
        let logs = captured.text();
        let line = logs.lines().find(|l| l.contains("no answer in time")).unwrap_or_default();
        assert!(
            line.contains(r#""api_request_id":"Kx1pHjVyoAMEYxw=""#) && line.contains(r#""task_id":"t1""#),
            "{logs}"
        );
    }

    /// A bug breaking an answer is a JSON 500 in the request's span, not lambda_http's bare one.
    #[tokio::test]
    async fn a_panic_answering_is_a_json_500() {
        let captured = stemvault_aws::log_capture::capture_logs();
        let broken = MemoryPorts { panics: true, ..MemoryPorts::with(&["t1"]) };
        let (status, body, response) = call(&broken, Method::GET, "/tasks/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("panicked")));
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let said = captured.lines_with("answering panicked");
        assert!(said.len() == 1 && said[0].is(Level::ERROR, &[r#""task_id":"t1""#]), "{}", captured.text());
    }

    #[tokio::test]
    async fn store_failures_are_503_or_500_without_details() {
        let down =
            MemoryPorts { fail: Some(StoreError::Unavailable("secret endpoint detail".into())), ..Default::default() };
        let (status, body, response) = call(&down, Method::GET, "/tasks/t1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(!body.to_string().contains("secret"), "{body}");

        let broken = MemoryPorts { fail: Some(StoreError::Malformed("bad item".into())), ..Default::default() };
        let (status, body, _) = call(&broken, Method::GET, "/tasks/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::INTERNAL_SERVER_ERROR, Some("internal")));

        // A write refused as invalid: this build's fault, which a deploy mends, so the
        // registration is asked for again (as ingest answers it), and an operator told.
        let captured = stemvault_aws::log_capture::capture_logs();
        let invalid = MemoryPorts { fail: Some(StoreError::Invalid("bad expression".into())), ..Default::default() };
        let (status, body, response) = put(&invalid, Method::PUT, "/tasks/t7", br#"{"family":"wav"}"#).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")));
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let logs = captured.text();
        let said = captured.lines_with("refused a write of this build");
        assert!(said.len() == 1 && said[0].is(Level::ERROR, &[]), "{logs}");
    }
}
