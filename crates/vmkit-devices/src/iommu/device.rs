//! [`IntelIommu`]: the register file, the command protocols, the
//! invalidation queue and translation, as plain data. Register writes and
//! translations return what the owner must do next ([`Effect`]s, or the
//! fault-event MSI in a [`Fault`]).

use crate::dma::Dma;
use crate::pci::MsiMessage;

use super::cache::{ContextCache, ContextScope, Iotlb, IotlbScope};
use super::csr::RegisterFile;
use super::error::IommuError;
use super::fault::{Access, Fault, FaultReason, FaultRecord, FaultReport};
use super::props::IommuConfig;
use super::queue::{self, Descriptor, QueueError, desc_type};
use super::regs::{
    self, CCMD_CAIG_SHIFT, CCMD_CIRG_SHIFT, CCMD_ICC, EventControl, FRCD_F, FRCD_T, Fsts, Gcmd, Gsts, ICS_IWC,
    IOTLB_IAIG_SHIFT, IOTLB_IIRG_SHIFT, IOTLB_IVT, IQA_QS, IRTA_EIME, MAMV, REG_SIZE, Reg,
};
use super::tables::{self, Perm, SourceId, TranslationType, level_page_mask, level_shift, pte_address};

/// The first address of the interrupt range (MSI writes, never translated).
pub const INTERRUPT_RANGE_FIRST: u64 = 0xfee0_0000;
/// The last address of the interrupt range.
pub const INTERRUPT_RANGE_LAST: u64 = 0xfeef_ffff;
/// Bytes of a legacy invalidation descriptor.
const DESC_SIZE: u64 = 16;

/// What a register write (or a reset, or a load) requires of the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Send this MSI: a fault event or an invalidation completion event.
    Interrupt(MsiMessage),
    /// DMA remapping was turned on or off (GCMD.TE, reset, load): every
    /// device's DMA switches between translated and untranslated memory.
    TranslationEnabled(bool),
    /// A root table pointer was latched (GCMD.SRTP): caches were flushed
    /// and every device's translation may have changed.
    RootTableChanged {
        /// The root table's address.
        root: u64,
    },
    /// Context-cache entries were invalidated: re-evaluate those devices.
    ContextInvalidated(ContextScope),
    /// IOTLB entries were invalidated: tell the IOMMU notifiers.
    IotlbInvalidated(IotlbScope),
    /// A device-IOTLB (ATS) invalidation for one device.
    DeviceIotlbInvalidated {
        /// The device.
        source: SourceId,
        /// The address (bits 63:12).
        addr: u64,
        /// The size bit (the range is encoded in the address's low bits).
        size: bool,
    },
    /// Interrupt remapping was turned on or off (GCMD.IRE).
    InterruptRemapping(bool),
    /// An interrupt remapping table pointer was latched (GCMD.SIRTP):
    /// every cached interrupt entry is stale.
    InterruptTableChanged {
        /// The table's address.
        addr: u64,
        /// Its entries: 2^(S + 1).
        entries: u32,
        /// Extended (x2APIC) interrupt mode.
        eime: bool,
    },
    /// An interrupt entry cache invalidation descriptor.
    InterruptCacheInvalidated {
        /// Every entry (else `2^mask` entries from `index`).
        global: bool,
        /// The first entry.
        index: u16,
        /// The index mask.
        mask: u8,
    },
}

/// A translated page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The input page's base.
    pub iova: u64,
    /// The output page's base.
    pub translated: u64,
    /// The page's size − 1.
    pub addr_mask: u64,
    /// The rights for the asked access (a read reports no write right,
    /// as QEMU's translate does).
    pub perm: Perm,
}

impl Mapping {
    /// The output address of `iova`, if it lies in this page.
    pub fn output(&self, iova: u64) -> Option<u64> {
        (iova & !self.addr_mask == self.iova).then_some(self.translated | (iova & self.addr_mask))
    }

    /// The page size.
    pub fn page_size(&self) -> u64 {
        self.addr_mask + 1
    }
}

/// The outcome of a translation that did not fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Translation {
    /// The access goes to guest memory through this page.
    Mapped(Mapping),
    /// The address is in the interrupt range: the write is an interrupt
    /// request for interrupt remapping, not a memory access.
    Interrupt,
}

impl Translation {
    /// The page, unless the address is in the interrupt range.
    pub fn mapping(&self) -> Option<Mapping> {
        match self {
            Translation::Mapped(m) => Some(*m),
            Translation::Interrupt => None,
        }
    }
}

