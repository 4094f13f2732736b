//! Whether a source's 200 can be the file at all, from its Content-Type and the kind of file
//! its key names.
//!
//! Some hosts answer a file that is missing or not ready with a success: an HTML page (file
//! not found, a CDN's challenge or maintenance page) or, behind an API gateway, a JSON error
//! (`{"code": 404, "msg": "..."}`). Stored, it would settle the task `complete` with a page
//! where the audio should be. No file a provider serves is HTML, and none whose URL names a
//! media extension (`.mp3`, `.png`, `.mp4`, ...) is a JSON or XML document. An answer is
//! refused when its Content-Type says it is not the file, or when its first bytes are such a
//! page or document whatever its Content-Type said ([`page_by_its_bytes`]: no audio, video or
//! image format starts so); never one that merely fails to say what it is.

use suno_callbacks::s3_key;

/// The media type an answer of `content_type` says it is when that cannot be the file stored
/// at `key` (None: it may be): what a refusal names, never the header's parameters, the
/// source's free text.
pub fn not_the_file(content_type: &str, key: &str) -> Option<String> {
    let essence = essence(content_type);
    let page = matches!(essence.as_str(), "text/html" | "application/xhtml+xml");
    let document = essence.ends_with("+json")
        || matches!(essence.as_str(), "application/json" | "text/json" | "application/xml" | "text/xml");
    (page || (document && names_media(key))).then_some(essence)
}

/// Whether `key` names a file by an extension other than JSON's (`.mp3`, `.png`, ...): a file
/// no JSON or XML document can be.
fn names_media(key: &str) -> bool {
    s3_key::key_extension(key).is_some_and(|ext| ext != "json")
}

/// How many of a body's first bytes [`page_by_its_bytes`] reads.
pub const HEAD_BYTES: usize = 64;

/// What a body's first bytes (`head`, up to [`HEAD_BYTES`]) say it is when that cannot be the
/// file stored at `key`, whatever its Content-Type said (`application/octet-stream`, or
/// none): an HTML page (`<!doctype html`, `<html`, ...) for any key, an XML or JSON document
/// (`<?xml`, S3's `<Error>`, `{"`) for a key naming a media extension. Read past a UTF-8 byte
/// order mark and white space; None while `head` is too short to tell, and for every media
/// format (MP3's `ID3` or frame sync, `RIFF`, `ftyp`, PNG's and JPEG's signatures).
pub fn page_by_its_bytes(head: &[u8], key: &str) -> Option<&'static str> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &head[start..];
    let starts = |marker: &[u8]| head.get(..marker.len()).is_some_and(|h| h.eq_ignore_ascii_case(marker));
    if [&b"<!doctype html"[..], b"<html", b"<head", b"<body"].into_iter().any(starts) {
        return Some("an HTML page");
    }
    if !names_media(key) {
        return None;
    }
    if starts(b"<?xml") || starts(b"<error") {
        return Some("an XML document");
    }
    let json = head.first() == Some(&b'{') && head[1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'"');
    json.then_some("a JSON document")
}

/// The type a copy is stored and recorded with: the source's when it names media a browser
/// shows but never runs (audio, video, an image other than SVG, JSON), else None. A host's
/// `image/svg+xml` on a `.png` or `text/plain` on a `.wav` is not kept: stored, it would be
/// served with the object (links force a download, but a CDN or website in front of the
/// bucket would render it), and it says nothing true of a media file. The generic binary
/// types are None too: they say no more than none does, and S3 shows one of them for an
/// object stored without a type (PutObject's SDK sends `application/octet-stream`, a
/// multipart upload gets `binary/octet-stream`), so an earlier attempt's copy found later
/// records what a fresh copy of the same source records.
///
/// Only the media type is kept (`audio/mpeg`, lower case), never the rest of the header: a
/// proxy's merged `audio/mpeg, image/svg+xml` is read by its first type here and by its last
/// in a browser.
pub fn stored_type(content_type: Option<String>) -> Option<String> {
    let essence = media_type(content_type?.as_bytes())?;
    let (kind, _) = essence.split_once('/')?;
    let shown = matches!(kind, "audio" | "video") || (kind == "image" && essence != "image/svg+xml");
    (shown || essence == "application/json").then_some(essence)
}

/// A media type without its parameters, lower case: its leading `type/subtype` characters
/// (`Text/HTML; charset=utf-8`, a proxy's merged `text/html, text/html`, and `text/html`
/// followed by a byte no media type holds: `text/html`).
fn essence(content_type: &str) -> String {
    media_type(content_type.as_bytes()).unwrap_or_default()
}

