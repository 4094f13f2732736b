//! The callback checks in force, and when to read the callback secret again.
//!
//! The secret is read at start-up, then again in two cases, one read at a time per instance
//! (concurrent requests wait for it and use its result; bounded by
//! [`stemvault_aws::secrets::REREAD_TIMEOUT`]; the shared part is [`stemvault_aws::secrets::Reread`]):
//! - a request arriving when the checks in force were read more than [`MAX_AGE`] ago: so a key
//!   or token taken out of the secret (revoked) stops being accepted within that age on every
//!   warm instance, though no request is ever refused (costs one read per instance per
//!   [`MAX_AGE`] while it serves requests);
//! - a request its checks refuse: it may be signed with a key (or sent to a token) rotated into
//!   Secrets Manager since. At most once per [`REFUSAL_REREAD_INTERVAL`] however many requests are
//!   refused (an unauthenticated flood costs one read a minute), and the request is checked
//!   again with what was read. An instance that holds no checks at all (nothing it could use
//!   read since it started: every callback is answered 503) reads at most once per
//!   [`UNREAD_REFUSAL_REREAD_INTERVAL`] instead, so a secret unreadable for a moment at its cold
//!   start does not turn the provider's few retries away for a minute.
//!
//! A secret that cannot be read or used keeps the checks in force and counts one
//! [`Measure::SecretRereadFailed`]; the read time advances all the same, so a failing Secrets
//! Manager is not read (nor counted) again on every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stemvault_aws::ConfigError;
use stemvault_aws::secrets::{AgePolicy, Reread, SecretText, read_previous_within_timeout, read_within_timeout};
pub use stemvault_aws::secrets::{ReadPreviousSecret, ReadSecret};
use stemvault_vault::time::passed_or_stepped_back;
use stemvault_vault::{Clock, Timestamp};

use crate::auth::Auth;
use crate::domain::{EmitMetrics, Measure};
use crate::secret::CallbackSecret;

use stemvault_aws::secrets::REFUSAL_REREAD_INTERVAL;

/// The least time between reads that refused requests trigger while the instance holds no
/// checks ([`Auth::unread`]): every callback it answers then is a 503 the provider retries
/// only a few times, and a Secrets Manager that failed one read at a cold start may answer
/// the next.
pub const UNREAD_REFUSAL_REREAD_INTERVAL: Duration = Duration::from_secs(5);

/// How old the checks in force may be: a key revoked from the secret is refused after this.
pub const MAX_AGE: Duration = stemvault_aws::secrets::MAX_AGE;

/// When the secret is read again: pure, over the times of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// The least time between reads that refused requests trigger (at most
    /// [`UNREAD_REFUSAL_REREAD_INTERVAL`] while no usable checks were read).
    pub interval: Duration,
    /// The most time the checks in force may go unread.
    pub max_age: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> RefreshPolicy {
        RefreshPolicy { interval: REFUSAL_REREAD_INTERVAL, max_age: MAX_AGE }
    }
}

impl RefreshPolicy {
    /// Whether a refused request may read at `now` when the last read started at `last_read`.
    /// A clock that stepped back allows it too (the read then restarts the interval from `now`).
    pub fn allows(&self, last_read: Timestamp, now: Timestamp) -> bool {
        passed_or_stepped_back(self.interval, last_read, now)
    }

    /// How old checks may grow before they are read again (a clock that stepped back cannot
    /// tell their age, so they are then too old).
    fn age(&self) -> AgePolicy {
        AgePolicy { max_age: self.max_age }
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
        // The secret's value is at fault, not the variable naming it.
        let invalid = |reason: String| ConfigError::Invalid { name: "the callback secret's value", reason };
        let secret = CallbackSecret::parse(text.expose()).map_err(|e| invalid(e.to_string()))?;
        Auth::new(secret, self.signature_tolerance, self.allow_unauthenticated)
    }

    /// The checks of the secret's previous version, its current text `unusable` (at start-up).
    async fn previous<P: ReadPreviousSecret>(&self, ports: &P, unusable: ConfigError) -> Started {
        match read_previous_within_timeout(ports).await.map(|text| self.auth(&text)) {
            Ok(Ok(auth)) => Started::Previous { auth, unusable },
            Ok(Err(e)) => Started::NoChecks(format!(
                "its text cannot be used: {unusable}; nor can its previous version's (AWSPREVIOUS): {e}"
            )),
            Err(e) => Started::NoChecks(format!(
                "its text cannot be used: {unusable} (its previous version, AWSPREVIOUS, cannot be read: {e})"
            )),
        }
    }
}

