//! The download function end to end: the real SDK clients against the local emulator, and a
//! local file server (`stemvault_tests::file_server`) standing in for the provider's hosts.
//! Records are written straight to the table, as ingest leaves them; messages go through the
//! real queue and are handed over the way Lambda hands them over.

use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine;
use sha2::{Digest, Sha256};
use stemvault_download::App;
use stemvault_download::domain::{
    Claim, ClaimAnswer, ClaimFile, Failure, FailureCode, FileWrite, GENERATION_METADATA, HeldCopy, ManifestFence,
    NextSource, RecordFailed, RecordStored, ReleaseFile, SettleTask, SettleWrite, VERSION_METADATA, WriteManifest,
};
use stemvault_download::error::{CopyError, FetchError};
use stemvault_download::existing::ReadObject;
use stemvault_download::source::{FetchSource, HttpSource};
use stemvault_download::source_policy::SourcePolicy;
use stemvault_download::upload::{ObjectInfo, ObjectStore, StoredObject, crc32};
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_tests::file_server::{FileServer, Reply, generated_bytes, generated_sha256};
use stemvault_vault::download::{ManifestPlan, SettlePlan, manifest_job, settle_plan};
use stemvault_vault::{
    Conditional, FileStatus, LeaseEnd, Manifest, PublicFileStatus, TaskRecord, Timestamp, VaultState,
};
use suno_callbacks::{Family, Stage, TaskId};

const MIB: usize = 1024 * 1024;

struct Setup {
    env: TestEnv,
    server: FileServer,
    app: App,
}

/// A fresh environment, a file server, and the function allowed to fetch from it.
async fn setup(max_file_bytes: Option<u64>) -> Setup {
    let env = TestEnv::new().await;
    let server = FileServer::start().await;
    let app = env.download_app(&server.origin(), max_file_bytes).await;
    Setup { env, server, app }
}

fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

impl Setup {
    /// Write the record, send one job per named file, and run them as one batch.
    async fn run_files(&self, record: &TaskRecord, names: &[&str]) -> (SqsEvent, SqsBatchResponse) {
        self.env.put_record(record).await;
        let jobs: Vec<_> = names.iter().map(|n| job_of(record, n)).collect();
        self.env.send_jobs(&jobs).await;
        self.run_received(names.len()).await
    }

    /// Receive `count` messages, run them as one batch and finish it as Lambda would.
    async fn run_received(&self, count: usize) -> (SqsEvent, SqsBatchResponse) {
        let event = self.env.receive_event(count, 2).await;
        let response = self.app.handle_batch(event.clone(), deadline()).await;
        self.env.finish_batch(&event, &response).await;
        (event, response)
    }

    async fn manifest(&self, task_id: &str) -> Manifest {
        let bytes = self.env.object(&format!("tasks/{task_id}/manifest.json")).await.expect("the manifest exists");
        serde_json::from_slice(&bytes).expect("the manifest parses")
    }

    /// The message was not deleted and stays invisible past the 2 s the test received it
    /// for: the function delayed it (by 30 s on a first receive).
    async fn assert_delayed(&self) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(self.env.queue_depth().await, (0, 1), "the message is back on the queue, still invisible");
    }
}

/// A body that starts like a real file of its kind.
fn media(kind: &str, len: usize, seed: u64) -> Vec<u8> {
    let magic: &[u8] = match kind {
        "mp3" => b"ID3\x04\x00\x00\x00\x00\x00\x00",
        "wav" => b"RIFF\x24\x00\x00\x00WAVEfmt ",
        "png" => b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        "mp4" => b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00",
        _ => b"",
    };
    let mut data = magic.to_vec();
    data.extend(generated_bytes(len - magic.len(), seed));
    data
}

#[tokio::test]
async fn stores_audio_images_and_video_of_several_sizes() {
    let s = setup(None).await;
    let task = new_task_id();
    let files = [
        ("vocal", "mp3", 300 * 1024, "audio/mpeg"),
        ("drums", "mp3", 8 * MIB, "audio/mpeg"),
        ("instrumental", "wav", 8 * MIB + 1, "audio/wav"),
        ("cover-1", "png", 2048, "image/png"),
        ("video", "mp4", 17 * MIB + 3, "video/mp4"),
    ];
    let mut urls = Vec::new();
    let mut bodies = Vec::new();
    for (i, (name, ext, len, content_type)) in files.iter().enumerate() {
        let data = media(ext, *len, i as u64);
        s.server.route(&format!("/s/{name}.{ext}"), Reply::bytes(data.clone(), content_type));
        urls.push(s.server.url(&format!("/s/{name}.{ext}?X-Amz-Signature=secret")));
        bodies.push(data);
    }
    let pairs: Vec<(&str, &str)> = files.iter().zip(&urls).map(|((n, ..), u)| (*n, u.as_str())).collect();
    let record = queued_record(&task, Family::VocalSeparation, &pairs);
    let names: Vec<&str> = files.iter().map(|f| f.0).collect();

    let (_, response) = s.run_files(&record, &names).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());

    let stored = s.env.task_record(&task).await;
    for ((name, ext, len, content_type), data) in files.iter().zip(&bodies) {
        let key = format!("tasks/{task}/{name}.{ext}");
        let entry = &stored.files[*name];
        assert_eq!(entry.key, key);
        assert_eq!(entry.status, FileStatus::Stored, "{name}: {:?}", entry.error);
        assert_eq!(entry.bytes, Some(*len as u64), "{name}");
        assert_eq!(entry.sha256.as_deref(), Some(sha256_hex(data).as_str()), "{name}");
        assert_eq!(entry.content_type.as_deref(), Some(*content_type), "{name}");
        assert_eq!((entry.claim.as_deref(), entry.lease_until, entry.attempts), (None, None, 1), "{name}");
        assert!(entry.stored_at.is_some(), "{name}");
        assert_eq!(s.env.object(&key).await.as_deref(), Some(data.as_slice()), "{name}");

        let head = s.env.head(&key).await;
        assert_eq!(head.content_type(), Some(*content_type), "{name}");
        // Every length declared: one streamed PutObject each, whatever the size, its SHA-256
        // sent after the body (a multipart upload would cost a 17 MiB file five requests).
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data));
        assert_eq!(head.checksum_sha256(), Some(expected.as_str()), "{name} ({len} bytes): the whole body's SHA-256");
    }
    assert_eq!(s.env.queue_depth().await, (0, 0), "every message deleted");

    assert_eq!(stored.vault, VaultState::Complete);
    assert_eq!(stored.open, None, "a settled task leaves the sweeper's open-tasks index");
    assert_eq!(stored.manifest_key.as_deref(), Some(format!("tasks/{task}/manifest.json").as_str()));
    let manifest = s.manifest(&task).await;
    assert_eq!((manifest.task_id.as_str(), manifest.family), (task.as_str(), Family::VocalSeparation));
    assert_eq!(manifest.stage, Stage::Complete);
    assert_eq!(manifest.vault, VaultState::Complete);
    assert_eq!(manifest.files.len(), files.len());
    for f in &manifest.files {
        let entry = &stored.files[&f.name];
        assert_eq!(f.status, PublicFileStatus::Stored);
        assert_eq!(
            (&f.key, f.bytes, &f.sha256, &f.content_type),
            (&entry.key, entry.bytes, &entry.sha256, &entry.content_type)
        );
        assert_eq!(f.error, None);
    }
}

