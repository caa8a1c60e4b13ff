//! The lifecycle: initialisation, realize/unrealize (devices), complete
//! (user-creatable objects), singletons, and finalization.
//!
//! Hooks are always called with no object lock held, so a hook may use the
//! object (and others) freely.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{LazyLock, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::object::{InstanceProp, Object, ObjectInner, Phase, Slot};
use crate::owned_ref::ObjectRef;
use crate::stats;

/// Active instance of each singleton type, keyed by the type declaring the interface.
static SINGLETONS: LazyLock<Mutex<HashMap<String, Weak<ObjectInner>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Runs the init chain of a freshly allocated object: per type, root first,
/// its instance properties are added and its `instance_init` runs; then the
/// `instance_post_init` hooks run, most-derived first. On failure the object
/// is finalized (only the levels that were initialised see `instance_finalize`).
pub(crate) fn initialize(obj: ObjectRef) -> Result<ObjectRef> {
    let class = obj.class().clone();
    for level in &class.levels {
        for def in &level.instance_properties {
            let slot = match def.kind {
                crate::property::PropertyKind::Link { .. } => Slot::Link(None),
                _ => Slot::Value(def.initial_value()),
            };
            obj.insert_instance_prop(InstanceProp { def: def.clone(), slot })?;
        }
        if let Some(hook) = &level.instance_init {
            hook(&obj)?;
        }
        obj.0.data.lock().inited_levels += 1;
    }
    for level in class.levels.iter().rev() {
        if let Some(hook) = &level.instance_post_init {
            hook(&obj)?;
        }
    }
    Ok(obj)
}

/// Called when the last reference is dropped. Runs exactly once per object:
/// a count that reached zero can never be raised again (see `Object::try_ref`).
pub(crate) fn finalize(obj: &Object) {
    obj.set_phase(Phase::Finalizing);
    let inited = obj.0.data.lock().inited_levels;
    if obj.is_realized() {
        // Unrealize cannot be vetoed; an error here has nobody to report to.
        let _ = unrealize_inner(obj);
    }
    // Release properties as QEMU does before instance_finalize: children are
    // unparented (and unrealized), strong links drop their reference.
    let (children, links) = {
        let mut d = obj.0.data.lock();
        let props = std::mem::take(&mut d.instance_props);
        let mut children = Vec::new();
        let mut links = Vec::new();
        let mut kept = Vec::new();
        for p in props {
            match p.slot {
                Slot::Child(c) => children.push(c),
                Slot::Link(l) => links.push(l),
                Slot::Value(_) => kept.push(p),
            }
        }
        d.instance_props = kept;
        for s in d.slots.iter_mut() {
            if let Slot::Link(l) = s {
                links.push(l.take());
            }
        }
        (children, links)
    };
    drop(links);
    for child in children {
        detach_child(&child);
        drop(child);
    }
    let class = obj.class().clone();
    for level in class.levels[..inited.min(class.levels.len())].iter().rev() {
        if let Some(hook) = &level.instance_finalize {
            let _ = hook(obj);
        }
    }
    release_singleton(obj);
    obj.set_phase(Phase::Finalized);
    stats::object_finalized();
    obj.0.storage.release();
}

/// Clears a child's parent edge and unrealizes it (QEMU's `unparent` class hook).
pub(crate) fn detach_child(child: &Object) {
    child.0.data.lock().parent = None;
    if child.is_realized() {
        let _ = unrealize_inner(child);
    }
}

fn claim_singleton(obj: &Object) -> Result<bool> {
    let Some(st) = obj.class().singleton_type() else {
        return Ok(false);
    };
    let mut table = SINGLETONS.lock();
    if let Some(existing) = table.get(st.name()).and_then(Weak::upgrade).map(Object) {
        if existing != *obj && existing.phase() != Phase::Finalized {
            drop(table);
            return Err(Error::Singleton {
                type_name: obj.type_name().to_string(),
                singleton_type: st.name().to_string(),
                existing: existing.canonical_path().unwrap_or_else(|| existing.describe()),
            });
        }
    }
    table.insert(st.name().to_string(), std::sync::Arc::downgrade(&obj.0));
    Ok(true)
}

