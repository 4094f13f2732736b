//! AWS Secrets Manager: a function reads its secret's current value (at start-up, and again
//! when it may have been rotated: [`Reread`]); the local runner and the tests put secrets in
//! the emulator. Secret values never appear in `Debug`, `Display` or errors.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::sdk_error::sdk_error_text;
use stemvault_vault::time::passed_or_stepped_back;
use stemvault_vault::{Clock, Timestamp};

/// How old what a function made from its secret may get before the secret is read again: a
/// secret rotated (or a key revoked) is in force on every warm instance within this.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// How often a secret is read again while nothing usable could be read from it since
/// start-up (the function then holds back what needs it: callbacks, provider calls,
/// webhooks).
pub const UNREAD_REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// How often refusals may read a secret again: however many requests (callbacks ingest's
/// checks refuse) or calls (polls the provider refuses for the key) are refused, an instance
/// reads it at most this often for them.
pub const REFUSAL_REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// How long a re-read may take before what is in force stands (requests wait for it).
pub const REREAD_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one attempt of a secret's read may take: under half of [`REREAD_TIMEOUT`], so a
/// read whose connection stalls is tried again within it (at the functions' own
/// [`crate::ATTEMPT_TIMEOUT`], as long as the bound, the one attempt spent it all and the SDK
/// never tried again: a new ingest instance then refused callbacks for a minute).
pub const SECRET_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1400);

/// The metric (Count, dimension `Function`) a function emits once per re-read of its secret
/// that brought nothing usable (unreadable, or text it cannot use): what it made from the
/// secret before stays in force, so a rotation or a revocation is not taking effect. The
/// function's `<stack>-<function>-secret-unreadable` alarm in `template.yaml` watches it.
pub const REREADS_FAILED: &str = "SecretRereadsFailed";

/// A secret's text. Its `Debug` never shows it; read it with [`SecretText::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> SecretText {
        SecretText(text.into())
    }

    /// The secret itself: parse it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// Why a secret could not be read or written. Carries the service's error, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager or the network failed, the secret does not exist, or the role may not
    /// read it.
    #[error("the secret could not be read: {0}")]
    Unavailable(String),
    /// A binary secret: only text (JSON) secrets are supported.
    #[error("the secret has no text value (binary secrets are not supported)")]
    NotText,
    #[error("the secret could not be written: {0}")]
    Write(String),
}

/// The region `secret_id` names when it is an ARN (`arn:<partition>:secretsmanager:<region>:…`).
fn arn_region(secret_id: &str) -> Option<&str> {
    let mut fields = secret_id.splitn(5, ':');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => Some(region),
        _ => None,
    }
}

/// Reads one secret, named by ARN (or name), with a client built once.
#[derive(Debug, Clone)]
pub struct SecretReader {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretReader {
    /// A reader asking the region an ARN names (Secrets Manager finds a secret only in its own
    /// region, whatever its ARN says), else `sdk`'s.
    pub fn new(sdk: &aws_config::SdkConfig, secret_id: &str) -> SecretReader {
        let (timeouts, retries) = crate::quick_attempts(SECRET_ATTEMPT_TIMEOUT);
        let mut config =
            aws_sdk_secretsmanager::config::Builder::from(sdk).timeout_config(timeouts).retry_config(retries);
        if let Some(region) = arn_region(secret_id) {
            config = config.region(aws_sdk_secretsmanager::config::Region::new(region.to_owned()));
        }
        let client = aws_sdk_secretsmanager::Client::from_conf(config.build());
        SecretReader { client, secret_id: secret_id.to_owned() }
    }

    /// The ARN (or name) it reads.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The secret's current text (`secretsmanager:GetSecretValue` on the secret).
    pub async fn read(&self) -> Result<SecretText, SecretError> {
        self.read_stage(None).await
    }

    /// The secret's text before the last change of its value: the version Secrets Manager
    /// labels [`PREVIOUS_STAGE`] (none until the value has been changed once; the same
    /// `secretsmanager:GetSecretValue`).
    pub async fn read_previous(&self) -> Result<SecretText, SecretError> {
        self.read_stage(Some(PREVIOUS_STAGE)).await
    }

    async fn read_stage(&self, stage: Option<&str>) -> Result<SecretText, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .set_version_stage(stage.map(str::to_owned))
            .send()
            .await
            .map_err(|e| SecretError::Unavailable(sdk_error_text(&e)))?;
        out.secret_string.map(SecretText).ok_or(SecretError::NotText)
    }
}

/// The staging label Secrets Manager moves to a secret's version when a new value is put.
pub const PREVIOUS_STAGE: &str = "AWSPREVIOUS";

