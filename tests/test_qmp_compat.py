"""QMP compatibility: the same script against a real QEMU and ``vmkit run``.

Each script below is data: a list of :class:`Step` (a command with its
arguments, a raw message, or "expect event X"). The module fixtures start
``qemu-system-x86_64`` (q35, TCG, ``-nodefaults``, no kernel, ``-S``) and
``vmkit run -S`` as subprocesses, run every step against both peers with
``qemu.qmp``'s :class:`QMPClient` (raw sockets for what the client hides:
the greeting, negotiation mode, malformed requests), and keep each peer's
outcome. One test per step then compares the two outcomes by *shape*:

* answers: the keys of objects (recursively; the elements of a list merged)
  and the JSON types of the values — never versions or other values, except
  where a step says ``same_value`` because both machines must agree (run
  states, event data, ``info status``, the memory-backend type names...);
* errors: the error class; differing ``desc`` texts are information
  (printed, and recorded as ``desc-qemu``/``desc-vmkit`` test properties);
* events: the name and the shape of the whole message (``data`` fields,
  ``timestamp``); no peer may emit an event the script does not expect.

Where vmkit differs on purpose, :data:`DELIBERATE_DIFFERENCES` lists it with
the reason; an entry that no longer occurs fails too, unless it is marked
version- or data-dependent. Passes with whichever QEMU is installed.

DEVICE_DELETED: the hot-plug script plugs and unplugs a ``usb-kbd`` on a
USB controller (``-device qemu-xhci``) in both: USB devices unplug at once,
without a guest.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from qmp_peers import (
    Peer,
    compare_shapes,
    qemu_binary,
    qemu_command,
    qemu_missing_is_failure,
    shape,
    short_dir,
    start_peer,
    vmkit_command,
)
from vmkit.qmp import QMPSocket

PEERS = ("qemu", "vmkit")
EVENT_TIMEOUT = 5.0
POLL_TIMEOUT = 10.0
MIB = 1 << 20
RAM = 128 * MIB
NAME = "foo"


# --- the scripts ---------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step of a script, run against both peers.

    Exactly one of ``execute`` (a command through ``QMPClient``), ``raw`` (a
    message sent as is on a raw socket, before the client connects) or
    ``event`` (the next event must be this one) is set; ``greeting`` reads
    the greeting of the raw connection.
    """

    id: str
    execute: str | None = None
    arguments: dict[str, Any] | None = None
    raw: dict[str, Any] | None = None
    event: str | None = None
    greeting: bool = False
    same_value: bool = False
    """The answers (or event data) must be equal, not only of one shape."""
    until: tuple[str, Any] | None = None
    """Repeat the command until its answer has this ``(key, value)``."""
    expect: str | None = None
    """``"return"`` or an error class both peers must answer with."""


def cmd(id: str, execute: str, expect: str = "return", **kw: Any) -> Step:
    return Step(id, execute=execute, expect=expect, **kw)


def raw(id: str, message: dict[str, Any], expect: str) -> Step:
    return Step(id, raw=message, expect=expect)


def event(name: str, id: str | None = None, *, same_value: bool = True) -> Step:
    return Step(id or f"event-{name}", event=name, same_value=same_value)


GE = "GenericError"
CNF = "CommandNotFound"
DNF = "DeviceNotFound"
MEM1 = {"qom-type": "memory-backend-ram", "id": "mem1", "size": MIB}

#: Raw socket, before and during negotiation (the client would negotiate and
#: raise on the errors before we could see them).
RAW_SCRIPT = [
    Step("greeting", greeting=True),
    raw("before-negotiation", {"execute": "query-status"}, CNF),
    raw("qmp_capabilities", {"execute": "qmp_capabilities"}, "return"),
    raw("qmp_capabilities-again", {"execute": "qmp_capabilities"}, CNF),
    raw("id-echoed", {"execute": "query-name", "id": ["any", {"json": 1}]}, "return"),
    raw("error-id-echoed", {"execute": "bogus", "id": 7}, CNF),
    raw("lacks-execute", {"arguments": {}}, GE),
    raw("execute-not-a-string", {"execute": 1}, GE),
    raw("arguments-not-an-object", {"execute": "query-status", "arguments": []}, GE),
]

