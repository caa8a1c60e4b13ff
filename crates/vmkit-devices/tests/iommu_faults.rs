//! Fault recording and the fault event: FRCD[0] and FSTS, the fault-event
//! MSI (masked, pending, unmasked), compression and overflow, and what the
//! context entry's FPD bit silences.

use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::regs::Fsts;
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, Effect, FaultReason, FaultRecord, FaultReport, IntelIommu, IntelIommuProps, IrqChip, Reg,
    SourceId,
};
use vmkit_devices::pci::MsiMessage;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

const MEM: usize = 4 << 20;
const ROOT: u64 = 0x10_0000;
const DEV: SourceId = SourceId::new(0, 0x18);
const OTHER: SourceId = SourceId::new(0, 0x20);
const MSG: MsiMessage = MsiMessage {
    address: 0xfee0_1000,
    data: 0x4041,
};

fn at(reg: Reg) -> u64 {
    reg.offset() as u64
}

/// Translation on; DEV and OTHER have empty tables (every access faults).
fn rig(mem: &TestMemory, fpd: bool) -> Fallible<IntelIommu> {
    let mut tb = TableBuilder::new(mem, ROOT);
    let table = tb.alloc()?;
    let ce = ContextEntry::translated(table, 4, 1);
    tb.set_context(DEV, if fpd { ce.with_fpd() } else { ce })?;
    tb.set_context(OTHER, ce)?;
    let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    dev.write(at(Reg::Rtaddr), 8, ROOT, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 30, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 31, mem)?;
    dev.write(at(Reg::Fedata), 4, u64::from(MSG.data), mem)?;
    dev.write(at(Reg::Feaddr), 4, MSG.address, mem)?;
    Ok(dev)
}

fn fsts(dev: &IntelIommu) -> Fallible<Fsts> {
    Ok(Fsts::from_bits_retain(dev.read(at(Reg::Fsts), 4)? as u32))
}

fn report(dev: &mut IntelIommu, mem: &TestMemory, sid: SourceId, iova: u64) -> Fallible<FaultReport> {
    let fault = dev.translate(sid, iova, Access::Read, mem).err().ok_or("no fault")?;
    Ok(fault.report)
}

#[test]
fn a_fault_is_recorded_and_signalled_when_unmasked() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = rig(&mem, false)?;
    dev.write(at(Reg::Fectl), 4, 0, &mem)?;
    let fault = dev
        .translate(DEV, 0x1234_5678, Access::Write, &mem)
        .err()
        .ok_or("no fault")?;
    assert_eq!(fault.reason, FaultReason::Write);
    assert_eq!(fault.report, FaultReport::Recorded { interrupt: Some(MSG) });
    assert_eq!(fault.interrupt(), Some(MSG));
    assert_eq!(fsts(&dev)?, Fsts::PPF, "pending fault in record 0 (FRI 0)");
    assert_eq!(dev.read(at(Reg::Frcd0), 8)?, 0x1234_5000);
    assert_eq!(
        dev.read(at(Reg::Frcd2), 8)?,
        1 << 63 | 5 << 32 | 0x18,
        "F, write (T=0), FR 5, SID"
    );
    assert_eq!(
        dev.fault_record(),
        Some(FaultRecord {
            page: 0x1234_5000,
            source_id: DEV,
            reason: 5,
            access: Access::Write
        })
    );
    assert_eq!(dev.read(at(Reg::Fectl), 4)?, 0, "IP cleared once sent");
    Ok(())
}

#[test]
fn a_masked_event_stays_pending_until_unmasked() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = rig(&mem, false)?;
    assert_eq!(
        report(&mut dev, &mem, DEV, 0x1000)?,
        FaultReport::Recorded { interrupt: None }
    );
    assert_eq!(dev.read(at(Reg::Frcd2), 8)? >> 62, 0b11, "F and T (a read)");
    assert_eq!(dev.read(at(Reg::Fectl), 4)?, 0xc000_0000, "IM and IP");
    assert_eq!(dev.write(at(Reg::Fectl), 4, 0, &mem)?, [Effect::Interrupt(MSG)]);
    assert_eq!(dev.read(at(Reg::Fectl), 4)?, 0);
    assert!(dev.write(at(Reg::Fectl), 4, 0, &mem)?.is_empty(), "sent once");
    Ok(())
}

