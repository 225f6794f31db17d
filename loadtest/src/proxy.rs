//! The proxy under test: started as a child process of this binary (`voxrelay-loadtest proxy`,
//! which runs the same server as `voxrelay serve`), so its CPU time and memory are its own, read
//! from `/proc/PID`. And what its `/metrics` says, parsed back into histograms.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The business and number every load-test call goes to.
pub const BUSINESS_ID: &str = "loadtest";
/// The number of [`BUSINESS_ID`].
pub const NUMBER: &str = "+15005550100";
/// Twilio auth token the child proxy checks webhooks with.
pub const AUTH_TOKEN: &str = "loadtest-twilio-auth-token";
/// Stream-token signing key of the child proxy.
pub const SIGNING_KEY: &str = "loadtest-signing-key-0123456789abcdef";

/// The child proxy process.
pub struct ProxyProcess {
    child: Child,
    /// Its process id.
    pub pid: u32,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the database the child uses: migrated, with the load-test business and number.
pub async fn seed_database(url: &str) -> anyhow::Result<()> {
    let store = voxrelay::store::Store::connect(url).await?;
    store.migrate().await?;
    let mut business = voxrelay::store::NewBusiness::named("Load Test Dental");
    business.id = Some(BUSINESS_ID.to_string());
    business.ai_prompt = include_str!("../../prompts/examples/bright_smile_dental.md").to_string();
    business.greeting_instructions = "Greet the caller.".to_string();
    store.add_business(&business).await?;
    store.add_number(NUMBER, BUSINESS_ID).await?;
    store.close().await;
    Ok(())
}

/// Adds `count` isolation businesses ([`voxrelay_sim::isolation::seed`]) to the database at
/// `url` (migrated by [`seed_database`]).
pub async fn seed_isolation(url: &str, count: usize) -> anyhow::Result<()> {
    let store = voxrelay::store::Store::connect(url).await?;
    voxrelay_sim::isolation::seed(
        &store,
        count,
        include_str!("../../prompts/examples/bright_smile_dental.md"),
    )
    .await?;
    store.close().await;
    Ok(())
}

/// Starts `voxrelay-loadtest proxy` on `listen` with the database `database_url` and the
/// upstream `upstream_url`, its call limits (`limits.max_calls`, `limits.max_pending`) raised
/// to take `calls` at once, logging to `log` (warnings and errors), and waits until it answers
/// `/healthz` (10 s at most).
pub async fn spawn(
    listen: std::net::SocketAddr,
    database_url: &str,
    upstream_url: &str,
    calls: u32,
    log: &Path,
) -> anyhow::Result<ProxyProcess> {
    let mut command = Command::new(std::env::current_exe().context("finding this binary")?);
    command
        .arg("proxy")
        .env("VOXRELAY_SERVER_LISTEN", listen.to_string())
        .env("VOXRELAY_SERVER_PUBLIC_HOST", listen.to_string())
        .env("VOXRELAY_SERVER_PUBLIC_SCHEME", "http")
        .env("VOXRELAY_DATABASE_URL", database_url)
        .env("VOXRELAY_UPSTREAM_URL", upstream_url)
        .env("VOXRELAY_UPSTREAM_TRANSCRIPTION_MODEL", "")
        .env("VOXRELAY_LIMITS_MAX_CALLS", (calls + 10).to_string())
        .env("VOXRELAY_LIMITS_MAX_PENDING", (calls + 10).to_string())
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("VOXRELAY_SIGNING_KEY", SIGNING_KEY)
        .env("RUST_LOG", "warn");
    start_and_wait(command, listen, log).await
}

/// Starts the floor relay (`voxrelay-loadtest floor`, see [`crate::floor`]) on `listen`,
/// relaying to `upstream_url`, and waits until it answers `/healthz` (10 s at most).
pub async fn spawn_floor(
    listen: std::net::SocketAddr,
    upstream_url: &str,
    log: &Path,
) -> anyhow::Result<ProxyProcess> {
    let mut command = Command::new(std::env::current_exe().context("finding this binary")?);
    command
        .arg("floor")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--upstream")
        .arg(upstream_url);
    start_and_wait(command, listen, log).await
}

/// Runs `command` with its standard error in `log` and waits for `/healthz` on `listen`.
async fn start_and_wait(
    mut command: Command,
    listen: std::net::SocketAddr,
    log: &Path,
) -> anyhow::Result<ProxyProcess> {
    let log_file = std::fs::File::create(log)
        .with_context(|| format!("creating the log {}", log.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting the relay process")?;
    let pid = child.id();
    let proxy = ProxyProcess { child, pid };
    let health = format!("http://{listen}/healthz");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(proxy);
        }
        if Instant::now() > deadline {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            bail!("the relay did not answer {health} within 10 s; it said:\n{said}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the proxy server in this process (the `proxy` subcommand): configuration from the
/// built-in defaults and the `VOXRELAY_*` environment, as `voxrelay serve` reads it.
pub async fn serve_here() -> anyhow::Result<()> {
    use voxrelay::config::{Config, Secrets};
    voxrelay::install_crypto_provider();
    voxrelay::telemetry::init(false, "warn");
    let config = Config::defaults_with_env()?;
    let secrets = Secrets::from_env(config.upstream_is_local())?;
    let store = voxrelay::bootstrap::store(&config).await?;
    let prompts = voxrelay::bootstrap::prompts(&config)?;
    voxrelay::prompt::warm_tokenizer();
    let sanitizer = voxrelay::bootstrap::sanitizer(&config)?;
    let listener = voxrelay::http::bind(config.server.listen).await?;
    let state = voxrelay::http::AppState::new(config, secrets, store, prompts, sanitizer, None);
    voxrelay::http::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/PID/stat` (fields 14 and 15, in clock ticks) and `/proc/PID/status` (VmRSS).
///
/// Errors: the process is gone, or the files are not in the documented format (proc(5)).
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/PID/stat without a command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ")" the first field is field 3 (state): utime is field 14, stime 15.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("/proc/PID/stat too short")?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (ticks(14)? + ticks(15)?) / per_second;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("/proc/PID/status without VmRSS")?
        .parse()?;
    Ok(ProcSample {
        cpu_s,
        rss_bytes: rss_kib * 1024,
    })
}

/// A histogram read from a Prometheus text exposition: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// (upper bound in seconds, cumulative count), ascending; the last is +Inf.
    pub cumulative: Vec<(f64, f64)>,
    /// Observations.
    pub count: f64,
}

impl Buckets {
    /// The upper bound of the bucket holding the `q` quantile (0–1), seconds: the quantile is at
    /// most this. `None` without observations or when it falls in +Inf.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0.0 {
            return None;
        }
        let rank = q * self.count;
        self.cumulative
            .iter()
            .find(|(_, c)| *c >= rank)
            .map(|(le, _)| *le)
            .filter(|le| le.is_finite())
    }
}

/// The `_bucket` series of histogram `name` whose labels contain every `label="value"` in
/// `with`, summed over the rest, from a text exposition.
pub fn histogram(exposition: &str, name: &str, with: &[&str]) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: HashMap<String, f64> = HashMap::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !with.iter().all(|l| labels.contains(l)) {
            continue;
        }
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))
            .and_then(|l| l.strip_suffix('"'))
        else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        *by_le.entry(le.to_string()).or_default() += value;
    }
    let mut cumulative: Vec<(f64, f64)> = by_le
        .into_iter()
        .filter_map(|(le, c)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, c))
        })
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = cumulative.last().map_or(0.0, |(_, c)| *c);
    Buckets { cumulative, count }
}

/// The sum of the samples of counter `name` (its `_total` series) whose labels contain `with`.
pub fn counter(exposition: &str, name: &str, with: &[&str]) -> f64 {
    let prefix = format!("{name}_total");
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter(|rest| with.iter().all(|l| rest.contains(l)))
        .filter_map(|rest| {
            rest.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
voxrelay_relay_overhead_seconds_bucket{le=\"0.00005\",leg=\"twilio_to_upstream\"} 90
voxrelay_relay_overhead_seconds_bucket{le=\"0.0001\",leg=\"twilio_to_upstream\"} 99
voxrelay_relay_overhead_seconds_bucket{le=\"0.001\",leg=\"twilio_to_upstream\"} 100
voxrelay_relay_overhead_seconds_bucket{le=\"+Inf\",leg=\"twilio_to_upstream\"} 100
voxrelay_relay_overhead_seconds_bucket{le=\"0.00005\",leg=\"upstream_to_twilio\"} 10
voxrelay_relay_overhead_seconds_bucket{le=\"0.0001\",leg=\"upstream_to_twilio\"} 10
voxrelay_relay_overhead_seconds_bucket{le=\"0.001\",leg=\"upstream_to_twilio\"} 10
voxrelay_relay_overhead_seconds_bucket{le=\"+Inf\",leg=\"upstream_to_twilio\"} 10
voxrelay_frames_dropped_total{leg=\"twilio_to_upstream\"} 2
voxrelay_frames_dropped_total{leg=\"upstream_to_twilio\"} 3
";

    #[test]
    fn histograms_and_counters_are_read_back_from_the_exposition() {
        let one = histogram(
            EXPOSITION,
            "voxrelay_relay_overhead_seconds",
            &["leg=\"twilio_to_upstream\""],
        );
        assert_eq!(one.count, 100.0);
        assert_eq!(one.quantile_bound(0.5), Some(0.00005));
        assert_eq!(one.quantile_bound(0.99), Some(0.0001));
        assert_eq!(one.quantile_bound(1.0), Some(0.001));
        let both = histogram(EXPOSITION, "voxrelay_relay_overhead_seconds", &[]);
        assert_eq!(both.count, 110.0);
        assert_eq!(counter(EXPOSITION, "voxrelay_frames_dropped", &[]), 5.0);
        assert_eq!(
            counter(
                EXPOSITION,
                "voxrelay_frames_dropped",
                &["upstream_to_twilio"]
            ),
            3.0
        );
        assert_eq!(histogram("", "x", &[]).quantile_bound(0.5), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("/proc/self");
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.cpu_s >= 0.0);
    }
}
