//! What a call can do besides talk: a business's function tools, its remote MCP servers, and
//! the built-in call control ([`builtin`]).
//!
//! A business's tools are stored with the business (`business_tools`), not with a prompt
//! version: a tool is an integration (an endpoint, a secret, a timeout) that operators change
//! on their own schedule, and rolling back a prompt must not bring back an endpoint that was
//! retired. A prompt version that names a tool the business no longer has is still sent; the
//! model is told `unknown_tool` if it calls it.
//!
//! For each call, [`ToolSet::compile`] turns the stored tools into the `session.tools` list
//! the Realtime API takes (`{"type":"function","name","description","parameters"}` and
//! `{"type":"mcp","server_label","server_url","allowed_tools","require_approval":"never"}`,
//! `shared/protocol/openai-realtime.md` §2.1 and "Additions") and compiles each function's
//! JSON Schema once. The model's call (`response.function_call_arguments.done`) is answered
//! with a `function_call_output`: the endpoint's answer, or an error the model can speak about
//! ([`ToolFailure`]).

pub mod builtin;
pub mod invoke;
pub mod signature;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::domain::{ToolKind, ToolStatus};
use crate::store::{BusinessTool, TransferTarget};

pub use builtin::Builtin;

/// Where tools' secrets are read: the process environment (by the variable a tool names), or
/// a fixed map (tests, the demo). Cheap to clone.
#[derive(Clone)]
pub struct SecretSource(Arc<SecretLookup>);

/// Reads a secret by its variable's name.
type SecretLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl SecretSource {
    /// Reads `std::env::var(name)`.
    pub fn environment() -> SecretSource {
        SecretSource(Arc::new(|name| std::env::var(name).ok()))
    }

    /// Reads from `secrets` only.
    pub fn fixed(secrets: std::collections::HashMap<String, String>) -> SecretSource {
        SecretSource(Arc::new(move |name| secrets.get(name).cloned()))
    }

    /// The secret in variable `name`, when set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }
}

impl Default for SecretSource {
    fn default() -> Self {
        SecretSource::environment()
    }
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSource(***)")
    }
}

/// The longest a tool endpoint may take, ms (a caller will not wait longer).
pub const MAX_TIMEOUT_MS: i64 = 30_000;

/// A function tool, ready for calls: its stored fields and its compiled argument schema.
pub struct FunctionTool {
    /// The tool as stored.
    pub tool: BusinessTool,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for FunctionTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionTool")
            .field("name", &self.tool.name)
            .finish()
    }
}

impl FunctionTool {
    /// Checks `arguments` (the model's JSON text) against the schema: the parsed arguments, or
    /// the first few errors as one line (paths and what was wrong, never the values).
    pub fn check(&self, arguments: &str) -> Result<Value, String> {
        let value: Value = serde_json::from_str(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        })
        .map_err(|e| format!("the arguments are not JSON ({e})"))?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(3)
            .map(|e| {
                let path = e.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {}", schema_complaint(&e))
            })
            .collect();
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(errors.join("; "))
        }
    }
}

/// What a schema error says, without the offending value (which may be a caller's number).
fn schema_complaint(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind as K;
    match error.kind() {
        K::Required { property } => {
            format!("{} is required", property.as_str().unwrap_or("a property"))
        }
        K::Type { .. } => "has the wrong type".into(),
        K::Enum { .. } => "is not one of the allowed values".into(),
        K::Pattern { .. } => "does not match the pattern".into(),
        K::AdditionalProperties { unexpected } => {
            format!("unexpected properties {}", unexpected.join(", "))
        }
        K::MinLength { .. } | K::MaxLength { .. } => "has the wrong length".into(),
        K::Minimum { .. }
        | K::Maximum { .. }
        | K::ExclusiveMinimum { .. }
        | K::ExclusiveMaximum { .. } => "is out of range".into(),
        K::Format { format } => format!("is not a valid {format}"),
        _ => "does not match the schema".into(),
    }
}

/// Compiles `schema` as a tool's argument schema.
///
/// Errors: a message naming what is wrong (not an object schema, or not a valid JSON Schema).
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("parameters must be a JSON Schema of type \"object\"".into());
    }
    jsonschema::validator_for(schema)
        .map_err(|e| format!("parameters is not a valid JSON Schema: {e}"))
}

/// One call's tools: what goes into `session.tools`, and how each call is answered.
#[derive(Debug, Default)]
pub struct ToolSet {
    functions: Vec<FunctionTool>,
    builtins: Vec<Builtin>,
    /// Who `transfer_call` may put the caller through to.
    transfer_targets: Vec<TransferTarget>,
    definitions: Arc<Vec<Value>>,
}

