//! What the PCI models refuse.

/// A refused PCI operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciError {
    /// An access that is not 1, 2 or 4 bytes, not naturally aligned, or
    /// past the end of the configuration space.
    #[error("bad configuration access of {size} bytes at {offset:#x} (space is {len:#x} bytes)")]
    BadAccess {
        /// Byte offset.
        offset: u16,
        /// Bytes.
        size: u8,
        /// Size of the space.
        len: u16,
    },
    /// `addr=` text that is not "SS" or "SS.F" in hex, or out of range.
    #[error("Property 'addr' expects a PCI device address of the form SS.F, not '{text}'")]
    BadAddress {
        /// The text given.
        text: String,
    },
    /// A BAR that is not a power of two, too small, or in a slot it cannot take.
    #[error("BAR {index}: {reason}")]
    BadBar {
        /// The BAR number (6: the expansion ROM).
        index: u8,
        /// Why.
        reason: String,
    },
    /// A capability that does not fit or overlaps another.
    #[error("capability {id:#04x} at {offset:#x} ({size} bytes): {reason}")]
    BadCapability {
        /// The capability id.
        id: u8,
        /// Where it was to go.
        offset: u16,
        /// Its size.
        size: u8,
        /// Why.
        reason: String,
    },
    /// An incoming configuration space that is not this device's (QEMU's
    /// "Bad config data" on a `PCIDevice` load).
    #[error("Bad config data at {offset:#x}: {reason}")]
    BadConfigData {
        /// The first byte that differs.
        offset: u16,
        /// What differs.
        reason: String,
    },
    /// An MSI-X table or PBA access that is not 4 or 8 aligned bytes inside
    /// them, or a vector count out of range.
    #[error("MSI-X: {reason}")]
    BadMsix {
        /// What was wrong.
        reason: String,
    },
    /// A device/function number refused by the bus (QEMU's message).
    #[error("{0}")]
    Placement(String),
    /// A BAR access the device does not accept (its size, its alignment,
    /// a register that is not there).
    #[error("BAR {index} access of {size} bytes at {offset:#x}: {reason}")]
    BarAccess {
        /// The BAR number.
        index: u8,
        /// Offset in the BAR's region.
        offset: u64,
        /// Bytes.
        size: u8,
        /// Why.
        reason: String,
    },
    /// A VMState description that could not be built.
    #[error("VMState description: {0}")]
    Description(String),
}
