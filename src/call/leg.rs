//! One relay leg: the writing half of one of a call's sockets, owned by the call's task.
//!
//! A message goes straight into the socket when the socket can take it: the call's task writes
//! it itself, on the thread that read the frame it answers, with no channel and no second task
//! in between. Only when the socket pushes back (its kernel buffer and the WebSocket write
//! buffer are full) do messages wait, in a bounded queue:
//! - audio takes at most `audio` places; an audio frame beyond them is refused, and the caller
//!   counts it as dropped and must not count it as sent;
//! - control messages (mark, clear, session.update, truncate, cancel, ...) have `control` places
//!   of their own, so audio can never crowd them out, and they are never dropped: a control
//!   message with no room left is a fault of the peer ([`LegFault::NoRoom`]), and the call ends;
//! - a peer that takes nothing for `stall` is a fault too ([`LegFault::Stalled`]): the call ends
//!   instead of holding more and more of its messages.
//!
//! Messages leave in the order they were accepted, audio and control alike, so a `mark` never
//! overtakes the audio it follows and a `clear` always comes after the audio it clears.
//!
//! The leg is driven by [`Leg::poll_write`]: the call's task calls it once after every event it
//! handles (the direct write), and waits on it in its `select!` while something is queued (so
//! the socket wakes the task when it can take more).

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Sink;
use prometheus_client::metrics::histogram::Histogram;

/// How much one leg may hold while its socket pushes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegLimits {
    /// Audio messages that may wait (`audio.queue_frames`).
    pub audio: usize,
    /// Places kept for control messages (`audio.control_queue`).
    pub control: usize,
    /// How long the socket may take nothing before the peer counts as stalled
    /// (`audio.stall_limit_ms`).
    pub stall: Duration,
}

/// Why a leg cannot go on; the call ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegFault {
    /// The socket failed or was closed under us.
    #[error("socket failed: {0}")]
    Socket(String),
    /// The socket has taken nothing for longer than the stall limit.
    #[error("peer took nothing for {0:?}")]
    Stalled(Duration),
    /// A control message found every place kept for control messages taken.
    #[error("no room left for control messages")]
    NoRoom,
}

/// A message waiting for the socket.
enum Waiting<M> {
    /// Droppable audio, with when the frame it carries was read from the other socket.
    Audio(String, Instant),
    /// Never dropped.
    Control(String),
    /// A control frame of the socket's own (a WebSocket ping); never dropped.
    Frame(M),
}

/// The writing half of one socket, its queue and its accounting.
pub struct Leg<S, M> {
    sink: S,
    /// Wraps a JSON text in the socket's message type.
    wrap: fn(String) -> M,
    limits: LegLimits,
    queue: VecDeque<Waiting<M>>,
    audio_waiting: usize,
    control_waiting: usize,
    /// Messages were given to the sink and not flushed yet.
    unflushed: bool,
    /// When each audio frame given to the sink since the last flush was read.
    unflushed_audio: Vec<Instant>,
    /// Since when the socket has taken nothing while something waits; `None` while it keeps up.
    blocked_since: Option<Instant>,
    /// The most messages that ever waited at once.
    peak: usize,
    /// Set by a control message that found no room.
    overflowed: bool,
    /// Read → written time of audio frames (`voxrelay_relay_overhead_seconds` for this leg),
    /// resolved once per call.
    overhead: Histogram,
}

