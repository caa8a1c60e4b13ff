//! The precopy engine's bandwidth limit on a manual clock: each batch
//! waits exactly its share of a second, a cancel ends a wait, and a new
//! limit set while the run goes applies to the next batch.

use std::sync::Arc;
use std::time::Duration;

use vmkit_memory::{Clock, DirtyClient, ManualClock, RamBlock};
use vmkit_migration::precopy::{Precopy, PrecopyControl, PrecopyError, PrecopyParams, PrecopyPhase};
use vmkit_migration::savevm::{RestoreOptions, SaveSet, restore};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
/// Real-time guard against a hang; never reached when the run works.
const GUARD: Duration = Duration::from_secs(60);
/// One batch of 256 raw pages of `pc.ram` after the first: records of
/// 8 + 4096 bytes.
const LATER_BATCH: u64 = 256 * (8 + PAGE);

fn source() -> Result<SaveSet, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous("pc.ram", 512 * PAGE)?;
    for p in 0..512 {
        ram.write_page_pattern(p, 5)?;
    }
    Ok(SaveSet::new("pc-q35-vmkit", vec![ram], Vec::new()))
}

/// `bytes` at `bw` bytes/s, as the limiter books it.
fn cost(bytes: u64, bw: u64) -> Duration {
    Duration::from_nanos((u128::from(bytes) * 1_000_000_000 / u128::from(bw)) as u64)
}

fn params(max_bandwidth: u64) -> PrecopyParams {
    PrecopyParams {
        max_bandwidth,
        ..PrecopyParams::default()
    }
}

/// Waits for the run to sleep, checks its deadline, and moves the clock
/// there; returns the stream bytes written by then.
fn release(clock: &ManualClock, control: &PrecopyControl, expected: impl FnOnce(u64) -> Duration) -> u64 {
    assert!(clock.wait_for_blocked(1, GUARD), "the run did not wait");
    let snap = control.snapshot();
    assert_eq!(
        snap.total_time,
        clock.now(),
        "a waiting run's total time is read from its clock"
    );
    let written = snap.ram.transferred;
    let deadline = expected(written);
    assert_eq!(clock.deadlines(), vec![deadline]);
    clock.advance(deadline - clock.now());
    written
}

#[test]
fn each_batch_waits_its_share_of_the_bandwidth() -> TestResult {
    let set = source()?;
    let bw = 4 << 20;
    let clock = ManualClock::new();
    let control = Arc::new(PrecopyControl::new(params(bw)));
    let (outcome, stream) = std::thread::scope(|s| {
        let run = s.spawn(|| {
            let mut stream = Vec::new();
            let outcome = Precopy::new(&set, Arc::clone(&control))
                .with_clock(clock.clone())
                .run(&mut stream, || Ok(()));
            (outcome, stream)
        });
        // Everything so far (header, configuration, START, the first
        // batch) is booked from time zero.
        let first = release(&clock, &control, |b| cost(b, bw));
        assert!(first > 256 * PAGE);
        // Sent on time: the second batch is booked from the first's end.
        let second = release(&clock, &control, |b| cost(first, bw) + cost(b - first, bw));
        assert_eq!(second - first, LATER_BATCH);
        run.join()
    })
    .map_err(|_| "the run panicked")?;
    let snap = outcome?.snapshot;
    let pass = snap.passes.first().ok_or("no pass")?;
    assert_eq!(
        clock.now(),
        pass.duration,
        "the pass began at zero and ended at the last release"
    );
    let measured = pass.bandwidth.ok_or("no bandwidth")?;
    assert!(measured <= bw as f64, "{measured} over the limit");
    assert_eq!(snap.passes.len(), 2, "converged after the first pass (nothing dirtied)");
    let ram = RamBlock::anonymous("pc.ram", 512 * PAGE)?;
    let dst = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], Vec::new());
    restore(&dst, stream.as_slice(), &RestoreOptions::default())?;
    assert_eq!(ram.checksum_all()?, set.ram[0].checksum_all()?);
    Ok(())
}

#[test]
fn a_new_limit_applies_to_the_next_batch_and_cancel_ends_a_wait() -> TestResult {
    let set = source()?;
    let clock = ManualClock::new();
    let control = Arc::new(PrecopyControl::new(params(1 << 20)));
    let result = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Precopy::new(&set, Arc::clone(&control))
                .with_clock(clock.clone())
                .run(Vec::new(), || Ok(()))
        });
        // First batch at 1 MiB/s; raise the limit while it waits.
        assert!(clock.wait_for_blocked(1, GUARD));
        control.set_params(params(8 << 20));
        let first = release(&clock, &control, |b| cost(b, 1 << 20));
        release(&clock, &control, |b| cost(first, 1 << 20) + cost(b - first, 8 << 20));
        run.join()
    });
    assert!(result.is_ok(), "the run panicked");
    // And a cancel while waiting: the run ends without the clock moving.
    let control = Arc::new(PrecopyControl::new(params(1)));
    let clock = ManualClock::new();
    let result = std::thread::scope(|s| {
        let run = s.spawn(|| {
            Precopy::new(&set, Arc::clone(&control))
                .with_clock(clock.clone())
                .run(Vec::new(), || Ok(()))
        });
        assert!(clock.wait_for_blocked(1, GUARD));
        control.cancel();
        clock.wake();
        run.join()
    })
    .map_err(|_| "the run panicked")?;
    assert!(
        matches!(
            result,
            Err(PrecopyError::Cancelled {
                phase: PrecopyPhase::Active,
                stopped: false
            })
        ),
        "{result:?}"
    );
    assert_eq!(clock.now(), Duration::ZERO);
    assert!(!set.ram[0].dirty_log().is_logging(DirtyClient::Migration));
    Ok(())
}
