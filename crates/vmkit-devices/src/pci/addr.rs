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

/// QEMU's `addr=` text: "SS" or "SS.F", both hexadecimal, read as QEMU
/// reads them (`sscanf` with `%x.%x`, else `%x`, and nothing after):
/// leading blanks, a sign and a `0x` prefix are taken, any number of
/// digits ("001" is slot 1, "0x18" slot 24); slot 0–31, function 0–7.
impl FromStr for DevFn {
    type Err = PciError;

    fn from_str(text: &str) -> Result<DevFn, PciError> {
        let bad = || PciError::BadAddress { text: text.to_owned() };
        let (slot, func, rest) = match scan_hex(text) {
            Some((slot, after)) => match after.strip_prefix('.').and_then(scan_hex) {
                Some((func, rest)) => (slot, func, rest),
                None => (slot, 0, after),
            },
            None => return Err(bad()),
        };
        if !rest.is_empty() || slot >= u32::from(Self::SLOTS) || func >= u32::from(Self::FUNCTIONS) {
            return Err(bad());
        }
        DevFn::new(slot as u8, func as u8).ok_or_else(bad)
    }
}

/// C's `%x` conversion: blanks, an optional sign, an optional `0x`, then
/// at least one hex digit, as an unsigned int (a minus sign negates it
/// modulo 2^32, an overflow saturates). The value and what follows.
fn scan_hex(text: &str) -> Option<(u32, &str)> {
    let t = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let hex_after_prefix = |rest: &str| rest.bytes().next().is_some_and(|b| b.is_ascii_hexdigit());
    let t = match t.get(..2) {
        Some("0x" | "0X") if hex_after_prefix(&t[2..]) => &t[2..],
        _ => t,
    };
    let digits = t.bytes().take_while(u8::is_ascii_hexdigit).count();
    if digits == 0 {
        return None;
    }
    let value = t[..digits].bytes().fold(0u64, |acc, b| {
        let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
        acc.saturating_mul(16).saturating_add(d)
    });
    let value = u32::try_from(value).unwrap_or(u32::MAX);
    Some((if negative { value.wrapping_neg() } else { value }, &t[digits..]))
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
        // As QEMU's sscanf reads them.
        assert_eq!("001".parse::<DevFn>(), Ok(DevFn::from_raw(0x08)));
        assert_eq!("0x18".parse::<DevFn>(), Ok(DevFn::from_raw(0xc0)));
        assert_eq!(" 3.1".parse::<DevFn>(), Ok(DevFn::from_raw(0x19)));
        assert_eq!("+3".parse::<DevFn>(), Ok(DevFn::from_raw(0x18)));
        for bad in [
            "",
            "20",
            "1.8",
            "x",
            "1.",
            ".1",
            "1.2.3",
            "-1",
            "3 ",
            "0x",
            "ffffffffff",
        ] {
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
