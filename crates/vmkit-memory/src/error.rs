//! Errors of the guest memory layer.

use crate::addr::GuestAddr;

/// The result type of guest-memory operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Guest memory errors. Every variant names what was accessed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A size of zero where one is not allowed.
    #[error("size must not be zero")]
    ZeroSize,
    /// `addr + size` passes the end of the 64-bit space.
    #[error("range at {addr} of {size:#x} bytes overflows the 64-bit address space")]
    Overflow {
        /// Start of the range.
        addr: GuestAddr,
        /// Its size.
        size: u128,
    },
    /// A size or address that must be aligned is not.
    #[error("{what} {value:#x} is not aligned to {align:#x}")]
    Unaligned {
        /// What was misaligned, e.g. `RAM block size`.
        what: &'static str,
        /// The value.
        value: u64,
        /// The alignment required.
        align: u64,
    },
    /// An access outside a RAM block or region.
    #[error("access at offset {offset:#x} of {len:#x} bytes is outside '{name}' ({size:#x} bytes)")]
    OutOfBounds {
        /// The block or region.
        name: String,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the block or region.
        size: u64,
    },
    /// Pages outside a dirty bitmap.
    #[error("pages {first:#x}+{count:#x} are outside the dirty bitmap of '{name}' ({pages:#x} pages)")]
    PageOutOfRange {
        /// The RAM block (or bitmap) name.
        name: String,
        /// The first page.
        first: u64,
        /// How many pages.
        count: u64,
        /// Pages in the bitmap.
        pages: u64,
    },
    /// A page size that is not a power of two of at least 64 bytes.
    #[error("page size {page_size:#x} of '{name}' is not a power of two of at least 64 bytes")]
    InvalidPageSize {
        /// The RAM block.
        name: String,
        /// The page size asked for.
        page_size: u64,
    },
    /// `log_start` for a dirty-log client that is already logging.
    #[error("dirty logging for client '{client}' is already active on '{block}'")]
    DirtyLogBusy {
        /// The RAM block.
        block: String,
        /// The client (`migration`, `display`, `user`, `dirty-rate`).
        client: &'static str,
    },
    /// `sync` for a dirty-log client that is not logging.
    #[error("dirty logging for client '{client}' is not active on '{block}'")]
    DirtyLogInactive {
        /// The RAM block.
        block: String,
        /// The client.
        client: &'static str,
    },
    /// A configuration value out of its range (workload, dirty-rate window...).
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// The setting.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// An access to an address no region covers, in strict mode.
    #[error("unassigned access at {addr} ({len} bytes) in address space '{space}'")]
    Unassigned {
        /// The address space.
        space: String,
        /// The address.
        addr: GuestAddr,
        /// The access length.
        len: u64,
    },
    /// An MMIO access the region refuses (size or alignment constraints).
    #[error("invalid {len}-byte access at {addr} to '{region}': {reason}")]
    InvalidAccess {
        /// The region.
        region: String,
        /// The address within the region.
        addr: GuestAddr,
        /// The access size.
        len: u64,
        /// Why it is refused.
        reason: String,
    },
    /// The region's owner is unrealized or finalized: the region can no longer be accessed.
    #[error("region '{region}' is unusable: {reason}")]
    OwnerGone {
        /// The region.
        region: String,
        /// Why (owner unrealized, finalized...).
        reason: String,
    },
    /// A write to read-only memory in strict mode, or another refused operation.
    #[error("{0}")]
    Refused(String),
    /// An IOMMU refused a translation.
    #[error("IOMMU '{region}' refused {access} at {iova}: {reason}")]
    Translation {
        /// The IOMMU region.
        region: String,
        /// `read` or `write`.
        access: &'static str,
        /// The I/O virtual address.
        iova: GuestAddr,
        /// Why.
        reason: String,
    },
    /// A region tree that cannot be built (alias beyond its target, cycle, bad priority...).
    #[error("invalid region layout: {0}")]
    Layout(String),
    /// An operating-system error (mmap, memfd, file backing).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A callback (MMIO ops, translate) failed; its own error is kept so a
    /// binding can re-raise it unchanged.
    #[error("{context}: {source}")]
    Callback {
        /// Which callback, e.g. `read of 'uart'`.
        context: String,
        /// The callback's error.
        #[source]
        source: vmkit_qom::CallbackError,
    },
    /// An object-model error (owners, backends).
    #[error(transparent)]
    Qom(#[from] vmkit_qom::Error),
}
