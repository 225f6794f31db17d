//! The isolation check: does every upstream session carry only its own call's business?
//!
//! The load generator (`voxrelay-loadtest --businesses N`) creates N businesses whose prompts
//! are marked: business `iso-007` has the text token [`business_token`] at the start of its
//! production prompt version (so COMPACT's excerpt keeps it too), and the version renders the
//! call's own caller as the line `This call is from {{ call.caller }}.`. Calls to business 7
//! come from the numbers [`caller`]`(7, n)` = `+1415007nnnn`. The proxy wraps every business
//! layer in `⟦BUSINESS:id⟧ … ⟦/BUSINESS:id⟧`.
//!
//! The simulated upstream ([`crate::upstream::SimUpstreamConfig::check_isolation`]) reads
//! every `session.update`'s instructions (COMPACT, FULL, and those of a restored or
//! rolled-over session) with [`check`], and counts per connection: a *leak* is instructions
//! naming more than one business, a token or caller line of another business than the one
//! named, or a connection whose instructions change business. Instructions with no business
//! marker, token or caller line are *unmarked* (not a leak, but not checked either).

use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use voxrelay::domain::Direction;
use voxrelay::store::{NewBusiness, NewPromptVersion, PromptStatus, Store, StoreError};

/// The id of isolation business `index` (0 to 999).
pub fn business_id(index: usize) -> String {
    format!("iso-{index:03}")
}

/// The text token of isolation business `index`: `ISO-TOKEN-007-` and 8 hex digits that
/// depend on the index (so no business's token is a prefix of another's).
pub fn business_token(index: usize) -> String {
    let mixed = (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    format!("ISO-TOKEN-{index:03}-{mixed:08x}")
}

/// The caller number of the `n`-th call (0 to 9,999) to isolation business `index`.
pub fn caller(index: usize, n: usize) -> String {
    format!("+1415{index:03}{:04}", n % 10_000)
}

/// The phone number of isolation business `index`.
pub fn number(index: usize) -> String {
    format!("+1500556{index:04}")
}

/// Adds `count` isolation businesses to `store`: business [`business_id`]`(i)` on
/// [`number`]`(i)`, its own text `text`, and as its inbound production prompt version
/// [`version_preamble`]`(i)` followed by `text`.
///
/// Errors: the store refused a business, number or version.
pub async fn seed(store: &Store, count: usize, text: &str) -> Result<(), StoreError> {
    for index in 0..count {
        let id = business_id(index);
        let mut business = NewBusiness::named(format!("Isolation Clinic {index}"));
        business.id = Some(id.clone());
        business.ai_prompt = text.to_string();
        business.greeting_instructions = "Greet the caller.".to_string();
        store.add_business(&business).await?;
        store.add_number(&number(index), &id).await?;
        let version = store
            .create_prompt_version(&NewPromptVersion {
                business_id: id.clone(),
                direction: Direction::Inbound,
                body: format!("{}{text}", version_preamble(index)),
                parent_version_id: None,
                compact_tokens: None,
                full_tokens: None,
                author: "isolation".into(),
                note: "isolation check".into(),
            })
            .await?;
        store.promote(&version.id, PromptStatus::Production).await?;
    }
    Ok(())
}

/// The start of an isolation business's prompt version body: its token, then the caller line
/// (a template the proxy renders per call).
pub fn version_preamble(index: usize) -> String {
    format!(
        "Isolation token: {}.\nThis call is from {{{{ call.caller }}}}.\n\n",
        business_token(index)
    )
}

/// What one set of instructions says about isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Only business `index`: its marker, its token and its own caller.
    Own(usize),
    /// Another business's marker, token or caller is in it; the reason.
    Leak(String),
    /// No business marker, token or caller line (nothing to check).
    Unmarked,
}

/// The patterns [`check`] looks for.
pub struct Patterns {
    marker: Regex,
    token: Regex,
    caller: Regex,
}

impl Patterns {
    /// Compiles them. Errors: never in practice (the patterns are fixed).
    pub fn new() -> Result<Patterns, regex::Error> {
        Ok(Patterns {
            marker: Regex::new(r"⟦BUSINESS:iso-(\d{3})⟧")?,
            token: Regex::new(r"ISO-TOKEN-(\d{3})-([0-9a-f]{8})")?,
            caller: Regex::new(r"This call is from \+1415(\d{3})\d{4}\.")?,
        })
    }
}

/// Judges one set of instructions.
pub fn check(patterns: &Patterns, instructions: &str) -> Verdict {
    let indexes = |re: &Regex| -> Vec<usize> {
        re.captures_iter(instructions)
            .filter_map(|c| c.get(1).and_then(|m| m.as_str().parse().ok()))
            .collect()
    };
    let markers = indexes(&patterns.marker);
    let tokens: Vec<(usize, String)> = patterns
        .token
        .captures_iter(instructions)
        .filter_map(|c| {
            Some((
                c.get(1)?.as_str().parse().ok()?,
                c.get(0)?.as_str().to_string(),
            ))
        })
        .collect();
    let callers = indexes(&patterns.caller);
    let Some(&own) = markers.first() else {
        return if tokens.is_empty() && callers.is_empty() {
            Verdict::Unmarked
        } else {
            Verdict::Leak("business text without its business marker".into())
        };
    };
    if let Some(other) = markers.iter().find(|&&m| m != own) {
        return Verdict::Leak(format!("markers of businesses {own} and {other}"));
    }
    if let Some((other, token)) = tokens
        .iter()
        .find(|(i, token)| *i != own || *token != business_token(own))
    {
        return Verdict::Leak(format!("business {own} carries token {token} (of {other})"));
    }
    if let Some(other) = callers.iter().find(|&&c| c != own) {
        return Verdict::Leak(format!(
            "business {own} carries a caller of business {other}"
        ));
    }
    if tokens.is_empty() || callers.is_empty() {
        return Verdict::Unmarked;
    }
    Verdict::Own(own)
}

