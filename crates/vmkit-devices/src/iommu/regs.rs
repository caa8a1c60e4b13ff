//! The register window: offsets, bit sets, and the CAP / ECAP values QEMU
//! advertises for a configuration.

use bitflags::bitflags;

use super::props::{AwBits, IommuConfig};

/// Bytes of the register window (QEMU's `DMAR_REG_SIZE`): one fault
/// recording register at 0x220.
pub const REG_SIZE: usize = 0x230;

/// Where the window sits on q35 (`Q35_HOST_BRIDGE_IOMMU_ADDR`).
pub const MMIO_BASE: u64 = 0xfed9_0000;

/// The registers QEMU gives behaviour to, by offset. An 8-byte register
/// also has its high half listed where QEMU acts on a 4-byte write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Reg {
    /// Version (32, read-only): 0x10, major 1 minor 0.
    Ver = 0x00,
    /// Capabilities (64, read-only).
    Cap = 0x08,
    /// Extended capabilities (64, read-only).
    Ecap = 0x10,
    /// Global command (32, write-only).
    Gcmd = 0x18,
    /// Global status (32, read-only).
    Gsts = 0x1c,
    /// Root table address (64).
    Rtaddr = 0x20,
    /// Root table address, high half.
    RtaddrHi = 0x24,
    /// Context command (64).
    Ccmd = 0x28,
    /// Context command, high half (ICC lives here).
    CcmdHi = 0x2c,
    /// Fault status (32).
    Fsts = 0x34,
    /// Fault event control (32).
    Fectl = 0x38,
    /// Fault event data (32).
    Fedata = 0x3c,
    /// Fault event address (32; QEMU also takes an 8-byte write).
    Feaddr = 0x40,
    /// Fault event upper address (32, reads 0 without EIM support).
    Feuaddr = 0x44,
    /// Advanced fault log (64, unused).
    Aflog = 0x58,
    /// Protected memory enable (32, read-only here).
    Pmen = 0x64,
    /// Protected low memory base (32).
    Plmbase = 0x68,
    /// Protected low memory limit (32).
    Plmlimit = 0x6c,
    /// Protected high memory base (64).
    Phmbase = 0x70,
    /// Protected high memory limit (64).
    Phmlimit = 0x78,
    /// Invalidation queue head (64, read-only).
    Iqh = 0x80,
    /// Invalidation queue tail (64).
    Iqt = 0x88,
    /// Invalidation queue tail, high half (reserved).
    IqtHi = 0x8c,
    /// Invalidation queue address (64).
    Iqa = 0x90,
    /// Invalidation queue address, high half.
    IqaHi = 0x94,
    /// Invalidation completion status (32).
    Ics = 0x9c,
    /// Invalidation event control (32).
    Iectl = 0xa0,
    /// Invalidation event data (32).
    Iedata = 0xa4,
    /// Invalidation event address (32).
    Ieaddr = 0xa8,
    /// Invalidation event upper address (32, reads 0).
    Ieuaddr = 0xac,
    /// Interrupt remapping table address (64).
    Irta = 0xb8,
    /// Interrupt remapping table address, high half.
    IrtaHi = 0xbc,
    /// Invalidate address (64, write-only; ECAP.IRO points here).
    Iva = 0xf0,
    /// Invalidate address, high half.
    IvaHi = 0xf4,
    /// IOTLB invalidate (64).
    Iotlb = 0xf8,
    /// IOTLB invalidate, high half (IVT lives here).
    IotlbHi = 0xfc,
    /// Fault recording register 0, bits 31:0 (faulting page address).
    Frcd0 = 0x220,
    /// Fault recording register 0, bits 63:32.
    Frcd1 = 0x224,
    /// Fault recording register 0, bits 95:64 (source id, reason).
    Frcd2 = 0x228,
    /// Fault recording register 0, bits 127:96 (F, T).
    Frcd3 = 0x22c,
}

