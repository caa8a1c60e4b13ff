//! [`PrecopyControl`]: what a run and its owner share — the parameters
//! (changeable while it runs), the cancel flag, and its progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use vmkit_memory::Clock;

use super::params::PrecopyParams;
use super::stats::{PassRecord, PrecopyPhase, PrecopySnapshot, RamStats};
use super::switchover::SwitchoverReason;

/// Shared by a running [`Precopy`](super::Precopy) (through an `Arc`) and
/// whoever watches or steers it from another thread: `query-migrate`
/// reads [`snapshot`](Self::snapshot), `migrate_cancel` calls
/// [`cancel`](Self::cancel), `migrate-set-parameters` calls
/// [`set_params`](Self::set_params). The run updates it between batches
/// (one lock per batch of about 1 MiB). One control serves one run (a
/// cancel stays set); its last snapshot stays readable after the run.
#[derive(Debug, Default)]
pub struct PrecopyControl {
    cancelled: AtomicBool,
    params: Mutex<PrecopyParams>,
    progress: Mutex<Progress>,
}

/// The run's side of the snapshot, with the clock times it derives from.
#[derive(Debug, Default)]
struct Progress {
    snap: PrecopySnapshot,
    /// The run's clock, once it began.
    clock: Option<Arc<dyn Clock>>,
    started_at: Duration,
    ended: bool,
}

impl PrecopyControl {
    /// A control for a run with `params`.
    pub fn new(params: PrecopyParams) -> PrecopyControl {
        PrecopyControl {
            params: Mutex::new(params),
            ..PrecopyControl::default()
        }
    }

    /// Asks the run to stop at its next check (between batches, and in
    /// any bandwidth wait). The run then ends with
    /// [`PrecopyError::Cancelled`](super::PrecopyError::Cancelled).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The parameters now.
    pub fn params(&self) -> PrecopyParams {
        self.params.lock().clone()
    }

    /// Replaces the parameters; a running run uses the new
    /// `max_bandwidth`, `downtime_limit` and `max_passes` from its next
    /// batch or decision (stream options are fixed when it starts).
    pub fn set_params(&self, params: PrecopyParams) {
        *self.params.lock() = params;
    }

    /// The run's state now (`total_time` read from the run's clock while
    /// it goes, so a run waiting on the bandwidth limit still ages).
    pub fn snapshot(&self) -> PrecopySnapshot {
        let p = self.progress.lock();
        let mut snap = p.snap.clone();
        if let (false, Some(clock)) = (p.ended, &p.clock) {
            snap.total_time = clock.now().saturating_sub(p.started_at);
        }
        snap
    }

    /// The phase now.
    pub fn phase(&self) -> PrecopyPhase {
        self.progress.lock().snap.phase
    }

    // The run's side.

    pub(super) fn begin(&self, clock: Arc<dyn Clock>, total: u64, page_size: u64) {
        let mut p = self.progress.lock();
        p.started_at = clock.now();
        p.clock = Some(clock);
        p.ended = false;
        p.snap = PrecopySnapshot {
            phase: PrecopyPhase::Setup,
            ram: RamStats {
                total,
                page_size,
                ..RamStats::default()
            },
            ..PrecopySnapshot::default()
        };
    }

    pub(super) fn update(&self, now: Duration, f: impl FnOnce(&mut PrecopySnapshot)) {
        let mut p = self.progress.lock();
        if !p.ended {
            p.snap.total_time = now.saturating_sub(p.started_at);
        }
        f(&mut p.snap);
    }

    pub(super) fn push_pass(&self, now: Duration, pass: PassRecord) {
        self.update(now, |s| {
            if let Some(bw) = pass.bandwidth {
                s.ram.mbps = bw * 8.0 / 1e6;
                s.ram.pages_per_second = pass.pages as f64 / pass.duration.as_secs_f64();
            }
            s.passes.push(pass);
        });
    }

    /// The source stopped for `reason`.
    pub(super) fn switched_over(&self, now: Duration, reason: SwitchoverReason) {
        self.update(now, |s| {
            s.switchover = Some(reason);
            s.phase = PrecopyPhase::Device;
            s.source_stopped = true;
            s.ram.precopy_bytes = s.ram.transferred;
        });
    }

    pub(super) fn end(&self, now: Duration, phase: PrecopyPhase, error: Option<String>) {
        self.update(now, |s| {
            s.phase = phase;
            s.error = error;
            s.expected_downtime = None;
        });
        self.progress.lock().ended = true;
    }
}
