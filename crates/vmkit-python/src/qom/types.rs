//! Module-level object-model functions: types, creation, tree, placement.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vmkit_qom::{self as qom, Error, InstanceHook, Object, PropertyDef, TypeHooks, TypeInfo, Value};

use crate::convert::to_value;
use crate::errors::IntoPyResult;
use crate::qom::object::PyObj;
use crate::qom::property::{PyProperty, PyPropertyInfo, infos};

/// Wraps a Python callable `hook(obj)` as an instance hook. A Python
/// exception becomes the hook's error and is re-raised unchanged by bindings.
fn instance_hook(name: &'static str, callable: Py<PyAny>) -> InstanceHook {
    let callable = Arc::new(callable);
    Arc::new(move |obj: &Object| {
        Python::attach(|py| {
            callable
                .call1(py, (PyObj::borrowed(obj),))
                .map(|_| ())
                .map_err(|e| Error::hook(name, obj.describe(), e))
        })
    })
}

/// Like [`instance_hook`], for hooks whose errors the core cannot report
/// (finalize): the exception is reported through `sys.unraisablehook`, as
/// Python does for exceptions in `__del__`.
fn unraisable_hook(callable: Py<PyAny>) -> InstanceHook {
    let callable = Arc::new(callable);
    Arc::new(move |obj: &Object| {
        Python::attach(|py| {
            if let Err(e) = callable.call1(py, (PyObj::borrowed(obj),)) {
                let target = callable.bind(py).clone();
                e.write_unraisable(py, Some(&target));
            }
        });
        Ok(())
    })
}

/// What a Python `class_init(cls)` hook can do: add class properties and change defaults.
#[pyclass(name = "ClassInit", module = "vmkit._core.qom", frozen)]
pub(crate) struct PyClassInit {
    type_name: String,
    ops: Mutex<Vec<ClassOp>>,
}

enum ClassOp {
    Add(PropertyDef),
    Default(String, Value),
}

#[pymethods]
impl PyClassInit {
    /// The type being initialised.
    #[getter]
    fn type_name(&self) -> &str {
        &self.type_name
    }
    /// Adds a class property.
    fn add_property(&self, prop: &Bound<'_, PyProperty>) {
        self.ops.lock().push(ClassOp::Add(prop.get().def.clone()));
    }
    /// Changes the default of a (possibly inherited) class property.
    fn set_default(&self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = to_value(value)?;
        self.ops.lock().push(ClassOp::Default(name.to_string(), v));
        Ok(())
    }
}

