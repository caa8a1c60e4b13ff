//! [`XhciPci`]: the `qemu-xhci` PCI function — its identity and
//! configuration space, BAR0 with the MSI-X table and pending bits QEMU
//! places in it, and INTx — embedding the controller core, which owns the
//! rest of BAR0 (principle 1: the core is part of the function's storage,
//! not a separate object).

use super::core::{Effects, Env, Irq, XhciConfig, XhciCore};
use super::regs::{self, Bar0Reg, OFF_MSIX_PBA, OFF_MSIX_TABLE};
use crate::pci::regs::{Status, cap_id};
use crate::pci::{Bar, BarIndex, Command, ConfigKind, ConfigSpace, Identity, Msix, PciEffects};
use crate::usb::device::UsbDevice;
use crate::usb::error::UsbError;

/// Red Hat's vendor id.
pub const VENDOR_ID: u16 = 0x1b36;
/// `PCI_DEVICE_ID_REDHAT_XHCI`.
pub const DEVICE_ID: u16 = 0x000d;
/// Revision.
pub const REVISION: u8 = 0x01;
/// Serial bus controller, USB, xHCI programming interface.
pub const CLASS_CODE: u32 = 0x0c_03_30;
/// The SBRN byte (serial bus release number) and its value, USB 3.0.
pub const SBRN: (usize, u8) = (0x60, 0x30);
/// The cache line size `qemu-xhci` starts with (until the first reset).
pub const CACHE_LINE_SIZE: u8 = 0x10;
/// Where the MSI-X capability sits.
pub const MSIX_CAP: u8 = 0x90;
/// Where the PCI Express capability sits (on a PCI Express bus).
pub const PCIE_CAP: u8 = 0xa0;
/// Bytes of a version 2 PCI Express capability.
pub const PCIE_CAP_SIZE: u8 = 0x3c;
/// Bytes of the MSI-X capability.
pub const MSIX_CAP_SIZE: u8 = 12;

/// PCI Express capability registers and values `pcie_endpoint_cap_init` sets.
mod exp {
    pub const FLAGS: usize = 0x02;
    pub const DEVCAP: usize = 0x04;
    pub const LNKCAP: usize = 0x0c;
    pub const LNKSTA: usize = 0x12;
    pub const DEVCAP2: usize = 0x24;
    pub const DEVCTL2: usize = 0x28;
    /// Capability version 2.
    pub const FLAGS_VER2: u16 = 2;
    /// Device/port type: endpoint, and root-complex integrated endpoint.
    pub const TYPE_ENDPOINT: u16 = 0x0;
    pub const TYPE_RC_END: u16 = 0x9;
    /// DEVCAP: role-based error reporting.
    pub const DEVCAP_RBER: u32 = 0x8000;
    /// LNKCAP: L0s ASPM support, x1, 2.5 GT/s (port number 0).
    pub const LNKCAP_X1_2_5GT: u32 = 0x400 | 0x10 | 0x1;
    /// LNKSTA: x1, 2.5 GT/s (QEMU 7.2's endpoint on q35's root bus shows
    /// no data-link-layer-active bit: checked against its stream).
    pub const LNKSTA_X1_2_5GT: u16 = 0x10 | 0x1;
    /// DEVCAP2: extended fmt field, end-end TLP prefix.
    pub const DEVCAP2_EFF_EETLPP: u32 = 0x10_0000 | 0x20_0000;
    /// DEVCTL2: end-end TLP prefix blocking (the guest may set it).
    pub const DEVCTL2_EETLPPB: u16 = 0x8000;
}

/// Which bus the function sits on: it decides the configuration space
/// size and whether (and as what) the PCI Express capability appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XhciBus {
    /// Conventional PCI (i440fx): 256 bytes, no PCI Express capability.
    Conventional,
    /// A PCI Express root bus (q35's pcie.0): a root-complex integrated
    /// endpoint.
    ExpressRoot,
    /// Behind a PCI Express port: an endpoint.
    Express,
}

/// The function's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XhciPciConfig {
    /// The controller's (`p2`, `p3`, `intrs`, `slots`, `streams`).
    pub core: XhciConfig,
    /// `msix` (QEMU's auto: on).
    pub msix: bool,
    /// The bus it is placed on.
    pub bus: XhciBus,
    /// Its device path ("0000:00:01.0"), which serial numbers of its
    /// devices carry.
    pub path: Option<String>,
}

