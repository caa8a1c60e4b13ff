//! `vmkit._core`: the PyO3 bindings of vmkit. Bindings only — every piece of
//! logic lives in the core crates; this crate converts values and errors.
//!
//! One submodule per core crate, so a reader sees what each binding wraps:
//! `vmkit._core.qom` (`vmkit-qom`), `vmkit._core.memory` (`vmkit-memory`),
//! `vmkit._core.migration` (`vmkit-migration`), `vmkit._core.devices`
//! (`vmkit-devices`). The exception hierarchy,
//! shared by all three, is at the top (`vmkit._core.VmkitError`, ...).

#![deny(unsafe_code)]

mod convert;
mod devices;
mod errors;
mod memory;
mod migration;
mod qom;

use pyo3::prelude::*;

/// Adds `vmkit._core.<name>`, filled by `fill`, and makes it importable
/// (`from vmkit._core.qom import Object`).
fn add_submodule(
    parent: &Bound<'_, PyModule>,
    name: &str,
    fill: fn(&Bound<'_, PyModule>) -> PyResult<()>,
) -> PyResult<()> {
    let py = parent.py();
    let qualified = format!("vmkit._core.{name}");
    let sub = PyModule::new(py, &qualified)?;
    fill(&sub)?;
    parent.add(name, &sub)?;
    py.import("sys")?.getattr("modules")?.set_item(qualified, &sub)?;
    Ok(())
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    add_submodule(m, "qom", qom::register)?;
    add_submodule(m, "memory", memory::register)?;
    add_submodule(m, "migration", migration::register)?;
    add_submodule(m, "devices", devices::register)?;
    Ok(())
}
