//! [`Precopy`]: one precopy run of a [`SaveSet`] into a sink.

use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vmkit_memory::{Clock, DirtyPages, SystemClock};

use super::control::PrecopyControl;
use super::dirty_log::MigrationLog;
use super::error::PrecopyError;
use super::fault::{Fault, FaultPoint, FaultWriter};
use super::limiter::BandwidthLimiter;
use super::stats::{PassRecord, PrecopyPhase, PrecopySnapshot, SwitchoverStamps};
use super::switchover::{SwitchoverReason, bandwidth, decide, expected_downtime};
use crate::savevm::sections::{EncodedDevices, RAM_SECTION_ID, write_preamble};
use crate::savevm::{SaveOptions, SaveSet};
use crate::transport::FdWriter;
use crate::wire::format::{RAM_IDSTR, TARGET_PAGE_SIZE};
use crate::wire::stream::write_command;
use crate::wire::{RamSectionWriter, RpMessage, SectionKind, StreamWriter, VmCommand};

/// Guest bytes per batch: the run checks for cancel, updates its progress
/// and paces itself between batches.
pub const BATCH_BYTES: u64 = 1 << 20;

/// What the `stop` callback of [`Precopy::run`] returns on failure.
pub type StopError = Box<dyn std::error::Error + Send + Sync>;

/// The wall clock a run stamps its switchover with
/// ([`SwitchoverStamps`]); [`SystemTime::now`] unless a test injects one.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Points of a run at which its observer ([`Precopy::observe`]) is called,
/// on the run's thread, with the stream flushed up to there only where
/// noted. Tests use them to play the guest (write pages between passes)
/// and to cancel at a chosen phase; the run goes on when the call returns.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Checkpoint {
    /// Dirty logging is on and the RAM START section is written.
    SetupDone,
    /// A batch of pages of pass `pass` went out.
    BatchSent {
        /// The pass.
        pass: u32,
    },
    /// A pass before switchover ended (its section is closed); the next
    /// dirty sync follows.
    PassDone(PassRecord),
    /// Switchover was decided; the `stop` callback comes next (the stream
    /// is flushed).
    BeforeStop(SwitchoverReason),
    /// The `stop` callback returned; the final dirty sync comes next.
    AfterStop,
}

/// What a completed run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecopyOutcome {
    /// The final state: statistics, every pass (the final one included),
    /// downtime and switchover reason.
    pub snapshot: PrecopySnapshot,
    /// Device sections written.
    pub devices: u64,
}

type Observer<'a> = Box<dyn FnMut(&Checkpoint) + 'a>;

/// One precopy run: the source side of a live migration, over the RAM
/// blocks and devices of a [`SaveSet`] into any [`Write`] sink.
///
/// The stream is QEMU's: header, configuration, RAM START (MEM_SIZE) with
/// the `Migration` dirty-log client started on every block, a first pass
/// of every page, then passes of the pages each dirty sync found (zero
/// pages as a flag), each its own RAM PART section ended by EOS and a
/// footer, until the remaining dirty bytes are below what the measured
/// bandwidth sends within `downtime_limit` (or `max_passes` is reached). Then the `stop`
/// callback pauses the source, a final sync's pages go in the RAM END
/// section, every device's state in a FULL section (the code
/// [`save`](crate::savevm::save) uses), EOF and the VMDESCRIPTION trailer.
/// [`restore`](crate::savevm::restore) reads the result.
///
/// The run only reads guest memory and device state; dirty logging is
/// stopped however it ends. Progress, cancel and live parameters go
/// through the shared [`PrecopyControl`].
pub struct Precopy<'a> {
    set: &'a SaveSet,
    control: Arc<PrecopyControl>,
    clock: Arc<dyn Clock>,
    wall: WallClock,
    observer: Observer<'a>,
    fault: Option<Arc<Fault>>,
    return_path: Option<Box<dyn Read + 'a>>,
}

