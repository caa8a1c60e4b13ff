//! The guest stand-in: threads that write guest RAM the way vCPUs would,
//! through the same dirty-marking path as every other writer.
//!
//! # What a run writes
//!
//! The blocks' pages are numbered globally in the order the blocks are given
//! (block 0's pages first). Thread `t` of `T` owns the global pages `g` with
//! `g mod T == t` and never writes any other, so the memory a run leaves does
//! not depend on how the threads interleave. Each operation of a thread picks
//! an index `i` into its own pages with the access pattern, writes page
//! `g = t + i * T` with [`RamBlock::write_pattern`] (the first `write_size`
//! bytes of that page's pattern for a fresh random value) and marks it dirty.
//!
//! Each thread draws from its own splitmix64 stream seeded with
//! `splitmix64(seed ^ splitmix64(t))`; per operation it draws the page first
//! (one draw, two for `HotSet`, none for `Sequential`) and then the value.
//! So the same configuration and seed give every thread the same sequence of
//! `(block, page, value)` ([`WorkloadConfig::op_sequence`] replays it), and
//! with `max_ops` the same final memory.
//!
//! # Pacing
//!
//! * `rate` (bytes/s, for all threads together) is enforced by a token bucket
//!   per thread holding at most 20 ms of its share; a thread short of tokens
//!   sleeps (at least 1 ms, so it never spins).
//! * `throttle` (0–99 %) models auto-converge's CPU throttling: after each
//!   ≥ 10 ms of running a thread sleeps `ran * pct / (100 - pct)`, so it
//!   sleeps `pct` % of its time. The rate applies to running time: a
//!   throttle sleep earns no tokens, so a rate-limited thread writes
//!   `100 - pct` % of its rate, as a throttled vCPU dirties less.
//! * [`Workload::pause`] returns once every thread has stopped between two
//!   writes and acknowledged it ([`Workload::parked`]); [`Workload::resume`]
//!   lets them go on.
//!
//! Pacing reads and waits on a [`Clock`]: the system clock by default, or
//! one given to [`Workload::start_with_clock`] (a [`ManualClock`] in tests,
//! so that rates are exact and no test depends on the machine's speed).
//!
//! [`ManualClock`]: crate::clock::ManualClock

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::checksum::{GOLDEN, splitmix64};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::ram::RamBlock;

/// How a thread picks the next page among its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AccessPattern {
    /// Its pages in order, wrapping around.
    Sequential,
    /// Uniformly at random.
    Uniform,
    /// A hot set of the first `fraction` of its pages (at least one), written
    /// with `probability`; the other pages share the rest uniformly.
    HotSet {
        /// Size of the hot set as a fraction of the pages, in (0, 1].
        fraction: f64,
        /// Probability that a write goes to the hot set, in [0, 1].
        probability: f64,
    },
    /// Zipf-like with exponent `s > 0`: page index `k` (0-based) is written
    /// with probability about proportional to `1 / (k + 1)^s`, from the
    /// inverse CDF of the continuous power law on `[1, n + 1)`.
    Zipf {
        /// The exponent (1 is the classic Zipf law).
        s: f64,
    },
}

/// The configuration of a [`Workload`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Writer threads (1..=256). Default 1.
    pub threads: usize,
    /// Total bytes per second for all threads, `None` for as fast as possible.
    pub rate: Option<u64>,
    /// The access pattern. Default `Uniform`.
    pub pattern: AccessPattern,
    /// Bytes per write (at most a page), `None` for a whole page (the
    /// smallest page size among the blocks).
    pub write_size: Option<u64>,
    /// Seed of the pseudo-random streams.
    pub seed: u64,
    /// Total writes, split among the threads (thread `t` does
    /// `max_ops / T`, plus one if `t < max_ops % T`); `None` runs until stopped.
    pub max_ops: Option<u64>,
    /// Initial throttle percentage, 0..=99.
    pub throttle: u8,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            threads: 1,
            rate: None,
            pattern: AccessPattern::Uniform,
            write_size: None,
            seed: 0,
            max_ops: None,
            throttle: 0,
        }
    }
}

fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        what,
        reason: reason.into(),
    }
}