#[tokio::test]
async fn stores_chunked_bodies_without_content_length() {
    let s = setup(None).await;
    let task = new_task_id();
    s.server.route("/s/small.mp3", Reply::chunked(100_000, 1, "audio/mpeg"));
    s.server.route("/s/large.wav", Reply::chunked(9 * MIB as u64 + 5, 2, "audio/wav"));
    let (small, large) = (s.server.url("/s/small.mp3"), s.server.url("/s/large.wav"));
    let record = queued_record(&task, Family::VocalSeparation, &[("small", &small), ("large", &large)]);

    let (_, response) = s.run_files(&record, &["small", "large"]).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&task).await;
    for (name, key, len, seed) in
        [("small", "small.mp3", 100_000u64, 1u64), ("large", "large.wav", 9 * MIB as u64 + 5, 2)]
    {
        let entry = &stored.files[name];
        assert_eq!(entry.status, FileStatus::Stored, "{name}: {:?}", entry.error);
        assert_eq!(entry.bytes, Some(len));
        assert_eq!(entry.sha256.as_deref(), Some(generated_sha256(len, seed).as_str()));
        let object = s.env.object(&format!("tasks/{task}/{key}")).await.expect("object");
        assert_eq!(sha256_hex(&object), generated_sha256(len, seed), "{name}");
    }
    // Longer than a part and of no declared length: a multipart upload, its parts carrying
    // CRC32s and the object the whole body's (S3 computes it; the emulator, without awscrt,
    // shows some other value), no composite SHA-256.
    let head = s.env.head(&format!("tasks/{task}/large.wav")).await;
    assert_eq!(head.checksum_sha256(), None, "no composite SHA-256");
    assert!(head.checksum_crc32().is_some(), "a full-object CRC32");
    assert_eq!(head.checksum_type(), Some(&aws_sdk_s3::types::ChecksumType::FullObject));
    assert_eq!(s.env.open_multipart_uploads().await, 0);
    assert_eq!(stored.vault, VaultState::Complete);
}

#[tokio::test]
async fn a_mid_body_disconnect_is_retried_and_then_stored_intact() {
    let s = setup(None).await;
    let task = new_task_id();
    let len = 10 * MIB as u64;
    let cut = Reply::Disconnect { len, seed: 7, after: 9 * MIB as u64 };
    s.server.route("/s/vocal.mp3", Reply::fail_times(1, cut, Reply::generated(len, 7, "audio/mpeg")));
    let url = s.server.url("/s/vocal.mp3");
    let record = queued_record(&task, Family::VocalSeparation, &[("vocal", &url)]);
    let key = format!("tasks/{task}/vocal.mp3");

    let (event, response) = s.run_files(&record, &["vocal"]).await;
    assert_eq!(failed_ids(&response), vec![event.records[0].message_id.clone().unwrap()]);
    let after_failure = s.env.task_record(&task).await;
    let entry = &after_failure.files["vocal"];
    assert_eq!(entry.status, FileStatus::Queued, "released for the retry");
    assert_eq!(entry.claim, None);
    let released_at = entry.lease_until.expect("a released file keeps when its claim ended");
    assert!((Timestamp::now().unix_seconds() - released_at.unix_seconds).abs() < 60, "{released_at:?}");
    assert!(entry.error.as_deref().is_some_and(|e| e.contains("source")), "{:?}", entry.error);
    assert_eq!(s.env.object(&key).await, None, "no partial object under the key (a streamed put cut short)");
    assert_eq!(after_failure.vault, VaultState::Pending);
    s.assert_delayed().await;

    s.env.make_visible(&event.records[0]).await;
    let (event, response) = s.run_received(1).await;
    assert_eq!(event.records[0].attributes.get("ApproximateReceiveCount").map(String::as_str), Some("2"));
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&task).await;
    assert_eq!(stored.files["vocal"].status, FileStatus::Stored);
    assert_eq!(stored.files["vocal"].attempts, 2);
    assert_eq!(stored.files["vocal"].error, None);
    let object = s.env.object(&key).await.expect("stored");
    assert_eq!(object.len() as u64, len);
    assert_eq!(sha256_hex(&object), generated_sha256(len, 7));
    assert_eq!(stored.files["vocal"].sha256.as_deref(), Some(generated_sha256(len, 7).as_str()));
    assert_eq!(s.server.hits("/s/vocal.mp3"), 2);
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// `first` is answered once, then the file: the first attempt leaves the file queued with
/// `said` as its error and stores nothing; the retry stores it and settles the task.
async fn retried_then_stored(first: Reply, said: &str) {
    let s = setup(None).await;
    let task = new_task_id();
    let data = media("mp3", 5000, 3);
    s.server.route("/s/vocal.mp3", Reply::fail_times(1, first, Reply::bytes(data.clone(), "audio/mpeg")));
    let url = s.server.url("/s/vocal.mp3");
    let record = queued_record(&task, Family::VocalSeparation, &[("vocal", &url)]);

    let (event, response) = s.run_files(&record, &["vocal"]).await;
    assert_eq!(failed_ids(&response).len(), 1);
    let entry = s.env.task_record(&task).await.files["vocal"].clone();
    assert_eq!(entry.status, FileStatus::Queued);
    assert_eq!(entry.error.as_deref(), Some(said));
    assert_eq!(s.env.object(&format!("tasks/{task}/vocal.mp3")).await, None);
    s.assert_delayed().await;

    s.env.make_visible(&event.records[0]).await;
    let (_, response) = s.run_received(1).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&task).await;
    assert_eq!((stored.files["vocal"].status, stored.vault), (FileStatus::Stored, VaultState::Complete));
    assert_eq!(s.env.object(&format!("tasks/{task}/vocal.mp3")).await, Some(data));
}

#[tokio::test]
async fn a_500_is_retried_and_a_later_200_stored() {
    retried_then_stored(Reply::Status(500), "source answered 500 Internal Server Error").await;
}

/// A host answering 200 with a page where the audio should be: not stored (the task would
/// settle complete with the page), retried, and the file stored when it is served.
#[tokio::test]
async fn a_page_in_place_of_the_file_is_retried_and_the_file_stored_later() {
    let page = Reply::bytes(&b"<html><body>File not found</body></html>"[..], "text/html; charset=utf-8");
    let said = "the source answered 200 with Content-Type text/html, not the file";
    retried_then_stored(page, said).await;
}

