//! A descriptor number from Python made into an owned descriptor: the
//! bindings' one place that trusts a raw descriptor number.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

/// A close-on-exec duplicate of descriptor `fd`, which the caller keeps
/// (and may close) as before. A number that is not an open descriptor is
/// an `OSError` (`EBADF`).
pub(crate) fn dup_raw_fd(fd: RawFd) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyOSError::new_err((
            rustix::io::Errno::BADF.raw_os_error(),
            format!("bad file descriptor {fd}"),
        )));
    }
    // SAFETY: the borrow lives only for the `fcntl(F_DUPFD_CLOEXEC)` call,
    // during which the caller (holding the GIL) keeps `fd` open; a number
    // that is not an open descriptor makes the call fail with EBADF, which
    // touches no memory.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_dupfd_cloexec(borrowed, 0)
        .map_err(|e| PyOSError::new_err((e.raw_os_error(), format!("file descriptor {fd}: {e}"))))
}
