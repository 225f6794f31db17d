//! Validation of a business prompt body, run when a version is created and when it is promoted.
//!
//! [`validate`] renders the body with placeholder call values ([`template::sample_vars`]), builds
//! FULL and COMPACT with the prompt library, and reports:
//!
//! - errors ([`Problem`]), which reject the body: an unresolved (unknown) template variable, a
//!   template syntax error, layer-marker characters (`⟦`, `⟧`) or marker text (`BUSINESS:`
//!   between them), FULL over the hard token cap, a missing required section, or a body the
//!   library cannot build at all (for example an empty one);
//! - warnings ([`Warning`]), which do not: FULL over the target size, COMPACT over its size;
//! - sizes: FULL and COMPACT in o200k_base tokens, and how many tokens of FULL's start are
//!   byte-identical to another business's FULL (the prefix the upstream's cache can share).
//!
//! # Sections
//!
//! A required section `name` is present when some line of the rendered body, trimmed, is either
//! a markdown heading whose text is `name` (`## Hours`, any level, an optional trailing `:`), or
//! starts with the label `name:` (`Hours:` alone or `Hours: 9 to 5`). Names compare without
//! regard to ASCII case. The default requires no sections; a business lists its own
//! (`businesses.required_sections`, set with `PATCH /api/v1/businesses/{id}` or
//! `voxrelay business update ID --require-section NAME`).
//!
//! Everything here is pure: no database, no files.

use super::template::{self, TemplateError};
use super::{BuiltPrompts, BusinessLayer, PromptError, PromptLibrary, count_tokens};
use crate::domain::Direction;

/// Default hard cap on FULL, in o200k_base tokens.
pub const DEFAULT_HARD_CAP_TOKENS: usize = 3500;
/// Default target size of FULL, in o200k_base tokens.
pub const DEFAULT_TARGET_TOKENS: usize = 3000;
/// Default size COMPACT should stay within, in characters (the universal core, about 700
/// characters of business text, the direction line and a greeting).
pub const DEFAULT_COMPACT_TARGET_CHARS: usize = 2000;

/// Room [`Limits::for_library`] leaves in COMPACT for the markers, the business header and the
/// greeting.
const COMPACT_ALLOWANCE_CHARS: usize = 500;

/// The id of the stand-in business whose FULL the shared prefix is measured against.
const PROBE_BUSINESS_ID: &str = "prefix-probe";

/// What a body is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// FULL above this many tokens is an error.
    pub hard_cap_tokens: usize,
    /// FULL above this many tokens is a warning.
    pub target_tokens: usize,
    /// COMPACT above this many characters is a warning.
    pub compact_target_chars: usize,
    /// Sections the body must have (see the module docs for what counts as a section).
    pub required_sections: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hard_cap_tokens: DEFAULT_HARD_CAP_TOKENS,
            target_tokens: DEFAULT_TARGET_TOKENS,
            compact_target_chars: DEFAULT_COMPACT_TARGET_CHARS,
            required_sections: Vec::new(),
        }
    }
}

impl Limits {
    /// The defaults, with the COMPACT size derived from `library`: its universal core, the
    /// business text it keeps, the longer direction line, and room for markers, header and
    /// greeting.
    pub fn for_library(library: &PromptLibrary) -> Self {
        let direction_line = |block: &str| {
            block
                .split("\n\n")
                .next()
                .unwrap_or(block)
                .trim()
                .chars()
                .count()
        };
        let direction = direction_line(&library.inbound).max(direction_line(&library.outbound));
        Limits {
            compact_target_chars: library.universal_core.chars().count()
                + library.compact_business_chars
                + direction
                + COMPACT_ALLOWANCE_CHARS,
            ..Limits::default()
        }
    }
}

impl Limits {
    /// [`Limits::for_library`] with the sections `business` requires.
    pub fn for_business(library: &PromptLibrary, business: &crate::store::Business) -> Self {
        Limits {
            required_sections: business.required_sections.clone(),
            ..Limits::for_library(library)
        }
    }
}

/// The business a body belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessInfo {
    /// Business id, carried in the layer markers.
    pub id: String,
    /// Display name (`business.name`).
    pub name: String,
    /// Main language, ISO 639-1 (`business.language`).
    pub language: String,
    /// How to greet.
    pub greeting: String,
    /// Opening hours (`business.hours`); when `None`, validation renders placeholder hours.
    pub hours: Option<String>,
}

