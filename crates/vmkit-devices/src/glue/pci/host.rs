//! q35's PCI host bridge: `q35-pcihost` with its root bus `pcie.0`, the
//! configuration mechanisms a guest uses — the 0xCF8 address register and
//! 0xCFC data window in I/O space, and the ECAM (MMCONFIG) window its
//! `mch` function maps where the guest's PCIEXBAR says — and `mch`
//! itself at 00.0 with the identity of Intel's Q35 memory controller hub.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use vmkit_memory::{AccessConstraints, GuestAddr, MemoryRegion, MmioOps};
use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::savevm::register_device_model;
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};
use vmkit_qom::{Object, TYPE_DEVICE, TypeInfo};

use super::bus::{FunctionTable, FunctionsWatcher, PciRootBus, all_ones};
use super::device::{BarRegion, BarRegionKind, PciDeviceModel};
use crate::glue::error::GlueError;
use crate::pci::host::{CONFIG_ADDRESS_PORT, CONFIG_DATA_PORT, ConfigAddressRegister, Q35_ECAM_BASE, ecam_target};
use crate::pci::regs::CONFIG_SPACE_SIZE;
use crate::pci::state::{PciDeviceState, pci_device_vmsd};
use crate::pci::{BarIndex, ConfigKind, ConfigSpace, Identity, PciEffects, PciError, PciFunction};

/// QEMU's `TYPE_Q35_HOST_DEVICE`.
pub const TYPE_Q35_HOST: &str = "q35-pcihost";
/// QEMU's `TYPE_MCH_PCI_DEVICE`.
pub const TYPE_MCH: &str = "mch";

/// Intel.
pub const MCH_VENDOR_ID: u16 = 0x8086;
/// The Q35 MCH (`PCI_DEVICE_ID_INTEL_Q35_MCH`).
pub const MCH_DEVICE_ID: u16 = 0x29c0;
/// Bridge, host bridge.
pub const MCH_CLASS_CODE: u32 = 0x06_00_00;

/// PCIEXBAR: where the ECAM window is and how long (64 bits).
pub const PCIEXBAR: usize = 0x60;
/// PCIEXBAR at reset: the window at q35's 0xb000_0000, 256 MiB, disabled
/// (firmware enables it).
pub const PCIEXBAR_DEFAULT: u64 = Q35_ECAM_BASE;
const PCIEXBAR_ENABLE: u64 = 0x1;
const PCIEXBAR_LENGTH_MASK: u64 = 0x6;
/// Address bits 35:28 of the window (256 MiB aligned).
const PCIEXBAR_ADDR_MASK: u64 = 0xf_f000_0000;
/// Bit 27 (128 MiB) and 26 (64 MiB) of shorter windows.
const PCIEXBAR_ADDR_128M: u64 = 1 << 27;
const PCIEXBAR_ADDR_64M: u64 = 1 << 26;

/// Bytes of `mch`'s configuration space QEMU sets at reset besides its
/// identity: the extended TSEG size answer (16 MiB), SMRAM (0x02) and
/// ESMRAMC (0x38), and PCIEXBAR.
const MCH_RESET_BYTES: &[(usize, &[u8])] = &[
    (0x50, &[0x10, 0x00]),
    (0x9d, &[0x02]),
    (0x9e, &[0x38]),
    (PCIEXBAR, &PCIEXBAR_DEFAULT.to_le_bytes()),
];

/// The ECAM window: where it is mapped in system memory, if anywhere.
pub struct Ecam {
    system: MemoryRegion,
    owner: Object,
    bus: Weak<PciRootBus>,
    mapped: Mutex<Option<(u64, u64, MemoryRegion)>>,
}

impl Ecam {
    /// Where the window is mapped and its size, if it is.
    pub fn window(&self) -> Option<(u64, u64)> {
        self.mapped.lock().as_ref().map(|(base, size, _)| (*base, *size))
    }

