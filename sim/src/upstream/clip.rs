//! What every simulated response says: a [`Clip`] of G.711 mu-law audio and its exact
//! transcript (the embedded agent reply by default, or any WAV).

use super::*;

/// What every simulated response says: G.711 mu-law audio and its exact transcript.
#[derive(Clone, PartialEq, Eq)]
pub struct Clip {
    /// 8 kHz G.711 mu-law, one byte per sample (8 bytes per ms). Shared by every connection.
    pub mulaw: Arc<Vec<u8>>,
    /// The words spoken, sent as `response.output_audio_transcript.delta` pieces and in `…done`.
    pub transcript: String,
}

impl Clip {
    /// The first `ms` of this clip (all of it when shorter), saying `transcript`.
    pub fn first_ms(&self, ms: u64, transcript: impl Into<String>) -> Clip {
        let bytes = (ms as usize).saturating_mul(voxrelay::audio::mulaw::BYTES_PER_MS);
        Clip::new(
            self.mulaw[..bytes.min(self.mulaw.len())].to_vec(),
            transcript,
        )
    }

    /// A clip from mu-law bytes (8 kHz) and the words they say.
    pub fn new(mulaw: Vec<u8>, transcript: impl Into<String>) -> Clip {
        Clip {
            mulaw: Arc::new(mulaw),
            transcript: transcript.into(),
        }
    }

    /// Reads a WAV (8000 Hz, mono, 16-bit integer PCM; anything else is [`ClipError::Format`]) and
    /// encodes it to mu-law.
    pub fn from_wav_reader<R: Read>(
        reader: R,
        transcript: impl Into<String>,
    ) -> Result<Clip, ClipError> {
        let mut wav = hound::WavReader::new(reader)?;
        let spec = wav.spec();
        if spec.sample_rate != 8000
            || spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(ClipError::Format {
                sample_rate: spec.sample_rate,
                channels: spec.channels,
                bits_per_sample: spec.bits_per_sample,
            });
        }
        let samples = wav.samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
        Ok(Clip::new(mulaw::encode(&samples), transcript))
    }

    /// Reads a WAV file (8000 Hz, mono, 16-bit integer PCM) and encodes it to mu-law.
    pub fn from_wav_file(path: &Path, transcript: impl Into<String>) -> Result<Clip, ClipError> {
        let file = File::open(path).map_err(|e| ClipError::File {
            path: path.to_owned(),
            source: e,
        })?;
        Clip::from_wav_reader(std::io::BufReader::new(file), transcript)
    }

    /// Length of the audio in ms (bytes / 8, rounded down).
    pub fn duration_ms(&self) -> u64 {
        (self.mulaw.len() / BYTES_PER_MS) as u64
    }
}

impl std::fmt::Debug for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clip")
            .field("mulaw_bytes", &self.mulaw.len())
            .field("duration_ms", &self.duration_ms())
            .field("transcript", &self.transcript)
            .finish()
    }
}

/// Why a clip could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    File {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a readable WAV.
    #[error("cannot read WAV: {0}")]
    Wav(#[from] hound::Error),
    /// A WAV in a format the simulator does not resample.
    #[error(
        "the clip must be 8000 Hz mono 16-bit integer PCM, \
         found {sample_rate} Hz, {channels} channel(s), {bits_per_sample} bits"
    )]
    Format {
        /// Sample rate found, in Hz.
        sample_rate: u32,
        /// Channels found.
        channels: u16,
        /// Bits per sample found.
        bits_per_sample: u16,
    },
}

/// The agent reply built into the binary (`assets/audio/agent_reply.wav`, 5.63 s: "Thanks for
/// calling Bright Smile Dental, this is the virtual assistant. How can I help you today?"),
/// decoded from the embedded WAV, so no file path is needed at run time.
pub fn default_clip() -> Result<Clip, ClipError> {
    Clip::from_wav_reader(Cursor::new(AGENT_REPLY_WAV), AGENT_REPLY_TEXT.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_clip_is_about_five_seconds_of_the_agent_reply() {
        let clip = match default_clip() {
            Ok(clip) => clip,
            Err(e) => panic!("embedded clip unreadable: {e}"),
        };
        assert!((5000..6500).contains(&clip.duration_ms()), "{clip:?}");
        assert!(
            clip.transcript
                .starts_with("Thanks for calling Bright Smile Dental")
        );
        assert!(!clip.transcript.ends_with('\n'));
        // Speech, not silence.
        assert!(mulaw::rms_dbfs(&clip.mulaw) > -30.0);
    }
}
