"""Python-level guest-memory benchmarks: MMIO dispatch to Python callbacks,
sized RAM reads, 4 KiB DMA pages with dirty logging, and a dirty-bitmap sync.

Run: ``.venv/bin/python benches/py/bench_memory.py`` (after ``make build``).
Each figure is the median of several timed rounds; ``--json`` prints them as
one JSON object. Per-access figures are in nanoseconds (the Python call and
loop included), transfers in MiB/s, the sync in microseconds.

- ``mmio_read4_python_ns``: ``AddressSpace.read_sized(addr, 4)`` through a
  flat view of 64 MMIO regions to a Python ``read`` callback (target: at most
  1000 ns); ``_spread`` varies the region on every access.
- ``ram_read4_ns``: the same call on RAM, where no Python callback runs.
- ``dma_read_4k_mib_per_s`` / ``dma_write_4k_mib_per_s``: ``AddressSpace.read``
  and ``.write`` of one 4 KiB page at a time, sequentially through 256 MiB of
  RAM with migration dirty logging on.
- ``sync_1gib_1pct_us``: ``RamBlock.sync("migration")`` of a 1 GiB block with
  1% of its pages dirty (every 100th).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from vmkit import memory
from vmkit.memory import AddressSpace, MemoryRegion, RamBlock

ROUNDS = 7
PAGE = 4096
MIB = 1 << 20

MMIO_REGIONS = 64
MMIO_BASE = 0xFE00_0000
MMIO_STRIDE = 0x1_0000
MMIO_SIZE = 0x1000
RAM_BASE = 0x1_0000_0000
DMA_RAM = 256 * MIB
SYNC_RAM = 1 << 30


def _median_seconds_per_op(body: Callable[[int], None], n: int) -> float:
    """Median over ``ROUNDS`` of the time per operation of ``body(n)``."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        body(n)
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def _machine() -> tuple[AddressSpace, RamBlock]:
    """An address space: 64 MMIO regions with Python callbacks, and RAM."""
    regs = [0x1234_5678] * 16

    def read(offset: int, size: int) -> int:
        return regs[(offset >> 2) & 15]

    def write(offset: int, size: int, value: int) -> None:
        regs[(offset >> 2) & 15] = value

    root = MemoryRegion.container("system", memory.FULL_SPACE)
    ram = RamBlock.anonymous("bench.ram", DMA_RAM)
    with memory.transaction():
        for i in range(MMIO_REGIONS):
            dev = MemoryRegion.mmio(f"dev{i}", MMIO_SIZE, read, write)
            root.add_subregion(MMIO_BASE + i * MMIO_STRIDE, dev)
        root.add_subregion(RAM_BASE, MemoryRegion.ram("bench.ram", ram))
    return AddressSpace("bench", root), ram


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-n", type=int, default=200_000, help="accesses per round")
    args = parser.parse_args()
    n = args.n

    space, ram = _machine()
    read_sized = space.read_sized
    middle = MMIO_BASE + (MMIO_REGIONS // 2) * MMIO_STRIDE + 0x10
    # Register addresses over all regions, in a fixed pseudo-random order.
    spread = [
        MMIO_BASE + (i * 37 % MMIO_REGIONS) * MMIO_STRIDE + (i * 4 % MMIO_SIZE) for i in range(4096)
    ]

    # The callbacks really run, and RAM reads really read RAM.
    if read_sized(middle, 4) != 0x1234_5678 or read_sized(spread[1], 4) != 0x1234_5678:
        raise SystemExit("MMIO read did not reach the Python callback")
    ram.write(0x10, b"\xef\xbe\xad\xde")
    if read_sized(RAM_BASE + 0x10, 4) != 0xDEAD_BEEF:
        raise SystemExit("RAM read_sized did not read RAM")

    def mmio_read(count: int) -> None:
        for _ in range(count):
            read_sized(middle, 4)

    def mmio_read_spread(count: int) -> None:
        for i in range(count):
            read_sized(spread[i & 4095], 4)

    def ram_read(count: int) -> None:
        addr = RAM_BASE + 0x10
        for _ in range(count):
            read_sized(addr, 4)

    # DMA: sequential 4 KiB pages through the RAM, dirty logging on.
    ram.log_start("migration")
    pages = DMA_RAM // PAGE
    page = bytes(range(256)) * (PAGE // 256)
    dma_read_ = space.read
    dma_write_ = space.write

    def dma_read(count: int) -> None:
        for i in range(count):
            dma_read_(RAM_BASE + (i % pages) * PAGE, PAGE)

    def dma_write(count: int) -> None:
        for i in range(count):
            dma_write_(RAM_BASE + (i % pages) * PAGE, page)

    # Touch every page once so neither transfer measures first-touch faults.
    for i in range(pages):
        dma_write_(RAM_BASE + i * PAGE, page)
    ram.sync("migration")

    dma_n = max(n // 20, pages // 8)
    per_s = 1 / MIB
    results = {
        "mmio_read4_python_ns": _median_seconds_per_op(mmio_read, n) * 1e9,
        "mmio_read4_python_spread_ns": _median_seconds_per_op(mmio_read_spread, n) * 1e9,
        "ram_read4_ns": _median_seconds_per_op(ram_read, n) * 1e9,
        "dma_read_4k_mib_per_s": PAGE * per_s / _median_seconds_per_op(dma_read, dma_n),
        "dma_write_4k_mib_per_s": PAGE * per_s / _median_seconds_per_op(dma_write, dma_n),
    }
    ram.log_stop("migration")
    del space, ram

    # Sync of a 1 GiB block with 1% of its pages dirtied before each take.
    block = RamBlock.anonymous("bench.sync", SYNC_RAM)
    block.log_start("migration")
    dirty_pages = range(0, block.page_count, 100)
    times = []
    for _ in range(ROUNDS):
        for p in dirty_pages:
            block.write(p * block.page_size, b"\x01")
        start = time.perf_counter()
        taken = block.sync("migration")
        times.append(time.perf_counter() - start)
        if taken.count != len(dirty_pages):
            raise SystemExit(f"sync took {taken.count} pages, expected {len(dirty_pages)}")
    results["sync_1gib_1pct_us"] = statistics.median(times) * 1e6

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:<32} {value:>12,.1f}")


if __name__ == "__main__":
    main()