/// The media type `raw` (a Content-Type's bytes, as sent) starts with, lower case: the
/// token characters and `/` after any leading white space, if they are one type and one
/// subtype, neither empty: what the source keeps of a Content-Type too long or not printable
/// to keep whole, and what [`not_the_file`] reads.
pub fn media_type(raw: &[u8]) -> Option<String> {
    let is_token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(b);
    let start = raw.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(raw.len());
    let len = raw[start..].iter().take_while(|b| is_token(b)).count();
    let media_type = std::str::from_utf8(&raw[start..start + len]).ok()?;
    let (kind, subtype) = media_type.split_once('/')?;
    let well_formed = !kind.is_empty() && !subtype.is_empty() && !subtype.contains('/');
    well_formed.then(|| media_type.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{not_the_file, page_by_its_bytes, stored_type};

    #[test]
    fn a_page_or_an_error_document_is_told_by_its_first_bytes() {
        let pages: [&[u8]; 4] =
            [b"<!DOCTYPE html><html>", b"\xEF\xBB\xBF\r\n  <html lang=en>", b"<HEAD><title>", b"<body>"];
        for page in pages {
            for key in ["tasks/t/vocal.mp3", "tasks/t/data"] {
                assert_eq!(page_by_its_bytes(page, key), Some("an HTML page"), "{key}: {page:?}");
            }
        }
        let documents: [(&[u8], &str); 4] = [
            (b"<?xml version=\"1.0\"?><Error>", "an XML document"),
            (b"<Error><Code>AccessDenied</Code>", "an XML document"),
            (b"{\"code\":404,\"msg\":\"not found\"}", "a JSON document"),
            (b" {\n  \"error\": 1", "a JSON document"),
        ];
        for (document, kind) in documents {
            assert_eq!(page_by_its_bytes(document, "tasks/t/cover-1.png"), Some(kind), "{document:?}");
            // A key without a media extension (an unknown family's file), or a JSON one, may be one.
            assert_eq!(page_by_its_bytes(document, "tasks/t/data"), None, "{document:?}");
            assert_eq!(page_by_its_bytes(document, "tasks/t/midi.json"), None, "{document:?}");
        }
        let media: [&[u8]; 8] = [
            b"ID3\x04\x00\x00\x00",
            b"\xFF\xFB\x90\x64",
            b"RIFF\x24\x08\x00\x00WAVEfmt ",
            b"\x00\x00\x00\x20ftypisom",
            b"\x89PNG\r\n\x1a\n",
            b"\xFF\xD8\xFF\xE0",
            b"{",
            b"   ",
        ];
        for bytes in media {
            assert_eq!(page_by_its_bytes(bytes, "tasks/t/vocal.mp3"), None, "{bytes:?}");
        }
    }

    #[test]
    fn media_types_are_kept_and_others_stored_as_none() {
        for kept in ["audio/mpeg", "video/mp4", "image/png", "image/webp", "application/json"] {
            assert_eq!(stored_type(Some(kept.into())).as_deref(), Some(kept), "{kept}");
        }
        // The media type alone: a merged header's other types (a browser reads the last) go.
        for (sent, kept) in [
            ("Audio/WAV; rate=44100", "audio/wav"),
            ("audio/mpeg, image/svg+xml", "audio/mpeg"),
            ("image/png,text/html", "image/png"),
        ] {
            assert_eq!(stored_type(Some(sent.into())).as_deref(), Some(kept), "{sent}");
        }
        for dropped in [
            "application/octet-stream",
            "binary/octet-stream",
            "Application/Octet-Stream; x=1",
            // What a browser would run or render served from the bucket.
            "image/svg+xml",
            "Image/SVG+XML; charset=utf-8",
            "text/plain",
            "text/javascript",
            "application/pdf",
            "application/x-shockwave-flash",
            "audio",
            "",
        ] {
            assert_eq!(stored_type(Some(dropped.into())), None, "{dropped}");
        }
        assert_eq!(stored_type(None), None);
    }

    #[test]
    fn pages_and_error_documents_are_not_the_file() {
        for (content_type, key) in [
            ("text/html", "tasks/t/vocal.mp3"),
            ("Text/HTML; charset=utf-8", "tasks/t/vocal"),
            ("application/xhtml+xml", "tasks/t/notes.json"),
            ("application/json", "tasks/t/vocal.mp3"),
            ("application/problem+json", "tasks/t/cover.png"),
            (" application/xml ", "tasks/t/video.mp4"),
            ("text/xml;charset=UTF-8", "tasks/t/vocal.WAV"),
            // A proxy's two headers merged, and a byte no media type holds after it.
            ("text/html, text/html", "tasks/t/vocal.mp3"),
            ("text/html\u{80}", "tasks/t/vocal.mp3"),
        ] {
            // Named by its media type alone, in lower case.
            let named = not_the_file(content_type, key);
            let bare = |t: &String| !t.contains([';', ',', ' ', '\u{80}']) && *t == t.to_ascii_lowercase();
            assert!(named.as_ref().is_some_and(bare), "{content_type} for {key}: {named:?}");
        }
    }

    #[test]
    fn a_media_type_is_a_type_and_a_subtype() {
        use super::media_type;
        assert_eq!(media_type(b" Text/HTML; charset=x").as_deref(), Some("text/html"));
        assert_eq!(media_type(b"text/html\x80").as_deref(), Some("text/html"));
        for malformed in [&b"/"[..], b"a/", b"/b", b"a/b/c", b"audio", b"", b"\x80text/html"] {
            assert_eq!(media_type(malformed), None, "{:?}", String::from_utf8_lossy(malformed));
        }
    }

    #[test]
    fn whatever_could_be_the_file_passes() {
        for (content_type, key) in [
            ("audio/mpeg", "tasks/t/vocal.mp3"),
            ("application/octet-stream", "tasks/t/vocal.mp3"),
            ("binary/octet-stream", "tasks/t/vocal.wav"),
            // A misconfigured host's default type: the file may well be behind it.
            ("text/plain", "tasks/t/vocal.wav"),
            ("image/svg+xml", "tasks/t/cover.png"),
            ("application/json", "tasks/t/lyrics.json"),
            // No known extension: a JSON file of a family stemvault does not know may be one.
            ("application/json", "tasks/t/vocal"),
            ("", "tasks/t/vocal.mp3"),
        ] {
            assert_eq!(not_the_file(content_type, key), None, "{content_type} for {key}");
        }
    }
}
