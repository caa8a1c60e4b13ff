//! `Property` (a property definition built in Python) and `PropertyInfo`
//! (what introspection reports).

use std::sync::Arc;

use pyo3::prelude::*;
use vmkit_qom::{Error, KindOptions, PropertyDef, PropertyInfo as CoreInfo, PropertyKind, Value};

use crate::convert::{from_value, to_value};
use crate::errors::IntoPyResult;
use crate::qom::object::PyObj;

/// A property definition, for `register_type` and `Object.add_property`.
///
/// `type` is a QOM type string: `bool`, `int8`..`int64`, `uint8`..`uint64`,
/// `str`, `size`, `enum` (with `values`) or `link<TYPE>`.
#[pyclass(name = "Property", module = "vmkit._core.qom", frozen)]
pub(crate) struct PyProperty {
    pub(crate) def: PropertyDef,
}

#[pymethods]
impl PyProperty {
    #[new]
    #[pyo3(signature = (name, r#type, *, default=None, description=None, read_only=false, before_realize=false,
                        min=None, max=None, values=None, enum_name=None, strong=true, getter=None, setter=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        r#type: &str,
        default: Option<&Bound<'_, PyAny>>,
        description: Option<String>,
        read_only: bool,
        before_realize: bool,
        min: Option<i128>,
        max: Option<i128>,
        values: Option<Vec<String>>,
        enum_name: Option<String>,
        strong: bool,
        getter: Option<Py<PyAny>>,
        setter: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let fail = |reason: String| Error::TypeRegistration {
            name: format!("property '{name}'"),
            reason,
        };
        if name.is_empty() || name.contains('/') {
            return Err(fail("a property name must be non-empty and contain no '/'".into())).py_err(py);
        }
        let options = KindOptions {
            min,
            max,
            values,
            enum_name,
            strong,
        };
        let kind = PropertyKind::parse_with(r#type, options)
            .map_err(|e| fail(e.to_string()))
            .py_err(py)?;
        let mut def = PropertyDef::new(name, kind);
        if let Some(d) = default {
            def.default = Some(to_value(d)?);
        }
        def.description = description.map(Arc::from);
        def.read_only = read_only;
        def.before_realize_only = before_realize;
        if getter.is_some() || setter.is_some() {
            let get = getter.map(|g| -> vmkit_qom::Getter {
                let g = Arc::new(g);
                Arc::new(move |obj| {
                    Python::attach(|py| {
                        let out = g
                            .call1(py, (PyObj::borrowed(obj),))
                            .map_err(|e| Error::hook("getter", obj.describe(), e))?;
                        to_value(out.bind(py)).map_err(|e| Error::hook("getter", obj.describe(), e))
                    })
                })
            });
            let set = setter.map(|s| -> vmkit_qom::Setter {
                let s = Arc::new(s);
                Arc::new(move |obj, value: Value| {
                    Python::attach(|py| {
                        let v = from_value(py, &value).map_err(|e| Error::hook("setter", obj.describe(), e))?;
                        s.call1(py, (PyObj::borrowed(obj), v))
                            .map(|_| ())
                            .map_err(|e| Error::hook("setter", obj.describe(), e))
                    })
                })
            });
            let read_only = def.read_only || set.is_none();
            def = def.accessors(get, set);
            def.read_only = read_only;
        }
        Ok(PyProperty { def })
    }

    /// The property's name.
    #[getter]
    fn name(&self) -> &str {
        &self.def.name
    }

    /// The QOM type string, e.g. `uint8` or `link<device>`.
    #[getter]
    fn r#type(&self) -> String {
        self.def.kind.type_name()
    }

    fn __repr__(&self) -> String {
        format!("Property({:?}, {:?})", &*self.def.name, self.def.kind.type_name())
    }
}

/// What introspection reports about a property.
#[pyclass(name = "PropertyInfo", module = "vmkit._core.qom", frozen)]
pub(crate) struct PyPropertyInfo {
    pub(crate) info: CoreInfo,
}

#[pymethods]
impl PyPropertyInfo {
    /// The name.
    #[getter]
    fn name(&self) -> &str {
        &self.info.name
    }
    /// The QOM type string.
    #[getter]
    fn r#type(&self) -> &str {
        &self.info.type_name
    }
    /// The description, if any.
    #[getter]
    fn description(&self) -> Option<&str> {
        self.info.description.as_deref()
    }
    /// The default value of a stored property, else None.
    #[getter]
    fn default_value(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.info.default_value {
            Some(v) => from_value(py, v),
            None => Ok(py.None()),
        }
    }
    /// Whether it can be read.
    #[getter]
    fn readable(&self) -> bool {
        self.info.readable
    }
    /// Whether it can be written.
    #[getter]
    fn writable(&self) -> bool {
        self.info.writable
    }
    /// Whether writes are refused once realized or completed.
    #[getter]
    fn before_realize(&self) -> bool {
        self.info.before_realize_only
    }
    /// Whether the class declares it (rather than the instance).
    #[getter]
    fn class_property(&self) -> bool {
        self.info.class_property
    }
    fn __repr__(&self) -> String {
        format!(
            "PropertyInfo(name={:?}, type={:?})",
            self.info.name, self.info.type_name
        )
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyPropertyInfo>().is_ok_and(|o| o.get().info == self.info)
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.info.name.hash(&mut h);
        self.info.type_name.hash(&mut h);
        h.finish()
    }
}

pub(crate) fn infos(list: Vec<CoreInfo>) -> Vec<PyPropertyInfo> {
    list.into_iter().map(|info| PyPropertyInfo { info }).collect()
}
