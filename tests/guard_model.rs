//! The sanitizer's classifier and its data (`data/guard/`, `config/guard_model.bin`):
//! the weights file is what the trainer makes from the data and the seed, bit for bit; the frozen
//! test set is unchanged and shares no line with the training or development parts; and the
//! figures on it (BENCHMARKS.md, "Guards: sanitizer") have not fallen by more than the margins
//! below.
//!
//! `cargo test --release --test guard_model -- --nocapture` prints the test-set report.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use voxrelay::guard::dataset::{Dataset, Family, Label, Lang};
use voxrelay::guard::evaluate::{Group, Report, StageMode, evaluate};
use voxrelay::guard::normalize::normalize;
use voxrelay::guard::sanitizer::Sanitizer;
use voxrelay::guard::train::{TrainOptions, checksum, train_dir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn part(name: &str) -> Dataset {
    match Dataset::read_dir(&root().join("data/guard").join(name)) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_weights_file_is_reproduced_bit_for_bit_from_the_data_and_the_seed() {
    let committed = read(&root().join("config/guard_model.bin"));
    let recorded = String::from_utf8(read(&root().join("config/guard_model.bin.sha256")))
        .expect("checksum file is text");
    let recorded = recorded.split_whitespace().next().unwrap_or_default();
    assert_eq!(
        checksum(&committed),
        recorded,
        "config/guard_model.bin does not match config/guard_model.bin.sha256"
    );
    let (model, _) = match train_dir(&root().join("data/guard"), &TrainOptions::default()) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let trained = model.to_bytes();
    assert_eq!(
        checksum(&trained),
        recorded,
        "retraining gives another file: run `voxrelay guard train` and commit the model, or find \
         what made training depend on something besides the data and the seed"
    );
    assert!(trained == committed);
}

#[test]
fn the_test_set_is_frozen_and_shares_no_line_with_training_or_development() {
    let dir = root().join("data/guard/test");
    let sums = String::from_utf8(read(&dir.join("SHA256SUMS"))).expect("text");
    let mut listed = 0;
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line.split_once("  ").expect("sha256sum format");
        assert_eq!(
            checksum(&read(&dir.join(name))),
            sum,
            "data/guard/test/{name} changed: the frozen test set is scored, never edited"
        );
        listed += 1;
    }
    let files = std::fs::read_dir(&dir)
        .expect("test dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        })
        .count();
    assert_eq!(listed, files, "every test file is in SHA256SUMS");

    let key = |t: &str| normalize(t);
    let mut seen = HashMap::new();
    for name in ["train", "dev"] {
        let d = part(name);
        for s in d.samples {
            seen.insert(key(&s.text), s.text);
        }
        for s in d.sequences {
            let text = s.turns.join(" ");
            seen.insert(key(&text), text);
        }
    }
    let test = part("test");
    let shared: Vec<(&str, &str)> = test
        .samples
        .iter()
        .filter_map(|s| {
            seen.get(&key(&s.text))
                .map(|other| (s.text.as_str(), other.as_str()))
        })
        .collect();
    assert!(
        shared.is_empty(),
        "test lines also in train or dev: {shared:?}"
    );
}

/// The figures recorded in BENCHMARKS.md for the frozen test set (release 7 of the classifier,
/// combined stage), and how far each may fall before this test fails: 1.5 percentage points of
/// recall (9 of the 600 short attacks, 2 of the 150 long ones), 6 points on the 70 multi-turn
/// attacks (4 of them), and the false-positive rate may rise by 0.05 points (1.5 of the 2,970
/// benign lines).
struct Recorded {
    short_recall: f64,
    long_recall: f64,
    benign_fp: f64,
    multiturn_recall: f64,
}

const RECORDED: Recorded = Recorded {
    // 547 / 600
    short_recall: 0.9117,
    // 150 / 150
    long_recall: 1.0,
    // 5 / 2,970
    benign_fp: 0.0017,
    // 67 / 70 attack sequences, with the turn window
    multiturn_recall: 0.9571,
};
const RECALL_MARGIN: f64 = 0.015;
const FP_MARGIN: f64 = 0.0005;

fn report() -> Report {
    let sanitizer = Sanitizer::builtin().expect("built-in sanitizer");
    evaluate(&sanitizer, &part("test"))
}

#[test]
fn frozen_test_set_figures_hold() {
    let report = report();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", report.to_markdown());
    let short = report.tally(StageMode::Combined, Group::ShortAttacks, None, None);
    let long = report.tally(StageMode::Combined, Group::LongAttacks, None, None);
    let benign = report.tally(StageMode::Combined, Group::Benign, None, None);
    let (multiturn, _) = report.sequence_tally(Label::Attack, None);
    assert!(short.total >= 300 && long.total >= 100 && benign.total >= 2500);
    assert!(
        short.rate() >= RECORDED.short_recall - RECALL_MARGIN,
        "short-attack recall {:.4} fell below {:.4}",
        short.rate(),
        RECORDED.short_recall
    );
    assert!(
        long.rate() >= RECORDED.long_recall - RECALL_MARGIN,
        "long-jailbreak recall {:.4} fell below {:.4}",
        long.rate(),
        RECORDED.long_recall
    );
    assert!(
        benign.rate() <= RECORDED.benign_fp + FP_MARGIN,
        "false-positive rate {:.4} rose above {:.4}",
        benign.rate(),
        RECORDED.benign_fp
    );
    assert!(
        multiturn.rate() >= RECORDED.multiturn_recall - RECALL_MARGIN * 4.0,
        "multi-turn recall {:.4} fell below {:.4}",
        multiturn.rate(),
        RECORDED.multiturn_recall
    );
}

#[test]
fn every_language_and_family_is_in_the_test_set() {
    let report = report();
    for lang in Lang::ALL {
        for group in [Group::ShortAttacks, Group::LongAttacks, Group::Benign] {
            let t = report.tally(StageMode::Combined, group, None, Some(lang));
            assert!(
                t.total >= 10,
                "{lang} {}: {} lines",
                group.as_str(),
                t.total
            );
        }
    }
    for family in Family::ALL {
        let group = match (family.is_attack(), family) {
            (false, _) => Group::Benign,
            (true, Family::RoleplayJailbreak) => Group::LongAttacks,
            (true, _) => Group::ShortAttacks,
        };
        let t = report.tally(StageMode::Combined, group, Some(family), None);
        assert!(t.total >= 10, "{family}: {} lines", t.total);
    }
}
