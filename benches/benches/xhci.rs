//! Criterion benchmarks of the qemu-xhci model: a register read, and a
//! No-op command from the doorbell to its completion event on the event
//! ring, each twice: calling the model directly, and as a guest reaches
//! the real `qemu-xhci` device of the q35 board (`-device qemu-xhci` at
//! 01.0, BAR0 assigned and memory decoding and bus mastering enabled
//! through 0xCF8/0xCFC): through the system address space and the PCI
//! glue, with the controller's DMA through its bus-master address space.
//!
//! Rings, the event ring segment table and DCBAA are in guest RAM, which
//! the model reaches through the system address space.
//!
//! Run with `cargo bench -p vmkit-benches --bench xhci`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use vmkit_benches::{FLOOR_REGISTER, SpaceDma, map_floor_register, ok, prefaulted_block};
use vmkit_devices::dma::Dma;
use vmkit_devices::glue::{Q35Options, build_q35};
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{CompletionCode, Env, Trb, TrbType, XhciPci, XhciPciConfig};
use vmkit_memory::{AddressSpace, GuestAddr};

/// Where BAR0 is mapped in the PCI window.
const BAR0: u64 = 0xfe00_0000;

const DCBAA: u64 = 0x10_0000;
const CMD_RING: u64 = 0x10_1000;
/// TRBs in the command ring before its link TRB.
const CMD_TRBS: u64 = 64;
const ERST: u64 = 0x10_2000;
const EVENT_RING: u64 = 0x10_3000;
const EVENT_TRBS: u32 = 64;

const USBCMD: u64 = 0x40;
const USBSTS: u64 = 0x44;
const CRCR: u64 = 0x58;
const DCBAAP: u64 = 0x70;
const CONFIG: u64 = 0x78;
const IMAN: u64 = 0x1020;
const ERSTSZ: u64 = 0x1028;
const ERSTBA: u64 = 0x1030;
const ERDP: u64 = 0x1038;
const DOORBELL: u64 = 0x2000;

/// How the guest reaches BAR0.
trait Bar0 {
    fn read(&mut self, offset: u64, size: u8) -> u64;
    fn write(&mut self, offset: u64, size: u8, value: u64);
}

/// The model called directly.
struct Direct {
    dev: XhciPci,
    dma: SpaceDma,
}

impl Bar0 for Direct {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let env = Env {
            dma: &self.dma,
            now_ns: 0,
        };
        ok(self.dev.bar0_read(offset, size, &env))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let env = Env {
            dma: &self.dma,
            now_ns: 0,
        };
        ok(self.dev.bar0_write(offset, size, value, &env));
    }
}

/// BAR0 mapped in an address space at `base`.
struct Mapped {
    space: Arc<AddressSpace>,
    base: u64,
}

impl Bar0 for Mapped {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        ok(self.space.read_sized(GuestAddr(self.base + offset), u32::from(size)))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        ok(self
            .space
            .write_sized(GuestAddr(self.base + offset), u32::from(size), value));
    }
}

/// The guest driver's side of the command and event rings.
struct Driver {
    mem: SpaceDma,
    cmd_enqueue: u64,
    cmd_cycle: bool,
    ev_dequeue: u32,
    ev_cycle: bool,
}

impl Driver {
    /// Resets and starts the controller as a driver does: DCBAA, a command
    /// ring closed by a toggling link TRB, one event ring segment, IMAN.IE,
    /// USBCMD.RS | INTE.
    fn start(mem: SpaceDma, bar: &mut impl Bar0) -> Driver {
        bar.write(USBCMD, 4, 0x2); // HCRST
        bar.write(CONFIG, 4, 64);
        bar.write(DCBAAP, 8, DCBAA);
        let link = Trb::new(TrbType::Link, CMD_RING, 0, bits::LINK_TC);
        ok(mem.write(CMD_RING + CMD_TRBS * 16, &link.to_bytes()));
        bar.write(CRCR, 8, CMD_RING | 1);
        ok(mem.write_u64(ERST, EVENT_RING));
        ok(mem.write_u32(ERST + 8, EVENT_TRBS));
        bar.write(ERSTSZ, 4, 1);
        bar.write(ERDP, 8, EVENT_RING);
        bar.write(ERSTBA, 8, ERST);
        bar.write(IMAN, 4, 0x2);
        bar.write(USBCMD, 4, 0x1 | 0x4);
        assert_eq!(bar.read(USBSTS, 4) & 1, 0, "the controller runs");
        Driver {
            mem,
            cmd_enqueue: CMD_RING,
            cmd_cycle: true,
            ev_dequeue: 0,
            ev_cycle: true,
        }
    }

