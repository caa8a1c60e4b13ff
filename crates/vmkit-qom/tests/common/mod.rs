//! Helpers shared by the integration tests (each test file uses a subset).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vmkit_qom::{Error, Object, ObjectRef, TYPE_CONTAINER, root};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The error of a result that must have failed.
pub fn err_of<T>(r: vmkit_qom::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error, got a success"),
        Err(e) => e,
    }
}

/// A call counter for hooks.
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A hook that increments `c`.
pub fn bump(c: &Arc<AtomicUsize>) -> impl Fn(&Object) -> vmkit_qom::Result<()> + Send + Sync + use<> {
    let c = c.clone();
    move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The value of a counter.
pub fn get(c: &Arc<AtomicUsize>) -> usize {
    c.load(Ordering::SeqCst)
}

/// A container under the root, private to one test, removed when dropped.
pub struct Scratch(pub ObjectRef);

impl Scratch {
    pub fn new(name: &str) -> vmkit_qom::Result<Scratch> {
        let c = Object::new(TYPE_CONTAINER)?;
        root().add_child(name, &c)?;
        Ok(Scratch(c))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.unparent();
    }
}
