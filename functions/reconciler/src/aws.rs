//! The ports over AWS: the shared claim-and-send adapter ([`TableAndQueue`]: the task table
//! and the download queue), the `reconcile-due` index, the callback body archive, the parked
//! callbacks, and the provider over HTTP; and the function's metrics ([`metrics_of`],
//! CloudWatch's embedded metric format).

use aws_sdk_dynamodb::types::AttributeValue;
use stemvault_aws::archive::BodyArchive;
use stemvault_aws::enqueue::TableAndQueue;
use stemvault_aws::events::EventBus;
use stemvault_aws::metrics::{self, Metric};
use stemvault_aws::table::{Update, n, s, unavailable};
use stemvault_vault::accept::ArchiveBody;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};
use stemvault_vault::items::{PARTITION_KEY, TASK_SK};
use stemvault_vault::{Conditional, RECONCILE_DUE, RECONCILE_DUE_INDEX, StorageError, Timestamp};
use suno_callbacks::{Family, TaskId, s3_key};

use crate::Config;
use crate::domain::{
    AwaitPollTurn, DueTask, EmitMetrics, ListDueTasks, Measure, PollProvider, PostponePoll, ProviderAnswer,
};
use crate::error::StoreError;
use crate::provider::HttpProvider;
use crate::replay::{DeleteParked, ListParked, ReadParked, StillParked};
use stemvault_aws::sdk_error::sdk_error_text;
use stemvault_vault::accept::ParkedBody;

/// Parked callbacks a run left under `parked/` (not recordable yet, left for an operator, or
/// not reached), emitted by every run that could list them, zero too: the
/// `parked-callbacks-stuck` alarm reads a missing count as a reconciler that does not run;
/// dimension `Function`.
pub const CALLBACKS_STILL_PARKED: &str = "CallbacksStillParked";

/// Parked callbacks a run found the table refuses for good (too large, a record it rejects)
/// and moved to their archive key unrecorded; emitted with [`CALLBACKS_STILL_PARKED`], zero
/// too (the zero is what brings its alarm back to OK, as for every count below an alarm reads).
pub const PARKED_CALLBACKS_REFUSED: &str = "ParkedCallbacksRefused";

/// Polls the provider refused for the API key (401/403) in a run; emitted by every run that
/// read the due tasks, zero too, with [`TASKS_GIVEN_UP`] and [`TASKS_NOT_RECONCILED`];
/// dimension `Function`.
pub const POLLS_REFUSED: &str = "PollsRefused";

/// Polls the provider refused for the account's credits (402) in a run; emitted with
/// [`POLLS_REFUSED`].
pub const POLLS_UNPAID: &str = "PollsUnpaid";

/// Polls made in a run; emitted with [`POLLS_REFUSED`].
pub const POLLS: &str = "Polls";

/// Polls in a run that brought no word of their task (no answer, an unreadable one, a rate
/// limit, the provider failing); emitted with [`POLLS_REFUSED`].
pub const POLLS_UNANSWERED: &str = "PollsUnanswered";

/// Tasks a run gave up (`abandoned`: no result in time, or unknown to the provider for a day).
pub const TASKS_GIVEN_UP: &str = "TasksGivenUp";

/// Due tasks a run could not handle (a table error, the task's budget run out, a panic); zero
/// too: the `tasks-not-reconciled` alarm asks whether every run of 15 minutes left some.
pub const TASKS_NOT_RECONCILED: &str = "TasksNotReconciled";

/// How late, in seconds, the oldest due task's poll was when a run read the due tasks (0 with
/// none due); emitted with [`POLLS_REFUSED`].
pub const OLDEST_DUE_TASK_SECONDS: &str = "OldestDueTaskSeconds";

