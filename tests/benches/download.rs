//! `make bench-micro`: the download function against the local emulator and a local file server.
//!
//! 1. Wall time and throughput of vaulting a 12-stem `split_stem` task (12 files of 8 MiB),
//!    delivered as Lambda would: two batches (10 + 2 messages) in two concurrent invocations.
//! 2. Peak resident memory while copying one 1 GiB file, generated on the fly by the source:
//!    the copy runs in a child process (this binary again) that reports its own VmHWM.
//! 3. For scale: how fast the source alone is read, so the emulator's share shows.
//!
//! Run under `infra/local/emulator.sh` (as `make bench-micro` does).

use std::process::Command;
use std::time::{Duration, Instant};
use stemvault_aws::FromEnv;

use futures::StreamExt;
use stemvault_download::{App, Config};
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_tests::file_server::{FileServer, Reply, generated_sha256};
use stemvault_vault::{FileJob, FileStatus, VaultState};
use suno_callbacks::Family;

const MIB: u64 = 1024 * 1024;
const STEM_BYTES: u64 = 8 * MIB;
const STEMS: [&str; 12] = [
    "vocal",
    "backing_vocals",
    "drums",
    "bass",
    "guitar",
    "keyboard",
    "percussion",
    "strings",
    "synth",
    "fx",
    "brass",
    "woodwinds",
];
const BIG_BYTES: u64 = 1024 * MIB;
const MEMORY_GOAL_MIB: f64 = 64.0;
/// Set in the child process that copies the big file.
const CHILD: &str = "STEMVAULT_BENCH_DOWNLOAD_CHILD";

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if std::env::var_os(CHILD).is_some() {
        runtime.block_on(child_copy());
        return;
    }
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        println!("download bench: no emulator (run `make bench-micro`); skipped");
        return;
    }
    runtime.block_on(async {
        let env = TestEnv::new().await;
        let server = FileServer::start().await;
        split_stem_task(&env, &server).await;
        source_alone(&server).await;
        one_big_file(&env, &server).await;
    });
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(900)
}

async fn split_stem_task(env: &TestEnv, server: &FileServer) {
    let urls: Vec<String> = STEMS
        .iter()
        .enumerate()
        .map(|(i, stem)| {
            server.route(&format!("/s/{stem}.mp3"), Reply::generated(STEM_BYTES, i as u64, "audio/mpeg"));
            server.url(&format!("/s/{stem}.mp3?X-Amz-Signature=bench"))
        })
        .collect();
    let pairs: Vec<(&str, &str)> = STEMS.iter().zip(&urls).map(|(s, u)| (*s, u.as_str())).collect();
    let record = queued_record(&uuid::Uuid::new_v4().simple().to_string(), Family::VocalSeparation, &pairs);
    env.put_record(&record).await;
    let jobs: Vec<FileJob> = STEMS.iter().map(|s| job_of(&record, s)).collect();
    env.send_jobs(&jobs).await;
    let mut first = env.receive_event(10, 900).await;
    let second = env.receive_event(2, 900).await;
    first.records.extend(second.records);
    let mut batches = (first.clone(), first);
    batches.0.records.truncate(10);
    batches.1.records.drain(..10);

    let app = env.download_app(&server.origin(), None).await;
    let started = Instant::now();
    let (a, b) = tokio::join!(app.handle_batch(batches.0, deadline()), app.handle_batch(batches.1, deadline()));
    let elapsed = started.elapsed();
    let failures = a.batch_item_failures.len() + b.batch_item_failures.len();

    let stored = env.task_record(&record.task_id).await;
    let all_stored = stored.files.values().all(|f| f.status == FileStatus::Stored);
    let intact = STEMS
        .iter()
        .enumerate()
        .all(|(i, s)| stored.files[*s].sha256.as_deref() == Some(generated_sha256(STEM_BYTES, i as u64).as_str()));
    let total = STEM_BYTES * STEMS.len() as u64;
    println!(
        "download: split_stem task, 12 files x 8 MiB: {:.2} s wall, {:.1} MB/s ({} failures, all stored: {}, \
         SHA-256 intact: {}, vault {:?})",
        elapsed.as_secs_f64(),
        total as f64 / 1e6 / elapsed.as_secs_f64(),
        failures,
        all_stored,
        intact,
        stored.vault,
    );
    assert!(all_stored && intact && stored.vault == VaultState::Complete, "the bench task must be vaulted intact");
}

