//! [`XhciCore`]: QEMU's `base-xhci` — the register file of BAR0 (apart
//! from the MSI-X windows the PCI wrapper overlays), ports, interrupters
//! and their event rings, and the device slots the command ring manages.
//!
//! Register accesses return [`Effects`]: doorbells to ring (the owner
//! runs them with [`XhciCore::ring_doorbell`]) and interrupt requests.
//! Whatever QEMU does synchronously on a register write — writing an
//! event, reading the event ring segment table — happens inside the
//! write, through the [`Env`]'s DMA.

use super::intr::{Event, Interrupter, SEGMENT_TRBS};
use super::port::Port;
use super::regs::{
    self, Bar0Reg, CapReg, Crcr, ERDP_EHB, Iman, IntrReg, MAX_INTRS, MAX_PORTS_2, MAX_PORTS_3, MAX_SLOTS, OperReg,
    PortReg, UsbCmd, UsbSts,
};
use super::ring::Ring;
use super::slot::{Endpoint, Slot};
use super::trb::{CompletionCode, TRB_SIZE, TrbType};
use crate::dma::Dma;
use crate::usb::device::{SpeedMask, UsbDevice};
use crate::usb::error::UsbError;

/// Nanoseconds per microframe (MFINDEX ticks every 125 µs).
pub const MICROFRAME_NS: i64 = 125_000;
/// MFINDEX wraps at 2^14 microframes.
const MFINDEX_WRAP: i64 = 0x4000;

/// The controller's properties (`p2`, `p3`, `intrs`, `slots`, `streams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XhciConfig {
    /// USB 2 ports (QEMU clamps to 15).
    pub p2: u32,
    /// USB 3 ports (QEMU clamps to 15).
    pub p3: u32,
    /// Interrupters (QEMU clamps to 16 and rounds up to a power of two).
    pub intrs: u32,
    /// Device slots (QEMU clamps to 1–64).
    pub slots: u32,
    /// Whether primary streams are advertised (HCCPARAMS1.MaxPSASize 7).
    pub streams: bool,
}

impl Default for XhciConfig {
    /// `qemu-xhci`'s defaults: 4 + 4 ports, 16 interrupters, 64 slots, streams on.
    fn default() -> XhciConfig {
        XhciConfig {
            p2: 4,
            p3: 4,
            intrs: MAX_INTRS,
            slots: MAX_SLOTS,
            streams: true,
        }
    }
}

impl XhciConfig {
    /// The values QEMU realizes with: ports clamped to 15 each,
    /// interrupters to 16 then up to a power of two (at least 1), slots
    /// to 1–64.
    pub fn clamped(self) -> XhciConfig {
        let intrs = self.intrs.clamp(1, MAX_INTRS).next_power_of_two();
        XhciConfig {
            p2: self.p2.min(MAX_PORTS_2),
            p3: self.p3.min(MAX_PORTS_3),
            intrs,
            slots: self.slots.clamp(1, MAX_SLOTS),
            streams: self.streams,
        }
    }

    /// Port register sets (p2 + p3).
    pub fn ports(&self) -> usize {
        (self.p2 + self.p3) as usize
    }

    /// USB ports on the bus (max(p2, p3)): port `i` pairs USB3 port
    /// `i + 1` with USB2 port `p3 + i + 1`.
    pub fn usb_ports(&self) -> usize {
        self.p2.max(self.p3) as usize
    }
}

/// What a controller operation reaches: guest memory as the device sees
/// it, and the virtual clock.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// Guest memory through the device's bus-master address space.
    pub dma: &'a dyn Dma,
    /// The virtual clock, in nanoseconds.
    pub now_ns: i64,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("now_ns", &self.now_ns)
            .finish_non_exhaustive()
    }
}

/// A doorbell write to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Doorbell {
    /// Doorbell 0 with value 0: process the command ring.
    Command,
    /// A device slot's doorbell: kick endpoint `endpoint` (DCI 1–31).
    Endpoint {
        /// Slot id (1–64).
        slot: u8,
        /// Endpoint id (DCI).
        endpoint: u8,
        /// Stream id.
        stream: u16,
    },
}

