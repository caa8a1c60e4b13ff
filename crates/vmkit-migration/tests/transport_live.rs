//! The live-migration transports end to end: a machine saved into
//! `unix:`, `tcp:` and `fd:` endpoints, accepted by a [`Listener`] in
//! another thread and restored, byte for byte the stream a file save
//! writes; the loopback rule, refused connections, and waits that end by
//! the interrupt check or a timeout.

use std::cell::Cell;
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vmkit_memory::RamBlock;
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveOptions, SaveSet, restore, save_to_fd, save_to_sink};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::transport::{
    FdRegistry, Listener, OpenError, OpenOptions, Sink, Source, Transport, TransportError,
};
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
const PAGES: u64 = 96;

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!("vmkit-tl-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn never() -> Result<(), String> {
    Ok(())
}

/// A hang guard: generous, never what a test waits for.
fn guarded() -> OpenOptions {
    OpenOptions {
        timeout: Some(Duration::from_secs(30)),
        ..OpenOptions::default()
    }
}

/// A machine: RAM with data pages and zero pages, and one device.
struct Machine {
    set: SaveSet,
    ram: Arc<RamBlock>,
    uart: Arc<ValueDevice>,
}

fn machine(seed: u8) -> Result<Machine, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous("pc.ram", PAGES * PAGE)?;
    for p in (0..PAGES).filter(|p| p % 3 != 0) {
        ram.write(p * PAGE + 17, &[seed, p as u8, 0xA5, 0x5A])?;
    }
    let vmsd = VmStateDescription::builder("uart")
        .version(1)
        .simple("lcr", FieldKind::U8)
        .build()?;
    let uart = ValueDevice::new(vmsd, VmStruct::new().with("lcr", VmValue::UInt(u64::from(seed))));
    let dev = DeviceEntry::new("uart", 0, Arc::clone(&uart) as Arc<_>);
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], vec![dev]);
    Ok(Machine { set, ram, uart })
}

/// The stream a file save of `m` writes.
fn file_stream(m: &Machine, tag: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let dir = temp_dir(&format!("{tag}-file"))?;
    let path = dir.join("vm.stream");
    save_to_fd(&m.set, std::fs::File::create(&path)?, &SaveOptions::default())?;
    let bytes = std::fs::read(&path)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(bytes)
}

/// A reader that keeps a copy of what went through it.
struct Recording<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// Restores `source` into a fresh machine, returning the machine and the
/// bytes the restore read.
fn restore_from(source: Source) -> Result<(Machine, Vec<u8>), String> {
    let dest = machine(0).map_err(|e| e.to_string())?;
    dest.ram.fill(0, PAGES * PAGE, 0xEE).map_err(|e| e.to_string())?;
    let mut rec = Recording {
        inner: BufReader::new(source),
        seen: Vec::new(),
    };
    restore(&dest.set, &mut rec, &RestoreOptions::default()).map_err(|e| e.to_string())?;
    // The stream ends where the restore stopped reading.
    let mut rest = Vec::new();
    rec.inner.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the end of the stream", rest.len()));
    }
    rec.inner.into_inner().finish().map_err(|e| e.to_string())?;
    Ok((dest, rec.seen))
}

/// Saves machine 7 into `transport` (bound by a listener here, accepted
/// and restored in another thread) and checks the restored machine and
/// the bytes on the wire against a file save.
fn migrate_through(transport: &Transport, fds: &FdRegistry, tag: &str) -> TestResult {
    let src = machine(7)?;
    let want = file_stream(&src, tag)?;
    let mut listener = Listener::bind(transport, &guarded(), fds)?;
    let dest_uri = listener.local_transport().clone();
    let receiver = std::thread::spawn(move || -> Result<(Machine, Vec<u8>), String> {
        let source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
        restore_from(source)
    });
    let sink = Sink::open(&dest_uri, &guarded(), fds, &never).map_err(|e| e.to_string())?;
    let stats = save_to_sink(&src.set, sink, &SaveOptions::default())?;
    let (dest, seen) = receiver.join().map_err(|_| "receiver panicked")??;
    assert_eq!(stats.bytes, want.len() as u64);
    assert!(seen == want, "{tag}: the stream differs from a file save");
    assert_eq!(dest.ram.checksum(0, PAGES * PAGE)?, src.ram.checksum(0, PAGES * PAGE)?);
    assert_eq!(dest.uart.get(), src.uart.get());
    assert_eq!(dest.uart.loads(), 1);
    Ok(())
}

