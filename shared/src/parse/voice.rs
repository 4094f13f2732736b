//! Suno Voice (docs.sunoapi.org): a voice id or a validation phrase, no files.

use super::value::{Object, i64_of, storable_json, string_field};
use crate::Details;

pub(super) fn parse(data: Option<&Object>) -> Details {
    let Some(data) = data else {
        return Details::Voice {
            voice_id: None,
            status: None,
            error_code: None,
            error_message: None,
            validate_info: None,
        };
    };
    Details::Voice {
        voice_id: string_field(data, &["voiceId", "voice_id"]),
        status: string_field(data, &["status"]),
        error_code: i64_of(data.get("errorCode").or_else(|| data.get("error_code"))),
        error_message: string_field(data, &["errorMessage", "error_message"]),
        // Kept only when DynamoDB can store it; the verbatim body keeps it either way.
        validate_info: data.get("validateInfo").filter(|v| !v.is_null() && storable_json(v)).cloned(),
    }
}
