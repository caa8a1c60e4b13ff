//! Criterion benchmarks of the vmkit core live in `benches/`; this library
//! holds what they share.

use std::sync::Arc;

use vmkit_devices::dma::{Dma, DmaError, PinnedDma};
use vmkit_memory::{AddressSpace, FULL_SPACE, GuestAddr, MapOptions, MemoryRegion, RamBacking, RamBlock, RamOptions};

/// The target page size the benchmarks use.
pub const PAGE: u64 = 4096;

/// The value of a benchmark's setup step; a failure there aborts the run.
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark setup failed: {e}"))
}

/// A zero-filled anonymous block, prefaulted and on transparent huge pages,
/// as a long-running guest's RAM would be: the benchmarks then measure
/// copying and tracking, not first-touch page faults, and zero memory is
/// real memory rather than the kernel's shared zero page.
pub fn prefaulted_block(name: &str, size: u64) -> Arc<RamBlock> {
    let options = RamOptions {
        page_size: PAGE,
        map: MapOptions {
            populate: true,
            huge_pages: true,
        },
    };
    ok(RamBlock::with_options(name, size, RamBacking::Anonymous, options))
}

/// Guest RAM of `size` bytes at address 0 in an address space of its own,
/// on a prefaulted block.
pub fn ram_space(name: &str, size: u64) -> Arc<AddressSpace> {
    let root = ok(MemoryRegion::container(name, None, FULL_SPACE));
    let ram = ok(MemoryRegion::ram_block(None, prefaulted_block(name, size)));
    ok(root.add_subregion(GuestAddr(0), &ram));
    AddressSpace::new(name, &root)
}

/// A device's DMA through an address space, as the machine glue does it:
/// byte transfers through [`AddressSpace::read`] / [`AddressSpace::write`].
#[derive(Debug, Clone)]
pub struct SpaceDma(pub Arc<AddressSpace>);

impl Dma for SpaceDma {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        Dma::read(&*self.0, addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        Dma::write(&*self.0, addr, data)
    }

    fn pinned(&self) -> Option<PinnedDma<'_>> {
        Dma::pinned(&*self.0)
    }
}

/// Where the dispatch floor's register sits in the q35 board's PCI window
/// (below the BARs the benchmarks map).
pub const FLOOR_REGISTER: u64 = 0xfd00_0000;

/// A register that answers a constant and ignores writes: the MMIO
/// dispatch with nothing behind it, measured beside a device's register
/// in the same address space as that run's floor.
struct ConstRegister;

impl vmkit_memory::MmioOps for ConstRegister {
    fn read(&self, _offset: u64, _size: u32) -> vmkit_memory::Result<u64> {
        Ok(0x1234_5678)
    }

    fn write(&self, _offset: u64, _size: u32, _value: u64) -> vmkit_memory::Result<()> {
        Ok(())
    }
}

/// Maps a [`ConstRegister`] page at [`FLOOR_REGISTER`] in `container`.
pub fn map_floor_register(container: &MemoryRegion) -> MemoryRegion {
    let region = ok(MemoryRegion::mmio(
        "floor-register",
        None,
        PAGE,
        Arc::new(ConstRegister),
    ));
    ok(container.add_subregion(GuestAddr(FLOOR_REGISTER), &region));
    region
}
