//! Retry delays: exponential from a minimum to a maximum, with ±25 % jitter so members that
//! lost the same master do not all come back in the same millisecond.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The next delay; each call doubles the base up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let quarter = base / 4;
        let spread = quarter.as_nanos() as u64 * 2;
        let jitter = if spread == 0 { 0 } else { random() % spread };
        base - quarter + Duration::from_nanos(jitter)
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to the minimum (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A random number from the standard library's per-process hash keys (no RNG crate needed for
/// jitter and lease ids).
pub(crate) fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// Whether the `failures`-th failure in a row is logged as a warning: the first, then every
/// 20th (the others at debug level), so an unreachable registry is visible without flooding.
pub(crate) fn worth_a_warning(failures: u32) -> bool {
    failures == 1 || failures.is_multiple_of(20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_up_to_the_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let within = |d: Duration, base: u64| {
            d >= Duration::from_millis(base * 3 / 4) && d <= Duration::from_millis(base * 5 / 4)
        };
        assert!(within(b.next_delay(), 100));
        assert!(within(b.next_delay(), 200));
        assert!(within(b.next_delay(), 400));
        assert!(within(b.next_delay(), 400));
        b.reset();
        assert!(within(b.next_delay(), 100));
    }
}
