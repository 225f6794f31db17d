//! A business's tools, for operators: list them, add or replace one, remove one. A tool is
//! checked here before it is stored, so what the store holds is what a call can use: a
//! function's name follows the Realtime API's rule and is not a built-in's, its parameters are
//! an object JSON Schema that compiles, its endpoint is HTTPS (or plain HTTP to a loopback
//! address, for a tool running beside the proxy), its timeout is 1 to 30,000 ms, and its
//! signing secret is named by an environment variable (never given itself).

use crate::domain::ToolKind;
use crate::ops::{OpsError, business};
use crate::store::{BusinessTool, Store};
use crate::tools::{Builtin, MAX_TIMEOUT_MS, compile_schema};

/// A function tool's timeout when none is given, ms.
pub const DEFAULT_TIMEOUT_MS: i64 = 3000;

/// Business `id`'s tools, sorted by name.
///
/// Errors: [`OpsError::NotFound`]; the store's own.
pub async fn list(store: &Store, id: &str) -> Result<Vec<BusinessTool>, OpsError> {
    business(store, id).await?;
    Ok(store.tools(id).await?)
}

/// Adds `tool` to business `id`, or replaces its tool of the same name; returns it as stored.
///
/// Errors: [`OpsError::Invalid`] naming the field and the rule it breaks;
/// [`OpsError::NotFound`]; the store's own.
pub async fn set(store: &Store, id: &str, tool: BusinessTool) -> Result<BusinessTool, OpsError> {
    check(&tool)?;
    business(store, id).await?;
    Ok(store.upsert_tool(id, &tool).await?)
}

/// Removes business `id`'s tool `name`.
///
/// Errors: [`OpsError::NotFound`] for an unknown business or tool; the store's own.
pub async fn remove(store: &Store, id: &str, name: &str) -> Result<(), OpsError> {
    business(store, id).await?;
    store.delete_tool(id, name).await.map_err(|e| match e {
        crate::store::StoreError::NotFound(what) => OpsError::NotFound(what),
        other => OpsError::Store(other),
    })
}

/// The checks a tool must pass to be stored.
///
/// Errors: [`OpsError::Invalid`] naming the tool, the field and the rule.
pub fn check(tool: &BusinessTool) -> Result<(), OpsError> {
    let name = &tool.name;
    let bad = |field: &str, rule: &str| OpsError::Invalid(format!("tool {name:?}: {field} {rule}"));
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("name", "must be 1 to 64 of A-Z, a-z, 0-9, _ and -"));
    }
    if Builtin::is_reserved(name) {
        return Err(bad("name", "is a built-in tool's and cannot be taken"));
    }
    check_url(&tool.endpoint).map_err(|rule| bad("endpoint", rule))?;
    let env_ok = |v: &str| {
        v.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    match tool.kind {
        ToolKind::Function => {
            if tool.description.trim().is_empty() {
                return Err(bad(
                    "description",
                    "must say what the tool does, for the model",
                ));
            }
            compile_schema(&tool.parameters).map_err(|e| bad("parameters", &e))?;
            if !(1..=MAX_TIMEOUT_MS).contains(&tool.timeout_ms) {
                return Err(bad("timeout_ms", "must be 1 to 30000"));
            }
            if !env_ok(&tool.secret_env) {
                return Err(bad(
                    "secret_env",
                    "must name the environment variable holding the signing secret (A-Z, 0-9, _)",
                ));
            }
            if !tool.allowed_tools.is_empty() {
                return Err(bad("allowed_tools", "is for MCP tools only"));
            }
        }
        ToolKind::Mcp => {
            if !tool.secret_env.is_empty() && !env_ok(&tool.secret_env) {
                return Err(bad(
                    "secret_env",
                    "must name an environment variable (A-Z, 0-9, _) or be empty",
                ));
            }
        }
    }
    Ok(())
}

/// `https://…`, or `http://` to a loopback host; a rule's text when neither.
fn check_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "must be an absolute URL")?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("must be https:// (plain http:// only to a loopback address)")
            }
        }
        _ => Err("must be https:// (plain http:// only to a loopback address)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool() -> BusinessTool {
        BusinessTool {
            name: "book_appointment".into(),
            kind: ToolKind::Function,
            description: "Book a visit.".into(),
            parameters: json!({"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}),
            endpoint: "https://tools.example.com/book".into(),
            timeout_ms: 3000,
            secret_env: "BOOKING_SECRET".into(),
            allowed_tools: vec![],
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_good_tool_passes_and_each_rule_names_its_field() {
        check(&tool()).unwrap();
        type Change = Box<dyn Fn(&mut BusinessTool)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|t| t.name = "book appointment".into()), "name"),
            (Box::new(|t| t.name = "end_call".into()), "built-in"),
            (
                Box::new(|t| t.endpoint = "http://tools.example.com/x".into()),
                "endpoint",
            ),
            (Box::new(|t| t.endpoint = "ftp://x".into()), "endpoint"),
            (
                Box::new(|t| t.parameters = json!({"type": "string"})),
                "parameters",
            ),
            (
                Box::new(|t| t.parameters = json!({"type": "object", "properties": 3})),
                "parameters",
            ),
            (Box::new(|t| t.timeout_ms = 0), "timeout_ms"),
            (Box::new(|t| t.timeout_ms = 60_000), "timeout_ms"),
            (
                Box::new(|t| t.secret_env = "my secret".into()),
                "secret_env",
            ),
            (Box::new(|t| t.secret_env = String::new()), "secret_env"),
            (Box::new(|t| t.description = " ".into()), "description"),
        ];
        for (change, field) in cases {
            let mut t = tool();
            change(&mut t);
            let err = check(&t).expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut local = tool();
        local.endpoint = "http://127.0.0.1:8080/book".into();
        check(&local).unwrap();
    }
}
