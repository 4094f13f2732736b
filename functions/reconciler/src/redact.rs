//! Callback URLs taken out of a record-info answer before it is read, hashed and archived.
//!
//! The answers echo where the provider was told to call back: `data.callbackUrl` (WAV, MP4,
//! MIDI, cover images, vocal separation) and `data.param`, the original request as a JSON
//! *string*, with its `callBackUrl` (section 7 of the callback catalog). With path-token
//! authentication that URL is `https://.../callback/<token>`, and the answer is archived
//! under `tasks/<id>/callbacks/`: kept as it came, the secret token would be readable by
//! whoever may read that prefix. No result is read from these fields (the parser ignores
//! callback URLs), so the answer is redacted before anything else sees it. A message for
//! people (`errorMessage` of a `CALLBACK_EXCEPTION`, say) may quote the URL: there only the
//! path token is replaced, the message being read and recorded.

use std::borrow::Cow;

use serde_json::Value;
use stemvault_vault::shown::{SLASHES, slash_at};
use suno_callbacks::parse::read_json;

/// What a callback URL is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Keys whose string value is a callback URL, case-sensitive: the answers' and requests'
/// spellings (`calBackUrl` is voice regenerate's request field).
const CALLBACK_URL_KEYS: [&str; 4] = ["callbackUrl", "callBackUrl", "callback_url", "calBackUrl"];

/// The original request, as a JSON string, in record-info answers.
const PARAM_KEY: &str = "param";

/// `body` with the string value of every callback URL key anywhere in it, every string naming
/// the `/callback/` path under a key naming a callback, and every such string inside `param`
/// (a string holding JSON, written back as a string, or an object; a `param` string holding no
/// JSON but naming a callback whole) replaced by [`REDACTED`], and the path token in a message
/// quoting it (`msg`, `errorMessage`, `error`), then serialized again by serde_json (`preserve_order` is on in the
/// workspace, so keys keep their order; either way the same answer always gives the same
/// bytes, hence the same archive key and callback id).
///
/// The body is read as the poll's parser reads it ([`read_json`]: a broken character in a
/// string as U+FFFD), so every answer that parser reads is redacted. A body that is no JSON
/// (refused by the poll's parser too: never archived), or has no callback URL to replace, is
/// returned as it came: verbatim, and byte for byte what earlier runs archived.
pub fn callback_urls(body: &[u8]) -> Cow<'_, [u8]> {
    let Ok(mut root) = read_json(body) else { return Cow::Borrowed(body) };
    if !redact(&mut root, false) {
        return Cow::Borrowed(body);
    }
    match serde_json::to_vec(&root) {
        Ok(redacted) => Cow::Owned(redacted),
        // Unreachable for a Value (its keys are strings): the answer stays what it was.
        Err(_) => Cow::Borrowed(body),
    }
}

/// Redact `value` in place; whether anything changed. Depth is bounded by serde_json's
/// recursion limit (128), per `param` level. `by_value`: any string naming the callback path
/// is replaced, as it is inside the request `param` holds (where nothing is read: a
/// form-encoded request, say) and anywhere under a key naming a callback (another spelling,
/// such as `callBackURL`, or a list of them); elsewhere the parser's own fields are never
/// touched.
fn redact(value: &mut Value, by_value: bool) -> bool {
    let mut changed = false;
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                changed |= match child {
                    Value::String(url) if CALLBACK_URL_KEYS.contains(&key.as_str()) => replace(url),
                    Value::String(param) if key == PARAM_KEY => redact_param(param),
                    // A message, or a list or an object of them (`errors`, say).
                    _ if names_message(key) => redact_messages(child),
                    // A request kept as an object rather than a string is read no more.
                    _ if key == PARAM_KEY => redact(child, true),
                    _ => redact(child, by_value || names_callback(key)),
                };
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= redact(item, by_value);
            }
        }
        Value::String(text) if by_value && names_callback_path(text) => changed = replace(text),
        _ => {}
    }
    changed
}

/// Whether a key names a callback, in any case and spelling (`callback_url`, `calBackURL`).
fn names_callback(key: &str) -> bool {
    let key: String = key.chars().filter(|c| !matches!(c, '_' | '-')).collect::<String>().to_ascii_lowercase();
    key.contains("callback") || key.contains("calback")
}

