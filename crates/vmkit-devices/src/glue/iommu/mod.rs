//! `intel-iommu` in the machine: QEMU's types (`x86-iommu`, abstract and
//! a singleton; `intel-iommu`) with QEMU 7.2's properties, defaults and
//! realize checks, the register window at 0xfed90000, DMA remapping of
//! the PCI functions on the root bus, and the `iommu-intel` section.
//!
//! * Singleton: `x86-iommu` declares the `singleton` interface, so a
//!   temporary instance (`-device intel-iommu,help`, `device-list-properties`)
//!   always works and a second realized one is refused by the object model
//!   on every path, naming the active instance.
//! * Order: QEMU gives a PCI function its IOMMU address space when the
//!   function is realized, so the IOMMU must come first. QEMU 7.2 lets a
//!   function created before it bypass translation silently; vmkit refuses
//!   the IOMMU instead, naming the functions already there (the host
//!   bridge's `mch` excepted: it does no DMA), and refuses to unplug the
//!   IOMMU while functions it translates for remain.
//! * Hot-plug: QEMU's `device_add intel-iommu` is always refused (it is no
//!   pluggable type); vmkit takes it while the root bus takes hot-plug and
//!   refuses it with QEMU's message when the board follows QEMU's rule
//!   (`--no-pci-hotplug`).

pub mod dmar;
mod last;

use std::sync::Arc;

use vmkit_memory::GuestAddr;
use vmkit_migration::savevm::register_device_model;
use vmkit_qom::{Object, PropertyDef, PropertyKind, TYPE_DEVICE, TYPE_SINGLETON, TypeInfo, Value};

pub use dmar::{DMAR_BASE, DMAR_WINDOW, Dmar, DmarStats};

use super::error::GlueError;
use super::pci::{PciRootBus, TYPE_MCH, find_root_bus};
use crate::iommu::props::COMPAT_9_1_AW_BITS;
use crate::iommu::state::vmstate_description;
use crate::iommu::{IntelIommu, IntelIommuProps, IommuError, IrqChip, OnOffAuto};

/// QEMU's `TYPE_X86_IOMMU_DEVICE`: the abstract base of x86 IOMMUs, the
/// type that declares the singleton.
pub const TYPE_X86_IOMMU: &str = "x86-iommu";
/// QEMU's `TYPE_INTEL_IOMMU_DEVICE`.
pub const TYPE_INTEL_IOMMU: &str = "intel-iommu";
/// QEMU's `-device` refusal of a type that cannot be hot-plugged.
pub const NOT_PLUGGABLE: &str = "Parameter 'driver' expects a pluggable device type";

fn on_off_auto() -> PropertyKind {
    PropertyKind::Enum {
        name: "OnOffAuto".into(),
        values: vec!["on".into(), "off".into(), "auto".into()].into(),
    }
}

fn flag(name: &str, default: bool) -> PropertyDef {
    PropertyDef::new(name, PropertyKind::Bool)
        .default(Value::Bool(default))
        .before_realize()
}

/// QEMU 7.2's properties, each declared by the type QEMU declares it on.
fn type_infos() -> [TypeInfo; 2] {
    let x86 = TypeInfo::new(TYPE_X86_IOMMU)
        .parent(TYPE_DEVICE)
        .abstract_type(true)
        .implements(TYPE_SINGLETON)
        .description("the base of x86 IOMMUs (one per machine)")
        .class_property(
            PropertyDef::new("intremap", on_off_auto())
                .default(Value::Str("auto".into()))
                .description("on/off/auto")
                .before_realize(),
        )
        .class_property(flag("device-iotlb", false))
        .class_property(flag("pt", true));
    let intel = TypeInfo::new(TYPE_INTEL_IOMMU)
        .parent(TYPE_X86_IOMMU)
        .description("Intel VT-d DMA remapping (legacy mode)")
        .class_property(
            PropertyDef::new("version", PropertyKind::uint(32))
                .default(Value::UInt(0))
                .before_realize(),
        )
        .class_property(
            PropertyDef::new("eim", on_off_auto())
                .default(Value::Str("auto".into()))
                .description("on/off/auto")
                .before_realize(),
        )
        .class_property(flag("x-buggy-eim", false))
        .class_property(
            PropertyDef::new("aw-bits", PropertyKind::uint(8))
                .default(Value::UInt(u64::from(COMPAT_9_1_AW_BITS)))
                .before_realize(),
        )
        .class_property(flag("caching-mode", false))
        .class_property(flag("x-scalable-mode", false))
        .class_property(flag("snoop-control", false))
        .class_property(flag("x-pasid-mode", false))
        .class_property(flag("dma-drain", true))
        .class_property(flag("dma-translation", true))
        .realize(realize)
        .unrealize(unrealize)
        .reset(reset)
        .unplug(unplug);
    [x86, intel]
}

