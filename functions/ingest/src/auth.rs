//! Who may post callbacks: the docs.kie.ai HMAC headers, a secret path token, both, or (only
//! when configured on purpose) anyone, as the callback secret says. Every refusal names a
//! reason and carries no secret.

use std::borrow::Cow;
use std::time::Duration;

use lambda_http::http::HeaderMap;
use stemvault_aws::ConfigError;
use suno_callbacks::signature::{
    HmacKey, HmacVerifier, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, TokenError, TokenVerifier,
    VerifierConfigError,
};

use crate::secret::CallbackSecret;

/// Why a request was refused with 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable, e.g. `signature_mismatch`.
    pub reason: &'static str,
    /// For people; never contains a secret or a header value.
    pub message: String,
    /// What it rests on.
    pub grounds: Grounds,
}

/// What a refusal rests on: a key or token the secret holds (or not), so checks built from a
/// newer secret might not refuse it; a signature the request lacks; the request alone (a
/// malformed header); or a timestamp outside the window (long past, or ahead of the clock),
/// whose signature may still be a key's ([`Auth::signed_at_any_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grounds {
    Secret,
    Unsigned,
    Request,
    OutsideWindow,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>, grounds: Grounds) -> Refusal {
        Refusal { reason, message: message.into(), grounds }
    }

    /// Refused for its path token: none where one is required, or another.
    pub fn is_for_the_token(&self) -> bool {
        matches!(self.reason, MISSING_TOKEN | INVALID_TOKEN)
    }
}

/// The reason of a callback posted to `/callback` while a token is required.
const MISSING_TOKEN: &str = "missing_token";
/// The reason of a callback posted to a token no version of the secret in force holds.
const INVALID_TOKEN: &str = "invalid_token";

/// Why a secret with neither keys nor token is of no use (at start-up, or read again).
pub const NO_AUTHENTICATION: &str = "no callback authentication configured: put webhook_hmac_keys and/or \
     callback_token in the callback secret (CALLBACK_SECRET_ARN; the stack's WebhookHmacKeys or CallbackToken \
     parameter); only make run accepts unauthenticated callbacks (its ALLOW_UNAUTHENTICATED=true)";

/// The checks, built from one version of the callback secret. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Auth {
    secret: CallbackSecret,
    hmac: Option<HmacVerifier>,
    token: Option<TokenVerifier>,
    /// No usable version of the secret was read yet ([`Auth::unread`]).
    unread: bool,
}

impl Auth {
    /// The checks `secret` asks for; neither keys nor token only when `allow_unauthenticated`.
    pub fn new(
        secret: CallbackSecret,
        signature_tolerance: Duration,
        allow_unauthenticated: bool,
    ) -> Result<Auth, ConfigError> {
        if secret.is_unauthenticated() && !allow_unauthenticated {
            return Err(ConfigError::Unusable(NO_AUTHENTICATION));
        }
        let invalid = |e: VerifierConfigError| ConfigError::Invalid {
            name: "the callback secret's value",
            reason: e.to_string(),
        };
        let hmac = match secret.hmac_keys.as_slice() {
            [] => None,
            keys => Some(
                HmacVerifier::new(keys.iter().map(|k| HmacKey::new(k.as_bytes())))
                    .map_err(invalid)?
                    .with_tolerance(signature_tolerance),
            ),
        };
        // Every listed token is accepted: tasks submitted with the old one still call back to it.
        let token = match secret.callback_tokens.as_slice() {
            [] => None,
            tokens => Some(TokenVerifier::any_of(tokens).map_err(invalid)?),
        };
        Ok(Auth { secret, hmac, token, unread: false })
    }

    /// The checks while no usable version of the secret was read (at start-up: Secrets
    /// Manager failing, or text that cannot be used): every request is refused on the
    /// secret's grounds, which ingest answers 503 `secret_unreadable` while the secret cannot
    /// be read again, so the provider retries rather than taking a 401 as final.
    pub fn unread() -> Auth {
        Auth { secret: CallbackSecret::default(), hmac: None, token: None, unread: true }
    }

    /// The secret these checks were built from.
    pub fn secret(&self) -> &CallbackSecret {
        &self.secret
    }

    /// Whether these are the checks of no secret read yet ([`Auth::unread`]).
    pub fn is_unread(&self) -> bool {
        self.unread
    }

    /// Whether callbacks are accepted without any authentication.
    pub fn is_unauthenticated(&self) -> bool {
        !self.unread && self.hmac.is_none() && self.token.is_none()
    }

