//! The provider whose API the tasks were submitted to: which one (`PROVIDER`), where its API
//! is (`PROVIDER_BASE_URL`) and its API key (in the Secrets Manager secret
//! `PROVIDER_SECRET_ARN`, read at start-up and again when it may have been rotated:
//! [`ProviderKey`]). One reader for every function that calls the provider: the reconciler
//! (record-info polls) and the downloader (fresh links for expired files). Without a key at
//! start-up (no secret, or an empty one) those calls are off; a secret that cannot be read at
//! start-up is read again before calls until it can (calls wait, answered as unreachable, not
//! refused). The key never appears in `Debug`, logs or errors.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use stemvault_vault::time::passed_or_stepped_back;
use stemvault_vault::{Clock, Timestamp};

use crate::clock::SystemClock;
use crate::env::{ConfigError, Env};
use crate::metrics::{self, Metric};
use crate::secrets::{AgePolicy, REREADS_FAILED, ReadSecret, Reread, SecretReader, SecretText, read_within_timeout};

/// The variables [`ProviderConfig::read`] reads; a function that reads it declares them all
/// in its own `config::ENVIRONMENT`.
pub const ENVIRONMENT: &[&str] = &["PROVIDER", "PROVIDER_BASE_URL", "PROVIDER_SECRET_ARN"];

/// Whose API the tasks were submitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// docs.kie.ai (`https://api.kie.ai`).
    Kie,
    /// docs.sunoapi.org (`https://api.sunoapi.org`).
    SunoApi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Kie => "kie",
            Provider::SunoApi => "sunoapi",
        }
    }

    /// Whose documentation its answers' codes follow.
    pub fn site(self) -> suno_callbacks::poll::Site {
        match self {
            Provider::Kie => suno_callbacks::poll::Site::Kie,
            Provider::SunoApi => suno_callbacks::poll::Site::SunoApi,
        }
    }

    /// Its API host, the default `PROVIDER_BASE_URL`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Kie => "https://api.kie.ai",
            Provider::SunoApi => "https://api.sunoapi.org",
        }
    }
}

/// The provider settings. No secret in here: [`read_provider_key`] reads it (the base URL's
/// path may hold one, so Debug shows it as [`stemvault_vault::shown::loggable_str`] does).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// `PROVIDER`: `kie` (the default) or `sunoapi`.
    pub provider: Provider,
    /// `PROVIDER_BASE_URL`: https, or http on a loopback host (local runs); no trailing slash.
    pub base_url: String,
    /// `PROVIDER_SECRET_ARN`: the secret holding the API key; None: no calls to the provider.
    pub secret_arn: Option<String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("provider", &self.provider)
            .field("base_url", &stemvault_vault::shown::loggable_str(&self.base_url))
            .field("secret_arn", &self.secret_arn)
            .finish()
    }
}

impl ProviderConfig {
    /// Read [`ENVIRONMENT`] (each name must be declared by the caller's `env`).
    pub fn read(env: &Env) -> Result<ProviderConfig, ConfigError> {
        let provider = match env.optional("PROVIDER").map(|p| p.to_ascii_lowercase()).as_deref() {
            None | Some("kie") => Provider::Kie,
            Some("sunoapi") => Provider::SunoApi,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PROVIDER",
                    reason: format!("{other:?} is neither kie nor sunoapi"),
                });
            }
        };
        let base = env.optional("PROVIDER_BASE_URL").unwrap_or_else(|| provider.default_base_url().to_owned());
        Ok(ProviderConfig { provider, base_url: base_url(&base)?, secret_arn: env.optional("PROVIDER_SECRET_ARN") })
    }
}