/// The IAM actions of every AWS call the function makes, its shared adapters' included: the
/// `reconcile-due` index and each task's item collection (Query), the task, file and callback
/// items of a polled result and the poll bookkeeping (PutItem), the `queued` set, released
/// claims, redelivery counts and the postponed poll of an unreadable task (UpdateItem), the archived answers (PutObject), the parked
/// callbacks (ListObjectsV2 under `parked/`, authorised by s3:ListBucket; GetObject and
/// DeleteObject), the download and manifest jobs (SendMessageBatch, authorised by
/// sqs:SendMessage), the events of a polled result or a task given up (PutEvents) and the
/// provider secret (GetSecretValue, at start-up and when the key may have been rotated).
pub const AWS_ACTIONS: &[&str] = &[
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "s3:PutObject",
    "s3:ListBucket",
    "s3:GetObject",
    "s3:DeleteObject",
    "sqs:SendMessage",
    "events:PutEvents",
    "secretsmanager:GetSecretValue",
];

/// The task table with its `reconcile-due` index, the download queue, the vault bucket and
/// the provider.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    shared: TableAndQueue,
    archive: BodyArchive,
    s3: aws_sdk_s3::Client,
    bucket: String,
    events: EventBus,
    provider: Option<HttpProvider>,
}

impl AwsPorts {
    /// Build the clients once, at start-up. Without a provider no poll is sent (the app polls
    /// nothing then: `Settings::polls`; it replays parked callbacks and gives tasks up).
    pub fn new(config: &Config, sdk: &aws_config::SdkConfig, provider: Option<HttpProvider>) -> AwsPorts {
        let s3 = stemvault_aws::s3_client(sdk);
        AwsPorts {
            shared: TableAndQueue::new(sdk, &config.table_name, &config.queue_url),
            archive: BodyArchive::new(s3.clone(), &config.bucket_name),
            s3,
            bucket: config.bucket_name.clone(),
            events: EventBus::new(sdk, &config.event_bus_name),
            provider,
        }
    }
}

stemvault_vault::delegate_enqueue_ports!(AwsPorts => shared);

impl ArchiveBody for AwsPorts {
    async fn archive_body(&self, key: &str, body: &[u8]) -> Result<(), StorageError> {
        self.archive.archive_body(key, body).await
    }
}

impl PublishEvents for AwsPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.events.publish_events(events).await
    }
}

impl ListParked for AwsPorts {
    /// One request for up to 1,000 keys; more pages only for a larger `limit`.
    async fn list_parked(&self, after: Option<&str>, limit: usize) -> Result<Vec<ParkedBody>, StoreError> {
        stemvault_aws::parked::list(&self.s3, &self.bucket, s3_key::PARKED_PREFIX, after, limit)
            .await
            .map_err(stemvault_aws::parked::listing_failed)
    }
}

impl StillParked for AwsPorts {
    /// One ListObjectsV2 of `parked/`, the only prefix the role may list.
    async fn still_parked(&self, key: &str) -> Result<bool, StoreError> {
        stemvault_aws::parked::still_listed(&self.s3, &self.bucket, s3_key::PARKED_PREFIX, key)
            .await
            .map_err(stemvault_aws::parked::listing_failed)
    }
}

impl ReadParked for AwsPorts {
    async fn read_parked(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        const GET: &str = "GetObject (parked)";
        let got = match self.s3.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(got) => got,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(unavailable(GET, sdk_error_text(&e))),
        };
        let body = got.body.collect().await.map_err(|e| unavailable(GET, e))?;
        Ok(Some(body.to_vec()))
    }
}

impl DeleteParked for AwsPorts {
    async fn delete_parked(&self, key: &str) -> Result<(), StoreError> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("DeleteObject (parked)", sdk_error_text(&e)))
    }
}

impl ListDueTasks for AwsPorts {
    async fn list_due_tasks(&self, due_by: Timestamp, limit: usize) -> Result<Vec<DueTask>, StoreError> {
        let table = self.shared.table();
        let query = due_tasks_query(due_by);
        let out = table
            .client
            .query()
            .table_name(&table.table_name)
            .index_name(RECONCILE_DUE_INDEX)
            .key_condition_expression(query.condition)
            .set_expression_attribute_names(Some(query.names))
            .set_expression_attribute_values(Some(query.values))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| unavailable("Query (reconcile-due)", sdk_error_text(&e)))?;
        let due_task = |item: &std::collections::HashMap<String, AttributeValue>| {
            let task_id = item.get(PARTITION_KEY)?.as_s().ok()?.clone();
            let reconcile_at = item.get("reconcile_at").and_then(|at| at.as_s().ok()?.parse().ok());
            Some(DueTask { task_id, reconcile_at })
        };
        Ok(out.items().iter().filter_map(due_task).collect())
    }
}

