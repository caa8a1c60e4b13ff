//! Types, classes and the type registry.
//!
//! A type is registered from a [`TypeInfo`] (name, parent, interfaces,
//! properties and hooks). Its class, the resolved view used by instances
//! ([`Class`]), is built lazily on first use, parent first, exactly once, as
//! QEMU's `type_initialize` does: inherited class properties are copied from
//! the parent class, the type's own are added, then its `class_init` hook runs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};

use parking_lot::{ReentrantMutex, RwLock};
use std::cell::Cell;

use crate::error::{Error, Result};
use crate::object::Object;
use crate::property::{PropertyDef, PropertyInfo, PropertyKind};
use crate::value::Value;

/// An instance hook: init, post-init, finalize, realize, unrealize or complete.
pub type InstanceHook = Arc<dyn Fn(&Object) -> Result<()> + Send + Sync>;
/// A class initialisation hook; it may add class properties and change defaults.
pub type ClassInitHook = Arc<dyn Fn(&mut ClassBuilder<'_>) -> Result<()> + Send + Sync>;
/// Decides whether a user-creatable object may be deleted (`object-del`).
pub type CanDeleteHook = Arc<dyn Fn(&Object) -> bool + Send + Sync>;

/// Name of the root type of every object.
pub const TYPE_OBJECT: &str = "object";
/// Name of the root of every interface.
pub const TYPE_INTERFACE: &str = "interface";
/// A plain object that only holds children (`/machine/peripheral`...).
pub const TYPE_CONTAINER: &str = "container";
/// The abstract base of devices: the `realized` lifecycle.
pub const TYPE_DEVICE: &str = "device";
/// The abstract base of machines.
pub const TYPE_MACHINE: &str = "machine";
/// Interface: at most one realized or completed instance at a time.
pub const TYPE_SINGLETON: &str = "singleton";
/// Interface: creatable by users (`object-add`), with a `complete` step.
pub const TYPE_USER_CREATABLE: &str = "user-creatable";

/// Everything needed to register a type.
///
/// ```
/// use vmkit_qom::{TypeInfo, PropertyDef, PropertyKind, TYPE_DEVICE};
/// TypeInfo::new("doc-example-dev")
///     .parent(TYPE_DEVICE)
///     .class_property(PropertyDef::new("irq", PropertyKind::uint(8)).default(5u64))
///     .register()
///     .unwrap();
/// let dev = vmkit_qom::Object::new("doc-example-dev").unwrap();
/// assert_eq!(dev.get("irq").unwrap(), vmkit_qom::Value::UInt(5));
/// ```
#[derive(Clone, Default)]
pub struct TypeInfo {
    pub(crate) name: String,
    pub(crate) parent: Option<String>,
    pub(crate) is_abstract: bool,
    pub(crate) is_interface: bool,
    pub(crate) interfaces: Vec<String>,
    pub(crate) description: Option<String>,
    pub(crate) class_properties: Vec<PropertyDef>,
    pub(crate) instance_properties: Vec<PropertyDef>,
    pub(crate) class_init: Option<ClassInitHook>,
    pub(crate) instance_init: Option<InstanceHook>,
    pub(crate) instance_post_init: Option<InstanceHook>,
    pub(crate) instance_finalize: Option<InstanceHook>,
    pub(crate) realize: Option<InstanceHook>,
    pub(crate) unrealize: Option<InstanceHook>,
    pub(crate) complete: Option<InstanceHook>,
    pub(crate) can_be_deleted: Option<CanDeleteHook>,
    pub(crate) reset: Option<InstanceHook>,
    pub(crate) unplug: Option<InstanceHook>,
}

impl fmt::Debug for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeInfo")
            .field("name", &self.name)
            .field("parent", &self.parent)
            .field("abstract", &self.is_abstract)
            .field("interfaces", &self.interfaces)
            .finish_non_exhaustive()
    }
}