#: The main script (peers started with ``-name foo`` / ``--name foo``).
MAIN_SCRIPT = [
    cmd("unknown-command", "no-such-command", CNF),
    cmd("query-commands", "query-commands"),
    cmd("query-version", "query-version"),
    cmd("query-name", "query-name", same_value=True),
    cmd("query-status-prelaunch", "query-status", same_value=True),
    cmd(
        "info-status-prelaunch",
        "human-monitor-command",
        same_value=True,
        arguments={"command-line": "info status"},
    ),
    # argument checking
    cmd("args-unexpected-no-arg-command", "query-status", GE, arguments={"x": 1}),
    cmd("args-qom-get-missing-property", "qom-get", GE, arguments={"path": "/machine"}),
    cmd("args-qom-get-int-path", "qom-get", GE, arguments={"path": 1, "property": "type"}),
    cmd("args-qom-list-extra", "qom-list", GE, arguments={"path": "/machine", "x": 1}),
    cmd("args-qom-list-missing", "qom-list", GE),
    cmd("args-qom-list-types-abstract-str", "qom-list-types", GE, arguments={"abstract": "yes"}),
    cmd("args-device_del-missing-id", "device_del", GE),
    cmd(
        "args-object-add-missing-id", "object-add", GE, arguments={"qom-type": "memory-backend-ram"}
    ),
    cmd("args-calc-dirty-rate-str", "calc-dirty-rate", GE, arguments={"calc-time": "1"}),
    cmd("args-hmp-missing", "human-monitor-command", GE),
    # QOM tree
    cmd("qom-list-machine", "qom-list", arguments={"path": "/machine"}),
    cmd("qom-list-peripheral", "qom-list", arguments={"path": "/machine/peripheral"}),
    cmd("qom-list-objects", "qom-list", arguments={"path": "/objects"}),
    cmd("qom-list-missing-path", "qom-list", DNF, arguments={"path": "/no/such"}),
    cmd("qom-get-machine-type", "qom-get", arguments={"path": "/machine", "property": "type"}),
    cmd(
        "qom-get-container-type",
        "qom-get",
        same_value=True,
        arguments={"path": "/machine/peripheral", "property": "type"},
    ),
    cmd(
        "qom-get-ram-size",
        "qom-get",
        same_value=True,
        arguments={"path": "/objects/pc.ram", "property": "size"},
    ),
    cmd("qom-get-missing-path", "qom-get", DNF, arguments={"path": "/nope", "property": "type"}),
    cmd(
        "qom-get-partial-path",
        "qom-get",
        same_value=True,
        arguments={"path": "pc.ram", "property": "size"},
    ),
    cmd(
        "qom-get-missing-property",
        "qom-get",
        GE,
        arguments={"path": "/machine", "property": "nope"},
    ),
    cmd(
        "qom-set-read-only",
        "qom-set",
        GE,
        arguments={"path": "/machine", "property": "type", "value": "x"},
    ),
    cmd(
        "qom-set-missing-property",
        "qom-set",
        GE,
        arguments={"path": "/machine", "property": "nope", "value": 1},
    ),
    cmd(
        "qom-set-missing-path",
        "qom-set",
        DNF,
        arguments={"path": "/nope", "property": "type", "value": 1},
    ),
    cmd(
        "qom-set-size-after-creation",
        "qom-set",
        GE,
        arguments={"path": "/objects/pc.ram", "property": "size", "value": 4096},
    ),
    cmd(
        "qom-get-ram-size-unchanged",
        "qom-get",
        same_value=True,
        arguments={"path": "/objects/pc.ram", "property": "size"},
    ),
    # types
    cmd("qom-list-types", "qom-list-types"),
    cmd("qom-list-types-abstract", "qom-list-types", arguments={"abstract": True}),
    cmd(
        "qom-list-types-memory-backend",
        "qom-list-types",
        same_value=True,
        arguments={"implements": "memory-backend"},
    ),
    cmd(
        "qom-list-types-memory-backend-abstract",
        "qom-list-types",
        same_value=True,
        arguments={"implements": "memory-backend", "abstract": True},
    ),
    cmd(
        "qom-list-types-unknown",
        "qom-list-types",
        same_value=True,
        arguments={"implements": "no-such-type"},
    ),
    cmd("qom-list-properties", "qom-list-properties", arguments={"typename": "memory-backend-ram"}),
    cmd(
        "qom-list-properties-abstract",
        "qom-list-properties",
        arguments={"typename": "memory-backend"},
    ),
    cmd(
        "qom-list-properties-abstract-device",
        "qom-list-properties",
        arguments={"typename": "device"},
    ),
    cmd(
        "qom-list-properties-interface",
        "qom-list-properties",
        GE,
        arguments={"typename": "user-creatable"},
    ),
    cmd(
        "qom-list-properties-unknown",
        "qom-list-properties",
        DNF,
        arguments={"typename": "no-such-type"},
    ),
    cmd(
        "device-list-properties-unknown",
        "device-list-properties",
        DNF,
        arguments={"typename": "no-such-type"},
    ),
    cmd(
        "device-list-properties-not-device",
        "device-list-properties",
        GE,
        arguments={"typename": "memory-backend-ram"},
    ),
    cmd(
        "device-list-properties-abstract",
        "device-list-properties",
        GE,
        arguments={"typename": "device"},
    ),
    # objects and devices
    cmd("object-add", "object-add", arguments=MEM1),
    cmd("object-add-duplicate", "object-add", GE, arguments=MEM1),
    cmd(
        "object-add-unknown-type",
        "object-add",
        GE,
        arguments={"qom-type": "no-such-type", "id": "mem2"},
    ),
    cmd(
        "object-add-abstract-type",
        "object-add",
        GE,
        arguments={"qom-type": "memory-backend", "id": "mem2"},
    ),
    cmd("qom-list-object", "qom-list", arguments={"path": "/objects/mem1"}),
    cmd(
        "qom-get-object-size",
        "qom-get",
        same_value=True,
        arguments={"path": "/objects/mem1", "property": "size"},
    ),
    cmd("object-del", "object-del", arguments={"id": "mem1"}),
    cmd("object-del-again", "object-del", GE, arguments={"id": "mem1"}),
    cmd("object-del-in-use", "object-del", GE, arguments={"id": "pc.ram"}),
    cmd(
        "object-add-wrong-property-type",
        "object-add",
        GE,
        arguments={**MEM1, "id": "mem3", "size": "x"},
    ),
    cmd("object-add-unknown-property", "object-add", GE, arguments={**MEM1, "bogus": 1}),
    cmd(
        "object-add-missing-size",
        "object-add",
        GE,
        arguments={"qom-type": "memory-backend-ram", "id": "mem3"},
    ),
    cmd(
        "qom-get-deleted-object",
        "qom-get",
        DNF,
        arguments={"path": "/objects/mem1", "property": "size"},
    ),
    cmd("device_add-unknown-driver", "device_add", GE, arguments={"driver": "no-such-device"}),
    cmd("device_add-not-a-device", "device_add", GE, arguments={"driver": "memory-backend-ram"}),
    cmd("device_add-abstract", "device_add", GE, arguments={"driver": "device"}),
    cmd(
        "device_add-not-a-device-with-bus",
        "device_add",
        GE,
        arguments={"driver": "memory-backend-ram", "bus": "nope"},
    ),
    cmd("device_del-missing", "device_del", DNF, arguments={"id": "nope"}),
    # dirty rate
    cmd("query-dirty-rate-unstarted", "query-dirty-rate"),
    cmd("calc-dirty-rate-out-of-range", "calc-dirty-rate", GE, arguments={"calc-time": 0}),
    cmd(
        "calc-dirty-rate-bad-mode",
        "calc-dirty-rate",
        GE,
        arguments={"calc-time": 1, "mode": "bogus"},
    ),
    cmd("calc-dirty-rate", "calc-dirty-rate", arguments={"calc-time": 1}),
    cmd("query-dirty-rate-measured", "query-dirty-rate", until=("status", "measured")),
    # HMP
    cmd("hmp-info-qom-tree", "human-monitor-command", arguments={"command-line": "info qom-tree"}),
    cmd("hmp-info-mtree-f", "human-monitor-command", arguments={"command-line": "info mtree -f"}),
    cmd("hmp-info-mtree", "human-monitor-command", arguments={"command-line": "info mtree"}),
    cmd(
        "hmp-empty",
        "human-monitor-command",
        same_value=True,
        arguments={"command-line": ""},
    ),
    cmd("hmp-info-ramblock", "human-monitor-command", arguments={"command-line": "info ramblock"}),
    cmd("hmp-unknown", "human-monitor-command", arguments={"command-line": "info no-such"}),
    # run state and its events
    cmd("cont", "cont"),
    event("RESUME"),
    cmd("query-status-running", "query-status", same_value=True),
    cmd(
        "info-status-running",
        "human-monitor-command",
        same_value=True,
        arguments={"command-line": "info status"},
    ),
    cmd("stop", "stop"),
    event("STOP"),
    cmd("query-status-paused", "query-status", same_value=True),
    cmd(
        "info-status-paused",
        "human-monitor-command",
        same_value=True,
        arguments={"command-line": "info status"},
    ),
    cmd("stop-again", "stop"),
    cmd("system_reset", "system_reset"),
    event("RESET"),
    cmd("cont-again", "cont"),
    event("RESUME", "event-RESUME-again"),
    # Migration defaults: the same lists, defaults, checks and messages.
    cmd("query-migrate-none", "query-migrate", same_value=True),
    cmd("query-migrate-capabilities", "query-migrate-capabilities", same_value=True),
    cmd("query-migrate-parameters", "query-migrate-parameters", same_value=True),
    cmd(
        "migrate-set-parameters",
        "migrate-set-parameters",
        arguments={"downtime-limit": 100, "max-bandwidth": 1 << 30, "tls-creds": None},
    ),
    cmd(
        "migrate-set-parameters-range",
        "migrate-set-parameters",
        GE,
        arguments={"max-bandwidth": 5, "cpu-throttle-increment": 100},
    ),
    cmd(
        "migrate-set-parameters-type",
        "migrate-set-parameters",
        GE,
        arguments={"compress-threads": 256},
    ),
    cmd("migrate-set-parameters-unknown", "migrate-set-parameters", GE, arguments={"x": 1}),
    cmd("query-migrate-parameters-set", "query-migrate-parameters", same_value=True),
    cmd(
        "migrate-set-capabilities",
        "migrate-set-capabilities",
        arguments={"capabilities": [{"capability": "events", "state": True}]},
    ),
    cmd(
        "migrate-set-capabilities-conflict",
        "migrate-set-capabilities",
        GE,
        arguments={"capabilities": [{"capability": "postcopy-preempt", "state": True}]},
    ),
    cmd("query-migrate-capabilities-set", "query-migrate-capabilities", same_value=True),
    # quit while running: SHUTDOWN, no STOP
    cmd("quit", "quit"),
    event("SHUTDOWN"),
]

