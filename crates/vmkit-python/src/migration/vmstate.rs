//! VMState descriptions declared from Python, state values as dicts, and
//! VMState for Python-defined device types.
//!
//! A state is a `dict`: field name → value (`bool`, `int`, `bytes`,
//! `list`, nested `dict`, `None` for an absent optional element), and each
//! subsection that is present → its own dict, under the subsection's full
//! name (which contains `/`, e.g. `"timer/armed"`, so it never clashes with
//! a field). Values go back to the core by their Python type; the encoder
//! then checks each against its field's kind and range.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyInt, PyList, PyMemoryView, PyString, PyTuple};
use vmkit_migration::device_state::{DeviceState, DynDeviceState, StateError};
use vmkit_migration::savevm::register_device_vmstate as core_register;
use vmkit_migration::vmstate::{
    ArrayLen, Field, FieldKind, MAX_KIND_DEPTH, MigrationPriority, SpecError, VmStateDescription,
    VmStateDescriptionBuilder, VmStruct, VmValue,
};
use vmkit_qom::{CallbackError, Object};

use crate::errors::{callback_error, migration_err};
use crate::qom::object::PyObj;

// ----- values ---------------------------------------------------------------

/// A value as a Python object.
pub(crate) fn value_to_py(py: Python<'_>, v: &VmValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        VmValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        VmValue::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        VmValue::UInt(u) => u.into_pyobject(py)?.into_any().unbind(),
        VmValue::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        VmValue::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any().unbind()
        }
        VmValue::Struct(s) => struct_to_py(py, s)?.into_any().unbind(),
        VmValue::None => py.None(),
    })
}

/// A state as a dict (subsections under their full names).
pub(crate) fn struct_to_py<'py>(py: Python<'py>, s: &VmStruct) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, v) in &s.fields {
        d.set_item(name, value_to_py(py, v)?)?;
    }
    for (name, sub) in &s.subsections {
        d.set_item(name, struct_to_py(py, sub)?)?;
    }
    Ok(d)
}

/// A Python object as a value, by its type.
pub(crate) fn value_from_py(obj: &Bound<'_, PyAny>, path: &str) -> PyResult<VmValue> {
    if obj.is_none() {
        return Ok(VmValue::None);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(VmValue::Bool(obj.is_truthy()?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(VmValue::UInt(u));
        }
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(VmValue::Int(i));
        }
        return Err(PyValueError::new_err(format!("{path}: {obj} does not fit in 64 bits")));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(VmValue::Bytes(b.as_bytes().to_vec()));
    }
    if obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        return Ok(VmValue::Bytes(obj.extract::<Vec<u8>>()?));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(VmValue::Struct(struct_from_py(d, path)?));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            items.push(value_from_py(&item?, &format!("{path}[{i}]"))?);
        }
        return Ok(VmValue::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "{path}: a state value must be a bool, int, bytes, list, dict or None, not {}",
        obj.get_type().name()?
    )))
}

/// A dict as a state: keys with a `/` whose value is a dict are
/// subsections, the others fields.
pub(crate) fn struct_from_py(d: &Bound<'_, PyDict>, path: &str) -> PyResult<VmStruct> {
    let mut s = VmStruct::new();
    for (k, v) in d.iter() {
        let name: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{path}: state keys must be str, not {k:?}")))?;
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        match v.cast::<PyDict>() {
            Ok(sub) if name.contains('/') => s.set_subsection(name, struct_from_py(sub, &here)?),
            _ => s.set(name, value_from_py(&v, &here)?),
        }
    }
    Ok(s)
}

/// Runs a hook that may change the state: the dict is handed to `hook`
/// and read back.
fn call_with_state(
    py: Python<'_>,
    state: &mut VmStruct,
    hook: &Py<PyAny>,
    extra: Option<u32>,
) -> Result<(), CallbackError> {
    let mut run = || -> PyResult<()> {
        let d = struct_to_py(py, state)?;
        match extra {
            Some(v) => hook.call1(py, (&d, v))?,
            None => hook.call1(py, (&d,))?,
        };
        *state = struct_from_py(&d, "")?;
        Ok(())
    };
    run().map_err(callback_error)
}

// ----- descriptions ---------------------------------------------------------

