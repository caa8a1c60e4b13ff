"""The monitor tells the truth: the version it follows, the machine type
the streams name, HMP's ``help``/``info`` commands and QEMU's message for
an unknown one; and an error names the user's objects."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from qemu.qmp import QMPClient

from vmkit import __version__
from vmkit.monitor import QEMU_VERSION


def test_monitor_answers_truthfully(tmp_path: Path) -> None:
    sock = tmp_path / "vm.qmp"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "vmkit.cli", "run", "-S", "-m", "16", "--workload-rate", "0",
            "-name", "truth", "-M", "pc-q35-7.2", "--plugin", "vmkit.demo_devices",
            "-device", "demo-isa-serial,id=serial0", "-qmp", f"unix:{sock}",
            "-object", "memory-backend-ram,id=extra,size=2M",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"QMP: unix:{sock}\n"

        async def check() -> None:
            c = QMPClient("t")
            await c.connect(str(sock))

            async def hmp(line: str) -> str:
                out = await c.execute("human-monitor-command", {"command-line": line})
                assert isinstance(out, str)
                return out

            try:
                major, minor, micro = QEMU_VERSION
                version = await c.execute("query-version")
                assert version["qemu"] == {"major": major, "minor": minor, "micro": micro}
                assert await hmp("info version") == (
                    f"{major}.{minor}.{micro} (vmkit-{__version__})\r\n"
                )
                assert await c.execute("qom-get", {"path": "/machine", "property": "type"}) == (
                    "pc-q35-7.2-machine"
                )
                assert await hmp("info name") == "truth\r\n"
                assert await hmp("info status") == "VM status: paused (prelaunch)\r\n"
                listing = await hmp("info")
                for sub in ("version", "status", "name", "qtree", "migrate", "ramblock"):
                    assert f"info {sub}" in listing
                assert "info [subcommand]" in await hmp("help")
                qtree = await hmp("info qtree")
                assert 'dev: demo-isa-serial, id "serial0"' in qtree
                assert await hmp("info migrate") == ""  # no migration yet, as in QEMU
                ramblock = (await hmp("info ramblock")).splitlines()
                assert (
                    ramblock[1].split()
                    == ["pc.ram", "4", "KiB", "0x" + "0" * 16] + [f"0x{16 << 20:016x}"] * 2
                )
                assert (
                    ramblock[2].split()
                    == ["extra", "4", "KiB", f"0x{16 << 20:016x}"] + [f"0x{2 << 20:016x}"] * 2
                )
                assert await hmp("bogus 1") == "unknown command: 'bogus'\r\n"
            finally:
                await c.disconnect()

        asyncio.run(asyncio.wait_for(check(), 60))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_property_errors_name_the_device_as_given(tmp_path: Path) -> None:
    def save(device: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "save", str(tmp_path / "s"), "-m", "4",
             "--plugin", "vmkit.demo_devices", "-device", device],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    out = save("demo-isa-serial,id=serial0,bogus=1")
    assert out.returncode == 2
    assert "property 'bogus' not found on device 'serial0' (demo-isa-serial)" in out.stderr
    assert "#" not in out.stderr and "not in the tree" not in out.stderr
    out = save("demo-isa-serial,bogus=1")
    assert "property 'bogus' not found on device 'demo-isa-serial'" in out.stderr
    out = save("demo-isa-serial,id=s1,iobase=zz")
    assert "property 'iobase' of device 's1' (demo-isa-serial) expects" in out.stderr
