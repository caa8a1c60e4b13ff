//! Where a function sits on its bus.

use std::fmt;
use std::str::FromStr;

use super::error::PciError;

/// A device/function number on one bus: `slot << 3 | function`, slot
/// 0–31, function 0–7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevFn(u8);

impl DevFn {
    /// Functions per slot.
    pub const FUNCTIONS: u8 = 8;
    /// Slots per bus.
    pub const SLOTS: u8 = 32;

    /// Slot `slot`, function `func`; `None` if either is out of range.
    pub fn new(slot: u8, func: u8) -> Option<DevFn> {
        (slot < Self::SLOTS && func < Self::FUNCTIONS).then_some(DevFn(slot << 3 | func))
    }

    /// From the packed byte (every value is valid).
    pub const fn from_raw(devfn: u8) -> DevFn {
        DevFn(devfn)
    }

    /// The packed byte.
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The slot (device number).
    pub const fn slot(self) -> u8 {
        self.0 >> 3
    }

    /// The function number.
    pub const fn func(self) -> u8 {
        self.0 & 7
    }

    /// The requester id on bus `bus` (`bus << 8 | devfn`), as an IOMMU sees it.
    pub const fn requester_id(self, bus: u8) -> u16 {
        (bus as u16) << 8 | self.0 as u16
    }
}

/// QEMU's `addr=` text: "SS" or "SS.F", both hexadecimal.
impl FromStr for DevFn {
    type Err = PciError;

    fn from_str(text: &str) -> Result<DevFn, PciError> {
        let bad = || PciError::BadAddress { text: text.to_owned() };
        let (slot, func) = match text.split_once('.') {
            Some((s, f)) => (s, f),
            None => (text, "0"),
        };
        let hex = |s: &str| {
            if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u8::from_str_radix(s, 16).ok()
        };
        let (slot, func) = (hex(slot).ok_or_else(bad)?, hex(func).ok_or_else(bad)?);
        DevFn::new(slot, func).ok_or_else(bad)
    }
}

/// "SS.F" as `info pci` and `addr=` write it.
impl fmt::Display for DevFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}.{:x}", self.slot(), self.func())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemus_addr_syntax() {
        assert_eq!("1f.7".parse::<DevFn>(), Ok(DevFn::from_raw(0xff)));
        assert_eq!("3".parse::<DevFn>(), Ok(DevFn::from_raw(0x18)));
        assert_eq!("0a.1".parse::<DevFn>().map(|d| (d.slot(), d.func())), Ok((10, 1)));
        for bad in ["", "20", "1.8", "x", "1.", ".1", "001", "1.2.3", "-1"] {
            assert!(bad.parse::<DevFn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_and_packs() {
        let d = DevFn::new(2, 1).unwrap_or(DevFn::from_raw(0));
        assert_eq!(d.to_string(), "02.1");
        assert_eq!(d.raw(), 0x11);
        assert_eq!(d.requester_id(1), 0x0111);
        assert_eq!(DevFn::new(32, 0), None);
    }
}
