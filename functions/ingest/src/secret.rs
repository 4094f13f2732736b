//! The callback secret: the webhook HMAC keys and the path token, kept together in one AWS
//! Secrets Manager secret whose text is JSON:
//!
//! ```json
//! {"webhook_hmac_keys": ["current-key", "previous-key"], "callback_token": "a-long-random-token"}
//! ```
//!
//! Either field may be left out (or be `[]` / `null`); several keys allow rotation without
//! downtime. `callback_token` may also be an array of tokens, each accepted:
//!
//! ```json
//! {"callback_token": ["the-new-long-random-token", "the-old-long-random-token"]}
//! ```
//!
//! A task's callback URL is fixed when it is submitted, so the old token must stay accepted
//! until the last task submitted with it has called back (README, "Rotating the callback
//! token"). No other field is accepted (a misspelt one would silently turn a check off).
//! Errors name fields and positions, never values.

use serde_json::{Value, json};
use stemvault_aws::ConfigError;

/// The secret's field of HMAC keys.
pub const KEYS_FIELD: &str = "webhook_hmac_keys";
/// The secret's field of the path token (a string, or an array of them).
pub const TOKEN_FIELD: &str = "callback_token";

/// What the secret holds. Its `Debug` shows how many keys and tokens, never them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallbackSecret {
    /// Every key is accepted (rotation).
    pub hmac_keys: Vec<String>,
    /// When not empty, callbacks must be posted to `/callback/<token>` with one of these
    /// (several while a token is rotated).
    pub callback_tokens: Vec<String>,
}

impl std::fmt::Debug for CallbackSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSecret")
            .field("hmac_keys", &format_args!("<{} redacted>", self.hmac_keys.len()))
            .field("callback_tokens", &format_args!("<{} redacted>", self.callback_tokens.len()))
            .finish()
    }
}

/// Why the secret's text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("the callback secret is not a JSON object ({0})")]
    NotAnObject(String),
    /// The field's name, quoted only when it reads like a field name (snake case), else its length.
    #[error("the callback secret has an unknown field {0}; it holds only \"webhook_hmac_keys\" and \"callback_token\"")]
    UnknownField(String),
    #[error("the callback secret's {field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl CallbackSecret {
    /// Read the secret's JSON text.
    pub fn parse(text: &str) -> Result<CallbackSecret, SecretProblem> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SecretProblem::NotAnObject(format!("line {}, column {}", e.line(), e.column())))?;
        let Value::Object(mut fields) = value else {
            return Err(SecretProblem::NotAnObject("another JSON value".into()));
        };
        let keys = keys_field(fields.remove(KEYS_FIELD))?;
        let tokens = token_field(fields.remove(TOKEN_FIELD))?;
        if let Some(unknown) = fields.keys().next() {
            return Err(SecretProblem::UnknownField(shown_field_name(unknown)));
        }
        let invalid = |field| move |reason| SecretProblem::Invalid { field, reason };
        Ok(CallbackSecret {
            hmac_keys: hmac_keys(keys).map_err(invalid(KEYS_FIELD))?,
            callback_tokens: callback_tokens(tokens).map_err(invalid(TOKEN_FIELD))?,
        })
    }

    /// From the local runner's variables: `WEBHOOK_HMAC_KEYS` (comma-separated) and
    /// `CALLBACK_TOKEN` (one token: the local runner also posts with it), unset or empty when
    /// not used.
    pub fn from_variables(keys: Option<&str>, token: Option<&str>) -> Result<CallbackSecret, ConfigError> {
        let keys = keys.map(str::trim).filter(|k| !k.is_empty());
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let keys = keys.map_or_else(Vec::new, |k| k.split(',').map(str::to_owned).collect());
        Ok(CallbackSecret {
            hmac_keys: hmac_keys(keys).map_err(|reason| ConfigError::Invalid { name: "WEBHOOK_HMAC_KEYS", reason })?,
            callback_tokens: token
                .map(|t| callback_token(t.to_owned()))
                .transpose()
                .map_err(|reason| ConfigError::Invalid { name: "CALLBACK_TOKEN", reason })?
                .into_iter()
                .collect(),
        })
    }

    /// The secret's JSON text, as [`CallbackSecret::parse`] reads it. A single token is
    /// written as a string, the form every version reads; only several make an array.
    pub fn to_json(&self) -> String {
        let tokens = match self.callback_tokens.as_slice() {
            [] => Value::Null,
            [token] => json!(token),
            tokens => json!(tokens),
        };
        json!({ KEYS_FIELD: self.hmac_keys, TOKEN_FIELD: tokens }).to_string()
    }

    /// Neither keys nor a token: anyone could post callbacks.
    pub fn is_unauthenticated(&self) -> bool {
        self.hmac_keys.is_empty() && self.callback_tokens.is_empty()
    }
}

