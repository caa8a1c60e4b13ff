//! A realized intel-iommu in the machine: its register window's accesses
//! reach the model, every PCI function behind it masters into an IOMMU
//! region whose translations the model answers, and what the model
//! returns is carried out here (the fault-event and invalidation-completion
//! MSIs are written to system memory, as QEMU's `vtd_generate_msi` does).
//!
//! The model is locked while it reads its tables through system memory.
//! Those reads are RAM-only (a table in MMIO would let a register access
//! of another device run under this lock), and a register access or a
//! translation that reaches this IOMMU again on the same thread is
//! refused rather than deadlocking.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use vmkit_memory::{
    AccessConstraints, AddressSpace, FULL_SPACE, GuestAddr, IommuMapping, IommuOps, IommuPerm, IommuTlbEntry,
    MemoryRegion, MmioOps, RegionKind,
};
use vmkit_migration::device_state::{DeviceState, StateError};
use vmkit_migration::vmstate::VmStateDescription;
use vmkit_qom::Object;

use super::last::{LastTranslation, Remembered};
use crate::dma::{Dma, DmaError, PinnedDma};
use crate::glue::error::GlueError;
use crate::glue::pci::DmaRootHook;
use crate::iommu::{
    Access, Effect, Fault, FaultReport, IntelIommu, IntelIommuDevice, IntelIommuState, Perm, SourceId, Translation,
};
use crate::pci::{DevFn, MsiMessage};

/// Where the register window sits in system memory (QEMU's
/// `Q35_HOST_BRIDGE_IOMMU_ADDR`).
pub const DMAR_BASE: u64 = 0xfed9_0000;
/// Bytes of the register window (QEMU's `DMAR_REG_SIZE` rounded to a page).
pub const DMAR_WINDOW: u64 = 0x1000;
/// The interrupt range translations pass through untouched (1 MiB).
const INTERRUPT_MASK: u64 = 0xf_ffff;

thread_local! {
    /// Set while this thread holds an IOMMU's model lock.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks the thread as inside the model for its lifetime.
struct Inside;

impl Inside {
    fn enter(what: &str) -> vmkit_memory::Result<Inside> {
        if INSIDE.with(Cell::get) {
            return Err(vmkit_memory::Error::Refused(format!(
                "intel-iommu: {what} while the IOMMU itself is reading guest memory"
            )));
        }
        INSIDE.with(|c| c.set(true));
        Ok(Inside)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|c| c.set(false));
    }
}

/// Counters of what the glue carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmarStats {
    /// Interrupt messages written (fault events, invalidation completions).
    pub interrupts: u64,
    /// DMA accesses refused by a translation fault.
    pub faults: u64,
}

/// A realized intel-iommu: the model (with its migration state), system
/// memory, and its register window. Kept as the user data of its object.
pub struct Dmar {
    device: IntelIommuDevice,
    memory: Arc<AddressSpace>,
    /// The alias of system memory behind `memory`, disabled at unrealize
    /// (the view would otherwise keep the RAM's and this device's owners
    /// referenced from inside the device).
    reach: MemoryRegion,
    window: std::sync::OnceLock<MemoryRegion>,
    interrupts: AtomicU64,
    faults: AtomicU64,
    /// Bumped after anything that may change a translation (see
    /// [`LastTranslation`]); shared with the functions' translators.
    epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for Dmar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dmar")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Dmar {
    /// The glue of `model` (object `owner`), whose DMA (tables, the
    /// queue, status writes, interrupt messages) reaches `system`.
    pub fn new(model: IntelIommu, owner: &Object, system: &MemoryRegion) -> Result<Arc<Dmar>, GlueError> {
        let container = MemoryRegion::container("intel-iommu memory", Some(owner), FULL_SPACE)?;
        let size = u64::try_from(system.size()).unwrap_or(u64::MAX);
        let reach = MemoryRegion::alias("intel-iommu system", Some(owner), system, 0, size)?;
        container.add_subregion(GuestAddr(0), &reach)?;
        Ok(Arc::new(Dmar {
            device: IntelIommuDevice::new(model)?,
            memory: AddressSpace::new("intel-iommu", &container),
            reach,
            window: std::sync::OnceLock::new(),
            interrupts: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            epoch: Arc::new(AtomicU64::new(0)),
        }))
    }

