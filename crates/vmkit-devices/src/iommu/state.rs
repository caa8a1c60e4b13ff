//! Migration: the "iommu-intel" section laid out as QEMU's (version 1,
//! `MIG_PRI_IOMMU`), the typed state it carries, and the device-state
//! contract. Caches do not migrate; the derived state QEMU recomputes in
//! `post_load` (which address space each device uses) comes back as
//! [`Effect`]s.

use std::sync::{Arc, Mutex, PoisonError};

use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::vmstate::{
    ArrayLen, FieldKind, MigrationPriority, VmStateDescription, VmStateError, VmStruct, VmValue,
};

use super::device::{Effect, IntelIommu, Migrated};
use super::regs::{IQA_QS, REG_SIZE};

/// The section name.
pub const VMSTATE_NAME: &str = "iommu-intel";

/// The "iommu-intel" description: QEMU's fields in QEMU's order.
pub fn vmstate_description() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder(VMSTATE_NAME)
        .version(1)
        .minimum_version(1)
        .priority(MigrationPriority::Iommu)
        .simple("root", FieldKind::U64)
        .simple("intr_root", FieldKind::U64)
        .simple("iq", FieldKind::U64)
        .simple("intr_size", FieldKind::U32)
        .simple("iq_head", FieldKind::U16)
        .simple("iq_tail", FieldKind::U16)
        .simple("iq_size", FieldKind::U16)
        .simple("next_frcd_reg", FieldKind::U16)
        .simple(
            "csr",
            FieldKind::Array {
                elem: Box::new(FieldKind::U8),
                len: ArrayLen::Fixed(REG_SIZE as u32),
            },
        )
        .simple("iq_last_desc_type", FieldKind::U8)
        // Formerly root_extended, obsolete since VT-d 3.0.
        .simple("unused", FieldKind::Unused { len: 1 })
        .simple("dmar_enabled", FieldKind::Bool)
        .simple("qi_enabled", FieldKind::Bool)
        .simple("intr_enabled", FieldKind::Bool)
        .simple("intr_eime", FieldKind::Bool)
        .build()
}

/// The migrated state of an intel-iommu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntelIommuState {
    /// The latched root table address.
    pub root: u64,
    /// The latched interrupt remapping table address.
    pub intr_root: u64,
    /// The latched invalidation queue address.
    pub iq: u64,
    /// Interrupt remapping table entries.
    pub intr_size: u32,
    /// Invalidation queue head index.
    pub iq_head: u16,
    /// Invalidation queue tail index.
    pub iq_tail: u16,
    /// Invalidation queue descriptors.
    pub iq_size: u16,
    /// The next fault recording register.
    pub next_frcd_reg: u16,
    /// The register values.
    pub csr: Box<[u8; REG_SIZE]>,
    /// The type of the last descriptor processed.
    pub iq_last_desc_type: u8,
    /// DMA remapping on.
    pub dmar_enabled: bool,
    /// Queued invalidation on.
    pub qi_enabled: bool,
    /// Interrupt remapping on.
    pub intr_enabled: bool,
    /// Extended interrupt mode latched.
    pub intr_eime: bool,
}

impl MigrationState for IntelIommuState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new()
            .with("root", self.root.into())
            .with("intr_root", self.intr_root.into())
            .with("iq", self.iq.into())
            .with("intr_size", self.intr_size.into())
            .with("iq_head", self.iq_head.into())
            .with("iq_tail", self.iq_tail.into())
            .with("iq_size", self.iq_size.into())
            .with("next_frcd_reg", self.next_frcd_reg.into())
            .with(
                "csr",
                VmValue::Array(self.csr.iter().map(|&b| VmValue::from(b)).collect()),
            )
            .with("iq_last_desc_type", self.iq_last_desc_type.into())
            .with("dmar_enabled", self.dmar_enabled.into())
            .with("qi_enabled", self.qi_enabled.into())
            .with("intr_enabled", self.intr_enabled.into())
            .with("intr_eime", self.intr_eime.into())
    }

    fn from_vmstate(s: &VmStruct) -> Result<Self, StateError> {
        let elems = s
            .get("csr")
            .and_then(VmValue::as_array)
            .ok_or_else(|| StateError::field("csr", "missing"))?;
        if elems.len() != REG_SIZE {
            return Err(StateError::field(
                "csr",
                format!("{} bytes, not {REG_SIZE}", elems.len()),
            ));
        }
        let mut csr = Box::new([0u8; REG_SIZE]);
        for (i, (slot, v)) in csr.iter_mut().zip(elems).enumerate() {
            *slot = v
                .as_u64()
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(|| StateError::field(format!("csr[{i}]"), format!("{v:?} is not a uint8")))?;
        }
        Ok(IntelIommuState {
            root: s.field("root")?,
            intr_root: s.field("intr_root")?,
            iq: s.field("iq")?,
            intr_size: s.field("intr_size")?,
            iq_head: s.field("iq_head")?,
            iq_tail: s.field("iq_tail")?,
            iq_size: s.field("iq_size")?,
            next_frcd_reg: s.field("next_frcd_reg")?,
            csr,
            iq_last_desc_type: s.field("iq_last_desc_type")?,
            dmar_enabled: s.field("dmar_enabled")?,
            qi_enabled: s.field("qi_enabled")?,
            intr_enabled: s.field("intr_enabled")?,
            intr_eime: s.field("intr_eime")?,
        })
    }
}

