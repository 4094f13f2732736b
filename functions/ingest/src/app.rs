//! The Lambda-facing side: `POST /callback[/<token>]` in, JSON out. Routing, authentication,
//! limits and answers around [`crate::domain::ingest`], over any [`Ports`] (AWS in the Lambda,
//! in memory in the tests and the benchmark).

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::json;
use suno_callbacks::{ParseError, parse_callback};
use tracing::Instrument;

use crate::Config;
use crate::auth::{Auth, Refusal};
use crate::aws::AwsPorts;
use crate::domain::{Ports, Settings, ingest};
use crate::error::IngestError;

/// The ingest function with its clients, built once per instance.
pub struct App<P = AwsPorts> {
    ports: P,
    auth: Auth,
    max_body_bytes: usize,
    settings: Settings,
}

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        if config.is_unauthenticated() {
            tracing::warn!("ALLOW_UNAUTHENTICATED=true: accepting callbacks from anyone");
        }
        let ports = AwsPorts::new(&config, sdk);
        App::over(&config, ports)
    }
}

impl<P: Ports> App<P> {
    fn over(config: &Config, ports: P) -> App<P> {
        App {
            ports,
            auth: Auth::from_config(config),
            max_body_bytes: config.max_body_bytes,
            settings: Settings::default(),
        }
    }

    /// The app over other ports (the in-memory ones of the tests and the benchmark).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_ports(config: &Config, ports: P) -> App<P> {
        App::over(config, ports)
    }

    /// Other lease and wait timings.
    #[cfg(test)]
    fn with_settings(mut self, settings: Settings) -> App<P> {
        self.settings = settings;
        self
    }

    /// Answer one request; every outcome is an HTTP response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let request_id = uuid::Uuid::new_v4().to_string();
        // No path (it may hold the token) and no URL in the span or the logs.
        let span = tracing::info_span!("callback", request_id = %request_id, task_id = tracing::field::Empty);
        self.respond(req, &request_id).instrument(span).await
    }

    async fn respond(&self, req: Request, request_id: &str) -> Response<Body> {
        let path_token = match route(req.method(), routed_path(&req), self.auth.expects_path_token()) {
            Route::Callback { token } => token,
            Route::MethodNotAllowed => {
                let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
                return response;
            }
            Route::NotFound => return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        };
        if let Err(refusal) = self.auth.check_before_body(path_token, req.headers()) {
            return unauthorized(refusal);
        }

        let body: &[u8] = req.body().as_ref();
        if body.len() > self.max_body_bytes {
            tracing::warn!(bytes = body.len(), "callback refused: body too large");
            let message = format!("the body is {} bytes; at most {} are accepted", body.len(), self.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
        }
        let event = match parse_callback(body) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(reason = parse_error_code(&e), "callback refused: {e}");
                return error(StatusCode::BAD_REQUEST, parse_error_code(&e), &e.to_string());
            }
        };
        tracing::Span::current().record("task_id", event.task_id.as_str());

        let now = self.ports.now().unix_seconds();
        if let Err(refusal) = self.auth.check_signature(event.task_id.as_str(), req.headers(), now) {
            return unauthorized(refusal);
        }

        match ingest(&self.ports, &self.settings, &event, body, request_id).await {
            Ok(outcome) => {
                let status = if outcome.duplicate { "duplicate" } else { "accepted" };
                tracing::info!(
                    family = %event.family,
                    stage = %event.stage,
                    task_stage = %outcome.task_stage,
                    files = event.files.len(),
                    files_queued = outcome.files_queued,
                    "callback {status}"
                );
                let body = json!({
                    "status": status,
                    "task_id": event.task_id.as_str(),
                    "stage": event.stage.as_str(),
                    "task_stage": outcome.task_stage.as_str(),
                    "files": event.files.len(),
                    "files_queued": outcome.files_queued,
                });
                respond_json(StatusCode::OK, &body)
            }
            Err(e) => {
                tracing::error!(error = %e, code = e.code(), retryable = e.is_retryable(), "callback not fully processed");
                let status = match e {
                    IngestError::TooLargeToRecord { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                error(status, e.code(), e.public_message())
            }
        }
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `POST /callback` or `POST /callback/<token>` (the token still as sent).
    Callback {
        token: Option<&'a str>,
    },
    MethodNotAllowed,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str, expects_token: bool) -> Route<'a> {
    let token = match path.strip_prefix("/callback") {
        Some("") => None,
        Some(rest) if expects_token => match rest.strip_prefix('/') {
            Some(token) if !token.contains('/') => Some(token),
            _ => return Route::NotFound,
        },
        _ => return Route::NotFound,
    };
    if method == Method::POST { Route::Callback { token } } else { Route::MethodNotAllowed }
}

/// The request path without the API Gateway stage that lambda_http puts in front of it for
/// named stages (`/prod/callback` → `/callback`).
fn routed_path(req: &Request) -> &str {
    let path = req.uri().path();
    let stage = match req.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.stage.as_deref(),
        Some(lambda_http::request::RequestContext::ApiGatewayV1(ctx)) => ctx.stage.as_deref(),
        _ => None,
    };
    match stage {
        Some(stage) if stage != "$default" => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(stage))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path),
        _ => path,
    }
}

fn parse_error_code(e: &ParseError) -> &'static str {
    match e {
        ParseError::NotJson(_) => "invalid_json",
        ParseError::NotAnObject => "not_a_json_object",
        ParseError::NoTaskId => "missing_task_id",
        ParseError::InvalidTaskId(_) => "invalid_task_id",
    }
}

fn unauthorized(refusal: Refusal) -> Response<Body> {
    tracing::warn!(reason = refusal.reason, "callback refused: {}", refusal.message);
    let body = json!({ "error": "unauthorized", "reason": refusal.reason, "message": refusal.message });
    respond_json(StatusCode::UNAUTHORIZED, &body)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    respond_json(status, &json!({ "error": code, "message": message }))
}

fn respond_json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;
