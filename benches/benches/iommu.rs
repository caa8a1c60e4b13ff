//! Criterion benchmarks of intel-iommu DMA translation: an IOTLB hit, a
//! 4-level second-level walk (IOTLB miss), and a 4 KiB DMA through the
//! IOMMU beside the same DMA straight into guest RAM — through a minimal
//! IOMMU region over the model, and through the machine's glue (a q35
//! board with `intel-iommu` and a `pci-testdev` behind it).
//!
//! The translation structures live in guest RAM (a prefaulted block in an
//! address space of its own) and the model reads them through that address
//! space, as the machine's glue has it do.
//!
//! Run with `cargo bench -p vmkit-benches --bench iommu`.

use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmkit_benches::{PAGE, SpaceDma, ok, prefaulted_block, ram_space};
use vmkit_devices::glue::pci::function_dma_space;
use vmkit_devices::glue::{Q35Options, build_q35};
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, IntelIommu, IntelIommuProps, IrqChip, Mapping, Perm, Reg, SourceId, Translation,
};
use vmkit_memory::{
    AddressSpace, FULL_SPACE, GuestAddr, IommuMapping, IommuOps, IommuPerm, IommuTlbEntry, MemoryRegion,
};

const RAM: u64 = 64 << 20;
/// The root table; the other tables follow it page by page.
const ROOT: u64 = 0x10_0000;
/// Where the mapped pages land in guest RAM.
const TARGET: u64 = 0x100_0000;
/// An IOVA above 39 bits, so only a 4-level table reaches it.
const IOVA: u64 = 0x7f_8000_0000;
/// Pages mapped for the miss benchmark: four times the IOTLB's capacity
/// (1024 entries, emptied when full), so cycling through them never hits.
const PAGES: u64 = 4096;
const DEV: SourceId = SourceId::new(0, 0x18);
const RW: Perm = Perm::READ.union(Perm::WRITE);

/// `DEV` translated through a 4-level table mapping `PAGES` pages from
/// `IOVA` to `TARGET`, built in `dma` from `ROOT`.
fn build_tables(dma: &dyn vmkit_devices::dma::Dma) {
    let mut tb = TableBuilder::new(dma, ROOT);
    let table = ok(tb.alloc());
    ok(tb.set_context(DEV, ContextEntry::translated(table, 4, 1)));
    for i in 0..PAGES {
        ok(tb.map(table, 4, IOVA + i * PAGE, TARGET + i * PAGE, 1, RW));
    }
}

/// A model with remapping on over the tables of [`build_tables`].
fn setup(dma: &SpaceDma) -> IntelIommu {
    build_tables(dma);
    let mut iommu = IntelIommu::new(ok(IntelIommuProps::default().realize(IrqChip::Userspace)));
    ok(iommu.write(Reg::Rtaddr.offset() as u64, 8, ROOT, dma));
    ok(iommu.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, dma)); // SRTP
    ok(iommu.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, dma)); // TE
    iommu
}

fn mapping(t: Result<Translation, vmkit_devices::iommu::Fault>) -> Mapping {
    match ok(t) {
        Translation::Mapped(m) => m,
        Translation::Interrupt => panic!("benchmark setup failed: an IOVA in the interrupt range"),
    }
}

fn translation(c: &mut Criterion) {
    let space = ram_space("iommu-ram", RAM);
    let dma = SpaceDma(Arc::clone(&space));
    let mut iommu = setup(&dma);
    let mut g = c.benchmark_group("iommu");

    // The same page every time: after the first walk, IOTLB hits.
    let before = iommu.stats();
    g.bench_function("iotlb_hit", |b| {
        b.iter(|| mapping(iommu.translate(DEV, black_box(IOVA + 0x234), Access::Write, &dma)));
    });
    let after = iommu.stats();
    // (None when the benchmark was filtered out.)
    assert!(
        after.page_walks - before.page_walks <= 1,
        "every translation but the first hit"
    );

    // A new page each time, cycling through more pages than the IOTLB
    // holds: every translation walks the four levels (context entry
    // cached) and fills the IOTLB. Page 0 is cached by the hit benchmark
    // until the first time the IOTLB fills: start at page 1.
    let mut i = 1u64;
    let before = iommu.stats();
    g.bench_function("walk_4level_miss", |b| {
        b.iter(|| {
            let m = mapping(iommu.translate(DEV, black_box(IOVA + i * PAGE), Access::Write, &dma));
            i = (i + 1) % PAGES;
            m
        });
    });
    let after = iommu.stats();
    assert_eq!(after.iotlb_hits, before.iotlb_hits, "no translation hit the IOTLB");
    g.finish();
}

