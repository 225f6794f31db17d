//! One call's tool calls: the model's function calls, answered without ever making the call
//! wait on a tool.
//!
//! A call of one of the business's functions is checked against its schema, then POSTed by a
//! task of its own ([`crate::tools::invoke::call`]); its result comes back on a channel the
//! call's task reads. While any call is out, a hold clip is due
//! [`ToolCallsOptions::hold_after`] after the model's own audio has finished playing (once per
//! run of calls). Calls the proxy answers at once (invalid arguments, an unknown tool, a
//! missing secret) never leave the process. Each `call_id` is acted on once, whether it came
//! in `response.function_call_arguments.done` or in `response.done`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::domain::ToolStatus;
use crate::guard::redact::redact;
use crate::realtime::events::FunctionCall;
use crate::tools::invoke::{self, Invocation, ToolResult};
use crate::tools::{Builtin, Lookup, SecretSource, ToolFailure, ToolSet};

/// How tool calls are made (`[tools]`).
#[derive(Debug, Clone)]
pub struct ToolCallsOptions {
    /// The HTTP client every tool call of the instance shares (its connection pool); `None`
    /// when it could not be built (no TLS provider), and every call is answered
    /// `connection_error`.
    pub client: Option<reqwest::Client>,
    /// Silence after the model's audio before the hold clip, while a tool runs.
    pub hold_after: Duration,
    /// The largest tool answer read, bytes.
    pub max_response_bytes: usize,
    /// Where the tools' signing secrets are read.
    pub secrets: SecretSource,
}

impl ToolCallsOptions {
    /// The options of `[tools]`, with a client of their own (logged when it cannot be
    /// built: the process's TLS provider must be installed first).
    pub fn from_config(config: &crate::config::ToolsConfig) -> ToolCallsOptions {
        let client = match reqwest::Client::builder().tcp_nodelay(true).build() {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "the tools' HTTP client cannot be built; tool calls will fail");
                None
            }
        };
        ToolCallsOptions {
            client,
            hold_after: Duration::from_millis(config.hold_after_ms),
            max_response_bytes: config.max_response_bytes,
            secrets: SecretSource::environment(),
        }
    }
}

/// A tool call in progress.
#[derive(Debug)]
struct Pending {
    call_id: String,
    tool: String,
    /// When the model's call arrived.
    at: Instant,
    at_ms: i64,
    /// Redacted arguments, for the record.
    arguments: String,
}

/// A finished tool call: what to tell the model, and what to record.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The model's `call_id`.
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// How it ended.
    pub status: ToolStatus,
    /// The `function_call_output`.
    pub output: String,
    /// The model's call to now, ms.
    pub latency_ms: f64,
    /// The model's call to the request handed to the HTTP client, µs (`None`: no request).
    pub before_request_us: Option<u64>,
    /// When the endpoint's answer was read in full.
    pub answered_at: Instant,
    /// When the model's call arrived, epoch ms.
    pub at_ms: i64,
    /// Redacted arguments.
    pub arguments: String,
    /// Whether every call of the run is now done (the model may be asked to answer).
    pub last: bool,
}

/// What a model's function call turned into.
#[derive(Debug)]
pub enum Started {
    /// A `call_id` already acted on: nothing to do.
    Duplicate,
    /// A built-in, for the session to carry out.
    Builtin(Builtin, FunctionCall),
    /// Answered at once, with no request (invalid arguments, unknown tool, missing secret).
    Answered(Finished),
    /// A request is out; its result arrives through [`ToolCalls::next`].
    Running,
}

/// One call's tool calls.
#[derive(Debug)]
pub struct ToolCalls {
    tools: Arc<ToolSet>,
    options: ToolCallsOptions,
    call_sid: String,
    business_id: String,
    seen: HashSet<String>,
    pending: Vec<Pending>,
    /// The hold clip played during the current run of calls, ms (0: not yet).
    held_ms: u64,
    tx: mpsc::UnboundedSender<(String, ToolResult)>,
    rx: mpsc::UnboundedReceiver<(String, ToolResult)>,
}

impl ToolCalls {
    /// The tool calls of call `call_sid` of `business_id`, with `tools`.
    pub fn new(
        tools: Arc<ToolSet>,
        options: ToolCallsOptions,
        call_sid: &str,
        business_id: &str,
    ) -> ToolCalls {
        let (tx, rx) = mpsc::unbounded_channel();
        ToolCalls {
            tools,
            options,
            call_sid: call_sid.to_string(),
            business_id: business_id.to_string(),
            seen: HashSet::new(),
            pending: Vec::new(),
            held_ms: 0,
            tx,
            rx,
        }
    }

