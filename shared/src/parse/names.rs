//! Turning provider ids and JSON keys into S3-safe name segments.

/// The longest a single name segment may be, in bytes (segments are ASCII).
pub const MAX_SEGMENT_LEN: usize = 64;

/// `raw` as one S3-safe name segment: ASCII letters, digits and `- _ . * ~ + = @ , : !` are
/// kept, anything else becomes `_`; a `.` right after another `.` becomes `_` (so no `..`);
/// the result is cut to [`MAX_SEGMENT_LEN`]. A lone `.` becomes `_`. Empty stays empty.
///
/// ```
/// use suno_callbacks::parse::sanitize_segment;
/// assert_eq!(sanitize_segment("e231****-8cadc7dc"), "e231****-8cadc7dc");
/// assert_eq!(sanitize_segment("a/b c..d"), "a_b_c._d");
/// ```
pub fn sanitize_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_SEGMENT_LEN));
    for c in raw.chars() {
        if out.len() == MAX_SEGMENT_LEN {
            break;
        }
        let safe = c.is_ascii_alphanumeric() || "-_.*~+=@,:!".contains(c);
        let c = if !safe || (c == '.' && out.ends_with('.')) { '_' } else { c };
        out.push(c);
    }
    if out == "." {
        out = "_".to_owned();
    }
    out
}

/// `audioWavUrl` -> `audio_wav`, `backing_vocals_url` -> `backing_vocals`, `coverURL` ->
/// `cover`; None when the key does not end in `_url`, `Url` or `URL`.
pub(super) fn url_key_stem(key: &str) -> Option<String> {
    let stem = key.strip_suffix("_url").or_else(|| key.strip_suffix("Url")).or_else(|| key.strip_suffix("URL"))?;
    Some(snake_case(stem))
}

/// camelCase and PascalCase to snake_case; other characters are left alone.
pub(super) fn snake_case(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let after_word = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            let acronym_end =
                prev.is_some_and(|p| p.is_ascii_uppercase()) && next.is_some_and(|n| n.is_ascii_lowercase());
            if after_word || acronym_end {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_safe() {
        assert_eq!(sanitize_segment("8551****662c"), "8551****662c");
        assert_eq!(sanitize_segment("a/b\\c d%e"), "a_b_c_d_e");
        assert_eq!(sanitize_segment(".."), "._");
        assert_eq!(sanitize_segment("..."), "._.");
        assert_eq!(sanitize_segment("."), "_");
        assert_eq!(sanitize_segment("é"), "_");
        assert_eq!(sanitize_segment(""), "");
        assert_eq!(sanitize_segment(&"x".repeat(100)).len(), MAX_SEGMENT_LEN);
        assert_eq!(sanitize_segment(&"é".repeat(100)), "_".repeat(MAX_SEGMENT_LEN));
    }

    #[test]
    fn url_keys() {
        assert_eq!(url_key_stem("audioWavUrl").as_deref(), Some("audio_wav"));
        assert_eq!(url_key_stem("audio_wav_url").as_deref(), Some("audio_wav"));
        assert_eq!(url_key_stem("backingVocalsUrl").as_deref(), Some("backing_vocals"));
        assert_eq!(url_key_stem("origin_url").as_deref(), Some("origin"));
        assert_eq!(url_key_stem("coverURL").as_deref(), Some("cover"));
        assert_eq!(url_key_stem("HTTPServerUrl").as_deref(), Some("http_server"));
        assert_eq!(url_key_stem("_url").as_deref(), Some(""));
        assert_eq!(url_key_stem("url"), None);
        assert_eq!(url_key_stem("urls"), None);
    }
}
