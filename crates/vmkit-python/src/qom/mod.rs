//! `vmkit._core.qom`: bindings of `vmkit-qom` (types, objects, properties,
//! the composition tree, machine and device placement).

pub(crate) mod object;
pub(crate) mod property;
mod types;

use pyo3::prelude::*;

/// Fills the `qom` submodule.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<object::PyObj>()?;
    m.add_class::<object::PyStorageGuard>()?;
    m.add_class::<property::PyProperty>()?;
    m.add_class::<property::PyPropertyInfo>()?;
    m.add_class::<types::PyClassInit>()?;
    m.add_class::<types::PyTypeSummary>()?;
    m.add_function(wrap_pyfunction!(types::register_type, m)?)?;
    m.add_function(wrap_pyfunction!(types::list_types, m)?)?;
    m.add_function(wrap_pyfunction!(types::type_is_a, m)?)?;
    m.add_function(wrap_pyfunction!(types::type_interfaces, m)?)?;
    m.add_function(wrap_pyfunction!(types::type_properties, m)?)?;
    m.add_function(wrap_pyfunction!(types::device_type_properties, m)?)?;
    m.add_function(wrap_pyfunction!(types::new, m)?)?;
    m.add_function(wrap_pyfunction!(types::root, m)?)?;
    m.add_function(wrap_pyfunction!(types::resolve_path, m)?)?;
    m.add_function(wrap_pyfunction!(types::qom_tree, m)?)?;
    m.add_function(wrap_pyfunction!(types::create_machine, m)?)?;
    m.add_function(wrap_pyfunction!(types::destroy_machine, m)?)?;
    m.add_function(wrap_pyfunction!(types::reset_tree, m)?)?;
    m.add_function(wrap_pyfunction!(types::machine_creation_done, m)?)?;
    m.add_function(wrap_pyfunction!(types::machine, m)?)?;
    m.add_function(wrap_pyfunction!(types::device_add, m)?)?;
    m.add_function(wrap_pyfunction!(types::device_add_from_text, m)?)?;
    m.add_function(wrap_pyfunction!(types::device_del, m)?)?;
    m.add_function(wrap_pyfunction!(types::object_add, m)?)?;
    m.add_function(wrap_pyfunction!(types::object_add_from_text, m)?)?;
    m.add_function(wrap_pyfunction!(types::object_del, m)?)?;
    m.add_function(wrap_pyfunction!(types::singleton_instance, m)?)?;
    m.add_function(wrap_pyfunction!(types::stats, m)?)?;
    m.add_function(wrap_pyfunction!(types::parse_size, m)?)?;
    m.add_function(wrap_pyfunction!(types::format_size, m)?)?;
    Ok(())
}
