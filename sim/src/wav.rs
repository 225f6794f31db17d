//! WAV reading and writing, resampling, and conversion to 8 kHz mu-law for Twilio.
//!
//! Used by the simulated caller, the demo and tests; the relay itself never touches audio.
//!
//! - Reading: PCM integer WAV of 8, 16, 24 or 32 bits, or 32-bit IEEE float (`WAVE_FORMAT_PCM`,
//!   `WAVE_FORMAT_IEEE_FLOAT` and their `WAVE_FORMAT_EXTENSIBLE` forms, via the `hound` crate,
//!   <https://docs.rs/hound/3.5.1>). Any channel count; channels are averaged to mono. Samples are
//!   `f32` in `-1.0..1.0` (an integer sample `s` of `b` bits becomes `s / 2^(b-1)`).
//! - Resampling: `rubato` 5 FFT resampler (<https://docs.rs/rubato/5.0.1>), whole clips at once,
//!   with the resampler delay trimmed so output sample `i` lines up with input time
//!   `i / to_hz` seconds.
//! - Mu-law: G.711 via [`voxrelay::audio::mulaw`]; Twilio Media Streams carry `audio/x-mulaw`,
//!   8000 Hz, mono (<https://www.twilio.com/docs/voice/media-streams/websocket-messages>).

use std::io::Read;
use std::path::{Path, PathBuf};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use voxrelay::audio::mulaw;

/// Sample rate of Twilio Media Streams audio, in Hz.
pub const TWILIO_RATE_HZ: u32 = 8000;

/// Input chunk size handed to the FFT resampler, in frames. Large enough for a clean
/// anti-aliasing filter (the delay it adds is trimmed anyway).
const RESAMPLE_CHUNK: usize = 1024;

/// Failure reading, writing or converting audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The WAV file could not be opened or decoded.
    #[error("cannot read WAV file {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// What `hound` reported (I/O error, not a RIFF/WAVE file, unsupported encoding, ...).
        #[source]
        source: hound::Error,
    },
    /// In-memory WAV data could not be decoded.
    #[error("cannot decode WAV data from memory: {0}")]
    Decode(#[source] hound::Error),
    /// The WAV header is readable but describes audio this module does not handle.
    #[error("unsupported WAV format in {origin}: {detail}")]
    Unsupported {
        /// The file path, or `"in-memory WAV data"`.
        origin: String,
        /// What is wrong, for example "0 channels".
        detail: String,
    },
    /// The WAV file could not be created or written.
    #[error("cannot write WAV file {}: {source}", path.display())]
    Write {
        /// The file that was being written.
        path: PathBuf,
        /// What `hound` reported.
        #[source]
        source: hound::Error,
    },
    /// The resampler rejected the rates or failed.
    #[error("cannot resample from {from_hz} Hz to {to_hz} Hz: {detail}")]
    Resample {
        /// Input rate, Hz.
        from_hz: u32,
        /// Output rate, Hz.
        to_hz: u32,
        /// The resampler's message.
        detail: String,
    },
}

/// Why [`decode_mono`] failed, before the caller attaches where the data came from.
enum DecodeFailure {
    Hound(hound::Error),
    Unsupported(String),
}

