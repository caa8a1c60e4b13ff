"""The typed QMP client (vmkit.qmp.typed): generated from the schema and
up to date, typed so that mypy catches mistakes, events never missed when
subscribed before the command, and one script that runs unchanged against
``vmkit run`` and ``qemu-system-x86_64``."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

from qmp_peers import qemu_command, short_dir, start_peer, vmkit_command
from vmkit.machine import Machine
from vmkit.monitor import MachineMonitor, monitor_version
from vmkit.qmp import CommandRegistry, QMPServer
from vmkit.qmp.qapi.pygen import OUTPUT, render
from vmkit.qmp.typed import (
    QMP,
    AsyncQMP,
    MigrationEvent,
    ResetEvent,
    ResumeEvent,
    StopEvent,
    SyncCommands,
    event_of,
)

GUARD = 30.0  # seconds: only so that a broken test fails instead of hanging
ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_module_is_the_generators_output() -> None:
    assert OUTPUT.read_text() == render(), "stale: run python -m vmkit.qmp.qapi.pygen"


# --- types, for mypy ---------------------------------------------------------------

_SCRIPT = """
from vmkit.qmp.typed import QMP, AsyncQMP, MigrationEvent


def fine(qmp: QMP) -> str:
    status = qmp.query_status()
    qmp.migrate(uri="unix:/x", detach=True)
    with qmp.listen("MIGRATION") as events:
        event: MigrationEvent = events.get()
        print(event.data["status"])
    with qmp.listen("STOP", "RESUME") as both:
        either = both.get()
        if either.name == "STOP":
            print(either.timestamp)
    qmp.migrate_set_parameters(tls_creds=None, downtime_limit=300)
    qmp.device_add(driver="x", id="d0", properties={"aw-bits": 39})
    return status["status"]


async def fine_async(qmp: AsyncQMP) -> int:
    async with qmp.listen("MIGRATION_PASS") as passes:
        await qmp.migrate(uri="unix:/x", capabilities=[{"capability": "events", "state": True}])
        return (await passes.get()).data["pass"]


def mistaken(qmp: QMP) -> None:
    qmp.migrate(urii="unix:/x")  # BAD
    qmp.query_status()["stauts"]  # BAD
    qmp.migrate_set_parameters(downtime_limit="1")  # BAD
    qmp.migrate_set_capabilities(capabilities=[{"capability": "evnets", "state": True}])  # BAD
    with qmp.listen("MIGRATION") as events:
        events.get().data["pass"]  # BAD
    qmp.listen("MIGRATON")  # BAD
    status: int = qmp.query_status()["running"]  # not an error: bool is an int
"""


def test_mypy_catches_misspelt_arguments_members_values_and_events(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(_SCRIPT)
    out, err, status = mypy_api.run(["--strict", "--no-error-summary", str(script)])
    flagged = {int(n) for n in re.findall(r"script\.py:(\d+): error", out)}
    lines = _SCRIPT.splitlines()
    expected = {i + 1 for i, line in enumerate(lines) if line.endswith("# BAD")}
    assert len(expected) == 6
    assert flagged == expected, out + err
    assert status == 1


class _Capture(SyncCommands):
    """Records what each method would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []

    def _execute(self, command: str, arguments: dict[str, object]) -> object:
        self.sent.append((command, arguments))
        return {}


def test_methods_send_wire_names_and_leave_absent_arguments_out() -> None:
    qmp = _Capture()
    qmp.migrate_set_parameters(downtime_limit=5, tls_creds=None)
    qmp.migrate_set_parameters(max_bandwidth=0)
    qmp.calc_dirty_rate(calc_time=1)
    qmp.device_add(driver="d", id="x", properties={"aw-bits": 39})
    qmp.stop()
    assert qmp.sent == [
        ("migrate-set-parameters", {"tls-creds": None, "downtime-limit": 5}),
        ("migrate-set-parameters", {"max-bandwidth": 0}),
        ("calc-dirty-rate", {"calc-time": 1}),
        ("device_add", {"driver": "d", "id": "x", "aw-bits": 39}),
        ("stop", {}),
    ]


def test_events_become_their_classes() -> None:
    message: Any = {
        "event": "MIGRATION",
        "data": {"status": "active"},
        "timestamp": {"seconds": 10, "microseconds": 500_000},
    }
    event = event_of(message)
    assert event == MigrationEvent({"status": "active"}, 10.5)
    assert event.name == "MIGRATION"
    stop: Any = {"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}}
    assert event_of(stop) == StopEvent({}, -1.0)


# --- events: subscribe, then command ---------------------------------------------------


@pytest.fixture
def monitor_socket(no_machine: None) -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="typ")  # a UNIX socket path must be short
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


def test_an_event_sent_in_the_commands_reply_window_is_not_missed(monitor_socket: str) -> None:
    """``cont`` sends RESUME before its answer, ``system_reset`` RESET after
    it: subscribed first, both arrive; subscribed after the command, the
    first is gone for good."""

    async def main() -> None:
        async with AsyncQMP() as qmp:
            await qmp.connect(monitor_socket)
            async with qmp.listen("RESUME") as resumed:
                await qmp.cont()
                assert not resumed.empty(), "RESUME came before cont's answer"
                assert isinstance(await resumed.get(), ResumeEvent)
            async with qmp.listen("RESET") as resets:
                await qmp.system_reset()
                reset = await resets.get()
                assert isinstance(reset, ResetEvent)
                assert reset.data == {"guest": False, "reason": "host-qmp-system-reset"}
            # The race subscribing first avoids: STOP is sent with stop's
            # answer window, before a listener made afterwards exists.
            await qmp.stop()
            async with qmp.listen("STOP") as late:
                await qmp.query_status()
                assert late.empty(), "an event sent before subscribing is not replayed"

    asyncio.run(asyncio.wait_for(main(), GUARD))


