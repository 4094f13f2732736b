//! The results function over a test environment's table and bucket.

use std::time::Duration;

use crate::TestEnv;

impl TestEnv {
    /// The results function (GET and PUT `/tasks/<id>`) over this environment, its links valid
    /// for `link_expiry`.
    pub fn results_app(&self, link_expiry: Duration) -> stemvault_results::App {
        let config = stemvault_results::Config {
            table_name: self.resources.table_name.clone(),
            bucket_name: self.resources.bucket_name.clone(),
            download_url_expiry: link_expiry,
            reconcile_after: Duration::from_secs(600),
        };
        stemvault_results::App::new(config, &self.config)
    }
}
