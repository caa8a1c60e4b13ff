//! [`PrecopyError`]: how a precopy run can end other than completed.

use super::stats::PrecopyPhase;

/// Why a precopy run did not complete. In every case dirty logging has
/// been stopped and the source's RAM and devices are as the guest left
/// them (the run only reads them); the stream is incomplete and a
/// destination must refuse it.
#[derive(Debug, thiserror::Error)]
pub enum PrecopyError {
    /// [`PrecopyControl::cancel`](super::PrecopyControl::cancel) was called.
    #[error("migration cancelled during {phase}{}", if *stopped { " (the source was stopped and must be resumed)" } else { "" })]
    Cancelled {
        /// The phase the run was in.
        phase: PrecopyPhase,
        /// Whether the `stop` callback had already been called: the
        /// caller must then resume the source.
        stopped: bool,
    },
    /// The `stop` callback failed; the source is presumed still running.
    #[error("stopping the source failed: {0}")]
    Stop(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writing the stream, reading guest memory or taking a device's
    /// state failed. If it happened after switchover the source is
    /// stopped ([`PrecopySnapshot::source_stopped`](super::PrecopySnapshot::source_stopped))
    /// and must be resumed.
    /// Boxed: the crate's error is large, and this one is returned at
    /// every step of the page loop.
    #[error(transparent)]
    Stream(Box<crate::Error>),
    /// With a return path: the destination did not say it loaded the
    /// stream (it refused it, closed the connection, or no return path
    /// could be opened). The source was stopped and must be resumed.
    #[error("return path: {reason}")]
    ReturnPath {
        /// What happened.
        reason: String,
    },
}

impl From<crate::Error> for PrecopyError {
    fn from(e: crate::Error) -> Self {
        PrecopyError::Stream(Box::new(e))
    }
}

impl From<crate::wire::WireError> for PrecopyError {
    fn from(e: crate::wire::WireError) -> Self {
        PrecopyError::Stream(Box::new(e.into()))
    }
}

impl From<vmkit_memory::Error> for PrecopyError {
    fn from(e: vmkit_memory::Error) -> Self {
        PrecopyError::Stream(Box::new(e.into()))
    }
}

impl From<crate::savevm::SavevmError> for PrecopyError {
    fn from(e: crate::savevm::SavevmError) -> Self {
        PrecopyError::Stream(Box::new(e.into()))
    }
}