impl TypeInfo {
    /// A type named `name`, child of `object` unless [`TypeInfo::parent`] says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        TypeInfo {
            name: name.into(),
            ..Default::default()
        }
    }

    /// An interface type (abstract, no instance state or hooks).
    pub fn interface(name: impl Into<String>) -> Self {
        TypeInfo {
            name: name.into(),
            parent: Some(TYPE_INTERFACE.into()),
            is_abstract: true,
            is_interface: true,
            ..Default::default()
        }
    }

    /// Sets the parent type.
    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }
    /// Makes the type abstract.
    pub fn abstract_type(mut self, is_abstract: bool) -> Self {
        self.is_abstract = is_abstract;
        self
    }
    /// Declares an implemented interface.
    pub fn implements(mut self, interface: impl Into<String>) -> Self {
        self.interfaces.push(interface.into());
        self
    }
    /// Sets the description shown by `qom-list-types`-style listings.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }
    /// Declares a class property (present on every instance of this type and its subtypes).
    pub fn class_property(mut self, def: PropertyDef) -> Self {
        self.class_properties.push(def);
        self
    }
    /// Declares an instance property, added to each new instance before this type's `instance_init`.
    pub fn instance_property(mut self, def: PropertyDef) -> Self {
        self.instance_properties.push(def);
        self
    }
    /// Sets the class initialisation hook.
    pub fn class_init(mut self, hook: impl Fn(&mut ClassBuilder<'_>) -> Result<()> + Send + Sync + 'static) -> Self {
        self.class_init = Some(Arc::new(hook));
        self
    }
    /// Sets the instance initialisation hook (runs base type first).
    pub fn instance_init(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.instance_init = Some(Arc::new(hook));
        self
    }
    /// Sets the post-initialisation hook (runs most-derived type first).
    pub fn instance_post_init(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.instance_post_init = Some(Arc::new(hook));
        self
    }
    /// Sets the finalize hook (runs most-derived type first).
    pub fn instance_finalize(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.instance_finalize = Some(Arc::new(hook));
        self
    }
    /// Sets the realize hook of a device type (runs base type first).
    pub fn realize(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.realize = Some(Arc::new(hook));
        self
    }
    /// Sets the unrealize hook of a device type (runs most-derived type first).
    pub fn unrealize(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.unrealize = Some(Arc::new(hook));
        self
    }
    /// Sets the complete hook of a user-creatable type (runs base type first).
    pub fn complete(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.complete = Some(Arc::new(hook));
        self
    }
    /// Sets the hook deciding whether a user-creatable object may be deleted.
    pub fn can_be_deleted(mut self, hook: impl Fn(&Object) -> bool + Send + Sync + 'static) -> Self {
        self.can_be_deleted = Some(Arc::new(hook));
        self
    }
    /// Sets the reset hook of a device type (QEMU's device reset): run on
    /// a realized device by [`Object::reset`] and
    /// [`reset_tree`](crate::reset_tree), base type first.
    pub fn reset(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.reset = Some(Arc::new(hook));
        self
    }
    /// Sets the unplug hook of a device type: asked by
    /// [`device_del`](crate::device_del) before the device is unplugged,
    /// most-derived type first; an error refuses the unplug (QEMU's bus
    /// that does not support hot-plugging).
    pub fn unplug(mut self, hook: impl Fn(&Object) -> Result<()> + Send + Sync + 'static) -> Self {
        self.unplug = Some(Arc::new(hook));
        self
    }
    /// Replaces the hooks with already-shared ones (used by bindings).
    pub fn hooks(mut self, hooks: TypeHooks) -> Self {
        self.class_init = hooks.class_init.or(self.class_init);
        self.instance_init = hooks.instance_init.or(self.instance_init);
        self.instance_post_init = hooks.instance_post_init.or(self.instance_post_init);
        self.instance_finalize = hooks.instance_finalize.or(self.instance_finalize);
        self.realize = hooks.realize.or(self.realize);
        self.unrealize = hooks.unrealize.or(self.unrealize);
        self.complete = hooks.complete.or(self.complete);
        self.can_be_deleted = hooks.can_be_deleted.or(self.can_be_deleted);
        self.reset = hooks.reset.or(self.reset);
        self.unplug = hooks.unplug.or(self.unplug);
        self
    }

    /// Registers the type.
    ///
    /// Fails on a duplicate name, an unknown or interface parent, an unknown
    /// interface, or an interface that declares state or hooks.
    pub fn register(self) -> Result<TypeRef> {
        registry().register(self)
    }
}

