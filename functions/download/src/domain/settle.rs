//! Step 4 of the module's protocol: a task's settle check, once per batch (its manifest
//! fenced by generation, stage and the version read, `Task Vaulted`, then the settle write).

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// What a task's settle check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settling {
    /// No task item (the message's file item exists without one: nothing to settle).
    NoTask,
    /// Some file is still open, a save is adding files (the add fence), or a registered task
    /// has no result yet.
    Open,
    /// Settled, manifest recorded: nothing to do.
    AlreadySettled,
    /// This check wrote the manifest and its write settled the vault.
    Settled,
    /// The manifest is written and recorded, over a vault already settled: by ingest (a task
    /// without files, a new stage), or by a settler that stopped before recording it.
    Recorded,
    /// Every file is settled, but another worker settled the last one and settles the task
    /// ([`settled_last`]), or each of [`SETTLE_CHECKS`] checks found the task moved on since
    /// its read (its settle write refused: a flood of one task's duplicate deliveries, each
    /// counted on it; or a manifest of a later read under the key): a message that asked comes
    /// back later and checks again.
    Deferred,
}

/// The settle check of one task, once per batch: read its items (one Query) and, when
/// every file is settled and the manifest is not recorded, write the manifest
/// (`put_fenced`), publish `Task Vaulted`, and then settle the task item (one conditional
/// write, [`SettleTask::settle_task`]). Only the worker whose write found the vault `pending`
/// reports it settled (log, and `SecondsToSettled` when it published).
///
/// A settle write refused because the task item was written since the read (ingest added or
/// reopened a file, recorded a new stage or counted a delivery; the reconciler recorded a
/// poll; another worker settled it), or a newer manifest found under the key, makes the check
/// start again from a new read, [`SETTLE_CHECKS`] checks in all: a new stage over files all
/// settled has no download left to settle it (its manifest job would, later), nor has a
/// task whose item a delivery's count wrote over. After the last, a message comes back to
/// check later ([`Settling::Deferred`]); what moved on settles on its own anyway. The last
/// check settles even under a newer manifest: its read still showing the plan's generation
/// and stage, the table is behind S3 (restored from a backup, say), and the task would
/// otherwise never settle; its Task Vaulted goes out only once that write applied (refused,
/// the newer manifest was a later stage's, written since the read, whose event went out
/// first). So does one under a manifest of this generation and stage read
/// from a later version, without publishing (that read's settle published): its write,
/// conditional on the version read, applies only when the table is behind.
///
/// A failure (S3 or DynamoDB down) is the caller's to retry: the messages that asked for
/// this check go back to the queue, and their redeliveries check again.
///
/// `settled_here` (the files this batch just stored or failed, when every message asking is
/// on its first receive) lets only the worker holding the task's last settled file settle a
/// pending vault at once ([`settled_last`]); any other defers, so two workers finishing the
/// last files together write the manifest, the event and the settle once (twice, the same,
/// should the holder take longer than the deferral, `SETTLE_DEFERRED_CHECK`). None: settle
/// whoever holds what (a redelivery, a manifest job, a healing check).
pub async fn check_settled<P: Ports>(
    ports: &P,
    task_id: &TaskId,
    settled_here: Option<&[String]>,
) -> Result<Settling, DownloadError> {
    // What this call's checks published: a check after a refused write that would say the
    // same again does not publish it again (its settle write keeps it).
    let mut published = None;
    for checks in 1..=SETTLE_CHECKS {
        let last = checks == SETTLE_CHECKS;
        if let Some(settling) = check_settled_once(ports, task_id, settled_here, last, &mut published).await? {
            return Ok(settling);
        }
    }
    // The caller logs a deferral, whichever its cause.
    Ok(Settling::Deferred)
}

