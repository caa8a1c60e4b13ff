//! Placing objects the way QEMU's management commands do: the machine at
//! `/machine`, `device_add`/`device_del` under `/machine/peripheral[-anon]`,
//! `object-add`/`object-del` under `/objects`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, PathError, Result};
use crate::object::{Creation, Object};
use crate::owned_ref::ObjectRef;
use crate::tree::{resolve_path, root};
use crate::type_info::{TYPE_DEVICE, TYPE_MACHINE, TYPE_USER_CREATABLE, lookup_type};
use crate::value::Value;

/// Checks an id as QEMU's `id_wellformed` does: a letter, then letters, digits, `-`, `.`, `_`.
pub fn check_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Path(PathError::Invalid {
            path: id.to_string(),
            reason: "an id must start with a letter and contain only letters, digits, '-', '.' and '_'".into(),
        }))
    }
}

/// Set once the machine is complete (QEMU's `PHASE_MACHINE_READY`);
/// devices created afterwards are hot-plugged.
static MACHINE_READY: AtomicBool = AtomicBool::new(false);

/// Marks the machine complete: devices created from now on report
/// `hotplugged`, as every QMP `device_add` does in QEMU. Cleared when a
/// machine is created or destroyed.
pub fn machine_creation_done() -> Result<()> {
    if machine().is_none() {
        return Err(Error::Lifecycle {
            object: "/machine".into(),
            reason: "no machine has been created".into(),
        });
    }
    MACHINE_READY.store(true, Ordering::Release);
    Ok(())
}

/// Whether [`machine_creation_done`] was called for the current machine.
pub fn machine_ready() -> bool {
    MACHINE_READY.load(Ordering::Acquire)
}

/// How the management layer creates objects now: as QEMU's `device_initfn`,
/// a device made once the machine is complete is hot-plugged.
fn creation() -> Creation {
    Creation {
        hotplugged: machine_ready(),
    }
}

/// Creates an object of the named type as the management commands do: a
/// device created after [`machine_creation_done`] is hot-plugged.
/// ([`Object::new`] knows no machine: its devices are cold-plugged.)
pub fn new_object(type_name: &str) -> Result<ObjectRef> {
    Object::create(&lookup_type(type_name)?, creation())
}

/// The machine at `/machine`, if one was created.
pub fn machine() -> Option<Object> {
    root().child("machine")
}

/// Creates the machine of type `type_name` at `/machine`, with its
/// `peripheral`, `peripheral-anon` and `unattached` containers.
pub fn create_machine(type_name: &str) -> Result<Object> {
    let ty = lookup_type(type_name)?;
    if !ty.is_a(TYPE_MACHINE) {
        return Err(Error::WrongType {
            type_name: type_name.to_string(),
            expected: TYPE_MACHINE.to_string(),
        });
    }
    if let Some(m) = machine() {
        return Err(Error::Lifecycle {
            object: m.describe(),
            reason: "a machine already exists".into(),
        });
    }
    MACHINE_READY.store(false, Ordering::Release);
    let m = Object::create(&ty, creation())?;
    root().add_child("machine", &m)?;
    Ok(m.handle())
}

/// Removes the machine from `/machine` (and so finalizes it and everything
/// it owns). Its devices are unrealized first, children before parents:
/// what a realized device holds (an address space whose view references
/// the machine's memory, say) is let go before the last references are
/// dropped, so nothing keeps the machine alive.
pub fn destroy_machine() -> Result<()> {
    MACHINE_READY.store(false, Ordering::Release);
    match machine() {
        Some(m) => {
            unrealize_tree(&m);
            m.unparent()
        }
        None => Ok(()),
    }
}

fn unrealize_tree(obj: &Object) {
    let mut children = obj.children();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, child) in children {
        unrealize_tree(&child);
    }
    if obj.is_realized() {
        // Unrealize cannot be vetoed; an error has nobody to report to.
        let _ = obj.unrealize();
    }
}

fn container(path: &str) -> Result<Object> {
    resolve_path(path, None).map_err(|_| Error::Lifecycle {
        object: path.to_string(),
        reason: "no machine has been created".into(),
    })
}

fn set_all(obj: &Object, props: &[(String, Value)]) -> Result<()> {
    for (name, value) in props {
        obj.set(name, value.clone())?;
    }
    Ok(())
}

/// Sets command-line text: each value is parsed by its property's own type.
fn set_all_from_text(obj: &Object, props: &[(String, String)]) -> Result<()> {
    for (name, text) in props {
        obj.set_str(name, text)?;
    }
    Ok(())
}

/// Creates, places and realizes a device, as QMP `device_add` does.
///
/// With an `id` the device goes to `/machine/peripheral/<id>`, without one to
/// `/machine/peripheral-anon/device[N]`. On any failure nothing is left behind.
pub fn device_add(type_name: &str, id: Option<&str>, props: &[(String, Value)]) -> Result<Object> {
    device_add_with(type_name, id, |dev| set_all(dev, props))
}

/// [`device_add`] with the properties as written on a command line
/// (`-device TYPE,prop=value`): each value is parsed by its property's own
/// type (`on`, `0x10`, `64K`, an enum member, a path), and an error names
/// the property and the type it expects.
pub fn device_add_from_text(type_name: &str, id: Option<&str>, props: &[(String, String)]) -> Result<Object> {
    device_add_with(type_name, id, |dev| set_all_from_text(dev, props))
}

