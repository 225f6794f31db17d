//! The upstream WebSocket: dialling the Realtime API (or Azure OpenAI, or the simulator).
//!
//! OpenAI GA: `wss://api.openai.com/v1/realtime?model=<model>` with
//! `Authorization: Bearer <key>` and no `OpenAI-Beta` header (sending it selects the retired beta
//! shape and the server closes with 4000). Azure OpenAI GA:
//! `wss://<resource>.openai.azure.com/openai/v1/realtime?model=<deployment>` with an `api-key`
//! header. Source: `shared/protocol/openai-realtime.md` §1 (the SDK's `_connect_ws` and
//! `lib/azure.py`).

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The upstream socket type.
pub type UpstreamSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which service the upstream is, which decides the auth header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI: `Authorization: Bearer <key>`.
    Openai,
    /// Azure OpenAI: `api-key: <key>`.
    Azure,
}

/// Where and how to dial.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Base WebSocket URL, without the `model` query (`wss://api.openai.com/v1/realtime`).
    pub url: String,
    /// Model (OpenAI) or deployment name (Azure), sent as `?model=`.
    pub model: String,
    /// Decides the auth header.
    pub provider: Provider,
    /// The API key; `None` sends no auth header (the local simulator needs none).
    pub api_key: Option<String>,
    /// Limit on TCP + TLS + WebSocket handshake, ms.
    pub connect_timeout_ms: u64,
    /// SO_SNDBUF of the socket, bytes; 0 leaves the kernel's own sizing.
    pub send_buffer_bytes: usize,
}

/// Dialling the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The URL or a header value is not valid.
    #[error("invalid upstream request for {url}: {reason}")]
    Request {
        /// The URL (no secrets in it).
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The handshake failed (refused, TLS, HTTP status other than 101, …).
    #[error("upstream connect to {url} failed: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The WebSocket error.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// No answer within the connect timeout.
    #[error("upstream connect to {url} timed out after {timeout_ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit, ms.
        timeout_ms: u64,
    },
}

impl UpstreamSettings {
    /// The full URL with the `model` query parameter.
    pub fn url_with_model(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let model: String = form_urlencoded::byte_serialize(self.model.as_bytes()).collect();
        format!("{}{}model={}", self.url, sep, model)
    }
}

/// Opens the upstream WebSocket with TCP_NODELAY set (Nagle would hold small frames ~40 ms).
///
/// Errors: [`UpstreamError`]; the caller decides whether the call can go on without it.
pub async fn connect(settings: &UpstreamSettings) -> Result<UpstreamSocket, UpstreamError> {
    let url = settings.url_with_model();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| UpstreamError::Request {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    if let Some(key) = &settings.api_key {
        let (name, value) = match settings.provider {
            Provider::Openai => ("authorization", format!("Bearer {key}")),
            Provider::Azure => ("api-key", key.clone()),
        };
        let value = HeaderValue::from_str(&value).map_err(|_| UpstreamError::Request {
            url: url.clone(),
            reason: "the API key has characters not allowed in an HTTP header".into(),
        })?;
        request.headers_mut().insert(name, value);
    }
    let timeout = Duration::from_millis(settings.connect_timeout_ms);
    match tokio::time::timeout(timeout, dial(request, settings.send_buffer_bytes)).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(e)) => Err(UpstreamError::Connect {
            url,
            source: Box::new(e),
        }),
        Err(_) => Err(UpstreamError::Timeout {
            url,
            timeout_ms: settings.connect_timeout_ms,
        }),
    }
}

/// TCP (TCP_NODELAY on, SO_SNDBUF as asked), then TLS for `wss://`, then the WebSocket
/// handshake.
async fn dial(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    send_buffer_bytes: usize,
) -> Result<UpstreamSocket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    if send_buffer_bytes == 0 {
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), true)
                .await?;
        return Ok(socket);
    }
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or(WsError::Url(
            tokio_tungstenite::tungstenite::error::UrlError::NoHostName,
        ))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(WsError::Io)?;
    tcp.set_nodelay(true).map_err(WsError::Io)?;
    socket2::SockRef::from(&tcp)
        .set_send_buffer_size(send_buffer_bytes)
        .map_err(WsError::Io)?;
    let (socket, _) =
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(socket_config()), None)
            .await?;
    Ok(socket)
}

/// Buffer sizes of the upstream WebSocket, bytes. tungstenite's defaults reserve 128 KiB for
/// reading per connection, which a call's Realtime traffic (events of a few KiB; audio deltas
/// of about 1 KiB) never needs: 8 KiB, grown on demand for a larger event. Writes are
/// buffered up to 16 KiB before they go out (the writer flushes when its queue is empty).
pub const READ_BUFFER_BYTES: usize = 8 * 1024;
/// See [`READ_BUFFER_BYTES`].
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}