/// Hooks supplied together (by bindings that build them from foreign callables).
#[derive(Clone, Default)]
#[allow(missing_docs)]
pub struct TypeHooks {
    pub class_init: Option<ClassInitHook>,
    pub instance_init: Option<InstanceHook>,
    pub instance_post_init: Option<InstanceHook>,
    pub instance_finalize: Option<InstanceHook>,
    pub realize: Option<InstanceHook>,
    pub unrealize: Option<InstanceHook>,
    pub complete: Option<InstanceHook>,
    pub can_be_deleted: Option<CanDeleteHook>,
    pub reset: Option<InstanceHook>,
    pub unplug: Option<InstanceHook>,
}

/// A registered type.
pub struct TypeImpl {
    pub(crate) info: TypeInfo,
    pub(crate) parent: Option<TypeRef>,
    /// Declared interfaces, resolved.
    pub(crate) interfaces: Vec<TypeRef>,
    class: OnceLock<Arc<Class>>,
    /// Serialises class building; the flag catches a `class_init` that asks for its own class.
    class_init_lock: ReentrantMutex<Cell<bool>>,
}

/// A shared handle to a registered type.
pub type TypeRef = Arc<TypeImpl>;

impl fmt::Debug for TypeImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypeImpl({})", self.info.name)
    }
}

impl TypeImpl {
    /// The type's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
    /// The parent type, if any.
    pub fn parent(&self) -> Option<&TypeRef> {
        self.parent.as_ref()
    }
    /// Whether the type is abstract (interfaces always are).
    pub fn is_abstract(&self) -> bool {
        self.info.is_abstract
    }
    /// Whether this is an interface type.
    pub fn is_interface(&self) -> bool {
        self.info.is_interface
    }
    /// The description given at registration.
    pub fn description(&self) -> Option<&str> {
        self.info.description.as_deref()
    }
    /// The interfaces this type declares itself (not inherited).
    pub fn declared_interfaces(&self) -> impl Iterator<Item = &str> {
        self.interfaces.iter().map(|i| i.name())
    }

    /// The ancestors, starting with this type and ending with the root.
    pub fn ancestors(self: &Arc<Self>) -> impl Iterator<Item = &TypeRef> {
        std::iter::successors(Some(self), |t| t.parent.as_ref())
    }

    /// Whether this type is `name`, derives from it, or implements it as an interface.
    pub fn is_a(self: &Arc<Self>, name: &str) -> bool {
        self.ancestors()
            .any(|t| t.info.name == name || t.interfaces.iter().any(|i| i.is_a(name)))
    }

    /// The class, built on first use.
    pub fn class(self: &Arc<Self>) -> Result<Arc<Class>> {
        if let Some(c) = self.class.get() {
            return Ok(c.clone());
        }
        let parent_class = match &self.parent {
            Some(p) => Some(p.class()?),
            None => None,
        };
        let guard = self.class_init_lock.lock();
        if let Some(c) = self.class.get() {
            return Ok(c.clone());
        }
        if guard.replace(true) {
            return Err(Error::TypeRegistration {
                name: self.info.name.clone(),
                reason: "class_init asked for the class it is initialising".into(),
            });
        }
        let built = Class::build(self, parent_class.as_deref());
        guard.set(false);
        let class = Arc::new(built?);
        let _ = self.class.set(class.clone());
        Ok(class)
    }
}

/// The resolved, per-type view that instances use: every class property
/// (inherited ones included), the hook chains in run order, and the
/// lifecycle facts derived from the ancestry.
pub struct Class {
    pub(crate) ty: TypeRef,
    /// Class properties, root type's first.
    pub(crate) properties: Vec<Arc<PropertyDef>>,
    pub(crate) property_index: HashMap<Arc<str>, usize>,
    /// Slot in the object's value table of each stored class property (by property index).
    pub(crate) slots: Vec<Option<usize>>,
    /// Per-type instance properties and hooks, root type first (index = level).
    pub(crate) levels: Vec<Level>,
    pub(crate) can_be_deleted: Option<CanDeleteHook>,
    pub(crate) is_device: bool,
    pub(crate) is_user_creatable: bool,
    /// The type that declares the singleton interface, if any ancestor does.
    pub(crate) singleton_type: Option<TypeRef>,
    /// Names of every ancestor type and every implemented interface (and their ancestors).
    pub(crate) is_a_names: HashSet<String>,
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Class({})", self.ty.name())
    }
}

