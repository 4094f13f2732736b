//! The results function's settings, read once at start-up from the environment.

use std::time::Duration;

use stemvault_aws::{ConfigError, Env, FromEnv};

/// Every variable the function reads (besides logging's and the AWS SDK's).
pub const ENVIRONMENT: &[&str] =
    &["TABLE_NAME", "BUCKET_NAME", "DOWNLOAD_URL_EXPIRY_SECONDS", "RECONCILE_AFTER_SECONDS"];

/// Presigned S3 URLs cannot be valid for longer than 7 days (SigV4 limit).
pub const MAX_DOWNLOAD_URL_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;
const DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The task table.
    pub table_name: String,
    /// The vault bucket the download links point into.
    pub bucket_name: String,
    /// How long a download link stays valid (also bounded by the lifetime of the function's
    /// role credentials, which sign it).
    pub download_url_expiry: Duration,
    /// `RECONCILE_AFTER_SECONDS`: a registered task is first polled this long after its
    /// registration.
    pub reconcile_after: Duration,
}

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            bucket_name: env.required("BUCKET_NAME")?,
            download_url_expiry: env.seconds(
                "DOWNLOAD_URL_EXPIRY_SECONDS",
                DEFAULT_DOWNLOAD_URL_EXPIRY_SECONDS,
                1,
                MAX_DOWNLOAD_URL_EXPIRY_SECONDS,
            )?,
            reconcile_after: stemvault_aws::reconcile_after(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn reads_names_and_defaults_the_expiry_to_an_hour() {
        let c = config(&[("TABLE_NAME", "tasks"), ("BUCKET_NAME", "vault")]).unwrap();
        assert_eq!(c.table_name, "tasks");
        assert_eq!(c.bucket_name, "vault");
        assert_eq!(c.download_url_expiry, Duration::from_secs(3600));
    }

    #[test]
    fn requires_table_and_bucket() {
        assert_eq!(config(&[("BUCKET_NAME", "vault")]), Err(ConfigError::Missing("TABLE_NAME")));
        assert_eq!(config(&[("TABLE_NAME", "t"), ("BUCKET_NAME", " ")]), Err(ConfigError::Missing("BUCKET_NAME")));
    }

    #[test]
    fn expiry_is_bounded_to_seven_days() {
        let with = |v: &str| config(&[("TABLE_NAME", "t"), ("BUCKET_NAME", "b"), ("DOWNLOAD_URL_EXPIRY_SECONDS", v)]);
        assert_eq!(with("604800").unwrap().download_url_expiry, Duration::from_secs(604_800));
        assert_eq!(with(" 60 ").unwrap().download_url_expiry, Duration::from_secs(60));
        for bad in ["604801", "0", "-5", "1h"] {
            let err = with(bad).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: "DOWNLOAD_URL_EXPIRY_SECONDS", reason } if reason.contains(bad)),
                "{bad}: {err}"
            );
        }
    }
}
