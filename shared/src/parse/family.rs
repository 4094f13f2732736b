//! Which family a body belongs to, from the keys it carries (rules in the module docs).

use serde_json::Value;

use super::value::Object;
use crate::Family;

pub(super) fn detect(root: &Object, code: i64, message: &str, callback_type: Option<&str>) -> Family {
    let top_level_task_id = root.contains_key("task_id");
    let top_level_camel_id = root.contains_key("taskId");
    let message = message.to_ascii_lowercase();
    // The older kie MIDI page's field list (and its sample receiver) put the id at the top as
    // `taskId`; only MIDI is documented so, and its failure says so in `msg`.
    let midi_top_level_id = top_level_task_id || (top_level_camel_id && message.contains("midi"));
    let Some(data) = root.get("data").and_then(Value::as_object) else {
        // MIDI's failure body: `{task_id, code: 500, msg, data: null}`.
        let data_missing = matches!(root.get("data"), None | Some(Value::Null));
        return if data_missing && midi_top_level_id { Family::Midi } else { Family::Unknown };
    };
    let has = |key: &str| data.contains_key(key);

    if has("vocal_separation_info") || has("vocal_removal_info") {
        Family::VocalSeparation
    } else if has("images") {
        Family::CoverImage
    } else if has("audioWavUrl") || has("audio_wav_url") {
        Family::Wav
    } else if has("video_url") || has("videoUrl") {
        Family::MusicVideo
    } else if has("instruments")
        || (has("state") && (top_level_task_id || top_level_camel_id))
        || (has("taskId") && callback_type.is_none() && message.contains("midi"))
    {
        Family::Midi
    } else if has("voiceId")
        || has("validateInfo")
        || (has("status") && has("errorCode") && callback_type.is_none() && !has("data"))
    {
        Family::Voice
    } else if is_lyrics(data, code, &message, callback_type) {
        Family::Lyrics
    } else if callback_type.is_some() || data.get("data").is_some_and(Value::is_array) {
        Family::Music
    } else if top_level_task_id && data.is_empty() {
        // MIDI with no notes ("midiData may be empty").
        Family::Midi
    } else {
        Family::Unknown
    }
}

/// Whether a failure's message names lyrics (the documented lyrics failures' do): what tells a
/// lyrics failure from a music one when its body carries nothing else of its family.
pub fn names_lyrics(message: &str) -> bool {
    lowercase_names_lyrics(&message.to_ascii_lowercase())
}

/// [`names_lyrics`] of a message already in lower case.
fn lowercase_names_lyrics(message: &str) -> bool {
    ["song description", "lyrics generation", "lyric generation", "generate lyrics"].iter().any(|p| message.contains(p))
}

