//! Sockets for `unix:` and `tcp:`: name resolution and the loopback rule,
//! a TCP connect that can be timed out and interrupted, waiting on a
//! descriptor with the caller's interrupt check, and the socket file of a
//! `unix:` listener (created safely, removed on drop).

use std::fs::DirBuilder;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::OFlags;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::{OpenError, OpenOptions, TransportError};

fn io_err(what: &str) -> impl FnOnce(io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The addresses `host:port` names. Unless `allow_remote`, every one must
/// be a loopback address: the stream carries guest memory with neither
/// authentication nor encryption (the rule `vmkit run` applies to QMP
/// over TCP).
pub(crate) fn resolve(
    what: &str,
    host: &str,
    port: u16,
    allow_remote: bool,
) -> Result<Vec<SocketAddr>, TransportError> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(io_err(what))?.collect();
    if addrs.is_empty() {
        return Err(TransportError::Refused {
            what: what.to_owned(),
            reason: format!("'{host}' has no address"),
            errno: libc::EADDRNOTAVAIL,
        });
    }
    if !allow_remote && !addrs.iter().all(|a| a.ip().to_canonical().is_loopback()) {
        return Err(TransportError::Refused {
            what: what.to_owned(),
            reason: format!(
                "'{host}' is not a loopback address; the migration stream has no authentication \
                 (allow remote addresses to use it anyway)"
            ),
            errno: libc::EACCES,
        });
    }
    Ok(addrs)
}

/// Waits until `fd` reports one of `events` (or an error or hangup, which
/// the next call then returns). Each wait lasts at most `opts.retry_every`;
/// between waits the caller's `interrupt` runs (its error comes back as
/// [`OpenError::Interrupted`]), and once `opts.timeout` has passed since
/// `start`, `timed_out` says what the timeout means.
pub(crate) fn wait_for<E>(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    opts: &OpenOptions,
    start: Instant,
    interrupt: &dyn Fn() -> Result<(), E>,
    timed_out: &dyn Fn(Duration) -> TransportError,
    what: &str,
) -> Result<(), OpenError<E>> {
    loop {
        let mut step = opts.retry_every;
        if let Some(timeout) = opts.timeout {
            step = step.min(timeout.saturating_sub(start.elapsed()));
        }
        let mut fds = [PollFd::new(&fd, events)];
        let wait = Timespec {
            tv_sec: step.as_secs() as _,
            tv_nsec: step.subsec_nanos() as _,
        };
        match poll(&mut fds, Some(&wait)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(io_err(what)(e.into()).into()),
        }
        interrupt().map_err(OpenError::Interrupted)?;
        let waited = start.elapsed();
        if opts.timeout.is_some_and(|timeout| waited >= timeout) {
            return Err(timed_out(waited).into());
        }
    }
}

/// Clears `O_NONBLOCK`: the stream's reads and writes block as on any
/// socket or pipe.
pub(crate) fn set_blocking(fd: impl AsFd, what: &str) -> Result<(), TransportError> {
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| io_err(what)(e.into()))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| io_err(what)(e.into()))
}

/// Connects to the first of `addrs` that accepts, within `opts.timeout`
/// overall, calling `interrupt` while a connection is under way. The error
/// of the last address tried is returned when none accepts.
pub(crate) fn connect_tcp<E>(
    what: &str,
    addrs: &[SocketAddr],
    opts: &OpenOptions,
    interrupt: &dyn Fn() -> Result<(), E>,
) -> Result<TcpStream, OpenError<E>> {
    let start = Instant::now();
    let mut last = None;
    for addr in addrs {
        match connect_one(what, addr, opts, start, interrupt) {
            Ok(stream) => return Ok(stream),
            Err(OpenError::Transport(e @ TransportError::Io { .. })) => last = Some(e),
            Err(other) => return Err(other),
        }
    }
    Err(last
        .unwrap_or_else(|| io_err(what)(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)))
        .into())
}

fn connect_one<E>(
    what: &str,
    addr: &SocketAddr,
    opts: &OpenOptions,
    start: Instant,
    interrupt: &dyn Fn() -> Result<(), E>,
) -> Result<TcpStream, OpenError<E>> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd: OwnedFd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_err(what)(e.into()))?;
    match rustix::net::connect(&fd, addr) {
        Ok(()) => {}
        // Under way (an interrupted connect goes on in the background).
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::INTR) => {
            let timed_out = |waited| TransportError::NoConnection {
                what: what.to_owned(),
                event: "not connected",
                waited,
            };
            wait_for(fd.as_fd(), PollFlags::OUT, opts, start, interrupt, &timed_out, what)?;
            match rustix::net::sockopt::socket_error(&fd) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => return Err(io_err(what)(e.into()).into()),
            }
        }
        Err(e) => return Err(io_err(what)(e.into()).into()),
    }
    set_blocking(&fd, what)?;
    Ok(TcpStream::from(fd))
}

