//! What a machine's state consists of for the stream.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

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
