//! Parked callbacks replayed by a run (`crate::replay`).

use super::*;

/// A parked callback is recorded, archived and queued by the next run and leaves `parked/`;
/// one the table cannot take yet stays for the run after; a body that is no callback stays
/// for an operator.
#[tokio::test]
async fn parked_callbacks_are_replayed_and_deleted_once_recorded() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let parked = format!("parked/{TASK}/final-{}.json", "ab".repeat(32));
    ports.park(&parked, CALLBACK);
    ports.park("parked/by-hand.json", b"not a callback");
    let accept = &settings().accept;
    let stop_at = ports.table.now().plus(Duration::from_secs(60));

    ports.table.set_save_error(Some(StoreError::Unavailable("still down".into())));
    let replayed = replay_parked(&ports, accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 2, callbacks_refused: 0 });
    let counted = Measure::ParkedCallbacks { still_parked: 2, refused: 0 };
    assert_eq!(*ports.measures.lock().unwrap(), [counted], "one count per listing run");
    assert!(ports.table.record(TASK).is_none());

    ports.table.set_save_error(None);
    let replayed = replay_parked(&ports, accept, &HeldTasks::default(), "run-2", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 1, callbacks_still_parked: 1, callbacks_refused: 0 });
    let record = ports.record();
    assert_eq!(record.stage, Stage::Final);
    assert!(!record.files.is_empty() && record.files.values().all(|f| f.status == FileStatus::Queued));
    assert_eq!(ports.table.messages().len(), record.files.len());
    let bodies = ports.bodies.lock().unwrap().keys().cloned().collect::<Vec<_>>();
    assert!(!bodies.contains(&parked), "deleted once recorded: {bodies:?}");
    assert!(bodies.iter().any(|k| k.starts_with(&format!("tasks/{TASK}/callbacks/"))), "archived: {bodies:?}");
    assert!(bodies.contains(&"parked/by-hand.json".to_owned()), "{bodies:?}");
}

/// A task's parked `first` and `complete` are replayed in that order, not their keys'
/// (`complete-…` sorts first): each publishes its own Task Stage Changed.
#[tokio::test]
async fn a_tasks_parked_stages_are_replayed_in_stage_order() {
    use crate::replay::{HeldTasks, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed.callbacks_replayed, 2, "{replayed:?}");
    let published = ports.events.lock().unwrap().clone();
    let stages: Vec<&str> =
        published.iter().map(|e| e.detail.event_id.as_str()).filter(|id| id.contains(".stage.")).collect();
    assert_eq!(stages, [format!("{MUSIC}.stage.first"), format!("{MUSIC}.stage.complete")]);
}

/// A replayed callback is dated when it was parked, not when it was replayed: the task's
/// first receipt and the callback's; `last_received_at` (the sweeper's grace) is the replay's.
#[tokio::test]
async fn a_replayed_callback_is_dated_when_it_was_parked() {
    use crate::replay::{HeldTasks, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let parked = format!("parked/{TASK}/final-{}.json", "ef".repeat(32));
    let parked_at = ports.table.now();
    ports.park(&parked, CALLBACK);
    ports.parked_at.lock().unwrap().insert(parked, parked_at);
    ports.table.advance(Duration::from_secs(3600));
    let replayed_at = ports.table.now();
    let stop_at = replayed_at.plus(Duration::from_secs(60));
    replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    let record = ports.record();
    assert_eq!(record.first_received_at, parked_at);
    assert_eq!(record.callbacks.values().map(|c| c.received_at).collect::<Vec<_>>(), vec![parked_at]);
    assert_eq!(record.last_received_at, replayed_at);
}

/// While the table (or the queue) still takes nothing, a run stops replaying after a few
/// tasks failing in a row instead of reading every parked body; the next run starts again.
#[tokio::test]
async fn a_run_stops_replaying_while_the_table_takes_nothing() {
    use crate::replay::{HeldTasks, MAX_FAILURES_IN_A_ROW, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    // Ten keys of ten tasks (the keys' task; every body is the same callback).
    for i in 0..10 {
        ports.park(&format!("parked/task{i}/final-{i:064}.json"), CALLBACK);
    }
    ports.table.set_save_error(Some(StoreError::Unavailable("down".into())));
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 10, callbacks_refused: 0 });
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), MAX_FAILURES_IN_A_ROW);

    // Nor while the queue takes nothing (the record is written, its messages are not).
    ports.table.set_save_error(None);
    ports.table.set_enqueue_failing(true);
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-queue", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 10, callbacks_refused: 0 });
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), 2 * MAX_FAILURES_IN_A_ROW);
    ports.table.set_enqueue_failing(false);

    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-2", 50, stop_at).await.unwrap();
    assert_eq!(
        replayed,
        Replayed { callbacks_replayed: 10, callbacks_still_parked: 0, callbacks_refused: 0 },
        "the same body ten times"
    );
    assert_eq!(ports.table.messages().len(), ports.record().files.len(), "queued once: the others are duplicates");
}

