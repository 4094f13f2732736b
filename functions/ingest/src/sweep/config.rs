//! The sweeper's settings, read once at start-up from the environment.

use std::time::Duration;

use crate::ConfigError;

const DEFAULT_GRACE_SECONDS: u64 = 120;
/// Less than an ingest request's lifetime would sweep files a live request is still sending.
const MIN_GRACE_SECONDS: u64 = 60;
/// A day: files older than that have lost their source URLs anyway.
const MAX_GRACE_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweeperConfig {
    pub table_name: String,
    pub queue_url: String,
    /// `SWEEP_GRACE_SECONDS`: tasks delivered more recently are left to their ingest requests.
    pub grace: Duration,
    /// `LOG_LEVEL`, as read by `stemvault_aws::logging::init` (named here like every variable).
    pub log_level: Option<String>,
}

impl SweeperConfig {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<SweeperConfig, ConfigError> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let grace = match get("SWEEP_GRACE_SECONDS") {
            None => DEFAULT_GRACE_SECONDS,
            Some(raw) => match raw.parse::<u64>() {
                Ok(s) if (MIN_GRACE_SECONDS..=MAX_GRACE_SECONDS).contains(&s) => s,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "SWEEP_GRACE_SECONDS",
                        reason: format!(
                            "{raw:?} is not a whole number of seconds from {MIN_GRACE_SECONDS} to {MAX_GRACE_SECONDS}"
                        ),
                    });
                }
            },
        };
        Ok(SweeperConfig {
            table_name: required("TABLE_NAME")?,
            queue_url: required("QUEUE_URL")?,
            grace: Duration::from_secs(grace),
            log_level: get("LOG_LEVEL"),
        })
    }

    pub fn from_env() -> Result<SweeperConfig, ConfigError> {
        SweeperConfig::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn reads_names_and_defaults_the_grace() {
        let c = SweeperConfig::from_lookup(lookup(&[("TABLE_NAME", "t"), ("QUEUE_URL", "q")])).unwrap();
        assert_eq!((c.table_name.as_str(), c.queue_url.as_str(), c.grace), ("t", "q", Duration::from_secs(120)));
        let c = SweeperConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("SWEEP_GRACE_SECONDS", "300"),
        ]))
        .unwrap();
        assert_eq!(c.grace, Duration::from_secs(300));
    }

    #[test]
    fn refuses_a_missing_name_and_a_grace_shorter_than_a_request() {
        assert_eq!(SweeperConfig::from_lookup(lookup(&[("TABLE_NAME", "t")])), Err(ConfigError::Missing("QUEUE_URL")));
        let short = SweeperConfig::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("QUEUE_URL", "q"),
            ("SWEEP_GRACE_SECONDS", "5"),
        ]));
        assert!(matches!(short, Err(ConfigError::Invalid { name: "SWEEP_GRACE_SECONDS", .. })), "{short:?}");
    }
}