/// Read a secret's current text: the port functions read their secret through.
pub trait ReadSecret {
    fn read_secret(&self) -> impl Future<Output = Result<SecretText, SecretError>> + Send;
}

impl ReadSecret for SecretReader {
    async fn read_secret(&self) -> Result<SecretText, SecretError> {
        self.read().await
    }
}

/// Read a secret's previous text ([`PREVIOUS_STAGE`]): the port of a function that falls back
/// on it when the current text cannot be used.
pub trait ReadPreviousSecret {
    fn read_previous_secret(&self) -> impl Future<Output = Result<SecretText, SecretError>> + Send;
}

/// The secret's text, unless the read takes longer than [`REREAD_TIMEOUT`] (then
/// [`SecretError::Unavailable`]).
pub async fn read_within_timeout<R: ReadSecret>(reader: &R) -> Result<SecretText, SecretError> {
    within_timeout(reader.read_secret()).await
}

/// The secret's previous text, within [`REREAD_TIMEOUT`] as [`read_within_timeout`].
pub async fn read_previous_within_timeout<R: ReadPreviousSecret>(reader: &R) -> Result<SecretText, SecretError> {
    within_timeout(reader.read_previous_secret()).await
}

async fn within_timeout(
    read: impl Future<Output = Result<SecretText, SecretError>>,
) -> Result<SecretText, SecretError> {
    tokio::time::timeout(REREAD_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(SecretError::Unavailable(format!("no answer within {REREAD_TIMEOUT:?}"))))
}

/// When what was made from a secret is too old to use: pure, over the clock's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgePolicy {
    /// The most time it may go unread.
    pub max_age: Duration,
}

impl Default for AgePolicy {
    fn default() -> AgePolicy {
        AgePolicy { max_age: MAX_AGE }
    }
}

impl AgePolicy {
    /// Whether what was read at `read_at` is too old to use at `now`. A clock that stepped
    /// back cannot tell its age, so it is (the read restarts the age from `now`).
    pub fn is_stale(&self, read_at: Timestamp, now: Timestamp) -> bool {
        passed_or_stepped_back(self.max_age, read_at, now)
    }

    /// This policy, or, while nothing usable has been read since start-up (`unread`), one
    /// that reads again once per [`UNREAD_REREAD_INTERVAL`] (or sooner, if this one does).
    pub fn until_read(self, unread: bool) -> AgePolicy {
        match unread {
            true => AgePolicy { max_age: UNREAD_REREAD_INTERVAL.min(self.max_age) },
            false => self,
        }
    }
}

/// What a function made from its secret, and when the secret was last read (successfully or not).
#[derive(Debug)]
pub struct InForce<T> {
    pub value: Arc<T>,
    pub read_at: Timestamp,
}

impl<T> Clone for InForce<T> {
    fn clone(&self) -> InForce<T> {
        InForce { value: self.value.clone(), read_at: self.read_at }
    }
}

/// What a function made from its secret, shared by every request of an instance and made
/// again from a new read, one read at a time: concurrent requests wait for it and use its
/// result. A read that brings nothing usable keeps what is in force.
#[derive(Debug)]
pub struct Reread<T> {
    /// Replaced as a whole when a read ends, so a request sees the time of the read that
    /// brought the value it uses.
    in_force: Mutex<InForce<T>>,
    /// Held while reading the secret, so one read runs at a time and requests wait for it.
    reading: tokio::sync::Mutex<()>,
}

