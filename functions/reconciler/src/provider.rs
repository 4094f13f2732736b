//! The provider's record-info endpoints over HTTP: `GET {PROVIDER_BASE_URL}{path}?taskId=<id>`
//! with the API key as a Bearer token ([`suno_callbacks::poll::record_info_path`]; a voice task
//! that endpoint does not know, at [`suno_callbacks::poll::generation_record_path`]). The key is
//! the one in force ([`ProviderKey`]: read again when 5 minutes old, or when the provider
//! refuses it, a refused poll being made once more with a rotated key). Every request books
//! its turn ([`RequestSpacing`]); the run waits for the next before each task
//! ([`HttpProvider::wait_for_turn`]).

use std::sync::Arc;
use std::time::Duration;

use stemvault_aws::http::CappedRead;
use stemvault_aws::provider::{ApiKey, ProviderKey};
use stemvault_vault::Timestamp;
use suno_callbacks::poll::{PollError, answer_code, generation_record_path, record_info_path};
use suno_callbacks::{Family, TaskId};

use crate::domain::ProviderAnswer;
use crate::request_spacing::RequestSpacing;

/// How long a whole poll may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are not read: Lambda's own payload limit, above the largest callback body
/// ingest may be set to accept (`MAX_BODY_BYTES`, at most 4 MiB), so that whatever a callback
/// could bring, a poll can too (the documented answers are tens of kilobytes; a split-stem
/// MIDI task's notes run larger).
pub const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// The record-info endpoints of one provider.
#[derive(Clone)]
pub struct HttpProvider {
    client: reqwest::Client,
    base_url: String,
    key: Arc<ProviderKey>,
    spacing: Arc<RequestSpacing>,
}

/// The base URL as the logs show it (its path may hold a key).
impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("base_url", &stemvault_vault::shown::loggable_str(&self.base_url))
            .finish_non_exhaustive()
    }
}

/// Whether the provider refused the key (401/403, as HTTP status or as the body's `code`).
pub fn refused(answer: &ProviderAnswer) -> bool {
    match answer {
        ProviderAnswer::Http { status: 401 | 403, .. } => true,
        // The code read as the poll's parser reads it (`"401"` too).
        ProviderAnswer::Http { status: 200, body } => {
            matches!(suno_callbacks::poll::answer_code(body), Some(401 | 403))
        }
        _ => false,
    }
}

/// Whether the answer may say the provider does not know the task, for the voice fallback:
/// 400, 404 or 422 as the `code` of a 200 (as the run reads kie's, `PollOutcome::not_found`;
/// docs.sunoapi.org's 404, an invalid path, is taken so here too: asking the other record
/// costs one request), or as HTTP status with a `code` in the body (the run reads that as no
/// answer).
fn unknown_task(answer: &ProviderAnswer) -> bool {
    match answer {
        ProviderAnswer::Http { status: 404 | 422, body } => answer_code(body).is_some(),
        ProviderAnswer::Http { status: 200, body } => matches!(answer_code(body), Some(400 | 404 | 422)),
        _ => false,
    }
}

/// Whether a 200 names no task (`{"code": 200, "data": null}`, the run's not found; or a
/// `data` without a task id, which it reads as unreadable): a record that does not hold it,
/// for the voice fallback as much as a 404.
fn no_task_named(family: Family, answer: &ProviderAnswer) -> bool {
    matches!(answer, ProviderAnswer::Http { status: 200, body }
        if matches!(suno_callbacks::poll::parse_poll(family, body), Err(PollError::NoRecord | PollError::NoTask)))
}

/// The URL polled for `task_id` of `family` below `base_url` (None: the family has no endpoint).
pub fn record_info_url(base_url: &str, family: Family, task_id: &TaskId) -> Option<String> {
    url_at(base_url, record_info_path(family)?, task_id)
}

fn url_at(base_url: &str, path: &str, task_id: &TaskId) -> Option<String> {
    let mut url = url::Url::parse(&format!("{}{path}", base_url.trim_end_matches('/'))).ok()?;
    url.query_pairs_mut().append_pair("taskId", task_id.as_str());
    Some(url.into())
}

impl HttpProvider {
    /// Fails only when the TLS backend cannot start.
    pub fn new(base_url: &str, key: Arc<ProviderKey>, spacing: RequestSpacing) -> Result<HttpProvider, reqwest::Error> {
        let client = stemvault_aws::http::client(concat!("stemvault-reconciler/", env!("CARGO_PKG_VERSION")), TIMEOUT)?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        Ok(HttpProvider { client, base_url, key, spacing: Arc::new(spacing) })
    }

