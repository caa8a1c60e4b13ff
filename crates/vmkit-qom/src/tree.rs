//! The composition tree: `child<>` edges, canonical paths, path resolution
//! and the `info qom-tree` dump.
//!
//! The root `/` holds `/objects` (user-created objects), `/chardevs` and
//! `/backend`; a machine, once created, lives at `/machine` with its
//! `peripheral`, `peripheral-anon` and `unattached` containers.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, PathError, Result};
use crate::object::{InstanceProp, Object, ParentEdge, Slot};
use crate::owned_ref::ObjectRef;
use crate::property::{PropertyDef, PropertyKind};
use crate::type_info::TYPE_CONTAINER;

/// The root, built on first use (by [`root`]; looking up a path does not build it).
static ROOT: OnceLock<Result<ObjectRef, String>> = OnceLock::new();

fn build_root() -> Result<ObjectRef, String> {
    let build = || -> Result<ObjectRef> {
        let root = Object::new(TYPE_CONTAINER)?;
        for name in ["objects", "chardevs", "backend"] {
            let c = Object::new(TYPE_CONTAINER)?;
            root.add_child(name, &c)?;
        }
        Ok(root)
    };
    build().map_err(|e| e.to_string())
}

/// The root of the composition tree (`/`).
pub fn root() -> Object {
    match ROOT.get_or_init(build_root) {
        Ok(r) => r.handle(),
        // The built-in types always register, so this cannot happen; abort
        // loudly rather than hand out a half-built tree.
        Err(e) => panic!("vmkit-qom: the root container could not be built: {e}"),
    }
}

/// Checks a child or id name: non-empty, no `/`, and (for auto-numbering) `[*]` only at the end.
pub(crate) fn check_child_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Error::Path(PathError::Invalid {
            path: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return Err(bad("a child name cannot be empty"));
    }
    if name.contains('/') {
        return Err(bad("a child name cannot contain '/'"));
    }
    if name.contains("[*]") && !name.ends_with("[*]") {
        return Err(bad("'[*]' may only end a child name"));
    }
    Ok(())
}

impl Object {
    /// Adds `child` as `child<>` property `name` of this object, taking a
    /// reference on it. A name ending in `[*]` is numbered: `device[0]`,
    /// `device[1]`... Returns the name used.
    pub fn add_child(&self, name: &str, child: &Object) -> Result<String> {
        check_child_name(name)?;
        self.check_live("adding a child")?;
        if child == self {
            return Err(Error::Lifecycle {
                object: self.describe(),
                reason: "an object cannot be its own child".into(),
            });
        }
        let owned = child.try_ref()?;
        // A cycle would keep every object in it alive forever.
        let mut up = Some(self.clone());
        while let Some(o) = up {
            if o == *child {
                return Err(Error::Lifecycle {
                    object: child.describe(),
                    reason: format!("adding it under {} would make a cycle", self.describe()),
                });
            }
            up = o.parent();
        }
        {
            let mut cd = child.0.data.lock();
            if cd.parent.is_some() {
                drop(cd);
                let parent = child.parent().map(|p| p.describe()).unwrap_or_default();
                return Err(Error::Lifecycle {
                    object: child.describe(),
                    reason: format!("it already has a parent ({parent})"),
                });
            }
            // Claimed now so a concurrent add_child of the same child fails.
            cd.parent = Some(ParentEdge {
                obj: Arc::downgrade(&self.0),
                name: Arc::from(""),
            });
        }
        let def = PropertyDef::new(
            name,
            PropertyKind::Child {
                type_name: Arc::from(child.type_name()),
            },
        );
        let result = {
            let mut d = self.0.data.lock();
            // Checked again under the lock: finalization takes the children
            // under it after publishing `Finalizing`, so a child added after
            // that would never be dropped.
            let live = self.phase() == crate::object::Phase::Live;
            let taken = |n: &str| {
                self.0.class.property_index.contains_key(n) || d.instance_props.iter().any(|p| &*p.def.name == n)
            };
            let final_name = match name.strip_suffix("[*]") {
                Some(base) => (0u64..).map(|i| format!("{base}[{i}]")).find(|n| !taken(n)),
                None => (!taken(name)).then(|| name.to_string()),
            };
            match final_name {
                _ if !live => Err((owned, false)),
                Some(n) => {
                    let mut def = def;
                    def.name = Arc::from(n.as_str());
                    d.instance_props.push(InstanceProp {
                        def: Arc::new(def),
                        slot: Slot::Child(owned),
                    });
                    Ok(n)
                }
                None => Err((owned, true)),
            }
        };
        match result {
            Ok(n) => {
                if let Some(edge) = child.0.data.lock().parent.as_mut() {
                    edge.name = Arc::from(n.as_str());
                }
                Ok(n)
            }
            Err((owned, live)) => {
                child.0.data.lock().parent = None;
                drop(owned);
                if !live {
                    return Err(self.finalized_error("adding a child"));
                }
                Err(Error::DuplicateProperty {
                    object: self.describe(),
                    name: name.to_string(),
                })
            }
        }
    }

