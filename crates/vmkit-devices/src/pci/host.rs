//! How a guest reaches configuration space: the 0xCF8/0xCFC port pair and
//! the memory-mapped ECAM window (MMCONFIG).

use super::addr::DevFn;

/// A configuration access target: bus, device/function and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfigAddress {
    /// Bus number.
    pub bus: u8,
    /// Device and function.
    pub devfn: DevFn,
    /// Byte offset in the function's configuration space.
    pub offset: u16,
}

/// The I/O port of the address register.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// The first I/O port of the data window (0xCFC–0xCFF).
pub const CONFIG_DATA_PORT: u16 = 0xcfc;
/// q35's ECAM window: at 0xb000_0000, 256 MiB (buses 0–255).
pub const Q35_ECAM_BASE: u64 = 0xb000_0000;
/// Its size.
pub const Q35_ECAM_SIZE: u64 = 256 << 20;

/// The 0xCF8 address register: bit 31 enables, bus in 23:16, device and
/// function in 15:8, the dword offset in 7:2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConfigAddressRegister(u32);

impl ConfigAddressRegister {
    /// A write to 0xCF8: only a whole dword counts, as on QEMU's host
    /// bridges (byte writes there are other chipset registers).
    pub fn write(&mut self, size: u8, value: u32) {
        if size == 4 {
            self.0 = value;
        }
    }

    /// What a dword read of 0xCF8 returns.
    pub fn read(&self) -> u32 {
        self.0
    }

    /// The target of a data access at 0xCFC + `data_offset` (0–3), or
    /// `None` while the enable bit is clear (reads then return all ones).
    pub fn target(&self, data_offset: u8) -> Option<ConfigAddress> {
        if self.0 & 1 << 31 == 0 {
            return None;
        }
        Some(ConfigAddress {
            bus: (self.0 >> 16) as u8,
            devfn: DevFn::from_raw((self.0 >> 8) as u8),
            offset: (self.0 & 0xfc) as u16 | u16::from(data_offset & 3),
        })
    }
}

/// The target of an access at `offset` into an ECAM window: bus in bits
/// 27:20, device and function in 19:12, the byte offset in 11:0.
pub fn ecam_target(offset: u64) -> ConfigAddress {
    ConfigAddress {
        bus: (offset >> 20) as u8,
        devfn: DevFn::from_raw((offset >> 12) as u8),
        offset: (offset & 0xfff) as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cf8_decodes_as_a_guest_programs_it() {
        let mut reg = ConfigAddressRegister::default();
        assert_eq!(reg.target(0), None);
        reg.write(4, 0x8000_0810 | 0x01 << 16);
        let t = reg.target(2);
        assert_eq!(
            t.map(|t| (t.bus, t.devfn.slot(), t.devfn.func(), t.offset)),
            Some((1, 1, 0, 0x12))
        );
        reg.write(1, 0);
        assert_eq!(reg.read(), 0x8001_0810, "a byte write leaves the register");
    }

    #[test]
    fn ecam_decodes_bus_device_function_and_offset() {
        let t = ecam_target(0x0010_a104);
        assert_eq!((t.bus, t.devfn.slot(), t.devfn.func(), t.offset), (1, 1, 2, 0x104));
    }
}
