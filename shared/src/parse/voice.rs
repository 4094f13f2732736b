//! Suno Voice (docs.sunoapi.org): a voice id or a validation phrase, no files.

use super::value::{Object, i64_of, storable_json, string_field};
use crate::Details;

/// When `details` are a voice task's whose status says it failed, as the validate-info poll
/// reads a status ([`crate::poll::status::is_failed`]), why: its error message when it is not
/// blank, else the status.
pub(super) fn failure(details: &Details) -> Option<String> {
    let Details::Voice { status: Some(status), error_message, .. } = details else { return None };
    if !crate::poll::status::is_failed(status) {
        return None;
    }
    let message = error_message.as_deref().map(str::trim).filter(|m| !m.is_empty());
    Some(message.unwrap_or(status.trim()).to_owned())
}

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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{Family, Stage, parse_callback};

    fn stage(code: i64, status: &str) -> Stage {
        let body = serde_json::json!({"code": code, "msg": "m", "data": {
            "taskId": "v1", "voiceId": "", "status": status, "errorCode": 500, "errorMessage": "x"}});
        let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(event.family, Family::Voice);
        event.stage
    }

    /// A failure's `status` decides even under a 200 envelope (the poll of the same task reads
    /// it so); any other status under 200 is the result.
    #[test]
    fn a_failed_status_is_a_failure_whatever_the_code() {
        for status in ["fail", "FAILED", "processing_validate_fail", " fail ", "sensitive_word_error"] {
            assert_eq!(stage(200, status), Stage::Error, "{status}");
            assert_eq!(stage(400, status), Stage::Error, "{status}");
        }
        for status in ["success", "wait_validating", "", "failsafe"] {
            assert_eq!(stage(200, status), Stage::Final, "{status}");
        }
    }

    /// A failure only the status says is explained by the body's error message, else the
    /// status; a failed envelope keeps its own message.
    #[test]
    fn a_failure_the_status_says_is_explained() {
        let message = |code: i64, error: Value| {
            let body = json!({"code": code, "msg": "success", "data": {
                "taskId": "v1", "voiceId": "", "status": "processing_validate_fail", "errorMessage": error}});
            parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap().message
        };
        assert_eq!(message(200, json!("phrase not heard")), "phrase not heard");
        assert_eq!(message(200, json!(" ")), "processing_validate_fail");
        assert_eq!(message(400, json!("phrase not heard")), "success");
    }
}