#[test]
fn a_save_over_a_unix_socket_restores_as_a_file_save() -> TestResult {
    let dir = temp_dir("unix")?;
    let path = dir.join("mig.sock");
    migrate_through(&Transport::Unix(path.clone()), &FdRegistry::new(), "unix")?;
    assert!(!path.exists(), "the socket file goes with its listener");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_save_over_tcp_ipv4_loopback_restores_as_a_file_save() -> TestResult {
    migrate_through(&"tcp:127.0.0.1:0".parse()?, &FdRegistry::new(), "tcp4")
}

#[test]
fn a_save_over_tcp_ipv6_loopback_restores_as_a_file_save() -> TestResult {
    let transport: Transport = "tcp:[::1]:0".parse()?;
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        // No IPv6 on this host (some containers): nothing to test.
        eprintln!("skipped: ::1 cannot be bound here");
        return Ok(());
    }
    migrate_through(&transport, &FdRegistry::new(), "tcp6")
}

#[test]
fn a_save_into_a_registered_descriptor_restores_as_a_file_save() -> TestResult {
    // Both ends registered, as a management tool passes them to the
    // source and the destination with getfd.
    let (tx, rx) = std::os::unix::net::UnixStream::pair()?;
    let fds = FdRegistry::new();
    fds.add("migrx", rx.into())?;
    fds.add("migtx", tx.into())?;
    let src = machine(7)?;
    let want = file_stream(&src, "fd")?;
    let mut listener = Listener::bind(&Transport::Fd("migrx".into()), &guarded(), &fds)?;
    let receiver = std::thread::spawn(move || -> Result<(Machine, Vec<u8>), String> {
        let source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
        if source.kind() != "fd" {
            return Err(source.kind().into());
        }
        let restored = restore_from(source);
        // The stream was handed out once.
        let again = listener.accept(&guarded(), &never).err().map(|e| e.to_string());
        if again.as_deref() != Some("fd:migrx: the stream was already handed out") {
            return Err(format!("{again:?}"));
        }
        restored
    });
    let sink = Sink::open(&Transport::Fd("migtx".into()), &guarded(), &fds, &never).map_err(|e| e.to_string())?;
    assert_eq!(sink.kind(), "fd");
    assert!(fds.is_empty(), "both descriptors were taken");
    save_to_sink(&src.set, sink, &SaveOptions::default())?;
    let (dest, seen) = receiver.join().map_err(|_| "receiver panicked")??;
    assert!(seen == want);
    assert_eq!(dest.ram.checksum(0, PAGES * PAGE)?, src.ram.checksum(0, PAGES * PAGE)?);
    Ok(())
}

