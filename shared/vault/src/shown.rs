//! URLs as the logs and failure reasons show them: a signed query, credentials before the
//! host or a capability in the path (the provider's file links: `/s/<uuid>_Vocals.mp3`, a
//! working link for 14 days) never reach a log line, a record or an answer.

use url::Url;

/// The SHA-256 of `url` as given, in hex: what names a URL without showing it (the download
/// keeps it as a copy's `source-sha256` metadata).
pub fn url_sha256(url: &str) -> String {
    crate::accept::body_sha256_hex(url.as_bytes())
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
const MAX_MESSAGE_CHARS: usize = 200;

/// A provider's message as it may be logged and kept: its first `MAX_MESSAGE_CHARS` (200)
/// characters, every link in them shown as [`loggable_str`] shows it (a message may quote the
/// URL it was asked about: a working file link, a signed one, a callback URL with its token),
/// and one quoted without its scheme (`//host/path`, `host.tld/path`) as its host and digest;
/// control characters (a line break that would forge a log line in text logs) as spaces.
pub fn provider_message(text: &str) -> String {
    let kept: String = text.chars().take(MAX_MESSAGE_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    without_links(&kept)
}

/// How a `/` may be written in a link a message quotes, in lower case: as is, as JSON escapes
/// it (a message quoting JSON), or percent-encoded (a message quoting a query).
pub const SLASHES: [&str; 3] = ["/", "\\/", "%2f"];

/// The bytes of a slash, written any of the [`SLASHES`] ways, at the start of `lower`.
pub fn slash_at(lower: &str) -> Option<usize> {
    SLASHES.iter().find(|slash| lower.starts_with(**slash)).map(|slash| slash.len())
}

/// Where the first link in `lower` at or after `from` starts: `http` or `https`, `:` (or
/// `%3a`), then two slashes, each written any of the [`SLASHES`] ways.
fn next_link(lower: &str, from: usize) -> Option<usize> {
    let starts_a_link = |at: usize| {
        let rest = &lower[at + "http".len()..];
        let rest = rest.strip_prefix('s').unwrap_or(rest);
        let Some(rest) = rest.strip_prefix(':').or_else(|| rest.strip_prefix("%3a")) else { return false };
        slash_at(rest).is_some_and(|first| slash_at(&rest[first..]).is_some())
    };
    lower[from..].match_indices("http").map(|(i, _)| from + i).find(|at| starts_a_link(*at))
}

/// Whether `c` ends a link quoted in a text: a space, or a quote or bracket around it.
fn ends_a_link(c: char) -> bool {
    c.is_whitespace() || "\"'<>`".contains(c)
}

/// Where the first link quoted without its scheme starts in `lower` at or after `from`: a word
/// (or what follows a `:`) that is a host name (dotted labels, the last starting with a
/// letter) or an IPv4 address, perhaps after `//` and before a port, then a slash (written any
/// of the [`SLASHES`] ways) and a path (`//h.example/s/x`, `tempfile.aiquickdraw.com/s/x`,
/// `url:h.example:8443\/x`, `h.example/?sig=x`; not `and/or`, `4.5/5` or `e.g./i.e.`).
fn next_bare_link(lower: &str, from: usize) -> Option<usize> {
    let before = |at: usize| lower[..at].chars().next_back();
    let starts = |at: usize| before(at).is_none_or(|c| c.is_whitespace() || c == ':' || "\"'<>`([,;=".contains(c));
    let bare_link = |at: usize| {
        if !starts(at) {
            return false;
        }
        let word = &lower[at..];
        let word = word.find(ends_a_link).map_or(word, |end| &word[..end]).trim_end_matches(SENTENCE_END);
        let host_and_path = word.strip_prefix("//").unwrap_or(word);
        let host_end = host_and_path
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(host_and_path.len());
        let after_host = &host_and_path[host_end..];
        let after_port = after_host
            .strip_prefix(':')
            .map_or(after_host, |port| port.trim_start_matches(|c: char| c.is_ascii_digit()));
        let path = slash_at(after_port).map(|slash| &after_port[slash..]).unwrap_or_default();
        names_a_host(&host_and_path[..host_end]) && !path.is_empty()
    };
    (from..lower.len()).filter(|at| lower.is_char_boundary(*at)).find(|at| bare_link(*at))
}

/// Punctuation that ends a sentence, not a link.
const SENTENCE_END: [char; 7] = [',', '.', ';', ':', '!', '?', ')'];

/// Whether `host` (lower case) reads as a host name (two or more labels, none empty, the last
/// starting with a letter) or an IPv4 address.
fn names_a_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let ipv4 = labels.len() == 4
        && labels.iter().all(|l| !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()));
    let name = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && labels.last().is_some_and(|tld| tld.starts_with(|c: char| c.is_ascii_alphabetic()));
    ipv4 || name
}