impl<T> Reread<T> {
    /// `value`, made from the secret read at `read_at`.
    pub fn new(value: T, read_at: Timestamp) -> Reread<T> {
        Reread {
            in_force: Mutex::new(InForce { value: Arc::new(value), read_at }),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn in_force(&self) -> InForce<T> {
        self.in_force.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The end of a read started at `read_at`: `value`, when it brought one, goes in force.
    /// The read time becomes `read_at` either way, so a failing read is not retried by every
    /// request.
    fn settle(&self, read_at: Timestamp, value: Option<Arc<T>>) {
        let mut in_force = self.in_force.lock().unwrap_or_else(PoisonError::into_inner);
        in_force.read_at = read_at;
        if let Some(value) = value {
            in_force.value = value;
        }
    }

    /// The value to use now: the one in force, made again first by `read` when `policy` finds
    /// it stale. `read` returns the new value, or `None` to keep the one in force (it logs why).
    pub async fn fresh<C, F, Fut>(&self, clock: &C, policy: AgePolicy, read: F) -> Arc<T>
    where
        C: Clock,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Arc<T>>>,
    {
        let in_force = self.in_force();
        if !policy.is_stale(in_force.read_at, clock.now()) {
            return in_force.value;
        }
        let _reading = self.reading.lock().await;
        // Another request may have read it while this one waited.
        let in_force = self.in_force();
        let now = clock.now();
        if !policy.is_stale(in_force.read_at, now) {
            return in_force.value;
        }
        let value = read().await;
        self.settle(now, value);
        self.in_force().value
    }

    /// The value to try again with after `refused` was refused (a signature the checks
    /// refused, a key the provider refused): the one another request's read brought
    /// meanwhile; else, when `may_read(last read, now)` allows a read, the one `read` brings
    /// (None from it: nothing new). None: the refusal stands.
    pub async fn refreshed<C, F, Fut>(
        &self,
        clock: &C,
        refused: &Arc<T>,
        may_read: impl FnOnce(Timestamp, Timestamp) -> bool,
        read: F,
    ) -> Option<Arc<T>>
    where
        C: Clock,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Arc<T>>>,
    {
        let _reading = self.reading.lock().await;
        let in_force = self.in_force();
        if !Arc::ptr_eq(&in_force.value, refused) {
            return Some(in_force.value);
        }
        let now = clock.now();
        if !may_read(in_force.read_at, now) {
            return None;
        }
        let value = read().await;
        self.settle(now, value.clone());
        value
    }
}

/// Create the secret `name` holding `text`, or make `text` its current value when it exists;
/// returns its ARN. For the local emulator and the tests: no function writes a secret.
#[cfg(feature = "provision")]
pub async fn put_secret(sdk: &aws_config::SdkConfig, name: &str, text: &SecretText) -> Result<String, SecretError> {
    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let write_error = |e: String| SecretError::Write(e);
    let created = client.create_secret().name(name).secret_string(text.expose()).send().await;
    match created {
        Ok(out) => out.arn.ok_or_else(|| write_error("the service returned no ARN".into())),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceExistsException") => client
            .put_secret_value()
            .secret_id(name)
            .secret_string(text.expose())
            .send()
            .await
            .map_err(|e| write_error(sdk_error_text(&e)))?
            .arn
            .ok_or_else(|| write_error("the service returned no ARN".into())),
        Err(e) => Err(write_error(sdk_error_text(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_is_never_shown() {
        let text = SecretText::new("{\"callback_token\":\"very-secret\"}");
        assert_eq!(format!("{text:?}"), "SecretText(<redacted>)");
        assert_eq!(text.expose(), "{\"callback_token\":\"very-secret\"}");
    }

    const T0: Timestamp = Timestamp { unix_ms: 1_763_910_000_000 };

    #[test]
    fn stale_after_five_minutes_or_when_the_clock_stepped_back() {
        let policy = AgePolicy::default();
        assert_eq!(policy.max_age, Duration::from_secs(300));
        assert!(!policy.is_stale(T0, T0));
        assert!(!policy.is_stale(T0, T0.plus(Duration::from_millis(299_999))), "fresh");
        assert!(policy.is_stale(T0, T0.plus(Duration::from_secs(300))));
        assert!(policy.is_stale(T0, T0.plus(Duration::from_secs(86_400))));
        assert!(policy.is_stale(T0, T0.minus(Duration::from_millis(1))), "the clock stepped back: age unknown");
        assert!(AgePolicy { max_age: Duration::ZERO }.is_stale(T0, T0));
    }

    #[test]
    fn an_arn_names_the_region_to_ask() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stemvault-callback-AbCdEf";
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(arn_region("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:s"), Some("cn-north-1"));
        for no_region in ["stemvault-callback", "arn:x", "arn:aws:secretsmanager::1:secret:s", "arn:aws:s3:::bucket"] {
            assert_eq!(arn_region(no_region), None, "{no_region}");
        }
    }

    /// A read whose first attempt stalls (a connection that never answers) is tried again
    /// within [`REREAD_TIMEOUT`], and brings the secret.
    #[tokio::test(start_paused = true)]
    async fn a_read_whose_first_attempt_stalls_is_tried_again_in_time() {
        let body = br#"{"ARN":"arn:x","Name":"n","SecretString":"{\"k\":1}","VersionId":"v"}"#;
        // Its retries off, as the reader's own settings replace them.
        let (sdk, calls) = crate::test_http::sdk_stalling_first(200, body);
        let reader = SecretReader::new(&sdk, "arn:x");
        let text = read_within_timeout(&reader).await.expect("read on its second attempt");
        assert_eq!(text.expose(), r#"{"k":1}"#);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
