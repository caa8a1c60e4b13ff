//! `usb-tablet` and `usb-kbd` in the machine: QOM types under QEMU's
//! abstract `usb-device` (properties `bus`, `port`, `usb_version`) whose
//! realize plugs a [`UsbHid`] into a port of a `qemu-xhci` (the bus
//! named by `bus=`, else the only controller; the port named by `port=`,
//! else the first free one) and whose unrealize unplugs it — the guest
//! sees a port status change either way. Input is injected through
//! [`key`], [`pointer_abs`], [`button`] and [`sync`], as QEMU's input
//! layer hands events to a HID device.

use std::sync::{Arc, Weak};

use vmkit_migration::device_state::{DeviceState, StateError};
use vmkit_migration::savevm::{register_device_model, register_device_path};
use vmkit_migration::vmstate::VmStateDescription;
use vmkit_qom::{Object, PropertyDef, PropertyKind, TYPE_DEVICE, TypeInfo, Value};

use super::input::qcode_number;
use super::xhci::{QemuXhci, TYPE_USB_BUS, controllers, xhci_device};
use crate::glue::error::GlueError;
use crate::glue::pci::PciDevice;
use crate::usb::UsbHid;
use crate::usb::hid::{Axis, Button, HidKind, PointerInput};
use crate::usb::hid_state::{UsbHidState, usb_hid_vmsd};

/// QEMU's `TYPE_USB_DEVICE`.
pub const TYPE_USB_DEVICE: &str = "usb-device";
/// QEMU's `usb-tablet`.
pub const TYPE_USB_TABLET: &str = "usb-tablet";
/// QEMU's `usb-kbd`.
pub const TYPE_USB_KBD: &str = "usb-kbd";
/// The interrupt IN endpoint both devices report on.
const INTERRUPT_IN: u8 = 0x81;

/// Where a realized USB device sits; its state migrates through it.
#[derive(Debug)]
pub struct UsbAttachment {
    xhci: Weak<PciDevice<QemuXhci>>,
    port: usize,
    kind: HidKind,
    vmsd: Arc<VmStateDescription>,
}

impl UsbAttachment {
    /// Its 1-based port on the controller.
    pub fn port(&self) -> usize {
        self.port
    }

    fn controller(&self) -> Result<Arc<PciDevice<QemuXhci>>, StateError> {
        self.xhci
            .upgrade()
            .ok_or_else(|| StateError::Refused(format!("the USB controller of port {} is gone", self.port)))
    }

    fn missing(&self) -> StateError {
        StateError::Refused(format!("no HID device in USB port {}", self.port))
    }

    /// The device's state with `state` installed — on a copy, so that a
    /// check changes nothing.
    fn restored(&self, state: &UsbHidState) -> Result<UsbHid, StateError> {
        if state.kind != self.kind {
            return Err(StateError::Refused(format!(
                "a {:?} state for a {:?}",
                state.kind, self.kind
            )));
        }
        let xhci = self.controller()?;
        let model = xhci.model();
        let mut hid = model
            .pci()
            .core()
            .device(self.port)
            .and_then(|d| d.as_any().downcast_ref::<UsbHid>())
            .ok_or_else(|| self.missing())?
            .clone();
        hid.restore(&state.dev, &state.hid).map_err(StateError::Refused)?;
        Ok(hid)
    }
}

/// QEMU's `usb-ptr` / `usb-kbd` sections: the device's USB state and its
/// HID queue, so that input not yet reported survives a migration.
impl DeviceState for UsbAttachment {
    type State = UsbHidState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<UsbHidState, StateError> {
        let xhci = self.controller()?;
        let model = xhci.model();
        let hid = model
            .pci()
            .core()
            .device(self.port)
            .and_then(|d| d.as_any().downcast_ref::<UsbHid>())
            .ok_or_else(|| self.missing())?;
        let (dev, hid) = hid.snapshot();
        Ok(UsbHidState {
            kind: self.kind,
            dev,
            hid,
        })
    }

