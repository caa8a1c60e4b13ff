//! `usb-tablet` and `usb-kbd`: QEMU's USB HID devices (`dev-hid.c`) —
//! their descriptors, HID class requests, and reports through the
//! interrupt IN endpoint 1 (NAK while nothing is queued).
//!
//! The tablet's report descriptor is the long-standing three-button one
//! (QEMU 1.x to 9.x); QEMU 10 widened it to five buttons.

use std::any::Any;

use super::desc::{
    CFG_ATT_ONE, CFG_ATT_WAKEUP, ConfigDesc, DescState, DeviceDesc, DeviceIds, EndpointDesc, InterfaceDesc, UsbDesc, dt,
};
use super::device::{PacketError, SetupPacket, Speed, SpeedMask, UsbDevice};
use super::error::UsbError;
use super::hid::{Axis, HidKind, HidSnapshot, HidState, PointerInput};

/// HID class requests (QEMU's request codes).
mod hid_req {
    pub const GET_REPORT: u16 = 0xa101;
    pub const GET_IDLE: u16 = 0xa102;
    pub const GET_PROTOCOL: u16 = 0xa103;
    pub const SET_REPORT: u16 = 0x2109;
    pub const SET_IDLE: u16 = 0x210a;
    pub const SET_PROTOCOL: u16 = 0x210b;
    /// Standard GET_DESCRIPTOR to an interface (the report descriptor).
    pub const GET_INTERFACE_DESCRIPTOR: u16 = 0x8106;
}

const USB_CLASS_HID: u8 = 0x03;
const ENDPOINT_XFER_INT: u8 = 0x03;

const STR_MANUFACTURER: u8 = 1;
const STR_PRODUCT_TABLET: u8 = 3;
const STR_PRODUCT_KEYBOARD: u8 = 4;
const STR_CONFIG_TABLET: u8 = 7;
const STR_CONFIG_KEYBOARD: u8 = 8;
const STR_SERIAL_TABLET: u8 = 10;
const STR_SERIAL_KEYBOARD: u8 = 11;

const STRINGS: &[&str] = &[
    "",
    "QEMU",
    "QEMU USB Mouse",
    "QEMU USB Tablet",
    "QEMU USB Keyboard",
    "42",
    "HID Mouse",
    "HID Tablet",
    "HID Keyboard",
    "89126",
    "28754",
    "68284",
];

/// The tablet's HID report descriptor: three buttons, absolute X and Y
/// (0..0x7fff, 16 bits each), a relative wheel.
pub const TABLET_REPORT_DESCRIPTOR: [u8; 74] = [
    0x05, 0x01, 0x09, 0x02, 0xa1, 0x01, 0x09, 0x01, 0xa1, 0x00, 0x05, 0x09, 0x19, 0x01, 0x29, 0x03, 0x15, 0x00, 0x25,
    0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02, 0x95, 0x01, 0x75, 0x05, 0x81, 0x01, 0x05, 0x01, 0x09, 0x30, 0x09, 0x31,
    0x15, 0x00, 0x26, 0xff, 0x7f, 0x35, 0x00, 0x46, 0xff, 0x7f, 0x75, 0x10, 0x95, 0x02, 0x81, 0x02, 0x05, 0x01, 0x09,
    0x38, 0x15, 0x81, 0x25, 0x7f, 0x35, 0x00, 0x45, 0x00, 0x75, 0x08, 0x95, 0x01, 0x81, 0x06, 0xc0, 0xc0,
];

