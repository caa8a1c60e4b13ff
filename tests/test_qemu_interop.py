"""vmkit reads a migration stream written by a real QEMU.

The test starts ``qemu-system-x86_64`` (q35, TCG, no guest kernel, paused
with ``-S``) whose RAM is a ``memory-backend-file`` the test pre-filled with
a known pattern, migrates it to a file over QMP, then checks that vmkit
parses every record, that the RAM it loads from the stream equals the
file, and that the device sections decode through the VMDESCRIPTION trailer.

The other direction: vmkit writes a RAM-only stream for the machine type
and RAM block QEMU itself names, a second QEMU started with ``-incoming
defer`` loads it (``migrate-incoming``), and the guest memory that QEMU then
holds, read back with QMP ``pmemsave``, equals what vmkit sent. A stream
naming another machine type must make that QEMU fail the migration.

QEMU 7.2 (Debian 12) has no ``file:`` migration URI, so the stream goes
through ``exec:cat``. ``make test-python`` installs QEMU (``make
system-deps``); without it the test skips, except under CI (``CI`` set),
where a missing QEMU is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmkit import migration
from vmkit.cli import main
from vmkit.memory import RamBlock
from vmkit.qmp import QMPSocket

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"
RAM_SIZE = 64 << 20
PAGE = 4096
MIB = 1 << 20
TIMEOUT = 60.0


def page_pattern(i: int) -> bytes:
    """Page ``i`` of the pre-filled RAM: zero for some pages, else bytes
    derived from ``i`` (its number, then a rotated byte ramp)."""
    if i % 7 == 3 or 1000 <= i < 1100:
        return bytes(PAGE)
    if i % 97 == 5:
        # Nearly zero: a single byte set at the very end.
        return bytes(PAGE - 1) + b"\x01"
    ramp = bytes(range(256)) * (PAGE // 256)
    k = (i * 37) % 256
    return i.to_bytes(8, "little") + (ramp[k:] + ramp[:k])[8:]


def ram_pattern() -> bytes:
    return b"".join(page_pattern(i) for i in range(RAM_SIZE // PAGE))


@dataclass
class Migrated:
    stream: Path
    """The migration stream QEMU wrote."""
    ram_file: Path
    """The memory-backend-file's file (as it is after migration)."""
    pattern: bytes
    """What the test wrote to ``ram_file`` before starting QEMU."""
    info: dict[str, Any]
    """The last ``query-migrate`` reply."""
    """Wall time from QEMU start to the stream on disk."""


@pytest.fixture(scope="module")
def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        msg = f"{QEMU} not found (make system-deps installs qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def machine_args(ram_file: Path) -> list[str]:
    """The machine of both directions: q35 under TCG without default devices
    or a guest kernel, paused (``-S``), its 64 MiB of RAM in a
    memory-backend-file whose RAM block QEMU names after the backend id."""
    return [
        "-no-user-config",
        "-nodefaults",
        "-machine",
        "q35,accel=tcg,memory-backend=pc.ram",
        "-m",
        "64M",
        "-object",
        f"memory-backend-file,id=pc.ram,size=64M,mem-path={ram_file},share=on",
        "-display",
        "none",
        "-S",
    ]


