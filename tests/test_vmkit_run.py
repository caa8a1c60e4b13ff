"""``vmkit run`` driven over QMP with the real ``qemu.qmp`` client: every
machine command, its events, and how the process starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from stream_receiver import Receiver
from vmkit.qmp import QMPSocket

START_TIMEOUT = 20.0


@dataclass
class VmkitProcess:
    proc: subprocess.Popen[str]
    socket: str
    stderr: str = ""

    def stop(self) -> int:
        """Sends SIGTERM unless it has exited; returns the exit status and
        keeps stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        self.stderr += err
        return self.proc.returncode


def start_vmkit(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> VmkitProcess:
    """Starts ``vmkit run ARGS`` (after ``prefix``, e.g. ``ip netns exec
    NS``) and waits for its ``QMP: unix:PATH`` line."""
    proc = subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "vmkit.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    # The timeout only guards against a hang; it is no assertion on speed.
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("QMP: "):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        proc.stdout.close()
        pytest.fail(f"vmkit run did not start: {line!r} {err}")
    address = line.split(" ", 1)[1].strip()
    return VmkitProcess(proc, address.removeprefix("unix:"))


@pytest.fixture
def vmkit(tmp_path: Path) -> Iterator[VmkitProcess]:
    p = start_vmkit("-S", "--qmp", f"unix:{tmp_path / 'vm.qmp'}", "-m", "64M", "--name", "t1")
    yield p
    p.stop()


def qmp_session(
    sock: str, body: Callable[[QMPClient], Awaitable[None]], timeout: float = 30.0
) -> None:
    """Runs ``body`` with a connected, negotiated client."""

    async def main() -> None:
        client = QMPClient("test")
        await client.connect(sock)
        try:
            await asyncio.wait_for(body(client), timeout)
        finally:
            # EOFError after quit, as QEMU's own machine.py tolerates.
            with contextlib.suppress(EOFError):
                await client.disconnect()

    asyncio.run(main())


async def error_of(
    client: QMPClient, cmd: str, args: dict[str, Any] | None = None
) -> dict[str, str]:
    """The ``{"class", "desc"}`` of the error ``cmd`` must fail with."""
    with pytest.raises(ExecuteError) as info:
        await client.execute(cmd, args)
    return {"class": info.value.error_class, "desc": str(info.value)}


async def next_event(client: QMPClient, listener: Any, name: str) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(listener.get(), 10)
        if event["event"] == name:
            assert set(event["timestamp"]) == {"seconds", "microseconds"}
            return dict(event)


def test_run_states_and_their_events(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        with c.listener() as events:
            assert await c.execute("query-status") == {"status": "prelaunch", "running": False}
            await c.execute("cont")
            assert "data" not in await next_event(c, events, "RESUME")
            assert await c.execute("query-status") == {"status": "running", "running": True}
            await c.execute("stop")
            await next_event(c, events, "STOP")
            assert await c.execute("query-status") == {"status": "paused", "running": False}
            await c.execute("stop")  # idempotent, as in QEMU
            await c.execute("system_reset")
            reset = await next_event(c, events, "RESET")
            assert reset["data"] == {"guest": False, "reason": "host-qmp-system-reset"}

    qmp_session(vmkit.socket, body)


def test_identity_and_introspection(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        version = await c.execute("query-version")
        assert set(version) == {"qemu", "package"}
        assert set(version["qemu"]) == {"major", "minor", "micro"}
        assert await c.execute("query-name") == {"name": "t1"}
        names = {x["name"] for x in await c.execute("query-commands")}
        expected = {
            "qmp_capabilities", "query-commands", "query-version", "query-status",
            "query-name", "stop", "cont", "system_reset", "quit", "qom-list", "qom-get",
            "qom-set", "qom-list-types", "qom-list-properties", "device-list-properties",
            "device_add", "device_del", "object-add", "object-del", "calc-dirty-rate",
            "query-dirty-rate", "human-monitor-command", "x-vmkit-save", "pmemsave",
            "query-migrate", "query-migrate-capabilities", "migrate-set-capabilities",
            "query-migrate-parameters", "migrate-set-parameters", "migrate", "migrate_cancel",
            "migrate-incoming", "migrate-continue", "getfd", "closefd", "query-qmp-schema",
            "query-pci", "input-send-event",
        }  # fmt: skip
        assert names == expected
        err = await error_of(c, "no-such-command")
        assert err["class"] == "CommandNotFound"
        assert err["desc"] == "The command no-such-command has not been found"

    qmp_session(vmkit.socket, body)


def test_qom_commands(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        entries = await c.execute("qom-list", {"path": "/machine"})
        assert {"name": "peripheral", "type": "child<container>"} in entries
        assert await c.execute("qom-get", {"path": "/objects/pc.ram", "property": "size"}) == (
            64 << 20
        )
        err = await error_of(c, "qom-get", {"path": "/nowhere", "property": "x"})
        assert (err["class"], err["desc"]) == ("DeviceNotFound", "Device '/nowhere' not found")
        err = await error_of(c, "qom-get", {"path": "/machine", "property": "nope"})
        assert err["class"] == "GenericError" and "nope" in err["desc"]
        err = await error_of(
            c, "qom-set", {"path": "/objects/pc.ram", "property": "size", "value": 1}
        )
        assert err["class"] == "GenericError"
        assert await c.execute("qom-get", {"path": "/objects/pc.ram", "property": "size"}) == (
            64 << 20
        ), "a refused qom-set changes nothing"

        types = await c.execute("qom-list-types", {"implements": "memory-backend"})
        assert {t["name"] for t in types} >= {"memory-backend-ram", "memory-backend-memfd"}
        assert all(set(t) <= {"name", "parent", "abstract"} for t in types)
        assert await c.execute("qom-list-types", {"implements": "no-such-type"}) == []
        with_abstract = await c.execute("qom-list-types", {"abstract": True})
        assert any(t.get("abstract") for t in with_abstract)

        props = await c.execute("qom-list-properties", {"typename": "memory-backend-ram"})
        size = next(p for p in props if p["name"] == "size")
        assert size["type"] == "size"
        err = await error_of(c, "qom-list-properties", {"typename": "nope"})
        assert (err["class"], err["desc"]) == ("DeviceNotFound", "Class 'nope' not found")

        err = await error_of(c, "device-list-properties", {"typename": "nope"})
        assert err["class"] == "DeviceNotFound"
        err = await error_of(c, "device-list-properties", {"typename": "memory-backend-ram"})
        assert (err["class"], err["desc"]) == (
            "GenericError",
            "Parameter 'typename' expects device",
        )

        err = await error_of(c, "qom-get", {"path": "/machine"})
        assert (err["class"], err["desc"]) == ("GenericError", "Parameter 'property' is missing")
        err = await error_of(c, "qom-list", {"path": "/machine", "extra": 1})
        assert err["class"] == "GenericError" and "extra" in err["desc"]

    qmp_session(vmkit.socket, body)


def test_objects_and_devices(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        with c.listener() as events:
            await c.execute(
                "object-add", {"qom-type": "memory-backend-ram", "id": "mem1", "size": 1 << 20}
            )
            assert (
                await c.execute("qom-get", {"path": "/objects/mem1", "property": "size"}) == 1 << 20
            )
            err = await error_of(
                c, "object-add", {"qom-type": "memory-backend-ram", "id": "mem1", "size": 4096}
            )
            assert err["class"] == "GenericError"
            err = await error_of(c, "object-add", {"qom-type": "no-such-type", "id": "x"})
            assert err["class"] == "GenericError"
            await c.execute("object-del", {"id": "mem1"})
            err = await error_of(c, "object-del", {"id": "mem1"})
            assert (err["class"], err["desc"]) == ("GenericError", "object 'mem1' not found")
            err = await error_of(c, "object-del", {"id": "pc.ram"})
            assert err["class"] == "GenericError" and "in use" in err["desc"]

            err = await error_of(c, "device_add", {"driver": "no-such-device"})
            assert (err["class"], err["desc"]) == (
                "GenericError",
                "'no-such-device' is not a valid device model name",
            )
            err = await error_of(c, "device_del", {"id": "nope"})
            assert (err["class"], err["desc"]) == ("DeviceNotFound", "Device 'nope' not found")
            assert "DEVICE_DELETED" not in [e["event"] for e in _drain(events)]

    qmp_session(vmkit.socket, body)


def _drain(listener: Any) -> list[dict[str, Any]]:
    out = []
    while not listener.empty():
        out.append(listener.get_nowait())
    return out


def test_dirty_rate_and_hmp(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        assert (await c.execute("query-dirty-rate"))["status"] == "unstarted"
        await c.execute("cont")
        await c.execute("calc-dirty-rate", {"calc-time": 300, "calc-time-unit": "millisecond"})
        err = await error_of(c, "calc-dirty-rate", {"calc-time": 1})
        assert "in progress" in err["desc"]
        # Polls until the job has measured; the deadline only guards a hang.
        deadline = time.monotonic() + START_TIMEOUT
        while (info := await c.execute("query-dirty-rate"))["status"] != "measured":
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
        assert info["dirty-rate"] > 0, "the workload dirties RAM while running"
        assert info["calc-time"] == 300 and info["calc-time-unit"] == "millisecond"
        err = await error_of(c, "calc-dirty-rate", {"calc-time": 0})
        assert err["class"] == "GenericError"

        tree = await c.execute("human-monitor-command", {"command-line": "info qom-tree"})
        assert tree.startswith("/machine (")
        mtree = await c.execute("human-monitor-command", {"command-line": "info mtree -f"})
        assert "pc.ram" in mtree or "ram-below-4g" in mtree
        ramblock = await c.execute("human-monitor-command", {"command-line": "info ramblock"})
        assert "pc.ram" in ramblock and "0x0000000004000000" in ramblock
        assert await c.execute("human-monitor-command", {"command-line": "info bogus"}) == (
            "unknown command: 'info bogus'\r\n"
        )

    qmp_session(vmkit.socket, body)


def test_events_go_to_every_client(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        other = QMPClient("other")
        await other.connect(vmkit.socket)
        try:
            with other.listener() as events:
                await c.execute("cont")
                assert (await next_event(other, events, "RESUME"))["event"] == "RESUME"
        finally:
            await other.disconnect()

    qmp_session(vmkit.socket, body)


def test_quit_emits_shutdown_and_removes_the_socket(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        with c.listener() as events:
            await c.execute("quit")
            event = await next_event(c, events, "SHUTDOWN")
            assert event["data"] == {"guest": False, "reason": "host-qmp-quit"}

    qmp_session(vmkit.socket, body)
    assert vmkit.proc.wait(timeout=10) == 0, "exits by itself after quit"
    assert vmkit.stop() == 0
    assert not os.path.exists(vmkit.socket)


def test_sigterm_shuts_down_cleanly(vmkit: VmkitProcess) -> None:
    async def body(c: QMPClient) -> None:
        with c.listener() as events:
            vmkit.proc.send_signal(signal.SIGTERM)
            event = await next_event(c, events, "SHUTDOWN")
            assert event["data"] == {"guest": False, "reason": "host-signal"}

    qmp_session(vmkit.socket, body)
    assert vmkit.proc.wait(timeout=10) == 0
    assert vmkit.stop() == 0
    assert not os.path.exists(vmkit.socket)
    assert "shutting down (SIGTERM)" in vmkit.stderr


def test_sigint_and_the_default_socket(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    p = start_vmkit("-m", "16M", env=env)
    try:
        assert p.socket == str(tmp_path / "vmkit" / f"vmkit-{p.proc.pid}.qmp")
        assert stat.S_IMODE(os.stat(p.socket).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "vmkit").st_mode) == 0o700

        async def body(c: QMPClient) -> None:
            # Without -S the machine runs at once.
            assert (await c.execute("query-status"))["status"] == "running"

        qmp_session(p.socket, body)
        p.proc.send_signal(signal.SIGINT)
        assert p.proc.wait(timeout=10) == 0
        assert not os.path.exists(p.socket)
        assert p.stop() == 0 and "shutting down (SIGINT)" in p.stderr
    finally:
        p.stop()


def test_tcp_is_loopback_only_unless_allowed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "--qmp", "tcp:8.8.8.8:4444"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "loopback" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "--qmp", "ftp:x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "unknown QMP transport" in out.stderr
    p = start_vmkit("-S", "--qmp", "tcp:127.0.0.1:0", "-m", "16M")
    try:
        host, port = p.socket.removeprefix("tcp:").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0

        async def main() -> None:
            c = QMPClient("tcp")
            await c.connect((host, int(port)))
            assert (await c.execute("query-status"))["status"] == "prelaunch"
            await c.disconnect()

        asyncio.run(main())
    finally:
        assert p.stop() == 0


def test_bad_input_leaves_the_machine_as_it_was(vmkit: VmkitProcess) -> None:
    """Garbage, huge and deeply nested input, and a client that vanishes
    mid-message: each gets QEMU's answer or a clean close, and another
    client sees the machine unchanged."""

    def raw(payload: bytes, read: bool = True) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(vmkit.socket)
            s.recv(4096)  # greeting
            s.sendall(b'{"execute":"qmp_capabilities"}')
            s.recv(4096)
            s.sendall(payload)
            if not read:
                return b""
            # The server answers everything sent before the end of input,
            # then closes.
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    async def snapshot(c: QMPClient) -> tuple[Any, ...]:
        return (
            await c.execute("query-status"),
            await c.execute("human-monitor-command", {"command-line": "info qom-tree"}),
            await c.execute("qom-list", {"path": "/objects"}),
        )

    before: list[tuple[Any, ...]] = []

    async def take(c: QMPClient) -> None:
        before.append(await snapshot(c))

    qmp_session(vmkit.socket, take)

    replies = [
        json.loads(x) for x in raw(b"{'execute': 'stop'}\n[1,2]\n\"str\"\n{}\n").split(b"\r\n") if x
    ]
    errors = [r["error"]["class"] for r in replies if "error" in r]
    assert errors == ["GenericError", "GenericError", "GenericError"], replies
    assert any("return" in r for r in replies), "the single-quoted stop ran"

    huge = b'{"execute":"qom-list","arguments":{"path":"' + b"a" * (2 << 20) + b'"}}'
    assert b"GenericError" in raw(huge)
    assert b"GenericError" in raw(b"[" * 5000 + b"]" * 5000)
    assert b"GenericError" in raw(b"\x01garbage{\n" * 2000)
    raw(b'{"execute": "cont", "argu', read=False)  # vanishes mid-message

    async def check(c: QMPClient) -> None:
        await c.execute("cont")  # undo the single-quoted stop's effect check below
        await c.execute("stop")
        after = await snapshot(c)
        assert after[1:] == before[0][1:]
        assert after[0] == {"status": "paused", "running": False}

    qmp_session(vmkit.socket, check)


def test_singletons_over_qmp(tmp_path: Path) -> None:
    """Introspecting a singleton type claims nothing; a second instance is
    refused on device_add and on object-add, with the holder's path."""
    p = start_vmkit(
        "-S", "--qmp", f"unix:{tmp_path / 's.qmp'}", "-m", "16M", "--plugin", "vmkit.demo_devices"
    )
    try:

        async def body(c: QMPClient) -> None:
            for _ in range(2):
                props = await c.execute("device-list-properties", {"typename": "intel-iommu"})
                assert {"aw-bits", "intremap"} <= {x["name"] for x in props}
                props = await c.execute("qom-list-properties", {"typename": "demo-sev-guest"})
                assert "cbitpos" in {x["name"] for x in props}
            await c.execute("device_add", {"driver": "intel-iommu", "id": "iommu0"})
            err = await error_of(c, "device_add", {"driver": "intel-iommu", "id": "iommu1"})
            assert err["class"] == "GenericError"
            assert "singleton" in err["desc"] and "/machine/peripheral/iommu0" in err["desc"]
            await c.execute("object-add", {"qom-type": "demo-sev-guest", "id": "sev0"})
            err = await error_of(c, "object-add", {"qom-type": "demo-sev-guest", "id": "sev1"})
            assert err["class"] == "GenericError" and "singleton" in err["desc"]
            peripherals = await c.execute("qom-list", {"path": "/machine/peripheral"})
            children = [x["name"] for x in peripherals if x["type"].startswith("child<")]
            assert children == ["iommu0"]
            objects = {x["name"] for x in await c.execute("qom-list", {"path": "/objects"})}
            assert "sev0" in objects and "sev1" not in objects
            # Unplugging frees the slot.
            with c.listener() as events:
                await c.execute("device_del", {"id": "iommu0"})
                deleted = await next_event(c, events, "DEVICE_DELETED")
            assert deleted["data"] == {"device": "iommu0", "path": "/machine/peripheral/iommu0"}
            await c.execute("device_add", {"driver": "intel-iommu", "id": "iommu1"})

            # qom-set of a property settable after realize.
            await c.execute("device_add", {"driver": "demo-isa-serial", "id": "ser0"})
            path = "/machine/peripheral/ser0"
            assert await c.execute("qom-get", {"path": path, "property": "hotplugged"}) is True
            assert await c.execute("qom-get", {"path": path, "property": "wakeup"}) is False
            await c.execute("qom-set", {"path": path, "property": "wakeup", "value": True})
            assert await c.execute("qom-get", {"path": path, "property": "wakeup"}) is True
            err = await error_of(c, "qom-set", {"path": path, "property": "iobase", "value": 1})
            assert err["class"] == "GenericError"
            err = await error_of(c, "qom-set", {"path": path, "property": "wakeup", "value": "x"})
            assert err["class"] == "GenericError"
            assert await c.execute("qom-get", {"path": path, "property": "wakeup"}) is True

        qmp_session(p.socket, body)
    finally:
        assert p.stop() == 0


def test_the_synchronous_client(vmkit: VmkitProcess) -> None:
    """vmkit.qmp.QMPSocket: replies whole, events aside, errors raised with their class."""
    from vmkit.qmp import QMPError, QMPSocket

    with QMPSocket(vmkit.socket, negotiate=True) as qmp:
        assert set(qmp.greeting["QMP"]) == {"version", "capabilities"}
        assert qmp.execute("query-status") == {"status": "prelaunch", "running": False}
        qmp.execute("cont")
        qmp.execute("stop")  # its reply comes after the RESUME event, which is kept aside
        assert qmp.events[0]["event"] == "RESUME"
        with pytest.raises(QMPError) as info:
            qmp.execute("qom-get", path="/nowhere", property="x")
        assert info.value.error_class == "DeviceNotFound"
        assert info.value.desc == "Device '/nowhere' not found"
        assert all(line.endswith(b"\r\n") for line in qmp.raw_lines)
        # As in QEMU, RESET follows the system_reset answer.
        qmp.execute("system_reset")
        assert qmp.read()["event"] == "RESET"


def run_refused(*args: str) -> subprocess.CompletedProcess[str]:
    """``vmkit run ARGS`` expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "-S", "-m", "16M", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("file", "exists and is not a socket"),
        ("directory", "is a directory, not a socket"),
        ("symlink", "is a symbolic link, not a socket"),
        ("missing-directory", "does not exist"),
        ("too-long", "a UNIX socket path must be under 108"),
    ],
)
def test_unusable_socket_path_is_one_clear_line(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "vm.qmp"
    if kind == "file":
        path.write_text("keep me")
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to(tmp_path / "target")
    elif kind == "missing-directory":
        path = tmp_path / "missing" / "vm.qmp"
    else:
        path = tmp_path / ("x" * (120 - len(str(tmp_path))))
    out = run_refused("--qmp", f"unix:{path}")
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"vmkit: cannot serve QMP on unix:{path}: ")
    assert message in lines[0]
    if kind == "file":
        assert path.read_text() == "keep me"


def test_a_live_socket_is_not_taken_over(vmkit: VmkitProcess) -> None:
    out = run_refused("--qmp", f"unix:{vmkit.socket}")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"vmkit: cannot serve QMP on unix:{vmkit.socket}: "
        f"another server is listening on {vmkit.socket}"
    ]

    async def body(c: QMPClient) -> None:  # the first one still serves
        assert await c.execute("query-name") == {"name": "t1"}

    qmp_session(vmkit.socket, body)


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "vm.qmp"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # left behind, nobody listening
    p = start_vmkit("-S", "--qmp", f"unix:{path}", "-m", "16M")
    try:

        async def body(c: QMPClient) -> None:
            assert (await c.execute("query-status"))["status"] == "prelaunch"

        qmp_session(p.socket, body)
    finally:
        assert p.stop() == 0


def begin_held_save(saver: QMPSocket, other: QMPSocket, fifo: Path) -> None:
    """Sends ``x-vmkit-save`` to the FIFO nobody reads yet on ``saver`` and
    returns once the save has begun (the machine is in finish-migrate) and
    waits for a reader; ``other`` is answered meanwhile."""
    request = {"execute": "x-vmkit-save", "arguments": {"path": str(fifo)}, "id": "save"}
    saver.send_bytes(json.dumps(request).encode())
    for _ in range(int(START_TIMEOUT / 0.01)):  # a guard, not an assertion on time
        status = other.execute("query-status")
        if status["status"] == "finish-migrate":
            break
        time.sleep(0.01)
    assert status == {"status": "finish-migrate", "running": False}


def messages_until_closed(client: QMPSocket) -> list[dict[str, Any]]:
    """Every message ``client`` receives until the server hangs up."""
    out: list[dict[str, Any]] = []
    with contextlib.suppress(ConnectionError):
        while True:
            out.append(client.read())
    return out


def reply_of(client: QMPSocket) -> dict[str, Any]:
    """The next message of ``client`` that is not an event."""
    while "event" in (message := client.read()):
        pass
    return message


def test_a_save_runs_while_other_clients_are_served(vmkit: VmkitProcess, tmp_path: Path) -> None:
    """``x-vmkit-save`` runs as a job: while it is held (its FIFO has no
    reader yet), another client's commands are answered; the save's own
    answer comes once the test lets it finish."""
    fifo = tmp_path / "save.fifo"
    os.mkfifo(fifo)

    with (
        QMPSocket(vmkit.socket, negotiate=True) as saver,
        QMPSocket(vmkit.socket, negotiate=True) as other,
    ):
        begin_held_save(saver, other, fifo)
        # A run-state change waits for the save without blocking the loop.
        with QMPSocket(vmkit.socket, negotiate=True) as stopper:
            stopper.send_bytes(b'{"execute": "stop", "id": "stop"}')
            assert other.execute("query-name") == {"name": "t1"}
            assert other.execute("query-status")["status"] == "finish-migrate"
            with open(fifo, "rb") as reader:  # lets the save go on
                stream = reader.read()
            assert stopper.read() == {"return": {}, "id": "stop"}
        while "event" in (reply := saver.read()):
            pass
        assert reply["id"] == "save"
        assert reply["return"]["bytes"] == len(stream) > 0
        assert set(reply["return"]) == {
            "bytes",
            "ram-bytes",
            "zero-pages",
            "normal-pages",
            "devices",
        }
        assert (
            other.execute("query-status")["status"] == "postmigrate"
        )  # a migration source that did not run


def test_quit_ends_a_save_waiting_for_a_fifo_reader(vmkit: VmkitProcess, tmp_path: Path) -> None:
    """Nobody ever opens the FIFO: ``quit`` cancels the save (its client
    gets the error), is answered, and the process exits."""
    fifo = tmp_path / "save.fifo"
    os.mkfifo(fifo)
    with (
        QMPSocket(vmkit.socket, negotiate=True) as saver,
        QMPSocket(vmkit.socket, negotiate=True) as quitter,
    ):
        begin_held_save(saver, quitter, fifo)
        quitter.send_bytes(b'{"execute": "quit", "id": "quit"}')
        heard = messages_until_closed(quitter)
        assert reply_of(saver) == {
            "error": {"class": "GenericError", "desc": "save cancelled"},
            "id": "save",
        }
    # quit waited for the save: its answer still comes first, then
    # SHUTDOWN, as QEMU sends them.
    assert [m.get("event", m.get("id")) for m in heard] == ["quit", "SHUTDOWN"]
    assert heard[0] == {"return": {}, "id": "quit"}
    assert heard[1]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert vmkit.proc.wait(timeout=10) == 0, "exits by itself after quit"


def test_sigterm_ends_a_save_waiting_for_a_fifo_reader(vmkit: VmkitProcess, tmp_path: Path) -> None:
    """SIGTERM while a save waits for a reader that never comes: the save's
    client gets the error, and the process exits cleanly."""
    fifo = tmp_path / "save.fifo"
    os.mkfifo(fifo)
    with (
        QMPSocket(vmkit.socket, negotiate=True) as saver,
        QMPSocket(vmkit.socket, negotiate=True) as other,
    ):
        begin_held_save(saver, other, fifo)
        vmkit.proc.send_signal(signal.SIGTERM)
        assert reply_of(saver) == {
            "error": {"class": "GenericError", "desc": "save cancelled"},
            "id": "save",
        }
        heard = messages_until_closed(other)
    assert [m["data"] for m in heard if m.get("event") == "SHUTDOWN"] == [
        {"guest": False, "reason": "host-signal"}
    ]
    assert vmkit.proc.wait(timeout=10) == 0
    assert vmkit.stop() == 0
    assert "shutting down (SIGTERM)" in vmkit.stderr


def test_a_failed_save_is_a_qmp_error(vmkit: VmkitProcess, tmp_path: Path) -> None:
    async def body(c: QMPClient) -> None:
        err = await error_of(c, "x-vmkit-save", {"path": str(tmp_path / "missing" / "f")})
        assert err["class"] == "GenericError"
        assert "missing" in err["desc"]
        assert (await c.execute("query-status"))["status"] == "prelaunch"

    qmp_session(vmkit.socket, body)


def test_ambiguous_and_missing_partial_paths(vmkit: VmkitProcess) -> None:
    """QEMU's object_resolve_path errors, through the one translation table:
    a partial path matching two objects is a GenericError, a missing one
    DeviceNotFound."""

    async def body(c: QMPClient) -> None:
        # /objects/peripheral next to /machine/peripheral.
        await c.execute(
            "object-add", {"qom-type": "memory-backend-ram", "id": "peripheral", "size": 4096}
        )
        err = await error_of(c, "qom-list", {"path": "peripheral"})
        assert err == {"class": "GenericError", "desc": "Path 'peripheral' is ambiguous"}
        err = await error_of(c, "qom-get", {"path": "nowhere", "property": "size"})
        assert err == {"class": "DeviceNotFound", "desc": "Device 'nowhere' not found"}
        assert await c.execute("qom-get", {"path": "/objects/peripheral", "property": "size"}) == (
            4096
        )

    qmp_session(vmkit.socket, body)


def wait_status(qmp: QMPSocket, command: str, wanted: set[str]) -> dict[str, Any]:
    """Polls ``command`` until its ``status`` is one of ``wanted``; the
    deadline only guards against a hang."""
    deadline = time.monotonic() + START_TIMEOUT * 3
    while (info := qmp.execute(command))["status"] not in wanted:
        assert time.monotonic() < deadline, info
        time.sleep(0.01)
    return dict(info)


def test_live_migration_between_two_vmkit_processes(tmp_path: Path) -> None:
    """A running source with its workload migrates over a UNIX socket into
    ``vmkit run --incoming``: both end as QEMU's do (postmigrate / paused
    with -S) and their guest memory is the same byte for byte."""
    stream_sock = tmp_path / "mig.sock"
    src = start_vmkit("-m", "64M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "8M")
    dst = start_vmkit(
        "-m", "64M", "--qmp", f"unix:{tmp_path / 'd.qmp'}",
        "-S", "--incoming", f"unix:{stream_sock}",
    )  # fmt: skip
    try:
        with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
            assert d.execute("query-status")["status"] == "inmigrate"
            assert (
                d.command("cont")["error"]["desc"] == "Guest is waiting for an incoming migration"
            )
            s.execute(
                "migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}]
            )
            assert s.execute("query-status")["status"] == "running"
            s.execute("migrate", uri=f"unix:{stream_sock}")
            statuses = []
            while not statuses or statuses[-1] not in ("completed", "failed", "cancelled"):
                statuses.append(s.next_event("MIGRATION")["data"]["status"])
            assert statuses[-1] == "completed", s.execute("query-migrate")
            assert wait_status(d, "query-migrate", {"completed", "failed"})["status"] == "completed"
            assert s.execute("query-status")["status"] == "postmigrate"
            assert d.execute("query-status")["status"] == "paused"
            for qmp, name in ((s, "src.mem"), (d, "dst.mem")):
                qmp.execute("pmemsave", val=0, size=64 << 20, filename=str(tmp_path / name))
            assert (tmp_path / "src.mem").read_bytes() == (tmp_path / "dst.mem").read_bytes()
    finally:
        assert src.stop() == 0 and dst.stop() == 0


def test_migrate_incoming_needs_incoming_defer(vmkit: VmkitProcess, tmp_path: Path) -> None:
    with QMPSocket(vmkit.socket, negotiate=True) as q:
        reply = q.command("migrate-incoming", uri=f"unix:{tmp_path / 'x.sock'}")
        assert reply["error"]["desc"] == "'-incoming' was not specified on the command line"


def test_incoming_defer_then_migrate_incoming(tmp_path: Path) -> None:
    stream_sock = tmp_path / "in.sock"
    dst = start_vmkit("-m", "16M", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "--incoming", "defer")
    try:
        with QMPSocket(dst.socket, negotiate=True) as d:
            assert d.execute("query-status")["status"] == "inmigrate"
            assert d.execute("migrate-incoming", uri=f"unix:{stream_sock}") == {}
            again = d.command("migrate-incoming", uri=f"unix:{stream_sock}")
            assert again["error"]["desc"] == "The incoming migration has already been started"
            assert stream_sock.exists()
            # stop while waiting answers at once (no autostart), as QEMU's.
            assert d.execute("stop") == {}
            assert d.execute("query-status")["status"] == "inmigrate"
    finally:
        assert dst.stop() == 0


@pytest.mark.parametrize("stopped", [False, True], ids=["autostart", "stopped-while-waiting"])
def test_a_deferred_destination_not_paused_runs_once_loaded(tmp_path: Path, stopped: bool) -> None:
    """``--incoming defer`` without ``-S`` starts the machine once the
    migration ``migrate-incoming`` began has loaded, as QEMU's autostart;
    a ``stop`` before ``migrate-incoming`` leaves it paused instead."""
    stream_sock = tmp_path / "in.sock"
    src = start_vmkit("-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "4M")
    dst = start_vmkit("-m", "16M", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "--incoming", "defer")
    try:
        with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
            if stopped:
                assert d.execute("stop") == {}
            d.execute("migrate-incoming", uri=f"unix:{stream_sock}")
            s.execute("migrate", uri=f"unix:{stream_sock}")
            assert wait_status(s, "query-migrate", {"completed", "failed"})["status"] == "completed"
            assert wait_status(d, "query-migrate", {"completed", "failed"})["status"] == "completed"
            assert d.execute("query-status")["status"] == ("paused" if stopped else "running")
    finally:
        assert src.stop() == 0 and dst.stop() == 0


def test_auto_converge_throttles_a_guest_that_outruns_the_link(tmp_path: Path) -> None:
    """A workload that dirties every page faster than 8 MiB/s can send
    them: after two such passes auto-converge throttles it (QEMU's
    cpu-throttle-initial, 20 %), and query-migrate says so."""
    src = start_vmkit(
        "-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "256M"
    )  # fmt: skip
    receiver = Receiver(tmp_path)
    try:
        with QMPSocket(src.socket, negotiate=True) as s:
            s.execute(
                "migrate",
                uri=receiver.uri,
                capabilities=[{"capability": "auto-converge", "state": True}],
                parameters={"max-bandwidth": 8 << 20},
            )
            deadline = time.monotonic() + START_TIMEOUT * 3
            while (info := s.execute("query-migrate")).get("cpu-throttle-percentage", 0) == 0:
                assert info["status"] in ("setup", "active"), info
                assert time.monotonic() < deadline, info
                time.sleep(0.05)
            assert info["cpu-throttle-percentage"] == 20
            assert info["ram"]["dirty-sync-count"] >= 2
            s.execute("migrate_cancel")
            assert wait_status(s, "query-migrate", {"cancelled", "failed"})["status"] == "cancelled"
            assert s.execute("query-status")["status"] == "running"
    finally:
        receiver.close()
        assert src.stop() == 0


def test_x_ignore_shared_leaves_shared_ram_to_the_file(tmp_path: Path) -> None:
    """Both processes map one RAM file (``--share``): with ``x-ignore-shared``
    on both sides (the destination sets it before ``migrate-incoming``, as
    with QEMU) the stream carries the block list and the devices, not the
    pages; a destination without the capability refuses the stream and
    stays waiting."""
    ram_file = Path("/dev/shm") / f"vmkit-test-{os.getpid()}-{tmp_path.name}"
    machine = ["-m", "32M", "--backend", "file", "--mem-path", str(ram_file), "--share"]
    stream_sock = tmp_path / "mig.sock"
    ignore = [{"capability": "x-ignore-shared", "state": True}]
    src = start_vmkit(*machine, "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "4M")
    dst = start_vmkit(*machine, "--qmp", f"unix:{tmp_path / 'd.qmp'}", "-S", "--incoming", "defer")
    try:
        with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
            d.execute("migrate-set-capabilities", capabilities=ignore)
            d.execute("migrate-incoming", uri=f"unix:{stream_sock}")
            s.execute("migrate", uri=f"unix:{stream_sock}", capabilities=ignore)
            info = wait_status(s, "query-migrate", {"completed", "failed", "cancelled"})
            assert info["status"] == "completed", info
            assert info["ram"]["transferred"] < 1 << 20, "32 MiB of RAM stayed in the file"
            assert info["ram"]["normal"] == 0
            assert wait_status(d, "query-migrate", {"completed", "failed"})["status"] == "completed"
            assert d.execute("query-status")["status"] == "paused"
            for qmp, name in ((s, "src.mem"), (d, "dst.mem")):
                qmp.execute("pmemsave", val=0, size=32 << 20, filename=str(tmp_path / name))
            assert (tmp_path / "src.mem").read_bytes() == (tmp_path / "dst.mem").read_bytes()
    finally:
        assert src.stop() == 0 and dst.stop() == 0

    other_sock = tmp_path / "mig2.sock"
    src = start_vmkit(*machine, "--qmp", f"unix:{tmp_path / 's2.qmp'}", "--workload-rate", "0")
    dst = start_vmkit(*machine, "--qmp", f"unix:{tmp_path / 'd2.qmp'}", "--incoming", "defer")
    try:
        with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
            d.execute("migrate-incoming", uri=f"unix:{other_sock}")
            s.execute("migrate", uri=f"unix:{other_sock}", capabilities=ignore)
            failed = wait_status(d, "query-migrate", {"completed", "failed"})
            assert failed["status"] == "failed"
            assert (
                "Capability 'x-ignore-shared' is off, but received capability is on"
                in (failed["error-desc"])
            )
            assert d.execute("query-status")["status"] == "inmigrate"
    finally:
        src.stop()
        dst.stop()
        ram_file.unlink(missing_ok=True)