/// Counters of how translations were answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TranslationStats {
    /// Answered from the IOTLB.
    pub iotlb_hits: u64,
    /// Answered by walking the page tables.
    pub page_walks: u64,
}

/// The intel-iommu model: QEMU's `IntelIOMMUState` without the memory
/// and object glue.
#[derive(Debug, Clone)]
pub struct IntelIommu {
    config: IommuConfig,
    regs: RegisterFile,
    root: u64,
    dmar_enabled: bool,
    intr_enabled: bool,
    intr_root: u64,
    intr_size: u32,
    intr_eime: bool,
    qi_enabled: bool,
    iq: u64,
    iq_head: u16,
    iq_tail: u16,
    iq_size: u16,
    iq_last_desc_type: u8,
    next_frcd_reg: u16,
    iotlb: Iotlb,
    context_cache: ContextCache,
    queue_error: Option<QueueError>,
    stats: TranslationStats,
}

impl IntelIommu {
    /// A model in its reset state for a realized configuration.
    pub fn new(config: IommuConfig) -> IntelIommu {
        IntelIommu {
            config,
            regs: RegisterFile::reset(&config),
            root: 0,
            dmar_enabled: false,
            intr_enabled: false,
            intr_root: 0,
            intr_size: 0,
            intr_eime: false,
            qi_enabled: false,
            iq: 0,
            iq_head: 0,
            iq_tail: 0,
            iq_size: 0,
            iq_last_desc_type: desc_type::NONE,
            next_frcd_reg: 0,
            iotlb: Iotlb::default(),
            context_cache: ContextCache::default(),
            queue_error: None,
            stats: TranslationStats::default(),
        }
    }

    /// The configuration it was realized with.
    pub fn config(&self) -> &IommuConfig {
        &self.config
    }

    /// QEMU's reset: registers and state back to their reset values,
    /// caches empty (the interrupt-remapping table pointer stays latched,
    /// as QEMU's does). Every device's DMA becomes untranslated.
    pub fn reset(&mut self) -> Vec<Effect> {
        let (intr_root, intr_size, intr_eime) = (self.intr_root, self.intr_size, self.intr_eime);
        let stats = self.stats;
        *self = IntelIommu {
            intr_root,
            intr_size,
            intr_eime,
            stats,
            ..IntelIommu::new(self.config)
        };
        vec![Effect::TranslationEnabled(false), Effect::InterruptRemapping(false)]
    }

    /// Whether DMA remapping is on (GSTS.TES).
    pub fn translation_enabled(&self) -> bool {
        self.dmar_enabled
    }

    /// Whether interrupt remapping is on (GSTS.IRES).
    pub fn interrupt_remapping_enabled(&self) -> bool {
        self.intr_enabled
    }

    /// Whether queued invalidation is on (GSTS.QIES).
    pub fn queued_invalidation_enabled(&self) -> bool {
        self.qi_enabled
    }

    /// The latched root table address.
    pub fn root_table(&self) -> u64 {
        self.root
    }

    /// The latched interrupt remapping table: address, entries, EIME.
    pub fn interrupt_table(&self) -> (u64, u32, bool) {
        (self.intr_root, self.intr_size, self.intr_eime)
    }

    /// Why the invalidation queue last stopped (FSTS.IQE), if it did.
    pub fn queue_error(&self) -> Option<QueueError> {
        self.queue_error
    }

    /// Translation counters.
    pub fn stats(&self) -> TranslationStats {
        self.stats
    }

    /// IOTLB entries held.
    pub fn iotlb_len(&self) -> usize {
        self.iotlb.len()
    }

    /// FRCD 0, if its F bit is set.
    pub fn fault_record(&self) -> Option<FaultRecord> {
        let lo = self.regs.get64(Reg::Frcd0);
        let hi = self.regs.get64(Reg::Frcd2);
        (hi & FRCD_F != 0).then_some(FaultRecord {
            page: lo & !0xfff,
            source_id: SourceId(hi as u16),
            reason: (hi >> 32) as u8,
            access: if hi & FRCD_T != 0 { Access::Read } else { Access::Write },
        })
    }