    /// Follows PCIEXBAR (QEMU's `mch_update_pciexbar`): enable bit 0,
    /// length in bits 2:1 (256, 128 or 64 MiB), base in bits 35:26 as the
    /// length allows. The reserved length (QEMU aborts on it) disables the
    /// window.
    fn update(&self, pciexbar: u64) -> vmkit_memory::Result<()> {
        let (size, mask) = match pciexbar & PCIEXBAR_LENGTH_MASK {
            0 => (256 << 20, PCIEXBAR_ADDR_MASK),
            2 => (128 << 20, PCIEXBAR_ADDR_MASK | PCIEXBAR_ADDR_128M),
            4 => (64 << 20, PCIEXBAR_ADDR_MASK | PCIEXBAR_ADDR_128M | PCIEXBAR_ADDR_64M),
            _ => (0, 0),
        };
        let want = (pciexbar & PCIEXBAR_ENABLE != 0 && size != 0).then_some((pciexbar & mask, size));
        let mut mapped = self.mapped.lock();
        if mapped.as_ref().map(|(b, s, _)| (*b, *s)) == want {
            return Ok(());
        }
        vmkit_memory::transaction(|| -> vmkit_memory::Result<()> {
            if let Some((_, _, region)) = mapped.take() {
                self.system.del_subregion(&region)?;
            }
            if let Some((base, size)) = want {
                let Some(bus) = self.bus.upgrade() else {
                    return Ok(());
                };
                let table = bus.function_table();
                let region = self.window_region(bus, table, size)?;
                self.system.add_subregion_overlap(GuestAddr(base), &region, 0)?;
                *mapped = Some((base, size, region));
            }
            Ok(())
        })
    }

    /// The window's region of `size` bytes over `bus` with its functions
    /// `table`. It reaches the bus while it is mapped: unplug and teardown
    /// detach the functions, and the host's unrealize unmaps the window.
    fn window_region(
        &self,
        bus: Arc<PciRootBus>,
        table: Arc<FunctionTable>,
        size: u64,
    ) -> vmkit_memory::Result<MemoryRegion> {
        let ops = EcamOps { bus, table };
        MemoryRegion::mmio("pcie-mmcfg-mmio", Some(&self.owner), size, Arc::new(ops))
    }

    fn unmap(&self) {
        if let Some((_, _, region)) = self.mapped.lock().take() {
            let _ = self.system.del_subregion(&region);
        }
    }
}

/// ECAM accesses: bus in bits 27:20, device/function in 19:12, the offset
/// in 11:0, reaching the function's whole space.
struct EcamOps {
    /// Strong: taking a reference per access cost a tenth of a read.
    bus: Arc<PciRootBus>,
    /// The bus's functions when the region was made: the window is
    /// replaced on every change (see [`FunctionsWatcher`]), so a read
    /// reaches them without a guard of its own.
    table: Arc<FunctionTable>,
}

impl MmioOps for EcamOps {
    fn read(&self, offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        let t = ecam_target(offset);
        Ok(u64::from(self.bus.config_read_in(
            &self.table,
            t.bus,
            t.devfn,
            t.offset,
            size as u8,
            usize::MAX,
        )))
    }

    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        let t = ecam_target(offset);
        self.bus
            .config_write(t.bus, t.devfn, t.offset, size as u8, value as u32, usize::MAX);
        Ok(())
    }
}

impl FunctionsWatcher for Ecam {
    /// A mapped window is replaced by one over `table`, in one topology
    /// change (the old region, and the functions it held, go with the old
    /// flat view).
    fn functions_changed(&self, table: &Arc<FunctionTable>) {
        let mut mapped = self.mapped.lock();
        let Some((base, size, old)) = mapped.as_ref() else {
            return;
        };
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let (base, size) = (*base, *size);
        let Ok(region) = self.window_region(bus, Arc::clone(table), size) else {
            return;
        };
        let swapped = vmkit_memory::transaction(|| -> vmkit_memory::Result<()> {
            self.system.del_subregion(old)?;
            self.system.add_subregion_overlap(GuestAddr(base), &region, 0)
        });
        // The new region takes the old one's place and size, so the add
        // cannot fail on an overlap; should either step fail, what is
        // recorded stays what is mapped.
        if swapped.is_ok() {
            *mapped = Some((base, size, region));
        } else if old.container_region().is_none() {
            *mapped = None;
        }
    }
}