/// The keyboard's HID report descriptor: the boot layout (modifiers,
/// reserved, five LEDs out, six key codes).
pub const KEYBOARD_REPORT_DESCRIPTOR: [u8; 63] = [
    0x05, 0x01, 0x09, 0x06, 0xa1, 0x01, 0x75, 0x01, 0x95, 0x08, 0x05, 0x07, 0x19, 0xe0, 0x29, 0xe7, 0x15, 0x00, 0x25,
    0x01, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01, 0x95, 0x05, 0x75, 0x01, 0x05, 0x08, 0x19, 0x01, 0x29, 0x05,
    0x91, 0x02, 0x95, 0x01, 0x75, 0x03, 0x91, 0x01, 0x95, 0x06, 0x75, 0x08, 0x15, 0x00, 0x25, 0xff, 0x05, 0x07, 0x19,
    0x00, 0x29, 0xff, 0x81, 0x00, 0xc0,
];

const TABLET_HID_DESC: &[u8] = &[0x09, dt::HID, 0x01, 0x00, 0x00, 0x01, dt::REPORT, 74, 0];
const KEYBOARD_HID_DESC: &[u8] = &[0x09, dt::HID, 0x11, 0x01, 0x00, 0x01, dt::REPORT, 0x3f, 0];

const fn interrupt_in(max_packet_size: u16, interval: u8) -> EndpointDesc {
    EndpointDesc {
        address: 0x81,
        attributes: ENDPOINT_XFER_INT,
        max_packet_size,
        interval,
    }
}

const fn device(bcd_usb: u16, max_packet_size0: u8, configs: &'static [ConfigDesc]) -> DeviceDesc {
    DeviceDesc {
        bcd_usb,
        class: 0,
        subclass: 0,
        protocol: 0,
        max_packet_size0,
        configs,
    }
}

const fn config(string: u8, interfaces: &'static [InterfaceDesc]) -> ConfigDesc {
    ConfigDesc {
        value: 1,
        string,
        attributes: CFG_ATT_ONE | CFG_ATT_WAKEUP,
        max_power: 50,
        interfaces,
    }
}

const fn tablet_iface(endpoints: &'static [EndpointDesc]) -> InterfaceDesc {
    InterfaceDesc {
        number: 0,
        alternate: 0,
        class: USB_CLASS_HID,
        subclass: 0,
        protocol: 0,
        string: 0,
        class_descriptors: &[TABLET_HID_DESC],
        endpoints,
    }
}

const fn keyboard_iface(endpoints: &'static [EndpointDesc]) -> InterfaceDesc {
    InterfaceDesc {
        number: 0,
        alternate: 0,
        class: USB_CLASS_HID,
        subclass: 0x01,
        protocol: 0x01,
        string: 0,
        class_descriptors: &[KEYBOARD_HID_DESC],
        endpoints,
    }
}

static TABLET_FULL: DeviceDesc = device(
    0x0100,
    8,
    &[config(STR_CONFIG_TABLET, &[tablet_iface(&[interrupt_in(8, 0x0a)])])],
);
// bInterval 4: 2^(4-1) x 125 us = 1 ms.
static TABLET_HIGH: DeviceDesc = device(
    0x0200,
    64,
    &[config(STR_CONFIG_TABLET, &[tablet_iface(&[interrupt_in(8, 4)])])],
);
static KEYBOARD_FULL: DeviceDesc = device(
    0x0100,
    8,
    &[config(STR_CONFIG_KEYBOARD, &[keyboard_iface(&[interrupt_in(8, 0x0a)])])],
);
// bInterval 7: 2^(7-1) x 125 us = 8 ms.
static KEYBOARD_HIGH: DeviceDesc = device(
    0x0200,
    64,
    &[config(STR_CONFIG_KEYBOARD, &[keyboard_iface(&[interrupt_in(8, 7)])])],
);

const fn ids(product_string: u8, serial: u8) -> DeviceIds {
    DeviceIds {
        vendor: 0x0627,
        product: 0x0001,
        bcd_device: 0,
        manufacturer: STR_MANUFACTURER,
        product_string,
        serial,
    }
}

