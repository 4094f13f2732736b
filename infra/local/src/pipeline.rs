//! The whole pipeline in one process: provision the emulator's resources and the callback
//! secret, build each function's `Config` (overlay over environment) and `App`, serve ingest +
//! results over HTTP and run the download pollers, until stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};
use stemvault_aws::FromEnv;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client_auth::ClientAuth;
use crate::http::{LambdaHttp, Route};
use crate::poller::{BatchHandler, QueueSource};
use crate::run_info::RunInfo;
use crate::settings::{Overlay, generate_dev_key};
use crate::shutdown::Shutdown;

/// How many download pollers run side by side (Lambda runs several batches concurrently too).
pub const DEFAULT_POLLERS: usize = 2;

/// How often the local runner sweeps for orphaned files (the deployed schedule: 5 minutes).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "AWS_ENDPOINT_URL must point at the local emulator (http://127.0.0.1:…), got {0:?}; \
         run under infra/local/emulator.sh (make run does)"
    )]
    NotLocal(String),
    #[error("creating the emulator's table, bucket and queues failed: {0}")]
    Provision(String),
    #[error("the {function} function's configuration is invalid: {message}")]
    Config { function: &'static str, message: String },
    /// A setting of the runner's own (not a function's) is invalid.
    #[error("make run's settings are invalid: {0}")]
    Runner(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Refuse to create anything anywhere but on a local emulator.
pub fn local_endpoint(env: &impl Fn(&str) -> Option<String>) -> Result<String, PipelineError> {
    let endpoint = env("AWS_ENDPOINT_URL").unwrap_or_default();
    if stemvault_aws::provision::is_local_endpoint(&endpoint) {
        Ok(endpoint)
    } else {
        Err(PipelineError::NotLocal(endpoint))
    }
}

pub struct PipelineOptions {
    /// Resource name prefix (`stemvault-local` for `make run`; unique per test).
    pub base: String,
    /// The bound HTTP listener (127.0.0.1:PORT).
    pub listener: TcpListener,
    /// The demo file server origin, added to the default allowed download sources.
    pub file_server_origin: String,
    pub pollers: usize,
    /// Print each event on the bus as one line (`make run`; not the in-process demo's, which
    /// shows its own task's events).
    pub print_events: bool,
}

/// A running pipeline.
pub struct Pipeline {
    pub info: RunInfo,
    /// The development HMAC key generated because no callback auth was configured.
    pub generated_key: Option<String>,
    /// The effective `ALLOWED_SOURCE_HOSTS` (the overlay always sets it).
    pub allowed_source_hosts: String,
    pub sdk: aws_config::SdkConfig,
    /// Webhooks (with `NOTIFY_URL` set).
    pub notify: Option<NotifySummary>,
    /// Every event on the bus, one line each (`crate::events`).
    pub events: crate::events::EventLog,
    /// The provider the reconciler polls (the built-in fake one unless `PROVIDER_BASE_URL`).
    pub provider: crate::reconcile::ProviderSetup,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
}

/// What the runner says about its webhooks.
#[derive(Clone)]
pub struct NotifySummary {
    pub notify_url: String,
    pub queue_url: String,
    /// The target of the local bus's rule on source `stemvault`.
    pub queue_arn: String,
    /// The signing secret, when the runner generated it (unset `NOTIFY_SECRET`).
    pub generated_secret: Option<String>,
}

impl std::fmt::Debug for NotifySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySummary")
            .field("notify_url", &stemvault_vault::shown::loggable_str(&self.notify_url))
            .field("queue_url", &self.queue_url)
            .field("queue_arn", &self.queue_arn)
            .field("generated_secret", &crate::client_auth::redacted(&self.generated_secret))
            .finish()
    }
}

/// Ingest and results behind one HTTP server, routed as API Gateway routes them.
struct HttpFunctions {
    ingest: stemvault_ingest::App,
    results: stemvault_results::App,
}

impl LambdaHttp for HttpFunctions {
    async fn call(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        match crate::http::route(req.uri().path()) {
            Route::Results => self.results.handle(req).await,
            Route::Ingest => self.ingest.handle(req).await,
        }
    }
}

impl BatchHandler for stemvault_download::App {
    async fn handle_batch(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        stemvault_download::App::handle(self, crate::poller::lambda_invocation(event, deadline)).await
    }
}

