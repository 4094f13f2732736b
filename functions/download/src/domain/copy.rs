//! Copying one claimed file ([`super`]'s step 3): fetch and upload, look for an earlier
//! attempt's copy, ask a fresh link for an expired URL, copy a newer URL that came meanwhile,
//! and the claim holder's finishing write.

use super::*;
use crate::error::reads_as_expired;
use stemvault_vault::reason::NO_FRESH_LINK;

/// Copy the claimed file as planned; should its URL fail for good after ingest wrote a newer
/// one into the item (`next_url`: the `failed` write refused, the file still ours), copy
/// that one instead, under the same claim and deadline. No count bounds the turns: each
/// needs a URL another callback (or a poll) brought meanwhile, and every copy stops at the
/// deadline.
pub(super) async fn copy_claimed<P: Ports>(
    ports: &P,
    settings: &Settings,
    delivery: &Delivery,
    task_id: &TaskId,
    name: &str,
    mut plan: CopyPlan,
) -> Outcome {
    let mut from_next = false;
    loop {
        match copy_held(ports, settings, delivery, task_id, name, &plan, from_next).await {
            Copied::Finished(outcome) => return outcome,
            Copied::NextUrl { url, key } => {
                tracing::info!(
                    url = %loggable_str(&url),
                    "the URL failed for good, but a newer one came while it was copied; copying that"
                );
                plan = CopyPlan { url, key, ..plan };
                from_next = true;
            }
        }
    }
}

/// What [`copy_held`] came to.
enum Copied {
    Finished(Outcome),
    /// The plan's URL failed for good, and the item, still ours, has a newer one waiting
    /// (its `next_url`, and `next_key` or, missing from an edited item, the key ingest would
    /// give that URL).
    NextUrl {
        url: String,
        key: String,
    },
}