/// Registers a type defined in Python. See `vmkit.qom.register_type`.
#[pyfunction]
#[pyo3(signature = (name, parent="object", *, r#abstract=false, interfaces=Vec::new(), description=None,
                    class_properties=Vec::new(), properties=Vec::new(), class_init=None, instance_init=None,
                    instance_post_init=None, instance_finalize=None, realize=None, unrealize=None, complete=None,
                    can_be_deleted=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn register_type(
    py: Python<'_>,
    name: &str,
    parent: &str,
    r#abstract: bool,
    interfaces: Vec<String>,
    description: Option<String>,
    class_properties: Vec<Bound<'_, PyProperty>>,
    properties: Vec<Bound<'_, PyProperty>>,
    class_init: Option<Py<PyAny>>,
    instance_init: Option<Py<PyAny>>,
    instance_post_init: Option<Py<PyAny>>,
    instance_finalize: Option<Py<PyAny>>,
    realize: Option<Py<PyAny>>,
    unrealize: Option<Py<PyAny>>,
    complete: Option<Py<PyAny>>,
    can_be_deleted: Option<Py<PyAny>>,
) -> PyResult<()> {
    let mut info = TypeInfo::new(name).parent(parent).abstract_type(r#abstract);
    for i in interfaces {
        info = info.implements(i);
    }
    if let Some(d) = description {
        info = info.description(d);
    }
    for p in &class_properties {
        info = info.class_property(p.get().def.clone());
    }
    for p in &properties {
        info = info.instance_property(p.get().def.clone());
    }
    let class_init = class_init.map(|callable| -> qom::ClassInitHook {
        let callable = Arc::new(callable);
        Arc::new(move |builder: &mut qom::ClassBuilder<'_>| {
            let ops = Python::attach(|py| -> Result<Vec<ClassOp>, Error> {
                let ci = Bound::new(
                    py,
                    PyClassInit {
                        type_name: builder.type_name().to_string(),
                        ops: Mutex::new(Vec::new()),
                    },
                )
                .map_err(|e| Error::hook("class_init", builder.type_name(), e))?;
                callable
                    .call1(py, (ci.clone(),))
                    .map_err(|e| Error::hook("class_init", builder.type_name(), e))?;
                Ok(std::mem::take(&mut *ci.get().ops.lock()))
            })?;
            for op in ops {
                match op {
                    ClassOp::Add(def) => builder.add_property(def)?,
                    ClassOp::Default(n, v) => builder.set_default(&n, v)?,
                }
            }
            Ok(())
        })
    });
    let hooks = TypeHooks {
        class_init,
        instance_init: instance_init.map(|c| instance_hook("instance_init", c)),
        instance_post_init: instance_post_init.map(|c| instance_hook("instance_post_init", c)),
        instance_finalize: instance_finalize.map(unraisable_hook),
        realize: realize.map(|c| instance_hook("realize", c)),
        unrealize: unrealize.map(|c| instance_hook("unrealize", c)),
        complete: complete.map(|c| instance_hook("complete", c)),
        can_be_deleted: can_be_deleted.map(|callable| -> qom::CanDeleteHook {
            let callable = Arc::new(callable);
            Arc::new(move |obj: &Object| {
                Python::attach(|py| match callable.call1(py, (PyObj::borrowed(obj),)) {
                    Ok(v) => v.bind(py).is_truthy().unwrap_or(false),
                    Err(e) => {
                        e.write_unraisable(py, None);
                        false
                    }
                })
            })
        }),
        // Python device types have no reset or unplug hooks (yet).
        reset: None,
        unplug: None,
    };
    info.hooks(hooks).register().py_err(py).map(|_| ())
}

/// A registered type, as `qom-list-types` reports it.
#[pyclass(name = "TypeSummary", module = "vmkit._core.qom", frozen)]
pub(crate) struct PyTypeSummary {
    s: qom::TypeSummary,
}

#[pymethods]
impl PyTypeSummary {
    /// The type name.
    #[getter]
    fn name(&self) -> &str {
        &self.s.name
    }
    /// The parent type's name.
    #[getter]
    fn parent(&self) -> Option<&str> {
        self.s.parent.as_deref()
    }
    /// Whether the type is abstract.
    #[getter]
    fn r#abstract(&self) -> bool {
        self.s.is_abstract
    }
    /// Whether it is an interface.
    #[getter]
    fn interface(&self) -> bool {
        self.s.is_interface
    }
    /// The description, if any.
    #[getter]
    fn description(&self) -> Option<&str> {
        self.s.description.as_deref()
    }
    fn __repr__(&self) -> String {
        let parent = self
            .s
            .parent
            .as_deref()
            .map_or_else(|| "None".to_string(), |p| format!("{p:?}"));
        let flag = if self.s.is_abstract { "True" } else { "False" };
        format!("TypeSummary(name={:?}, parent={parent}, abstract={flag})", self.s.name)
    }
}

/// Lists registered types; `implements` keeps those that are, derive from or implement it.
#[pyfunction]
#[pyo3(signature = (implements=None, include_abstract=false))]
pub(crate) fn list_types(implements: Option<&str>, include_abstract: bool) -> Vec<PyTypeSummary> {
    qom::list_types(implements, include_abstract)
        .into_iter()
        .map(|s| PyTypeSummary { s })
        .collect()
}

