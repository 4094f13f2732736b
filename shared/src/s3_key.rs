//! The S3 key layout, in one place.
//!
//! ```text
//! tasks/<task_id>/<file name>[.<ext>]            a vaulted file (name may contain '/')
//! tasks/<task_id>/<start of name>(<sha256>)[.<ext>] a vaulted file whose key would be too long
//! tasks/<task_id>/callbacks/<stage>-<sha256>.json  every accepted callback body, verbatim (a polled answer: its callback URLs redacted)
//! tasks/<task_id>/details/<stage>-<sha256>.json    that body's results that are no files, as JSON, when too large for the task item
//! tasks/<task_id>/manifest.json                   written once the task's files are settled
//! ```
//!
//! File names come from [`crate::parse_callback`] and are made of safe segments already. A
//! name's last segment never ends in a known extension ([`ends_in_known_extension`]: such a
//! segment is hashed), so the extension a key gets from its URL cannot make two names' keys
//! equal (`vocal` with an `.mp3` URL and `vocal.mp3` with none).
//!
//! # Reserved names
//!
//! A file name never starts with a [reserved](RESERVED_FIRST_SEGMENTS) segment (`manifest`,
//! `callbacks` or `details`, alone or followed by `.`): the parser appends `-<8 hex of SHA-256 of the
//! segment>` to the reserved word (`manifest` -> `manifest-<hash>`, `manifest.json` ->
//! `manifest-<hash>.json`). So no file key equals
//! [`manifest_key`] or starts with [`callback_body_prefix`] or the task's `details/`, whatever
//! the body's keys say.
//!
//! # Long names
//!
//! S3 keys are at most [`MAX_KEY_BYTES`] bytes, and an accepted body can name a file far
//! longer than that (an unknown family nests up to 16 segments of up to 94 bytes, under a
//! task id of up to 128). A file whose key would be longer keeps the start of its name and
//! ends in `(<SHA-256 of the whole name, 64 hex digits>)` before its extension, cut so the
//! key is exactly [`MAX_KEY_BYTES`] long. The key depends only on the task id, the name and
//! the extension, so it is the same at every stage and in every run. Two different long
//! names never share a key (their hashes differ), and a shortened key never equals an
//! unshortened one: a name from [`crate::parse_callback`] holds `(` only when the parser
//! already shortened it the same way (to fit a table sort key), so an equal key would need
//! two names with one SHA-256.
//!
//! # Keys shaped like a body's
//!
//! The downloader's role may not touch a key shaped like an archived body or kept details
//! (`template.yaml`: `tasks/*/callbacks/*-` or `tasks/*/details/*-`, then 64 characters and
//! `.json`), and IAM's wildcards match `/`, so a file name with a later `callbacks` or
//! `details` segment (unknown families only) could make a file key of that shape: its
//! upload would be refused until the message was dead-lettered. Such a key is shortened as a
//! long one is, which ends it in `)` and the hash instead.

use sha2::{Digest, Sha256};

use crate::{Stage, TaskId};

/// The longest S3 key, in bytes (UTF-8).
pub const MAX_KEY_BYTES: usize = 1024;

/// What opens the hash at the end of a shortened name.
const SHORTENED_OPEN: char = '(';

/// Media types whose extension is kept on the key.
const KNOWN_EXTENSIONS: &[&str] = &["mp3", "wav", "png", "jpeg", "jpg", "webp", "mp4", "mid", "json"];

/// The prefix under which everything of one task lives, with a trailing `/`.
pub fn task_prefix(task_id: &TaskId) -> String {
    format!("{TASKS_DIR}{task_id}/")
}

/// Where every task's objects live, and, under a task's prefix, where its archived bodies,
/// its kept details and its manifest are.
const TASKS_DIR: &str = "tasks/";
const CALLBACKS_DIR: &str = "callbacks/";
const DETAILS_DIR: &str = "details/";
const MANIFEST_NAME: &str = "manifest.json";

/// First name segments a file may not have, because the task's own objects live there.
pub const RESERVED_FIRST_SEGMENTS: [&str; 3] = ["manifest", "callbacks", "details"];

/// Whether `name` starts with a reserved segment: `manifest`, `callbacks` or `details`, alone
/// or followed by `.` (`manifest.json`) or `/` (`callbacks/first-x`). Names from [`crate::parse_callback`]
/// never do.
pub fn is_reserved_name(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or(name);
    let stem = first.split('.').next().unwrap_or(first);
    RESERVED_FIRST_SEGMENTS.contains(&stem)
}

