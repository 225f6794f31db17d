//! Helpers shared by the tests that run the real `voxrelay` binary: start `voxrelay serve`,
//! signal it, wait for it to exit.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use voxrelay::store::{NewBusiness, Store};
use voxrelay_sim::world::{SIM_SIGNING_KEY, SIM_TWILIO_AUTH_TOKEN};

/// The number the dental business answers.
pub const NUMBER: &str = "+15005550006";

/// The database at `url`, migrated, with the business `dental` on [`NUMBER`].
pub async fn dental_store(url: &str) -> Store {
    let store = Store::connect(url).await.expect("database");
    store.migrate().await.expect("migrations");
    let mut new = NewBusiness::named("Bright Smile Dental");
    new.id = Some("dental".into());
    new.ai_prompt = "Bright Smile Dental cleans teeth.".into();
    new.greeting_instructions = "Say hello.".into();
    store.add_business(&new).await.expect("business");
    store.add_number(NUMBER, "dental").await.expect("number");
    store
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

/// How to start one instance.
pub struct Instance<'a> {
    /// `lifecycle.instance_id`.
    pub id: &'a str,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `server.public_host`: where Twilio reaches it (itself, or a load balancer).
    pub public_host: String,
    /// `database.url`.
    pub database_url: &'a str,
    /// `upstream.url`.
    pub upstream_url: String,
    /// More `VOXRELAY_*` settings.
    pub extra: &'a [(&'a str, &'a str)],
}

/// Starts `voxrelay serve` as `instance` and waits until it answers `/healthz`.
#[allow(
    clippy::zombie_processes,
    reason = "the child is returned; each test waits for it with `exited`"
)]
pub async fn serve(instance: &Instance<'_>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_voxrelay"));
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["--config", "config/voxrelay.toml", "serve"])
        .env(
            "VOXRELAY_SERVER_LISTEN",
            format!("127.0.0.1:{}", instance.port),
        )
        .env("VOXRELAY_SERVER_PUBLIC_HOST", &instance.public_host)
        .env("VOXRELAY_SERVER_PUBLIC_SCHEME", "http")
        .env("VOXRELAY_UPSTREAM_URL", &instance.upstream_url)
        .env("VOXRELAY_DATABASE_URL", instance.database_url)
        .env("VOXRELAY_LIFECYCLE_INSTANCE_ID", instance.id)
        .env("TWILIO_AUTH_TOKEN", SIM_TWILIO_AUTH_TOKEN)
        .env("VOXRELAY_SIGNING_KEY", SIM_SIGNING_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (key, value) in instance.extra {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("voxrelay serve starts");
    let health = format!("http://127.0.0.1:{}/healthz", instance.port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if reqwest::get(&health).await.is_ok() {
            return child;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve never came up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends signal `name` (`TERM`, `KILL`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// Waits (at most `limit`) for the process to exit; its exit code.
pub async fn exited(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
