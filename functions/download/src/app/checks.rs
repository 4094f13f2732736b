//! A batch's settle checks: one per task that any of its messages asked for
//! ([`settle_check_for`]), made in the tokio task of the batch's last message of that task as
//! soon as it is done, so that a slow copy of another task's file in the same batch holds
//! back neither the task's manifest and `Task Vaulted` nor the redelivery of the messages a
//! deferred or failed check sends back. A task one of whose messages never reports done (its
//! handler panicked outside the message's own guard) is checked after the batch, with the
//! messages that did.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use aws_lambda_events::sqs::SqsMessage;
use futures::StreamExt;
use stemvault_aws::sqs_batch::Ran;
use stemvault_vault::panic::catch_panic;
use tracing::{Instrument, Span};

use super::{Handled, MAX_CONCURRENT_MESSAGES, Reserves};
use crate::domain::{Measure, Outcome, Ports, Settling, check_settled, parse_job, settle_check_for};
use crate::error::DownloadError;

/// The batch's tasks, by id: how many of their messages still run, those done, and which
/// messages their checks sent back.
pub(super) struct Checks {
    /// The invocation's span: each check's own span sits in it (not in the span of the
    /// message that happened to finish last).
    invocation: Span,
    /// Lambda's id of the invocation, which each check's lines carry as its messages' do.
    lambda_request_id: Option<String>,
    reserves: Reserves,
    tasks: Mutex<BTreeMap<String, TaskMessages>>,
}

#[derive(Default)]
struct TaskMessages {
    running: usize,
    /// Emptied when the task is checked (put back should the check panic).
    done: Vec<Done>,
    /// The messages the check sent back (delayed already), by their place in the batch, and why.
    sent_back: Vec<(usize, DownloadError)>,
}

/// One message done: its place in the batch, what it came to, and its span.
struct Done {
    index: usize,
    handled: Handled,
    span: Span,
}

impl Checks {
    /// Count the messages of each task (a message that names none asks for no check).
    pub(super) fn of(messages: &[SqsMessage], deadline: Instant, lambda_request_id: Option<String>) -> Checks {
        let mut tasks: BTreeMap<String, TaskMessages> = BTreeMap::new();
        for message in messages {
            if let Some(task) = message.body.as_deref().and_then(task_of) {
                tasks.entry(task).or_default().running += 1;
            }
        }
        let reserves = Reserves::before(deadline);
        Checks { invocation: Span::current(), lambda_request_id, reserves, tasks: Mutex::new(tasks) }
    }

    /// Message `index` is done, in its own span: when it is its task's last, check the task.
    pub(super) async fn done<P: Ports>(&self, ports: &P, index: usize, handled: &Handled) {
        let Some(task) = task_of(&handled.delivery.body) else { return };
        let done = {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(messages) = tasks.get_mut(&task) else { return };
            messages.running = messages.running.saturating_sub(1);
            messages.done.push(Done { index, handled: handled.clone(), span: Span::current() });
            if messages.running > 0 {
                return;
            }
            std::mem::take(&mut messages.done)
        };
        // Its own panic must not take the task's check with it (the message's is not caught
        // here): the check is made again after the batch.
        let checked = catch_panic(self.check(ports, &done)).await;
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(messages) = tasks.get_mut(&task) else { return };
        match checked {
            Ok(sent_back) => messages.sent_back = sent_back,
            Err(_) => {
                tracing::error!(
                    "the settle check panicked (the panic's own line says where); it is made again after the batch"
                );
                messages.done = done;
            }
        }
    }

    /// After the batch: check each task not checked yet (with the messages of it that are
    /// done), and turn every message a check sent back into a retry.
    pub(super) async fn finish<P: Ports>(&self, ports: &P, ran: &mut [Ran<Handled>]) {
        let (mut sent_back, unchecked) = {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            let mut sent_back = Vec::new();
            let mut unchecked = Vec::new();
            for messages in tasks.values_mut() {
                sent_back.append(&mut messages.sent_back);
                if !messages.done.is_empty() {
                    unchecked.push(std::mem::take(&mut messages.done));
                }
            }
            (sent_back, unchecked)
        };
        let checks = unchecked.into_iter().map(|done| async move {
            catch_panic(self.check(ports, &done)).await.unwrap_or_else(|_| {
                // In a message's span: with its task id.
                let span = done.first().map_or_else(Span::none, |d| d.span.clone());
                span.in_scope(|| {
                    tracing::error!(
                        "the settle check panicked (the panic's own line says where); the task is left open for the sweeper"
                    )
                });
                Vec::new()
            })
        });
        let later: Vec<_> = futures::stream::iter(checks).buffer_unordered(MAX_CONCURRENT_MESSAGES).collect().await;
        sent_back.extend(later.into_iter().flatten());
        for (index, error) in sent_back {
            if let Some(handled) = ran.get_mut(index).and_then(|message| message.handled.as_mut()) {
                handled.outcome = Outcome::Retry(error);
            }
        }
    }

