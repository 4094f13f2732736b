//! One due task's reconciliation ([`reconcile_task`]): give it up, put it off, reopen its own
//! files, or poll it and accept what the provider says; and the writes those make.

use super::*;

pub(super) async fn reconcile_task<P: Ports>(
    ports: &P,
    settings: &Settings,
    claimant: &str,
    task_id: &str,
    deadline: tokio::time::Instant,
    polls: Polls,
) -> Result<Handled, ReconcileError> {
    let Ok(task) = TaskId::parse(task_id) else {
        return postpone(ports, task_id, format!("the index lists an invalid task id {task_id:?}")).await;
    };
    let record = match ports.load_task(&task).await {
        Err(StoreError::Malformed(why)) => return postpone(ports, task_id, why).await,
        loaded => loaded?,
    };
    let Some(record) = record else { return Ok(Handled::Skipped) };
    let now = ports.now();
    let due = record.reconcile.as_deref() == Some(RECONCILE_DUE) && record.reconcile_at.is_some_and(|at| at <= now);
    if !due {
        return Ok(Handled::Skipped);
    }
    if record.abandoned.is_some() {
        // Given up, yet watched: a settle that read the task before the give-up put its watch
        // back (a file expired). A task given up is not polled again: the watch goes.
        let given_up = |r: &TaskRecord| r.abandoned.is_some();
        return unwatch_while(ports, settings, &task, &record, given_up, "given up earlier").await;
    }
    // Why the task cannot be polled, if it cannot. No record-info endpoint to ask: an unknown
    // family (a task registered from a stale callback whose family could not be told), whose
    // polls would each be an `unreachable` write until the give-up.
    let cannot_poll = if !settings.polls {
        Some("no provider key")
    } else if suno_callbacks::poll::record_info_path(record.family).is_none() {
        Some("its family has no record-info endpoint")
    } else {
        None
    };
    // A task whose polls came late (the runs behind), or whose last poll the provider did not
    // answer, is polled again before it is given up as abandoned: its result may be there.
    let reason = reconcile::give_up_reason(&record, now, settings.give_up_after);
    let last_chance = reason == Some(GiveUpReason::Abandoned)
        && cannot_poll.is_none()
        && reconcile::awaits_result(&record)
        && reconcile::owes_a_last_poll(&record, now, settings.give_up_after);
    if let Some(reason) = reason.filter(|_| !last_chance) {
        return give_up(ports, settings, &task, &record, reason).await;
    }
    if let Some(why) = cannot_poll {
        if record.files.values().any(|file| reconcile::relink_due(file, now)) {
            return reopen_own(ports, settings, &task, &record, why).await;
        }
        // Nothing left to wait for (a file reopened at its own URL since stored, say): a poll
        // would have ended the watch.
        if !reconcile::needs_watching(&record) {
            let idle = |r: &TaskRecord| !reconcile::needs_watching(r);
            return unwatch_while(ports, settings, &task, &record, idle, "nothing left to wait for").await;
        }
        return put_off_until_given_up(ports, settings, task_id, &record, now, why).await;
    }
    if polls == Polls::Held {
        return Ok(Handled::LeftDue);
    }
    if last_chance {
        tracing::info!(
            task_id,
            "its give-up time came without an answered poll within the hour before: polling it again"
        );
    }

    // The poll ends in time to record it (a key re-read and a request, at each of a voice
    // task's two records, could outlast the task's budget): cut off, it is an unanswered poll,
    // on the schedule of one (backing off), not a task failed and due again at once.
    let polled_by = deadline.checked_sub(FAILURE_RECORD_RESERVE).unwrap_or(deadline);
    let answer = tokio::time::timeout_at(polled_by, ports.poll_provider(record.family, &task)).await;
    let answer = answer.unwrap_or_else(|_| ProviderAnswer::Unreachable("no answer in time to record the poll".into()));
    let answer = match answer {
        // Callback URLs (they end in the path token) redacted before the answer is read,
        // hashed or archived: the archive holds what the event is read from (crate::redact).
        ProviderAnswer::Http { status: 200, body } => {
            let redacted = match crate::redact::callback_urls(&body) {
                std::borrow::Cow::Owned(redacted) => Some(redacted),
                // Nothing to redact: the body as it came, not a copy of it.
                std::borrow::Cow::Borrowed(_) => None,
            };
            ProviderAnswer::Http { status: 200, body: redacted.unwrap_or(body) }
        }
        other => other,
    };
    // A poll past the give-up time (a last chance's) marks when the last chance began.
    // Recorded only while the task's family is the one asked: a registration may have given
    // it another meanwhile, and what this endpoint said is nothing of that one's.
    let asked = record.family;
    let poll_bookkeeping = |r: &TaskRecord, outcome: &PollOutcome, now: Timestamp| {
        let polled =
            || reconcile::mark_last_chance(reconcile::after_poll(r, outcome, now), now, settings.give_up_after);
        (r.family == asked).then(polled)
    };
    // Set where the answer is one the provider's API never gives: a wrong PROVIDER_BASE_URL
    // (or a maintenance page) that every other poll of the run would meet too.
    let mut misdirected = false;
    // Whether a request went out: one that could not (no key) is kept on the schedule of an
    // unanswered poll (backing off, a last chance's day bounded), but is no poll of the
    // provider's to count.
    let sent = !matches!(answer, ProviderAnswer::NoKey(_));
    let polled = match answer {
        // The run's own line says why (once a run, not once a task).
        ProviderAnswer::NoKey(why) => {
            tracing::info!(task_id, error = %why, "not polled: no provider API key; polling again later");
            PollOutcome::Unreachable
        }
        ProviderAnswer::Unreachable(why) => {
            tracing::info!(task_id, error = %why, "the provider did not answer; polling again later");
            PollOutcome::Unreachable
        }
        ProviderAnswer::TooLarge { limit } => {
            tracing::warn!(
                task_id,
                limit,
                "the provider's answer is over {limit} bytes; not read, polling again later"
            );
            PollOutcome::Unreadable
        }
        ProviderAnswer::Http { status: 200, body } => match parse_poll(record.family, &body) {
            // An answer for another task (a cache or proxy mixing answers up), pending or not:
            // not waiting read as this task's.
            Ok(other) if *other.task_id() != task => {
                tracing::warn!(task_id, answered_for = %other.task_id(), "the provider answered for another task");
                PollOutcome::Unreadable
            }
            Ok(PollResult::Pending { status, .. }) => {
                tracing::info!(task_id, status, "still pending at the provider");
                PollOutcome::Pending
            }
            Ok(PollResult::Result(event)) => {
                let left = polled_by.saturating_duration_since(tokio::time::Instant::now());
                let within = accept::Settings { polled: true, ..settings.accept.within(left) };
                // No time to record it: not started (nothing half-written), polled again.
                let accepted = if left.is_zero() {
                    Err(accept::AcceptError::OutOfTime { after: Duration::ZERO })
                } else {
                    accept(ports, &within, &event, &body, claimant, None).await
                };
                let accepted = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Kept on the poll schedule (backing off), not left due: a result the
                        // table refuses for good would otherwise be polled first on every
                        // run, ahead of every other due task.
                        save_with(ports, settings, &task, None, |r, now| {
                            poll_bookkeeping(r, &PollOutcome::Unrecorded, now)
                        })
                        .await?;
                        return Err(e.into());
                    }
                };
                tracing::info!(
                    task_id,
                    stage = %event.stage,
                    task_stage = %accepted.task_stage,
                    duplicate = accepted.duplicate,
                    files = event.files.len(),
                    files_queued = accepted.files_queued,
                    "result ingested from a poll"
                );
                PollOutcome::Result(event.stage)
            }
            // Too many values to read (not even its `code`): the task's own answer, not a wrong
            // setting; polled again.
            Err(e @ PollError::TooManyValues) => {
                tracing::warn!(task_id, error = %e, "unreadable record-info answer");
                PollOutcome::Unreadable
            }
            // Not the provider's answer at all (a web page, or JSON without its `code`): a wrong
            // PROVIDER_BASE_URL, which would leave every watched task unreadable until it is
            // given up, or a maintenance page, which passes.
            Err(e) if answer_code(&body).is_none() => {
                // A body without a code still reads as the provider's error (its `msg`), which
                // may quote a file link or the callback URL (its token).
                let error = match &e {
                    PollError::Provider { message, .. } => stemvault_vault::shown::provider_message(message),
                    other => other.to_string(),
                };
                tracing::error!(
                    task_id,
                    error,
                    "PROVIDER_BASE_URL answered 200 without the provider's JSON answer (is it the provider's API \
                     root, or a maintenance page?); no more polls this run"
                );
                misdirected = true;
                PollOutcome::Unreadable
            }
            // Done, without the files it is about, for a task that has its result (watched for
            // an expired file): the provider spoke, and has nothing new. For a task still
            // without its result it is no answer (below): polled again, and alarmed on.
            Err(PollError::NoFiles(status)) if !reconcile::awaits_result(&record) => {
                tracing::info!(task_id, status, "the provider's record holds none of the task's files now");
                PollOutcome::Pending
            }
            Err(PollError::NoRecord) => {
                tracing::info!(task_id, family = %record.family, "the provider holds no record of the task at its family's endpoint");
                PollOutcome::NoRecord
            }
            Err(PollError::Provider { code, message }) => {
                // It may quote the callback URL (its token) or a file link.
                let provider_message = stemvault_vault::shown::provider_message(&message);
                match suno_callbacks::poll::code_meaning(settings.site, code) {
                    Some(meaning) => {
                        tracing::info!(task_id, code, provider_message, "the provider answered an error code");
                        PollOutcome::Provider(meaning)
                    }
                    // docs.sunoapi.org's 404, an invalid request method or path: nothing of
                    // the task (a wrong PROVIDER_BASE_URL would otherwise give every watched
                    // task up a day later); polled again, as an unreadable answer is.
                    None => {
                        tracing::warn!(
                            task_id,
                            code,
                            provider_message,
                            "the provider answered a code its documentation gives an invalid request method or path \
                             (is PROVIDER_BASE_URL its API root?); not taken as the task unknown, polling again later"
                        );
                        PollOutcome::Unreadable
                    }
                }
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "unreadable record-info answer");
                PollOutcome::Unreadable
            }
        },
        // Redirects are not followed (the key would go with them): the provider's API answers
        // none, so a setting that points elsewhere.
        ProviderAnswer::Http { status: status @ 300..=399, .. } => {
            tracing::error!(
                task_id,
                status,
                "PROVIDER_BASE_URL answered {status}, a redirect, which is not followed (is it the provider's API \
                 root?); no more polls this run"
            );
            misdirected = true;
            PollOutcome::Http(status)
        }
        // The provider says it does not know a task in a 200's `code`; an HTTP 404 or 422 is a
        // path it does not serve: a wrong PROVIDER_BASE_URL (a gateway's page or its own JSON
        // error), which taken as "unknown" would give up every watched task a day later, and
        // fixing the setting would bring none back.
        ProviderAnswer::Http { status: status @ (404 | 422), .. } => {
            // A voice task's may be its generation record's answer (that path is known from
            // the provider's pages only): that task's own, not the setting's.
            misdirected = record.family != suno_callbacks::Family::Voice;
            if misdirected {
                tracing::error!(
                    task_id,
                    status,
                    "PROVIDER_BASE_URL answered HTTP {status}, which the provider's API answers for no task (is it \
                     the provider's API root?); not taken as the task unknown, no more polls this run"
                );
            } else {
                tracing::warn!(
                    task_id,
                    status,
                    "the voice task's records answered HTTP {status} (its generation record's path is known from \
                     the provider's pages only); not taken as the task unknown, polling again later"
                );
            }
            PollOutcome::Unreadable
        }
        ProviderAnswer::Http { status, .. } => {
            tracing::info!(task_id, status, "the provider answered an HTTP error; polling again later");
            PollOutcome::Http(status)
        }
    };
    // A result's accept wrote the task since it was read: read it again.
    let read = (!matches!(polled, PollOutcome::Result(_))).then_some(&record);
    save_with(ports, settings, &task, read, |r, now| poll_bookkeeping(r, &polled, now)).await?;
    Ok(if sent { Handled::Polled { outcome: polled, misdirected } } else { Handled::NotSent })
}

