//! Record-info status flags (`status` / `successFlag`, strings or integers) to outcomes and
//! stages (the table is in the module docs of [`crate::poll`]).

use serde_json::Value;

use super::PollError;
use crate::parse::FamilyResults;
use crate::parse::value::{Object, i64_of, non_blank_str};
use crate::{Details, Family, Stage};

/// What a status says, before the family decides the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Pending,
    Text,
    First,
    Success,
    Failed,
    CallbackException,
}

/// The status as sent (trimmed) and what it means for `family`.
pub(super) fn read(family: Family, data: &Object) -> Result<(String, Outcome), PollError> {
    let raw = ["successFlag", "status"].iter().find_map(|k| data.get(*k).filter(|v| !v.is_null()));
    let Some(raw) = raw else { return Err(PollError::NoStatus) };
    let status = match raw {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(unknown_status(&other.to_string())),
    };
    let outcome = match i64_of(Some(raw)) {
        Some(flag) => numeric(family, flag),
        None => match status.to_ascii_uppercase().as_str() {
            // A validation task's result (its phrase ready) only with the phrase: a voice
            // generation's record (`/api/v1/voice/record-info`, no `validateInfo`) is in that
            // status while it waits for its validation to complete.
            "WAIT_VALIDATING" => Some(if has_phrase(data) { Outcome::Success } else { Outcome::Pending }),
            named_status => named(named_status),
        },
    };
    outcome.map(|o| (status.clone(), o)).ok_or_else(|| unknown_status(&status))
}

/// The most of an unknown status an error (and the log line it goes to) quotes: an answer
/// may be megabytes, its status too.
const MAX_STATUS_SHOWN: usize = 64;

/// [`PollError::UnknownStatus`] quoting at most [`MAX_STATUS_SHOWN`] characters of `status`.
fn unknown_status(status: &str) -> PollError {
    let mut shown: String = status.chars().take(MAX_STATUS_SHOWN).collect();
    if shown.len() < status.len() {
        shown.push('…');
    }
    PollError::UnknownStatus(shown)
}

/// Whether the answer carries a validation phrase (`validateInfo`: not null, not blank).
fn has_phrase(data: &Object) -> bool {
    match data.get("validateInfo") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(_) => true,
    }
}

/// MIDI's integer flags, and cover images' (whose `2` means generating).
fn numeric(family: Family, flag: i64) -> Option<Outcome> {
    Some(match (family, flag) {
        (_, 0) | (Family::CoverImage, 2) => Outcome::Pending,
        (_, 1) => Outcome::Success,
        (_, 2 | 3) => Outcome::Failed,
        _ => return None,
    })
}

fn named(status: &str) -> Option<Outcome> {
    Some(match status {
        "PENDING" | "GENERATING" | "WAIT_PROCESSING" | "PROCESSING_VALIDATE" => Outcome::Pending,
        "TEXT_SUCCESS" => Outcome::Text,
        "FIRST_SUCCESS" => Outcome::First,
        "SUCCESS" => Outcome::Success,
        "CALLBACK_EXCEPTION" => Outcome::CallbackException,
        s if is_failed(s) => Outcome::Failed,
        _ => return None,
    })
}

/// Whether a task's status (any case) says it failed: `FAIL`, `FAILED`, or a step's
/// `..._FAIL`, `..._FAILED`, `..._ERROR` (`SENSITIVE_WORD_ERROR`). A callback's voice status
/// is read by the same rule ([`crate::parse`]).
pub(crate) fn is_failed(status: &str) -> bool {
    let status = status.trim().to_ascii_uppercase();
    status == "FAIL"
        || status == "FAILED"
        || ["_FAILED", "_FAIL", "_ERROR"].iter().any(|suffix| status.ends_with(suffix))
}

/// The event's stage, or None when there is nothing to record yet.
pub(super) fn stage(family: Family, outcome: Outcome, results: &FamilyResults, data: &Object) -> Option<Stage> {
    let staged = family.has_stages();
    match outcome {
        Outcome::Pending => None,
        Outcome::Text => staged.then_some(Stage::Text),
        Outcome::First => staged.then_some(Stage::First),
        Outcome::Success => Some(if staged { Stage::Complete } else { Stage::Final }),
        Outcome::Failed => Some(Stage::Error),
        Outcome::CallbackException => shown_by_results(results).or_else(|| carries_error(data).then_some(Stage::Error)),
    }
}

