//! [`ReturnChannel`]: the other direction of a migration connection, on
//! which a destination answers the source (QEMU's return path).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FileType, fstat};

/// How long one wait lasts before `keep_waiting` is asked again.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// A duplicate of a connection's socket for the return path: the source
/// reads the destination's messages from it, the destination writes them.
/// Reads wait (a slice at a time) while `keep_waiting` says so; once it
/// says no, a read fails with `Interrupted` (a cancelled migration).
pub struct ReturnChannel {
    fd: OwnedFd,
    keep_waiting: Box<dyn Fn() -> bool + Send>,
}

impl std::fmt::Debug for ReturnChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReturnChannel")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl ReturnChannel {
    /// The return channel of the connection `conn`, if it is a socket
    /// (a file, a pipe or a command has no way back: `None`).
    pub fn of(conn: BorrowedFd<'_>, keep_waiting: Box<dyn Fn() -> bool + Send>) -> io::Result<Option<ReturnChannel>> {
        let stat = fstat(conn)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
            return Ok(None);
        }
        let fd = rustix::io::fcntl_dupfd_cloexec(conn, 0)?;
        Ok(Some(ReturnChannel { fd, keep_waiting }))
    }

    /// Waits until the socket is ready for `events`, asking `keep_waiting`
    /// between slices.
    fn wait(&self, events: PollFlags) -> io::Result<()> {
        let slice = Timespec {
            tv_sec: 0,
            tv_nsec: WAIT_SLICE.as_nanos() as _,
        };
        loop {
            let mut fds = [PollFd::new(&self.fd, events)];
            match poll(&mut fds, Some(&slice)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            if !(self.keep_waiting)() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "migration cancelled"));
            }
        }
    }
}

impl Read for ReturnChannel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.wait(PollFlags::IN)?;
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for ReturnChannel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::io::write(&self.fd, buf) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => self.wait(PollFlags::OUT)?,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for ReturnChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_socket_has_a_way_back_and_a_cancel_ends_the_wait() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let go_on = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&go_on);
        let mut back = ReturnChannel::of(a.as_fd(), Box::new(move || flag.load(Ordering::SeqCst)))?
            .ok_or_else(|| io::Error::other("a socket has a return channel"))?;
        (&b).write_all(b"pong")?;
        let mut got = [0u8; 4];
        back.read_exact(&mut got)?;
        assert_eq!(&got, b"pong");
        back.write_all(b"shut")?;
        (&b).read_exact(&mut got)?;
        assert_eq!(&got, b"shut");
        go_on.store(false, Ordering::SeqCst);
        assert_eq!(
            back.read(&mut got).map_err(|e| e.kind()),
            Err(io::ErrorKind::Interrupted)
        );
        let file = std::fs::File::open("/dev/null")?;
        assert!(ReturnChannel::of(file.as_fd(), Box::new(|| true))?.is_none());
        Ok(())
    }
}