/// The `reconcile-due` index's entries due by `due_by` (its key condition, as the
/// `condition`; no update). Times compare as the stored RFC 3339 text, which sorts as time
/// (one fixed width).
pub fn due_tasks_query(due_by: Timestamp) -> Update {
    let mut u = Update::new("", "#reconcile = :due AND #at <= :now");
    u.name("#reconcile", "reconcile").name("#at", "reconcile_at");
    u.value(":due", s(RECONCILE_DUE)).value(":now", s(&due_by.rfc3339()));
    u
}

/// The update that moves the next poll of a watched task due by `due_by` (and still at
/// `read_version`, when its record was read) to `until`, touching nothing else (not
/// `version`: it may be what cannot be read, and an ADD to it would then fail).
/// `reconcile_at` compares as text: RFC 3339 in one fixed format.
pub fn postpone_poll_update(due_by: Timestamp, read_version: Option<u64>, until: Timestamp) -> Update {
    let mut u = Update::new("SET #at = :until", "#reconcile = :due AND #at <= :due_by");
    u.name("#at", "reconcile_at").name("#reconcile", "reconcile");
    u.value(":until", s(&until.rfc3339())).value(":due", s(RECONCILE_DUE)).value(":due_by", s(&due_by.rfc3339()));
    if let Some(version) = read_version {
        u.condition.push_str(" AND #version = :read");
        u.name("#version", "version").value(":read", n(version));
    }
    u
}

impl PostponePoll for AwsPorts {
    async fn postpone_poll(
        &self,
        task_id: &str,
        due_by: Timestamp,
        read_version: Option<u64>,
        until: Timestamp,
    ) -> Result<Conditional, StoreError> {
        let update = postpone_poll_update(due_by, read_version, until);
        self.shared.table().update("UpdateItem (postpone a poll)", task_id, TASK_SK, update).await
    }
}

impl AwaitPollTurn for AwsPorts {
    async fn await_poll_turn(&self, within: std::time::Duration) -> bool {
        match &self.provider {
            Some(provider) => provider.wait_for_turn(within).await,
            None => true,
        }
    }
}

impl PollProvider for AwsPorts {
    async fn poll_provider(&self, family: Family, task_id: &TaskId) -> ProviderAnswer {
        match &self.provider {
            Some(provider) => provider.poll(family, task_id).await,
            None => ProviderAnswer::NoKey("no provider API key configured (PROVIDER_SECRET_ARN unset)".into()),
        }
    }
}

