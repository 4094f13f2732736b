//! In-memory implementations of our own traits, and a task to run them on, for the unit
//! tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Barrier, oneshot};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, Iter};
use sha2::{Digest, Sha256};
use stemvault_vault::{
    Clock, Conditional, FileEntry, FileJob, FileStatus, LeaseEnd, LoadTask, Manifest, OPEN_MARKER, StoreError,
    TaskRecord, Timestamp, VaultState,
};
use suno_callbacks::{Family, Stage, TaskId};

use stemvault_vault::download::ManifestPlan;
use stemvault_vault::events::memory::MemoryEvents;
use stemvault_vault::events::{PublishError, PublishEvents, TaskEvent};

use crate::domain::{
    Claim, ClaimAnswer, ClaimFile, DelayMessage, EmitMetrics, Failure, FileWrite, HeldCopy, ManifestFence, Measure,
    RecordFailed, RecordStored, ReleaseFile, Settings, SettleTask, SettleWrite, WriteManifest,
};
use crate::error::{FetchError, StorageError};
use crate::existing::{ObjectHead, ReadObject};
use crate::fresh_link::RefreshError;
use crate::source::{ChunkStream as SourceChunks, FetchSource, FreshLink};
use crate::upload::{
    MIN_PART_SIZE, ObjectInfo, ObjectStore, SHA256_METADATA, SOURCE_METADATA, SourceBody, StoredObject, Streamed,
    UploadedPart, crc32,
};

/// The task the domain and app tests work on.
pub const TASK: &str = "e649edb7abfd759285bd41a47a634b10";

pub const SETTINGS: Settings = Settings { max_file_bytes: 64 << 20, part_size: MIN_PART_SIZE };

/// The (signed) URL of the file `name` of [`TASK`].
pub fn url(name: &str) -> String {
    format!("https://cdn1.suno.ai/{name}.mp3?sig=secret")
}

fn entry(task: &str, name: &str, status: FileStatus) -> FileEntry {
    FileEntry { status, ..FileEntry::pending(&url(name), format!("tasks/{task}/{name}.mp3"), Stage::First) }
}

/// The record of [`TASK`] with these files, its vault `pending`, at version 3, generation 2.
pub fn record(files: &[(&str, FileStatus)]) -> TaskRecord {
    record_of(TASK, files)
}

/// The record of `task` with these files, its vault `pending`, at version 3, generation 2.
pub fn record_of(task: &str, files: &[(&str, FileStatus)]) -> TaskRecord {
    TaskRecord {
        files: files.iter().map(|(n, s)| (n.to_string(), entry(task, n, *s))).collect(),
        vault: VaultState::Pending,
        open: Some(OPEN_MARKER.into()),
        version: 3,
        generation: 2,
        ..TaskRecord::new(
            task,
            Family::VocalSeparation,
            Stage::First,
            200,
            "ok",
            Timestamp::from_unix_ms(1_795_446_000_000),
        )
    }
}

/// The message body of the file `name` of [`TASK`], as ingest sends it.
pub fn job_body(name: &str) -> String {
    job_body_of(TASK, name)
}

/// The message body of the file `name` of `task`, as ingest sends it.
pub fn job_body_of(task: &str, name: &str) -> String {
    serde_json::to_string(&FileJob {
        task_id: task.into(),
        name: name.into(),
        url: url(name),
        key: format!("tasks/{task}/{name}.mp3"),
    })
    .unwrap()
}

/// Let the source of the file `name` answer `data`.
pub fn serve(ports: &MemoryPorts, name: &str, data: &[u8]) {
    ports.source(
        &url(name),
        Script::Body { data: data.to_vec(), declared: true, content_type: Some("audio/mpeg".into()) },
    );
}

/// `len` bytes that depend on `seed` and on their position.
pub fn deterministic_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub type ChunkStream = Iter<std::vec::IntoIter<Result<Bytes, FetchError>>>;

