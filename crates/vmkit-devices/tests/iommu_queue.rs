//! The invalidation queue: descriptors read from guest memory when the
//! tail moves, the wait descriptor's status write and completion event,
//! invalidations through the queue, and how a bad descriptor stops it.

use vmkit_devices::dma::{Dma, TestMemory};
use vmkit_devices::iommu::regs::Fsts;
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, ContextScope, Effect, IntelIommu, IntelIommuProps, IotlbScope, IrqChip, Perm, QueueError,
    Reg, SourceId,
};
use vmkit_devices::pci::MsiMessage;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

const MEM: usize = 4 << 20;
const ROOT: u64 = 0x10_0000;
const QUEUE: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const DEV: SourceId = SourceId::new(0, 0x18);
const DONE: MsiMessage = MsiMessage {
    address: 0xfee0_2000,
    data: 0x51,
};
const FAULT: MsiMessage = MsiMessage {
    address: 0xfee0_1000,
    data: 0x41,
};

fn at(reg: Reg) -> u64 {
    reg.offset() as u64
}

/// A wait descriptor: status write of `data` to `addr` if given, IF if `irq`.
fn wait(status: Option<(u64, u32)>, irq: bool) -> (u64, u64) {
    let mut lo = 5 | 1 << 6;
    if irq {
        lo |= 1 << 4;
    }
    let (addr, data) = status.unwrap_or((0, 0));
    if status.is_some() {
        lo |= 1 << 5 | u64::from(data) << 32;
    }
    (lo, addr)
}

fn iotlb_global() -> (u64, u64) {
    (2 | 1 << 4, 0)
}

struct Queue {
    mem: TestMemory,
    dev: IntelIommu,
    tail: u64,
}

impl Queue {
    /// Queued invalidation on, 256 descriptors at QUEUE, events unmasked.
    fn new() -> Fallible<Queue> {
        let mem = TestMemory::new(MEM);
        let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
        for (reg, v) in [
            (Reg::Iedata, u64::from(DONE.data)),
            (Reg::Ieaddr, DONE.address),
            (Reg::Iectl, 0),
            (Reg::Fedata, u64::from(FAULT.data)),
            (Reg::Feaddr, FAULT.address),
            (Reg::Fectl, 0),
        ] {
            dev.write(at(reg), 4, v, &mem)?;
        }
        dev.write(at(Reg::Iqa), 8, QUEUE, &mem)?;
        dev.write(at(Reg::Gcmd), 4, 1 << 26, &mem)?;
        Ok(Queue { mem, dev, tail: 0 })
    }

    /// Puts descriptors at the tail (wrapping at 256) without moving it.
    fn put(&mut self, descs: &[(u64, u64)]) -> TestResult {
        for &(lo, hi) in descs {
            let slot = QUEUE + (self.tail % 256) * 16;
            self.mem.write_u64(slot, lo)?;
            self.mem.write_u64(slot + 8, hi)?;
            self.tail = (self.tail + 1) % 256;
        }
        Ok(())
    }

    /// Moves the tail past what was put.
    fn kick(&mut self) -> Fallible<Vec<Effect>> {
        Ok(self.dev.write(at(Reg::Iqt), 8, self.tail << 4, &self.mem)?)
    }

    fn submit(&mut self, descs: &[(u64, u64)]) -> Fallible<Vec<Effect>> {
        self.put(descs)?;
        self.kick()
    }

    fn head(&self) -> Fallible<u64> {
        Ok(self.dev.read(at(Reg::Iqh), 8)? >> 4)
    }

    fn fsts(&self) -> Fallible<Fsts> {
        Ok(Fsts::from_bits_retain(self.dev.read(at(Reg::Fsts), 4)? as u32))
    }
}