/// Whether type `name` is, derives from, or implements `other`.
#[pyfunction]
pub(crate) fn type_is_a(py: Python<'_>, name: &str, other: &str) -> PyResult<bool> {
    let ty = qom::lookup_type(name).py_err(py)?;
    Ok(ty.is_a(other))
}

/// The interfaces a type implements, inherited ones included, sorted.
#[pyfunction]
pub(crate) fn type_interfaces(py: Python<'_>, name: &str) -> PyResult<Vec<String>> {
    let ty = qom::lookup_type(name).py_err(py)?;
    let mut out: Vec<String> = qom::list_types(Some("interface"), true)
        .into_iter()
        .filter(|t| t.is_interface && t.name != "interface" && ty.is_a(&t.name))
        .map(|t| t.name)
        .collect();
    out.sort();
    Ok(out)
}

/// Properties of a type, as `qom-list-properties` reports them.
#[pyfunction]
pub(crate) fn type_properties(py: Python<'_>, name: &str) -> PyResult<Vec<PyPropertyInfo>> {
    qom::type_properties(name).py_err(py).map(infos)
}

/// Properties of a device type, as `device-list-properties` reports them.
#[pyfunction]
pub(crate) fn device_type_properties(py: Python<'_>, name: &str) -> PyResult<Vec<PyPropertyInfo>> {
    qom::device_type_properties(name).py_err(py).map(infos)
}

/// Creates an object of `type_name`; the returned handle owns its one reference.
#[pyfunction]
pub(crate) fn new(py: Python<'_>, type_name: &str) -> PyResult<PyObj> {
    qom::new_object(type_name).py_err(py).map(PyObj::owning)
}

/// The root of the composition tree.
#[pyfunction]
pub(crate) fn root() -> PyObj {
    PyObj::borrowed(&qom::root())
}

/// Resolves an absolute or partial path.
#[pyfunction]
#[pyo3(signature = (path, type_name=None))]
pub(crate) fn resolve_path(py: Python<'_>, path: &str, type_name: Option<&str>) -> PyResult<PyObj> {
    qom::resolve_path(path, type_name)
        .py_err(py)
        .map(|o| PyObj::borrowed(&o))
}

/// The subtree at `path` as QEMU's `info qom-tree` prints it.
#[pyfunction]
#[pyo3(signature = (path="/"))]
pub(crate) fn qom_tree(py: Python<'_>, path: &str) -> PyResult<String> {
    // A large tree takes a while: other threads (the monitor's loop) run meanwhile.
    py.detach(|| qom::qom_tree(path)).py_err(py)
}

/// Creates the machine at `/machine`.
#[pyfunction]
pub(crate) fn create_machine(py: Python<'_>, type_name: &str) -> PyResult<PyObj> {
    qom::create_machine(type_name).py_err(py).map(|o| PyObj::borrowed(&o))
}

/// Removes the machine (finalizing everything it owns).
#[pyfunction]
pub(crate) fn destroy_machine(py: Python<'_>) -> PyResult<()> {
    qom::destroy_machine().py_err(py)
}

/// Resets every realized device of the subtree at `root`, children first.
#[pyfunction]
pub(crate) fn reset_tree(py: Python<'_>, root: &Bound<'_, PyObj>) -> PyResult<()> {
    qom::reset_tree(&root.get().handle).py_err(py)
}

/// Marks the machine complete: devices created from now on are hot-plugged.
#[pyfunction]
pub(crate) fn machine_creation_done(py: Python<'_>) -> PyResult<()> {
    qom::machine_creation_done().py_err(py)
}

/// The machine at `/machine`, if any.
#[pyfunction]
pub(crate) fn machine() -> Option<PyObj> {
    qom::machine().as_ref().map(PyObj::borrowed)
}

fn props_of(props: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Value)>> {
    let mut out = Vec::new();
    if let Some(d) = props {
        for (k, v) in d.iter() {
            out.push((k.extract::<String>()?, to_value(&v)?));
        }
    }
    Ok(out)
}