/// One write of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkloadOp {
    /// Index of the block in the list given to the workload.
    pub block: usize,
    /// Page within the block.
    pub page: u64,
    /// The pattern seed written ([`RamBlock::write_pattern`]).
    pub value: u64,
}

#[derive(Debug, Clone, Copy)]
enum Picker {
    Sequential,
    Uniform,
    HotSet {
        hot: u64,
        probability: f64,
    },
    Zipf {
        s_is_one: bool,
        ln_n1: f64,
        top: f64,
        inv: f64,
    },
}

/// Uniform in `[0, n)` from one 64-bit draw (multiply-high, no division).
#[inline]
fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

/// A uniform f64 in `[0, 1)` from one draw.
#[inline]
fn unit(r: u64) -> f64 {
    (r >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The deterministic sequence of one thread's writes.
#[derive(Debug, Clone)]
pub struct OpSequence {
    state: u64,
    picker: Picker,
    /// This thread's pages.
    n: u64,
    thread: u64,
    threads: u64,
    /// First global page of each block, then the total.
    starts: Arc<[u64]>,
    k: u64,
    limit: Option<u64>,
}

impl OpSequence {
    #[inline]
    fn draw(&mut self) -> u64 {
        let r = splitmix64(self.state);
        self.state = self.state.wrapping_add(GOLDEN);
        r
    }

    #[inline]
    fn pick(&mut self) -> u64 {
        let n = self.n;
        match self.picker {
            Picker::Sequential => self.k % n,
            Picker::Uniform => below(self.draw(), n),
            Picker::HotSet { hot, probability } => {
                let u = unit(self.draw());
                let r = self.draw();
                if u < probability || hot >= n {
                    below(r, hot)
                } else {
                    hot + below(r, n - hot)
                }
            }
            Picker::Zipf {
                s_is_one,
                ln_n1,
                top,
                inv,
            } => {
                let u = unit(self.draw());
                let x = if s_is_one {
                    (u * ln_n1).exp()
                } else {
                    (u * top + 1.0).powf(inv)
                };
                // x is in [1, n + 1); guard the float edges.
                let rank = if x.is_finite() && x >= 1.0 { x as u64 - 1 } else { 0 };
                rank.min(n - 1)
            }
        }
    }

    /// The next write (ignoring the limit).
    #[inline]
    pub fn next_op(&mut self) -> WorkloadOp {
        let index = self.pick();
        self.k += 1;
        let global = self.thread + index * self.threads;
        let value = self.draw();
        // `starts` is ascending and starts at 0, so at least one entry is <= global.
        let block = self.starts.partition_point(|&s| s <= global).saturating_sub(1);
        let page = global - self.starts.get(block).copied().unwrap_or(0);
        WorkloadOp { block, page, value }
    }
}

impl Iterator for OpSequence {
    type Item = WorkloadOp;

    fn next(&mut self) -> Option<WorkloadOp> {
        if self.limit.is_some_and(|l| self.k >= l) {
            return None;
        }
        Some(self.next_op())
    }
}

/// The checked form of a configuration, ready to start threads with.
#[derive(Debug)]
struct Plan {
    threads: usize,
    write_size: u64,
    sequences: Vec<OpSequence>,
}

impl WorkloadConfig {
    fn check(&self) -> Result<()> {
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid(
                "workload threads",
                format!("{} is outside 1..=256", self.threads),
            ));
        }
        if self.rate == Some(0) {
            return Err(invalid("workload rate", "must be positive (None means unlimited)"));
        }
        if self.throttle > 99 {
            return Err(invalid("workload throttle", format!("{}% is above 99%", self.throttle)));
        }
        match self.pattern {
            AccessPattern::HotSet { fraction, probability } => {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(invalid("hot-set fraction", format!("{fraction} is outside (0, 1]")));
                }
                if !(0.0..=1.0).contains(&probability) {
                    return Err(invalid(
                        "hot-set probability",
                        format!("{probability} is outside [0, 1]"),
                    ));
                }
            }
            AccessPattern::Zipf { s } => {
                if !(s > 0.0 && s <= 100.0) {
                    return Err(invalid("zipf exponent", format!("{s} is outside (0, 100]")));
                }
            }
            AccessPattern::Sequential | AccessPattern::Uniform => {}
        }
        Ok(())
    }

    /// The sequence of writes thread `thread` makes on blocks of
    /// `page_counts` pages (bounded by its share of `max_ops`, if any).
    pub fn op_sequence(&self, page_counts: &[u64], thread: usize) -> Result<OpSequence> {
        self.check()?;
        if thread >= self.threads {
            return Err(invalid(
                "workload thread",
                format!("{thread} is not below {}", self.threads),
            ));
        }
        let mut starts = Vec::with_capacity(page_counts.len() + 1);
        let mut total = 0u64;
        for &c in page_counts {
            starts.push(total);
            total = total
                .checked_add(c)
                .ok_or_else(|| invalid("workload blocks", "too many pages"))?;
        }
        starts.push(total);
        self.sequence(starts.into(), thread)
    }

    fn sequence(&self, starts: Arc<[u64]>, thread: usize) -> Result<OpSequence> {
        let total = starts.last().copied().unwrap_or(0);
        let (t, threads) = (thread as u64, self.threads as u64);
        if total < threads {
            return Err(invalid(
                "workload threads",
                format!("{threads} threads but only {total} pages"),
            ));
        }
        let n = (total - t).div_ceil(threads);
        let picker = match self.pattern {
            AccessPattern::Sequential => Picker::Sequential,
            AccessPattern::Uniform => Picker::Uniform,
            AccessPattern::HotSet { fraction, probability } => {
                let hot = ((n as f64 * fraction).ceil() as u64).clamp(1, n);
                Picker::HotSet { hot, probability }
            }
            AccessPattern::Zipf { s } => {
                let n1 = n as f64 + 1.0;
                let one_minus = 1.0 - s;
                Picker::Zipf {
                    s_is_one: one_minus.abs() < 1e-9,
                    ln_n1: n1.ln(),
                    top: n1.powf(one_minus) - 1.0,
                    inv: 1.0 / one_minus,
                }
            }
        };
        let limit = self.max_ops.map(|m| m / threads + u64::from(t < m % threads));
        Ok(OpSequence {
            state: splitmix64(self.seed ^ splitmix64(t)),
            picker,
            n,
            thread: t,
            threads,
            starts,
            k: 0,
            limit,
        })
    }

    fn plan(&self, blocks: &[Arc<RamBlock>]) -> Result<Plan> {
        self.check()?;
        let min_page = blocks
            .iter()
            .map(|b| b.page_size())
            .min()
            .ok_or_else(|| invalid("workload blocks", "no RAM block given"))?;
        let write_size = self.write_size.unwrap_or(min_page);
        if write_size == 0 || write_size > min_page {
            return Err(invalid(
                "workload write size",
                format!("{write_size} is outside 1..={min_page}"),
            ));
        }
        let counts: Vec<u64> = blocks.iter().map(|b| b.page_count()).collect();
        let sequences = (0..self.threads)
            .map(|t| self.op_sequence(&counts, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            threads: self.threads,
            write_size,
            sequences,
        })
    }
}

