//! Guard costs per utterance (target: an echo check costs at most 20 µs p99):
//! the parroting check on a model answer, the self-echo check on a caller line, and the leak
//! check on a model answer against a FULL prompt. Run: `cargo bench --bench echo`.
//!
//! Besides criterion's estimates, the bench times single calls and prints p50 and p99 per check
//! (criterion reports means and medians of batches, not tail latency of one call).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use voxrelay::guard::echo::{EchoConfig, EchoMonitor};
use voxrelay::guard::leak::{LeakConfig, LeakGuard, canary_instruction};

/// A 15-word caller line.
const CALLER: &str = "I chipped my front tooth this morning and I was hoping you could see me";

/// A realistic 20-word model answer.
const ANSWER: &str = "I'm sorry to hear that. We keep slots for emergencies, so I can get you in today at two thirty.";

/// What the model said in the last few seconds (self-echo check).
const RECENT_MODEL: [&str; 4] = [
    "Thank you for calling Bright Smile Dental, this is the front desk, how can I help you today?",
    "I'm sorry to hear that. We keep slots for emergencies, so I can get you in today at two thirty.",
    "Could I have your full name and date of birth, please, so I can pull up your file?",
    "Thank you. Does two thirty work for you, or would you prefer a later time this afternoon?",
];

/// A 30-word model answer.
const LONG_ANSWER: &str = "The appointment is today at two thirty with Doctor Patel. Please arrive ten minutes \
     early, bring your insurance card, and if the pain gets worse before then, call us back.";

const CANARY: &str = "VX-K7QM2ZTA";

fn full_prompt() -> String {
    format!(
        "{}\n\n{}\n\n{}",
        include_str!("../prompts/universal.md"),
        include_str!("../prompts/examples/bright_smile_dental.md"),
        canary_instruction(CANARY)
    )
}

/// p50 and p99 of `runs` single calls of `f`, in microseconds.
fn percentiles(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn echo(c: &mut Criterion) {
    let t0 = Instant::now();
    let full = full_prompt();

    // Parroting check: the caller's last line is set; each model answer is compared with it.
    let mut model_side = EchoMonitor::new(EchoConfig::default());
    model_side.on_caller_transcript(CALLER, t0);
    c.bench_function(
        "echo: on_model_transcript (20-word answer vs 15-word caller line)",
        |b| b.iter(|| model_side.on_model_transcript(black_box(ANSWER), t0)),
    );

    // Self-echo check: four model utterances inside the window.
    let mut caller_side = EchoMonitor::new(EchoConfig::default());
    for said in RECENT_MODEL {
        caller_side.on_model_transcript(said, t0);
    }
    let later = t0 + Duration::from_secs(2);
    c.bench_function(
        "echo: on_caller_transcript (15 words vs 4 recent model lines)",
        |b| b.iter(|| caller_side.on_caller_transcript(black_box(CALLER), later)),
    );

    let guard = LeakGuard::new(CANARY, &full, LeakConfig::default());
    c.bench_function("leak: check (30-word answer vs FULL prompt)", |b| {
        b.iter(|| guard.check(black_box(LONG_ANSWER)))
    });
    c.bench_function("leak: LeakGuard::new (FULL prompt, once per call)", |b| {
        b.iter(|| LeakGuard::new(CANARY, black_box(&full), LeakConfig::default()))
    });

    const RUNS: usize = 20_000;
    let (p50, p99) = percentiles(RUNS, || {
        black_box(model_side.on_model_transcript(black_box(ANSWER), t0));
    });
    eprintln!("single-call on_model_transcript: p50 {p50:.2} µs, p99 {p99:.2} µs");
    let (p50, p99) = percentiles(RUNS, || {
        black_box(caller_side.on_caller_transcript(black_box(CALLER), later));
    });
    eprintln!("single-call on_caller_transcript: p50 {p50:.2} µs, p99 {p99:.2} µs");
    let (p50, p99) = percentiles(RUNS, || {
        black_box(guard.check(black_box(LONG_ANSWER)));
    });
    eprintln!("single-call LeakGuard::check: p50 {p50:.2} µs, p99 {p99:.2} µs");
    eprintln!(
        "FULL prompt: {} words, {} tokens",
        full.split_whitespace().count(),
        voxrelay::prompt::count_tokens(&full)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = echo
}
criterion_main!(benches);
