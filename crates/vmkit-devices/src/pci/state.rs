//! The generic part of a PCI function's migration state, as QEMU lays it
//! out: the `PCIDevice` VMState (version 2) every PCI device nests first,
//! and the `msix` VMState of a function with MSI-X.
//!
//! QEMU describes the configuration space with two fields both named
//! `config` — 256 bytes for a conventional function, 4 KiB for a PCI
//! Express one — each with a test that the function is (not) Express, and
//! its VMDESCRIPTION trailer tells same-named fields apart by their
//! position (`config[0]`, `config[1]`). The description here has the same
//! two fields under those trailer names, with the same tests, so the
//! trailer and the bytes are QEMU's.

use std::sync::Arc;

use vmkit_migration::device_state::{MigrationState, StateError};
use vmkit_migration::vmstate::{Field, FieldKind, VmStateDescription, VmStruct, VmValue};

use super::config::{ConfigEffects, ConfigKind, ConfigSpace};
use super::error::PciError;
use super::msix::{ENTRY_SIZE, Msix};
use super::regs::{HeaderReg, Status};

/// The name of QEMU's `vmstate_pci_device`.
pub const PCI_DEVICE_VMSD_NAME: &str = "PCIDevice";
/// Its version (`irq_state` appeared in 2); QEMU loads 1 and 2.
pub const PCI_DEVICE_VERSION: i32 = 2;
/// INTA–INTD.
pub const PCI_NUM_PINS: usize = 4;
/// The trailer name of the conventional configuration space field.
pub const CONFIG_FIELD_CONVENTIONAL: &str = "config[0]";
/// The trailer name of the PCI Express configuration space field.
pub const CONFIG_FIELD_EXPRESS: &str = "config[1]";
/// The name of QEMU's `vmstate_msix`.
pub const MSIX_VMSD_NAME: &str = "msix";

fn described(
    r: Result<Arc<VmStateDescription>, vmkit_migration::vmstate::VmStateError>,
) -> Result<Arc<VmStateDescription>, PciError> {
    r.map_err(|e| PciError::Description(e.to_string()))
}

/// The name of the configuration field a space of `kind` is carried in.
pub fn config_field(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Conventional => CONFIG_FIELD_CONVENTIONAL,
        ConfigKind::Express => CONFIG_FIELD_EXPRESS,
    }
}

/// QEMU's `vmstate_pci_device` ("PCIDevice", v2, loads from 1) for a
/// function whose configuration space is `kind`: `version_id` (QEMU's
/// `int32 le` codec: a be32 that must be 0..=2 on load), the configuration
/// bytes (QEMU's `pci config`) in the field of its size, and since version
/// 2 the four INTx levels as be32 words (QEMU's `pci irq state`, 16 bytes).
pub fn pci_device_vmsd(kind: ConfigKind) -> Result<Arc<VmStateDescription>, PciError> {
    let is_express = kind == ConfigKind::Express;
    described(
        VmStateDescription::builder(PCI_DEVICE_VMSD_NAME)
            .version(PCI_DEVICE_VERSION as u32)
            .minimum_version(1)
            .field(Field::new("version_id", FieldKind::I32).info("int32 le"))
            .field(
                Field::new(
                    CONFIG_FIELD_CONVENTIONAL,
                    FieldKind::Buffer {
                        len: ConfigKind::Conventional.size() as u32,
                    },
                )
                .info("pci config")
                .exists_if(move |_, _| Ok(!is_express)),
            )
            .field(
                Field::new(
                    CONFIG_FIELD_EXPRESS,
                    FieldKind::Buffer {
                        len: ConfigKind::Express.size() as u32,
                    },
                )
                .info("pci config")
                .exists_if(move |_, _| Ok(is_express)),
            )
            .field(
                Field::new(
                    "irq_state",
                    FieldKind::Buffer {
                        len: (PCI_NUM_PINS * 4) as u32,
                    },
                )
                .info("pci irq state")
                .since(2),
            )
            .build(),
    )
}

/// Bytes QEMU's `msix` VMState carries for `vectors` vectors: the table,
/// then one pending bit per vector in whole bytes.
pub fn msix_state_len(vectors: u16) -> u32 {
    u32::from(vectors) * ENTRY_SIZE as u32 + u32::from(vectors).div_ceil(8)
}

