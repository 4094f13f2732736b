//! The ingest function's settings, read once at start-up from the environment.

use std::time::Duration;

/// Largest accepted callback body unless `MAX_BODY_BYTES` says otherwise (1 MiB; the largest
/// documented bodies, MIDI note lists, are tens of kilobytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// API Gateway and Lambda refuse bodies over 6 MB anyway.
const MAX_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
const DEFAULT_SIGNATURE_TOLERANCE_SECONDS: u64 = 300;
/// A day: past that, a captured signature stays replayable for too long.
const MAX_SIGNATURE_TOLERANCE_SECONDS: u64 = 86_400;

#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    /// `WEBHOOK_HMAC_KEYS`, comma-separated: every key is accepted (rotation). Secret.
    pub hmac_keys: Vec<String>,
    /// `CALLBACK_TOKEN`: callbacks must be posted to `/callback/<token>`. Secret.
    pub callback_token: Option<String>,
    /// Neither keys nor token, and `ALLOW_UNAUTHENTICATED=true` said that is intended.
    pub allow_unauthenticated: bool,
    pub max_body_bytes: usize,
    pub signature_tolerance: Duration,
    /// `LOG_LEVEL`, as read by `stemvault_aws::logging::init` (kept here so every variable
    /// the function reads is named in this file).
    pub log_level: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("table_name", &self.table_name)
            .field("bucket_name", &self.bucket_name)
            .field("queue_url", &self.queue_url)
            .field("hmac_keys", &format_args!("<{} redacted>", self.hmac_keys.len()))
            .field("callback_token", &self.callback_token.as_ref().map(|_| "<redacted>"))
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("signature_tolerance", &self.signature_tolerance)
            .field("log_level", &self.log_level)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    /// `value` is never a secret: secrets are reported without it.
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "no callback authentication configured: set WEBHOOK_HMAC_KEYS and/or CALLBACK_TOKEN, \
         or ALLOW_UNAUTHENTICATED=true to accept unauthenticated callbacks on purpose"
    )]
    NoAuthentication,
}

impl Config {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Deployment templates pass unset parameters as empty strings.
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));

        let hmac_keys = hmac_keys(get("WEBHOOK_HMAC_KEYS"))?;
        let callback_token = get("CALLBACK_TOKEN").map(callback_token).transpose()?;
        let allow_unauthenticated = boolean("ALLOW_UNAUTHENTICATED", get("ALLOW_UNAUTHENTICATED"))?;
        if hmac_keys.is_empty() && callback_token.is_none() && !allow_unauthenticated {
            return Err(ConfigError::NoAuthentication);
        }
        Ok(Config {
            table_name: required("TABLE_NAME")?,
            bucket_name: required("BUCKET_NAME")?,
            queue_url: required("QUEUE_URL")?,
            hmac_keys,
            callback_token,
            allow_unauthenticated,
            max_body_bytes: bounded(
                "MAX_BODY_BYTES",
                get("MAX_BODY_BYTES"),
                DEFAULT_MAX_BODY_BYTES,
                MAX_MAX_BODY_BYTES,
            )?,
            signature_tolerance: Duration::from_secs(bounded(
                "SIGNATURE_TOLERANCE_SECONDS",
                get("SIGNATURE_TOLERANCE_SECONDS"),
                DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
                MAX_SIGNATURE_TOLERANCE_SECONDS,
            )?),
            log_level: get("LOG_LEVEL"),
        })
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Whether callbacks are accepted without any authentication.
    pub fn is_unauthenticated(&self) -> bool {
        self.hmac_keys.is_empty() && self.callback_token.is_none()
    }
}

fn hmac_keys(raw: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let keys: Vec<String> = raw.split(',').map(str::trim).map(str::to_owned).collect();
    if let Some(position) = keys.iter().position(String::is_empty) {
        let reason = format!("key number {} is empty (stray comma?)", position + 1);
        return Err(ConfigError::Invalid { name: "WEBHOOK_HMAC_KEYS", reason });
    }
    Ok(keys)
}

/// The token is a path segment, so it is restricted to characters that need no encoding.
fn callback_token(token: String) -> Result<String, ConfigError> {
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    if !token.chars().all(url_safe) {
        let reason = "use only ASCII letters, digits and - _ . ~ (it is part of the callback URL path)".into();
        return Err(ConfigError::Invalid { name: "CALLBACK_TOKEN", reason });
    }
    if token.len() < 16 {
        let reason = format!("it is {} characters long; use at least 16 random characters", token.len());
        return Err(ConfigError::Invalid { name: "CALLBACK_TOKEN", reason });
    }
    Ok(token)
}

fn boolean(name: &'static str, raw: Option<String>) -> Result<bool, ConfigError> {
    match raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ConfigError::Invalid { name, reason: format!("{other:?} is neither true nor false") }),
    }
}