/// An interrupt request from the core to its PCI function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Irq {
    /// Notify MSI-X vector `n` (interrupter n).
    Vector(u16),
    /// Drive interrupter 0's INTx line to this level (only while MSI-X is off).
    Level(bool),
}

/// What an operation asks its owner to do next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Doorbells rung, in order: run each with [`XhciCore::ring_doorbell`].
    pub doorbells: Vec<Doorbell>,
    /// Interrupt requests, in order.
    pub irqs: Vec<Irq>,
}

impl Effects {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.doorbells.is_empty() && self.irqs.is_empty()
    }

    /// Appends `other`'s requests.
    pub fn extend(&mut self, other: Effects) {
        self.doorbells.extend(other.doorbells);
        self.irqs.extend(other.irqs);
    }
}

/// The xHCI controller core.
#[derive(Debug)]
pub struct XhciCore {
    pub(super) cfg: XhciConfig,
    pub(super) usbcmd: u32,
    pub(super) usbsts: u32,
    pub(super) dnctrl: u32,
    pub(super) crcr_low: u32,
    pub(super) crcr_high: u32,
    pub(super) dcbaap_low: u32,
    pub(super) dcbaap_high: u32,
    pub(super) config: u32,
    pub(super) ports: Vec<Port>,
    pub(super) devices: Vec<Option<Box<dyn UsbDevice>>>,
    pub(super) slots: Vec<Slot>,
    pub(super) intrs: Vec<Interrupter>,
    pub(super) mfindex_start: i64,
    pub(super) mfwrap_deadline: Option<i64>,
    pub(super) cmd_ring: Ring,
    pub(super) msix: bool,
    pub(super) host_path: Option<String>,
    pub(super) bus_name: String,
    /// Slots and endpoints must be rebuilt from guest memory (after a load).
    pub(super) pending_post_load: bool,
}

impl XhciCore {
    /// A controller with `config` (clamped as QEMU clamps it), in its
    /// reset state at time 0: halted, ports powered and empty.
    pub fn new(config: XhciConfig) -> XhciCore {
        let cfg = config.clamped();
        let mut ports = Vec::with_capacity(cfg.ports());
        for i in 0..cfg.p3 as usize {
            ports.push(Port {
                portsc: 0,
                number: (i + 1) as u8,
                speeds: SpeedMask::SUPER,
                usb_port: i,
            });
        }
        for i in 0..cfg.p2 as usize {
            ports.push(Port {
                portsc: 0,
                number: (cfg.p3 as usize + i + 1) as u8,
                speeds: SpeedMask::LOW | SpeedMask::FULL | SpeedMask::HIGH,
                usb_port: i,
            });
        }
        let mut core = XhciCore {
            cfg,
            usbcmd: 0,
            usbsts: UsbSts::HCH.bits(),
            dnctrl: 0,
            crcr_low: 0,
            crcr_high: 0,
            dcbaap_low: 0,
            dcbaap_high: 0,
            config: 0,
            ports,
            devices: (0..cfg.usb_ports()).map(|_| None).collect(),
            slots: (0..cfg.slots).map(|_| Slot::default()).collect(),
            intrs: vec![Interrupter::default(); MAX_INTRS as usize],
            mfindex_start: 0,
            mfwrap_deadline: None,
            cmd_ring: Ring::default(),
            msix: false,
            host_path: None,
            bus_name: "usb-bus.0".into(),
            pending_post_load: false,
        };
        for i in 0..core.ports.len() {
            core.port_update(i, false, None, &mut Effects::default());
        }
        for intr in &mut core.intrs {
            intr.reset();
        }
        core
    }

    /// The (clamped) configuration.
    pub fn config(&self) -> &XhciConfig {
        &self.cfg
    }

    /// The controller's device path ("0000:00:01.0"), which QEMU folds into
    /// the serial numbers of the devices below it.
    pub fn set_host_path(&mut self, path: Option<String>) {
        self.host_path = path;
    }

    /// The USB bus's name, for messages ("usb-bus.0").
    pub fn set_bus_name(&mut self, name: String) {
        self.bus_name = name;
    }