#[test]
fn a_file_offset_keeps_the_bytes_before_it_and_reads_from_it() -> TestResult {
    let dir = temp_dir("offset")?;
    let path = dir.join("vm.img");
    std::fs::write(&path, b"HEADER")?;
    let uri: Transport = format!("file:{},offset=4K", path.display()).parse()?;
    let src = machine(5)?;
    let want = file_stream(&src, "offset-ref")?;
    let fds = FdRegistry::new();
    let sink = Sink::open(&uri, &guarded(), &fds, &never).map_err(|e| e.to_string())?;
    save_to_sink(&src.set, sink, &SaveOptions::default())?;
    let bytes = std::fs::read(&path)?;
    assert_eq!(&bytes[..6], b"HEADER", "the bytes before the offset are kept");
    assert!(bytes[6..4096].iter().all(|&b| b == 0), "padded with zeros");
    assert!(bytes[4096..] == want[..]);
    let mut listener = Listener::bind(&uri, &guarded(), &fds)?;
    let source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
    assert_eq!(source.kind(), "file");
    let (dest, seen) = restore_from(source)?;
    assert!(seen == want);
    assert_eq!(dest.uart.get(), src.uart.get());
    // Only a regular file takes an offset.
    let err = Sink::open(&"file:/dev/null,offset=1".parse()?, &guarded(), &fds, &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e)) if e.errno() == libc::ESPIPE),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn exec_incoming_reads_the_command_output_and_checks_its_status() -> TestResult {
    let fds = FdRegistry::new();
    let mut listener = Listener::bind(&Transport::Exec("printf stream".into()), &guarded(), &fds)?;
    let mut source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
    assert_eq!(source.kind(), "exec");
    let mut got = Vec::new();
    source.read_to_end(&mut got)?;
    assert_eq!(got, b"stream");
    source.finish()?;
    let mut listener = Listener::bind(&Transport::Exec("printf x; exit 3".into()), &guarded(), &fds)?;
    let mut source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
    source.read_to_end(&mut got)?;
    let err = source.finish().err();
    assert!(matches!(&err, Some(TransportError::CommandFailed { .. })), "{err:?}");
    Ok(())
}

#[test]
fn a_remote_tcp_address_is_refused_unless_allowed() -> TestResult {
    let fds = FdRegistry::new();
    // 192.0.2.0/24 is TEST-NET-1: nothing is contacted, the rule refuses first.
    let remote: Transport = "tcp:192.0.2.1:4444".parse()?;
    let err = Sink::open(&remote, &guarded(), &fds, &never).err();
    let Some(OpenError::Transport(e)) = err else {
        return Err(format!("{err:?}").into());
    };
    assert_eq!(e.errno(), libc::EACCES);
    assert_eq!(
        e.to_string(),
        "tcp:192.0.2.1:4444: '192.0.2.1' is not a loopback address; the migration stream has no \
         authentication (allow remote addresses to use it anyway)"
    );
    let err = Listener::bind(&"tcp:0.0.0.0:0".parse()?, &guarded(), &fds).err();
    assert_eq!(err.map(|e| e.errno()), Some(libc::EACCES));
    let err = Listener::bind(&"tcp:[::]:0".parse()?, &guarded(), &fds).err();
    assert_eq!(err.map(|e| e.errno()), Some(libc::EACCES));
    // A name that resolves to loopback addresses only is fine; so is any
    // address once allowed.
    let listener = Listener::bind(&"tcp:localhost:0".parse()?, &guarded(), &fds)?;
    assert!(matches!(listener.local_transport(), Transport::Tcp { port, .. } if *port != 0));
    let allowed = OpenOptions {
        allow_remote: true,
        ..guarded()
    };
    let listener = Listener::bind(&"tcp:0.0.0.0:0".parse()?, &allowed, &fds)?;
    let Transport::Tcp { host, port } = listener.local_transport() else {
        return Err("not tcp".into());
    };
    assert_eq!((host.as_str(), *port != 0), ("0.0.0.0", true));
    Ok(())
}

#[test]
fn connecting_to_a_closed_port_is_refused_with_its_errno() -> TestResult {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // The listener is gone: nobody listens on the port.
    let uri: Transport = format!("tcp:127.0.0.1:{port}").parse()?;
    let err = Sink::open(&uri, &guarded(), &FdRegistry::new(), &never).err();
    let Some(OpenError::Transport(e)) = err else {
        return Err(format!("{err:?}").into());
    };
    assert_eq!(e.errno(), libc::ECONNREFUSED);
    let failure = e.os_failure();
    assert_eq!(failure.errno, libc::ECONNREFUSED);
    assert_eq!(failure.message, "Connection refused");
    assert!(
        e.to_string()
            .starts_with(&format!("tcp:127.0.0.1:{port}: Connection refused"))
    );
    // unix: with nobody at the path: ENOENT.
    let dir = temp_dir("closed")?;
    let uri = Transport::Unix(dir.join("nobody.sock"));
    let err = Sink::open(&uri, &guarded(), &FdRegistry::new(), &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e)) if e.errno() == libc::ENOENT),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// An interrupt check that reports a pending signal on its third call.
