//! A business's tool endpoint, simulated: an HTTP server on loopback that receives the proxy's
//! signed tool requests, checks each signature the way a business's receiver would (the
//! documented scheme, [`voxrelay::tools::signature::verify`]), and answers per tool as
//! scripted: at once, slowly, never (past the tool's timeout), with an error status, or with an
//! oversized body. Every request is kept for the test to read, with the time it arrived.
//!
//! `POST /tools/{name}`: the body is the proxy's request (`{"tool", "call_id", "call_sid",
//! "business_id", "arguments"}`). A request whose signature does not verify is answered 401
//! and recorded as such.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::task::JoinHandle;

use voxrelay::tools::signature;

/// How the endpoint answers one tool.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Wait before answering, ms.
    pub delay_ms: u64,
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON text by convention).
    pub body: String,
}

impl Behaviour {
    /// 200 with `body` after `delay_ms`.
    pub fn ok(body: &str, delay_ms: u64) -> Behaviour {
        Behaviour {
            delay_ms,
            status: 200,
            body: body.to_string(),
        }
    }
}

/// A request the endpoint received.
#[derive(Debug, Clone)]
pub struct ToolRequest {
    /// The tool in the path.
    pub tool: String,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: serde_json::Value,
    /// The `Voxrelay-Signature` header.
    pub signature: String,
    /// Whether the signature verified against the body with the endpoint's secret.
    pub verified: bool,
    /// When the request's body had been read.
    pub at: Instant,
    /// When the answer was handed back (after the scripted delay).
    pub answered_at: Option<Instant>,
}

#[derive(Clone)]
struct Shared {
    secret: Vec<u8>,
    behaviours: Arc<HashMap<String, Behaviour>>,
    requests: Arc<Mutex<Vec<ToolRequest>>>,
}

/// The running endpoint.
pub struct SimToolEndpoint {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<ToolRequest>>>,
    task: JoinHandle<()>,
}

impl SimToolEndpoint {
    /// Starts the endpoint on 127.0.0.1 (a free port), checking signatures with `secret` and
    /// answering each tool as `behaviours` says (an unscripted tool gets 404).
    ///
    /// Errors: the port cannot be bound.
    pub async fn start(
        secret: &str,
        behaviours: HashMap<String, Behaviour>,
    ) -> std::io::Result<SimToolEndpoint> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            secret: secret.as_bytes().to_vec(),
            behaviours: Arc::new(behaviours),
            requests: requests.clone(),
        };
        let app = Router::new()
            .route("/tools/{name}", post(receive))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimToolEndpoint {
            addr,
            requests,
            task,
        })
    }

    /// The endpoint URL of tool `name` (`http://127.0.0.1:PORT/tools/NAME`).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/tools/{name}", self.addr)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<ToolRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the endpoint.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for SimToolEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let header = headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let now_s = voxrelay::store::now_ms() / 1000;
    let verified = signature::verify(
        &shared.secret,
        &header,
        &body,
        now_s,
        signature::DEFAULT_TOLERANCE_S,
    )
    .is_ok();
    let index = {
        let mut requests = shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        requests.push(ToolRequest {
            tool: name.clone(),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            signature: header,
            verified,
            at,
            answered_at: None,
        });
        requests.len() - 1
    };
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Some(behaviour) = shared.behaviours.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if behaviour.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
    }
    if let Some(request) = shared
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_mut(index)
    {
        request.answered_at = Some(Instant::now());
    }
    (
        StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        behaviour.body,
    )
        .into_response()
}
