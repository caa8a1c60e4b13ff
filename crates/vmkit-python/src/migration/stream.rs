//! Migration-stream bindings: the analyzer report, loading a stream's RAM
//! into blocks, and whole-machine save and restore.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use std::io::{BufReader, Write};

use pyo3::exceptions::{PyIOError, PyInterruptedError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vmkit_migration::analyze::analyze_with_ram;
use vmkit_migration::savevm::{self, RestoreOptions, SaveOptions, SaveSet, Unmodelled, collect_devices, save_to_sink};
use vmkit_migration::transport::{
    FdRegistry, Listener, OpenError, OpenOptions, ReturnChannel, Sink, Transport, TransportError, open_source,
};
use vmkit_migration::wire::reader::READ_BUFFER;
use vmkit_migration::wire::{ParserOptions, RamSectionReader};

use super::fd_registry::PyFdRegistry;
use crate::convert::json_to_py;
use crate::errors::{migration_err, os_error};
use crate::memory::ram::PyRamBlock;
use crate::qom::object::PyObj;

fn open(path: &PathBuf) -> PyResult<File> {
    File::open(path).map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))
}

/// Analyzes the migration stream file at `path`; returns the report as JSON
/// text (see `vmkit.migration.analyze` for the layout). Only a failure to
/// open the file raises (`OSError`); a damaged stream is described by the
/// report's `"error"`.
#[pyfunction]
pub fn analyze(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    py.detach(move || {
        let mut f = open(&path)?;
        let report = vmkit_migration::analyze::analyze(&mut f, ParserOptions::default());
        serde_json::to_string(&report).map_err(|e| PyIOError::new_err(e.to_string()))
    })
}

/// Parses the migration stream file at `path` like `analyze`, and
/// loads its RAM sections into `blocks` (matched by name). Blocks the
/// stream's MEM_SIZE list announces but `blocks` lacks are decoded and
/// discarded; a given block must have the announced length. Raises
/// `ValueError` if two blocks share a name. Returns the
/// report as JSON text (its `ram.blocks` list `blocks` first, then the
/// discarded ones); a damaged stream (or a length mismatch) is
/// described by its `"error"`, with the pages before it applied.
#[pyfunction]
pub fn load_ram(py: Python<'_>, path: PathBuf, blocks: Vec<Bound<'_, PyRamBlock>>) -> PyResult<String> {
    let blocks: Vec<_> = blocks.iter().map(|b| b.get().block.clone()).collect();
    let mut names = HashSet::new();
    if let Some(b) = blocks.iter().find(|b| !names.insert(b.name())) {
        return Err(PyValueError::new_err(format!("RAM block '{}' given twice", b.name())));
    }
    drop(names);
    py.detach(move || {
        let mut f = open(&path)?;
        let ram = RamSectionReader::apply_to_some(blocks);
        let report = analyze_with_ram(&mut f, ParserOptions::default(), ram);
        serde_json::to_string(&report).map_err(|e| PyIOError::new_err(e.to_string()))
    })
}

/// The save set: RAM blocks and the devices found below `devices`.
pub(super) fn save_set(
    py: Python<'_>,
    machine_type: String,
    ram: &[Bound<'_, PyRamBlock>],
    devices: Option<&Bound<'_, PyObj>>,
) -> PyResult<SaveSet> {
    let ram = ram.iter().map(|b| b.get().block.clone()).collect();
    let sections = match devices {
        Some(root) => collect_devices(&root.get().handle).map_err(|e| migration_err(py, e.into()))?,
        None => Vec::new(),
    };
    Ok(SaveSet::new(machine_type, ram, sections))
}

fn stats_dict<'py>(py: Python<'py>, items: &[(&str, u64)]) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, *v)?;
    }
    Ok(d.unbind())
}

