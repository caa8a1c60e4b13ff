//! DMA translation through tables built in guest memory: 3- and 4-level
//! walks, large pages, permissions, pass-through, and each fault reason a
//! walk can end with.

use vmkit_devices::dma::{Dma, TestMemory};
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, Fault, FaultReason, IntelIommu, IntelIommuProps, IrqChip, Mapping, Perm, Reg, SourceId,
    Translation,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

const MEM: usize = 8 << 20;
const ROOT: u64 = 0x10_0000;
const DEV: SourceId = SourceId::new(0, 0x18);
const RW: Perm = Perm::READ.union(Perm::WRITE);

/// A device with translation on over the root table at `ROOT`.
fn enabled(props: IntelIommuProps, mem: &TestMemory) -> Fallible<IntelIommu> {
    let mut dev = IntelIommu::new(props.realize(IrqChip::Userspace)?);
    dev.write(Reg::Rtaddr.offset() as u64, 8, ROOT, mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, mem)?;
    Ok(dev)
}

fn mapped(t: Result<Translation, Fault>) -> Fallible<Mapping> {
    Ok(t?.mapping().ok_or("interrupt range")?)
}

fn reason(t: Result<Translation, Fault>) -> Option<FaultReason> {
    t.err().map(|f| f.reason)
}

#[test]
fn a_three_level_walk_to_a_4k_page() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    tb.map(table, 3, 0x40_0000_1000, 0x80_0000, 1, RW)?;
    let mut dev = enabled(IntelIommuProps::compat_9_1(), &mem)?;
    let m = mapped(dev.translate(DEV, 0x40_0000_1234, Access::Write, &mem))?;
    assert_eq!(
        m,
        Mapping {
            iova: 0x40_0000_1000,
            translated: 0x80_0000,
            addr_mask: 0xfff,
            perm: RW
        }
    );
    assert_eq!(m.output(0x40_0000_1234), Some(0x80_0234));
    assert_eq!(m.output(0x40_0000_2000), None);
    // A read is told only about reading, as QEMU's translate does.
    let r = mapped(dev.translate(DEV, 0x40_0000_1ff8, Access::Read, &mem))?;
    assert_eq!(r.perm, Perm::READ);
    // Another page under the same tables is not mapped.
    assert_eq!(
        reason(dev.translate(DEV, 0x40_0000_2000, Access::Read, &mem)),
        Some(FaultReason::Read)
    );
    Ok(())
}

#[test]
fn a_four_level_walk_above_39_bits() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    let iova = 0x7f_1234_5000;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 2))?;
    tb.map(table, 4, iova, 0x1_2345_6000, 1, Perm::READ)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    let m = mapped(dev.translate(DEV, iova + 0x10, Access::Read, &mem))?;
    assert_eq!((m.translated, m.page_size()), (0x1_2345_6000, 0x1000));
    assert_eq!(
        reason(dev.translate(DEV, 1 << 48, Access::Read, &mem)),
        Some(FaultReason::AddressBeyondMgaw)
    );

    // With aw-bits=39 a 4-level context entry is not supported.
    let mut dev39 = enabled(IntelIommuProps::compat_9_1(), &mem)?;
    assert_eq!(
        reason(dev39.translate(DEV, 0x1000, Access::Read, &mem)),
        Some(FaultReason::ContextEntryInvalid)
    );
    Ok(())
}

#[test]
fn a_three_level_context_limits_the_input_to_39_bits() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(
        reason(dev.translate(DEV, 1 << 39, Access::Read, &mem)),
        Some(FaultReason::AddressBeyondMgaw)
    );
    Ok(())
}

#[test]
fn two_megabyte_and_one_gigabyte_pages() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x4020_0000, 0x20_0000, 2, RW)?;
    tb.map(table, 4, 0x80_0000_0000, 0x4000_0000, 3, Perm::READ)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    let m2 = mapped(dev.translate(DEV, 0x4021_2345, Access::Write, &mem))?;
    assert_eq!(
        (m2.iova, m2.translated, m2.addr_mask),
        (0x4020_0000, 0x20_0000, 0x1f_ffff)
    );
    assert_eq!(m2.output(0x4021_2345), Some(0x21_2345));
    let m1 = mapped(dev.translate(DEV, 0x80_1234_5678, Access::Read, &mem))?;
    assert_eq!(
        (m1.iova, m1.translated, m1.page_size()),
        (0x80_0000_0000, 0x4000_0000, 1 << 30)
    );
    assert_eq!(m1.output(0x80_1234_5678), Some(0x5234_5678));
    Ok(())
}

#[test]
fn a_large_page_must_be_aligned() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x4020_0000, 0x20_1000, 2, RW)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(
        reason(dev.translate(DEV, 0x4020_0000, Access::Read, &mem)),
        Some(FaultReason::PagingEntryReserved)
    );
    Ok(())
}