/// Copy the plan's URL under the claim: the item's own, or (`from_next`) its `next_url`.
async fn copy_held<P: Ports>(
    ports: &P,
    settings: &Settings,
    delivery: &Delivery,
    task_id: &TaskId,
    name: &str,
    plan: &CopyPlan,
    from_next: bool,
) -> Copied {
    let started = Instant::now();
    let worker = delivery.worker.as_str();
    let next = from_next.then_some(NextSource { url: &plan.url, key: &plan.key });
    let held = HeldCopy { worker, next };
    let (found, unsure) = match plan.earlier_attempts {
        0 => (None, None),
        _ => match stored_before(ports, plan, delivery.stop_at).await {
            Ok(found) => (found, None),
            Err(lookup) => (None, Some(lookup)),
        },
    };
    let copied_now = found.is_none();
    let copied = match found {
        Some(stored) => Ok(stored),
        None => {
            tracing::info!(source = %loggable_str(&plan.url), key = %plan.key, "copying");
            copy(ports, settings, plan, delivery.stop_at).await
        }
    };
    let error = match copied {
        Ok(stored) => {
            let stored_at = ports.now();
            let written = ports.record_stored(task_id, name, held, &stored, stored_at).await;
            let wrote = |f: &FileEntry| f.status == FileStatus::Stored && f.stored_at == Some(stored_at);
            if let Err(outcome) = ours_or(ports, task_id, name, held, written, wrote).await {
                return Copied::Finished(outcome);
            }
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(bytes = stored.bytes, sha256 = %stored.sha256_hex, parts = stored.parts, seconds, "stored");
            let copy_seconds = copied_now.then_some(seconds);
            ports.emit_metrics(&Measure::Stored { bytes: stored.bytes, copy_seconds });
            return Copied::Finished(Outcome::Stored(stored));
        }
        Err(e) => e,
    };
    // An earlier attempt may have stored the file before its URL expired: while that cannot be
    // looked for, the source refusing for good fails nothing for good.
    let unsure = unsure.filter(|lookup| !error.is_retryable() && lookup.is_retryable());
    if unsure.is_some() {
        tracing::warn!(error = %error, "the source refuses, but an earlier copy could not be looked for");
    }
    // Answered as expired before the receive that confirms it, or by a newer URL copied in
    // turn (its first try, whatever the receive): perhaps a source not serving the file yet,
    // tried again a little later (a newer URL so released becomes the file's URL).
    let too_soon_to_say = error.is_expiry() && (delivery.receive_count < EXPIRY_CONFIRMED_ON_RECEIVE || from_next);
    if too_soon_to_say {
        tracing::warn!(error = %error, receive = delivery.receive_count, "the source answers as expired; trying again");
    }
    let retryable = error.is_retryable() || unsure.is_some() || too_soon_to_say;
    // A newer URL the deadline cut short (or left no time to start) on the last receive is not
    // failed for good at a URL no later callback reopens: released as the file's URL (its
    // claim back, `next_url` moved in), it waits for a redrive or, once its message is
    // stranded, the sweeper. (One that answered expired is recorded so, as any URL: the
    // reconciler watches it for a fresh one.)
    let newer_out_of_time = from_next && error == CopyError::OutOfTime;
    if newer_out_of_time && delivery.is_last_receive() {
        // What is left; the message's own ERROR line (`not done on its last receive`) follows.
        tracing::warn!(
            "a newer URL came and the invocation's time ran out before it was copied, on the last receive: the \
             file is left queued at it, for the sweeper"
        );
    }
    if retryable && (!delivery.is_last_receive() || newer_out_of_time) {
        let error = unsure.map_or(error, CopyError::Storage);
        release_claim(ports, task_id, name, held, &error.to_string()).await;
        return Copied::Finished(Outcome::Retry(error.into()));
    }
    // On its last receive, a retryable failure sends the message to the dead-letter queue:
    // the file is recorded failed (`dead_lettered`) so that the task can settle and people
    // see why, in the record and in GET /tasks/{id}. A refusal kept from failing for good by
    // a lookup that failed keeps its own words first: an expired URL still reads as one
    // (`reconcile::failed_by_expiry`), so the task is watched for a fresh one.
    let (reason, code) = if retryable {
        let unsure = unsure.map(|lookup| format!("; an earlier copy could not be looked for: {lookup}"));
        (
            super::dead_lettered_on(delivery, &format!("{error}{}", unsure.unwrap_or_default())),
            FailureCode::DeadLettered,
        )
    } else {
        (error.to_string(), error.failure_code())
    };
    let failed_at = ports.now();
    let failure = Failure { code, reason: &reason, at: failed_at };
    let mut written = ports.record_failed(task_id, name, held, &failure).await;
    if let Some((url, key)) = waiting_copy(&written, worker, task_id, name) {
        if url != plan.url {
            return Copied::NextUrl { url, key };
        }
        // The newer URL is the one that just failed (an edited item: ingest never writes it):
        // fail the file as having copied it (which takes it out, its key left), rather than
        // hold the claim refused on every receive. Refused again for an even newer URL, that
        // one is copied.
        let at_next = HeldCopy { worker, next: Some(NextSource { url: &url, key: &plan.key }) };
        written = ports.record_failed(task_id, name, at_next, &failure).await;
        if let Some((url, key)) = waiting_copy(&written, worker, task_id, name)
            && url != plan.url
        {
            return Copied::NextUrl { url, key };
        }
    }
    let wrote = |f: &FileEntry| f.status == FileStatus::Failed && f.failed_at == Some(failed_at);
    if let Err(outcome) = ours_or(ports, task_id, name, held, written, wrote).await {
        return Copied::Finished(outcome);
    }
    ports.emit_metrics(&Measure::Failed { reason: code.as_str() });
    // A retryable failure gets here only on its last receive.
    if retryable {
        tracing::error!(
            code = code.as_str(), reason = %reason,
            "the file failed on its last receive; its message goes to the dead-letter queue"
        );
        return Copied::Finished(Outcome::DeadLettered(reason));
    }
    if code == FailureCode::S3Rejected {
        // Not the source's doing: the vault's bucket (its policy, key or limits) is to fix.
        tracing::error!(
            code = code.as_str(), reason = %reason,
            "the file failed for good: the vault bucket refused it; check the bucket's policy, \
            encryption key and object size limit"
        );
    } else {
        tracing::warn!(code = code.as_str(), reason = %reason, "the file failed for good");
    }
    Copied::Finished(Outcome::FailedForGood(reason))
}

/// The `next_url` waiting in an item that refused the write but is still held by `worker`,
/// and the key to copy it under: its `next_key` (ingest writes both), or for an edited item
/// without one, the key ingest would give that URL.
fn waiting_copy(
    written: &Result<FileWrite, StoreError>,
    worker: &str,
    task_id: &TaskId,
    name: &str,
) -> Option<(String, String)> {
    let Ok(FileWrite::Refused(Some(file))) = written else { return None };
    let url = file.next_url.clone().filter(|_| file.is_held_by(worker))?;
    let key = file.next_key.clone().unwrap_or_else(|| suno_callbacks::s3_key::file_key(task_id, name, &url));
    Some((url, key))
}

