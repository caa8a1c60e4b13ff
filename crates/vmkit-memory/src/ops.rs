//! What a device model implements to be reached through guest memory: MMIO
//! callbacks ([`MmioOps`]) with the accesses they accept
//! ([`AccessConstraints`], QEMU's `MemoryRegionOps.valid` / `.impl` and
//! `memory_region_access_valid`), and IOMMU translation ([`IommuOps`]).
//!
//! A leaf module: it uses only addresses and the crate's error type (and
//! names [`AddressSpace`] as the opaque target of a translation), so device
//! code depends on this and not on how regions, flat views or dispatch work.

use std::sync::Arc;

use crate::addr::GuestAddr;
use crate::address_space::AddressSpace;
use crate::error::Result;

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
    pub(crate) fn impl_min_eff(&self) -> u32 {
        self.impl_min.max(1)
    }

    #[inline]
    pub(crate) fn impl_max_eff(&self) -> u32 {
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

/// An IOMMU translation whose target is borrowed for the length of a call
/// ([`IommuOps::with_translation`]).
#[derive(Debug, Clone, Copy)]
pub struct IommuMapping<'a> {
    /// Where the translated access continues.
    pub target: &'a AddressSpace,
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

    /// Translates `iova` and runs `then` on the result, returning what it
    /// returns (a failed translation's error instead, without running it).
    /// Transfers through the region use this; the default borrows the
    /// target of [`IommuOps::translate`]'s entry. An IOMMU that owns its
    /// target space overrides it to lend the space without the reference
    /// count an entry takes. `then` runs the nested transfer: no lock of
    /// the IOMMU may be held while it runs.
    fn with_translation(
        &self,
        iova: GuestAddr,
        is_write: bool,
        then: &mut dyn FnMut(IommuMapping<'_>) -> Result<()>,
    ) -> Result<()> {
        let e = self.translate(iova, is_write)?;
        then(IommuMapping {
            target: &e.target,
            translated_addr: e.translated_addr,
            addr_mask: e.addr_mask,
            perm: e.perm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
