//! `qemu-xhci` in the machine: [`QemuXhci`], the [`PciDeviceModel`] that
//! runs [`XhciPci`] (the PCI function embedding the controller core)
//! with the function's bus-master DMA and the virtual clock, its QOM type
//! with QEMU's properties, the embedded core `xhci-core` (QEMU's
//! `base-xhci`, which owns the BAR0 region: principle 1) and the USB bus
//! its devices go on (`<id>.0`, or `usb-bus.0` without an id).

use std::sync::Arc;

use vmkit_memory::AccessConstraints;
use vmkit_migration::device_state::StateError;
use vmkit_migration::vmstate::VmStateDescription;
use vmkit_qom::{Object, PropertyDef, PropertyKind, TYPE_DEVICE, TypeInfo, Value};

use crate::dma::{Dma, DmaError};
use crate::glue::clock;
use crate::glue::error::GlueError;
use crate::glue::pci::bus::{PciRootBus, TYPE_BUS};
use crate::glue::pci::device::{BarRegion, BarRegionKind, BusMasterDma, PciDevice, PciDeviceModel, pci_device};
use crate::glue::pci::register_pci_type;
use crate::pci::state::PCI_NUM_PINS;
use crate::pci::{BarIndex, ConfigSpace, PciEffects, PciError, PciFunction};
use crate::usb::error::UsbError;
use crate::usb::xhci::state::{XhciState, xhci_vmsd};
use crate::usb::xhci::{Env, XhciBus, XhciConfig, XhciPci, XhciPciConfig};

/// QEMU's `TYPE_QEMU_XHCI`.
pub const TYPE_QEMU_XHCI: &str = "qemu-xhci";
/// QEMU's `TYPE_XHCI`: the controller core embedded in the function.
pub const TYPE_BASE_XHCI: &str = "base-xhci";
/// QEMU's `TYPE_USB_BUS`.
pub const TYPE_USB_BUS: &str = "usb-bus";
/// The name of the embedded core (QEMU's).
pub const CORE_CHILD: &str = "xhci-core";
/// The region of BAR0 (QEMU's container name).
pub const BAR0_NAME: &str = "xhci";

const BAR0: BarIndex = BarIndex::ALL[0];

/// DMA before the function is on its bus: every access fails (the model
/// then flags a host controller error, as on a failed DMA).
struct NoDma;

impl Dma for NoDma {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        Err(DmaError {
            kind: "read",
            addr,
            len: buf.len() as u64,
            reason: "the function is not on a bus".into(),
        })
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        Err(DmaError {
            kind: "write",
            addr,
            len: data.len() as u64,
            reason: "the function is not on a bus".into(),
        })
    }
}

/// The `qemu-xhci` model as the PCI glue runs it.
#[derive(Debug)]
pub struct QemuXhci {
    pci: XhciPci,
    dma: Option<BusMasterDma>,
    vmsd: Arc<VmStateDescription>,
}

impl QemuXhci {
    /// A function with `cfg`.
    pub fn new(cfg: XhciPciConfig) -> Result<QemuXhci, UsbError> {
        Ok(QemuXhci {
            vmsd: xhci_vmsd(&cfg)?,
            pci: XhciPci::new(cfg)?,
            dma: None,
        })
    }

    /// The function (controller, configuration space, MSI-X).
    pub fn pci(&self) -> &XhciPci {
        &self.pci
    }

