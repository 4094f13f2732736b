//! The download function's settings, read once at start-up from the environment.

use crate::source_policy::{DEFAULT_ALLOWED_SOURCE_HOSTS, PolicyError, SourcePolicy};

/// Largest file copied unless `MAX_FILE_BYTES` says otherwise (2 GiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// S3's largest object (5 TiB).
const MAX_MAX_FILE_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub bucket_name: String,
    /// The download queue: retries are delayed with ChangeMessageVisibility on it.
    pub queue_url: String,
    /// `ALLOWED_SOURCE_HOSTS`, parsed.
    pub allowed_sources: SourcePolicy,
    pub max_file_bytes: u64,
    /// `LOG_LEVEL`, as read by `stemvault_aws::logging::init` (kept here so every variable
    /// the function reads is named in this file).
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
    #[error(transparent)]
    AllowedSources(#[from] PolicyError),
}

impl Config {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        // Deployment templates pass unset parameters as empty strings.
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let allowed = get("ALLOWED_SOURCE_HOSTS").unwrap_or_else(|| DEFAULT_ALLOWED_SOURCE_HOSTS.to_owned());
        Ok(Config {
            table_name: required("TABLE_NAME")?,
            bucket_name: required("BUCKET_NAME")?,
            queue_url: required("QUEUE_URL")?,
            allowed_sources: SourcePolicy::parse(&allowed)?,
            max_file_bytes: max_file_bytes(get("MAX_FILE_BYTES"))?,
            log_level: get("LOG_LEVEL"),
        })
    }

    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

fn max_file_bytes(raw: Option<String>) -> Result<u64, ConfigError> {
    let Some(value) = raw else { return Ok(DEFAULT_MAX_FILE_BYTES) };
    let invalid = |reason: String| ConfigError::Invalid { name: "MAX_FILE_BYTES", value: value.clone(), reason };
    let bytes: u64 = value.parse().map_err(|_| invalid("not a whole number of bytes".into()))?;
    if !(1..=MAX_MAX_FILE_BYTES).contains(&bytes) {
        return Err(invalid(format!("must be between 1 and {MAX_MAX_FILE_BYTES} (5 TiB, S3's largest object)")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use url::Url;

    use super::*;
    use crate::source_policy::Access;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| env.get(k).cloned())
    }

    const BASE: [(&str, &str); 3] = [("TABLE_NAME", "t"), ("BUCKET_NAME", "b"), ("QUEUE_URL", "http://q")];

    #[test]
    fn defaults() {
        let c = config(&BASE).unwrap();
        assert_eq!((c.table_name.as_str(), c.bucket_name.as_str(), c.queue_url.as_str()), ("t", "b", "http://q"));
        assert_eq!(c.max_file_bytes, 2_147_483_648);
        assert_eq!(c.allowed_sources, SourcePolicy::parse(DEFAULT_ALLOWED_SOURCE_HOSTS).unwrap());
        assert_eq!(c.log_level, None);
    }

    #[test]
    fn required_values() {
        for missing in ["TABLE_NAME", "BUCKET_NAME", "QUEUE_URL"] {
            let pairs: Vec<(&str, &str)> =
                BASE.iter().map(|&(k, v)| if k == missing { (k, " ") } else { (k, v) }).collect();
            assert_eq!(config(&pairs), Err(ConfigError::Missing(missing)));
        }
    }

    #[test]
    fn allowed_sources_and_size_cap() {
        let mut pairs = BASE.to_vec();
        pairs.extend([("ALLOWED_SOURCE_HOSTS", "http://127.0.0.1:3001"), ("MAX_FILE_BYTES", "1000")]);
        let c = config(&pairs).unwrap();
        assert_eq!(c.max_file_bytes, 1000);
        let local = Url::parse("http://127.0.0.1:3001/x").unwrap();
        assert_eq!(c.allowed_sources.check(&local), Ok(Access::ListedOrigin));
        assert!(c.allowed_sources.check(&Url::parse("https://cdn1.suno.ai/x").unwrap()).is_err());

        for bad in ["0", "-1", "lots", "1.5", "6000000000000"] {
            let mut pairs = BASE.to_vec();
            pairs.push(("MAX_FILE_BYTES", bad));
            assert!(matches!(config(&pairs), Err(ConfigError::Invalid { name: "MAX_FILE_BYTES", .. })), "{bad}");
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("ALLOWED_SOURCE_HOSTS", "*.suno.ai,http://h/path"));
        assert!(matches!(config(&pairs), Err(ConfigError::AllowedSources(_))));
    }
}