/// Stop watching a task waited for too long, or that the provider keeps saying it does not
/// know (`reason`): a task still without its result is given up (`abandoned`, and a Task
/// Failed event); one that has it, watched only because files' URLs expired, only leaves the
/// index. Each write applies only while the record read again is still in the same case (a
/// result that came meanwhile wins).
async fn give_up<P: Ports>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    record: &TaskRecord,
    reason: GiveUpReason,
) -> Result<Handled, ReconcileError> {
    let awaiting = reconcile::awaits_result(record);
    // And of the family read: a registration giving another family revives the task (its
    // polls start afresh there). Not of the generation, which a client_ref added also moves:
    // the give-up announced would be announced again (under the same id, which names no
    // generation: events::given_up).
    let still = |r: &TaskRecord, now| {
        reconcile::give_up_reason(r, now, settings.give_up_after) == Some(reason)
            && reconcile::awaits_result(r) == awaiting
            && r.family == record.family
    };
    let task_id = task.as_str();
    if !awaiting {
        // Its `done` turns true with this write: said before it, as a give-up's event, so a
        // failed publish leaves the task due and the next run says it again (same id). A
        // callback that lands between the two wins the write, though the event may be out
        // (its own events follow).
        if let Some(done) = events::vaulted_once_unwatched(record, &settings.accept.bucket) {
            ports.publish_events(std::slice::from_ref(&done)).await?;
        }
        let unwatch = |r: &TaskRecord, now| still(r, now).then(|| reconcile::stop_watching(r));
        if !save_with(ports, settings, task, Some(record), unwatch).await? {
            tracing::info!(task_id, "not unwatched after all: the task changed meanwhile");
            return Ok(Handled::Skipped);
        }
        let why = match reason {
            GiveUpReason::NotFound => "the provider no longer knows the task",
            GiveUpReason::Abandoned => "no new URL for the expired files in time",
        };
        tracing::info!(task_id, stage = %record.stage, reason = reason.as_str(), "{why}; no longer watched");
        return Ok(Handled::Unwatched);
    }
    // Published before the write that takes the task out of the index: a failure leaves it
    // due, and the next run publishes again (same event id). A callback that lands between
    // the two wins the write, though the event may be out (consumers see its stage event
    // after it).
    let failed = events::given_up(record, &settings.accept.bucket, reason);
    ports.publish_events(std::slice::from_ref(&failed)).await?;
    let abandon = |r: &TaskRecord, now| still(r, now).then(|| reconcile::abandon(r, reason, now));
    if !save_with(ports, settings, task, Some(record), abandon).await? {
        tracing::info!(task_id, reason = reason.as_str(), "not given up after all: the task changed meanwhile");
        return Ok(Handled::Skipped);
    }
    done_once_given_up(ports, settings, task).await;
    if reason == GiveUpReason::NotFound {
        let since = record.not_found_since.map(|t| t.to_string()).unwrap_or_default();
        tracing::warn!(
            task_id,
            family = %record.family,
            since,
            "gave the task up: the provider has not known it at its family's endpoint for a \
            day; if the family is wrong, PUT /tasks/{{id}} naming the right one revives it"
        );
    } else {
        tracing::warn!(
            task_id,
            stage = %record.stage,
            since = %reconcile::waiting_since(record),
            "gave the task up: no result by callback or poll within RECONCILE_GIVE_UP_SECONDS; \
            a late callback bringing its result still records it"
        );
    }
    Ok(Handled::Abandoned)
}

