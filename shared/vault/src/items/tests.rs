use serde_dynamo::AttributeValue as V;

use super::*;
use crate::record::tests::{record, stored_task};

fn s(text: &str) -> V {
    V::S(text.to_owned())
}

/// Every item of a record, as a save of a new task writes them.
fn items_of(r: &TaskRecord) -> Vec<Item> {
    let mut items = vec![task_item(r).unwrap()];
    items.extend(r.files.iter().map(|(name, f)| file_item(&r.task_id, name, f).unwrap()));
    items.extend(r.callbacks.iter().map(|(id, c)| callback_item(&r.task_id, id, c).unwrap()));
    items
}

fn sort_key(item: &Item) -> &str {
    match &item[SORT_KEY] {
        V::S(sk) => sk,
        other => panic!("sort key {other:?}"),
    }
}

#[test]
fn a_record_is_stored_as_a_task_item_a_file_item_each_and_a_callback_item_each() {
    let r = record();
    let items = items_of(&r);
    let keys: Vec<&str> = items.iter().map(sort_key).collect();
    assert_eq!(keys, ["task", "file#bass", "file#drums", "file#vocal", "callback#complete-ab"]);
    for item in &items {
        assert_eq!(item[PARTITION_KEY], s("t1"));
    }

    let task = &items[0];
    let expected: Item = serde_dynamo::to_item(stored_task()).unwrap();
    for (attribute, value) in expected.iter() {
        assert_eq!(&task[attribute.as_str()], value, "{attribute}");
    }
    assert_eq!(task["bodies"], V::Ss(vec!["complete-ab".into()]), "a string set of committed bodies");
    assert_eq!(task["queued"], V::Ss(vec!["bass".into(), "drums".into()]), "a string set of sent files");
    assert_eq!(task.len(), expected.len() + 3, "sk, bodies and queued besides the record's own");

    let vocal = &items[3];
    assert_eq!((&vocal["status"], &vocal["stage"], &vocal["rev"]), (&s("stored"), &s("first"), &V::N("3".into())));
    assert_eq!(vocal["stored_at"], s("2026-11-23T15:00:05.999Z"));
    assert!(!vocal.contains_key("files") && !vocal.contains_key("claim"), "a file item is the file only");
    let callback = &items[4];
    assert_eq!(
        (&callback["body_key"], &callback["deliveries"]),
        (&s("tasks/t1/callbacks/complete-ab.json"), &V::N("2".into()))
    );
}

#[test]
fn the_items_assemble_into_the_same_record() {
    let r = record();
    assert_eq!(assemble(items_of(&r)).unwrap(), Some(r.clone()));
    let mut reversed = items_of(&r);
    reversed.reverse();
    assert_eq!(assemble(reversed).unwrap(), Some(r));
}

#[test]
fn only_the_task_item_commits_callbacks_and_the_queued_set_says_which_files_were_sent() {
    let r = record();
    let mut items = items_of(&r);
    // A callback an attempt put but never committed, and an item of a later version of stemvault.
    let late =
        CallbackEntry { body_key: "tasks/t1/callbacks/complete-cd.json".into(), ..r.callbacks["complete-ab"].clone() };
    items.push(callback_item("t1", "complete-cd", &late).unwrap());
    let mut future = Item::from(std::collections::HashMap::<String, V>::new());
    future.insert(PARTITION_KEY.into(), s("t1"));
    future.insert(SORT_KEY.into(), s("event#1"));
    items.push(future);
    // A file item as ingest wrote it (enqueuing), whose message was sent since.
    let drums = FileEntry { status: FileStatus::Enqueuing, claim: Some("req-1".into()), ..r.files["drums"].clone() };
    items.retain(|i| sort_key(i) != "file#drums");
    items.push(file_item("t1", "drums", &drums).unwrap());
    let queued = V::Ss(vec!["bass".into(), "drums".into()]);
    items[0].insert("queued".into(), queued);

    let read = assemble(items).unwrap().unwrap();
    assert_eq!(read.callbacks.keys().collect::<Vec<_>>(), ["complete-ab"]);
    assert_eq!(read.files["drums"].status, FileStatus::Queued);
    assert_eq!(read.files["drums"].claim.as_deref(), Some("req-1"));
    assert_eq!(read.files["vocal"].status, FileStatus::Stored, "a name in the set does not undo a transition");
}