/// Nothing when the finishing write (`stored` or `failed`) was ours ([`after_refusal`]);
/// otherwise what the message comes to. A write that failed may have been applied with every
/// answer lost, or not at all: the claim is given back first (refused, being conditional on
/// our claim, if the write was applied), so that the redelivery need not wait for the lease
/// to end.
async fn ours_or<P: ReleaseFile>(
    ports: &P,
    task_id: &TaskId,
    name: &str,
    held: HeldCopy<'_>,
    written: Result<FileWrite, StoreError>,
    wrote: impl FnOnce(&FileEntry) -> bool,
) -> Result<(), Outcome> {
    if let Err(e) = &written {
        release_claim(ports, task_id, name, held, &e.to_string()).await;
    }
    match written.map(|w| after_refusal(w, wrote)) {
        Ok(Finished::Ours) => Ok(()),
        Ok(Finished::ByAnother) => Err(Outcome::AlreadySettled),
        Ok(Finished::NotHeld) => Err(Outcome::Retry(DownloadError::LostClaim)),
        Err(e) => Err(Outcome::Retry(e.into())),
    }
}

/// Who finished a file, after the claim holder's `stored` or `failed` write.
#[derive(Debug, PartialEq)]
pub(super) enum Finished {
    /// Our write: applied, or applied with its answer lost (the item holds what we wrote).
    Ours,
    /// Another worker settled the file (our lease ran out and it took over): nothing left
    /// to do for this message.
    ByAnother,
    /// The file is not settled and not ours: the claim was lost.
    NotHeld,
}

/// [`Finished`] from a write's answer; `wrote` tells the item as our write leaves it, by the
/// time it sets (to the millisecond, as stored: another worker's copy of the same URL has the
/// same digest, and its failure the same reason). A refused write's item is compared with it:
/// the SDK retries a write whose answer was lost, and the retry of an applied write is refused.
pub(super) fn after_refusal(written: FileWrite, wrote: impl FnOnce(&FileEntry) -> bool) -> Finished {
    match written {
        FileWrite::Applied => Finished::Ours,
        FileWrite::Refused(Some(file)) if file.status.is_settled() && file.claim.is_none() => {
            if wrote(&file) {
                tracing::info!(status = %file.status, "the write was applied before (its answer was lost)");
                Finished::Ours
            } else {
                tracing::info!(status = %file.status, "another worker settled the file meanwhile");
                Finished::ByAnother
            }
        }
        FileWrite::Refused(_) => Finished::NotHeld,
    }
}

/// The complete copy of the plan's URL an earlier attempt stored under its key, if any. Not
/// being able to tell means copying again, as if there were none (the caller keeps the
/// error: should the source refuse for good, the copy may still be there).
async fn stored_before<P: ReadObject + Sync>(
    ports: &P,
    plan: &CopyPlan,
    stop_at: Instant,
) -> Result<Option<StoredObject>, StorageError> {
    match find_copy(ports, &plan.key, &plan.url, stop_at).await {
        Ok(Some(stored)) => {
            tracing::info!(key = %plan.key, bytes = stored.bytes, "an earlier attempt stored the file; recording it");
            Ok(Some(stored))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "could not look for an earlier copy; copying");
            Err(e)
        }
    }
}

/// Fetch and upload, stopping at `stop_at`.
async fn copy<P: FetchSource + FreshLink + ObjectStore + Sync>(
    ports: &P,
    settings: &Settings,
    plan: &CopyPlan,
    stop_at: Instant,
) -> Result<StoredObject, CopyError> {
    let (body, expired) = open_or_refresh(ports, &plan.url, settings.max_file_bytes, stop_at).await?;
    let limits = UploadLimits {
        part_size: settings.part_size,
        max_bytes: settings.max_file_bytes,
        stop_at,
        stream_declared: plan.earlier_attempts == 0,
    };
    let source = url_sha256(&plan.url);
    let copied = upload(ports, Destination { key: &plan.key, source_sha256: &source }, body, limits).await;
    match (copied, expired) {
        // Whatever failed (the fresh link's body, its length, S3, the deadline): the URL the
        // file has is still expired.
        (Err(e), Some(expired)) if e.is_retryable() => {
            Err(expired.not_yet(format!("copying from the fresh link failed: {e}"), None))
        }
        (copied, _) => copied,
    }
}

/// What the file's own URL answered ([`reads_as_expired`]), while a fresh link is sought and
/// copied instead.
struct Expired {
    status: u16,
    reason: String,
    retry_after: Option<Duration>,
}

impl Expired {
    /// The file failed as expired, `note` saying what the refresh came to.
    fn failed(&self, note: Option<String>) -> CopyError {
        // Noted whatever the reason phrase: the reconciler reads the note (stemvault_vault::reason).
        let reason = match note {
            None => self.reason.clone(),
            Some(note) => stemvault_vault::reason::noted(&self.reason, &note),
        };
        FetchError::Status { status: self.status, reason, retry_after: self.retry_after }.into()
    }

