//! Fresh links for expired files: kie's `POST {PROVIDER_BASE_URL}/api/v1/common/download-url`
//! with `{"url": "<original>"}` and the API key as a Bearer token answers `{"code": 200,
//! "msg": "success", "data": "<temporary URL>"}` (valid 20 minutes; fixture
//! `fixtures/polls/common-download-url__kie__200.json`). A file whose URL answers as expired
//! (403, 404, 410 or 441: [`crate::error::reads_as_expired`]) is copied from that link instead ([`crate::domain`]'s copy step); the record keeps the
//! original URL.
//!
//! On only with `PROVIDER=kie` and an API key at start-up (sunoapi documents no such
//! endpoint); start-up says once when it is off ([`refresher`]). The key is the one in force
//! ([`ProviderKey`]: read again when 5 minutes old, or when the provider refuses it with 401
//! or 403, the refused request being made once more with a rotated key). The link must itself pass the source policy
//! (`ALLOWED_SOURCE_HOSTS`) before anything is fetched from it. Every provider error (kie's
//! `code` 401, 402, 404, 422 for a URL the provider did not generate, 429, 430, 455, 500, 505,
//! as the HTTP status or in a 200, or a 401-403 or a wait status without it) is a
//! [`RefreshError`]: the file then fails as before (or is retried, for what may pass), its
//! reason naming it; any other 4xx, or a 505, without kie's `code` is no answer, and the link is
//! asked for again. Errors never carry the key, and URLs in them lose their query.

use std::sync::Arc;
use std::time::Duration;

use stemvault_aws::http::CappedRead;
use stemvault_aws::provider::{self, ApiKey, Provider, ProviderConfig, ProviderKey};
use stemvault_vault::reason::PROVIDER_ANSWERED;
use url::Url;

use crate::source_policy::{Refusal, SourcePolicy};
use stemvault_vault::shown::loggable_str;

/// The endpoint, below `PROVIDER_BASE_URL`.
pub const DOWNLOAD_URL_PATH: &str = "/api/v1/common/download-url";
/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Longer answers are not read (the documented one is a hundred bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why no fresh link could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The provider answered an error: as an HTTP status, or as HTTP 200 with an error `code`.
    #[error("{PROVIDER_ANSWERED}{code}{}{}", meaning(*.code), message_suffix(.message))]
    Provider { code: i64, message: String },
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    /// Not asked: no provider API key has been readable since start-up (its text says so).
    #[error("{0}")]
    NoKey(String),
    #[error("the provider's answer is unreadable: {0}")]
    Unreadable(String),
    /// The link it gave is not an allowed source.
    #[error("the fresh link: {0}")]
    Refused(Refusal),
}

/// What kie's documented codes mean.
fn meaning(code: i64) -> &'static str {
    match code {
        401 => " (unauthorized: check the API key in PROVIDER_SECRET_ARN)",
        402 => " (insufficient credits)",
        404 => " (not found)",
        422 => " (not a URL the provider generated)",
        429 | 430 => " (rate limited)",
        455 => " (service unavailable: maintenance)",
        500 => " (server error)",
        505 => " (feature disabled)",
        _ => "",
    }
}

