//! Guard: redact.
