//! Guest addresses and address ranges, with arithmetic that says how it overflows.

use std::fmt;

use crate::error::{Error, Result};

/// An address in a guest address space (or an offset inside a region).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestAddr(pub u64);

impl GuestAddr {
    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + by`, or `None` on overflow.
    #[inline]
    pub fn checked_add(self, by: u64) -> Option<GuestAddr> {
        self.0.checked_add(by).map(GuestAddr)
    }

    /// `self - base`, or `None` if `base` is above `self`.
    #[inline]
    pub fn checked_offset_from(self, base: GuestAddr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    #[inline]
    pub fn is_aligned(self, align: u64) -> bool {
        align != 0 && self.0 & (align - 1) == 0
    }
}

impl fmt::Display for GuestAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for GuestAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A non-empty range `[start, start + size)` that lies within the 64-bit
/// address space. A range may end exactly at 2^64 (a region covering the
/// whole space), so the end is kept as a `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrRange {
    start: GuestAddr,
    size: u64,
    /// Set for the one range whose size does not fit a `u64`: all of 2^64.
    full: bool,
}

impl AddrRange {
    /// The range `[start, start + size)`; refused when `size` is zero or the end passes 2^64.
    pub fn new(start: GuestAddr, size: u64) -> Result<AddrRange> {
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if u128::from(start.0) + u128::from(size) > 1u128 << 64 {
            return Err(Error::Overflow {
                addr: start,
                size: u128::from(size),
            });
        }
        Ok(AddrRange {
            start,
            size,
            full: false,
        })
    }

    /// The whole 64-bit space.
    pub const fn everything() -> AddrRange {
        AddrRange {
            start: GuestAddr(0),
            size: u64::MAX,
            full: true,
        }
    }

    /// The first address.
    #[inline]
    pub fn start(&self) -> GuestAddr {
        self.start
    }

    /// The size in bytes (2^64 for [`AddrRange::everything`]).
    #[inline]
    pub fn size(&self) -> u128 {
        if self.full { 1u128 << 64 } else { u128::from(self.size) }
    }

    /// One past the last address.
    #[inline]
    pub fn end(&self) -> u128 {
        u128::from(self.start.0) + self.size()
    }

    /// The last address.
    #[inline]
    pub fn last(&self) -> GuestAddr {
        // A range is never empty, so end - 1 fits in a u64.
        GuestAddr(u64::try_from(self.end() - 1).unwrap_or(u64::MAX))
    }

    /// Whether `addr` is in the range.
    #[inline]
    pub fn contains(&self, addr: GuestAddr) -> bool {
        addr >= self.start && u128::from(addr.0) < self.end()
    }

    /// The overlap of two ranges, if any.
    pub fn intersect(&self, other: &AddrRange) -> Option<AddrRange> {
        let start = self.start.0.max(other.start.0);
        let end = self.end().min(other.end());
        if u128::from(start) >= end {
            return None;
        }
        Some(Self::from_bounds(start, end))
    }

    /// The range `[start, end)` for `start < end <= 2^64`.
    pub(crate) fn from_bounds(start: u64, end: u128) -> AddrRange {
        let size = end - u128::from(start);
        match u64::try_from(size) {
            Ok(size) => AddrRange {
                start: GuestAddr(start),
                size,
                full: false,
            },
            Err(_) => AddrRange::everything(),
        }
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.start.0, self.last().0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(AddrRange::new(GuestAddr(0), 0).is_err());
        assert!(AddrRange::new(GuestAddr(u64::MAX), 2).is_err());
        let top = AddrRange::new(GuestAddr(u64::MAX), 1).map(|r| r.last());
        assert_eq!(top.ok(), Some(GuestAddr(u64::MAX)));
        let all = AddrRange::everything();
        assert_eq!(all.size(), 1 << 64);
        assert_eq!(all.last(), GuestAddr(u64::MAX));
        let a = AddrRange::new(GuestAddr(0x1000), 0x1000).ok();
        let b = AddrRange::new(GuestAddr(0x1800), 0x1000).ok();
        let i = a.zip(b).and_then(|(a, b)| a.intersect(&b));
        assert_eq!(i.map(|r| (r.start(), r.size())), Some((GuestAddr(0x1800), 0x800)));
        assert_eq!(
            a.map(|r| r.to_string()).as_deref(),
            Some("0000000000001000-0000000000001fff")
        );
    }
}