/// Reads a WAV file as mono `f32` samples.
///
/// Returns `(samples, sample_rate_hz)`: samples in `-1.0..1.0`, channels averaged, one sample per
/// frame (a trailing incomplete frame is dropped).
///
/// # Errors
/// [`AudioError::Read`] (with the path) if the file cannot be opened or is not a WAV that `hound`
/// decodes; [`AudioError::Unsupported`] for 0 channels, a 0 Hz rate, or float samples other than
/// 32-bit.
pub fn read_mono(path: &Path) -> Result<(Vec<f32>, u32), AudioError> {
    let reader = hound::WavReader::open(path).map_err(|source| AudioError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode_mono(reader).map_err(|failure| match failure {
        DecodeFailure::Hound(source) => AudioError::Read {
            path: path.to_path_buf(),
            source,
        },
        DecodeFailure::Unsupported(detail) => AudioError::Unsupported {
            origin: path.display().to_string(),
            detail,
        },
    })
}

/// Reads WAV data held in memory (a whole `.wav` file's bytes) as mono `f32` samples.
///
/// Same output as [`read_mono`].
///
/// # Errors
/// [`AudioError::Decode`] if the bytes are not a WAV that `hound` decodes;
/// [`AudioError::Unsupported`] as for [`read_mono`].
pub fn read_mono_from_bytes(bytes: &[u8]) -> Result<(Vec<f32>, u32), AudioError> {
    let reader = hound::WavReader::new(bytes).map_err(AudioError::Decode)?;
    decode_mono(reader).map_err(|failure| match failure {
        DecodeFailure::Hound(source) => AudioError::Decode(source),
        DecodeFailure::Unsupported(detail) => AudioError::Unsupported {
            origin: "in-memory WAV data".to_string(),
            detail,
        },
    })
}

fn decode_mono<R: Read>(reader: hound::WavReader<R>) -> Result<(Vec<f32>, u32), DecodeFailure> {
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(DecodeFailure::Unsupported("0 channels".to_string()));
    }
    if spec.sample_rate == 0 {
        return Err(DecodeFailure::Unsupported(
            "sample rate of 0 Hz".to_string(),
        ));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(DecodeFailure::Unsupported(format!(
                    "{}-bit float samples (only 32-bit float is read)",
                    spec.bits_per_sample
                )));
            }
            reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(DecodeFailure::Hound)?
        }
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(DecodeFailure::Unsupported(format!(
                    "{}-bit integer samples",
                    spec.bits_per_sample
                )));
            }
            let scale = 1.0 / 2f64.powi(i32::from(spec.bits_per_sample) - 1);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|s| (f64::from(s) * scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(DecodeFailure::Hound)?
        }
    };
    let channels = usize::from(spec.channels);
    let mono = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * inv)
            .collect()
    };
    Ok((mono, spec.sample_rate))
}

/// Resamples a whole mono clip from `from_hz` to `to_hz`.
///
/// Returns `ceil(samples.len() * to_hz / from_hz)` samples, aligned with the input (the
/// resampler's delay is trimmed and the last chunk is padded with silence). Equal rates return a
/// copy; an empty input returns an empty vector. Uses `rubato::Fft` with `FixedSync::Both`
/// (about 127 dB SNR; see `shared/design/DEPENDENCIES.md`, "2. rubato 5.0.1"). Rates whose
/// greatest common divisor is small (for example 44101 Hz) need a large FFT and are slow.
///
/// # Errors
/// [`AudioError::Resample`] if a rate is 0 or the resampler fails.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    let fail = |detail: String| AudioError::Resample {
        from_hz,
        to_hz,
        detail,
    };
    if from_hz == 0 || to_hz == 0 {
        return Err(fail("sample rates must be positive".to_string()));
    }
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let to_usize = |hz: u32| usize::try_from(hz).map_err(|e| fail(e.to_string()));
    let mut resampler = Fft::<f32>::new(
        to_usize(from_hz)?,
        to_usize(to_hz)?,
        RESAMPLE_CHUNK,
        1,
        FixedSync::Both,
    )
    .map_err(|e| fail(e.to_string()))?;

    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| fail(e.to_string()))?;
    let needed = resampler.process_all_needed_output_len(samples.len());
    let mut output = vec![0.0f32; needed];
    let produced = {
        let mut output_adapter =
            InterleavedSlice::new_mut(&mut output, 1, needed).map_err(|e| fail(e.to_string()))?;
        let (_consumed, produced) = resampler
            .process_all_into_buffer(&input, &mut output_adapter, samples.len(), None)
            .map_err(|e| fail(e.to_string()))?;
        produced
    };
    output.truncate(produced);
    Ok(output)
}

