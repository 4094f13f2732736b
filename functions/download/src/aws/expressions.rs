//! The DynamoDB UpdateItem expressions of the download function, one pure function per
//! write, each returning the whole request body ([`Update`]) so its tests see exactly what
//! DynamoDB gets.
//!
//! File updates are targeted (`#f.#n` is `files.<name>`) and conditional on the file's
//! status and claim; every update increments the record's `version`, as every writer does.

use stemvault_aws::Update;
use stemvault_aws::table::{n, s};
use stemvault_vault::{FileStatus, OPEN_MARKER, Timestamp, VaultState};

use crate::domain::Claim;
use crate::upload::StoredObject;

/// An update of the task's item; every writer increments `version`.
fn versioned(update: &str, condition: &str) -> Update {
    let mut u = Update::new(update, condition);
    u.name("#version", "version").value(":one", n(1));
    u
}

/// An update of the file `name`, with its `#status`.
fn of_file(name: &str, update: &str, condition: &str) -> Update {
    let mut u = versioned(update, condition);
    u.name("#f", "files").name("#n", name).name("#status", "status");
    u
}

/// `pending`/`enqueuing`/`queued`, or `downloading` with an expired lease, -> `downloading`
/// under `claim` (attempts + 1), if the file's URL is still `claim.url`.
pub(crate) fn claim_file(name: &str, claim: &Claim) -> Update {
    let mut u = of_file(
        name,
        "SET #f.#n.#status = :downloading, #f.#n.#claim = :me, #f.#n.#lease = :lease, \
         #f.#n.#attempts = if_not_exists(#f.#n.#attempts, :zero) + :one, #version = #version + :one",
        "#f.#n.#url = :url AND (#f.#n.#status IN (:pending, :enqueuing, :queued) \
         OR (#f.#n.#status = :downloading AND (attribute_not_exists(#f.#n.#lease) OR #f.#n.#lease < :now)))",
    );
    u.name("#claim", "claim").name("#lease", "lease_until").name("#attempts", "attempts").name("#url", "url");
    u.value(":downloading", s(FileStatus::Downloading.as_str()))
        .value(":pending", s(FileStatus::Pending.as_str()))
        .value(":enqueuing", s(FileStatus::Enqueuing.as_str()))
        .value(":queued", s(FileStatus::Queued.as_str()))
        .value(":me", s(&claim.worker))
        .value(":lease", n(claim.lease_until))
        .value(":now", n(claim.now))
        .value(":url", s(&claim.url))
        .value(":zero", n(0));
    u
}

/// The condition of every write by the claim holder: still `downloading` under `:me`.
const HELD: &str = "#f.#n.#status = :downloading AND #f.#n.#claim = :me";

/// A file held by `worker`, finished: its claim and lease removed.
fn finish_file(name: &str, worker: &str, update: &str) -> Update {
    let mut u = of_file(name, update, HELD);
    u.name("#claim", "claim").name("#lease", "lease_until");
    u.value(":downloading", s(FileStatus::Downloading.as_str())).value(":me", s(worker));
    u
}

/// `downloading` under `worker` -> `stored` with size, digest, content type (removed when
/// the source sent none) and time (as stored: RFC 3339); a last error is removed.
pub(crate) fn record_stored(name: &str, worker: &str, stored: &StoredObject, stored_at: Timestamp) -> Update {
    let mut u = match &stored.content_type {
        Some(content_type) => {
            let mut u = finish_file(
                name,
                worker,
                "SET #f.#n.#status = :stored, #f.#n.#bytes = :bytes, #f.#n.#sha = :sha, #f.#n.#at = :at, \
                 #f.#n.#ct = :ct, #version = #version + :one \
                 REMOVE #f.#n.#claim, #f.#n.#lease, #f.#n.#error",
            );
            u.value(":ct", s(content_type));
            u
        }
        None => finish_file(
            name,
            worker,
            "SET #f.#n.#status = :stored, #f.#n.#bytes = :bytes, #f.#n.#sha = :sha, #f.#n.#at = :at, \
             #version = #version + :one \
             REMOVE #f.#n.#claim, #f.#n.#lease, #f.#n.#error, #f.#n.#ct",
        ),
    };
    u.name("#bytes", "bytes").name("#sha", "sha256").name("#at", "stored_at");
    u.name("#ct", "content_type").name("#error", "error");
    u.value(":stored", s(FileStatus::Stored.as_str()))
        .value(":bytes", n(stored.bytes))
        .value(":sha", s(&stored.sha256_hex))
        .value(":at", s(&stored_at.rfc3339()));
    u
}

/// `downloading` under `worker` -> `status` (`failed` for good, or `queued` again), with
/// `error` saying why.
fn finish_with_error(name: &str, worker: &str, status: FileStatus, error: &str) -> Update {
    let mut u = finish_file(
        name,
        worker,
        "SET #f.#n.#status = :status, #f.#n.#error = :error, #version = #version + :one \
         REMOVE #f.#n.#claim, #f.#n.#lease",
    );
    u.name("#error", "error");
    u.value(":status", s(status.as_str())).value(":error", s(error));
    u
}

