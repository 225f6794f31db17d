//! G.711 mu-law codec: 8 kHz, 8 bits per sample, 160 bytes per 20 ms frame.
//!
//! Decoding uses a 256-entry table built at compile time; encoding follows the ITU-T G.191
//! reference (`g711.c`, `ulaw_compress`): the one's complement of negative inputs, a bias of 33 on
//! the 14-bit magnitude, and a segment found from the position of the highest set bit. Tested bit
//! for bit against the `audio-codec-algorithms` crate, which implements the same reference.
//!
//! Source: ITU-T Recommendation G.711 (11/88), and G.191 (software tools library).

/// Bytes of mu-law per millisecond of audio (8000 Hz, 1 byte per sample).
pub const BYTES_PER_MS: usize = 8;

/// Bytes in one 20 ms frame, the size Twilio sends.
pub const FRAME_BYTES: usize = 160;

/// The mu-law code of digital silence (a zero sample).
pub const SILENCE: u8 = 0xFF;

const fn decode_one(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn build_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_one(i as u8);
        i += 1;
    }
    table
}

/// Linear 16-bit value of each of the 256 mu-law codes.
pub static DECODE_TABLE: [i16; 256] = build_table();

/// Decodes one mu-law code to a linear 16-bit sample.
#[inline]
pub fn decode_sample(code: u8) -> i16 {
    DECODE_TABLE[code as usize]
}

/// Encodes one linear 16-bit sample as mu-law (G.191 `ulaw_compress`).
#[inline]
pub fn encode_sample(sample: i16) -> u8 {
    let s = i32::from(sample);
    // 14-bit magnitude plus the bias; negative inputs use the one's complement, as G.191 does.
    let biased = if s < 0 {
        ((!s) >> 2) + 33
    } else {
        (s >> 2) + 33
    }
    .min(0x1FFF);
    // Segment number 1..=8: one more than the bit length of `biased >> 6`.
    let segment = 1 + (32 - ((biased >> 6) as u32).leading_zeros()) as i32;
    let high_nibble = 8 - segment;
    let low_nibble = 0x0F - ((biased >> segment) & 0x0F);
    let code = (high_nibble << 4) | low_nibble;
    if s >= 0 {
        (code | 0x80) as u8
    } else {
        code as u8
    }
}

/// Decodes a mu-law buffer to linear 16-bit samples (one sample per byte).
pub fn decode(codes: &[u8]) -> Vec<i16> {
    codes.iter().map(|&c| decode_sample(c)).collect()
}

/// Encodes linear 16-bit samples as mu-law (one byte per sample).
pub fn encode(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode_sample(s)).collect()
}

/// Root-mean-square level of a mu-law buffer, in dBFS (0 dBFS = full-scale 16-bit square wave).
///
/// Returns `f32::NEG_INFINITY` for an empty or all-zero buffer. Used by the simulated upstream's
/// energy VAD and by tests that look at what a caller heard.
pub fn rms_dbfs(codes: &[u8]) -> f32 {
    if codes.is_empty() {
        return f32::NEG_INFINITY;
    }
    let sum: f64 = codes
        .iter()
        .map(|&c| {
            let s = f64::from(decode_sample(c));
            s * s
        })
        .sum();
    let rms = (sum / codes.len() as f64).sqrt();
    if rms <= 0.0 {
        f32::NEG_INFINITY
    } else {
        (20.0 * (rms / 32768.0).log10()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_matches_the_g191_reference_for_every_code() {
        for code in 0..=255u8 {
            assert_eq!(
                decode_sample(code),
                audio_codec_algorithms::decode_ulaw(code),
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn encoding_matches_the_g191_reference_for_every_sample() {
        for sample in i16::MIN..=i16::MAX {
            assert_eq!(
                encode_sample(sample),
                audio_codec_algorithms::encode_ulaw(sample),
                "sample {sample}"
            );
        }
    }

    #[test]
    fn every_code_survives_a_decode_encode_round_trip() {
        for code in 0..=255u8 {
            // 0x7F and 0xFF both decode to 0; G.711 encodes 0 as 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                encode_sample(decode_sample(code)),
                expected,
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn silence_is_quiet_and_a_loud_tone_is_loud() {
        assert_eq!(rms_dbfs(&[SILENCE; FRAME_BYTES]), f32::NEG_INFINITY);
        let tone: Vec<i16> = (0..160)
            .map(|i| ((i as f32 / 8.0).sin() * 16000.0) as i16)
            .collect();
        let level = rms_dbfs(&encode(&tone));
        assert!((-10.0..-6.0).contains(&level), "level {level}");
    }
}