/// Creates, places and realizes a device (QMP `device_add`).
#[pyfunction]
#[pyo3(signature = (type_name, id=None, props=None))]
pub(crate) fn device_add(
    py: Python<'_>,
    type_name: &str,
    id: Option<&str>,
    props: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObj> {
    let props = props_of(props)?;
    qom::device_add(type_name, id, &props)
        .py_err(py)
        .map(|o| PyObj::borrowed(&o))
}

/// `device_add` with command-line text values, each parsed by its property's type.
#[pyfunction]
#[pyo3(signature = (type_name, id=None, props=None))]
pub(crate) fn device_add_from_text(
    py: Python<'_>,
    type_name: &str,
    id: Option<&str>,
    props: Option<Vec<(String, String)>>,
) -> PyResult<PyObj> {
    qom::device_add_from_text(type_name, id, &props.unwrap_or_default())
        .py_err(py)
        .map(|o| PyObj::borrowed(&o))
}

/// Unplugs a device by id or path (QMP `device_del`); returns the
/// `(path, id)` of every device that left the tree, the device last.
#[pyfunction]
pub(crate) fn device_del(py: Python<'_>, id: &str) -> PyResult<Vec<(String, Option<String>)>> {
    qom::device_del(id)
        .py_err(py)
        .map(|gone| gone.into_iter().map(|d| (d.path, d.id)).collect())
}

/// Creates and completes a user-creatable object at `/objects/<id>` (QMP `object-add`).
#[pyfunction]
#[pyo3(signature = (type_name, id, props=None))]
pub(crate) fn object_add(
    py: Python<'_>,
    type_name: &str,
    id: &str,
    props: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObj> {
    let props = props_of(props)?;
    qom::object_add(type_name, id, &props)
        .py_err(py)
        .map(|o| PyObj::borrowed(&o))
}

/// `object_add` with command-line text values, each parsed by its property's type.
#[pyfunction]
#[pyo3(signature = (type_name, id, props=None))]
pub(crate) fn object_add_from_text(
    py: Python<'_>,
    type_name: &str,
    id: &str,
    props: Option<Vec<(String, String)>>,
) -> PyResult<PyObj> {
    qom::object_add_from_text(type_name, id, &props.unwrap_or_default())
        .py_err(py)
        .map(|o| PyObj::borrowed(&o))
}

/// Deletes `/objects/<id>` (QMP `object-del`).
#[pyfunction]
pub(crate) fn object_del(py: Python<'_>, id: &str) -> PyResult<()> {
    qom::object_del(id).py_err(py)
}

/// The active instance of a singleton type, if any.
#[pyfunction]
pub(crate) fn singleton_instance(py: Python<'_>, type_name: &str) -> PyResult<Option<PyObj>> {
    qom::singleton_instance(type_name)
        .py_err(py)
        .map(|o| o.as_ref().map(PyObj::borrowed))
}

/// Object-model counters: live objects and storages, totals.
#[pyfunction]
pub(crate) fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = qom::stats();
    let d = PyDict::new(py);
    d.set_item("live_objects", s.live_objects)?;
    d.set_item("live_storages", s.live_storages)?;
    d.set_item("objects_created", s.objects_created)?;
    d.set_item("objects_finalized", s.objects_finalized)?;
    d.set_item("storages_released", s.storages_released)?;
    d.set_item("resurrections_refused", s.resurrections_refused)?;
    Ok(d)
}

/// Parses a size string such as `64K` or `1.5G` into bytes.
#[pyfunction]
pub(crate) fn parse_size(text: &str) -> PyResult<u64> {
    qom::parse_size(text).map_err(crate::errors::PropertyValueError::new_err)
}

/// Formats a byte count as QEMU does (`64 KiB`).
#[pyfunction]
pub(crate) fn format_size(bytes: u64) -> String {
    qom::format_size(bytes)
}
