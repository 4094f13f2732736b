//! The S3 key layout, in one place.
//!
//! ```text
//! tasks/<task_id>/<file name>[.<ext>]            a vaulted file (name may contain '/')
//! tasks/<task_id>/callbacks/<stage>-<sha256>.json  every accepted callback body, verbatim
//! tasks/<task_id>/manifest.json                   written once the task's files are settled
//! ```
//!
//! File names come from [`crate::parse_callback`] and are made of safe segments already.
//!
//! # Reserved names
//!
//! A file name never starts with a [reserved](RESERVED_FIRST_SEGMENTS) segment (`manifest` or
//! `callbacks`, alone or followed by `.`): the parser appends `-<8 hex of SHA-256 of the
//! segment>` to the reserved word (`manifest` -> `manifest-<hash>`, `manifest.json` ->
//! `manifest-<hash>.json`). So no file key equals
//! [`manifest_key`] or starts with [`callback_body_prefix`], whatever the body's keys say.

use crate::{Stage, TaskId};

/// Media types whose extension is kept on the key.
const KNOWN_EXTENSIONS: &[&str] = &["mp3", "wav", "png", "jpeg", "jpg", "webp", "mp4", "mid", "json"];

/// The prefix under which everything of one task lives, with a trailing `/`.
pub fn task_prefix(task_id: &TaskId) -> String {
    format!("tasks/{task_id}/")
}

/// First name segments a file may not have, because the task's own objects live there.
pub const RESERVED_FIRST_SEGMENTS: [&str; 2] = ["manifest", "callbacks"];

/// Whether `name` starts with a reserved segment: `manifest` or `callbacks`, alone or followed
/// by `.` (`manifest.json`) or `/` (`callbacks/first-x`). Names from [`crate::parse_callback`]
/// never do.
pub fn is_reserved_name(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or(name);
    let stem = first.split('.').next().unwrap_or(first);
    RESERVED_FIRST_SEGMENTS.contains(&stem)
}

/// Where a file of a task is stored: `tasks/<task_id>/<name>[.<ext>]`.
///
/// `name` must not be [reserved](is_reserved_name) (names from [`crate::parse_callback`] never
/// are), so the key is never the manifest's nor under [`callback_body_prefix`].
pub fn file_key(task_id: &TaskId, name: &str, url: &str) -> String {
    debug_assert!(!is_reserved_name(name), "reserved file name {name:?}");
    match extension_from_url(url) {
        Some(ext) => format!("tasks/{task_id}/{name}.{ext}"),
        None => format!("tasks/{task_id}/{name}"),
    }
}

/// The prefix of every verbatim callback body of a task, with a trailing `/`.
pub fn callback_body_prefix(task_id: &TaskId) -> String {
    format!("tasks/{task_id}/callbacks/")
}

/// Where an accepted callback body is kept verbatim.
pub fn callback_body_key(task_id: &TaskId, stage: Stage, body_sha256_hex: &str) -> String {
    format!("tasks/{task_id}/callbacks/{stage}-{body_sha256_hex}.json")
}

/// Where the manifest of a settled task is written.
pub fn manifest_key(task_id: &TaskId) -> String {
    format!("tasks/{task_id}/manifest.json")
}

/// The extension of the URL's path when it names a known media type (lower-cased), else None.
/// The query string and fragment are ignored, so signed URLs work.
pub fn extension_from_url(url: &str) -> Option<&'static str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_more = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path_and_more.split(['?', '#']).next().unwrap_or("");
    let last_segment = path.rsplit('/').next().unwrap_or("");
    let (_, ext) = last_segment.rsplit_once('.')?;
    let ext = ext.to_ascii_lowercase();
    KNOWN_EXTENSIONS.iter().copied().find(|known| *known == ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TaskId {
        TaskId::parse(s).unwrap()
    }

    #[test]
    fn file_keys_keep_known_extensions_only() {
        let t = id("abc");
        assert_eq!(file_key(&t, "vocal", "https://h/s/x_Vocals.mp3"), "tasks/abc/vocal.mp3");
        assert_eq!(file_key(&t, "cover-1", "https://h/s/1.PNG?X-Amz-Signature=z"), "tasks/abc/cover-1.png");
        assert_eq!(file_key(&t, "tracks/e1/audio", "https://h/a.jpeg#f"), "tasks/abc/tracks/e1/audio.jpeg");
        assert_eq!(file_key(&t, "video", "https://h/stream"), "tasks/abc/video");
        assert_eq!(file_key(&t, "video", "https://h/a.exe"), "tasks/abc/video");
        assert_eq!(file_key(&t, "video", "https://h.mp3"), "tasks/abc/video");
        assert_eq!(file_key(&t, "video", "video_url_847715e66259"), "tasks/abc/video");
        assert_eq!(file_key(&t, "midi", "https://h/dir.mp3/file"), "tasks/abc/midi");
    }

    #[test]
    fn every_known_extension() {
        for ext in KNOWN_EXTENSIONS {
            assert_eq!(extension_from_url(&format!("https://h/f.{ext}")), Some(*ext));
        }
    }

    #[test]
    fn other_keys() {
        let t = id("2fac****9f72");
        assert_eq!(callback_body_key(&t, Stage::First, "ab12"), "tasks/2fac****9f72/callbacks/first-ab12.json");
        assert_eq!(manifest_key(&t), "tasks/2fac****9f72/manifest.json");
        assert_eq!(task_prefix(&t), "tasks/2fac****9f72/");
        assert!(callback_body_key(&t, Stage::Complete, "ab").starts_with(&callback_body_prefix(&t)));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "reserved file name")]
    fn file_key_refuses_reserved_names_in_debug_builds() {
        file_key(&id("t1"), "manifest", "https://h/m.json");
    }

    #[test]
    fn reserved_names() {
        for name in
            ["manifest", "manifest.json", "callbacks", "callbacks/first-abc", "callbacks.first-abc", "manifest/x"]
        {
            assert!(is_reserved_name(name), "{name}");
        }
        for name in ["manifests", "manifest-1a2b3c4d", "callbacks_x", "result/manifest", "tracks/callbacks/audio", ""] {
            assert!(!is_reserved_name(name), "{name}");
        }
    }
}
