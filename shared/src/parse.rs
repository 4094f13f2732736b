//! Raw callback bytes to one [`CallbackEvent`].
//!
//! The parser works on a [`serde_json::Value`], so it is tolerant: unknown fields are
//! ignored, a field of the wrong type counts as absent, and no input can make it panic.
//!
//! # Envelope
//!
//! * **Task id**: the first non-blank *string* among `data.task_id`, `data.taskId`, top-level
//!   `task_id`, top-level `taskId` (numbers are not accepted). It is validated with
//!   [`TaskId::parse`](crate::TaskId::parse); an invalid first candidate is an error, the
//!   parser does not fall through to the next one.
//! * **`code`**: an integer, an integral float (`200.0`) or a string of digits (`"200"`).
//!   A missing or unreadable code is recorded as [`MISSING_CODE`] (`0`): only `200` means
//!   success, so a body that does not say it succeeded is never taken as a success.
//! * **`msg`**: the message, `""` when absent or not a string.
//! * **`callbackType`**: `data.callbackType` (else top-level `callbackType`), compared
//!   case-insensitively.
//!
//! # Family detection
//!
//! The body never names its family, so it is inferred from the keys of `data`, in this
//! order (first match wins; "key present" means present even with a `null` value):
//!
//! 1. [`VocalSeparation`](Family::VocalSeparation): `vocal_separation_info` or `vocal_removal_info`.
//! 2. [`CoverImage`](Family::CoverImage): `images`.
//! 3. [`Wav`](Family::Wav): `audioWavUrl` or `audio_wav_url`.
//! 4. [`MusicVideo`](Family::MusicVideo): `video_url` (or `videoUrl`).
//! 5. [`Midi`](Family::Midi): `instruments`; or `state` with a top-level `task_id` (or
//!    `taskId`, the older docs.kie.ai field list's); or the legacy docs.kie.ai shape:
//!    `data.taskId`, no `callbackType`, and a `msg` mentioning MIDI.
//! 6. [`Voice`](Family::Voice): `voiceId` or `validateInfo`; or both `status` and `errorCode`
//!    with neither `callbackType` nor `data.data`.
//! 7. [`Lyrics`](Family::Lyrics): `data.data` holds an item with `text` and none with an audio
//!    URL; or `data.taskId` without `data.task_id` next to a `callbackType` and no item with
//!    an audio URL (docs.sunoapi.org lyrics); or a failure (`code` != 200) without an item
//!    with an audio URL whose `msg` mentions "song description", "lyrics generation", "lyric
//!    generation" or "generate lyrics", or that keeps `callbackType "complete"` with no
//!    items, whatever its `msg` (the docs.kie.ai lyrics failure: every music failure
//!    documented is `error`).
//! 8. [`Music`](Family::Music): a `callbackType`, or `data.data` is an array. This covers the
//!    seven music-track endpoints, including replace-section's failure (`data.error`).
//! 9. [`Midi`](Family::Midi): there is a top-level `task_id` and `data` is `null`, absent
//!    (the MIDI failure body; also with a top-level `taskId` and a `msg` mentioning MIDI) or
//!    an empty object (MIDI data may come back empty).
//! 10. [`Unknown`](Family::Unknown) otherwise: still accepted, as long as it has a task id.
//!
//! A failure body is keyed, staged and recorded whatever family it is detected as; the
//! family only decides where file URLs are looked for.
//!
//! # Stage
//!
//! * Music and lyrics: [`Stage::Error`] when `code` != 200 or `callbackType` is `error`;
//!   otherwise `text`, `first` or `complete` from `callbackType`, and a missing or unknown
//!   `callbackType` counts as `complete` (some tasks send `complete` directly).
//! * Every other family (and unknown bodies): [`Stage::Final`] when `code` == 200, else
//!   [`Stage::Error`].
//! * Whatever the envelope says, [`Stage::Error`] when the results say the task failed: a
//!   voice `status` that failed, or lyrics whose every variant's `status` failed (docs.kie.ai
//!   lists `complete|failed`). Under a 200 envelope the message then says why (a failed
//!   envelope keeps its own): the results' error message (the
//!   voice's `errorMessage`, the first failed variant's), else the voice's status, else
//!   `every lyrics variant failed`.
//!
//! # File names
//!
//! Every file gets a readable name, unique within the body and the **same** for the same file
//! whichever stage or dialect carried it, so a `first` and a later `complete` callback name a
//! track's audio identically. Names are made of S3-safe segments joined by `/`: ASCII letters,
//! digits and `- _ . * ~ + = @ , : !` (anything else becomes `_`), no `..`, at most 64
//! characters per segment. Blank URLs and `null`s are dropped; surrounding whitespace is
//! trimmed. In a field the family defines, any other string is kept even when it is not
//! an http(s) URL, so the downloader can refuse it with a recorded reason.
//!
//! | family | source | name |
//! |---|---|---|
//! | music | `data.data[n].audio_url` | `tracks/<id>/audio` |
//! | | `image_url` | `tracks/<id>/cover` |
//! | | `source_audio_url` | `tracks/<id>/source_audio` |
//! | | `source_image_url` | `tracks/<id>/source_cover` |
//! | | `stream_audio_url` (a stream, not a file) | `tracks/<id>/stream` |
//! | | `source_stream_audio_url` (a stream) | `tracks/<id>/source_stream` |
//! | vocal separation | `<stem>_url` (or `<stem>Url`) in the info object | `<stem>` (`vocal`, `drums`, `backing_vocals`...) |
//! | cover image | `data.images[i]` | `cover-<i+1>` |
//! | WAV | `data.audioWavUrl` / `data.audio_wav_url` | `wav` |
//! | music video | `data.video_url` | `video` |
//! | lyrics, MIDI, voice | none (results are in [`Details`]) | |
//! | unknown | http(s) strings under `*_url` / `*Url` keys or in `images` arrays, anywhere | path under `data`, snake_case, suffix stripped: `data.result.coverUrl` -> `result/cover`, arrays add `-<i+1>` |
//!
//! `<id>` is the track's `id` made S3-safe; a track without an id is `track-<n>` (its 1-based
//! position), and an id repeated within one body (the documentation examples do this) gets
//! `-2`, `-3`... in order of appearance (an id `track` is hashed, so that such a `track-2`
//! is never an id-less track's).
//!
//! **Distinct after sanitising.** An id (or, for unknown bodies and separation stems, a
//! key-derived segment) that sanitising changed or truncated gets `-<first 8 hex of
//! SHA-256(raw)>`, the sanitised text being cut so the segment stays within 64 characters:
//! `a/b` -> `tracks/a_b-<hash>`, so it never takes `a_b`'s name `tracks/a_b`, whichever
//! callback carries which. Ids already safe keep their name, unless they end like a hash
//! (`-` and 8 lower-case hex digits) or like a number the parser appends (`x-2`, `track-3`),
//! or are a track id `track`: those are hashed too, so that no name the parser makes equals
//! one kept unchanged.
//!
//! **Reserved names.** A name never starts with the segment `manifest`, `callbacks` or
//! `details` (alone or followed by `.`), where the task's manifest, verbatim bodies and
//! results kept apart are stored: such a
//! reserved word gets `-<hash of the segment>` (`manifest` -> `manifest-<hash>`,
//! `callbacks/first` -> `callbacks-<hash>/first`), for every family. See
//! [`s3_key::is_reserved_name`](crate::s3_key::is_reserved_name). Track fields are also read in their camelCase
//! spelling (`audioUrl`, `imageUrl`...), under the same names.
//!
//! Streams are kept only when they are `http` or `https` URLs (consumers get them back as
//! links). Unknown bodies: keys containing `stream` go to `streams`, callback URLs (`callBackUrl`...)
//! are ignored, the walk stops [`generic::MAX_DEPTH`] levels deep and after
//! [`generic::MAX_URLS`] URLs.
//!
//! Music tracks and cover images: the first [`MAX_TRACKS_OR_IMAGES`] of them; separation
//! stems: the first [`MAX_STEMS`].
//!
//! # Details
//!
//! * Music: [`Details::Tracks`], or [`Details::Error`] when there are no tracks and
//!   `data.error` is a string (replace-section's failure).
//! * Lyrics: [`Details::Lyrics`] (`error_message` or `errorMessage`).
//! * MIDI: [`Details::Midi`]; `start`/`end`/`velocity` may be numbers or strings. A note
//!   whose `pitch`, `start` or `end` cannot be read as a finite number is skipped (its data
//!   stays in the verbatim callback body); a missing `velocity` is `0`.
//! * Numbers DynamoDB could not store are not kept (details are stored in the task's item, and
//!   DynamoDB numbers stop near 1E+126 / 1E-130): a decimal must be `0` or have a magnitude
//!   within `1e-9..=1e9`, and a MIDI `pitch` must be within `0..=1000`. A MIDI note with any
//!   number out of range is skipped; a track `duration` out of range is `None`; a voice
//!   `validateInfo` holding such a number, an object with an empty key (a DynamoDB map's keys
//!   are attribute names, never empty) or nested more than 16 levels is `None`. The verbatim
//!   body keeps them all.
//! * Vocal separation: [`Details::Separation`]: `separate_vocal` when an `instrumental` file
//!   is present, `split_stem` when any stem other than `vocal`, `origin`, `instrumental` is,
//!   else unknown.
//! * Voice: [`Details::Voice`]; a `status` that says it failed (`fail`, `failed`,
//!   `<step>_fail`, `<step>_error`, as a poll reads it) is a failure whatever the envelope's
//!   `code` (the documented failure sends 400).

