//! Text from outside (a provider's message, a failure's reason naming what a source sent)
//! bounded before it is written into an item, so that no input grows one past DynamoDB's
//! 400 KB.

use std::borrow::Cow;

/// At most this much of a file's failure reason is kept in its item (UTF-8 bytes, marker
/// included): a reason may quote what a source or S3 sent (a host name, an error body).
pub const MAX_REASON_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, `marker(len)` (`len`: the
/// whole text's length) ending what was cut; `text` itself when it fits.
pub fn cut(text: &str, max: usize, marker: impl FnOnce(usize) -> String) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let marker = marker(text.len());
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{marker}", &text[..end]))
}

/// The first `n` characters of `text`, for naming a value given from outside (an unknown
/// field or family) without echoing all of it.
pub fn first_chars(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// A failure reason as kept in a file's item: at most [`MAX_REASON_BYTES`].
pub fn bounded_reason(reason: &str) -> Cow<'_, str> {
    cut(reason, MAX_REASON_BYTES, |len| format!("… [cut: {len} bytes]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary_and_says_so() {
        assert_eq!(bounded_reason("source answered 404 Not Found"), "source answered 404 Not Found");
        let exact = "r".repeat(MAX_REASON_BYTES);
        assert_eq!(bounded_reason(&exact), exact.as_str());
        // A host of 250,000 bytes named in a refusal, in two-byte characters.
        let long = format!("the source host {} is not allowed", "é".repeat(125_000));
        let kept = bounded_reason(&long);
        assert!(kept.len() <= MAX_REASON_BYTES && kept.len() > MAX_REASON_BYTES - 40, "{}", kept.len());
        assert!(kept.starts_with("the source host éé") && kept.ends_with(&format!("… [cut: {} bytes]", long.len())));
    }
}
