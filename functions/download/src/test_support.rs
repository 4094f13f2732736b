//! In-memory implementations of our own traits, for the unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::{self, Iter};
use sha2::{Digest, Sha256};

use crate::error::{FetchError, StorageError};
use crate::upload::{ObjectStore, SourceBody, UploadedPart};

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
    Put { key: String, len: usize, sha256: [u8; 32] },
    Create { key: String },
    Part { number: i32, len: usize, sha256: [u8; 32] },
    Complete { key: String, parts: usize },
    Abort,
}

/// A bucket that checks checksums the way S3 does.
#[derive(Default)]
pub struct MemoryStore {
    pub state: Mutex<StoreState>,
    /// Fail the upload of this part number.
    pub fail_part: Option<i32>,
}

#[derive(Default)]
pub struct StoreState {
    objects: HashMap<String, (Vec<u8>, Option<String>)>,
    uploads: HashMap<String, BTreeMap<i32, Vec<u8>>>,
    calls: Vec<StoreCall>,
    next_upload: u32,
}

fn storage_error(operation: &'static str, message: &str) -> StorageError {
    StorageError { operation, message: message.to_owned() }
}

impl MemoryStore {
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().objects.get(key).map(|(data, _)| data.clone())
    }

    pub fn calls(&self) -> Vec<StoreCall> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn open_uploads(&self) -> Vec<String> {
        self.state.lock().unwrap().uploads.keys().cloned().collect()
    }
}

impl ObjectStore for MemoryStore {
    async fn put_object(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        sha256: [u8; 32],
    ) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Put { key: key.to_owned(), len: body.len(), sha256 });
        if <[u8; 32]>::from(Sha256::digest(&body)) != sha256 {
            return Err(storage_error("PutObject", "checksum mismatch"));
        }
        state.objects.insert(key.to_owned(), (body.to_vec(), content_type.map(str::to_owned)));
        Ok(())
    }

    async fn create_multipart(&self, key: &str, _content_type: Option<&str>) -> Result<String, StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Create { key: key.to_owned() });
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(id.clone(), BTreeMap::new());
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
        sha256: [u8; 32],
    ) -> Result<UploadedPart, StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Part { number: part_number, len: body.len(), sha256 });
        if self.fail_part == Some(part_number) {
            return Err(storage_error("UploadPart", "injected failure"));
        }
        if <[u8; 32]>::from(Sha256::digest(&body)) != sha256 {
            return Err(storage_error("UploadPart", "checksum mismatch"));
        }
        let parts = state.uploads.get_mut(upload_id).ok_or_else(|| storage_error("UploadPart", "no such upload"))?;
        parts.insert(part_number, body.to_vec());
        Ok(UploadedPart { part_number, etag: format!("etag-{part_number}"), checksum_sha256: None })
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[UploadedPart]) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Complete { key: key.to_owned(), parts: parts.len() });
        let stored = state.uploads.remove(upload_id).ok_or_else(|| storage_error("Complete", "no such upload"))?;
        let numbers: Vec<i32> = parts.iter().map(|p| p.part_number).collect();
        if numbers != stored.keys().copied().collect::<Vec<_>>() {
            return Err(storage_error("Complete", "parts do not match"));
        }
        let data: Vec<u8> = stored.into_values().flatten().collect();
        state.objects.insert(key.to_owned(), (data, None));
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(StoreCall::Abort);
        state.uploads.remove(upload_id);
        Ok(())
    }
}
