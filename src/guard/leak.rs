//! Guard: leak.
