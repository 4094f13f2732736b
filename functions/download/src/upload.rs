//! Stream a source body into the vault bucket with memory bounded by two parts, whatever the
//! file's size.
//!
//! A body whose Content-Length is declared (up to S3's largest PutObject, 5 GiB) goes up in
//! one PutObject **as it arrives**, chunk by chunk, with no buffer, on a copy's first attempt
//! ([`UploadLimits::stream_declared`]; a retried copy is read as a body without a declared
//! length is, below, so that the SDK can retry its requests): the SDK hashes it with SHA-256 as it sends it and sends the digest
//! after it (an aws-chunked trailer), S3 verifies it and keeps it as the object's full-object
//! `ChecksumSHA256`, and answers it back: that is the digest recorded. Reading the source and
//! uploading overlap, and no part buffer is filled (fresh memory the kernel faults in, 4 KiB
//! at a time) nor copied into. Its length is checked on the way: a source that fails or sends more or fewer bytes than it declared
//! fails the put, and nothing is stored.
//!
//! One PutObject whatever its size: S3 bills a multipart upload of N parts N + 2 PUT requests
//! (a 9 MB stem four where one does), and a part's buffer is fresh memory to fill and copy.
//!
//! Any other body is cut into parts of `part_size` bytes as it arrives. One that turns out to
//! fit in one part (found out by reaching its end) goes up in one PutObject, whole. Anything
//! longer goes up as a multipart upload in which part N uploads while part N+1 is read, so at
//! most two parts are in memory. A multipart upload that fails for
//! any reason is aborted, and S3 shows the object only once CompleteMultipartUpload
//! succeeds, which happens only after the whole body arrived with exactly its declared
//! length: no partial object ever sits under the key.
//!
//! Every byte is hashed with SHA-256 once, while streaming: the whole body's digest is kept in
//! the record. A body put whole sends that digest as its `ChecksumSHA256` (a header), so S3
//! verifies it. A multipart upload's SHA-256 checksum could only be S3's composite (a
//! SHA-256 of the parts' SHA-256s: a second pass over every byte for a digest nobody reads),
//! so each part carries a CRC32 instead (S3 verifies every byte it receives), and
//! CompleteMultipartUpload the whole body's CRC32, combined from the parts' without reading
//! a byte again (S3 checks it against the object it assembles: a full-object checksum). A
//! CRC32 (carry-less multiply instructions, through the SDK's own `crc-fast`) costs under a
//! tenth of a SHA-256. CRC32 rather than CRC64NVME or CRC32C: S3 takes all three as
//! full-object checksums, but the local emulator (moto, without its optional native
//! libraries) computes only CRC32 correctly, and the SDK checks what GetObject returns.
//!
//! Every request carries its body's checksum (in a signed header, or as a trailer), so its
//! payload is not hashed a second time to sign it (see `crate::aws`).
//!
//! Every object carries the SHA-256 of the URL its bytes came from as its
//! [`SOURCE_METADATA`], and one put whole also the body's SHA-256 as its
//! [`SHA256_METADATA`] (a streamed one has only its checksum: the digest is known only once
//! the body is sent): what [`crate::existing`] reads back to recognise a complete copy that
//! an earlier attempt stored but could not record.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use stemvault_vault::best_effort;

use crate::error::{CopyError, FetchError, StorageError};
use crate::media;

/// Object metadata (`x-amz-meta-source-sha256`): the lower-case hex SHA-256 of the URL the
/// object's bytes came from (the whole URL, signed query included; a hash, so no signature is
/// kept in the clear).
pub const SOURCE_METADATA: &str = "source-sha256";
/// Object metadata (`x-amz-meta-sha256`) of an object put whole by one PutObject: the
/// lower-case hex SHA-256 of its body, the same digest S3 verified as its `ChecksumSHA256`.
/// A streamed or multipart object has none: its SHA-256 is only known once its body is sent
/// or its last part read, after its request or CreateMultipartUpload fixed its metadata.
pub const SHA256_METADATA: &str = "sha256";

/// The largest body streamed into one PutObject (S3's limit for one).
pub const MAX_STREAMED_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Smallest part size used (S3's minimum is 5 MiB).
pub const MIN_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's maximum number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// The part size for files of up to `max_file_bytes`: 8 MiB, or more when 10,000 parts of
/// 8 MiB would not hold the largest file allowed (rounded up to whole MiB).
pub fn part_size_for(max_file_bytes: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    let needed = max_file_bytes.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    usize::try_from(needed).unwrap_or(usize::MAX).max(MIN_PART_SIZE)
}

/// A source's response, ready to be streamed.
pub struct SourceBody<S> {
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    pub chunks: S,
}

impl<S> std::fmt::Debug for SourceBody<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceBody")
            .field("content_length", &self.content_length)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub bytes: u64,
    pub sha256_hex: String,
    pub content_type: Option<String>,
    /// 1 for a single PutObject; 0 for a copy an earlier attempt stored.
    pub parts: u32,
}

/// Where an upload goes: its key, and the hex SHA-256 of its source URL ([`SOURCE_METADATA`]).
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub key: &'a str,
    pub source_sha256: &'a str,
}

/// What an object is stored with besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo<'a> {
    pub content_type: Option<&'a str>,
    /// Kept as [`SOURCE_METADATA`].
    pub source_sha256: &'a str,
}

/// One uploaded part, as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub part_number: i32,
    pub etag: String,
    /// The part's CRC32 as S3 returned it (base64).
    pub checksum_crc32: Option<String>,
}

/// The CRC32 of `data` (S3's `ChecksumCRC32`, before its big-endian base64).
pub fn crc32(data: &[u8]) -> u32 {
    // A CRC-32 is 32 bits wide: nothing is cut off.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, data) as u32
}

/// The CRC32 of `a` followed by `b`, from theirs and the length of `b`.
pub fn crc32_combine(a: u32, b: u32, b_len: u64) -> u32 {
    crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc32IsoHdlc, a.into(), b.into(), b_len) as u32
}

/// A body streamed to the bucket as it arrives from the source, each chunk as it came.
pub type Streamed = Pin<Box<dyn Stream<Item = Result<Bytes, FetchError>> + Send>>;