/// What the read at start-up made of the secret.
enum Started {
    /// The checks of its current text.
    Current(Auth),
    /// Those of its previous version, the current text being `unusable`.
    Previous { auth: Auth, unusable: ConfigError },
    /// None: why.
    NoChecks(String),
}

/// Why the secret is read again (for the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A request was refused.
    Refusal,
    /// The checks in force reached the policy's maximum age.
    Age,
}

/// The checks in force, shared by every request of the instance.
#[derive(Debug)]
pub struct Credentials {
    /// The checks and when the secret was last read, swapped together.
    checks: Reread<Auth>,
    /// The last read brought nothing usable (unreadable, or unusable text): the secret may
    /// hold checks that would pass a request those in force refuse.
    last_read_failed: AtomicBool,
    policy: RefreshPolicy,
    settings: AuthSettings,
}

impl Credentials {
    /// Read the secret (at start-up). Its current text, when it cannot be used (an edit to
    /// fix), gives way to its previous version's (`AWSPREVIOUS`): the checks every warm
    /// instance still has (a re-read that brings unusable text keeps those in force), so a
    /// typo in a rotation does not leave the instances started since refusing every callback.
    /// The start then counts one [`Measure::SecretRereadFailed`] (alarmed), logs why, and the
    /// current text is read again as after a failed read.
    ///
    /// A secret that cannot be read (Secrets Manager failing or slow, a key policy), or
    /// neither of whose texts can be used, starts the function all the same, with
    /// [`Auth::unread`] checks: requests are answered 503 `secret_unreadable` (the provider
    /// retries) and the secret is read again after a refusal, at most once per
    /// [`UNREAD_REFUSAL_REREAD_INTERVAL`], until a read brings usable checks; the start counts one
    /// [`Measure::SecretRereadFailed`] and logs why. Exiting instead would fail every cold
    /// start, each answering the callback that started it with a bare 5xx, while warm
    /// instances went on with the checks they had.
    pub async fn load<P: ReadSecret + ReadPreviousSecret + Clock + EmitMetrics<Measure>>(
        ports: &P,
        settings: AuthSettings,
    ) -> Credentials {
        let read_at = ports.now();
        // Bounded as every re-read is: a read that hangs would hold the cold start (and the
        // callback waiting on it) until Lambda's init timeout.
        let started = match read_within_timeout(ports).await {
            Ok(text) => match settings.auth(&text) {
                Ok(auth) => Started::Current(auth),
                Err(unusable) => settings.previous(ports, unusable).await,
            },
            Err(e) => Started::NoChecks(format!("it cannot be read: {e}")),
        };
        let (auth, failed_read) = match started {
            Started::Current(auth) => (auth, None),
            Started::Previous { auth, unusable } => (
                auth,
                Some((
                    unusable.to_string(),
                    "the callback secret's text cannot be used at start-up; checking callbacks with its previous \
                     version (AWSPREVIOUS), as the instances started before it still do, and reading it again at \
                     most once a minute after a refusal (answered 503 secret_unreadable meanwhile)",
                )),
            ),
            Started::NoChecks(why) => (
                Auth::unread(),
                Some((
                    why,
                    "the callback secret is of no use at start-up; answering callbacks 503 secret_unreadable and \
                     reading it again after a refusal, at most every 5 s",
                )),
            ),
        };
        if let Some((error, what)) = &failed_read {
            ports.emit_metrics(&Measure::SecretRereadFailed);
            tracing::error!(%error, "{what}");
        }
        Credentials {
            checks: Reread::new(auth, read_at),
            last_read_failed: AtomicBool::new(failed_read.is_some()),
            policy: RefreshPolicy::default(),
            settings,
        }
    }

