//! Properties over generated input: nothing panics, names are unique and S3-safe, parsing
//! is deterministic, track names do not change when later tracks are added, and every file
//! key fits in S3, the same every time and never shared by two names.

mod common;

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use suno_callbacks::parse::MAX_SEGMENT_LEN;
use suno_callbacks::{CallbackEvent, Family, PollResult, TaskId, callback_task_id, parse_callback, parse_poll, s3_key};

/// Keys the parser looks at, so generated bodies reach every branch, plus arbitrary ones.
const KEYS: &[&str] = &[
    "task_id",
    "taskId",
    "data",
    "code",
    "msg",
    "callbackType",
    "id",
    "audio_url",
    "audioUrl",
    "image_url",
    "source_audio_url",
    "source_image_url",
    "stream_audio_url",
    "source_stream_audio_url",
    "vocal_separation_info",
    "vocal_removal_info",
    "vocal_url",
    "instrumental_url",
    "origin_url",
    "drums_url",
    "images",
    "audioWavUrl",
    "audio_wav_url",
    "video_url",
    "instruments",
    "notes",
    "pitch",
    "start",
    "end",
    "velocity",
    "state",
    "voiceId",
    "validateInfo",
    "status",
    "errorCode",
    "errorMessage",
    "error_message",
    "text",
    "title",
    "error",
    "duration",
    "coverUrl",
    "streamUrl",
    "callBackUrl",
    "result",
    "manifestUrl",
    "manifest.json_url",
    "callbacks",
    "callbacks_url",
    // record-info answers
    "response",
    "sunoData",
    "successFlag",
    "midiData",
    "vocalUrl",
    "pianoUrl",
    "videoUrl",
];

/// Record-info statuses, so generated answers reach every outcome.
const STATUSES: &[&str] = &[
    "PENDING",
    "TEXT_SUCCESS",
    "FIRST_SUCCESS",
    "SUCCESS",
    "CALLBACK_EXCEPTION",
    "GENERATE_AUDIO_FAILED",
    "wait_validating",
    "1",
    "2",
];

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,10}(_url|Url)?",
        1 => any::<String>(),
    ]
    .boxed()
}

fn string_leaf() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("  ".to_owned()),
        Just("200".to_owned()),
        Just("text".to_owned()),
        Just("first".to_owned()),
        Just("complete".to_owned()),
        Just("error".to_owned()),
        prop::sample::select(STATUSES).prop_map(str::to_owned),
        "https?://[a-z.]{1,12}/[a-zA-Z0-9_./?=%-]{0,20}",
        "[a-zA-Z0-9*._/ -]{0,20}",
        any::<String>(),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!(200)),
        string_leaf().prop_map(Value::String),
    ]
    .boxed()
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A body that has a valid task id, with generated content around it.
fn keyed_body() -> impl Strategy<Value = Value> {
    (value(), value(), leaf()).prop_map(|(data, rest, code)| {
        let mut data = match data {
            Value::Object(map) => map,
            other => Map::from_iter([("data".to_owned(), other)]),
        };
        data.insert("task_id".to_owned(), json!("7d0f3b9a1c2e4f5a"));
        let mut root = match rest {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        root.insert("code".to_owned(), code);
        root.insert("data".to_owned(), Value::Object(data));
        Value::Object(root)
    })
}

/// A record-info answer with a task id and a status, generated content around them.
fn keyed_poll_answer() -> impl Strategy<Value = Value> {
    (value(), value(), value(), prop_oneof![leaf(), (0i64..5).prop_map(|n| json!(n))]).prop_map(
        |(rest, response, midi, status)| {
            let mut data = match rest {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            data.insert("taskId".to_owned(), json!("7d0f3b9a1c2e4f5a"));
            data.insert("response".to_owned(), response);
            data.insert("midiData".to_owned(), midi);
            data.insert("successFlag".to_owned(), status);
            json!({"code": 200, "msg": "success", "data": data})
        },
    )
}

/// A documented body from `dir` with a few edits, each at a node picked by its pre-order
/// index: the node replaced by a generated value, or (an object) given a generated entry.
/// Structure-aware where the bodies above are not: the body mostly keeps its shape, so a
/// parse reaches its files and streams with hostile names, URLs and neighbours.
fn mutated_fixture(dir: std::path::PathBuf) -> impl Strategy<Value = Value> {
    let bodies: Vec<Value> = common::json_files(dir.clone())
        .iter()
        .map(|name| {
            serde_json::from_slice(&common::read(dir.join(name)))
                .unwrap_or_else(|e| panic!("{name} is documented JSON: {e}"))
        })
        .collect();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), key(), value(), any::<bool>()), 1..4);
    (any::<prop::sample::Index>(), edits).prop_map(move |(file, edits)| {
        let mut body = file.get(&bodies).clone();
        for (at, key, value, insert) in edits {
            let mut nth = at.index(nodes(&body));
            match nth_mut(&mut body, &mut nth).expect("an index below nodes() is reached") {
                Value::Object(entries) if insert => {
                    entries.insert(key, value);
                }
                node => *node = value,
            }
        }
        body
    })
}

