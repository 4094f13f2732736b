//! Tolerant readers over `serde_json::Value`: a wrong type reads as absent, never panics.

use serde_json::{Map, Value};

pub(super) type Object = Map<String, Value>;

/// The string, when the value is one.
pub(super) fn str_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// The string with surrounding whitespace trimmed, when it is a string and not blank.
pub(super) fn non_blank_str(value: Option<&Value>) -> Option<&str> {
    str_of(value).map(str::trim).filter(|s| !s.is_empty())
}

/// The first of `keys` whose value is a non-blank string (two spellings of one field).
pub(super) fn first_non_blank<'a>(object: &'a Object, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().filter_map(|k| object.get(*k)).find(|v| non_blank_str(Some(v)).is_some())
}

/// An owned copy of the first of `keys` holding a string (blank strings included).
pub(super) fn string_field(object: &Object, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| str_of(object.get(*k))).map(str::to_owned)
}

/// A number, or a string holding one (surrounding whitespace allowed). Only finite values.
pub(super) fn f64_of(value: Option<&Value>) -> Option<f64> {
    let number = match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    number.filter(|f| f.is_finite())
}

/// An integer, an integral float, or a string holding an integer.
pub(super) fn i64_of(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().and_then(integral))
        }
        _ => None,
    }
}

/// `f` as an i64 when it is a whole number within range.
fn integral(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every float strictly below it converts without loss.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_from_numbers_and_strings() {
        assert_eq!(f64_of(Some(&json!(0.5))), Some(0.5));
        assert_eq!(f64_of(Some(&json!(" 7.25 "))), Some(7.25));
        assert_eq!(f64_of(Some(&json!("NaN"))), None);
        assert_eq!(f64_of(Some(&json!("inf"))), None);
        assert_eq!(f64_of(Some(&json!("x"))), None);
        assert_eq!(f64_of(Some(&json!(null))), None);
        assert_eq!(i64_of(Some(&json!(200))), Some(200));
        assert_eq!(i64_of(Some(&json!("200"))), Some(200));
        assert_eq!(i64_of(Some(&json!(200.0))), Some(200));
        assert_eq!(i64_of(Some(&json!("200.0"))), Some(200));
        assert_eq!(i64_of(Some(&json!(200.5))), None);
        assert_eq!(i64_of(Some(&json!(1e300))), None);
        assert_eq!(i64_of(Some(&json!(u64::MAX))), None);
        assert_eq!(i64_of(Some(&json!(true))), None);
    }

    #[test]
    fn blank_strings_read_as_absent() {
        assert_eq!(non_blank_str(Some(&json!("  a "))), Some("a"));
        assert_eq!(non_blank_str(Some(&json!(" \t"))), None);
        assert_eq!(non_blank_str(Some(&json!(3))), None);
    }
}
