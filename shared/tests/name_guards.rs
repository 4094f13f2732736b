//! Names that must not reach the task's own S3 objects, names that must stay distinct and
//! stable across stages after sanitising, and numbers DynamoDB could not store.

mod common;

use serde_json::{Value, json};
use suno_callbacks::{CallbackEvent, Details, MidiNote, Stage, parse_callback, s3_key};

use common::names;

fn parse(body: Value) -> CallbackEvent {
    parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn keys(event: &CallbackEvent) -> Vec<String> {
    event.files.iter().map(|f| s3_key::file_key(&event.task_id, &f.name, &f.url)).collect()
}

/// No file may be stored where the manifest or the verbatim bodies go.
fn assert_keys_clear_of_task_objects(event: &CallbackEvent) {
    let manifest = s3_key::manifest_key(&event.task_id);
    let bodies = s3_key::callback_body_prefix(&event.task_id);
    for key in keys(event) {
        assert_ne!(key, manifest, "a file would overwrite the manifest");
        assert!(!key.starts_with(&bodies), "a file would land among the callback bodies: {key}");
    }
}

#[test]
fn unknown_bodies_cannot_name_the_manifest_or_the_callback_bodies() {
    let event = parse(json!({"data":{"taskId":"t1",
        "manifestUrl":"https://h/m.json",
        "manifest.json_url":"https://h/m",
        "callbacks.first-abc_url":"https://h/c.json",
        "callbacks":{"first_url":"https://h/f.json"},
        "result":{"manifest_url":"https://h/r.json"}}}));
    assert_keys_clear_of_task_objects(&event);
    assert_eq!(event.files.len(), 5);
    let names = names(&event.files);
    // Only the first segment is reserved: deeper `manifest` segments are harmless.
    assert_eq!(names[4], "result/manifest");
    for name in &names[..4] {
        assert!(!s3_key::is_reserved_name(name), "{name} is reserved");
    }
    // Stable: the same body names its files the same way every time.
    assert_eq!(
        parse_callback(&serde_json::to_vec(&json!({"data":{"taskId":"t1","manifestUrl":"https://h/m.json"}})).unwrap())
            .unwrap()
            .files[0]
            .name,
        names[0]
    );
}

#[test]
fn separation_stems_cannot_name_the_manifest_or_the_callback_bodies() {
    let event = parse(json!({"code":200,"data":{"task_id":"t1","vocal_separation_info":{
        "manifest_url":"https://h/m.json","callbacks_url":"https://h/c.json","vocal_url":"https://h/v.mp3"}}}));
    assert_keys_clear_of_task_objects(&event);
    let names = names(&event.files);
    assert_eq!(names.len(), 3);
    assert_ne!(names[0], "manifest");
    assert_ne!(names[1], "callbacks");
    assert_eq!(names[2], "vocal");
}

fn music(stage: &str, ids: &[&str]) -> CallbackEvent {
    let tracks: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "audio_url": format!("https://h/{}.mp3", id.len())})).collect();
    parse(json!({"code":200,"data":{"callbackType":stage,"task_id":"t1","data":tracks}}))
}

