//! How well the sanitizer does on a part of `data/guard/` (`voxrelay guard eval`, the frozen
//! test set's regression test, BENCHMARKS.md): recall and false positives per stage (rules
//! alone, classifier alone, combined), per family and per language, and on multi-turn sequences
//! with and without the turn window.
//!
//! A line counts as *detected* when its verdict is flag or block, and a benign line as a
//! *false positive* when it is flagged or blocked. "Rules alone" is the verdict of the rules
//! without the classifier (so without its veto, [`super::sanitizer::RuleOrigin`]), "classifier
//! alone" that of [`Assessment::model_score`], both under the same thresholds; "combined" is
//! what a call does ([`Assessment::verdict`]).
//!
//! A sequence is scored turn by turn as a call does ([`Sanitizer::assess_turn`]); an attack
//! sequence is detected when any of its turns is, a benign one is a false positive when any of
//! its turns is. "Without the window" scores each turn alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::dataset::{Dataset, Family, Label, Lang};
use super::sanitizer::{Assessment, Sanitizer, TurnWindow, Verdict};

/// Which part of the sanitizer a figure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StageMode {
    /// The rules' score alone.
    Rules,
    /// The classifier's risk alone.
    Classifier,
    /// Both, as a call runs them.
    Combined,
}

impl StageMode {
    /// The three, in report order.
    pub const ALL: [StageMode; 3] = [StageMode::Rules, StageMode::Classifier, StageMode::Combined];

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StageMode::Rules => "rules alone",
            StageMode::Classifier => "classifier alone",
            StageMode::Combined => "combined",
        }
    }

    /// The verdict of this stage, from the assessment with the classifier (`a`) and the one
    /// of the rules alone (`rules`).
    fn verdict(self, sanitizer: &Sanitizer, a: &Assessment, rules: &Assessment) -> Verdict {
        match self {
            StageMode::Rules => sanitizer.verdict_of(rules.rules_score),
            StageMode::Classifier => sanitizer.verdict_of(a.model_score),
            StageMode::Combined => a.verdict,
        }
    }
}

/// Lines and how many of them were detected (flag or block) and blocked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Lines.
    pub total: usize,
    /// Flagged or blocked.
    pub detected: usize,
    /// Blocked.
    pub blocked: usize,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        self.total += 1;
        if v != Verdict::Allow {
            self.detected += 1;
        }
        if v == Verdict::Block {
            self.blocked += 1;
        }
    }

    fn merge(&mut self, o: Tally) {
        self.total += o.total;
        self.detected += o.detected;
        self.blocked += o.blocked;
    }

    /// `detected / total` (0 for no lines).
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.detected as f64 / self.total as f64
        }
    }
}

/// The groups a line is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// Attacks of every family but the long role-play jailbreaks.
    ShortAttacks,
    /// Long role-play jailbreaks.
    LongAttacks,
    /// Benign lines.
    Benign,
}

impl Group {
    fn of(label: Label, family: Family) -> Group {
        match (label, family) {
            (Label::Benign, _) => Group::Benign,
            (Label::Attack, Family::RoleplayJailbreak) => Group::LongAttacks,
            (Label::Attack, _) => Group::ShortAttacks,
        }
    }

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::ShortAttacks => "short attacks",
            Group::LongAttacks => "long role-play jailbreaks",
            Group::Benign => "benign",
        }
    }
}

/// The figures of one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Per stage, group, family and language.
    pub lines: BTreeMap<(StageMode, Group, Family, Lang), Tally>,
    /// Multi-turn sequences, combined stage, per label and language: (with the window, without).
    pub sequences: BTreeMap<(Label, Lang), (Tally, Tally)>,
    /// Lines (and sequence turns) that went the wrong way under the combined stage, for reading:
    /// (label, family, language, text, score; for a sequence its turns joined with " ⏎ " and the
    /// highest score a turn got with the window).
    pub mistakes: Vec<(Label, Family, Lang, String, f32)>,
}

impl Report {
    /// The tally of a stage over the lines matching `group` and, when given, a family and a
    /// language.
    pub fn tally(
        &self,
        stage: StageMode,
        group: Group,
        family: Option<Family>,
        lang: Option<Lang>,
    ) -> Tally {
        let mut t = Tally::default();
        for ((s, g, f, l), x) in &self.lines {
            if *s == stage
                && *g == group
                && family.is_none_or(|w| w == *f)
                && lang.is_none_or(|w| w == *l)
            {
                t.merge(*x);
            }
        }
        t
    }