/// As many parked bodies as stop a run (`parked/<prefix>-<i>/...`), each also in the set
/// `marked` picks, then a replayable one after them in key order (the key's task: the body is
/// TASK's callback); its key.
fn failing_then_replayable(
    ports: &MemoryPorts,
    prefix: &str,
    marked: impl Fn(&MemoryPorts) -> &Mutex<std::collections::HashSet<String>>,
) -> String {
    for i in 0..crate::replay::MAX_FAILURES_IN_A_ROW {
        let key = format!("parked/{prefix}-{i}/final-{i:064}.json");
        ports.park(&key, CALLBACK);
        marked(ports).lock().unwrap().insert(key);
    }
    let replayable = format!("parked/zzz-replayable/final-{}.json", "ab".repeat(32));
    ports.park(&replayable, CALLBACK);
    replayable
}

/// Tasks failing every run for reasons of their own (their bodies unreadable), as many as
/// stop a run, first in key order: a warm instance's next run replays the others first.
#[tokio::test]
async fn tasks_failing_every_run_go_after_the_others_in_the_next() {
    use crate::replay::{HeldTasks, MAX_FAILURES_IN_A_ROW, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let replayable = failing_then_replayable(&ports, "aaa-failing", |ports| &ports.unreadable);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let held = HeldTasks::default();

    let first = replay_parked(&ports, &settings().accept, &held, "run-1", 50, stop_at).await.unwrap();
    let all_parked = MAX_FAILURES_IN_A_ROW + 1;
    assert_eq!(first, Replayed { callbacks_replayed: 0, callbacks_still_parked: all_parked, callbacks_refused: 0 });
    let next = replay_parked(&ports, &settings().accept, &held, "run-2", 50, stop_at).await.unwrap();
    let still = MAX_FAILURES_IN_A_ROW;
    assert_eq!(next, Replayed { callbacks_replayed: 1, callbacks_still_parked: still, callbacks_refused: 0 });
    assert!(!ports.bodies.lock().unwrap().contains_key(&replayable));

    // Their bodies removed elsewhere (by hand, another instance): forgotten, so a body parked
    // for one of them again is not put last.
    ports.bodies.lock().unwrap().clear();
    replay_parked(&ports, &settings().accept, &held, "run-3", 50, stop_at).await.unwrap();
    let again = format!("parked/aaa-failing-0/final-{}.json", "cd".repeat(32));
    ports.park(&again, CALLBACK);
    ports.park(&replayable, CALLBACK);
    replay_parked(&ports, &settings().accept, &held, "run-4", 1, stop_at).await.unwrap();
    let bodies = ports.bodies.lock().unwrap();
    assert!(!bodies.contains_key(&again) && bodies.contains_key(&replayable), "in key order again");
}

/// Bodies another run replayed and deleted between this run's listing and its reads (S3
/// answers this role 403 for them, not 404) are gone, not failures: as many as stop a run do
/// not stop it before the body after them.
#[tokio::test]
async fn bodies_another_run_deleted_are_gone_not_failures() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    failing_then_replayable(&ports, "aaa", |ports| &ports.deleted_since_listed);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 1, callbacks_still_parked: 0, callbacks_refused: 0 });
    assert!(!ports.bodies.lock().unwrap().keys().any(|k| k.starts_with("parked/")), "none left");
}

