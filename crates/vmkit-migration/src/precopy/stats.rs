//! What a precopy run reports: running RAM statistics named as QEMU's
//! `MigrationInfo.ram`, the per-pass history, and the phase.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::switchover::SwitchoverReason;

/// Running RAM statistics, named as the fields of QEMU's `MigrationStats`
/// (`query-migrate`'s `ram`): byte counts unless noted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RamStats {
    /// `transferred`: stream bytes written so far (all records).
    pub transferred: u64,
    /// `remaining`: dirty bytes not yet sent (as of the last sync, less
    /// what was sent since).
    pub remaining: u64,
    /// `total`: guest RAM bytes of every block.
    pub total: u64,
    /// `duplicate`: zero pages sent (as a flag and one byte).
    pub duplicate: u64,
    /// `normal`: pages sent whole.
    pub normal: u64,
    /// `normal-bytes`: `normal` × `page-size`.
    pub normal_bytes: u64,
    /// `dirty-sync-count`: dirty bitmap syncs, the setup's included.
    pub dirty_sync_count: u64,
    /// `precopy-bytes`: stream bytes written before the source stopped.
    pub precopy_bytes: u64,
    /// `downtime-bytes`: stream bytes written after the source stopped.
    pub downtime_bytes: u64,
    /// `page-size`: the target page (4096).
    pub page_size: u64,
    /// `dirty-pages-rate` (pages/s): pages found dirty at the last sync
    /// over the time since the sync before.
    pub dirty_pages_rate: f64,
    /// `pages-per-second`: pages sent in the last pass over its duration.
    pub pages_per_second: f64,
    /// `mbps`: megabits per second of the last pass.
    pub mbps: f64,
}

/// One pass of a run: the first sends every page, each later one the
/// pages a dirty sync found; the final pass (after the source stopped)
/// is recorded too.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassRecord {
    /// 1, 2, ...
    pub pass: u32,
    /// Pages to send when the pass began (every page for the first, the
    /// dirty pages a sync found for later ones), in each block's own page
    /// size (4096 bytes unless the block says otherwise).
    pub dirty_pages: u64,
    /// Stream bytes the pass wrote.
    pub bytes: u64,
    /// 4096-byte target pages it sent (zero and normal).
    pub pages: u64,
    /// Of those, zero pages.
    pub zero_pages: u64,
    /// How long it took on the run's clock.
    pub duration: Duration,
    /// `bytes` over `duration` (bytes/s); `None` if no time was measured.
    pub bandwidth: Option<f64>,
    /// Whether the source was stopped (the final pass).
    pub final_pass: bool,
}

/// Where a run is; maps to QEMU's `MigrationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecopyPhase {
    /// Not started (`none`).
    #[default]
    None,
    /// Dirty logging on, header and RAM START (`setup`).
    Setup,
    /// Iterative passes (`active`).
    Active,
    /// The source stopped: final pages and device state (`device`).
    Device,
    /// The stream ended cleanly (`completed`).
    Completed,
    /// An error ended it (`failed`).
    Failed,
    /// Cancelled (`cancelled`).
    Cancelled,
}

impl PrecopyPhase {
    /// QEMU's `MigrationStatus` name.
    pub fn as_str(self) -> &'static str {
        match self {
            PrecopyPhase::None => "none",
            PrecopyPhase::Setup => "setup",
            PrecopyPhase::Active => "active",
            PrecopyPhase::Device => "device",
            PrecopyPhase::Completed => "completed",
            PrecopyPhase::Failed => "failed",
            PrecopyPhase::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PrecopyPhase::Completed | PrecopyPhase::Failed | PrecopyPhase::Cancelled
        )
    }
}

impl fmt::Display for PrecopyPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A consistent view of a run (taken between batches).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrecopySnapshot {
    /// Where the run is.
    pub phase: PrecopyPhase,
    /// RAM statistics.
    pub ram: RamStats,
    /// Every pass so far, in order.
    pub passes: Vec<PassRecord>,
    /// Time from the start to the first pass (QEMU's `setup-time`).
    pub setup_time: Duration,
    /// Time since the start, or of the whole run once ended (`total-time`).
    pub total_time: Duration,
    /// While active: the remainder over the measured bandwidth
    /// (`expected-downtime`); `None` when not measured.
    pub expected_downtime: Option<Duration>,
    /// From the source's stop to the end of the stream (QEMU's
    /// `downtime`), once switchover happened.
    pub downtime: Option<Duration>,
    /// Why switchover happened, once it did.
    pub switchover: Option<SwitchoverReason>,
    /// Whether the `stop` callback was called (and succeeded): the source
    /// is paused, and a run that then fails or is cancelled leaves it to
    /// the caller to resume.
    pub source_stopped: bool,
    /// What ended a failed run (QEMU's `error-desc`).
    pub error: Option<String>,
    /// Wall-clock times of the switchover, as far as the run got.
    pub stamps: SwitchoverStamps,
}

/// Wall-clock times of a run's switchover, read from the run's wall clock
/// (by default [`SystemTime::now`], the host's `CLOCK_REALTIME`), for the
/// pause the guest feels. The destination stamps the end of its load and
/// its resume on its own host's clock: the two sides' stamps compare only
/// where the hosts' clocks are synchronized (on one host they always are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchoverStamps {
    /// The `stop` callback was called: the guest is asked to pause.
    pub stop: Option<SystemTime>,
    /// It returned: the guest is paused (after whatever the callback
    /// waited for, such as a pause before switchover).
    pub stopped: Option<SystemTime>,
    /// The final dirty sync is done.
    pub synced: Option<SystemTime>,
    /// The final RAM section (RAM END) is written and flushed.
    pub ram_sent: Option<SystemTime>,
    /// Device state, EOF and the trailer are written and flushed.
    pub devices_sent: Option<SystemTime>,
}