/// Counts over every connection of a simulated upstream.
#[derive(Debug, Default)]
pub struct IsolationCounts {
    checked: AtomicU64,
    leaks: AtomicU64,
    unmarked: AtomicU64,
    first_leak: std::sync::Mutex<Option<String>>,
}

/// A snapshot of [`IsolationCounts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IsolationReport {
    /// Instructions checked (one per `session.update` that carried them).
    pub checked: u64,
    /// Of them, leaks.
    pub leaks: u64,
    /// Of them, unmarked.
    pub unmarked: u64,
    /// What the first leak was.
    pub first_leak: Option<String>,
}

impl IsolationReport {
    /// Why a run fails the check: any leak, any unmarked instructions, or nothing checked at
    /// all; `None` when it passes.
    pub fn failure(&self) -> Option<String> {
        if self.leaks == 0 && self.unmarked == 0 && self.checked > 0 {
            return None;
        }
        Some(format!(
            "isolation: {} leak(s) and {} unmarked of {} instructions checked{}",
            self.leaks,
            self.unmarked,
            self.checked,
            self.first_leak
                .as_deref()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        ))
    }
}

impl IsolationCounts {
    /// Records one verdict of a connection that has so far been business `seen` (`None`
    /// before its first marked instructions); returns the business it is now.
    pub fn record(&self, seen: Option<usize>, verdict: Verdict) -> Option<usize> {
        self.checked.fetch_add(1, Ordering::Relaxed);
        let leak = |why: String| {
            self.leaks.fetch_add(1, Ordering::Relaxed);
            let mut first = self
                .first_leak
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert(why);
        };
        match verdict {
            Verdict::Own(own) => match seen {
                Some(before) if before != own => {
                    leak(format!(
                        "a session of business {before} was sent business {own}"
                    ));
                    seen
                }
                _ => Some(own),
            },
            Verdict::Leak(why) => {
                leak(why);
                seen
            }
            Verdict::Unmarked => {
                self.unmarked.fetch_add(1, Ordering::Relaxed);
                seen
            }
        }
    }

    /// The counts now.
    pub fn report(&self) -> IsolationReport {
        IsolationReport {
            checked: self.checked.load(Ordering::Relaxed),
            leaks: self.leaks.load(Ordering::Relaxed),
            unmarked: self.unmarked.load(Ordering::Relaxed),
            first_leak: self
                .first_leak
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instructions(marker: usize, token: usize, caller_of: usize) -> String {
        format!(
            "Universal.\n\n⟦BUSINESS:{}⟧\nBusiness: Clinic.\n\nIsolation token: {}.\nThis call is from {}.\n⟦/BUSINESS:{}⟧",
            business_id(marker),
            business_token(token),
            caller(caller_of, 12),
            business_id(marker)
        )
    }

    #[test]
    fn own_business_passes_and_every_kind_of_mixing_is_a_leak() {
        let p = Patterns::new().expect("patterns");
        assert_eq!(check(&p, &instructions(7, 7, 7)), Verdict::Own(7));
        assert!(matches!(
            check(&p, &instructions(7, 8, 7)),
            Verdict::Leak(_)
        ));
        assert!(matches!(
            check(&p, &instructions(7, 7, 8)),
            Verdict::Leak(_)
        ));
        let two = format!("{}\n{}", instructions(7, 7, 7), instructions(8, 8, 8));
        assert!(matches!(check(&p, &two), Verdict::Leak(_)));
        // A forged token with the right index but the wrong digits.
        let forged = instructions(7, 7, 7).replace(&business_token(7), "ISO-TOKEN-007-00000000");
        assert!(matches!(check(&p, &forged), Verdict::Leak(_)));
        assert_eq!(check(&p, "Say goodbye."), Verdict::Unmarked);
    }

    #[test]
    fn a_connection_that_changes_business_is_a_leak() {
        let counts = IsolationCounts::default();
        let seen = counts.record(None, Verdict::Own(3));
        let seen = counts.record(seen, Verdict::Own(3));
        counts.record(seen, Verdict::Own(4));
        let report = counts.report();
        assert_eq!((report.checked, report.leaks), (3, 1));
        assert!(report.first_leak.is_some());
    }

    #[test]
    fn the_conventions_are_distinct_per_business() {
        assert_ne!(business_token(1), business_token(2));
        assert_eq!(caller(7, 12), "+14150070012");
        assert!(version_preamble(7).contains("{{ call.caller }}"));
    }
}
