//! `pci-device`: the base type of PCI functions, and [`PciDevice`], the
//! glue that runs a function's model in the machine.
//!
//! A concrete type registers with [`register_pci_type`] and a model
//! implementing [`PciDeviceModel`]. At realize the glue finds the root
//! bus, places the function by `addr=` (QEMU's rules and messages), has
//! the model built from the object's properties, creates one region per
//! BAR the model declares (owned by the device, so an access after unplug
//! fails cleanly) and a bus-master address space (the alias of the bus's
//! DMA root behind it is enabled by Command.MASTER). Every access returns
//! effects, applied here: BAR moves remove before they add, in one
//! topology transaction; bus mastering switches the alias; MSI messages
//! are written through the bus-master space once no lock is held.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, MutexGuard};
use vmkit_memory::{AccessConstraints, AddressSpace, FULL_SPACE, GuestAddr, MemoryRegion, MmioOps};
use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::savevm::{register_device_model, register_device_path};
use vmkit_migration::vmstate::VmStateDescription;
use vmkit_qom::{Object, PropertyDef, PropertyKind, TYPE_DEVICE, TextParser, TypeInfo, Value};

use super::bus::{BusFunction, PciRootBus, all_ones, find_root_bus};
use super::info::device_info;
use super::reentry::{MAX_NESTED, ReentryGuard, Refusal};
use crate::dma::{Dma, DmaError};
use crate::glue::error::GlueError;
use crate::pci::regs::HEADER_TYPE_MULTI_FUNCTION;
use crate::pci::{BarIndex, BarMove, BarSpace, DevFn, HeaderReg, Occupant, PciEffects, PciError, PciFunction};

/// QEMU's `TYPE_PCI_DEVICE`: the abstract base of PCI functions.
pub const TYPE_PCI_DEVICE: &str = "pci-device";

/// What a BAR's region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarRegionKind {
    /// Registers: accesses go to the model, split or widened to what it
    /// implements.
    Mmio(AccessConstraints),
    /// An empty window (QEMU's plain container BAR): nothing answers.
    Container,
}

/// The region behind one BAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarRegion {
    /// Its name, as `info mtree` shows it (QEMU's: `pci-testdev-mmio`).
    pub name: String,
    /// What it is.
    pub kind: BarRegionKind,
}

/// A PCI function's model as the glue runs it: the accesses of
/// [`PciFunction`], plus how it is built, what its BARs' regions are and
/// its migration state (the `PCIDevice` part nested in it as QEMU does).
pub trait PciDeviceModel: PciFunction + Sized {
    /// The migrated state.
    type State: MigrationState;

    /// The model of `obj` being realized on `bus`, from its properties;
    /// the error is QEMU's message.
    fn realize(obj: &Object, bus: &PciRootBus) -> Result<Self, String>;

    /// The region behind BAR `bar` (one the configuration space declares).
    fn bar_region(&self, bar: BarIndex) -> BarRegion;

    /// The description of the state.
    fn vmsd(&self) -> Arc<VmStateDescription>;

    /// The current state.
    fn save_state(&self) -> Self::State;

    /// Whether `state` can be loaded (QEMU's checks); changes nothing.
    fn check_state(&self, state: &Self::State) -> Result<(), StateError>;

    /// Loads a state `check_state` accepted; the BAR mappings and bus
    /// mastering it implies come back.
    fn load_state(&mut self, state: Self::State) -> Result<PciEffects, StateError>;

    /// The object that owns the BAR regions of `obj`: the device itself,
    /// or a child embedded in it (QEMU's `qemu-xhci` has its controller
    /// core own BAR0).
    fn region_owner(obj: &Object) -> Object {
        obj.clone()
    }

    /// The function is on its bus at `path` ("0000:00:01.0") and reaches
    /// guest memory through `dma` (a model doing DMA keeps it).
    fn connected(&mut self, _dma: BusMasterDma, _path: &str) {}

    /// The device `dev` is being unrealized, before the function leaves
    /// its bus: the devices on its own buses go first (QEMU unrealizes a
    /// device's child buses first).
    fn unrealizing(_dev: &Arc<PciDevice<Self>>)
    where
        Self: Sized,
    {
    }
}

