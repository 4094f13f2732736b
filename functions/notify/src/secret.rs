//! The signing secret: a Standard Webhooks secret, `whsec_` followed by the base64 of 24 to
//! 64 random bytes (the prefix may be left out: a secret the template generates is 32 letters
//! and digits, which is the base64 of 24 bytes). It is the text of the Secrets Manager secret
//! `NOTIFY_SECRET_ARN` names, read once at start-up. Its value never appears in `Debug`,
//! `Display` or errors.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The prefix Standard Webhooks gives secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest and longest keys Standard Webhooks allows, in bytes.
pub const MIN_KEY_BYTES: usize = 24;
pub const MAX_KEY_BYTES: usize = 64;

/// Why a secret's text cannot be used. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("the notify secret is empty")]
    Empty,
    #[error("the notify secret is not base64 (after its optional whsec_ prefix)")]
    NotBase64,
    #[error("the notify secret is {0} bytes long; Standard Webhooks secrets are 24 to 64 bytes")]
    Length(usize),
}

/// Signs webhooks with the secret (the `standardwebhooks` crate's `Webhook::sign`).
pub struct Signer {
    webhook: standardwebhooks::Webhook,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// From the secret's text: `whsec_<base64>` or `<base64>`, surrounding whitespace ignored.
    pub fn parse(text: &str) -> Result<Signer, SecretProblem> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err(SecretProblem::Empty);
        }
        let key = BASE64.decode(encoded).map_err(|_| SecretProblem::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretProblem::Length(key.len()));
        }
        let webhook = standardwebhooks::Webhook::from_bytes(key).map_err(|_| SecretProblem::NotBase64)?;
        Ok(Signer { webhook })
    }

    /// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // Fails only for a body that is not UTF-8, which a &str cannot be.
        self.webhook.sign(id, timestamp, body.as_bytes()).expect("a UTF-8 body signs")
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
    fn unusable_secrets_are_refused_without_showing_them() {
        assert_eq!(Signer::parse("  ").unwrap_err(), SecretProblem::Empty);
        assert_eq!(Signer::parse("whsec_").unwrap_err(), SecretProblem::Empty);
        assert_eq!(Signer::parse("whsec_not base64!").unwrap_err(), SecretProblem::NotBase64);
        assert_eq!(Signer::parse("whsec_c2hvcnQ=").unwrap_err(), SecretProblem::Length(5));
        assert_eq!(Signer::parse(&format_secret(&[7; 65])).unwrap_err(), SecretProblem::Length(65));
        let secret = format_secret(&[7; 32]);
        assert!(secret.starts_with("whsec_"));
        let signer = Signer::parse(&secret).unwrap();
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
        let err = Signer::parse("whsec_c2VjcmV0LXZhbHVl").unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}
