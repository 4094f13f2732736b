//! `lambda_http::run` for ingest and results, with each event first made one lambda_http's
//! conversion cannot refuse. That conversion builds the request's `http::Uri` from an HTTP
//! API's `rawQueryString` as the client sent it, its scheme from `X-Forwarded-Proto` and its
//! authority from `Host`, and panics on what `url` or `http` refuses (a `"`, `<`, `>`, space
//! or control character in the query; a header naming no scheme, or a scheme over 64
//! characters; a host with a port past 65535): any client could then cost a 500 and an error
//! the function's alarm counts, before the handler could answer (should API Gateway pass
//! such values on: for the query it does). So those query bytes are percent-encoded first (a
//! reader of the query decodes them back), an `X-Forwarded-Proto` other than `http` or
//! `https` is dropped (the scheme then reads `https`), and so is a `Host` no URL can hold
//! (the host is then the request context's domain name). Neither function reads either.

use std::fmt::Debug;

use lambda_http::http::header::HOST;
use lambda_http::http::{HeaderMap, HeaderName};
use lambda_http::lambda_runtime::{self, Diagnostic};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, IntoResponse, LambdaEvent, Request, RequestExt, Service};

/// What `http` refuses in a query (it takes non-ASCII): the WHATWG URL standard's query
/// percent-encode set, whose `#` would otherwise end the query.
fn refused_in_query(c: char) -> bool {
    c.is_ascii_control() || matches!(c, ' ' | '"' | '#' | '<' | '>')
}

/// `query` with what `http` refuses percent-encoded, the rest as sent.
fn encoded(query: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(query.len() + 16);
    for c in query.chars() {
        if refused_in_query(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// API Gateway's id of `req` (`requestContext.requestId`), as the HTTP API's access log
/// writes it (`requestId`): a function's lines carry it so that an access log line finds them.
pub fn api_request_id(req: &Request) -> Option<&str> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.request_id.as_deref(),
        _ => None,
    }
}

/// Serve `handler` as `lambda_http::run` does, each event made [`convertible`] first.
pub async fn run<'a, R, S, E>(handler: S) -> Result<(), lambda_http::Error>
where
    S: Service<Request, Response = R, Error = E>,
    S::Future: Send + 'a,
    R: IntoResponse,
    E: Debug + Into<Diagnostic>,
{
    lambda_runtime::run(Adapter::from(handler).map_request(convertible)).await
}

/// `event` with what lambda_http's conversion would panic on made harmless.
pub fn convertible(mut event: LambdaEvent<LambdaRequest>) -> LambdaEvent<LambdaRequest> {
    let headers = match &mut event.payload {
        LambdaRequest::ApiGatewayV2(request) => {
            if let Some(query) = &mut request.raw_query_string
                && query.contains(refused_in_query)
            {
                *query = encoded(query);
            }
            &mut request.headers
        }
        _ => return event,
    };
    let is_http = |proto: &str| proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("http");
    drop_unless(headers, &X_FORWARDED_PROTO, is_http);
    // Both: the url crate takes a host with `"` or `{` (percent-decoded too) that lambda_http's
    // `http::Uri` refuses, and `http` takes a port past 65535 that the url crate refuses.
    let usable_host = |host: &str| {
        url::Url::parse(&format!("https://{host}/")).is_ok()
            && host.parse::<lambda_http::http::uri::Authority>().is_ok()
    };
    drop_unless(headers, &HOST, usable_host);
    event
}

/// Drop `name` unless its (first) value is text that `keep` takes.
fn drop_unless(headers: &mut HeaderMap, name: &HeaderName, keep: impl Fn(&str) -> bool) {
    if headers.get(name).is_some_and(|value| !value.to_str().is_ok_and(&keep)) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests;
