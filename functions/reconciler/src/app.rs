//! The Lambda-facing side: one scheduled event in, one reconciliation run, its [`Outcome`] out.
//! The provider's API key is read at start-up (without one the function only says so) and
//! again when it may have been rotated ([`stemvault_aws::provider::ProviderKey`]).

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::LambdaEvent;
use stemvault_aws::ConfigError;
use stemvault_vault::{Clock, DEADLINE_MARGIN, Timestamp};
use tracing::Instrument;

use crate::Config;
use crate::aws::AwsPorts;
use crate::domain::{Outcome, Settings, reconcile};
use crate::error::ReconcileError;
use crate::provider::HttpProvider;
use crate::replay::{HeldTasks, MAX_REPLAYS, Replayed, replay_parked, replay_until};
use crate::request_spacing::RequestSpacing;

/// The function's timeout (template.yaml's `ReconcilerFunction`; a test holds the two
/// together): what the local runner gives a scheduled run, as Lambda does.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(90);

/// Stop taking tasks this long before the invocation's deadline: the margin every function
/// keeps, one poll and one accept more, and putting a failed task behind.
pub const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(DEADLINE_MARGIN.as_secs() + 24);

// The last task a run starts ends (put behind if it failed), at the latest, within the margin
// before the deadline; so does the last replay, and the due list's read.
const _: () = assert!(
    crate::domain::TASK_BUDGET.as_secs() + crate::domain::PUT_BEHIND_BUDGET.as_secs() + DEADLINE_MARGIN.as_secs()
        <= STOP_BEFORE_DEADLINE.as_secs()
);
const _: () = assert!(crate::replay::REPLAY_BUDGET.as_secs() <= crate::domain::TASK_BUDGET.as_secs());
// Putting a failed task behind outlasts a stalled attempt, so that the SDK's second one can land.
const _: () = assert!(crate::domain::PUT_BEHIND_BUDGET.as_millis() > stemvault_aws::ATTEMPT_TIMEOUT.as_millis());

/// The reconciler with its clients, built once per instance.
pub struct App {
    ports: AwsPorts,
    /// `polls` false without an API key: runs replay parked callbacks and give tasks up in
    /// time, but poll nothing.
    settings: Settings,
    /// Tasks whose parked callbacks wait for their record to be fixed (across warm runs).
    held: HeldTasks,
}

impl App {
    /// Build the clients and read the provider's API key (at start-up; an empty secret turns
    /// polling off until the next cold start, an unreadable one holds polls back until a read
    /// brings a key: replaying parked callbacks and giving tasks up need none).
    pub async fn new(config: Config, sdk: &aws_config::SdkConfig) -> Result<App, ConfigError> {
        let key = stemvault_aws::provider::read_provider_key(sdk, &config.provider, crate::LOGICAL_NAME).await;
        let provider = match key {
            Some(key) => {
                let spacing = RequestSpacing::per_minute(config.polls_per_minute);
                Some(HttpProvider::new(&config.provider.base_url, Arc::new(key), spacing)?)
            }
            None => {
                tracing::warn!(
                    "no provider API key (PROVIDER_SECRET_ARN unset, or its secret empty): reconciliation is off; \
                     registered tasks and tasks whose callback is missing are not polled, only given up in time"
                );
                None
            }
        };
        let key_source = match &config.provider.secret_arn {
            Some(arn) => format!("the provider secret {arn} (PROVIDER_API_KEY locally)"),
            None => "PROVIDER_API_KEY".into(),
        };
        let on = provider.is_some();
        let settings = Settings {
            accept: stemvault_vault::accept::Settings {
                reconcile_after: config.reconcile_after,
                bucket: config.bucket_name.clone(),
                ..stemvault_vault::accept::Settings::default()
            },
            give_up_after: config.give_up_after,
            key_source,
            polls: on,
            site: config.provider.provider.site(),
            max_tasks: crate::request_spacing::tasks_per_run(config.polls_per_minute),
            ..Settings::default()
        };
        if on {
            tracing::info!(
                provider = config.provider.provider.as_str(),
                // Its host: a gateway's path may hold a key.
                base_url = %stemvault_vault::shown::loggable_str(&config.provider.base_url),
                "reconciliation is on"
            );
        }
        Ok(App { ports: AwsPorts::new(&config, sdk, provider), settings, held: HeldTasks::default() })
    }