/// The host bridge's state: its bus, the 0xCF8 register, the ECAM window.
/// Kept as the user data of `/machine/q35`; it migrates as QEMU's
/// "PCIHost" section (the 0xCF8 register).
pub struct Q35Host {
    bus: Arc<PciRootBus>,
    address: Mutex<ConfigAddressRegister>,
    ecam: Arc<Ecam>,
    vmsd: Arc<VmStateDescription>,
}

/// QEMU's `vmstate_pcihost` ("PCIHost", v1): the 0xCF8 register.
pub fn pcihost_vmsd() -> Result<Arc<VmStateDescription>, PciError> {
    VmStateDescription::builder("PCIHost")
        .version(1)
        .minimum_version(1)
        .simple("config_reg", FieldKind::U32)
        .build()
        .map_err(|e| PciError::Description(e.to_string()))
}

/// The host bridge's migrated state: the 0xCF8 register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciHostState {
    /// What the guest last wrote to 0xCF8.
    pub config_reg: u32,
}

impl MigrationState for PciHostState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new().with("config_reg", self.config_reg.into())
    }

    fn from_vmstate(s: &VmStruct) -> Result<PciHostState, StateError> {
        Ok(PciHostState {
            config_reg: s.field("config_reg")?,
        })
    }
}

impl DeviceState for Q35Host {
    type State = PciHostState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<PciHostState, StateError> {
        Ok(PciHostState {
            config_reg: self.address.lock().read(),
        })
    }

    fn load_state(&self, state: PciHostState, _version_id: u32) -> Result<(), StateError> {
        self.address.lock().write(4, state.config_reg);
        Ok(())
    }
}

impl Q35Host {
    /// The root bus.
    pub fn bus(&self) -> &Arc<PciRootBus> {
        &self.bus
    }

    /// The ECAM window.
    pub fn ecam(&self) -> &Arc<Ecam> {
        &self.ecam
    }
}

/// 0xCF8: a dword write sets the address register (other widths are
/// other chipset registers on a PC); a read returns it.
struct ConfigAddressOps {
    host: Weak<Q35Host>,
}

impl MmioOps for ConfigAddressOps {
    fn read(&self, _offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        // QEMU's pci-conf-idx returns the register whatever the offset.
        let v = self.host.upgrade().map_or(0, |h| h.address.lock().read());
        Ok(u64::from(v & all_ones(size as u8)))
    }

    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        if let Some(h) = self.host.upgrade() {
            if offset == 0 {
                h.address.lock().write(size as u8, value as u32);
            }
        }
        Ok(())
    }
}

/// 0xCFC–0xCFF: the function 0xCF8 names, at its offset plus the port's;
/// all ones (reads) and nothing (writes) while 0xCF8's enable bit is
/// clear or nothing is there.
struct ConfigDataOps {
    host: Weak<Q35Host>,
}

impl MmioOps for ConfigDataOps {
    fn read(&self, offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        let size = size as u8;
        let Some(h) = self.host.upgrade() else {
            return Ok(u64::from(all_ones(size)));
        };
        let target = h.address.lock().target(offset as u8);
        Ok(u64::from(match target {
            Some(t) => h.bus.config_read(t.bus, t.devfn, t.offset, size, CONFIG_SPACE_SIZE),
            None => all_ones(size),
        }))
    }

    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        if let Some(h) = self.host.upgrade() {
            let target = h.address.lock().target(offset as u8);
            if let Some(t) = target {
                h.bus
                    .config_write(t.bus, t.devfn, t.offset, size as u8, value as u32, CONFIG_SPACE_SIZE);
            }
        }
        Ok(())
    }

    fn constraints(&self) -> AccessConstraints {
        // Byte, word and dword accesses inside the window, as a guest makes them.
        AccessConstraints {
            valid_min: 1,
            valid_max: 4,
            ..AccessConstraints::default()
        }
    }
}

