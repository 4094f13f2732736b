//! The runner's own parts over real sockets and the emulator's real SQS API: the HTTP server
//! with a recording handler, and one poller with a handler that fails one message.
//! Run under `infra/local/emulator.sh` (make test does).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::QueueAttributeName;
use lambda_http::RequestExt;
use stemvault_local::http::LambdaHttp;
use stemvault_local::poller::{BatchHandler, QueueSource};
use stemvault_local::shutdown::Shutdown;
use tokio::net::TcpListener;

/// What the handler saw of one request.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query_b: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl LambdaHttp for Recorder {
    async fn call(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        self.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query_b: req.query_string_parameters().first("b").map(str::to_owned),
            signature: req.headers().get("x-webhook-signature").map(|v| v.to_str().unwrap().to_owned()),
            body: req.body().to_vec(),
        });
        if req.uri().path() == "/panic" {
            panic!("handler bug");
        }
        lambda_http::Response::builder()
            .status(202)
            .header("x-answer", "yes")
            .body(lambda_http::Body::Text(format!("{{\"path\":\"{}\"}}", req.uri().path())))
            .unwrap()
    }
}

#[tokio::test]
async fn server_converts_requests_and_responses_and_survives_a_panicking_handler() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let server = tokio::spawn(stemvault_local::http::serve_lambda(listener, recorder.clone(), shutdown.signal()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let response = http
        .post(format!("{base}/callback/tok?a=1&b=two%20words"))
        .header("X-Webhook-Signature", "c2ln")
        .body(vec![0xff, 0x00, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-answer"], "yes");
    assert_eq!(response.text().await.unwrap(), r#"{"path":"/callback/tok"}"#);

    let crashed = http.get(format!("{base}/panic")).send().await.unwrap();
    assert_eq!(crashed.status().as_u16(), 500);
    let after = http.get(format!("{base}/tasks/t1")).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 202, "the server keeps serving after a handler panic");

    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        Seen {
            method: "POST".into(),
            path: "/callback/tok".into(),
            query_b: Some("two words".into()),
            signature: Some("c2ln".into()),
            body: vec![0xff, 0x00, 0x01],
        }
    );
    assert_eq!(seen.len(), 3);

    shutdown.stop();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap();
    assert!(reqwest::get(format!("{base}/tasks/t1")).await.is_err(), "nothing listens after stop");
}

/// Records each batch and reports the message whose body is "fail" as failed.
#[derive(Default)]
struct FailOne {
    batches: Mutex<Vec<SqsEvent>>,
}

impl BatchHandler for FailOne {
    async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        assert!(deadline > Instant::now() + Duration::from_secs(14 * 60));
        let mut response = SqsBatchResponse::default();
        for record in &event.records {
            if record.body.as_deref() == Some("fail") {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap();
                response.batch_item_failures.push(failure);
            }
        }
        self.batches.lock().unwrap().push(event);
        response
    }
}

async fn queue_counts(env: &stemvault_tests::TestEnv) -> (u64, u64) {
    let out = env
        .sqs
        .get_queue_attributes()
        .queue_url(&env.resources.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attributes = out.attributes.unwrap();
    let count = |name| attributes.get(&name).unwrap().parse::<u64>().unwrap();
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

#[tokio::test]
async fn poller_hands_lambda_style_batches_over_and_deletes_all_but_failures() {
    let env = stemvault_tests::TestEnv::new().await;
    for body in ["one", "fail", "three"] {
        env.sqs.send_message().queue_url(&env.resources.queue_url).message_body(body).send().await.unwrap();
    }
    let handler = Arc::new(FailOne::default());
    let shutdown = Shutdown::new();
    let source = QueueSource {
        name: "download",
        queue_url: env.resources.queue_url.clone(),
        queue_arn: env.resources.queue_arn.clone(),
        region: "us-east-1".into(),
        batch_size: stemvault_local::poller::DOWNLOAD_BATCH_SIZE,
        invocation_budget: stemvault_local::poller::DOWNLOAD_INVOCATION_BUDGET,
    };
    let poller =
        tokio::spawn(stemvault_local::poller::poll(env.sqs.clone(), source, handler.clone(), shutdown.signal()));

    let started = Instant::now();
    while handler.batches.lock().unwrap().iter().map(|b| b.records.len()).sum::<usize>() < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "the poller did not receive all messages");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.stop();
    tokio::time::timeout(Duration::from_secs(10), poller).await.expect("poller stops").unwrap();

    let batches = handler.batches.lock().unwrap().clone();
    let records: Vec<_> = batches.iter().flat_map(|b| b.records.iter()).collect();
    let mut bodies: Vec<_> = records.iter().map(|r| r.body.clone().unwrap()).collect();
    bodies.sort();
    assert_eq!(bodies, ["fail", "one", "three"]);
    for record in &records {
        assert_eq!(record.attributes.get("ApproximateReceiveCount").map(String::as_str), Some("1"));
        assert!(record.attributes.contains_key("SentTimestamp"), "{:?}", record.attributes);
        assert_eq!(record.event_source_arn.as_deref(), Some(env.resources.queue_arn.as_str()));
        assert!(record.receipt_handle.is_some());
    }
    // The two settled messages are gone; the failed one waits out its visibility timeout.
    assert_eq!(queue_counts(&env).await, (0, 1));
}
