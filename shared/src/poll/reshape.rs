//! A record-info answer's `data` reshaped into the `data` of the family's callback, so the
//! callback parser reads it and names its files (table in the module docs of [`crate::poll`]).

use serde_json::{Map, Value};

use crate::Family;
use crate::parse::value::{Object, non_blank_str};

/// The callback-shaped `data` for `family`; with `failed`, a non-blank `errorMessage` is
/// added as `error` (the callback's failure text).
pub(super) fn callback_data(family: Family, data: &Object, failed: bool) -> Object {
    let response = data.get("response").and_then(Value::as_object);
    let mut shaped = match family {
        Family::Music => {
            // A `sunoData` of null is none: kie's `data` may hold the tracks.
            let tracks = response.and_then(|r| r.get("sunoData").filter(|v| !v.is_null()).or_else(|| r.get("data")));
            wrap("data", tracks)
        }
        // Both sites' pages now show `lyricsData`; the catalog's `data` is kept as a fallback.
        Family::Lyrics => {
            let variants =
                response.and_then(|r| r.get("lyricsData").filter(|v| !v.is_null()).or_else(|| r.get("data")));
            wrap("data", variants)
        }
        Family::VocalSeparation => wrap("vocal_removal_info", data.get("response")),
        Family::Wav | Family::MusicVideo | Family::CoverImage => response.cloned().unwrap_or_default(),
        Family::Midi => data.get("midiData").and_then(Value::as_object).cloned().unwrap_or_default(),
        Family::Voice | Family::Unknown => data.clone(),
    };
    if failed && let Some(message) = non_blank_str(data.get("errorMessage")) {
        shaped.insert("error".to_owned(), Value::String(message.to_owned()));
    }
    shaped
}

fn wrap(key: &str, value: Option<&Value>) -> Object {
    value.map(|v| Map::from_iter([(key.to_owned(), v.clone())])).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn music_tracks_come_from_suno_data_else_data() {
        let tracks = json!([{"id": "t1", "audioUrl": "https://h/a.mp3"}]);
        for response in
            [json!({"sunoData": tracks}), json!({"data": tracks}), json!({"sunoData": null, "data": tracks})]
        {
            let data = json!({"response": response});
            let shaped = callback_data(Family::Music, data.as_object().unwrap(), false);
            assert_eq!(shaped.get("data"), Some(&tracks), "{response}");
        }
    }
}