impl From<&crate::store::Business> for BusinessInfo {
    /// What validation needs of a stored business; hours not set render placeholder hours.
    fn from(business: &crate::store::Business) -> Self {
        BusinessInfo {
            id: business.id.clone(),
            name: business.name.clone(),
            language: business.language.clone(),
            greeting: business.greeting_instructions.clone(),
            hours: Some(business.hours.clone()).filter(|h| !h.trim().is_empty()),
        }
    }
}

/// Something that rejects a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The body uses a variable that is not available.
    #[error(
        "unresolved variable `{name}`: allowed variables are {}",
        template::ALLOWED_VARIABLES.join(", ")
    )]
    UnresolvedVariable {
        /// The variable, dotted.
        name: String,
    },
    /// The body is not a valid template.
    #[error("{message}")]
    TemplateSyntax {
        /// The template engine's message, with the line.
        message: String,
    },
    /// FULL would pass the hard cap.
    #[error("FULL prompt would be {full_tokens} tokens, over the hard cap of {cap}")]
    OverHardCap {
        /// FULL's size, o200k_base tokens.
        full_tokens: usize,
        /// The cap.
        cap: usize,
    },
    /// A required section is missing.
    #[error("required section `{section}` is missing")]
    MissingSection {
        /// The section's name.
        section: String,
    },
    /// The body (or a value rendered into it) contains layer-marker characters or marker text.
    #[error("the prompt contains a layer marker (⟦, ⟧ or ⟦BUSINESS:…⟧), which is reserved")]
    ContainsMarker,
    /// The library cannot build a prompt from the body.
    #[error("the prompt cannot be built: {message}")]
    Unbuildable {
        /// Why.
        message: String,
    },
}

/// Something worth knowing that does not reject a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// FULL passes the target size.
    #[error("FULL prompt is {full_tokens} tokens, over the target of {target}")]
    OverTarget {
        /// FULL's size, o200k_base tokens.
        full_tokens: usize,
        /// The target.
        target: usize,
    },
    /// COMPACT passes its size.
    #[error("COMPACT prompt is {compact_chars} characters, over its size of {limit}")]
    CompactOverSize {
        /// COMPACT's size in characters.
        compact_chars: usize,
        /// The size it should stay within.
        limit: usize,
    },
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Problems that reject the body; empty when it is acceptable.
    pub errors: Vec<Problem>,
    /// Warnings.
    pub warnings: Vec<Warning>,
    /// FULL in o200k_base tokens (0 when it could not be built).
    pub full_tokens: usize,
    /// COMPACT in o200k_base tokens (0 when it could not be built).
    pub compact_tokens: usize,
    /// Tokens at the start of FULL shared byte for byte with another business's FULL.
    pub shared_prefix_tokens: usize,
    /// What the business's tools add to every response's input (`session.tools`, including
    /// the built-ins it has on), o200k_base tokens; set by [`crate::ops::prompts`], 0 here.
    pub tools_tokens: usize,
    /// The prompts as built with the sample values, when they could be built.
    pub prompts: Option<BuiltPrompts>,
}