/// A BAR's region and where its mapping goes.
struct BarMapping {
    index: BarIndex,
    space: BarSpace,
    region: MemoryRegion,
}

/// The device's bus-master address space: a container holding an alias
/// of the bus's DMA root (or of the region an IOMMU gave it), enabled while Command.MASTER is set (QEMU's
/// `bus master container` and `bus master`).
struct BusMaster {
    enable: MemoryRegion,
    space: Arc<AddressSpace>,
}

impl BusMaster {
    fn new(obj: &Object, target: &MemoryRegion) -> vmkit_memory::Result<BusMaster> {
        let container = MemoryRegion::container("bus master container", Some(obj), FULL_SPACE)?;
        // QEMU's alias is as long as a 64-bit size goes.
        let size = u64::try_from(target.size()).unwrap_or(u64::MAX);
        let enable = MemoryRegion::alias("bus master", Some(obj), target, 0, size)?;
        enable.set_enabled(false);
        container.add_subregion(GuestAddr(0), &enable)?;
        let space = AddressSpace::new(obj.type_name(), &container);
        Ok(BusMaster { enable, space })
    }
}

/// A realized PCI function: its model behind a lock, its place on the
/// bus, its BAR regions and bus-master address space. Kept as the user
/// data of its QOM object.
pub struct PciDevice<M: PciDeviceModel> {
    obj: Object,
    bus: Arc<PciRootBus>,
    devfn: DevFn,
    qdev_id: String,
    /// Shared with the BAR regions' callbacks, so a register read need not
    /// take a reference to the whole device. The model holds no strong
    /// reference back to a region ([`BusMasterDma`] is weak), so this makes
    /// no cycle.
    model: Arc<Mutex<M>>,
    /// Serialises an access's effects with the next access's: a guest's
    /// BAR moves are applied in the order it made them.
    apply: Mutex<()>,
    mappings: OnceLock<Vec<BarMapping>>,
    bus_master: BusMaster,
    /// Bytes of its configuration space: fixed by the model's kind, kept
    /// here so a config access need not lock the model to bound itself.
    config_size: usize,
}