#[test]
fn rights_are_checked_per_access_and_anded_along_the_walk() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    tb.map(table, 3, 0x1000, 0xa000, 1, Perm::READ)?;
    tb.map(table, 3, 0x2000, 0xb000, 1, Perm::WRITE)?;
    tb.map(table, 3, 0x4000_0000, 0xc000, 1, RW)?;
    // Take write away one level up from the last page.
    let pde = tb.entry_address(table, 3, 0x4000_0000, 2)?.ok_or("no level-2 entry")?;
    mem.write_u64(pde, mem.read_u64(pde)? & !2)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(
        reason(dev.translate(DEV, 0x1000, Access::Write, &mem)),
        Some(FaultReason::Write)
    );
    assert_eq!(
        reason(dev.translate(DEV, 0x2000, Access::Read, &mem)),
        Some(FaultReason::Read)
    );
    assert_eq!(
        mapped(dev.translate(DEV, 0x2000, Access::Write, &mem))?.perm,
        Perm::WRITE
    );
    assert_eq!(
        reason(dev.translate(DEV, 0x4000_0000, Access::Write, &mem)),
        Some(FaultReason::Write)
    );
    assert_eq!(
        mapped(dev.translate(DEV, 0x4000_0000, Access::Read, &mem))?.translated,
        0xc000
    );
    Ok(())
}

#[test]
fn untranslated_when_off_and_never_in_the_interrupt_range() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    let m = mapped(dev.translate(DEV, 0x1234_5678, Access::Write, &mem))?;
    assert_eq!((m.iova, m.translated, m.perm), (0x1234_5000, 0x1234_5000, RW));
    assert_eq!(
        dev.translate(DEV, 0xfee0_0004, Access::Write, &mem),
        Ok(Translation::Interrupt)
    );
    let mut on = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(
        on.translate(DEV, 0xfeef_fffc, Access::Write, &mem),
        Ok(Translation::Interrupt)
    );
    assert!(on.translates(DEV, &mem), "no context entry: still behind translation");
    assert!(!dev.translates(DEV, &mem));
    Ok(())
}

#[test]
fn pass_through_and_device_iotlb_context_types() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    let ats = SourceId::new(0, 0x20);
    tb.set_context(DEV, ContextEntry::pass_through(3, 1))?;
    tb.set_context(
        ats,
        ContextEntry {
            lo: ContextEntry::translated(table, 3, 1).lo | 1 << 2,
            ..ContextEntry::translated(table, 3, 1)
        },
    )?;
    tb.map(table, 3, 0x5000, 0x9000, 1, RW)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    let m = mapped(dev.translate(DEV, 0x3456_7000, Access::Write, &mem))?;
    assert_eq!((m.translated, m.perm), (0x3456_7000, RW));
    assert!(!dev.translates(DEV, &mem), "a pass-through device skips translation");
    assert!(dev.translates(ats, &mem));
    assert_eq!(
        reason(dev.translate(ats, 0x5000, Access::Read, &mem)),
        Some(FaultReason::ContextEntryInvalid),
        "TT=1 needs device-iotlb"
    );

    let no_pt = IntelIommuProps {
        pt: false,
        device_iotlb: true,
        ..IntelIommuProps::default()
    };
    let mut dev = enabled(no_pt, &mem)?;
    assert_eq!(
        reason(dev.translate(DEV, 0x1000, Access::Read, &mem)),
        Some(FaultReason::ContextEntryInvalid)
    );
    assert_eq!(
        mapped(dev.translate(ats, 0x5000, Access::Read, &mem))?.translated,
        0x9000
    );
    Ok(())
}

