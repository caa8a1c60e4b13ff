//! The legacy-mode translation structures in guest memory: the root table
//! (one entry per bus), context tables (one entry per devfn) and the
//! second-level page tables, walked as QEMU walks them.

use bitflags::bitflags;

use crate::dma::Dma;

use super::fault::{Access, FaultReason};
use super::props::{AwBits, IommuConfig};

/// A requester id: bus number << 8 | devfn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u16);

impl SourceId {
    /// The id of `bus`:`devfn`.
    pub const fn new(bus: u8, devfn: u8) -> SourceId {
        SourceId((bus as u16) << 8 | devfn as u16)
    }

    /// The bus number: the root table index.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// Device and function: the context table index.
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus(), self.devfn() >> 3, self.devfn() & 7)
    }
}

bitflags! {
    /// Access rights of a mapping.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Perm: u8 {
        /// Reads allowed.
        const READ = 1;
        /// Writes allowed.
        const WRITE = 2;
    }
}

impl Perm {
    /// The right `access` needs.
    pub const fn needed_by(access: Access) -> Perm {
        match access {
            Access::Read => Perm::READ,
            Access::Write => Perm::WRITE,
        }
    }
}

/// Root entry: present bit.
const ROOT_P: u64 = 1;
/// Context entry (low qword): present.
const CTX_P: u64 = 1;
/// Context entry (low qword): fault processing disable.
const CTX_FPD: u64 = 1 << 1;
/// Context entry (high qword): reserved bits in legacy mode.
const CTX_HI_RESERVED: u64 = 0xffff_ffff_ff00_0080;
/// Paging entry: read.
const PTE_R: u64 = 1;
/// Paging entry: write.
const PTE_W: u64 = 1 << 1;
/// Paging entry: page size (a leaf above level 1).
const PTE_PS: u64 = 1 << 7;
/// Paging entry: snoop.
const PTE_SNP: u64 = 1 << 11;
/// Paging entry: transient mapping.
const PTE_TM: u64 = 1 << 62;
/// Paging entry bits the hardware ignores.
const PTE_IGNORED: u64 = 0xbff0_0000_0000_0000;
/// Bytes of a root or legacy context entry.
const ENTRY_SIZE: u64 = 16;

/// How a context entry translates (its TT field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TranslationType {
    /// 0: through the second-level tables.
    MultiLevel,
    /// 1: as 0, and device-IOTLB translation requests allowed.
    DeviceIotlb,
    /// 2: untranslated (identity).
    PassThrough,
    /// 3: reserved.
    Reserved,
}

/// A legacy context entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContextEntry {
    /// Low qword: P, FPD, TT, second-level table pointer.
    pub lo: u64,
    /// High qword: AW, domain id.
    pub hi: u64,
}

impl ContextEntry {
    /// A present entry translating through the `levels`-level (3 or 4)
    /// table at `table` for `domain`.
    pub const fn translated(table: u64, levels: u8, domain: u16) -> ContextEntry {
        ContextEntry {
            lo: (table & !0xfff) | CTX_P,
            hi: (levels.saturating_sub(2) as u64 & 7) | (domain as u64) << 8,
        }
    }

    /// A present pass-through entry (TT=2) for `domain`; `levels` must
    /// still be one the IOMMU supports.
    pub const fn pass_through(levels: u8, domain: u16) -> ContextEntry {
        ContextEntry {
            lo: CTX_P | 2 << 2,
            hi: (levels.saturating_sub(2) as u64 & 7) | (domain as u64) << 8,
        }
    }

    /// The same entry with fault processing disabled.
    pub const fn with_fpd(self) -> ContextEntry {
        ContextEntry {
            lo: self.lo | CTX_FPD,
            hi: self.hi,
        }
    }

    /// Present.
    pub const fn present(&self) -> bool {
        self.lo & CTX_P != 0
    }

    /// Fault processing disabled.
    pub const fn fpd(&self) -> bool {
        self.lo & CTX_FPD != 0
    }

    /// The TT field.
    pub const fn translation_type(&self) -> TranslationType {
        match (self.lo >> 2) & 3 {
            0 => TranslationType::MultiLevel,
            1 => TranslationType::DeviceIotlb,
            2 => TranslationType::PassThrough,
            _ => TranslationType::Reserved,
        }
    }

    /// The second-level table's address.
    pub const fn table(&self) -> u64 {
        self.lo & !0xfff
    }

    /// Page-table levels: 2 + AW.
    pub const fn levels(&self) -> u8 {
        2 + (self.hi & 7) as u8
    }

    /// The adjusted guest address width: 30 + 9 × AW.
    pub const fn agaw(&self) -> u32 {
        30 + (self.hi & 7) as u32 * 9
    }

    /// The domain id.
    pub const fn domain(&self) -> u16 {
        (self.hi >> 8) as u16
    }
}

/// Why a context entry could not be had, and whether the entry (if one
/// was read) silences qualified faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LookupFailure {
    pub(crate) reason: FaultReason,
    pub(crate) fpd: bool,
}

fn fail(reason: FaultReason, fpd: bool) -> LookupFailure {
    LookupFailure { reason, fpd }
}

fn read_pair(dma: &dyn Dma, addr: u64) -> Option<(u64, u64)> {
    let mut b = [0u8; 16];
    dma.read(addr, &mut b).ok()?;
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    Some((u64::from_le_bytes(lo), u64::from_le_bytes(hi)))
}

/// Whether `config` offers `levels`-level tables (CAP.SAGAW).
fn level_supported(config: &IommuConfig, levels: u8) -> bool {
    config.dma_translation && (levels == 3 || (levels == 4 && config.aw_bits == AwBits::Aw48))
}