#: Without ``-name``, with a USB controller.
HOTPLUG_SCRIPT = [
    cmd("query-name-unnamed", "query-name", same_value=True),
    cmd("hotplug-qom-list-peripheral", "qom-list", arguments={"path": "/machine/peripheral"}),
    cmd("device_add", "device_add", arguments={"driver": "usb-kbd", "id": "kbd1"}),
    cmd("device_add-duplicate-id", "device_add", GE, arguments={"driver": "usb-kbd", "id": "kbd1"}),
    cmd("qom-list-peripheral-with-device", "qom-list", arguments={"path": "/machine/peripheral"}),
    cmd(
        "qom-get-device-type",
        "qom-get",
        same_value=True,
        arguments={"path": "/machine/peripheral/kbd1", "property": "type"},
    ),
    cmd(
        "qom-get-device-realized",
        "qom-get",
        same_value=True,
        arguments={"path": "/machine/peripheral/kbd1", "property": "realized"},
    ),
    cmd("device_del", "device_del", arguments={"id": "kbd1"}),
    event("DEVICE_DELETED"),
    cmd("device_del-again", "device_del", DNF, arguments={"id": "kbd1"}),
    cmd("device_add-anonymous", "device_add", arguments={"driver": "usb-kbd"}),
    cmd("device_del-by-path", "device_del", arguments={"id": "/machine/peripheral-anon/device[0]"}),
    event("DEVICE_DELETED", "event-DEVICE_DELETED-anonymous"),
]