def test_the_synchronous_client_listens_the_same_way(monitor_socket: str) -> None:
    with QMP(monitor_socket) as qmp:
        assert qmp.query_status()["status"] == "prelaunch"
        with qmp.listen("RESUME", "STOP") as events:
            qmp.cont()
            qmp.stop()
            assert [type(events.get(GUARD)) for _ in range(2)] == [ResumeEvent, StopEvent]
            with pytest.raises(TimeoutError):
                events.get(timeout=0)
        assert qmp.query_status()["status"] == "paused"


# --- one script, two servers -------------------------------------------------------


async def _script(qmp: AsyncQMP) -> dict[str, Any]:
    """Commands both have, through the typed client only."""
    out: dict[str, Any] = {"status": (await qmp.query_status())["status"]}
    version = await qmp.query_version()
    out["version"] = sorted(version["qemu"])
    async with qmp.listen("RESUME") as resumed:
        await qmp.cont()
        out["resumed"] = (await resumed.get()).name
    async with qmp.listen("STOP") as stopped:
        await qmp.stop()
        out["stopped"] = (await stopped.get()).name
    out["paused"] = (await qmp.query_status())["status"]
    entries = await qmp.qom_list(path="/machine")
    out["peripheral"] = {"name": "peripheral", "type": "child<container>"} in entries
    types = await qmp.qom_list_types(implements="device", abstract=True)
    out["device"] = any(t["name"] == "device" for t in types)
    await qmp.migrate_set_capabilities(capabilities=[{"capability": "events", "state": True}])
    caps = {c["capability"]: c["state"] for c in await qmp.query_migrate_capabilities()}
    out["events"] = caps["events"]
    await qmp.migrate_set_parameters(downtime_limit=400, tls_creds=None)
    params = await qmp.query_migrate_parameters()
    out["parameters"] = (params.get("downtime-limit"), params.get("tls-creds"))
    out["migration"] = await qmp.query_migrate()
    out["hmp"] = await qmp.human_monitor_command(command_line="info status")
    out["name"] = await qmp.query_name()
    commands = {c["name"] for c in await qmp.query_commands()}
    schema = await qmp.query_qmp_schema()
    described = {e["name"] for e in schema if e["meta-type"] == "command"}
    out["introspected"] = described == commands
    async with qmp.listen("RESET") as resets:
        await qmp.system_reset()
        out["reset"] = (await resets.get()).data["reason"]
    async with qmp.listen("SHUTDOWN") as shutdowns:
        await qmp.quit()
        out["shutdown"] = (await shutdowns.get()).data["reason"]
    return out


def _run_script(socket: Path) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with AsyncQMP() as qmp:
            await qmp.connect(str(socket))
            return await _script(qmp)

    return asyncio.run(asyncio.wait_for(main(), GUARD))


_EXPECTED = {
    "status": "prelaunch",
    "version": ["major", "micro", "minor"],
    "resumed": "RESUME",
    "stopped": "STOP",
    "paused": "paused",
    "peripheral": True,
    "device": True,
    "events": True,
    "parameters": (400, ""),
    "migration": {},
    "hmp": "VM status: paused\r\n",
    "name": {},
    "introspected": True,
    "reset": "host-qmp-system-reset",
    "shutdown": "host-qmp-quit",
}


def test_the_same_typed_script_runs_against_vmkit() -> None:
    with short_dir() as d:
        sock = d / "v.qmp"
        with start_peer("vmkit", vmkit_command(sock, ["-m", "16M"]), sock) as peer:
            assert _run_script(sock) == _EXPECTED
            assert peer.wait_exit() == 0


@pytest.mark.qemu
def test_the_same_typed_script_runs_against_qemu(qemu_binary: str) -> None:
    with short_dir() as d:
        sock = d / "q.qmp"
        with start_peer("qemu", qemu_command(qemu_binary, sock), sock) as peer:
            assert _run_script(sock) == _EXPECTED
            assert peer.wait_exit() == 0


@pytest.mark.parametrize("kind", ["vmkit", pytest.param("qemu", marks=pytest.mark.qemu)])
def test_the_synchronous_client_against_both(kind: str, request: pytest.FixtureRequest) -> None:
    with short_dir() as d:
        sock = d / f"{kind}.qmp"
        if kind == "vmkit":
            cmd = vmkit_command(sock)
        else:
            cmd = qemu_command(request.getfixturevalue("qemu_binary"), sock)
        with start_peer(kind, cmd, sock), QMP(str(sock)) as qmp:
            with qmp.listen("RESUME") as resumed:
                qmp.cont()
                assert isinstance(resumed.get(GUARD), ResumeEvent)
            assert qmp.query_status() == {"running": True, "status": "running"} | (
                {"singlestep": False} if kind == "qemu" else {}
            )
            qmp.quit()
