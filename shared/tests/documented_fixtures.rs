//! Every documented example body in `fixtures/callbacks/` parses to exactly the
//! event written out here by hand from the body: task id, family, stage, code, message,
//! every file and stream (name and URL) and the details.

mod common;

use common::{TrackMeta, documented_dir, event, file, json_files, parse_file, track};
use suno_callbacks::{CallbackEvent, Details, Family, LyricsVariant, MidiInstrument, MidiNote, SeparationType, Stage};

/// Every fixture file this test knows; `no_fixture_is_left_untested` compares it with the
/// directory so a new file fails until an expectation is written for it.
const COVERED: [&str; 17] = [
    "add-instrumental__seed-002__200-complete.json",
    "add-vocals__seed-001__200-complete.json",
    "convert-to-wav__kie__200.json",
    "cover-image__kie__200.json",
    "create-music-video__kie__200.json",
    "extend-music__kie__200-complete.json",
    "generate-lyrics__kie__200.json",
    "generate-midi__sunoapi__200.json",
    "generate-music__kie__200.json",
    "replace-section__kie__200.json",
    "separate-vocals__kie__200-split_stem.json",
    "separate-vocals__seed-000__200-separate_vocal.json",
    "separate-vocals__seed-000__200-split_stem.json",
    "separate-vocals__seed-003__200-separate_vocal.json",
    "suno-voice-generate__sunoapi__200.json",
    "upload-and-cover__kie__200-complete.json",
    "upload-and-extend__kie__200-complete.json",
];

const MP3: &str = "https://example.cn/****.mp3";
const JPEG: &str = "https://example.cn/****.jpeg";
const STREAM: &str = "https://example.cn/****";
const ALL_OK: &str = "All generated successfully.";
const E231: &str = "e231****-****-****-****-****8cadc7dc";
const NIGHT: &str = "[Verse] Night city lights shining bright";

#[test]
fn no_fixture_is_left_untested() {
    let on_disk = json_files(documented_dir());
    let uncovered: Vec<_> = on_disk.iter().filter(|f| !COVERED.contains(&f.as_str())).collect();
    assert!(uncovered.is_empty(), "fixtures without an expected event: {uncovered:?}");
    let missing: Vec<_> = COVERED.iter().filter(|f| !on_disk.contains(&f.to_string())).collect();
    assert!(missing.is_empty(), "expected events for fixtures that do not exist: {missing:?}");
}

#[test]
fn every_fixture_parses_to_its_expected_event() {
    for name in COVERED {
        let parsed = parse_file(documented_dir().join(name));
        assert_eq!(parsed, expected(name), "fixture {name}");
    }
}

fn expected(name: &str) -> CallbackEvent {
    match name {
        "add-instrumental__seed-002__200-complete.json" => add_instrumental(),
        "add-vocals__seed-001__200-complete.json" => add_vocals(),
        "convert-to-wav__kie__200.json" => wav(),
        "cover-image__kie__200.json" => cover_image(),
        "create-music-video__kie__200.json" => music_video(),
        "extend-music__kie__200-complete.json" | "generate-music__kie__200.json" => two_kie_tracks(),
        "generate-lyrics__kie__200.json" => lyrics(),
        "generate-midi__sunoapi__200.json" => midi(),
        "replace-section__kie__200.json" => replace_section(),
        "separate-vocals__kie__200-split_stem.json" | "separate-vocals__seed-000__200-split_stem.json" => split_stem(),
        "separate-vocals__seed-000__200-separate_vocal.json" => {
            separate_vocal("vocal separation generated successfully.")
        }
        "separate-vocals__seed-003__200-separate_vocal.json" => separate_vocal("vocal Removal generated successfully."),
        "suno-voice-generate__sunoapi__200.json" => voice(),
        "upload-and-cover__kie__200-complete.json" => upload_and_cover(),
        "upload-and-extend__kie__200-complete.json" => upload_and_extend(),
        other => panic!("no expectation for {other}"),
    }
}

fn music_complete() -> CallbackEvent {
    event("2fac****9f72", Family::Music, Stage::Complete, 200, ALL_OK)
}

fn add_instrumental() -> CallbackEvent {
    let mut e = music_complete();
    e.files = vec![file("tracks/8551****662c/audio", MP3), file("tracks/8551****662c/cover", JPEG)];
    e.streams = vec![file("tracks/8551****662c/stream", STREAM)];
    e.details = Details::Tracks {
        tracks: vec![track(TrackMeta {
            id: "8551****662c",
            name: "tracks/8551****662c",
            title: "Iron Man",
            prompt: NIGHT,
            model_name: "chirp-v4-5",
            tags: Some("electrifying, rock"),
            duration: 198.44,
        })],
    };
    e
}

