//! The command line of a stand-alone simulated upstream (`voxrelay sim-upstream`).

use super::*;

/// Command-line options of a stand-alone simulated upstream (`voxrelay sim-upstream`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimUpstreamArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Delay from response.created to the first audio delta, in ms (the live service takes a few
    /// hundred).
    #[arg(long = "first-audio-ms", value_name = "MS", default_value_t = 300)]
    pub first_audio_ms: u64,
    /// Delay before completing each WebSocket handshake, in ms.
    #[arg(long = "connect-delay-ms", value_name = "MS", default_value_t = 0)]
    pub connect_delay_ms: u64,
    /// Session lifetime, in ms: `expires_at` this far ahead, then `session_expired` and close
    /// 1001 (the live service's limit is an hour).
    #[arg(long = "session-lifetime-ms", value_name = "MS")]
    pub session_lifetime_ms: Option<u64>,
    /// Send each response's audio as fast as possible instead of at real-time pace.
    #[arg(long)]
    pub fast: bool,
    /// Audio per response.output_audio.delta, in ms.
    #[arg(long = "chunk-ms", value_name = "MS", default_value_t = 100)]
    pub chunk_ms: u32,
    /// Append every client event received to this file, one JSON object per line.
    #[arg(long = "event-log", value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// Scripted caller transcript for the next committed caller turn (repeat for later turns).
    #[arg(long = "transcript", value_name = "TEXT")]
    pub transcripts: Vec<String>,
    /// WAV (8000 Hz mono 16-bit) every response speaks instead of the built-in agent reply.
    #[arg(long, value_name = "PATH")]
    pub clip: Option<PathBuf>,
    /// Words of --clip (default: the file beside it with the extension .txt, if any).
    #[arg(long = "clip-text", value_name = "TEXT", requires = "clip")]
    pub clip_text: Option<String>,
    /// Frame level above which caller audio counts as speech, in dBFS.
    #[arg(
        long = "vad-threshold-dbfs",
        value_name = "DBFS",
        default_value_t = -35.0,
        allow_negative_numbers = true
    )]
    pub vad_threshold_dbfs: f32,
    /// Echo mode (load tests): after the first response, send every appended caller frame
    /// straight back as model audio.
    #[arg(long)]
    pub echo: bool,
    /// Event names to speak: ga (default) or beta.
    #[arg(long, value_enum, default_value_t = Dialect::Ga)]
    pub dialect: Dialect,
}

impl SimUpstreamArgs {
    /// The listen address and the configuration these options describe. Fails if `--clip` cannot
    /// be read or `--chunk-ms` is 0.
    pub fn into_config(self) -> anyhow::Result<(SocketAddr, SimUpstreamConfig)> {
        anyhow::ensure!(self.chunk_ms > 0, "--chunk-ms must be at least 1");
        let clip = match &self.clip {
            // Echo mode greets briefly: the echo starts when the greeting is done.
            None if self.echo => default_clip()
                .context("loading the built-in agent reply")?
                .first_ms(ECHO_GREETING_MS, "Hello."),
            None => default_clip().context("loading the built-in agent reply")?,
            Some(path) => {
                let text = match self.clip_text {
                    Some(text) => text,
                    None => std::fs::read_to_string(path.with_extension("txt"))
                        .map(|t| t.trim().to_owned())
                        .unwrap_or_default(),
                };
                Clip::from_wav_file(path, text)
                    .with_context(|| format!("loading --clip {}", path.display()))?
            }
        };
        let config = SimUpstreamConfig {
            connect_delay_ms: self.connect_delay_ms,
            first_audio_delay_ms: self.first_audio_ms,
            realtime_pace: !self.fast,
            chunk_ms: self.chunk_ms,
            clip,
            transcripts: self.transcripts,
            replies: Vec::new(),
            transcription_delay_ms: 0,
            event_log: self.event_log,
            vad: VadConfig {
                threshold_dbfs: self.vad_threshold_dbfs,
                ..VadConfig::default()
            },
            echo: self.echo,
            dialect: self.dialect,
            keep_logs: !self.echo,
            fault: None,
            faulty_connections: None,
            session_lifetime_ms: self.session_lifetime_ms,
            accepted_handshakes: None,
            refused_responses: 0,
            check_isolation: false,
            tool_calls: Vec::new(),
            recv_buffer_bytes: None,
            later_scripts: Vec::new(),
        };
        Ok((self.listen, config))
    }
}
