//! What a machine's state consists of for the stream: a [`SaveSet`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use vmkit_memory::RamBlock;

use super::SavevmError;
use crate::device_state::{DynDeviceState, StateError};

/// One device of a [`SaveSet`]: which FULL section it is — (idstr,
/// instance id) — and the device whose state the section carries.
#[derive(Clone)]
pub struct DeviceEntry {
    /// The section name, e.g. `"vmkit-counter"` (QEMU: the vmsd name,
    /// prefixed by the device's bus path where it has one).
    pub idstr: String,
    /// Distinguishes devices of the same idstr: 0, 1, ... in QOM path order.
    pub instance_id: u32,
    /// The device.
    pub device: Arc<dyn DynDeviceState>,
}

impl DeviceEntry {
    /// An entry for `device` as section (`idstr`, `instance_id`).
    pub fn new(idstr: impl Into<String>, instance_id: u32, device: Arc<dyn DynDeviceState>) -> DeviceEntry {
        DeviceEntry {
            idstr: idstr.into(),
            instance_id,
            device,
        }
    }

    /// The error for this device failing to give or take its state.
    pub(crate) fn failed(&self, offset: Option<u64>, source: StateError) -> SavevmError {
        SavevmError::Device {
            idstr: self.idstr.clone(),
            instance_id: self.instance_id,
            offset,
            source,
        }
    }
}

impl fmt::Debug for DeviceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceEntry")
            .field("idstr", &self.idstr)
            .field("instance_id", &self.instance_id)
            .field("vmsd", &self.device.description().name())
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
    pub devices: Vec<DeviceEntry>,
}

impl SaveSet {
    /// A set of the given parts.
    pub fn new(machine_type: impl Into<String>, ram: Vec<Arc<RamBlock>>, devices: Vec<DeviceEntry>) -> SaveSet {
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
    pub fn device(&self, idstr: &str, instance_id: u32) -> Option<&DeviceEntry> {
        self.devices
            .iter()
            .find(|d| d.idstr == idstr && d.instance_id == instance_id)
    }
}