/// A task item written while a file is being downloaded (a later callback, a sweep, a poll)
/// keeps the file's name in the set: released for a retry, it reads as queued (its message
/// comes back), not pending (which would send it a second time).
#[test]
fn a_file_being_downloaded_keeps_its_name_in_the_queued_set() {
    let mut r = record();
    let downloading =
        FileEntry { status: FileStatus::Downloading, claim: Some("worker-1".into()), ..r.files["drums"].clone() };
    r.files.insert("drums".into(), downloading.clone());
    let mut items = items_of(&r);
    let Some(V::Ss(names)) = items[0].get("queued") else { panic!("a queued set: {:?}", items[0].get("queued")) };
    assert!(names.contains(&"drums".to_owned()), "{names:?}");

    let released = FileEntry { status: FileStatus::Pending, claim: None, ..downloading };
    items.retain(|i| sort_key(i) != "file#drums");
    items.push(file_item("t1", "drums", &released).unwrap());
    assert_eq!(assemble(items).unwrap().unwrap().files["drums"].status, FileStatus::Queued);
}

/// A file sent, then failed, then reopened by a new URL whose attempt wrote the file item
/// (enqueuing, the next generation) but not the task item: its name still in the set is of
/// the old URL's message, so it reads as enqueuing, for a retry or the sweeper to send.
#[test]
fn a_reopened_file_whose_task_item_was_not_written_is_not_read_as_queued() {
    let r = record();
    let mut items = items_of(&r);
    let reopened = FileEntry {
        status: FileStatus::Enqueuing,
        claim: Some("req-2".into()),
        generation: Some(r.generation + 1),
        ..r.files["drums"].clone()
    };
    items.retain(|i| sort_key(i) != "file#drums");
    items.push(file_item("t1", "drums", &reopened).unwrap());
    items[0].insert("queued".into(), V::Ss(vec!["drums".into()]));
    let read = assemble(items.clone()).unwrap().unwrap();
    assert_eq!(read.files["drums"].status, FileStatus::Enqueuing);

    // Once the task item reaches that generation, the set speaks for the file again.
    items[0].insert("generation".into(), V::N((r.generation + 1).to_string()));
    let read = assemble(items).unwrap().unwrap();
    assert_eq!(read.files["drums"].status, FileStatus::Queued);
}

#[test]
fn files_without_a_task_item_are_no_record_and_a_malformed_item_is_an_error() {
    let r = record();
    let files: Vec<Item> = items_of(&r).into_iter().filter(|i| sort_key(i).starts_with(FILE_SK_PREFIX)).collect();
    assert_eq!(assemble(files).unwrap(), None);
    assert_eq!(assemble(Vec::new()).unwrap(), None);

    let mut items = items_of(&r);
    items[1].insert("status".into(), s("lost"));
    assert!(matches!(assemble(items), Err(StoreError::Malformed(m)) if m.contains("file item bass")));
    let mut items = items_of(&r);
    items[0].remove(SORT_KEY);
    assert!(matches!(assemble(items), Err(StoreError::Malformed(_))));
}

/// A count past 2^53 (digits slipped in a hand edit) or a fence time past 9999 (written in
/// micro- or nanoseconds) makes the record malformed, not a `+ 1` that wraps to 0 or a mark at
/// the end of time; the largest values no count reaches still read.
#[test]
fn a_count_or_fence_time_no_record_reaches_is_malformed() {
    let r = record();
    let edited = |attribute: &str, item: usize, value: &str| {
        let mut items = items_of(&r);
        items[item].insert(attribute.into(), V::N(value.into()));
        assemble(items)
    };
    let past = (MAX_COUNT + 1).to_string();
    for (attribute, item, says) in [
        ("version", 0, "version"),
        ("generation", 0, "generation"),
        ("deliveries", 0, "deliveries"),
        ("adding", 0, "adding"),
        ("rev", 1, "file bass's rev"),
        ("generation", 1, "file bass's generation"),
        ("deliveries", 4, "callback complete-ab's deliveries"),
    ] {
        let read = edited(attribute, item, &past);
        assert!(matches!(&read, Err(StoreError::Malformed(m)) if m.starts_with(says)), "{attribute}: {read:?}");
        assert!(edited(attribute, item, &MAX_COUNT.to_string()).is_ok(), "{attribute} at 2^53");
    }
    let nanoseconds = edited("adding_at", 0, "1800000000000000000");
    assert!(matches!(&nanoseconds, Err(StoreError::Malformed(m)) if m.starts_with("adding_at")), "{nanoseconds:?}");
    assert!(edited("adding_at", 0, &MAX_UNIX_MS.to_string()).is_ok());
    // A lease written in milliseconds (it would hold the file until the year 59,000).
    let milliseconds = edited("lease_until", 1, "1800000000000");
    let says = "file bass's lease_until";
    assert!(matches!(&milliseconds, Err(StoreError::Malformed(m)) if m.starts_with(says)), "{milliseconds:?}");
    assert!(edited("lease_until", 1, &(MAX_UNIX_MS / 1000).to_string()).is_ok());
}

