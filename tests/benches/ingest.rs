//! `make bench-micro`: the ingest handler's throughput and latency against the local emulator,
//! and its own overhead (the same handler over in-memory ports, no AWS calls).
//!
//! Run under `infra/local/emulator.sh` (as `make bench-micro` does); without an emulator only the
//! in-memory part runs. Bounded: a few hundred requests per scenario.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request};
use stemvault_aws::secrets::SecretText;
use stemvault_ingest::memory::MemoryPorts;
use stemvault_ingest::secret::CallbackSecret;
use stemvault_ingest::{App, Config};
use stemvault_tests::{TestEnv, fixture};
use suno_callbacks::signature::sign;

const REQUESTS: usize = 200;
const CONCURRENCY: usize = 4;
const KEY: &str = "bench-key";
const FIXTURE: &str = "separate-vocals__kie__200-split_stem.json";
const FIXTURE_TASK: &str = "e649edb7abfd759285bd41a47a634b10";

/// Anything that answers a callback request.
trait Endpoint: Send + Sync + 'static {
    fn call(&self, req: Request) -> impl Future<Output = StatusCode> + Send;
}

impl<P: stemvault_ingest::domain::Ports + Send + Sync + 'static> Endpoint for App<P> {
    async fn call(&self, req: Request) -> StatusCode {
        self.handle(req).await.status()
    }
}

fn config(table: &str, bucket: &str, queue: &str, secret_arn: &str, bus: &str) -> Config {
    Config {
        table_name: table.into(),
        bucket_name: bucket.into(),
        queue_url: queue.into(),
        callback_secret_arn: secret_arn.into(),
        allow_unauthenticated: false,
        max_body_bytes: 1024 * 1024,
        signature_tolerance: Duration::from_secs(300),
        reconcile_after: Duration::from_secs(600),
        event_bus_name: bus.into(),
    }
}

/// The callback secret: [`KEY`].
fn secret() -> CallbackSecret {
    CallbackSecret { hmac_keys: vec![KEY.into()], callback_tokens: vec![] }
}

/// One split_stem callback (12 files) per task id, each task distinct.
fn bodies(run: &str) -> Vec<(String, Vec<u8>)> {
    let template = String::from_utf8(fixture(FIXTURE)).expect("UTF-8 fixture");
    (0..REQUESTS)
        .map(|i| {
            let task = format!("{run}{i:05}");
            let body = template.replace(FIXTURE_TASK, &task).into_bytes();
            (task, body)
        })
        .collect()
}

fn signed(task: &str, body: &[u8]) -> Request {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    lambda_http::http::Request::builder()
        .method("POST")
        .uri("/callback")
        .header("X-Webhook-Timestamp", ts.to_string())
        .header("X-Webhook-Signature", sign(KEY.as_bytes(), task, ts))
        .body(Body::from(body.to_vec()))
        .expect("request")
}

struct Report {
    wall: Duration,
    latencies: Vec<Duration>,
    not_ok: usize,
}

/// Send every body once, `CONCURRENCY` at a time.
async fn drive<E: Endpoint>(endpoint: Arc<E>, bodies: Arc<Vec<(String, Vec<u8>)>>) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (endpoint, bodies, next) = (endpoint.clone(), bodies.clone(), next.clone());
        workers.spawn(async move {
            let mut mine = Vec::new();
            let mut not_ok = 0;
            while let Some((task, body)) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let req = signed(task, body);
                let sent = Instant::now();
                if endpoint.call(req).await != StatusCode::OK {
                    not_ok += 1;
                }
                mine.push(sent.elapsed());
            }
            (mine, not_ok)
        });
    }
    let mut latencies = Vec::new();
    let mut not_ok = 0;
    for (mine, failed) in workers.join_all().await {
        latencies.extend(mine);
        not_ok += failed;
    }
    latencies.sort();
    Report { wall: started.elapsed(), latencies, not_ok }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn print(name: &str, r: &Report) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<58} {:>9.1} {:>10.3} {:>10.3} {:>6}",
        r.latencies.len() as f64 / r.wall.as_secs_f64(),
        ms(percentile(&r.latencies, 0.50)),
        ms(percentile(&r.latencies, 0.99)),
        r.not_ok
    );
}

/// New callbacks first, then the same bodies again (every one a duplicate).
async fn scenarios<E: Endpoint>(label: &str, endpoint: E) {
    let endpoint = Arc::new(endpoint);
    let run = format!("b{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let bodies = Arc::new(bodies(&run));
    print(&format!("{label}: new callbacks"), &drive(endpoint.clone(), bodies.clone()).await);
    print(&format!("{label}: duplicate deliveries"), &drive(endpoint, bodies).await);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "ingest: {REQUESTS} signed split_stem callbacks (12 files each) per scenario, {CONCURRENCY} concurrent"
        );
        println!("{:<58} {:>9} {:>10} {:>10} {:>6}", "scenario", "req/s", "p50 ms", "p99 ms", "non-200");

        let ports = MemoryPorts::new().with_secret(&secret());
        let in_memory = App::with_ports(&config("t", "b", "q", "memory", "e"), ports).await;
        scenarios("handler overhead (in-memory ports)", in_memory).await;

        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        if !stemvault_aws::provision::is_local_endpoint(&endpoint) {
            println!("emulator: skipped (run under infra/local/emulator.sh, as `make bench-micro` does)");
            return;
        }
        let env = TestEnv::new().await;
        let r = &env.resources;
        let text = SecretText::new(secret().to_json());
        let arn = stemvault_aws::secrets::put_secret(&env.config, &format!("{}-callback", r.table_name), &text)
            .await
            .expect("put the callback secret");
        let app =
            App::new(config(&r.table_name, &r.bucket_name, &r.queue_url, &arn, &r.event_bus_name), &env.config).await;
        scenarios("local emulator (DynamoDB, S3, SQS)", app).await;
        println!(
            "note: the emulator's SendMessageBatch slows down with every message already on its queue \
             (nothing consumes them here), so its figures for new callbacks grow with the run"
        );
    });
}