/// Runs `job` without the GIL, handing it an interrupt check that runs
/// Python's signal handlers (a pending Ctrl-C, or a handler's exception;
/// they run on the main thread only) and then, if `cancelled` is given,
/// calls it: a true answer is an `InterruptedError` ("`what` cancelled").
/// The transport calls the check while it waits for a FIFO's peer, so
/// either ends that wait. An interrupt is that exception; a transport that
/// cannot be opened is an `OSError` naming `path`.
fn with_transport<T: Send>(
    py: Python<'_>,
    path: &std::path::Path,
    what: &str,
    cancelled: Option<Py<PyAny>>,
    job: impl Send + FnOnce(&dyn Fn() -> PyResult<()>) -> Result<T, OpenError<PyErr>>,
) -> PyResult<T> {
    let outcome = py.detach(|| {
        let interrupt = || {
            Python::attach(|py| {
                py.check_signals()?;
                match &cancelled {
                    Some(cancelled) if cancelled.call0(py)?.is_truthy(py)? => {
                        Err(PyInterruptedError::new_err(format!("{what} cancelled")))
                    }
                    _ => Ok(()),
                }
            })
        };
        job(&interrupt)
    });
    match outcome {
        Ok(done) => Ok(done),
        Err(OpenError::Interrupted(e)) => Err(e),
        Err(OpenError::Transport(e)) => Err(os_error(py, Some(path), e.os_failure())),
    }
}

/// A save failure as Python sees it: I/O on the sink is an `OSError`
/// (with `offset`), everything else the matching `MigrationError`.
fn save_err(py: Python<'_>, path: &std::path::Path, e: vmkit_migration::Error) -> PyErr {
    match e.os_failure() {
        Some(failure) => os_error(py, Some(path), failure),
        None => migration_err(py, e),
    }
}

/// Saves a paused machine to the file (or FIFO, device or Unix socket) at
/// `path`: the configuration naming `machine_type`, the RAM blocks `ram`
/// (in this order), and a section for every realized device with a VMState
/// below the QOM object `devices` (none if `None`). A regular file is
/// written beside `path` and renamed over it once complete. A FIFO without
/// a reader is waited for, up to `open_timeout` seconds (`None`: until a
/// reader comes), checking for Python signals (Ctrl-C) and calling
/// `cancelled` (if given) every few milliseconds: when it returns true the
/// save fails with `InterruptedError("save cancelled")`. Once the sink is
/// open neither is checked: a write into a reader that stopped reading
/// blocks until it reads or closes its end. Returns the statistics:
/// `bytes`, `ram_bytes`, `zero_pages`, `normal_pages`, `devices`.
#[pyfunction]
#[pyo3(signature = (path, *, machine_type, ram, devices=None, footers=true, vmdesc=true, open_timeout=None, cancelled=None))]
#[allow(clippy::too_many_arguments)]
pub fn save(
    py: Python<'_>,
    path: PathBuf,
    machine_type: String,
    ram: Vec<Bound<'_, PyRamBlock>>,
    devices: Option<Bound<'_, PyObj>>,
    footers: bool,
    vmdesc: bool,
    open_timeout: Option<f64>,
    cancelled: Option<Py<PyAny>>,
) -> PyResult<Py<PyDict>> {
    let timeout = open_timeout
        .map(|t| {
            std::time::Duration::try_from_secs_f64(t)
                .map_err(|_| PyValueError::new_err(format!("open_timeout must be a number of seconds >= 0, not {t}")))
        })
        .transpose()?;
    let set = save_set(py, machine_type, &ram, devices.as_ref())?;
    let opts = SaveOptions {
        footers,
        vmdesc,
        ..SaveOptions::default()
    };
    let open = OpenOptions {
        timeout,
        ..OpenOptions::default()
    };
    let stats = with_transport(py, &path, "save", cancelled, |interrupt| {
        let sink = Sink::open_path(&path, &open, interrupt)?;
        Ok(save_to_sink(&set, sink, &opts))
    })?
    .map_err(|e| save_err(py, &path, e))?;
    stats_dict(
        py,
        &[
            ("bytes", stats.bytes),
            ("ram_bytes", stats.ram_bytes),
            ("zero_pages", stats.zero_pages),
            ("normal_pages", stats.normal_pages),
            ("devices", stats.devices),
        ],
    )
}