#[test]
fn a_wait_descriptor_writes_its_status() -> TestResult {
    let mut q = Queue::new()?;
    let fx = q.submit(&[wait(Some((STATUS, 0x1234_5678)), false)])?;
    assert!(fx.is_empty());
    assert_eq!(q.mem.read_u32(STATUS)?, 0x1234_5678);
    assert_eq!(q.head()?, 1);
    assert_eq!(q.dev.read(at(Reg::Ics), 4)?, 0, "no IF: no completion status");
    Ok(())
}

#[test]
fn a_wait_with_if_raises_the_completion_event_once() -> TestResult {
    let mut q = Queue::new()?;
    assert_eq!(q.submit(&[wait(None, true)])?, [Effect::Interrupt(DONE)]);
    assert_eq!(q.dev.read(at(Reg::Ics), 4)?, 1, "IWC");
    // IWC still set: no second event.
    assert!(q.submit(&[wait(None, true)])?.is_empty());
    // Cleared (write 1): the next one signals again.
    q.dev.write(at(Reg::Ics), 4, 1, &q.mem)?;
    assert_eq!(q.submit(&[wait(None, true)])?, [Effect::Interrupt(DONE)]);
    // Masked: pending until unmasked.
    q.dev.write(at(Reg::Ics), 4, 1, &q.mem)?;
    q.dev.write(at(Reg::Iectl), 4, 1 << 31, &q.mem)?;
    assert!(q.submit(&[wait(None, true)])?.is_empty());
    assert_eq!(q.dev.read(at(Reg::Iectl), 4)?, 0xc000_0000);
    assert_eq!(q.dev.write(at(Reg::Iectl), 4, 0, &q.mem)?, [Effect::Interrupt(DONE)]);
    assert_eq!(q.dev.read(at(Reg::Iectl), 4)?, 0);
    Ok(())
}

#[test]
fn clearing_iwc_drops_a_pending_completion_event() -> TestResult {
    let mut q = Queue::new()?;
    q.dev.write(at(Reg::Iectl), 4, 1 << 31, &q.mem)?;
    q.submit(&[wait(None, true)])?;
    q.dev.write(at(Reg::Ics), 4, 1, &q.mem)?;
    assert_eq!(q.dev.read(at(Reg::Iectl), 4)?, 0x8000_0000, "IP dropped");
    assert!(q.dev.write(at(Reg::Iectl), 4, 0, &q.mem)?.is_empty());
    Ok(())
}

#[test]
fn invalidation_descriptors_come_back_as_effects_in_order() -> TestResult {
    let mut q = Queue::new()?;
    let fx = q.submit(&[
        (1 | 3 << 4 | u64::from(DEV.0) << 32 | 1 << 48, 0),
        (1 | 2 << 4 | 9 << 16, 0),
        (2 | 2 << 4 | 7 << 16, 0),
        (2 | 3 << 4 | 7 << 16, 0x4000 | 1),
        iotlb_global(),
        (3 | u64::from(DEV.0) << 32, 0x8000 | 1),
        (4 | 1 << 4 | 3 << 27 | 0x20 << 32, 0),
        (4, 0),
        wait(Some((STATUS, 1)), true),
    ])?;
    assert_eq!(
        fx,
        [
            Effect::ContextInvalidated(ContextScope::Devices { source: DEV, fm: 1 }),
            Effect::ContextInvalidated(ContextScope::Global),
            Effect::IotlbInvalidated(IotlbScope::Domain(7)),
            Effect::IotlbInvalidated(IotlbScope::Pages {
                domain: 7,
                addr: 0x4000,
                am: 1
            }),
            Effect::IotlbInvalidated(IotlbScope::Global),
            Effect::DeviceIotlbInvalidated {
                source: DEV,
                addr: 0x8000,
                size: true
            },
            Effect::InterruptCacheInvalidated {
                global: false,
                index: 0x20,
                mask: 3
            },
            Effect::InterruptCacheInvalidated {
                global: true,
                index: 0,
                mask: 0
            },
            Effect::Interrupt(DONE),
        ]
    );
    assert_eq!(q.head()?, 9);
    assert_eq!(q.mem.read_u32(STATUS)?, 1);
    Ok(())
}

