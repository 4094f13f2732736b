//! The download function's settings, read once at start-up from the environment.

use stemvault_aws::provider::ProviderConfig;
use stemvault_aws::{ConfigError, Env, FromEnv};

use crate::source_policy::{DEFAULT_ALLOWED_SOURCE_HOSTS, SourcePolicy};

/// Every variable the function reads (besides `LOG_LEVEL`, read by
/// `stemvault_aws::logging::init`, and the AWS SDK's own).
/// `PROVIDER`, `PROVIDER_BASE_URL` and `PROVIDER_SECRET_ARN` are
/// [`stemvault_aws::provider::ENVIRONMENT`]: fresh links for expired files.
pub const ENVIRONMENT: &[&str] = &[
    "TABLE_NAME",
    "BUCKET_NAME",
    "QUEUE_URL",
    "EVENT_BUS_NAME",
    "ALLOWED_SOURCE_HOSTS",
    "MAX_FILE_BYTES",
    "PROVIDER",
    "PROVIDER_BASE_URL",
    "PROVIDER_SECRET_ARN",
];

/// Largest file copied unless `MAX_FILE_BYTES` says otherwise (2 GiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest `MAX_FILE_BYTES`: S3's 10,000 parts, of this project's 8 MiB (about 78 GiB),
/// more than one invocation's 15 minutes can copy. Larger would need larger parts (the
/// growth `part_size_for` still computes), and each message holds up to two at once, five
/// messages at a time, in a function of 512 MB.
const MAX_MAX_FILE_BYTES: u64 = crate::upload::MAX_PARTS * crate::upload::MIN_PART_SIZE as u64;

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    pub bucket_name: String,
    /// The download queue: retries are delayed with ChangeMessageVisibility on it.
    pub queue_url: String,
    /// `EVENT_BUS_NAME`: the EventBridge bus `Task Vaulted` goes to.
    pub event_bus_name: String,
    /// `ALLOWED_SOURCE_HOSTS`, parsed.
    pub allowed_sources: SourcePolicy,
    pub max_file_bytes: u64,
    /// The provider, for fresh links of expired files ([`crate::fresh_link`]); its key is read
    /// by [`crate::App::new`], as the other functions read their secrets. No secret in here.
    pub provider: ProviderConfig,
}

/// The one provider that offers fresh links (kie's `common/download-url`): the downloader
/// reads no other's key (`template.yaml` grants the read only with it).
pub const FRESH_LINK_PROVIDER: stemvault_aws::provider::Provider = stemvault_aws::provider::Provider::Kie;

impl FromEnv for Config {
    const ENVIRONMENT: &'static [&'static str] = ENVIRONMENT;

    fn read(env: &Env) -> Result<Config, ConfigError> {
        let allowed = env.optional("ALLOWED_SOURCE_HOSTS").unwrap_or_else(|| DEFAULT_ALLOWED_SOURCE_HOSTS.to_owned());
        let allowed_sources = SourcePolicy::parse(&allowed)
            .map_err(|e| ConfigError::Invalid { name: "ALLOWED_SOURCE_HOSTS", reason: e.to_string() })?;
        Ok(Config {
            table_name: env.required("TABLE_NAME")?,
            bucket_name: env.required("BUCKET_NAME")?,
            queue_url: env.required("QUEUE_URL")?,
            event_bus_name: env.required("EVENT_BUS_NAME")?,
            allowed_sources,
            max_file_bytes: env.number("MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES, 1, MAX_MAX_FILE_BYTES)?,
            provider: ProviderConfig::read(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use url::Url;

    use stemvault_aws::provider::Provider;

    use super::*;
    use crate::source_policy::Access;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| env.get(k).cloned())
    }

    const BASE: [(&str, &str); 4] =
        [("TABLE_NAME", "t"), ("BUCKET_NAME", "b"), ("QUEUE_URL", "http://q"), ("EVENT_BUS_NAME", "events")];

    #[test]
    fn defaults() {
        let c = config(&BASE).unwrap();
        assert_eq!((c.table_name.as_str(), c.bucket_name.as_str(), c.queue_url.as_str()), ("t", "b", "http://q"));
        assert_eq!(c.max_file_bytes, 2_147_483_648);
        assert_eq!(c.allowed_sources, SourcePolicy::parse(DEFAULT_ALLOWED_SOURCE_HOSTS).unwrap());
    }

    #[test]
    fn the_provider_for_fresh_links() {
        for name in stemvault_aws::provider::ENVIRONMENT {
            assert!(ENVIRONMENT.contains(name), "{name}");
        }
        let c = config(&BASE).unwrap();
        assert_eq!((c.provider.provider, c.provider.secret_arn.as_deref()), (Provider::Kie, None));
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("PROVIDER", "sunoapi"),
            ("PROVIDER_BASE_URL", "http://127.0.0.1:3002"),
            ("PROVIDER_SECRET_ARN", "arn:x"),
        ]);
        let c = config(&pairs).unwrap();
        assert_eq!((c.provider.provider, c.provider.base_url.as_str()), (Provider::SunoApi, "http://127.0.0.1:3002"));
        let mut pairs = BASE.to_vec();
        pairs.push(("PROVIDER_BASE_URL", "http://api.kie.ai"));
        assert!(matches!(config(&pairs), Err(ConfigError::Invalid { name: "PROVIDER_BASE_URL", .. })));
    }

    #[test]
    fn required_values() {
        for missing in ["TABLE_NAME", "BUCKET_NAME", "QUEUE_URL", "EVENT_BUS_NAME"] {
            let pairs: Vec<(&str, &str)> =
                BASE.iter().map(|&(k, v)| if k == missing { (k, " ") } else { (k, v) }).collect();
            assert_eq!(config(&pairs).unwrap_err(), ConfigError::Missing(missing));
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

        let largest = (10_000u64 * 8 * 1024 * 1024).to_string();
        pairs.retain(|(name, _)| *name != "MAX_FILE_BYTES");
        pairs.push(("MAX_FILE_BYTES", &largest));
        assert_eq!(config(&pairs).unwrap().max_file_bytes, 83_886_080_000, "78 GiB: parts stay 8 MiB");
        assert_eq!(crate::upload::part_size_for(83_886_080_000), 8 << 20);
        let over = (10_000u64 * 8 * 1024 * 1024 + 1).to_string();
        for bad in ["0", "-1", "lots", "1.5", "6000000000000", &over] {
            let mut pairs = BASE.to_vec();
            pairs.push(("MAX_FILE_BYTES", bad));
            assert!(matches!(config(&pairs), Err(ConfigError::Invalid { name: "MAX_FILE_BYTES", .. })), "{bad}");
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("ALLOWED_SOURCE_HOSTS", "*.suno.ai,http://h/path"));
        let err = config(&pairs).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "ALLOWED_SOURCE_HOSTS", .. }), "{err}");
        assert!(err.to_string().starts_with("ALLOWED_SOURCE_HOSTS is invalid: entry \"http://h/path\": "), "{err}");
    }
}