/// Registers the types and the `iommu-intel` VMState.
pub(crate) fn register_types() -> Result<(), GlueError> {
    for info in type_infos() {
        info.register()?;
    }
    register_device_model::<Dmar>(TYPE_INTEL_IOMMU, vmstate_description()?)?;
    Ok(())
}

fn on_off_auto_of(v: &Value) -> OnOffAuto {
    match v.as_str() {
        Some("on") => OnOffAuto::On,
        Some("off") => OnOffAuto::Off,
        _ => OnOffAuto::Auto,
    }
}

/// The model's properties from the object's (QEMU 7.2 has no `x-flts`,
/// `stale-tm` or `fs1gp`: their defaults hold).
fn props_of(obj: &Object) -> vmkit_qom::Result<IntelIommuProps> {
    let b = |name: &str| obj.get(name).map(|v| v.as_bool().unwrap_or(false));
    let aw = obj.get("aw-bits")?.as_integer().unwrap_or(0);
    Ok(IntelIommuProps {
        intremap: on_off_auto_of(&obj.get("intremap")?),
        device_iotlb: b("device-iotlb")?,
        pt: b("pt")?,
        eim: on_off_auto_of(&obj.get("eim")?),
        x_buggy_eim: b("x-buggy-eim")?,
        aw_bits: u8::try_from(aw).unwrap_or(0),
        caching_mode: b("caching-mode")?,
        x_scalable_mode: b("x-scalable-mode")?,
        snoop_control: b("snoop-control")?,
        x_pasid_mode: b("x-pasid-mode")?,
        dma_drain: b("dma-drain")?,
        dma_translation: b("dma-translation")?,
        ..IntelIommuProps::compat_9_1()
    })
}

/// QEMU 7.2's realize checks where its messages or rules differ from the
/// model's (which follows a later QEMU), in 7.2's order; the model's own
/// checks run afterwards. `irqchip` is always vmkit's (no KVM).
pub fn check_qemu72(p: &IntelIommuProps, irqchip: IrqChip) -> Result<(), String> {
    if irqchip == IrqChip::Kernel && p.intremap == OnOffAuto::On {
        return Err(IommuError::IntremapWithKernelIrqchip.to_string());
    }
    if p.x_pasid_mode && p.device_iotlb {
        return Err(IommuError::PasidDeviceIotlb.to_string());
    }
    let intremap = match p.intremap {
        OnOffAuto::On => true,
        OnOffAuto::Off => false,
        OnOffAuto::Auto => irqchip != IrqChip::Kernel,
    };
    if p.eim == OnOffAuto::On && !intremap {
        return Err(IommuError::EimWithoutIntremap.to_string());
    }
    // 7.2 emulates no x2APIC without KVM: EIM needs a split irqchip.
    if p.eim == OnOffAuto::On && !p.x_buggy_eim && !matches!(irqchip, IrqChip::Split { .. }) {
        return Err("eim=on requires accel=kvm,kernel-irqchip=split".into());
    }
    if !matches!(p.aw_bits, 39 | 48) {
        return Err("Supported values for aw-bits are: 39, 48".into());
    }
    if p.x_scalable_mode && !p.dma_drain {
        return Err(IommuError::ScalableModeWithoutDmaDrain.to_string());
    }
    if p.x_pasid_mode && !p.x_scalable_mode {
        return Err(IommuError::PasidWithoutScalableMode.to_string());
    }
    Ok(())
}

/// The PCI functions on `bus` the IOMMU would not cover (all but the
/// host bridge's), as `'type' at path` text.
fn uncovered_functions(bus: &PciRootBus, except: Option<&Object>) -> Vec<String> {
    bus.function_objects()
        .into_iter()
        .filter(|(_, o)| o.type_name() != TYPE_MCH && Some(o) != except)
        .map(|(d, o)| format!("{} ({})", o.canonical_path().unwrap_or_else(|| o.describe()), d))
        .collect()
}