fn release_singleton(obj: &Object) {
    let Some(st) = obj.class().singleton_type() else {
        return;
    };
    let mut table = SINGLETONS.lock();
    if table
        .get(st.name())
        .and_then(Weak::upgrade)
        .is_some_and(|o| std::sync::Arc::ptr_eq(&o, &obj.0))
    {
        table.remove(st.name());
    }
}

/// The active instance of the singleton type `type_name` (or of the singleton
/// type it derives from), if one is realized or completed.
pub fn singleton_instance(type_name: &str) -> Result<Option<Object>> {
    let ty = crate::type_info::lookup_type(type_name)?;
    let class = ty.class()?;
    let Some(st) = class.singleton_type() else {
        return Err(Error::WrongType {
            type_name: type_name.to_string(),
            expected: crate::TYPE_SINGLETON.to_string(),
        });
    };
    Ok(SINGLETONS.lock().get(st.name()).and_then(Weak::upgrade).map(Object))
}

impl Object {
    /// Whether the device is realized.
    pub fn is_realized(&self) -> bool {
        self.0.realized.load(Ordering::Acquire)
    }

    /// Whether the user-creatable object is completed.
    pub fn is_completed(&self) -> bool {
        self.0.data.lock().completed
    }

    /// Realizes a device (`realized = true`).
    ///
    /// A singleton is refused while another instance is active. A device with
    /// no parent is placed under `/machine/unattached` when a machine exists.
    /// Realize hooks run base type first; if one fails, the hooks of the levels
    /// already realized are undone with their unrealize hooks and everything
    /// else is rolled back. A hot-plugged device is then reset (its reset
    /// hooks, base type first), as QEMU resets a device it plugs at run time. Realizing a realized device does nothing; realizing
    /// again after unrealize works.
    pub fn realize(&self) -> Result<()> {
        self.check_live("realize")?;
        if !self.class().is_device() {
            return Err(Error::Lifecycle {
                object: self.describe(),
                reason: "only devices can be realized".into(),
            });
        }
        let _transition = Transition::begin(self, "realize")?;
        if self.is_realized() {
            return Ok(());
        }
        let claimed = claim_singleton(self)?;
        let attached = self.parent().is_none() && crate::tree::attach_unattached(self);
        let class = self.class().clone();
        let undo = |done: usize| {
            for level in class.levels[..done].iter().rev() {
                if let Some(u) = &level.unrealize {
                    let _ = u(self);
                }
            }
            if claimed {
                release_singleton(self);
            }
            if attached {
                let _ = self.unparent();
            }
        };
        for (level_idx, level) in class.levels.iter().enumerate() {
            let Some(hook) = &level.realize else { continue };
            if let Err(e) = hook(self) {
                undo(level_idx);
                return Err(e);
            }
        }
        // QEMU resets a hot-plugged device before it is published realized.
        if self.is_hotplugged() {
            for level in &class.levels {
                if let Some(hook) = &level.reset {
                    if let Err(e) = hook(self) {
                        undo(class.levels.len());
                        return Err(e);
                    }
                }
            }
        }
        self.0.realized.store(true, Ordering::Release);
        Ok(())
    }

    /// Unrealizes a device (`realized = false`). Unrealize hooks run most-derived
    /// type first and cannot veto: the device ends unrealized and its singleton
    /// slot free; the first hook error, if any, is returned.
    pub fn unrealize(&self) -> Result<()> {
        self.check_not_finalized("unrealize")?;
        if !self.class().is_device() {
            return Err(Error::Lifecycle {
                object: self.describe(),
                reason: "only devices can be unrealized".into(),
            });
        }
        let _transition = Transition::begin(self, "unrealize")?;
        unrealize_inner(self)
    }

