use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!("vmkit-transport-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn mkfifo(path: &Path) -> TestResult {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600))?;
    Ok(())
}

/// An interrupt check that never interrupts.
fn never() -> Result<(), String> {
    Ok(())
}

fn entries(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

/// An interrupt check that reports a pending signal on its third call,
/// as a Python signal handler's exception would come back.
fn pending_signal_on_third_check(calls: &Cell<u32>) -> Result<(), &'static str> {
    calls.set(calls.get() + 1);
    if calls.get() == 3 {
        Err("KeyboardInterrupt")
    } else {
        Ok(())
    }
}

/// No timeout, a retry every millisecond.
fn retry_quickly() -> OpenOptions {
    OpenOptions {
        timeout: None,
        retry_every: Duration::from_millis(1),
        ..OpenOptions::default()
    }
}

fn tcp(host: &str, port: u16) -> Transport {
    Transport::Tcp {
        host: host.into(),
        port,
    }
}

#[test]
fn uris_parse_to_transports_and_print_back() {
    let table: Vec<(&str, Transport)> = vec![
        ("file:/tmp/vm.stream", Transport::file("/tmp/vm.stream")),
        (
            "file:/tmp/vm.stream,offset=4096",
            Transport::File {
                path: "/tmp/vm.stream".into(),
                offset: 4096,
            },
        ),
        ("exec:cat > /tmp/x", Transport::Exec("cat > /tmp/x".into())),
        ("unix:/run/vm.sock", Transport::Unix("/run/vm.sock".into())),
        ("unix:relative.sock", Transport::Unix("relative.sock".into())),
        ("tcp:127.0.0.1:4444", tcp("127.0.0.1", 4444)),
        ("tcp:localhost:0", tcp("localhost", 0)),
        ("tcp:[::1]:65535", tcp("::1", 65535)),
        ("tcp:[fd00:766d::2]:4444", tcp("fd00:766d::2", 4444)),
        ("fd:migfd", Transport::Fd("migfd".into())),
    ];
    for (uri, want) in table {
        let got = uri.parse::<Transport>();
        assert_eq!(got.as_ref().ok(), Some(&want), "{uri}: {got:?}");
        assert_eq!(want.to_string(), uri, "Display round-trips");
    }
}

#[test]
fn file_offsets_take_qemu_sizes() {
    for (uri, offset) in [
        ("file:/f,offset=0", 0),
        ("file:/f,offset=0x1000", 0x1000),
        ("file:/f,offset=4K", 4096),
        ("file:/f,offset=2M", 2 << 20),
        ("file:/f,offset=1G", 1 << 30),
    ] {
        let got = uri.parse::<Transport>().ok();
        assert_eq!(
            got,
            Some(Transport::File {
                path: "/f".into(),
                offset
            }),
            "{uri}"
        );
    }
    // A path with a comma that is not an offset stays a path.
    assert_eq!("file:/a,b".parse::<Transport>().ok(), Some(Transport::file("/a,b")));
    // Offset 0 prints without the suffix.
    assert_eq!(
        "file:/f,offset=0"
            .parse::<Transport>()
            .map(|t| t.to_string())
            .ok()
            .as_deref(),
        Some("file:/f")
    );
}

