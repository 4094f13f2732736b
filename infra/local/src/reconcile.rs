//! The reconciler, locally: the provider it polls (`PROVIDER_BASE_URL` and `PROVIDER_API_KEY`
//! when set; otherwise a built-in fake provider on 127.0.0.1, `PORT+2` when free, with a
//! generated key), the key put in the emulator's Secrets Manager as `<base>-provider` (as the
//! reconciler reads it in AWS, through `PROVIDER_SECRET_ARN`), and a run every
//! [`RECONCILE_INTERVAL`] (the deployed schedule: every 2 minutes).

use std::time::Duration;

use stemvault_aws::secrets::{SecretText, put_secret};
use stemvault_tests::fake_provider::FakeProvider;
use tokio::net::TcpListener;

use crate::settings::{Overlay, non_empty};

/// How often the local runner reconciles.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(15);
/// `RECONCILE_AFTER_SECONDS` under `make run` unless set: a registered task is polled soon.
pub const LOCAL_RECONCILE_AFTER_SECONDS: &str = "5";

/// What the runner set up for the reconciler.
pub struct ProviderSetup {
    /// The built-in fake provider (no `PROVIDER_BASE_URL` given).
    pub fake: Option<FakeProvider>,
    /// Where the reconciler polls.
    pub base_url: String,
    /// Whether a key is configured (the user's, or the fake provider's generated one).
    pub has_key: bool,
}

/// Set the provider up and add its settings to `overlay`, before any function reads its
/// configuration: `PROVIDER_BASE_URL`, `PROVIDER_SECRET_ARN` (when there is a key),
/// `RECONCILE_AFTER_SECONDS` (unless set), and the fake provider's origin among the allowed
/// download sources (its answers point at files it serves).
pub async fn prepare(
    sdk: &aws_config::SdkConfig,
    base: &str,
    http_port: u16,
    overlay: &mut Overlay,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ProviderSetup, String> {
    let mut key = non_empty(env, "PROVIDER_API_KEY");
    let (fake, base_url) = match non_empty(env, "PROVIDER_BASE_URL") {
        Some(url) => (None, url),
        None => {
            let generated = key.get_or_insert_with(|| format!("local-provider-{}", uuid::Uuid::new_v4().simple()));
            let listener = match TcpListener::bind(("127.0.0.1", http_port.saturating_add(2))).await {
                Ok(listener) => listener,
                Err(_) => TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("the fake provider: {e}"))?,
            };
            let fake = FakeProvider::on(listener, generated);
            let origin = fake.origin();
            overlay.allow_source(&origin);
            overlay.set("PROVIDER_BASE_URL", origin.clone());
            (Some(fake), origin)
        }
    };
    if let Some(key) = &key {
        // As the stack's secret holds it (template.yaml: `{"api_key": ...}`), not as bare text.
        let secret = SecretText::new(serde_json::json!({ "api_key": key }).to_string());
        let arn = put_secret(sdk, &format!("{base}-provider"), &secret).await.map_err(|e| e.to_string())?;
        overlay.set("PROVIDER_SECRET_ARN", arn);
    }
    if non_empty(env, "RECONCILE_AFTER_SECONDS").is_none() {
        overlay.set("RECONCILE_AFTER_SECONDS", LOCAL_RECONCILE_AFTER_SECONDS);
    }
    Ok(ProviderSetup { fake, base_url, has_key: key.is_some() })
}
