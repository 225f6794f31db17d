//! The OpenAI Realtime API (GA interface) as the proxy speaks it: client events we send, server
//! events we read, and the upstream WebSocket connection. Azure OpenAI speaks the same protocol.
//!
//! Protocol facts and their sources: `shared/protocol/openai-realtime.md` (the official `openai`
//! Python SDK types under `openai/types/realtime/`, and
//! <https://platform.openai.com/docs/api-reference/realtime>). No call logic lives here.

pub mod events;
pub mod failover;
pub mod upstream;

pub use events::{ClientEvent, ServerEvent, SessionConfig, TurnDetection};
pub use failover::Upstreams;
pub use upstream::{Provider, UpstreamError, UpstreamSettings, UpstreamSocket};
