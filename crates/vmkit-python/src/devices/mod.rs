//! `vmkit._core.devices`: bindings of `vmkit-devices` (the q35-like
//! board, `query-pci`, a PCI function's DMA space, the MSI window's
//! record, the virtual clock, input for USB HID devices). Registers the
//! device types when imported.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vmkit_devices::glue::usb::{hid, input};
use vmkit_devices::glue::{Q35Options, build_q35, clock, msi, pci, usb};

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

/// The MSI messages the window recorded (oldest first, the last 1024),
/// as (address, data).
#[pyfunction]
pub(crate) fn msi_messages() -> Vec<(u64, u32)> {
    msi::current().map_or_else(Vec::new, |s| s.messages().iter().map(|m| (m.address, m.data)).collect())
}

/// How many MSI messages the window received.
#[pyfunction]
pub(crate) fn msi_count() -> u64 {
    msi::current().map_or(0, |s| s.count())
}

/// Forgets the recorded MSI messages.
#[pyfunction]
pub(crate) fn msi_clear() {
    if let Some(s) = msi::current() {
        s.clear();
    }
}

/// The virtual clock, in nanoseconds.
#[pyfunction]
pub(crate) fn clock_ns() -> i64 {
    clock::now_ns()
}

/// Moves the virtual clock forward by `ns` and runs the devices' due
/// timers; returns the new time.
#[pyfunction]
pub(crate) fn clock_advance(ns: u64) -> i64 {
    let now = clock::advance_ns(ns);
    usb::run_timers();
    now
}

/// A key event for a `usb-kbd`, by QEMU key name.
#[pyfunction]
pub(crate) fn input_key(py: Python<'_>, dev: &Bound<'_, PyObj>, qcode: &str, down: bool) -> PyResult<()> {
    hid::key(&dev.get().handle, qcode, down).map_err(|e| glue_err(py, e))
}

/// A key event for a `usb-kbd`, by QEMU key number.
#[pyfunction]
pub(crate) fn input_key_number(py: Python<'_>, dev: &Bound<'_, PyObj>, number: u8, down: bool) -> PyResult<()> {
    hid::key_number(&dev.get().handle, number, down).map_err(|e| glue_err(py, e))
}

/// An absolute position on axis `x` or `y` for a `usb-tablet`.
#[pyfunction]
pub(crate) fn input_abs(py: Python<'_>, dev: &Bound<'_, PyObj>, axis: &str, value: i32) -> PyResult<()> {
    let axis = hid::axis_by_name(axis).ok_or_else(|| PyValueError::new_err(format!("unknown axis '{axis}'")))?;
    hid::pointer_abs(&dev.get().handle, axis, value).map_err(|e| glue_err(py, e))
}

/// A button event for a `usb-tablet`, by QAPI `InputButton` name.
#[pyfunction]
pub(crate) fn input_button(py: Python<'_>, dev: &Bound<'_, PyObj>, button: &str, down: bool) -> PyResult<()> {
    let b = hid::button_by_name(button)
        .ok_or_else(|| PyValueError::new_err(format!("button '{button}' is not one a usb-tablet reports")))?;
    hid::button(&dev.get().handle, b, down).map_err(|e| glue_err(py, e))
}

/// The end of a batch of input events.
#[pyfunction]
pub(crate) fn input_sync(py: Python<'_>, dev: &Bound<'_, PyObj>) -> PyResult<()> {
    hid::sync(&dev.get().handle).map_err(|e| glue_err(py, e))
}

/// The key names `input_key` knows.
#[pyfunction]
pub(crate) fn qcodes() -> Vec<&'static str> {
    input::qcodes().collect()
}

/// The USB port a realized `usb-tablet` / `usb-kbd` sits in.
#[pyfunction]
pub(crate) fn usb_port(dev: &Bound<'_, PyObj>) -> Option<usize> {
    usb::usb_attachment(&dev.get().handle).map(|a| a.port())
}

/// Fills the `devices` submodule (and registers the device types).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    vmkit_devices::glue::register_types().map_err(|e| glue_err(m.py(), e))?;
    m.add_function(wrap_pyfunction!(q35, m)?)?;
    m.add_function(wrap_pyfunction!(query_pci, m)?)?;
    m.add_function(wrap_pyfunction!(dma_space, m)?)?;
    m.add_function(wrap_pyfunction!(msi_messages, m)?)?;
    m.add_function(wrap_pyfunction!(msi_count, m)?)?;
    m.add_function(wrap_pyfunction!(msi_clear, m)?)?;
    m.add_function(wrap_pyfunction!(clock_ns, m)?)?;
    m.add_function(wrap_pyfunction!(clock_advance, m)?)?;
    m.add_function(wrap_pyfunction!(input_key, m)?)?;
    m.add_function(wrap_pyfunction!(input_key_number, m)?)?;
    m.add_function(wrap_pyfunction!(input_abs, m)?)?;
    m.add_function(wrap_pyfunction!(input_button, m)?)?;
    m.add_function(wrap_pyfunction!(input_sync, m)?)?;
    m.add_function(wrap_pyfunction!(qcodes, m)?)?;
    m.add_function(wrap_pyfunction!(usb_port, m)?)?;
    Ok(())
}
