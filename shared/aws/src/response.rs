//! The JSON answers of the HTTP functions (ingest, results): every error in one shape,
//! `{"error": "<code>", "message": "…"}` (ingest adds fields to some), and no answer kept by
//! a shared cache (`Cache-Control: no-store`: results' carry signed links).

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

/// `body` as JSON with `status`; a body that cannot be written as JSON (none of ours: a bug)
/// answers 500 `internal`.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
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
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error's body: its stable `code` and a `message` for people.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "message": message })
}

/// An error answer ([`error_body`]) with `status`.
pub fn error(status: StatusCode, code: &str, message: impl AsRef<str>) -> Response<Body> {
    json(status, &error_body(code, message.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_json_with_its_code_and_message_and_no_store() {
        let response = error(StatusCode::CONFLICT, "task_conflict", "another family");
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let Body::Text(text) = response.body() else { panic!("a text body") };
        let body: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(body, serde_json::json!({ "error": "task_conflict", "message": "another family" }));
    }

    #[test]
    fn a_body_that_cannot_be_json_answers_500_internal() {
        // JSON keys are strings: a map keyed by pairs cannot be written.
        let unwritable = std::collections::BTreeMap::from([((1, 2), 3)]);
        let response = json(StatusCode::OK, &unwritable);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let Body::Text(text) = response.body() else { panic!("a text body") };
        assert_eq!(text, r#"{"error":"internal","message":"response not serialisable"}"#);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
