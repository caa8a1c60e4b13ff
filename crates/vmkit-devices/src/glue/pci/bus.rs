//! A PCI root bus as the machine holds it: which function sits at which
//! device/function number (placed by [`PciBus`]'s rules), the spaces its
//! BARs are mapped into, what its functions' bus mastering reaches, and
//! configuration accesses routed to the function addressed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use vmkit_memory::{AddressSpace, MemoryRegion};
use vmkit_qom::{Object, TYPE_OBJECT, TypeInfo};

use crate::pci::{DevFn, Occupant, PciBus, PciError};

/// QEMU's `TYPE_BUS`: the abstract base of buses.
pub const TYPE_BUS: &str = "bus";
/// QEMU's `TYPE_PCI_BUS`.
pub const TYPE_PCI_BUS: &str = "PCI";
/// QEMU's `TYPE_PCIE_BUS`.
pub const TYPE_PCIE_BUS: &str = "PCIE";

/// A function on the bus, as the bus reaches it.
pub(crate) trait BusFunction: Send + Sync {
    /// A configuration read of `size` bytes at `offset`.
    fn config_read(&self, offset: u16, size: u8) -> u32;
    /// A configuration write.
    fn config_write(&self, offset: u16, size: u8, value: u32);
    /// Bytes of its configuration space (256 or 4096).
    fn config_size(&self) -> usize;
    /// Its `query-pci` entry.
    fn info(&self) -> serde_json::Value;
    /// Its QOM object.
    fn object(&self) -> &Object;
    /// Its bus-master address space.
    fn dma_space(&self) -> Arc<AddressSpace>;
}

/// Decides what each function's bus mastering reaches (QEMU's
/// `pci_setup_iommu`): an IOMMU installs one on the bus, and every
/// function realized afterwards gets the region it returns as the target
/// of its bus-master alias.
pub trait DmaRootHook: Send + Sync {
    /// The region function `devfn` of bus `bus` masters into; `owner` is
    /// the function's object (the region is owned by it, so an access
    /// after unplug fails cleanly).
    fn dma_root(&self, bus: u8, devfn: DevFn, owner: &Object) -> vmkit_memory::Result<MemoryRegion>;
}

/// The connected functions, indexed by raw device/function number (a
/// configuration access finds its function by one index, not a search).
#[derive(Clone)]
pub(crate) struct FunctionTable(Box<[Option<Arc<dyn BusFunction>>]>);

/// Told, outside the bus's locks, each time a function is connected or
/// disconnected, with the new table. The ECAM window keeps the table its
/// accesses read, so a read needs no guard of its own: the flat view's
/// guard keeps the window's region, and with it that table, alive.
pub(crate) trait FunctionsWatcher: Send + Sync {
    /// The functions are now `table`.
    fn functions_changed(&self, table: &Arc<FunctionTable>);
}

impl FunctionTable {
    fn new() -> FunctionTable {
        FunctionTable(vec![None; 256].into_boxed_slice())
    }

    fn get(&self, devfn: u8) -> Option<&Arc<dyn BusFunction>> {
        self.0.get(usize::from(devfn))?.as_ref()
    }

    fn set(&mut self, devfn: u8, function: Option<Arc<dyn BusFunction>>) {
        if let Some(slot) = self.0.get_mut(usize::from(devfn)) {
            *slot = function;
        }
    }

    /// The functions in device/function order.
    fn iter(&self) -> impl Iterator<Item = (u8, &Arc<dyn BusFunction>)> {
        (0..=u8::MAX)
            .zip(self.0.iter())
            .filter_map(|(d, f)| Some((d, f.as_ref()?)))
    }
}

/// A PCI root bus: placement of its functions and the address spaces
/// behind it. Kept as the user data of its QOM object (`pcie.0`).
pub struct PciRootBus {
    name: String,
    number: u8,
    express: bool,
    hotplug: AtomicBool,
    memory: MemoryRegion,
    io: MemoryRegion,
    dma_root: MemoryRegion,
    dma_hook: RwLock<Option<Arc<dyn DmaRootHook>>>,
    /// Placement; its lock also serialises changes of `functions`.
    placement: Mutex<PciBus>,
    /// Read without a lock on every configuration access (replaced as a
    /// whole on plug and unplug, which are rare).
    functions: ArcSwap<FunctionTable>,
    watchers: Mutex<Vec<Weak<dyn FunctionsWatcher>>>,
}

/// All ones for an access of `size` bytes (nothing answers).
pub(crate) fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

