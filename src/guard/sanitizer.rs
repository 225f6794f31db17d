//! Guard: sanitizer.