/// How many values `v` holds, itself included.
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(nodes).sum(),
        Value::Object(entries) => entries.values().map(nodes).sum(),
        _ => 0,
    }
}

/// The `nth` value of `v` in pre-order (`nth` counted down on the way), if it has one.
fn nth_mut<'a>(v: &'a mut Value, nth: &mut usize) -> Option<&'a mut Value> {
    if *nth == 0 {
        return Some(v);
    }
    *nth -= 1;
    let children: Vec<&'a mut Value> = match v {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(entries) => entries.values_mut().collect(),
        _ => return None,
    };
    children.into_iter().find_map(|child| nth_mut(child, nth))
}

/// Every name is unique across files and streams, made of S3-safe segments, and not reserved:
/// no file key is the manifest's or lies among the verbatim callback bodies.
fn assert_names_safe(event: &CallbackEvent) {
    let mut seen = HashSet::new();
    let manifest = s3_key::manifest_key(&event.task_id);
    let bodies = s3_key::callback_body_prefix(&event.task_id);
    for f in event.files.iter().chain(&event.streams) {
        assert!(seen.insert(f.name.as_str()), "duplicate name {:?}", f.name);
        assert!(!s3_key::is_reserved_name(&f.name), "reserved name {:?}", f.name);
        for url in [f.url.as_str(), "https://h/x.json", "https://h/x"] {
            let key = s3_key::file_key(&event.task_id, &f.name, url);
            assert!(key != manifest && !key.starts_with(&bodies), "{:?} is stored at {key}", f.name);
            assert!(key.len() <= s3_key::MAX_KEY_BYTES, "{:?} is stored at a key of {} bytes", f.name, key.len());
        }
        for segment in f.name.split('/') {
            assert!(!segment.is_empty(), "empty segment in {:?}", f.name);
            assert!(segment != "." && !segment.contains(".."), "dot segment in {:?}", f.name);
            // A sanitised segment plus at most a reserved word's `-<hash>` and a `-<n>` uniqueness suffix.
            assert!(segment.len() <= MAX_SEGMENT_LEN + 9 + 21, "long segment in {:?}", f.name);
            assert!(
                segment.chars().all(|c| c.is_ascii_alphanumeric() || "-_.*~+=@,:!".contains(c)),
                "unsafe character in {:?}",
                f.name
            );
        }
        assert!(!f.url.trim().is_empty(), "blank url for {:?}", f.name);
        assert_eq!(f.url.trim(), f.url, "untrimmed url for {:?}", f.name);
    }
}

/// What a signature is checked against before the body is parsed is what the parse reads:
/// every body the parse takes gives the same task id read alone.
fn assert_task_id_read_alone(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(event) = parse_callback(bytes) {
        prop_assert_eq!(callback_task_id(bytes), Ok(event.task_id));
    }
    Ok(())
}

/// An object's text with `entries` in order, repeats kept (a `Value` cannot hold them).
fn object_text(entries: &[(&str, String)]) -> String {
    let fields: Vec<String> = entries.iter().map(|(k, v)| format!("{}:{v}", Value::from(*k))).collect();
    format!("{{{}}}", fields.join(","))
}