#[tokio::test]
async fn a_partial_content_answer_is_not_stored_but_retried() {
    let s = setup(None).await;
    let task = new_task_id();
    s.server.route("/s/vocal.mp3", Reply::Status(206));
    let url = s.server.url("/s/vocal.mp3");
    let record = queued_record(&task, Family::VocalSeparation, &[("vocal", &url)]);

    let (_, response) = s.run_files(&record, &["vocal"]).await;
    assert_eq!(failed_ids(&response).len(), 1);
    let entry = s.env.task_record(&task).await.files["vocal"].clone();
    assert_eq!(entry.status, FileStatus::Queued);
    assert_eq!(entry.error.as_deref(), Some("source answered 206 Partial Content"));
    assert_eq!(s.env.object(&format!("tasks/{task}/vocal.mp3")).await, None);
}

#[tokio::test]
async fn expired_urls_fail_for_good_and_the_task_settles_partial() {
    let s = setup(None).await;
    let task = new_task_id();
    s.server.route("/s/vocal.mp3", Reply::Status(403));
    s.server.route("/s/drums.mp3", Reply::Status(441));
    s.server.route("/s/bass.mp3", Reply::bytes(media("mp3", 4096, 9), "audio/mpeg"));
    let urls = [s.server.url("/s/vocal.mp3?Expires=1"), s.server.url("/s/drums.mp3"), s.server.url("/s/bass.mp3")];
    let record =
        queued_record(&task, Family::VocalSeparation, &[("vocal", &urls[0]), ("drums", &urls[1]), ("bass", &urls[2])]);

    let (event, response) = s.run_files(&record, &["vocal", "drums", "bass"]).await;
    assert_eq!(failed_ids(&response).len(), 2, "the expired ones tried again");
    let response = s.env.run_until_expiry_confirmed(&s.app, event, response).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new(), "then failed for good, not retried");
    assert_eq!(s.env.queue_depth().await, (0, 0), "their messages are deleted");

    let stored = s.env.task_record(&task).await;
    assert_eq!(stored.files["vocal"].status, FileStatus::Failed);
    assert_eq!(stored.files["vocal"].error.as_deref(), Some("source answered 403 Forbidden"));
    assert_eq!(stored.files["drums"].status, FileStatus::Failed);
    assert_eq!(stored.files["drums"].error.as_deref(), Some("source answered 441"));
    assert_eq!(stored.files["bass"].status, FileStatus::Stored);
    assert_eq!(s.env.object(&format!("tasks/{task}/vocal.mp3")).await, None);
    assert_eq!(stored.vault, VaultState::Partial);

    let manifest = s.manifest(&task).await;
    assert_eq!(manifest.vault, VaultState::Partial);
    let summary: Vec<(&str, PublicFileStatus, Option<&str>)> =
        manifest.files.iter().map(|f| (f.name.as_str(), f.status, f.error.as_deref())).collect();
    assert_eq!(
        summary,
        vec![
            ("bass", PublicFileStatus::Stored, None),
            ("drums", PublicFileStatus::Failed, Some("source answered 441")),
            ("vocal", PublicFileStatus::Failed, Some("source answered 403 Forbidden")),
        ]
    );
    assert_eq!(manifest.files[0].bytes, Some(4096));
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_sources() {
    let env = TestEnv::new().await;
    let (first, second, unlisted) = (FileServer::start().await, FileServer::start().await, FileServer::start().await);
    let allowed = format!("{},{}", first.origin(), second.origin());
    let s = Setup { app: env.download_app(&allowed, None).await, env, server: first };
    let data = media("mp3", 3000, 4);
    second.route("/s/ok.mp3", Reply::bytes(data.clone(), "audio/mpeg"));
    s.server.route("/r/ok.mp3", Reply::redirect(second.url("/s/ok.mp3?sig=1")));
    s.server.route("/r/relative.mp3", Reply::redirect("/s/relative.mp3"));
    s.server.route("/s/relative.mp3", Reply::bytes(data.clone(), "audio/mpeg"));
    unlisted.route("/s/x.mp3", Reply::bytes(data.clone(), "audio/mpeg"));
    s.server.route("/r/refused.mp3", Reply::redirect(unlisted.url("/s/x.mp3")));
    s.server.route("/r/metadata.mp3", Reply::redirect("https://169.254.169.254/latest/meta-data/"));
    s.server.route("/r/mapped.mp3", Reply::redirect("https://[::ffff:a9fe:a9fe]/latest/meta-data/"));
    s.server.route("/r/loop.mp3", Reply::redirect("/r/loop.mp3"));
    let names = ["ok", "relative", "refused", "metadata", "mapped", "loop"];
    let urls: Vec<String> = names.iter().map(|n| s.server.url(&format!("/r/{n}.mp3"))).collect();
    let pairs: Vec<(&str, &str)> = names.iter().zip(&urls).map(|(n, u)| (*n, u.as_str())).collect();
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &pairs);
    let task = record.task_id.clone();

    let (_, response) = s.run_files(&record, &names).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&task).await;
    for name in ["ok", "relative"] {
        assert_eq!(stored.files[name].status, FileStatus::Stored, "{name}: {:?}", stored.files[name].error);
        assert_eq!(s.env.object(&format!("tasks/{task}/{name}.mp3")).await.as_deref(), Some(data.as_slice()));
    }
    let error = |name: &str| stored.files[name].error.clone().unwrap_or_default();
    assert_eq!(stored.files["refused"].status, FileStatus::Failed);
    assert!(error("refused").contains("not https and not a listed origin"), "{}", error("refused"));
    assert_eq!(unlisted.hits("/s/x.mp3"), 0, "the refused host was never contacted");
    for name in ["metadata", "mapped"] {
        assert_eq!(stored.files[name].status, FileStatus::Failed, "{name}");
        assert!(error(name).contains("refused source"), "{name}: {}", error(name));
    }
    assert_eq!(error("loop"), "more than 5 redirects");
    assert_eq!(s.server.hits("/r/loop.mp3"), 6, "the first request and 5 redirects");
    assert_eq!(second.hits("/s/ok.mp3"), 1);
}

#[tokio::test]
async fn loopback_sources_are_refused_unless_their_exact_origin_is_listed() {
    let env = TestEnv::new().await;
    let server = FileServer::start().await;
    server.route("/s/a.mp3", Reply::bytes(media("mp3", 1000, 5), "audio/mpeg"));
    // `127.0.0.1` as a host pattern: https only, and its address is loopback.
    let app = env.download_app("*.suno.ai,127.0.0.1", None).await;
    let s = Setup { env, server, app };
    let port = s.server.origin().rsplit(':').next().unwrap().to_owned();
    let plain = s.server.url("/s/a.mp3");
    let https = format!("https://127.0.0.1:{port}/s/a.mp3");
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("plain", &plain), ("tls", &https)]);

    let (_, response) = s.run_files(&record, &["plain", "tls"]).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&record.task_id).await;
    assert_eq!(stored.files["plain"].status, FileStatus::Failed);
    assert!(stored.files["plain"].error.as_deref().unwrap().contains("not https"));
    assert_eq!(stored.files["tls"].status, FileStatus::Failed);
    assert!(stored.files["tls"].error.as_deref().unwrap().contains("loopback"), "{:?}", stored.files["tls"].error);
    assert_eq!(s.server.hits("/s/a.mp3"), 0);

    // Listed as an exact origin, the same source is fetched.
    let listed = s.env.download_app(&s.server.origin(), None).await;
    let again = queued_record(&new_task_id(), Family::VocalSeparation, &[("plain", &plain)]);
    s.env.put_record(&again).await;
    s.env.send_jobs(&[job_of(&again, "plain")]).await;
    let event = s.env.receive_event(1, 2).await;
    let response = listed.handle_batch(event.clone(), deadline()).await;
    s.env.finish_batch(&event, &response).await;
    assert_eq!(s.env.task_record(&again.task_id).await.files["plain"].status, FileStatus::Stored);
}