/// A function's configuration refused, for `map_err`.
fn config_error<E: std::fmt::Display>(function: &'static str) -> impl FnOnce(E) -> PipelineError {
    move |e| PipelineError::Config { function, message: e.to_string() }
}

impl Pipeline {
    /// Provision and start everything; `env` is the process environment (or a test's).
    pub async fn start(
        options: PipelineOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Pipeline, PipelineError> {
        let endpoint = local_endpoint(&env)?;
        // Unauthenticated callbacks are this runner's alone: the function's config never reads it.
        let allow_unauthenticated = stemvault_aws::Env::new(&["ALLOW_UNAUTHENTICATED"], &env)
            .flag("ALLOW_UNAUTHENTICATED")
            .map_err(|e| PipelineError::Runner(e.to_string()))?;
        let sdk = stemvault_aws::sdk_config().await;
        let resources =
            stemvault_aws::provision::provision(&sdk, &options.base).await.map_err(PipelineError::Provision)?;
        let mut overlay = Overlay::new(&resources, &env, &options.file_server_origin, generate_dev_key);
        let secret_arn = put_callback_secret(&sdk, &options.base, &overlay.over(&env)).await?;
        overlay.set("CALLBACK_SECRET_ARN", secret_arn);
        let http_port = options.listener.local_addr()?.port();
        let provider = crate::reconcile::prepare(&sdk, &options.base, http_port, &mut overlay, &env)
            .await
            .map_err(PipelineError::Provision)?;
        let lookup = overlay.over(&env);

        let ingest =
            stemvault_ingest::Config::from_lookup(&lookup).map_err(config_error(stemvault_ingest::LOGICAL_NAME))?;
        let ingest = stemvault_ingest::Config { allow_unauthenticated, ..ingest };
        // Its App reads the provider's key (from its secret, as at a cold start): fresh links
        // for expired files, from the built-in fake provider or yours.
        let download =
            stemvault_download::Config::from_lookup(&lookup).map_err(config_error(stemvault_download::LOGICAL_NAME))?;
        let results =
            stemvault_results::Config::from_lookup(&lookup).map_err(config_error(stemvault_results::LOGICAL_NAME))?;
        let sweeper =
            stemvault_sweeper::Config::from_lookup(&lookup).map_err(config_error(stemvault_sweeper::LOGICAL_NAME))?;
        let reconciler = stemvault_reconciler::Config::from_lookup(&lookup)
            .map_err(config_error(stemvault_reconciler::LOGICAL_NAME))?;
        let reconciler = stemvault_reconciler::App::new(reconciler, &sdk)
            .await
            .map_err(config_error(stemvault_reconciler::LOGICAL_NAME))?;
        let http_functions = Arc::new(HttpFunctions {
            ingest: stemvault_ingest::App::new(ingest, &sdk).await,
            results: stemvault_results::App::new(results, &sdk),
        });
        let downloader = Arc::new(
            stemvault_download::App::new(download, &sdk)
                .await
                .map_err(config_error(stemvault_download::LOGICAL_NAME))?,
        );
        let region = sdk.region().map(|r| r.to_string());
        let notifier = crate::notify::start(&sdk, &options.base, region.as_deref().unwrap_or("us-east-1"), &lookup)
            .await
            .map_err(config_error(stemvault_notify::LOGICAL_NAME))?;
        let notify = notifier.as_ref().map(|n| NotifySummary {
            notify_url: n.notify_url.clone(),
            queue_url: n.source.queue_url.clone(),
            queue_arn: n.queue_arn().to_owned(),
            generated_secret: n.generated_secret.clone(),
        });

        let port = options.listener.local_addr()?.port();
        let info = RunInfo {
            pid: std::process::id(),
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            file_server_origin: options.file_server_origin.clone(),
            auth: ClientAuth::from_lookup(&lookup),
            aws_endpoint_url: Some(endpoint),
            aws_region: region.clone(),
            table_name: resources.table_name.clone(),
            bucket_name: resources.bucket_name.clone(),
            queue_url: resources.queue_url.clone(),
            fake_provider: provider.fake.as_ref().map(|f| f.origin()),
            event_bus_name: Some(resources.event_bus_name.clone()),
        };
        let allowed_source_hosts = lookup("ALLOWED_SOURCE_HOSTS").unwrap_or_default();

        // Subscribed before anything can publish, so no event misses the log or the webhooks.
        let region = region.unwrap_or_else(|| "us-east-1".into());
        let events_source =
            crate::events::subscribe(&sdk, &options.base, &resources.event_bus_name, &region, notify.as_ref())
                .await
                .map_err(PipelineError::Provision)?;
        let shutdown = Shutdown::new();
        let mut tasks =
            vec![tokio::spawn(crate::http::serve_lambda(options.listener, http_functions, shutdown.signal()))];
        let events = crate::events::EventLog::new(options.print_events);
        tasks.push(tokio::spawn(crate::poller::poll(
            stemvault_aws::long_polling_sqs_client(&sdk),
            events_source,
            Arc::new(events.clone()),
            shutdown.signal(),
        )));
        let source = QueueSource {
            name: stemvault_download::LOGICAL_NAME,
            queue_url: resources.queue_url.clone(),
            queue_arn: resources.queue_arn.clone(),
            region,
            batch_size: crate::poller::DOWNLOAD_BATCH_SIZE,
            invocation_budget: crate::poller::DOWNLOAD_INVOCATION_BUDGET,
        };
        let sqs = stemvault_aws::long_polling_sqs_client(&sdk);
        for _ in 0..options.pollers.max(1) {
            tasks.push(tokio::spawn(crate::poller::poll(
                sqs.clone(),
                source.clone(),
                downloader.clone(),
                shutdown.signal(),
            )));
        }
        if let Some(notifier) = notifier {
            let app = Arc::new(notifier.app);
            tasks.push(tokio::spawn(crate::poller::poll(sqs.clone(), notifier.source, app, shutdown.signal())));
        }
        let sweeper = stemvault_sweeper::App::new(sweeper, &sdk);
        let (sweeps, timeout) = (shutdown.signal(), stemvault_sweeper::app::FUNCTION_TIMEOUT);
        tasks.push(tokio::spawn(async move {
            crate::scheduled::every("sweep", SWEEP_INTERVAL, timeout, sweeps, |run| sweeper.handle(run)).await
        }));
        // Without a key too, as in Lambda: it replays parked callbacks and gives tasks up in time.
        let (runs, timeout) = (shutdown.signal(), stemvault_reconciler::app::FUNCTION_TIMEOUT);
        let interval = crate::reconcile::RECONCILE_INTERVAL;
        tasks.push(tokio::spawn(async move {
            crate::scheduled::every("reconciliation", interval, timeout, runs, |run| reconciler.handle(run)).await
        }));
        Ok(Pipeline {
            info,
            generated_key: overlay.generated_hmac_key.clone(),
            allowed_source_hosts,
            sdk,
            notify,
            events,
            provider,
            shutdown,
            tasks,
        })
    }

    /// Stop serving and polling; a batch in progress finishes first.
    pub async fn stop(self) {
        self.shutdown.stop();
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a runner task ended abnormally");
            }
        }
    }
}

