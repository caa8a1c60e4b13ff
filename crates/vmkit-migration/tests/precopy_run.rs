//! The precopy engine end to end, with a test "guest" that writes chosen
//! pages between and during passes and a manual clock: the destination
//! restored from the stream equals the source at the moment it stopped.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use vmkit_memory::{DirtyClient, ManualClock, RamBlock};
use vmkit_migration::device_state::DynDeviceState;
use vmkit_migration::precopy::{
    Checkpoint, PassRecord, Precopy, PrecopyControl, PrecopyError, PrecopyParams, PrecopyPhase, SwitchoverReason,
};
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveSet, restore};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
const TICK: Duration = Duration::from_millis(100);

struct Machine {
    ram: Vec<Arc<RamBlock>>,
    counter: Arc<ValueDevice>,
    set: SaveSet,
}

fn counter(n: u64) -> VmStruct {
    VmStruct::new().with("n", VmValue::UInt(n))
}

fn machine(patterned: bool) -> Result<Machine, Box<dyn std::error::Error>> {
    let ram = vec![
        RamBlock::anonymous("pc.ram", 256 * PAGE)?,
        RamBlock::anonymous("vga.vram", 16 * PAGE)?,
    ];
    if patterned {
        for p in (0..256).step_by(2) {
            ram[0].write_page_pattern(p, 7)?;
        }
        ram[1].write_page_pattern(3, 9)?;
    }
    let vmsd = VmStateDescription::builder("counter")
        .version(1)
        .simple("n", FieldKind::U64)
        .build()?;
    let counter = ValueDevice::new(vmsd, counter(0));
    let devices = vec![DeviceEntry::new(
        "counter",
        0,
        Arc::clone(&counter) as Arc<dyn DynDeviceState>,
    )];
    let set = SaveSet::new("pc-q35-vmkit", ram.clone(), devices);
    Ok(Machine { ram, counter, set })
}

fn checksums(ram: &[Arc<RamBlock>]) -> Result<Vec<u64>, vmkit_memory::Error> {
    ram.iter().map(|b| b.checksum_all()).collect()
}

fn logging(ram: &[Arc<RamBlock>]) -> bool {
    ram.iter().any(|b| b.dirty_log().is_logging(DirtyClient::Migration))
}

fn params(downtime_ms: u64, max_passes: u32) -> PrecopyParams {
    PrecopyParams {
        max_bandwidth: 0,
        downtime_limit: Duration::from_millis(downtime_ms),
        max_passes,
        ..PrecopyParams::default()
    }
}

/// Restores `stream` into a blank machine; returns it with the restore's
/// page count.
fn restored(stream: &[u8]) -> Result<(Machine, u64), Box<dyn std::error::Error>> {
    let dst = machine(false)?;
    let stats = restore(&dst.set, stream, &RestoreOptions::default())?;
    Ok((dst, stats.zero_pages + stats.normal_pages))
}