#[test]
fn a_file_item_reads_alone() {
    let r = record();
    let item = file_item("t1", "vocal", &r.files["vocal"]).unwrap();
    assert_eq!(read_file_item(item).unwrap(), ("vocal".to_owned(), r.files["vocal"].clone()));
    assert!(read_file_item(task_item(&r).unwrap()).is_err());
    // Within the bounds a record's files are read in (a claim's answer is read so).
    let mut edited = file_item("t1", "vocal", &r.files["vocal"]).unwrap();
    edited.insert("lease_until".into(), V::N("1800000000000".into()));
    let read = read_file_item(edited);
    assert!(matches!(&read, Err(StoreError::Malformed(m)) if m.starts_with("file vocal's lease_until")), "{read:?}");
}

/// A file whose key (or newer URL's key) no file of its task can have, another task's object
/// or its own manifest, reads as malformed, alone or with its task: the downloader would
/// overwrite it, its role writing anywhere under `tasks/`.
#[test]
fn a_file_key_outside_its_task_is_malformed() {
    let r = record();
    let with = |attribute: &str, key: &str| {
        let mut item = file_item("t1", "vocal", &r.files["vocal"]).unwrap();
        item.insert(attribute.into(), V::S(key.into()));
        item
    };
    for key in ["tasks/t2/vocal.mp3", "tasks/t1/manifest.json", "tasks/t1/", "vocal.mp3", "tasks/t1/callbacks/x"] {
        for attribute in ["key", "next_key"] {
            let says = format!("file vocal's {attribute} ");
            let alone = read_file_item(with(attribute, key));
            assert!(matches!(&alone, Err(StoreError::Malformed(m)) if m.starts_with(&says)), "{key}: {alone:?}");
            let mut items = items_of(&r);
            let at = items.iter().position(|i| i[SORT_KEY] == V::S(file_sk("vocal"))).unwrap();
            items[at] = with(attribute, key);
            assert!(matches!(assemble(items), Err(StoreError::Malformed(_))), "{key} as {attribute}");
        }
    }
    assert!(read_file_item(with("next_key", "tasks/t1/vocal-2.mp3")).is_ok());
    // Without the task it belongs to, no key can be checked.
    let mut orphan = with("key", "tasks/t1/vocal.mp3");
    orphan.remove(PARTITION_KEY);
    let read = read_file_item(orphan);
    assert!(matches!(&read, Err(StoreError::Malformed(m)) if m.contains("without a string task_id")), "{read:?}");
    // Nor under a task id no callback could name (edited by hand).
    let mut misnamed = with("key", "tasks/t1/vocal.mp3");
    misnamed.insert(PARTITION_KEY.into(), V::S("t1/../t2".into()));
    let read = read_file_item(misnamed);
    assert!(matches!(&read, Err(StoreError::Malformed(m)) if m.starts_with("task id \"t1/../t2\"")), "{read:?}");
}

fn rev_of(put: &ItemPut) -> &V {
    &put.item["rev"]
}

#[test]
fn a_new_task_is_saved_as_every_item_its_task_item_last() {
    let r = record();
    let plan = plan_save(None, &r).unwrap();
    assert_eq!(plan.files.len(), 3);
    assert!(
        plan.files.iter().all(|p| matches!(&p.condition, PutCondition::Unclaimed { .. })),
        "only an uncommitted attempt wrote them"
    );
    assert_eq!(rev_of(&plan.files[2]), &V::N("4".into()), "each file at its revision + 1");
    assert_eq!(plan.callbacks.len(), 1);
    assert_eq!(plan.callbacks[0].condition, PutCondition::Absent);
    let Some(TaskWrite::Put(task)) = plan.task else { panic!("the task item is put: {:?}", plan.task) };
    assert_eq!((task.condition, sort_key(&task.item)), (PutCondition::Absent, "task"));
    assert!(plan.redelivered.is_empty());
}