/// The CloudWatch metrics of one [`Measure`] (names fixed: alarms and the dashboard read them),
/// with dimension `Function` = `function` (the deployed function's name,
/// [`metrics::function_name`]).
pub fn metrics_of(function: &'static str, measure: &Measure) -> (Vec<(&'static str, &'static str)>, Vec<Metric>) {
    let function = (metrics::FUNCTION, function);
    match *measure {
        Measure::ParkedCallbacks { still_parked, refused } => (
            vec![function],
            vec![
                Metric::counted(CALLBACKS_STILL_PARKED, still_parked),
                Metric::counted(PARKED_CALLBACKS_REFUSED, refused),
            ],
        ),
        Measure::Reconciled { polls, unanswered, refused, unpaid, given_up, failed, broken, oldest_due_seconds } => (
            vec![function],
            // Zero too: an alarm reads each of them run by run (a zero is what brings it back
            // to OK); but TasksBroken, whose alarm fills its gaps with zeros.
            [
                Metric::counted(POLLS, polls),
                Metric::counted(POLLS_UNANSWERED, unanswered),
                Metric::counted(POLLS_REFUSED, refused),
                Metric::counted(POLLS_UNPAID, unpaid),
                Metric::counted(TASKS_GIVEN_UP, given_up),
                Metric::counted(TASKS_NOT_RECONCILED, failed),
                Metric::seconds(OLDEST_DUE_TASK_SECONDS, oldest_due_seconds as f64),
            ]
            .into_iter()
            .chain(metrics::without_zeros([Metric::counted(metrics::TASKS_BROKEN, broken)]))
            .collect(),
        ),
    }
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(crate::LOGICAL_NAME), measure);
        metrics::emit(&dimensions, &metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet run sends every value an alarm reads run by run, zeros too, and leaves out a
    /// zero no alarm needs (it would keep a series billed): TasksBroken's, whose alarm fills
    /// its gaps.
    #[test]
    fn a_quiet_run_leaves_out_only_the_zeros_no_alarm_needs() {
        let names = |measure: &Measure| -> Vec<&str> { metrics_of("f", measure).1.iter().map(|m| m.name).collect() };
        assert_eq!(
            names(&Measure::ParkedCallbacks { still_parked: 0, refused: 0 }),
            [CALLBACKS_STILL_PARKED, PARKED_CALLBACKS_REFUSED]
        );
        let run = |broken| Measure::Reconciled {
            polls: 0,
            unanswered: 0,
            refused: 0,
            unpaid: 0,
            given_up: 0,
            failed: 0,
            broken,
            oldest_due_seconds: 0,
        };
        let read_by_alarms = [
            POLLS,
            POLLS_UNANSWERED,
            POLLS_REFUSED,
            POLLS_UNPAID,
            TASKS_GIVEN_UP,
            TASKS_NOT_RECONCILED,
            OLDEST_DUE_TASK_SECONDS,
        ];
        assert_eq!(names(&run(0)), read_by_alarms);
        assert_eq!(names(&run(1)).last(), Some(&metrics::TASKS_BROKEN));
    }

    #[test]
    fn a_postponed_poll_moves_only_a_watched_task_and_touches_nothing_else() {
        let until: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let due_by: Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
        let u = postpone_poll_update(due_by, None, until);
        assert_eq!(u.update, "SET #at = :until");
        assert_eq!(u.condition, "#reconcile = :due AND #at <= :due_by");
        assert_eq!(u.values[":due_by"], AttributeValue::S("2026-12-02T09:00:00.000Z".into()));
        assert_eq!(u.names["#at"], "reconcile_at");
        assert_eq!(u.names["#reconcile"], "reconcile");
        assert_eq!(u.values[":until"], AttributeValue::S(until.rfc3339()));
        assert_eq!(u.values[":due"], AttributeValue::S(RECONCILE_DUE.into()));
        u.assert_well_formed();
        // A record read: only while no write since moved its version (a registration that
        // scheduled its first poll at its family's endpoint keeps that schedule).
        let read = postpone_poll_update(due_by, Some(7), until);
        assert_eq!(read.condition, "#reconcile = :due AND #at <= :due_by AND #version = :read");
        assert_eq!(
            (&read.names["#version"], &read.values[":read"]),
            (&"version".to_owned(), &AttributeValue::N("7".into()))
        );
        read.assert_well_formed();
    }

    #[test]
    fn the_due_tasks_are_those_watched_and_due_by_the_time() {
        let due_by: Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
        let q = due_tasks_query(due_by);
        assert_eq!(q.condition, "#reconcile = :due AND #at <= :now");
        assert_eq!(q.names["#reconcile"], "reconcile");
        assert_eq!(q.names["#at"], "reconcile_at");
        assert_eq!(q.values[":due"], AttributeValue::S(RECONCILE_DUE.into()));
        assert_eq!(q.values[":now"], AttributeValue::S("2026-12-02T09:00:00.000Z".into()));
        q.assert_well_formed();
        assert!(q.update.is_empty());
    }
}
