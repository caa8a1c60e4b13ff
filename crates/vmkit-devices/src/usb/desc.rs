//! Standard USB descriptors and requests, as QEMU's `desc.c` builds and
//! answers them: a device declares static tables ([`UsbDesc`]); a
//! [`DescState`] holds what the host changed (address, configuration,
//! alternate settings, remote wakeup) and answers the standard requests.

use std::collections::BTreeMap;

use super::device::{PacketError, SetupPacket, Speed};

/// Descriptor types.
pub mod dt {
    /// Device.
    pub const DEVICE: u8 = 0x01;
    /// Configuration.
    pub const CONFIG: u8 = 0x02;
    /// String.
    pub const STRING: u8 = 0x03;
    /// Interface.
    pub const INTERFACE: u8 = 0x04;
    /// Endpoint.
    pub const ENDPOINT: u8 = 0x05;
    /// Device qualifier.
    pub const DEVICE_QUALIFIER: u8 = 0x06;
    /// Other-speed configuration.
    pub const OTHER_SPEED_CONFIG: u8 = 0x07;
    /// Debug.
    pub const DEBUG: u8 = 0x0a;
    /// Binary device object store.
    pub const BOS: u8 = 0x0f;
    /// Device capability (inside the BOS).
    pub const DEVICE_CAPABILITY: u8 = 0x10;
    /// HID class descriptor.
    pub const HID: u8 = 0x21;
    /// HID report descriptor.
    pub const REPORT: u8 = 0x22;
}

/// Standard request codes (bRequest).
pub mod req {
    /// GET_STATUS.
    pub const GET_STATUS: u8 = 0x00;
    /// CLEAR_FEATURE.
    pub const CLEAR_FEATURE: u8 = 0x01;
    /// SET_FEATURE.
    pub const SET_FEATURE: u8 = 0x03;
    /// SET_ADDRESS.
    pub const SET_ADDRESS: u8 = 0x05;
    /// GET_DESCRIPTOR.
    pub const GET_DESCRIPTOR: u8 = 0x06;
    /// GET_CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 0x08;
    /// SET_CONFIGURATION.
    pub const SET_CONFIGURATION: u8 = 0x09;
    /// GET_INTERFACE.
    pub const GET_INTERFACE: u8 = 0x0a;
    /// SET_INTERFACE.
    pub const SET_INTERFACE: u8 = 0x0b;
}

/// bmRequestType << 8 prefixes of QEMU's request codes.
pub mod rt {
    /// Standard, device, IN.
    pub const DEVICE_IN: u16 = 0x8000;
    /// Standard, device, OUT.
    pub const DEVICE_OUT: u16 = 0x0000;
    /// Standard, interface, IN.
    pub const INTERFACE_IN: u16 = 0x8100;
    /// Standard, interface, OUT.
    pub const INTERFACE_OUT: u16 = 0x0100;
}

/// Configuration attributes: reserved bit that must be one.
pub const CFG_ATT_ONE: u8 = 0x80;
/// Configuration attributes: self powered.
pub const CFG_ATT_SELFPOWER: u8 = 0x40;
/// Configuration attributes: remote wakeup capable.
pub const CFG_ATT_WAKEUP: u8 = 0x20;
/// The feature selector of remote wakeup (and its GET_STATUS bit).
pub const FEATURE_REMOTE_WAKEUP: u16 = 1;
/// The string index QEMU answers "MSFT100Q" at for Microsoft OS descriptors.
pub const MSOS_STRING_INDEX: u8 = 0xee;

/// An endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDesc {
    /// bEndpointAddress (bit 7: IN).
    pub address: u8,
    /// bmAttributes (transfer type in bits 1:0).
    pub attributes: u8,
    /// wMaxPacketSize.
    pub max_packet_size: u16,
    /// bInterval.
    pub interval: u8,
}

/// An interface (one alternate setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceDesc {
    /// bInterfaceNumber.
    pub number: u8,
    /// bAlternateSetting.
    pub alternate: u8,
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
    /// iInterface.
    pub string: u8,
    /// Class-specific descriptors between the interface and its endpoints
    /// (a HID descriptor), each complete with its length byte.
    pub class_descriptors: &'static [&'static [u8]],
    /// Its endpoints.
    pub endpoints: &'static [EndpointDesc],
}

