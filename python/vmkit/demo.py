"""``make demo``: the main job, then a tour of the object model, memory and migration.

Run with ``python -m vmkit.demo``. The main job starts ``vmkit run`` with the
default machine and a workload in the background and drives it over QMP with
QEMU's own client library, ``qemu.qmp``: it introspects the tree, hot-plugs
and unplugs a device, pauses and resumes, measures the dirty rate and shuts
the machine down, printing what it saw.

The tour then builds a machine in this process from Python device models
(:mod:`vmkit.demo_devices`), prints the tree as QEMU's ``info qom-tree``
does, shows introspection of a singleton type, the refusal of a second
singleton, a refused resurrection, and an embedded child that outlives its
hot-unplugged container; then guest memory and a workload, and a running
machine saved in QEMU's stream format and restored into a fresh one (and a
damaged copy refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import vmkit.demo_devices  # noqa: F401  (registers the demo device types)
from vmkit import errors, memory, migration, qom
from vmkit.machine import Machine


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main() -> None:
    """Runs the demo."""
    main_job()
    tour()


def tour() -> None:
    """The in-process tour (object model, memory, save/restore)."""
    qom.create_machine("none-machine")
    qom.object_add("memory-backend-memfd", "pc.ram", size="256M")
    qom.device_add("demo-intel-iommu", id="iommu0", intremap="on")
    qom.device_add("demo-qemu-xhci", id="usb0")
    qom.device_add("demo-isa-serial")

    _section("info qom-tree")
    print(qom.qom_tree("/machine"), end="")
    print(qom.qom_tree("/objects"), end="")

    _section("qom-list-properties demo-intel-iommu (a singleton type)")
    before = qom.stats()
    for p in qom.type_properties("demo-intel-iommu"):
        default = "" if p.default_value is None else f" (default {p.default_value!r})"
        print(f"  {p.name:<14} {p.type:<10}{default}")
    after = qom.stats()
    active = qom.singleton_instance("demo-intel-iommu")
    print(
        f"  -> temporary instance created and dropped: live objects {before.live_objects}"
        f" -> {after.live_objects}, active singleton: {active.path if active else None}"
    )

    _section("a second IOMMU")
    try:
        qom.device_add("demo-intel-iommu", id="iommu1")
    except errors.SingletonError as e:
        print(f"  refused: {e}")

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
    bar = qom.resolve_path("/machine/peripheral/usb0/xhci/bar0").ref()
    s0 = qom.stats()
    qom.device_del("usb0")
    s1 = qom.stats()
    print(
        f"  live objects {s0.live_objects} -> {s1.live_objects}, "
        f"live storages {s0.live_storages} -> {s1.live_storages} (kept by the region)"
    )
    size = bar["size"]
    assert isinstance(size, int)
    print(f"  region still readable: size = {qom.format_size(size)}")
    try:
        bar.container()
    except errors.ObjectFinalizedError as e:
        print(f"  its container is gone: {e}")
    bar.unref()
    s2 = qom.stats()
    print(f"  region released: live storages {s1.live_storages} -> {s2.live_storages}")

    _section("tree after unplug")
    print(qom.qom_tree("/machine/peripheral"), end="")

    show_memory()
    qom.destroy_machine()
    qom.object_del("pc.ram")
    show_save_restore()


def show_memory() -> None:
    """Guest RAM from the pc.ram backend, a device register window, a workload."""
    machine = qom.machine()
    ram = memory.RamBlock.of_backend(qom.resolve_path("/objects/pc.ram"))
    system, space = memory.pc_memory(ram, owner=machine)
    regs: dict[int, int] = {}
    system.add_subregion(
        0xFEB0_0000,
        memory.MemoryRegion.mmio(
            "demo-uart",
            8,
            read=lambda off, size: regs.get(off, 0),
            write=lambda off, size, value: regs.__setitem__(off, value),
            impl_max=1,
        ),
    )
    _section("info mtree -f")
    print(memory.mtree_flat(), end="")

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


# ----- the main job: vmkit run, driven over QMP ----------------------------


def _start_vmkit_run(sock: Path) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "vmkit.cli", "run", "-S",
        "--qmp", f"unix:{sock}",
        "-m", "256M", "--backend", "memfd",
        "--workload-rate", "256M", "--workload-pattern", "hot-set", "--seed", "1",
        "--plugin", "vmkit.demo_devices",
        "--name", "demo-vm",
    ]  # fmt: skip
    print("  $ vmkit " + " ".join(cmd[3:]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("QMP: "):
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"vmkit run did not start: {line!r} {err}")
    print(f"  {line}")
    return proc


async def _drive(sock: Path) -> None:
    from qemu.qmp import ExecuteError, QMPClient

    client = QMPClient("demo")
    await client.connect(str(sock))
    events: list[str] = []

    async def run(cmd: str, args: dict[str, Any] | None = None) -> Any:
        shown = f" {json.dumps(args)}" if args else ""
        result = await client.execute(cmd, args)
        brief = json.dumps(result)
        print(f"  -> {cmd}{shown}: {brief if len(brief) < 100 else brief[:97] + '...'}")
        return result

    async def collect(listener: Any) -> None:
        async for event in listener:
            data = f" {json.dumps(event['data'])}" if "data" in event else ""
            events.append(f"{event['event']}{data}")
            print(f"  <- event {event['event']}{data}")

    with client.listener() as listener:
        task = asyncio.create_task(collect(listener))
        greeting = client.greeting
        version = dict(greeting.QMP.version) if greeting is not None else {}
        print(f"  connected with qemu.qmp; greeting version {json.dumps(version)}")
        await run("query-status")
        await run("query-name")

        _section("introspect the machine")
        tree = await run("human-monitor-command", {"command-line": "info qom-tree"})
        print("    " + "\n    ".join(str(tree).rstrip().splitlines()))
        devices = await run("qom-list-types", {"implements": "device"})
        print(f"    device types: {', '.join(sorted(t['name'] for t in devices))}")
        props = await run("device-list-properties", {"typename": "demo-intel-iommu"})
        print(f"    demo-intel-iommu properties: {', '.join(p['name'] for p in props)}")

        _section("hot-plug and unplug")
        await run("device_add", {"driver": "demo-intel-iommu", "id": "iommu0", "aw-bits": 48})
        try:
            await client.execute("device_add", {"driver": "demo-intel-iommu", "id": "iommu1"})
        except ExecuteError as e:
            print(f"  -> a second IOMMU refused ({e.error_class}): {e}")
        await run("device_add", {"driver": "demo-isa-serial", "id": "serial0"})
        await run("qom-get", {"path": "/machine/peripheral/iommu0", "property": "aw-bits"})
        await run("qom-list", {"path": "/machine/peripheral"})
        await run("device_del", {"id": "serial0"})

        _section("run, measure the dirty rate, pause, resume")
        await run("cont")
        await run("calc-dirty-rate", {"calc-time": 500, "calc-time-unit": "millisecond"})
        info: dict[str, Any] = {}
        for _ in range(50):
            info = await client.execute("query-dirty-rate")  # type: ignore[assignment]
            if info["status"] == "measured":
                break
            await asyncio.sleep(0.05)
        print(f"  -> query-dirty-rate: {info['dirty-rate']} MiB/s over {info['calc-time']} ms")
        await run("stop")
        await run("query-status")
        await run("cont")
        await run("human-monitor-command", {"command-line": "info ramblock"})

        _section("shut down")
        await run("quit")
        await asyncio.sleep(0.2)
        task.cancel()
    print(f"  events seen: {', '.join(e.split(' ')[0] for e in events)}")
    with contextlib.suppress(EOFError):  # the server closed after quit, as QEMU does
        await client.disconnect()


def main_job() -> None:
    """Starts ``vmkit run`` in the background and drives it over QMP."""
    _section("main job: vmkit run, driven over QMP with qemu.qmp")
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        print("  skipped: the qemu.qmp client is not installed (pip install qemu.qmp)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "demo.qmp"
        proc = _start_vmkit_run(sock)
        try:
            asyncio.run(_drive(sock))
            status = proc.wait(timeout=20)
            print(f"  vmkit run exited with status {status}; socket removed: {not sock.exists()}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


if __name__ == "__main__":
    main()
