//! Polling ("record-info") answers to the same [`CallbackEvent`] a callback produces.
//!
//! When a callback never comes, the provider's record-info endpoint (section 7 of the
//! callback catalog) still says how the task went. [`parse_poll`] reads that answer for the
//! family that was polled and gives either [`PollResult::Pending`] (nothing to record: a
//! poll that says pending changes nothing) or [`PollResult::Result`] with the event the
//! family's callback would have produced: same task id, family, stage and file **names**
//! (the answer is reshaped into the callback's `data` and read by the very code
//! [`parse_callback`](crate::parse_callback) uses), so the same idempotent merge and
//! enqueue runs whichever came first, and the later one is a duplicate.
//!
//! The parser is as tolerant as the callback parser: unknown fields are ignored, a field of
//! the wrong type counts as absent, and no input makes it panic.
//!
//! # Envelope
//!
//! * **Provider errors.** The providers answer errors either with an HTTP status (the
//!   caller's business) or with HTTP 200 and an error `code` in the body
//!   (`{"code":401,"msg":"...","data":null}`). A body whose `code` is not `200` (read as
//!   in callbacks; a missing code is [`MISSING_CODE`]) is
//!   [`PollError::Provider`] with that code and `msg`, whatever else it holds, so a
//!   reconciler can back off on 429/5xx or report a 401.
//! * **Task.** `data` must be an object with a task id (looked for as in callbacks:
//!   `data.task_id`, `data.taskId`, `task_id`, `taskId`). A `data` that is `null` is
//!   [`PollError::NoRecord`] (the endpoint holds no such task: one registered under another
//!   family, say); any other `data` (or none), or no task id, is [`PollError::NoTask`].
//! * **Status.** `data.successFlag`, else `data.status` (the first that is not `null`), a
//!   string or an integer; a string of digits counts as that integer. Missing:
//!   [`PollError::NoStatus`]; not in the table below: [`PollError::UnknownStatus`].
//!
//! # Status mapping
//!
//! Strings are compared case-insensitively, surrounding whitespace ignored. "Staged" means
//! music and lyrics ([`Family::has_stages`]).
//!
//! | status | meaning | result |
//! |---|---|---|
//! | `PENDING`, `GENERATING`, `wait_processing`, `processing_validate`, `wait_validating` without a `validateInfo` (a voice generation waiting for its validation); integer `0`; cover's integer `2` (generating) | not done | `Pending` |
//! | `TEXT_SUCCESS` | lyrics text ready | staged: stage `text`; others: `Pending` |
//! | `FIRST_SUCCESS` | first track ready | staged: stage `first`; others: `Pending` |
//! | `SUCCESS`, `success` (voice), `wait_validating` with a `validateInfo` (voice validation: phrase ready); integer `1` | done | staged: `complete`; others: `final` |
//! | `CREATE_TASK_FAILED`, `GENERATE_AUDIO_FAILED`, `GENERATE_LYRICS_FAILED`, `GENERATE_WAV_FAILED`, `GENERATE_MP4_FAILED`, `SENSITIVE_WORD_ERROR`, `processing_validate_fail`, `fail`, `FAILED`, and any other status ending in `_FAILED`, `_FAIL` or `_ERROR`; integers `2` (create-task failed; not for cover) and `3` | failed | `error` |
//! | `CALLBACK_EXCEPTION` | the provider could not deliver its callback | see below |
//!
//! Integer flags are documented for MIDI (`0` pending, `1` success, `2` create-task
//! failed, `3` generation failed) and cover images (`0` pending, `1` success, `2`
//! generating, `3` failed); every family but cover images reads them as MIDI's.
//!
//! **`CALLBACK_EXCEPTION`** says only that the provider's delivery of its callback failed,
//! not how far the task got, and the docs keep the results in the record (section 7: URLs
//! are there once the task succeeded). So the answer's content decides:
//!
//! * music: `complete` when it has tracks and every track has an audio file, `first` when
//!   some do, `text` when it has tracks and none has audio yet;
//! * lyrics: `complete` when it has a variant;
//! * WAV, MP4, vocal separation, cover images: `final` when it has a file;
//! * MIDI: `final` when `midiData` has a `state` or an instrument;
//! * voice: `final` when it has a `voiceId` or a `validateInfo`;
//! * with none of these, `error` when the answer carries an error (`errorMessage` not blank,
//!   or an `errorCode` other than `0` and `200`), else `Pending`: the reconciler keeps
//!   polling and, after the retention, gives the task up as `abandoned`.
//!
//! # The event
//!
//! * **Success** (a done status, or `CALLBACK_EXCEPTION` with results): `code` 200 and the
//!   answer's `msg` as the message. A done status from a family whose result is files
//!   ([`Family::delivers_files`]) without any is no result: [`PollError::NoFiles`].
//! * **Failure** (stage `error`, as a failure callback; also a done status whose results say
//!   the task failed, as a callback's would: lyrics whose every variant failed): `code` is
//!   `data.errorCode` when it reads as an integer other than 200, else [`MISSING_CODE`];
//!   the message says why the results failed (as a callback's: a failed variant's
//!   `errorMessage`...), else `data.errorMessage` when it is not blank, else the status as sent.
//!   Whatever results the answer still holds are kept, as a failure callback's would be.
//!
//! # Where the results are (reshaped into the callback's `data`)
//!
//! | family | endpoint | answer | read as the callback's | names |
//! |---|---|---|---|---|
//! | music | `generate/record-info` | `data.response.sunoData[]` (camelCase; else `response.data[]`) | `data.data[]` | `tracks/<id>/audio`, `cover`, ... |
//! | lyrics | `lyrics/record-info` | `data.response.lyricsData[]` (the catalog: `data[]`; `errorMessage`) | `data.data[]` | none |
//! | WAV | `wav/record-info` | `data.response.audioWavUrl` (or `audio_wav_url`) | `data` | `wav` |
//! | vocal separation | `vocal-removal/record-info` | `data.response.<stem>Url` (`pianoUrl` too; `originData` ignored) | `data.vocal_removal_info` | `vocal`, `instrumental`, `backing_vocals`, `piano`, ... |
//! | music video | `mp4/record-info` | `data.response.videoUrl` | `data` | `video` |
//! | MIDI | `midi/record-info` | `data.midiData{state, instruments}` | `data` | none |
//! | cover image | `suno/cover/record-info` | `data.response.images[]` | `data` | `cover-<n>` |
//! | voice | `voice/validate-info`, then `voice/record-info` for a task the first does not know (a voice generation) | `data{voiceId, validateInfo, status, errorCode, errorMessage}` | `data` | none |
//!
//! On a failure, a non-blank `errorMessage` is also given as the callback's `data.error`, so
//! families that keep one (music with no track, WAV, MP4, cover images) record it in
//! [`Details::Error`](crate::Details::Error). [`Family::Unknown`] has no record-info
//! endpoint: [`PollError::UnsupportedFamily`].

