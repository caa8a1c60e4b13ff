//! Fault injection: a [`FaultPlan`] cuts, corrupts, drops or delays the
//! outgoing stream at a byte offset, at the start of a pass, or at the
//! first section of a name; [`FaultWriter`] applies it around the sink.
//!
//! It exists to prove the failure paths: whatever breaks the stream, the
//! source must end failed or cancelled with its state intact, and the
//! destination must refuse what it got. The engine arms a pass or section
//! trigger at the stream offset where that pass or section begins; the
//! writer acts when the stream reaches that offset. Offsets are stream
//! offsets (the first byte of the header is 0), so the writer sits below
//! the engine's buffer and counts every byte the engine meant to send —
//! dropped ones included.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use vmkit_memory::Clock;

use super::control::PrecopyControl;

/// What happens to the stream at the fault's point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// The connection is closed there: the sink takes no byte from that
    /// offset on, the run fails with `EPIPE` (as when the destination went
    /// away), and the destination sees the stream end there.
    Cut,
    /// `bytes` bytes from there are inverted (each XOR 0xff) on their way
    /// out; the run goes on. Page contents carry no checksum (nor do
    /// QEMU's): a flip inside a page reaches the destination unnoticed.
    Corrupt {
        /// How many bytes; at least 1.
        bytes: u64,
    },
    /// `bytes` bytes from there are not sent, though the run counts them
    /// as sent; the run goes on.
    Drop {
        /// How many bytes; at least 1.
        bytes: u64,
    },
    /// The stream stops there for this long on the run's clock, then goes
    /// on. A cancel ends the wait, and the run then ends cancelled.
    Delay(Duration),
}

/// Where the fault applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTrigger {
    /// At this stream offset.
    Offset(u64),
    /// Where pass `n` (1 = the first, full pass) begins: its RAM section
    /// header. The final pass after switchover counts too.
    Pass(u32),
    /// Where the first section of this idstr begins (`ram`, whose first
    /// section is the START of setup, or a device's idstr).
    Section(String),
}

/// A fault: an action at a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// What happens.
    pub action: FaultAction,
    /// Where.
    pub at: FaultTrigger,
}

/// A point of a run a trigger may name: the engine reports each with the
/// stream offset where it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint<'a> {
    /// Pass `n` begins.
    Pass(u32),
    /// A section of this idstr begins.
    Section(&'a str),
}

/// What became of a fault, for its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// The stream offset it applies at, once known (an offset trigger at
    /// once; a pass or section trigger when the run reached it).
    pub armed_at: Option<u64>,
    /// Whether the stream reached that offset and the action was taken
    /// (for a delay: the wait began).
    pub fired: bool,
}

#[derive(Debug, Default)]
struct FaultState {
    report: FaultReport,
    /// The connection is closed (after a cut).
    cut: bool,
}

/// A plan with its state, shared by the run (which arms and applies it)
/// and its owner (which reads [`report`](Self::report)). One fault serves
/// one run.
#[derive(Debug)]
pub struct Fault {
    plan: FaultPlan,
    state: Mutex<FaultState>,
}

