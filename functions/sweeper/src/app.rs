//! The Lambda-facing side: one scheduled event in, one sweep, its [`Outcome`] out.

use std::time::Duration;

use lambda_runtime::LambdaEvent;
use stemvault_vault::{Clock, DEADLINE_MARGIN, Timestamp};
use tracing::Instrument;

use crate::Config;
use crate::aws::AwsPorts;
use crate::domain::{Outcome, Settings, TASK_BUDGET, sweep};
use crate::error::SweepError;

/// The sweeper with its clients, built once per instance.
pub struct App {
    ports: AwsPorts,
    settings: Settings,
}

/// The function's timeout (template.yaml's `SweeperFunction`; a test holds the two together):
/// what the local runner gives a scheduled run, as Lambda does.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A run stops taking tasks this long before its deadline: the last task it starts has
/// [`TASK_BUDGET`], and the cursor write [`DEADLINE_MARGIN`].
pub const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(DEADLINE_MARGIN.as_secs() + TASK_BUDGET.as_secs());

impl App {
    pub fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        let settings = Settings { grace: config.grace, ..Settings::default() };
        App { ports: AwsPorts::new(&config, sdk), settings }
    }

    /// One scheduled invocation: a sweep that stops taking tasks `STOP_BEFORE_DEADLINE`
    /// before the invocation's deadline, answered with its outcome.
    pub async fn handle(&self, event: LambdaEvent<serde_json::Value>) -> Result<Outcome, lambda_runtime::Error> {
        let stop_at = stemvault_aws::deadline::stop_at(event.context.deadline, STOP_BEFORE_DEADLINE);
        Ok(self.run(&event.context.request_id, stop_at).await?)
    }

    /// One sweep that stops taking tasks after `budget` (the tests'; the local runner invokes
    /// [`Self::handle`], as Lambda does).
    pub async fn run_within(&self, run_id: &str, budget: Duration) -> Result<Outcome, SweepError> {
        self.run(run_id, self.ports.now().plus(budget)).await
    }

    /// One sweep, its claims named `sweeper-<run_id>`, stopping by `stop_at`.
    pub async fn run(&self, run_id: &str, stop_at: Timestamp) -> Result<Outcome, SweepError> {
        let claimant = format!("sweeper-{run_id}");
        async {
            // Boxed: the sweep's future nests deep enough (a task's retries inside its timeout
            // inside the lap) that the binary's main future overflowed the compiler's
            // layout-query depth.
            let outcome = Box::pin(sweep(&self.ports, &self.settings, &claimant, stop_at)).await?;
            // An idle run says so at debug level: a schedule that finds nothing every few
            // minutes (seconds, locally) should not fill the log.
            if outcome.is_idle() {
                tracing::debug!("sweep done: no open task past the grace period");
                return Ok(outcome);
            }
            tracing::info!(
                tasks_checked = outcome.tasks_checked,
                files_requeued = outcome.files_requeued,
                manifests_requested = outcome.manifests_requested,
                tasks_failed = outcome.tasks_failed,
                stopped_early = outcome.stopped_early,
                wrapped = outcome.wrapped,
                "sweep done"
            );
            Ok(outcome)
        }
        .instrument(tracing::error_span!("sweep", run_id))
        .await
    }
}
