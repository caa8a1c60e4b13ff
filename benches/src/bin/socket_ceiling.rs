//! The most a migration stream can get through one socket on this machine:
//! a sender whose only work is writing guest RAM into the socket, and a
//! receiver whose only work is landing those bytes in a fresh mapping. The
//! Python live-migration benchmark (`benches/py/bench_live_migration.py`)
//! runs it beside vmkit → vmkit and QEMU → QEMU as the ceiling.
//!
//! ```text
//! socket_ceiling recv unix:PATH|tcp:HOST:PORT BYTES [--copy [--populate]] [--huge]
//! socket_ceiling send unix:PATH|tcp:HOST:PORT BYTES FILE
//! ```
//!
//! `recv` listens (a `tcp:` port 0 takes a free port), prints
//! `listening URI` once it does, accepts one connection and reads exactly
//! `BYTES` into a new private anonymous mapping (as vmkit's guest RAM is;
//! `--huge` advises it for transparent huge pages, as QEMU does), then prints
//! `received BYTES SECONDS` (from accept to the last byte) and exits.
//! By default each `read(2)` lands in the mapping itself: the one copy a
//! receiver cannot avoid. With `--copy` it reads into a 1 MiB buffer and
//! copies from there into the mapping, as a receiver that must look at the
//! stream's record headers first (QEMU's and vmkit's both do) at least has to.
//! `--populate` (with `--copy`) faults each buffer's stretch of the mapping
//! in with one `madvise(MADV_POPULATE_WRITE)` before copying, as vmkit's
//! receiver does for runs of pages that arrive for the first time.
//!
//! `send` connects, maps `FILE` shared and read-only (the guest RAM file the
//! migrating machines map) and writes its first `BYTES` into the socket,
//! 2 MiB per `write(2)` (vmkit's gathered-write batch), then exits.
//!
//! Both use the sockets' default buffer sizes, as vmkit and QEMU do.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

/// Bytes per `write(2)` of the sender.
const SEND_CHUNK: usize = 2 << 20;
/// The `--copy` receiver's buffer.
const RECV_BUFFER: usize = 1 << 20;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("socket_ceiling: {msg}");
    std::process::exit(2)
}

fn parse_bytes(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| fail(format!("not a byte count: {s}")))
}

/// An anonymous or file mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize, huge: bool) -> io::Result<Mapping> {
        // SAFETY: a new private anonymous mapping; no existing memory is
        // affected, and the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if huge {
            // SAFETY: advice on the mapping just made; a failure only loses the hint.
            let _ = unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    fn file(path: &str, len: usize) -> io::Result<Mapping> {
        let file = std::fs::File::open(path)?;
        if (file.metadata()?.len() as usize) < len {
            return Err(io::Error::other(format!("{path} is shorter than {len} bytes")));
        }
        // SAFETY: a new shared read-only mapping of an open file; it stays
        // valid after the descriptor closes, and the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping this value owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn listen(uri: &str) -> (OwnedFd, String) {
    if let Some(path) = uri.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path).unwrap_or_else(|e| fail(format!("{uri}: {e}")));
        (l.into(), uri.to_owned())
    } else if let Some(addr) = uri.strip_prefix("tcp:") {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| fail(format!("{uri}: {e}")));
        let local = l.local_addr().unwrap_or_else(|e| fail(e));
        (l.into(), format!("tcp:{local}"))
    } else {
        fail(format!("unix:PATH or tcp:HOST:PORT expected, not {uri}"))
    }
}

fn accept(listener: &OwnedFd, uri: &str) -> OwnedFd {
    let fd = if uri.starts_with("unix:") {
        let l = UnixListener::from(listener.try_clone().unwrap_or_else(|e| fail(e)));
        l.accept().map(|(s, _)| OwnedFd::from(s))
    } else {
        let l = TcpListener::from(listener.try_clone().unwrap_or_else(|e| fail(e)));
        l.accept().map(|(s, _)| OwnedFd::from(s))
    };
    fd.unwrap_or_else(|e| fail(format!("accept on {uri}: {e}")))
}

