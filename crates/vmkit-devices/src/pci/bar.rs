//! Base address registers: what a device declares, how a guest sizes them,
//! and where (if anywhere) they are mapped.

use super::error::PciError;

/// A BAR slot: 0–5, or [`BarIndex::ROM`] for the expansion ROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BarIndex(u8);

impl BarIndex {
    /// The expansion ROM's slot.
    pub const ROM: BarIndex = BarIndex(6);
    /// Every slot, ROM last.
    pub const ALL: [BarIndex; 7] = [
        BarIndex(0),
        BarIndex(1),
        BarIndex(2),
        BarIndex(3),
        BarIndex(4),
        BarIndex(5),
        BarIndex::ROM,
    ];

    /// BAR `n` (0–5); `None` otherwise (use [`BarIndex::ROM`] for the ROM).
    pub const fn new(n: u8) -> Option<BarIndex> {
        if n < 6 { Some(BarIndex(n)) } else { None }
    }

    /// The slot number (6 for the ROM).
    pub const fn number(self) -> u8 {
        self.0
    }

    /// The configuration-space offset of its (low) dword.
    pub const fn offset(self) -> usize {
        if self.0 == 6 { 0x30 } else { 0x10 + 4 * self.0 as usize }
    }
}

/// What kind of space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB (one dword).
    Mem32,
    /// Memory anywhere (two dwords: this slot and the next).
    Mem64,
}

/// The address space a BAR is mapped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarSpace {
    /// The bus's I/O space.
    Io,
    /// The bus's memory space.
    Memory,
}

/// A BAR as the device declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bar {
    /// Its kind (the ROM is always [`BarKind::Mem32`]).
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Bytes: a power of two, at least 4 for I/O and 16 for memory.
    pub size: u64,
}

/// Low flag bits of an I/O BAR.
const IO_SPACE: u32 = 0x1;
/// Memory BAR type bits: 64-bit.
const MEM_TYPE_64: u32 = 0x4;
/// Memory BAR: prefetchable.
const MEM_PREFETCH: u32 = 0x8;
/// The ROM BAR's enable bit.
pub const ROM_ENABLE: u32 = 0x1;

impl Bar {
    /// A 32-bit memory BAR of `size` bytes.
    pub const fn mem32(size: u64) -> Bar {
        Bar {
            kind: BarKind::Mem32,
            prefetchable: false,
            size,
        }
    }

    /// A 64-bit memory BAR of `size` bytes.
    pub const fn mem64(size: u64) -> Bar {
        Bar {
            kind: BarKind::Mem64,
            prefetchable: false,
            size,
        }
    }

    /// An I/O BAR of `size` bytes.
    pub const fn io(size: u64) -> Bar {
        Bar {
            kind: BarKind::Io,
            prefetchable: false,
            size,
        }
    }

    /// Checks the size and slot.
    pub fn check(&self, index: BarIndex) -> Result<(), PciError> {
        let bad = |reason: String| PciError::BadBar {
            index: index.number(),
            reason,
        };
        let min = if self.kind == BarKind::Io { 4 } else { 16 };
        if !self.size.is_power_of_two() || self.size < min {
            return Err(bad(format!(
                "size {:#x} is not a power of two of at least {min}",
                self.size
            )));
        }
        match self.kind {
            BarKind::Io if self.size > 1 << 16 => Err(bad("an I/O BAR spans at most 64 KiB".into())),
            BarKind::Io if index == BarIndex::ROM => Err(bad("the expansion ROM is memory".into())),
            BarKind::Mem32 if self.size > 1 << 31 => Err(bad("a 32-bit BAR spans at most 2 GiB".into())),
            BarKind::Mem64 if index == BarIndex::ROM || index.number() == 5 => {
                Err(bad("a 64-bit BAR needs the next slot for its high dword".into()))
            }
            _ => Ok(()),
        }
    }

    /// The space it decodes.
    pub const fn space(&self) -> BarSpace {
        match self.kind {
            BarKind::Io => BarSpace::Io,
            BarKind::Mem32 | BarKind::Mem64 => BarSpace::Memory,
        }
    }

    /// The flag bits it reads back with (its value after reset).
    pub fn type_bits(&self, index: BarIndex) -> u32 {
        if index == BarIndex::ROM {
            return 0;
        }
        match self.kind {
            BarKind::Io => IO_SPACE,
            BarKind::Mem32 => u32::from(self.prefetchable) * MEM_PREFETCH,
            BarKind::Mem64 => MEM_TYPE_64 | (u32::from(self.prefetchable) * MEM_PREFETCH),
        }
    }