#[test]
fn bad_uris_are_refused_with_a_reason_and_errno() {
    for (uri, errno, reason) in [
        ("file:", libc::EINVAL, "empty path"),
        ("file:,offset=4", libc::EINVAL, "empty path"),
        ("file:/f,offset=", libc::EINVAL, "bad offset ''"),
        ("file:/f,offset=-1", libc::EINVAL, "bad offset '-1'"),
        ("file:/f,offset=0x", libc::EINVAL, "bad offset '0x'"),
        ("file:/f,offset=99999999999T", libc::EINVAL, "bad offset '99999999999T'"),
        ("exec:  ", libc::EINVAL, "empty command"),
        ("unix:", libc::EINVAL, "empty path"),
        ("fd:", libc::EINVAL, "empty descriptor name"),
        ("tcp:", libc::EINVAL, "no port (expected tcp:HOST:PORT)"),
        ("tcp:localhost", libc::EINVAL, "no port (expected tcp:HOST:PORT)"),
        ("tcp::4444", libc::EINVAL, "empty host"),
        ("tcp:[]:4444", libc::EINVAL, "'' in brackets is not an IPv6 address"),
        ("tcp:localhost:", libc::EINVAL, "empty port"),
        ("tcp:localhost:65536", libc::EINVAL, "bad port '65536' (0 to 65535)"),
        ("tcp:localhost:-1", libc::EINVAL, "bad port '-1' (0 to 65535)"),
        ("tcp:localhost:+80", libc::EINVAL, "bad port '+80' (0 to 65535)"),
        ("tcp:localhost:http", libc::EINVAL, "bad port 'http' (0 to 65535)"),
        (
            "tcp:::1:4444",
            libc::EINVAL,
            "IPv6 address '::1' must be in brackets (tcp:[::1]:4444)",
        ),
        ("tcp:[::1:4444", libc::EINVAL, "unclosed '[' (expected tcp:[IPV6]:PORT)"),
        (
            "tcp:[::1]",
            libc::EINVAL,
            "no port after ']' (expected tcp:[IPV6]:PORT)",
        ),
        (
            "tcp:[::1]4444",
            libc::EINVAL,
            "no port after ']' (expected tcp:[IPV6]:PORT)",
        ),
        (
            "tcp:[127.0.0.1]:4444",
            libc::EINVAL,
            "'127.0.0.1' in brackets is not an IPv6 address",
        ),
        ("/tmp/no-scheme", libc::EINVAL, "no scheme"),
        ("gopher:x", libc::EINVAL, "unknown scheme 'gopher:'"),
        (
            "rdma:host:4444",
            libc::EPROTONOSUPPORT,
            "the 'rdma:' transport is not supported",
        ),
        (
            "vsock:3:4444",
            libc::EPROTONOSUPPORT,
            "the 'vsock:' transport is not supported",
        ),
    ] {
        let err = uri.parse::<Transport>().err();
        assert_eq!(err.as_ref().map(TransportError::errno), Some(errno), "{uri}: {err:?}");
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(reason), "{uri}: {text}");
    }
    let text = "tcp:h:1x".parse::<Transport>().err().map(|e| e.to_string());
    assert_eq!(text.as_deref(), Some("'tcp:h:1x': bad port '1x' (0 to 65535)"));
}

#[test]
fn the_registry_keeps_descriptors_by_name_as_getfd_does() -> TestResult {
    let fds = FdRegistry::new();
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    // A name starting with a digit is refused (and the descriptor closed).
    let err = fds.add("0mig", a.into()).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("Parameter 'fdname' expects a name not starting with a digit")
    );
    let mut peer = b;
    let mut got = Vec::new();
    peer.read_to_end(&mut got)?;
    assert!(
        got.is_empty(),
        "the refused descriptor was closed: its peer sees end-of-file"
    );
    // A second add under one name closes the first descriptor.
    let (first, mut first_peer) = std::os::unix::net::UnixStream::pair()?;
    let (second, _second_peer) = std::os::unix::net::UnixStream::pair()?;
    fds.add("mig", first.into())?;
    fds.add("mig", second.into())?;
    assert_eq!(fds.len(), 1);
    first_peer.read_to_end(&mut got)?;
    assert!(got.is_empty(), "the replaced descriptor was closed");
    fds.add("other", std::fs::File::open("/dev/null")?.into())?;
    assert_eq!(fds.names(), ["mig", "other"]);
    // take hands it over; a second take finds nothing.
    let taken = fds.take("mig")?;
    drop(taken);
    let err = fds.take("mig").err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("File descriptor named 'mig' has not been found")
    );
    fds.close("other")?;
    let err = fds.close("other").err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("File descriptor named 'other' not found")
    );
    assert!(fds.is_empty());
    // fd: with an unknown name is an error with EBADF, for a sink and a listener.
    let fd_uri = Transport::Fd("nope".into());
    let err = Sink::open(&fd_uri, &OpenOptions::default(), &fds, &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e @ TransportError::Fd(_))) if e.errno() == libc::EBADF),
        "{err:?}"
    );
    let err = Listener::bind(&fd_uri, &OpenOptions::default(), &fds).err();
    assert_eq!(
        err.map(|e| e.to_string()).as_deref(),
        Some("File descriptor named 'nope' has not been found")
    );
    Ok(())
}

