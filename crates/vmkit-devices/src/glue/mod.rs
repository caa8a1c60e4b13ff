//! The glue between the device models and the machine: QOM types whose
//! realize builds a model, memory regions whose accesses reach it, and
//! the effects it returns applied to the address spaces.
//!
//! * [`pci`]: the `pci-device` base type and its bus (`PCI`, `PCIE`), the
//!   q35 host bridge (`q35-pcihost`, its `mch` function, 0xCF8/0xCFC and
//!   the ECAM window), `pci-testdev`, and `query-pci`'s answer.
//! * [`iommu`]: `intel-iommu` (and its abstract base `x86-iommu`, the
//!   singleton): the register window, DMA remapping of the root bus's
//!   functions, the `iommu-intel` section.
//! * [`usb`]: `qemu-xhci`, its USB bus, `usb-tablet` and `usb-kbd`, and
//!   input injection.
//! * [`clock`]: the virtual clock device models read.
//! * [`msi`]: the MSI window at 0xfee00000, which records messages.
//! * [`board`]: the q35-like board: memory map, `pci` and `io` spaces,
//!   host bridge and `pcie.0`.
//! * [`error`]: the refusals, [`GlueError`].

pub mod board;
pub mod clock;
pub mod error;
pub mod iommu;
pub mod msi;
pub mod pci;
pub mod usb;

pub use board::{Q35Board, Q35Options, build_q35};
pub use error::GlueError;

/// Registers the QOM types of the glue (once per process).
pub fn register_types() -> Result<(), GlueError> {
    pci::register_types()
}
