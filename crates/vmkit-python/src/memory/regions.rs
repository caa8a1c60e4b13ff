//! `vmkit._core` memory classes: regions, address spaces, flat views,
//! transactions and mtree dumps. RAM blocks, dirty logging and the workload
//! engine are in `ram.rs`.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use vmkit_memory::{
    AccessConstraints, AddressSpace, Endianness, Error as MemError, GuestAddr, IommuOps, IommuPerm, IommuTlbEntry,
    MemoryRegion, MmioOps, RegionKind,
};

use crate::errors::mem_err;
use crate::memory::ram::PyRamBlock;
use crate::qom::object::PyObj;

fn callback_error(context: String, e: PyErr) -> MemError {
    MemError::Callback {
        context,
        source: crate::errors::callback_error(e),
    }
}

/// MMIO callbacks implemented by Python callables `read(offset, size) -> int`
/// and `write(offset, size, value)`.
struct PyMmio {
    name: String,
    read: Py<PyAny>,
    write: Py<PyAny>,
    constraints: AccessConstraints,
}

impl MmioOps for PyMmio {
    fn read(&self, offset: u64, size: u32) -> vmkit_memory::Result<u64> {
        Python::attach(|py| {
            let v = self
                .read
                .call1(py, (offset, size))
                .map_err(|e| callback_error(format!("read of '{}'", self.name), e))?;
            v.extract::<u64>(py)
                .map_err(|e| callback_error(format!("read of '{}' must return an int in 0..2**64", self.name), e))
        })
    }
    fn write(&self, offset: u64, size: u32, value: u64) -> vmkit_memory::Result<()> {
        Python::attach(|py| {
            self.write
                .call1(py, (offset, size, value))
                .map(|_| ())
                .map_err(|e| callback_error(format!("write of '{}'", self.name), e))
        })
    }
    fn constraints(&self) -> AccessConstraints {
        self.constraints
    }
}

/// IOMMU translation by a Python callable
/// `translate(iova, is_write) -> (AddressSpace, translated_addr, addr_mask, readable, writable)`.
struct PyIommu {
    name: String,
    translate: Py<PyAny>,
}

impl IommuOps for PyIommu {
    fn translate(&self, iova: GuestAddr, is_write: bool) -> vmkit_memory::Result<IommuTlbEntry> {
        Python::attach(|py| {
            let ctx = || format!("translate of '{}'", self.name);
            let out = self
                .translate
                .call1(py, (iova.0, is_write))
                .map_err(|e| callback_error(ctx(), e))?;
            let (space, addr, mask, read, write): (Bound<'_, PyAddressSpace>, u64, u64, bool, bool) =
                out.extract(py).map_err(|e| {
                    callback_error(format!("{} must return (AddressSpace, int, int, bool, bool)", ctx()), e)
                })?;
            Ok(IommuTlbEntry {
                target: space.get().space.clone(),
                translated_addr: GuestAddr(addr),
                addr_mask: mask,
                perm: IommuPerm { read, write },
            })
        })
    }
}

fn owner_of(owner: Option<&Bound<'_, PyObj>>) -> Option<vmkit_qom::Object> {
    owner.map(|o| o.get().handle.clone())
}

type BlockRegionFn =
    fn(&str, Option<&vmkit_qom::Object>, Arc<vmkit_memory::RamBlock>, u64, u64) -> vmkit_memory::Result<MemoryRegion>;

/// A RAM or ROM window of `block` (`size` defaults to the rest of the block).
fn block_window(
    py: Python<'_>,
    make: BlockRegionFn,
    name: &str,
    block: &Bound<'_, PyRamBlock>,
    offset: u64,
    size: Option<u64>,
    owner: Option<&Bound<'_, PyObj>>,
) -> PyResult<PyMemoryRegion> {
    let b = block.get().block.clone();
    let size = size.unwrap_or_else(|| b.used_length().saturating_sub(offset));
    make(name, owner_of(owner).as_ref(), b, offset, size)
        .map_err(|e| mem_err(py, e))
        .map(|region| PyMemoryRegion { region })
}

/// A memory region (RAM, ROM, MMIO, alias, container or IOMMU).
#[pyclass(name = "MemoryRegion", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyMemoryRegion {
    pub(crate) region: MemoryRegion,
}