/// A key of `keys` and its value's text: for a task id place mostly an id (valid, blank or
/// not one), else any value.
fn entry(keys: &'static [&'static str]) -> impl Strategy<Value = (&'static str, String)> {
    let id = prop::sample::select(vec!["a1", " ", "b/2", "c3"]).prop_map(|id| Value::from(id).to_string());
    (prop::sample::select(keys), prop_oneof![2 => id, 1 => value().prop_map(|v| v.to_string())]).prop_map(
        |(key, text)| match key {
            "task_id" | "taskId" => (key, text),
            _ if text.starts_with('"') => (key, "{}".to_owned()),
            _ => (key, text),
        },
    )
}

/// A task id of any accepted length and alphabet.
fn task_id() -> impl Strategy<Value = TaskId> {
    "[a-zA-Z0-9*._~+=@,:!-]{1,128}".prop_filter_map("a valid task id", |raw| TaskId::parse(&raw).ok())
}

/// A file name as the parser makes them: up to 17 segments of up to 94 safe bytes.
/// (Its last segment does not end in a kept extension: the parser hashes such a segment.)
fn file_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_*~+=@,:!-][a-zA-Z0-9._*~+=@,:!-]{0,93}", 1..18)
        .prop_map(|s| s.join("/"))
        .prop_filter("a parsed name", |name| !s3_key::ends_in_known_extension(name))
}

