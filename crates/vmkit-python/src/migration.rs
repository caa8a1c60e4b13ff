//! Migration-stream bindings: the analyzer report, and loading a stream's
//! RAM into blocks.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;

use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use vmkit_migration::wire::{ParserOptions, RamSectionReader, analyze_report, analyze_report_with_ram};

use crate::ram::PyRamBlock;

fn open(path: &PathBuf) -> PyResult<File> {
    File::open(path).map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))
}

/// Analyzes the migration stream file at `path`; returns the report as JSON
/// text (see `vmkit.migration.analyze` for the layout). Only a failure to
/// open the file raises (`OSError`); a damaged stream is described by the
/// report's `"error"`.
#[pyfunction]
pub fn analyze_stream(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    py.detach(move || {
        let mut f = open(&path)?;
        let report = analyze_report(&mut f, ParserOptions::default());
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
pub fn load_ram_from_stream(py: Python<'_>, path: PathBuf, blocks: Vec<Bound<'_, PyRamBlock>>) -> PyResult<String> {
    let blocks: Vec<_> = blocks.iter().map(|b| b.get().block.clone()).collect();
    let mut names = HashSet::new();
    if let Some(b) = blocks.iter().find(|b| !names.insert(b.name())) {
        return Err(PyValueError::new_err(format!("RAM block '{}' given twice", b.name())));
    }
    drop(names);
    py.detach(move || {
        let mut f = open(&path)?;
        let ram = RamSectionReader::apply_to_some(blocks);
        let report = analyze_report_with_ram(&mut f, ParserOptions::default(), ram);
        serde_json::to_string(&report).map_err(|e| PyIOError::new_err(e.to_string()))
    })
}
