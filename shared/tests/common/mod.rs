//! Helpers shared by the integration tests: reading bodies and building expected events.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use suno_callbacks::{CallbackEvent, Details, Family, FileRef, Stage, TaskId, Track, parse_callback};

/// The documented example bodies shared by the whole project.
pub fn documented_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../fixtures/callbacks")
}

/// This crate's own bodies for the documented variants not given as files.
pub fn own_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The documented polling (record-info) answers shared by the whole project.
pub fn documented_polls_dir() -> PathBuf {
    documented_dir().join("../polls")
}

/// Our own record-info answers, built from the documentation's descriptions (shared with the
/// fake provider of the integration tests).
pub fn own_polls_dir() -> PathBuf {
    documented_polls_dir().join("own")
}

pub fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn parse_file(path: PathBuf) -> CallbackEvent {
    let body = read(path.clone());
    parse_callback(&body).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// The `.json` file names in `dir`, sorted.
pub fn json_files(dir: PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

pub fn file(name: &str, url: &str) -> FileRef {
    FileRef { name: name.to_owned(), url: url.to_owned() }
}

/// An expected event; `files`, `streams` and `details` are filled in by the caller.
pub fn event(task_id: &str, family: Family, stage: Stage, code: i64, message: &str) -> CallbackEvent {
    CallbackEvent {
        task_id: TaskId::parse(task_id).unwrap(),
        family,
        stage,
        code,
        message: message.to_owned(),
        files: vec![],
        streams: vec![],
        details: Details::None,
    }
}

/// Track metadata as the documentation examples carry it.
pub struct TrackMeta<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub title: &'a str,
    pub prompt: &'a str,
    pub model_name: &'a str,
    pub tags: Option<&'a str>,
    pub duration: f64,
}

pub fn track(meta: TrackMeta<'_>) -> Track {
    Track {
        id: meta.id.to_owned(),
        name: meta.name.to_owned(),
        title: Some(meta.title.to_owned()),
        prompt: Some(meta.prompt.to_owned()),
        model_name: Some(meta.model_name.to_owned()),
        tags: meta.tags.map(str::to_owned),
        create_time: Some("2025-01-01 00:00:00".to_owned()),
        duration: Some(meta.duration),
    }
}

/// Names of a list of files, for readable assertions.
pub fn names(files: &[FileRef]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}