    /// The model called `call.name` at `now`.
    pub fn on_call(&mut self, call: FunctionCall, now: Instant) -> Started {
        if call.call_id.is_empty() || !self.seen.insert(call.call_id.clone()) {
            return Started::Duplicate;
        }
        let at_ms = crate::store::now_ms();
        let arguments = redact(&call.arguments).into_owned();
        let tools = self.tools.clone();
        let function = match tools.lookup(&call.name) {
            Lookup::Builtin(builtin) => return Started::Builtin(builtin, call),
            Lookup::Unknown => {
                let failure = ToolFailure::new(&call.name, ToolStatus::UnknownTool, "");
                return Started::Answered(self.answered(call, arguments, at_ms, now, failure));
            }
            Lookup::Function(function) => function,
        };
        let checked = match function.check(&call.arguments) {
            Ok(value) => value,
            Err(why) => {
                let failure = ToolFailure::new(&call.name, ToolStatus::InvalidArguments, &why);
                return Started::Answered(self.answered(call, arguments, at_ms, now, failure));
            }
        };
        let secret = match self.options.secrets.get(&function.tool.secret_env) {
            Some(secret) => secret,
            None => {
                tracing::warn!(call_sid = %self.call_sid, tool = %call.name,
                    secret_env = %function.tool.secret_env,
                    "the tool's signing secret is not in the environment; not called");
                let failure = ToolFailure::new(&call.name, ToolStatus::NotConfigured, "");
                return Started::Answered(self.answered(call, arguments, at_ms, now, failure));
            }
        };
        let Some(client) = self.options.client.clone() else {
            let failure = ToolFailure::new(&call.name, ToolStatus::ConnectionError, "");
            return Started::Answered(self.answered(call, arguments, at_ms, now, failure));
        };
        let invocation = Invocation {
            call_id: call.call_id.clone(),
            call_sid: self.call_sid.clone(),
            business_id: self.business_id.clone(),
            arguments: checked,
        };
        self.pending.push(Pending {
            call_id: call.call_id.clone(),
            tool: call.name.clone(),
            at: now,
            at_ms,
            arguments,
        });
        let (max_bytes, tx) = (self.options.max_response_bytes, self.tx.clone());
        let (call_id, name) = (call.call_id, call.name);
        tokio::spawn(async move {
            if let Lookup::Function(function) = tools.lookup(&name) {
                let result =
                    invoke::call(&client, function, &invocation, secret.as_bytes(), max_bytes)
                        .await;
                // The call may have ended meanwhile: then nobody waits for the result.
                let _ = tx.send((call_id, result));
            }
        });
        Started::Running
    }

    /// The next tool result; never resolves while none is out.
    pub async fn next(&mut self) -> Option<(String, ToolResult)> {
        if self.pending.is_empty() {
            return std::future::pending().await;
        }
        self.rx.recv().await
    }

    /// A result arrived at `now`: the finished call, or `None` for a `call_id` not pending.
    pub fn on_result(
        &mut self,
        call_id: &str,
        result: ToolResult,
        now: Instant,
    ) -> Option<Finished> {
        let index = self.pending.iter().position(|p| p.call_id == call_id)?;
        let pending = self.pending.remove(index);
        let last = self.pending.is_empty();
        let finished = Finished {
            call_id: pending.call_id,
            tool: pending.tool,
            status: result.status,
            output: result.output,
            latency_ms: now.saturating_duration_since(pending.at).as_secs_f64() * 1000.0,
            before_request_us: result
                .sent_at
                .map(|sent| sent.saturating_duration_since(pending.at).as_micros() as u64),
            answered_at: result.answered_at,
            at_ms: pending.at_ms,
            arguments: pending.arguments,
            last,
        };
        Some(finished)
    }

    /// When the hold clip is due: [`ToolCallsOptions::hold_after`] after the later of the
    /// oldest pending call and `plays_until` (the end of the model's audio), while a call is
    /// out and no clip has played in this run. `None` otherwise.
    pub fn hold_due(&self, plays_until: Option<Instant>) -> Option<Instant> {
        if self.held_ms > 0 {
            return None;
        }
        let oldest = self.pending.iter().map(|p| p.at).min()?;
        Some(oldest.max(plays_until.unwrap_or(oldest)) + self.options.hold_after)
    }

    /// The hold clip of `ms` played.
    pub fn on_hold_played(&mut self, ms: u64) {
        self.held_ms = ms.max(1);
    }

    /// The hold audio of the run that just finished, ms; the next run starts with none.
    pub fn take_held_ms(&mut self) -> u64 {
        std::mem::take(&mut self.held_ms)
    }

    /// Whether a tool call is out.
    pub fn is_running(&self) -> bool {
        !self.pending.is_empty()
    }

    fn answered(
        &mut self,
        call: FunctionCall,
        arguments: String,
        at_ms: i64,
        now: Instant,
        failure: ToolFailure,
    ) -> Finished {
        let result = invoke::refused(failure);
        Finished {
            call_id: call.call_id,
            tool: call.name,
            status: result.status,
            output: result.output,
            latency_ms: result
                .answered_at
                .saturating_duration_since(now)
                .as_secs_f64()
                * 1000.0,
            before_request_us: None,
            answered_at: result.answered_at,
            at_ms,
            arguments,
            last: self.pending.is_empty(),
        }
    }
}