/// A task given up and settled: its `Task Vaulted` (`….given_up`: done, abandoned), unless a
/// settle recorded saying it (`announced`). A give-up's event may have said
/// `done: false` (a file still being copied when it was made; or a give-up tried again says
/// `true` under the id of the first, which said `false`, and is dropped as its duplicate)
/// while a downloader settled the task before the give-up's write, its own event made before
/// the give-up and saying `false` too: nothing else would say the task is done. A task not
/// settled yet is said done by the settle to come, whose event has that id too. Best effort:
/// a failed publish is an ERROR, not tried again (the task is no longer due).
pub(super) async fn done_once_given_up<P: Ports>(ports: &P, settings: &Settings, task: &TaskId) {
    let given_up = match ports.load_task(task).await {
        Ok(Some(record)) => record,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(task_id = task.as_str(), error = %e, "could not read the task given up again");
            return;
        }
    };
    let Some(manifest_key) = given_up.manifest_key.as_deref().filter(|_| given_up.is_settled()) else { return };
    // The digest (a serialisation and a SHA-256) last.
    let said_already = || {
        given_up.announced.as_deref() == Some(events::announcement(&given_up, given_up.vault, manifest_key).as_str())
    };
    if given_up.abandoned.is_none() || !given_up.is_done(given_up.vault) || said_already() {
        return;
    }
    let vaulted = events::vaulted(&given_up, given_up.vault, &settings.accept.bucket, manifest_key);
    if let Err(e) = ports.publish_events(std::slice::from_ref(&vaulted)).await {
        tracing::error!(task_id = task.as_str(), error = %e, "the Task Vaulted saying the task given up is done was not published");
    }
}

