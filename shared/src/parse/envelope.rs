//! The envelope every family shares: task id, `code`, `msg`, `callbackType`, and the stage.

use serde_json::Value;

use super::ParseError;
use super::value::{Object, i64_of, str_of};
use crate::{Family, Stage, TaskId};

/// The code recorded when a body has no readable `code`: not 200, so never a success.
pub const MISSING_CODE: i64 = 0;

/// Where the task id is looked for, in order.
const TASK_ID_PLACES: [(bool, &str); 4] = [(true, "task_id"), (true, "taskId"), (false, "task_id"), (false, "taskId")];

/// The first non-blank string among the task id places, validated.
pub(crate) fn task_id(root: &Object) -> Result<TaskId, ParseError> {
    let data = root.get("data").and_then(Value::as_object);
    let raw = TASK_ID_PLACES
        .iter()
        .filter_map(|&(in_data, key)| if in_data { data?.get(key) } else { root.get(key) })
        .filter_map(Value::as_str)
        .find(|s| !s.trim().is_empty())
        .ok_or(ParseError::NoTaskId)?;
    Ok(TaskId::parse(raw)?)
}

pub(crate) fn code(root: &Object) -> i64 {
    i64_of(root.get("code")).unwrap_or(MISSING_CODE)
}

pub(crate) fn message(root: &Object) -> String {
    str_of(root.get("msg")).unwrap_or_default().to_owned()
}

/// `data.callbackType`, else top-level `callbackType`, trimmed and lower-cased.
pub(super) fn callback_type(root: &Object) -> Option<String> {
    let data = root.get("data").and_then(Value::as_object);
    let raw = data.and_then(|d| str_of(d.get("callbackType"))).or_else(|| str_of(root.get("callbackType")))?;
    Some(raw.trim().to_ascii_lowercase())
}

pub(super) fn stage(family: Family, code: i64, callback_type: Option<&str>) -> Stage {
    if code != 200 {
        return Stage::Error;
    }
    if !family.has_stages() {
        return Stage::Final;
    }
    match callback_type {
        Some("error") => Stage::Error,
        Some("text") => Stage::Text,
        Some("first") => Stage::First,
        // Some tasks skip `text` and `first` and send `complete` directly, sometimes without
        // saying so: a successful body without a known stage is the final result.
        _ => Stage::Complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn task_id_order_and_types() {
        let all = obj(json!({"task_id":"d","taskId":"e","data":{"task_id":"a","taskId":"b"}}));
        assert_eq!(task_id(&all).unwrap().as_str(), "a");
        let camel = obj(json!({"task_id":"d","data":{"task_id":"  ","taskId":"b"}}));
        assert_eq!(task_id(&camel).unwrap().as_str(), "b");
        let numbers = obj(json!({"taskId":"e","data":{"task_id":7,"taskId":8}}));
        assert_eq!(task_id(&numbers).unwrap().as_str(), "e");
        let data_not_object = obj(json!({"task_id":"d","data":[{"task_id":"x"}]}));
        assert_eq!(task_id(&data_not_object).unwrap().as_str(), "d");
        assert_eq!(task_id(&obj(json!({"data":{"id":"x"}}))), Err(ParseError::NoTaskId));
        assert!(matches!(
            task_id(&obj(json!({"data":{"task_id":"a/b"},"taskId":"ok"}))),
            Err(ParseError::InvalidTaskId(_))
        ));
    }

    #[test]
    fn code_and_message() {
        assert_eq!(code(&obj(json!({"code":"501"}))), 501);
        assert_eq!(code(&obj(json!({"code":null}))), MISSING_CODE);
        assert_eq!(code(&obj(json!({}))), MISSING_CODE);
        assert_eq!(message(&obj(json!({"msg":5}))), "");
        assert_eq!(message(&obj(json!({"msg":"ok"}))), "ok");
    }

    #[test]
    fn stages() {
        use Family::*;
        assert_eq!(stage(Music, 200, Some("text")), Stage::Text);
        assert_eq!(stage(Music, 200, Some("first")), Stage::First);
        assert_eq!(stage(Music, 200, Some("complete")), Stage::Complete);
        assert_eq!(stage(Music, 200, Some("error")), Stage::Error);
        assert_eq!(stage(Music, 200, None), Stage::Complete);
        assert_eq!(stage(Music, 200, Some("later")), Stage::Complete);
        assert_eq!(stage(Lyrics, 400, Some("complete")), Stage::Error);
        assert_eq!(stage(Wav, 200, Some("text")), Stage::Final);
        assert_eq!(stage(Unknown, 200, None), Stage::Final);
        assert_eq!(stage(Midi, 500, None), Stage::Error);
    }
}
