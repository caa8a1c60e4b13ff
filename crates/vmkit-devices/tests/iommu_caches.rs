//! The IOTLB and the context cache: hits, each invalidation granularity,
//! the size limit, and what a stale cache keeps answering.

use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::cache::IOTLB_MAX_ENTRIES;
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, ContextScope, FaultReason, FaultReport, IntelIommu, IntelIommuProps, IrqChip, Perm, Reg,
    SourceId,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

const MEM: usize = 16 << 20;
const ROOT: u64 = 0x10_0000;
const DEV: SourceId = SourceId::new(0, 0x18);
const OTHER: SourceId = SourceId::new(0, 0x20);
const RW: Perm = Perm::READ.union(Perm::WRITE);

fn enabled(mem: &TestMemory) -> Fallible<IntelIommu> {
    let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    dev.write(Reg::Rtaddr.offset() as u64, 8, ROOT, mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, mem)?;
    Ok(dev)
}

fn out(dev: &mut IntelIommu, mem: &TestMemory, sid: SourceId, iova: u64) -> Fallible<u64> {
    let m = dev
        .translate(sid, iova, Access::Read, mem)?
        .mapping()
        .ok_or("interrupt")?;
    Ok(m.output(iova).ok_or("outside the page")?)
}

fn iotlb_invalidate(dev: &mut IntelIommu, mem: &TestMemory, iirg: u64, domain: u16, iva: u64) -> TestResult {
    dev.write(Reg::Iva.offset() as u64, 8, iva, mem)?;
    dev.write(
        Reg::Iotlb.offset() as u64,
        8,
        1 << 63 | iirg << 60 | u64::from(domain) << 32,
        mem,
    )?;
    Ok(())
}

/// Two devices in domains 1 and 2 over one 4-level table mapping
/// `pages` 4 KiB pages from 0x1000 to 0x10_0000 + offset.
fn two_domains(mem: &TestMemory, pages: u64) -> Fallible<(TableBuilder<'_>, u64)> {
    let mut tb = TableBuilder::new(mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.set_context(OTHER, ContextEntry::translated(table, 4, 2))?;
    for i in 1..=pages {
        tb.map(table, 4, i << 12, 0x100_0000 + (i << 12), 1, RW)?;
    }
    Ok((tb, table))
}

#[test]
fn a_hit_answers_without_walking_even_when_memory_changed() -> TestResult {
    let mem = TestMemory::new(MEM);
    let (mut tb, table) = two_domains(&mem, 1)?;
    let mut dev = enabled(&mem)?;
    assert_eq!(out(&mut dev, &mem, DEV, 0x1008)?, 0x100_1008);
    assert_eq!(out(&mut dev, &mem, DEV, 0x1010)?, 0x100_1010);
    let s = dev.stats();
    assert_eq!((s.page_walks, s.iotlb_hits), (1, 1));
    // Remap without invalidating: the IOTLB still answers the old page.
    tb.map(table, 4, 0x1000, 0x200_0000, 1, RW)?;
    assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x100_1000);
    iotlb_invalidate(&mut dev, &mem, 1, 0, 0)?;
    assert_eq!(dev.iotlb_len(), 0);
    assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x200_0000);
    Ok(())
}

#[test]
fn domain_selective_invalidation_keeps_other_domains() -> TestResult {
    let mem = TestMemory::new(MEM);
    two_domains(&mem, 1)?;
    let mut dev = enabled(&mem)?;
    out(&mut dev, &mem, DEV, 0x1000)?;
    out(&mut dev, &mem, OTHER, 0x1000)?;
    assert_eq!(dev.iotlb_len(), 2, "keyed by source");
    iotlb_invalidate(&mut dev, &mem, 2, 1, 0)?;
    assert_eq!(dev.iotlb_len(), 1);
    let walks = dev.stats().page_walks;
    out(&mut dev, &mem, OTHER, 0x1000)?;
    assert_eq!(dev.stats().page_walks, walks, "domain 2 still cached");
    out(&mut dev, &mem, DEV, 0x1000)?;
    assert_eq!(dev.stats().page_walks, walks + 1, "domain 1 walked again");
    Ok(())
}

#[test]
fn page_selective_invalidation_drops_the_pages_covered() -> TestResult {
    let mem = TestMemory::new(MEM);
    two_domains(&mem, 4)?;
    let mut dev = enabled(&mem)?;
    for i in 1..=4 {
        out(&mut dev, &mem, DEV, i << 12)?;
    }
    assert_eq!(dev.iotlb_len(), 4);
    // Another domain's pages are not touched.
    iotlb_invalidate(&mut dev, &mem, 3, 2, 0x2000)?;
    assert_eq!(dev.iotlb_len(), 4);
    // One page.
    iotlb_invalidate(&mut dev, &mem, 3, 1, 0x2000)?;
    assert_eq!(dev.iotlb_len(), 3);
    // Four pages from 0 (am = 2): 0x1000 and 0x3000 go, 0x4000 stays.
    iotlb_invalidate(&mut dev, &mem, 3, 1, 2)?;
    assert_eq!(dev.iotlb_len(), 1);
    let walks = dev.stats().page_walks;
    out(&mut dev, &mem, DEV, 0x4000)?;
    assert_eq!(dev.stats().page_walks, walks);
    Ok(())
}