/// A configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDesc {
    /// bConfigurationValue.
    pub value: u8,
    /// iConfiguration.
    pub string: u8,
    /// bmAttributes.
    pub attributes: u8,
    /// bMaxPower (2 mA units).
    pub max_power: u8,
    /// Its interfaces.
    pub interfaces: &'static [InterfaceDesc],
}

/// What a device is at one speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDesc {
    /// bcdUSB.
    pub bcd_usb: u16,
    /// bDeviceClass.
    pub class: u8,
    /// bDeviceSubClass.
    pub subclass: u8,
    /// bDeviceProtocol.
    pub protocol: u8,
    /// bMaxPacketSize0.
    pub max_packet_size0: u8,
    /// Its configurations.
    pub configs: &'static [ConfigDesc],
}

/// The identity every speed shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceIds {
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product: u16,
    /// bcdDevice.
    pub bcd_device: u16,
    /// iManufacturer.
    pub manufacturer: u8,
    /// iProduct.
    pub product_string: u8,
    /// iSerialNumber.
    pub serial: u8,
}

/// A device's descriptor tables (QEMU's `USBDesc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbDesc {
    /// Identity.
    pub ids: DeviceIds,
    /// At full (and low) speed.
    pub full: Option<&'static DeviceDesc>,
    /// At high speed.
    pub high: Option<&'static DeviceDesc>,
    /// Strings by index (index 0 is the language table, never looked up here).
    pub strings: &'static [&'static str],
    /// Whether it offers Microsoft OS descriptors (QEMU's `msos`).
    pub msos: bool,
}

impl UsbDesc {
    /// The descriptor set for `speed`.
    pub fn at(&self, speed: Speed) -> Option<&'static DeviceDesc> {
        match speed {
            Speed::Low | Speed::Full => self.full,
            Speed::High => self.high,
            Speed::Super => None,
        }
    }
}

fn lo(v: u16) -> u8 {
    v.to_le_bytes()[0]
}

fn hi(v: u16) -> u8 {
    v.to_le_bytes()[1]
}

/// The 18-byte device descriptor. With Microsoft OS descriptors in use a
/// bcdUSB below 2.0 reads as 2.0, as QEMU's does.
pub fn device_descriptor(ids: &DeviceIds, dev: &DeviceDesc, msos: bool) -> Vec<u8> {
    let bcd = if msos && dev.bcd_usb < 0x0200 {
        0x0200
    } else {
        dev.bcd_usb
    };
    vec![
        0x12,
        dt::DEVICE,
        lo(bcd),
        hi(bcd),
        dev.class,
        dev.subclass,
        dev.protocol,
        dev.max_packet_size0,
        lo(ids.vendor),
        hi(ids.vendor),
        lo(ids.product),
        hi(ids.product),
        lo(ids.bcd_device),
        hi(ids.bcd_device),
        ids.manufacturer,
        ids.product_string,
        ids.serial,
        dev.configs.len() as u8,
    ]
}

/// The 10-byte device qualifier of `dev` (the other speed's descriptor).
pub fn device_qualifier(dev: &DeviceDesc) -> Vec<u8> {
    vec![
        0x0a,
        dt::DEVICE_QUALIFIER,
        lo(dev.bcd_usb),
        hi(dev.bcd_usb),
        dev.class,
        dev.subclass,
        dev.protocol,
        dev.max_packet_size0,
        dev.configs.len() as u8,
        0,
    ]
}

/// A configuration descriptor with its interfaces, class descriptors and
/// endpoints, wTotalLength filled in.
pub fn config_descriptor(conf: &ConfigDesc) -> Vec<u8> {
    let mut out = vec![
        0x09,
        dt::CONFIG,
        0,
        0,
        conf.interfaces.len() as u8,
        conf.value,
        conf.string,
        conf.attributes,
        conf.max_power,
    ];
    for iface in conf.interfaces {
        out.extend_from_slice(&[
            0x09,
            dt::INTERFACE,
            iface.number,
            iface.alternate,
            iface.endpoints.len() as u8,
            iface.class,
            iface.subclass,
            iface.protocol,
            iface.string,
        ]);
        for extra in iface.class_descriptors {
            out.extend_from_slice(extra);
        }
        for ep in iface.endpoints {
            out.extend_from_slice(&[
                0x07,
                dt::ENDPOINT,
                ep.address,
                ep.attributes,
                lo(ep.max_packet_size),
                hi(ep.max_packet_size),
                ep.interval,
            ]);
        }
    }
    let total = (out.len() as u16).to_le_bytes();
    out[2] = total[0];
    out[3] = total[1];
    out
}

