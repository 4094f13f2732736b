//! The sweeper's settings, read once at start-up from the environment.

use std::time::Duration;

use stemvault_aws::{ConfigError, Env, FromEnv};

/// Every variable the function reads (besides logging's and the AWS SDK's).
pub const ENVIRONMENT: &[&str] = &["TABLE_NAME", "QUEUE_URL", "SWEEP_GRACE_SECONDS"];

const DEFAULT_GRACE_SECONDS: u64 = 120;
/// Less than an ingest request's lifetime would sweep files a live request is still sending.
const MIN_GRACE_SECONDS: u64 = 60;
/// A day: a file left that long is worth sending again now (its source URL ages: 14 days
/// at most, sometimes less), not after a longer wait.
const MAX_GRACE_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub queue_url: String,
    /// `SWEEP_GRACE_SECONDS`: tasks delivered more recently are left to their ingest requests.
    pub grace: Duration,
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            queue_url: env.required("QUEUE_URL")?,
            grace: env.seconds("SWEEP_GRACE_SECONDS", DEFAULT_GRACE_SECONDS, MIN_GRACE_SECONDS, MAX_GRACE_SECONDS)?,
        })
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
        let c = Config::from_lookup(lookup(&[("TABLE_NAME", "t"), ("QUEUE_URL", "q")])).unwrap();
        assert_eq!((c.table_name.as_str(), c.queue_url.as_str(), c.grace), ("t", "q", Duration::from_secs(120)));
        let c = Config::from_lookup(lookup(&[("TABLE_NAME", "t"), ("QUEUE_URL", "q"), ("SWEEP_GRACE_SECONDS", "300")]))
            .unwrap();
        assert_eq!(c.grace, Duration::from_secs(300));
    }

    #[test]
    fn refuses_a_missing_name_and_a_grace_shorter_than_a_request() {
        assert_eq!(Config::from_lookup(lookup(&[("TABLE_NAME", "t")])), Err(ConfigError::Missing("QUEUE_URL")));
        let short =
            Config::from_lookup(lookup(&[("TABLE_NAME", "t"), ("QUEUE_URL", "q"), ("SWEEP_GRACE_SECONDS", "5")]));
        assert!(matches!(short, Err(ConfigError::Invalid { name: "SWEEP_GRACE_SECONDS", .. })), "{short:?}");
    }
}
