//! The canonical event: what one callback body means, whatever its family or dialect.

use serde::{Deserialize, Serialize};

use crate::{Stage, TaskId};

/// One callback, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackEvent {
    pub task_id: TaskId,
    pub family: Family,
    pub stage: Stage,
    /// The envelope `code` (anything but 200 is a failure of the task; so is a 200 under stage
    /// `error`: a failure only the results say).
    pub code: i64,
    /// The envelope `msg` (empty when absent); for a failure only the results say (a voice
    /// status, lyrics whose every variant failed), their error message when they carry one.
    pub message: String,
    /// Files to copy, each with a name that is stable across stages and dialects and unique
    /// within the task. Never contains empty URLs or stream URLs.
    pub files: Vec<FileRef>,
    /// Live stream URLs (`stream_audio_url`, `source_stream_audio_url`): data, never files.
    pub streams: Vec<FileRef>,
    /// Non-file results (track metadata, lyrics texts, MIDI notes, voice ids).
    pub details: Details,
}

impl CallbackEvent {
    /// The only universal success signal is `code == 200`; an `error` stage also fails.
    pub fn succeeded(&self) -> bool {
        self.code == 200 && self.stage != Stage::Error
    }

    /// Whether the family is only read from a failure's shape: a failure read as music (the
    /// parser's fallback for any `callbackType` body), or as lyrics without variants and
    /// without its message naming lyrics (a `callbackType "complete"` failure without items,
    /// as docs.kie.ai's lyrics failure is): such bodies carry nothing of their family's own.
    pub fn family_is_a_guess(&self) -> bool {
        failure_family_is_a_guess(self.family, self.succeeded(), &self.message, !self.details.is_empty())
    }
}

/// [`CallbackEvent::family_is_a_guess`] of a failure's `family` and `message`, and whether it
/// has details that say something ([`Details::is_empty`]) (or of a success: never).
pub fn failure_family_is_a_guess(family: Family, succeeded: bool, message: &str, has_details: bool) -> bool {
    !succeeded
        && match family {
            Family::Music => true,
            // Lyrics whose every variant failed are a failure with items: lyrics for sure.
            Family::Lyrics => !has_details && !crate::parse::names_lyrics(message),
            _ => false,
        }
}

/// A file to vault: a stable, readable name (for example `vocal`, `drums`,
/// `tracks/<track id>/audio`, `wav`, `video`, `cover-1`) and the URL it is fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRef {
    pub name: String,
    pub url: String,
}

/// Which kind of task sent the callback.
///
/// The seven music-track endpoints (generate, extend, upload-and-cover, upload-and-extend,
/// add-instrumental, add-vocals, replace-section) send bodies of one shape that says nothing
/// about which endpoint produced them, so they share [`Family::Music`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Discriminants 0, 1, ... in declaration order, which `Family::ALL`'s length and test count on.
#[repr(u8)]
pub enum Family {
    Music,
    Lyrics,
    CoverImage,
    Wav,
    VocalSeparation,
    Midi,
    MusicVideo,
    Voice,
    /// Stays last: [`Family::ALL`]'s length is counted by it.
    Unknown,
}

impl Family {
    /// Every family, in declaration order. Its length is `Unknown`'s place plus one, so a
    /// variant declared before `Unknown` and not listed here does not compile; what is read
    /// back by name ([`FromStr`](std::str::FromStr)) and what tests iterate comes from here.
    pub const ALL: [Family; Family::Unknown as usize + 1] = [
        Family::Music,
        Family::Lyrics,
        Family::CoverImage,
        Family::Wav,
        Family::VocalSeparation,
        Family::Midi,
        Family::MusicVideo,
        Family::Voice,
        Family::Unknown,
    ];