impl Fault {
    /// A fault following `plan`; an offset trigger is armed at once.
    pub fn new(plan: FaultPlan) -> Arc<Fault> {
        let armed_at = match plan.at {
            FaultTrigger::Offset(offset) => Some(offset),
            _ => None,
        };
        Arc::new(Fault {
            plan,
            state: Mutex::new(FaultState {
                report: FaultReport { armed_at, fired: false },
                cut: false,
            }),
        })
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// What became of it so far.
    pub fn report(&self) -> FaultReport {
        self.state.lock().report
    }

    /// The run reached `point` at stream offset `offset`: arms the fault
    /// there if its trigger names that point (the first time only).
    pub fn mark(&self, point: FaultPoint<'_>, offset: u64) {
        let hit = match (&self.plan.at, point) {
            (FaultTrigger::Pass(n), FaultPoint::Pass(p)) => *n == p,
            (FaultTrigger::Section(name), FaultPoint::Section(s)) => name == s,
            _ => false,
        };
        let mut st = self.state.lock();
        if hit && st.report.armed_at.is_none() {
            st.report.armed_at = Some(offset);
        }
    }
}

/// What the writer does with the next bytes.
enum Act {
    /// Pass `n` bytes through unchanged.
    Through(usize),
    /// Pass `n` bytes through inverted.
    Invert(usize),
    /// Swallow `n` bytes.
    Swallow(usize),
}

/// What the writer does at its position.
enum Step {
    /// Act on the next bytes.
    Act(Act),
    /// The connection is closed.
    Closed,
    /// Wait, then look again.
    Wait(Duration),
}

/// A sink writer applying a [`Fault`] (or none: then it only passes bytes
/// on). It counts the bytes it was handed, which are the stream's offsets
/// as long as nothing else writes to the sink.
pub struct FaultWriter<W: Write> {
    inner: W,
    fault: Option<Arc<Fault>>,
    clock: Arc<dyn Clock>,
    control: Arc<PrecopyControl>,
    /// Stream bytes handed on or swallowed so far.
    at: u64,
}

impl<W: Write> std::fmt::Debug for FaultWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultWriter")
            .field("fault", &self.fault)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl<W: Write> FaultWriter<W> {
    /// Writes to `inner`, applying `fault`; a delay waits on `clock` and
    /// ends early when `control` is cancelled.
    pub fn new(
        inner: W,
        fault: Option<Arc<Fault>>,
        clock: Arc<dyn Clock>,
        control: Arc<PrecopyControl>,
    ) -> FaultWriter<W> {
        FaultWriter {
            inner,
            fault,
            clock,
            control,
            at: 0,
        }
    }

    /// What to do with the next `len` bytes.
    fn step(&self, fault: &Fault, len: usize) -> Step {
        let mut st = fault.state.lock();
        if st.cut {
            return Step::Closed;
        }
        let Some(armed) = st.report.armed_at else {
            return Step::Act(Act::Through(len));
        };
        if self.at < armed {
            // Up to the fault's offset only: the next call starts there.
            return Step::Act(Act::Through(clamp(armed - self.at, len)));
        }
        let (span, fired) = (self.at - armed, st.report.fired);
        match fault.plan.action {
            FaultAction::Cut => {
                st.report.fired = true;
                st.cut = true;
                Step::Closed
            }
            FaultAction::Delay(wait) if !fired => {
                st.report.fired = true;
                Step::Wait(wait)
            }
            FaultAction::Corrupt { bytes } if span < bytes => {
                st.report.fired = true;
                Step::Act(Act::Invert(clamp(bytes - span, len)))
            }
            FaultAction::Drop { bytes } if span < bytes => {
                st.report.fired = true;
                Step::Act(Act::Swallow(clamp(bytes - span, len)))
            }
            _ => Step::Act(Act::Through(len)),
        }
    }
}

/// `n` as a count of at most `len` bytes.
fn clamp(n: u64, len: usize) -> usize {
    usize::try_from(n).map_or(len, |n| n.min(len))
}

impl<W: Write> Write for FaultWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(fault) = self.fault.clone() else {
            return self.inner.write(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = match next_act(self, &fault, buf.len())? {
            Act::Through(n) => self.inner.write(&buf[..n])?,
            Act::Invert(n) => {
                let flipped: Vec<u8> = buf[..n].iter().map(|b| b ^ 0xff).collect();
                self.inner.write(&flipped)?
            }
            Act::Swallow(n) => n,
        };
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(fault) = &self.fault
            && fault.state.lock().cut
        {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        self.inner.flush()
    }
}

/// What to do with the next `len` bytes, after any wait; a closed
/// connection is `EPIPE`, a wait ended by a cancel `ECANCELED`.
fn next_act<W: Write>(w: &FaultWriter<W>, fault: &Fault, len: usize) -> io::Result<Act> {
    loop {
        match w.step(fault, len) {
            Step::Closed => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
            Step::Wait(wait) => {
                let deadline = w.clock.now().saturating_add(wait);
                let control = &w.control;
                w.clock.sleep_until(deadline, &|| !control.is_cancelled());
                if control.is_cancelled() {
                    return Err(io::Error::from_raw_os_error(libc::ECANCELED));
                }
            }
            Step::Act(act) => return Ok(act),
        }
    }
}

#[cfg(test)]
mod tests {
    use vmkit_memory::ManualClock;

    use super::*;

    /// Writes `data` through a writer with `plan` in pieces of `chunk`
    /// bytes (as a buffer's flushes come); returns what reached the sink.
    fn through(plan: FaultPlan, data: &[u8], chunk: usize) -> (Vec<u8>, io::Result<()>, FaultReport) {
        let fault = Fault::new(plan);
        let control = Arc::new(PrecopyControl::default());
        let mut sink = Vec::new();
        let result = {
            let mut w = FaultWriter::new(&mut sink, Some(Arc::clone(&fault)), ManualClock::new(), control);
            data.chunks(chunk)
                .try_for_each(|c| w.write_all(c))
                .and_then(|()| w.flush())
        };
        (sink, result, fault.report())
    }

    fn at(action: FaultAction, offset: u64) -> FaultPlan {
        FaultPlan {
            action,
            at: FaultTrigger::Offset(offset),
        }
    }

    #[test]
    fn corrupt_and_drop_span_several_writes() {
        let data: Vec<u8> = (0..100).collect();
        for chunk in [1, 7, 100] {
            let (sink, result, report) = through(at(FaultAction::Corrupt { bytes: 10 }, 45), &data, chunk);
            assert!(result.is_ok());
            let mut want = data.clone();
            want[45..55].iter_mut().for_each(|b| *b ^= 0xff);
            assert_eq!(sink, want, "chunks of {chunk}");
            assert!(report.fired);

            let (sink, result, _) = through(at(FaultAction::Drop { bytes: 10 }, 45), &data, chunk);
            assert!(result.is_ok());
            assert_eq!(sink, [&data[..45], &data[55..]].concat(), "chunks of {chunk}");
        }
    }

    #[test]
    fn a_cut_fails_there_and_an_unreached_fault_never_fires() {
        let data = [7u8; 64];
        let (sink, result, report) = through(at(FaultAction::Cut, 10), &data, 8);
        assert_eq!(sink, [7u8; 10]);
        assert_eq!(result.map_err(|e| e.raw_os_error()), Err(Some(libc::EPIPE)));
        assert!(report.fired);
        let (sink, result, report) = through(at(FaultAction::Cut, 64), &data, 8);
        assert_eq!((sink.len(), result.is_ok(), report.fired), (64, true, false));
    }

    #[test]
    fn triggers_arm_once_at_the_first_matching_point() {
        let fault = Fault::new(FaultPlan {
            action: FaultAction::Cut,
            at: FaultTrigger::Section("dev".into()),
        });
        fault.mark(FaultPoint::Pass(1), 5);
        fault.mark(FaultPoint::Section("ram"), 6);
        assert_eq!(fault.report().armed_at, None);
        fault.mark(FaultPoint::Section("dev"), 70);
        fault.mark(FaultPoint::Section("dev"), 90);
        assert_eq!(fault.report().armed_at, Some(70));
    }
}
