//! Lyrics: text only, no files.

use serde_json::Value;

use super::value::{Object, string_field};
use crate::{Details, LyricsVariant};

pub(super) fn parse(data: Option<&Object>) -> Details {
    let items = data.and_then(|d| d.get("data")).and_then(Value::as_array);
    let variants = items
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|item| LyricsVariant {
            text: string_field(item, &["text"]).unwrap_or_default(),
            title: string_field(item, &["title"]).unwrap_or_default(),
            status: string_field(item, &["status"]).unwrap_or_default(),
            // docs.kie.ai spells it `error_message`, docs.sunoapi.org `errorMessage`.
            error_message: string_field(item, &["error_message", "errorMessage"]).unwrap_or_default(),
        })
        .collect();
    Details::Lyrics { variants }
}
