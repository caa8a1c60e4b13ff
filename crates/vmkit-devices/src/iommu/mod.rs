//! The Intel VT-d IOMMU (`intel-iommu`) as plain data: QEMU's register
//! file and protocols, legacy-mode DMA translation with its caches and
//! faults, the invalidation queue, and the "iommu-intel" migration state.
//! The memory and object glue (the MMIO window at 0xfed90000, each PCI
//! device's address space) is the owner's: it forwards register accesses
//! and DMA translations here and carries out the returned [`Effect`]s.
//!
//! * [`props`]: [`IntelIommuProps`] with QEMU's names and defaults,
//!   realized into an [`IommuConfig`] with QEMU's checks and messages
//!   (`x-scalable-mode=on` is refused: legacy translation only).
//! * [`regs`]: register offsets ([`Reg`]), bit sets, CAP / ECAP values.
//! * [`device`]: [`IntelIommu`]: register reads and writes, the GCMD /
//!   GSTS protocol, register and queued invalidation, fault recording and
//!   events, [`IntelIommu::translate`].
//! * [`tables`]: root and context entries, the second-level page walk.
//! * [`cache`]: the IOTLB and the context cache, and their invalidation scopes.
//! * [`queue`]: invalidation descriptors and why a queue stops.
//! * [`fault`]: fault reasons and what reporting a fault did.
//! * [`state`]: the "iommu-intel" VMState and [`IntelIommuDevice`], the
//!   model under the device-state contract.
//! * [`testing`]: [`testing::TableBuilder`], translation structures in
//!   guest memory for tests.
//! * [`error`]: the refusals, [`IommuError`].

pub mod cache;
mod csr;
pub mod device;
pub mod error;
pub mod fault;
pub mod props;
pub mod queue;
pub mod regs;
pub mod state;
pub mod tables;
pub mod testing;

pub use cache::{ContextScope, IotlbScope};
pub use device::{Effect, IntelIommu, Mapping, Translation, TranslationStats};
pub use error::IommuError;
pub use fault::{Access, Fault, FaultReason, FaultRecord, FaultReport};
pub use props::{AwBits, IntelIommuProps, IommuConfig, IrqChip, OnOffAuto};
pub use queue::QueueError;
pub use regs::Reg;
pub use state::{IntelIommuDevice, IntelIommuState};
pub use tables::{ContextEntry, Perm, SourceId, TranslationType};
