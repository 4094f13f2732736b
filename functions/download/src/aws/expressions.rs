//! The DynamoDB UpdateItem expressions of the download function, one pure function per
//! write, each returning the whole request body ([`Update`]) so its tests see exactly what
//! DynamoDB gets.
//!
//! Each write touches one item of the task's collection ([`stemvault_vault::items`]): the
//! claim, `stored`, `failed` and the release update the file's item (`file#<name>`) and
//! increment its `rev`; the settle updates the task item (`task`) and increments its
//! `version`, as every writer of those items does.

use stemvault_aws::Update;
use stemvault_aws::table::{n, s};
use stemvault_vault::download::ManifestPlan;
use stemvault_vault::text::bounded_reason;
use stemvault_vault::{FileStatus, LeaseEnd, Timestamp};

use crate::domain::{Claim, Failure, HeldCopy};
use crate::upload::StoredObject;

/// An update of a file's item, with its `#status`; every write of it increments `rev`.
fn of_file(update: &str, condition: &str) -> Update {
    let mut u = Update::new(update, condition);
    u.name("#status", "status").name("#rev", "rev").value(":one", n(1));
    u
}

/// `pending`/`enqueuing`/`queued`, or `downloading` with a lease that ended before
/// `claim.now`, -> `downloading` under `claim` (attempts + 1). No read comes before it:
/// `attribute_exists(sk)` keeps it from creating an item for a file the task does not have,
/// and the item comes back either way (ALL_NEW when applied, ALL_OLD when refused).
pub(crate) fn claim_file(claim: &Claim) -> Update {
    let mut u = of_file(
        "SET #status = :downloading, #claim = :me, #lease = :lease ADD #attempts :one, #rev :one",
        "attribute_exists(sk) AND (#status IN (:pending, :enqueuing, :queued) \
         OR (#status = :downloading AND #lease < :now))",
    );
    u.name("#claim", "claim").name("#lease", "lease_until").name("#attempts", "attempts");
    u.value(":downloading", s(FileStatus::Downloading.as_str()))
        .value(":pending", s(FileStatus::Pending.as_str()))
        .value(":enqueuing", s(FileStatus::Enqueuing.as_str()))
        .value(":queued", s(FileStatus::Queued.as_str()))
        .value(":me", s(&claim.worker))
        .value(":lease", n(claim.lease_until.unix_seconds))
        .value(":now", n(claim.now.unix_seconds()));
    u
}

/// The condition of every write by the claim holder: still `downloading` under `:me`.
const HELD: &str = "#status = :downloading AND #claim = :me";

/// [`HELD`], copying the item's own URL, and no newer one waiting (`next_url`).
const HELD_NOTHING_NEWER: &str = "#status = :downloading AND #claim = :me AND attribute_not_exists(#next_url)";

/// [`HELD`], copying the item's `next_url` (`:url`), and no newer one waiting since.
const HELD_AT_NEXT: &str = "#status = :downloading AND #claim = :me AND #next_url = :url";

/// The copied `next_url` and `next_key` set as `url` and `key` ([`set_next`] gives the values).
const SET_NEXT: &str = ", #url = :url, #key = :key";

/// [`HELD`], with a `next_url` (and its `next_key`) waiting: the one being copied, or one
/// newer still. (A SET reading a missing attribute would fail the write, not refuse it.)
const HELD_WITH_NEXT: &str =
    "#status = :downloading AND #claim = :me AND attribute_exists(#next_url) AND attribute_exists(#next_key)";

/// The item's `next_url` and `next_key` as they are now set as `url` and `key`.
const MOVE_NEXT: &str = ", #url = #next_url, #key = #next_key";

/// Removed with a URL moved in ([`SET_NEXT`], [`MOVE_NEXT`]): a poll's reopens are counted
/// per URL.
const RESET_RELINKS: &str = ", #relinks";

