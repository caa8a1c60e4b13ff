//! USB in the machine: `qemu-xhci` and its USB bus ([`xhci`]), the
//! `usb-tablet` and `usb-kbd` devices on it ([`hid`]), and QEMU's key
//! names for injected input ([`input`]).

pub mod hid;
pub mod input;
pub mod xhci;

pub use hid::{TYPE_USB_DEVICE, TYPE_USB_KBD, TYPE_USB_TABLET, UsbAttachment, usb_attachment};
pub use xhci::{QemuXhci, TYPE_BASE_XHCI, TYPE_QEMU_XHCI, TYPE_USB_BUS, controllers, run_timers, xhci_device};

use crate::glue::error::GlueError;

/// Registers the USB types.
pub(crate) fn register_types() -> Result<(), GlueError> {
    xhci::register()?;
    hid::register()
}
