//! The documented variants that are not given as example files (failure bodies of every
//! family, `text`/`first` stages, the docs.sunoapi.org dialect, legacy MIDI, the dog-test
//! WAV key, an unknown family), written from the callback catalog (`fixtures/README.md`)
//! into `shared/tests/fixtures/`, each parsed to exactly the event written out here.

mod common;

use std::collections::BTreeMap;

use common::{file, json_files, names, own_dir, parse_file};
use suno_callbacks::{
    CallbackEvent, Details, Family, LyricsVariant, MidiInstrument, MidiNote, SeparationType, Stage, TaskId, Track,
};

/// A body with no files: (file, task id, family, stage, code, msg, details).
type NoFiles = (&'static str, &'static str, Family, Stage, i64, &'static str, Details);

fn bodies_without_files() -> Vec<NoFiles> {
    use Family::*;
    use Stage::{Error, Final, Text};
    let no_tracks = || Details::Tracks { tracks: vec![] };
    let no_stems = || Details::Separation { separation_type: None };
    let no_notes = || Details::Midi { state: None, instruments: vec![] };
    let failed = "Audio generation failed";
    let failed_dot = "Audio generation failed.";
    let internal = "Internal Error - Please try again later";
    vec![
        (
            "generate-music__kie__501-error.json",
            "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            failed,
            no_tracks(),
        ),
        ("add-vocals__kie__501-error.json", "b1b2c3d4e5f60718293a4b5c6d7e8f90", Music, Error, 501, failed, no_tracks()),
        (
            "extend-music__kie__501-error.json",
            "c1b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            failed_dot,
            no_tracks(),
        ),
        (
            "upload-and-cover__kie__501-error.json",
            "d1b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            failed_dot,
            no_tracks(),
        ),
        (
            "upload-and-extend__kie__501-error.json",
            "e1b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            failed_dot,
            no_tracks(),
        ),
        (
            "replace-section__kie__501-error.json",
            "f1b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            failed_dot,
            Details::Error { error: "Generation failed due to technical issues".into() },
        ),
        (
            "replace-section__sunoapi-cn__501-error.json",
            "f2b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            501,
            "...",
            no_tracks(),
        ),
        (
            "upload-and-cover__sunoapi__400-error.json",
            "a2b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            400,
            "Audio covering failed",
            no_tracks(),
        ),
        (
            "add-instrumental__sunoapi__400-error.json",
            "a3b2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Error,
            400,
            "Instrumental generation failed",
            no_tracks(),
        ),
        // kie keeps `callbackType "complete"` on this failure: the code decides.
        (
            "generate-lyrics__kie__400.json",
            "a4b2c3d4e5f60718293a4b5c6d7e8f90",
            Lyrics,
            Error,
            400,
            "Song Description flagged for moderation",
            Details::Lyrics { variants: vec![] },
        ),
        (
            "generate-lyrics__sunoapi__400-error.json",
            "a5b2c3d4e5f60718293a4b5c6d7e8f90",
            Lyrics,
            Error,
            400,
            "Lyrics generation failed",
            Details::Lyrics { variants: vec![] },
        ),
        (
            "cover-image__kie__501.json",
            "a6b2c3d4e5f60718293a4b5c6d7e8f90",
            CoverImage,
            Error,
            501,
            "Cover generation failed",
            Details::None,
        ),
        ("convert-to-wav__kie__500.json", "a7b2c3d4e5f60718293a4b5c6d7e8f90", Wav, Error, 500, internal, Details::None),
        (
            "convert-to-wav__sunoapi__400.json",
            "a8b2c3d4e5f60718293a4b5c6d7e8f90",
            Wav,
            Error,
            400,
            "WAV format conversion failed",
            Details::None,
        ),
        (
            "separate-vocals__kie__500-separate_vocal.json",
            "a9b2c3d4e5f60718293a4b5c6d7e8f90",
            VocalSeparation,
            Error,
            500,
            "Vocal separation failed",
            no_stems(),
        ),
        (
            "separate-vocals__kie__500-split_stem.json",
            "aab2c3d4e5f60718293a4b5c6d7e8f90",
            VocalSeparation,
            Error,
            500,
            "Instrument separation failed",
            no_stems(),
        ),
        (
            "separate-vocals__sunoapi__400.json",
            "5e72d367bdfbe44785e28d72cb1697c7",
            VocalSeparation,
            Error,
            400,
            "Vocal separation failed",
            no_stems(),
        ),
        (
            "generate-midi__sunoapi__500.json",
            "abb2c3d4e5f60718293a4b5c6d7e8f90",
            Midi,
            Error,
            500,
            "MIDI generation failed",
            no_notes(),
        ),
        (
            "generate-midi__kie-legacy__500.json",
            "acb2c3d4e5f60718293a4b5c6d7e8f90",
            Midi,
            Error,
            500,
            "MIDI generation failed",
            no_notes(),
        ),
        (
            "create-music-video__kie__500.json",
            "aeb2c3d4e5f60718293a4b5c6d7e8f90",
            MusicVideo,
            Error,
            500,
            internal,
            Details::None,
        ),
        (
            "create-music-video__sunoapi__400.json",
            "afb2c3d4e5f60718293a4b5c6d7e8f90",
            MusicVideo,
            Error,
            400,
            "Music video generation failed",
            Details::None,
        ),
        (
            "suno-voice-generate__sunoapi__400.json",
            "b1c2c3d4e5f60718293a4b5c6d7e8f90",
            Voice,
            Error,
            400,
            "failed",
            voice("", "fail", 500, "Voice generation failed", None),
        ),
        (
            "suno-voice-validate__sunoapi__200.json",
            "b2c2c3d4e5f60718293a4b5c6d7e8f90",
            Voice,
            Final,
            200,
            "success",
            Details::Voice {
                voice_id: None,
                status: Some("wait_validating".into()),
                error_code: Some(0),
                error_message: Some(String::new()),
                validate_info: Some(serde_json::json!({"phrase": "The quick brown fox"})),
            },
        ),
        (
            "suno-voice-validate__sunoapi__400.json",
            "b3c2c3d4e5f60718293a4b5c6d7e8f90",
            Voice,
            Error,
            400,
            "failed",
            Details::Voice {
                voice_id: None,
                status: Some("processing_validate_fail".into()),
                error_code: Some(500),
                error_message: Some("Validation failed".into()),
                validate_info: None,
            },
        ),
        (
            "extend-music__kie__200-text.json",
            "b4c2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Text,
            200,
            "Text generation completed.",
            no_tracks(),
        ),
        (
            "add-instrumental__kie__200-text.json",
            "b5c2c3d4e5f60718293a4b5c6d7e8f90",
            Music,
            Text,
            200,
            "Text generation completed successfully.",
            no_tracks(),
        ),
        (
            "generate-lyrics__sunoapi__200.json",
            "b7c2c3d4e5f60718293a4b5c6d7e8f90",
            Lyrics,
            Stage::Complete,
            200,
            "All generated successfully.",
            Details::Lyrics {
                variants: vec![
                    LyricsVariant {
                        text: "[Verse]\nFirst variant".into(),
                        title: "Tide".into(),
                        status: "complete".into(),
                        error_message: String::new(),
                    },
                    LyricsVariant {
                        text: String::new(),
                        title: "Tide 2".into(),
                        status: "failed".into(),
                        error_message: "Content flagged".into(),
                    },
                ],
            },
        ),
        (
            "generate-midi__kie-legacy__200.json",
            "adb2c3d4e5f60718293a4b5c6d7e8f90",
            Midi,
            Final,
            200,
            "success",
            Details::Midi {
                state: Some("complete".into()),
                instruments: vec![MidiInstrument {
                    name: "Piano".into(),
                    // The third note's start ("later") is unreadable: skipped.
                    notes: vec![
                        MidiNote { pitch: 60, start: 0.5, end: 1.0, velocity: 0.8 },
                        MidiNote { pitch: 64, start: 1.5, end: 2.25, velocity: 0.7 },
                    ],
                }],
            },
        ),
    ]
}

fn voice(id: &str, status: &str, code: i64, message: &str, info: Option<serde_json::Value>) -> Details {
    Details::Voice {
        voice_id: Some(id.into()),
        status: Some(status.into()),
        error_code: Some(code),
        error_message: Some(message.into()),
        validate_info: info,
    }
}

fn event(task_id: &str, family: Family, stage: Stage, code: i64, message: &str) -> CallbackEvent {
    common::event(task_id, family, stage, code, message)
}

/// Bodies with files, each with its full expected event.
fn bodies_with_files() -> Vec<(&'static str, CallbackEvent)> {
    vec![
        ("create-music-video__sunoapi__200.json", {
            let mut e = event(
                "b0b2c3d4e5f60718293a4b5c6d7e8f90",
                Family::MusicVideo,
                Stage::Final,
                200,
                "MP4 generated successfully.",
            );
            e.files = vec![file("video", "https://tempfile.aiquickdraw.com/v/b0b2.mp4")];
            e
        }),
        ("convert-to-wav__dog-test__200.json", {
            let mut e = event("b9c2c3d4e5f60718293a4b5c6d7e8f90", Family::Wav, Stage::Final, 200, "success");
            e.files = vec![file("wav", "https://tempfile.aiquickdraw.com/w/b9.wav")];
            e
        }),
        ("separate-vocals__sunoapi__200-split_stem.json", {
            let mut e = event(
                "b8c2c3d4e5f60718293a4b5c6d7e8f90",
                Family::VocalSeparation,
                Stage::Final,
                200,
                "vocal Removal generated successfully.",
            );
            // `drums_url` is "" and `bass_url` null: neither is a file.
            e.files = vec![
                file("origin", "https://file.aiquickdraw.com/s/o.mp3"),
                file("vocal", "https://file.aiquickdraw.com/s/v.mp3"),
                file("backing_vocals", "https://file.aiquickdraw.com/s/bv.mp3"),
            ];
            e.details = Details::Separation { separation_type: Some(SeparationType::SplitStem) };
            e
        }),
        ("generate-music__sunoapi__200-complete.json", {
            let mut e = event(
                "b6c2c3d4e5f60718293a4b5c6d7e8f90",
                Family::Music,
                Stage::Complete,
                200,
                "All generated successfully.",
            );
            let mut tracks = vec![];
            for (n, id, duration) in [(1, "8551****662c", 180.5), (2, "bd15****1873", 228.28)] {
                let name = format!("tracks/{id}");
                let url = |suffix: &str| format!("https://tempfile.aiquickdraw.com/r/{id}{suffix}");
                e.files.extend([
                    file(&format!("{name}/audio"), &url(".mp3")),
                    file(&format!("{name}/source_audio"), &url("-src.mp3")),
                    file(&format!("{name}/cover"), &url(".jpeg")),
                    file(&format!("{name}/source_cover"), &url("-src.jpeg")),
                ]);
                e.streams.extend([
                    file(&format!("{name}/stream"), &format!("https://musicfile.api.box/{id}")),
                    file(&format!("{name}/source_stream"), &format!("https://musicfile.api.box/{id}-src")),
                ]);
                tracks.push(harbour_track(id, &name, n, duration));
            }
            e.details = Details::Tracks { tracks };
            e
        }),
        ("generate-music__own__200-first.json", own_music(Stage::First, "First track generated successfully.", 1)),
        ("generate-music__own__200-complete.json", own_music(Stage::Complete, "All generated successfully.", 2)),
        ("unknown__own__200.json", {
            let mut e = event("bac2c3d4e5f60718293a4b5c6d7e8f90", Family::Unknown, Stage::Final, 200, "success");
            // Not files: the ftp URL, "not a url", the blank image, and callBackUrl.
            e.files = vec![
                file("master", "https://h.example/x.wav"),
                file("result/cover", "https://h.example/c.png"),
                file("result/items-1/audio", "https://h.example/1.mp3"),
                file("result/items-3/audio", "https://h.example/3.mp3"),
                file("result/gallery/images-1", "https://h.example/g1.png"),
                file("result/gallery/images-3", "https://h.example/g3.png"),
                file("share", "https://h.example/share"),
            ];
            e.streams = vec![file("result/stream", "https://h.example/live")];
            e
        }),
    ]
}

fn harbour_track(id: &str, name: &str, n: u32, duration: f64) -> Track {
    Track {
        id: id.into(),
        name: name.into(),
        title: Some(format!("Harbour {n}")),
        prompt: Some("[Verse] Rain on the harbour".into()),
        model_name: Some("chirp-v4-5".into()),
        tags: Some("ambient, piano".into()),
        create_time: Some("2025-03-04 05:06:07".into()),
        duration: Some(duration),
    }
}

/// `generate-music__own__*`: the same task's `first` (one track) and `complete` (two).
fn own_music(stage: Stage, message: &str, track_count: usize) -> CallbackEvent {
    let mut e = event("7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c", Family::Music, stage, 200, message);
    let mut tracks = vec![];
    for (n, duration) in [(1, 180.5), (2, 201.25)].into_iter().take(track_count) {
        let id = format!("4f1e2d3c-000{n}");
        let name = format!("tracks/{id}");
        let url = |ext: &str| format!("https://tempfile.aiquickdraw.com/r/{id}.{ext}");
        e.files.extend([file(&format!("{name}/audio"), &url("mp3")), file(&format!("{name}/cover"), &url("jpeg"))]);
        e.streams.push(file(&format!("{name}/stream"), &format!("https://musicfile.api.box/{id}")));
        tracks.push(harbour_track(&id, &name, n, duration));
    }
    e.details = Details::Tracks { tracks };
    e
}

fn all_expected() -> BTreeMap<String, CallbackEvent> {
    let mut all = BTreeMap::new();
    for (name, task, family, stage, code, msg, details) in bodies_without_files() {
        let mut e = event(task, family, stage, code, msg);
        e.details = details;
        assert!(all.insert(name.to_owned(), e).is_none(), "{name} listed twice");
    }
    for (name, e) in bodies_with_files() {
        assert!(all.insert(name.to_owned(), e).is_none(), "{name} listed twice");
    }
    all
}

#[test]
fn every_own_fixture_has_an_expectation_and_the_other_way_round() {
    let on_disk = json_files(own_dir());
    let expected: Vec<String> = all_expected().into_keys().collect();
    assert_eq!(on_disk, expected);
}

#[test]
fn every_own_fixture_parses_to_its_expected_event() {
    for (name, expected) in all_expected() {
        assert_eq!(parse_file(own_dir().join(&name)), expected, "fixture {name}");
    }
}

#[test]
fn bodies_without_files_keep_their_task_id_and_success_flag() {
    for (name, task, ..) in bodies_without_files() {
        let event = parse_file(own_dir().join(name));
        assert_eq!(event.task_id, TaskId::parse(task).unwrap(), "{name}");
        assert_eq!(event.succeeded(), event.code == 200, "{name}");
        assert!(event.files.is_empty() && event.streams.is_empty(), "{name}");
    }
}

/// A `first` callback and the later `complete` one of the same task name the first track's
/// files identically, so the complete callback does not duplicate them.
#[test]
fn first_then_complete_names_are_stable() {
    let first = parse_file(own_dir().join("generate-music__own__200-first.json"));
    let complete = parse_file(own_dir().join("generate-music__own__200-complete.json"));
    assert_eq!(names(&first.files), ["tracks/4f1e2d3c-0001/audio", "tracks/4f1e2d3c-0001/cover"]);
    for f in first.files.iter().chain(&first.streams) {
        let later = complete.files.iter().chain(&complete.streams).find(|c| c.name == f.name);
        assert_eq!(later, Some(f), "{} renamed or changed between first and complete", f.name);
    }
    assert_eq!(complete.files.len(), 2 * first.files.len());
}

/// The same track id in the docs.kie.ai dialect (no `source_*`) and the docs.sunoapi.org one
/// (with `source_*`) names the common files alike.
#[test]
fn dialects_share_track_file_names() {
    let kie = parse_file(common::documented_dir().join("add-instrumental__seed-002__200-complete.json"));
    let sunoapi = parse_file(own_dir().join("generate-music__sunoapi__200-complete.json"));
    let kie_names = names(&kie.files);
    assert_eq!(kie_names, ["tracks/8551****662c/audio", "tracks/8551****662c/cover"]);
    for name in kie_names {
        assert!(names(&sunoapi.files).contains(&name), "{name} missing from the sunoapi dialect");
    }
    assert_eq!(names(&kie.streams), ["tracks/8551****662c/stream"]);
    assert!(names(&sunoapi.streams).contains(&"tracks/8551****662c/stream"));
}

/// The older docs.kie.ai MIDI field list puts the id at the top as `taskId`: still MIDI,
/// failed or complete. Another failure with a top-level `taskId` is not taken for MIDI.
#[test]
fn midi_with_a_top_level_task_id_is_midi() {
    let parse = |body: &str| suno_callbacks::parse_callback(body.as_bytes()).unwrap();
    let failed = parse(r#"{"taskId":"5c79be8e","code":500,"msg":"MIDI generation failed","data":null}"#);
    assert_eq!((failed.family, failed.stage), (Family::Midi, Stage::Error));
    let complete = parse(r#"{"taskId":"5c79be8e","code":200,"msg":"success","data":{"state":"complete"}}"#);
    assert_eq!((complete.family, complete.stage), (Family::Midi, Stage::Final));
    let other = parse(r#"{"taskId":"5c79be8e","code":500,"msg":"Internal error","data":null}"#);
    assert_eq!(other.family, Family::Unknown);
}
