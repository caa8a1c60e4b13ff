"""Guest memory: RAM blocks, memory regions, address spaces, dirty logging
and the workload engine.

Build a machine's memory map from regions, then read and write it as a
device's DMA would::

    from vmkit import memory

    ram = memory.RamBlock.anonymous("pc.ram", 64 << 20)
    system = memory.MemoryRegion.container("system", 2**64)
    system.add_subregion(0, memory.MemoryRegion.ram("pc.ram", ram))

    regs = {0: 0}
    uart = memory.MemoryRegion.mmio(
        "uart", 8,
        read=lambda off, size: regs.get(off, 0),
        write=lambda off, size, value: regs.__setitem__(off, value),
        impl_max=1,
    )
    system.add_subregion(0x1000_0000, uart)

    space = memory.AddressSpace("memory", system)
    space.write(0x1000, b"hello")                 # DMA into RAM: pages become dirty
    assert space.read(0x1000, 5) == b"hello"
    space.write_sized(0x1000_0000, 1, 0x41)        # an MMIO register write
    print(memory.mtree())                          # like `info mtree`

    ram.log_start("migration")
    with memory.Workload([ram], rate=64 << 20, pattern="hot-set", seed=1):
        ...
    dirty = ram.sync("migration")                  # take-and-clear

``memoryview(ram)`` exposes a block's memory without copying. Writes
through it are raw stores, like a guest's with dirty logging off: they do
not mark pages dirty (use ``RamBlock.write`` or ``AddressSpace.write`` for
that).

Errors are :class:`vmkit.errors.GuestMemoryError` subclasses; an exception
raised by a Python MMIO or IOMMU callback propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import xxhash

from vmkit._core import memory as _core
from vmkit._core.memory import (
    AddressSpace,
    DirtyPages,
    FlatRange,
    MemoryRegion,
    RamBlock,
    Workload,
)
from vmkit._core.qom import Object

__all__ = [
    "FULL_SPACE",
    "AddressSpace",
    "DirtyPages",
    "FlatRange",
    "MemoryRegion",
    "RamBlock",
    "Workload",
    "measure_dirty_rate",
    "mtree",
    "mtree_flat",
    "pc_memory",
    "transaction",
    "xxh3_64",
]

#: The size of a region covering the whole 64-bit space (an address-space root).
FULL_SPACE = 1 << 64


def xxh3_64(data: bytes) -> int:
    """The XXH3-64 hash (seed 0) of ``data``, as ``RamBlock.checksum`` computes it.

    Computed by the ``xxhash`` package, which shares no code with the Rust
    core, so a test (or a user) can verify guest RAM independently:
    ``xxh3_64(ram.read(0, ram.size)) == ram.checksum()``.
    """
    return xxhash.xxh3_64_intdigest(data)


@contextmanager
def transaction() -> Iterator[None]:
    """Batches region changes: flat views are re-rendered once, at the end."""
    _core.begin()
    try:
        yield
    finally:
        _core.commit()


def mtree() -> str:
    """The region trees of every live address space, as QEMU's ``info mtree``."""
    return _core.mtree()


def mtree_flat() -> str:
    """The flat views of every live address space, as QEMU's ``info mtree -f``."""
    return _core.mtree_flat()


def measure_dirty_rate(blocks: list[RamBlock], seconds: float) -> dict[str, object]:
    """Measures how fast ``blocks`` are dirtied over ``seconds`` (QMP ``calc-dirty-rate``).

    Returns ``window``, ``dirty_pages``, ``dirty_bytes``, ``pages_per_sec``,
    ``bytes_per_sec``, ``dirty_rate`` (whole MiB/s, as QEMU reports it) and a
    per-block breakdown under ``blocks``. Uses its own dirty-log client, so
    it never disturbs migration or a user log.
    """
    return _core.measure_dirty_rate(blocks, seconds)


def pc_memory(ram: RamBlock, owner: Object | None = None) -> tuple[MemoryRegion, AddressSpace]:
    """A PC board's memory map over ``ram``, split around the PCI hole as
    q35 does (``ram-below-4g`` at 0, ``ram-above-4g`` at 4 GiB when needed).

    Returns the ``system`` root region and the ``memory`` address space.
    """
    return _core.pc_memory(ram, owner)
