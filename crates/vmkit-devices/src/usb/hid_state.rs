//! Migration of `usb-tablet` and `usb-kbd`: QEMU 7.2's "usb-ptr" and
//! "usb-kbd" sections (v1) — the generic "USBDevice" struct (`dev`) then
//! the HID state (`hid`: "HIDPointerDevice" or "HIDKeyboardDevice") — and
//! the typed state they carry.

use std::sync::Arc;

use vmkit_migration::device_state::{MigrationState, StateError};
use vmkit_migration::vmstate::{ArrayLen, FieldKind, VmStateDescription, VmStateError, VmStruct, VmValue};

use super::hid::{HidKind, HidSnapshot, QUEUE_LENGTH};
use super::hid_device::UsbDeviceSnapshot;

/// The section name of a device of `kind`.
pub fn vmsd_name(kind: HidKind) -> &'static str {
    match kind {
        HidKind::Tablet => "usb-ptr",
        HidKind::Keyboard => "usb-kbd",
    }
}

fn array(elem: FieldKind, len: usize) -> FieldKind {
    FieldKind::Array {
        elem: Box::new(elem),
        len: ArrayLen::Fixed(len as u32),
    }
}

/// "USBDevice" v1 (`vmstate_usb_device`).
pub fn usb_device_vmsd() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("USBDevice")
        .version(1)
        .minimum_version(1)
        .simple("addr", FieldKind::U8)
        .simple("state", FieldKind::I32)
        .simple("remote_wakeup", FieldKind::I32)
        .simple("setup_state", FieldKind::I32)
        .simple("setup_len", FieldKind::I32)
        .simple("setup_index", FieldKind::I32)
        .simple("setup_buf", array(FieldKind::U8, 8))
        .build()
}

fn pointer_queue_vmsd() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("HIDPointerEventQueue")
        .version(1)
        .minimum_version(1)
        .simple("xdx", FieldKind::I32)
        .simple("ydy", FieldKind::I32)
        .simple("dz", FieldKind::I32)
        .simple("buttons_state", FieldKind::I32)
        .build()
}

/// "HIDPointerDevice" v1 or "HIDKeyboardDevice" v1.
pub fn hid_vmsd(kind: HidKind) -> Result<Arc<VmStateDescription>, VmStateError> {
    match kind {
        HidKind::Tablet => VmStateDescription::builder("HIDPointerDevice")
            .version(1)
            .minimum_version(1)
            .simple(
                "ptr.queue",
                array(FieldKind::Struct(pointer_queue_vmsd()?), QUEUE_LENGTH),
            )
            .simple("head", FieldKind::U32)
            .simple("n", FieldKind::U32)
            .simple("protocol", FieldKind::I32)
            .simple("idle", FieldKind::U8)
            .build(),
        HidKind::Keyboard => VmStateDescription::builder("HIDKeyboardDevice")
            .version(1)
            .minimum_version(1)
            .simple("kbd.keycodes", array(FieldKind::U32, QUEUE_LENGTH))
            .simple("head", FieldKind::U32)
            .simple("n", FieldKind::U32)
            .simple("kbd.modifiers", FieldKind::U16)
            .simple("kbd.leds", FieldKind::U8)
            .simple("kbd.key", array(FieldKind::U8, 16))
            .simple("kbd.keys", FieldKind::I32)
            .simple("protocol", FieldKind::I32)
            .simple("idle", FieldKind::U8)
            .build(),
    }
}

/// "usb-ptr" v1 or "usb-kbd" v1.
pub fn usb_hid_vmsd(kind: HidKind) -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder(vmsd_name(kind))
        .version(1)
        .minimum_version(1)
        .simple("dev", FieldKind::Struct(usb_device_vmsd()?))
        .simple("hid", FieldKind::Struct(hid_vmsd(kind)?))
        .build()
}

/// The state a `usb-tablet` or `usb-kbd` section carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbHidState {
    /// Which section layout (not on the wire: the section's name says it).
    pub kind: HidKind,
    /// `dev`.
    pub dev: UsbDeviceSnapshot,
    /// `hid`.
    pub hid: HidSnapshot,
}

