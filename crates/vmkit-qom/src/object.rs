//! Objects: handles, owned references, and property access.
//!
//! [`Object`] is a *handle*: cloning it costs one atomic increment of Rust's
//! own count and says nothing about the object's QOM lifetime. [`ObjectRef`]
//! *owns* one QOM reference; the object is finalized when the last one goes.
//! Every operation on a handle checks the object's phase, so using an object
//! after it was finalized is an [`Error::ObjectFinalized`], never undefined.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::owned_ref::ObjectRef;
use crate::property::{Accessor, PropCtx, PropertyDef, PropertyInfo, PropertyKind};
use crate::refcount::RefCount;
use crate::stats;
use crate::storage::{Storage, StorageGuard};
use crate::type_info::{Class, TypeRef, lookup_type};
use crate::value::Value;

static NEXT_OBJECT_ID: AtomicU64 = AtomicU64::new(1);

/// Where an object is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Usable.
    Live,
    /// The last reference is gone and finalization is running: the object may
    /// still read its own state, but no one may take a new reference.
    Finalizing,
    /// Finalization is over; only the handle remains.
    Finalized,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Live,
            1 => Phase::Finalizing,
            _ => Phase::Finalized,
        }
    }

    /// The phase as a lower-case word.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Live => "live",
            Phase::Finalizing => "finalizing",
            Phase::Finalized => "finalized",
        }
    }
}

pub(crate) struct ObjectInner {
    id: u64,
    pub(crate) class: Arc<Class>,
    pub(crate) refs: RefCount,
    /// Whether the device is realized; an atomic so that MMIO dispatch can
    /// check it on every access without taking the data lock.
    pub(crate) realized: AtomicBool,
    /// Created after the machine was complete (QEMU's `hotplugged`).
    hotplugged: bool,
    phase: AtomicU8,
    pub(crate) storage: Arc<Storage>,
    /// The object whose storage this embedded child lives in.
    embedded_in: Option<Weak<ObjectInner>>,
    pub(crate) data: Mutex<ObjectData>,
}

/// The mutable state of an object. Released (emptied) together with its storage.
#[derive(Default)]
pub(crate) struct ObjectData {
    pub(crate) parent: Option<ParentEdge>,
    /// Values of stored class properties, by slot.
    pub(crate) slots: Vec<Slot>,
    /// Properties added to this instance (including `child<>` edges), in insertion order.
    pub(crate) instance_props: Vec<InstanceProp>,
    pub(crate) completed: bool,
    /// A realize, unrealize or complete is running (its hooks are being called).
    pub(crate) in_transition: bool,
    /// Number of type levels whose `instance_init` ran (finalize runs only those).
    pub(crate) inited_levels: usize,
    pub(crate) user_data: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) state_released: bool,
}

pub(crate) struct ParentEdge {
    pub(crate) obj: Weak<ObjectInner>,
    pub(crate) name: Arc<str>,
}

pub(crate) enum Slot {
    Value(Value),
    Link(Option<LinkTarget>),
    Child(ObjectRef),
}

pub(crate) struct LinkTarget {
    pub(crate) handle: Object,
    /// Present for strong links: the reference the link holds on its target.
    pub(crate) _owned: Option<ObjectRef>,
}

pub(crate) struct InstanceProp {
    pub(crate) def: Arc<PropertyDef>,
    pub(crate) slot: Slot,
}

/// What an object's creator knows about its creation that the object layer
/// does not (the object model knows no machine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Creation {
    /// The object is a device created into a complete machine: QEMU's
    /// `hotplugged` (set by [`device_add`](crate::device_add) once
    /// [`machine_creation_done`](crate::machine_creation_done) was called).
    /// Ignored for objects that are not devices.
    pub hotplugged: bool,
}