# --- deliberate differences ----------------------------------------------------


@dataclass(frozen=True)
class Deliberate:
    steps: str
    """fnmatch pattern of the step ids."""
    difference: str
    """The line :func:`compare_shapes` (or the outcome comparison) reports."""
    reason: str
    always: bool = True
    """False: depends on the QEMU version or on data; may not occur."""


DELIBERATE_DIFFERENCES = [
    Deliberate(
        "query-migrate-parameters*",
        ".zero-page-detection: only vmkit",
        "MigrationParameters 'zero-page-detection' came with QEMU 9.0; vmkit follows QEMU 9.2",
        always=False,
    ),
    Deliberate(
        "query-status-*",
        ".singlestep: only qemu",
        "QEMU before 8.1 reports StatusInfo's deprecated 'singlestep' (removed in 8.1);"
        " vmkit follows QEMU 9.2",
        always=False,
    ),
    Deliberate(
        "query-dirty-rate-*",
        ".calc-time-unit: only vmkit",
        "DirtyRateInfo 'calc-time-unit' came with QEMU 8.2 (TimeUnit, millisecond"
        " calc-time); vmkit follows QEMU 9.2",
        always=False,
    ),
    Deliberate(
        "qom-list-properties*",
        "[].default-value: only vmkit",
        "ObjectPropertyInfo 'default-value' is optional; vmkit's memory backends declare"
        " defaults for share/size, QEMU's memory-backend properties have none",
        always=False,
    ),
    Deliberate(
        "qom-list-properties*",
        "[].description: only vmkit",
        "ObjectPropertyInfo 'description' is optional; vmkit describes every property of its"
        " types, QEMU leaves some (e.g. the device base properties) undescribed",
        always=False,
    ),
]