impl RefreshError {
    /// Whether asking again later may give a link: the provider unreachable, rate limited
    /// or under maintenance (429, 430, 455: [`suno_callbacks::poll::WAIT_STATUSES`],
    /// as a poll reads them; the code may be the HTTP status, so 405 is "method not allowed")
    /// or failing (5xx), a request that timed out or came too early on its way (408, 425: a
    /// gateway's), or its answer unreadable (a proxy's error page), or not asked for want of a
    /// key (the secret unreadable since start-up). Not a refusal about this
    /// URL or this account (401, 402, 405, 422, 505, ...).
    pub fn is_retryable(&self) -> bool {
        match self {
            RefreshError::Unreachable(_) | RefreshError::NoKey(_) | RefreshError::Unreadable(_) => true,
            RefreshError::Provider { code, .. } => {
                suno_callbacks::poll::is_wait_status(*code)
                    || suno_callbacks::poll::provider_failing(*code)
                    || u16::try_from(*code).is_ok_and(crate::error::passing_on_the_way)
            }
            RefreshError::Refused(_) => false,
        }
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// The answer's `data` (the temporary link) if its HTTP status and `code` are 200.
pub fn read_answer(status: u16, body: &[u8]) -> Result<String, RefreshError> {
    // Read as a poll's answer is (a broken character does not hide the code).
    let answer = suno_callbacks::parse::read_json(body).ok().filter(serde_json::Value::is_object);
    // Read as the reconciler reads a poll's (`401`, `"401"` or `401.0`).
    let code = answer.as_ref().and_then(suno_callbacks::poll::envelope_code);
    let message = {
        let text = answer.as_ref().and_then(|a| a.get("msg")).and_then(serde_json::Value::as_str).unwrap_or_default();
        stemvault_vault::shown::provider_message(text)
    };
    if status != 200 {
        // A 4xx (or a 505, kie's "feature disabled" only as its code) without the provider's own
        // code is no answer about the URL (a gateway's or a firewall's page, a path it does not
        // serve: a wrong PROVIDER_BASE_URL), as the reconciler reads it; but for a refused key or
        // account (401-403) and a wait asked for.
        let about_the_caller = matches!(status, 401..=403) || suno_callbacks::poll::is_wait_status(i64::from(status));
        if code.is_none() && ((400..500).contains(&status) && !about_the_caller || status == 505) {
            return Err(RefreshError::Unreadable(format!("HTTP {status} without the provider's answer")));
        }
        // The body's code says more than the status where it has one (kie repeats it).
        let code = code.filter(|c| *c != 200).unwrap_or(i64::from(status));
        return Err(RefreshError::Provider { code, message });
    }
    let Some(read) = &answer else { return Err(RefreshError::Unreadable("not the documented JSON".into())) };
    match code {
        Some(200) => {}
        Some(code) => return Err(RefreshError::Provider { code, message }),
        None => return Err(RefreshError::Unreadable("no code".into())),
    }
    match read.get("data") {
        Some(serde_json::Value::String(link)) if !link.trim().is_empty() => Ok(link.trim().to_owned()),
        _ => Err(RefreshError::Unreadable("no link in data".into())),
    }
}

/// Whether the provider refused the key (401/403): worth a re-read of the key.
pub fn refused(answer: &Result<String, RefreshError>) -> bool {
    matches!(answer, Err(RefreshError::Provider { code: 401 | 403, .. }))
}

/// Asks the provider for fresh links.
#[derive(Clone)]
pub struct LinkRefresher {
    client: reqwest::Client,
    endpoint: String,
    key: Arc<ProviderKey>,
    policy: SourcePolicy,
}

/// The endpoint as logged (the base URL's path may hold a key).
impl std::fmt::Debug for LinkRefresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkRefresher")
            .field("endpoint", &stemvault_vault::shown::loggable_str(&self.endpoint))
            .finish_non_exhaustive()
    }
}

/// The refresher `provider` and `key` allow, or None (said once, at start-up): off without a
/// key, and for sunoapi, which has no such endpoint.
pub fn refresher(
    provider: &ProviderConfig,
    key: Option<Arc<ProviderKey>>,
    policy: &SourcePolicy,
) -> Option<LinkRefresher> {
    if provider.provider != Provider::Kie {
        tracing::info!(
            provider = provider.provider.as_str(),
            "link refresh is off: only kie offers fresh links (common/download-url); expired files fail as before"
        );
        return None;
    }
    let Some(key) = key else {
        tracing::info!(
            "link refresh is off: no provider API key (PROVIDER_SECRET_ARN unset, or its secret empty); \
             expired files fail as before"
        );
        return None;
    };
    match LinkRefresher::new(&provider.base_url, key, policy.clone()) {
        Ok(refresher) => {
            // Its host: a gateway's path may hold a key.
            let endpoint = loggable_str(&refresher.endpoint);
            tracing::info!(endpoint = %endpoint, "link refresh is on: expired files are copied from fresh links");
            Some(refresher)
        }
        Err(e) => {
            tracing::error!(error = %e, "link refresh is off: no HTTP client");
            None
        }
    }
}

