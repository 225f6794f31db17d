//! Variables in business prompt bodies.
//!
//! A business prompt body is a [minijinja](https://docs.rs/minijinja) template. It may use these
//! variables and no others:
//!
//! | variable            | value                                                      |
//! |---------------------|------------------------------------------------------------|
//! | `business.name`     | the business's display name                                |
//! | `business.hours`    | opening hours as free text, or none (prints as nothing)    |
//! | `business.language` | main language (ISO 639-1, e.g. `en`)                       |
//! | `call.caller`       | the caller's number (E.164)                                |
//! | `call.direction`    | `inbound` or `outbound`                                    |
//! | `call.NAME`         | a variable given when an outbound call is placed (`voxrelay call place --var NAME=VALUE`), or none |
//!
//! `NAME` is lower case: a letter, then letters, digits or `_`, at most 32 ([`is_call_variable`]).
//! A `call.NAME` the call was not given prints as nothing and is false in a test, so one body
//! serves calls with and without it.
//! The built-in global functions of minijinja (`range`, `dict`, `namespace`, …) may be used too.
//! Variables are written dotted: a whole object (`{{ business }}`) or an index
//! (`business["name"]`) is reported as the unknown variable `business`.
//!
//! Rendering is strict: an undefined value is an error, never an empty string. Output is plain
//! text, so nothing is escaped. Unknown variables are found by introspecting the template
//! ([`variables`], [`check_variables`]) without any real call values, so a body is checked when it
//! is saved or promoted rather than when a call is already ringing.
//!
//! `business.hours` is optional: when it is not set the value is none, which is false in a test
//! (`{% if business.hours %}…{% endif %}`) and prints as an empty string.

use std::collections::BTreeSet;

use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::domain::Direction;

/// The variables a body may use, as dotted names.
pub const ALLOWED_VARIABLES: [&str; 5] = [
    "business.name",
    "business.hours",
    "business.language",
    "call.caller",
    "call.direction",
];

/// The caller number [`sample_vars`] puts in `call.caller` (a reserved fictional number).
pub const SAMPLE_CALLER: &str = "+15555550100";

/// The opening hours [`sample_vars`] puts in `business.hours`.
pub const SAMPLE_HOURS: &str = "Monday to Friday, 9:00 to 17:00";

/// A body could not be checked or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The body is not a valid template.
    #[error("template syntax error{}: {message}", at_line(*line))]
    Syntax {
        /// Line of the error (1-based), when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The body uses a variable outside [`ALLOWED_VARIABLES`].
    #[error(
        "unknown template variable `{name}`{}; allowed: {}",
        at_line(*line),
        ALLOWED_VARIABLES.join(", ")
    )]
    UnknownVariable {
        /// The variable, dotted (`business.owner`).
        name: String,
        /// First line that mentions it (1-based), when found.
        line: Option<usize>,
    },
    /// Rendering failed (for example an undefined value reached through an index).
    #[error("template rendering failed{}: {message}", at_line(*line))]
    Render {
        /// Line of the error (1-based), when known.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" on line {l}")).unwrap_or_default()
}

/// The values a body is rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVars {
    /// `business.name`.
    pub business_name: String,
    /// `business.hours`; `None` renders as nothing.
    pub business_hours: Option<String>,
    /// `business.language`.
    pub language: String,
    /// `call.caller`.
    pub caller: String,
    /// `call.direction`.
    pub direction: Direction,
    /// `call.NAME`: the variables an outbound call was placed with (empty for other calls).
    pub call_vars: std::collections::BTreeMap<String, String>,
}

/// Whether `name` can be a per-call variable (`call.NAME`): lower-case ASCII, a letter first,
/// then letters, digits or `_`, at most 32 characters, and not `caller` or `direction`.
pub fn is_call_variable(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name != "caller"
        && name != "direction"
}

#[derive(Serialize)]
struct Context<'a> {
    business: BusinessContext<'a>,
    call: CallContext<'a>,
}

#[derive(Serialize)]
struct BusinessContext<'a> {
    name: &'a str,
    hours: Option<&'a str>,
    language: &'a str,
}

#[derive(Serialize)]
struct CallContext<'a> {
    caller: &'a str,
    direction: Direction,
    #[serde(flatten)]
    vars: std::collections::BTreeMap<&'a str, Option<&'a str>>,
}

