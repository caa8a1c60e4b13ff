//! The workload engine: reproducible memory contents, pause/resume,
//! throttling, rate limiting, and the dirty rate it produces.
//!
//! The timing tests use loose bounds (factors, not percentages) and run one
//! at a time, so that two CPU-bound workloads do not share the machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vmkit_memory::{AccessPattern, DirtyClient, RamBlock, Workload, WorkloadConfig, measure_dirty_rate};

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
    std::thread::sleep(Duration::from_millis(20));
    w.pause();
    assert!(w.is_paused());
    let s1 = w.stats();
    assert!(s1.ops > 0);
    let c1 = b[0].checksum_all()?;
    b[0].dirty_log().sync(DirtyClient::User)?;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.stats().ops, s1.ops, "no write while paused");
    assert_eq!(b[0].checksum_all()?, c1);
    assert!(
        b[0].dirty_log().sync(DirtyClient::User)?.is_empty(),
        "nothing dirtied while paused"
    );
    w.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    let all_went_on = |s: &vmkit_memory::WorkloadStats| s.threads.iter().zip(&s1.threads).all(|(a, b)| a.ops > b.ops);
    while !all_went_on(&w.stats()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let s2 = w.stop();
    assert!(
        all_went_on(&s2),
        "every thread writes again after resume: {:?} then {:?}",
        s1.threads,
        s2.threads
    );
    assert_eq!(s2.bytes, s2.ops * PAGE);
    assert_eq!(s2.threads.iter().map(|t| t.ops).sum::<u64>(), s2.ops);
    Ok(())
}

#[test]
fn throttle_lowers_the_rate() -> TestResult {
    let _serial = SERIAL.lock();
    let b = blocks(&[1024])?;
    let w = Workload::start(b, WorkloadConfig::default())?;
    let window = Duration::from_millis(300);
    let measure = |w: &Workload| {
        let (s0, t0) = (w.stats().bytes, Instant::now());
        std::thread::sleep(window);
        (w.stats().bytes - s0) as f64 / t0.elapsed().as_secs_f64()
    };
    let full = measure(&w);
    w.set_throttle(90)?;
    assert_eq!(w.throttle(), 90);
    std::thread::sleep(Duration::from_millis(30)); // let the first throttled slice start
    let throttled = measure(&w);
    assert!(w.set_throttle(100).is_err());
    w.stop();
    assert!(full > 0.0);
    assert!(
        throttled < full * 0.5,
        "throttled {throttled:.0} B/s vs {full:.0} B/s unthrottled"
    );
    Ok(())
}

#[test]
fn rate_limit_roughly_holds() -> TestResult {
    let _serial = SERIAL.lock();
    let b = blocks(&[4096])?;
    let rate = 8u64 << 20;
    let w = Workload::start(
        b,
        WorkloadConfig {
            threads: 2,
            rate: Some(rate),
            ..Default::default()
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let s = w.stop();
    assert!(
        (1 << 20..=8 << 20).contains(&s.bytes),
        "{} bytes in {:?} at 8 MiB/s",
        s.bytes,
        s.elapsed
    );
    Ok(())
}

#[test]
fn dirty_rate_of_a_rate_limited_workload() -> TestResult {
    let _serial = SERIAL.lock();
    // 16384 pages written sequentially at 4 MiB/s: no page is written twice
    // within the window, so the dirty rate is the write rate.
    let b = blocks(&[16384])?;
    b[0].dirty_log().log_start(DirtyClient::Migration)?;
    let rate = 4u64 << 20;
    let w = Workload::start(
        b.clone(),
        WorkloadConfig {
            rate: Some(rate),
            pattern: AccessPattern::Sequential,
            ..Default::default()
        },
    )?;
    let report = measure_dirty_rate(&b, Duration::from_millis(400))?;
    let s = w.stop();
    let mib = report.mib_per_sec;
    assert!(
        (1.0..=8.0).contains(&mib),
        "dirty rate {mib} MiB/s for a 4 MiB/s workload: {report:?}"
    );
    assert_eq!(report.blocks[0].dirty_pages, report.dirty_pages);
    assert_eq!(report.dirty_rate(), mib as u64);
    // The measurement did not disturb the migration log: it saw every write.
    let migration = b[0].dirty_log().sync(DirtyClient::Migration)?;
    assert_eq!(migration.count(), s.pages.min(16384));
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
    std::thread::sleep(Duration::from_millis(10));
    drop(w);
    let c = b[0].checksum_all()?;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(b[0].checksum_all()?, c, "no writer left behind");
    assert_eq!(Arc::strong_count(&b[0]), 1, "the threads released the block");
    Ok(())
}
