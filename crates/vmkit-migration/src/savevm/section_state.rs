//! What a machine's state consists of for the stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use vmkit_memory::RamBlock;

use super::SavevmError;
use crate::vmstate::{VmStateDescription, VmStruct};

/// One device's state as a VMState body: what goes into its FULL section.
///
/// `save_state` gives the current values (the description's `pre_save`
/// hook then runs on them); `load_state` receives a fully decoded and
/// checked body (after `post_load`) and installs it. A device is never
/// handed a partial body.
pub trait SectionState: Send + Sync {
    /// The description its body follows.
    fn vmsd(&self) -> Arc<VmStateDescription>;
    /// The current state.
    fn save_state(&self) -> Result<VmStruct, String>;
    /// Installs a state decoded from a stream written at `version_id`.
    fn load_state(&self, state: VmStruct, version_id: u32) -> Result<(), String>;
}

/// The simplest [`SectionState`]: a state value behind a lock. For device
/// models whose state *is* a [`VmStruct`], tools, and tests.
///
/// ```
/// use std::sync::Arc;
/// use vmkit_migration::savevm::{DeviceSection, StateCell};
/// use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};
///
/// let vmsd = VmStateDescription::builder("counter").simple("count", FieldKind::U64).build()?;
/// let cell = StateCell::new(vmsd, VmStruct::new().with("count", VmValue::UInt(7)));
/// let section = DeviceSection { idstr: "counter".into(), instance_id: 0, state: cell.clone() };
/// assert_eq!(cell.get().get_u64("count"), Some(7));
/// # let _ = section;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StateCell {
    vmsd: Arc<VmStateDescription>,
    state: Mutex<VmStruct>,
    loads: AtomicU64,
}

impl StateCell {
    /// A cell holding `state`, described by `vmsd`.
    pub fn new(vmsd: Arc<VmStateDescription>, state: VmStruct) -> Arc<StateCell> {
        Arc::new(StateCell {
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

impl fmt::Debug for StateCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCell")
            .field("vmsd", &self.vmsd.name())
            .finish_non_exhaustive()
    }
}

impl SectionState for StateCell {
    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<VmStruct, String> {
        Ok(self.get())
    }

    fn load_state(&self, state: VmStruct, _version_id: u32) -> Result<(), String> {
        self.set(state);
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A FULL section: which (idstr, instance id) it is and whose state.
#[derive(Clone)]
pub struct DeviceSection {
    /// The section name, e.g. `"vmkit-counter"` (QEMU: the vmsd name,
    /// prefixed by the device's bus path where it has one).
    pub idstr: String,
    /// Distinguishes devices of the same idstr: 0, 1, ... in QOM path order.
    pub instance_id: u32,
    /// The state behind it.
    pub state: Arc<dyn SectionState>,
}

impl DeviceSection {
    /// The error for this section's device refusing, with its message.
    pub(crate) fn refused(&self, reason: String) -> SavevmError {
        SavevmError::Device {
            idstr: self.idstr.clone(),
            instance_id: self.instance_id,
            reason,
        }
    }
}

impl fmt::Debug for DeviceSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSection")
            .field("idstr", &self.idstr)
            .field("instance_id", &self.instance_id)
            .field("vmsd", &self.state.vmsd().name())
            .finish()
    }
}

/// Everything [`save`](super::save) writes and [`restore`](super::restore)
/// fills: the machine type, the RAM blocks (in MEM_SIZE order) and the
/// device sections.
#[derive(Debug, Clone)]
pub struct SaveSet {
    /// The machine type named by the configuration record.
    pub machine_type: String,
    /// RAM blocks, sent in this order.
    pub ram: Vec<Arc<RamBlock>>,
    /// Device sections (sent by descending migration priority, then in
    /// this order).
    pub devices: Vec<DeviceSection>,
}

impl SaveSet {
    /// A set of the given parts.
    pub fn new(machine_type: impl Into<String>, ram: Vec<Arc<RamBlock>>, devices: Vec<DeviceSection>) -> SaveSet {
        SaveSet {
            machine_type: machine_type.into(),
            ram,
            devices,
        }
    }

    /// Refuses two devices with the same (idstr, instance id) and two RAM
    /// blocks with the same name.
    pub(crate) fn check(&self) -> Result<(), SavevmError> {
        let mut seen = HashSet::new();
        for d in &self.devices {
            if !seen.insert((d.idstr.as_str(), d.instance_id)) {
                return Err(SavevmError::DuplicateDevice {
                    idstr: d.idstr.clone(),
                    instance_id: d.instance_id,
                });
            }
        }
        let mut names = HashSet::new();
        for b in &self.ram {
            if !names.insert(b.name()) {
                return Err(SavevmError::IncompleteRam {
                    block: b.name().to_owned(),
                    reason: "given twice".into(),
                });
            }
        }
        Ok(())
    }

    /// The device section for (idstr, instance).
    pub fn device(&self, idstr: &str, instance_id: u32) -> Option<&DeviceSection> {
        self.devices
            .iter()
            .find(|d| d.idstr == idstr && d.instance_id == instance_id)
    }
}
