//! Transports: where streams go, and how bytes get there.
//!
//! * [`Transport`]: a destination named as QEMU's `migrate` names one
//!   (`file:PATH`, `exec:CMD`), parsed from its URI; schemes vmkit does not
//!   carry yet (`unix:`, `tcp:`, `fd:`, ...) are refused by name.
//! * [`sink`]: opening a destination for writing — a regular file is
//!   replaced only once the stream is complete, a FIFO is waited for with
//!   a timeout and an interrupt check, `exec:` feeds a command — and the
//!   pipe sizing policy.
//! * [`source`]: opening a stream for reading, with the same wait for a
//!   FIFO's other end.
//! * [`gather`]: gathered writes of record headers and guest pages
//!   (`writev(2)`, short writes, `EINTR`, `poll(2)` on non-blocking
//!   descriptors) and the batch sizes of RAM pages. It is the crate's only
//!   `unsafe` code.
//!
//! The live-migration transports (`unix:`, `tcp:`, `fd:`, several
//! channels) belong here too: a new [`Transport`] variant, its parse arm,
//! and its arm in [`Sink::open`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[allow(unsafe_code)]
pub mod gather;
pub mod sink;
pub mod source;

pub use gather::{BATCH_BYTES, BATCH_RECORDS, FdWriter, GatherList, PartialWrite};
pub use sink::{OpenOptions, PIPE_BUFFER, Sink};
pub use source::open_source;

/// A stream destination (or, later, source), as QEMU's `migrate` URI names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// `file:PATH`: a file, FIFO, device or Unix socket at `PATH`.
    File(PathBuf),
    /// `exec:CMD`: the standard input (or output) of `sh -c CMD`.
    Exec(String),
}

/// URI schemes QEMU's `migrate` knows that vmkit does not carry yet.
const NOT_YET: &[&str] = &["unix", "tcp", "fd", "rdma", "vsock", "channels"];

impl FromStr for Transport {
    type Err = TransportError;

    fn from_str(uri: &str) -> Result<Transport, TransportError> {
        let bad = |reason: &str| TransportError::BadUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| bad("no scheme (expected file:PATH or exec:CMD)"))?;
        match scheme {
            "file" if rest.is_empty() => Err(bad("empty path")),
            "file" => Ok(Transport::File(PathBuf::from(rest))),
            "exec" if rest.trim().is_empty() => Err(bad("empty command")),
            "exec" => Ok(Transport::Exec(rest.to_owned())),
            s if NOT_YET.contains(&s) => Err(TransportError::Unsupported { scheme: s.to_owned() }),
            _ => Err(bad("unknown scheme (expected file:PATH or exec:CMD)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::File(path) => write!(f, "file:{}", path.display()),
            Transport::Exec(command) => write!(f, "exec:{command}"),
        }
    }
}

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
    #[error("the '{scheme}:' transport is not supported (only file: and exec:)")]
    Unsupported {
        /// The scheme.
        scheme: String,
    },
}

impl TransportError {
    /// The errno this error stands for, so callers can report it as an
    /// OS error (`ETIMEDOUT` for a FIFO nobody opened; `EINVAL` for a bad
    /// URI; `EPROTONOSUPPORT` for a scheme not carried; `EIO` for a failed
    /// command).
    pub fn errno(&self) -> i32 {
        match self {
            TransportError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            TransportError::TimedOut { .. } => libc::ETIMEDOUT,
            TransportError::CommandFailed { .. } => libc::EIO,
            TransportError::BadUri { .. } => libc::EINVAL,
            TransportError::Unsupported { .. } => libc::EPROTONOSUPPORT,
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
