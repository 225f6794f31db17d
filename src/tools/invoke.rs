//! One function tool call over HTTP: the signed POST to the tool's endpoint, bounded in time
//! and size, and every way it can fail turned into a [`ToolStatus`] and an output the model
//! can speak about.
//!
//! The request: `POST <endpoint>`, `Content-Type: application/json`, the
//! [`signature::HEADER`] header, and the body
//! `{"tool": <name>, "call_id": <the model's call_id>, "call_sid": "CA…", "business_id": …,
//! "arguments": {…}}`. A 2xx answer's body (at most `tools.max_response_bytes`) is given to
//! the model as the `function_call_output`, as it is (`{"ok":true}` when empty).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::domain::ToolStatus;
use crate::tools::signature;
use crate::tools::{FunctionTool, ToolFailure};

/// What one call of a function tool needs besides the tool.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The model's `call_id`.
    pub call_id: String,
    /// The call's CallSid.
    pub call_sid: String,
    /// The call's business.
    pub business_id: String,
    /// The checked arguments.
    pub arguments: serde_json::Value,
}

/// How a tool call ended.
#[derive(Debug, Clone)]
pub struct ToolResult {
    /// The status (recorded and in the metric label).
    pub status: ToolStatus,
    /// The `function_call_output` text.
    pub output: String,
    /// When the request was handed to the HTTP client (after the body was built and signed).
    pub sent_at: Option<Instant>,
    /// When the endpoint's answer was read in full (or the call failed).
    pub answered_at: Instant,
}

/// The body sent to the endpoint, and its signature header value, signed at `now_s` (unix
/// seconds) with `secret`.
pub fn request_body(
    tool: &str,
    invocation: &Invocation,
    secret: &[u8],
    now_s: i64,
) -> (Vec<u8>, String) {
    let body = json!({
        "tool": tool,
        "call_id": invocation.call_id,
        "call_sid": invocation.call_sid,
        "business_id": invocation.business_id,
        "arguments": invocation.arguments,
    })
    .to_string()
    .into_bytes();
    let header = signature::sign(secret, now_s, &body);
    (body, header)
}

/// Calls `function` with `invocation`, signed with `secret`, through `client`: never longer
/// than the tool's `timeout_ms`, never reading more than `max_bytes` of its answer.
pub async fn call(
    client: &reqwest::Client,
    function: &FunctionTool,
    invocation: &Invocation,
    secret: &[u8],
    max_bytes: usize,
) -> ToolResult {
    let tool = &function.tool;
    let timeout = Duration::from_millis(u64::try_from(tool.timeout_ms).unwrap_or(1).max(1));
    let now_s = crate::store::now_ms() / 1000;
    let (body, header) = request_body(&tool.name, invocation, secret, now_s);
    let sent_at = Instant::now();
    let exchange = async {
        let mut answer = client
            .post(&tool.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, header)
            .body(body)
            .send()
            .await
            .map_err(|e| failure_of(&tool.name, &e))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(ToolFailure::new(
                &tool.name,
                ToolStatus::HttpError,
                &format!("HTTP {}", status.as_u16()),
            ));
        }
        if answer
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(too_large(&tool.name, max_bytes));
        }
        let mut read = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| failure_of(&tool.name, &e))?
        {
            if read.len() + chunk.len() > max_bytes {
                return Err(too_large(&tool.name, max_bytes));
            }
            read.extend_from_slice(&chunk);
        }
        Ok(read)
    };
    let outcome = match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ToolFailure::new(
            &tool.name,
            ToolStatus::Timeout,
            &format!("no answer within {} ms", timeout.as_millis()),
        )),
    };
    let answered_at = Instant::now();
    match outcome {
        Ok(read) => {
            let text = String::from_utf8_lossy(&read).trim().to_string();
            ToolResult {
                status: ToolStatus::Ok,
                output: if text.is_empty() {
                    r#"{"ok":true}"#.to_string()
                } else {
                    text
                },
                sent_at: Some(sent_at),
                answered_at,
            }
        }
        Err(failure) => ToolResult {
            status: failure.status,
            output: failure.output(),
            sent_at: Some(sent_at),
            answered_at,
        },
    }
}

/// A failure with no request made (invalid arguments, no secret, an unknown tool).
pub fn refused(failure: ToolFailure) -> ToolResult {
    ToolResult {
        status: failure.status,
        output: failure.output(),
        sent_at: None,
        answered_at: Instant::now(),
    }
}

fn too_large(tool: &str, max_bytes: usize) -> ToolFailure {
    ToolFailure::new(
        tool,
        ToolStatus::TooLarge,
        &format!("more than {max_bytes} bytes"),
    )
}

/// A transport error as a status: a timeout inside the client counts as one, the rest as a
/// connection error.
fn failure_of(tool: &str, error: &reqwest::Error) -> ToolFailure {
    if error.is_timeout() {
        ToolFailure::new(tool, ToolStatus::Timeout, "the request timed out")
    } else {
        ToolFailure::new(tool, ToolStatus::ConnectionError, "")
    }
}
