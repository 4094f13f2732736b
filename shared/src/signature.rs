//! Callback authentication: the docs.kie.ai HMAC scheme and a shared token.
//!
//! # HMAC (docs.kie.ai "Webhook Security")
//!
//! Every callback carries `X-Webhook-Timestamp` (Unix seconds, as sent) and
//! `X-Webhook-Signature` = standard Base64 (with padding) of
//! `HMAC-SHA256(webhookHmacKey, task_id + "." + timestamp)`. Only the task id and the
//! timestamp are signed, not the body, so a captured signature is valid for any body with
//! that task id until the timestamp leaves the tolerance window: combine with idempotent
//! processing. The documentation states no window; [`DEFAULT_TOLERANCE`] (300 s, both
//! directions) is our choice.
//!
//! [`HmacVerifier`] holds one or more keys (rotation: old and new key side by side) and tries
//! every one of them in constant time. Nothing in this module prints a key or a token:
//! `Debug` output is redacted and error messages carry no secret.
//!
//! ```
//! use std::time::Duration;
//! use suno_callbacks::signature::{HmacKey, HmacVerifier, SignatureError, sign};
//!
//! let verifier = HmacVerifier::new(vec![HmacKey::new("new-key"), HmacKey::new("old-key")])
//!     .unwrap()
//!     .with_tolerance(Duration::from_secs(300));
//!
//! // What the sender computes (also handy for `curl` examples and tests).
//! let signature = sign(b"old-key", "3e63b4cc88d52611159371f6af5571e7", 1_700_000_000);
//! let now = 1_700_000_100;
//! assert_eq!(
//!     verifier.verify("3e63b4cc88d52611159371f6af5571e7", Some("1700000000"), Some(&signature), now),
//!     Ok(())
//! );
//! assert_eq!(
//!     verifier.verify("another-task", Some("1700000000"), Some(&signature), now),
//!     Err(SignatureError::NoKeyMatches)
//! );
//! assert!(matches!(
//!     verifier.verify("3e63b4cc88d52611159371f6af5571e7", Some("1700000000"), Some(&signature), now + 400),
//!     Err(SignatureError::TooOld { .. })
//! ));
//! ```
//!
//! # Shared token
//!
//! For senders that cannot sign (docs.sunoapi.org documents no signing), [`TokenVerifier`]
//! compares a secret token carried by the callback URL, in constant time. It too may hold
//! several tokens: a task's callback URL is fixed when the task is submitted, so the old token
//! must stay accepted beside the new one until the last task submitted with it has called back.
//!
//! ```
//! use suno_callbacks::signature::{TokenError, TokenVerifier};
//!
//! let verifier = TokenVerifier::any_of(["new-long-random-token", "old-long-random-token"]).unwrap();
//! assert_eq!(verifier.verify(Some("old-long-random-token")), Ok(()));
//! assert_eq!(verifier.verify(Some("a-guessed-token")), Err(TokenError::Mismatch));
//! ```

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Header carrying the Unix timestamp (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
/// Header carrying the Base64 HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";
/// How far a timestamp may be from "now", in either direction, unless configured otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Longest timestamp header accepted: 15 digits is past the year 30 million, and cannot
/// overflow an i64.
const MAX_TIMESTAMP_DIGITS: usize = 15;
/// Longest signature header accepted before decoding (Base64 of 32 bytes is 44 characters).
const MAX_SIGNATURE_CHARS: usize = 64;
const DIGEST_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC key (the docs.kie.ai `webhookHmacKey`, used as its UTF-8 bytes). Debug prints
/// `HmacKey(<redacted>)`.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    pub fn new(key: impl Into<Vec<u8>>) -> HmacKey {
        HmacKey(key.into())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// Why a verifier could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierConfigError {
    #[error("no HMAC key given")]
    NoKeys,
    #[error("HMAC key number {position} is empty")]
    EmptyKey { position: usize },
    #[error("the callback token is empty")]
    EmptyToken,
    #[error("no callback token given")]
    NoTokens,
    #[error("callback token number {position} is empty")]
    EmptyTokenAt { position: usize },
}

/// Why a signed callback was refused. No variant carries a secret or a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Webhook-Timestamp header")]
    MissingTimestamp,
    #[error("missing X-Webhook-Signature header")]
    MissingSignature,
    #[error("X-Webhook-Timestamp is not Unix seconds (1 to 15 ASCII digits)")]
    MalformedTimestamp,
    #[error("X-Webhook-Signature is not standard Base64 of a 32-byte HMAC-SHA256 digest")]
    MalformedSignature,
    #[error("signature timestamp is {age_secs} s old; at most {tolerance_secs} s is accepted")]
    TooOld { age_secs: u64, tolerance_secs: u64 },
    #[error("signature timestamp is {ahead_secs} s in the future; at most {tolerance_secs} s is accepted")]
    TooFarInFuture { ahead_secs: u64, tolerance_secs: u64 },
    #[error("signature does not match any configured key")]
    NoKeyMatches,
}