    /// Wait for the provider's next turn if it comes within `within` (true); false at once
    /// otherwise. A held turn is read on the wall clock, as `poll_with` records the hold.
    pub async fn wait_for_turn(&self, within: Duration) -> bool {
        self.spacing.wait_for_turn(within, Timestamp::now()).await
    }

    /// One poll with the key in force, made once more when the provider refused it and a
    /// re-read brought another; a voice task the validation record does not know is asked for
    /// at the generation record. Transport failures are [`ProviderAnswer::Unreachable`].
    pub async fn poll(&self, family: Family, task_id: &TaskId) -> ProviderAnswer {
        let Some(url) = record_info_url(&self.base_url, family, task_id) else {
            return ProviderAnswer::Unreachable(format!("family {family} has no record-info endpoint"));
        };
        let answer = self.poll_url(&url).await;
        let Some(second) = generation_record_path(family) else { return answer };
        if !unknown_task(&answer) && !no_task_named(family, &answer) {
            return answer;
        }
        let Some(url) = url_at(&self.base_url, second, task_id) else { return answer };
        match self.poll_url(&url).await {
            // A path not served (an HTTP 404 or 422 without the provider's `code`: the
            // generation record is known from the provider's pages only) leaves the first
            // answer, so a task neither record knows is still given up as not found.
            ProviderAnswer::Http { status: status @ (404 | 422), body } if answer_code(&body).is_none() => {
                tracing::warn!(
                    task_id = task_id.as_str(),
                    status,
                    "the voice generation record ({second}) is not served here; taking the validation record's answer"
                );
                answer
            }
            generation_answer => generation_answer,
        }
    }

    async fn poll_url(&self, url: &str) -> ProviderAnswer {
        self.key
            .call(|key| self.poll_with(url, key), refused)
            .await
            .unwrap_or_else(|e| ProviderAnswer::NoKey(e.to_string()))
    }

    async fn poll_with(&self, url: &str, key: Arc<ApiKey>) -> ProviderAnswer {
        self.spacing.take_turn();
        let sent = self.client.get(url).bearer_auth(key.expose()).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return ProviderAnswer::Unreachable(unreachable(e)),
        };
        let status = response.status().as_u16();
        if let Some(wait) = stemvault_aws::http::asked_wait(&response) {
            tracing::warn!(status, wait_seconds = wait.as_secs(), "the provider asked for a wait: no polls before it");
            self.spacing.hold_off(wait, Timestamp::now());
        }
        match stemvault_aws::http::read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(body) => ProviderAnswer::Http { status, body },
            Err(CappedRead::TooLarge) => ProviderAnswer::TooLarge { limit: MAX_ANSWER_BYTES },
            Err(CappedRead::Failed(e)) => ProviderAnswer::Unreachable(unreachable(e)),
        }
    }
}