/// The S3 operations an upload needs. `sha256` arguments are raw digests of `body`,
/// `crc32` ones CRC32s ([`crc32`]) of `body` or of the whole object. One port, not one per
/// request as elsewhere: its requests are the steps of one operation, storing a body (one
/// IAM action, `s3:PutObject`, allows them all but the abort), and a double of it fakes them
/// together.
pub trait ObjectStore {
    /// Store `body`, exactly `len` bytes, with `info`, as it streams in, without holding it:
    /// its SHA-256 is computed as it is sent and sent after it (an aws-chunked trailer), and
    /// S3 verifies it and keeps it as the object's full-object `ChecksumSHA256`. Returns that
    /// digest. A body that fails or ends short fails the put: nothing is stored.
    fn put_streamed(
        &self,
        key: &str,
        body: Streamed,
        len: u64,
        info: ObjectInfo<'_>,
    ) -> impl Future<Output = Result<[u8; 32], StorageError>> + Send;
    /// Store `body` whole, with `info` and `sha256` (as [`SHA256_METADATA`] too).
    fn put_object(
        &self,
        key: &str,
        body: Bytes,
        info: ObjectInfo<'_>,
        sha256: [u8; 32],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    fn create_multipart(
        &self,
        key: &str,
        info: ObjectInfo<'_>,
    ) -> impl Future<Output = Result<String, StorageError>> + Send;
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        crc32: u32,
    ) -> impl Future<Output = Result<UploadedPart, StorageError>> + Send;
    /// Complete the upload of `parts`, whose bytes in order have this `crc32`.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        crc32: u32,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    fn abort_multipart(&self, key: &str, upload_id: &str) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// How long past `stop_at` the request that makes the object (CompleteMultipartUpload, a
/// PutObject, a streamed one once its body is sent) may still take. Once sent, S3 may
/// complete it after its caller stopped waiting: on a message's last receive the file would
/// be recorded failed over a complete copy (a multipart upload's abort comes too late to stop
/// it). Within the invocation's [`stemvault_vault::DEADLINE_MARGIN`], beside the abort's
/// bound and one AWS attempt to record the file (checked where the margin is spent, in
/// `crate::app`).
pub const FINISH_RESERVE: std::time::Duration = std::time::Duration::from_secs(1);

/// Limits of one upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    pub part_size: usize,
    pub max_bytes: u64,
    /// Reading stops here (a retryable failure), leaving time to abort and record; the
    /// request that makes the object may run [`FINISH_RESERVE`] past it.
    pub stop_at: Instant,
    /// Stream a declared body into one PutObject ([`ObjectStore::put_streamed`]). Such a
    /// put cannot be retried by the SDK (the body is gone once sent): a first attempt streams,
    /// and one after an attempt that failed puts the body whole (or, longer than a part, in
    /// parts), so that a transient S3 error (503 SlowDown, a dead pooled connection) is
    /// retried at once instead of costing a redelivery and a new download.
    pub stream_declared: bool,
}

/// Stream `body` to `to`.
pub async fn upload<O, S>(
    store: &O,
    to: Destination<'_>,
    body: SourceBody<S>,
    limits: UploadLimits,
) -> Result<StoredObject, CopyError>
where
    O: ObjectStore + Sync,
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin + Send + 'static,
{
    if let Some(declared) = body.content_length.filter(|d| *d > limits.max_bytes) {
        return Err(FetchError::TooLarge { limit: limits.max_bytes, declared: Some(declared) }.into());
    }
    // The media type alone: the reason is recorded, shown by `GET` and sent in events.
    if let Some(content_type) = body.content_type.as_deref().and_then(|ct| media::not_the_file(ct, to.key)) {
        return Err(FetchError::NotTheFile { content_type }.into());
    }
    let content_type = media::stored_type(body.content_type);
    let key = to.key;
    let info = ObjectInfo { content_type: content_type.as_deref(), source_sha256: to.source_sha256 };
    let finish_by = limits.stop_at.checked_add(FINISH_RESERVE).unwrap_or(limits.stop_at);
    let streamable = |len: &u64| limits.stream_declared && (1..=MAX_STREAMED_PUT_BYTES).contains(len);
    if let Some(len) = body.content_length.filter(streamable) {
        // The body is read until `stop_at` (the stream fails there if bytes are still due,
        // and the put with it); its end of stream and S3's answer are waited for until
        // `finish_by`.
        let sha256 = before(finish_by, put_streamed(store, key, body.chunks, len, info, limits.stop_at)).await?;
        return Ok(StoredObject { bytes: len, sha256_hex: hex::encode(sha256), content_type, parts: 1 });
    }
    let mut reader = PartReader::new(body.chunks, body.content_length, limits.max_bytes);
    let first = before(limits.stop_at, async {
        let part = reader.next_part(limits.part_size).await?;
        let ended = reader.at_end().await?;
        Ok((part, ended))
    })
    .await;
    let (first, ended) = first?;
    if ended && first.is_empty() {
        return Err(FetchError::Empty.into());
    }
    if let Some(kind) = media::page_by_its_bytes(&first[..first.len().min(media::HEAD_BYTES)], key) {
        return Err(FetchError::NotTheFileByItsBytes { kind }.into());
    }
    if ended {
        // The whole body is this one part: its SHA-256 is the body's, computed once.
        let spare = reader.spare.take();
        let body = reader.finish();
        let sent = first.clone();
        let put = async { Ok(store.put_object(key, first, info, body.sha256).await?) };
        before(finish_by, put).await?;
        spares::keep(spare);
        spares::keep_sent(sent);
        return Ok(body.stored(1, content_type));
    }
    let upload_id = before(limits.stop_at, async { Ok(store.create_multipart(key, info).await?) }).await?;
    let sending = async {
        let (parts, crc32) =
            before(limits.stop_at, send_parts(store, key, &upload_id, &mut reader, first, limits.part_size)).await?;
        let complete = async { Ok(store.complete_multipart(key, &upload_id, &parts, crc32).await?) };
        before(finish_by, complete).await.map(|()| parts.len())
    };
    // A panic on the way (a bug) is the message's to contain, but not before the upload's
    // parts are aborted: they would be billed until the lifecycle rule.
    let completed = match AssertUnwindSafe(sending).catch_unwind().await {
        Ok(completed) => completed,
        Err(panic) => {
            abort(store, key, &upload_id).await;
            std::panic::resume_unwind(panic)
        }
    };
    spares::keep(reader.spare.take());
    match completed {
        Ok(count) => Ok(reader.finish().stored(u32::try_from(count).unwrap_or(u32::MAX), content_type)),
        Err(e) => {
            abort(store, key, &upload_id).await;
            Err(e)
        }
    }
}

/// Abort a multipart upload that failed. Often after the deadline stopped it, S3 being slow:
/// bounded, so the invocation still answers. S3's lifecycle rule for incomplete uploads cleans
/// up what an abort that fails or hangs leaves.
async fn abort<O: ObjectStore + Sync>(store: &O, key: &str, upload_id: &str) {
    match best_effort(store.abort_multipart(key, upload_id)).await {
        Some(Ok(())) => {}
        Some(Err(abort)) => tracing::warn!(
            error = %abort,
            "could not abort the multipart upload; its parts are billed until the bucket's lifecycle rule removes them (a day)"
        ),
        None => tracing::warn!(
            "no answer from S3 aborting the multipart upload; its parts are billed until the bucket's lifecycle rule \
             removes them (a day)"
        ),
    }
}

