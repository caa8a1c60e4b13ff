//! The precopy engine (live migration's source side) for Python.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pyo3::exceptions::{PyInterruptedError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use vmkit_migration::precopy::{
    Checkpoint, DEFAULT_DOWNTIME_LIMIT, DEFAULT_MAX_BANDWIDTH, DEFAULT_MAX_PASSES, Fault, FaultAction, FaultPlan,
    FaultTrigger, Precopy, PrecopyControl, PrecopyError, PrecopyParams, PrecopySnapshot, StopError, SwitchoverReason,
};
use vmkit_migration::savevm::SaveOptions;
use vmkit_migration::transport::{FdRegistry, OpenError, OpenOptions, ReturnChannel, Sink, Transport, TransportError};

use super::fd_registry::PyFdRegistry;
use super::stream::save_set;
use crate::errors::{MigrationError, migration_err, os_error};
use crate::memory::ram::PyRamBlock;
use crate::qom::object::PyObj;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the Unix epoch (`None` for a time before it).
fn epoch_micros(t: SystemTime) -> Option<u64> {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_micros()).ok()
}

/// One outgoing live migration to a URI (`unix:`, `tcp:`, `file:`,
/// `exec:`, `fd:NAME` from `fds`): the engine runs in `run`; `cancel`,
/// `set_params` and `snapshot` may be called from other threads meanwhile.
/// `zero_page_detection=False` sends zero pages whole; `ignore_shared`
/// (QEMU's `x-ignore-shared`) lists shared RAM blocks without their pages.
#[pyclass(name = "Precopy", module = "vmkit._core.migration", frozen)]
pub struct PyPrecopy {
    transport: Transport,
    allow_remote: bool,
    fds: Arc<FdRegistry>,
    control: Arc<PrecopyControl>,
    fault: parking_lot::Mutex<Option<Arc<Fault>>>,
}

