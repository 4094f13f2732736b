//! The local HTTP server: hyper 1 on 127.0.0.1, each request converted into the
//! `lambda_http::Request` API Gateway would hand the function, and the function's response
//! converted back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::http;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use tokio::net::TcpListener;

use crate::shutdown::StopSignal;

/// API Gateway's payload limit; larger requests never reach the function there either.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Lambda's limit on a synchronous invocation's response, as [`response_payload_bytes`]
/// counts it; past it API Gateway answers 500.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// How long open connections may finish after a stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which function answers a path (template.yaml's routes; the rest goes to ingest, which
/// answers 404 itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ingest,
    Results,
}

pub fn route(path: &str) -> Route {
    if path == "/tasks" || path.starts_with("/tasks/") { Route::Results } else { Route::Ingest }
}

/// Something that answers Lambda HTTP requests (the functions' `App::handle`).
pub trait LambdaHttp: Send + Sync + 'static {
    fn call(&self, req: lambda_http::Request) -> impl Future<Output = lambda_http::Response<lambda_http::Body>> + Send;
}

/// The body as API Gateway passes it: text when it is UTF-8, binary otherwise.
pub fn lambda_body(bytes: Bytes) -> lambda_http::Body {
    if bytes.is_empty() {
        return lambda_http::Body::Empty;
    }
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => lambda_http::Body::Text(text),
        Err(e) => lambda_http::Body::Binary(e.into_bytes()),
    }
}

/// Query string parameters, decoded, repeated names kept in order.
pub fn query_parameters(query: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.entry(name.into_owned()).or_default().push(value.into_owned());
    }
    map
}

/// A hyper request (head + collected body) as the function receives it in Lambda.
pub fn to_lambda_request(parts: http::request::Parts, body: Bytes) -> lambda_http::Request {
    let path = parts.uri.path().to_owned();
    let query = query_parameters(parts.uri.query());
    lambda_http::Request::from_parts(parts, lambda_body(body))
        .with_raw_http_path(path)
        .with_query_string_parameters(query)
}

/// The size of the response as the function hands it to Lambda: API Gateway's payload 2.0
/// JSON, the body a JSON string (escaped), or base64 when it is binary, its headers beside it.
pub fn response_payload_bytes(parts: &http::response::Parts, body: &lambda_http::Body) -> usize {
    let body = match body {
        lambda_http::Body::Text(text) => {
            let mut counted = ByteCount(0);
            serde_json::to_writer(&mut counted, text).map_or(usize::MAX, |()| counted.0)
        }
        other => other.as_ref().len().div_ceil(3) * 4 + 2,
    };
    let headers: usize = parts.headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 6).sum();
    let envelope = r#"{"statusCode":000,"headers":{},"body":,"isBase64Encoded":false}"#.len();
    envelope + headers + body
}

/// A writer that keeps only how many bytes it was given.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The function's response as a hyper response; one over Lambda's response limit is a 500,
/// as API Gateway answers it.
pub fn from_lambda_response(response: lambda_http::Response<lambda_http::Body>) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let payload = response_payload_bytes(&parts, &body);
    if payload > MAX_RESPONSE_BYTES {
        tracing::error!(
            bytes = payload,
            "the function's response is over Lambda's 6 MB limit: API Gateway answers 500"
        );
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response_too_large",
            "the function's response is over Lambda's 6 MB limit",
        );
    }
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(text) => Bytes::from(text),
        lambda_http::Body::Binary(bytes) => Bytes::from(bytes),
        other => Bytes::copy_from_slice(other.as_ref()),
    };
    Response::from_parts(parts, Full::new(bytes))
}

/// A path fit for the log: the callback token is a secret, so whatever follows a `callback/`
/// is left out, wherever it stands (`//callback/<token>` reaches ingest too).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.find("callback/") {
        Some(at) => format!("{}callback/<token>", &path[..at]).into(),
        None => path.into(),
    }
}

/// A JSON error answer from the runner itself (never from a function), in the functions'
/// shape: a code and a message.
pub fn error_response(status: StatusCode, error: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": error, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// Convert, call the function (a panic becomes a 500, as a crashed Lambda would be a 502),
/// convert back, and log one line.
pub async fn handle<H: LambdaHttp>(handler: Arc<H>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let response = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            // API Gateway's own limit (10 MB) refuses such a request before a function sees it.
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body larger than 10 MiB")
        }
        Err(_) => error_response(StatusCode::BAD_REQUEST, "unreadable_body", "could not read the request body"),
        Ok(collected) => {
            let request = to_lambda_request(parts, collected.to_bytes());
            match tokio::spawn(async move { handler.call(request).await }).await {
                Ok(response) => from_lambda_response(response),
                Err(e) => {
                    tracing::error!(error = %e, "handler crashed");
                    error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "handler_crashed",
                        "the handler crashed; see the runner's log",
                    )
                }
            }
        }
    };
    let ms = started.elapsed().as_millis();
    tracing::info!("{method} {} -> {} ({ms} ms)", loggable_path(&path), response.status().as_u16());
    response
}