impl<M: PciDeviceModel> PciDevice<M> {
    /// The model.
    pub fn model(&self) -> MutexGuard<'_, M> {
        self.model.lock()
    }

    /// Where the function sits.
    pub fn devfn(&self) -> DevFn {
        self.devfn
    }

    /// Its bus path as QEMU's `qdev_get_dev_path` gives it: `0000:BB:SS.F`.
    pub fn dev_path(&self) -> String {
        let d = self.devfn;
        format!("0000:{:02x}:{:02x}.{:x}", self.bus.number(), d.slot(), d.func())
    }

    /// Its bus.
    pub fn bus(&self) -> &Arc<PciRootBus> {
        &self.bus
    }

    /// Its bus-master address space: what its DMA and MSI writes reach
    /// (nothing while Command.MASTER is clear).
    pub fn dma_space(&self) -> &Arc<AddressSpace> {
        &self.bus_master.space
    }

    /// Its DMA as a model reaches guest memory (failing once the device
    /// is gone).
    pub fn dma(&self) -> BusMasterDma {
        BusMasterDma(Arc::downgrade(&self.bus_master.space))
    }

    /// The region of BAR `bar`, if the model declared it.
    pub fn bar_region(&self, bar: BarIndex) -> Option<MemoryRegion> {
        self.mappings
            .get()?
            .iter()
            .find(|m| m.index == bar)
            .map(|m| m.region.clone())
    }

    /// A guest configuration write (0xCFC or ECAM).
    pub fn config_write(&self, offset: u16, size: u8, value: u32) -> Result<(), PciError> {
        self.run(|m| m.config_write(offset, size, value))
    }

    /// A guest configuration read.
    pub fn config_read(&self, offset: u16, size: u8) -> Result<u32, PciError> {
        self.model.lock().config_read(offset, size)
    }

    /// The device reset, with its effects applied.
    pub fn reset(&self) {
        let _ = self.run(|m| Ok::<_, Infallible>(m.reset()));
    }

    /// Runs a device-side operation (a USB attach, injected input) on the
    /// model and applies its effects, guarded against re-entry as a BAR
    /// access is: a DMA of the operation reaching this device's own BARs
    /// is refused.
    pub fn update<E>(&self, f: impl FnOnce(&mut M) -> Result<PciEffects, E>) -> Result<(), E> {
        let _guard = ReentryGuard::enter(self.key());
        self.run(f)
    }

    /// Whether this thread is inside the device's model now.
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as *const () as usize
    }

    /// Runs `f` on the model and applies its effects: BAR moves and bus
    /// mastering under the apply lock, then the MSI messages with no lock
    /// held (a message may reach this device's own BAR).
    fn run<E>(&self, f: impl FnOnce(&mut M) -> Result<PciEffects, E>) -> Result<(), E> {
        let fx = {
            let _order = self.apply.lock();
            let fx = f(&mut self.model.lock())?;
            self.map(&fx);
            fx
        };
        for m in &fx.messages {
            // A message to nothing is dropped, as QEMU's is.
            let _ = self
                .bus_master
                .space
                .write_sized(GuestAddr(m.address), 4, u64::from(m.data));
        }
        Ok(())
    }

    /// Applies BAR moves (removals first, as they come) and the bus-master
    /// switch, in one topology transaction.
    fn map(&self, fx: &PciEffects) {
        if fx.config.bar_moves.is_empty() && fx.config.bus_master.is_none() {
            return;
        }
        vmkit_memory::transaction(|| {
            for mv in &fx.config.bar_moves {
                self.move_bar(mv);
            }
            if let Some(on) = fx.config.bus_master {
                self.bus_master.enable.set_enabled(on);
            }
        });
    }

    fn move_bar(&self, mv: &BarMove) {
        let Some(m) = self.mappings.get().and_then(|v| v.iter().find(|m| m.index == mv.index)) else {
            return;
        };
        let container = self.container(m.space);
        if m.region.container_region().is_some() {
            let _ = container.del_subregion(&m.region);
        }
        if let Some(to) = mv.to {
            // Priority 1 over the bus's own background, overlaps allowed
            // (QEMU's pci_update_mappings). A window a space cannot hold
            // (an I/O BAR above 64 KiB) stays unreachable, as in QEMU.
            let _ = container.add_subregion_overlap(GuestAddr(to), &m.region, 1);
        }
    }

    fn container(&self, space: BarSpace) -> &MemoryRegion {
        match space {
            BarSpace::Memory => self.bus.memory(),
            BarSpace::Io => self.bus.io(),
        }
    }

    /// Unplugged: every BAR leaves its space, bus mastering stops and the
    /// number is free again.
    fn unrealize(&self) {
        let _order = self.apply.lock();
        vmkit_memory::transaction(|| {
            for m in self.mappings.get().into_iter().flatten() {
                if m.region.container_region().is_some() {
                    let _ = self.container(m.space).del_subregion(&m.region);
                }
            }
            self.bus_master.enable.set_enabled(false);
        });
        self.bus.detach(self.devfn);
    }
}

impl<M: PciDeviceModel> BusFunction for PciDevice<M> {
    fn config_read(&self, offset: u16, size: u8) -> u32 {
        PciDevice::config_read(self, offset, size).unwrap_or_else(|_| all_ones(size))
    }

    fn config_write(&self, offset: u16, size: u8, value: u32) {
        // A guest's bad access changes nothing; it has nobody to tell.
        let _ = PciDevice::config_write(self, offset, size, value);
    }

    fn config_size(&self) -> usize {
        self.config_size
    }

    fn info(&self) -> serde_json::Value {
        device_info(self.bus.number(), self.devfn, self.model.lock().config(), &self.qdev_id)
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn dma_space(&self) -> Arc<AddressSpace> {
        Arc::clone(&self.bus_master.space)
    }
}

impl<M: PciDeviceModel> DeviceState for PciDevice<M> {
    type State = M::State;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        self.model.lock().vmsd()
    }

    fn save_state(&self) -> Result<M::State, StateError> {
        Ok(self.model.lock().save_state())
    }

    fn check_state(&self, state: &M::State, _version_id: u32) -> Result<(), StateError> {
        self.model.lock().check_state(state)
    }