    /// The guest-writable bits (QEMU's `wmask`): the address bits above the
    /// size, so the all-ones probe reads back `~(size - 1)` and the type.
    /// 64 bits wide for a 64-bit BAR; the ROM's enable bit is writable.
    pub fn write_mask(&self, index: BarIndex) -> u64 {
        let mask = !(self.size - 1);
        match (index == BarIndex::ROM, self.kind) {
            (true, _) => (mask & 0xffff_ffff) | u64::from(ROM_ENABLE),
            (false, BarKind::Mem64) => mask,
            (false, _) => mask & 0xffff_ffff,
        }
    }

    /// Where the BAR is mapped given its register value and Command's
    /// IO/MEMORY bits, by QEMU's rule (`pci_bar_address`): `None` when
    /// decoding is off, the ROM is not enabled, the address is 0, the range
    /// wraps, or it does not fit the BAR's kind (I/O and 32-bit memory
    /// below 4 GiB).
    pub fn address(&self, index: BarIndex, value: u64, io_on: bool, mem_on: bool) -> Option<u64> {
        let on = match self.space() {
            BarSpace::Io => io_on,
            BarSpace::Memory => mem_on,
        };
        if !on || (index == BarIndex::ROM && value & u64::from(ROM_ENABLE) == 0) {
            return None;
        }
        let addr = value & !(self.size - 1);
        let last = addr.checked_add(self.size - 1)?;
        if addr == 0 || last <= addr || last == u64::MAX {
            return None;
        }
        let below_4g = matches!(self.kind, BarKind::Io | BarKind::Mem32) || index == BarIndex::ROM;
        if below_4g && last >= u64::from(u32::MAX) {
            return None;
        }
        Some(addr)
    }
}

/// A change of where a BAR is mapped, as a configuration write or reset
/// returns it: the owner removes `from` (if any) and adds `to` (if any).
/// Removals come before additions in the list, so two BARs swapping
/// addresses never overlap in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarMove {
    /// Which BAR.
    pub index: BarIndex,
    /// Its space.
    pub space: BarSpace,
    /// Its size.
    pub size: u64,
    /// Where it was mapped.
    pub from: Option<u64>,
    /// Where it is mapped now.
    pub to: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_slots_are_checked() {
        let b0 = BarIndex::new(0).unwrap_or(BarIndex::ROM);
        assert!(Bar::mem32(0x1000).check(b0).is_ok());
        assert!(Bar::mem32(0x1800).check(b0).is_err());
        assert!(Bar::io(2).check(b0).is_err());
        assert!(Bar::mem64(0x4000).check(BarIndex::new(5).unwrap_or(b0)).is_err());
        assert!(Bar::io(0x20).check(BarIndex::ROM).is_err());
    }

    #[test]
    fn the_mapping_rule() {
        let b0 = BarIndex::new(0).unwrap_or(BarIndex::ROM);
        let bar = Bar::mem32(0x1000);
        assert_eq!(bar.address(b0, 0xfebf_0000, false, true), Some(0xfebf_0000));
        assert_eq!(bar.address(b0, 0xfebf_0123, false, true), Some(0xfebf_0000));
        assert_eq!(bar.address(b0, 0xfebf_0000, true, false), None, "MEMORY off");
        assert_eq!(bar.address(b0, 0, false, true), None, "address 0");
        assert_eq!(bar.address(b0, 0xffff_f000, false, true), None, "ends at 4 GiB");
        let wide = Bar::mem64(0x4000);
        assert_eq!(wide.address(b0, 0x8_0000_0000, false, true), Some(0x8_0000_0000));
        assert_eq!(wide.address(b0, 0xffff_ffff_ffff_c000, false, true), None);
        let rom = Bar::mem32(0x8000);
        assert_eq!(
            rom.address(BarIndex::ROM, 0xfeb0_0000, false, true),
            None,
            "not enabled"
        );
        assert_eq!(rom.address(BarIndex::ROM, 0xfeb0_0001, false, true), Some(0xfeb0_0000));
        let io = Bar::io(0x20);
        assert_eq!(io.address(b0, 0xc001, true, false), Some(0xc000));
    }
}