impl<S, M> Leg<S, M>
where
    S: Sink<M> + Unpin,
    S::Error: std::fmt::Display,
{
    /// A leg writing to `sink`. `overhead` receives each audio frame's time from being read to
    /// being flushed to this socket, in seconds.
    pub fn new(sink: S, wrap: fn(String) -> M, limits: LegLimits, overhead: Histogram) -> Self {
        Leg {
            sink,
            wrap,
            limits,
            queue: VecDeque::with_capacity(16),
            audio_waiting: 0,
            control_waiting: 0,
            unflushed: false,
            unflushed_audio: Vec::with_capacity(16),
            blocked_since: None,
            peak: 0,
            overflowed: false,
            overhead,
        }
    }

    /// Accepts an audio message read at `received`, unless `limits.audio` audio messages wait
    /// already. Returns false when it was refused: the audio is dropped and will never be sent.
    pub fn audio(&mut self, text: String, received: Instant) -> bool {
        self.try_audio(text, received).is_ok()
    }

    /// As [`Leg::audio`], giving the message back when it was refused (so the caller can keep
    /// it for later instead of dropping it).
    pub fn try_audio(&mut self, text: String, received: Instant) -> Result<(), String> {
        if self.audio_waiting >= self.limits.audio {
            return Err(text);
        }
        self.audio_waiting += 1;
        self.queue.push_back(Waiting::Audio(text, received));
        self.peak = self.peak.max(self.queue.len());
        Ok(())
    }

    /// Accepts a control message. With no control place left the message is not kept and the
    /// leg faults ([`LegFault::NoRoom`] from the next [`Leg::poll_write`]).
    pub fn control(&mut self, text: String) {
        self.push_control(Waiting::Control(text));
    }

    /// Accepts a frame of the socket's own, such as a WebSocket ping, as a control message
    /// (same room, same fault when there is none).
    pub fn frame(&mut self, frame: M) {
        self.push_control(Waiting::Frame(frame));
    }

    /// Queues a never-dropped message in the room kept for control messages.
    fn push_control(&mut self, waiting: Waiting<M>) {
        if self.control_waiting >= self.limits.control {
            self.overflowed = true;
            return;
        }
        self.control_waiting += 1;
        self.queue.push_back(waiting);
        self.peak = self.peak.max(self.queue.len());
    }

    /// Whether anything waits to be written or flushed.
    pub fn needs_write(&self) -> bool {
        !self.queue.is_empty() || self.unflushed || self.overflowed
    }

    /// When the stall limit runs out, while the socket pushes back; `None` while it keeps up.
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.blocked_since.map(|since| since + self.limits.stall)
    }

    /// The most messages that ever waited at once (never more than `audio + control`).
    pub fn peak_waiting(&self) -> usize {
        self.peak
    }

    /// Messages waiting now.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Writes what the socket takes and flushes it. `Ready(Ok(()))` once everything is written
    /// and flushed; `Pending` while the socket pushes back (the task is woken when it can take
    /// more); `Ready(Err(_))` when the leg cannot go on.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LegFault>> {
        if self.overflowed {
            return Poll::Ready(Err(LegFault::NoRoom));
        }
        let mut sink = std::pin::Pin::new(&mut self.sink);
        let mut progressed = false;
        while !self.queue.is_empty() {
            match sink.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(LegFault::Socket(e.to_string()))),
                Poll::Pending => break,
            }
            let message = match self.queue.pop_front() {
                Some(Waiting::Audio(text, received)) => {
                    self.audio_waiting -= 1;
                    self.unflushed_audio.push(received);
                    (self.wrap)(text)
                }
                Some(Waiting::Control(text)) => {
                    self.control_waiting -= 1;
                    (self.wrap)(text)
                }
                Some(Waiting::Frame(frame)) => {
                    self.control_waiting -= 1;
                    frame
                }
                None => break,
            };
            if let Err(e) = sink.as_mut().start_send(message) {
                return Poll::Ready(Err(LegFault::Socket(e.to_string())));
            }
            self.unflushed = true;
            progressed = true;
        }
        if self.unflushed {
            match sink.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    let flushed = Instant::now();
                    for received in self.unflushed_audio.drain(..) {
                        self.overhead
                            .observe(flushed.saturating_duration_since(received).as_secs_f64());
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(LegFault::Socket(e.to_string()))),
                Poll::Pending => {}
            }
        }
        if self.queue.is_empty() && !self.unflushed {
            self.blocked_since = None;
            return Poll::Ready(Ok(()));
        }
        // The stall clock runs while the socket takes nothing at all: a slow peer that still
        // takes some keeps the call (its audio beyond the queue is dropped and counted).
        let now = Instant::now();
        if progressed {
            self.blocked_since = Some(now);
        }
        let since = *self.blocked_since.get_or_insert(now);
        let blocked = now.saturating_duration_since(since);
        if blocked >= self.limits.stall {
            return Poll::Ready(Err(LegFault::Stalled(blocked)));
        }
        Poll::Pending
    }

    /// Writes what is still queued (for at most `limit`), sends `close` and closes the socket.
    pub async fn close(mut self, close: M, limit: Duration) {
        use futures_util::SinkExt;
        let _ = tokio::time::timeout(limit, async {
            if std::future::poll_fn(|cx| self.poll_write(cx)).await.is_ok() {
                let _ = self.sink.send(close).await;
            }
            let _ = self.sink.close().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    /// A sink that takes `room` messages and then pushes back until given more.
    #[derive(Clone, Default)]
    struct Gate {
        inner: Arc<Mutex<GateState>>,
    }

    #[derive(Default)]
    struct GateState {
        room: usize,
        written: Vec<String>,
        flushes: usize,
        waker: Option<std::task::Waker>,
    }

    impl Gate {
        fn open(&self, room: usize) {
            let mut s = self.inner.lock().unwrap();
            s.room += room;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        fn written(&self) -> Vec<String> {
            self.inner.lock().unwrap().written.clone()
        }
    }

    impl Sink<String> for Gate {
        type Error = std::io::Error;
        fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            let mut s = self.inner.lock().unwrap();
            if s.room > 0 {
                Poll::Ready(Ok(()))
            } else {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
        fn start_send(self: Pin<&mut Self>, item: String) -> Result<(), Self::Error> {
            let mut s = self.inner.lock().unwrap();
            s.room -= 1;
            s.written.push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.lock().unwrap().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    fn leg(gate: &Gate, audio: usize, control: usize) -> Leg<Gate, String> {
        Leg::new(
            gate.clone(),
            |t| t,
            LegLimits {
                audio,
                control,
                stall: Duration::from_secs(3600),
            },
            Histogram::new([0.001]),
        )
    }

    fn poll(leg: &mut Leg<Gate, String>) -> Poll<Result<(), LegFault>> {
        let waker = futures_util::task::noop_waker();
        leg.poll_write(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_socket_that_keeps_up_gets_every_message_at_once_and_nothing_waits() {
        let gate = Gate::default();
        gate.open(100);
        let mut leg = leg(&gate, 2, 2);
        for n in 0..10 {
            assert!(leg.audio(format!("a{n}"), Instant::now()));
            assert_eq!(poll(&mut leg), Poll::Ready(Ok(())));
        }
        assert_eq!(gate.written().len(), 10);
        assert_eq!(
            leg.peak_waiting(),
            1,
            "one message at a time, straight through"
        );
        assert_eq!(leg.stall_deadline(), None);
    }

    #[test]
    fn under_backpressure_audio_beyond_its_share_is_refused_and_control_keeps_its_room() {
        let gate = Gate::default();
        let mut leg = leg(&gate, 3, 2);
        let now = Instant::now();
        let accepted: Vec<bool> = (0..5).map(|n| leg.audio(format!("a{n}"), now)).collect();
        assert_eq!(accepted, [true, true, true, false, false]);
        leg.control("mark".into());
        leg.control("clear".into());
        assert!(poll(&mut leg).is_pending());
        assert!(leg.stall_deadline().is_some());
        assert_eq!(leg.waiting(), 5);
        gate.open(100);
        assert_eq!(poll(&mut leg), Poll::Ready(Ok(())));
        assert_eq!(gate.written(), ["a0", "a1", "a2", "mark", "clear"]);
        assert_eq!(leg.peak_waiting(), 5, "never more than audio + control");
        assert_eq!(leg.stall_deadline(), None, "it keeps up again");
    }

    #[test]
    fn a_control_message_with_no_room_left_faults_the_leg() {
        let gate = Gate::default();
        let mut leg = leg(&gate, 1, 1);
        leg.control("mark".into());
        assert!(poll(&mut leg).is_pending());
        leg.control("clear".into());
        assert_eq!(poll(&mut leg), Poll::Ready(Err(LegFault::NoRoom)));
    }

    #[test]
    fn a_socket_that_takes_nothing_past_the_limit_faults_the_leg() {
        let gate = Gate::default();
        let mut leg = Leg::new(
            gate.clone(),
            |t| t,
            LegLimits {
                audio: 4,
                control: 4,
                stall: Duration::from_millis(20),
            },
            Histogram::new([0.001]),
        );
        leg.audio("a".into(), Instant::now());
        assert!(poll(&mut leg).is_pending());
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(
            poll(&mut leg),
            Poll::Ready(Err(LegFault::Stalled(_)))
        ));
    }

    #[tokio::test]
    async fn a_waiting_leg_is_woken_when_its_socket_takes_more() {
        let gate = Gate::default();
        let mut leg = leg(&gate, 4, 4);
        leg.audio("a".into(), Instant::now());
        let opener = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            opener.open(1);
        });
        let done = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| leg.poll_write(cx)),
        )
        .await;
        assert_eq!(done, Ok(Ok(())));
        assert_eq!(gate.written(), ["a"]);
    }
}
