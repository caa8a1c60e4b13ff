"""Live migration from Python (the precopy engine through
``Machine.migrate``): the guest's workload keeps writing while RAM is sent;
what arrives equals the source at switchover; the source ends in
``postmigrate``; a refused or cancelled migration leaves it running with
its memory intact.

One machine per process: the destination here is a socket this test
listens on, whose bytes are then restored into a fresh machine (the stream
is QEMU's, so a file restore and a live destination read the same)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stream_receiver import Receiver
from vmkit.machine import Machine
from vmkit.migration import Precopy

pytestmark = pytest.mark.usefixtures("no_machine")

GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging


def test_a_running_machine_migrates_live(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    with Machine(memory="64M", workload_rate=16 << 20) as vm:
        vm.ram.write(0x3000, b"live from vmkit")
        vm.cont()
        assert vm.workload is not None and vm.workload.wait_ops(100, GUARD)
        precopy = Precopy(f"unix:{receiver.path}", max_bandwidth=64 << 20)
        result = vm.migrate(precopy, timeout=GUARD)
        assert vm.status == "postmigrate", "a QEMU source stays stopped after migrating"
        at_switchover = vm.ram.checksum()
        assert result["phase"] == "completed" and result["source_stopped"]
        assert result["passes"][-1]["final"] and result["downtime_ms"] is not None
        ram = result["ram"]
        assert ram["total"] == 64 << 20 and ram["remaining"] == 0
    receiver.close()
    assert ram["transferred"] == receiver.stream.stat().st_size
    with Machine(memory="64M") as dest:
        dest.restore(receiver.stream)
        assert dest.ram.checksum() == at_switchover
        assert dest.ram.read(0x3000, 15) == b"live from vmkit"


def test_a_refused_connection_leaves_the_source_running(tmp_path: Path) -> None:
    with Machine(memory="16M", workload_rate=1 << 20) as vm:
        vm.cont()
        with pytest.raises(FileNotFoundError):
            vm.migrate(Precopy(f"unix:{tmp_path / 'nobody.sock'}"), timeout=GUARD)
        assert vm.status == "running"
        # A socket nobody listens on.
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(tmp_path / "stale.sock"))
        with pytest.raises(ConnectionRefusedError):
            vm.migrate(Precopy(f"unix:{tmp_path / 'stale.sock'}"), timeout=GUARD)
        stale.close()
        assert vm.status == "running"
        vm.stop()


def test_a_cancelled_migration_leaves_the_source_as_it_was(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    with Machine(memory="16M") as vm:
        before = vm.ram.checksum()
        precopy = Precopy(f"unix:{receiver.path}")
        precopy.cancel()
        with pytest.raises(InterruptedError, match="cancelled"):
            vm.migrate(precopy, timeout=GUARD)
        assert vm.status == "prelaunch"
        assert vm.ram.checksum() == before
    receiver.close()


def test_the_result_says_why_the_source_switched_over(tmp_path: Path) -> None:
    # Nothing dirty after the first pass: converged.
    receiver = Receiver(tmp_path)
    with Machine(memory="16M") as vm:
        precopy = Precopy(receiver.uri, max_bandwidth=0)
        assert precopy.snapshot()["switchover"] is None
        assert vm.migrate(precopy, timeout=GUARD)["switchover"] == "converged"
    receiver.close()

    # A page written after each pass and no downtime allowed: only the
    # pass cap ends it.
    (tmp_path / "capped").mkdir()
    receiver = Receiver(tmp_path / "capped")
    with Machine(memory="16M") as vm:
        precopy = Precopy(receiver.uri, max_bandwidth=0, downtime_limit_ms=0, max_passes=2)

        def dirty(kind: str, _n: int) -> None:
            if kind == "pass":
                vm.ram.write(0x5000, b"dirty")

        result = vm.migrate(precopy, timeout=GUARD, progress=dirty)
        assert result["switchover"] == "max-passes"
        assert len(result["passes"]) == 3, "two passes, then the final one"
    receiver.close()
