"""The machine monitor in this process, behind an embedded QMP server:
what needs a hand inside it (a failing measurement) or is cheaper without
a ``vmkit run`` process (argument checks)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream_receiver import Receiver
from vmkit import memory, qom
from vmkit.machine import Machine
from vmkit.memory import RamBlock
from vmkit.monitor import MachineMonitor, monitor_version
from vmkit.qmp import CommandRegistry, QMPServer, QMPSocket

GUARD = 20.0  # seconds: only so that a broken test fails instead of hanging


@pytest.fixture
def monitor_path() -> Iterator[str]:
    """The socket of a monitor over a fresh 16 MiB machine."""
    if qom.machine() is not None:
        qom.destroy_machine()
    directory = tempfile.mkdtemp(prefix="mon")  # a UNIX socket path must be short
    try:
        with Machine(memory="16M") as vm:
            monitor = MachineMonitor(vm)
            server = QMPServer(monitor.register(CommandRegistry()), version=monitor_version())
            monitor.attach(server)
            with server.start_in_thread(f"{directory}/qmp.sock"):
                yield f"{directory}/qmp.sock"
                monitor.jobs.wait_all(GUARD)
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def qmp(monitor_path: str) -> Iterator[QMPSocket]:
    """A negotiated client of a monitor over a fresh 16 MiB machine."""
    with QMPSocket(monitor_path, negotiate=True) as client:
        yield client


@pytest.mark.parametrize(
    ("calc_time", "unit"),
    [
        (0, "second"),
        (61, "second"),
        (49, "millisecond"),
        (1, "millisecond"),
        (60001, "millisecond"),
    ],
)
def test_calc_time_out_of_range_is_refused(qmp: QMPSocket, calc_time: int, unit: str) -> None:
    """QEMU's bounds: 50 ms to 60 s, whatever the unit."""
    reply = qmp.command("calc-dirty-rate", **{"calc-time": calc_time, "calc-time-unit": unit})
    assert reply == {
        "error": {
            "class": "GenericError",
            "desc": "Calculation time is out of range [50ms, 60000ms].",
        }
    }
    assert qmp.execute("query-dirty-rate")["status"] == "unstarted"


@pytest.mark.parametrize(("calc_time", "unit"), [(50, "millisecond"), (1, "second")])
def test_calc_time_at_the_bounds_is_measured(qmp: QMPSocket, calc_time: int, unit: str) -> None:
    assert qmp.execute("calc-dirty-rate", **{"calc-time": calc_time, "calc-time-unit": unit}) == {}
    info = wait_measured(qmp)
    assert info["calc-time"] == calc_time and info["calc-time-unit"] == unit
    assert info["dirty-rate"] == 0, "nothing runs: no page is dirtied"


def wait_measured(qmp: QMPSocket) -> dict[str, object]:
    """Polls query-dirty-rate until the job has measured; the deadline only
    guards against a hang."""
    deadline = time.monotonic() + GUARD
    while (info := qmp.execute("query-dirty-rate"))["status"] != "measured":
        assert time.monotonic() < deadline, info
        time.sleep(0.01)
    return dict(info)


def test_a_failed_measurement_is_no_rate(qmp: QMPSocket, monkeypatch: pytest.MonkeyPatch) -> None:
    """``measured`` (QEMU has no failed state) without a ``dirty-rate``, and
    vmkit's ``x-vmkit-error`` saying why: never a rate of 0 that was not
    measured."""

    def broken(blocks: list[RamBlock], seconds: float) -> dict[str, object]:
        raise RuntimeError("the dirty log is unavailable")

    monkeypatch.setattr(memory, "measure_dirty_rate", broken)
    assert qmp.execute("calc-dirty-rate", **{"calc-time": 1}) == {}
    info = wait_measured(qmp)
    assert "dirty-rate" not in info
    assert info["x-vmkit-error"] == "the dirty log is unavailable"
    # A later measurement that succeeds no longer carries the error.
    monkeypatch.undo()
    assert (
        qmp.execute("calc-dirty-rate", **{"calc-time": 50, "calc-time-unit": "millisecond"}) == {}
    )
    info = wait_measured(qmp)
    assert info["dirty-rate"] == 0 and "x-vmkit-error" not in info


def test_pmemsave_writes_guest_memory_as_the_guest_reads_it(qmp: QMPSocket, tmp_path: Path) -> None:
    ram = memory.RamBlock.of_backend(qom.resolve_path("/objects/pc.ram"))
    ram.write(0x1000, b"vmkit pmemsave")
    out = tmp_path / "mem.bin"
    assert qmp.execute("pmemsave", val=0, size=3 << 20, filename=str(out)) == {}
    assert out.read_bytes() == bytes(memoryview(ram)[: 3 << 20])
    # A hole reads as all ones, as QEMU's unassigned memory does.
    hole = tmp_path / "hole.bin"
    assert qmp.execute("pmemsave", val=0xFEC00000 - 16, size=16, filename=str(hole)) == {}
    assert hole.read_bytes() == b"\xff" * 16


