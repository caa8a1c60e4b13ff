//! VMState of QOM device types, and finding the devices of a machine.
//!
//! QEMU keeps a device class's VMState in `DeviceClass::vmsd` and
//! registers one section per realized device. Here the migration layer
//! keeps a table from QOM type name to [`DeviceVmState`] (the QOM crate
//! knows nothing of migration), and [`collect_devices`] builds the
//! sections of a machine from its composition tree when it is saved.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use vmkit_qom::{Object, ObjectRef, lookup_type};

use super::SavevmError;
use super::section_state::{DeviceSection, SectionState};
use crate::vmstate::{VmStateDescription, VmStruct};

/// How a device type's state maps to a VMState body.
pub trait DeviceVmState: Send + Sync {
    /// The description (the vmsd); its name is the section idstr.
    fn vmsd(&self) -> Arc<VmStateDescription>;
    /// The state of `obj`, a realized instance of the type.
    fn save(&self, obj: &Object) -> Result<VmStruct, String>;
    /// Installs `state`, decoded from a stream written at `version_id`.
    fn load(&self, obj: &Object, state: VmStruct, version_id: u32) -> Result<(), String>;
}

static TABLE: LazyLock<RwLock<HashMap<String, Arc<dyn DeviceVmState>>>> = LazyLock::new(Default::default);

/// Declares the VMState of the device type `type_name` (and of its
/// subtypes that do not declare their own). The type must exist, derive
/// from `device`, and not have one already.
pub fn register_device_vmstate(type_name: &str, ops: Arc<dyn DeviceVmState>) -> Result<(), SavevmError> {
    let ty = lookup_type(type_name)?;
    let refuse = |reason: &str| SavevmError::Registration {
        type_name: type_name.to_owned(),
        reason: reason.to_owned(),
    };
    if !ty.is_a("device") {
        return Err(refuse("only device types have a VMState"));
    }
    let mut table = TABLE.write();
    if table.contains_key(type_name) {
        return Err(refuse("a VMState is already declared"));
    }
    table.insert(type_name.to_owned(), ops);
    Ok(())
}

/// The VMState that applies to objects of `type_name`: its own or its
/// nearest ancestor's.
pub fn device_vmstate(type_name: &str) -> Option<Arc<dyn DeviceVmState>> {
    let ty = lookup_type(type_name).ok()?;
    let table = TABLE.read();
    ty.ancestors().find_map(|t| table.get(t.name()).cloned())
}

/// The description a section named `idstr` follows, among the declared
/// device VMStates: the one whose name is `idstr`, or its last component
/// (QEMU prefixes a device's bus path: `0000:00:02.0/vga`). Lets the
/// analyzer decode a section without a VMDESCRIPTION trailer.
pub fn known_vmstate(idstr: &str) -> Option<Arc<VmStateDescription>> {
    let tail = idstr.rsplit_once('/').map(|(_, t)| t);
    let table = TABLE.read();
    let all: Vec<_> = table.values().map(|ops| ops.vmsd()).collect();
    let by = |name: &str| all.iter().find(|d| d.name() == name).cloned();
    by(idstr).or_else(|| tail.and_then(by))
}

/// A device's section state: the object (kept referenced) and its type's ops.
struct ObjectSection {
    obj: ObjectRef,
    ops: Arc<dyn DeviceVmState>,
}

impl ObjectSection {
    fn check_live(&self) -> Result<(), String> {
        if self.obj.is_realized() {
            Ok(())
        } else {
            Err(format!("device {} is no longer realized", self.obj.describe()))
        }
    }
}

impl SectionState for ObjectSection {
    fn vmsd(&self) -> Arc<VmStateDescription> {
        self.ops.vmsd()
    }

    fn save_state(&self) -> Result<VmStruct, String> {
        self.check_live()?;
        self.ops.save(&self.obj)
    }

    fn load_state(&self, state: VmStruct, version_id: u32) -> Result<(), String> {
        self.check_live()?;
        self.ops.load(&self.obj, state, version_id)
    }
}

/// The sections of every realized device below `root` (inclusive) whose
/// type has a VMState, sorted by canonical QOM path. Devices sharing an
/// idstr (the vmsd name) are numbered 0, 1, ... in that order, so two
/// machines built alike number their devices alike.
pub fn collect_devices(root: &Object) -> Result<Vec<DeviceSection>, SavevmError> {
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(obj) = stack.pop() {
        stack.extend(obj.children().into_iter().map(|(_, c)| c));
        if !obj.is_realized() {
            continue;
        }
        let Some(ops) = device_vmstate(obj.type_name()) else {
            continue;
        };
        let path = obj.canonical_path().unwrap_or_default();
        found.push((path, obj.try_ref()?, ops));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut next_instance: HashMap<String, u32> = HashMap::new();
    Ok(found
        .into_iter()
        .map(|(_, obj, ops)| {
            let idstr = ops.vmsd().name().to_owned();
            let counter = next_instance.entry(idstr.clone()).or_default();
            let instance_id = *counter;
            *counter += 1;
            DeviceSection {
                idstr,
                instance_id,
                state: Arc::new(ObjectSection { obj, ops }),
            }
        })
        .collect())
}
