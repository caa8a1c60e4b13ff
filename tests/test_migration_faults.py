"""Nothing lost, whatever fails (principle 5): a cancel at every phase, a
destination that closes, refuses or is killed, a connection cut at a random
offset, a full disk, and faults injected with vmkit's ``x-vmkit-fault``.

In every case the source ends ``failed`` or ``cancelled`` (with an
``error-desc`` when failed), back in the run state it had, with its RAM as
the guest left it and dirty logging off; a destination never loads a
partial stream (it stays ``inmigrate``, its migration ``failed``). The
one failure a source cannot see is a destination refusing what came after
the last byte was sent (a device section): with no return path the source
ends ``completed``, stopped with its state whole, as QEMU's does.

One machine per process: the source is this process's machine; a
destination here is a :class:`~vmkit.migration.Listener` loading into a
fresh RAM block of the source's shape on a thread, or a ``vmkit run
--incoming`` process. The randomized test is seeded: set
``VMKIT_FAULT_SEED`` to replay a run (its seed is in every failure
message) and ``VMKIT_FAULT_RUNS`` to change how many runs it makes."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from test_vmkit_run import start_vmkit
from vmkit import errors, migration_fault, qom
from vmkit.machine import DEFAULT_MACHINE_TYPE, Machine
from vmkit.memory import RamBlock
from vmkit.migration import Listener, Precopy, VMStateDescription, VMStateField
from vmkit.migration_settings import MigrationSettings, SettingsError
from vmkit.monitor import MachineMonitor, monitor_version
from vmkit.qmp import CommandRegistry, QMPServer, QMPSocket

pytestmark = pytest.mark.usefixtures("no_machine")

GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging
MEM = 4 << 20
PAGE = 4096
SEED = int(os.environ.get("VMKIT_FAULT_SEED") or random.SystemRandom().randrange(1 << 32))
RUNS = int(os.environ.get("VMKIT_FAULT_RUNS") or "120")
ENDED = ("completed", "failed", "cancelled")


# ----- destinations ------------------------------------------------------------


#: The device sections of the source's board: the q35 host bridge's 0xCF8
#: register and its ``mch``. The destination here has no board (one
#: machine per process): it takes those sections without modelling them,
#: and nothing else.
BOARD_SECTIONS = ["PCIHost", "0000:00:00.0/mch"]


class Destination:
    """A destination in this process: listens at ``unix:`` and loads what
    arrives into a fresh RAM block of the source's shape (no devices),
    as a machine of ``machine_type``, on a thread. The source board's
    section is taken unmodelled; any other section or RAM block the stream
    holds fails the load."""

    def __init__(self, directory: Path, *, machine_type: str = DEFAULT_MACHINE_TYPE) -> None:
        self.ram = RamBlock.anonymous("pc.ram", MEM)
        self.listener = Listener(f"unix:{directory / 'in.sock'}")
        self.uri = self.listener.uri
        self.stats: dict[str, int] | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._load, args=(machine_type,))
        self._thread.start()

    def _load(self, machine_type: str) -> None:
        try:
            stats = self.listener.restore(
                machine_type=machine_type, ram=[self.ram], timeout=GUARD, report_unmodelled=True
            )
            unmodelled = stats["unmodelled"]
            taken = [s["idstr"] for s in unmodelled["sections"]]
            if taken != BOARD_SECTIONS or unmodelled["ram_blocks"]:
                raise AssertionError(f"the stream held more than RAM and the board: {unmodelled}")
            self.stats = stats
        except Exception as e:  # what the destination refused, for the test to judge
            self.error = e

    def join(self) -> None:
        self._thread.join(GUARD)
        assert not self._thread.is_alive(), "the destination still waits"
        self.listener.close()


class Closer:
    """A destination that reads ``after`` bytes of the stream, then closes
    the connection (a destination that died)."""

    def __init__(self, directory: Path, after: int) -> None:
        self.path = directory / "in.sock"
        self.uri = f"unix:{self.path}"
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(self.path))
        self.sock.listen(1)
        self._thread = threading.Thread(target=self._read, args=(after,))
        self._thread.start()

    def _read(self, after: int) -> None:
        conn, _ = self.sock.accept()
        with conn:
            got = 0
            while got < after and (chunk := conn.recv(min(1 << 16, after - got))):
                got += len(chunk)

    def join(self) -> None:
        self._thread.join(GUARD)
        assert not self._thread.is_alive()
        self.sock.close()
        self.path.unlink()


def full_backlog(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A ``unix:`` listener that never accepts, its backlog filled: a
    connect to it waits (the source stays in ``setup``)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)
    queued = []
    for _ in range(64):
        client = socket.socket(socket.AF_UNIX)
        client.setblocking(False)
        try:
            client.connect(str(path))
        except BlockingIOError:
            client.close()
            return listener, queued
        queued.append(client)
    raise AssertionError("the backlog never filled")


# ----- the source ----------------------------------------------------------------


@dataclass
class Outcome:
    """How a migration ended at the source."""

    status: str  # "completed", "failed" or "cancelled"
    error: BaseException | None
    expected: int  # the source's RAM checksum as the guest (the test) left it


def migrate(
    vm: Machine,
    precopy: Precopy,
    *,
    dirty_passes: int = 0,
    rng: random.Random | None = None,
    cancel_at: str | None = None,
) -> Outcome:
    """Migrates ``vm`` with ``precopy``, playing the guest: after each of
    the first ``dirty_passes`` passes it writes a few pages (so more
    passes follow). ``cancel_at`` cancels at ``"setup"``, ``"pass N"`` or
    ``"stop"`` (the source stopped: the device phase)."""
    sums = [vm.ram.checksum()]
    pages = rng or random.Random(0)

    def progress(kind: str, n: int) -> None:
        if kind == "pass" and n <= dirty_passes:
            for page in pages.sample(range(MEM // PAGE), 8):
                vm.ram.write(page * PAGE, pages.randbytes(64))
            sums.append(vm.ram.checksum())
        if cancel_at == kind or cancel_at == f"{kind} {n}":
            precopy.cancel()

    def on_stop() -> None:
        if cancel_at == "stop":
            precopy.cancel()

    try:
        vm.migrate(precopy, timeout=GUARD, progress=progress, on_stop=on_stop)
    except InterruptedError as e:
        return Outcome("cancelled", e, sums[-1])
    except Exception as e:
        return Outcome("failed", e, sums[-1])
    return Outcome("completed", None, sums[-1])


def set_run_state(vm: Machine, state: str) -> None:
    """``running`` or ``paused``, from wherever the last migration left it."""
    vm.cont()
    if state == "paused":
        vm.stop()


def assert_source_intact(vm: Machine, outcome: Outcome, before: str, what: str) -> None:
    """A failed or cancelled source is back where it was; a completed one is
    ``postmigrate``; either way its RAM is as the guest left it."""
    want = "postmigrate" if outcome.status == "completed" else before
    assert vm.status == want, f"{what}: {outcome}"
    assert vm.ram.checksum() == outcome.expected, f"{what}: the source's RAM changed"
    assert not vm.ram.is_logging("migration"), f"{what}: dirty logging left on"


# ----- QMP in this process ------------------------------------------------------


@dataclass
class Monitored:
    vm: Machine
    qmp: QMPSocket
    monitor: MachineMonitor


@contextlib.contextmanager
def monitored(**machine: Any) -> Iterator[Monitored]:
    """A machine of ``MEM`` bytes, its RAM filled (every page is sent
    whole), behind a QMP monitor in this process."""
    directory = tempfile.mkdtemp(prefix="flt")  # a UNIX socket path must be short
    try:
        with Machine(memory=MEM, **machine) as vm:
            vm.ram.fill(0, MEM, 0x5A)
            monitor = MachineMonitor(vm)
            server = QMPServer(monitor.register(CommandRegistry()), version=monitor_version())
            monitor.attach(server)
            with server.start_in_thread(f"{directory}/qmp.sock"):
                with QMPSocket(f"{directory}/qmp.sock", negotiate=True, timeout=GUARD) as qmp:
                    yield Monitored(vm, qmp, monitor)
                monitor.jobs.wait_all(GUARD)
    finally:
        shutil.rmtree(directory)


def qmp_migrate(m: Monitored, uri: str, **arguments: Any) -> dict[str, Any]:
    """``migrate`` with the ``events`` capability; returns ``query-migrate``
    once the migration ended."""
    caps = [{"capability": "events", "state": True}, *arguments.pop("capabilities", [])]
    m.qmp.execute("migrate", uri=uri, capabilities=caps, **arguments)
    while m.qmp.next_event("MIGRATION")["data"]["status"] not in ENDED:
        pass
    m.monitor.jobs.wait_all(GUARD)
    return dict(m.qmp.execute("query-migrate"))


def wait_for(m: Monitored, what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Polls ``query-migrate`` until ``ok``; the deadline only guards a hang."""
    deadline = time.monotonic() + GUARD
    while not ok(info := m.qmp.execute("query-migrate")):
        assert info["status"] not in ENDED, f"{what}: {info}"
        assert time.monotonic() < deadline, f"{what}: {info}"
        time.sleep(0.005)
    return dict(info)