/// A handle to an object. It does not keep the object from being finalized;
/// see [`ObjectRef`] for that.
#[derive(Clone)]
pub struct Object(pub(crate) Arc<ObjectInner>);

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Object(#{} '{}' {})",
            self.0.id,
            self.type_name(),
            self.phase().as_str()
        )
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Object {}
impl std::hash::Hash for Object {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// Where a property lives on an object.
enum PropLoc {
    Class(Arc<PropertyDef>, Option<usize>),
    Instance(Arc<PropertyDef>),
}

impl PropLoc {
    fn def(&self) -> &Arc<PropertyDef> {
        match self {
            PropLoc::Class(d, _) | PropLoc::Instance(d) => d,
        }
    }
}

impl ObjectInner {
    /// Frees the state (property values, children edges, user data) when the storage goes.
    pub(crate) fn release_state(&self) {
        let old = {
            let mut d = self.data.lock();
            d.state_released = true;
            (
                std::mem::take(&mut d.slots),
                std::mem::take(&mut d.instance_props),
                d.user_data.take(),
            )
        };
        drop(old);
    }
}

impl Object {
    /// Creates an object of the named type. The caller owns the one reference.
    // `Object` is the handle type; creation hands out the owning `ObjectRef`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(type_name: &str) -> Result<ObjectRef> {
        Self::new_of(&lookup_type(type_name)?)
    }

    /// Creates an object of an already looked-up type.
    pub fn new_of(ty: &TypeRef) -> Result<ObjectRef> {
        Self::create(ty, Creation::default())
    }

    /// Creates an object of `ty` with what its creator knows about the
    /// creation (see [`Creation`]).
    pub fn create(ty: &TypeRef, creation: Creation) -> Result<ObjectRef> {
        if ty.is_abstract() {
            return Err(Error::AbstractType(ty.name().to_string()));
        }
        let class = ty.class()?;
        let storage = Storage::new();
        let obj = Self::allocate(class, storage, None, creation);
        crate::lifecycle::initialize(obj)
    }

    /// Creates a child embedded in this object: it lives in this object's
    /// storage, is added as `child<>` property `name`, and is owned by this
    /// object (the returned handle holds no reference).
    pub fn embed_child(&self, name: &str, type_name: &str) -> Result<Object> {
        self.check_live("embedding a child")?;
        crate::tree::check_child_name(name)?;
        if !name.ends_with("[*]") && self.has_property(name) {
            return Err(Error::DuplicateProperty {
                object: self.describe(),
                name: name.to_string(),
            });
        }
        let ty = lookup_type(type_name)?;
        if ty.is_abstract() {
            return Err(Error::AbstractType(ty.name().to_string()));
        }
        let class = ty.class()?;
        self.0.storage.acquire()?;
        // A device embedded in a hot-plugged device is created hot-plugged too.
        let creation = Creation {
            hotplugged: self.is_hotplugged(),
        };
        let child = Self::allocate(class, self.0.storage.clone(), Some(Arc::downgrade(&self.0)), creation);
        let child = crate::lifecycle::initialize(child)?;
        self.add_child(name, &child)?;
        Ok(child.handle())
    }

    fn allocate(
        class: Arc<Class>,
        storage: Arc<Storage>,
        embedded_in: Option<Weak<ObjectInner>>,
        creation: Creation,
    ) -> ObjectRef {
        let slots = class
            .properties
            .iter()
            .filter(|p| p.is_stored())
            .map(|p| match p.kind {
                PropertyKind::Link { .. } => Slot::Link(None),
                _ => Slot::Value(p.initial_value()),
            })
            .collect();
        let hotplugged = class.is_device() && creation.hotplugged;
        let inner = Arc::new(ObjectInner {
            id: NEXT_OBJECT_ID.fetch_add(1, Ordering::Relaxed),
            class,
            refs: RefCount::one(),
            realized: AtomicBool::new(false),
            hotplugged,
            phase: AtomicU8::new(0),
            storage: storage.clone(),
            embedded_in,
            data: Mutex::new(ObjectData {
                slots,
                ..Default::default()
            }),
        });
        storage.add_member(inner.clone());
        stats::object_created();
        ObjectRef::adopt(Object(inner))
    }

    // ----- identity and lifetime -------------------------------------------------

    /// A process-unique identifier.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The object's type.
    pub fn type_ref(&self) -> &TypeRef {
        &self.0.class.ty
    }

