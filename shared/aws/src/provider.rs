//! The provider whose API the tasks were submitted to: which one (`PROVIDER`), where its API
//! is (`PROVIDER_BASE_URL`) and its API key (in the Secrets Manager secret
//! `PROVIDER_SECRET_ARN`, read once per cold start). One reader for every function that calls
//! the provider: the reconciler (record-info polls) and the downloader (fresh links for
//! expired files). Without a key those calls are off; the key never appears in `Debug`, logs
//! or errors.

use std::time::Duration;

use crate::env::{ConfigError, Env};
use crate::secrets::{SecretReader, SecretText};

/// The variables [`ProviderConfig::read`] reads; a function that reads it declares them all
/// in its own `config::ENVIRONMENT`.
pub const ENVIRONMENT: &[&str] = &["PROVIDER", "PROVIDER_BASE_URL", "PROVIDER_SECRET_ARN"];

/// Whose API the tasks were submitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// docs.kie.ai (`https://api.kie.ai`).
    Kie,
    /// docs.sunoapi.org (`https://api.sunoapi.org`).
    SunoApi,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Kie => "kie",
            Provider::SunoApi => "sunoapi",
        }
    }

    /// Its API host, the default `PROVIDER_BASE_URL`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Kie => "https://api.kie.ai",
            Provider::SunoApi => "https://api.sunoapi.org",
        }
    }
}

/// The provider settings. No secret in here: [`read_api_key`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// `PROVIDER`: `kie` (the default) or `sunoapi`.
    pub provider: Provider,
    /// `PROVIDER_BASE_URL`: https, or http on a loopback host (local runs); no trailing slash.
    pub base_url: String,
    /// `PROVIDER_SECRET_ARN`: the secret holding the API key; None: no calls to the provider.
    pub secret_arn: Option<String>,
}

impl ProviderConfig {
    /// Read [`ENVIRONMENT`] (each name must be declared by the caller's `env`).
    pub fn read(env: &Env) -> Result<ProviderConfig, ConfigError> {
        let provider = match env.optional("PROVIDER").map(|p| p.to_ascii_lowercase()).as_deref() {
            None | Some("kie") => Provider::Kie,
            Some("sunoapi") => Provider::SunoApi,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "PROVIDER",
                    reason: format!("{other:?} is neither kie nor sunoapi"),
                });
            }
        };
        let base = env.optional("PROVIDER_BASE_URL").unwrap_or_else(|| provider.default_base_url().to_owned());
        Ok(ProviderConfig { provider, base_url: base_url(&base)?, secret_arn: env.optional("PROVIDER_SECRET_ARN") })
    }
}

