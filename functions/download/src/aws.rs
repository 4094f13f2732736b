//! The AWS side of the domain traits. The only SDK calls the function makes (its IAM policy
//! follows from them): DynamoDB GetItem and UpdateItem; S3 PutObject, CreateMultipartUpload,
//! UploadPart, CompleteMultipartUpload and AbortMultipartUpload; SQS ChangeMessageVisibility.
//!
//! File updates are targeted (`files.#n.<attr>`) and conditional on the file's status and
//! claim; each one increments the record's `version`, as every writer does.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use stemvault_aws::TaskTable;
use stemvault_vault::{FileStatus, Manifest, Now, OPEN_MARKER, TaskRecord, VaultState};
use suno_callbacks::TaskId;

use crate::domain::{
    Claim, ClaimFile, Clock, Conditional, DelayMessage, LoadTask, RecordFailed, RecordStored, ReleaseFile, SettleTask,
    WriteManifest,
};
use crate::error::{FetchError, StorageError, TableError};
use crate::source::{ChunkStream, FetchSource, HttpSource};
use crate::upload::{ObjectStore, SourceBody, StoredObject, UploadedPart};

/// The function's clients, built once per Lambda instance.
#[derive(Debug, Clone)]
pub struct Adapters {
    pub table: TaskTable,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub source: HttpSource,
}

fn table_error<E: std::error::Error + 'static>(operation: &'static str, e: E) -> TableError {
    TableError { operation, message: DisplayErrorContext(e).to_string() }
}

fn storage_error<E: std::error::Error + 'static>(operation: &'static str, e: E) -> StorageError {
    StorageError { operation, message: DisplayErrorContext(e).to_string() }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn vault_str(vault: VaultState) -> &'static str {
    match vault {
        VaultState::Pending => "pending",
        VaultState::Complete => "complete",
        VaultState::Partial => "partial",
    }
}

impl Adapters {
    fn update(&self, task_id: &TaskId) -> UpdateItemFluentBuilder {
        self.table
            .client
            .update_item()
            .table_name(&self.table.table_name)
            .key("task_id", s(task_id.as_str()))
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":one", n(1))
    }

    /// An update of one file: `#f.#n` is the file's entry, `#status` its status.
    fn update_file(&self, task_id: &TaskId, name: &str) -> UpdateItemFluentBuilder {
        self.update(task_id)
            .expression_attribute_names("#f", "files")
            .expression_attribute_names("#n", name)
            .expression_attribute_names("#status", "status")
    }

    /// Finish a file held by `worker`: set `status` and `extra_set`, drop the claim (and
    /// whatever `extra_remove` names), conditional on the claim.
    fn finish_file(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        status: FileStatus,
        extra_set: &str,
        extra_remove: &str,
    ) -> UpdateItemFluentBuilder {
        self.update_file(task_id, name)
            .update_expression(format!(
                "SET #f.#n.#status = :status{extra_set}, #version = #version + :one \
                 REMOVE #f.#n.#claim, #f.#n.#lease{extra_remove}"
            ))
            .condition_expression("#f.#n.#status = :downloading AND #f.#n.#claim = :me")
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":downloading", s(FileStatus::Downloading.as_str()))
            .expression_attribute_values(":me", s(worker))
    }
}

async fn conditional(operation: &'static str, request: UpdateItemFluentBuilder) -> Result<Conditional, TableError> {
    match request.send().await {
        Ok(_) => Ok(Conditional::Applied),
        Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => {
            Ok(Conditional::Conflict)
        }
        Err(e) => Err(table_error(operation, e)),
    }
}

impl Clock for Adapters {
    fn now(&self) -> Now {
        Now::system()
    }
}

impl LoadTask for Adapters {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, TableError> {
        self.table.get(task_id.as_str()).await.map_err(|e| TableError { operation: "GetItem", message: e.to_string() })
    }
}

