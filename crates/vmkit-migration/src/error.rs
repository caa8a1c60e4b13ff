//! The crate's error type: one variant per layer.

use crate::transport::{OsFailure, describe};
use crate::wire::WireError;

/// The result type of the migration crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Migration errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream-format error (with its byte offset).
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    /// A VMState encoding or decoding error (with section, field and offset).
    #[error(transparent)]
    VmState(#[from] crate::vmstate::VmStateError),
    /// A whole-machine save or restore error (devices, missing sections).
    #[error(transparent)]
    Savevm(#[from] crate::savevm::SavevmError),
    /// A guest-memory error while saving or restoring RAM.
    #[error(transparent)]
    Memory(#[from] vmkit_memory::Error),
    /// A transport error: opening or completing a sink.
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

impl Error {
    /// The failure as an operating-system error, if it is one: a write to
    /// the sink that failed (with the offset of the first byte it did not
    /// take) or a transport error. Stream-format, device and memory errors
    /// are not.
    pub fn os_failure(&self) -> Option<OsFailure> {
        match self {
            Error::Wire(WireError::Io { offset, source }) => Some(OsFailure {
                errno: source.raw_os_error().unwrap_or(libc::EIO),
                message: format!("{} at stream offset {offset}", describe(source)),
                offset: Some(*offset),
            }),
            Error::Transport(t) => Some(t.os_failure()),
            Error::Wire(_) | Error::VmState(_) | Error::Savevm(_) | Error::Memory(_) => None,
        }
    }
}