    /// The USB bus's name.
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// Tells the core whether its function's MSI-X is enabled: then
    /// interrupters notify vectors and INTx stays quiet.
    pub fn set_msix(&mut self, enabled: bool) {
        self.msix = enabled;
    }

    /// USBCMD.
    pub fn usbcmd(&self) -> UsbCmd {
        UsbCmd::from_bits_retain(self.usbcmd)
    }

    /// USBSTS.
    pub fn usbsts(&self) -> UsbSts {
        UsbSts::from_bits_retain(self.usbsts)
    }

    /// Whether the controller runs (USBSTS.HCH clear).
    pub fn running(&self) -> bool {
        self.usbsts & UsbSts::HCH.bits() == 0
    }

    /// The port register sets, USB 3 ports first.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Interrupter `n` (all 16 exist, as in QEMU; only `intrs` get events).
    pub fn interrupter(&self, n: usize) -> Option<&Interrupter> {
        self.intrs.get(n)
    }

    /// The command ring's consumer state.
    pub fn command_ring(&self) -> Ring {
        self.cmd_ring
    }

    /// Whether slot `id` (1-based) is enabled and addressed.
    pub fn slot_state(&self, id: u8) -> Option<(bool, bool)> {
        self.slot(id).map(|s| (s.enabled, s.addressed))
    }

    pub(super) fn slot(&self, id: u8) -> Option<&Slot> {
        usize::from(id).checked_sub(1).and_then(|i| self.slots.get(i))
    }

    pub(super) fn slot_mut(&mut self, id: u8) -> Option<&mut Slot> {
        usize::from(id).checked_sub(1).and_then(|i| self.slots.get_mut(i))
    }

    pub(super) fn dcbaap(&self) -> u64 {
        u64::from(self.dcbaap_high) << 32 | u64::from(self.dcbaap_low)
    }

    /// A guest error the controller cannot recover from: USBSTS.HCE.
    pub(super) fn die(&mut self) {
        self.usbsts |= UsbSts::HCE.bits();
    }

    // ---- guest memory helpers (QEMU's xhci_dma_read_u32s / write_u32s) ----

    /// Reads `N` little-endian dwords; on a DMA failure all ones and HCE.
    pub(super) fn read_u32s<const N: usize>(&mut self, addr: u64, env: &Env<'_>) -> [u32; N] {
        let mut out = [u32::MAX; N];
        let mut bytes = vec![0u8; N * 4];
        if env.dma.read(addr, &mut bytes).is_err() {
            self.die();
            return out;
        }
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        out
    }