/// Converts mono `f32` samples at `rate_hz` to 8 kHz G.711 mu-law bytes, ready to send to
/// Twilio (one byte per sample; 160 bytes per 20 ms frame).
///
/// Resamples with [`resample`], clamps to `-1.0..=1.0`, scales by 32768 (rounding, saturating at
/// `i16::MAX`) and encodes with [`voxrelay::audio::mulaw::encode`].
///
/// # Errors
/// [`AudioError::Resample`] as for [`resample`].
pub fn to_mulaw_8k(samples: &[f32], rate_hz: u32) -> Result<Vec<u8>, AudioError> {
    let at_8k = resample(samples, rate_hz, TWILIO_RATE_HZ)?;
    let pcm: Vec<i16> = at_8k.iter().map(|&s| f32_to_i16(s)).collect();
    Ok(mulaw::encode(&pcm))
}

fn f32_to_i16(sample: f32) -> i16 {
    // NaN clamps to NaN and `as` turns it into 0.
    (sample.clamp(-1.0, 1.0) * 32768.0)
        .round()
        .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

/// Decodes mu-law bytes (8 kHz, as carried by Twilio) and writes them as an 8 kHz mono 16-bit
/// PCM WAV file, replacing any existing file at `path`.
///
/// # Errors
/// [`AudioError::Write`] (with the path) if the file cannot be created or written.
pub fn write_mulaw_as_wav(path: &Path, mulaw_bytes: &[u8]) -> Result<(), AudioError> {
    let write_err = |source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TWILIO_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(write_err)?;
    for sample in mulaw::decode(mulaw_bytes) {
        writer.write_sample(sample).map_err(write_err)?;
    }
    writer.finalize().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;
    use std::io::Cursor;

    fn tone(freq_hz: f32, rate_hz: u32, len: usize, amplitude: f32) -> Vec<f32> {
        (0..len)
            .map(|i| amplitude * (2.0 * PI * freq_hz * i as f32 / rate_hz as f32).sin())
            .collect()
    }

    fn zero_crossings(samples: &[f32]) -> usize {
        samples
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count()
    }

    fn wav_bytes<S: hound::Sample + Copy>(spec: hound::WavSpec, samples: &[S]) -> Vec<u8> {
        let mut cursor = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for &s in samples {
            writer.write_sample(s).unwrap();
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    #[test]
    fn tone_16k_to_8k_keeps_frequency_length_and_alignment() {
        let input = tone(1000.0, 16_000, 16_000, 0.5);
        let output = resample(&input, 16_000, 8_000).unwrap();
        assert_eq!(output.len(), 8_000);
        // 1 kHz for 1 s: 2000 zero crossings.
        let crossings = zero_crossings(&output[100..7_900]) as f32 / 7_800.0 * 8_000.0;
        assert!((crossings - 2000.0).abs() < 10.0, "{crossings}");
        // Delay compensated: the output matches the ideal 8 kHz tone sample for sample.
        let ideal = tone(1000.0, 8_000, 8_000, 0.5);
        let max_err = output[100..7_900]
            .iter()
            .zip(&ideal[100..7_900])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err < 0.01, "max error {max_err}");
    }

    #[test]
    fn upsampling_and_odd_rates_have_expected_length() {
        let input = tone(440.0, 8_000, 1_234, 0.3);
        assert_eq!(resample(&input, 8_000, 24_000).unwrap().len(), 3_702);
        let input = tone(440.0, 44_100, 44_100, 0.3);
        let output = resample(&input, 44_100, 8_000).unwrap();
        assert_eq!(output.len(), 8_000);
        let crossings = zero_crossings(&output[100..7_900]) as f32 / 7_800.0 * 8_000.0;
        assert!((crossings - 880.0).abs() < 10.0, "{crossings}");
        // Shorter than one resampler chunk.
        assert_eq!(resample(&input[..100], 44_100, 8_000).unwrap().len(), 19);
    }

    #[test]
    fn resample_identity_empty_and_bad_rates() {
        let input = vec![0.1, -0.2, 0.3];
        assert_eq!(resample(&input, 8_000, 8_000).unwrap(), input);
        assert!(resample(&[], 16_000, 8_000).unwrap().is_empty());
        assert!(matches!(
            resample(&input, 0, 8_000),
            Err(AudioError::Resample { from_hz: 0, .. })
        ));
    }

    #[test]
    fn mulaw_wav_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heard.wav");
        let mulaw_bytes = to_mulaw_8k(&tone(500.0, 16_000, 3_200, 0.8), 16_000).unwrap();
        assert_eq!(mulaw_bytes.len(), 1_600);
        write_mulaw_as_wav(&path, &mulaw_bytes).unwrap();

        let (samples, rate) = read_mono(&path).unwrap();
        assert_eq!(rate, 8_000);
        let expected: Vec<f32> = mulaw::decode(&mulaw_bytes)
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect();
        assert_eq!(samples, expected);
        // Re-encoding what was read gives back the same audio (mu-law has two codes for zero,
        // 0x7F and 0xFF, so compare decoded values).
        let again = to_mulaw_8k(&samples, 8_000).unwrap();
        assert_eq!(mulaw::decode(&again), mulaw::decode(&mulaw_bytes));
    }

    #[test]
    fn reads_stereo_24_bit_and_float() {
        let stereo = wav_bytes(
            hound::WavSpec {
                channels: 2,
                sample_rate: 16_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            &[16_384i16, 0, -32_768, -32_768, 8_192, -8_192],
        );
        let (samples, rate) = read_mono_from_bytes(&stereo).unwrap();
        assert_eq!(rate, 16_000);
        assert_eq!(samples, vec![0.25, -1.0, 0.0]);

        let pcm24 = wav_bytes(
            hound::WavSpec {
                channels: 1,
                sample_rate: 24_000,
                bits_per_sample: 24,
                sample_format: hound::SampleFormat::Int,
            },
            &[4_194_304i32, -8_388_608],
        );
        assert_eq!(
            read_mono_from_bytes(&pcm24).unwrap(),
            (vec![0.5, -1.0], 24_000)
        );

        let float = wav_bytes(
            hound::WavSpec {
                channels: 1,
                sample_rate: 48_000,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            },
            &[0.125f32, -0.75],
        );
        assert_eq!(
            read_mono_from_bytes(&float).unwrap(),
            (vec![0.125, -0.75], 48_000)
        );
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        let err = read_mono(&missing).unwrap_err();
        assert!(matches!(err, AudioError::Read { .. }));
        assert!(err.to_string().contains("missing.wav"), "{err}");

        let not_wav = dir.path().join("not.wav");
        std::fs::write(&not_wav, b"definitely not RIFF").unwrap();
        let err = read_mono(&not_wav).unwrap_err();
        assert!(err.to_string().contains("not.wav"), "{err}");

        assert!(matches!(
            read_mono_from_bytes(b"RIFF"),
            Err(AudioError::Decode(_))
        ));

        let unwritable = dir.path().join("no-such-dir").join("out.wav");
        let err = write_mulaw_as_wav(&unwritable, &[0xFF; 160]).unwrap_err();
        assert!(matches!(err, AudioError::Write { .. }));
        assert!(err.to_string().contains("out.wav"), "{err}");
    }

    #[test]
    fn to_mulaw_clamps_and_saturates() {
        let bytes = to_mulaw_8k(&[2.0, -2.0, 0.0, f32::NAN], 8_000).unwrap();
        assert_eq!(bytes, mulaw::encode(&[i16::MAX, i16::MIN, 0, 0]));
    }
}