/// Restores the stream at `path` into RAM blocks `ram` and the devices
/// below `devices`, which must have the shape of the saved machine (see
/// `vmkit.migration.restore`). A FIFO is waited on until a writer sends,
/// checking for Python signals and calling `cancelled` (if given): true
/// ends the wait with `InterruptedError("restore cancelled")`. Returns
/// `bytes`, `zero_pages`, `normal_pages`, `devices`; with
/// `report_unmodelled`, also `unmodelled` (what the stream held that this
/// machine does not model, taken instead of refused).
#[pyfunction]
#[pyo3(signature = (path, *, machine_type, ram, devices=None, footers=true, cancelled=None, report_unmodelled=false))]
#[allow(clippy::too_many_arguments)]
pub fn restore(
    py: Python<'_>,
    path: PathBuf,
    machine_type: String,
    ram: Vec<Bound<'_, PyRamBlock>>,
    devices: Option<Bound<'_, PyObj>>,
    footers: bool,
    cancelled: Option<Py<PyAny>>,
    report_unmodelled: bool,
) -> PyResult<Py<PyDict>> {
    let set = save_set(py, machine_type, &ram, devices.as_ref())?;
    let opts = restore_options(footers, report_unmodelled);
    let stats = with_transport(py, &path, "restore", cancelled, |interrupt| {
        let f = open_source(&path, &OpenOptions::default(), interrupt)?;
        Ok(savevm::restore_buffered(
            &set,
            BufReader::with_capacity(READ_BUFFER, f),
            &opts,
        ))
    })?
    .map_err(|e| migration_err(py, e))?;
    restore_stats(py, &stats, &opts)
}

fn restore_options(footers: bool, report_unmodelled: bool) -> RestoreOptions {
    RestoreOptions {
        footers,
        unmodelled: if report_unmodelled {
            Unmodelled::Report
        } else {
            Unmodelled::Refuse
        },
        ..RestoreOptions::default()
    }
}

/// The statistics; `unmodelled` (`ram_blocks`, `sections`) only when the
/// restore reported what it did not model.
fn restore_stats(py: Python<'_>, stats: &savevm::RestoreStats, opts: &RestoreOptions) -> PyResult<Py<PyDict>> {
    let d = stats_dict(
        py,
        &[
            ("bytes", stats.bytes),
            ("zero_pages", stats.zero_pages),
            ("normal_pages", stats.normal_pages),
            ("devices", stats.devices),
        ],
    )?;
    if opts.unmodelled == Unmodelled::Report {
        let report = serde_json::to_value(&stats.unmodelled).map_err(|e| PyValueError::new_err(e.to_string()))?;
        d.bind(py).set_item("unmodelled", json_to_py(py, &report)?)?;
    }
    Ok(d)
}

/// Where an incoming migration stream arrives: bound (listening) when
/// created, so a sender can connect at once; `restore` then waits for the
/// stream and loads it. QEMU's `-incoming URI`: `unix:PATH`,
/// `tcp:HOST:PORT` (loopback only unless `allow_remote`; port 0 picks
/// one, see `uri`), `file:PATH[,offset=N]`, `exec:CMD` (the command's
/// output), `fd:NAME` (a descriptor kept in `fds`). With `ignore_shared`
/// (QEMU's `x-ignore-shared`) the stream must have been sent with it too,
/// and shared RAM blocks are taken as they are.
#[pyclass(name = "Listener", module = "vmkit._core.migration")]
pub struct PyListener {
    listener: parking_lot::Mutex<Option<Listener>>,
    uri: String,
    ignore_shared: bool,
}

