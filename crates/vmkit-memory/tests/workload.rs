//! The workload engine: reproducible memory contents, pause/resume,
//! throttling, rate limiting, and the dirty rate it produces.
//!
//! Nothing here depends on how fast the machine is: pacing runs on a
//! [`ManualClock`] that the test advances, progress is awaited through the
//! workload's counters, and a pause through its acknowledgement. (The
//! real-time rates are measured by the `workload` benchmarks.) The tests run
//! one at a time so that unthrottled writers do not share the cores.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vmkit_memory::{
    AccessPattern, Clock, DirtyClient, DirtyRateMeasurement, ManualClock, RamBlock, Workload, WorkloadConfig,
    WorkloadStats,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

static SERIAL: Mutex<()> = Mutex::new(());

const PAGE: u64 = 4096;

fn blocks(pages: &[u64]) -> vmkit_memory::Result<Vec<Arc<RamBlock>>> {
    pages
        .iter()
        .enumerate()
        .map(|(i, &n)| RamBlock::anonymous(format!("ram{i}"), n * PAGE))
        .collect()
}

fn checksums(blocks: &[Arc<RamBlock>]) -> vmkit_memory::Result<Vec<u64>> {
    blocks.iter().map(|b| b.checksum_all()).collect()
}

/// Runs `config` to completion on fresh blocks and returns their checksums.
fn run_to_end(pages: &[u64], config: &WorkloadConfig) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let b = blocks(pages)?;
    let w = Workload::start(b.clone(), config.clone())?;
    assert!(w.wait(Duration::from_secs(60)), "workload did not finish");
    let stats = w.stop();
    assert_eq!(stats.ops, config.max_ops.unwrap_or(0));
    assert!(stats.threads.iter().all(|t| t.finished));
    Ok(checksums(&b)?)
}

#[test]
fn same_seed_same_memory() -> TestResult {
    let _serial = SERIAL.lock();
    let pages = [64u64, 40];
    for pattern in [
        AccessPattern::Sequential,
        AccessPattern::Uniform,
        AccessPattern::HotSet {
            fraction: 0.2,
            probability: 0.8,
        },
        AccessPattern::Zipf { s: 1.1 },
    ] {
        let config = WorkloadConfig {
            threads: 3,
            pattern,
            seed: 1234,
            max_ops: Some(5_000),
            ..Default::default()
        };
        let first = run_to_end(&pages, &config)?;
        let second = run_to_end(&pages, &config)?;
        assert_eq!(first, second, "{pattern:?}: same seed, same memory");

        // An independent replay of the published sequences gives the same memory.
        let replay = blocks(&pages)?;
        for t in 0..config.threads {
            for op in config.op_sequence(&pages, t)? {
                replay[op.block].write_page_pattern(op.page, op.value)?;
            }
        }
        assert_eq!(checksums(&replay)?, first, "{pattern:?}: replay");

        let other = run_to_end(
            &pages,
            &WorkloadConfig {
                seed: 1235,
                ..config.clone()
            },
        )?;
        assert_ne!(other, first, "{pattern:?}: another seed, other memory");
    }
    Ok(())
}

#[test]
fn partial_page_writes() -> TestResult {
    let _serial = SERIAL.lock();
    let config = WorkloadConfig {
        write_size: Some(100),
        pattern: AccessPattern::Sequential,
        max_ops: Some(8),
        ..Default::default()
    };
    let b = blocks(&[8])?;
    let w = Workload::start(b.clone(), config.clone())?;
    assert!(w.wait(Duration::from_secs(10)));
    assert_eq!(w.write_size(), 100);
    assert_eq!(w.stop().bytes, 800);
    for op in config.op_sequence(&[8], 0)? {
        let mut page = vec![0u8; PAGE as usize];
        b[0].read(op.page * PAGE, &mut page)?;
        assert_eq!(
            &page[..100],
            &vmkit_memory::checksum::pattern_bytes(op.value, op.page, 100)[..]
        );
        assert!(page[100..].iter().all(|&x| x == 0));
    }
    for ws in [0u64, PAGE + 1] {
        let r = Workload::start(
            b.clone(),
            WorkloadConfig {
                write_size: Some(ws),
                ..Default::default()
            },
        );
        assert!(r.is_err(), "write size {ws}");
    }
    assert!(Workload::start(Vec::new(), WorkloadConfig::default()).is_err());
    Ok(())
}

