//! The Lambda-facing side: `POST /callback[/<token>]` in, JSON out. Routing, authentication
//! (with the callback secret read again when it may have been rotated or revoked), limits, metrics and
//! answers around [`crate::domain::ingest_or_park`], and registering for polling the task of a
//! stale callback a key signed ([`crate::domain::register_for_polling`]), over any [`Ports`]
//! (AWS in the Lambda, in memory in the tests and the benchmark).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;
use stemvault_aws::response;
use stemvault_aws::route::routed_path;
use stemvault_vault::StorageError;
use stemvault_vault::accept::body_sha256_hex;
use stemvault_vault::panic::{PANICKED, Panicked, catch_panic};
use suno_callbacks::{CallbackEvent, Family, ParseError, TaskId, callback_task_id, parse_callback, s3_key};
use tracing::Instrument;

use crate::Config;
use crate::auth::{Auth, Grounds, Refusal};
use crate::aws::AwsPorts;
use crate::credentials::Credentials;
#[cfg(any(test, feature = "test-support"))]
use crate::credentials::RefreshPolicy;
use crate::domain::{
    ANSWER_WITHIN, EmitMetrics, Ingested, Measure, Outage, Ports, Settings, StaleTask, ingest_or_park,
    register_for_polling,
};
use crate::error::AcceptError;

/// The ingest function with its clients and checks, built once per instance.
pub struct App<P = AwsPorts> {
    ports: P,
    credentials: Credentials,
    max_body_bytes: usize,
    settings: Settings,
    /// Recording that failed slowly, remembered across this instance's requests.
    outage: Outage,
    /// How long building the app took (the secret's read, up to 3 s), in microseconds, until
    /// the first request takes it: that request (most often the one that started the
    /// instance) waited for it, and the provider's clock ran.
    start_up_micros: AtomicU64,
    /// When the app was built: a first request handled long after came to an instance Lambda
    /// started ahead of it, and waited for nothing ([`WAITED_FOR_THE_START_WITHIN`]).
    built_at: Instant,
}

/// A first request handled within this of the app's start came while it started (the
/// runtime asks for it at once), so it waited for that start; one handled later came to an
/// instance Lambda initialised ahead of any request.
const WAITED_FOR_THE_START_WITHIN: Duration = Duration::from_secs(1);

impl App {
    /// Build the clients and read the callback secret: once per instance, at its cold start.
    /// A secret it cannot read or use starts it answering 503 ([`Credentials::load`]).
    pub async fn new(config: Config, sdk: &aws_config::SdkConfig) -> App {
        let ports = AwsPorts::new(&config, sdk);
        App::over(&config, ports).await
    }
}