/// The callback secret, as ingest reads it in AWS: `WEBHOOK_HMAC_KEYS` and `CALLBACK_TOKEN`
/// (the user's, or the generated key) put in the emulator's Secrets Manager as
/// `<base>-callback`. Its ARN.
async fn put_callback_secret(
    sdk: &aws_config::SdkConfig,
    base: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, PipelineError> {
    let secret = stemvault_ingest::secret::CallbackSecret::from_variables(
        lookup("WEBHOOK_HMAC_KEYS").as_deref(),
        lookup("CALLBACK_TOKEN").as_deref(),
    )
    .map_err(config_error(stemvault_ingest::LOGICAL_NAME))?;
    let text = stemvault_aws::secrets::SecretText::new(secret.to_json());
    stemvault_aws::secrets::put_secret(sdk, &format!("{base}-callback"), &text)
        .await
        .map_err(|e| PipelineError::Provision(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_endpoints_are_accepted() {
        for ok in ["http://127.0.0.1:5000", "http://localhost:5000/", "http://127.0.0.1"] {
            let env = move |k: &str| (k == "AWS_ENDPOINT_URL").then(|| ok.to_owned());
            assert_eq!(local_endpoint(&env).unwrap(), ok);
        }
        for bad in [None, Some("https://dynamodb.us-east-1.amazonaws.com"), Some("http://127.0.0.1.example.com")] {
            let env = move |k: &str| if k == "AWS_ENDPOINT_URL" { bad.map(str::to_owned) } else { None };
            assert!(matches!(local_endpoint(&env), Err(PipelineError::NotLocal(_))), "{bad:?}");
        }
    }
}