    /// Whether a key was configured (runs poll).
    pub fn is_on(&self) -> bool {
        self.settings.polls
    }

    /// One scheduled invocation, stopping `STOP_BEFORE_DEADLINE` before its deadline or
    /// before the next scheduled run, whichever comes first ([`crate::schedule`]).
    pub async fn handle(&self, event: LambdaEvent<serde_json::Value>) -> Result<Outcome, lambda_runtime::Error> {
        let now = self.ports.now();
        let stop_at = crate::schedule::stop_at(&event.payload, event.context.deadline, STOP_BEFORE_DEADLINE, now);
        Ok(self.run(&event.context.request_id, stop_at).await?)
    }

    /// One run that stops taking tasks after `budget` (the tests'; the local runner invokes
    /// [`Self::handle`], as Lambda does).
    pub async fn run_within(&self, run_id: &str, budget: Duration) -> Result<Outcome, ReconcileError> {
        self.run(run_id, self.ports.now().plus(budget)).await
    }

    /// One run, its claims named `reconciler-<run_id>`, stopping by `stop_at`: the parked
    /// callbacks first (with or without a provider key: replaying needs none), within half of
    /// the run's time so that a backlog after an outage leaves the polls the rest, then the
    /// polls.
    /// A run that could not list the parked callbacks still polls, then fails: its error is
    /// the only sign (no `CallbacksStillParked` is emitted without a listing).
    pub async fn run(&self, run_id: &str, stop_at: Timestamp) -> Result<Outcome, ReconcileError> {
        async {
            let mut unlisted = None;
            let replay_stop = replay_until(self.ports.now(), stop_at);
            let replaying =
                replay_parked(&self.ports, &self.settings.accept, &self.held, run_id, MAX_REPLAYS, replay_stop);
            let replayed = match replaying.await {
                Ok(replayed) => replayed,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the parked callbacks; the next run tries again");
                    unlisted = Some(e);
                    Replayed::default()
                }
            };
            // Without a key too: tasks are still given up when their time comes.
            let polled = reconcile(&self.ports, &self.settings, run_id, stop_at).await?;
            if let Some(e) = unlisted {
                return Err(e.into());
            }
            let outcome = Outcome { replayed, ..polled };
            // An idle run says so at debug level: a schedule that finds nothing every few
            // minutes (seconds, locally) should not fill the log.
            if outcome.is_idle() {
                tracing::debug!("reconciliation done: no task due, no callback parked");
                return Ok(outcome);
            }
            tracing::info!(
                callbacks_replayed = outcome.replayed.callbacks_replayed,
                callbacks_still_parked = outcome.replayed.callbacks_still_parked,
                callbacks_refused = outcome.replayed.callbacks_refused,
                tasks_due = outcome.tasks_due,
                polls = outcome.polls,
                results = outcome.results,
                pending = outcome.pending,
                unanswered = outcome.unanswered,
                unauthorized = outcome.unauthorized,
                unpaid = outcome.unpaid,
                not_found = outcome.not_found,
                abandoned = outcome.abandoned,
                unwatched = outcome.unwatched,
                tasks_failed = outcome.tasks_failed,
                unreadable = outcome.unreadable,
                put_off = outcome.put_off,
                reopened = outcome.reopened,
                left_due = outcome.left_due,
                stopped_early = outcome.stopped_early,
                rate_limited = outcome.rate_limited,
                refused = outcome.refused,
                misdirected = outcome.misdirected,
                not_sent = outcome.not_sent,
                "reconciliation done"
            );
            Ok(outcome)
        }
        .instrument(tracing::error_span!("reconcile", run_id))
        .await
    }
}
