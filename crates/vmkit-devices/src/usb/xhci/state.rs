//! `qemu-xhci`'s migration state: QEMU's VMState "xhci" (v1) — the
//! generic `PCIDevice` part, the MSI-X table and pending bits, and the
//! "xhci-core" struct — described with vmkit's VMState builder, the typed
//! state it carries, and the [`DeviceState`] contract on [`XhciDevice`].
//!
//! The `PCIDevice` and `msix` parts are the PCI layer's
//! ([`crate::pci::state`]). QEMU names both of those fields `parent_obj`
//! and its trailer numbers them `parent_obj[0]` and `parent_obj[1]`; the
//! builder refuses a repeated name, so they carry the trailer's names
//! here. Where the description differs from QEMU's on paper but not on
//! the wire: QEMU's variable arrays count from fields that are not sent
//! (here fixed arrays of the configured sizes).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::vmstate::{ArrayLen, Field, FieldKind, VmStateDescription, VmStruct, VmValue};

use super::core::{Effects, Env, XhciConfig, XhciCore};
use super::intr::Interrupter;
use super::pci::{MSIX_CAP, XhciBus, XhciPci, XhciPciConfig};
use super::ring::Ring;
use super::slot::Slot;
use crate::pci::state::{MsixState, PciDeviceState, msix_vmsd, pci_device_vmsd};
use crate::pci::{ConfigKind, Msix, PciEffects};
use crate::usb::error::UsbError;

/// The section's description name.
pub const VMSD_NAME: &str = "xhci";
/// Events QEMU's never-sent event queue holds (`EV_QUEUE`).
pub const EV_QUEUE: u32 = (3 * 24 + 16) * 64;
/// The trailer's name of the `PCIDevice` field (QEMU's first `parent_obj`).
pub const PCI_FIELD: &str = "parent_obj[0]";
/// The trailer's name of the `msix` field (QEMU's second `parent_obj`).
pub const MSIX_FIELD: &str = "parent_obj[1]";

/// The section id QEMU gives the device at PCI path `path`
/// ("0000:00:01.0" → "0000:00:01.0/xhci").
pub fn section_idstr(path: &str) -> String {
    format!("{path}/{VMSD_NAME}")
}

type Built = Result<Arc<VmStateDescription>, UsbError>;

fn built(r: Result<Arc<VmStateDescription>, vmkit_migration::vmstate::VmStateError>) -> Built {
    r.map_err(|e| UsbError::Description(e.to_string()))
}

fn array(elem: FieldKind, n: u32) -> FieldKind {
    FieldKind::Array {
        elem: Box::new(elem),
        len: ArrayLen::Fixed(n),
    }
}

/// "xhci-port" v1.
pub fn port_vmsd() -> Built {
    built(
        VmStateDescription::builder("xhci-port")
            .version(1)
            .simple("portsc", FieldKind::U32)
            .build(),
    )
}

/// "xhci-slot" v1.
pub fn slot_vmsd() -> Built {
    built(
        VmStateDescription::builder("xhci-slot")
            .version(1)
            .simple("enabled", FieldKind::Bool)
            .simple("addressed", FieldKind::Bool)
            .build(),
    )
}

/// "xhci-event" v1 (only in the queue that is never sent).
pub fn event_vmsd() -> Built {
    built(
        VmStateDescription::builder("xhci-event")
            .version(1)
            .simple("type", FieldKind::U32)
            .simple("ccode", FieldKind::U32)
            .simple("ptr", FieldKind::U64)
            .simple("length", FieldKind::U32)
            .simple("flags", FieldKind::U32)
            .simple("slotid", FieldKind::U8)
            .simple("epid", FieldKind::U8)
            .build(),
    )
}

/// "xhci-intr" v1. The event queue's fields are guarded by a test that
/// is always false in QEMU: never on the wire.
pub fn intr_vmsd() -> Built {
    let never = |_: &VmStruct, _: u32| Ok(false);
    let mut b = VmStateDescription::builder("xhci-intr").version(1);
    for name in [
        "iman",
        "imod",
        "erstsz",
        "erstba_low",
        "erstba_high",
        "erdp_low",
        "erdp_high",
    ] {
        b = b.simple(name, FieldKind::U32);
    }
    built(
        b.simple("msix_used", FieldKind::Bool)
            .simple("er_pcs", FieldKind::Bool)
            .simple("er_start", FieldKind::U64)
            .simple("er_size", FieldKind::U32)
            .simple("er_ep_idx", FieldKind::U32)
            .simple("er_full_unused", FieldKind::Bool)
            .field(Field::new("ev_buffer_put", FieldKind::U32).exists_if(never))
            .field(Field::new("ev_buffer_get", FieldKind::U32).exists_if(never))
            .field(
                Field::new("ev_buffer", array(FieldKind::Struct(event_vmsd()?), EV_QUEUE))
                    .since(1)
                    .exists_if(never),
            )
            .build(),
    )
}