# ----- x-vmkit-fault: the parameter ----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("cut", "Invalid parameter type for 'x-vmkit-fault', expected: object"),
        ({"at": {"offset": 1}}, "Parameter 'x-vmkit-fault.action' is missing"),
        ({"action": "cut"}, "Parameter 'x-vmkit-fault.at' is missing"),
        (
            {"action": 1, "at": {}},
            "Invalid parameter type for 'x-vmkit-fault.action', expected: string",
        ),
        (
            {"action": "explode", "at": {"offset": 1}},
            "Parameter 'x-vmkit-fault.action' does not accept value 'explode'",
        ),
        (
            {"action": "cut", "at": 5},
            "Invalid parameter type for 'x-vmkit-fault.at', expected: object",
        ),
        (
            {"action": "cut", "at": {}},
            "Parameter 'x-vmkit-fault.at' expects exactly one of offset, pass, section",
        ),
        (
            {"action": "cut", "at": {"offset": 1, "pass": 2}},
            "Parameter 'x-vmkit-fault.at' expects exactly one of offset, pass, section",
        ),
        ({"action": "cut", "at": {"byte": 1}}, "Parameter 'x-vmkit-fault.at.byte' is unexpected"),
        (
            {"action": "cut", "at": {"offset": -1}},
            "Parameter 'x-vmkit-fault.at.offset' expects a value between 0 and 18446744073709551615",  # noqa: E501
        ),
        (
            {"action": "cut", "at": {"offset": "1"}},
            "Invalid parameter type for 'x-vmkit-fault.at.offset', expected: integer",
        ),
        (
            {"action": "cut", "at": {"pass": 0}},
            "Parameter 'x-vmkit-fault.at.pass' expects a value between 1 and 4294967295",
        ),
        (
            {"action": "cut", "at": {"section": ""}},
            "Parameter 'x-vmkit-fault.at.section' expects a section idstr",
        ),
        (
            {"action": "cut", "at": {"section": 3}},
            "Invalid parameter type for 'x-vmkit-fault.at.section', expected: string",
        ),
        (
            {"action": "cut", "at": {"pass": 1}, "delay-ms": 5},
            "Parameter 'x-vmkit-fault.delay-ms' is unexpected",
        ),
        (
            {"action": "delay", "at": {"pass": 1}, "length": 5},
            "Parameter 'x-vmkit-fault.length' is unexpected",
        ),
        ({"action": "delay", "at": {"pass": 1}}, "Parameter 'x-vmkit-fault.delay-ms' is missing"),
        (
            {"action": "corrupt", "at": {"pass": 1}, "length": 0},
            "Parameter 'x-vmkit-fault.length' expects a value between 1 and 18446744073709551615",
        ),
        (
            {"action": "drop", "at": {"pass": 1}, "length": True},
            "Invalid parameter type for 'x-vmkit-fault.length', expected: integer",
        ),
    ],
)
def test_a_bad_fault_is_refused_whole(fault: object, message: str) -> None:
    settings = MigrationSettings()
    before = settings.parameters()
    with pytest.raises(SettingsError) as e:
        settings.set_parameters({"max-bandwidth": 1, migration_fault.NAME: fault})
    assert str(e.value) == message
    assert settings.parameters() == before, "a refused change changes nothing"