impl<P: Ports> App<P> {
    async fn over(config: &Config, ports: P) -> App<P> {
        let began = Instant::now();
        let credentials = Credentials::load(&ports, config.auth_settings()).await;
        if credentials.current().is_unauthenticated() {
            tracing::warn!(
                "unauthenticated callbacks allowed (make run's ALLOW_UNAUTHENTICATED=true) and the callback \
                 secret holds neither keys nor token: accepting callbacks from anyone"
            );
        }
        let settings = Settings {
            reconcile_after: config.reconcile_after,
            bucket: config.bucket_name.clone(),
            ..Settings::default()
        };
        let start_up_micros = AtomicU64::new(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX));
        let max_body_bytes = config.max_body_bytes;
        let built_at = Instant::now();
        App { ports, credentials, max_body_bytes, settings, outage: Outage::default(), start_up_micros, built_at }
    }

    /// The app over other ports (the in-memory ones of the tests and the benchmark).
    #[cfg(any(test, feature = "test-support"))]
    pub async fn with_ports(config: &Config, ports: P) -> App<P> {
        App::over(config, ports).await
    }

    /// Another policy for re-reading the secret (the emulator tests re-read at once, or
    /// before every request).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_secret_policy(mut self, policy: RefreshPolicy) -> App<P> {
        self.credentials = self.credentials.with_policy(policy);
        self
    }

    /// Other lease and wait timings.
    #[cfg(test)]
    fn with_settings(mut self, settings: Settings) -> App<P> {
        self.settings = settings;
        self
    }

    /// When the request being handled `now` came, as far as the instance can tell: the
    /// answer is due within `ANSWER_WITHIN` of it, and the first request also waited for the
    /// app to be built (the secret's read; the runtime's own start is not measured), unless it
    /// came well after (to an instance Lambda started ahead of it).
    fn arrived(&self, now: Instant) -> Instant {
        let waited = Duration::from_micros(self.start_up_micros.swap(0, Ordering::Relaxed));
        if now.saturating_duration_since(self.built_at) > WAITED_FOR_THE_START_WITHIN {
            return now;
        }
        now.checked_sub(waited).unwrap_or(now)
    }

    /// Answer one request; every outcome is an HTTP response.
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let started = self.arrived(Instant::now());
        let request_id = uuid::Uuid::new_v4().to_string();
        // No path (it may hold the token) and no URL in the span or the logs.
        // `task_id` once a key or token vouches for it; before, the one the body claims (a
        // request anyone can send must not file its lines under another's task).
        let api_request_id = stemvault_aws::http_event::api_request_id(&req);
        let span = tracing::error_span!(
            "callback",
            request_id = %request_id,
            api_request_id,
            task_id = tracing::field::Empty,
            claimed_task_id = tracing::field::Empty,
            vouched_by = tracing::field::Empty
        );
        match catch_panic(self.respond(req, &request_id, started)).instrument(span.clone()).await {
            Ok(response) => response,
            Err(Panicked) => span.in_scope(|| self.panicked()),
        }
    }

    /// A bug broke this callback's handling: answered as one neither recorded nor parked is
    /// (503, which the provider retries, and counted so), not as lambda_http's bare 500.
    fn panicked(&self) -> Response<Body> {
        tracing::error!(
            code = PANICKED,
            "callback handling panicked (its own line says where): answered 503, so the provider retries it"
        );
        unavailable(&self.ports, PANICKED, "the callback could not be processed; retry the delivery")
    }

    async fn respond(&self, req: Request, request_id: &str, started: Instant) -> Response<Body> {
        // Read again first if older than the maximum age: a revoked key stops working.
        let auth = self.credentials.fresh(&self.ports).await;
        let mut checked = self.check(&auth, &req);
        if matches!(&checked, Err(rejection) if rejection.may_be_stale()) {
            // Perhaps signed with a key rotated in since the secret was read: read it again
            // (rate-limited) and check once more.
            if let Some(fresh) = self.credentials.refreshed(&self.ports, &auth).await {
                checked = self.check(&fresh, &req);
            }
            // The secret could not be read to settle it: a retry may pass, a 401 may be final.
            // Only for what a key or token in the secret decides (a stale timestamp only when
            // no key in force made the signature).
            if matches!(&checked, Err(rejection) if rejection.keyed) && self.credentials.in_doubt() {
                checked = Err(Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "secret_unreadable",
                    "refused by the checks in force, and the callback secret could not be read again; retry later",
                ));
            }
        }
        let event = match checked {
            Ok(event) => event,
            Err(rejection) => return self.refuse(rejection, &req, started).await,
        };

        let body: &[u8] = req.body().as_ref();
        let spent = started.elapsed();
        match ingest_or_park(&self.ports, &self.settings, &event, body, request_id, spent, &self.outage).await {
            Ok(Ingested::Parked { key, because }) => {
                if because.is_refused_for_good() {
                    tracing::error!(
                        error = %because,
                        code = because.reason_code(),
                        key,
                        "callback parked: the table refuses it for good; the reconciler moves it to its archive key, unrecorded (its files are not vaulted)"
                    );
                } else if because.waits_for_the_record() {
                    tracing::error!(
                        error = %because,
                        code = because.reason_code(),
                        key,
                        "callback parked: the task's record cannot be read, or the table refuses the write as invalid; \
                         the reconciler records it once the record (or the build) is fixed"
                    );
                } else {
                    tracing::warn!(
                        error = %because,
                        code = because.reason_code(),
                        key,
                        "callback parked: not recorded, or not fully processed; the reconciler replays it"
                    );
                }
                self.ports.emit_metrics(&Measure::Parked { reason: because.reason_code() });
                let body = json!({
                    "status": "parked",
                    "task_id": event.task_id.as_str(),
                    "stage": event.stage.as_str(),
                    "files": event.files.len(),
                });
                response::json(StatusCode::OK, &body)
            }
            Ok(Ingested::Recorded(outcome)) => {
                let status = if outcome.duplicate { "duplicate" } else { "accepted" };
                tracing::info!(
                    family = %event.family,
                    stage = %event.stage,
                    task_stage = %outcome.task_stage,
                    files = event.files.len(),
                    files_queued = outcome.files_queued,
                    "callback {status}"
                );
                self.ports.emit_metrics(&Measure::Accepted);
                let body = json!({
                    "status": status,
                    "task_id": event.task_id.as_str(),
                    "stage": event.stage.as_str(),
                    "task_stage": outcome.task_stage.as_str(),
                    "files": event.files.len(),
                    "files_queued": outcome.files_queued,
                });
                response::json(StatusCode::OK, &body)
            }
            // Not parked either (S3 failing too): whatever the table said, the provider's retry
            // may park it, so the answer is one it retries; a 4xx or 500 would lose the body.
            Err(e) => {
                tracing::error!(
                    error = %e,
                    code = e.reason_code(),
                    retryable = e.is_retryable(),
                    "callback neither fully recorded nor parked: answered 503, so the provider's retries hold its only \
                     copy; should they run out, PUT /tasks/<task_id> has the task polled"
                );
                let measure = match e {
                    AcceptError::TooLargeToRecord { .. } => Measure::Refused { reason: e.reason_code() },
                    _ => Measure::Failed { reason: e.reason_code() },
                };
                self.ports.emit_metrics(&measure);
                response::error(StatusCode::SERVICE_UNAVAILABLE, e.reason_code(), e.public_message())
            }
        }
    }

    /// Everything checked before anything is written, with `auth`'s checks: the route, the
    /// path token and signature headers, the size, the task id, the signature, then the body.
    fn check(&self, auth: &Auth, req: &Request) -> Result<CallbackEvent, Rejection> {
        let path = routed_path(req);
        let path = path.as_ref();
        let segment = match route(req.method(), path) {
            Route::Callback { segment } => segment,
            Route::MethodNotAllowed => {
                return Err(Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"));
            }
            Route::NotFound => return Err(Rejection::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")),
        };
        // The routed path is encoded as a raw path is: the token is its segment decoded once,
        // as API Gateway passes it (a client sending `-` as `%2D` is let in, here as there).
        let token_segment = segment.map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy());
        let now = self.ports.now().unix_seconds();
        let unauthorized = |refusal| Rejection::unauthorized(refusal, segment.is_some());
        let token = match auth.check_before_body(token_segment.as_deref(), req.headers(), now) {
            Ok(token) => token,
            Err(refusal) => {
                let claimed = self.claimed_task_id(req);
                let unsigned = matches!(refusal.grounds, Grounds::Unsigned | Grounds::Request);
                let outside_window = refusal.grounds == Grounds::OutsideWindow;
                // A scanner's or a hand's request to the endpoint names no task: not the
                // provider's callbacks being refused.
                let unverifiable = (unsigned || refusal.is_for_the_token()) && matches!(claimed, Claimed::Task(_));
                let names_no_task = matches!(claimed, Claimed::NoTask);
                let rejection = Rejection { unverifiable, names_no_task, ..unauthorized(refusal) };
                if !outside_window {
                    return Err(rejection);
                }
                return Err(match self.signed_task(auth, req, claimed.task()) {
                    // No key in force signed it: one rotated in since the secret was read may have.
                    Signed::NotByAKey => Rejection { keyed: true, ..rejection },
                    Signed::Task(Some((task_id, signed_at))) => {
                        Rejection { follow_up: FollowUp::Poll(task_id, signed_at), ..rejection }
                    }
                    Signed::Task(None) => rejection,
                });
            }
        };

        let body: &[u8] = req.body().as_ref();
        if body.len() > self.max_body_bytes {
            let message = format!("the body is {} bytes; at most {} are accepted", body.len(), self.max_body_bytes);
            return Err(Rejection::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message));
        }
        let unparsable = |e: ParseError| Rejection::new(StatusCode::BAD_REQUEST, parse_error_code(&e), e.to_string());
        // The signature names only the task id: it is checked before the body is built, so
        // an unsigned body claiming a million tracks costs one pass over its bytes.
        let task_id = callback_task_id(body).map_err(unparsable)?;
        tracing::Span::current().record("claimed_task_id", task_id.as_str());
        let key = auth.check_signature(task_id.as_str(), req.headers(), now).map_err(unauthorized)?;
        let span = tracing::Span::current();
        span.record("task_id", task_id.as_str());
        if let Some(vouched_by) = vouched_by(key, token) {
            span.record("vouched_by", vouched_by.as_str());
        }
        let event = parse_callback(body)
            .map_err(|e| Rejection { follow_up: FollowUp::Keep(task_id.clone()), ..unparsable(e) })?;
        of_the_signed_task(task_id, event)
    }

    /// The task id the body of a request refused for its headers or path claims, also on the
    /// span (`claimed_task_id`), so "did task X's callback come?" finds a callback refused for
    /// a missing or wrong token, or a missing signature, too: one pass over a body within the
    /// size accepted (none over it), for the logs, the unverifiable count and a stale
    /// callback's registration ([`Self::signed_task`]).
    fn claimed_task_id(&self, req: &Request) -> Claimed {
        let body: &[u8] = req.body().as_ref();
        if body.len() > self.max_body_bytes {
            return Claimed::Unread;
        }
        let Ok(task_id) = callback_task_id(body) else {
            return Claimed::NoTask;
        };
        tracing::Span::current().record("claimed_task_id", task_id.as_str());
        Claimed::Task(task_id)
    }

    /// Whether a key signed the task id `claimed` by a request refused for its timestamp alone
    /// ([`Auth::signed_at_any_time`]), and then the task and when it was signed.
    fn signed_task(&self, auth: &Auth, req: &Request, claimed: Option<TaskId>) -> Signed {
        let Some(task_id) = claimed else {
            return Signed::Task(None);
        };
        let Some(signed_at) = auth.signed_at_any_time(task_id.as_str(), req.headers()) else {
            return Signed::NotByAKey;
        };
        tracing::Span::current().record("task_id", task_id.as_str());
        Signed::Task(Some((task_id, signed_at)))
    }

    /// Answer a refused request, after what its refusal asks for ([`FollowUp`]). Here, not in
    /// the checks: those run twice when the secret is read again.
    async fn refuse(&self, mut rejection: Rejection, req: &Request, started: Instant) -> Response<Body> {
        if rejection.unverifiable {
            self.ports.emit_metrics(&Measure::Unverifiable);
        }
        match std::mem::take(&mut rejection.follow_up) {
            FollowUp::Nothing => rejection.answer(&self.ports, None),
            FollowUp::Poll(task_id, signed_at) => {
                self.register_stale(rejection, req, started, task_id, signed_at).await
            }
            FollowUp::Keep(task_id) => self.keep_unparsable(rejection, req, started, &task_id).await,
        }
    }

    /// A callback refused as stale (its timestamp outside the window: long past, or ahead of
    /// our clock) though signed by a key registers its task for polling
    /// ([`register_for_polling`]; 503 when the table cannot say, so the provider's retry tries
    /// again), when it was signed less than [`MAX_REGISTERED_AGE`] ago and the body names a
    /// family to poll (not the parser's guess for a failure).
    async fn register_stale(
        &self,
        rejection: Rejection,
        req: &Request,
        started: Instant,
        task_id: TaskId,
        signed_at: i64,
    ) -> Response<Body> {
        let age = self.ports.now().unix_seconds().saturating_sub(signed_at);
        let pollable = |e: CallbackEvent| (e.family != Family::Unknown && !e.family_is_a_guess()).then_some(e.family);
        // Either way: a signature far ahead of the clock is no more a recent task's.
        let recent = age.unsigned_abs() <= MAX_REGISTERED_AGE.as_secs();
        let family = recent.then(|| parse_callback(req.body().as_ref()).ok().and_then(pollable)).flatten();
        let Some(family) = family else { return rejection.answer(&self.ports, None) };
        let registering = register_for_polling(&self.ports, &task_id, family);
        let within = ANSWER_WITHIN.saturating_sub(started.elapsed()).min(REGISTER_WITHIN);
        match tokio::time::timeout(within, registering).await {
            Ok(Ok(StaleTask::Registered)) => {
                tracing::warn!(%family, "a callback signed outside the window: its task is registered to be polled");
                self.ports.emit_metrics(&Measure::StaleRegistered);
                rejection.answer(&self.ports, Some(REGISTERED_FOR_POLLING))
            }
            Ok(Ok(StaleTask::Known)) => {
                tracing::info!("a callback signed outside the window, of a task the table knows");
                rejection.answer(&self.ports, None)
            }
            // Refused for good (the task item is there and unreadable, or too large): a retry
            // would meet the same, so the refusal stands; otherwise the provider's retry tries
            // again, as it does for a write refused as invalid (a build's fault, which a
            // deploy fixes: callbacks wait for it elsewhere too).
            Ok(Err(e)) => {
                let retryable = e.caller_may_retry();
                tracing::error!(error = %e, retryable, "a callback signed outside the window: its task could not be registered");
                if retryable { failed_registration(&self.ports) } else { rejection.answer(&self.ports, None) }
            }
            Err(_) => {
                tracing::error!("a callback signed outside the window: its task could not be registered in time");
                failed_registration(&self.ports)
            }
        }
    }

    /// Keep a verified body refused as bad input whole (the parser refuses it: a number beyond
    /// what a double holds, nesting past 128 levels, more than MAX_JSON_MARKS values, which
    /// the task id's own reader skips; or
    /// its event names another task than its signed id, [`of_the_signed_task`]), at
    /// [`s3_key::unparsable_body_key`]: a retry brings the same body, so the refusal stands,
    /// but a callback that came from the provider is never dropped. A bucket that fails or
    /// does not answer in time answers 503, so the provider's retry keeps it.
    async fn keep_unparsable(
        &self,
        rejection: Rejection,
        req: &Request,
        started: Instant,
        task_id: &TaskId,
    ) -> Response<Body> {
        let body: &[u8] = req.body().as_ref();
        let key = s3_key::unparsable_body_key(task_id, &body_sha256_hex(body));
        let within = ANSWER_WITHIN.saturating_sub(started.elapsed());
        let failure = match tokio::time::timeout(within, self.ports.archive_body(&key, body)).await {
            Ok(Ok(())) => {
                tracing::error!(key, reason = rejection.reason, error = %rejection.message, "a verified callback refused as bad input is kept whole");
                self.ports.emit_metrics(&Measure::UnparsableKept);
                return rejection.answer(&self.ports, Some(BODY_KEPT));
            }
            Ok(Err(e)) => e,
            Err(_) => StorageError::transient("PutObject", "no answer in time"),
        };
        let retryable = failure.is_retryable();
        tracing::error!(key, reason = rejection.reason, error = %failure, retryable, "a verified callback refused as bad input could not be kept");
        // What a callback's archive write failing is called anywhere else.
        let code = stemvault_vault::accept::AcceptError::Archive(failure).reason_code();
        unavailable(&self.ports, code, "verified but refused as bad input, and it could not be kept; retry later")
    }
}