/// A guard against a hang, never a timing assumption: every wait below ends
/// as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

const MS: Duration = Duration::from_millis(1);

fn every_thread_went_past(s: &WorkloadStats, before: &WorkloadStats) -> bool {
    s.threads.iter().zip(&before.threads).all(|(a, b)| a.ops > b.ops)
}

#[test]
fn pause_stops_writes_and_resume_continues() -> TestResult {
    let _serial = SERIAL.lock();
    let b = blocks(&[256])?;
    b[0].dirty_log().log_start(DirtyClient::User)?;
    let w = Workload::start(
        b.clone(),
        WorkloadConfig {
            threads: 2,
            ..Default::default()
        },
    )?;
    let zero = w.stats();
    assert!(
        w.wait_until(PATIENCE, |s| every_thread_went_past(s, &zero)),
        "both threads write"
    );
    w.pause();
    assert!(w.is_paused());
    assert_eq!(w.parked(), 2, "every thread acknowledged the pause");
    let s1 = w.stats();
    assert!(s1.ops > 0);
    let c1 = b[0].checksum_all()?;
    b[0].dirty_log().sync(DirtyClient::User)?;
    // The writers are parked: however long this takes, nothing moves.
    for _ in 0..3 {
        assert_eq!(b[0].checksum_all()?, c1);
        assert_eq!(w.stats().threads, s1.threads, "no write while paused");
        assert!(
            b[0].dirty_log().sync(DirtyClient::User)?.is_empty(),
            "nothing dirtied while paused"
        );
    }
    w.pause(); // pausing again changes nothing
    assert_eq!(w.parked(), 2);
    w.resume();
    assert!(!w.is_paused());
    assert!(
        w.wait_until(PATIENCE, |s| every_thread_went_past(s, &s1)),
        "every thread writes again after resume"
    );
    assert_eq!(w.parked(), 0);
    let s2 = w.stop();
    assert!(
        every_thread_went_past(&s2, &s1),
        "{:?} then {:?}",
        s1.threads,
        s2.threads
    );
    assert_eq!(s2.bytes, s2.ops * PAGE);
    assert_eq!(s2.threads.iter().map(|t| t.ops).sum::<u64>(), s2.ops);
    Ok(())
}

#[test]
fn a_paused_workload_wakes_from_a_long_sleep_to_park() -> TestResult {
    let _serial = SERIAL.lock();
    // 1 page per hour: after its first write the thread sleeps on the clock.
    let clock = ManualClock::new();
    let w = Workload::start_with_clock(
        blocks(&[8])?,
        WorkloadConfig {
            rate: Some(PAGE / 3600),
            ..Default::default()
        },
        clock.clone(),
    )?;
    assert!(clock.wait_for_blocked(1, PATIENCE));
    w.pause(); // returns: the sleeper is told, it does not wait out its hour
    assert_eq!(w.parked(), 1);
    assert_eq!(clock.blocked(), 0);
    assert_eq!(w.stop().ops, 1);
    Ok(())
}

#[test]
fn throttle_sleeps_its_share_of_clock_time() -> TestResult {
    let _serial = SERIAL.lock();
    let clock = ManualClock::new();
    let w = Workload::start_with_clock(
        blocks(&[1024])?,
        WorkloadConfig {
            throttle: 90,
            ..Default::default()
        },
        clock.clone(),
    )?;
    assert_eq!(w.throttle(), 90);
    assert!(w.set_throttle(100).is_err());
    // The thread's first look at the throttle opens its slice at 0; while
    // the clock stands still it has not run for any time, so it writes on.
    assert!(w.wait_until(PATIENCE, |s| s.ops >= 32));
    for round in 0..3 {
        let start = clock.now();
        // 10 ms of running: then 90 % of the time asleep, 90 ms.
        clock.advance(10 * MS);
        assert!(clock.wait_for_blocked(1, PATIENCE), "round {round}: the thread sleeps");
        assert_eq!(clock.deadlines(), vec![start + 100 * MS], "round {round}");
        let asleep = w.stats().ops;
        clock.advance(89 * MS);
        assert_eq!(clock.blocked(), 1, "still asleep 1 ms before the end");
        assert_eq!(w.stats().ops, asleep, "round {round}: no write while asleep");
        clock.advance(MS);
        assert!(w.wait_until(PATIENCE, |s| s.ops > asleep + 16), "round {round}: awake");
    }
    // Without a throttle it never sleeps, however much time passes.
    w.set_throttle(0)?;
    let before = w.stats().ops;
    assert!(w.wait_until(PATIENCE, |s| s.ops > before + 16));
    clock.advance(Duration::from_secs(1));
    let before = w.stats().ops;
    assert!(w.wait_until(PATIENCE, |s| s.ops > before + 16));
    assert_eq!(clock.blocked(), 0);
    w.stop();
    Ok(())
}