/// `data` as a body of `chunk`-byte chunks, with or without its Content-Length.
pub fn body_of(data: &[u8], chunk: usize, declared: bool, content_type: Option<&str>) -> SourceBody<ChunkStream> {
    let chunks: Vec<Result<Bytes, FetchError>> = data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    SourceBody {
        content_length: declared.then_some(data.len() as u64),
        content_type: content_type.map(str::to_owned),
        chunks: stream::iter(chunks),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCall {
    Put {
        key: String,
        len: usize,
        sha256: [u8; 32],
    },
    /// A body streamed with a trailing checksum ([`ObjectStore::put_streamed`]).
    Streamed {
        key: String,
        len: usize,
    },
    Create {
        key: String,
    },
    Part {
        number: i32,
        len: usize,
        crc32: u32,
    },
    Complete {
        key: String,
        parts: usize,
        crc32: u32,
    },
    Abort,
}

/// A bucket that checks checksums the way S3 does.
#[derive(Default)]
pub struct MemoryStore {
    pub state: Mutex<StoreState>,
    /// Fail the upload of this part number.
    pub fail_part: Option<i32>,
    /// Panic uploading this part number (before taking the state's lock).
    pub panic_part: Option<i32>,
    /// Answer every PutObject and CreateMultipartUpload with this.
    pub refuse: Option<StorageError>,
    /// Answer a PutObject and CompleteMultipartUpload this long after asked (a streamed one,
    /// after its body).
    pub finish_delay: Duration,
}

/// One object: its bytes, what it was stored with, and its ETag (new on every write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryObject {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: HashMap<String, String>,
    pub etag: String,
    /// Stored with its full-object SHA-256 checksum but no `sha256` metadata (streamed).
    pub full_object_sha256: bool,
}

/// A multipart upload in progress: what its object will be stored with, and its parts.
pub struct MemoryUpload {
    content_type: Option<String>,
    metadata: HashMap<String, String>,
    parts: BTreeMap<i32, Vec<u8>>,
}

#[derive(Default)]
pub struct StoreState {
    objects: HashMap<String, MemoryObject>,
    uploads: HashMap<String, MemoryUpload>,
    calls: Vec<StoreCall>,
    next_upload: u32,
    writes: u32,
    reads: u32,
}

impl StoreState {
    pub fn etag(&self, key: &str) -> Option<&str> {
        self.objects.get(key).map(|o| o.etag.as_str())
    }

    pub fn insert(
        &mut self,
        key: &str,
        data: Vec<u8>,
        content_type: Option<String>,
        metadata: HashMap<String, String>,
    ) {
        self.writes += 1;
        let etag = format!("\"etag-{}\"", self.writes);
        let object = MemoryObject { data, content_type, metadata, etag, full_object_sha256: false };
        self.objects.insert(key.to_owned(), object);
    }
}

fn storage_error(operation: &'static str, message: &str) -> StorageError {
    StorageError::transient(operation, message)
}

/// The metadata an upload with `info` keeps.
fn metadata_of(info: ObjectInfo<'_>) -> HashMap<String, String> {
    HashMap::from([(SOURCE_METADATA.to_owned(), info.source_sha256.to_owned())])
}

impl MemoryStore {
    /// The wait of a request that makes an object ([`MemoryStore::finish_delay`]).
    async fn finishing(&self) {
        if !self.finish_delay.is_zero() {
            tokio::time::sleep(self.finish_delay).await;
        }
    }

    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().objects.get(key).map(|o| o.data.clone())
    }

    pub fn stored(&self, key: &str) -> Option<MemoryObject> {
        self.state.lock().unwrap().objects.get(key).cloned()
    }

    pub fn calls(&self) -> Vec<StoreCall> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn open_uploads(&self) -> Vec<String> {
        self.state.lock().unwrap().uploads.keys().cloned().collect()
    }

    /// Objects read back whole.
    pub fn reads(&self) -> u32 {
        self.state.lock().unwrap().reads
    }
}

