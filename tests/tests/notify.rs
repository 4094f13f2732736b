//! The notify function end to end, proven by a client we did not write: a webhook from an
//! event published on an event bus, which a rule delivers to the notify queue (in the
//! emulator, as the template's `NotifyRule` does), is POSTed to a local receiver, and the official
//! Standard Webhooks library for Python (`standardwebhooks`, pinned in
//! infra/python/webhooks.txt, installed into .venv/webhooks by `make deps`) verifies every
//! request it got. Also: a 404 or 5xx is retried with the same webhook-id and body, a 410 is
//! not (the event moves to the notify dead-letter queue with its reason, or stays to be
//! retried while it cannot), redirects are not followed, plain http to a non-loopback host is
//! refused at start, a secret rotated in Secrets Manager signs once the signer in force is too
//! old, and a secret holding two signs with both (the library accepts either).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use stemvault_aws::events::EventBus;
use stemvault_aws::secrets::{AgePolicy, SecretText, put_secret};
use stemvault_aws::{ConfigError, FromEnv};
use stemvault_notify::domain::DEAD_LETTER_REASON_ATTRIBUTE;
use stemvault_notify::secret::format_secret;
use stemvault_notify::{App, Config};
use stemvault_vault::events::PublishEvents;
use stemvault_vault::events::{self, TaskEvent};
use stemvault_vault::{FileEntry, FileStatus, TaskRecord, Timestamp, VaultState};
use suno_callbacks::{Family, Stage};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
}

/// What the receiver answers, in order (then 200).
#[derive(Debug, Clone)]
enum Reply {
    Status(u16),
    Redirect(String),
}

/// A local webhook receiver on 127.0.0.1:0 that records every request.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    replies: Arc<Mutex<Vec<Reply>>>,
}

impl Receiver {
    async fn start(replies: Vec<Reply>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            replies: Arc::new(Mutex::new(replies.into_iter().rev().collect())),
        };
        let server = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| server.clone().answer(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        receiver
    }