#[test]
fn a_save_writes_only_what_changed_each_conditional_on_what_was_read() {
    let before = record();
    let mut after = before.clone();
    after.version += 1;
    after.deliveries += 1;
    after.callbacks.get_mut("complete-ab").unwrap().deliveries += 1;
    after.files.get_mut("bass").unwrap().url = "https://cdn.example/b2.mp3".into();
    after.files.insert(
        "piano".into(),
        FileEntry::pending("https://cdn.example/p.mp3", "tasks/t1/piano.mp3".into(), suno_callbacks::Stage::Complete),
    );
    let plan = plan_save(Some(&before), &after).unwrap();
    let files: Vec<(&str, PutCondition, &V)> =
        plan.files.iter().map(|p| (sort_key(&p.item), p.condition.clone(), rev_of(p))).collect();
    assert_eq!(
        files,
        [
            ("file#bass", PutCondition::Rev(1), &V::N("2".into())),
            ("file#piano", PutCondition::Absent, &V::N("1".into()))
        ]
    );
    assert!(plan.callbacks.is_empty());
    assert_eq!(plan.redelivered, ["complete-ab"]);
    let Some(TaskWrite::Put(task)) = plan.task else { panic!("the task item is put: {:?}", plan.task) };
    assert_eq!(task.condition, PutCondition::Version { version: 4, adding: None });
    assert_eq!(task.item["version"], V::N("5".into()));
    assert_eq!(task.item["deliveries"], V::N("4".into()));
}

#[test]
fn a_save_that_changes_only_files_leaves_the_task_item_alone() {
    let mut before = record();
    before.files.get_mut("bass").unwrap().status = FileStatus::Pending;
    let mut after = before.clone();
    after.version += 1;
    let bass = after.files.get_mut("bass").unwrap();
    bass.status = FileStatus::Enqueuing;
    bass.claim = Some("sweeper-1".into());
    let plan = plan_save(Some(&before), &after).unwrap();
    assert_eq!(plan.files.len(), 1);
    assert_eq!(plan.task, None);

    // The queued set is the task item's: sending a file changes it.
    let mut sent = before.clone();
    sent.files.get_mut("bass").unwrap().status = FileStatus::Queued;
    sent.version += 1;
    let plan = plan_save(Some(&before), &sent).unwrap();
    let Some(TaskWrite::Put(task)) = plan.task else { panic!("the task item is put: {:?}", plan.task) };
    assert_eq!(task.item["queued"], V::Ss(vec!["bass".into(), "drums".into()]), "drums: being downloaded");
}

#[test]
fn a_duplicate_that_changes_nothing_else_is_only_counted() {
    let before = record();
    let mut after = before.clone();
    after.version += 1;
    after.deliveries += 1;
    after.last_received_at = after.last_received_at.plus(std::time::Duration::from_secs(3));
    after.callbacks.get_mut("complete-ab").unwrap().deliveries += 1;
    let plan = plan_save(Some(&before), &after).unwrap();
    let at = task_item(&after).unwrap()["last_received_at"].clone();
    let watched = before.reconcile.is_some();
    assert_eq!(plan.task, Some(TaskWrite::CountDelivery { last_received_at: at, watched }));
    assert_eq!(plan.redelivered, ["complete-ab"]);
    assert!(plan.files.is_empty() && plan.callbacks.is_empty());

    // Anything more is a put conditional on the version read: another attribute, a file
    // item, or not exactly one delivery.
    let mut moved = after.clone();
    moved.stage = suno_callbacks::Stage::Error;
    let mut claimed = after.clone();
    claimed.files.get_mut("bass").unwrap().claim = Some("req-2".into());
    let mut twice = after.clone();
    twice.deliveries += 1;
    for other in [moved, claimed, twice] {
        let plan = plan_save(Some(&before), &other).unwrap();
        assert!(matches!(
            plan.task,
            Some(TaskWrite::Put(ItemPut { condition: PutCondition::Version { version: 4, adding: None, .. }, .. }))
        ));
    }

    // A settled record without a manifest from before `open` covered that: a duplicate's
    // merge marks it, so it is put, not only counted.
    let mut old = before.clone();
    (old.vault, old.manifest_key, old.open) = (crate::VaultState::Complete, None, None);
    let mut marked = old.clone();
    (marked.version, marked.deliveries, marked.last_received_at) =
        (after.version, after.deliveries, after.last_received_at);
    marked.callbacks = after.callbacks.clone();
    marked.sync_open_marker();
    assert_eq!(marked.open.as_deref(), Some(crate::OPEN_MARKER));
    let plan = plan_save(Some(&old), &marked).unwrap();
    assert!(matches!(
        plan.task,
        Some(TaskWrite::Put(ItemPut { condition: PutCondition::Version { version: 4, adding: None, .. }, .. }))
    ));
}