#[test]
fn pages_written_during_the_run_are_resent_and_the_destination_equals_the_source_at_stop() -> TestResult {
    let src = machine(true)?;
    let clock = ManualClock::new();
    let control = Arc::new(PrecopyControl::new(params(10, 10)));
    let at_stop = RefCell::new(None);
    let stopped = Cell::new(false);
    let mut stream = Vec::new();
    let outcome = Precopy::new(&src.set, Arc::clone(&control))
        .with_clock(clock.clone())
        .observe(|c| {
            let result: TestResult = (|| {
                assert!(!stopped.get() || matches!(c, Checkpoint::AfterStop | Checkpoint::BatchSent { .. }));
                match *c {
                    // During the first pass: page 0 was already sent.
                    // Sending a batch takes a tick.
                    Checkpoint::BatchSent { pass } if !stopped.get() => {
                        clock.advance(TICK);
                        if pass == 1 {
                            src.ram[0].write_page_pattern(0, 1)?;
                            src.counter.set(counter(1));
                        }
                    }
                    Checkpoint::PassDone(PassRecord { pass, .. }) => {
                        // 40 pages after pass 1: over the threshold; 3 after pass 2: under it.
                        let pages = if pass == 1 { 100..140 } else { 200..203 };
                        for p in pages {
                            src.ram[0].write_page_pattern(p, u64::from(pass) + 100)?;
                        }
                        src.counter.set(counter(u64::from(pass) + 1));
                    }
                    _ => {}
                }
                Ok(())
            })();
            assert!(result.is_ok(), "{result:?}");
        })
        .run(&mut stream, || {
            stopped.set(true);
            *at_stop.borrow_mut() = Some((checksums(&src.ram)?, src.counter.get()));
            Ok(())
        })?;
    assert!(!logging(&src.ram), "dirty logging stopped at the end");
    let snap = &outcome.snapshot;
    assert_eq!(snap.phase, PrecopyPhase::Completed);
    assert_eq!(snap.switchover, Some(SwitchoverReason::Converged));
    let dirty: Vec<u64> = snap.passes.iter().map(|p| p.dirty_pages).collect();
    assert_eq!(
        dirty,
        vec![272, 41, 3],
        "every page, then 40 + page 0, then 3 at the final sync"
    );
    assert_eq!(
        snap.passes.iter().map(|p| p.final_pass).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(snap.passes[0].duration, TICK * 2, "two batches: pc.ram, vga.vram");
    assert_eq!(snap.passes[1].duration, TICK);
    assert_eq!(
        snap.passes[2].duration,
        Duration::ZERO,
        "the test guest takes no time once stopped"
    );
    let bw = snap.passes[1].bandwidth.ok_or("no bandwidth")?;
    assert_eq!(bw, snap.passes[1].bytes as f64 / 0.1);
    assert_eq!(snap.ram.dirty_sync_count, 4, "setup, after pass 1, after pass 2, final");
    assert_eq!(snap.ram.transferred, stream.len() as u64);
    assert_eq!(snap.ram.precopy_bytes + snap.ram.downtime_bytes, snap.ram.transferred);
    assert!(snap.ram.downtime_bytes > 3 * PAGE);
    assert_eq!(snap.ram.total, 272 * PAGE);
    assert_eq!(snap.ram.remaining, 0);
    let sent: u64 = snap.passes.iter().map(|p| p.pages).sum();
    assert_eq!(snap.ram.normal + snap.ram.duplicate, sent);
    assert_eq!(snap.ram.normal_bytes, snap.ram.normal * PAGE);
    assert_eq!(sent, 272 + 41 + 3);
    assert_eq!(outcome.devices, 1);
    assert!(snap.source_stopped);

    let (dst, pages) = restored(&stream)?;
    assert_eq!(
        pages, sent,
        "the destination took every record, pages sent twice included"
    );
    let (sums, dev) = at_stop.borrow_mut().take().ok_or("stop was not called")?;
    assert_eq!(checksums(&dst.ram)?, sums);
    assert_eq!(dst.counter.get(), dev);
    assert_eq!(dev, counter(3));
    Ok(())
}

#[test]
fn max_passes_forces_switchover() -> TestResult {
    let src = machine(true)?;
    let clock = ManualClock::new();
    // A zero downtime limit never fits a non-empty remainder.
    let control = Arc::new(PrecopyControl::new(params(0, 4)));
    let mut stream = Vec::new();
    let outcome = Precopy::new(&src.set, Arc::clone(&control))
        .with_clock(clock.clone())
        .observe(|c| {
            if let Checkpoint::BatchSent { .. } = c {
                clock.advance(TICK);
            }
            if let Checkpoint::PassDone(r) = c {
                for p in 0..50 {
                    let written = src.ram[0].write_page_pattern(p, u64::from(r.pass));
                    assert!(written.is_ok());
                }
            }
        })
        .run(&mut stream, || Ok(()))?;
    let snap = outcome.snapshot;
    assert_eq!(snap.switchover, Some(SwitchoverReason::MaxPasses));
    assert_eq!(snap.passes.len(), 5, "4 passes and the final one");
    assert!(snap.passes[1..].iter().all(|p| p.dirty_pages == 50));
    assert!(snap.expected_downtime.is_none(), "cleared when the run ended");
    let (dst, _) = restored(&stream)?;
    assert_eq!(checksums(&dst.ram)?, checksums(&src.ram)?);
    Ok(())
}

/// Where a cancel-at-each-phase run cancels.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CancelAt {
    BeforeRun,
    Setup,
    FirstBatch,
    PassDone,
    BeforeStop,
    AfterStop,
    FinalBatch,
}