#: Differences outside the compared shapes, noted here for the record (the
#: suite does not compare these values).
NOTED_VALUE_DIFFERENCES = {
    "greeting capabilities": "QEMU offers ['oob'] on -qmp sockets (monitor I/O thread);"
    " vmkit never offers oob ([]), which QMP allows",
    "query-version / greeting version": "vmkit announces QEMU 9.2.0 with package 'vmkit-X'",
    "qom-list property types": "QEMU names the 'type' property 'string', vmkit 'str';"
    " QEMU's backend 'size' is 'int', vmkit's 'size'",
    "machine type": "QEMU pc-q35-X.Y-machine, vmkit none-machine (and far fewer properties)",
    "query-dirty-rate after a failed measurement": "vmkit reports 'measured' without"
    " 'dirty-rate' and with its own 'x-vmkit-error' (QEMU's DirtyRateStatus has no failed"
    " state; the script has no failing measurement)",
}


def deliberate_for(step_id: str) -> list[Deliberate]:
    return [d for d in DELIBERATE_DIFFERENCES if fnmatch.fnmatchcase(step_id, d.steps)]


# --- running a script ----------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    """``"return"``, ``"error"``, ``"event"``, ``"greeting"`` or ``"none"``
    (nothing came: no event in time, connection gone)."""
    value: Any = None
    """The answer, the event message, the greeting, or the raw reply."""
    error_class: str | None = None
    desc: str | None = None


@dataclass
class Transcript:
    peer: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    unexpected_events: list[dict[str, Any]] = field(default_factory=list)
    exit_status: int | None = None
    socket_removed: bool | None = None


def run_raw(sock: Path, steps: list[Step], out: Transcript) -> None:
    with QMPSocket(sock) as conn:
        for step in steps:
            if step.greeting:
                out.outcomes[step.id] = Outcome("greeting", conn.greeting)
                continue
            assert step.raw is not None
            reply = conn.send(step.raw)
            err = reply.get("error")
            if err is not None:
                out.outcomes[step.id] = Outcome("error", reply, err.get("class"), err.get("desc"))
            else:
                out.outcomes[step.id] = Outcome("return", reply)
        out.unexpected_events.extend(conn.events)


async def next_event(client: QMPClient) -> dict[str, Any] | None:
    try:
        msg = await asyncio.wait_for(client.events.get(), EVENT_TIMEOUT)
    except TimeoutError:
        return None
    return dict(msg)


async def run_client(sock: Path, steps: list[Step], out: Transcript) -> None:
    client = QMPClient(f"compat-{out.peer}")
    await client.connect(str(sock))
    try:
        for step in steps:
            if step.event is not None:
                msg = await next_event(client)
                out.outcomes[step.id] = Outcome("none") if msg is None else Outcome("event", msg)
                continue
            assert step.execute is not None
            deadline = time.monotonic() + POLL_TIMEOUT
            while True:
                try:
                    value = await client.execute(step.execute, step.arguments)
                    outcome = Outcome("return", value)
                except ExecuteError as e:
                    outcome = Outcome("error", e.error.error.class_, e.error_class, str(e))
                if step.until is None or outcome.kind != "return":
                    break
                key, wanted = step.until
                if (isinstance(value, dict) and value.get(key) == wanted) or (
                    time.monotonic() > deadline
                ):
                    break
                await asyncio.sleep(0.1)
            out.outcomes[step.id] = outcome
        # Whatever is left: events no step expected.
        while not client.events.empty():
            out.unexpected_events.append(dict(client.events.get_nowait()))
    finally:
        try:
            await client.disconnect()
        except (EOFError, ConnectionResetError):
            # The server hung up: expected once it has quit.
            if not any(s.execute == "quit" for s in steps):
                raise


def run_peer(peer: Peer, steps: list[Step], out: Transcript) -> None:
    raw_steps = [s for s in steps if s.raw is not None or s.greeting]
    client_steps = [s for s in steps if s.raw is None and not s.greeting]
    if raw_steps:
        run_raw(peer.socket, raw_steps, out)
    asyncio.run(run_client(peer.socket, client_steps, out))


def start(kind: str, sock: Path, *, hotplug: bool) -> Any:
    if kind == "qemu":
        binary = qemu_binary()
        assert binary is not None
        extra = ["-device", "qemu-xhci,id=xhci"] if hotplug else ["-name", NAME]
        return start_peer(kind, qemu_command(binary, sock, extra), sock)
    if hotplug:
        return start_peer(kind, vmkit_command(sock, ["-device", "qemu-xhci,id=xhci"]), sock)
    return start_peer(kind, vmkit_command(sock, ["--name", NAME, "-m", f"{RAM // MIB}M"]), sock)


def run_session(kind: str, steps: list[Step], *, hotplug: bool) -> Transcript:
    out = Transcript(kind)
    with short_dir() as d:
        sock = d / f"{kind}.sock"
        with start(kind, sock, hotplug=hotplug) as peer:
            run_peer(peer, steps, out)
            if any(s.execute == "quit" for s in steps):
                out.exit_status = peer.wait_exit()
                out.socket_removed = not sock.exists()
    return out


@pytest.fixture(scope="module")
def need_qemu() -> None:
    if qemu_binary() is None:
        msg = "qemu-system-x86_64 not found (make system-deps installs qemu-system-x86)"
        if qemu_missing_is_failure():
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def main_run(need_qemu: None) -> dict[str, Transcript]:
    return {p: run_session(p, RAW_SCRIPT + MAIN_SCRIPT, hotplug=False) for p in PEERS}


@pytest.fixture(scope="module")
def hotplug_run(need_qemu: None) -> dict[str, Transcript]:
    return {p: run_session(p, HOTPLUG_SCRIPT, hotplug=True) for p in PEERS}


# --- comparing -----------------------------------------------------------------


def normalized(value: Any) -> Any:
    """Lists sorted (element order is not part of any answer here)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((normalized(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def compared_value(step: Step, outcome: Outcome) -> Any:
    if outcome.kind == "event":
        return outcome.value.get("data")
    return outcome.value


def common_members(a: Any, b: Any) -> tuple[Any, Any]:
    """``a`` and ``b`` with object members only one has removed (the shape
    comparison already judged those), recursively."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() & b.keys()
        pairs = {k: common_members(a[k], b[k]) for k in keys}
        return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
    return a, b


def check_step(step: Step, q: Outcome, v: Outcome, record: Any) -> None:
    """Fails with every difference of ``step`` not listed as deliberate."""
    problems: list[str] = []
    if step.expect is not None:
        for peer, o in (("qemu", q), ("vmkit", v)):
            got = o.kind if o.kind != "error" else o.error_class
            if got != step.expect:
                problems.append(
                    f"{peer} answered {got} {o.desc or ''}, the script expects {step.expect}"
                )
    if step.event is not None:
        for peer, o in (("qemu", q), ("vmkit", v)):
            name = o.value.get("event") if o.kind == "event" else None
            if name != step.event:
                problems.append(f"{peer}: expected event {step.event}, got {o.value or 'none'}")
    if q.kind != v.kind:
        problems.append(f"outcome kind qemu={q.kind} vmkit={v.kind}")
    elif q.kind == "error":
        if q.error_class != v.error_class:
            problems.append(f"error class qemu={q.error_class} vmkit={v.error_class}")
        if q.desc != v.desc:
            print(f"{step.id}: desc qemu={q.desc!r} vmkit={v.desc!r}")
            record("desc-qemu", q.desc)
            record("desc-vmkit", v.desc)
    if q.kind == v.kind and q.kind != "none":
        diffs = compare_shapes(shape(q.value), shape(v.value))
        if q.kind == "error" and step.raw is None:
            diffs = []  # the client gives the class and desc only
        allowed = deliberate_for(step.id)
        listed = {d.difference for d in allowed}
        problems += [f"shape: {d}" for d in diffs if d not in listed]
        problems += [
            f"DELIBERATE_DIFFERENCES lists {d.difference!r} for {d.steps}, but it did not occur"
            for d in allowed
            if d.always and d.difference not in diffs
        ]
        if step.same_value:
            qv, vv = common_members(compared_value(step, q), compared_value(step, v))
            qv, vv = normalized(qv), normalized(vv)
            if q.kind != "error" and qv != vv:
                problems.append(f"value qemu={qv!r} vmkit={vv!r}")
    assert not problems, f"{step.id}:\n  " + "\n  ".join(problems)


def step_params(steps: list[Step]) -> list[Any]:
    return [pytest.param(s, id=s.id, marks=pytest.mark.qemu) for s in steps]


@pytest.mark.parametrize("step", step_params(RAW_SCRIPT + MAIN_SCRIPT))
def test_main_step(step: Step, main_run: dict[str, Transcript], record_property: Any) -> None:
    check_step(
        step,
        main_run["qemu"].outcomes[step.id],
        main_run["vmkit"].outcomes[step.id],
        record_property,
    )


@pytest.mark.parametrize("step", step_params(HOTPLUG_SCRIPT))
def test_hotplug_step(step: Step, hotplug_run: dict[str, Transcript], record_property: Any) -> None:
    check_step(
        step,
        hotplug_run["qemu"].outcomes[step.id],
        hotplug_run["vmkit"].outcomes[step.id],
        record_property,
    )


@pytest.mark.qemu
def test_greeting_capabilities_is_a_list(main_run: dict[str, Transcript]) -> None:
    for peer in PEERS:
        greeting = main_run[peer].outcomes["greeting"].value
        assert set(greeting) == {"QMP"}, (peer, greeting)
        assert isinstance(greeting["QMP"]["capabilities"], list), (peer, greeting)
        assert all(isinstance(c, str) for c in greeting["QMP"]["capabilities"]), (peer, greeting)


@pytest.mark.qemu
def test_ids_are_echoed(main_run: dict[str, Transcript]) -> None:
    for peer in PEERS:
        outcomes = main_run[peer].outcomes
        assert outcomes["id-echoed"].value["id"] == ["any", {"json": 1}], peer
        assert outcomes["error-id-echoed"].value["id"] == 7, peer
        assert "id" not in outcomes["lacks-execute"].value, peer


@pytest.mark.qemu
@pytest.mark.parametrize("run", ["main_run", "hotplug_run"])
def test_no_unexpected_events(run: str, request: pytest.FixtureRequest) -> None:
    transcripts: dict[str, Transcript] = request.getfixturevalue(run)
    for peer in PEERS:
        names = [e.get("event") for e in transcripts[peer].unexpected_events]
        assert names == [], f"{peer} sent events no step expected: {names}"


@pytest.mark.qemu
def test_vmkit_commands_exist_in_qemu(main_run: dict[str, Transcript]) -> None:
    def names(peer: str) -> set[str]:
        return {c["name"] for c in main_run[peer].outcomes["query-commands"].value}

    from vmkit.monitor import VMKIT_COMMANDS

    assert set(VMKIT_COMMANDS) <= names("vmkit")
    assert all(name.startswith("x-vmkit-") for name in VMKIT_COMMANDS)
    ours = names("vmkit") - set(VMKIT_COMMANDS)
    assert len(ours) > 10
    assert ours <= names("qemu"), ours - names("qemu")


@pytest.mark.qemu
def test_hmp_output_lines_end_in_crlf(main_run: dict[str, Transcript]) -> None:
    """QEMU's monitor output layer turns every "\\n" into "\\r\\n"."""
    hmp = [
        s.id for s in MAIN_SCRIPT if s.execute == "human-monitor-command" and s.expect == "return"
    ]
    for peer in PEERS:
        for step_id in hmp:
            text = main_run[peer].outcomes[step_id].value
            assert text.count("\n") == text.count("\r\n"), (peer, step_id, text[:200])
            assert text == "" or text.endswith("\r\n"), (peer, step_id, text[-20:])


@pytest.mark.qemu
def test_info_ramblock_pc_ram_line(main_run: dict[str, Transcript]) -> None:
    """Same RAM size, same first columns for pc.ram (newer QEMUs add columns)."""

    def lines(peer: str) -> list[str]:
        text: str = main_run[peer].outcomes["hmp-info-ramblock"].value
        return text.split("\r\n")

    q, v = lines("qemu"), lines("vmkit")
    assert q[0].startswith(v[0]), (q[0], v[0])
    pc_ram = [line for line in q if line.split()[:1] == ["pc.ram"]]
    assert len(pc_ram) == 1, q
    assert pc_ram[0].startswith(v[1]), (pc_ram[0], v[1])


@pytest.mark.qemu
def test_quit_exits_and_removes_socket(main_run: dict[str, Transcript]) -> None:
    for peer in PEERS:
        t = main_run[peer]
        assert (t.exit_status, t.socket_removed) == (0, True), peer


# --- the comparison itself (no QEMU needed) ------------------------------------


def test_compare_shapes_reports_keys_types_and_elements() -> None:
    q = shape({"a": 1, "b": [{"name": "x", "type": "t"}], "c": "s"})
    assert compare_shapes(q, q) == []
    v = shape({"a": "1", "b": [{"name": "x"}, {"name": "y", "extra": True}], "d": None})
    assert compare_shapes(q, v) == [
        ".c: only qemu",
        ".d: only vmkit",
        ".a: types qemu=['int'] vmkit=['str']",
        ".b[].type: only qemu",
        ".b[].extra: only vmkit",
    ]


def test_compare_shapes_skips_elements_of_empty_lists() -> None:
    assert compare_shapes(shape({"l": []}), shape({"l": [1]})) == []
    assert compare_shapes(shape([1]), shape(["1"])) == ["[]: types qemu=['int'] vmkit=['str']"]


def test_check_step_fails_on_class_kind_and_undeclared_differences() -> None:
    def no_record(_k: str, _v: object) -> None:
        pass

    step = cmd("x", "qom-get", DNF)
    dnf = Outcome("error", DNF, DNF, "a")
    check_step(step, dnf, Outcome("error", DNF, DNF, "b"), no_record)
    with pytest.raises(AssertionError, match="error class"):
        check_step(step, dnf, Outcome("error", GE, GE, "a"), no_record)
    with pytest.raises(AssertionError, match="outcome kind"):
        check_step(step, dnf, Outcome("return", {}), no_record)
    same = cmd("query-status-x", "query-status", same_value=True)
    with pytest.raises(AssertionError, match="value qemu"):
        check_step(
            same,
            Outcome("return", {"status": "running", "running": True}),
            Outcome("return", {"status": "paused", "running": True}),
            no_record,
        )
    # listed but version-dependent: allowed
    check_step(
        cmd("query-status-y", "query-status"),
        Outcome("return", {"status": "running", "singlestep": False}),
        Outcome("return", {"status": "running"}),
        no_record,
    )
    with pytest.raises(AssertionError, match=r"shape: \.singlestep: only qemu"):
        check_step(
            cmd("other", "query-status"),
            Outcome("return", {"singlestep": False}),
            Outcome("return", {}),
            no_record,
        )
    with pytest.raises(AssertionError, match="expected event STOP"):
        check_step(event("STOP"), Outcome("none"), Outcome("none"), no_record)


def test_every_deliberate_difference_names_steps_of_a_script() -> None:
    ids = [s.id for s in RAW_SCRIPT + MAIN_SCRIPT + HOTPLUG_SCRIPT]
    assert len(ids) == len(set(ids))
    for d in DELIBERATE_DIFFERENCES:
        assert fnmatch.filter(ids, d.steps), d.steps
        assert d.reason, d