/// A file URL with or without a kept extension.
fn file_url() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["https://h/a.mp3", "https://h/a.jpeg?sig=1", "https://h/a", "https://h/a.exe"])
        .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any task id and name: the key fits in S3, is the same every time, lies under the task's
    /// prefix, is the plain `<prefix><name>[.<ext>]` whenever that fits, and two different
    /// names (or extensions) never share a key, however much of a long name they share.
    #[test]
    fn file_keys_fit_in_s3_and_never_collide(
        task in task_id(),
        name in file_name(),
        other in file_name(),
        tail in "[a-z0-9]{1,8}",
        url in file_url(),
        other_url in file_url(),
    ) {
        let key = s3_key::file_key(&task, &name, &url);
        prop_assert!(key.len() <= s3_key::MAX_KEY_BYTES, "{} bytes", key.len());
        prop_assert_eq!(&s3_key::file_key(&task, &name, &url), &key);
        prop_assert!(key.starts_with(&s3_key::task_prefix(&task)));
        let ext = s3_key::extension_from_url(&url).map(|e| format!(".{e}")).unwrap_or_default();
        let plain = format!("{}{name}{ext}", s3_key::task_prefix(&task));
        if plain.len() <= s3_key::MAX_KEY_BYTES {
            prop_assert_eq!(&key, &plain);
        } else {
            prop_assert_eq!(key.len(), s3_key::MAX_KEY_BYTES);
        }
        prop_assert!(key != s3_key::manifest_key(&task) && !key.starts_with(&s3_key::callback_body_prefix(&task)));
        // Another name, and a name that only differs after a long shared start.
        let longer = format!("{name}/{tail}");
        for (n, u) in [(other.as_str(), other_url.as_str()), (longer.as_str(), url.as_str())] {
            let other_ext = s3_key::extension_from_url(u);
            if (n, other_ext) != (name.as_str(), s3_key::extension_from_url(&url)) {
                prop_assert_ne!(&s3_key::file_key(&task, n, u), &key, "{:?} and {:?}", n, name);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_task_id_read_alone(&bytes)?;
        let _ = parse_poll(Family::Music, &bytes);
    }

    /// Any JSON read as any family's record-info answer: a result, pending or an error, never
    /// a panic, the same every time, and a result's names are as safe as a callback's.
    #[test]
    fn poll_answers_never_panic_and_name_files_safely(
        body in prop_oneof![value(), keyed_poll_answer()],
        family in prop::sample::select(&Family::ALL[..]),
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let result = parse_poll(family, &bytes);
        if let Ok(PollResult::Result(event)) = &result {
            assert_names_safe(event);
            prop_assert_eq!(event.family, family);
        }
        prop_assert_eq!(parse_poll(family, &bytes), result);
    }

    #[test]
    fn damaged_poll_answers_never_panic(index in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>(), family in prop::sample::select(&Family::ALL[..])) {
        let dir = common::documented_polls_dir();
        let names = common::json_files(dir.clone());
        let mut body = common::read(dir.join(index.get(&names)));
        let at = at.index(body.len());
        body[at] = byte;
        if let Ok(PollResult::Result(event)) = parse_poll(family, &body) {
            assert_names_safe(&event);
        }
    }

    #[test]
    fn damaged_fixtures_never_panic(index in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let dir = common::documented_dir();
        let names = common::json_files(dir.clone());
        let mut body = common::read(dir.join(index.get(&names)));
        let at = at.index(body.len());
        body[at] = byte;
        assert_task_id_read_alone(&body)?;
        if let Ok(event) = parse_callback(&body) {
            assert_names_safe(&event);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(value in value()) {
        let body = serde_json::to_vec(&value).unwrap();
        assert_task_id_read_alone(&body)?;
        if let Ok(event) = parse_callback(&body) {
            assert_names_safe(&event);
        }
    }

    /// Repeated keys (the last counts) and a `data` that is or is not an object, in any order.
    #[test]
    fn task_ids_read_alone_agree_with_repeated_keys(
        top in prop::collection::vec(
            (entry(&["task_id", "taskId", "data", "code"]), prop::collection::vec(entry(&["task_id", "taskId", "x"]), 0..5)),
            0..6,
        ),
    ) {
        // Each object `data` its own places.
        let top: Vec<(&str, String)> = top
            .into_iter()
            .map(|((k, v), inner)| match k {
                "data" if v.starts_with('{') => (k, object_text(&inner)),
                _ => (k, v),
            })
            .collect();
        assert_task_id_read_alone(object_text(&top).as_bytes())?;
    }

    /// Documented callbacks edited here and there: a task id read alone as the parse reads
    /// it, names safe, the same parse every time.
    #[test]
    fn edited_callbacks_parse_deterministically_with_safe_names(body in mutated_fixture(common::documented_dir())) {
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_task_id_read_alone(&bytes)?;
        let parsed = parse_callback(&bytes);
        if let Ok(event) = &parsed {
            assert_names_safe(event);
        }
        prop_assert_eq!(parse_callback(&bytes), parsed);
    }

    /// Documented record-info answers edited here and there, read as every family's (a
    /// family reads only its own answers' results).
    #[test]
    fn edited_poll_answers_parse_deterministically_with_safe_names(body in mutated_fixture(common::documented_polls_dir())) {
        let bytes = serde_json::to_vec(&body).unwrap();
        for family in Family::ALL {
            let result = parse_poll(family, &bytes);
            if let Ok(PollResult::Result(event)) = &result {
                assert_names_safe(event);
                prop_assert_eq!(event.family, family);
            }
            prop_assert_eq!(parse_poll(family, &bytes), result);
        }
    }

    #[test]
    fn keyed_bodies_parse_deterministically_with_safe_names(body in keyed_body()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let event = parse_callback(&bytes).unwrap();
        assert_task_id_read_alone(&bytes)?;
        assert_names_safe(&event);
        prop_assert_eq!(parse_callback(&bytes).unwrap(), event);
    }

    /// Whatever the ids (repeated, empty, hostile), a callback carrying the first `k` tracks
    /// names them exactly as the callback carrying all of them.
    #[test]
    fn track_names_survive_later_tracks(
        ids in prop::collection::vec(prop_oneof![Just(String::new()), Just("a".to_owned()), Just("a-2".to_owned()), any::<String>()], 1..8),
        k in any::<prop::sample::Index>(),
    ) {
        let body = |ids: &[String]| {
            let tracks: Vec<Value> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| json!({"id": id, "audio_url": format!("https://h/{i}.mp3"), "stream_audio_url": format!("https://h/{i}")}))
                .collect();
            let body = json!({"code": 200, "data": {"callbackType": "complete", "task_id": "t", "data": tracks}});
            parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap()
        };
        let all = body(&ids);
        let k = k.index(ids.len()) + 1;
        let prefix = body(&ids[..k]);
        assert_names_safe(&all);
        prop_assert_eq!(all.files.len(), ids.len());
        prop_assert_eq!(&all.files[..k], &prefix.files[..]);
        prop_assert_eq!(&all.streams[..k], &prefix.streams[..]);
    }

    /// Distinct ids, however they sanitise, name their tracks in a body of many tracks as in
    /// a body of that track alone (a `first` callback carries fewer tracks than `complete`).
    #[test]
    fn distinct_ids_name_their_tracks_alike_in_any_company(
        ids in prop::collection::vec(prop_oneof![Just("a_b".to_owned()), Just("a/b".to_owned()), Just("a b".to_owned()), "[a-z_/ .-]{1,6}", "[a-z]{60,70}", any::<String>()], 1..8),
    ) {
        let mut seen = HashSet::new();
        // Blank ids are named by position; repeated ids by order (documented).
        let ids: Vec<String> = ids.into_iter().filter(|id| !id.trim().is_empty() && seen.insert(id.trim().to_owned())).collect();
        let body = |ids: &[String]| {
            let tracks: Vec<Value> = ids.iter().map(|id| json!({"id": id, "audio_url": "https://h/a.mp3"})).collect();
            let body = json!({"code": 200, "data": {"callbackType": "complete", "task_id": "t", "data": tracks}});
            parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap()
        };
        let all = body(&ids);
        assert_names_safe(&all);
        for (i, id) in ids.iter().enumerate() {
            prop_assert_eq!(&body(std::slice::from_ref(id)).files[0], &all.files[i], "id {:?}", id);
        }
    }
}

/// Deep nesting is bounded by serde_json (recursion limit) and by the walk depth.
#[test]
fn deep_nesting_is_an_error_or_bounded() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_callback(deep.as_bytes()).is_err());
    let mut value = json!({"cover_url": "https://h/deep.png"});
    for _ in 0..100 {
        value = json!({ "nested": value });
    }
    let body = json!({"code": 200, "data": {"taskId": "t", "tree": value}});
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert!(event.files.is_empty(), "the walk should stop before 100 levels");
    assert_eq!(event.family, suno_callbacks::Family::Unknown);
}

