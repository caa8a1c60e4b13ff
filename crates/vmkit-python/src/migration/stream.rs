//! Migration-stream bindings: the analyzer report, loading a stream's RAM
//! into blocks, and whole-machine save and restore.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use std::io::BufReader;

use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vmkit_migration::analyze::analyze_with_ram;
use vmkit_migration::savevm::{self, RestoreOptions, SaveOptions, SaveSet, collect_devices, create_sink, save_to_fd};
use vmkit_migration::wire::reader::READ_BUFFER;
use vmkit_migration::wire::{ParserOptions, RamSectionReader};

use crate::errors::migration_err;
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

/// Parses the migration stream file at `path` like `analyze_stream`, and
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
fn save_set(
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

/// Runs `job` on `path` without the GIL (device callbacks take it back);
/// a failure to open the file is an `OSError` naming it, a stream or device
/// failure the matching `MigrationError`.
fn run_on_file<T: Send>(
    py: Python<'_>,
    path: &std::path::Path,
    job: impl FnOnce(&std::path::Path) -> std::io::Result<vmkit_migration::Result<T>> + Send,
) -> PyResult<T> {
    py.detach(|| job(path))
        .map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))?
        .map_err(|e| migration_err(py, e))
}

fn stats_dict<'py>(py: Python<'py>, items: &[(&str, u64)]) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, *v)?;
    }
    Ok(d.unbind())
}

/// Saves a paused machine to the file (or FIFO) at `path`: the
/// configuration naming `machine_type`, the RAM blocks `ram` (in this
/// order), and a section for every realized device with a VMState below
/// the QOM object `devices` (none if `None`). Returns the statistics:
/// `bytes`, `ram_bytes`, `zero_pages`, `normal_pages`, `devices`.
#[pyfunction]
#[pyo3(signature = (path, *, machine_type, ram, devices=None, footers=true, vmdesc=true))]
pub fn save(
    py: Python<'_>,
    path: PathBuf,
    machine_type: String,
    ram: Vec<Bound<'_, PyRamBlock>>,
    devices: Option<Bound<'_, PyObj>>,
    footers: bool,
    vmdesc: bool,
) -> PyResult<Py<PyDict>> {
    let set = save_set(py, machine_type, &ram, devices.as_ref())?;
    let opts = SaveOptions { footers, vmdesc };
    let stats = run_on_file(py, &path, |path| Ok(save_to_fd(&set, create_sink(path)?, &opts)))?;
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
/// `vmkit.migration.restore`). Returns `bytes`, `zero_pages`,
/// `normal_pages`, `devices`.
#[pyfunction]
#[pyo3(signature = (path, *, machine_type, ram, devices=None, footers=true))]
pub fn restore(
    py: Python<'_>,
    path: PathBuf,
    machine_type: String,
    ram: Vec<Bound<'_, PyRamBlock>>,
    devices: Option<Bound<'_, PyObj>>,
    footers: bool,
) -> PyResult<Py<PyDict>> {
    let set = save_set(py, machine_type, &ram, devices.as_ref())?;
    let opts = RestoreOptions {
        footers,
        ..RestoreOptions::default()
    };
    let stats = run_on_file(py, &path, |path| {
        let f = std::fs::File::open(path)?;
        Ok(savevm::restore(&set, BufReader::with_capacity(READ_BUFFER, f), &opts))
    })?;
    stats_dict(
        py,
        &[
            ("bytes", stats.bytes),
            ("zero_pages", stats.zero_pages),
            ("normal_pages", stats.normal_pages),
            ("devices", stats.devices),
        ],
    )
}