/// "xhci-ring" v1.
pub fn ring_vmsd() -> Built {
    built(
        VmStateDescription::builder("xhci-ring")
            .version(1)
            .simple("dequeue", FieldKind::U64)
            .simple("ccs", FieldKind::Bool)
            .build(),
    )
}

/// "xhci-core" v1 for a controller with `cfg` (clamped): ports, slots and
/// interrupters as arrays of the configured sizes.
pub fn core_vmsd(cfg: &XhciConfig) -> Built {
    let cfg = cfg.clamped();
    let mut b = VmStateDescription::builder("xhci-core")
        .version(1)
        .field(Field::new("ports", array(FieldKind::Struct(port_vmsd()?), cfg.p2 + cfg.p3)).since(1))
        .field(Field::new("slots", array(FieldKind::Struct(slot_vmsd()?), cfg.slots)).since(1))
        .field(Field::new("intr", array(FieldKind::Struct(intr_vmsd()?), cfg.intrs)).since(1));
    for name in [
        "usbcmd",
        "usbsts",
        "dnctrl",
        "crcr_low",
        "crcr_high",
        "dcbaap_low",
        "dcbaap_high",
        "config",
    ] {
        b = b.simple(name, FieldKind::U32);
    }
    built(
        b.simple("mfindex_start", FieldKind::I64)
            .simple("mfwrap_timer", FieldKind::Timer)
            .field(Field::new("cmd_ring", FieldKind::Struct(ring_vmsd()?)).since(1))
            .build(),
    )
}

/// QEMU's `vmstate_xhci_pci` ("xhci", v1) for a function with `cfg`.
pub fn xhci_vmsd(cfg: &XhciPciConfig) -> Built {
    let kind = match cfg.bus {
        XhciBus::Conventional => ConfigKind::Conventional,
        XhciBus::Express | XhciBus::ExpressRoot => ConfigKind::Express,
    };
    let vectors = if cfg.msix { cfg.core.clamped().intrs as u16 } else { 0 };
    let pci = pci_device_vmsd(kind).map_err(UsbError::from)?;
    let msix = msix_vmsd(vectors).map_err(UsbError::from)?;
    built(
        VmStateDescription::builder(VMSD_NAME)
            .version(1)
            .simple(PCI_FIELD, FieldKind::Struct(pci))
            .simple(MSIX_FIELD, FieldKind::Struct(msix))
            .field(Field::new("xhci", FieldKind::Struct(core_vmsd(&cfg.core)?)).since(1))
            .build(),
    )
}

/// A slot's migrated flags (its contexts live in guest memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SlotState {
    /// Enabled.
    pub enabled: bool,
    /// Addressed.
    pub addressed: bool,
}

/// "xhci-core".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XhciCoreState {
    /// PORTSC of each port.
    pub ports: Vec<u32>,
    /// Each slot's flags.
    pub slots: Vec<SlotState>,
    /// The first `intrs` interrupters.
    pub intrs: Vec<Interrupter>,
    /// USBCMD.
    pub usbcmd: u32,
    /// USBSTS.
    pub usbsts: u32,
    /// DNCTRL.
    pub dnctrl: u32,
    /// CRCR low.
    pub crcr_low: u32,
    /// CRCR high.
    pub crcr_high: u32,
    /// DCBAAP low.
    pub dcbaap_low: u32,
    /// DCBAAP high.
    pub dcbaap_high: u32,
    /// CONFIG.
    pub config: u32,
    /// When MFINDEX was 0 (virtual ns).
    pub mfindex_start: i64,
    /// The MFINDEX wrap timer's expiry (ns), -1 when not armed.
    pub mfwrap_timer: i64,
    /// The command ring.
    pub cmd_ring: Ring,
}

/// The whole "xhci" section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XhciState {
    /// `PCIDevice`.
    pub pci: PciDeviceState,
    /// MSI-X (empty without it).
    pub msix: MsixState,
    /// "xhci-core".
    pub core: XhciCoreState,
}

fn sub<'a>(s: &'a VmStruct, name: &str) -> Result<&'a VmStruct, StateError> {
    s.get(name)
        .and_then(VmValue::as_struct)
        .ok_or_else(|| StateError::field(name, "missing or not a struct"))
}

