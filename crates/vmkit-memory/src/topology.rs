//! The memory topology: the live address spaces and transactions.
//!
//! Every region mutation calls [`changed`]. Outside a transaction that
//! re-renders every address space's flat view at once; inside one, the
//! re-render happens once, when the outermost transaction commits. Listeners
//! are told which ranges went away and which appeared.

use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use crate::address_space::AddressSpace;

struct TxState {
    depth: usize,
    pending: bool,
}

static TX: Mutex<TxState> = Mutex::new(TxState {
    depth: 0,
    pending: false,
});
static SPACES: LazyLock<Mutex<Vec<Weak<AddressSpace>>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Starts a transaction: region changes are batched until the matching [`commit`].
pub fn begin() {
    TX.lock().depth += 1;
}

/// Ends a transaction; the outermost one re-renders the flat views if anything changed.
pub fn commit() {
    let rerender = {
        let mut tx = TX.lock();
        tx.depth = tx.depth.saturating_sub(1);
        tx.depth == 0 && std::mem::take(&mut tx.pending)
    };
    if rerender {
        rerender_all();
    }
}

/// Runs `f` inside a transaction.
pub fn transaction<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            commit();
        }
    }
    begin();
    let _g = Guard;
    f()
}

pub(crate) fn changed() {
    let now = {
        let mut tx = TX.lock();
        if tx.depth > 0 {
            tx.pending = true;
            false
        } else {
            true
        }
    };
    if now {
        rerender_all();
    }
}

pub(crate) fn register(space: &Arc<AddressSpace>) {
    let mut spaces = SPACES.lock();
    spaces.retain(|w| w.strong_count() > 0);
    spaces.push(Arc::downgrade(space));
}

/// The live address spaces, in creation order.
pub fn address_spaces() -> Vec<Arc<AddressSpace>> {
    SPACES.lock().iter().filter_map(Weak::upgrade).collect()
}

fn rerender_all() {
    for space in address_spaces() {
        space.rerender();
    }
}