/// Connects the host object `host` (`/machine/q35`, not yet realized) to
/// `bus`: 0xCF8/0xCFC in `bus`'s I/O space, the ECAM window (unmapped
/// until PCIEXBAR enables it) in `system`.
pub(crate) fn connect_host(
    host: &Object,
    bus: Arc<PciRootBus>,
    system: &MemoryRegion,
) -> Result<Arc<Q35Host>, GlueError> {
    let ecam = Arc::new(Ecam {
        system: system.clone(),
        owner: host.clone(),
        bus: Arc::downgrade(&bus),
        mapped: Mutex::new(None),
    });
    let watcher: Arc<dyn FunctionsWatcher> = ecam.clone();
    bus.watch(Arc::downgrade(&watcher));
    let glue = Arc::new(Q35Host {
        bus: Arc::clone(&bus),
        address: Mutex::new(ConfigAddressRegister::default()),
        ecam,
        vmsd: pcihost_vmsd()?,
    });
    let idx = MemoryRegion::mmio(
        "pci-conf-idx",
        Some(host),
        4,
        Arc::new(ConfigAddressOps {
            host: Arc::downgrade(&glue),
        }),
    )?;
    let data = MemoryRegion::mmio(
        "pci-conf-data",
        Some(host),
        4,
        Arc::new(ConfigDataOps {
            host: Arc::downgrade(&glue),
        }),
    )?;
    vmkit_memory::transaction(|| -> vmkit_memory::Result<()> {
        bus.io()
            .add_subregion(GuestAddr(u64::from(CONFIG_ADDRESS_PORT)), &idx)?;
        bus.io().add_subregion(GuestAddr(u64::from(CONFIG_DATA_PORT)), &data)?;
        Ok(())
    })?;
    host.set_user_data(glue.clone())?;
    Ok(glue)
}

/// The host glue of a `q35-pcihost` object.
pub fn q35_host(obj: &Object) -> Option<Arc<Q35Host>> {
    obj.user_data()?.downcast::<Q35Host>().ok()
}

/// `mch`: the host bridge function at 00.0.
pub struct Mch {
    config: ConfigSpace,
    ecam: Arc<Ecam>,
    vmsd: Arc<VmStateDescription>,
}

/// QEMU's `vmstate_mch` ("mch", v1): the `PCIDevice` part, then one byte
/// that used to be `smm_enabled`.
pub fn mch_vmsd() -> Result<Arc<VmStateDescription>, PciError> {
    VmStateDescription::builder("mch")
        .version(1)
        .minimum_version(1)
        .simple(
            "parent_obj",
            FieldKind::Struct(pci_device_vmsd(ConfigKind::Conventional)?),
        )
        .simple("unused", FieldKind::Unused { len: 1 })
        .build()
        .map_err(|e| PciError::Description(e.to_string()))
}

/// The MCH's migrated state: the `PCIDevice` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MchState(pub PciDeviceState);