/// A file held by `worker` (`condition`: [`HELD`], [`HELD_NOTHING_NEWER`], [`HELD_AT_NEXT`]
/// or [`HELD_WITH_NEXT`]), finished: its claim removed, and its lease (or, for a release, set to
/// when it ended). The URL attributes are named whether or not `update` uses them: each
/// builder ends with [`Update::without_unused_placeholders`].
fn finish_file(worker: &str, update: &str, condition: &str) -> Update {
    let mut u = of_file(update, condition);
    u.name("#claim", "claim").name("#lease", "lease_until");
    u.name("#url", "url").name("#key", "key").name("#next_url", "next_url").name("#next_key", "next_key");
    u.name("#relinks", "relinks");
    u.value(":downloading", s(FileStatus::Downloading.as_str())).value(":me", s(worker));
    u
}

/// `downloading` under `held.worker` -> `stored` with size, digest, content type (removed
/// when the source sent none) and time (as stored: RFC 3339); `url` and `key` set to
/// `held.next` when that was copied; a last error and a newer URL left (`next_url`) removed:
/// a stored file is never copied again.
pub(crate) fn record_stored(held: HeldCopy<'_>, stored: &StoredObject, stored_at: Timestamp) -> Update {
    let content_type = if stored.content_type.is_some() { ", #ct = :ct" } else { "" };
    let (next, relinks) = if held.next.is_some() { (SET_NEXT, RESET_RELINKS) } else { ("", "") };
    let removed_ct = if stored.content_type.is_none() { ", #ct" } else { "" };
    let mut u = finish_file(
        held.worker,
        &format!(
            "SET #status = :stored, #bytes = :bytes, #sha = :sha, #at = :at{content_type}{next} \
             ADD #rev :one REMOVE #claim, #lease, #error, #error_code{removed_ct}, #next_url, #next_key{relinks}"
        ),
        HELD,
    );
    if let Some(content_type) = &stored.content_type {
        u.value(":ct", s(content_type));
    }
    u.name("#bytes", "bytes").name("#sha", "sha256").name("#at", "stored_at");
    u.name("#ct", "content_type").name("#error", "error").name("#error_code", "error_code");
    u.value(":stored", s(FileStatus::Stored.as_str()))
        .value(":bytes", n(stored.bytes))
        .value(":sha", s(&stored.sha256_hex))
        .value(":at", s(&stored_at.rfc3339()));
    set_next(&mut u, held);
    u.without_unused_placeholders()
}

/// The values of [`SET_NEXT`] (`:url`, `:key`), when `next_url` was what was copied.
fn set_next(u: &mut Update, held: HeldCopy<'_>) {
    if let Some(next) = held.next {
        u.value(":url", s(next.url)).value(":key", s(next.key));
    }
}

/// `downloading` under `held.worker`, with no URL newer than the one copied waiting in
/// `next_url` -> `failed` for good, with the reason and when (and, when `held.next` was
/// copied, that as `url` and `key`). Refused for a newer URL ingest wrote meanwhile (the
/// holder copies that). The item's own URL is never sent back (a signed body may bring
/// hundreds of kilobytes of it).
pub(crate) fn record_failed(held: HeldCopy<'_>, failure: &Failure<'_>) -> Update {
    let (next, relinks, condition) = match held.next {
        Some(_) => (SET_NEXT, RESET_RELINKS, HELD_AT_NEXT),
        None => ("", "", HELD_NOTHING_NEWER),
    };
    let mut u = finish_file(
        held.worker,
        &format!(
            "SET #status = :status, #error = :error, #error_code = :code, #failed_at = :at{next} \
             ADD #rev :one REMOVE #claim, #lease, #next_url, #next_key{relinks}"
        ),
        condition,
    );
    u.name("#error", "error").name("#error_code", "error_code").name("#failed_at", "failed_at");
    u.value(":status", s(FileStatus::Failed.as_str()))
        .value(":error", s(&bounded_reason(failure.reason)))
        .value(":code", s(failure.code.as_str()))
        .value(":at", s(&failure.at.rfc3339()));
    set_next(&mut u, held);
    u.without_unused_placeholders()
}