#[pymethods]
impl PyMemoryRegion {
    /// A RAM region showing `size` bytes (default: the rest) of `block` from `offset`.
    #[staticmethod]
    #[pyo3(signature = (name, block, offset=0, size=None, *, owner=None))]
    fn ram(
        py: Python<'_>,
        name: &str,
        block: &Bound<'_, PyRamBlock>,
        offset: u64,
        size: Option<u64>,
        owner: Option<&Bound<'_, PyObj>>,
    ) -> PyResult<Self> {
        block_window(py, MemoryRegion::ram, name, block, offset, size, owner)
    }

    /// A ROM region: reads from `block`, guest writes dropped.
    #[staticmethod]
    #[pyo3(signature = (name, block, offset=0, size=None, *, owner=None))]
    fn rom(
        py: Python<'_>,
        name: &str,
        block: &Bound<'_, PyRamBlock>,
        offset: u64,
        size: Option<u64>,
        owner: Option<&Bound<'_, PyObj>>,
    ) -> PyResult<Self> {
        block_window(py, MemoryRegion::rom, name, block, offset, size, owner)
    }

    /// An MMIO region calling `read(offset, size) -> int` and `write(offset, size, value)`.
    #[staticmethod]
    #[pyo3(signature = (name, size, read, write, *, owner=None, valid_min=1, valid_max=0, valid_unaligned=false,
                        impl_min=1, impl_max=4, big_endian=false))]
    #[allow(clippy::too_many_arguments)]
    fn mmio(
        py: Python<'_>,
        name: &str,
        size: u64,
        read: Py<PyAny>,
        write: Py<PyAny>,
        owner: Option<&Bound<'_, PyObj>>,
        valid_min: u32,
        valid_max: u32,
        valid_unaligned: bool,
        impl_min: u32,
        impl_max: u32,
        big_endian: bool,
    ) -> PyResult<Self> {
        let constraints = AccessConstraints {
            valid_min,
            valid_max,
            valid_unaligned,
            impl_min,
            impl_max,
            endianness: if big_endian {
                Endianness::Big
            } else {
                Endianness::Little
            },
        };
        let ops = Arc::new(PyMmio {
            name: name.to_string(),
            read,
            write,
            constraints,
        });
        MemoryRegion::mmio(name, owner_of(owner).as_ref(), size, ops)
            .map_err(|e| mem_err(py, e))
            .map(|region| PyMemoryRegion { region })
    }

    /// A container of `size` bytes (`2**64` for an address-space root).
    #[staticmethod]
    #[pyo3(signature = (name, size, *, owner=None))]
    fn container(py: Python<'_>, name: &str, size: u128, owner: Option<&Bound<'_, PyObj>>) -> PyResult<Self> {
        MemoryRegion::container(name, owner_of(owner).as_ref(), size)
            .map_err(|e| mem_err(py, e))
            .map(|region| PyMemoryRegion { region })
    }

    /// A window of `size` bytes onto `target` from `offset`.
    #[staticmethod]
    #[pyo3(signature = (name, target, offset, size, *, owner=None))]
    fn alias(
        py: Python<'_>,
        name: &str,
        target: &Bound<'_, PyMemoryRegion>,
        offset: u64,
        size: u64,
        owner: Option<&Bound<'_, PyObj>>,
    ) -> PyResult<Self> {
        MemoryRegion::alias(name, owner_of(owner).as_ref(), &target.get().region, offset, size)
            .map_err(|e| mem_err(py, e))
            .map(|region| PyMemoryRegion { region })
    }

    /// An IOMMU region calling `translate(iova, is_write) -> (space, addr, mask, readable, writable)`.
    #[staticmethod]
    #[pyo3(signature = (name, size, translate, *, owner=None))]
    fn iommu(
        py: Python<'_>,
        name: &str,
        size: u128,
        translate: Py<PyAny>,
        owner: Option<&Bound<'_, PyObj>>,
    ) -> PyResult<Self> {
        let ops = Arc::new(PyIommu {
            name: name.to_string(),
            translate,
        });
        MemoryRegion::iommu(name, owner_of(owner).as_ref(), size, ops)
            .map_err(|e| mem_err(py, e))
            .map(|region| PyMemoryRegion { region })
    }

    /// The name.
    #[getter]
    fn name(&self) -> &str {
        self.region.name()
    }
    /// The size in bytes.
    #[getter]
    fn size(&self) -> u128 {
        self.region.size()
    }
    /// `ram`, `rom`, `mmio`, `alias`, `container` or `iommu`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.region.kind() {
            RegionKind::Ram { .. } => "ram",
            RegionKind::Rom { .. } => "rom",
            RegionKind::Mmio { .. } => "mmio",
            RegionKind::Alias { .. } => "alias",
            RegionKind::Container => "container",
            RegionKind::Iommu(_) => "iommu",
        }
    }
    /// Whether the region is enabled.
    #[getter]
    fn enabled(&self) -> bool {
        self.region.is_enabled()
    }
    #[setter]
    fn set_enabled(&self, enabled: bool) {
        self.region.set_enabled(enabled);
    }
    /// Whether guest writes are dropped.
    #[getter]
    fn readonly(&self) -> bool {
        self.region.is_readonly()
    }
    #[setter]
    fn set_readonly(&self, readonly: bool) {
        self.region.set_readonly(readonly);
    }
    /// Its address in its container, or None.
    #[getter]
    fn address(&self) -> Option<u64> {
        self.region.address().map(|a| a.0)
    }
    /// Its priority in its container.
    #[getter]
    fn priority(&self) -> i32 {
        self.region.priority()
    }
    /// The owning QOM object, if any.
    #[getter]
    fn owner(&self) -> Option<PyObj> {
        self.region.owner().map(PyObj::borrowed)
    }
    /// The container it is placed in, if any.
    #[getter]
    fn container_region(&self) -> Option<PyMemoryRegion> {
        self.region.container_region().map(|region| PyMemoryRegion { region })
    }
    /// `(region, address, priority)` for each subregion, in lookup order.
    fn subregions(&self) -> Vec<(PyMemoryRegion, u64, i32)> {
        self.region
            .subregions()
            .into_iter()
            .map(|(r, a, p)| (PyMemoryRegion { region: r }, a.0, p))
            .collect()
    }
    /// Places `child` at `addr` (no overlap with siblings allowed).
    fn add_subregion(&self, py: Python<'_>, addr: u64, child: &Bound<'_, PyMemoryRegion>) -> PyResult<()> {
        self.region
            .add_subregion(GuestAddr(addr), &child.get().region)
            .map_err(|e| mem_err(py, e))
    }
    /// Places `child` at `addr` with a priority; overlaps allowed.
    #[pyo3(signature = (addr, child, priority=0))]
    fn add_subregion_overlap(
        &self,
        py: Python<'_>,
        addr: u64,
        child: &Bound<'_, PyMemoryRegion>,
        priority: i32,
    ) -> PyResult<()> {
        self.region
            .add_subregion_overlap(GuestAddr(addr), &child.get().region, priority)
            .map_err(|e| mem_err(py, e))
    }
    /// Removes `child`.
    fn del_subregion(&self, py: Python<'_>, child: &Bound<'_, PyMemoryRegion>) -> PyResult<()> {
        self.region
            .del_subregion(&child.get().region)
            .map_err(|e| mem_err(py, e))
    }
    /// Moves the region within its container.
    fn set_address(&self, py: Python<'_>, addr: u64) -> PyResult<()> {
        self.region.set_address(GuestAddr(addr)).map_err(|e| mem_err(py, e))
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyMemoryRegion>()
            .is_ok_and(|o| o.get().region == self.region)
    }
    fn __hash__(&self) -> u64 {
        self.region.id()
    }
    fn __repr__(&self) -> String {
        format!(
            "<MemoryRegion {:?} {} size={:#x}>",
            self.region.name(),
            self.kind(),
            self.region.size()
        )
    }
}

