//! Accepting one canonical event, whether a callback brought it (the ingest function) or a
//! poll of the provider did (the reconciler): record it, archive its body and queue its
//! files, over small ports that the AWS adapters and the in-memory ones of the tests
//! implement. Both functions run exactly this code, so a result that comes both ways is
//! merged once and the second is a duplicate (but for a poll repeating the URL of a file
//! that failed for a reason that may pass: [`crate::reconcile::relink`] reopens it).
//!
//! 1. Write the record and archive the body **at the same time**. The record write is a
//!    read, a pure merge ([`crate::ingest`], then the reconciler's schedule:
//!    [`crate::reconcile::after_merge`]) and a save over what was read, retried from the read
//!    on a conflict. The archive starts as soon as the first merge is judged to fit the
//!    table, alongside the save: an event refused as too large to record leaves nothing
//!    behind. The body is archived on every delivery (same key, same bytes), so a retry
//!    repairs an archive that failed, even as a duplicate; so are results that are no files
//!    when too large for the task item, as JSON beside it ([`crate::ingest::oversized_details`]).
//! 2. Send one message per file the merge claimed for this request, mark the sent ones
//!    `queued` and release the others back to `pending` ([`send_jobs`], [`record_sent`]: the
//!    sweeper's [`send_claimed`] in two steps). Once every message is out, the mark runs
//!    beside steps 4 and 5: it is bookkeeping, and the answer need not wait for it. A
//!    request that waits (step 3) marks first, so its reclaim reads its own files as queued.
//! 3. Files of this event that a concurrent delivery is queueing are waited for (bounded);
//!    whatever that delivery released, or left when its lease ran out, is taken over.
//! 4. A task without files, or at a new stage whose files are all settled, is settled as
//!    soon as it is recorded: until its manifest is recorded, each delivery sends the
//!    downloader a manifest job for it ([`crate::download::manifest_job`]).
//! 5. Publish the event's events ([`crate::events::after_callback`]: `Task Stage Changed`,
//!    and `Task Failed` for a failure), once it is recorded and its files' messages are
//!    sent (the `queued` mark may land just after). A failed publish is a retryable error:
//!    a later delivery of the same event (ingest parks the callback for the reconciler to
//!    replay; the provider may retry it; the next poll) is a duplicate and publishes the same
//!    events with the same ids, unless a poll recorded a result at that stage since (it
//!    published them). No table write is spent on it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use suno_callbacks::{CallbackEvent, Stage, TaskId, s3_key};

use crate::download::manifest_job;
use crate::enqueue::{EnqueueError, EnqueueFiles, MarkQueued, ReleaseClaims, record_sent, send_claimed, send_jobs};
use crate::events::{PublishEvents, after_callback};
use crate::ingest::{BodyInfo, Claimant, Merge, ingest_callback, reclaim, too_large_to_record};
use crate::{Attempt, Clock, LoadTask, SaveTask, StorageError, StoreError, Timestamp, reconcile, retry_on_conflict};

mod error;

pub use error::AcceptError;

/// Keep a callback body verbatim under `key` (and, the same way, results kept apart:
/// [`crate::ingest::oversized_details`]).
pub trait ArchiveBody {
    fn archive_body(&self, key: &str, body: &[u8]) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// Everything the use-case needs: the task table, the archive, the claim-and-send ports, the
/// event bus and the clock.
pub trait Ports:
    LoadTask + SaveTask + ArchiveBody + EnqueueFiles + MarkQueued + ReleaseClaims + PublishEvents + Clock
{
}

impl<T> Ports for T where
    T: LoadTask + SaveTask + ArchiveBody + EnqueueFiles + MarkQueued + ReleaseClaims + PublishEvents + Clock
{
}

/// The ingest function's Lambda timeout, whose claims [`Settings::default`] is made for.
const INGEST_TIMEOUT: Duration = Duration::from_secs(12);

/// Timing of the claim protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long this request's enqueue claims hold before others may take them over. At least
    /// the ingest function's timeout, so a live request keeps its claims; barely more, because
    /// a request that dies holding claims makes every retry wait until they lapse.
    pub lease: Duration,
    /// How long a request waits for files a concurrent delivery is queueing.
    pub wait_budget: Duration,
    /// Read-merge-put attempts before giving up on a contended record.
    pub max_save_attempts: u32,
    /// When the whole use-case gives up and answers "retry" (the provider waits 10 to 15 s;
    /// shorter than the ingest function's timeout, so the answer is ours, not a Lambda timeout).
    pub deadline: Duration,
    /// `RECONCILE_AFTER_SECONDS`: a task left at `text` or `first` is first polled this long
    /// after the callback that left it there ([`crate::reconcile::after_merge`]).
    pub reconcile_after: Duration,
    /// `BUCKET_NAME`: the vault bucket, which the published events name (`detail.bucket`).
    pub bucket: String,
    /// The result is a poll's (the reconciler's): its save keeps the task watched until the
    /// poll's own write records it ([`crate::reconcile::keep_watched`]), and reopens the files
    /// it repeats the URL of that failed for a reason that may pass ([`crate::reconcile::relink`]).
    pub polled: bool,
}

