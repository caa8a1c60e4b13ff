//! [`Sink`]: where a stream is written — a file (replaced only when the
//! stream is complete), a FIFO, a device, a Unix or TCP socket connected
//! to, a registered descriptor (`fd:`), or a command's standard input
//! (`exec:`).

use std::ffi::OsString;
use std::fs::{File, OpenOptions as FsOpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::OFlags;

use super::net::{connect_tcp, connect_unix, resolve};
use super::{FdRegistry, OpenError, Transport, TransportError};

/// The pipe buffer a FIFO or `exec:` sink asks for: the reader (`cat >
/// FILE`) wakes up once per megabyte rather than sixteen times with
/// Linux's default 64 KiB. Capped by `fs.pipe-max-size`.
pub const PIPE_BUFFER: usize = 1 << 20;

/// How opening a sink waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// How long to wait for a FIFO's reader; `None` waits until one comes
    /// (or the interrupt check says stop).
    pub timeout: Option<Duration>,
    /// How often, at most, a FIFO with no reader is tried again, and the
    /// interrupt check called, while waiting (default 5 ms: a reader that
    /// comes late costs at most that). The first retries come sooner (from
    /// 0.1 ms, doubling), so a reader that is just starting (`cat` spawned
    /// a moment before) costs next to nothing.
    pub retry_every: Duration,
    /// Whether `tcp:` may use addresses other than loopback ones. Off by
    /// default: the stream carries guest memory with neither
    /// authentication nor encryption.
    pub allow_remote: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            timeout: None,
            retry_every: Duration::from_millis(5),
            allow_remote: false,
        }
    }
}

/// An open sink. Write the stream to [`as_fd`](Self::as_fd), then
/// [`commit`](Self::commit) it; dropping a sink without committing (the
/// save failed) leaves any file that was at the target path untouched and
/// removes the temporary file.
#[derive(Debug)]
pub struct Sink {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A regular file: written to `temp` beside `target` and renamed over
    /// it on commit.
    Replacing {
        file: File,
        temp: TempPath,
        target: PathBuf,
    },
    /// A FIFO or a device, written directly.
    Direct(File),
    /// A socket connected to (`unix:`, `tcp:`, or a listening Unix
    /// socket at a `file:` path).
    Socket(OwnedFd),
    /// A descriptor the caller registered (`fd:`).
    Descriptor(OwnedFd),
    /// A command's standard input. (Fields drop in order: the command
    /// sees end-of-file, then is reaped.)
    Exec {
        stdin: ChildStdin,
        child: Reaped,
        command: String,
    },
}

/// A temporary file that is removed when dropped, unless kept.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A child process that is waited for when dropped (no zombie is left).
#[derive(Debug)]
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.wait();
    }
}

/// A unique suffix for temporary files of this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TransportError {
    let what = what.into();
    move |source| TransportError::Io { what, source }
}

impl Sink {
    /// Opens `transport` for writing a stream:
    ///
    /// * `file:` as [`Sink::open_path`], from its offset;
    /// * `unix:PATH` connects to the socket listening there (while its
    ///   backlog is full, retried with the interrupt check and timeout
    ///   below);
    /// * `tcp:HOST:PORT` resolves `HOST` (loopback addresses only unless
    ///   `opts.allow_remote`) and connects without blocking: while the
    ///   connection is under way `interrupt` runs every `opts.retry_every`
    ///   at most (its error comes back as [`OpenError::Interrupted`]) until
    ///   `opts.timeout` ([`TransportError::NoConnection`]); a refused
    ///   connection is an [`TransportError::Io`] with its errno;
    /// * `fd:NAME` takes the descriptor registered under `NAME` out of
    ///   `fds` (it is closed with the sink);
    /// * `exec:CMD` runs `sh -c CMD` with its standard input as the sink,
    ///   as QEMU's `exec:` migration does.
    pub fn open<E>(
        transport: &Transport,
        opts: &OpenOptions,
        fds: &FdRegistry,
        interrupt: &dyn Fn() -> Result<(), E>,
    ) -> Result<Sink, OpenError<E>> {
        let what = transport.to_string();
        match transport {
            Transport::File { path, offset } => Sink::open_path_at(path, *offset, opts, interrupt),
            Transport::Exec(command) => Ok(Sink::exec(command)?),
            Transport::Unix(path) => {
                let stream = connect_unix(path, opts, interrupt)?;
                Ok(Sink {
                    kind: Kind::Socket(stream.into()),
                })
            }
            Transport::Tcp { host, port } => {
                let addrs = resolve(&what, host, *port, opts.allow_remote)?;
                let stream = connect_tcp(&what, &addrs, opts, interrupt)?;
                Ok(Sink {
                    kind: Kind::Socket(stream.into()),
                })
            }
            Transport::Fd(name) => Ok(Sink {
                kind: Kind::Descriptor(fds.take(name).map_err(TransportError::from)?),
            }),
        }
    }