impl Class {
    fn build(ty: &TypeRef, parent: Option<&Class>) -> Result<Class> {
        let mut properties: Vec<Arc<PropertyDef>> = parent.map(|p| p.properties.clone()).unwrap_or_default();
        let mut builder = ClassBuilder {
            type_name: &ty.info.name,
            properties: &mut properties,
        };
        for def in &ty.info.class_properties {
            builder.add_property(def.clone())?;
        }
        if let Some(hook) = &ty.info.class_init {
            hook(&mut builder)?;
        }
        let mut property_index = HashMap::with_capacity(properties.len());
        let mut slots = Vec::with_capacity(properties.len());
        let mut next_slot = 0;
        for (i, p) in properties.iter().enumerate() {
            property_index.insert(p.name.clone(), i);
            if p.is_stored() {
                slots.push(Some(next_slot));
                next_slot += 1;
            } else {
                slots.push(None);
            }
        }

        let lineage: Vec<&TypeRef> = {
            let mut v: Vec<&TypeRef> = ty.ancestors().collect();
            v.reverse();
            v
        };
        let levels = lineage
            .iter()
            .map(|t| Level {
                instance_properties: t.info.instance_properties.iter().cloned().map(Arc::new).collect(),
                instance_init: t.info.instance_init.clone(),
                instance_post_init: t.info.instance_post_init.clone(),
                instance_finalize: t.info.instance_finalize.clone(),
                realize: t.info.realize.clone(),
                unrealize: t.info.unrealize.clone(),
                complete: t.info.complete.clone(),
                reset: t.info.reset.clone(),
                unplug: t.info.unplug.clone(),
            })
            .collect();

        let mut interface_names: HashSet<String> = lineage.iter().map(|t| t.info.name.clone()).collect();
        let mut singleton_type = None;
        for t in &lineage {
            for i in &t.interfaces {
                for a in i.ancestors() {
                    interface_names.insert(a.info.name.clone());
                }
                if singleton_type.is_none() && i.is_a(TYPE_SINGLETON) {
                    singleton_type = Some((*t).clone());
                }
            }
        }
        Ok(Class {
            ty: ty.clone(),
            property_index,
            slots,
            properties,
            levels,
            can_be_deleted: lineage.iter().rev().find_map(|t| t.info.can_be_deleted.clone()),
            is_device: ty.is_a(TYPE_DEVICE),
            is_user_creatable: interface_names.contains(TYPE_USER_CREATABLE),
            singleton_type,
            is_a_names: interface_names,
        })
    }

    /// The type this class belongs to.
    pub fn type_ref(&self) -> &TypeRef {
        &self.ty
    }

    /// Looks up a class property.
    pub fn property(&self, name: &str) -> Option<&Arc<PropertyDef>> {
        self.property_index.get(name).map(|&i| &self.properties[i])
    }

    /// The class properties, most-derived type's first (the order introspection lists them in).
    pub fn properties(&self) -> impl Iterator<Item = &Arc<PropertyDef>> {
        self.properties.iter().rev()
    }

    /// Whether instances are of type `name`, derive from it or implement it.
    pub fn is_a(&self, name: &str) -> bool {
        self.is_a_names.contains(name)
    }

    /// Whether instances are devices (have the `realized` lifecycle).
    pub fn is_device(&self) -> bool {
        self.is_device
    }

    /// Whether instances are user-creatable (have the `complete` step).
    pub fn is_user_creatable(&self) -> bool {
        self.is_user_creatable
    }

    /// The type declaring the singleton interface, if instances are singletons.
    pub fn singleton_type(&self) -> Option<&TypeRef> {
        self.singleton_type.as_ref()
    }
}

/// One type's contribution to its instances: what `instance_init` adds and the hooks.
#[derive(Clone)]
pub(crate) struct Level {
    pub(crate) instance_properties: Vec<Arc<PropertyDef>>,
    pub(crate) instance_init: Option<InstanceHook>,
    pub(crate) instance_post_init: Option<InstanceHook>,
    pub(crate) instance_finalize: Option<InstanceHook>,
    pub(crate) realize: Option<InstanceHook>,
    pub(crate) unrealize: Option<InstanceHook>,
    pub(crate) complete: Option<InstanceHook>,
    pub(crate) reset: Option<InstanceHook>,
    pub(crate) unplug: Option<InstanceHook>,
}

