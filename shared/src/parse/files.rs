//! Collecting a body's files and streams under names unique within the body.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::names::unreserved;
use super::value::non_blank_str;
use crate::FileRef;

/// The longest file name: a file's table item is keyed `file#<name>`, and DynamoDB refuses a
/// sort key over 1,024 bytes (the callback would be refused for good). Room is left for a
/// `-<n>` suffix (at most `-256`: [`super::generic::MAX_URLS`]); every name that fitted
/// before without one is kept. Only an unknown family's deeply nested keys come near it.
pub const MAX_NAME_BYTES: usize = 1024 - "file#".len() - "-256".len();

#[derive(Default)]
pub(super) struct FileSet {
    taken: HashSet<String>,
    /// The last suffix tried per base, so a base repeated n times costs O(n), not O(n²).
    last_suffix: HashMap<String, u64>,
    files: Vec<FileRef>,
    streams: Vec<FileRef>,
}

impl FileSet {
    /// Claim `base`, or `base-2`, `base-3`... when it is taken; every later name built on the
    /// result (`<result>/audio`) is then unique too. A reserved first segment (`manifest`,
    /// `callbacks`) is renamed first, so every family's names stay clear of the task's own
    /// objects.
    pub(super) fn claim(&mut self, base: &str) -> String {
        let base = &bounded(unreserved(base));
        let mut name = base.clone();
        let n = self.last_suffix.entry(base.to_owned()).or_insert(1);
        while self.taken.contains(&name) {
            *n += 1;
            name = format!("{base}-{n}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// Record a file when `url` is a non-blank string (trimmed; not checked further).
    pub(super) fn file(&mut self, name: &str, url: Option<&Value>) {
        if let Some(url) = non_blank_str(url) {
            let name = self.claim(name);
            self.files.push(FileRef { name, url: url.to_owned() });
        }
    }

    /// Record a stream URL (data, never downloaded) when `url` is an `http` or `https` URL:
    /// `GET` hands streams back as links, and a `javascript:` one would run in a page that
    /// shows them.
    pub(super) fn stream(&mut self, name: &str, url: Option<&Value>) {
        if let Some(url) = non_blank_str(url).filter(|url| is_http(url)) {
            let name = self.claim(name);
            self.streams.push(FileRef { name, url: url.to_owned() });
        }
    }

    pub(super) fn len(&self) -> usize {
        self.files.len() + self.streams.len()
    }

    pub(super) fn file_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.files.iter().map(|f| f.name.as_str())
    }

    pub(super) fn finish(self) -> (Vec<FileRef>, Vec<FileRef>) {
        (self.files, self.streams)
    }
}

/// Whether `url` starts with `http://` or `https://` (any case, after leading blanks).
pub fn is_http(url: &str) -> bool {
    let url = url.trim_start().as_bytes();
    let starts = |scheme: &[u8]| url.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme));
    starts(b"http://") || starts(b"https://")
}

/// `name`, or when longer than [`MAX_NAME_BYTES`] its start and `(<sha256 of name>)`, as a
/// key too long for S3 is shortened ([`crate::s3_key::shortened`]).
fn bounded(name: String) -> String {
    if name.len() <= MAX_NAME_BYTES { name } else { crate::s3_key::shortened(&name, MAX_NAME_BYTES) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_name_too_long_for_a_sort_key_is_shortened_the_same_way_every_time() {
        let long = format!("{}é{}", "a".repeat(990), "/b".repeat(300));
        let other = format!("{long}/c");
        let mut set = FileSet::default();
        set.file(&long, Some(&json!("https://h/1")));
        set.file(&other, Some(&json!("https://h/2")));
        set.file("short", Some(&json!("https://h/3")));
        let (files, _) = set.finish();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert!(names[..2].iter().all(|n| n.len() <= MAX_NAME_BYTES && n.ends_with(')')), "{names:?}");
        assert_ne!(names[0], names[1], "two long names with the same start stay apart");
        assert!(names[0].starts_with(&"a".repeat(900)));
        assert_eq!(names[2], "short");
        let mut again = FileSet::default();
        again.file(&long, Some(&json!("https://h/1")));
        assert_eq!(again.finish().0[0].name, names[0], "the same name every delivery");
    }

    #[test]
    fn names_are_unique_and_blank_urls_and_streams_not_http_dropped() {
        let mut set = FileSet::default();
        set.file("a", Some(&json!(" https://h/1 ")));
        set.file("a", Some(&json!("https://h/2")));
        set.file("a-2", Some(&json!("https://h/3")));
        set.file("b", Some(&json!("   ")));
        set.file("b", Some(&json!(null)));
        set.file("b", None);
        set.stream("a", Some(&json!("https://h/s")));
        set.stream("c", Some(&json!("javascript:alert(1)")));
        set.stream("c", Some(&json!(" data:text/html,x")));
        let (files, streams) = set.finish();
        let names: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.url.as_str())).collect();
        assert_eq!(names, [("a", "https://h/1"), ("a-2", "https://h/2"), ("a-2-2", "https://h/3")]);
        assert_eq!(streams, [FileRef { name: "a-3".into(), url: "https://h/s".into() }]);
    }
}