/// QEMU's `vmstate_msix` ("msix", version 0): one field of QEMU's
/// `msix state` codec, the table then the pending bits (nothing for a
/// function without MSI-X).
pub fn msix_vmsd(vectors: u16) -> Result<Arc<VmStateDescription>, PciError> {
    described(
        VmStateDescription::builder(MSIX_VMSD_NAME)
            .field(
                Field::new(
                    "msix",
                    FieldKind::Buffer {
                        len: msix_state_len(vectors),
                    },
                )
                .info("msix state"),
            )
            .build(),
    )
}

/// The `PCIDevice` part of a function's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDeviceState {
    /// `PCIDevice.version_id` (QEMU loads 0 to 2).
    pub version_id: i32,
    /// The configuration space, with Status.INTERRUPT clear (it follows
    /// `irq_state`, as QEMU saves it).
    pub config: Vec<u8>,
    /// INTA–INTD levels (each must load as 0 or 1).
    pub irq_state: [i32; PCI_NUM_PINS],
}

impl PciDeviceState {
    /// The state of a function with configuration `config` and INTx
    /// levels `irq`, as QEMU saves it: Status.INTERRUPT is cleared in the
    /// saved bytes (it is implied by `irq_state`).
    pub fn capture(config: &ConfigSpace, irq: [bool; PCI_NUM_PINS]) -> PciDeviceState {
        let mut bytes = config.bytes().to_vec();
        bytes[HeaderReg::Status.offset()] &= !(Status::INTERRUPT.bits() as u8);
        PciDeviceState {
            version_id: PCI_DEVICE_VERSION,
            config: bytes,
            irq_state: irq.map(i32::from),
        }
    }

    /// The INTx levels as booleans.
    pub fn irq_levels(&self) -> [bool; PCI_NUM_PINS] {
        self.irq_state.map(|v| v == 1)
    }

    /// Whether this state can be loaded into `config`, with QEMU's checks:
    /// `version_id` within 0..=2 (`int32 le`), every INTx level 0 or 1,
    /// and "Bad config data" where a byte a migration must agree on
    /// differs (another device model). Changes nothing. Errors name the
    /// field below `prefix` (the struct field holding this part).
    pub fn check(&self, config: &ConfigSpace, prefix: &str) -> Result<(), StateError> {
        if !(0..=PCI_DEVICE_VERSION).contains(&self.version_id) {
            return Err(StateError::field(
                format!("{prefix}/version_id"),
                format!(
                    "Invalid value {} expecting positive value <= {PCI_DEVICE_VERSION}",
                    self.version_id
                ),
            ));
        }
        for (i, &level) in self.irq_state.iter().enumerate() {
            if !matches!(level, 0 | 1) {
                return Err(StateError::field(
                    format!("{prefix}/irq_state[{i}]"),
                    format!("irq state {level}: must be 0 or 1."),
                ));
            }
        }
        let mut probe = config.clone();
        probe
            .load(&self.config)
            .map(|_| ())
            .map_err(|e| StateError::field(format!("{prefix}/{}", config_field(config.kind())), e.to_string()))
    }

    /// Loads this state into `config` (after [`PciDeviceState::check`]):
    /// the bytes, then Status.INTERRUPT from INTA–INTD as QEMU's load
    /// does. The BAR moves and bus-mastering change come back.
    pub fn apply(&self, config: &mut ConfigSpace, prefix: &str) -> Result<ConfigEffects, StateError> {
        self.check(config, prefix)?;
        let effects = config
            .load(&self.config)
            .map_err(|e| StateError::field(format!("{prefix}/{}", config_field(config.kind())), e.to_string()))?;
        config.set_status(Status::INTERRUPT, self.irq_state.contains(&1));
        Ok(effects)
    }
}

impl MigrationState for PciDeviceState {
    fn to_vmstate(&self) -> VmStruct {
        let irq: Vec<u8> = self.irq_state.iter().flat_map(|v| v.to_be_bytes()).collect();
        let name = if self.config.len() == ConfigKind::Express.size() {
            CONFIG_FIELD_EXPRESS
        } else {
            CONFIG_FIELD_CONVENTIONAL
        };
        VmStruct::new()
            .with("version_id", self.version_id.into())
            .with(name, self.config.clone().into())
            .with("irq_state", irq.into())
    }