    /// Runs `f` on the model (for inspection; no effects are carried out).
    pub fn with_model<R>(&self, f: impl FnOnce(&mut IntelIommu) -> R) -> R {
        let r = self.device.with(f);
        self.translations_changed();
        r
    }

    /// The functions' remembered translations are stale from now on.
    fn translations_changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// What the glue carried out so far.
    pub fn stats(&self) -> DmarStats {
        DmarStats {
            interrupts: self.interrupts.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
        }
    }

    /// The register window (`intel_iommu`), created on first use, owned
    /// by `owner`.
    pub fn window(self: &Arc<Self>, owner: &Object) -> vmkit_memory::Result<MemoryRegion> {
        if let Some(w) = self.window.get() {
            return Ok(w.clone());
        }
        let ops = Arc::new(Registers {
            dmar: Arc::downgrade(self),
        });
        let region = MemoryRegion::mmio("intel_iommu", Some(owner), DMAR_WINDOW, ops)?;
        Ok(self.window.get_or_init(|| region).clone())
    }

    /// The DMA-root hook to install on the bus.
    pub fn hook(self: &Arc<Self>) -> Arc<dyn DmaRootHook> {
        Arc::new(Hook {
            dmar: Arc::downgrade(self),
        })
    }

    /// Unrealized: the IOMMU reaches nothing any more.
    pub fn detach(&self) {
        self.reach.set_enabled(false);
    }

    /// The model's reset.
    pub fn reset(&self) {
        let fx = self.device.with(IntelIommu::reset);
        self.translations_changed();
        self.carry_out(&fx);
    }

    /// A guest register read.
    pub fn read(&self, offset: u64, size: u8) -> vmkit_memory::Result<u64> {
        let _inside = Inside::enter("a register read")?;
        self.device
            .with(|m| m.read(offset, size))
            .map_err(|e| vmkit_memory::Error::Refused(e.to_string()))
    }

    /// A guest register write; its effects are carried out once the model
    /// is unlocked.
    pub fn write(&self, offset: u64, size: u8, value: u64) -> vmkit_memory::Result<()> {
        let fx = {
            let _inside = Inside::enter("a register write")?;
            let dma = RamOnly(&self.memory);
            self.device.with(|m| m.write(offset, size, value, &dma))
        };
        // An invalidation, the queue, GCMD or the root table may have
        // changed what a translation answers.
        self.translations_changed();
        let fx = fx.map_err(|e| vmkit_memory::Error::Refused(e.to_string()))?;
        self.carry_out(&fx);
        Ok(())
    }

    /// Translates a DMA access of `source` at `iova`; a fault's event is
    /// sent once the model is unlocked.
    pub fn translate(&self, source: SourceId, iova: u64, is_write: bool) -> vmkit_memory::Result<IommuTlbEntry> {
        let m = self.resolve(source, iova, is_write)?;
        Ok(IommuTlbEntry {
            target: Arc::clone(&self.memory),
            translated_addr: m.translated_addr,
            addr_mask: m.addr_mask,
            perm: m.perm,
        })
    }