#[tokio::test]
async fn the_size_cap_holds_on_content_length_and_while_streaming() {
    let cap = 9 * MIB as u64;
    let s = setup(Some(cap)).await;
    s.server.route("/s/declared.wav", Reply::generated(cap + 1, 1, "audio/wav"));
    s.server.route("/s/chunked.wav", Reply::chunked(10 * MIB as u64, 2, "audio/wav"));
    s.server.route("/s/fits.wav", Reply::chunked(cap, 3, "audio/wav"));
    let names = ["declared", "chunked", "fits"];
    let urls: Vec<String> = names.iter().map(|n| s.server.url(&format!("/s/{n}.wav"))).collect();
    let pairs: Vec<(&str, &str)> = names.iter().zip(&urls).map(|(n, u)| (*n, u.as_str())).collect();
    let record = queued_record(&new_task_id(), Family::Wav, &pairs);
    let task = record.task_id.clone();

    let (_, response) = s.run_files(&record, &names).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let stored = s.env.task_record(&task).await;
    for name in ["declared", "chunked"] {
        assert_eq!(stored.files[name].status, FileStatus::Failed, "{name}");
        assert!(stored.files[name].error.as_deref().unwrap().contains("larger than the 9437184-byte limit"), "{name}");
        assert_eq!(s.env.object(&format!("tasks/{task}/{name}.wav")).await, None, "{name}");
    }
    assert_eq!(stored.files["fits"].status, FileStatus::Stored);
    assert_eq!(stored.files["fits"].sha256.as_deref(), Some(generated_sha256(cap, 3).as_str()));
    assert_eq!(s.env.open_multipart_uploads().await, 0, "the oversize multipart upload was aborted");
    assert_eq!(stored.vault, VaultState::Partial);
}

#[tokio::test]
async fn a_redelivered_message_copies_nothing_and_rewrites_no_manifest() {
    let s = setup(None).await;
    s.server.route("/s/vocal.mp3", Reply::generated(50_000, 4, "audio/mpeg"));
    let url = s.server.url("/s/vocal.mp3");
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("vocal", &url)]);
    let task = record.task_id.clone();
    s.env.put_record(&record).await;
    s.env.send_jobs(&[job_of(&record, "vocal"), job_of(&record, "vocal")]).await;

    let (_, response) = s.run_received(1).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    let first = s.env.task_record(&task).await;
    let manifest = s.manifest(&task).await;
    assert_eq!(first.vault, VaultState::Complete);

    let (_, response) = s.run_received(1).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(s.server.hits("/s/vocal.mp3"), 1, "downloaded once");
    assert_eq!(s.env.task_record(&task).await, first, "the record did not change");
    assert_eq!(s.manifest(&task).await, manifest, "the manifest was not rewritten");
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// The worker that settled the task stopped after writing the manifest and before its settle
/// write (a Lambda timeout in between): every file is settled, the vault still `pending`,
/// the manifest of this generation under its key. The redelivered message settles the task
/// without writing the manifest again.
#[tokio::test]
async fn a_redelivery_settles_the_task_a_stopped_worker_left_unsettled() {
    let s = setup(None).await;
    s.server.route("/s/vocal.mp3", Reply::generated(4096, 6, "audio/mpeg"));
    let url = s.server.url("/s/vocal.mp3");
    let mut record = queued_record(&new_task_id(), Family::VocalSeparation, &[("vocal", &url)]);
    let task = record.task_id.clone();
    let vocal = record.files.get_mut("vocal").unwrap();
    vocal.status = FileStatus::Stored;
    vocal.bytes = Some(4096);
    vocal.sha256 = Some("ab".repeat(32));
    vocal.content_type = Some("audio/mpeg".into());
    vocal.stored_at = Some("2026-11-23T15:00:05.000Z".parse().unwrap());
    s.env.put_record(&record).await;
    let stopped = s.env.task_record(&task).await;
    let key = format!("tasks/{task}/manifest.json");
    let written = Manifest::of(&stopped, VaultState::Complete, "2026-11-23T15:00:06.000Z".parse().unwrap());
    let ports = s.env.download_ports();
    let put = ports
        .write_manifest(
            &key,
            &written,
            ManifestFence { generation: stopped.generation, version: stopped.version },
            None,
        )
        .await;
    assert_eq!(put, Ok(Conditional::Applied));

    s.env.send_jobs(&[job_of(&stopped, "vocal")]).await;
    let (_, response) = s.run_received(1).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());

    assert_eq!(s.manifest(&task).await, written, "the manifest of this generation is left as it is");
    let healed = s.env.task_record(&task).await;
    assert_eq!(
        (healed.vault, healed.open.as_deref(), healed.manifest_key.as_deref(), healed.version),
        (VaultState::Complete, None, Some(key.as_str()), stopped.version + 1)
    );
    assert_eq!(healed.files, stopped.files, "the file items are not written");
    assert_eq!(s.server.hits("/s/vocal.mp3"), 0, "nothing downloaded");
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// A task with one queued file, `vocal`, in the table.
async fn one_queued_vocal(env: &TestEnv) -> (TaskRecord, TaskId) {
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("vocal", "https://cdn1.suno.ai/v.mp3")]);
    env.put_record(&record).await;
    let task = TaskId::parse(&record.task_id).unwrap();
    (record, task)
}

/// A claim for `worker`, its lease a minute.
fn claim(worker: &str) -> Claim {
    let now = Timestamp::now();
    Claim { worker: worker.into(), lease_until: LeaseEnd::at(now.plus(Duration::from_secs(60))), now }
}

/// What ingest writes for a callback bringing `url` while `vocal` is being downloaded (its
/// conditional put of the file item, `next_url` beside the URL copied); the newer URL's key,
/// as ingest makes it.
async fn bring_next_url(env: &TestEnv, task_id: &str, url: &str) -> String {
    let read = env.task_record(task_id).await;
    let mut newer = read.clone();
    let key = suno_callbacks::s3_key::file_key(&TaskId::parse(task_id).unwrap(), "vocal", url);
    let vocal = newer.files.get_mut("vocal").unwrap();
    (vocal.next_url, vocal.next_key) = (Some(url.into()), Some(key.clone()));
    env.rewrite_record(&read, &newer).await;
    key
}

