//! How an access of one size is split or widened into the sizes a device
//! implements — the rules of QEMU's `access_with_adjusted_size` — over the
//! device-facing traits of [`crate::ops`].

use crate::addr::GuestAddr;
use crate::error::{Error, Result};
use crate::ops::{AccessConstraints, Endianness, MmioOps};

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
}