/// The task a body refused before its signature was checked claims ([`App::claimed_task_id`]).
enum Claimed {
    Task(TaskId),
    /// Read, and naming none.
    NoTask,
    /// Over the size accepted, so not read: whether it names a task is not known.
    Unread,
}

impl Claimed {
    fn task(self) -> Option<TaskId> {
        match self {
            Claimed::Task(task_id) => Some(task_id),
            Claimed::NoTask | Claimed::Unread => None,
        }
    }
}

/// What a key signed, of a request refused as stale ([`App::signed_task`]).
enum Signed {
    /// No key in force made its signature.
    NotByAKey,
    /// A key signed it, or it could not be told (a body too large, or naming no task id): the
    /// task and when it was signed (Unix seconds), when a key did.
    Task(Option<(TaskId, i64)>),
}

/// A signature older than this registers nothing: the provider keeps a task's files about
/// as long, and a signature captured long ago should not register tasks the provider forgot.
const MAX_REGISTERED_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// How long registering a stale callback's task may take (less when the answer is due sooner).
const REGISTER_WITHIN: Duration = Duration::from_secs(3);

/// The answer when a stale callback's task could not be registered: the provider retries.
fn failed_registration(metrics: &impl EmitMetrics<Measure>) -> Response<Body> {
    let message = "signed outside the window, and its task could not be registered for polling; retry later";
    unavailable(metrics, "task_record_unavailable", message)
}