/// The claim and the settle against the emulator's DynamoDB: a claim applies to a claimable
/// file item and returns it (ALL_NEW), a refused one returns the item as it is (ALL_OLD, via
/// ReturnValuesOnConditionCheckFailure) or nothing for a file the task does not have, and
/// creates no item; the settle write applies at the generation manifested, again with the
/// same values (the second of two workers finishing at once), and is refused once a request
/// reopening the task marked it open, or moved the generation on.
#[tokio::test]
async fn claims_and_settles_answer_with_the_item() {
    let env = TestEnv::new().await;
    let ports = env.download_ports();
    let (record, task) = one_queued_vocal(&env).await;

    let first = claim("w-1");
    let ClaimAnswer::Claimed(file) = ports.claim_file(&task, "vocal", &first).await.unwrap() else {
        panic!("a queued file is claimed")
    };
    assert_eq!((file.status, file.claim.as_deref(), file.attempts), (FileStatus::Downloading, Some("w-1"), 1));
    assert_eq!(file.url, "https://cdn1.suno.ai/v.mp3");
    let ClaimAnswer::Refused(Some(held)) = ports.claim_file(&task, "vocal", &claim("w-2")).await.unwrap() else {
        panic!("a held file is refused, with its item")
    };
    assert_eq!((held.claim.as_deref(), held.lease_until), (Some("w-1"), Some(first.lease_until)));
    assert_eq!(ports.claim_file(&task, "bass", &claim("w-2")).await, Ok(ClaimAnswer::Refused(None)));
    assert!(!env.task_record(&record.task_id).await.files.contains_key("bass"), "no item created");

    let stored = StoredObject { bytes: 3, sha256_hex: "ab".repeat(32), content_type: None, parts: 1 };
    let at = Timestamp::now();
    let copy = |worker| HeldCopy { worker, next: None };
    let Ok(FileWrite::Refused(Some(held))) = ports.record_stored(&task, "vocal", copy("w-2"), &stored, at).await else {
        panic!("another worker's file is refused, with its item")
    };
    assert_eq!((held.status, held.claim.as_deref()), (FileStatus::Downloading, Some("w-1")));
    assert_eq!(ports.record_stored(&task, "vocal", copy("w-1"), &stored, at).await, Ok(FileWrite::Applied));
    // The same write again (the SDK retrying one whose answer was lost): refused, with the
    // item it wrote.
    let Ok(FileWrite::Refused(Some(written))) = ports.record_stored(&task, "vocal", copy("w-1"), &stored, at).await
    else {
        panic!("a finished file is refused, with its item")
    };
    assert_eq!(
        (written.status, written.claim, written.sha256),
        (FileStatus::Stored, None, Some(stored.sha256_hex.clone()))
    );
    assert_eq!(written.stored_at, Some(at), "to the millisecond: what tells our write from another's");

    let read = env.task_record(&record.task_id).await;
    let SettlePlan::Settle(plan) = settle_plan(&read, &task, Timestamp::now()) else { panic!("settles") };
    assert_eq!(ports.settle_task(&task, &plan).await, Ok(SettleWrite::Settled));
    assert_eq!(ports.settle_task(&task, &plan).await, Ok(SettleWrite::Refused), "the item read is written over");
    let settled = env.task_record(&record.task_id).await;
    assert_eq!(
        (settled.vault, settled.open.as_deref(), settled.version),
        (VaultState::Complete, None, read.version + 1)
    );
    assert_eq!(settled.announced, Some(plan.announcement.clone()), "what its Task Vaulted said");
    // Read again: the same values, over a vault settled already.
    let as_read = |version| ManifestPlan { version, ..*plan.clone() };
    assert_eq!(ports.settle_task(&task, &as_read(settled.version)).await, Ok(SettleWrite::Rewritten));
    // A settle asking for the reconciler's watch (a file expired) puts the task in the
    // reconcile-due index; one asking again keeps the schedule it finds (if_not_exists).
    let first_poll = Timestamp::now().plus(Duration::from_secs(30));
    let watching = ManifestPlan { watch_from: Some(first_poll), ..as_read(settled.version + 1) };
    assert_eq!(ports.settle_task(&task, &watching).await, Ok(SettleWrite::Rewritten));
    let later =
        ManifestPlan { watch_from: Some(first_poll.plus(Duration::from_secs(3600))), ..as_read(settled.version + 2) };
    assert_eq!(ports.settle_task(&task, &later).await, Ok(SettleWrite::Rewritten));
    let watched = env.task_record(&record.task_id).await;
    assert_eq!((watched.reconcile.as_deref(), watched.reconcile_at), (Some("due"), Some(first_poll)));

    // Ingest reopening it marks it open and fenced before its file items (version and
    // generation as they were): a settle read before the task settled is refused, and the
    // mark kept.
    env.mark_open(&record.task_id).await;
    assert_eq!(ports.settle_task(&task, &as_read(watched.version)).await, Ok(SettleWrite::Refused));
    let marked = env.task_record(&record.task_id).await;
    assert_eq!((marked.open.as_deref(), marked.adding), (Some("open"), Some(settled.generation + 1)));

    // Ingest reopens it (a new generation): a settle of the older one is refused.
    let mut reopened = marked.clone();
    (reopened.vault, reopened.manifest_key, reopened.generation) = (VaultState::Pending, None, settled.generation + 1);
    reopened.sync_open_marker();
    reopened.version += 1;
    env.rewrite_record(&marked, &reopened).await;
    assert_eq!(ports.settle_task(&task, &as_read(reopened.version)).await, Ok(SettleWrite::Refused));
    assert_eq!(env.task_record(&record.task_id).await.vault, VaultState::Pending);
}

