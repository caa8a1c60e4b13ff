//! Building translation structures in guest memory for tests: a root
//! table, context tables and second-level page tables, allocated page by
//! page from a base address.

use crate::dma::{Dma, DmaError};

use super::tables::{ContextEntry, Perm, SourceId, level_shift};

/// Paging entry: page size.
const PS: u64 = 1 << 7;

/// Writes translation structures into `mem`: the root table at `base`,
/// every further table in the next free 4 KiB page.
pub struct TableBuilder<'a> {
    mem: &'a dyn Dma,
    root: u64,
    next_free: u64,
}

impl<'a> TableBuilder<'a> {
    /// A builder whose root table is at `base` (4 KiB aligned).
    pub fn new(mem: &'a dyn Dma, base: u64) -> TableBuilder<'a> {
        TableBuilder {
            mem,
            root: base & !0xfff,
            next_free: (base & !0xfff) + 0x1000,
        }
    }

    /// The root table's address (for RTADDR).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// A fresh zeroed 4 KiB page.
    pub fn alloc(&mut self) -> Result<u64, DmaError> {
        let page = self.next_free;
        self.next_free += 0x1000;
        self.mem.write(page, &[0; 0x1000])?;
        Ok(page)
    }

    /// Where `source`'s context entry lives, creating its bus's context
    /// table (and a present root entry) if need be.
    pub fn context_slot(&mut self, source: SourceId) -> Result<u64, DmaError> {
        let root_entry = self.root + u64::from(source.bus()) * 16;
        let mut table = self.mem.read_u64(root_entry)?;
        if table & 1 == 0 {
            table = self.alloc()? | 1;
            self.mem.write_u64(root_entry, table)?;
            self.mem.write_u64(root_entry + 8, 0)?;
        }
        Ok((table & !0xfff) + u64::from(source.devfn()) * 16)
    }

    /// Writes `source`'s context entry.
    pub fn set_context(&mut self, source: SourceId, entry: ContextEntry) -> Result<(), DmaError> {
        let slot = self.context_slot(source)?;
        self.mem.write_u64(slot, entry.lo)?;
        self.mem.write_u64(slot + 8, entry.hi)
    }

    /// Maps `iova` to `addr` in the `levels`-level table at `table` with a
    /// leaf at `leaf_level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) carrying `perm`;
    /// missing intermediate tables are allocated with read and write.
    pub fn map(
        &mut self,
        table: u64,
        levels: u8,
        iova: u64,
        addr: u64,
        leaf_level: u8,
        perm: Perm,
    ) -> Result<(), DmaError> {
        let mut t = table;
        for level in (leaf_level + 1..=levels).rev() {
            let slot = Self::slot(t, level, iova);
            let mut pte = self.mem.read_u64(slot)?;
            if pte & 3 == 0 {
                pte = self.alloc()? | 3;
                self.mem.write_u64(slot, pte)?;
            }
            t = pte & 0x000f_ffff_ffff_f000;
        }
        let mut leaf = (addr & !0xfff) | u64::from(perm.bits());
        if leaf_level > 1 {
            leaf |= PS;
        }
        self.mem.write_u64(Self::slot(t, leaf_level, iova), leaf)
    }

    /// The address of the entry for `iova` at `level`, following the
    /// existing tables from `table` (`levels` deep); `None` if a table on
    /// the way is missing.
    pub fn entry_address(&self, table: u64, levels: u8, iova: u64, level: u8) -> Result<Option<u64>, DmaError> {
        let mut t = table;
        for l in (level + 1..=levels).rev() {
            let pte = self.mem.read_u64(Self::slot(t, l, iova))?;
            if pte & 3 == 0 {
                return Ok(None);
            }
            t = pte & 0x000f_ffff_ffff_f000;
        }
        Ok(Some(Self::slot(t, level, iova)))
    }

    fn slot(table: u64, level: u8, iova: u64) -> u64 {
        table + ((iova >> level_shift(level)) & 0x1ff) * 8
    }
}
