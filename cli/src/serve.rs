//! `voxrelay serve`: the proxy.

use anyhow::Context;

use voxrelay::bootstrap;
use voxrelay::config::{Config, Secrets};
use voxrelay::http::{self, AppState};

/// Runs the proxy with the configuration `config` until SIGTERM or SIGINT and the drain after
/// it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let secrets = Secrets::from_env(config.upstream_is_local())?;
    bootstrap::raise_open_file_limit(&config);
    let store = bootstrap::store(&config).await?;
    bootstrap::check_gate_policies(&config, &store).await?;
    let prompts = bootstrap::prompts(&config)?;
    let sanitizer = bootstrap::sanitizer(&config)?;
    tokio::task::spawn_blocking(voxrelay::prompt::warm_tokenizer).await?;
    let listener = http::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, public_host = %config.server.public_host,
        upstream = %config.upstream.url, model = %config.upstream.model, "voxrelay serving");
    let state = AppState::new(config, secrets, store, prompts, sanitizer, None);
    http::serve(listener, state, stop_signal()).await?;
    Ok(())
}

/// Resolves on the first SIGTERM (what an orchestrator sends on a deploy) or SIGINT (Ctrl-C):
/// the start of the drain. A second signal during the drain is logged and does not cut it
/// short; SIGKILL does, and the next start closes the calls it cut as `crashed`.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stop signal: draining");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!(
                "another stop signal during the drain: the drain goes on (SIGKILL cuts it)"
            );
        }
    });
}
