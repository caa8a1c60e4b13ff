//! MMIO and IOMMU callbacks, access constraints, and how an access of one
//! size is split or widened into the sizes a device implements — the rules
//! of QEMU's `memory_region_access_valid` and `access_with_adjusted_size`.

use std::sync::Arc;

use crate::addr::GuestAddr;
use crate::address_space::AddressSpace;
use crate::error::{Error, Result};

/// Byte order of a device's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Endianness {
    /// Little-endian (most PCI devices).
    #[default]
    Little,
    /// Big-endian.
    Big,
}

/// What accesses a region accepts (`valid`) and what its callbacks implement (`implemented`).
///
/// Defaults are QEMU's: any size from 1 to 8 is valid (`valid_max == 0`
/// means "everything valid"), aligned only; callbacks implement 1 to 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessConstraints {
    /// Smallest valid access in bytes (0 = 1).
    pub valid_min: u32,
    /// Largest valid access in bytes; 0 means every size is valid.
    pub valid_max: u32,
    /// Whether unaligned accesses are valid.
    pub valid_unaligned: bool,
    /// Smallest access the callbacks implement (0 = 1): smaller accesses are widened.
    pub impl_min: u32,
    /// Largest access the callbacks implement (0 = 4): larger accesses are split.
    pub impl_max: u32,
    /// Register byte order, used to place split or widened pieces.
    pub endianness: Endianness,
}

impl Default for AccessConstraints {
    fn default() -> Self {
        AccessConstraints {
            valid_min: 1,
            valid_max: 0,
            valid_unaligned: false,
            impl_min: 1,
            impl_max: 4,
            endianness: Endianness::Little,
        }
    }
}

fn size_ok(s: u32) -> bool {
    matches!(s, 0 | 1 | 2 | 4 | 8)
}

impl AccessConstraints {
    /// Checks the constraints themselves (sizes are 0, 1, 2, 4 or 8; min ≤ max).
    pub fn check(&self) -> std::result::Result<(), String> {
        for (what, v) in [
            ("valid_min", self.valid_min),
            ("valid_max", self.valid_max),
            ("impl_min", self.impl_min),
            ("impl_max", self.impl_max),
        ] {
            if !size_ok(v) {
                return Err(format!("{what} must be 0, 1, 2, 4 or 8 (got {v})"));
            }
        }
        if self.valid_max != 0 && self.valid_min.max(1) > self.valid_max {
            return Err("valid_min is greater than valid_max".into());
        }
        if self.impl_min.max(1) > self.impl_max_eff() {
            return Err("impl_min is greater than impl_max".into());
        }
        Ok(())
    }

    #[inline]
    fn impl_min_eff(&self) -> u32 {
        self.impl_min.max(1)
    }

    #[inline]
    fn impl_max_eff(&self) -> u32 {
        if self.impl_max == 0 { 4 } else { self.impl_max }
    }

    /// Whether an access of `size` bytes at `offset` is valid: the
    /// allocation-free check of the dispatch fast path; [`AccessConstraints::validate`]
    /// says why not.
    #[inline]
    pub(crate) fn is_valid(&self, offset: u64, size: u32) -> bool {
        matches!(size, 1 | 2 | 4 | 8)
            && (self.valid_unaligned || offset & (u64::from(size) - 1) == 0)
            && (self.valid_max == 0 || (size <= self.valid_max && size >= self.valid_min.max(1)))
    }