fn realize(obj: &Object) -> vmkit_qom::Result<()> {
    let fail = |msg: String| vmkit_qom::Error::hook_message("realize", obj.describe(), msg);
    let bus = find_root_bus().ok_or_else(|| fail("intel-iommu needs a machine with a PCI host bridge (q35)".into()))?;
    if obj.is_hotplugged() && !bus.hotplug() {
        return Err(fail(NOT_PLUGGABLE.into()));
    }
    let props = props_of(obj)?;
    check_qemu72(&props, IrqChip::Userspace).map_err(&fail)?;
    let config = props.realize(IrqChip::Userspace).map_err(|e| fail(e.to_string()))?;
    let present = uncovered_functions(&bus, None);
    if !present.is_empty() {
        return Err(fail(format!(
            "intel-iommu must be created before the PCI devices it translates for; already on {}: {}",
            bus.name(),
            present.join(", ")
        )));
    }
    // The IOMMU reaches system memory (QEMU's address_space_memory); the
    // bus's DMA root is the board's `system` region.
    let dmar = Dmar::new(IntelIommu::new(config), obj, bus.dma_root()).map_err(|e| fail(e.to_string()))?;
    let window = dmar.window(obj).map_err(|e| fail(e.to_string()))?;
    bus.dma_root()
        .add_subregion(GuestAddr(DMAR_BASE), &window)
        .map_err(|e| fail(e.to_string()))?;
    bus.set_dma_hook(Some(dmar.hook()));
    obj.set_user_data(Arc::clone(&dmar) as Arc<dyn std::any::Any + Send + Sync>)?;
    Ok(())
}

/// The glue of a realized intel-iommu.
pub fn dmar_of(obj: &Object) -> Option<Arc<Dmar>> {
    obj.user_data()?.downcast::<Dmar>().ok()
}

/// The realized intel-iommu of the machine, if there is one.
pub fn active_dmar() -> Option<(Object, Arc<Dmar>)> {
    let obj = vmkit_qom::singleton_instance(TYPE_X86_IOMMU).ok().flatten()?;
    let dmar = dmar_of(&obj)?;
    Some((obj, dmar))
}

fn unrealize(obj: &Object) -> vmkit_qom::Result<()> {
    let Some(dmar) = dmar_of(obj) else { return Ok(()) };
    dmar.detach();
    if let Some(bus) = find_root_bus() {
        bus.set_dma_hook(None);
        if let Ok(window) = dmar.window(obj) {
            if window.container_region().is_some() {
                let _ = bus.dma_root().del_subregion(&window);
            }
        }
    }
    Ok(())
}

fn reset(obj: &Object) -> vmkit_qom::Result<()> {
    if let Some(dmar) = dmar_of(obj) {
        dmar.reset();
    }
    Ok(())
}

fn unplug(obj: &Object) -> vmkit_qom::Result<()> {
    if !obj.is_realized() {
        return Ok(());
    }
    let fail = |msg: String| vmkit_qom::Error::hook_message("unplug", obj.describe(), msg);
    let Some(bus) = find_root_bus() else { return Ok(()) };
    if !bus.hotplug() {
        return Err(fail(format!(
            "Device '{}' does not support hotplugging",
            obj.type_name()
        )));
    }
    let covered = uncovered_functions(&bus, Some(obj));
    if !covered.is_empty() {
        return Err(fail(format!(
            "intel-iommu still translates the DMA of {}: unplug them first",
            covered.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> IntelIommuProps {
        IntelIommuProps::compat_9_1()
    }

    #[test]
    fn qemu72_messages_and_order() {
        let u = IrqChip::Userspace;
        assert_eq!(check_qemu72(&props(), u), Ok(()));
        let aw = IntelIommuProps { aw_bits: 40, ..props() };
        assert_eq!(
            check_qemu72(&aw, u).err().unwrap_or_default(),
            "Supported values for aw-bits are: 39, 48"
        );
        let eim = IntelIommuProps {
            eim: OnOffAuto::On,
            ..props()
        };
        assert_eq!(
            check_qemu72(&eim, u).err().unwrap_or_default(),
            "eim=on requires accel=kvm,kernel-irqchip=split"
        );
        assert_eq!(
            check_qemu72(
                &IntelIommuProps {
                    x_buggy_eim: true,
                    ..eim.clone()
                },
                u
            ),
            Ok(())
        );
        // eim without intremap comes before aw-bits, as in QEMU 7.2.
        let both = IntelIommuProps {
            intremap: OnOffAuto::Off,
            aw_bits: 40,
            ..eim
        };
        assert_eq!(
            check_qemu72(&both, u).err().unwrap_or_default(),
            "eim=on cannot be selected without intremap=on"
        );
        // aw-bits before PASID without scalable mode.
        let pasid = IntelIommuProps {
            x_pasid_mode: true,
            aw_bits: 40,
            ..props()
        };
        assert_eq!(
            check_qemu72(&pasid, u).err().unwrap_or_default(),
            "Supported values for aw-bits are: 39, 48"
        );
        let pasid_iotlb = IntelIommuProps {
            device_iotlb: true,
            ..pasid
        };
        assert_eq!(
            check_qemu72(&pasid_iotlb, u).err().unwrap_or_default(),
            "PASID based device IOTLB is not supported"
        );
        let drain = IntelIommuProps {
            x_scalable_mode: true,
            dma_drain: false,
            ..props()
        };
        assert_eq!(
            check_qemu72(&drain, u).err().unwrap_or_default(),
            "Need to set dma_drain for scalable mode"
        );
    }
}