/// `downloading` under `held.worker` -> `pending` again, keeping the error for people to
/// see, its lease ended `released_at` (the sweeper counts from it how long the
/// message can still come back); with `held.next`, the item's `next_url` and `next_key`,
/// the one being copied or one newer still, become `url` and `key` (the retry copies the
/// newest, not the URL that failed for good). (Never `queued`: that lives in the task item's
/// `queued` set, which names the file since its message was sent, so it reads as `queued`
/// again.)
pub(crate) fn release_file(held: HeldCopy<'_>, error: &str, released_at: LeaseEnd) -> Update {
    let (next, removed, condition) = match held.next {
        Some(_) => (MOVE_NEXT, ", #next_url, #next_key, #relinks", HELD_WITH_NEXT),
        None => ("", "", HELD),
    };
    let mut u = finish_file(
        held.worker,
        &format!(
            "SET #status = :status, #error = :error, #lease = :released{next} ADD #rev :one REMOVE #claim{removed}"
        ),
        condition,
    );
    u.name("#error", "error");
    u.value(":status", s(FileStatus::Pending.as_str()))
        .value(":error", s(&bounded_reason(error)))
        .value(":released", n(released_at.unix_seconds));
    u.without_unused_placeholders()
}

/// The task item, while it is still the one the plan was read from (its `version`, so its
/// `generation` and `stage` too): set `vault` and `manifest_key`, and drop `open` (which
/// takes the task out of the sweeper's index). The old item (ALL_OLD) tells whether this
/// write settled a pending vault or recorded the manifest of one settled before (a new stage
/// over settled files, a settler that stopped before its write).
/// Never over a settled task (one with `manifest_key`) marked open again, nor while a
/// save is adding files (the add fence, `adding`): a request adding or reopening files marks
/// and fences the task item before writing their items ([`stemvault_vault::items::MarkOpen`],
/// generation unchanged until its task item), and a settle read before those items existed
/// would take the task out of the sweeper's index; should that request then stop, its files
/// would wait unsent for the provider's retry instead of the sweeper.
/// With [`ManifestPlan::watch_from`], the same write also puts the task in the reconciler's
/// `reconcile-due` index (a file expired; the provider may still give a fresh URL), keeping a
/// watch it finds there with its schedule. It keeps what the plan's `Task Vaulted` says
/// (`announced`), published before it (after it, on a last check over a newer manifest).
pub(crate) fn settle_task(plan: &ManifestPlan) -> Update {
    let watch = if plan.watch_from.is_some() {
        ", #reconcile = if_not_exists(#reconcile, :due), #reconcile_at = if_not_exists(#reconcile_at, :at)"
    } else {
        ""
    };
    let mut u = Update::new(
        format!("SET #vault = :vault, #mk = :key, #announced = :announced{watch} ADD #version :one REMOVE #open"),
        "#version = :read AND #generation = :generation AND #stage = :stage \
         AND (attribute_not_exists(#mk) OR attribute_not_exists(#open)) AND attribute_not_exists(#adding)",
    );
    u.name("#vault", "vault")
        .name("#mk", "manifest_key")
        .name("#announced", "announced")
        .name("#version", "version")
        .name("#open", "open")
        .name("#generation", "generation")
        .name("#stage", "stage")
        .name("#adding", "adding");
    u.value(":vault", s(plan.vault.as_str()))
        .value(":key", s(&plan.manifest_key))
        .value(":announced", s(&plan.announcement))
        .value(":one", n(1))
        .value(":read", n(plan.version))
        .value(":generation", n(plan.generation))
        .value(":stage", s(plan.manifest.stage.as_str()));
    if let Some(at) = plan.watch_from {
        u.name("#reconcile", "reconcile").name("#reconcile_at", "reconcile_at");
        u.value(":due", s(stemvault_vault::RECONCILE_DUE)).value(":at", s(&at.rfc3339()));
    }
    u
}

