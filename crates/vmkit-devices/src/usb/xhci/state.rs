//! `qemu-xhci`'s migration state: QEMU's VMState "xhci" (v1) — the
//! generic `PCIDevice` part, the MSI-X table and pending bits, and the
//! "xhci-core" struct — described with vmkit's VMState builder, the typed
//! state it carries, and the [`DeviceState`] contract on [`XhciDevice`].
//!
//! Where the description differs from QEMU's on paper but not on the
//! wire: QEMU names the `PCIDevice` and MSI-X fields both `parent_obj`
//! (the builder refuses a repeated name: the MSI-X one is `msix` here);
//! its variable arrays count from fields that are not sent (here fixed
//! arrays of the configured sizes); its `config` is two fields with
//! existence tests (here one buffer of the space's size); and the
//! `int32 le`, `pci config`, `pci irq state` and `msix` codecs are written
//! as `int32`, `buffer`, four `int32`s and a `buffer`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::vmstate::{ArrayLen, Field, FieldKind, VmStateDescription, VmStruct, VmValue};

use super::core::{Effects, Env, XhciConfig, XhciCore};
use super::intr::Interrupter;
use super::pci::{MSIX_CAP, PciEffects, XhciBus, XhciPci, XhciPciConfig};
use super::ring::Ring;
use super::slot::Slot;
use crate::pci::msix::{CONTROL_ENABLE, CONTROL_FUNCTION_MASK, ENTRY_SIZE};
use crate::pci::regs::Status;
use crate::pci::{ConfigKind, Msix};
use crate::usb::error::UsbError;

/// The section's description name.
pub const VMSD_NAME: &str = "xhci";
/// Events QEMU's never-sent event queue holds (`EV_QUEUE`).
pub const EV_QUEUE: u32 = (3 * 24 + 16) * 64;
/// The `PCIDevice` version QEMU loads up to (`PCIDevice.version_id`).
pub const PCI_DEVICE_VERSION: i32 = 2;

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

/// QEMU's `vmstate_pci_device` ("PCIDevice", v2, min 1) for a space of
/// `kind`.
pub fn pci_device_vmsd(kind: ConfigKind) -> Built {
    built(
        VmStateDescription::builder("PCIDevice")
            .version(2)
            .minimum_version(1)
            .simple("version_id", FieldKind::I32)
            .simple(
                "config",
                FieldKind::Buffer {
                    len: kind.size() as u32,
                },
            )
            .field(Field::new("irq_state", array(FieldKind::I32, 4)).since(2))
            .build(),
    )
}

/// QEMU's `vmstate_msix` ("msix"): the table, then one pending bit per
/// vector in whole bytes; nothing without MSI-X.
pub fn msix_vmsd(vectors: u16) -> Built {
    built(
        VmStateDescription::builder("msix")
            .simple(
                "msix",
                FieldKind::Buffer {
                    len: msix_bytes(vectors),
                },
            )
            .build(),
    )
}

fn msix_bytes(vectors: u16) -> u32 {
    u32::from(vectors) * ENTRY_SIZE as u32 + u32::from(vectors).div_ceil(8)
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
    built(
        VmStateDescription::builder(VMSD_NAME)
            .version(1)
            .simple("parent_obj", FieldKind::Struct(pci_device_vmsd(kind)?))
            .simple("msix", FieldKind::Struct(msix_vmsd(vectors)?))
            .field(Field::new("xhci", FieldKind::Struct(core_vmsd(&cfg.core)?)).since(1))
            .build(),
    )
}

/// The generic PCI part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceState {
    /// `PCIDevice.version_id` (0 to 2 load).
    pub version_id: i32,
    /// The configuration space (Status.INTERRUPT clear: it follows
    /// `irq_state`).
    pub config: Vec<u8>,
    /// INTA–INTD levels (0 or 1).
    pub irq_state: [i32; 4],
}