    /// [`Dmar::translate`] with the target (this IOMMU's view of system
    /// memory) lent rather than counted. Inline (the fault path is out of
    /// line), so the answer reaches the transfer in registers.
    #[inline(always)]
    fn resolve(&self, source: SourceId, iova: u64, is_write: bool) -> vmkit_memory::Result<IommuMapping<'_>> {
        let access = if is_write { Access::Write } else { Access::Read };
        let outcome = {
            let _inside = Inside::enter("a translation")?;
            let dma = RamOnly(&self.memory);
            self.device.with(|m| m.translate(source, iova, access, &dma))
        };
        match outcome {
            Ok(Translation::Mapped(m)) => Ok(IommuMapping {
                target: &self.memory,
                translated_addr: GuestAddr(m.translated),
                addr_mask: m.addr_mask,
                perm: IommuPerm {
                    read: m.perm.contains(Perm::READ),
                    write: m.perm.contains(Perm::WRITE),
                },
            }),
            // Interrupt requests go on untranslated (interrupt remapping
            // is not carried out: vmkit has no interrupt controller).
            Ok(Translation::Interrupt) => Ok(IommuMapping {
                target: &self.memory,
                translated_addr: GuestAddr(iova & !INTERRUPT_MASK),
                addr_mask: INTERRUPT_MASK,
                perm: IommuPerm {
                    read: true,
                    write: true,
                },
            }),
            Err(fault) => Err(self.refused(fault, is_write)),
        }
    }

    /// A translation fault: counted, its event sent, the access refused.
    #[cold]
    #[inline(never)]
    fn refused(&self, fault: Fault, is_write: bool) -> vmkit_memory::Error {
        self.faults.fetch_add(1, Ordering::Relaxed);
        if let FaultReport::Recorded { interrupt: Some(msg) } = fault.report {
            self.send(msg);
        }
        vmkit_memory::Error::Translation {
            region: format!("intel_iommu_devfn_{}", fault.source_id.devfn()),
            access: if is_write { "write" } else { "read" },
            iova: GuestAddr(fault.iova),
            reason: format!("{} (source {})", fault.reason, fault.source_id),
        }
    }

    /// Carries out the model's effects. Only interrupts need the machine:
    /// translations are answered from the model's live state, so enabling
    /// or disabling remapping, a new root table or an invalidation needs
    /// no address space switched (the functions' remembered translations
    /// go stale by the epoch the caller bumps); interrupt remapping and
    /// device IOTLBs are not modelled.
    fn carry_out(&self, fx: &[Effect]) {
        for e in fx {
            if let Effect::Interrupt(msg) = e {
                self.send(*msg);
            }
        }
    }

    /// Writes an interrupt message (a message to nothing is dropped, as
    /// QEMU's is).
    fn send(&self, msg: MsiMessage) {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        let _ = self.memory.write_sized(GuestAddr(msg.address), 4, u64::from(msg.data));
    }
}

impl Drop for Dmar {
    /// What the functions remember is no longer anybody's answer.
    fn drop(&mut self) {
        self.translations_changed();
    }
}

impl DeviceState for Dmar {
    type State = IntelIommuState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        self.device.vmsd()
    }

    fn save_state(&self) -> Result<IntelIommuState, StateError> {
        self.device.save_state()
    }

    fn check_state(&self, state: &IntelIommuState, version_id: u32) -> Result<(), StateError> {
        self.device.check_state(state, version_id)
    }

    fn load_state(&self, state: IntelIommuState, version_id: u32) -> Result<(), StateError> {
        let loaded = self.device.load_state(state, version_id);
        self.translations_changed();
        loaded?;
        let fx = self.device.take_effects();
        self.carry_out(&fx);
        Ok(())
    }
}

/// Guest memory as the IOMMU reads its tables: RAM and ROM only.
struct RamOnly<'a>(&'a AddressSpace);

impl RamOnly<'_> {
    fn check(&self, kind: &'static str, addr: u64, len: usize) -> Result<(), DmaError> {
        let fail = |reason: &str| DmaError {
            kind,
            addr,
            len: len as u64,
            reason: reason.into(),
        };
        let last = addr
            .checked_add((len as u64).saturating_sub(1))
            .ok_or_else(|| fail("past the end of the address space"))?;
        let view = self.0.flat_view();
        let range = view.lookup(GuestAddr(addr)).ok_or_else(|| fail("no memory there"))?;
        if !matches!(range.region.kind(), RegionKind::Ram { .. } | RegionKind::Rom { .. }) {
            return Err(fail("not RAM"));
        }
        if !range.range.contains(GuestAddr(last)) {
            return Err(fail("crosses the end of a RAM range"));
        }
        Ok(())
    }
}

impl Dma for RamOnly<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.check("read", addr, buf.len())?;
        Dma::read(self.0, addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaError> {
        self.check("write", addr, data.len())?;
        Dma::write(self.0, addr, data)
    }

    /// A walk's reads: RAM and ROM only through one held view; writes
    /// still through `write`'s check.
    fn pinned(&self) -> Option<PinnedDma<'_>> {
        Some(PinnedDma::new(self.0.pinned(), true, self))
    }
}