#[cfg(test)]
mod tests {
    use stemvault_vault::{Manifest, TaskRecord, VaultState};
    use suno_callbacks::{Family, Stage};

    use super::*;
    use crate::domain::{FailureCode, NextSource};

    /// Well formed ([`Update::assert_well_formed`]), and the item's counter goes up by one.
    fn assert_well_formed_counting(u: &Update, counter: &str) {
        u.assert_well_formed();
        let placeholder = format!("#{counter}");
        assert!(
            u.update.contains(&format!("ADD {placeholder} :one"))
                || u.update.contains(&format!(", {placeholder} :one"))
        );
        assert_eq!(u.names[&placeholder], counter);
        assert_eq!(u.values[":one"], n(1));
    }

    const HELD_OWN: HeldCopy<'static> = HeldCopy { worker: "w-1", next: None };
    const HELD_NEXT: HeldCopy<'static> =
        HeldCopy { worker: "w-1", next: Some(NextSource { url: "https://cdn/a.wav", key: "tasks/t1/a.wav" }) };

    fn stored(content_type: Option<&str>) -> StoredObject {
        StoredObject { bytes: 42, sha256_hex: "ab".repeat(32), content_type: content_type.map(str::to_owned), parts: 1 }
    }

    #[test]
    fn a_claim_takes_an_open_or_abandoned_file_item_without_reading_it_first() {
        let claim = Claim {
            worker: "w-1".into(),
            lease_until: LeaseEnd::from_unix_seconds(900),
            now: Timestamp::from_unix_ms(100_000),
        };
        let u = claim_file(&claim);
        assert_well_formed_counting(&u, "rev");
        assert_eq!(u.update, "SET #status = :downloading, #claim = :me, #lease = :lease ADD #attempts :one, #rev :one");
        assert_eq!(
            u.condition,
            "attribute_exists(sk) AND (#status IN (:pending, :enqueuing, :queued) \
             OR (#status = :downloading AND #lease < :now))"
        );
        assert_eq!((u.names["#lease"].as_str(), u.names["#attempts"].as_str()), ("lease_until", "attempts"));
        assert_eq!((u.names["#status"].as_str(), u.names["#claim"].as_str()), ("status", "claim"));
        assert_eq!(u.values[":me"], s("w-1"));
        assert_eq!((&u.values[":lease"], &u.values[":now"]), (&n(900), &n(100)));
        for (placeholder, status) in [(":pending", "pending"), (":enqueuing", "enqueuing"), (":queued", "queued")] {
            assert_eq!(u.values[placeholder], s(status));
        }
        assert_eq!(u.values[":downloading"], s("downloading"));
    }

    #[test]
    fn stored_records_the_object_and_drops_the_claim_and_last_error() {
        let at = Timestamp::from_unix_ms(1_795_446_000_120);
        let u = record_stored(HELD_OWN, &stored(Some("audio/mpeg")), at);
        assert_well_formed_counting(&u, "rev");
        assert_eq!(u.condition, HELD, "not on next_url: a newer one written meanwhile gives way to the copy made");
        assert_eq!(
            u.update,
            "SET #status = :stored, #bytes = :bytes, #sha = :sha, #at = :at, #ct = :ct \
             ADD #rev :one REMOVE #claim, #lease, #error, #error_code, #next_url, #next_key"
        );
        assert_eq!((u.names["#next_url"].as_str(), u.names["#next_key"].as_str()), ("next_url", "next_key"));
        assert!(!u.values.contains_key(":url"), "the item's own URL is not sent back");
        assert_eq!(u.values[":stored"], s("stored"));
        assert_eq!(u.values[":bytes"], n(42));
        assert_eq!(u.values[":sha"], s(&"ab".repeat(32)));
        assert_eq!(u.values[":at"], s("2026-11-23T15:00:00.120Z"));
        assert_eq!(u.values[":ct"], s("audio/mpeg"));
        assert_eq!((u.names["#sha"].as_str(), u.names["#ct"].as_str()), ("sha256", "content_type"));
        assert_eq!(u.values[":me"], s("w-1"));

        // The newer URL copied: it becomes the file's URL and key (its reopens counted afresh).
        let u = record_stored(HELD_NEXT, &stored(Some("audio/wav")), at);
        assert_well_formed_counting(&u, "rev");
        assert_eq!(
            u.update,
            "SET #status = :stored, #bytes = :bytes, #sha = :sha, #at = :at, #ct = :ct, #url = :url, #key = :key \
             ADD #rev :one REMOVE #claim, #lease, #error, #error_code, #next_url, #next_key, #relinks"
        );
        assert_eq!((u.names["#url"].as_str(), u.names["#key"].as_str()), ("url", "key"));
        assert_eq!((&u.values[":url"], &u.values[":key"]), (&s("https://cdn/a.wav"), &s("tasks/t1/a.wav")));
    }

