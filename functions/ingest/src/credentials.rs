//! The callback checks in force, and when to read the callback secret again.
//!
//! The secret is read once at start-up. A request that its checks refuse may be signed with a
//! key (or sent to a token) that was rotated into Secrets Manager since: then the secret is
//! read again, at most once per [`REFRESH_INTERVAL`] per instance however many requests are
//! refused (an unauthenticated flood costs one read a minute), and the request is checked again
//! with what was read. Concurrent refused requests wait for that one read and use its result.
//! A secret that cannot be read or used keeps the checks in force.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use stemvault_aws::ConfigError;
use stemvault_aws::secrets::{SecretError, SecretText};
use stemvault_vault::{Clock, Timestamp};

use crate::auth::Auth;
use crate::secret::CallbackSecret;

/// Read the callback secret's current text.
pub trait ReadSecret {
    fn read_secret(&self) -> impl Future<Output = Result<SecretText, SecretError>> + Send;
}

/// How often a refused request may read the secret again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// How long a re-read may take before the refusal stands (the provider waits 15 s at most).
const REFRESH_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// When the secret may be read again: pure, over the times of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> RefreshPolicy {
        RefreshPolicy { interval: REFRESH_INTERVAL }
    }
}

impl RefreshPolicy {
    /// Whether a read may start at `now` when the last one started at `last_read`. A clock
    /// that stepped back allows it too (the read then restarts the interval from `now`).
    pub fn allows(&self, last_read: Timestamp, now: Timestamp) -> bool {
        now < last_read || now >= last_read.plus(self.interval)
    }
}

/// The settings (not secrets) that turn a secret into checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    pub signature_tolerance: Duration,
    pub allow_unauthenticated: bool,
}

impl AuthSettings {
    fn auth(&self, text: &SecretText) -> Result<Auth, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid { name: "CALLBACK_SECRET_ARN", reason };
        let secret = CallbackSecret::parse(text.expose()).map_err(|e| invalid(e.to_string()))?;
        Auth::new(secret, self.signature_tolerance, self.allow_unauthenticated)
    }
}

/// The checks in force, shared by every request of the instance.
#[derive(Debug)]
pub struct Credentials {
    current: Mutex<Arc<Auth>>,
    /// When the secret was last read; held while reading, so one read runs at a time.
    last_read: tokio::sync::Mutex<Timestamp>,
    policy: RefreshPolicy,
    settings: AuthSettings,
}

impl Credentials {
    /// Read the secret (at start-up). Fails when it cannot be read or used.
    pub async fn load<P: ReadSecret + Clock>(ports: &P, settings: AuthSettings) -> Result<Credentials, ConfigError> {
        let read_at = ports.now();
        let text = ports
            .read_secret()
            .await
            .map_err(|e| ConfigError::Invalid { name: "CALLBACK_SECRET_ARN", reason: e.to_string() })?;
        let auth = settings.auth(&text)?;
        Ok(Credentials {
            current: Mutex::new(Arc::new(auth)),
            last_read: tokio::sync::Mutex::new(read_at),
            policy: RefreshPolicy::default(),
            settings,
        })
    }

    /// Another refresh policy (the tests' shorter interval).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_policy(mut self, policy: RefreshPolicy) -> Credentials {
        self.policy = policy;
        self
    }

    /// The checks in force.
    pub fn current(&self) -> Arc<Auth> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Checks to try a request again with, after `refused_by` refused it: those another
    /// request's read brought meanwhile, or those this read brings when the policy allows a
    /// read and the secret changed. `None`: the refusal stands.
    pub async fn refreshed<P: ReadSecret + Clock>(&self, ports: &P, refused_by: &Arc<Auth>) -> Option<Arc<Auth>> {
        let mut last_read = self.last_read.lock().await;
        let current = self.current();
        if !Arc::ptr_eq(&current, refused_by) {
            return Some(current);
        }
        let now = ports.now();
        if !self.policy.allows(*last_read, now) {
            return None;
        }
        *last_read = now;
        // Bounded: requests refused meanwhile wait for this read.
        let read = tokio::time::timeout(REFRESH_READ_TIMEOUT, ports.read_secret()).await;
        let fresh = match read {
            Ok(Ok(text)) => self.settings.auth(&text).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {REFRESH_READ_TIMEOUT:?}")),
        };
        match fresh {
            Ok(fresh) if fresh.secret() == current.secret() => {
                tracing::debug!("callback secret re-read after a refusal: unchanged");
                None
            }
            Ok(fresh) => {
                tracing::info!(
                    hmac_keys = fresh.secret().hmac_keys.len(),
                    callback_token = fresh.secret().callback_token.is_some(),
                    "callback secret changed: checking with its new version"
                );
                let fresh = Arc::new(fresh);
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
                Some(fresh)
            }
            Err(e) => {
                tracing::error!(error = %e, "callback secret re-read after a refusal is unusable; keeping the current one");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_at_most_once_per_interval() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.interval, Duration::from_secs(60));
        let t0 = Timestamp::from_unix_ms(1_763_910_000_000);
        assert!(!policy.allows(t0, t0));
        assert!(!policy.allows(t0, t0.plus(Duration::from_millis(59_999))));
        assert!(policy.allows(t0, t0.plus(Duration::from_secs(60))));
        assert!(policy.allows(t0, t0.plus(Duration::from_secs(3600))));
        assert!(policy.allows(t0, Timestamp::from_unix_ms(t0.unix_ms - 1)), "the clock stepped back");
        assert!(RefreshPolicy { interval: Duration::ZERO }.allows(t0, t0));
    }
}