#[test]
fn a_throttled_rate_limited_thread_does_not_make_up_for_its_sleeps() -> TestResult {
    let _serial = SERIAL.lock();
    // 100 pages/s, throttled 50 %: one page per 10 ms of running time, and
    // every 16 writes (when the thread looks at the throttle) as long
    // asleep as it ran. Write 16k + 1 comes at 320k ms: 16 pages per
    // 320 ms, half the rate. (Had the sleeps earned tokens, the thread
    // would write 2 more pages, 20 ms' worth, right after each.)
    let clock = ManualClock::new();
    let w = Workload::start_with_clock(
        blocks(&[4096])?,
        WorkloadConfig {
            rate: Some(100 * PAGE),
            throttle: 50,
            ..Default::default()
        },
        clock.clone(),
    )?;
    assert!(clock.wait_for_blocked(1, PATIENCE));
    for step in 1..=128u64 {
        clock.advance(10 * MS);
        assert!(clock.wait_for_blocked(1, PATIENCE), "step {step}");
        let t = step * 10;
        let want = if t % 320 < 160 {
            16 * (t / 320) + t % 320 / 10 + 1
        } else {
            16 * (t / 320 + 1)
        };
        assert_eq!(w.stats().ops, want, "at {t} ms");
    }
    assert_eq!(w.stop().ops, 65);
    Ok(())
}

#[test]
fn rate_limit_follows_the_clock() -> TestResult {
    let _serial = SERIAL.lock();
    // 2 threads at 100 pages/s each: one page per thread per 10 ms.
    let clock = ManualClock::new();
    let w = Workload::start_with_clock(
        blocks(&[4096])?,
        WorkloadConfig {
            threads: 2,
            rate: Some(2 * 100 * PAGE),
            ..Default::default()
        },
        clock.clone(),
    )?;
    let per_thread = |w: &Workload| w.stats().threads.iter().map(|t| t.ops).collect::<Vec<_>>();
    // Each thread starts with one write's worth of tokens, then waits 10 ms.
    assert!(clock.wait_for_blocked(2, PATIENCE));
    assert_eq!(per_thread(&w), vec![1, 1]);
    assert_eq!(clock.deadlines(), vec![10 * MS, 10 * MS]);
    for step in 1..=5u64 {
        clock.advance(10 * MS);
        assert!(clock.wait_for_blocked(2, PATIENCE));
        assert_eq!(per_thread(&w), vec![1 + step, 1 + step], "after {step} × 10 ms");
    }
    // Less than a page's time: nobody writes.
    clock.advance(9 * MS);
    assert!(clock.wait_for_blocked(2, PATIENCE));
    assert_eq!(per_thread(&w), vec![6, 6]);
    clock.advance(MS);
    assert!(clock.wait_for_blocked(2, PATIENCE));
    assert_eq!(per_thread(&w), vec![7, 7]);
    // A long gap saves up at most 20 ms of the rate: two pages each.
    clock.advance(Duration::from_secs(1));
    assert!(clock.wait_for_blocked(2, PATIENCE));
    assert_eq!(per_thread(&w), vec![9, 9]);
    // A new rate applies from the next refill: 200 pages/s each.
    w.set_rate(Some(2 * 200 * PAGE))?;
    clock.advance(10 * MS);
    assert!(clock.wait_for_blocked(2, PATIENCE));
    assert_eq!(per_thread(&w), vec![11, 11]);
    let s = w.stop();
    assert_eq!(s.elapsed, Duration::from_millis(1070), "elapsed is the clock's");
    assert_eq!(s.bytes, 22 * PAGE);
    Ok(())
}

