//! A whole simulated world in one process: the proxy on a loopback port with its own SQLite
//! database, the simulated upstream, and a way to place calls with the simulated Twilio.
//!
//! `voxrelay demo` and the end-to-end tests use it; everything runs over real sockets on
//! 127.0.0.1, with no network access and no API keys.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::caller::{self, CallerConfig, CallerReport};
use crate::twilio_rest::SimTwilioRest;
use crate::upstream::{SimUpstream, SimUpstreamConfig};
use voxrelay::config::{Config, DEFAULT_PATH, DEFAULT_TOML, Role, Secrets};
use voxrelay::http::{self, AppState};
use voxrelay::store::{Business, NewBusiness, Store};
use voxrelay::telemetry::CallReport;

/// Twilio auth token used by the simulated world.
pub const SIM_TWILIO_AUTH_TOKEN: &str = "sim-twilio-auth-token";
/// Signing key used by the simulated world.
pub const SIM_SIGNING_KEY: &str = "sim-signing-key-0123456789abcdef";
/// The environment variable a simulated business's tools name for their signing secret (the
/// world gives the proxy its value without touching the process environment).
pub const SIM_TOOL_SECRET_ENV: &str = "SIM_TOOL_SECRET";
/// Its value: the key the simulated tool endpoint checks signatures with.
pub const SIM_TOOL_SECRET: &str = "whsec_sim_0123456789abcdef";
/// Admin API token with the `admin` role in the simulated world.
pub const SIM_ADMIN_TOKEN: &str = "sim-admin-token";
/// Admin API token with the `viewer` role in the simulated world.
pub const SIM_VIEWER_TOKEN: &str = "sim-viewer-token";

/// A change to the proxy's configuration, applied before it starts.
pub type Configure = Box<dyn FnOnce(&mut Config) + Send>;

/// How to build the world.
#[derive(Default)]
pub struct WorldOptions {
    /// The simulated upstream's behaviour.
    pub upstream: SimUpstreamConfig,
    /// Database URL; `None` uses a fresh SQLite file in a temporary directory.
    pub database_url: Option<String>,
    /// Changes to the built-in default configuration (applied after the world's own settings).
    pub configure: Option<Configure>,
    /// Prism's base URL: the simulated Twilio REST API has every request validated against
    /// Twilio's OpenAPI description first ([`SimTwilioRest::start_validated`]). `None`: not
    /// validated.
    pub twilio_validator: Option<String>,
}

