//! QEMU's return path in precopy: with `return_path` on, the run completes
//! only once the destination said (`SHUT` 0) that it loaded the stream; a
//! destination that refuses a device section fails the run with the source
//! stopped (for its owner to resume), and a transport with no way back is
//! refused before anything else.

use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use vmkit_memory::RamBlock;
use vmkit_migration::device_state::DynDeviceState;
use vmkit_migration::precopy::{Precopy, PrecopyControl, PrecopyError, PrecopyParams};
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveSet, restore, restore_answering};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::transport::ReturnChannel;
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;

/// A machine of 32 pages and one counter device at `version`.
fn machine(version: u32, n: u64) -> Result<SaveSet, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous("pc.ram", 32 * PAGE)?;
    ram.write_page_pattern(3, 9)?;
    let vmsd = VmStateDescription::builder("counter")
        .version(version)
        .simple("n", FieldKind::U64)
        .build()?;
    let dev = ValueDevice::new(vmsd, VmStruct::new().with("n", VmValue::UInt(n)));
    let devices = vec![DeviceEntry::new("counter", 0, dev as Arc<dyn DynDeviceState>)];
    Ok(SaveSet::new("pc-q35-vmkit", vec![ram], devices))
}

fn with_return_path() -> PrecopyParams {
    PrecopyParams {
        max_bandwidth: 0,
        return_path: true,
        ..PrecopyParams::default()
    }
}

/// How both ends of a migration ended: the source's run, the destination's load.
type Ends = (Result<(), PrecopyError>, Result<(), String>);

/// Runs a migration from `src` into `dst` over a socket pair with a return
/// path; returns the source's result and the destination's.
fn migrate(src: &SaveSet, dst: SaveSet) -> Result<Ends, Box<dyn std::error::Error>> {
    let (tx, rx) = UnixStream::pair()?;
    let destination = thread::spawn(move || {
        let mut answers = rx.try_clone().map_err(|e| e.to_string())?;
        let loaded = restore_answering(
            &dst,
            BufReader::new(&rx),
            &RestoreOptions::default(),
            Some(&mut answers),
        );
        loaded.map(|_| ()).map_err(|e| e.to_string())
    });
    let control = Arc::new(PrecopyControl::new(with_return_path()));
    let channel = ReturnChannel::of(tx.as_fd(), Box::new(|| true))?.ok_or("a socket has a way back")?;
    let outcome = Precopy::new(src, control)
        .return_path(Box::new(channel))
        .run_to_fd(tx.as_fd(), || Ok(()))
        .map(|_| ());
    drop(tx);
    let dest = destination.join().map_err(|_| "destination panicked")?;
    Ok((outcome, dest))
}

#[test]
fn the_run_completes_once_the_destination_loaded() -> TestResult {
    let src = machine(1, 7)?;
    let dst = machine(1, 0)?;
    let dst_ram = Arc::clone(&dst.ram[0]);
    let (outcome, dest) = migrate(&src, dst)?;
    outcome?;
    dest?;
    assert_eq!(dst_ram.checksum_all()?, src.ram[0].checksum_all()?);
    Ok(())
}

#[test]
fn a_refused_device_section_fails_the_source() -> TestResult {
    let src = machine(2, 7)?;
    // Version 1 only: the source's version 2 section is refused.
    let (outcome, dest) = migrate(&src, machine(1, 0)?)?;
    assert!(dest.is_err(), "the destination refused");
    match outcome {
        Err(PrecopyError::ReturnPath { reason }) => {
            assert!(reason.contains("failed to load the stream (status 1)"), "{reason}");
        }
        other => return Err(format!("expected a return-path failure, got {other:?}").into()),
    }
    Ok(())
}

#[test]
fn no_way_back_is_refused_and_a_file_restore_refuses_a_return_path_stream() -> TestResult {
    let src = machine(1, 7)?;
    let control = Arc::new(PrecopyControl::new(with_return_path()));
    let mut stream = Vec::new();
    match Precopy::new(&src, control).run(&mut stream, || Ok(())) {
        Err(PrecopyError::ReturnPath { reason }) => assert!(reason.contains("no way back"), "{reason}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(stream.len(), 25, "the refusal came before anything but the preamble");
    // A stream that asks for a return path (OPEN_RETURN_PATH after the
    // configuration): a file has none to give.
    let mut whole = Vec::new();
    vmkit_migration::savevm::save(&src, &mut whole, &Default::default())?;
    whole.splice(25..25, [0x08, 0x00, 0x01, 0x00, 0x00]);
    let err = restore(&machine(1, 0)?, whole.as_slice(), &RestoreOptions::default())
        .err()
        .ok_or("a return-path stream from a file is refused")?;
    assert!(err.to_string().contains("OPEN_RETURN_PATH"), "{err}");
    Ok(())
}