    fn load_state(&self, state: M::State, _version_id: u32) -> Result<(), StateError> {
        self.run(|m| m.load_state(state))
    }
}

/// A BAR region's accesses, forwarded to the model. It holds the device
/// weakly (the device holds its regions) and the model strongly: a read
/// needs only the model, and checking that the device is alive costs a
/// load where taking a reference to it costs two atomic updates.
struct BarOps<M: PciDeviceModel> {
    dev: Weak<PciDevice<M>>,
    model: Arc<Mutex<M>>,
    bar: BarIndex,
    constraints: AccessConstraints,
}

impl<M: PciDeviceModel> BarOps<M> {
    fn gone(&self) -> vmkit_memory::Error {
        vmkit_memory::Error::Refused(format!("BAR {} of a device that is gone", self.bar.number()))
    }

    fn device(&self) -> vmkit_memory::Result<Arc<PciDevice<M>>> {
        self.dev.upgrade().ok_or_else(|| self.gone())
    }

    /// Enters the device, refusing an access made from inside it (its own
    /// DMA reaching its BAR): QEMU's guard ignores such an access too.
    fn enter(&self) -> vmkit_memory::Result<ReentryGuard> {
        // The device's key (its address) without a reference to it.
        let key = self.dev.as_ptr() as *const () as usize;
        ReentryGuard::enter(key).map_err(|why| self.refused(why))
    }

    #[cold]
    fn refused(&self, why: Refusal) -> vmkit_memory::Error {
        let Some(dev) = self.dev.upgrade() else {
            return self.gone();
        };
        vmkit_memory::Error::Refused(match why {
            Refusal::Reentered => format!(
                "re-entrant access to BAR {} of {} from its own DMA: ignored",
                self.bar.number(),
                dev.obj.describe()
            ),
            Refusal::TooDeep => format!(
                "access to BAR {} of {} from DMA nested through {MAX_NESTED} devices: ignored",
                self.bar.number(),
                dev.obj.describe()
            ),
        })
    }
}

fn access_error(e: PciError) -> vmkit_memory::Error {
    vmkit_memory::Error::Refused(e.to_string())
}

impl<M: PciDeviceModel> MmioOps for BarOps<M> {
    fn read(&self, offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        if self.dev.strong_count() == 0 {
            return Err(self.gone());
        }
        let _guard = self.enter()?;
        let v = self.model.lock().bar_read(self.bar, offset, size as u8);
        v.map_err(access_error)
    }

    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        let dev = self.device()?;
        let _guard = self.enter()?;
        dev.run(|m| m.bar_write(self.bar, offset, size as u8, value))
            .map_err(access_error)
    }

    fn constraints(&self) -> AccessConstraints {
        self.constraints
    }
}

/// A device's DMA through its bus-master address space. Weak: the space
/// reaches the device's own BARs, whose callbacks hold the model that
/// holds this; once the device is gone, its DMA fails.
#[derive(Debug, Clone)]
pub struct BusMasterDma(Weak<AddressSpace>);

impl BusMasterDma {
    fn space(&self, kind: &'static str, addr: u64, len: usize) -> Result<Arc<AddressSpace>, DmaError> {
        self.0.upgrade().ok_or_else(|| DmaError {
            kind,
            addr,
            len: len as u64,
            reason: "the device's bus-master address space is gone".into(),
        })
    }
}

impl Dma for BusMasterDma {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        Dma::read(&*self.space("read", addr, buf.len())?, addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        Dma::write(&*self.space("write", addr, data.len())?, addr, data)
    }
}

/// The glue of a realized device of model `M`.
pub fn pci_device<M: PciDeviceModel>(obj: &Object) -> Option<Arc<PciDevice<M>>> {
    obj.user_data()?.downcast::<PciDevice<M>>().ok()
}