/// Whether a key holds a message for people (`msg`, `errorMessage`, `error_message`,
/// `error`): a provider's account of a callback that failed (`CALLBACK_EXCEPTION`) may quote
/// the callback URL in it.
fn names_message(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "msg" || key.contains("message") || key.contains("error")
}

/// [`redact_path_tokens`] in every string of `value`, at any depth; whether anything changed.
fn redact_messages(value: &mut Value) -> bool {
    match value {
        Value::String(text) => redact_path_tokens(text),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| redact_messages(item) | changed),
        Value::Object(object) => object.values_mut().fold(false, |changed, item| redact_messages(item) | changed),
        _ => false,
    }
}

/// Every path segment after `/callback/` in a message replaced by [`REDACTED`], the rest of
/// the message kept (it is read and recorded: the task's failure message).
fn redact_path_tokens(text: &mut String) -> bool {
    let lower = text.to_ascii_lowercase();
    let mut redacted = String::new();
    let mut copied = 0;
    for (start, end) in path_tokens(&lower) {
        let segment = &text[start..end];
        if segment.is_empty() || segment == REDACTED {
            continue;
        }
        redacted.push_str(&text[copied..start]);
        redacted.push_str(REDACTED);
        copied = end;
    }
    if copied == 0 {
        return false;
    }
    redacted.push_str(&text[copied..]);
    *text = redacted;
    true
}

/// Whether `text` holds a URL path through `/callback/` (where the path token follows).
fn names_callback_path(text: &str) -> bool {
    path_tokens(&text.to_ascii_lowercase()).next().is_some()
}

/// Where each path token in `lower` (a text in ASCII lower case: the same byte offsets) starts
/// and ends: the segment after `callback` between two slashes, each written as is, as JSON
/// escapes it (`\/`, in a message quoting JSON) or percent-encoded (`%2f`, in a quoted query).
fn path_tokens(lower: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    const CALLBACK: &str = "callback";
    lower.match_indices(CALLBACK).filter_map(|(at, _)| {
        SLASHES.iter().find(|slash| lower[..at].ends_with(**slash))?;
        let after = at + CALLBACK.len();
        let start = after + slash_at(&lower[after..])?;
        let rest = &lower[start..];
        let ends = |c: char| matches!(c, '/' | '\\' | '%' | '?' | '#' | '&' | '"' | '\'') || c.is_whitespace();
        Some((start, start + rest.find(ends).unwrap_or(rest.len())))
    })
}

/// A callback URL replaced; false when it already was.
fn replace(url: &mut String) -> bool {
    if url.as_str() == REDACTED {
        return false;
    }
    REDACTED.clone_into(url);
    true
}

