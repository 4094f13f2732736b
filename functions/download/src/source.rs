//! Opening a source URL over HTTP under the [`SourcePolicy`].
//!
//! * Every URL, the first and each redirect target (at most [`MAX_REDIRECTS`]), is checked
//!   against the policy before anything is sent to it. Redirects are followed here, by hand,
//!   so each hop goes through the same check and the same client choice.
//! * A URL matched by a host pattern is fetched with a client whose DNS resolver refuses any
//!   name that resolves to a non-public address. The check runs on the addresses the
//!   connection will actually use, so a name that changes its answer between a check and the
//!   connect (DNS rebinding) gains nothing. Proxies from the environment are ignored for the
//!   same reason (with a proxy, the proxy's name would be resolved instead of the source's).
//! * A URL whose exact origin is listed is fetched with a client that resolves normally:
//!   that origin may be on a private address on purpose (a local run).
//! * Connect and read-idle timeouts, and a floor on the rate ([`crate::pace`]); the overall
//!   deadline is the caller's.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, TRANSFER_ENCODING,
};
use stemvault_vault::shown::loggable;
use url::Url;

use crate::address::classify;
use crate::error::FetchError;
use crate::fresh_link::{LinkRefresher, RefreshError};
use crate::source_policy::{Access, Refusal, SourcePolicy, refused_address};
use crate::upload::SourceBody;

pub const MAX_REDIRECTS: usize = 5;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of a response.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The HTTP/2 flow-control window of each response (hyper's default, stated): how much of a
/// file may wait unread while its copy is held back (a part going to S3).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The HTTP/2 window of a connection: room for every file an invocation copies at once to
/// hold its stream's window unread. Files from one host share a connection, and with hyper's
/// default (5 MiB, two and a half streams' worth) three held back stopped every other file
/// from that host until one moved on (the read-idle timeout then cut them).
pub const CONNECTION_WINDOW: u32 = STREAM_WINDOW * crate::app::MAX_CONCURRENT_MESSAGES as u32;
/// Longest Content-Type kept.
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// A response body as a stream of chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Bytes, FetchError>> + Send>>;

/// Open a source for reading.
pub trait FetchSource {
    /// Follow redirects to the file and return its body, refusing a declared length above
    /// `max_bytes`.
    fn open(
        &self,
        url: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<SourceBody<ChunkStream>, FetchError>> + Send;
}

/// Ask the provider for a fresh link to a file whose link expired.
pub trait FreshLink {
    /// A fresh link for the file at `url`, which answered as expired (403, 404, 410, 441), already
    /// checked against the source policy ([`crate::fresh_link`]). None: link refresh is off.
    fn fresh_link(&self, url: &str) -> impl Future<Output = Option<Result<String, RefreshError>>> + Send;
}

/// Sources fetched over HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpSource {
    policy: SourcePolicy,
    /// For URLs matched by host patterns: public addresses only.
    public: reqwest::Client,
    /// For listed exact origins.
    listed: reqwest::Client,
    /// Fresh links for expired files; None: off.
    links: Option<Arc<LinkRefresher>>,
}

impl HttpSource {
    /// Fails only when the TLS backend cannot start.
    pub fn new(policy: SourcePolicy) -> Result<HttpSource, reqwest::Error> {
        Ok(HttpSource {
            policy,
            public: client_builder().dns_resolver(Arc::new(PublicOnlyResolver)).build()?,
            listed: client_builder().build()?,
            links: None,
        })
    }

    /// The same, asking `links` for a fresh link when a file's URL expired (None: off).
    pub fn with_fresh_links(self, links: Option<LinkRefresher>) -> HttpSource {
        HttpSource { links: links.map(Arc::new), ..self }
    }
}

/// What both of a source's clients share: the outbound client's base, with a read-idle
/// timeout instead of a whole-request one (a file may take minutes), room for every file
/// copied at once on an HTTP/2 connection, and `Accept-Encoding: identity` (without it any
/// content coding is acceptable, RFC 9110, and a compressing edge's gzip would be stored as
/// the file).
fn client_builder() -> reqwest::ClientBuilder {
    let identity = HeaderMap::from_iter([(ACCEPT_ENCODING, HeaderValue::from_static("identity"))]);
    stemvault_aws::http::builder(concat!("stemvault-download/", env!("CARGO_PKG_VERSION")))
        .default_headers(identity)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_IDLE_TIMEOUT)
        .http2_initial_stream_window_size(STREAM_WINDOW)
        .http2_initial_connection_window_size(CONNECTION_WINDOW)
}

