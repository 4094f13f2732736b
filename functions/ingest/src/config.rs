//! The ingest function's settings, read once at start-up from the environment.

use std::time::Duration;

use stemvault_aws::{ConfigError, Env, FromEnv};

/// Every variable the function reads (besides logging's and the AWS SDK's).
pub const ENVIRONMENT: &[&str] = &[
    "TABLE_NAME",
    "BUCKET_NAME",
    "QUEUE_URL",
    "WEBHOOK_HMAC_KEYS",
    "CALLBACK_TOKEN",
    "ALLOW_UNAUTHENTICATED",
    "MAX_BODY_BYTES",
    "SIGNATURE_TOLERANCE_SECONDS",
];

/// Largest accepted callback body unless `MAX_BODY_BYTES` says otherwise (1 MiB; the largest
/// documented bodies, MIDI note lists, are tens of kilobytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// API Gateway and Lambda refuse bodies over 6 MB anyway.
const MAX_MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
const DEFAULT_SIGNATURE_TOLERANCE_SECONDS: u64 = 300;
/// A day: past that, a captured signature stays replayable for too long.
const MAX_SIGNATURE_TOLERANCE_SECONDS: u64 = 86_400;

/// Why the function refuses to start with neither keys nor token.
const NO_AUTHENTICATION: &str = "no callback authentication configured: set WEBHOOK_HMAC_KEYS and/or \
     CALLBACK_TOKEN, or ALLOW_UNAUTHENTICATED=true to accept unauthenticated callbacks on purpose";

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
            .finish()
    }
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        let hmac_keys = hmac_keys(env.optional("WEBHOOK_HMAC_KEYS"))?;
        let callback_token = env.optional("CALLBACK_TOKEN").map(callback_token).transpose()?;
        let allow_unauthenticated = env.flag("ALLOW_UNAUTHENTICATED")?;
        if hmac_keys.is_empty() && callback_token.is_none() && !allow_unauthenticated {
            return Err(ConfigError::Unusable(NO_AUTHENTICATION));
        }
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            bucket_name: env.required("BUCKET_NAME")?,
            queue_url: env.required("QUEUE_URL")?,
            hmac_keys,
            callback_token,
            allow_unauthenticated,
            max_body_bytes: env.number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1, MAX_MAX_BODY_BYTES)?,
            signature_tolerance: env.seconds(
                "SIGNATURE_TOLERANCE_SECONDS",
                DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
                1,
                MAX_SIGNATURE_TOLERANCE_SECONDS,
            )?,
        })
    }
}

impl Config {
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
        ])
        .unwrap();
        assert_eq!(
            (c.table_name.as_str(), c.bucket_name.as_str(), c.queue_url.as_str()),
            ("tasks", "vault", "http://q/1/downloads")
        );
        assert_eq!(c.hmac_keys, vec!["new-key", "old-key"]);
        assert_eq!(c.callback_token.as_deref(), Some("0123456789abcdef-_.~"));
        assert_eq!((c.max_body_bytes, c.signature_tolerance), (2048, Duration::from_secs(60)));
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
        assert_eq!(config(&[]), Err(ConfigError::Unusable(NO_AUTHENTICATION)));
        assert_eq!(
            NO_AUTHENTICATION,
            "no callback authentication configured: set WEBHOOK_HMAC_KEYS and/or CALLBACK_TOKEN, \
             or ALLOW_UNAUTHENTICATED=true to accept unauthenticated callbacks on purpose"
        );
        assert_eq!(
            config(&[("WEBHOOK_HMAC_KEYS", " "), ("CALLBACK_TOKEN", "")]),
            Err(ConfigError::Unusable(NO_AUTHENTICATION))
        );
        assert_eq!(config(&[("ALLOW_UNAUTHENTICATED", "false")]), Err(ConfigError::Unusable(NO_AUTHENTICATION)));
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