/// The context entry of `source` under the root table at `root`
/// (QEMU's `vtd_dev_to_context_entry`, legacy mode).
pub(crate) fn context_entry(
    config: &IommuConfig,
    root: u64,
    source: SourceId,
    dma: &dyn Dma,
) -> Result<ContextEntry, LookupFailure> {
    let haw = config.aw_bits.mask();
    let root_at = root.checked_add(u64::from(source.bus()) * ENTRY_SIZE);
    let (rlo, rhi) = root_at
        .and_then(|a| read_pair(dma, a))
        .ok_or(fail(FaultReason::RootTableInvalid, false))?;
    if rlo & ROOT_P == 0 {
        return Err(fail(FaultReason::RootEntryNotPresent, false));
    }
    if rhi != 0 || rlo & (0xffe | !haw) != 0 {
        return Err(fail(FaultReason::RootEntryReserved, false));
    }
    let ctx_at = (rlo & !0xfff).checked_add(u64::from(source.devfn()) * ENTRY_SIZE);
    let (lo, hi) = ctx_at
        .and_then(|a| read_pair(dma, a))
        .ok_or(fail(FaultReason::ContextTableInvalid, false))?;
    let ce = ContextEntry { lo, hi };
    if !ce.present() {
        return Err(fail(FaultReason::ContextEntryNotPresent, ce.fpd()));
    }
    if hi & CTX_HI_RESERVED != 0 || lo & (0xff0 | !haw) != 0 {
        return Err(fail(FaultReason::ContextEntryReserved, ce.fpd()));
    }
    if !level_supported(config, ce.levels()) {
        return Err(fail(FaultReason::ContextEntryInvalid, ce.fpd()));
    }
    let type_ok = match ce.translation_type() {
        TranslationType::MultiLevel => true,
        TranslationType::DeviceIotlb => config.device_iotlb,
        TranslationType::PassThrough => config.pt,
        TranslationType::Reserved => false,
    };
    if !type_ok {
        return Err(fail(FaultReason::ContextEntryInvalid, ce.fpd()));
    }
    Ok(ce)
}

/// The leaf a walk ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    /// The entry.
    pub(crate) pte: u64,
    /// Its level: 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB).
    pub(crate) level: u8,
    /// The rights ANDed along the walk.
    pub(crate) perm: Perm,
}

/// The shift of the address bits one entry at `level` covers.
pub(crate) const fn level_shift(level: u8) -> u32 {
    12 + 9 * (level.saturating_sub(1) as u32)
}

/// The mask of the page base at `level`.
pub(crate) const fn level_page_mask(level: u8) -> u64 {
    !((1u64 << level_shift(level)) - 1)
}

/// The output address of a paging entry.
pub(crate) const fn pte_address(pte: u64, aw: AwBits) -> u64 {
    pte & !0xfff & aw.mask()
}

/// The bits that must be 0 in a paging entry at `level`.
fn reserved_mask(config: &IommuConfig, level: u8, large: bool) -> u64 {
    let kept = config.aw_bits.mask() | PTE_IGNORED;
    let leaf_kept = if config.tm_allowed { kept | PTE_TM } else { kept };
    let snp = if config.snoop_control { 0 } else { PTE_SNP };
    match (level, large) {
        (1, _) => snp | !leaf_kept,
        (2, true) => 0x1f_f000 | snp | !leaf_kept,
        (3, true) => 0x3fff_f000 | snp | !leaf_kept,
        (2 | 3, false) => PTE_SNP | !kept,
        (4, _) => PTE_SNP | PTE_PS | !kept,
        _ => u64::MAX,
    }
}

/// Walks the second-level tables of `ce` for `iova` (QEMU's
/// `vtd_iova_to_sspte`): the range check, then per level the entry's
/// right for `access`, then its reserved bits, until a leaf.
pub(crate) fn walk(
    config: &IommuConfig,
    ce: &ContextEntry,
    iova: u64,
    access: Access,
    dma: &dyn Dma,
) -> Result<Leaf, FaultReason> {
    let width = ce.agaw().min(u32::from(config.aw_bits.bits()));
    if iova >> width != 0 {
        return Err(FaultReason::AddressBeyondMgaw);
    }
    let top = ce.levels();
    let needed = match access {
        Access::Read => PTE_R,
        Access::Write => PTE_W,
    };
    let mut table = ce.table();
    let mut level = top;
    let mut perm = Perm::READ | Perm::WRITE;
    // A context entry that passed the checks has 3 or 4 levels; the bound
    // keeps a bad one from looping.
    while (1..=4).contains(&level) {
        let index = (iova >> level_shift(level)) & 0x1ff;
        let pte = table
            .checked_add(index * 8)
            .and_then(|a| {
                let mut b = [0u8; 8];
                dma.read(a, &mut b).ok().map(|()| u64::from_le_bytes(b))
            })
            .ok_or(if level == top {
                FaultReason::ContextEntryInvalid
            } else {
                FaultReason::PagingEntryInvalid
            })?;
        if pte & PTE_R == 0 {
            perm.remove(Perm::READ);
        }
        if pte & PTE_W == 0 {
            perm.remove(Perm::WRITE);
        }
        if pte & needed == 0 {
            return Err(match access {
                Access::Read => FaultReason::Read,
                Access::Write => FaultReason::Write,
            });
        }
        let large = pte & PTE_PS != 0 && (level == 2 || level == 3);
        if pte & reserved_mask(config, level, large) != 0 {
            return Err(FaultReason::PagingEntryReserved);
        }
        if level == 1 || pte & PTE_PS != 0 {
            return Ok(Leaf { pte, level, perm });
        }
        table = pte_address(pte, config.aw_bits);
        level -= 1;
    }
    Err(FaultReason::ContextEntryInvalid)
}