    /// Removes the object from its parent (QEMU's `object_unparent`): a device
    /// is unrealized first, then the parent's reference is dropped, which
    /// finalizes the object unless someone else holds one. Does nothing for a
    /// parentless object.
    pub fn unparent(&self) -> Result<()> {
        let Some(parent) = self.parent() else {
            return Ok(());
        };
        if self.is_realized() {
            // As for device_del: the device ends unrealized even if a hook complained.
            let _ = self.unrealize();
        }
        let name = match &self.0.data.lock().parent {
            Some(edge) => edge.name.clone(),
            None => return Ok(()),
        };
        let removed = {
            let mut pd = parent.0.data.lock();
            let pos = pd
                .instance_props
                .iter()
                .position(|p| p.def.name == name && matches!(&p.slot, Slot::Child(c) if **c == *self));
            pos.map(|i| pd.instance_props.remove(i))
        };
        if let Some(prop) = removed {
            crate::lifecycle::detach_child(self);
            drop(prop);
        }
        Ok(())
    }

    /// The parent object, if the object is in the tree (or under a detached parent).
    pub fn parent(&self) -> Option<Object> {
        self.0
            .data
            .lock()
            .parent
            .as_ref()
            .and_then(|e| e.obj.upgrade())
            .map(Object)
    }

    /// The name of this object in its parent.
    pub fn name_in_parent(&self) -> Option<String> {
        self.0.data.lock().parent.as_ref().map(|e| e.name.to_string())
    }

    /// The children, in the order they were added.
    pub fn children(&self) -> Vec<(String, Object)> {
        self.0
            .data
            .lock()
            .instance_props
            .iter()
            .filter_map(|p| match &p.slot {
                Slot::Child(c) => Some((p.def.name.to_string(), c.handle())),
                _ => None,
            })
            .collect()
    }

    /// The child called `name`.
    pub fn child(&self, name: &str) -> Option<Object> {
        self.0.data.lock().instance_props.iter().find_map(|p| match &p.slot {
            Slot::Child(c) if &*p.def.name == name => Some(c.handle()),
            _ => None,
        })
    }

    /// The canonical path (`/machine/peripheral/net0`), or `None` when the
    /// object is not attached below the root.
    pub fn canonical_path(&self) -> Option<String> {
        // Before the tree exists nothing is attached below its root; naming
        // an object (in an error, say) does not build it.
        let root = match ROOT.get() {
            Some(Ok(r)) => r.handle(),
            _ => return None,
        };
        if *self == root {
            return Some("/".into());
        }
        let mut parts = Vec::new();
        let mut cur = self.clone();
        loop {
            let (name, parent) = {
                let d = cur.0.data.lock();
                let edge = d.parent.as_ref()?;
                (edge.name.clone(), edge.obj.upgrade()?)
            };
            parts.push(name);
            let parent = Object(parent);
            if parent == root {
                break;
            }
            cur = parent;
        }
        let mut path = String::new();
        for p in parts.iter().rev() {
            path.push('/');
            path.push_str(p);
        }
        Some(path)
    }