/// `downloading` under `worker` -> `failed` for good, with the reason.
pub(crate) fn record_failed(name: &str, worker: &str, reason: &str) -> Update {
    finish_with_error(name, worker, FileStatus::Failed, reason)
}

/// `downloading` under `worker` -> `queued` again, keeping the error for people to see.
pub(crate) fn release_file(name: &str, worker: &str, error: &str) -> Update {
    finish_with_error(name, worker, FileStatus::Queued, error)
}

/// At `expected_version`: set `vault` and the manifest lease, and drop `open` (which takes
/// the task out of the sweeper's index).
pub(crate) fn settle_task(expected_version: u64, vault: VaultState, lease_until: i64) -> Update {
    let mut u = versioned(
        "SET #vault = :settled, #ml = :lease, #version = #version + :one REMOVE #open",
        "#version = :expected",
    );
    u.name("#vault", "vault").name("#ml", "manifest_lease_until").name("#open", "open");
    u.value(":settled", s(vault.as_str())).value(":lease", n(lease_until)).value(":expected", n(expected_version));
    u
}

/// While `vault` and the manifest lease are the ones [`settle_task`] set: record the
/// manifest's key and end the lease.
pub(crate) fn record_manifest(vault: VaultState, lease_until: i64, manifest_key: &str) -> Update {
    let mut u =
        versioned("SET #mk = :key, #version = #version + :one REMOVE #ml", "#vault = :settled AND #ml = :lease");
    u.name("#vault", "vault").name("#mk", "manifest_key").name("#ml", "manifest_lease_until");
    u.value(":settled", s(vault.as_str())).value(":lease", n(lease_until)).value(":key", s(manifest_key));
    u
}