    fn check_state(&self, state: &UsbHidState, _version_id: u32) -> Result<(), StateError> {
        self.restored(state).map(|_| ())
    }

    fn load_state(&self, state: UsbHidState, _version_id: u32) -> Result<(), StateError> {
        let restored = self.restored(&state)?;
        let xhci = self.controller()?;
        let mut installed = false;
        xhci.update(|m| {
            Ok::<_, std::convert::Infallible>(m.with_env(|p, _env| {
                if let Some(hid) = p.core_mut().device_as::<UsbHid>(self.port) {
                    *hid = restored;
                    installed = true;
                }
                Default::default()
            }))
        })
        .unwrap_or_else(|never| match never {});
        if installed { Ok(()) } else { Err(self.missing()) }
    }
}

fn attachment(obj: &Object) -> Result<Arc<UsbAttachment>, GlueError> {
    obj.user_data()
        .and_then(|d| d.downcast::<UsbAttachment>().ok())
        .ok_or_else(|| GlueError::Device(format!("{} is not a realized USB device", obj.describe())))
}

/// The attachment of a realized `usb-tablet` or `usb-kbd`.
pub fn usb_attachment(obj: &Object) -> Option<Arc<UsbAttachment>> {
    attachment(obj).ok()
}

/// The controller `bus=` names, or the only one there is (QEMU's messages).
fn find_controller(obj: &Object) -> Result<Arc<PciDevice<QemuXhci>>, String> {
    let bus = match obj.get("bus").map_err(|e| e.to_string())? {
        Value::Str(s) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    };
    match bus {
        Some(name) => {
            let bus_obj =
                vmkit_qom::resolve_path(&name, Some(TYPE_USB_BUS)).map_err(|_| format!("Bus '{name}' not found"))?;
            bus_obj
                .parent()
                .and_then(|p| xhci_device(&p))
                .ok_or_else(|| format!("Bus '{name}' not found"))
        }
        None => controllers()
            .into_iter()
            .next()
            .map(|(_, dev)| dev)
            .ok_or_else(|| format!("No '{TYPE_USB_BUS}' bus found for device '{}'", obj.type_name())),
    }
}

fn realize(obj: &Object, kind: HidKind) -> vmkit_qom::Result<()> {
    let fail = |msg: String| vmkit_qom::Error::hook_message("realize", obj.describe(), msg);
    let version = match obj.get("usb_version")? {
        Value::UInt(v) => u32::try_from(v).unwrap_or(u32::MAX),
        _ => 2,
    };
    let hid = UsbHid::new(kind, version).map_err(|e| fail(e.to_string()))?;
    let xhci = find_controller(obj).map_err(fail)?;
    let requested = match obj.get("port")? {
        Value::Str(s) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    };
    let port = {
        let model = xhci.model();
        let core = model.pci().core();
        let ports = core.config().usb_ports();
        let bus = core_bus_name(&model);
        match &requested {
            Some(text) => {
                let n = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=ports).contains(n) && core.device(*n).is_none());
                n.ok_or_else(|| fail(format!("usb port {text} (bus {bus}) not found (in use?)")))?
            }
            None => (1..=ports).find(|&n| core.device(n).is_none()).ok_or_else(|| {
                fail(format!(
                    "Error: tried to attach usb device {} to a bus with no free ports",
                    hid_name(kind)
                ))
            })?,
        }
    };
    xhci.update(|m| m.with_env(|p, env| p.attach(port, Box::new(hid), env)))
        .map_err(|e| fail(e.to_string()))?;
    let vmsd = usb_hid_vmsd(kind).map_err(|e| fail(e.to_string()))?;
    obj.set_user_data(Arc::new(UsbAttachment {
        xhci: Arc::downgrade(&xhci),
        port,
        kind,
        vmsd,
    }))?;
    Ok(())
}