static DESC_TABLET: UsbDesc = UsbDesc {
    ids: ids(STR_PRODUCT_TABLET, STR_SERIAL_TABLET),
    full: Some(&TABLET_FULL),
    high: None,
    strings: STRINGS,
    msos: true,
};
static DESC_TABLET2: UsbDesc = UsbDesc {
    high: Some(&TABLET_HIGH),
    ..DESC_TABLET
};
static DESC_KEYBOARD: UsbDesc = UsbDesc {
    ids: ids(STR_PRODUCT_KEYBOARD, STR_SERIAL_KEYBOARD),
    full: Some(&KEYBOARD_FULL),
    high: None,
    strings: STRINGS,
    msos: true,
};
static DESC_KEYBOARD2: UsbDesc = UsbDesc {
    high: Some(&KEYBOARD_HIGH),
    ..DESC_KEYBOARD
};

/// QEMU's `USBDevice.state` values.
const USB_STATE_NOTATTACHED: i32 = 0;
const USB_STATE_ATTACHED: i32 = 1;
const USB_STATE_DEFAULT: i32 = 2;
/// QEMU's `setup_state` once a controller handed a whole control
/// transfer over at once (`do_parameter`): what xHCI does.
const SETUP_STATE_PARAM: i32 = 4;
/// QEMU's control data buffer: `setup_len` and `setup_index` stay below.
const DATA_BUF_LEN: i32 = 4096;

/// What QEMU's "USBDevice" VMState carries of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbDeviceSnapshot {
    /// The USB address.
    pub addr: u8,
    /// Not attached (0), attached (1), default (2, after a reset).
    pub state: i32,
    /// Remote wakeup enabled (0/1).
    pub remote_wakeup: i32,
    /// The control pipe's stage.
    pub setup_state: i32,
    /// The last control transfer's data length.
    pub setup_len: i32,
    /// Where its data stage stands.
    pub setup_index: i32,
    /// The last SETUP packet.
    pub setup_buf: [u8; 8],
}

/// A USB HID device: `usb-tablet` or `usb-kbd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbHid {
    desc: DescState,
    hid: HidState,
    attached: bool,
    usb_state: i32,
    setup_state: i32,
    setup_len: i32,
    setup_buf: [u8; 8],
}

impl UsbHid {
    /// `usb-tablet` with QEMU's default `usb_version=2` (full and high speed).
    pub fn tablet() -> UsbHid {
        UsbHid::with(&DESC_TABLET2, HidKind::Tablet)
    }

    /// `usb-kbd` with QEMU's default `usb_version=2`.
    pub fn keyboard() -> UsbHid {
        UsbHid::with(&DESC_KEYBOARD2, HidKind::Keyboard)
    }

    /// A device of `kind` with property `usb_version` (1: full speed
    /// only; 2: full and high speed); others are refused with QEMU's
    /// message.
    pub fn new(kind: HidKind, usb_version: u32) -> Result<UsbHid, UsbError> {
        let desc = match (kind, usb_version) {
            (HidKind::Tablet, 1) => &DESC_TABLET,
            (HidKind::Tablet, 2) => &DESC_TABLET2,
            (HidKind::Keyboard, 1) => &DESC_KEYBOARD,
            (HidKind::Keyboard, 2) => &DESC_KEYBOARD2,
            (_, v) => return Err(UsbError::BadUsbVersion(v)),
        };
        Ok(UsbHid::with(desc, kind))
    }

    fn with(desc: &'static UsbDesc, kind: HidKind) -> UsbHid {
        UsbHid {
            desc: DescState::new(desc),
            hid: HidState::new(kind),
            attached: false,
            usb_state: USB_STATE_NOTATTACHED,
            setup_state: 0,
            setup_len: 0,
            setup_buf: [0; 8],
        }
    }

    /// What QEMU's "USBDevice" section carries.
    pub fn usb_snapshot(&self) -> UsbDeviceSnapshot {
        UsbDeviceSnapshot {
            addr: self.desc.address(),
            state: self.usb_state,
            remote_wakeup: i32::from(self.desc.remote_wakeup()),
            setup_state: self.setup_state,
            setup_len: self.setup_len,
            setup_index: 0,
            setup_buf: self.setup_buf,
        }
    }

