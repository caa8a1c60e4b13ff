//! The buffer protocol for RAM blocks (`memoryview(block)`): the only module
//! of the bindings with `unsafe` code.

use pyo3::ffi;
use pyo3::prelude::*;

use crate::memory::ram::PyRamBlock;

/// Fills `view` to expose the whole of `slf`'s RAM block, writable, without copying.
///
/// # Safety
///
/// `view` must be the `Py_buffer` CPython passed to `bf_getbuffer`.
pub(crate) unsafe fn fill_ram_buffer(
    slf: &Bound<'_, PyRamBlock>,
    view: *mut ffi::Py_buffer,
    flags: std::os::raw::c_int,
) -> PyResult<()> {
    let block = &slf.get().block;
    let len = isize::try_from(block.used_length())
        .map_err(|_| pyo3::exceptions::PyBufferError::new_err("RAM block too large for a buffer"))?;
    let ptr = block.host().as_ptr();
    // SAFETY: `ptr` is the start of a live mapping of `len` bytes owned by the
    // block's `Arc`, which the `PyRamBlock` holds; `PyBuffer_FillInfo` stores a
    // new reference to `slf` in `view->obj`, so the mapping outlives the view.
    // Guest memory is shared with other threads (the workload engine, DMA), so
    // Python sees it as it changes, as a guest's memory would be seen.
    let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr.cast(), len, 0, flags) };
    if rc == -1 {
        return Err(PyErr::fetch(slf.py()));
    }
    Ok(())
}
