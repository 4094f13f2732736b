//! The HTTP side of [`PostWebhook`]: [`HttpPoster`] posts each webhook to `NOTIFY_URL` (no
//! redirects followed, no proxy, connect and overall timeouts) and reads the answer's status
//! and `Retry-After`, keeping the connection for the next webhook when it can.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use url::Url;

use crate::domain::{Answer, PostWebhook, REQUEST_TIMEOUT, Webhook};
use crate::error::PostError;

/// Posts webhooks to `NOTIFY_URL`: no redirects followed, no proxy, connect and overall
/// timeouts.
#[derive(Clone)]
pub struct HttpPoster {
    client: reqwest::Client,
    url: Url,
}

/// The URL as logged (it may hold a token).
impl std::fmt::Debug for HttpPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPoster").field("url", &stemvault_vault::shown::loggable(&self.url)).finish_non_exhaustive()
    }
}

impl HttpPoster {
    /// Fails only when the TLS backend cannot start.
    pub fn new(url: Url) -> Result<HttpPoster, reqwest::Error> {
        let client =
            stemvault_aws::http::client(concat!("stemvault-notify/", env!("CARGO_PKG_VERSION")), REQUEST_TIMEOUT)?;
        Ok(HttpPoster { client, url })
    }
}

impl PostWebhook for HttpPoster {
    async fn post_webhook(&self, webhook: &Webhook) -> Result<Answer, PostError> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", &webhook.id)
            .header("webhook-timestamp", webhook.timestamp.to_string())
            .header("webhook-signature", &webhook.signature)
            .body(webhook.body.clone())
            .send()
            .await
            .map_err(post_error)?;
        let answer =
            Answer { status: response.status().as_u16(), retry_after: stemvault_aws::http::asked_wait(&response) };
        if response.status().is_redirection() {
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let to = redirect_target(&self.url, location);
            // Every webhook would end in the dead-letter queue, with an ERROR line and an alarm
            // then: each attempt before is a warning, as any retried answer is.
            tracing::warn!(
                status = answer.status,
                to,
                "NOTIFY_URL redirects, and redirects are not followed: set NotifyUrl to where it points"
            );
        }
        drain(response).await;
        Ok(answer)
    }
}

/// Where a redirect from `notify_url` points, as the logs may show it: whether it stays on the
/// receiver's origin (then only its path or query changed: neither is shown, either may carry
/// the receiver's token), or the other origin, alone (no digest of the whole URL either: a
/// short token in it could be guessed against one).
fn redirect_target(notify_url: &Url, location: Option<&str>) -> String {
    let Some(target) = location.and_then(|l| notify_url.join(l).ok()) else {
        return "nowhere readable (no Location header, or not a URL)".to_owned();
    };
    if target.origin() == notify_url.origin() {
        "the same origin (another path or query)".to_owned()
    } else {
        format!("{}/…", target.origin().ascii_serialization())
    }
}

/// The most of an answer's body read to keep its connection.
const DRAINED_BYTES: usize = 64 * 1024;
/// The longest an answer's body is read for.
const DRAIN_WITHIN: Duration = Duration::from_secs(1);

/// Read a short answer's body to its end, so its connection goes back to the pool for the next
/// webhook (one whose body has not all arrived with the status is closed when left unread: the
/// next webhook pays a new TLS handshake). A long or slow body is dropped: the answer is its
/// status, whatever the body does.
async fn drain(mut response: reqwest::Response) {
    let read = async {
        let mut left = DRAINED_BYTES;
        while let Ok(Some(chunk)) = response.chunk().await {
            let Some(rest) = left.checked_sub(chunk.len()) else { return };
            left = rest;
        }
    };
    let _ = tokio::time::timeout(DRAIN_WITHIN, read).await;
}

