//! Unknown families: every http(s) URL under a URL-looking key, anywhere in the body.

use serde_json::Value;

use super::files::{FileSet, is_http};
use super::names::{distinct_segment, file_segment, snake_case, url_key_stem};
use super::value::Object;
use crate::Details;

/// How deep the walk goes below the root object.
pub const MAX_DEPTH: usize = 16;
/// How many URLs (files and streams together) one unknown body may contribute.
pub const MAX_URLS: usize = 256;

/// Keys naming where callbacks go, never a result (every spelling the API uses).
const CALLBACK_KEYS: [&str; 3] = ["callback", "call_back", "cal_back"];

pub(super) fn parse(root: &Object, files: &mut FileSet) -> Details {
    for (key, value) in root {
        let (context, segment) = classify(key);
        // Names are paths under `data`: its own segment is left out.
        let path = if key == "data" && value.is_object() { vec![] } else { vec![segment] };
        walk(value, path, context, 1, files);
    }
    super::error_details(root.get("data").and_then(Value::as_object)).unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    /// Strings here are ignored.
    Plain,
    /// Under a `*_url` key or in an `images` array: strings are files.
    File,
    /// Under a URL key mentioning `stream`: strings are streams.
    Stream,
}

fn walk(value: &Value, path: Vec<String>, context: Context, depth: usize, files: &mut FileSet) {
    if depth > MAX_DEPTH || files.len() >= MAX_URLS {
        return;
    }
    match value {
        Value::String(url) if context != Context::Plain && is_http(url) => {
            let name = if path.is_empty() { "file".to_owned() } else { path.join("/") };
            if context == Context::Stream {
                files.stream(&name, Some(value));
            } else {
                files.file(&name, Some(value));
            }
        }
        Value::Array(items) => {
            // Scalars hold nothing outside a URL context; past the limit nothing is taken.
            let holding = |item: &&Value| context != Context::Plain || item.is_array() || item.is_object();
            for (i, item) in items.iter().enumerate().filter(|(_, item)| holding(item)) {
                if files.len() >= MAX_URLS {
                    break;
                }
                let mut path = path.clone();
                match path.last_mut() {
                    Some(last) => last.push_str(&format!("-{}", i + 1)),
                    None => path.push(format!("item-{}", i + 1)),
                }
                walk(item, path, context, depth + 1, files);
            }
        }
        Value::Object(object) => {
            for (child_key, child) in object {
                if files.len() >= MAX_URLS {
                    break;
                }
                let (child_context, child_segment) = classify(child_key);
                let mut child_path = path.clone();
                child_path.push(child_segment);
                walk(child, child_path, child_context, depth + 1, files);
            }
        }
        _ => {}
    }
}

/// What a key makes of the value under it, and the key's name segment.
fn classify(key: &str) -> (Context, String) {
    match url_key_stem(key) {
        Some(stem) if CALLBACK_KEYS.contains(&stem.as_str()) => (Context::Plain, segment(key)),
        Some(stem) => {
            let context = if key.to_ascii_lowercase().contains("stream") { Context::Stream } else { Context::File };
            let segment = file_segment(&stem);
            (context, if segment.is_empty() { "file".to_owned() } else { segment })
        }
        None if key == "images" => (Context::File, segment(key)),
        None => (Context::Plain, segment(key)),
    }
}

fn segment(key: &str) -> String {
    let segment = distinct_segment(&snake_case(key));
    if segment.is_empty() { "_".to_owned() } else { segment }
}
