//! `voxrelay serve`: the proxy.

use anyhow::Context;

use voxrelay::bootstrap;
use voxrelay::config::{Config, Secrets};
use voxrelay::http::{self, AppState};

/// Runs the proxy with the configuration `config` until Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let secrets = Secrets::from_env(config.upstream_is_local())?;
    let store = bootstrap::store(&config).await?;
    let prompts = bootstrap::prompts(&config)?;
    let sanitizer = bootstrap::sanitizer(&config)?;
    tokio::task::spawn_blocking(voxrelay::prompt::warm_tokenizer).await?;
    let listener = http::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, public_host = %config.server.public_host,
        upstream = %config.upstream.url, model = %config.upstream.model, "voxrelay serving");
    let state = AppState::new(config, secrets, store, prompts, sanitizer, None);
    http::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
    .await?;
    Ok(())
}