    /// Another refresh policy (the tests' shorter interval or age).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_policy(mut self, policy: RefreshPolicy) -> Credentials {
        self.policy = policy;
        self
    }

    /// The checks in force, as last read.
    pub fn current(&self) -> Arc<Auth> {
        self.checks.in_force().value
    }

    /// Whether the last read of the secret brought nothing usable: a refusal by the checks in
    /// force is then in doubt (the secret may hold a key rotated in), not final.
    pub fn in_doubt(&self) -> bool {
        self.last_read_failed.load(Ordering::Relaxed)
    }

    /// The checks to use for a request now: those in force, read again first when they are
    /// older than the policy's maximum age.
    pub async fn fresh<P: ReadSecret + Clock + EmitMetrics<Measure>>(&self, ports: &P) -> Arc<Auth> {
        self.checks.fresh(ports, self.policy.age(), || self.read(ports, Trigger::Age)).await
    }

    /// Checks to try a request again with, after `refused_by` refused it: those another
    /// request's read brought meanwhile, or those this read brings when the policy allows a
    /// read and the secret changed. `None`: the refusal stands.
    pub async fn refreshed<P: ReadSecret + Clock + EmitMetrics<Measure>>(
        &self,
        ports: &P,
        refused_by: &Arc<Auth>,
    ) -> Option<Arc<Auth>> {
        // Sooner while no usable checks were ever read (every refusal is then a 503).
        let policy = if refused_by.is_unread() {
            RefreshPolicy { interval: UNREAD_REFUSAL_REREAD_INTERVAL.min(self.policy.interval), ..self.policy }
        } else {
            self.policy
        };
        let may_read = |last_read, now| policy.allows(last_read, now);
        self.checks.refreshed(ports, refused_by, may_read, || self.read(ports, Trigger::Refusal)).await
    }

    /// Read the secret (the caller holds the right to): the new checks when usable and
    /// changed, or `None` when those in force stay.
    async fn read<P: ReadSecret + EmitMetrics<Measure>>(&self, ports: &P, trigger: Trigger) -> Option<Arc<Auth>> {
        let fresh = match read_within_timeout(ports).await {
            Ok(text) => self.settings.auth(&text).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.last_read_failed.store(fresh.is_err(), Ordering::Relaxed);
        let fresh = match fresh {
            // Unread checks are replaced by any that read (an empty secret, where unauthenticated
            // callbacks are allowed (make run's ALLOW_UNAUTHENTICATED), equals the unread checks'
            // own).
            Ok(fresh) if !self.current().is_unread() && fresh.secret() == self.current().secret() => {
                tracing::debug!(?trigger, "callback secret re-read: unchanged");
                return None;
            }
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                // Once per read, not per request: reads are rate-limited (see the module doc).
                ports.emit_metrics(&Measure::SecretRereadFailed);
                match trigger {
                    Trigger::Refusal => tracing::error!(
                        error = %e,
                        "callback secret re-read after a refusal is unusable; keeping the current one"
                    ),
                    Trigger::Age => tracing::warn!(
                        error = %e,
                        max_age_seconds = self.policy.max_age.as_secs(),
                        "callback secret re-read for its age is unusable; keeping the current one"
                    ),
                }
                return None;
            }
        };
        tracing::info!(
            ?trigger,
            hmac_keys = fresh.secret().hmac_keys.len(),
            callback_tokens = fresh.secret().callback_tokens.len(),
            "callback secret changed: checking with its new version"
        );
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp { unix_ms: 1_763_910_000_000 };

    #[test]
    fn a_read_at_most_once_per_interval() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.interval, Duration::from_secs(60));
        assert!(!policy.allows(T0, T0));
        assert!(!policy.allows(T0, T0.plus(Duration::from_millis(59_999))));
        assert!(policy.allows(T0, T0.plus(Duration::from_secs(60))));
        assert!(policy.allows(T0, T0.plus(Duration::from_secs(3600))));
        assert!(policy.allows(T0, T0.minus(Duration::from_millis(1))), "the clock stepped back");
        assert!(RefreshPolicy { interval: Duration::ZERO, ..policy }.allows(T0, T0));
    }

    #[test]
    fn checks_are_stale_after_five_minutes_or_when_the_clock_stepped_back() {
        let policy = RefreshPolicy::default();
        let is_stale = |policy: RefreshPolicy, now| policy.age().is_stale(T0, now);
        assert_eq!(policy.max_age, Duration::from_secs(300));
        assert!(!is_stale(policy, T0));
        assert!(!is_stale(policy, T0.plus(Duration::from_millis(299_999))), "fresh");
        assert!(is_stale(policy, T0.plus(Duration::from_secs(300))));
        assert!(is_stale(policy, T0.plus(Duration::from_secs(86_400))));
        assert!(is_stale(policy, T0.minus(Duration::from_millis(1))), "the clock stepped back: age unknown");
        assert!(is_stale(RefreshPolicy { max_age: Duration::ZERO, ..policy }, T0));
        // Age and refusals are separate: a minute on, a refusal may read but the checks are fresh.
        let a_minute_on = T0.plus(Duration::from_secs(60));
        assert!(policy.allows(T0, a_minute_on) && !is_stale(policy, a_minute_on));
    }
}
