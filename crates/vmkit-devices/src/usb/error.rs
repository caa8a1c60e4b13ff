//! What the USB models refuse.

use crate::pci::PciError;

/// A refused USB or xHCI operation. Guest mistakes are not errors: they
/// end as completion codes, events or a host controller error, as on
/// hardware; these are the host side's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    /// A register access of a size or alignment the block does not take.
    #[error("bad xHCI register access of {size} bytes at BAR0 offset {offset:#x}")]
    BadAccess {
        /// Offset in BAR0.
        offset: u64,
        /// Bytes.
        size: u8,
    },
    /// A HID device built for a USB version it does not have (QEMU's message).
    #[error("Invalid usb version {0} for usb hid device")]
    BadUsbVersion(u32),
    /// A port number the controller does not have.
    #[error("USB port {port} does not exist (the controller has {ports})")]
    NoSuchPort {
        /// The 1-based port asked for.
        port: usize,
        /// Ports there are.
        ports: usize,
    },
    /// A port that already holds a device.
    #[error("USB port {0} is in use")]
    PortInUse(usize),
    /// A port without a device.
    #[error("USB port {0} has no device")]
    PortEmpty(usize),
    /// A device that cannot run at any speed the port offers (QEMU's message).
    #[error(
        "Warning: speed mismatch trying to attach usb device \"{device}\" ({device_speeds} speed) \
         to bus \"{bus}\", port \"{port}\" ({port_speeds} speed)"
    )]
    SpeedMismatch {
        /// The device's product name.
        device: String,
        /// The speeds it supports, QEMU's `full+high` form.
        device_speeds: String,
        /// The bus name.
        bus: String,
        /// The port path.
        port: String,
        /// The port's speeds.
        port_speeds: String,
    },
    /// A VMState description that could not be built.
    #[error("VMState description: {0}")]
    Description(String),
    /// The configuration space refused something (a bug in the identity).
    #[error(transparent)]
    Pci(#[from] PciError),
}
