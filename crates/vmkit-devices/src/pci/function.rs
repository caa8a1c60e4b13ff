//! What a PCI function's model is to the machine: [`PciFunction`], the
//! accesses the glue forwards to it, and [`PciEffects`], what an access
//! asks the machine to do next.

use super::bar::BarIndex;
use super::config::{ConfigEffects, ConfigSpace};
use super::error::PciError;
use super::msix::MsiMessage;
use super::state::PCI_NUM_PINS;

/// What a PCI-level operation (a configuration or BAR access, a reset, a
/// load) asks the machine to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciEffects {
    /// BAR moves (removals first), bus mastering, INTx disable.
    pub config: ConfigEffects,
    /// MSI-X messages to write through the function's bus-master address
    /// space.
    pub messages: Vec<MsiMessage>,
    /// The new level of INTA as the bus sees it (after INTx disable).
    pub intx: Option<bool>,
}

impl PciEffects {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty() && self.messages.is_empty() && self.intx.is_none()
    }

    /// Only configuration effects.
    pub fn from_config(config: ConfigEffects) -> PciEffects {
        PciEffects {
            config,
            ..PciEffects::default()
        }
    }
}

/// A PCI function's model as the machine reaches it: configuration space
/// accesses (from 0xCF8/0xCFC or ECAM), accesses to the regions of its
/// BARs, and reset. Each returns what the machine must do next; the glue
/// that owns the model (behind a lock) maps and unmaps BARs, switches bus
/// mastering and sends MSI messages. A model never touches guest memory
/// or the address spaces itself.
pub trait PciFunction: Send + 'static {
    /// The configuration space (identity, BARs and where they are mapped).
    fn config(&self) -> &ConfigSpace;

    /// The configuration space, for the device side (the machine sets the
    /// multi-function bit of a function plugged with `multifunction=on`).
    fn config_mut(&mut self) -> &mut ConfigSpace;

    /// A guest reads `size` (1, 2 or 4) bytes of configuration space.
    fn config_read(&mut self, offset: u16, size: u8) -> Result<u32, PciError> {
        self.config().read(offset, size)
    }

    /// A guest writes `size` bytes of configuration space.
    fn config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<PciEffects, PciError>;

    /// A guest reads `size` (1, 2, 4 or 8) bytes at `offset` in the region
    /// of BAR `bar`.
    fn bar_read(&mut self, bar: BarIndex, offset: u64, size: u8) -> Result<u64, PciError>;

    /// A guest writes the low `size` bytes of `value` at `offset` in the
    /// region of BAR `bar`.
    fn bar_write(&mut self, bar: BarIndex, offset: u64, size: u8, value: u64) -> Result<PciEffects, PciError>;

    /// The device reset (a machine reset, or a hot-plug): the model's own
    /// state, then the generic part of its configuration space.
    fn reset(&mut self) -> PciEffects;

    /// INTA–INTD as the device drives them (QEMU's `irq_state`).
    fn irq_levels(&self) -> [bool; PCI_NUM_PINS] {
        [false; PCI_NUM_PINS]
    }
}