/// Lets a `class_init` hook add class properties and override inherited defaults.
pub struct ClassBuilder<'a> {
    type_name: &'a str,
    properties: &'a mut Vec<Arc<PropertyDef>>,
}

impl ClassBuilder<'_> {
    /// The name of the type being initialised.
    pub fn type_name(&self) -> &str {
        self.type_name
    }

    /// Adds a class property; its default is checked against its kind.
    pub fn add_property(&mut self, def: PropertyDef) -> Result<()> {
        if self.properties.iter().any(|p| p.name == def.name) {
            return Err(Error::DuplicateProperty {
                object: format!("type '{}'", self.type_name),
                name: def.name.to_string(),
            });
        }
        let def = check_default(def, self.type_name)?;
        self.properties.push(Arc::new(def));
        Ok(())
    }

    /// Changes the default of a (possibly inherited) stored class property.
    pub fn set_default(&mut self, name: &str, value: Value) -> Result<()> {
        let type_name = self.type_name;
        let slot = self
            .properties
            .iter_mut()
            .find(|p| &*p.name == name)
            .ok_or_else(|| Error::PropertyNotFound {
                object: format!("type '{type_name}'"),
                name: name.to_string(),
            })?;
        let mut def = (**slot).clone();
        def.default = Some(value);
        *slot = Arc::new(check_default(def, type_name)?);
        Ok(())
    }
}

/// Validates (and normalises, e.g. `"64K"` to 65536) a property's default.
pub(crate) fn check_default(mut def: PropertyDef, type_name: &str) -> Result<PropertyDef> {
    if let Some(v) = def.default.take() {
        let descr = || format!("type '{type_name}'");
        let ctx = crate::property::PropCtx {
            name: &def.name,
            object: &descr,
        };
        def.default = Some(def.kind.coerce(v, &ctx)?);
    }
    if let PropertyKind::Enum { values, .. } = &def.kind {
        if values.is_empty() {
            return Err(Error::TypeRegistration {
                name: type_name.into(),
                reason: format!("enum property '{}' has no members", def.name),
            });
        }
    }
    Ok(def)
}

/// Summary of a type for listings (`qom-list-types`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSummary {
    /// The name.
    pub name: String,
    /// The parent's name.
    pub parent: Option<String>,
    /// Whether it is abstract.
    pub is_abstract: bool,
    /// Whether it is an interface.
    pub is_interface: bool,
    /// The description, if any.
    pub description: Option<String>,
}

/// The process-wide type registry.
pub struct Registry {
    types: RwLock<HashMap<String, TypeRef>>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let r = Registry {
        types: RwLock::new(HashMap::new()),
    };
    crate::builtin::register_builtin_types(&r);
    r
});

