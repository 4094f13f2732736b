//! Reading a body as JSON, repairing what serde_json refuses inside strings but a sender can
//! write: an unpaired UTF-16 surrogate escape (`"\ud83c"`, a title cut in the middle of an
//! emoji, which JavaScript's `JSON.stringify` and Python's `json.dumps` both write) and bytes
//! that are not UTF-8. Each becomes U+FFFD, as a lossy decoder would make it. A signed
//! callback refused for a broken character in its title would be lost: the provider sends
//! the same bytes on every retry, and polls read the same text.
//!
//! The body is archived as received; only what is read from it is repaired. A body that
//! parses as it is costs nothing more than one pass counting its values (below).
//!
//! A body is read whole only if it holds at most [`MAX_JSON_MARKS`] values: serde_json
//! builds each one, and a few MiB of tiny ones take more memory than a function has.

use std::borrow::Cow;

use serde_json::Value;

/// The most marks (`{`, `[`, `,` and `:` outside strings: about one per object, array, key
/// and element) a body may hold to be read whole. Each costs 80 to 300 bytes once read (a
/// small object's the most: an ordered map of its own), more where a reader copies part of
/// the tree, as a poll's does: 6 MiB of `{"a":0}` took 670 MiB to read as a poll and 345 MiB
/// as a callback, where ingest and the reconciler have 256 MB. At this bound (measured
/// 2026-12-07, every shape tried) a callback takes at most about 110 MiB and a poll about 180
/// MiB. A MIDI note takes 9 marks: about 71,000 notes are read, 6 MiB (the largest poll answer
/// read) with the provider's long decimals, several times a whole song's (past 1 MiB).
pub const MAX_JSON_MARKS: usize = 640_000;

/// Why a body was not read as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, even repaired (the first parse's error).
    #[error(transparent)]
    Invalid(#[from] serde_json::Error),
    #[error("the body holds more than {MAX_JSON_MARKS} JSON objects, arrays, keys and elements: not read")]
    TooManyValues,
}

/// The body as a [`Value`]; when it does not parse as it is, as repaired (see the module),
/// if that changed anything. The error is the first parse's.
pub fn parse(body: &[u8]) -> Result<Value, JsonError> {
    if marks_over(body, MAX_JSON_MARKS) {
        return Err(JsonError::TooManyValues);
    }
    Ok(read_with(body, |bytes| serde_json::from_slice(bytes))?)
}

/// Whether `body` holds more than `limit` marks outside its strings (one pass, stopping at the
/// first over; an unterminated string ends the count: the parse refuses it). What serde_json
/// builds of a body, every value and every key, is at most its marks plus one (a property
/// test holds it to that).
fn marks_over(body: &[u8], limit: usize) -> bool {
    let (mut marks, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' | b',' | b':' => {
                marks += 1;
                if marks > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// `body` read by `read`; when that fails, the repaired body read by it, if repairing changed
/// anything. The error is the first read's.
pub(crate) fn read_with<T>(
    body: &[u8],
    read: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    read(body).or_else(|e| match repaired(body) {
        Some(repaired) => read(&repaired).map_err(|_| e),
        None => Err(e),
    })
}

/// `body` with its invalid UTF-8 and its unpaired surrogate escapes replaced by U+FFFD; None
/// when it has neither.
fn repaired(body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(body);
    let mut changed = matches!(text, Cow::Owned(_));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if !in_string {
            in_string = byte == b'"';
            out.push(byte);
            i += 1;
            continue;
        }
        match byte {
            b'"' => in_string = false,
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex_unit(bytes, i + 2);
                let paired = |next: usize| {
                    bytes.get(next) == Some(&b'\\')
                        && bytes.get(next + 1) == Some(&b'u')
                        && hex_unit(bytes, next + 2).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low))
                };
                match unit {
                    Some(0xD800..=0xDBFF) if paired(i + 6) => {
                        out.extend_from_slice(&bytes[i..i + 12]);
                        i += 12;
                    }
                    Some(0xD800..=0xDFFF) => {
                        out.extend_from_slice(br"\ufffd");
                        changed = true;
                        i += 6;
                    }
                    // Another escape, or a malformed one (left for the parser to refuse).
                    _ => {
                        out.extend_from_slice(&bytes[i..(i + 6).min(bytes.len())]);
                        i += 6;
                    }
                }
                continue;
            }
            b'\\' => {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
                continue;
            }
            _ => {}
        }
        out.push(byte);
        i += 1;
    }
    changed.then_some(out)
}