/// The deepest names an unknown body can make (16 nested keys of 64 characters, under the
/// longest task id) are shortened to fit a table sort key (`file#<name>`, at most 1,024
/// bytes) and still get keys S3 accepts, each its own.
#[test]
fn the_deepest_unknown_names_get_keys_s3_accepts() {
    let task = "t".repeat(TaskId::MAX_LEN);
    let leaf = |c: &str| format!("{}_url", c.repeat(64));
    let mut value = json!({
        leaf("a"): "https://h/a.png",
        leaf("b"): "https://h/b.png",
        leaf("c"): "https://h/c.png",
    });
    for level in (1..16).rev() {
        value = json!({ format!("k{level:02}{}", "x".repeat(61)): value });
    }
    // Beside `data`, a root key is the first segment of the names under it.
    let Value::Object(mut body) = value else { unreachable!() };
    body.insert("code".into(), json!(200));
    body.insert("data".into(), json!({"taskId": task}));
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.files.len(), 3, "{:?}", event.files);
    let keys: HashSet<String> = event.files.iter().map(|f| s3_key::file_key(&event.task_id, &f.name, &f.url)).collect();
    assert_eq!(keys.len(), 3);
    let names: HashSet<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), 3);
    for f in &event.files {
        assert!(f.name.starts_with("k01"), "{}", f.name);
        let bytes = f.name.len();
        assert!(bytes <= suno_callbacks::parse::MAX_NAME_BYTES && bytes > 900, "{bytes} bytes: {}", f.name);
        assert!("file#".len() + bytes + "-256".len() <= 1024, "a sort key DynamoDB takes");
    }
    for key in keys {
        assert!(key.len() <= s3_key::MAX_KEY_BYTES, "{} bytes: {key}", key.len());
    }
}

/// An unknown body cannot make the parser list an unbounded number of files.
#[test]
fn unknown_bodies_contribute_a_bounded_number_of_urls() {
    let urls: Vec<String> = (0..10_000).map(|i| format!("https://h/{i}.png")).collect();
    let body = json!({"code": 200, "data": {"taskId": "t", "result": {"file_url": urls}}});
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.files.len(), suno_callbacks::parse::generic::MAX_URLS);
    assert_eq!(event.files[0].name, "result/file-1");
    assert_eq!(event.files[255].url, "https://h/255.png");
}

