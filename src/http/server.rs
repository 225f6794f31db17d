//! The accept loop: hyper HTTP/1.1 connections, bounded in time and in number, so sockets that
//! send nothing cannot keep real webhooks out.
//!
//! - **Header-read timeout** (`server.header_read_timeout_ms`): hyper's own
//!   (`http1::Builder::header_read_timeout`); its clock starts when the connection opens and
//!   again when a keep-alive connection waits for its next request, so it bounds an idle
//!   keep-alive connection too. A connection that does not deliver a whole request head in
//!   time is closed.
//! - **Body timeout** (`server.request_body_timeout_ms`): tower-http's
//!   `RequestBodyTimeoutLayer` on the router; a body that stalls fails the request (408).
//! - **Connection cap** (`server.max_connections`): open connections, WebSockets included (a
//!   connection counts until its socket is dropped, after an upgrade too). At the cap, the
//!   oldest connection with no request in flight and no upgrade is closed to make room (nginx
//!   does the same with idle keep-alive connections when it runs out); when every connection
//!   is busy, the new one is closed at once. Both are counted in
//!   `voxrelay_http_connections_shed_total{why}` and warned about at the 1st, 10th, 100th, …
//!   time.
//!
//! At shutdown the listener closes, each connection is asked to finish its request in flight
//! and close (hyper's graceful shutdown), and the loop waits for them at most
//! [`CLOSE_LIMIT`]. Upgraded sockets (media streams) are not waited for here: their calls are
//! the drain's ([`crate::call::lifecycle`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use crate::domain::ConnectionShed as Shed;
use crate::telemetry::metrics::{ConnectionShedLabels, Metrics};
use crate::telemetry::repeats::Repeats;

/// How long open connections may take to finish at shutdown.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// How long the loop pauses after `accept` fails (out of file descriptors, say), so it does
/// not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Limits on the server's connections (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most, WebSockets included.
    pub max_connections: usize,
    /// How long a connection may take to send a whole request head, from its opening or from
    /// the end of its last response.
    pub header_read_timeout: Duration,
}

/// One open connection, as the cap sees it.
#[derive(Debug, Default)]
struct Conn {
    /// Requests whose response is not produced yet.
    in_flight: AtomicUsize,
    /// Its HTTP task still runs (false once it upgraded or ended).
    serving: AtomicBool,
    /// Told to close when idle.
    evict: Notify,
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Conns {
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

/// What `admit` decided.
enum Admit {
    /// Room (perhaps made by evicting an idle connection).
    Open(u64, Arc<Conn>, Option<Shed>),
    /// No room: close the new connection.
    Refuse,
}

impl Conns {
    fn admit(&self, max: usize) -> Admit {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut shed = None;
        if open.len() >= max {
            let idle = open.values().find(|c| {
                c.serving.load(Ordering::Acquire) && c.in_flight.load(Ordering::Acquire) == 0
            });
            match idle {
                Some(conn) => {
                    // Told now, removed by its own task; the count is over by one meanwhile.
                    conn.serving.store(false, Ordering::Release);
                    conn.evict.notify_one();
                    shed = Some(Shed::IdleEvicted);
                }
                None => return Admit::Refuse,
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            serving: AtomicBool::new(true),
            ..Conn::default()
        });
        open.insert(id, conn.clone());
        Admit::Open(id, conn, shed)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A socket that holds its place under the cap until it is dropped (after an upgrade, when the
/// WebSocket is).
struct Counted {
    tcp: TcpStream,
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as one connection's hyper service, counting its requests in flight.
#[derive(Clone)]
struct ConnService {
    app: Router,
    conn: Arc<Conn>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt as _;
        let in_flight = InFlight::new(self.conn.clone());
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request.map(axum::body::Body::new)).await;
            drop(in_flight);
            response
        })
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes the listener and lets the
/// open connections finish (at most [`CLOSE_LIMIT`]). `tap` is called on every accepted socket
/// before it is served (socket options). Errors from `accept` are logged and the loop goes
/// on.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    tap: impl Fn(&TcpStream),
    shutdown: impl Future<Output = ()>,
) {
    let conns = Arc::new(Conns::default());
    let tasks = TaskTracker::new();
    let (closing_tx, closing) = watch::channel(false);
    let mut accept_errors = Repeats::default();
    let mut sheds = Repeats::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if let Some(times) = accept_errors.count() {
                        tracing::warn!(error = %e, times, "cannot accept a connection");
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let admitted = conns.admit(limits.max_connections);
        let shed = match &admitted {
            Admit::Open(_, _, shed) => *shed,
            Admit::Refuse => Some(Shed::OverCap),
        };
        if let Some(why) = shed {
            metrics
                .http_connections_shed
                .get_or_create(&ConnectionShedLabels { why: why.as_str() })
                .inc();
            if let Some(times) = sheds.count() {
                tracing::warn!(
                    why = why.as_str(),
                    times,
                    max_connections = limits.max_connections,
                    "connection cap reached"
                );
            }
        }
        let Admit::Open(id, conn, _) = admitted else {
            drop(tcp);
            continue;
        };
        tap(&tcp);
        let io = TokioIo::new(Counted {
            tcp,
            conns: conns.clone(),
            id,
        });
        let service = ConnService {
            app: app.clone(),
            conn: conn.clone(),
        };
        let connection = builder.serve_connection(io, service).with_upgrades();
        let mut closing = closing.clone();
        tasks.spawn(async move {
            tokio::pin!(connection);
            let mut graceful = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = conn.evict.notified() => {
                        if conn.in_flight.load(Ordering::Acquire) == 0 {
                            break;
                        }
                    }
                    _ = closing.changed(), if !graceful => {
                        graceful = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            conn.serving.store(false, Ordering::Release);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    tasks.close();
    if tokio::time::timeout(CLOSE_LIMIT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "connections still open after the close limit; stopping anyway"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room_and_busy_ones_do_not() {
        let conns = Conns::default();
        let open = |conns: &Conns| match conns.admit(2) {
            Admit::Open(id, conn, shed) => (id, conn, shed),
            Admit::Refuse => panic!("refused"),
        };
        let (first, a, shed) = open(&conns);
        assert_eq!(shed, None);
        let (_, b, _) = open(&conns);
        let busy = InFlight::new(a.clone());
        let (_, _, shed) = open(&conns);
        assert_eq!(shed, Some(Shed::IdleEvicted), "b was idle");
        assert!(!b.serving.load(Ordering::Acquire), "b is told to go");
        assert!(
            a.serving.load(Ordering::Acquire),
            "a has a request in flight"
        );
        // b's task has not removed it yet: a is busy, b already evicted, the third is new.
        conns.remove(first);
        drop(busy);
        assert_eq!(conns.len(), 2);
    }

    #[test]
    fn with_every_connection_busy_the_new_one_is_refused() {
        let conns = Conns::default();
        let Admit::Open(_, a, _) = conns.admit(1) else {
            panic!("refused")
        };
        let _busy = InFlight::new(a);
        assert!(matches!(conns.admit(1), Admit::Refuse));
    }
}
