//! JSON text that SQS keeps as sent. A message may hold only XML's characters (`#x9`, `#xA`,
//! `#xD`, `#x20`-`#xD7FF`, `#xE000`-`#xFFFD`, `#x10000`-`#x10FFFF`: others are refused with
//! InvalidMessageContents or, by later documentation, replaced with U+FFFD). serde_json
//! escapes the control characters but writes U+FFFE and U+FFFF as they are, and a provider's
//! URL, title or message may hold them. In JSON they can only be inside strings: in what we
//! send SQS ourselves (jobs) they are escaped, and read back the same; in what another service
//! renders again before SQS gets it (events, through EventBridge) they are replaced.

/// The two characters serde_json leaves that SQS refuses.
const REFUSED: [char; 2] = ['\u{fffe}', '\u{ffff}'];

/// JSON text that another service renders again before SQS gets it (EventBridge's `Detail`,
/// which the notify rule delivers to a queue): U+FFFE and U+FFFF replaced by U+FFFD, as SQS
/// itself may do, since an escape may not outlive the rendering. Only free text can hold them
/// (a provider's message, a source's reason phrase: task ids, file names and keys are ASCII,
/// a `client_ref` may not hold them), and nothing is lost.
pub fn refused_characters_replaced(json: String) -> String {
    if !json.contains(REFUSED) {
        return json;
    }
    json.replace(REFUSED, "\u{fffd}")
}

/// `json` with U+FFFE and U+FFFF escaped.
pub fn xml_characters_only(json: String) -> String {
    if !json.contains(REFUSED) {
        return json;
    }
    json.replace('\u{fffe}', "\\ufffe").replace('\u{ffff}', "\\uffff")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_characters_are_replaced_where_an_escape_may_not_last() {
        let value = serde_json::json!({"message": "a\u{ffff}b\u{fffe}\u{fffd}"});
        let json = refused_characters_replaced(value.to_string());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap()["message"], "a\u{fffd}b\u{fffd}\u{fffd}");
        assert_eq!(json.len(), value.to_string().len(), "three bytes for three");
    }

    #[test]
    fn only_the_two_characters_json_leaves_are_escaped() {
        let value = serde_json::json!({"url": "https://h/a\u{ffff}b\u{fffe}\u{fffd}.mp3", "tab": "\t"});
        let json = xml_characters_only(value.to_string());
        assert!(!json.contains(['\u{fffe}', '\u{ffff}']), "{json:?}");
        assert!(json.contains("a\\uffffb\\ufffe\u{fffd}.mp3"), "U+FFFD is allowed as it is: {json:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap(), value);
        let plain = value.to_string().replace(['\u{fffe}', '\u{ffff}'], "");
        assert_eq!(xml_characters_only(plain.clone()), plain);
    }
}
