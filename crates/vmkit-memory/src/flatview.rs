//! Flat views: a region tree rendered into sorted, non-overlapping ranges,
//! each resolved to the one terminating region (RAM, ROM, MMIO, IOMMU) that
//! answers there — QEMU's `generate_memory_topology`.

use std::sync::atomic::{AtomicUsize, Ordering};

use vmkit_qom::ObjectRef;

use crate::addr::{AddrRange, GuestAddr};
use crate::region::{MemoryRegion, RegionKind};

/// One range of a flat view.
#[derive(Clone)]
pub struct FlatRange {
    /// Where the range is in the address space.
    pub range: AddrRange,
    /// The terminating region that answers.
    pub region: MemoryRegion,
    /// The offset in `region` of `range.start()`.
    pub offset_in_region: u64,
    /// Whether guest writes are dropped here (ROM, or a read-only region or ancestor).
    pub readonly: bool,
    /// Holds the region's owner while the view exists (QEMU's `memory_region_ref`).
    pub(crate) _owner_ref: Option<ObjectRef>,
}

impl FlatRange {
    /// The offset in the region of `addr` (which must be in the range).
    #[inline]
    pub fn region_offset(&self, addr: GuestAddr) -> u64 {
        self.offset_in_region + (addr.0 - self.range.start().0)
    }

    fn same_as(&self, other: &FlatRange) -> bool {
        self.range == other.range
            && self.region == other.region
            && self.offset_in_region == other.offset_in_region
            && self.readonly == other.readonly
    }
}

/// A rendered address space.
#[derive(Default)]
pub struct FlatView {
    ranges: Vec<FlatRange>,
    /// The index of the range the last successful lookup found (QEMU's
    /// `AddressSpaceDispatch::mru_section`): a driver hammering one device's
    /// registers skips the search. A hint only — any thread may overwrite it.
    mru: Mru,
    /// `ranges[i].range.start()`, packed: the binary search of a lookup
    /// walks 8-byte keys (a few cache lines, the index arithmetic folded into
    /// the load) instead of the 56-byte ranges. The search is the longest
    /// dependency chain of an MMIO access.
    starts: Vec<u64>,
}

/// The most-recently-used hint, on a cache line of its own: threads that
/// overwrite it do not evict the view's other fields from each other's caches.
#[derive(Default)]
#[repr(align(64))]
struct Mru(AtomicUsize);

impl Clone for FlatView {
    fn clone(&self) -> Self {
        FlatView {
            ranges: self.ranges.clone(),
            mru: Mru(AtomicUsize::new(self.mru.0.load(Ordering::Relaxed))),
            starts: self.starts.clone(),
        }
    }
}

impl FlatView {
    /// Renders the tree under `root`.
    pub fn render(root: &MemoryRegion) -> FlatView {
        let mut view = FlatView::default();
        render(&mut view.ranges, root, 0, AddrRange::everything(), false, 0);
        view.simplify();
        view.starts = view.ranges.iter().map(|r| r.range.start().0).collect();
        view
    }

    /// The ranges, sorted by address.
    pub fn ranges(&self) -> &[FlatRange] {
        &self.ranges
    }

    /// How many ranges start at or below `addr`.
    #[inline]
    fn starting_at_or_below(&self, addr: GuestAddr) -> usize {
        self.starts.partition_point(|&s| s <= addr.0)
    }

    /// The range containing `addr`, if any region covers it.
    #[inline]
    pub fn lookup(&self, addr: GuestAddr) -> Option<&FlatRange> {
        if let Some(r) = self.ranges.get(self.mru.0.load(Ordering::Relaxed)) {
            if r.range.contains(addr) {
                return Some(r);
            }
        }
        let i = self.starting_at_or_below(addr).checked_sub(1)?;
        let r = self.ranges.get(i)?;
        if !r.range.contains(addr) {
            return None;
        }
        self.mru.0.store(i, Ordering::Relaxed);
        Some(r)
    }

    /// The first range starting after `addr` (to size a hole).
    pub fn next_after(&self, addr: GuestAddr) -> Option<&FlatRange> {
        self.ranges.get(self.starting_at_or_below(addr))
    }

    /// Ranges of `self` absent from `other` (same place, region, offset and flags).
    pub fn ranges_not_in<'a>(&'a self, other: &'a FlatView) -> impl Iterator<Item = &'a FlatRange> + 'a {
        self.ranges
            .iter()
            .filter(move |r| !other.ranges.iter().any(|o| o.same_as(r)))
    }

    /// Merges neighbours that continue each other (QEMU's `flatview_simplify`).
    fn simplify(&mut self) {
        let mut out: Vec<FlatRange> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            if let Some(last) = out.last_mut() {
                let contiguous = last.range.end() == u128::from(r.range.start().0)
                    && last.region == r.region
                    && last.readonly == r.readonly
                    && u128::from(last.offset_in_region) + last.range.size() == u128::from(r.offset_in_region);
                if contiguous {
                    last.range = AddrRange::from_bounds(last.range.start().0, r.range.end());
                    continue;
                }
            }
            out.push(r);
        }
        self.ranges = out;
    }
}

/// Deep enough for any real machine; stops a pathological alias chain.
const MAX_DEPTH: usize = 64;

/// Renders `mr` placed at absolute `base` (which may be "negative" through an
/// alias offset, hence i128) within `clip`. Higher-priority content is
/// rendered first; later regions only fill the gaps left.
fn render(out: &mut Vec<FlatRange>, mr: &MemoryRegion, base: i128, clip: AddrRange, readonly: bool, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let (enabled, ro, subs) = {
        let st = mr.0.state.read();
        (st.enabled, st.readonly, st.subregions.clone())
    };
    if !enabled {
        return;
    }
    let readonly = readonly || ro;
    // The region's extent, clipped to the 64-bit space and to `clip`.
    let lo = base.max(0);
    let hi = (base + mr.size() as i128).min(1i128 << 64);
    if lo >= hi {
        return;
    }
    let Ok(start) = u64::try_from(lo) else { return };
    let own = AddrRange::from_bounds(start, hi as u128);
    let Some(clip) = own.intersect(&clip) else { return };

    if let RegionKind::Alias { target, offset } = mr.kind() {
        render(out, target, base - i128::from(*offset), clip, readonly, depth + 1);
        return;
    }
    for s in &subs {
        render(out, &s.region, base + i128::from(s.addr.0), clip, readonly, depth + 1);
    }
    if !mr.kind().terminates() {
        return;
    }
    let owner_ref = mr.owner().and_then(|o| o.try_ref().ok());
    let readonly = readonly || matches!(mr.kind(), RegionKind::Rom { .. });
    // Fill every gap of `clip` not yet covered.
    let mut cursor = u128::from(clip.start().0);
    let end = clip.end();
    let mut i = out.partition_point(|r| r.range.end() <= cursor);
    while cursor < end {
        let next_start = out.get(i).map_or(end, |r| u128::from(r.range.start().0).min(end));
        if next_start > cursor {
            let piece_start = cursor as u64;
            let offset = (i128::from(piece_start) - base) as u64;
            out.insert(
                i,
                FlatRange {
                    range: AddrRange::from_bounds(piece_start, next_start),
                    region: mr.clone(),
                    offset_in_region: offset,
                    readonly,
                    _owner_ref: owner_ref.clone(),
                },
            );
            i += 1;
        }
        match out.get(i) {
            Some(r) if u128::from(r.range.start().0) < end => {
                cursor = r.range.end().max(cursor);
                i += 1;
            }
            _ => break,
        }
    }
}
