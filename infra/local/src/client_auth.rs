//! How a client of the local endpoint authenticates a callback, derived from the settings the
//! ingest function runs with: the first HMAC key signs, the token goes into the path.

use serde::{Deserialize, Serialize};

use crate::settings::non_empty;

pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAuth {
    /// The first of `WEBHOOK_HMAC_KEYS`.
    pub hmac_key: Option<String>,
    /// `CALLBACK_TOKEN`.
    pub callback_token: Option<String>,
}

/// Whether a secret is set, never its value (a failed assertion or a `?` field prints this).
pub fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("hmac_key", &redacted(&self.hmac_key))
            .field("callback_token", &redacted(&self.callback_token))
            .finish()
    }
}

impl ClientAuth {
    /// From the variables the ingest function reads (overlay over environment).
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> ClientAuth {
        let hmac_key = non_empty(get, "WEBHOOK_HMAC_KEYS")
            .and_then(|keys| keys.split(',').map(str::trim).find(|k| !k.is_empty()).map(str::to_owned));
        ClientAuth { hmac_key, callback_token: non_empty(get, "CALLBACK_TOKEN") }
    }

    /// The callback URL under `base` (`http://127.0.0.1:3000`): `/callback` or `/callback/<token>`.
    pub fn callback_url(&self, base: &str) -> String {
        match &self.callback_token {
            None => format!("{base}/callback"),
            Some(token) => format!("{base}/callback/{}", encode_path_segment(token)),
        }
    }

    /// The callback URL with the token masked, for logs and banners people may share.
    pub fn callback_url_masked(&self, base: &str) -> String {
        match &self.callback_token {
            None => format!("{base}/callback"),
            Some(_) => format!("{base}/callback/<CALLBACK_TOKEN>"),
        }
    }

    /// The signature headers for `task_id` at `timestamp` (Unix seconds); none without a key.
    pub fn headers(&self, task_id: &str, timestamp: i64) -> Vec<(&'static str, String)> {
        match &self.hmac_key {
            None => Vec::new(),
            Some(key) => vec![
                (TIMESTAMP_HEADER, timestamp.to_string()),
                (SIGNATURE_HEADER, suno_callbacks::signature::sign(key.as_bytes(), task_id, timestamp)),
            ],
        }
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986), so any token fits one segment.
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn debug_says_what_is_set_never_the_secrets() {
        let auth = ClientAuth { hmac_key: Some("key-1".into()), callback_token: Some("tok-1".into()) };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("key-1") && !shown.contains("tok-1"), "{shown}");
        assert_eq!(shown, r#"ClientAuth { hmac_key: Some("<redacted>"), callback_token: Some("<redacted>") }"#);
    }

    #[test]
    fn first_key_signs_and_token_goes_into_the_path() {
        let auth = ClientAuth::from_lookup(&lookup(&[("WEBHOOK_HMAC_KEYS", " ,k1, k2"), ("CALLBACK_TOKEN", "a b/c")]));
        assert_eq!(auth.hmac_key.as_deref(), Some("k1"));
        assert_eq!(auth.callback_url("http://127.0.0.1:3000"), "http://127.0.0.1:3000/callback/a%20b%2Fc");
        assert_eq!(auth.callback_url_masked("http://h"), "http://h/callback/<CALLBACK_TOKEN>");
        let headers = auth.headers("task1", 1_700_000_000);
        assert_eq!(headers[0], (TIMESTAMP_HEADER, "1700000000".to_owned()));
        // base64(HMAC-SHA256("k1", "task1.1700000000")), computed independently with Python's hmac.
        assert_eq!(headers[1], (SIGNATURE_HEADER, "dIhZE2PDydfh/yb8rN3FiDVwAKt9AkQaU/YRLk4lO3k=".to_owned()));
    }

    #[test]
    fn unauthenticated_has_plain_path_and_no_headers() {
        let auth = ClientAuth::from_lookup(&lookup(&[("ALLOW_UNAUTHENTICATED", "true")]));
        assert_eq!(auth, ClientAuth::default());
        assert_eq!(auth.callback_url("http://h"), "http://h/callback");
        assert!(auth.headers("t", 1).is_empty());
    }
}
