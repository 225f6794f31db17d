//! Pending calls: claimed once by CallSid, and dropped with their pre-warmed upstream closed when
//! no media stream comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpListener;

use voxrelay::call::registry::{PendingCall, Registry};
use voxrelay::call::setup::{CallSetup, PromptSource, open_upstream};
use voxrelay::config::{Config, DEFAULT_PATH, DEFAULT_TOML};
use voxrelay::domain::{CallSid, Direction};
use voxrelay::guard::sanitizer::Sanitizer;
use voxrelay::prompt::PromptLibrary;
use voxrelay::realtime::failover::Dialed;
use voxrelay::realtime::{Provider, UpstreamSettings};
use voxrelay::store::{Business, now_ms};

/// A WebSocket server that accepts one connection and notes when the client goes away.
async fn watching_upstream() -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        if let Ok((tcp, _)) = listener.accept().await
            && let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await
        {
            // Read until the client closes (a close frame or the end of the stream).
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
            flag.store(true, Ordering::SeqCst);
        }
    });
    (format!("ws://{addr}/v1/realtime"), closed)
}

fn setup() -> CallSetup {
    let config = Config::from_toml(DEFAULT_TOML, DEFAULT_PATH, |_| None).expect("config");
    let library = PromptLibrary::embedded(700).expect("prompts");
    let business = Business {
        id: "dental".into(),
        name: "Dental".into(),
        language: "en".into(),
        voice: "marin".into(),
        ai_prompt: "We clean teeth.".into(),
        outbound_ai_prompt: String::new(),
        greeting_instructions: "Hello.".into(),
        guard_policy: "monitor".into(),
        hours: String::new(),
        required_sections: Vec::new(),
        created_at_ms: now_ms(),
        updated_at_ms: now_ms(),
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
    CallSetup::build(
        &library,
        &config,
        &business,
        Direction::Inbound,
        &business.ai_prompt,
        sanitizer,
        PromptSource::default(),
    )
    .expect("setup")
}

fn pending(url: String, setup: CallSetup) -> PendingCall {
    let settings = UpstreamSettings {
        url,
        model: "gpt-realtime-1.5".into(),
        provider: Provider::Openai,
        api_key: None,
        connect_timeout_ms: 2000,
        send_buffer_bytes: 0,
    };
    let session = setup.session.clone();
    PendingCall {
        setup,
        from: "+14155550100".into(),
        to: "+15005550006".into(),
        prewarm: tokio::spawn(async move {
            open_upstream(&settings, &session)
                .await
                .map(|socket| Dialed::first(socket, "openai"))
        }),
        created: Instant::now(),
        greeting_requested_at: Default::default(),
        slot: None,
        resume: None,
    }
}

#[tokio::test]
async fn an_unclaimed_call_is_dropped_and_its_prewarmed_upstream_closed() {
    let (url, closed) = watching_upstream().await;
    let registry = Registry::new(Duration::from_millis(200));
    registry.insert(
        CallSid::parse("CA1").expect("CallSid"),
        pending(url, setup()),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(registry.sweep(Instant::now()).is_empty(), "not expired yet");
    assert_eq!(registry.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expired = registry.sweep(Instant::now());
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].call_sid, "CA1");
    assert!(registry.is_empty());
    let deadline = Instant::now() + Duration::from_secs(3);
    while !closed.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed.load(Ordering::SeqCst), "the upstream was closed");
    assert!(registry.claim("CA1").is_none(), "nothing left to claim");
}

#[tokio::test]
async fn a_pending_call_is_claimed_once_with_its_open_upstream() {
    let (url, closed) = watching_upstream().await;
    let registry = Registry::new(Duration::from_secs(30));
    registry.insert(
        CallSid::parse("CA2").expect("CallSid"),
        pending(url, setup()),
    );
    let call = registry.claim("CA2").expect("claimed");
    assert!(registry.claim("CA2").is_none(), "a CallSid is claimed once");
    assert_eq!(call.setup.business_id, "dental");
    let upstream = call.prewarm.await.expect("task").expect("connected");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !closed.load(Ordering::SeqCst),
        "a claimed upstream stays open"
    );
    drop(upstream);
}
