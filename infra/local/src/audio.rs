//! Deterministic stand-in audio for the demo: a small, valid MP3 (an ID3v2 title tag, then
//! silent MPEG-1 Layer III frames) whose title and length depend on the name, so every stem
//! has its own size and checksum and the same name always gives the same bytes.

/// MPEG-1 Layer III, no CRC; 128 kbit/s, 44.1 kHz, no padding; mono, original.
const FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0xC4];
/// 144 × 128000 / 44100, rounded down (no padding bit).
pub const FRAME_BYTES: usize = 417;
/// 480..=719 frames: 200–300 KB, 12.5–18.8 s of silence.
const MIN_FRAMES: u64 = 480;
const FRAME_SPREAD: u64 = 240;

/// FNV-1a: a stable hash, so sizes never change between runs or builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The MP3 for `name` (e.g. the URL path's last segment).
pub fn stem_mp3(name: &str) -> Vec<u8> {
    let frames = MIN_FRAMES + fnv1a(name.as_bytes()) % FRAME_SPREAD;
    let tag = id3_title_tag(name);
    let mut out = Vec::with_capacity(tag.len() + frames as usize * FRAME_BYTES);
    out.extend_from_slice(&tag);
    for _ in 0..frames {
        out.extend_from_slice(&FRAME_HEADER);
        // Side information and main data all zero: every granule decodes to silence.
        out.resize(out.len() + FRAME_BYTES - FRAME_HEADER.len(), 0);
    }
    out
}

/// An ID3v2.3 tag with one TIT2 (title) frame, Latin-1 (other characters become `?`).
fn id3_title_tag(title: &str) -> Vec<u8> {
    let text: Vec<u8> = title.chars().map(|c| if (c as u32) < 0x100 { c as u8 } else { b'?' }).collect();
    let frame_size = (text.len() + 1) as u32;
    let mut frame = Vec::with_capacity(10 + text.len() + 1);
    frame.extend_from_slice(b"TIT2");
    frame.extend_from_slice(&frame_size.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0]); // flags, then encoding 0 = ISO-8859-1
    frame.extend_from_slice(&text);
    let mut tag = Vec::with_capacity(10 + frame.len());
    tag.extend_from_slice(b"ID3\x03\x00\x00");
    tag.extend_from_slice(&syncsafe(frame.len() as u32));
    tag.extend_from_slice(&frame);
    tag
}

/// ID3's 28-bit size: 7 bits per byte.
fn syncsafe(n: u32) -> [u8; 4] {
    [(n >> 21) as u8 & 0x7f, (n >> 14) as u8 & 0x7f, (n >> 7) as u8 & 0x7f, n as u8 & 0x7f]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_different_per_name() {
        let bass = stem_mp3("a3c2da5a_Bass.mp3");
        assert_eq!(bass, stem_mp3("a3c2da5a_Bass.mp3"));
        assert_ne!(bass, stem_mp3("334b2d23_Brass.mp3"));
        assert!((200_000..=310_000).contains(&bass.len()), "{}", bass.len());
    }

    #[test]
    fn starts_with_an_id3_tag_then_mpeg_frames() {
        let mp3 = stem_mp3("Vocals");
        assert_eq!(&mp3[..3], b"ID3");
        let tag_size =
            ((mp3[6] as usize) << 21) | ((mp3[7] as usize) << 14) | ((mp3[8] as usize) << 7) | mp3[9] as usize;
        assert_eq!(&mp3[10..14], b"TIT2");
        assert_eq!(&mp3[21..27], b"Vocals");
        let audio = &mp3[10 + tag_size..];
        assert_eq!(audio.len() % FRAME_BYTES, 0);
        for frame in audio.chunks(FRAME_BYTES) {
            assert_eq!(&frame[..4], &FRAME_HEADER);
        }
    }

    #[test]
    fn syncsafe_uses_seven_bits_per_byte() {
        assert_eq!(syncsafe(0x7f), [0, 0, 0, 0x7f]);
        assert_eq!(syncsafe(0x80), [0, 0, 1, 0]);
        assert_eq!(syncsafe(1_000_000), [0, 0x3d, 0x04, 0x40]);
    }
}
