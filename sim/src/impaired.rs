//! An impaired network link for tests: a small TCP relay between two ends that delays each
//! chunk as a real network would, on a seeded schedule.
//!
//! This machine's kernel has no `netem` queueing discipline, so the impairment lives here:
//! each direction of each connection reads chunks (up to [`CHUNK_BYTES`]) and delivers each one
//! at its arrival time plus the one-way delay plus a jitter drawn uniformly from
//! ±`jitter_ms / 2`, never before the chunk ahead of it (TCP delivers in order). Now and then
//! (every `stall_every_ms` range, seeded) the direction stalls for a `stall_ms` range: what
//! arrives meanwhile is held until the stall ends, which is what a lost segment and its
//! retransmission look like to the application (head-of-line blocking).
//!
//! Bounded: at most [`QUEUE_CHUNKS`] chunks wait per direction (the reader then waits), and
//! every task ends with its connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest chunk read at once, bytes.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks that may wait per direction.
pub const QUEUE_CHUNKS: usize = 1024;

/// How a link is impaired, in each direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    /// One-way delay, ms (half the round trip).
    pub one_way_ms: u64,
    /// Jitter, ms: each chunk's delay varies by up to half this either way.
    pub jitter_ms: u64,
    /// From the connection's start, the gaps between stalls, ms (drawn from this range).
    pub stall_every_ms: (u64, u64),
    /// How long each stall lasts, ms (drawn from this range).
    pub stall_ms: (u64, u64),
    /// The seed of the schedule (each direction of each connection derives its own).
    pub seed: u64,
}

impl Impairment {
    /// 150 ms round trip, 20 ms jitter, and a 200–400 ms stall every 2–4 s.
    pub fn real_network(seed: u64) -> Impairment {
        Impairment {
            one_way_ms: 75,
            jitter_ms: 20,
            stall_every_ms: (2000, 4000),
            stall_ms: (200, 400),
            seed,
        }
    }
}

/// A seeded xorshift64* generator: the schedule must repeat from the seed, and nothing here
/// needs more than that.
#[derive(Debug, Clone)]
struct Schedule(u64);

impl Schedule {
    fn new(seed: u64) -> Schedule {
        Schedule(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo + 1)
        }
    }
}

/// What a relay recorded, for a test to report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    /// Stalls begun, over every direction.
    pub stalls: u64,
    /// Chunks delivered.
    pub chunks: u64,
}

/// A running relay.
pub struct ImpairedLink {
    addr: SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    stats: std::sync::Arc<std::sync::Mutex<LinkStats>>,
    task: JoinHandle<()>,
}

impl ImpairedLink {
    /// Listens on a loopback port and relays each connection to `target` (`None`: set it
    /// later with [`ImpairedLink::set_target`]; until then connections are closed) with
    /// `impairment`.
    ///
    /// Errors: the port could not be bound.
    pub async fn start(
        target: Option<SocketAddr>,
        impairment: Impairment,
    ) -> std::io::Result<ImpairedLink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let stats = std::sync::Arc::new(std::sync::Mutex::new(LinkStats::default()));
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let shared = stats.clone();
        let targets = target.clone();
        let task = tokio::spawn(async move {
            let mut connection = 0u64;
            let mut tasks = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connection += 1;
                let stats = shared.clone();
                let target = *targets
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                tasks.spawn(async move {
                    let Some(target) = target else {
                        return;
                    };
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let seed = impairment.seed ^ connection.wrapping_mul(0x1000_0001);
                    tokio::join!(
                        pump(client_read, server_write, impairment, seed, stats.clone()),
                        pump(server_read, client_write, impairment, seed ^ 0xabcd, stats),
                    );
                });
            }
        });
        Ok(ImpairedLink {
            addr,
            target,
            stats,
            task,
        })
    }

    /// Relays later connections to `target`.
    pub fn set_target(&self, target: SocketAddr) {
        *self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(target);
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has done so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting (connections already relayed end with their peers).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// One direction: read, schedule, deliver in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    impairment: Impairment,
    seed: u64,
    stats: std::sync::Arc<std::sync::Mutex<LinkStats>>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut schedule = Schedule::new(seed);
        let start = Instant::now();
        let mut next_stall =
            start + Duration::from_millis(schedule.between(impairment.stall_every_ms));
        let mut stall_until = start;
        let mut last = start;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let arrived = Instant::now();
            if arrived >= next_stall {
                let length = schedule.between(impairment.stall_ms);
                stall_until = next_stall + Duration::from_millis(length);
                next_stall = stall_until
                    + Duration::from_millis(schedule.between(impairment.stall_every_ms));
                if let Ok(mut s) = stats.lock() {
                    s.stalls += 1;
                }
            }
            let jitter = schedule.between((0, impairment.jitter_ms)) as i64
                - (impairment.jitter_ms / 2) as i64;
            let delay = (impairment.one_way_ms as i64 + jitter).max(0) as u64;
            let mut at = (arrived + Duration::from_millis(delay)).max(last);
            if arrived < stall_until {
                at = at.max(stall_until + Duration::from_millis(impairment.one_way_ms));
            }
            last = at;
            if let Ok(mut s) = stats.lock() {
                s.chunks += 1;
            }
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_arrive_late_in_order_and_held_through_a_stall() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = echo.accept().await {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let impairment = Impairment {
            one_way_ms: 40,
            jitter_ms: 10,
            stall_every_ms: (300, 300),
            stall_ms: (200, 200),
            seed: 7,
        };
        let link = ImpairedLink::start(Some(echo_addr), impairment)
            .await
            .expect("link");
        let mut s = TcpStream::connect(link.addr()).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut rtts = Vec::new();
        for i in 0..8u8 {
            let sent = Instant::now();
            s.write_all(&[i]).await.expect("write");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("read");
            assert_eq!(b[0], i, "in order");
            rtts.push(sent.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            rtts.iter().all(|&r| r >= 70),
            "two one-way delays at least: {rtts:?}"
        );
        assert!(rtts.iter().any(|&r| r >= 250), "a stall was felt: {rtts:?}");
        assert!(link.stats().stalls >= 1);
        link.shutdown();
    }

    #[test]
    fn the_schedule_repeats_from_its_seed() {
        let mut a = Schedule::new(3);
        let mut b = Schedule::new(3);
        let mut c = Schedule::new(4);
        let xs: Vec<u64> = (0..5).map(|_| a.between((200, 400))).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.between((200, 400))).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.between((200, 400))).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|x| (200..=400).contains(x)));
    }
}
