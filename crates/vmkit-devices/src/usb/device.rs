//! What a host controller asks of a USB device, and the generic rules of a
//! control transfer (QEMU's `core.c`).

use std::any::Any;
use std::fmt;

use bitflags::bitflags;

/// A bus speed, numbered as QEMU numbers them (`USB_SPEED_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Speed {
    /// 1.5 Mbit/s.
    Low = 0,
    /// 12 Mbit/s.
    Full = 1,
    /// 480 Mbit/s.
    High = 2,
    /// 5 Gbit/s.
    Super = 3,
}

impl Speed {
    /// The speed as a one-bit mask.
    pub const fn mask(self) -> SpeedMask {
        SpeedMask::from_bits_retain(1 << self as u8)
    }

    /// QEMU's name for it.
    pub const fn name(self) -> &'static str {
        match self {
            Speed::Low => "low",
            Speed::Full => "full",
            Speed::High => "high",
            Speed::Super => "super",
        }
    }
}

bitflags! {
    /// A set of speeds (QEMU's `USB_SPEED_MASK_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SpeedMask: u8 {
        /// Low speed.
        const LOW = 1;
        /// Full speed.
        const FULL = 2;
        /// High speed.
        const HIGH = 4;
        /// SuperSpeed.
        const SUPER = 8;
    }
}

impl SpeedMask {
    /// The fastest speed in both sets, as QEMU picks the speed a device
    /// attaches at (`usb_pick_speed`).
    pub fn best_common(self, other: SpeedMask) -> Option<Speed> {
        [Speed::Super, Speed::High, Speed::Full, Speed::Low]
            .into_iter()
            .find(|s| self.contains(s.mask()) && other.contains(s.mask()))
    }
}

/// QEMU's `full+high` rendering of a set of speeds.
impl fmt::Display for SpeedMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [Speed::Low, Speed::Full, Speed::High, Speed::Super]
            .into_iter()
            .filter(|s| self.contains(s.mask()))
            .map(Speed::name)
            .collect();
        f.write_str(&names.join("+"))
    }
}

/// The eight bytes of a SETUP stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetupPacket {
    /// bmRequestType: direction (bit 7), type, recipient.
    pub request_type: u8,
    /// bRequest.
    pub request: u8,
    /// wValue.
    pub value: u16,
    /// wIndex.
    pub index: u16,
    /// wLength: bytes of the data stage.
    pub length: u16,
}

impl SetupPacket {
    /// From the little-endian eight bytes (as a Setup TRB carries them in
    /// its parameter).
    pub fn from_u64(raw: u64) -> SetupPacket {
        let b = raw.to_le_bytes();
        SetupPacket {
            request_type: b[0],
            request: b[1],
            value: u16::from_le_bytes([b[2], b[3]]),
            index: u16::from_le_bytes([b[4], b[5]]),
            length: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// The eight bytes, little-endian in a u64.
    pub fn to_u64(&self) -> u64 {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = self.length.to_le_bytes();
        u64::from_le_bytes([self.request_type, self.request, v[0], v[1], i[0], i[1], l[0], l[1]])
    }

    /// QEMU's request code: bmRequestType << 8 | bRequest.
    pub const fn code(&self) -> u16 {
        (self.request_type as u16) << 8 | self.request as u16
    }

    /// Whether the data stage goes to the host.
    pub const fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }
}

/// How a packet ended when it did not succeed (QEMU's `USB_RET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PacketError {
    /// Nothing to send now; try again later (an interrupt IN with no report).
    #[error("NAK")]
    Nak,
    /// The endpoint refuses the request (unsupported request, bad endpoint).
    #[error("STALL")]
    Stall,
    /// The device sent more than asked.
    #[error("babble")]
    Babble,
    /// A transfer error.
    #[error("I/O error")]
    IoError,
    /// No device answered.
    #[error("no device")]
    NoDevice,
}

/// The largest data stage QEMU's generic control handling buffers.
pub const CONTROL_BUFFER: usize = 4096;

/// A USB device as a host controller drives it: plain data, no I/O. The
/// controller owns it while it sits in a port.
pub trait UsbDevice: Any + Send + fmt::Debug {
    /// Its product name (QEMU's `product_desc`), for messages.
    fn product(&self) -> &str;
    /// The speeds it can run at.
    fn speed_mask(&self) -> SpeedMask;
    /// Plugged into a port at `speed`; `port_path` is the port's path on
    /// the bus ("1", "2", ...) and `host_path` the controller's device
    /// path ("0000:00:01.0"), which QEMU folds into serial numbers. The
    /// device starts unconfigured.
    fn attach(&mut self, speed: Speed, port_path: &str, host_path: Option<&str>);
    /// The speed it runs at, once attached.
    fn speed(&self) -> Option<Speed>;
    /// Its USB address (0 until SET_ADDRESS).
    fn address(&self) -> u8;
    /// Whether the host enabled remote wakeup.
    fn remote_wakeup(&self) -> bool;
    /// A bus reset (QEMU's `usb_device_reset`): address 0, remote wakeup
    /// off, and the device's own reset.
    fn reset(&mut self);
    /// A control request on endpoint 0. `data` is the OUT data stage; the
    /// answer is the IN data stage (empty for OUT requests). Use
    /// [`control_transfer`] to apply the generic length rules around it.
    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, PacketError>;
    /// An IN transaction on endpoint `ep` (1–15) of at most `max_len` bytes.
    fn data_in(&mut self, ep: u8, max_len: usize) -> Result<Vec<u8>, PacketError>;
    /// An OUT transaction on endpoint `ep` (1–15).
    fn data_out(&mut self, ep: u8, data: &[u8]) -> Result<(), PacketError>;
    /// For downcasting to the concrete model (input injection).
    fn as_any(&self) -> &dyn Any;
    /// For downcasting to the concrete model (input injection).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A control transfer as QEMU's generic layer runs it (`do_parameter`):
/// a data stage longer than [`CONTROL_BUFFER`] stalls; the OUT data given
/// to the device is at most wLength bytes; the IN answer is cut to
/// wLength.
pub fn control_transfer(dev: &mut dyn UsbDevice, setup: &SetupPacket, out: &[u8]) -> Result<Vec<u8>, PacketError> {
    let len = usize::from(setup.length);
    if len > CONTROL_BUFFER {
        return Err(PacketError::Stall);
    }
    let data = if setup.is_in() {
        &[][..]
    } else {
        &out[..out.len().min(len)]
    };
    let mut answer = dev.control(setup, data)?;
    if setup.is_in() {
        answer.truncate(len);
    } else {
        answer.clear();
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_packets_round_trip_and_speeds_pick_the_fastest() {
        let s = SetupPacket {
            request_type: 0x80,
            request: 6,
            value: 0x0100,
            index: 0,
            length: 18,
        };
        assert_eq!(s.to_u64(), 0x0012_0000_0100_0680);
        assert_eq!(SetupPacket::from_u64(s.to_u64()), s);
        assert_eq!(s.code(), 0x8006);
        let ports = SpeedMask::all();
        assert_eq!(
            (SpeedMask::FULL | SpeedMask::HIGH).best_common(ports),
            Some(Speed::High)
        );
        assert_eq!(SpeedMask::FULL.best_common(SpeedMask::SUPER), None);
        assert_eq!((SpeedMask::FULL | SpeedMask::HIGH).to_string(), "full+high");
    }
}