impl std::fmt::Debug for Precopy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Precopy")
            .field("machine_type", &self.set.machine_type)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl<'a> Precopy<'a> {
    /// A run of `set`, steered and watched through `control`, on the
    /// system clock.
    pub fn new(set: &'a SaveSet, control: Arc<PrecopyControl>) -> Precopy<'a> {
        Precopy {
            set,
            control,
            clock: SystemClock::shared(),
            wall: Arc::new(SystemTime::now),
            observer: Box::new(|_| {}),
            fault: None,
            return_path: None,
        }
    }

    /// Applies `fault` to the stream (see [`fault`](super::fault)). Pages
    /// then go through the buffer rather than in gathered writes, so that
    /// every byte passes the fault.
    pub fn inject(mut self, fault: Arc<Fault>) -> Precopy<'a> {
        self.fault = Some(fault);
        self
    }

    /// Reads the destination's answers from `channel` (the connection's
    /// other direction, see [`ReturnChannel`](crate::transport::ReturnChannel))
    /// when the run asks for a return path
    /// ([`PrecopyParams::return_path`](super::PrecopyParams::return_path)).
    pub fn return_path(mut self, channel: Box<dyn Read + 'a>) -> Precopy<'a> {
        self.return_path = Some(channel);
        self
    }

    /// Uses `clock` for pacing, pass durations and bandwidth.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Precopy<'a> {
        self.clock = clock;
        self
    }

    /// Uses `wall` for the switchover's [`SwitchoverStamps`].
    pub fn with_wall_clock(mut self, wall: WallClock) -> Precopy<'a> {
        self.wall = wall;
        self
    }

    /// Calls `observer` at each [`Checkpoint`].
    pub fn observe(mut self, observer: impl FnMut(&Checkpoint) + 'a) -> Precopy<'a> {
        self.observer = Box::new(observer);
        self
    }

    /// The shared control.
    pub fn control(&self) -> &Arc<PrecopyControl> {
        &self.control
    }

    /// Runs to the end of the stream, calling `stop` once at switchover
    /// (never after a cancel). `sink` is written through a 1 MiB buffer,
    /// flushed before `stop` and at the end.
    pub fn run<W, S>(self, sink: W, stop: S) -> Result<PrecopyOutcome, PrecopyError>
    where
        W: Write,
        S: FnOnce() -> Result<(), StopError>,
    {
        self.run_with(sink, None, stop)
    }

    /// [`run`](Self::run) into a file, pipe, socket or device: the same
    /// stream, with the pages of each batch handed to the kernel straight
    /// from guest memory in gathered writes, as
    /// [`save_to_fd`](crate::savevm::save_to_fd) sends them. A
    /// non-blocking descriptor is waited on with `poll(2)`.
    pub fn run_to_fd<F, S>(self, sink: F, stop: S) -> Result<PrecopyOutcome, PrecopyError>
    where
        F: AsFd,
        S: FnOnce() -> Result<(), StopError>,
    {
        let fd = sink.as_fd();
        self.run_with(FdWriter(fd), Some(fd), stop)
    }

    /// [`run`](Self::run), with pages sent by gathered writes on `direct`
    /// (the descriptor `sink` writes to) when there is one.
    fn run_with<W, S>(self, sink: W, direct: Option<BorrowedFd<'_>>, stop: S) -> Result<PrecopyOutcome, PrecopyError>
    where
        W: Write,
        S: FnOnce() -> Result<(), StopError>,
    {
        let Precopy {
            set,
            control,
            clock,
            wall,
            observer,
            fault,
            return_path,
        } = self;
        let direct = if fault.is_some() { None } else { direct };
        let sink = FaultWriter::new(sink, fault.clone(), Arc::clone(&clock), Arc::clone(&control));
        let result = (|| {
            set.check()?;
            let stream = control.params().stream;
            let ram = RamSectionWriter::new(set.ram.clone())?
                .with_zero_detection(stream.zero_page_detection)
                .with_ignore_shared(stream.ignore_shared);
            let total = ram.migrated_bytes();
            control.begin(Arc::clone(&clock), total, TARGET_PAGE_SIZE);
            let mut run = Run {
                set,
                control: &control,
                clock: clock.as_ref(),
                wall: wall.as_ref(),
                observer,
                w: StreamWriter::buffered(sink),
                direct,
                ram,
                limiter: BandwidthLimiter::new(),
                phase: PrecopyPhase::Setup,
                stopped: false,
                stream,
                booked: 0,
                cur: PassRecord::default(),
                pass_started: Duration::ZERO,
                fault,
                return_path,
            };
            run.run(stop)
        })();
        // As QEMU's: whatever ends a run that was asked to stop (a write
        // that a cancelled wait broke off) ends it cancelled.
        let result = result.map_err(|e| match e {
            PrecopyError::Stream(_) if control.is_cancelled() => {
                let snap = control.snapshot();
                PrecopyError::Cancelled {
                    phase: snap.phase,
                    stopped: snap.source_stopped,
                }
            }
            e => e,
        });
        let now = clock.now();
        match result {
            Ok(devices) => {
                control.end(now, PrecopyPhase::Completed, None);
                Ok(PrecopyOutcome {
                    snapshot: control.snapshot(),
                    devices,
                })
            }
            Err(e) => {
                let (phase, desc) = match e {
                    PrecopyError::Cancelled { .. } => (PrecopyPhase::Cancelled, None),
                    _ => (PrecopyPhase::Failed, Some(e.to_string())),
                };
                control.end(now, phase, desc);
                Err(e)
            }
        }
    }
}

/// The pages a pass sends.
enum PassPages {
    /// Every page of every block (the first pass).
    Every,
    /// Per block, the pages a dirty sync found.
    Dirty(Vec<DirtyPages>),
}

/// A run in progress.
struct Run<'a, 'fd, W: Write> {
    set: &'a SaveSet,
    control: &'a PrecopyControl,
    clock: &'a dyn Clock,
    wall: &'a (dyn Fn() -> SystemTime + Send + Sync),
    observer: Observer<'a>,
    w: StreamWriter<BufWriter<FaultWriter<W>>>,
    /// The descriptor `w` writes to, for gathered page writes.
    direct: Option<BorrowedFd<'fd>>,
    ram: RamSectionWriter,
    limiter: BandwidthLimiter,
    phase: PrecopyPhase,
    stopped: bool,
    /// Footers and trailer, fixed at the start.
    stream: SaveOptions,
    /// Stream bytes booked with the limiter.
    booked: u64,
    /// The pass being sent.
    cur: PassRecord,
    pass_started: Duration,
    fault: Option<Arc<Fault>>,
    /// The destination's answers, when the run asked for a return path.
    return_path: Option<Box<dyn Read + 'a>>,
}

impl<W: Write> Run<'_, '_, W> {
    fn check_cancel(&self) -> Result<(), PrecopyError> {
        if self.control.is_cancelled() {
            return Err(PrecopyError::Cancelled {
                phase: self.phase,
                stopped: self.stopped,
            });
        }
        Ok(())
    }

    /// Arms a fault whose trigger names `point`, at the stream's offset.
    fn mark(&self, point: FaultPoint<'_>) {
        if let Some(fault) = &self.fault {
            fault.mark(point, self.w.offset());
        }
    }

    /// Asks the destination to answer on the connection's other direction
    /// (QEMU's `OPEN_RETURN_PATH`, then a `PING` it answers with a `PONG`).
    fn open_return_path(&mut self) -> Result<(), PrecopyError> {
        if self.return_path.is_none() {
            return Err(PrecopyError::ReturnPath {
                reason: "the transport has no way back (return-path needs a socket)".into(),
            });
        }
        if !self.stream.vmdesc {
            // The destination stops reading at the trailer to answer.
            return Err(PrecopyError::ReturnPath {
                reason: "a return path needs the VMDESCRIPTION trailer".into(),
            });
        }
        write_command(&mut self.w, VmCommand::OpenReturnPath as u16, &[])?;
        write_command(&mut self.w, VmCommand::Ping as u16, &1u32.to_be_bytes())?;
        Ok(())
    }

    /// After the end of the stream: the destination's `SHUT` says whether
    /// it loaded it. Until then the run is not complete (QEMU's
    /// `return-path` capability), so a destination that refuses a device
    /// section fails the migration and the source runs on.
    fn await_shut(&mut self) -> Result<(), PrecopyError> {
        let Some(channel) = self.return_path.as_mut() else {
            return Ok(());
        };
        loop {
            match RpMessage::read_from(channel.as_mut()) {
                Ok(RpMessage::Shut(0)) => return Ok(()),
                Ok(RpMessage::Shut(status)) => {
                    return Err(PrecopyError::ReturnPath {
                        reason: format!("the destination failed to load the stream (status {status})"),
                    });
                }
                Ok(RpMessage::Pong(_) | RpMessage::Other { .. }) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.check_cancel()?;
                    return Err(PrecopyError::ReturnPath { reason: e.to_string() });
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(PrecopyError::ReturnPath {
                        reason: "the destination closed the connection before it said whether it loaded the stream"
                            .into(),
                    });
                }
                Err(e) => return Err(PrecopyError::ReturnPath { reason: e.to_string() }),
            }
        }
    }

    /// Records the wall-clock time now in the stamp `which` picks.
    fn stamp(&self, which: fn(&mut SwitchoverStamps) -> &mut Option<SystemTime>) {
        let at = (self.wall)();
        self.control
            .update(self.clock.now(), |s| *which(&mut s.stamps) = Some(at));
    }

    fn set_phase(&mut self, phase: PrecopyPhase) {
        self.phase = phase;
        self.control.update(self.clock.now(), |s| s.phase = phase);
    }

    /// Returns the device sections written.
    fn run<S: FnOnce() -> Result<(), StopError>>(&mut self, stop: S) -> Result<u64, PrecopyError> {
        let started = self.clock.now();
        self.check_cancel()?;
        // Stopped on every block when dropped, however the run ends.
        let log = MigrationLog::start(&self.set.ram)?;
        write_preamble(&mut self.w, self.set, &self.stream)?;
        if self.control.params().return_path {
            self.open_return_path()?;
        }
        self.mark(FaultPoint::Section(RAM_IDSTR));
        self.ram.save_setup(&mut self.w, RAM_SECTION_ID, self.stream.footers)?;
        // QEMU's setup sync: counted, its pages dropped (the first pass
        // sends every page anyway).
        log.sync()?;
        let mut last_sync = self.clock.now();
        self.control.update(last_sync, |s| {
            s.ram.dirty_sync_count = 1;
            s.ram.remaining = s.ram.total;
            s.setup_time = last_sync.saturating_sub(started);
        });
        (self.observer)(&Checkpoint::SetupDone);
        self.set_phase(PrecopyPhase::Active);

        let total_pages: u64 = (self.set.ram.iter().enumerate())
            .filter(|(i, _)| !self.ram.is_ignored(*i))
            .map(|(_, b)| b.page_count())
            .sum();
        let mut record = self.send_pass(1, total_pages, &PassPages::Every, SectionKind::Part)?;
        let mut pending = loop {
            (self.observer)(&Checkpoint::PassDone(record));
            self.check_cancel()?;
            let dirty = self.without_ignored(log.sync()?)?;
            let now = self.clock.now();
            let found: u64 = dirty.iter().map(DirtyPages::count).sum();
            let remaining = self.dirty_bytes(&dirty);
            let since = now.saturating_sub(last_sync);
            last_sync = now;
            let bw = record.bandwidth;
            let params = self.control.params();
            self.control.update(now, |s| {
                s.ram.dirty_sync_count += 1;
                s.ram.remaining = remaining;
                if let Some(rate) = bandwidth(found, since) {
                    s.ram.dirty_pages_rate = rate;
                }
                s.expected_downtime = expected_downtime(remaining, bw);
            });
            if let Some(reason) = decide(remaining, bw, params.downtime_limit, record.pass, params.max_passes) {
                self.w.flush()?;
                (self.observer)(&Checkpoint::BeforeStop(reason));
                self.check_cancel()?;
                // The guest's pause begins as the callback is called.
                self.stamp(|t| &mut t.stop);
                stop().map_err(PrecopyError::Stop)?;
                self.stamp(|t| &mut t.stopped);
                self.stopped = true;
                let at = self.clock.now();
                self.control.switched_over(at, reason);
                self.phase = PrecopyPhase::Device;
                break dirty;
            }
            record = self.send_pass(record.pass + 1, found, &PassPages::Dirty(dirty), SectionKind::Part)?;
        };
        let stopped_at = self.clock.now();
        (self.observer)(&Checkpoint::AfterStop);
        self.check_cancel()?;

        // The final sync: what the guest wrote since the last one, plus
        // the pages that sync found, which were never sent.
        for (pages, last) in pending.iter_mut().zip(self.without_ignored(log.sync()?)?) {
            pages.merge(&last)?;
        }
        let found: u64 = pending.iter().map(DirtyPages::count).sum();
        let remaining = self.dirty_bytes(&pending);
        self.control.update(self.clock.now(), |s| {
            s.ram.dirty_sync_count += 1;
            s.ram.remaining = remaining;
        });
        self.stamp(|t| &mut t.synced);
        self.send_pass(record.pass + 1, found, &PassPages::Dirty(pending), SectionKind::End)?;
        self.stamp(|t| &mut t.ram_sent);
        self.check_cancel()?;
        let devices = EncodedDevices::take(self.set)?;
        let count = devices.len() as u64;
        let fault = self.fault.as_deref();
        devices.write_tail_marked(
            &mut self.w,
            self.stream.footers,
            self.stream.vmdesc,
            &mut |idstr, offset| {
                if let Some(f) = fault {
                    f.mark(FaultPoint::Section(idstr), offset);
                }
            },
        )?;
        self.w.flush()?;
        self.stamp(|t| &mut t.devices_sent);
        if self.control.params().return_path {
            self.await_shut()?;
        }
        drop(log);
        let end = self.clock.now();
        let transferred = self.w.offset();
        self.control.update(end, |s| {
            s.ram.transferred = transferred;
            s.ram.downtime_bytes = transferred.saturating_sub(s.ram.precopy_bytes);
            s.downtime = Some(end.saturating_sub(stopped_at));
        });
        Ok(count)
    }

    /// `dirty` with the pages of blocks left out by `x-ignore-shared`
    /// dropped (the destination maps those blocks itself).
    fn without_ignored(&self, mut dirty: Vec<DirtyPages>) -> Result<Vec<DirtyPages>, PrecopyError> {
        for (i, pages) in dirty.iter_mut().enumerate() {
            if self.ram.is_ignored(i) {
                *pages = DirtyPages::empty(pages.pages())?;
            }
        }
        Ok(dirty)
    }

    /// Guest bytes of the pages in `dirty` (block page size each).
    fn dirty_bytes(&self, dirty: &[DirtyPages]) -> u64 {
        dirty
            .iter()
            .zip(&self.set.ram)
            .map(|(d, b)| d.count().saturating_mul(b.page_size()))
            .sum()
    }

    /// Sends one pass as one RAM section of `kind`, batch by batch;
    /// records it in the progress.
    fn send_pass(
        &mut self,
        pass: u32,
        dirty_pages: u64,
        pages: &PassPages,
        kind: SectionKind,
    ) -> Result<PassRecord, PrecopyError> {
        self.mark(FaultPoint::Pass(pass));
        self.pass_started = self.clock.now();
        self.cur = PassRecord {
            pass,
            dirty_pages,
            final_pass: kind == SectionKind::End,
            ..PassRecord::default()
        };
        let start_offset = self.w.offset();
        self.ram.begin_section(&mut self.w, kind, RAM_SECTION_ID)?;
        for index in 0..self.set.ram.len() {
            if self.ram.is_ignored(index) {
                continue;
            }
            let block = Arc::clone(&self.set.ram[index]);
            let per_batch = (BATCH_BYTES / block.page_size()).max(1) as usize;
            let mut batch = Vec::with_capacity(per_batch);
            let mut iter: Box<dyn Iterator<Item = u64> + '_> = match pages {
                PassPages::Every => Box::new(0..block.page_count()),
                PassPages::Dirty(d) => match d.get(index) {
                    Some(d) => Box::new(d.iter()),
                    None => Box::new(std::iter::empty()),
                },
            };
            loop {
                batch.clear();
                batch.extend(iter.by_ref().take(per_batch));
                if batch.is_empty() {
                    break;
                }
                self.send_batch(index, &batch, block.page_size())?;
            }
        }
        self.ram.end_section(&mut self.w, RAM_SECTION_ID, self.stream.footers)?;
        self.w.flush()?;
        let now = self.clock.now();
        self.cur.bytes = self.w.offset() - start_offset;
        self.cur.duration = now.saturating_sub(self.pass_started);
        self.cur.bandwidth = bandwidth(self.cur.bytes, self.cur.duration);
        let transferred = self.w.offset();
        let stopped = self.stopped;
        self.control.update(now, |s| {
            s.ram.transferred = transferred;
            if stopped {
                s.ram.downtime_bytes = transferred.saturating_sub(s.ram.precopy_bytes);
            } else {
                s.ram.precopy_bytes = transferred;
            }
        });
        self.control.push_pass(now, self.cur);
        Ok(self.cur)
    }

    /// Sends one batch of block pages, then updates the progress and waits
    /// for the bandwidth limit (before switchover only).
    fn send_batch(&mut self, index: usize, batch: &[u64], page_size: u64) -> Result<(), PrecopyError> {
        self.check_cancel()?;
        let before = self.ram.stats();
        match self.direct {
            Some(fd) => self
                .ram
                .write_block_pages_to_fd(&mut self.w, fd, index, batch.iter().copied())?,
            None => self.ram.write_block_pages(&mut self.w, index, batch.iter().copied())?,
        }
        let after = self.ram.stats();
        let zero = after.zero_pages - before.zero_pages;
        let normal = after.normal_pages - before.normal_pages;
        self.cur.zero_pages += zero;
        self.cur.pages += zero + normal;
        let transferred = self.w.offset();
        let sent_bytes = (batch.len() as u64).saturating_mul(page_size);
        let stopped = self.stopped;
        let now = self.clock.now();
        self.control.update(now, |s| {
            s.ram.transferred = transferred;
            s.ram.duplicate += zero;
            s.ram.normal += normal;
            s.ram.normal_bytes += normal * TARGET_PAGE_SIZE;
            s.ram.remaining = s.ram.remaining.saturating_sub(sent_bytes);
            if stopped {
                s.ram.downtime_bytes = transferred.saturating_sub(s.ram.precopy_bytes);
            } else {
                s.ram.precopy_bytes = transferred;
            }
        });
        (self.observer)(&Checkpoint::BatchSent { pass: self.cur.pass });
        if !self.stopped {
            let limit = self.control.params().max_bandwidth;
            // Every byte since the last booking: section headers, EOS and
            // footers too, so the stream as a whole keeps the limit.
            self.limiter.record(now, transferred - self.booked, limit);
            self.booked = transferred;
            if let Some(deadline) = self.limiter.hold_until(now) {
                self.w.flush()?;
                let control = self.control;
                self.clock.sleep_until(deadline, &|| !control.is_cancelled());
                self.check_cancel()?;
            }
        }
        Ok(())
    }
}