/// A body that cannot be read, when whether it is still listed cannot be told either, is not
/// taken as gone: it waits for the next run, counted as a failure.
#[tokio::test]
async fn a_body_unread_and_unlisted_for_a_failing_listing_waits_for_the_next_run() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let key = format!("parked/aaa-deleted/final-{}.json", "cd".repeat(32));
    ports.park(&key, CALLBACK);
    ports.deleted_since_listed.lock().unwrap().insert(key);
    ports.still_parked_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let replayable = format!("parked/zzz-replayable/final-{}.json", "ab".repeat(32));
    ports.park(&replayable, CALLBACK);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 1, callbacks_still_parked: 1, callbacks_refused: 0 });
}

/// One task whose bodies fail every time (here its parked bodies cannot be read) does not
/// stand in front of the keys after it: its other bodies wait for the next run without
/// counting as failures in a row, and the next task's body is replayed.
#[tokio::test]
async fn a_task_failing_every_time_does_not_hold_back_the_others() {
    use crate::replay::{HeldTasks, MAX_FAILURES_IN_A_ROW, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    for i in 0..MAX_FAILURES_IN_A_ROW + 2 {
        let key = format!("parked/aaa-failing/final-{i:064}.json");
        ports.park(&key, CALLBACK);
        ports.unreadable.lock().unwrap().insert(key);
    }
    let replayable = format!("parked/{TASK}/final-{}.json", "ab".repeat(32));
    ports.park(&replayable, CALLBACK);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));

    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    let still = MAX_FAILURES_IN_A_ROW + 2;
    assert_eq!(replayed, Replayed { callbacks_replayed: 1, callbacks_still_parked: still, callbacks_refused: 0 });
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), 2, "one of the failing task's, then ours");
    assert!(!ports.bodies.lock().unwrap().contains_key(&replayable), "replayed and deleted");
    assert_eq!(ports.record().stage, Stage::Final);
}

/// A replay whose read of the parked body never answers is given up after REPLAY_BUDGET: the
/// run goes on (and ends within its reserve) instead of running into its Lambda timeout.
#[tokio::test(start_paused = true)]
async fn a_replay_that_hangs_is_given_up_after_its_budget() {
    use crate::replay::{HeldTasks, REPLAY_BUDGET, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let parked = format!("parked/{TASK}/final-{}.json", "ef".repeat(32));
    ports.park(&parked, CALLBACK);
    ports.parked_reads_hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 1, callbacks_refused: 0 });
    assert!(started.elapsed() <= REPLAY_BUDGET + Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(ports.bodies.lock().unwrap().contains_key(&parked), "left for the next run");
}

/// A parked callback the table refuses for good (here: a record it rejects) is moved to its
/// archive key, out of `parked/`, so it never stands in front of the others; a body that is
/// no callback has no archive key and stays for an operator.
#[tokio::test]
async fn a_parked_callback_refused_for_good_is_moved_to_the_archive() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let parked = format!("parked/{TASK}/final-{}.json", "cd".repeat(32));
    ports.park(&parked, CALLBACK);
    ports.table.set_save_error(Some(StoreError::Rejected("item too large".into())));
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 0, callbacks_refused: 1 });
    let bodies = ports.bodies.lock().unwrap().clone();
    let archive = format!("tasks/{TASK}/callbacks/");
    assert!(!bodies.contains_key(&parked), "{:?}", bodies.keys());
    let archived: Vec<_> = bodies.iter().filter(|(k, _)| k.starts_with(&archive)).collect();
    assert_eq!(archived.len(), 1, "{:?}", bodies.keys());
    assert_eq!(archived[0].1.as_slice(), CALLBACK);
    assert!(ports.table.record(TASK).is_none(), "nothing recorded");
}

