//! What the intel-iommu model refuses: property combinations (with QEMU's
//! realize messages) and register accesses.

/// A refused configuration or register access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IommuError {
    /// `eim=on` with interrupt remapping off.
    #[error("eim=on cannot be selected without intremap=on")]
    EimWithoutIntremap,
    /// `eim=on` under a split irqchip whose KVM lacks the X2APIC API.
    #[error("eim=on requires support on the KVM side(X2APIC_API, first shipped in v4.7)")]
    EimWithoutKvmX2apic,
    /// Interrupt remapping with the whole irqchip in KVM.
    #[error("Interrupt Remapping cannot work with kernel-irqchip=on, please use 'split|off'.")]
    IntremapWithKernelIrqchip,
    /// `x-flts=on` without scalable mode.
    #[error("x-flts is only available in scalable mode")]
    FltsWithoutScalableMode,
    /// `aw-bits` other than 39 or 48.
    #[error("{mode}: supported values for aw-bits are: 39, 48")]
    AwBits {
        /// `Legacy mode` or `Scalable mode(flts=off)`.
        mode: &'static str,
    },
    /// `x-flts=on` with `aw-bits` other than 48.
    #[error("Scalable mode(flts=on): supported value for aw-bits is: 48")]
    FltsAwBits,
    /// Scalable mode with `dma-drain=off`.
    #[error("Need to set dma_drain for scalable mode")]
    ScalableModeWithoutDmaDrain,
    /// `x-pasid-mode=on` without scalable mode.
    #[error("Need to set scalable mode for PASID")]
    PasidWithoutScalableMode,
    /// `x-pasid-mode=on` with `device-iotlb=on`.
    #[error("PASID based device IOTLB is not supported")]
    PasidDeviceIotlb,
    /// `x-scalable-mode=on`: this model translates in legacy mode only.
    #[error("x-scalable-mode=on is not supported: vmkit's intel-iommu translates in legacy mode only")]
    ScalableModeUnsupported,
    /// A second x86 vIOMMU on the machine.
    #[error("QEMU does not support multiple vIOMMUs for x86 yet.")]
    MultipleIommus,
    /// A register access that is not 4 or 8 naturally aligned bytes inside
    /// the window, or a width QEMU does not take at that register.
    #[error("intel-iommu register access of {size} bytes at {offset:#x}: {reason}")]
    BadAccess {
        /// Offset in the window.
        offset: u64,
        /// Bytes.
        size: u8,
        /// Why.
        reason: &'static str,
    },
}
