//! The sweeper against the emulator: the sparse `open-tasks` index finds the open task, the
//! orphaned files are sent once, and nothing else is touched.

use std::time::Duration;
use stemvault_aws::FromEnv;

use stemvault_sweeper::{App, Config};
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_vault::{FileJob, FileStatus, TaskRecord, Timestamp, VaultState};
use suno_callbacks::Family;

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A task whose ingest request died: delivered `age` ago, files (name, status) left as given,
/// `enqueuing` ones under a lapsed claim.
fn orphaned(age: Duration, files: &[(&str, FileStatus)]) -> TaskRecord {
    let task = new_task_id();
    let urls: Vec<(String, String)> =
        files.iter().map(|(n, _)| (n.to_string(), format!("https://cdn1.suno.ai/{n}.mp3?sig=secret"))).collect();
    let pairs: Vec<(&str, &str)> = urls.iter().map(|(n, u)| (n.as_str(), u.as_str())).collect();
    let mut record = queued_record(&task, Family::VocalSeparation, &pairs);
    let delivered = Timestamp::from_unix_ms(Timestamp::now().unix_ms - age.as_millis() as i64);
    record.first_received_at = delivered;
    record.last_received_at = delivered;
    for (name, status) in files {
        let file = record.files.get_mut(*name).unwrap();
        file.status = *status;
        if *status != FileStatus::Queued {
            file.queued_at = None;
        }
        if *status == FileStatus::Enqueuing {
            file.claim = Some("dead-request".into());
            file.lease_until = Some(delivered.plus(Duration::from_secs(15)).unix_seconds());
        }
    }
    record
}

fn app(env: &TestEnv) -> App {
    let config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(env.resources.table_name.clone()),
        "QUEUE_URL" => Some(env.resources.queue_url.clone()),
        _ => None,
    })
    .unwrap();
    App::new(config, &env.config)
}

fn jobs_on_queue(messages: &[aws_sdk_sqs::types::Message]) -> Vec<FileJob> {
    let mut jobs: Vec<FileJob> =
        messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).expect("a FileJob body")).collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    jobs
}

#[tokio::test]
async fn orphaned_files_are_sent_once_and_marked_queued() {
    let env = TestEnv::new().await;
    let record = orphaned(
        Duration::from_secs(600),
        &[("enqueuing", FileStatus::Enqueuing), ("pending", FileStatus::Pending), ("queued", FileStatus::Queued)],
    );
    assert_eq!(record.open.as_deref(), Some("open"));
    env.put_record(&record).await;
    // Delivered 10 s ago: its ingest request may still be sending.
    let fresh = orphaned(Duration::from_secs(10), &[("pending", FileStatus::Pending)]);
    env.put_record(&fresh).await;
    // Settled (no `open`), so outside the index even with a pending file.
    let mut settled = orphaned(Duration::from_secs(600), &[("pending", FileStatus::Pending)]);
    settled.vault = VaultState::Complete;
    settled.open = None;
    env.put_record(&settled).await;

    let stop_at = Timestamp::now().plus(Duration::from_secs(60));
    let report = app(&env).run("run-1", stop_at).await.expect("sweep");
    assert_eq!((report.tasks_checked, report.files_requeued, report.tasks_failed), (1, 2, 0));

    let messages = env.drain_queue(10).await;
    assert_eq!(jobs_on_queue(&messages), [job_of(&record, "enqueuing"), job_of(&record, "pending")]);
    let stored = env.task_record(&record.task_id).await;
    for name in ["enqueuing", "pending"] {
        let file = &stored.files[name];
        assert_eq!((file.status, file.claim.as_deref(), file.lease_until), (FileStatus::Queued, None, None), "{name}");
        let message = messages.iter().find(|m| m.body().unwrap().contains(&format!("\"name\":\"{name}\""))).unwrap();
        assert_eq!(file.message_id.as_deref(), message.message_id());
    }
    assert_eq!(stored.files["queued"], record.files["queued"]);
    assert_eq!(env.task_record(&fresh.task_id).await, fresh);
    assert_eq!(env.task_record(&settled.task_id).await, settled);

    let again = app(&env).run("run-2", stop_at).await.expect("second sweep");
    assert_eq!((again.tasks_checked, again.files_requeued), (1, 0));
    assert!(env.drain_queue(10).await.is_empty(), "nothing sent twice");
}