/// Whether `segment` ends in `.` and one of the extensions a key keeps (any case): a file
/// name's last segment from [`crate::parse_callback`] never does.
pub fn ends_in_known_extension(segment: &str) -> bool {
    segment.rsplit_once('.').is_some_and(|(_, ext)| known_extension(ext).is_some())
}

/// `ext` as the known extension it names (any case), if it names one.
fn known_extension(ext: &str) -> Option<&'static str> {
    KNOWN_EXTENSIONS.iter().copied().find(|known| known.eq_ignore_ascii_case(ext))
}

/// Where a file of a task is stored: `tasks/<task_id>/<name>[.<ext>]`, or, when that would
/// be longer than [`MAX_KEY_BYTES`], `tasks/<task_id>/<start of name>(<sha256 of name>)[.<ext>]`
/// (see [Long names](self#long-names)).
///
/// `name` must not be [reserved](is_reserved_name) nor end in a
/// [known extension](ends_in_known_extension) (names from [`crate::parse_callback`] never do),
/// so the key is never the manifest's nor under [`callback_body_prefix`], and no other name's.
/// A key that would be shaped like an archived body's is shortened as a long one is (see
/// [Keys shaped like a body's](self#keys-shaped-like-a-bodys)).
pub fn file_key(task_id: &TaskId, name: &str, url: &str) -> String {
    debug_assert!(!is_reserved_name(name), "reserved file name {name:?}");
    // Of the whole name: a `.` before a `/` gives an "extension" holding `/`, never a known one.
    debug_assert!(!ends_in_known_extension(name), "file name {name:?}");
    let suffix = extension_from_url(url).map(|ext| format!(".{ext}")).unwrap_or_default();
    let prefix = task_prefix(task_id);
    let key = format!("{prefix}{name}{suffix}");
    if key.len() <= MAX_KEY_BYTES && !looks_like_a_body_key(&key) {
        return key;
    }
    let shortened = shortened(name, MAX_KEY_BYTES.saturating_sub(prefix.len() + suffix.len()));
    format!("{prefix}{shortened}{suffix}")
}

/// Whether `key` may be a file's of `task_id`: under its [`task_prefix`], with no `.` or `..`
/// segment, not its manifest's, nor under [`callback_body_prefix`], nor a kept details key
/// ([`details_key`]'s shape), within [`MAX_KEY_BYTES`]. Every [`file_key`] is; one that is
/// not was edited by hand (or written by a faulty build), and the downloader would overwrite
/// another task's object, the task's manifest, a body or kept details with it. Looser than
/// what `file_key` gives today, so that keys earlier builds gave still read: reserved names
/// and body-shaped keys came later (before 2026-12-05 an unknown family's `details/<x>` file
/// was stored under `details/`, beside the kept details, whose names no file's could take).
pub fn is_file_key_of(task_id: &TaskId, key: &str) -> bool {
    // The name under the task's prefix, read without building any key: every read of a record
    // checks each of its files.
    let name =
        key.strip_prefix(TASKS_DIR).and_then(|k| k.strip_prefix(task_id.as_str())).and_then(|k| k.strip_prefix('/'));
    let Some(name) = name else { return false };
    !name.is_empty()
        && !name.split('/').any(|segment| segment == "." || segment == "..")
        && name != MANIFEST_NAME
        && !name.starts_with(CALLBACKS_DIR)
        && !name.strip_prefix(DETAILS_DIR).is_some_and(is_body_name)
        && key.len() <= MAX_KEY_BYTES
}