impl Reg {
    const ALL: [Reg; 40] = [
        Reg::Ver,
        Reg::Cap,
        Reg::Ecap,
        Reg::Gcmd,
        Reg::Gsts,
        Reg::Rtaddr,
        Reg::RtaddrHi,
        Reg::Ccmd,
        Reg::CcmdHi,
        Reg::Fsts,
        Reg::Fectl,
        Reg::Fedata,
        Reg::Feaddr,
        Reg::Feuaddr,
        Reg::Aflog,
        Reg::Pmen,
        Reg::Plmbase,
        Reg::Plmlimit,
        Reg::Phmbase,
        Reg::Phmlimit,
        Reg::Iqh,
        Reg::Iqt,
        Reg::IqtHi,
        Reg::Iqa,
        Reg::IqaHi,
        Reg::Ics,
        Reg::Iectl,
        Reg::Iedata,
        Reg::Ieaddr,
        Reg::Ieuaddr,
        Reg::Irta,
        Reg::IrtaHi,
        Reg::Iva,
        Reg::IvaHi,
        Reg::Iotlb,
        Reg::IotlbHi,
        Reg::Frcd0,
        Reg::Frcd1,
        Reg::Frcd2,
        Reg::Frcd3,
    ];

    /// The byte offset.
    pub const fn offset(self) -> usize {
        self as usize
    }

    /// The register starting at `offset`, if QEMU names one there.
    pub fn at(offset: u64) -> Option<Reg> {
        Reg::ALL.into_iter().find(|r| r.offset() as u64 == offset)
    }
}

bitflags! {
    /// Global command (GCMD): the guest writes one command bit at a time
    /// on top of the current status.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Gcmd: u32 {
        /// Translation enable.
        const TE = 1 << 31;
        /// Set root table pointer.
        const SRTP = 1 << 30;
        /// Set fault log.
        const SFL = 1 << 29;
        /// Enable advanced fault logging.
        const EAFL = 1 << 28;
        /// Write buffer flush.
        const WBF = 1 << 27;
        /// Queued invalidation enable.
        const QIE = 1 << 26;
        /// Interrupt remapping enable.
        const IRE = 1 << 25;
        /// Set interrupt remap table pointer.
        const SIRTP = 1 << 24;
        /// Compatibility format interrupt.
        const CFI = 1 << 23;
    }
}

bitflags! {
    /// Global status (GSTS): the command bits' status, at the same positions.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Gsts: u32 {
        /// Translation enabled.
        const TES = 1 << 31;
        /// Root table pointer latched.
        const RTPS = 1 << 30;
        /// Fault log pointer latched.
        const FLS = 1 << 29;
        /// Advanced fault logging on.
        const AFLS = 1 << 28;
        /// Write buffer flush pending.
        const WBFS = 1 << 27;
        /// Queued invalidation on.
        const QIES = 1 << 26;
        /// Interrupt remapping on.
        const IRES = 1 << 25;
        /// Interrupt remap table pointer latched.
        const IRTPS = 1 << 24;
        /// Compatibility format interrupts on.
        const CFIS = 1 << 23;
    }
}

bitflags! {
    /// Fault status (FSTS).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Fsts: u32 {
        /// Primary fault overflow (write 1 to clear).
        const PFO = 1 << 0;
        /// Primary pending fault: some FRCD has F set (read-only).
        const PPF = 1 << 1;
        /// Invalidation queue error (write 1 to clear).
        const IQE = 1 << 4;
        /// Fault record index (bits 15:8).
        const FRI = 0xff << 8;
    }
}

bitflags! {
    /// An event control register (FECTL, IECTL).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct EventControl: u32 {
        /// Interrupt mask.
        const IM = 1 << 31;
        /// Interrupt pending.
        const IP = 1 << 30;
    }
}

/// ICS.IWC: an invalidation wait descriptor with IF completed.
pub const ICS_IWC: u32 = 1;

/// CCMD: invalidate context cache (go / busy).
pub const CCMD_ICC: u64 = 1 << 63;
/// CCMD: requested granularity, bits 62:61.
pub const CCMD_CIRG_SHIFT: u32 = 61;
/// CCMD: actual granularity, bits 60:59.
pub const CCMD_CAIG_SHIFT: u32 = 59;
/// IOTLB register: invalidate (go / busy).
pub const IOTLB_IVT: u64 = 1 << 63;
/// IOTLB register: requested granularity, bits 61:60.
pub const IOTLB_IIRG_SHIFT: u32 = 60;
/// IOTLB register: actual granularity, bits 58:57.
pub const IOTLB_IAIG_SHIFT: u32 = 57;
/// RTADDR: translation table mode bit 10 (scalable-mode root table).
pub const RTADDR_SMT: u64 = 1 << 10;
/// IRTA: extended interrupt mode enable (x2APIC).
pub const IRTA_EIME: u64 = 1 << 11;
/// IQA: 256-bit descriptors.
pub const IQA_DW: u64 = 1 << 11;
/// IQA: queue size field (2^QS pages of 4 KiB).
pub const IQA_QS: u64 = 0x7;