impl ObjectStore for MemoryStore {
    /// As S3 takes a body with a trailing checksum: read whole, refused when it fails or ends
    /// short, kept with its SHA-256 as the object's full-object checksum (no `sha256`
    /// metadata: it was not known when the request began).
    async fn put_streamed(
        &self,
        key: &str,
        mut body: Streamed,
        len: u64,
        info: ObjectInfo<'_>,
    ) -> Result<[u8; 32], StorageError> {
        let mut data = Vec::new();
        let mut failed = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            self.finishing().await;
        }
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Streamed { key: key.to_owned(), len: data.len() });
        if let Some(refusal) = &self.refuse {
            return Err(refusal.clone());
        }
        if let Some(e) = failed {
            return Err(storage_error("PutObject", &format!("the request body failed: {e}")));
        }
        if data.len() as u64 != len {
            return Err(storage_error("PutObject", "IncompleteBody"));
        }
        let sha256: [u8; 32] = Sha256::digest(&data).into();
        state.insert(key, data, put_object_type(&info), metadata_of(info));
        if let Some(object) = state.objects.get_mut(key) {
            object.full_object_sha256 = true;
        }
        Ok(sha256)
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        info: ObjectInfo<'_>,
        sha256: [u8; 32],
    ) -> Result<(), StorageError> {
        self.finishing().await;
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Put { key: key.to_owned(), len: body.len(), sha256 });
        if let Some(refusal) = &self.refuse {
            return Err(refusal.clone());
        }
        if <[u8; 32]>::from(Sha256::digest(&body)) != sha256 {
            return Err(storage_error("PutObject", "checksum mismatch"));
        }
        let mut metadata = metadata_of(info);
        metadata.insert(SHA256_METADATA.to_owned(), hex::encode(sha256));
        state.insert(key, body.to_vec(), put_object_type(&info), metadata);
        Ok(())
    }

    async fn create_multipart(&self, key: &str, info: ObjectInfo<'_>) -> Result<String, StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Create { key: key.to_owned() });
        if let Some(refusal) = &self.refuse {
            return Err(refusal.clone());
        }
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        let upload = MemoryUpload {
            content_type: info.content_type.map(str::to_owned),
            metadata: metadata_of(info),
            parts: BTreeMap::new(),
        };
        state.uploads.insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        crc: u32,
    ) -> Result<UploadedPart, StorageError> {
        assert_ne!(self.panic_part, Some(part_number), "injected panic");
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Part { number: part_number, len: body.len(), crc32: crc });
        if self.fail_part == Some(part_number) {
            return Err(storage_error("UploadPart", "injected failure"));
        }
        if crc32(&body) != crc {
            return Err(storage_error("UploadPart", "checksum mismatch"));
        }
        let upload = state.uploads.get_mut(upload_id).ok_or_else(|| storage_error("UploadPart", "no such upload"))?;
        upload.parts.insert(part_number, body.to_vec());
        let checksum = BASE64.encode(crc.to_be_bytes());
        Ok(UploadedPart { part_number, etag: format!("etag-{part_number}"), checksum_crc32: Some(checksum) })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        crc: u32,
    ) -> Result<(), StorageError> {
        self.finishing().await;
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Complete { key: key.to_owned(), parts: parts.len(), crc32: crc });
        let upload = state.uploads.remove(upload_id).ok_or_else(|| storage_error("Complete", "no such upload"))?;
        let numbers: Vec<i32> = parts.iter().map(|p| p.part_number).collect();
        if numbers != upload.parts.keys().copied().collect::<Vec<_>>() {
            return Err(storage_error("Complete", "parts do not match"));
        }
        let data: Vec<u8> = upload.parts.into_values().flatten().collect();
        if crc32(&data) != crc {
            return Err(storage_error("Complete", "full-object checksum mismatch"));
        }
        state.insert(key, data, upload.content_type, upload.metadata);
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Abort);
        state.uploads.remove(upload_id);
        Ok(())
    }
}

/// The type a PutObject stores: the SDK sends `application/octet-stream` when the request names
/// none (a multipart upload's object gets S3's `binary/octet-stream` instead: see `head_object`).
fn put_object_type(info: &ObjectInfo<'_>) -> Option<String> {
    Some(info.content_type.unwrap_or("application/octet-stream").to_owned())
}

impl ReadObject for MemoryStore {
    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
        let state = self.state.lock().unwrap();
        Ok(state.objects.get(key).map(|o| ObjectHead {
            bytes: o.data.len() as u64,
            // As S3 shows an object a multipart upload stored without one.
            content_type: Some(o.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into())),
            etag: o.etag.clone(),
            checksum_sha256: (o.metadata.contains_key(SHA256_METADATA) || o.full_object_sha256)
                .then(|| BASE64.encode(Sha256::digest(&o.data))),
            metadata: o.metadata.clone(),
        }))
    }

    async fn hash_object(&self, key: &str, etag: &str) -> Result<(u64, [u8; 32]), StorageError> {
        let mut state = self.state.lock().unwrap();
        state.reads += 1;
        let object = state.objects.get(key).ok_or_else(|| storage_error("GetObject", "NoSuchKey"))?;
        if object.etag != etag {
            return Err(storage_error("GetObject", "PreconditionFailed"));
        }
        Ok((object.data.len() as u64, Sha256::digest(&object.data).into()))
    }
}

/// What a scripted source answers for one URL.
#[derive(Debug, Clone)]
pub enum Script {
    Body {
        data: Vec<u8>,
        declared: bool,
        content_type: Option<String>,
    },
    Fail(FetchError),
    /// `data`, its length declared as twice that, then the connection reset.
    Reset {
        data: Vec<u8>,
    },
    /// Never answers.
    Hang,
    /// Panics (a bug in the copy path), its message `source panicked`.
    Panic,
}

impl Script {
    /// The source answering HTTP `status` with `reason`, and no `Retry-After`.
    pub fn http_error(status: u16, reason: &str) -> Script {
        Script::Fail(FetchError::Status { status, reason: reason.to_owned(), retry_after: None })
    }
}

