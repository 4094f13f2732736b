//! The callbacks ingest parked in the vault bucket (under `parked/`: ingest could not record
//! them): the reconciler lists them to replay them, results to tell a caller that a task's
//! callback is waiting to be recorded.

use stemvault_vault::accept::ParkedBody;
use stemvault_vault::{StorageError, StoreError, Timestamp};

use crate::s3_error::storage_error;

/// A listing of `parked/` that failed, as the task store's failure (what the results function
/// and the reconciler read beside the table: unable to answer, as when the table fails).
pub fn listing_failed(e: StorageError) -> StoreError {
    StoreError::Unavailable(format!("{e} (parked)"))
}

/// Up to `limit` parked bodies under `prefix` (`parked/`, or one task's `parked/<task_id>/`)
/// in key order, after `start_after` when given, with when each was parked: one ListObjectsV2
/// request per 1,000.
pub async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<Vec<ParkedBody>, StorageError> {
    let mut parked = Vec::new();
    let mut after = None;
    while parked.len() < limit {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .max_keys(i32::try_from(limit - parked.len()).unwrap_or(i32::MAX))
            .set_continuation_token(after)
            .send()
            .await
            .map_err(|e| storage_error("ListObjectsV2", e))?;
        parked.extend(page.contents().iter().filter_map(|o| {
            let parked_at = o.last_modified().and_then(|t| t.to_millis().ok()).map(Timestamp::from_unix_ms);
            Some(ParkedBody { key: o.key()?.to_owned(), parked_at })
        }));
        match page.next_continuation_token() {
            Some(token) if page.is_truncated() == Some(true) => after = Some(token.to_owned()),
            _ => break,
        }
    }
    parked.truncate(limit);
    Ok(parked)
}

/// Whether `key` is still under `prefix` (`parked/`): one ListObjectsV2 of `prefix` from just
/// before the key, for a role that may list that prefix alone (and so reads a missing key's
/// GetObject as 403, not 404).
pub async fn still_listed(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    key: &str,
) -> Result<bool, StorageError> {
    let before = key.char_indices().last().map_or("", |(last, _)| &key[..last]);
    let page = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .start_after(before)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| storage_error("ListObjectsV2", e))?;
    Ok(page.contents().first().and_then(|o| o.key()) == Some(key))
}