def test_a_fault_is_shown_while_set_and_given_inline_for_one_migration(tmp_path: Path) -> None:
    with monitored() as m:
        params = m.qmp.execute("query-migrate-parameters")
        assert migration_fault.NAME not in params, "QEMU's parameters only, while none is set"
        fault = {"action": "corrupt", "at": {"section": "ram"}}
        m.qmp.execute("migrate-set-parameters", **{migration_fault.NAME: fault})
        shown = m.qmp.execute("query-migrate-parameters")[migration_fault.NAME]
        assert shown == {**fault, "length": 1}, "in full, the default filled in"
        m.qmp.execute("migrate-set-parameters", **{migration_fault.NAME: None})
        assert migration_fault.NAME not in m.qmp.execute("query-migrate-parameters")
        bad = m.qmp.command(
            "migrate", uri="unix:/x", parameters={migration_fault.NAME: {"action": "cut"}}
        )
        assert bad["error"] == {
            "class": "GenericError",
            "desc": "Parameter 'parameters.x-vmkit-fault.at' is missing",
        }
        # Inline: this migration only. A cut where the RAM section begins.
        dest = Destination(tmp_path)
        info = qmp_migrate(
            m,
            dest.uri,
            parameters={migration_fault.NAME: {"action": "cut", "at": {"section": "ram"}}},
        )
        dest.join()
        assert info["status"] == "failed" and "Broken pipe" in info["error-desc"], info
        report = info[migration_fault.NAME]
        assert report["action"] == "cut" and report["fired"] is True
        assert 0 < report["armed-at"] < 100, "after the header and configuration"
        assert isinstance(dest.error, errors.StreamError), dest.error
        assert migration_fault.NAME not in m.qmp.execute("query-migrate-parameters")
        # The next migration has none.
        dest = Destination(tmp_path)
        info = qmp_migrate(m, dest.uri)
        dest.join()
        assert info["status"] == "completed" and migration_fault.NAME not in info
        assert dest.ram.checksum() == m.vm.ram.checksum()


