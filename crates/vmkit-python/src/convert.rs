//! Conversions between Python values and property values.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyString};
use vmkit_qom::Value;

use crate::errors::{PropertyTypeError, PropertyValueError};

/// A Python value as a property value: `bool`, `int`, `str` or `None`.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.is_truthy()?));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        return Err(PropertyValueError::new_err(format!(
            "integer {obj} does not fit in 64 bits"
        )));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::str(s.to_str()?));
    }
    Err(PropertyTypeError::new_err(format!(
        "a property value must be a bool, int, str or None, not {}",
        obj.get_type().name()?
    )))
}

/// A property value as a Python object.
pub(crate) fn from_value(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any().unbind(),
        Value::Str(s) => PyString::new(py, s).into_any().unbind(),
    })
}