/// One range of a flat view.
#[pyclass(name = "FlatRange", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyFlatRange {
    #[pyo3(get)]
    start: u64,
    #[pyo3(get)]
    size: u128,
    #[pyo3(get)]
    offset_in_region: u64,
    #[pyo3(get)]
    readonly: bool,
    region: MemoryRegion,
}

#[pymethods]
impl PyFlatRange {
    /// The last address of the range.
    #[getter]
    fn last(&self) -> u128 {
        u128::from(self.start) + self.size - 1
    }
    /// The region answering in the range.
    #[getter]
    fn region(&self) -> PyMemoryRegion {
        PyMemoryRegion {
            region: self.region.clone(),
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "<FlatRange {:#x}-{:#x} {:?} @{:#x}>",
            self.start,
            self.last(),
            self.region.name(),
            self.offset_in_region
        )
    }
}

/// An address space: a root region and the flat view accesses go through.
#[pyclass(name = "AddressSpace", module = "vmkit._core.memory", frozen)]
pub(crate) struct PyAddressSpace {
    pub(crate) space: Arc<AddressSpace>,
}

#[pymethods]
impl PyAddressSpace {
    #[new]
    fn new(name: &str, root: &Bound<'_, PyMemoryRegion>) -> Self {
        PyAddressSpace {
            space: AddressSpace::new(name, &root.get().region),
        }
    }
    /// The name.
    #[getter]
    fn name(&self) -> &str {
        self.space.name()
    }
    /// The root region.
    #[getter]
    fn root(&self) -> PyMemoryRegion {
        PyMemoryRegion {
            region: self.space.root().clone(),
        }
    }
    /// Whether unassigned accesses raise instead of reading all ones / dropping writes.
    #[getter]
    fn strict(&self) -> bool {
        self.space.is_strict()
    }
    #[setter]
    fn set_strict(&self, strict: bool) {
        self.space.set_strict(strict);
    }
    /// Reads `length` bytes at `addr` (DMA): across regions, through IOMMUs.
    fn read<'py>(&self, py: Python<'py>, addr: u64, length: usize) -> PyResult<Bound<'py, PyBytes>> {
        let space = self.space.clone();
        PyBytes::new_with(py, length, |buf| {
            space.read(GuestAddr(addr), buf).map_err(|e| mem_err(py, e))
        })
    }
    /// Writes `data` at `addr` (DMA); RAM pages written become dirty.
    fn write(&self, py: Python<'_>, addr: u64, data: &[u8]) -> PyResult<()> {
        self.space.write(GuestAddr(addr), data).map_err(|e| mem_err(py, e))
    }
    /// A `size`-byte load (1, 2, 4, 8) at `addr`, with MMIO constraints applied.
    fn read_sized(&self, py: Python<'_>, addr: u64, size: u32) -> PyResult<u64> {
        self.space.read_sized(GuestAddr(addr), size).map_err(|e| mem_err(py, e))
    }
    /// A `size`-byte store at `addr`.
    fn write_sized(&self, py: Python<'_>, addr: u64, size: u32, value: u64) -> PyResult<()> {
        self.space
            .write_sized(GuestAddr(addr), size, value)
            .map_err(|e| mem_err(py, e))
    }
    /// The current flat view.
    fn flat_view(&self) -> Vec<PyFlatRange> {
        self.space
            .flat_view()
            .ranges()
            .iter()
            .map(|r| PyFlatRange {
                start: r.range.start().0,
                size: r.range.size(),
                offset_in_region: r.offset_in_region,
                readonly: r.readonly,
                region: r.region.clone(),
            })
            .collect()
    }
    /// Access counters: unassigned reads/writes, dropped read-only writes, invalid accesses.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.space.stats();
        let d = PyDict::new(py);
        d.set_item("unassigned_reads", s.unassigned_reads)?;
        d.set_item("unassigned_writes", s.unassigned_writes)?;
        d.set_item("readonly_writes", s.readonly_writes)?;
        d.set_item("invalid_accesses", s.invalid_accesses)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "<AddressSpace {:?} root={:?}>",
            self.space.name(),
            self.space.root().name()
        )
    }
}

