//! `vmkit._core.Object`: a Python handle to an object, owning zero or more references.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vmkit_qom::{Object, ObjectRef, StorageGuard};

use crate::convert::{from_value, to_value};
use crate::errors::{IntoPyResult, LifecycleError, PropertyTypeError};
use crate::qom::property::{PyProperty, PyPropertyInfo, infos};

/// A handle to a QOM object.
///
/// A handle owns the references taken through it: `new()` and `ref()` add
/// one, `unref()` gives one back, and whatever is left is given back when the
/// handle is garbage-collected (or at the end of a `with` block). Handles
/// returned by lookups (`resolve`, `children`, hooks) own none. Using a handle
/// whose object was finalized raises `ObjectFinalizedError`.
#[pyclass(name = "Object", module = "vmkit._core.qom", frozen, weakref)]
pub(crate) struct PyObj {
    pub(crate) handle: Object,
    owned: Mutex<Vec<ObjectRef>>,
}

/// Per-object Python data (`Object.data`), freed with the object's storage.
struct PyData(Py<PyDict>);

impl PyObj {
    pub(crate) fn owning(r: ObjectRef) -> Self {
        PyObj {
            handle: r.handle(),
            owned: Mutex::new(vec![r]),
        }
    }

    pub(crate) fn borrowed(obj: &Object) -> Self {
        PyObj {
            handle: obj.clone(),
            owned: Mutex::new(Vec::new()),
        }
    }

    fn release_all(&self) {
        // Dropped outside the lock: a drop may finalize and run Python hooks.
        let refs = std::mem::take(&mut *self.owned.lock());
        drop(refs);
    }
}

fn wrap_opt(o: Option<Object>) -> Option<PyObj> {
    o.as_ref().map(PyObj::borrowed)
}

#[pymethods]
impl PyObj {
    /// The object's type name.
    #[getter]
    fn type_name(&self) -> &str {
        self.handle.type_name()
    }

    /// A process-unique id.
    #[getter]
    fn id(&self) -> u64 {
        self.handle.id()
    }

    /// The canonical path, or None when not in the tree.
    #[getter]
    fn path(&self) -> Option<String> {
        self.handle.canonical_path()
    }

    /// The name in the parent, or None.
    #[getter]
    fn name(&self) -> Option<String> {
        self.handle.name_in_parent()
    }

    /// The parent, or None.
    #[getter]
    fn parent(&self) -> Option<PyObj> {
        wrap_opt(self.handle.parent())
    }