    #[test]
    fn stored_without_a_content_type_removes_an_old_one() {
        let u = record_stored(HELD_OWN, &stored(None), Timestamp::from_unix_ms(0));
        assert_well_formed_counting(&u, "rev");
        assert!(
            u.update.ends_with("REMOVE #claim, #lease, #error, #error_code, #ct, #next_url, #next_key"),
            "{}",
            u.update
        );
        assert!(!u.values.contains_key(":ct"));
    }

    #[test]
    fn failed_and_released_files_keep_the_error_and_drop_the_claim() {
        let at = Timestamp::from_unix_ms(1_795_446_030_000);
        let failed = "SET #status = :status, #error = :error, #error_code = :code, #failed_at = :at \
                      ADD #rev :one REMOVE #claim, #lease, #next_url, #next_key";
        // A URL moved in counts its own reopens.
        let failed_at_next = "SET #status = :status, #error = :error, #error_code = :code, #failed_at = :at, \
                              #url = :url, #key = :key ADD #rev :one REMOVE #claim, #lease, #next_url, #next_key, \
                              #relinks";
        // A released file keeps when its lease ended: the sweeper counts from it.
        let released = "SET #status = :status, #error = :error, #lease = :released ADD #rev :one REMOVE #claim";
        // Releasing a newer URL being copied: the retry copies it (or one newer still), not
        // the URL that failed.
        let released_at_next = "SET #status = :status, #error = :error, #lease = :released, #url = #next_url, \
                                #key = #next_key ADD #rev :one REMOVE #claim, #next_url, #next_key, #relinks";
        // Failed for good only when no newer URL came meanwhile (the holder copies that next).
        let nothing_newer = "#status = :downloading AND #claim = :me AND attribute_not_exists(#next_url)";
        let at_next = "#status = :downloading AND #claim = :me AND #next_url = :url";
        let reason = "source answered 410 Gone";
        let failure = Failure { code: FailureCode::SourceExpired, reason, at };
        for (u, status, update, condition, next) in [
            (record_failed(HELD_OWN, &failure), "failed", failed, nothing_newer, None),
            (
                record_failed(HELD_NEXT, &failure),
                "failed",
                failed_at_next,
                at_next,
                Some(("https://cdn/a.wav", "tasks/t1/a.wav")),
            ),
            (
                release_file(HELD_OWN, reason, LeaseEnd::at(at)),
                "pending",
                released,
                "#status = :downloading AND #claim = :me",
                None,
            ),
            (
                release_file(HELD_NEXT, reason, LeaseEnd::at(at)),
                "pending",
                released_at_next,
                "#status = :downloading AND #claim = :me AND attribute_exists(#next_url) AND \
                 attribute_exists(#next_key)",
                None,
            ),
        ] {
            assert_well_formed_counting(&u, "rev");
            assert_eq!(u.condition, condition);
            assert_eq!(u.update, update);
            assert_eq!(u.values.get(":url"), next.map(|n| s(n.0)).as_ref());
            assert_eq!(u.values.get(":key"), next.map(|n| s(n.1)).as_ref());
            assert_eq!(u.values.get(":at"), (status == "failed").then(|| s(&at.rfc3339())).as_ref());
            assert_eq!(u.values.get(":released"), (status == "pending").then(|| n(at.unix_seconds())).as_ref());
            assert_eq!(u.values[":status"], s(status));
            assert_eq!(u.values[":error"], s(reason));
            assert_eq!(u.values.get(":code"), (status == "failed").then(|| s("source_expired")).as_ref());
            assert_eq!(u.values[":me"], s("w-1"));
        }
        // A reason quoting what a source sent (a refused host of 250,000 bytes) is cut: the
        // item must stay under DynamoDB's 400 KB for the file to be settled at all.
        let long = format!("the source host {}.example is not allowed", "a".repeat(250_000));
        let failure = Failure { reason: &long, ..failure };
        for u in [record_failed(HELD_OWN, &failure), release_file(HELD_OWN, &long, LeaseEnd::at(at))] {
            let Some(aws_sdk_dynamodb::types::AttributeValue::S(kept)) = u.values.get(":error") else {
                panic!("{u:?}")
            };
            assert!(kept.len() <= stemvault_vault::text::MAX_REASON_BYTES, "{}", kept.len());
            assert!(kept.starts_with("the source host aaa"), "{kept}");
        }
    }