/// A field name as an error shows it: quoted when it reads as a misspelling of one of ours
/// (letters, digits, `_` and `-`, and, case, `_` and `-` aside, within three edits of a
/// field's name or part of one: `callbackToken`, `webhook_hmac_key`, `token`), otherwise
/// only its length: a key or token typed into the name column of the console's key/value
/// editor is a name too (of any characters a token may have), and errors are logged.
fn shown_field_name(name: &str) -> String {
    let plain = |text: &str| -> String {
        text.chars().filter(|c| !matches!(c, '_' | '-')).map(|c| c.to_ascii_lowercase()).collect()
    };
    let read = plain(name);
    let misspelt = name.len() <= 32
        && !read.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && [KEYS_FIELD, TOKEN_FIELD]
            .into_iter()
            .map(plain)
            .any(|field| field.contains(read.as_str()) || strsim::levenshtein(&read, &field) <= MISSPELT_EDITS);
    match misspelt {
        true => format!("{name:?}"),
        false => format!("({} characters, not shown)", name.chars().count()),
    }
}

/// The most edits a shown field name is from one of ours: far fewer than a token's 16
/// characters at least, so no token or key reads as a misspelt name.
const MISSPELT_EDITS: usize = 3;

fn keys_field(value: Option<Value>) -> Result<Vec<String>, SecretProblem> {
    let invalid = |reason: &str| SecretProblem::Invalid { field: KEYS_FIELD, reason: reason.into() };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(key) => Ok(key),
                _ => Err(invalid("every key must be a JSON string")),
            })
            .collect(),
        Some(_) => Err(invalid("must be a JSON array of strings")),
    }
}

/// The tokens as written, unchecked: a blank string is no token (as before arrays were
/// accepted), but a blank in an array is kept for [`callback_tokens`] to refuse.
fn token_field(value: Option<Value>) -> Result<Vec<String>, SecretProblem> {
    let invalid = |reason: &str| SecretProblem::Invalid { field: TOKEN_FIELD, reason: reason.into() };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(token)) if token.trim().is_empty() => Ok(Vec::new()),
        Some(Value::String(token)) => Ok(vec![token]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(token) => Ok(token),
                _ => Err(invalid("every token must be a JSON string")),
            })
            .collect(),
        Some(_) => Err(invalid("must be a JSON string, an array of strings, or null")),
    }
}

/// Each key trimmed; none may be empty (a stray comma or `""`), nor the word `none` in any
/// case: the template reads `none` as no key (the guided deploy's prompt takes no empty
/// answer), and a `None` typed there would otherwise make a key anyone can sign with.
fn hmac_keys(keys: Vec<String>) -> Result<Vec<String>, String> {
    let keys: Vec<String> = keys.iter().map(|k| k.trim().to_owned()).collect();
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() {
            return Err(format!("key number {} is empty (stray comma?)", i + 1));
        }
        if key.eq_ignore_ascii_case("none") {
            return Err(format!("key number {} is the word none (meant as no key? leave it out)", i + 1));
        }
    }
    Ok(keys)
}

/// Each token trimmed and checked as [`callback_token`] says; among several, the one at fault
/// is named by its position.
fn callback_tokens(tokens: Vec<String>) -> Result<Vec<String>, String> {
    let several = tokens.len() > 1;
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            callback_token(token.trim().to_owned())
                .map_err(|reason| if several { format!("token number {}: {reason}", i + 1) } else { reason })
        })
        .collect()
}