/// One task's item collection as DynamoDB keeps it: the task item (a record without its
/// files, and the `queued` set: the names of the files whose messages were sent) and one
/// item per file (its status as stored: a file item never says `queued` unless written so).
#[derive(Debug, Clone, Default)]
pub struct Collection {
    pub task: Option<TaskRecord>,
    pub queued: BTreeSet<String>,
    pub files: BTreeMap<String, FileEntry>,
}

impl Collection {
    /// The record one Query and [`stemvault_vault::items::assemble`] make of it.
    pub fn assemble(&self) -> Option<TaskRecord> {
        let mut record = self.task.clone()?;
        record.files = self.files.clone();
        let generation = record.generation;
        for (name, file) in record.files.iter_mut() {
            // As the real reader: a name in the set is of the file set before a reopen that has
            // not committed.
            let open = matches!(file.status, FileStatus::Pending | FileStatus::Enqueuing);
            if open && self.queued.contains(name) && !file.is_uncommitted(generation) {
                file.status = FileStatus::Queued;
            }
        }
        Some(record)
    }
}

/// The bucket [`MemoryPorts`] says it writes to.
pub const VAULT_BUCKET: &str = "vault";

/// Every port in memory: the task table (item collections, with the same conditions as
/// the DynamoDB adapter's expressions), a bucket, scripted sources, and a record of delays,
/// manifests and table calls.
#[derive(Default)]
pub struct MemoryPorts {
    pub tables: Mutex<HashMap<String, Collection>>,
    /// Every task-table call, in order, by port method name.
    pub table_calls: Mutex<Vec<&'static str>>,
    pub store: MemoryStore,
    pub sources: Mutex<HashMap<String, Script>>,
    pub opened: Mutex<Vec<String>>,
    /// Fresh links by original URL (None: link refresh off; a URL not in the map: the
    /// provider's 404); every URL asked for is kept in `refreshed`.
    pub fresh_links: Mutex<Option<HashMap<String, Result<String, RefreshError>>>>,
    pub refreshed: Mutex<Vec<String>>,
    /// The provider never answers a fresh-link request.
    pub fresh_link_hangs: std::sync::atomic::AtomicBool,
    /// Every manifest written, in order (the bucket keeps the latest under its key).
    pub manifests: Mutex<Vec<(String, Manifest)>>,
    /// The key of every HeadObject, in order.
    pub heads: Mutex<Vec<String>>,
    /// Fail this many HeadObjects (S3 unavailable) before answering.
    pub head_failures: Mutex<u32>,
    /// This many HeadObjects read as no object (S3's 403 to a role denied the read; or a
    /// HEAD that came before another writer's object).
    pub heads_hidden: Mutex<u32>,
    /// Fail this many manifest writes before succeeding.
    pub manifest_failures: Mutex<u32>,
    /// Refuse this many manifest writes as conflicting (another writer's, each time).
    pub manifest_conflicts: Mutex<u32>,
    /// Hold the next manifest write.
    pub manifest_gate: Mutex<Option<ManifestGate>>,
    /// Fail this many `stored` records (the table unavailable) before succeeding.
    pub stored_failures: Mutex<u32>,
    /// The file's item as another worker leaves it just before the next file write (our lease
    /// ran out and it took the file over).
    pub changed_meanwhile: Mutex<Option<FileEntry>>,
    /// URLs and keys ingest writes into the file's item as `next_url` and `next_key`, one just
    /// before each of the next file writes (a callback with a newer URL came during a copy).
    /// (An empty key writes none: an edited item.)
    pub next_urls_meanwhile: Mutex<std::collections::VecDeque<(String, String)>>,
    /// Apply this many `stored` or `failed` writes but lose their answers:
    /// the SDK's retry of the same write is refused, with the item as the first left it.
    pub lost_answers: Mutex<u32>,
    /// Apply this many `stored` or `failed` writes but answer them with an error (every
    /// attempt the SDK made timed out, the first applied).
    pub unanswered_writes: Mutex<u32>,
    /// As `unanswered_writes`, for claims.
    pub unanswered_claims: Mutex<u32>,
    /// Fail this many claims without applying them (the table unavailable).
    pub claim_failures: Mutex<u32>,
    /// Fail this many settle writes (the table unavailable) before succeeding.
    pub settle_failures: Mutex<u32>,
    /// Write the task item over (its version + 1, as a delivery's count does) just before
    /// this many settle writes land.
    pub written_over_before_settle: Mutex<u32>,
    /// Fail this many releases (the table refusing the write) before succeeding.
    pub release_failures: Mutex<u32>,
    /// The next task reads wait here before they read and again before they answer:
    /// concurrent settle checks all start reading together, and all have read before any goes
    /// on. Once they have, it is gone: a read after (one checking again) does not wait.
    pub load_barrier: Mutex<Option<Arc<Barrier>>>,
    pub delays: Mutex<Vec<(String, Duration)>>,
    /// Delaying a message never answers.
    pub delays_hang: std::sync::atomic::AtomicBool,
    /// Delaying a message panics (a bug) this many times.
    pub delay_panics: Mutex<u32>,
    /// Recording a file stored, and releasing a file, never answer.
    pub file_writes_hang: std::sync::atomic::AtomicBool,
    pub measures: Mutex<Vec<Measure>>,
    /// The event bus: every event published, and a switch to fail publishes.
    pub events: MemoryEvents,
    pub now: Mutex<Option<Timestamp>>,
}

