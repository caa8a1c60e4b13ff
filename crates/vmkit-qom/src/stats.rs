//! Process-wide counters of live objects and storages, so tests can prove that
//! nothing leaks and nothing is released early.

use std::sync::atomic::{AtomicU64, Ordering};

static OBJECTS_CREATED: AtomicU64 = AtomicU64::new(0);
static OBJECTS_FINALIZED: AtomicU64 = AtomicU64::new(0);
static STORAGES_CREATED: AtomicU64 = AtomicU64::new(0);
static STORAGES_RELEASED: AtomicU64 = AtomicU64::new(0);
static RESURRECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the object-model counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Objects created and not yet finalized.
    pub live_objects: u64,
    /// Storages allocated and not yet released.
    pub live_storages: u64,
    /// Objects ever created.
    pub objects_created: u64,
    /// Objects ever finalized.
    pub objects_finalized: u64,
    /// Storages ever released.
    pub storages_released: u64,
    /// References refused because their object was finalizing or finalized.
    pub resurrections_refused: u64,
}

/// Reads the counters. Each is read atomically; the snapshot as a whole is
/// consistent only when no other thread is creating or finalizing objects.
pub fn stats() -> Stats {
    let finalized = OBJECTS_FINALIZED.load(Ordering::Acquire);
    let created = OBJECTS_CREATED.load(Ordering::Acquire);
    let released = STORAGES_RELEASED.load(Ordering::Acquire);
    let allocated = STORAGES_CREATED.load(Ordering::Acquire);
    Stats {
        live_objects: created.saturating_sub(finalized),
        live_storages: allocated.saturating_sub(released),
        objects_created: created,
        objects_finalized: finalized,
        storages_released: released,
        resurrections_refused: RESURRECTIONS_REFUSED.load(Ordering::Acquire),
    }
}

pub(crate) fn object_created() {
    OBJECTS_CREATED.fetch_add(1, Ordering::AcqRel);
}
pub(crate) fn object_finalized() {
    OBJECTS_FINALIZED.fetch_add(1, Ordering::AcqRel);
}
pub(crate) fn storage_created() {
    STORAGES_CREATED.fetch_add(1, Ordering::AcqRel);
}
pub(crate) fn storage_released() {
    STORAGES_RELEASED.fetch_add(1, Ordering::AcqRel);
}
pub(crate) fn resurrection_refused() {
    RESURRECTIONS_REFUSED.fetch_add(1, Ordering::AcqRel);
}
