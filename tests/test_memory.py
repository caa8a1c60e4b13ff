"""Guest memory from Python: RAM blocks, regions, address spaces, dispatch,
dirty logging, dirty rate, the workload engine and memory backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from vmkit import errors, memory, qom
from vmkit.memory import AddressSpace, MemoryRegion, RamBlock

MiB = 1 << 20


@pytest.fixture
def system() -> Iterator[tuple[MemoryRegion, AddressSpace, RamBlock]]:
    ram = RamBlock.anonymous("pc.ram", 4 * MiB)
    root = MemoryRegion.container("system", memory.FULL_SPACE)
    root.add_subregion(0, MemoryRegion.ram("pc.ram", ram))
    yield root, AddressSpace("memory", root), ram


class Regs:
    """A register file with an access log, for MMIO callbacks."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        v = self.values.get(offset, 0x11 * (offset + 1) & ((1 << (8 * size)) - 1))
        self.log.append(("r", offset, size, v))
        return v

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.values[offset] = value


# --- RAM blocks -----------------------------------------------------------


def test_ram_block_basics(tmp_path: Path) -> None:
    for block in (
        RamBlock.anonymous("a", MiB),
        RamBlock.memfd("m", MiB),
        RamBlock.file("f", MiB, tmp_path / "ram", share=True),
    ):
        assert block.size == MiB and block.page_size == 4096 and block.page_count == 256
        block.write(100, b"abc")
        assert block.read(99, 5) == b"\0abc\0"
        assert not block.is_zero_page(0) and block.is_zero_page(1)
        assert len(block) == MiB
    assert RamBlock.memfd("m2", MiB).fd is not None and RamBlock.anonymous("a2", MiB).fd is None


def test_ram_block_bad_input() -> None:
    with pytest.raises(errors.RegionLayoutError, match="zero"):
        RamBlock.anonymous("z", 0)
    with pytest.raises(errors.RegionLayoutError, match="not aligned"):
        RamBlock.anonymous("u", 4097)
    b = RamBlock.anonymous("b", 8192)
    with pytest.raises(errors.AddressError, match="outside 'b'"):
        b.read(8190, 4)
    with pytest.raises(errors.AddressError):
        b.write(2**64 - 1, b"xx")
    with pytest.raises(errors.AddressError):
        b.fill(0, 8193)
    assert b.read(0, 8) == bytes(8)  # nothing was written by the refused calls


def test_file_backing_shared_and_private(tmp_path: Path) -> None:
    path = tmp_path / "guest.img"
    path.write_bytes(b"\x5a" * 8192)
    private = RamBlock.file("p", 8192, path, share=False)
    assert private.read(0, 2) == b"\x5a\x5a"  # the file's contents are mapped
    private.write(0, b"PR")
    assert path.read_bytes()[:2] == b"\x5a\x5a"  # copy on write
    shared = RamBlock.file("s", 8192, path, share=True)
    shared.write(0, b"SH")
    assert path.read_bytes()[:2] == b"SH"


def test_memoryview_is_zero_copy() -> None:
    b = RamBlock.anonymous("mv", 2 * 4096)
    view = memoryview(b)  # type: ignore[arg-type]
    assert view.nbytes == 8192 and not view.readonly
    view[10:13] = b"xyz"
    assert b.read(10, 3) == b"xyz"
    b.write(20, b"q")
    assert bytes(view[20:21]) == b"q"
    view.release()


