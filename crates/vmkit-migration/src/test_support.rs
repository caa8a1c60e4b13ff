//! Support for this crate's tests, fuzz targets and benches; not API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::device_state::{DeviceState, StateError};
use crate::vmstate::{VmStateDescription, VmStruct};

/// A device whose state is a bare value tree behind a lock, counting the
/// loads it took.
pub struct ValueDevice {
    vmsd: Arc<VmStateDescription>,
    state: Mutex<VmStruct>,
    loads: AtomicU64,
}

impl ValueDevice {
    /// A device holding `state`, described by `vmsd`.
    pub fn new(vmsd: Arc<VmStateDescription>, state: VmStruct) -> Arc<ValueDevice> {
        Arc::new(ValueDevice {
            vmsd,
            state: Mutex::new(state),
            loads: AtomicU64::new(0),
        })
    }

    /// The current state.
    pub fn get(&self) -> VmStruct {
        self.state.lock().clone()
    }

    /// Replaces the state.
    pub fn set(&self, state: VmStruct) {
        *self.state.lock() = state;
    }

    /// How many times a restore installed a state.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

impl DeviceState for ValueDevice {
    type State = VmStruct;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<VmStruct, StateError> {
        Ok(self.get())
    }

    fn load_state(&self, state: VmStruct, _version_id: u32) -> Result<(), StateError> {
        self.set(state);
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