const RUN: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

/// Time a throttled thread runs between two sleeps (QEMU's throttle timeslice).
const THROTTLE_SLICE: Duration = Duration::from_millis(10);
/// Longest single throttle sleep when the computed one overflows.
const NAP: Duration = Duration::from_millis(20);
/// How much of its rate a thread may save up: 20 ms worth.
const BUCKET_DEPTH: Duration = Duration::from_millis(20);
/// Shortest wait for tokens, so a thread short of them never spins.
const MIN_WAIT: Duration = Duration::from_millis(1);
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Per-thread counters, on their own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    ops: AtomicU64,
    bytes: AtomicU64,
    finished: AtomicBool,
}

#[derive(Debug, Default)]
struct Ctl {
    parked: usize,
    running: usize,
}

#[derive(Debug)]
struct Shared {
    state: AtomicU8,
    throttle: AtomicU8,
    /// Total bytes/s, 0 for unlimited.
    rate: AtomicU64,
    ctl: Mutex<Ctl>,
    cv: Condvar,
    counters: Box<[Counters]>,
    error: Mutex<Option<String>>,
    clock: Arc<dyn Clock>,
    /// Threads in [`Workload::wait_until`]: writers notify `cv` only then.
    watchers: AtomicUsize,
}

impl Shared {
    /// Sleeps `d` of the clock's time, returning early when the state leaves RUN.
    fn sleep(&self, d: Duration) {
        let deadline = self.clock.now().saturating_add(d);
        self.clock
            .sleep_until(deadline, &|| self.state.load(Ordering::Acquire) == RUN);
    }