    fn from_vmstate(s: &VmStruct) -> Result<PciDeviceState, StateError> {
        let config = match (s.get(CONFIG_FIELD_EXPRESS), s.get(CONFIG_FIELD_CONVENTIONAL)) {
            (Some(_), _) => s.field(CONFIG_FIELD_EXPRESS)?,
            (None, _) => s.field(CONFIG_FIELD_CONVENTIONAL)?,
        };
        // A version 1 stream has no irq_state: every pin low.
        let mut irq_state = [0i32; PCI_NUM_PINS];
        if let Some(v) = s.get("irq_state") {
            let bytes = v
                .as_bytes()
                .ok_or_else(|| StateError::field("irq_state", "not bytes"))?;
            if bytes.len() != PCI_NUM_PINS * 4 {
                return Err(StateError::field(
                    "irq_state",
                    format!("{} bytes, not {}", bytes.len(), PCI_NUM_PINS * 4),
                ));
            }
            for (slot, word) in irq_state.iter_mut().zip(bytes.chunks_exact(4)) {
                *slot = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            }
        }
        Ok(PciDeviceState {
            version_id: s.field("version_id")?,
            config,
            irq_state,
        })
    }
}

/// The `msix` part of a function's state: its table and pending bits as
/// QEMU's `msix state` codec lays them out, back to back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsixState {
    /// The table (16 bytes per vector) followed by the pending bits (one
    /// per vector, whole bytes).
    pub bytes: Vec<u8>,
}

impl MsixState {
    /// The state of `msix` (or of a function without MSI-X: nothing).
    pub fn capture(msix: Option<&Msix>) -> MsixState {
        MsixState {
            bytes: msix.map(|m| m.save_raw()).unwrap_or_default(),
        }
    }
}

impl MigrationState for MsixState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new().with("msix", VmValue::Bytes(self.bytes.clone()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<MsixState, StateError> {
        Ok(MsixState {
            bytes: s.field("msix")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::Identity;
    use vmkit_migration::vmstate::{VmReader, decode, encode};

    fn space(kind: ConfigKind) -> ConfigSpace {
        ConfigSpace::new(
            kind,
            Identity {
                vendor_id: 0x1b36,
                device_id: 0x0005,
                revision: 0,
                class_code: 0x00ff00,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                header_type: 0,
                interrupt_pin: 1,
            },
        )
    }

    #[test]
    fn the_wire_is_qemus() -> Result<(), Box<dyn std::error::Error>> {
        for kind in [ConfigKind::Conventional, ConfigKind::Express] {
            let vmsd = pci_device_vmsd(kind)?;
            let mut cfg = space(kind);
            cfg.set_status(Status::INTERRUPT, true);
            let state = PciDeviceState::capture(&cfg, [true, false, false, false]);
            assert_eq!(state.config[6] & 0x8, 0, "Status.INTERRUPT travels as irq_state");
            let mut out = Vec::new();
            encode(&vmsd, &mut state.to_vmstate(), &mut out, 0)?;
            assert_eq!(out.len(), 4 + kind.size() + 16);
            assert_eq!(&out[..4], &[0, 0, 0, 2]);
            assert_eq!(
                &out[4 + kind.size()..],
                &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            );
            let back = decode(&vmsd, 2, &mut VmReader::new(&out[..], 0))?;
            assert_eq!(PciDeviceState::from_vmstate(&back)?, state);
        }
        Ok(())
    }

    #[test]
    fn qemus_load_checks() -> Result<(), Box<dyn std::error::Error>> {
        let mut cfg = space(ConfigKind::Conventional);
        let good = PciDeviceState::capture(&cfg, [false; 4]);
        assert!(good.check(&cfg, "parent_obj").is_ok());
        let bad_version = PciDeviceState {
            version_id: 3,
            ..good.clone()
        };
        let e = bad_version.check(&cfg, "parent_obj").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("parent_obj/version_id")));
        let bad_irq = PciDeviceState {
            irq_state: [0, 2, 0, 0],
            ..good.clone()
        };
        let e = bad_irq
            .check(&cfg, "p")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("p/irq_state[1]") && e.contains("irq state 2: must be 0 or 1."),
            "{e}"
        );
        let mut other = good.clone();
        other.config[2] = 0x06;
        let e = other.check(&cfg, "p").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("p/config[0]") && e.contains("Bad config data at 0x2"), "{e}");
        let mut level = good.clone();
        level.irq_state[0] = 1;
        level.apply(&mut cfg, "p")?;
        assert!(cfg.status().contains(Status::INTERRUPT));
        Ok(())
    }
}