    /// Whether callbacks are posted to `/callback/<token>` (with any of the secret's tokens).
    #[cfg(test)]
    pub fn expects_path_token(&self) -> bool {
        self.token.is_some()
    }

    /// Everything that can be checked before reading the body: the path token (`path_token`,
    /// the path's segment: without a token in the secret it decides nothing, the signature
    /// does, so tasks submitted while it had one still call back to `/callback/<token>`), and the
    /// signature headers but for the MAC (there, the timestamp within the window, the
    /// signature base64): a stale or junk request is refused before its body is parsed (a
    /// stale one's task id is then read for [`Self::signed_at_any_time`]). The token's place
    /// among the secret's tokens (1 for the first), when one is asked for.
    pub fn check_before_body(
        &self,
        path_token: Option<&str>,
        headers: &HeaderMap,
        now_unix_secs: i64,
    ) -> Result<Option<usize>, Refusal> {
        if self.unread {
            return Err(Refusal::new(
                "secret_unreadable",
                "the callback secret could not be read, or used, yet",
                Grounds::Secret,
            ));
        }
        let token = match &self.token {
            Some(verifier) => Some(verifier.verify_by(path_token).map_err(token_refusal)?),
            None => None,
        };
        if let Some(verifier) = &self.hmac {
            let (timestamp, signatures) = signature_headers(headers);
            first_passing(&signatures, |signature| {
                verifier.check_headers(timestamp.as_deref(), signature, now_unix_secs)
            })
            .map_err(signature_refusal)?;
        }
        Ok(token)
    }

    /// When one of the keys signed the body's task id (the request's timestamp, Unix seconds),
    /// at any time; None when no key did: a callback refused for its timestamp
    /// ([`Grounds::OutsideWindow`]) that came from the provider (or replays one that did) names
    /// a real task, which may then be polled for.
    pub fn signed_at_any_time(&self, task_id: &str, headers: &HeaderMap) -> Option<i64> {
        let verifier = self.hmac.as_ref()?;
        let (timestamp, signatures) = signature_headers(headers);
        first_passing(&signatures, |signature| verifier.signed_at(task_id, timestamp.as_deref(), signature)).ok()
    }

    /// The signature over the body's task id: the place among the secret's keys (1 for the
    /// first) of the key that made it, when one is asked for.
    pub fn check_signature(
        &self,
        task_id: &str,
        headers: &HeaderMap,
        now_unix_secs: i64,
    ) -> Result<Option<usize>, Refusal> {
        let Some(verifier) = &self.hmac else { return Ok(None) };
        let (timestamp, signatures) = signature_headers(headers);
        first_passing(&signatures, |signature| {
            verifier.verify_by(task_id, timestamp.as_deref(), signature, now_unix_secs)
        })
        .map(Some)
        .map_err(signature_refusal)
    }
}

/// The most signatures one request may present (a sender signs with one key, two while it
/// rotates them): each costs an HMAC per key.
const MAX_SIGNATURES: usize = 4;

/// The timestamp and the signatures a request presents. A header sent more than once reaches
/// the function as API Gateway's HTTP APIs deliver it, its values joined by commas (the
/// local runner and the tests may keep them apart: both read alike): a timestamp repeated
/// with one value is that value (with several, the joined text, which is malformed); each
/// signature is tried (base64 has no comma), so a proxy's duplicate or a second signature
/// does not refuse a request one of them signs; more than [`MAX_SIGNATURES`] are one
/// malformed signature. A value that is not visible ASCII is passed on as one that cannot
/// verify (rather than as a missing header).
fn signature_headers(headers: &HeaderMap) -> (Option<Cow<'_, str>>, Vec<Option<Cow<'_, str>>>) {
    // Borrowed from the headers: the usual request (one of each) allocates nothing.
    let values = |name: &str| -> Vec<&str> {
        let each = headers.get_all(name).iter().flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','));
        each.map(str::trim).filter(|v| !v.is_empty()).collect()
    };
    let timestamp = match values(TIMESTAMP_HEADER).as_slice() {
        [] => None,
        [first, rest @ ..] if rest.iter().all(|t| t == first) => Some(Cow::Borrowed(*first)),
        several => Some(Cow::Owned(several.join(","))),
    };
    let signatures = match values(SIGNATURE_HEADER) {
        none if none.is_empty() => vec![None],
        few if few.len() <= MAX_SIGNATURES => few.into_iter().map(|s| Some(Cow::Borrowed(s))).collect(),
        many => vec![Some(Cow::Owned(many.join(",")))],
    };
    (timestamp, signatures)
}

