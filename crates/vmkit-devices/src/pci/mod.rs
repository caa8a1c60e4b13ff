//! A PCI function's configuration space and what follows from writing it.
//!
//! * [`addr`]: [`DevFn`] and QEMU's `addr=` syntax ("SS" or "SS.F").
//! * [`regs`]: type-0 header offsets ([`HeaderReg`]) and the bits of the
//!   Command and Status registers.
//! * [`bus`]: [`PciBus`]: which function holds which number, placed by
//!   QEMU's rules and refused with its messages.
//! * [`host`]: configuration access through 0xCF8/0xCFC and ECAM.
//! * [`bar`]: [`Bar`] descriptions, their sizing masks and mapping rule.
//! * [`config`]: [`ConfigSpace`]: the bytes with QEMU's `wmask`,
//!   `w1cmask` and `cmask`, accesses of 1, 2 or 4 bytes, the capability
//!   list, and the [`ConfigEffects`] of a write (BAR moves, unmapping
//!   first; bus mastering; INTx disable).
//! * [`msix`]: [`Msix`]: the vector table and pending bits, and the
//!   [`MsiMessage`]s a notification or an unmask sends.
//! * [`function`]: [`PciFunction`], a function's model as the machine
//!   reaches it, and [`PciEffects`], what an access asks of the machine.
//! * [`state`]: QEMU's `PCIDevice` and `msix` VMStates and their typed
//!   states ([`PciDeviceState`], [`MsixState`]).
//! * [`error`]: the refusals, [`PciError`].

pub mod addr;
pub mod bar;
pub mod bus;
pub mod config;
pub mod error;
pub mod function;
pub mod host;
pub mod msix;
pub mod regs;
pub mod state;

pub use addr::DevFn;
pub use bar::{Bar, BarIndex, BarKind, BarMove, BarSpace};
pub use bus::{Occupant, PciBus};
pub use config::{ConfigEffects, ConfigKind, ConfigSpace, Identity};
pub use error::PciError;
pub use function::{PciEffects, PciFunction};
pub use msix::{MsiMessage, Msix};
pub use regs::{Command, HeaderReg, Status};
pub use state::{MsixState, PciDeviceState, msix_vmsd, pci_device_vmsd};
