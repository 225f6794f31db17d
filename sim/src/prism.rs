//! Stoplight Prism serving Twilio's own OpenAPI description of the REST API
//! (`tests/fixtures/twilio/openapi/`, see its SOURCE.md) as a mock that validates every request
//! against Twilio's schema: a request outside it is answered 422 with the problems listed.
//!
//! Prism is found at `VOXRELAY_PRISM` (the `prism` executable; `.ci/run` installs
//! `@stoplight/prism-cli` with npm). Without it [`Prism::start`] returns `None` and says the
//! test is skipped, unless `VOXRELAY_REQUIRE_TOOLS=1`, which makes a missing Prism a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Twilio's OpenAPI description of the 2010 REST API, as copied into the repository.
pub const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/twilio/openapi/twilio_api_v2010.yaml"
);

/// A running Prism mock; killed when dropped.
pub struct Prism {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prism {
    /// Prism on a free loopback port, once it answers (at most 60 s); `None` when
    /// `VOXRELAY_PRISM` is not set (the test is skipped, and says so on stderr, naming
    /// `what`).
    ///
    /// # Panics
    /// When `VOXRELAY_PRISM` is not set and `VOXRELAY_REQUIRE_TOOLS=1`, or when Prism cannot be
    /// started or does not answer: a test harness's failure, not a skip.
    pub fn start(what: &str) -> Option<Prism> {
        let Some(bin) = std::env::var_os("VOXRELAY_PRISM").map(PathBuf::from) else {
            assert!(
                std::env::var("VOXRELAY_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "VOXRELAY_PRISM is not set and VOXRELAY_REQUIRE_TOOLS=1"
            );
            eprintln!("SKIPPED: {what} (VOXRELAY_PRISM not set: no Twilio REST contract mock)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(bin)
            .args([
                "mock",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--errors",
                SPEC,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prism");
        let prism = Prism {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // Ready once it answers HTTP: Node binds the port before its routes are loaded.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers_http(port) {
            assert!(Instant::now() < deadline, "prism did not start in 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(prism)
    }
}

/// Whether something on `port` answers an HTTP request with an HTTP status line.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(stream.read(&mut head), Ok(n) if n >= 5 && head.starts_with(b"HTTP/"))
}
