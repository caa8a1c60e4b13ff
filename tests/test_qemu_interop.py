"""vmkit reads a migration stream written by a real QEMU.

The test starts ``qemu-system-x86_64`` (q35, TCG, no guest kernel, paused
with ``-S``) whose RAM is a ``memory-backend-file`` the test pre-filled with
a known pattern, migrates it to a file over QMP, then checks that vmkit
parses every record, that the RAM it loads from the stream equals the
file, and that the device sections decode through the VMDESCRIPTION trailer.

QEMU 7.2 (Debian 12) has no ``file:`` migration URI, so the stream goes
through ``exec:cat``. ``make test-python`` installs QEMU (``make
system-deps``); without it the test skips, except under CI (``CI`` set),
where a missing QEMU is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmkit import migration
from vmkit.cli import main
from vmkit.memory import RamBlock

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


class Qmp:
    """A minimal QMP client: one JSON object per line; events are skipped."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(TIMEOUT)
        self.file = self.sock.makefile("rwb")
        greeting = self._read()
        assert "QMP" in greeting, greeting

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            assert "error" not in reply, (command, reply)
            return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


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
    seconds: float
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


@pytest.fixture(scope="module")
def migrated(qemu_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    work = tmp_path_factory.mktemp("qemu")
    ram_file = work / "pc.ram"
    stream = work / "vm.stream"
    pattern = ram_pattern()
    ram_file.write_bytes(pattern)
    # Unix socket paths are limited to ~108 bytes: keep this one short.
    sock_dir = Path(tempfile.mkdtemp(prefix="vmkit-qmp-"))
    sock = sock_dir / "qmp.sock"
    cmd = [
        qemu_binary,
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
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]
    start = time.monotonic()
    deadline = start + TIMEOUT
    log = work / "qemu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    qmp: Qmp | None = None
    try:
        qmp = Qmp(sock, deadline)
        qmp.execute("qmp_capabilities")
        # cat writes to a temporary name and renames it when done, so the
        # stream is complete once it exists under its final name.
        part = stream.with_suffix(".part")
        qmp.execute("migrate", uri=f"exec:cat > '{part}' && mv '{part}' '{stream}'")
        while True:
            info: dict[str, Any] = qmp.execute("query-migrate")
            status = info.get("status")
            if status == "completed":
                break
            assert status not in ("failed", "cancelled"), info
            assert time.monotonic() < deadline, f"migration not done after {TIMEOUT}s: {info}"
            time.sleep(0.05)
        while not stream.exists():
            assert time.monotonic() < deadline, "migration stream not written"
            time.sleep(0.05)
        seconds = time.monotonic() - start
        qmp.execute("quit")
        proc.wait(timeout=TIMEOUT)
    except BaseException:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        sys.stderr.write(f"QEMU output:\n{log.read_text(errors='replace')}\n")
        raise
    finally:
        if qmp is not None:
            qmp.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
    yield Migrated(stream, ram_file, pattern, info, seconds)
    # ~120 MiB that pytest would otherwise keep for its last three runs.
    stream.unlink()
    ram_file.unlink()


@pytest.fixture(scope="module")
def report(migrated: Migrated) -> dict[str, Any]:
    return migration.analyze(migrated.stream)


def test_migration_completed(migrated: Migrated) -> None:
    assert migrated.info["status"] == "completed"
    assert migrated.stream.stat().st_size > 0
    assert migrated.seconds < TIMEOUT


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