    /// Tells a waiter in [`Workload::wait_until`] that the counters moved.
    fn progressed(&self) {
        if self.watchers.load(Ordering::SeqCst) != 0 {
            let _g = self.ctl.lock();
            self.cv.notify_all();
        }
    }

    fn park(&self) {
        let mut g = self.ctl.lock();
        g.parked += 1;
        self.cv.notify_all();
        while self.state.load(Ordering::Acquire) == PAUSE {
            self.cv.wait_for(&mut g, Duration::from_millis(100));
        }
        g.parked -= 1;
    }

    fn exit(&self, t: usize) {
        if let Some(c) = self.counters.get(t) {
            c.finished.store(true, Ordering::Release);
        }
        let mut g = self.ctl.lock();
        g.running -= 1;
        self.cv.notify_all();
    }
}

/// A token bucket of bytes, refilled from the clock only when it runs dry.
///
/// Tokens are kept as bytes × 10⁹, so that refills and waits are exact
/// integers: `rate` bytes/s over `d` ns adds `rate × d` of them.
struct Bucket {
    scaled: u128,
    last: Duration,
}

impl Bucket {
    fn new(bytes: u64, now: Duration) -> Bucket {
        Bucket {
            scaled: u128::from(bytes) * NANOS_PER_SEC,
            last: now,
        }
    }

    /// Takes `n` bytes at `rate` (> 0) bytes/s, or says how long to wait.
    /// Reads the clock (`now`) only when the bucket runs dry.
    fn take(&mut self, n: u64, rate: u64, now: impl FnOnce() -> Duration) -> Option<Duration> {
        let need = u128::from(n) * NANOS_PER_SEC;
        if self.scaled < need {
            let now = now();
            let rate = u128::from(rate.max(1));
            let cap = (rate * BUCKET_DEPTH.as_nanos()).max(need);
            let earned = rate.saturating_mul(now.saturating_sub(self.last).as_nanos());
            self.scaled = self.scaled.saturating_add(earned).min(cap);
            self.last = now;
            if self.scaled < need {
                let nanos = (need - self.scaled).div_ceil(rate);
                let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                return Some(wait.max(MIN_WAIT));
            }
        }
        self.scaled -= need;
        None
    }

    /// Earns nothing for `d` of time that has passed since the last refill.
    fn skip(&mut self, d: Duration) {
        self.last = self.last.saturating_add(d);
    }

    fn reset(&mut self, now: Duration) {
        self.scaled = 0;
        self.last = now;
    }
}

fn worker(shared: &Shared, blocks: &[Arc<RamBlock>], mut seq: OpSequence, write_size: u64, t: usize, threads: u64) {
    let Some(c) = shared.counters.get(t) else { return };
    let (mut ops, mut bytes) = (0u64, 0u64);
    let clock = &shared.clock;
    let mut bucket = Bucket::new(write_size, clock.now());
    let mut slice: Option<Duration> = None;
    loop {
        if seq.limit.is_some_and(|l| seq.k >= l) {
            break;
        }
        match shared.state.load(Ordering::Acquire) {
            RUN => {}
            PAUSE => {
                shared.park();
                bucket.reset(clock.now());
                slice = None;
                continue;
            }
            _ => break,
        }
        let rate = shared.rate.load(Ordering::Relaxed);
        if rate != 0 {
            if let Some(wait) = bucket.take(write_size, (rate / threads).max(1), || clock.now()) {
                shared.sleep(wait);
                continue;
            }
        }
        if ops % 16 == 0 {
            let pct = shared.throttle.load(Ordering::Relaxed);
            if pct == 0 {
                slice = None;
            } else {
                let now = clock.now();
                let start = *slice.get_or_insert(now);
                let ran = now.saturating_sub(start);
                if ran >= THROTTLE_SLICE {
                    let pause = ran
                        .checked_mul(u32::from(pct))
                        .map_or(NAP, |d| d / u32::from(100 - pct.min(99)));
                    shared.sleep(pause);
                    let woke = clock.now();
                    // A throttled vCPU does not make up for the time it was
                    // held: the rate is per running time, so the sleep earns
                    // no tokens (else a rate-limited guest would write at
                    // its full rate under any throttle its bucket covers).
                    bucket.skip(woke.saturating_sub(now));
                    slice = Some(woke);
                }
            }
        }
        let op = seq.next_op();
        let res = match blocks.get(op.block) {
            Some(b) => b.write_pattern(op.page, write_size, op.value),
            None => Err(Error::Refused(format!(
                "workload picked block {} of {}",
                op.block,
                blocks.len()
            ))),
        };
        if let Err(e) = res {
            shared.error.lock().get_or_insert_with(|| e.to_string());
            break;
        }
        ops += 1;
        bytes += write_size;
        c.bytes.store(bytes, Ordering::Relaxed);
        c.ops.store(ops, Ordering::SeqCst);
        shared.progressed();
    }
    shared.exit(t);
}

