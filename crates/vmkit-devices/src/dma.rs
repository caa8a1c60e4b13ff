//! How a device model reaches guest memory: through [`Dma`], which the
//! machine glue implements over the device's bus-master address space (so
//! through an IOMMU when one is in between), and tests over [`TestMemory`].

use std::sync::Mutex;

use vmkit_memory::{AddressSpace, GuestAddr, PinnedSpace};

/// A DMA access that failed: nothing there, not permitted, or a translation fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DMA {kind} of {len} bytes at {addr:#x}: {reason}")]
pub struct DmaError {
    /// `read` or `write`.
    pub kind: &'static str,
    /// Where.
    pub addr: u64,
    /// How many bytes.
    pub len: u64,
    /// Why.
    pub reason: String,
}

/// Guest memory as a device sees it. Little-endian helpers for the
/// descriptors, rings and tables devices read.
pub trait Dma {
    /// Reads `buf.len()` bytes at `addr`.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Writes `data` at `addr`.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError>;

    /// A little-endian u32 at `addr`.
    fn read_u32(&self, addr: u64) -> Result<u32, DmaError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A little-endian u64 at `addr`.
    fn read_u64(&self, addr: u64) -> Result<u64, DmaError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian u32 at `addr`.
    fn write_u32(&self, addr: u64, v: u32) -> Result<(), DmaError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Writes a little-endian u64 at `addr`.
    fn write_u64(&self, addr: u64, v: u64) -> Result<(), DmaError> {
        self.write(addr, &v.to_le_bytes())
    }

    /// The same memory with its map held for a burst of small reads (an
    /// IOMMU's page-table walk), if holding it saves anything: an address
    /// space then loads its flat view once instead of once per read.
    fn pinned(&self) -> Option<PinnedDma<'_>> {
        None
    }
}

/// An address space with its map held ([`Dma::pinned`]): reads go through
/// the held view (RAM and ROM only when `ram_only`), writes through the
/// memory it was taken from.
pub struct PinnedDma<'a> {
    space: PinnedSpace<'a>,
    ram_only: bool,
    writes: &'a dyn Dma,
}

impl std::fmt::Debug for PinnedDma<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedDma")
            .field("space", &self.space)
            .field("ram_only", &self.ram_only)
            .finish_non_exhaustive()
    }
}

impl<'a> PinnedDma<'a> {
    /// `space`'s reads (refused outside RAM and ROM when `ram_only`); its
    /// writes go to `writes`.
    pub fn new(space: PinnedSpace<'a>, ram_only: bool, writes: &'a dyn Dma) -> PinnedDma<'a> {
        PinnedDma {
            space,
            ram_only,
            writes,
        }
    }
}

impl Dma for PinnedDma<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len();
        let done = if self.ram_only {
            self.space.read_ram(GuestAddr(addr), buf)
        } else {
            self.space.read(GuestAddr(addr), buf)
        };
        done.map_err(|e| space_error("read", addr, len, &e))
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        self.writes.write(addr, data)
    }
}

/// An address space's failure as a [`DmaError`] of `kind` at `addr`.
fn space_error(kind: &'static str, addr: u64, len: usize, e: &vmkit_memory::Error) -> DmaError {
    DmaError {
        kind,
        addr,
        len: len as u64,
        reason: e.to_string(),
    }
}

/// Guest memory through an address space: a device's bus-master space in
/// the glue (through an IOMMU when one is in between), or the CPU's view
/// for a driver in tests and benchmarks.
impl Dma for AddressSpace {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len();
        AddressSpace::read(self, GuestAddr(addr), buf).map_err(|e| space_error("read", addr, len, &e))
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        AddressSpace::write(self, GuestAddr(addr), data).map_err(|e| space_error("write", addr, data.len(), &e))
    }

    fn pinned(&self) -> Option<PinnedDma<'_>> {
        Some(PinnedDma::new(AddressSpace::pinned(self), false, self))
    }
}

/// A borrowed [`Dma`] is one.
impl<T: Dma + ?Sized> Dma for &T {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        T::read(self, addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        T::write(self, addr, data)
    }

    fn pinned(&self) -> Option<PinnedDma<'_>> {
        T::pinned(self)
    }
}

/// Guest memory for tests: `size` bytes from address 0; accesses past the
/// end fail as unassigned memory would.
#[derive(Debug)]
pub struct TestMemory {
    bytes: Mutex<Vec<u8>>,
}

impl TestMemory {
    /// `size` zero bytes.
    pub fn new(size: usize) -> TestMemory {
        TestMemory {
            bytes: Mutex::new(vec![0; size]),
        }
    }

    fn range(
        &self,
        kind: &'static str,
        addr: u64,
        len: usize,
        size: usize,
    ) -> Result<std::ops::Range<usize>, DmaError> {
        let start = usize::try_from(addr).ok();
        match start.and_then(|s| s.checked_add(len).map(|e| s..e)) {
            Some(r) if r.end <= size => Ok(r),
            _ => Err(DmaError {
                kind,
                addr,
                len: len as u64,
                reason: "no memory there".into(),
            }),
        }
    }
}

impl Dma for TestMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let bytes = self.bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = self.range("read", addr, buf.len(), bytes.len())?;
        buf.copy_from_slice(&bytes[r]);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        let mut bytes = self.bytes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = self.range("write", addr, data.len(), bytes.len())?;
        bytes[r].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_memory_reads_back_and_refuses_past_the_end() {
        let m = TestMemory::new(0x100);
        assert!(m.write_u64(0xf8, 0x1122_3344_5566_7788).is_ok());
        assert_eq!(m.read_u32(0xfc), Ok(0x1122_3344));
        assert!(m.read_u32(0xfe).is_err());
        assert!(m.write(u64::MAX, &[1]).is_err());
    }
}
