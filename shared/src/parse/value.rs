//! Tolerant readers over `serde_json::Value`: a wrong type reads as absent, never panics.

use serde_json::{Map, Value};

pub(crate) type Object = Map<String, Value>;

/// The string, when the value is one.
pub(crate) fn str_of(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

/// The string with surrounding whitespace trimmed, when it is a string and not blank.
pub(crate) fn non_blank_str(value: Option<&Value>) -> Option<&str> {
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

/// As [`string_field`], a number counting too, as its text: a time the record-info answers
/// give in Unix milliseconds where the callbacks give a date string.
pub(super) fn text_field(object: &Object, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match object.get(*k)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
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

/// The largest magnitude a decimal number in [`Details`](crate::Details) may have. Details are
/// stored in DynamoDB, whose numbers stop at about 1E+126 and 1E-130 with 38 digits; this
/// range is far inside that, and far beyond any real duration, time or velocity.
pub(super) const MAX_MAGNITUDE: f64 = 1e9;
/// The smallest non-zero magnitude a decimal number in details may have.
pub(super) const MIN_MAGNITUDE: f64 = 1e-9;
/// How deeply a JSON value kept in details may nest (DynamoDB allows 32 levels in an item).
pub(super) const MAX_JSON_DEPTH: usize = 16;

/// `f` when it is zero or its magnitude is within [`MIN_MAGNITUDE`]..=[`MAX_MAGNITUDE`].
pub(super) fn storable(f: f64) -> Option<f64> {
    (f == 0.0 || (MIN_MAGNITUDE..=MAX_MAGNITUDE).contains(&f.abs())).then_some(f)
}

/// Whether `value` can be kept in details as is: no decimal number out of [`storable`]'s
/// range (integers are fine), no empty object key (a DynamoDB map's keys are attribute names,
/// at least one character long: the item would be refused), nested at most
/// [`MAX_JSON_DEPTH`] levels.
pub(super) fn storable_json(value: &Value) -> bool {
    fn within(value: &Value, depth: usize) -> bool {
        match value {
            _ if depth > MAX_JSON_DEPTH => false,
            Value::Number(n) if n.is_i64() || n.is_u64() => true,
            Value::Number(n) => n.as_f64().and_then(storable).is_some(),
            Value::Array(items) => items.iter().all(|v| within(v, depth + 1)),
            Value::Object(map) => map.iter().all(|(key, v)| !key.is_empty() && within(v, depth + 1)),
            _ => true,
        }
    }
    within(value, 1)
}

/// An integer, an integral float, or a string holding an integer.
pub(crate) fn i64_of(value: Option<&Value>) -> Option<i64> {
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
    fn text_from_strings_and_numbers() {
        let o = json!({"s": "2025-01-01 00:00:00", "n": 1753782854000_u64, "b": true, "null": null});
        let o = o.as_object().unwrap();
        assert_eq!(text_field(o, &["s"]).as_deref(), Some("2025-01-01 00:00:00"));
        assert_eq!(text_field(o, &["null", "n"]).as_deref(), Some("1753782854000"));
        assert_eq!(text_field(o, &["b", "missing"]), None);
    }

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
    fn storable_numbers() {
        for f in [0.0, -0.0, 1e9, -1e9, 1e-9, -1e-9, 198.44] {
            assert_eq!(storable(f), Some(f), "{f}");
        }
        for f in [1e200, -1.000001e9, 1e-10, -1e-300, f64::MIN_POSITIVE] {
            assert_eq!(storable(f), None, "{f}");
        }
        assert!(storable_json(&json!({"a":[1, -2.5, u64::MAX, i64::MIN, "1e200", null]})));
        assert!(!storable_json(&json!({"a":[1e200]})));
        assert!(!storable_json(&json!([{"b":1e-200}])));
        assert!(!storable_json(&json!({"a":{"":1}})));
        assert!(storable_json(&json!({"a":{" ":1}})));
        let mut deep = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        assert!(!storable_json(&deep));
        assert!(storable_json(&deep[0]));
    }

    #[test]
    fn blank_strings_read_as_absent() {
        assert_eq!(non_blank_str(Some(&json!("  a "))), Some("a"));
        assert_eq!(non_blank_str(Some(&json!(" \t"))), None);
        assert_eq!(non_blank_str(Some(&json!(3))), None);
    }
}