fn sub<'a>(s: &'a VmStruct, name: &str) -> Result<&'a VmStruct, StateError> {
    s.get(name)
        .and_then(VmValue::as_struct)
        .ok_or_else(|| StateError::field(name, "missing or not a struct"))
}

fn fixed<T: Copy + Default, const N: usize>(
    s: &VmStruct,
    name: &str,
    f: impl Fn(&VmValue) -> Option<T>,
) -> Result<[T; N], StateError> {
    let items = s
        .get(name)
        .and_then(VmValue::as_array)
        .ok_or_else(|| StateError::field(name, "missing or not an array"))?;
    if items.len() != N {
        return Err(StateError::field(name, format!("{} elements, not {N}", items.len())));
    }
    let mut out = [T::default(); N];
    for (i, (o, v)) in out.iter_mut().zip(items).enumerate() {
        *o = f(v).ok_or_else(|| StateError::field(format!("{name}[{i}]"), format!("{v:?} does not fit")))?;
    }
    Ok(out)
}

fn u8_of(v: &VmValue) -> Option<u8> {
    v.as_u64().and_then(|v| u8::try_from(v).ok())
}

fn bytes(values: &[u8]) -> VmValue {
    VmValue::Array(values.iter().map(|&b| VmValue::from(b)).collect())
}

impl UsbHidState {
    fn dev_to_vmstate(&self) -> VmStruct {
        let d = &self.dev;
        VmStruct::new()
            .with("addr", d.addr.into())
            .with("state", d.state.into())
            .with("remote_wakeup", d.remote_wakeup.into())
            .with("setup_state", d.setup_state.into())
            .with("setup_len", d.setup_len.into())
            .with("setup_index", d.setup_index.into())
            .with("setup_buf", bytes(&d.setup_buf))
    }

    fn hid_to_vmstate(&self) -> VmStruct {
        let h = &self.hid;
        match self.kind {
            HidKind::Tablet => VmStruct::new()
                .with(
                    "ptr.queue",
                    VmValue::Array(
                        h.queue
                            .iter()
                            .map(|q| {
                                VmValue::Struct(
                                    VmStruct::new()
                                        .with("xdx", q[0].into())
                                        .with("ydy", q[1].into())
                                        .with("dz", q[2].into())
                                        .with("buttons_state", q[3].into()),
                                )
                            })
                            .collect(),
                    ),
                )
                .with("head", h.head.into())
                .with("n", h.n.into())
                .with("protocol", h.protocol.into())
                .with("idle", h.idle.into()),
            HidKind::Keyboard => VmStruct::new()
                .with(
                    "kbd.keycodes",
                    VmValue::Array(h.keycodes.iter().map(|&k| VmValue::from(k)).collect()),
                )
                .with("head", h.head.into())
                .with("n", h.n.into())
                .with("kbd.modifiers", h.modifiers.into())
                .with("kbd.leds", h.leds.into())
                .with("kbd.key", bytes(&h.key))
                .with("kbd.keys", h.keys.into())
                .with("protocol", h.protocol.into())
                .with("idle", h.idle.into()),
        }
    }

    fn dev_from_vmstate(s: &VmStruct) -> Result<UsbDeviceSnapshot, StateError> {
        Ok(UsbDeviceSnapshot {
            addr: s.field("addr")?,
            state: s.field("state")?,
            remote_wakeup: s.field("remote_wakeup")?,
            setup_state: s.field("setup_state")?,
            setup_len: s.field("setup_len")?,
            setup_index: s.field("setup_index")?,
            setup_buf: fixed(s, "setup_buf", u8_of)?,
        })
    }