#[test]
fn the_largest_item_and_the_whole_record_are_measured() {
    let mut r = record();
    let small = item_bytes(&r);
    assert!(small.largest < 2_000, "{small:?}");
    assert!(small.total > small.largest, "the task item and its file's: {small:?}");
    let long = "x".repeat(10_000);
    r.files.get_mut("vocal").unwrap().url = format!("https://cdn.example/{long}");
    assert!(item_bytes(&r).largest > 10_000, "a file item counts alone");
    let mut many = record();
    for i in 0..100 {
        let f = FileEntry::pending("https://a/x.mp3", format!("tasks/t1/{i}.mp3"), suno_callbacks::Stage::Complete);
        many.files.insert(format!("f{i}"), f);
    }
    let bytes = item_bytes(&many);
    assert!(bytes.largest < 4_000, "many small files do not add up in one item: {bytes:?}");
    let one_file = serde_json::to_vec(&many.files["f0"]).unwrap().len();
    assert!(bytes.total > 100 * one_file, "but they do in the record: {bytes:?}");
}

/// A duplicate as ingest merges it (ingest_callback, then the reconciler's schedule) is
/// only counted; one whose read shows a poll's "not found" is put, clearing it.
#[test]
fn a_merged_duplicate_is_counted_unless_its_merge_changes_the_task() {
    use std::time::Duration;

    use suno_callbacks::{CallbackEvent, Details, Family, FileRef, Stage, TaskId};

    use crate::ingest::{BodyInfo, Claimant, ingest_callback};
    use crate::reconcile::after_merge;
    use crate::{FileStatus, Timestamp};

    let event = CallbackEvent {
        task_id: TaskId::parse("t1").unwrap(),
        family: Family::VocalSeparation,
        stage: Stage::Final,
        code: 200,
        message: "ok".into(),
        files: vec![FileRef { name: "vocal".into(), url: "https://h/v.mp3".into() }],
        streams: vec![],
        details: Details::None,
    };
    let body = BodyInfo { sha256_hex: "ab".repeat(32), archive_key: "k".into(), bytes: 2, arrived_at: None };
    let claimant = |id: &str| Claimant { id: id.into(), lease: Duration::from_secs(15) };
    let merge = |read: &TaskRecord, now: Timestamp| {
        let mut m = ingest_callback(Some(read), &event, &body, &claimant("req-2"), now);
        after_merge(&mut m.record, Some(read.stage), now, Duration::from_secs(600));
        m.record
    };
    let t0 = Timestamp::from_unix_ms(1_800_000_000_000);
    let mut stored = ingest_callback(None, &event, &body, &claimant("req-1"), t0).record;
    after_merge(&mut stored, None, t0, Duration::from_secs(600));
    stored.files.get_mut("vocal").unwrap().status = FileStatus::Queued;

    let t1 = t0.plus(Duration::from_secs(2));
    let plan = plan_save(Some(&stored), &merge(&stored, t1)).unwrap();
    assert!(matches!(plan.task, Some(TaskWrite::CountDelivery { watched: false, .. })), "{:?}", plan.task);
    assert_eq!(plan.redelivered.len(), 1);

    let mut not_found = stored.clone();
    not_found.not_found_since = Some(t0);
    let plan = plan_save(Some(&not_found), &merge(&not_found, t1)).unwrap();
    assert!(matches!(plan.task, Some(TaskWrite::Put(_))), "{:?}", plan.task);
}

/// `record()` with its files stored and its manifest recorded: out of the open-tasks index.
fn settled() -> TaskRecord {
    let mut settled = record();
    for file in settled.files.values_mut() {
        file.status = FileStatus::Stored;
    }
    settled.vault = crate::VaultState::Complete;
    settled.manifest_key = Some("tasks/t1/manifest.json".into());
    settled.open = None; // as the settle write leaves it
    settled.sync_open_marker();
    assert_eq!(settled.open, None);
    settled
}