/// At `settled_version` (the version [`settle_task`] wrote): `pending` and open again, no
/// manifest key or lease.
pub(crate) fn reopen_task(settled_version: u64) -> Update {
    let mut u = versioned(
        "SET #vault = :pending, #open = :open, #version = #version + :one REMOVE #mk, #ml",
        "#version = :expected",
    );
    u.name("#vault", "vault").name("#open", "open").name("#mk", "manifest_key").name("#ml", "manifest_lease_until");
    u.value(":pending", s(VaultState::Pending.as_str()))
        .value(":open", s(OPEN_MARKER))
        .value(":expected", n(settled_version));
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every placeholder is used and every one used is defined (DynamoDB refuses both
    /// mistakes), and the version goes up by one.
    fn assert_well_formed(u: &Update) {
        let text = format!("{} {}", u.update, u.condition);
        for placeholder in u.names.keys().chain(u.values.keys()) {
            assert!(placeholders(&text).contains(&placeholder.as_str()), "{placeholder} unused in {text}");
        }
        for used in placeholders(&text) {
            let defined = if used.starts_with('#') { u.names.contains_key(used) } else { u.values.contains_key(used) };
            assert!(defined, "{used} undefined in {text}");
        }
        assert!(u.update.contains("#version = #version + :one"), "{}", u.update);
        assert_eq!(u.names["#version"], "version");
        assert_eq!(u.values[":one"], n(1));
    }

    fn placeholders(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(['#', ':']) {
            let tail = &rest[start..];
            let end = tail[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(tail.len(), |e| e + 1);
            found.push(&tail[..end]);
            rest = &tail[end..];
        }
        found
    }

    fn stored(content_type: Option<&str>) -> StoredObject {
        StoredObject { bytes: 42, sha256_hex: "ab".repeat(32), content_type: content_type.map(str::to_owned), parts: 1 }
    }

    #[test]
    fn a_claim_takes_an_open_or_abandoned_file_whose_url_is_unchanged() {
        let claim =
            Claim { worker: "w-1".into(), url: "https://cdn1.suno.ai/a.mp3".into(), lease_until: 900, now: 100 };
        let u = claim_file("tracks/a/audio", &claim);
        assert_well_formed(&u);
        assert_eq!(
            u.condition,
            "#f.#n.#url = :url AND (#f.#n.#status IN (:pending, :enqueuing, :queued) \
             OR (#f.#n.#status = :downloading AND (attribute_not_exists(#f.#n.#lease) OR #f.#n.#lease < :now)))"
        );
        assert!(u.update.starts_with("SET #f.#n.#status = :downloading, #f.#n.#claim = :me, #f.#n.#lease = :lease, "));
        assert!(u.update.contains("#f.#n.#attempts = if_not_exists(#f.#n.#attempts, :zero) + :one"));
        assert_eq!((u.names["#f"].as_str(), u.names["#n"].as_str()), ("files", "tracks/a/audio"));
        assert_eq!(u.names["#lease"], "lease_until");
        assert_eq!(u.values[":me"], s("w-1"));
        assert_eq!(u.values[":url"], s("https://cdn1.suno.ai/a.mp3"));
        assert_eq!((&u.values[":lease"], &u.values[":now"]), (&n(900), &n(100)));
        for (placeholder, status) in [(":pending", "pending"), (":enqueuing", "enqueuing"), (":queued", "queued")] {
            assert_eq!(u.values[placeholder], s(status));
        }
        assert_eq!(u.values[":downloading"], s("downloading"));
    }

    #[test]
    fn stored_records_the_object_and_drops_the_claim_and_last_error() {
        let at = Timestamp::from_unix_ms(1_795_446_000_120);
        let u = record_stored("vocal", "w-1", &stored(Some("audio/mpeg")), at);
        assert_well_formed(&u);
        assert_eq!(u.condition, HELD);
        assert_eq!(
            u.update,
            "SET #f.#n.#status = :stored, #f.#n.#bytes = :bytes, #f.#n.#sha = :sha, #f.#n.#at = :at, \
             #f.#n.#ct = :ct, #version = #version + :one REMOVE #f.#n.#claim, #f.#n.#lease, #f.#n.#error"
        );
        assert_eq!(u.values[":stored"], s("stored"));
        assert_eq!(u.values[":bytes"], n(42));
        assert_eq!(u.values[":sha"], s(&"ab".repeat(32)));
        assert_eq!(u.values[":at"], s("2026-11-23T15:00:00.120Z"));
        assert_eq!(u.values[":ct"], s("audio/mpeg"));
        assert_eq!((u.names["#sha"].as_str(), u.names["#ct"].as_str()), ("sha256", "content_type"));
        assert_eq!(u.values[":me"], s("w-1"));
    }

    #[test]
    fn stored_without_a_content_type_removes_an_old_one() {
        let u = record_stored("vocal", "w-1", &stored(None), Timestamp::from_unix_ms(0));
        assert_well_formed(&u);
        assert!(u.update.ends_with("REMOVE #f.#n.#claim, #f.#n.#lease, #f.#n.#error, #f.#n.#ct"), "{}", u.update);
        assert!(!u.values.contains_key(":ct"));
    }

    #[test]
    fn failed_and_released_files_keep_the_error_and_drop_the_claim() {
        for (u, status) in [
            (record_failed("vocal", "w-1", "source answered 410 Gone"), "failed"),
            (release_file("vocal", "w-1", "source answered 410 Gone"), "queued"),
        ] {
            assert_well_formed(&u);
            assert_eq!(u.condition, "#f.#n.#status = :downloading AND #f.#n.#claim = :me");
            assert_eq!(
                u.update,
                "SET #f.#n.#status = :status, #f.#n.#error = :error, #version = #version + :one \
                 REMOVE #f.#n.#claim, #f.#n.#lease"
            );
            assert_eq!(u.values[":status"], s(status));
            assert_eq!(u.values[":error"], s("source answered 410 Gone"));
            assert_eq!(u.names["#n"], "vocal");
        }
    }

    #[test]
    fn settling_flips_the_vault_at_the_version_read_and_closes_the_task() {
        let u = settle_task(7, VaultState::Partial, 1_800_000_120);
        assert_well_formed(&u);
        assert_eq!(u.update, "SET #vault = :settled, #ml = :lease, #version = #version + :one REMOVE #open");
        assert_eq!(u.condition, "#version = :expected");
        assert_eq!(u.values[":settled"], s("partial"));
        assert_eq!((&u.values[":lease"], &u.values[":expected"]), (&n(1_800_000_120), &n(7)));
        assert_eq!((u.names["#ml"].as_str(), u.names["#open"].as_str()), ("manifest_lease_until", "open"));
    }

    #[test]
    fn the_manifest_is_recorded_only_under_the_settling_lease() {
        let u = record_manifest(VaultState::Complete, 1_800_000_120, "tasks/t/manifest.json");
        assert_well_formed(&u);
        assert_eq!(u.update, "SET #mk = :key, #version = #version + :one REMOVE #ml");
        assert_eq!(u.condition, "#vault = :settled AND #ml = :lease");
        assert_eq!(u.values[":settled"], s("complete"));
        assert_eq!(u.values[":key"], s("tasks/t/manifest.json"));
        assert_eq!(u.names["#mk"], "manifest_key");
    }

    #[test]
    fn reopening_undoes_the_settle_at_its_version() {
        let u = reopen_task(8);
        assert_well_formed(&u);
        assert_eq!(u.update, "SET #vault = :pending, #open = :open, #version = #version + :one REMOVE #mk, #ml");
        assert_eq!(u.condition, "#version = :expected");
        assert_eq!(u.values[":pending"], s("pending"));
        assert_eq!(u.values[":open"], s(OPEN_MARKER));
        assert_eq!(u.values[":expected"], n(8));
    }
}
