//! URLs as the logs and failure reasons show them: a signed query, credentials before the
//! host or a capability in the path (the provider's file links: `/s/<uuid>_Vocals.mp3`, a
//! working link for 14 days) never reach a log line, a record or an answer.

use sha2::{Digest, Sha256};
use url::Url;

/// The SHA-256 of `url` as given, in hex: what names a URL without showing it (the download
/// keeps it as a copy's `source-sha256` metadata).
pub fn url_sha256(url: &str) -> String {
    hex::encode(Sha256::digest(url.as_bytes()))
}

/// A URL as the logs show it: its scheme, host and port, and the first 12 hex digits of
/// [`url_sha256`] of the whole URL (so a log line and a copy's metadata can be matched).
pub fn loggable(url: &Url) -> String {
    // As parsed (normalised): a redirect's target, never a URL an object was copied from.
    shown(url, url.as_str())
}

/// [`loggable`] for a URL that may not even parse (the digest is of `url` as given).
pub fn loggable_str(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "<not a URL>".to_owned(), |u| shown(&u, url))
}

fn shown(url: &Url, whole: &str) -> String {
    let digest = url_sha256(whole);
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{host}{port}/… (sha256 {})", url.scheme(), &digest[..12])
}

/// The most of a provider's message kept (logged, or kept as a failure reason).
pub const MAX_MESSAGE_CHARS: usize = 200;

/// A provider's message as it may be logged and kept: its first [`MAX_MESSAGE_CHARS`]
/// characters, every link in them shown as [`loggable_str`] shows it (a message may quote the
/// URL it was asked about: a working file link, a signed one, a callback URL with its token).
pub fn provider_message(text: &str) -> String {
    without_links(&text.chars().take(MAX_MESSAGE_CHARS).collect::<String>())
}

/// `text` with every link in it shown as [`loggable_str`] shows it.
pub fn without_links(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    // Schemes in any case (`HTTPS://`): ASCII lower-casing keeps every byte offset.
    while let Some(start) = {
        let lower = rest.to_ascii_lowercase();
        ["http://", "https://"].iter().filter_map(|scheme| lower.find(scheme)).min()
    } {
        shown.push_str(&rest[..start]);
        let link = &rest[start..];
        let end = link.find(|c: char| c.is_whitespace() || "\"'<>`".contains(c)).unwrap_or(link.len());
        // Punctuation that ends the sentence is not part of the link.
        let end = link[..end].trim_end_matches([',', '.', ';', ':', '!', '?', ')']).len();
        shown.push_str(&loggable_str(&link[..end]));
        rest = &link[end..];
    }
    shown.push_str(rest);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_shown_by_origin_and_digest_only() {
        let shown = loggable_str("https://u:p@cdn.example:8443/s/0a1b_Vocals.mp3?X-Amz-Signature=abc");
        assert!(shown.starts_with("https://cdn.example:8443/… (sha256 "), "{shown}");
        for secret in ["u:p", "0a1b", "Vocals", "abc"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(loggable_str("not a url"), "<not a URL>");
        assert_eq!(without_links("no link here"), "no link here");
        assert_eq!(
            without_links("two: http://a.example/x and \"https://b.example/y\"."),
            format!("two: {} and \"{}\".", loggable_str("http://a.example/x"), loggable_str("https://b.example/y"))
        );
        let long = format!("{} https://h.example/callback/token123", "x".repeat(MAX_MESSAGE_CHARS));
        assert_eq!(provider_message(&long), "x".repeat(MAX_MESSAGE_CHARS));
        let quoting = provider_message("bad callBackUrl https://h.example/callback/token123, fix it");
        assert!(!quoting.contains("token123") && quoting.ends_with(", fix it"), "{quoting}");
        let shouting = without_links("see HTTPS://h.example/callback/token123 now");
        assert!(!shouting.contains("token123") && shouting.ends_with(" now"), "{shouting}");
    }
}