fn items<'a>(s: &'a VmStruct, name: &str) -> Result<&'a [VmValue], StateError> {
    s.get(name)
        .and_then(VmValue::as_array)
        .ok_or_else(|| StateError::field(name, "missing or not an array"))
}

fn nested<T>(prefix: &str, r: Result<T, StateError>) -> Result<T, StateError> {
    r.map_err(|e| match e {
        StateError::Field { path, reason } => StateError::field(format!("{prefix}/{path}"), reason),
        other => other,
    })
}

fn each<T>(s: &VmStruct, name: &str, f: impl Fn(&VmStruct) -> Result<T, StateError>) -> Result<Vec<T>, StateError> {
    items(s, name)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let elem = v
                .as_struct()
                .ok_or_else(|| StateError::field(format!("{name}[{i}]"), "not a struct"))?;
            nested(&format!("{name}[{i}]"), f(elem))
        })
        .collect()
}

fn intr_to_vmstate(i: &Interrupter) -> VmStruct {
    VmStruct::new()
        .with("iman", i.iman.into())
        .with("imod", i.imod.into())
        .with("erstsz", i.erstsz.into())
        .with("erstba_low", i.erstba_low.into())
        .with("erstba_high", i.erstba_high.into())
        .with("erdp_low", i.erdp_low.into())
        .with("erdp_high", i.erdp_high.into())
        .with("msix_used", i.msix_used.into())
        .with("er_pcs", i.er_pcs.into())
        .with("er_start", i.er_start.into())
        .with("er_size", i.er_size.into())
        .with("er_ep_idx", i.er_ep_idx.into())
        .with("er_full_unused", false.into())
}

fn intr_from_vmstate(s: &VmStruct) -> Result<Interrupter, StateError> {
    Ok(Interrupter {
        iman: s.field("iman")?,
        imod: s.field("imod")?,
        erstsz: s.field("erstsz")?,
        erstba_low: s.field("erstba_low")?,
        erstba_high: s.field("erstba_high")?,
        erdp_low: s.field("erdp_low")?,
        erdp_high: s.field("erdp_high")?,
        msix_used: s.field("msix_used")?,
        er_pcs: s.field("er_pcs")?,
        er_start: s.field("er_start")?,
        er_size: s.field("er_size")?,
        er_ep_idx: s.field("er_ep_idx")?,
    })
}

impl MigrationState for XhciCoreState {
    fn to_vmstate(&self) -> VmStruct {
        let ports = self
            .ports
            .iter()
            .map(|&p| VmValue::Struct(VmStruct::new().with("portsc", p.into())))
            .collect();
        let slots = self
            .slots
            .iter()
            .map(|s| {
                VmValue::Struct(
                    VmStruct::new()
                        .with("enabled", s.enabled.into())
                        .with("addressed", s.addressed.into()),
                )
            })
            .collect();
        let intrs = self.intrs.iter().map(|i| VmValue::Struct(intr_to_vmstate(i))).collect();
        VmStruct::new()
            .with("ports", VmValue::Array(ports))
            .with("slots", VmValue::Array(slots))
            .with("intr", VmValue::Array(intrs))
            .with("usbcmd", self.usbcmd.into())
            .with("usbsts", self.usbsts.into())
            .with("dnctrl", self.dnctrl.into())
            .with("crcr_low", self.crcr_low.into())
            .with("crcr_high", self.crcr_high.into())
            .with("dcbaap_low", self.dcbaap_low.into())
            .with("dcbaap_high", self.dcbaap_high.into())
            .with("config", self.config.into())
            .with("mfindex_start", self.mfindex_start.into())
            .with("mfwrap_timer", self.mfwrap_timer.into())
            .with(
                "cmd_ring",
                VmValue::Struct(
                    VmStruct::new()
                        .with("dequeue", self.cmd_ring.dequeue.into())
                        .with("ccs", self.cmd_ring.ccs.into()),
                ),
            )
    }