/// A task that cannot be polled (no provider key; no endpoint for its family: `why`) still
/// ends: it is put off (one UpdateItem) until it is to be given up, and given up then, so a
/// client waiting for its vault stops at `abandoned` as it would after polls. At most an hour
/// at a time (the longest poll interval): an instance started with a key since, or a
/// registration naming the family, has it polled within the hour, not after the give-up.
async fn put_off_until_given_up<P: Ports>(
    ports: &P,
    settings: &Settings,
    task_id: &str,
    record: &TaskRecord,
    now: Timestamp,
    why: &str,
) -> Result<Handled, ReconcileError> {
    let give_up_at = reconcile::give_up_at(record, settings.give_up_after);
    let until = give_up_at.min(now.plus(reconcile::MAX_POLL_INTERVAL));
    match ports.postpone_poll(task_id, now, Some(record.version), until).await? {
        Conditional::Applied => {
            tracing::info!(task_id, %give_up_at, "{why}: not polled; given up then unless a result comes");
            Ok(Handled::PutOff)
        }
        // A write since scheduled it (a callback, a registration giving its family): that
        // stands.
        Conditional::Conflict => Ok(Handled::Skipped),
    }
}

/// A task no poll reaches (`why`) whose files failed for what may pass (a source or S3 outage
/// through every receive) and whose wait is over: those files reopened at their own URLs
/// ([`reconcile::relink_own`]), as a poll repeating them would reopen them; the sweeper sends
/// them, its grace period after. Nothing else would bring them back: a redrive of the
/// dead-letter queue finds them settled.
async fn reopen_own<P: Ports>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    record: &TaskRecord,
    why: &str,
) -> Result<Handled, ReconcileError> {
    if !save_with(ports, settings, task, Some(record), reconcile::relink_own).await? {
        return Ok(Handled::Skipped);
    }
    let task_id = task.as_str();
    tracing::info!(
        task_id,
        "{why}: files that failed for what may pass reopened at their own URLs; the sweeper sends them"
    );
    Ok(Handled::Reopened)
}