    /// Runs `f` on the function with its DMA and the virtual clock.
    #[inline]
    pub fn with_env<R>(&mut self, f: impl FnOnce(&mut XhciPci, &Env<'_>) -> R) -> R {
        let none = NoDma;
        let dma: &dyn Dma = match &self.dma {
            Some(d) => d,
            None => &none,
        };
        let env = Env {
            dma,
            now_ns: clock::now_ns(),
        };
        f(&mut self.pci, &env)
    }
}

fn bar_error(offset: u64, size: u8, e: &UsbError) -> PciError {
    PciError::BarAccess {
        index: 0,
        offset,
        size,
        reason: e.to_string(),
    }
}

impl PciFunction for QemuXhci {
    fn config(&self) -> &ConfigSpace {
        self.pci.config_space()
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        self.pci.config_space_mut()
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<PciEffects, PciError> {
        self.pci.config_write(offset, size, value).map_err(|e| match e {
            UsbError::Pci(e) => e,
            other => PciError::Description(other.to_string()),
        })
    }

    #[inline]
    fn bar_read(&mut self, bar: BarIndex, offset: u64, size: u8) -> Result<u64, PciError> {
        if bar != BAR0 {
            return Err(bar_error(offset, size, &UsbError::BadAccess { offset, size }));
        }
        self.with_env(|p, env| p.bar0_read(offset, size, env))
            .map_err(|e| bar_error(offset, size, &e))
    }

    fn bar_write(&mut self, bar: BarIndex, offset: u64, size: u8, value: u64) -> Result<PciEffects, PciError> {
        if bar != BAR0 {
            return Err(bar_error(offset, size, &UsbError::BadAccess { offset, size }));
        }
        self.with_env(|p, env| p.bar0_write(offset, size, value, env))
            .map_err(|e| bar_error(offset, size, &e))
    }

    fn reset(&mut self) -> PciEffects {
        self.with_env(|p, env| p.reset(env))
    }

    fn irq_levels(&self) -> [bool; PCI_NUM_PINS] {
        [self.pci.irq_level(), false, false, false]
    }
}

fn uint_prop(obj: &Object, name: &str) -> Result<u32, String> {
    match obj.get(name).map_err(|e| e.to_string())? {
        Value::UInt(v) => Ok(u32::try_from(v).unwrap_or(u32::MAX)),
        Value::Int(v) => Ok(u32::try_from(v).unwrap_or(0)),
        other => Err(format!("property '{name}': unexpected value {other:?}")),
    }
}

fn str_prop(obj: &Object, name: &str) -> Result<String, String> {
    match obj.get(name).map_err(|e| e.to_string())? {
        Value::Str(s) => Ok(s.to_string()),
        other => Err(format!("property '{name}': unexpected value {other:?}")),
    }
}

/// The configuration of a `qemu-xhci` object from its properties
/// (QEMU's checks and messages).
fn config_of(obj: &Object, bus: &PciRootBus) -> Result<XhciPciConfig, String> {
    let msi = str_prop(obj, "msi")?;
    if msi == "on" {
        // vmkit's function has no MSI capability (QEMU's qemu-xhci has it
        // off by default); refusing beats a silently different device.
        return Err("qemu-xhci: msi=on is not supported by vmkit (MSI-X is)".into());
    }
    let msix = str_prop(obj, "msix")? != "off";
    let p2 = uint_prop(obj, "p2")?;
    let p3 = uint_prop(obj, "p3")?;
    let intrs = uint_prop(obj, "intrs")?;
    let slots = uint_prop(obj, "slots")?;
    let streams = obj.get("streams").map_err(|e| e.to_string())? == Value::Bool(true);
    if intrs == 0 {
        return Err("qemu-xhci: intrs must be at least 1".into());
    }
    Ok(XhciPciConfig {
        core: XhciConfig {
            p2,
            p3,
            intrs,
            slots,
            streams,
        },
        msix,
        bus: if bus.is_express() {
            XhciBus::ExpressRoot
        } else {
            XhciBus::Conventional
        },
        path: None,
    })
}

/// The name of the USB bus of the controller `obj`: QEMU's `<id>.0`, or
/// `usb-bus.0` for a controller without an id.
pub fn usb_bus_name(obj: &Object) -> String {
    let peripheral = obj
        .parent()
        .and_then(|p| p.canonical_path())
        .is_some_and(|p| p == "/machine/peripheral");
    match obj.name_in_parent() {
        Some(id) if peripheral => format!("{id}.0"),
        _ => format!("{TYPE_USB_BUS}.0"),
    }
}

impl PciDeviceModel for QemuXhci {
    type State = XhciState;

    fn realize(obj: &Object, bus: &PciRootBus) -> Result<QemuXhci, String> {
        let cfg = config_of(obj, bus)?;
        if let Some(core) = obj.child(CORE_CHILD) {
            if !core.is_realized() {
                core.realize().map_err(|e| e.to_string())?;
            }
        }
        let mut model = QemuXhci::new(cfg).map_err(|e| e.to_string())?;
        let name = usb_bus_name(obj);
        model.pci.core_mut().set_bus_name(name.clone());
        // QEMU resets a device before the guest sees it (the machine's
        // reset, or a hot-plugged device's own): Command, the cache line
        // size and MSI-X start from their reset values. The controller is
        // halted, so the reset does no DMA and has nothing to signal.
        let _ = model.with_env(|p, env| p.reset(env));
        // The bus QEMU's `bus=` names (`-device usb-tablet,bus=xhci.0`).
        if obj.child(&name).is_none() {
            let usb_bus = Object::new(TYPE_USB_BUS).map_err(|e| e.to_string())?;
            obj.add_child(&name, &usb_bus).map_err(|e| e.to_string())?;
        }
        Ok(model)
    }

    fn bar_region(&self, _bar: BarIndex) -> BarRegion {
        // The core takes 1–8 byte accesses and checks them itself.
        BarRegion {
            name: BAR0_NAME.into(),
            kind: BarRegionKind::Mmio(AccessConstraints {
                impl_min: 1,
                impl_max: 8,
                ..AccessConstraints::default()
            }),
        }
    }

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> XhciState {
        self.pci.save_state()
    }

