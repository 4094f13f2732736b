//! The outbound HTTP client of the functions that call parties outside AWS (the provider's
//! API, a user's webhook receiver): redirects not followed (a 3xx is an answer, never a way
//! to another host), proxies from the environment ignored, a connect timeout, a timeout
//! for each whole request, and idle connections dropped before a peer would close them.

use std::time::Duration;

/// How long a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle connection is kept for reuse: under the 5 s after which Node's HTTP
/// server (a common webhook receiver) closes one, so a request is not sent down a
/// connection the peer is closing (hyper checks the age when it takes one from the pool); and
/// one idle across a freeze of the function may have been closed meanwhile.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A client that names itself `user_agent` and gives up on a request after `timeout`. Fails
/// only when the TLS backend cannot start.
pub fn client(user_agent: &str, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    builder(user_agent).connect_timeout(CONNECT_TIMEOUT).timeout(timeout).build()
}

/// What every outbound client shares (no redirects followed, no proxy, idle connections
/// dropped, `user_agent`), its timeouts left to the caller: [`client`]'s, or the download's
/// for its sources.
pub fn builder(user_agent: &str) -> reqwest::ClientBuilder {
    // reqwest has no crypto provider of its own: use the SDK's (aws-lc-rs), once per process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .user_agent(user_agent)
}

/// The wait a 429 or 503 asks for in its `Retry-After` (None for other statuses, or a value
/// that is neither form): see [`retry_after`].
pub fn asked_wait(response: &reqwest::Response) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    retry_after(value, std::time::SystemTime::now())
}

/// A `Retry-After` value as a wait from `now`: delta-seconds (`120`) or an HTTP-date in any
/// of its three forms (`Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
/// `Sun Nov  6 08:49:37 1994`; a date already past is no wait), as the `httpdate` crate reads
/// them (strictly: the weekday must be the date's). None for anything else: the caller's
/// backoff applies. Seconds beyond what a u64 holds read as the longest wait (as RFC 9111
/// has caches read an overflowing delta-seconds), which every caller caps.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().map_or(Duration::from_secs(u64::MAX), Duration::from_secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether `host` is this machine's loopback (`localhost`, 127.0.0.1, ::1): where plain http
/// is allowed (local runs and tests).
pub fn is_loopback(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Why an answer's body was not read whole ([`read_capped`]).
#[derive(Debug)]
pub enum CappedRead {
    /// It runs past the limit: the rest is not read.
    TooLarge,
    /// The connection failed, or the client's timeout ended it.
    Failed(reqwest::Error),
}

/// The answer's whole body, read as it arrives until it would pass `limit` bytes (an answer
/// from outside AWS is held in memory only that far).
pub async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, CappedRead> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedRead::Failed)? {
        if body.len() + chunk.len() > limit {
            return Err(CappedRead::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What kind of failure a request's error is, told the same way by every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The peer was not reached, however that failed: a connect that timed out is this, not
    /// [`Failure::Timeout`] (nothing was sent, so nothing was slow to answer).
    Connect,
    /// Reached, then the request or its answer took longer than the client's timeout.
    Timeout,
    /// Anything else (a broken connection, a malformed answer, a body cut short).
    Other,
}

/// The kind of `e` (see [`Failure`]).
pub fn failure(e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        Failure::Connect
    } else if e.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Other
    }
}