#[test]
fn a_file_is_replaced_only_on_commit() -> TestResult {
    let dir = temp_dir("replace")?;
    let path = dir.join("vm.stream");
    std::fs::write(&path, b"old stream")?;
    // Dropped uncommitted (a failed save): the old file stays, no temporary.
    let sink = Sink::open_path(&path, &OpenOptions::default(), &never)?;
    assert_eq!(sink.kind(), "file");
    std::fs::File::from(sink.as_fd().try_clone_to_owned()?).write_all(b"half a new")?;
    assert_eq!(entries(&dir)?.len(), 2, "the temporary file is beside the target");
    drop(sink);
    assert_eq!(std::fs::read(&path)?, b"old stream");
    assert_eq!(entries(&dir)?, ["vm.stream"]);
    // Committed: the new bytes replace the old file.
    let sink = Sink::open_path(&path, &OpenOptions::default(), &never)?;
    std::fs::File::from(sink.as_fd().try_clone_to_owned()?).write_all(b"new")?;
    assert_eq!(std::fs::read(&path)?, b"old stream", "not before commit");
    sink.commit()?;
    assert_eq!(std::fs::read(&path)?, b"new");
    assert_eq!(entries(&dir)?, ["vm.stream"]);
    // A path that does not exist yet appears only on commit.
    let fresh = dir.join("fresh.stream");
    drop(Sink::open_path(&fresh, &OpenOptions::default(), &never)?);
    assert!(!fresh.exists());
    assert_eq!(entries(&dir)?, ["vm.stream"]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_symlinked_file_is_replaced_behind_its_link() -> TestResult {
    let dir = temp_dir("symlink")?;
    let real = dir.join("real.stream");
    let link = dir.join("link.stream");
    std::fs::write(&real, b"old")?;
    std::os::unix::fs::symlink(&real, &link)?;
    let sink = Sink::open_path(&link, &OpenOptions::default(), &never)?;
    std::fs::File::from(sink.as_fd().try_clone_to_owned()?).write_all(b"new")?;
    sink.commit()?;
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert_eq!(std::fs::read(&real)?, b"new");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_directory_or_a_missing_directory_is_an_error_with_its_errno() -> TestResult {
    let dir = temp_dir("dir")?;
    let err = Sink::open_path(&dir, &OpenOptions::default(), &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e)) if e.errno() == libc::EISDIR),
        "{err:?}"
    );
    let err = Sink::open_path(&dir.join("no/such/dir"), &OpenOptions::default(), &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e)) if e.errno() == libc::ENOENT),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_fifo_without_a_reader_times_out() -> TestResult {
    let dir = temp_dir("fifo-timeout")?;
    let fifo = dir.join("fifo");
    mkfifo(&fifo)?;
    let calls = Cell::new(0);
    let count = || -> Result<(), String> {
        calls.set(calls.get() + 1);
        Ok(())
    };
    // A zero timeout: one try, one interrupt check, then the timeout.
    let opts = OpenOptions {
        timeout: Some(Duration::ZERO),
        ..OpenOptions::default()
    };
    let err = Sink::open_path(&fifo, &opts, &count).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e @ TransportError::TimedOut { .. })) if e.errno() == libc::ETIMEDOUT),
        "{err:?}"
    );
    assert_eq!(calls.get(), 1);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_fifo_wait_stops_when_the_interrupt_check_says_so() -> TestResult {
    let dir = temp_dir("fifo-interrupt")?;
    let fifo = dir.join("fifo");
    mkfifo(&fifo)?;
    let calls = Cell::new(0);
    // The third check reports a pending signal; its error comes back as is.
    let interrupt = || pending_signal_on_third_check(&calls);
    let opts = retry_quickly();
    let err = Sink::open_path(&fifo, &opts, &interrupt).err();
    assert!(
        matches!(err, Some(OpenError::Interrupted("KeyboardInterrupt"))),
        "{err:?}"
    );
    assert_eq!(calls.get(), 3);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_fifo_with_a_reader_opens_blocking_with_a_larger_pipe() -> TestResult {
    let dir = temp_dir("fifo")?;
    let fifo = dir.join("fifo");
    mkfifo(&fifo)?;
    // A reader, so that opening for writing succeeds at once.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)?;
    let sink = Sink::open_path(&fifo, &OpenOptions::default(), &never)?;
    assert_eq!(sink.kind(), "fifo or device");
    let size = rustix::pipe::fcntl_getpipe_size(sink.as_fd())?;
    assert!(size > 64 * 1024, "pipe buffer {size}");
    let flags = rustix::fs::fcntl_getfl(sink.as_fd())?;
    assert!(!flags.contains(rustix::fs::OFlags::NONBLOCK));
    let mut list = GatherList::new();
    list.push_bytes(b"through the fifo");
    assert_eq!(list.write_to(sink.as_fd()).ok(), Some(16));
    sink.commit()?;
    let mut got = Vec::new();
    reader.read_to_end(&mut got)?;
    assert_eq!(got, b"through the fifo");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_device_and_a_socket_are_written_directly() -> TestResult {
    let sink = Sink::open_path(Path::new("/dev/null"), &OpenOptions::default(), &never)?;
    assert_eq!(sink.kind(), "fifo or device");
    sink.commit()?;
    let dir = temp_dir("socket")?;
    let path = dir.join("sock");
    let listener = UnixListener::bind(&path)?;
    let sink = Sink::open_path(&path, &OpenOptions::default(), &never)?;
    assert_eq!(sink.kind(), "socket");
    let mut list = GatherList::new();
    list.push_bytes(b"hello");
    assert_eq!(list.write_to(sink.as_fd()).ok(), Some(5));
    sink.commit()?;
    let (mut conn, _) = listener.accept()?;
    let mut got = Vec::new();
    conn.read_to_end(&mut got)?;
    assert_eq!(got, b"hello");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn exec_feeds_the_command_and_checks_its_status() -> TestResult {
    let dir = temp_dir("exec")?;
    let out = dir.join("out");
    let cmd = format!("cat > '{}'", out.display());
    let sink = Sink::open(
        &Transport::Exec(cmd),
        &OpenOptions::default(),
        &FdRegistry::new(),
        &never,
    )?;
    assert_eq!(sink.kind(), "exec");
    let mut list = GatherList::new();
    list.push_bytes(b"stream bytes");
    assert_eq!(list.write_to(sink.as_fd()).ok(), Some(12));
    sink.commit()?;
    assert_eq!(std::fs::read(&out)?, b"stream bytes");
    // A command that fails is an error on commit.
    let sink = Sink::open(
        &Transport::Exec("cat > /dev/null; exit 3".into()),
        &OpenOptions::default(),
        &FdRegistry::new(),
        &never,
    )?;
    let err = sink.commit().err();
    assert!(matches!(&err, Some(TransportError::CommandFailed { .. })), "{err:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_source_fifo_waits_for_its_writer_with_timeout_and_interrupt() -> TestResult {
    let dir = temp_dir("source-fifo")?;
    let fifo = dir.join("fifo");
    mkfifo(&fifo)?;
    let zero = OpenOptions {
        timeout: Some(Duration::ZERO),
        ..OpenOptions::default()
    };
    let err = open_source(&fifo, &zero, &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e @ TransportError::TimedOut { .. })) if e.errno() == libc::ETIMEDOUT),
        "{err:?}"
    );
    let calls = Cell::new(0);
    let interrupt = || pending_signal_on_third_check(&calls);
    let quick = retry_quickly();
    let err = open_source(&fifo, &quick, &interrupt).err();
    assert!(
        matches!(err, Some(OpenError::Interrupted("KeyboardInterrupt"))),
        "{err:?}"
    );
    assert_eq!(calls.get(), 3);
    // A writer that sends and leaves: the source opens, reads block.
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = std::fs::OpenOptions::new().write(true).open(writer_path)?;
        w.write_all(b"stream")
    });
    let mut file = open_source(&fifo, &OpenOptions::default(), &never).map_err(|e| format!("{e}"))?;
    assert!(!rustix::fs::fcntl_getfl(&file)?.contains(rustix::fs::OFlags::NONBLOCK));
    let mut got = Vec::new();
    file.read_to_end(&mut got)?;
    writer.join().map_err(|_| "writer panicked")??;
    assert_eq!(got, b"stream");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_source_may_be_a_file_or_a_socket() -> TestResult {
    let dir = temp_dir("source")?;
    let path = dir.join("vm.stream");
    std::fs::write(&path, b"bytes")?;
    let mut got = Vec::new();
    open_source(&path, &OpenOptions::default(), &never)
        .map_err(|e| format!("{e}"))?
        .read_to_end(&mut got)?;
    assert_eq!(got, b"bytes");
    let sock = dir.join("sock");
    let listener = UnixListener::bind(&sock)?;
    let server =
        std::thread::spawn(move || -> std::io::Result<()> { listener.accept()?.0.write_all(b"over a socket") });
    let mut got = Vec::new();
    open_source(&sock, &OpenOptions::default(), &never)
        .map_err(|e| format!("{e}"))?
        .read_to_end(&mut got)?;
    server.join().map_err(|_| "server panicked")??;
    assert_eq!(got, b"over a socket");
    let err = open_source(&dir.join("missing"), &OpenOptions::default(), &never).err();
    assert!(
        matches!(&err, Some(OpenError::Transport(e)) if e.errno() == libc::ENOENT),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
