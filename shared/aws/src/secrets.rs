//! AWS Secrets Manager: a function reads its secret's current value (at start-up, and again
//! when it may have been rotated); the local runner and the tests put secrets in the emulator.
//! Secret values never appear in `Debug`, `Display` or errors.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

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

/// Reads one secret, named by ARN (or name), with a client built once.
#[derive(Debug, Clone)]
pub struct SecretReader {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretReader {
    pub fn new(sdk: &aws_config::SdkConfig, secret_id: &str) -> SecretReader {
        SecretReader { client: aws_sdk_secretsmanager::Client::new(sdk), secret_id: secret_id.to_owned() }
    }

    /// The ARN (or name) it reads.
    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The secret's current text (`secretsmanager:GetSecretValue` on the secret).
    pub async fn read(&self) -> Result<SecretText, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| SecretError::Unavailable(DisplayErrorContext(e).to_string()))?;
        out.secret_string.map(SecretText).ok_or(SecretError::NotText)
    }
}

/// Create the secret `name` holding `text`, or make `text` its current value when it exists;
/// returns its ARN. For the local emulator and the tests: no function writes a secret.
pub async fn put_secret(sdk: &aws_config::SdkConfig, name: &str, text: &SecretText) -> Result<String, SecretError> {
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
            .map_err(|e| write_error(DisplayErrorContext(e).to_string()))?
            .arn
            .ok_or_else(|| write_error("the service returned no ARN".into())),
        Err(e) => Err(write_error(DisplayErrorContext(e).to_string())),
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
}
