//! `vmkit._core.memory`: bindings of `vmkit-memory` (RAM blocks, regions,
//! address spaces, dirty tracking, the workload).

#[allow(unsafe_code)]
mod buffer;
pub(crate) mod ram;
pub(crate) mod regions;

use pyo3::prelude::*;

/// Fills the `memory` submodule (and registers the crate's QOM types).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    vmkit_memory::register_types();
    m.add_class::<regions::PyMemoryRegion>()?;
    m.add_class::<regions::PyAddressSpace>()?;
    m.add_class::<regions::PyFlatRange>()?;
    m.add_class::<ram::PyRamBlock>()?;
    m.add_class::<ram::PyDirtyPages>()?;
    m.add_class::<ram::PyWorkload>()?;
    m.add_function(wrap_pyfunction!(regions::mtree, m)?)?;
    m.add_function(wrap_pyfunction!(regions::mtree_flat, m)?)?;
    m.add_function(wrap_pyfunction!(regions::pc_memory, m)?)?;
    m.add_function(wrap_pyfunction!(regions::begin, m)?)?;
    m.add_function(wrap_pyfunction!(regions::commit, m)?)?;
    m.add_function(wrap_pyfunction!(ram::measure_dirty_rate, m)?)?;
    Ok(())
}
