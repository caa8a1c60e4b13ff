//! `qemu-xhci`: the xHCI host controller as QEMU models it.
//!
//! * [`regs`]: BAR0's layout, register offsets and bits.
//! * [`trb`]: TRBs, their types and the completion codes.
//! * [`ring`]: consuming a TRB ring.
//! * [`intr`]: interrupters and events.
//! * [`slot`]: device slots, endpoints, context layouts.
//! * [`port`]: root hub ports and the devices plugged into them.
//! * [`core`]: [`XhciCore`], the controller (QEMU's `base-xhci`); the
//!   command ring and transfers run in its `command` and `transfer` parts.
//! * [`pci`]: [`XhciPci`], the PCI function embedding the core (QEMU's
//!   `qemu-xhci`): identity, configuration space, BAR0 with MSI-X, INTx.
//! * [`state`]: the VMState "xhci" layout and the device-state contract.

mod command;
pub mod core;
pub mod intr;
pub mod pci;
pub mod port;
pub mod regs;
pub mod ring;
pub mod slot;
pub mod state;
mod transfer;
pub mod trb;

pub use self::core::{Doorbell, Effects, Env, Irq, XhciConfig, XhciCore};
pub use intr::{Event, Interrupter};
pub use pci::{XhciBus, XhciPci, XhciPciConfig};
pub use port::Port;
pub use ring::Ring;
pub use trb::{CompletionCode, Trb, TrbType};