/// `PROVIDER_BASE_URL` checked: https anywhere, plain http only on a loopback host (the fake
/// provider of local runs and tests), no query, fragment or credentials; without its trailing
/// slash. A refusal names at most the scheme and host: what is refused (credentials, a
/// query) may be a key, and the reason is printed to the function's logs.
pub fn base_url(raw: &str) -> Result<String, ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| ConfigError::Invalid {
        name: "PROVIDER_BASE_URL",
        reason: format!("not an absolute URL ({e})"),
    })?;
    let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    let invalid =
        |reason: &str| ConfigError::Invalid { name: "PROVIDER_BASE_URL", reason: format!("{origin:?}: {reason}") };
    match url.scheme() {
        "https" => {}
        "http" if crate::http::is_loopback(url.host()) => {}
        "http" => return Err(invalid("plain http is allowed only on a loopback host (127.0.0.1, ::1, localhost)")),
        _ => return Err(invalid("not an https URL")),
    }
    // A fragment would end every polled URL built on it (`<base>#f/api/v1/...`): the request
    // would go to the base itself.
    let extra = url.query().is_some() || url.fragment().is_some();
    if extra || !url.username().is_empty() || url.password().is_some() || url.host_str().is_none() {
        return Err(invalid("an origin (and path) without query, fragment or credentials is expected"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The provider's API key: never in `Debug`, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(SecretText);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// The key in a secret's text: the text itself, a JSON string's contents, or the
    /// `api_key` of a JSON object. None when it is empty, or the object's `api_key` is
    /// (calls to the provider off). An object without a string `api_key` (`apiKey`, a
    /// number), JSON cut short (a rotation's typo: the text would have replaced the key in
    /// force) or a key with a space, a control character or one outside ASCII inside (no
    /// header could carry it) is a mistake, not "off": an error, which names no value.
    pub fn from_secret(text: &SecretText) -> Result<Option<ApiKey>, String> {
        let raw = text.expose().trim();
        let key = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(o)) => match o.get("api_key") {
                Some(serde_json::Value::String(key)) => key.trim().to_owned(),
                _ => return Err("the secret is a JSON object without a string \"api_key\"".to_owned()),
            },
            Ok(serde_json::Value::String(key)) => key.trim().to_owned(),
            Ok(serde_json::Value::Array(_)) => return Err("the secret is a JSON array, not a key".to_owned()),
            Err(_) if raw.starts_with(['{', '[', '"']) => {
                return Err("the secret reads as JSON but does not parse (cut short?)".to_owned());
            }
            _ => raw.to_owned(),
        };
        // What an HTTP header can carry, but for a space (no key has one).
        if !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err("the key holds a space, a control character or one outside ASCII".to_owned());
        }
        Ok((!key.is_empty()).then(|| ApiKey(SecretText::new(key))))
    }

    /// The key itself, for the `Authorization: Bearer` header only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// No key yet: the secret could not be read at start-up. Never sent ([`ProviderKey::call`]);
    /// a key from a secret is never empty, so this is no key a secret can hold.
    fn unread() -> ApiKey {
        ApiKey(SecretText::new(String::new()))
    }

    fn is_unread(&self) -> bool {
        self.0.expose().is_empty()
    }
}

/// A call not made: the provider secret has not been readable since start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no provider API key: the provider secret has not been readable since start-up")]
pub struct KeyUnread;

use crate::secrets::REFUSAL_REREAD_INTERVAL;
pub use crate::secrets::UNREAD_REREAD_INTERVAL;

/// A failed request to the provider, as `<what happened>: <the request's error and its
/// causes>` ([`crate::http::describe`]): `timed out: ...`, `could not connect: ...` or
/// `failed: ...`.
pub fn error_text(e: reqwest::Error) -> String {
    let kind = match crate::http::failure(&e) {
        crate::http::Failure::Connect => "could not connect",
        crate::http::Failure::Timeout => "timed out",
        crate::http::Failure::Other => "failed",
    };
    format!("{kind}: {}", crate::http::describe(e))
}

/// The provider's API key `config`'s secret holds (one `secretsmanager:GetSecretValue`, at
/// start-up), to be read again by `function` (its logical name, for the
/// [`REREADS_FAILED`] metric): None without `PROVIDER_SECRET_ARN` or with an empty secret
/// (calls off until the next cold start). A secret that is named but cannot be read (a
/// Secrets Manager error, a key policy) does not stop the function: the rest of its work
/// (copying files, replaying parked callbacks) needs no key. It starts with no key, counted
/// and logged as an error, and reads the secret again before calls ([`ProviderKey::unread`]).
pub async fn read_provider_key(
    sdk: &aws_config::SdkConfig,
    config: &ProviderConfig,
    function: &'static str,
) -> Option<ProviderKey> {
    let arn = config.secret_arn.as_ref()?;
    ProviderKey::load(SecretReader::new(sdk, arn), SystemClock, function).await
}

