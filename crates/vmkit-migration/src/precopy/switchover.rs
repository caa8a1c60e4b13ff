//! When to switch over, and the downtime to expect: QEMU's rule.
//!
//! QEMU measures the bandwidth the stream achieved, and switches over
//! once nothing is pending or the bytes still dirty are below what that
//! bandwidth sends within `downtime-limit` (the threshold, bandwidth ×
//! downtime-limit: strictly below, as QEMU compares); the expected
//! downtime it reports is remaining ÷ bandwidth.

use std::time::Duration;

/// Why a run switched over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchoverReason {
    /// The remaining dirty bytes are below what the measured bandwidth
    /// sends within the downtime limit (or nothing remains).
    Converged,
    /// `max_passes` passes were made without converging.
    MaxPasses,
}

/// Bytes per second of `bytes` sent in `elapsed`; `None` when no time was
/// measured (nothing can be said of the rate then).
pub fn bandwidth(bytes: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| bytes as f64 / secs)
}

/// The most bytes that can be sent within `downtime_limit` at `bandwidth`
/// bytes per second.
pub fn threshold_bytes(bandwidth: f64, downtime_limit: Duration) -> u64 {
    // `as` saturates: an unbounded bandwidth gives u64::MAX.
    (bandwidth * downtime_limit.as_secs_f64()) as u64
}

/// How long sending `remaining` bytes takes at `bandwidth` (`None` when
/// the bandwidth is unknown or zero and something remains).
pub fn expected_downtime(remaining: u64, bandwidth: Option<f64>) -> Option<Duration> {
    if remaining == 0 {
        return Some(Duration::ZERO);
    }
    let bw = bandwidth.filter(|b| *b > 0.0)?;
    Duration::try_from_secs_f64(remaining as f64 / bw).ok()
}

/// The switchover decision after `passes` passes, with `remaining` dirty
/// bytes and the last pass's measured `bandwidth`: converged when
/// nothing remains or the remainder is below the threshold for
/// `downtime_limit` (an unknown bandwidth admits nothing but an empty
/// remainder), else forced once `passes` reaches `max_passes`, else
/// `None` (another pass).
pub fn decide(
    remaining: u64,
    bandwidth: Option<f64>,
    downtime_limit: Duration,
    passes: u32,
    max_passes: u32,
) -> Option<SwitchoverReason> {
    let fits = remaining == 0 || bandwidth.is_some_and(|bw| remaining < threshold_bytes(bw, downtime_limit));
    if fits {
        Some(SwitchoverReason::Converged)
    } else if passes >= max_passes {
        Some(SwitchoverReason::MaxPasses)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_remainder_must_be_below_bandwidth_times_the_limit() {
        // 100 MB/s × 300 ms = 30 MB.
        let bw = Some(100e6);
        let converged = Some(SwitchoverReason::Converged);
        assert_eq!(decide(29_999_999, bw, 300 * MS, 1, 10), converged);
        assert_eq!(decide(30_000_000, bw, 300 * MS, 1, 10), None);
        assert_eq!(
            decide(30_000_000, bw, 300 * MS, 10, 10),
            Some(SwitchoverReason::MaxPasses)
        );
        // A higher limit lets the same remainder through.
        assert_eq!(decide(30_000_000, bw, 301 * MS, 1, 10), converged);
        // Nothing pending converges even with a zero limit.
        assert_eq!(decide(0, bw, Duration::ZERO, 1, 10), converged);
    }

    #[test]
    fn an_unknown_bandwidth_converges_only_on_nothing() {
        assert_eq!(decide(0, None, 300 * MS, 1, 10), Some(SwitchoverReason::Converged));
        assert_eq!(decide(4096, None, 300 * MS, 1, 10), None);
        assert_eq!(bandwidth(1, Duration::ZERO), None);
        assert_eq!(bandwidth(1000, 500 * MS), Some(2000.0));
    }

    #[test]
    fn expected_downtime_is_remaining_over_bandwidth() {
        assert_eq!(expected_downtime(50_000_000, Some(100e6)), Some(500 * MS));
        assert_eq!(expected_downtime(0, None), Some(Duration::ZERO));
        assert_eq!(expected_downtime(1, None), None);
        assert_eq!(expected_downtime(1, Some(0.0)), None);
        assert_eq!(threshold_bytes(f64::INFINITY, MS), u64::MAX);
    }
}