    /// The migrated state of the device (QEMU's `usb-ptr` / `usb-kbd`):
    /// its USB part and its HID input state.
    pub fn snapshot(&self) -> (UsbDeviceSnapshot, HidSnapshot) {
        (self.usb_snapshot(), self.hid.snapshot())
    }

    /// Installs a migrated state, with QEMU's `usb_device_post_load`
    /// checks (the control transfer's length and position inside its
    /// buffer) and the HID state's.
    pub fn restore(&mut self, usb: &UsbDeviceSnapshot, hid: &HidSnapshot) -> Result<(), String> {
        let inside = |v: i32| (0..DATA_BUF_LEN).contains(&v);
        if !inside(usb.setup_len) || !inside(usb.setup_index) {
            return Err(format!(
                "setup_len {} / setup_index {} outside the {DATA_BUF_LEN}-byte control buffer",
                usb.setup_len, usb.setup_index
            ));
        }
        let mut next = self.hid.clone();
        next.restore(hid)?;
        self.hid = next;
        self.desc.restore(usb.addr, usb.remote_wakeup != 0);
        self.usb_state = usb.state;
        self.setup_state = usb.setup_state;
        self.setup_len = usb.setup_len;
        self.setup_buf = usb.setup_buf;
        Ok(())
    }

    fn handle_control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, PacketError> {
        if let Some(answer) = self.desc.handle(setup) {
            return answer;
        }
        let len = usize::from(setup.length);
        let keyboard = self.kind() == HidKind::Keyboard;
        match setup.code() {
            hid_req::GET_INTERFACE_DESCRIPTOR if setup.value >> 8 == u16::from(dt::REPORT) => {
                Ok(self.report_descriptor().to_vec())
            }
            hid_req::GET_REPORT => Ok(self.poll(len)),
            hid_req::SET_REPORT if keyboard => {
                self.hid.keyboard_write(data);
                Ok(Vec::new())
            }
            hid_req::GET_PROTOCOL if keyboard => Ok(vec![self.hid.protocol()]),
            hid_req::SET_PROTOCOL if keyboard => {
                self.hid.set_protocol(setup.value as u8);
                Ok(Vec::new())
            }
            hid_req::GET_IDLE => Ok(vec![self.hid.idle()]),
            hid_req::SET_IDLE => {
                self.hid.set_idle((setup.value >> 8) as u8);
                Ok(Vec::new())
            }
            _ => Err(PacketError::Stall),
        }
    }

    /// Which device.
    pub fn kind(&self) -> HidKind {
        self.hid.kind()
    }

    /// The input state.
    pub fn hid(&self) -> &HidState {
        &self.hid
    }

    /// The standard-request state (address, configuration, strings).
    pub fn desc(&self) -> &DescState {
        &self.desc
    }

