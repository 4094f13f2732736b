//! HTTP in and out: routing, status codes and JSON bodies around [`crate::domain::task_view`].

use std::time::Duration;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use suno_callbacks::TaskId;
use tracing::Instrument;

use crate::aws::AwsPorts;
use crate::config::Config;
use crate::domain::{Ports, task_view};
use crate::error::ResultsError;

/// The results function with its clients, built once per Lambda instance.
pub struct App {
    ports: AwsPorts,
    link_expiry: Duration,
}

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        App { ports: AwsPorts::new(&config, sdk), link_expiry: config.download_url_expiry }
    }

    /// Answer one request; every outcome is an HTTP response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        respond(&self.ports, self.link_expiry, req.method(), req.uri().path()).await
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `GET /tasks/<segment>`, the segment still percent-encoded.
    Task(&'a str),
    MethodNotAllowed,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    match path.strip_prefix("/tasks/") {
        Some(segment) if !segment.is_empty() && !segment.contains('/') => {
            if method == Method::GET {
                Route::Task(segment)
            } else {
                Route::MethodNotAllowed
            }
        }
        _ => Route::NotFound,
    }
}

/// The whole request cycle over the domain traits (so it is testable without AWS).
async fn respond(ports: &impl Ports, link_expiry: Duration, method: &Method, path: &str) -> Response<Body> {
    let segment = match route(method, path) {
        Route::Task(segment) => segment,
        Route::MethodNotAllowed => {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not supported; use GET"),
            );
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        Route::NotFound => {
            return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; use GET /tasks/<task_id>".into());
        }
    };
    // Clients may percent-encode characters task ids allow (`*`, `:`, ...); TaskId refuses
    // anything that could still escape its S3 prefix after decoding (`/`, `..`, `%`).
    let task_id = match percent_encoding::percent_decode_str(segment).decode_utf8() {
        Ok(decoded) => TaskId::parse(&decoded).map_err(|e| e.to_string()),
        Err(_) => Err("task id is not valid UTF-8 once percent-decoded".to_owned()),
    };
    let task_id = match task_id {
        Ok(id) => id,
        Err(why) => {
            tracing::info!(error = %why, "invalid task id");
            return error(StatusCode::BAD_REQUEST, "invalid_task_id", why);
        }
    };
    let span = tracing::info_span!("results", task_id = %task_id);
    answer(ports, link_expiry, &task_id).instrument(span).await
}

async fn answer(ports: &impl Ports, link_expiry: Duration, task_id: &TaskId) -> Response<Body> {
    match task_view(ports, task_id, link_expiry).await {
        Ok(Some(view)) => {
            tracing::info!(files = view.files.len(), vault = %view.vault, "task found");
            json(StatusCode::OK, &view)
        }
        Ok(None) => {
            tracing::info!("task not found");
            error(StatusCode::NOT_FOUND, "task_not_found", format!("no callback has been recorded for task {task_id}"))
        }
        Err(e) => failure(&e),
    }
}

/// The details go to the log, not to the caller.
fn failure(e: &ResultsError) -> Response<Body> {
    if e.is_retryable() {
        tracing::warn!(error = %e, "cannot answer now");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the vault cannot be read right now; try again".into(),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    } else {
        tracing::error!(error = %e, "cannot answer");
        error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the task record cannot be read".into())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json(status, &ErrorBody { error: code, message })
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"internal","message":"response not serialisable"}"#.to_owned(),
            )
        }
    };
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The body carries signed links: no shared caches.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::MemoryPorts;
    use stemvault_vault::StoreError;

    async fn call(ports: &MemoryPorts, method: Method, path: &str) -> (StatusCode, serde_json::Value, Response<Body>) {
        let response = respond(ports, Duration::from_secs(60), &method, path).await;
        let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).expect("JSON body");
        (response.status(), body, response)
    }

    #[test]
    fn routes_only_one_segment_under_tasks() {
        assert_eq!(route(&Method::GET, "/tasks/abc"), Route::Task("abc"));
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
        assert_eq!(keys.len(), 8, "{keys:?}");
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
    async fn unknown_task_paths_and_methods() {
        let (status, body, _) = call(&MemoryPorts::with(&["t1"]), Method::GET, "/tasks/t2").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("task_not_found")));
        assert!(body["message"].as_str().unwrap().contains("t2"));

        let (status, body, _) = call(&MemoryPorts::with(&["t1"]), Method::GET, "/results/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

        let (status, body, response) = call(&MemoryPorts::with(&["t1"]), Method::DELETE, "/tasks/t1").await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
        assert_eq!(response.headers()[header::ALLOW], "GET");
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
    }
}