/// One [`REREADS_FAILED`] for `function`: a read of the provider secret that brought no key.
fn count_failed_read(function: &'static str) {
    metrics::emit(&[(metrics::FUNCTION, metrics::function_name(function))], &[Metric::count(REREADS_FAILED)]);
}

/// The key `reader`'s secret holds now ([`ApiKey::from_secret`]), or why none could be had.
async fn read_key<R: ReadSecret>(reader: &R) -> Result<Option<ApiKey>, String> {
    ApiKey::from_secret(&read_within_timeout(reader).await.map_err(|e| e.to_string())?)
}

/// Why the key is read again (for the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The key in force reached [`AgePolicy::max_age`].
    Age,
    /// The provider refused a call with it (401/403).
    Refusal,
}

/// The API key in force on an instance, shared by all its calls, and the secret read again
/// (one read at a time, bounded by [`crate::secrets::REREAD_TIMEOUT`]; concurrent calls wait
/// for it and use its result) so a rotated key is used without a redeploy:
/// - before a call, when the key in force was read [`AgePolicy::max_age`] ago (5 minutes):
///   one read per instance per 5 minutes while it calls the provider;
/// - when the provider refuses a call (401/403), at most once per [`REFUSAL_REREAD_INTERVAL`]
///   for refusals; the call is made once more when the key changed.
///
/// A read that brings no key (unreadable, or an emptied secret: calls are not turned off at
/// run time) keeps the key in force, logs a warning (an error while no key was ever read: no
/// call can be made) and counts one [`REREADS_FAILED`].
#[derive(Debug)]
pub struct ProviderKey<R = SecretReader, C = SystemClock> {
    key: Reread<ApiKey>,
    /// When a refusal last read the secret: refusals read at most once per interval.
    refusal_read_at: Mutex<Option<Timestamp>>,
    reader: R,
    clock: C,
    /// The `Function` dimension's logical name.
    function: &'static str,
}

impl<R: ReadSecret, C: Clock> ProviderKey<R, C> {
    /// Read the secret (at start-up): None when it holds no key (empty: calls off);
    /// [`ProviderKey::unread`] (counted and logged as an error) when it cannot be read or
    /// holds no usable key (an object without a string `api_key`).
    pub async fn load(reader: R, clock: C, function: &'static str) -> Option<ProviderKey<R, C>> {
        let read_at = clock.now();
        match read_key(&reader).await {
            Ok(key) => key.map(|key| ProviderKey::new(key, read_at, reader, clock, function)),
            Err(e) => {
                count_failed_read(function);
                tracing::error!(error = %e, "the provider secret brought no usable key; calls to the provider wait until it does");
                Some(ProviderKey::unread(reader, clock, function))
            }
        }
    }

    /// No key yet (`reader`'s secret could not be read at start-up): the secret is read again
    /// before a call, at most once per [`UNREAD_REREAD_INTERVAL`], and calls are not made
    /// ([`KeyUnread`]) until a read brings a key.
    pub fn unread(reader: R, clock: C, function: &'static str) -> ProviderKey<R, C> {
        let now = clock.now();
        ProviderKey::new(ApiKey::unread(), now, reader, clock, function)
    }

    /// `key`, read from `reader`'s secret at `read_at`.
    pub fn new(key: ApiKey, read_at: Timestamp, reader: R, clock: C, function: &'static str) -> ProviderKey<R, C> {
        ProviderKey { key: Reread::new(key, read_at), refusal_read_at: Mutex::new(None), reader, clock, function }
    }

    /// The key to call with now: the one in force, read again first when it is stale (or,
    /// with no key yet, once [`UNREAD_REREAD_INTERVAL`] passed since the last read).
    pub async fn fresh(&self) -> Arc<ApiKey> {
        let age = AgePolicy::default().until_read(self.key.in_force().value.is_unread());
        self.key.fresh(&self.clock, age, || self.read(Trigger::Age)).await
    }

