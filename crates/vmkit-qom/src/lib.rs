//! # vmkit-qom: the object model
//!
//! Types with single inheritance and interfaces, typed properties, a
//! composition tree with canonical paths, and lifetimes that are checked
//! rather than trusted:
//!
//! * an object is finalized exactly once, when its last reference goes, and a
//!   reference can never be taken on an object that is finalizing
//!   ([`Object::try_ref`] fails instead);
//! * a child embedded in its parent ([`Object::embed_child`]) shares the
//!   parent's *storage*, which is released only after the parent and every
//!   embedded child are finalized, so a referenced embedded child stays
//!   intact after its parent is gone;
//! * construction has no side effects: singletons are claimed at realize /
//!   complete, so any non-abstract type can be instantiated for introspection.
//!
//! ```
//! use vmkit_qom::{Object, PropertyDef, PropertyKind, TypeInfo, Value, TYPE_DEVICE};
//!
//! TypeInfo::new("doc-serial")
//!     .parent(TYPE_DEVICE)
//!     .class_property(PropertyDef::new("baud", PropertyKind::uint(32)).default(115_200u64).before_realize())
//!     .register()?;
//! let dev = Object::new("doc-serial")?;
//! dev.set("baud", Value::UInt(9600))?;
//! dev.realize()?;
//! assert!(dev.set("baud", Value::UInt(300)).is_err()); // refused after realize
//! let extra = dev.try_ref()?;          // a second reference
//! assert_eq!(dev.refcount(), 2);
//! drop(extra);
//! # Ok::<(), vmkit_qom::Error>(())
//! ```

#![deny(unsafe_code)]

mod builtin;
mod callback;
mod error;
mod lifecycle;
mod object;
#[allow(unsafe_code)]
mod owned_ref;
mod placement;
mod property;
mod refcount;
mod size;
mod stats;
mod storage;
mod sync;
mod tree;
mod type_info;
mod value;

pub use callback::CallbackError;
pub use error::{Error, ErrorKind, PathError, Result};
pub use lifecycle::{reset_tree, singleton_instance};
pub use object::{Creation, Object, Phase};
pub use owned_ref::ObjectRef;
pub use placement::{
    DeletedDevice, check_id, create_machine, destroy_machine, device_add, device_add_from_text, device_del, machine,
    machine_creation_done, machine_ready, new_object, object_add, object_add_from_text, object_del,
};
pub use property::{
    Accessor, Getter, KindOptions, ParseKindError, PropCtx, PropertyDef, PropertyInfo, PropertyKind, Setter, TextParser,
};
pub use refcount::{MAX_REFS, RefCount};
pub use size::{format_size, parse_size};
pub use stats::{Stats, stats};
pub use storage::StorageGuard;
pub use tree::{qom_tree, resolve_path, root};
pub use type_info::{
    CanDeleteHook, Class, ClassBuilder, ClassInitHook, InstanceHook, Registry, TYPE_CONTAINER, TYPE_DEVICE,
    TYPE_INTERFACE, TYPE_MACHINE, TYPE_OBJECT, TYPE_SINGLETON, TYPE_USER_CREATABLE, TypeHooks, TypeImpl, TypeInfo,
    TypeRef, TypeSummary, device_type_properties, list_types, lookup_type, registry, type_properties,
};
pub use value::Value;