/// How far the results an answer holds show the task got (for `CALLBACK_EXCEPTION`).
fn shown_by_results(results: &FamilyResults) -> Option<Stage> {
    match &results.details {
        Details::Tracks { tracks } if !tracks.is_empty() => {
            let has_audio = |name: &str| results.files.iter().any(|f| f.name.strip_suffix("/audio") == Some(name));
            let with_audio = tracks.iter().filter(|t| has_audio(&t.name)).count();
            Some(match with_audio {
                0 => Stage::Text,
                n if n == tracks.len() => Stage::Complete,
                _ => Stage::First,
            })
        }
        Details::Lyrics { variants } if !variants.is_empty() => Some(Stage::Complete),
        Details::Midi { state, instruments } if state.is_some() || !instruments.is_empty() => Some(Stage::Final),
        Details::Voice { voice_id, validate_info, .. }
            if voice_id.as_deref().is_some_and(|v| !v.trim().is_empty()) || validate_info.is_some() =>
        {
            Some(Stage::Final)
        }
        _ if !results.files.is_empty() => Some(Stage::Final),
        _ => None,
    }
}

/// Whether the answer reports an error: a non-blank `errorMessage` or an `errorCode` other
/// than 0 and 200.
fn carries_error(data: &Object) -> bool {
    non_blank_str(data.get("errorMessage")).is_some()
        || i64_of(data.get("errorCode")).is_some_and(|c| c != 0 && c != 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(family: Family, flag: Value) -> Result<Outcome, PollError> {
        let data = json!({ "successFlag": flag });
        read(family, data.as_object().unwrap()).map(|(_, o)| o)
    }

    #[test]
    fn string_statuses() {
        use Outcome::*;
        let cases = [
            ("PENDING", Pending),
            (" pending ", Pending),
            ("GENERATING", Pending),
            ("wait_processing", Pending),
            ("processing_validate", Pending),
            ("TEXT_SUCCESS", Text),
            ("FIRST_SUCCESS", First),
            ("SUCCESS", Success),
            ("success", Success),
            ("wait_validating", Pending),
            ("CALLBACK_EXCEPTION", CallbackException),
            ("CREATE_TASK_FAILED", Failed),
            ("GENERATE_AUDIO_FAILED", Failed),
            ("GENERATE_LYRICS_FAILED", Failed),
            ("GENERATE_WAV_FAILED", Failed),
            ("GENERATE_MP4_FAILED", Failed),
            ("SENSITIVE_WORD_ERROR", Failed),
            ("processing_validate_fail", Failed),
            ("fail", Failed),
            ("FAILED", Failed),
        ];
        for (status, expected) in cases {
            assert_eq!(outcome(Family::Music, json!(status)), Ok(expected), "{status}");
        }
        assert_eq!(outcome(Family::Music, json!("LATER")), Err(PollError::UnknownStatus("LATER".into())));
        assert_eq!(outcome(Family::Music, json!(true)), Err(PollError::UnknownStatus("true".into())));
        let long = "L".repeat(100_000);
        let shown = format!("{}…", &long[..MAX_STATUS_SHOWN]);
        assert_eq!(outcome(Family::Music, json!(long)), Err(PollError::UnknownStatus(shown.clone())), "a string");
        assert_eq!(outcome(Family::Music, json!([long])).map_err(|e| e.to_string().len() < 120), Err(true), "an array");
        assert_eq!(read(Family::Music, json!({"successFlag":null}).as_object().unwrap()), Err(PollError::NoStatus));
    }

    #[test]
    fn wait_validating_is_done_only_with_the_phrase() {
        let read_voice = |data: Value| read(Family::Voice, data.as_object().unwrap()).map(|(_, o)| o);
        for phrase in [json!("Sing this line"), json!({"phrase": "Sing this line"})] {
            let data = json!({"status": " WAIT_VALIDATING ", "validateInfo": phrase});
            assert_eq!(read_voice(data), Ok(Outcome::Success));
        }
        for missing in [
            json!({"status": "wait_validating", "voiceId": ""}),
            json!({"status": "wait_validating", "validateInfo": " "}),
        ] {
            assert_eq!(read_voice(missing), Ok(Outcome::Pending));
        }
        assert_eq!(read_voice(json!({"status": "success", "voiceId": "v1"})), Ok(Outcome::Success));
    }

    #[test]
    fn integer_flags_as_integers_or_strings() {
        use Outcome::*;
        for flag in [json!(0), json!("0"), json!(0.0)] {
            assert_eq!(outcome(Family::Midi, flag.clone()), Ok(Pending));
            assert_eq!(outcome(Family::CoverImage, flag), Ok(Pending));
        }
        assert_eq!(outcome(Family::Midi, json!(1)), Ok(Success));
        assert_eq!(outcome(Family::Midi, json!(" 1 ")), Ok(Success));
        assert_eq!(outcome(Family::Midi, json!(2)), Ok(Failed));
        assert_eq!(outcome(Family::Midi, json!(3)), Ok(Failed));
        assert_eq!(outcome(Family::CoverImage, json!(2)), Ok(Pending));
        assert_eq!(outcome(Family::CoverImage, json!("3")), Ok(Failed));
        assert_eq!(outcome(Family::Midi, json!(4)), Err(PollError::UnknownStatus("4".into())));
        assert_eq!(outcome(Family::Midi, json!(-1)), Err(PollError::UnknownStatus("-1".into())));
    }
}