    async fn answer(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
        self.received.lock().unwrap().push(Received { path, headers, body });
        let reply = self.replies.lock().unwrap().pop().unwrap_or(Reply::Status(200));
        let response = match reply {
            Reply::Status(status) => Response::builder().status(status).body(Full::new(Bytes::from_static(b"{}"))),
            Reply::Redirect(location) => {
                Response::builder().status(307).header("location", location).body(Full::new(Bytes::new()))
            }
        };
        Ok(response.unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The verdicts of the Python `standardwebhooks` library on `requests`.
fn python_verdicts(secret: &str, requests: &[Received]) -> Vec<Value> {
    let python = stemvault_tests::repo_dir().join(".venv/webhooks/bin/python");
    assert!(python.is_file(), "{} is missing: run `make deps` (infra/python/webhooks.txt)", python.display());
    let job = json!({
        "secret": secret,
        "requests": requests.iter().map(|r| json!({"headers": r.headers, "body": r.body})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(stemvault_tests::repo_dir().join("tests/python/verify_webhook.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), job.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "verify_webhook.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts.len(), requests.len(), "one verdict per request");
    verdicts
}

/// The notify function with its own queue, dead-letter queue and secret in the emulator.
struct Setup {
    sqs: aws_sdk_sqs::Client,
    /// The bus the events are published on, its rule targeting the queue.
    bus: EventBus,
    queue_url: String,
    dead_letter_queue_url: String,
    /// The function's environment.
    vars: BTreeMap<&'static str, String>,
    secret: String,
    /// The secret's name in the emulator, to rotate it.
    secret_name: String,
    sdk: aws_config::SdkConfig,
    app: App,
}

impl Setup {
    /// With a new `whsec_` secret of 32 random bytes.
    async fn new(notify_url: &str) -> Setup {
        let key: Vec<u8> =
            uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
        Setup::with_secret(notify_url, format_secret(&key)).await
    }

    async fn with_secret(notify_url: &str, secret: String) -> Setup {
        let sdk = stemvault_tests::emulator_sdk_config().await;
        let sqs = stemvault_aws::long_polling_sqs_client(&sdk);
        let base = format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        // As template.yaml makes them, as the local runner does.
        let settings = &stemvault_tests::NOTIFY_QUEUE;
        let (queue_url, queue_arn, dead_letter_queue_url) =
            stemvault_aws::provision::create_queue_with_dlq(&sqs, &format!("{base}-notify"), settings).await.unwrap();
        let bus_name = format!("{base}-events");
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        stemvault_aws::provision::create_event_bus(&events, &bus_name).await.unwrap();
        let rule = format!("{base}-notify");
        stemvault_aws::provision::subscribe_queue(&sdk, &bus_name, &rule, &queue_url, &queue_arn).await.unwrap();
        let bus = EventBus::new(&sdk, &bus_name);
        let secret_name = format!("{base}-notify");
        let arn = put_secret(&sdk, &secret_name, &SecretText::new(secret.clone())).await.unwrap();
        let vars = BTreeMap::from([
            ("NOTIFY_URL", notify_url.to_owned()),
            ("NOTIFY_SECRET_ARN", arn),
            ("QUEUE_URL", queue_url.clone()),
            ("DEAD_LETTER_QUEUE_URL", dead_letter_queue_url.clone()),
        ]);
        let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let app = App::new(config, &sdk).await.expect("notify starts");
        Setup { sqs, bus, queue_url, dead_letter_queue_url, vars, secret, secret_name, sdk, app }
    }

    /// A new instance of the function, with `name` set to `value`.
    async fn restart_with(&mut self, name: &'static str, value: String) {
        self.vars.insert(name, value);
        let config = Config::from_lookup(|k| self.vars.get(k).cloned()).unwrap();
        self.app = App::new(config, &self.sdk).await.expect("notify starts");
    }

    /// What the notify dead-letter queue holds: (body, `reason` attribute) of each message.
    async fn dead_letters(&self) -> Vec<(String, Option<String>)> {
        let reason = |m: &aws_sdk_sqs::types::Message| {
            let attribute = m.message_attributes.as_ref()?.get(DEAD_LETTER_REASON_ATTRIBUTE)?;
            assert_eq!(attribute.data_type(), "String");
            attribute.string_value.clone()
        };
        let messages = self.receive(&self.dead_letter_queue_url, 0).await;
        messages.iter().map(|m| (m.body.clone().unwrap_or_default(), reason(m))).collect()
    }

    /// Up to 10 messages visible on `queue_url` (waiting up to `wait_seconds` for one), with
    /// their system and message attributes.
    async fn receive(&self, queue_url: &str, wait_seconds: i32) -> Vec<aws_sdk_sqs::types::Message> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        out.messages.unwrap_or_default()
    }

    /// Publish `event` as ingest and the downloader do: the bus's rule puts it on the queue.
    async fn send(&self, event: &TaskEvent) {
        self.bus.publish_events(std::slice::from_ref(event)).await.unwrap();
    }

    /// Receive what is visible on the queue, as Lambda's event source would, and run one batch.
    async fn run_batch(&self) -> (Vec<aws_sdk_sqs::types::Message>, SqsBatchResponse) {
        let messages = self.receive(&self.queue_url, 1).await;
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.attributes =
                    m.attributes.iter().flatten().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect();
                record
            })
            .collect();
        let response = self.app.handle_batch(event, Instant::now() + Duration::from_secs(60)).await;
        // What the event source mapping does: delete all but the reported failures.
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for m in messages.iter().filter(|m| !failed.contains(&m.message_id().unwrap_or_default())) {
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        (messages, response)
    }

    /// Check that the retried `message` is kept away for its delay, then end the delay now
    /// (as if its 20 s had passed).
    async fn end_delay(&self, message: &aws_sdk_sqs::types::Message) {
        let out = self.sqs.receive_message().queue_url(&self.queue_url).wait_time_seconds(0).send().await.unwrap();
        assert!(out.messages.unwrap_or_default().is_empty(), "a retried message is kept away for its delay");
        self.sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(message.receipt_handle().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
}

/// A settled task's `Task Vaulted` event.
fn vaulted_event(task_id: &str) -> TaskEvent {
    let at = Timestamp::from_unix_ms(1_795_446_000_000);
    let mut record = TaskRecord::new(task_id, Family::VocalSeparation, Stage::Final, 200, "ok", at);
    let mut vocal = FileEntry::pending("https://cdn.example/v.mp3", format!("tasks/{task_id}/vocal.mp3"), Stage::Final);
    (vocal.status, vocal.bytes, vocal.sha256) = (FileStatus::Stored, Some(42), Some("ab".repeat(32)));
    record.files.insert("vocal".into(), vocal);
    record.generation = 2;
    events::vaulted(&record, VaultState::Complete, "vault-bucket", &format!("tasks/{task_id}/manifest.json"))
}

#[tokio::test]
async fn a_webhook_verifies_with_the_official_python_library() {
    let receiver = Receiver::start(vec![]).await;
    let setup = Setup::new(&receiver.url("/hooks/stemvault")).await;
    let event = vaulted_event("nt1");
    setup.send(&event).await;
    let (received, response) = setup.run_batch().await;
    assert_eq!((received.len(), response.batch_item_failures.len()), (1, 0), "delivered");

    let requests = receiver.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/stemvault");
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["webhook-id"], "nt1.vaulted.2.final");
    assert!(request.headers["webhook-signature"].starts_with("v1,"));
    let now = Timestamp::now().unix_seconds();
    let signed_at: i64 = request.headers["webhook-timestamp"].parse().unwrap();
    assert!((now - 60..=now).contains(&signed_at), "signed now: {signed_at}");

    let verdicts = python_verdicts(&setup.secret, &requests);
    assert_eq!(verdicts[0]["ok"], true, "{verdicts:?}");
    let payload = &verdicts[0]["payload"];
    assert_eq!(payload["type"], "task.vaulted");
    // The event's own time, as EventBridge stamped it in the envelope when it was published
    // (not the time it was signed or sent).
    let envelope: serde_json::Value = serde_json::from_str(received[0].body().unwrap()).unwrap();
    let stamped: Timestamp = envelope["time"].as_str().unwrap().parse().unwrap();
    let published: Timestamp = payload["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(published, stamped, "{} against the envelope's {}", payload["timestamp"], envelope["time"]);
    assert_eq!(payload["data"], serde_json::to_value(&event.detail).unwrap());

    // The check can fail: another secret, or a body changed on the way, does not verify.
    let other = format_secret(&[9; 32]);
    assert_eq!(python_verdicts(&other, &requests)[0]["ok"], false);
    let mut tampered = request.clone();
    tampered.body = tampered.body.replace("complete", "partial");
    assert_eq!(python_verdicts(&setup.secret, &[tampered])[0]["ok"], false);
}

/// The secret template.yaml generates when none is given (32 letters and digits, no `whsec_`)
/// signs webhooks the Python library verifies with it as it is and with `whsec_` in front,
/// as the README tells receivers.
#[tokio::test]
async fn a_webhook_signed_with_the_generated_secret_verifies_with_it_as_given() {
    let receiver = Receiver::start(vec![]).await;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let random = a.as_bytes().iter().chain(b.as_bytes());
    let generated: String = random.map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    let setup = Setup::with_secret(&receiver.url("/hooks"), generated.clone()).await;
    setup.send(&vaulted_event("nt9")).await;
    let (received, response) = setup.run_batch().await;
    assert_eq!((received.len(), response.batch_item_failures.len()), (1, 0), "delivered");
    let requests = receiver.received();
    assert_eq!(requests.len(), 1, "posted");
    for secret in [generated.clone(), format!("whsec_{generated}")] {
        let verdicts = python_verdicts(&secret, &requests);
        assert!(verdicts.iter().all(|v| v["ok"] == true), "{secret}: {verdicts:?}");
    }
}

#[tokio::test]
async fn a_5xx_or_404_is_retried_with_the_same_id_and_body_and_a_410_is_not() {
    // A receiver being deployed (404), then failing (503), then up.
    let receiver = Receiver::start(vec![Reply::Status(404), Reply::Status(503)]).await;
    let setup = Setup::new(&receiver.url("/hook")).await;
    setup.send(&vaulted_event("nt2")).await;
    let (messages, response) = setup.run_batch().await;
    assert_eq!(response.batch_item_failures.len(), 1, "a 404 is retried");
    setup.end_delay(&messages[0]).await;
    let (again, response) = setup.run_batch().await;
    assert_eq!(response.batch_item_failures.len(), 1, "a 503 is retried");
    setup.end_delay(&again[0]).await;

    // The redelivery of the same message is delivered.
    let (redelivered, response) = setup.run_batch().await;
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].message_id, messages[0].message_id, "the same message");
    assert!(response.batch_item_failures.is_empty(), "200 the second time");
    let requests = receiver.received();
    assert_eq!(requests.len(), 3);
    let (first, second) = (&requests[0], &requests[2]);
    assert_eq!(first.headers["webhook-id"], second.headers["webhook-id"], "the same webhook-id on a retry");
    assert_eq!(first.body, second.body, "the same body on a retry");
    let verdicts = python_verdicts(&setup.secret, &requests);
    assert!(verdicts.iter().all(|v| v["ok"] == true), "{verdicts:?}");

    // 410 Gone: not retried; the event moves to the notify dead-letter queue with its reason,
    // to redrive once the receiver is fixed, and leaves the notify queue.
    let refusing = Receiver::start(vec![Reply::Status(410)]).await;
    let setup = Setup::new(&refusing.url("/hook")).await;
    setup.send(&vaulted_event("nt3")).await;
    let (received, response) = setup.run_batch().await;
    assert_eq!((received.len(), response.batch_item_failures.len()), (1, 0));
    let (again, _) = setup.run_batch().await;
    assert!(again.is_empty(), "deleted from the notify queue, never delivered again");
    assert_eq!(refusing.received().len(), 1);
    let queued = received[0].body.clone().unwrap();
    assert_eq!(setup.dead_letters().await, [(queued, Some("status_410".to_owned()))], "the event as queued");
}

/// A 410'd event that cannot be put on the dead-letter queue is not deleted: it stays on the
/// notify queue, retried like a failed post, and reaches the dead-letter queue once it can.
#[tokio::test]
async fn a_410_that_cannot_be_dead_lettered_is_kept_and_retried() {
    let refusing = Receiver::start(vec![Reply::Status(410), Reply::Status(410)]).await;
    let mut setup = Setup::new(&refusing.url("/hook")).await;
    let dead_letter_queue_url = setup.dead_letter_queue_url.clone();
    setup.restart_with("DEAD_LETTER_QUEUE_URL", format!("{dead_letter_queue_url}-missing")).await;
    setup.send(&vaulted_event("nt8")).await;
    let (messages, response) = setup.run_batch().await;
    assert_eq!((messages.len(), response.batch_item_failures.len()), (1, 1), "kept for a retry");
    setup.end_delay(&messages[0]).await;

    setup.restart_with("DEAD_LETTER_QUEUE_URL", dead_letter_queue_url).await;
    let (again, response) = setup.run_batch().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, messages[0].message_id, "the same message");
    assert!(response.batch_item_failures.is_empty(), "dead-lettered, then deleted");
    assert_eq!(refusing.received().len(), 2, "posted again on the retry");
    let queued = messages[0].body.clone().unwrap();
    assert_eq!(setup.dead_letters().await, [(queued, Some("status_410".to_owned()))]);
    assert!(setup.run_batch().await.0.is_empty(), "left the notify queue");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(vec![]).await;
    let elsewhere = receiver.url("/elsewhere");
    receiver.replies.lock().unwrap().push(Reply::Redirect(elsewhere));
    let setup = Setup::new(&receiver.url("/hook")).await;
    setup.send(&vaulted_event("nt4")).await;
    let (_, response) = setup.run_batch().await;
    assert_eq!(response.batch_item_failures.len(), 1, "a redirect is not a delivery: retried");
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"], "the redirect's target never got the webhook");
}

#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused_at_start() {
    for url in ["http://hooks.example.com/x", "http://10.0.0.7/x", "ftp://127.0.0.1/x"] {
        let vars = BTreeMap::from([
            ("NOTIFY_URL", url.to_owned()),
            ("NOTIFY_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:000000000000:secret:s".to_owned()),
            ("QUEUE_URL", "http://127.0.0.1:1/q".to_owned()),
            ("DEAD_LETTER_QUEUE_URL", "http://127.0.0.1:1/q-dlq".to_owned()),
        ]);
        let err = Config::from_lookup(|k| vars.get(k).cloned()).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "NOTIFY_URL", .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn a_secret_rotated_in_secrets_manager_signs_once_the_signer_is_too_old() {
    let receiver = Receiver::start(vec![]).await;
    let mut setup = Setup::new(&receiver.url("/hook")).await;
    // An instance whose signer is too old at once: every message reads the secret first.
    setup.app = setup.app.clone().with_secret_policy(AgePolicy { max_age: Duration::ZERO });
    let old = setup.secret.clone();
    setup.send(&vaulted_event("nt5")).await;
    assert_eq!(setup.run_batch().await.1.batch_item_failures.len(), 0);

    let new = format_secret(&[5; 32]);
    put_secret(&setup.sdk, &setup.secret_name, &SecretText::new(new.clone())).await.unwrap();
    setup.send(&vaulted_event("nt6")).await;
    assert_eq!(setup.run_batch().await.1.batch_item_failures.len(), 0);

    let requests = receiver.received();
    assert_eq!(requests.len(), 2);
    let ok =
        |secret: &str| -> Vec<Value> { python_verdicts(secret, &requests).iter().map(|v| v["ok"].clone()).collect() };
    assert_eq!(ok(&old), [true, false], "the first signed with the old secret, the second not");
    assert_eq!(ok(&new), [false, true], "the second signed with the rotated one");

    // During a rotation the secret holds both: every webhook carries both signatures, and the
    // Standard Webhooks verifier accepts it with either secret.
    put_secret(&setup.sdk, &setup.secret_name, &SecretText::new(format!("{new} {old}"))).await.unwrap();
    setup.send(&vaulted_event("nt7")).await;
    assert_eq!(setup.run_batch().await.1.batch_item_failures.len(), 0);
    let requests = receiver.received();
    let third = &requests[2..];
    assert_eq!(third[0].headers["webhook-signature"].matches("v1,").count(), 2);
    for secret in [&old, &new] {
        assert_eq!(python_verdicts(secret, third)[0]["ok"], true);
    }
}
