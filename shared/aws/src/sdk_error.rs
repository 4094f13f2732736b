//! What an AWS SDK error says, for logs and for the reasons records keep, and nothing more.
//!
//! Not the SDK's `DisplayErrorContext`: its text ends with the error's `Debug`, which for an
//! answer holds the raw HTTP response, every header and the whole body: a secret's value from
//! a GetSecretValue answer the SDK could not read, the `CanonicalRequest` (with the session
//! token) of S3's `SignatureDoesNotMatch`, a Query's items (signed file links). Those would
//! reach the logs, and the file reasons that `GET /tasks/{id}`, manifests and events show.

use std::error::Error;
use std::fmt::Write;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

/// `e` and its sources by their `Display` (the service's error code and message among them;
/// the request id too for an error the SDK does not model), after the HTTP status of an answer: `HTTP 503: service error: unhandled
/// error (ServiceUnavailable): Error { code: "ServiceUnavailable", … }`.
pub fn sdk_error_text<E: Error + 'static>(e: &SdkError<E, HttpResponse>) -> String {
    let status = e.raw_response().map(|response| format!("HTTP {}: ", response.status().as_u16()));
    status.unwrap_or_default() + &error_chain(e)
}

/// An error and its sources by their `Display`, `: `-separated (as `DisplayErrorContext`
/// without its `Debug`): for errors of the SDK that are not an [`SdkError`] (a body stream's).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let _ = write!(text, ": {source}");
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN";

    fn answer(status: u16, body: &str) -> HttpResponse {
        let mut response = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body.to_owned()));
        response.headers_mut().insert("x-amz-security-token", TOKEN.to_owned());
        response
    }

    /// S3's refusal of a signature carries the request it computed, the session token in it:
    /// the text has S3's code and message, and neither the body nor a header.
    #[test]
    fn a_service_error_says_its_status_code_and_message_not_its_answer() {
        let body = format!(
            "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not \
             match</Message><CanonicalRequest>x-amz-security-token:{TOKEN}</CanonicalRequest></Error>"
        );
        let meta = ErrorMetadata::builder()
            .code("SignatureDoesNotMatch")
            .message("The request signature we calculated does not match")
            .build();
        let e = SdkError::service_error(PutObjectError::generic(meta), answer(403, &body));
        let text = sdk_error_text(&e);
        assert!(text.starts_with("HTTP 403: service error"), "{text}");
        assert!(text.contains("SignatureDoesNotMatch") && text.contains("does not match"), "{text}");
        assert!(!text.contains(TOKEN) && !text.contains("CanonicalRequest"), "{text}");
        // What the SDK's own context would have said.
        let context = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
        assert!(context.contains(TOKEN), "the reason for this module: {context}");
    }

    /// An answer the SDK could not read (a 200 whose body is damaged): its body is a secret's
    /// value, which the text leaves out.
    #[test]
    fn a_response_error_says_why_it_was_not_read_not_what_it_held() {
        let body = r#"{"ARN":"arn","SecretString":"{\"hmac_keys\":[\"s3cr3t-v4lue\"]}""#;
        let why: Box<dyn Error + Send + Sync> = "unexpected end of input".into();
        let e: SdkError<GetSecretValueError, HttpResponse> = SdkError::response_error(why, answer(200, body));
        let text = sdk_error_text(&e);
        assert_eq!(text, "HTTP 200: response error: unexpected end of input");
        assert!(aws_sdk_s3::error::DisplayErrorContext(&e).to_string().contains("s3cr3t-v4lue"));
    }

    /// No answer at all: the chain alone.
    #[test]
    fn a_failure_without_an_answer_says_its_chain() {
        let e: SdkError<PutObjectError, HttpResponse> = SdkError::timeout_error("attempt timed out");
        assert_eq!(sdk_error_text(&e), "request has timed out: attempt timed out");
    }
}