/// The token is a path segment, so it is restricted to characters that need no encoding.
fn callback_token(token: String) -> Result<String, String> {
    if token.is_empty() {
        return Err("it is empty (a stray \"\"?)".into());
    }
    let url_safe = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
    if !token.chars().all(url_safe) {
        return Err("use only ASCII letters, digits and - _ . ~ (it is part of the callback URL path)".into());
    }
    if token.len() < 16 {
        return Err(format!("it is {} characters long; use at least 16 random characters", token.len()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    /// A secret's JSON object from its fields.
    fn object(pairs: &[(&str, Value)]) -> String {
        Value::Object(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<Map<_, _>>()).to_string()
    }

    const TOKEN: &str = "0123456789abcdef-_.~";
    const OLD_TOKEN: &str = "old-0123456789abcdef";

    #[test]
    fn reads_the_documented_shape() {
        let secret = CallbackSecret::parse(&format!(
            r#"{{"webhook_hmac_keys": [" new-key ", "old-key"], "callback_token": "{TOKEN}"}}"#
        ))
        .unwrap();
        assert_eq!(secret.hmac_keys, vec!["new-key", "old-key"]);
        assert_eq!(secret.callback_tokens, vec![TOKEN]);
        assert!(!secret.is_unauthenticated());
        assert_eq!(CallbackSecret::parse(&secret.to_json()).unwrap(), secret, "to_json round-trips");
        // One token is still written as a string, which versions before arrays read too.
        let written: Value = serde_json::from_str(&secret.to_json()).unwrap();
        assert_eq!(written[TOKEN_FIELD], json!(TOKEN));
    }

    #[test]
    fn several_tokens_are_read_from_an_array() {
        let secret = CallbackSecret::parse(&format!(r#"{{"callback_token": [" {TOKEN} ", "{OLD_TOKEN}"]}}"#)).unwrap();
        assert_eq!(secret.callback_tokens, vec![TOKEN, OLD_TOKEN], "in order, trimmed");
        assert!(!secret.is_unauthenticated());
        assert_eq!(CallbackSecret::parse(&secret.to_json()).unwrap(), secret, "to_json round-trips");
        let written: Value = serde_json::from_str(&secret.to_json()).unwrap();
        assert_eq!(written[TOKEN_FIELD], json!([TOKEN, OLD_TOKEN]));
        // A list of one is the same secret as the string.
        let one = CallbackSecret::parse(&format!(r#"{{"callback_token": ["{TOKEN}"]}}"#)).unwrap();
        assert_eq!(one, CallbackSecret::parse(&format!(r#"{{"callback_token": "{TOKEN}"}}"#)).unwrap());
    }

    #[test]
    fn either_field_may_be_absent_empty_or_null() {
        let only_keys = CallbackSecret::parse(r#"{"webhook_hmac_keys": ["k"]}"#).unwrap();
        assert_eq!((only_keys.hmac_keys.len(), only_keys.callback_tokens.len()), (1, 0));
        let only_token = CallbackSecret::parse(&object(&[(KEYS_FIELD, json!([])), (TOKEN_FIELD, json!(TOKEN))]));
        assert_eq!(only_token.unwrap().hmac_keys, Vec::<String>::new());
        for empty in [
            "{}",
            r#"{"webhook_hmac_keys": null, "callback_token": null}"#,
            r#"{"callback_token": " "}"#,
            r#"{"callback_token": []}"#,
        ] {
            assert!(CallbackSecret::parse(empty).unwrap().is_unauthenticated(), "{empty}");
        }
        // What template.yaml writes when the stack creates the secret without a token.
        let created = CallbackSecret::parse(r#"{"webhook_hmac_keys": ["k1","k2"], "callback_token": null}"#);
        assert_eq!(created.unwrap().hmac_keys, vec!["k1", "k2"]);
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let cases: &[(String, &str)] = &[
            ("not json secret-value".into(), "not a JSON object (line 1, column 2)"),
            (r#"["secret-value"]"#.into(), "not a JSON object"),
            (r#"{"webhook_hmac_key": ["secret-value"]}"#.into(), "unknown field \"webhook_hmac_key\""),
            (r#"{"webhook_hmac_keys": "secret-value"}"#.into(), "webhook_hmac_keys is invalid: must be a JSON array"),
            (r#"{"webhook_hmac_keys": ["secret-value", 7]}"#.into(), "every key must be a JSON string"),
            (r#"{"webhook_hmac_keys": ["secret-value", " "]}"#.into(), "key number 2 is empty"),
            (r#"{"webhook_hmac_keys": ["secret-value", " None"]}"#.into(), "key number 2 is the word none"),
            (r#"{"webhook_hmac_keys": ["NONE"]}"#.into(), "key number 1 is the word none"),
            (r#"{"callback_token": 7}"#.into(), "callback_token is invalid: must be a JSON string, an array"),
            (r#"{"callback_token": "secret-value"}"#.into(), "use at least 16 random characters"),
            (r#"{"callback_token": "secret/value-0123456789"}"#.into(), "use only ASCII letters"),
            // The array form: every token a string, none empty, each checked like the one token.
            (r#"{"callback_token": ["secret-value-0123456789", 7]}"#.into(), "every token must be a JSON string"),
            (r#"{"callback_token": ["secret-value-0123456789", null]}"#.into(), "every token must be a JSON string"),
            (
                r#"{"callback_token": ["secret-value-0123456789", " "]}"#.into(),
                "callback_token is invalid: token number 2: it is empty",
            ),
            (r#"{"callback_token": [""]}"#.into(), "callback_token is invalid: it is empty"),
            (
                r#"{"callback_token": ["secret-value-0123456789", "secret-value"]}"#.into(),
                "token number 2: it is 12 characters long; use at least 16",
            ),
            (
                r#"{"callback_token": ["secret/value-0123456789", "secret-value-0123456789"]}"#.into(),
                "token number 1: use only ASCII letters",
            ),
            (r#"{"callback_token": [["secret-value-0123456789"]]}"#.into(), "every token must be a JSON string"),
            // A token or key typed as a field's name (the console's key/value editor): not shown,
            // snake case too (a token may be written so).
            (r#"{"secret-value-0123456789": "callback_token"}"#.into(), "unknown field (23 characters, not shown)"),
            (r#"{"secret-value": ["k1"]}"#.into(), "unknown field (12 characters, not shown)"),
            (r#"{"secret_value_k7f2_q9x1": "x"}"#.into(), "unknown field (22 characters, not shown)"),
        ];
        for (text, expected) in cases {
            let err = CallbackSecret::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains("secret-value") && !err.contains("secret/value"), "{err}");
        }
    }

    /// A misspelt field's name is shown, so the operator sees the typo; a name that is no
    /// misspelling of ours (a token or key typed in the name column, whatever its case) is not.
    #[test]
    fn only_a_misspelt_field_name_is_shown() {
        for misspelt in
            ["callbackToken", "webhook_hmac_key", "Callback-Tokens", "token", "hmac_keys", "WEBHOOK_HMAC_KEYS"]
        {
            assert_eq!(shown_field_name(misspelt), format!("{misspelt:?}"));
        }
        for secret in ["k7f2_q9x1_m3p8_z5w0", "callback_token_k7f2q9x1m3", "0123456789abcdef", "a b", "_", "é"] {
            assert!(shown_field_name(secret).ends_with("characters, not shown)"), "{secret}");
        }
    }

    #[test]
    fn the_local_variables_read_as_before() {
        let secret = CallbackSecret::from_variables(Some(" new-key , old-key "), Some(TOKEN)).unwrap();
        assert_eq!(secret.hmac_keys, vec!["new-key", "old-key"]);
        assert_eq!(secret.callback_tokens, vec![TOKEN]);
        assert!(CallbackSecret::from_variables(Some(" "), Some("")).unwrap().is_unauthenticated());
        assert!(CallbackSecret::from_variables(None, None).unwrap().is_unauthenticated());

        let err = CallbackSecret::from_variables(Some("secret-one,,secret-two"), None).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { name: "WEBHOOK_HMAC_KEYS", .. }));
        assert!(!err.to_string().contains("secret"), "{err}");
        for token in ["short-secret", "has/slash-0123456789", "has space 0123456789"] {
            let err = CallbackSecret::from_variables(None, Some(token)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { name: "CALLBACK_TOKEN", .. }), "{token}");
            assert!(!err.to_string().contains(token), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret =
            CallbackSecret { hmac_keys: vec!["key-123".into()], callback_tokens: vec![TOKEN.into(), OLD_TOKEN.into()] };
        let debug = format!("{secret:?} {secret:#?}");
        assert!(!debug.contains("key-123") && !debug.contains(TOKEN) && !debug.contains(OLD_TOKEN), "{debug}");
        assert_eq!(format!("{secret:?}"), "CallbackSecret { hmac_keys: <1 redacted>, callback_tokens: <2 redacted> }");
    }
}