#[test]
fn dirty_rate_of_a_rate_limited_workload() -> TestResult {
    let _serial = SERIAL.lock();
    // Sequential writes at 100 pages/s: no page is written twice within
    // the window, so the dirty rate is the write rate.
    let b = blocks(&[16384])?;
    b[0].dirty_log().log_start(DirtyClient::Migration)?;
    let clock = ManualClock::new();
    let w = Workload::start_with_clock(
        b.clone(),
        WorkloadConfig {
            rate: Some(100 * PAGE),
            pattern: AccessPattern::Sequential,
            ..Default::default()
        },
        clock.clone(),
    )?;
    assert!(clock.wait_for_blocked(1, PATIENCE)); // the first page, before the window
    let m = DirtyRateMeasurement::start_with_clock(&b, clock.clone())?;
    for _ in 0..40 {
        clock.advance(10 * MS);
        assert!(clock.wait_for_blocked(1, PATIENCE));
    }
    assert_eq!(m.elapsed(), 400 * MS);
    let report = m.finish()?;
    let s = w.stop();
    assert_eq!(report.window, 400 * MS);
    assert_eq!(report.dirty_pages, 40);
    assert_eq!(report.dirty_bytes, 40 * PAGE);
    assert_eq!(report.pages_per_sec, 100.0);
    assert_eq!(report.bytes_per_sec, (100 * PAGE) as f64);
    assert_eq!(report.blocks[0].dirty_pages, report.dirty_pages);
    assert_eq!(report.dirty_rate(), report.mib_per_sec as u64);
    // The measurement did not disturb the migration log: it saw every write.
    assert_eq!(s.pages, 41);
    let migration = b[0].dirty_log().sync(DirtyClient::Migration)?;
    assert_eq!(migration.count(), 41);
    Ok(())
}

#[test]
fn measure_dirty_rate_waits_its_window_on_the_clock() -> TestResult {
    let _serial = SERIAL.lock();
    let b = blocks(&[64])?;
    let clock = ManualClock::new();
    let (b2, c2) = (b.clone(), clock.clone());
    let t = std::thread::spawn(move || vmkit_memory::measure_dirty_rate_with_clock(&b2, 300 * MS, c2));
    assert!(clock.wait_for_blocked(1, PATIENCE));
    assert_eq!(clock.deadlines(), vec![300 * MS]);
    for p in [3u64, 5, 5] {
        b[0].write_page_pattern(p, 1)?;
    }
    clock.advance(300 * MS);
    let report = t.join().map_err(|_| "measuring thread panicked")??;
    assert_eq!((report.window, report.dirty_pages), (300 * MS, 2));
    Ok(())
}

#[test]
fn dropping_a_running_workload_joins_it() -> TestResult {
    let _serial = SERIAL.lock();
    let b = blocks(&[64])?;
    let w = Workload::start(
        b.clone(),
        WorkloadConfig {
            threads: 2,
            throttle: 50,
            ..Default::default()
        },
    )?;
    let zero = w.stats();
    assert!(w.wait_until(PATIENCE, |s| every_thread_went_past(s, &zero)));
    drop(w);
    // Dropping joined the threads: they released the block and cannot write.
    assert_eq!(Arc::strong_count(&b[0]), 1, "the threads released the block");
    let c = b[0].checksum_all()?;
    assert_eq!(b[0].checksum_all()?, c, "no writer left behind");
    Ok(())
}

#[test]
fn wait_until_gives_up_when_the_threads_end() -> TestResult {
    let _serial = SERIAL.lock();
    let w = Workload::start(
        blocks(&[8])?,
        WorkloadConfig {
            max_ops: Some(10),
            ..Default::default()
        },
    )?;
    // The condition can never hold: the wait ends with the threads, not the timeout.
    assert!(!w.wait_until(Duration::from_secs(3600), |s| s.ops > 10));
    assert!(w.is_finished());
    assert_eq!(w.stats().ops, 10);
    Ok(())
}
