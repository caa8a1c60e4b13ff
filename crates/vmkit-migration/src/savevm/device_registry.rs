//! VMState of QOM device types, and finding the devices of a machine.
//!
//! QEMU keeps a device class's VMState in `DeviceClass::vmsd` and
//! registers one section per realized device. Here the migration layer
//! keeps a table from QOM type name to the description and a way to reach
//! an instance's [`DeviceState`] (the QOM crate knows nothing of
//! migration), and [`collect_devices`] builds the sections of a machine
//! from its composition tree when it is saved.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use vmkit_qom::{Object, ObjectRef, lookup_type};

use super::SavevmError;
use super::save_set::DeviceEntry;
use crate::device_state::{DeviceState, DynDeviceState, StateError};
use crate::vmstate::{VmStateDescription, VmStruct};

/// Reaches the migratable state of a realized instance of a device type
/// (for a Rust device model, typically its state kept as the object's user
/// data; for a Python device, a binding-made [`DeviceState`]).
pub type StateAccessor = Arc<dyn Fn(&Object) -> Result<Arc<dyn DynDeviceState>, StateError> + Send + Sync>;

/// A device type's entry: its description and how to reach an instance's state.
#[derive(Clone)]
struct DeviceType {
    vmsd: Arc<VmStateDescription>,
    accessor: StateAccessor,
}

static TABLE: LazyLock<RwLock<HashMap<String, DeviceType>>> = LazyLock::new(Default::default);

/// A device's path on its bus as QEMU's `qdev_get_dev_path` gives it
/// (`0000:00:03.0` for a PCI function), or `None` off such a bus.
pub type DevPath = Arc<dyn Fn(&Object) -> Option<String> + Send + Sync>;

static DEV_PATHS: LazyLock<RwLock<HashMap<String, DevPath>>> = LazyLock::new(Default::default);

/// Declares how instances of `type_name` (and of its subtypes that do
/// not declare their own) name their bus path: a device with one has its
/// sections named `<path>/<vmsd name>`, as QEMU names them
/// (`0000:00:03.0/pci-testdev`). The type must exist and derive from
/// `device`; a second declaration for one type is refused.
pub fn register_device_path(
    type_name: &str,
    dev_path: impl Fn(&Object) -> Option<String> + Send + Sync + 'static,
) -> Result<(), SavevmError> {
    let ty = lookup_type(type_name)?;
    let refuse = |reason: &str| SavevmError::Registration {
        type_name: type_name.to_owned(),
        reason: reason.to_owned(),
    };
    if !ty.is_a("device") {
        return Err(refuse("only device types have a bus path"));
    }
    let mut table = DEV_PATHS.write();
    if table.contains_key(type_name) {
        return Err(refuse("a bus path is already declared"));
    }
    table.insert(type_name.to_owned(), Arc::new(dev_path));
    Ok(())
}

/// The section name of `obj`, whose type migrates as `vmsd_name`: the
/// name, prefixed by the device's bus path where its type declares one.
fn section_idstr(obj: &Object, vmsd_name: &str) -> String {
    let dev_path = {
        let table = DEV_PATHS.read();
        obj.type_ref().ancestors().find_map(|t| table.get(t.name()).cloned())
    };
    match dev_path.and_then(|f| f(obj)) {
        Some(path) => format!("{path}/{vmsd_name}"),
        None => vmsd_name.to_owned(),
    }
}

/// Declares that instances of the device type `type_name` (and of its
/// subtypes that do not declare their own) migrate as `vmsd`, their state
/// reached with `accessor`. The type must exist, derive from `device`, and
/// not have one already. The state `accessor` returns must follow `vmsd`.
pub fn register_device_vmstate(
    type_name: &str,
    vmsd: Arc<VmStateDescription>,
    accessor: impl Fn(&Object) -> Result<Arc<dyn DynDeviceState>, StateError> + Send + Sync + 'static,
) -> Result<(), SavevmError> {
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
    let accessor: StateAccessor = Arc::new(accessor);
    table.insert(type_name.to_owned(), DeviceType { vmsd, accessor });
    Ok(())
}