impl MigrationState for MchState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new().with("parent_obj", VmValue::Struct(self.0.to_vmstate()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<MchState, StateError> {
        let pci = s
            .get("parent_obj")
            .and_then(VmValue::as_struct)
            .ok_or_else(|| StateError::field("parent_obj", "missing or not a struct"))?;
        PciDeviceState::from_vmstate(pci).map(MchState).map_err(|e| match e {
            StateError::Field { path, reason } => StateError::field(format!("parent_obj/{path}"), reason),
            other => other,
        })
    }
}

impl Mch {
    fn fresh_config() -> ConfigSpace {
        let mut config = ConfigSpace::new(
            ConfigKind::Conventional,
            Identity {
                vendor_id: MCH_VENDOR_ID,
                device_id: MCH_DEVICE_ID,
                revision: 0,
                class_code: MCH_CLASS_CODE,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                header_type: 0,
                interrupt_pin: 0,
            },
        );
        for (at, bytes) in MCH_RESET_BYTES {
            config.put_bytes(*at, bytes);
        }
        config
    }

    fn pciexbar(&self) -> u64 {
        let b = &self.config.bytes()[PCIEXBAR..PCIEXBAR + 8];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    fn follow_pciexbar(&self) {
        // A window the system map cannot take stays unmapped; the guest
        // sees nothing there, as with a window over RAM on real hardware.
        let _ = self.ecam.update(self.pciexbar());
    }
}

impl PciFunction for Mch {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<PciEffects, PciError> {
        let fx = self.config.write(offset, size, value)?;
        let start = usize::from(offset);
        if start < PCIEXBAR + 8 && PCIEXBAR < start + usize::from(size) {
            self.follow_pciexbar();
        }
        Ok(PciEffects::from_config(fx))
    }

    fn bar_read(&mut self, bar: BarIndex, offset: u64, size: u8) -> Result<u64, PciError> {
        Err(no_bar(bar, offset, size))
    }

    fn bar_write(&mut self, bar: BarIndex, offset: u64, size: u8, _value: u64) -> Result<PciEffects, PciError> {
        Err(no_bar(bar, offset, size))
    }

    fn reset(&mut self) -> PciEffects {
        let fx = self.config.reset();
        for (at, bytes) in MCH_RESET_BYTES {
            self.config.put_bytes(*at, bytes);
        }
        self.follow_pciexbar();
        PciEffects::from_config(fx)
    }
}

fn no_bar(bar: BarIndex, offset: u64, size: u8) -> PciError {
    PciError::BarAccess {
        index: bar.number(),
        offset,
        size,
        reason: "the function has no BARs".into(),
    }
}

impl PciDeviceModel for Mch {
    type State = MchState;

    fn realize(obj: &Object, _bus: &PciRootBus) -> Result<Mch, String> {
        let host = obj
            .parent()
            .as_ref()
            .and_then(q35_host)
            .ok_or_else(|| format!("'{TYPE_MCH}' is part of the q35 host bridge and cannot be added on its own"))?;
        Ok(Mch {
            config: Mch::fresh_config(),
            ecam: Arc::clone(&host.ecam),
            vmsd: mch_vmsd().map_err(|e| e.to_string())?,
        })
    }

    fn bar_region(&self, bar: BarIndex) -> BarRegion {
        BarRegion {
            name: format!("mch-bar{}", bar.number()),
            kind: BarRegionKind::Container,
        }
    }

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> MchState {
        MchState(PciDeviceState::capture(&self.config, [false; 4]))
    }

    fn check_state(&self, state: &MchState) -> Result<(), StateError> {
        state.0.check(&self.config, "parent_obj")
    }

    fn load_state(&mut self, state: MchState) -> Result<PciEffects, StateError> {
        let fx = state.0.apply(&mut self.config, "parent_obj")?;
        // QEMU's post_load: the windows follow the loaded registers.
        self.follow_pciexbar();
        Ok(PciEffects::from_config(fx))
    }
}

fn unrealize_host(obj: &Object) -> vmkit_qom::Result<()> {
    if let Some(host) = q35_host(obj) {
        host.ecam.unmap();
    }
    Ok(())
}

fn realize_host(obj: &Object) -> vmkit_qom::Result<()> {
    if q35_host(obj).is_none() {
        return Err(vmkit_qom::Error::hook_message(
            "realize",
            obj.describe(),
            format!("'{TYPE_Q35_HOST}' is made by the q35 board and cannot be added"),
        ));
    }
    Ok(())
}

/// The host bridge type.
pub(crate) fn host_type_info() -> TypeInfo {
    TypeInfo::new(TYPE_Q35_HOST)
        .parent(TYPE_DEVICE)
        .description("q35's PCI Express host bridge: pcie.0, 0xCF8/0xCFC and the ECAM window")
        .realize(realize_host)
        .unrealize(unrealize_host)
}

/// The host bridge's section, "PCIHost".
pub(crate) fn register_host_vmstate() -> Result<(), GlueError> {
    register_device_model::<Q35Host>(TYPE_Q35_HOST, pcihost_vmsd()?)?;
    Ok(())
}

/// The `mch` type (registered as a PCI device type).
pub(crate) fn register_mch() -> Result<(), GlueError> {
    super::device::register_pci_type::<Mch>(
        TypeInfo::new(TYPE_MCH).description("the Q35 memory controller hub: the host bridge function at 00.0"),
        Some(mch_vmsd()?),
    )
}
