//! Lyrics: text only, no files.

use serde_json::Value;

use super::value::{Object, string_field};
use crate::{Details, LyricsVariant};

/// When `details` are lyrics whose every variant failed (`status` `failed`, read as a poll
/// reads a status), why: the first failed variant's error message that is not blank, else
/// that every variant failed. Such a task made nothing, whatever its envelope says; one failed
/// variant of two is still a result.
pub(super) fn failure(details: &Details) -> Option<String> {
    let Details::Lyrics { variants } = details else { return None };
    let failed = |v: &&LyricsVariant| crate::poll::status::is_failed(&v.status);
    if variants.is_empty() || !variants.iter().all(|v| failed(&v)) {
        return None;
    }
    let message = variants.iter().filter(failed).map(|v| v.error_message.trim()).find(|m| !m.is_empty());
    Some(message.unwrap_or("every lyrics variant failed").to_owned())
}

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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::poll::{PollResult, parse_poll};
    use crate::{Family, Stage, parse::MISSING_CODE, parse_callback};

    fn variant(status: &str, error: &str) -> Value {
        json!({"text": "", "title": "", "status": status, "error_message": error})
    }

    fn callback(variants: Vec<Value>) -> (Stage, i64, String) {
        let body = json!({"code": 200, "msg": "All generated successfully.",
            "data": {"callbackType": "complete", "task_id": "l1", "data": variants}});
        let event = parse_callback(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(event.family, Family::Lyrics);
        (event.stage, event.code, event.message)
    }

    /// docs.kie.ai's items say `complete|failed`: a 200 envelope whose every variant failed
    /// made nothing, and says why in the variants.
    #[test]
    fn every_variant_failed_is_a_failure() {
        let (stage, code, message) = callback(vec![variant("failed", ""), variant("FAILED", " flagged ")]);
        assert_eq!((stage, code, message.as_str()), (Stage::Error, 200, "flagged"));

        let (stage, _, message) = callback(vec![variant("failed", "")]);
        assert_eq!((stage, message.as_str()), (Stage::Error, "every lyrics variant failed"));

        for kept in [vec![variant("failed", "x"), variant("complete", "")], vec![variant("", "")]] {
            let (stage, _, message) = callback(kept.clone());
            assert_eq!((stage, message.as_str()), (Stage::Complete, "All generated successfully."), "{kept:?}");
        }
    }

    /// The poll of the same task reads it so too.
    #[test]
    fn a_poll_whose_every_variant_failed_is_a_failure() {
        let answer = |variants: Value| {
            let body = json!({"code": 200, "msg": "success", "data": {"taskId": "l1", "status": "SUCCESS",
                "response": {"lyricsData": variants}, "errorCode": null, "errorMessage": null}});
            match parse_poll(Family::Lyrics, &serde_json::to_vec(&body).unwrap()).unwrap() {
                PollResult::Result(event) => (event.stage, event.code, event.message),
                pending => panic!("{pending:?}"),
            }
        };
        let failed = json!([{"text": "", "title": "", "status": "failed", "errorMessage": "flagged"}]);
        assert_eq!(answer(failed), (Stage::Error, MISSING_CODE, "flagged".to_owned()));
        let unexplained = json!([{"text": "", "title": "", "status": "failed", "errorMessage": ""}]);
        assert_eq!(answer(unexplained), (Stage::Error, MISSING_CODE, "every lyrics variant failed".to_owned()));
        let made = json!([{"text": "la", "title": "t", "status": "complete", "errorMessage": ""}]);
        assert_eq!(answer(made), (Stage::Complete, 200, "success".to_owned()));
    }
}