    #[test]
    fn settling_sets_vault_and_manifest_key_at_the_generation_manifested() {
        let record =
            TaskRecord::new("t1", Family::VocalSeparation, Stage::Complete, 200, "ok", Timestamp::from_unix_ms(0));
        let plan = ManifestPlan {
            vault: VaultState::Partial,
            manifest_key: "tasks/t1/manifest.json".into(),
            manifest: Manifest::of(&record, VaultState::Partial, Timestamp::from_unix_ms(0)),
            generation: 7,
            version: 12,
            watch_from: None,
            announcement: "5eb7".into(),
        };
        let u = settle_task(&plan);
        assert_well_formed_counting(&u, "version");
        assert_eq!(u.update, "SET #vault = :vault, #mk = :key, #announced = :announced ADD #version :one REMOVE #open");
        assert_eq!(
            u.condition,
            "#version = :read AND #generation = :generation AND #stage = :stage \
             AND (attribute_not_exists(#mk) OR attribute_not_exists(#open)) AND attribute_not_exists(#adding)",
            "the item read (not vault = pending: a settled vault's manifest is recorded too), not over a settled \
             task marked open, nor while a save adds files"
        );
        assert_eq!((u.names["#version"].as_str(), &u.values[":read"]), ("version", &n(12)));
        assert_eq!(u.names["#adding"], "adding");
        assert_eq!((u.names["#stage"].as_str(), &u.values[":stage"]), ("stage", &s("complete")));
        assert_eq!(u.values[":vault"], s("partial"));
        assert_eq!(u.values[":key"], s("tasks/t1/manifest.json"));
        assert_eq!((u.names["#announced"].as_str(), &u.values[":announced"]), ("announced", &s("5eb7")));
        assert_eq!(u.values[":generation"], n(7));
        assert_eq!((u.names["#mk"].as_str(), u.names["#open"].as_str()), ("manifest_key", "open"));
        assert_eq!(u.names["#generation"], "generation");

        // A file expired: the same write asks the reconciler to poll.
        let at = Timestamp::from_unix_ms(1_795_446_030_000);
        let u = settle_task(&ManifestPlan { watch_from: Some(at), ..plan });
        assert_well_formed_counting(&u, "version");
        assert_eq!(
            u.update,
            "SET #vault = :vault, #mk = :key, #announced = :announced, #reconcile = if_not_exists(#reconcile, :due), \
             #reconcile_at = if_not_exists(#reconcile_at, :at) ADD #version :one REMOVE #open"
        );
        assert_eq!((&u.values[":due"], &u.values[":at"]), (&s("due"), &s(&at.rfc3339())));
        assert_eq!((u.names["#reconcile"].as_str(), u.names["#reconcile_at"].as_str()), ("reconcile", "reconcile_at"));
    }
}