/// The model behind an IOMMU memory region, as a PCI device's bus-master
/// address space sees it: translations land in guest RAM.
struct IommuRegion {
    model: Mutex<IntelIommu>,
    dma: SpaceDma,
    source: SourceId,
}

impl IommuRegion {
    /// The model's answer, the model unlocked again.
    #[inline]
    fn resolve(&self, iova: GuestAddr, is_write: bool) -> vmkit_memory::Result<IommuMapping<'_>> {
        let access = if is_write { Access::Write } else { Access::Read };
        let t = {
            let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
            model.translate(self.source, iova.0, access, &self.dma)
        };
        let t = t.map_err(|f| vmkit_memory::Error::Refused(format!("{:?} at {:#x}", f.reason, f.iova)))?;
        let m = t
            .mapping()
            .ok_or_else(|| vmkit_memory::Error::Refused("the interrupt range".into()))?;
        Ok(IommuMapping {
            target: &self.dma.0,
            translated_addr: GuestAddr(m.translated),
            addr_mask: m.addr_mask,
            perm: IommuPerm {
                read: m.perm.contains(Perm::READ),
                write: m.perm.contains(Perm::WRITE),
            },
        })
    }
}

impl IommuOps for IommuRegion {
    fn translate(&self, iova: GuestAddr, is_write: bool) -> vmkit_memory::Result<IommuTlbEntry> {
        let m = self.resolve(iova, is_write)?;
        Ok(IommuTlbEntry {
            target: Arc::clone(&self.dma.0),
            translated_addr: m.translated_addr,
            addr_mask: m.addr_mask,
            perm: m.perm,
        })
    }