/// What a failed request says, without its URL (it names the task id only, but stays short).
fn unreachable(e: reqwest::Error) -> String {
    format!("the provider {}", stemvault_aws::provider::error_text(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn each_family_is_polled_at_its_record_info_endpoint() {
        let task = TaskId::parse("2fac****9f72").unwrap();
        assert_eq!(
            record_info_url("http://127.0.0.1:9/", Family::VocalSeparation, &task).as_deref(),
            Some("http://127.0.0.1:9/api/v1/vocal-removal/record-info?taskId=2fac****9f72")
        );
        assert_eq!(record_info_url("http://127.0.0.1:9", Family::Unknown, &task), None);
    }

    /// As fast as the tests' servers answer.
    fn unspaced() -> RequestSpacing {
        RequestSpacing::per_minute(1200)
    }

    /// A provider answering one request with `bytes` bytes of JSON (spaces around `{}`).
    async fn answering(bytes: usize) -> String {
        let mut body = vec![b' '; bytes];
        body[..2].copy_from_slice(b"{}");
        stemvault_aws::test_http::answer_once(stemvault_aws::test_http::json_reply(200, &body)).await.0
    }

    /// Whatever size a callback may be accepted at, a poll's answer is read at too; a larger
    /// one is said to be too large, not taken for no answer.
    #[tokio::test]
    async fn answers_as_large_as_a_callback_may_be_are_read() {
        let key = stemvault_aws::test_http::key_in_force("k", "reconciler");
        let task = TaskId::parse("2fac9f72").unwrap();
        let largest_callback = 6 * 1024 * 1024;
        for (bytes, read) in [(2 * 1024 * 1024 + 1, true), (largest_callback, true), (largest_callback + 1, false)] {
            let provider = HttpProvider::new(&answering(bytes).await, key.clone(), unspaced()).unwrap();
            match provider.poll(Family::VocalSeparation, &task).await {
                ProviderAnswer::Http { status: 200, body } if read => assert_eq!(body.len(), bytes),
                ProviderAnswer::TooLarge { limit } if !read => assert_eq!(limit, largest_callback),
                other => panic!("{bytes} bytes: {other:?}"),
            }
        }
    }

    /// A voice generation task is unknown to the validation record (the family does not say
    /// which the task is): its generation record is asked next, whose answer stands unless
    /// its path is not served. Any other answer stands.
    #[tokio::test]
    async fn a_voice_task_the_validation_record_does_not_know_is_polled_at_the_generation_record() {
        use stemvault_aws::test_http::{answer_in_turn, json_reply, key_in_force};
        let key = key_in_force("k", "reconciler");
        let task = TaskId::parse("v0ice7a5k").unwrap();
        let unknown = [
            json_reply(200, br#"{"code":404,"msg":"task not found"}"#),
            json_reply(422, br#"{"code":422}"#),
            json_reply(200, br#"{"code":200,"msg":"success","data":null}"#),
            json_reply(200, br#"{"code":200,"msg":"success","data":{}}"#),
        ];
        let found = br#"{"code":200,"data":{"taskId":"v0ice7a5k","voiceId":"v1","status":"success"}}"#;
        for first in unknown {
            let (origin, served) = answer_in_turn(vec![first, json_reply(200, found)]).await;
            let answer = HttpProvider::new(&origin, key.clone(), unspaced()).unwrap().poll(Family::Voice, &task).await;
            assert_eq!(answer, ProviderAnswer::Http { status: 200, body: found.to_vec() });
            let paths: Vec<String> =
                served.await.unwrap().iter().map(|r| r.split(' ').nth(1).unwrap().to_owned()).collect();
            assert_eq!(
                paths,
                ["/api/v1/voice/validate-info?taskId=v0ice7a5k", "/api/v1/voice/record-info?taskId=v0ice7a5k"]
            );
        }
        // The generation record's path not served (a 404 or 422 page): the first answer stands.
        for status in [404, 422] {
            let captured = stemvault_aws::log_capture::capture_logs();
            let first = br#"{"code":404,"msg":"task not found"}"#;
            let replies = vec![json_reply(200, first), json_reply(status, b"<html>no such path</html>")];
            let (origin, _served) = answer_in_turn(replies).await;
            let answer = HttpProvider::new(&origin, key.clone(), unspaced()).unwrap().poll(Family::Voice, &task).await;
            assert_eq!(answer, ProviderAnswer::Http { status: 200, body: first.to_vec() }, "{status}");
            let logs = captured.text();
            let said = captured.lines_with("is not served here");
            assert!(said.iter().any(|l| l.is(Level::WARN, &[&format!(r#""status":{status}"#)])), "{logs}");
        }
        // Found, or a 404 that is no provider answer, or another family (one record): that
        // answer (a second poll would find the origin closed: unreachable).
        let page = b"<html>not here</html>";
        let not_found = br#"{"code":404}"#;
        for (family, status, body) in
            [(Family::Voice, 200, &found[..]), (Family::Voice, 404, page), (Family::Music, 200, not_found)]
        {
            let (origin, _served) = answer_in_turn(vec![json_reply(status, body)]).await;
            let answer = HttpProvider::new(&origin, key.clone(), unspaced()).unwrap().poll(family, &task).await;
            assert_eq!(answer, ProviderAnswer::Http { status, body: body.to_vec() }, "{family}");
        }
    }

    /// Each request to the provider books its turn: a voice task's two records, asked
    /// together, put the next turn two spacings off. (The clock decides nothing: each booking
    /// is at least a spacing after the one before, however long the requests took.)
    #[tokio::test]
    async fn each_request_books_a_turn() {
        use stemvault_aws::test_http::{answer_in_turn, json_reply};
        let key = stemvault_aws::test_http::key_in_force("k", "reconciler");
        let task = TaskId::parse("v0ice7a5k").unwrap();
        let unknown = json_reply(200, br#"{"code":404,"msg":"task not found"}"#);
        let (origin, served) = answer_in_turn(vec![unknown.clone(), unknown]).await;
        let start = tokio::time::Instant::now();
        let provider = HttpProvider::new(&origin, key, RequestSpacing::per_minute(2)).unwrap();
        assert!(provider.wait_for_turn(Duration::ZERO).await, "the first turn is at once");
        let answer = provider.poll(Family::Voice, &task).await;
        assert!(matches!(answer, ProviderAnswer::Http { status: 200, .. }), "{answer:?}");
        assert_eq!(served.await.unwrap().len(), 2);
        let next_turn = provider.spacing.next_turn(Timestamp::now());
        assert!(next_turn >= start + Duration::from_secs(60), "two spacings of 30 s: {:?}", next_turn - start);
        assert!(!provider.wait_for_turn(Duration::ZERO).await, "the next turn is ahead");
    }

    /// With no key read since start-up (the provider secret unreadable), nothing is sent: the
    /// answer says so, not that the provider did not answer.
    #[tokio::test]
    async fn a_poll_without_a_key_is_not_sent() {
        let (origin, connections) = stemvault_aws::test_http::answer_every(b"HTTP/1.1 500 X\r\n\r\n".to_vec()).await;
        let key = stemvault_aws::test_http::key_unread(&origin, "reconciler");
        let provider = HttpProvider::new(&origin, key, unspaced()).unwrap();
        let answer = provider.poll(Family::Music, &TaskId::parse("t1").unwrap()).await;
        assert!(matches!(&answer, ProviderAnswer::NoKey(why) if why.contains("no provider API key")), "{answer:?}");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing sent");
    }

    /// A 429 or 503 asking for a wait (`Retry-After`, seconds or a date) holds the next turn
    /// back that long; one asking for none, or another status, books a turn only.
    #[tokio::test]
    async fn a_wait_the_provider_asks_for_holds_the_next_turn_back() {
        use stemvault_aws::test_http::{answer_once, json_reply};
        let key = stemvault_aws::test_http::key_in_force("k", "reconciler");
        let task = TaskId::parse("2fac9f72").unwrap();
        let with_header = |status: u16, value: &str| {
            let reply = String::from_utf8(json_reply(status, br#"{"code":503}"#)).unwrap();
            reply.replacen("\r\n\r\n", &format!("\r\nretry-after: {value}\r\n\r\n"), 1).into_bytes()
        };
        let in_ten_minutes = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
        // A date is read to the second and was written before the loop began: up to a second
        // less, and less again however long the machine took since (the upper bound is what
        // matters: never more than asked). Seconds are read as sent.
        let (exact, date) = (Duration::from_secs(1), Duration::from_secs(60));
        for (reply, held) in [
            (with_header(503, "120"), Some((Duration::from_secs(120), exact))),
            (with_header(429, &in_ten_minutes), Some((Duration::from_secs(600), date))),
            (with_header(503, "soon"), None),
            (with_header(500, "120"), None),
            (json_reply(503, b"{}"), None),
        ] {
            let (origin, _served) = answer_once(reply).await;
            let provider = HttpProvider::new(&origin, key.clone(), unspaced()).unwrap();
            let before = tokio::time::Instant::now();
            let answer = provider.poll(Family::Music, &task).await;
            let after = tokio::time::Instant::now();
            assert!(matches!(answer, ProviderAnswer::Http { status: 429 | 500 | 503, .. }), "{answer:?}");
            // Bracketed by the clock read before and after the poll: no bound on how long it took.
            let next_turn = provider.spacing.next_turn(Timestamp::now());
            let spacing = Duration::from_millis(50);
            match held {
                Some((wait, less)) => {
                    assert!(
                        next_turn + less >= before + wait && next_turn <= after + wait + spacing,
                        "{:?}",
                        next_turn - before
                    )
                }
                None => assert!(next_turn <= after + spacing, "a turn's spacing only: {:?}", next_turn - before),
            }
        }
    }

    /// A key in the base URL's path stays out of a `{:?}` of the provider.
    #[test]
    fn debug_shows_the_base_url_as_logged() {
        let key = stemvault_aws::test_http::key_in_force("k", "reconciler");
        let provider = HttpProvider::new("https://gw.example/k3y-in-path", key, unspaced()).unwrap();
        let shown = format!("{provider:?}");
        assert!(shown.contains("https://gw.example/… (sha256 ") && !shown.contains("k3y"), "{shown}");
    }

    #[test]
    fn a_refusal_is_401_or_403_as_status_or_as_the_body_code() {
        let http = |status: u16, body: &str| ProviderAnswer::Http { status, body: body.as_bytes().to_vec() };
        for answer in [
            http(401, ""),
            http(403, "x"),
            http(200, r#"{"code":401,"msg":"no"}"#),
            http(200, r#"{"code":403}"#),
            http(200, r#"{"code":"401","msg":"no"}"#),
            http(200, r#"{"code":403.0}"#),
        ] {
            assert!(refused(&answer), "{answer:?}");
        }
        for answer in [
            http(200, r#"{"code":200,"data":{}}"#),
            http(200, "not json"),
            http(429, r#"{"code":401}"#),
            http(500, ""),
            ProviderAnswer::Unreachable("x".into()),
        ] {
            assert!(!refused(&answer), "{answer:?}");
        }
    }
}