impl PciRootBus {
    /// Bus `number` named `name` (`pcie.0`); a PCI Express bus if
    /// `express`. Memory BARs are mapped into `memory` and I/O BARs into
    /// `io`; a function's bus mastering shows `dma_root`.
    pub fn new(
        name: &str,
        number: u8,
        express: bool,
        memory: MemoryRegion,
        io: MemoryRegion,
        dma_root: MemoryRegion,
    ) -> Arc<PciRootBus> {
        Arc::new(PciRootBus {
            name: name.to_owned(),
            number,
            express,
            hotplug: AtomicBool::new(true),
            memory,
            io,
            dma_root,
            dma_hook: RwLock::new(None),
            // q35's root bus: automatic placement from 00.0 (the host
            // bridge takes it first).
            placement: Mutex::new(PciBus::new(0)),
            functions: ArcSwap::from_pointee(FunctionTable::new()),
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// Its name (`pcie.0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bus number.
    pub fn number(&self) -> u8 {
        self.number
    }

    /// Whether it is a PCI Express bus.
    pub fn is_express(&self) -> bool {
        self.express
    }

    /// Whether devices may be plugged and unplugged while the machine runs.
    pub fn hotplug(&self) -> bool {
        self.hotplug.load(Ordering::Acquire)
    }

    /// Allows or refuses hot-plug and hot-unplug on this bus.
    pub fn set_hotplug(&self, on: bool) {
        self.hotplug.store(on, Ordering::Release);
    }

    /// QEMU's refusal of a hot-plug or unplug on a bus without it.
    pub(crate) fn no_hotplug_message(&self) -> String {
        format!("Bus '{}' does not support hotplugging", self.name)
    }

    /// The container memory BARs are mapped into.
    pub fn memory(&self) -> &MemoryRegion {
        &self.memory
    }

    /// The container I/O BARs are mapped into.
    pub fn io(&self) -> &MemoryRegion {
        &self.io
    }

    /// What a function's bus mastering reaches (an IOMMU would sit here).
    pub fn dma_root(&self) -> &MemoryRegion {
        &self.dma_root
    }

    /// Installs (or with `None` removes) the hook deciding what functions
    /// realized from now on master into.
    pub fn set_dma_hook(&self, hook: Option<Arc<dyn DmaRootHook>>) {
        *self.dma_hook.write() = hook;
    }

    /// Whether a DMA hook (an IOMMU) is installed.
    pub fn has_dma_hook(&self) -> bool {
        self.dma_hook.read().is_some()
    }

    /// What function `devfn` (object `owner`) masters into: the hook's
    /// region if one is installed, else [`dma_root`](Self::dma_root).
    pub(crate) fn device_dma_root(&self, devfn: DevFn, owner: &Object) -> vmkit_memory::Result<MemoryRegion> {
        let hook = self.dma_hook.read().clone();
        match hook {
            Some(h) => h.dma_root(self.number, devfn, owner),
            None => Ok(self.dma_root.clone()),
        }
    }

    /// The bus-master address space of the function at `devfn`, if one
    /// is there: what its DMA reaches.
    pub fn function_dma_space(&self, devfn: DevFn) -> Option<Arc<AddressSpace>> {
        self.function(devfn).map(|f| f.dma_space())
    }

    /// The objects of the functions on the bus, by device/function number.
    pub fn function_objects(&self) -> Vec<(DevFn, Object)> {
        self.functions()
            .into_iter()
            .map(|(d, f)| (d, f.object().clone()))
            .collect()
    }

    /// Places `occupant` at `requested` (or the first free slot) by QEMU's
    /// rules and messages.
    pub(crate) fn place(
        &self,
        requested: Option<DevFn>,
        occupant: Occupant,
        hotplugged: bool,
    ) -> Result<DevFn, PciError> {
        self.placement.lock().place(requested, occupant, hotplugged)
    }

    /// Connects the function placed at `devfn`.
    pub(crate) fn attach(&self, devfn: DevFn, function: Arc<dyn BusFunction>) {
        let table = {
            let _placement = self.placement.lock();
            let mut table = FunctionTable::clone(&self.functions.load());
            table.set(devfn.raw(), Some(function));
            let table = Arc::new(table);
            self.functions.store(Arc::clone(&table));
            table
        };
        self.tell_watchers(&table);
    }

    /// The connected functions now.
    pub(crate) fn function_table(&self) -> Arc<FunctionTable> {
        self.functions.load_full()
    }

    /// Tells `watcher` of every later change of the functions (until it is dropped).
    pub(crate) fn watch(&self, watcher: Weak<dyn FunctionsWatcher>) {
        let mut watchers = self.watchers.lock();
        watchers.retain(|w| w.strong_count() > 0);
        watchers.push(watcher);
    }

    fn tell_watchers(&self, table: &Arc<FunctionTable>) {
        let watchers: Vec<_> = self.watchers.lock().iter().filter_map(Weak::upgrade).collect();
        for w in watchers {
            w.functions_changed(table);
        }
    }

    /// Frees `devfn`: its function is no longer reached.
    pub(crate) fn detach(&self, devfn: DevFn) {
        let (old, table, _) = {
            let mut placement = self.placement.lock();
            let mut table = FunctionTable::clone(&self.functions.load());
            table.set(devfn.raw(), None);
            let table = Arc::new(table);
            let old = self.functions.swap(Arc::clone(&table));
            (old, table, placement.remove(devfn))
        };
        self.tell_watchers(&table);
        // Dropped outside the lock: the function may hold the last
        // references to regions and address spaces.
        drop(old);
    }

    pub(crate) fn function(&self, devfn: DevFn) -> Option<Arc<dyn BusFunction>> {
        self.functions.load().get(devfn.raw()).cloned()
    }

    /// Every function, by device/function number.
    pub(crate) fn functions(&self) -> Vec<(DevFn, Arc<dyn BusFunction>)> {
        self.functions
            .load()
            .iter()
            .map(|(d, f)| (DevFn::from_raw(d), Arc::clone(f)))
            .collect()
    }

    /// A configuration read of bus `bus`, function `devfn`, reaching at
    /// most `limit` bytes of its space (256 through 0xCFC, its whole space
    /// through ECAM): all ones where nothing answers, as on QEMU's hosts.
    pub fn config_read(&self, bus: u8, devfn: DevFn, offset: u16, size: u8, limit: usize) -> u32 {
        self.config_read_in(&self.functions.load(), bus, devfn, offset, size, limit)
    }

    /// [`PciRootBus::config_read`] reaching the functions of `table` (one
    /// the bus had).
    pub(crate) fn config_read_in(
        &self,
        table: &FunctionTable,
        bus: u8,
        devfn: DevFn,
        offset: u16,
        size: u8,
        limit: usize,
    ) -> u32 {
        match Self::target(table, self.number, bus, devfn, offset, limit) {
            Some(f) => f.config_read(offset, size),
            None => all_ones(size),
        }
    }

    /// A configuration write (dropped where nothing answers).
    pub fn config_write(&self, bus: u8, devfn: DevFn, offset: u16, size: u8, value: u32, limit: usize) {
        // A write may move BARs (memory-map changes with locks of their
        // own): it runs on its own reference, not under the table's guard.
        let f = Self::target(&self.functions.load(), self.number, bus, devfn, offset, limit).cloned();
        if let Some(f) = f {
            f.config_write(offset, size, value);
        }
    }

    /// The function answering `bus`/`devfn` at `offset` (below `limit` and
    /// its configuration size) in `table`.
    fn target(
        table: &FunctionTable,
        number: u8,
        bus: u8,
        devfn: DevFn,
        offset: u16,
        limit: usize,
    ) -> Option<&Arc<dyn BusFunction>> {
        if bus != number {
            return None;
        }
        let f = table.get(devfn.raw())?;
        (usize::from(offset) < limit.min(f.config_size())).then_some(f)
    }
}

/// The root bus of the current machine: the first PCI bus (in path order)
/// under `/machine` that the board connected.
pub fn find_root_bus() -> Option<Arc<PciRootBus>> {
    fn walk(obj: &Object) -> Option<Arc<PciRootBus>> {
        if obj.is_a(TYPE_PCI_BUS) {
            if let Some(bus) = obj.user_data().and_then(|d| d.downcast::<PciRootBus>().ok()) {
                return Some(bus);
            }
        }
        let mut children = obj.children();
        children.sort_by(|a, b| a.0.cmp(&b.0));
        children.iter().find_map(|(_, c)| walk(c))
    }
    walk(&vmkit_qom::machine()?)
}

/// The bus types.
pub(crate) fn type_infos() -> Vec<TypeInfo> {
    vec![
        TypeInfo::new(TYPE_BUS)
            .parent(TYPE_OBJECT)
            .abstract_type(true)
            .description("the base of buses"),
        TypeInfo::new(TYPE_PCI_BUS)
            .parent(TYPE_BUS)
            .description("a PCI bus (its functions are placed by addr=)"),
        TypeInfo::new(TYPE_PCIE_BUS)
            .parent(TYPE_PCI_BUS)
            .description("a PCI Express bus"),
    ]
}