#[test]
fn root_and_context_entry_faults() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    let read = |dev: &mut IntelIommu, sid: SourceId| reason(dev.translate(sid, 0x1000, Access::Read, &mem));

    assert_eq!(
        read(&mut dev, SourceId::new(1, 0)),
        Some(FaultReason::RootEntryNotPresent)
    );
    assert_eq!(
        read(&mut dev, SourceId::new(0, 0x19)),
        Some(FaultReason::ContextEntryNotPresent)
    );

    // Reserved bits in the root entry of bus 2, in a context entry on bus 0.
    let on_bus2 = SourceId::new(2, 0);
    tb.set_context(on_bus2, ContextEntry::translated(table, 3, 1))?;
    mem.write_u64(ROOT + 2 * 16 + 8, 1)?;
    assert_eq!(read(&mut dev, on_bus2), Some(FaultReason::RootEntryReserved));
    let odd = SourceId::new(0, 0x28);
    let mut ce = ContextEntry::translated(table, 3, 1);
    ce.hi |= 1 << 7;
    tb.set_context(odd, ce)?;
    assert_eq!(read(&mut dev, odd), Some(FaultReason::ContextEntryReserved));
    let tt3 = SourceId::new(0, 0x30);
    tb.set_context(
        tt3,
        ContextEntry {
            lo: ContextEntry::translated(table, 3, 1).lo | 3 << 2,
            ..ContextEntry::translated(table, 3, 1)
        },
    )?;
    assert_eq!(read(&mut dev, tt3), Some(FaultReason::ContextEntryInvalid));

    // Tables outside memory: the context table, the top page table, a lower one.
    let bus3 = SourceId::new(3, 0);
    mem.write_u64(ROOT + 3 * 16, 0x7ff_f000 | 1)?;
    assert_eq!(read(&mut dev, bus3), Some(FaultReason::ContextTableInvalid));
    let far = SourceId::new(0, 0x38);
    tb.set_context(far, ContextEntry::translated(0x7ff_f000, 3, 1))?;
    assert_eq!(read(&mut dev, far), Some(FaultReason::ContextEntryInvalid));
    let lower = SourceId::new(0, 0x40);
    let t2 = tb.alloc()?;
    tb.set_context(lower, ContextEntry::translated(t2, 3, 1))?;
    mem.write_u64(t2, 0x7ff_f000 | 3)?;
    assert_eq!(read(&mut dev, lower), Some(FaultReason::PagingEntryInvalid));

    // The root table itself outside memory.
    let mut gone = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    gone.write(Reg::Rtaddr.offset() as u64, 8, 0x7ff_f000, &mem)?;
    gone.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, &mem)?;
    gone.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, &mem)?;
    assert_eq!(read(&mut gone, DEV), Some(FaultReason::RootTableInvalid));
    Ok(())
}

#[test]
fn reserved_bits_in_paging_entries() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x1000, 0xa000, 1, RW)?;
    tb.map(table, 4, 0x2000, 0xb000, 1, RW)?;
    tb.map(table, 4, 0x3000, 0xc000, 1, RW)?;
    let leaf = |iova| -> Fallible<u64> { Ok(tb.entry_address(table, 4, iova, 1)?.ok_or("no leaf")?) };
    let (snp, tm, high) = (leaf(0x1000)?, leaf(0x2000)?, leaf(0x3000)?);
    mem.write_u64(snp, mem.read_u64(snp)? | 1 << 11)?;
    mem.write_u64(tm, mem.read_u64(tm)? | 1 << 62)?;
    mem.write_u64(high, mem.read_u64(high)? | 1 << 50)?;
    let r = |dev: &mut IntelIommu, iova| reason(dev.translate(DEV, iova, Access::Read, &mem));

    let mut plain = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(r(&mut plain, 0x1000), Some(FaultReason::PagingEntryReserved), "SNP");
    assert_eq!(r(&mut plain, 0x2000), Some(FaultReason::PagingEntryReserved), "TM");
    assert_eq!(
        r(&mut plain, 0x3000),
        Some(FaultReason::PagingEntryReserved),
        "above aw-bits"
    );

    let mut snooping = enabled(
        IntelIommuProps {
            snoop_control: true,
            ..IntelIommuProps::default()
        },
        &mem,
    )?;
    assert_eq!(r(&mut snooping, 0x1000), None);
    let mut stale_tm = enabled(
        IntelIommuProps {
            device_iotlb: true,
            stale_tm: true,
            ..IntelIommuProps::default()
        },
        &mem,
    )?;
    assert_eq!(r(&mut stale_tm, 0x2000), None);

    // A page-size bit at level 4 is reserved.
    let ps4 = SourceId::new(0, 0x50);
    let t4 = tb.alloc()?;
    tb.set_context(ps4, ContextEntry::translated(t4, 4, 1))?;
    mem.write_u64(t4, 0x20_0000 | 1 << 7 | 3)?;
    assert_eq!(
        reason(plain.translate(ps4, 0x1000, Access::Read, &mem)),
        Some(FaultReason::PagingEntryReserved)
    );
    Ok(())
}

#[test]
fn an_output_in_the_interrupt_range_is_refused() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    tb.map(table, 3, 0x1000, 0xfee0_0000, 1, RW)?;
    // A 1 GiB page whose output covers the range is refused too.
    tb.map(table, 3, 0x4000_0000, 0xc000_0000, 3, RW)?;
    let mut dev = enabled(IntelIommuProps::default(), &mem)?;
    assert_eq!(
        reason(dev.translate(DEV, 0x1000, Access::Write, &mem)),
        Some(FaultReason::InterruptAddress)
    );
    assert_eq!(
        reason(dev.translate(DEV, 0x4000_0000, Access::Read, &mem)),
        Some(FaultReason::InterruptAddress)
    );
    Ok(())
}