const KIND_HELP: &str = "a kind is text the core parses (a scalar name such as 'uint8', or 'buffer(16)', \
     'array(uint16, count)' ...) or a dict from vmkit.migration's kind helpers: buffer(n), vbuffer(field), unused(n), \
     bitmap(nbits), array(of, length), struct(desc), optional(of), equal(of)";

/// Parses a kind spec (see [`KIND_HELP`]).
fn kind_from_py(spec: &Bound<'_, PyAny>, depth: u32) -> PyResult<FieldKind> {
    if depth == MAX_KIND_DEPTH {
        return Err(PyValueError::new_err(format!(
            "kinds nest deeper than {MAX_KIND_DEPTH}"
        )));
    }
    if let Ok(s) = spec.cast::<PyString>() {
        return s
            .to_str()?
            .parse()
            .map_err(|e: SpecError| PyValueError::new_err(e.to_string()));
    }
    let Ok(d) = spec.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(KIND_HELP));
    };
    let get = |k: &str| d.get_item(k).ok().flatten();
    let u32_of = |k: &str| -> PyResult<u32> {
        get(k)
            .ok_or_else(|| PyValueError::new_err(format!("kind spec lacks '{k}'")))?
            .extract::<u32>()
    };
    if let Some(n) = get("buffer") {
        return Ok(FieldKind::Buffer { len: n.extract()? });
    }
    if let Some(f) = get("vbuffer") {
        return Ok(FieldKind::VBuffer {
            len_field: f.extract()?,
        });
    }
    if get("unused").is_some() {
        return Ok(FieldKind::Unused { len: u32_of("unused")? });
    }
    if get("bitmap").is_some() {
        return Ok(FieldKind::Bitmap {
            nbits: u32_of("bitmap")?,
        });
    }
    if let Some(of) = get("array") {
        let len = get("length").ok_or_else(|| PyValueError::new_err("an array kind needs a 'length'"))?;
        let len = match len.extract::<u32>() {
            Ok(n) => ArrayLen::Fixed(n),
            Err(_) => ArrayLen::Field(len.extract::<String>().map_err(|_| {
                PyTypeError::new_err("an array's length is a count (int) or the name of an earlier integer field")
            })?),
        };
        return Ok(FieldKind::Array {
            elem: Box::new(kind_from_py(&of, depth + 1)?),
            len,
        });
    }
    if let Some(desc) = get("struct") {
        let desc = desc
            .cast::<PyVmStateDescription>()
            .map_err(|_| PyTypeError::new_err("a struct kind takes a VMStateDescription"))?;
        return Ok(FieldKind::Struct(Arc::clone(&desc.get().desc)));
    }
    if let Some(of) = get("optional") {
        return Ok(FieldKind::Optional(Box::new(kind_from_py(&of, depth + 1)?)));
    }
    if let Some(of) = get("equal") {
        return Ok(FieldKind::Equal(Box::new(kind_from_py(&of, depth + 1)?)));
    }
    Err(PyValueError::new_err(format!("unknown kind spec: {KIND_HELP}")))
}

/// One field of a VMState description.
#[pyclass(name = "VMStateField", module = "vmkit._core.migration", frozen)]
pub struct PyVmStateField {
    field: Field,
}

#[pymethods]
impl PyVmStateField {
    /// A field `name` of `kind`; present from version `since` on, or when
    /// `exists(state, version)` is true (the predicate replaces the version
    /// rule).
    #[new]
    #[pyo3(signature = (name, kind, *, since=None, exists=None))]
    fn new(name: String, kind: &Bound<'_, PyAny>, since: Option<u32>, exists: Option<Py<PyAny>>) -> PyResult<Self> {
        let mut field = Field::new(name, kind_from_py(kind, 0)?);
        if let Some(v) = since {
            field = field.since(v);
        }
        if let Some(pred) = exists {
            field = field.exists_if(move |state, version| {
                Python::attach(|py| {
                    let run = || -> PyResult<bool> {
                        let d = struct_to_py(py, state)?;
                        pred.call1(py, (d, version))?.bind(py).is_truthy()
                    };
                    run().map_err(callback_error)
                })
            });
        }
        Ok(PyVmStateField { field })
    }

    /// The field's name.
    #[getter]
    fn name(&self) -> &str {
        self.field.name()
    }

    /// The first version that has the field (0: all).
    #[getter]
    fn since(&self) -> u32 {
        self.field.version_id()
    }