impl MemoryPorts {
    pub fn with_record(record: TaskRecord) -> MemoryPorts {
        let ports = MemoryPorts::default();
        ports.put_record(record);
        ports
    }

    /// Store every item of `record`, replacing the task's collection, as ingest would have
    /// left it: the task's `queued` set names every file past `enqueuing` (its message was
    /// sent).
    pub fn put_record(&self, record: TaskRecord) {
        let queued = record
            .files
            .iter()
            .filter(|(_, f)| !matches!(f.status, FileStatus::Pending | FileStatus::Enqueuing))
            .map(|(n, _)| n.clone())
            .collect();
        let files = record.files.clone();
        let task = TaskRecord { files: BTreeMap::new(), ..record };
        self.tables.lock().unwrap().insert(task.task_id.clone(), Collection { task: Some(task), queued, files });
    }

    pub fn source(&self, url: &str, script: Script) {
        self.sources.lock().unwrap().insert(url.to_owned(), script);
    }

    /// The task's record, assembled from its items.
    pub fn record(&self, task_id: &str) -> TaskRecord {
        self.tables.lock().unwrap()[task_id].assemble().expect("the task has a task item")
    }

    /// The file item as stored (`pending` where the record reads `queued`).
    pub fn file_item(&self, task_id: &str, name: &str) -> FileEntry {
        self.tables.lock().unwrap()[task_id].files[name].clone()
    }

    /// Change the file's item as another writer would (ingest, another worker).
    pub fn edit_file_item(&self, task_id: &str, name: &str, edit: impl FnOnce(&mut FileEntry)) {
        let mut tables = self.tables.lock().unwrap();
        edit(tables.get_mut(task_id).and_then(|c| c.files.get_mut(name)).expect("the file's item"));
    }

    pub fn opened(&self) -> Vec<String> {
        self.opened.lock().unwrap().clone()
    }

    /// The task-table calls so far, and forget them.
    pub fn take_table_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.table_calls.lock().unwrap())
    }

    fn called(&self, port: &'static str) {
        self.table_calls.lock().unwrap().push(port);
    }

    /// One conditional update of a file item: `change` when `allowed` holds for the item,
    /// which must exist; every write increments its `rev`. Refused, the item as it is.
    fn update_file(
        &self,
        task_id: &TaskId,
        name: &str,
        allowed: impl FnOnce(&FileEntry) -> bool,
        change: impl FnOnce(&mut FileEntry),
    ) -> FileWrite {
        let mut tables = self.tables.lock().unwrap();
        let Some(file) = tables.get_mut(task_id.as_str()).and_then(|c| c.files.get_mut(name)) else {
            return FileWrite::Refused(None);
        };
        if let Some(theirs) = self.changed_meanwhile.lock().unwrap().take() {
            *file = theirs;
        }
        if let Some((url, key)) = self.next_urls_meanwhile.lock().unwrap().pop_front() {
            (file.next_url, file.next_key) = (Some(url), Some(key).filter(|k| !k.is_empty()));
            file.rev += 1;
        }
        if !allowed(file) {
            return FileWrite::Refused(Some(Box::new(file.clone())));
        }
        change(file);
        file.rev += 1;
        match injected(&self.lost_answers) {
            true => FileWrite::Refused(Some(Box::new(file.clone()))),
            false => FileWrite::Applied,
        }
    }

    /// The claim holder's last write of its file, as the expressions make it: refused unless
    /// the file is held by `held.worker` and `also` holds; applied, the claim gone, the copied
    /// `next_url` (`held.next`) set as the URL, then `end`.
    fn finish(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        also: impl FnOnce(&FileEntry) -> bool,
        end: impl FnOnce(&mut FileEntry),
    ) -> FileWrite {
        self.update_file(
            task_id,
            name,
            |f| f.is_held_by(held.worker) && also(f),
            |f| {
                f.claim = None;
                if let Some(next) = held.next {
                    (f.url, f.key, f.next_url, f.next_key) = (next.url.to_owned(), next.key.to_owned(), None, None);
                    f.relinks = 0;
                }
                end(f);
            },
        )
    }
}

