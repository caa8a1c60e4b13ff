//! `vmkit._core` RAM classes: RAM blocks (with the buffer protocol), dirty
//! logging, dirty-rate measurement and the workload engine.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use vmkit_memory::{
    AccessPattern, DirtyClient, DirtyPages, RamBacking, RamBlock, Workload, WorkloadConfig, WorkloadStats,
};

use crate::errors::{PropertyValueError, mem_err};
use crate::qom::object::PyObj;

fn client(name: &str) -> PyResult<DirtyClient> {
    DirtyClient::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = DirtyClient::ALL.iter().map(|c| c.as_str()).collect();
        PropertyValueError::new_err(format!(
            "unknown dirty-log client '{name}' (expected one of {})",
            names.join(", ")
        ))
    })
}

/// A block of guest RAM. `memoryview(block)` exposes it without copying;
/// writes through the view do not mark pages dirty.
#[pyclass(name = "RamBlock", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyRamBlock {
    pub(crate) block: Arc<RamBlock>,
}

#[pymethods]
impl PyRamBlock {
    /// Anonymous private memory.
    #[staticmethod]
    fn anonymous(py: Python<'_>, name: &str, size: u64) -> PyResult<Self> {
        RamBlock::anonymous(name, size)
            .map_err(|e| mem_err(py, e))
            .map(|block| PyRamBlock { block })
    }
    /// A memfd: another process can map the same pages through `fd`.
    #[staticmethod]
    fn memfd(py: Python<'_>, name: &str, size: u64) -> PyResult<Self> {
        RamBlock::memfd(name, size)
            .map_err(|e| mem_err(py, e))
            .map(|block| PyRamBlock { block })
    }
    /// A file at `path`, mapped shared (`share=True`) or private.
    #[staticmethod]
    #[pyo3(signature = (name, size, path, share=false))]
    fn file(py: Python<'_>, name: &str, size: u64, path: std::path::PathBuf, share: bool) -> PyResult<Self> {
        RamBlock::file(name, size, path, share)
            .map_err(|e| mem_err(py, e))
            .map(|block| PyRamBlock { block })
    }
    /// The RAM block of a completed memory-backend object.
    #[staticmethod]
    fn of_backend(py: Python<'_>, backend: &Bound<'_, PyObj>) -> PyResult<Self> {
        vmkit_memory::backend_ram_block(&backend.get().handle)
            .map_err(|e| mem_err(py, e))
            .map(|block| PyRamBlock { block })
    }