#[test]
fn page_selective_invalidation_inside_a_large_page_drops_it() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x4020_0000, 0x20_0000, 2, RW)?;
    let mut dev = enabled(&mem)?;
    out(&mut dev, &mem, DEV, 0x4020_0000)?;
    out(&mut dev, &mem, DEV, 0x403f_f000)?;
    assert_eq!(dev.iotlb_len(), 1, "one entry for the 2 MiB page");
    iotlb_invalidate(&mut dev, &mem, 3, 1, 0x4031_0000)?;
    assert_eq!(dev.iotlb_len(), 0);
    Ok(())
}

#[test]
fn a_cached_translation_refuses_a_write_without_recording() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x1000, 0x5000, 1, Perm::READ)?;
    let mut dev = enabled(&mem)?;
    out(&mut dev, &mem, DEV, 0x1000)?;
    let fault = dev
        .translate(DEV, 0x1000, Access::Write, &mem)
        .err()
        .ok_or("write allowed")?;
    assert_eq!((fault.reason, fault.report), (FaultReason::Write, FaultReport::Cached));
    assert_eq!(dev.fault_record(), None);
    Ok(())
}

#[test]
fn a_full_iotlb_is_emptied_before_the_next_entry() -> TestResult {
    let mem = TestMemory::new(MEM);
    let count = IOTLB_MAX_ENTRIES as u64 + 1;
    two_domains(&mem, count)?;
    let mut dev = enabled(&mem)?;
    for i in 1..count {
        out(&mut dev, &mem, DEV, i << 12)?;
    }
    assert_eq!(dev.iotlb_len(), IOTLB_MAX_ENTRIES);
    out(&mut dev, &mem, DEV, count << 12)?;
    assert_eq!(dev.iotlb_len(), 1);
    Ok(())
}

#[test]
fn the_context_cache_holds_until_invalidated() -> TestResult {
    let mem = TestMemory::new(MEM);
    let (mut tb, _) = two_domains(&mem, 1)?;
    let second = tb.alloc()?;
    tb.map(second, 4, 0x1000, 0x300_0000, 1, RW)?;
    let mut dev = enabled(&mem)?;
    assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x100_1000);
    tb.set_context(DEV, ContextEntry::translated(second, 4, 1))?;
    iotlb_invalidate(&mut dev, &mem, 1, 0, 0)?;
    assert_eq!(
        out(&mut dev, &mem, DEV, 0x1000)?,
        0x100_1000,
        "the cached context entry still names the old table"
    );
    // Device-selective for 00:03.4 with FM=3 covers all of slot 3.
    iotlb_invalidate(&mut dev, &mem, 1, 0, 0)?;
    let ccmd = 1u64 << 63 | 3 << 61 | 3 << 32 | u64::from(SourceId::new(0, 0x1c).0) << 16;
    dev.write(Reg::Ccmd.offset() as u64, 8, ccmd, &mem)?;
    assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x300_0000);
    Ok(())
}

#[test]
fn function_masks_select_functions_of_one_slot() {
    let scope = |fm| ContextScope::Devices {
        source: SourceId::new(0, 0x1c),
        fm,
    };
    assert!(scope(0).covers(SourceId::new(0, 0x1c)));
    assert!(!scope(0).covers(SourceId::new(0, 0x18)));
    assert!(scope(1).covers(SourceId::new(0, 0x18)), "bit 2 ignored");
    assert!(!scope(1).covers(SourceId::new(0, 0x1d)));
    assert!(scope(3).covers(SourceId::new(0, 0x1f)));
    assert!(!scope(3).covers(SourceId::new(0, 0x20)), "another slot");
    assert!(!scope(3).covers(SourceId::new(1, 0x1c)), "another bus");
    assert!(ContextScope::Global.covers(SourceId::new(9, 9)));
}

#[test]
fn latching_a_root_table_or_switching_translation_flushes_the_caches() -> TestResult {
    let mem = TestMemory::new(MEM);
    two_domains(&mem, 1)?;
    let mut dev = enabled(&mem)?;
    out(&mut dev, &mem, DEV, 0x1000)?;
    assert_eq!(dev.iotlb_len(), 1);
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31 | 1 << 30, &mem)?;
    assert_eq!(dev.iotlb_len(), 0, "SRTP");
    out(&mut dev, &mem, DEV, 0x1000)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 0, &mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, &mem)?;
    assert_eq!(dev.iotlb_len(), 0, "TE off and on");
    // Nothing is lost: the tables are walked again.
    assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x100_1000);
    Ok(())
}