# ----- cancel at every phase ---------------------------------------------------


@pytest.mark.parametrize("phase", ["setup", "active", "pre-switchover", "device"])
def test_migrate_cancel_at_every_phase_leaves_the_source_as_it_was(
    tmp_path: Path, phase: str
) -> None:
    """``migrate_cancel`` in ``setup`` (connecting to a destination whose
    backlog is full), ``active`` (the stream held by an injected delay in
    pass 1), ``pre-switchover`` (``pause-before-switchover``) and
    ``device`` (held in the final pass, the source stopped)."""
    with monitored() as m:
        m.vm.cont()
        before = m.vm.ram.checksum()
        arguments: dict[str, Any] = {"capabilities": [{"capability": "events", "state": True}]}
        hold = {"action": "delay", "delay-ms": 3_600_000}
        dest: Destination | None = None
        backlog: tuple[socket.socket, list[socket.socket]] | None = None
        if phase == "setup":
            backlog = full_backlog(tmp_path / "in.sock")
            uri = f"unix:{tmp_path / 'in.sock'}"
        else:
            dest = Destination(tmp_path)
            uri = dest.uri
        if phase == "active":
            arguments["parameters"] = {migration_fault.NAME: {**hold, "at": {"pass": 1}}}
        elif phase == "pre-switchover":
            arguments["capabilities"].append(
                {"capability": "pause-before-switchover", "state": True}
            )
        elif phase == "device":
            # Nothing dirties the idle guest: pass 2 is the final one.
            arguments["parameters"] = {migration_fault.NAME: {**hold, "at": {"pass": 2}}}
        m.qmp.execute("migrate", uri=uri, **arguments)
        if phase in ("active", "device"):
            info = wait_for(m, phase, lambda i: i.get(migration_fault.NAME, {}).get("fired"))
        else:
            info = wait_for(m, phase, lambda i: i["status"] == phase)
        assert info["status"] == phase, info
        stopped = phase in ("pre-switchover", "device")
        assert m.qmp.execute("query-status")["status"] == (
            "finish-migrate" if stopped else "running"
        )
        m.qmp.execute("migrate_cancel")
        statuses = []
        while not statuses or statuses[-1] not in ENDED:
            statuses.append(m.qmp.next_event("MIGRATION")["data"]["status"])
        assert statuses[-2:] == ["cancelling", "cancelled"], statuses
        m.monitor.jobs.wait_all(GUARD)
        info = m.qmp.execute("query-migrate")
        assert info["status"] == "cancelled" and "error-desc" not in info, info
        assert m.qmp.execute("query-status")["status"] == "running", "back where it was"
        m.vm.stop()
        assert m.vm.ram.checksum() == before
        assert not m.vm.ram.is_logging("migration")
        if dest is not None:
            dest.join()
            assert dest.stats is None and dest.error is not None, "nothing partial loads"
        if backlog is not None:
            for s in (backlog[0], *backlog[1]):
                s.close()