/// Counters of one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadStats {
    /// Writes done.
    pub ops: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Pages written (each write touches one page, so equal to `ops`).
    pub pages: u64,
    /// Whether the thread has ended (its `max_ops` done, stopped, or failed).
    pub finished: bool,
}

/// Counters of a workload. Exact after [`Workload::pause`] or
/// [`Workload::stop`]; a running workload's are a moment's view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkloadStats {
    /// Writes done, all threads.
    pub ops: u64,
    /// Bytes written, all threads.
    pub bytes: u64,
    /// Pages written, all threads.
    pub pages: u64,
    /// Since the start, by the workload's clock.
    pub elapsed: Duration,
    /// Per thread.
    pub threads: Vec<ThreadStats>,
}

impl WorkloadStats {
    /// Bytes per second since the start.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A running workload. Dropping it stops and joins the threads.
#[derive(Debug)]
pub struct Workload {
    shared: Arc<Shared>,
    /// The writer threads, joined by the first `stop` (or the drop).
    handles: Mutex<Vec<JoinHandle<()>>>,
    started: Duration,
    config: WorkloadConfig,
    write_size: u64,
}

impl Workload {
    /// Starts `config.threads` writer threads on `blocks`, paced by the system clock.
    pub fn start(blocks: Vec<Arc<RamBlock>>, config: WorkloadConfig) -> Result<Workload> {
        Workload::start_with_clock(blocks, config, SystemClock::shared())
    }

