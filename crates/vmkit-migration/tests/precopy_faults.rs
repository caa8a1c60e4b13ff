//! Fault injection in the precopy engine: a cut, a corruption, a drop or
//! a delay at an offset, a pass or a section does exactly that to the
//! stream, the source's RAM and devices are untouched, dirty logging is
//! stopped, and a destination refuses a cut stream.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use vmkit_memory::{Clock, DirtyClient, ManualClock, RamBlock};
use vmkit_migration::device_state::DynDeviceState;
use vmkit_migration::precopy::{
    Checkpoint, Fault, FaultAction, FaultPlan, FaultReport, FaultTrigger, Precopy, PrecopyControl, PrecopyError,
    PrecopyParams, PrecopyPhase,
};
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveSet, restore};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
const GUARD: Duration = Duration::from_secs(30);

struct Machine {
    ram: Vec<Arc<RamBlock>>,
    set: SaveSet,
}

fn machine(patterned: bool) -> Result<Machine, Box<dyn std::error::Error>> {
    let ram = vec![RamBlock::anonymous("pc.ram", 64 * PAGE)?];
    if patterned {
        for p in (0..64).step_by(3) {
            ram[0].write_page_pattern(p, 5)?;
        }
    }
    let vmsd = VmStateDescription::builder("counter")
        .version(1)
        .simple("n", FieldKind::U64)
        .build()?;
    let counter = ValueDevice::new(vmsd, VmStruct::new().with("n", VmValue::UInt(9)));
    let devices = vec![DeviceEntry::new("counter", 0, counter as Arc<dyn DynDeviceState>)];
    let set = SaveSet::new("pc-q35-vmkit", ram.clone(), devices);
    Ok(Machine { ram, set })
}

fn params() -> PrecopyParams {
    PrecopyParams {
        max_bandwidth: 0,
        // A zero limit only fits an empty remainder: each pass the test
        // dirties makes another one.
        downtime_limit: Duration::ZERO,
        ..PrecopyParams::default()
    }
}

/// What [`run`] gives: the stream, how the run ended, the fault's report.
type Ran = (Vec<u8>, Result<PrecopyPhase, PrecopyError>, FaultReport);

/// A run of a fresh patterned machine with `plan`, the guest rewriting
/// one page after pass 1 (so there are passes 1, 2 and the final 3).
fn run(plan: Option<FaultPlan>) -> Result<Ran, Box<dyn std::error::Error>> {
    let src = machine(true)?;
    let mut stream = Vec::new();
    let control = Arc::new(PrecopyControl::new(params()));
    let fault = plan.map(Fault::new);
    let mut precopy = Precopy::new(&src.set, control)
        .with_clock(ManualClock::new())
        .observe(|c| {
            if let Checkpoint::PassDone(r) = c
                && r.pass == 1
            {
                // Dirty but unchanged: the source's memory stays as it was.
                assert!(src.ram[0].write_page_pattern(0, 5).is_ok());
            }
        });
    if let Some(f) = &fault {
        precopy = precopy.inject(Arc::clone(f));
    }
    let before_stop = src.ram[0].checksum_all()?;
    let result = precopy.run(&mut stream, || Ok(())).map(|o| o.snapshot.phase);
    assert_eq!(
        src.ram[0].checksum_all()?,
        before_stop,
        "the run only reads guest memory"
    );
    assert!(!src.ram[0].dirty_log().is_logging(DirtyClient::Migration));
    Ok((stream, result, fault.map(|f| f.report()).unwrap_or_default()))
}

fn restores(stream: &[u8]) -> bool {
    let Ok(dst) = machine(false) else { return false };
    restore(&dst.set, stream, &RestoreOptions::default()).is_ok()
}

fn plan(action: FaultAction, at: FaultTrigger) -> Option<FaultPlan> {
    Some(FaultPlan { action, at })
}

#[test]
fn a_cut_ends_the_stream_there_and_fails_the_run_with_epipe() -> TestResult {
    let (clean, result, _) = run(None)?;
    assert_eq!(result?, PrecopyPhase::Completed);
    assert!(restores(&clean));
    for offset in [0, 1, 100, clean.len() as u64 / 2, clean.len() as u64 - 1] {
        let (cut, result, report) = run(plan(FaultAction::Cut, FaultTrigger::Offset(offset)))?;
        assert_eq!(cut.len() as u64, offset);
        assert_eq!(cut[..], clean[..cut.len()]);
        assert_eq!(
            report,
            FaultReport {
                armed_at: Some(offset),
                fired: true
            }
        );
        match result {
            Err(PrecopyError::Stream(e)) => {
                let failure = e.os_failure().ok_or("not an OS failure")?;
                assert_eq!(failure.errno, libc::EPIPE);
                assert_eq!(failure.offset, Some(offset));
            }
            other => panic!("cut at {offset}: {other:?}"),
        }
        assert!(!restores(&cut), "a destination refuses a stream cut at {offset}");
    }
    // Past the end: never reached.
    let (whole, result, report) = run(plan(FaultAction::Cut, FaultTrigger::Offset(clean.len() as u64)))?;
    assert_eq!((whole, result?), (clean, PrecopyPhase::Completed));
    assert!(!report.fired);
    Ok(())
}