    /// Writes little-endian dwords; a DMA failure sets HCE.
    pub(super) fn write_u32s(&mut self, addr: u64, words: &[u32], env: &Env<'_>) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if env.dma.write(addr, &bytes).is_err() {
            self.die();
        }
    }

    // ---- MMIO ----

    fn bad_access(offset: u64, size: u8) -> UsbError {
        UsbError::BadAccess { offset, size }
    }

    /// Reads `size` bytes at BAR0 `offset` (the MSI-X windows excepted:
    /// they read 0 here). Sizes and alignment as QEMU's regions accept
    /// them: capabilities 1–4 bytes, operational and runtime registers 4
    /// or 8 (split in two dwords), ports and doorbells 4.
    #[inline]
    pub fn mmio_read(&mut self, offset: u64, size: u8, env: &Env<'_>) -> Result<u64, UsbError> {
        // A driver's usual read, an aligned operational dword (USBSTS
        // polled), is one match on the offset; the rest goes the general way.
        if size == 4 && !self.pending_post_load && (regs::OFF_OPER..regs::OFF_PORTS).contains(&offset) {
            if let Ok(reg) = OperReg::try_from(offset - regs::OFF_OPER) {
                return Ok(u64::from(self.oper_read(reg)));
            }
        }
        self.mmio_read_any(offset, size, env)
    }

    #[inline(never)]
    fn mmio_read_any(&mut self, offset: u64, size: u8, env: &Env<'_>) -> Result<u64, UsbError> {
        let bad = || Self::bad_access(offset, size);
        if !matches!(size, 1 | 2 | 4 | 8) || offset % u64::from(size) != 0 || offset >= regs::LEN_REGS {
            return Err(bad());
        }
        if self.pending_post_load {
            self.post_load(env);
        }
        let reg = regs::decode(offset, self.ports.len(), 0, 0);
        match reg {
            Bar0Reg::Cap(dword) => {
                if size > 4 {
                    return Err(bad());
                }
                let shift = 8 * (offset & 3);
                let mask = u64::MAX >> (64 - 8 * u32::from(size));
                Ok((u64::from(self.cap_read(dword)) >> shift) & mask)
            }
            Bar0Reg::Oper(_) | Bar0Reg::RuntimeHead(_) | Bar0Reg::Intr(..) => match size {
                // The register is decoded once (decoding was a quarter of a read).
                4 => Ok(u64::from(self.dword_read(reg, env))),
                8 => {
                    let lo = self.dword_read(reg, env);
                    let hi = self.dword_read(regs::decode(offset + 4, self.ports.len(), 0, 0), env);
                    Ok(u64::from(hi) << 32 | u64::from(lo))
                }
                _ => Err(bad()),
            },
            Bar0Reg::Port(i, reg) => match size {
                4 => Ok(u64::from(match reg {
                    Ok(PortReg::PortSc) => self.ports.get(i).map_or(0, |p| p.portsc),
                    _ => 0,
                })),
                _ => Err(bad()),
            },
            Bar0Reg::Doorbell(_) if size == 4 => Ok(0),
            Bar0Reg::Doorbell(_) => Err(bad()),
            Bar0Reg::MsixTable(_) | Bar0Reg::MsixPba(_) | Bar0Reg::Unassigned => Ok(0),
        }
    }

    /// Writes `size` bytes of `value` at BAR0 `offset`. Doorbells come back
    /// in the effects, unrun.
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64, env: &Env<'_>) -> Result<Effects, UsbError> {
        let bad = || Self::bad_access(offset, size);
        if !matches!(size, 1 | 2 | 4 | 8) || offset % u64::from(size) != 0 || offset >= regs::LEN_REGS {
            return Err(bad());
        }
        let mut fx = Effects::default();
        if self.pending_post_load {
            fx.extend(self.post_load(env));
        }
        match regs::decode(offset, self.ports.len(), 0, 0) {
            Bar0Reg::Cap(_) if size <= 4 => {}
            Bar0Reg::Cap(_) => return Err(bad()),
            Bar0Reg::Oper(_) | Bar0Reg::RuntimeHead(_) | Bar0Reg::Intr(..) => match size {
                4 => self.dword_write(offset, value as u32, env, &mut fx),
                8 => {
                    self.dword_write(offset, value as u32, env, &mut fx);
                    self.dword_write(offset + 4, (value >> 32) as u32, env, &mut fx);
                }
                _ => return Err(bad()),
            },
            Bar0Reg::Port(i, reg) if size == 4 => {
                if reg == Ok(PortReg::PortSc) {
                    self.portsc_write(i, value as u32, env, &mut fx);
                }
            }
            Bar0Reg::Doorbell(n) if size == 4 => self.doorbell_write(n, value as u32, &mut fx),
            Bar0Reg::Port(..) | Bar0Reg::Doorbell(_) => return Err(bad()),
            Bar0Reg::MsixTable(_) | Bar0Reg::MsixPba(_) | Bar0Reg::Unassigned => {}
        }
        Ok(fx)
    }

    fn cap_read(&self, dword: u64) -> u32 {
        let c = &self.cfg;
        let Ok(reg) = CapReg::try_from(dword) else { return 0 };
        match reg {
            CapReg::CapLength => 0x0100_0000 | regs::LEN_CAP as u32,
            CapReg::HcsParams1 => (c.p2 + c.p3) << 24 | c.intrs << 8 | c.slots,
            CapReg::HcsParams2 => 0x0000_000f,
            CapReg::HcsParams3 => 0,
            // xECP at 0x20 (8 dwords), MaxPSASize, AC64.
            CapReg::HccParams1 => 0x0008_0001 | if c.streams { 7 << 12 } else { 0 },
            CapReg::DbOff => regs::OFF_DOORBELL as u32,
            CapReg::RtsOff => regs::OFF_RUNTIME as u32,
            CapReg::HccParams2 => 0,
            CapReg::ProtocolUsb2 => 0x0200_0402,
            CapReg::ProtocolUsb2Name | CapReg::ProtocolUsb3Name => 0x2042_5355,
            CapReg::ProtocolUsb2Ports => c.p2 << 8 | (c.p3 + 1),
            CapReg::ProtocolUsb3 => 0x0300_0002,
            CapReg::ProtocolUsb3Ports => c.p3 << 8 | 1,
            CapReg::ProtocolUsb2Slot | CapReg::ProtocolUsb3Slot => 0,
        }
    }

    #[inline]
    fn dword_read(&mut self, reg: Bar0Reg, env: &Env<'_>) -> u32 {
        match reg {
            Bar0Reg::Oper(Ok(reg)) => self.oper_read(reg),
            Bar0Reg::RuntimeHead(0) => self.mfindex(env.now_ns) as u32,
            Bar0Reg::Intr(v, Ok(reg)) => {
                let Some(intr) = self.intrs.get(v) else { return 0 };
                match reg {
                    IntrReg::Iman => intr.iman,
                    IntrReg::Imod => intr.imod,
                    IntrReg::Erstsz => intr.erstsz,
                    IntrReg::ErstbaLo => intr.erstba_low,
                    IntrReg::ErstbaHi => intr.erstba_high,
                    IntrReg::ErdpLo => intr.erdp_low,
                    IntrReg::ErdpHi => intr.erdp_high,
                }
            }
            _ => 0,
        }
    }

    /// An operational register's value.
    #[inline]
    fn oper_read(&self, reg: OperReg) -> u32 {
        match reg {
            OperReg::UsbCmd => self.usbcmd,
            OperReg::UsbSts => self.usbsts,
            OperReg::PageSize => 1,
            OperReg::DnCtrl => self.dnctrl,
            // CS, CA and CRR read as 0.
            OperReg::CrcrLo => self.crcr_low & !0xe,
            OperReg::CrcrHi => self.crcr_high,
            OperReg::DcbaapLo => self.dcbaap_low,
            OperReg::DcbaapHi => self.dcbaap_high,
            OperReg::Config => self.config,
        }
    }

    fn dword_write(&mut self, offset: u64, val: u32, env: &Env<'_>, fx: &mut Effects) {
        match regs::decode(offset, self.ports.len(), 0, 0) {
            Bar0Reg::Oper(Ok(reg)) => self.oper_write(reg, val, env, fx),
            Bar0Reg::Intr(v, Ok(reg)) => self.intr_write(v, reg, val, env, fx),
            _ => {}
        }
    }

    fn oper_write(&mut self, reg: OperReg, val: u32, env: &Env<'_>, fx: &mut Effects) {
        match reg {
            OperReg::UsbCmd => {
                let rs = UsbCmd::RS.bits();
                if val & rs != 0 && self.usbcmd & rs == 0 {
                    self.usbsts &= !UsbSts::HCH.bits();
                    self.mfindex_start = env.now_ns;
                } else if val & rs == 0 && self.usbcmd & rs != 0 {
                    self.usbsts |= UsbSts::HCH.bits();
                    self.crcr_low &= !Crcr::CRR.bits();
                }
                if val & UsbCmd::CSS.bits() != 0 {
                    self.usbsts &= !UsbSts::SRE.bits();
                }
                if val & UsbCmd::CRS.bits() != 0 {
                    self.usbsts |= UsbSts::SRE.bits();
                }
                self.usbcmd = val & UsbCmd::STORED;
                self.mfwrap_update(env.now_ns);
                if val & UsbCmd::HCRST.bits() != 0 {
                    self.reset_core(env, fx);
                }
                self.intr_update(0, fx);
            }
            OperReg::UsbSts => {
                self.usbsts &= !(val & UsbSts::WRITE_ONE_TO_CLEAR.bits());
                self.intr_update(0, fx);
            }
            OperReg::PageSize => {}
            OperReg::DnCtrl => self.dnctrl = val & 0xffff,
            OperReg::CrcrLo => {
                // QEMU keeps the written CRR bit too, and the running one.
                self.crcr_low = (val & 0xffff_ffcf) | (self.crcr_low & Crcr::CRR.bits());
            }
            OperReg::CrcrHi => {
                self.crcr_high = val;
                let stop = Crcr::CA.bits() | Crcr::CS.bits();
                if self.crcr_low & stop != 0 && self.crcr_low & Crcr::CRR.bits() != 0 {
                    self.crcr_low &= !Crcr::CRR.bits();
                    let ev = Event::new(TrbType::CommandCompletion, CompletionCode::CommandRingStopped);
                    self.event(ev, 0, env, fx);
                } else {
                    let base = u64::from(val) << 32 | u64::from(self.crcr_low & !0x3f);
                    // QEMU starts every ring at cycle 1, whatever RCS says.
                    self.cmd_ring = Ring::new(base);
                }
                self.crcr_low &= !stop;
            }
            OperReg::DcbaapLo => self.dcbaap_low = val & 0xffff_ffc0,
            OperReg::DcbaapHi => self.dcbaap_high = val,
            OperReg::Config => self.config = val & 0xff,
        }
    }

    fn intr_write(&mut self, v: usize, reg: IntrReg, val: u32, env: &Env<'_>, fx: &mut Effects) {
        let Some(intr) = self.intrs.get_mut(v) else { return };
        match reg {
            IntrReg::Iman => {
                if val & Iman::IP.bits() != 0 {
                    intr.iman &= !Iman::IP.bits();
                }
                intr.iman = (intr.iman & !Iman::IE.bits()) | (val & Iman::IE.bits());
                self.intr_update(v, fx);
            }
            IntrReg::Imod => intr.imod = val,
            IntrReg::Erstsz => intr.erstsz = val & 0xffff,
            IntrReg::ErstbaLo => intr.erstba_low = val & 0xffff_ffc0,
            IntrReg::ErstbaHi => {
                intr.erstba_high = val;
                self.er_reset(v, env);
            }
            IntrReg::ErdpLo => {
                let ehb_clear = val & ERDP_EHB != 0;
                if ehb_clear {
                    intr.erdp_low &= !ERDP_EHB;
                }
                intr.erdp_low = (val & !ERDP_EHB) | (intr.erdp_low & ERDP_EHB);
                if ehb_clear && intr.dequeue_index().is_some_and(|dp| dp != intr.er_ep_idx) {
                    // Events the guest has not consumed yet: interrupt again.
                    self.intr_raise(v, fx);
                }
            }
            IntrReg::ErdpHi => intr.erdp_high = val,
        }
    }

    fn doorbell_write(&mut self, n: usize, val: u32, fx: &mut Effects) {
        if !self.running() {
            return;
        }
        if n == 0 {
            if val == 0 {
                fx.doorbells.push(Doorbell::Command);
            }
            return;
        }
        let endpoint = (val & 0xff) as u8;
        if n > self.slots.len() || endpoint == 0 || endpoint > 31 {
            return;
        }
        fx.doorbells.push(Doorbell::Endpoint {
            slot: n as u8,
            endpoint,
            stream: (val >> 16) as u16,
        });
    }

    /// Runs a doorbell: processes the command ring, or kicks an endpoint.
    pub fn ring_doorbell(&mut self, doorbell: Doorbell, env: &Env<'_>) -> Effects {
        let mut fx = Effects::default();
        if self.pending_post_load {
            fx.extend(self.post_load(env));
        }
        match doorbell {
            Doorbell::Command => self.process_commands(env, &mut fx),
            Doorbell::Endpoint { slot, endpoint, stream } => self.kick_ep(slot, endpoint, stream, env, &mut fx),
        }
        fx
    }

    // ---- event ring and interrupts ----

    /// Reads the (single) event ring segment (QEMU's `xhci_er_reset`).
    fn er_reset(&mut self, v: usize, env: &Env<'_>) {
        let Some(intr) = self.intrs.get(v) else { return };
        let (erstsz, erstba) = (intr.erstsz, intr.erstba());
        if erstsz == 0 || erstba == 0 {
            if let Some(intr) = self.intrs.get_mut(v) {
                intr.er_start = 0;
                intr.er_size = 0;
            }
            return;
        }
        if erstsz != 1 {
            // QEMU supports one segment only.
            self.die();
            return;
        }
        // The entry: segment base (64-bit), size in TRBs, reserved.
        let mut entry = [0u8; 16];
        if env.dma.read(erstba, &mut entry).is_err() {
            self.die();
            return;
        }
        let mut base = [0u8; 8];
        base.copy_from_slice(&entry[..8]);
        let size = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        if !SEGMENT_TRBS.contains(&size) {
            self.die();
            return;
        }
        if let Some(intr) = self.intrs.get_mut(v) {
            intr.er_start = u64::from_le_bytes(base);
            intr.er_size = size;
            intr.er_ep_idx = 0;
            intr.er_pcs = true;
        }
    }

    /// Queues an event on interrupter `v`'s ring (QEMU's `xhci_event`):
    /// with one free TRB left a ring-full error is written instead, with
    /// none the event is dropped; then the interrupter fires.
    pub(super) fn event(&mut self, ev: Event, v: u16, env: &Env<'_>, fx: &mut Effects) {
        let v = if self.cfg.intrs == 1 { 0 } else { usize::from(v) };
        if v >= self.cfg.intrs as usize {
            return;
        }
        let intr = &self.intrs[v];
        let Some(dp) = intr.dequeue_index() else {
            // ERDP outside the segment (or no segment).
            self.die();
            return;
        };
        let size = intr.er_size;
        let idx = intr.er_ep_idx;
        if (idx.wrapping_add(2)) % size == dp {
            let full = Event::new(TrbType::HostController, CompletionCode::EventRingFullError);
            self.write_event(full, v, env);
        } else if (idx.wrapping_add(1)) % size == dp {
            // Full: the event is lost.
        } else {
            self.write_event(ev, v, env);
        }
        self.intr_raise(v, fx);
    }

    fn write_event(&mut self, ev: Event, v: usize, env: &Env<'_>) {
        let intr = &self.intrs[v];
        let trb = ev.to_trb(intr.er_pcs);
        let addr = intr
            .er_start
            .wrapping_add(TRB_SIZE.wrapping_mul(u64::from(intr.er_ep_idx)));
        if env.dma.write(addr, &trb.to_bytes()).is_err() {
            self.die();
        }
        let intr = &mut self.intrs[v];
        intr.er_ep_idx = intr.er_ep_idx.wrapping_add(1);
        if intr.er_ep_idx >= intr.er_size {
            intr.er_ep_idx = 0;
            intr.er_pcs = !intr.er_pcs;
        }
    }

    /// Asks the PCI function for an interrupt on interrupter `v` at
    /// `level`; true when a message took it (QEMU then clears IMAN.IP).
    fn raise_line(&mut self, v: usize, level: bool, fx: &mut Effects) -> bool {
        if v == 0 && !self.msix {
            fx.irqs.push(Irq::Level(level));
        }
        if self.msix && level {
            if self.intrs[v].msix_used {
                fx.irqs.push(Irq::Vector(v as u16));
            }
            return true;
        }
        false
    }

    /// QEMU's `xhci_intr_raise`: EHB, IP and EINT set; the line raised
    /// unless an interrupt was already being handled, IMAN.IE or
    /// USBCMD.INTE is off.
    fn intr_raise(&mut self, v: usize, fx: &mut Effects) {
        let intr = &mut self.intrs[v];
        let pending = intr.busy();
        intr.erdp_low |= ERDP_EHB;
        intr.iman |= Iman::IP.bits();
        self.usbsts |= UsbSts::EINT.bits();
        let enabled = self.intrs[v].iman & Iman::IE.bits() != 0 && self.usbcmd & UsbCmd::INTE.bits() != 0;
        if pending || !enabled {
            return;
        }
        if self.raise_line(v, true, fx) {
            self.intrs[v].iman &= !Iman::IP.bits();
        }
    }

    /// QEMU's `xhci_intr_update`: interrupter 0's line follows IP && IE &&
    /// INTE; with MSI-X on, a vector is in use while IMAN.IE is set.
    fn intr_update(&mut self, v: usize, fx: &mut Effects) {
        if v == 0 {
            let iman = self.intrs[0].iman;
            let level =
                iman & Iman::IP.bits() != 0 && iman & Iman::IE.bits() != 0 && self.usbcmd & UsbCmd::INTE.bits() != 0;
            if self.raise_line(0, level, fx) {
                self.intrs[0].iman &= !Iman::IP.bits();
            }
        }
        if self.msix {
            let intr = &mut self.intrs[v];
            intr.msix_used = intr.iman & Iman::IE.bits() != 0;
        }
    }

    // ---- MFINDEX ----

    fn mfindex(&self, now: i64) -> u64 {
        (now.wrapping_sub(self.mfindex_start) / MICROFRAME_NS) as u64 & (MFINDEX_WRAP as u64 - 1)
    }

    fn mfwrap_update(&mut self, now: i64) {
        let bits = UsbCmd::RS.bits() | UsbCmd::EWE.bits();
        self.mfwrap_deadline = (self.usbcmd & bits == bits).then(|| {
            let left = MFINDEX_WRAP - self.mfindex(now) as i64;
            now.saturating_add(left * MICROFRAME_NS)
        });
    }

    /// When [`XhciCore::run_timers`] should next run (the MFINDEX wrap
    /// event), in virtual nanoseconds.
    pub fn next_deadline(&self) -> Option<i64> {
        self.mfwrap_deadline
    }

    /// Fires the timers that are due at `env.now_ns`: the MFINDEX wrap
    /// event (type 39) while USBCMD.EWE is set.
    pub fn run_timers(&mut self, env: &Env<'_>) -> Effects {
        let mut fx = Effects::default();
        if self.mfwrap_deadline.is_some_and(|d| d <= env.now_ns) {
            let ev = Event::new(TrbType::MfindexWrap, CompletionCode::Success);
            self.event(ev, 0, env, &mut fx);
            self.mfwrap_update(env.now_ns);
        }
        fx
    }

    // ---- reset ----

    /// A controller reset (QEMU's `xhci_reset`, also reached by
    /// USBCMD.HCRST): halted, registers cleared, slots disabled, ports
    /// re-read from the devices present.
    pub fn reset(&mut self, env: &Env<'_>) -> Effects {
        let mut fx = Effects::default();
        self.reset_core(env, &mut fx);
        self.intr_update(0, &mut fx);
        fx
    }

    fn reset_core(&mut self, env: &Env<'_>, fx: &mut Effects) {
        self.usbcmd = 0;
        self.usbsts = UsbSts::HCH.bits();
        self.dnctrl = 0;
        self.crcr_low = 0;
        self.crcr_high = 0;
        self.dcbaap_low = 0;
        self.dcbaap_high = 0;
        self.config = 0;
        self.pending_post_load = false;
        for id in 1..=self.slots.len() {
            self.disable_slot(id as u8, env);
        }
        for i in 0..self.ports.len() {
            self.port_update(i, false, Some(env), fx);
        }
        for intr in &mut self.intrs[..self.cfg.intrs as usize] {
            intr.reset();
        }
        self.mfindex_start = env.now_ns;
        self.mfwrap_update(env.now_ns);
    }

    /// Takes endpoint `epid` of slot `slot` out (to work on it beside the
    /// rest of the controller); put it back with [`Self::put_ep`].
    pub(super) fn take_ep(&mut self, slot: u8, epid: u8) -> Option<Endpoint> {
        self.slot_mut(slot)?
            .eps
            .get_mut(usize::from(epid).checked_sub(1)?)?
            .take()
    }

    pub(super) fn put_ep(&mut self, slot: u8, epid: u8, ep: Endpoint) {
        if let Some(e) = self
            .slot_mut(slot)
            .and_then(|s| s.eps.get_mut(usize::from(epid).wrapping_sub(1)))
        {
            *e = Some(ep);
        }
    }
}