/// The process-wide type registry (with the built-in types registered).
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    pub(crate) fn register(&self, info: TypeInfo) -> Result<TypeRef> {
        let fail = |reason: String| Error::TypeRegistration {
            name: info.name.clone(),
            reason,
        };
        if info.name.is_empty() || info.name.contains(['/', '<', '>']) || info.name.trim() != info.name {
            return Err(fail(
                "a type name must be non-empty and contain no '/', '<', '>' or surrounding spaces".into(),
            ));
        }
        let mut types = self.types.write();
        if types.contains_key(&info.name) {
            return Err(fail("a type of that name is already registered".into()));
        }
        let parent_name = info
            .parent
            .clone()
            .or_else(|| (info.name != TYPE_OBJECT && info.name != TYPE_INTERFACE).then(|| TYPE_OBJECT.into()));
        let parent = match &parent_name {
            Some(p) => Some(
                types
                    .get(p)
                    .cloned()
                    .ok_or_else(|| fail(format!("parent type '{p}' is not registered")))?,
            ),
            None => None,
        };
        if let Some(p) = &parent {
            if p.is_interface() != info.is_interface {
                return Err(fail(format!(
                    "parent '{}' is {}an interface but this type is {}",
                    p.name(),
                    if p.is_interface() { "" } else { "not " },
                    if info.is_interface { "one" } else { "not" }
                )));
            }
        }
        if info.is_interface
            && (!info.instance_properties.is_empty()
                || info.instance_init.is_some()
                || info.instance_post_init.is_some()
                || info.instance_finalize.is_some()
                || info.realize.is_some()
                || info.unrealize.is_some()
                || info.complete.is_some()
                || info.can_be_deleted.is_some()
                || !info.interfaces.is_empty())
        {
            return Err(fail(
                "an interface cannot have instance properties, instance hooks or interfaces of its own".into(),
            ));
        }
        let mut interfaces = Vec::with_capacity(info.interfaces.len());
        for name in &info.interfaces {
            let i = types
                .get(name)
                .cloned()
                .ok_or_else(|| fail(format!("interface '{name}' is not registered")))?;
            if !i.is_interface() {
                return Err(fail(format!("'{name}' is not an interface")));
            }
            interfaces.push(i);
        }
        let mut info = info;
        if info.is_interface {
            info.is_abstract = true;
        }
        for def in info
            .class_properties
            .iter_mut()
            .chain(info.instance_properties.iter_mut())
        {
            *def = check_default(def.clone(), &info.name)?;
        }
        let ty = Arc::new(TypeImpl {
            info,
            parent,
            interfaces,
            class: OnceLock::new(),
            class_init_lock: ReentrantMutex::new(Cell::new(false)),
        });
        types.insert(ty.info.name.clone(), ty.clone());
        Ok(ty)
    }

    /// Looks a type up by name.
    pub fn lookup(&self, name: &str) -> Result<TypeRef> {
        self.types
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TypeNotFound(name.to_string()))
    }

    /// Lists types, optionally only those that are or implement `implements`, sorted by name.
    pub fn list(&self, implements: Option<&str>, include_abstract: bool) -> Vec<TypeSummary> {
        let types = self.types.read();
        let mut out: Vec<TypeSummary> = types
            .values()
            .filter(|t| include_abstract || !t.is_abstract())
            .filter(|t| implements.is_none_or(|i| t.is_a(i)))
            .map(|t| TypeSummary {
                name: t.info.name.clone(),
                parent: t.parent.as_ref().map(|p| p.info.name.clone()),
                is_abstract: t.is_abstract(),
                is_interface: t.is_interface(),
                description: t.info.description.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Looks a type up by name in the process-wide registry.
pub fn lookup_type(name: &str) -> Result<TypeRef> {
    registry().lookup(name)
}

/// Lists registered types (see [`Registry::list`]).
pub fn list_types(implements: Option<&str>, include_abstract: bool) -> Vec<TypeSummary> {
    registry().list(implements, include_abstract)
}

/// Properties of a type, as `qom-list-properties` reports them.
///
/// An abstract type lists its class properties. Any other type is instantiated
/// temporarily, so properties its instances add in `instance_init` are listed
/// too; the temporary object is dropped before returning, which by principle 2
/// changes nothing else.
pub fn type_properties(name: &str) -> Result<Vec<PropertyInfo>> {
    let ty = lookup_type(name)?;
    if ty.is_abstract() {
        let class = ty.class()?;
        return Ok(class.properties().map(|p| PropertyInfo::from_def(p, true)).collect());
    }
    let obj = Object::new_of(&ty)?;
    obj.property_infos()
}

/// Properties of a device type, as `device-list-properties` reports them:
/// lifecycle properties (`type`, `realized`, `hotpluggable`, `hotplugged`,
/// `parent_bus`) and `legacy-*` ones are left out.
pub fn device_type_properties(name: &str) -> Result<Vec<PropertyInfo>> {
    let ty = lookup_type(name)?;
    if !ty.is_a(TYPE_DEVICE) {
        return Err(Error::WrongType {
            type_name: name.to_string(),
            expected: TYPE_DEVICE.to_string(),
        });
    }
    if ty.is_abstract() {
        return Err(Error::AbstractType(name.to_string()));
    }
    const HIDDEN: [&str; 5] = ["type", "realized", "hotpluggable", "hotplugged", "parent_bus"];
    Ok(type_properties(name)?
        .into_iter()
        .filter(|p| !HIDDEN.contains(&p.name.as_str()) && !p.name.starts_with("legacy-"))
        .collect())
}
