//! The memory re-entrancy guard (QEMU's `mem_reentrancy_guard`): which
//! devices this thread is inside now — a BAR access, or an operation with
//! effects — so that a device's DMA reaching one of its own BARs is
//! refused instead of recursing into the model (and deadlocking on its
//! lock).
//!
//! Kept per thread as a small fixed stack of device keys: guards drop in
//! the reverse order they were taken, and the stack has no destructor, so
//! entering and leaving cost a few loads and stores on every BAR access
//! (a growable list cost more than the rest of a register read).

use std::cell::Cell;
use std::marker::PhantomData;

/// How many devices one thread can be inside at once (a device's DMA
/// reaching another device's BAR, whose DMA reaches a third, …).
pub const MAX_NESTED: usize = 8;

/// This thread's devices: `keys[..depth]`, innermost last.
struct Entered {
    depth: Cell<usize>,
    keys: [Cell<usize>; MAX_NESTED],
}

thread_local! {
    // One thread-local (in a shared library each is a lookup call).
    static ENTERED: Entered = const {
        Entered {
            depth: Cell::new(0),
            keys: [const { Cell::new(0) }; MAX_NESTED],
        }
    };
}

/// Why a device cannot be entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This thread is inside the device already: its own DMA reached it.
    Reentered,
    /// This thread is inside [`MAX_NESTED`] devices already.
    TooDeep,
}

/// Marks a device as entered on this thread until dropped. Not `Send`:
/// it is dropped on the thread that took it.
#[derive(Debug)]
pub struct ReentryGuard {
    /// The depth before this device was entered.
    depth: usize,
    _same_thread: PhantomData<*const ()>,
}

impl ReentryGuard {
    /// Enters the device `key` (any value unique to it while it lives, not 0).
    pub fn enter(key: usize) -> Result<ReentryGuard, Refusal> {
        ENTERED.with(|e| {
            let depth = e.depth.get();
            if e.keys[..depth].iter().any(|k| k.get() == key) {
                return Err(Refusal::Reentered);
            }
            e.keys.get(depth).ok_or(Refusal::TooDeep)?.set(key);
            e.depth.set(depth + 1);
            Ok(ReentryGuard {
                depth,
                _same_thread: PhantomData,
            })
        })
    }
}

impl Drop for ReentryGuard {
    fn drop(&mut self) {
        ENTERED.with(|e| e.depth.set(self.depth));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_entered_once_per_thread() {
        let a = ReentryGuard::enter(0x10);
        assert!(a.is_ok());
        assert_eq!(ReentryGuard::enter(0x10).err(), Some(Refusal::Reentered));
        {
            let _b = ReentryGuard::enter(0x20);
            assert_eq!(ReentryGuard::enter(0x20).err(), Some(Refusal::Reentered));
            assert_eq!(ReentryGuard::enter(0x10).err(), Some(Refusal::Reentered));
        }
        assert!(ReentryGuard::enter(0x20).is_ok(), "left when its guard dropped");
        drop(a);
        assert!(ReentryGuard::enter(0x10).is_ok());
        // Another thread is not inside anything.
        let _c = ReentryGuard::enter(0x30);
        std::thread::scope(|s| {
            s.spawn(|| assert!(ReentryGuard::enter(0x30).is_ok()));
        });
    }

    #[test]
    fn nesting_is_bounded() {
        let guards: Vec<_> = (1..=MAX_NESTED).map(|k| ReentryGuard::enter(k * 8)).collect();
        assert!(guards.iter().all(Result::is_ok));
        assert_eq!(ReentryGuard::enter(0x1000).err(), Some(Refusal::TooDeep));
        drop(guards);
        assert!(ReentryGuard::enter(0x1000).is_ok(), "room again once they left");
    }
}