    /// Opens `path` for writing a stream:
    ///
    /// * a regular file (or a path that does not exist yet) is written to
    ///   a new temporary file in the same directory, renamed over `path`
    ///   by [`commit`](Self::commit): a failed save leaves the old file as
    ///   it was and no partial file behind;
    /// * a FIFO is opened without blocking: while it has no reader the
    ///   open is retried every `opts.retry_every`, calling `interrupt`
    ///   each time (an error from it is returned unchanged, as
    ///   [`OpenError::Interrupted`]) until `opts.timeout` has passed
    ///   ([`TransportError::TimedOut`]); its pipe buffer is raised towards
    ///   [`PIPE_BUFFER`];
    /// * a listening Unix socket is connected to;
    /// * a device (`/dev/null`) is opened as it is.
    pub fn open_path<E>(
        path: &Path,
        opts: &OpenOptions,
        interrupt: &dyn Fn() -> Result<(), E>,
    ) -> Result<Sink, OpenError<E>> {
        Sink::open_path_at(path, 0, opts, interrupt)
    }

    /// [`Sink::open_path`], the stream starting `offset` bytes into a
    /// regular file (QEMU's `file:PATH,offset=N`): the new file keeps the
    /// old one's first `offset` bytes (zeros where it was shorter). Only
    /// a regular file takes an offset.
    pub fn open_path_at<E>(
        path: &Path,
        offset: u64,
        opts: &OpenOptions,
        interrupt: &dyn Fn() -> Result<(), E>,
    ) -> Result<Sink, OpenError<E>> {
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(shown)(e).into()),
        };
        let Some(meta) = meta else {
            return Ok(Sink::replacing(path, offset)?);
        };
        let ft = meta.file_type();
        if ft.is_file() {
            Ok(Sink::replacing(path, offset)?)
        } else if offset > 0 && !ft.is_dir() {
            Err(TransportError::Refused {
                what: shown,
                reason: "an offset needs a regular file".into(),
                errno: libc::ESPIPE,
            }
            .into())
        } else if ft.is_dir() {
            Err(io_err(shown)(io::Error::from_raw_os_error(libc::EISDIR)).into())
        } else if ft.is_fifo() {
            Sink::fifo(path, opts, interrupt)
        } else if ft.is_socket() {
            let stream = UnixStream::connect(path).map_err(io_err(shown))?;
            Ok(Sink {
                kind: Kind::Socket(stream.into()),
            })
        } else {
            let file = FsOpenOptions::new().write(true).open(path).map_err(io_err(shown))?;
            Ok(Sink {
                kind: Kind::Direct(file),
            })
        }
    }

    fn replacing(path: &Path, offset: u64) -> Result<Sink, TransportError> {
        // Write beside the file a symbolic link points to, so the rename
        // replaces the file and keeps the link.
        let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let mode = std::fs::metadata(&target).ok().map(|m| m.permissions());
        let mut tries = 0;
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = OsString::from(".");
            temp_name.push(&name);
            temp_name.push(format!(".{}.{n}.vmkit-partial", std::process::id()));
            let temp = dir.join(temp_name);
            match FsOpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&temp)
            {
                Ok(mut file) => {
                    let temp = TempPath(Some(temp));
                    if let Some(mode) = mode {
                        // Best effort: the new file keeps the old one's mode.
                        let _ = file.set_permissions(mode);
                    }
                    if offset > 0 {
                        keep_prefix(&target, &mut file, offset).map_err(io_err(path.display().to_string()))?;
                    }
                    return Ok(Sink {
                        kind: Kind::Replacing { file, temp, target },
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
                Err(e) => return Err(io_err(path.display().to_string())(e)),
            }
        }
    }

    fn fifo<E>(path: &Path, opts: &OpenOptions, interrupt: &dyn Fn() -> Result<(), E>) -> Result<Sink, OpenError<E>> {
        let shown = path.display().to_string();
        let start = Instant::now();
        let mut backoff = Duration::from_micros(100);
        let file = loop {
            let opened = FsOpenOptions::new()
                .write(true)
                .custom_flags(OFlags::NONBLOCK.bits() as i32)
                .open(path);
            match opened {
                Ok(file) => break file,
                // No reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => return Err(io_err(shown)(e).into()),
            }
            interrupt().map_err(OpenError::Interrupted)?;
            let waited = start.elapsed();
            let mut step = backoff.min(opts.retry_every);
            backoff = backoff.saturating_mul(2);
            if let Some(timeout) = opts.timeout {
                if waited >= timeout {
                    return Err(TransportError::TimedOut {
                        what: shown,
                        peer: "reader",
                        waited,
                    }
                    .into());
                }
                step = step.min(timeout - waited);
            }
            std::thread::sleep(step);
        };
        // Writes block from here on, as on any pipe; the gathered writer
        // copes with either mode.
        let flags = rustix::fs::fcntl_getfl(&file).map_err(|e| io_err(shown.clone())(e.into()))?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK).map_err(|e| io_err(shown)(e.into()))?;
        enlarge_pipe(&file);
        Ok(Sink {
            kind: Kind::Direct(file),
        })
    }

    fn exec(command: &str) -> Result<Sink, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(io_err(format!("exec:{command}")))?;
        let stdin = child.stdin.take();
        let child = Reaped(child);
        let Some(stdin) = stdin else {
            return Err(io_err(format!("exec:{command}"))(io::Error::other(
                "no pipe to the command",
            )));
        };
        enlarge_pipe(&stdin);
        Ok(Sink {
            kind: Kind::Exec {
                stdin,
                child,
                command: command.to_owned(),
            },
        })
    }

    /// The descriptor to write the stream to.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Replacing { file, .. } | Kind::Direct(file) => file.as_fd(),
            Kind::Socket(fd) | Kind::Descriptor(fd) => fd.as_fd(),
            Kind::Exec { stdin, .. } => stdin.as_fd(),
        }
    }

    /// What kind of sink this is: `"file"`, `"fifo or device"`, `"socket"`,
    /// `"fd"` or `"exec"`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Replacing { .. } => "file",
            Kind::Direct(_) => "fifo or device",
            Kind::Socket(_) => "socket",
            Kind::Descriptor(_) => "fd",
            Kind::Exec { .. } => "exec",
        }
    }

    /// Completes the stream: a file replaces the target path (the rename
    /// is atomic: readers see the old stream or the whole new one); an
    /// `exec:` command gets end-of-file and must exit with status 0.
    pub fn commit(self) -> Result<(), TransportError> {
        match self.kind {
            Kind::Replacing { file, mut temp, target } => {
                drop(file);
                if let Some(path) = &temp.0 {
                    std::fs::rename(path, &target).map_err(io_err(target.display().to_string()))?;
                }
                temp.0 = None;
                Ok(())
            }
            Kind::Direct(_) | Kind::Socket(_) | Kind::Descriptor(_) => Ok(()),
            Kind::Exec {
                stdin,
                mut child,
                command,
            } => {
                drop(stdin);
                let status = child.0.wait().map_err(io_err(format!("exec:{command}")))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(TransportError::CommandFailed {
                        command,
                        status: status.to_string(),
                    })
                }
            }
        }
    }
}

/// Copies the first `offset` bytes of `target` (if it exists) into `file`,
/// pads to `offset` with zeros, and leaves `file` positioned there, where
/// the stream starts.
fn keep_prefix(target: &Path, file: &mut File, offset: u64) -> io::Result<()> {
    match File::open(target) {
        Ok(old) => {
            io::copy(&mut io::Read::take(old, offset), file)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok(())
}

/// Best effort: a pipe that stays at its size still works, only slower.
fn enlarge_pipe(pipe: &impl AsFd) {
    let limit = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(PIPE_BUFFER);
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_BUFFER.min(limit));
}
