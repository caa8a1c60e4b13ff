//! [`Listener`]: where an incoming stream comes from (QEMU's `-incoming`
//! URI), and [`Source`], the stream it hands out.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use super::net::{SocketFile, bind_unix, resolve, set_blocking, wait_for};
use super::sink::Reaped;
use super::{FdRegistry, OpenError, OpenOptions, Transport, TransportError, open_source};

/// An incoming endpoint, bound: [`accept`](Self::accept) hands out the
/// stream.
///
/// * `unix:PATH` listens on a socket file created with mode 0600 (a stale
///   socket at the path is replaced; a socket another process listens on,
///   or any other file, is refused) and removed when the listener is
///   dropped;
/// * `tcp:HOST:PORT` listens on `HOST` (loopback only unless
///   [`OpenOptions::allow_remote`]); port 0 takes a free port, which
///   [`local_transport`](Self::local_transport) reports;
/// * `fd:NAME` takes the registered descriptor at bind time and hands it
///   out as the stream (a connected socket, a pipe or a file, as QEMU's
///   `-incoming fd:`);
/// * `file:PATH[,offset=N]` opens the file (or waits for a FIFO's writer)
///   at accept time, from `offset`;
/// * `exec:CMD` runs `sh -c CMD` at accept time and reads its standard
///   output.
///
/// The last three hand out one stream; a second accept is refused.
#[derive(Debug)]
pub struct Listener {
    transport: Transport,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Unix {
        listener: UnixListener,
        file: SocketFile,
    },
    Tcp(TcpListener),
    /// A stream opened at accept time, once (`None` once handed out).
    Once(Option<Pending>),
}

#[derive(Debug)]
enum Pending {
    Fd(OwnedFd),
    File { path: PathBuf, offset: u64 },
    Exec(String),
}

impl Listener {
    /// Binds `transport` for an incoming stream (see the [type](Self)
    /// docs); `fd:` names are taken out of `fds`.
    pub fn bind(transport: &Transport, opts: &OpenOptions, fds: &FdRegistry) -> Result<Listener, TransportError> {
        let what = transport.to_string();
        let kind = match transport {
            Transport::Unix(path) => {
                let (listener, file) = bind_unix(path)?;
                Kind::Unix { listener, file }
            }
            Transport::Tcp { host, port } => {
                let addrs = resolve(&what, host, *port, opts.allow_remote)?;
                let listener = TcpListener::bind(&addrs[..]).map_err(|source| TransportError::Io {
                    what: what.clone(),
                    source,
                })?;
                listener.set_nonblocking(true).map_err(|source| TransportError::Io {
                    what: what.clone(),
                    source,
                })?;
                Kind::Tcp(listener)
            }
            Transport::Fd(name) => Kind::Once(Some(Pending::Fd(fds.take(name)?))),
            Transport::File { path, offset } => Kind::Once(Some(Pending::File {
                path: path.clone(),
                offset: *offset,
            })),
            Transport::Exec(command) => Kind::Once(Some(Pending::Exec(command.clone()))),
        };
        let transport = match &kind {
            Kind::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => Transport::Tcp {
                    host: addr.ip().to_string(),
                    port: addr.port(),
                },
                Err(_) => transport.clone(),
            },
            _ => transport.clone(),
        };
        Ok(Listener { transport, kind })
    }

    /// Where peers find this listener: the bound transport, with the port
    /// the system chose for `tcp:HOST:0` and the address `HOST` resolved
    /// to.
    pub fn local_transport(&self) -> &Transport {
        &self.transport
    }

    /// The socket file of a `unix:` listener.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Unix { file, .. } => Some(file.path()),
            _ => None,
        }
    }

    /// Waits for the incoming stream and returns it, ready to read
    /// (blocking reads). While waiting for a connection (or a FIFO's
    /// writer), the caller's `interrupt` runs every `opts.retry_every` at
    /// most (its error comes back as [`OpenError::Interrupted`]) until
    /// `opts.timeout` ([`TransportError::NoConnection`]).
    pub fn accept<E>(
        &mut self,
        opts: &OpenOptions,
        interrupt: &dyn Fn() -> Result<(), E>,
    ) -> Result<Source, OpenError<E>> {
        let what = self.transport.to_string();
        let start = Instant::now();
        let timed_out = |waited: Duration| TransportError::NoConnection {
            what: what.clone(),
            event: "no connection came",
            waited,
        };
        let wait = |fd: BorrowedFd<'_>| wait_for(fd, PollFlags::IN, opts, start, interrupt, &timed_out, &what);
        match &mut self.kind {
            Kind::Unix { listener, .. } => loop {
                wait(listener.as_fd())?;
                if let Some(fd) = accepted(listener.accept().map(|(s, _)| s.into()), &what)? {
                    return Ok(Source::stream(fd, "socket", &what)?);
                }
            },
            Kind::Tcp(listener) => loop {
                wait(listener.as_fd())?;
                if let Some(fd) = accepted(listener.accept().map(|(s, _)| s.into()), &what)? {
                    return Ok(Source::stream(fd, "socket", &what)?);
                }
            },
            Kind::Once(pending) => match pending.take() {
                None => Err(TransportError::Refused {
                    what,
                    reason: "the stream was already handed out".into(),
                    errno: libc::EALREADY,
                }
                .into()),
                Some(Pending::Fd(fd)) => Ok(Source::stream(fd, "fd", &what)?),
                Some(Pending::File { path, offset }) => {
                    let mut file = open_source(&path, opts, interrupt)?;
                    if offset > 0 {
                        file.seek(SeekFrom::Start(offset))
                            .map_err(|source| TransportError::Io { what, source })?;
                    }
                    Ok(Source {
                        file,
                        child: None,
                        kind: "file",
                    })
                }
                Some(Pending::Exec(command)) => Ok(Source::exec(&command)?),
            },
        }
    }
}