    fn from_vmstate(s: &VmStruct) -> Result<XhciCoreState, StateError> {
        let ring = sub(s, "cmd_ring")?;
        Ok(XhciCoreState {
            ports: each(s, "ports", |p| p.field("portsc"))?,
            slots: each(s, "slots", |p| {
                Ok(SlotState {
                    enabled: p.field("enabled")?,
                    addressed: p.field("addressed")?,
                })
            })?,
            intrs: each(s, "intr", intr_from_vmstate)?,
            usbcmd: s.field("usbcmd")?,
            usbsts: s.field("usbsts")?,
            dnctrl: s.field("dnctrl")?,
            crcr_low: s.field("crcr_low")?,
            crcr_high: s.field("crcr_high")?,
            dcbaap_low: s.field("dcbaap_low")?,
            dcbaap_high: s.field("dcbaap_high")?,
            config: s.field("config")?,
            mfindex_start: s.field("mfindex_start")?,
            mfwrap_timer: s.field("mfwrap_timer")?,
            cmd_ring: nested(
                "cmd_ring",
                (|| {
                    Ok(Ring {
                        dequeue: ring.field("dequeue")?,
                        ccs: ring.field("ccs")?,
                    })
                })(),
            )?,
        })
    }
}

impl MigrationState for XhciState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new()
            .with(PCI_FIELD, VmValue::Struct(self.pci.to_vmstate()))
            .with(MSIX_FIELD, VmValue::Struct(self.msix.to_vmstate()))
            .with("xhci", VmValue::Struct(self.core.to_vmstate()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<XhciState, StateError> {
        Ok(XhciState {
            pci: nested(PCI_FIELD, PciDeviceState::from_vmstate(sub(s, PCI_FIELD)?))?,
            msix: nested(MSIX_FIELD, MsixState::from_vmstate(sub(s, MSIX_FIELD)?))?,
            core: nested("xhci", XhciCoreState::from_vmstate(sub(s, "xhci")?))?,
        })
    }
}

impl XhciCore {
    /// The migrated state ("xhci-core").
    pub fn save_state(&self) -> XhciCoreState {
        XhciCoreState {
            ports: self.ports.iter().map(|p| p.portsc).collect(),
            slots: self
                .slots
                .iter()
                .map(|s| SlotState {
                    enabled: s.enabled,
                    addressed: s.addressed,
                })
                .collect(),
            intrs: self.intrs[..self.cfg.intrs as usize].to_vec(),
            usbcmd: self.usbcmd,
            usbsts: self.usbsts,
            dnctrl: self.dnctrl,
            crcr_low: self.crcr_low,
            crcr_high: self.crcr_high,
            dcbaap_low: self.dcbaap_low,
            dcbaap_high: self.dcbaap_high,
            config: self.config,
            mfindex_start: self.mfindex_start,
            mfwrap_timer: self.mfwrap_deadline.unwrap_or(-1),
            cmd_ring: self.cmd_ring,
        }
    }

    /// Whether `state` fits this controller (as many ports, slots and
    /// interrupters).
    pub fn check_state(&self, state: &XhciCoreState) -> Result<(), StateError> {
        let counts = [
            ("ports", state.ports.len(), self.ports.len()),
            ("slots", state.slots.len(), self.slots.len()),
            ("intr", state.intrs.len(), self.cfg.intrs as usize),
        ];
        for (name, got, want) in counts {
            if got != want {
                return Err(StateError::field(
                    name,
                    format!("{got} entries for a controller with {want}"),
                ));
            }
        }
        Ok(())
    }

    /// Installs a checked state. Slots and endpoints are rebuilt from guest
    /// memory on the next operation with an [`Env`] (or
    /// [`XhciCore::finish_load`]), as QEMU's `post_load` does.
    pub fn load_state(&mut self, state: XhciCoreState) -> Result<(), StateError> {
        self.check_state(&state)?;
        for (port, portsc) in self.ports.iter_mut().zip(state.ports) {
            port.portsc = portsc;
        }
        for (slot, s) in self.slots.iter_mut().zip(state.slots) {
            *slot = Slot {
                enabled: s.enabled,
                addressed: s.addressed,
                ..Slot::default()
            };
        }
        for (intr, s) in self.intrs.iter_mut().zip(state.intrs) {
            *intr = s;
        }
        self.usbcmd = state.usbcmd;
        self.usbsts = state.usbsts;
        self.dnctrl = state.dnctrl;
        self.crcr_low = state.crcr_low;
        self.crcr_high = state.crcr_high;
        self.dcbaap_low = state.dcbaap_low;
        self.dcbaap_high = state.dcbaap_high;
        self.config = state.config;
        self.mfindex_start = state.mfindex_start;
        self.mfwrap_deadline = (state.mfwrap_timer != -1).then_some(state.mfwrap_timer);
        self.cmd_ring = state.cmd_ring;
        self.pending_post_load = true;
        Ok(())
    }

    /// Rebuilds slots and endpoints from guest memory after a load, if
    /// that is still to do; kicks the running endpoints.
    pub fn finish_load(&mut self, env: &Env<'_>) -> Effects {
        if self.pending_post_load {
            self.post_load(env)
        } else {
            Effects::default()
        }
    }

    /// Whether a loaded state still waits for [`XhciCore::finish_load`].
    pub fn load_pending(&self) -> bool {
        self.pending_post_load
    }
}

impl XhciPci {
    /// The migrated state.
    pub fn save_state(&self) -> XhciState {
        XhciState {
            pci: PciDeviceState::capture(&self.config, [self.irq_level, false, false, false]),
            msix: MsixState::capture(self.msix.as_ref()),
            core: self.core.save_state(),
        }
    }

    fn vectors(&self) -> u16 {
        self.msix.as_ref().map_or(0, Msix::vectors)
    }

    /// Whether `state` can be loaded: QEMU's `PCIDevice` checks
    /// (`version_id` 0..=2, INTx levels 0 or 1, "Bad config data" for a
    /// different device), the MSI-X size, and the controller's sizes.
    /// Changes nothing.
    pub fn check_state(&self, state: &XhciState) -> Result<(), StateError> {
        state.pci.check(&self.config, PCI_FIELD)?;
        let want = crate::pci::state::msix_state_len(self.vectors()) as usize;
        if state.msix.bytes.len() != want {
            return Err(StateError::field(
                format!("{MSIX_FIELD}/msix"),
                format!("{} bytes, this function's MSI-X has {want}", state.msix.bytes.len()),
            ));
        }
        nested("xhci", self.core.check_state(&state.core))
    }

    /// Installs a state `check_state` accepted. The BAR mappings and bus
    /// mastering it implies come back; slots are rebuilt from guest memory
    /// by [`XhciPci::finish_load`] (or the next access).
    pub fn load_state(&mut self, state: XhciState) -> Result<PciEffects, StateError> {
        self.check_state(&state)?;
        let config = state.pci.apply(&mut self.config, PCI_FIELD)?;
        let mut out = PciEffects::from_config(config);
        let level = state.pci.irq_state[0] == 1;
        self.irq_level = level;
        if let Some(msix) = self.msix.as_mut() {
            let control = self.config.read(u16::from(MSIX_CAP) + 2, 2).map_or(0, |v| v as u16);
            out.messages = msix
                .load_raw(&state.msix.bytes, control)
                .map_err(|e| StateError::field(format!("{MSIX_FIELD}/msix"), e.to_string()))?;
            self.core.set_msix(msix.enabled());
        }
        let bus_level = level && !self.config.command().contains(crate::pci::Command::INTX_DISABLE);
        out.intx = Some(bus_level);
        nested("xhci", self.core.load_state(state.core))?;
        Ok(out)
    }

    /// Rebuilds the controller's slots from guest memory after a load
    /// (QEMU's post_load); running endpoints are kicked.
    pub fn finish_load(&mut self, env: &Env<'_>) -> PciEffects {
        let fx = self.core.finish_load(env);
        self.finish(fx, env)
    }
}

/// `qemu-xhci` as a migratable device: the model behind a lock, its
/// description, and what the last load asks of the machine.
#[derive(Debug)]
pub struct XhciDevice {
    vmsd: Arc<VmStateDescription>,
    model: Mutex<XhciPci>,
    load_effects: Mutex<PciEffects>,
}

impl XhciDevice {
    /// A function with `cfg`.
    pub fn new(cfg: XhciPciConfig) -> Result<XhciDevice, UsbError> {
        Ok(XhciDevice {
            vmsd: xhci_vmsd(&cfg)?,
            model: Mutex::new(XhciPci::new(cfg)?),
            load_effects: Mutex::new(PciEffects::default()),
        })
    }

    /// The model (register accesses go through here).
    pub fn model(&self) -> MutexGuard<'_, XhciPci> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the last load asks of the machine (BAR mappings, INTx level,
    /// messages), taken once.
    pub fn take_load_effects(&self) -> PciEffects {
        std::mem::take(&mut *self.load_effects.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl DeviceState for XhciDevice {
    type State = XhciState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<XhciState, StateError> {
        Ok(self.model().save_state())
    }

    fn check_state(&self, state: &XhciState, _version_id: u32) -> Result<(), StateError> {
        self.model().check_state(state)
    }

    fn load_state(&self, state: XhciState, _version_id: u32) -> Result<(), StateError> {
        let fx = self.model().load_state(state)?;
        *self.load_effects.lock().unwrap_or_else(PoisonError::into_inner) = fx;
        Ok(())
    }
}
