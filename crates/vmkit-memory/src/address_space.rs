//! Address spaces: a root region, its current flat view, and accesses
//! dispatched through it — sized accesses (a CPU load/store, an MMIO register
//! access) and byte-range transfers (device DMA).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

use crate::addr::GuestAddr;
use crate::dispatch::{invalid, read_adjusted, write_adjusted};
use crate::error::{Error, Result};
use crate::flatview::{FlatRange, FlatView};
use crate::ops::{AccessConstraints, Endianness, IommuMapping, IommuOps};
use crate::ram::RamBlock;
use crate::region::{MemoryRegion, RegionKind};

/// Told when ranges appear in or disappear from an address space's flat view.
pub trait MemoryListener: Send + Sync {
    /// A range was added (also called for every existing range when the listener is registered).
    fn region_add(&self, _space: &AddressSpace, _range: &FlatRange) {}
    /// A range was removed.
    fn region_del(&self, _space: &AddressSpace, _range: &FlatRange) {}
    /// A batch of changes is complete.
    fn commit(&self, _space: &AddressSpace) {}
}

/// Counters of an address space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessStats {
    /// Reads of addresses no region covers.
    pub unassigned_reads: u64,
    /// Writes to addresses no region covers.
    pub unassigned_writes: u64,
    /// Guest writes dropped because the memory is read-only.
    pub readonly_writes: u64,
    /// Accesses refused by a region's constraints.
    pub invalid_accesses: u64,
}

/// Nested IOMMU translations allowed before an access is refused.
const MAX_IOMMU_DEPTH: u32 = 8;

/// An address space.
pub struct AddressSpace {
    name: String,
    root: MemoryRegion,
    view: ArcSwap<FlatView>,
    listeners: Mutex<Vec<Arc<dyn MemoryListener>>>,
    strict: AtomicBool,
    unassigned_reads: AtomicU64,
    unassigned_writes: AtomicU64,
    readonly_writes: AtomicU64,
    invalid_accesses: AtomicU64,
}

impl std::fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AddressSpace('{}', root '{}')", self.name, self.root.name())
    }
}

/// The value read from an address nothing answers (QEMU's unassigned access: all ones).
const UNASSIGNED_BYTE: u8 = 0xff;