/// A body of a declared `len` goes up as it arrives, in one PutObject: no part buffer to
/// fill (fresh memory the kernel faults in, 4 KiB at a time), no copy into it, and the
/// source read and the upload overlap. Its length is checked on the way; what the source did
/// wrong (a failure, too many or too few bytes) is the error, rather than the upload it broke;
/// so is a body not read whole by `stop_at` ([`CopyError::OutOfTime`]).
async fn put_streamed<O, S>(
    store: &O,
    key: &str,
    chunks: S,
    len: u64,
    info: ObjectInfo<'_>,
    stop_at: Instant,
) -> Result<[u8; 32], CopyError>
where
    O: ObjectStore + Sync,
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin + Send + 'static,
{
    let failure: Arc<Mutex<Option<CopyError>>> = Arc::default();
    let checked = LengthChecked {
        chunks,
        len,
        total: 0,
        head: Vec::with_capacity(media::HEAD_BYTES),
        key: key.to_owned(),
        done: false,
        deadline: Box::pin(tokio::time::sleep_until(stop_at.into())),
        failure: failure.clone(),
    };
    let stored = store.put_streamed(key, Box::pin(checked), len, info).await;
    let failed = failure.lock().unwrap_or_else(PoisonError::into_inner).take();
    match (stored, failed) {
        (_, Some(source)) => Err(source),
        (stored, None) => Ok(stored?),
    }
}

/// Chunks checked against their declared length on the way: more or fewer than `len` bytes,
/// a failing chunk, first bytes that are a page or an error document for `key`
/// ([`media::page_by_its_bytes`]), or `stop_at` passing before the last, end the stream with
/// that error, also kept in `failure` (S3 makes no object of a body whose stream failed).
struct LengthChecked<S> {
    chunks: S,
    len: u64,
    total: u64,
    /// The body's first bytes, up to [`media::HEAD_BYTES`].
    head: Vec<u8>,
    key: String,
    done: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    failure: Arc<Mutex<Option<CopyError>>>,
}

impl<S> Stream for LengthChecked<S>
where
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin,
{
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // Only while bytes are still due: a body read whole ends the put however late its end
        // of stream is polled (the SDK polls it for the trailer once it has sent the bytes).
        if this.total < this.len && this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            *this.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(CopyError::OutOfTime);
            return Poll::Ready(Some(Err(FetchError::Timeout(CopyError::OutOfTime.to_string()))));
        }
        let failed = match ready!(this.chunks.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                this.total += chunk.len() as u64;
                let reading_head = this.head.len() < media::HEAD_BYTES;
                if reading_head {
                    let more = (media::HEAD_BYTES - this.head.len()).min(chunk.len());
                    this.head.extend_from_slice(&chunk[..more]);
                }
                match reading_head.then(|| media::page_by_its_bytes(&this.head, &this.key)).flatten() {
                    Some(kind) => FetchError::NotTheFileByItsBytes { kind },
                    None if this.total <= this.len => return Poll::Ready(Some(Ok(chunk))),
                    None => FetchError::LengthMismatch { expected: this.len, got: this.total },
                }
            }
            Some(Err(e)) => e,
            None if this.total == this.len => {
                this.done = true;
                return Poll::Ready(None);
            }
            None => FetchError::LengthMismatch { expected: this.len, got: this.total },
        };
        this.done = true;
        *this.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(failed.clone().into());
        Poll::Ready(Some(Err(failed)))
    }
}

/// Run `work` unless `stop_at` comes first.
async fn before<T>(stop_at: Instant, work: impl Future<Output = Result<T, CopyError>>) -> Result<T, CopyError> {
    tokio::time::timeout_at(stop_at.into(), work).await.unwrap_or(Err(CopyError::OutOfTime))
}

/// Upload part N while reading part N+1; returns every part, and the whole body's CRC32,
/// once the body has ended.
async fn send_parts<O, S>(
    store: &O,
    key: &str,
    upload_id: &str,
    reader: &mut PartReader<S>,
    first: Bytes,
    part_size: usize,
) -> Result<(Vec<UploadedPart>, u32), CopyError>
where
    O: ObjectStore + Sync,
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin + Send,
{
    let mut parts = Vec::new();
    let mut current = first;
    let mut number: i32 = 1;
    let mut whole: u32 = crc32(&[]);
    loop {
        // One pass over the part, in memory already (a CRC costs a few hundredths of a SHA-256).
        let crc = crc32(&current);
        whole = crc32_combine(whole, crc, current.len() as u64);
        let sent = current.clone();
        let sending = async { store.upload_part(key, upload_id, number, current, crc).await.map_err(CopyError::from) };
        let (uploaded, next) = tokio::try_join!(sending, reader.next_part(part_size))?;
        reader.recycle(sent);
        parts.push(uploaded);
        if next.is_empty() {
            return Ok((parts, whole));
        }
        number += 1;
        if u64::try_from(number).unwrap_or(u64::MAX) > MAX_PARTS {
            return Err(FetchError::TooLarge { limit: reader.max_bytes, declared: reader.declared }.into());
        }
        current = next;
    }
}

/// A body read to its end: its length and SHA-256.
struct WholeBody {
    bytes: u64,
    sha256: [u8; 32],
}

impl WholeBody {
    fn stored(self, parts: u32, content_type: Option<String>) -> StoredObject {
        StoredObject { bytes: self.bytes, sha256_hex: hex::encode(self.sha256), content_type, parts }
    }
}

/// Cuts a chunk stream into parts, hashing the whole body and checking its length on the way.
struct PartReader<S> {
    chunks: S,
    /// The rest of a chunk that straddled a part boundary.
    carry: Option<Bytes>,
    /// A sent part's buffer, to read the part after next into: two buffers serve a whole
    /// multipart upload (no fresh, page-faulted 8 MiB per part).
    spare: Option<BytesMut>,
    ended: bool,
    total: u64,
    declared: Option<u64>,
    max_bytes: u64,
    whole: Sha256,
}

