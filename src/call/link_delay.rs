//! The Twilio link's delay, measured with WebSocket pings, for the playback clock.
//!
//! A mark echo reaches the proxy one link delay after Twilio played the audio before it, and a
//! `clear` reaches Twilio one link delay after it is sent; audio sent into an idle buffer starts
//! playing one link delay later too. On loopback the delay is nothing; across a real network
//! (150 ms round trip is common) a barge-in truncated by the mark clock alone would cut the
//! model's turn a whole round trip short of what the caller heard. So the call pings the Twilio
//! socket (a WebSocket ping, which RFC 6455 §5.5.2 obliges the peer to answer with a pong
//! carrying the same payload) at its start and then about once a second, and the playback clock
//! ([`crate::call::playback::Playback::set_link_delay`]) uses half the round trip as the
//! one-way delay.
//!
//! The estimate is the *smallest* of the last [`WINDOW`] round trips: queueing, jitter and a
//! stalled segment only ever add delay, and they are transient; the path's own delay is the
//! floor under them. A peer that never answers pings leaves the estimate at zero (the mark clock
//! alone, as on loopback).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Round trips kept for the estimate.
pub const WINDOW: usize = 8;
/// Longest round trip believed, ms: beyond it a pong is a stall's, not the path's.
pub const MAX_RTT_MS: u64 = 2000;

/// Pings of one Twilio socket and what their pongs said.
#[derive(Debug, Default)]
pub struct LinkDelay {
    /// The ping awaiting its pong: its payload (a sequence number) and when it went out.
    outstanding: Option<(u64, Instant)>,
    next_seq: u64,
    samples: VecDeque<Duration>,
}

impl LinkDelay {
    /// The payload of a ping to send at `now`, or `None` while one is still unanswered (a pong
    /// lost with its connection is replaced after [`MAX_RTT_MS`]).
    pub fn ping(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some((_, sent)) = self.outstanding
            && now.saturating_duration_since(sent) < Duration::from_millis(MAX_RTT_MS)
        {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outstanding = Some((seq, now));
        Some(seq.to_be_bytes().to_vec())
    }

    /// A pong with `payload` arrived at `now`. Returns true when it answered the outstanding
    /// ping and its round trip was kept.
    pub fn on_pong(&mut self, payload: &[u8], now: Instant) -> bool {
        let Some((seq, sent)) = self.outstanding else {
            return false;
        };
        if payload != seq.to_be_bytes() {
            return false;
        }
        self.outstanding = None;
        let rtt = now.saturating_duration_since(sent);
        if rtt > Duration::from_millis(MAX_RTT_MS) {
            return false;
        }
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
        true
    }

    /// The one-way delay: half the smallest recent round trip (zero before any pong).
    pub fn one_way(&self) -> Duration {
        self.samples.iter().min().copied().unwrap_or_default() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_delay_is_half_the_smallest_recent_round_trip() {
        let t0 = Instant::now();
        let mut link = LinkDelay::default();
        assert_eq!(link.one_way(), Duration::ZERO, "nothing measured yet");
        let mut at = t0;
        for rtt in [160, 150, 450, 155] {
            let payload = link.ping(at).expect("a ping");
            assert_eq!(link.ping(at), None, "one at a time");
            assert!(link.on_pong(&payload, at + ms(rtt)));
            at += ms(1000);
        }
        // The 450 ms stall does not count; the floor does.
        assert_eq!(link.one_way(), ms(75));
    }

    #[test]
    fn stray_and_late_pongs_are_not_counted() {
        let t0 = Instant::now();
        let mut link = LinkDelay::default();
        let payload = link.ping(t0).expect("a ping");
        assert!(!link.on_pong(b"other", t0 + ms(10)));
        assert!(!link.on_pong(&payload, t0 + ms(MAX_RTT_MS + 1)));
        assert_eq!(link.one_way(), Duration::ZERO);
        // A ping never answered is replaced after the limit.
        let first = link.ping(t0 + ms(3000)).expect("a ping");
        assert_eq!(link.ping(t0 + ms(3100)), None);
        let second = link.ping(t0 + ms(3000 + MAX_RTT_MS)).expect("replaced");
        assert_ne!(first, second);
        assert!(
            !link.on_pong(&first, t0 + ms(5100)),
            "the old one no longer counts"
        );
    }

    #[test]
    fn only_the_last_window_counts() {
        let t0 = Instant::now();
        let mut link = LinkDelay::default();
        let mut at = t0;
        for rtt in std::iter::once(20).chain(std::iter::repeat_n(100, WINDOW)) {
            let payload = link.ping(at).expect("a ping");
            link.on_pong(&payload, at + ms(rtt));
            at += ms(1000);
        }
        assert_eq!(
            link.one_way(),
            ms(50),
            "the 20 ms sample has left the window"
        );
    }
}
