//! Issue 11 part 4 against the emulator and a fake provider (tests/src/fake_provider.rs): a
//! file whose URL answers 403 is copied from the fresh link kie's `common/download-url` gives
//! (the key read from its secret, as at a cold start), and the record keeps the original URL;
//! a key rotated at the provider and in the secret is re-read on the first 401 and the link
//! asked for again; a provider that refuses, or link refresh off, leaves the file failed as
//! before, its reason naming what happened; a refusal that may pass (no credits) has a later
//! poll reopen the file, and the copy is made once links come again.

use std::time::Duration;

use sha2::{Digest, Sha256};
use stemvault_aws::provider::{self, ProviderConfig};
use stemvault_aws::secrets::SecretText;
use stemvault_aws::{ConfigError, Env};
use stemvault_tests::TestEnv;
use stemvault_tests::download::{job_of, queued_record};
use stemvault_tests::fake_provider::{FILE_BYTES, FakeProvider};
use stemvault_vault::{FileStatus, TaskRecord, VaultState};
use suno_callbacks::Family;

const KEY: &str = "fresh-links-test-key";

/// The download function's configuration: sources from the fake provider's origin only,
/// `PROVIDER` and `PROVIDER_BASE_URL` as given, and the key `api_key` put in the emulator's
/// Secrets Manager and read back through `PROVIDER_SECRET_ARN` (None: no secret).
async fn config(
    env: &TestEnv,
    fake: &FakeProvider,
    provider_name: &str,
    api_key: Option<&str>,
) -> Result<stemvault_download::Config, ConfigError> {
    let mut config = env.download_config(&fake.origin(), None);
    let secret_arn = match api_key {
        Some(key) => {
            let name = format!("{}-provider", env.resources.table_name);
            let text = SecretText::new(format!(r#"{{"api_key": "{key}"}}"#));
            Some(stemvault_aws::secrets::put_secret(&env.config, &name, &text).await.expect("the provider secret"))
        }
        None => None,
    };
    let origin = fake.origin();
    config.provider = ProviderConfig::read(&Env::new(provider::ENVIRONMENT, |name| match name {
        "PROVIDER" => Some(provider_name.to_owned()),
        "PROVIDER_BASE_URL" => Some(origin.clone()),
        "PROVIDER_SECRET_ARN" => secret_arn.clone(),
        _ => None,
    }))?;
    Ok(config)
}

/// A task with one queued file, `vocal`, at the fake provider, whose URL has expired.
async fn expired_task(env: &TestEnv, fake: &FakeProvider) -> TaskRecord {
    let task = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("{}/files/{task}/vocal.mp3?sig=old", fake.origin());
    fake.expire(&task, "vocal.mp3");
    let record = queued_record(&task, Family::VocalSeparation, &[("vocal", &url)]);
    env.put_record(&record).await;
    env.send_jobs(&[job_of(&record, "vocal")]).await;
    record
}

/// One batch of the download function over the queue, by an instance started now.
async fn download(env: &TestEnv, config: stemvault_download::Config) {
    run(env, &env.download_app_with(config).await).await;
}

/// One batch of `app` over the queue (run again until an expired URL is failed so).
async fn run(env: &TestEnv, app: &stemvault_download::App) {
    let event = env.receive_event(1, 60).await;
    let response = env.run_download(app, &event).await;
    let response = env.run_until_expiry_confirmed(app, event, response).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
}

#[tokio::test]
async fn a_403_file_is_copied_from_a_fresh_link_and_stored() {
    let env = TestEnv::new().await;
    let fake = FakeProvider::start(KEY).await;
    let record = expired_task(&env, &fake).await;
    let original = record.files["vocal"].url.clone();

    download(&env, config(&env, &fake, "kie", Some(KEY)).await.expect("configured")).await;

    let after = env.task_record(&record.task_id).await;
    let file = &after.files["vocal"];
    assert_eq!(file.status, FileStatus::Stored, "{:?}", file.error);
    assert_eq!(file.url, original, "the record keeps the original URL");
    assert_eq!(file.bytes, Some(FILE_BYTES as u64));
    assert_eq!(after.vault, VaultState::Complete);
    let object = env.object(&file.key).await.expect("the copy");
    assert_eq!(Some(hex::encode(Sha256::digest(&object))), file.sha256);
    assert_eq!(fake.file_hits(&record.task_id, "vocal.mp3"), 1, "the original, which answered 403");
    assert_eq!(fake.fresh_link_requests(), [original], "one fresh link, for the original URL");
}

#[tokio::test]
async fn a_key_rotated_at_the_provider_and_in_the_secret_is_used_after_the_first_401() {
    let env = TestEnv::new().await;
    let fake = FakeProvider::start(KEY).await;
    let record = expired_task(&env, &fake).await;
    // An instance started with the key (read at its start).
    let warm = env.download_app_with(config(&env, &fake, "kie", Some(KEY)).await.expect("configured")).await;

    // The operator rotates the key at the provider, then in the secret; the instance is warm.
    const ROTATED: &str = "fresh-links-test-key-2";
    fake.rotate_key(ROTATED);
    let name = format!("{}-provider", env.resources.table_name);
    let text = SecretText::new(format!(r#"{{"api_key": "{ROTATED}"}}"#));
    stemvault_aws::secrets::put_secret(&env.config, &name, &text).await.expect("the rotated secret");

    run(&env, &warm).await;
    let file = env.task_record(&record.task_id).await.files["vocal"].clone();
    assert_eq!(file.status, FileStatus::Stored, "{:?}", file.error);
    assert_eq!(fake.fresh_links_refused(), 1, "the old key, refused once");
    assert_eq!(fake.fresh_link_requests().len(), 1, "the refused request is not recorded, the retried one is");
}

#[tokio::test]
async fn no_fresh_link_leaves_the_file_failed_as_expired_with_the_reason() {
    let env = TestEnv::new().await;
    let fake = FakeProvider::start(KEY).await;

    // A wrong key: the provider answers 401, and the reason says which setting to fix.
    let wrong = expired_task(&env, &fake).await;
    download(&env, config(&env, &fake, "kie", Some("not-the-key")).await.expect("configured")).await;
    let file = env.task_record(&wrong.task_id).await.files["vocal"].clone();
    assert_eq!(file.status, FileStatus::Failed);
    assert_eq!(
        file.error.as_deref(),
        Some(
            "source answered 403 Forbidden; no fresh link: the provider answered 401 (unauthorized: check the API \
             key in PROVIDER_SECRET_ARN): You do not have access permissions"
        )
    );
    assert!(stemvault_vault::reconcile::failed_by_expiry(&file), "still an expired file for the reconciler");
    assert!(stemvault_vault::reconcile::awaits_retry(&file), "the key may be fixed: a later poll asks again");
    assert_eq!(env.task_record(&wrong.task_id).await.vault, VaultState::Partial);

    // The provider's own refusal (402, insufficient credits).
    fake.fail_fresh_links(Some(402));
    let broke = expired_task(&env, &fake).await;
    download(&env, config(&env, &fake, "kie", Some(KEY)).await.expect("configured")).await;
    let file = env.task_record(&broke.task_id).await.files["vocal"].clone();
    let reason = "source answered 403 Forbidden; no fresh link: the provider answered 402 (insufficient credits): \
                  scripted failure";
    assert_eq!(file.error.as_deref(), Some(reason));
    assert!(stemvault_vault::reconcile::awaits_retry(&file), "credits may be bought: a later poll asks again");
    // (A request with a wrong key is refused before the fake provider records it.) One link
    // asked for on each receive up to the one that confirms the expiry.
    let confirmed = stemvault_download::domain::EXPIRY_CONFIRMED_ON_RECEIVE as usize;
    assert_eq!(fake.fresh_link_requests().len(), confirmed);

    // Off (no key; sunoapi): as before, and the provider is not asked.
    for (provider_name, key) in [("kie", None), ("sunoapi", Some(KEY))] {
        let off = expired_task(&env, &fake).await;
        download(&env, config(&env, &fake, provider_name, key).await.expect("configured")).await;
        let error = env.task_record(&off.task_id).await.files["vocal"].error.clone();
        assert_eq!(error.as_deref(), Some("source answered 403 Forbidden"), "{provider_name}");
        let file = env.task_record(&off.task_id).await.files["vocal"].clone();
        assert!(!stemvault_vault::reconcile::awaits_retry(&file), "no link was asked for: none is awaited");
    }
    assert_eq!(fake.fresh_link_requests().len(), confirmed, "not asked when off");
}

/// A file the provider gave no fresh link for (no credits, here) is failed as expired and its
/// task watched; the first poll after the file's wait (an hour; the test backdates the
/// failure) repeats the file's URL, reopens the file and queues it; failed again, the task is
/// watched again and the next wait is two hours; once the provider gives links, the copy
/// from a fresh link completes the task.
#[tokio::test]
async fn a_file_without_a_fresh_link_is_reopened_by_a_later_poll_and_copied() {
    use stemvault_vault::register::Registration;
    use stemvault_vault::{Timestamp, reconcile};
    use suno_callbacks::TaskId;

    let env = TestEnv::new().await;
    let fake = FakeProvider::start(KEY).await;
    let task = uuid::Uuid::new_v4().simple().to_string();
    fake.add_task(&task, Family::VocalSeparation, vec![stemvault_tests::fake_provider::Answer::Success]);
    let registration = Registration { family: Family::VocalSeparation, client_ref: None };
    let task_id = TaskId::parse(&task).unwrap();
    env.put_record(&registration.record(&task_id, Timestamp::now(), Duration::from_secs(600))).await;
    let name = format!("{}-provider-polls", env.resources.table_name);
    let secret = SecretText::new(format!(r#"{{"api_key": "{KEY}"}}"#));
    let secret_arn = stemvault_aws::secrets::put_secret(&env.config, &name, &secret).await.expect("the secret");
    let reconciler = stemvault_reconciler::App::new(
        env.reconciler_config(&[
            ("PROVIDER", "kie".to_owned()),
            ("PROVIDER_BASE_URL", fake.origin()),
            ("PROVIDER_SECRET_ARN", secret_arn),
        ]),
        &env.config,
    )
    .await
    .expect("the reconciler starts");
    let poll = || async {
        env.make_due(&task).await;
        // On the heap: the test's own future would outgrow a test thread's stack.
        Box::pin(reconciler.run_within("test", Duration::from_secs(30))).await.expect("a run")
    };
    let downloads = config(&env, &fake, "kie", Some(KEY)).await.expect("configured");
    let download_all = || async {
        let app = env.download_app_with(downloads.clone()).await;
        for response in env.download_all_confirming_expiry(&app).await {
            assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
        }
        assert_eq!(env.queue_depth().await.0, 0, "the queue emptied");
    };

    assert_eq!(poll().await.results, 1);
    let vocal = env.task_record(&task).await.files["vocal"].url.clone();
    fake.expire(&task, vocal.rsplit('/').next().unwrap());
    fake.fail_fresh_links(Some(402));
    download_all().await;
    let partial = env.task_record(&task).await;
    let file = &partial.files["vocal"];
    assert!(reconcile::awaits_retry(file), "{:?}", file.error);
    assert_eq!((partial.vault, partial.reconcile.is_some()), (VaultState::Partial, true), "watched");

    // Move the file's failure `ago` into the past, as waiting would.
    let backdate_failure = |ago: Duration| {
        let (env, task) = (&env, &task);
        async move {
            let before = env.task_record(task).await;
            let mut waited = before.clone();
            let file = waited.files.get_mut("vocal").unwrap();
            file.failed_at = Some(file.failed_at.expect("failed at").minus(ago));
            waited.version += 1;
            env.rewrite_record(&before, &waited).await;
        }
    };
    let hour = reconcile::FIRST_RELINK_AFTER;

    // A poll before the file's wait is over leaves it failed.
    assert_eq!(poll().await.polls, 1);
    assert_eq!(env.task_record(&task).await.files["vocal"].status, FileStatus::Failed);
    assert_eq!(env.queue_depth().await, (0, 0));
    // An hour on: the poll repeats the URL, the file is reopened and queued; still no credits.
    backdate_failure(hour).await;
    assert_eq!(poll().await.polls, 1);
    let reopened = env.task_record(&task).await;
    assert_eq!((reopened.files["vocal"].status, reopened.vault), (FileStatus::Queued, VaultState::Pending));
    download_all().await;
    let again = env.task_record(&task).await;
    assert_eq!((again.files["vocal"].status, again.files["vocal"].relinks), (FileStatus::Failed, 1));
    assert_eq!((again.vault, again.reconcile.is_some()), (VaultState::Partial, true), "watched again");

    // Credits bought. The next wait is two hours: not over after one.
    fake.fail_fresh_links(None);
    backdate_failure(hour).await;
    assert_eq!(poll().await.polls, 1);
    assert_eq!(env.task_record(&task).await.files["vocal"].status, FileStatus::Failed);
    backdate_failure(hour).await;
    assert_eq!(poll().await.polls, 1);
    download_all().await;

    let complete = env.task_record(&task).await;
    let file = &complete.files["vocal"];
    assert_eq!((file.status, file.relinks, file.url.as_str()), (FileStatus::Stored, 2, vocal.as_str()));
    assert_eq!(complete.vault, VaultState::Complete);
    assert!(env.object(&file.key).await.is_some(), "the copy");
    // Refused on each receive of two failures (each confirmed on its third), then given.
    let confirmed = stemvault_download::domain::EXPIRY_CONFIRMED_ON_RECEIVE as usize;
    assert_eq!(fake.fresh_link_requests(), vec![vocal; 2 * confirmed + 1], "refused twice, then given");
}