/// Accept HTTP/1.1 connections on `listener` until `stop`, then let open ones finish briefly.
pub async fn serve<S, Fut>(listener: TcpListener, service: S, mut stop: StopSignal)
where
    S: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = service.clone();
                let hyper_service = hyper::service::service_fn(move |req| {
                    let service = service.clone();
                    async move { Ok::<_, Infallible>(service(req).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper_service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.stopped() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}

/// Serve Lambda-style handlers.
pub async fn serve_lambda<H: LambdaHttp>(listener: TcpListener, handler: Arc<H>, stop: StopSignal) {
    serve(listener, move |req| handle(handler.clone(), req), stop).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn routes_tasks_to_results_and_everything_else_to_ingest() {
        assert_eq!(route("/tasks/abc"), Route::Results);
        assert_eq!(route("/tasks"), Route::Results);
        assert_eq!(route("/callback"), Route::Ingest);
        assert_eq!(route("/callback/tok"), Route::Ingest);
        assert_eq!(route("/taskset"), Route::Ingest);
        assert_eq!(route("/"), Route::Ingest);
    }

    #[test]
    fn request_keeps_method_path_headers_query_and_body() {
        let head = parts(
            "POST",
            "/callback/tok?a=1&b=x%20y&a=2",
            &[("X-Webhook-Timestamp", "1700000000"), ("content-type", "application/json")],
        );
        let req = to_lambda_request(head, Bytes::from_static(br#"{"code":200}"#));
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/callback/tok");
        assert_eq!(req.raw_http_path(), "/callback/tok");
        assert_eq!(req.headers()["x-webhook-timestamp"], "1700000000");
        assert_eq!(req.headers()["content-type"], "application/json");
        let query = req.query_string_parameters();
        assert_eq!(query.all("a"), Some(vec!["1", "2"]));
        assert_eq!(query.first("b"), Some("x y"));
        assert_eq!(req.body(), &Body::Text(r#"{"code":200}"#.to_owned()));
    }

    #[test]
    fn bodies_are_text_binary_or_empty() {
        assert_eq!(lambda_body(Bytes::new()), Body::Empty);
        assert_eq!(lambda_body(Bytes::from_static(b"hi")), Body::Text("hi".into()));
        assert_eq!(lambda_body(Bytes::from_static(&[0xff, 0x00])), Body::Binary(vec![0xff, 0x00]));
        let req = to_lambda_request(parts("GET", "/tasks/t1", &[]), Bytes::new());
        assert!(req.query_string_parameters().is_empty());
        assert_eq!(req.body(), &Body::Empty);
    }

    #[tokio::test]
    async fn response_keeps_status_headers_and_body() {
        let response = http::Response::builder()
            .status(401)
            .header("content-type", "application/json")
            .body(Body::Text(r#"{"error":"bad signature"}"#.into()))
            .unwrap();
        let converted = from_lambda_response(response);
        assert_eq!(converted.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(converted.headers()["content-type"], "application/json");
        let body = converted.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":"bad signature"}"#);
        let binary = from_lambda_response(http::Response::new(Body::Binary(vec![1, 2, 3])));
        assert_eq!(&binary.into_body().collect().await.unwrap().to_bytes()[..], &[1, 2, 3]);
        // Over Lambda's response limit, as it counts it: API Gateway's 500, not the answer. A
        // body of quotes doubles when escaped; a binary one grows by a third in base64.
        let status = |body: Body| from_lambda_response(http::Response::new(body)).status();
        let half = MAX_RESPONSE_BYTES / 2;
        assert_eq!(status(Body::Text("x".repeat(half + 1))), StatusCode::OK);
        assert_eq!(status(Body::Text("\"".repeat(half + 1))), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(Body::Binary(vec![0; half])), StatusCode::OK);
        assert_eq!(status(Body::Binary(vec![0; MAX_RESPONSE_BYTES * 3 / 4 + 1])), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(Body::Text("x".repeat(MAX_RESPONSE_BYTES))), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn tokens_never_reach_the_log() {
        assert_eq!(loggable_path("/callback/s3cret"), "/callback/<token>");
        assert_eq!(loggable_path("//callback/s3cret"), "//callback/<token>");
        assert_eq!(loggable_path("/callback//s3cret"), "/callback/<token>");
        assert_eq!(loggable_path("/hooks/callback/s3cret/x"), "/hooks/callback/<token>");
        assert_eq!(loggable_path("/callback"), "/callback");
        assert_eq!(loggable_path("/tasks/t1"), "/tasks/t1");
    }
}