fn signal_on_third(calls: &Cell<u32>) -> Result<(), &'static str> {
    calls.set(calls.get() + 1);
    if calls.get() == 3 {
        Err("KeyboardInterrupt")
    } else {
        Ok(())
    }
}

#[test]
fn accept_ends_by_the_interrupt_check_or_the_timeout() -> TestResult {
    let dir = temp_dir("accept")?;
    let fds = FdRegistry::new();
    let quick = OpenOptions {
        timeout: None,
        retry_every: Duration::from_millis(1),
        ..OpenOptions::default()
    };
    let zero = OpenOptions {
        timeout: Some(Duration::ZERO),
        ..OpenOptions::default()
    };
    for uri in [Transport::Unix(dir.join("a.sock")), "tcp:127.0.0.1:0".parse()?] {
        let mut listener = Listener::bind(&uri, &quick, &fds)?;
        let calls = Cell::new(0);
        let err = listener.accept(&quick, &|| signal_on_third(&calls)).err();
        assert!(
            matches!(err, Some(OpenError::Interrupted("KeyboardInterrupt"))),
            "{uri}: {err:?}"
        );
        assert_eq!(calls.get(), 3);
        // A zero timeout: one look, one interrupt check, then the timeout.
        let calls = Cell::new(0);
        let count = || -> Result<(), String> {
            calls.set(calls.get() + 1);
            Ok(())
        };
        let err = listener.accept(&zero, &count).err();
        let Some(OpenError::Transport(e @ TransportError::NoConnection { .. })) = err else {
            return Err(format!("{uri}: {err:?}").into());
        };
        assert_eq!(e.errno(), libc::ETIMEDOUT);
        assert!(e.to_string().contains("no connection came within"), "{e}");
        assert_eq!(calls.get(), 1);
        // The listener still works after both.
        let target = listener.local_transport().clone();
        let client = std::thread::spawn(move || -> Result<(), String> {
            let sink = Sink::open(&target, &guarded(), &FdRegistry::new(), &never).map_err(|e| e.to_string())?;
            let mut list = vmkit_migration::transport::GatherList::new();
            list.push_bytes(b"late");
            list.write_to(sink.as_fd()).map_err(|e| e.to_string())?;
            sink.commit().map_err(|e| e.to_string())
        });
        let mut source = listener.accept(&guarded(), &never).map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        source.read_to_end(&mut got)?;
        client.join().map_err(|_| "client panicked")??;
        assert_eq!(got, b"late");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_unix_listener_replaces_a_stale_socket_and_refuses_a_live_one() -> TestResult {
    let dir = temp_dir("unix-rules")?;
    let fds = FdRegistry::new();
    let path = dir.join("mig.sock");
    // A stale socket (its listener gone, the file left) is replaced.
    drop(UnixListener::bind(&path)?);
    assert!(path.exists());
    let listener = Listener::bind(&Transport::Unix(path.clone()), &guarded(), &fds)?;
    assert_eq!(listener.socket_path(), Some(path.as_path()));
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A live socket is refused, and left alone.
    let err = Listener::bind(&Transport::Unix(path.clone()), &guarded(), &fds).err();
    let Some(e) = err else {
        return Err("a live socket was taken over".into());
    };
    assert_eq!(e.errno(), libc::EADDRINUSE);
    assert!(e.to_string().contains("another process is listening"), "{e}");
    assert!(path.exists());
    drop(listener);
    assert!(!path.exists(), "removed with its listener");
    // Any other file is refused and kept.
    std::fs::write(&path, b"data")?;
    let err = Listener::bind(&Transport::Unix(path.clone()), &guarded(), &fds).err();
    assert_eq!(err.map(|e| e.errno()), Some(libc::EEXIST));
    assert_eq!(std::fs::read(&path)?, b"data");
    // A missing directory is an error naming it.
    let err = Listener::bind(&Transport::Unix(dir.join("no/such/s.sock")), &guarded(), &fds).err();
    assert_eq!(err.map(|e| e.errno()), Some(libc::ENOENT));
    // A socket file another listener put at the path after this one's was
    // removed is not removed by this one.
    std::fs::remove_file(&path)?;
    let first = Listener::bind(&Transport::Unix(path.clone()), &guarded(), &fds)?;
    std::fs::remove_file(&path)?;
    let second = Listener::bind(&Transport::Unix(path.clone()), &guarded(), &fds)?;
    drop(first);
    assert!(path.exists(), "the second listener's socket stays");
    drop(second);
    assert!(!path.exists());
    // No staging directory is left behind.
    assert_eq!(std::fs::read_dir(&dir)?.count(), 0);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_tcp_connect_under_way_ends_by_the_interrupt_check_or_the_timeout() -> TestResult {
    use rustix::net::{AddressFamily, SocketType};
    // A listener that never accepts, with the smallest backlog: once its
    // queue is full, the kernel drops further SYNs and a connect stays
    // under way.
    let listener = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)?;
    rustix::net::bind(&listener, &std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    rustix::net::listen(&listener, 0)?;
    let addr = rustix::net::getsockname(&listener)?;
    let port = std::net::SocketAddr::try_from(addr)
        .map_err(|e| format!("{e:?}"))?
        .port();
    let uri: Transport = format!("tcp:127.0.0.1:{port}").parse()?;
    let e = fill_the_backlog_then_wait(&uri)?;
    assert!(e.to_string().contains("not connected within"), "{e}");
    Ok(())
}

/// Connects to `uri`, whose listener never accepts, until its backlog is
/// full: the next connect waits until the interrupt check stops it (on its
/// third call), and one with a zero timeout gives up after one look.
/// Returns that time-out error.
fn fill_the_backlog_then_wait(uri: &Transport) -> Result<TransportError, Box<dyn std::error::Error>> {
    let fds = FdRegistry::new();
    let quick = OpenOptions {
        timeout: None,
        retry_every: Duration::from_millis(1),
        ..OpenOptions::default()
    };
    // Connections the queue takes succeed; the first it cannot take waits
    // until the interrupt check stops it.
    let mut queued = Vec::new();
    let interrupted = loop {
        let calls = Cell::new(0);
        match Sink::open(uri, &quick, &fds, &|| signal_on_third(&calls)) {
            Ok(sink) if queued.len() < 8 => queued.push(sink),
            Ok(_) => return Err("the backlog never filled".into()),
            Err(OpenError::Interrupted(e)) => break (e, calls.get()),
            Err(e) => return Err(format!("{e:?}").into()),
        }
    };
    assert_eq!(interrupted, ("KeyboardInterrupt", 3));
    // A zero timeout: one look, one interrupt check, then the timeout.
    let zero = OpenOptions {
        timeout: Some(Duration::ZERO),
        ..OpenOptions::default()
    };
    let err = Sink::open(uri, &zero, &fds, &never).err();
    let Some(OpenError::Transport(e @ TransportError::NoConnection { .. })) = err else {
        return Err(format!("{err:?}").into());
    };
    assert_eq!(e.errno(), libc::ETIMEDOUT);
    drop(queued);
    Ok(e)
}

#[test]
fn a_unix_connect_to_a_full_backlog_ends_by_the_interrupt_check_or_the_timeout() -> TestResult {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = temp_dir("unix-backlog")?;
    let path = dir.join("busy.sock");
    // A listener that never accepts, with the smallest backlog.
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
    rustix::net::bind(&listener, &SocketAddrUnix::new(&path)?)?;
    rustix::net::listen(&listener, 0)?;
    let uri = Transport::Unix(path);
    fill_the_backlog_then_wait(&uri)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
