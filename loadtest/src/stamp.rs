//! Stamped media frames: 20 ms of G.711 mu-law silence that carries which call and which frame
//! it is, so a frame that comes back through the proxy (the simulated upstream echoes it) can be
//! matched to the moment it was sent.
//!
//! The 64-bit stamp (16-bit magic, 16-bit call number, 32-bit frame sequence) is written into
//! the first 64 bytes, one bit a byte, as the two mu-law codes of zero amplitude (0xFF for +0,
//! 0x7F for −0). The frame stays digital silence, so no VAD hears it as speech, and the proxy
//! relays the base64 text unchanged, so the stamp survives byte for byte.

use voxrelay::audio::mulaw::{FRAME_BYTES, SILENCE};

/// Marks a frame as stamped.
const MAGIC: u16 = 0xA55A;
/// Mu-law +0.
const ONE: u8 = 0xFF;
/// Mu-law −0.
const ZERO: u8 = 0x7F;
/// Bytes that carry the stamp.
const STAMP_BYTES: usize = 64;

/// A stamped 160-byte frame for `call`'s frame `seq`.
pub fn frame(call: u16, seq: u32) -> [u8; FRAME_BYTES] {
    let mut frame = [SILENCE; FRAME_BYTES];
    let stamp = (u64::from(MAGIC) << 48) | (u64::from(call) << 32) | u64::from(seq);
    for (i, byte) in frame.iter_mut().take(STAMP_BYTES).enumerate() {
        *byte = if stamp >> (63 - i) & 1 == 1 {
            ONE
        } else {
            ZERO
        };
    }
    frame
}

/// The (call, seq) a frame carries, or `None` for any other audio.
pub fn read(frame: &[u8]) -> Option<(u16, u32)> {
    if frame.len() < STAMP_BYTES {
        return None;
    }
    let mut stamp = 0u64;
    for &byte in &frame[..STAMP_BYTES] {
        let bit = match byte {
            ONE => 1,
            ZERO => 0,
            _ => return None,
        };
        stamp = stamp << 1 | bit;
    }
    ((stamp >> 48) as u16 == MAGIC).then_some(((stamp >> 32) as u16, stamp as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxrelay::audio::mulaw::rms_dbfs;

    #[test]
    fn a_stamp_reads_back_and_other_audio_is_not_a_stamp() {
        for (call, seq) in [(0, 0), (7, 1), (999, 1_000_000), (u16::MAX, u32::MAX)] {
            assert_eq!(read(&frame(call, seq)), Some((call, seq)));
        }
        assert_eq!(read(&[SILENCE; FRAME_BYTES]), None);
        assert_eq!(read(&[0x7F; FRAME_BYTES]), None);
        assert_eq!(read(&[0x10; FRAME_BYTES]), None);
        assert_eq!(read(&[0xFF; 10]), None);
    }

    #[test]
    fn a_stamped_frame_is_silence() {
        assert_eq!(rms_dbfs(&frame(12, 345)), f32::NEG_INFINITY);
    }
}