    /// The name (QEMU's idstr).
    #[getter]
    fn name(&self) -> &str {
        self.block.name()
    }
    /// The used length in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.block.used_length()
    }
    /// The dirty-tracking page size.
    #[getter]
    fn page_size(&self) -> u64 {
        self.block.page_size()
    }
    /// The number of pages.
    #[getter]
    fn page_count(&self) -> u64 {
        self.block.page_count()
    }
    /// `anonymous`, `memfd` or `file`.
    #[getter]
    fn backing(&self) -> &'static str {
        match self.block.backing() {
            RamBacking::Anonymous => "anonymous",
            RamBacking::Memfd => "memfd",
            RamBacking::File { .. } => "file",
        }
    }
    /// The memfd's file descriptor (valid while the block lives), or None.
    #[getter]
    fn fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self.block.fd().map(|f| f.as_raw_fd())
    }
    /// Reads `length` bytes at `offset`.
    fn read<'py>(&self, py: Python<'py>, offset: u64, length: usize) -> PyResult<Bound<'py, PyBytes>> {
        let block = self.block.clone();
        PyBytes::new_with(py, length, |buf| block.read(offset, buf).map_err(|e| mem_err(py, e)))
    }
    /// Writes `data` at `offset`, marking the pages dirty.
    fn write(&self, py: Python<'_>, offset: u64, data: &[u8]) -> PyResult<()> {
        self.block.write(offset, data).map_err(|e| mem_err(py, e))
    }
    /// Fills `length` bytes at `offset` with `byte`, marking the pages dirty.
    #[pyo3(signature = (offset, length, byte=0))]
    fn fill(&self, py: Python<'_>, offset: u64, length: u64, byte: u8) -> PyResult<()> {
        self.block.fill(offset, length, byte).map_err(|e| mem_err(py, e))
    }
    /// Whether page `page` is all zeros.
    fn is_zero_page(&self, py: Python<'_>, page: u64) -> PyResult<bool> {
        self.block.is_zero_page(page).map_err(|e| mem_err(py, e))
    }
    /// The XXH3-64 checksum of `[offset, offset + length)` (default: the whole
    /// block): `xxhash.xxh3_64_intdigest` of the same bytes.
    #[pyo3(signature = (offset=0, length=None))]
    fn checksum(&self, py: Python<'_>, offset: u64, length: Option<u64>) -> PyResult<u64> {
        let len = length.unwrap_or_else(|| self.block.used_length().saturating_sub(offset));
        let block = self.block.clone();
        py.detach(move || block.checksum(offset, len))
            .map_err(|e| mem_err(py, e))
    }
    /// Starts dirty logging for `client` (`migration`, `display`, `user`, `dirty-rate`).
    fn log_start(&self, py: Python<'_>, client_name: &str) -> PyResult<()> {
        self.block
            .dirty_log()
            .log_start(client(client_name)?)
            .map_err(|e| mem_err(py, e))
    }
    /// Stops dirty logging for `client`; returns whether it was logging.
    fn log_stop(&self, client_name: &str) -> PyResult<bool> {
        Ok(self.block.dirty_log().log_stop(client(client_name)?))
    }
    /// Whether `client` is logging.
    fn is_logging(&self, client_name: &str) -> PyResult<bool> {
        Ok(self.block.dirty_log().is_logging(client(client_name)?))
    }
    /// Takes and clears the pages `client` saw dirtied since its last sync.
    fn sync(&self, py: Python<'_>, client_name: &str) -> PyResult<PyDirtyPages> {
        let c = client(client_name)?;
        self.block
            .dirty_log()
            .sync(c)
            .map_err(|e| mem_err(py, e))
            .map(|pages| PyDirtyPages { pages })
    }
    /// Exposes the block's memory without copying (`memoryview(block)`).
    #[allow(unsafe_code)]
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        // SAFETY: forwarded from CPython's bf_getbuffer with its own arguments.
        unsafe { crate::memory::buffer::fill_ram_buffer(&slf, view, flags) }
    }
    fn __len__(&self) -> usize {
        usize::try_from(self.block.used_length()).unwrap_or(usize::MAX)
    }
    fn __repr__(&self) -> String {
        format!(
            "<RamBlock {:?} {} size={:#x}>",
            self.block.name(),
            self.backing(),
            self.block.used_length()
        )
    }
}

/// Pages a dirty-log sync returned.
#[pyclass(name = "DirtyPages", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyDirtyPages {
    pages: DirtyPages,
}

#[pymethods]
impl PyDirtyPages {
    /// How many pages are dirty.
    #[getter]
    fn count(&self) -> u64 {
        self.pages.count()
    }
    /// The dirty page numbers, ascending.
    fn pages(&self) -> Vec<u64> {
        self.pages.iter().collect()
    }
    /// Runs of dirty pages as `(first_page, page_count)`.
    fn ranges(&self) -> Vec<(u64, u64)> {
        self.pages.ranges().collect()
    }
    fn __len__(&self) -> usize {
        usize::try_from(self.pages.count()).unwrap_or(usize::MAX)
    }
    fn __contains__(&self, page: u64) -> bool {
        page < self.pages.pages() && self.pages.is_dirty(page)
    }
    fn __repr__(&self) -> String {
        format!("<DirtyPages {} of {}>", self.pages.count(), self.pages.pages())
    }
}