/// A callback body of TASK holding more JSON values than a callback is read with now
/// (MAX_JSON_MARKS), as parked before 2026-12-07, and the unparsable key it is kept under.
fn too_many_values() -> (Vec<u8>, String) {
    let values = vec!["0"; suno_callbacks::parse::MAX_JSON_MARKS].join(",");
    let body = format!(r#"{{"code":200,"msg":"ok","data":{{"task_id":"{TASK}","notes":[{values}]}}}}"#).into_bytes();
    let task = TaskId::parse(TASK).unwrap();
    let kept = suno_callbacks::s3_key::unparsable_body_key(&task, &stemvault_vault::accept::body_sha256_hex(&body));
    (body, kept)
}

/// A body parked before 2026-12-07 holding more JSON values than a callback is read with now
/// (MAX_JSON_MARKS) is kept where ingest now keeps such a verified body, its task's
/// `unparsable-<sha256>.json`, and leaves `parked/`, rather than being read again every 15
/// minutes for good; junk put there by hand under no task stays for an operator.
#[tokio::test]
async fn a_parked_body_too_large_to_read_now_is_kept_as_unparsable() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let (body, kept) = too_many_values();
    let parked = format!("parked/{TASK}/final-{}.json", "ad".repeat(32));
    ports.park(&parked, &body);
    ports.park("parked/by-hand.json", &body);
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 1, callbacks_refused: 1 });
    let bodies = ports.bodies.lock().unwrap().clone();
    assert_eq!(bodies.get(&kept), Some(&body), "{:?}", bodies.keys());
    assert!(!bodies.contains_key(&parked) && bodies.contains_key("parked/by-hand.json"), "{:?}", bodies.keys());
    assert!(ports.table.record(TASK).is_none(), "nothing recorded");
}

/// Such a body that cannot be moved either (its archive put refused) stays under `parked/`,
/// left for an operator and not read again by the next runs until HELD_RECHECK; once the
/// bucket takes it, a later run moves it.
#[tokio::test]
async fn a_parked_body_that_can_be_neither_read_nor_moved_is_held() {
    use crate::replay::{HELD_RECHECK, HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let (body, kept) = too_many_values();
    let parked = format!("parked/{TASK}/final-{}.json", "ae".repeat(32));
    ports.park(&parked, &body);
    ports.archive_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let (held, accept) = (HeldTasks::default(), settings().accept);
    let run = || replay_parked(&ports, &accept, &held, "run-1", 50, ports.table.now().plus(Duration::from_secs(60)));
    let still = Replayed { callbacks_replayed: 0, callbacks_still_parked: 1, callbacks_refused: 0 };
    assert_eq!(run().await.unwrap(), still);
    assert!(ports.bodies.lock().unwrap().contains_key(&parked), "left parked");
    let reads = ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(run().await.unwrap(), still);
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), reads, "held: not read again at once");

    ports.archive_fails.store(false, std::sync::atomic::Ordering::SeqCst);
    ports.table.advance(HELD_RECHECK);
    let moved = Replayed { callbacks_replayed: 0, callbacks_still_parked: 0, callbacks_refused: 1 };
    assert_eq!(run().await.unwrap(), moved);
    let bodies = ports.bodies.lock().unwrap().clone();
    assert!(bodies.contains_key(&kept) && !bodies.contains_key(&parked), "{:?}", bodies.keys());
}

