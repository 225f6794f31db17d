//! Hot-path costs: what the proxy does per media frame in each direction, per barge-in, and per
//! call setup. Run: `cargo bench --bench relay`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use std::sync::Arc;

use voxrelay::call::cache::{FingerprintCache, fingerprint};
use voxrelay::call::setup::{CallSetup, PromptSource};
use voxrelay::call::state::{CallSettings, CallState};
use voxrelay::config::{Config, DEFAULT_PATH, DEFAULT_TOML};
use voxrelay::domain::Direction;
use voxrelay::guard::sanitizer::Sanitizer;
use voxrelay::prompt::{BusinessLayer, PromptLibrary};
use voxrelay::realtime::events::{self as rt, ClientEvent, ServerEvent};
use voxrelay::store::Business;
use voxrelay::twilio::media::{self as tw, Inbound};

/// A real 20 ms Twilio media frame (from the repository's capture).
const TWILIO_FRAME: &str = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"155","payload":"f39///////9/f39/f3//f3///v///////////39/f3///3//f39/f////3//f3///////39/f39//39/f39/f39//3//f////////39/fn9/f/9/f39/f3//f39/f/9//////3///////////39/f/////9/////////////f39/f39//39//3///3//////f39/f39///9/f39//39/fw=="},"streamSid":"MZ5174584e1127285e2b015e720b3d9e68"}"#;

fn delta_100ms() -> String {
    let payload = "f39/".repeat(800 / 3 * 4 / 4);
    format!(
        r#"{{"type":"response.output_audio.delta","event_id":"event_123","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"{payload}"}}"#
    )
}

fn relay(c: &mut Criterion) {
    c.bench_function("twilio media frame -> input_audio_buffer.append", |b| {
        b.iter(|| match tw::parse(black_box(TWILIO_FRAME)) {
            Ok(Inbound::Media { payload, .. }) => ClientEvent::Append(&payload).to_json(),
            _ => String::new(),
        })
    });
    let delta = delta_100ms();
    c.bench_function(
        "response.output_audio.delta (100 ms) -> twilio media",
        |b| {
            b.iter(|| match rt::parse(black_box(&delta)) {
                Ok(ServerEvent::AudioDelta { delta, .. }) => {
                    tw::media("MZ5174584e1127285e2b015e720b3d9e68", &delta)
                }
                _ => String::new(),
            })
        },
    );
    c.bench_function("barge-in decision (clear, truncate)", |b| {
        b.iter_batched(
            || {
                let t0 = Instant::now();
                let mut state = CallState::new(
                    CallSettings {
                        mark_interval_ms: 500,
                        server_cancels_on_speech: true,
                        full_tokens: 1000,
                        goodbye_limit: std::time::Duration::from_secs(10),
                    },
                    t0,
                );
                let mut out = Vec::new();
                state.greet(t0, &mut out);
                state.on_response_created("resp_1", t0);
                for _ in 0..30 {
                    state.on_audio_queued("item_1", 800, t0);
                }
                (state, t0 + Duration::from_millis(1200), out)
            },
            |(mut state, at, mut out)| {
                out.clear();
                state.on_speech_started(at, &mut out);
                out
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let library = PromptLibrary::embedded(700).expect("prompts");
    let text = include_str!("../prompts/examples/bright_smile_dental.md");
    voxrelay::prompt::warm_tokenizer();
    c.bench_function("build FULL + COMPACT with token counts", |b| {
        b.iter(|| {
            library.build(
                &BusinessLayer {
                    id: "bright-smile",
                    name: "Bright Smile Dental",
                    language: "en",
                    text: black_box(text),
                    greeting: "Greet the caller.",
                },
                Direction::Inbound,
            )
        })
    });
    // What a call's prompts cost at the webhook: a version served from the prompt cache (a
    // lookup, then the per-call canary with its token count) against rendering and building it.
    let config = Config::from_toml(DEFAULT_TOML, DEFAULT_PATH, |_| None).expect("config");
    let business = Business {
        id: "bright-smile".into(),
        name: "Bright Smile Dental".into(),
        language: "en".into(),
        voice: "marin".into(),
        ai_prompt: text.into(),
        outbound_ai_prompt: String::new(),
        greeting_instructions: "Greet the caller.".into(),
        guard_policy: "monitor".into(),
        hours: String::new(),
        required_sections: Vec::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
        max_concurrent_calls: None,
        max_call_duration_s: None,
        fallback: None,
        end_call_enabled: true,
        transfer_enabled: true,
        transfer_targets: Vec::new(),
        time_zone: "UTC".into(),
        calling_hours: "08:00-21:00".into(),
        outbound_per_minute: 10,
        voicemail_message: String::new(),
    };
    let sanitizer = Arc::new(Sanitizer::builtin().expect("rules"));
    let cache: FingerprintCache<voxrelay::prompt::BuiltPrompts> = FingerprintCache::default();
    let inputs = fingerprint(&["pv_bench", text]);
    let build = || CallSetup::build_prompts(&library, &business, Direction::Inbound, text);
    c.bench_function("call prompts: cached version (lookup + canary)", |b| {
        b.iter(|| {
            let (prompts, _) = cache
                .get_or_build("pv_bench", inputs, build)
                .expect("prompts");
            CallSetup::with_prompts(
                &config,
                &business,
                Direction::Inbound,
                sanitizer.clone(),
                &prompts,
                PromptSource::default(),
            )
        })
    });
    c.bench_function("call prompts: not cached (build + canary)", |b| {
        b.iter(|| {
            let prompts = build().expect("prompts");
            CallSetup::with_prompts(
                &config,
                &business,
                Direction::Inbound,
                sanitizer.clone(),
                &prompts,
                PromptSource::default(),
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = relay
}
criterion_main!(benches);