    fn check_access(offset: u64, size: u8) -> Result<usize, IommuError> {
        let bad = |reason| IommuError::BadAccess { offset, size, reason };
        if !matches!(size, 4 | 8) {
            return Err(bad("only 4- and 8-byte accesses"));
        }
        if offset % u64::from(size) != 0 {
            return Err(bad("not naturally aligned"));
        }
        match offset.checked_add(u64::from(size)) {
            Some(end) if end <= REG_SIZE as u64 => Ok(offset as usize),
            _ => Err(bad("past the register window")),
        }
    }

    /// A guest read of `size` (4 or 8) bytes at `offset`. Write-only bits
    /// read as 0; IQA's address bits read the address latched when queued
    /// invalidation was enabled, as QEMU's do.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, IommuError> {
        let at = Self::check_access(offset, size)?;
        let low = |v: u64| if size == 4 { v & 0xffff_ffff } else { v };
        Ok(match Reg::at(offset) {
            Some(Reg::Iqa) => low(self.iq | (self.regs.get64(Reg::Iqa) & (IQA_QS | regs::IQA_DW))),
            Some(Reg::IqaHi) => self.iq >> 32,
            _ => self.regs.guest_read(at, usize::from(size)),
        })
    }

    /// A guest write of `size` (4 or 8) bytes of `value` at `offset`.
    /// `dma` is guest memory as the IOMMU reaches it (the invalidation
    /// queue and wait-descriptor status writes).
    pub fn write(&mut self, offset: u64, size: u8, value: u64, dma: &dyn Dma) -> Result<Vec<Effect>, IommuError> {
        let at = Self::check_access(offset, size)?;
        let reg = Reg::at(offset);
        let wide = size == 8;
        if wide && matches!(reg, Some(Reg::Fectl | Reg::Iectl | Reg::Ieaddr)) {
            // QEMU asserts a 4-byte access at these 32-bit registers.
            return Err(IommuError::BadAccess {
                offset,
                size,
                reason: "a 32-bit register",
            });
        }
        // GCMD is 32 bits even when written with 8 (GSTS is read-only).
        let len = if reg == Some(Reg::Gcmd) { 4 } else { usize::from(size) };
        self.regs.guest_write(at, len, value);
        let mut fx = Vec::new();
        match reg {
            Some(Reg::Gcmd) => self.gcmd_written(dma, &mut fx),
            Some(Reg::Ccmd) if wide => self.ccmd_written(&mut fx),
            Some(Reg::CcmdHi) => self.ccmd_written(&mut fx),
            Some(Reg::Iotlb) if wide => self.iotlb_written(&mut fx),
            Some(Reg::IotlbHi) => self.iotlb_written(&mut fx),
            Some(Reg::Fsts) => self.fsts_written(),
            Some(Reg::Fectl) => self.fectl_written(&mut fx),
            Some(Reg::Iqt) => self.iqt_written(dma, &mut fx),
            Some(Reg::Ics) => self.ics_written(),
            Some(Reg::Iectl) => self.iectl_written(&mut fx),
            Some(Reg::Frcd2) if wide => self.update_ppf(),
            Some(Reg::Frcd3) => self.update_ppf(),
            _ => {}
        }
        Ok(fx)
    }

    /// The address bits of a table pointer register: aw−1..12.
    fn table_address(&self, v: u64) -> u64 {
        v & self.config.aw_bits.mask() & !0xfff
    }

    fn gsts(&mut self, set: Gsts, on: bool) {
        if on {
            self.regs.update32(Reg::Gsts, 0, set.bits());
        } else {
            self.regs.update32(Reg::Gsts, set.bits(), 0);
        }
    }

    /// GCMD: each command bit that differs from its status bit (or, for
    /// the one-shot SRTP and SIRTP, is set) is carried out.
    fn gcmd_written(&mut self, dma: &dyn Dma, fx: &mut Vec<Effect>) {
        let status = self.regs.get32(Reg::Gsts);
        let cmd = Gcmd::from_bits_retain(self.regs.get32(Reg::Gcmd));
        let changed = Gcmd::from_bits_retain(status ^ cmd.bits());
        if changed.contains(Gcmd::TE) && self.config.dma_translation {
            self.set_translation(cmd.contains(Gcmd::TE), fx);
        }
        if cmd.contains(Gcmd::SRTP) {
            self.root = self.table_address(self.regs.get64(Reg::Rtaddr));
            self.gsts(Gsts::RTPS, true);
            self.flush_caches();
            fx.push(Effect::RootTableChanged { root: self.root });
        }
        if changed.contains(Gcmd::QIE) {
            self.set_queued_invalidation(cmd.contains(Gcmd::QIE), dma, fx);
        }
        if cmd.contains(Gcmd::SIRTP) {
            let irta = self.regs.get64(Reg::Irta);
            self.intr_size = 1 << ((irta & 0xf) + 1);
            self.intr_root = self.table_address(irta);
            self.intr_eime = irta & IRTA_EIME != 0;
            fx.push(Effect::InterruptTableChanged {
                addr: self.intr_root,
                entries: self.intr_size,
                eime: self.intr_eime,
            });
            self.gsts(Gsts::IRTPS, true);
        }
        if changed.contains(Gcmd::IRE) && self.config.intremap {
            let on = cmd.contains(Gcmd::IRE);
            self.intr_enabled = on;
            self.gsts(Gsts::IRES, on);
            fx.push(Effect::InterruptRemapping(on));
        }
    }

    fn flush_caches(&mut self) {
        self.iotlb.invalidate(IotlbScope::Global);
        self.context_cache.clear();
    }

    fn set_translation(&mut self, on: bool, fx: &mut Vec<Effect>) {
        if self.dmar_enabled == on {
            return;
        }
        self.dmar_enabled = on;
        if !on {
            self.next_frcd_reg = 0;
        }
        self.gsts(Gsts::TES, on);
        self.flush_caches();
        fx.push(Effect::TranslationEnabled(on));
    }

    fn set_queued_invalidation(&mut self, on: bool, dma: &dyn Dma, fx: &mut Vec<Effect>) {
        if on {
            let iqa = self.regs.get64(Reg::Iqa);
            self.iq = self.table_address(iqa);
            // 2^(QS + 8) 128-bit descriptors: QS ≤ 7 keeps it within u16.
            self.iq_size = 1 << ((iqa & IQA_QS) + 8);
            self.qi_enabled = true;
            self.gsts(Gsts::QIES, true);
            // A tail set before enabling (Windows does) is processed now.
            if self.iq_tail != 0 && !self.fsts().contains(Fsts::IQE) {
                self.fetch_descriptors(dma, fx);
            }
        } else if self.qi_enabled && self.iq_tail == self.iq_head && self.iq_last_desc_type == desc_type::WAIT {
            // QEMU turns the queue off only when drained by a wait descriptor.
            self.regs.put64(Reg::Iqh, 0);
            self.iq_head = 0;
            self.qi_enabled = false;
            self.gsts(Gsts::QIES, false);
        }
    }

    fn ccmd_written(&mut self, fx: &mut Vec<Effect>) {
        let v = self.regs.get64(Reg::Ccmd);
        if v & CCMD_ICC == 0 || self.qi_enabled {
            // With queued invalidation on QEMU ignores the request (ICC stays).
            return;
        }
        let caig = match (v >> CCMD_CIRG_SHIFT) & 3 {
            // Domain-selective is done as global and reported so.
            1 | 2 => {
                self.invalidate_context(ContextScope::Global, fx);
                1
            }
            3 => {
                let scope = ContextScope::Devices {
                    source: SourceId((v >> 16) as u16),
                    fm: ((v >> 32) & 3) as u8,
                };
                self.invalidate_context(scope, fx);
                3
            }
            _ => 0,
        };
        self.regs.update64(Reg::Ccmd, CCMD_ICC, 0);
        self.regs
            .update64(Reg::Ccmd, 3 << CCMD_CAIG_SHIFT, caig << CCMD_CAIG_SHIFT);
    }

    fn iotlb_written(&mut self, fx: &mut Vec<Effect>) {
        let v = self.regs.get64(Reg::Iotlb);
        if v & IOTLB_IVT == 0 || self.qi_enabled {
            return;
        }
        let domain = (v >> 32) as u16;
        let iaig = match (v >> IOTLB_IIRG_SHIFT) & 3 {
            1 => {
                self.invalidate_iotlb(IotlbScope::Global, fx);
                1
            }
            2 => {
                self.invalidate_iotlb(IotlbScope::Domain(domain), fx);
                2
            }
            3 => {
                let iva = self.regs.get64(Reg::Iva);
                let am = (iva & 0x3f) as u8;
                if am > MAMV {
                    0
                } else {
                    let scope = IotlbScope::Pages {
                        domain,
                        addr: iva & !0xfff,
                        am,
                    };
                    self.invalidate_iotlb(scope, fx);
                    3
                }
            }
            _ => 0,
        };
        self.regs.update64(Reg::Iotlb, IOTLB_IVT, 0);
        self.regs
            .update64(Reg::Iotlb, 3 << IOTLB_IAIG_SHIFT, iaig << IOTLB_IAIG_SHIFT);
    }

    fn invalidate_context(&mut self, scope: ContextScope, fx: &mut Vec<Effect>) {
        self.context_cache.invalidate(scope);
        fx.push(Effect::ContextInvalidated(scope));
    }

    fn invalidate_iotlb(&mut self, scope: IotlbScope, fx: &mut Vec<Effect>) {
        self.iotlb.invalidate(scope);
        fx.push(Effect::IotlbInvalidated(scope));
    }

    fn fsts(&self) -> Fsts {
        Fsts::from_bits_retain(self.regs.get32(Reg::Fsts))
    }

    fn control(&self, reg: Reg) -> EventControl {
        EventControl::from_bits_retain(self.regs.get32(reg))
    }

    fn message(&self, addr: Reg, data: Reg) -> MsiMessage {
        MsiMessage {
            address: u64::from(self.regs.get32(addr)),
            data: self.regs.get32(data),
        }
    }

    /// FSTS written: once no status bit is left, a pending fault event
    /// is dropped.
    fn fsts_written(&mut self) {
        let pending = Fsts::PFO | Fsts::PPF | Fsts::IQE;
        if self.control(Reg::Fectl).contains(EventControl::IP) && !self.fsts().intersects(pending) {
            self.regs.update32(Reg::Fectl, EventControl::IP.bits(), 0);
        }
    }

    /// FECTL written: unmasking a pending fault event sends it.
    fn fectl_written(&mut self, fx: &mut Vec<Effect>) {
        let c = self.control(Reg::Fectl);
        if c.contains(EventControl::IP) && !c.contains(EventControl::IM) {
            fx.push(Effect::Interrupt(self.message(Reg::Feaddr, Reg::Fedata)));
            self.regs.update32(Reg::Fectl, EventControl::IP.bits(), 0);
        }
    }

    fn ics_written(&mut self) {
        if self.control(Reg::Iectl).contains(EventControl::IP) && self.regs.get32(Reg::Ics) & ICS_IWC == 0 {
            self.regs.update32(Reg::Iectl, EventControl::IP.bits(), 0);
        }
    }

    fn iectl_written(&mut self, fx: &mut Vec<Effect>) {
        let c = self.control(Reg::Iectl);
        if c.contains(EventControl::IP) && !c.contains(EventControl::IM) {
            fx.push(Effect::Interrupt(self.message(Reg::Ieaddr, Reg::Iedata)));
            self.regs.update32(Reg::Iectl, EventControl::IP.bits(), 0);
        }
    }

    /// PPF follows the F bits of the fault records.
    fn update_ppf(&mut self) {
        if self.regs.get64(Reg::Frcd2) & FRCD_F != 0 {
            self.regs.update32(Reg::Fsts, 0, Fsts::PPF.bits());
        } else {
            self.regs.update32(Reg::Fsts, Fsts::PPF.bits(), 0);
        }
    }

    /// A fault event, given FSTS before the change that raised it: none
    /// while earlier conditions await service; else IP is set, and unless
    /// masked the MSI goes out and IP clears.
    fn fault_event(&mut self, before: Fsts) -> Option<MsiMessage> {
        if before.intersects(Fsts::PPF | Fsts::PFO | Fsts::IQE) {
            return None;
        }
        self.regs.update32(Reg::Fectl, 0, EventControl::IP.bits());
        if self.control(Reg::Fectl).contains(EventControl::IM) {
            return None;
        }
        let msg = self.message(Reg::Feaddr, Reg::Fedata);
        self.regs.update32(Reg::Fectl, EventControl::IP.bits(), 0);
        Some(msg)
    }

    /// Records a fault in the next fault recording register (QEMU's
    /// `vtd_report_frcd_fault`).
    fn record_fault(&mut self, source: SourceId, iova: u64, reason: FaultReason, access: Access) -> FaultReport {
        let before = self.fsts();
        if before.contains(Fsts::PFO) {
            return FaultReport::Overflow;
        }
        let hi = self.regs.get64(Reg::Frcd2);
        if hi & FRCD_F != 0 && hi as u16 == source.0 {
            return FaultReport::Compressed;
        }
        // One record (CAP.NFR = 0): the next is always record 0, and busy
        // while its F bit is set.
        self.next_frcd_reg = 0;
        if hi & FRCD_F != 0 {
            self.regs.update32(Reg::Fsts, 0, Fsts::PFO.bits());
            return FaultReport::Overflow;
        }
        let mut new_hi = u64::from(source.0) | u64::from(reason.code()) << 32;
        if access == Access::Read {
            new_hi |= FRCD_T;
        }
        self.regs.put64(Reg::Frcd0, iova & !0xfff);
        self.regs.put64(Reg::Frcd2, new_hi | FRCD_F);
        if before.contains(Fsts::PPF) {
            self.update_ppf();
            return FaultReport::Recorded { interrupt: None };
        }
        // FRI names the record just written: 0.
        self.regs.update32(Reg::Fsts, Fsts::FRI.bits(), 0);
        self.update_ppf();
        FaultReport::Recorded {
            interrupt: self.fault_event(before),
        }
    }

    fn fault(&mut self, source: SourceId, iova: u64, access: Access, reason: FaultReason, fpd: bool) -> Fault {
        let report = if fpd && reason.is_qualified() {
            FaultReport::Disabled
        } else {
            self.record_fault(source, iova, reason, access)
        };
        Fault {
            reason,
            source_id: source,
            iova,
            access,
            report,
        }
    }

    fn iqt_written(&mut self, dma: &dyn Dma, fx: &mut Vec<Effect>) {
        self.iq_tail = ((self.regs.get64(Reg::Iqt) >> 4) & 0x7fff) as u16;
        if self.qi_enabled && !self.fsts().contains(Fsts::IQE) {
            self.fetch_descriptors(dma, fx);
        }
    }

    fn queue_failed(&mut self, err: QueueError, fx: &mut Vec<Effect>) {
        self.queue_error = Some(err);
        let before = self.fsts();
        self.regs.update32(Reg::Fsts, 0, Fsts::IQE.bits());
        if let Some(msg) = self.fault_event(before) {
            fx.push(Effect::Interrupt(msg));
        }
    }

    /// Processes descriptors from IQH to IQT; a bad one stops the queue
    /// with FSTS.IQE, IQH left on it.
    fn fetch_descriptors(&mut self, dma: &dyn Dma, fx: &mut Vec<Effect>) {
        if self.iq_tail >= self.iq_size {
            let err = QueueError::TailOutOfRange {
                tail: self.iq_tail,
                size: self.iq_size,
            };
            self.queue_failed(err, fx);
            return;
        }
        // The head wraps at the size and the tail is below it: at most one
        // pass over the queue.
        for _ in 0..self.iq_size {
            if self.iq_head == self.iq_tail {
                break;
            }
            if let Err(err) = self.process_descriptor(dma, fx) {
                self.queue_failed(err, fx);
                break;
            }
            self.regs.put64(Reg::Iqh, (u64::from(self.iq_head) << 4) & 0x7fff0);
        }
    }

    fn process_descriptor(&mut self, dma: &dyn Dma, fx: &mut Vec<Effect>) -> Result<(), QueueError> {
        let head = self.iq_head;
        let addr = self.iq.wrapping_add(u64::from(head) * DESC_SIZE);
        let mut b = [0u8; 16];
        if dma.read(addr, &mut b).is_err() {
            self.iq_last_desc_type = desc_type::NONE;
            return Err(QueueError::Unreadable { head, addr });
        }
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&b[..8]);
        hi.copy_from_slice(&b[8..]);
        let (lo, hi) = (u64::from_le_bytes(lo), u64::from_le_bytes(hi));
        self.iq_last_desc_type = queue::type_of(lo);
        match queue::decode(head, lo, hi)? {
            Descriptor::ContextCache(scope) => self.invalidate_context(scope, fx),
            Descriptor::Iotlb(scope) => self.invalidate_iotlb(scope, fx),
            Descriptor::DeviceIotlb { source, addr, size } => {
                fx.push(Effect::DeviceIotlbInvalidated { source, addr, size });
            }
            Descriptor::InterruptEntryCache { global, index, mask } => {
                fx.push(Effect::InterruptCacheInvalidated { global, index, mask });
            }
            Descriptor::Wait { status, interrupt } => {
                let failed = status.and_then(|(at, data)| dma.write_u32(at, data).err().map(|_| at));
                if interrupt {
                    self.completion_event(fx);
                }
                if let Some(at) = failed {
                    return Err(QueueError::StatusWrite { head, addr: at });
                }
            }
        }
        self.iq_head = if u32::from(head) + 1 >= u32::from(self.iq_size) {
            0
        } else {
            head + 1
        };
        Ok(())
    }

    /// An invalidation wait with IF: ICS.IWC, and the completion event
    /// unless one is already pending or it is masked.
    fn completion_event(&mut self, fx: &mut Vec<Effect>) {
        if self.regs.get32(Reg::Ics) & ICS_IWC != 0 {
            return;
        }
        self.regs.update32(Reg::Ics, 0, ICS_IWC);
        self.regs.update32(Reg::Iectl, 0, EventControl::IP.bits());
        if self.control(Reg::Iectl).contains(EventControl::IM) {
            return;
        }
        fx.push(Effect::Interrupt(self.message(Reg::Ieaddr, Reg::Iedata)));
        self.regs.update32(Reg::Iectl, EventControl::IP.bits(), 0);
    }

    /// Translates a DMA access by `source` at `iova` (QEMU's
    /// `vtd_iommu_translate`): untranslated while remapping is off; else
    /// from the IOTLB, or through the context entry (cached) and a page
    /// walk, caching the leaf. A refused access is a [`Fault`], recorded
    /// (and its fault event raised) unless FPD or the fault registers'
    /// state say otherwise.
    // Inline: the answer of a hit then stays in registers instead of being
    // stored piecewise and reloaded whole by the caller.
    #[inline]
    pub fn translate(
        &mut self,
        source: SourceId,
        iova: u64,
        access: Access,
        dma: &dyn Dma,
    ) -> Result<Translation, Fault> {
        if (INTERRUPT_RANGE_FIRST..=INTERRUPT_RANGE_LAST).contains(&iova) {
            return Ok(Translation::Interrupt);
        }
        if !self.dmar_enabled {
            return Ok(identity(iova));
        }
        let Some(e) = self.iotlb.lookup(source, iova) else {
            return self.translate_miss(source, iova, access, dma);
        };
        self.stats.iotlb_hits += 1;
        if !e.perm.contains(Perm::needed_by(access)) {
            return Err(cached_fault(source, iova, access));
        }
        let mask = level_page_mask(e.level);
        Ok(Translation::Mapped(Mapping {
            iova: iova & mask,
            translated: pte_address(e.pte, self.config.aw_bits) & mask,
            addr_mask: !mask,
            perm: for_access(e.perm, access),
        }))
    }

    /// An IOTLB miss with remapping on: the context entry, the walk, the fill.
    #[inline(never)]
    fn translate_miss(
        &mut self,
        source: SourceId,
        iova: u64,
        access: Access,
        dma: &dyn Dma,
    ) -> Result<Translation, Fault> {
        let aw = self.config.aw_bits;
        // A miss reads up to six entries: through the memory's map held once.
        let pinned = dma.pinned();
        let dma: &dyn Dma = match &pinned {
            Some(p) => p,
            None => dma,
        };
        let ce = match self.context_cache.get(source) {
            Some(ce) => ce,
            None => match tables::context_entry(&self.config, self.root, source, dma) {
                Ok(ce) => {
                    self.context_cache.insert(source, ce);
                    ce
                }
                Err(f) => return Err(self.fault(source, iova, access, f.reason, f.fpd)),
            },
        };
        if ce.translation_type() == TranslationType::PassThrough {
            return Ok(identity(iova));
        }
        self.stats.page_walks += 1;
        let leaf = tables::walk(&self.config, &ce, iova, access, dma)
            .map_err(|reason| self.fault(source, iova, access, reason, ce.fpd()))?;
        let out = pte_address(leaf.pte, aw);
        let last = out.saturating_add((1u64 << level_shift(leaf.level)) - 1);
        if out <= INTERRUPT_RANGE_LAST && last >= INTERRUPT_RANGE_FIRST {
            return Err(self.fault(source, iova, access, FaultReason::InterruptAddress, ce.fpd()));
        }
        self.iotlb
            .insert(source, ce.domain(), iova, leaf.pte, leaf.perm, leaf.level);
        let mask = level_page_mask(leaf.level);
        Ok(Translation::Mapped(Mapping {
            iova: iova & mask,
            translated: out & mask,
            addr_mask: !mask,
            perm: for_access(leaf.perm, access),
        }))
    }

    /// Whether `source`'s DMA goes through translation (QEMU switches a
    /// device to untranslated memory while remapping is off or its
    /// context entry is pass-through).
    pub fn translates(&self, source: SourceId, dma: &dyn Dma) -> bool {
        if !self.dmar_enabled {
            return false;
        }
        // A context entry that cannot be read counts as translating, as QEMU's.
        !matches!(
            tables::context_entry(&self.config, self.root, source, dma),
            Ok(ce) if ce.translation_type() == TranslationType::PassThrough
        )
    }
}