/// Connects to the Unix socket listening at `path`. While its backlog is
/// full (the listener is not accepting), the connect is retried (0.1 ms
/// doubling to `opts.retry_every`), calling `interrupt` each time, until
/// `opts.timeout`; nobody listening is an [`TransportError::Io`] with
/// `ECONNREFUSED` (or `ENOENT` for no socket file).
pub(crate) fn connect_unix<E>(
    path: &Path,
    opts: &OpenOptions,
    interrupt: &dyn Fn() -> Result<(), E>,
) -> Result<UnixStream, OpenError<E>> {
    let what = format!("unix:{}", path.display());
    let addr = rustix::net::SocketAddrUnix::new(path).map_err(|e| io_err(&what)(e.into()))?;
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_err(&what)(e.into()))?;
    let start = Instant::now();
    let mut backoff = Duration::from_micros(100);
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err(&what)(e.into()).into()),
        }
        interrupt().map_err(OpenError::Interrupted)?;
        let waited = start.elapsed();
        let mut step = backoff.min(opts.retry_every);
        backoff = backoff.saturating_mul(2);
        if let Some(timeout) = opts.timeout {
            if waited >= timeout {
                return Err(TransportError::NoConnection {
                    what,
                    event: "not connected (the listener's backlog is full)",
                    waited,
                }
                .into());
            }
            step = step.min(timeout - waited);
        }
        std::thread::sleep(step);
    }
    set_blocking(&fd, &what)?;
    Ok(UnixStream::from(fd))
}

/// The socket file of a `unix:` listener: removed when dropped, if the
/// path still names this socket (not one a later listener put there).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    /// The path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A `sun_path` holds 108 bytes with the final NUL.
const SUN_PATH_MAX: usize = 108;

/// Attempts at putting the socket in place while something keeps
/// appearing at the path.
const INSTALL_ATTEMPTS: usize = 3;

/// A unique suffix for staging directories of this process.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

fn refused(path: &Path, reason: impl Into<String>, errno: i32) -> TransportError {
    TransportError::Refused {
        what: path.display().to_string(),
        reason: reason.into(),
        errno,
    }
}

/// Checks what is at `path` before a listener goes there: nothing is fine;
/// a socket nobody listens on (left by a process that died) may be
/// replaced, and its `(dev, ino)` is returned; a socket someone listens
/// on, a symbolic link, a directory or any other file is refused.
fn check_socket_path(path: &Path) -> Result<Option<(u64, u64)>, TransportError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path.display().to_string())(e)),
    };
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        return Err(refused(path, "a symbolic link, not a socket", libc::EEXIST));
    }
    if ft.is_dir() {
        return Err(refused(path, "a directory, not a socket", libc::EEXIST));
    }
    if !ft.is_socket() {
        return Err(refused(path, "exists and is not a socket", libc::EEXIST));
    }
    match UnixStream::connect(path) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
            Ok(Some((meta.dev(), meta.ino())))
        }
        // Connected, or listening with a full backlog.
        _ => Err(refused(
            path,
            "another process is listening on this socket",
            libc::EADDRINUSE,
        )),
    }
}

/// [`check_socket_path`], then removes a stale socket if the path still
/// names that same file.
fn clear_socket_path(path: &Path) -> Result<(), TransportError> {
    if let Some(stale) = check_socket_path(path)? {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if (meta.dev(), meta.ino()) == stale {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(())
}

/// A listening Unix socket at `path`, mode 0600 from the start, never put
/// over a socket another process listens on: bound in a private staging
/// directory (mode 0700) beside `path` and hard-linked into place (a link
/// never replaces a file, so something that appeared meanwhile is checked
/// again rather than taken over). A path too long for the staging name is
/// bound in place, then restricted. The listener does not block.
pub(crate) fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), TransportError> {
    let shown = path.display().to_string();
    clear_socket_path(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(refused(
            path,
            format!("directory {} does not exist", dir.display()),
            libc::ENOENT,
        ));
    }
    let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
    let staging_dir = dir.join(format!(".vmkit-sock-{}-{n}", std::process::id()));
    let staging = staging_dir.join("s");
    let listener = if staging.as_os_str().len() < SUN_PATH_MAX {
        DirBuilder::new()
            .mode(0o700)
            .create(&staging_dir)
            .map_err(io_err(&shown))?;
        let installed = bind_staged(&staging, path);
        let _ = std::fs::remove_file(&staging);
        let _ = std::fs::remove_dir(&staging_dir);
        installed?
    } else {
        // bind(2) fails with EADDRINUSE if something appeared meanwhile.
        let listener = UnixListener::bind(path).map_err(io_err(&shown))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&shown))?;
        listener
    };
    let meta = std::fs::symlink_metadata(path).map_err(io_err(&shown))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    listener.set_nonblocking(true).map_err(io_err(&shown))?;
    Ok((listener, file))
}

fn bind_staged(staging: &Path, path: &Path) -> Result<UnixListener, TransportError> {
    let shown = path.display().to_string();
    let listener = UnixListener::bind(staging).map_err(io_err(&shown))?;
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o600)).map_err(io_err(&shown))?;
    for _ in 0..INSTALL_ATTEMPTS {
        match std::fs::hard_link(staging, path) {
            Ok(()) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => clear_socket_path(path)?,
            Err(e) => return Err(io_err(&shown)(e)),
        }
    }
    Err(refused(path, "keeps being created by another process", libc::EEXIST))
}
