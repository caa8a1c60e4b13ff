//! `vmkit._core`: the PyO3 bindings of vmkit. Bindings only — every piece of
//! logic lives in the core crates; this crate converts values and errors.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod buffer;
mod convert;
mod errors;
mod memory;
mod migration;
mod object;
mod property;
mod qom;
mod ram;
mod vmstate;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<object::PyObj>()?;
    m.add_class::<object::PyStorageGuard>()?;
    m.add_class::<property::PyProperty>()?;
    m.add_class::<property::PyPropertyInfo>()?;
    m.add_class::<qom::PyClassInit>()?;
    m.add_class::<qom::PyTypeSummary>()?;
    m.add_function(wrap_pyfunction!(qom::register_type, m)?)?;
    m.add_function(wrap_pyfunction!(qom::list_types, m)?)?;
    m.add_function(wrap_pyfunction!(qom::type_is_a, m)?)?;
    m.add_function(wrap_pyfunction!(qom::type_interfaces, m)?)?;
    m.add_function(wrap_pyfunction!(qom::type_properties, m)?)?;
    m.add_function(wrap_pyfunction!(qom::device_type_properties, m)?)?;
    m.add_function(wrap_pyfunction!(qom::new_object, m)?)?;
    m.add_function(wrap_pyfunction!(qom::root, m)?)?;
    m.add_function(wrap_pyfunction!(qom::resolve_path, m)?)?;
    m.add_function(wrap_pyfunction!(qom::qom_tree, m)?)?;
    m.add_function(wrap_pyfunction!(qom::create_machine, m)?)?;
    m.add_function(wrap_pyfunction!(qom::destroy_machine, m)?)?;
    m.add_function(wrap_pyfunction!(qom::machine_creation_done, m)?)?;
    m.add_function(wrap_pyfunction!(qom::machine, m)?)?;
    m.add_function(wrap_pyfunction!(qom::device_add, m)?)?;
    m.add_function(wrap_pyfunction!(qom::device_add_from_text, m)?)?;
    m.add_function(wrap_pyfunction!(qom::device_del, m)?)?;
    m.add_function(wrap_pyfunction!(qom::object_add, m)?)?;
    m.add_function(wrap_pyfunction!(qom::object_add_from_text, m)?)?;
    m.add_function(wrap_pyfunction!(qom::object_del, m)?)?;
    m.add_function(wrap_pyfunction!(qom::singleton_instance, m)?)?;
    m.add_function(wrap_pyfunction!(qom::stats, m)?)?;
    m.add_function(wrap_pyfunction!(qom::parse_size, m)?)?;
    m.add_function(wrap_pyfunction!(qom::format_size, m)?)?;

    vmkit_memory::register_types();
    m.add_class::<memory::PyMemoryRegion>()?;
    m.add_class::<memory::PyAddressSpace>()?;
    m.add_class::<memory::PyFlatRange>()?;
    m.add_class::<ram::PyRamBlock>()?;
    m.add_class::<ram::PyDirtyPages>()?;
    m.add_class::<ram::PyWorkload>()?;
    m.add_function(wrap_pyfunction!(memory::mtree, m)?)?;
    m.add_function(wrap_pyfunction!(memory::pc_memory, m)?)?;
    m.add_function(wrap_pyfunction!(memory::mtree_flat, m)?)?;
    m.add_function(wrap_pyfunction!(memory::memory_begin, m)?)?;
    m.add_function(wrap_pyfunction!(memory::memory_commit, m)?)?;
    m.add_function(wrap_pyfunction!(ram::measure_dirty_rate, m)?)?;
    m.add_function(wrap_pyfunction!(migration::analyze_stream, m)?)?;
    m.add_function(wrap_pyfunction!(migration::load_ram_from_stream, m)?)?;
    m.add_function(wrap_pyfunction!(migration::save_stream, m)?)?;
    m.add_function(wrap_pyfunction!(migration::restore_stream, m)?)?;
    m.add_class::<vmstate::PyVmStateField>()?;
    m.add_class::<vmstate::PyVmStateDescription>()?;
    m.add_function(wrap_pyfunction!(vmstate::register_device_vmstate, m)?)?;
    Ok(())
}