/// Whether `name` is an archived body's or kept details' file name: `<stage>-<64 hex
/// digits>.json` (or `unparsable-<64 hex digits>.json`), one segment.
fn is_body_name(name: &str) -> bool {
    let Some((_, hash)) = name.strip_suffix(".json").and_then(|stem| stem.rsplit_once('-')) else { return false };
    !name.contains('/') && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `key` has the shape the downloader's role is refused (see
/// [Keys shaped like a body's](self#keys-shaped-like-a-bodys)): `tasks/`, anything, a
/// `/callbacks/` or `/details/` segment, anything, `-`, any 64 bytes and `.json`. Every
/// body and kept details key has it; a file key, only from such a name. Bytes stand for IAM's
/// characters: keys are ASCII (task ids and names are).
fn looks_like_a_body_key(key: &str) -> bool {
    const HASH_LEN: usize = 64;
    let Some(stem) = key.strip_prefix("tasks/").and_then(|k| k.strip_suffix(".json")) else { return false };
    let Some(dash) = stem.len().checked_sub(HASH_LEN + 1) else { return false };
    let Some(before) = stem.get(..dash) else { return false };
    stem.as_bytes()[dash] == b'-' && ["/callbacks/", "/details/"].iter().any(|word| before.contains(word))
}

/// `text`'s start and `(<sha256 of text>)`, at most `max_bytes` long (the start cut on a
/// character boundary): the same text always gives the same result, and two long texts with
/// the same start differ.
pub(crate) fn shortened(text: &str, max_bytes: usize) -> String {
    let hash = hex_sha256(text);
    // `(` + 64 hex digits + `)`.
    let marker_len = hash.len() + 2;
    let mut cut = max_bytes.saturating_sub(marker_len).min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{SHORTENED_OPEN}{hash})", &text[..cut])
}

fn hex_sha256(text: &str) -> String {
    hex_of(&Sha256::digest(text.as_bytes()))
}

/// The first 8 lower-case hex digits of SHA-256(`text`): what tells apart names (and saved
/// file names) cut or cleaned to the same text.
pub fn short_sha256(text: &str) -> String {
    hex_of(&Sha256::digest(text.as_bytes())[..4])
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The prefix of every verbatim callback body of a task, with a trailing `/`.
pub fn callback_body_prefix(task_id: &TaskId) -> String {
    format!("{}{CALLBACKS_DIR}", task_prefix(task_id))
}

/// Where an accepted callback body is kept verbatim.
pub fn callback_body_key(task_id: &TaskId, stage: Stage, body_sha256_hex: &str) -> String {
    format!("tasks/{task_id}/callbacks/{stage}-{body_sha256_hex}.json")
}

/// Where a verified callback body the parser refuses is kept verbatim, beside the accepted
/// ones (its stage could not be read).
pub fn unparsable_body_key(task_id: &TaskId, body_sha256_hex: &str) -> String {
    format!("{}unparsable-{body_sha256_hex}.json", callback_body_prefix(task_id))
}

/// Where the results of a callback body that are no files (MIDI notes, say) are kept as JSON
/// when they are too large for the task item: named as the body is, outside `callbacks/` so
/// that a presigned link may reach them and never a body.
pub fn details_key(task_id: &TaskId, stage: Stage, body_sha256_hex: &str) -> String {
    format!("{}{stage}-{body_sha256_hex}.json", details_prefix(task_id))
}

/// The prefix of a task's kept details ([`details_key`]).
pub fn details_prefix(task_id: &TaskId) -> String {
    format!("{}{DETAILS_DIR}", task_prefix(task_id))
}

/// Where verified callbacks that could not be recorded wait (the table unavailable, too
/// contended or too slow): ingest parks them, the reconciler replays and deletes them.
pub const PARKED_PREFIX: &str = "parked/";

/// Where a verified callback body waits to be recorded: under [`PARKED_PREFIX`], named as its
/// archive will be ([`callback_body_key`]), so parking the same body twice keeps one copy.
pub fn parked_body_key(task_id: &TaskId, stage: Stage, body_sha256_hex: &str) -> String {
    format!("{}{stage}-{body_sha256_hex}.json", parked_task_prefix(task_id))
}

/// The prefix of every parked body of a task, with a trailing `/`.
pub fn parked_task_prefix(task_id: &TaskId) -> String {
    format!("{PARKED_PREFIX}{task_id}/")
}

/// Where the manifest of a settled task is written.
pub fn manifest_key(task_id: &TaskId) -> String {
    format!("{}{MANIFEST_NAME}", task_prefix(task_id))
}

/// The known extension a file's key ends in (lower-cased), else None: [`file_key`] adds one
/// only from its URL ([`extension_from_url`]), so it names the kind of file the URL promised.
pub fn key_extension(key: &str) -> Option<&'static str> {
    let last_segment = key.rsplit('/').next().unwrap_or(key);
    known_extension(last_segment.rsplit_once('.')?.1)
}

