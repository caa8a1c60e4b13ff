//! Memory regions: RAM, ROM, MMIO, alias, container and IOMMU regions,
//! arranged in trees of subregions with addresses and priorities.
//!
//! A [`MemoryRegion`] is a cheap handle. Every mutation (adding, removing,
//! moving, enabling, disabling a region...) goes through the topology, which
//! re-renders the flat views of the address spaces at the end of the
//! outermost [`transaction`](crate::transaction) — or at once outside one.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use vmkit_qom::{Object, Phase};

use crate::addr::GuestAddr;
use crate::error::{Error, Result};
use crate::ops::{AccessConstraints, IommuOps, MmioOps};
use crate::ram::RamBlock;

static NEXT_REGION_ID: AtomicU64 = AtomicU64::new(1);

/// The largest region: all of the 64-bit space.
pub const FULL_SPACE: u128 = 1 << 64;

/// What a region is.
#[derive(Clone)]
pub enum RegionKind {
    /// Guest RAM: a window `[offset, offset + size)` of a RAM block.
    Ram {
        /// The block.
        block: Arc<RamBlock>,
        /// Where the window starts in the block.
        offset: u64,
    },
    /// Read-only memory backed by a RAM block: guest writes are dropped.
    Rom {
        /// The block.
        block: Arc<RamBlock>,
        /// Where the window starts in the block.
        offset: u64,
    },
    /// Device registers: every access calls the ops.
    Mmio {
        /// The callbacks.
        ops: Arc<dyn MmioOps>,
        /// Their constraints, read once when the region is created.
        constraints: AccessConstraints,
    },
    /// A window onto another region, starting at `offset` in it.
    Alias {
        /// The region shown through the window.
        target: MemoryRegion,
        /// The window's offset in the target.
        offset: u64,
    },
    /// Holds subregions only.
    Container,
    /// Translates accesses to another address space.
    Iommu(Arc<dyn IommuOps>),
}

impl RegionKind {
    /// The word `info mtree` uses for the kind.
    pub fn mtree_word(&self) -> &'static str {
        match self {
            RegionKind::Ram { .. } => "ram",
            RegionKind::Rom { .. } => "rom",
            RegionKind::Mmio { .. } | RegionKind::Container | RegionKind::Alias { .. } => "i/o",
            RegionKind::Iommu(_) => "iommu",
        }
    }

    /// Whether accesses end in this region (as opposed to containers and aliases).
    pub fn terminates(&self) -> bool {
        !matches!(self, RegionKind::Container | RegionKind::Alias { .. })
    }
}

pub(crate) struct RegionInner {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) size: u128,
    pub(crate) kind: RegionKind,
    pub(crate) owner: Option<Object>,
    pub(crate) state: RwLock<RegionState>,
}

#[derive(Default)]
pub(crate) struct RegionState {
    pub(crate) enabled: bool,
    pub(crate) readonly: bool,
    /// Subregions sorted by priority, highest first; among equal priorities the
    /// most recently added comes first (QEMU's order).
    pub(crate) subregions: Vec<Subregion>,
    /// Where this region is placed, if it is a subregion.
    pub(crate) placement: Option<Placement>,
}

#[derive(Clone)]
pub(crate) struct Subregion {
    pub(crate) region: MemoryRegion,
    pub(crate) addr: GuestAddr,
    pub(crate) priority: i32,
    pub(crate) may_overlap: bool,
}

pub(crate) struct Placement {
    pub(crate) container: Weak<RegionInner>,
    pub(crate) addr: GuestAddr,
    pub(crate) priority: i32,
}

/// A handle to a memory region.
#[derive(Clone)]
pub struct MemoryRegion(pub(crate) Arc<RegionInner>);

impl PartialEq for MemoryRegion {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MemoryRegion('{}', {}, {:#x})",
            self.0.name,
            self.0.kind.mtree_word(),
            self.0.size
        )
    }
}

fn check_size(size: u128) -> Result<u128> {
    if size == 0 {
        return Err(Error::ZeroSize);
    }
    if size > FULL_SPACE {
        return Err(Error::Layout(format!(
            "a region cannot be larger than 2^64 bytes (got {size:#x})"
        )));
    }
    Ok(size)
}

