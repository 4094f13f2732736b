//! The AWS side of the domain traits: [`AwsPorts`], and [`AWS_ACTIONS`], the IAM actions of
//! every SDK call it makes.
//!
//! The updates of a task's items are built, and tested, in `expressions`.

mod expressions;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use stemvault_aws::TaskTable;
use stemvault_aws::events::EventBus;
use stemvault_aws::metrics::{self, Metric};
use stemvault_aws::table::Item;
use stemvault_aws::table::Updated;
use stemvault_vault::download::ManifestPlan;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};
use stemvault_vault::items;
use stemvault_vault::{
    Clock, Conditional, FileEntry, LeaseEnd, LoadTask, Manifest, StoreError, TaskRecord, Timestamp, VaultState,
};
use suno_callbacks::TaskId;

use crate::config::Config;
use crate::domain::{
    Claim, ClaimAnswer, ClaimFile, DelayMessage, EmitMetrics, Failure, FileWrite, HeldCopy, ManifestFence, Measure,
    RecordFailed, RecordStored, ReleaseFile, SettleTask, SettleWrite, WriteManifest,
};
use crate::error::{FetchError, StorageError};
use crate::existing::{ObjectHead, ReadObject};
use crate::fresh_link::RefreshError;
use crate::source::{ChunkStream, FetchSource, FreshLink, HttpSource, READ_IDLE_TIMEOUT};
use crate::upload::{
    ObjectInfo, ObjectStore, SHA256_METADATA, SOURCE_METADATA, SourceBody, StoredObject, Streamed, UploadedPart,
};
use stemvault_aws::Update;
use stemvault_aws::s3_error::storage_error;
use stemvault_aws::sdk_error::{error_chain, sdk_error_text};

/// The IAM actions of every SDK call [`AwsPorts`] makes: DynamoDB Query (the settle check's
/// read of a task's items, through [`TaskTable::load`]) and UpdateItem (the claim, stored,
/// failed and the release of a file's item, the settle of the task item; no GetItem: no
/// read comes before a claim); S3 PutObject (which also authorises CreateMultipartUpload,
/// UploadPart and CompleteMultipartUpload), AbortMultipartUpload and GetObject (which also
/// authorises HeadObject: reading back a copy an earlier attempt stored, and the manifest's
/// current generation), all on `tasks/*`; SQS ChangeMessageVisibility; EventBridge
/// PutEvents (`Task Vaulted`, on the stack's bus); Secrets Manager GetSecretValue on the
/// provider secret, at start-up and when the key may have been rotated (fresh links, through
/// `stemvault_aws::provider::ProviderKey`). (The SQS event source mapping, not the
/// function, receives and deletes the messages.)
pub const AWS_ACTIONS: &[&str] = &[
    "dynamodb:Query",
    "dynamodb:UpdateItem",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:GetObject",
    "sqs:ChangeMessageVisibility",
    "events:PutEvents",
    "secretsmanager:GetSecretValue",
];

/// The function's clients, built once per Lambda instance.
#[derive(Debug, Clone)]
pub struct AwsPorts {
    table: TaskTable,
    s3: aws_sdk_s3::Client,
    bucket: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    source: HttpSource,
    /// `EVENT_BUS_NAME`: where `Task Vaulted` goes.
    events: EventBus,
}

impl AwsPorts {
    /// The clients `config` names, over `sdk`, fetching sources with `source`.
    pub fn new(config: Config, sdk: &aws_config::SdkConfig, source: HttpSource) -> AwsPorts {
        AwsPorts {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), config.table_name),
            s3: stemvault_aws::s3_client(sdk),
            bucket: config.bucket_name,
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: config.queue_url,
            source,
            events: EventBus::new(sdk, &config.event_bus_name),
        }
    }
}

/// A streamed upload of a file's body, and the completion of a multipart one, run without the
/// SDK's attempt timeout ([`stemvault_aws::ATTEMPT_TIMEOUT`]): a streamed body takes as long
/// as its source takes to send it, and S3 may take minutes to assemble a large object. The
/// connect timeout, the SDK's stalled-stream protection (a body that stops moving), S3's
/// answer to a streamed put once its body is out ([`ANSWER_AFTER_BODY`]) and the batch's
/// deadline bound them.
fn body_upload() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(stemvault_aws::timeouts_without_attempt_limit())
}

/// An upload of a body held in memory (a whole small file's PutObject, a part's UploadPart):
/// each attempt bounded by the body's size ([`buffered_attempt_timeout`]).
fn buffered_upload(bytes: usize) -> aws_sdk_s3::config::Builder {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(stemvault_aws::SDK_CONNECT_TIMEOUT)
        .operation_attempt_timeout(buffered_attempt_timeout(bytes))
        .build();
    aws_sdk_s3::config::Builder::default().timeout_config(timeouts)
}

/// The longest attempt at uploading `bytes` held in memory: an allowance for S3's answer,
/// and the body sent at no less than 1 MiB/s (far below S3's rate from Lambda). Without a
/// bound, an answer that never comes once the body is out (a connection gone silent: the
/// stalled-stream protection watches the body only while it is sent) held the file until
/// the batch's stop, near the 15-minute timeout; given up, the SDK sends the same bytes again
/// (neither request is conditional: an attempt S3 applied but never answered leaves at most a
/// noncurrent version of the same bytes in the versioned bucket).
fn buffered_attempt_timeout(bytes: usize) -> Duration {
    const MIN_BYTES_PER_SECOND: u64 = 1024 * 1024;
    let sending = u64::try_from(bytes).unwrap_or(u64::MAX).saturating_mul(1000) / MIN_BYTES_PER_SECOND;
    ANSWER_AFTER_BODY.saturating_add(Duration::from_millis(sending))
}