#[test]
fn cancel_at_each_phase_stops_logging_and_changes_nothing() -> TestResult {
    use CancelAt::*;
    let cases = [
        (BeforeRun, PrecopyPhase::Setup, false),
        (Setup, PrecopyPhase::Active, false),
        (FirstBatch, PrecopyPhase::Active, false),
        (PassDone, PrecopyPhase::Active, false),
        (BeforeStop, PrecopyPhase::Active, false),
        (AfterStop, PrecopyPhase::Device, true),
        (FinalBatch, PrecopyPhase::Device, true),
    ];
    for (at, phase, stopped) in cases {
        let src = machine(true)?;
        let before = checksums(&src.ram)?;
        let clock = ManualClock::new();
        let control = Arc::new(PrecopyControl::new(params(1000, 10)));
        if at == BeforeRun {
            control.cancel();
        }
        let stop_calls = Cell::new(0);
        let after_stop = Cell::new(false);
        let ctl = Arc::clone(&control);
        let result = Precopy::new(&src.set, Arc::clone(&control))
            .with_clock(clock.clone())
            .observe(|c| {
                let now = match (at, c) {
                    (Setup, Checkpoint::SetupDone) | (AfterStop, Checkpoint::AfterStop) => true,
                    (FirstBatch, Checkpoint::BatchSent { pass: 1 }) => true,
                    (PassDone, Checkpoint::PassDone(_)) | (BeforeStop, Checkpoint::BeforeStop(_)) => true,
                    (FinalBatch, Checkpoint::BatchSent { .. }) => after_stop.get(),
                    _ => false,
                };
                match c {
                    Checkpoint::BatchSent { .. } => clock.advance(TICK),
                    // Dirty but unchanged, so the final pass has a page.
                    Checkpoint::PassDone(_) => assert!(src.ram[0].write_page_pattern(0, 7).is_ok()),
                    Checkpoint::AfterStop => after_stop.set(true),
                    _ => {}
                }
                if now {
                    ctl.cancel();
                }
            })
            .run(Vec::new(), || {
                stop_calls.set(stop_calls.get() + 1);
                Ok(())
            });
        match result {
            Err(PrecopyError::Cancelled { phase: p, stopped: s }) => {
                assert_eq!((p, s), (phase, stopped), "cancelled at {at:?}");
            }
            other => panic!("cancelled at {at:?}: {other:?}"),
        }
        assert_eq!(stop_calls.get(), u32::from(stopped), "stop at {at:?}");
        assert!(!logging(&src.ram), "logging left on after a cancel at {at:?}");
        assert_eq!(checksums(&src.ram)?, before, "RAM changed by a cancel at {at:?}");
        assert_eq!(src.counter.get(), counter(0));
        let snap = control.snapshot();
        assert_eq!(snap.phase, PrecopyPhase::Cancelled);
        assert_eq!(snap.source_stopped, stopped);
        assert!(snap.error.is_none());
    }
    Ok(())
}

#[test]
fn a_failed_stop_fails_the_run_and_stops_logging() -> TestResult {
    let src = machine(true)?;
    let control = Arc::new(PrecopyControl::new(params(1000, 10)));
    let result = Precopy::new(&src.set, Arc::clone(&control))
        .with_clock(ManualClock::new())
        .run(Vec::new(), || Err("the guest would not pause".into()));
    assert!(matches!(result, Err(PrecopyError::Stop(_))), "{result:?}");
    assert!(!logging(&src.ram));
    let snap = control.snapshot();
    assert_eq!(snap.phase, PrecopyPhase::Failed);
    assert!(!snap.source_stopped);
    assert!(snap.error.as_deref().is_some_and(|e| e.contains("would not pause")));
    Ok(())
}

#[test]
fn a_block_another_migration_logs_is_refused_and_left_logging() -> TestResult {
    let src = machine(true)?;
    src.ram[1].dirty_log().log_start(DirtyClient::Migration)?;
    let control = Arc::new(PrecopyControl::new(params(1000, 10)));
    let result = Precopy::new(&src.set, control).run(Vec::new(), || Ok(()));
    assert!(matches!(result, Err(PrecopyError::Stream(_))), "{result:?}");
    assert!(
        !src.ram[0].dirty_log().is_logging(DirtyClient::Migration),
        "its own start undone"
    );
    assert!(
        src.ram[1].dirty_log().is_logging(DirtyClient::Migration),
        "the other user's log kept"
    );
    Ok(())
}