/// One check of [`check_settled`]: what it came to, or None when the task moved on since its
/// read (its settle write refused, or a newer manifest found under the key), to read again.
async fn check_settled_once<P: Ports>(
    ports: &P,
    task_id: &TaskId,
    settled_here: Option<&[String]>,
    last: bool,
    published: &mut Option<String>,
) -> Result<Option<Settling>, DownloadError> {
    let Some(record) = ports.load_task(task_id).await? else { return Ok(Some(Settling::NoTask)) };
    let now = ports.now();
    let plan = match settle_plan(&record, task_id, now) {
        SettlePlan::Open => return Ok(Some(Settling::Open)),
        SettlePlan::AlreadySettled => return Ok(Some(Settling::AlreadySettled)),
        SettlePlan::Settle(plan) => *plan,
    };
    if record.vault == VaultState::Pending && settled_here.is_some_and(|here| !settled_last(&record, here)) {
        return Ok(Some(Settling::Deferred));
    }
    if record.vault != VaultState::Pending && !record.files.is_empty() {
        // A new stage over settled files, or a settler that stopped before its write.
        tracing::info!(vault = %plan.vault, "the vault is settled but its manifest is not recorded; writing it");
    }
    // Whether this check may publish its Task Vaulted (not over a manifest of a later read),
    // and whether only once its settle write applied.
    let (may_publish, only_if_settled) = match put_fenced(ports, &plan).await? {
        Fenced::Current => (true, false),
        // Its Task Vaulted would go out after the newer one's: the check reads again.
        Fenced::ReadSince | Fenced::Superseded if !last => {
            tracing::info!(key = plan.manifest_key, "a newer manifest is written; reading the task again");
            return Ok(None);
        }
        // On the last check, the settle write (conditional on the version read) applies only
        // when the table is behind S3 (restored from a backup): settled, or it never would be.
        // A manifest of a later read of this generation and stage published its own event.
        Fenced::ReadSince => {
            tracing::warn!(
                key = plan.manifest_key,
                "a manifest of a later read is written; settling the item as read, if it still is"
            );
            (false, false)
        }
        // The same, and its event is published once the write applied: a refused write means
        // the newer manifest is no restore's but a later stage's written since this read,
        // whose own event went out, so this older one must not follow it.
        Fenced::Superseded => {
            tracing::warn!(
                key = plan.manifest_key,
                "the manifest is newer than the task item read; settling the item as read, if it still is"
            );
            (true, true)
        }
    };
    // Before the settle write: once the task is settled no check comes back to publish it.
    let says_nothing_new = record.announced.as_deref() == Some(plan.announcement.as_str());
    let publishes = may_publish && !says_nothing_new;
    if may_publish && says_nothing_new {
        tracing::info!(
            generation = plan.generation,
            "Task Vaulted would say what the last one said; not published again"
        );
    }
    if publishes && !only_if_settled {
        publish_vaulted(ports, &record, &plan, published).await?;
    }
    let (vault, key, files) = (plan.vault.as_str(), plan.manifest_key.as_str(), plan.manifest.files.len());
    Ok(match ports.settle_task(task_id, &plan).await? {
        SettleWrite::Settled => {
            let publishes = match publishes && only_if_settled {
                true => publish_after_settling(ports, &record, &plan, published).await,
                false => publishes,
            };
            tracing::info!(vault, key, files, generation = plan.generation, "task settled; manifest written");
            // Counted by the settles that publish (the webhooks-silent alarm reads them as
            // Task Vaulted events, and a settle saying nothing new tells no one files are safe);
            // not by one whose publish after its write was given up.
            if publishes {
                let seconds = (now.unix_ms - record.first_received_at.unix_ms).max(0) as f64 / 1000.0;
                ports.emit_metrics(&Measure::Settled { seconds });
            }
            Some(Settling::Settled)
        }
        SettleWrite::Rewritten => {
            tracing::info!(vault, key, "manifest recorded; the vault was settled already");
            Some(Settling::Recorded)
        }
        SettleWrite::Refused => {
            tracing::info!(key, "manifest written, but the task moved on meanwhile; not settling");
            None
        }
    })
}

/// Publish the plan's Task Vaulted once its settle write applied ([`Fenced::Superseded`] on the
/// last check): no redelivery would publish it (the task reads settled), so a few tries, then
/// an ERROR for the event lost.
async fn publish_after_settling<P: Ports>(
    ports: &P,
    record: &TaskRecord,
    plan: &ManifestPlan,
    published: &mut Option<String>,
) -> bool {
    let mut tries = 0;
    while let Err(e) = publish_vaulted(ports, record, plan, published).await {
        tries += 1;
        if tries == PUBLISH_AFTER_SETTLING_TRIES {
            tracing::error!(
                error = %e,
                generation = plan.generation,
                "Task Vaulted could not be published after the settle write; it is not sent again"
            );
            return false;
        }
        ports.sleep(stemvault_vault::retry::conflict_backoff(tries)).await;
    }
    true
}

/// Tries of [`publish_after_settling`].
pub(crate) const PUBLISH_AFTER_SETTLING_TRIES: u32 = 3;

/// Publish the plan's Task Vaulted, unless this call's checks published it already.
async fn publish_vaulted<P: Ports>(
    ports: &P,
    record: &TaskRecord,
    plan: &ManifestPlan,
    published: &mut Option<String>,
) -> Result<(), DownloadError> {
    if published.as_deref() != Some(plan.announcement.as_str()) {
        let vaulted = events::vaulted(record, plan.vault, ports.vault_bucket(), &plan.manifest_key);
        ports.publish_events(std::slice::from_ref(&vaulted)).await?;
        *published = Some(plan.announcement.clone());
    }
    Ok(())
}

