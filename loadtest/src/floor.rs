//! The floor: the least a relay between Twilio and the Realtime API can do, to measure the
//! proxy against.
//!
//! One task per call swaps envelopes and nothing else: a Twilio `media` frame becomes an
//! `input_audio_buffer.append` with the same base64 payload, and a
//! `response.output_audio.delta` becomes a Twilio `media` frame. It uses the same kinds of
//! sockets as the proxy (axum's WebSocket toward Twilio, tokio-tungstenite toward the
//! upstream), the same frame parsers and writers, and writes each message directly from the
//! task that read it. It keeps no state beyond the StreamSid, sends no marks, no clear, no
//! prompts, records no metrics and checks no signature or token: its webhook answers any POST
//! with a stream to itself, and its stream asks the upstream for one response (the greeting, as
//! the simulated upstream's echo mode needs before it echoes).
//!
//! Run as `voxrelay-loadtest floor` (a child process, measured from `/proc` like the proxy).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as UpMessage;

use voxrelay::realtime::events::{self as rt, ClientEvent, ServerEvent};
use voxrelay::twilio::media::{self as tw, Inbound};

/// What every floor connection needs.
#[derive(Clone)]
struct Floor {
    /// `ws://HOST:PORT/twilio/media`, for the TwiML.
    stream_url: String,
    /// The upstream's WebSocket URL.
    upstream_url: String,
}

/// Serves the floor relay on `listen`, relaying to `upstream_url`, until the process ends.
///
/// Errors: the address cannot be bound.
pub async fn serve(listen: SocketAddr, upstream_url: String) -> anyhow::Result<()> {
    let floor = Floor {
        stream_url: format!("ws://{listen}/twilio/media"),
        upstream_url,
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "" }))
        .route("/twilio/voice", post(voice))
        .route("/twilio/media", get(media))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn voice(State(floor): State<Floor>) -> Response {
    (
        [("content-type", "text/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"{}\" /></Connect></Response>",
            floor.stream_url
        ),
    )
        .into_response()
}

async fn media(State(floor): State<Floor>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| relay(floor, socket))
}

/// One call: wait for `start`, dial the upstream, swap envelopes until either side ends.
async fn relay(floor: Floor, mut twilio: WebSocket) {
    let stream_sid = loop {
        match twilio.recv().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(Inbound::Start(start)) = tw::parse(text.as_str()) {
                    break start.stream_sid;
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(16 * 1024);
    let Ok((upstream, _)) = tokio_tungstenite::connect_async_with_config(
        floor.upstream_url.as_str(),
        Some(config),
        true,
    )
    .await
    else {
        return;
    };
    let (mut up_sink, mut up_stream) = upstream.split();
    let (mut tw_sink, mut tw_stream) = twilio.split();
    if up_sink
        .send(UpMessage::Text(
            ClientEvent::ResponseCreate.to_json().into(),
        ))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            message = tw_stream.next() => match message {
                Some(Ok(Message::Text(text))) => match tw::parse(text.as_str()) {
                    Ok(Inbound::Media { payload, .. }) => {
                        let append = ClientEvent::Append(&payload).to_json();
                        if up_sink.send(UpMessage::Text(append.into())).await.is_err() {
                            break;
                        }
                    }
                    Ok(Inbound::Stop) => break,
                    _ => {}
                },
                Some(Ok(_)) => {}
                _ => break,
            },
            message = up_stream.next() => match message {
                Some(Ok(UpMessage::Text(text))) => {
                    if let Ok(ServerEvent::AudioDelta { delta, .. }) = rt::parse(text.as_str()) {
                        let media = tw::media(&stream_sid, &delta);
                        if tw_sink.send(Message::Text(media.into())).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    let _ = up_sink.close().await;
    let _ = tw_sink.close().await;
}