/// A parked callback of a task whose record cannot be read stays parked (not moved to the
/// archive as refused for good), and the run after the record was fixed records it.
#[tokio::test]
async fn a_parked_callback_waits_for_an_unreadable_record_to_be_fixed() {
    use crate::replay::{HeldTasks, Replayed, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    let parked = format!("parked/{TASK}/final-{}.json", "ce".repeat(32));
    ports.park(&parked, CALLBACK);
    ports.table.set_save_error(Some(StoreError::Malformed("stage: missing".into())));
    let stop_at = ports.table.now().plus(Duration::from_secs(60));
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-1", 50, stop_at).await.unwrap();
    assert_eq!(replayed, Replayed { callbacks_replayed: 0, callbacks_still_parked: 1, callbacks_refused: 0 });
    assert!(ports.bodies.lock().unwrap().contains_key(&parked), "left parked");

    ports.table.set_save_error(None);
    let replayed =
        replay_parked(&ports, &settings().accept, &HeldTasks::default(), "run-2", 50, stop_at).await.unwrap();
    assert_eq!(replayed.callbacks_replayed, 1, "{replayed:?}");
    assert_eq!(ports.record().stage, Stage::Final);
}

/// Tasks whose record cannot be read are skipped without reading their bodies for
/// `HELD_RECHECK` (the run's replays go to the others, however many held ones sort first),
/// then tried again.
#[tokio::test]
async fn held_tasks_are_skipped_for_a_while_and_do_not_use_up_a_run() {
    use crate::replay::{HELD_RECHECK, HeldTasks, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    for task in ["0-held-1", "0-held-2"] {
        let key = format!("parked/{task}/final-{}.json", "ab".repeat(32));
        ports.park(&key, CALLBACK);
    }
    let held = HeldTasks::default();
    let reads = || ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    ports.table.set_save_error(Some(StoreError::Malformed("stage: missing".into())));
    let stop_at = |ports: &MemoryPorts| ports.table.now().plus(Duration::from_secs(60));
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-1", 10, stop_at(&ports)).await.unwrap();
    assert_eq!((replayed.callbacks_still_parked, reads()), (2, 2));

    // Another task's body parked since; one replay a run: it is that one, the held not read.
    ports.table.set_save_error(None);
    let ours = format!("parked/{TASK}/final-{}.json", "cd".repeat(32));
    ports.park(&ours, CALLBACK);
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-2", 1, stop_at(&ports)).await.unwrap();
    assert_eq!((replayed.callbacks_replayed, replayed.callbacks_still_parked, reads()), (1, 2, 3));
    assert!(!ports.bodies.lock().unwrap().contains_key(&ours));

    // Past the recheck (the records fixed meanwhile), they are replayed.
    ports.table.advance(HELD_RECHECK);
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-3", 10, stop_at(&ports)).await.unwrap();
    assert_eq!((replayed.callbacks_replayed, replayed.callbacks_still_parked), (2, 0));
}

/// A listing that fills its page may have cut a task's bodies short (its `first-` key the first
/// one not listed): that task waits for a run that lists them all, rather than replaying its
/// `complete` alone (which would make its `first` a late callback without its event).
#[tokio::test]
async fn a_task_cut_short_by_a_full_listing_waits_for_the_next_run() {
    use crate::replay::{HeldTasks, LISTED, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    // A task whose bodies cannot be read fills the page but one key.
    for i in 0..LISTED - 1 {
        let key = format!("parked/0-unreadable/final-{i:064}.json");
        ports.park(&key, CALLBACK);
        ports.unreadable.lock().unwrap().insert(key);
    }
    let keys = park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(600));
    let held = HeldTasks::default();
    replay_parked(&ports, &settings().accept, &held, "run-1", 200, stop_at).await.unwrap();
    assert!(ports.table.record(MUSIC).is_none(), "its complete, listed alone, is not replayed");
    assert!(ports.bodies.lock().unwrap().contains_key(&keys[0]));

    // The unreadable bodies gone, the next run lists both and replays them in stage order.
    ports.bodies.lock().unwrap().retain(|k, _| !k.starts_with("parked/0-unreadable/"));
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-2", 200, stop_at).await.unwrap();
    assert_eq!(replayed.callbacks_replayed, 2, "{replayed:?}");
    let stages: Vec<String> = ports.events.lock().unwrap().iter().map(|e| e.detail.event_id.clone()).collect();
    assert!(stages.contains(&format!("{MUSIC}.stage.first")), "{stages:?}");
}

/// `count` bodies that are no callback (put by hand, left for an operator), one a task, listed
/// before any real task's.
fn park_junk_tasks(ports: &MemoryPorts, count: usize) {
    for i in 0..count {
        ports.park(&format!("parked/0-junk-{i:04}/final-x.json"), b"not a callback");
    }
}

/// A page filled by one task's bodies (here junk put by hand under one task id) cannot wait
/// for a listing that holds them all: it is tried whole, and the next run lists on after it.
#[tokio::test]
async fn a_page_of_one_task_s_bodies_is_tried_whole() {
    use crate::replay::{HeldTasks, LISTED, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    for i in 0..LISTED {
        ports.park(&format!("parked/0-junk/final-{i:04}.json"), b"not a callback");
    }
    park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(600));
    let held = HeldTasks::default();
    let reads = || ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    let first = replay_parked(&ports, &settings().accept, &held, "run-1", LISTED, stop_at).await.unwrap();
    assert_eq!((first.callbacks_replayed, reads()), (0, LISTED), "{first:?}");
    let second = replay_parked(&ports, &settings().accept, &held, "run-2", LISTED, stop_at).await.unwrap();
    assert_eq!((second.callbacks_replayed, reads()), (2, LISTED + 2), "the page after: {second:?}");
    assert!(ports.table.record(MUSIC).is_some());
}

/// Bodies no run can replay (here bodies put by hand that are no callback, left for an
/// operator) are skipped for a while once tried, as a held task's are: read every run, the
/// first 200 of them would take every run's replays, and nothing after them would be reached.
#[tokio::test]
async fn bodies_no_run_can_replay_are_skipped_once_tried() {
    use crate::replay::{HeldTasks, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    park_junk_tasks(&ports, 300);
    park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(600));
    let held = HeldTasks::default();
    let reads = || ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    let first = replay_parked(&ports, &settings().accept, &held, "run-1", 200, stop_at).await.unwrap();
    assert_eq!((first.callbacks_replayed, reads()), (0, 200), "{first:?}");
    let second = replay_parked(&ports, &settings().accept, &held, "run-2", 200, stop_at).await.unwrap();
    assert_eq!((second.callbacks_replayed, reads()), (2, 302), "the others, then the task after them: {second:?}");
    assert!(ports.table.record(MUSIC).is_some());
}

/// A refused body is left alone by itself: its task's other bodies (here a junk `text` body put
/// beside a music task's real ones, replayed first by its stage) are replayed all the same.
#[tokio::test]
async fn a_refused_body_holds_back_none_of_its_task_s_others() {
    use crate::replay::{HeldTasks, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    ports.park(&format!("parked/{MUSIC}/text-junk.json"), b"not a callback");
    park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(600));
    let held = HeldTasks::default();
    let replayed = replay_parked(&ports, &settings().accept, &held, "run-1", 200, stop_at).await.unwrap();
    assert_eq!((replayed.callbacks_replayed, replayed.callbacks_still_parked), (2, 1), "{replayed:?}");
    // And it is left alone itself: the next run does not read it again.
    let reads = ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    replay_parked(&ports, &settings().accept, &held, "run-2", 200, stop_at).await.unwrap();
    assert_eq!(ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst), reads, "not read again");
}

/// More bodies than a listing holds that no run replays do not hide the keys after them: a
/// full listing's next run lists on after it, and the run after the last page starts again
/// from the first.
#[tokio::test]
async fn a_full_listing_is_followed_by_the_page_after_it() {
    use crate::replay::{HeldTasks, LISTED, replay_parked};
    let ports = MemoryPorts::new(vec![]);
    park_junk_tasks(&ports, LISTED);
    let keys = park_music_stages(&ports);
    let stop_at = ports.table.now().plus(Duration::from_secs(600));
    let held = HeldTasks::default();
    let reads = || ports.parked_reads.load(std::sync::atomic::Ordering::SeqCst);
    let first = replay_parked(&ports, &settings().accept, &held, "run-1", LISTED, stop_at).await.unwrap();
    assert_eq!((first.callbacks_replayed, reads()), (0, LISTED - 1), "its last task cut short: {first:?}");
    assert!(ports.bodies.lock().unwrap().contains_key(&keys[0]), "not listed yet");

    let second = replay_parked(&ports, &settings().accept, &held, "run-2", LISTED, stop_at).await.unwrap();
    assert_eq!(second.callbacks_replayed, 2, "the page after: {second:?}");
    assert!(ports.table.record(MUSIC).is_some());

    // The last page was short: the next run lists from the first key again, where what the
    // window's first page held is still remembered (a whole window's tasks are kept).
    let third = replay_parked(&ports, &settings().accept, &held, "run-3", LISTED, stop_at).await.unwrap();
    assert_eq!(reads(), LISTED + 2, "none read again");
    assert_eq!(third.callbacks_still_parked, LISTED, "{third:?}");

    // A body gone from a whole window is forgotten at its end: parked again, it is read at once.
    let first_junk = "parked/0-junk-0000/final-x.json".to_owned();
    let junk = ports.bodies.lock().unwrap().remove(&first_junk).expect("parked");
    for run in ["run-4", "run-5"] {
        replay_parked(&ports, &settings().accept, &held, run, LISTED, stop_at).await.unwrap();
    }
    ports.park(&first_junk, &junk);
    let before = reads();
    replay_parked(&ports, &settings().accept, &held, "run-6", LISTED, stop_at).await.unwrap();
    assert_eq!(reads() - before, 1, "read again, the others still held");
}