@dataclass
class Qemu:
    proc: subprocess.Popen[bytes]
    qmp: QMPSocket
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_qemu(binary: str, args: list[str], log: Path, deadline: float) -> Iterator[Qemu]:
    """Runs QEMU with ``args`` and a QMP socket (capabilities negotiated);
    kills it on the way out unless it has ended, and prints its output if
    the body raised."""
    # Unix socket paths are limited to ~108 bytes: keep this one short.
    sock_dir = Path(tempfile.mkdtemp(prefix="vmkit-qmp-"))
    sock = sock_dir / "qmp.sock"
    cmd = [binary, *args, "-qmp", f"unix:{sock},server=on,wait=off"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    qmp: QMPSocket | None = None
    try:
        qmp = QMPSocket(sock, timeout=max(deadline - time.monotonic(), 1.0), negotiate=True)
        yield Qemu(proc, qmp, log)
    except BaseException:
        sys.stderr.write(f"QEMU output:\n{log.read_text(errors='replace')}\n")
        raise
    finally:
        try:
            if qmp is not None:
                qmp.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=TIMEOUT)
            shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def migrated(qemu_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    work = tmp_path_factory.mktemp("qemu")
    ram_file = work / "pc.ram"
    stream = work / "vm.stream"
    pattern = ram_pattern()
    ram_file.write_bytes(pattern)
    start = time.monotonic()
    deadline = start + TIMEOUT
    with running_qemu(qemu_binary, machine_args(ram_file), work / "qemu.log", deadline) as qemu:
        # cat writes to a temporary name and renames it when done, so the
        # stream is complete once it exists under its final name.
        part = stream.with_suffix(".part")
        qemu.qmp.execute("migrate", uri=f"exec:cat > '{part}' && mv '{part}' '{stream}'")
        while True:
            info: dict[str, Any] = qemu.qmp.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                break
            assert status not in ("failed", "cancelled"), info
            assert time.monotonic() < deadline, f"migration not done after {TIMEOUT}s: {info}"
            time.sleep(0.05)
        while not stream.exists():
            assert time.monotonic() < deadline, "migration stream not written"
            time.sleep(0.05)
        qemu.qmp.execute("quit")
        qemu.proc.wait(timeout=TIMEOUT)
    yield Migrated(stream, ram_file, pattern, info)
    # ~120 MiB that pytest would otherwise keep for its last three runs.
    stream.unlink()
    ram_file.unlink()


@pytest.fixture(scope="module")
def report(migrated: Migrated) -> dict[str, Any]:
    return migration.analyze(migrated.stream)


def test_migration_completed(migrated: Migrated) -> None:
    assert migrated.info["status"] == "completed"
    assert migrated.stream.stat().st_size > 0


def test_every_record_parses(report: dict[str, Any], migrated: Migrated) -> None:
    assert report["error"] is None
    assert report["length"] == migrated.stream.stat().st_size
    records = report["records"]
    types = [r["type"] for r in records]
    assert types[0] == "CONFIGURATION"
    assert records[0]["machine_type"].startswith("pc-q35")
    assert types[-2:] == ["EOF", "VMDESCRIPTION"]
    assert types.count("EOF") == 1
    ram = [r for r in records if r["idstr"] == "ram"]
    assert ram[0]["type"] == "START" and ram[-1]["type"] == "END"
    assert {r["type"] for r in ram[1:-1]} <= {"PART"}
    assert all(r["section_id"] == ram[0]["section_id"] for r in ram)
    full = [r for r in records if r["type"] == "FULL"]
    assert full and all(r["idstr"] != "ram" for r in full)
    assert records[-1]["device_count"] >= len(full)
    offsets = [r["offset"] for r in records]
    assert offsets == sorted(offsets)


def test_device_sections_decode(report: dict[str, Any]) -> None:
    full = [r for r in report["records"] if r["type"] == "FULL"]
    assert [(d["idstr"], d["instance_id"]) for d in report["devices"]] == [
        (r["idstr"], r["instance_id"]) for r in full
    ]
    for r in full:
        assert isinstance(r["fields"], dict), r
    devices = {(d["idstr"], d["instance_id"]): d["fields"] for d in report["devices"]}
    for name in ["cpu", "apic", "fw_cfg", "0000:00:1f.0/ICH9LPC", "globalstate"]:
        assert (name, 0) in devices, sorted(devices)
    # Paused with -S before the guest ran: the CPU sits at the reset vector,
    # and the saved run state is "prelaunch".
    assert devices["cpu", 0]["env.eip"] == 0xFFF0
    state = devices["globalstate", 0]
    runstate = bytes.fromhex(state["runstate"])
    assert runstate[: state["size"]].rstrip(b"\0") == b"prelaunch"
    # The q35 host bridge's PCI config space: vendor 8086, device 29c0.
    config = bytes.fromhex(devices["0000:00:00.0/mch", 0]["parent_obj"]["config[0]"])
    assert config[:4] == bytes.fromhex("8680c029")


def test_ram_blocks(report: dict[str, Any], migrated: Migrated) -> None:
    blocks = {b["idstr"]: b for b in report["ram"]["blocks"]}
    # QEMU names the backend's block after its id; ROMs and firmware are
    # blocks of their own.
    assert blocks["pc.ram"]["used_length"] == RAM_SIZE
    assert "pc.bios" in blocks
    pages = [migrated.pattern[a : a + PAGE] for a in range(0, RAM_SIZE, PAGE)]
    zero = sum(1 for p in pages if p.count(0) == PAGE)
    assert 0 < zero < len(pages)
    # Paused, nothing is dirtied after the first pass: each page sent once.
    assert blocks["pc.ram"]["normal_pages"] == len(pages) - zero
    assert blocks["pc.ram"]["zero_pages"] == zero


def test_load_ram_equals_backend_file(migrated: Migrated) -> None:
    after = migrated.ram_file.read_bytes()
    # With -S no guest code ran and QEMU puts firmware and ACPI tables in
    # ROM blocks of their own: the backend file is what the test wrote.
    assert after == migrated.pattern
    ram = RamBlock.anonymous("pc.ram", RAM_SIZE)
    ram.fill(0, RAM_SIZE, 0xEE)  # zero pages must be cleared
    report = migration.load_ram(migrated.stream, [ram])
    assert report["error"] is None
    assert report["length"] == migrated.stream.stat().st_size
    assert report["ram"]["blocks"][0]["idstr"] == "pc.ram"
    assert len(report["ram"]["blocks"]) > 1  # the others were discarded
    assert report["devices"] == migration.analyze(migrated.stream)["devices"]
    for off in range(0, RAM_SIZE, MIB):
        assert ram.read(off, MIB) == after[off : off + MIB], f"RAM differs in MiB at {off:#x}"
    assert ram.checksum() == RamBlock.file("file", RAM_SIZE, migrated.ram_file).checksum()


def test_load_ram_rejects_wrong_length(migrated: Migrated) -> None:
    ram = RamBlock.anonymous("pc.ram", RAM_SIZE // 2)
    report = migration.load_ram(migrated.stream, [ram])
    assert report["error"] is not None
    assert "pc.ram" in report["error"]["message"]
    with pytest.raises(ValueError, match="twice"):
        migration.load_ram(migrated.stream, [ram, RamBlock.anonymous("pc.ram", PAGE)])


def test_cli_json(migrated: Migrated, capsys: pytest.CaptureFixture[str]) -> None:
    script = Path(sys.executable).with_name("vmkit")
    if script.exists():
        out = subprocess.run(
            [str(script), "analyze", str(migrated.stream), "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        text = out.stdout
    else:
        assert main(["analyze", str(migrated.stream), "--json"]) == 0
        text = capsys.readouterr().out
    parsed = json.loads(text)
    assert set(parsed) == {"records", "ram", "devices", "length", "error"}
    assert parsed["error"] is None
    assert parsed == migration.analyze(migrated.stream)


# --- vmkit -> QEMU -----------------------------------------------------------

INCOMING_TIMEOUT = 30.0
# Guest-physical [0xa0000, 0x100000) is not read from pc.ram on q35 after
# reset: the VGA/SMRAM window and the PAM-controlled BIOS area (all PAM
# registers off) route reads to PCI space and the pc.rom/isa-bios ROMs. The
# pmemsave comparison skips it; the backend-file comparison covers it.
LEGACY_START, LEGACY_END = 0xA0000, 0x100000
# What the receiving QEMU's RAM holds before the stream arrives: zero pages
# in the stream must clear it.
STALE = 0xEE


@dataclass
class Incoming:
    qemu: Qemu
    ram_file: Path
    """The receiving QEMU's memory-backend-file, pre-filled with ``STALE``."""
    work: Path
    machines: list[dict[str, Any]]
    """Its ``query-machines`` reply."""

    def machine_named(self, alias: str) -> str:
        """The versioned machine type name behind ``alias`` (e.g. ``q35``)."""
        names = [m["name"] for m in self.machines if m.get("alias") == alias]
        assert len(names) == 1, (alias, self.machines)
        return str(names[0])

    def migrate_in(self, stream: Path) -> str:
        """Loads ``stream`` with ``exec:cat``; returns the final incoming
        migration status, ``"completed"`` or ``"failed"`` (also when QEMU
        exits, as QEMU does after a failed incoming migration)."""
        qmp, proc = self.qemu.qmp, self.qemu.proc
        qmp.execute("migrate-incoming", uri=f"exec:cat '{stream}'")
        deadline = time.monotonic() + INCOMING_TIMEOUT
        while True:
            try:
                status = qmp.execute("query-migrate").get("status")
            except OSError:  # QEMU closed the socket: it is exiting
                proc.wait(timeout=TIMEOUT)
                status = None
            if proc.poll() is not None:
                assert proc.returncode != 0, self.qemu.output()
                return "failed"
            if status in ("completed", "failed"):
                return str(status)
            assert status in (None, "setup", "active"), status
            assert time.monotonic() < deadline, f"incoming migration not done: {status}"
            time.sleep(0.05)


@pytest.fixture
def incoming(qemu_binary: str, tmp_path: Path) -> Iterator[Incoming]:
    """A QEMU like the source one, waiting with ``-incoming defer``."""
    ram_file = tmp_path / "pc.ram"
    ram_file.write_bytes(bytes([STALE]) * RAM_SIZE)
    args = [*machine_args(ram_file), "-incoming", "defer"]
    deadline = time.monotonic() + INCOMING_TIMEOUT
    try:
        with running_qemu(qemu_binary, args, tmp_path / "qemu.log", deadline) as qemu:
            assert qemu.qmp.execute("query-status")["status"] == "inmigrate"
            machines = qemu.qmp.execute("query-machines")
            yield Incoming(qemu, ram_file, tmp_path, machines)
    finally:
        for big in tmp_path.iterdir():
            if big.stat().st_size > MIB:
                big.unlink()


def first_different_page(a: bytes, b: bytes, base: int = 0) -> str | None:
    for off in range(0, max(len(a), len(b)), PAGE):
        if a[off : off + PAGE] != b[off : off + PAGE]:
            return f"{base + off:#x}"
    return None


def test_qemu_loads_vmkit_ram(
    incoming: Incoming, report: dict[str, Any], migrated: Migrated
) -> None:
    """QEMU accepts a vmkit RAM-only stream and then holds its pages.

    Machine type and RAM block come from QEMU: the configuration record and
    MEM_SIZE list of the stream the source QEMU wrote (the same command
    line), cross-checked with the receiver's ``query-machines``. The stream
    lists only ``pc.ram``, none of QEMU's ROM blocks, and has no device
    sections. Its RAM section id is not 0: QEMU resolves PART/END sections
    by the first handler whose load section id matches, and handlers the
    stream did not name keep id 0.
    """
    machine_type = report["records"][0]["machine_type"]
    assert machine_type == incoming.machine_named("q35")
    lengths = {b["idstr"]: b["used_length"] for b in report["ram"]["blocks"]}
    assert lengths["pc.ram"] == RAM_SIZE
    assert len(lengths) > 1  # the ROM blocks the stream leaves out

    pattern = migrated.pattern
    assert pattern[5 * PAGE : 6 * PAGE] == bytes(PAGE - 1) + b"\x01"
    ram = RamBlock.anonymous("pc.ram", lengths["pc.ram"])
    ram.write(0, pattern)
    stream = incoming.work / "vmkit.stream"
    stats = migration.save(stream, machine_type=machine_type, ram=[ram])
    zero = sum(1 for a in range(0, RAM_SIZE, PAGE) if pattern[a : a + PAGE].count(0) == PAGE)
    assert 0 < zero < RAM_SIZE // PAGE
    assert (stats["zero_pages"], stats["normal_pages"]) == (zero, RAM_SIZE // PAGE - zero)
    assert stats["devices"] == 0
    written = migration.analyze(stream)
    assert written["error"] is None
    assert [b["idstr"] for b in written["ram"]["blocks"]] == ["pc.ram"]
    assert not written["devices"]
    assert next(r["section_id"] for r in written["records"] if r["type"] == "START") != 0

    status = incoming.migrate_in(stream)
    assert status == "completed", incoming.qemu.output()
    qmp = incoming.qemu.qmp
    # With -S the received machine stays paused instead of starting.
    assert qmp.execute("query-status")["status"] == "paused"

    pmem = incoming.work / "pmem"
    qmp.execute("pmemsave", val=0, size=RAM_SIZE, filename=str(pmem))
    guest = pmem.read_bytes()
    assert len(guest) == RAM_SIZE
    low, high = guest[:LEGACY_START], guest[LEGACY_END:]
    assert low == pattern[:LEGACY_START], first_different_page(low, pattern)
    assert high == pattern[LEGACY_END:], first_different_page(
        high, pattern[LEGACY_END:], LEGACY_END
    )
    # Spot checks: the last-byte page, and zero pages that were STALE.
    assert guest[6 * PAGE - 2 : 6 * PAGE] == b"\x00\x01"
    assert guest[1000 * PAGE : 1100 * PAGE] == bytes(100 * PAGE)
    # The RAM block itself, legacy range included.
    backend = incoming.ram_file.read_bytes()
    assert backend == pattern, first_different_page(backend, pattern)


def test_qemu_refuses_other_machine_type(incoming: Incoming) -> None:
    """A stream naming another machine type (here the i440fx ``pc``) fails
    the incoming migration; QEMU then exits with an error."""
    q35, other = incoming.machine_named("q35"), incoming.machine_named("pc")
    assert other != q35 and not q35.startswith(other)
    stream = incoming.work / "other.stream"
    ram = RamBlock.anonymous("pc.ram", RAM_SIZE)
    ram.write(0, page_pattern(1))
    migration.save(stream, machine_type=other, ram=[ram])
    assert incoming.migrate_in(stream) == "failed"
    assert other in incoming.qemu.output()
    # Refused at the configuration record, before any page was loaded.
    with incoming.ram_file.open("rb") as f:
        assert f.read(2 * PAGE) == bytes([STALE]) * (2 * PAGE)


def test_qemu_takes_a_live_vmkit_migration(
    incoming: Incoming, report: dict[str, Any], migrated: Migrated
) -> None:
    """vmkit's precopy engine migrates live into QEMU over a UNIX socket:
    pages the "guest" (this test, between passes) writes after the first
    pass are sent again, QEMU completes, and its memory is vmkit's at the
    switchover."""
    machine_type = report["records"][0]["machine_type"]
    ram = RamBlock.anonymous("pc.ram", RAM_SIZE)
    ram.write(0, migrated.pattern)
    sock = incoming.work / "live.sock"
    incoming.qemu.qmp.execute("migrate-incoming", uri=f"unix:{sock}")
    rewritten = [3 * PAGE, 2000 * PAGE, RAM_SIZE - PAGE]

    def guest(kind: str, n: int) -> None:
        if kind == "pass" and n == 1:  # dirty pages after the first, full pass
            for i, addr in enumerate(rewritten):
                ram.write(addr, bytes([0xA0 + i]) * PAGE)

    at_stop: list[bytes] = []
    precopy = migration.Precopy(f"unix:{sock}", max_bandwidth=0)
    result = precopy.run(
        machine_type=machine_type,
        ram=[ram],
        stop=lambda: at_stop.append(ram.read(0, RAM_SIZE)),
        timeout=INCOMING_TIMEOUT,
        progress=guest,
    )
    assert result["phase"] == "completed"
    assert len(result["passes"]) >= 2 and result["passes"][1]["dirty_pages"] >= len(rewritten)
    qmp = incoming.qemu.qmp
    deadline = time.monotonic() + INCOMING_TIMEOUT
    while (status := qmp.execute("query-migrate").get("status")) not in ("completed", "failed"):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status == "completed", incoming.qemu.output()
    backend = incoming.ram_file.read_bytes()
    assert backend == at_stop[0], first_different_page(backend, at_stop[0])
    assert backend[3 * PAGE : 4 * PAGE] == bytes([0xA0]) * PAGE
