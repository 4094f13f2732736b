//! The reconciler's settings, read once at start-up from the environment. The provider's
//! (`PROVIDER`, `PROVIDER_BASE_URL`, `PROVIDER_SECRET_ARN`) are read by the one reader every
//! function that calls the provider shares ([`stemvault_aws::provider`]); the API key itself
//! is in the provider secret, read at start-up ([`crate::app::App::new`]) and again when it
//! may have been rotated.

use std::time::Duration;

use stemvault_aws::provider::ProviderConfig;
use stemvault_aws::{ConfigError, Env, FromEnv};

/// Every variable the function reads (besides logging's and the AWS SDK's).
pub const ENVIRONMENT: &[&str] = &[
    "TABLE_NAME",
    "BUCKET_NAME",
    "QUEUE_URL",
    "EVENT_BUS_NAME",
    "PROVIDER",
    "PROVIDER_BASE_URL",
    "PROVIDER_SECRET_ARN",
    "RECONCILE_AFTER_SECONDS",
    "RECONCILE_GIVE_UP_SECONDS",
    "RECONCILE_POLLS_PER_MINUTE",
];

/// No secret in here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub bucket_name: String,
    pub queue_url: String,
    /// `EVENT_BUS_NAME`: where the events of a polled result (and of a task given up) go.
    pub event_bus_name: String,
    /// Which provider, where, and the secret holding its API key (no secret: nothing polled).
    pub provider: ProviderConfig,
    pub reconcile_after: Duration,
    /// `RECONCILE_GIVE_UP_SECONDS`: how long after its registration (or first callback, or
    /// the callback that brought its current stage: `reconcile::waiting_since`) a task still
    /// without a result is given up.
    pub give_up_after: Duration,
    /// `RECONCILE_POLLS_PER_MINUTE`: the most requests a minute to the provider ([`crate::request_spacing`]).
    pub polls_per_minute: u32,
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        let reconcile_after = stemvault_aws::reconcile_after(env)?;
        let default = stemvault_vault::reconcile::DEFAULT_GIVE_UP_AFTER.as_secs();
        let give_up_after = env.seconds("RECONCILE_GIVE_UP_SECONDS", default, 60, 90 * 24 * 3600)?;
        // Given up before its first poll, a registered task would never be polled.
        if give_up_after <= reconcile_after {
            let reason = format!(
                "{} s is not longer than RECONCILE_AFTER_SECONDS ({} s): every registered task would be given up \
                 before its first poll",
                give_up_after.as_secs(),
                reconcile_after.as_secs()
            );
            return Err(ConfigError::Invalid { name: "RECONCILE_GIVE_UP_SECONDS", reason });
        }
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            bucket_name: env.required("BUCKET_NAME")?,
            queue_url: env.required("QUEUE_URL")?,
            event_bus_name: env.required("EVENT_BUS_NAME")?,
            provider: ProviderConfig::read(env)?,
            reconcile_after,
            give_up_after,
            polls_per_minute: {
                use crate::request_spacing::{DEFAULT_POLLS_PER_MINUTE, POLLS_PER_MINUTE_RANGE as RANGE};
                env.number("RECONCILE_POLLS_PER_MINUTE", DEFAULT_POLLS_PER_MINUTE, *RANGE.start(), *RANGE.end())?
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut all = vec![("TABLE_NAME", "t"), ("BUCKET_NAME", "b"), ("QUEUE_URL", "q"), ("EVENT_BUS_NAME", "e")];
        all.extend_from_slice(pairs);
        let all: Vec<(String, String)> = all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |k| all.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn a_give_up_no_longer_than_the_first_poll_wait_is_refused() {
        for (after, give_up) in [("600", "600"), ("600", "300"), ("86400", "3600")] {
            let pairs = [("RECONCILE_AFTER_SECONDS", after), ("RECONCILE_GIVE_UP_SECONDS", give_up)];
            let refused = config(&pairs).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("RECONCILE_GIVE_UP_SECONDS") && refused.contains("first poll"), "{refused}");
        }
        let pairs = [("RECONCILE_AFTER_SECONDS", "600"), ("RECONCILE_GIVE_UP_SECONDS", "601")];
        assert_eq!(config(&pairs).map(|c| c.give_up_after.as_secs()).ok(), Some(601));
    }

    #[test]
    fn reads_the_provider_and_defaults_to_ten_minutes_and_fourteen_days() {
        let c = config(&[("PROVIDER_BASE_URL", "http://127.0.0.1:3002/"), ("PROVIDER_SECRET_ARN", "arn:x")]).unwrap();
        assert_eq!(
            (c.provider.base_url.as_str(), c.provider.secret_arn.as_deref()),
            ("http://127.0.0.1:3002", Some("arn:x"))
        );
        assert_eq!((c.reconcile_after, c.give_up_after), (Duration::from_secs(600), Duration::from_secs(1_209_600)));
        assert!(config(&[("PROVIDER_BASE_URL", "http://api.kie.ai")]).is_err());
        for name in stemvault_aws::provider::ENVIRONMENT {
            assert!(ENVIRONMENT.contains(name), "{name}");
        }
    }

    #[test]
    fn the_waits_are_bounded() {
        assert!(config(&[("RECONCILE_AFTER_SECONDS", "4")]).is_err());
        assert_eq!(config(&[("RECONCILE_AFTER_SECONDS", "5")]).unwrap().reconcile_after, Duration::from_secs(5));
        assert!(config(&[("RECONCILE_GIVE_UP_SECONDS", "59")]).is_err());
    }

    #[test]
    fn polls_are_paced_at_one_a_second_unless_set_within_bounds() {
        assert_eq!(config(&[]).unwrap().polls_per_minute, 60);
        assert_eq!(config(&[("RECONCILE_POLLS_PER_MINUTE", "1200")]).unwrap().polls_per_minute, 1200);
        for refused in ["0", "1201", "-1", "fast"] {
            assert!(config(&[("RECONCILE_POLLS_PER_MINUTE", refused)]).is_err(), "{refused}");
        }
    }
}