    /// The key to call again with after the provider refused `refused`: the one another
    /// call's read brought meanwhile, or the one this read brings when refusals may read and
    /// the key changed. None: the refusal stands.
    pub async fn refreshed(&self, refused: &Arc<ApiKey>) -> Option<Arc<ApiKey>> {
        // Counted from the last refusal's read, not the age's: refusals have their own budget.
        let may_read = |_, now| {
            let mut last = self.refusal_read_at.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| !passed_or_stepped_back(REFUSAL_REREAD_INTERVAL, at, now)) {
                return false;
            }
            *last = Some(now);
            true
        };
        self.key.refreshed(&self.clock, refused, may_read, || self.read(Trigger::Refusal)).await
    }

    /// `send` with the fresh key; when `refused` says the provider refused it (401/403),
    /// once more with the key a re-read brings, if it changed. [`KeyUnread`], and nothing
    /// sent, while no key could be read since start-up.
    pub async fn call<T, F, Fut>(&self, send: F, refused: impl Fn(&T) -> bool) -> Result<T, KeyUnread>
    where
        F: Fn(Arc<ApiKey>) -> Fut,
        Fut: Future<Output = T>,
    {
        let key = self.fresh().await;
        if key.is_unread() {
            return Err(KeyUnread);
        }
        let answer = send(key.clone()).await;
        if !refused(&answer) {
            return Ok(answer);
        }
        Ok(match self.refreshed(&key).await {
            Some(new_key) => {
                tracing::info!("the provider refused the API key: calling again with the key re-read");
                send(new_key).await
            }
            None => answer,
        })
    }

    /// Read the secret (the caller holds the right to): the new key when there is one and it
    /// changed, None to keep the one in force.
    async fn read(&self, trigger: Trigger) -> Option<Arc<ApiKey>> {
        let fresh = read_key(&self.reader)
            .await
            .and_then(|key| key.ok_or_else(|| "the secret holds no API key (empty)".to_owned()));
        match fresh {
            Ok(fresh) if fresh == *self.key.in_force().value => {
                tracing::debug!(?trigger, "provider API key re-read: unchanged");
                None
            }
            Ok(fresh) if self.key.in_force().value.is_unread() => {
                tracing::info!(?trigger, "provider API key read: calls to the provider resume");
                Some(Arc::new(fresh))
            }
            Ok(fresh) => {
                tracing::info!(?trigger, "provider API key changed: calling with its new version");
                Some(Arc::new(fresh))
            }
            Err(e) => {
                // Once per read, and reads are rate-limited: not once per call.
                count_failed_read(self.function);
                if self.key.in_force().value.is_unread() {
                    tracing::error!(
                        ?trigger,
                        error = %e,
                        "provider API key re-read brought no key, and none has been read since \
                        start-up: calls to the provider (polls, fresh links) still wait; fix \
                        the secret"
                    );
                } else {
                    tracing::warn!(?trigger, error = %e, "provider API key re-read brought no key; keeping the current one");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tracing::Level;

    use crate::secrets::SecretError;

    fn config(pairs: &[(&str, &str)]) -> Result<ProviderConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProviderConfig::read(&Env::new(ENVIRONMENT, move |k| {
            pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }))
    }

    /// A key in the base URL's path stays out of a `{:?}` of the settings.
    #[test]
    fn debug_shows_the_base_url_as_logged() {
        let c = config(&[("PROVIDER_BASE_URL", "https://gw.example/k3y-in-path")]).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("https://gw.example/… (sha256 ") && !shown.contains("k3y"), "{shown}");
    }

    #[test]
    fn defaults_to_kie_at_its_host_without_a_key() {
        let c = config(&[]).unwrap();
        assert_eq!((c.provider, c.base_url.as_str(), c.secret_arn), (Provider::Kie, "https://api.kie.ai", None));
        let c = config(&[("PROVIDER", "SunoApi"), ("PROVIDER_SECRET_ARN", "arn:x")]).unwrap();
        assert_eq!((c.provider, c.base_url.as_str()), (Provider::SunoApi, "https://api.sunoapi.org"));
        assert_eq!(c.secret_arn.as_deref(), Some("arn:x"));
        assert!(matches!(config(&[("PROVIDER", "suno")]), Err(ConfigError::Invalid { name: "PROVIDER", .. })));
    }

    #[test]
    fn the_base_url_is_https_or_loopback_http() {
        for ok in ["https://api.kie.ai/", "http://127.0.0.1:3002", "http://localhost:9/prefix", "http://[::1]:3002"] {
            assert!(config(&[("PROVIDER_BASE_URL", ok)]).is_ok(), "{ok}");
        }
        assert_eq!(config(&[("PROVIDER_BASE_URL", "https://api.kie.ai/")]).unwrap().base_url, "https://api.kie.ai");
        for bad in [
            "http://api.kie.ai",
            "http://127.0.0.1.nip.io",
            "ftp://127.0.0.1",
            "https://u:sk-secret1@api.kie.ai",
            "kie",
            "https://api.kie.ai/#sk-secret1",
            "https://api.kie.ai/?api_key=sk-secret1",
            "https://api.kie.ai/sk-secret1?x",
        ] {
            let err = config(&[("PROVIDER_BASE_URL", bad)]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: "PROVIDER_BASE_URL", .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("sk-secret1"), "the refusal is logged: {err}");
        }
    }

    /// The provider secret: its text now (or a failure), and how many times it was read.
    #[derive(Debug, Default)]
    struct FakeSecret {
        text: Mutex<Option<String>>,
        reads: Mutex<usize>,
    }

    impl FakeSecret {
        fn holding(text: &str) -> FakeSecret {
            let secret = FakeSecret::default();
            secret.put(Some(text));
            secret
        }

        /// None: reads fail.
        fn put(&self, text: Option<&str>) {
            *self.text.lock().unwrap() = text.map(str::to_owned);
        }

        fn reads(&self) -> usize {
            *self.reads.lock().unwrap()
        }
    }

    impl ReadSecret for &FakeSecret {
        async fn read_secret(&self) -> Result<SecretText, SecretError> {
            *self.reads.lock().unwrap() += 1;
            let text = self.text.lock().unwrap().clone();
            text.map(SecretText::new).ok_or_else(|| SecretError::Unavailable("scripted".into()))
        }
    }

    #[derive(Debug)]
    struct VirtualClock(Mutex<Timestamp>);

    impl VirtualClock {
        fn advance_to(&self, at: Timestamp) {
            *self.0.lock().unwrap() = at;
        }
    }

    impl Clock for &VirtualClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().unwrap()
        }

        async fn sleep(&self, _: Duration) {}
    }

    const T0: Timestamp = Timestamp { unix_ms: 1_763_910_000_000 };

    fn at(seconds: u64) -> Timestamp {
        T0.plus(Duration::from_secs(seconds))
    }

    /// A provider accepting one key: the keys it was called with, and 200 or 401.
    #[derive(Default)]
    struct FakeProvider {
        accepts: Mutex<String>,
        called_with: Mutex<Vec<String>>,
    }

    impl FakeProvider {
        fn accepting(key: &str) -> FakeProvider {
            FakeProvider { accepts: Mutex::new(key.into()), ..FakeProvider::default() }
        }

        async fn call<R: ReadSecret, C: Clock>(&self, keys: &ProviderKey<R, C>) -> u16 {
            self.try_call(keys).await.expect("a key")
        }

        async fn try_call<R: ReadSecret, C: Clock>(&self, keys: &ProviderKey<R, C>) -> Result<u16, KeyUnread> {
            let send = |key: Arc<ApiKey>| async move {
                self.called_with.lock().unwrap().push(key.expose().to_owned());
                if *self.accepts.lock().unwrap() == key.expose() { 200 } else { 401 }
            };
            keys.call(send, |status| matches!(status, 401 | 403)).await
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.called_with.lock().unwrap())
        }
    }

    async fn loaded<'a>(
        secret: &'a FakeSecret,
        clock: &'a VirtualClock,
    ) -> ProviderKey<&'a FakeSecret, &'a VirtualClock> {
        ProviderKey::load(secret, clock, "test").await.expect("a key")
    }

    #[tokio::test]
    async fn an_empty_secret_at_start_up_is_no_key() {
        let clock = VirtualClock(Mutex::new(T0));
        assert!(ProviderKey::load(&FakeSecret::holding(" "), &clock, "test").await.is_none());
    }

    /// A secret that holds no usable key (an object without `api_key`) is not "calls off":
    /// as an unreadable one, nothing is sent and it is read again until it brings a key.
    #[tokio::test]
    async fn a_mistaken_secret_at_start_up_is_read_again_not_taken_for_off() {
        let clock = VirtualClock(Mutex::new(T0));
        let secret = FakeSecret::holding(r#"{"apiKey": "k1"}"#);
        let keys = ProviderKey::load(&secret, &clock, "test").await.expect("calls not off");
        let provider = FakeProvider::accepting("k1");
        assert_eq!(provider.try_call(&keys).await, Err(KeyUnread));
        secret.put(Some(r#"{"api_key": "k1"}"#));
        clock.advance_to(at(60));
        assert_eq!(provider.try_call(&keys).await, Ok(200));
    }

    /// A secret that cannot be read at start-up: nothing is sent (the call answers
    /// `KeyUnread`), the secret is read again once a minute while it fails, and the first key
    /// read is used.
    #[tokio::test]
    async fn an_unreadable_secret_at_start_up_is_read_again_before_calls_until_it_brings_a_key() {
        let captured = crate::log_capture::capture_logs();
        let (secret, clock) = (FakeSecret::default(), VirtualClock(Mutex::new(T0)));
        let keys = ProviderKey::load(&secret, &clock, "test").await.expect("calls not off");
        let provider = FakeProvider::accepting("k1");
        assert_eq!(provider.try_call(&keys).await, Err(KeyUnread));
        assert_eq!((provider.calls().len(), secret.reads()), (0, 1), "nothing sent, no read within the minute");
        clock.advance_to(at(60));
        assert_eq!(provider.try_call(&keys).await, Err(KeyUnread));
        assert_eq!(secret.reads(), 2, "read again after a minute");
        // An error, not the warning of a re-read that keeps a key in force: calls still wait.
        let logs = captured.text();
        let reread = captured.lines_with("re-read brought no key");
        assert!(reread.len() == 1 && reread[0].is(Level::ERROR, &["none has been read since start-up"]), "{logs}");

        secret.put(Some("k1"));
        clock.advance_to(at(119));
        assert_eq!(provider.try_call(&keys).await, Err(KeyUnread));
        clock.advance_to(at(120));
        assert_eq!(provider.try_call(&keys).await, Ok(200));
        assert_eq!((provider.calls(), secret.reads()), (vec!["k1".to_owned()], 3));
        // From then on, the usual five-minute age.
        clock.advance_to(at(400));
        assert_eq!(provider.try_call(&keys).await, Ok(200));
        assert_eq!(secret.reads(), 3);
    }

    #[tokio::test]
    async fn a_rotated_key_is_used_once_the_key_in_force_is_five_minutes_old() {
        let (secret, clock) = (FakeSecret::holding("k1"), VirtualClock(Mutex::new(T0)));
        let keys = loaded(&secret, &clock).await;
        secret.put(Some(r#"{"api_key": "k2"}"#));
        clock.advance_to(T0.plus(Duration::from_millis(299_999)));
        assert_eq!(keys.fresh().await.expose(), "k1");
        assert_eq!(secret.reads(), 1, "only the start-up read");
        clock.advance_to(at(300));
        assert_eq!(keys.fresh().await.expose(), "k2");
        assert_eq!(keys.fresh().await.expose(), "k2");
        assert_eq!(secret.reads(), 2);
    }

    #[tokio::test]
    async fn a_refusal_rereads_once_a_minute_at_most_and_calls_again_when_the_key_changed() {
        let (secret, clock) = (FakeSecret::holding("k1"), VirtualClock(Mutex::new(T0)));
        let keys = loaded(&secret, &clock).await;
        let provider = FakeProvider::accepting("k2");
        secret.put(Some("k2"));
        clock.advance_to(at(10));
        assert_eq!(provider.call(&keys).await, 200);
        assert_eq!(provider.calls(), ["k1", "k2"], "refused, re-read, called again with the new key");
        assert_eq!(secret.reads(), 2);

        // Rotated again within the minute: refused, and no re-read.
        *provider.accepts.lock().unwrap() = "k3".into();
        secret.put(Some("k3"));
        clock.advance_to(at(69));
        assert_eq!(provider.call(&keys).await, 401);
        assert_eq!(provider.calls(), ["k2"]);
        assert_eq!(secret.reads(), 2);
        clock.advance_to(at(70));
        assert_eq!(provider.call(&keys).await, 200);
        assert_eq!(provider.calls(), ["k2", "k3"]);
        assert_eq!(secret.reads(), 3);

        // A refusal the re-read cannot fix: one call, the refusal stands.
        *provider.accepts.lock().unwrap() = "k4".into();
        clock.advance_to(at(130));
        assert_eq!(provider.call(&keys).await, 401);
        assert_eq!((provider.calls(), secret.reads()), (vec!["k3".to_owned()], 4), "unchanged: not called again");
    }

    #[tokio::test]
    async fn a_failing_or_emptied_secret_keeps_the_key_in_force_until_the_next_age() {
        let captured = crate::log_capture::capture_logs();
        let (secret, clock) = (FakeSecret::holding("k1"), VirtualClock(Mutex::new(T0)));
        let keys = loaded(&secret, &clock).await;
        let provider = FakeProvider::accepting("k1");
        secret.put(None);
        clock.advance_to(at(300));
        assert_eq!(provider.call(&keys).await, 200);
        assert_eq!((provider.calls(), secret.reads()), (vec!["k1".to_owned()], 2));
        let logs = captured.text();
        let reread = captured.lines_with("re-read brought no key");
        assert!(reread.iter().any(|l| l.is(Level::WARN, &["keeping the current one"])), "{logs}");
        clock.advance_to(at(599));
        assert_eq!(keys.fresh().await.expose(), "k1");
        assert_eq!(secret.reads(), 2, "the failed read restarted the age");

        // Refused, and the re-read fails: the refusal stands with the key in force.
        *provider.accepts.lock().unwrap() = "k2".into();
        assert_eq!(provider.call(&keys).await, 401);
        assert_eq!((provider.calls(), secret.reads()), (vec!["k1".to_owned()], 3));

        // An emptied secret does not turn calls off at run time.
        secret.put(Some(""));
        clock.advance_to(at(1200));
        assert_eq!(keys.fresh().await.expose(), "k1");
        assert_eq!(secret.reads(), 4);
        secret.put(Some("k2"));
        clock.advance_to(at(1500));
        assert_eq!(keys.fresh().await.expose(), "k2");
    }

    #[test]
    fn the_key_is_the_secret_text_or_its_api_key_and_never_shown() {
        let key = |text: &str| ApiKey::from_secret(&SecretText::new(text));
        let plain = key(" sk-123 \n").unwrap().unwrap();
        assert_eq!(plain.expose(), "sk-123");
        assert_eq!(format!("{plain:?}"), "ApiKey(<redacted>)");
        assert_eq!(key(r#"{"api_key": "sk-456"}"#).unwrap().unwrap().expose(), "sk-456");
        assert_eq!(key(r#" "sk-789" "#).unwrap().unwrap().expose(), "sk-789", "a JSON string's contents");
        for off in ["", "  ", r#"{"api_key": ""}"#, r#""""#] {
            assert_eq!(key(off), Ok(None), "{off:?}");
        }
        let mistakes = [
            r#"{"apiKey": "sk-1"}"#,
            r#"{"api_key": 123}"#,
            "{}",
            r#"{"api_key": "sk-1""#,
            r#""sk-1"#,
            "[\"sk-1\"]",
            "sk-1\nsk-123",
            r#"{"api_key": "sk-1 123"}"#,
            "sk-1\u{a0}123",
            "sk-1\u{e9}123",
        ];
        for mistake in mistakes {
            let err = key(mistake).unwrap_err();
            assert!(!err.contains("sk-1") && !err.contains("123"), "{err}");
        }
    }
}