/// 503 `code` for a request whose follow-up failed (the provider retries it), counted as
/// failed by `code`.
fn unavailable(metrics: &impl EmitMetrics<Measure>, code: &'static str, message: &str) -> Response<Body> {
    metrics.emit_metrics(&Measure::Failed { reason: code });
    response::error(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// A request refused: 4xx (or 503 while the secret is in doubt), nothing written but what its
/// [`FollowUp`] does.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    /// Machine-readable, e.g. `signature_mismatch`; the metric's `Reason`.
    reason: &'static str,
    /// For people; never contains a secret or a header value.
    message: String,
    /// What refused it is a key or token the secret holds (or no longer holds), not the
    /// request alone (a stale timestamp): while the secret cannot be read again, in doubt.
    keyed: bool,
    /// Refused for missing or malformed signature headers, or for its path token, while its
    /// body names a task ([`Measure::Unverifiable`]).
    unverifiable: bool,
    /// Refused (401) before its body was verified, which was read and names no task (a
    /// scanner's, a hand's request): logged at INFO, as another path or method is, so that a
    /// probed endpoint does not bury the warnings the runbooks point to. Any other refusal is
    /// a warning.
    names_no_task: bool,
    /// What the refusal does besides answering ([`App::refuse`]).
    follow_up: FollowUp,
}

/// What a refusal does besides answering.
#[derive(Debug, Default)]
enum FollowUp {
    #[default]
    Nothing,
    /// Refused as stale, but a key signed this task at this time (Unix seconds): perhaps to be
    /// registered for polling ([`App::register_stale`]).
    Poll(TaskId, i64),
    /// Verified, but the body is refused as bad input: kept whole ([`App::keep_unparsable`]).
    Keep(TaskId),
}

/// Said `true` in a 401 whose task was registered for polling.
const REGISTERED_FOR_POLLING: &str = "task_registered_for_polling";
/// Said `true` in a 400 whose verified body was kept whole.
const BODY_KEPT: &str = "body_kept";

impl Rejection {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason,
            message: message.into(),
            keyed: false,
            unverifiable: false,
            names_no_task: false,
            follow_up: FollowUp::Nothing,
        }
    }

    /// Checks built from a newer version of the callback secret might not refuse it: what the
    /// callback checks refused (401), and only that.
    fn may_be_stale(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// Refused by the callback checks: 401. `token_path`: the path carried a segment (a token,
    /// or one the checks in force ignore): a secret that now holds that token and no keys
    /// would let it through unsigned, so an unsigned refusal depends on the secret too.
    fn unauthorized(refusal: Refusal, token_path: bool) -> Rejection {
        let keyed = refusal.grounds == Grounds::Secret || (token_path && refusal.grounds == Grounds::Unsigned);
        let rejection = Rejection::new(StatusCode::UNAUTHORIZED, refusal.reason, refusal.message);
        Rejection { keyed, ..rejection }
    }

    /// Log, count and answer it; `done`: what its follow-up did, said `true` in the answer
    /// ([`REGISTERED_FOR_POLLING`], [`BODY_KEPT`]).
    fn answer(self, metrics: &impl EmitMetrics<Measure>, done: Option<&'static str>) -> Response<Body> {
        // Another path or method is no callback (only `make run` routes them here).
        let what = match self.status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => "request",
            _ => "callback",
        };
        let (reason, status) = (self.reason, self.status.as_u16());
        if self.names_no_task || what == "request" {
            tracing::info!(reason, status, "{what} refused: {}", self.message);
        } else {
            tracing::warn!(reason, status, "{what} refused: {}", self.message);
        }
        metrics.emit_metrics(&Measure::Refused { reason: self.reason });
        let mut body = match self.status {
            StatusCode::UNAUTHORIZED => {
                json!({ "error": "unauthorized", "reason": self.reason, "message": self.message })
            }
            _ => response::error_body(self.reason, &self.message),
        };
        if let Some(done) = done {
            body[done] = json!(true);
        }
        let mut response = response::json(self.status, &body);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `POST /callback`, or `POST /callback/<segment>` with the segment as sent.
    Callback {
        segment: Option<&'a str>,
    },
    MethodNotAllowed,
    NotFound,
}