#[test]
fn clearing_the_status_drops_a_pending_event() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = rig(&mem, false)?;
    report(&mut dev, &mem, DEV, 0x1000)?;
    // While the record is pending, FSTS writes keep IP.
    dev.write(at(Reg::Fsts), 4, 0, &mem)?;
    assert_eq!(dev.read(at(Reg::Fectl), 4)?, 0xc000_0000);
    // Clear F (write 1 to bit 127): PPF follows, and then an FSTS write drops IP.
    dev.write(at(Reg::Frcd3), 4, 1 << 31, &mem)?;
    assert_eq!(fsts(&dev)?, Fsts::empty());
    assert_eq!(dev.fault_record(), None);
    dev.write(at(Reg::Fsts), 4, 0, &mem)?;
    assert_eq!(dev.read(at(Reg::Fectl), 4)?, 0x8000_0000);
    assert!(
        dev.write(at(Reg::Fectl), 4, 0, &mem)?.is_empty(),
        "nothing left to send"
    );
    Ok(())
}

#[test]
fn same_source_compresses_another_overflows() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = rig(&mem, false)?;
    dev.write(at(Reg::Fectl), 4, 0, &mem)?;
    assert!(matches!(
        report(&mut dev, &mem, DEV, 0x1000)?,
        FaultReport::Recorded { .. }
    ));
    assert_eq!(report(&mut dev, &mem, DEV, 0x2000)?, FaultReport::Compressed);
    assert_eq!(fsts(&dev)?, Fsts::PPF);
    assert_eq!(report(&mut dev, &mem, OTHER, 0x3000)?, FaultReport::Overflow);
    assert_eq!(fsts(&dev)?, Fsts::PPF | Fsts::PFO);
    assert_eq!(dev.read(at(Reg::Frcd0), 8)?, 0x1000, "the first fault is kept");
    // Clearing the record alone is not enough while PFO is set.
    dev.write(at(Reg::Frcd2), 8, 1 << 63, &mem)?;
    assert_eq!(fsts(&dev)?, Fsts::PFO);
    assert_eq!(report(&mut dev, &mem, OTHER, 0x3000)?, FaultReport::Overflow);
    // PFO clears by writing 1; then faults are recorded and signalled again.
    dev.write(at(Reg::Fsts), 4, 1, &mem)?;
    assert_eq!(fsts(&dev)?, Fsts::empty());
    assert_eq!(
        report(&mut dev, &mem, OTHER, 0x3000)?,
        FaultReport::Recorded { interrupt: Some(MSG) }
    );
    assert_eq!(dev.fault_record().map(|r| r.source_id), Some(OTHER));
    Ok(())
}

#[test]
fn fpd_silences_qualified_faults_only() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = rig(&mem, true)?;
    assert_eq!(report(&mut dev, &mem, DEV, 0x1000)?, FaultReport::Disabled);
    assert_eq!(dev.fault_record(), None);
    assert_eq!(fsts(&dev)?, Fsts::empty());
    // Reserved bits in a context entry are not a qualified fault: recorded
    // even with FPD.
    let mut tb = TableBuilder::new(&mem, ROOT);
    let odd = SourceId::new(0, 0x28);
    let mut ce = ContextEntry::translated(0x20_0000, 4, 1).with_fpd();
    ce.hi |= 1 << 40;
    tb.set_context(odd, ce)?;
    let fault = dev.translate(odd, 0x1000, Access::Read, &mem).err().ok_or("no fault")?;
    assert_eq!(fault.reason, FaultReason::ContextEntryReserved);
    assert!(matches!(fault.report, FaultReport::Recorded { .. }));
    assert_eq!(dev.fault_record().map(|r| r.reason), Some(0xb));
    Ok(())
}

#[test]
fn fault_reasons_have_qemus_codes() {
    let codes: Vec<(FaultReason, u8, bool)> = [
        FaultReason::RootEntryNotPresent,
        FaultReason::ContextEntryNotPresent,
        FaultReason::ContextEntryInvalid,
        FaultReason::AddressBeyondMgaw,
        FaultReason::Write,
        FaultReason::Read,
        FaultReason::PagingEntryInvalid,
        FaultReason::RootTableInvalid,
        FaultReason::ContextTableInvalid,
        FaultReason::RootEntryReserved,
        FaultReason::ContextEntryReserved,
        FaultReason::PagingEntryReserved,
        FaultReason::ContextEntryTranslationType,
        FaultReason::InterruptAddress,
    ]
    .into_iter()
    .map(|r| (r, r.code(), r.is_qualified()))
    .collect();
    let expected = [
        (1, false),
        (2, true),
        (3, true),
        (4, true),
        (5, true),
        (6, true),
        (7, true),
        (8, false),
        (9, false),
        (0xa, false),
        (0xb, false),
        (0xc, true),
        (0xd, true),
        (0xe, true),
    ];
    for ((reason, code, qualified), (want_code, want_qualified)) in codes.into_iter().zip(expected) {
        assert_eq!((code, qualified), (want_code, want_qualified), "{reason:?}");
        assert_eq!(FaultReason::from_code(code), Some(reason));
    }
    assert_eq!(FaultReason::from_code(0x58), None);
    assert_eq!(FaultReason::Write.to_string(), "write denied (fault reason 0x5)");
}