/// The error without the URL (its query may carry a token of the receiver's), with its causes.
fn post_error(e: reqwest::Error) -> PostError {
    use stemvault_aws::http::{Failure, describe, failure};
    match failure(&e) {
        Failure::Connect => PostError::Connect(describe(e)),
        Failure::Timeout => PostError::Timeout(describe(e)),
        Failure::Other => PostError::Request(describe(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> Webhook {
        Webhook { id: "t1.stage.final".into(), timestamp: 1, signature: "v1,x".into(), body: "{}".into() }
    }

    /// A 200 with `body`, declaring `declared` bytes.
    fn ok_with(body: &str, declared: usize) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n{body}").into_bytes()
    }

    /// Webhooks to a receiver that keeps connections and answers with a body (40 KB: more than
    /// arrives with the status line; a body left unread then closes the connection) go over
    /// one connection: each answer's body is read to its end.
    #[tokio::test]
    async fn answers_with_a_body_keep_their_connection() {
        let body = "x".repeat(40_000);
        let (origin, connections) = stemvault_aws::test_http::answer_every(ok_with(&body, body.len())).await;
        let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
        for _ in 0..3 {
            assert_eq!(poster.post_webhook(&webhook()).await.unwrap(), Answer { status: 200, retry_after: None });
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A body over DRAINED_BYTES, or one that stops coming, is left, its connection with it:
    /// the answer is its status, within about DRAIN_WITHIN, not the request's whole timeout.
    #[tokio::test]
    async fn a_long_or_stalled_body_is_left_with_its_connection() {
        // Far over (1 MiB): hyper may read a little past what the drain asks for, and keep that.
        let long = "x".repeat(1 << 20);
        for reply in [ok_with(&long, long.len()), ok_with("the start", 1000)] {
            let (origin, connections) = stemvault_aws::test_http::answer_every(reply).await;
            let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
            for _ in 0..2 {
                let answered = tokio::time::timeout(REQUEST_TIMEOUT / 2, poster.post_webhook(&webhook()))
                    .await
                    .expect("the answer does not wait on the body");
                assert_eq!(answered.unwrap(), Answer { status: 200, retry_after: None });
            }
            assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "not kept");
        }
    }

    /// A redirect is logged with where it points, never with a path or query.
    #[test]
    fn a_redirect_is_shown_by_origin_only() {
        let notify = Url::parse("https://hooks.example.com/in/tok3n").unwrap();
        let target = |l| redirect_target(&notify, l);
        assert_eq!(target(Some("/in/tok3n/")), "the same origin (another path or query)");
        assert_eq!(target(Some("https://new.example.com/in/tok3n?x=1")), "https://new.example.com/…");
        assert_eq!(target(Some("http://hooks.example.com/in/tok3n")), "http://hooks.example.com/…");
        assert_eq!(target(Some("https://new.example.com:8443/x")), "https://new.example.com:8443/…");
        assert!(target(None).starts_with("nowhere"));
    }

    /// A redirect is not followed, and each answer of one is logged once, as a WARN (as any
    /// retried answer is: the ERROR comes with the dead-letter queue), naming the other origin
    /// and never the target's path or query.
    #[tokio::test]
    async fn a_redirect_is_a_warning_that_names_its_origin_only() {
        let captured = stemvault_aws::log_capture::capture_logs();
        let moved = "HTTP/1.1 308 Permanent Redirect\r\nlocation: https://new.example.com/in/tok3n?k=1\r\n\
                     content-length: 0\r\n\r\n";
        let (origin, _) = stemvault_aws::test_http::answer_every(moved.as_bytes().to_vec()).await;
        let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
        assert_eq!(poster.post_webhook(&webhook()).await.unwrap(), Answer { status: 308, retry_after: None });
        let lines = captured.lines_with("NOTIFY_URL redirects");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].is(tracing::Level::WARN, &["https://new.example.com/"]), "{lines:?}");
        assert!(!lines[0].text.contains("tok3n") && !lines[0].text.contains("k=1"), "{lines:?}");
    }

    /// The poster against a receiver on loopback: a 429 or 503 says how long to wait, in
    /// seconds or as a date; no other status does, and neither does one without the header.
    #[tokio::test]
    async fn a_429_or_503_says_how_long_to_wait_and_nothing_else_does() {
        // A date, read against the real clock: two years from now.
        let in_two_years = std::time::SystemTime::now() + Duration::from_secs(2 * 365 * 86_400);
        let reply = |status: &str, header: &str| {
            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n{header}connection: close\r\n\r\n").into_bytes()
        };
        let (origin, served) = stemvault_aws::test_http::answer_in_turn(vec![
            reply("503 Service Unavailable", "retry-after: 120\r\n"),
            reply("429 Too Many Requests", &format!("retry-after: {}\r\n", httpdate::fmt_http_date(in_two_years))),
            reply("500 Internal Server Error", "retry-after: 120\r\n"),
            reply("503 Service Unavailable", ""),
            reply("204 No Content", ""),
        ])
        .await;
        let poster = HttpPoster::new(Url::parse(&format!("{origin}/hooks")).unwrap()).unwrap();
        let webhook = webhook();
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(poster.post_webhook(&webhook).await.unwrap());
        }
        assert_eq!(answers[0], Answer { status: 503, retry_after: Some(Duration::from_secs(120)) });
        assert!(
            answers[1].retry_after.is_some_and(|wait| wait > Duration::from_secs(365 * 86_400)),
            "{:?}",
            answers[1]
        );
        assert_eq!(answers[2], Answer { status: 500, retry_after: None });
        assert_eq!(answers[3], Answer { status: 503, retry_after: None });
        assert_eq!(answers[4], Answer { status: 204, retry_after: None });
        let requests = served.await.unwrap();
        assert!(requests[0].starts_with("POST /hooks "), "{}", requests[0]);
        assert!(requests[0].contains("webhook-id: t1.stage.final"), "{}", requests[0]);
    }
}
