//! The signing secret: a Standard Webhooks secret, `whsec_` followed by the base64 of 24 to
//! 64 random bytes (the prefix may be left out: a secret the template generates is 32 letters
//! and digits, which is the base64 of 24 bytes); or, while rotating, up to [`MAX_SECRETS`] of
//! them separated by spaces, each signing every webhook (`webhook-signature` then lists one
//! `v1,` signature per secret, space-separated, as Standard Webhooks allows: a receiver
//! verifies with whichever secret it has). It is the text of the Secrets Manager secret
//! `NOTIFY_SECRET_ARN` names, read at start-up and again once the signer in force is
//! [`MAX_AGE`] old ([`Signers`]), so a rotated secret signs within that on every warm instance
//! (one unusable at start-up: read again once a minute, webhooks waiting meanwhile).
//! Its value never appears in `Debug`, `Display`, errors or logs.

use std::sync::Arc;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
pub use stemvault_aws::secrets::{AgePolicy, MAX_AGE, ReadSecret};
use stemvault_aws::secrets::{Reread, read_within_timeout};
use stemvault_vault::Clock;

use crate::domain::{EmitMetrics, Measure};

/// The prefix Standard Webhooks gives secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest and longest keys Standard Webhooks allows, in bytes.
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;
/// The most secrets one text may hold (a rotation needs two).
pub const MAX_SECRETS: usize = 3;

/// Why a secret's text cannot be used. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("the notify secret is empty")]
    Empty,
    #[error("the notify secret is not base64 (after its optional whsec_ prefix)")]
    NotBase64,
    #[error("the notify secret is {0} bytes long; Standard Webhooks secrets are 24 to 64 bytes")]
    Length(usize),
    #[error("the notify secret holds {0} secrets; at most {MAX_SECRETS} (space-separated) sign at once")]
    TooMany(usize),
}

/// Signs webhooks with the secret, or each of the secrets (the `standardwebhooks` crate's
/// `Webhook::sign`).
pub struct Signer {
    webhooks: Vec<standardwebhooks::Webhook>,
    /// The keys, only to tell whether a re-read changed them.
    keys: Vec<Vec<u8>>,
}

impl PartialEq for Signer {
    fn eq(&self, other: &Signer) -> bool {
        self.keys == other.keys
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// From the secret's text: `whsec_<base64>` or `<base64>`, or several separated by
    /// whitespace; surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<Signer, SecretProblem> {
        let secrets: Vec<&str> = text.split_whitespace().collect();
        if secrets.len() > MAX_SECRETS {
            return Err(SecretProblem::TooMany(secrets.len()));
        }
        let keys = secrets.into_iter().map(decode_key).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(SecretProblem::Empty);
        }
        let webhooks = keys
            .iter()
            .map(|key| standardwebhooks::Webhook::from_bytes(key.clone()).map_err(|_| SecretProblem::NotBase64))
            .collect::<Result<_, _>>()?;
        Ok(Signer { webhooks, keys })
    }

    /// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one
    /// per secret, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let signatures: Vec<String> = self
            .webhooks
            .iter()
            // Fails only for a body that is not UTF-8, which a &str cannot be.
            .map(|webhook| webhook.sign(id, timestamp, body.as_bytes()).expect("a UTF-8 body signs"))
            .collect();
        signatures.join(" ")
    }
}

/// Standard base64 with or without its `=` padding: a secret copied without it is the same
/// key. (Not every receiver is as lenient: the Standard Webhooks libraries for Go and Rust
/// refuse it unpadded, Python's and JavaScript's pad it; README says to give receivers the
/// padded form.)
const ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One secret's key: `whsec_<base64>` or `<base64>`, of 24 to 64 bytes.
fn decode_key(secret: &str) -> Result<Vec<u8>, SecretProblem> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    if encoded.is_empty() {
        return Err(SecretProblem::Empty);
    }
    let key = ANY_PADDING.decode(encoded).map_err(|_| SecretProblem::NotBase64)?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        return Err(SecretProblem::Length(key.len()));
    }
    Ok(key)
}

/// The signer in force, shared by every message of the instance, and the secret read again
/// for it once it is [`AgePolicy::max_age`] old: one read at a time, concurrent messages
/// waiting for it and signing with its result. A secret that cannot be read or is no Standard
/// Webhooks secret keeps the signer in force (logged, never the secret) until the next age.
#[derive(Debug)]
pub struct Signers {
    /// `None` while the secret has not been read, or was unusable, since start-up.
    signer: Reread<Option<Signer>>,
}

impl Signers {
    /// Read the secret (at start-up). One that cannot be read or used starts the instance
    /// with no signer (logged as an error and counted as a failed read):
    /// it is read again at most once per
    /// [`UNREAD_REREAD_INTERVAL`](stemvault_aws::secrets::UNREAD_REREAD_INTERVAL) until it brings one, and
    /// webhooks wait meanwhile. Exiting instead would cost every message of the instance's
    /// batch a receive and the queue's whole visibility timeout, on each new instance.
    pub async fn load<R: ReadSecret, P: Clock + EmitMetrics<Measure>>(reader: &R, ports: &P) -> Signers {
        let read_at = ports.now();
        match read_signer(reader).await {
            Ok(signer) => Signers::new(signer, read_at),
            Err(e) => {
                ports.emit_metrics(&Measure::SecretRereadFailed);
                tracing::error!(error = %e, "the notify secret cannot be used; webhooks wait until it can");
                Signers { signer: Reread::new(None, read_at) }
            }
        }
    }

