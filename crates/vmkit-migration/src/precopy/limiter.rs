//! [`BandwidthLimiter`]: paces a sender to a byte rate on a
//! [`Clock`](vmkit_memory::Clock).

use std::time::Duration;

/// Paces a sender to `max_bandwidth` bytes per second: each batch of `n`
/// bytes books `n / max_bandwidth` seconds of the link, starting when the
/// link is next free (or now, if it has been idle: idle time is not
/// banked), and the sender waits until the link is free again before the
/// next batch. Over any run the average rate is at most the limit, and on
/// a [`ManualClock`](vmkit_memory::ManualClock) the waits are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BandwidthLimiter {
    /// When the bytes booked so far have gone out at the limit.
    free_at: Duration,
}

impl BandwidthLimiter {
    /// A limiter whose link is free now.
    pub fn new() -> BandwidthLimiter {
        BandwidthLimiter::default()
    }

    /// Books `bytes` sent at `now` under `max_bandwidth` (bytes/s, 0 =
    /// unlimited, which books nothing).
    pub fn record(&mut self, now: Duration, bytes: u64, max_bandwidth: u64) {
        if max_bandwidth == 0 {
            self.free_at = now;
            return;
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(max_bandwidth);
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.free_at = self.free_at.max(now).saturating_add(cost);
    }

    /// When the sender may go on: `None` if now, else the time to wait for.
    pub fn hold_until(&self, now: Duration) -> Option<Duration> {
        (self.free_at > now).then_some(self.free_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_batch_books_its_share_of_a_second() {
        let mut l = BandwidthLimiter::new();
        l.record(Duration::ZERO, 1 << 20, 4 << 20);
        assert_eq!(l.hold_until(Duration::ZERO), Some(250 * MS));
        assert_eq!(l.hold_until(249 * MS), Some(250 * MS));
        assert_eq!(l.hold_until(250 * MS), None);
        // Sent on time: books from where the link became free.
        l.record(250 * MS, 1 << 20, 4 << 20);
        assert_eq!(l.hold_until(250 * MS), Some(500 * MS));
    }

    #[test]
    fn idle_time_is_not_banked_and_unlimited_never_holds() {
        let mut l = BandwidthLimiter::new();
        l.record(10 * MS * 100, 1000, 1000);
        assert_eq!(l.hold_until(MS * 1000), Some(MS * 2000));
        l.record(MS * 5000, 0, 1000);
        assert_eq!(l.hold_until(MS * 5000), None);
        l.record(MS * 5000, u64::MAX, 0);
        assert_eq!(l.hold_until(MS * 5000), None);
    }
}