    /// No fresh link this time, or a failure of the fresh link (or of copying from it), `why`,
    /// that a retry may get past: retried, the next attempt asking for a new link, and on the
    /// last receive the file is still recorded as expired (`source answered 410 ...`), which
    /// the reconciler watches for a URL.
    fn not_yet(&self, why: String, retry_after: Option<Duration>) -> CopyError {
        FetchError::NoFreshLinkYet { status: self.status, reason: self.reason.clone(), why, retry_after }.into()
    }
}

/// Open `url`; when it answers as expired ([`reads_as_expired`]) and link refresh is on, open a fresh link
/// for it instead ([`FreshLink::fresh_link`], already checked against the source policy),
/// and say the URL expired ([`Expired`]). The plan keeps the original URL (the record's, and
/// the copy's `source-sha256`). Each request stops at `stop_at`.
///
/// No fresh link (the provider refused: 401, 402, 422, ...), or one that answers a status
/// that fails for good, leaves the file failed as before: the original status, its reason
/// naming what the refresh came to (so it still reads as expired: `source answered 403
/// Forbidden; no fresh link: the provider answered 422 ...`). No link this time for a reason
/// that may pass (the provider unreachable or too slow, 429, 430, 455, 5xx:
/// [`crate::fresh_link::RefreshError::is_retryable`]), or a fresh link that fails in a way a
/// retry may fix (5xx, a timeout, the deadline), is retried like any source
/// ([`Expired::not_yet`]): the next attempt asks for a new link. So is a copy from the fresh
/// link that fails so later (its body, S3, the deadline: [`fn@copy`] maps those).
async fn open_or_refresh<P: FetchSource + FreshLink + Sync>(
    ports: &P,
    url: &str,
    max_bytes: u64,
    stop_at: Instant,
) -> Result<(SourceBody<ChunkStream>, Option<Expired>), CopyError> {
    // None: `stop_at` came first.
    async fn by<F: std::future::Future>(stop_at: Instant, work: F) -> Option<F::Output> {
        tokio::time::timeout_at(stop_at.into(), work).await.ok()
    }
    let expired = match by(stop_at, ports.open(url, max_bytes)).await {
        None => return Err(CopyError::OutOfTime),
        Some(Err(FetchError::Status { status, reason, retry_after })) if reads_as_expired(status) => {
            Expired { status, reason, retry_after }
        }
        Some(opened) => return Ok((opened?, None)),
    };
    let status = expired.status;
    let link = match by(stop_at, ports.fresh_link(url)).await {
        Some(None) => return Err(expired.failed(None)),
        None => {
            let why = "no answer before the invocation's deadline";
            tracing::warn!(
                status,
                why,
                "the source expired and no fresh link could be had yet; tried again at the \
                next receive (recorded failed if this was the last)"
            );
            return Err(expired.not_yet(why.into(), None));
        }
        Some(Some(Err(e))) if e.is_retryable() => {
            tracing::warn!(
                status, error = %e,
                "the source expired and no fresh link could be had yet; tried again at the \
                next receive (recorded failed if this was the last)"
            );
            return Err(expired.not_yet(e.to_string(), None));
        }
        Some(Some(Err(e))) => {
            tracing::warn!(status, error = %e, "the source expired and no fresh link could be had");
            return Err(expired.failed(Some(format!("{NO_FRESH_LINK}{e}"))));
        }
        Some(Some(Ok(link))) => link,
    };
    tracing::info!(status, fresh = %loggable_str(&link), "the source expired; copying from a fresh link");
    match by(stop_at, ports.open(&link, max_bytes)).await {
        None => Err(expired.not_yet(format!("the fresh link failed: {}", CopyError::OutOfTime), None)),
        // Gone or expired again: still a file whose URL a poll may renew.
        Some(Err(e @ FetchError::Status { .. })) if !e.is_retryable() => {
            Err(expired.failed(Some(format!("the fresh link failed: {e}"))))
        }
        Some(Err(e)) if e.is_retryable() => {
            let retry_after = match e {
                FetchError::Status { retry_after, .. } => retry_after,
                _ => None,
            };
            Err(expired.not_yet(format!("the fresh link failed: {e}"), retry_after))
        }
        // Too large, refused, a bad redirect: what the file is, not its link's age, so not
        // recorded as expired (the reconciler would watch the task for a link that cannot help).
        Some(Err(e)) => Err(e.into()),
        Some(Ok(body)) => Ok((body, Some(expired))),
    }
}
