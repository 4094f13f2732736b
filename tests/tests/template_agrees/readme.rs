//! README.md's own links (every `(#anchor)` names one of its headings, as GitHub makes a
//! heading's anchor, and its contents list every section) and its table of the `details` kinds.

use super::*;

/// A heading's anchor as GitHub makes it: lower case, code marks and punctuation dropped
/// (letters, digits, `-` and `_` kept), spaces as `-`.
fn anchor_of(heading: &str) -> String {
    let kept = heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .collect::<String>();
    kept.replace(' ', "-")
}

/// The `##` and `###` headings outside code blocks, with their level.
fn headings(readme: &str) -> Vec<(usize, String)> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if !in_code && (2..=3).contains(&level) && line[level..].starts_with(' ') {
            found.push((level, line[level + 1..].trim().to_owned()));
        }
    }
    found
}

#[test]
fn every_link_within_the_readme_names_a_heading_and_the_contents_list_them_all() {
    let readme = read(&repo().join("README.md"));
    let headings = headings(&readme);
    let anchors: BTreeSet<String> = headings.iter().map(|(_, h)| anchor_of(h)).collect();
    assert_eq!(anchors.len(), headings.len(), "two headings share an anchor");
    let mut links = BTreeSet::new();
    for (at, _) in readme.match_indices("](#") {
        let rest = &readme[at + 3..];
        links.insert(rest[..rest.find(')').unwrap_or(rest.len())].to_owned());
    }
    let broken: Vec<&String> = links.iter().filter(|l| !anchors.contains(*l)).collect();
    assert!(broken.is_empty(), "links to no heading: {broken:?}");
    // UPGRADING.md's links into README, too.
    let upgrading = read(&repo().join("UPGRADING.md"));
    let into_readme: Vec<&str> = upgrading
        .match_indices("](README.md#")
        .map(|(at, link)| {
            let rest = &upgrading[at + link.len()..];
            &rest[..rest.find(')').unwrap_or(rest.len())]
        })
        .collect();
    assert!(!into_readme.is_empty(), "UPGRADING.md links into README");
    let broken: Vec<&&str> = into_readme.iter().filter(|l| !anchors.contains(**l)).collect();
    assert!(broken.is_empty(), "UPGRADING.md links to no README heading: {broken:?}");
    // The contents: every section below it, in order, as a link.
    let listed: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "## Contents")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            l.trim_start().strip_prefix("- [")?.split_once("](#").map(|(_, a)| a.trim_end_matches(')').to_owned())
        })
        .collect();
    let sections: Vec<String> = headings.iter().filter(|(_, h)| h != "Contents").map(|(_, h)| anchor_of(h)).collect();
    assert_eq!(listed, sections, "README's contents list every section, in order");
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(anchor_of("The reconciler's resources"), "the-reconcilers-resources");
    assert_eq!(anchor_of("Answers, retries and the dead-letter queue"), "answers-retries-and-the-dead-letter-queue");
    assert_eq!(anchor_of("The `open-tasks` index"), "the-open-tasks-index");
}

/// Every field a key of `value` names, nested objects' and lists' too.
fn field_names(value: &serde_json::Value, names: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                names.insert(key.clone());
                field_names(inner, names);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| field_names(item, names)),
        _ => {}
    }
}