    /// Multi-turn tally of a label, all languages: (with the window, without).
    pub fn sequence_tally(&self, label: Label, lang: Option<Lang>) -> (Tally, Tally) {
        let (mut with, mut without) = (Tally::default(), Tally::default());
        for ((l, g), (a, b)) in &self.sequences {
            if *l == label && lang.is_none_or(|w| w == *g) {
                with.merge(*a);
                without.merge(*b);
            }
        }
        (with, without)
    }

    /// The report as Markdown tables: per stage, per family, per language, multi-turn.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let cell = |t: Tally| {
            if t.total == 0 {
                "–".to_string()
            } else {
                format!("{:.1}% ({}/{})", 100.0 * t.rate(), t.detected, t.total)
            }
        };
        let _ = writeln!(
            out,
            "| stage | short attacks detected | long jailbreaks detected | benign flagged (false positives) |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for s in StageMode::ALL {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                s.as_str(),
                cell(self.tally(s, Group::ShortAttacks, None, None)),
                cell(self.tally(s, Group::LongAttacks, None, None)),
                cell(self.tally(s, Group::Benign, None, None)),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| family | rules alone | classifier alone | combined | combined, blocked |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for f in Family::ALL {
            let group = Group::of(
                if f.is_attack() {
                    Label::Attack
                } else {
                    Label::Benign
                },
                f,
            );
            let t: Vec<Tally> = StageMode::ALL
                .iter()
                .map(|s| self.tally(*s, group, Some(f), None))
                .collect();
            if t[2].total == 0 {
                continue;
            }
            let blocked = t[2].blocked as f64 / t[2].total as f64;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1}% |",
                f,
                cell(t[0]),
                cell(t[1]),
                cell(t[2]),
                100.0 * blocked
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| language | short attacks (rules / classifier / combined) | long jailbreaks (combined) | benign flagged (rules / classifier / combined) |"
        );
        let _ = writeln!(out, "|---|---|---|---|");
        for l in Lang::ALL {
            let by = |g: Group, s: StageMode| self.tally(s, g, None, Some(l));
            if by(Group::Benign, StageMode::Combined).total == 0
                && by(Group::ShortAttacks, StageMode::Combined).total == 0
            {
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} / {} / {} | {} | {} / {} / {} |",
                l,
                cell(by(Group::ShortAttacks, StageMode::Rules)),
                cell(by(Group::ShortAttacks, StageMode::Classifier)),
                cell(by(Group::ShortAttacks, StageMode::Combined)),
                cell(by(Group::LongAttacks, StageMode::Combined)),
                cell(by(Group::Benign, StageMode::Rules)),
                cell(by(Group::Benign, StageMode::Classifier)),
                cell(by(Group::Benign, StageMode::Combined)),
            );
        }
        if !self.sequences.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| multi-turn sequences | with the turn window | each turn alone |"
            );
            let _ = writeln!(out, "|---|---|---|");
            let (a_with, a_without) = self.sequence_tally(Label::Attack, None);
            let (b_with, b_without) = self.sequence_tally(Label::Benign, None);
            let _ = writeln!(
                out,
                "| attacks detected | {} | {} |",
                cell(a_with),
                cell(a_without)
            );
            let _ = writeln!(
                out,
                "| benign flagged | {} | {} |",
                cell(b_with),
                cell(b_without)
            );
        }
        out
    }
}

/// Scores every line and sequence of `data` with `sanitizer`.
pub fn evaluate(sanitizer: &Sanitizer, data: &Dataset) -> Report {
    let mut report = Report::default();
    let rules_only = sanitizer.clone().without_classifier();
    for s in &data.samples {
        let a = sanitizer.assess(&s.text);
        let rules = rules_only.assess(&s.text);
        let group = Group::of(s.label, s.family);
        for mode in StageMode::ALL {
            report
                .lines
                .entry((mode, group, s.family, s.lang))
                .or_default()
                .add(mode.verdict(sanitizer, &a, &rules));
        }
        if (a.verdict != Verdict::Allow) != (s.label == Label::Attack) {
            report
                .mistakes
                .push((s.label, s.family, s.lang, s.text.clone(), a.score));
        }
    }
    for s in &data.sequences {
        let mut window = TurnWindow::new();
        let (mut with, mut without) = (Verdict::Allow, Verdict::Allow);
        let mut highest = 0.0f32;
        for turn in &s.turns {
            let together = sanitizer.assess_turn(turn, &mut window);
            let alone = sanitizer.assess(turn);
            highest = highest.max(together.score);
            with = with.max(together.verdict);
            without = without.max(alone.verdict);
        }
        let entry = report.sequences.entry((s.label, s.lang)).or_default();
        entry.0.add(with);
        entry.1.add(without);
        if (with != Verdict::Allow) != (s.label == Label::Attack) {
            report
                .mistakes
                .push((s.label, s.family, s.lang, s.turns.join(" ⏎ "), highest));
        }
    }
    report
}