fn is_lyrics(data: &Object, code: i64, message: &str, callback_type: Option<&str>) -> bool {
    let items = super::music::track_items(data);
    let has_key = |item: &Value, key: &str| item.as_object().is_some_and(|o| o.contains_key(key));
    let has_audio = |item: &Value| has_key(item, "audio_url") || has_key(item, "audioUrl");
    // Items with audio are tracks, whatever else the body says (an id's spelling, a failure's
    // message naming lyrics): as lyrics, their files would be dropped.
    if items.iter().any(has_audio) {
        return false;
    }
    let text_items = items.iter().any(|item| has_key(item, "text"));
    // docs.sunoapi.org lyrics key the task as `data.taskId`; music-track bodies use `task_id`.
    let sunoapi_lyrics = data.contains_key("taskId") && !data.contains_key("task_id") && callback_type.is_some();
    // docs.kie.ai's lyrics failure keeps `callbackType: complete` with no items, whatever its
    // message (its codes: 400, 500); every music failure documented is `error`.
    let lyrics_failure =
        code != 200 && (lowercase_names_lyrics(message) || (callback_type == Some("complete") && items.is_empty()));
    text_items || sunoapi_lyrics || lyrics_failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn family_of(body: Value) -> Family {
        let root = body.as_object().unwrap();
        let code = root.get("code").and_then(Value::as_i64).unwrap_or(0);
        let msg = root.get("msg").and_then(Value::as_str).unwrap_or("");
        let callback_type = root["data"].get("callbackType").and_then(Value::as_str);
        detect(root, code, msg, callback_type)
    }

    #[test]
    fn failure_bodies_keep_their_family() {
        use Family::*;
        let cases = [
            (json!({"code":501,"data":{"callbackType":"error","task_id":"t","data":null}}), Music),
            (json!({"code":501,"data":{"callbackType":"error","task_id":"t","data":[]}}), Music),
            (json!({"code":501,"data":{"callbackType":"error","task_id":"t","error":"x"}}), Music),
            (
                json!({"code":400,"msg":"Song Description flagged for moderation",
                       "data":{"callbackType":"complete","task_id":"t","data":null}}),
                Lyrics,
            ),
            (
                json!({"code":500,"msg":"Internal Error - Please try again later",
                       "data":{"callbackType":"complete","task_id":"t","data":null}}),
                Lyrics,
            ),
            (
                json!({"code":400,"msg":"Lyrics generation failed",
                       "data":{"callbackType":"error","taskId":"t","data":null}}),
                Lyrics,
            ),
            (json!({"code":501,"data":{"taskId":"t","images":null}}), CoverImage),
            (json!({"code":500,"data":{"task_id":"t","audioWavUrl":null}}), Wav),
            (json!({"code":500,"data":{"task_id":"t","vocal_separation_info":null}}), VocalSeparation),
            (json!({"code":400,"data":{"task_id":"t","vocal_removal_info":null}}), VocalSeparation),
            (json!({"task_id":"t","code":500,"msg":"MIDI generation failed","data":null}), Midi),
            (json!({"code":500,"msg":"MIDI generation failed","data":{"taskId":"t"}}), Midi),
            (json!({"code":500,"data":{"task_id":"t","video_url":null}}), MusicVideo),
            (json!({"code":400,"data":{"taskId":"t","voiceId":"","status":"fail","errorCode":500}}), Voice),
            (json!({"code":400,"data":{"taskId":"t","status":"processing_validate_fail","errorCode":500}}), Voice),
            (json!({"task_id":"t","code":200,"msg":"success","data":{}}), Midi),
            (json!({"task_id":"t","code":200,"data":{"result_url":"u"}}), Unknown),
            (json!({"code":200,"data":{"taskId":"t","something":"else"}}), Unknown),
            (json!({"code":200,"taskId":"t","data":null}), Unknown),
        ];
        for (body, expected) in cases {
            assert_eq!(family_of(body.clone()), expected, "{body}");
        }
    }

    /// A failure that carries tracks (a 451 "download failed", say, or a message naming
    /// lyrics) is recorded as an error, its tracks' files kept to be copied.
    #[test]
    fn a_failure_carrying_tracks_keeps_their_files() {
        for msg in ["Lyrics generation failed", "download failed"] {
            let body = json!({"code": 451, "msg": msg, "data": {"callbackType": "error", "task_id": "t",
                "data": [{"id": "a", "audio_url": "https://h/a.mp3", "image_url": "https://h/a.jpeg"}]}});
            let event = crate::parse_callback(body.to_string().as_bytes()).expect("a callback");
            assert_eq!((event.family, event.stage, event.code), (Family::Music, crate::Stage::Error, 451), "{msg}");
            let names: Vec<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["tracks/a/audio", "tracks/a/cover"], "{msg}");
        }
    }

    #[test]
    fn lyrics_items_versus_tracks() {
        let lyrics = json!({"code":200,"data":{"task_id":"t","data":[{"text":"la","title":"x"}]}});
        assert_eq!(family_of(lyrics), Family::Lyrics);
        let tracks = json!({"code":200,"data":{"task_id":"t","data":[{"text":"la","audio_url":"u"}]}});
        assert_eq!(family_of(tracks), Family::Music);
        let camel_tracks =
            json!({"code":200,"data":{"callbackType":"complete","taskId":"t","data":[{"id":"a","audio_url":"u"}]}});
        assert_eq!(family_of(camel_tracks), Family::Music);
        let sunoapi_lyrics =
            json!({"code":200,"data":{"callbackType":"complete","taskId":"t","data":[{"text":"la","title":"x"}]}});
        assert_eq!(family_of(sunoapi_lyrics), Family::Lyrics);
    }
}