impl TemplateVars {
    /// The context for a body that uses `used` (dotted names): the call's variables, and
    /// none for a `call.NAME` it was not given.
    fn context<'a>(&'a self, used: &'a [String]) -> Context<'a> {
        let mut vars: std::collections::BTreeMap<&str, Option<&str>> = used
            .iter()
            .filter_map(|name| name.strip_prefix("call."))
            .filter(|name| is_call_variable(name))
            .map(|name| (name, None))
            .collect();
        for (name, value) in &self.call_vars {
            vars.insert(name, Some(value));
        }
        Context {
            business: BusinessContext {
                name: &self.business_name,
                hours: self.business_hours.as_deref(),
                language: &self.language,
            },
            call: CallContext {
                caller: &self.caller,
                direction: self.direction,
                vars,
            },
        }
    }
}

/// Placeholder values for validating and previewing a body before any call exists: the given
/// name and language, [`SAMPLE_HOURS`], caller [`SAMPLE_CALLER`], inbound.
pub fn sample_vars(business_name: &str, language: &str) -> TemplateVars {
    TemplateVars {
        business_name: business_name.to_string(),
        business_hours: Some(SAMPLE_HOURS.to_string()),
        language: language.to_string(),
        caller: SAMPLE_CALLER.to_string(),
        direction: Direction::Inbound,
        call_vars: std::collections::BTreeMap::new(),
    }
}

/// The environment every body is checked and rendered in: strict undefined values, no escaping,
/// none prints as nothing.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
}

fn syntax_error(err: &minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        line: err.line(),
        message: describe(err),
    }
}

fn describe(err: &minijinja::Error) -> String {
    match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    }
}

/// First line (1-based) of `body` that mentions `name`, or its first segment.
fn line_of(body: &str, name: &str) -> Option<usize> {
    let find = |needle: &str| {
        body.lines()
            .position(|line| line.contains(needle))
            .map(|i| i + 1)
    };
    find(name).or_else(|| name.split('.').next().and_then(find))
}

/// The variables `body` uses, dotted (`business.name`), sorted and without duplicates.
///
/// Names assigned inside the template (`{% set %}`, loop variables) are not included; global
/// functions such as `range` are. Errors: [`TemplateError::Syntax`].
pub fn variables(body: &str) -> Result<Vec<String>, TemplateError> {
    let env = environment();
    let template = env.template_from_str(body).map_err(|e| syntax_error(&e))?;
    let names: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
    Ok(names.into_iter().collect())
}

/// Whether `body` uses a `call.*` variable (or `call` itself), so that it renders differently
/// for each call. A body that does not parse counts as using one: it is never cached.
pub fn uses_call_variables(body: &str) -> bool {
    if !body.contains("call") {
        return false;
    }
    variables(body).map_or(true, |names| {
        names
            .iter()
            .any(|name| name == "call" || name.starts_with("call."))
    })
}

/// Every variable of `body` outside [`ALLOWED_VARIABLES`] (and the environment's global
/// functions), sorted. Errors: [`TemplateError::Syntax`].
pub fn unknown_variables(body: &str) -> Result<Vec<String>, TemplateError> {
    let env = environment();
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    Ok(variables(body)?
        .into_iter()
        .filter(|name| {
            !ALLOWED_VARIABLES.contains(&name.as_str())
                && !globals.contains(name.as_str())
                && !name.strip_prefix("call.").is_some_and(is_call_variable)
        })
        .collect())
}

/// Checks that `body` parses and uses only [`ALLOWED_VARIABLES`], without rendering it.
///
/// Errors: [`TemplateError::Syntax`], or [`TemplateError::UnknownVariable`] for the first unknown
/// variable (in sorted order).
pub fn check_variables(body: &str) -> Result<(), TemplateError> {
    match unknown_variables(body)?.into_iter().next() {
        Some(name) => Err(TemplateError::UnknownVariable {
            line: line_of(body, &name),
            name,
        }),
        None => Ok(()),
    }
}

