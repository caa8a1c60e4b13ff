//! [`RefCount`]: an object's QOM reference count.
//!
//! Kept apart from [`ObjectRef`](crate::ObjectRef), whose `unsafe` code
//! relies on exactly three properties of it, so that they can be
//! model-checked with `loom` (`tests/loom_refcount.rs`, run with
//! `--cfg loom`) on this very code:
//!
//! * [`release`](RefCount::release) returns `true` once, to the release that
//!   takes the count from one to zero, and everything done by the holders of
//!   the other references happens before that release returns;
//! * [`try_acquire`](RefCount::try_acquire) refuses a count of zero, so a
//!   count that reached zero stays there (no resurrection);
//! * [`acquire`](RefCount::acquire) is only called by the holder of a
//!   reference, so it never starts from zero.

use crate::sync::atomic::{AtomicU32, Ordering, fence};

/// Counts at or above this are refused by [`RefCount::try_acquire`] and
/// abort in [`RefCount::acquire`]: like `Arc`, an impossible count stops the
/// process rather than wrap around to zero.
pub const MAX_REFS: u32 = u32::MAX / 2;

/// An atomic reference count that starts at one and, once it reaches zero,
/// can never be raised again.
#[derive(Debug)]
pub struct RefCount(AtomicU32);

impl RefCount {
    /// A count of one: the reference of whoever created the object.
    pub fn one() -> RefCount {
        RefCount(AtomicU32::new(1))
    }

    /// The current count (a snapshot: other threads may change it at once).
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one more reference, for a caller that holds one (a clone).
    ///
    /// Relaxed is enough: the caller's own reference keeps the count above
    /// zero, so no finalization can be ordered against this increment.
    #[inline]
    pub fn acquire(&self) {
        let prev = self.0.fetch_add(1, Ordering::Relaxed);
        if prev >= MAX_REFS {
            std::process::abort();
        }
    }

    /// Counts one more reference for a caller that may hold none (QOM's
    /// `object_ref` on a handle). Refused, with the count seen, when the
    /// count is zero (the object is finalizing or finalized) or at
    /// [`MAX_REFS`]: the check and the increment are one atomic step.
    #[inline]
    pub fn try_acquire(&self) -> Result<(), u32> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur == 0 || cur >= MAX_REFS {
                return Err(cur);
            }
            match self
                .0
                .compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    /// Gives one reference back. `true` for the release that took the count
    /// to zero: its caller finalizes, and sees everything the other holders
    /// did before their releases (release decrement, acquire fence).
    #[inline]
    #[must_use = "the last release must finalize"]
    pub fn release(&self) -> bool {
        if self.0.fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        fence(Ordering::Acquire);
        true
    }
}