fn add_vocals() -> CallbackEvent {
    let mut e = music_complete();
    e.files = vec![file(&format!("tracks/{E231}/audio"), MP3), file(&format!("tracks/{E231}/cover"), JPEG)];
    e.streams = vec![file(&format!("tracks/{E231}/stream"), STREAM)];
    e.details = Details::Tracks {
        tracks: vec![track(TrackMeta {
            id: E231,
            name: &format!("tracks/{E231}"),
            title: "Iron Man",
            prompt: NIGHT,
            model_name: "chirp-v4-5",
            tags: None, // the add-vocals examples carry no `tags`
            duration: 198.44,
        })],
    };
    e
}

/// generate-music and extend-music (kie): two tracks that repeat one id.
fn two_kie_tracks() -> CallbackEvent {
    let mut e = music_complete();
    let first = format!("tracks/{E231}");
    let second = format!("tracks/{E231}-2");
    e.files = vec![
        file(&format!("{first}/audio"), MP3),
        file(&format!("{first}/cover"), JPEG),
        file(&format!("{second}/audio"), MP3),
        file(&format!("{second}/cover"), JPEG),
    ];
    e.streams = vec![file(&format!("{first}/stream"), STREAM), file(&format!("{second}/stream"), STREAM)];
    let meta = |name, duration| TrackMeta {
        id: E231,
        name,
        title: "Iron Man",
        prompt: NIGHT,
        model_name: "chirp-v3-5",
        tags: Some("electrifying, rock"),
        duration,
    };
    e.details = Details::Tracks { tracks: vec![track(meta(&first, 198.44)), track(meta(&second, 228.28))] };
    e
}

fn replace_section() -> CallbackEvent {
    let mut e = music_complete();
    let name = format!("tracks/{E231}");
    e.files = vec![file(&format!("{name}/audio"), MP3), file(&format!("{name}/cover"), JPEG)];
    e.streams = vec![file(&format!("{name}/stream"), STREAM)];
    e.details = Details::Tracks {
        tracks: vec![track(TrackMeta {
            id: E231,
            name: &name,
            title: "Relaxing Piano",
            prompt: "A calm and relaxing piano track.",
            model_name: "chirp-v3-5",
            tags: Some("Jazz"),
            duration: 198.44,
        })],
    };
    e
}

/// upload-and-cover and upload-and-extend (kie) carry the `source_*` fields.
fn tracks_with_sources(durations: &[f64]) -> CallbackEvent {
    let mut e = music_complete();
    let mut tracks = vec![];
    for (i, &duration) in durations.iter().enumerate() {
        let name = if i == 0 { format!("tracks/{E231}") } else { format!("tracks/{E231}-{}", i + 1) };
        // Document order of the body: audio, source audio, streams, image, source image.
        e.files.extend([
            file(&format!("{name}/audio"), MP3),
            file(&format!("{name}/source_audio"), MP3),
            file(&format!("{name}/cover"), JPEG),
            file(&format!("{name}/source_cover"), JPEG),
        ]);
        e.streams.extend([file(&format!("{name}/stream"), STREAM), file(&format!("{name}/source_stream"), STREAM)]);
        tracks.push(track(TrackMeta {
            id: E231,
            name: &name,
            title: "Iron Man",
            prompt: NIGHT,
            model_name: "chirp-v3-5",
            tags: Some("electrifying, rock"),
            duration,
        }));
    }
    e.details = Details::Tracks { tracks };
    e
}

fn upload_and_cover() -> CallbackEvent {
    tracks_with_sources(&[198.44, 228.28])
}

fn upload_and_extend() -> CallbackEvent {
    tracks_with_sources(&[198.44])
}

fn wav() -> CallbackEvent {
    let mut e = event("988e****c8d3", Family::Wav, Stage::Final, 200, "success");
    e.files = vec![file("wav", "https://example.com/s/04e6****e727.wav")];
    e
}

fn cover_image() -> CallbackEvent {
    let mut e = event("21aee3c3c2a01fa5e030b3799fa4dd56", Family::CoverImage, Stage::Final, 200, "success");
    e.files = vec![
        file("cover-1", "https://tempfile.aiquickdraw.com/s/1753958521_6c1b3015141849d1a9bf17b738ce9347.png"),
        file("cover-2", "https://tempfile.aiquickdraw.com/s/1753958524_c153143acc6340908431cf0e90cbce9e.png"),
    ];
    e
}

fn music_video() -> CallbackEvent {
    let mut e = event("task_id_5bbe7721119d", Family::MusicVideo, Stage::Final, 200, "success");
    // Not a URL, but it is the documented value of a file field: kept, for the downloader
    // to refuse with a recorded reason.
    e.files = vec![file("video", "video_url_847715e66259")];
    e
}