/// Unplugs the USB devices attached to the controller `xhci` (its
/// unrealize: in QEMU the devices on a controller's bus go with it),
/// in path order.
pub(crate) fn unplug_devices_of(xhci: &Arc<PciDevice<QemuXhci>>) {
    fn walk(obj: &Object, xhci: &Arc<PciDevice<QemuXhci>>, out: &mut Vec<Object>) {
        let mut children = obj.children();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, child) in children {
            if usb_attachment(&child).is_some_and(|at| std::ptr::eq(at.xhci.as_ptr(), Arc::as_ptr(xhci))) {
                out.push(child.clone());
            }
            walk(&child, xhci, out);
        }
    }
    let mut attached = Vec::new();
    walk(&vmkit_qom::root(), xhci, &mut attached);
    for dev in attached {
        // Unrealized and out of the tree even if a hook complains.
        let _ = dev.unparent();
    }
}

fn core_bus_name(model: &QemuXhci) -> String {
    model.pci().core().bus_name().to_owned()
}

fn hid_name(kind: HidKind) -> &'static str {
    match kind {
        HidKind::Tablet => "QEMU USB Tablet",
        HidKind::Keyboard => "QEMU USB Keyboard",
    }
}

fn unrealize(obj: &Object) -> vmkit_qom::Result<()> {
    let Ok(at) = attachment(obj) else { return Ok(()) };
    if let Some(xhci) = at.xhci.upgrade() {
        // The controller may have lost the device already (its own unplug).
        let _ = xhci.update(|m| m.with_env(|p, env| p.detach(at.port, env).map(|(_, fx)| fx)));
    }
    Ok(())
}

/// Runs `f` on the HID device `obj` stands for, in its controller, and
/// kicks the interrupt endpoint when `f` says there is a new report.
fn with_hid(obj: &Object, f: impl FnOnce(&mut UsbHid) -> bool) -> Result<(), GlueError> {
    let at = attachment(obj)?;
    let xhci = at
        .xhci
        .upgrade()
        .ok_or_else(|| GlueError::Device(format!("{}: its USB controller is gone", obj.describe())))?;
    let mut missing = false;
    xhci.update(|m| {
        Ok::<_, std::convert::Infallible>(m.with_env(|p, env| {
            let Some(hid) = p.core_mut().device_as::<UsbHid>(at.port) else {
                missing = true;
                return Default::default();
            };
            if f(hid) {
                p.wakeup(at.port, INTERRUPT_IN, env)
            } else {
                Default::default()
            }
        }))
    })
    .unwrap_or_else(|never| match never {});
    if missing {
        return Err(GlueError::Device(format!(
            "{}: no device in USB port {}",
            obj.describe(),
            at.port
        )));
    }
    Ok(())
}

fn expect(obj: &Object, kind: HidKind) -> Result<(), GlueError> {
    let at = attachment(obj)?;
    if at.kind != kind {
        let what = match kind {
            HidKind::Tablet => "a pointer event",
            HidKind::Keyboard => "a key event",
        };
        return Err(GlueError::Device(format!("{} does not take {what}", obj.describe())));
    }
    Ok(())
}

/// A key pressed (`down`) or released on the keyboard `obj`, by QEMU key
/// name (`"a"`, `"ret"`, `"shift"`, `"pause"`).
pub fn key(obj: &Object, qcode: &str, down: bool) -> Result<(), GlueError> {
    expect(obj, HidKind::Keyboard)?;
    if qcode == "pause" {
        return with_hid(obj, |h| h.pause_event(down));
    }
    let number = qcode_number(qcode).ok_or_else(|| GlueError::Device(format!("unknown key '{qcode}'")))?;
    key_number(obj, number, down)
}

/// A key by QEMU key number (set-1 scancode, 0x80 for 0xe0-prefixed keys).
pub fn key_number(obj: &Object, number: u8, down: bool) -> Result<(), GlueError> {
    expect(obj, HidKind::Keyboard)?;
    with_hid(obj, |h| h.key_event(number, down))
}