def test_memfd_ram_is_shared_with_a_second_process() -> None:
    block = RamBlock.memfd("shared", 4 * 4096)
    block.write(4096, b"from parent")
    fd = block.fd
    assert fd is not None
    child = textwrap.dedent(
        f"""
        import mmap, os
        m = mmap.mmap({fd}, 4 * 4096, mmap.MAP_SHARED)
        print(m[4096:4096 + 11].decode())
        m[8192:8192 + 10] = b"from child"
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child], pass_fds=(fd,), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "from parent"
    assert block.read(8192, 10) == b"from child"


# --- regions and dispatch ---------------------------------------------------


def test_dma_across_regions_and_holes(system: tuple[MemoryRegion, AddressSpace, RamBlock]) -> None:
    root, space, _ram = system
    rom_block = RamBlock.anonymous("bios", 64 * 1024)
    rom_block.write(0, b"BIOS")
    root.add_subregion(0xFFFF_0000, MemoryRegion.rom("bios", rom_block))
    # RAM to the end of RAM, then a hole: reads all ones, writes dropped, counted.
    end = 4 * MiB
    space.write(end - 2, b"abcd")
    assert space.read(end - 2, 4) == b"ab\xff\xff"
    assert space.stats()["unassigned_writes"] == 1 and space.stats()["unassigned_reads"] == 1
    # ROM: readable, guest writes dropped.
    space.write(0xFFFF_0000, b"XXXX")
    assert space.read(0xFFFF_0000, 4) == b"BIOS"
    assert space.stats()["readonly_writes"] == 1
    # Strict mode turns unassigned accesses into errors.
    space.strict = True
    with pytest.raises(errors.AddressError, match="unassigned access at 0x400000"):
        space.read(end, 1)
    with pytest.raises(errors.AddressError, match="overflows"):
        space.read(2**64 - 2, 4)


def test_mmio_dispatch_with_python_callbacks(
    system: tuple[MemoryRegion, AddressSpace, RamBlock],
) -> None:
    root, space, _ = system
    regs = Regs()
    root.add_subregion(
        0x1000_0000, MemoryRegion.mmio("uart", 8, regs.read, regs.write, valid_max=4, impl_max=1)
    )
    space.write_sized(0x1000_0000, 1, 0x41)
    assert regs.log[-1] == ("w", 0, 1, 0x41)
    # A 4-byte read is split into four 1-byte reads, assembled little-endian.
    regs.log.clear()
    assert space.read_sized(0x1000_0004, 4) == 0x88_77_66_55
    assert [(op, off, size) for op, off, size, _ in regs.log] == [("r", i, 1) for i in range(4, 8)]
    # Invalid accesses: too wide, unaligned.
    with pytest.raises(errors.AccessError, match=r"outside the valid 1\.\.=4 bytes"):
        space.read_sized(0x1000_0000, 8)
    with pytest.raises(errors.AccessError, match="unaligned"):
        space.read_sized(0x1000_0001, 2)
    assert space.stats()["invalid_accesses"] == 2
    with pytest.raises(errors.AccessError, match="not 1, 2, 4 or 8"):
        space.read_sized(0x1000_0000, 3)


def test_mmio_callback_exception_propagates(
    system: tuple[MemoryRegion, AddressSpace, RamBlock],
) -> None:
    root, space, _ = system

    def read(offset: int, size: int) -> int:
        raise KeyError(f"register {offset:#x}")

    root.add_subregion(0x2000_0000, MemoryRegion.mmio("bad", 16, read, lambda *a: None))
    with pytest.raises(KeyError, match="register 0x4"):
        space.read_sized(0x2000_0004, 4)


def test_aliases_priorities_and_moves(system: tuple[MemoryRegion, AddressSpace, RamBlock]) -> None:
    root, space, ram = system
    ram.write(0x1000, b"target")
    alias = MemoryRegion.alias("low-alias", root.subregions()[0][0], 0x1000, 0x1000)
    root.add_subregion_overlap(0x8000_0000, alias, 1)
    assert space.read(0x8000_0000, 6) == b"target"
    # A higher-priority MMIO window hides RAM; disabling it shows RAM again.
    regs = Regs()
    win = MemoryRegion.mmio("win", 0x1000, regs.read, regs.write)
    root.add_subregion_overlap(0x1000, win, 2)
    assert space.read_sized(0x1000, 1) == regs.read(0, 1)
    win.enabled = False
    assert space.read(0x1000, 6) == b"target"
    win.enabled = True
    win.set_address(0x3000)  # a BAR move
    assert space.read(0x1000, 6) == b"target"
    # Flat views show terminating regions: the alias renders as pc.ram @0x1000.
    view = [(r.start, r.region.name, r.offset_in_region) for r in space.flat_view()]
    assert view == [
        (0, "pc.ram", 0),
        (0x3000, "win", 0),
        (0x4000, "pc.ram", 0x4000),
        (0x8000_0000, "pc.ram", 0x1000),
    ]
    with pytest.raises(errors.RegionLayoutError, match=r"overlaps 'pc\.ram'"):
        root.add_subregion(0x2000, MemoryRegion.container("c", 0x10))
    with pytest.raises(errors.RegionLayoutError, match="beyond its target"):
        MemoryRegion.alias("far", win, 0x800, 0x1000)
    with pytest.raises(errors.RegionLayoutError, match="zero"):
        MemoryRegion.container("z", 0)
    with pytest.raises(errors.RegionLayoutError, match="already placed"):
        root.add_subregion_overlap(0x9000_0000, win, 1)
    with pytest.raises(errors.RegionLayoutError, match="cycle"):
        c = MemoryRegion.container("loop", 0x1000)
        c.add_subregion(0, MemoryRegion.alias("back", root, 0, 0x1000))
        root.add_subregion_overlap(0xA000_0000, c, 0)
        c.add_subregion_overlap(0x0, root, 0)


def test_transactions_render_once(system: tuple[MemoryRegion, AddressSpace, RamBlock]) -> None:
    root, space, _ = system
    regs = Regs()
    a = MemoryRegion.mmio("a", 0x100, regs.read, regs.write)
    b = MemoryRegion.mmio("b", 0x100, regs.read, regs.write)
    before = [r.region.name for r in space.flat_view()]
    with memory.transaction():
        root.add_subregion(0x5000_0000, a)
        root.add_subregion(0x5000_0100, b)
        assert [r.region.name for r in space.flat_view()] == before  # not yet
    assert [r.region.name for r in space.flat_view()] == ["pc.ram", "a", "b"]


def test_mtree_dumps(system: tuple[MemoryRegion, AddressSpace, RamBlock]) -> None:
    root, _space, _ = system
    regs = Regs()
    root.add_subregion_overlap(
        0xFED0_0000, MemoryRegion.mmio("hpet", 0x400, regs.read, regs.write), 0
    )
    text = memory.mtree()
    assert (
        "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n" in text
    )
    assert "    0000000000000000-00000000003fffff (prio 0, ram): pc.ram\n" in text
    assert "    00000000fed00000-00000000fed003ff (prio 0, i/o): hpet\n" in text
    flat = memory.mtree_flat()
    assert ' AS "memory", root: system\n Root memory region: system\n' in flat
    assert "  0000000000000000-00000000003fffff (prio 0, ram): pc.ram\n" in flat


def test_iommu_translation() -> None:
    ram = RamBlock.anonymous("dma-ram", MiB)
    ram.write(0x5000, b"translated")
    sysroot = MemoryRegion.container("sys", memory.FULL_SPACE)
    sysroot.add_subregion(0, MemoryRegion.ram("dma-ram", ram))
    sysmem = AddressSpace("iommu-target", sysroot)

    def translate(iova: int, is_write: bool) -> tuple[AddressSpace, int, int, bool, bool]:
        # One 4 KiB page at IOVA 0x1000 maps to 0x5000, read-only.
        if iova >> 12 != 1:
            raise PermissionError(f"no mapping for {iova:#x}")
        return sysmem, 0x5000, 0xFFF, True, False

    dev_root = MemoryRegion.container("dev-root", memory.FULL_SPACE)
    dev_root.add_subregion(0, MemoryRegion.iommu("dmar", memory.FULL_SPACE, translate))
    dev_as = AddressSpace("dev-dma", dev_root)
    assert dev_as.read(0x1000, 10) == b"translated"
    with pytest.raises(errors.AccessError, match="permission denied"):
        dev_as.write(0x1000, b"x")
    with pytest.raises(PermissionError, match="no mapping for 0x2000"):
        dev_as.read(0x2000, 1)


# --- owners: regions of devices (principle 1) ----------------------------


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> Callable[[str], str]:
    return lambda base: f"mem-{request.node.name[:30]}-{base}".replace("_", "-")


def test_access_after_unplug_fails_cleanly(
    machine: qom.Object,
    system: tuple[MemoryRegion, AddressSpace, RamBlock],
    uniq: Callable[[str], str],
) -> None:
    root, space, _ = system
    regs = Regs()
    dev_type = uniq("dev")
    bar: dict[str, MemoryRegion] = {}

    def realize(dev: qom.Object) -> None:
        bar["r"] = MemoryRegion.mmio("bar0", 0x100, regs.read, regs.write, owner=dev)
        root.add_subregion(0xE000_0000, bar["r"])

    qom.register_type(dev_type, "device", realize=realize)
    dev = qom.device_add(dev_type, id="d0")
    assert space.read_sized(0xE000_0000, 4) == regs.read(0, 4)
    # The device "forgets" to unmap its BAR on unrealize: the flat view still
    # holds the region (and so its owner), but accesses fail cleanly.
    dev.unrealize()
    with pytest.raises(errors.DeviceGoneError, match="is not realized"):
        space.read_sized(0xE000_0000, 4)
    with pytest.raises(errors.DeviceGoneError):
        space.write(0xE000_0000, b"\0")
    assert dev.alive  # kept by the flat view's reference
    root.del_subregion(bar["r"])
    qom.device_del("d0")
    assert dev.phase == "finalized"


def test_region_of_embedded_child_keeps_container_storage(
    machine: qom.Object,
    system: tuple[MemoryRegion, AddressSpace, RamBlock],
    uniq: Callable[[str], str],
) -> None:
    """The qemu-xhci case with real regions: BAR 0 is owned by the embedded
    controller; the flat view holds it across hot-unplug."""
    root, space, _ = system
    regs = Regs()
    core_t, pci_t = uniq("xhci-core"), uniq("qemu-xhci")
    qom.register_type(core_t, "device")

    def realize(pci: qom.Object) -> None:
        core = pci.child("xhci")
        assert core is not None
        core.realize()
        root.add_subregion(
            0xFEB0_0000, MemoryRegion.mmio("capabilities", 0x40, regs.read, regs.write, owner=core)
        )

    qom.register_type(
        pci_t, "device", instance_init=lambda o: o.embed_child("xhci", core_t), realize=realize
    )
    pci = qom.device_add(pci_t, id="usb")
    core = qom.resolve_path("usb/xhci")
    space.read_sized(0xFEB0_0000, 4)
    qom.device_del("usb")  # the wrapper is finalized; the controller is kept by the flat view
    assert pci.phase == "finalized" and core.alive and not core.storage_released
    with pytest.raises(errors.DeviceGoneError):
        space.read_sized(0xFEB0_0000, 4)
    (cap,) = [r for r, _, _ in root.subregions() if r.name == "capabilities"]
    root.del_subregion(cap)
    del cap
    import gc

    gc.collect()
    assert core.phase == "finalized" and core.storage_released


# --- dirty logging -----------------------------------------------------------


def test_dirty_logging_per_client(system: tuple[MemoryRegion, AddressSpace, RamBlock]) -> None:
    _, space, ram = system
    ram.log_start("migration")
    space.write(0x1000, b"x")  # page 1
    ram.log_start("display")
    space.write(0x3000, b"y" * 4097)  # pages 3 and 4
    mig = ram.sync("migration")
    assert mig.pages() == [1, 3, 4] and mig.ranges() == [(1, 1), (3, 2)] and 3 in mig
    assert ram.sync("migration").count == 0  # take-and-clear
    assert ram.sync("display").pages() == [3, 4]
    assert ram.log_stop("display") and not ram.is_logging("display")
    with pytest.raises(errors.GuestMemoryError):
        ram.sync("display")
    with pytest.raises(errors.PropertyValueError, match="unknown dirty-log client 'vga'"):
        ram.log_start("vga")


def test_dirty_rate_with_the_workload() -> None:
    ram = RamBlock.anonymous("rate", 16 * MiB)
    with memory.Workload([ram], rate=32 * MiB, pattern="uniform", seed=7):
        report = memory.measure_dirty_rate([ram], 0.3)
    assert report["window"] >= 0.29
    assert 0 < report["dirty_pages"] <= ram.page_count  # type: ignore[operator]
    assert "rate" in report["blocks"]  # type: ignore[operator]


# --- the workload engine -----------------------------------------------------


def test_workload_is_reproducible() -> None:
    sums = []
    for _ in range(2):
        ram = RamBlock.anonymous("wl", 8 * MiB)
        w = memory.Workload([ram], seed=42, max_ops=5000, pattern="zipf")
        assert w.wait(30)
        stats = w.stop()
        assert stats["ops"] == 5000
        sums.append(ram.checksum())
    assert sums[0] == sums[1]


def test_workload_pause_resume_throttle() -> None:
    ram = RamBlock.anonymous("wl2", 8 * MiB)
    w = memory.Workload([ram], threads=2, pattern="hot-set")
    assert w.wait_ops(1, timeout=60), "the workload writes"
    w.pause()
    assert w.paused
    assert w.parked == 2, "both writers acknowledged the pause"
    ops, checksum = w.stats()["ops"], ram.checksum()
    # Parked writers: however long these take, nothing moves.
    assert ram.checksum() == checksum
    assert w.stats()["ops"] == ops
    w.resume()
    assert w.wait_ops(ops + 1, timeout=60), "writes go on after resume"
    assert w.stats()["ops"] > ops
    w.throttle = 50
    assert w.throttle == 50
    with pytest.raises(errors.GuestMemoryError):
        w.throttle = 100
    w.stop()
    with pytest.raises(errors.LifecycleError):
        w.pause()
    with pytest.raises(errors.LifecycleError):
        w.wait_ops(1, timeout=1)


def test_checksum_matches_an_independent_reader() -> None:
    ram = RamBlock.anonymous("cs", 64 * 1024)
    with memory.Workload([ram], seed=3, max_ops=64) as w:
        w.wait(10)
    data = ram.read(0, 64 * 1024)
    assert memory.xxh3_64(data) == ram.checksum()
    assert memory.xxh3_64(data[5:1000]) == ram.checksum(5, 995)


def test_checksum_is_xxh3_64_of_the_whole_block() -> None:
    # A block larger than the core's 64 KiB hashing chunk, with a tail that
    # is not a multiple of it: the streamed hash must equal the one-shot
    # hash the standard package computes over the block's bytes.
    size = 3 * 64 * 1024 + 4096
    ram = RamBlock.anonymous("xxh3", size)
    with memory.Workload([ram], seed=5, max_ops=200) as w:
        w.wait(10)
    data = ram.read(0, size)
    assert data != bytes(size)
    assert ram.checksum() == xxhash.xxh3_64_intdigest(data)
    assert ram.checksum(1, size - 1) == xxhash.xxh3_64_intdigest(data[1:])
    assert RamBlock.anonymous("zero", 4096).checksum() == xxhash.xxh3_64_intdigest(bytes(4096))


def test_workload_bad_config() -> None:
    ram = RamBlock.anonymous("bad", MiB)
    with pytest.raises(errors.PropertyValueError, match="unknown pattern"):
        memory.Workload([ram], pattern="bursty")
    with pytest.raises(errors.GuestMemoryError):
        memory.Workload([ram], threads=0)
    with pytest.raises(errors.GuestMemoryError):
        memory.Workload([], threads=1)


# --- memory backends (QOM) ---------------------------------------------------


def test_memory_backends_are_user_creatable(machine: qom.Object, tmp_path: Path) -> None:
    names = {t.name for t in qom.list_types("memory-backend")}
    assert {"memory-backend-ram", "memory-backend-memfd", "memory-backend-file"} <= names
    props = {p.name: p for p in qom.type_properties("memory-backend-file")}
    assert props["size"].type == "size" and props["mem-path"].type == "str"
    be = qom.object_add("memory-backend-memfd", "ram0", size="8M")
    block = RamBlock.of_backend(be)
    assert (block.name, block.size, block.backing) == ("ram0", 8 * MiB, "memfd")
    region = MemoryRegion.ram("pc.ram", block)
    with pytest.raises(errors.LifecycleError, match="in use"):
        qom.object_del("ram0")
    del region, block
    qom.object_del("ram0")
    with pytest.raises(errors.PropertyValueError, match="non-zero"):
        qom.object_add("memory-backend-ram", "ram1")
    with pytest.raises(errors.PropertyValueError, match="mem-path"):
        qom.object_add("memory-backend-file", "ram2", size="1M")
    f = qom.object_add(
        "memory-backend-file", "ram3", size="1M", mem_path=str(tmp_path / "m"), share=True
    )
    RamBlock.of_backend(f).write(0, b"file!")
    assert (tmp_path / "m").read_bytes()[:5] == b"file!"
    qom.object_del("ram3")


def test_backend_construction_has_no_side_effects() -> None:
    with (
        qom.new("memory-backend-ram", size="1G") as be,
        pytest.raises(errors.GuestMemoryError, match="not completed"),
    ):
        RamBlock.of_backend(be)


def test_machine_ram_from_a_backend(machine: qom.Object) -> None:
    be = qom.object_add("memory-backend-memfd", "pc.ram", size="64M")
    ram = RamBlock.of_backend(be)
    system, space = memory.pc_memory(ram, owner=machine)
    space.write(0x10_0000, b"kernel")
    assert ram.read(0x10_0000, 6) == b"kernel"
    text = memory.mtree()
    assert "alias ram-below-4g @pc.ram 0000000000000000-0000000003ffffff" in text
    assert "memory-region: pc.ram\n" in text
    assert system.subregions()[0][0].name == "ram-below-4g"
    del system, space, ram
    import gc

    gc.collect()
    qom.object_del("pc.ram")


def test_a_wait_without_the_gil_does_not_block_other_calls() -> None:
    # A thread waiting for writes that never come (the workload is paused)
    # must not hold anything another thread needs: stats and stop still
    # answer, and stop ends the wait.
    ram = RamBlock.anonymous("wl-wait", 4 * MiB)
    w = memory.Workload([ram], seed=3, rate=1 << 20)
    w.pause()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(w.wait_ops(1 << 60, 600.0)))
    waiter.start()
    assert w.stats()["ops"] >= 0  # answered while the other thread waits
    w.stop()
    waiter.join(timeout=60)  # a guard against a hang, not a timing check
    assert not waiter.is_alive()
    assert result == [False]


@pytest.mark.parametrize("timeout", [float("nan"), -1.0])
def test_a_wait_needs_a_number_of_seconds(timeout: float) -> None:
    ram = RamBlock.anonymous("wl-nan", 4 * MiB)
    with memory.Workload([ram], seed=3, max_ops=10) as w:
        with pytest.raises(ValueError, match="timeout"):
            w.wait(timeout)
        with pytest.raises(ValueError, match="timeout"):
            w.wait_ops(1, timeout)