/// The BOS descriptor: a USB 2.0 extension capability (LPM) when the
/// device has a high-speed set, as QEMU's.
pub fn bos_descriptor(desc: &UsbDesc) -> Vec<u8> {
    let mut out = vec![0x05, dt::BOS, 0, 0, 0];
    if desc.high.is_some() {
        out.extend_from_slice(&[0x07, dt::DEVICE_CAPABILITY, 0x02, 1 << 1, 0, 0, 0]);
        out[4] += 1;
    }
    let total = (out.len() as u16).to_le_bytes();
    out[2] = total[0];
    out[3] = total[1];
    out
}

/// A string descriptor: UTF-16LE of the ASCII text (QEMU widens bytes).
pub fn string_descriptor(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    // bLength is one byte: at most 126 characters fit.
    let n = bytes.len().min(126);
    let mut out = vec![(n * 2 + 2) as u8, dt::STRING];
    for &b in &bytes[..n] {
        out.extend_from_slice(&[b, 0]);
    }
    out
}

/// What the host set on a device through standard requests, and the
/// answers to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescState {
    desc: &'static UsbDesc,
    speed: Speed,
    /// The configuration value set (0: unconfigured).
    configuration: u8,
    altsetting: [u8; 16],
    addr: u8,
    remote_wakeup: bool,
    strings: BTreeMap<u8, String>,
}

impl DescState {
    /// A device with these tables, at full speed, unconfigured (QEMU's
    /// `usb_desc_init`).
    pub fn new(desc: &'static UsbDesc) -> DescState {
        let mut strings = BTreeMap::new();
        if desc.msos {
            strings.insert(MSOS_STRING_INDEX, "MSFT100Q".to_owned());
        }
        DescState {
            desc,
            speed: Speed::Full,
            configuration: 0,
            altsetting: [0; 16],
            addr: 0,
            remote_wakeup: false,
            strings,
        }
    }

    /// Attached at `speed`: that speed's tables, unconfigured (QEMU's
    /// `usb_desc_attach`).
    pub fn attach(&mut self, speed: Speed) {
        self.speed = speed;
        self.configuration = 0;
        self.altsetting = [0; 16];
    }

    /// Sets (or replaces) string `index`, as QEMU sets a serial number.
    pub fn set_string(&mut self, index: u8, text: String) {
        self.strings.insert(index, text);
    }

    /// The string at `index`: a set one, else the table's.
    pub fn string(&self, index: u8) -> Option<&str> {
        self.strings.get(&index).map(String::as_str).or_else(|| {
            self.desc
                .strings
                .get(usize::from(index))
                .copied()
                .filter(|s| !s.is_empty())
        })
    }

