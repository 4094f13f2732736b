//! The S3 key layout, in one place.
//!
//! ```text
//! tasks/<task_id>/<file name>[.<ext>]            a vaulted file (name may contain '/')
//! tasks/<task_id>/callbacks/<stage>-<sha256>.json  every accepted callback body, verbatim
//! tasks/<task_id>/manifest.json                   written once the task's files are settled
//! ```
//!
//! File names come from [`crate::parse_callback`] and are made of safe segments already.

use crate::{Stage, TaskId};

/// Media types whose extension is kept on the key.
const KNOWN_EXTENSIONS: &[&str] = &["mp3", "wav", "png", "jpeg", "jpg", "webp", "mp4", "mid", "json"];

/// The prefix under which everything of one task lives, with a trailing `/`.
pub fn task_prefix(task_id: &TaskId) -> String {
    format!("tasks/{task_id}/")
}

/// Where a file of a task is stored: `tasks/<task_id>/<name>[.<ext>]`.
pub fn file_key(task_id: &TaskId, name: &str, url: &str) -> String {
    match extension_from_url(url) {
        Some(ext) => format!("tasks/{task_id}/{name}.{ext}"),
        None => format!("tasks/{task_id}/{name}"),
    }
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
    }
}
