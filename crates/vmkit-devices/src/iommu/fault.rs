//! Translation faults: QEMU's fault reasons (the FRCD FR field), which of
//! them a context entry's FPD bit silences, and what reporting one did.

use crate::pci::MsiMessage;

use super::SourceId;

/// Whether a DMA access reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read.
    Read,
    /// A write.
    Write,
}

/// A fault reason, with QEMU's codes (VT-d's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultReason {
    /// The root entry's present bit is 0.
    RootEntryNotPresent = 0x1,
    /// The context entry's present bit is 0.
    ContextEntryNotPresent = 0x2,
    /// A context entry programmed wrongly (unsupported width or type).
    ContextEntryInvalid = 0x3,
    /// The input address is above the guest address width.
    AddressBeyondMgaw = 0x4,
    /// A write without write permission.
    Write = 0x5,
    /// A read without read permission.
    Read = 0x6,
    /// A paging entry below the top level could not be read.
    PagingEntryInvalid = 0x7,
    /// The root entry could not be read.
    RootTableInvalid = 0x8,
    /// The context entry could not be read.
    ContextTableInvalid = 0x9,
    /// Reserved bits set in a present root entry.
    RootEntryReserved = 0xa,
    /// Reserved bits set in a present context entry.
    ContextEntryReserved = 0xb,
    /// Reserved bits set in a paging entry.
    PagingEntryReserved = 0xc,
    /// Blocked by the context entry's translation type.
    ContextEntryTranslationType = 0xd,
    /// The output address lies in the interrupt range 0xfee00000–0xfeefffff.
    InterruptAddress = 0xe,
    /// Interrupt remapping: reserved bits in the request.
    IrRequestReserved = 0x20,
    /// Interrupt remapping: index beyond the table.
    IrIndexOverflow = 0x21,
    /// Interrupt remapping: entry not present.
    IrEntryNotPresent = 0x22,
    /// Interrupt remapping: the table could not be read.
    IrRootInvalid = 0x23,
    /// Interrupt remapping: reserved bits in the entry.
    IrEntryReserved = 0x24,
    /// Interrupt remapping: compatibility-format request while blocked.
    IrCompatRequest = 0x25,
    /// Interrupt remapping: source-id check failed.
    IrSourceId = 0x26,
}

impl FaultReason {
    /// The FR code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether the context entry's FPD bit keeps this fault from being
    /// recorded (QEMU's "qualified" faults).
    pub const fn is_qualified(self) -> bool {
        match self {
            FaultReason::ContextEntryNotPresent
            | FaultReason::ContextEntryInvalid
            | FaultReason::AddressBeyondMgaw
            | FaultReason::Write
            | FaultReason::Read
            | FaultReason::PagingEntryInvalid
            | FaultReason::PagingEntryReserved
            | FaultReason::ContextEntryTranslationType
            | FaultReason::InterruptAddress => true,
            FaultReason::RootEntryNotPresent
            | FaultReason::RootTableInvalid
            | FaultReason::ContextTableInvalid
            | FaultReason::RootEntryReserved
            | FaultReason::ContextEntryReserved
            | FaultReason::IrRequestReserved
            | FaultReason::IrIndexOverflow
            | FaultReason::IrEntryNotPresent
            | FaultReason::IrRootInvalid
            | FaultReason::IrEntryReserved
            | FaultReason::IrCompatRequest
            | FaultReason::IrSourceId => false,
        }
    }

    /// The reason with code `code`, if it is one.
    pub fn from_code(code: u8) -> Option<FaultReason> {
        const ALL: [FaultReason; 21] = [
            FaultReason::RootEntryNotPresent,
            FaultReason::ContextEntryNotPresent,
            FaultReason::ContextEntryInvalid,
            FaultReason::AddressBeyondMgaw,
            FaultReason::Write,
            FaultReason::Read,
            FaultReason::PagingEntryInvalid,
            FaultReason::RootTableInvalid,
            FaultReason::ContextTableInvalid,
            FaultReason::RootEntryReserved,
            FaultReason::ContextEntryReserved,
            FaultReason::PagingEntryReserved,
            FaultReason::ContextEntryTranslationType,
            FaultReason::InterruptAddress,
            FaultReason::IrRequestReserved,
            FaultReason::IrIndexOverflow,
            FaultReason::IrEntryNotPresent,
            FaultReason::IrRootInvalid,
            FaultReason::IrEntryReserved,
            FaultReason::IrCompatRequest,
            FaultReason::IrSourceId,
        ];
        ALL.into_iter().find(|r| r.code() == code)
    }