    /// Its stored name (serde's, as `snake_case`; a test holds them equal).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Music => "music",
            Family::Lyrics => "lyrics",
            Family::CoverImage => "cover_image",
            Family::Wav => "wav",
            Family::VocalSeparation => "vocal_separation",
            Family::Midi => "midi",
            Family::MusicVideo => "music_video",
            Family::Voice => "voice",
            Family::Unknown => "unknown",
        }
    }

    /// Families whose result is files (tracks, a WAV, stems, a video, images): a result of
    /// theirs without a file is none. Every family is named, so a new one must say.
    pub fn delivers_files(self) -> bool {
        match self {
            Family::Music | Family::CoverImage | Family::Wav | Family::VocalSeparation | Family::MusicVideo => true,
            Family::Lyrics | Family::Midi | Family::Voice | Family::Unknown => false,
        }
    }

    /// Families that report progress through `callbackType` (`text`, `first`, `complete`).
    /// Every family is named, so a new one must say (a family with stages read as without
    /// would take its first `text` callback for its final one).
    pub fn has_stages(self) -> bool {
        match self {
            Family::Music | Family::Lyrics => true,
            Family::CoverImage
            | Family::Wav
            | Family::VocalSeparation
            | Family::Midi
            | Family::MusicVideo
            | Family::Voice
            | Family::Unknown => false,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| format!("unknown family {s:?}"))
    }
}

/// Which kind of vocal separation produced the stems (the callback does not say; it is
/// inferred from the keys present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeparationType {
    SeparateVocal,
    SplitStem,
}

/// Non-file results, per family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Details {
    #[default]
    None,
    Tracks {
        tracks: Vec<Track>,
    },
    Lyrics {
        variants: Vec<LyricsVariant>,
    },
    Separation {
        #[serde(skip_serializing_if = "Option::is_none")]
        separation_type: Option<SeparationType>,
    },
    Midi {
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        instruments: Vec<MidiInstrument>,
    },
    Voice {
        #[serde(skip_serializing_if = "Option::is_none")]
        voice_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_code: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error_message: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        validate_info: Option<serde_json::Value>,
    },
    /// A failure body's own error text (replace-section's `data.error`).
    Error {
        error: String,
    },
}

impl Details {
    /// Whether these say nothing of the task's results: no track, variant, separation type,
    /// note or voice field (a failure body's, typically; an error text says something).
    pub fn is_empty(&self) -> bool {
        match self {
            Details::None => true,
            Details::Tracks { tracks } => tracks.is_empty(),
            Details::Lyrics { variants } => variants.is_empty(),
            Details::Separation { separation_type } => separation_type.is_none(),
            Details::Midi { state, instruments } => state.is_none() && instruments.is_empty(),
            Details::Voice { voice_id, status, error_code, error_message, validate_info } => {
                voice_id.is_none()
                    && status.is_none()
                    && error_code.is_none()
                    && error_message.is_none()
                    && validate_info.is_none()
            }
            Details::Error { .. } => false,
        }
    }
}

/// Metadata of one music track (`data.data[]`); its URLs are in `files` and `streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Track {
    /// The provider's audio id, as sent (may be empty or repeated in documentation examples).
    pub id: String,
    /// The name prefix of this track's files, `tracks/<sanitised id>[-<hash>][-n]` (see [`crate::parse`]).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// As the provider gave it: a date string in a callback (`2025-01-01 00:00:00`, no zone
    /// given), Unix milliseconds as digits where a poll gave a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// One lyrics result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LyricsVariant {
    pub text: String,
    pub title: String,
    pub status: String,
    pub error_message: String,
}

/// One MIDI instrument and its notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MidiInstrument {
    pub name: String,
    pub notes: Vec<MidiNote>,
}

/// One MIDI note; `start` and `end` arrive as numbers or strings and are normalised to seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MidiNote {
    pub pitch: i64,
    pub start: f64,
    pub end: f64,
    pub velocity: f64,
}

#[cfg(test)]
mod tests {
    use super::Family;

    /// Every family listed once, in declaration order, read back by the name it is stored
    /// under (serde's), which `as_str` says too.
    #[test]
    fn every_family_is_listed_and_read_back_by_its_stored_name() {
        for (i, family) in Family::ALL.into_iter().enumerate() {
            assert_eq!(family as usize, i, "{family:?}");
            let stored = serde_json::to_value(family).unwrap();
            assert_eq!(stored.as_str(), Some(family.as_str()), "{family:?}");
            // Read back as itself: no two families share a name.
            assert_eq!(family.as_str().parse::<Family>(), Ok(family));
        }
        assert!("Music".parse::<Family>().is_err() && "".parse::<Family>().is_err());
    }
}
