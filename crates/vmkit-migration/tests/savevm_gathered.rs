//! `save_to_fd` sends RAM pages from guest memory in gathered writes; the
//! bytes must be exactly those of the staged `save`, whatever the sink.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use proptest::prelude::*;
use vmkit_memory::RamBlock;
use vmkit_migration::Error;
use vmkit_migration::savevm::{
    DeviceEntry, RestoreOptions, SaveOptions, SaveSet, restore, save, save_to_fd, save_to_sink,
};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::transport::{OpenOptions, Sink};
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};
use vmkit_migration::wire::WireError;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;

/// A block whose pages are zero where `zero[p]`, else carry `p` and a seed.
fn block(name: &str, zero: &[bool], seed: u8) -> Result<Arc<RamBlock>, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous(name, zero.len() as u64 * PAGE)?;
    for (p, &z) in zero.iter().enumerate() {
        if !z {
            // Non-zero only at the end of the page, so the zero scan has to
            // read the whole page to decide.
            ram.write(p as u64 * PAGE + PAGE - 9, &[seed, 1, 2, 3, 4, 5, 6, 7, p as u8 | 1])?;
        }
    }
    Ok(ram)
}

fn set_of(blocks: Vec<Arc<RamBlock>>) -> Result<SaveSet, Box<dyn std::error::Error>> {
    let vmsd = VmStateDescription::builder("uart")
        .version(1)
        .simple("lcr", FieldKind::U8)
        .build()?;
    let dev = DeviceEntry::new(
        "uart",
        0,
        ValueDevice::new(vmsd, VmStruct::new().with("lcr", VmValue::UInt(3))),
    );
    Ok(SaveSet::new("pc-q35-vmkit", blocks, vec![dev]))
}

fn staged(set: &SaveSet) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    save(set, &mut out, &SaveOptions::default())?;
    Ok(out)
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vmkit-gathered-{tag}-{}", std::process::id()))
}

/// Saves through a socket pair read by another thread: returns what it read.
fn through_socket(set: &SaveSet, nonblocking: bool) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (tx, mut rx) = UnixStream::pair()?;
    tx.set_nonblocking(nonblocking)?;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 3000];
        loop {
            match rx.read(&mut buf) {
                Ok(0) | Err(_) => break got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let stats = save_to_fd(set, tx.as_fd(), &SaveOptions::default());
    drop(tx);
    let got = reader.join().map_err(|_| "reader panicked")?;
    assert_eq!(stats?.bytes, got.len() as u64);
    Ok(got)
}

#[test]
fn file_pipe_and_socket_sinks_get_the_staged_bytes() -> TestResult {
    let zero: Vec<bool> = (0..700).map(|p| p % 5 == 0 || (300..420).contains(&p)).collect();
    let set = set_of(vec![
        block("pc.ram", &zero, 0x11)?,
        block("vga.vram", &[true, false, true], 0x22)?,
    ])?;
    let want = staged(&set)?;

    let path = temp_path("file");
    let stats = save_to_fd(&set, std::fs::File::create(&path)?, &SaveOptions::default())?;
    assert_eq!(std::fs::read(&path)?, want);
    assert_eq!(stats.bytes, want.len() as u64);
    assert_eq!(stats.zero_pages, zero.iter().filter(|&&z| z).count() as u64 + 2);
    assert_eq!(stats.normal_pages, 703 - stats.zero_pages);
    std::fs::remove_file(&path)?;

    // A pipe read by another thread.
    let (mut rd, wr) = std::io::pipe()?;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).map(|_| got)
    });
    save_to_fd(&set, &wr, &SaveOptions::default())?;
    drop(wr);
    assert!(reader.join().map_err(|_| "reader panicked")?? == want);

    assert!(through_socket(&set, false)? == want);
    // A non-blocking sink is waited on, not failed.
    assert!(through_socket(&set, true)? == want);
    Ok(())
}

