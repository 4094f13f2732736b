//! The sweeper Lambda's application object: configuration and AWS clients, built once.

use stemvault_vault::Now;

use crate::aws::claims::ClaimPorts;
use crate::error::StoreError;
use crate::sweep::config::SweeperConfig;
use crate::sweep::{SweepReport, SweepSettings, sweep};

/// The sweeper with its clients.
pub struct SweeperApp {
    ports: ClaimPorts,
    settings: SweepSettings,
}

impl SweeperApp {
    pub fn new(config: SweeperConfig, sdk: &aws_config::SdkConfig) -> SweeperApp {
        let settings = SweepSettings { grace: config.grace, ..SweepSettings::default() };
        SweeperApp { ports: ClaimPorts::new(sdk, &config.table_name, &config.queue_url), settings }
    }

    /// One sweep that stops taking tasks after `budget` (the local runner's clock).
    pub async fn run_within(&self, run_id: &str, budget: std::time::Duration) -> Result<SweepReport, StoreError> {
        self.run(run_id, Now::system().plus(budget)).await
    }

    /// One sweep, its claims named `sweeper-<run_id>`, stopping by `stop_at`.
    pub async fn run(&self, run_id: &str, stop_at: Now) -> Result<SweepReport, StoreError> {
        let span = tracing::info_span!("sweep", run_id);
        let _entered = span.enter();
        let report = sweep(&self.ports, &self.settings, &format!("sweeper-{run_id}"), stop_at).await?;
        tracing::info!(
            tasks_checked = report.tasks_checked,
            files_requeued = report.files_requeued,
            tasks_failed = report.tasks_failed,
            stopped_early = report.stopped_early,
            "sweep done"
        );
        Ok(report)
    }
}