/// The writes around a newer URL against the emulator's DynamoDB: with `next_url` in the item
/// (ingest's conditional put), the holder's `failed` of its own URL is refused with the item;
/// its release of a newer one makes the item's newest the file's URL (one newer still may have
/// come while it was copied); a `failed` of the newer one applies only while it is still the
/// item's `next_url`.
#[tokio::test]
async fn a_newer_url_in_the_item_refuses_the_old_one_s_failure_and_becomes_the_url() {
    let env = TestEnv::new().await;
    let ports = env.download_ports();
    let (record, task) = one_queued_vocal(&env).await;
    let Ok(ClaimAnswer::Claimed(_)) = ports.claim_file(&task, "vocal", &claim("w-1")).await else { panic!("claimed") };
    let next_url = "https://cdn1.suno.ai/v-final.wav";
    let next_key = bring_next_url(&env, &record.task_id, next_url).await;

    let gone = Failure { code: FailureCode::SourceExpired, reason: "gone", at: Timestamp::now() };
    let own = HeldCopy { worker: "w-1", next: None };
    let Ok(FileWrite::Refused(Some(item))) = ports.record_failed(&task, "vocal", own, &gone).await else {
        panic!("refused: a newer URL waits")
    };
    assert_eq!((item.next_url.as_deref(), item.claim.as_deref()), (Some(next_url), Some("w-1")));
    // Copying an older newer URL than the item's now: the release moves the newest into `url`.
    let stale = HeldCopy { worker: "w-1", next: Some(NextSource { url: "https://cdn1.suno.ai/older.wav", key: "k" }) };
    assert_eq!(ports.release_file(&task, "vocal", stale, "busy").await, Ok(Conditional::Applied));
    let released = &env.task_record(&record.task_id).await.files["vocal"];
    assert_eq!(
        (released.url.as_str(), released.key.as_str(), released.next_url.as_deref(), released.claim.as_deref()),
        (next_url, next_key.as_str(), None, None)
    );

    // Held again with no newer URL waiting: a release as if copying one is refused (no
    // `next_url` to move in), a plain one applies.
    let Ok(ClaimAnswer::Claimed(_)) = ports.claim_file(&task, "vocal", &claim("w-1b")).await else { panic!("claimed") };
    let moved = HeldCopy { worker: "w-1b", next: Some(NextSource { url: next_url, key: &next_key }) };
    assert_eq!(ports.release_file(&task, "vocal", moved, "busy").await, Ok(Conditional::Conflict));
    let plain = HeldCopy { worker: "w-1b", next: None };
    assert_eq!(ports.release_file(&task, "vocal", plain, "busy").await, Ok(Conditional::Applied));

    // Held again, copying the newer URL (as if ingest wrote it once more), it fails for good there.
    let Ok(ClaimAnswer::Claimed(_)) = ports.claim_file(&task, "vocal", &claim("w-2")).await else { panic!("claimed") };
    let third_url = "https://cdn1.suno.ai/v-3.flac";
    let third_key = bring_next_url(&env, &record.task_id, third_url).await;
    let third = HeldCopy { worker: "w-2", next: Some(NextSource { url: third_url, key: &third_key }) };
    assert_eq!(ports.record_failed(&task, "vocal", third, &gone).await, Ok(FileWrite::Applied));
    let failed = &env.task_record(&record.task_id).await.files["vocal"];
    assert_eq!(
        (failed.status, failed.url.as_str(), failed.key.as_str(), failed.next_url.as_deref()),
        (FileStatus::Failed, third_url, third_key.as_str(), None)
    );
    assert_eq!((failed.error.as_deref(), failed.error_code), (Some("gone"), Some(FailureCode::SourceExpired)));
}

/// Two workers finish a task's last two files at the same time, in two invocations: no
/// condition fails between files of one task, and the task settles with one settle write.
/// Both may see every file settled; the one holding the file settled last settles, and the
/// other's message comes back later (deferred) to find it settled. Should the last one's read
/// have come before the other file settled, the deferred message's redelivery settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_finishing_a_task_s_last_files_at_once_both_succeed() {
    let s = setup(None).await;
    for name in ["vocal", "drums"] {
        let slow = Reply::delayed(Duration::from_secs(1), Reply::generated(64 * 1024, 8, "audio/mpeg"));
        s.server.route(&format!("/s/{name}.mp3"), slow);
    }
    let (vocal, drums) = (s.server.url("/s/vocal.mp3"), s.server.url("/s/drums.mp3"));
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("vocal", &vocal), ("drums", &drums)]);
    s.env.put_record(&record).await;
    let before = s.env.task_record(&record.task_id).await;
    s.env.send_jobs(&[job_of(&record, "vocal"), job_of(&record, "drums")]).await;
    let event = s.env.receive_event(2, 30).await;
    let (mut first, mut second) = (event.clone(), event.clone());
    first.records.truncate(1);
    second.records.remove(0);

    let (a, b) =
        tokio::join!(s.app.handle_batch(first.clone(), deadline()), s.app.handle_batch(second.clone(), deadline()));
    s.env.finish_batch(&first, &a).await;
    s.env.finish_batch(&second, &b).await;
    let deferred: Vec<String> = failed_ids(&a).into_iter().chain(failed_ids(&b)).collect();
    assert!(deferred.len() <= 1, "at most the worker not holding the last file defers: {deferred:?}");
    if let Some(id) = deferred.first() {
        // Redeliver the deferred message now rather than after its delay: it finds the task
        // settled, or (the rare order: the last file's read came first) settles it.
        let pending = s.env.task_record(&record.task_id).await.vault == VaultState::Pending;
        let message = event.records.iter().find(|m| m.message_id.as_deref() == Some(id.as_str())).unwrap();
        let handle = message.receipt_handle.clone().unwrap();
        let visible = s.env.sqs.change_message_visibility().queue_url(s.env.resources.queue_url.clone());
        visible.receipt_handle(handle).visibility_timeout(0).send().await.unwrap();
        let again = s.env.receive_event(1, 30).await;
        let answer = s.app.handle_batch(again.clone(), deadline()).await;
        s.env.finish_batch(&again, &answer).await;
        assert!(failed_ids(&answer).is_empty(), "settled (pending before: {pending})");
    }
    let settled = s.env.task_record(&record.task_id).await;
    assert_eq!((settled.vault, settled.open.as_deref()), (VaultState::Complete, None));
    assert_eq!(settled.version - before.version, 1, "one settle write");
    assert_eq!(s.manifest(&record.task_id).await.files.len(), 2);
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// Two invocations get the same message at the same moment: exactly one claims and copies
/// the file, the other finds it claimed and is retried later. (The emulator serialises
/// DynamoDB requests, so its conditional updates are atomic as in DynamoDB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_copies_of_one_message_at_once_store_the_file_once() {
    let s = setup(None).await;
    let slow = Reply::delayed(Duration::from_secs(3), Reply::generated(MIB as u64, 5, "audio/mpeg"));
    s.server.route("/s/vocal.mp3", slow);
    let url = s.server.url("/s/vocal.mp3");
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("vocal", &url)]);
    s.env.put_record(&record).await;
    s.env.send_jobs(&[job_of(&record, "vocal"), job_of(&record, "vocal")]).await;
    let event = s.env.receive_event(2, 2).await;
    let (mut first, mut second) = (event.clone(), event.clone());
    first.records.truncate(1);
    second.records.remove(0);

    let (first_response, second_response) =
        tokio::join!(s.app.handle_batch(first.clone(), deadline()), s.app.handle_batch(second.clone(), deadline()));
    s.env.finish_batch(&first, &first_response).await;
    s.env.finish_batch(&second, &second_response).await;
    let failed: Vec<String> = [&first_response, &second_response].into_iter().flat_map(failed_ids).collect();
    assert_eq!(failed.len(), 1, "one copy stores the file, the one that found it claimed is retried: {failed:?}");
    let busy = if failed_ids(&first_response).is_empty() { &second } else { &first };
    assert_eq!(failed, vec![busy.records[0].message_id.clone().unwrap()]);
    assert_eq!(s.server.hits("/s/vocal.mp3"), 1);
    let stored = s.env.task_record(&record.task_id).await;
    assert_eq!(stored.files["vocal"].status, FileStatus::Stored);
    assert_eq!(stored.files["vocal"].attempts, 1);

    s.env.make_visible(&busy.records[0]).await;
    let (_, response) = s.run_received(1).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(s.server.hits("/s/vocal.mp3"), 1, "still downloaded once");
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// A file whose upload succeeded but whose record update failed (rewound here: the file is
/// `downloading` under a claim whose lease ran out, as the attempt that stopped left it) is
/// recorded `stored` by the redelivery from the copy under its key, though its URL has
/// expired meanwhile: from the object's full-object checksum for a single streamed PutObject,
/// read back and hashed for a multipart upload.
#[tokio::test]
async fn a_file_stored_but_not_recorded_is_recorded_from_its_copy_on_redelivery() {
    let s = setup(None).await;
    for (name, len, declared) in [("vocal", 300 * 1024, true), ("drums", 9 * MIB + 7, false)] {
        let path = format!("/s/{name}.mp3");
        let reply = if declared { Reply::generated } else { Reply::chunked };
        s.server.route(&path, reply(len as u64, 11, "audio/mpeg"));
        let url = s.server.url(&format!("{path}?X-Amz-Signature=secret"));
        let record = queued_record(&new_task_id(), Family::VocalSeparation, &[(name, &url)]);
        let task = record.task_id.clone();
        let (_, response) = s.run_files(&record, &[name]).await;
        assert_eq!(failed_ids(&response), Vec::<String>::new());
        let stored = s.env.task_record(&task).await;
        assert_eq!(stored.files[name].status, FileStatus::Stored, "{name}: {:?}", stored.files[name].error);
        assert_eq!(s.server.hits(&path), 1, "{name}");

        let mut unrecorded = stored.clone();
        let file = unrecorded.files.get_mut(name).unwrap();
        (file.status, file.claim, file.attempts) = (FileStatus::Downloading, Some("stopped".into()), 1);
        (file.bytes, file.sha256, file.content_type, file.stored_at) = (None, None, None, None);
        file.lease_until = Some(LeaseEnd::at(Timestamp::now().minus(Duration::from_secs(60))));
        s.env.rewrite_record(&stored, &unrecorded).await;
        s.server.route(&path, Reply::Status(403));

        s.env.send_jobs(&[job_of(&unrecorded, name)]).await;
        let (_, response) = s.run_received(1).await;
        assert_eq!(failed_ids(&response), Vec::<String>::new());
        let healed = s.env.task_record(&task).await;
        let entry = &healed.files[name];
        assert_eq!(entry.status, FileStatus::Stored, "{name}: {:?}", entry.error);
        assert_eq!(entry.bytes, Some(len as u64), "{name}");
        assert_eq!(entry.sha256.as_deref(), Some(generated_sha256(len as u64, 11).as_str()), "{name}");
        assert_eq!(entry.content_type.as_deref(), Some("audio/mpeg"), "{name}");
        assert_eq!(entry.attempts, 2, "{name}");
        assert_eq!(s.server.hits(&path), 0, "{name}: the expired URL was not fetched again");
        assert_eq!(healed.vault, VaultState::Complete, "{name}");
    }
}

