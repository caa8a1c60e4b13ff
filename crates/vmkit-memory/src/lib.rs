//! # vmkit-memory: guest memory
//!
//! RAM blocks and their host mappings (anonymous, memfd, file); memory
//! regions (RAM, ROM, MMIO, alias, container, IOMMU) in trees with
//! priorities; address spaces that render flat views and dispatch sized
//! accesses and DMA through them; dirty tracking with one bitmap per client;
//! dirty-rate measurement; memory backends as QOM objects; and the workload
//! engine that stands in for a running guest.
//!
//! ```
//! use vmkit_memory::{DirtyClient, RamBlock};
//!
//! let ram = RamBlock::anonymous("pc.ram", 1 << 20)?;
//! ram.dirty_log().log_start(DirtyClient::Migration)?;
//! ram.write(0x1ff8, &[0xab; 16])?;                  // straddles pages 1 and 2
//! let dirty = ram.dirty_log().sync(DirtyClient::Migration)?;
//! assert_eq!(dirty.ranges().collect::<Vec<_>>(), vec![(1, 2)]);
//! assert!(ram.is_zero_page(0)? && !ram.is_zero_page(1)?);
//! # Ok::<(), vmkit_memory::Error>(())
//! ```
//!
//! `unsafe` code is confined to [`host`], whose documentation states the
//! concurrency model of guest memory.

#![deny(unsafe_code)]

pub mod addr;
mod address_space;
mod backend;
mod board;
pub mod checksum;
pub mod clock;
pub mod dirty;
pub mod dirty_rate;
mod dispatch;
pub mod error;
mod flatview;
// The one module allowed `unsafe`; every block in it has a `SAFETY:` comment.
#[allow(unsafe_code)]
pub mod host;
mod mtree;
pub mod ops;
pub mod ram;
mod region;
mod topology;
pub mod workload;

pub use addr::{AddrRange, GuestAddr};
pub use address_space::{AccessStats, AddressSpace, MemoryListener, PinnedSpace};
pub use backend::{
    TYPE_MEMORY_BACKEND, TYPE_MEMORY_BACKEND_FILE, TYPE_MEMORY_BACKEND_MEMFD, TYPE_MEMORY_BACKEND_RAM,
    backend_ram_block, register_types,
};
pub use board::{FOUR_GIB, PcMemory, q35_lowmem_limit};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dirty::{DirtyBitmap, DirtyClient, DirtyLog, DirtyPages};
pub use dirty_rate::{
    BlockDirtyRate, DirtyRateMeasurement, DirtyRateReport, measure_dirty_rate, measure_dirty_rate_with_clock,
};
pub use dispatch::{read_adjusted, write_adjusted};
pub use error::{Error, Result};
pub use flatview::{FlatRange, FlatView};
pub use host::{GuestIoSlice, HostMapping, MapOptions};
pub use mtree::{mtree, mtree_flat};
pub use ops::{AccessConstraints, Endianness, IommuMapping, IommuOps, IommuPerm, IommuTlbEntry, MmioOps};
pub use ram::{DEFAULT_PAGE_SIZE, RamBacking, RamBlock, RamOptions};
pub use region::{FULL_SPACE, MemoryRegion, RegionKind};
pub use topology::{address_spaces, begin, commit, transaction};
pub use workload::{AccessPattern, OpSequence, ThreadStats, Workload, WorkloadConfig, WorkloadOp, WorkloadStats};