    fn __repr__(&self) -> String {
        format!(
            "VMStateField({:?}, {})",
            self.field.name(),
            self.field.kind().info_name()
        )
    }
}

/// A VMState description: how a device's state is laid out on the wire.
#[pyclass(name = "VMStateDescription", module = "vmkit._core.migration", frozen)]
pub struct PyVmStateDescription {
    pub(crate) desc: Arc<VmStateDescription>,
}

fn hooked(
    b: VmStateDescriptionBuilder,
    pre_save: Option<Py<PyAny>>,
    pre_load: Option<Py<PyAny>>,
    post_load: Option<Py<PyAny>>,
    needed: Option<Py<PyAny>>,
) -> VmStateDescriptionBuilder {
    let mut b = b;
    if let Some(h) = pre_save {
        b = b.pre_save(move |s| Python::attach(|py| call_with_state(py, s, &h, None)));
    }
    if let Some(h) = pre_load {
        b = b.pre_load(move |s| Python::attach(|py| call_with_state(py, s, &h, None)));
    }
    if let Some(h) = post_load {
        b = b.post_load(move |s, version| Python::attach(|py| call_with_state(py, s, &h, Some(version))));
    }
    if let Some(h) = needed {
        b = b.needed(move |s| {
            Python::attach(|py| {
                let run = || -> PyResult<bool> { h.call1(py, (struct_to_py(py, s)?,))?.bind(py).is_truthy() };
                run().map_err(callback_error)
            })
        });
    }
    b
}

#[pymethods]
impl PyVmStateDescription {
    /// A description `name` at `version_id` (loads streams from
    /// `minimum_version_id`, by default `version_id`, up to it).
    ///
    /// Hooks get the state as a dict and may change it in place:
    /// `pre_save(state)`, `pre_load(state)`, `post_load(state, version)`;
    /// `needed(parent_state) -> bool` makes a subsection (or a whole
    /// section) optional.
    #[new]
    #[pyo3(signature = (name, fields, *, version_id=1, minimum_version_id=None, subsections=Vec::new(),
        priority="default", pre_save=None, pre_load=None, post_load=None, needed=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        fields: Vec<Bound<'_, PyVmStateField>>,
        version_id: u32,
        minimum_version_id: Option<u32>,
        subsections: Vec<Bound<'_, PyVmStateDescription>>,
        priority: &str,
        pre_save: Option<Py<PyAny>>,
        pre_load: Option<Py<PyAny>>,
        post_load: Option<Py<PyAny>>,
        needed: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let mut b = VmStateDescription::builder(name)
            .version(version_id)
            .minimum_version(minimum_version_id.unwrap_or(version_id))
            .priority(
                priority
                    .parse::<MigrationPriority>()
                    .map_err(|e| PyValueError::new_err(e.to_string()))?,
            );
        for f in &fields {
            b = b.field(f.get().field.clone());
        }
        for s in &subsections {
            b = b.subsection(Arc::clone(&s.get().desc));
        }
        let desc = hooked(b, pre_save, pre_load, post_load, needed)
            .build()
            .map_err(|e| migration_err(py, e.into()))?;
        Ok(PyVmStateDescription { desc })
    }

    /// The name (a section's idstr when a device uses it).
    #[getter]
    fn name(&self) -> &str {
        self.desc.name()
    }

    /// The version written.
    #[getter]
    fn version_id(&self) -> u32 {
        self.desc.version_id()
    }

    /// The oldest version loaded.
    #[getter]
    fn minimum_version_id(&self) -> u32 {
        self.desc.minimum_version_id()
    }

    /// The field names, in wire order.
    #[getter]
    fn field_names(&self) -> Vec<String> {
        self.desc.fields().iter().map(|f| f.name().to_owned()).collect()
    }

    /// The subsection names.
    #[getter]
    fn subsection_names(&self) -> Vec<String> {
        self.desc.subsections().iter().map(|s| s.name().to_owned()).collect()
    }

    /// Encodes `state` (a dict) at this description's version; returns the
    /// body bytes (what follows a FULL section header).
    fn encode(&self, py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<Py<PyBytes>> {
        let mut s = struct_from_py(state, "")?;
        let mut out = Vec::new();
        vmkit_migration::vmstate::encode(&self.desc, &mut s, &mut out, 0).map_err(|e| migration_err(py, e.into()))?;
        Ok(PyBytes::new(py, &out).unbind())
    }

    /// Decodes a body written at `version_id` (default: this version) and
    /// returns the state as a dict.
    #[pyo3(signature = (body, version_id=None))]
    fn decode<'py>(&self, py: Python<'py>, body: &[u8], version_id: Option<u32>) -> PyResult<Bound<'py, PyDict>> {
        let version = version_id.unwrap_or(self.desc.version_id());
        let s = vmkit_migration::vmstate::decode_exact(&self.desc, version, body)
            .map_err(|e| migration_err(py, e.into()))?;
        struct_to_py(py, &s)
    }

    fn __repr__(&self) -> String {
        format!(
            "VMStateDescription({:?}, version_id={}, fields={})",
            self.desc.name(),
            self.desc.version_id(),
            self.desc.fields().len()
        )
    }
}

