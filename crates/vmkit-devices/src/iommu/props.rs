//! intel-iommu's properties (its own and those inherited from x86-iommu),
//! with QEMU's names and defaults, and the checks QEMU makes when the
//! device is realized, refused with QEMU's messages.
//!
//! `x-scalable-mode=on` is refused: this model translates in legacy mode
//! only (root and 16-byte context entries, second-level tables). QEMU's own
//! checks that involve scalable mode (`x-flts`, `x-pasid-mode`, `dma-drain`,
//! the aw-bits message) come first, so their messages are QEMU's.

use super::error::IommuError;

/// An `OnOffAuto` property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnOffAuto {
    /// On.
    On,
    /// Off.
    Off,
    /// Decided at realize from the platform.
    #[default]
    Auto,
}

/// How the machine's interrupt controllers are emulated, which decides
/// the `intremap` and `eim` defaults and refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IrqChip {
    /// TCG, or KVM with `kernel-irqchip=off`: the APICs are in the VMM.
    #[default]
    Userspace,
    /// KVM with `kernel-irqchip=split`; `x2apic_api` tells whether KVM
    /// has the X2APIC API (Linux 4.7).
    Split {
        /// KVM_CAP_X2APIC_API is available.
        x2apic_api: bool,
    },
    /// KVM with `kernel-irqchip=on`: the IOAPIC is in the kernel too.
    Kernel,
}

/// The guest address width: 39 bits (3-level tables) or 48 (4-level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwBits {
    /// 39 bits.
    Aw39,
    /// 48 bits.
    Aw48,
}

impl AwBits {
    /// The width in bits.
    pub const fn bits(self) -> u8 {
        match self {
            AwBits::Aw39 => 39,
            AwBits::Aw48 => 48,
        }
    }

    /// The mask of the addressable bits, `2^aw − 1`.
    pub const fn mask(self) -> u64 {
        (1 << self.bits()) - 1
    }
}

/// QEMU's `aw-bits` default since 9.2.
pub const DEFAULT_AW_BITS: u8 = 48;
/// `aw-bits` on machine types up to 9.1 (`hw_compat_9_1`).
pub const COMPAT_9_1_AW_BITS: u8 = 39;

/// The property values as set on the device, before realize. Field names
/// are QEMU's property names with `-` as `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntelIommuProps {
    /// `intremap` (x86-iommu): interrupt remapping; auto is on unless
    /// the whole irqchip is in KVM.
    pub intremap: OnOffAuto,
    /// `device-iotlb` (x86-iommu): device-IOTLB (ATS) support.
    pub device_iotlb: bool,
    /// `pt` (x86-iommu): pass-through context entries.
    pub pt: bool,
    /// `eim`: extended interrupt mode (x2APIC destinations).
    pub eim: OnOffAuto,
    /// `x-buggy-eim`: allow EIM without KVM's X2APIC API.
    pub x_buggy_eim: bool,
    /// `aw-bits`: 39 or 48.
    pub aw_bits: u8,
    /// `caching-mode`: the guest invalidates on map too (CAP.CM).
    pub caching_mode: bool,
    /// `x-scalable-mode` (refused when on, see the module docs).
    pub x_scalable_mode: bool,
    /// `x-flts`: first-stage translation (scalable mode only).
    pub x_flts: bool,
    /// `snoop-control`: ECAP.SC; the SNP bit of a leaf is then allowed.
    pub snoop_control: bool,
    /// `x-pasid-mode`: PASID support (scalable mode only).
    pub x_pasid_mode: bool,
    /// `dma-drain`: CAP.DRD and CAP.DWD.
    pub dma_drain: bool,
    /// `dma-translation`: false leaves SAGAW empty (interrupt remapping only).
    pub dma_translation: bool,
    /// `stale-tm`: with device-iotlb, a leaf's TM bit is allowed rather
    /// than reserved.
    pub stale_tm: bool,
    /// `fs1gp`: first-stage 1 GiB pages (with x-flts).
    pub fs1gp: bool,
}

impl Default for IntelIommuProps {
    /// QEMU's defaults for a current machine type.
    fn default() -> Self {
        IntelIommuProps {
            intremap: OnOffAuto::Auto,
            device_iotlb: false,
            pt: true,
            eim: OnOffAuto::Auto,
            x_buggy_eim: false,
            aw_bits: DEFAULT_AW_BITS,
            caching_mode: false,
            x_scalable_mode: false,
            x_flts: false,
            snoop_control: false,
            x_pasid_mode: false,
            dma_drain: true,
            dma_translation: true,
            stale_tm: false,
            fs1gp: true,
        }
    }
}

/// One property as the object model declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropertyInfo {
    /// QEMU's name.
    pub name: &'static str,
    /// Its QAPI type: `bool`, `OnOffAuto` or `uint8`.
    pub kind: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// The type that declares it: `x86-iommu` or `intel-iommu`.
    pub declared_by: &'static str,
}

