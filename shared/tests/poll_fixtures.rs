//! Every documented record-info answer (`fixtures/polls/poll-*`) and our own answers for the
//! documented shapes and statuses given without an example (`fixtures/polls/own/`, named
//! `__own__`, written from section 7 of the callback catalog: `fixtures/README.md`) read by `parse_poll`
//! to exactly the expected result; where a callback of the same task exists, the poll and
//! the callback give the same event (file names, URLs, details), message aside.

mod common;

use std::path::PathBuf;

use common::{documented_dir, documented_polls_dir, file, json_files, names, own_dir, own_polls_dir, read};
use suno_callbacks::{
    CallbackEvent, Details, Family, FileRef, LyricsVariant, MidiInstrument, MidiNote, PollError, PollResult, Stage,
    parse_poll,
};

/// What one answer must give.
enum Want {
    Pending(&'static str, &'static str),
    /// The same event as this callback fixture (own or documented), with this message.
    SameAsCallback(PathBuf, &'static str),
    Event(Box<CallbackEvent>),
    Error(PollError),
}

const HARBOUR: &str = "7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c";

fn documented(name: &str) -> PathBuf {
    documented_dir().join(name)
}

fn own(name: &str) -> PathBuf {
    own_dir().join(name)
}

/// The family whose endpoint answered, from the file name.
fn family_of(name: &str) -> Family {
    let endpoint = name.trim_start_matches("poll-").split("__").next().unwrap_or_default();
    match endpoint {
        "generate-record-info" | "any-record-info" => Family::Music,
        "lyrics-record-info" => Family::Lyrics,
        "wav-record-info" => Family::Wav,
        "vocal-removal-record-info" => Family::VocalSeparation,
        "mp4-record-info" => Family::MusicVideo,
        "midi-record-info" => Family::Midi,
        "cover-record-info" => Family::CoverImage,
        "voice-validate-info" => Family::Voice,
        other => panic!("no family for endpoint {other}"),
    }
}

fn event(task_id: &str, family: Family, stage: Stage, code: i64, message: &str) -> CallbackEvent {
    common::event(task_id, family, stage, code, message)
}

fn failure(task_id: &str, family: Family, code: i64, message: &str, details: Details) -> Want {
    let mut e = event(task_id, family, Stage::Error, code, message);
    e.details = details;
    Want::Event(Box::new(e))
}

fn error_details(error: &str) -> Details {
    Details::Error { error: error.into() }
}

fn documented_answers() -> Vec<(&'static str, Want)> {
    let separate_vocal =
        || Want::SameAsCallback(documented("separate-vocals__seed-003__200-separate_vocal.json"), "success");
    vec![
        ("poll-lyrics-record-info__kie__200.json", Want::Event(Box::new(lyrics()))),
        ("poll-midi-record-info__kie__200.json", Want::Event(Box::new(midi()))),
        ("poll-vocal-removal-record-info__kie-dogtest__200-separate_vocal.json", separate_vocal()),
        ("poll-vocal-removal-record-info__kie__200-separate_vocal.json", separate_vocal()),
        (
            "poll-wav-record-info__kie-dogtest-cn__200.json",
            Want::SameAsCallback(documented("convert-to-wav__kie__200.json"), "success"),
        ),
    ]
}

/// Both sites' lyrics record-info pages give the variants as `response.lyricsData`.
fn lyrics() -> CallbackEvent {
    let mut e = event("11dc****8b0f", Family::Lyrics, Stage::Complete, 200, "success");
    e.details = Details::Lyrics {
        variants: vec![LyricsVariant {
            text: "[Verse]\n我穿越城市黑暗夜\n心中燃烧梦想的烈火".into(),
            title: "钢铁侠".into(),
            status: "complete".into(),
            error_message: String::new(),
        }],
    };
    e
}

fn midi() -> CallbackEvent {
    let mut e = event("5c79****be8e", Family::Midi, Stage::Final, 200, "success");
    // Numbers as serde_json reads them (without `float_roundtrip` it may be one ULP off
    // the nearest double), as in the answer.
    let n = |text: &str| serde_json::from_str::<f64>(text).expect("a number");
    let note = |pitch, start: &str, end: &str| MidiNote { pitch, start: n(start), end: n(end), velocity: 1.0 };
    e.details = Details::Midi {
        state: Some("complete".into()),
        instruments: vec![
            MidiInstrument {
                name: "Drums".into(),
                notes: vec![
                    note(73, "0.036458333333333336", "0.18229166666666666"),
                    note(61, "0.046875", "0.19270833333333334"),
                ],
            },
            MidiInstrument {
                name: "Electric Bass (finger)".into(),
                notes: vec![note(44, "7.6875", "7.911458333333333")],
            },
        ],
    };
    e
}

fn own_answers() -> Vec<(&'static str, Want)> {
    use Family::*;
    let harbour_complete = || Want::SameAsCallback(own("generate-music__own__200-complete.json"), "success");
    vec![
        ("poll-any-record-info__own__200-no-task.json", Want::Error(PollError::NoRecord)),
        (
            "poll-any-record-info__own__401.json",
            Want::Error(PollError::Provider { code: 401, message: "You do not have access permissions".into() }),
        ),
        (
            "poll-any-record-info__own__429.json",
            Want::Error(PollError::Provider { code: 429, message: "Rate limited".into() }),
        ),
        (
            "poll-cover-record-info__own__200-1.json",
            Want::SameAsCallback(documented("cover-image__kie__200.json"), "success"),
        ),
        ("poll-cover-record-info__own__200-2.json", Want::Pending("21aee3c3c2a01fa5e030b3799fa4dd56", "2")),
        (
            "poll-cover-record-info__own__200-3.json",
            failure(
                "g1c2c3d4e5f60718293a4b5c6d7e8f90",
                CoverImage,
                500,
                "Cover generation failed",
                error_details("Cover generation failed"),
            ),
        ),
        ("poll-generate-record-info__own-sunoapi__200-CALLBACK_EXCEPTION.json", harbour_complete()),
        (
            "poll-generate-record-info__own__200-CREATE_TASK_FAILED.json",
            failure(
                "a5b2c3d4e5f60718293a4b5c6d7e8f90",
                Music,
                0,
                "CREATE_TASK_FAILED",
                Details::Tracks { tracks: vec![] },
            ),
        ),
        ("poll-generate-record-info__own__200-FIRST_SUCCESS.json", Want::Event(Box::new(harbour_first()))),
        (
            "poll-generate-record-info__own__200-GENERATE_AUDIO_FAILED.json",
            failure(
                "a3b2c3d4e5f60718293a4b5c6d7e8f90",
                Music,
                413,
                "Uploaded audio matches an existing work of art.",
                error_details("Uploaded audio matches an existing work of art."),
            ),
        ),
        ("poll-generate-record-info__own__200-PENDING.json", Want::Pending(HARBOUR, "PENDING")),
        (
            "poll-generate-record-info__own__200-SENSITIVE_WORD_ERROR.json",
            failure(
                "a4b2c3d4e5f60718293a4b5c6d7e8f90",
                Music,
                400,
                "Your lyrics contain copyrighted material.",
                error_details("Your lyrics contain copyrighted material."),
            ),
        ),
        ("poll-generate-record-info__own__200-SUCCESS.json", harbour_complete()),
        ("poll-generate-record-info__own__200-TEXT_SUCCESS.json", Want::Event(Box::new(harbour_text()))),
        (
            "poll-lyrics-record-info__own__200-GENERATE_LYRICS_FAILED.json",
            failure(
                "b9c2c3d4e5f60718293a4b5c6d7e8f90",
                Lyrics,
                400,
                "Lyrics generation failed",
                Details::Lyrics { variants: vec![] },
            ),
        ),
        (
            "poll-lyrics-record-info__own__200-SUCCESS.json",
            Want::SameAsCallback(own("generate-lyrics__sunoapi__200.json"), "success"),
        ),
        ("poll-midi-record-info__own__200-0.json", Want::Pending("f1c2c3d4e5f60718293a4b5c6d7e8f90", "0")),
        ("poll-midi-record-info__own__200-1-string-empty.json", {
            let mut e = event("f3c2c3d4e5f60718293a4b5c6d7e8f90", Midi, Stage::Final, 200, "success");
            e.details = Details::Midi { state: None, instruments: vec![] };
            Want::Event(Box::new(e))
        }),
        (
            "poll-midi-record-info__own__200-3.json",
            failure(
                "f2c2c3d4e5f60718293a4b5c6d7e8f90",
                Midi,
                500,
                "MIDI generation failed",
                Details::Midi { state: None, instruments: vec![] },
            ),
        ),
        (
            "poll-mp4-record-info__own__200-GENERATE_MP4_FAILED.json",
            failure(
                "e2c2c3d4e5f60718293a4b5c6d7e8f90",
                MusicVideo,
                400,
                "Music video generation failed",
                error_details("Music video generation failed"),
            ),
        ),
        (
            "poll-mp4-record-info__own__200-SUCCESS.json",
            Want::SameAsCallback(documented("create-music-video__kie__200.json"), "success"),
        ),
        ("poll-vocal-removal-record-info__own-sunoapi__200-split_stem.json", Want::Event(Box::new(split_stem()))),
        ("poll-vocal-removal-record-info__own__200-CALLBACK_EXCEPTION.json", {
            let mut e = event("d1c2c3d4e5f60718293a4b5c6d7e8f90", VocalSeparation, Stage::Final, 200, "success");
            let url = |stem: &str| format!("https://file.aiquickdraw.com/s/d1_{stem}.mp3");
            e.files = vec![file("vocal", &url("Vocals")), file("drums", &url("Drums")), file("piano", &url("Piano"))];
            e.details = Details::Separation { separation_type: Some(suno_callbacks::SeparationType::SplitStem) };
            Want::Event(Box::new(e))
        }),
        (
            "poll-voice-validate-info__own__200-processing_validate.json",
            Want::Pending("b2c2c3d4e5f60718293a4b5c6d7e8f90", "processing_validate"),
        ),
        (
            "poll-voice-validate-info__own__200-processing_validate_fail.json",
            failure(
                "b3c2c3d4e5f60718293a4b5c6d7e8f90",
                Voice,
                500,
                "Validation failed",
                // What the failure callback of the same task records.
                common::parse_file(own("suno-voice-validate__sunoapi__400.json")).details,
            ),
        ),
        (
            "poll-voice-validate-info__own__200-wait_validating.json",
            Want::SameAsCallback(own("suno-voice-validate__sunoapi__200.json"), "success"),
        ),
        (
            "poll-wav-record-info__own__200-GENERATE_WAV_FAILED.json",
            failure(
                "c9c2c3d4e5f60718293a4b5c6d7e8f90",
                Wav,
                500,
                "Internal Error - Please try again later",
                error_details("Internal Error - Please try again later"),
            ),
        ),
    ]
}

/// The harbour task's complete callback, read at the `first` stage: track 1 done, track 2 streaming.
fn harbour_first() -> CallbackEvent {
    let complete = common::parse_file(own("generate-music__own__200-complete.json"));
    let mut e = event(HARBOUR, Family::Music, Stage::First, 200, "success");
    e.files = complete.files.iter().filter(|f| f.name.starts_with("tracks/4f1e2d3c-0001/")).cloned().collect();
    e.streams = complete.streams.clone();
    let Details::Tracks { mut tracks } = complete.details else { panic!("complete has tracks") };
    tracks[1].duration = None;
    e.details = Details::Tracks { tracks };
    e
}

/// The harbour task at the `text` stage: both tracks known, no URL yet.
fn harbour_text() -> CallbackEvent {
    let mut e = harbour_first();
    e.stage = Stage::Text;
    e.files.clear();
    e.streams.clear();
    if let Details::Tracks { tracks } = &mut e.details {
        tracks[0].duration = None;
    }
    e
}

/// docs.sunoapi.org's answer (`audioId`) for a split_stem task: the 12 stems of the
/// documented kie split_stem callback, in its order, under its names.
fn split_stem() -> CallbackEvent {
    let mut e = event("e649edb7abfd759285bd41a47a634b10", Family::VocalSeparation, Stage::Final, 200, "success");
    let stems = [
        ("backing_vocals", "Backing_Vocals"),
        ("bass", "Bass"),
        ("brass", "Brass"),
        ("drums", "Drums"),
        ("fx", "FX"),
        ("guitar", "Guitar"),
        ("keyboard", "Keyboard"),
        ("percussion", "Percussion"),
        ("strings", "Strings"),
        ("synth", "Synth"),
        ("vocal", "Vocal"),
        ("woodwinds", "Woodwinds"),
    ];
    e.files = stems
        .iter()
        .map(|(name, file_stem)| file(name, &format!("https://file.aiquickdraw.com/s/e649edb7_{file_stem}.mp3")))
        .collect();
    e.details = Details::Separation { separation_type: Some(suno_callbacks::SeparationType::SplitStem) };
    e
}

fn poll_file(path: PathBuf, family: Family) -> Result<PollResult, PollError> {
    parse_poll(family, &read(path))
}

fn check(dir: PathBuf, name: &str, want: Want) {
    let got = poll_file(dir.join(name), family_of(name));
    match want {
        Want::Pending(task, status) => match got {
            Ok(PollResult::Pending { task_id, status: s }) => {
                assert_eq!((task_id.as_str(), s.as_str()), (task, status), "{name}")
            }
            other => panic!("{name}: expected pending, got {other:?}"),
        },
        Want::Error(expected) => assert_eq!(got, Err(expected), "{name}"),
        Want::Event(expected) => assert_eq!(got, Ok(PollResult::Result(*expected)), "{name}"),
        Want::SameAsCallback(callback, message) => {
            let mut expected = common::parse_file(callback);
            expected.message = message.to_owned();
            assert_eq!(got, Ok(PollResult::Result(expected)), "{name}");
        }
    }
}

/// `poll-*` files in `dir` (the documented directory also holds other answers).
fn poll_files(dir: PathBuf) -> Vec<String> {
    json_files(dir).into_iter().filter(|n| n.starts_with("poll-")).collect()
}

/// The answers a list expects, sorted like [`json_files`].
fn expected_files(answers: &[(&'static str, Want)]) -> Vec<String> {
    let mut names: Vec<String> = answers.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    names
}

#[test]
fn every_answer_has_an_expectation_and_the_other_way_round() {
    assert_eq!(poll_files(documented_polls_dir()), expected_files(&documented_answers()));
    assert_eq!(poll_files(own_polls_dir()), expected_files(&own_answers()));
}

#[test]
fn every_documented_answer_gives_its_expected_result() {
    for (name, want) in documented_answers() {
        check(documented_polls_dir(), name, want);
    }
}

#[test]
fn every_own_answer_gives_its_expected_result() {
    for (name, want) in own_answers() {
        check(own_polls_dir(), name, want);
    }
}

fn result_of(dir: PathBuf, name: &str) -> CallbackEvent {
    match poll_file(dir.join(name), family_of(name)) {
        Ok(PollResult::Result(event)) => event,
        other => panic!("{name}: expected a result, got {other:?}"),
    }
}

fn pairs(files: &[FileRef]) -> Vec<(&str, &str)> {
    files.iter().map(|f| (f.name.as_str(), f.url.as_str())).collect()
}

#[test]
fn first_poll_and_first_callback_name_track_files_alike() {
    let poll = result_of(own_polls_dir(), "poll-generate-record-info__own__200-FIRST_SUCCESS.json");
    let callback = common::parse_file(own("generate-music__own__200-first.json"));
    assert_eq!((poll.stage, callback.stage), (Stage::First, Stage::First));
    assert_eq!(pairs(&poll.files), pairs(&callback.files));
    assert_eq!(names(&poll.streams), ["tracks/4f1e2d3c-0001/stream", "tracks/4f1e2d3c-0002/stream"]);
    assert_eq!(pairs(&poll.streams)[..1], pairs(&callback.streams)[..]);
}

#[test]
fn split_stem_poll_and_callback_share_names() {
    let poll = result_of(own_polls_dir(), "poll-vocal-removal-record-info__own-sunoapi__200-split_stem.json");
    let callback = common::parse_file(documented("separate-vocals__kie__200-split_stem.json"));
    assert_eq!(names(&poll.files), names(&callback.files));
    assert_eq!(poll.details, callback.details);
}

#[test]
fn failure_polls_record_what_failure_callbacks_record() {
    let cases = [
        ("poll-voice-validate-info__own__200-processing_validate_fail.json", "suno-voice-validate__sunoapi__400.json"),
        ("poll-wav-record-info__own__200-GENERATE_WAV_FAILED.json", "convert-to-wav__kie__500.json"),
        ("poll-mp4-record-info__own__200-GENERATE_MP4_FAILED.json", "create-music-video__sunoapi__400.json"),
    ];
    for (poll, callback) in cases {
        let poll_event = result_of(own_polls_dir(), poll);
        let callback_event = common::parse_file(own(callback));
        assert_eq!(
            (poll_event.family, poll_event.stage, poll_event.succeeded(), &poll_event.files),
            (callback_event.family, callback_event.stage, callback_event.succeeded(), &callback_event.files),
            "{poll} ~ {callback}"
        );
    }
}

fn inline(family: Family, data: serde_json::Value) -> Result<PollResult, PollError> {
    let body = serde_json::json!({"code": 200, "msg": "success", "data": data});
    parse_poll(family, &serde_json::to_vec(&body).unwrap())
}

fn stage_of(result: Result<PollResult, PollError>) -> Option<Stage> {
    match result {
        Ok(PollResult::Result(event)) => Some(event.stage),
        Ok(PollResult::Pending { .. }) => None,
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn callback_exception_reads_the_results_it_holds() {
    use serde_json::json;
    let track =
        |n: u32, audio: &str| json!({"id": format!("t{n}"), "audioUrl": audio, "streamAudioUrl": "https://h/s"});
    let music = |tracks: serde_json::Value| {
        stage_of(inline(
            Family::Music,
            json!({"taskId": "t", "status": "CALLBACK_EXCEPTION", "response": {"sunoData": tracks}}),
        ))
    };
    assert_eq!(music(json!([track(1, "https://h/1.mp3"), track(2, "https://h/2.mp3")])), Some(Stage::Complete));
    assert_eq!(music(json!([track(1, "https://h/1.mp3"), track(2, "")])), Some(Stage::First));
    assert_eq!(music(json!([track(1, ""), track(2, "")])), Some(Stage::Text));
    assert_eq!(music(json!([])), None);
    // No result: an error when the answer reports one, else nothing to record yet.
    let bare = |extra: serde_json::Value| {
        let mut data = json!({"taskId": "t", "successFlag": "CALLBACK_EXCEPTION", "response": null});
        data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        inline(Family::Wav, data)
    };
    assert_eq!(stage_of(bare(json!({"errorCode": null, "errorMessage": null}))), None);
    assert_eq!(stage_of(bare(json!({"errorCode": 0, "errorMessage": "  "}))), None);
    let Ok(PollResult::Result(failed)) = bare(json!({"errorCode": 500, "errorMessage": "Internal Error"})) else {
        panic!("a reported error is recorded")
    };
    assert_eq!((failed.stage, failed.code, failed.message.as_str()), (Stage::Error, 500, "Internal Error"));
    assert_eq!(failed.details, error_details("Internal Error"));
    let with_file =
        json!({"taskId": "t", "successFlag": "CALLBACK_EXCEPTION", "response": {"audioWavUrl": "https://h/a.wav"}});
    assert_eq!(stage_of(inline(Family::Wav, with_file)), Some(Stage::Final));
    let voice = json!({"taskId": "t", "status": "CALLBACK_EXCEPTION", "voiceId": "v1"});
    assert_eq!(stage_of(inline(Family::Voice, voice)), Some(Stage::Final));
    let midi = json!({"taskId": "t", "successFlag": "CALLBACK_EXCEPTION", "midiData": {"state": "complete"}});
    assert_eq!(stage_of(inline(Family::Midi, midi)), Some(Stage::Final));
    let lyrics = json!({"taskId": "t", "status": "CALLBACK_EXCEPTION", "response": {"data": [{"text": "la"}]}});
    assert_eq!(stage_of(inline(Family::Lyrics, lyrics)), Some(Stage::Complete));
}

/// A done status without a file, from a family whose result is files, is no result (polled
/// again); one whose result is not files (lyrics, MIDI, voice) stands on what it holds.
#[test]
fn a_done_answer_without_the_files_it_is_about_is_no_result() {
    use serde_json::json;
    let done = |family: Family, status: &str, response: serde_json::Value| {
        inline(family, json!({"taskId": "t", "status": status, "successFlag": status, "response": response}))
    };
    let no_files = |status: &str| Err(PollError::NoFiles(status.into()));
    assert_eq!(done(Family::Music, "SUCCESS", json!({"sunoData": []})), no_files("SUCCESS"));
    assert_eq!(done(Family::Music, "SUCCESS", json!({"sunoData": null})), no_files("SUCCESS"));
    let silent = json!({"sunoData": [{"id": "t1", "audioUrl": "", "title": "x"}]});
    assert_eq!(done(Family::Music, "SUCCESS", silent), no_files("SUCCESS"), "tracks without audio");
    for family in [Family::Wav, Family::VocalSeparation, Family::MusicVideo, Family::CoverImage] {
        assert_eq!(done(family, "SUCCESS", serde_json::Value::Null), no_files("SUCCESS"), "{family}");
    }
    let with_file = done(Family::Wav, "SUCCESS", json!({"audioWavUrl": "https://h/a.wav"}));
    assert_eq!(stage_of(with_file), Some(Stage::Final));
    // Not files: as before.
    let midi = inline(Family::Midi, json!({"taskId": "t", "successFlag": 1, "midiData": {}}));
    assert_eq!(stage_of(midi), Some(Stage::Final), "MIDI's data may be empty (documented)");
    let lyrics = done(Family::Lyrics, "SUCCESS", json!({"data": [{"text": "la", "status": "complete"}]}));
    assert_eq!(stage_of(lyrics), Some(Stage::Complete));
    // A failure holds no files and is one.
    assert_eq!(stage_of(done(Family::Wav, "GENERATE_WAV_FAILED", serde_json::Value::Null)), Some(Stage::Error));
}

#[test]
fn partial_stages_of_families_without_stages_are_pending() {
    let data = serde_json::json!({"taskId": "t", "successFlag": "FIRST_SUCCESS", "response": {"audioWavUrl": "https://h/a.wav"}});
    assert!(matches!(inline(Family::Wav, data), Ok(PollResult::Pending { .. })));
}

#[test]
fn unusable_answers_are_errors() {
    use serde_json::json;
    assert_eq!(parse_poll(Family::Unknown, b"{}"), Err(PollError::UnsupportedFamily(Family::Unknown)));
    assert!(matches!(parse_poll(Family::Music, b"{"), Err(PollError::NotJson(_))));
    assert_eq!(parse_poll(Family::Music, b"[]"), Err(PollError::NotAnObject));
    // A missing or unreadable code is not a success.
    let no_code = parse_poll(Family::Music, br#"{"data":{"taskId":"t","status":"SUCCESS"}}"#);
    assert_eq!(no_code, Err(PollError::Provider { code: 0, message: String::new() }));
    assert_eq!(no_code.unwrap_err().provider_code(), Some(0));
    assert_eq!(inline(Family::Music, json!({"status": "SUCCESS"})), Err(PollError::NoTask));
    // No record at all is told apart from a record that names no task.
    assert_eq!(parse_poll(Family::Wav, br#"{"code":200,"msg":"success"}"#), Err(PollError::NoTask), "no data at all");
    assert_eq!(parse_poll(Family::Wav, br#"{"code":200,"data":null}"#), Err(PollError::NoRecord));
    assert_eq!(parse_poll(Family::Wav, br#"{"code":200,"data":[]}"#), Err(PollError::NoTask));
    assert!(matches!(
        inline(Family::Music, json!({"taskId": "a/b", "status": "SUCCESS"})),
        Err(PollError::InvalidTaskId(_))
    ));
    assert_eq!(inline(Family::Music, json!({"taskId": "t"})), Err(PollError::NoStatus));
    assert_eq!(
        inline(Family::Music, json!({"taskId": "t", "status": "LATER"})),
        Err(PollError::UnknownStatus("LATER".into()))
    );
}

#[test]
fn every_family_but_unknown_has_an_endpoint() {
    use suno_callbacks::poll::record_info_path;
    // As the providers document them (README, Reconciliation; fixtures/polls).
    let documented = [
        (Family::Music, "/api/v1/generate/record-info"),
        (Family::Lyrics, "/api/v1/lyrics/record-info"),
        (Family::Wav, "/api/v1/wav/record-info"),
        (Family::VocalSeparation, "/api/v1/vocal-removal/record-info"),
        (Family::MusicVideo, "/api/v1/mp4/record-info"),
        (Family::Midi, "/api/v1/midi/record-info"),
        (Family::CoverImage, "/api/v1/suno/cover/record-info"),
        (Family::Voice, "/api/v1/voice/validate-info"),
    ];
    for (family, path) in documented {
        assert_eq!(record_info_path(family), Some(path), "{family}");
    }
    // Each family is documented here, a new one too.
    for family in Family::ALL {
        let listed = documented.iter().any(|(f, _)| *f == family);
        assert_eq!(listed, family != Family::Unknown, "{family}: an endpoint documented here, or none");
    }
    assert_eq!(record_info_path(Family::Unknown), None);
    use suno_callbacks::poll::generation_record_path;
    assert_eq!(generation_record_path(Family::Voice), Some("/api/v1/voice/record-info"));
    assert_eq!(generation_record_path(Family::Music), None);
}

/// The two sites' API codes read in one set of terms: docs.sunoapi.org's 429 is its
/// "insufficient credits" (kie's 402), its 404 an invalid request method or path (no word of
/// the task: not kie's "not found"); every other code means what it says on both, and kie's
/// 429 still asks to wait.
#[test]
fn each_sites_codes_mean_what_its_documentation_says() {
    use suno_callbacks::poll::{Site, asks_to_wait, code_meaning};
    assert_eq!(code_meaning(Site::SunoApi, 429), Some(402));
    assert_eq!(code_meaning(Site::SunoApi, 404), None);
    for code in [200, 400, 401, 402, 403, 405, 422, 430, 455, 500, 501] {
        assert_eq!(code_meaning(Site::SunoApi, code), Some(code), "{code}");
    }
    for code in [200, 400, 402, 404, 422, 429, 455, 500] {
        assert_eq!(code_meaning(Site::Kie, code), Some(code), "{code}");
    }
    assert!(asks_to_wait(code_meaning(Site::Kie, 429).unwrap()));
    assert!(!asks_to_wait(code_meaning(Site::SunoApi, 429).unwrap()));
    assert!(asks_to_wait(code_meaning(Site::SunoApi, 430).unwrap()) && asks_to_wait(405));
}