/// Verifies docs.kie.ai webhook signatures against one or more keys.
#[derive(Clone)]
pub struct HmacVerifier {
    keys: Vec<HmacKey>,
    tolerance: Duration,
}

impl std::fmt::Debug for HmacVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerifier")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl HmacVerifier {
    /// A verifier accepting a signature made with any of `keys` (at least one, none empty),
    /// with the [`DEFAULT_TOLERANCE`].
    pub fn new(keys: impl IntoIterator<Item = HmacKey>) -> Result<HmacVerifier, VerifierConfigError> {
        let keys: Vec<HmacKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(VerifierConfigError::NoKeys);
        }
        if let Some(i) = keys.iter().position(|k| k.0.is_empty()) {
            return Err(VerifierConfigError::EmptyKey { position: i + 1 });
        }
        Ok(HmacVerifier { keys, tolerance: DEFAULT_TOLERANCE })
    }

    /// How far the timestamp may be from `now`, in the past and in the future (inclusive).
    pub fn with_tolerance(mut self, tolerance: Duration) -> HmacVerifier {
        self.tolerance = tolerance;
        self
    }

    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Check a callback's headers. `task_id` is the id from the body, `timestamp` and
    /// `signature` the header values as received (`None` when absent), `now_unix_secs` the
    /// receiver's clock. The timestamp is signed as sent, so it must be plain digits.
    pub fn verify(
        &self,
        task_id: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<(), SignatureError> {
        self.verify_by(task_id, timestamp, signature, now_unix_secs).map(drop)
    }

    /// [`Self::verify`], saying which key signed it: its place among the keys (1 for the
    /// first), so a receiver can tell when an old key stops being used.
    pub fn verify_by(
        &self,
        task_id: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<usize, SignatureError> {
        let (timestamp, presented) = self.read_headers(timestamp, signature, now_unix_secs)?;
        self.verify_mac(task_id, timestamp, &presented)
    }

    /// [`Self::verify`] whatever the timestamp's age: whether one of the keys signed this task
    /// id at that time, and then the time it names (Unix seconds). Only for what a sender's id
    /// alone may decide once the window is over (the body is not signed, and a captured
    /// signature stays valid for its task id), such as polling the provider for the task.
    pub fn signed_at(
        &self,
        task_id: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
    ) -> Result<i64, SignatureError> {
        let (timestamp, presented, sent_at) = parse_headers(timestamp, signature)?;
        self.verify_mac(task_id, timestamp, &presented).map(|_| sent_at)
    }

    /// The place (1 for the first) of the first key that made `presented`.
    fn verify_mac(&self, task_id: &str, timestamp: &str, presented: &[u8; 32]) -> Result<usize, SignatureError> {
        let message = signed_message(task_id, timestamp);
        let macs = self.keys.iter().map(|key| {
            let mut mac = key.mac();
            mac.update(&message);
            mac.finalize().into_bytes()
        });
        first_equal(macs.map(|mac| mac.as_slice().ct_eq(presented))).ok_or(SignatureError::NoKeyMatches)
    }

    /// Everything [`Self::verify`] checks but the MAC, which needs the body's task id: both
    /// headers there, the timestamp plain digits within the window, the signature base64. A
    /// receiver can refuse stale or malformed requests before reading their bodies.
    pub fn check_headers(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<(), SignatureError> {
        self.read_headers(timestamp, signature, now_unix_secs).map(drop)
    }

    /// The timestamp as sent and the decoded signature, once checked as [`Self::check_headers`]
    /// says.
    fn read_headers<'t>(
        &self,
        timestamp: Option<&'t str>,
        signature: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<(&'t str, [u8; 32]), SignatureError> {
        let (timestamp, presented, sent_at) = parse_headers(timestamp, signature)?;
        self.check_window(sent_at, now_unix_secs)?;
        Ok((timestamp, presented))
    }

    fn check_window(&self, sent_at: i64, now: i64) -> Result<(), SignatureError> {
        let tolerance_secs = self.tolerance.as_secs();
        // i128: no overflow whatever `now` is.
        let age = i128::from(now) - i128::from(sent_at);
        let magnitude = u64::try_from(age.unsigned_abs()).unwrap_or(u64::MAX);
        if magnitude <= tolerance_secs {
            Ok(())
        } else if age > 0 {
            Err(SignatureError::TooOld { age_secs: magnitude, tolerance_secs })
        } else {
            Err(SignatureError::TooFarInFuture { ahead_secs: magnitude, tolerance_secs })
        }
    }
}

/// Both headers there, the timestamp plain digits, the signature base64: the timestamp as
/// sent, the decoded signature and the time it names.
fn parse_headers<'t>(
    timestamp: Option<&'t str>,
    signature: Option<&str>,
) -> Result<(&'t str, [u8; 32], i64), SignatureError> {
    let timestamp = timestamp.filter(|t| !t.is_empty()).ok_or(SignatureError::MissingTimestamp)?;
    let signature = signature.filter(|s| !s.is_empty()).ok_or(SignatureError::MissingSignature)?;
    let sent_at = parse_timestamp(timestamp)?;
    let presented = decode_signature(signature)?;
    Ok((timestamp, presented, sent_at))
}

/// The signature a sender computes: Base64(HMAC-SHA256(key, `task_id.timestamp`)).
pub fn sign(key: &[u8], task_id: &str, timestamp: i64) -> String {
    let mut mac = HmacKey::new(key).mac();
    mac.update(&signed_message(task_id, &timestamp.to_string()));
    STANDARD.encode(mac.finalize().into_bytes())
}

fn signed_message(task_id: &str, timestamp: &str) -> Vec<u8> {
    [task_id.as_bytes(), b".", timestamp.as_bytes()].concat()
}

fn parse_timestamp(raw: &str) -> Result<i64, SignatureError> {
    let digits_only = !raw.is_empty() && raw.len() <= MAX_TIMESTAMP_DIGITS && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits_only {
        return Err(SignatureError::MalformedTimestamp);
    }
    raw.parse().map_err(|_| SignatureError::MalformedTimestamp)
}

fn decode_signature(raw: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    if raw.len() > MAX_SIGNATURE_CHARS {
        return Err(SignatureError::MalformedSignature);
    }
    let bytes = STANDARD.decode(raw).map_err(|_| SignatureError::MalformedSignature)?;
    bytes.try_into().map_err(|_| SignatureError::MalformedSignature)
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no callback token presented")]
    Missing,
    #[error("callback token does not match")]
    Mismatch,
}

/// Compares a presented shared token with the configured ones (several while a token is
/// rotated). Debug shows how many, never them.
#[derive(Clone)]
pub struct TokenVerifier {
    /// SHA-256 of each token: comparing fixed-size digests keeps the comparison constant
    /// time whatever the presented length, and the tokens themselves are not kept.
    digests: Vec<[u8; DIGEST_LEN]>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("tokens", &format_args!("<{} redacted>", self.digests.len())).finish()
    }
}