/// Every property, in QEMU's declaration order (x86-iommu's first).
pub const PROPERTIES: [PropertyInfo; 15] = [
    prop("intremap", "OnOffAuto", "auto", "x86-iommu"),
    prop("device-iotlb", "bool", "false", "x86-iommu"),
    prop("pt", "bool", "true", "x86-iommu"),
    prop("eim", "OnOffAuto", "auto", "intel-iommu"),
    prop("x-buggy-eim", "bool", "false", "intel-iommu"),
    prop("aw-bits", "uint8", "48", "intel-iommu"),
    prop("caching-mode", "bool", "false", "intel-iommu"),
    prop("x-scalable-mode", "bool", "false", "intel-iommu"),
    prop("x-flts", "bool", "false", "intel-iommu"),
    prop("snoop-control", "bool", "false", "intel-iommu"),
    prop("x-pasid-mode", "bool", "false", "intel-iommu"),
    prop("dma-drain", "bool", "true", "intel-iommu"),
    prop("dma-translation", "bool", "true", "intel-iommu"),
    prop("stale-tm", "bool", "false", "intel-iommu"),
    prop("fs1gp", "bool", "true", "intel-iommu"),
];

const fn prop(
    name: &'static str,
    kind: &'static str,
    default: &'static str,
    declared_by: &'static str,
) -> PropertyInfo {
    PropertyInfo {
        name,
        kind,
        default,
        declared_by,
    }
}

/// The properties as realized: every `auto` decided, every combination
/// checked. The register reset values and the translation rules follow
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IommuConfig {
    /// Guest address width.
    pub aw_bits: AwBits,
    /// Interrupt remapping supported.
    pub intremap: bool,
    /// Extended interrupt mode supported.
    pub eim: bool,
    /// Device-IOTLB supported (context TT=1 accepted).
    pub device_iotlb: bool,
    /// Pass-through supported (context TT=2 accepted).
    pub pt: bool,
    /// CAP.CM.
    pub caching_mode: bool,
    /// ECAP.SC (leaf SNP bit allowed).
    pub snoop_control: bool,
    /// CAP.DRD / CAP.DWD.
    pub dma_drain: bool,
    /// DMA remapping offered at all.
    pub dma_translation: bool,
    /// A leaf's TM bit is allowed (`stale-tm` with `device-iotlb`);
    /// otherwise it is reserved.
    pub tm_allowed: bool,
}

impl IntelIommuProps {
    /// QEMU's defaults on a machine type up to 9.1: `aw-bits=39`.
    pub fn compat_9_1() -> Self {
        IntelIommuProps {
            aw_bits: COMPAT_9_1_AW_BITS,
            ..IntelIommuProps::default()
        }
    }

    /// Realizes the properties on a machine whose interrupt controllers
    /// are `irqchip`: x86-iommu's checks, then intel-iommu's, in QEMU's
    /// order and with its messages; then vmkit's refusal of scalable mode.
    pub fn realize(&self, irqchip: IrqChip) -> Result<IommuConfig, IommuError> {
        let all_in_kernel = irqchip == IrqChip::Kernel;
        let intremap = match self.intremap {
            OnOffAuto::On => true,
            OnOffAuto::Off => false,
            OnOffAuto::Auto => !all_in_kernel,
        };
        if intremap && all_in_kernel {
            return Err(IommuError::IntremapWithKernelIrqchip);
        }
        if self.x_pasid_mode && self.device_iotlb {
            return Err(IommuError::PasidDeviceIotlb);
        }
        if self.eim == OnOffAuto::On && !intremap {
            return Err(IommuError::EimWithoutIntremap);
        }
        let irqchip_in_kernel = matches!(irqchip, IrqChip::Split { .. } | IrqChip::Kernel);
        let eim = match self.eim {
            OnOffAuto::On => true,
            OnOffAuto::Off => false,
            OnOffAuto::Auto => (irqchip_in_kernel || self.x_buggy_eim) && intremap,
        };
        if eim && !self.x_buggy_eim && irqchip == (IrqChip::Split { x2apic_api: false }) {
            return Err(IommuError::EimWithoutKvmX2apic);
        }
        if !self.x_scalable_mode && self.x_flts {
            return Err(IommuError::FltsWithoutScalableMode);
        }
        let aw_bits = match self.aw_bits {
            39 => Some(AwBits::Aw39),
            48 => Some(AwBits::Aw48),
            _ => None,
        };
        if self.x_flts {
            if aw_bits != Some(AwBits::Aw48) {
                return Err(IommuError::FltsAwBits);
            }
        } else if aw_bits.is_none() {
            return Err(IommuError::AwBits {
                mode: if self.x_scalable_mode {
                    "Scalable mode(flts=off)"
                } else {
                    "Legacy mode"
                },
            });
        }
        if self.x_scalable_mode && !self.dma_drain {
            return Err(IommuError::ScalableModeWithoutDmaDrain);
        }
        if self.x_pasid_mode && !self.x_scalable_mode {
            return Err(IommuError::PasidWithoutScalableMode);
        }
        if self.x_scalable_mode {
            return Err(IommuError::ScalableModeUnsupported);
        }
        let aw_bits = aw_bits.ok_or(IommuError::AwBits { mode: "Legacy mode" })?;
        Ok(IommuConfig {
            aw_bits,
            intremap,
            eim,
            device_iotlb: self.device_iotlb,
            pt: self.pt,
            caching_mode: self.caching_mode,
            snoop_control: self.snoop_control,
            dma_drain: self.dma_drain,
            dma_translation: self.dma_translation,
            tm_allowed: self.device_iotlb && self.stale_tm,
        })
    }
}

/// The machine's plug check (QEMU's `pc_machine_device_pre_plug_cb`): a
/// second x86 vIOMMU is refused with QEMU's message.
pub fn check_single_instance(iommu_already_plugged: bool) -> Result<(), IommuError> {
    if iommu_already_plugged {
        return Err(IommuError::MultipleIommus);
    }
    Ok(())
}
