//! Time for the work that paces itself: the workload's rate limit and
//! throttle, and the dirty-rate window.
//!
//! [`SystemClock`] is the monotonic clock. [`ManualClock`] moves only when
//! told to, so a test can say exactly how much time passes and see who is
//! waiting for it, instead of sleeping and measuring.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Longest real-time wait between two looks at `keep_waiting`, so a
/// sleeper sees pause and stop promptly without being woken.
const NAP: Duration = Duration::from_millis(20);

/// A source of time that threads can wait on.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since the clock's origin; never goes back.
    fn now(&self) -> Duration;

    /// Returns once [`now`](Self::now) has reached `deadline`, or as soon as
    /// `keep_waiting` says false (it is asked at least every 20 ms of real
    /// time, and after every [`wake`](Self::wake)).
    fn sleep_until(&self, deadline: Duration, keep_waiting: &dyn Fn() -> bool);

    /// Makes sleepers look at their `keep_waiting` now (after a pause or a
    /// stop), where the clock can; others see it within one nap.
    fn wake(&self) {}
}

/// The host's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }

    /// The clock as a shared trait object.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep_until(&self, deadline: Duration, keep_waiting: &dyn Fn() -> bool) {
        loop {
            if !keep_waiting() {
                return;
            }
            let now = self.now();
            if now >= deadline {
                return;
            }
            std::thread::sleep((deadline - now).min(NAP));
        }
    }
}

#[derive(Debug, Default)]
struct ManualState {
    now: Duration,
    next_id: u64,
    /// The deadline of every thread in `sleep_until`.
    sleepers: BTreeMap<u64, Duration>,
}

impl ManualState {
    fn blocked(&self) -> impl Iterator<Item = Duration> + '_ {
        let now = self.now;
        self.sleepers.values().copied().filter(move |&d| d > now)
    }
}

/// A clock that stands still until [`advance`](Self::advance)d: for tests.
///
/// It also tells who waits for it: [`blocked`](Self::blocked) counts the
/// sleepers whose deadline is still ahead, and
/// [`wait_for_blocked`](Self::wait_for_blocked) waits until that many
/// threads have gone to sleep, which is how a test knows that every worker
/// has done what the last advance allowed.
#[derive(Debug, Default)]
pub struct ManualClock {
    state: Mutex<ManualState>,
    cv: Condvar,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    /// Moves the clock forward by `by` and wakes the sleepers it releases.
    pub fn advance(&self, by: Duration) {
        let mut g = self.state.lock();
        g.now = g.now.saturating_add(by);
        self.cv.notify_all();
    }

    /// Sleepers whose deadline is ahead of the clock.
    pub fn blocked(&self) -> usize {
        self.state.lock().blocked().count()
    }

    /// The deadlines of the sleepers still waiting, earliest first.
    pub fn deadlines(&self) -> Vec<Duration> {
        let mut d: Vec<Duration> = self.state.lock().blocked().collect();
        d.sort_unstable();
        d
    }

    /// Waits (up to `timeout` of real time, as a guard against a hang)
    /// until at least `n` sleepers wait for a deadline ahead of the clock;
    /// returns whether they do.
    pub fn wait_for_blocked(&self, n: usize, timeout: Duration) -> bool {
        let give_up = Instant::now() + timeout;
        let mut g = self.state.lock();
        while g.blocked().count() < n {
            if self.cv.wait_until(&mut g, give_up).timed_out() {
                return g.blocked().count() >= n;
            }
        }
        true
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.state.lock().now
    }

    fn sleep_until(&self, deadline: Duration, keep_waiting: &dyn Fn() -> bool) {
        let mut g = self.state.lock();
        let id = g.next_id;
        g.next_id += 1;
        g.sleepers.insert(id, deadline);
        self.cv.notify_all();
        while g.now < deadline && keep_waiting() {
            self.cv.wait_for(&mut g, NAP);
        }
        g.sleepers.remove(&id);
        self.cv.notify_all();
    }

    fn wake(&self) {
        let _g = self.state.lock();
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_releases_sleepers_when_advanced() {
        let clock = ManualClock::new();
        let c = clock.clone();
        let t = std::thread::spawn(move || {
            c.sleep_until(Duration::from_millis(30), &|| true);
            c.now()
        });
        assert!(clock.wait_for_blocked(1, Duration::from_secs(30)));
        assert_eq!(clock.deadlines(), vec![Duration::from_millis(30)]);
        clock.advance(Duration::from_millis(29));
        assert_eq!(clock.blocked(), 1, "one millisecond short");
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.blocked(), 0, "a sleeper whose deadline passed is not blocked");
        assert_eq!(t.join().ok(), Some(Duration::from_millis(30)));
        assert!(clock.deadlines().is_empty());
    }

    #[test]
    fn keep_waiting_ends_a_sleep() {
        let clock = ManualClock::new();
        // Already false: returns at once, whatever the deadline.
        clock.sleep_until(Duration::from_secs(3600), &|| false);
        assert_eq!(clock.now(), Duration::ZERO);
        let system = SystemClock::new();
        system.sleep_until(Duration::from_secs(3600), &|| false);
        let before = system.now();
        system.sleep_until(Duration::ZERO, &|| true); // deadline passed: returns
        assert!(system.now() >= before);
    }
}