#[test]
fn a_queued_iotlb_invalidation_drops_cached_translations() -> TestResult {
    let mut q = Queue::new()?;
    let mut tb = TableBuilder::new(&q.mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 3))?;
    tb.map(table, 4, 0x1000, 0xa000, 1, Perm::READ)?;
    q.dev.write(at(Reg::Rtaddr), 8, ROOT, &q.mem)?;
    q.dev.write(at(Reg::Gcmd), 4, 1 << 26 | 1 << 30, &q.mem)?;
    q.dev.write(at(Reg::Gcmd), 4, 1 << 26 | 1 << 31, &q.mem)?;
    q.dev.translate(DEV, 0x1000, Access::Read, &q.mem)?;
    assert_eq!(q.dev.iotlb_len(), 1);
    q.submit(&[(2 | 3 << 4 | 3 << 16, 0x1000)])?;
    assert_eq!(q.dev.iotlb_len(), 0);
    Ok(())
}

#[test]
fn a_bad_descriptor_stops_the_queue_with_iqe() -> TestResult {
    let mut q = Queue::new()?;
    let bad = (2 | 1 << 4 | 1 << 8, 0);
    let fx = q.submit(&[wait(Some((STATUS, 7)), false), bad, wait(Some((STATUS, 8)), false)])?;
    assert_eq!(fx, [Effect::Interrupt(FAULT)], "the fault event");
    assert_eq!(q.fsts()?, Fsts::IQE);
    assert_eq!(q.head()?, 1, "IQH stays on the bad descriptor");
    assert_eq!(q.mem.read_u32(STATUS)?, 7);
    assert!(matches!(
        q.dev.queue_error(),
        Some(QueueError::Reserved { head: 1, kind: 2, .. })
    ));
    // While IQE is set, moving the tail does nothing.
    assert!(q.submit(&[wait(Some((STATUS, 9)), false)])?.is_empty());
    assert_eq!(q.head()?, 1);
    // The guest fixes the descriptor, clears IQE, and kicks again.
    q.mem.write_u64(QUEUE + 16, iotlb_global().0)?;
    q.dev.write(at(Reg::Fsts), 4, Fsts::IQE.bits().into(), &q.mem)?;
    assert_eq!(q.fsts()?, Fsts::empty());
    let fx = q.kick()?;
    assert_eq!(fx, [Effect::IotlbInvalidated(IotlbScope::Global)]);
    assert_eq!(q.head()?, 4);
    assert_eq!(q.mem.read_u32(STATUS)?, 9);
    Ok(())
}

#[test]
fn descriptors_a_legacy_queue_refuses() -> TestResult {
    type Check = fn(Option<QueueError>) -> bool;
    let cases: [((u64, u64), Check); 6] = [
        ((0xf, 0), |e| {
            matches!(e, Some(QueueError::UnknownType { kind: 0xf, .. }))
        }),
        ((6, 0), |e| {
            matches!(e, Some(QueueError::NeedsWideQueue { kind: 6, .. }))
        }),
        ((7, 0), |e| {
            matches!(e, Some(QueueError::NeedsWideQueue { kind: 7, .. }))
        }),
        ((5, 0), |e| matches!(e, Some(QueueError::Invalid { kind: 5, .. }))),
        ((2 | 3 << 4, 19), |e| {
            matches!(e, Some(QueueError::Invalid { kind: 2, .. }))
        }),
        ((1, 0), |e| matches!(e, Some(QueueError::Invalid { kind: 1, .. }))),
    ];
    for (desc, check) in cases {
        let mut q = Queue::new()?;
        q.submit(&[desc])?;
        assert!(check(q.dev.queue_error()), "{desc:x?}: {:?}", q.dev.queue_error());
        assert_eq!(q.fsts()?, Fsts::IQE);
    }
    // A status write that fails still raises the completion, then stops.
    let mut q = Queue::new()?;
    let fx = q.submit(&[wait(Some((MEM as u64, 1)), true)])?;
    assert_eq!(fx, [Effect::Interrupt(DONE), Effect::Interrupt(FAULT)]);
    assert!(matches!(q.dev.queue_error(), Some(QueueError::StatusWrite { .. })));
    Ok(())
}