fn lyrics() -> CallbackEvent {
    let mut e = event("3b66882fde0a5d398bd269cab6d9542b", Family::Lyrics, Stage::Complete, 200, ALL_OK);
    let text = "[Verse]\nMoonlight spreads across the windowsill\nStars dance, never standing still\n\
                Night breeze weaves dreams with gentle skill\nLeaving all worries on the hill\n\n\
                [Verse 2]\nLights reflect in your bright eyes\nLike meteors across the skies\n\
                The world stops in that moment's prize\nChasing future, no goodbyes\n\n\
                [Chorus]\nIn starry dreams we find tomorrow\nBreak free from ordinary sorrow\n\
                All our dreams will bloom and follow\nDon't fear the path, don't fear tomorrow";
    e.details = Details::Lyrics {
        variants: vec![LyricsVariant {
            text: text.to_owned(),
            title: "Starry Night Dreams".to_owned(),
            status: "complete".to_owned(),
            error_message: String::new(),
        }],
    };
    e
}

fn midi() -> CallbackEvent {
    let mut e = event("5c79****be8e", Family::Midi, Stage::Final, 200, "success");
    let note = |pitch, start, end| MidiNote { pitch, start, end, velocity: 1.0 };
    e.details = Details::Midi {
        state: Some("complete".to_owned()),
        instruments: vec![
            MidiInstrument {
                name: "Drums".to_owned(),
                notes: vec![
                    note(73, 0.036458333333333336, 0.18229166666666666),
                    note(61, 0.046875, 0.19270833333333334),
                    note(73, 0.1875, 0.4895833333333333),
                ],
            },
            MidiInstrument {
                name: "Electric Bass (finger)".to_owned(),
                notes: vec![
                    note(44, 7.6875, 7.911458333333333),
                    note(56, 7.6875, 7.911458333333333),
                    note(51, 7.6875, 7.911458333333333),
                ],
            },
        ],
    };
    e
}

const STEM_HOST: &str = "https://file.aiquickdraw.com/s/";

fn split_stem() -> CallbackEvent {
    let mut e = event(
        "e649edb7abfd759285bd41a47a634b10",
        Family::VocalSeparation,
        Stage::Final,
        200,
        "vocal separation generated successfully.",
    );
    // Document order; `origin_url` is "" and so not a file.
    let stems = [
        ("backing_vocals", "aadc51a3-4c88-4c8e-a4c8-e867c539673d_Backing_Vocals.mp3"),
        ("bass", "a3c2da5a-b364-4422-adb5-2692b9c26d33_Bass.mp3"),
        ("brass", "334b2d23-0c65-4a04-92c7-22f828afdd44_Brass.mp3"),
        ("drums", "ac75c5ea-ac77-4ad2-b7d9-66e140b78e44_Drums.mp3"),
        ("fx", "a8822c73-6629-4089-8f2a-d19f41f0007d_FX.mp3"),
        ("guitar", "064dd08e-d5d2-4201-9058-c5c40fb695b4_Guitar.mp3"),
        ("keyboard", "adc934e0-df7d-45da-8220-1dba160d74e0_Keyboard.mp3"),
        ("percussion", "0f70884d-047c-41f1-a6d0-7044618b7dc6_Percussion.mp3"),
        ("strings", "49829425-a5b0-424e-857a-75d4c63a426b_Strings.mp3"),
        ("synth", "56b2d94a-eb92-4d21-bc43-3460de0c8348_Synth.mp3"),
        ("vocal", "07420749-29a2-4054-9b62-e6a6f8b90ccb_Vocals.mp3"),
        ("woodwinds", "d81545b1-6f94-4388-9785-1aaa6ecabb02_Woodwinds.mp3"),
    ];
    e.files = stems.iter().map(|(n, f)| file(n, &format!("{STEM_HOST}{f}"))).collect();
    e.details = Details::Separation { separation_type: Some(SeparationType::SplitStem) };
    e
}

fn separate_vocal(message: &str) -> CallbackEvent {
    let mut e = event("3e63b4cc88d52611159371f6af5571e7", Family::VocalSeparation, Stage::Final, 200, message);
    e.files = vec![
        file("instrumental", &format!("{STEM_HOST}d92a13bf-c6f4-4ade-bb47-f69738435528_Instrumental.mp3")),
        file("vocal", &format!("{STEM_HOST}3d7021c9-fa8b-4eda-91d1-3b9297ddb172_Vocals.mp3")),
    ];
    e.details = Details::Separation { separation_type: Some(SeparationType::SeparateVocal) };
    e
}

fn voice() -> CallbackEvent {
    let mut e = event("xxx_task_id_xxx", Family::Voice, Stage::Final, 200, "success");
    e.details = Details::Voice {
        voice_id: Some("voice_xxx".to_owned()),
        status: Some("success".to_owned()),
        error_code: Some(0),
        error_message: Some(String::new()),
        validate_info: None,
    };
    e
}

/// The two dialects of one separation name the same stems the same way.
#[test]
fn separation_dialects_name_stems_alike() {
    let kie = parse_file(documented_dir().join("separate-vocals__seed-000__200-separate_vocal.json"));
    let sunoapi = parse_file(documented_dir().join("separate-vocals__seed-003__200-separate_vocal.json"));
    assert_eq!(kie.files, sunoapi.files);
}
