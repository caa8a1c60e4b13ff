//! Criterion benchmarks of guest memory: dirty-tracked page writes, dirty
//! bitmap syncs, zero-page scanning, the workload engine and MMIO dispatch.
//!
//! Run with `cargo bench -p vmkit-benches --bench memory`.
//!
//! Blocks are mapped with `populate` (prefaulted) and transparent huge pages,
//! as a long-running guest's RAM would be, so the numbers measure copying and
//! tracking rather than first-touch page faults.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vmkit_benches::{PAGE, ok, prefaulted_block};
use vmkit_memory::{
    AccessPattern, AddressSpace, DirtyBitmap, DirtyClient, FULL_SPACE, GuestAddr, MemoryRegion, MmioOps, Workload,
    WorkloadConfig,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn ram(c: &mut Criterion) {
    let mut g = c.benchmark_group("ram");

    // One 4 KiB page per iteration, sequentially through 1 GiB, migration
    // logging on: a copy plus one dirty mark.
    let ram = prefaulted_block("pc.ram", GIB);
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
    let zero = prefaulted_block("zero", 256 * MIB);
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
    let ram = prefaulted_block("pc.ram", GIB);
    ok(ram.dirty_log().log_start(DirtyClient::Migration));
    const OPS_PER_ITER: u64 = MIB / PAGE;
    g.throughput(Throughput::Bytes(MIB));
    // The pacing on the real clock (the tests check it on a manual clock):
    // a 90 % throttle should run at about a tenth of the unthrottled speed,
    // and a 256 MiB/s limit at 256 MiB/s (3.9 ms/MiB) for two threads.
    let pacing: [(&str, u8, Option<u64>, usize); 3] = [
        ("unthrottled_1_thread", 0, None, 1),
        ("throttled_90_1_thread", 90, None, 1),
        ("rate_256MiB_2_threads", 0, Some(256 * MIB), 2),
    ];
    for (name, throttle, rate, threads) in pacing {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let config = WorkloadConfig {
                    threads,
                    pattern: AccessPattern::Uniform,
                    max_ops: Some(iters * OPS_PER_ITER),
                    seed: iters,
                    throttle,
                    rate,
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
    }
    g.finish();
}

/// A trivial device: sixteen 32-bit registers.
#[derive(Default)]
struct Regs([AtomicU32; 16]);

impl MmioOps for Regs {
    fn read(&self, offset: u64, _size: u32) -> vmkit_memory::Result<u64> {
        Ok(u64::from(self.0[(offset as usize >> 2) & 15].load(Ordering::Relaxed)))
    }
    fn write(&self, offset: u64, _size: u32, value: u64) -> vmkit_memory::Result<()> {
        self.0[(offset as usize >> 2) & 15].store(value as u32, Ordering::Relaxed);
        Ok(())
    }
}

const MMIO_REGIONS: u64 = 64;
const MMIO_BASE: u64 = 0xfe00_0000;
/// 4 KiB regions every 64 KiB, so the flat view also has holes between them.
const MMIO_STRIDE: u64 = 0x1_0000;
const MMIO_SIZE: u64 = 4 * KIB;

/// An address space whose root container holds 64 MMIO regions.
fn mmio_space() -> Arc<AddressSpace> {
    let root = ok(MemoryRegion::container("system", None, FULL_SPACE));
    for i in 0..MMIO_REGIONS {
        let r = ok(MemoryRegion::mmio(
            &format!("dev{i}"),
            None,
            MMIO_SIZE,
            Arc::new(Regs::default()),
        ));
        ok(root.add_subregion(GuestAddr(MMIO_BASE + i * MMIO_STRIDE), &r));
    }
    let space = AddressSpace::new("mmio-bench", &root);
    assert_eq!(space.flat_view().ranges().len(), MMIO_REGIONS as usize);
    space
}

/// 4096 aligned register addresses spread over all regions (xorshift), so
/// the lookup's branches are not trained on one address.
fn spread_addrs() -> Vec<GuestAddr> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let region = x % MMIO_REGIONS;
            let reg = (x >> 32) % (MMIO_SIZE / 4);
            GuestAddr(MMIO_BASE + region * MMIO_STRIDE + reg * 4)
        })
        .collect()
}

fn mmio(c: &mut Criterion) {
    let mut g = c.benchmark_group("mmio");
    let space = mmio_space();
    let middle = GuestAddr(MMIO_BASE + (MMIO_REGIONS / 2) * MMIO_STRIDE + 0x10);
    let spread = spread_addrs();

    // One 4-byte register access through the flat view to a Rust device.
    // At one address the lookup is answered by the view's most-recently-used
    // range (QEMU's `mru_section`, as a driver polling one device sees);
    // `_spread` addresses go to a random region each time, so every access
    // pays the full search of the 64 ranges.
    g.bench_function("read4_64_regions_rust", |b| {
        b.iter(|| ok(space.read_sized(black_box(middle), black_box(4))));
    });
    let mut i = 0usize;
    g.bench_function("read4_64_regions_rust_spread", |b| {
        b.iter(|| {
            i = (i + 1) & (spread.len() - 1);
            ok(space.read_sized(black_box(spread[i]), black_box(4)))
        });
    });
    g.bench_function("write4_64_regions_rust", |b| {
        b.iter(|| ok(space.write_sized(black_box(middle), black_box(4), black_box(0x1234_5678))));
    });
    let mut i = 0usize;
    g.bench_function("write4_64_regions_rust_spread", |b| {
        b.iter(|| {
            i = (i + 1) & (spread.len() - 1);
            ok(space.write_sized(black_box(spread[i]), black_box(4), black_box(i as u64)))
        });
    });
    g.finish();
}

criterion_group!(benches, ram, dirty, workload, mmio);
criterion_main!(benches);