impl AddressSpace {
    /// An address space named `name` over `root`, rendered now and re-rendered on every change.
    pub fn new(name: &str, root: &MemoryRegion) -> Arc<AddressSpace> {
        let space = Arc::new(AddressSpace {
            name: name.to_string(),
            root: root.clone(),
            view: ArcSwap::from_pointee(FlatView::render(root)),
            listeners: Mutex::new(Vec::new()),
            strict: AtomicBool::new(false),
            unassigned_reads: AtomicU64::new(0),
            unassigned_writes: AtomicU64::new(0),
            readonly_writes: AtomicU64::new(0),
            invalid_accesses: AtomicU64::new(0),
        });
        crate::topology::register(&space);
        space
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root region.
    pub fn root(&self) -> &MemoryRegion {
        &self.root
    }

    /// The current flat view.
    pub fn flat_view(&self) -> Arc<FlatView> {
        self.view.load_full()
    }

    /// In strict mode, an access no region covers is an error instead of
    /// reading all ones / dropping the write.
    pub fn set_strict(&self, strict: bool) {
        self.strict.store(strict, Ordering::Relaxed);
    }

    /// Whether strict mode is on.
    pub fn is_strict(&self) -> bool {
        self.strict.load(Ordering::Relaxed)
    }

    /// The access counters.
    pub fn stats(&self) -> AccessStats {
        AccessStats {
            unassigned_reads: self.unassigned_reads.load(Ordering::Relaxed),
            unassigned_writes: self.unassigned_writes.load(Ordering::Relaxed),
            readonly_writes: self.readonly_writes.load(Ordering::Relaxed),
            invalid_accesses: self.invalid_accesses.load(Ordering::Relaxed),
        }
    }

    /// Registers a listener; it is told of every range that exists now.
    pub fn add_listener(&self, listener: Arc<dyn MemoryListener>) {
        let view = self.flat_view();
        for r in view.ranges() {
            listener.region_add(self, r);
        }
        listener.commit(self);
        self.listeners.lock().push(listener);
    }

    /// Removes a listener.
    pub fn remove_listener(&self, listener: &Arc<dyn MemoryListener>) {
        self.listeners.lock().retain(|l| !Arc::ptr_eq(l, listener));
    }

    pub(crate) fn rerender(&self) {
        let new = Arc::new(FlatView::render(&self.root));
        let old = self.view.swap(new.clone());
        let listeners = self.listeners.lock().clone();
        if listeners.is_empty() {
            return;
        }
        // As QEMU's address_space_update_topology_pass and transaction commit:
        // pass 1 tells each removed range to every listener in reverse order,
        // pass 2 each added range in forward order, and only then does every
        // listener get `commit` (no listener commits before all have seen the
        // additions).
        for r in old.ranges_not_in(&new) {
            for l in listeners.iter().rev() {
                l.region_del(self, r);
            }
        }
        for r in new.ranges_not_in(&old) {
            for l in &listeners {
                l.region_add(self, r);
            }
        }
        for l in &listeners {
            l.commit(self);
        }
    }

    fn unassigned(&self, addr: GuestAddr, len: u64, write: bool) -> Result<()> {
        if write {
            &self.unassigned_writes
        } else {
            &self.unassigned_reads
        }
        .fetch_add(1, Ordering::Relaxed);
        if self.strict.load(Ordering::Relaxed) {
            return Err(Error::Unassigned {
                space: self.name.clone(),
                addr,
                len,
            });
        }
        Ok(())
    }

    fn check_usable(range: &FlatRange) -> Result<()> {
        range.region.usable().map_err(|reason| Error::OwnerGone {
            region: range.region.name().to_string(),
            reason,
        })
    }

    // ----- sized accesses ---------------------------------------------------------

    /// Why an MMIO access the fast path's checks stopped may not proceed:
    /// the owner is gone (checked first) or the constraints refuse it
    /// (counted). `None` if it may after all (the owner was realized meanwhile).
    #[cold]
    #[inline(never)]
    fn refusal(&self, range: &FlatRange, constraints: &AccessConstraints, off: u64, size: u32) -> Option<Error> {
        if let Err(e) = Self::check_usable(range) {
            return Some(e);
        }
        match constraints.validate(off, size) {
            Ok(()) => None,
            Err(reason) => {
                self.invalid_accesses.fetch_add(1, Ordering::Relaxed);
                Some(invalid(range.region.name(), off, size, reason))
            }
        }
    }

    fn bad_size(&self, addr: GuestAddr, size: u32) -> Error {
        invalid(
            &self.name,
            addr.0,
            size,
            format!("access size {size} is not 1, 2, 4 or 8"),
        )
    }

    /// A `size`-byte (1, 2, 4 or 8) load at `addr`, as a CPU or device register
    /// access: MMIO constraints are checked and the access split or widened as
    /// the region implements it. The value is little-endian for RAM.
    #[inline]
    pub fn read_sized(&self, addr: GuestAddr, size: u32) -> Result<u64> {
        // The fast path: one view load, one lookup, the owner and constraint
        // checks inline and allocation-free (reasons only on refusal), the
        // constraints read from the region kind.
        {
            let view = self.view.load();
            if let Some(range) = view.lookup(addr) {
                if let RegionKind::Mmio { ops, constraints } = range.region.kind() {
                    if u128::from(addr.0) + u128::from(size) <= range.range.end() {
                        let off = range.region_offset(addr);
                        if !(range.region.is_usable() && constraints.is_valid(off, size)) {
                            if let Some(e) = self.refusal(range, constraints, off, size) {
                                return Err(e);
                            }
                        }
                        return read_adjusted(ops.as_ref(), constraints, off, size);
                    }
                }
            }
        }
        self.read_sized_slow(addr, size)
    }

    /// RAM, ROM, holes, IOMMUs and accesses straddling a range's end: through the byte path.
    #[inline(never)]
    fn read_sized_slow(&self, addr: GuestAddr, size: u32) -> Result<u64> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(self.bad_size(addr, size));
        }
        let mut buf = [0u8; 8];
        self.read(addr, &mut buf[..size as usize])?;
        Ok(u64::from_le_bytes(buf))
    }

    /// A `size`-byte store at `addr` (see [`AddressSpace::read_sized`]).
    #[inline]
    pub fn write_sized(&self, addr: GuestAddr, size: u32, value: u64) -> Result<()> {
        {
            let view = self.view.load();
            if let Some(range) = view.lookup(addr) {
                if let RegionKind::Mmio { ops, constraints } = range.region.kind() {
                    if u128::from(addr.0) + u128::from(size) <= range.range.end() {
                        let off = range.region_offset(addr);
                        if !(range.region.is_usable() && constraints.is_valid(off, size)) {
                            if let Some(e) = self.refusal(range, constraints, off, size) {
                                return Err(e);
                            }
                        }
                        return write_adjusted(ops.as_ref(), constraints, off, size, value);
                    }
                }
            }
        }
        self.write_sized_slow(addr, size, value)
    }

    #[inline(never)]
    fn write_sized_slow(&self, addr: GuestAddr, size: u32, value: u64) -> Result<()> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(self.bad_size(addr, size));
        }
        self.write(addr, &value.to_le_bytes()[..size as usize])
    }

    // ----- byte-range transfers (DMA) -------------------------------------------

    /// Reads `buf.len()` bytes from `addr`, across region boundaries and through IOMMUs.
    pub fn read(&self, addr: GuestAddr, buf: &mut [u8]) -> Result<()> {
        self.transfer(addr, Transfer::Read(buf), 0)
    }

    /// Writes `buf` at `addr`, across region boundaries and through IOMMUs.
    /// Writes to RAM mark its pages dirty; writes to ROM are dropped.
    pub fn write(&self, addr: GuestAddr, buf: &[u8]) -> Result<()> {
        self.transfer(addr, Transfer::Write(buf), 0)
    }

    /// This space with its current flat view held, for a burst of small
    /// accesses (an IOMMU's page-table walk) that load the view once.
    pub fn pinned(&self) -> PinnedSpace<'_> {
        PinnedSpace {
            space: self,
            view: self.view.load(),
        }
    }

    #[inline]
    fn transfer(&self, addr: GuestAddr, data: Transfer<'_>, depth: u32) -> Result<()> {
        // A guard, not a full `Arc`: the clone and drop were two more locked
        // operations per transfer, most of a page-table entry read. Nested
        // transfers (IOMMUs) and callbacks that change the map are fine
        // under a guard, as in `read_sized`.
        let view = self.view.load();
        self.transfer_in(&view, addr, data, depth)
    }

    /// A transfer through `view` (this space's, loaded by the caller).
    #[inline]
    fn transfer_in(&self, view: &FlatView, addr: GuestAddr, mut data: Transfer<'_>, depth: u32) -> Result<()> {
        // Most DMA lies in one range, RAM or an IOMMU: one lookup and
        // straight there, without the walk over ranges (whose second pass
        // was most of what an IOMMU added to a 4 KiB copy).
        let len = data.len() as u64;
        if let Some(range) = view.lookup(addr) {
            let inside = len != 0 && u128::from(addr.0) + u128::from(len) <= range.range.end();
            if inside && range.region.is_usable() {
                let off = range.region_offset(addr);
                match (range.region.kind(), &mut data) {
                    (RegionKind::Ram { block, offset } | RegionKind::Rom { block, offset }, Transfer::Read(buf)) => {
                        return block.read(offset + off, buf);
                    }
                    (RegionKind::Ram { block, offset }, Transfer::Write(buf)) if !range.readonly => {
                        return block.write(offset + off, buf);
                    }
                    (RegionKind::Iommu(ops), _) => {
                        let moved = self.through_iommu(range, ops.as_ref(), off, len, &mut data, 0, depth)?;
                        if moved == len {
                            return Ok(());
                        }
                        // The rest lies past the translated page.
                        let rest = data.from(moved as usize);
                        return self.transfer_ranges(view, GuestAddr(addr.0 + moved), rest, depth);
                    }
                    _ => {}
                }
            }
        }
        self.transfer_ranges(view, addr, data, depth)
    }

    /// Moves the first bytes of `data[at..at + len]` (which lie at offset
    /// `off` of the IOMMU `range`) through their translation: as many as
    /// the translated page holds. Returns how many.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn through_iommu(
        &self,
        range: &FlatRange,
        ops: &dyn IommuOps,
        off: u64,
        len: u64,
        data: &mut Transfer<'_>,
        at: usize,
        depth: u32,
    ) -> Result<u64> {
        if depth >= MAX_IOMMU_DEPTH {
            return Err(Error::Translation {
                region: range.region.name().to_string(),
                access: data.verb(),
                iova: GuestAddr(off),
                reason: "too many nested IOMMU translations".into(),
            });
        }
        // The target is borrowed for the nested transfer: no reference
        // count per translation.
        let mut moved = 0u64;
        let is_write = data.is_write();
        ops.with_translation(GuestAddr(off), is_write, &mut |t: IommuMapping<'_>| {
            let allowed = if is_write { t.perm.write } else { t.perm.read };
            if !allowed {
                return Err(Error::Translation {
                    region: range.region.name().to_string(),
                    access: data.verb(),
                    iova: GuestAddr(off),
                    reason: "permission denied".into(),
                });
            }
            let mask = t.addr_mask;
            let page_left = mask.wrapping_sub(off & mask).wrapping_add(1);
            let n = if page_left == 0 { len } else { len.min(page_left) };
            let to = GuestAddr((t.translated_addr.0 & !mask) | (off & mask));
            let sub = at..at + n as usize;
            match data {
                Transfer::Read(buf) => t.target.transfer(to, Transfer::Read(&mut buf[sub]), depth + 1)?,
                Transfer::Write(buf) => t.target.transfer(to, Transfer::Write(&buf[sub]), depth + 1)?,
            }
            moved = n;
            Ok(())
        })?;
        Ok(moved)
    }

    /// A transfer range by range: holes, MMIO, IOMMUs, ROM and crossings.
    #[inline(never)]
    fn transfer_ranges(&self, view: &FlatView, addr: GuestAddr, mut data: Transfer<'_>, depth: u32) -> Result<()> {
        let total = data.len() as u64;
        if total == 0 {
            return Ok(());
        }
        if u128::from(addr.0) + u128::from(total) > 1u128 << 64 {
            return Err(Error::Overflow {
                addr,
                size: u128::from(total),
            });
        }
        let mut done = 0u64;
        while done < total {
            let cur = GuestAddr(addr.0 + done);
            let remaining = total - done;
            let Some(range) = view.lookup(cur) else {
                // A hole: up to the next range or the end of the transfer.
                let hole = view
                    .next_after(cur)
                    .map_or(remaining, |r| (r.range.start().0 - cur.0).min(remaining));
                self.unassigned(cur, hole, data.is_write())?;
                data.fill_hole(done as usize, hole as usize);
                done += hole;
                continue;
            };
            let in_range =
                u64::try_from((range.range.end() - u128::from(cur.0)).min(u128::from(remaining))).unwrap_or(remaining);
            let chunk = done as usize..(done + in_range) as usize;
            if !range.region.is_usable() {
                Self::check_usable(range)?;
            }
            let off = range.region_offset(cur);
            match range.region.kind() {
                RegionKind::Ram { block, offset } | RegionKind::Rom { block, offset } => match &mut data {
                    Transfer::Read(buf) => block.read(offset + off, &mut buf[chunk])?,
                    Transfer::Write(buf) => {
                        if range.readonly {
                            self.readonly_writes.fetch_add(1, Ordering::Relaxed);
                        } else {
                            block.write(offset + off, &buf[chunk])?;
                        }
                    }
                },
                RegionKind::Mmio { ops, constraints } => {
                    let mut pos = 0u64;
                    while pos < in_range {
                        let o = off + pos;
                        let size = constraints.transfer_size(o, in_range - pos);
                        if let Err(reason) = constraints.validate(o, size) {
                            self.invalid_accesses.fetch_add(1, Ordering::Relaxed);
                            return Err(invalid(range.region.name(), o, size, reason));
                        }
                        let at = chunk.start + pos as usize..chunk.start + (pos + u64::from(size)) as usize;
                        // The bytes of a register value are laid out in the
                        // device's byte order: QEMU dispatches DMA pieces as
                        // host-endian (little-endian here) accesses, and
                        // `adjust_endianness` byte-swaps them for a big-endian device.
                        let big = constraints.endianness == Endianness::Big;
                        let n = size as usize;
                        match &mut data {
                            Transfer::Read(buf) => {
                                let v = read_adjusted(ops.as_ref(), constraints, o, size)?;
                                if big {
                                    buf[at].copy_from_slice(&v.to_be_bytes()[8 - n..]);
                                } else {
                                    buf[at].copy_from_slice(&v.to_le_bytes()[..n]);
                                }
                            }
                            Transfer::Write(buf) => {
                                let mut b = [0u8; 8];
                                let v = if big {
                                    b[8 - n..].copy_from_slice(&buf[at]);
                                    u64::from_be_bytes(b)
                                } else {
                                    b[..n].copy_from_slice(&buf[at]);
                                    u64::from_le_bytes(b)
                                };
                                write_adjusted(ops.as_ref(), constraints, o, size, v)?;
                            }
                        }
                        pos += u64::from(size);
                    }
                }
                RegionKind::Iommu(ops) => {
                    done += self.through_iommu(range, ops.as_ref(), off, in_range, &mut data, chunk.start, depth)?;
                    continue;
                }
                RegionKind::Container | RegionKind::Alias { .. } => {
                    // A flat view holds terminating regions only.
                    return Err(Error::Layout(format!(
                        "'{}' is not a terminating region",
                        range.region.name()
                    )));
                }
            }
            done += in_range;
        }
        Ok(())
    }
}