#[test]
fn a_2mib_mapping_hits_from_every_4k_page_in_it_beside_a_4k_mapping() -> TestResult {
    let mem = TestMemory::new(MEM);
    let mut tb = TableBuilder::new(&mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 1))?;
    tb.map(table, 4, 0x4020_0000, 0x20_0000, 2, RW)?;
    tb.map(table, 4, 0x1000, 0x5000, 1, RW)?;
    let mut dev = enabled(&mem)?;
    assert_eq!(out(&mut dev, &mem, DEV, 0x4020_0010)?, 0x20_0010);
    // Alternate between pages of the large mapping and the small one: the
    // last hit in front of the maps must follow.
    for _ in 0..2 {
        assert_eq!(out(&mut dev, &mem, DEV, 0x403f_f008)?, 0x3f_f008);
        assert_eq!(out(&mut dev, &mem, DEV, 0x1010)?, 0x5010);
        assert_eq!(out(&mut dev, &mem, DEV, 0x4030_0000)?, 0x30_0000);
        assert_eq!(out(&mut dev, &mem, DEV, 0x4020_0010)?, 0x20_0010);
    }
    let s = dev.stats();
    assert_eq!((s.page_walks, s.iotlb_hits), (2, 7), "one walk per mapping");
    assert_eq!(dev.iotlb_len(), 2);
    // Another source does not hit the first one's entries.
    let err = dev.translate(OTHER, 0x4020_0010, Access::Read, &mem).err();
    assert!(err.is_some(), "OTHER has no context entry");
    Ok(())
}

#[test]
fn an_address_wider_than_any_walk_never_hits() -> TestResult {
    let mem = TestMemory::new(MEM);
    two_domains(&mem, 1)?;
    let mut dev = enabled(&mem)?;
    out(&mut dev, &mem, DEV, 0x1000)?;
    out(&mut dev, &mem, DEV, 0x1000)?;
    // Bits above 48 must not alias the cached page (nor its source).
    for iova in [1u64 << 48 | 0x1000, 1 << 63 | 0x1000, u64::from(DEV.0) << 36 | 0x1000] {
        let fault = dev
            .translate(DEV, iova, Access::Read, &mem)
            .err()
            .ok_or("an unmapped wide address translated")?;
        assert_ne!(
            fault.report,
            FaultReport::Cached,
            "{iova:#x} was answered from the IOTLB"
        );
    }
    Ok(())
}

/// Every way the model drops cached translations, each done after the
/// translation of 0x1000 was answered from the IOTLB (so it is the last
/// hit) and its table entry changed: the next translation must see the
/// change.
#[test]
fn the_last_hit_is_never_answered_after_an_invalidation() -> TestResult {
    type Drop = fn(&mut IntelIommu, &TestMemory) -> TestResult;
    let kinds: [(&str, Drop); 8] = [
        ("global IOTLB", |dev, mem| iotlb_invalidate(dev, mem, 1, 0, 0)),
        ("domain IOTLB", |dev, mem| iotlb_invalidate(dev, mem, 2, 1, 0)),
        ("page IOTLB", |dev, mem| iotlb_invalidate(dev, mem, 3, 1, 0x1000)),
        ("root table latched", |dev, mem| {
            dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31 | 1 << 30, mem)?;
            Ok(())
        }),
        ("translation off and on", |dev, mem| {
            dev.write(Reg::Gcmd.offset() as u64, 4, 0, mem)?;
            dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, mem)?;
            Ok(())
        }),
        ("reset", |dev, mem| {
            dev.reset();
            dev.write(Reg::Rtaddr.offset() as u64, 8, ROOT, mem)?;
            dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, mem)?;
            dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, mem)?;
            Ok(())
        }),
        ("state load", |dev, _| {
            let state = dev.save_state();
            dev.load_state(state)?;
            Ok(())
        }),
        ("context and IOTLB", |dev, mem| {
            // Device-selective context invalidation of 00:03.0, then the
            // IOTLB (a context invalidation alone leaves the IOTLB).
            let ccmd = 1u64 << 63 | 3 << 61 | u64::from(DEV.0) << 16;
            dev.write(Reg::Ccmd.offset() as u64, 8, ccmd, mem)?;
            iotlb_invalidate(dev, mem, 1, 0, 0)
        }),
    ];
    for (name, invalidate) in kinds {
        let mem = TestMemory::new(MEM);
        let (mut tb, table) = two_domains(&mem, 1)?;
        let second = tb.alloc()?;
        tb.map(second, 4, 0x1000, 0x300_0000, 1, RW)?;
        let mut dev = enabled(&mem)?;
        assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x100_1000, "{name}");
        assert_eq!(out(&mut dev, &mem, DEV, 0x1008)?, 0x100_1008, "{name}");
        assert_eq!(dev.stats().iotlb_hits, 1, "{name}: the second was a hit");
        if name.starts_with("context") {
            tb.set_context(DEV, ContextEntry::translated(second, 4, 1))?;
            invalidate(&mut dev, &mem)?;
            assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x300_0000, "{name}");
        } else {
            tb.map(table, 4, 0x1000, 0x200_0000, 1, RW)?;
            invalidate(&mut dev, &mem)?;
            assert_eq!(out(&mut dev, &mem, DEV, 0x1000)?, 0x200_0000, "{name}");
        }
    }
    Ok(())
}
