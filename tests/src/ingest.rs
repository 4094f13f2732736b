//! The ingest function over a test environment's resources.

use std::time::Duration;

use stemvault_aws::secrets::SecretText;
use stemvault_ingest::secret::CallbackSecret;

use crate::TestEnv;

impl TestEnv {
    /// The ingest function as it starts in Lambda over this environment (clients built, its
    /// callback secret read), checking signatures by `hmac_key` alone; bodies up to 1 MiB.
    pub async fn ingest_app(&self, hmac_key: &str) -> stemvault_ingest::App {
        let config = self.ingest_config(hmac_key).await;
        stemvault_ingest::App::new(config, &self.config).await
    }

    /// The ingest function's configuration over this environment, its callback secret (in the
    /// emulator's Secrets Manager) holding `hmac_key` alone; bodies up to 1 MiB.
    pub async fn ingest_config(&self, hmac_key: &str) -> stemvault_ingest::Config {
        let name = format!("{}-callback", self.resources.table_name);
        let secret = CallbackSecret { hmac_keys: vec![hmac_key.into()], callback_tokens: vec![] };
        let arn = stemvault_aws::secrets::put_secret(&self.config, &name, &SecretText::new(secret.to_json()))
            .await
            .expect("the callback secret");
        stemvault_ingest::Config {
            table_name: self.resources.table_name.clone(),
            bucket_name: self.resources.bucket_name.clone(),
            queue_url: self.resources.queue_url.clone(),
            callback_secret_arn: arn,
            allow_unauthenticated: false,
            max_body_bytes: 1024 * 1024,
            signature_tolerance: Duration::from_secs(300),
            reconcile_after: Duration::from_secs(600),
            event_bus_name: self.resources.event_bus_name.clone(),
        }
    }
}
