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
    }
}

#[test]
fn uris_parse_to_transports() {
    assert_eq!(
        "file:/tmp/vm.stream".parse::<Transport>().ok(),
        Some(Transport::File("/tmp/vm.stream".into()))
    );
    assert_eq!(
        "exec:cat > /tmp/x".parse::<Transport>().ok(),
        Some(Transport::Exec("cat > /tmp/x".into()))
    );
    assert_eq!(
        Transport::Exec("gzip -c > f".into()).to_string(),
        "exec:gzip -c > f",
        "Display round-trips"
    );
    for (uri, errno) in [
        ("unix:/run/sock", libc::EPROTONOSUPPORT),
        ("tcp:0:4444", libc::EPROTONOSUPPORT),
        ("fd:3", libc::EPROTONOSUPPORT),
        ("file:", libc::EINVAL),
        ("exec:  ", libc::EINVAL),
        ("/tmp/no-scheme", libc::EINVAL),
        ("gopher:x", libc::EINVAL),
    ] {
        let err = uri.parse::<Transport>().err();
        assert_eq!(err.as_ref().map(TransportError::errno), Some(errno), "{uri}: {err:?}");
    }
    let text = "tcp:0:4444".parse::<Transport>().err().map(|e| e.to_string());
    assert_eq!(
        text.as_deref(),
        Some("the 'tcp:' transport is not supported (only file: and exec:)")
    );
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
    let sink = Sink::open(&Transport::Exec(cmd), &OpenOptions::default(), &never)?;
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