impl TokenVerifier {
    /// A verifier accepting `token` (not empty) alone.
    pub fn new(token: &str) -> Result<TokenVerifier, VerifierConfigError> {
        if token.is_empty() {
            return Err(VerifierConfigError::EmptyToken);
        }
        Ok(TokenVerifier { digests: vec![token_digest(token)] })
    }

    /// A verifier accepting any of `tokens` (at least one, none empty): the new token beside
    /// the old while tasks submitted with the old one may still call back.
    pub fn any_of<I>(tokens: I) -> Result<TokenVerifier, VerifierConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut digests = Vec::new();
        for (i, token) in tokens.into_iter().enumerate() {
            let token = token.as_ref();
            if token.is_empty() {
                return Err(VerifierConfigError::EmptyTokenAt { position: i + 1 });
            }
            digests.push(token_digest(token));
        }
        if digests.is_empty() {
            return Err(VerifierConfigError::NoTokens);
        }
        Ok(TokenVerifier { digests })
    }

    /// `presented` is the token from the request (`None` or empty when absent).
    pub fn verify(&self, presented: Option<&str>) -> Result<(), TokenError> {
        self.verify_by(presented).map(drop)
    }

    /// [`Self::verify`], saying which token it is: its place among the tokens (1 for the
    /// first), so a receiver can tell when an old token stops being used.
    pub fn verify_by(&self, presented: Option<&str>) -> Result<usize, TokenError> {
        let presented = presented.filter(|p| !p.is_empty()).ok_or(TokenError::Missing)?;
        let digest = token_digest(presented);
        first_equal(self.digests.iter().map(|configured| digest.ct_eq(configured))).ok_or(TokenError::Mismatch)
    }
}

/// The place (1 for the first) of the first of `equal` that holds. Every one is looked at,
/// whatever held before, and the place is chosen without a branch, so timing says nothing
/// about which held (nor whether one did, until the answer).
fn first_equal(equal: impl Iterator<Item = Choice>) -> Option<usize> {
    let (mut matched, mut place) = (Choice::from(0), 0u32);
    for (i, eq) in equal.enumerate() {
        // At most 2^32 keys or tokens: a secret holds a few.
        place.conditional_assign(&u32::try_from(i + 1).unwrap_or(u32::MAX), eq & !matched);
        matched |= eq;
    }
    bool::from(matched).then_some(place as usize)
}

fn token_digest(token: &str) -> [u8; DIGEST_LEN] {
    Sha256::digest(token.as_bytes()).into()
}
