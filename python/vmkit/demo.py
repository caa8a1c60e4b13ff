"""``make demo``: the main job — a live migration between two ``vmkit run``
processes — then a short tour of the object model, memory and save/restore.

Run with ``python -m vmkit.demo [--out DIR] [--main-only]``. The main job
starts two ``vmkit run`` processes: a source whose workload dirties guest
memory at a chosen rate (``--rate``), with a serial port whose scratch
register is set over QMP, and a destination waiting with ``--incoming
tcp:127.0.0.1:0``. It drives a live migration over TCP on loopback with
QEMU's own QMP client (``qemu.qmp``), through the code of ``vmkit migrate``
(:func:`vmkit.migrate_cmd.migrate_and_report`): live progress (``rich``,
on a terminal), the summary table — QEMU's downtime and the pause the
guest felt, segment by segment — and a PNG plot of the remaining bytes and
the throughput per pass in ``DIR`` (its path is printed). Then it checks
that the destination holds what the source held at switchover: guest RAM
(``pmemsave`` on both sides, compared byte for byte) and device state (the
serial port's register read back with ``qom-get``, and every device section
of a save of each side, decoded and compared). It exits with status 1 if
anything differs.

The tour then builds a machine in this process — the q35-like board with
the real ``intel-iommu``, ``qemu-xhci`` and a ``usb-tablet``, and Python
device models (:mod:`vmkit.demo_devices`) — prints the tree as QEMU's ``info qom-tree``
does, shows introspection of a singleton type, the refusal of a second
singleton, a refused resurrection, and the xHCI's BAR0 region — owned by the
controller core embedded in the PCI function — held across a hot-unplug
(an access through it is refused); then guest memory and a workload, and a running
machine saved in QEMU's stream format and restored into a fresh one (and a
damaged copy refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import filecmp
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import xxhash
from rich.console import Console

import vmkit.demo_devices  # noqa: F401  (registers the demo device types)
from vmkit import devices, errors, memory, migration, qom
from vmkit.machine import Machine
from vmkit.migrate_cmd import migrate_and_report
from vmkit.migration_driver import MigrationRequest

T = TypeVar("T")

#: The guest RAM of both machines, and what the main job migrates.
DEMO_MEMORY = 128 << 20
#: The link's limit: the workload's rate must stay below it to converge.
DEMO_BANDWIDTH = 64 << 20
#: The downtime the switchover aims at (ms).
DEMO_DOWNTIME_LIMIT = 100
#: How long to wait for a process to start or stop (a guard, not a pace).
_GUARD = 30.0


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m vmkit.demo", description=__doc__)
    parser.add_argument("--out", default="vmkit-demo", help="where the plot goes")
    parser.add_argument("--main-only", action="store_true", help="skip the in-process tour")
    parser.add_argument(
        "--rate", default="24M", help="bytes/s the source's workload writes (default 24M)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ok = main_job(out, rate=args.rate)
    if not args.main_only:
        tour()
    return 0 if ok else 1


def tour() -> None:
    """The in-process tour (object model, memory, save/restore)."""
    machine = qom.create_machine("none-machine")
    backend = qom.object_add("memory-backend-memfd", "pc.ram", size="256M")
    ram = memory.RamBlock.of_backend(backend)
    system, space, io = devices.q35(ram, machine)
    qom.device_add("intel-iommu", id="iommu0", intremap="on")
    qom.device_add("qemu-xhci", id="usb0")
    qom.device_add("usb-tablet", bus="usb0.0")
    qom.device_add("demo-isa-serial")

    _section("info qom-tree")
    print(qom.qom_tree("/machine"), end="")
    print(qom.qom_tree("/objects"), end="")

    _section("qom-list-properties intel-iommu (a singleton type)")
    before = qom.stats()
    for p in qom.type_properties("intel-iommu"):
        default = "" if p.default_value is None else f" (default {p.default_value!r})"
        print(f"  {p.name:<16} {p.type:<10}{default}")
    after = qom.stats()
    active = qom.singleton_instance("intel-iommu")
    print(
        f"  -> temporary instance created and dropped: live objects {before.live_objects}"
        f" -> {after.live_objects}, active singleton: {active.path if active else None}"
    )

    _section("a second IOMMU")
    try:
        qom.device_add("intel-iommu", id="iommu1")
    except errors.SingletonError as e:
        print(f"  refused: {e}")
    cap = space.read_sized(devices.DMAR_BASE + 8, 8)
    print(f"  iommu0's CAP register at {devices.DMAR_BASE + 8:#x}: {cap:#018x} (QEMU 7.2's)")

    _section("resurrection during finalize")

    def finalize(obj: qom.Object) -> None:
        try:
            obj.ref()
        except errors.ObjectFinalizedError as e:
            print(f"  finalize hook tried obj.ref(): {e}")

    qom.register_type("demo-zombie", instance_finalize=finalize)
    zombie = qom.new("demo-zombie")
    zombie.unref()
    print(f"  object is now {zombie.phase}; finalize ran once")

    _section("hot-unplug of usb0 while its BAR region is referenced")
    io.write_sized(0xCF8, 4, 0x8000_0810)  # 00:01.0, BAR0
    io.write_sized(0xCFC, 4, 0xFEBF_0004)
    io.write_sized(0xCF8, 4, 0x8000_0804)  # Command: memory space
    io.write_sized(0xCFC, 2, 0x2)
    (pci,) = [r for r, _, _ in system.subregions() if r.name == "pci"]
    (bar,) = [r for r, _, _ in pci.subregions() if r.name == "xhci"]
    held = memory.AddressSpace("held", bar)
    owner = bar.owner.path if bar.owner is not None else None
    print(f"  BAR0 at 0xfebf0000, owned by {owner}: CAPLENGTH {held.read_sized(0, 1):#x}")
    s0 = qom.stats()
    qom.device_del("usb0")
    s1 = qom.stats()
    print(
        f"  live objects {s0.live_objects} -> {s1.live_objects}, "
        f"live storages {s0.live_storages} -> {s1.live_storages} (kept by the region)"
    )
    try:
        held.read_sized(0, 4)
    except errors.VmkitError as e:
        print(f"  an access through the held region is refused: {e}")
    del held, bar, pci
    s2 = qom.stats()
    print(f"  region released: live storages {s1.live_storages} -> {s2.live_storages}")

    show_memory(ram, system, space)
    # The board's regions and the RAM reference the backend: let go of them.
    del system, space, io, ram, backend, machine
    qom.destroy_machine()
    qom.object_del("pc.ram")
    show_save_restore()


def show_memory(
    ram: memory.RamBlock, system: memory.MemoryRegion, space: memory.AddressSpace
) -> None:
    """Guest RAM from the pc.ram backend, a device register window, a workload."""
    regs: dict[int, int] = {}
    system.add_subregion_overlap(
        0xFEB0_0000,
        memory.MemoryRegion.mmio(
            "demo-uart",
            8,
            read=lambda off, size: regs.get(off, 0),
            write=lambda off, size, value: regs.__setitem__(off, value),
            impl_max=1,
        ),
        1,
    )
    _section("a workload dirtying guest RAM")
    ram.log_start("migration")
    with memory.Workload([ram], rate=256 << 20, pattern="hot-set", seed=1) as load:
        rate = memory.measure_dirty_rate([ram], 0.5)
        stats = load.stats()
    dirty = ram.sync("migration")
    print(f"  workload wrote {stats['bytes'] / (1 << 20):.0f} MiB in {stats['elapsed']:.2f} s")
    print(f"  calc-dirty-rate: {rate['dirty_rate']} MiB/s ({rate['dirty_pages']} pages in 0.5 s)")
    print(
        f"  migration log: {dirty.count} of {ram.page_count} pages dirty,"
        f" in {len(dirty.ranges())} runs"
    )
    space.write(0x1000, b"hello, guest")
    space.write_sized(0xFEB0_0000, 1, 0x41)
    print(f"  DMA read back: {space.read(0x1000, 12)!r}; uart register 0 = {regs[0]:#x}")
    print(f"  RAM checksum (XXH3-64): {ram.checksum():#018x}")
    ram.log_stop("migration")


def show_save_restore() -> None:
    """A running machine saved to a file and restored into a fresh one."""
    _section("save a running machine (QEMU savevm format, version 3)")
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "vm.stream"
        with Machine(
            memory="256M",
            backend="memfd",
            workload_rate=512 << 20,
            workload_pattern="hot-set",
            seed=7,
        ) as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            uart.data.update(lcr=3, ier=1, scr=0x5A)
            vm.cont()
            time.sleep(0.3)
            vm.stop()
            saved_sum = vm.ram.checksum()
            started = time.perf_counter()
            stats = vm.save(stream)
            seconds = time.perf_counter() - started
        print(
            f"  {stats['bytes'] / (1 << 20):.1f} MiB stream in {seconds * 1000:.1f} ms:"
            f" {stats['normal_pages']} pages sent whole, {stats['zero_pages']} zero pages,"
            f" {stats['devices']} device section(s)"
        )
        report = migration.analyze(stream)
        print("  records: " + " ".join(r["type"] for r in report["records"]))
        for d in report["devices"]:
            print(f"  {d['idstr']} v{d['version_id']}: {d['fields']}")

        _section("restore into a fresh machine of the same shape")
        with Machine(memory="256M", backend="memfd") as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            vm.restore(stream)
            same = vm.ram.checksum() == saved_sum
            scr = uart.data["scr"]
            print(f"  status {vm.status}; RAM checksum equal: {same}; serial scr = {scr:#x}")

        _section("a damaged stream is refused and the machine cannot run")
        cut = Path(tmp) / "cut.stream"
        cut.write_bytes(stream.read_bytes()[: report["devices"][0]["offset"] + 30])
        with Machine(memory="256M", backend="memfd") as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            try:
                vm.restore(cut)
            except errors.MigrationError as e:
                print(f"  {type(e).__name__} at offset {e.offset} in section {e.section!r}: {e}")
            print(f"  status {vm.status}; serial scr untouched = {uart.data['scr']:#x}")
            try:
                vm.cont()
            except errors.VmkitError as e:
                print(f"  cont refused: {e}")


# ----- the main job: a live migration between two vmkit run processes ------


@dataclass
class _Process:
    """One ``vmkit run`` in the background."""

    name: str
    proc: subprocess.Popen[bytes]
    qmp: str
    log: IO[str]

    def finish(self) -> int:
        """Waits for it to exit after ``quit`` (kills it past the guard)."""
        try:
            status = self.proc.wait(timeout=_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self.log.close()
        return status


def _start_vmkit_run(tmp: Path, name: str, *extra: str) -> tuple[_Process, list[str]]:
    """Starts ``vmkit run`` with the demo machine; returns it with the lines
    it printed once ready (``QMP: ...``, and ``incoming: ...`` if asked)."""
    sock = tmp / f"{name}.qmp"
    args = [
        "run", "--qmp", f"unix:{sock}", "-m", f"{DEMO_MEMORY >> 20}M",
        "--plugin", "vmkit.demo_devices", "-device", "demo-isa-serial,id=serial0",
        "--name", name, *extra,
    ]  # fmt: skip
    print("  $ vmkit " + " ".join(args).replace(str(tmp) + "/", ""))
    log = open(tmp / f"{name}.log", "w+")  # noqa: SIM115 - closed by finish()
    # Unbuffered: select() then sees every line that readline() has not read.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", *args], stdout=subprocess.PIPE, stderr=log, bufsize=0
    )
    assert proc.stdout is not None
    wanted = 2 if "--incoming" in extra else 1
    lines: list[str] = []
    while len(lines) < wanted:
        ready, _, _ = select.select([proc.stdout], [], [], _GUARD)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            log.seek(0)
            raise RuntimeError(f"vmkit run ({name}) did not start: {log.read()[-2000:]}")
        lines.append(line)
        print(f"    {line}")
    return _Process(name, proc, str(sock), log), lines


async def _session(sock: str, body: Callable[[Any], Awaitable[T]]) -> T:
    """Runs ``body`` with a qemu.qmp client connected to ``sock``."""
    from qemu.qmp import QMPClient

    client = QMPClient("demo")
    await client.connect(sock)
    try:
        return await body(client)
    finally:
        with contextlib.suppress(EOFError, OSError):
            await client.disconnect()


async def _show(client: Any, cmd: str, args: dict[str, Any] | None = None) -> Any:
    result = await client.execute(cmd, args)
    shown = "" if not args else " " + " ".join(f"{k}={v}" for k, v in args.items())
    text = str(result)
    print(f"  -> {cmd}{shown}: {text if len(text) < 90 else text[:87] + '...'}")
    return result


async def _prepare_source(client: Any) -> None:
    await _show(client, "query-status")
    await _show(client, "qom-set", {"path": "serial0", "property": "scratch", "value": 0x5A})
    await client.execute("calc-dirty-rate", {"calc-time": 300, "calc-time-unit": "millisecond"})
    deadline = time.monotonic() + _GUARD
    while (info := await client.execute("query-dirty-rate"))["status"] != "measured":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dirty rate was not measured: {info}")
        await asyncio.sleep(0.05)
    print(f"  -> calc-dirty-rate over 300 ms: the guest dirties {info.get('dirty-rate')} MiB/s")


async def _verify_side(client: Any, tmp: Path, name: str) -> tuple[str, int, list[Any]]:
    """pmemsave of all guest RAM, the serial's scratch register, and the
    decoded device sections of a save: what is compared across sides."""
    status = (await client.execute("query-status"))["status"]
    ram = tmp / f"{name}.ram"
    await client.execute("pmemsave", {"val": 0, "size": DEMO_MEMORY, "filename": str(ram)})
    scratch = await client.execute("qom-get", {"path": "serial0", "property": "scratch"})
    stream = tmp / f"{name}.stream"
    await client.execute("x-vmkit-save", {"path": str(stream)})
    devices = [(d["idstr"], d["fields"]) for d in migration.analyze(stream)["devices"]]
    stream.unlink()
    return status, int(scratch), devices


def _busy_memory(path: Path) -> None:
    """A file of pseudo-random bytes, the source's initial RAM: a guest
    whose memory is in use (a fresh one is all zero pages, which cost the
    stream almost nothing)."""
    with open(path, "wb") as f:
        for _ in range(DEMO_MEMORY >> 20):
            f.write(os.urandom(1 << 20))


def _xxh3_of(path: Path) -> int:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.intdigest()


def _verify(src: _Process, dst: _Process, tmp: Path) -> bool:
    src_status, src_scr, src_devs = asyncio.run(
        _session(src.qmp, lambda c: _verify_side(c, tmp, "source"))
    )
    dst_status, dst_scr, dst_devs = asyncio.run(
        _session(dst.qmp, lambda c: _verify_side(c, tmp, "destination"))
    )
    print(
        f"  source {src_status}, destination {dst_status} (no workload of its own: RAM as loaded)"
    )
    src_ram, dst_ram = tmp / "source.ram", tmp / "destination.ram"
    same_ram = filecmp.cmp(src_ram, dst_ram, shallow=False)
    print(
        f"  guest RAM (pmemsave of {DEMO_MEMORY >> 20} MiB on each side):"
        f" {'equal byte for byte' if same_ram else 'DIFFERENT'}"
        f" (XXH3-64 {_xxh3_of(src_ram):#018x} / {_xxh3_of(dst_ram):#018x})"
    )
    for f in (src_ram, dst_ram):
        f.unlink()
    same_scr = src_scr == dst_scr == 0x5A
    print(f"  serial0 scratch register (qom-get): {src_scr:#x} / {dst_scr:#x}")
    same_devs = src_devs == dst_devs and bool(src_devs)
    print(
        f"  device state (every section of a save of each side, decoded):"
        f" {'equal' if same_devs else 'DIFFERENT'}"
    )
    for idstr, fields in dst_devs:
        print(f"    {idstr}: {fields}")
    return same_ram and same_scr and same_devs


def main_job(out: Path, *, rate: str = "24M") -> bool:
    """The live migration between two ``vmkit run`` processes (module
    docstring); returns whether the destination matched the source."""
    _section("main job: live migration between two vmkit run processes")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(f"  (sockets and files in {tmp})")
        procs: list[_Process] = []
        try:
            _busy_memory(tmp / "source-initial.ram")
            src, _ = _start_vmkit_run(
                tmp, "source", "--backend", "file", "--mem-path", str(tmp / "source-initial.ram"),
                "--workload-rate", rate, "--workload-pattern", "uniform", "--seed", "1",
            )  # fmt: skip
            procs.append(src)
            dst, _ = _start_vmkit_run(
                tmp, "destination", "--workload-rate", "0", "--incoming", "tcp:127.0.0.1:0"
            )
            procs.append(dst)

            _section("the source runs; over QMP with qemu.qmp")
            asyncio.run(_session(src.qmp, _prepare_source))
            asyncio.run(_session(dst.qmp, lambda c: _show(c, "query-migrate")))

            _section("vmkit migrate: live migration over TCP on loopback")
            plot = out / "migration.png"
            print(
                f"  $ vmkit migrate unix:source.qmp unix:destination.qmp"
                f" --max-bandwidth {DEMO_BANDWIDTH >> 20}M --downtime-limit {DEMO_DOWNTIME_LIMIT}"
                f" --plot {plot}"
            )
            migrate_and_report(
                MigrationRequest(
                    source=f"unix:{src.qmp}",
                    dest=f"unix:{dst.qmp}",
                    max_bandwidth=DEMO_BANDWIDTH,
                    downtime_limit=DEMO_DOWNTIME_LIMIT,
                ),
                console=Console(),
                live=sys.stderr.isatty(),
                plot=plot,
            )

            _section("the destination equals the source at switchover")
            ok = _verify(src, dst, tmp)
            print(f"  verdict: {'the same machine' if ok else 'MISMATCH'}")
        finally:
            for p in procs:
                if p.proc.poll() is None:
                    with contextlib.suppress(Exception):
                        asyncio.run(_session(p.qmp, lambda c: c.execute("quit")))
                status = p.finish()
                print(f"  vmkit run ({p.name}) exited with status {status}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