/// An untranslated page: `iova`'s own, with every right.
#[inline]
fn identity(iova: u64) -> Translation {
    Translation::Mapped(Mapping {
        iova: iova & !0xfff,
        translated: iova & !0xfff,
        addr_mask: 0xfff,
        perm: Perm::READ | Perm::WRITE,
    })
}

/// The rights reported for `access` (a read reports no write right, as
/// QEMU's translate does).
#[inline]
fn for_access(perm: Perm, access: Access) -> Perm {
    match access {
        Access::Write => perm,
        Access::Read => perm - Perm::WRITE,
    }
}

/// An IOTLB hit without the right `access` needs: a fault neither
/// recorded nor reported again (the walk that filled the entry did).
#[cold]
fn cached_fault(source: SourceId, iova: u64, access: Access) -> Fault {
    let reason = match access {
        Access::Read => FaultReason::Read,
        Access::Write => FaultReason::Write,
    };
    Fault {
        reason,
        source_id: source,
        iova,
        access,
        report: FaultReport::Cached,
    }
}

/// The parts of the model a migration carries, for the state module.
pub(crate) struct Migrated {
    pub(crate) root: u64,
    pub(crate) intr_root: u64,
    pub(crate) iq: u64,
    pub(crate) intr_size: u32,
    pub(crate) iq_head: u16,
    pub(crate) iq_tail: u16,
    pub(crate) iq_size: u16,
    pub(crate) next_frcd_reg: u16,
    pub(crate) csr: [u8; REG_SIZE],
    pub(crate) iq_last_desc_type: u8,
    pub(crate) dmar_enabled: bool,
    pub(crate) qi_enabled: bool,
    pub(crate) intr_enabled: bool,
    pub(crate) intr_eime: bool,
}