pub(crate) mod envelope;
mod family;
mod files;
pub mod generic;
pub(crate) mod json_text;
mod lyrics;
mod midi;
mod music;
mod names;
mod separation;
mod single;
mod task_id_only;
pub(crate) mod value;
mod voice;

use serde_json::Value;

use crate::{CallbackEvent, Details, Family, FileRef, Stage, TaskIdError};

/// The most tracks (or cover images) one body contributes: a task makes two, and each is
/// built in memory before the record's size is checked (the verbatim body keeps any more).
pub const MAX_TRACKS_OR_IMAGES: usize = 256;

pub use envelope::MISSING_CODE;
pub use family::names_lyrics;
pub use files::{MAX_NAME_BYTES, is_http};
pub(crate) use music::is_source_file;
pub use names::{MAX_SEGMENT_LEN, sanitize_segment};
pub use separation::MAX_STEMS;
pub use task_id_only::callback_task_id;

/// Why a body is not a usable callback.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// Over [`MAX_JSON_MARKS`]: not read, so whether it is valid is not known.
    #[error("body holds more than {MAX_JSON_MARKS} JSON objects, arrays, keys and elements: not read")]
    TooManyValues,
    #[error("body is JSON but not an object")]
    NotAnObject,
    #[error("no task id found (looked at data.task_id, data.taskId, task_id, taskId)")]
    NoTaskId,
    #[error("invalid task id: {0}")]
    InvalidTaskId(#[from] TaskIdError),
}

