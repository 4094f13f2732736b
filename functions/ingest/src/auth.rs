//! Who may post callbacks: the docs.kie.ai HMAC headers, a secret path token, both, or (only
//! when configured on purpose) anyone, as the callback secret says. Every refusal names a
//! reason and carries no secret.

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
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// Why the function refuses to start (or to take a new secret) with neither keys nor token.
pub const NO_AUTHENTICATION: &str = "no callback authentication configured: put webhook_hmac_keys and/or \
     callback_token in the callback secret (CALLBACK_SECRET_ARN), or set ALLOW_UNAUTHENTICATED=true to accept \
     unauthenticated callbacks on purpose";

/// The checks, built from one version of the callback secret. Its `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Auth {
    secret: CallbackSecret,
    hmac: Option<HmacVerifier>,
    token: Option<TokenVerifier>,
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
        let unusable =
            |e: VerifierConfigError| ConfigError::Invalid { name: "CALLBACK_SECRET_ARN", reason: e.to_string() };
        let hmac = match secret.hmac_keys.as_slice() {
            [] => None,
            keys => Some(
                HmacVerifier::new(keys.iter().map(|k| HmacKey::new(k.as_bytes())))
                    .map_err(unusable)?
                    .with_tolerance(signature_tolerance),
            ),
        };
        let token = secret.callback_token.as_deref().map(TokenVerifier::new).transpose().map_err(unusable)?;
        Ok(Auth { secret, hmac, token })
    }

    /// The secret these checks were built from.
    pub fn secret(&self) -> &CallbackSecret {
        &self.secret
    }

    /// Whether callbacks are accepted without any authentication.
    pub fn is_unauthenticated(&self) -> bool {
        self.hmac.is_none() && self.token.is_none()
    }

    /// Whether callbacks are posted to `/callback/<token>`.
    pub fn expects_path_token(&self) -> bool {
        self.token.is_some()
    }

    /// Everything that can be checked before reading the body: the path token, and the
    /// signature headers but for the MAC (there, the timestamp within the window, the
    /// signature base64): a stale or junk request is refused before its body is parsed.
    pub fn check_before_body(
        &self,
        path_token: Option<&str>,
        headers: &HeaderMap,
        now_unix_secs: i64,
    ) -> Result<(), Refusal> {
        if let Some(verifier) = &self.token {
            verifier.verify(path_token).map_err(token_refusal)?;
        }
        if let Some(verifier) = &self.hmac {
            verifier
                .check_headers(header(headers, TIMESTAMP_HEADER), header(headers, SIGNATURE_HEADER), now_unix_secs)
                .map_err(signature_refusal)?;
        }
        Ok(())
    }

    /// The signature over the body's task id.
    pub fn check_signature(&self, task_id: &str, headers: &HeaderMap, now_unix_secs: i64) -> Result<(), Refusal> {
        let Some(verifier) = &self.hmac else { return Ok(()) };
        verifier
            .verify(task_id, header(headers, TIMESTAMP_HEADER), header(headers, SIGNATURE_HEADER), now_unix_secs)
            .map_err(signature_refusal)
    }
}

/// A header's value; a value that is not visible ASCII is passed on as one that cannot
/// verify (rather than as a missing header).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}")).filter(|v| !v.is_empty())
}

fn token_refusal(e: TokenError) -> Refusal {
    let reason = match e {
        TokenError::Missing => "missing_token",
        TokenError::Mismatch => "invalid_token",
    };
    Refusal::new(reason, e.to_string())
}

fn signature_refusal(e: SignatureError) -> Refusal {
    let reason = match e {
        SignatureError::MissingTimestamp => "missing_timestamp",
        SignatureError::MissingSignature => "missing_signature",
        SignatureError::MalformedTimestamp => "malformed_timestamp",
        SignatureError::MalformedSignature => "malformed_signature",
        SignatureError::TooOld { .. } => "timestamp_too_old",
        SignatureError::TooFarInFuture { .. } => "timestamp_in_future",
        SignatureError::NoKeyMatches => "signature_mismatch",
    };
    Refusal::new(reason, e.to_string())
}