    fn describe(self) -> &'static str {
        match self {
            FaultReason::RootEntryNotPresent => "root entry not present",
            FaultReason::ContextEntryNotPresent => "context entry not present",
            FaultReason::ContextEntryInvalid => "context entry invalid",
            FaultReason::AddressBeyondMgaw => "address beyond the guest address width",
            FaultReason::Write => "write denied",
            FaultReason::Read => "read denied",
            FaultReason::PagingEntryInvalid => "paging entry unreadable",
            FaultReason::RootTableInvalid => "root table unreadable",
            FaultReason::ContextTableInvalid => "context table unreadable",
            FaultReason::RootEntryReserved => "reserved bits in the root entry",
            FaultReason::ContextEntryReserved => "reserved bits in the context entry",
            FaultReason::PagingEntryReserved => "reserved bits in a paging entry",
            FaultReason::ContextEntryTranslationType => "blocked by the translation type",
            FaultReason::InterruptAddress => "output in the interrupt address range",
            FaultReason::IrRequestReserved => "reserved bits in the interrupt request",
            FaultReason::IrIndexOverflow => "interrupt index beyond the table",
            FaultReason::IrEntryNotPresent => "interrupt entry not present",
            FaultReason::IrRootInvalid => "interrupt table unreadable",
            FaultReason::IrEntryReserved => "reserved bits in the interrupt entry",
            FaultReason::IrCompatRequest => "compatibility-format interrupt blocked",
            FaultReason::IrSourceId => "interrupt source-id mismatch",
        }
    }
}

impl std::fmt::Display for FaultReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (fault reason {:#x})", self.describe(), self.code())
    }
}

/// What happened to a fault in the fault recording registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultReport {
    /// Recorded in FRCD 0; `interrupt` is the fault event the owner must
    /// send (none when masked, or when earlier faults are still pending).
    Recorded {
        /// The fault-event MSI, if raised.
        interrupt: Option<MsiMessage>,
    },
    /// Not recorded: the context entry's FPD bit silences this reason.
    Disabled,
    /// Not recorded: a fault from the same source is still pending.
    Compressed,
    /// Not recorded: the record was busy; FSTS.PFO is (now) set.
    Overflow,
    /// Not recorded: a cached translation (IOTLB hit) without the right
    /// permission refuses the access, as QEMU's does, without a record.
    Cached,
}

/// A DMA access the IOMMU refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("DMA {access:?} by {source_id} at {iova:#x} refused: {reason}")]
pub struct Fault {
    /// Why.
    pub reason: FaultReason,
    /// Who asked.
    pub source_id: SourceId,
    /// The input address.
    pub iova: u64,
    /// Read or write.
    pub access: Access,
    /// Whether it was recorded and what to send.
    pub report: FaultReport,
}

impl Fault {
    /// The fault-event MSI the owner must send, if any.
    pub fn interrupt(&self) -> Option<MsiMessage> {
        match self.report {
            FaultReport::Recorded { interrupt } => interrupt,
            FaultReport::Disabled | FaultReport::Compressed | FaultReport::Overflow | FaultReport::Cached => None,
        }
    }
}

/// FRCD 0 decoded, when its F bit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultRecord {
    /// The faulting page (bits 63:12 of the input address).
    pub page: u64,
    /// Who faulted.
    pub source_id: SourceId,
    /// The FR code (a [`FaultReason`] code unless a migration brought another).
    pub reason: u8,
    /// Read or write (the T bit).
    pub access: Access,
}