/// [`register_device_vmstate`] for a Rust device model `D` kept as the
/// object's user data (`Object::set_user_data(Arc<D>)`).
pub fn register_device_model<D: DeviceState + 'static>(
    type_name: &str,
    vmsd: Arc<VmStateDescription>,
) -> Result<(), SavevmError> {
    register_device_vmstate(type_name, vmsd, |obj| {
        let data = obj
            .user_data()
            .ok_or_else(|| StateError::Refused(format!("{} has no device model", obj.describe())))?;
        let model = data
            .downcast::<D>()
            .map_err(|_| StateError::Refused(format!("{} holds another device model", obj.describe())))?;
        Ok(model as Arc<dyn DynDeviceState>)
    })
}

/// The description instances of `type_name` migrate as: its own or its
/// nearest ancestor's.
pub fn device_vmstate(type_name: &str) -> Option<Arc<VmStateDescription>> {
    device_type(type_name).map(|t| t.vmsd)
}

fn device_type(type_name: &str) -> Option<DeviceType> {
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
    let by = |name: &str| {
        table
            .values()
            .find(|t| t.vmsd.name() == name)
            .map(|t| Arc::clone(&t.vmsd))
    };
    by(idstr).or_else(|| tail.and_then(by))
}

/// A QOM device in a save set: the object (kept referenced, so it cannot
/// go away mid-save) and its type's accessor, asked anew for every save
/// and load after checking the device is still realized.
struct QomDevice {
    obj: ObjectRef,
    ty: DeviceType,
}

impl QomDevice {
    fn state(&self) -> Result<Arc<dyn DynDeviceState>, StateError> {
        if !self.obj.is_realized() {
            return Err(StateError::Refused(format!(
                "device {} is no longer realized",
                self.obj.describe()
            )));
        }
        (self.ty.accessor)(&self.obj)
    }
}

impl DeviceState for QomDevice {
    type State = VmStruct;

    /// The instance's own description (a device whose layout follows its
    /// properties), else its type's.
    fn vmsd(&self) -> Arc<VmStateDescription> {
        self.state()
            .map(|s| s.description())
            .unwrap_or_else(|_| Arc::clone(&self.ty.vmsd))
    }

    fn save_state(&self) -> Result<VmStruct, StateError> {
        self.state()?.save_vmstate()
    }

    fn check_state(&self, state: &VmStruct, version_id: u32) -> Result<(), StateError> {
        self.state()?.check_vmstate(state, version_id)
    }

    fn load_state(&self, state: VmStruct, version_id: u32) -> Result<(), StateError> {
        self.state()?.load_vmstate(&state, version_id)
    }
}

/// The sections of every realized device below `root` (inclusive) whose
/// type has a VMState, sorted by canonical QOM path. A section is named
/// after the vmsd, prefixed by the device's bus path where its type
/// declares one ([`register_device_path`]). Devices sharing an idstr are
/// numbered 0, 1, ... in that order, so two machines built alike number
/// their devices alike.
pub fn collect_devices(root: &Object) -> Result<Vec<DeviceEntry>, SavevmError> {
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(obj) = stack.pop() {
        stack.extend(obj.children().into_iter().map(|(_, c)| c));
        if !obj.is_realized() {
            continue;
        }
        let Some(ty) = device_type(obj.type_name()) else {
            continue;
        };
        let path = obj.canonical_path().unwrap_or_default();
        found.push((path, obj.try_ref()?, ty));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut next_instance: HashMap<String, u32> = HashMap::new();
    Ok(found
        .into_iter()
        .map(|(_, obj, ty)| {
            let idstr = section_idstr(&obj, ty.vmsd.name());
            let counter = next_instance.entry(idstr.clone()).or_default();
            let instance_id = *counter;
            *counter += 1;
            DeviceEntry::new(idstr, instance_id, Arc::new(QomDevice { obj, ty }))
        })
        .collect())
}
