//! Criterion benchmarks of guest memory: dirty-tracked page writes, dirty
//! bitmap syncs, zero-page scanning and the workload engine.
//!
//! Run with `cargo bench -p vmkit-benches --bench memory`.
//!
//! Blocks are mapped with `populate` (prefaulted) and transparent huge pages,
//! as a long-running guest's RAM would be, so the numbers measure copying and
//! tracking rather than first-touch page faults.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vmkit_memory::{
    AccessPattern, DirtyBitmap, DirtyClient, MapOptions, RamBacking, RamBlock, RamOptions, Workload, WorkloadConfig,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4 * KIB;

fn ok<T>(r: vmkit_memory::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark setup failed: {e}"))
}

/// A prefaulted anonymous block on transparent huge pages.
fn block(name: &str, size: u64) -> Arc<RamBlock> {
    let options = RamOptions {
        page_size: PAGE,
        map: MapOptions {
            populate: true,
            huge_pages: true,
        },
    };
    ok(RamBlock::with_options(name, size, RamBacking::Anonymous, options))
}

fn ram(c: &mut Criterion) {
    let mut g = c.benchmark_group("ram");

    // One 4 KiB page per iteration, sequentially through 1 GiB, migration
    // logging on: a copy plus one dirty mark.
    let ram = block("pc.ram", GIB);
    ok(ram.dirty_log().log_start(DirtyClient::Migration));
    let data: Vec<u8> = (0..PAGE).map(|i| (i * 131 + 7) as u8).collect();
    let pages = ram.page_count();
    let mut next = 0u64;
    g.throughput(Throughput::Bytes(PAGE));
    g.bench_function("write_4k_dirty", |b| {
        b.iter(|| {
            ok(ram.write(black_box(next * PAGE), black_box(&data)));
            next = (next + 1) % pages;
        });
    });
    drop(ram);

    // Zero-page detection over 256 MiB of populated zero memory.
    let zero = block("zero", 256 * MIB);
    g.throughput(Throughput::Bytes(256 * MIB));
    g.bench_function("is_zero_scan", |b| {
        b.iter(|| assert!(ok(zero.is_zero(black_box(0), black_box(256 * MIB)))));
    });
    g.finish();
}

fn dirty(c: &mut Criterion) {
    let mut g = c.benchmark_group("dirty");
    // 16 Mi pages = 64 GiB of guest RAM in 4 KiB pages; 1 % of them dirty,
    // spread evenly (every 100th page), re-dirtied before each take.
    const PAGES: u64 = 16 << 20;
    let bitmap = ok(DirtyBitmap::new(PAGES));
    g.bench_function("sync_16Mi_pages_1pct", |b| {
        b.iter_batched(
            || {
                for p in (0..PAGES).step_by(100) {
                    ok(bitmap.mark(p));
                }
            },
            |()| black_box(bitmap.take_and_clear()),
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

fn workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("workload");
    // One iteration is 1 MiB of 4 KiB page writes by one unthrottled thread,
    // uniformly over 1 GiB, migration logging on. Each sample runs a fresh
    // workload for its whole iteration count, so thread start-up is included.
    let ram = block("pc.ram", GIB);
    ok(ram.dirty_log().log_start(DirtyClient::Migration));
    const OPS_PER_ITER: u64 = MIB / PAGE;
    g.throughput(Throughput::Bytes(MIB));
    g.bench_function("unthrottled_1_thread", |b| {
        b.iter_custom(|iters| {
            let config = WorkloadConfig {
                threads: 1,
                pattern: AccessPattern::Uniform,
                max_ops: Some(iters * OPS_PER_ITER),
                seed: iters,
                ..WorkloadConfig::default()
            };
            let t0 = Instant::now();
            let w = ok(Workload::start(vec![ram.clone()], config));
            assert!(w.wait(Duration::from_secs(600)), "workload did not finish");
            let elapsed = t0.elapsed();
            assert!(w.error().is_none());
            drop(w);
            elapsed
        });
    });
    g.finish();
}

criterion_group!(benches, ram, dirty, workload);
criterion_main!(benches);
