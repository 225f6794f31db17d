//! The fingerprinted cache the call path keeps its read-only, per-call-expensive values in:
//! built prompts by prompt version, compiled sanitizers by business. Shared by every call of an
//! instance.
//!
//! Each entry keeps a fingerprint (SHA-256) of every input it was made from; a lookup whose
//! fingerprint differs makes the value again and replaces the entry. Prompt versions never
//! change once created, so an entry keyed by version id stays right for as long as the business
//! fields that enter the layers do, and a promote reaches the next call without a restart (the
//! next call asks for another version id), never a call in progress (a call holds its own
//! `Arc` of what it was built with). A business's guard rules are fingerprinted the same way,
//! so a rule added or disabled reaches the next call.
//!
//! Building FULL and COMPACT costs a few hundred microseconds (layers, template, o200k_base
//! token counts); compiling a business's sanitizer about a millisecond. A body that uses a
//! `call.*` variable renders differently for each call and is not cached; the per-call canary
//! is appended after the cache, by the caller.

use std::sync::Arc;

use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Entries kept before the cache is emptied and starts again: far more than the versions that
/// are in production or in an experiment at once, so in practice it never fills.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;

/// SHA-256 over every input of a build, each length-prefixed so no field can shift into another.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a build's inputs (`parts` in a fixed order chosen by the caller).
pub fn fingerprint(parts: &[&str]) -> Fingerprint {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

/// Values by key (a prompt version id, a business's own-text key, a business id), each with
/// the fingerprint of the inputs it was made from.
#[derive(Debug)]
pub struct FingerprintCache<V> {
    /// Key → fingerprint of the inputs and what they made.
    entries: DashMap<String, (Fingerprint, Arc<V>)>,
    /// Emptied when it would pass this many entries, so it cannot grow without bound.
    max_entries: usize,
}

impl<V> Default for FingerprintCache<V> {
    fn default() -> Self {
        FingerprintCache::new(DEFAULT_MAX_ENTRIES)
    }
}

/// Whether a lookup found the prompts or built them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Built now (and cached).
    Built,
}

impl<V> FingerprintCache<V> {
    /// An empty cache that keeps at most `max_entries` (at least 1).
    pub fn new(max_entries: usize) -> FingerprintCache<V> {
        FingerprintCache {
            entries: DashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// The value cached under `key` for exactly these inputs, or what `build` makes of them
    /// (then cached under `key`, replacing an entry made from other inputs).
    ///
    /// Errors: whatever `build` returns; nothing is cached then.
    pub fn get_or_build<E>(
        &self,
        key: &str,
        inputs: Fingerprint,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<(Arc<V>, Lookup), E> {
        if let Some(entry) = self.entries.get(key)
            && entry.0 == inputs
        {
            return Ok((entry.1.clone(), Lookup::Hit));
        }
        let built = Arc::new(build()?);
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(key) {
            self.entries.clear();
        }
        self.entries
            .insert(key.to_string(), (inputs, built.clone()));
        Ok((built, Lookup::Built))
    }

    /// How many entries are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::BuiltPrompts;

    type PromptCache = FingerprintCache<BuiltPrompts>;

    fn prompts(full: &str) -> Result<BuiltPrompts, String> {
        Ok(BuiltPrompts {
            full: full.to_string(),
            compact: String::new(),
            full_tokens: 1,
            compact_tokens: 1,
        })
    }

    #[test]
    fn the_same_inputs_are_built_once_and_changed_inputs_build_again() {
        let cache = PromptCache::default();
        let a = fingerprint(&["pv_1", "Bright Smile"]);
        let (first, lookup) = cache.get_or_build("pv_1", a, || prompts("one")).unwrap();
        assert_eq!(lookup, Lookup::Built);
        let (second, lookup) = cache
            .get_or_build("pv_1", a, || -> Result<_, String> {
                panic!("must not build")
            })
            .unwrap();
        assert_eq!(lookup, Lookup::Hit);
        assert!(Arc::ptr_eq(&first, &second));

        // The business was renamed: same version, other inputs.
        let b = fingerprint(&["pv_1", "Bright Smile Dental"]);
        let (third, lookup) = cache.get_or_build("pv_1", b, || prompts("two")).unwrap();
        assert_eq!(lookup, Lookup::Built);
        assert_eq!(third.full, "two");
        // A call that holds the first build still has it.
        assert_eq!(first.full, "one");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_failed_build_caches_nothing() {
        let cache = PromptCache::default();
        let result = cache.get_or_build("pv_bad", fingerprint(&["x"]), || {
            Err::<BuiltPrompts, _>("empty body".to_string())
        });
        assert_eq!(result.err().as_deref(), Some("empty body"));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_limit() {
        let cache = PromptCache::new(3);
        for n in 0..10 {
            let key = format!("pv_{n}");
            cache
                .get_or_build(&key, fingerprint(&[&key]), || prompts("p"))
                .unwrap();
            assert!(cache.len() <= 3, "{} entries", cache.len());
        }
    }

    #[test]
    fn fingerprints_keep_fields_apart() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["ab", "c"]), fingerprint(&["ab", "c"]));
    }
}
