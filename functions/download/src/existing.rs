//! Recognising a complete copy already under a file's key, so a redelivered message records
//! it instead of copying it again.
//!
//! An attempt can upload a file and then fail to record it (the task table refused or timed
//! out, the invocation ended): the file stays claimed, and once the claim's lease is over a
//! redelivered message claims it again. Copying again would download the whole file a second
//! time, and fail it for good if its URL has expired meanwhile. So an attempt that finds an
//! earlier attempt recorded ([`crate::domain`] asks only then) first looks under the key:
//!
//! * S3 shows an object only once it is complete (one PutObject, or CompleteMultipartUpload
//!   after every part), so any object under the key is a whole upload;
//! * its [`SOURCE_METADATA`] says which URL its bytes came from: only the record's current URL
//!   counts (an object copied from an older URL is copied over);
//! * its SHA-256: a body streamed up in one PutObject has it as its full-object
//!   `ChecksumSHA256` (sent as a trailer, checked by S3, shown with checksum mode on); one
//!   put whole (a body without Content-Length, or a retried copy, that fit in one part)
//!   carries it as [`SHA256_METADATA`] too, the same digest S3 verified (which must agree).
//!   A multipart object has no SHA-256 of its whole body anywhere (its checksum
//!   is a CRC32, see [`crate::upload`]; one stored by an older version carries S3's
//!   composite `ChecksumSHA256`, `<digest>-<parts>`, the SHA-256 of its parts' SHA-256s), so
//!   it is read back and hashed, streaming, which costs one GetObject and no download from
//!   the provider.
//!
//! An object that is missing, from another URL or unreadable is simply copied again.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;
use stemvault_vault::shown::url_sha256;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::StorageError;
use crate::upload::{SHA256_METADATA, SOURCE_METADATA, StoredObject};

/// What HeadObject (with checksum mode on) says about an object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectHead {
    pub bytes: u64,
    pub content_type: Option<String>,
    pub etag: String,
    /// `ChecksumSHA256` (base64): the whole body's for a single PutObject, the composite for
    /// a multipart upload.
    pub checksum_sha256: Option<String>,
    /// The user metadata, by name without its `x-amz-meta-` prefix.
    pub metadata: HashMap<String, String>,
}

/// Reading back what lies under a key: its head, then its bytes (both `s3:GetObject`).
pub trait ReadObject {
    /// The object under `key`; None when there is none the function can read.
    fn head_object(&self, key: &str) -> impl Future<Output = Result<Option<ObjectHead>, StorageError>> + Send;
    /// Read the whole object, streaming, if it is still the one whose ETag is `etag` (a 412,
    /// retried, when another write replaced it): its length and SHA-256.
    fn hash_object(&self, key: &str, etag: &str) -> impl Future<Output = Result<(u64, [u8; 32]), StorageError>> + Send;
}

/// The complete copy of `url` under `key`, if an earlier attempt stored one: what to record.
/// Gives up at `stop_at`.
pub async fn find_copy<R: ReadObject + Sync>(
    store: &R,
    key: &str,
    url: &str,
    stop_at: Instant,
) -> Result<Option<StoredObject>, StorageError> {
    let looking = async {
        let Some(head) = store.head_object(key).await? else { return Ok(None) };
        if head.metadata.get(SOURCE_METADATA) != Some(&url_sha256(url)) {
            return Ok(None);
        }
        let full_object = head.checksum_sha256.as_deref().and_then(full_object_sha256);
        let sha256_hex = match (head.metadata.get(SHA256_METADATA), full_object) {
            (Some(hex), _) if agrees_with_checksum(hex, head.checksum_sha256.as_deref()) => hex.clone(),
            (Some(_), _) => return Ok(None),
            (None, Some(digest)) => hex::encode(digest),
            (None, None) => {
                // The object the HEAD showed, not one written since (a 412 is retried).
                let (bytes, digest) = store.hash_object(key, &head.etag).await?;
                // Should a store answer without an ETag (If-Match then checks nothing).
                if bytes != head.bytes {
                    return Ok(None);
                }
                hex::encode(digest)
            }
        };
        let content_type = crate::media::stored_type(head.content_type);
        Ok(Some(StoredObject { bytes: head.bytes, sha256_hex, content_type, parts: 0 }))
    };
    let timed_out = || StorageError::transient("GetObject", "no time left to read back the stored copy");
    tokio::time::timeout_at(stop_at.into(), looking).await.unwrap_or_else(|_| Err(timed_out()))
}

/// A `ChecksumSHA256` that is a whole body's SHA-256 (not a multipart upload's composite,
/// `<digest>-<parts>`).
pub(crate) fn full_object_sha256(checksum: &str) -> Option<[u8; 32]> {
    if checksum.contains('-') {
        return None;
    }
    BASE64.decode(checksum).ok().and_then(|d| <[u8; 32]>::try_from(d).ok())
}

