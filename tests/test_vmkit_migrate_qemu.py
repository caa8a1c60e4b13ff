"""``vmkit migrate`` drives real QEMU too: one QEMU migrates into another
waiting with ``-incoming defer``, and the destination's guest memory is
the source's. Without vmkit's stamps there is no guest-felt pause, and the
summary says why."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vmkit.qmp import QMPSocket

pytestmark = pytest.mark.qemu

QEMU = "qemu-system-x86_64"
GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextmanager
def qemu(binary: str, backend: str, *extra: str) -> Iterator[str]:
    """A paused q35 (TCG, no guest) with 16 MiB of RAM from ``backend``;
    yields its QMP socket path, quits or kills it on the way out."""
    sock_dir = Path(tempfile.mkdtemp(prefix="vmkit-qmp-"))  # short: sun_path limit
    sock = sock_dir / "qmp.sock"
    proc = subprocess.Popen(
        [
            binary, "-no-user-config", "-nodefaults", "-display", "none",
            "-machine", "q35,accel=tcg,memory-backend=pc.ram", "-m", "16M",
            "-object", backend, *extra,
            "-qmp", f"unix:{sock},server=on,wait=off",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + GUARD
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.02)
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=GUARD)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_vmkit_migrate_between_two_qemus(qemu_binary: str, tmp_path: Path) -> None:
    ram = tmp_path / "source.ram"
    with open(ram, "wb") as f:
        for i in range(16 * 256):  # 16 MiB, a different page each time
            f.write(i.to_bytes(8, "little") * 512)
    source_backend = f"memory-backend-file,id=pc.ram,size=16M,mem-path={ram},share=on"
    dest_backend = "memory-backend-ram,id=pc.ram,size=16M"
    with (
        qemu(qemu_binary, source_backend, "-S") as src,
        qemu(qemu_binary, dest_backend, "-incoming", "defer") as dst,
    ):
        plot = tmp_path / "passes.png"
        out = subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "migrate", f"unix:{src}", f"unix:{dst}",
             "--json", "--plot", str(plot), "--capability", "events=on"],
            capture_output=True, text=True, timeout=GUARD * 2, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["status"] == "completed"
        assert summary["uri"].startswith("tcp:127.0.0.1:")
        assert summary["guest-pause"] is None
        assert summary["guest-pause-note"] == "needs vmkit on both sides"
        assert isinstance(summary["downtime-ms"], int) and summary["ram-total"] >= 16 << 20
        assert plot.read_bytes()[:8] == PNG_MAGIC
        with QMPSocket(src, negotiate=True) as s, QMPSocket(dst, negotiate=True) as d:
            assert s.execute("query-status")["status"] == "postmigrate"
            assert d.execute("query-migrate")["status"] == "completed"
            # Guest-physical memory, as the guest reads it (the BIOS and
            # VGA windows below 1 MiB are not RAM): the same on both sides.
            for q, name in ((s, "source.mem"), (d, "dest.mem")):
                q.execute("pmemsave", val=0, size=16 << 20, filename=str(tmp_path / name))
                q.execute("quit")
    assert filecmp.cmp(tmp_path / "source.mem", tmp_path / "dest.mem", shallow=False)
    # And the destination holds the source's pages (a page above 1 MiB).
    with open(tmp_path / "dest.mem", "rb") as f:
        f.seek(0x300 * 4096)
        assert f.read(8) == (0x300).to_bytes(8, "little")
