//! Helpers for the download tests and benchmark: task records written straight to the table
//! as item collections (as ingest would have left them), SQS deliveries built the way Lambda builds them from
//! real queue messages, and the download function configured for a local file server.

use std::collections::HashMap;
use std::time::Duration;
use stemvault_aws::FromEnv;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use stemvault_aws::TaskTable;
use stemvault_download::Config;
use stemvault_download::aws::AwsPorts;
use stemvault_download::source::HttpSource;
use stemvault_download::source_policy::SourcePolicy;
use stemvault_vault::{FileEntry, FileJob, FileStatus, TaskRecord, Timestamp, VaultState};
use suno_callbacks::{Family, Stage, TaskId, s3_key};

use crate::TestEnv;

/// A task record whose files (name, url) are all `queued` (their names in the task item's
/// `queued` set), keys as ingest computes them.
pub fn queued_record(task_id: &str, family: Family, files: &[(&str, &str)]) -> TaskRecord {
    let id = TaskId::parse(task_id).expect("a valid task id");
    // Received now: the reconciler and the sweeper judge a task's age by the real clock.
    let received = Timestamp::now();
    let files = files
        .iter()
        .map(|(name, url)| {
            let entry = FileEntry {
                status: FileStatus::Queued,
                ..FileEntry::pending(url, s3_key::file_key(&id, name, url), Stage::Complete)
            };
            ((*name).to_owned(), entry)
        })
        .collect();
    TaskRecord {
        files,
        vault: VaultState::Pending,
        open: Some(stemvault_vault::OPEN_MARKER.into()),
        ..TaskRecord::new(task_id, family, Stage::Complete, 200, "success", received)
    }
}

/// The job of one file of a record, as ingest sends it.
pub fn job_of(record: &TaskRecord, name: &str) -> FileJob {
    let file = &record.files[name];
    FileJob { task_id: record.task_id.clone(), name: name.to_owned(), url: file.url.clone(), key: file.key.clone() }
}

impl TestEnv {
    pub fn tasks(&self) -> TaskTable {
        TaskTable::new(self.dynamo.clone(), &self.resources.table_name)
    }

    /// Write a new record: its file items, then its task item.
    pub async fn put_record(&self, record: &TaskRecord) {
        self.tasks().save(None, record).await.expect("put the task record");
    }

    /// Rewrite the stored record `before` (as read) as `after`: the items that changed, each
    /// conditional on what was read.
    pub async fn rewrite_record(&self, before: &TaskRecord, after: &TaskRecord) {
        self.tasks().save(Some(before), after).await.expect("rewrite the task record");
    }

    /// What a request adding or reopening files writes before its file items
    /// (`items::MarkOpen`, the adapter's own write): `open`, the request's `last_received_at`
    /// and the add fence (the next generation, and the mark's time), the version left as it is.
    pub async fn mark_open(&self, task_id: &str) {
        let read = self.task_record(task_id).await;
        let now = Timestamp::now();
        let mark = stemvault_vault::items::MarkOpen {
            version: read.version,
            read: read.add_fence(),
            last_received_at: AttributeValue::S(now.rfc3339()).into(),
            generation: read.generation + 1,
            at: (now.unix_ms as u64).max(read.adding_at.map_or(0, |at| at + 1)),
        };
        let marked = self.tasks().mark_open(task_id, &mark).await.expect("mark the task open");
        assert_eq!(marked, stemvault_vault::Conditional::Applied, "marked at the version read");
    }

    /// The task record, which must exist (its item collection, one strongly consistent Query).
    pub async fn task_record(&self, task_id: &str) -> TaskRecord {
        self.tasks().load(task_id).await.expect("read the task record").expect("the task record exists")
    }

    /// The download function's configuration for this environment.
    pub fn download_config(&self, allowed_sources: &str, max_file_bytes: Option<u64>) -> Config {
        let mut env: HashMap<&str, String> = self.resource_vars().into_iter().collect();
        env.insert("ALLOWED_SOURCE_HOSTS", allowed_sources.to_owned());
        if let Some(max) = max_file_bytes {
            env.insert("MAX_FILE_BYTES", max.to_string());
        }
        Config::from_lookup(|k| env.get(k).cloned()).expect("a valid download configuration")
    }

    /// The download function as it starts in Lambda over this environment, fetching from
    /// `allowed_sources` ([`Self::download_config`]).
    pub async fn download_app(&self, allowed_sources: &str, max_file_bytes: Option<u64>) -> stemvault_download::App {
        self.download_app_with(self.download_config(allowed_sources, max_file_bytes)).await
    }

    /// The download function as it starts in Lambda with `config`.
    pub async fn download_app_with(&self, config: Config) -> stemvault_download::App {
        stemvault_download::App::new(config, &self.config).await.expect("the downloader starts")
    }

    /// The download function's ports over this environment, for calling one of them alone
    /// (fetching only from the provider's hosts).
    pub fn download_ports(&self) -> AwsPorts {
        let policy = SourcePolicy::parse("*.suno.ai").expect("a valid source policy");
        let source = HttpSource::new(policy).expect("the HTTP client starts");
        AwsPorts::new(self.download_config("*.suno.ai", None), &self.config, source)
    }