fn blocks_of(blocks: &[Bound<'_, PyRamBlock>]) -> Vec<Arc<RamBlock>> {
    blocks.iter().map(|b| b.get().block.clone()).collect()
}

/// Measures the dirty rate of `blocks` over `seconds` (QMP `calc-dirty-rate`, bitmap mode).
#[pyfunction]
pub(crate) fn measure_dirty_rate<'py>(
    py: Python<'py>,
    blocks: Vec<Bound<'py, PyRamBlock>>,
    seconds: f64,
) -> PyResult<Bound<'py, PyDict>> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "seconds must be in (0, 3600], got {seconds}"
        )));
    }
    let blocks = blocks_of(&blocks);
    let report = py
        .detach(move || vmkit_memory::measure_dirty_rate(&blocks, Duration::from_secs_f64(seconds)))
        .map_err(|e| mem_err(py, e))?;
    let d = PyDict::new(py);
    d.set_item("window", report.window.as_secs_f64())?;
    d.set_item("dirty_pages", report.dirty_pages)?;
    d.set_item("dirty_bytes", report.dirty_bytes)?;
    d.set_item("pages_per_sec", report.pages_per_sec)?;
    d.set_item("bytes_per_sec", report.bytes_per_sec)?;
    d.set_item("dirty_rate", report.dirty_rate())?;
    let per_block = PyDict::new(py);
    for b in &report.blocks {
        let e = PyDict::new(py);
        e.set_item("dirty_pages", b.dirty_pages)?;
        e.set_item("dirty_bytes", b.dirty_bytes)?;
        e.set_item("pages_per_sec", b.pages_per_sec)?;
        e.set_item("mib_per_sec", b.mib_per_sec)?;
        per_block.set_item(&b.name, e)?;
    }
    d.set_item("blocks", per_block)?;
    Ok(d)
}

fn stats_dict<'py>(py: Python<'py>, s: &WorkloadStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ops", s.ops)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("pages", s.pages)?;
    d.set_item("elapsed", s.elapsed.as_secs_f64())?;
    d.set_item("bytes_per_sec", s.bytes_per_sec())?;
    d.set_item(
        "threads",
        s.threads.iter().map(|t| (t.ops, t.bytes)).collect::<Vec<_>>(),
    )?;
    Ok(d)
}

/// The guest stand-in: threads writing guest RAM through the dirty-marking path.
#[pyclass(name = "Workload", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyWorkload {
    // An `Arc`, so a wait can hold the workload without holding this lock:
    // a thread waiting without the GIL must never hold a lock that a thread
    // holding the GIL may want.
    inner: Mutex<Option<Arc<Workload>>>,
}

impl PyWorkload {
    /// The running workload (the lock is released before it is used).
    fn running(&self) -> PyResult<Arc<Workload>> {
        self.inner
            .lock()
            .clone()
            .ok_or_else(|| crate::errors::LifecycleError::new_err("the workload was stopped"))
    }

    fn with<R>(&self, f: impl FnOnce(&Workload) -> R) -> PyResult<R> {
        let w = self.running()?;
        Ok(f(&w))
    }
}

/// A wait's timeout in seconds as a `Duration`, refusing what is not a
/// number of seconds (NaN, negative).
fn wait_timeout(timeout: f64) -> PyResult<Duration> {
    if timeout.is_nan() || timeout < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be seconds >= 0, not {timeout}"
        )));
    }
    Ok(Duration::from_secs_f64(timeout.min(3600.0)))
}