impl ClaimFile for Adapters {
    async fn claim_file(&self, task_id: &TaskId, name: &str, claim: &Claim) -> Result<Conditional, TableError> {
        let request = self
            .update_file(task_id, name)
            .update_expression(
                "SET #f.#n.#status = :downloading, #f.#n.#claim = :me, #f.#n.#lease = :lease, \
                 #f.#n.#attempts = if_not_exists(#f.#n.#attempts, :zero) + :one, #version = #version + :one",
            )
            .condition_expression(
                "#f.#n.#url = :url AND (#f.#n.#status IN (:pending, :enqueuing, :queued) \
                 OR (#f.#n.#status = :downloading AND (attribute_not_exists(#f.#n.#lease) OR #f.#n.#lease < :now)))",
            )
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#url", "url")
            .expression_attribute_values(":downloading", s(FileStatus::Downloading.as_str()))
            .expression_attribute_values(":pending", s(FileStatus::Pending.as_str()))
            .expression_attribute_values(":enqueuing", s(FileStatus::Enqueuing.as_str()))
            .expression_attribute_values(":queued", s(FileStatus::Queued.as_str()))
            .expression_attribute_values(":me", s(&claim.worker))
            .expression_attribute_values(":lease", n(claim.lease_until))
            .expression_attribute_values(":now", n(claim.now))
            .expression_attribute_values(":url", s(&claim.url))
            .expression_attribute_values(":zero", n(0));
        conditional("UpdateItem (claim)", request).await
    }
}

impl RecordStored for Adapters {
    async fn record_stored(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        stored: &StoredObject,
        stored_at: &str,
    ) -> Result<Conditional, TableError> {
        let (set_type, remove_type) = match stored.content_type {
            Some(_) => (", #f.#n.#ct = :ct", ", #f.#n.#error"),
            None => ("", ", #f.#n.#error, #f.#n.#ct"),
        };
        let set = format!(", #f.#n.#bytes = :bytes, #f.#n.#sha = :sha, #f.#n.#at = :at{set_type}");
        let request = self
            .finish_file(task_id, name, worker, FileStatus::Stored, &set, remove_type)
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_names("#sha", "sha256")
            .expression_attribute_names("#at", "stored_at")
            .expression_attribute_names("#ct", "content_type")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":bytes", n(stored.bytes))
            .expression_attribute_values(":sha", s(&stored.sha256_hex))
            .expression_attribute_values(":at", s(stored_at));
        let request = match &stored.content_type {
            Some(content_type) => request.expression_attribute_values(":ct", s(content_type)),
            None => request,
        };
        conditional("UpdateItem (stored)", request).await
    }
}

impl RecordFailed for Adapters {
    async fn record_failed(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        reason: &str,
    ) -> Result<Conditional, TableError> {
        let request = self
            .finish_file(task_id, name, worker, FileStatus::Failed, ", #f.#n.#error = :error", "")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":error", s(reason));
        conditional("UpdateItem (failed)", request).await
    }
}

impl ReleaseFile for Adapters {
    async fn release_file(
        &self,
        task_id: &TaskId,
        name: &str,
        worker: &str,
        error: &str,
    ) -> Result<Conditional, TableError> {
        let request = self
            .finish_file(task_id, name, worker, FileStatus::Queued, ", #f.#n.#error = :error", "")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":error", s(error));
        conditional("UpdateItem (release)", request).await
    }
}