/// A save that writes files of a settled task, or adds or reopens files of any task item,
/// marks the task item open and fenced first, at the version read; no other save does.
#[test]
fn only_a_save_adding_files_or_reopening_a_settled_task_marks_it_first() {
    let settled = settled();

    let mut reopened = settled.clone();
    let mut file = settled.files["vocal"].clone();
    file.status = FileStatus::Pending;
    file.generation = Some(settled.generation + 1);
    reopened.files.insert("new".into(), file);
    reopened.generation += 1;
    reopened.vault = crate::VaultState::Pending;
    reopened.manifest_key = None;
    reopened.sync_open_marker();
    reopened.version += 1;
    reopened.last_received_at = crate::Timestamp::from_unix_ms(1_900_000_000_000);
    let plan = plan_save(Some(&settled), &reopened).unwrap();
    let at = task_item(&reopened).unwrap()["last_received_at"].clone();
    let mark = MarkOpen {
        version: settled.version,
        read: None,
        last_received_at: at,
        generation: reopened.generation,
        at: 1_900_000_000_000,
    };
    let fence = mark.fence();
    assert_eq!(plan.mark_open, Some(mark));
    assert_eq!(plan.files.len(), 1);
    // Its own put takes the fence away, requiring it.
    let Some(TaskWrite::Put(put)) = plan.task else { panic!("the task item is put") };
    let fenced = PutCondition::Version { version: settled.version, adding: Some(fence) };
    let kept = (put.item.contains_key("adding"), put.item.contains_key("adding_at"));
    assert_eq!((put.condition, kept), (fenced, (false, false)));

    // Marked by an attempt that stopped: marked again, over the fence read, at a time of its
    // own (past the one read, however the clocks stand).
    let mut marked = settled.clone();
    marked.open = reopened.open.clone();
    (marked.adding, marked.adding_at) = (Some(reopened.generation), Some(1_900_000_000_005));
    let again = plan_save(Some(&marked), &reopened).unwrap().mark_open.expect("marked again");
    assert_eq!((again.read, again.at), (marked.add_fence(), 1_900_000_000_006));
    // Past the time read too (a mark since taken away with its fence left it): a request
    // whose clock is behind never repeats that mark's fence.
    let mut closed = settled.clone();
    closed.last_received_at = crate::Timestamp::from_unix_ms(1_900_000_000_010);
    let behind = plan_save(Some(&closed), &reopened).unwrap().mark_open.expect("marked");
    assert_eq!((behind.read, behind.at), (None, 1_900_000_000_011));
    let set = crate::Timestamp::from_unix_ms(1_900_000_000_011).rfc3339();
    assert_eq!(behind.last_received_at, V::S(set), "the mark sets the time to its own, which a close leaves");
    // A time read far ahead of any clock (a hand edit, a digit too many: the year 2529) is
    // not carried on: the mark is at its own time, and brings `last_received_at` back to it.
    let mut edited = marked.clone();
    (edited.adding_at, edited.last_received_at) =
        (Some(17_650_000_000_000), crate::Timestamp::from_unix_ms(17_650_000_000_000));
    let back = plan_save(Some(&edited), &reopened).unwrap().mark_open.expect("marked");
    assert_eq!((back.read, back.at), (edited.add_fence(), 1_900_000_000_000));

    // Not settled (in the index already): files added all the same, at a new generation.
    let mut pending = settled.clone();
    pending.vault = crate::VaultState::Pending;
    pending.sync_open_marker();
    let plan = plan_save(Some(&pending), &reopened).unwrap();
    assert_eq!(plan.mark_open.map(|mark| mark.fence()), Some(fence));
    // Files written at the generation read (a claim, say) are no addition.
    let mut claimed = pending.clone();
    claimed.files.get_mut("vocal").unwrap().status = FileStatus::Pending;
    claimed.version += 1;
    let plan = plan_save(Some(&pending), &claimed).unwrap();
    assert_eq!((plan.files.len(), plan.mark_open), (1, None));

    // A registered task's first result is marked too: a poll and a callback may both bring
    // it, and the other's files may be settled while this one's items are written.
    let mut registered = pending.clone();
    (registered.stage, registered.open) = (suno_callbacks::Stage::Submitted, None); // as registered
    let first = plan_save(Some(&registered), &reopened).unwrap().mark_open.expect("marked");
    assert_eq!(first.version, registered.version);
    // New (no task item to mark: the put requires none), or no file item written.
    assert_eq!(plan_save(None, &reopened).unwrap().mark_open, None);
    // A file item written that leaves the task settled (the task stays out of the index).
    let mut still_settled = settled.clone();
    still_settled.files.get_mut("vocal").unwrap().attempts += 1;
    still_settled.version += 1;
    let plan = plan_save(Some(&settled), &still_settled).unwrap();
    assert_eq!((plan.files.len(), plan.mark_open), (1, None));
    let mut manifest_due = settled.clone();
    manifest_due.manifest_key = None;
    manifest_due.sync_open_marker();
    manifest_due.version += 1;
    assert_eq!(plan_save(Some(&settled), &manifest_due).unwrap().mark_open, None);
}