impl ToolSet {
    /// The set for a business with `tools` and the built-ins `builtins` switched on. A stored
    /// function whose schema no longer compiles is left out and returned with the reason (the
    /// store's checks make that a hand edit): the call runs without it.
    /// An MCP tool's bearer token is read from `secrets`.
    /// `transfer_targets` are who `transfer_call` may put the caller through to (its schema's
    /// `enum`).
    pub fn compile(
        tools: &[BusinessTool],
        builtins: &[Builtin],
        transfer_targets: &[TransferTarget],
        secrets: &SecretSource,
    ) -> (ToolSet, Vec<(String, String)>) {
        let mut skipped = Vec::new();
        let mut functions = Vec::new();
        let names: Vec<&str> = transfer_targets.iter().map(|t| t.name.as_str()).collect();
        let mut definitions: Vec<Value> = builtins.iter().map(|b| b.definition(&names)).collect();
        for tool in tools {
            match tool.kind {
                ToolKind::Function => match compile_schema(&tool.parameters) {
                    Ok(validator) => {
                        definitions.push(json!({
                            "type": "function",
                            "name": tool.name,
                            "description": tool.description,
                            "parameters": tool.parameters,
                        }));
                        functions.push(FunctionTool {
                            tool: tool.clone(),
                            validator,
                        });
                    }
                    Err(e) => skipped.push((tool.name.clone(), e)),
                },
                ToolKind::Mcp => definitions.push(mcp_definition(tool, secrets)),
            }
        }
        (
            ToolSet {
                functions,
                builtins: builtins.to_vec(),
                transfer_targets: transfer_targets.to_vec(),
                definitions: Arc::new(definitions),
            },
            skipped,
        )
    }

    /// The `session.tools` list (empty: no tools).
    pub fn definitions(&self) -> Arc<Vec<Value>> {
        self.definitions.clone()
    }

    /// What a model's call of `name` is.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        if let Some(builtin) = self.builtins.iter().find(|b| b.name() == name) {
            return Lookup::Builtin(*builtin);
        }
        match self.functions.iter().find(|f| f.tool.name == name) {
            Some(function) => Lookup::Function(function),
            None => Lookup::Unknown,
        }
    }

    /// The transfer target named `name` (as the model gave it; case and surrounding spaces
    /// ignored), if the call has one.
    pub fn transfer_target(&self, name: &str) -> Option<&TransferTarget> {
        let name = name.trim();
        self.transfer_targets
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// Whether the call has no tools at all.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }
}

/// The set for `business`'s calls: its stored `tools` and the built-ins it has switched on
/// (`end_call_enabled`; `transfer_enabled` when it has transfer targets). Returns what
/// [`ToolSet::compile`] returns.
pub fn for_business(
    business: &crate::store::Business,
    tools: &[BusinessTool],
    secrets: &SecretSource,
) -> (ToolSet, Vec<(String, String)>) {
    let mut builtins = Vec::new();
    if business.end_call_enabled {
        builtins.push(Builtin::EndCall);
    }
    if business.transfer_enabled && !business.transfer_targets.is_empty() {
        builtins.push(Builtin::TransferCall);
    }
    ToolSet::compile(tools, &builtins, &business.transfer_targets, secrets)
}

/// What `session.tools` costs in every response's input, o200k_base tokens: its JSON text
/// counted (the model reads the tools with the instructions; the exact server-side rendering
/// is not published, so this is an estimate within a few tokens). 0 without tools.
pub fn tokens(definitions: &[Value]) -> usize {
    if definitions.is_empty() {
        return 0;
    }
    crate::prompt::count_tokens(&Value::Array(definitions.to_vec()).to_string())
}

/// What a model's call names.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A built-in the proxy carries out itself.
    Builtin(Builtin),
    /// One of the business's functions.
    Function(&'a FunctionTool),
    /// Nothing this call has.
    Unknown,
}

/// A remote MCP server as a `session.tools` entry. `require_approval` is always `never`: a
/// phone caller has no way to approve a call. The bearer token, when the tool names one, is
/// read from the environment now and sent as the `authorization` header.
fn mcp_definition(tool: &BusinessTool, secrets: &SecretSource) -> Value {
    let mut definition = json!({
        "type": "mcp",
        "server_label": tool.name,
        "server_url": tool.endpoint,
        "require_approval": "never",
    });
    if !tool.description.is_empty() {
        definition["server_description"] = json!(tool.description);
    }
    if !tool.allowed_tools.is_empty() {
        definition["allowed_tools"] = json!(tool.allowed_tools);
    }
    if !tool.secret_env.is_empty()
        && let Some(token) = secrets.get(&tool.secret_env)
    {
        definition["authorization"] = json!(token);
    }
    definition
}

/// Why a tool call gave no result, as the model is told it: `{"error": <status>, "message":
/// <a sentence it can act on>}` in the `function_call_output`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFailure {
    /// What went wrong.
    pub status: ToolStatus,
    /// Said to the model; names the tool, never a secret or the caller's data.
    pub message: String,
}