#[test]
fn sanitised_track_ids_do_not_take_the_names_of_safe_ids() {
    let complete = music("complete", &["a/b", "a_b"]);
    let first = music("first", &["a_b"]);
    let first_other = music("first", &["a/b"]);
    assert_eq!(complete.stage, Stage::Complete);
    let complete_names = names(&complete.files);
    assert_eq!(complete_names[1], "tracks/a_b/audio", "a safe id keeps its name");
    assert_eq!(names(&first.files), ["tracks/a_b/audio"]);
    assert_eq!(names(&first_other.files), [complete_names[0]], "a/b is named alike in both stages");
    assert_ne!(complete_names[0], complete_names[1]);
    let hashed = complete_names[0].strip_prefix("tracks/a_b-").and_then(|s| s.strip_suffix("/audio")).unwrap();
    assert_eq!(hashed.len(), 8);
    assert!(hashed.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{hashed}");
}

#[test]
fn truncated_track_ids_stay_distinct_and_short() {
    let long_a = format!("{}a", "x".repeat(80));
    let long_b = format!("{}b", "x".repeat(80));
    let event = music("complete", &[&long_a, &long_b]);
    let both = names(&event.files);
    assert_ne!(both[0], both[1]);
    assert!(!both[0].ends_with("-2/audio") && !both[1].ends_with("-2/audio"), "{both:?}");
    for name in &both {
        let segment = name.split('/').nth(1).unwrap();
        assert!(segment.len() <= suno_callbacks::parse::MAX_SEGMENT_LEN, "{segment}");
    }
    assert_eq!(names(&music("first", &[&long_b]).files), [both[1]]);
}

#[test]
fn safe_ids_that_look_hashed_are_hashed_too() {
    let hashed = names(&music("complete", &["a/b"]).files)[0].to_owned();
    let lookalike = hashed.strip_prefix("tracks/").unwrap().strip_suffix("/audio").unwrap().to_owned();
    let event = music("complete", &[&lookalike]);
    assert_ne!(names(&event.files)[0], hashed);
    // Ordinary ids, UUIDs and the documentation's masked ids are unchanged.
    for id in [
        "8551****662c",
        "e231****-****-****-****-****8cadc7dc",
        "4f1e2d3c-0001",
        "0b5f5e1c-1f6a-4c1e-9d1e-2a3b4c5d6e7f",
    ] {
        assert_eq!(names(&music("complete", &[id]).files), [format!("tracks/{id}/audio")]);
    }
}

#[test]
fn unknown_body_segments_that_needed_sanitising_are_hashed() {
    let event = parse(json!({"data":{"taskId":"t1","a b_url":"https://h/1","a_b_url":"https://h/2"}}));
    let names = names(&event.files);
    assert_eq!(names[1], "a_b");
    assert!(names[0].starts_with("a_b-") && names[0].len() == "a_b-".len() + 8, "{names:?}");
    let alone = parse(json!({"data":{"taskId":"t1","a b_url":"https://h/1"}}));
    assert_eq!(alone.files[0].name, names[0]);
}

/// The extension a key takes from its URL cannot make two names' keys one: a name ending in a
/// kept extension is hashed (`vocal.mp3` with no extension in its URL and `vocal` with an
/// `.mp3` URL would both be `tasks/t1/vocal.mp3`).
#[test]
fn a_name_ending_in_a_kept_extension_shares_no_key() {
    for body in [
        json!({"code":200,"data":{"task_id":"t1","vocal_separation_info":{"vocal_url":"https://h/v.mp3","vocal.mp3_url":"https://h/w"}}}),
        json!({"code":200,"data":{"taskId":"t1","cover_url":"https://h/c.png","cover.PNG_url":"https://h/d"}}),
    ] {
        let event = parse(body);
        let keys = keys(&event);
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!((event.files.len(), distinct.len()), (2, 2), "{keys:?}");
    }
}

fn midi_notes(notes: Value) -> Vec<MidiNote> {
    let event = parse(
        json!({"task_id":"t1","code":200,"data":{"state":"complete","instruments":[{"name":"x","notes":notes}]}}),
    );
    let Details::Midi { instruments, .. } = event.details else { panic!("not midi: {:?}", event.details) };
    instruments.into_iter().next().unwrap().notes
}

#[test]
fn midi_notes_out_of_dynamodb_range_are_skipped() {
    let notes = midi_notes(json!([
        {"pitch":60,"start":0.5,"end":1,"velocity":0.8},
        {"pitch":60,"start":1e200,"end":1,"velocity":1},
        {"pitch":60,"start":0,"end":"-1e10","velocity":1},
        {"pitch":60,"start":0,"end":1,"velocity":"1e130"},
        {"pitch":60,"start":1e-200,"end":1,"velocity":1},
        {"pitch":1001,"start":0,"end":1,"velocity":1},
        {"pitch":-1,"start":0,"end":1,"velocity":1},
        {"pitch":1000,"start":0,"end":1e9,"velocity":-1e9},
        {"pitch":0,"start":0,"end":0.000000001}
    ]));
    assert_eq!(
        notes,
        [
            MidiNote { pitch: 60, start: 0.5, end: 1.0, velocity: 0.8 },
            MidiNote { pitch: 1000, start: 0.0, end: 1e9, velocity: -1e9 },
            MidiNote { pitch: 0, start: 0.0, end: 1e-9, velocity: 0.0 },
        ]
    );
}

#[test]
fn track_durations_out_of_dynamodb_range_are_dropped() {
    let durations: Vec<Option<f64>> = [json!(180.5), json!(1e200), json!("-1e300"), json!(1e-300), json!(0)]
        .into_iter()
        .map(|duration| {
            let event = parse(json!({"code":200,"data":{"callbackType":"complete","task_id":"t1",
                "data":[{"id":"x","audio_url":"https://h/a.mp3","duration":duration}]}}));
            let Details::Tracks { tracks } = event.details else { panic!("not tracks") };
            tracks[0].duration
        })
        .collect();
    assert_eq!(durations, [Some(180.5), None, None, None, Some(0.0)]);
}

/// The numbers the parser appends (a repeated id's `-2`, an id-less track's `track-3`, an
/// array item's `-1`) never make a name another body's raw id or key has: each pair below
/// would otherwise share a name, and so a file item and an S3 key, across two callbacks of one
/// task (one file would not be copied).
#[test]
fn appended_numbers_never_meet_a_raw_id_s_name() {
    let music = |ids: &[&str]| {
        let tracks: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": id, "audio_url": format!("https://h/{i}.mp3")}))
            .collect();
        let event = parse(json!({"code":200,"data":{"callbackType":"complete","task_id":"t1","data":tracks}}));
        names(&event.files).into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let repeated = music(&["x", "x"]);
    assert_eq!(repeated, ["tracks/x/audio", "tracks/x-2/audio"]);
    let raw = music(&["x-2"]);
    assert!(!repeated.contains(&raw[0]), "{raw:?}");
    let positional = music(&["", "", ""]);
    assert_eq!(positional[2], "tracks/track-3/audio");
    assert_ne!(music(&["track-3"])[0], positional[2]);
    // A repeated id `track` is no id-less second track.
    let hash = suno_callbacks::s3_key::short_sha256("track");
    assert_eq!(
        music(&["track", "track"]),
        [format!("tracks/track-{hash}/audio"), format!("tracks/track-{hash}-2/audio")]
    );

    let generic = |data: Value| {
        let event = parse(json!({ "data": data }));
        names(&event.files).into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let item = generic(json!({"taskId":"t1","cover_url":["https://h/a.png"]}));
    assert_eq!(item, ["cover-1"]);
    assert_ne!(generic(json!({"taskId":"t1","cover-1_url":"https://h/b.png"})), item);
}
