//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) loads `/dashboard`
//! while a simulated call is live, the page's script reads `/api/v1/stats` with the token from
//! the address, and the figures appear in the page. A screenshot is saved as an artifact
//! (`$VOXRELAY_ARTIFACT_DIR/dashboard.png`, else the test's temporary directory).
//!
//! Without Chromium the browser part is skipped, saying so, unless `VOXRELAY_REQUIRE_TOOLS=1`
//! (as `.ci/run` sets), which makes it fail instead.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use common::api::Api;
use common::{dental_world, tool_missing};
use voxrelay_sim::caller;
use voxrelay_sim::demo::jfk_speech;
use voxrelay_sim::world::SIM_VIEWER_TOKEN;

/// The Chromium binary, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Runs headless Chromium on `url` with `args`, giving the page's script `budget_ms` of
/// (virtual) time; returns its standard output.
fn headless(browser: &str, url: &str, args: &[&str], budget_ms: u64) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--virtual-time-budget={budget_ms}"),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn artifact_dir() -> PathBuf {
    std::env::var_os("VOXRELAY_ARTIFACT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_live_calls_and_latency_figures_in_a_browser() {
    let mut world = dental_world(300).await;
    let api = Api::new(&world);

    // A finished call gives the latency figures; a second one stays live while the page loads.
    let mut first = world.caller(
        &format!("CA{:032x}", 1),
        "+15005550006",
        jfk_speech(Some(2.0)).expect("speech"),
    );
    first.lead_silence_ms = 300;
    first.tail_silence_ms = 1000;
    let (report, _) = world.call(first).await.expect("first call");
    assert!(report.streamed);
    let live_sid = format!("CA{:032x}", 2);
    let mut second = world.caller(&live_sid, "+15005550006", jfk_speech(None).expect("speech"));
    second.tail_silence_ms = 8000;
    let live = tokio::spawn(caller::run(second));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let stats: Value = loop {
        let r = api.get("/stats", Some(SIM_VIEWER_TOKEN)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        if r.json["live_calls"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live call: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["live_calls"][0]["call_sid"], live_sid.as_str());
    let five = &stats["businesses"][0]["windows"][0];
    assert_eq!(stats["businesses"][0]["business_id"], "dental");
    assert_eq!(five["calls"], 1, "{stats}");
    let p50 = five["greeting_ms"]["p50"].as_f64().expect("greeting p50");
    assert!((295.0..400.0).contains(&p50), "{p50}");
    assert_eq!(
        api.get("/stats", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let page = reqwest::get(format!("http://{}/dashboard", world.proxy_addr))
        .await
        .expect("GET /dashboard");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN or outside URL"
    );

    match chromium() {
        Some(browser) => {
            let url = format!(
                "http://{}/dashboard#token={SIM_VIEWER_TOKEN}",
                world.proxy_addr
            );
            let dom = tokio::task::spawn_blocking({
                let (browser, url) = (browser.to_string(), url.clone());
                move || headless(&browser, &url, &["--dump-dom"], 3000)
            })
            .await
            .expect("browser task");
            assert!(
                dom.contains("data-loaded=\"1\""),
                "the page loaded its figures:\n{dom}"
            );
            assert!(
                dom.contains(&format!("data-live-call=\"{live_sid}\"")),
                "{dom}"
            );
            let cell = "data-business=\"dental\" data-window=\"5\" data-figure=\"greeting-p50\">";
            let at = dom
                .find(cell)
                .unwrap_or_else(|| panic!("no greeting cell:\n{dom}"));
            let value: String = dom[at + cell.len()..]
                .chars()
                .take_while(|c| *c != '<')
                .collect();
            let shown: f64 = value.parse().unwrap_or_else(|_| panic!("{value:?}"));
            assert!(
                (shown - p50).abs() <= 1.0,
                "page shows {shown}, stats say {p50}"
            );
            assert!(dom.contains("data-alert=\"p95_turn_latency\""), "{dom}");

            let dir = artifact_dir();
            std::fs::create_dir_all(&dir).expect("artifact dir");
            let png = dir.join("dashboard.png");
            let _ = std::fs::remove_file(&png);
            let shot = format!("--screenshot={}", png.display());
            tokio::task::spawn_blocking({
                let (browser, url) = (browser.to_string(), url.clone());
                move || headless(&browser, &url, &[&shot, "--window-size=1400,900"], 3000)
            })
            .await
            .expect("browser task");
            let bytes = std::fs::read(&png).expect("screenshot written");
            assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
            assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
            let _ = writeln!(std::io::stderr(), "dashboard screenshot: {}", png.display());
        }
        None => tool_missing("chromium", "the dashboard in a browser", "not on PATH"),
    }

    let _ = live.await;
    world.stop().await;
}