impl Settings {
    /// These settings with at most `left` to answer.
    pub fn within(&self, left: Duration) -> Settings {
        Settings { deadline: self.deadline.min(left), ..self.clone() }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        // The provider waits 10 to 15 s for an answer: stay well inside that.
        Settings {
            lease: INGEST_TIMEOUT + Duration::from_secs(3),
            wait_budget: Duration::from_secs(5),
            max_save_attempts: 40,
            deadline: Duration::from_secs(8),
            reconcile_after: crate::reconcile::DEFAULT_RECONCILE_AFTER,
            bucket: String::new(),
            polled: false,
        }
    }
}

/// What happened to an accepted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The same body was accepted before.
    pub duplicate: bool,
    /// The task's stage after this callback.
    pub task_stage: Stage,
    /// Messages this request sent.
    pub files_queued: usize,
}

/// One callback body ingest parked under `parked/` because recording it, or what follows the
/// record (archive, messages, events), failed: replayed through [`accept`] by the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedBody {
    pub key: String,
    /// When it was parked (its object's last modification): when the callback reached
    /// stemvault, which dates it in the record rather than the replay does.
    pub parked_at: Option<Timestamp>,
}

/// The lower-case hex SHA-256 of a body: what names it in the archive (and under `parked/`).
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Record, archive and queue one valid event within `settings.deadline`. `request_id`
/// names this request's claims; `arrived_at` dates a body that reached stemvault before now
/// (a parked callback: [`BodyInfo::arrived_at`]).
///
/// Giving up midway is safe: the body is archived again and the record merged again by the
/// retry, and claims left behind lapse with their lease and are taken over.
pub async fn accept<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
    arrived_at: Option<Timestamp>,
) -> Result<Outcome, AcceptError> {
    // Files another delivery still held when the time ran out, if it ran out while waiting
    // for them (between looks, not in a look's own requests): that is one task's wait (as
    // `StillEnqueuing`), not a slow table, bucket or queue.
    let held = AtomicUsize::new(0);
    // On the heap: the whole pipeline's state is large (in a debug build, more than a test
    // thread's 2 MiB stack holds under the reconciler's own), and it is one allocation a callback.
    let accepting = Box::pin(accept_unbounded(ports, settings, event, body, request_id, arrived_at, &held));
    let accepted = tokio::time::timeout(settings.deadline, accepting).await;
    accepted.unwrap_or_else(|_| {
        Err(match held.load(Ordering::Relaxed) {
            0 => AcceptError::OutOfTime { after: settings.deadline },
            files => AcceptError::StillEnqueuing { files },
        })
    })
}