impl SettleTask for Adapters {
    async fn settle_task(
        &self,
        task_id: &TaskId,
        expected_version: u64,
        vault: VaultState,
        lease_until: i64,
    ) -> Result<Conditional, TableError> {
        let request = self
            .update(task_id)
            // Dropping `open` takes the task out of the sweeper's index.
            .update_expression("SET #vault = :settled, #ml = :lease, #version = #version + :one REMOVE #open")
            .condition_expression("#version = :expected")
            .expression_attribute_names("#vault", "vault")
            .expression_attribute_names("#ml", "manifest_lease_until")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":settled", s(vault_str(vault)))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":expected", n(expected_version));
        conditional("UpdateItem (settle)", request).await
    }

    async fn record_manifest(
        &self,
        task_id: &TaskId,
        vault: VaultState,
        lease_until: i64,
        manifest_key: &str,
    ) -> Result<Conditional, TableError> {
        let request = self
            .update(task_id)
            .update_expression("SET #mk = :key, #version = #version + :one REMOVE #ml")
            .condition_expression("#vault = :settled AND #ml = :lease")
            .expression_attribute_names("#vault", "vault")
            .expression_attribute_names("#mk", "manifest_key")
            .expression_attribute_names("#ml", "manifest_lease_until")
            .expression_attribute_values(":settled", s(vault_str(vault)))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":key", s(manifest_key));
        conditional("UpdateItem (manifest)", request).await
    }

    async fn reopen_task(&self, task_id: &TaskId, settled_version: u64) -> Result<Conditional, TableError> {
        let request = self
            .update(task_id)
            .update_expression("SET #vault = :pending, #open = :open, #version = #version + :one REMOVE #mk, #ml")
            .condition_expression("#version = :expected")
            .expression_attribute_names("#vault", "vault")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":open", s(OPEN_MARKER))
            .expression_attribute_names("#mk", "manifest_key")
            .expression_attribute_names("#ml", "manifest_lease_until")
            .expression_attribute_values(":pending", s(vault_str(VaultState::Pending)))
            .expression_attribute_values(":expected", n(settled_version));
        conditional("UpdateItem (reopen)", request).await
    }
}

impl WriteManifest for Adapters {
    async fn write_manifest(&self, key: &str, manifest: &Manifest) -> Result<(), StorageError> {
        let body = serde_json::to_vec_pretty(manifest)
            .map_err(|e| StorageError { operation: "PutObject (manifest)", message: e.to_string() })?;
        let sha256: [u8; 32] = Sha256::digest(&body).into();
        self.put_object(key, Bytes::from(body), Some("application/json"), sha256).await
    }
}

impl DelayMessage for Adapters {
    async fn delay_message(&self, receipt_handle: &str, delay: Duration) -> Result<(), String> {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DisplayErrorContext(e).to_string())
    }
}

impl FetchSource for Adapters {
    async fn open(&self, url: &str, max_bytes: u64) -> Result<SourceBody<ChunkStream>, FetchError> {
        self.source.open(url, max_bytes).await
    }
}

impl ObjectStore for Adapters {
    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        sha256: [u8; 32],
    ) -> Result<(), StorageError> {
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
            .send()
            .await
            .map_err(|e| storage_error("PutObject", e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StorageError> {
        let out = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            // Each part carries its SHA-256; the object's checksum is the composite of those
            // (S3 offers no full-object SHA-256 for multipart uploads).
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_type(ChecksumType::Composite)
            .send()
            .await
            .map_err(|e| storage_error("CreateMultipartUpload", e))?;
        out.upload_id.ok_or_else(|| StorageError { operation: "CreateMultipartUpload", message: "no upload id".into() })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        sha256: [u8; 32],
    ) -> Result<UploadedPart, StorageError> {
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
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(BASE64.encode(sha256))
            .send()
            .await
            .map_err(|e| storage_error("UploadPart", e))?;
        let etag = out.e_tag.ok_or_else(|| StorageError { operation: "UploadPart", message: "no ETag".into() })?;
        Ok(UploadedPart { part_number, etag, checksum_sha256: out.checksum_sha256 })
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[UploadedPart]) -> Result<(), StorageError> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number)
                    .e_tag(&p.etag)
                    .set_checksum_sha256(p.checksum_sha256.clone())
                    .build()
            })
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| storage_error("CompleteMultipartUpload", e))?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        self.s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| storage_error("AbortMultipartUpload", e))?;
        Ok(())
    }
}
