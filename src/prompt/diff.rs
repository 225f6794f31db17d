//! Unified diffs of prompt versions, for `voxrelay prompt diff` and the admin API.

use similar::TextDiff;

/// A unified diff (3 lines of context) from `old` to `new`, line by line, with `--- old_label`
/// and `+++ new_label` headers. Empty when the texts are equal.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_lines_with_labels() {
        let d = unified_diff("a\nb\nc\n", "a\nB\nc\n", "v1", "v2");
        assert!(d.starts_with("--- v1\n+++ v2\n"), "{d}");
        assert!(d.contains("\n-b\n") && d.contains("\n+B\n"), "{d}");
        assert!(d.contains(" a\n") && d.contains(" c\n"), "{d}");
    }

    #[test]
    fn equal_texts_give_an_empty_diff() {
        assert_eq!(unified_diff("same\n", "same\n", "v1", "v2"), "");
    }
}