/// A task item put requires the version and the fence as read: none, so that a mark made
/// since (which leaves the version) refuses it. A task read marked keeps its mark and its
/// fence (the request that marked it may be writing its file items) until a put commits the
/// files the fence is for.
#[test]
fn a_put_requires_the_fence_as_read_and_keeps_it_until_its_files_are_committed() {
    let settled = settled();
    // Another body of the settled stage: a callback item and the task item, no file.
    let another_body = |read: &TaskRecord| {
        let mut after = read.clone();
        let body = read.callbacks["complete-ab"].clone();
        after.callbacks.insert("complete-cd".into(), body);
        (after.version, after.deliveries) = (read.version + 1, read.deliveries + 1);
        after.last_received_at = crate::Timestamp::from_unix_ms(1_900_000_000_000);
        after.sync_open_marker();
        after
    };
    let put = |before: &TaskRecord, after: &TaskRecord| match plan_save(Some(before), after).unwrap().task {
        Some(TaskWrite::Put(put)) => {
            let adding = match put.item.get("adding") {
                Some(V::N(n)) => n.parse::<u64>().ok(),
                _ => None,
            };
            (put.item.contains_key("open"), adding, put.condition)
        }
        other => panic!("the task item is put: {other:?}"),
    };
    let unfenced = PutCondition::Version { version: settled.version, adding: None };
    assert_eq!(put(&settled, &another_body(&settled)), (false, None, unfenced.clone()));

    // Marked by a request adding files at generation + 1, which may be writing them now.
    let mut marked = settled.clone();
    marked.open = Some(crate::OPEN_MARKER.into());
    (marked.adding, marked.adding_at) = (Some(settled.generation + 1), Some(1_900_000_000_000));
    let fenced = PutCondition::Version { version: settled.version, adding: marked.add_fence() };
    assert_eq!(put(&marked, &another_body(&marked)), (true, marked.adding, fenced.clone()), "mark and fence kept");
    // Kept by a put moving to that generation without those files (a registration's).
    let mut completed = another_body(&marked);
    (completed.generation, completed.manifest_key) = (settled.generation + 1, None);
    completed.sync_open_marker();
    assert_eq!(put(&marked, &completed), (true, marked.adding, fenced.clone()), "no file of the fence yet");
    // Taken away by a put committing them (the request's own retry, or any that adopts them).
    let mut committed = completed.clone();
    let mut file = settled.files["vocal"].clone();
    (file.status, file.generation) = (FileStatus::Pending, marked.adding);
    committed.files.insert("new".into(), file.clone());
    let mut read = marked.clone();
    read.files.insert("new".into(), file);
    assert_eq!(put(&read, &committed), (true, None, fenced), "fence taken away");

    // A time left without its fence (a hand edit, an older build) is not carried on.
    let mut stray = settled.clone();
    stray.adding_at = Some(1_900_000_000_000);
    match plan_save(Some(&stray), &another_body(&stray)).unwrap().task {
        Some(TaskWrite::Put(put)) => assert!(!put.item.contains_key("adding_at"), "{:?}", put.item),
        other => panic!("the task item is put: {other:?}"),
    }

    // Writing `open` (not settled) over a read without a fence, still none required.
    let mut pending = another_body(&settled);
    pending.vault = crate::VaultState::Pending;
    pending.sync_open_marker();
    assert_eq!(put(&settled, &pending), (true, None, unfenced));
}