# ----- the sink fails ----------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_disk_fails_the_migration_and_the_source_runs_on() -> None:
    with monitored() as m:
        m.vm.cont()
        before = m.vm.ram.checksum()
        info = qmp_migrate(m, "file:/dev/full")
        assert info["status"] == "failed", info
        assert "No space left on device" in info["error-desc"], info
        assert m.qmp.execute("query-status")["status"] == "running"
        m.vm.stop()
        assert m.vm.ram.checksum() == before


# ----- destinations that refuse ------------------------------------------------------


def test_a_destination_of_another_machine_type_refuses_and_the_source_fails(
    tmp_path: Path,
) -> None:
    with Machine(memory=MEM) as vm:
        vm.ram.fill(0, MEM, 0x33)
        vm.cont()
        dest = Destination(tmp_path, machine_type="pc-i440fx-other")
        outcome = migrate(vm, Precopy(dest.uri))
        dest.join()
        assert outcome.status == "failed" and isinstance(outcome.error, OSError), outcome
        assert_source_intact(vm, outcome, "running", "wrong machine type")
        assert isinstance(dest.error, errors.StreamError) and "pc-i440fx-other" in str(
            dest.error
        ), dest.error


def register_counter(uniq: Callable[[str], str]) -> str:
    name = uniq("counter")
    qom.register_type(
        name, "device", vmstate=VMStateDescription(name, [VMStateField("n", "uint64")])
    )
    return name


def test_a_destination_without_the_sources_device_stays_inmigrate(
    tmp_path: Path, uniq: Callable[[str], str]
) -> None:
    """The device section comes last, after the source stopped and sent
    everything: the destination (a ``vmkit run --incoming`` without that
    device) refuses it and never runs. Without a return path the source
    cannot hear of it (nor can QEMU's): it ends ``completed`` in
    ``postmigrate`` with its state whole, and ``cont`` runs it again."""
    name = register_counter(uniq)
    with incoming_vmkit(tmp_path) as (_, d, uri), Machine(memory=MEM) as vm:
        vm.device_add(name, id="c").data["n"] = 7
        vm.ram.fill(0, MEM, 0x44)
        vm.cont()
        precopy = Precopy(uri)
        outcome = migrate(vm, precopy)
        info = wait_dest(d)
        assert info["status"] == "failed", info
        assert "'c" in info["error-desc"] or name in info["error-desc"], info
        assert d.execute("query-status")["status"] == "inmigrate"
        assert d.command("cont")["error"]["desc"] == "Guest is waiting for an incoming migration"
        assert outcome.status == "completed", outcome
        assert_source_intact(vm, outcome, "running", "device refused")
        assert qom.resolve_path("/machine/peripheral/c").data["n"] == 7
        vm.cont()
        assert vm.status == "running", "the source runs again: nothing was lost"


def wait_dest(d: QMPSocket) -> dict[str, Any]:
    """The destination's ``query-migrate`` once its migration ended."""
    deadline = time.monotonic() + GUARD
    while (info := d.execute("query-migrate"))["status"] not in ENDED:
        assert time.monotonic() < deadline, info
        time.sleep(0.005)
    return dict(info)