/// The bus-master address space of the realized PCI function `obj`: what
/// its DMA reaches (through the IOMMU when one covers it; nothing while
/// its Command.MASTER is clear).
pub fn function_dma_space(obj: &Object) -> Option<Arc<AddressSpace>> {
    if !obj.is_a(TYPE_PCI_DEVICE) || !obj.is_realized() {
        return None;
    }
    let devfn = match obj.get("addr").ok()? {
        Value::Int(v) => DevFn::from_raw(u8::try_from(v).ok()?),
        _ => return None,
    };
    let bus = find_root_bus()?;
    let space = bus.function_dma_space(devfn)?;
    // The function at that number is this object (not one plugged since).
    bus.function_objects()
        .iter()
        .any(|(d, o)| *d == devfn && o == obj)
        .then_some(space)
}

/// The `id` a device was added with (its name under
/// `/machine/peripheral`), if any.
fn qdev_id(obj: &Object) -> Option<String> {
    let parent = obj.parent()?;
    (parent.canonical_path().as_deref() == Some("/machine/peripheral"))
        .then(|| obj.name_in_parent())
        .flatten()
}

fn realize<M: PciDeviceModel>(obj: &Object) -> vmkit_qom::Result<()> {
    let fail = |msg: String| vmkit_qom::Error::hook_message("realize", obj.describe(), msg);
    let bus = find_root_bus().ok_or_else(|| fail(format!("No 'PCI' bus found for device '{}'", obj.type_name())))?;
    if obj.is_hotplugged() && !bus.hotplug() {
        return Err(fail(bus.no_hotplug_message()));
    }
    let requested = match obj.get("addr")? {
        Value::Int(v) if v >= 0 => u8::try_from(v).ok().map(DevFn::from_raw),
        _ => None,
    };
    let multifunction = obj.get("multifunction")? == Value::Bool(true);
    let id = qdev_id(obj);
    let occupant = Occupant {
        type_name: obj.type_name().to_owned(),
        id: id.clone(),
        multifunction,
    };
    let devfn = bus
        .place(requested, occupant, obj.is_hotplugged())
        .map_err(|e| fail(e.to_string()))?;
    let built = M::realize(obj, &bus).and_then(|mut model| {
        if multifunction {
            let at = HeaderReg::HeaderType.offset();
            let header = model.config().bytes()[at];
            model.config_mut().put_bytes(at, &[header | HEADER_TYPE_MULTI_FUNCTION]);
        }
        PciDevice::build(obj, Arc::clone(&bus), devfn, id.unwrap_or_default(), model).map_err(|e| e.to_string())
    });
    let connected = built.map_err(fail).and_then(|dev| {
        // QEMU's `addr` reads back where the function went.
        obj.set("addr", Value::Int(i64::from(devfn.raw())))?;
        obj.set_user_data(Arc::clone(&dev) as Arc<dyn std::any::Any + Send + Sync>)?;
        bus.attach(devfn, dev as Arc<dyn BusFunction>);
        Ok(())
    });
    if connected.is_err() {
        // Nothing is left on the bus of a function that did not realize.
        bus.detach(devfn);
    }
    connected
}

impl<M: PciDeviceModel> PciDevice<M> {
    fn build(
        obj: &Object,
        bus: Arc<PciRootBus>,
        devfn: DevFn,
        qdev_id: String,
        mut model: M,
    ) -> Result<Arc<PciDevice<M>>, GlueError> {
        let bars: Vec<(BarIndex, BarSpace, u64, BarRegion)> = model
            .config()
            .bars()
            .map(|(i, bar, _)| (i, bar.space(), bar.size, model.bar_region(i)))
            .collect();
        // Behind an IOMMU, the function's own translated region.
        let dma_root = bus.device_dma_root(devfn, obj)?;
        let bus_master = BusMaster::new(obj, &dma_root)?;
        let path = format!("0000:{:02x}:{:02x}.{:x}", bus.number(), devfn.slot(), devfn.func());
        model.connected(BusMasterDma(Arc::downgrade(&bus_master.space)), &path);
        let owner = M::region_owner(obj);
        let config_size = model.config().len();
        let dev = Arc::new(PciDevice {
            obj: obj.clone(),
            bus,
            devfn,
            qdev_id,
            model: Arc::new(Mutex::new(model)),
            apply: Mutex::new(()),
            mappings: OnceLock::new(),
            bus_master,
            config_size,
        });
        let mut mappings = Vec::with_capacity(bars.len());
        for (index, space, size, region) in bars {
            let region = match region.kind {
                BarRegionKind::Mmio(constraints) => {
                    let ops = BarOps {
                        dev: Arc::downgrade(&dev),
                        model: Arc::clone(&dev.model),
                        bar: index,
                        constraints,
                    };
                    MemoryRegion::mmio(&region.name, Some(&owner), size, Arc::new(ops))?
                }
                BarRegionKind::Container => MemoryRegion::container(&region.name, Some(&owner), u128::from(size))?,
            };
            mappings.push(BarMapping { index, space, region });
        }
        let _ = dev.mappings.set(mappings);
        Ok(dev)
    }
}