    /// Whether an access of `size` bytes at `offset` is valid; else why not.
    pub fn validate(&self, offset: u64, size: u32) -> std::result::Result<(), String> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(format!("access size {size} is not 1, 2, 4 or 8"));
        }
        if !self.valid_unaligned && offset & (u64::from(size) - 1) != 0 {
            return Err("unaligned access".into());
        }
        if self.valid_max == 0 {
            return Ok(());
        }
        if size > self.valid_max || size < self.valid_min.max(1) {
            return Err(format!(
                "size {size} is outside the valid {}..={} bytes",
                self.valid_min.max(1),
                self.valid_max
            ));
        }
        Ok(())
    }

    /// The largest access a byte-range transfer may issue at `addr` with
    /// `remaining` bytes left (QEMU's `memory_access_size`).
    pub fn transfer_size(&self, addr: u64, remaining: u64) -> u32 {
        let max = if self.valid_max == 0 { 4 } else { self.valid_max };
        let mut l = remaining.min(u64::from(max));
        // QEMU bounds the access by the address's alignment unless
        // `impl.unaligned` is set — not `valid.unaligned`: a device that
        // accepts unaligned accesses still gets aligned pieces from DMA. We do
        // not model `impl.unaligned` (QEMU's default, false), so always bound.
        if addr != 0 {
            l = l.min(1u64 << addr.trailing_zeros().min(63));
        }
        // Round down to a power of two.
        let l = 1u64 << (63 - l.max(1).leading_zeros());
        u32::try_from(l).unwrap_or(1)
    }
}

/// Register access callbacks of an MMIO region. Offsets are relative to the region.
pub trait MmioOps: Send + Sync {
    /// Reads `size` bytes (1, 2, 4 or 8, within `constraints().impl_*`) at `offset`.
    fn read(&self, offset: u64, size: u32) -> Result<u64>;
    /// Writes the low `size` bytes of `value` at `offset`.
    fn write(&self, offset: u64, size: u32, value: u64) -> Result<()>;
    /// What accesses are valid and implemented.
    fn constraints(&self) -> AccessConstraints {
        AccessConstraints::default()
    }
}

/// Access permissions of an IOMMU translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuPerm {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
}

/// The result of an IOMMU translation (QEMU's `IOMMUTLBEntry`).
#[derive(Clone)]
pub struct IommuTlbEntry {
    /// Where the translated access continues.
    pub target: Arc<AddressSpace>,
    /// The translated address of `iova & !addr_mask`.
    pub translated_addr: GuestAddr,
    /// The page mask: the translation covers `addr_mask + 1` bytes.
    pub addr_mask: u64,
    /// What the mapping allows.
    pub perm: IommuPerm,
}

/// Translation callbacks of an IOMMU region (the intel-iommu device plugs in here).
pub trait IommuOps: Send + Sync {
    /// Translates `iova` (relative to the region) for a read or a write.
    fn translate(&self, iova: GuestAddr, is_write: bool) -> Result<IommuTlbEntry>;
}

#[inline]
fn mask(bytes: u32) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1u64 << (bytes * 8)) - 1
    }
}

/// Performs a validated `size`-byte read through `ops`, splitting it into or
/// widening it to the implemented sizes, assembling pieces in the device's
/// byte order.
#[inline]
pub fn read_adjusted(ops: &dyn MmioOps, c: &AccessConstraints, offset: u64, size: u32) -> Result<u64> {
    let access = size.min(c.impl_max_eff()).max(c.impl_min_eff());
    if access == size {
        // The common case: one piece, at shift 0 in either byte order.
        return Ok(ops.read(offset, size)? & mask(size));
    }
    read_pieces(ops, c, offset, size, access)
}

fn read_pieces(ops: &dyn MmioOps, c: &AccessConstraints, offset: u64, size: u32, access: u32) -> Result<u64> {
    let m = mask(access);
    let mut value = 0u64;
    let mut i = 0u32;
    while i < size {
        let piece = ops.read(offset + u64::from(i), access)? & m;
        value |= shift_piece(piece, piece_shift(c.endianness, size, access, i));
        i += access;
    }
    Ok(value & mask(size))
}

/// Where the piece at `i` of an `access`-byte implementation sits in a
/// `size`-byte value, in bits (QEMU's signed `shift`). Negative only for a
/// big-endian access widened to `access > size`: the bytes asked for are the
/// most significant ones of the piece, so the piece is shifted right (a read)
/// or the value left (a write) — QEMU's `memory_region_shift_{read,write}_access`.
fn piece_shift(endianness: Endianness, size: u32, access: u32, i: u32) -> i64 {
    let (size, access, i) = (i64::from(size), i64::from(access), i64::from(i));
    match endianness {
        Endianness::Little => i * 8,
        Endianness::Big => (size - access - i) * 8,
    }
}