#[test]
fn corrupt_inverts_and_drop_skips_the_bytes_at_the_offset() -> TestResult {
    let (clean, _, _) = run(None)?;
    let at = clean.len() / 3;
    let (bad, result, report) = run(plan(FaultAction::Corrupt { bytes: 3 }, FaultTrigger::Offset(at as u64)))?;
    assert_eq!(result?, PrecopyPhase::Completed, "the source cannot tell");
    assert!(report.fired);
    let mut expected = clean.clone();
    for b in &mut expected[at..at + 3] {
        *b ^= 0xff;
    }
    assert_eq!(bad, expected);

    let (short, result, _) = run(plan(FaultAction::Drop { bytes: 5000 }, FaultTrigger::Offset(at as u64)))?;
    assert_eq!(result?, PrecopyPhase::Completed);
    assert_eq!(short.len(), clean.len() - 5000);
    assert_eq!(short[..at], clean[..at]);
    assert_eq!(short[at..], clean[at + 5000..]);
    assert!(
        !restores(&short),
        "5000 bytes missing from a page record shift every record after it"
    );
    Ok(())
}

#[test]
fn pass_and_section_triggers_arm_where_the_pass_or_section_begins() -> TestResult {
    let (clean, _, _) = run(None)?;
    // Pass 1 starts right after the RAM START section; pass 3 is the
    // final one, after switchover.
    let mut starts = Vec::new();
    for at in [
        FaultTrigger::Section("ram".into()),
        FaultTrigger::Pass(1),
        FaultTrigger::Pass(2),
        FaultTrigger::Pass(3),
        FaultTrigger::Section("counter".into()),
    ] {
        let (cut, result, report) = run(plan(FaultAction::Cut, at.clone()))?;
        assert!(result.is_err(), "{at:?}");
        assert_eq!(report.armed_at, Some(cut.len() as u64), "{at:?}");
        assert!(!restores(&cut));
        starts.push(cut.len());
    }
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "in stream order: {starts:?}");
    // The RAM section of pass 2 begins with a PART header (type 0x02).
    assert_eq!(clean[starts[2]], 0x02);
    // A device section is FULL (type 0x04).
    assert_eq!(clean[starts[4]], 0x04);
    // A pass or section the run never reaches leaves the stream alone.
    for at in [FaultTrigger::Pass(4), FaultTrigger::Section("nothing".into())] {
        let (stream, result, report) = run(plan(FaultAction::Cut, at))?;
        assert_eq!(
            (stream, result?, report),
            (clean.clone(), PrecopyPhase::Completed, FaultReport::default())
        );
    }
    Ok(())
}

#[test]
fn a_delay_waits_on_the_runs_clock_and_a_cancel_ends_it_cancelled() -> TestResult {
    for cancel in [false, true] {
        let src = machine(true)?;
        let clock = ManualClock::new();
        let control = Arc::new(PrecopyControl::new(params()));
        let fault = Fault::new(FaultPlan {
            action: FaultAction::Delay(Duration::from_secs(3600)),
            at: FaultTrigger::Section("counter".into()),
        });
        let before = src.ram[0].checksum_all()?;
        let result = thread::scope(|s| {
            let run = s.spawn(|| {
                Precopy::new(&src.set, Arc::clone(&control))
                    .with_clock(clock.clone())
                    .inject(Arc::clone(&fault))
                    .run(Vec::new(), || Ok(()))
            });
            assert!(clock.wait_for_blocked(1, GUARD), "the run waits at the device section");
            assert!(fault.report().fired);
            assert_eq!(control.phase(), PrecopyPhase::Device);
            if cancel {
                control.cancel();
                clock.wake();
            } else {
                clock.advance(Duration::from_secs(3600));
            }
            run.join()
        });
        let result = result.map_err(|_| "the run panicked")?;
        if cancel {
            match result {
                Err(PrecopyError::Cancelled { phase, stopped }) => {
                    assert_eq!((phase, stopped), (PrecopyPhase::Device, true));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(control.snapshot().phase, PrecopyPhase::Cancelled);
        } else {
            assert_eq!(result?.snapshot.phase, PrecopyPhase::Completed);
        }
        assert_eq!(src.ram[0].checksum_all()?, before);
    }
    Ok(())
}