    fn check_state(&self, state: &XhciState) -> Result<(), StateError> {
        self.pci.check_state(state)
    }

    fn load_state(&mut self, state: XhciState) -> Result<PciEffects, StateError> {
        // QEMU's post_load (slots and running endpoints rebuilt from guest
        // memory) runs at the next access or input instead: bus mastering
        // comes back only once the load's effects are applied.
        self.pci.load_state(state)
    }

    fn region_owner(obj: &Object) -> Object {
        obj.child(CORE_CHILD).unwrap_or_else(|| obj.clone())
    }

    fn connected(&mut self, dma: BusMasterDma, path: &str) {
        self.dma = Some(dma);
        self.pci.core_mut().set_host_path(Some(path.to_owned()));
    }

    fn unrealizing(dev: &Arc<PciDevice<QemuXhci>>) {
        // Its USB devices leave with it, as in QEMU.
        super::hid::unplug_devices_of(dev);
    }
}

/// The glue of a realized `qemu-xhci` object.
pub fn xhci_device(obj: &Object) -> Option<Arc<PciDevice<QemuXhci>>> {
    pci_device::<QemuXhci>(obj)
}

/// The realized controllers under `/machine`, in path order.
pub fn controllers() -> Vec<(Object, Arc<PciDevice<QemuXhci>>)> {
    fn walk(obj: &Object, out: &mut Vec<(Object, Arc<PciDevice<QemuXhci>>)>) {
        if obj.is_a(TYPE_QEMU_XHCI) {
            if let Some(dev) = xhci_device(obj) {
                out.push((obj.clone(), dev));
            }
        }
        let mut children = obj.children();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, c) in &children {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    if let Some(machine) = vmkit_qom::machine() {
        walk(&machine, &mut out);
    }
    out
}

/// Fires the due timers of every controller (MFINDEX wrap events) at
/// the current virtual time.
pub fn run_timers() {
    for (_, dev) in controllers() {
        let _ = dev.update(|m| Ok::<_, std::convert::Infallible>(m.with_env(|p, env| p.run_timers(env))));
    }
}

fn on_off_auto(name: &str, default: &str, description: &str) -> PropertyDef {
    PropertyDef::new(
        name,
        PropertyKind::Enum {
            name: "OnOffAuto".into(),
            values: ["on", "off", "auto"].iter().map(|&v| Arc::from(v)).collect(),
        },
    )
    .default(Value::Str(default.into()))
    .description(description)
    .before_realize()
}

fn uint32(name: &str, default: u64) -> PropertyDef {
    PropertyDef::new(
        name,
        PropertyKind::UInt {
            bits: 32,
            min: 0,
            max: u64::from(u32::MAX),
        },
    )
    .default(Value::UInt(default))
    .before_realize()
}

/// Registers `usb-bus`, `base-xhci` and `qemu-xhci`.
pub(crate) fn register() -> Result<(), GlueError> {
    TypeInfo::new(TYPE_USB_BUS)
        .parent(TYPE_BUS)
        .description("a USB bus (its devices take a port)")
        .register()?;
    TypeInfo::new(TYPE_BASE_XHCI)
        .parent(TYPE_DEVICE)
        .description("the xHCI controller core (embedded in its PCI function; owns BAR0)")
        .register()?;
    let defaults = XhciConfig::default();
    let vmsd = xhci_vmsd(&XhciPciConfig::default()).map_err(|e| GlueError::Device(e.to_string()))?;
    register_pci_type::<QemuXhci>(
        TypeInfo::new(TYPE_QEMU_XHCI)
            .description("xHCI USB host controller (QEMU's qemu-xhci)")
            .instance_init(|obj| obj.embed_child(CORE_CHILD, TYPE_BASE_XHCI).map(|_| ()))
            .class_property(on_off_auto("msi", "off", "on/off/auto (vmkit: off or auto)"))
            .class_property(on_off_auto("msix", "auto", "on/off/auto"))
            .class_property(uint32("p2", u64::from(defaults.p2)).description("USB 2 ports (at most 15)"))
            .class_property(uint32("p3", u64::from(defaults.p3)).description("USB 3 ports (at most 15)"))
            .class_property(uint32("intrs", u64::from(defaults.intrs)).description("interrupters (at most 16)"))
            .class_property(uint32("slots", u64::from(defaults.slots)).description("device slots (at most 64)"))
            .class_property(
                PropertyDef::new("streams", PropertyKind::Bool)
                    .default(Value::Bool(true))
                    .before_realize(),
            ),
        Some(vmsd),
    )
}
