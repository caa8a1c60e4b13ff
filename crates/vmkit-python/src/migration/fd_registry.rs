//! Named descriptors (QEMU's `getfd` / `closefd`) for `fd:NAME` transports.

use std::os::fd::RawFd;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vmkit_migration::transport::FdRegistry;

use super::raw_fd::dup_raw_fd;

/// Descriptors kept by name, for `fd:NAME` migration URIs (QEMU's
/// `getfd`): `Precopy(..., fds=)` and `Listener(..., fds=)` take theirs
/// out when they open the stream.
#[pyclass(name = "FdRegistry", module = "vmkit._core.migration", frozen)]
pub struct PyFdRegistry {
    pub(crate) inner: Arc<FdRegistry>,
}

#[pymethods]
impl PyFdRegistry {
    #[new]
    fn new() -> Self {
        PyFdRegistry {
            inner: Arc::new(FdRegistry::new()),
        }
    }

    /// Keeps a duplicate of descriptor `fd` under `name` (the caller still
    /// owns `fd`); one already under that name is closed. A name starting
    /// with a digit is refused (`ValueError`, QEMU's message).
    fn add(&self, name: &str, fd: RawFd) -> PyResult<()> {
        let owned = dup_raw_fd(fd)?;
        self.inner
            .add(name, owned)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Closes the descriptor under `name` (QEMU's `closefd`); `ValueError`
    /// with QEMU's message if there is none.
    fn close(&self, name: &str) -> PyResult<()> {
        self.inner.close(name).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The names held, sorted.
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}