    /// The HID report descriptor.
    pub fn report_descriptor(&self) -> &'static [u8] {
        match self.kind() {
            HidKind::Tablet => &TABLET_REPORT_DESCRIPTOR,
            HidKind::Keyboard => &KEYBOARD_REPORT_DESCRIPTOR,
        }
    }

    /// Folds a pointer event into the pending report (tablet only; a
    /// keyboard ignores it).
    pub fn pointer_event(&mut self, input: PointerInput) {
        if self.kind() == HidKind::Tablet {
            self.hid.pointer_event(input);
        }
    }

    /// Makes the pending pointer report visible. Returns whether the
    /// interrupt endpoint has something new: then the controller should
    /// be woken for endpoint 0x81.
    pub fn pointer_sync(&mut self) -> bool {
        self.kind() == HidKind::Tablet && self.hid.pointer_sync()
    }

    /// Moves the pointer to (`x`, `y`) (0..=0x7fff each) and syncs.
    pub fn move_to(&mut self, x: i32, y: i32) -> bool {
        self.pointer_event(PointerInput::Abs {
            axis: Axis::X,
            value: x,
        });
        self.pointer_event(PointerInput::Abs {
            axis: Axis::Y,
            value: y,
        });
        self.pointer_sync()
    }

    /// A key press or release by QEMU key number (keyboard only). Returns
    /// whether it was queued — then wake the controller for 0x81; a full
    /// queue drops it.
    pub fn key_event(&mut self, number: u8, down: bool) -> bool {
        self.kind() == HidKind::Keyboard && self.hid.key_event(number, down)
    }

    /// Pause pressed or released (keyboard only).
    pub fn pause_event(&mut self, down: bool) -> bool {
        self.kind() == HidKind::Keyboard && self.hid.pause_event(down)
    }

    fn poll(&mut self, len: usize) -> Vec<u8> {
        match self.kind() {
            HidKind::Tablet => self.hid.pointer_poll(len),
            HidKind::Keyboard => self.hid.keyboard_poll(len),
        }
    }

    fn serial_index(&self) -> u8 {
        self.desc.desc().ids.serial
    }
}

impl UsbDevice for UsbHid {
    fn product(&self) -> &str {
        match self.kind() {
            HidKind::Tablet => "QEMU USB Tablet",
            HidKind::Keyboard => "QEMU USB Keyboard",
        }
    }

    fn speed_mask(&self) -> SpeedMask {
        let d = self.desc.desc();
        let mut mask = SpeedMask::empty();
        if d.full.is_some() {
            mask |= SpeedMask::FULL;
        }
        if d.high.is_some() {
            mask |= SpeedMask::HIGH;
        }
        mask
    }

    fn attach(&mut self, speed: Speed, port_path: &str, host_path: Option<&str>) {
        let index = self.serial_index();
        let prefix = self.desc.desc().strings.get(usize::from(index)).copied().unwrap_or("");
        // QEMU's serial: "<prefix>-<controller path>-<port path>".
        let serial = match host_path {
            Some(host) => format!("{prefix}-{host}-{port_path}"),
            None => format!("{prefix}-{port_path}"),
        };
        self.desc.set_string(index, serial);
        self.desc.attach(speed);
        self.attached = true;
        self.usb_state = USB_STATE_ATTACHED;
    }

    fn speed(&self) -> Option<Speed> {
        self.attached.then(|| self.desc.speed())
    }

    fn address(&self) -> u8 {
        self.desc.address()
    }

    fn remote_wakeup(&self) -> bool {
        self.desc.remote_wakeup()
    }

    fn reset(&mut self) {
        self.desc.reset();
        self.hid.reset();
        self.usb_state = USB_STATE_DEFAULT;
    }

    fn control(&mut self, setup: &SetupPacket, data: &[u8]) -> Result<Vec<u8>, PacketError> {
        let answer = self.handle_control(setup, data);
        // QEMU's do_parameter: the SETUP packet kept, the length cut to
        // what moved (an IN stage that failed moved nothing).
        let want = i32::from(setup.length);
        self.setup_buf = setup.to_u64().to_le_bytes();
        self.setup_state = SETUP_STATE_PARAM;
        self.setup_len = match (&answer, setup.is_in()) {
            (Ok(reply), true) => want.min(i32::try_from(reply.len()).unwrap_or(i32::MAX)),
            (Err(_), true) => 0,
            (_, false) => want.min(i32::try_from(data.len()).unwrap_or(i32::MAX)),
        };
        answer
    }

    fn data_in(&mut self, ep: u8, max_len: usize) -> Result<Vec<u8>, PacketError> {
        if ep != 1 {
            return Err(PacketError::Stall);
        }
        if !self.hid.has_events() {
            return Err(PacketError::Nak);
        }
        Ok(self.poll(max_len))
    }

    fn data_out(&mut self, _ep: u8, _data: &[u8]) -> Result<(), PacketError> {
        Err(PacketError::Stall)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