/// The register window's accesses. Weak: the device holds its window.
struct Registers {
    dmar: Weak<Dmar>,
}

impl Registers {
    fn dmar(&self) -> vmkit_memory::Result<Arc<Dmar>> {
        self.dmar
            .upgrade()
            .ok_or_else(|| vmkit_memory::Error::Refused("the intel-iommu is gone".into()))
    }
}

impl MmioOps for Registers {
    fn read(&self, offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        self.dmar()?.read(offset, size as u8)
    }

    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        self.dmar()?.write(offset, size as u8, value)
    }

    fn constraints(&self) -> AccessConstraints {
        // QEMU's vtd_mem_ops: 4 or 8 bytes, as the registers are.
        AccessConstraints {
            valid_min: 4,
            valid_max: 8,
            impl_min: 4,
            impl_max: 8,
            ..AccessConstraints::default()
        }
    }
}

/// Gives each PCI function its translated region (QEMU's
/// `vtd_host_dma_iommu`).
struct Hook {
    dmar: Weak<Dmar>,
}

impl DmaRootHook for Hook {
    fn dma_root(&self, bus: u8, devfn: DevFn, owner: &Object) -> vmkit_memory::Result<MemoryRegion> {
        let dmar = self
            .dmar
            .upgrade()
            .ok_or_else(|| vmkit_memory::Error::Refused("the intel-iommu is gone".into()))?;
        let ops = Arc::new(Translator {
            dmar: Weak::clone(&self.dmar),
            source: SourceId::new(bus, devfn.raw()),
            memory: Arc::clone(&dmar.memory),
            epoch: Arc::clone(&dmar.epoch),
            last: LastTranslation::default(),
        });
        MemoryRegion::iommu(
            &format!("intel_iommu_devfn_{}", devfn.raw()),
            Some(owner),
            FULL_SPACE,
            ops,
        )
    }
}

/// One function's translations.
struct Translator {
    dmar: Weak<Dmar>,
    source: SourceId,
    /// The IOMMU's view of system memory, where translations continue
    /// (strong: it leads to system memory, never back to this region).
    memory: Arc<AddressSpace>,
    epoch: Arc<AtomicU64>,
    last: LastTranslation,
}

impl Translator {
    fn dmar(&self, iova: GuestAddr, is_write: bool) -> vmkit_memory::Result<Arc<Dmar>> {
        self.dmar.upgrade().ok_or_else(|| vmkit_memory::Error::Translation {
            region: format!("intel_iommu_devfn_{}", self.source.devfn()),
            access: if is_write { "write" } else { "read" },
            iova,
            reason: "the intel-iommu is gone".into(),
        })
    }
}

impl IommuOps for Translator {
    fn translate(&self, iova: GuestAddr, is_write: bool) -> vmkit_memory::Result<IommuTlbEntry> {
        self.dmar(iova, is_write)?.translate(self.source, iova.0, is_write)
    }

    fn with_translation(
        &self,
        iova: GuestAddr,
        is_write: bool,
        then: &mut dyn FnMut(IommuMapping<'_>) -> vmkit_memory::Result<()>,
    ) -> vmkit_memory::Result<()> {
        // Read before the model is asked: a change made meanwhile bumps it
        // past what the entry is stored under.
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(r) = self.last.get(iova.0, is_write, epoch) {
            return then(IommuMapping {
                target: &self.memory,
                translated_addr: GuestAddr(r.translated),
                addr_mask: r.mask,
                perm: IommuPerm {
                    read: r.read,
                    write: r.write,
                },
            });
        }
        let dmar = self.dmar(iova, is_write)?;
        // The model is unlocked again before the nested transfer runs.
        let m = dmar.resolve(self.source, iova.0, is_write)?;
        self.last.set(
            iova.0,
            Remembered {
                translated: m.translated_addr.0,
                mask: m.addr_mask,
                read: m.perm.read,
                write: m.perm.write,
            },
            epoch,
        );
        then(m)
    }
}