impl FetchSource for HttpSource {
    async fn open(&self, url: &str, max_bytes: u64) -> Result<SourceBody<ChunkStream>, FetchError> {
        let mut url = Url::parse(url).map_err(|e| Refusal::BadUrl(e.to_string()))?;
        let mut redirects = 0;
        loop {
            let client = match self.policy.check(&url)? {
                Access::PublicOnly => &self.public,
                Access::ListedOrigin => &self.listed,
            };
            let response = client.get(url.clone()).send().await.map_err(request_error)?;
            let status = response.status();
            if is_redirect(status) {
                if redirects == MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects(MAX_REDIRECTS));
                }
                redirects += 1;
                let bad = || FetchError::BadRedirect { status: status.as_u16() };
                let location = response.headers().get(LOCATION).map(|v| non_ascii_escaped(v.as_bytes()));
                url = url.join(&location.ok_or_else(bad)?).map_err(|_| bad())?;
                tracing::debug!(to = %loggable(&url), status = status.as_u16(), "following a redirect");
                continue;
            }
            // Only a whole body will do: 206 (a range) or 204 (nothing) would be stored as a
            // complete file with a valid-looking hash.
            if status != reqwest::StatusCode::OK {
                let reason = status.canonical_reason().unwrap_or_default().to_owned();
                let retry_after = stemvault_aws::http::asked_wait(&response);
                return Err(FetchError::Status { status: status.as_u16(), reason, retry_after });
            }
            if let Some(coding) = content_coding(&response) {
                return Err(FetchError::Encoded { coding });
            }
            let content_length = response.content_length();
            if content_length.is_none() && !is_framed(&response) {
                return Err(FetchError::Unframed);
            }
            if let Some(declared) = content_length.filter(|d| *d > max_bytes) {
                return Err(FetchError::TooLarge { limit: max_bytes, declared: Some(declared) });
            }
            let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| kept_content_type(v.as_bytes()));
            let chunks = crate::pace::paced(Box::pin(response.bytes_stream().map(|chunk| chunk.map_err(body_error))));
            return Ok(SourceBody { content_length, content_type, chunks: Box::pin(chunks) });
        }
    }
}

impl FreshLink for HttpSource {
    async fn fresh_link(&self, url: &str) -> Option<Result<String, RefreshError>> {
        Some(self.links.as_ref()?.fresh_link(url).await)
    }
}

/// The Content-Type the source sent, for [`crate::media::not_the_file`], the stored type
/// ([`crate::media::stored_type`]) and errors: as sent, or when that is too long or not
/// printable ASCII, its media type alone, if it has one.
fn kept_content_type(raw: &[u8]) -> Option<String> {
    let usable = |v: &[u8]| {
        let v = std::str::from_utf8(v).ok()?.trim();
        let printable = v.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
        (!v.is_empty() && v.len() <= MAX_CONTENT_TYPE_LEN && printable).then(|| v.to_owned())
    };
    usable(raw).or_else(|| crate::media::media_type(raw).filter(|t| t.len() <= MAX_CONTENT_TYPE_LEN))
}

/// The compressions HTTP names (RFC 9110's registry, and the `x-` spellings): an answer
/// encoded so is not the file's own bytes. Other values seen in the wild (`none`, `binary`,
/// `utf-8`) compress nothing.
const COMPRESSIONS: [&str; 7] = ["gzip", "x-gzip", "deflate", "br", "zstd", "compress", "x-compress"];

