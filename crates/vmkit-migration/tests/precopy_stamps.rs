//! The switchover's wall-clock stamps: taken at the stop, after it, after
//! the final sync, after the final RAM and after the device state, on the
//! injected wall clock; none before the switchover or after a cancel.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vmkit_memory::{ManualClock, RamBlock};
use vmkit_migration::precopy::{
    Checkpoint, Precopy, PrecopyControl, PrecopyError, PrecopyParams, SwitchoverStamps, WallClock,
};
use vmkit_migration::savevm::SaveSet;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
const MS: Duration = Duration::from_millis(1);

fn params() -> PrecopyParams {
    PrecopyParams {
        max_bandwidth: 0,
        downtime_limit: Duration::from_millis(10),
        max_passes: 10,
        ..PrecopyParams::default()
    }
}

/// A wall clock that reads the manual clock from a fixed epoch offset, so
/// every stamp is exact.
fn wall_of(clock: &Arc<ManualClock>) -> (WallClock, SystemTime) {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = Arc::clone(clock);
    (Arc::new(move || base + vmkit_memory::Clock::now(clock.as_ref())), base)
}

#[test]
fn each_step_of_the_switchover_is_stamped_on_the_wall_clock() -> TestResult {
    let ram = RamBlock::anonymous("pc.ram", 64 * PAGE)?;
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], Vec::new());
    let clock = ManualClock::new();
    let (wall, base) = wall_of(&clock);
    let control = Arc::new(PrecopyControl::new(params()));
    let stopped = Cell::new(false);
    let before_stop = Cell::new(None);
    let outcome = Precopy::new(&set, Arc::clone(&control))
        .with_clock(clock.clone())
        .with_wall_clock(wall)
        .observe(|c| match *c {
            Checkpoint::PassDone(_) => {
                // Nothing is stamped before the switchover.
                before_stop.set(Some(control.snapshot().stamps));
                // The guest writes a page, so the final pass has one to send.
                assert!(ram.write(0, b"x").is_ok());
            }
            // The final sync takes 2 ms, the final RAM batch 3 ms.
            Checkpoint::AfterStop => clock.advance(2 * MS),
            Checkpoint::BatchSent { .. } if stopped.get() => clock.advance(3 * MS),
            Checkpoint::BatchSent { .. } => clock.advance(MS),
            _ => {}
        })
        .run(Vec::new(), || {
            // Pausing the guest takes 4 ms.
            clock.advance(4 * MS);
            stopped.set(true);
            Ok(())
        })?;
    assert_eq!(before_stop.get(), Some(SwitchoverStamps::default()));
    let t = outcome.snapshot.stamps;
    let stop = t.stop.ok_or("no stop stamp")?;
    assert!(stop > base);
    assert_eq!(t.stopped, Some(stop + 4 * MS));
    assert_eq!(t.synced, Some(stop + 6 * MS));
    assert_eq!(t.ram_sent, Some(stop + 9 * MS));
    // Device state and EOF take no time on the manual clock.
    assert_eq!(t.devices_sent, Some(stop + 9 * MS));
    // QEMU's downtime counts from the stop callback's return: sync and RAM.
    assert_eq!(outcome.snapshot.downtime, Some(5 * MS));
    Ok(())
}

#[test]
fn a_run_cancelled_before_the_stop_has_no_stamps() -> TestResult {
    let ram = RamBlock::anonymous("pc.ram", 16 * PAGE)?;
    let set = SaveSet::new("pc-q35-vmkit", vec![ram], Vec::new());
    let clock = ManualClock::new();
    let (wall, _) = wall_of(&clock);
    let control = Arc::new(PrecopyControl::new(params()));
    let result = Precopy::new(&set, Arc::clone(&control))
        .with_clock(clock.clone())
        .with_wall_clock(wall)
        .observe(|c| {
            if matches!(c, Checkpoint::BeforeStop(_)) {
                control.cancel();
            }
        })
        .run(Vec::new(), || Ok(()));
    assert!(matches!(result, Err(PrecopyError::Cancelled { stopped: false, .. })));
    assert_eq!(control.snapshot().stamps, SwitchoverStamps::default());
    Ok(())
}
