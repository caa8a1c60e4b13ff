//! vmkit's device models, written as QEMU's Rust devices are: register
//! state is plain data whose `read` / `write` return what must happen next
//! (a BAR to move, an interrupt to raise), apart from the object-model glue
//! that owns it.
//!
//! * [`pci`]: the PCI function — configuration space with QEMU's write
//!   masks, BAR sizing and mapping decisions, the capability list, MSI-X,
//!   the bus's placement rules, configuration access paths.
//! * [`dma`]: [`dma::Dma`], guest memory as a device reaches it.
//! * [`glue`]: the models in the machine — QOM types, regions, effects
//!   applied to the address spaces — and the q35-like board.
//! * [`iommu`]: the Intel VT-d IOMMU: registers, DMA translation, the
//!   invalidation queue, migration state.
//! * [`usb`]: the `qemu-xhci` host controller and the USB devices on it
//!   (`usb-tablet`, `usb-kbd`).

pub mod dma;
pub mod glue;
pub mod iommu;
pub mod pci;
pub mod usb;
