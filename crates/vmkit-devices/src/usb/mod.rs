//! USB as plain data: QEMU's `qemu-xhci` host controller and the devices
//! on its ports.
//!
//! * [`device`]: the [`UsbDevice`] trait — what a controller asks of a
//!   device (control transfers, data on other endpoints, reset, the speed
//!   it attaches at) — and the generic control-transfer rules.
//! * [`desc`]: standard descriptors and requests (QEMU's `desc.c`).
//! * [`hid`]: HID input state — the bounded event queues and report
//!   formats of QEMU's `hid.c`.
//! * [`hid_device`]: `usb-tablet` and `usb-kbd` ([`UsbHid`]).
//! * [`hid_state`]: their VMState (`usb-ptr`, `usb-kbd`).
//! * [`xhci`]: the controller: [`xhci::XhciCore`] (registers, rings,
//!   contexts, ports) embedded in [`xhci::XhciPci`] (configuration space,
//!   BAR0, MSI-X), and its VMState.
//! * [`error`]: what the models refuse, [`UsbError`].

pub mod desc;
pub mod device;
pub mod error;
pub mod hid;
pub mod hid_device;
pub mod hid_state;
pub mod xhci;

pub use device::{PacketError, SetupPacket, Speed, SpeedMask, UsbDevice};
pub use error::UsbError;
pub use hid_device::UsbHid;