    /// The settle check of the task of `done` when one of them asked for it, given up at
    /// [`Reserves::give_up_at`]: a check still running then (a throttled or hanging AWS call)
    /// has failed, stopped there as a crash would stop it, which every step allows. When it
    /// fails (or panics), every message that asked goes back to the queue (delayed like any
    /// retry), so its redelivery checks again; when it is deferred (to the worker that settled
    /// the task's last file, or because the task moved on at every check), one of them does,
    /// the first not on its last receive (should that worker not settle, one redelivery's
    /// check settles the whole task). Never one on its last receive. The messages sent back,
    /// and why.
    async fn check<P: Ports>(&self, ports: &P, done: &[Done]) -> Vec<(usize, DownloadError)> {
        let mut done: Vec<&Done> = done.iter().filter(|d| d.handled.outcome.wants_settle_check()).collect();
        done.sort_by_key(|d| d.index);
        let Some(task_id) = done.first().and_then(|d| settle_check_for(&d.handled.delivery, &d.handled.outcome)) else {
            return Vec::new();
        };
        let here = settled_here(done.iter().map(|d| &d.handled));
        let lambda_request_id = self.lambda_request_id.as_deref();
        let span =
            tracing::error_span!(parent: &self.invocation, "settle", lambda_request_id, task_id = %task_id.as_str());
        let checking = check_settled(ports, &task_id, here.as_deref()).instrument(span.clone());
        let (error, asked) = match self.reserves.guarded(checking).await.and_then(|checked| checked) {
            // One message coming back checks the task again: the others are done.
            Ok(Settling::Deferred) => {
                span.in_scope(|| {
                    tracing::info!(
                        "another worker settled the last file, or the task moved on at every check; \
                         one message checks again later"
                    )
                });
                let first = done.iter().position(|d| !d.handled.delivery.is_last_receive()).unwrap_or(0);
                (DownloadError::SettleDeferred, &done[first..=first])
            }
            Ok(settling) => {
                span.in_scope(|| log_settling(settling));
                return Vec::new();
            }
            Err(e) => {
                span.in_scope(
                    || tracing::warn!(error = %e, messages = done.len(), "the settle check failed; will retry"),
                );
                ports.emit_metrics(&Measure::SettleCheckFailed { reason: e.settle_failure_reason() });
                (e, &done[..])
            }
        };
        let mut sent_back = Vec::new();
        for asked in asked {
            if asked.handled.delivery.is_last_receive() {
                // Its file is settled; sent back, the message would only reach the DLQ (and
                // its alarm). The task keeps `open` until it is settled: the sweeper asks.
                asked.span.in_scope(|| tracing::warn!("last receive: the sweeper settles the task instead"));
                continue;
            }
            let retry = Outcome::Retry(error.clone());
            self.reserves.delay(ports, &asked.handled.delivery, &retry).instrument(asked.span.clone()).await;
            sent_back.push((asked.index, error.clone()));
        }
        sent_back
    }
}

/// The task a message body names (a file or manifest job), by its id.
fn task_of(body: &str) -> Option<String> {
    parse_job(body).ok().map(|(_, task_id)| task_id.as_str().to_owned())
}

/// The files the asking messages just stored or failed for good, when every one of them is
/// on its first receive and did that: then only the worker holding the task's last settled
/// file settles it at once. None otherwise (a redelivery, a manifest job, an already settled
/// file, a dead letter): whoever checks settles.
fn settled_here<'a>(asked: impl IntoIterator<Item = &'a Handled>) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for handled in asked {
        let first = handled.delivery.receive_count <= 1;
        if !first || !matches!(handled.outcome, Outcome::Stored(_) | Outcome::FailedForGood(_)) {
            return None;
        }
        names.push(parse_job(&handled.delivery.body).ok()?.0.name);
    }
    Some(names)
}

fn log_settling(settling: Settling) {
    match settling {
        Settling::NoTask => tracing::warn!("the task has no task item; nothing to settle"),
        Settling::Open => tracing::debug!("the task has open files"),
        Settling::AlreadySettled => tracing::debug!("the task is settled and its manifest recorded"),
        // check_settled logs what it wrote; a deferred check sends a message back.
        Settling::Settled | Settling::Recorded | Settling::Deferred => {}
    }
}