/// `v << shift` for a positive shift, `v >> -shift` for a negative one; bits
/// shifted 64 or more places out are gone.
fn shift_piece(v: u64, shift: i64) -> u64 {
    let by = u32::try_from(shift.unsigned_abs()).unwrap_or(u32::MAX);
    if shift >= 0 {
        v.checked_shl(by).unwrap_or(0)
    } else {
        v.checked_shr(by).unwrap_or(0)
    }
}

/// Performs a validated `size`-byte write through `ops` (see [`read_adjusted`]).
/// A write narrower than the implemented minimum is widened with zeros, as QEMU does
/// (for a big-endian device, the value fills the piece's most significant bytes).
#[inline]
pub fn write_adjusted(ops: &dyn MmioOps, c: &AccessConstraints, offset: u64, size: u32, value: u64) -> Result<()> {
    let access = size.min(c.impl_max_eff()).max(c.impl_min_eff());
    let value = value & mask(size);
    if access == size {
        return ops.write(offset, size, value);
    }
    write_pieces(ops, c, offset, size, access, value)
}

fn write_pieces(
    ops: &dyn MmioOps,
    c: &AccessConstraints,
    offset: u64,
    size: u32,
    access: u32,
    value: u64,
) -> Result<()> {
    let m = mask(access);
    let mut i = 0u32;
    while i < size {
        let piece = shift_piece(value, -piece_shift(c.endianness, size, access, i)) & m;
        ops.write(offset + u64::from(i), access, piece)?;
        i += access;
    }
    Ok(())
}

