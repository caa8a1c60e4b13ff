//! Criterion benchmarks of PCI in the q35-like board: a configuration read
//! as a guest makes it through the ECAM window and through 0xCF8/0xCFC,
//! and a register read of a device's BAR, each through the address space,
//! beside the dispatch to a register with nothing behind it (the floor).
//!
//! Run with `cargo bench -p vmkit-benches --bench pci`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vmkit_benches::{FLOOR_REGISTER, map_floor_register, ok, prefaulted_block};
use vmkit_devices::glue::{Q35Options, build_q35};
use vmkit_memory::GuestAddr;

const ECAM: u64 = 0xb000_0000;
const MMIO_BAR: u64 = 0xfebf_0000;

fn config(c: &mut Criterion) {
    let machine = ok(vmkit_qom::create_machine("none-machine"));
    let board = ok(build_q35(
        &machine,
        prefaulted_block("pc.ram", 64 << 20),
        Q35Options::default(),
    ));
    ok(vmkit_qom::device_add_from_text(
        "pci-testdev",
        Some("t0"),
        &[("addr".into(), "03.0".into())],
    ));
    let (mem, io) = (&board.memory.space, &board.io_space);
    let cfg_write = |slot: u64, offset: u64, size: u32, value: u64| {
        ok(io.write_sized(GuestAddr(0xcf8), 4, 0x8000_0000 | slot << 11 | offset));
        ok(io.write_sized(GuestAddr(0xcfc), size, value));
    };
    cfg_write(0, 0x60, 4, ECAM | 1);
    cfg_write(3, 0x10, 4, MMIO_BAR);
    cfg_write(3, 0x04, 2, 0x2);
    let _floor = map_floor_register(&board.pci);

    let mut g = c.benchmark_group("pci");
    g.bench_function("ecam_config_read_dword", |b| {
        b.iter(|| ok(mem.read_sized(black_box(GuestAddr(ECAM + (3 << 15))), 4)));
    });
    // The same run's floor: the dispatch to a register with nothing behind it.
    g.bench_function("floor_read_dword", |b| {
        b.iter(|| ok(mem.read_sized(black_box(GuestAddr(FLOOR_REGISTER)), 4)));
    });
    g.bench_function("cf8_cfc_config_read_dword", |b| {
        b.iter(|| {
            ok(io.write_sized(GuestAddr(0xcf8), 4, black_box(0x8000_1800)));
            ok(io.read_sized(GuestAddr(0xcfc), 4))
        });
    });
    g.bench_function("bar_mmio_read_byte", |b| {
        b.iter(|| ok(mem.read_sized(black_box(GuestAddr(MMIO_BAR)), 1)));
    });
    g.finish();
    drop(board);
    ok(vmkit_qom::destroy_machine());
}

criterion_group!(benches, config);
criterion_main!(benches);
