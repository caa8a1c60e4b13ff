//! Invalidation queue descriptors: 128-bit entries the guest puts in the
//! queue at IQA, decoded with QEMU's reserved-bit checks.

use super::cache::{ContextScope, IotlbScope};
use super::regs::MAMV;
use super::tables::SourceId;

/// Descriptor types (bits 3:0, with bits 11:9 as bits 6:4).
pub mod desc_type {
    /// None yet (QEMU's value after a failed fetch).
    pub const NONE: u8 = 0;
    /// Context-cache invalidate.
    pub const CONTEXT_CACHE: u8 = 1;
    /// IOTLB invalidate.
    pub const IOTLB: u8 = 2;
    /// Device-IOTLB invalidate.
    pub const DEVICE_IOTLB: u8 = 3;
    /// Interrupt entry cache invalidate.
    pub const INTERRUPT_ENTRY_CACHE: u8 = 4;
    /// Invalidation wait.
    pub const WAIT: u8 = 5;
    /// PASID-based IOTLB invalidate (256-bit).
    pub const PASID_IOTLB: u8 = 6;
    /// PASID-cache invalidate (256-bit).
    pub const PASID_CACHE: u8 = 7;
    /// PASID-based device-IOTLB invalidate (256-bit).
    pub const PASID_DEVICE_IOTLB: u8 = 8;
}

/// A decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Descriptor {
    ContextCache(ContextScope),
    Iotlb(IotlbScope),
    DeviceIotlb {
        source: SourceId,
        addr: u64,
        size: bool,
    },
    InterruptEntryCache {
        global: bool,
        index: u16,
        mask: u8,
    },
    Wait {
        status: Option<(u64, u32)>,
        interrupt: bool,
    },
}

/// The type field of a descriptor's low qword.
pub(crate) fn type_of(lo: u64) -> u8 {
    (((lo >> 5) & 0x70) | (lo & 0xf)) as u8
}

/// Why a descriptor stopped the queue (FSTS.IQE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum QueueError {
    /// The tail is at or past the queue's end.
    #[error("tail {tail} is past the queue of {size} descriptors")]
    TailOutOfRange {
        /// IQT's index.
        tail: u16,
        /// Descriptors in the queue.
        size: u16,
    },
    /// IQT bit 4 with 256-bit descriptors.
    #[error("IQT bit 4 is reserved with 256-bit descriptors")]
    TailReserved,
    /// The descriptor could not be read.
    #[error("descriptor {head} unreadable at {addr:#x}")]
    Unreadable {
        /// IQH's index.
        head: u16,
        /// Its address.
        addr: u64,
    },
    /// A type this queue does not process.
    #[error("descriptor {head}: unknown type {kind:#x}")]
    UnknownType {
        /// IQH's index.
        head: u16,
        /// The type.
        kind: u8,
    },
    /// A PASID descriptor needs a 256-bit queue (scalable mode).
    #[error("descriptor {head}: type {kind:#x} is a 256-bit descriptor in a 128-bit queue")]
    NeedsWideQueue {
        /// IQH's index.
        head: u16,
        /// The type.
        kind: u8,
    },
    /// Reserved bits set.
    #[error("descriptor {head} (type {kind:#x}): reserved bits set (hi {hi:#x}, lo {lo:#x})")]
    Reserved {
        /// IQH's index.
        head: u16,
        /// The type.
        kind: u8,
        /// High qword.
        hi: u64,
        /// Low qword.
        lo: u64,
    },
    /// A granularity (or a wait with none of SW, IF, FN) QEMU refuses.
    #[error("descriptor {head} (type {kind:#x}): invalid request (hi {hi:#x}, lo {lo:#x})")]
    Invalid {
        /// IQH's index.
        head: u16,
        /// The type.
        kind: u8,
        /// High qword.
        hi: u64,
        /// Low qword.
        lo: u64,
    },
    /// The wait descriptor's status write failed.
    #[error("descriptor {head}: status write to {addr:#x} failed")]
    StatusWrite {
        /// IQH's index.
        head: u16,
        /// Where.
        addr: u64,
    },
}

/// Decodes the descriptor at queue index `head`.
pub(crate) fn decode(head: u16, lo: u64, hi: u64) -> Result<Descriptor, QueueError> {
    let kind = type_of(lo);
    let reserved = |lo_mask: u64, hi_mask: u64| -> Result<(), QueueError> {
        if lo & lo_mask != 0 || hi & hi_mask != 0 {
            return Err(QueueError::Reserved { head, kind, hi, lo });
        }
        Ok(())
    };
    let invalid = QueueError::Invalid { head, kind, hi, lo };
    match kind {
        desc_type::CONTEXT_CACHE => {
            reserved(0xfffc_0000_0000_f1c0, u64::MAX)?;
            match (lo >> 4) & 3 {
                // Domain-selective is done as global, as QEMU does.
                1 | 2 => Ok(Descriptor::ContextCache(ContextScope::Global)),
                3 => Ok(Descriptor::ContextCache(ContextScope::Devices {
                    source: SourceId((lo >> 32) as u16),
                    fm: ((lo >> 48) & 3) as u8,
                })),
                _ => Err(invalid),
            }
        }
        desc_type::IOTLB => {
            reserved(0xffff_ffff_0000_f100, 0xf80)?;
            let domain = (lo >> 16) as u16;
            match (lo >> 4) & 3 {
                1 => Ok(Descriptor::Iotlb(IotlbScope::Global)),
                2 => Ok(Descriptor::Iotlb(IotlbScope::Domain(domain))),
                3 => {
                    let am = (hi & 0x3f) as u8;
                    if am > MAMV {
                        return Err(invalid);
                    }
                    Ok(Descriptor::Iotlb(IotlbScope::Pages {
                        domain,
                        addr: hi & !0xfff,
                        am,
                    }))
                }
                _ => Err(invalid),
            }
        }
        desc_type::DEVICE_IOTLB => {
            reserved(0xffff_0000_ffe0_f1f0, 0xffe)?;
            Ok(Descriptor::DeviceIotlb {
                source: SourceId((lo >> 32) as u16),
                addr: hi & !0xfff,
                size: hi & 1 != 0,
            })
        }
        desc_type::INTERRUPT_ENTRY_CACHE => {
            reserved(0xffff_0000_07ff_f1e0, u64::MAX)?;
            Ok(Descriptor::InterruptEntryCache {
                // G=0 is global, G=1 index-selective.
                global: lo & (1 << 4) == 0,
                index: (lo >> 32) as u16,
                mask: ((lo >> 27) & 0x1f) as u8,
            })
        }
        desc_type::WAIT => {
            reserved(0xffff_f180, 3)?;
            let status_write = lo & (1 << 5) != 0;
            let interrupt = lo & (1 << 4) != 0;
            let fence = lo & (1 << 6) != 0;
            if !(status_write || interrupt || fence) {
                return Err(invalid);
            }
            Ok(Descriptor::Wait {
                status: status_write.then_some((hi, (lo >> 32) as u32)),
                interrupt,
            })
        }
        desc_type::PASID_IOTLB | desc_type::PASID_CACHE | desc_type::PASID_DEVICE_IOTLB => {
            Err(QueueError::NeedsWideQueue { head, kind })
        }
        _ => Err(QueueError::UnknownType { head, kind }),
    }
}