impl ToolFailure {
    /// A failure of `tool` with `status`, with the standard sentence for it (`detail` adds
    /// the schema's complaint or the HTTP status).
    pub fn new(tool: &str, status: ToolStatus, detail: &str) -> ToolFailure {
        let what = match status {
            ToolStatus::InvalidArguments => {
                format!(
                    "The arguments for {tool} were not valid ({detail}). Ask the caller for what is missing or wrong, then call it again."
                )
            }
            ToolStatus::Timeout => format!(
                "{tool} did not answer in time ({detail}). Tell the caller the system did not answer, and offer to take a message or try again."
            ),
            ToolStatus::HttpError => format!(
                "{tool} answered with an error ({detail}). Tell the caller it could not be done right now, and offer to take a message."
            ),
            ToolStatus::TooLarge => format!(
                "{tool} answered with more than can be read ({detail}). Tell the caller it could not be done right now."
            ),
            ToolStatus::ConnectionError => format!(
                "{tool} could not be reached. Tell the caller the system is not available right now, and offer to take a message."
            ),
            ToolStatus::UnknownTool => format!(
                "There is no tool named {tool}. Do not call it again; help the caller another way."
            ),
            ToolStatus::NotConfigured => format!(
                "{tool} is not set up on this line. Tell the caller it cannot be done on this call, and offer to take a message."
            ),
            ToolStatus::Ok | ToolStatus::Handled => detail.to_string(),
        };
        ToolFailure {
            status,
            message: what,
        }
    }

    /// The `function_call_output` text.
    pub fn output(&self) -> String {
        json!({"error": self.status.as_str(), "message": self.message}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(name: &str) -> BusinessTool {
        BusinessTool {
            name: name.into(),
            kind: ToolKind::Function,
            description: "Books.".into(),
            parameters: json!({"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}),
            endpoint: "https://tools.example.com/book".into(),
            timeout_ms: 1000,
            secret_env: "BOOK_SECRET".into(),
            allowed_tools: vec![],
            updated_at_ms: 0,
        }
    }

    #[test]
    fn the_session_tools_are_the_builtins_then_functions_and_mcp_servers() {
        let mcp = BusinessTool {
            kind: ToolKind::Mcp,
            name: "calendar".into(),
            endpoint: "https://mcp.example.com/sse".into(),
            secret_env: "CAL_TOKEN".into(),
            allowed_tools: vec!["free_slots".into()],
            ..function("calendar")
        };
        let secrets = SecretSource::fixed([("CAL_TOKEN".to_string(), "tok".to_string())].into());
        let mut broken = function("broken");
        broken.parameters = json!({"type": "object", "properties": {"x": {"type": 12}}});
        let (set, skipped) = ToolSet::compile(
            &[function("book"), mcp, broken],
            &[Builtin::EndCall],
            &[],
            &secrets,
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].0, "broken");
        let defs = set.definitions();
        assert_eq!(defs.len(), 3);
        assert_eq!(defs[0]["name"], "end_call");
        assert_eq!(
            defs[1],
            json!({"type": "function", "name": "book", "description": "Books.",
                "parameters": function("book").parameters})
        );
        assert_eq!(
            defs[2],
            json!({"type": "mcp", "server_label": "calendar",
                "server_url": "https://mcp.example.com/sse", "require_approval": "never",
                "server_description": "Books.", "allowed_tools": ["free_slots"],
                "authorization": "tok"})
        );
        assert!(matches!(
            set.lookup("end_call"),
            Lookup::Builtin(Builtin::EndCall)
        ));
        assert!(matches!(set.lookup("book"), Lookup::Function(_)));
        assert!(
            matches!(set.lookup("calendar"), Lookup::Unknown),
            "MCP calls are upstream's"
        );
    }

    #[test]
    fn arguments_are_checked_without_repeating_their_values() {
        let (set, _) = ToolSet::compile(&[function("book")], &[], &[], &SecretSource::default());
        let Lookup::Function(book) = set.lookup("book") else {
            panic!("book is a function");
        };
        assert_eq!(
            book.check(r#"{"day":"Tue"}"#).unwrap(),
            json!({"day": "Tue"})
        );
        let err = book.check(r#"{"day": 4155550199}"#).unwrap_err();
        assert!(err.contains("/day") && !err.contains("4155550199"), "{err}");
        assert!(book.check("{}").unwrap_err().contains("day is required"));
        assert!(book.check("not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn transfer_call_offers_the_business_targets_by_name() {
        let targets = [
            TransferTarget {
                name: "front desk".into(),
                number: "+15005550006".into(),
            },
            TransferTarget {
                name: "emergency line".into(),
                number: "+15005550007".into(),
            },
        ];
        let (set, _) = ToolSet::compile(
            &[],
            &[Builtin::TransferCall],
            &targets,
            &SecretSource::default(),
        );
        let defs = set.definitions();
        assert_eq!(defs[0]["name"], "transfer_call");
        assert_eq!(
            defs[0]["parameters"]["properties"]["target"]["enum"],
            json!(["front desk", "emergency line"])
        );
        assert_eq!(
            set.transfer_target(" Front Desk")
                .map(|t| t.number.as_str()),
            Some("+15005550006")
        );
        assert!(set.transfer_target("the manager").is_none());
    }

    #[test]
    fn a_failure_output_names_the_status_and_the_tool() {
        let failure = ToolFailure::new("book", ToolStatus::Timeout, "no answer within 300 ms");
        let output: Value = serde_json::from_str(&failure.output()).unwrap();
        assert_eq!(output["error"], "timeout");
        assert!(
            output["message"]
                .as_str()
                .unwrap()
                .starts_with("book did not answer")
        );
    }
}