/// The code unit of the four hex digits at `at`, if there are four.
fn hex_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title(body: &[u8]) -> String {
        parse(body).expect("parsed")["t"].as_str().expect("a string").to_owned()
    }

    #[test]
    fn an_unpaired_surrogate_escape_reads_as_the_replacement_character() {
        assert_eq!(title(br#"{"t":"Sunrise \ud83c"}"#), "Sunrise \u{fffd}");
        assert_eq!(title(br#"{"t":"\ud83c\u0041"}"#), "\u{fffd}A", "a leading one before another escape");
        assert_eq!(title(br#"{"t":"\udc00x"}"#), "\u{fffd}x", "a trailing one alone");
        assert_eq!(title(br#"{"t":"\ud83c\ud83c\udf05"}"#), "\u{fffd}\u{1f305}", "a lone one, then a pair");
    }

    #[test]
    fn bytes_that_are_not_utf8_read_as_the_replacement_character() {
        assert_eq!(title(b"{\"t\":\"a\xffb\"}"), "a\u{fffd}b");
    }

    #[test]
    fn what_parses_as_it_is_is_left_alone() {
        assert_eq!(repaired(br#"{"t":"\ud83c\udf05 \\ud83c \u00e9 \" \\"}"#), None);
        assert_eq!(title(br#"{"t":"\ud83c\udf05 \\ud83c"}"#), "\u{1f305} \\ud83c", "an escaped backslash, then text");
        assert_eq!(repaired(br#"{"ud83c":"x","n":1}"#), None);
    }

    /// Every value and key of a body, however its strings are written, is counted: at most
    /// its marks plus one (each container, key and element but the first of each adds a
    /// mark), so the bound bounds what the parse builds.
    mod bound {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::marks_over;

        /// The values and keys serde_json builds of `v`.
        fn built(v: &Value) -> usize {
            match v {
                Value::Array(items) => 1 + items.iter().map(built).sum::<usize>(),
                Value::Object(map) => 1 + map.len() + map.values().map(built).sum::<usize>(),
                _ => 1,
            }
        }

        /// The marks of `body`: the least limit it is not over.
        fn marks(body: &[u8]) -> usize {
            (0..).find(|&limit| !marks_over(body, limit)).unwrap_or(usize::MAX)
        }

        fn value() -> impl Strategy<Value = Value> {
            // Strings full of what would be marks outside one, escapes and all.
            let text = prop_oneof!["[{}\\[\\],:\"\\\\a ]{0,6}", any::<String>()];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                text.clone().prop_map(Value::String),
            ];
            leaf.prop_recursive(5, 64, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((text.clone(), inner), 0..6)
                        .prop_map(|entries| Value::Object(entries.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn what_a_body_builds_is_at_most_its_marks_plus_one(v in value()) {
                for body in [serde_json::to_vec(&v).unwrap(), serde_json::to_vec_pretty(&v).unwrap()] {
                    prop_assert!(built(&v) <= marks(&body) + 1, "{} built, {} marks", built(&v), marks(&body));
                }
            }
        }
    }

    /// Marks inside strings (escaped quotes included) are not counted; a body over the bound
    /// is refused before it is read, whatever it would have read as.
    #[test]
    fn a_body_with_too_many_values_is_not_read() {
        assert!(!marks_over(br#"{"a":[1,2],"b":"{[,:\"{[,:"}"#, 6));
        assert!(marks_over(br#"{"a":[1,2],"b":"{[,:\"{[,:"}"#, 5));
        let objects = vec![r#"{"a":0}"#; MAX_JSON_MARKS / 3 + 1].join(",");
        let body = format!(r#"{{"data":[{objects}]}}"#);
        assert!(matches!(parse(body.as_bytes()), Err(JsonError::TooManyValues)));
        let within = vec![r#"{"a":0}"#; MAX_JSON_MARKS / 3 - 2].join(",");
        assert!(parse(format!(r#"{{"data":[{within}]}}"#).as_bytes()).is_ok());
    }

    #[test]
    fn what_no_repair_makes_json_keeps_the_first_error() {
        let err = parse(br#"{"t":"\ud83c", "n": 1e400}"#).unwrap_err().to_string();
        assert!(err.contains("hex escape"), "{err}");
        assert!(parse(br#"{"t":"\u12"}"#).is_err());
        assert!(parse(b"{\"t\":\"\\").is_err(), "a body that ends in an escape");
    }
}