#[test]
fn a_tail_past_the_queue_is_an_error() -> TestResult {
    let mut q = Queue::new()?;
    q.dev.write(at(Reg::Iqt), 8, 300 << 4, &q.mem)?;
    assert_eq!(
        q.dev.queue_error(),
        Some(QueueError::TailOutOfRange { tail: 300, size: 256 })
    );
    assert_eq!(q.fsts()?, Fsts::IQE);
    Ok(())
}

#[test]
fn the_head_wraps_at_the_queue_size() -> TestResult {
    let mut q = Queue::new()?;
    let fences = vec![wait(None, false); 250];
    q.submit(&fences)?;
    assert_eq!(q.head()?, 250);
    q.submit(&[wait(Some((STATUS, 0xaa)), false); 10])?;
    assert_eq!(q.head()?, 4);
    assert_eq!(q.fsts()?, Fsts::empty());
    assert_eq!(q.mem.read_u32(STATUS)?, 0xaa);
    Ok(())
}

#[test]
fn the_queue_turns_off_only_when_drained_by_a_wait() -> TestResult {
    let mut q = Queue::new()?;
    q.submit(&[iotlb_global()])?;
    q.dev.write(at(Reg::Gcmd), 4, 0, &q.mem)?;
    assert!(q.dev.queued_invalidation_enabled(), "last descriptor was no wait");
    q.submit(&[wait(None, false)])?;
    q.dev.write(at(Reg::Gcmd), 4, 0, &q.mem)?;
    assert!(!q.dev.queued_invalidation_enabled());
    assert_eq!(q.dev.read(at(Reg::Gsts), 4)?, 0);
    assert_eq!(q.head()?, 0, "IQH reset");
    Ok(())
}

#[test]
fn a_tail_set_before_enabling_is_processed_on_enable() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    mem.write_u64(QUEUE, wait(Some((STATUS, 0x77)), false).0)?;
    mem.write_u64(QUEUE + 8, STATUS)?;
    dev.write(at(Reg::Iqa), 8, QUEUE, &mem)?;
    dev.write(at(Reg::Iqt), 8, 1 << 4, &mem)?;
    assert_eq!(mem.read_u32(STATUS)?, 0, "nothing while the queue is off");
    dev.write(at(Reg::Gcmd), 4, 1 << 26, &mem)?;
    assert_eq!(mem.read_u32(STATUS)?, 0x77);
    Ok(())
}

#[test]
fn no_fault_event_while_an_earlier_condition_awaits_service() -> TestResult {
    let mut q = Queue::new()?;
    q.dev.write(at(Reg::Gcmd), 4, 1 << 26 | 1 << 31, &q.mem)?;
    // A queue error signals once.
    assert_eq!(q.submit(&[(0xf, 0)])?, [Effect::Interrupt(FAULT)]);
    // While IQE is set, a recorded translation fault raises no event.
    let fault = q
        .dev
        .translate(DEV, 0x1000, Access::Read, &q.mem)
        .err()
        .ok_or("no fault")?;
    assert_eq!(fault.reason, vmkit_devices::iommu::FaultReason::RootEntryNotPresent);
    assert_eq!(
        fault.report,
        vmkit_devices::iommu::FaultReport::Recorded { interrupt: None }
    );
    assert_eq!(q.fsts()?, Fsts::IQE | Fsts::PPF);
    // And the other way round: with the fault pending, a queue error is silent.
    q.dev.write(at(Reg::Fsts), 4, Fsts::IQE.bits().into(), &q.mem)?;
    q.mem.write_u64(QUEUE, 0xe)?;
    assert!(q.kick()?.is_empty());
    assert_eq!(q.fsts()?, Fsts::IQE | Fsts::PPF);
    Ok(())
}