/// Take a watched task read as `record` out of the reconciler's index while `still` holds of
/// it as read again (`why`, for the log): a write since that changed its case stands.
async fn unwatch_while<P: Ports>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    record: &TaskRecord,
    still: impl Fn(&TaskRecord) -> bool,
    why: &str,
) -> Result<Handled, ReconcileError> {
    let unwatch = |r: &TaskRecord, _| (still(r) && r.reconcile.is_some()).then(|| reconcile::stop_watching(r));
    if !save_with(ports, settings, task, Some(record), unwatch).await? {
        return Ok(Handled::Skipped);
    }
    tracing::info!(task_id = task.as_str(), "{why}: no longer watched");
    Ok(Handled::Unwatched)
}

/// A task whose record cannot be read (`why`) would come first in every run's due list, ahead
/// of every other task, and fail each time: its next poll is put off by the longest poll
/// interval, with an error in the logs each time, until its items are fixed or deleted.
async fn postpone<P: Ports>(ports: &P, task_id: &str, why: String) -> Result<Handled, ReconcileError> {
    tracing::error!(task_id, error = %why, "the task's record is unreadable: fix or delete its items");
    let now = ports.now();
    let until = now.plus(reconcile::MAX_POLL_INTERVAL);
    match ports.postpone_poll(task_id, now, None, until).await? {
        Conditional::Applied => tracing::info!(task_id, next_poll = %until, "its next poll is put off"),
        Conditional::Conflict => tracing::info!(task_id, "it is no longer watched"),
    }
    Ok(Handled::Unreadable)
}

/// Read the task, `change` it (None: nothing to write) and save it over what was read; again
/// on a conflict. The first attempt takes `read` when given (the record this run read and
/// nothing of its own changed since: one Query less per poll). Whether it wrote.
async fn save_with<P: Ports>(
    ports: &P,
    settings: &Settings,
    task: &TaskId,
    read: Option<&TaskRecord>,
    change: impl Fn(&TaskRecord, Timestamp) -> Option<TaskRecord>,
) -> Result<bool, ReconcileError> {
    let change = &change;
    let saved = retry_on_conflict(ports, settings.max_save_attempts, |n| async move {
        let record = match read.filter(|_| n == 0) {
            Some(read) => read.clone(),
            None => match ports.load_task(task).await? {
                Some(record) => record,
                None => return Ok(Attempt::Done(false)),
            },
        };
        let Some(next) = change(&record, ports.now()) else { return Ok(Attempt::Done(false)) };
        match ports.save_task(Some(&record), &next).await {
            Ok(()) => Ok(Attempt::Done(true)),
            Err(StoreError::Conflict) => Ok(Attempt::Conflict),
            Err(e) => Err(ReconcileError::from(e)),
        }
    })
    .await?;
    saved.ok_or(ReconcileError::Contention { attempts: settings.max_save_attempts })
}