async fn accept_unbounded<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &[u8],
    request_id: &str,
    arrived_at: Option<Timestamp>,
    held: &AtomicUsize,
) -> Result<Outcome, AcceptError> {
    let sha256_hex = body_sha256_hex(body);
    let archive_key = s3_key::callback_body_key(&event.task_id, event.stage, &sha256_hex);
    let info = BodyInfo { sha256_hex, archive_key, bytes: body.len() as u64, arrived_at };
    let claimant = Claimant { id: request_id.to_owned(), lease: settings.lease };

    let (fits, fitted) = tokio::sync::oneshot::channel();
    // Once a merge fits (never, when the record would be too large: the sender is dropped).
    let details =
        crate::ingest::oversized_details(event).map(|json| (crate::ingest::kept_details_key(event, &json), json));
    let archive = async {
        if fitted.await.is_err() {
            return Ok(());
        }
        let body_archived = ports.archive_body(&info.archive_key, body);
        match &details {
            // The record points at both: the results' link needs the details object.
            Some((key, json)) => {
                let (archived, details_kept) = tokio::join!(body_archived, ports.archive_body(key, json.as_bytes()));
                archived.and(details_kept)
            }
            None => body_archived.await,
        }
    };
    // The archive runs beside the whole of it, not only the record: a stalled S3 holds back
    // neither the messages nor the events (the answer still waits for it, within the deadline).
    let accepting = async {
        let merge = record(ports, settings, event, &info, &claimant, fits).await?;
        for file in &merge.newer_urls_dropped {
            tracing::warn!(
                file = %file,
                max_bytes = crate::ingest::MAX_NEXT_URL_BYTES,
                "a newer URL for a file being downloaded is too long to keep beside its URL; the copy goes on from \
                 the URLs the file has"
            );
        }
        send_and_publish(ports, settings, event, &claimant, merge, held).await
    };
    let (archived, accepted) = tokio::join!(archive, accepting);
    let accepted = accepted?;
    // Checked last: the files are worth queueing, and the events publishing, even when the
    // archive failed.
    archived.map_err(AcceptError::Archive)?;
    Ok(accepted)
}

/// Send the files' messages `merge` claimed (and a manifest job when it settled the task),
/// then publish the event's events.
async fn send_and_publish<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    claimant: &Claimant,
    merge: Merge,
    held: &AtomicUsize,
) -> Result<Outcome, AcceptError> {
    let task = &event.task_id;
    let sent = send_jobs(ports, &merge.claims.to_enqueue).await;
    if let Err(e) = sent.result() {
        record_sent(ports, task, claimant, &sent).await;
        return Err(e.into());
    }
    // The messages are out: marking them queued is bookkeeping, so it runs beside the rest
    // (one round trip fewer on the answer path), unless this request waits for others'
    // files: its reclaim must read its own files as queued, not as still its to send.
    let waits = !merge.claims.wait_for.is_empty();
    if waits {
        record_sent(ports, task, claimant, &sent).await;
    }
    let rest = async {
        let mut queued = sent.out.len();
        if waits {
            let wanted: Vec<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
            held.store(merge.claims.wait_for.len(), Ordering::Relaxed);
            // It leaves `held` at 0 unless it gives up waiting (an error, returned at once).
            queued += wait_for_others(ports, settings, task, claimant, &wanted, &sent.out, held).await?;
        }
        // A task without files (or a new stage over settled files) is settled as recorded;
        // no download would write its manifest.
        if let Some(job) = manifest_job(&merge.record) {
            let manifest_sent = ports.enqueue_files(std::slice::from_ref(&job)).await;
            if let Some(reason) = manifest_sent.into_iter().find_map(Result::err) {
                return Err(EnqueueError { failed: 1, total: 1, reason: reason.to_string() }.into());
            }
        }
        // Recorded and its messages sent: tell subscribers. Again on every delivery that
        // speaks for the task's stage (same ids), so a retry heals a publish that failed;
        // not after a poll that recorded that stage (after_callback).
        let events = after_callback(&merge.record, event.stage, &settings.bucket);
        if !events.is_empty() {
            ports.publish_events(&events).await?;
        }
        Ok::<usize, AcceptError>(queued)
    };
    let files_queued = match waits {
        true => rest.await,
        false => tokio::join!(record_sent(ports, task, claimant, &sent), rest).1,
    };
    Ok(Outcome { duplicate: merge.duplicate, task_stage: merge.record.stage, files_queued: files_queued? })
}

