//! `vmkit._core.migration`: bindings of `vmkit-migration` (VMState
//! descriptions, device state of Python types, save / restore / analyze).

mod fd_registry;
mod precopy;
#[allow(unsafe_code)]
mod raw_fd;
mod stream;
mod vmstate;

use pyo3::prelude::*;

/// Fills the `migration` submodule.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<vmstate::PyVmStateField>()?;
    m.add_class::<vmstate::PyVmStateDescription>()?;
    m.add_class::<fd_registry::PyFdRegistry>()?;
    m.add_class::<stream::PyListener>()?;
    m.add_class::<precopy::PyPrecopy>()?;
    m.add_function(wrap_pyfunction!(vmstate::register_device_vmstate, m)?)?;
    m.add_function(wrap_pyfunction!(stream::analyze, m)?)?;
    m.add_function(wrap_pyfunction!(stream::load_ram, m)?)?;
    m.add_function(wrap_pyfunction!(stream::save, m)?)?;
    m.add_function(wrap_pyfunction!(stream::restore, m)?)?;
    Ok(())
}