/// Renders `body` with `vars`: checks its variables first ([`check_variables`]), then renders
/// strictly with no escaping.
///
/// Errors: [`TemplateError`] naming the problem, with the line when known.
pub fn render(body: &str, vars: &TemplateVars) -> Result<String, TemplateError> {
    check_variables(body)?;
    let used = variables(body)?;
    let env = environment();
    let template = env.template_from_str(body).map_err(|e| syntax_error(&e))?;
    template
        .render(Value::from(Serde(vars.context(&used))))
        .map_err(|err| match err.kind() {
            ErrorKind::SyntaxError => syntax_error(&err),
            _ => TemplateError::Render {
                line: err.line(),
                message: describe(&err),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        sample_vars("Bright Smile Dental", "en")
    }

    #[test]
    fn renders_every_allowed_variable() {
        let body = "{{ business.name }}|{{ business.hours }}|{{ business.language }}|\
                    {{ call.caller }}|{{ call.direction }}";
        assert_eq!(
            render(body, &vars()).expect("renders"),
            format!("Bright Smile Dental|{SAMPLE_HOURS}|en|{SAMPLE_CALLER}|inbound")
        );
    }

    #[test]
    fn call_variables_render_and_missing_ones_print_as_nothing() {
        let mut v = vars();
        v.call_vars
            .insert("appointment_time".into(), "Tuesday at 10:00".into());
        let body = "Your visit: {{ call.appointment_time }}.\
                    [{{ call.patient }}]{% if call.patient %}named{% else %}unnamed{% endif %}";
        assert_eq!(check_variables(body), Ok(()));
        assert_eq!(
            render(body, &v).expect("renders"),
            "Your visit: Tuesday at 10:00.[]unnamed"
        );
        assert!(check_variables("{{ call.Patient }}").is_err());
        assert!(is_call_variable("appointment_time"));
        assert!(!is_call_variable("caller") && !is_call_variable("9lives"));
    }

    #[test]
    fn missing_hours_print_as_nothing_and_are_false() {
        let mut v = vars();
        v.business_hours = None;
        let body = "[{{ business.hours }}]{% if business.hours %}open{% else %}ask{% endif %}";
        assert_eq!(render(body, &v).expect("renders"), "[]ask");
    }

    #[test]
    fn nothing_is_escaped() {
        let mut v = vars();
        v.business_name = "Tom & Jerry's <Diner>".into();
        assert_eq!(
            render("{{ business.name }}", &v).expect("renders"),
            "Tom & Jerry's <Diner>"
        );
    }

    #[test]
    fn unknown_variables_are_named_with_their_line() {
        let err = check_variables("Hello.\nOwner: {{ business.owner }}").expect_err("unknown");
        assert_eq!(
            err,
            TemplateError::UnknownVariable {
                name: "business.owner".into(),
                line: Some(2)
            }
        );
        assert!(err.to_string().contains("business.owner"));
        assert!(err.to_string().contains("line 2"));
        assert!(check_variables("{{ customer }}").is_err());
        assert!(matches!(
            check_variables("{{ business }}"),
            Err(TemplateError::UnknownVariable { name, .. }) if name == "business"
        ));
    }

    #[test]
    fn local_names_and_globals_are_not_unknown() {
        let body = "{% set x = business.name %}{{ x }}{% for i in range(2) %}{{ i }}{% endfor %}";
        assert_eq!(check_variables(body), Ok(()));
        assert_eq!(
            render(body, &vars()).expect("renders"),
            "Bright Smile Dental01"
        );
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = variables("one\ntwo {{ business.name ").expect_err("syntax");
        assert!(
            matches!(err, TemplateError::Syntax { line: Some(2), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn variables_lists_dotted_names() {
        assert_eq!(
            variables("{{ call.caller }} {{ business.name }} {{ call.caller }}").expect("parses"),
            vec!["business.name".to_string(), "call.caller".to_string()]
        );
    }

    #[test]
    fn only_bodies_with_call_variables_render_per_call() {
        assert!(uses_call_variables("Hello {{ call.caller }}."));
        assert!(uses_call_variables(
            "{% if call.direction == 'inbound' %}in{% endif %}"
        ));
        assert!(uses_call_variables("{{ call.caller"));
        assert!(!uses_call_variables("We answer for {{ business.name }}."));
        assert!(!uses_call_variables("Callers may call back after five."));
        assert!(!uses_call_variables("{% set callback = 1 %}{{ callback }}"));
    }
}
