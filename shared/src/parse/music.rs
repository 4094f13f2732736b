//! The seven music-track families: `data.data[]` tracks.

use serde_json::Value;

use super::files::FileSet;
use super::names::track_segment;
use super::value::{Object, f64_of, non_blank_str, storable, string_field, text_field};
use crate::{Details, Track};

/// What a track field holds.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    File,
    /// A live stream URL: data, never downloaded.
    Stream,
}

/// Track URL fields, each in its two spellings, and the name suffix they get.
const URL_FIELDS: [(&str, &str, &str, Kind); 6] = [
    ("audio_url", "audioUrl", "audio", Kind::File),
    ("source_audio_url", "sourceAudioUrl", "source_audio", Kind::File),
    ("stream_audio_url", "streamAudioUrl", "stream", Kind::Stream),
    ("source_stream_audio_url", "sourceStreamAudioUrl", "source_stream", Kind::Stream),
    ("image_url", "imageUrl", "cover", Kind::File),
    ("source_image_url", "sourceImageUrl", "source_cover", Kind::File),
];

/// Whether `name` is a track's `source_audio` or `source_cover` (the `source_*` URL fields'
/// files), which the music record-info answers never carry.
pub(crate) fn is_source_file(name: &str) -> bool {
    let Some((track, suffix)) = name.rsplit_once('/') else { return false };
    track.starts_with("tracks/")
        && URL_FIELDS.iter().any(|&(key, _, s, kind)| kind == Kind::File && key.starts_with("source_") && s == suffix)
}

/// The track items of a body's `data.data`: its array, or one track not wrapped in an array
/// (no documented body has it: read as one, not dropped with its files), an object with an
/// `id` or a URL field of a track's (an empty object is no track).
pub(super) fn track_items(data: &Object) -> &[Value] {
    match data.get("data") {
        Some(Value::Array(items)) => items,
        Some(one @ Value::Object(item))
            if item.contains_key("id")
                || URL_FIELDS.iter().any(|(key, camel, ..)| item.contains_key(*key) || item.contains_key(*camel)) =>
        {
            std::slice::from_ref(one)
        }
        _ => &[],
    }
}

pub(super) fn parse(data: Option<&Object>, files: &mut FileSet) -> Details {
    let items = data.map(track_items).unwrap_or_default();
    let mut tracks = Vec::new();
    for (position, item) in items.iter().take(super::MAX_TRACKS_OR_IMAGES).enumerate() {
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
    let segment = track_segment(id.trim());
    let segment = if segment.is_empty() { format!("track-{position}") } else { segment };
    let name = files.claim(&format!("tracks/{segment}"));
    // Document order; of a field's two spellings the first non-blank one counts.
    let mut done = [false; URL_FIELDS.len()];
    for (key, url) in item {
        let Some(i) = URL_FIELDS.iter().position(|f| f.0 == key || f.1 == key) else { continue };
        if done[i] || non_blank_str(Some(url)).is_none() {
            continue;
        }
        done[i] = true;
        let (_, _, suffix, kind) = URL_FIELDS[i];
        match kind {
            Kind::File => files.file(&format!("{name}/{suffix}"), Some(url)),
            Kind::Stream => files.stream(&format!("{name}/{suffix}"), Some(url)),
        }
    }
    Track {
        id,
        name,
        title: string_field(item, &["title"]),
        prompt: string_field(item, &["prompt"]),
        model_name: string_field(item, &["model_name", "modelName"]),
        tags: string_field(item, &["tags"]),
        create_time: text_field(item, &["createTime", "create_time"]),
        duration: f64_of(item.get("duration")).and_then(storable),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One track not wrapped in an array is read as one, in a success, in a failure whose
    /// message names lyrics, and in sunoapi's spelling of the task id; an empty object is no
    /// track (a failure keeps its error text).
    #[test]
    fn a_lone_track_not_in_an_array_is_read_as_one() {
        let lone = json!({"id": "a", "audio_url": "https://h/a.mp3"});
        let bodies = [
            json!({"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "t", "data": lone}}),
            json!({"code": 451, "msg": "Lyrics generation failed",
                   "data": {"callbackType": "complete", "task_id": "t", "data": lone}}),
            json!({"code": 200, "msg": "ok", "data": {"callbackType": "complete", "taskId": "t", "data": lone}}),
        ];
        for body in bodies {
            let event = crate::parse_callback(body.to_string().as_bytes()).expect("a callback");
            let names: Vec<&str> = event.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!((event.family, names), (crate::Family::Music, vec!["tracks/a/audio"]), "{body}");
        }
        let failed = json!({"code": 501, "msg": "failed",
            "data": {"callbackType": "error", "task_id": "t", "data": {}, "error": "the reason"}});
        let event = crate::parse_callback(failed.to_string().as_bytes()).expect("a callback");
        assert!(matches!(event.details, Details::Error { .. }), "{:?}", event.details);
    }

    #[test]
    fn a_track_time_in_milliseconds_is_kept_as_text() {
        let data =
            json!({"data": [{"id": "t1", "createTime": 1753782854000_u64}, {"id": "t2", "createTime": "2025-01-01"}]});
        let Details::Tracks { tracks } = parse(data.as_object(), &mut FileSet::default()) else { panic!("tracks") };
        let times: Vec<_> = tracks.iter().map(|t| t.create_time.as_deref()).collect();
        assert_eq!(times, [Some("1753782854000"), Some("2025-01-01")]);
    }
}