/// The running world.
pub struct World {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// The simulated upstream.
    pub upstream: SimUpstream,
    /// The simulated Twilio REST API (`fallback.twilio_api_url` points at it).
    pub twilio: SimTwilioRest,
    /// The proxy's database (shared with the proxy).
    pub store: Store,
    /// The proxy's configuration.
    pub config: Config,
    /// Reports of finished calls, in the order they ended.
    pub reports: mpsc::UnboundedReceiver<CallReport>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl World {
    /// Starts the simulated upstream and the proxy.
    ///
    /// Errors: binding, the database, migrations or the prompt files failed.
    pub async fn start(options: WorldOptions) -> anyhow::Result<World> {
        voxrelay::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let upstream = SimUpstream::start(([127, 0, 0, 1], 0).into(), options.upstream).await?;
        let listener = http::bind(([127, 0, 0, 1], 0).into()).await?;
        let proxy_addr = listener.local_addr()?;

        let mut config = Config::from_toml(DEFAULT_TOML, DEFAULT_PATH, |_| None)?;
        config.server.listen = proxy_addr;
        config.server.public_host = proxy_addr.to_string();
        config.server.public_scheme = "http".into();
        config.upstream.url = upstream.url();
        let twilio =
            SimTwilioRest::start_validated(SIM_TWILIO_AUTH_TOKEN, options.twilio_validator).await?;
        config.fallback.twilio_api_url = twilio.url();
        config.database.url = match options.database_url {
            Some(url) => url,
            None => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("voxrelay.db").display()
            ),
        };
        // The world stops at once when asked (a test's calls have ended by then); the drain
        // is tested on the binary.
        config.lifecycle.drain_deadline_s = 0;
        if let Some(configure) = options.configure {
            configure(&mut config);
        }
        let secrets = Secrets {
            openai_api_key: None,
            twilio_auth_token: SIM_TWILIO_AUTH_TOKEN.into(),
            signing_key: SIM_SIGNING_KEY.as_bytes().to_vec(),
            admin_tokens: vec![
                (SIM_ADMIN_TOKEN.into(), Role::Admin),
                (SIM_VIEWER_TOKEN.into(), Role::Viewer),
            ],
            // Outbound calls are placed for this account (the simulated Twilio's).
            twilio_account_sid: Some(crate::caller::account_sid()),
            twilio_api_key: None,
            tool_secrets: voxrelay::tools::SecretSource::fixed(
                [(SIM_TOOL_SECRET_ENV.to_string(), SIM_TOOL_SECRET.to_string())].into(),
            ),
        };
        let store = voxrelay::bootstrap::store(&config).await?;
        let prompts = voxrelay::bootstrap::prompts(&config)?;
        voxrelay::prompt::warm_tokenizer();
        let sanitizer = voxrelay::bootstrap::sanitizer(&config)?;
        let (report_tx, reports) = mpsc::unbounded_channel();
        let state = AppState::new(
            config.clone(),
            secrets,
            store.clone(),
            prompts,
            sanitizer,
            Some(report_tx),
        );
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, state, async move {
            let _ = stop.await;
        }));
        Ok(World {
            proxy_addr,
            upstream,
            twilio,
            store,
            config,
            reports,
            shutdown: Some(shutdown),
            server,
            _dir: dir,
        })
    }

    /// Creates a business with one phone number.
    pub async fn add_business(
        &self,
        id: &str,
        name: &str,
        prompt: &str,
        greeting: &str,
        number: &str,
    ) -> anyhow::Result<Business> {
        let mut new = NewBusiness::named(name);
        new.id = Some(id.to_string());
        new.ai_prompt = prompt.to_string();
        new.outbound_ai_prompt = String::new();
        new.greeting_instructions = greeting.to_string();
        let business = self.store.add_business(&new).await?;
        self.store.add_number(number, id).await?;
        Ok(business)
    }

    /// A simulated Twilio call to `to` with `speech` (8 kHz mu-law), signed for this proxy.
    /// Its stream is registered with [`World::twilio`], so a redirect ends it as Twilio would.
    pub fn caller(&self, call_sid: &str, to: &str, speech: Vec<u8>) -> CallerConfig {
        let mut caller = CallerConfig::inbound(
            &format!("http://{}/twilio/voice", self.proxy_addr),
            SIM_TWILIO_AUTH_TOKEN,
            call_sid,
            "+14155550100",
            to,
            speech,
        );
        caller.live_calls = Some(self.twilio.live_calls());
        caller
    }

    /// Places a call and, when it streamed, waits (up to 10 s) for the proxy's report of it.
    pub async fn call(
        &mut self,
        caller: CallerConfig,
    ) -> anyhow::Result<(CallerReport, Option<CallReport>)> {
        let call_sid = caller.call_sid.clone();
        let report = caller::run(caller).await?;
        let proxy_report = if report.streamed {
            self.report_for(&call_sid, Duration::from_secs(10)).await
        } else {
            None
        };
        Ok((report, proxy_report))
    }

    /// Waits for the report of `call_sid`, dropping reports of other calls.
    pub async fn report_for(&mut self, call_sid: &str, limit: Duration) -> Option<CallReport> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(report)) if report.call_sid == call_sid => return Some(report),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Stops the proxy and the simulated upstream.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(3), &mut self.server).await;
        self.server.abort();
        self.store.close().await;
        self.upstream.shutdown().await;
        self.twilio.shutdown();
    }
}
