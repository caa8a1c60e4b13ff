//! A pinned address space (one flat view held for a burst of reads, and
//! its RAM-only reads), and transfers through IOMMU regions: the default
//! `with_translation` (over `translate`) and an override lending its
//! target give the same bytes, page by page, and refuse the same accesses.

use std::sync::Arc;

use parking_lot::Mutex;
use vmkit_memory::{
    AddressSpace, Error, FULL_SPACE, GuestAddr, IommuMapping, IommuOps, IommuPerm, IommuTlbEntry, MemoryRegion,
    MmioOps, RamBlock, Result,
};

/// Region changes re-render every live address space: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Constant;

impl MmioOps for Constant {
    fn read(&self, _offset: u64, _size: u32) -> Result<u64> {
        Ok(0xab)
    }

    fn write(&self, _offset: u64, _size: u32, _value: u64) -> Result<()> {
        Ok(())
    }
}

/// Two RAM regions back to back at 0 and 0x1000 (different blocks), a
/// ROM at 0x2000, MMIO at 0x3000, nothing at 0x4000.
fn layout() -> Fallible<(Arc<AddressSpace>, Arc<RamBlock>, Arc<RamBlock>)> {
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let a = RamBlock::anonymous("a", 0x1000)?;
    let b = RamBlock::anonymous("b", 0x2000)?;
    root.add_subregion(GuestAddr(0), &MemoryRegion::ram("a", None, Arc::clone(&a), 0, 0x1000)?)?;
    root.add_subregion(
        GuestAddr(0x1000),
        &MemoryRegion::ram("b", None, Arc::clone(&b), 0, 0x1000)?,
    )?;
    root.add_subregion(
        GuestAddr(0x2000),
        &MemoryRegion::rom("rom", None, Arc::clone(&b), 0x1000, 0x1000)?,
    )?;
    root.add_subregion(
        GuestAddr(0x3000),
        &MemoryRegion::mmio("mmio", None, 0x1000, Arc::new(Constant))?,
    )?;
    Ok((AddressSpace::new("pinned", &root), a, b))
}

#[test]
fn pinned_reads_cross_regions_as_plain_reads_do_and_ram_reads_refuse_to() -> TestResult {
    let _serial = SERIAL.lock();
    let (space, a, b) = layout()?;
    a.write(0xffc, &[1, 2, 3, 4])?;
    b.write(0, &[5, 6, 7, 8])?;
    b.write(0x1000, &[9, 9])?;
    let pinned = space.pinned();
    let mut got = [0u8; 8];
    pinned.read(GuestAddr(0xffc), &mut got)?;
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8], "across two RAM regions");
    let mut plain = [0u8; 8];
    space.read(GuestAddr(0xffc), &mut plain)?;
    assert_eq!(got, plain);

    // Inside one range (the direct copy from the block), ROM included.
    let mut in_one = [0u8; 4];
    pinned.read(GuestAddr(0x1000), &mut in_one)?;
    assert_eq!(in_one, [5, 6, 7, 8]);
    pinned.read(GuestAddr(0x2000), &mut in_one[..2])?;
    assert_eq!(&in_one[..2], &[9, 9]);
    pinned.read(GuestAddr(0x1000), &mut [])?;
    // A hole reads as all ones, as through the space.
    pinned.read(GuestAddr(0x4000), &mut in_one)?;
    assert_eq!(in_one, [0xff; 4]);

    // RAM-only reads: inside one RAM or ROM range only.
    let mut four = [0u8; 4];
    pinned.read_ram(GuestAddr(0xffc), &mut four)?;
    assert_eq!(four, [1, 2, 3, 4]);
    pinned.read_ram(GuestAddr(0x1000), &mut four)?;
    assert_eq!(four, [5, 6, 7, 8]);
    pinned.read_ram(GuestAddr(0x2000), &mut four[..2])?;
    assert_eq!(&four[..2], &[9, 9], "ROM is readable");
    assert!(
        pinned.read_ram(GuestAddr(0xffe), &mut four).is_err(),
        "crossing a range's end"
    );
    assert!(pinned.read_ram(GuestAddr(0x3000), &mut four).is_err(), "MMIO");
    assert!(pinned.read_ram(GuestAddr(0x4000), &mut four).is_err(), "a hole");
    assert!(
        pinned.read_ram(GuestAddr(u64::MAX - 1), &mut four).is_err(),
        "past the end of the address space"
    );
    // The general read still reaches MMIO through the held view.
    pinned.read(GuestAddr(0x3000), &mut four[..1])?;
    assert_eq!(four[0], 0xab);
    // Writes too.
    pinned.write(GuestAddr(0xffe), &[0xee; 4])?;
    space.read(GuestAddr(0xffe), &mut four)?;
    assert_eq!(four, [0xee; 4]);
    Ok(())
}