#[pymethods]
impl PyPrecopy {
    #[new]
    #[pyo3(signature = (uri, *, max_bandwidth=DEFAULT_MAX_BANDWIDTH, downtime_limit_ms=None,
        max_passes=DEFAULT_MAX_PASSES, allow_remote=false, fds=None, zero_page_detection=true, ignore_shared=false, return_path=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        uri: &str,
        max_bandwidth: u64,
        downtime_limit_ms: Option<u64>,
        max_passes: u32,
        allow_remote: bool,
        fds: Option<PyRef<'_, PyFdRegistry>>,
        zero_page_detection: bool,
        ignore_shared: bool,
        return_path: bool,
    ) -> PyResult<Self> {
        let transport: Transport = uri
            .parse()
            .map_err(|e: TransportError| os_error(py, None, e.os_failure()))?;
        if max_passes == 0 {
            return Err(PyValueError::new_err("max_passes must be at least 1"));
        }
        let params = PrecopyParams {
            max_bandwidth,
            downtime_limit: downtime_limit_ms.map_or(DEFAULT_DOWNTIME_LIMIT, Duration::from_millis),
            max_passes,
            return_path,
            stream: SaveOptions {
                zero_page_detection,
                ignore_shared,
                ..SaveOptions::default()
            },
        };
        Ok(PyPrecopy {
            transport,
            allow_remote,
            fds: fds.map_or_else(|| Arc::new(FdRegistry::new()), |f| Arc::clone(&f.inner)),
            control: Arc::new(PrecopyControl::new(params)),
            fault: parking_lot::Mutex::new(None),
        })
    }

    /// The destination URI.
    #[getter]
    fn uri(&self) -> String {
        self.transport.to_string()
    }

    /// Connects and migrates RAM blocks `ram` and the devices below
    /// `devices` (the machine must run its guest meanwhile); calls `stop()`
    /// once at switchover, with the GIL, to pause the source. Returns the
    /// final snapshot (see `snapshot`) with `devices`. A cancelled run
    /// raises `InterruptedError`, a transport failure `OSError`, a stream
    /// or device failure the matching `MigrationError`; an exception from
    /// `stop` comes back unchanged. `progress(kind, n)`, if given, is
    /// called with the GIL at `("setup", 0)` (dirty logging on, the first
    /// pass begins) and `("pass", n)` (pass `n` ended); its exceptions go
    /// to `sys.unraisablehook`.
    #[pyo3(signature = (*, machine_type, ram, stop, devices=None, timeout=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        machine_type: String,
        ram: Vec<Bound<'_, PyRamBlock>>,
        stop: Py<PyAny>,
        devices: Option<Bound<'_, PyObj>>,
        timeout: Option<f64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyDict>> {
        let set = save_set(py, machine_type, &ram, devices.as_ref())?;
        let open = OpenOptions {
            allow_remote: self.allow_remote,
            timeout: timeout
                .map(|t| {
                    Duration::try_from_secs_f64(t)
                        .map_err(|_| PyValueError::new_err(format!("timeout must be seconds >= 0, not {t}")))
                })
                .transpose()?,
            ..OpenOptions::default()
        };
        let control = Arc::clone(&self.control);
        let fault = self.fault.lock().clone();
        let outcome = py.detach(|| {
            let interrupt = || -> PyResult<()> {
                Python::attach(|py| py.check_signals())?;
                if control.is_cancelled() {
                    return Err(PyInterruptedError::new_err("migration cancelled"));
                }
                Ok(())
            };
            let sink = Sink::open(&self.transport, &open, &self.fds, &interrupt)?;
            let stop = || -> Result<(), StopError> {
                Python::attach(|py| stop.call0(py).map(|_| ())).map_err(|e| Box::new(e) as StopError)
            };
            let report = |kind: &str, n: u32| {
                if let Some(progress) = &progress {
                    Python::attach(|py| {
                        if let Err(e) = progress.call1(py, (kind, n)) {
                            e.write_unraisable(py, Some(progress.bind(py)));
                        }
                    });
                }
            };
            let mut precopy = Precopy::new(&set, Arc::clone(&control)).observe(|checkpoint| match checkpoint {
                Checkpoint::SetupDone => report("setup", 0),
                Checkpoint::PassDone(pass) => report("pass", pass.pass),
                _ => {}
            });
            if let Some(fault) = fault {
                precopy = precopy.inject(fault);
            }
            if control.params().return_path {
                let watched = Arc::clone(&control);
                let keep_waiting = Box::new(move || !watched.is_cancelled());
                match ReturnChannel::of(sink.as_fd(), keep_waiting) {
                    Ok(Some(channel)) => precopy = precopy.return_path(Box::new(channel)),
                    // No way back: the engine refuses the run and says so.
                    Ok(None) => {}
                    Err(e) => {
                        let what = "return path".to_owned();
                        return Err(OpenError::Transport(TransportError::Io { what, source: e }));
                    }
                }
            }
            let result = precopy.run_to_fd(sink.as_fd(), stop).and_then(|outcome| {
                sink.commit()
                    .map(|()| outcome)
                    .map_err(|e| PrecopyError::from(vmkit_migration::Error::from(e)))
            });
            Ok::<_, OpenError<PyErr>>(result)
        });
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => return Err(precopy_err(py, e)),
            Err(OpenError::Interrupted(e)) => return Err(e),
            Err(OpenError::Transport(e)) => return Err(os_error(py, None, e.os_failure())),
        };
        let d = snapshot_dict(py, &outcome.snapshot)?;
        d.bind(py).set_item("devices", outcome.devices)?;
        Ok(d)
    }

    /// Sets the fault the run applies to its stream (before `run`):
    /// `action` `"cut"`, `"corrupt"` (`length` bytes inverted), `"drop"`
    /// (`length` bytes not sent) or `"delay"` (`delay_ms`, ended by
    /// `cancel`), at exactly one of `offset` (stream offset),
    /// `pass_number` (where that pass begins, from 1) or `section` (where
    /// the first section of that idstr begins: `"ram"` or a device's).
    /// Raises `ValueError` for anything else.
    #[pyo3(signature = (action, *, offset=None, pass_number=None, section=None, length=1, delay_ms=0))]
    fn inject_fault(
        &self,
        action: &str,
        offset: Option<u64>,
        pass_number: Option<u32>,
        section: Option<String>,
        length: u64,
        delay_ms: u64,
    ) -> PyResult<()> {
        let action = match action {
            "cut" => FaultAction::Cut,
            "corrupt" => FaultAction::Corrupt { bytes: length },
            "drop" => FaultAction::Drop { bytes: length },
            "delay" => FaultAction::Delay(Duration::from_millis(delay_ms)),
            other => return Err(PyValueError::new_err(format!("unknown fault action '{other}'"))),
        };
        if length == 0 {
            return Err(PyValueError::new_err("length must be at least 1"));
        }
        let at = match (offset, pass_number, section) {
            (Some(o), None, None) => FaultTrigger::Offset(o),
            (None, Some(0), None) => return Err(PyValueError::new_err("pass_number must be at least 1")),
            (None, Some(p), None) => FaultTrigger::Pass(p),
            (None, None, Some(s)) => FaultTrigger::Section(s),
            _ => {
                return Err(PyValueError::new_err(
                    "a fault needs exactly one of offset, pass_number and section",
                ));
            }
        };
        *self.fault.lock() = Some(Fault::new(FaultPlan { action, at }));
        Ok(())
    }

    /// The injected fault's state, or `None` without one: `armed-at` (the
    /// stream offset it applies at, once the run reached its pass or
    /// section) and `fired` (the stream reached it).
    fn fault(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        let Some(fault) = self.fault.lock().clone() else {
            return Ok(None);
        };
        let report = fault.report();
        let d = PyDict::new(py);
        d.set_item("armed-at", report.armed_at)?;
        d.set_item("fired", report.fired)?;
        Ok(Some(d.unbind()))
    }

    /// Asks the run to stop at its next batch (QMP `migrate_cancel`).
    fn cancel(&self) {
        self.control.cancel();
    }

    /// Changes the bandwidth limit (bytes/s, 0 = none) or the downtime
    /// limit of the run, from its next batch (`migrate-set-parameters`
    /// during a migration).
    #[pyo3(signature = (*, max_bandwidth=None, downtime_limit_ms=None))]
    fn set_params(&self, max_bandwidth: Option<u64>, downtime_limit_ms: Option<u64>) {
        let mut params = self.control.params();
        if let Some(b) = max_bandwidth {
            params.max_bandwidth = b;
        }
        if let Some(d) = downtime_limit_ms {
            params.downtime_limit = Duration::from_millis(d);
        }
        self.control.set_params(params);
    }

    /// Where the run is: `phase` (QEMU's status name), `ram` (QEMU's
    /// MigrationInfo ram statistics), `passes`, `setup_time_ms`,
    /// `total_time_ms`, `expected_downtime_ms`, `downtime_ms`,
    /// `source_stopped`, `switchover` (`"converged"`, `"max-passes"` or
    /// `None` before switchover), `error`, and `stamps`: the switchover's
    /// wall-clock times (`stop`, `stopped`, `synced`, `ram_sent`,
    /// `devices_sent`), microseconds since the Unix epoch or `None`.
    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        snapshot_dict(py, &self.control.snapshot())
    }
}