/// A manifest's fence at `generation`, read at version 1.
fn fence(generation: u64) -> ManifestFence {
    ManifestFence { generation, version: 1 }
}

/// The manifest of a task without files, complete, generated at `at` (Unix ms).
fn manifest_at(task: &str, at: i64) -> Manifest {
    Manifest::of(&queued_record(task, Family::VocalSeparation, &[]), VaultState::Complete, Timestamp::from_unix_ms(at))
}

/// The manifest's conditional writes, as the emulator (like S3) enforces them: create only
/// when there is none, replace only the object read (its ETag), each with its generation.
#[tokio::test]
async fn manifest_writes_are_conditional_on_the_object_read() {
    let env = TestEnv::new().await;
    let ports = env.download_ports();
    let task = new_task_id();
    let key = format!("tasks/{task}/manifest.json");
    let manifest = |at: i64| manifest_at(&task, at);
    let read = |bytes: Vec<u8>| serde_json::from_slice::<Manifest>(&bytes).expect("a manifest");

    assert_eq!(ports.write_manifest(&key, &manifest(1), fence(5), None).await, Ok(Conditional::Applied));
    assert_eq!(ports.write_manifest(&key, &manifest(2), fence(6), None).await, Ok(Conditional::Conflict), "exists");
    let first = ports.head_object(&key).await.unwrap().expect("written");
    assert_eq!(first.metadata.get(GENERATION_METADATA).map(String::as_str), Some("5"));
    assert_eq!(first.metadata.get(VERSION_METADATA).map(String::as_str), Some("1"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));

    assert_eq!(ports.write_manifest(&key, &manifest(3), fence(7), Some(&first.etag)).await, Ok(Conditional::Applied));
    let second = ports.head_object(&key).await.unwrap().expect("written");
    assert_ne!(second.etag, first.etag);
    // A writer that read the first manifest and lands late changes nothing.
    assert_eq!(ports.write_manifest(&key, &manifest(4), fence(6), Some(&first.etag)).await, Ok(Conditional::Conflict));
    assert_eq!(read(env.object(&key).await.unwrap()), manifest(3));
    assert_eq!(ports.head_object(&format!("tasks/{task}/nothing.json")).await, Ok(None));
}

/// An earlier attempt's copy is hashed only while it is the object its HEAD saw (If-Match,
/// as the emulator, like S3, enforces it): one replaced in between (another writer's, of the
/// same length) is not read as this URL's copy, and the failure is retried.
#[tokio::test]
async fn a_copy_replaced_between_its_head_and_its_read_back_is_not_hashed() {
    let env = TestEnv::new().await;
    let ports = env.download_ports();
    let task = new_task_id();
    let key = format!("tasks/{task}/replaced.json");
    let manifest = |at: i64| manifest_at(&task, at);
    assert_eq!(ports.write_manifest(&key, &manifest(1_000), fence(1), None).await, Ok(Conditional::Applied));
    let seen = ports.head_object(&key).await.unwrap().expect("written");
    let first = env.object(&key).await.unwrap();
    let hashed = ports.hash_object(&key, &seen.etag).await.expect("the object seen");
    assert_eq!(hashed, (first.len() as u64, Sha256::digest(&first).into()));

    assert_eq!(
        ports.write_manifest(&key, &manifest(2_000), fence(1), Some(&seen.etag)).await,
        Ok(Conditional::Applied)
    );
    let second = env.object(&key).await.unwrap();
    assert_eq!((second.len(), second != first), (first.len(), true), "replaced by one of the same length");
    let refused = ports.hash_object(&key, &seen.etag).await.expect_err("no longer the object seen");
    assert!(refused.is_retryable(), "{refused:?}");
}