impl IntelIommu {
    /// The state a migration carries.
    pub fn save_state(&self) -> IntelIommuState {
        let m = self.migrated();
        IntelIommuState {
            root: m.root,
            intr_root: m.intr_root,
            iq: m.iq,
            intr_size: m.intr_size,
            iq_head: m.iq_head,
            iq_tail: m.iq_tail,
            iq_size: m.iq_size,
            next_frcd_reg: m.next_frcd_reg,
            csr: Box::new(m.csr),
            iq_last_desc_type: m.iq_last_desc_type,
            dmar_enabled: m.dmar_enabled,
            qi_enabled: m.qi_enabled,
            intr_enabled: m.intr_enabled,
            intr_eime: m.intr_eime,
        }
    }

    /// Whether `state` can be loaded into this device. QEMU takes any
    /// bytes; this refuses what would leave the model inconsistent: a
    /// register file whose VER, CAP or ECAP is not this device's (the two
    /// sides were configured differently), a fault record index past the
    /// one record, or an enabled queue whose size or head is impossible.
    pub fn check_state(&self, state: &IntelIommuState) -> Result<(), StateError> {
        for (reg, ours, width) in self.identity_registers() {
            let at = reg.offset();
            let mut theirs = 0u64;
            for i in 0..width {
                theirs |= u64::from(state.csr.get(at + i).copied().unwrap_or(0)) << (8 * i);
            }
            if theirs != ours {
                return Err(StateError::field(
                    "csr",
                    format!(
                        "{reg:?} is {theirs:#x}, this device's is {ours:#x}: the two sides' intel-iommu properties differ"
                    ),
                ));
            }
        }
        if state.next_frcd_reg != 0 {
            return Err(StateError::field(
                "next_frcd_reg",
                format!("{} is past the single fault recording register", state.next_frcd_reg),
            ));
        }
        if state.qi_enabled {
            let valid = (0..=IQA_QS).any(|qs| u32::from(state.iq_size) == 256 << qs);
            if !valid {
                return Err(StateError::field(
                    "iq_size",
                    format!("{} is not a queue size (256 to 32768, a power of two)", state.iq_size),
                ));
            }
            if state.iq_head >= state.iq_size {
                return Err(StateError::field(
                    "iq_head",
                    format!("{} is past the queue of {}", state.iq_head, state.iq_size),
                ));
            }
        }
        Ok(())
    }

    /// Installs a checked state; returns what the owner must redo (QEMU's
    /// `post_load`: switch every device's address space).
    pub fn load_state(&mut self, state: IntelIommuState) -> Result<Vec<Effect>, StateError> {
        self.check_state(&state)?;
        Ok(self.install(Migrated {
            root: state.root,
            intr_root: state.intr_root,
            iq: state.iq,
            intr_size: state.intr_size,
            iq_head: state.iq_head,
            iq_tail: state.iq_tail,
            iq_size: state.iq_size,
            next_frcd_reg: state.next_frcd_reg,
            csr: *state.csr,
            iq_last_desc_type: state.iq_last_desc_type,
            dmar_enabled: state.dmar_enabled,
            qi_enabled: state.qi_enabled,
            intr_enabled: state.intr_enabled,
            intr_eime: state.intr_eime,
        }))
    }
}

/// An [`IntelIommu`] behind a lock, as the machine holds it, giving and
/// taking its state through [`DeviceState`]. The effects of a load wait
/// in [`take_effects`](Self::take_effects).
#[derive(Debug)]
pub struct IntelIommuDevice {
    vmsd: Arc<VmStateDescription>,
    model: Mutex<IntelIommu>,
    effects: Mutex<Vec<Effect>>,
}

impl IntelIommuDevice {
    /// Wraps `model`.
    pub fn new(model: IntelIommu) -> Result<IntelIommuDevice, VmStateError> {
        Ok(IntelIommuDevice {
            vmsd: vmstate_description()?,
            model: Mutex::new(model),
            effects: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` on the model.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut IntelIommu) -> R) -> R {
        f(&mut self.model.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The effects of the last load, once.
    pub fn take_effects(&self) -> Vec<Effect> {
        std::mem::take(&mut *self.effects.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl DeviceState for IntelIommuDevice {
    type State = IntelIommuState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<IntelIommuState, StateError> {
        Ok(self.with(|m| m.save_state()))
    }

    fn check_state(&self, state: &IntelIommuState, _version_id: u32) -> Result<(), StateError> {
        self.with(|m| m.check_state(state))
    }

    fn load_state(&self, state: IntelIommuState, _version_id: u32) -> Result<(), StateError> {
        let fx = self.with(|m| m.load_state(state))?;
        *self.effects.lock().unwrap_or_else(PoisonError::into_inner) = fx;
        Ok(())
    }
}