/// Read the 1 GiB source and drop it: the ceiling the source and HTTP stack set.
async fn source_alone(server: &FileServer) {
    server.route("/big/source-only.wav", Reply::generated(BIG_BYTES, 42, "audio/wav"));
    let started = Instant::now();
    let response = reqwest::get(server.url("/big/source-only.wav")).await.expect("source answers");
    let mut chunks = response.bytes_stream();
    let mut read = 0u64;
    while let Some(chunk) = chunks.next().await {
        read += chunk.expect("source chunk").len() as u64;
    }
    let elapsed = started.elapsed();
    println!(
        "download: the local source alone, 1 GiB read and dropped: {:.2} s, {:.1} MB/s",
        elapsed.as_secs_f64(),
        read as f64 / 1e6 / elapsed.as_secs_f64()
    );
}

/// One 1 GiB file without a declared length, so in 8 MiB parts: the path retries and such
/// sources take, whose memory is bounded by two parts (`make bench` measures a declared one,
/// streamed into one PutObject).
async fn one_big_file(env: &TestEnv, server: &FileServer) {
    server.route("/big/master.wav", Reply::chunked(BIG_BYTES, 7, "audio/wav"));
    let url = server.url("/big/master.wav");
    let record = queued_record(&uuid::Uuid::new_v4().simple().to_string(), Family::Wav, &[("wav", &url)]);
    env.put_record(&record).await;
    env.send_jobs(&[job_of(&record, "wav")]).await;

    let exe = std::env::current_exe().expect("this bench's path");
    let mut child = Command::new(exe);
    child
        .env(CHILD, "1")
        .env("TABLE_NAME", &env.resources.table_name)
        .env("BUCKET_NAME", &env.resources.bucket_name)
        .env("QUEUE_URL", &env.resources.queue_url)
        .env("EVENT_BUS_NAME", &env.resources.event_bus_name)
        .env("ALLOWED_SOURCE_HOSTS", server.origin())
        // No provider key for it to read at its start (a shell's would put a Secrets Manager
        // call before the baseline): copies need none.
        .env_remove("PROVIDER_SECRET_ARN");
    let started = Instant::now();
    // The file server keeps serving on this process's runtime while the child copies.
    let output = tokio::task::spawn_blocking(move || child.output()).await.expect("join").expect("run the child");
    let elapsed = started.elapsed();
    let report = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("the copy child failed: {report}");
    }
    let peak_kib: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("peak_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("the child reports its peak");
    let baseline_kib: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("baseline_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("the child reports its baseline");

    let stored = env.task_record(&record.task_id).await;
    let file = &stored.files["wav"];
    let intact = file.status == FileStatus::Stored && file.sha256 == Some(generated_sha256(BIG_BYTES, 7));
    let peak_mib = peak_kib / 1024.0;
    // Read from /proc (Linux): elsewhere the child reports 0, which is no measurement.
    let verdict = if peak_kib <= 0.0 {
        "not measured (Linux only)"
    } else if peak_mib < MEMORY_GOAL_MIB {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "download: one 1 GiB file without a declared length (multipart, {} parts): {:.1} s in a child process, {:.1} MB/s, stored intact: {}",
        BIG_BYTES.div_ceil(8 * MIB),
        elapsed.as_secs_f64(),
        BIG_BYTES as f64 / 1e6 / elapsed.as_secs_f64(),
        intact,
    );
    println!(
        "download: peak resident memory while copying 1 GiB: {:.1} MiB (process baseline before the copy {:.1} MiB); \
         goal < {MEMORY_GOAL_MIB} MiB: {}",
        peak_mib,
        baseline_kib / 1024.0,
        verdict,
    );
    assert!(intact, "the 1 GiB file must be stored intact: {file:?}");
}

/// The child: one invocation with the one message on the queue; prints its peak RSS.
async fn child_copy() {
    let config = Config::from_env().expect("child configuration");
    let queue_url = config.queue_url.clone();
    let sdk = stemvault_aws::sdk_config().await;
    let app = App::new(config, &sdk).await.expect("the downloader starts");
    let sqs = stemvault_aws::long_polling_sqs_client(&sdk);
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(1)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive the job");
    let message = received.messages.unwrap_or_default().pop().expect("the job is on the queue");
    let mut record = aws_lambda_events::sqs::SqsMessage::default();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    let mut event = aws_lambda_events::sqs::SqsEvent::default();
    event.records = vec![record];
    println!("baseline_kib={}", vm_hwm_kib());
    let response = app.handle_batch(event, deadline()).await;
    println!("failures={}", response.batch_item_failures.len());
    println!("peak_kib={}", vm_hwm_kib());
}

/// The process's peak resident set size so far (`VmHWM`), in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
