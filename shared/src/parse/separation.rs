//! Vocal separation: one file per `<stem>_url` key of the info object.

use super::files::FileSet;
use super::names::{file_segment, url_key_stem};
use super::value::Object;
use crate::{Details, SeparationType};

/// docs.kie.ai English uses the first key; docs.sunoapi.org and docs.kie.ai Chinese the second.
const INFO_KEYS: [&str; 2] = ["vocal_separation_info", "vocal_removal_info"];

/// The most stems one body contributes: the providers document 14 (a body claiming thousands
/// would have as many items written and messages sent; the verbatim body keeps any more).
pub const MAX_STEMS: usize = 64;

/// Stems present in both separation types.
const COMMON_STEMS: [&str; 3] = ["vocal", "origin", "instrumental"];

pub(super) fn parse(data: Option<&Object>, files: &mut FileSet) -> Details {
    let info = data.and_then(|d| INFO_KEYS.iter().find_map(|k| d.get(*k)?.as_object()));
    for (key, url) in info.into_iter().flatten() {
        if files.len() >= MAX_STEMS {
            break;
        }
        if let Some(stem) = url_key_stem(key) {
            let stem = file_segment(&stem);
            let name = if stem.is_empty() { "stem" } else { &stem };
            files.file(name, Some(url).filter(|v| v.is_string()));
        }
    }
    let mut names = files.file_names();
    let separation_type = if names.clone().any(|n| n == "instrumental") {
        Some(SeparationType::SeparateVocal)
    } else if names.any(|n| !COMMON_STEMS.contains(&n)) {
        Some(SeparationType::SplitStem)
    } else {
        None
    };
    Details::Separation { separation_type }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(data: Value) -> (Vec<String>, Details) {
        let mut files = FileSet::default();
        let details = parse(data.as_object(), &mut files);
        let (files, _) = files.finish();
        (files.into_iter().map(|f| f.name).collect(), details)
    }

    #[test]
    fn a_body_brings_at_most_max_stems() {
        let info: serde_json::Map<String, Value> =
            (0..MAX_STEMS + 10).map(|i| (format!("s{i}_url"), json!(format!("https://h/{i}.mp3")))).collect();
        let (names, _) = run(json!({ "vocal_separation_info": info }));
        assert_eq!(names.len(), MAX_STEMS);
    }

    #[test]
    fn stems_and_type() {
        let (names, details) = run(json!({"vocal_removal_info":{
            "instrumental_url":"https://h/i.mp3","origin_url":"","vocal_url":"https://h/v.mp3"}}));
        assert_eq!(names, ["instrumental", "vocal"]);
        assert_eq!(details, Details::Separation { separation_type: Some(SeparationType::SeparateVocal) });

        let (names, details) = run(json!({"vocal_separation_info":{
            "origin_url":"https://h/o.mp3","vocal_url":"https://h/v.mp3","pianoUrl":"https://h/p.mp3",
            "extra":"https://h/not-a-url-key","drums_url":null,"bass_url":7}}));
        assert_eq!(names, ["origin", "vocal", "piano"]);
        assert_eq!(details, Details::Separation { separation_type: Some(SeparationType::SplitStem) });

        let (names, details) = run(json!({"vocal_separation_info":{"vocal_url":"https://h/v.mp3"}}));
        assert_eq!(names, ["vocal"]);
        assert_eq!(details, Details::Separation { separation_type: None });

        let (names, details) = run(json!({"vocal_separation_info":null}));
        assert!(names.is_empty());
        assert_eq!(details, Details::Separation { separation_type: None });
    }
}
