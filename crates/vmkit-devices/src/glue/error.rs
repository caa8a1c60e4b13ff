//! What building the board or registering the glue's types can refuse.

use crate::pci::PciError;

/// A failure of the glue: one of the layers it builds on refused.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    /// The object model (a type, a property, the tree).
    #[error(transparent)]
    Qom(#[from] vmkit_qom::Error),
    /// Guest memory (a region, an address space).
    #[error(transparent)]
    Memory(#[from] vmkit_memory::Error),
    /// A PCI model (a BAR, a description).
    #[error(transparent)]
    Pci(#[from] PciError),
    /// Migration (a device type's VMState registration).
    #[error(transparent)]
    Savevm(#[from] vmkit_migration::savevm::SavevmError),
    /// A device's VMState description could not be built.
    #[error(transparent)]
    VmState(#[from] vmkit_migration::vmstate::VmStateError),
    /// A USB model refused.
    #[error(transparent)]
    Usb(#[from] crate::usb::UsbError),
    /// A device operation that cannot be done (input for a device that is
    /// gone or of the wrong kind, an unknown key).
    #[error("{0}")]
    Device(String),
}