/// The answer's compression (`gzip`, say), if it names one: as a content coding, or as a
/// transfer coding (`Transfer-Encoding: gzip, chunked`: the client takes off the chunked
/// framing only). Each named once, in the order first named.
fn content_coding(response: &reqwest::Response) -> Option<String> {
    let headers = response.headers();
    let mut codings: Vec<String> = Vec::new();
    let named = headers.get_all(CONTENT_ENCODING).iter().chain(headers.get_all(TRANSFER_ENCODING).iter());
    for value in named {
        for coding in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let coding = coding.trim().to_ascii_lowercase();
            if COMPRESSIONS.contains(&coding.as_str()) && !codings.contains(&coding) {
                codings.push(coding);
            }
        }
    }
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// Whether a body without a declared length still has an end of its own: HTTP/2 and later
/// frame every body, and HTTP/1.1 chunked encoding ends with a last chunk. Otherwise (HTTP/1.x
/// read until the connection closes) a connection lost halfway looks like the end of the file.
/// Chunked framing is read, as hyper decides it, only when `chunked` is the last coding of the
/// last Transfer-Encoding line (`chunked, gzip` is read until the connection closes).
fn is_framed(response: &reqwest::Response) -> bool {
    response.version() >= reqwest::Version::HTTP_2
        || response
            .headers()
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// A Location's bytes with each byte past ASCII percent-encoded as it is, as curl follows one:
/// raw UTF-8 (a non-ASCII file name) becomes its UTF-8 escapes, and another encoding's bytes
/// (Latin-1, say) stay what the server sent, rather than a replacement character.
fn non_ascii_escaped(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, &percent_encoding::AsciiSet::EMPTY).to_string()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Resolves names and refuses those with any non-public address.
struct PublicOnlyResolver;

/// The resolver's refusal, found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RefusedAddress(Refusal);

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs = screen(&host, addrs).map_err(RefusedAddress)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Keep a name's addresses only if every one of them is public: a name that mixes public
/// and private answers is refused outright rather than trimmed.
fn screen(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refusal> {
    if let Some((addr, class)) = addrs.iter().map(|a| (a.ip(), classify(a.ip()))).find(|(_, c)| !c.is_public()) {
        return Err(refused_address(host, &addr.to_string(), class));
    }
    Ok(addrs)
}

fn request_error(e: reqwest::Error) -> FetchError {
    if let Some(refusal) = find_refusal(&e) {
        return FetchError::Refused(refusal);
    }
    use stemvault_aws::http::{Failure, describe, failure};
    if e.is_builder() {
        // A URL the policy allows but no request can carry (longer than an HTTP request
        // line may be): no retry would send it.
        return FetchError::Refused(Refusal::BadUrl(describe(e)));
    }
    match failure(&e) {
        Failure::Connect => FetchError::Connect(describe(e)),
        Failure::Timeout => FetchError::Timeout(describe(e)),
        Failure::Other => FetchError::Body(describe(e)),
    }
}

fn body_error(e: reqwest::Error) -> FetchError {
    let timeout = e.is_timeout();
    let text = stemvault_aws::http::describe(e);
    if timeout { FetchError::Timeout(text) } else { FetchError::Body(text) }
}

fn find_refusal(e: &(dyn StdError + 'static)) -> Option<Refusal> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<RefusedAddress>() {
            return Some(refused.0.clone());
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 0)
    }

    #[test]
    fn names_resolving_to_any_non_public_address_are_refused() {
        let public = vec![addr("8.8.8.8"), addr("2606:4700::1111")];
        assert_eq!(screen("cdn1.suno.ai", public.clone()), Ok(public));
        for private in
            ["127.0.0.1", "169.254.169.254", "10.0.0.7", "::1", "::ffff:192.168.1.1", "fd00::1", "100.64.1.1"]
        {
            let mixed = vec![addr("8.8.8.8"), addr(private)];
            let err = screen("cdn1.suno.ai", mixed).unwrap_err();
            assert!(err.to_string().contains(&private.parse::<std::net::IpAddr>().unwrap().to_string()), "{err}");
        }
    }

    #[tokio::test]
    async fn a_pattern_host_that_resolves_to_loopback_is_refused_when_connecting() {
        // `localhost` passes the URL check (it matches the pattern) but resolves to loopback.
        let source = HttpSource::new(SourcePolicy::parse("localhost").unwrap()).unwrap();
        let err = source.open("https://localhost/file.mp3", 1 << 20).await.unwrap_err();
        assert!(matches!(&err, FetchError::Refused(Refusal::Refused(why)) if why.contains("loopback")), "{err}");
        assert!(!err.is_retryable());
    }

    /// A redirect from a listed origin to a host a pattern allows is fetched as that host is:
    /// through the resolver that refuses non-public addresses (`localhost` here).
    #[tokio::test]
    async fn a_redirect_to_a_pattern_host_that_resolves_to_loopback_is_refused() {
        let redirect = "HTTP/1.1 302 Found\r\nlocation: https://localhost/file.mp3\r\ncontent-length: 0\r\n\r\n";
        let (origin, served) = stemvault_aws::test_http::answer_once(redirect.as_bytes().to_vec()).await;
        let source = HttpSource::new(SourcePolicy::parse(&format!("{origin},localhost")).unwrap()).unwrap();
        let err = source.open(&format!("{origin}/a.mp3"), 1 << 20).await.unwrap_err();
        assert!(matches!(&err, FetchError::Refused(Refusal::Refused(why)) if why.contains("loopback")), "{err}");
        assert!(served.await.unwrap().starts_with("GET /a.mp3 "), "the listed origin was asked");
    }

    /// A cleartext HTTP/2 origin on loopback answering every request with `bytes` zeros.
    async fn http2_origin(bytes: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                let mut body = respond.send_response(http::Response::new(()), false).unwrap();
                // Queued whole: h2 sends it as the client's windows allow.
                body.send_data(Bytes::from(vec![0; bytes]), true).unwrap();
            }
        });
        origin
    }

    /// Files from one host share an HTTP/2 connection: every file an invocation copies at
    /// once but one may hold its stream's window unread (its copy waiting on S3) and the
    /// last still reads on. With hyper's 5 MiB connection window, three held streams
    /// stopped the fourth.
    #[tokio::test]
    async fn files_held_back_leave_room_on_their_connection_for_the_others() {
        let file = 2 * STREAM_WINDOW as usize;
        let origin = http2_origin(file).await;
        let client = client_builder().http2_prior_knowledge().build().unwrap();
        let mut held = Vec::new();
        for _ in 1..crate::app::MAX_CONCURRENT_MESSAGES {
            held.push(client.get(format!("{origin}/held.wav")).send().await.unwrap());
        }
        let read = client.get(format!("{origin}/read.wav")).send().await.unwrap().bytes();
        let read = tokio::time::timeout(Duration::from_secs(20), read).await;
        assert_eq!(read.expect("the last file is not starved").unwrap().len(), file);
        drop(held);
    }

    /// A listed loopback origin answering `head` and then `body`, then closing.
    async fn answering(head: &'static str, body: &'static [u8]) -> String {
        stemvault_aws::test_http::answer_once([head.as_bytes(), body].concat()).await.0
    }

    /// An answer that ends only where the connection closes is not read: one cut short would
    /// be stored as the whole file. A declared length or chunked framing is read.
    #[tokio::test]
    async fn only_answers_whose_end_can_be_told_are_read() {
        let read = |head: &'static str, body: &'static [u8]| async move {
            let origin = answering(head, body).await;
            let source = HttpSource::new(SourcePolicy::parse(&origin).unwrap()).unwrap();
            let opened = source.open(&format!("{origin}/a.mp3"), 1 << 20).await?;
            let chunks: Vec<Bytes> = opened.chunks.map(|c| c.unwrap()).collect().await;
            Ok::<_, FetchError>(chunks.concat())
        };
        let closed = read("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", b"half of it").await.unwrap_err();
        assert_eq!(closed, FetchError::Unframed);
        assert!(closed.is_retryable(), "another answer may be framed");
        let old = read("HTTP/1.0 200 OK\r\n\r\n", b"half of it").await.unwrap_err();
        assert_eq!(old, FetchError::Unframed);
        let declared = read("HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n", b"abcd").await;
        assert_eq!(declared.unwrap(), b"abcd".as_slice());
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        assert_eq!(read(chunked, b"4\r\nabcd\r\n0\r\n\r\n").await.unwrap(), b"abcd".as_slice());
        // Framed (chunked last), but compressed: not the file's own bytes.
        let gzip = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n";
        let compressed = read(gzip, b"4\r\nabcd\r\n0\r\n\r\n").await.unwrap_err();
        assert_eq!(compressed, FetchError::Encoded { coding: "gzip".into() });
        // hyper reads these until the connection closes: chunked is not the last coding.
        let last_not_chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, x-custom\r\nconnection: close\r\n\r\n";
        assert_eq!(read(last_not_chunked, b"4\r\nabcd\r\n0\r\n\r\n").await.unwrap_err(), FetchError::Unframed);
        let two_lines =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: x-custom\r\nconnection: close\r\n\r\n";
        assert_eq!(read(two_lines, b"4\r\nabcd\r\n0\r\n\r\n").await.unwrap_err(), FetchError::Unframed);
    }

    /// HTTP/2 (and later) frames every body: an answer without Content-Length has an end all
    /// the same (the file server and the tests above speak HTTP/1 only).
    #[test]
    fn an_http2_answer_is_framed_without_a_length() {
        let answer = |version| reqwest::Response::from(http::Response::builder().version(version).body("").unwrap());
        assert!(is_framed(&answer(reqwest::Version::HTTP_2)));
        assert!(is_framed(&answer(reqwest::Version::HTTP_3)));
        assert!(!is_framed(&answer(reqwest::Version::HTTP_11)));
    }

    /// The file's own bytes are asked for (`Accept-Encoding: identity`); an answer compressed
    /// anyway (a compressing edge) is not the file: not read, but retried. A coding that
    /// compresses nothing (`binary`) is read.
    #[tokio::test]
    async fn only_the_files_own_bytes_are_read() {
        let read = |head: String| async move {
            let (origin, served) = stemvault_aws::test_http::answer_once([head.as_bytes(), b"abcd"].concat()).await;
            let source = HttpSource::new(SourcePolicy::parse(&origin).unwrap()).unwrap();
            let opened = source.open(&format!("{origin}/a.mp3"), 1 << 20).await;
            let request = served.await.unwrap();
            assert!(request.to_ascii_lowercase().contains("\r\naccept-encoding: identity\r\n"), "{request}");
            let chunks: Vec<Bytes> = opened?.chunks.map(|c| c.unwrap()).collect().await;
            Ok::<_, FetchError>(chunks.concat())
        };
        let head =
            |encoding: &str| format!("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n{encoding}connection: close\r\n\r\n");
        let gzip = read(head("content-encoding: gzip\r\n")).await.unwrap_err();
        assert_eq!(gzip, FetchError::Encoded { coding: "gzip".into() });
        assert!(gzip.is_retryable(), "another answer may be the file's own bytes");
        let stacked = read(head("content-encoding: identity, br\r\n")).await.unwrap_err();
        assert_eq!(stacked, FetchError::Encoded { coding: "br".into() });
        let upper = read(head("content-encoding: GZIP\r\n")).await.unwrap_err();
        assert_eq!(upper, FetchError::Encoded { coding: "gzip".into() });
        // Each named once, however often sent (its text goes into logs and the record).
        let repeated = read(head(&format!("content-encoding: {}\r\n", ["gzip"; 500].join(", ")))).await.unwrap_err();
        assert_eq!(repeated, FetchError::Encoded { coding: "gzip".into() });
        for coding in ["x-gzip", "deflate", "zstd", "compress", "x-compress"] {
            let encoded = read(head(&format!("content-encoding: {coding}\r\n"))).await.unwrap_err();
            assert_eq!(encoded, FetchError::Encoded { coding: coding.into() });
        }
        for plain in ["", "content-encoding: identity\r\n", "content-encoding: \r\n", "content-encoding: binary\r\n"] {
            assert_eq!(read(head(plain)).await.unwrap(), b"abcd".as_slice(), "{plain}");
        }
    }

    /// Every redirect status HTTP defines for a moved resource is followed (any other 3xx is
    /// an answer that is not the file: refused for good).
    #[tokio::test]
    async fn every_redirect_status_is_followed() {
        for status in [301, 302, 303, 307, 308] {
            let redirect =
                format!("HTTP/1.1 {status} X\r\nlocation: /b.mp3\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let file = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd";
            let (origin, served) =
                stemvault_aws::test_http::answer_in_turn(vec![redirect.into_bytes(), file.into()]).await;
            let source = HttpSource::new(SourcePolicy::parse(&origin).unwrap()).unwrap();
            let opened = source.open(&format!("{origin}/a.mp3"), 1 << 20).await.unwrap();
            let chunks: Vec<Bytes> = opened.chunks.map(|c| c.unwrap()).collect().await;
            assert_eq!(chunks.concat(), b"abcd", "{status}");
            assert!(served.await.unwrap()[1].starts_with("GET /b.mp3 HTTP/1.1"), "{status}");
        }
    }

    /// A Location naming a file in raw UTF-8 (as some servers send it) is followed as curl
    /// follows it, percent-encoded, not refused as a bad redirect (a permanent failure); the
    /// bytes of another encoding are escaped as they are.
    #[tokio::test]
    async fn a_redirect_to_a_non_ascii_path_is_followed_percent_encoded() {
        let redirect =
            "HTTP/1.1 302 Found\r\nlocation: /st\u{e9}m.mp3\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let file = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nabcd";
        let (origin, served) = stemvault_aws::test_http::answer_in_turn(vec![redirect.into(), file.into()]).await;
        let source = HttpSource::new(SourcePolicy::parse(&origin).unwrap()).unwrap();
        let opened = source.open(&format!("{origin}/a.mp3"), 1 << 20).await.unwrap();
        let chunks: Vec<Bytes> = opened.chunks.map(|c| c.unwrap()).collect().await;
        assert_eq!(chunks.concat(), b"abcd");
        let requests = served.await.unwrap();
        assert!(requests[1].starts_with("GET /st%C3%A9m.mp3 HTTP/1.1"), "{}", requests[1]);
        assert_eq!(non_ascii_escaped(b"/st\xe9m.mp3?a=1"), "/st%E9m.mp3?a=1", "Latin-1 kept as sent");
    }

    #[test]
    fn a_content_type_too_long_or_not_printable_keeps_its_media_type() {
        let long = format!("text/html; charset=utf-8; x={}", "a".repeat(300));
        assert_eq!(kept_content_type(long.as_bytes()).as_deref(), Some("text/html"));
        assert_eq!(kept_content_type(b"text/html; name=\"caf\xc3\xa9\"").as_deref(), Some("text/html"));
        assert_eq!(kept_content_type(b" audio/mpeg ").as_deref(), Some("audio/mpeg"));
        assert_eq!(kept_content_type(b"audio/mpeg; q=1").as_deref(), Some("audio/mpeg; q=1"));
        assert_eq!(kept_content_type(b"   "), None);
        assert_eq!(kept_content_type("x".repeat(300).as_bytes()), None);
        // Not UTF-8 right after its media type: that is kept, and refused as a page.
        assert_eq!(kept_content_type(b"text/html\x80").as_deref(), Some("text/html"));
    }

    #[tokio::test]
    async fn refused_urls_are_not_fetched() {
        let source = HttpSource::new(SourcePolicy::parse("*.suno.ai").unwrap()).unwrap();
        for url in ["http://cdn1.suno.ai/a", "https://127.0.0.1/a", "https://example.com/a", "nonsense"] {
            let err = source.open(url, 1 << 20).await.unwrap_err();
            assert!(matches!(err, FetchError::Refused(_)), "{url}: {err}");
        }
        // Allowed, but longer than any request may carry: refused, not retried 8 times.
        let long = format!("https://cdn1.suno.ai/{}", "a".repeat(70_000));
        let err = source.open(&long, 1 << 20).await.unwrap_err();
        assert!(matches!(err, FetchError::Refused(Refusal::BadUrl(_))), "{err}");
        assert!(!err.is_retryable() && err.to_string().len() < 1000, "{err}");
    }
}