/// An absolute position on `axis` (0..=0x7fff) for the tablet `obj`;
/// [`sync`] makes it a report.
pub fn pointer_abs(obj: &Object, axis: Axis, value: i32) -> Result<(), GlueError> {
    expect(obj, HidKind::Tablet)?;
    with_hid(obj, |h| {
        h.pointer_event(PointerInput::Abs { axis, value });
        false
    })
}

/// A button pressed or released on the tablet `obj`; [`sync`] makes it
/// a report.
pub fn button(obj: &Object, button: Button, down: bool) -> Result<(), GlueError> {
    expect(obj, HidKind::Tablet)?;
    with_hid(obj, |h| {
        h.pointer_event(PointerInput::Button { button, down });
        false
    })
}

/// The end of a batch of pointer events (QEMU's `qemu_input_event_sync`):
/// the accumulated ones become one report and the controller is kicked.
/// A keyboard has nothing to sync.
pub fn sync(obj: &Object) -> Result<(), GlueError> {
    let at = attachment(obj)?;
    if at.kind == HidKind::Keyboard {
        return Ok(());
    }
    with_hid(obj, UsbHid::pointer_sync)
}

/// A pointer button by its QAPI `InputButton` name (the ones the tablet
/// reports: `left`, `right`, `middle`, `wheel-up`, `wheel-down`).
pub fn button_by_name(name: &str) -> Option<Button> {
    Some(match name {
        "left" => Button::Left,
        "right" => Button::Right,
        "middle" => Button::Middle,
        "wheel-up" => Button::WheelUp,
        "wheel-down" => Button::WheelDown,
        _ => return None,
    })
}

/// An axis by its QAPI `InputAxis` name (`x`, `y`).
pub fn axis_by_name(name: &str) -> Option<Axis> {
    match name {
        "x" => Some(Axis::X),
        "y" => Some(Axis::Y),
        _ => None,
    }
}

fn usb_version() -> PropertyDef {
    PropertyDef::new(
        "usb_version",
        PropertyKind::UInt {
            bits: 32,
            min: 0,
            max: u64::from(u32::MAX),
        },
    )
    .default(Value::UInt(2))
    .before_realize()
}

/// Registers `usb-device`, `usb-tablet` and `usb-kbd`.
pub(crate) fn register() -> Result<(), GlueError> {
    TypeInfo::new(TYPE_USB_DEVICE)
        .parent(TYPE_DEVICE)
        .abstract_type(true)
        .description("the base of USB devices")
        .class_property(
            PropertyDef::new("bus", PropertyKind::Str)
                .default(Value::Str("".into()))
                .description("the USB bus (xhci.0); the only one when not given")
                .before_realize(),
        )
        .class_property(
            PropertyDef::new("port", PropertyKind::Str)
                .default(Value::Str("".into()))
                .description("the port on the bus (1, 2, ...); the first free one when not given")
                .before_realize(),
        )
        .register()?;
    TypeInfo::new(TYPE_USB_TABLET)
        .parent(TYPE_USB_DEVICE)
        .description("QEMU USB Tablet")
        .class_property(usb_version())
        .realize(|o| realize(o, HidKind::Tablet))
        .unrealize(unrealize)
        .register()?;
    TypeInfo::new(TYPE_USB_KBD)
        .parent(TYPE_USB_DEVICE)
        .description("QEMU USB Keyboard")
        .class_property(usb_version())
        .realize(|o| realize(o, HidKind::Keyboard))
        .unrealize(unrealize)
        .register()?;
    let vmsd = |kind| usb_hid_vmsd(kind).map_err(|e| GlueError::Device(e.to_string()));
    register_device_model::<UsbAttachment>(TYPE_USB_TABLET, vmsd(HidKind::Tablet)?)?;
    register_device_model::<UsbAttachment>(TYPE_USB_KBD, vmsd(HidKind::Keyboard)?)?;
    // QEMU's usb_get_dev_path: the controller's path, then the port's.
    register_device_path(TYPE_USB_DEVICE, |obj| {
        let at = usb_attachment(obj)?;
        Some(format!("{}/{}", at.xhci.upgrade()?.dev_path(), at.port))
    })?;
    Ok(())
}
