//! The type-0 configuration header: offsets and register bits.

use bitflags::bitflags;

/// Offsets of the type-0 header's registers (the first 0x40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum HeaderReg {
    /// Vendor ID (2 bytes, read-only).
    VendorId = 0x00,
    /// Device ID (2, read-only).
    DeviceId = 0x02,
    /// Command (2).
    Command = 0x04,
    /// Status (2).
    Status = 0x06,
    /// Revision ID (1).
    Revision = 0x08,
    /// Programming interface, the class code's low byte (1).
    ProgIf = 0x09,
    /// Sub-class (low byte) and base class (high byte) (2).
    ClassDevice = 0x0a,
    /// Cache line size (1).
    CacheLineSize = 0x0c,
    /// Latency timer (1).
    LatencyTimer = 0x0d,
    /// Header type; bit 7: multi-function (1).
    HeaderType = 0x0e,
    /// BIST (1).
    Bist = 0x0f,
    /// BAR 0 (4 each, BAR 5 at 0x24).
    Bar0 = 0x10,
    /// CardBus CIS pointer (4).
    CardbusCis = 0x28,
    /// Subsystem vendor ID (2).
    SubsystemVendorId = 0x2c,
    /// Subsystem ID (2).
    SubsystemId = 0x2e,
    /// Expansion ROM BAR (4).
    RomAddress = 0x30,
    /// Capabilities pointer (1).
    CapabilityList = 0x34,
    /// Interrupt line (1), firmware scratch.
    InterruptLine = 0x3c,
    /// Interrupt pin (1): 0 none, 1–4 INTA–INTD.
    InterruptPin = 0x3d,
    /// Min_Gnt (1).
    MinGnt = 0x3e,
    /// Max_Lat (1).
    MaxLat = 0x3f,
}

impl HeaderReg {
    /// The byte offset.
    pub const fn offset(self) -> usize {
        self as usize
    }
}

/// Size of the standard header.
pub const HEADER_SIZE: usize = 0x40;
/// Size of a conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 0x100;
/// Size of a PCI Express configuration space.
pub const PCIE_CONFIG_SPACE_SIZE: usize = 0x1000;
/// Header type bit: more functions in this slot.
pub const HEADER_TYPE_MULTI_FUNCTION: u8 = 0x80;

bitflags! {
    /// The Command register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Command: u16 {
        /// Respond to I/O space accesses.
        const IO = 0x1;
        /// Respond to memory space accesses.
        const MEMORY = 0x2;
        /// May master the bus (DMA, MSI).
        const MASTER = 0x4;
        /// Special cycles.
        const SPECIAL = 0x8;
        /// Memory write and invalidate.
        const INVALIDATE = 0x10;
        /// VGA palette snooping.
        const VGA_PALETTE = 0x20;
        /// Parity error response.
        const PARITY = 0x40;
        /// SERR# enable.
        const SERR = 0x100;
        /// Fast back-to-back.
        const FAST_BACK = 0x200;
        /// INTx emulation disable.
        const INTX_DISABLE = 0x400;
    }
}

bitflags! {
    /// The Status register.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Status: u16 {
        /// An INTx is asserted.
        const INTERRUPT = 0x8;
        /// The capabilities pointer is valid.
        const CAP_LIST = 0x10;
        /// 66 MHz capable.
        const MHZ_66 = 0x20;
        /// Fast back-to-back capable.
        const FAST_BACK = 0x80;
        /// Master data parity error.
        const PARITY = 0x100;
        /// DEVSEL timing (two bits).
        const DEVSEL = 0x600;
        /// Signalled target abort.
        const SIG_TARGET_ABORT = 0x800;
        /// Received target abort.
        const REC_TARGET_ABORT = 0x1000;
        /// Received master abort.
        const REC_MASTER_ABORT = 0x2000;
        /// Signalled system error.
        const SIG_SYSTEM_ERROR = 0x4000;
        /// Detected parity error.
        const DETECTED_PARITY = 0x8000;
    }
}

impl Status {
    /// The error bits a guest clears by writing 1 (QEMU's `w1cmask`).
    pub const WRITE_ONE_TO_CLEAR: Status = Status::PARITY
        .union(Status::SIG_TARGET_ABORT)
        .union(Status::REC_TARGET_ABORT)
        .union(Status::REC_MASTER_ABORT)
        .union(Status::SIG_SYSTEM_ERROR)
        .union(Status::DETECTED_PARITY);
}

impl Command {
    /// The bits a guest may change by default (QEMU's `wmask`).
    pub const WRITABLE: Command = Command::IO
        .union(Command::MEMORY)
        .union(Command::MASTER)
        .union(Command::INTX_DISABLE)
        .union(Command::SERR);
}

/// Capability ids (conventional list, 0x40–0xff).
pub mod cap_id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const EXP: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}
