//! Migration-stream bindings: the analyzer report.

use std::fs::File;
use std::path::PathBuf;

use pyo3::exceptions::PyIOError;
use pyo3::prelude::*;
use vmkit_migration::wire::{ParserOptions, analyze_report};

/// Analyzes the migration stream file at `path`; returns the report as JSON
/// text (see `vmkit.migration.analyze` for the layout). Only a failure to
/// open the file raises (`OSError`); a damaged stream is described by the
/// report's `"error"`.
#[pyfunction]
pub fn analyze_stream(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    py.detach(move || {
        let mut f = File::open(&path).map_err(|e| PyIOError::new_err(format!("{}: {e}", path.display())))?;
        let report = analyze_report(&mut f, ParserOptions::default());
        serde_json::to_string(&report).map_err(|e| PyIOError::new_err(e.to_string()))
    })
}