impl IntelIommu {
    pub(crate) fn migrated(&self) -> Migrated {
        Migrated {
            root: self.root,
            intr_root: self.intr_root,
            iq: self.iq,
            intr_size: self.intr_size,
            iq_head: self.iq_head,
            iq_tail: self.iq_tail,
            iq_size: self.iq_size,
            next_frcd_reg: self.next_frcd_reg,
            csr: *self.regs.bytes(),
            iq_last_desc_type: self.iq_last_desc_type,
            dmar_enabled: self.dmar_enabled,
            qi_enabled: self.qi_enabled,
            intr_enabled: self.intr_enabled,
            intr_eime: self.intr_eime,
        }
    }

    /// The reset values of the registers QEMU never lets change (VER,
    /// CAP, ECAP): a migrated register file must carry the same.
    /// Each as (register, value, bytes).
    pub(crate) fn identity_registers(&self) -> [(Reg, u64, usize); 3] {
        [
            (Reg::Ver, u64::from(self.regs.get32(Reg::Ver)), 4),
            (Reg::Cap, self.regs.get64(Reg::Cap), 8),
            (Reg::Ecap, self.regs.get64(Reg::Ecap), 8),
        ]
    }

    /// Installs migrated state (QEMU's load plus `post_load`); caches
    /// start empty.
    pub(crate) fn install(&mut self, m: Migrated) -> Vec<Effect> {
        self.regs.load_bytes(&m.csr);
        self.root = m.root;
        self.intr_root = m.intr_root;
        self.iq = m.iq;
        self.intr_size = m.intr_size;
        self.iq_head = m.iq_head;
        self.iq_tail = m.iq_tail;
        self.iq_size = m.iq_size;
        self.next_frcd_reg = m.next_frcd_reg;
        self.iq_last_desc_type = m.iq_last_desc_type;
        self.dmar_enabled = m.dmar_enabled;
        self.qi_enabled = m.qi_enabled;
        self.intr_enabled = m.intr_enabled;
        self.intr_eime = m.intr_eime;
        self.flush_caches();
        self.queue_error = None;
        vec![
            Effect::TranslationEnabled(self.dmar_enabled),
            Effect::InterruptRemapping(self.intr_enabled),
        ]
    }
}