mod reshape;
pub(crate) mod status;

use serde_json::Value;

use crate::parse::value::{Object, i64_of, non_blank_str};
use crate::parse::{FamilyResults, MISSING_CODE, envelope};
use crate::{CallbackEvent, Family, ParseError, Stage, TaskId, TaskIdError};

/// What a record-info answer says.
// One value per poll, moved straight into the merge: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PollResult {
    /// Not done yet: nothing to record. `status` is the status as sent (`PENDING`, `0`...).
    Pending { task_id: TaskId, status: String },
    /// The event the family's callback would have produced.
    Result(CallbackEvent),
}

impl PollResult {
    pub fn task_id(&self) -> &TaskId {
        match self {
            PollResult::Pending { task_id, .. } => task_id,
            PollResult::Result(event) => &event.task_id,
        }
    }
}

/// Why an answer is not a usable record-info answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    #[error("answer is not valid JSON: {0}")]
    NotJson(String),
    /// Over [`MAX_JSON_MARKS`](crate::parse::MAX_JSON_MARKS): not read.
    #[error(
        "answer holds more than {} JSON objects, arrays, keys and elements: not read",
        crate::parse::MAX_JSON_MARKS
    )]
    TooManyValues,
    #[error("answer is JSON but not an object")]
    NotAnObject,
    /// HTTP 200 with an error `code` in the body (401 bad key, 429 too many requests, ...).
    #[error("provider answered code {code}: {message}")]
    Provider { code: i64, message: String },
    /// `data` is `null` under code 200: this endpoint holds no record of the task.
    #[error("the answer holds no record (data is null)")]
    NoRecord,
    #[error("the answer holds no task (data is not an object or has no task id)")]
    NoTask,
    #[error("invalid task id: {0}")]
    InvalidTaskId(TaskIdError),
    #[error("the answer has no status (looked at data.successFlag, data.status)")]
    NoStatus,
    #[error("unknown status {0:?}")]
    UnknownStatus(String),
    #[error("family {0} has no record-info endpoint")]
    UnsupportedFamily(Family),
    /// A done status (`SUCCESS`, flag `1`) from a family whose result is files
    /// ([`Family::delivers_files`]), with none of them: the record not yet filled in, or its
    /// fields renamed; polled again rather than recorded as a result with nothing to vault.
    #[error("the answer says {0:?} but holds none of the task's files")]
    NoFiles(String),
}