    /// `"live"`, `"finalizing"` or `"finalized"`.
    #[getter]
    fn phase(&self) -> &'static str {
        self.handle.phase().as_str()
    }

    /// Whether the object is live (not finalizing or finalized).
    #[getter]
    fn alive(&self) -> bool {
        self.handle.phase() == vmkit_qom::Phase::Live
    }

    /// The object's total reference count.
    #[getter]
    fn refcount(&self) -> u32 {
        self.handle.refcount()
    }

    /// How many of those references this handle owns.
    #[getter]
    fn owned_refs(&self) -> usize {
        self.owned.lock().len()
    }

    /// Users of the object's storage: its members not yet finalized, plus pins.
    #[getter]
    fn storage_refcount(&self) -> u32 {
        self.handle.storage_refcount()
    }

    /// An id of the storage (shared by a container and its embedded children).
    #[getter]
    fn storage_id(&self) -> u64 {
        self.handle.storage_id()
    }

    /// Whether the storage was released (the state freed).
    #[getter]
    fn storage_released(&self) -> bool {
        self.handle.storage_released()
    }

    /// Whether the object was created embedded in another.
    #[getter]
    fn is_embedded(&self) -> bool {
        self.handle.is_embedded()
    }

    /// Whether the device is realized.
    #[getter]
    fn realized(&self) -> bool {
        self.handle.is_realized()
    }

    /// Whether the user-creatable object is completed.
    #[getter]
    fn completed(&self) -> bool {
        self.handle.is_completed()
    }

    /// A dict for Python-side state of the object, freed with its storage.
    #[getter]
    pub(crate) fn data(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        if let Some(existing) = self.handle.user_data() {
            return match existing.downcast::<PyData>() {
                Ok(d) => Ok(d.0.clone_ref(py)),
                // A Rust model lives there (a PCI device's glue): replacing
                // it would break the device.
                Err(_) => Err(crate::errors::QomError::new_err(format!(
                    "{} keeps a device model of its own: it has no data dict",
                    self.handle.describe()
                ))),
            };
        }
        let dict = PyDict::new(py).unbind();
        self.handle
            .set_user_data(Arc::new(PyData(dict.clone_ref(py))))
            .py_err(py)?;
        Ok(dict)
    }

    /// Whether the object is of `type_name`, derives from it or implements it.
    fn is_a(&self, type_name: &str) -> bool {
        self.handle.is_a(type_name)
    }

    /// Reads a property.
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let v = self.handle.get(name).py_err(py)?;
        from_value(py, &v)
    }

    /// Writes a property. A `link<>` takes an Object, a path, or None.
    fn set(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(target) = value.cast::<PyObj>() {
            return self.handle.set_link(name, Some(&target.get().handle)).py_err(py);
        }
        let v = to_value(value)?;
        self.handle.set(name, v).py_err(py)
    }

    /// Writes a property from a command-line string (`on`, `0x10`, `64K`...).
    fn set_str(&self, py: Python<'_>, name: &str, text: &str) -> PyResult<()> {
        self.handle.set_str(name, text).py_err(py)
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        self.get(py, name)
    }

    fn __setitem__(&self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(py, name, value)
    }

    fn __contains__(&self, name: &str) -> bool {
        self.handle.has_property(name)
    }

    /// The target of a `link<>` (or `child<>`) property.
    fn get_link(&self, py: Python<'_>, name: &str) -> PyResult<Option<PyObj>> {
        self.handle.get_link(name).py_err(py).map(wrap_opt)
    }

    /// Points a `link<>` property at an object, or clears it with None.
    fn set_link(&self, py: Python<'_>, name: &str, target: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let target = match target {
            None => None,
            Some(t) => Some(
                t.cast::<PyObj>()
                    .map_err(|_| PropertyTypeError::new_err(format!("link '{name}' takes an Object or None")))?
                    .get()
                    .handle
                    .clone(),
            ),
        };
        self.handle.set_link(name, target.as_ref()).py_err(py)
    }

    /// Every property: instance ones first, then class ones.
    fn properties(&self, py: Python<'_>) -> PyResult<Vec<PyPropertyInfo>> {
        self.handle.property_infos().py_err(py).map(infos)
    }

    /// Adds an instance property.
    fn add_property(&self, py: Python<'_>, prop: &Bound<'_, PyProperty>) -> PyResult<()> {
        self.handle.add_property(prop.get().def.clone()).py_err(py)
    }

    /// Removes an instance property.
    fn remove_property(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.handle.remove_property(name).py_err(py)
    }

    /// Takes a reference, owned by this handle; returns the handle.
    ///
    /// Raises ObjectFinalizedError when the object is finalizing (for example
    /// from inside its own finalize hook) or finalized.
    fn r#ref(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let r = slf.get().handle.try_ref().py_err(slf.py())?;
        slf.get().owned.lock().push(r);
        Ok(slf)
    }

    /// Gives back one reference owned by this handle (finalizing the object if it was the last).
    fn unref(&self) -> PyResult<()> {
        let r = self.owned.lock().pop();
        match r {
            Some(r) => {
                drop(r);
                Ok(())
            }
            None => Err(LifecycleError::new_err(format!(
                "{}: this handle owns no reference to give back",
                self.handle.describe()
            ))),
        }
    }

    /// Gives back every reference this handle owns.
    fn release(&self) {
        self.release_all();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release_all();
        false
    }

    /// Adds `child` under `name` (`name[*]` numbers it); returns the name used.
    fn add_child(&self, py: Python<'_>, name: &str, child: &Bound<'_, PyObj>) -> PyResult<String> {
        self.handle.add_child(name, &child.get().handle).py_err(py)
    }

    /// Creates a child of `type_name` embedded in this object's storage.
    fn embed_child(&self, py: Python<'_>, name: &str, type_name: &str) -> PyResult<PyObj> {
        self.handle
            .embed_child(name, type_name)
            .py_err(py)
            .map(|o| PyObj::borrowed(&o))
    }

    /// The child called `name`, or None.
    fn child(&self, name: &str) -> Option<PyObj> {
        wrap_opt(self.handle.child(name))
    }

    /// The children as `(name, object)` pairs, in insertion order.
    fn children(&self) -> Vec<(String, PyObj)> {
        self.handle
            .children()
            .into_iter()
            .map(|(n, o)| (n, PyObj::borrowed(&o)))
            .collect()
    }

    /// Removes the object from its parent (unrealizing a device first).
    fn unparent(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.unparent().py_err(py)
    }

    /// The object this embedded child lives in (None if not embedded).
    ///
    /// Raises ObjectFinalizedError once that container is finalized.
    fn container(&self, py: Python<'_>) -> PyResult<Option<PyObj>> {
        self.handle.container().py_err(py).map(wrap_opt)
    }

    /// Realizes the device.
    fn realize(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.realize().py_err(py)
    }

    /// Unrealizes the device.
    fn unrealize(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.unrealize().py_err(py)
    }

    /// Completes the user-creatable object.
    fn complete(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.complete().py_err(py)
    }

    /// Pins the object's storage until the guard is released.
    fn pin_storage(&self, py: Python<'_>) -> PyResult<PyStorageGuard> {
        let g = self.handle.pin_storage().py_err(py)?;
        Ok(PyStorageGuard {
            guard: Mutex::new(Some(g)),
        })
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyObj>().is_ok_and(|o| o.get().handle == self.handle)
    }

    fn __hash__(&self) -> u64 {
        self.handle.id()
    }

    fn __repr__(&self) -> String {
        let place = self
            .handle
            .canonical_path()
            .unwrap_or_else(|| "(not in the tree)".into());
        format!(
            "<Object '{}' {} #{} {} refs={}>",
            self.handle.type_name(),
            place,
            self.handle.id(),
            self.handle.phase().as_str(),
            self.handle.refcount()
        )
    }
}

/// Keeps an object's storage allocated until released.
#[pyclass(name = "StorageGuard", module = "vmkit._core.qom", frozen)]
pub(crate) struct PyStorageGuard {
    guard: Mutex<Option<StorageGuard>>,
}

#[pymethods]
impl PyStorageGuard {
    /// Releases the pin (idempotent).
    fn release(&self) {
        let g = self.guard.lock().take();
        drop(g);
    }

    /// Whether the pin is still held.
    #[getter]
    fn held(&self) -> bool {
        self.guard.lock().is_some()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.release();
        false
    }
}