/// Whether `hex` is a SHA-256 in lower-case hex that matches S3's full-object checksum, when
/// S3 shows one (a composite, `<digest>-<parts>`, says nothing about the whole body).
fn agrees_with_checksum(hex: &str, checksum: Option<&str>) -> bool {
    let Ok(digest) = hex::decode(hex) else { return false };
    if digest.len() != 32 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    match checksum {
        Some(checksum) if !checksum.contains('-') => checksum == BASE64.encode(&digest),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::memory::{MemoryStore, deterministic_bytes};
    use crate::upload::{MIN_PART_SIZE, ObjectInfo, ObjectStore, UploadedPart, crc32};
    use sha2::{Digest, Sha256};

    const URL: &str = "https://cdn1.suno.ai/vocal.mp3?sig=1";

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    async fn put(store: &MemoryStore, key: &str, data: &[u8], url: &str) {
        let info = ObjectInfo { content_type: Some("audio/mpeg"), source_sha256: &url_sha256(url) };
        store.put_object(key, Bytes::copy_from_slice(data), info, sha256(data)).await.unwrap();
    }

    #[tokio::test]
    async fn a_streamed_copy_of_the_same_url_is_found_by_its_checksum_without_reading_it() {
        let store = MemoryStore::default();
        let data = deterministic_bytes(1000, 2);
        let info = ObjectInfo { content_type: None, source_sha256: &url_sha256(URL) };
        let chunks = futures::stream::iter(vec![Ok(Bytes::copy_from_slice(&data))]);
        store.put_streamed("k", Box::pin(chunks), 1000, info).await.unwrap();
        assert!(!store.stored("k").unwrap().metadata.contains_key(SHA256_METADATA));
        let found = find_copy(&store, "k", URL, soon()).await.unwrap().expect("found");
        assert_eq!((found.bytes, found.sha256_hex), (1000, hex::encode(sha256(&data))));
        assert_eq!(found.content_type, None, "stored without one, as the fresh copy records it");
        assert_eq!(store.reads(), 0, "not read back");
        assert_eq!(find_copy(&store, "k", "https://cdn1.suno.ai/other.mp3", soon()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_single_put_copy_of_the_same_url_is_found_with_its_sha256_without_reading_it() {
        let store = MemoryStore::default();
        let data = deterministic_bytes(1000, 1);
        put(&store, "k", &data, URL).await;
        let found = find_copy(&store, "k", URL, soon()).await.unwrap();
        let expected = StoredObject {
            bytes: 1000,
            sha256_hex: hex::encode(sha256(&data)),
            content_type: Some("audio/mpeg".into()),
            parts: 0,
        };
        assert_eq!(found, Some(expected));
        assert_eq!(store.reads(), 0, "not read back");
    }

    /// A store holding URL's copy under `k`, stored by a multipart upload (no full-object
    /// checksum to read its SHA-256 from), and its bytes.
    async fn multipart_copy() -> (MemoryStore, Vec<u8>) {
        let store = MemoryStore::default();
        let data = deterministic_bytes(MIN_PART_SIZE + 10, 2);
        let info = ObjectInfo { content_type: None, source_sha256: &url_sha256(URL) };
        let upload = store.create_multipart("k", info).await.unwrap();
        let mut parts: Vec<UploadedPart> = Vec::new();
        for (i, chunk) in data.chunks(MIN_PART_SIZE).enumerate() {
            let number = i32::try_from(i + 1).unwrap();
            let part = store.upload_part("k", &upload, number, Bytes::copy_from_slice(chunk), crc32(chunk)).await;
            parts.push(part.unwrap());
        }
        store.complete_multipart("k", &upload, &parts, crc32(&data)).await.unwrap();
        (store, data)
    }

    #[tokio::test]
    async fn a_multipart_copy_is_read_back_and_hashed() {
        let (store, data) = multipart_copy().await;
        let found = find_copy(&store, "k", URL, soon()).await.unwrap().expect("found");
        assert_eq!((found.bytes, found.sha256_hex), (data.len() as u64, hex::encode(sha256(&data))));
        assert_eq!(store.reads(), 1);
    }

    /// A store whose object is replaced (another of the same length) between the HEAD and the
    /// read back.
    struct ReplacedAfterHead(MemoryStore);

    impl ReadObject for ReplacedAfterHead {
        async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, StorageError> {
            let head = self.0.head_object(key).await;
            let other = deterministic_bytes(MIN_PART_SIZE + 10, 3);
            let info = ObjectInfo { content_type: None, source_sha256: "another" };
            let chunks = futures::stream::iter(vec![Ok(Bytes::from(other))]);
            self.0.put_streamed(key, Box::pin(chunks), MIN_PART_SIZE as u64 + 10, info).await.unwrap();
            head
        }

        async fn hash_object(&self, key: &str, etag: &str) -> Result<(u64, [u8; 32]), StorageError> {
            self.0.hash_object(key, etag).await
        }
    }

    /// What is read back is the object the HEAD showed: one written since is not taken for
    /// this URL's copy (the read is refused, and retried).
    #[tokio::test]
    async fn a_copy_replaced_before_it_is_read_back_is_not_taken() {
        let (store, _) = multipart_copy().await;
        let found = find_copy(&ReplacedAfterHead(store), "k", URL, soon()).await;
        assert!(found.as_ref().is_err_and(StorageError::is_retryable), "{found:?}");
    }

    #[tokio::test]
    async fn nothing_another_url_or_a_disagreeing_checksum_is_no_copy() {
        let store = MemoryStore::default();
        assert_eq!(find_copy(&store, "k", URL, soon()).await, Ok(None));
        put(&store, "k", b"older", "https://cdn1.suno.ai/vocal.mp3?sig=0").await;
        assert_eq!(find_copy(&store, "k", URL, soon()).await, Ok(None), "copied from another URL");

        let digest = sha256(b"x");
        assert!(agrees_with_checksum(&hex::encode(digest), Some(&BASE64.encode(digest))));
        assert!(agrees_with_checksum(&hex::encode(digest), None));
        assert!(agrees_with_checksum(&hex::encode(digest), Some("c29tZXRoaW5nIGVsc2U=-3")), "a composite");
        assert!(!agrees_with_checksum(&hex::encode(digest), Some(&BASE64.encode(sha256(b"y")))));
        assert!(!agrees_with_checksum(&hex::encode(digest).to_uppercase(), None));
        assert!(!agrees_with_checksum("abc", None));
    }
}