/// MSI-X: the table as the guest wrote it and the pending bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsixState {
    /// 16 bytes per vector.
    pub table: Vec<u8>,
    /// One bit per vector, whole bytes.
    pub pba: Vec<u8>,
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
        let irq = self.pci.irq_state.iter().map(|&v| v.into()).collect();
        let pci = VmStruct::new()
            .with("version_id", self.pci.version_id.into())
            .with("config", self.pci.config.clone().into())
            .with("irq_state", VmValue::Array(irq));
        let mut msix = self.msix.table.clone();
        msix.extend_from_slice(&self.msix.pba);
        VmStruct::new()
            .with("parent_obj", VmValue::Struct(pci))
            .with("msix", VmValue::Struct(VmStruct::new().with("msix", msix.into())))
            .with("xhci", VmValue::Struct(self.core.to_vmstate()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<XhciState, StateError> {
        let pci = sub(s, "parent_obj")?;
        let irq = nested("parent_obj", items(pci, "irq_state"))?;
        let mut irq_state = [0i32; 4];
        if irq.len() != 4 {
            return Err(StateError::field(
                "parent_obj/irq_state",
                format!("{} pins, not 4", irq.len()),
            ));
        }
        for (i, (slot, v)) in irq_state.iter_mut().zip(irq).enumerate() {
            *slot = v
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| StateError::field(format!("parent_obj/irq_state[{i}]"), "not an int32"))?;
        }
        let msix: Vec<u8> = nested("msix", sub(s, "msix")?.field("msix"))?;
        Ok(XhciState {
            pci: PciDeviceState {
                version_id: nested("parent_obj", pci.field("version_id"))?,
                config: nested("parent_obj", pci.field("config"))?,
                irq_state,
            },
            // Split by the receiver's vector count in check_state / load.
            msix: MsixState {
                table: msix,
                pba: Vec::new(),
            },
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
        let mut config = self.config.bytes().to_vec();
        // Status.INTERRUPT travels as irq_state (QEMU clears it to save).
        let status = crate::pci::HeaderReg::Status.offset();
        config[status] &= !(Status::INTERRUPT.bits() as u8);
        let msix = self.msix.as_ref().map_or_else(MsixState::default, |m| {
            let mut table = Vec::with_capacity(m.table_size() as usize);
            for at in (0..m.table_size()).step_by(4) {
                let dword = m.table_read(at, 4).unwrap_or(0) as u32;
                table.extend_from_slice(&dword.to_le_bytes());
            }
            let mut pba = vec![0u8; usize::from(m.vectors()).div_ceil(8)];
            for v in 0..m.vectors() {
                if m.is_pending(v) {
                    pba[usize::from(v / 8)] |= 1 << (v % 8);
                }
            }
            MsixState { table, pba }
        });
        XhciState {
            pci: PciDeviceState {
                version_id: PCI_DEVICE_VERSION,
                config,
                irq_state: [i32::from(self.irq_level), 0, 0, 0],
            },
            msix,
            core: self.core.save_state(),
        }
    }

    fn vectors(&self) -> u16 {
        self.msix.as_ref().map_or(0, Msix::vectors)
    }

    /// Whether `state` can be loaded: QEMU's checks (`version_id` 0..=2,
    /// INTx levels 0 or 1, "Bad config data" for a different device), the
    /// MSI-X size, and the controller's sizes. Changes nothing.
    pub fn check_state(&self, state: &XhciState) -> Result<(), StateError> {
        if !(0..=PCI_DEVICE_VERSION).contains(&state.pci.version_id) {
            return Err(StateError::field(
                "parent_obj/version_id",
                format!("{} is not in 0..={PCI_DEVICE_VERSION}", state.pci.version_id),
            ));
        }
        for (i, &level) in state.pci.irq_state.iter().enumerate() {
            if !matches!(level, 0 | 1) {
                return Err(StateError::field(
                    format!("parent_obj/irq_state[{i}]"),
                    format!("irq state {level}: must be 0 or 1."),
                ));
            }
        }
        let mut probe = self.config.clone();
        probe
            .load(&state.pci.config)
            .map_err(|e| StateError::field("parent_obj/config", e.to_string()))?;
        let (table, pba) = split_msix(&state.msix, self.vectors());
        let want = msix_bytes(self.vectors()) as usize;
        if table.len() + pba.len() != want {
            return Err(StateError::field(
                "msix/msix",
                format!("{} bytes, this function's MSI-X has {want}", table.len() + pba.len()),
            ));
        }
        nested("xhci", self.core.check_state(&state.core))
    }

    /// Installs a state `check_state` accepted. The BAR mappings and bus
    /// mastering it implies come back; slots are rebuilt from guest memory
    /// by [`XhciPci::finish_load`] (or the next access).
    pub fn load_state(&mut self, state: XhciState) -> Result<PciEffects, StateError> {
        self.check_state(&state)?;
        let config = self
            .config
            .load(&state.pci.config)
            .map_err(|e| StateError::field("parent_obj/config", e.to_string()))?;
        let mut out = PciEffects {
            config,
            ..PciEffects::default()
        };
        let level = state.pci.irq_state[0] == 1;
        self.irq_level = level;
        self.config.set_status(Status::INTERRUPT, level);
        if let Some(old) = self.msix.as_ref() {
            let (table, pba) = split_msix(&state.msix, old.vectors());
            let control = self.config.read(u16::from(MSIX_CAP) + 2, 2).map_or(0, |v| v as u16);
            let (msix, sent) = restore_msix(old.vectors(), table, pba, control)
                .map_err(|e| StateError::field("msix/msix", e.to_string()))?;
            out.messages = sent;
            self.core.set_msix(msix.enabled());
            self.msix = Some(msix);
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

/// The table and pending bytes of a state, split for `vectors` vectors.
fn split_msix(state: &MsixState, vectors: u16) -> (&[u8], &[u8]) {
    if !state.pba.is_empty() {
        return (&state.table, &state.pba);
    }
    let at = (usize::from(vectors) * ENTRY_SIZE as usize).min(state.table.len());
    state.table.split_at(at)
}

/// An MSI-X state from a migrated table and pending bits under message
/// control `control`. As QEMU's load, a vector pending but no longer
/// masked is cleared without a message (its vector is not in use yet).
fn restore_msix(
    vectors: u16,
    table: &[u8],
    pba: &[u8],
    control: u16,
) -> Result<(Msix, Vec<crate::pci::MsiMessage>), crate::pci::PciError> {
    let mut msix = Msix::new(vectors)?;
    // Enabled and function-masked: a notify makes a vector pending.
    msix.write_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
    for (i, word) in table.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        msix.table_write(i as u64 * 4, 4, u64::from(v))?;
    }
    let function_masked = control & CONTROL_ENABLE == 0 || control & CONTROL_FUNCTION_MASK != 0;
    for v in 0..vectors {
        let pending = pba.get(usize::from(v / 8)).is_some_and(|b| b & (1 << (v % 8)) != 0);
        let vector_masked = msix.table_read(u64::from(v) * ENTRY_SIZE + 12, 4)? & 1 != 0;
        if pending && (function_masked || vector_masked) {
            msix.notify(v);
        }
    }
    let sent = msix.write_control(control);
    Ok((msix, sent))
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