/// FRCD high qword: fault (write 1 to clear).
pub const FRCD_F: u64 = 1 << 63;
/// FRCD high qword: type, set for a read.
pub const FRCD_T: u64 = 1 << 62;
/// Largest address mask value (2^18 pages) for page-selective invalidation.
pub const MAMV: u8 = 18;

/// Capability register bits QEMU sets.
pub mod cap {
    /// Number of domains: 16-bit domain ids.
    pub const ND: u64 = 6;
    /// Caching mode.
    pub const CM: u64 = 1 << 7;
    /// SAGAW: 39-bit, 3-level tables.
    pub const SAGAW_39: u64 = 0x2 << 8;
    /// SAGAW: 48-bit, 4-level tables.
    pub const SAGAW_48: u64 = 0x4 << 8;
    /// Fault recording register offset / 16, bits 33:24.
    pub const FRO: u64 = (0x220 >> 4) << 24;
    /// Second-level large pages: 2 MiB and 1 GiB.
    pub const SLLPS: u64 = (1 << 34) | (1 << 35);
    /// Page-selective invalidation.
    pub const PSI: u64 = 1 << 39;
    /// Number of fault recording registers − 1 (bits 47:40): one record.
    pub const NFR: u64 = 0;
    /// Maximum address mask value, bits 53:48.
    pub const MAMV: u64 = (super::MAMV as u64) << 48;
    /// Write draining.
    pub const DWD: u64 = 1 << 54;
    /// Read draining.
    pub const DRD: u64 = 1 << 55;
    /// Maximum guest address width − 1, bits 21:16.
    pub const fn mgaw(aw_bits: u8) -> u64 {
        ((aw_bits as u64 - 1) & 0x3f) << 16
    }
}

/// Extended capability register bits QEMU sets.
pub mod ecap {
    /// Queued invalidation.
    pub const QI: u64 = 1 << 1;
    /// Device-IOTLB (ATS).
    pub const DT: u64 = 1 << 2;
    /// Interrupt remapping.
    pub const IR: u64 = 1 << 3;
    /// Extended interrupt mode (x2APIC).
    pub const EIM: u64 = 1 << 4;
    /// Pass-through.
    pub const PT: u64 = 1 << 6;
    /// Snoop control.
    pub const SC: u64 = 1 << 7;
    /// IOTLB register offset / 16, bits 17:8.
    pub const IRO: u64 = (0xf0 >> 4) << 8;
    /// Maximum handle mask value, bits 23:20.
    pub const MHMV: u64 = 15 << 20;
}

/// The capability and extended capability registers for `config`.
pub fn capabilities(config: &IommuConfig) -> (u64, u64) {
    let mut cap_reg =
        cap::FRO | cap::NFR | cap::ND | cap::MAMV | cap::PSI | cap::SLLPS | cap::mgaw(config.aw_bits.bits());
    if config.dma_drain {
        cap_reg |= cap::DWD | cap::DRD;
    }
    if config.dma_translation {
        cap_reg |= match config.aw_bits {
            AwBits::Aw39 => cap::SAGAW_39,
            AwBits::Aw48 => cap::SAGAW_39 | cap::SAGAW_48,
        };
    }
    if config.caching_mode {
        cap_reg |= cap::CM;
    }
    let mut ecap_reg = ecap::QI | ecap::IRO;
    if config.intremap {
        ecap_reg |= ecap::IR | ecap::MHMV;
        if config.eim {
            ecap_reg |= ecap::EIM;
        }
    }
    if config.device_iotlb {
        ecap_reg |= ecap::DT;
    }
    if config.pt {
        ecap_reg |= ecap::PT;
    }
    if config.snoop_control {
        ecap_reg |= ecap::SC;
    }
    (cap_reg, ecap_reg)
}