/// Nor tracks or cover images without bound: the first [`MAX_TRACKS_OR_IMAGES`] count, each as it would
/// alone, and an unknown body's walk stops at its limit, with the files before it named as
/// they would be.
#[test]
fn tracks_and_images_are_bounded_too() {
    use suno_callbacks::Details;
    use suno_callbacks::parse::MAX_TRACKS_OR_IMAGES;
    let tracks: Vec<Value> =
        (0..1000).map(|i| json!({"id": format!("id{i}"), "audio_url": format!("https://h/{i}.mp3")})).collect();
    let body = json!({"code": 200, "data": {"callbackType": "complete", "task_id": "t", "data": tracks}});
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    let Details::Tracks { tracks } = &event.details else { panic!("{:?}", event.details) };
    assert_eq!((tracks.len(), event.files.len()), (MAX_TRACKS_OR_IMAGES, MAX_TRACKS_OR_IMAGES));
    assert_eq!(event.files[MAX_TRACKS_OR_IMAGES - 1].url, format!("https://h/{}.mp3", MAX_TRACKS_OR_IMAGES - 1));

    let images: Vec<String> = (0..1000).map(|i| format!("https://h/{i}.png")).collect();
    let body = json!({"code": 200, "data": {"taskId": "t", "images": images}});
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.family, Family::CoverImage);
    assert_eq!(
        (event.files.len(), event.files[MAX_TRACKS_OR_IMAGES - 1].name.as_str()),
        (MAX_TRACKS_OR_IMAGES, "cover-256")
    );

    // Numbers among the URLs keep their places; a plain array of numbers is skipped whole.
    let mixed: Vec<Value> =
        (0..600).map(|i| if i % 2 == 0 { json!(i) } else { json!(format!("https://h/{i}.png")) }).collect();
    let body = json!({"code": 200, "data": {"taskId": "t", "numbers": vec![1; 5000], "result": {"file_url": mixed}}});
    let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(event.files.len(), suno_callbacks::parse::generic::MAX_URLS);
    assert_eq!((event.files[0].name.as_str(), event.files[0].url.as_str()), ("result/file-2", "https://h/1.png"));
}

/// A bare `url` key names no file in any spelling (too general: often a page).
#[test]
fn a_bare_url_key_is_no_file_in_any_spelling() {
    for key in ["url", "Url", "URL"] {
        let body = json!({"code": 200, "data": {"taskId": "t", "result": {key: "https://h/a.mp3", "audio_url": "https://h/b.mp3"}}});
        let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
        let files: Vec<(&str, &str)> = event.files.iter().map(|f| (f.name.as_str(), f.url.as_str())).collect();
        assert_eq!(files, [("result/audio", "https://h/b.mp3")], "{key}");
    }
}

/// The generated bodies reach what the properties check: names are only checked on events
/// with files or streams, so a strategy that never yields one would pass vacuously. (Random
/// JSON around a task id rarely does; documented bodies edited here and there mostly do.)
#[test]
fn edited_bodies_reach_files_and_streams() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let mut sample = |strategy: BoxedStrategy<Value>| -> Vec<Vec<u8>> {
        (0..256).map(|_| serde_json::to_vec(&strategy.new_tree(&mut runner).unwrap().current()).unwrap()).collect()
    };
    let names = |e: &CallbackEvent| !e.files.is_empty() || !e.streams.is_empty();
    let callbacks = sample(mutated_fixture(common::documented_dir()).boxed());
    let with_names = callbacks.iter().filter_map(|b| parse_callback(b).ok()).filter(names).count();
    let answers = sample(mutated_fixture(common::documented_polls_dir()).boxed());
    let results = answers
        .iter()
        .filter(|b| {
            Family::ALL.iter().any(|family| matches!(parse_poll(*family, b), Ok(PollResult::Result(e)) if names(&e)))
        })
        .count();
    assert!(with_names >= 64 && results >= 64, "of 256: {with_names} callbacks and {results} answers name files");
}
