//! `save_to_fd` sends RAM pages from guest memory in gathered writes; the
//! bytes must be exactly those of the staged `save`, whatever the sink.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use proptest::prelude::*;
use vmkit_memory::RamBlock;
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveOptions, SaveSet, restore, save, save_to_fd};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};

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
fn a_sink_that_fails_is_an_error_with_an_offset() -> TestResult {
    let set = set_of(vec![block("pc.ram", &[false; 40], 1)?])?;
    let path = temp_path("readonly");
    std::fs::write(&path, b"")?;
    let read_only = std::fs::File::open(&path)?;
    let err = save_to_fd(&set, &read_only, &SaveOptions::default()).err();
    std::fs::remove_file(&path)?;
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    // The header records wait in the buffer: the first write is its flush.
    assert!(
        text.starts_with("I/O error at offset ") && text.contains("os error 9"),
        "{text}"
    );
    // A reader that is gone: EPIPE, not a hang or a signal.
    let (tx, rx) = UnixStream::pair()?;
    drop(rx);
    let text = save_to_fd(&set, &tx, &SaveOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("os error 32"), "{text}");
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