impl Report {
    /// `true` when nothing rejects the body.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Tokens (o200k_base) of the longest common prefix of `a` and `b`, compared byte by byte and
/// cut back to a character boundary.
pub fn shared_prefix_tokens(a: &str, b: &str) -> usize {
    let mut len = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(len) {
        len -= 1;
    }
    count_tokens(&a[..len])
}

/// Whether `text` contains marker characters or marker text.
fn has_marker(text: &str) -> bool {
    text.contains('⟦') || text.contains('⟧')
}

/// Whether `body` has the section `name` (see the module docs).
fn has_section(body: &str, name: &str) -> bool {
    let name = name.trim();
    body.lines().map(str::trim).any(|line| {
        let heading = line.trim_start_matches('#');
        if heading.len() < line.len() && heading.starts_with(char::is_whitespace) {
            let text = heading.trim().trim_end_matches(':').trim_end();
            if text.eq_ignore_ascii_case(name) {
                return true;
            }
        }
        match line.get(..name.len()) {
            Some(label) => {
                label.eq_ignore_ascii_case(name) && line[name.len()..].trim_start().starts_with(':')
            }
            None => false,
        }
    })
}

/// Checks `body` as the `direction` prompt of `business` against `limits`.
///
/// Never fails: everything found is in the [`Report`].
pub fn validate(
    library: &PromptLibrary,
    body: &str,
    business: &BusinessInfo,
    direction: Direction,
    limits: &Limits,
) -> Report {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let mut vars = template::sample_vars(&business.name, &business.language);
    vars.direction = direction;
    if let Some(hours) = &business.hours {
        vars.business_hours = Some(hours.clone());
    }

    let rendered = match template::unknown_variables(body) {
        Err(err) => {
            errors.push(Problem::TemplateSyntax {
                message: err.to_string(),
            });
            None
        }
        Ok(unknown) if !unknown.is_empty() => {
            errors.extend(
                unknown
                    .into_iter()
                    .map(|name| Problem::UnresolvedVariable { name }),
            );
            None
        }
        Ok(_) => match template::render(body, &vars) {
            Ok(text) => Some(text),
            Err(TemplateError::UnknownVariable { name, .. }) => {
                errors.push(Problem::UnresolvedVariable { name });
                None
            }
            Err(err) => {
                errors.push(Problem::TemplateSyntax {
                    message: err.to_string(),
                });
                None
            }
        },
    };
    // When the body cannot be rendered, its raw text still gives a close measure.
    let text = rendered.as_deref().unwrap_or(body);

    let marker = [
        body,
        text,
        &business.name,
        &business.greeting,
        &business.language,
    ]
    .into_iter()
    .any(has_marker);
    if marker {
        errors.push(Problem::ContainsMarker);
    }

    for section in &limits.required_sections {
        if !has_section(text, section) {
            errors.push(Problem::MissingSection {
                section: section.clone(),
            });
        }
    }

    let layer = BusinessLayer {
        id: &business.id,
        name: &business.name,
        language: &business.language,
        text,
        greeting: &business.greeting,
    };
    let (prompts, shared) = if marker {
        (None, 0)
    } else {
        match library.build(&layer, direction) {
            Ok(built) => {
                let shared = probe_full(library, direction)
                    .map(|other| shared_prefix_tokens(&built.full, &other))
                    .unwrap_or_else(|| count_tokens(library.universal()));
                (Some(built), shared)
            }
            Err(PromptError::MarkerInText { .. }) => {
                errors.push(Problem::ContainsMarker);
                (None, 0)
            }
            Err(err) => {
                errors.push(Problem::Unbuildable {
                    message: err.to_string(),
                });
                (None, 0)
            }
        }
    };

    if let Some(built) = &prompts {
        if built.full_tokens > limits.hard_cap_tokens {
            errors.push(Problem::OverHardCap {
                full_tokens: built.full_tokens,
                cap: limits.hard_cap_tokens,
            });
        } else if built.full_tokens > limits.target_tokens {
            warnings.push(Warning::OverTarget {
                full_tokens: built.full_tokens,
                target: limits.target_tokens,
            });
        }
        let compact_chars = built.compact.chars().count();
        if compact_chars > limits.compact_target_chars {
            warnings.push(Warning::CompactOverSize {
                compact_chars,
                limit: limits.compact_target_chars,
            });
        }
    }

    Report {
        errors,
        warnings,
        full_tokens: prompts.as_ref().map_or(0, |p| p.full_tokens),
        compact_tokens: prompts.as_ref().map_or(0, |p| p.compact_tokens),
        tools_tokens: 0,
        shared_prefix_tokens: shared,
        prompts,
    }
}

/// FULL for a stand-in business, to measure the prefix other businesses share.
fn probe_full(library: &PromptLibrary, direction: Direction) -> Option<String> {
    let probe = BusinessLayer {
        id: PROBE_BUSINESS_ID,
        name: "Prefix Probe",
        language: "en",
        text: "Probe.",
        greeting: "",
    };
    library.build(&probe, direction).ok().map(|p| p.full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_headings_or_labels() {
        let body = "Intro.\n## Opening Hours:\nNine to five.\nPricing: ask.\n#Nope\n";
        assert!(has_section(body, "opening hours"));
        assert!(has_section(body, "Pricing"));
        assert!(
            !has_section(body, "Nope"),
            "a heading needs a space after #"
        );
        assert!(!has_section(body, "Intro"));
        assert!(!has_section("Pricingless: x", "Pricing"));
        assert!(has_section("Pricing : x", "Pricing"));
    }

    #[test]
    fn shared_prefix_stops_at_a_char_boundary() {
        // "é" and "è" share their first byte.
        assert_eq!(shared_prefix_tokens("abé", "abè"), count_tokens("ab"));
        assert_eq!(shared_prefix_tokens("", "x"), 0);
        assert_eq!(shared_prefix_tokens("same", "same"), count_tokens("same"));
    }

    #[test]
    fn limits_for_the_library_cover_its_compact_prompt() {
        let library = PromptLibrary::embedded(700).expect("embedded prompts load");
        let limits = Limits::for_library(&library);
        assert!(limits.compact_target_chars > 700 + library.universal_core.chars().count());
        assert_eq!(limits.hard_cap_tokens, 3500);
        assert_eq!(limits.target_tokens, 3000);
        assert!(limits.required_sections.is_empty());
    }
}