    /// Follows one path component: a child, or the target of a link.
    fn resolve_component(&self, part: &str) -> Option<Object> {
        if let Some(c) = self.child(part) {
            return Some(c);
        }
        if self.has_property(part) {
            self.get_link(part).ok().flatten()
        } else {
            None
        }
    }
}

/// Resolves a path to an object.
///
/// An absolute path (`/machine/peripheral/net0`) is followed component by
/// component through `child<>` and `link<>` properties. A partial path
/// (`net0`, `peripheral/net0`) must match the end of exactly one object's
/// canonical path; with `type_filter`, only objects of that type count.
pub fn resolve_path(path: &str, type_filter: Option<&str>) -> Result<Object> {
    let invalid = |reason: &str| {
        Error::Path(PathError::Invalid {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return Err(invalid("empty path"));
    }
    let found = if let Some(rest) = path.strip_prefix('/') {
        let mut cur = root();
        for part in rest.split('/').filter(|p| !p.is_empty()) {
            cur = cur
                .resolve_component(part)
                .ok_or_else(|| Error::Path(PathError::NotFound(path.to_string())))?;
        }
        cur
    } else {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid("empty path component"));
        }
        let mut matches = Vec::new();
        walk(&root(), &mut Vec::new(), &mut |obj, names| {
            if names.len() >= parts.len()
                && names[names.len() - parts.len()..]
                    .iter()
                    .zip(&parts)
                    .all(|(a, b)| a == b)
                && type_filter.is_none_or(|t| obj.is_a(t))
            {
                matches.push(obj.clone());
            }
        });
        match matches.len() {
            0 => return Err(Error::Path(PathError::NotFound(path.to_string()))),
            1 => matches.remove(0),
            _ => {
                let mut listed: Vec<String> = matches.iter().take(4).filter_map(Object::canonical_path).collect();
                if matches.len() > 4 {
                    listed.push(format!("and {} more", matches.len() - 4));
                }
                return Err(Error::Path(PathError::Ambiguous {
                    path: path.to_string(),
                    matches: listed.join(", "),
                }));
            }
        }
    };
    if let Some(t) = type_filter {
        if !found.is_a(t) {
            return Err(Error::WrongType {
                type_name: found.type_name().to_string(),
                expected: t.to_string(),
            });
        }
    }
    Ok(found)
}

fn walk(obj: &Object, names: &mut Vec<String>, visit: &mut dyn FnMut(&Object, &[String])) {
    for (name, child) in obj.children() {
        names.push(name);
        visit(&child, names);
        walk(&child, names, visit);
        names.pop();
    }
}

/// The subtree at `path` in the shape of QEMU's `info qom-tree`: one line per
/// object, `/name (type)`, children indented by two spaces and sorted by name.
pub fn qom_tree(path: &str) -> Result<String> {
    let top = resolve_path(path, None)?;
    let mut out = String::new();
    let label = if path.starts_with('/') {
        path.trim_end_matches('/').to_string()
    } else {
        top.canonical_path().unwrap_or_else(|| path.to_string())
    };
    let label = if label.is_empty() { "/".to_string() } else { label };
    let _ = writeln!(out, "{label} ({})", top.type_name());
    fn rec(obj: &Object, depth: usize, out: &mut String) {
        let mut children = obj.children();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, child) in children {
            let _ = writeln!(out, "{:indent$}/{name} ({})", "", child.type_name(), indent = depth * 2);
            rec(&child, depth + 1, out);
        }
    }
    rec(&top, 1, &mut out);
    Ok(out)
}

/// Places a parentless device being realized under `/machine/unattached`
/// (as QEMU does), if a machine exists. Returns whether it did.
pub(crate) fn attach_unattached(obj: &Object) -> bool {
    let Some(unattached) = root().child("machine").and_then(|m| m.child("unattached")) else {
        return false;
    };
    unattached.add_child("device[*]", obj).is_ok()
}