fn route<'a>(method: &Method, path: &'a str) -> Route<'a> {
    let segment = match path.strip_prefix("/callback") {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(segment) if !segment.contains('/') => Some(segment),
            _ => return Route::NotFound,
        },
        None => return Route::NotFound,
    };
    if method == Method::POST { Route::Callback { segment } } else { Route::MethodNotAllowed }
}

fn parse_error_code(e: &ParseError) -> &'static str {
    match e {
        ParseError::NotJson(_) => "invalid_json",
        ParseError::TooManyValues => "too_many_json_values",
        ParseError::NotAnObject => "not_a_json_object",
        ParseError::NoTaskId => "missing_task_id",
        ParseError::InvalidTaskId(_) => "invalid_task_id",
    }
}

/// The event, when it names the task whose id the signature was checked against (read by its
/// own reader, before the body was built): two readers of one body that ever disagreed would
/// let a signature for one task write another. Kept whole, as a body the parser refuses.
fn of_the_signed_task(signed: TaskId, event: CallbackEvent) -> Result<CallbackEvent, Rejection> {
    if event.task_id == signed {
        return Ok(event);
    }
    let message = format!("the body names task {} where its task id reads {}", event.task_id, signed);
    // A warning: the kept body's ERROR line follows, with this message.
    tracing::warn!(error = %message, "a callback's two readers disagree on its task id");
    Err(Rejection {
        follow_up: FollowUp::Keep(signed),
        ..Rejection::new(StatusCode::BAD_REQUEST, "task_id_mismatch", message)
    })
}

/// Which of the secret's credentials let a callback in, by place (never by value): `key 2`,
/// `token 1`, `key 1, token 2`; so an operator rotating a key or token sees when the old one
/// stops being used (README, Security model: rotating). None without any.
fn vouched_by(key: Option<usize>, token: Option<usize>) -> Option<String> {
    let named = [key.map(|k| format!("key {k}")), token.map(|t| format!("token {t}"))];
    let named: Vec<String> = named.into_iter().flatten().collect();
    (!named.is_empty()).then(|| named.join(", "))
}

#[cfg(test)]
mod tests;