/// `PROVIDER_BASE_URL` checked: https anywhere, plain http only on a loopback host (the fake
/// provider of local runs and tests), no query, no credentials; without its trailing slash.
pub fn base_url(raw: &str) -> Result<String, ConfigError> {
    let invalid =
        |reason: &str| ConfigError::Invalid { name: "PROVIDER_BASE_URL", reason: format!("{raw:?}: {reason}") };
    let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(invalid("plain http is allowed only on a loopback host (127.0.0.1, ::1, localhost)")),
        _ => return Err(invalid("not an https URL")),
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() || url.host_str().is_none() {
        return Err(invalid("an origin (and path) without query or credentials is expected"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The provider's API key: never in `Debug`, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(SecretText);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// The key in a secret's text: the text itself, or the `api_key` of a JSON object. None
    /// when it is empty (calls to the provider off).
    pub fn from_secret(text: &SecretText) -> Option<ApiKey> {
        let raw = text.expose().trim();
        let key = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(o)) => {
                o.get("api_key").and_then(|k| k.as_str()).unwrap_or("").trim().to_owned()
            }
            _ => raw.to_owned(),
        };
        (!key.is_empty()).then(|| ApiKey(SecretText::new(key)))
    }

    /// The key itself, for the `Authorization: Bearer` header only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// How long a connection to the provider may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for the provider's API: redirects not followed, proxies from the
/// environment ignored, [`CONNECT_TIMEOUT`], `timeout` for a whole request. Fails only when
/// the TLS backend cannot start.
pub fn http_client(user_agent: &str, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest has no crypto provider of its own: use the SDK's (aws-lc-rs), once per process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .user_agent(user_agent)
        .build()
}

/// A failed request to the provider, as `<what happened>: <causes>`, without its URL:
/// `timed out: ...`, `could not connect: ...` or `failed: ...`.
pub fn error_text(e: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let causes = if causes.is_empty() { "no detail".to_owned() } else { causes.join(": ") };
    format!("{kind}: {causes}")
}

/// The API key in `config`'s secret (one `secretsmanager:GetSecretValue`, at start-up): None
/// without `PROVIDER_SECRET_ARN` or with an empty secret. A secret that is named but cannot
/// be read is a configuration error (the function must not start half-configured).
pub async fn read_api_key(sdk: &aws_config::SdkConfig, config: &ProviderConfig) -> Result<Option<ApiKey>, ConfigError> {
    let Some(arn) = &config.secret_arn else { return Ok(None) };
    let text = SecretReader::new(sdk, arn).read().await.map_err(|e| ConfigError::Invalid {
        name: "PROVIDER_SECRET_ARN",
        reason: format!("the provider secret cannot be read: {e}"),
    })?;
    Ok(ApiKey::from_secret(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ProviderConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProviderConfig::read(&Env::new(ENVIRONMENT, move |k| {
            pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        }))
    }

    #[test]
    fn defaults_to_kie_at_its_host_without_a_key() {
        let c = config(&[]).unwrap();
        assert_eq!((c.provider, c.base_url.as_str(), c.secret_arn), (Provider::Kie, "https://api.kie.ai", None));
        let c = config(&[("PROVIDER", "SunoApi"), ("PROVIDER_SECRET_ARN", "arn:x")]).unwrap();
        assert_eq!((c.provider, c.base_url.as_str()), (Provider::SunoApi, "https://api.sunoapi.org"));
        assert_eq!(c.secret_arn.as_deref(), Some("arn:x"));
        assert!(matches!(config(&[("PROVIDER", "suno")]), Err(ConfigError::Invalid { name: "PROVIDER", .. })));
    }

    #[test]
    fn the_base_url_is_https_or_loopback_http() {
        for ok in ["https://api.kie.ai/", "http://127.0.0.1:3002", "http://localhost:9/prefix", "http://[::1]:3002"] {
            assert!(config(&[("PROVIDER_BASE_URL", ok)]).is_ok(), "{ok}");
        }
        assert_eq!(config(&[("PROVIDER_BASE_URL", "https://api.kie.ai/")]).unwrap().base_url, "https://api.kie.ai");
        for bad in ["http://api.kie.ai", "http://127.0.0.1.nip.io", "ftp://127.0.0.1", "https://u:p@api.kie.ai", "kie"]
        {
            let err = config(&[("PROVIDER_BASE_URL", bad)]).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: "PROVIDER_BASE_URL", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_key_is_the_secret_text_or_its_api_key_and_never_shown() {
        let plain = ApiKey::from_secret(&SecretText::new(" sk-123 \n")).unwrap();
        assert_eq!(plain.expose(), "sk-123");
        assert_eq!(format!("{plain:?}"), "ApiKey(<redacted>)");
        let json = ApiKey::from_secret(&SecretText::new(r#"{"api_key": "sk-456"}"#)).unwrap();
        assert_eq!(json.expose(), "sk-456");
        for off in ["", "  ", r#"{"api_key": ""}"#, r#"{"other": 1}"#] {
            assert!(ApiKey::from_secret(&SecretText::new(off)).is_none(), "{off:?}");
        }
    }
}
