//! Turning provider ids and JSON keys into S3-safe name segments.

use crate::s3_key::{self, short_sha256};

/// `-` and 8 hex digits: what [`distinct_segment`] and [`unreserved`] append.
const HASH_SUFFIX_LEN: usize = 9;

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

/// `raw` as one S3-safe segment that no other `raw` maps to (short of a 32-bit hash
/// collision), the same in every callback. A `raw` that is safe as is stays as is; otherwise
/// (sanitising changed or truncated it) the sanitised text is cut to leave room for
/// `-<first 8 hex of SHA-256(raw)>`: `a/b` -> `a_b-<hash>`, never `a_b`, which is `a_b`'s.
/// A safe `raw` that already ends like such a suffix is hashed too, so that a hashed segment
/// can never equal an unchanged one; so is one that ends like a number the parser appends
/// (`-2` to a repeated id, `track-3` for a track without one, `-1` to an array's item:
/// [`ends_like_a_number_suffix`]), so that those names never equal a raw one's either (a
/// track with the id `x-2` beside two tracks with the id `x` would share their second's name,
/// and one of the two files would not be copied). Empty stays empty.
pub(super) fn distinct_segment(raw: &str) -> String {
    let segment = sanitize_segment(raw);
    if segment == raw && !ends_like_hash(raw) && !ends_like_a_number_suffix(raw) {
        return segment;
    }
    hashed(raw, &segment)
}

/// A music track's id as its name segment: [`distinct_segment`], and hashed too when it is
/// `track`, the stem of an id-less track's `track-<n>`: repeated in one body, an id `track`
/// would be deduplicated to `track-2`, an id-less second track's name in another callback of
/// the task, and one of the two files would not be copied.
pub(super) fn track_segment(id: &str) -> String {
    match id {
        "track" => hashed(id, id),
        id => distinct_segment(id),
    }
}

/// `segment` (`raw` sanitised) cut to leave room for `-<first 8 hex of SHA-256(raw)>`, and that.
fn hashed(raw: &str, segment: &str) -> String {
    // Segments are ASCII, so any byte index is a char boundary.
    let kept = &segment[..segment.len().min(MAX_SEGMENT_LEN - HASH_SUFFIX_LEN)];
    format!("{kept}-{}", short_sha256(raw))
}

/// `raw` as a file name's last segment: [`distinct_segment`], and hashed too when it ends in an
/// extension a key keeps ([`s3_key::ends_in_known_extension`]): `vocal.mp3` with an
/// extensionless URL and `vocal` with an `.mp3` URL would share a key.
pub(super) fn file_segment(raw: &str) -> String {
    match s3_key::ends_in_known_extension(raw) {
        true => hashed(raw, &sanitize_segment(raw)),
        false => distinct_segment(raw),
    }
}

/// `name` with a [reserved](s3_key::is_reserved_name) first segment renamed, so no file lands
/// on the manifest or the callback bodies: the reserved word gets `-<hash of the segment>`
/// (`manifest` -> `manifest-<hash>`, `manifest.json` -> `manifest-<hash>.json`).
pub(super) fn unreserved(name: &str) -> String {
    if !s3_key::is_reserved_name(name) {
        return name.to_owned();
    }
    let first = name.split('/').next().unwrap_or(name);
    // The reserved word is the part of the first segment before any `.`.
    let word_len = first.find('.').unwrap_or(first.len());
    let (word, rest) = name.split_at(word_len);
    format!("{word}-{}{rest}", short_sha256(first))
}