@contextlib.contextmanager
def incoming_vmkit(tmp_path: Path) -> Iterator[tuple[Any, QMPSocket, str]]:
    """A ``vmkit run --incoming unix:`` destination of ``MEM`` bytes: its
    process, a QMP client of it, and the URI to migrate to."""
    stream_sock = tmp_path / "mig.sock"
    dst = start_vmkit(
        "-m", f"{MEM >> 20}", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "--workload-rate", "0",
        "--incoming", f"unix:{stream_sock}",
    )  # fmt: skip
    try:
        with QMPSocket(dst.socket, negotiate=True, timeout=GUARD) as d:
            yield dst, d, f"unix:{stream_sock}"
    finally:
        dst.stop()


def test_a_stream_cut_at_a_random_offset_leaves_the_destination_inmigrate(
    tmp_path: Path,
) -> None:
    offset = random.Random(SEED).randrange(MEM)
    what = f"seed={SEED} cut at {offset}"
    with incoming_vmkit(tmp_path) as (_, d, uri), Machine(memory=MEM) as vm:
        vm.ram.fill(0, MEM, 0x21)
        vm.cont()
        precopy = Precopy(uri)
        precopy.inject_fault("cut", offset=offset)
        outcome = migrate(vm, precopy)
        assert outcome.status == "failed", what
        assert isinstance(outcome.error, BrokenPipeError), what
        assert_source_intact(vm, outcome, "running", what)
        info = wait_dest(d)
        assert info["status"] == "failed" and "error-desc" in info, (what, info)
        assert d.execute("query-status")["status"] == "inmigrate", what


def test_a_destination_killed_mid_stream_fails_the_source(tmp_path: Path) -> None:
    with incoming_vmkit(tmp_path) as (dst, _, uri), Machine(memory=MEM) as vm:
        vm.ram.fill(0, MEM, 0x21)
        vm.cont()
        before = vm.ram.checksum()

        def kill(kind: str, n: int) -> None:
            if kind == "pass" and n == 1:
                dst.proc.kill()
                dst.proc.wait(GUARD)

        # Pass 2 comes because the test dirties a page after pass 1.
        def dirty_then_kill(kind: str, n: int) -> None:
            if kind == "pass" and n == 1:
                vm.ram.write(0, vm.ram.read(0, 8))
            kill(kind, n)

        with pytest.raises(OSError) as e:
            vm.migrate(Precopy(uri, downtime_limit_ms=0), timeout=GUARD, progress=dirty_then_kill)
        assert e.value.errno in (errno.EPIPE, errno.ECONNRESET), e.value
        assert vm.status == "running"
        assert vm.ram.checksum() == before
        assert not vm.ram.is_logging("migration")


# ----- randomized ----------------------------------------------------------------------

KINDS = (
    "clean",
    "cut-offset",
    "cut-point",
    "corrupt",
    "drop",
    "delay",
    "dest-closes",
    "dest-wrong-type",
    "cancel",
    "qmp",
)


def test_randomized_faults_lose_nothing(tmp_path: Path) -> None:
    """``RUNS`` migrations of one machine, each with a seeded random fault
    (its kind cycles, its place and size are drawn), from a running or
    paused source whose guest dirties a few pages over 0-2 passes. Runs
    of kind ``qmp`` go through QMP ``migrate`` with ``x-vmkit-fault``."""
    print(f"fault injection seed: {SEED} (VMKIT_FAULT_SEED replays it)")
    rng = random.Random(SEED)
    seen: dict[str, int] = {}
    with monitored() as m:
        vm = m.vm
        for i in range(RUNS):
            kind = KINDS[i % len(KINDS)]
            state = rng.choice(["running", "paused"])
            set_run_state(vm, state)
            dirty = rng.randint(0, 2) if state == "running" else 0
            passes = dirty + 2  # the last is the final pass, after the stop
            what = f"seed={SEED} run={i} {kind} from {state}, {dirty} dirty passes"
            if kind == "qmp":
                status = qmp_run(m, tmp_path, rng, what)
            else:
                status = direct_run(vm, tmp_path, rng, kind, dirty, passes, what, state)
            seen[f"{kind}:{status}"] = seen.get(f"{kind}:{status}", 0) + 1
    print(f"outcomes: {sorted(seen.items())}")
    for kind in KINDS:
        assert any(k.startswith(f"{kind}:") for k in seen), (kind, seen)