#[pymethods]
impl PyListener {
    #[new]
    #[pyo3(signature = (uri, *, allow_remote=false, fds=None, ignore_shared=false))]
    fn new(
        py: Python<'_>,
        uri: &str,
        allow_remote: bool,
        fds: Option<PyRef<'_, PyFdRegistry>>,
        ignore_shared: bool,
    ) -> PyResult<Self> {
        let transport: Transport = uri
            .parse()
            .map_err(|e: TransportError| os_error(py, None, e.os_failure()))?;
        let opts = OpenOptions {
            allow_remote,
            ..OpenOptions::default()
        };
        let registry = fds.map_or_else(|| Arc::new(FdRegistry::new()), |f| Arc::clone(&f.inner));
        let listener = py
            .detach(|| Listener::bind(&transport, &opts, &registry))
            .map_err(|e| os_error(py, None, e.os_failure()))?;
        Ok(PyListener {
            uri: listener.local_transport().to_string(),
            listener: parking_lot::Mutex::new(Some(listener)),
            ignore_shared,
        })
    }

    /// The address it listens on (a `tcp:` port 0 replaced by the real one).
    #[getter]
    fn uri(&self) -> &str {
        &self.uri
    }

    /// Waits for the stream (up to `timeout` seconds, or until `cancelled`
    /// returns true or a signal handler raises) and restores it into RAM
    /// blocks `ram` and the devices below `devices`, as
    /// `vmkit.migration.restore` does (`report_unmodelled` too). The
    /// listener is used up.
    #[pyo3(signature = (*, machine_type, ram, devices=None, footers=true, timeout=None, cancelled=None, report_unmodelled=false))]
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &self,
        py: Python<'_>,
        machine_type: String,
        ram: Vec<Bound<'_, PyRamBlock>>,
        devices: Option<Bound<'_, PyObj>>,
        footers: bool,
        timeout: Option<f64>,
        cancelled: Option<Py<PyAny>>,
        report_unmodelled: bool,
    ) -> PyResult<Py<PyDict>> {
        let mut listener = self
            .listener
            .lock()
            .take()
            .ok_or_else(|| PyValueError::new_err("the listener was already used"))?;
        let set = save_set(py, machine_type, &ram, devices.as_ref())?;
        let opts = RestoreOptions {
            ignore_shared: self.ignore_shared,
            ..restore_options(footers, report_unmodelled)
        };
        let open = OpenOptions {
            timeout: seconds("timeout", timeout)?,
            ..OpenOptions::default()
        };
        let uri = std::path::PathBuf::from(&self.uri);
        let stats = with_transport(py, &uri, "incoming migration", cancelled, |interrupt| {
            let mut source = listener.accept(&open, interrupt)?;
            // A socket can answer a source that asks for a return path.
            let mut answers = ReturnChannel::of(source.as_fd(), Box::new(|| true)).map_err(|e| {
                OpenError::Transport(TransportError::Io {
                    what: "return path".into(),
                    source: e,
                })
            })?;
            let reader = BufReader::with_capacity(READ_BUFFER, &mut source);
            let restored =
                savevm::restore_answering(&set, reader, &opts, answers.as_mut().map(|a| a as &mut dyn Write));
            // A command's failure counts only if the stream itself loaded.
            let finished = source.finish();
            Ok(match restored {
                Ok(stats) => finished.map(|()| stats).map_err(vmkit_migration::Error::from),
                Err(e) => Err(e),
            })
        })?
        .map_err(|e| migration_err(py, e))?;
        restore_stats(py, &stats, &opts)
    }

    /// Stops listening (removes a `unix:` socket file).
    fn close(&self) {
        self.listener.lock().take();
    }
}

/// `seconds` as a `Duration`, refusing what is not a number of seconds.
fn seconds(name: &str, seconds: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    seconds
        .map(|t| {
            std::time::Duration::try_from_secs_f64(t)
                .map_err(|_| PyValueError::new_err(format!("{name} must be a number of seconds >= 0, not {t}")))
        })
        .transpose()
}
