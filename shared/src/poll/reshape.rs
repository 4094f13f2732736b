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
            let tracks = response.and_then(|r| r.get("sunoData").or_else(|| r.get("data")));
            wrap("data", tracks)
        }
        Family::Lyrics => wrap("data", response.and_then(|r| r.get("data"))),
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