impl From<JsonError> for ParseError {
    fn from(e: JsonError) -> ParseError {
        match e {
            JsonError::Invalid(e) => ParseError::NotJson(e.to_string()),
            JsonError::TooManyValues => ParseError::TooManyValues,
        }
    }
}

/// `body` as JSON, read as [`parse_callback`] and [`poll::parse_poll`](crate::poll::parse_poll)
/// read it: a broken character inside a string (an unpaired surrogate escape, a byte that is
/// not UTF-8) reads as U+FFFD, where serde_json alone refuses the whole body; one holding
/// more than [`MAX_JSON_MARKS`] values is not read.
pub use json_text::parse as read_json;
pub use json_text::{JsonError, MAX_JSON_MARKS};

/// Parse one callback body.
///
/// ```
/// use suno_callbacks::{parse_callback, Family, Stage};
///
/// let body = br#"{"code":200,"msg":"success","data":{"task_id":"988e4c8d3","audioWavUrl":"https://example.com/a.wav"}}"#;
/// let event = parse_callback(body).unwrap();
/// assert_eq!(event.task_id.as_str(), "988e4c8d3");
/// assert_eq!(event.family, Family::Wav);
/// assert_eq!(event.stage, Stage::Final);
/// assert_eq!(event.files[0].name, "wav");
/// ```
pub fn parse_callback(body: &[u8]) -> Result<CallbackEvent, ParseError> {
    // serde_json's messages name a position and a category, never the input itself.
    let root = read_json(body)?;
    let Value::Object(root) = root else {
        return Err(ParseError::NotAnObject);
    };
    let task_id = envelope::task_id(&root)?;
    let code = envelope::code(&root);
    let message = envelope::message(&root);
    let callback_type = envelope::callback_type(&root);
    let data = root.get("data").and_then(Value::as_object);

    let family = family::detect(&root, code, &message, callback_type.as_deref());
    let FamilyResults { details, files, streams } = family_results(family, &root, data);
    let (stage, message) = match envelope::stage(family, code, callback_type.as_deref()) {
        Stage::Error => (Stage::Error, message),
        stage => match results_failure(&details) {
            Some(why) => (Stage::Error, why),
            None => (stage, message),
        },
    };
    Ok(CallbackEvent { task_id, family, stage, code, message, files, streams, details })
}

/// What a family's `data` holds: its details, and its files and streams under their names.
pub(crate) struct FamilyResults {
    pub(crate) details: Details,
    pub(crate) files: Vec<FileRef>,
    pub(crate) streams: Vec<FileRef>,
}

/// Read `data` (a callback's `data` object) as `family` does; `root` is the whole body, which
/// only [`Family::Unknown`] walks. [`crate::poll`] reshapes a record-info answer into a
/// callback's `data` and calls this too, so a file gets one name however it was learnt.
pub(crate) fn family_results(
    family: Family,
    root: &serde_json::Map<String, Value>,
    data: Option<&serde_json::Map<String, Value>>,
) -> FamilyResults {
    let mut files = files::FileSet::default();
    let details = match family {
        Family::Music => music::parse(data, &mut files),
        Family::Lyrics => lyrics::parse(data),
        Family::VocalSeparation => separation::parse(data, &mut files),
        Family::CoverImage => single::cover_images(data, &mut files),
        Family::Wav => single::wav(data, &mut files),
        Family::MusicVideo => single::video(data, &mut files),
        Family::Midi => midi::parse(data),
        Family::Voice => voice::parse(data),
        Family::Unknown => generic::parse(root, &mut files),
    };
    let (files, streams) = files.finish();
    FamilyResults { details, files, streams }
}

/// When `details` say the task failed whatever the envelope says, why: a voice `status` that
/// failed (a voice body's `errorCode` is not the envelope's), or lyrics whose every variant
/// failed. A poll's answer is read by the same rule.
pub(crate) fn results_failure(details: &Details) -> Option<String> {
    voice::failure(details).or_else(|| lyrics::failure(details))
}

/// `data.error` as a [`Details::Error`], when it is a non-blank string.
fn error_details(data: Option<&serde_json::Map<String, Value>>) -> Option<Details> {
    let error = value::non_blank_str(data?.get("error"))?;
    Some(Details::Error { error: error.to_owned() })
}
