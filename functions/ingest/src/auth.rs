//! Who may post callbacks: the docs.kie.ai HMAC headers, a secret path token, both, or (only
//! when configured on purpose) anyone. Every refusal names a reason and carries no secret.

use lambda_http::http::HeaderMap;
use suno_callbacks::signature::{
    HmacKey, HmacVerifier, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, TokenError, TokenVerifier,
};

use crate::Config;

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

/// The configured checks.
#[derive(Debug, Clone)]
pub struct Auth {
    hmac: Option<HmacVerifier>,
    token: Option<TokenVerifier>,
    /// The configuration could not be turned into verifiers (or asked for no authentication
    /// without allowing it): refuse everything rather than run open.
    refuse_all: bool,
}

impl Auth {
    pub fn from_config(config: &Config) -> Auth {
        let mut refuse_all = false;
        let hmac = match config.hmac_keys.as_slice() {
            [] => None,
            keys => match HmacVerifier::new(keys.iter().map(|k| HmacKey::new(k.as_bytes()))) {
                Ok(verifier) => Some(verifier.with_tolerance(config.signature_tolerance)),
                Err(e) => {
                    tracing::error!(error = %e, "WEBHOOK_HMAC_KEYS unusable; refusing every callback");
                    refuse_all = true;
                    None
                }
            },
        };
        let token = match config.callback_token.as_deref() {
            None => None,
            Some(token) => match TokenVerifier::new(token) {
                Ok(verifier) => Some(verifier),
                Err(e) => {
                    tracing::error!(error = %e, "CALLBACK_TOKEN unusable; refusing every callback");
                    refuse_all = true;
                    None
                }
            },
        };
        if hmac.is_none() && token.is_none() && !config.allow_unauthenticated {
            refuse_all = true;
        }
        Auth { hmac, token, refuse_all }
    }

    /// Whether callbacks are posted to `/callback/<token>`.
    pub fn expects_path_token(&self) -> bool {
        self.token.is_some()
    }

    /// Everything that can be checked before reading the body: the path token, and that
    /// both signature headers are there.
    pub fn check_before_body(&self, path_token: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.refuse_all {
            return Err(Refusal::new("misconfigured", "callback authentication is misconfigured"));
        }
        if let Some(verifier) = &self.token {
            verifier.verify(path_token).map_err(token_refusal)?;
        }
        if self.hmac.is_some() {
            if header(headers, TIMESTAMP_HEADER).is_none() {
                return Err(signature_refusal(SignatureError::MissingTimestamp));
            }
            if header(headers, SIGNATURE_HEADER).is_none() {
                return Err(signature_refusal(SignatureError::MissingSignature));
            }
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
