//! Storage: the allocation that holds an object and the children embedded in it.
//!
//! A storage is released only when every object living in it has been
//! finalized and no [`StorageGuard`] pins it. Its count is exactly "members not
//! yet finalized + guards": a reference to an embedded child therefore keeps
//! its container's storage (and so the child's own state) alive after the
//! container itself has been finalized, which is the qemu-xhci BAR case.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::object::ObjectInner;
use crate::stats;

static NEXT_STORAGE_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Storage {
    pub(crate) id: u64,
    count: AtomicU32,
    /// Objects whose state lives here; held strongly until release, which is
    /// what makes the storage (not the object handles) decide when state is freed.
    members: Mutex<Vec<Arc<ObjectInner>>>,
    released: AtomicBool,
}

impl Storage {
    /// A new storage with one (not yet added) member counted.
    pub(crate) fn new() -> Arc<Storage> {
        stats::storage_created();
        Arc::new(Storage {
            id: NEXT_STORAGE_ID.fetch_add(1, Ordering::Relaxed),
            count: AtomicU32::new(1),
            members: Mutex::new(Vec::with_capacity(1)),
            released: AtomicBool::new(false),
        })
    }

    pub(crate) fn add_member(&self, member: Arc<ObjectInner>) {
        self.members.lock().push(member);
    }

    /// Counts one more user. Only called by a live member (embedding a child,
    /// pinning), whose own count keeps the total above zero, so the storage
    /// cannot be mid-release; the check makes a violation an error, not a revival.
    pub(crate) fn acquire(&self) -> Result<()> {
        let mut cur = self.count.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(Error::Lifecycle {
                    object: format!("storage #{}", self.id),
                    reason: "storage is already released".into(),
                });
            }
            match self
                .count
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    /// Drops one user; the last one releases every member's state.
    pub(crate) fn release(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.released.store(true, Ordering::Release);
        let members = std::mem::take(&mut *self.members.lock());
        for m in &members {
            m.release_state();
        }
        drop(members);
        stats::storage_released();
    }

    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

/// Keeps an object's storage allocated (for example while a deferred
/// reclamation still reads it), without keeping the object itself alive.
#[must_use = "the storage is released as soon as the guard is dropped"]
pub struct StorageGuard {
    pub(crate) storage: Arc<Storage>,
}

impl StorageGuard {
    /// An identifier of the storage, equal for a container and its embedded children.
    pub fn storage_id(&self) -> u64 {
        self.storage.id
    }
}

impl Drop for StorageGuard {
    fn drop(&mut self) {
        self.storage.release();
    }
}