/// README's table of the `details` kinds names every kind the parser makes and every field
/// each has (serialized with all of them set), and the kind a pointer to kept details has.
#[test]
fn the_details_table_names_every_kind_and_field() {
    use suno_callbacks::Details;
    use suno_callbacks::event::{LyricsVariant, MidiInstrument, MidiNote, SeparationType, Track};
    let some = || Some("x".to_owned());
    let track = Track {
        id: "a".into(),
        name: "tracks/a".into(),
        title: some(),
        prompt: some(),
        model_name: some(),
        tags: some(),
        create_time: some(),
        duration: Some(1.0),
    };
    let note = MidiNote { pitch: 60, start: 0.0, end: 1.0, velocity: 1.0 };
    let kinds = [
        Details::Tracks { tracks: vec![track] },
        Details::Lyrics { variants: vec![LyricsVariant::default()] },
        Details::Separation { separation_type: Some(SeparationType::SplitStem) },
        Details::Midi { state: some(), instruments: vec![MidiInstrument { name: "piano".into(), notes: vec![note] }] },
        Details::Voice {
            voice_id: some(),
            status: some(),
            error_code: Some(1),
            error_message: some(),
            validate_info: Some(serde_json::json!({})),
        },
        Details::Error { error: "x".into() },
    ];
    // Every kind there is: a new one fails to build here until it is listed above.
    for details in &kinds {
        match details {
            Details::None => unreachable!("no kind is answered for none"),
            Details::Tracks { .. }
            | Details::Lyrics { .. }
            | Details::Separation { .. }
            | Details::Midi { .. }
            | Details::Voice { .. }
            | Details::Error { .. } => {}
        }
    }
    let readme = read(&repo().join("README.md"));
    let row = |kind: &str| readme.lines().find(|l| l.starts_with(&format!("| `{kind}` |"))).map(str::to_owned);
    for details in kinds {
        let json = serde_json::to_value(&details).unwrap();
        let kind = json["kind"].as_str().unwrap().to_owned();
        let row = row(&kind).unwrap_or_else(|| panic!("README's details table has no row for {kind}"));
        // The fields cell, each name a word of its own there (`id` is no part of `voice_id`).
        let fields = row.split('|').nth(3).unwrap_or_default();
        let words: BTreeSet<&str> = fields.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
        let mut names = BTreeSet::new();
        field_names(&json, &mut names);
        names.remove("kind");
        for name in names {
            assert!(words.contains(name.as_str()), "README's {kind} row does not name {name}: {row}");
        }
    }
    let kept_apart = stemvault_vault::ingest::DETAILS_KEPT_APART;
    assert!(row(kept_apart).is_some(), "README's details table has no row for {kept_apart}");
}

/// README's "The DynamoDB items" names every attribute the items are written with (the task
/// and file items' tables, the callback item's paragraph), and no attribute the code does
/// not write: a field added, renamed or dropped in the record shows here.
#[test]
fn the_item_schema_names_every_stored_attribute() {
    let readme = read(&repo().join("README.md"));
    let section = readme.split("\n### The DynamoDB items\n").nth(1).expect("README has The DynamoDB items");
    let section = section.split("\n### ").next().unwrap_or(section);
    let ticked = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    let mut documented = BTreeSet::new();
    let mut in_attribute_table = false;
    for line in section.lines() {
        let first_cell = line.strip_prefix('|').and_then(|rest| rest.split('|').next()).map(str::trim);
        match first_cell {
            Some("attribute") => in_attribute_table = true,
            Some(cell) if in_attribute_table => documented.extend(ticked(cell)),
            _ => in_attribute_table = false,
        }
    }
    let callback_item = section.split("**A callback item**").nth(1).expect("the callback item's paragraph");
    let callback_item = callback_item.split("\n\n").next().unwrap_or(callback_item);
    documented.extend(ticked(callback_item));
    let stored: BTreeSet<String> = stemvault_vault::items::attribute_names().into_iter().map(str::to_owned).collect();
    let undocumented: Vec<&String> = stored.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&stored).collect();
    assert!(undocumented.is_empty(), "attributes the README's item schema leaves out: {undocumented:?}");
    assert!(unknown.is_empty(), "attributes the README names that no item holds: {unknown:?}");
}

/// README's manifest example is a manifest as the code writes it: read as one and written
/// back, the same JSON (every field, in the order the code writes them).
#[test]
fn the_manifest_example_is_one_the_code_writes() {
    let examples: Vec<serde_json::Value> = stemvault_tests::readme_json_examples()
        .into_iter()
        .filter(|value| value.get("generated_at").is_some() && value.get("files").is_some())
        .collect();
    assert_eq!(examples.len(), 1, "README shows one manifest");
    let manifest: stemvault_vault::Manifest =
        serde_json::from_value(examples[0].clone()).unwrap_or_else(|e| panic!("{e}: {}", examples[0]));
    let written = serde_json::to_string(&manifest).unwrap();
    assert_eq!(written, examples[0].to_string(), "the same JSON, in the same order, as the code writes");
}