def direct_run(
    vm: Machine,
    tmp_path: Path,
    rng: random.Random,
    kind: str,
    dirty: int,
    passes: int,
    what: str,
    state: str,
) -> str:
    """One run through :meth:`Machine.migrate`; returns its status."""
    dest: Destination | Closer
    if kind == "dest-closes":
        after = rng.randrange(MEM // 2)
        what += f", closes after {after}"
        dest = Closer(tmp_path, after)
    elif kind == "dest-wrong-type":
        dest = Destination(tmp_path, machine_type="pc-other")
    else:
        dest = Destination(tmp_path)
    precopy = Precopy(dest.uri, downtime_limit_ms=0)
    cancel_at = None
    if kind == "cut-offset":
        offset = rng.randrange(MEM)
        what += f", cut at {offset}"
        precopy.inject_fault("cut", offset=offset)
    elif kind == "cut-point":
        point = rng.choice(["ram", *range(1, passes + 1)])
        what += f", cut at {point}"
        if point == "ram":
            precopy.inject_fault("cut", section="ram")
        else:
            precopy.inject_fault("cut", pass_number=int(point))
    elif kind in ("corrupt", "drop"):
        offset, length = rng.randrange(MEM), rng.randint(1, 64 if kind == "corrupt" else 8192)
        what += f", {length} bytes at {offset}"
        precopy.inject_fault(kind, offset=offset, length=length)
    elif kind == "delay":
        offset, ms = rng.randrange(MEM), rng.randint(0, 3)
        what += f", {ms} ms at {offset}"
        precopy.inject_fault("delay", offset=offset, delay_ms=ms)
    elif kind == "cancel":
        cancel_at = rng.choice(["setup", "stop", *(f"pass {n}" for n in range(1, passes))])
        what += f", cancel at {cancel_at}"
    outcome = migrate(vm, precopy, dirty_passes=dirty, rng=rng, cancel_at=cancel_at)
    dest.join()
    assert_source_intact(vm, outcome, state, what)
    report = precopy.fault()
    expected = {
        "clean": ("completed",),
        "delay": ("completed",),
        # The source cannot tell, unless the destination refused the
        # damage and closed the connection while the source still sent.
        "corrupt": ("completed", "failed"),
        "drop": ("completed", "failed"),
        "cancel": ("cancelled",),
    }.get(kind, ("failed",))
    assert outcome.status in expected, f"{what}: {outcome}"
    if outcome.status == "failed":
        assert isinstance(outcome.error, OSError), f"{what}: {outcome}"
    if kind.startswith("cut"):
        assert isinstance(outcome.error, BrokenPipeError), f"{what}: {outcome}"
        assert report is not None and report["fired"], f"{what}: {report}"
    elif kind.startswith("dest"):
        assert isinstance(outcome.error, OSError), f"{what}: {outcome}"
    if outcome.status != "completed" and isinstance(dest, Destination):
        assert dest.stats is None and dest.error is not None, f"{what}: a partial stream loaded"
    elif kind in ("clean", "delay"):
        assert isinstance(dest, Destination) and dest.stats is not None, f"{what}: {dest.error}"
        assert dest.ram.checksum() == outcome.expected, f"{what}: the destination differs"
    elif isinstance(dest, Destination) and dest.stats is not None:
        # A corruption or a gap inside page contents passes unnoticed.
        assert report is not None and report["fired"], what
    return outcome.status


def qmp_run(m: Monitored, tmp_path: Path, rng: random.Random, what: str) -> str:
    """One run through QMP ``migrate`` with a random ``x-vmkit-fault``
    (no guest writes: passes 1 and 2, the final one)."""
    before = m.vm.status
    checksum = m.vm.ram.checksum()
    action = rng.choice(["cut", "corrupt", "drop", "delay"])
    at: dict[str, Any] = rng.choice(
        [{"offset": rng.randrange(MEM)}, {"pass": rng.randint(1, 2)}, {"section": "ram"}]
    )
    fault: dict[str, Any] = {"action": action, "at": at}
    if action == "delay":
        fault["delay-ms"] = rng.randint(0, 3)
    elif action != "cut":
        fault["length"] = rng.randint(1, 64)
    what += f", {fault}"
    dest = Destination(tmp_path)
    info = qmp_migrate(m, dest.uri, parameters={migration_fault.NAME: fault, "downtime-limit": 0})
    dest.join()
    status = str(info["status"])
    assert info[migration_fault.NAME]["fired"], f"{what}: {info}"
    if action == "cut":
        assert status == "failed" and "Broken pipe" in info["error-desc"], f"{what}: {info}"
    elif action == "delay":
        assert status == "completed", f"{what}: {info}"
        assert dest.stats is not None and dest.ram.checksum() == checksum, what
    else:  # the destination may refuse the damage while the source sends
        assert status in ("completed", "failed"), f"{what}: {info}"
    if status == "failed":
        assert dest.error is not None, f"{what}: the destination loaded a partial stream"
        assert m.vm.status == before, what
    else:
        assert m.vm.status == "postmigrate", what
    assert m.vm.ram.checksum() == checksum, f"{what}: the source's RAM changed"
    assert not m.vm.ram.is_logging("migration"), what
    return status


def test_a_deferred_destination_may_report_what_it_does_not_model(
    tmp_path: Path, uniq: Callable[[str], str]
) -> None:
    """``migrate-incoming``'s ``x-vmkit-unmodelled: report`` (vmkit's
    extension, for streams from a real QEMU) takes the section of a device
    the destination lacks and lists it, instead of refusing the stream."""
    name = register_counter(uniq)
    sock = tmp_path / "in.sock"
    dst = start_vmkit(
        "-m", f"{MEM >> 20}", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "-S", "--incoming", "defer"
    )  # fmt: skip
    try:
        with QMPSocket(dst.socket, negotiate=True) as d, Machine(memory=MEM) as vm:
            bad = d.command("migrate-incoming", uri=f"unix:{sock}", **{"x-vmkit-unmodelled": "x"})
            assert bad["error"]["class"] == "GenericError"
            d.execute("migrate-incoming", uri=f"unix:{sock}", **{"x-vmkit-unmodelled": "report"})
            vm.device_add(name, id="c").data["n"] = 7
            outcome = migrate(vm, Precopy(f"unix:{sock}"))
            info = wait_dest(d)
            assert info["status"] == "completed", info
            assert outcome.status == "completed"
            (section,) = info["x-vmkit-unmodelled"]["sections"]
            assert name in section["vmsd-name"] or name in section["idstr"], section
            assert d.execute("query-status")["status"] == "paused"
    finally:
        dst.stop()


def test_with_return_path_a_refused_device_fails_the_source(
    tmp_path: Path, uniq: Callable[[str], str]
) -> None:
    """QEMU's ``return-path``: the destination answers whether it loaded
    the stream, so a destination that refuses a device section fails the
    source, which runs on with its state whole; exactly one side runs."""
    name = register_counter(uniq)
    with incoming_vmkit(tmp_path) as (_, d, uri), Machine(memory=MEM) as vm:
        vm.device_add(name, id="c").data["n"] = 7
        vm.ram.fill(0, MEM, 0x45)
        vm.cont()
        outcome = migrate(vm, Precopy(uri, return_path=True))
        info = wait_dest(d)
        assert info["status"] == "failed", info
        assert outcome.status == "failed", outcome
        assert "failed to load the stream (status 1)" in str(outcome.error), outcome
        assert_source_intact(vm, outcome, "running", "device refused, return path")
        assert qom.resolve_path("/machine/peripheral/c").data["n"] == 7
        assert d.execute("query-status")["status"] == "inmigrate"


def test_with_return_path_a_completed_migration_leaves_one_side_running(tmp_path: Path) -> None:
    """With ``return-path`` over QMP, the source completes once the
    destination said it loaded the stream: the source ends ``postmigrate``
    and the destination runs (autostart)."""
    with incoming_vmkit(tmp_path) as (_, d, uri), Machine(memory=MEM) as vm:
        vm.ram.fill(0, MEM, 0x46)
        vm.cont()
        outcome = migrate(vm, Precopy(uri, return_path=True))
        assert outcome.status == "completed", outcome
        assert vm.status == "postmigrate"
        assert wait_dest(d)["status"] == "completed"
