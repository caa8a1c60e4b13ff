//! Memory backends as user-creatable QOM objects: `memory-backend-ram`,
//! `memory-backend-memfd` and `memory-backend-file`, each with `size` and
//! `share` (and `mem-path` for files). The RAM block is allocated at
//! `complete` — creating a backend object has no side effects — and freed
//! with the object's storage.

use std::sync::{Arc, Once};

use vmkit_qom::{Object, PropertyDef, PropertyKind, TYPE_USER_CREATABLE, TypeInfo, Value};

use crate::error::{Error, Result};
use crate::ram::RamBlock;

/// The abstract base of memory backends.
pub const TYPE_MEMORY_BACKEND: &str = "memory-backend";
/// Anonymous RAM.
pub const TYPE_MEMORY_BACKEND_RAM: &str = "memory-backend-ram";
/// A memfd, shareable with another process by file descriptor (CPR).
pub const TYPE_MEMORY_BACKEND_MEMFD: &str = "memory-backend-memfd";
/// A file (`mem-path`), mapped shared or private.
pub const TYPE_MEMORY_BACKEND_FILE: &str = "memory-backend-file";

/// The RAM block of a completed backend.
struct BackendBlock(Arc<RamBlock>);

fn qom_err(obj: &Object, e: Error) -> vmkit_qom::Error {
    vmkit_qom::Error::hook("complete", obj.describe(), e)
}

fn uint(obj: &Object, name: &str) -> vmkit_qom::Result<u64> {
    match obj.get(name)? {
        Value::UInt(v) => Ok(v),
        Value::Int(v) => Ok(u64::try_from(v).unwrap_or(0)),
        _ => Ok(0),
    }
}

fn complete(obj: &Object) -> vmkit_qom::Result<()> {
    let size = uint(obj, "size")?;
    if size == 0 {
        return Err(vmkit_qom::Error::PropertyValue {
            object: obj.describe(),
            name: "size".into(),
            expected: "size (non-zero)".into(),
            reason: "property 'size' of memory-backend must be set to a non-zero value".into(),
        });
    }
    // QEMU names the RAM block after the backend's id (its name under /objects).
    let name = obj.name_in_parent().unwrap_or_else(|| obj.type_name().to_string());
    let share = obj.get("share")? == Value::Bool(true);
    let block = if obj.is_a(TYPE_MEMORY_BACKEND_FILE) {
        let path = match obj.get("mem-path")? {
            Value::Str(p) if !p.is_empty() => p.to_string(),
            _ => {
                return Err(vmkit_qom::Error::PropertyValue {
                    object: obj.describe(),
                    name: "mem-path".into(),
                    expected: "str (a file path)".into(),
                    reason: "'mem-path' is required".into(),
                });
            }
        };
        RamBlock::file(&name, size, std::path::Path::new(&path), share)
    } else if obj.is_a(TYPE_MEMORY_BACKEND_MEMFD) {
        RamBlock::memfd(&name, size)
    } else {
        RamBlock::anonymous(&name, size)
    }
    .map_err(|e| qom_err(obj, e))?;
    obj.set_user_data(Arc::new(BackendBlock(block)))
}

/// Registers the backend types (once per process).
pub fn register_types() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let types = [
            TypeInfo::new(TYPE_MEMORY_BACKEND)
                .abstract_type(true)
                .implements(TYPE_USER_CREATABLE)
                .description("guest RAM backing (allocated at complete)")
                .class_property(
                    PropertyDef::new("size", PropertyKind::Size)
                        .before_realize()
                        .description("size of the memory region (bytes)"),
                )
                .class_property(
                    PropertyDef::new("share", PropertyKind::Bool)
                        .before_realize()
                        .description("mark the memory as private (false) or shared (true)"),
                )
                .complete(complete)
                // In use (QEMU: "mapped") while a region or another user holds its block:
                // the object's own hold plus the clone made here make two.
                .can_be_deleted(|o| backend_ram_block(o).ok().is_none_or(|b| Arc::strong_count(&b) <= 2)),
            TypeInfo::new(TYPE_MEMORY_BACKEND_RAM).parent(TYPE_MEMORY_BACKEND),
            TypeInfo::new(TYPE_MEMORY_BACKEND_MEMFD)
                .parent(TYPE_MEMORY_BACKEND)
                .class_init(|c| c.set_default("share", Value::Bool(true))),
            TypeInfo::new(TYPE_MEMORY_BACKEND_FILE)
                .parent(TYPE_MEMORY_BACKEND)
                .class_property(
                    PropertyDef::new("mem-path", PropertyKind::Str)
                        .before_realize()
                        .description("file to use as the backing store"),
                ),
        ];
        for t in types {
            // Only a programming error here can fail (a duplicate name).
            let _ = t.register();
        }
    });
}

/// The RAM block of a completed memory backend.
pub fn backend_ram_block(obj: &Object) -> Result<Arc<RamBlock>> {
    if !obj.is_a(TYPE_MEMORY_BACKEND) {
        return Err(Error::Refused(format!("{} is not a memory backend", obj.describe())));
    }
    obj.user_data()
        .and_then(|d| d.downcast::<BackendBlock>().ok())
        .map(|b| b.0.clone())
        .ok_or_else(|| Error::Refused(format!("memory backend {} is not completed", obj.describe())))
}