impl Default for XhciPciConfig {
    fn default() -> XhciPciConfig {
        XhciPciConfig {
            core: XhciConfig::default(),
            msix: true,
            bus: XhciBus::ExpressRoot,
            path: None,
        }
    }
}

/// `qemu-xhci`'s configuration space as QEMU realizes it: identity,
/// cache line size 0x10, SBRN 0x30, BAR0 (64-bit memory, 16 KiB), the
/// PCI Express capability at 0xa0 on an Express bus, and, with
/// `msix_vectors`, MSI-X at 0x90 with table and PBA in BAR0 at 0x3000
/// and 0x3800.
pub fn qemu_xhci_config_space(bus: XhciBus, msix_vectors: Option<u16>) -> Result<ConfigSpace, UsbError> {
    let kind = match bus {
        XhciBus::Conventional => ConfigKind::Conventional,
        XhciBus::ExpressRoot | XhciBus::Express => ConfigKind::Express,
    };
    let mut cfg = ConfigSpace::new(
        kind,
        Identity {
            vendor_id: VENDOR_ID,
            device_id: DEVICE_ID,
            revision: REVISION,
            class_code: CLASS_CODE,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            header_type: 0,
            interrupt_pin: 1,
        },
    );
    cfg.put_bytes(crate::pci::HeaderReg::CacheLineSize.offset(), &[CACHE_LINE_SIZE]);
    cfg.put_bytes(SBRN.0, &[SBRN.1]);
    cfg.register_bar(BarIndex::ALL[0], Bar::mem64(regs::LEN_REGS))?;
    if kind == ConfigKind::Express {
        let at = usize::from(cfg.add_capability(cap_id::EXP, Some(PCIE_CAP), PCIE_CAP_SIZE)?);
        let kind = if bus == XhciBus::ExpressRoot {
            exp::TYPE_RC_END
        } else {
            exp::TYPE_ENDPOINT
        };
        cfg.put_bytes(at + exp::FLAGS, &(kind << 4 | exp::FLAGS_VER2).to_le_bytes());
        cfg.put_bytes(at + exp::DEVCAP, &exp::DEVCAP_RBER.to_le_bytes());
        cfg.put_bytes(at + exp::LNKCAP, &exp::LNKCAP_X1_2_5GT.to_le_bytes());
        cfg.put_bytes(at + exp::LNKSTA, &exp::LNKSTA_X1_2_5GT.to_le_bytes());
        cfg.put_bytes(at + exp::DEVCAP2, &exp::DEVCAP2_EFF_EETLPP.to_le_bytes());
        cfg.set_write_mask(at + exp::DEVCTL2, &exp::DEVCTL2_EETLPPB.to_le_bytes());
        // The extended capability list is empty and stays so.
        cfg.set_write_mask(crate::pci::regs::CONFIG_SPACE_SIZE, &[0; 4]);
    }
    if let Some(vectors) = msix_vectors {
        let at = usize::from(cfg.add_capability(cap_id::MSIX, Some(MSIX_CAP), MSIX_CAP_SIZE)?);
        cfg.put_bytes(at + 2, &(vectors.saturating_sub(1)).to_le_bytes());
        cfg.put_bytes(at + 4, &(OFF_MSIX_TABLE as u32).to_le_bytes());
        cfg.put_bytes(at + 8, &(OFF_MSIX_PBA as u32).to_le_bytes());
        // Enable and function mask are the guest's.
        cfg.set_write_mask(at + 3, &[0xc0]);
    }
    Ok(cfg)
}

/// The `qemu-xhci` PCI function.
#[derive(Debug)]
pub struct XhciPci {
    pub(super) config: ConfigSpace,
    pub(super) msix: Option<Msix>,
    pub(super) core: XhciCore,
    /// INTA as the device drives it (QEMU's `irq_state`).
    pub(super) irq_level: bool,
    pub(super) bus: XhciBus,
}

impl XhciPci {
    /// A function with `cfg`, in its post-realize state: controller
    /// halted, MSI-X disabled with every vector masked.
    pub fn new(cfg: XhciPciConfig) -> Result<XhciPci, UsbError> {
        let mut core = XhciCore::new(cfg.core);
        core.set_host_path(cfg.path.clone());
        let vectors = core.config().intrs as u16;
        let msix = if cfg.msix { Some(Msix::new(vectors)?) } else { None };
        let config = qemu_xhci_config_space(cfg.bus, msix.as_ref().map(Msix::vectors))?;
        Ok(XhciPci {
            config,
            msix,
            core,
            irq_level: false,
            bus: cfg.bus,
        })
    }