#[pymethods]
impl PyWorkload {
    #[new]
    #[pyo3(signature = (blocks, *, threads=1, rate=None, pattern="uniform", hot_fraction=0.1, hot_probability=0.9,
                        zipf_s=1.0, write_size=None, seed=0, max_ops=None, throttle=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        blocks: Vec<Bound<'_, PyRamBlock>>,
        threads: usize,
        rate: Option<u64>,
        pattern: &str,
        hot_fraction: f64,
        hot_probability: f64,
        zipf_s: f64,
        write_size: Option<u64>,
        seed: u64,
        max_ops: Option<u64>,
        throttle: u8,
    ) -> PyResult<Self> {
        let pattern = match pattern {
            "sequential" => AccessPattern::Sequential,
            "uniform" => AccessPattern::Uniform,
            "hot-set" | "hotset" => AccessPattern::HotSet {
                fraction: hot_fraction,
                probability: hot_probability,
            },
            "zipf" => AccessPattern::Zipf { s: zipf_s },
            other => {
                return Err(PropertyValueError::new_err(format!(
                    "unknown pattern '{other}' (expected sequential, uniform, hot-set or zipf)"
                )));
            }
        };
        let config = WorkloadConfig {
            threads,
            rate,
            pattern,
            write_size,
            seed,
            max_ops,
            throttle,
        };
        let w = Workload::start(blocks_of(&blocks), config).map_err(|e| mem_err(py, e))?;
        Ok(PyWorkload {
            inner: Mutex::new(Some(Arc::new(w))),
        })
    }
    /// Pauses the writers (as `stop` pauses vCPUs).
    fn pause(&self) -> PyResult<()> {
        self.with(Workload::pause)
    }
    /// Resumes the writers.
    fn resume(&self) -> PyResult<()> {
        self.with(Workload::resume)
    }
    /// Whether paused.
    #[getter]
    fn paused(&self) -> PyResult<bool> {
        self.with(Workload::is_paused)
    }
    /// The throttle percentage (0..=99), as auto-converge throttles vCPUs.
    #[getter]
    fn throttle(&self) -> PyResult<u8> {
        self.with(Workload::throttle)
    }
    #[setter]
    fn set_throttle(&self, py: Python<'_>, pct: u8) -> PyResult<()> {
        self.with(|w| w.set_throttle(pct))?.map_err(|e| mem_err(py, e))
    }
    /// Changes the rate limit in bytes/s (None: unlimited).
    fn set_rate(&self, py: Python<'_>, rate: Option<u64>) -> PyResult<()> {
        self.with(|w| w.set_rate(rate))?.map_err(|e| mem_err(py, e))
    }
    /// Counters: ops, bytes, pages, elapsed, bytes_per_sec, per-thread (ops, bytes).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(Workload::stats)?;
        stats_dict(py, &s)
    }
    /// Waits up to `timeout` seconds for a bounded (`max_ops`) workload to finish.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let t = wait_timeout(timeout)?;
        let Some(w) = self.inner.lock().clone() else {
            return Ok(true);
        };
        Ok(py.detach(|| w.wait(t)))
    }
    /// Waits up to `timeout` seconds until the writers have done at least
    /// `ops` writes in all; returns whether they have.
    fn wait_ops(&self, py: Python<'_>, ops: u64, timeout: f64) -> PyResult<bool> {
        let t = wait_timeout(timeout)?;
        let w = self.running()?;
        Ok(py.detach(|| w.wait_until(t, |s| s.ops >= ops)))
    }
    /// Writer threads parked by a pause (each acknowledged it).
    #[getter]
    fn parked(&self) -> PyResult<usize> {
        self.with(Workload::parked)
    }
    /// Why a writer thread failed, if one did.
    #[getter]
    fn error(&self) -> PyResult<Option<String>> {
        self.with(Workload::error)
    }
    /// Stops and joins the threads; returns the final counters.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let w = self.inner.lock().take();
        match w {
            Some(w) => {
                let s = py.detach(move || w.stop());
                stats_dict(py, &s)
            }
            None => Err(crate::errors::LifecycleError::new_err(
                "the workload was already stopped",
            )),
        }
    }
    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        let w = self.inner.lock().take();
        if let Some(w) = w {
            py.detach(move || drop(w));
        }
        false
    }
}
