//! Bodies that are not usable callbacks get a specific error, and envelope edge cases.

use suno_callbacks::parse::MISSING_CODE;
use suno_callbacks::{Family, ParseError, Stage, TaskIdError, parse_callback};

#[test]
fn not_json_does_not_echo_the_body() {
    for body in [
        &br#"{"code":200,"data":{"task_id":"hunter2-secret""#[..],
        b"hunter2-secret",
        b"{\"hunter2-secret\" 1}",
        // Repaired (U+FFFD for the byte that is not UTF-8), it is still no JSON.
        b"{\"a\":\"hunter2-secret\xff\",}",
        b"",
    ] {
        match parse_callback(body) {
            Err(ParseError::NotJson(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
}

#[test]
fn json_that_is_not_an_object() {
    for body in ["[]", "[{\"task_id\":\"a\"}]", "\"task\"", "200", "null", "true"] {
        assert_eq!(parse_callback(body.as_bytes()), Err(ParseError::NotAnObject), "{body}");
    }
}

#[test]
fn task_id_missing_or_unusable() {
    let no_id = [
        r#"{}"#,
        r#"{"code":200,"data":null}"#,
        r#"{"code":200,"data":{"task_id":12345,"taskId":null},"task_id":["a"],"taskId":{"id":"a"}}"#,
        r#"{"code":200,"data":{"task_id":"","taskId":"   "}}"#,
        r#"{"code":200,"data":{"id":"abc"},"id":"abc"}"#,
    ];
    for body in no_id {
        assert_eq!(parse_callback(body.as_bytes()), Err(ParseError::NoTaskId), "{body}");
    }
    let cases = [
        (r#"{"data":{"task_id":"../etc"}}"#, TaskIdError::BadCharacter { found: '/', at: 2 }),
        (r#"{"data":{"taskId":"a..b"}}"#, TaskIdError::DotDot),
        (r#"{"task_id":"."}"#, TaskIdError::Dot),
        (r#"{"taskId":"tab\there"}"#, TaskIdError::BadCharacter { found: '\t', at: 3 }),
    ];
    for (body, expected) in cases {
        assert_eq!(parse_callback(body.as_bytes()), Err(ParseError::InvalidTaskId(expected)), "{body}");
    }
    // The first non-blank candidate decides; an invalid one is not skipped for a later one.
    let body = r#"{"taskId":"fine","data":{"task_id":"not fine"}}"#;
    assert!(matches!(parse_callback(body.as_bytes()), Err(ParseError::InvalidTaskId(_))));
}

#[test]
fn code_forms() {
    let body =
        |code: &str| format!(r#"{{"code":{code},"msg":"m","data":{{"task_id":"t","audioWavUrl":"https://h/a.wav"}}}}"#);
    for (code, expected) in [
        ("200", 200),
        ("\"200\"", 200),
        ("200.0", 200),
        ("\" 501 \"", 501),
        ("null", MISSING_CODE),
        ("\"ok\"", MISSING_CODE),
        ("true", MISSING_CODE),
        ("200.5", MISSING_CODE),
    ] {
        let event = parse_callback(body(code).as_bytes()).unwrap();
        assert_eq!(event.code, expected, "{code}");
        assert_eq!(event.stage, if expected == 200 { Stage::Final } else { Stage::Error }, "{code}");
        // The file is recorded whatever the code: a failure never loses what it carried.
        assert_eq!(event.files.len(), 1);
    }
    let no_code = parse_callback(br#"{"data":{"task_id":"t","callbackType":"complete","data":[]}}"#).unwrap();
    assert_eq!((no_code.code, no_code.stage, no_code.message.as_str()), (MISSING_CODE, Stage::Error, ""));
    assert!(!no_code.succeeded());
}

#[test]
fn unknown_family_is_still_accepted() {
    let event = parse_callback(br#"{"code":200,"msg":"ok","taskId":"abc","data":{"anything":1}}"#).unwrap();
    assert_eq!((event.family, event.stage, event.task_id.as_str()), (Family::Unknown, Stage::Final, "abc"));
    assert!(event.files.is_empty());
}

#[test]
fn music_edge_cases() {
    // No ids, one numeric id, a hostile id, whitespace and non-string URLs.
    let body = br#"{"code":200,"data":{"callbackType":"FIRST","task_id":"t","data":[
        {"audio_url":"https://h/1.mp3","image_url":"  "},
        "not a track",
        {"id":42,"audio_url":" https://h/2.mp3 ","image_url":7},
        {"id":"../../etc/passwd","audioUrl":"https://h/3.mp3","audio_url":""},
        {"id":"","audio_url":"https://h/4.mp3"},
        {"id":"both","audio_url":"https://h/5.mp3","audioUrl":"https://h/5b.mp3"}
    ]}}"#;
    let event = parse_callback(body).unwrap();
    assert_eq!(event.stage, Stage::First);
    let files: Vec<(&str, &str)> = event.files.iter().map(|f| (f.name.as_str(), f.url.as_str())).collect();
    assert_eq!(
        files,
        [
            ("tracks/track-1/audio", "https://h/1.mp3"),
            ("tracks/42/audio", "https://h/2.mp3"),
            // Sanitised, so suffixed with the first 8 hex of SHA-256("../../etc/passwd").
            ("tracks/.__.__etc_passwd-3754d6cb/audio", "https://h/3.mp3"),
            ("tracks/track-5/audio", "https://h/4.mp3"),
            // Both spellings, both set: the first in the document is the file, once.
            ("tracks/both/audio", "https://h/5.mp3"),
        ]
    );
}