    /// The controller.
    pub fn core(&self) -> &XhciCore {
        &self.core
    }

    /// The controller, mutably (attach devices, inject input).
    pub fn core_mut(&mut self) -> &mut XhciCore {
        &mut self.core
    }

    /// The configuration space.
    pub fn config_space(&self) -> &ConfigSpace {
        &self.config
    }

    /// The configuration space, for the machine (the multi-function bit).
    pub fn config_space_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    /// MSI-X, when the function has it.
    pub fn msix(&self) -> Option<&Msix> {
        self.msix.as_ref()
    }

    /// The bus it sits on.
    pub fn bus(&self) -> XhciBus {
        self.bus
    }

    /// INTA as the device drives it.
    pub fn irq_level(&self) -> bool {
        self.irq_level
    }

    fn msix_range(&self) -> Option<std::ops::Range<usize>> {
        self.msix
            .as_ref()
            .map(|_| usize::from(MSIX_CAP) + 2..usize::from(MSIX_CAP) + 4)
    }

    /// The MSI-X message control word as the configuration space holds it.
    fn msix_control_from_config(&self) -> u16 {
        self.config.read(u16::from(MSIX_CAP) + 2, 2).map_or(0, |v| v as u16)
    }

    /// Reads `size` bytes of configuration space.
    pub fn config_read(&self, offset: u16, size: u8) -> Result<u32, UsbError> {
        Ok(self.config.read(offset, size)?)
    }

    /// Writes configuration space: BAR moves and bus mastering come back;
    /// an MSI-X enable or unmask may send pending messages and silences
    /// INTx; INTx disable re-drives the line.
    pub fn config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<PciEffects, UsbError> {
        let config = self.config.write(offset, size, value)?;
        let mut out = PciEffects::default();
        if let Some(disabled) = config.intx_disable {
            if self.irq_level {
                out.intx = Some(!disabled);
            }
        }
        let start = usize::from(offset);
        let touches_msix = self
            .msix_range()
            .is_some_and(|r| start < r.end && r.start < start + usize::from(size));
        if touches_msix {
            let control = self.msix_control_from_config();
            if let Some(msix) = self.msix.as_mut() {
                out.messages.extend(msix.write_control(control));
                let enabled = msix.enabled();
                self.core.set_msix(enabled);
                if enabled {
                    self.set_irq_level(false, &mut out);
                }
            }
        }
        out.config = config;
        Ok(out)
    }

    /// Reads `size` bytes at BAR0 `offset`: the MSI-X table and PBA here,
    /// the rest from the controller.
    #[inline]
    pub fn bar0_read(&mut self, offset: u64, size: u8, env: &Env<'_>) -> Result<u64, UsbError> {
        // Below the MSI-X structures everything is the core's, which
        // decodes the offset itself (decoding twice was a tenth of a read).
        if offset < regs::OFF_MSIX_TABLE {
            return self.core.mmio_read(offset, size, env);
        }
        let (table, pba) = self.msix_sizes();
        match regs::decode(offset, 0, table, pba) {
            Bar0Reg::MsixTable(at) => self.msix_access(offset, size, |m| m.table_read(at, size)),
            Bar0Reg::MsixPba(at) => self.msix_access(offset, size, |m| m.pba_read(at, size)),
            _ => self.core.mmio_read(offset, size, env),
        }
    }

    /// Writes BAR0. Doorbells rung by the write run at once; the
    /// interrupts they (or the write) raise come back.
    pub fn bar0_write(&mut self, offset: u64, size: u8, value: u64, env: &Env<'_>) -> Result<PciEffects, UsbError> {
        let mut out = PciEffects::default();
        if offset < regs::OFF_MSIX_TABLE {
            let fx = self.core.mmio_write(offset, size, value, env)?;
            self.apply(fx, env, &mut out);
            return Ok(out);
        }
        let (table, pba) = self.msix_sizes();
        match regs::decode(offset, 0, table, pba) {
            Bar0Reg::MsixTable(at) => {
                let sent = self.msix_access(offset, size, |m| m.table_write(at, size, value))?;
                out.messages.extend(sent);
            }
            // The pending bits are read-only.
            Bar0Reg::MsixPba(at) => {
                self.msix_access(offset, size, |m| m.pba_read(at, size))?;
            }
            _ => {
                let fx = self.core.mmio_write(offset, size, value, env)?;
                self.apply(fx, env, &mut out);
            }
        }
        Ok(out)
    }