    /// Starts `config.threads` writer threads on `blocks`, paced by `clock`
    /// (rate limit, throttle and [`WorkloadStats::elapsed`]).
    pub fn start_with_clock(
        blocks: Vec<Arc<RamBlock>>,
        config: WorkloadConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Workload> {
        let plan = config.plan(&blocks)?;
        let shared = Arc::new(Shared {
            state: AtomicU8::new(RUN),
            throttle: AtomicU8::new(config.throttle),
            rate: AtomicU64::new(config.rate.unwrap_or(0)),
            ctl: Mutex::new(Ctl { parked: 0, running: 0 }),
            cv: Condvar::new(),
            counters: (0..plan.threads).map(|_| Counters::default()).collect(),
            error: Mutex::new(None),
            clock,
            watchers: AtomicUsize::new(0),
        });
        let blocks: Arc<[Arc<RamBlock>]> = blocks.into();
        let w = Workload {
            shared: shared.clone(),
            handles: Mutex::new(Vec::with_capacity(plan.threads)),
            started: shared.clock.now(),
            config,
            write_size: plan.write_size,
        };
        let threads = plan.threads as u64;
        for (t, seq) in plan.sequences.into_iter().enumerate() {
            let (shared, blocks, ws) = (shared.clone(), blocks.clone(), plan.write_size);
            shared.ctl.lock().running += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("vmkit-workload-{t}"))
                .spawn(move || worker(&shared, &blocks, seq, ws, t, threads));
            match spawned {
                Ok(h) => w.handles.lock().push(h),
                Err(e) => {
                    w.shared.ctl.lock().running -= 1;
                    // `w` drops here and stops the threads already started.
                    return Err(Error::Io {
                        context: format!("spawning workload thread {t}"),
                        source: e,
                    });
                }
            }
        }
        Ok(w)
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Bytes per write.
    pub fn write_size(&self) -> u64 {
        self.write_size
    }

    /// Stops every thread between two writes and returns once all have
    /// stopped and acknowledged it (or ended): from then on the counters
    /// and the memory stay as they are until [`resume`](Self::resume).
    pub fn pause(&self) {
        let s = &self.shared;
        if s.state
            .compare_exchange(RUN, PAUSE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        s.clock.wake();
        let mut g = s.ctl.lock();
        while g.parked < g.running && s.state.load(Ordering::Acquire) == PAUSE {
            s.cv.wait_for(&mut g, Duration::from_millis(100));
        }
    }

    /// Lets paused threads go on.
    pub fn resume(&self) {
        let s = &self.shared;
        if s.state
            .compare_exchange(PAUSE, RUN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _g = s.ctl.lock();
            s.cv.notify_all();
        }
    }

    /// Whether the workload is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == PAUSE
    }

    /// Threads parked by a pause (each acknowledged it and writes no more
    /// until resumed). After [`pause`](Self::pause) returns, every thread
    /// that has not ended is parked.
    pub fn parked(&self) -> usize {
        self.shared.ctl.lock().parked
    }

    /// Threads still running (not ended).
    pub fn live_threads(&self) -> usize {
        self.shared.ctl.lock().running
    }

    /// Sets the throttle percentage (0..=99): each thread sleeps that share of its time.
    pub fn set_throttle(&self, pct: u8) -> Result<()> {
        if pct > 99 {
            return Err(invalid("workload throttle", format!("{pct}% is above 99%")));
        }
        self.shared.throttle.store(pct, Ordering::Relaxed);
        Ok(())
    }

    /// The throttle percentage.
    pub fn throttle(&self) -> u8 {
        self.shared.throttle.load(Ordering::Relaxed)
    }

    /// Sets the total rate in bytes/s (`None`: unlimited).
    pub fn set_rate(&self, rate: Option<u64>) -> Result<()> {
        if rate == Some(0) {
            return Err(invalid("workload rate", "must be positive (None means unlimited)"));
        }
        self.shared.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// The counters now.
    pub fn stats(&self) -> WorkloadStats {
        let threads: Vec<ThreadStats> = self
            .shared
            .counters
            .iter()
            .map(|c| {
                let ops = c.ops.load(Ordering::Relaxed);
                ThreadStats {
                    ops,
                    bytes: c.bytes.load(Ordering::Relaxed),
                    pages: ops,
                    finished: c.finished.load(Ordering::Acquire),
                }
            })
            .collect();
        WorkloadStats {
            ops: threads.iter().map(|t| t.ops).sum(),
            bytes: threads.iter().map(|t| t.bytes).sum(),
            pages: threads.iter().map(|t| t.pages).sum(),
            elapsed: self.shared.clock.now().saturating_sub(self.started),
            threads,
        }
    }

    /// Whether every thread has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.ctl.lock().running == 0
    }

    /// Waits up to `timeout` for every thread to end (with `max_ops`);
    /// returns whether they all have.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.ctl.lock();
        while g.running > 0 {
            if self.shared.cv.wait_until(&mut g, deadline).timed_out() {
                return g.running == 0;
            }
        }
        true
    }

    /// Waits up to `timeout` (real time) until `done` holds for the
    /// counters, looking again after every write; returns whether it
    /// holds. This is how to wait for progress without sleeping.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&WorkloadStats) -> bool) -> bool {
        let s = &self.shared;
        let give_up = Instant::now() + timeout;
        s.watchers.fetch_add(1, Ordering::SeqCst);
        let met = loop {
            if done(&self.stats()) {
                break true;
            }
            let mut g = s.ctl.lock();
            if g.running == 0 {
                drop(g);
                break done(&self.stats());
            }
            // Bounded, so a notification missed between the look and the
            // wait costs at most one nap.
            let nap = (Instant::now() + Duration::from_millis(10)).min(give_up);
            if s.cv.wait_until(&mut g, nap).timed_out() && Instant::now() >= give_up {
                drop(g);
                break done(&self.stats());
            }
        };
        s.watchers.fetch_sub(1, Ordering::SeqCst);
        met
    }