impl MemoryPorts {
    /// `written`, or an error for it while [`MemoryPorts::unanswered_writes`] are left.
    fn unanswered(&self, written: FileWrite) -> Result<FileWrite, StoreError> {
        match injected(&self.unanswered_writes) {
            true => Err(StoreError::Unavailable("injected: applied, every answer lost".into())),
            false => Ok(written),
        }
    }
}

/// Take one injected failure, if any are left.
fn injected(failures: &Mutex<u32>) -> bool {
    let mut failures = failures.lock().unwrap();
    let fail = *failures > 0;
    *failures = failures.saturating_sub(1);
    fail
}

impl Clock for MemoryPorts {
    fn now(&self) -> Timestamp {
        self.now.lock().unwrap().unwrap_or(Timestamp::from_unix_ms(1_800_000_000_000))
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await
    }
}

impl LoadTask for MemoryPorts {
    async fn load_task(&self, task_id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.called("load_task");
        let barrier = self.load_barrier.lock().unwrap().clone();
        // Bounded: a read whose partner never comes fails its test rather than hanging it.
        let meet = |barrier: Arc<Barrier>| async move {
            let met = tokio::time::timeout(Duration::from_secs(30), barrier.wait()).await;
            met.expect("load_task waited 30 s for a partner read that never came").is_leader()
        };
        if let Some(barrier) = &barrier {
            meet(barrier.clone()).await;
        }
        let read = self.tables.lock().unwrap().get(task_id.as_str()).and_then(Collection::assemble);
        if let Some(barrier) = barrier
            && meet(barrier).await
        {
            *self.load_barrier.lock().unwrap() = None;
        }
        Ok(read)
    }
}

impl ClaimFile for MemoryPorts {
    /// As the expression says: `attribute_exists(sk) AND (status IN (pending, enqueuing,
    /// queued) OR (status = downloading AND lease_until < now))`, ALL_NEW or ALL_OLD back.
    async fn claim_file(&self, task_id: &TaskId, name: &str, claim: &Claim) -> Result<ClaimAnswer, StoreError> {
        self.called("claim_file");
        tokio::task::yield_now().await;
        if injected(&self.claim_failures) {
            return Err(StoreError::Unavailable("injected: the table timed out".into()));
        }
        let mut tables = self.tables.lock().unwrap();
        let Some(file) = tables.get_mut(task_id.as_str()).and_then(|c| c.files.get_mut(name)) else {
            return Ok(ClaimAnswer::Refused(None));
        };
        let claimable = match file.status {
            FileStatus::Pending | FileStatus::Enqueuing | FileStatus::Queued => true,
            FileStatus::Downloading => file.lease_until.is_some_and(|lease| lease.lapsed_at(claim.now)),
            FileStatus::Stored | FileStatus::Failed => false,
        };
        if !claimable {
            return Ok(ClaimAnswer::Refused(Some(file.clone())));
        }
        file.status = FileStatus::Downloading;
        file.claim = Some(claim.worker.clone());
        file.lease_until = Some(claim.lease_until);
        file.attempts += 1;
        file.rev += 1;
        if injected(&self.unanswered_claims) {
            return Err(StoreError::Unavailable("injected: applied, every answer lost".into()));
        }
        Ok(ClaimAnswer::Claimed(file.clone()))
    }
}

impl RecordStored for MemoryPorts {
    async fn record_stored(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        stored: &StoredObject,
        stored_at: Timestamp,
    ) -> Result<FileWrite, StoreError> {
        self.called("record_stored");
        tokio::task::yield_now().await;
        if self.file_writes_hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if injected(&self.stored_failures) {
            return Err(StoreError::Unavailable("injected: the table timed out".into()));
        }
        // HELD: not on next_url (a newer URL gives way to the copy made).
        self.unanswered(self.finish(
            task_id,
            name,
            held,
            |_| true,
            |f| {
                f.status = FileStatus::Stored;
                (f.next_url, f.next_key) = (None, None);
                f.bytes = Some(stored.bytes);
                f.sha256 = Some(stored.sha256_hex.clone());
                f.content_type = stored.content_type.clone();
                f.stored_at = Some(stored_at);
                f.lease_until = None;
                (f.error, f.error_code) = (None, None);
            },
        ))
    }
}