impl AwsPorts {
    /// A PutObject of a whole body, with its SHA-256 for S3 to verify and keep.
    fn put_request(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        sha256: [u8; 32],
    ) -> PutObjectFluentBuilder {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_content_type(content_type.map(str::to_owned))
            // The algorithm header too: some S3-compatible stores only keep a checksum they
            // are told the algorithm of. A value set here stops the SDK computing its own.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(BASE64.encode(sha256))
    }

    /// Send the claim holder's last conditional update of the file `name`'s item; refused,
    /// the item as it is (ALL_OLD).
    async fn update_finished_file(
        &self,
        operation: &str,
        task_id: &TaskId,
        name: &str,
        u: Update,
    ) -> Result<FileWrite, StoreError> {
        let sk = items::file_sk(name);
        Ok(match self.table.update_returning(operation, task_id.as_str(), &sk, u, ReturnValue::None).await? {
            Updated::Applied(_) => FileWrite::Applied,
            Updated::Refused(item) => FileWrite::Refused(refused_file(item)?.map(Box::new)),
        })
    }
}

/// The file's item a refused write returned (None: no such file).
fn refused_file(item: Option<Item>) -> Result<Option<FileEntry>, StoreError> {
    item.map(|item| items::read_file_item(item).map(|(_, file)| file)).transpose()
}

stemvault_aws::system_clock!(AwsPorts);

impl LoadTask for AwsPorts {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.table.load(task_id.as_str()).await
    }
}

impl ClaimFile for AwsPorts {
    async fn claim_file(&self, task_id: &TaskId, name: &str, claim: &Claim) -> Result<ClaimAnswer, StoreError> {
        let sk = items::file_sk(name);
        let u = expressions::claim_file(claim);
        Ok(match self.table.update_returning("claim", task_id.as_str(), &sk, u, ReturnValue::AllNew).await? {
            Updated::Applied(item) => ClaimAnswer::Claimed(items::read_file_item(item)?.1),
            Updated::Refused(item) => ClaimAnswer::Refused(refused_file(item)?),
        })
    }
}

impl RecordStored for AwsPorts {
    async fn record_stored(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        stored: &StoredObject,
        stored_at: Timestamp,
    ) -> Result<FileWrite, StoreError> {
        self.update_finished_file("stored", task_id, name, expressions::record_stored(held, stored, stored_at)).await
    }
}

impl RecordFailed for AwsPorts {
    async fn record_failed(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        failure: &Failure<'_>,
    ) -> Result<FileWrite, StoreError> {
        self.update_finished_file("failed", task_id, name, expressions::record_failed(held, failure)).await
    }
}

impl ReleaseFile for AwsPorts {
    async fn release_file(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        error: &str,
    ) -> Result<Conditional, StoreError> {
        let released_at = LeaseEnd::at(self.now());
        let u = expressions::release_file(held, error, released_at);
        // Always within its caller's best-effort bound (a claim given back after a copy stopped).
        self.table.update_quickly("release", task_id.as_str(), &items::file_sk(name), u).await
    }
}

impl SettleTask for AwsPorts {
    async fn settle_task(&self, task_id: &TaskId, plan: &ManifestPlan) -> Result<SettleWrite, StoreError> {
        let u = expressions::settle_task(plan);
        let written = self.table.update_returning("settle", task_id.as_str(), items::TASK_SK, u, ReturnValue::AllOld);
        Ok(match written.await? {
            Updated::Applied(old) => {
                let old: HashMap<String, AttributeValue> = old.into();
                let was = old.get("vault").and_then(|v| v.as_s().ok());
                if was.map(String::as_str) == Some(VaultState::Pending.as_str()) {
                    SettleWrite::Settled
                } else {
                    SettleWrite::Rewritten
                }
            }
            Updated::Refused(_) => SettleWrite::Refused,
        })
    }
}

impl PublishEvents for AwsPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.events.publish_events(events).await
    }
}

impl WriteManifest for AwsPorts {
    fn vault_bucket(&self) -> &str {
        &self.bucket
    }

    async fn write_manifest(
        &self,
        key: &str,
        manifest: &Manifest,
        fence: ManifestFence,
        expected: Option<&str>,
    ) -> Result<Conditional, StorageError> {
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StorageError::transient("PutObject (manifest)", e.to_string()))?;
        let sha256: [u8; 32] = Sha256::digest(&body).into();
        let request = fence.metadata(manifest.stage).into_iter().fold(
            self.put_request(key, Bytes::from(body), Some("application/json"), sha256),
            |request, (name, value)| request.metadata(name, value),
        );
        let request = match expected {
            Some(etag) => request.if_match(etag),
            None => request.if_none_match("*"),
        };
        match request.send().await {
            Ok(_) => Ok(Conditional::Applied),
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let status = e.raw_response().map(|r| r.status().as_u16());
                if manifest_conflict(status, e.code(), expected.is_some()) {
                    return Ok(Conditional::Conflict);
                }
                Err(storage_error("PutObject (manifest)", e))
            }
        }
    }
}

/// Whether a conditional manifest write's refusal is the condition's: 412, the object is not
/// the one read (or, `If-None-Match`, one is there); 409, a concurrent conditional write; 404
/// `NoSuchKey` to an `If-Match`, the object read is gone. Not another 404 (`NoSuchBucket`: a
/// storage failure, not a manifest that kept changing).
fn manifest_conflict(status: Option<u16>, code: Option<&str>, if_match: bool) -> bool {
    match status {
        Some(409 | 412) => true,
        Some(404) => if_match && matches!(code, None | Some("NoSuchKey")),
        _ => false,
    }
}

