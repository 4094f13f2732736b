use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Context, RequestExt, Response, service_fn};
use serde_json::json;

use super::*;

/// An HTTP API event (payload 2.0) for `POST /callback` with `raw_query` and, when given, an
/// `X-Forwarded-Proto` header.
fn http_api_event(raw_query: &str, forwarded_proto: Option<&str>) -> LambdaEvent<LambdaRequest> {
    let mut headers = json!({ "host": "abc123.execute-api.us-east-1.amazonaws.com" });
    if let Some(proto) = forwarded_proto {
        headers["x-forwarded-proto"] = json!(proto);
    }
    let event = json!({
        "version": "2.0",
        "routeKey": "POST /callback",
        "rawPath": "/callback",
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "http": { "method": "POST", "path": "/callback", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10" },
            "requestId": "Kx1pHjVyoAMEYxw=",
            "routeKey": "POST /callback",
            "stage": "$default",
            "timeEpoch": 1763910000000_u64
        },
        "isBase64Encoded": false,
        "body": "{}"
    });
    let payload = serde_json::from_value(event).expect("an HTTP API event");
    LambdaEvent::new(payload, Context::default())
}

/// The request a handler saw, and the answer lambda_http made of its response.
async fn served(event: LambdaEvent<LambdaRequest>) -> (Request, serde_json::Value) {
    let seen = Arc::new(Mutex::new(None));
    let handler = {
        let seen = seen.clone();
        service_fn(move |req: Request| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some(req);
                Ok::<_, std::convert::Infallible>(Response::builder().status(StatusCode::OK).body(Body::Empty).unwrap())
            }
        })
    };
    let answer = Adapter::from(handler).map_request(convertible).oneshot(event).await.unwrap();
    let req = seen.lock().unwrap().take().expect("the handler ran");
    (req, serde_json::to_value(answer).unwrap())
}

#[test]
fn lambda_http_alone_panics_on_what_convertible_encodes() {
    // What this module exists for: should lambda_http stop panicking, it can go.
    let too_long = "h".repeat(65);
    let cases = [
        (("a=\"b\"", None), None),
        (("a=<b> c", None), None),
        (("", Some("https, http")), None),
        (("", Some(too_long.as_str())), None),
        (("", None), Some("abc:99999")),
        (("", None), Some("a\"b.example")),
        (("", None), Some("a%22b.example")),
        (("", None), Some("a{b}.example")),
    ];
    for ((query, proto), host) in cases {
        let mut adapter = Adapter::from(service_fn(|_: Request| async { Ok::<_, std::convert::Infallible>("") }));
        let event = http_api_event(query, proto);
        let event = match host {
            Some(host) => with_host(event, host),
            None => event,
        };
        let converted = catch_unwind(AssertUnwindSafe(|| drop(adapter.call(event))));
        assert!(converted.is_err(), "lambda_http converted {query:?} / {proto:?} / {host:?} without panicking");
    }
}

#[tokio::test]
async fn a_query_http_refuses_reaches_the_handler_encoded_and_reads_as_sent() {
    let (req, answer) = served(http_api_event("a=\"b\"&c=<d>%20e f&g=h#i&j=\u{e9}&\u{1}", None)).await;
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(req.uri().query(), Some("a=%22b%22&c=%3Cd%3E%20e%20f&g=h%23i&j=\u{e9}&%01"));
    let params = req.query_string_parameters();
    assert_eq!(params.first("a"), Some("\"b\""));
    assert_eq!(params.first("c"), Some("<d> e f"));
    assert_eq!(params.first("g"), Some("h#i"));
    assert_eq!(params.first("j"), Some("\u{e9}"));
    assert_eq!(req.uri().path(), "/callback");
}

#[tokio::test]
async fn a_request_names_api_gateway_s_id_of_it() {
    let (req, _) = served(http_api_event("", None)).await;
    assert_eq!(api_request_id(&req), Some("Kx1pHjVyoAMEYxw="));
    assert_eq!(api_request_id(&Request::default()), None, "none without API Gateway's context");
}

#[tokio::test]
async fn a_query_http_takes_is_left_as_sent() {
    let query = "a=%22b%22&c=d+e&f={g}&h=\u{e9}";
    let mut event = http_api_event(query, None);
    event = convertible(event);
    let LambdaRequest::ApiGatewayV2(request) = &event.payload else { panic!("an HTTP API event") };
    assert_eq!(request.raw_query_string.as_deref(), Some(query));
    let (req, answer) = served(http_api_event(query, Some("https"))).await;
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(req.uri().scheme_str(), Some("https"));
    assert_eq!(req.query_string_parameters().first("f"), Some("{g}"));
}

#[tokio::test]
async fn a_forwarded_proto_other_than_http_or_https_is_dropped() {
    let too_long = "h".repeat(65);
    for proto in ["https, http", "", " https", "1http", "ht tp", "h\u{e9}", "ftp", too_long.as_str()] {
        let (req, answer) = served(http_api_event("", Some(proto))).await;
        assert_eq!(answer["statusCode"], 200, "{proto:?}");
        assert_eq!(req.uri().scheme_str(), Some("https"), "{proto:?}");
        assert!(req.headers().get("x-forwarded-proto").is_none(), "{proto:?}");
    }
    let (req, _) = served(http_api_event("", Some("http"))).await;
    assert_eq!(req.uri().scheme_str(), Some("http"));
    assert_eq!(req.headers()["x-forwarded-proto"], "http");
    let (req, _) = served(http_api_event("", Some("HTTPS"))).await;
    assert_eq!(req.uri().scheme_str(), Some("https"));
}

/// `event` with its `Host` header set to `host`.
fn with_host(mut event: LambdaEvent<LambdaRequest>, host: &str) -> LambdaEvent<LambdaRequest> {
    let LambdaRequest::ApiGatewayV2(request) = &mut event.payload else { panic!("an HTTP API event") };
    request.headers.insert(HOST, host.parse().expect("a header value"));
    event
}

#[tokio::test]
async fn a_host_no_url_can_hold_is_dropped_for_the_domain_name() {
    for host in ["abc:99999", "a b", "[::1", "a\"b.example", "a%22b.example", "a{b}.example"] {
        let (req, answer) = served(with_host(http_api_event("", None), host)).await;
        assert_eq!(answer["statusCode"], 200, "{host:?}");
        assert_eq!(req.uri().host(), Some("abc123.execute-api.us-east-1.amazonaws.com"), "{host:?}");
        assert!(req.headers().get(HOST).is_none(), "{host:?}");
    }
    let (req, _) = served(with_host(http_api_event("", None), "hooks.example.com:8443")).await;
    assert_eq!(req.uri().authority().map(|a| a.as_str()), Some("hooks.example.com:8443"));
}
