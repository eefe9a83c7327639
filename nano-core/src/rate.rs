//! Per-session message rate limits: a token bucket per session, checked before a message is
//! decoded.
//!
//! The bucket is kept as one atomic word (the generic cell rate algorithm, GCRA, which admits
//! exactly what a token bucket of the same rate and burst admits): the *theoretical arrival
//! time* of the next message. A message at `now` is admitted when the bucket, refilled up to
//! `now`, holds a token; admitting it moves the arrival time one interval (`1 / rate`) later.
//! Time comes from tokio's clock, so tests can pause and advance it.
//!
//! Limits are off unless the application sets one (see
//! [`EngineBuilder::rate_limit`](crate::EngineBuilder::rate_limit)); with no limit set, dispatch
//! does not look at the clock at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What happens to a message over a session's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverLimit {
    /// The message is refused: a request is answered with `NANO-429` (too many requests), a
    /// notify is dropped (traced, at most one log line per second per session). The session
    /// stays connected.
    #[default]
    Reject,
    /// The session is kicked with the reason `"rate limit"` (a request over the limit is first
    /// answered with `NANO-429`, so it still gets exactly one answer).
    Kick,
}

/// A per-session message rate limit: `per_second` messages per second on average, with bursts
/// of up to `burst` messages at once. Requests and notifies count alike.
///
/// # Examples
///
/// ```
/// use nano_core::{EngineBuilder, Json, OverLimit, RateLimit};
///
/// // 100 messages a second, bursts of 200; a session above that is kicked.
/// let limit = RateLimit::new(100.0, 200).on_exceed(OverLimit::Kick);
/// assert_eq!(limit.burst(), 200);
/// let engine = EngineBuilder::<Json>::new().rate_limit(limit).build().unwrap();
/// # drop(engine);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
    on_exceed: OverLimit,
    /// Nanoseconds between two tokens.
    interval: u64,
    /// Nanoseconds of credit a full bucket holds (`interval * burst`).
    window: u64,
}

impl RateLimit {
    /// A limit of `per_second` messages a second on average, in bursts of at most `burst`
    /// (over the limit: [`OverLimit::Reject`]).
    ///
    /// `per_second` is clamped to 0.001 ..= 1,000,000,000 (a value that is not a number
    /// counts as the smallest), `burst` to at least 1.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let per_second = if per_second.is_nan() {
            1e-3
        } else {
            per_second.clamp(1e-3, 1e9)
        };
        let burst = burst.max(1);
        // At most 1e12 ns (0.001/s) and at least 1 ns: the cast cannot overflow.
        let interval = ((1e9 / per_second).round() as u64).max(1);
        RateLimit {
            per_second,
            burst,
            on_exceed: OverLimit::Reject,
            interval,
            window: interval.saturating_mul(u64::from(burst)),
        }
    }

    /// What to do with a message over the limit (default [`OverLimit::Reject`]).
    #[must_use]
    pub fn on_exceed(mut self, what: OverLimit) -> Self {
        self.on_exceed = what;
        self
    }

    /// The average rate, in messages per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The largest burst admitted at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// What happens over the limit.
    pub fn exceeded(&self) -> OverLimit {
        self.on_exceed
    }
}

/// How often a session over its limit is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// One session's bucket, created on its first message.
pub(crate) struct Bucket {
    /// Time zero of the nanosecond counters below.
    epoch: Instant,
    /// When the bucket will be full again, in ns since `epoch` (GCRA's theoretical arrival
    /// time); a message is admitted while this is at most one window ahead of now.
    tat: AtomicU64,
    /// Messages refused since the last log line.
    refused: AtomicU64,
    /// No log line before this (ns since `epoch`).
    next_log: AtomicU64,
}