impl RecordFailed for MemoryPorts {
    async fn record_failed(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        failure: &Failure<'_>,
    ) -> Result<FileWrite, StoreError> {
        self.called("record_failed");
        // HELD_NOTHING_NEWER or HELD_AT_NEXT.
        let nothing_newer = |f: &FileEntry| f.next_url.as_deref() == held.next.map(|next| next.url);
        self.unanswered(self.finish(task_id, name, held, nothing_newer, |f| {
            (f.status, f.error, f.lease_until) = (FileStatus::Failed, Some(failure.reason.to_owned()), None);
            (f.error_code, f.failed_at, f.next_url, f.next_key) = (Some(failure.code), Some(failure.at), None, None);
        }))
    }
}

impl ReleaseFile for MemoryPorts {
    async fn release_file(
        &self,
        task_id: &TaskId,
        name: &str,
        held: HeldCopy<'_>,
        error: &str,
    ) -> Result<Conditional, StoreError> {
        if self.file_writes_hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.called("release_file");
        if injected(&self.release_failures) {
            return Err(StoreError::Invalid("injected".into()));
        }
        let released_at = Some(LeaseEnd::at(self.now()));
        // HELD, or HELD_WITH_NEXT, moving the item's newest URL (not the one held) into `url`.
        let moving = held.next.is_some();
        let with_next = |f: &FileEntry| !moving || (f.next_url.is_some() && f.next_key.is_some());
        let written = self.finish(task_id, name, HeldCopy { next: None, ..held }, with_next, |f| {
            (f.status, f.error, f.lease_until) = (FileStatus::Pending, Some(error.to_owned()), released_at);
            if moving && let (Some(url), Some(key)) = (f.next_url.take(), f.next_key.take()) {
                (f.url, f.key, f.relinks) = (url, key, 0);
            }
        });
        Ok(match written {
            FileWrite::Applied => Conditional::Applied,
            FileWrite::Refused(_) => Conditional::Conflict,
        })
    }
}

impl SettleTask for MemoryPorts {
    /// As the expression says: at the plan's generation and stage, and not settled and marked
    /// open again, set `vault` and `manifest_key`, version + 1, no `open`; the old vault tells
    /// whether this write settled it.
    async fn settle_task(&self, task_id: &TaskId, plan: &ManifestPlan) -> Result<SettleWrite, StoreError> {
        self.called("settle_task");
        tokio::task::yield_now().await;
        if injected(&self.settle_failures) {
            return Err(StoreError::Unavailable("injected: the table timed out".into()));
        }
        let mut tables = self.tables.lock().unwrap();
        let Some(task) = tables.get_mut(task_id.as_str()).and_then(|c| c.task.as_mut()) else {
            return Ok(SettleWrite::Refused);
        };
        if injected(&self.written_over_before_settle) {
            task.version += 1;
        }
        let marked_again = task.manifest_key.is_some() && task.open.is_some();
        let moved_on =
            task.version != plan.version || task.generation != plan.generation || task.stage != plan.manifest.stage;
        if moved_on || marked_again || task.adding.is_some() {
            return Ok(SettleWrite::Refused);
        }
        let was = task.vault;
        task.vault = plan.vault;
        task.manifest_key = Some(plan.manifest_key.clone());
        task.announced = Some(plan.announcement.clone());
        task.open = None;
        task.version += 1;
        // As if_not_exists does: a watch already there keeps its schedule.
        if let (Some(at), None) = (plan.watch_from, &task.reconcile) {
            task.reconcile = Some(stemvault_vault::RECONCILE_DUE.to_owned());
            task.reconcile_at = Some(at);
        }
        Ok(if was == VaultState::Pending { SettleWrite::Settled } else { SettleWrite::Rewritten })
    }
}

/// Holds one manifest write just before S3 would evaluate its condition: `reached` says it
/// got there, and it goes on once `release` fires.
pub struct ManifestGate {
    pub reached: oneshot::Sender<()>,
    pub release: oneshot::Receiver<()>,
}

impl PublishEvents for MemoryPorts {
    async fn publish_events(&self, events: &[TaskEvent]) -> Result<(), PublishError> {
        self.events.publish_events(events).await
    }
}

impl WriteManifest for MemoryPorts {
    fn vault_bucket(&self) -> &str {
        VAULT_BUCKET
    }

