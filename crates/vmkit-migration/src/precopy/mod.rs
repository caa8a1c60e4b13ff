//! Precopy live migration, the source side: the page loop over a
//! [`SaveSet`](crate::savevm::SaveSet) while the guest keeps writing.
//!
//! * [`engine`]: [`Precopy`], one run (setup, passes, switchover, stop,
//!   final pass, device state, EOF, trailer), with [`Checkpoint`]s for
//!   observers.
//! * [`params`]: [`PrecopyParams`], the policy as plain data.
//! * [`control`]: [`PrecopyControl`], shared with the run's owner:
//!   parameters changeable while it runs, cancel, progress.
//! * [`stats`]: [`RamStats`] (named as QEMU's `MigrationInfo.ram`),
//!   [`PassRecord`], [`PrecopyPhase`], [`PrecopySnapshot`], and the
//!   switchover's wall-clock [`SwitchoverStamps`].
//! * [`limiter`]: [`BandwidthLimiter`], pacing on an injected clock.
//! * [`switchover`]: QEMU's switchover rule and expected downtime.
//! * [`error`]: the run's error, [`PrecopyError`].
//! * [`fault`]: fault injection ([`FaultPlan`]: cut, corrupt, drop or
//!   delay the stream at an offset, a pass or a section).
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_memory::RamBlock;
//! use vmkit_migration::precopy::{Precopy, PrecopyControl, PrecopyParams};
//! use vmkit_migration::savevm::{SaveSet, restore};
//!
//! let ram = RamBlock::anonymous("pc.ram", 1 << 20)?;
//! ram.write(0x1000, b"hello")?;
//! let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], Vec::new());
//! let control = Arc::new(PrecopyControl::new(PrecopyParams::default()));
//! let mut stream = Vec::new();
//! let outcome = Precopy::new(&set, Arc::clone(&control)).run(&mut stream, || Ok(()))?;
//! assert_eq!(outcome.snapshot.phase.as_str(), "completed");
//!
//! let fresh = RamBlock::anonymous("pc.ram", 1 << 20)?;
//! restore(&SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&fresh)], Vec::new()), stream.as_slice(), &Default::default())?;
//! assert_eq!(fresh.checksum_all()?, ram.checksum_all()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod control;
mod dirty_log;
pub mod engine;
pub mod error;
pub mod fault;
pub mod limiter;
pub mod params;
pub mod stats;
pub mod switchover;

pub use control::PrecopyControl;
pub use engine::{BATCH_BYTES, Checkpoint, Precopy, PrecopyOutcome, StopError, WallClock};
pub use error::PrecopyError;
pub use fault::{Fault, FaultAction, FaultPlan, FaultReport, FaultTrigger};
pub use limiter::BandwidthLimiter;
pub use params::{DEFAULT_DOWNTIME_LIMIT, DEFAULT_MAX_BANDWIDTH, DEFAULT_MAX_PASSES, PrecopyParams};
pub use stats::{PassRecord, PrecopyPhase, PrecopySnapshot, RamStats, SwitchoverStamps};
pub use switchover::SwitchoverReason;