/// The extension of the URL's path when it names a known media type (lower-cased), else None.
/// The query string and fragment are ignored, so signed URLs work.
pub fn extension_from_url(url: &str) -> Option<&'static str> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    // The query and fragment first: one may hold a `/` where the URL has no path.
    let before_query = after_scheme.split(['?', '#']).next().unwrap_or("");
    let path = before_query.find('/').map_or("", |i| &before_query[i..]);
    key_extension(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TaskId {
        TaskId::parse(s).unwrap()
    }

    /// Every key `file_key` gives is a file key of its task (long and body-shaped names
    /// shortened too), and so is one an earlier build gave a name now reserved; another
    /// task's, the manifest's, a body's or details' is not.
    #[test]
    fn a_file_key_is_one_file_key_can_give() {
        let t = id("abc");
        let long = "n".repeat(2000);
        let body_shaped = format!("callbacks-x/callbacks/first-{}", "a".repeat(64));
        for (name, url) in
            [("vocal", "https://h/v.mp3"), ("tracks/e1/audio", "https://h/a"), (long.as_str(), "https://h/l.wav")]
        {
            assert!(is_file_key_of(&t, &file_key(&t, name, url)), "{name}");
        }
        assert!(is_file_key_of(&t, &file_key(&t, &body_shaped, "https://h/x.json")));
        assert!(is_file_key_of(&t, "tasks/abc/details.mp3") && is_file_key_of(&t, "tasks/abc/manifest"));
        // An unknown family's `details/<x>` file, as builds before 2026-12-05 stored it.
        assert!(is_file_key_of(&t, "tasks/abc/details/xUrl.mp3") && is_file_key_of(&t, "tasks/abc/details/a/b"));
        let body = callback_body_key(&t, crate::Stage::First, &"a".repeat(64));
        let details = details_key(&t, crate::Stage::First, &"a".repeat(64));
        for key in [
            "tasks/abd/vocal.mp3",
            "tasks/abc/",
            "tasks/abc",
            "vocal.mp3",
            "parked/abc/x",
            "tasks/abc/../abd/vocal.mp3",
            "tasks/abc/./vocal.mp3",
            "tasks/abc/a/..",
            &manifest_key(&t),
            &body,
            &details,
            &unparsable_body_key(&t, &"b".repeat(64)),
        ] {
            assert!(!is_file_key_of(&t, key), "{key}");
        }
        assert!(!is_file_key_of(&t, &format!("tasks/abc/{}", "n".repeat(MAX_KEY_BYTES))), "too long");
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
        assert_eq!(file_key(&t, "wav", "https://cdn.example?f=/x.wav"), "tasks/abc/wav", "no path");
        assert_eq!(file_key(&t, "wav", "https://cdn.example#/x.wav"), "tasks/abc/wav", "no path");
    }

    #[test]
    fn a_key_too_long_for_s3_is_shortened_with_the_hash_of_the_name() {
        // What an unknown family can name: 16 nested segments of 64 characters.
        let name = (0..16).map(|i| format!("{i:02}{}", "x".repeat(62))).collect::<Vec<_>>().join("/");
        let t = id(&"t".repeat(TaskId::MAX_LEN));
        let key = file_key(&t, &name, "https://h/a.jpeg");
        assert_eq!(key.len(), MAX_KEY_BYTES, "{key}");
        let hash = hex_sha256(&name);
        assert!(key.ends_with(&format!("({hash}).jpeg")), "{key}");
        let kept = key.strip_prefix(&task_prefix(&t)).unwrap().strip_suffix(&format!("({hash}).jpeg")).unwrap();
        assert!(name.starts_with(kept) && kept.len() > 800, "{kept}");
        assert_eq!(file_key(&t, &name, "https://h/b.jpeg?sig=1"), key, "the same name, the same key");
        assert_eq!(
            file_key(&t, &name, "https://h/b"),
            format!("{}{kept}{}({hash})", task_prefix(&t), &name[kept.len()..][..5])
        );

        // Up to the limit, a key is left as it is.
        let fits = "n".repeat(MAX_KEY_BYTES - task_prefix(&t).len() - ".mp3".len());
        assert_eq!(file_key(&t, &fits, "https://h/a.mp3"), format!("{}{fits}.mp3", task_prefix(&t)));
        let over = format!("{fits}n");
        let key = file_key(&t, &over, "https://h/a.mp3");
        assert_eq!(key.len(), MAX_KEY_BYTES);
        assert!(key.ends_with(&format!("({}).mp3", hex_sha256(&over))), "{key}");
    }

    #[test]
    fn a_long_name_is_cut_on_a_character_boundary() {
        let t = id("t");
        let name = "é".repeat(600);
        let key = file_key(&t, &name, "https://h/x.mp3");
        assert!(key.len() <= MAX_KEY_BYTES && key.len() >= MAX_KEY_BYTES - 1, "{}", key.len());
        assert!(key.ends_with(&format!("({}).mp3", hex_sha256(&name))));
    }

    #[test]
    fn every_known_extension() {
        for ext in KNOWN_EXTENSIONS {
            let url = format!("https://h/f.{}?X-Amz-Signature=x.y", ext.to_uppercase());
            assert_eq!(extension_from_url(&url), Some(*ext));
            assert_eq!(key_extension(&file_key(&id("t1"), "vocal", &url)), Some(*ext));
        }
        assert_eq!(key_extension(&file_key(&id("t1"), "vocal", "https://h/vocal.flac")), None);
        assert_eq!(key_extension(&file_key(&id("t1"), "a.b/vocal", "https://h/vocal")), None);
    }

    #[test]
    fn other_keys() {
        let t = id("2fac****9f72");
        assert_eq!(callback_body_key(&t, Stage::First, "ab12"), "tasks/2fac****9f72/callbacks/first-ab12.json");
        assert_eq!(details_key(&t, Stage::Final, "ab12"), "tasks/2fac****9f72/details/final-ab12.json");
        assert_eq!(manifest_key(&t), "tasks/2fac****9f72/manifest.json");
        assert_eq!(unparsable_body_key(&t, "ab12"), "tasks/2fac****9f72/callbacks/unparsable-ab12.json");
        assert_eq!(task_prefix(&t), "tasks/2fac****9f72/");
        assert!(callback_body_key(&t, Stage::Complete, "ab").starts_with(&callback_body_prefix(&t)));
        assert_eq!(parked_body_key(&t, Stage::Final, "ab12"), "parked/2fac****9f72/final-ab12.json");
        assert!(parked_body_key(&t, Stage::Final, "ab12").starts_with(PARKED_PREFIX));
        assert!(parked_body_key(&t, Stage::Final, "ab12").starts_with(&parked_task_prefix(&t)));
        assert_eq!(parked_task_prefix(&t), "parked/2fac****9f72/");
    }

    /// A file key that would have the shape the downloader's role is refused (a later
    /// `callbacks` or `details` segment, then `-`, 64 characters over any segments, `.json`)
    /// is shortened, which ends it otherwise; one character more or less, or another
    /// extension, and it is kept.
    #[test]
    fn a_file_key_shaped_like_a_body_s_is_shortened() {
        let t = id("t");
        let sha = "a".repeat(64);
        assert!(looks_like_a_body_key(&callback_body_key(&t, Stage::First, &sha)));
        assert!(looks_like_a_body_key(&details_key(&t, Stage::Final, &sha)));
        for word in ["callbacks", "details"] {
            let name = format!("a/{word}/k-{}/{}", "x".repeat(30), "y".repeat(33));
            assert!(looks_like_a_body_key(&format!("tasks/t/{name}.json")), "{name}");
            let key = file_key(&t, &name, "https://h/f.json");
            assert_eq!(key, format!("tasks/t/{name}({}).json", hex_sha256(&name)));
            assert!(!looks_like_a_body_key(&key));
            assert_eq!(file_key(&t, &name, "https://h/f.mp3"), format!("tasks/t/{name}.mp3"), "another extension");
            let shorter = name.replacen("/y", "/", 1);
            for kept in [format!("{name}y"), shorter, name.replace("k-", "kk")] {
                assert_eq!(file_key(&t, &kept, "https://h/f.json"), format!("tasks/t/{kept}.json"));
            }
        }
        let first_segment = format!("callbacks-1a2b3c4d/k-{}", "x".repeat(64));
        assert_eq!(file_key(&t, &first_segment, "https://h/f.json"), format!("tasks/t/{first_segment}.json"));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "reserved file name")]
    fn file_key_refuses_reserved_names_in_debug_builds() {
        file_key(&id("t1"), "manifest", "https://h/m.json");
    }

    #[test]
    fn reserved_names() {
        for name in [
            "manifest",
            "manifest.json",
            "callbacks",
            "callbacks/first-abc",
            "callbacks.first-abc",
            "manifest/x",
            "details",
            "details/xUrl",
        ] {
            assert!(is_reserved_name(name), "{name}");
        }
        let unreserved = [
            "manifests",
            "manifest-1a2b3c4d",
            "callbacks_x",
            "result/manifest",
            "tracks/callbacks/audio",
            "details_x",
            "",
        ];
        for name in unreserved {
            assert!(!is_reserved_name(name), "{name}");
        }
    }
}