impl MemoryRegion {
    fn build(name: &str, owner: Option<&Object>, size: u128, kind: RegionKind) -> Result<MemoryRegion> {
        let size = check_size(size)?;
        if let Some(o) = owner {
            if o.phase() != Phase::Live {
                return Err(Error::OwnerGone {
                    region: name.to_string(),
                    reason: format!("owner {} is {}", o.describe(), o.phase().as_str()),
                });
            }
        }
        Ok(MemoryRegion(Arc::new(RegionInner {
            id: NEXT_REGION_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            size,
            kind,
            owner: owner.cloned(),
            state: RwLock::new(RegionState {
                enabled: true,
                ..Default::default()
            }),
        })))
    }

    fn block_window(name: &str, block: &Arc<RamBlock>, offset: u64, size: u64) -> Result<()> {
        let len = block.used_length();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(Error::OutOfBounds {
                name: format!("{name} (RAM block '{}')", block.name()),
                offset,
                len: size,
                size: len,
            });
        }
        Ok(())
    }

    /// A RAM region showing `size` bytes of `block` from `offset`.
    pub fn ram(
        name: &str,
        owner: Option<&Object>,
        block: Arc<RamBlock>,
        offset: u64,
        size: u64,
    ) -> Result<MemoryRegion> {
        Self::block_window(name, &block, offset, size)?;
        Self::build(name, owner, u128::from(size), RegionKind::Ram { block, offset })
    }

    /// A RAM region showing the whole of `block`, named after it.
    pub fn ram_block(owner: Option<&Object>, block: Arc<RamBlock>) -> Result<MemoryRegion> {
        let size = block.used_length();
        let name = block.name().to_string();
        Self::ram(&name, owner, block, 0, size)
    }

    /// A ROM region: reads come from `block`, guest writes are dropped.
    pub fn rom(
        name: &str,
        owner: Option<&Object>,
        block: Arc<RamBlock>,
        offset: u64,
        size: u64,
    ) -> Result<MemoryRegion> {
        Self::block_window(name, &block, offset, size)?;
        let r = Self::build(name, owner, u128::from(size), RegionKind::Rom { block, offset })?;
        r.0.state.write().readonly = true;
        Ok(r)
    }

    /// An MMIO region whose accesses call `ops`.
    pub fn mmio(name: &str, owner: Option<&Object>, size: u64, ops: Arc<dyn MmioOps>) -> Result<MemoryRegion> {
        let constraints = ops.constraints();
        constraints
            .check()
            .map_err(|reason| Error::Layout(format!("region '{name}': {reason}")))?;
        Self::build(name, owner, u128::from(size), RegionKind::Mmio { ops, constraints })
    }

    /// A container of `size` bytes (`FULL_SPACE` for an address-space root).
    pub fn container(name: &str, owner: Option<&Object>, size: u128) -> Result<MemoryRegion> {
        Self::build(name, owner, size, RegionKind::Container)
    }

    /// An alias: a window of `size` bytes onto `target` starting at `offset` in it.
    pub fn alias(
        name: &str,
        owner: Option<&Object>,
        target: &MemoryRegion,
        offset: u64,
        size: u64,
    ) -> Result<MemoryRegion> {
        if u128::from(offset) + u128::from(size) > target.size() {
            return Err(Error::Layout(format!(
                "alias '{name}' [{offset:#x}, +{size:#x}) reaches beyond its target '{}' ({:#x} bytes)",
                target.name(),
                target.size()
            )));
        }
        Self::build(
            name,
            owner,
            u128::from(size),
            RegionKind::Alias {
                target: target.clone(),
                offset,
            },
        )
    }

    /// An IOMMU region: accesses are translated by `ops` into another address space.
    pub fn iommu(name: &str, owner: Option<&Object>, size: u128, ops: Arc<dyn IommuOps>) -> Result<MemoryRegion> {
        Self::build(name, owner, size, RegionKind::Iommu(ops))
    }

    // ----- read-only facts -------------------------------------------------------

    /// The region's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// Its size in bytes (up to 2^64).
    pub fn size(&self) -> u128 {
        self.0.size
    }
    /// What it is.
    pub fn kind(&self) -> &RegionKind {
        &self.0.kind
    }
    /// Its owner, if any.
    pub fn owner(&self) -> Option<&Object> {
        self.0.owner.as_ref()
    }
    /// A process-unique id.
    pub fn id(&self) -> u64 {
        self.0.id
    }
    /// Whether it is enabled.
    pub fn is_enabled(&self) -> bool {
        self.0.state.read().enabled
    }
    /// Whether guest writes are dropped.
    pub fn is_readonly(&self) -> bool {
        self.0.state.read().readonly
    }
    /// Its address in its container, if it is placed in one.
    pub fn address(&self) -> Option<GuestAddr> {
        self.0.state.read().placement.as_ref().map(|p| p.addr)
    }
    /// Its priority in its container (0 when not placed).
    pub fn priority(&self) -> i32 {
        self.0.state.read().placement.as_ref().map_or(0, |p| p.priority)
    }
    /// The container it is placed in.
    pub fn container_region(&self) -> Option<MemoryRegion> {
        self.0
            .state
            .read()
            .placement
            .as_ref()
            .and_then(|p| p.container.upgrade())
            .map(MemoryRegion)
    }
    /// Its subregions with their addresses and priorities, in lookup order.
    pub fn subregions(&self) -> Vec<(MemoryRegion, GuestAddr, i32)> {
        self.0
            .state
            .read()
            .subregions
            .iter()
            .map(|s| (s.region.clone(), s.addr, s.priority))
            .collect()
    }

    /// [`MemoryRegion::usable`] without the reason: two atomic loads (the
    /// owner's phase and realized flag) for an owned region, none otherwise.
    #[inline]
    pub(crate) fn is_usable(&self) -> bool {
        match &self.0.owner {
            None => true,
            Some(o) => o.phase() == Phase::Live && (!o.class().is_device() || o.is_realized()),
        }
    }

    /// Whether accesses to the region may proceed: its owner (if any) is live
    /// and, for a device, realized. Otherwise the reason.
    pub fn usable(&self) -> std::result::Result<(), String> {
        match &self.0.owner {
            None => Ok(()),
            Some(o) => match o.phase() {
                Phase::Live if o.class().is_device() && !o.is_realized() => {
                    Err(format!("owner {} is not realized", o.describe()))
                }
                Phase::Live => Ok(()),
                phase => Err(format!("owner '{}' is {}", o.type_name(), phase.as_str())),
            },
        }
    }

    // ----- mutations (each one re-renders the flat views) -----------------------

    /// Places `child` at `addr` in this region, at priority 0, refusing overlaps
    /// with siblings (use [`MemoryRegion::add_subregion_overlap`] for those).
    pub fn add_subregion(&self, addr: GuestAddr, child: &MemoryRegion) -> Result<()> {
        self.insert_subregion(addr, child, 0, false)
    }

    /// Places `child` at `addr` with `priority`; it may overlap siblings, and
    /// where it does, the higher priority (then the newer region) is seen.
    pub fn add_subregion_overlap(&self, addr: GuestAddr, child: &MemoryRegion, priority: i32) -> Result<()> {
        self.insert_subregion(addr, child, priority, true)
    }

    fn insert_subregion(&self, addr: GuestAddr, child: &MemoryRegion, priority: i32, may_overlap: bool) -> Result<()> {
        if matches!(self.0.kind, RegionKind::Alias { .. }) {
            return Err(Error::Layout(format!("alias '{}' cannot have subregions", self.name())));
        }
        if u128::from(addr.0) + child.size() > self.size() {
            return Err(Error::Layout(format!(
                "'{}' at {addr} (+{:#x}) does not fit in '{}' ({:#x} bytes)",
                child.name(),
                child.size(),
                self.name(),
                self.size()
            )));
        }
        if child.reaches(self) {
            return Err(Error::Layout(format!(
                "placing '{}' in '{}' would make a cycle",
                child.name(),
                self.name()
            )));
        }
        {
            let mut cs = child.0.state.write();
            if let Some(p) = &cs.placement {
                let where_ = p.container.upgrade().map(|c| c.name.clone()).unwrap_or_default();
                return Err(Error::Layout(format!(
                    "'{}' is already placed in '{where_}'",
                    child.name()
                )));
            }
            cs.placement = Some(Placement {
                container: Arc::downgrade(&self.0),
                addr,
                priority,
            });
        }
        let result = {
            let mut st = self.0.state.write();
            let end = u128::from(addr.0) + child.size();
            let clash = st.subregions.iter().find(|s| {
                !may_overlap
                    && !s.may_overlap
                    && u128::from(s.addr.0) < end
                    && u128::from(addr.0) < u128::from(s.addr.0) + s.region.size()
            });
            match clash {
                Some(s) => Err(Error::Layout(format!(
                    "'{}' at {addr} overlaps '{}' at {} in '{}'; use add_subregion_overlap with a priority",
                    child.name(),
                    s.region.name(),
                    s.addr,
                    self.name()
                ))),
                None => {
                    let pos = st
                        .subregions
                        .iter()
                        .position(|s| s.priority <= priority)
                        .unwrap_or(st.subregions.len());
                    st.subregions.insert(
                        pos,
                        Subregion {
                            region: child.clone(),
                            addr,
                            priority,
                            may_overlap,
                        },
                    );
                    Ok(())
                }
            }
        };
        if result.is_err() {
            child.0.state.write().placement = None;
        }
        result?;
        crate::topology::changed();
        Ok(())
    }

    /// Removes `child` from this region.
    pub fn del_subregion(&self, child: &MemoryRegion) -> Result<()> {
        let removed = {
            let mut st = self.0.state.write();
            let pos = st.subregions.iter().position(|s| s.region == *child);
            pos.map(|i| st.subregions.remove(i))
        };
        match removed {
            Some(s) => {
                s.region.0.state.write().placement = None;
                crate::topology::changed();
                Ok(())
            }
            None => Err(Error::Layout(format!(
                "'{}' is not a subregion of '{}'",
                child.name(),
                self.name()
            ))),
        }
    }

    /// Enables or disables the region (a disabled region is invisible).
    pub fn set_enabled(&self, enabled: bool) {
        let changed = std::mem::replace(&mut self.0.state.write().enabled, enabled) != enabled;
        if changed {
            crate::topology::changed();
        }
    }

    /// Makes guest writes to the region be dropped (or not).
    pub fn set_readonly(&self, readonly: bool) {
        let changed = std::mem::replace(&mut self.0.state.write().readonly, readonly) != readonly;
        if changed {
            crate::topology::changed();
        }
    }

    /// Moves the region within its container (as a BAR reprogramming does).
    pub fn set_address(&self, addr: GuestAddr) -> Result<()> {
        let container = self
            .container_region()
            .ok_or_else(|| Error::Layout(format!("'{}' is not placed in a container", self.name())))?;
        let old = self.address().unwrap_or(addr);
        let (priority, may_overlap) = {
            let st = container.0.state.read();
            let s = st.subregions.iter().find(|s| s.region == *self);
            s.map_or((0, false), |s| (s.priority, s.may_overlap))
        };
        crate::topology::transaction(|| {
            container.del_subregion(self)?;
            match container.insert_subregion(addr, self, priority, may_overlap) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Put it back where it was; that placement was valid.
                    let _ = container.insert_subregion(old, self, priority, may_overlap);
                    Err(e)
                }
            }
        })
    }

    /// Whether `other` is this region or can be reached from it through
    /// subregions and alias targets.
    fn reaches(&self, other: &MemoryRegion) -> bool {
        if self == other {
            return true;
        }
        if let RegionKind::Alias { target, .. } = &self.0.kind {
            if target.reaches(other) {
                return true;
            }
        }
        let subs: Vec<MemoryRegion> = self
            .0
            .state
            .read()
            .subregions
            .iter()
            .map(|s| s.region.clone())
            .collect();
        subs.iter().any(|s| s.reaches(other))
    }
}