    /// Queues a No-op command with the ring's cycle bit.
    fn queue_noop(&mut self) {
        let trb = Trb::new(TrbType::NoOpCommand, 0, 0, u32::from(self.cmd_cycle));
        ok(self.mem.write(self.cmd_enqueue, &trb.to_bytes()));
        self.cmd_enqueue += 16;
        if self.cmd_enqueue == CMD_RING + CMD_TRBS * 16 {
            let link = Trb::new(TrbType::Link, CMD_RING, 0, bits::LINK_TC | u32::from(self.cmd_cycle));
            ok(self.mem.write(self.cmd_enqueue, &link.to_bytes()));
            self.cmd_enqueue = CMD_RING;
            self.cmd_cycle = !self.cmd_cycle;
        }
    }

    /// Takes the next event, which must be a successful command
    /// completion, and hands the TRB back (ERDP, clearing EHB).
    fn consume_completion(&mut self, bar: &mut impl Bar0) {
        let mut b = [0u8; 16];
        ok(self.mem.read(EVENT_RING + 16 * u64::from(self.ev_dequeue), &mut b));
        let ev = Trb::from_bytes(&b);
        assert_eq!(ev.cycle(), self.ev_cycle, "the completion event was written");
        assert_eq!(ev.trb_type(), Some(TrbType::CommandCompletion));
        assert_eq!(ev.status >> 24, CompletionCode::Success as u32);
        self.ev_dequeue += 1;
        if self.ev_dequeue == EVENT_TRBS {
            self.ev_dequeue = 0;
            self.ev_cycle = !self.ev_cycle;
        }
        bar.write(ERDP, 8, (EVENT_RING + 16 * u64::from(self.ev_dequeue)) | 0x8);
    }
}

/// The benchmarks over one way of reaching BAR0.
fn run(c: &mut Criterion, name: &str, bar: &mut impl Bar0, mem: SpaceDma) {
    let mut g = c.benchmark_group(name);
    let mut driver = Driver::start(mem, bar);
    g.bench_function("usbsts_read", |b| {
        b.iter(|| bar.read(black_box(USBSTS), 4));
    });
    // The guest queues a No-op (untimed); the doorbell write is timed: the
    // controller fetches the TRB and writes its completion event before
    // the write returns. The event is then checked and consumed (untimed).
    g.bench_function("noop_doorbell_to_event", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                driver.queue_noop();
                let t = Instant::now();
                bar.write(black_box(DOORBELL), 4, 0);
                total += t.elapsed();
                driver.consume_completion(bar);
            }
            total
        });
    });
    // The whole round trip as a guest makes it: queue, ring, read the
    // event, hand it back through ERDP.
    g.bench_function("noop_round_trip", |b| {
        b.iter(|| {
            driver.queue_noop();
            bar.write(black_box(DOORBELL), 4, 0);
            driver.consume_completion(bar);
        });
    });
    // The cost of the timer calls inside `noop_doorbell_to_event`.
    g.bench_function("timer_pair", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                total += black_box(t).elapsed();
            }
            total
        });
    });
    g.finish();
}

fn xhci(c: &mut Criterion) {
    let machine = ok(vmkit_qom::create_machine("none-machine"));
    let board = ok(build_q35(
        &machine,
        prefaulted_block("pc.ram", 64 << 20),
        Q35Options::default(),
    ));
    let space = Arc::clone(&board.memory.space);
    let mem = SpaceDma(Arc::clone(&space));

    let mut direct = Direct {
        dev: ok(XhciPci::new(XhciPciConfig::default())),
        dma: mem.clone(),
    };
    run(c, "xhci_model", &mut direct, mem.clone());

    // The real device, placed as QEMU's q35 places `-device qemu-xhci`;
    // BAR0 (64-bit) assigned, memory decoding and bus mastering on, as a
    // guest's PCI enumeration leaves it.
    ok(vmkit_qom::device_add_from_text(
        "qemu-xhci",
        Some("xhci"),
        &[("addr".into(), "01.0".into())],
    ));
    let io = &board.io_space;
    let cfg_write = |offset: u64, size: u32, value: u64| {
        ok(io.write_sized(GuestAddr(0xcf8), 4, 0x8000_0000 | 1 << 11 | offset));
        ok(io.write_sized(GuestAddr(0xcfc), size, value));
    };
    cfg_write(0x10, 4, BAR0 | 4);
    cfg_write(0x14, 4, 0);
    cfg_write(0x04, 2, 0x6);
    let mut mapped = Mapped {
        space: Arc::clone(&space),
        base: BAR0,
    };
    run(c, "xhci_address_space", &mut mapped, mem);

    // The same address space's floor: the dispatch to a register with
    // nothing behind it.
    let _floor = map_floor_register(&board.pci);
    let mut g = c.benchmark_group("xhci_address_space");
    g.bench_function("floor_read", |b| {
        b.iter(|| ok(space.read_sized(black_box(GuestAddr(FLOOR_REGISTER)), 4)));
    });
    g.finish();

    drop(board);
    ok(vmkit_qom::destroy_machine());
}

criterion_group!(benches, xhci);
criterion_main!(benches);