    /// Send raw message bodies to the download queue.
    pub async fn send_bodies(&self, bodies: &[String]) {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(&self.resources.queue_url)
                .message_body(body)
                .send()
                .await
                .expect("send a message");
        }
    }

    pub async fn send_jobs(&self, jobs: &[FileJob]) {
        let bodies: Vec<String> = jobs.iter().map(|j| serde_json::to_string(j).expect("job JSON")).collect();
        self.send_bodies(&bodies).await;
    }

    /// Receive exactly `count` messages (waiting up to 10 s), invisible for `visibility`
    /// seconds, as one Lambda SQS event.
    pub async fn receive_event(&self, count: usize, visibility: i32) -> SqsEvent {
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while records.len() < count && tokio::time::Instant::now() < deadline {
            let wanted = i32::try_from((count - records.len()).min(10)).unwrap_or(10);
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.resources.queue_url)
                .max_number_of_messages(wanted)
                .visibility_timeout(visibility)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive messages");
            records.extend(out.messages.unwrap_or_default().into_iter().map(|m| self.lambda_message(m)));
        }
        assert_eq!(records.len(), count, "messages on the queue");
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    fn lambda_message(&self, m: aws_sdk_sqs::types::Message) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = m.message_id;
        message.receipt_handle = m.receipt_handle;
        message.body = m.body;
        message.attributes =
            m.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
        message.event_source = Some("aws:sqs".into());
        message.event_source_arn = Some(self.resources.queue_arn.clone());
        message
    }

    /// One batch of the download function as Lambda runs it: `event` handled with a minute
    /// left, then [`TestEnv::finish_batch`]. Its answer.
    pub async fn run_download(&self, app: &stemvault_download::App, event: &SqsEvent) -> SqsBatchResponse {
        let response = app.handle_batch(event.clone(), std::time::Instant::now() + Duration::from_secs(60)).await;
        self.finish_batch(event, &response).await;
        response
    }

    /// Batches of `app` over the download queue until no message is visible, each received
    /// invisible for `visibility` seconds (at most 10 batches); their answers.
    pub async fn download_all(&self, app: &stemvault_download::App, visibility: i32) -> Vec<SqsBatchResponse> {
        self.download_batches(app, visibility, false).await
    }

    /// As [`Self::download_all`], each batch's failed messages run again at once until an
    /// expired URL among them is failed so ([`Self::run_until_expiry_confirmed`]); the
    /// answers of each batch's last run.
    pub async fn download_all_confirming_expiry(&self, app: &stemvault_download::App) -> Vec<SqsBatchResponse> {
        self.download_batches(app, 60, true).await
    }

    async fn download_batches(
        &self,
        app: &stemvault_download::App,
        visibility: i32,
        confirming_expiry: bool,
    ) -> Vec<SqsBatchResponse> {
        let mut responses = Vec::new();
        for _ in 0..10 {
            let (visible @ 1.., _) = self.queue_depth().await else { break };
            let event = self.receive_event(visible.min(10) as usize, visibility).await;
            // On the heap: a test's own future would outgrow a test thread's stack.
            let mut response = Box::pin(self.run_download(app, &event)).await;
            if confirming_expiry {
                response = Box::pin(self.run_until_expiry_confirmed(app, event, response)).await;
            }
            responses.push(response);
        }
        responses
    }

    /// The messages of `event` that `response` failed, made visible at once (as if their
    /// retry delay had passed), received and run again by `app`, until none fails or they
    /// were received as often as it takes for an expired URL to be failed so
    /// ([`stemvault_download::domain::EXPIRY_CONFIRMED_ON_RECEIVE`]); the last answer.
    pub async fn run_until_expiry_confirmed(
        &self,
        app: &stemvault_download::App,
        event: SqsEvent,
        response: SqsBatchResponse,
    ) -> SqsBatchResponse {
        let (mut event, mut response) = (event, response);
        for _ in 1..stemvault_download::domain::EXPIRY_CONFIRMED_ON_RECEIVE {
            let failed: Vec<&SqsMessage> = event
                .records
                .iter()
                .filter(|m| {
                    response
                        .batch_item_failures
                        .iter()
                        .any(|f| Some(f.item_identifier.as_str()) == m.message_id.as_deref())
                })
                .collect();
            if failed.is_empty() {
                break;
            }
            for message in &failed {
                self.make_visible(message).await;
            }
            event = self.receive_event(failed.len(), 60).await;
            response = Box::pin(self.run_download(app, &event)).await;
        }
        response
    }

    /// What Lambda does after a batch: delete every message not reported as failed.
    pub async fn finish_batch(&self, event: &SqsEvent, response: &SqsBatchResponse) {
        for message in &event.records {
            let id = message.message_id.as_deref().unwrap_or_default();
            if response.batch_item_failures.iter().any(|f| f.item_identifier == id) {
                continue;
            }
            self.sqs
                .delete_message()
                .queue_url(&self.resources.queue_url)
                .receipt_handle(message.receipt_handle.as_deref().unwrap_or_default())
                .send()
                .await
                .expect("delete a message");
        }
    }

    /// Make a message visible again now (as if its retry delay had passed).
    pub async fn make_visible(&self, message: &SqsMessage) {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.resources.queue_url)
            .receipt_handle(message.receipt_handle.as_deref().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await
            .expect("change visibility");
    }

    /// Messages on the queue, visible or not.
    pub async fn queue_depth(&self) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.resources.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attributes = out.attributes.unwrap_or_default();
        let get = |a: A| {
            let value = attributes.get(&a).unwrap_or_else(|| panic!("no {a} in the queue's attributes"));
            value.parse().unwrap_or_else(|_| panic!("{a} is {value:?}"))
        };
        (get(A::ApproximateNumberOfMessages), get(A::ApproximateNumberOfMessagesNotVisible))
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub async fn open_multipart_uploads(&self) -> usize {
        let out = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.resources.bucket_name)
            .send()
            .await
            .expect("list multipart uploads");
        out.uploads.map_or(0, |u| u.len())
    }
}
