//! Dirty-rate measurement, like QEMU's `calc-dirty-rate` in dirty-bitmap mode.
//!
//! A measurement logs with its own client, [`DirtyClient::DirtyRate`], so it
//! never disturbs migration, display or user logs running at the same time
//! (QEMU's dirty-bitmap mode borrows the migration bitmap and so refuses to
//! run during migration; a separate client removes that restriction). Only one
//! measurement can run on a block at a time: a second one fails with
//! [`Error::DirtyLogBusy`](crate::Error::DirtyLogBusy) naming the block and
//! the `dirty-rate` client.
//!
//! The cycle is QEMU's: start the log, sync once to drop anything marked
//! before the window, note the time, wait, sync again and count the pages.
//! The window is read from a [`Clock`] (the system clock unless one is
//! given), so a test can drive it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::dirty::DirtyClient;
use crate::error::{Error, Result};
use crate::ram::RamBlock;

const CLIENT: DirtyClient = DirtyClient::DirtyRate;
const MIB: f64 = 1024.0 * 1024.0;

/// The dirty rate of one block over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDirtyRate {
    /// The block's name.
    pub name: String,
    /// Its page size.
    pub page_size: u64,
    /// Pages dirtied during the window (each counted once however often written).
    pub dirty_pages: u64,
    /// `dirty_pages * page_size`.
    pub dirty_bytes: u64,
    /// Pages per second.
    pub pages_per_sec: f64,
    /// MiB per second.
    pub mib_per_sec: f64,
}

/// The result of a measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyRateReport {
    /// The measured window (from the first sync to the last).
    pub window: Duration,
    /// Per block, in the order given.
    pub blocks: Vec<BlockDirtyRate>,
    /// Pages dirtied, all blocks.
    pub dirty_pages: u64,
    /// Bytes dirtied, all blocks.
    pub dirty_bytes: u64,
    /// Pages per second, all blocks.
    pub pages_per_sec: f64,
    /// Bytes per second, all blocks.
    pub bytes_per_sec: f64,
    /// MiB per second, all blocks (QEMU's `dirty-rate`, which it reports as
    /// an integer number of MB/s: see [`dirty_rate`](Self::dirty_rate)).
    pub mib_per_sec: f64,
}

impl DirtyRateReport {
    /// The rate as QEMU's `query-dirty-rate` reports it: whole MiB/s, rounded down.
    pub fn dirty_rate(&self) -> u64 {
        self.mib_per_sec as u64
    }
}

/// A measurement in progress: logging on every block since [`start`](Self::start).
/// Dropping it without [`finish`](Self::finish) stops the logs.
#[derive(Debug)]
pub struct DirtyRateMeasurement {
    blocks: Vec<Arc<RamBlock>>,
    clock: Arc<dyn Clock>,
    started: Duration,
    done: bool,
}

impl DirtyRateMeasurement {
    /// Starts logging on every block and opens the window. If a block cannot
    /// start (a measurement already runs on it), the logs already started are
    /// stopped and the error returned.
    pub fn start(blocks: &[Arc<RamBlock>]) -> Result<DirtyRateMeasurement> {
        DirtyRateMeasurement::start_with_clock(blocks, SystemClock::shared())
    }

    /// [`start`](Self::start), with the window timed by `clock`.
    pub fn start_with_clock(blocks: &[Arc<RamBlock>], clock: Arc<dyn Clock>) -> Result<DirtyRateMeasurement> {
        if blocks.is_empty() {
            return Err(Error::InvalidConfig {
                what: "dirty-rate blocks",
                reason: "no RAM block given".into(),
            });
        }
        let mut m = DirtyRateMeasurement {
            blocks: Vec::with_capacity(blocks.len()),
            started: clock.now(),
            clock,
            done: false,
        };
        for b in blocks {
            // On error `m` drops and stops the logs started so far.
            b.dirty_log().log_start(CLIENT)?;
            m.blocks.push(b.clone());
        }
        for b in &m.blocks {
            b.dirty_log().sync(CLIENT)?;
        }
        m.started = m.clock.now();
        Ok(m)
    }

