//! Families with fixed file names: cover images, WAV, music video.

use serde_json::Value;

use super::files::FileSet;
use super::value::{Object, first_non_blank};
use crate::Details;

/// `data.images[i]` -> `cover-<i+1>` (the position in the array, so a blank entry does not
/// shift the names of the others).
pub(super) fn cover_images(data: Option<&Object>, files: &mut FileSet) -> Details {
    let images = data.and_then(|d| d.get("images")).and_then(Value::as_array);
    for (i, url) in images.into_iter().flatten().take(super::MAX_TRACKS_OR_IMAGES).enumerate() {
        files.file(&format!("cover-{}", i + 1), Some(url).filter(|v| v.is_string()));
    }
    super::error_details(data).unwrap_or_default()
}

pub(super) fn wav(data: Option<&Object>, files: &mut FileSet) -> Details {
    if let Some(data) = data {
        files.file("wav", first_non_blank(data, &["audioWavUrl", "audio_wav_url"]));
    }
    super::error_details(data).unwrap_or_default()
}

pub(super) fn video(data: Option<&Object>, files: &mut FileSet) -> Details {
    if let Some(data) = data {
        files.file("video", first_non_blank(data, &["video_url", "videoUrl"]));
    }
    super::error_details(data).unwrap_or_default()
}