    /// `signer`, made from the secret read at `read_at`.
    pub fn new(signer: Signer, read_at: stemvault_vault::Timestamp) -> Signers {
        Signers { signer: Reread::new(Some(signer), read_at) }
    }

    fn unread(&self) -> bool {
        self.signer.in_force().value.is_none()
    }

    /// The signer to sign with now: the one in force, after reading the secret again when
    /// `policy` finds it stale ([`AgePolicy::default`]: [`MAX_AGE`] old). A read that brings
    /// nothing usable is counted on `ports` ([`Measure::SecretRereadFailed`]). `None` while
    /// no read has brought a usable secret.
    pub async fn fresh<R, P>(&self, reader: &R, ports: &P, policy: AgePolicy) -> Arc<Option<Signer>>
    where
        R: ReadSecret,
        P: Clock + EmitMetrics<Measure>,
    {
        let age = policy.until_read(self.unread());
        self.signer.fresh(ports, age, || self.read(reader, ports, age)).await
    }

    /// Read the secret (the caller holds the right to): a new signer when it is usable and
    /// changed, `None` to keep the one in force.
    async fn read<R: ReadSecret, M: EmitMetrics<Measure>>(
        &self,
        reader: &R,
        metrics: &M,
        policy: AgePolicy,
    ) -> Option<Arc<Option<Signer>>> {
        let fresh = read_signer(reader).await;
        match fresh {
            Ok(fresh) if Option::as_ref(&self.signer.in_force().value) == Some(&fresh) => {
                tracing::debug!("notify secret re-read: unchanged");
                None
            }
            Ok(fresh) => {
                match self.unread() {
                    true => tracing::info!("notify secret read: webhooks resume"),
                    false => tracing::info!("notify secret changed: signing with its new version"),
                }
                Some(Arc::new(Some(fresh)))
            }
            Err(e) => {
                metrics.emit_metrics(&Measure::SecretRereadFailed);
                match self.unread() {
                    true => tracing::warn!(
                        error = %e,
                        "notify secret re-read is unusable; webhooks still wait for a usable one"
                    ),
                    false => tracing::warn!(
                        error = %e,
                        max_age_seconds = policy.max_age.as_secs(),
                        "notify secret re-read for its age is unusable; signing with the current one"
                    ),
                }
                None
            }
        }
    }
}

/// A signer from the secret's text now (within [`stemvault_aws::secrets::REREAD_TIMEOUT`]), or
/// why there is none (never the secret).
async fn read_signer<R: ReadSecret>(reader: &R) -> Result<Signer, String> {
    match read_within_timeout(reader).await {
        Ok(text) => Signer::parse(text.expose()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A new random secret, `whsec_` and the base64 of `key` (at least 24 random bytes; the local
/// runner passes them, this crate has no random source of its own).
pub fn format_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks test vector (the crate's and the other libraries').
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let signer = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_prefix_is_optional_and_whitespace_ignored() {
        let with = Signer::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let without = Signer::parse(" MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(with.sign("a", 1, "{}"), without.sign("a", 1, "{}"));
        // What the template's generated secret looks like: 32 letters and digits.
        assert!(Signer::parse("abcdefghijklmnopqrstuvwxyzABCDEF").is_ok());
    }

    #[test]
    fn several_secrets_each_sign_for_a_rotation() {
        let (old, new) = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", format_secret(&[9; 32]));
        let both = Signer::parse(&format!(" {new}\n{old} ")).unwrap();
        let (by_old, by_new) = (Signer::parse(old).unwrap(), Signer::parse(&new).unwrap());
        let sign = |s: &Signer| s.sign("msg_1", 1614265330, "{}");
        assert_eq!(sign(&both), format!("{} {}", sign(&by_new), sign(&by_old)));
        assert_ne!(both, by_old, "a re-read that adds a secret is a change");
        let four = [old; 4].join(" ");
        assert_eq!(Signer::parse(&four).unwrap_err(), SecretProblem::TooMany(4));
        assert_eq!(Signer::parse(&format!("{old} whsec_c2hvcnQ=")).unwrap_err(), SecretProblem::Length(5));
    }

    #[test]
    fn unusable_secrets_are_refused_without_showing_them() {
        assert_eq!(Signer::parse("  ").unwrap_err(), SecretProblem::Empty);
        assert_eq!(Signer::parse("whsec_").unwrap_err(), SecretProblem::Empty);
        assert_eq!(Signer::parse("whsec_not base64!").unwrap_err(), SecretProblem::NotBase64);
        assert_eq!(Signer::parse("whsec_c2hvcnQ=").unwrap_err(), SecretProblem::Length(5));
        assert_eq!(Signer::parse(&format_secret(&[7; 65])).unwrap_err(), SecretProblem::Length(65));
        let secret = format_secret(&[7; 32]);
        assert!(secret.starts_with("whsec_"));
        let unpadded = secret.trim_end_matches('=');
        assert_ne!(unpadded, secret, "32 bytes encode with padding");
        assert_eq!(
            Signer::parse(unpadded).unwrap(),
            Signer::parse(&secret).unwrap(),
            "the same key without its padding"
        );
        let signer = Signer::parse(&secret).unwrap();
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
        let err = Signer::parse("whsec_c2VjcmV0LXZhbHVl").unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}