    /// Completes a user-creatable object (the second phase of `object-add`).
    pub fn complete(&self) -> Result<()> {
        self.check_live("complete")?;
        if !self.class().is_user_creatable() {
            return Err(Error::Lifecycle {
                object: self.describe(),
                reason: "only user-creatable objects can be completed".into(),
            });
        }
        let _transition = Transition::begin(self, "complete")?;
        if self.is_completed() {
            return Err(Error::Lifecycle {
                object: self.describe(),
                reason: "already completed".into(),
            });
        }
        let claimed = claim_singleton(self)?;
        let class = self.class().clone();
        for level in &class.levels {
            if let Some(hook) = &level.complete {
                if let Err(e) = hook(self) {
                    if claimed {
                        release_singleton(self);
                    }
                    return Err(e);
                }
            }
        }
        self.0.data.lock().completed = true;
        Ok(())
    }

    /// Resets a realized device (QEMU's device reset): its reset hooks run,
    /// base type first; the first error stops them. An unrealized device
    /// (or a non-device) has nothing to reset.
    pub fn reset(&self) -> Result<()> {
        self.check_live("reset")?;
        if !self.class().is_device() || !self.is_realized() {
            return Ok(());
        }
        let class = self.class().clone();
        for level in &class.levels {
            if let Some(hook) = &level.reset {
                hook(self)?;
            }
        }
        Ok(())
    }

    /// Asks a device's unplug hooks whether it may be unplugged now,
    /// most-derived type first: the first refusal is returned.
    pub fn check_unplug(&self) -> Result<()> {
        self.check_live("unplug")?;
        let class = self.class().clone();
        for level in class.levels.iter().rev() {
            if let Some(hook) = &level.unplug {
                hook(self)?;
            }
        }
        Ok(())
    }

    /// Whether a user-creatable object may be deleted now (its `can_be_deleted` hook).
    pub fn can_be_deleted(&self) -> bool {
        self.class().can_be_deleted.as_ref().is_none_or(|h| h(self))
    }
}

/// Marks a realize, unrealize or complete as running, so that a second one
/// (from another thread, or from the hooks of the first) is refused instead of
/// running the hooks twice.
struct Transition<'a>(&'a Object);

impl<'a> Transition<'a> {
    fn begin(obj: &'a Object, what: &str) -> Result<Self> {
        let busy = std::mem::replace(&mut obj.0.data.lock().in_transition, true);
        if busy {
            return Err(Error::Lifecycle {
                object: obj.describe(),
                reason: format!("cannot {what}: a realize, unrealize or complete is already in progress"),
            });
        }
        Ok(Transition(obj))
    }
}

impl Drop for Transition<'_> {
    fn drop(&mut self) {
        self.0.0.data.lock().in_transition = false;
    }
}

fn unrealize_inner(obj: &Object) -> Result<()> {
    // Published first, as QEMU does: hooks see an unrealized device. The swap
    // makes exactly one caller run the hooks.
    if !obj.0.realized.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    let class = obj.class().clone();
    let mut first_err = None;
    for level in class.levels.iter().rev() {
        if let Some(hook) = &level.unrealize {
            if let Err(e) = hook(obj) {
                first_err.get_or_insert(e);
            }
        }
    }
    release_singleton(obj);
    first_err.map_or(Ok(()), Err)
}

/// Resets every realized device of the subtree at `root` (QEMU's system
/// reset of the devices): children before their parent, siblings in name
/// order, so a machine built alike resets alike. Every device is reset;
/// the first error is returned.
pub fn reset_tree(root: &Object) -> Result<()> {
    let mut first_err = None;
    reset_subtree(root, &mut first_err);
    first_err.map_or(Ok(()), Err)
}

fn reset_subtree(obj: &Object, first_err: &mut Option<Error>) {
    let mut children = obj.children();
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, child) in children {
        reset_subtree(&child, first_err);
    }
    if let Err(e) = obj.reset() {
        first_err.get_or_insert(e);
    }
}