#[test]
fn a_gathered_stream_restores() -> TestResult {
    let zero: Vec<bool> = (0..64).map(|p| p % 3 == 1).collect();
    let set = set_of(vec![block("pc.ram", &zero, 7)?])?;
    let path = temp_path("restore");
    save_to_fd(&set, std::fs::File::create(&path)?, &SaveOptions::default())?;
    let fresh = RamBlock::anonymous("pc.ram", 64 * PAGE)?;
    fresh.fill(0, 64 * PAGE, 0xEE)?;
    let target = set_of(vec![Arc::clone(&fresh)])?;
    restore(&target, std::fs::File::open(&path)?, &RestoreOptions::default())?;
    std::fs::remove_file(&path)?;
    for p in 0..64 {
        assert_eq!(
            fresh.checksum(p * PAGE, PAGE)?,
            set.ram[0].checksum(p * PAGE, PAGE)?,
            "page {p}"
        );
    }
    Ok(())
}

#[test]
fn without_zero_page_detection_every_page_is_sent_whole_and_restores() -> TestResult {
    let zero: Vec<bool> = (0..40).map(|p| p % 2 == 0).collect();
    let set = set_of(vec![block("pc.ram", &zero, 9)?])?;
    let opts = SaveOptions {
        zero_page_detection: false,
        ..SaveOptions::default()
    };
    let mut staged_bytes = Vec::new();
    let stats = save(&set, &mut staged_bytes, &opts)?;
    assert_eq!((stats.zero_pages, stats.normal_pages), (0, 40));
    let path = temp_path("no-zero");
    let gathered = save_to_fd(&set, std::fs::File::create(&path)?, &opts)?;
    assert_eq!((gathered.zero_pages, gathered.normal_pages), (0, 40));
    assert!(std::fs::read(&path)? == staged_bytes, "both paths write the same bytes");
    std::fs::remove_file(&path)?;
    let with_detection = staged(&set)?;
    assert_eq!(staged_bytes.len() - with_detection.len(), 20 * (PAGE as usize - 1));

    let fresh = RamBlock::anonymous("pc.ram", 40 * PAGE)?;
    fresh.fill(0, 40 * PAGE, 0xEE)?;
    restore(
        &set_of(vec![Arc::clone(&fresh)])?,
        staged_bytes.as_slice(),
        &RestoreOptions::default(),
    )?;
    assert_eq!(fresh.checksum_all()?, set.ram[0].checksum_all()?);
    Ok(())
}

#[test]
fn a_sink_that_fails_is_an_error_with_an_offset() -> TestResult {
    let set = set_of(vec![block("pc.ram", &[false; 40], 1)?])?;
    let path = temp_path("readonly");
    std::fs::write(&path, b"")?;
    let read_only = std::fs::File::open(&path)?;
    let err = save_to_fd(&set, &read_only, &SaveOptions::default()).err();
    std::fs::remove_file(&path)?;
    // The header records wait in the buffer: the first write is its
    // flush, and no byte reached the sink, so the failure is at offset 0.
    assert!(
        matches!(&err, Some(Error::Wire(WireError::Io { offset: 0, source })) if source.raw_os_error() == Some(9)),
        "{err:?}"
    );
    // A reader that is gone: EPIPE, not a hang or a signal.
    let (tx, rx) = UnixStream::pair()?;
    drop(rx);
    let err = save_to_fd(&set, &tx, &SaveOptions::default()).err();
    assert!(
        matches!(&err, Some(Error::Wire(WireError::Io { offset: 0, source })) if source.raw_os_error() == Some(32)),
        "{err:?}"
    );
    Ok(())
}

/// A pipe read by a thread that takes `take` bytes and then closes.
fn reader_that_stops_after(take: usize) -> Result<(std::fs::File, std::thread::JoinHandle<Vec<u8>>), std::io::Error> {
    let (rd, wr) = rustix::pipe::pipe()?;
    let (mut rd, wr) = (std::fs::File::from(rd), std::fs::File::from(wr));
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; take];
        let n = rd.read(&mut got[..]).unwrap_or(0);
        let mut at = n;
        while at < take {
            match rd.read(&mut got[at..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => at += n,
            }
        }
        got.truncate(at);
        got
    });
    Ok((wr, reader))
}