impl From<crate::parse::JsonError> for PollError {
    fn from(e: crate::parse::JsonError) -> PollError {
        match e {
            crate::parse::JsonError::Invalid(e) => PollError::NotJson(e.to_string()),
            crate::parse::JsonError::TooManyValues => PollError::TooManyValues,
        }
    }
}

impl PollError {
    /// The provider's error code, for a [`PollError::Provider`].
    pub fn provider_code(&self) -> Option<i64> {
        match self {
            PollError::Provider { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The record-info endpoint polled for `family` (both providers, same path under their API
/// host), with `?taskId=<id>` appended by the caller. Voice's is the validation tasks' (the
/// phrase); a voice generation task is polled at [`generation_record_path`] when this one
/// does not know it.
pub fn record_info_path(family: Family) -> Option<&'static str> {
    Some(match family {
        Family::Music => "/api/v1/generate/record-info",
        Family::Lyrics => "/api/v1/lyrics/record-info",
        Family::Wav => "/api/v1/wav/record-info",
        Family::VocalSeparation => "/api/v1/vocal-removal/record-info",
        Family::MusicVideo => "/api/v1/mp4/record-info",
        Family::Midi => "/api/v1/midi/record-info",
        Family::CoverImage => "/api/v1/suno/cover/record-info",
        Family::Voice => "/api/v1/voice/validate-info",
        Family::Unknown => return None,
    })
}

/// Whether a poll of `family`'s [`record_info_path`] may bring a fresh URL for the file named
/// `name`: music's answers carry each track's audio, cover and stream but never the
/// `source_*` URLs its callbacks may have (documented on both providers), so a track's
/// `source_audio` and `source_cover` are renewed by no poll; every other family's answer
/// carries its callback's files.
///
/// ```
/// use suno_callbacks::{Family, poll::renews_file};
///
/// assert!(renews_file(Family::Music, "tracks/8551/audio"));
/// assert!(!renews_file(Family::Music, "tracks/8551/source_audio"));
/// assert!(renews_file(Family::VocalSeparation, "vocal"));
/// assert!(!renews_file(Family::Unknown, "result/cover"), "no endpoint to poll");
/// ```
pub fn renews_file(family: Family, name: &str) -> bool {
    record_info_path(family).is_some() && !(family == Family::Music && crate::parse::is_source_file(name))
}

/// Where a task the family's [`record_info_path`] does not know may be: voice generation tasks
/// (the `voiceId`) have their own record, `/api/v1/voice/record-info`, answered in the same
/// shape and statuses (there `wait_validating`, without a `validateInfo`, is not done yet).
/// A voice task's family does not say which of the two it is.
pub fn generation_record_path(family: Family) -> Option<&'static str> {
    (family == Family::Voice).then_some("/api/v1/voice/record-info")
}

/// The HTTP statuses that ask the caller to wait before asking again: rate limited (429;
/// docs.sunoapi.org's 430 "call frequency too high") or down for maintenance (455, both
/// sites).
pub const WAIT_STATUSES: [u16; 3] = [429, 430, 455];

/// Whether `status` (an HTTP status, or a code that may be one) is one of [`WAIT_STATUSES`].
pub fn is_wait_status(status: i64) -> bool {
    u16::try_from(status).is_ok_and(|s| WAIT_STATUSES.contains(&s))
}

/// Whether a provider's answer `code` asks the caller to wait: [`WAIT_STATUSES`], and
/// docs.sunoapi.org's 405 "rate limit exceeded" (as an HTTP status, 405 is "method not
/// allowed": only a body's `code` reads so).
pub fn asks_to_wait(code: i64) -> bool {
    code == 405 || is_wait_status(code)
}

/// Whose documentation an API answer follows: the two sites give some `code`s other meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// docs.kie.ai: 402 insufficient credits, 404 not found, 429 rate limited.
    Kie,
    /// docs.sunoapi.org: 404 an invalid request method or path, 405 and 430 rate limited,
    /// 429 insufficient credits.
    SunoApi,
}

/// What an API answer's `code` means, in the terms this crate reads codes in (docs.kie.ai's,
/// where [`asks_to_wait`], a 402 is the account's credits, a 404 a task unknown): the code
/// itself, or docs.sunoapi.org's 429 (insufficient credits) as 402. None: docs.sunoapi.org's
/// 404, an invalid request method or path, which says nothing of the task (read as a task
/// unknown, a wrong setting would give every watched task up).
pub fn code_meaning(site: Site, code: i64) -> Option<i64> {
    match (site, code) {
        (Site::SunoApi, 429) => Some(402),
        (Site::SunoApi, 404) => None,
        (_, code) => Some(code),
    }
}

/// Whether a provider's `code` (or HTTP status) says it is failing: a 5xx but 505, which
/// kie documents as "feature disabled", a refusal.
pub fn provider_failing(code: i64) -> bool {
    matches!(code, 500..=504 | 506..=599)
}

/// The `code` of a JSON answer's envelope, read as [`parse_poll`] reads it (a number, or a
/// string of one: `401`, `"401"`, `401.0`); None when the body is no JSON object or has none.
pub fn answer_code(body: &[u8]) -> Option<i64> {
    envelope_code(&crate::parse::read_json(body).ok()?)
}

/// [`answer_code`] of an answer already parsed.
pub fn envelope_code(root: &serde_json::Value) -> Option<i64> {
    i64_of(root.as_object()?.get("code"))
}

/// Parse the answer of `family`'s record-info endpoint (rules in the module docs).
///
/// ```
/// use suno_callbacks::poll::{parse_poll, PollResult};
/// use suno_callbacks::{Family, Stage};
///
/// let body = br#"{"code":200,"msg":"success","data":{"taskId":"988e4c8d3",
///     "response":{"audioWavUrl":"https://example.com/a.wav"},"successFlag":"SUCCESS"}}"#;
/// let PollResult::Result(event) = parse_poll(Family::Wav, body).unwrap() else { panic!() };
/// assert_eq!((event.family, event.stage), (Family::Wav, Stage::Final));
/// assert_eq!(event.files[0].name, "wav");
///
/// let pending = br#"{"code":200,"msg":"success","data":{"taskId":"988e4c8d3","successFlag":"PENDING"}}"#;
/// assert!(matches!(parse_poll(Family::Wav, pending).unwrap(), PollResult::Pending { .. }));
/// ```
pub fn parse_poll(family: Family, body: &[u8]) -> Result<PollResult, PollError> {
    if family == Family::Unknown {
        return Err(PollError::UnsupportedFamily(family));
    }
    let root = crate::parse::read_json(body)?;
    let Value::Object(root) = root else {
        return Err(PollError::NotAnObject);
    };
    let code = envelope::code(&root);
    if code != 200 {
        return Err(PollError::Provider { code, message: envelope::message(&root) });
    }
    let data = match root.get("data") {
        Some(Value::Object(data)) => data,
        Some(Value::Null) => return Err(PollError::NoRecord),
        // Also an answer without `data` at all: not the provider's (a gateway's own JSON, say).
        _ => return Err(PollError::NoTask),
    };
    let task_id = envelope::task_id(&root).map_err(|e| match e {
        ParseError::InvalidTaskId(e) => PollError::InvalidTaskId(e),
        _ => PollError::NoTask,
    })?;
    let (status, outcome) = status::read(family, data)?;
    let results =
        |failed| crate::parse::family_results(family, &root, Some(&reshape::callback_data(family, data, failed)));
    let mut found = results(outcome == status::Outcome::Failed);
    let Some(stage) = status::stage(family, outcome, &found, data) else {
        return Ok(PollResult::Pending { task_id, status });
    };
    // A success whose results say it failed (lyrics whose every variant failed) fails, as its
    // callback does.
    let failure = (stage != Stage::Error).then(|| crate::parse::results_failure(&found.details)).flatten();
    let stage = if failure.is_some() { Stage::Error } else { stage };
    if stage == Stage::Error && outcome != status::Outcome::Failed && failure.is_none() {
        // A CALLBACK_EXCEPTION read as a failure keeps its error text too.
        found = results(true);
    }
    if outcome == status::Outcome::Success && stage != Stage::Error && family.delivers_files() && found.files.is_empty()
    {
        return Err(PollError::NoFiles(status));
    }
    let (code, message) = match stage {
        Stage::Error => failure_code_and_message(data, &status, failure),
        _ => (200, envelope::message(&root)),
    };
    let FamilyResults { details, files, streams } = found;
    Ok(PollResult::Result(CallbackEvent { task_id, family, stage, code, message, files, streams, details }))
}

/// A failure's code (`errorCode` unless it is 200) and message (why the results failed, else
/// `errorMessage`, else the status).
fn failure_code_and_message(data: &Object, status: &str, results_failure: Option<String>) -> (i64, String) {
    let code = i64_of(data.get("errorCode")).filter(|c| *c != 200).unwrap_or(MISSING_CODE);
    let message =
        results_failure.unwrap_or_else(|| non_blank_str(data.get("errorMessage")).unwrap_or(status).to_owned());
    (code, message)
}