    /// The object's type name.
    pub fn type_name(&self) -> &str {
        self.0.class.ty.name()
    }

    /// The object's class.
    pub fn class(&self) -> &Arc<Class> {
        &self.0.class
    }

    /// Whether the object is of type `name`, derives from it, or implements it.
    pub fn is_a(&self, name: &str) -> bool {
        self.0.class.is_a(name)
    }

    /// The phase of the object's life.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.0.phase.load(Ordering::Acquire))
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.0.phase.store(phase as u8, Ordering::Release);
    }

    /// The number of QOM references held on the object.
    pub fn refcount(&self) -> u32 {
        self.0.refs.get()
    }

    /// The error of a refused `try_ref`, kept out of its inlined fast path.
    #[cold]
    #[inline(never)]
    pub(crate) fn try_ref_refused(&self, count: u32) -> Error {
        if count == 0 {
            stats::resurrection_refused();
            self.finalized_error("taking a reference")
        } else {
            Error::Lifecycle {
                object: self.describe(),
                reason: "reference count overflow".into(),
            }
        }
    }

    /// Pins the object's storage (see [`StorageGuard`]). Refused once the object is finalized.
    pub fn pin_storage(&self) -> Result<StorageGuard> {
        if self.phase() == Phase::Finalized {
            return Err(self.finalized_error("pinning its storage"));
        }
        // The object may finish finalizing (and its storage be released)
        // between the check above and this one: report that the same way.
        self.0
            .storage
            .acquire()
            .map_err(|_| self.finalized_error("pinning its storage"))?;
        Ok(StorageGuard {
            storage: self.0.storage.clone(),
        })
    }

    /// An identifier of the storage the object lives in (shared with embedded children).
    pub fn storage_id(&self) -> u64 {
        self.0.storage.id
    }

    /// How many users keep the object's storage: members not yet finalized plus guards.
    pub fn storage_refcount(&self) -> u32 {
        self.0.storage.count()
    }

    /// Whether the object's storage was released (its state freed).
    pub fn storage_released(&self) -> bool {
        self.0.storage.is_released()
    }

    /// Whether the object was created embedded in another.
    pub fn is_embedded(&self) -> bool {
        self.0.embedded_in.is_some()
    }

    /// The object this embedded child lives in.
    ///
    /// `Ok(None)` for an object that is not embedded. An error when the
    /// container is finalizing or finalized: the child's own state stays
    /// usable, but nothing that needs the container is.
    pub fn container(&self) -> Result<Option<Object>> {
        let Some(weak) = &self.0.embedded_in else {
            return Ok(None);
        };
        let container = weak.upgrade().map(Object).ok_or_else(|| Error::ObjectFinalized {
            object: format!("the container of {}", self.describe()),
            state: "finalized",
            action: "access".into(),
        })?;
        match container.phase() {
            Phase::Live => Ok(Some(container)),
            phase => Err(Error::ObjectFinalized {
                object: format!("container '{}' of {}", container.type_name(), self.describe()),
                state: phase.as_str(),
                action: "access through its embedded child".into(),
            }),
        }
    }

    pub(crate) fn check_live(&self, action: &str) -> Result<()> {
        match self.phase() {
            Phase::Live => Ok(()),
            _ => Err(self.finalized_error(action)),
        }
    }

    pub(crate) fn check_not_finalized(&self, action: &str) -> Result<()> {
        match self.phase() {
            Phase::Finalized => Err(self.finalized_error(action)),
            _ => Ok(()),
        }
    }

    pub(crate) fn finalized_error(&self, action: &str) -> Error {
        let state = match self.phase() {
            Phase::Live | Phase::Finalizing => "finalizing",
            Phase::Finalized => "finalized",
        };
        Error::ObjectFinalized {
            object: self.describe(),
            state,
            action: action.to_string(),
        }
    }

    /// Whether this device was created hot-plugged ([`Creation::hotplugged`]:
    /// after [`machine_creation_done`](crate::machine_creation_done), or
    /// embedded in such a device).
    pub fn is_hotplugged(&self) -> bool {
        self.0.hotplugged
    }

    /// A human description: `'type' at /path`, or `'type' #id (not in the tree)`.
    pub fn describe(&self) -> String {
        match self.canonical_path() {
            Some(p) => format!("'{}' at {p}", self.type_name()),
            None => format!("'{}' #{} (not in the tree)", self.type_name(), self.0.id),
        }
    }

    // ----- user data -------------------------------------------------------------

    /// Data a binding or type implementation attaches to the object; freed with its storage.
    pub fn user_data(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.data.lock().user_data.clone()
    }

    /// Attaches data to the object (replacing any). Refused once finalized.
    pub fn set_user_data(&self, data: Arc<dyn Any + Send + Sync>) -> Result<()> {
        self.check_not_finalized("attaching data")?;
        let old = self.0.data.lock().user_data.replace(data);
        drop(old);
        Ok(())
    }

    // ----- properties ------------------------------------------------------------

    fn locate(&self, name: &str) -> Result<PropLoc> {
        if let Some(&i) = self.0.class.property_index.get(name) {
            return Ok(PropLoc::Class(
                self.0.class.properties[i].clone(),
                self.0.class.slots[i],
            ));
        }
        let data = self.0.data.lock();
        if let Some(p) = data.instance_props.iter().find(|p| &*p.def.name == name) {
            return Ok(PropLoc::Instance(p.def.clone()));
        }
        drop(data);
        Err(Error::PropertyNotFound {
            object: self.describe(),
            name: name.to_string(),
        })
    }

    /// Whether the object has a property of that name.
    pub fn has_property(&self, name: &str) -> bool {
        self.0.class.property_index.contains_key(name)
            || self.0.data.lock().instance_props.iter().any(|p| &*p.def.name == name)
    }

    /// Reads a property.
    ///
    /// `link<>` properties read as the target's canonical path (`""` when
    /// unset), `child<>` properties as the child's.
    pub fn get(&self, name: &str) -> Result<Value> {
        self.check_not_finalized("reading a property")?;
        let loc = self.locate(name)?;
        let def = loc.def();
        if let Accessor::Custom { get, .. } = &def.accessor {
            let get = get
                .as_ref()
                .ok_or_else(|| self.access_error(name, "it is write-only"))?;
            return get(self);
        }
        enum Read {
            Value(Value),
            Path(Option<Object>),
        }
        let read = {
            let data = self.0.data.lock();
            if data.state_released {
                drop(data);
                return Err(self.finalized_error("reading a property"));
            }
            let slot = match &loc {
                PropLoc::Class(_, Some(i)) => data.slots.get(*i),
                PropLoc::Class(_, None) => None,
                PropLoc::Instance(d) => data
                    .instance_props
                    .iter()
                    .find(|p| Arc::ptr_eq(&p.def, d))
                    .map(|p| &p.slot),
            };
            match slot {
                Some(Slot::Value(v)) => Read::Value(v.clone()),
                Some(Slot::Link(t)) => Read::Path(t.as_ref().map(|t| t.handle.clone())),
                Some(Slot::Child(c)) => Read::Path(Some(c.handle())),
                None => Read::Value(Value::Null),
            }
        };
        Ok(match read {
            Read::Value(v) => v,
            Read::Path(o) => Value::str(o.and_then(|o| o.canonical_path()).unwrap_or_default()),
        })
    }

    /// Writes a property, checking the value against the property's kind.
    ///
    /// `link<>` properties take a path (absolute or partial) or `""` to clear.
    pub fn set(&self, name: &str, value: Value) -> Result<()> {
        self.check_not_finalized("setting a property")?;
        let loc = self.locate(name)?;
        let def = loc.def().clone();
        self.check_writable(&def)?;
        let descr = || self.describe();
        let ctx = PropCtx { name, object: &descr };
        let value = match (&def.parser, value) {
            // A string for a property with a syntax of its own ("03.0" for
            // an int32 PCI address): read by that syntax.
            (Some(_), Value::Str(text)) if !matches!(def.kind, PropertyKind::Str) => def.parse_text(&text, &ctx)?,
            (_, value) => def.kind.coerce(value, &ctx)?,
        };
        if let PropertyKind::Link { .. } = def.kind {
            let target = match value.as_str() {
                None | Some("") => None,
                Some(path) => Some(crate::tree::resolve_path(path, None)?),
            };
            return self.store_link(&loc, target.as_ref());
        }
        if let Accessor::Custom { set, .. } = &def.accessor {
            let set = set.as_ref().ok_or_else(|| self.access_error(name, "it is read-only"))?;
            return set(self, value);
        }
        self.store(&loc, Slot::Value(value))
    }

    /// Writes a property from a command-line style string (`on`, `0x10`, `64K`...).
    pub fn set_str(&self, name: &str, text: &str) -> Result<()> {
        let def = self.locate(name)?.def().clone();
        let descr = || self.describe();
        let ctx = PropCtx { name, object: &descr };
        let value = def.parse_text(text, &ctx)?;
        self.set(name, value)
    }

    /// Points a `link<>` property at `target` (or clears it), checking the target's type.
    pub fn set_link(&self, name: &str, target: Option<&Object>) -> Result<()> {
        self.check_not_finalized("setting a link")?;
        let loc = self.locate(name)?;
        let def = loc.def().clone();
        if !matches!(def.kind, PropertyKind::Link { .. }) {
            let descr = || self.describe();
            return Err(PropCtx { name, object: &descr }.type_error(&def.kind.type_name(), &Value::str("an object")));
        }
        self.check_writable(&def)?;
        self.store_link(&loc, target)
    }

    /// The target of a `link<>` property, if set.
    pub fn get_link(&self, name: &str) -> Result<Option<Object>> {
        self.check_not_finalized("reading a link")?;
        let loc = self.locate(name)?;
        let data = self.0.data.lock();
        let slot = match &loc {
            PropLoc::Class(_, Some(i)) => data.slots.get(*i),
            PropLoc::Class(_, None) => None,
            PropLoc::Instance(d) => data
                .instance_props
                .iter()
                .find(|p| Arc::ptr_eq(&p.def, d))
                .map(|p| &p.slot),
        };
        match slot {
            Some(Slot::Link(t)) => Ok(t.as_ref().map(|t| t.handle.clone())),
            Some(Slot::Child(c)) => Ok(Some(c.handle())),
            _ => {
                drop(data);
                let descr = || self.describe();
                Err(PropCtx { name, object: &descr }.type_error("a link<> or child<> property", &Value::Null))
            }
        }
    }

    fn store_link(&self, loc: &PropLoc, target: Option<&Object>) -> Result<()> {
        let def = loc.def();
        let PropertyKind::Link { target: want, strong } = &def.kind else {
            return Err(self.access_error(&def.name, "not a link"));
        };
        let new = match target {
            None => None,
            Some(t) => {
                if !t.is_a(want) {
                    return Err(Error::PropertyType {
                        object: self.describe(),
                        name: def.name.to_string(),
                        expected: def.kind.type_name(),
                        got: format!("an object of type '{}'", t.type_name()),
                    });
                }
                let owned = if *strong { Some(t.try_ref()?) } else { None };
                Some(LinkTarget {
                    handle: t.clone(),
                    _owned: owned,
                })
            }
        };
        self.store(loc, Slot::Link(new))
    }

    fn store(&self, loc: &PropLoc, value: Slot) -> Result<()> {
        // The refused value goes back out too: it may hold a strong link,
        // which must not be dropped under the lock either.
        let outcome = {
            let mut data = self.0.data.lock();
            if data.state_released {
                Err((value, true))
            } else {
                let slot = match loc {
                    PropLoc::Class(_, Some(i)) => data.slots.get_mut(*i),
                    PropLoc::Class(_, None) => None,
                    PropLoc::Instance(d) => data
                        .instance_props
                        .iter_mut()
                        .find(|p| Arc::ptr_eq(&p.def, d))
                        .map(|p| &mut p.slot),
                };
                match slot {
                    Some(s) => Ok(std::mem::replace(s, value)),
                    None => Err((value, false)),
                }
            }
        };
        match outcome {
            // Dropped outside the lock: an old strong link may finalize its target.
            Ok(old) => {
                drop(old);
                Ok(())
            }
            Err((value, released)) => {
                drop(value);
                if released {
                    Err(self.finalized_error("setting a property"))
                } else {
                    // A property without a stored value (a computed one, or an
                    // instance property removed meanwhile): not a finalization.
                    Err(self.access_error(&loc.def().name, "it has no stored value"))
                }
            }
        }
    }

    fn check_writable(&self, def: &PropertyDef) -> Result<()> {
        if !def.writable() {
            let why = if matches!(def.kind, PropertyKind::Child { .. }) {
                "a child<> property cannot be set"
            } else {
                "it is read-only"
            };
            return Err(self.access_error(&def.name, why));
        }
        if def.before_realize_only {
            let realized = self.is_realized();
            let completed = self.0.data.lock().completed;
            if realized || completed {
                let what = if realized { "realized" } else { "completed" };
                return Err(self.access_error(&def.name, &format!("it cannot be set after the object was {what}")));
            }
        }
        Ok(())
    }

    pub(crate) fn access_error(&self, name: &str, reason: &str) -> Error {
        Error::PropertyAccess {
            object: self.describe(),
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Adds a property to this instance (as a type's `instance_init` does).
    pub fn add_property(&self, def: PropertyDef) -> Result<()> {
        self.check_live("adding a property")?;
        if matches!(def.kind, PropertyKind::Child { .. }) {
            return Err(self.access_error(&def.name, "child<> properties are added with add_child"));
        }
        let def = crate::type_info::check_default(def, self.type_name())?;
        let slot = match def.kind {
            PropertyKind::Link { .. } => Slot::Link(None),
            _ => Slot::Value(def.initial_value()),
        };
        self.insert_instance_prop(InstanceProp {
            def: Arc::new(def),
            slot,
        })
    }

    pub(crate) fn insert_instance_prop(&self, prop: InstanceProp) -> Result<()> {
        let name = prop.def.name.clone();
        if self.0.class.property_index.contains_key(&*name) {
            return Err(Error::DuplicateProperty {
                object: self.describe(),
                name: name.to_string(),
            });
        }
        let rejected = {
            let mut data = self.0.data.lock();
            if data.instance_props.iter().any(|p| p.def.name == name) {
                Some(prop)
            } else {
                data.instance_props.push(prop);
                None
            }
        };
        match rejected {
            None => Ok(()),
            Some(prop) => {
                drop(prop);
                Err(Error::DuplicateProperty {
                    object: self.describe(),
                    name: name.to_string(),
                })
            }
        }
    }

    /// Removes an instance property (not a class property, not a child: use `unparent`).
    pub fn remove_property(&self, name: &str) -> Result<()> {
        self.check_not_finalized("removing a property")?;
        let removed = {
            let mut data = self.0.data.lock();
            let pos = data
                .instance_props
                .iter()
                .position(|p| &*p.def.name == name && !matches!(p.slot, Slot::Child(_)));
            pos.map(|i| data.instance_props.remove(i))
        };
        match removed {
            Some(p) => {
                drop(p);
                Ok(())
            }
            None => Err(Error::PropertyNotFound {
                object: self.describe(),
                name: name.to_string(),
            }),
        }
    }

    /// Every property of the object, instance properties first, then class
    /// properties from the most-derived type up (the order `qom-list` uses).
    pub fn property_infos(&self) -> Result<Vec<PropertyInfo>> {
        self.check_not_finalized("listing properties")?;
        let mut out: Vec<PropertyInfo> = self
            .0
            .data
            .lock()
            .instance_props
            .iter()
            .map(|p| PropertyInfo::from_def(&p.def, false))
            .collect();
        out.extend(self.0.class.properties().map(|p| PropertyInfo::from_def(p, true)));
        Ok(out)
    }
}
