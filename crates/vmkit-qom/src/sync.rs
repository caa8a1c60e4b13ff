//! The atomics the reference count is built on: `std`'s, or `loom`'s when
//! the crate is compiled with `--cfg loom` so that `tests/loom_refcount.rs`
//! can model-check [`RefCount`](crate::RefCount) under every interleaving.

#[cfg(loom)]
pub(crate) use loom::sync::atomic;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic;