    /// The tables.
    pub fn desc(&self) -> &'static UsbDesc {
        self.desc
    }

    /// The speed it runs at.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// The address set by SET_ADDRESS.
    pub fn address(&self) -> u8 {
        self.addr
    }

    /// The configuration value (0: unconfigured).
    pub fn configuration(&self) -> u8 {
        self.configuration
    }

    /// Whether the host enabled remote wakeup.
    pub fn remote_wakeup(&self) -> bool {
        self.remote_wakeup
    }

    /// The address and remote-wakeup flag of a migrated device (QEMU's
    /// `USBDevice` section carries these, not the configuration).
    pub fn restore(&mut self, addr: u8, remote_wakeup: bool) {
        self.addr = addr;
        self.remote_wakeup = remote_wakeup;
    }

    /// The generic part of a bus reset: address 0, remote wakeup off. The
    /// configuration stays, as in QEMU.
    pub fn reset(&mut self) {
        self.addr = 0;
        self.remote_wakeup = false;
    }

    fn device(&self) -> Option<&'static DeviceDesc> {
        self.desc.at(self.speed)
    }

    fn config(&self) -> Option<&'static ConfigDesc> {
        let value = self.configuration;
        (value != 0)
            .then(|| self.device().and_then(|d| d.configs.iter().find(|c| c.value == value)))
            .flatten()
    }

    /// Answers a standard request, or `None` when it is not one this layer
    /// handles (the device's own requests come next, as in QEMU).
    pub fn handle(&mut self, setup: &SetupPacket) -> Option<Result<Vec<u8>, PacketError>> {
        let code = setup.code();
        let device_in = |r: u8| rt::DEVICE_IN | u16::from(r);
        let device_out = |r: u8| rt::DEVICE_OUT | u16::from(r);
        match code {
            c if c == device_out(req::SET_ADDRESS) => {
                self.addr = setup.value as u8;
                Some(Ok(Vec::new()))
            }
            c if c == device_in(req::GET_DESCRIPTOR) => self.get_descriptor(setup.value).map(Ok),
            c if c == device_in(req::GET_CONFIGURATION) => Some(Ok(vec![self.config().map_or(0, |c| c.value)])),
            c if c == device_out(req::SET_CONFIGURATION) => {
                self.set_config(setup.value);
                Some(Ok(Vec::new()))
            }
            c if c == device_in(req::GET_STATUS) => {
                let first = self.device().and_then(|d| d.configs.first());
                let attributes = self.config().or(first).map_or(0, |c| c.attributes);
                let mut status = 0u8;
                if attributes & CFG_ATT_SELFPOWER != 0 {
                    status |= 1;
                }
                if self.remote_wakeup {
                    status |= 1 << FEATURE_REMOTE_WAKEUP;
                }
                Some(Ok(vec![status, 0]))
            }
            c if c == device_out(req::CLEAR_FEATURE) || c == device_out(req::SET_FEATURE) => {
                (setup.value == FEATURE_REMOTE_WAKEUP).then(|| {
                    self.remote_wakeup = setup.request == req::SET_FEATURE;
                    Ok(Vec::new())
                })
            }
            c if c == rt::INTERFACE_IN | u16::from(req::GET_INTERFACE) => {
                let n = self.config().map_or(0, |c| c.interfaces.len());
                let i = usize::from(setup.index);
                (i < n).then(|| Ok(vec![self.altsetting.get(i).copied().unwrap_or(0)]))
            }
            c if c == rt::INTERFACE_OUT | u16::from(req::SET_INTERFACE) => {
                let found = self.config().and_then(|c| {
                    c.interfaces
                        .iter()
                        .find(|i| u16::from(i.number) == setup.index && u16::from(i.alternate) == setup.value)
                });
                let slot = self.altsetting.get_mut(usize::from(setup.index));
                match (found, slot) {
                    (Some(_), Some(slot)) => {
                        *slot = setup.value as u8;
                        Some(Ok(Vec::new()))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// QEMU accepts any SET_CONFIGURATION: an unknown value leaves the
    /// configuration as it was (its loop never reports the miss).
    fn set_config(&mut self, value: u16) {
        if value == 0 {
            self.configuration = 0;
        } else if let Some(conf) = self
            .device()
            .and_then(|d| d.configs.iter().find(|c| u16::from(c.value) == value))
        {
            self.configuration = conf.value;
        }
        self.altsetting = [0; 16];
    }

    fn get_descriptor(&self, value: u16) -> Option<Vec<u8>> {
        let (kind, index) = ((value >> 8) as u8, usize::from(value as u8));
        let device = self.device()?;
        let other = match self.speed {
            Speed::High => self.desc.full,
            _ => self.desc.high,
        };
        match kind {
            dt::DEVICE => Some(device_descriptor(&self.desc.ids, device, self.desc.msos)),
            dt::CONFIG => device.configs.get(index).map(config_descriptor),
            dt::STRING => Some(match index {
                0 => vec![4, dt::STRING, 0x09, 0x04],
                i => self.string(i as u8).map(string_descriptor).unwrap_or_default(),
            }),
            dt::DEVICE_QUALIFIER => other.map(device_qualifier),
            dt::OTHER_SPEED_CONFIG => other.and_then(|o| o.configs.get(index)).map(|c| {
                let mut d = config_descriptor(c);
                d[1] = dt::OTHER_SPEED_CONFIG;
                d
            }),
            dt::BOS => Some(bos_descriptor(self.desc)),
            // QEMU ignores debug descriptor requests without an answer.
            dt::DEBUG => None,
            _ => None,
        }
    }
}
