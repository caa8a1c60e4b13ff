//! [`open_source`]: where a stream is read from — a file, a device, a
//! FIFO (waited for as a sink's FIFO is) or a listening Unix socket.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::OFlags;

use super::{OpenError, OpenOptions, TransportError};

fn io_err(what: &Path) -> impl FnOnce(io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Opens `path` for reading a stream. A regular file or device is opened
/// as it is; a listening Unix socket is connected to. A FIFO is opened
/// without blocking and then waited on until a writer has sent something
/// (or connected and left): every `opts.retry_every` at most the caller's
/// `interrupt` check runs (its error comes back unchanged, as
/// [`OpenError::Interrupted`]) until `opts.timeout`
/// ([`TransportError::TimedOut`]); then reads block as on any pipe.
pub fn open_source<E>(
    path: &Path,
    opts: &OpenOptions,
    interrupt: &dyn Fn() -> Result<(), E>,
) -> Result<File, OpenError<E>> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let ft = meta.file_type();
    if ft.is_socket() {
        let stream = UnixStream::connect(path).map_err(io_err(path))?;
        return Ok(File::from(std::os::fd::OwnedFd::from(stream)));
    }
    if !ft.is_fifo() {
        return Ok(File::open(path).map_err(io_err(path))?);
    }
    // A FIFO opened for reading without blocking succeeds at once; until a
    // writer comes, Linux reports neither data nor hangup on it.
    let file = FsOpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io_err(path))?;
    let start = Instant::now();
    loop {
        let waited = start.elapsed();
        let mut step = opts.retry_every;
        if let Some(timeout) = opts.timeout {
            if waited >= timeout {
                return Err(TransportError::TimedOut {
                    what: path.display().to_string(),
                    peer: "writer",
                    waited,
                }
                .into());
            }
            step = step.min(timeout - waited);
        }
        let mut fds = [PollFd::new(&file, PollFlags::IN)];
        let wait = Timespec {
            tv_sec: step.as_secs() as _,
            tv_nsec: step.subsec_nanos() as _,
        };
        match poll(&mut fds, Some(&wait)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => break,
            Err(e) => return Err(io_err(path)(e.into()).into()),
        }
        interrupt().map_err(OpenError::Interrupted)?;
    }
    let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| io_err(path)(e.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK).map_err(|e| io_err(path)(e.into()))?;
    Ok(file)
}
