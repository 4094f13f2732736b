//! A callback's task id without the rest of its body: what a signature names, read before the
//! signature is checked, so an unsigned or forged body costs a pass over its bytes (only the
//! keys of its top level and of `data` are kept, one at a time) rather than a parse of every
//! file and track it claims to have.
//!
//! Reads the places [`super::envelope::task_id`] reads, in its order, with a parsed body's
//! rules (the last of a repeated key counts; a `data` that is not an object has no places).
//! Every body [`super::parse_callback`] parses gives the task id it gives (a property test
//! holds them to it); some it refuses (a number out of range, say) give one here, and the
//! parse then refuses them after the signature.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::ParseError;
use crate::TaskId;

/// The task id `body` names, or why it names none. A body that reads only once repaired (a
/// broken character in a key or an id read as U+FFFD) is read so, as
/// [`super::parse_callback`] reads it.
pub fn callback_task_id(body: &[u8]) -> Result<TaskId, ParseError> {
    let read = super::json_text::read_with(body, read_places);
    let (top, data) = read.map_err(|e| ParseError::NotJson(e.to_string()))?.ok_or(ParseError::NotAnObject)?;
    let raw = [data.snake, data.camel, top.snake, top.camel]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .ok_or(ParseError::NoTaskId)?;
    Ok(TaskId::parse(&raw)?)
}

/// The task id places of the root object and of its `data` (None: the body is no object).
fn read_places(body: &[u8]) -> Result<Option<(Places, Places)>, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let read = Object { at_root: true }.deserialize(&mut json)?;
    json.end()?;
    Ok(read)
}

/// The values of `task_id` and `taskId` in one object, when they are strings.
#[derive(Default)]
struct Places {
    snake: Option<String>,
    camel: Option<String>,
}

impl Places {
    /// Take `key`'s value if it is a place (a later one replaces an earlier one, as a parsed
    /// object keeps the last); skip it otherwise. True when it was a place.
    fn take<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        let slot = match key {
            "task_id" => &mut self.snake,
            "taskId" => &mut self.camel,
            _ => return Ok(false),
        };
        *slot = map.next_value::<StringOrSkipped>()?.0;
        Ok(true)
    }
}

/// A visitor's answer `$out` to what no place can be (a scalar, or an array skipped whole).
macro_rules! no_place {
    ($out:expr) => {
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($out)
        }
    };
}

/// An object's places, and at the root those of its `data` (none when `data` is no object);
/// None for any other value.
struct Object {
    at_root: bool,
}

impl<'de> DeserializeSeed<'de> for Object {
    type Value = Option<(Places, Places)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Object {
    type Value = Option<(Places, Places)>;

    no_place!(None);

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut places, mut data) = (Places::default(), Places::default());
        while let Some(key) = map.next_key::<String>()? {
            if self.at_root && key == "data" {
                data = map.next_value_seed(Object { at_root: false })?.map(|(places, _)| places).unwrap_or_default();
            } else if !places.take(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some((places, data)))
    }
}

/// A string value, or None for any other (skipped).
struct StringOrSkipped(Option<String>);

impl<'de> serde::Deserialize<'de> for StringOrSkipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StringOrSkipped, D::Error> {
        deserializer.deserialize_any(StringVisitor)
    }
}

struct StringVisitor;

impl<'de> Visitor<'de> for StringVisitor {
    type Value = StringOrSkipped;

    no_place!(StringOrSkipped(None));

    fn visit_str<E: de::Error>(self, s: &str) -> Result<StringOrSkipped, E> {
        Ok(StringOrSkipped(Some(s.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringOrSkipped, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StringOrSkipped(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_callback;

    fn both(body: &str) -> (Result<TaskId, ParseError>, Result<TaskId, ParseError>) {
        (callback_task_id(body.as_bytes()), parse_callback(body.as_bytes()).map(|e| e.task_id))
    }

    /// A broken character in a key (a value's is skipped unread) reads only once repaired, as
    /// the parse reads it.
    #[test]
    fn a_broken_character_in_a_key_reads_as_the_parse_reads_it() {
        for body in [&br#"{"x\ud83c":1,"data":{"task_id":"a1"}}"#[..], b"{\"x\xff\":1,\"data\":{\"task_id\":\"a1\"}}"] {
            let read = (callback_task_id(body), parse_callback(body).map(|e| e.task_id));
            let a1 = TaskId::parse("a1").expect("an id");
            assert_eq!(read, (Ok(a1.clone()), Ok(a1)), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn reads_the_places_a_parse_reads_in_its_order() {
        for body in [
            r#"{"task_id":"d","taskId":"e","data":{"task_id":"a","taskId":"b"}}"#,
            r#"{"task_id":"d","data":{"task_id":"  ","taskId":"b"}}"#,
            r#"{"taskId":"e","data":{"task_id":7,"taskId":8}}"#,
            r#"{"task_id":"d","data":[{"task_id":"x"}]}"#,
            r#"{"data":{"task_id":"a"},"data":[1]}"#,
            r#"{"data":{"task_id":"a"},"data":{"taskId":"b"}}"#,
            r#"{"taskId":"a","taskId":{"x":1},"task_id":"c"}"#,
            r#"{"task\u005fid":"escaped","data":{"n":[1,{"task_id":"deep"}],"s":"x","b":true,"z":null}}"#,
            r#"{"data":{"id":"x"}}"#,
            r#"{"data":{"task_id":"a/b"},"taskId":"ok"}"#,
            r#"["task_id"]"#,
            r#""task_id""#,
            r#"{"task_id":"a""#,
        ] {
            let (only, parsed) = both(body);
            assert_eq!(only.is_ok(), parsed.is_ok(), "{body}: {only:?} {parsed:?}");
            match (only, parsed) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
                (Err(a), Err(b)) => {
                    assert_eq!(std::mem::discriminant(&a), std::mem::discriminant(&b), "{body}: {a:?} {b:?}")
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(callback_task_id(br#"{"task\u005fid":"escaped"}"#).unwrap().as_str(), "escaped");
    }

    /// Nothing is built from what the body claims to hold: a body of a million empty tracks
    /// is one pass.
    #[test]
    fn a_body_of_many_items_gives_its_task_id() {
        let body = format!(r#"{{"code":200,"data":{{"task_id":"t1","data":[{}{{}}]}}}}"#, "{},".repeat(1_000_000));
        assert_eq!(callback_task_id(body.as_bytes()).unwrap().as_str(), "t1");
    }
}
