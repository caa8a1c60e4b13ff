//! The crate's error type: one variant per layer.

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