/// What is under a manifest's key after [`put_fenced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fenced {
    /// The plan's manifest: written now, or by another worker settling the same plan.
    Current,
    /// A newer one (a later generation, or a later stage of this one): the plan is out of
    /// date, and the task item moved on since it was read.
    Superseded,
    /// One of this generation and stage from a later read of the task item (a higher
    /// version): another settle read the item after this one, so this plan's event and settle
    /// would only come after that one's, out of date.
    ReadSince,
}

/// Write the plan's manifest unless one as new is already under its key.
///
/// Several workers may write a manifest of one task: two that finish its last files at
/// once (both of the same generation), a redelivery after a worker stopped before its
/// settle write, and a writer that stalls in its PutObject while ingest reopens the task
/// and the next settle writes the newer generation's manifest; that stalled PutObject must
/// not replace the newer manifest when it lands. So the object is fenced by generation,
/// stage and the task item's version read ([`ManifestPlan::generation`], the manifest's stage
/// and [`ManifestPlan::version`], kept as [`GENERATION_METADATA`], [`STAGE_METADATA`] and
/// [`VERSION_METADATA`]): read what is under the key; if it is as new as the plan or newer,
/// there is nothing to write (a newer manifest, or this plan's, is there); otherwise write
/// conditionally on the object read still being there (its ETag, or none). Every write that
/// lands thus replaces exactly the object its writer saw, which was older, so the fence
/// under the key only grows, whatever the timing; a write that loses the race reads again.
/// (The version orders the manifests of one generation and stage: one of a settle refused
/// since, read between two commits of that generation, is replaced by the one read after.)
///
/// (It starts with a write that requires no object under the key: the first manifest of a
/// task, the usual case, then costs one request.)
///
/// (The other design, a new key per generation with the record pointing at the current
/// one, would leave `tasks/<task_id>/manifest.json` stale or gone; this keeps that one key.)
pub(crate) async fn put_fenced<P: Ports>(ports: &P, plan: &ManifestPlan) -> Result<Fenced, DownloadError> {
    let (key, generation, fence) = (plan.manifest_key.as_str(), plan.generation, ManifestFence::of(plan));
    // Most settles write a task's first manifest: write it as new before reading what is
    // under the key (one S3 request instead of two). It lands only where there is no object,
    // so it replaces nothing; an object there refuses it, and the loop reads that object.
    if ports.write_manifest(key, &plan.manifest, fence, None).await? == Conditional::Applied {
        return Ok(Fenced::Current);
    }
    let ours = (generation, plan.manifest.stage.rank(), plan.version);
    // Whether any attempt's HEAD found an object.
    let seen = &AtomicBool::new(false);
    let written = retry_on_conflict(ports, MANIFEST_ATTEMPTS, |_| async move {
        let current = ports.head_object(key).await?;
        let expected = match &current {
            Some(head) => {
                // A manifest without a generation predates generations: any plan is newer;
                // one without a stage predates stages: a plan of its generation is newer; one
                // without a version, one of its generation and stage.
                let theirs = head.metadata.get(GENERATION_METADATA).and_then(|g| g.parse::<u64>().ok()).map(|g| {
                    let stage = head.metadata.get(STAGE_METADATA).and_then(|s| s.parse::<Stage>().ok());
                    let version = head.metadata.get(VERSION_METADATA).and_then(|v| v.parse::<u64>().ok());
                    (g, stage.map_or(0, Stage::rank), version.unwrap_or(0))
                });
                if let Some(theirs) = theirs.filter(|theirs| *theirs >= ours) {
                    tracing::info!(key, generation, ?theirs, "a manifest as new or newer is already written");
                    return Ok(Attempt::Done(match theirs {
                        _ if theirs == ours => Fenced::Current,
                        (g, stage, _) if (g, stage) == (ours.0, ours.1) => Fenced::ReadSince,
                        _ => Fenced::Superseded,
                    }));
                }
                Some(head.etag.as_str())
            }
            None => None,
        };
        Ok::<_, DownloadError>(match ports.write_manifest(key, &plan.manifest, fence, expected).await? {
            Conditional::Applied => Attempt::Done(Fenced::Current),
            Conditional::Conflict => {
                if current.is_some() {
                    seen.store(true, Ordering::Relaxed);
                }
                tracing::debug!(key, "the manifest changed since it was read; reading it again");
                Attempt::Conflict
            }
        })
    })
    .await?;
    // Refused as new at every attempt though HEAD never found an object: not another settle's
    // write landing between the two (or still under way: S3's 409), which a later HEAD shows,
    // but an object HEAD does not show (the 403 S3 answers a role denied the read reads as
    // none). A bucket fault, not a manifest that keeps changing.
    if written.is_none() && !seen.load(Ordering::Relaxed) {
        let why = "refused as new at every attempt, though HEAD finds no object under the key (s3:GetObject denied?)";
        return Err(StorageError::transient("PutObject (manifest)", why).into());
    }
    written.ok_or(DownloadError::Contention)
}