// ----- devices --------------------------------------------------------------

/// A Python-defined device, seen through the device-state contract: by
/// default its state lives in the object's `data` dict under the field
/// (and subsection) names; the type's `save(obj) -> dict` and
/// `load(obj, state, version)` replace that.
struct PyDevice {
    obj: Object,
    ty: Arc<PyDeviceType>,
}

/// What a Python device type declared.
struct PyDeviceType {
    desc: Arc<VmStateDescription>,
    save: Option<Py<PyAny>>,
    load: Option<Py<PyAny>>,
}

impl PyDevice {
    fn data_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let data = PyObj::borrowed(&self.obj).data(py)?.into_bound(py);
        let d = PyDict::new(py);
        let desc = &self.ty.desc;
        let names = desc
            .fields()
            .iter()
            .map(|f| f.name())
            .chain(desc.subsections().iter().map(|s| s.name()));
        for name in names {
            if let Some(v) = data.get_item(name)? {
                d.set_item(name, v)?;
            }
        }
        Ok(d)
    }
}

impl DeviceState for PyDevice {
    type State = VmStruct;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.ty.desc)
    }

    fn save_state(&self) -> Result<VmStruct, StateError> {
        Python::attach(|py| {
            let run = || -> PyResult<VmStruct> {
                let state = match &self.ty.save {
                    Some(f) => f
                        .call1(py, (PyObj::borrowed(&self.obj),))?
                        .into_bound(py)
                        .cast_into::<PyDict>()
                        .map_err(|_| PyTypeError::new_err("a vmstate save function must return a dict"))?,
                    None => self.data_state(py)?,
                };
                struct_from_py(&state, "")
            };
            run().map_err(|e| StateError::Callback(callback_error(e)))
        })
    }

    fn load_state(&self, state: VmStruct, version_id: u32) -> Result<(), StateError> {
        Python::attach(|py| {
            let run = || -> PyResult<()> {
                let d = struct_to_py(py, &state)?;
                let obj = PyObj::borrowed(&self.obj);
                match &self.ty.load {
                    Some(f) => {
                        f.call1(py, (obj, d, version_id))?;
                    }
                    None => obj.data(py)?.bind(py).update(d.as_mapping())?,
                }
                Ok(())
            };
            run().map_err(|e| StateError::Callback(callback_error(e)))
        })
    }
}

/// Declares the VMState of the device type `type_name`: its realized
/// instances are saved and restored as one section each. By default the
/// state is read from and written to the object's `data` dict (field
/// names as keys); `save(obj) -> dict` and `load(obj, state, version)`
/// replace that.
#[pyfunction]
#[pyo3(signature = (type_name, vmsd, *, save=None, load=None))]
pub fn register_device_vmstate(
    py: Python<'_>,
    type_name: &str,
    vmsd: &Bound<'_, PyVmStateDescription>,
    save: Option<Py<PyAny>>,
    load: Option<Py<PyAny>>,
) -> PyResult<()> {
    let desc = Arc::clone(&vmsd.get().desc);
    let ty = Arc::new(PyDeviceType {
        desc: Arc::clone(&desc),
        save,
        load,
    });
    core_register(type_name, desc, move |obj| {
        Ok(Arc::new(PyDevice {
            obj: obj.clone(),
            ty: Arc::clone(&ty),
        }) as Arc<dyn DynDeviceState>)
    })
    .map_err(|e| migration_err(py, e.into()))
}
