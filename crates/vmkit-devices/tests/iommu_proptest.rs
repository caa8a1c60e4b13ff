//! Properties: any register access sequence leaves the device sound (no
//! panic, refusals exactly where QEMU's would be, read-only registers
//! intact), and translation agrees with a reference model of randomly
//! built page tables.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, FaultReason, IntelIommu, IntelIommuProps, IrqChip, Perm, Reg, SourceId,
};

const DEV: SourceId = SourceId::new(0, 0x18);

#[derive(Debug, Clone)]
enum Op {
    Read(u64, u8),
    Write(u64, u8, u64),
    Translate(u16, u64, bool),
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets cluster on real registers but also hit holes and the end.
    let offset = prop_oneof![0u64..0x240, (0u64..0x8c).prop_map(|i| i * 4)];
    let size = prop_oneof![Just(4u8), Just(8u8), Just(1u8), Just(2u8)];
    prop_oneof![
        (offset.clone(), size.clone()).prop_map(|(o, s)| Op::Read(o, s)),
        (offset, size, any::<u64>()).prop_map(|(o, s, v)| Op::Write(o, s, v)),
        (any::<u16>(), any::<u64>(), any::<bool>()).prop_map(|(s, a, w)| Op::Translate(s, a, w)),
    ]
}

fn valid(offset: u64, size: u8) -> bool {
    matches!(size, 4 | 8) && offset % u64::from(size) == 0 && offset + u64::from(size) <= 0x230
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_access_sequence_leaves_the_device_sound(ops in prop::collection::vec(op(), 1..60)) {
        let mem = TestMemory::new(0x1_0000);
        let config = IntelIommuProps::default().realize(IrqChip::Userspace)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut dev = IntelIommu::new(config);
        let ident = |dev: &IntelIommu| -> Vec<u64> {
            [Reg::Ver, Reg::Cap, Reg::Ecap].iter().filter_map(|r| dev.read(r.offset() as u64, 8).ok()).collect()
        };
        let before = ident(&dev);
        for op in ops {
            match op {
                Op::Read(o, s) => prop_assert_eq!(dev.read(o, s).is_ok(), valid(o, s)),
                Op::Write(o, s, v) => {
                    let narrow_only = s == 8 && matches!(o, 0x38 | 0xa0 | 0xa8);
                    prop_assert_eq!(dev.write(o, s, v, &mem).is_ok(), valid(o, s) && !narrow_only);
                }
                Op::Translate(s, a, w) => {
                    let access = if w { Access::Write } else { Access::Read };
                    let _ = dev.translate(SourceId(s), a, access, &mem);
                }
            }
            prop_assert_eq!(ident(&dev), before.clone());
            for wo in [Reg::Gcmd, Reg::Iva, Reg::Feuaddr, Reg::Ieuaddr, Reg::Pmen] {
                prop_assert_eq!(dev.read(wo.offset() as u64, 4).ok(), Some(0), "{:?}", wo);
            }
            let fsts = dev.read(Reg::Fsts.offset() as u64, 4).unwrap_or(u64::MAX);
            prop_assert_eq!(fsts & !0x13, 0, "FSTS has only PFO, PPF, IQE (FRI stays 0)");
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Empty,
    Large(u8),
    Small(BTreeMap<u16, u8>),
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![
        Just(Slot::Empty),
        (1u8..4).prop_map(Slot::Large),
        prop::collection::btree_map(0u16..512, 1u8..4, 1..12).prop_map(Slot::Small),
    ]
}

fn perm(bits: u8) -> Perm {
    Perm::from_bits_truncate(bits)
}

/// The reference: where `iova` goes for `access`, or the fault reason.
fn expected(slots: &[Slot], iova: u64, access: Access) -> Result<u64, FaultReason> {
    let denied = match access {
        Access::Read => FaultReason::Read,
        Access::Write => FaultReason::Write,
    };
    let index = (iova >> 21) as usize;
    let (bits, out) = match slots.get(index) {
        Some(Slot::Large(bits)) => (*bits, 0x4000_0000 + (iova & !0x1f_ffff)),
        Some(Slot::Small(pages)) => {
            let page = ((iova >> 12) & 0x1ff) as u16;
            match pages.get(&page) {
                Some(bits) => (*bits, 0x8000_0000 + (iova & !0xfff)),
                None => return Err(denied),
            }
        }
        Some(Slot::Empty) | None => return Err(denied),
    };
    if perm(bits).contains(Perm::needed_by(access)) {
        let size = if matches!(slots.get(index), Some(Slot::Large(_))) {
            0x20_0000
        } else {
            0x1000
        };
        Ok(out | (iova & (size - 1)))
    } else {
        Err(denied)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn translation_agrees_with_the_tables(
        slots in prop::collection::vec(slot(), 4),
        probes in prop::collection::vec((0u64..0x80_0000, any::<bool>()), 1..40),
    ) {
        let mem = TestMemory::new(1 << 20);
        let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
        let mut tb = TableBuilder::new(&mem, 0x1000);
        let table = tb.alloc().map_err(|e| fail(&e))?;
        tb.set_context(DEV, ContextEntry::translated(table, 4, 1)).map_err(|e| fail(&e))?;
        for (i, s) in slots.iter().enumerate() {
            let base = (i as u64) << 21;
            match s {
                Slot::Empty => {}
                Slot::Large(bits) => tb
                    .map(table, 4, base, 0x4000_0000 + base, 2, perm(*bits))
                    .map_err(|e| fail(&e))?,
                Slot::Small(pages) => {
                    for (&p, &bits) in pages {
                        let iova = base + (u64::from(p) << 12);
                        tb.map(table, 4, iova, 0x8000_0000 + iova, 1, perm(bits)).map_err(|e| fail(&e))?;
                    }
                }
            }
        }
        let config = IntelIommuProps::default().realize(IrqChip::Userspace).map_err(|e| fail(&e))?;
        let mut dev = IntelIommu::new(config);
        for (off, v) in [(0x20u64, 0x1000u64), (0x18, 1 << 30), (0x18, 1 << 31)] {
            dev.write(off, if off == 0x20 { 8 } else { 4 }, v, &mem).map_err(|e| fail(&e))?;
        }
        // Twice: the second answer may come from the IOTLB and must agree.
        for _ in 0..2 {
            for &(iova, write) in &probes {
                let access = if write { Access::Write } else { Access::Read };
                let got = dev
                    .translate(DEV, iova, access, &mem)
                    .map(|t| t.mapping().and_then(|m| m.output(iova)))
                    .map_err(|f| f.reason);
                prop_assert_eq!(got, expected(&slots, iova, access).map(Some), "iova {:#x} {:?}", iova, access);
            }
        }
    }
}