/// An invalid-access error for region `name`.
pub(crate) fn invalid(name: &str, offset: u64, size: u32, reason: String) -> Error {
    Error::InvalidAccess {
        region: name.to_string(),
        addr: GuestAddr(offset),
        len: u64::from(size),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Records accesses; reads return bytes `offset, offset+1, ...`.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(char, u64, u32, u64)>>,
        c: Option<AccessConstraints>,
    }

    impl MmioOps for Recorder {
        fn read(&self, offset: u64, size: u32) -> Result<u64> {
            let mut v = 0u64;
            for i in 0..size {
                v |= ((offset + u64::from(i)) & 0xff) << (8 * i);
            }
            self.log.lock().push(('r', offset, size, v));
            Ok(v)
        }
        fn write(&self, offset: u64, size: u32, value: u64) -> Result<()> {
            self.log.lock().push(('w', offset, size, value));
            Ok(())
        }
        fn constraints(&self) -> AccessConstraints {
            self.c.unwrap_or_default()
        }
    }

    #[test]
    fn split_wide_reads_little_endian() -> Result<()> {
        let r = Recorder::default();
        let c = AccessConstraints {
            impl_max: 2,
            ..Default::default()
        };
        assert_eq!(read_adjusted(&r, &c, 0x10, 8)?, 0x1716_1514_1312_1110);
        assert_eq!(
            r.log.lock().iter().map(|e| (e.1, e.2)).collect::<Vec<_>>(),
            vec![(0x10, 2), (0x12, 2), (0x14, 2), (0x16, 2)]
        );
        Ok(())
    }

    #[test]
    fn split_big_endian_places_pieces_reversed() -> Result<()> {
        let r = Recorder::default();
        let c = AccessConstraints {
            impl_max: 1,
            endianness: Endianness::Big,
            ..Default::default()
        };
        // Pieces read at 0,1,2,3 land most-significant first.
        assert_eq!(read_adjusted(&r, &c, 0, 4)?, 0x0001_0203);
        write_adjusted(&r, &c, 0, 2, 0xaabb)?;
        let log = r.log.lock();
        assert_eq!(&log[4..], &[('w', 0, 1, 0xaa), ('w', 1, 1, 0xbb)]);
        Ok(())
    }

    #[test]
    fn narrow_accesses_are_widened() -> Result<()> {
        let r = Recorder::default();
        let c = AccessConstraints {
            impl_min: 4,
            ..Default::default()
        };
        assert_eq!(read_adjusted(&r, &c, 0x21, 1)?, 0x21);
        write_adjusted(&r, &c, 0x20, 1, 0x1ff)?;
        let log = r.log.lock();
        assert_eq!((log[0].1, log[0].2), (0x21, 4));
        assert_eq!(log[1], ('w', 0x20, 4, 0xff));
        Ok(())
    }

    #[test]
    fn big_endian_widening_uses_the_most_significant_bytes() -> Result<()> {
        // QEMU's shift is signed: (size - access - i) * 8 = -24 for a 1-byte
        // access widened to 4, so the piece is shifted right (read) or the
        // value left (write).
        let r = Recorder::default();
        let c = AccessConstraints {
            impl_min: 4,
            endianness: Endianness::Big,
            ..Default::default()
        };
        // The 4-byte read at 0x20 returns 0x23222120; its top byte is 0x23.
        assert_eq!(read_adjusted(&r, &c, 0x20, 1)?, 0x23);
        assert_eq!(read_adjusted(&r, &c, 0x20, 2)?, 0x2322);
        write_adjusted(&r, &c, 0x20, 1, 0xab)?;
        write_adjusted(&r, &c, 0x20, 2, 0xabcd)?;
        let log = r.log.lock();
        assert_eq!(log[2], ('w', 0x20, 4, 0xab00_0000));
        assert_eq!(log[3], ('w', 0x20, 4, 0xabcd_0000));
        Ok(())
    }

    #[test]
    fn validity() {
        let c = AccessConstraints {
            valid_min: 2,
            valid_max: 4,
            ..Default::default()
        };
        assert!(c.validate(0, 1).is_err());
        assert!(c.validate(0, 8).is_err());
        assert!(c.validate(2, 4).is_err()); // unaligned
        assert!(c.validate(4, 4).is_ok());
        assert!(c.validate(0, 3).is_err());
        let any = AccessConstraints {
            valid_unaligned: true,
            ..Default::default()
        };
        assert!(any.validate(3, 8).is_ok());
        assert!(
            AccessConstraints {
                valid_max: 3,
                ..Default::default()
            }
            .check()
            .is_err()
        );
        assert!(
            AccessConstraints {
                impl_min: 8,
                impl_max: 4,
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn fast_validity_check_agrees_with_validate() {
        let sizes = [0, 1, 2, 4, 8];
        for valid_min in sizes {
            for valid_max in sizes {
                for valid_unaligned in [false, true] {
                    let c = AccessConstraints {
                        valid_min,
                        valid_max,
                        valid_unaligned,
                        ..Default::default()
                    };
                    for size in 0..=9 {
                        for offset in 0..16 {
                            assert_eq!(
                                c.is_valid(offset, size),
                                c.validate(offset, size).is_ok(),
                                "{c:?} {offset} {size}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn transfer_sizes() {
        let c = AccessConstraints::default();
        assert_eq!(c.transfer_size(0x1000, 100), 4);
        assert_eq!(c.transfer_size(0x1002, 100), 2);
        assert_eq!(c.transfer_size(0x1001, 100), 1);
        assert_eq!(c.transfer_size(0x1000, 3), 2);
        // Alignment bounds DMA pieces even when unaligned accesses are valid
        // (QEMU checks impl.unaligned, which we leave false).
        let unaligned = AccessConstraints {
            valid_unaligned: true,
            ..Default::default()
        };
        assert_eq!(unaligned.transfer_size(0x1001, 100), 1);
        assert_eq!(unaligned.transfer_size(0x1002, 100), 2);
        let wide = AccessConstraints {
            valid_max: 8,
            ..Default::default()
        };
        assert_eq!(wide.transfer_size(0, 64), 8);
    }
}
