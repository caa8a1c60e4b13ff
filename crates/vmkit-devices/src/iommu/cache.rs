//! The translation caches: the IOTLB (leaf entries keyed by source, page
//! and level, tagged with the domain) and the context cache (context
//! entries by source). Neither migrates; both refill on demand.

// foldhash rather than std's SipHash: a translation hashes its key up to
// three times, and SipHash was most of an IOTLB hit. Seeds stay random per
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    source: SourceId,
    gfn: u64,
    level: u8,
}

/// A cached leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IotlbEntry {
    /// The page frame of the input page (at the leaf's granularity).
    pub(crate) gfn: u64,
    /// The domain the context entry named.
    pub(crate) domain: u16,
    /// The leaf entry.
    pub(crate) pte: u64,
    /// The rights ANDed along the walk.
    pub(crate) perm: Perm,
    /// 1, 2 or 3.
    pub(crate) level: u8,
}

/// The IOTLB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Iotlb {
    entries: HashMap<Key, IotlbEntry>,
}

fn gfn(iova: u64, level: u8) -> u64 {
    (iova & level_page_mask(level)) >> 12
}

impl Iotlb {
    /// The entry covering `iova` for `source`, trying 4 KiB, 2 MiB then
    /// 1 GiB pages.
    pub(crate) fn lookup(&self, source: SourceId, iova: u64) -> Option<IotlbEntry> {
        (1..=3)
            .find_map(|level| {
                self.entries.get(&Key {
                    source,
                    gfn: gfn(iova, level),
                    level,
                })
            })
            .copied()
    }

    /// Caches a leaf for `source`'s `iova`.
    pub(crate) fn insert(&mut self, source: SourceId, domain: u16, iova: u64, pte: u64, perm: Perm, level: u8) {
        if self.entries.len() >= IOTLB_MAX_ENTRIES {
            self.entries.clear();
        }
        let g = gfn(iova, level);
        self.entries.insert(
            Key { source, gfn: g, level },
            IotlbEntry {
                gfn: g,
                domain,
                pte,
                perm,
                level,
            },
        );
    }

    /// Drops the entries `scope` covers (QEMU's rule for pages: the entry's
    /// frame masked by `am` matches, or the entry's page holds `addr`).
    pub(crate) fn invalidate(&mut self, scope: IotlbScope) {
        match scope {
            IotlbScope::Global => self.entries.clear(),
            IotlbScope::Domain(domain) => self.entries.retain(|_, e| e.domain != domain),
            IotlbScope::Pages { domain, addr, am } => {
                let mask = !((1u64 << am.min(63)) - 1);
                let first = (addr >> 12) & mask;
                self.entries.retain(|_, e| {
                    let covered = e.gfn & mask == first || e.gfn == (addr & level_page_mask(e.level)) >> 12;
                    !(e.domain == domain && covered)
                });
            }
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The context cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContextCache {
    entries: HashMap<SourceId, ContextEntry>,
}

impl ContextCache {
    pub(crate) fn get(&self, source: SourceId) -> Option<ContextEntry> {
        self.entries.get(&source).copied()
    }

    pub(crate) fn insert(&mut self, source: SourceId, ce: ContextEntry) {
        self.entries.insert(source, ce);
    }

    pub(crate) fn invalidate(&mut self, scope: ContextScope) {
        self.entries.retain(|id, _| !scope.covers(*id));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}