/// The first of `check` over `signatures` that passes, else the refusal of the first
/// well-formed one (what a key might have signed: a stale one's task may be polled for, a
/// mismatch may be a key rotated in), else the first refusal: the order they came in does
/// not change the answer.
fn first_passing<T>(
    signatures: &[Option<Cow<'_, str>>],
    check: impl Fn(Option<&str>) -> Result<T, SignatureError>,
) -> Result<T, SignatureError> {
    let (mut first, mut well_formed) = (None, None);
    for signature in signatures {
        match check(signature.as_deref()) {
            Ok(passed) => return Ok(passed),
            Err(SignatureError::MalformedSignature) => {
                first.get_or_insert(SignatureError::MalformedSignature);
            }
            Err(e) => {
                well_formed.get_or_insert(e);
            }
        }
    }
    Err(well_formed.or(first).unwrap_or(SignatureError::MissingSignature))
}

fn token_refusal(e: TokenError) -> Refusal {
    let reason = match e {
        TokenError::Missing => MISSING_TOKEN,
        TokenError::Mismatch => INVALID_TOKEN,
    };
    Refusal::new(reason, e.to_string(), Grounds::Secret)
}

fn signature_refusal(e: SignatureError) -> Refusal {
    let (reason, grounds) = match e {
        SignatureError::MissingTimestamp => ("missing_timestamp", Grounds::Unsigned),
        SignatureError::MissingSignature => ("missing_signature", Grounds::Unsigned),
        SignatureError::MalformedTimestamp => ("malformed_timestamp", Grounds::Request),
        SignatureError::MalformedSignature => ("malformed_signature", Grounds::Request),
        SignatureError::TooOld { .. } => ("timestamp_too_old", Grounds::OutsideWindow),
        // A sender's clock ahead of ours: signed by a key, it is the provider's all the same.
        SignatureError::TooFarInFuture { .. } => ("timestamp_in_future", Grounds::OutsideWindow),
        SignatureError::NoKeyMatches => ("signature_mismatch", Grounds::Secret),
    };
    Refusal::new(reason, e.to_string(), grounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_TOKEN: &str = "new-0123456789abcdef";
    const OLD_TOKEN: &str = "old-0123456789abcdef";

    /// The checks built from the secret's JSON text.
    fn auth(secret: &str) -> Auth {
        let secret = CallbackSecret::parse(secret).expect("a valid secret");
        Auth::new(secret, Duration::from_secs(300), false).expect("usable checks")
    }

    /// The path token check alone (the secrets here hold no HMAC keys).
    fn check_token(auth: &Auth, token: Option<&str>) -> Result<(), &'static str> {
        auth.check_before_body(token, &HeaderMap::new(), 0).map(drop).map_err(|refusal| refusal.reason)
    }

    #[test]
    fn every_listed_token_opens_the_path_and_no_other() {
        let rotating = auth(&format!(r#"{{"callback_token": ["{NEW_TOKEN}", "{OLD_TOKEN}"]}}"#));
        assert!(rotating.expects_path_token() && !rotating.is_unauthenticated());
        assert_eq!(check_token(&rotating, Some(NEW_TOKEN)), Ok(()));
        assert_eq!(check_token(&rotating, Some(OLD_TOKEN)), Ok(()), "the old token while it is listed");
        let place = |token| rotating.check_before_body(Some(token), &HeaderMap::new(), 0).map_err(|r| r.reason);
        assert_eq!((place(NEW_TOKEN), place(OLD_TOKEN)), (Ok(Some(1)), Ok(Some(2))), "which one: its place");
        assert_eq!(check_token(&rotating, Some("third-0123456789abcdef")), Err("invalid_token"));
        assert_eq!(check_token(&rotating, Some(&OLD_TOKEN[1..])), Err("invalid_token"));
        assert_eq!(check_token(&rotating, None), Err("missing_token"));
    }

    #[test]
    fn one_token_as_a_string_works_as_before() {
        let single = auth(&format!(r#"{{"callback_token": "{NEW_TOKEN}"}}"#));
        assert!(single.expects_path_token());
        assert_eq!(check_token(&single, Some(NEW_TOKEN)), Ok(()));
        assert_eq!(check_token(&single, Some(OLD_TOKEN)), Err("invalid_token"));
        assert_eq!(check_token(&single, None), Err("missing_token"));
    }

    #[test]
    fn debug_shows_no_token() {
        let rotating = auth(&format!(r#"{{"callback_token": ["{NEW_TOKEN}", "{OLD_TOKEN}"]}}"#));
        let debug = format!("{rotating:?} {rotating:#?}");
        assert!(!debug.contains(NEW_TOKEN) && !debug.contains(OLD_TOKEN), "{debug}");
    }
}