impl Bucket {
    /// A full bucket.
    pub fn new() -> Self {
        Bucket {
            epoch: Instant::now(),
            tat: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            next_log: AtomicU64::new(0),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one token at tokio's current time; false when the bucket is empty.
    pub fn try_take(&self, limit: &RateLimit) -> bool {
        self.try_take_at(limit, Instant::now())
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn try_take_at(&self, limit: &RateLimit, now: Instant) -> bool {
        let now = self.nanos(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(limit.interval);
            if next - now > limit.window {
                return false;
            }
            // One session's messages come from one reader, so this rarely loops.
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }

    /// Counts a refused message; returns how many were refused since the last log line when
    /// it is time for another one (at most one a second).
    pub fn refused(&self) -> Option<u64> {
        self.refused_at(Instant::now())
    }

    fn refused_at(&self, now: Instant) -> Option<u64> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = self.nanos(now);
        let next = self.next_log.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        let after = now.saturating_add(LOG_EVERY.as_nanos() as u64);
        self.next_log
            .compare_exchange(next, after, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.refused.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn take_all(bucket: &Bucket, limit: &RateLimit) -> u32 {
        let mut n = 0;
        while bucket.try_take(limit) {
            n += 1;
            assert!(n <= 1_000_000, "the bucket never empties");
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_admits_exactly_the_burst() {
        let limit = RateLimit::new(10.0, 5);
        let bucket = Bucket::new();
        assert_eq!(take_all(&bucket, &limit), 5);
        assert!(!bucket.try_take(&limit), "still empty at the same instant");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_come_back_at_the_rate() {
        let limit = RateLimit::new(10.0, 5); // one token every 100 ms
        let bucket = Bucket::new();
        assert_eq!(take_all(&bucket, &limit), 5);
        advance(Duration::from_millis(99)).await;
        assert!(!bucket.try_take(&limit), "no token before one interval");
        advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(&limit), "one token after one interval");
        assert!(!bucket.try_take(&limit));
        advance(Duration::from_millis(300)).await;
        assert_eq!(take_all(&bucket, &limit), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_only_up_to_the_burst() {
        let limit = RateLimit::new(10.0, 5);
        let bucket = Bucket::new();
        assert_eq!(take_all(&bucket, &limit), 5);
        advance(Duration::from_secs(60)).await;
        assert_eq!(take_all(&bucket, &limit), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_sender_at_the_rate_is_never_refused() {
        let limit = RateLimit::new(100.0, 1); // every 10 ms, no burst credit
        let bucket = Bucket::new();
        for i in 0..1000 {
            assert!(bucket.try_take(&limit), "message {i} refused");
            advance(Duration::from_millis(10)).await;
        }
        // Twice the rate: every other message is refused.
        let mut admitted = 0;
        for _ in 0..1000 {
            if bucket.try_take(&limit) {
                admitted += 1;
            }
            advance(Duration::from_millis(5)).await;
        }
        assert_eq!(admitted, 500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fractional_rate() {
        let limit = RateLimit::new(0.5, 1); // one every 2 s
        let bucket = Bucket::new();
        assert!(bucket.try_take(&limit));
        advance(Duration::from_millis(1999)).await;
        assert!(!bucket.try_take(&limit));
        advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(&limit));
    }

    #[test]
    fn settings_are_clamped() {
        let l = RateLimit::new(f64::NAN, 0);
        assert_eq!(l.burst(), 1);
        assert_eq!(l.per_second(), 1e-3);
        assert_eq!(RateLimit::new(-5.0, 3).per_second(), 1e-3);
        let fast = RateLimit::new(f64::INFINITY, u32::MAX);
        assert_eq!(fast.per_second(), 1e9);
        assert_eq!(fast.interval, 1);
        assert_eq!(RateLimit::new(1.0, 1).exceeded(), OverLimit::Reject);
        assert_eq!(
            RateLimit::new(1.0, 1).on_exceed(OverLimit::Kick).exceeded(),
            OverLimit::Kick
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_at_most_once_a_second_with_the_count() {
        let bucket = Bucket::new();
        assert_eq!(bucket.refused(), Some(1), "the first refusal is logged");
        for _ in 0..9 {
            assert_eq!(bucket.refused(), None);
        }
        advance(Duration::from_millis(999)).await;
        assert_eq!(bucket.refused(), None);
        advance(Duration::from_millis(1)).await;
        assert_eq!(bucket.refused(), Some(11), "the count since the last line");
        assert_eq!(bucket.refused(), None);
    }
}
