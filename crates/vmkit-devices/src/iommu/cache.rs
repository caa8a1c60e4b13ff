//! The translation caches: the IOTLB (leaf entries keyed by source, page
//! and level, tagged with the domain) and the context cache (context
//! entries by source). Neither migrates; both refill on demand.

// foldhash rather than std's SipHash: SipHash was most of an IOTLB hit. Seeds stay random per
// map, so guest-chosen addresses cannot aim at collisions.
use foldhash::HashMap;

use super::tables::{ContextEntry, Perm, SourceId, level_page_mask};

/// The most IOTLB entries; inserting into a full IOTLB empties it first,
/// as QEMU's does.
pub const IOTLB_MAX_ENTRIES: usize = 1024;

/// Which IOTLB entries an invalidation drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IotlbScope {
    /// Every entry.
    Global,
    /// The entries of one domain.
    Domain(u16),
    /// The entries of a domain covering `2^am` pages from `addr`.
    Pages {
        /// The domain.
        domain: u16,
        /// The first page's address (4 KiB aligned).
        addr: u64,
        /// The address mask: 2^am pages.
        am: u8,
    },
}

/// Which context-cache entries an invalidation drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextScope {
    /// Every entry (a domain-selective request is done as global, and
    /// reported so).
    Global,
    /// The functions of `source` selected by the function mask `fm`
    /// (0: that function; 1, 2, 3: ignoring devfn bit 2, bits 2:1, bits 2:0).
    Devices {
        /// The source id.
        source: SourceId,
        /// The function mask.
        fm: u8,
    },
}

impl ContextScope {
    /// Whether `id` is one of the sources this scope covers.
    pub fn covers(&self, id: SourceId) -> bool {
        match *self {
            ContextScope::Global => true,
            ContextScope::Devices { source, fm } => {
                let ignored: u8 = match fm & 3 {
                    0 => 0,
                    1 => 0b100,
                    2 => 0b110,
                    _ => 0b111,
                };
                id.bus() == source.bus() && id.devfn() & !ignored == source.devfn() & !ignored
            }
        }
    }
}

/// A cached leaf as its map holds it (the level is the map's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    pte: u64,
    domain: u16,
    perm: Perm,
}

/// A cached leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IotlbEntry {
    /// The leaf entry.
    pub(crate) pte: u64,
    /// The rights ANDed along the walk.
    pub(crate) perm: Perm,
    /// 1, 2 or 3.
    pub(crate) level: u8,
}

/// The widest input address a walk accepts (aw-bits 48): wider ones are
/// never cached, so a key packs the source above a 36-bit frame number.
const IOVA_BITS: u32 = 48;
/// The frame-number bits of a key.
const GFN_BITS: u32 = IOVA_BITS - 12;

/// `source`'s frame `gfn` as one word: one multiply to hash.
const fn key(source: SourceId, gfn: u64) -> u64 {
    (source.0 as u64) << GFN_BITS | gfn
}

const fn key_gfn(key: u64) -> u64 {
    key & ((1 << GFN_BITS) - 1)
}

/// The IOTLB: one map per page size, so a 4 KiB hit (the common case)
/// hashes once and the larger sizes are looked up only when some are
/// cached; the last hit is remembered in front of the maps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Iotlb {
    /// Index `level - 1`.
    levels: [HashMap<u64, Cached>; 3],
    /// The last lookup that hit: `key(source, iova >> 12)` and its entry.
    /// A copy of what the maps answer for that 4 KiB page, dropped by every
    /// change to the maps, so it never answers differently from them.
    last: Option<(u64, IotlbEntry)>,
}

fn gfn(iova: u64, level: u8) -> u64 {
    (iova & level_page_mask(level)) >> 12
}

impl Iotlb {
    /// The entry covering `iova` for `source`, trying 4 KiB, 2 MiB then
    /// 1 GiB pages.
    #[inline]
    pub(crate) fn lookup(&mut self, source: SourceId, iova: u64) -> Option<IotlbEntry> {
        if iova >> IOVA_BITS != 0 {
            return None;
        }
        let page = key(source, iova >> 12);
        if let Some((k, e)) = self.last {
            if k == page {
                return Some(e);
            }
        }
        let found = self.lookup_maps(source, iova)?;
        self.last = Some((page, found));
        Some(found)
    }

    fn lookup_maps(&self, source: SourceId, iova: u64) -> Option<IotlbEntry> {
        (1..=3u8).find_map(|level| {
            let map = &self.levels[usize::from(level - 1)];
            if map.is_empty() {
                return None;
            }
            map.get(&key(source, gfn(iova, level))).map(|c| IotlbEntry {
                pte: c.pte,
                perm: c.perm,
                level,
            })
        })
    }

    /// Caches a leaf for `source`'s `iova` (an address wider than a walk
    /// accepts is not cached).
    pub(crate) fn insert(&mut self, source: SourceId, domain: u16, iova: u64, pte: u64, perm: Perm, level: u8) {
        if iova >> IOVA_BITS != 0 || !(1..=3).contains(&level) {
            return;
        }
        self.last = None;
        if self.len() >= IOTLB_MAX_ENTRIES {
            self.clear();
        }
        self.levels[usize::from(level - 1)].insert(key(source, gfn(iova, level)), Cached { pte, domain, perm });
    }

    fn clear(&mut self) {
        for map in &mut self.levels {
            map.clear();
        }
    }

    /// Drops the entries `scope` covers (QEMU's rule for pages: the entry's
    /// frame masked by `am` matches, or the entry's page holds `addr`).
    pub(crate) fn invalidate(&mut self, scope: IotlbScope) {
        self.last = None;
        match scope {
            IotlbScope::Global => self.clear(),
            IotlbScope::Domain(domain) => {
                for map in &mut self.levels {
                    map.retain(|_, e| e.domain != domain);
                }
            }
            IotlbScope::Pages { domain, addr, am } => {
                let mask = !((1u64 << am.min(63)) - 1);
                let first = (addr >> 12) & mask;
                for (level, map) in (1..=3u8).zip(&mut self.levels) {
                    let own = (addr & level_page_mask(level)) >> 12;
                    map.retain(|k, e| {
                        let g = key_gfn(*k);
                        let covered = g & mask == first || g == own;
                        !(e.domain == domain && covered)
                    });
                }
            }
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(HashMap::len).sum()
    }
}

/// The context cache, with the last hit in front of its map.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextCache {
    entries: HashMap<SourceId, ContextEntry>,
    /// A copy of the map's entry for a source, dropped by every change.
    last: Option<(SourceId, ContextEntry)>,
}

impl ContextCache {
    #[inline]
    pub(crate) fn get(&mut self, source: SourceId) -> Option<ContextEntry> {
        if let Some((s, ce)) = self.last {
            if s == source {
                return Some(ce);
            }
        }
        let ce = self.entries.get(&source).copied()?;
        self.last = Some((source, ce));
        Some(ce)
    }

    pub(crate) fn insert(&mut self, source: SourceId, ce: ContextEntry) {
        self.last = None;
        self.entries.insert(source, ce);
    }

    pub(crate) fn invalidate(&mut self, scope: ContextScope) {
        self.last = None;
        self.entries.retain(|id, _| !scope.covers(*id));
    }

    pub(crate) fn clear(&mut self) {
        self.last = None;
        self.entries.clear();
    }
}
