//! Collecting a body's files and streams under names unique within the body.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::names::unreserved;
use super::value::non_blank_str;
use crate::FileRef;

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
        let base = &unreserved(base);
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

    /// Record a stream URL (data, never downloaded) when `url` is a non-blank string.
    pub(super) fn stream(&mut self, name: &str, url: Option<&Value>) {
        if let Some(url) = non_blank_str(url) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_unique_and_blank_urls_dropped() {
        let mut set = FileSet::default();
        set.file("a", Some(&json!(" https://h/1 ")));
        set.file("a", Some(&json!("https://h/2")));
        set.file("a-2", Some(&json!("https://h/3")));
        set.file("b", Some(&json!("   ")));
        set.file("b", Some(&json!(null)));
        set.file("b", None);
        set.stream("a", Some(&json!("https://h/s")));
        let (files, streams) = set.finish();
        let names: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.url.as_str())).collect();
        assert_eq!(names, [("a", "https://h/1"), ("a-2", "https://h/2"), ("a-2-2", "https://h/3")]);
        assert_eq!(streams, [FileRef { name: "a-3".into(), url: "https://h/s".into() }]);
    }
}