fn unrealize<M: PciDeviceModel>(obj: &Object) -> vmkit_qom::Result<()> {
    if let Some(dev) = pci_device::<M>(obj) {
        M::unrealizing(&dev);
        dev.unrealize();
    }
    Ok(())
}

fn reset<M: PciDeviceModel>(obj: &Object) -> vmkit_qom::Result<()> {
    if let Some(dev) = pci_device::<M>(obj) {
        dev.reset();
    }
    Ok(())
}

fn unplug<M: PciDeviceModel>(obj: &Object) -> vmkit_qom::Result<()> {
    match pci_device::<M>(obj) {
        Some(dev) if obj.is_realized() && !dev.bus.hotplug() => Err(vmkit_qom::Error::hook_message(
            "unplug",
            obj.describe(),
            dev.bus.no_hotplug_message(),
        )),
        _ => Ok(()),
    }
}

/// Registers the PCI device type `info` (its parent is set to
/// `pci-device`) run by model `M`; with `vmsd`, its instances migrate as
/// that description, in sections named after their PCI address.
pub fn register_pci_type<M: PciDeviceModel>(
    info: TypeInfo,
    vmsd: Option<Arc<VmStateDescription>>,
) -> Result<(), GlueError> {
    let ty = info
        .parent(TYPE_PCI_DEVICE)
        .realize(realize::<M>)
        .unrealize(unrealize::<M>)
        .reset(reset::<M>)
        .unplug(unplug::<M>)
        .register()?;
    if let Some(vmsd) = vmsd {
        register_device_model::<PciDevice<M>>(ty.name(), vmsd)?;
    }
    Ok(())
}

/// `addr=` text: QEMU's "SS" or "SS.F".
fn devfn_parser() -> TextParser {
    TextParser::new(|text| {
        text.parse::<DevFn>()
            .map(|d| Value::Int(i64::from(d.raw())))
            .map_err(|_| format!("doesn't take value '{text}'"))
    })
}

/// The base type, with QEMU's `addr` and `multifunction` (no option ROM:
/// vmkit has none to load).
pub(crate) fn type_info() -> TypeInfo {
    TypeInfo::new(TYPE_PCI_DEVICE)
        .parent(TYPE_DEVICE)
        .abstract_type(true)
        .description("the base of PCI functions")
        .class_property(
            PropertyDef::new(
                "addr",
                PropertyKind::Int {
                    bits: 32,
                    min: -1,
                    max: 255,
                },
            )
            .default(Value::Int(-1))
            .description("Slot and optional function number, example: 06.0 or 06")
            .before_realize()
            .parser(devfn_parser()),
        )
        .class_property(
            PropertyDef::new("multifunction", PropertyKind::Bool)
                .default(Value::Bool(false))
                .description("on/off")
                .before_realize(),
        )
}

/// Names a PCI device's sections as QEMU does: `0000:BB:SS.F/<vmsd>`.
pub(crate) fn register_dev_path() -> Result<(), GlueError> {
    register_device_path(TYPE_PCI_DEVICE, |obj| {
        if !obj.is_realized() {
            return None;
        }
        let devfn = match obj.get("addr").ok()? {
            Value::Int(v) => DevFn::from_raw(u8::try_from(v).ok()?),
            _ => return None,
        };
        let bus = find_root_bus().map_or(0, |b| b.number());
        Some(format!("0000:{bus:02x}:{:02x}.{:x}", devfn.slot(), devfn.func()))
    })?;
    Ok(())
}