/// An address space with its flat view held ([`AddressSpace::pinned`]):
/// its accesses see the map as it was when it was taken (a change made
/// meanwhile is seen by the next one taken), and pay for no view load.
pub struct PinnedSpace<'a> {
    space: &'a AddressSpace,
    view: Guard<Arc<FlatView>>,
}

impl std::fmt::Debug for PinnedSpace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedSpace({:?})", self.space)
    }
}

impl PinnedSpace<'_> {
    /// The space.
    pub fn space(&self) -> &AddressSpace {
        self.space
    }

    /// [`AddressSpace::read`] through the held view. Bytes inside one RAM
    /// or ROM range (a table entry) are copied straight from its block.
    #[inline]
    pub fn read(&self, addr: GuestAddr, buf: &mut [u8]) -> Result<()> {
        self.space.transfer_in(&self.view, addr, Transfer::Read(buf), 0)
    }

    /// [`AddressSpace::write`] through the held view.
    pub fn write(&self, addr: GuestAddr, buf: &[u8]) -> Result<()> {
        self.space.transfer_in(&self.view, addr, Transfer::Write(buf), 0)
    }

    /// Reads `buf.len()` bytes at `addr` if they all lie in one RAM or ROM
    /// range; anything else (a hole, MMIO, an IOMMU, bytes crossing the
    /// range's end, an unusable region) is refused without being touched —
    /// how an IOMMU reads its tables.
    #[inline]
    pub fn read_ram(&self, addr: GuestAddr, buf: &mut [u8]) -> Result<()> {
        let (range, block, at) = ram_at(&self.view, addr, buf.len())
            .map_err(|why| Error::Refused(format!("{} bytes at {addr}: {why}", buf.len())))?;
        if !range.region.is_usable() {
            AddressSpace::check_usable(range)?;
        }
        if buf.is_empty() {
            return Ok(());
        }
        block.read(at, buf)
    }
}