#[test]
fn a_pinned_space_sees_the_map_it_was_taken_with() -> TestResult {
    let _serial = SERIAL.lock();
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let block = RamBlock::anonymous("r", 0x1000)?;
    block.write(0, &[7])?;
    let ram = MemoryRegion::ram("r", None, Arc::clone(&block), 0, 0x1000)?;
    root.add_subregion(GuestAddr(0), &ram)?;
    let space = AddressSpace::new("pinned-map", &root);
    let pinned = space.pinned();
    ram.set_enabled(false);
    let mut b = [0u8; 1];
    pinned.read_ram(GuestAddr(0), &mut b)?;
    assert_eq!(b, [7], "the held view");
    drop(pinned);
    assert!(
        space.pinned().read_ram(GuestAddr(0), &mut b).is_err(),
        "a new one sees the change"
    );
    Ok(())
}

/// Maps page `n` of the IOVA space to page `n ^ 1` of `target`, read-only
/// above page 3; answers with an entry (`translate`) or, when `lend`, also
/// by lending the target (`with_translation`).
struct Swapper {
    target: Arc<AddressSpace>,
    lend: bool,
}

impl Swapper {
    fn mapping(&self, iova: GuestAddr) -> IommuMapping<'_> {
        let page = iova.0 >> 12;
        IommuMapping {
            target: &self.target,
            translated_addr: GuestAddr((page ^ 1) << 12),
            addr_mask: 0xfff,
            perm: IommuPerm {
                read: true,
                write: page < 4,
            },
        }
    }
}

impl IommuOps for Swapper {
    fn translate(&self, iova: GuestAddr, _is_write: bool) -> Result<IommuTlbEntry> {
        let m = self.mapping(iova);
        Ok(IommuTlbEntry {
            target: Arc::clone(&self.target),
            translated_addr: m.translated_addr,
            addr_mask: m.addr_mask,
            perm: m.perm,
        })
    }

    fn with_translation(
        &self,
        iova: GuestAddr,
        is_write: bool,
        then: &mut dyn FnMut(IommuMapping<'_>) -> Result<()>,
    ) -> Result<()> {
        if !self.lend {
            let e = self.translate(iova, is_write)?;
            return then(IommuMapping {
                target: &e.target,
                translated_addr: e.translated_addr,
                addr_mask: e.addr_mask,
                perm: e.perm,
            });
        }
        then(self.mapping(iova))
    }
}

/// Also only `translate`: the trait's default `with_translation`.
struct Defaulted(Swapper);

impl IommuOps for Defaulted {
    fn translate(&self, iova: GuestAddr, is_write: bool) -> Result<IommuTlbEntry> {
        self.0.translate(iova, is_write)
    }
}

#[test]
fn transfers_through_an_iommu_region_are_translated_page_by_page() -> TestResult {
    let _serial = SERIAL.lock();
    let ram_root = MemoryRegion::container("ram-root", None, FULL_SPACE)?;
    let block = RamBlock::anonymous("iommu-ram", 0x8000)?;
    ram_root.add_subregion(
        GuestAddr(0),
        &MemoryRegion::ram("iommu-ram", None, Arc::clone(&block), 0, 0x8000)?,
    )?;
    let target = AddressSpace::new("target", &ram_root);
    let swapper = |lend| Swapper {
        target: Arc::clone(&target),
        lend,
    };
    let ops: [Arc<dyn IommuOps>; 3] = [
        Arc::new(Defaulted(swapper(false))),
        Arc::new(swapper(false)),
        Arc::new(swapper(true)),
    ];
    for ops in ops {
        block.fill(0, 0x8000, 0)?;
        let root = MemoryRegion::container("bm", None, FULL_SPACE)?;
        root.add_subregion(GuestAddr(0), &MemoryRegion::iommu("swap", None, 0x8000, ops)?)?;
        let bus = AddressSpace::new("bm", &root);
        // 8 bytes straddling IOVA pages 0 and 1: the first half lands at
        // the end of page 1, the second at the start of page 0.
        bus.write(GuestAddr(0xffc), &[1, 2, 3, 4, 5, 6, 7, 8])?;
        let mut b = [0u8; 4];
        block.read(0x1ffc, &mut b)?;
        assert_eq!(b, [1, 2, 3, 4]);
        block.read(0, &mut b)?;
        assert_eq!(b, [5, 6, 7, 8]);
        let mut back = [0u8; 8];
        bus.read(GuestAddr(0xffc), &mut back)?;
        assert_eq!(back, [1, 2, 3, 4, 5, 6, 7, 8]);
        // A write where the mapping is read-only is refused.
        let err = bus
            .write(GuestAddr(0x4000), &[1])
            .err()
            .ok_or("a read-only page was written")?;
        assert!(matches!(err, Error::Translation { .. }), "{err}");
        bus.read(GuestAddr(0x4000), &mut b)?;
    }
    Ok(())
}