impl<S> PartReader<S>
where
    S: Stream<Item = Result<Bytes, FetchError>> + Unpin,
{
    fn new(chunks: S, declared: Option<u64>, max_bytes: u64) -> Self {
        PartReader {
            chunks,
            carry: None,
            spare: spares::take(),
            ended: false,
            total: 0,
            declared,
            max_bytes,
            whole: Sha256::new(),
        }
    }

    /// The next chunk of the body, or None at its end (checked against Content-Length).
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        if let Some(carry) = self.carry.take() {
            return Ok(Some(carry));
        }
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    self.account(&chunk)?;
                    return Ok(Some(chunk));
                }
                Some(Err(e)) => return Err(e),
                None => {
                    self.ended = true;
                    if let Some(expected) = self.declared.filter(|d| *d != self.total) {
                        return Err(FetchError::LengthMismatch { expected, got: self.total });
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn account(&mut self, chunk: &Bytes) -> Result<(), FetchError> {
        self.total += chunk.len() as u64;
        if self.total > self.max_bytes {
            return Err(FetchError::TooLarge { limit: self.max_bytes, declared: self.declared });
        }
        if let Some(expected) = self.declared.filter(|d| self.total > *d) {
            return Err(FetchError::LengthMismatch { expected, got: self.total });
        }
        hash(&mut self.whole, chunk);
        Ok(())
    }

    /// Up to `size` bytes; shorter only at the end of the body (empty once it is over). Each
    /// byte is copied once, from the chunk it arrived in into the part (already hashed by
    /// [`Self::next_chunk`]).
    async fn next_part(&mut self, size: usize) -> Result<Bytes, CopyError> {
        let expected_rest = self.declared.map_or(size as u64, |d| d.saturating_sub(self.total) + self.carried());
        let capacity = size.min(usize::try_from(expected_rest).unwrap_or(size));
        let Some(mut first) = self.next_chunk().await? else { return Ok(Bytes::new()) };
        if first.len() >= size {
            // A chunk holding the whole part needs no copy.
            if first.len() > size {
                self.carry = Some(first.split_off(size));
            }
            return Ok(first);
        }
        // The second buffer of a multipart upload comes from the kept ones too: a fresh one
        // beside an idle kept one would raise the peak the pool is meant to leave unchanged.
        let mut buf = match self.spare.take().or_else(spares::take) {
            Some(spare) if spare.capacity() >= capacity => spare,
            _ => BytesMut::with_capacity(capacity),
        };
        buf.extend_from_slice(&first);
        while buf.len() < size {
            let Some(mut chunk) = self.next_chunk().await? else { break };
            let room = size - buf.len();
            if chunk.len() > room {
                self.carry = Some(chunk.split_off(room));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Keep the buffer of a part that was sent, if nothing else holds it any more; a spare it
    /// displaces (the last round reads no part into it) goes back to the kept ones.
    fn recycle(&mut self, sent: Bytes) {
        if let Ok(mut buf) = sent.try_into_mut() {
            buf.clear();
            spares::keep(self.spare.replace(buf));
        }
    }

    fn carried(&self) -> u64 {
        self.carry.as_ref().map_or(0, |c| c.len() as u64)
    }

    /// Whether the body is over; reads ahead one chunk to find out.
    async fn at_end(&mut self) -> Result<bool, FetchError> {
        if self.carry.is_some() {
            return Ok(false);
        }
        let next = self.next_chunk().await?;
        let ended = next.is_none();
        self.carry = next;
        Ok(ended)
    }

    fn finish(self) -> WholeBody {
        WholeBody { bytes: self.total, sha256: self.whole.finalize().into() }
    }
}

/// Part buffers kept between uploads (per process, so across a warm instance's batches): a file
/// reads into a buffer an earlier file used rather than a fresh 8 MiB that the kernel
/// page-faults in, 4 KiB at a time, as the first part is copied in (perf, 12 files of 8 MiB:
/// page faults were 24 % of the download's CPU, 9 in 10 of them in that copy). Only buffers
/// that were in use at once are ever kept (at most [`spares::KEPT`]: the
/// [`MAX_CONCURRENT_MESSAGES`](crate::app::MAX_CONCURRENT_MESSAGES) files, two buffers each when
/// multipart), so the peak is unchanged.
mod spares {
    use std::sync::Mutex;

    use bytes::{Bytes, BytesMut};

    use super::MIN_PART_SIZE;

    pub const KEPT: usize = 2 * crate::app::MAX_CONCURRENT_MESSAGES;

    static SPARES: Mutex<Vec<BytesMut>> = Mutex::new(Vec::new());

    /// A kept buffer, empty, if there is one.
    pub fn take() -> Option<BytesMut> {
        SPARES.lock().ok()?.pop()
    }

    /// Keep `buf` for a later upload (only a whole part's buffer; emptied).
    pub fn keep(buf: Option<BytesMut>) {
        let Some(mut buf) = buf.filter(|b| b.capacity() >= MIN_PART_SIZE) else { return };
        buf.clear();
        if let Ok(mut spares) = SPARES.lock()
            && spares.len() < KEPT
        {
            spares.push(buf);
        }
    }

    /// Keep the buffer of a part that was sent, if nothing else holds it any more.
    pub fn keep_sent(sent: Bytes) {
        keep(sent.try_into_mut().ok());
    }
}

/// Feed `data` to the body's SHA-256 (the one place the upload hashes: tests count the bytes).
fn hash(hasher: &mut Sha256, data: &[u8]) {
    #[cfg(test)]
    tests::HASHED.with(|h| h.set(h.get() + data.len() as u64));
    hasher.update(data);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::memory::{MemoryStore, StoreCall, body_of, deterministic_bytes};

    const PART: usize = MIN_PART_SIZE;

    thread_local! {
        /// Bytes fed to the body's SHA-256 on this thread (each `#[tokio::test]` runs on one).
        pub(super) static HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    const SOURCE: &str = "5a1e";

    fn to(key: &str) -> Destination<'_> {
        Destination { key, source_sha256: SOURCE }
    }

    fn limits() -> UploadLimits {
        UploadLimits {
            part_size: PART,
            max_bytes: 1 << 30,
            stop_at: Instant::now() + Duration::from_secs(60),
            stream_declared: true,
        }
    }

    /// A retried copy's limits: a body longer than a part goes up in parts, declared or not.
    fn retried() -> UploadLimits {
        UploadLimits { stream_declared: false, ..limits() }
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn part_size_grows_only_when_10000_parts_would_not_hold_the_limit() {
        assert_eq!(part_size_for(0), MIN_PART_SIZE);
        assert_eq!(part_size_for(2 << 30), MIN_PART_SIZE);
        assert_eq!(part_size_for(80 << 30), 9 * 1024 * 1024);
        assert_eq!(part_size_for(100 << 30), 11 * 1024 * 1024);
        for max in [1u64 << 33, 1 << 36, 5 << 40] {
            assert!(part_size_for(max) as u64 * MAX_PARTS >= max, "{max}");
        }
    }

    #[tokio::test]
    async fn a_type_a_browser_would_run_is_not_stored() {
        for (declared, source_type, stored_type) in
            [(true, "image/svg+xml", None), (false, "text/plain", None), (true, "image/png", Some("image/png"))]
        {
            let data = deterministic_bytes(PART * 2 + 1, 5);
            let store = MemoryStore::default();
            let stored = upload(&store, to("k"), body_of(&data, 7000, declared, Some(source_type)), retried()).await;
            assert_eq!(stored.unwrap().content_type.as_deref(), stored_type, "{source_type}");
            assert_eq!(store.stored("k").unwrap().content_type.as_deref(), stored_type, "{source_type}");
            let small = MemoryStore::default();
            let one_part = upload(&small, to("k"), body_of(&data[..10], 7000, declared, Some(source_type)), limits());
            assert_eq!(one_part.await.unwrap().content_type.as_deref(), stored_type, "{source_type}, one part");
            // A put without a type is shown as `application/octet-stream`, as S3 shows it.
            let shown = small.stored("k").unwrap().content_type;
            assert_eq!(shown.as_deref(), Some(stored_type.unwrap_or("application/octet-stream")), "{source_type}");
        }
    }

    #[tokio::test]
    async fn a_body_that_fits_in_one_part_goes_up_in_one_put() {
        for (len, declared) in [(1usize, true), (1, false), (1000, false), (PART, true), (PART, false)] {
            let data = deterministic_bytes(len, 3);
            let store = MemoryStore::default();
            let stored =
                upload(&store, to("k"), body_of(&data, 7000, declared, Some("audio/mpeg")), limits()).await.unwrap();
            assert_eq!(stored.bytes, len as u64);
            assert_eq!(stored.sha256_hex, sha_hex(&data));
            assert_eq!(stored.parts, 1);
            assert_eq!(stored.content_type.as_deref(), Some("audio/mpeg"));
            assert_eq!(store.object("k").unwrap(), data, "len {len}");
            let object = store.stored("k").unwrap();
            assert_eq!(object.metadata[SOURCE_METADATA], SOURCE, "which URL the bytes came from");
            // With its length declared it streams up as it arrives (the SHA-256 a trailer);
            // without, it is read whole first and put with its SHA-256 in a header.
            let streamed = declared && len > 0;
            let retried_store = MemoryStore::default();
            upload(&retried_store, to("k"), body_of(&data, 7000, declared, Some("audio/mpeg")), retried())
                .await
                .unwrap();
            let put_whole = StoreCall::Put { key: "k".into(), len, sha256: Sha256::digest(&data).into() };
            assert_eq!(
                retried_store.calls(),
                vec![put_whole.clone()],
                "a retried copy is put whole: the SDK can retry it"
            );
            let expected = if streamed { StoreCall::Streamed { key: "k".into(), len } } else { put_whole };
            assert_eq!(store.calls(), vec![expected], "len {len}, declared {declared}");
            assert_eq!(object.full_object_sha256, streamed);
            if !streamed {
                assert_eq!(object.metadata[SHA256_METADATA], sha_hex(&data), "the whole body's SHA-256");
            }
        }
    }

    #[tokio::test]
    async fn a_declared_body_goes_up_in_one_streamed_put_its_length_checked_on_the_way() {
        // Each chunk goes on as it arrives: the store sees the source's chunks, not a copy.
        let data = deterministic_bytes(PART, 4);
        let store = MemoryStore::default();
        upload(&store, to("k"), body_of(&data, 65_536, true, None), limits()).await.unwrap();
        assert_eq!(store.calls(), vec![StoreCall::Streamed { key: "k".into(), len: PART }]);
        // Longer than a part too: one request, not a multipart upload's N + 2.
        let longer = deterministic_bytes(3 * PART + 5, 4);
        let store = MemoryStore::default();
        let stored = upload(&store, to("k"), body_of(&longer, 65_536, true, None), limits()).await.unwrap();
        assert_eq!(store.calls(), vec![StoreCall::Streamed { key: "k".into(), len: 3 * PART + 5 }]);
        assert_eq!((stored.parts, stored.sha256_hex), (1, sha_hex(&longer)));
        assert_eq!(store.object("k").unwrap(), longer);
        // Fewer or more bytes than declared, or a failing body: the source's error, nothing stored.
        for (actual, declared) in [(1000, 1001u64), (1000, 999)] {
            let data = deterministic_bytes(actual, 5);
            let mut body = body_of(&data, 300, false, None);
            body.content_length = Some(declared);
            let store = MemoryStore::default();
            let err = upload(&store, to("k"), body, limits()).await.unwrap_err();
            assert!(
                matches!(err, CopyError::Fetch(FetchError::LengthMismatch { expected, .. }) if expected == declared),
                "{err}"
            );
            assert_eq!(store.object("k"), None);
        }
        let broken: Vec<Result<Bytes, FetchError>> =
            vec![Ok(Bytes::from_static(b"abc")), Err(FetchError::Body("connection reset".into()))];
        let body = SourceBody { content_length: Some(10), content_type: None, chunks: futures::stream::iter(broken) };
        let store = MemoryStore::default();
        let err = upload(&store, to("k"), body, limits()).await.unwrap_err();
        assert_eq!(err, CopyError::Fetch(FetchError::Body("connection reset".into())));
        assert_eq!(store.object("k"), None);
    }

    /// Past S3's largest PutObject a declared body goes up in parts, on a first attempt too
    /// (its length still checked: here the body ends short of it).
    #[tokio::test]
    async fn a_declared_body_past_the_largest_put_goes_up_in_parts() {
        let data = deterministic_bytes(2 * PART, 7);
        let mut body = body_of(&data, 65_536, false, None);
        body.content_length = Some(MAX_STREAMED_PUT_BYTES + 1);
        let store = MemoryStore::default();
        let huge = UploadLimits { max_bytes: 6 << 30, ..limits() };
        let err = upload(&store, to("k"), body, huge).await.unwrap_err();
        assert!(matches!(err, CopyError::Fetch(FetchError::LengthMismatch { .. })), "{err}");
        let calls = store.calls();
        assert!(matches!(calls.first(), Some(StoreCall::Create { .. })), "{calls:?}");
        assert!(calls.iter().any(|c| matches!(c, StoreCall::Abort)), "{calls:?}");
    }

    #[tokio::test]
    async fn a_longer_body_goes_up_in_parts_without_content_length_or_on_a_retry() {
        for (declared, attempt) in [(true, retried()), (false, limits())] {
            let len = 2 * PART + 12_345;
            let data = deterministic_bytes(len, 9);
            let store = MemoryStore::default();
            let stored = upload(&store, to("big"), body_of(&data, 65_536 + 7, declared, None), attempt).await.unwrap();
            assert_eq!((stored.bytes, stored.parts), (len as u64, 3));
            assert_eq!(stored.sha256_hex, sha_hex(&data));
            assert_eq!(store.object("big").unwrap(), data);
            let sizes: Vec<usize> = store
                .calls()
                .iter()
                .filter_map(|c| match c {
                    StoreCall::Part { len, crc32: crc, number } => {
                        let start = (*number as usize - 1) * PART;
                        assert_eq!(*crc, crc32(&data[start..start + len]), "part {number}");
                        Some(*len)
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(sizes, vec![PART, PART, 12_345]);
            let whole = crc32(&data);
            assert!(
                matches!(store.calls().last(), Some(StoreCall::Complete { parts: 3, crc32, .. }) if *crc32 == whole)
            );
            let metadata = store.stored("big").unwrap().metadata;
            assert_eq!(metadata[SOURCE_METADATA], SOURCE);
            assert!(!metadata.contains_key(SHA256_METADATA), "unknown when the upload is created");
        }
    }

    #[tokio::test]
    async fn every_byte_is_hashed_once_whatever_the_chunks_and_parts() {
        let cases = [(1, 1), (1000, 7), (PART, 65_536), (PART, PART), (PART + 1, 4096), (3 * PART, PART + 3)];
        for ((len, chunk), declared) in cases.into_iter().flat_map(|c| [(c, true), (c, false)]) {
            let data = deterministic_bytes(len, 11);
            let store = MemoryStore::default();
            HASHED.with(|h| h.set(0));
            let stored = upload(&store, to("k"), body_of(&data, chunk, declared, None), limits()).await.unwrap();
            // A streamed body is hashed by whoever sends it (the SDK, for its trailer), not here.
            let hashed_here = if declared { 0 } else { len as u64 };
            assert_eq!(HASHED.with(|h| h.get()), hashed_here, "{len} bytes in chunks of {chunk}");
            assert_eq!(stored.sha256_hex, sha_hex(&data));
            assert_eq!(store.object("k").unwrap(), data);
        }
    }

    /// The CRC32 S3 checks (CRC-32/ISO-HDLC, zlib's): its standard check value, a bitwise
    /// reference over generated bytes (whole and combined from two halves), and the header as
    /// S3 reads it (big-endian, base64). The emulator stores a part's or an object's checksum
    /// without checking it, so these stand for S3's own check: a wrong algorithm or combine
    /// would have every multipart copy refused (BadDigest) in AWS alone.
    #[test]
    fn crc32_is_the_one_s3_checks() {
        use base64::Engine;
        let reference = |data: &[u8]| {
            let mut crc = !0u32;
            for &byte in data {
                crc ^= u32::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            !crc
        };
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let data = deterministic_bytes(100_003, 5);
        assert_eq!(crc32(&data), reference(&data));
        let (a, b) = data.split_at(40_000);
        assert_eq!(crc32_combine(crc32(a), crc32(b), b.len() as u64), reference(&data));
        let header = base64::engine::general_purpose::STANDARD.encode(crc32(b"123456789").to_be_bytes());
        assert_eq!(header, "y/Q5Jg==");
    }

    #[tokio::test]
    async fn every_part_carries_its_crc32_and_the_completion_the_whole_bodys() {
        let data = deterministic_bytes(3 * PART + 1, 12);
        let store = MemoryStore::default();
        upload(&store, to("k"), body_of(&data, 100_003, true, None), retried()).await.unwrap();
        let calls = store.calls();
        let parts: Vec<(i32, u32)> = calls
            .iter()
            .filter_map(|c| match c {
                StoreCall::Part { number, crc32, .. } => Some((*number, *crc32)),
                _ => None,
            })
            .collect();
        let expected: Vec<(i32, u32)> = data.chunks(PART).zip(1..).map(|(part, n)| (n, crc32(part))).collect();
        assert_eq!(parts, expected, "one checksum per part, of that part's bytes");
        assert!(parts.iter().all(|(_, crc)| *crc != 0 && *crc != crc32(&[])));
        let whole = crc32(&data);
        assert_eq!(calls.last(), Some(&StoreCall::Complete { key: "k".into(), parts: 4, crc32: whole }));
        assert_eq!(crc32_combine(crc32(&data[..5]), crc32(&data[5..]), data.len() as u64 - 5), whole);
    }

    #[tokio::test]
    async fn a_sent_parts_buffer_is_read_into_again_once_nothing_holds_it() {
        let data = deterministic_bytes(3 * PART, 13);
        let body = body_of(&data, 65_536, true, None);
        let mut reader = PartReader::new(body.chunks, body.content_length, 1 << 30);
        let first = reader.next_part(PART).await.unwrap();
        let address = first.as_ptr();
        let held = first.clone();
        reader.recycle(first);
        let second = reader.next_part(PART).await.unwrap();
        assert_ne!(second.as_ptr(), address, "still held elsewhere: not reused");
        assert_eq!(&held[..], &data[..PART]);
        drop(held);
        let second_address = second.as_ptr();
        reader.recycle(second);
        let third = reader.next_part(PART).await.unwrap();
        assert_eq!(third.as_ptr(), second_address, "reused");
        assert_eq!(&third[..], &data[2 * PART..]);
    }

    #[tokio::test]
    async fn an_exact_multiple_of_the_part_size_has_no_empty_last_part() {
        let data = deterministic_bytes(2 * PART, 1);
        let store = MemoryStore::default();
        let stored = upload(&store, to("k"), body_of(&data, 1 << 20, true, None), retried()).await.unwrap();
        assert_eq!(stored.parts, 2);
        assert_eq!(store.object("k").unwrap(), data);
    }

    #[tokio::test]
    async fn a_body_shorter_or_longer_than_its_content_length_is_refused_and_aborted() {
        let cases = [(PART + 10, PART as u64 + 11), (PART + 10, PART as u64 + 9), (10, 11), (10, 9)];
        // Streamed on a first attempt; read in parts (or whole) on a retry.
        for ((actual, declared), attempt) in cases.into_iter().flat_map(|c| [(c, limits()), (c, retried())]) {
            let data = deterministic_bytes(actual, 2);
            let mut body = body_of(&data, 4096, false, None);
            body.content_length = Some(declared);
            let store = MemoryStore::default();
            let err = upload(&store, to("k"), body, attempt).await.unwrap_err();
            assert!(
                matches!(err, CopyError::Fetch(FetchError::LengthMismatch { expected, .. }) if expected == declared)
            );
            assert!(err.is_retryable());
            assert_eq!(store.object("k"), None);
            assert!(store.open_uploads().is_empty(), "aborted");
        }
    }

    #[tokio::test]
    async fn the_size_cap_holds_on_content_length_and_while_streaming() {
        let data = deterministic_bytes(PART + 100, 4);
        let small = UploadLimits { max_bytes: PART as u64 + 50, ..limits() };
        for declared in [true, false] {
            let store = MemoryStore::default();
            let err = upload(&store, to("k"), body_of(&data, 8192, declared, None), small).await.unwrap_err();
            assert!(matches!(err, CopyError::Fetch(FetchError::TooLarge { .. })), "{err}");
            assert!(!err.is_retryable());
            assert_eq!(store.object("k"), None);
            assert!(store.open_uploads().is_empty());
            if declared {
                assert!(store.calls().is_empty(), "refused before reading");
            }
        }
    }

    #[tokio::test]
    async fn a_broken_body_aborts_the_upload() {
        let data = deterministic_bytes(3 * PART, 5);
        let chunks: Vec<Result<Bytes, FetchError>> = data
            .chunks(1 << 20)
            .take(20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .chain([Err(FetchError::Body("connection reset".into()))])
            .collect();
        let body = SourceBody {
            content_length: Some(data.len() as u64),
            content_type: None,
            chunks: futures::stream::iter(chunks),
        };
        let store = MemoryStore::default();
        let err = upload(&store, to("k"), body, retried()).await.unwrap_err();
        assert_eq!(err, CopyError::Fetch(FetchError::Body("connection reset".into())));
        assert_eq!(store.object("k"), None);
        assert!(store.open_uploads().is_empty());
        assert!(store.calls().iter().any(|c| matches!(c, StoreCall::Abort)));
    }

    /// A panic while the parts go up still aborts the upload, then goes on unwinding to the
    /// message's `catch_panic`.
    #[tokio::test]
    async fn a_panic_while_the_parts_go_up_aborts_the_upload() {
        let data = deterministic_bytes(3 * PART, 6);
        let store = MemoryStore { panic_part: Some(2), ..MemoryStore::default() };
        let uploading = upload(&store, to("k"), body_of(&data, 1 << 16, true, None), retried());
        assert!(AssertUnwindSafe(uploading).catch_unwind().await.is_err(), "the panic goes on");
        assert!(store.calls().iter().any(|c| matches!(c, StoreCall::Abort)));
        assert!(store.open_uploads().is_empty(), "aborted");
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload() {
        let data = deterministic_bytes(3 * PART, 6);
        let store = MemoryStore { fail_part: Some(2), ..MemoryStore::default() };
        let err = upload(&store, to("k"), body_of(&data, 1 << 16, true, None), retried()).await.unwrap_err();
        assert!(matches!(err, CopyError::Storage(_)));
        assert_eq!(store.object("k"), None);
        assert!(store.open_uploads().is_empty());
    }

    /// What a [`StalledStore`] answers before it stops answering.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Stall {
        /// Nothing.
        Everything,
        /// It starts a multipart upload, then answers nothing more (its abort included).
        AfterStart,
        /// It starts an upload and takes its parts, but never completes it (aborts it).
        AtComplete,
    }

    /// A bucket that stops answering (`stall`); [`Stall::AfterStart`] leaves the abort
    /// unanswered too.
    struct StalledStore {
        stall: Stall,
    }

    impl ObjectStore for StalledStore {
        async fn put_streamed(
            &self,
            _: &str,
            _: Streamed,
            _: u64,
            _: ObjectInfo<'_>,
        ) -> Result<[u8; 32], StorageError> {
            futures::future::pending().await
        }
        async fn put_object(&self, _: &str, _: Bytes, _: ObjectInfo<'_>, _: [u8; 32]) -> Result<(), StorageError> {
            futures::future::pending().await
        }
        async fn create_multipart(&self, _: &str, _: ObjectInfo<'_>) -> Result<String, StorageError> {
            match self.stall {
                Stall::Everything => futures::future::pending().await,
                Stall::AfterStart | Stall::AtComplete => Ok("upload-1".into()),
            }
        }
        async fn upload_part(
            &self,
            _: &str,
            _: &str,
            part_number: i32,
            _: Bytes,
            _: u32,
        ) -> Result<UploadedPart, StorageError> {
            match self.stall {
                Stall::AtComplete => Ok(UploadedPart { part_number, etag: "e".into(), checksum_crc32: None }),
                Stall::Everything | Stall::AfterStart => futures::future::pending().await,
            }
        }
        async fn complete_multipart(&self, _: &str, _: &str, _: &[UploadedPart], _: u32) -> Result<(), StorageError> {
            futures::future::pending().await
        }
        async fn abort_multipart(&self, _: &str, _: &str) -> Result<(), StorageError> {
            match self.stall {
                Stall::AfterStart => futures::future::pending().await,
                Stall::Everything | Stall::AtComplete => Ok(()),
            }
        }
    }

    /// An empty success is no file: retried, nothing stored, whether its length said 0 or it
    /// said none.
    #[tokio::test]
    async fn an_empty_body_is_retried_not_stored() {
        for declared in [true, false] {
            let store = MemoryStore::default();
            let err = upload(&store, to("k"), body_of(&[], 1, declared, None), limits()).await.unwrap_err();
            assert_eq!(err, CopyError::Fetch(FetchError::Empty), "declared: {declared}");
            assert!(err.is_retryable());
            assert_eq!((store.object("k"), store.calls().len()), (None, 0));
        }
    }

    /// A page or an error document in place of a media file is retried, nothing stored, its
    /// reason naming the media type alone (the parameters are the source's free text, and
    /// the reason is shown); a JSON file whose URL names JSON is stored.
    #[tokio::test]
    async fn a_page_in_place_of_the_file_is_retried_not_stored() {
        for (content_type, key, named) in [
            ("text/html; charset=utf-8", "t/a.mp3", "text/html"),
            ("Text/HTML; x=<script>alert(1)</script>", "t/a.mp3", "text/html"),
            ("application/json", "t/a.png", "application/json"),
        ] {
            let store = MemoryStore::default();
            let page = body_of(b"<html>not found</html>", 4, true, Some(content_type));
            let err = upload(&store, to(key), page, limits()).await.unwrap_err();
            let expected = FetchError::NotTheFile { content_type: named.into() };
            assert_eq!(err, CopyError::Fetch(expected), "{content_type}");
            assert!(err.is_retryable());
            assert_eq!((store.object(key), store.calls().len()), (None, 0));
        }
        let store = MemoryStore::default();
        let notes = body_of(b"{\"notes\": []}", 4, true, Some("application/json"));
        let stored = upload(&store, to("t/notes.json"), notes, limits()).await.unwrap();
        assert_eq!(
            (stored.content_type.as_deref(), store.object("t/notes.json").map(|o| o.len())),
            (Some("application/json"), Some(13))
        );
    }

    /// A page whose Content-Type says nothing (`application/octet-stream`, or none) is told
    /// by its first bytes on every path (streamed, put whole, in parts), even as they come a
    /// few at a time: retried, nothing stored.
    #[tokio::test]
    async fn a_page_told_by_its_first_bytes_is_retried_not_stored() {
        let mut long = b"\r\n<!DOCTYPE html><html><body>not ready".to_vec();
        long.resize(PART * 2 + 5, b' ');
        let short = &long[..200];
        for (page, limits, declared, chunk, content_type) in [
            (short, limits(), true, 3, Some("application/octet-stream")),
            (&long[..], limits(), true, 4096, None),
            (short, retried(), true, 7, None),
            (short, limits(), false, 7, Some("binary/octet-stream")),
            (&long[..], retried(), true, 4096, None),
            (&long[..], limits(), false, 4096, None),
        ] {
            let store = MemoryStore::default();
            let case = format!("{} bytes, declared {declared}, chunks of {chunk}", page.len());
            let err = upload(&store, to("t/a.mp3"), body_of(page, chunk, declared, content_type), limits).await;
            let err = err.unwrap_err();
            assert_eq!(err, CopyError::Fetch(FetchError::NotTheFileByItsBytes { kind: "an HTML page" }), "{case}");
            assert!(err.is_retryable());
            assert_eq!((store.object("t/a.mp3"), store.open_uploads()), (None, vec![]), "{case}");
        }
    }

    /// Each request of each path is bounded by the deadline: the streamed PutObject, the
    /// whole one (a retried copy), CreateMultipartUpload, UploadPart, CompleteMultipartUpload.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_bucket_stops_at_the_deadline_on_every_upload_path() {
        for (len, streamed, stall) in [
            (1000, true, Stall::Everything),
            (1000, false, Stall::Everything),
            // A retried copy longer than a part: the multipart requests.
            (PART + 1, false, Stall::Everything),
            (PART + 1, false, Stall::AfterStart),
            (PART + 1, false, Stall::AtComplete),
        ] {
            let data = deterministic_bytes(len, 8);
            // The paused clock's now: the abort bound of a case before moves it on.
            let stop_at = tokio::time::Instant::now().into_std() + Duration::from_millis(200);
            let soon = UploadLimits { stop_at, stream_declared: streamed, ..limits() };
            let store = StalledStore { stall };
            let uploading = upload(&store, to("k"), body_of(&data, 1 << 16, true, None), soon);
            let case = format!("{len} bytes, streamed {streamed}, {stall:?}");
            let ended = tokio::time::timeout(Duration::from_secs(10), uploading).await;
            assert_eq!(ended.unwrap_or_else(|_| panic!("{case}: hung")).unwrap_err(), CopyError::OutOfTime, "{case}");
        }
    }

    /// The request that makes the object, sent before the deadline, is waited for a little past
    /// it ([`FINISH_RESERVE`]): S3 may complete it anyway, and a copy recorded failed on the last
    /// receive would sit complete in the bucket. One slower than that is still given up.
    #[tokio::test(start_paused = true)]
    async fn the_request_making_the_object_may_answer_a_little_past_the_deadline() {
        for (len, streamed, late_by, stored) in [
            (1000, false, Duration::from_millis(500), true),
            (1000, true, Duration::from_millis(500), true),
            (PART + 1, false, Duration::from_millis(500), true),
            (1000, false, FINISH_RESERVE + Duration::from_secs(1), false),
            (1000, true, FINISH_RESERVE + Duration::from_secs(1), false),
            (PART + 1, false, FINISH_RESERVE + Duration::from_secs(1), false),
        ] {
            let data = deterministic_bytes(len, 10);
            let stop_at = tokio::time::Instant::now().into_std() + Duration::from_millis(200);
            let soon = UploadLimits { stop_at, stream_declared: streamed, ..limits() };
            let store = MemoryStore { finish_delay: Duration::from_millis(200) + late_by, ..Default::default() };
            let copied = upload(&store, to("k"), body_of(&data, 1 << 16, true, None), soon).await;
            let case = format!("{len} bytes, streamed {streamed}, answered {late_by:?} late");
            if stored {
                assert_eq!(copied.expect(&case).sha256_hex, sha_hex(&data), "{case}");
                assert_eq!(store.object("k").as_deref(), Some(&data[..]), "{case}");
            } else {
                assert_eq!(copied.unwrap_err(), CopyError::OutOfTime, "{case}");
                assert_eq!(store.object("k"), None, "{case}");
            }
            assert!(store.open_uploads().is_empty(), "{case}");
        }
    }

    /// The abort after the deadline stopped an upload is bounded too: a bucket that does not
    /// answer it must not run the invocation into its timeout.
    #[tokio::test(start_paused = true)]
    async fn an_abort_that_hangs_is_given_up() {
        let data = deterministic_bytes(PART + 1, 9);
        let stop_at = tokio::time::Instant::now().into_std() + Duration::from_millis(200);
        let soon = UploadLimits { stop_at, ..retried() };
        let uploading =
            upload(&StalledStore { stall: Stall::AfterStart }, to("k"), body_of(&data, 1 << 16, true, None), soon);
        let ended = tokio::time::timeout(Duration::from_secs(60), uploading).await;
        assert_eq!(ended.expect("given up"), Err(CopyError::OutOfTime));
    }

    /// A declared body that stops coming, streamed into its PutObject, fails that put at the
    /// deadline (a retryable deadline, not a source error), nothing stored.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_streamed_body_stops_at_the_deadline() {
        let data = deterministic_bytes(1000, 7);
        let head = futures::stream::iter(vec![Ok(Bytes::from(data))]);
        let chunks = head.chain(futures::stream::pending());
        let body = SourceBody { content_length: Some(2000), content_type: None, chunks: Box::pin(chunks) };
        let store = MemoryStore::default();
        let stop_at = tokio::time::Instant::now().into_std() + Duration::from_millis(200);
        let soon = UploadLimits { stop_at, ..limits() };
        let ended = tokio::time::timeout(Duration::from_secs(60), upload(&store, to("k"), body, soon)).await;
        assert_eq!(ended.expect("given up"), Err(CopyError::OutOfTime));
        assert_eq!(store.object("k"), None);
        assert!(matches!(store.calls()[..], [StoreCall::Streamed { len: 1000, .. }]), "{:?}", store.calls());
    }

    /// A streamed body whose every byte came before the deadline, its end of stream polled
    /// only after it, is stored: the deadline is for reading the body, not for its end.
    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_read_whole_before_the_deadline_is_stored_whenever_it_ends() {
        let data = deterministic_bytes(1000, 11);
        let stop_at = tokio::time::Instant::now().into_std() + Duration::from_millis(200);
        let late_end = futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        })
        .filter_map(|end: Option<Result<Bytes, FetchError>>| async move { end });
        let chunks = futures::stream::iter(vec![Ok(Bytes::from(data.clone()))]).chain(late_end);
        let body = SourceBody { content_length: Some(1000), content_type: None, chunks: Box::pin(chunks) };
        let store = MemoryStore::default();
        let soon = UploadLimits { stop_at, ..limits() };
        let stored = upload(&store, to("k"), body, soon).await.expect("stored");
        assert_eq!((stored.sha256_hex, store.object("k")), (sha_hex(&data), Some(data)));
    }

    #[tokio::test]
    async fn a_stalled_body_stops_at_the_deadline_and_aborts() {
        let data = deterministic_bytes(PART + 1, 7);
        let head = futures::stream::iter(vec![Ok(Bytes::from(data))]);
        let chunks = head.chain(futures::stream::pending());
        let body = SourceBody { content_length: None, content_type: None, chunks: Box::pin(chunks) };
        let store = MemoryStore::default();
        let soon = UploadLimits { stop_at: Instant::now() + Duration::from_millis(200), ..limits() };
        let err = upload(&store, to("k"), body, soon).await.unwrap_err();
        assert_eq!(err, CopyError::OutOfTime);
        assert!(err.is_retryable());
        assert_eq!(store.object("k"), None);
        assert!(store.open_uploads().is_empty());
    }
}