    fn hid_from_vmstate(s: &VmStruct) -> Result<(HidKind, HidSnapshot), StateError> {
        let mut hid = HidSnapshot {
            queue: [[0; 4]; QUEUE_LENGTH],
            keycodes: [0; QUEUE_LENGTH],
            head: s.field("head")?,
            n: s.field("n")?,
            modifiers: 0,
            leds: 0,
            key: [0; 16],
            keys: 0,
            protocol: s.field("protocol")?,
            idle: s.field("idle")?,
        };
        if s.get("ptr.queue").is_some() {
            let entries: [VmStruct; QUEUE_LENGTH] = {
                let items = s
                    .get("ptr.queue")
                    .and_then(VmValue::as_array)
                    .ok_or_else(|| StateError::field("ptr.queue", "not an array"))?;
                let structs: Vec<VmStruct> = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_struct()
                            .cloned()
                            .ok_or_else(|| StateError::field(format!("ptr.queue[{i}]"), "not a struct"))
                    })
                    .collect::<Result<_, _>>()?;
                structs.try_into().map_err(|v: Vec<VmStruct>| {
                    StateError::field("ptr.queue", format!("{} entries, not {QUEUE_LENGTH}", v.len()))
                })?
            };
            for (q, e) in hid.queue.iter_mut().zip(&entries) {
                *q = [
                    e.field("xdx")?,
                    e.field("ydy")?,
                    e.field("dz")?,
                    e.field("buttons_state")?,
                ];
            }
            return Ok((HidKind::Tablet, hid));
        }
        hid.keycodes = fixed(s, "kbd.keycodes", |v| v.as_u64().and_then(|v| u32::try_from(v).ok()))?;
        hid.modifiers = s.field("kbd.modifiers")?;
        hid.leds = s.field("kbd.leds")?;
        hid.key = fixed(s, "kbd.key", u8_of)?;
        hid.keys = s.field("kbd.keys")?;
        Ok((HidKind::Keyboard, hid))
    }
}

impl MigrationState for UsbHidState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new()
            .with("dev", VmValue::Struct(self.dev_to_vmstate()))
            .with("hid", VmValue::Struct(self.hid_to_vmstate()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<Self, StateError> {
        let dev = UsbHidState::dev_from_vmstate(sub(s, "dev")?)?;
        let (kind, hid) = UsbHidState::hid_from_vmstate(sub(s, "hid")?)?;
        Ok(UsbHidState { kind, dev, hid })
    }
}

#[cfg(test)]
mod tests {
    use vmkit_migration::vmstate::{VmReader, decode, encode};

    use super::*;
    use crate::usb::UsbHid;

    fn round_trip(kind: HidKind) -> Result<(), Box<dyn std::error::Error>> {
        let mut dev = UsbHid::new(kind, 2)?;
        if kind == HidKind::Tablet {
            dev.move_to(0x1234, 0x567);
        } else {
            dev.key_event(0x1e, true);
        }
        let (usb, hid) = dev.snapshot();
        let state = UsbHidState { kind, dev: usb, hid };
        let vmsd = usb_hid_vmsd(kind)?;
        let mut bytes = Vec::new();
        encode(&vmsd, &mut state.to_vmstate(), &mut bytes, 0)?;
        // addr, state .. setup_index, setup_buf: 1 + 5 * 4 + 8 bytes first.
        assert_eq!(
            bytes.len() - 29,
            if kind == HidKind::Tablet { 16 * 16 + 13 } else { 100 }
        );
        let back = UsbHidState::from_vmstate(&decode(&vmsd, 1, &mut VmReader::new(&bytes[..], 0))?)?;
        assert_eq!(back, state);
        let mut fresh = UsbHid::new(kind, 2)?;
        fresh.restore(&back.dev, &back.hid)?;
        assert_eq!(fresh.hid(), dev.hid());
        Ok(())
    }

    #[test]
    fn both_sections_round_trip_with_a_queued_report() -> Result<(), Box<dyn std::error::Error>> {
        round_trip(HidKind::Tablet)?;
        round_trip(HidKind::Keyboard)
    }

    #[test]
    fn out_of_range_counts_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let mut dev = UsbHid::new(HidKind::Tablet, 2)?;
        let (usb, mut hid) = dev.snapshot();
        hid.n = 17;
        let err = dev.restore(&usb, &hid).err().unwrap_or_default();
        assert!(err.contains("beyond the 16-entry queue"), "{err}");
        let (mut usb, hid) = dev.snapshot();
        usb.setup_len = 4096;
        assert!(dev.restore(&usb, &hid).is_err());
        Ok(())
    }
}
