//! For the functions' tests: one-shot HTTP origins on loopback, each reading one request and
//! answering it with the bytes given, as they are (so a test can send framing a client must
//! refuse), then closing; and SDK settings whose connection is a script ([`sdk_answering`]),
//! for attempt timeouts under paused time. Tests only (the `test-support` feature).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::clock::SystemClock;
use crate::provider::{ApiKey, ProviderKey};
use crate::secrets::{SecretReader, SecretText};

/// `http://127.0.0.1:<port>`, answering its first request with `reply` and closing; the
/// task yields that request as read (its head, and its body up to its `content-length`).
pub async fn answer_once(reply: impl Into<Vec<u8>>) -> (String, JoinHandle<String>) {
    let (origin, served) = answer_in_turn(vec![reply.into()]).await;
    (origin, tokio::spawn(async move { served.await.expect("served").pop().unwrap_or_default() }))
}

/// As [`answer_once`], for as many requests (one connection each) as `replies`, in turn; the
/// task yields the requests.
pub async fn answer_in_turn(replies: Vec<Vec<u8>>) -> (String, JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let origin = format!("http://{}", listener.local_addr().expect("a bound address"));
    let served = tokio::spawn(async move {
        let mut requests = Vec::new();
        for reply in replies {
            // Bounded: a test whose code never makes the request fails rather than hangs.
            let accepted = tokio::time::timeout(std::time::Duration::from_secs(30), listener.accept()).await;
            let (mut stream, _) = accepted.expect("no request came within 30 s").expect("a connection");
            requests.push(read_request(&mut stream).await);
            let _ = stream.write_all(&reply).await;
            let _ = stream.shutdown().await;
        }
        requests
    });
    (origin, served)
}

/// `http://127.0.0.1:<port>` keeping its connections: every request on each is answered with
/// `reply`, as it is (a reply shorter than its `content-length` leaves the client waiting for
/// the rest). The count is of connections accepted.
pub async fn answer_every(reply: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let origin = format!("http://{}", listener.local_addr().expect("a bound address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                while !read_request(&mut stream).await.is_empty() {
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (origin, connections)
}

/// `http://127.0.0.1:<port>` refusing every connection: the port is bound but not listening,
/// and held while the returned socket lives, so no other test of the binary is given it
/// meanwhile (as a port freed at once could be, or a fixed one served).
pub fn refusing_origin() -> (String, tokio::net::TcpSocket) {
    let held = tokio::net::TcpSocket::new_v4().expect("a socket");
    held.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a loopback port");
    let origin = format!("http://{}", held.local_addr().expect("a bound address"));
    (origin, held)
}

/// `reply` as a complete answer: `status`, `content-type: application/json`, its length, and
/// `connection: close`.
pub fn json_reply(status: u16, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body].concat()
}

/// One request: its head and as much of its body as its `content-length` says (less when the
/// client stops sending).
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request);
        let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| body.len() >= content_length(head));
        if n == 0 || complete {
            return text.into_owned();
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// One answer of [`sdk_answering`]'s script.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    /// Never answered: a stalled connection, which only an attempt timeout ends.
    Stall,
    /// This status and body, at once.
    Answer(u16, &'static [u8]),
}

/// SDK settings whose requests are answered by `script`, in turn (past its end, its last
/// answer again), for tests under paused time: a real stall or slow server would make the
/// attempt timeouts tested a race against the machine's speed. Test credentials, and no
/// retries but a call's own; and the count of requests made.
pub fn sdk_answering(script: Vec<Scripted>) -> (aws_config::SdkConfig, Arc<AtomicUsize>) {
    use aws_smithy_runtime_api::client::http::{SharedHttpConnector, http_client_fn};
    let calls = Arc::new(AtomicUsize::new(0));
    let connector = ScriptedConnector { script: Arc::new(script), calls: calls.clone() };
    let client = http_client_fn(move |_, _| SharedHttpConnector::new(connector.clone()));
    (sdk_at("http://scripted.test").to_builder().http_client(client).build(), calls)
}

/// [`sdk_answering`] a first request that stalls, and every later one with `status` and `body`.
pub fn sdk_stalling_first(status: u16, body: &'static [u8]) -> (aws_config::SdkConfig, Arc<AtomicUsize>) {
    sdk_answering(vec![Scripted::Stall, Scripted::Answer(status, body)])
}

/// See [`sdk_answering`].
#[derive(Debug, Clone)]
struct ScriptedConnector {
    script: Arc<Vec<Scripted>>,
    calls: Arc<AtomicUsize>,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for ScriptedConnector {
    fn call(
        &self,
        _: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.script.get(call).or(self.script.last()).copied().unwrap_or(Scripted::Stall);
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
            let Scripted::Answer(status, body) = answer else { return std::future::pending().await };
            let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("an HTTP status");
            Ok(HttpResponse::new(status, aws_smithy_types::body::SdkBody::from(body)))
        })
    }
}

/// SDK settings for a service scripted at `origin` (one of the loopback origins): test
/// credentials, and no retries (each request is answered once).
pub fn sdk_at(origin: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(crate::behavior_version())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"),
        ))
        .endpoint_url(origin)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build()
}

/// `text` as the provider key in force, just read, for `function`; its secret (an ARN no
/// test reaches) is not read again within a test (none lasts 5 minutes or is refused).
pub fn key_in_force(text: &str, function: &'static str) -> Arc<ProviderKey> {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(crate::behavior_version())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let key = ApiKey::from_secret(&SecretText::new(text)).ok().flatten().expect("a non-empty key");
    let reader = SecretReader::new(&sdk, "arn:x");
    Arc::new(ProviderKey::new(key, stemvault_vault::Timestamp::now(), reader, SystemClock, function))
}

/// No provider key read since start-up (its secret unreadable), for `function`; the secret is
/// read again from `origin`.
pub fn key_unread(origin: &str, function: &'static str) -> Arc<ProviderKey> {
    Arc::new(ProviderKey::unread(SecretReader::new(&sdk_at(origin), "arn:x"), SystemClock, function))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_request_to_its_declared_length_and_sends_the_reply_as_given() {
        let (origin, served) = answer_once(json_reply(201, b"{}")).await;
        let mut stream = tokio::net::TcpStream::connect(origin.trim_start_matches("http://")).await.unwrap();
        stream.write_all(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab").await.unwrap();
        stream.write_all(b"cde").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 201 X\r\n")
                && answer.ends_with("content-length: 2\r\nconnection: close\r\n\r\n{}"),
            "{answer}"
        );
        assert!(served.await.unwrap().ends_with("\r\n\r\nabcde"));
    }

    #[tokio::test]
    async fn a_client_that_stops_sending_ends_the_request() {
        let (origin, served) = answer_once(b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).await;
        let mut stream = tokio::net::TcpStream::connect(origin.trim_start_matches("http://")).await.unwrap();
        stream.write_all(b"GET / HT").await.unwrap();
        stream.shutdown().await.unwrap();
        assert_eq!(served.await.unwrap(), "GET / HT");
    }
}