    /// As S3 does: the condition is evaluated when the write lands, and every write gets a
    /// new ETag.
    async fn write_manifest(
        &self,
        key: &str,
        manifest: &Manifest,
        fence: ManifestFence,
        expected: Option<&str>,
    ) -> Result<Conditional, StorageError> {
        {
            let mut failures = self.manifest_failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(storage_error("PutObject", "injected manifest failure"));
            }
        }
        if injected(&self.manifest_conflicts) {
            return Ok(Conditional::Conflict);
        }
        let gate = self.manifest_gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.reached.send(());
            let _ = gate.release.await;
        }
        let mut state = self.store.state.lock().unwrap();
        if state.etag(key) != expected {
            return Ok(Conditional::Conflict);
        }
        let metadata =
            fence.metadata(manifest.stage).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        let body = serde_json::to_vec(manifest).unwrap();
        state.insert(key, body, Some("application/json".into()), metadata);
        self.manifests.lock().unwrap().push((key.to_owned(), manifest.clone()));
        Ok(Conditional::Applied)
    }
}

impl EmitMetrics<Measure> for MemoryPorts {
    fn emit_metrics(&self, measure: &Measure) {
        self.measures.lock().unwrap().push(measure.clone());
    }
}

impl DelayMessage for MemoryPorts {
    async fn delay_message(&self, receipt_handle: &str, delay: Duration) -> Result<(), stemvault_vault::QueueError> {
        self.delays.lock().unwrap().push((receipt_handle.to_owned(), delay));
        if injected(&self.delay_panics) {
            panic!("delaying the message panicked");
        }
        if self.delays_hang.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

impl FetchSource for MemoryPorts {
    async fn open(&self, url: &str, max_bytes: u64) -> Result<SourceBody<SourceChunks>, FetchError> {
        self.opened.lock().unwrap().push(url.to_owned());
        // Let a concurrent duplicate run up to its claim meanwhile.
        tokio::task::yield_now().await;
        let script = self.sources.lock().unwrap().get(url).cloned();
        match script {
            None => Err(FetchError::Status { status: 404, reason: "Not Found".into(), retry_after: None }),
            Some(Script::Fail(e)) => Err(e),
            Some(Script::Body { data, declared, content_type }) => {
                if declared && data.len() as u64 > max_bytes {
                    return Err(FetchError::TooLarge { limit: max_bytes, declared: Some(data.len() as u64) });
                }
                let body = body_of(&data, 64 * 1024, declared, content_type.as_deref());
                let chunks: SourceChunks = Box::pin(body.chunks);
                Ok(SourceBody { content_length: body.content_length, content_type: body.content_type, chunks })
            }
            Some(Script::Hang) => std::future::pending().await,
            Some(Script::Panic) => panic!("source panicked"),
            Some(Script::Reset { data }) => {
                let reset = Err(FetchError::Body("connection reset".into()));
                let chunks: SourceChunks = Box::pin(stream::iter([Ok(Bytes::from(data.clone())), reset]));
                Ok(SourceBody { content_length: Some(2 * data.len() as u64), content_type: None, chunks })
            }
        }
    }
}

impl FreshLink for MemoryPorts {
    async fn fresh_link(&self, url: &str) -> Option<Result<String, RefreshError>> {
        let links = self.fresh_links.lock().unwrap().clone()?;
        self.refreshed.lock().unwrap().push(url.to_owned());
        if self.fresh_link_hangs.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let not_found = || Err(RefreshError::Provider { code: 404, message: "not found".into() });
        Some(links.get(url).cloned().unwrap_or_else(not_found))
    }
}

impl ObjectStore for MemoryPorts {
    async fn put_streamed(
        &self,
        key: &str,
        body: Streamed,
        len: u64,
        info: ObjectInfo<'_>,
    ) -> Result<[u8; 32], StorageError> {
        self.store.put_streamed(key, body, len, info).await
    }

    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        info: ObjectInfo<'_>,
        sha256: [u8; 32],
    ) -> Result<(), StorageError> {
        self.store.put_object(key, body, info, sha256).await
    }

    async fn create_multipart(&self, key: &str, info: ObjectInfo<'_>) -> Result<String, StorageError> {
        self.store.create_multipart(key, info).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        crc32: u32,
    ) -> Result<UploadedPart, StorageError> {
        self.store.upload_part(key, upload_id, part_number, body, crc32).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        crc32: u32,
    ) -> Result<(), StorageError> {
        self.store.complete_multipart(key, upload_id, parts, crc32).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        self.store.abort_multipart(key, upload_id).await
    }
}

impl ReadObject for MemoryPorts {
    async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
        self.heads.lock().unwrap().push(key.to_owned());
        if injected(&self.head_failures) {
            return Err(StorageError::transient("HeadObject", "503 SlowDown"));
        }
        if injected(&self.heads_hidden) {
            return Ok(None);
        }
        self.store.head_object(key).await
    }

    async fn hash_object(&self, key: &str, etag: &str) -> Result<(u64, [u8; 32]), StorageError> {
        self.store.hash_object(key, etag).await
    }
}
