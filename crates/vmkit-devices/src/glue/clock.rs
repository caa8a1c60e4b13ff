//! The machine's virtual clock as the device models read it (QEMU's
//! `QEMU_CLOCK_VIRTUAL`): nanoseconds that move only when the machine
//! moves them, so that what a device derives from time (xHCI's MFINDEX,
//! its wrap timer) is the same on every run and in tests.

use std::sync::atomic::{AtomicI64, Ordering};

static NOW_NS: AtomicI64 = AtomicI64::new(0);

/// The virtual time, in nanoseconds.
pub fn now_ns() -> i64 {
    NOW_NS.load(Ordering::Acquire)
}

/// Moves the virtual time forward by `ns` (saturating); returns the new
/// time. Devices' due timers run afterwards (see
/// [`crate::glue::usb::run_timers`]).
pub fn advance_ns(ns: u64) -> i64 {
    let step = i64::try_from(ns).unwrap_or(i64::MAX);
    let mut now = now_ns();
    loop {
        let next = now.saturating_add(step);
        match NOW_NS.compare_exchange(now, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return next,
            Err(seen) => now = seen,
        }
    }
}