impl ReadObject for AwsPorts {
    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
        let head =
            self.s3.head_object().bucket(&self.bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await;
        let out = match head {
            Ok(out) => out,
            // 404, or the 403 S3 answers for a missing key to a role without s3:ListBucket.
            Err(e) if matches!(e.raw_response().map(|r| r.status().as_u16()), Some(403 | 404)) => return Ok(None),
            // Any other: the lookup could not tell, so it is retried. A HEAD's answer has no body,
            // hence no error code to tell a refusal for good from a passing one (an expired
            // token answers 400 too); read as permanent, a copy an earlier attempt left would
            // go unseen while its source, expired, failed the file for good.
            Err(e) => {
                return Err(StorageError::transient("HeadObject", sdk_error_text(&e)));
            }
        };
        Ok(Some(ObjectHead {
            bytes: out.content_length.and_then(|len| u64::try_from(len).ok()).unwrap_or_default(),
            content_type: out.content_type,
            etag: out.e_tag.unwrap_or_default(),
            checksum_sha256: out.checksum_sha256,
            metadata: out.metadata.unwrap_or_default(),
        }))
    }

    async fn hash_object(&self, key: &str, etag: &str) -> Result<(u64, [u8; 32]), StorageError> {
        let out = self.s3.get_object().bucket(&self.bucket).key(key).if_match(etag).send().await;
        let mut body = out.map_err(|e| storage_error("GetObject", e))?.body;
        let (mut bytes, mut hasher) = (0u64, Sha256::new());
        let read_error = |e| StorageError::transient("GetObject", error_chain(&e));
        while let Some(chunk) = body.try_next().await.map_err(read_error)? {
            bytes += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((bytes, hasher.finalize().into()))
    }
}

/// Files stored (Count); dimension `Function`.
pub const FILES_STORED: &str = "FilesStored";
/// The bytes of the files stored (Bytes); dimension `Function`.
pub const BYTES_STORED: &str = "BytesStored";
/// How long a copy made now took (Seconds; not for a copy an earlier attempt made);
/// dimension `Function`.
pub const COPY_SECONDS: &str = "CopySeconds";
/// Files failed for good (Count); dimensions `Function` and `Reason`
/// ([`crate::error::CopyError::failure_code`], or `dead_lettered`).
pub const FILES_FAILED: &str = "FilesFailed";
/// From a task's first callback to a settle that published `Task Vaulted` (Seconds);
/// dimension `Function`.
pub const SECONDS_TO_SETTLED: &str = "SecondsToSettled";
/// Settle checks that failed (Count); dimensions `Function` and `Reason`
/// ([`crate::error::DownloadError::settle_failure_reason`]).
pub const SETTLE_CHECKS_FAILED: &str = "SettleChecksFailed";

/// The CloudWatch metrics of one [`Measure`] (names fixed: alarms and the dashboard read
/// them), all with dimension `Function` = `function` (the deployed function's name,
/// [`metrics::function_name`]).
pub fn metrics_of(function: &'static str, measure: &Measure) -> (Vec<(&'static str, &'static str)>, Vec<Metric>) {
    let function = (metrics::FUNCTION, function);
    match measure {
        Measure::Stored { bytes, copy_seconds } => {
            let mut metrics = vec![Metric::count(FILES_STORED), Metric::bytes(BYTES_STORED, *bytes)];
            metrics.extend(copy_seconds.map(|s| Metric::seconds(COPY_SECONDS, s)));
            (vec![function], metrics)
        }
        Measure::Failed { reason } => (vec![function, (metrics::REASON, reason)], vec![Metric::count(FILES_FAILED)]),
        Measure::Settled { seconds } => (vec![function], vec![Metric::seconds(SECONDS_TO_SETTLED, *seconds)]),
        Measure::SettleCheckFailed { reason } => {
            (vec![function, (metrics::REASON, reason)], vec![Metric::count(SETTLE_CHECKS_FAILED)])
        }
    }
}

impl EmitMetrics<Measure> for AwsPorts {
    fn emit_metrics(&self, measure: &Measure) {
        let (dimensions, metrics) = metrics_of(metrics::function_name(crate::LOGICAL_NAME), measure);
        metrics::emit(&dimensions, &metrics);
    }
}

impl DelayMessage for AwsPorts {
    async fn delay_message(&self, receipt_handle: &str, delay: Duration) -> Result<(), stemvault_vault::QueueError> {
        stemvault_aws::sqs_batch::delay_message(&self.sqs, &self.queue_url, receipt_handle, delay).await
    }
}

impl FetchSource for AwsPorts {
    async fn open(&self, url: &str, max_bytes: u64) -> Result<SourceBody<ChunkStream>, FetchError> {
        self.source.open(url, max_bytes).await
    }
}

impl FreshLink for AwsPorts {
    async fn fresh_link(&self, url: &str) -> Option<Result<String, RefreshError>> {
        self.source.fresh_link(url).await
    }
}

/// A streamed source body as the SDK takes it: an HTTP body (which the SDK wants `Sync`; the
/// mutex is never locked, only reached through `&mut`).
struct StreamedBody {
    chunks: std::sync::Mutex<Streamed>,
    /// The bytes not yet taken: the SDK, which knows the length, may stop reading at it
    /// without asking for the end.
    left: u64,
    /// Told when the last byte (or the end) is taken: S3's answer is due from then
    /// ([`answer_overdue`]).
    ended: Option<tokio::sync::oneshot::Sender<()>>,
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = FetchError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, FetchError>>> {
        let this = self.get_mut();
        let chunks = this.chunks.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        let polled = chunks.as_mut().poll_next(cx);
        let taken = match &polled {
            std::task::Poll::Ready(Some(Ok(chunk))) => u64::try_from(chunk.len()).unwrap_or(u64::MAX),
            std::task::Poll::Ready(None) => this.left,
            _ => 0,
        };
        this.left = this.left.saturating_sub(taken);
        if this.left == 0
            && let Some(ended) = this.ended.take()
        {
            let _ = ended.send(());
        }
        polled.map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }
}

/// How long S3 may take to answer an upload once its body is out: a buffered body's attempt
/// allows it beside the sending ([`buffered_attempt_timeout`]). The streamed put runs without an attempt timeout
/// (its body takes as long as its source), and the stalled-stream protection watches the body
/// only while it is sent: an answer that never came (a connection gone silent) held the file,
/// and its batch, until the batch's stop near the 15-minute timeout.
const ANSWER_AFTER_BODY: Duration = Duration::from_secs(30);

/// Done [`ANSWER_AFTER_BODY`] after the streamed body's end; never when the body was dropped
/// unsent (the put's own error comes instead).
async fn answer_overdue(body_sent: tokio::sync::oneshot::Receiver<()>) {
    match body_sent.await {
        Ok(()) => tokio::time::sleep(ANSWER_AFTER_BODY).await,
        Err(_) => std::future::pending().await,
    }
}

impl ObjectStore for AwsPorts {
    async fn put_streamed(
        &self,
        key: &str,
        body: Streamed,
        len: u64,
        info: ObjectInfo<'_>,
    ) -> Result<[u8; 32], StorageError> {
        let (ended, body_sent) = tokio::sync::oneshot::channel();
        let body = StreamedBody { chunks: std::sync::Mutex::new(body), left: len, ended: Some(ended) };
        let body = SdkBody::from_body_1_x(body);
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .set_content_type(info.content_type.map(str::to_owned))
            .metadata(SOURCE_METADATA, info.source_sha256)
            // The SDK computes the body's SHA-256 as it sends it, and sends it after the body
            // (aws-chunked, `x-amz-trailer`); S3 checks it and keeps it as the object's.
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::new(body))
            .customize()
            // The body is the source's, as it arrives: while the source pauses, the upload waits
            // for it. The SDK's upload stall protection (5 s by default) would fail the put
            // before the source's own read-idle timeout, and name S3 for it.
            .config_override(
                body_upload().stalled_stream_protection(
                    StalledStreamProtectionConfig::enabled()
                        .grace_period(READ_IDLE_TIMEOUT + Duration::from_secs(5))
                        .build(),
                ),
            )
            // The SDK signs it STREAMING-UNSIGNED-PAYLOAD-TRAILER (the trailing checksum guards
            // the body; over https TLS does too), not hashing it a second time to sign it.
            .disable_payload_signing()
            .send();
        let out = tokio::select! {
            out = put => out.map_err(|e| storage_error("PutObject", e))?,
            () = answer_overdue(body_sent) => {
                let why = format!("S3 did not answer within {} s of the body's end", ANSWER_AFTER_BODY.as_secs());
                return Err(StorageError::transient("PutObject", why));
            }
        };
        let digest = out.checksum_sha256.as_deref().and_then(crate::existing::full_object_sha256);
        digest.ok_or_else(|| StorageError::transient("PutObject", "S3 answered no ChecksumSHA256 for the object"))
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        info: ObjectInfo<'_>,
        sha256: [u8; 32],
    ) -> Result<(), StorageError> {
        let bytes = body.len();
        self.put_request(key, body, info.content_type, sha256)
            .metadata(SOURCE_METADATA, info.source_sha256)
            .metadata(SHA256_METADATA, hex::encode(sha256))
            .customize()
            .config_override(buffered_upload(bytes))
            // UNSIGNED-PAYLOAD instead of a second SHA-256 of the body: the signed
            // `x-amz-checksum-sha256` header is that same digest, and S3 verifies the body
            // against it (over plain http too).
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| storage_error("PutObject", e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str, info: ObjectInfo<'_>) -> Result<String, StorageError> {
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(info.content_type.map(str::to_owned))
            .metadata(SOURCE_METADATA, info.source_sha256)
            // Each part carries its CRC32, and the object the whole body's (S3 offers no
            // full-object SHA-256 for multipart uploads; see `crate::upload`).
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .map_err(|e| storage_error("CreateMultipartUpload", e))?;
        out.upload_id.ok_or_else(|| StorageError::transient("CreateMultipartUpload", "no upload id"))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        crc32: u32,
    ) -> Result<UploadedPart, StorageError> {
        let bytes = body.len();
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            // The algorithm header too: some S3-compatible stores only keep a checksum they
            // are told the algorithm of. A value set here stops the SDK computing its own.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(BASE64.encode(crc32.to_be_bytes()))
            .customize()
            .config_override(buffered_upload(bytes))
            // UNSIGNED-PAYLOAD instead of a SHA-256 of the part: S3 verifies the part against
            // the signed checksum header; over https TLS guards it on the way.
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| storage_error("UploadPart", e))?;
        let etag = out.e_tag.ok_or_else(|| StorageError::transient("UploadPart", "no ETag"))?;
        Ok(UploadedPart { part_number, etag, checksum_crc32: out.checksum_crc32 })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        crc32: u32,
    ) -> Result<(), StorageError> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number)
                    .e_tag(&p.etag)
                    .set_checksum_crc32(p.checksum_crc32.clone())
                    .build()
            })
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            // S3 checks the object it assembles against the whole body's CRC32.
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc32(BASE64.encode(crc32.to_be_bytes()))
            .customize()
            .config_override(body_upload())
            .send()
            .await
            .map_err(|e| storage_error("CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        // Its caller waits at most BEST_EFFORT_CALL_TIMEOUT.
        self.s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .customize()
            .config_override(stemvault_aws::best_effort_s3())
            .send()
            .await
            .map_err(|e| storage_error("AbortMultipartUpload", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextMut};
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::{ConfigBag, Credentials, Intercept, Region, RuntimeComponents, SharedCredentialsProvider};
    use aws_sdk_s3::error::BoxError;
    use aws_smithy_runtime_api::client::http::{
        HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::http::StatusCode;
    use stemvault_aws::metrics::Unit;

    use super::*;
    use crate::source_policy::SourcePolicy;
    use crate::upload::crc32;

    /// A manifest write refused by its condition is a conflict (read again, written again); a
    /// missing bucket is not, though S3 answers 404 to both it and a vanished object.
    #[test]
    fn only_refusals_by_its_condition_are_manifest_conflicts() {
        assert!(manifest_conflict(Some(412), Some("PreconditionFailed"), false));
        assert!(manifest_conflict(Some(409), Some("ConditionalRequestConflict"), true));
        assert!(manifest_conflict(Some(404), Some("NoSuchKey"), true));
        assert!(!manifest_conflict(Some(404), Some("NoSuchKey"), false), "If-None-Match answers no 404 of its own");
        assert!(!manifest_conflict(Some(404), Some("NoSuchBucket"), true));
        assert!(!manifest_conflict(Some(403), Some("AccessDenied"), true));
        assert!(!manifest_conflict(None, None, true), "no answer");
    }

    /// Keeps the headers of each S3 request as it would go out, then fails it: nothing is sent.
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Vec<HashMap<String, String>>>>);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "Capture"
        }

        fn read_before_transmit(
            &self,
            context: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let headers = context.request().headers().iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()));
            self.0.lock().unwrap().push(headers.collect());
            Err("captured, not sent".into())
        }
    }

    /// Answers a PutObject with `0`, as if S3 had sent it, instead of sending it (only a
    /// PutObject's output fits).
    #[derive(Debug)]
    struct Answer(aws_sdk_s3::operation::put_object::PutObjectOutput);

    impl Intercept for Answer {
        fn name(&self) -> &'static str {
            "Answer"
        }

        fn read_before_transmit(
            &self,
            _: &BeforeTransmitInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            Err("answered, not sent".into())
        }

        fn modify_before_completion(
            &self,
            context: &mut FinalizerInterceptorContextMut<'_>,
            _: &RuntimeComponents,
            _: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            if let Some(result) = context.output_or_error_mut() {
                *result = Ok(aws_smithy_runtime_api::client::interceptors::context::Output::erase(self.0.clone()));
            }
            Ok(())
        }
    }

    fn capturing_ports() -> (AwsPorts, Capture) {
        let capture = Capture::default();
        (ports_with(capture.clone()), capture)
    }

    fn sdk() -> aws_config::SdkConfig {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        aws_config::SdkConfig::builder()
            .behavior_version(stemvault_aws::behavior_version())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .endpoint_url("https://s3.example.test")
            .build()
    }

    /// Ports whose S3 requests go through `interceptor` (and nowhere, when it fails them).
    fn ports_with(interceptor: impl Intercept + 'static) -> AwsPorts {
        let sdk = sdk();
        ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk).interceptor(interceptor))
    }

    /// A HEAD S3 answers with an error (its body empty, so no code) leaves the earlier copy
    /// unknown, retryably: 400 (an expired token answers so too) as much as 500. But no object
    /// under the key is 404, or 403 to a role without `s3:ListBucket`, as the download role is:
    /// no copy (read as a failed lookup, every retried claim of an expired URL would go on to
    /// the dead-letter queue instead of failing as `source_expired`).
    #[tokio::test]
    async fn a_head_s_error_is_no_copy_or_a_lookup_to_try_again() {
        for (status, missing) in [(400, false), (500, false), (403, true), (404, true)] {
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let (origin, served) = stemvault_aws::test_http::answer_once(answer).await;
            let sdk = stemvault_aws::test_http::sdk_at(&origin);
            let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true));
            let looked = ports.head_object("tasks/t1/vocal.mp3").await;
            if missing {
                assert!(matches!(looked, Ok(None)), "{status}: {looked:?}");
            } else {
                assert!(matches!(&looked, Err(e) if e.is_retryable()), "{status}: {looked:?}");
            }
            assert!(served.await.unwrap().starts_with("HEAD /vault/tasks/t1/vocal.mp3"), "{status}");
        }
    }

    /// A multipart upload is completed with each part's CRC32 as S3 returned it, and the whole
    /// body's as a full-object checksum, which S3 checks the assembled object against (moto
    /// and the memory store check neither).
    #[tokio::test]
    async fn a_completion_names_each_part_s_checksum_and_the_whole_body_s() {
        let result = "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>";
        let ok = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{result}", result.len());
        let (origin, served) = stemvault_aws::test_http::answer_once(ok).await;
        let sdk = stemvault_aws::test_http::sdk_at(&origin);
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true));
        let part = |n: i32, crc: &str| UploadedPart {
            part_number: n,
            etag: format!("\"e{n}\""),
            checksum_crc32: Some(crc.into()),
        };
        let parts = [part(1, "AAAAAQ=="), part(2, "AAAAAg==")];
        ports.complete_multipart("tasks/t1/vocal.wav", "upload-1", &parts, 0x0102_0304).await.unwrap();
        let request = served.await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /vault/tasks/t1/vocal.wav?uploadid=upload-1"), "{request}");
        assert!(request.contains("\r\nx-amz-checksum-type: full_object\r\n"), "{request}");
        assert!(
            request.contains(&format!(
                "\r\nx-amz-checksum-crc32: {}\r\n",
                BASE64.encode([1u8, 2, 3, 4]).to_ascii_lowercase()
            )),
            "{request}"
        );
        for part_crc32 in ["aaaaaq==", "aaaaag=="] {
            assert!(request.contains(&format!("<checksumcrc32>{part_crc32}</checksumcrc32>")), "{request}");
        }
    }

    /// A claim's release, whose first attempt stalls (a connection that never answers), is
    /// made again within its caller's best-effort bound, not given up with the SDK's 3 s
    /// attempt (the claim would then wait out its lease); so is a multipart upload's abort.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_release_or_abort_is_tried_again_within_its_bound() {
        use std::sync::atomic::Ordering;
        use stemvault_aws::test_http::sdk_stalling_first;
        let (sdk, calls) = sdk_stalling_first(200, b"{}");
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true));
        let task = TaskId::parse("t1").unwrap();
        let held = HeldCopy { worker: "w1", next: None };
        let releasing = ports.release_file(&task, "vocal", held, "the deadline came");
        let released = tokio::time::timeout(stemvault_vault::BEST_EFFORT_CALL_TIMEOUT, releasing).await;
        assert!(matches!(released, Ok(Ok(Conditional::Applied))), "{released:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let (sdk, calls) = sdk_stalling_first(204, b"");
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true));
        let aborting = ports.abort_multipart("tasks/t1/vocal.mp3", "upload-1");
        let aborted = tokio::time::timeout(stemvault_vault::BEST_EFFORT_CALL_TIMEOUT, aborting).await;
        assert!(matches!(aborted, Ok(Ok(()))), "{aborted:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Ports whose S3 client is `s3`, without retries.
    fn ports_over(sdk: &aws_config::SdkConfig, s3: aws_sdk_s3::config::Builder) -> AwsPorts {
        let s3 = s3.retry_config(RetryConfig::disabled()).build();
        AwsPorts {
            table: TaskTable::new(aws_sdk_dynamodb::Client::new(sdk), "tasks"),
            s3: aws_sdk_s3::Client::from_conf(s3),
            bucket: "vault".into(),
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: "https://sqs.example.test/queue".into(),
            source: HttpSource::new(SourcePolicy::parse("*.suno.ai").unwrap()).unwrap(),
            events: EventBus::new(sdk, "events"),
        }
    }

    /// A streamed put goes out aws-chunked with the SHA-256 as a trailer the SDK computes, its
    /// decoded length declared, and its payload not hashed to sign it.
    #[tokio::test]
    async fn a_streamed_put_sends_its_sha256_as_a_trailer() {
        let (ports, capture) = capturing_ports();
        let chunks = futures::stream::iter(vec![Ok(Bytes::from_static(b"some ")), Ok(Bytes::from_static(b"audio"))]);
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: "5a1e" };
        assert!(ports.put_streamed("k", Box::pin(chunks), 10, info).await.is_err());
        let sent = capture.0.lock().unwrap().clone();
        let [put] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!(put["x-amz-trailer"], "x-amz-checksum-sha256");
        assert_eq!(put["x-amz-decoded-content-length"], "10");
        assert_eq!(put["content-encoding"], "aws-chunked");
        assert_eq!(put["x-amz-content-sha256"], "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
        assert_eq!(put["x-amz-meta-source-sha256"], "5a1e");
        assert!(!put.contains_key("x-amz-checksum-sha256"), "no digest known up front");
    }

    /// The digest a streamed put records is the one S3 answers; no full-object checksum in the
    /// answer (none, or a composite) is a failure to retry, never a file stored unverified.
    #[tokio::test]
    async fn a_streamed_put_records_the_sha256_s3_answers_and_fails_without_one() {
        use aws_sdk_s3::operation::put_object::PutObjectOutput;
        // Not the body's digest: what is recorded is S3's answer, not a hash of our own.
        let sha256: [u8; 32] = Sha256::digest(b"what S3 answered").into();
        let put = |answer: PutObjectOutput| async move {
            let chunks = futures::stream::iter(vec![Ok(Bytes::from_static(b"some audio"))]);
            let info = ObjectInfo { content_type: None, source_sha256: "5a1e" };
            ports_with(Answer(answer)).put_streamed("k", Box::pin(chunks), 10, info).await
        };
        let answered = PutObjectOutput::builder().checksum_sha256(BASE64.encode(sha256)).build();
        assert_eq!(put(answered).await, Ok(sha256));
        let composite = PutObjectOutput::builder().checksum_sha256(format!("{}-2", BASE64.encode(sha256))).build();
        for answer in [PutObjectOutput::builder().build(), composite] {
            let err = put(answer).await.unwrap_err();
            assert!(err.is_retryable() && err.message.contains("no ChecksumSHA256"), "{err:?}");
        }
    }

    /// An S3 that answers every request `after` it arrives, its body unread: 200 with an ETag
    /// and a SHA-256 (what a put and a part's upload must get back) and an empty
    /// CompleteMultipartUpload result.
    #[derive(Debug, Clone)]
    struct SlowS3 {
        after: Duration,
        sha256: [u8; 32],
    }

    impl HttpConnector for SlowS3 {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let (after, sha256) = (self.after, self.sha256);
            HttpConnectorFuture::new(async move {
                tokio::time::sleep(after).await;
                let body = SdkBody::from("<CompleteMultipartUploadResult></CompleteMultipartUploadResult>");
                let mut answer = HttpResponse::new(StatusCode::try_from(200).unwrap(), body);
                answer.headers_mut().insert("etag", "\"e\"");
                answer.headers_mut().insert("x-amz-checksum-sha256", BASE64.encode(sha256));
                Ok(answer)
            })
        }
    }

    /// A file's upload and its completion outlast the attempt timeout (a streamed put and a
    /// completion run as long as they take, `body_upload`; a buffered body's attempt is
    /// bounded by its size, `buffered_upload`); any other request of the same client,
    /// configured as the functions' are ([`stemvault_aws::timeouts`]), gives up after it.
    #[tokio::test(start_paused = true)]
    async fn a_files_upload_outlasts_the_attempt_timeout_that_bounds_other_requests() {
        let body = Bytes::from_static(b"some audio");
        let sha256: [u8; 32] = Sha256::digest(&body).into();
        let s3 = SlowS3 { after: stemvault_aws::ATTEMPT_TIMEOUT * 4, sha256 };
        // The connect timeout each request's connection is made with.
        let connect_timeouts = Arc::new(Mutex::new(Vec::new()));
        let seen = connect_timeouts.clone();
        let sdk = sdk()
            .to_builder()
            .timeout_config(stemvault_aws::timeouts())
            .http_client(http_client_fn(move |settings, _| {
                seen.lock().unwrap().push(settings.connect_timeout());
                SharedHttpConnector::new(s3.clone())
            }))
            .build();
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk));
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: "5a1e" };

        ports.put_object("k", body.clone(), info, sha256).await.expect("a whole body's put");
        let part = ports.upload_part("k", "upload", 1, body.clone(), crc32(&body)).await.expect("a part's upload");
        ports.complete_multipart("k", "upload", &[part], crc32(&body)).await.expect("the completion");
        let chunks = futures::stream::iter(vec![Ok(body.clone())]);
        let streamed = ports.put_streamed("k", Box::pin(chunks), 10, info).await;
        assert_eq!(streamed, Ok(sha256), "a streamed put");

        let head = ports.head_object("k").await.expect_err("any other request times out");
        // No HTTP answer at all: the earlier copy is unknown, to look for again.
        assert!(head.message.contains("timeout") && head.is_retryable(), "{head:?}");
        let connect_timeouts = connect_timeouts.lock().unwrap().clone();
        assert_eq!(connect_timeouts, [Some(stemvault_aws::SDK_CONNECT_TIMEOUT); 5], "every connection, uploads' too");
    }

    /// A buffered body's upload whose answer never comes is given up at its size's bound (and
    /// the SDK's retry, disabled here, would send it again), not held until the batch stops.
    #[tokio::test(start_paused = true)]
    async fn a_buffered_upload_whose_answer_never_comes_is_given_up_at_its_size_bound() {
        let body = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        let sha256: [u8; 32] = Sha256::digest(&body).into();
        let s3 = SlowS3 { after: Duration::from_secs(3600), sha256 };
        let sdk = sdk()
            .to_builder()
            .timeout_config(stemvault_aws::timeouts())
            .http_client(http_client_fn(move |_, _| SharedHttpConnector::new(s3.clone())))
            .build();
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk));
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: "5a1e" };
        let bound = buffered_attempt_timeout(body.len());
        assert_eq!(bound, Duration::from_secs(34), "30 s, and 4 MiB at 1 MiB/s");
        let started = tokio::time::Instant::now();
        let put = ports.put_object("k", body.clone(), info, sha256).await.expect_err("no answer");
        // Paused time: where it was given up, not how long anything took.
        assert_eq!(started.elapsed().as_secs(), bound.as_secs(), "{put:?}");
        assert!(put.is_retryable() && put.message.contains("timeout"), "{put:?}");
        let started = tokio::time::Instant::now();
        let part = ports.upload_part("k", "upload", 1, body.clone(), crc32(&body)).await.expect_err("no answer");
        assert_eq!(started.elapsed().as_secs(), bound.as_secs(), "{part:?}");
        assert!(part.is_retryable() && part.message.contains("timeout"), "{part:?}");
    }

    /// An S3 that reads each request's body to its end and then never answers (a connection
    /// gone silent once the body is out).
    #[derive(Debug, Clone)]
    struct SilentS3;

    impl HttpConnector for SilentS3 {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            HttpConnectorFuture::new(async move {
                let mut body = request.into_body();
                let mut body = std::pin::Pin::new(&mut body);
                while std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await.is_some() {}
                std::future::pending().await
            })
        }
    }

    /// A streamed put whose answer never comes once its body is out is given up
    /// [`ANSWER_AFTER_BODY`] after the body's end, to be tried again, not held until the
    /// batch stops.
    #[tokio::test(start_paused = true)]
    async fn a_streamed_put_whose_answer_never_comes_is_given_up_after_its_body() {
        let sdk = sdk()
            .to_builder()
            .timeout_config(stemvault_aws::timeouts())
            .http_client(http_client_fn(|_, _| SharedHttpConnector::new(SilentS3)))
            .build();
        let ports = ports_over(&sdk, aws_sdk_s3::config::Builder::from(&sdk));
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: "5a1e" };
        let chunks = futures::stream::iter(vec![Ok(Bytes::from_static(b"some ")), Ok(Bytes::from_static(b"audio"))]);
        let started = tokio::time::Instant::now();
        let put = ports.put_streamed("k", Box::pin(chunks), 10, info);
        // Bounded, so that a put left waiting fails the test rather than hanging it.
        let put = tokio::time::timeout(ANSWER_AFTER_BODY * 4, put).await.expect("given up").expect_err("no answer");
        // Paused time: where it was given up, not how long anything took.
        assert_eq!(started.elapsed(), ANSWER_AFTER_BODY, "{put:?}");
        assert!(put.is_retryable() && put.message.contains("did not answer"), "{put:?}");
    }

    #[tokio::test]
    async fn uploads_carry_their_checksum_in_a_signed_header_and_are_not_hashed_again_to_sign() {
        let (ports, capture) = capturing_ports();
        let body = Bytes::from_static(b"some audio");
        let sha256: [u8; 32] = Sha256::digest(&body).into();
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: "5a1e" };
        assert!(ports.put_object("k", body.clone(), info, sha256).await.is_err());
        assert!(ports.upload_part("k", "upload", 1, body.clone(), crc32(&body)).await.is_err());
        let sent = capture.0.lock().unwrap().clone();
        let [put, part] = sent.as_slice() else { panic!("{sent:?}") };
        assert_eq!(put["x-amz-checksum-sha256"], BASE64.encode(sha256));
        assert_eq!(part["x-amz-checksum-crc32"], BASE64.encode(crc32(&body).to_be_bytes()));
        for (headers, checksum) in [(put, "x-amz-checksum-sha256"), (part, "x-amz-checksum-crc32")] {
            assert_eq!(headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD", "{checksum}");
            let authorization = &headers["authorization"];
            let signed = authorization.split("SignedHeaders=").nth(1).and_then(|s| s.split(',').next()).unwrap();
            assert!(signed.split(';').any(|h| h == checksum), "{checksum} is signed: {authorization}");
        }
    }

    fn names(metrics: &[Metric]) -> Vec<(&str, Unit, f64)> {
        metrics.iter().map(|m| (m.name, m.unit, m.value)).collect()
    }

    #[test]
    fn measures_become_the_agreed_metrics() {
        let function = "stemvault-prod-DownloadFunction-AbC123";
        let (dimensions, metrics) = metrics_of(function, &Measure::Stored { bytes: 42, copy_seconds: Some(1.5) });
        assert_eq!(dimensions, vec![("Function", function)]);
        assert_eq!(
            names(&metrics),
            vec![
                ("FilesStored", Unit::Count, 1.0),
                ("BytesStored", Unit::Bytes, 42.0),
                ("CopySeconds", Unit::Seconds, 1.5)
            ]
        );
        let (_, metrics) = metrics_of(function, &Measure::Stored { bytes: 42, copy_seconds: None });
        assert_eq!(names(&metrics), vec![("FilesStored", Unit::Count, 1.0), ("BytesStored", Unit::Bytes, 42.0)]);

        let (dimensions, metrics) = metrics_of(function, &Measure::Failed { reason: "source_expired" });
        assert_eq!(dimensions, vec![("Function", function), ("Reason", "source_expired")]);
        assert_eq!(names(&metrics), vec![("FilesFailed", Unit::Count, 1.0)]);

        let (dimensions, metrics) = metrics_of(function, &Measure::Settled { seconds: 90.25 });
        assert_eq!(dimensions, vec![("Function", function)]);
        assert_eq!(names(&metrics), vec![("SecondsToSettled", Unit::Seconds, 90.25)]);

        let (dimensions, metrics) = metrics_of(function, &Measure::SettleCheckFailed { reason: "publish" });
        assert_eq!(dimensions, vec![("Function", function), ("Reason", "publish")]);
        assert_eq!(names(&metrics), vec![("SettleChecksFailed", Unit::Count, 1.0)]);
    }

    /// A streamed body that is dropped unsent (the put failed before it) never makes S3's
    /// answer overdue: the put's own error is the one to report. One whose end was taken makes
    /// it overdue [`ANSWER_AFTER_BODY`] later, not sooner.
    #[tokio::test(start_paused = true)]
    async fn an_answer_is_overdue_only_after_the_body_s_end() {
        let (ended, body_sent) = tokio::sync::oneshot::channel::<()>();
        drop(ended);
        let dropped = tokio::time::timeout(Duration::from_secs(24 * 3600), answer_overdue(body_sent)).await;
        assert!(dropped.is_err(), "a body dropped unsent is never overdue");

        let (ended, body_sent) = tokio::sync::oneshot::channel();
        ended.send(()).unwrap();
        let mut overdue = std::pin::pin!(answer_overdue(body_sent));
        let early = tokio::time::timeout(ANSWER_AFTER_BODY - Duration::from_millis(1), overdue.as_mut()).await;
        assert!(early.is_err(), "not before {ANSWER_AFTER_BODY:?}");
        tokio::time::timeout(Duration::from_millis(2), overdue).await.expect("overdue once the time passed");
    }

    /// The body tells its end when its last declared byte is taken (the SDK may stop there
    /// without asking for the end), and when a source ends short of its declared length
    /// (bytes still left): either way S3's answer is due from then.
    #[tokio::test]
    async fn a_streamed_body_tells_its_end_at_its_length_or_when_its_source_ends_short() {
        use futures::StreamExt;
        use http_body::Body;

        let chunks = |parts: &[&'static [u8]]| -> Streamed {
            futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()).boxed()
        };
        for (case, parts, len, frames_to_end) in [
            ("at its length", &[b"abc".as_slice(), b"defg"][..], 7, 2),
            ("short of it", &[b"abc".as_slice()][..], 10, 2),
        ] {
            let (ended, mut body_sent) = tokio::sync::oneshot::channel();
            let mut body = StreamedBody { chunks: std::sync::Mutex::new(chunks(parts)), left: len, ended: Some(ended) };
            for frame in 0..frames_to_end {
                assert!(body_sent.try_recv().is_err(), "{case}: told before frame {frame}");
                let _ = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
            }
            assert_eq!(body_sent.try_recv(), Ok(()), "{case}: told at the end");
            assert_eq!(body.left, 0, "{case}");
        }
    }
}