    /// The first error a thread met (a write refused), if any; that thread ended.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().clone()
    }

    fn halt(&self) {
        self.shared.state.store(STOP, Ordering::Release);
        self.shared.clock.wake();
        {
            let _g = self.shared.ctl.lock();
            self.shared.cv.notify_all();
        }
        let handles = std::mem::take(&mut *self.handles.lock());
        for h in handles {
            // A worker cannot panic on its own (no unwraps, writes return
            // errors); if one did, its counters still hold what it wrote.
            let _ = h.join();
        }
    }

    /// Stops and joins the threads; returns the final counters. Anyone
    /// waiting in [`wait`](Self::wait) or [`wait_until`](Self::wait_until)
    /// returns, since no thread runs any more.
    pub fn stop(&self) -> WorkloadStats {
        self.halt();
        self.stats()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_and_limits() {
        let cfg = WorkloadConfig {
            threads: 3,
            max_ops: Some(10),
            pattern: AccessPattern::Sequential,
            ..Default::default()
        };
        let seqs: Vec<Vec<WorkloadOp>> = (0..3)
            .map(|t| cfg.op_sequence(&[4, 3], t).map(|s| s.collect()).unwrap_or_default())
            .collect();
        assert_eq!(seqs.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 3, 3]);
        // Thread 0 owns global pages 0, 3, 6 = (0,0), (0,3), (1,2).
        let pages: Vec<(usize, u64)> = seqs[0].iter().map(|o| (o.block, o.page)).collect();
        assert_eq!(pages, vec![(0, 0), (0, 3), (1, 2), (0, 0)]);
        let pages: Vec<(usize, u64)> = seqs[2].iter().map(|o| (o.block, o.page)).collect();
        assert_eq!(pages, vec![(0, 2), (1, 1), (0, 2)]);
        assert!(cfg.op_sequence(&[1, 1], 0).is_err(), "fewer pages than threads");
        assert!(cfg.op_sequence(&[4], 3).is_err());
    }

    #[test]
    fn patterns_stay_in_range_and_skew() {
        let counts = [1000u64];
        for pattern in [
            AccessPattern::Uniform,
            AccessPattern::HotSet {
                fraction: 0.1,
                probability: 0.9,
            },
            AccessPattern::Zipf { s: 1.0 },
            AccessPattern::Zipf { s: 1.5 },
            AccessPattern::Zipf { s: 0.5 },
        ] {
            let cfg = WorkloadConfig {
                pattern,
                seed: 9,
                max_ops: Some(20_000),
                ..Default::default()
            };
            let ops: Vec<WorkloadOp> = cfg.op_sequence(&counts, 0).map(|s| s.collect()).unwrap_or_default();
            assert_eq!(ops.len(), 20_000);
            assert!(ops.iter().all(|o| o.block == 0 && o.page < 1000), "{pattern:?}");
            let low = ops.iter().filter(|o| o.page < 100).count();
            match pattern {
                AccessPattern::Uniform => assert!((1500..2500).contains(&low), "uniform {low}"),
                AccessPattern::HotSet { .. } => assert!(low > 17_000, "hot set {low}"),
                AccessPattern::Zipf { s } if s >= 1.0 => assert!(low > 12_000, "zipf {s} {low}"),
                _ => assert!(low > 2500, "zipf {low}"),
            }
        }
    }

    #[test]
    fn bad_configs() {
        let ok = WorkloadConfig::default();
        for cfg in [
            WorkloadConfig {
                threads: 0,
                ..ok.clone()
            },
            WorkloadConfig {
                rate: Some(0),
                ..ok.clone()
            },
            WorkloadConfig {
                throttle: 100,
                ..ok.clone()
            },
            WorkloadConfig {
                pattern: AccessPattern::HotSet {
                    fraction: 0.0,
                    probability: 0.5,
                },
                ..ok.clone()
            },
            WorkloadConfig {
                pattern: AccessPattern::HotSet {
                    fraction: 0.5,
                    probability: f64::NAN,
                },
                ..ok.clone()
            },
            WorkloadConfig {
                pattern: AccessPattern::Zipf { s: -1.0 },
                ..ok.clone()
            },
            WorkloadConfig {
                pattern: AccessPattern::Zipf { s: f64::INFINITY },
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(cfg.op_sequence(&[8], 0), Err(Error::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }
}