    /// Time since the window opened.
    pub fn elapsed(&self) -> Duration {
        self.clock.now().saturating_sub(self.started)
    }

    /// Closes the window: syncs every block, stops the logs and reports.
    pub fn finish(mut self) -> Result<DirtyRateReport> {
        let mut counts = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            counts.push(b.dirty_log().sync(CLIENT)?.count());
        }
        let window = self.elapsed();
        self.stop();
        let secs = window.as_secs_f64().max(f64::MIN_POSITIVE);
        let blocks: Vec<BlockDirtyRate> = self
            .blocks
            .iter()
            .zip(counts)
            .map(|(b, pages)| {
                let bytes = pages.saturating_mul(b.page_size());
                BlockDirtyRate {
                    name: b.name().to_owned(),
                    page_size: b.page_size(),
                    dirty_pages: pages,
                    dirty_bytes: bytes,
                    pages_per_sec: pages as f64 / secs,
                    mib_per_sec: bytes as f64 / MIB / secs,
                }
            })
            .collect();
        let dirty_pages = blocks.iter().map(|b| b.dirty_pages).sum();
        let dirty_bytes: u64 = blocks.iter().map(|b| b.dirty_bytes).sum();
        Ok(DirtyRateReport {
            window,
            dirty_pages,
            dirty_bytes,
            pages_per_sec: dirty_pages as f64 / secs,
            bytes_per_sec: dirty_bytes as f64 / secs,
            mib_per_sec: dirty_bytes as f64 / MIB / secs,
            blocks,
        })
    }

    fn stop(&mut self) {
        if !self.done {
            self.done = true;
            for b in &self.blocks {
                b.dirty_log().log_stop(CLIENT);
            }
        }
    }
}

impl Drop for DirtyRateMeasurement {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Measures the dirty rate of `blocks` over `window` (blocking the calling
/// thread for that long). `window` must be between 1 ms and 1 hour.
pub fn measure_dirty_rate(blocks: &[Arc<RamBlock>], window: Duration) -> Result<DirtyRateReport> {
    measure_dirty_rate_with_clock(blocks, window, SystemClock::shared())
}

/// [`measure_dirty_rate`] over `window` of `clock`'s time.
pub fn measure_dirty_rate_with_clock(
    blocks: &[Arc<RamBlock>],
    window: Duration,
    clock: Arc<dyn Clock>,
) -> Result<DirtyRateReport> {
    if window < Duration::from_millis(1) || window > Duration::from_secs(3600) {
        return Err(Error::InvalidConfig {
            what: "dirty-rate window",
            reason: format!("{window:?} is outside 1 ms ..= 1 h"),
        });
    }
    let m = DirtyRateMeasurement::start_with_clock(blocks, clock)?;
    let deadline = m.started.saturating_add(window);
    m.clock.sleep_until(deadline, &|| true);
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pages_and_refuses_a_second_measurement() {
        let b = RamBlock::anonymous("pc.ram", 64 * 4096).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.write(0, &[1]).is_ok()); // before the window: not counted
        let m = DirtyRateMeasurement::start(std::slice::from_ref(&b)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            DirtyRateMeasurement::start(std::slice::from_ref(&b)),
            Err(Error::DirtyLogBusy {
                client: "dirty-rate",
                ..
            })
        ));
        // A user log runs beside it, undisturbed.
        assert!(b.dirty_log().log_start(DirtyClient::User).is_ok());
        for p in [1u64, 2, 2, 7] {
            assert!(b.write_page_pattern(p, 0).is_ok());
        }
        let r = m.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.dirty_pages, 3);
        assert_eq!(r.dirty_bytes, 3 * 4096);
        assert_eq!(r.blocks.len(), 1);
        assert!(r.bytes_per_sec > 0.0);
        assert!(!b.dirty_log().is_logging(DirtyClient::DirtyRate));
        assert_eq!(b.dirty_log().sync(DirtyClient::User).map(|p| p.count()).ok(), Some(3));
        assert!(measure_dirty_rate(&[], Duration::from_millis(5)).is_err());
        assert!(measure_dirty_rate(std::slice::from_ref(&b), Duration::ZERO).is_err());
    }
}