/// Whether `segment` ends in `-` and 8 lower-case hex digits, as a hashed segment does.
fn ends_like_hash(segment: &str) -> bool {
    let Some(split) = segment.len().checked_sub(HASH_SUFFIX_LEN) else { return false };
    let Some(suffix) = segment.get(split..) else { return false };
    // Bytes: the suffix may start inside a character of a non-ASCII segment.
    let Some((b'-', hex)) = suffix.as_bytes().split_first() else { return false };
    hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Whether `segment` ends in `-` and a number as the parser writes one: at most 9 digits (a
/// body's array index is far below that), the first not `0` (`4f1e2d3c-0001` is no such
/// suffix, nor a UUID's last group of 12).
fn ends_like_a_number_suffix(segment: &str) -> bool {
    let Some((_, digits)) = segment.rsplit_once('-') else { return false };
    (1..=9).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// `audioWavUrl` -> `audio_wav`, `backing_vocals_url` -> `backing_vocals`, `coverURL` ->
/// `cover`; None when the key does not end in `_url`, `Url` or `URL`, and for a bare `url`
/// in any spelling (too general a name: often a page, such as a song's share link, not a
/// file).
pub(super) fn url_key_stem(key: &str) -> Option<String> {
    if key.eq_ignore_ascii_case("url") {
        return None;
    }
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

    /// Read by bytes: a segment whose last 9 bytes start inside a character is no hash (and
    /// no panic), whoever calls it.
    #[test]
    fn a_hash_suffix_is_read_by_bytes() {
        assert!(ends_like_hash("vocal-0a1b2c3d"));
        assert!(!ends_like_hash("vocal-0A1B2C3D") && !ends_like_hash("vocal_0a1b2c3d") && !ends_like_hash("-0a1b2c3"));
        assert!(!ends_like_hash("ab\u{e9}0a1b2c3d"), "starts inside \u{e9}");
        assert!(!ends_like_hash("x\u{e9}1234567"), "starts with \u{e9}, its first byte not a dash");
    }

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
    fn distinct_segments() {
        assert_eq!(distinct_segment("e231****-****8cadc7dc"), "e231****-****8cadc7dc");
        assert_ne!(distinct_segment("e231-8cadc7dc"), "e231-8cadc7dc");
        assert_eq!(distinct_segment("4f1e2d3c-0001"), "4f1e2d3c-0001");
        assert_eq!(distinct_segment(""), "");
        let hashed = distinct_segment("a/b");
        assert_eq!(hashed, format!("a_b-{}", short_sha256("a/b")));
        assert_ne!(distinct_segment("a b"), hashed);
        // A safe look-alike of a hashed segment is hashed in turn.
        assert_eq!(distinct_segment(&hashed), format!("{hashed}-{}", short_sha256(&hashed)));
        assert_eq!(distinct_segment("x-12345678"), format!("x-12345678-{}", short_sha256("x-12345678")));
        assert_eq!(distinct_segment("x-123456a"), "x-123456a");
        assert_eq!(file_segment("x.mp3"), format!("x.mp3-{}", short_sha256("x.mp3")));
        assert_eq!(file_segment("x.Wav"), format!("x.Wav-{}", short_sha256("x.Wav")));
        assert_eq!((file_segment("x.mp3s"), file_segment("x")), ("x.mp3s".into(), "x".into()));
        assert_eq!(file_segment("a b.mp3"), distinct_segment("a b.mp3"), "changed: hashed alike");
        assert_eq!(distinct_segment("take.mp3"), "take.mp3", "not a file's own segment: kept");
        assert_eq!(distinct_segment("x-1234567A"), "x-1234567A");
        let long = distinct_segment(&"x".repeat(100));
        assert_eq!(long.len(), MAX_SEGMENT_LEN);
        assert!(long.starts_with(&"x".repeat(MAX_SEGMENT_LEN - HASH_SUFFIX_LEN)));
        assert_ne!(long, distinct_segment(&"x".repeat(101)));
        assert_eq!(distinct_segment("."), format!("_-{}", short_sha256(".")));
        // Look-alikes of the numbers the parser appends are hashed; other numbers are kept.
        for suffixed in ["x-2", "track-3", "cover-1", "a-b-999999999"] {
            assert_eq!(distinct_segment(suffixed), format!("{suffixed}-{}", short_sha256(suffixed)), "{suffixed}");
        }
        for kept in ["x-0", "x-02", "x-1234567890", "x-", "x-2a", "x2", "-"] {
            assert_eq!(distinct_segment(kept), kept, "{kept}");
        }
        assert_eq!(distinct_segment("e231a7b4-4f1e-4c3d-9a8b-123456789012"), "e231a7b4-4f1e-4c3d-9a8b-123456789012");
    }

    #[test]
    fn reserved_first_segments_are_renamed() {
        assert_eq!(unreserved("manifest"), format!("manifest-{}", short_sha256("manifest")));
        assert_eq!(unreserved("manifest.json"), format!("manifest-{}.json", short_sha256("manifest.json")));
        assert_eq!(unreserved("callbacks.x/y"), format!("callbacks-{}.x/y", short_sha256("callbacks.x")));
        assert!(!s3_key::is_reserved_name(&unreserved("manifest.json")));
        assert_eq!(unreserved("callbacks/first-abc"), format!("callbacks-{}/first-abc", short_sha256("callbacks")));
        assert_eq!(unreserved("details/xUrl"), format!("details-{}/xUrl", short_sha256("details")));
        assert_eq!(unreserved("result/manifest"), "result/manifest");
        assert_eq!(unreserved("manifests"), "manifests");
        assert_eq!(short_sha256("abc"), "ba7816bf");
    }

    #[test]
    fn url_keys() {
        assert_eq!(url_key_stem("audioWavUrl").as_deref(), Some("audio_wav"));
        assert_eq!(url_key_stem("audio_wav_url").as_deref(), Some("audio_wav"));
        assert_eq!(url_key_stem("backingVocalsUrl").as_deref(), Some("backing_vocals"));
        assert_eq!(url_key_stem("origin_url").as_deref(), Some("origin"));
        assert_eq!(url_key_stem("coverURL").as_deref(), Some("cover"));
        for bare in ["url", "Url", "URL"] {
            assert_eq!(url_key_stem(bare), None, "{bare}");
        }
        assert_eq!(url_key_stem("curl"), None);
        assert_eq!(url_key_stem("HTTPServerUrl").as_deref(), Some("http_server"));
        // A key that is only the suffix's separator and the suffix still names a file.
        assert_eq!(url_key_stem("_url").as_deref(), Some(""));
        assert_eq!(url_key_stem("urls"), None);
    }
}