/// `info mtree` of every live address space.
#[pyfunction]
pub(crate) fn mtree(py: Python<'_>) -> String {
    py.detach(|| vmkit_memory::mtree(&vmkit_memory::address_spaces()))
}

/// `info mtree -f` of every live address space.
#[pyfunction]
pub(crate) fn mtree_flat(py: Python<'_>) -> String {
    py.detach(|| vmkit_memory::mtree_flat(&vmkit_memory::address_spaces()))
}

/// Starts a memory transaction (changes are rendered once, at the matching commit).
#[pyfunction]
pub(crate) fn begin() {
    vmkit_memory::begin();
}

/// Ends a memory transaction.
#[pyfunction]
pub(crate) fn commit() {
    vmkit_memory::commit();
}

/// A PC board's memory map over `block` (q35's split around the PCI hole):
/// returns the `system` root and the `memory` address space.
#[pyfunction]
#[pyo3(signature = (block, owner=None))]
pub(crate) fn pc_memory(
    py: Python<'_>,
    block: &Bound<'_, PyRamBlock>,
    owner: Option<&Bound<'_, PyObj>>,
) -> PyResult<(PyMemoryRegion, PyAddressSpace)> {
    let map =
        vmkit_memory::PcMemory::new(block.get().block.clone(), owner_of(owner).as_ref()).map_err(|e| mem_err(py, e))?;
    Ok((
        PyMemoryRegion { region: map.system },
        PyAddressSpace { space: map.space },
    ))
}
