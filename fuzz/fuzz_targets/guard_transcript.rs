//! A caller transcript through the whole sanitizer (normalisation, rules, classifier) alone and
//! as successive turns of one call (the turn window): the input is split into turns at NUL
//! bytes. Scores stay within 0–1, the verdict agrees with the score, and nothing panics.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use voxrelay::guard::sanitizer::{Sanitizer, TurnWindow, Verdict};

static SANITIZER: LazyLock<Option<Sanitizer>> = LazyLock::new(|| Sanitizer::builtin().ok());

fuzz_target!(|data: &[u8]| {
    let Some(sanitizer) = SANITIZER.as_ref() else {
        panic!("the built-in sanitizer does not load");
    };
    let text = String::from_utf8_lossy(data);
    let mut window = TurnWindow::new();
    for turn in text.split('\u{0}') {
        for a in [sanitizer.assess(turn), sanitizer.assess_turn(turn, &mut window)] {
            assert!((0.0..=1.0).contains(&a.score), "{a:?}");
            assert!((0.0..=1.0).contains(&a.rules_score), "{a:?}");
            assert!((0.0..=1.0).contains(&a.model_score), "{a:?}");
            assert_eq!(a.verdict, sanitizer.verdict_of(a.score), "{a:?}");
            assert_eq!(a.verdict == Verdict::Allow, a.stage.as_str() == "none", "{a:?}");
        }
    }
});