impl LinkRefresher {
    /// Fails only when the TLS backend cannot start.
    pub fn new(base_url: &str, key: Arc<ProviderKey>, policy: SourcePolicy) -> Result<LinkRefresher, reqwest::Error> {
        let client = stemvault_aws::http::client(concat!("stemvault-download/", env!("CARGO_PKG_VERSION")), TIMEOUT)?;
        let endpoint = format!("{}{DOWNLOAD_URL_PATH}", base_url.trim_end_matches('/'));
        Ok(LinkRefresher { client, endpoint, key, policy })
    }

    /// A fresh link for the (expired) file `url`, checked against the source policy: asked
    /// with the key in force, and once more when the provider refused it and a re-read
    /// brought another.
    pub async fn fresh_link(&self, url: &str) -> Result<String, RefreshError> {
        self.key
            .call(|key| self.ask(key, url), refused)
            .await
            .unwrap_or_else(|e| Err(RefreshError::NoKey(e.to_string())))
    }

    /// One request for a fresh link of `url`, with `key`.
    pub async fn ask(&self, key: Arc<ApiKey>, url: &str) -> Result<String, RefreshError> {
        let sent = self
            .client
            .post(&self.endpoint)
            .bearer_auth(key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "url": url }).to_string())
            .send()
            .await;
        let response = sent.map_err(|e| RefreshError::Unreachable(provider::error_text(e)))?;
        let status = response.status().as_u16();
        let body = stemvault_aws::http::read_capped(response, MAX_ANSWER_BYTES).await.map_err(|e| match e {
            CappedRead::TooLarge => RefreshError::Unreadable(format!("over {MAX_ANSWER_BYTES} bytes")),
            CappedRead::Failed(e) => RefreshError::Unreachable(provider::error_text(e)),
        })?;
        let link = read_answer(status, &body)?;
        let parsed = Url::parse(&link).map_err(|e| RefreshError::Refused(Refusal::BadUrl(e.to_string())))?;
        self.policy.check(&parsed).map_err(RefreshError::Refused)?;
        tracing::debug!(link = %loggable_str(&link), "the provider gave a fresh link");
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use stemvault_aws::secrets::SecretText;

    use super::*;

    /// `text` as the key in force, just read (its secret is never read again by these tests:
    /// none lasts 5 minutes or is refused).
    fn key_in_force(text: &str) -> Arc<ProviderKey> {
        stemvault_aws::test_http::key_in_force(text, "download")
    }

    fn api_key(text: &str) -> Arc<ApiKey> {
        Arc::new(ApiKey::from_secret(&SecretText::new(text)).unwrap().unwrap())
    }

    const DOCUMENTED: &str = include_str!("../../../fixtures/polls/common-download-url__kie__200.json");

    #[test]
    fn a_link_the_provider_quotes_in_its_message_is_not_kept() {
        let body =
            br#"{"code":422,"msg":"not generated by us: https://cdn.example/s/0a1b_Vocals.mp3?sig=abc, see docs"}"#;
        let Err(RefreshError::Provider { code, message }) = read_answer(200, body) else { panic!("an error") };
        assert_eq!(code, 422);
        assert!(message.starts_with("not generated by us: https://cdn.example/… (sha256 "), "{message}");
        assert!(message.ends_with(", see docs"), "{message}");
        for secret in ["0a1b", "Vocals", "sig=abc"] {
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn the_documented_answer_gives_its_link() {
        assert_eq!(
            read_answer(200, DOCUMENTED.as_bytes()).unwrap(),
            "https://tempfile.1f6cxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxbd98"
        );
    }

    /// The envelope's `code` as a string or a float reads as the number, as in a poll's answer.
    #[test]
    fn a_code_written_as_a_string_or_a_float_reads_as_its_number() {
        let link = |code: &str| read_answer(200, format!(r#"{{"code":{code},"data":"https://t/x"}}"#).as_bytes());
        for ok in ["200", "\"200\"", "200.0"] {
            assert_eq!(link(ok), Ok("https://t/x".to_owned()), "{ok}");
        }
        let refused = link("\"402\"").unwrap_err();
        assert_eq!(refused, RefreshError::Provider { code: 402, message: String::new() });
    }

    /// A rate limit or maintenance (as a poll reads them), a failure and a gateway's timeout
    /// are asked again; a refusal about the URL or the account is not.
    #[test]
    fn waits_and_failures_are_asked_again() {
        let retried = |code| RefreshError::Provider { code, message: String::new() }.is_retryable();
        for code in [408, 425, 429, 430, 455, 500, 503, 599] {
            assert!(retried(code), "{code}");
        }
        for code in [401, 402, 403, 404, 405, 422, 505] {
            assert!(!retried(code), "{code}");
        }
    }

    #[test]
    fn every_documented_error_code_is_an_error_named_by_its_code_as_status_or_in_the_body() {
        for code in [401, 402, 404, 422, 429, 430, 455, 500, 505] {
            let body = format!(r#"{{"code":{code},"msg":"scripted","data":null}}"#);
            for status in [200, code as u16] {
                let err = read_answer(status, body.as_bytes()).unwrap_err();
                assert_eq!(err, RefreshError::Provider { code, message: "scripted".into() }, "{status}");
                assert!(err.to_string().starts_with(&format!("the provider answered {code}")), "{err}");
            }
        }
        let unauthorized = read_answer(401, b"{\"code\":401,\"msg\":\"You do not have access permissions\"}");
        assert_eq!(
            unauthorized.unwrap_err().to_string(),
            "the provider answered 401 (unauthorized: check the API key in PROVIDER_SECRET_ARN): \
             You do not have access permissions"
        );
        assert_eq!(read_answer(502, b"<html>bad gateway</html>").unwrap_err().to_string(), "the provider answered 502");
        // A path the provider does not serve, or a gateway's or firewall's page: no answer
        // about the URL, asked again.
        for status in [400, 404, 405, 413, 422, 451, 505] {
            let err = read_answer(status, b"<html>Not Found</html>").unwrap_err();
            assert!(matches!(err, RefreshError::Unreadable(_)) && err.is_retryable(), "{status}: {err}");
        }
        // But a refused key or account, and a wait asked for, are the provider's word.
        for status in [401, 402, 403, 429] {
            let err = read_answer(status, b"<html>no</html>").unwrap_err();
            assert_eq!(err, RefreshError::Provider { code: i64::from(status), message: String::new() }, "{status}");
        }
        assert_eq!(
            read_answer(422, br#"{"code":422,"msg":"external URL"}"#).unwrap_err().to_string(),
            "the provider answered 422 (not a URL the provider generated): external URL"
        );
    }

    #[test]
    fn only_a_401_or_403_is_worth_a_reread_of_the_key() {
        let provider = |code| Err(RefreshError::Provider { code, message: String::new() });
        assert!(refused(&provider(401)) && refused(&provider(403)));
        for not in
            [provider(402), provider(422), provider(500), Err(RefreshError::Unreachable("x".into())), Ok("l".into())]
        {
            assert!(!refused(&not), "{not:?}");
        }
    }

    #[tokio::test]
    async fn a_request_carries_the_key_it_is_given() {
        let answer = r#"{"code":200,"msg":"success","data":"https://tempfile.suno.ai/a.mp3"}"#.to_owned();
        let (origin, served) = answer_once(200, answer).await;
        let links =
            LinkRefresher::new(&origin, key_in_force("sk-old"), SourcePolicy::parse("*.suno.ai").unwrap()).unwrap();
        links.ask(api_key("sk-new"), "https://cdn1.suno.ai/a.mp3").await.unwrap();
        let request = served.await.unwrap().to_ascii_lowercase();
        assert!(request.contains("authorization: bearer sk-new\r\n"), "{request}");
    }

    #[test]
    fn answers_without_a_link_are_unreadable() {
        for body in [
            &b"not json"[..],
            br#"{"msg":"success","data":"https://x"}"#,
            br#"{"code":200,"data":null}"#,
            br#"{"code":200,"data":" "}"#,
        ] {
            assert!(
                matches!(read_answer(200, body), Err(RefreshError::Unreadable(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn provider(name: Provider) -> ProviderConfig {
        ProviderConfig { provider: name, base_url: "http://127.0.0.1:9".into(), secret_arn: Some("arn:x".into()) }
    }

    #[test]
    fn only_kie_with_a_key_refreshes() {
        let policy = SourcePolicy::parse("*.suno.ai").unwrap();
        let key = Some(key_in_force("k"));
        assert!(refresher(&provider(Provider::Kie), None, &policy).is_none());
        assert!(refresher(&provider(Provider::SunoApi), key.clone(), &policy).is_none());
        let on = refresher(&provider(Provider::Kie), key, &policy).unwrap();
        assert_eq!(on.endpoint, "http://127.0.0.1:9/api/v1/common/download-url");
        assert!(!format!("{on:?}").contains("\"k\""), "the key is never shown");
        // Nor a key in the base URL's path.
        let keyed = ProviderConfig { base_url: "https://gw.example/k3y".into(), ..provider(Provider::Kie) };
        let on = refresher(&keyed, Some(key_in_force("k")), &policy).unwrap();
        let shown = format!("{on:?}");
        assert!(shown.contains("https://gw.example/… (sha256 ") && !shown.contains("k3y"), "{shown}");
    }

    /// A one-shot provider: answers the first request with `status` and `body`, and hands
    /// back the request's head and body.
    async fn answer_once(status: u16, body: String) -> (String, tokio::task::JoinHandle<String>) {
        stemvault_aws::test_http::answer_once(stemvault_aws::test_http::json_reply(status, body.as_bytes())).await
    }

    #[tokio::test]
    async fn asks_with_the_original_url_and_the_bearer_key_and_checks_the_link_against_the_policy() {
        let key = key_in_force("sk-test");
        let original = "https://cdn1.suno.ai/a.mp3?sig=old";
        let answer = r#"{"code":200,"msg":"success","data":"https://tempfile.suno.ai/a.mp3?sig=new"}"#.to_owned();
        let (origin, served) = answer_once(200, answer).await;
        let policy = SourcePolicy::parse("*.suno.ai").unwrap();
        let links = LinkRefresher::new(&origin, key.clone(), policy).unwrap();
        assert_eq!(links.fresh_link(original).await.unwrap(), "https://tempfile.suno.ai/a.mp3?sig=new");
        let request = served.await.unwrap();
        assert!(request.starts_with("POST /api/v1/common/download-url HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("authorization: bearer sk-test\r\n"), "{request}");
        let body: serde_json::Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body, serde_json::json!({ "url": original }));

        // A link to a host that is not an allowed source is never fetched.
        let elsewhere = r#"{"code":200,"msg":"success","data":"https://evil.example.com/a.mp3"}"#.to_owned();
        let (origin, _served) = answer_once(200, elsewhere).await;
        let links = LinkRefresher::new(&origin, key, SourcePolicy::parse("*.suno.ai").unwrap()).unwrap();
        let err = links.fresh_link(original).await.unwrap_err();
        assert!(matches!(err, RefreshError::Refused(Refusal::Refused(_))), "{err}");
        assert!(err.to_string().starts_with("the fresh link: refused source: host evil.example.com"), "{err}");
    }

    /// With no key read since start-up, nothing is asked: the error says so (not that the
    /// provider could not be reached), and a later receive tries again.
    #[tokio::test]
    async fn no_fresh_link_is_asked_without_a_key() {
        let (origin, connections) = stemvault_aws::test_http::answer_every(b"HTTP/1.1 500 X\r\n\r\n".to_vec()).await;
        let key = stemvault_aws::test_http::key_unread(&origin, "download");
        let links = LinkRefresher::new(&origin, key, SourcePolicy::parse("*.suno.ai").unwrap()).unwrap();
        let err = links.fresh_link("https://cdn1.suno.ai/a.mp3").await.unwrap_err();
        assert!(matches!(err, RefreshError::NoKey(_)) && err.is_retryable(), "{err}");
        assert!(err.to_string().starts_with("no provider API key"), "{err}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing sent");
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_an_error_without_the_key() {
        let key = key_in_force("sk-hidden");
        let (origin, _held) = stemvault_aws::test_http::refusing_origin();
        let links = LinkRefresher::new(&origin, key, SourcePolicy::parse("*.suno.ai").unwrap()).unwrap();
        let err = links.fresh_link("https://cdn1.suno.ai/a.mp3").await.unwrap_err();
        assert!(matches!(err, RefreshError::Unreachable(_)), "{err}");
        assert!(!err.to_string().contains("sk-hidden"));
    }
}