fn device_add_with(type_name: &str, id: Option<&str>, set_props: impl FnOnce(&Object) -> Result<()>) -> Result<Object> {
    let ty = lookup_type(type_name)?;
    if !ty.is_a(TYPE_DEVICE) {
        return Err(Error::WrongType {
            type_name: type_name.to_string(),
            expected: TYPE_DEVICE.to_string(),
        });
    }
    if let Some(id) = id {
        check_id(id)?;
    }
    let (parent, name) = match id {
        Some(id) => (container("/machine/peripheral")?, id.to_string()),
        None => (container("/machine/peripheral-anon")?, "device[*]".to_string()),
    };
    if id.is_some() && parent.child(&name).is_some() {
        return Err(Error::Lifecycle {
            object: format!("/machine/peripheral/{name}"),
            reason: format!("duplicate device id '{name}'"),
        });
    }
    let dev = Object::create(&ty, creation())?;
    set_props(&dev).map_err(|e| {
        e.naming_object(&match id {
            Some(id) => format!("device '{id}' ({type_name})"),
            None => format!("device '{type_name}'"),
        })
    })?;
    parent.add_child(&name, &dev)?;
    if let Err(e) = dev.realize() {
        let _ = dev.unparent();
        return Err(e);
    }
    Ok(dev.handle())
}

/// A device [`device_del`] removed from the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedDevice {
    /// Its canonical path before it left.
    pub path: String,
    /// Its id (the name under `/machine/peripheral`), if it had one.
    pub id: Option<String>,
}

/// Unplugs a device by id or path, as QMP `device_del` does: its unplug
/// hooks may refuse (a bus without hot-plug); otherwise it is unrealized
/// and removed from the tree, and finalized once unreferenced. Devices
/// on its buses go with it, as in QEMU (a USB controller's USB devices).
///
/// Returns every device that left the tree — those that went with it
/// first, in path order, then the device itself — for the caller's
/// `DEVICE_DELETED` events.
pub fn device_del(id_or_path: &str) -> Result<Vec<DeletedDevice>> {
    let dev = if id_or_path.starts_with('/') {
        resolve_path(id_or_path, None)?
    } else {
        container("/machine/peripheral")?
            .child(id_or_path)
            .ok_or_else(|| Error::Path(PathError::NotFound(id_or_path.to_string())))?
    };
    if !dev.is_a(TYPE_DEVICE) {
        return Err(Error::WrongType {
            type_name: dev.type_name().to_string(),
            expected: TYPE_DEVICE.to_string(),
        });
    }
    dev.check_unplug()?;
    let before = devices_in_tree();
    let path = dev.canonical_path().unwrap_or_default();
    dev.unparent()?;
    // Its own parts (children embedded in it) are not reported: they are
    // the device, not devices on its buses.
    let inside = format!("{path}/");
    let mut gone: Vec<DeletedDevice> = before
        .into_iter()
        .filter(|(obj, d)| obj.parent().is_none() && d.path != path && !d.path.starts_with(&inside))
        .map(|(_, d)| d)
        .collect();
    gone.push(DeletedDevice {
        id: peripheral_id(&path),
        path,
    });
    Ok(gone)
}

/// Every device in the tree with what [`DeletedDevice`] reports of it, in path order.
fn devices_in_tree() -> Vec<(Object, DeletedDevice)> {
    fn walk(obj: &Object, out: &mut Vec<(Object, DeletedDevice)>) {
        let mut children = obj.children();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, child) in children {
            if child.is_a(TYPE_DEVICE) {
                if let Some(path) = child.canonical_path() {
                    let id = peripheral_id(&path);
                    out.push((child.clone(), DeletedDevice { path, id }));
                }
            }
            walk(&child, out);
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out
}

/// The id of the device at `path`: its name when it sits in `/machine/peripheral`.
fn peripheral_id(path: &str) -> Option<String> {
    path.strip_prefix("/machine/peripheral/")
        .filter(|name| !name.contains('/'))
        .map(str::to_owned)
}

/// Creates, places and completes a user-creatable object at `/objects/<id>`, as QMP `object-add` does.
pub fn object_add(type_name: &str, id: &str, props: &[(String, Value)]) -> Result<Object> {
    object_add_with(type_name, id, |obj| set_all(obj, props))
}

/// [`object_add`] with the properties as written on a command line
/// (`-object TYPE,id=ID,prop=value`), parsed as [`device_add_from_text`] does.
pub fn object_add_from_text(type_name: &str, id: &str, props: &[(String, String)]) -> Result<Object> {
    object_add_with(type_name, id, |obj| set_all_from_text(obj, props))
}

fn object_add_with(type_name: &str, id: &str, set_props: impl FnOnce(&Object) -> Result<()>) -> Result<Object> {
    let ty = lookup_type(type_name)?;
    if !ty.is_a(TYPE_USER_CREATABLE) {
        return Err(Error::WrongType {
            type_name: type_name.to_string(),
            expected: TYPE_USER_CREATABLE.to_string(),
        });
    }
    check_id(id)?;
    let objects = container("/objects")?;
    if objects.child(id).is_some() {
        return Err(Error::Lifecycle {
            object: format!("/objects/{id}"),
            reason: format!("duplicate object id '{id}'"),
        });
    }
    let obj = Object::create(&ty, creation())?;
    set_props(&obj).map_err(|e| e.naming_object(&format!("object '{id}' ({type_name})")))?;
    objects.add_child(id, &obj)?;
    if let Err(e) = obj.complete() {
        let _ = obj.unparent();
        return Err(e);
    }
    Ok(obj.handle())
}

/// Deletes `/objects/<id>`, as QMP `object-del` does; refused while the object is in use.
pub fn object_del(id: &str) -> Result<()> {
    let obj = container("/objects")?
        .child(id)
        .ok_or_else(|| Error::Path(PathError::NotFound(format!("/objects/{id}"))))?;
    if !obj.can_be_deleted() {
        return Err(Error::Lifecycle {
            object: obj.describe(),
            reason: format!("object '{id}' is in use, can not be deleted"),
        });
    }
    obj.unparent()
}
