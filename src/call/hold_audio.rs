//! The clip a caller hears while the upstream session is being replaced ("one moment,
//! please"), pre-encoded as 8 kHz G.711 mu-law, one per language, built into the binary.
//!
//! The clips (`assets/audio/hold/`, made with eSpeak NG and SoX, see `assets/audio/SOURCE.md`)
//! are sent to Twilio as ordinary outbound media frames, so the playback clock and marks count
//! them like model audio; they belong to no upstream item ([`HOLD_ITEM`]), so a barge-in over
//! one clears Twilio and truncates nothing.

use base64::Engine as _;

use crate::audio::mulaw::BYTES_PER_MS;

/// The playback item name of hold audio (never an upstream item id, which start `item_`).
pub const HOLD_ITEM: &str = "hold";

/// Audio per outbound media message, ms (as the model's deltas are, about).
const CHUNK_MS: usize = 100;

/// (ISO 639-1 code, clip) of each language shipped; the first is the default.
const CLIPS: [(&str, &[u8]); 4] = [
    (
        "en",
        include_bytes!("../../assets/audio/hold/one_moment_en.ulaw"),
    ),
    (
        "es",
        include_bytes!("../../assets/audio/hold/one_moment_es.ulaw"),
    ),
    (
        "fr",
        include_bytes!("../../assets/audio/hold/one_moment_fr.ulaw"),
    ),
    (
        "de",
        include_bytes!("../../assets/audio/hold/one_moment_de.ulaw"),
    ),
];

/// The hold clip for `language` (an ISO 639-1 code, any case; `None` or one not shipped gives
/// English), G.711 mu-law at 8,000 Hz.
pub fn clip_for(language: Option<&str>) -> &'static [u8] {
    let wanted = language.unwrap_or("en");
    CLIPS
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(wanted))
        .unwrap_or(&CLIPS[0])
        .1
}

/// The clip as base64 payloads of [`CHUNK_MS`] each (the last may be shorter), with their
/// length in bytes of audio.
pub fn chunks(clip: &[u8]) -> Vec<(String, u64)> {
    clip.chunks(CHUNK_MS * BYTES_PER_MS)
        .map(|c| {
            (
                base64::engine::general_purpose::STANDARD.encode(c),
                c.len() as u64,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_short_clip_of_speech_and_others_get_english() {
        for (code, clip) in CLIPS {
            let ms = clip.len() / BYTES_PER_MS;
            assert!((800..2500).contains(&ms), "{code}: {ms} ms");
            // Not silence: mu-law silence is 0xFF/0x7F.
            let loud = clip.iter().filter(|&&b| b & 0x7f < 0x60).count();
            assert!(loud > clip.len() / 10, "{code}: {loud} loud samples");
        }
        assert_eq!(clip_for(Some("ES")), CLIPS[1].1);
        assert_eq!(clip_for(Some("ja")), CLIPS[0].1);
        assert_eq!(clip_for(None), CLIPS[0].1);
        assert_ne!(clip_for(Some("fr")), clip_for(Some("de")));
    }

    #[test]
    fn chunks_cover_the_clip_in_order() {
        let clip = clip_for(Some("en"));
        let parts = chunks(clip);
        let total: u64 = parts.iter().map(|(_, n)| n).sum();
        assert_eq!(total, clip.len() as u64);
        assert!(parts[..parts.len() - 1].iter().all(|(_, n)| *n == 800));
        let first = base64::engine::general_purpose::STANDARD
            .decode(&parts[0].0)
            .unwrap_or_default();
        assert_eq!(first, clip[..800]);
    }
}