    fn msix_sizes(&self) -> (u64, u64) {
        self.msix.as_ref().map_or((0, 0), |m| (m.table_size(), m.pba_size()))
    }

    fn msix_access<T>(
        &mut self,
        offset: u64,
        size: u8,
        f: impl FnOnce(&mut Msix) -> Result<T, crate::pci::PciError>,
    ) -> Result<T, UsbError> {
        let msix = self.msix.as_mut().ok_or(UsbError::BadAccess { offset, size })?;
        f(msix).map_err(|_| UsbError::BadAccess { offset, size })
    }

    /// Runs the core's doorbells and turns its interrupt requests into
    /// MSI-X messages or the INTx level.
    fn apply(&mut self, fx: Effects, env: &Env<'_>, out: &mut PciEffects) {
        let mut pending = vec![fx];
        while let Some(fx) = pending.pop() {
            for irq in fx.irqs {
                match irq {
                    Irq::Vector(v) => {
                        if let Some(m) = self.msix.as_mut().and_then(|m| m.notify(v)) {
                            out.messages.push(m);
                        }
                    }
                    Irq::Level(level) => self.set_irq_level(level, out),
                }
            }
            for db in fx.doorbells {
                pending.push(self.core.ring_doorbell(db, env));
            }
        }
    }

    /// QEMU's `pci_irq_handler`: the device's level and Status.INTERRUPT
    /// follow; the bus sees it unless Command.INTX_DISABLE.
    fn set_irq_level(&mut self, level: bool, out: &mut PciEffects) {
        if level == self.irq_level {
            return;
        }
        self.irq_level = level;
        self.config.set_status(Status::INTERRUPT, level);
        if !self.config.command().contains(Command::INTX_DISABLE) {
            out.intx = Some(level);
        }
    }

    /// Wraps a core operation's effects.
    pub(super) fn finish(&mut self, fx: Effects, env: &Env<'_>) -> PciEffects {
        let mut out = PciEffects::default();
        self.apply(fx, env, &mut out);
        out
    }

    /// A device reset (QEMU's: the controller reset, then the generic PCI
    /// part: Command, BARs, MSI-X masked and disabled, INTx low).
    pub fn reset(&mut self, env: &Env<'_>) -> PciEffects {
        let fx = self.core.reset(env);
        let mut out = self.finish(fx, env);
        out.config = self.config.reset();
        if let Some(msix) = self.msix.as_mut() {
            msix.reset();
            // Enable and function mask clear in the capability too.
            self.config
                .put_bytes(usize::from(MSIX_CAP) + 2, &msix.control().to_le_bytes());
        }
        self.core.set_msix(false);
        self.set_irq_level(false, &mut out);
        out
    }

    /// Plugs `dev` into USB port `port` (1-based).
    pub fn attach(&mut self, port: usize, dev: Box<dyn UsbDevice>, env: &Env<'_>) -> Result<PciEffects, UsbError> {
        let fx = self.core.attach(port, dev, env)?;
        Ok(self.finish(fx, env))
    }

    /// Unplugs the device in USB port `port`.
    pub fn detach(&mut self, port: usize, env: &Env<'_>) -> Result<(Box<dyn UsbDevice>, PciEffects), UsbError> {
        let (dev, fx) = self.core.detach(port, env)?;
        Ok((dev, self.finish(fx, env)))
    }

    /// The device in `port` has data for `endpoint_address` (after input
    /// was injected): kick its endpoint.
    pub fn wakeup(&mut self, port: usize, endpoint_address: u8, env: &Env<'_>) -> PciEffects {
        let fx = self.core.wakeup(port, endpoint_address, env);
        self.finish(fx, env)
    }

    /// Fires the controller's due timers.
    pub fn run_timers(&mut self, env: &Env<'_>) -> PciEffects {
        let fx = self.core.run_timers(env);
        self.finish(fx, env)
    }
}
