//! The seven music-track families: `data.data[]` tracks.

use serde_json::Value;

use super::files::FileSet;
use super::names::sanitize_segment;
use super::value::{Object, f64_of, first_non_blank, string_field};
use crate::{Details, Track};

/// Track fields holding files: (snake_case key, camelCase key, name suffix).
const FILE_FIELDS: [(&str, &str, &str); 4] = [
    ("audio_url", "audioUrl", "audio"),
    ("image_url", "imageUrl", "cover"),
    ("source_audio_url", "sourceAudioUrl", "source_audio"),
    ("source_image_url", "sourceImageUrl", "source_cover"),
];

/// Track fields holding live stream URLs: data, never downloaded.
const STREAM_FIELDS: [(&str, &str, &str); 2] = [
    ("stream_audio_url", "streamAudioUrl", "stream"),
    ("source_stream_audio_url", "sourceStreamAudioUrl", "source_stream"),
];

pub(super) fn parse(data: Option<&Object>, files: &mut FileSet) -> Details {
    let items = data.and_then(|d| d.get("data")).and_then(Value::as_array);
    let mut tracks = Vec::new();
    for (position, item) in items.into_iter().flatten().enumerate() {
        let Some(item) = item.as_object() else { continue };
        tracks.push(track(item, position + 1, files));
    }
    if tracks.is_empty()
        && let Some(error) = super::error_details(data)
    {
        return error;
    }
    Details::Tracks { tracks }
}

fn track(item: &Object, position: usize, files: &mut FileSet) -> Track {
    let id = match item.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let segment = sanitize_segment(id.trim());
    let segment = if segment.is_empty() { format!("track-{position}") } else { segment };
    let name = files.claim(&format!("tracks/{segment}"));
    for (snake, camel, suffix) in FILE_FIELDS {
        files.file(&format!("{name}/{suffix}"), first_non_blank(item, &[snake, camel]));
    }
    for (snake, camel, suffix) in STREAM_FIELDS {
        files.stream(&format!("{name}/{suffix}"), first_non_blank(item, &[snake, camel]));
    }
    Track {
        id,
        name,
        title: string_field(item, &["title"]),
        prompt: string_field(item, &["prompt"]),
        model_name: string_field(item, &["model_name", "modelName"]),
        tags: string_field(item, &["tags"]),
        create_time: string_field(item, &["createTime", "create_time"]),
        duration: f64_of(item.get("duration")),
    }
}