/// The range, block and block offset of `len` bytes at `addr` in `view`
/// when they all lie in one RAM or ROM range; else why not.
#[inline]
fn ram_at(
    view: &FlatView,
    addr: GuestAddr,
    len: usize,
) -> std::result::Result<(&FlatRange, &Arc<RamBlock>, u64), &'static str> {
    let last = addr
        .0
        .checked_add((len as u64).saturating_sub(1))
        .ok_or("past the end of the address space")?;
    let range = view.lookup(addr).ok_or("no memory there")?;
    let (RegionKind::Ram { block, offset } | RegionKind::Rom { block, offset }) = range.region.kind() else {
        return Err("not RAM");
    };
    if !range.range.contains(GuestAddr(last)) {
        return Err("crosses the end of a RAM range");
    }
    Ok((range, block, offset + range.region_offset(addr)))
}

enum Transfer<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl<'a> Transfer<'a> {
    fn len(&self) -> usize {
        match self {
            Transfer::Read(b) => b.len(),
            Transfer::Write(b) => b.len(),
        }
    }
    fn is_write(&self) -> bool {
        matches!(self, Transfer::Write(_))
    }
    /// The bytes from `at` on.
    fn from(self, at: usize) -> Transfer<'a> {
        match self {
            Transfer::Read(b) => Transfer::Read(&mut b[at..]),
            Transfer::Write(b) => Transfer::Write(&b[at..]),
        }
    }
    fn verb(&self) -> &'static str {
        if self.is_write() { "write" } else { "read" }
    }
    fn fill_hole(&mut self, at: usize, len: usize) {
        if let Transfer::Read(b) = self {
            b[at..at + len].fill(UNASSIGNED_BYTE);
        }
    }
}
