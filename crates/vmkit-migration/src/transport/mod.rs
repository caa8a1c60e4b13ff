//! Transports: where streams go, where they come from, and how bytes get
//! there.
//!
//! * [`Transport`] (`uri`): an endpoint named as QEMU's `migrate` and
//!   `-incoming` name one — `unix:PATH`, `tcp:HOST:PORT` (`[IPV6]`
//!   in brackets), `fd:NAME`, `file:PATH[,offset=N]`, `exec:CMD` —
//!   parsed from its URI; schemes vmkit does not carry yet (`rdma:`,
//!   `vsock:`, ...) are refused by name.
//! * [`sink`]: opening an endpoint for writing — a regular file is
//!   replaced only once the stream is complete, a FIFO is waited for with
//!   a timeout and an interrupt check, a socket is connected to (TCP
//!   without blocking, with the same timeout and interrupt check),
//!   `exec:` feeds a command — and the pipe sizing policy.
//! * [`listener`]: an incoming endpoint bound ([`Listener`]) and the
//!   stream it accepts ([`Source`]).
//! * [`source`]: opening a path for reading, with the same wait for a
//!   FIFO's other end.
//! * [`fd_registry`]: descriptors handed over by name (QEMU's `getfd`),
//!   which `fd:NAME` uses.
//! * `net`: name resolution and the loopback rule (`tcp:` uses loopback
//!   addresses only unless [`OpenOptions::allow_remote`]), the
//!   interruptible connect and wait, and the socket file of a `unix:`
//!   listener.
//! * [`gather`]: gathered writes of record headers and guest pages
//!   (`writev(2)`, short writes, `EINTR`, `poll(2)` on non-blocking
//!   descriptors) and the batch sizes of RAM pages. It is the crate's only
//!   `unsafe` code.

use std::time::Duration;

pub mod fd_registry;
#[allow(unsafe_code)]
pub mod gather;
pub mod listener;
mod net;
pub mod return_path;
pub mod sink;
pub mod source;
mod uri;

pub use fd_registry::{FdError, FdRegistry};
pub use gather::{BATCH_BYTES, BATCH_RECORDS, FdWriter, GatherList, PartialWrite};
pub use listener::{Listener, Source};
pub use return_path::ReturnChannel;
pub use sink::{OpenOptions, PIPE_BUFFER, Sink};
pub use source::open_source;
pub use uri::Transport;

/// Transport errors: opening, waiting, finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A system call on `what` (a path or `exec:CMD`) failed.
    #[error("{what}: {source}")]
    Io {
        /// The path or command.
        what: String,
        /// The error, with its errno.
        source: std::io::Error,
    },
    /// A FIFO had no peer (a reader for a sink, a writer for a source)
    /// within the timeout.
    #[error("{what}: no {peer} opened the FIFO within {waited:?}")]
    TimedOut {
        /// The path.
        what: String,
        /// `reader` or `writer`.
        peer: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// An `exec:` command exited unsuccessfully.
    #[error("exec:{command}: the command failed ({status})")]
    CommandFailed {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// A URI that is not a transport.
    #[error("'{uri}': {reason}")]
    BadUri {
        /// The URI.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A migration URI scheme vmkit does not carry yet.
    #[error("the '{scheme}:' transport is not supported (only unix:, tcp:, fd:, file: and exec:)")]
    Unsupported {
        /// The scheme.
        scheme: String,
    },
    /// An endpoint refused before any I/O: a non-loopback `tcp:` address
    /// without remote access allowed, a `unix:` path that is not free, an
    /// offset on a file that cannot seek, a stream handed out twice.
    #[error("{what}: {reason}")]
    Refused {
        /// The URI or path.
        what: String,
        /// Why.
        reason: String,
        /// The errno this stands for.
        errno: i32,
    },
    /// A socket wait ran out: no connection came to a listener, or a
    /// connection was not established, within the timeout.
    #[error("{what}: {event} within {waited:?}")]
    NoConnection {
        /// The URI.
        what: String,
        /// What did not happen.
        event: &'static str,
        /// How long it waited.
        waited: Duration,
    },
    /// An `fd:NAME` with no descriptor registered under that name.
    #[error(transparent)]
    Fd(#[from] FdError),
}

impl TransportError {
    /// The errno this error stands for, so callers can report it as an
    /// OS error (`ETIMEDOUT` for a FIFO nobody opened or a socket wait
    /// that ran out; `EINVAL` for a bad URI; `EPROTONOSUPPORT` for a
    /// scheme not carried; `EIO` for a failed command; `EBADF` for an
    /// unknown descriptor name; a refused endpoint's own errno).
    pub fn errno(&self) -> i32 {
        match self {
            TransportError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            TransportError::TimedOut { .. } | TransportError::NoConnection { .. } => libc::ETIMEDOUT,
            TransportError::CommandFailed { .. } => libc::EIO,
            TransportError::BadUri { .. } => libc::EINVAL,
            TransportError::Unsupported { .. } => libc::EPROTONOSUPPORT,
            TransportError::Refused { errno, .. } => *errno,
            TransportError::Fd(_) => libc::EBADF,
        }
    }
}

/// An I/O failure of a stream, as an operating-system error: what a binding
/// needs to raise it as one (Python's `OSError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsFailure {
    /// The errno.
    pub errno: i32,
    /// What failed, without the errno's number.
    pub message: String,
    /// The stream offset of the first byte that did not reach the sink;
    /// `None` when the failure was not a write (opening, finishing).
    pub offset: Option<u64>,
}

/// An I/O error's text without Rust's " (os error N)" suffix (the errno is
/// carried separately).
pub(crate) fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

impl TransportError {
    /// This error as an [`OsFailure`].
    pub fn os_failure(&self) -> OsFailure {
        let message = match self {
            TransportError::Io { source, .. } => describe(source),
            other => other.to_string(),
        };
        OsFailure {
            errno: self.errno(),
            message,
            offset: None,
        }
    }
}

/// Opening a sink failed, or the caller's interrupt check stopped it (its
/// error, unchanged).
#[derive(Debug)]
pub enum OpenError<E> {
    /// The interrupt check returned this error (a Python signal handler's
    /// exception, for example).
    Interrupted(E),
    /// The transport failed.
    Transport(TransportError),
}

impl<E> From<TransportError> for OpenError<E> {
    fn from(e: TransportError) -> Self {
        OpenError::Transport(e)
    }
}

impl<E: std::fmt::Display> std::fmt::Display for OpenError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Interrupted(e) => write!(f, "interrupted: {e}"),
            OpenError::Transport(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for OpenError<E> {}

#[cfg(test)]
mod tests;