fn bounded<T>(name: &'static str, raw: Option<String>, default: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display,
{
    let Some(raw) = raw else { return Ok(default) };
    let invalid = |reason: String| ConfigError::Invalid { name, reason: format!("{raw:?}: {reason}") };
    let value: T = raw.parse().map_err(|_| invalid("not a whole number".into()))?;
    if value < T::from(1) || value > max {
        return Err(invalid(format!("must be between 1 and {max}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const BASE: &[(&str, &str)] =
        &[("TABLE_NAME", "tasks"), ("BUCKET_NAME", "vault"), ("QUEUE_URL", "http://q/1/downloads")];

    fn config(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            BASE.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn reads_every_setting() {
        let c = config(&[
            ("WEBHOOK_HMAC_KEYS", " new-key , old-key "),
            ("CALLBACK_TOKEN", "0123456789abcdef-_.~"),
            ("MAX_BODY_BYTES", "2048"),
            ("SIGNATURE_TOLERANCE_SECONDS", "60"),
            ("LOG_LEVEL", "debug"),
        ])
        .unwrap();
        assert_eq!(
            (c.table_name.as_str(), c.bucket_name.as_str(), c.queue_url.as_str()),
            ("tasks", "vault", "http://q/1/downloads")
        );
        assert_eq!(c.hmac_keys, vec!["new-key", "old-key"]);
        assert_eq!(c.callback_token.as_deref(), Some("0123456789abcdef-_.~"));
        assert_eq!((c.max_body_bytes, c.signature_tolerance), (2048, Duration::from_secs(60)));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert!(!c.allow_unauthenticated && !c.is_unauthenticated());
    }

    #[test]
    fn defaults() {
        let c = config(&[("WEBHOOK_HMAC_KEYS", "k")]).unwrap();
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.signature_tolerance, Duration::from_secs(300));
        assert_eq!(c.callback_token, None);
    }

    #[test]
    fn refuses_to_run_unauthenticated_unless_told_to() {
        assert_eq!(config(&[]), Err(ConfigError::NoAuthentication));
        assert_eq!(config(&[("WEBHOOK_HMAC_KEYS", " "), ("CALLBACK_TOKEN", "")]), Err(ConfigError::NoAuthentication));
        assert_eq!(config(&[("ALLOW_UNAUTHENTICATED", "false")]), Err(ConfigError::NoAuthentication));
        let open = config(&[("ALLOW_UNAUTHENTICATED", "TRUE")]).unwrap();
        assert!(open.allow_unauthenticated && open.is_unauthenticated());
        assert!(matches!(
            config(&[("ALLOW_UNAUTHENTICATED", "yes")]),
            Err(ConfigError::Invalid { name: "ALLOW_UNAUTHENTICATED", .. })
        ));
    }

    #[test]
    fn requires_the_resources() {
        let vars = [("WEBHOOK_HMAC_KEYS", "k"), ("TABLE_NAME", "t"), ("BUCKET_NAME", "b")];
        let vars: HashMap<&str, &str> = vars.into_iter().collect();
        assert_eq!(Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())), Err(ConfigError::Missing("QUEUE_URL")));
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let err = config(&[("WEBHOOK_HMAC_KEYS", "secret-one,,secret-two")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "WEBHOOK_HMAC_KEYS", .. }));
        assert!(!err.to_string().contains("secret"), "{err}");
        for token in ["short-secret", "has/slash-0123456789", "has space 0123456789"] {
            let err = config(&[("CALLBACK_TOKEN", token)]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: "CALLBACK_TOKEN", .. }), "{token}");
            assert!(!err.to_string().contains(token), "{err}");
        }
        let debug = format!(
            "{:?}",
            config(&[("WEBHOOK_HMAC_KEYS", "key-123"), ("CALLBACK_TOKEN", "token-0123456789ab")]).unwrap()
        );
        assert!(!debug.contains("key-123") && !debug.contains("token-0123456789ab"), "{debug}");
    }

    #[test]
    fn numbers_are_bounded() {
        let with = |k: &'static str, v: &'static str| config(&[("WEBHOOK_HMAC_KEYS", "k"), (k, v)]);
        assert_eq!(with("MAX_BODY_BYTES", "6291456").unwrap().max_body_bytes, 6_291_456);
        for bad in ["0", "6291457", "-1", "1MiB"] {
            assert!(
                matches!(with("MAX_BODY_BYTES", bad), Err(ConfigError::Invalid { name: "MAX_BODY_BYTES", .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            with("SIGNATURE_TOLERANCE_SECONDS", "86401"),
            Err(ConfigError::Invalid { name: "SIGNATURE_TOLERANCE_SECONDS", .. })
        ));
    }
}