fn connect(uri: &str) -> OwnedFd {
    let fd = if let Some(path) = uri.strip_prefix("unix:") {
        UnixStream::connect(path).map(OwnedFd::from)
    } else if let Some(addr) = uri.strip_prefix("tcp:") {
        std::net::TcpStream::connect(addr).map(OwnedFd::from)
    } else {
        fail(format!("unix:PATH or tcp:HOST:PORT expected, not {uri}"))
    };
    fd.unwrap_or_else(|e| fail(format!("connect to {uri}: {e}")))
}

/// `read(2)` into `len` bytes at `at`, retried on `EINTR`.
fn read_into(fd: &OwnedFd, at: *mut u8, len: usize) -> usize {
    loop {
        // SAFETY: `at..at + len` lies inside a live writable mapping or
        // buffer owned by the caller, which nothing else accesses.
        let n = unsafe { libc::read(fd.as_raw_fd(), at.cast(), len) };
        if n > 0 {
            return n as usize;
        }
        if n == 0 {
            fail("the sender closed early");
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            fail(format!("read: {e}"));
        }
    }
}

fn recv(uri: &str, bytes: usize, copy: bool, huge: bool, populate: bool) {
    let (listener, shown) = listen(uri);
    println!("listening {shown}");
    let _ = io::stdout().flush();
    let ram = Mapping::anonymous(bytes, huge).unwrap_or_else(|e| fail(format!("mmap: {e}")));
    let conn = accept(&listener, &shown);
    let start = Instant::now();
    let mut done = 0;
    if copy {
        let mut buf = vec![0u8; RECV_BUFFER];
        while done < bytes {
            let n = read_into(&conn, buf.as_mut_ptr(), RECV_BUFFER.min(bytes - done));
            if populate {
                let start = done & !4095;
                let end = ((done + n + 4095) & !4095).min(bytes);
                // SAFETY: advice on a page-aligned range inside the live
                // mapping (`start <= done < end <= bytes`); it only faults
                // pages in. A failure only loses the hint.
                let _ = unsafe { libc::madvise(ram.ptr.add(start).cast(), end - start, libc::MADV_POPULATE_WRITE) };
            }
            // SAFETY: `done + n <= bytes`, the mapping's length; the buffer
            // and the mapping do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), ram.ptr.add(done), n) };
            done += n;
        }
    } else {
        while done < bytes {
            // SAFETY: `done < bytes`, the mapping's length.
            let at = unsafe { ram.ptr.add(done) };
            done += read_into(&conn, at, bytes - done);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("received {done} {secs:.6}");
    if let Some(path) = uri.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
    }
}

fn send(uri: &str, bytes: usize, file: &str) {
    let ram = Mapping::file(file, bytes).unwrap_or_else(|e| fail(format!("{file}: {e}")));
    let conn = connect(uri);
    let mut done = 0;
    while done < bytes {
        let len = SEND_CHUNK.min(bytes - done);
        // SAFETY: `done + len <= bytes`, inside the live read-only mapping;
        // the kernel only reads it.
        let n = unsafe { libc::write(conn.as_raw_fd(), ram.ptr.add(done).cast(), len) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            fail(format!("write: {e}"));
        }
        done += n as usize;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["recv", uri, bytes, flags @ ..] if flags.iter().all(|f| ["--copy", "--huge", "--populate"].contains(f)) => {
            recv(
                uri,
                parse_bytes(bytes),
                flags.contains(&"--copy"),
                flags.contains(&"--huge"),
                flags.contains(&"--populate"),
            )
        }
        ["send", uri, bytes, file] => send(uri, parse_bytes(bytes), file),
        _ => fail("usage: socket_ceiling recv URI BYTES [--copy [--populate]] [--huge] | send URI BYTES FILE"),
    }
}