/// A failed run as Python sees it.
fn precopy_err(py: Python<'_>, e: PrecopyError) -> PyErr {
    match e {
        PrecopyError::Cancelled { .. } => PyInterruptedError::new_err(e.to_string()),
        PrecopyError::Stop(source) => match source.downcast::<PyErr>() {
            Ok(original) => *original,
            Err(other) => PyValueError::new_err(other.to_string()),
        },
        PrecopyError::Stream(e) => match e.os_failure() {
            Some(failure) => os_error(py, None, failure),
            None => migration_err(py, *e),
        },
        PrecopyError::ReturnPath { .. } => MigrationError::new_err(e.to_string()),
    }
}

fn snapshot_dict(py: Python<'_>, s: &PrecopySnapshot) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("phase", s.phase.as_str())?;
    let ram = PyDict::new(py);
    let r = &s.ram;
    for (k, v) in [
        ("transferred", r.transferred),
        ("remaining", r.remaining),
        ("total", r.total),
        ("duplicate", r.duplicate),
        ("normal", r.normal),
        ("normal-bytes", r.normal_bytes),
        ("dirty-sync-count", r.dirty_sync_count),
        ("precopy-bytes", r.precopy_bytes),
        ("downtime-bytes", r.downtime_bytes),
        ("page-size", r.page_size),
    ] {
        ram.set_item(k, v)?;
    }
    ram.set_item("dirty-pages-rate", r.dirty_pages_rate)?;
    ram.set_item("pages-per-second", r.pages_per_second)?;
    ram.set_item("mbps", r.mbps)?;
    d.set_item("ram", ram)?;
    let passes = PyList::empty(py);
    for p in &s.passes {
        let e = PyDict::new(py);
        e.set_item("pass", p.pass)?;
        e.set_item("dirty_pages", p.dirty_pages)?;
        e.set_item("bytes", p.bytes)?;
        e.set_item("pages", p.pages)?;
        e.set_item("zero_pages", p.zero_pages)?;
        e.set_item("duration_ms", p.duration.as_secs_f64() * 1000.0)?;
        e.set_item("bandwidth", p.bandwidth)?;
        e.set_item("final", p.final_pass)?;
        passes.append(e)?;
    }
    d.set_item("passes", passes)?;
    d.set_item("setup_time_ms", millis(s.setup_time))?;
    d.set_item("total_time_ms", millis(s.total_time))?;
    d.set_item("expected_downtime_ms", s.expected_downtime.map(millis))?;
    d.set_item("downtime_ms", s.downtime.map(millis))?;
    d.set_item("source_stopped", s.source_stopped)?;
    d.set_item(
        "switchover",
        s.switchover.map(|r| match r {
            SwitchoverReason::Converged => "converged",
            SwitchoverReason::MaxPasses => "max-passes",
        }),
    )?;
    d.set_item("error", s.error.clone())?;
    let stamps = PyDict::new(py);
    let t = &s.stamps;
    for (k, v) in [
        ("stop", t.stop),
        ("stopped", t.stopped),
        ("synced", t.synced),
        ("ram_sent", t.ram_sent),
        ("devices_sent", t.devices_sent),
    ] {
        stamps.set_item(k, v.and_then(epoch_micros))?;
    }
    d.set_item("stamps", stamps)?;
    Ok(d.unbind())
}
