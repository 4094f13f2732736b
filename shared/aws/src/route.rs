//! The path an HTTP API routed a request by. API Gateway names the route it matched
//! (`POST /callback/{token}`, `GET /tasks/{task_id}`) and the path parameters it took: the
//! route's template filled with them is the path the function routes by, whatever stands in
//! front of it in the raw path (a named stage: `/prod/tasks/...`, or a custom domain's API
//! mapping key, should the raw path hold it: `/hooks/tasks/...`).
//! Without a route key (the local runner's requests), the raw path without a named stage in
//! front of it (`/prod/callback`). Either
//! way the path is percent-encoded, as a raw path is: HTTP APIs pass path parameters
//! decoded, so they are encoded again, and a reader decodes each segment once.

use std::borrow::Cow;

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// What a path segment cannot hold as it is (the WHATWG URL standard's path percent-encode
/// set, with `/` and `%`): a filled parameter is one segment, and `%` must not read as an
/// escape when the segment is decoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// The path `req` was routed by: its route's template filled with its path parameters, else
/// its raw path without a named stage.
pub fn routed_path(req: &Request) -> Cow<'_, str> {
    let path = req.uri().path();
    let (stage, route_key) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (ctx.stage.as_deref(), ctx.route_key.as_deref()),
        _ => (None, None),
    };
    let template = route_key.and_then(|key| key.split_once(' ')).map(|(_, template)| template);
    if let Some(filled) = template.and_then(|template| fill(template, |name| req.path_parameters_ref()?.first(name))) {
        return Cow::Owned(filled);
    }
    let unstaged = match stage {
        Some(stage) if stage != "$default" => path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(stage))
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path),
        _ => path,
    };
    Cow::Borrowed(unstaged)
}

/// `template` (`/tasks/{task_id}`) with each `{name}` segment replaced by `param(name)`,
/// percent-encoded. None when it is no path, a parameter is missing, or one is greedy
/// (`{proxy+}`: its value spans segments the template does not show).
fn fill<'a>(template: &str, param: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    if !template.starts_with('/') {
        return None;
    }
    let mut filled = String::with_capacity(template.len());
    for (i, segment) in template.split('/').enumerate() {
        if i > 0 {
            filled.push('/');
        }
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if name.ends_with('+') => return None,
            Some(name) => filled.extend(utf8_percent_encode(param(name)?, SEGMENT)),
            None => filled.push_str(segment),
        }
    }
    Some(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_filled_with_its_parameters() {
        let param = |name: &str| match name {
            "token" => Some("t0k"),
            "task_id" => Some("abc"),
            _ => None,
        };
        assert_eq!(fill("/callback", param).as_deref(), Some("/callback"));
        assert_eq!(fill("/callback/{token}", param).as_deref(), Some("/callback/t0k"));
        assert_eq!(fill("/tasks/{task_id}", param).as_deref(), Some("/tasks/abc"));
        assert_eq!(fill("/tasks/{missing}", param), None);
        // Passed decoded: encoded again, so that decoding the segment once gives it back.
        let decoded = |_: &str| Some("a%2A b/c*");
        assert_eq!(fill("/tasks/{task_id}", decoded).as_deref(), Some("/tasks/a%252A%20b%2Fc*"));
        assert_eq!(fill("/{proxy+}", param), None);
        assert_eq!(fill("$default", param), None);
    }

    /// An HTTP API (payload v2) request for `raw_path`, routed by `route_key`.
    fn request(raw_path: &str, route_key: &str, stage: &str) -> Request {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": route_key, "rawPath": raw_path, "rawQueryString": "",
            "headers": {"host": "api.example.com"},
            "pathParameters": {"task_id": "abc"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc123", "domainName": "api.example.com",
                "http": {"method": "GET", "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10",
                         "userAgent": "x"},
                "requestId": "r1", "routeKey": route_key, "stage": stage,
                "time": "23/Nov/2025:15:00:00 +0000", "timeEpoch": 1_763_910_000_000_i64
            },
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn the_route_decides_whatever_stands_in_front_of_it() {
        // Whatever stands before the route in the raw path (a custom domain's API mapping
        // key, should it be there) does not change the route.
        let mapped = request("/hooks/tasks/abc", "GET /tasks/{task_id}", "$default");
        assert_eq!(mapped.uri().path(), "/hooks/tasks/abc");
        assert_eq!(routed_path(&mapped), "/tasks/abc");
        // No route named (a catch-all): the raw path, without a named stage.
        let staged = request("/prod/tasks/abc", "$default", "prod");
        assert_eq!(routed_path(&staged), "/tasks/abc");
        let plain = request("/tasks/abc", "$default", "$default");
        assert_eq!(routed_path(&plain), "/tasks/abc");
    }
}