/// A failed request and its causes on one line, each said once, without its URL (a source's
/// signed query must never reach a log or the record).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_every_http_date_form() {
        // 1994-11-06T08:49:00Z
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_740);
        let s = Duration::from_secs;
        assert_eq!(retry_after("120", now), Some(s(120)));
        assert_eq!(retry_after(" 0 ", now), Some(s(0)));
        for date in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(retry_after(date, now), Some(s(37)), "{date}");
        }
        assert_eq!(retry_after("99999999999999999999999", now), Some(s(u64::MAX)), "the longest wait");
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(s(0)), "already past");
        assert_eq!(retry_after("Mon, 07 Nov 1994 08:49:00 GMT", now), Some(s(86_400)));
        // Read as httpdate reads it: a weekday that is not the date's is no date.
        assert_eq!(retry_after("Mon, 06 Nov 1994 08:49:37 GMT", now), None, "6 Nov 1994 was a Sunday");
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov 6 08:49 1994",
            "2026-01-01T00:00:00Z",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    /// A request refused at connect, to a URL with a signed query: the text says what
    /// happened and why, each once, and nothing of the URL.
    #[tokio::test]
    async fn a_failed_request_is_described_with_its_causes_and_without_its_url() {
        let (origin, _held) = crate::test_http::refusing_origin();
        let url = format!("{origin}/file.mp3?X-Amz-Signature=secret0123");
        let e = client("test", Duration::from_secs(5)).unwrap().get(&url).send().await.unwrap_err();
        assert_eq!(failure(&e), Failure::Connect);
        let text = describe(e);
        assert!(!text.contains("secret0123") && !text.contains("/file.mp3"), "{text}");
        let parts: Vec<&str> = text.split(": ").collect();
        assert!(parts.len() >= 2, "the causes are there: {text}");
        for (i, part) in parts.iter().enumerate() {
            assert!(parts[i + 1..].iter().all(|later| !part.contains(later)), "each cause once: {text}");
        }
    }

    /// A client speaks TLS with the crypto provider `builder` installs (the Lambda builds carry
    /// no other): an HTTPS request to a loopback server presenting a certificate a test CA
    /// signed (testdata/tls), the client trusting that CA besides its own roots; a client
    /// without that CA refuses it.
    #[tokio::test]
    async fn a_client_speaks_https_with_the_provider_it_installs() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls");
        let read = |name: &str| std::fs::read(tls.join(name)).expect("testdata/tls");
        let chain = vec![CertificateDer::from_pem_slice(&read("localhost.pem")).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(&read("localhost.key.pem")).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(tcp).await.unwrap();
            let mut head = vec![0; 4096];
            let length = stream.read(&mut head).await.unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await.unwrap();
            let _ = stream.shutdown().await;
            // The second connection's handshake: refused by a client that does not trust it.
            let (tcp, _) = listener.accept().await.unwrap();
            let second = acceptor.accept(tcp).await.map(|_| ());
            (String::from_utf8_lossy(&head[..length]).into_owned(), second)
        });
        let ca = reqwest::Certificate::from_pem(&read("ca.pem")).unwrap();
        // `resolve`: no lookup of `localhost`, which a machine without /etc/hosts lacks.
        let client = builder("stemvault-test").add_root_certificate(ca).resolve("localhost", origin).build().unwrap();
        let answer = client.get(format!("https://localhost:{}/tls", origin.port())).send().await.unwrap();
        assert_eq!((answer.status().as_u16(), answer.text().await.unwrap()), (200, "ok".to_owned()));
        // A certificate the client does not trust is refused, not taken.
        let untrusting = builder("stemvault-test").resolve("localhost", origin).build().unwrap();
        let refused = untrusting.get(format!("https://localhost:{}/", origin.port())).send().await.unwrap_err();
        // Bounded: a client that failed before connecting leaves the server waiting.
        let (head, second) = tokio::time::timeout(Duration::from_secs(10), served).await.expect("served").unwrap();
        assert!(head.starts_with("GET /tls HTTP/1.1"), "{head}");
        assert!(second.is_err(), "the untrusting client ended the handshake: {refused:?}");
        // The process default, which reqwest's clients take: the SDK's aws-lc-rs.
        let installed = rustls::crypto::CryptoProvider::get_default().expect("installed by builder");
        let aws_lc_rs = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(format!("{:?}", installed.kx_groups), format!("{:?}", aws_lc_rs.kx_groups));
    }

    /// A listener whose queue is full drops new connections' SYNs, so a connect to it times
    /// out: a connect failure, not a slow answer.
    #[tokio::test]
    async fn a_connect_that_times_out_is_a_connect_failure() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let origin = listener.local_addr().unwrap();
        // Never accepted: these fill the queue (a backlog of 0 holds one).
        let mut held = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(origin)).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => break,
            }
        }
        // The whole request bounded too: where the queue does not drop SYNs, this fails, not hangs.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let e = client.get(format!("http://{origin}/")).send().await.unwrap_err();
        assert!(e.is_timeout(), "the connect timed out: {e:?}");
        assert_eq!(failure(&e), Failure::Connect);
        drop(held);
    }
}