/// Read, merge, save over what was read (each changed item conditional on it); again on a
/// conflict. `fits` is told
/// when the first merge fits the table, before its put. (Should a concurrent delivery grow
/// the record between that merge and a retried one that no longer fits, the callback is
/// still refused as too large to record ([`AcceptError::TooLargeToRecord`]: ingest parks it)
/// but its body is archived: a rare race, accepted to keep the archive beside the put rather
/// than after it.)
async fn record<P: Ports>(
    ports: &P,
    settings: &Settings,
    event: &CallbackEvent,
    body: &BodyInfo,
    claimant: &Claimant,
    fits: tokio::sync::oneshot::Sender<()>,
) -> Result<Merge, AcceptError> {
    let fits = &std::sync::Mutex::new(Some(fits));
    let merged = retry_on_conflict(ports, settings.max_save_attempts, |_| async move {
        let existing = ports.load_task(&event.task_id).await?;
        let now = ports.now();
        // A poll repeating the URL of a file that failed for a reason that may pass reopens it,
        // now and then; saved over the record as read.
        let relinked =
            if settings.polled { existing.as_ref().and_then(|r| reconcile::relink(r, event, now)) } else { None };
        let mut merge = ingest_callback(relinked.as_ref().or(existing.as_ref()), event, body, claimant, now);
        // The reconciler's schedule rides on the task item put this write makes anyway.
        reconcile::after_merge(&mut merge.record, existing.as_ref().map(|r| r.stage), now, settings.reconcile_after);
        if settings.polled {
            reconcile::keep_watched(&mut merge.record, now);
        }
        // Messages and details are bounded by the merge; hundreds of long URLs are not.
        if let Some(bytes) = too_large_to_record(existing.as_ref(), &merge.record) {
            return Err(AcceptError::TooLargeToRecord { bytes });
        }
        if let Some(fits) = fits.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            // Nobody listening means the archive is no longer wanted: nothing to do.
            let _ = fits.send(());
        }
        match ports.save_task(existing.as_ref(), &merge.record).await {
            Ok(()) => Ok(Attempt::Done(merge)),
            Err(StoreError::Conflict) => Ok(Attempt::Conflict),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    merged.ok_or(AcceptError::Contention { attempts: settings.max_save_attempts })
}

/// Wait until every wanted file is queued or beyond, taking over released or lapsed claims.
/// `sent`: the files whose messages this request sent already, to which the loop adds its own
/// (should marking them queued have failed, they still read as its own claims to send, on
/// every look). Returns how many
/// messages this request sent while waiting. `held` tells the caller how many files another
/// delivery holds while it waits between looks (at least one), and none during a look.
async fn wait_for_others<P: Ports>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    claimant: &Claimant,
    wanted: &[&str],
    sent: &[String],
    held: &AtomicUsize,
) -> Result<usize, AcceptError> {
    let mut sent = sent.to_vec();
    let deadline = ports.now().plus(settings.wait_budget);
    let mut delay = Duration::from_millis(25);
    let mut queued = 0;
    loop {
        ports.sleep(delay).await;
        // The look's own requests: a table or queue too slow to answer is no other's wait.
        held.store(0, Ordering::Relaxed);
        delay = (delay * 2).min(Duration::from_millis(400));
        let Some(current) = ports.load_task(task).await? else {
            return Err(StoreError::Unavailable("the task record disappeared".into()).into());
        };
        let (claimed, mut claims) = reclaim(&current, claimant, ports.now(), wanted);
        claims.to_enqueue.retain(|job| !sent.contains(&job.name));
        if let Some(claimed) = claimed.filter(|_| !claims.to_enqueue.is_empty()) {
            match ports.save_task(Some(&current), &claimed).await {
                Ok(()) => {
                    let out = send_claimed(ports, task, claimant, &claims.to_enqueue).await;
                    sent.extend(out.out.iter().cloned());
                    queued += out.result()?;
                    // Nothing else held: done, though this look may be past the deadline.
                    if claims.wait_for.is_empty() {
                        return Ok(queued);
                    }
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        } else if claims.wait_for.is_empty() {
            return Ok(queued);
        }
        held.store(claims.wait_for.len().max(1), Ordering::Relaxed);
        if ports.now() >= deadline {
            return Err(AcceptError::StillEnqueuing { files: claims.wait_for.len().max(1) });
        }
    }
}