/// A link quoted without its scheme as the logs show it: its host (and port) and the first 12
/// hex digits of the SHA-256 of the link as quoted.
fn shown_bare(link: &str) -> String {
    let host = link.trim_start_matches('/').split(['/', '\\', '%']).next().unwrap_or_default();
    format!("{host}/… (sha256 {})", &url_sha256(link)[..12])
}

/// `text` with every link in it shown as [`loggable_str`] shows it (an encoded one, which does
/// not parse, as `<not a URL>`; one without its scheme as [`shown_bare`] does).
fn without_links(text: &str) -> String {
    // Schemes in any case (`HTTPS://`, `%2F`): ASCII lower-casing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut shown = String::with_capacity(text.len());
    let mut at = 0;
    loop {
        // The earlier of the two: a scheme's link is found before its own `//`.
        let (start, bare) = match (next_link(&lower, at), next_bare_link(&lower, at)) {
            (Some(link), Some(bare)) if bare < link => (bare, true),
            (Some(link), _) => (link, false),
            (None, Some(bare)) => (bare, true),
            (None, None) => break,
        };
        shown.push_str(&text[at..start]);
        let link = &text[start..];
        let end = link.find(ends_a_link).unwrap_or(link.len());
        // Punctuation that ends the sentence is not part of the link.
        let end = link[..end].trim_end_matches(SENTENCE_END).len();
        shown.push_str(&if bare { shown_bare(&link[..end]) } else { loggable_str(&link[..end]) });
        at = start + end;
    }
    shown.push_str(&text[at..]);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_show_only_their_host_and_a_digest() {
        let url = "https://u:secret@tempfile.aiquickdraw.com:8443/s/0a1b2c_Vocals.mp3?X-Amz-Signature=sig#frag";
        let shown = loggable_str(url);
        let digest = url_sha256(url);
        assert_eq!(shown, format!("https://tempfile.aiquickdraw.com:8443/… (sha256 {})", &digest[..12]));
        for secret in ["secret", "0a1b2c", "Vocals", "sig", "frag"] {
            assert!(!shown.contains(secret), "{shown} shows {secret}");
        }
        assert_eq!(
            loggable(&Url::parse("https://cdn1.suno.ai/a.mp3").unwrap()),
            loggable_str("https://cdn1.suno.ai/a.mp3")
        );
        assert_ne!(loggable_str("https://cdn1.suno.ai/a.mp3"), loggable_str("https://cdn1.suno.ai/b.mp3"));
        assert_eq!(loggable_str("not a url?sig=secret"), "<not a URL>");
    }

    #[test]
    fn links_in_a_text_are_shown_as_logged_urls() {
        assert_eq!(without_links("no link here"), "no link here");
        assert_eq!(
            without_links("two: http://a.example/x and \"https://b.example/y\"."),
            format!("two: {} and \"{}\".", loggable_str("http://a.example/x"), loggable_str("https://b.example/y"))
        );
        let long = format!("{} https://h.example/callback/token123", "x".repeat(MAX_MESSAGE_CHARS));
        assert_eq!(provider_message(&long), "x".repeat(MAX_MESSAGE_CHARS));
        // A line break would start a forged line in text logs.
        assert_eq!(provider_message("failed\n2026-01-01 INFO stored\r\t"), "failed 2026-01-01 INFO stored  ");
        let quoting = provider_message("bad callBackUrl https://h.example/callback/token123, fix it");
        assert!(!quoting.contains("token123") && quoting.ends_with(", fix it"), "{quoting}");
        let shouting = without_links("see HTTPS://h.example/callback/token123 now");
        assert!(!shouting.contains("token123") && shouting.ends_with(" now"), "{shouting}");
    }

    /// A link quoted without its scheme (kie may quote a file as `host/s/<uuid>_Vocals.mp3`)
    /// shows its host and digest only; words with a slash but no host are left.
    #[test]
    fn links_without_a_scheme_are_not_shown_either() {
        let link = "tempfile.aiquickdraw.com/s/0a1b2c_Vocals.mp3";
        let shown = provider_message(&format!("the file {link} is not one of ours."));
        assert_eq!(
            shown,
            format!("the file tempfile.aiquickdraw.com/… (sha256 {}) is not one of ours.", &url_sha256(link)[..12])
        );
        for quoted in [
            "url \"//cdn1.suno.ai/x/secret123.mp3\" refused",
            "(cdn1.suno.ai:8443/x/secret123.mp3) refused",
            "url=Tempfile.AIQuickDraw.com/s/secret123",
        ] {
            let shown = provider_message(quoted);
            assert!(!shown.contains("secret123") && shown.contains("(sha256 "), "{shown}");
        }
        for quoted in [
            "url:h.example/x/secret123",
            "h.example\\/x\\/secret123",
            "at 10.0.0.7/x/secret123",
            "see cdn.example.com/?X-Amz-Signature=secret123",
            "ftp://h.example/x/secret123",
        ] {
            let shown = provider_message(quoted);
            assert!(!shown.contains("secret123") && shown.contains("(sha256 "), "{shown}");
        }
        assert!(provider_message("url:h.example/x/secret123").starts_with("url:h.example/… (sha256 "));
        for plain in [
            "and/or",
            "24/7 support",
            "a 1/2 note",
            "path /s/x alone",
            "e.g. this",
            "host.example/ alone",
            "example.com/, next",
            "rated 4.5/5",
            "v3.5/v4",
            "e.g./i.e.",
            "wait.../retry",
        ] {
            assert_eq!(provider_message(plain), plain);
        }
        // A link with its scheme is shown as before, its own `//` not taken again.
        assert_eq!(without_links("see https://h.example/x"), format!("see {}", loggable_str("https://h.example/x")));
    }

    /// A link quoted inside JSON (`\/` for each slash) or a query (`%2F`) is no more shown.
    #[test]
    fn escaped_or_encoded_links_are_not_shown_either() {
        let escaped = without_links(r#"request {"callBackUrl":"https:\/\/h.example\/callback\/token123"} failed"#);
        assert_eq!(
            escaped,
            format!(
                r#"request {{"callBackUrl":"{}"}} failed"#,
                loggable_str(r"https:\/\/h.example\/callback\/token123")
            )
        );
        assert!(escaped.contains("https://h.example/") && !escaped.contains("token123"), "{escaped}");
        let encoded = without_links("GET /r?to=HTTPS%3A%2F%2Fh.example%2Fcallback%2Ftoken123&n=2 failed");
        assert_eq!(encoded, "GET /r?to=<not a URL> failed");
        // Python's quote() keeps `/`; a scheme's colon alone encoded; a colon alone not.
        for mixed in ["https%3A//h.example/callback/token123", "https:%2F%2Fh.example%2Fcallback%2Ftoken123"] {
            let shown = without_links(&format!("to {mixed} failed"));
            assert!(!shown.contains("token123") && shown.ends_with(" failed"), "{shown}");
        }
        assert_eq!(without_links("http: is not a link, nor httpx://a"), "http: is not a link, nor httpx://a");
    }
}