#[test]
fn a_gathered_write_failing_mid_batch_names_the_byte_not_the_batch() -> TestResult {
    let set = set_of(vec![block("pc.ram", &[false; 600], 5)?])?;
    let want = staged(&set)?;
    // The reader stops inside the RAM pages, mid-batch: the error's offset
    // is where the sink stopped taking bytes — at least what the reader
    // took, at most that plus the pipe's buffer — not the batch's start.
    let take = 100_000;
    let (wr, reader) = reader_that_stops_after(take)?;
    let pipe = rustix::pipe::fcntl_setpipe_size(&wr, 4096)?;
    let err = save_to_fd(&set, &wr, &SaveOptions::default()).err();
    drop(wr);
    let got = reader.join().map_err(|_| "reader panicked")?;
    assert!(got == want[..take], "the bytes before the failure are the stream's");
    let Some(Error::Wire(WireError::Io { offset, source })) = err else {
        panic!("{err:?}");
    };
    assert_eq!(source.raw_os_error(), Some(32));
    assert!((take..=take + pipe).contains(&(offset as usize)), "offset {offset}");
    Ok(())
}

/// A sink that takes `left` bytes, then fails every write.
struct FailAfter {
    left: usize,
    got: Vec<u8>,
}

impl std::io::Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        self.got.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_buffered_write_failing_names_the_exact_byte() -> TestResult {
    let set = set_of(vec![block("pc.ram", &[false; 300], 6)?])?;
    let want = staged(&set)?;
    // Inside the file header (the first flush), inside the pages, and in
    // the device section and trailer after them.
    for cut in [0, 50, 700_000, want.len() - 30, want.len() - 1] {
        let mut sink = FailAfter {
            left: cut,
            got: Vec::new(),
        };
        let err = save(&set, &mut sink, &SaveOptions::default()).err();
        let Some(Error::Wire(WireError::Io { offset, source })) = err else {
            panic!("cut {cut}: {err:?}");
        };
        assert_eq!((offset, source.raw_os_error()), (cut as u64, Some(28)), "cut {cut}");
        assert!(sink.got == want[..cut]);
    }
    Ok(())
}

#[test]
fn a_failed_save_keeps_the_old_stream_and_leaves_no_file() -> TestResult {
    let set = set_of(vec![block("pc.ram", &[false; 40], 9)?])?;
    let dir = temp_path("keep");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("vm.stream");
    std::fs::write(&path, b"the previous stream")?;
    // A block the stream cannot carry (a name over 255 bytes) fails
    // the save after the sink was opened: the temporary file must vanish.
    let refusing = set_of(vec![RamBlock::anonymous("r".repeat(300), 4096)?])?;
    let sink = Sink::open_path(&path, &OpenOptions::default(), &|| Ok::<(), ()>(())).map_err(|e| format!("{e:?}"))?;
    assert!(save_to_sink(&refusing, sink, &SaveOptions::default()).is_err());
    assert_eq!(std::fs::read(&path)?, b"the previous stream");
    assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
    // A good save replaces it with the stream.
    let sink = Sink::open_path(&path, &OpenOptions::default(), &|| Ok::<(), ()>(())).map_err(|e| format!("{e:?}"))?;
    let stats = save_to_sink(&set, sink, &SaveOptions::default())?;
    assert_eq!(std::fs::read(&path)?, staged(&set)?);
    assert_eq!(stats.bytes, std::fs::metadata(&path)?.len());
    assert_eq!(std::fs::read_dir(&dir)?.count(), 1);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any mix of zero and non-zero pages over one or two blocks.
    #[test]
    fn gathered_bytes_equal_staged_bytes(
        a in proptest::collection::vec(any::<bool>(), 1..300),
        b in proptest::collection::vec(any::<bool>(), 0..40),
    ) {
        let mut blocks = vec![block("pc.ram", &a, 3).map_err(|e| TestCaseError::fail(e.to_string()))?];
        if !b.is_empty() {
            blocks.push(block("a-much-longer-block-name/0000:00:02.0/vga.vram", &b, 4)
                .map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
        let set = set_of(blocks).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = staged(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = through_socket(&set, false).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(got == want);
    }
}