/// A sink that takes at most `budget` bytes, then fails every write.
struct Budgeted<'a> {
    taken: &'a Cell<u64>,
    budget: &'a Cell<u64>,
}

impl std::io::Write for Budgeted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.budget.get().saturating_sub(self.taken.get());
        if room == 0 {
            return Err(std::io::Error::other("the link went down"));
        }
        let n = buf.len().min(room as usize);
        self.taken.set(self.taken.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_sink_failing_before_or_after_stop_fails_the_run_and_says_whether_the_source_stopped() -> TestResult {
    for after_stop in [false, true] {
        let src = machine(true)?;
        let before = checksums(&src.ram)?;
        let taken = Cell::new(0);
        let budget = Cell::new(if after_stop { u64::MAX } else { 1000 });
        let control = Arc::new(PrecopyControl::new(params(1000, 10)));
        let clock = ManualClock::new();
        let result = Precopy::new(&src.set, Arc::clone(&control))
            .with_clock(clock.clone())
            .observe(|c| match c {
                Checkpoint::BatchSent { .. } => clock.advance(TICK),
                // Dirty but unchanged, so the final pass has a page to send.
                Checkpoint::PassDone(_) => assert!(src.ram[0].write_page_pattern(0, 7).is_ok()),
                Checkpoint::AfterStop => budget.set(taken.get() + 10),
                _ => {}
            })
            .run(
                Budgeted {
                    taken: &taken,
                    budget: &budget,
                },
                || Ok(()),
            );
        assert!(matches!(result, Err(PrecopyError::Stream(_))), "{result:?}");
        let snap = control.snapshot();
        assert_eq!(snap.phase, PrecopyPhase::Failed);
        assert_eq!(snap.source_stopped, after_stop);
        assert!(
            snap.error.as_deref().is_some_and(|e| e.contains("the link went down")),
            "{snap:?}"
        );
        assert!(!logging(&src.ram));
        assert_eq!(checksums(&src.ram)?, before);
    }
    Ok(())
}

/// Runs precopy of a fresh patterned machine whose guest rewrites pages
/// 100..140 after the first pass, into a `Vec` or (by gathered writes)
/// into the file at `path`; returns the stream and the source.
fn guided_run(path: Option<&std::path::Path>) -> Result<(Vec<u8>, Machine), Box<dyn std::error::Error>> {
    let src = machine(true)?;
    let clock = ManualClock::new();
    let control = Arc::new(PrecopyControl::new(params(10, 10)));
    let run = Precopy::new(&src.set, control)
        .with_clock(clock.clone())
        .observe(|c| match c {
            Checkpoint::BatchSent { .. } => clock.advance(TICK),
            Checkpoint::PassDone(r) if r.pass == 1 => {
                for p in 100..140 {
                    assert!(src.ram[0].write_page_pattern(p, 3).is_ok());
                }
            }
            _ => {}
        });
    let (outcome, stream) = match path {
        Some(path) => (
            run.run_to_fd(std::fs::File::create(path)?, || Ok(()))?,
            std::fs::read(path)?,
        ),
        None => {
            let mut stream = Vec::new();
            (run.run(&mut stream, || Ok(()))?, stream)
        }
    };
    assert_eq!(
        outcome.snapshot.passes.len(),
        3,
        "every page, the 40 rewritten, the final pass"
    );
    assert_eq!(outcome.snapshot.ram.transferred, stream.len() as u64);
    Ok((stream, src))
}

#[test]
fn gathered_writes_to_a_descriptor_send_the_same_stream() -> TestResult {
    let path = std::env::temp_dir().join(format!("precopy-fd-{}", std::process::id()));
    let (buffered, _) = guided_run(None)?;
    let gathered = guided_run(Some(&path));
    std::fs::remove_file(&path)?;
    let (gathered, src) = gathered?;
    assert!(gathered == buffered, "the two paths wrote different streams");
    let (dst, _) = restored(&gathered)?;
    assert_eq!(checksums(&dst.ram)?, checksums(&src.ram)?);
    Ok(())
}