    // What a transfer through the region calls: the target space lent,
    // not counted, as the glue's does.
    fn with_translation(
        &self,
        iova: GuestAddr,
        is_write: bool,
        then: &mut dyn FnMut(IommuMapping<'_>) -> vmkit_memory::Result<()>,
    ) -> vmkit_memory::Result<()> {
        then(self.resolve(iova, is_write)?)
    }
}

fn dma_4k(c: &mut Criterion) {
    let space = ram_space("iommu-dma-ram", RAM);
    let dma = SpaceDma(Arc::clone(&space));
    let mut iommu = setup(&dma);
    let data: Vec<u8> = (0..PAGE).map(|i| (i * 131 + 7) as u8).collect();
    let mut buf = vec![0u8; PAGE as usize];
    let mut g = c.benchmark_group("dma_4k");
    g.throughput(Throughput::Bytes(PAGE));

    // Without an IOMMU: the device's address is the RAM address.
    g.bench_function("write_direct", |b| {
        b.iter(|| ok(space.write(GuestAddr(black_box(TARGET)), black_box(&data))));
    });
    g.bench_function("read_direct", |b| {
        b.iter(|| ok(space.read(GuestAddr(black_box(TARGET)), black_box(&mut buf))));
    });

    // Through the model: translate (an IOTLB hit once warm), then the copy.
    g.bench_function("write_translated", |b| {
        b.iter(|| {
            let iova = black_box(IOVA);
            let m = mapping(iommu.translate(DEV, iova, Access::Write, &dma));
            let to = m.output(iova).unwrap_or(u64::MAX);
            ok(space.write(GuestAddr(to), black_box(&data)));
        });
    });
    g.bench_function("read_translated", |b| {
        b.iter(|| {
            let iova = black_box(IOVA);
            let m = mapping(iommu.translate(DEV, iova, Access::Read, &dma));
            let from = m.output(iova).unwrap_or(u64::MAX);
            ok(space.read(GuestAddr(from), black_box(&mut buf)));
        });
    });

    // Through a bus-master address space whose root is an IOMMU region
    // over the model (a lock, the translation, then the copy in RAM).
    let region = Arc::new(IommuRegion {
        model: Mutex::new(iommu),
        dma: dma.clone(),
        source: DEV,
    });
    let root = ok(MemoryRegion::container("bus-master", None, FULL_SPACE));
    let translated = ok(MemoryRegion::iommu("dmar", None, 1 << 48, region));
    ok(root.add_subregion(GuestAddr(0), &translated));
    let bus_master = AddressSpace::new("bus-master", &root);
    g.bench_function("write_iommu_region", |b| {
        b.iter(|| ok(bus_master.write(GuestAddr(black_box(IOVA)), black_box(&data))));
    });
    g.bench_function("read_iommu_region", |b| {
        b.iter(|| ok(bus_master.read(GuestAddr(black_box(IOVA)), black_box(&mut buf))));
    });
    g.finish();
    ok(bus_master.write(GuestAddr(IOVA), &data));
    let mut check = vec![0u8; PAGE as usize];
    ok(space.read(GuestAddr(TARGET), &mut check));
    assert_eq!(check, data, "a write through the IOMMU region reached the mapped page");
}

/// The same 4 KiB DMA in a q35 board: `intel-iommu` (aw-bits 48) with
/// remapping on, a `pci-testdev` at 00:03.0 behind it, its tables in the
/// board's RAM; the copy goes through the function's bus-master address
/// space (its IOMMU region, the glue's translator and the model), beside
/// the same copy through system memory.
fn dma_4k_glue(c: &mut Criterion) {
    let machine = ok(vmkit_qom::create_machine("none-machine"));
    let board = ok(build_q35(
        &machine,
        prefaulted_block("pc.ram", RAM),
        Q35Options::default(),
    ));
    let memory = &board.memory.space;
    ok(vmkit_qom::device_add_from_text(
        "intel-iommu",
        Some("iommu0"),
        &[("aw-bits".into(), "48".into())],
    ));
    let dev = ok(vmkit_qom::device_add_from_text(
        "pci-testdev",
        Some("t0"),
        &[("addr".into(), "03.0".into())],
    ));
    let io = &board.io_space;
    // Bus mastering on (command register, 0xCF8/0xCFC).
    ok(io.write_sized(GuestAddr(0xcf8), 4, 0x8000_0000 | 3 << 11 | 0x04));
    ok(io.write_sized(GuestAddr(0xcfc), 2, 0x4));
    build_tables(&**memory);
    let reg = |r: Reg, size: u32, v: u64| ok(memory.write_sized(GuestAddr(0xfed9_0000 + r.offset() as u64), size, v));
    reg(Reg::Rtaddr, 8, ROOT);
    reg(Reg::Gcmd, 4, 1 << 30); // SRTP
    reg(Reg::Gcmd, 4, 1 << 31); // TE
    let bus_master = function_dma_space(&dev).unwrap_or_else(|| panic!("benchmark setup failed: no DMA space"));

    let data: Vec<u8> = (0..PAGE).map(|i| (i * 37 + 11) as u8).collect();
    let mut buf = vec![0u8; PAGE as usize];
    let mut g = c.benchmark_group("dma_4k_glue");
    g.throughput(Throughput::Bytes(PAGE));
    g.bench_function("write_direct", |b| {
        b.iter(|| ok(memory.write(GuestAddr(black_box(TARGET)), black_box(&data))));
    });
    g.bench_function("read_direct", |b| {
        b.iter(|| ok(memory.read(GuestAddr(black_box(TARGET)), black_box(&mut buf))));
    });
    g.bench_function("write_iommu", |b| {
        b.iter(|| ok(bus_master.write(GuestAddr(black_box(IOVA)), black_box(&data))));
    });
    g.bench_function("read_iommu", |b| {
        b.iter(|| ok(bus_master.read(GuestAddr(black_box(IOVA)), black_box(&mut buf))));
    });
    g.finish();
    if wanted("dma_4k_glue/interleaved") {
        let write = interleaved_ratio(
            || ok(memory.write(GuestAddr(black_box(TARGET)), black_box(&data))),
            || ok(bus_master.write(GuestAddr(black_box(IOVA)), black_box(&data))),
        );
        let mut buf2 = vec![0u8; PAGE as usize];
        let read = interleaved_ratio(
            || ok(memory.read(GuestAddr(black_box(TARGET)), black_box(&mut buf))),
            || ok(bus_master.read(GuestAddr(black_box(IOVA)), black_box(&mut buf2))),
        );
        println!("dma_4k_glue/interleaved/write {write}");
        println!("dma_4k_glue/interleaved/read  {read}");
    }
    ok(bus_master.write(GuestAddr(IOVA + PAGE), &data));
    let mut check = vec![0u8; PAGE as usize];
    ok(memory.read(GuestAddr(TARGET + PAGE), &mut check));
    assert_eq!(
        check, data,
        "a write through the function's IOMMU region reached the mapped page"
    );
    drop(bus_master);
    drop(dev);
    drop(board);
    ok(vmkit_qom::destroy_machine());
}

/// Whether a run with these command-line filters wants `name`: no filter,
/// or a filter that is a substring of it (criterion's default matching).
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// Rounds of the interleaved comparison, and operations per block.
const ROUNDS: usize = 201;
const BLOCK: u32 = 2000;

/// Medians of `through / direct` over rounds in which a block of each runs
/// back to to back (the order alternating): a drift of the machine's speed
/// (another tenant, a frequency change) moves both sides of a round alike,
/// where separate benchmarks measured seconds apart would each see their
/// own.
fn interleaved_ratio(mut direct: impl FnMut(), mut through: impl FnMut()) -> Ratio {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..BLOCK {
            f();
        }
        t.elapsed().as_secs_f64() * 1e9 / f64::from(BLOCK)
    };
    // Warm both paths first.
    time(&mut direct);
    time(&mut through);
    let mut rounds = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let (d, t) = if i % 2 == 0 {
            let d = time(&mut direct);
            (d, time(&mut through))
        } else {
            let t = time(&mut through);
            (time(&mut direct), t)
        };
        rounds.push((d, t));
    }
    Ratio::of(&rounds)
}

/// The medians of an interleaved comparison.
struct Ratio {
    direct_ns: f64,
    through_ns: f64,
    ratio: f64,
    ratio_q1: f64,
    ratio_q3: f64,
}

impl Ratio {
    fn of(rounds: &[(f64, f64)]) -> Ratio {
        let quantile = |mut v: Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        let ratios: Vec<f64> = rounds.iter().map(|(d, t)| t / d).collect();
        Ratio {
            direct_ns: quantile(rounds.iter().map(|r| r.0).collect(), 0.5),
            through_ns: quantile(rounds.iter().map(|r| r.1).collect(), 0.5),
            ratio: quantile(ratios.clone(), 0.5),
            ratio_q1: quantile(ratios.clone(), 0.25),
            ratio_q3: quantile(ratios, 0.75),
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "direct median {:.1} ns, through the IOMMU {:.1} ns; ratio per round median {:.2}x (quartiles {:.2}x-{:.2}x), {ROUNDS} rounds of {BLOCK}",
            self.direct_ns, self.through_ns, self.ratio, self.ratio_q1, self.ratio_q3
        )
    }
}

criterion_group!(benches, translation, dma_4k, dma_4k_glue);
criterion_main!(benches);