@pytest.mark.parametrize(
    ("arguments", "desc"),
    [
        ({"val": 0, "size": -5}, "Parameter 'size' expects a size of zero or more bytes"),
        ({"val": -1, "size": 2}, "passes the end of the address space"),
    ],
)
def test_pmemsave_refuses_bad_ranges(
    qmp: QMPSocket, tmp_path: Path, arguments: dict[str, int], desc: str
) -> None:
    reply = qmp.command("pmemsave", filename=str(tmp_path / "x"), **arguments)
    assert reply["error"]["class"] == "GenericError"
    assert desc in reply["error"]["desc"]


def test_pmemsave_names_a_file_it_cannot_open(qmp: QMPSocket) -> None:
    reply = qmp.command("pmemsave", val=0, size=16, filename="/nonexistent/dir/x")
    assert reply == {
        "error": {
            "class": "GenericError",
            "desc": "Could not open '/nonexistent/dir/x': No such file or directory",
        }
    }


def test_migrate_over_qmp_with_events_and_query_migrate(qmp: QMPSocket, tmp_path: Path) -> None:
    assert qmp.execute("query-migrate") == {}
    qmp.execute("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    receiver = Receiver(tmp_path)
    assert qmp.execute("migrate", uri=receiver.uri) == {}
    statuses = []
    while not statuses or statuses[-1] not in ("completed", "failed", "cancelled"):
        statuses.append(qmp.next_event("MIGRATION")["data"]["status"])
    receiver.close()
    assert statuses[0] == "setup" and "active" in statuses and statuses[-1] == "completed"
    assert qmp.next_event("MIGRATION_PASS")["data"] == {"pass": 1}
    info = qmp.execute("query-migrate")
    assert info["status"] == "completed"
    assert info["ram"]["transferred"] == receiver.stream.stat().st_size
    assert info["ram"]["remaining"] == 0 and "downtime" in info
    assert qmp.execute("query-status")["status"] == "postmigrate"


def test_migrate_refusals_and_a_failed_migration(qmp: QMPSocket, tmp_path: Path) -> None:
    reply = qmp.command("migrate", uri="ftp:x")
    assert reply["error"]["desc"] == "Parameter 'uri' expects a valid migration protocol"
    assert qmp.execute("migrate", uri=f"unix:{tmp_path / 'nobody.sock'}") == {}
    deadline = time.monotonic() + GUARD
    while (info := qmp.execute("query-migrate"))["status"] not in ("failed", "completed"):
        assert time.monotonic() < deadline, info
        time.sleep(0.01)
    assert info["status"] == "failed"
    assert "No such file or directory" in info["error-desc"]
    assert qmp.execute("query-status")["status"] == "prelaunch", "the source is as it was"


def test_migrate_cancel_leaves_the_source_as_it_was(qmp: QMPSocket, tmp_path: Path) -> None:
    qmp.execute("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
    # Slow enough that the cancel arrives mid-run: 16 MiB of data at 1 MiB/s.
    ram = memory.RamBlock.of_backend(qom.resolve_path("/objects/pc.ram"))
    ram.fill(0, 16 << 20, 0x5A)
    qmp.execute("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
    receiver = Receiver(tmp_path)
    qmp.execute("migrate", uri=receiver.uri)
    assert qmp.next_event("MIGRATION")["data"]["status"] == "setup"
    assert qmp.command("migrate", uri=receiver.uri)["error"]["desc"] == (
        "There's a migration process in progress"
    )
    qmp.execute("migrate_cancel")
    statuses = []
    while not statuses or statuses[-1] not in ("completed", "failed", "cancelled"):
        statuses.append(qmp.next_event("MIGRATION")["data"]["status"])
    receiver.close()
    assert statuses[-1] == "cancelled" and "cancelling" in statuses
    assert qmp.execute("query-migrate")["status"] == "cancelled"
    assert qmp.execute("query-status")["status"] == "prelaunch"


def test_migrate_takes_capabilities_and_parameters_inline_for_itself_only(
    qmp: QMPSocket, tmp_path: Path
) -> None:
    """vmkit's extension (principle 4): settings given with ``migrate``
    apply to that migration and leave the defaults as they were."""
    bad = qmp.command("migrate", uri="unix:/x", **{"parameters": {"downtime-limit": -1}})
    assert "downtime_limit" in bad["error"]["desc"]
    receiver = Receiver(tmp_path)
    qmp.execute(
        "migrate",
        uri=receiver.uri,
        **{
            "capabilities": [{"capability": "events", "state": True}],
            "parameters": {"max-bandwidth": 1 << 30},
        },
    )
    statuses = []
    while not statuses or statuses[-1] not in ("completed", "failed", "cancelled"):
        statuses.append(qmp.next_event("MIGRATION")["data"]["status"])
    receiver.close()
    assert statuses[-1] == "completed"
    caps = {c["capability"]: c["state"] for c in qmp.execute("query-migrate-capabilities")}
    assert caps["events"] is False, "the defaults did not change"
    assert qmp.execute("query-migrate-parameters")["max-bandwidth"] == 128 << 20


@pytest.mark.parametrize("then", ["migrate-continue", "migrate_cancel"])
def test_pause_before_switchover_waits_for_migrate_continue(
    qmp: QMPSocket, tmp_path: Path, then: str
) -> None:
    qmp.execute(
        "migrate-set-capabilities",
        capabilities=[
            {"capability": "events", "state": True},
            {"capability": "pause-before-switchover", "state": True},
        ],
    )
    early = qmp.command("migrate-continue", state="pre-switchover")
    assert early["error"]["desc"] == "Migration not in expected state: none"
    receiver = Receiver(tmp_path)
    qmp.execute("migrate", uri=receiver.uri)
    while qmp.next_event("MIGRATION")["data"]["status"] != "pre-switchover":
        pass
    assert qmp.execute("query-status")["status"] == "finish-migrate", "stopped, waiting"
    wrong = qmp.command("migrate-continue", state="active")
    assert wrong["error"]["desc"] == "Migration not in expected state: pre-switchover"
    if then == "migrate-continue":
        qmp.execute("migrate-continue", state="pre-switchover")
    else:
        qmp.execute("migrate_cancel")
    statuses = []
    while not statuses or statuses[-1] not in ("completed", "failed", "cancelled"):
        statuses.append(qmp.next_event("MIGRATION")["data"]["status"])
    receiver.close()
    if then == "migrate-continue":
        assert statuses[0] == "device" and statuses[-1] == "completed"
        assert qmp.execute("query-status")["status"] == "postmigrate"
    else:
        assert statuses[-1] == "cancelled"
        assert qmp.execute("query-status")["status"] == "prelaunch", "back where it was"


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _drain(sock: socket.socket, out: Path) -> threading.Thread:
    """Copies what arrives on ``sock`` into ``out`` until EOF, in a thread."""

    def copy() -> None:
        with sock, out.open("wb") as f:
            while chunk := sock.recv(1 << 20):
                f.write(chunk)

    thread = threading.Thread(target=copy)
    thread.start()
    return thread


def wait_migration(qmp: QMPSocket) -> dict[str, Any]:
    """Polls query-migrate until the migration ended; the deadline only
    guards against a hang."""
    deadline = time.monotonic() + GUARD
    while (info := qmp.execute("query-migrate"))["status"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, info
        time.sleep(0.01)
    return dict(info)


def test_getfd_keeps_a_passed_descriptor_for_an_fd_migration(
    qmp: QMPSocket, tmp_path: Path
) -> None:
    """QEMU's way to hand a migration its connection: the descriptor
    travels with ``getfd`` (SCM_RIGHTS), ``migrate fd:NAME`` uses it up."""
    ram = memory.RamBlock.of_backend(qom.resolve_path("/objects/pc.ram"))
    ram.fill(0x3000, 0x1000, 0xC3)
    ours, theirs = socket.socketpair()
    with theirs:
        assert qmp.execute_with_fds("getfd", [theirs.fileno()], fdname="mig") == {}
    stream = tmp_path / "fd.stream"
    drained = _drain(ours, stream)
    assert qmp.execute("migrate", uri="fd:mig") == {}
    info = wait_migration(qmp)
    drained.join(GUARD)
    assert info["status"] == "completed", info
    assert info["ram"]["transferred"] == stream.stat().st_size
    data = stream.read_bytes()
    assert data.startswith(b"QEVM") and b"\xc3" * 0x1000 in data
    # Used up: a second migration to the same name is refused at once.
    reply = qmp.command("migrate", uri="fd:mig")
    assert reply["error"]["desc"] == "File descriptor named 'mig' has not been found"


def test_getfd_and_closefd_refusals_as_qemu(qmp: QMPSocket) -> None:
    before = _open_fds()
    assert qmp.command("getfd", fdname="x")["error"]["desc"] == (
        "No file descriptor supplied via SCM_RIGHTS"
    )
    with open(os.devnull, "rb") as f:
        reply = qmp.send({"execute": "getfd", "arguments": {"fdname": "1abc"}}, fds=[f.fileno()])
    assert reply["error"]["desc"] == "Parameter 'fdname' expects a name not starting with a digit"
    assert qmp.command("closefd", fdname="nope")["error"]["desc"] == (
        "File descriptor named 'nope' not found"
    )
    with open(os.devnull, "rb") as f:
        assert qmp.execute_with_fds("getfd", [f.fileno()], fdname="keep") == {}
    assert qmp.execute("closefd", fdname="keep") == {}
    # Descriptors passed with a command that does not take them are closed
    # when the next ones arrive or the client leaves: nothing leaks.
    with open(os.devnull, "rb") as f:
        assert qmp.execute_with_fds("query-status", [f.fileno(), f.fileno()])["status"]
    with open(os.devnull, "rb") as f:
        assert qmp.execute_with_fds("getfd", [f.fileno()], fdname="again") == {}
    assert qmp.execute("closefd", fdname="again") == {}
    assert _open_fds() <= before


def test_getfd_through_qemu_qmp(monitor_path: str) -> None:
    """``qemu.qmp``'s ``send_fd_scm`` then ``getfd``, as libvirt-like tools do."""
    from qemu.qmp import QMPClient

    path = monitor_path

    async def run() -> None:
        client = QMPClient("fd-test")
        await client.connect(path)
        try:
            with open(os.devnull, "rb") as f:
                client.send_fd_scm(f.fileno())
            await client.execute("getfd", {"fdname": "from-qemu-qmp"})
            await client.execute("closefd", {"fdname": "from-qemu-qmp"})
        finally:
            await client.disconnect()

    asyncio.run(run())


def test_migrate_takes_qemus_channels(qmp: QMPSocket, tmp_path: Path) -> None:
    receiver = Receiver(tmp_path)
    channel = {
        "channel-type": "main",
        "addr": {"transport": "socket", "type": "unix", "path": str(receiver.path)},
    }
    assert qmp.execute("migrate", channels=[channel]) == {}
    info = wait_migration(qmp)
    receiver.close()
    assert info["status"] == "completed"
    assert info["ram"]["transferred"] == receiver.stream.stat().st_size


@pytest.mark.parametrize(
    ("arguments", "desc"),
    [
        (
            {"uri": "unix:/x", "channels": []},
            "'uri' and 'channels' arguments are mutually exclusive; exactly one of the two"
            " should be present in 'migrate' qmp command ",
        ),
        ({}, "neither 'uri' or 'channels' argument are specified in 'migrate' qmp command "),
        (
            {
                "channels": [
                    {
                        "channel-type": "main",
                        "addr": {"transport": "file", "filename": "a", "offset": 0},
                    }
                ]
                * 2
            },
            "Channel list has more than one entries",
        ),
        (
            {
                "channels": [
                    {
                        "channel-type": "main",
                        "addr": {"transport": "rdma", "host": "h", "port": "1"},
                    }
                ]
            },
            "vmkit does not support the 'rdma' migration transport",
        ),
        # The schema's checks come first, with QEMU's full member names.
        (
            {
                "channels": [
                    {"channel-type": "main", "addr": {"transport": "file", "filename": "a"}}
                ]
            },
            "Parameter 'channels[0].addr.offset' is missing",
        ),
        (
            {"channels": [{"channel-type": "other", "addr": {}}]},
            "Parameter 'channel-type' does not accept value 'other'",
        ),
        (
            {"channels": [{"channel-type": "main", "addr": {"transport": "socket", "type": "x"}}]},
            "Parameter 'type' does not accept value 'x'",
        ),
        (
            {
                "channels": [
                    {"channel-type": "main", "addr": {"transport": "socket", "type": "inet"}}
                ]
            },
            "Parameter 'channels[0].addr.host' is missing",
        ),
    ],
)
def test_channels_refusals(qmp: QMPSocket, arguments: dict[str, Any], desc: str) -> None:
    assert qmp.command("migrate", **arguments)["error"]["desc"] == desc
    assert qmp.execute("query-migrate") == {}, "nothing started"


@pytest.mark.parametrize(("mode", "zero_pages_sent"), [("none", False), ("legacy", True)])
def test_zero_page_detection(
    qmp: QMPSocket, tmp_path: Path, mode: str, zero_pages_sent: bool
) -> None:
    """QEMU's ``zero-page-detection``: ``none`` sends the (all-zero) RAM
    of a fresh machine page by page, ``legacy`` as zero records."""
    receiver = Receiver(tmp_path)
    qmp.execute("migrate", uri=receiver.uri, parameters={"zero-page-detection": mode})
    info = wait_migration(qmp)
    receiver.close()
    assert info["status"] == "completed"
    pages = (16 << 20) // 4096
    ram = info["ram"]
    assert ram["transferred"] == receiver.stream.stat().st_size
    if zero_pages_sent:
        assert (ram["duplicate"], ram["normal"]) == (pages, 0)
    else:
        assert (ram["duplicate"], ram["normal"]) == (0, pages)
        assert ram["transferred"] > 16 << 20
    assert qmp.execute("query-migrate-parameters")["zero-page-detection"] == "multifd"
