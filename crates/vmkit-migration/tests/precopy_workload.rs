//! Precopy under a running workload (real threads writing guest RAM):
//! the destination equals the source at the moment `stop` paused it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use vmkit_memory::{DirtyClient, RamBlock, Workload, WorkloadConfig};
use vmkit_migration::precopy::{Checkpoint, Precopy, PrecopyControl, PrecopyParams, SwitchoverReason};
use vmkit_migration::savevm::{RestoreOptions, SaveSet, restore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
/// Real-time guard against a hang; never reached when the run works.
const GUARD: Duration = Duration::from_secs(60);

#[test]
fn a_running_workload_is_migrated_as_it_was_at_stop() -> TestResult {
    let ram = vec![
        RamBlock::anonymous("pc.ram", 1024 * PAGE)?,
        RamBlock::anonymous("extra", 64 * PAGE)?,
    ];
    let set = SaveSet::new("pc-q35-vmkit", ram.clone(), Vec::new());
    let workload = Workload::start(
        ram.clone(),
        WorkloadConfig {
            threads: 2,
            seed: 11,
            ..WorkloadConfig::default()
        },
    )?;
    // A zero downtime limit never converges while pages are dirtied, so
    // the run makes `max_passes` passes.
    let control = Arc::new(PrecopyControl::new(PrecopyParams {
        max_bandwidth: 0,
        downtime_limit: Duration::ZERO,
        max_passes: 3,
        ..PrecopyParams::default()
    }));
    let at_stop = Mutex::new(None);
    let wrote = AtomicBool::new(true);
    let mut stream = Vec::new();
    let outcome = Precopy::new(&set, Arc::clone(&control))
        .observe(|c| {
            if let Checkpoint::PassDone(_) = c {
                // Each pass leaves the guest time for some writes (counted,
                // not timed), so the next sync finds pages.
                let from = workload.stats().ops;
                let ok = workload.wait_until(GUARD, |s| s.ops >= from + 200);
                wrote.fetch_and(ok, Ordering::Relaxed);
            }
        })
        .run(&mut stream, || {
            workload.pause();
            let sums: Result<Vec<u64>, _> = ram.iter().map(|b| b.checksum_all()).collect();
            *at_stop.lock() = Some(sums?);
            Ok(())
        });
    let stats = workload.stop();
    let outcome = outcome?;
    assert!(
        wrote.load(Ordering::Relaxed),
        "the workload did not write: {:?}",
        workload.error()
    );
    assert!(stats.ops >= 400);
    let snap = outcome.snapshot;
    assert_eq!(snap.switchover, Some(SwitchoverReason::MaxPasses));
    assert_eq!(snap.passes.len(), 4);
    assert!(
        snap.passes[1..3].iter().all(|p| p.dirty_pages > 0 && p.pages > 0),
        "{:?}",
        snap.passes
    );
    assert!(ram.iter().all(|b| !b.dirty_log().is_logging(DirtyClient::Migration)));

    let dst_ram = vec![
        RamBlock::anonymous("pc.ram", 1024 * PAGE)?,
        RamBlock::anonymous("extra", 64 * PAGE)?,
    ];
    let dst = SaveSet::new("pc-q35-vmkit", dst_ram.clone(), Vec::new());
    restore(&dst, stream.as_slice(), &RestoreOptions::default())?;
    let got: Vec<u64> = dst_ram.iter().map(|b| b.checksum_all()).collect::<Result<_, _>>()?;
    assert_eq!(Some(got), at_stop.lock().take());
    Ok(())
}
