//! A PC board's memory map assembled from a RAM backend, the way QEMU's q35
//! machine builds it: the backend's block is one RAM region (`pc.ram`, not
//! placed itself), shown through two aliases — `ram-below-4g` at 0 and, when
//! RAM does not fit below the PCI hole, `ram-above-4g` at 4 GiB.

use std::sync::Arc;

use crate::addr::GuestAddr;
use crate::address_space::AddressSpace;
use crate::error::Result;
use crate::ram::RamBlock;
use crate::region::{FULL_SPACE, MemoryRegion};

/// Where RAM above the low limit continues.
pub const FOUR_GIB: u64 = 1 << 32;

/// q35's low-memory limit: 2 GiB when RAM is at least 2.75 GiB, else 2.75 GiB
/// (the rest of the low 4 GiB is the PCI/MMIO hole).
pub fn q35_lowmem_limit(ram_size: u64) -> u64 {
    if ram_size >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    }
}

/// The memory map of a PC board.
#[derive(Clone)]
pub struct PcMemory {
    /// The root container, `system`, covering the 64-bit space.
    pub system: MemoryRegion,
    /// The RAM region over the whole backend block (alias target).
    pub ram: MemoryRegion,
    /// `ram-below-4g`.
    pub below_4g: MemoryRegion,
    /// `ram-above-4g`, when RAM exceeds the low limit.
    pub above_4g: Option<MemoryRegion>,
    /// The `memory` address space over `system`.
    pub space: Arc<AddressSpace>,
}

impl PcMemory {
    /// Builds the map over `block`, with `owner` (usually the machine) owning the regions.
    pub fn new(block: Arc<RamBlock>, owner: Option<&vmkit_qom::Object>) -> Result<PcMemory> {
        let size = block.used_length();
        let low = size.min(q35_lowmem_limit(size));
        let system = MemoryRegion::container("system", owner, FULL_SPACE)?;
        let ram = MemoryRegion::ram_block(owner, block)?;
        let below_4g = MemoryRegion::alias("ram-below-4g", owner, &ram, 0, low)?;
        let above_4g = if size > low {
            Some(MemoryRegion::alias("ram-above-4g", owner, &ram, low, size - low)?)
        } else {
            None
        };
        crate::topology::transaction(|| -> Result<()> {
            system.add_subregion(GuestAddr(0), &below_4g)?;
            if let Some(above) = &above_4g {
                system.add_subregion(GuestAddr(FOUR_GIB), above)?;
            }
            Ok(())
        })?;
        let space = AddressSpace::new("memory", &system);
        Ok(PcMemory {
            system,
            ram,
            below_4g,
            above_4g,
            space,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_around_the_pci_hole() -> Result<()> {
        assert_eq!(q35_lowmem_limit(1 << 30), 0xb000_0000);
        assert_eq!(q35_lowmem_limit(4 << 30), 0x8000_0000);
        let small = PcMemory::new(RamBlock::anonymous("pc.ram", 64 << 20)?, None)?;
        assert!(small.above_4g.is_none());
        assert_eq!(small.below_4g.size(), 64 << 20);
        // 3 GiB of RAM (reserved, not touched): 2 GiB low, 1 GiB above 4 GiB.
        let big = PcMemory::new(RamBlock::anonymous("pc.ram", 3 << 30)?, None)?;
        let above = big.above_4g.clone().map(|r| (r.address(), r.size()));
        assert_eq!(above, Some((Some(GuestAddr(FOUR_GIB)), 1 << 30)));
        big.space.write(GuestAddr(FOUR_GIB + 8), b"high")?;
        let mut buf = [0u8; 4];
        if let crate::region::RegionKind::Ram { block, .. } = big.ram.kind() {
            block.read(0x8000_0000 + 8, &mut buf)?;
        }
        assert_eq!(&buf, b"high");
        let text = crate::mtree::mtree(std::slice::from_ref(&big.space));
        assert!(
            text.contains("(prio 0, i/o): alias ram-above-4g @pc.ram 0000000080000000-00000000bfffffff"),
            "{text}"
        );
        assert!(text.contains("memory-region: pc.ram\n"), "{text}");
        Ok(())
    }
}
