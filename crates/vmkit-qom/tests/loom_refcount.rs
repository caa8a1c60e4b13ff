//! Model check of the QOM reference count under every interleaving (`loom`).
//!
//! `ObjectRef`'s `unsafe` code is sound only if the count it is built on,
//! [`RefCount`], gives the last release alone the right to finalize, orders
//! every holder's work before that finalization, and never lets a count
//! that reached zero rise again. Here that code — the crate's own, compiled
//! against loom's atomics — runs under loom, which explores the thread
//! interleavings and memory orderings the C++/Rust memory model allows:
//!
//! * clone and drop racing: exactly one release finalizes, after every other
//!   holder's use of the object (a data race on the object's state otherwise);
//! * `try_ref` racing the last drop: it either fails, or wins before the count
//!   reached zero and the object is finalized after its reference goes; a
//!   `try_ref` after the count reached zero always fails (no resurrection);
//! * the same races on real objects (`ObjectRef`, `Object::try_ref`), with
//!   the finalize hook counting its calls.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p vmkit-qom --test
//! loom_refcount --release` (`make test` does, in its own target directory).
//! `LOOM_MAX_PREEMPTIONS` bounds the search (default here: 3).
#![cfg(loom)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, Once};

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use vmkit_qom::{ErrorKind, Object, Phase, RefCount, TypeInfo};

const LIVE: u32 = 1;
const FINALIZED: u32 = 2;

/// An object as far as the count is concerned: the count, the state its
/// holders read, and how many times it was finalized.
struct Counted {
    refs: RefCount,
    state: UnsafeCell<u32>,
    finalized: AtomicUsize,
}

impl Counted {
    fn new() -> Arc<Counted> {
        Arc::new(Counted {
            refs: RefCount::one(),
            state: UnsafeCell::new(LIVE),
            finalized: AtomicUsize::new(0),
        })
    }

    /// What a holder does with the object: read its state, which must be live.
    fn use_it(&self) {
        // SAFETY: a shared read; loom reports it if it is not ordered
        // before the finalizer's write.
        let state = self.state.with(|p| unsafe { *p });
        assert_eq!(state, LIVE, "a holder saw a finalized object");
    }

    /// Gives a reference back, finalizing on the last release as `ObjectRef` does.
    fn release(&self) {
        if self.refs.release() {
            // SAFETY: the last release has exclusive access; loom reports
            // any holder's access not ordered before this write.
            self.state.with_mut(|p| unsafe { *p = FINALIZED });
            self.finalized.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check_finalized_once(&self) {
        assert_eq!(self.finalized.load(Ordering::Relaxed), 1, "finalized other than once");
        assert_eq!(self.refs.get(), 0);
        assert_eq!(
            self.refs.try_acquire(),
            Err(0),
            "a reference taken after the count hit zero"
        );
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[test]
fn clone_and_drop_race_finalizes_once_after_every_use() {
    model(|| {
        let obj = Counted::new();
        obj.refs.acquire(); // the clone, taken by a holder
        let other = Arc::clone(&obj);
        let t = loom::thread::spawn(move || {
            other.use_it();
            other.release();
        });
        obj.use_it();
        obj.release();
        t.join().unwrap_or_else(|_| panic!("holder thread panicked"));
        obj.check_finalized_once();
    });
}

#[test]
fn try_ref_racing_the_last_drop_never_resurrects() {
    model(|| {
        let obj = Counted::new();
        let other = Arc::clone(&obj);
        let t = loom::thread::spawn(move || match other.refs.try_acquire() {
            Ok(()) => {
                other.use_it();
                other.release();
            }
            Err(seen) => assert_eq!(seen, 0, "refused for a count that is not zero"),
        });
        obj.release();
        t.join().unwrap_or_else(|_| panic!("try_ref thread panicked"));
        obj.check_finalized_once();
    });
}

#[test]
fn clone_drop_and_try_ref_all_racing() {
    model(|| {
        let obj = Counted::new();
        obj.refs.acquire(); // a clone, for the first thread
        let a = Arc::clone(&obj);
        let b = Arc::clone(&obj);
        let ta = loom::thread::spawn(move || {
            a.use_it();
            a.release();
        });
        let tb = loom::thread::spawn(move || {
            if b.refs.try_acquire().is_ok() {
                // Cloning a reference held is always allowed.
                b.refs.acquire();
                b.use_it();
                b.release();
                b.release();
            }
        });
        obj.release();
        ta.join().unwrap_or_else(|_| panic!("clone thread panicked"));
        tb.join().unwrap_or_else(|_| panic!("try_ref thread panicked"));
        obj.check_finalized_once();
    });
}

// ----- the same races on real objects ------------------------------------------

const TYPE: &str = "loom-refcount-obj";

/// Finalize calls per object id.
static FINALIZE_CALLS: LazyLock<Mutex<HashMap<u64, u32>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registered = TypeInfo::new(TYPE)
            .instance_finalize(|o| {
                // A finalizing object refuses new references, even to itself.
                let refused = o.try_ref().err().map(|e| e.kind());
                assert_eq!(refused, Some(ErrorKind::ObjectFinalized), "resurrected in finalize");
                let mut calls = FINALIZE_CALLS.lock().unwrap_or_else(|e| e.into_inner());
                *calls.entry(o.id()).or_insert(0) += 1;
                Ok(())
            })
            .register();
        if let Err(e) = registered {
            panic!("registering {TYPE}: {e}");
        }
    });
}

fn finalize_calls(obj: &Object) -> u32 {
    let calls = FINALIZE_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    calls.get(&obj.id()).copied().unwrap_or(0)
}

#[test]
fn object_refs_clone_drop_and_try_ref_race_the_last_drop() {
    register();
    model(|| {
        let obj = Object::new(TYPE).unwrap_or_else(|e| panic!("creating: {e}"));
        let handle = obj.handle();
        let clone = obj.clone();
        let t_clone = loom::thread::spawn(move || drop(clone));
        let racing = handle.clone();
        let t_try = loom::thread::spawn(move || match racing.try_ref() {
            Ok(r) => {
                assert_eq!(r.phase(), Phase::Live, "a reference to a finalizing object");
                drop(r);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized),
        });
        drop(obj);
        t_clone.join().unwrap_or_else(|_| panic!("clone thread panicked"));
        t_try.join().unwrap_or_else(|_| panic!("try_ref thread panicked"));
        assert_eq!(handle.phase(), Phase::Finalized);
        assert_eq!(finalize_calls(&handle), 1, "finalized other than once");
        assert_eq!(handle.refcount(), 0);
        let after = handle.try_ref().err().map(|e| e.kind());
        assert_eq!(after, Some(ErrorKind::ObjectFinalized), "try_ref after the last drop");
    });
}