/// The connection `accept(2)` returned; `None` for a connection that went
/// away before it was accepted, or a wake-up with nothing to accept (wait
/// for the next one).
fn accepted(result: io::Result<OwnedFd>, what: &str) -> Result<Option<OwnedFd>, TransportError> {
    match result {
        Ok(fd) => Ok(Some(fd)),
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock
                || e.kind() == io::ErrorKind::Interrupted
                || e.raw_os_error() == Some(libc::ECONNABORTED) =>
        {
            Ok(None)
        }
        Err(source) => Err(TransportError::Io {
            what: what.to_owned(),
            source,
        }),
    }
}

/// An incoming stream: a connection, a descriptor, a file or a command's
/// output. Read it (`savevm::restore` takes it through a `BufReader`),
/// then [`finish`](Self::finish) it.
#[derive(Debug)]
pub struct Source {
    // Fields drop in order: an `exec:` command sees its output closed,
    // then is reaped.
    file: File,
    child: Option<(Reaped, String)>,
    kind: &'static str,
}

impl Source {
    fn stream(fd: OwnedFd, kind: &'static str, what: &str) -> Result<Source, TransportError> {
        set_blocking(&fd, what)?;
        Ok(Source {
            file: File::from(fd),
            child: None,
            kind,
        })
    }

    fn exec(command: &str) -> Result<Source, TransportError> {
        let what = format!("exec:{command}");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| TransportError::Io {
                what: what.clone(),
                source,
            })?;
        let stdout = child.stdout.take();
        let child = Reaped(child);
        let Some(stdout) = stdout else {
            return Err(TransportError::Io {
                what,
                source: io::Error::other("no pipe from the command"),
            });
        };
        Ok(Source {
            file: File::from(OwnedFd::from(stdout)),
            child: Some((child, command.to_owned())),
            kind: "exec",
        })
    }

    /// What kind of stream this is: `"socket"`, `"fd"`, `"file"` or `"exec"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Ends the stream: an `exec:` command's output is closed and the
    /// command must exit with status 0.
    pub fn finish(self) -> Result<(), TransportError> {
        let Source { file, child, .. } = self;
        drop(file);
        match child {
            None => Ok(()),
            Some((mut child, command)) => {
                let status = child.0.wait().map_err(|source| TransportError::Io {
                    what: format!("exec:{command}"),
                    source,
                })?;
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

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl AsFd for Source {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