/// A `param` string holding JSON, redacted inside and serialized back into the string. One
/// that holds no JSON (cut short, say) but names a callback is replaced whole: nothing reads
/// `param`, and a token must not be archived because its text did not parse. Any other is left
/// alone.
fn redact_param(param: &mut String) -> bool {
    let Ok(mut request) = read_json(param.as_bytes()) else {
        if !names_callback(param) {
            return false;
        }
        return replace(param);
    };
    if !redact(&mut request, true) {
        return false;
    }
    match serde_json::to_string(&request) {
        Ok(redacted) => {
            *param = redacted;
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use suno_callbacks::{Family, PollResult, parse_poll};

    use super::*;

    const TOKEN: &str = "s3cr3t-path-token-4f9a0c2b7d";

    /// A kie.ai generate record-info answer whose request was sent to a path-token URL, with
    /// the `callbackUrl` the other families' answers carry.
    fn kie_answer() -> String {
        let url = format!("https://abc123.execute-api.eu-west-1.amazonaws.com/callback/{TOKEN}");
        format!(
            r#"{{"code":200,"msg":"success","data":{{"taskId":"7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c","parentMusicId":"",
            "callbackUrl":"{url}",
            "param":"{{\"prompt\":\"Rain on the harbour\",\"model\":\"V4_5\",\"callBackUrl\":\"{url}\"}}",
            "response":{{"taskId":"7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c","sunoData":[
                {{"id":"4f1e2d3c-0001","audioUrl":"https://tempfile.aiquickdraw.com/r/0001.mp3","duration":180.5}},
                {{"id":"4f1e2d3c-0002","audioUrl":"https://tempfile.aiquickdraw.com/r/0002.mp3","duration":201.25}}]}},
            "status":"SUCCESS","type":"chirp-v4-5","operationType":"generate","errorCode":null,"errorMessage":null}}}}"#
        )
    }

    fn redacted_json(body: &[u8]) -> Value {
        serde_json::from_slice(&callback_urls(body)).expect("still JSON")
    }

    #[test]
    fn a_kie_answer_keeps_no_token_and_every_other_field() {
        let body = kie_answer();
        assert_eq!(body.matches(TOKEN).count(), 2);
        let original: Value = serde_json::from_str(&body).unwrap();
        let redacted = callback_urls(body.as_bytes());
        assert!(!String::from_utf8_lossy(&redacted).contains(TOKEN), "{}", String::from_utf8_lossy(&redacted));

        let redacted: Value = serde_json::from_slice(&redacted).unwrap();
        assert_eq!(redacted["data"]["callbackUrl"], REDACTED);
        let param: Value = serde_json::from_str(redacted["data"]["param"].as_str().unwrap()).unwrap();
        assert_eq!(param, json!({"prompt": "Rain on the harbour", "model": "V4_5", "callBackUrl": REDACTED}));
        assert_eq!(redacted["data"]["taskId"], "7d0f3b9a1c2e4f5a8b6c9d0e1f2a3b4c");
        assert_eq!(redacted["data"]["status"], "SUCCESS");
        assert_eq!(
            redacted["data"]["response"]["sunoData"][1]["audioUrl"],
            "https://tempfile.aiquickdraw.com/r/0002.mp3"
        );
        // Everything but the two redacted fields is as it was.
        let without_urls = |mut answer: Value| {
            let data = answer["data"].as_object_mut().unwrap();
            data.remove("callbackUrl");
            data.remove("param");
            answer
        };
        assert_eq!(without_urls(redacted), without_urls(original));
    }

    #[test]
    fn callback_urls_are_redacted_in_nested_arrays_and_objects() {
        let url = format!("https://api.example.com/callback/{TOKEN}");
        let body = json!({
            "items": [
                {"callbackUrl": url},
                [{"callback_url": url, "n": [1, 2.5, null]}, {"param": json!({"callBackUrl": url}).to_string()}],
                {"deeper": {"calBackUrl": url, "callbackUrl": null, "CallbackUrl": "kept"}}
            ]
        });
        let redacted = redacted_json(body.to_string().as_bytes());
        let param = json!({"callBackUrl": REDACTED}).to_string();
        assert_eq!(
            redacted,
            json!({
                "items": [
                    {"callbackUrl": REDACTED},
                    [{"callback_url": REDACTED, "n": [1, 2.5, null]}, {"param": param}],
                    {"deeper": {"calBackUrl": REDACTED, "callbackUrl": null, "CallbackUrl": "kept"}}
                ]
            })
        );
    }

    #[test]
    fn a_body_that_is_no_json_is_left_as_it_came() {
        for body in
            [&b"not json: callbackUrl=https://x/callback/t"[..], b"", b"{\"callbackUrl\":\"https://x/c", b"\xff\xfe"]
        {
            assert!(matches!(callback_urls(body), Cow::Borrowed(same) if same == body), "{body:?}");
        }
    }

    #[test]
    fn a_param_with_no_callback_url_is_left_as_it_came() {
        for param in ["{not json", "[1,2]", "\"https://x\"", "", r#"{"prompt":"rain"}"#] {
            let body = json!({"code": 200, "data": {"taskId": "t1", "param": param, "status": "PENDING"}}).to_string();
            assert!(matches!(callback_urls(body.as_bytes()), Cow::Borrowed(_)), "{body}");
        }
    }

    /// A `param` that holds no JSON but names a callback (cut short, or another encoding; in
    /// any of the spellings a key may have) is replaced whole; one that holds JSON other than an object is redacted inside.
    #[test]
    fn a_param_that_names_a_callback_keeps_no_token_whatever_it_holds() {
        let url = format!("https://x/callback/{TOKEN}");
        for param in [
            format!("prompt=rain&callBackUrl={url}"),
            format!("prompt=rain&calBack_Url=https://x/hook/{TOKEN}"),
            format!(r#"{{"prompt":"rain","callBackUrl":"{url}"#),
            json!([{"callBackUrl": url}]).to_string(),
            json!(format!("prompt=rain&callBackUrl={url}")).to_string(),
            json!({"prompt": "rain", "callBackURL": url}).to_string(),
        ] {
            let body = json!({"code": 200, "data": {"taskId": "t1", "param": param, "status": "PENDING"}}).to_string();
            let redacted = callback_urls(body.as_bytes());
            assert!(matches!(redacted, Cow::Owned(_)), "{body}");
            assert!(!String::from_utf8_lossy(&redacted).contains(TOKEN), "{}", String::from_utf8_lossy(&redacted));
        }
    }

    /// Outside `param`, only a key naming a callback is redacted by its value: a title or a
    /// result URL through `/callback/` is read as it came.
    #[test]
    fn the_parsers_fields_are_not_redacted_for_their_value() {
        let url = format!("https://x/callback/{TOKEN}");
        let body = json!({"data": {
            "title": url, "audioUrl": url, "callBackURL": url, "callbackType": "complete",
            "CalBack_Url": url, "callback": {"url": url}, "callbackUrls": [url, "https://h/x"],
            "param": {"note": url}
        }});
        let redacted = redacted_json(body.to_string().as_bytes());
        let expected = json!({
            "title": url, "audioUrl": url, "callBackURL": REDACTED, "callbackType": "complete",
            "CalBack_Url": REDACTED, "callback": {"url": REDACTED}, "callbackUrls": [REDACTED, "https://h/x"],
            "param": {"note": REDACTED}
        });
        assert_eq!(redacted["data"], expected);
    }

    /// An answer the poll's parser reads only with a broken character repaired (a title cut
    /// in the middle of an emoji) is redacted too, inside its `param` as well.
    #[test]
    fn an_answer_with_a_broken_character_keeps_no_token() {
        let broken = kie_answer()
            .replace("Rain on the harbour", r"Rain \\ud83c")
            .replace("180.5}", r#"180.5,"title":"\ud83c"}"#);
        assert!(serde_json::from_slice::<Value>(broken.as_bytes()).is_err(), "serde_json alone refuses it");
        let redacted = callback_urls(broken.as_bytes());
        assert!(!String::from_utf8_lossy(&redacted).contains(TOKEN), "{}", String::from_utf8_lossy(&redacted));
        let read = parse_poll(Family::Music, &redacted).unwrap();
        assert!(matches!(read, PollResult::Result(_)), "{read:?}");
    }

    /// A provider's message quoting the callback URL (a callback that failed) keeps its
    /// words but not the path token; a message without one, and a file URL, stay as they came.
    #[test]
    fn a_message_quoting_the_callback_url_keeps_no_token() {
        let body = json!({"code": 200, "msg": "success", "data": {
            "taskId": "t1", "status": "CALLBACK_EXCEPTION",
            "errorMessage": format!("POST https://h/callback/{TOKEN} answered 502; retried at https://h/CallBack/{TOKEN}?x=1"),
            "error": format!("https://h/callback/{TOKEN}"),
            "errors": [{"detail": format!("no answer from https://h/callback/{TOKEN}")}, 3],
            "audioUrl": format!("https://cdn/callback/{TOKEN}.mp3"),
        }});
        let redacted = redacted_json(body.to_string().as_bytes());
        let expected =
            format!("POST https://h/callback/{REDACTED} answered 502; retried at https://h/CallBack/{REDACTED}?x=1");
        assert_eq!(redacted["data"]["errorMessage"], expected.as_str());
        assert_eq!(redacted["data"]["error"], format!("https://h/callback/{REDACTED}").as_str());
        let in_a_list = json!([{"detail": format!("no answer from https://h/callback/{REDACTED}")}, 3]);
        assert_eq!(redacted["data"]["errors"], in_a_list);
        assert_eq!(
            redacted["data"]["audioUrl"],
            format!("https://cdn/callback/{TOKEN}.mp3").as_str(),
            "read as it came"
        );
        assert_eq!(redacted["msg"], "success");
        let once = callback_urls(body.to_string().as_bytes()).into_owned();
        assert!(matches!(callback_urls(&once), Cow::Borrowed(_)), "stable");
    }

    /// A message quoting the URL as JSON writes it (`\/`) or percent-encoded (in a quoted
    /// query string) keeps no token either; a word `callback` outside a path stays.
    #[test]
    fn a_message_quoting_the_callback_url_escaped_or_encoded_keeps_no_token() {
        let body = json!({"code": 200, "data": {"taskId": "t1",
            "errorMessage": format!(r#"request {{"callBackUrl":"https:\/\/h\/callback\/{TOKEN}"}} failed"#),
            "msg": format!("GET /retry?to=https%3A%2F%2Fh%2FCallback%2F{TOKEN}&n=2 failed; callback/ {TOKEN}"),
        }});
        let redacted = redacted_json(body.to_string().as_bytes());
        let escaped = format!(r#"request {{"callBackUrl":"https:\/\/h\/callback\/{REDACTED}"}} failed"#);
        assert_eq!(redacted["data"]["errorMessage"], escaped.as_str());
        let encoded = format!("GET /retry?to=https%3A%2F%2Fh%2FCallback%2F{REDACTED}&n=2 failed; callback/ {TOKEN}");
        assert_eq!(redacted["data"]["msg"], encoded.as_str(), "no path before that last `callback/`");
    }

    /// An answer without a callback URL stays verbatim (the documented lyrics answer: its
    /// `param` has none), and a redacted answer redacts to itself: the same bytes each time.
    #[test]
    fn redacting_is_stable() {
        let lyrics = include_str!("../../../fixtures/polls/own/poll-lyrics-record-info__own__200-SUCCESS.json");
        assert!(matches!(callback_urls(lyrics.as_bytes()), Cow::Borrowed(_)));

        let body = kie_answer();
        let once = callback_urls(body.as_bytes()).into_owned();
        assert_eq!(callback_urls(body.as_bytes()), once);
        assert!(matches!(callback_urls(&once), Cow::Borrowed(same) if same == once.as_slice()));
    }

    /// The poll's parser reads the redacted fixtures exactly as the originals: no field it
    /// reads (task id, status, results) is touched.
    #[test]
    fn the_documented_answers_read_the_same_once_redacted() {
        for (family, body, url) in [
            (
                Family::VocalSeparation,
                include_str!("../../../fixtures/polls/poll-vocal-removal-record-info__kie__200-separate_vocal.json"),
                "https://57312fc2e366.ngrok-free.app/api/v1/vocal-removal/test",
            ),
            (
                Family::VocalSeparation,
                include_str!(
                    "../../../fixtures/polls/poll-vocal-removal-record-info__kie-dogtest__200-separate_vocal.json"
                ),
                "https://57312fc2e366.ngrok-free.app/api/v1/vocal-removal/test",
            ),
            (
                Family::Wav,
                include_str!("../../../fixtures/polls/poll-wav-record-info__kie-dogtest-cn__200.json"),
                "https://api.example.com/callback",
            ),
            (
                Family::Music,
                include_str!("../../../fixtures/polls/own/poll-generate-record-info__own__200-SUCCESS.json"),
                "https://api.example.com/callback",
            ),
            (
                Family::CoverImage,
                include_str!("../../../fixtures/polls/own/poll-cover-record-info__own__200-1.json"),
                "https://api.example.com/callback",
            ),
            (
                Family::MusicVideo,
                include_str!("../../../fixtures/polls/own/poll-mp4-record-info__own__200-SUCCESS.json"),
                "https://api.example.com/callback",
            ),
        ] {
            assert!(body.contains(url));
            let redacted = callback_urls(body.as_bytes());
            assert!(matches!(redacted, Cow::Owned(_)), "{body}");
            assert!(!String::from_utf8_lossy(&redacted).contains(url), "{}", String::from_utf8_lossy(&redacted));
            let read = parse_poll(family, &redacted).unwrap();
            assert!(matches!(read, PollResult::Result(_)), "{read:?}");
            assert_eq!(read, parse_poll(family, body.as_bytes()).unwrap(), "{family}");
        }
    }

    /// MIDI's note times are floats serde_json writes back in its own notation (compared by
    /// what the reconciler acts on, not to the last bit).
    #[test]
    fn the_documented_midi_answer_reads_the_same_once_redacted() {
        let body = include_str!("../../../fixtures/polls/poll-midi-record-info__kie__200.json");
        let redacted = callback_urls(body.as_bytes());
        assert!(!String::from_utf8_lossy(&redacted).contains("https://example.callback"));
        let (Ok(PollResult::Result(read)), Ok(PollResult::Result(original))) =
            (parse_poll(Family::Midi, &redacted), parse_poll(Family::Midi, body.as_bytes()))
        else {
            panic!("both read as a result");
        };
        assert_eq!(read.task_id, original.task_id);
        assert_eq!((read.family, read.stage, read.code), (original.family, original.stage, original.code));
        assert_eq!(read.files, original.files);
    }
}