/// A source's `Retry-After` on a 429 or 503, in seconds or as an HTTP-date, is read from
/// the response (and ignored when malformed, or on other statuses).
#[tokio::test]
async fn retry_after_is_read_from_a_busy_source() {
    let server = FileServer::start().await;
    let in_an_hour = Timestamp::now().plus(Duration::from_secs(3600));
    let http_date = {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(in_an_hour.unix_seconds() as u64);
        httpdate::fmt_http_date(t)
    };
    let cases = [
        ("/429", 429, "120".to_owned(), Some((120, 120))),
        // An hour from when the date was written, less however slow the machine has been since.
        ("/503", 503, http_date, Some((3300, 3600))),
        ("/bad", 503, "soon".to_owned(), None),
        ("/410", 410, "120".to_owned(), None),
    ];
    let policy = SourcePolicy::parse(&server.origin()).unwrap();
    let source = HttpSource::new(policy).unwrap();
    for (path, status, retry_after, expected) in cases {
        server.route(path, Reply::RetryAfter { status, retry_after: retry_after.clone() });
        let err = source.open(&server.url(path), 1 << 20).await.unwrap_err();
        let FetchError::Status { status: got, retry_after: asked, .. } = err else { panic!("{path}: {err}") };
        assert_eq!(got, status, "{path}");
        match expected {
            Some((at_least, at_most)) => {
                let asked = asked.unwrap_or_else(|| panic!("{path}: {retry_after:?} not read")).as_secs();
                assert!((at_least..=at_most).contains(&asked), "{path}: {asked} s");
            }
            None => assert_eq!(asked, None, "{path}"),
        }
    }
}

/// A task without files (lyrics here) is settled as ingest records it, and ingest sends its
/// manifest job: the downloader writes its manifest, once.
#[tokio::test]
async fn a_task_without_files_gets_its_manifest() {
    let s = setup(None).await;
    let task = new_task_id();
    let received = Timestamp::now();
    let lyrics = TaskRecord::new(&task, Family::Lyrics, Stage::Complete, 200, "All generated successfully.", received);
    s.env.put_record(&lyrics).await;
    let job = manifest_job(&lyrics).expect("a task without files needs a manifest job");
    s.env.send_jobs(&[job.clone(), job]).await;
    let (_, response) = s.run_received(2).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());

    let manifest = s.manifest(&task).await;
    assert_eq!(
        (manifest.family, manifest.stage, manifest.vault),
        (Family::Lyrics, Stage::Complete, VaultState::Complete)
    );
    assert!(manifest.files.is_empty());
    let recorded = s.env.task_record(&task).await;
    assert_eq!(recorded.manifest_key.as_deref(), Some(format!("tasks/{task}/manifest.json").as_str()));
    assert_eq!(manifest_job(&recorded), None, "no further job once recorded");
    assert_eq!(s.env.queue_depth().await, (0, 0));
}

/// S3's own refusals come back as permanent (recorded as the file's reason) when no retry can
/// change them, and as retryable otherwise.
#[tokio::test]
async fn s3_refusals_that_no_retry_fixes_are_permanent() {
    let env = TestEnv::new().await;
    let ports = env.download_ports();
    let key = format!("tasks/{}/video.mp4", new_task_id());
    let info = ObjectInfo { content_type: Some("video/mp4"), source_sha256: "" };
    let upload = ports.create_multipart(&key, info).await.expect("create an upload");
    let part = bytes::Bytes::from_static(b"tiny");
    let crc = crc32(&part);

    // Part 10001: S3 answers 400 InvalidArgument, whatever the attempt.
    let err = ports.upload_part(&key, &upload, 10_001, part.clone(), crc).await.unwrap_err();
    assert!(err.permanent, "{err}");
    assert!(!CopyError::Storage(err.clone()).is_retryable());
    assert!(err.to_string().starts_with("S3 UploadPart refused the file: 400 InvalidArgument"), "{err}");

    // Two parts below the 5 MiB minimum: 400 EntityTooSmall on completion.
    let mut parts = Vec::new();
    for number in [1, 2] {
        parts.push(ports.upload_part(&key, &upload, number, part.clone(), crc).await.expect("upload a part"));
    }
    let err = ports.complete_multipart(&key, &upload, &parts, crc32(b"tinytiny")).await.unwrap_err();
    assert!(err.permanent, "{err}");
    assert!(err.to_string().contains("400 EntityTooSmall"), "{err}");

    // An upload that does not exist (404 NoSuchUpload) may be retried from the start.
    let err = ports.upload_part(&key, "no-such-upload", 1, part, crc).await.unwrap_err();
    assert!(!err.permanent, "{err}");
    ports.abort_multipart(&key, &upload).await.expect("abort");
}

/// (That a panic while handling one message fails only that message is tested in
/// `functions/download/src/app.rs`: no message makes the function panic.)
#[tokio::test]
async fn unreadable_messages_go_back_at_once_without_failing_the_others() {
    let s = setup(None).await;
    s.server.route("/s/a.mp3", Reply::bytes(media("mp3", 2000, 1), "audio/mpeg"));
    s.server.route("/s/b.mp3", Reply::bytes(media("mp3", 3000, 2), "audio/mpeg"));
    let (a, b) = (s.server.url("/s/a.mp3"), s.server.url("/s/b.mp3"));
    let record = queued_record(&new_task_id(), Family::VocalSeparation, &[("a", &a), ("b", &b)]);
    let task = record.task_id.clone();
    s.env.put_record(&record).await;

    // Bodies no job can be read from go back to the queue, a minute away on a first receive
    // (a deploy under way may bring a build that reads them; else the dead-letter queue keeps
    // them); a job of a task the table does not know is dropped; neither fails anything else.
    let job = |name: &str| serde_json::to_string(&job_of(&record, name)).unwrap();
    let mut unknown_task = job_of(&record, "a");
    unknown_task.task_id = new_task_id();
    let bodies = [
        job("a"),
        "not json at all".to_owned(),
        r#"{"task_id":"../../etc","name":"a","url":"http://x/","key":"k"}"#.to_owned(),
        serde_json::to_string(&unknown_task).unwrap(),
        job("b"),
    ];
    s.env.send_bodies(&bodies).await;
    let (event, response) = s.run_received(bodies.len()).await;
    let failed: Vec<&str> = event
        .records
        .iter()
        .filter(|m| failed_ids(&response).contains(&m.message_id.clone().unwrap_or_default()))
        .filter_map(|m| m.body.as_deref())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|body| [&bodies[1], &bodies[2]].contains(&&body.to_string())), "{failed:?}");
    assert_eq!(s.env.queue_depth().await, (0, 2), "the unreadable two, back on the queue, invisible");
    let stored = s.env.task_record(&task).await;
    assert_eq!((stored.files["a"].status, stored.files["b"].status), (FileStatus::Stored, FileStatus::Stored));
    assert_eq!(stored.vault, VaultState::Complete);
}
