//! The ingest function's settings, read once at start-up from the environment.

use std::time::Duration;

use stemvault_aws::{ConfigError, Env, FromEnv};

use crate::credentials::AuthSettings;

/// Every variable the function reads (besides logging's and the AWS SDK's). The webhook HMAC
/// keys and the callback token are not among them: they are in the callback secret
/// ([`crate::secret`]), read through `CALLBACK_SECRET_ARN`.
pub const ENVIRONMENT: &[&str] = &[
    "TABLE_NAME",
    "BUCKET_NAME",
    "QUEUE_URL",
    "CALLBACK_SECRET_ARN",
    "MAX_BODY_BYTES",
    "SIGNATURE_TOLERANCE_SECONDS",
    "RECONCILE_AFTER_SECONDS",
    "EVENT_BUS_NAME",
];

/// Largest accepted callback body unless `MAX_BODY_BYTES` says otherwise: 4 MiB. The
/// documented bodies are short examples, but a MIDI callback lists every note (about 95 bytes
/// each), and a whole song's can pass 1 MiB; a 413 is final (the provider gives up, the task
/// is lost). Recording a big body costs no more than a small one (its details become a pointer
/// to the archive). Below Lambda's 6 MB event limit with room for the body's JSON escaping
/// (or base64) in the API Gateway event.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The most that can be set: Lambda's 6 MB event holds the body JSON-escaped, or base64-encoded
/// (a third larger), inside API Gateway's event only up to about this. A larger body would be
/// refused by Lambda before ingest sees it (API Gateway's own 413 or 500: not parked, not
/// counted), so a larger setting could only promise what cannot be delivered.
const MAX_MAX_BODY_BYTES: usize = DEFAULT_MAX_BODY_BYTES;
const DEFAULT_SIGNATURE_TOLERANCE_SECONDS: u64 = 300;
/// A day: past that, a captured signature stays replayable for too long.
const MAX_SIGNATURE_TOLERANCE_SECONDS: u64 = 86_400;

/// No secret in here: the callback secret is read from Secrets Manager at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    /// `CALLBACK_SECRET_ARN`: the Secrets Manager secret (ARN or name) holding the webhook HMAC
    /// keys and the callback token ([`crate::secret::CallbackSecret`]).
    pub callback_secret_arn: String,
    /// A secret with neither keys nor token is used only when this says that is intended:
    /// never read from the environment, so a Lambda cannot be told to accept callbacks from
    /// anyone; the local runner sets it (`make run` with `ALLOW_UNAUTHENTICATED=true`).
    pub allow_unauthenticated: bool,
    pub max_body_bytes: usize,
    pub signature_tolerance: Duration,
    /// `RECONCILE_AFTER_SECONDS`: a task left at `text` or `first` is first polled this long
    /// after that callback.
    pub reconcile_after: Duration,
    /// `EVENT_BUS_NAME`: the EventBridge bus the task events go to.
    pub event_bus_name: String,
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            bucket_name: env.required("BUCKET_NAME")?,
            queue_url: env.required("QUEUE_URL")?,
            callback_secret_arn: env.required("CALLBACK_SECRET_ARN")?,
            allow_unauthenticated: false,
            max_body_bytes: env.number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1, MAX_MAX_BODY_BYTES)?,
            signature_tolerance: env.seconds(
                "SIGNATURE_TOLERANCE_SECONDS",
                DEFAULT_SIGNATURE_TOLERANCE_SECONDS,
                1,
                MAX_SIGNATURE_TOLERANCE_SECONDS,
            )?,
            reconcile_after: stemvault_aws::reconcile_after(env)?,
            event_bus_name: env.required("EVENT_BUS_NAME")?,
        })
    }
}

impl Config {
    /// What turns the callback secret into checks.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            signature_tolerance: self.signature_tolerance,
            allow_unauthenticated: self.allow_unauthenticated,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stemvault-callback-AbCdEf";
    const BASE: &[(&str, &str)] = &[
        ("TABLE_NAME", "tasks"),
        ("BUCKET_NAME", "vault"),
        ("QUEUE_URL", "http://q/1/downloads"),
        ("CALLBACK_SECRET_ARN", ARN),
        ("EVENT_BUS_NAME", "stemvault-events"),
    ];

    fn config(extra: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            BASE.iter().chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn reads_every_setting() {
        let c = config(&[("MAX_BODY_BYTES", "2048"), ("SIGNATURE_TOLERANCE_SECONDS", "60")]).unwrap();
        assert_eq!(
            (c.table_name.as_str(), c.bucket_name.as_str(), c.queue_url.as_str()),
            ("tasks", "vault", "http://q/1/downloads")
        );
        assert_eq!(c.callback_secret_arn, ARN);
        assert_eq!((c.max_body_bytes, c.signature_tolerance), (2048, Duration::from_secs(60)));
        assert_eq!(
            c.auth_settings(),
            AuthSettings { signature_tolerance: Duration::from_secs(60), allow_unauthenticated: false }
        );
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.max_body_bytes, 4_194_304);
        assert_eq!(c.signature_tolerance, Duration::from_secs(300));
        assert!(!c.allow_unauthenticated);
        // Not read: no variable lets a Lambda accept callbacks from anyone.
        assert!(!config(&[("ALLOW_UNAUTHENTICATED", "true")]).unwrap().allow_unauthenticated);
    }

    #[test]
    fn requires_the_resources_and_the_secret() {
        for name in ["QUEUE_URL", "CALLBACK_SECRET_ARN", "EVENT_BUS_NAME"] {
            let vars: HashMap<&str, &str> = BASE.iter().copied().filter(|(k, _)| *k != name).collect();
            assert_eq!(Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())), Err(ConfigError::Missing(name)));
        }
    }

    #[test]
    fn the_keys_and_token_are_not_read_from_the_environment() {
        assert!(!ENVIRONMENT.contains(&"WEBHOOK_HMAC_KEYS") && !ENVIRONMENT.contains(&"CALLBACK_TOKEN"));
        let asked = std::cell::RefCell::new(Vec::new());
        let vars: HashMap<&str, &str> = BASE.iter().copied().collect();
        let config = Config::from_lookup(|k| {
            asked.borrow_mut().push(k.to_owned());
            vars.get(k).map(|v| v.to_string())
        });
        assert!(config.is_ok(), "{config:?}");
        let asked = asked.into_inner();
        assert!(!asked.is_empty() && asked.iter().all(|k| ENVIRONMENT.contains(&k.as_str())), "{asked:?}");
    }

    #[test]
    fn numbers_are_bounded() {
        let with = |k: &'static str, v: &'static str| config(&[(k, v)]);
        assert_eq!(with("MAX_BODY_BYTES", "4194304").unwrap().max_body_bytes, 4_194_304);
        assert_eq!(with("MAX_BODY_BYTES", "65536").unwrap().max_body_bytes, 65_536);
        for bad in ["0", "4194305", "6291456", "-1", "1MiB"] {
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
