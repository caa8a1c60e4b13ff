//! `vmkit._core.devices`: bindings of `vmkit-devices` (the q35-like
//! board, `query-pci`, a PCI function's DMA space). Registers the device types when imported.

use pyo3::prelude::*;
use vmkit_devices::glue::{Q35Options, build_q35, pci};

use crate::convert::json_to_py;
use crate::errors::glue_err;
use crate::memory::ram::PyRamBlock;
use crate::memory::regions::{PyAddressSpace, PyMemoryRegion};
use crate::qom::object::PyObj;

/// Builds the q35-like board into `machine` over `block`: returns the
/// `system` region, the `memory` address space and the `I/O` address
/// space. `hotplug`: whether `pcie.0` takes devices at run time.
#[pyfunction]
#[pyo3(signature = (block, machine, hotplug = true))]
pub(crate) fn q35(
    py: Python<'_>,
    block: &Bound<'_, PyRamBlock>,
    machine: &Bound<'_, PyObj>,
    hotplug: bool,
) -> PyResult<(PyMemoryRegion, PyAddressSpace, PyAddressSpace)> {
    let board = build_q35(&machine.get().handle, block.get().block.clone(), Q35Options { hotplug })
        .map_err(|e| glue_err(py, e))?;
    Ok((
        PyMemoryRegion {
            region: board.memory.system,
        },
        PyAddressSpace {
            space: board.memory.space,
        },
        PyAddressSpace { space: board.io_space },
    ))
}

/// `query-pci`'s answer for the current machine, in QEMU's shape.
#[pyfunction]
pub(crate) fn query_pci(py: Python<'_>) -> PyResult<Py<PyAny>> {
    json_to_py(py, &pci::query_pci())
}

/// The bus-master address space of the realized PCI function `obj`: what
/// its DMA reaches (through the IOMMU when one translates for it), or
/// `None` if `obj` is no realized PCI function.
#[pyfunction]
pub(crate) fn dma_space(obj: &Bound<'_, PyObj>) -> Option<PyAddressSpace> {
    pci::function_dma_space(&obj.get().handle).map(|space| PyAddressSpace { space })
}

/// Fills the `devices` submodule (and registers the device types).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    vmkit_devices::glue::register_types().map_err(|e| glue_err(m.py(), e))?;
    m.add_function(wrap_pyfunction!(q35, m)?)?;
    m.add_function(wrap_pyfunction!(query_pci, m)?)?;
    m.add_function(wrap_pyfunction!(dma_space, m)?)?;
    Ok(())
}
