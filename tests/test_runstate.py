"""Run states: QEMU's names and transition table, and the states a
:class:`~vmkit.machine.Machine` passes through on cont/stop, save, restore
and shutdown, including when a save or a restore fails."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from vmkit import errors, qom
from vmkit.machine import Machine, MachineStateError
from vmkit.migration import VMStateDescription, VMStateField
from vmkit.runstate import (
    TRANSITIONS,
    RunState,
    RunStateError,
    RunStateMachine,
    can_transition,
)

# QAPI's RunState members, in the schema's order.
QAPI_NAMES = [
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
]

# QEMU's runstate_transitions_def, one "from -> to" pair per entry, written
# out independently of vmkit.runstate's form of it.
QEMU_PAIRS = """
prelaunch inmigrate
debug running
debug finish-migrate
debug prelaunch
inmigrate internal-error
inmigrate io-error
inmigrate paused
inmigrate running
inmigrate shutdown
inmigrate suspended
inmigrate watchdog
inmigrate guest-panicked
inmigrate finish-migrate
inmigrate prelaunch
inmigrate postmigrate
inmigrate colo
internal-error paused
internal-error finish-migrate
internal-error prelaunch
io-error running
io-error finish-migrate
io-error prelaunch
paused running
paused finish-migrate
paused postmigrate
paused prelaunch
paused colo
postmigrate running
postmigrate finish-migrate
postmigrate prelaunch
prelaunch running
prelaunch finish-migrate
finish-migrate running
finish-migrate paused
finish-migrate postmigrate
finish-migrate prelaunch
finish-migrate colo
finish-migrate internal-error
finish-migrate io-error
finish-migrate shutdown
finish-migrate suspended
finish-migrate watchdog
finish-migrate guest-panicked
restore-vm running
restore-vm prelaunch
colo running
colo prelaunch
colo shutdown
running debug
running internal-error
running io-error
running paused
running finish-migrate
running restore-vm
running save-vm
running shutdown
running watchdog
running guest-panicked
running colo
save-vm running
shutdown paused
shutdown finish-migrate
shutdown prelaunch
shutdown colo
debug suspended
running suspended
suspended running
suspended finish-migrate
suspended prelaunch
suspended colo
watchdog running
watchdog finish-migrate
watchdog prelaunch
watchdog colo
guest-panicked running
guest-panicked finish-migrate
guest-panicked prelaunch
"""
ALLOWED = {tuple(line.split()) for line in QEMU_PAIRS.strip().splitlines()}


def test_the_states_are_qapis() -> None:
    assert [s.value for s in RunState] == QAPI_NAMES
    assert set(TRANSITIONS) == set(RunState)
    assert len(ALLOWED) == 77


def test_states_compare_and_serialise_as_their_names() -> None:
    assert RunState.FINISH_MIGRATE == "finish-migrate"
    assert RunState("guest-panicked") is RunState.GUEST_PANICKED
    assert f"{RunState.PAUSED}" == "paused"
    assert json.dumps({"status": RunState.POSTMIGRATE}) == '{"status": "postmigrate"}'
    with pytest.raises(ValueError):
        RunState("stopped")


@pytest.mark.parametrize(("old", "new"), list(itertools.product(QAPI_NAMES, repeat=2)))
def test_every_transition_follows_qemus_table(old: str, new: str) -> None:
    seen: list[tuple[str, str]] = []
    sm = RunStateMachine(old)
    sm.add_listener(lambda o, n: seen.append((o, n)))
    allowed = (old, new) in ALLOWED
    assert can_transition(old, new) == (allowed or old == new)
    if old == new:
        sm.set(new)  # no change, no listener call
        assert sm.state == old and seen == []
    elif allowed:
        sm.set(new)
        assert sm.state == new and seen == [(old, new)]
        assert all(isinstance(x, RunState) for x in seen[0])
    else:
        with pytest.raises(RunStateError) as info:
            sm.set(new)
        assert (info.value.old, info.value.new) == (old, new)
        assert str(info.value) == f"invalid run state transition: '{old}' -> '{new}'"
        assert sm.state == old and seen == [], "a refused change changes nothing"


def test_run_state_errors_are_machine_state_errors() -> None:
    assert issubclass(RunStateError, MachineStateError)
    assert issubclass(MachineStateError, errors.VmkitError)
    with pytest.raises(ValueError):
        RunStateMachine().set("nonsense")


def test_listeners_are_removed_and_their_errors_propagate() -> None:
    sm = RunStateMachine()
    calls: list[str] = []

    def failing(old: RunState, new: RunState) -> None:
        calls.append(new)
        raise LookupError("listener")

    sm.add_listener(failing)
    with pytest.raises(LookupError):
        sm.set(RunState.RUNNING)
    assert sm.state == RunState.RUNNING and calls == ["running"]
    sm.remove_listener(failing)
    sm.set(RunState.PAUSED)
    assert calls == ["running"]


# ----- the machine ----------------------------------------------------------


class SaveRefusedError(Exception):
    pass


@pytest.fixture
def flaky_type(uniq: Any) -> str:
    """A device whose save function raises while its ``data['fail']`` is set."""
    name = uniq("flaky")

    def save(obj: qom.Object) -> dict[str, Any]:
        if obj.data.get("fail"):
            raise SaveRefusedError("not now")
        return {"a": 1}

    qom.register_type(
        name,
        "device",
        vmstate=VMStateDescription(name, [VMStateField("a", "uint8")]),
        vmstate_save=save,
    )
    return name


class Recorder:
    """Records the machine's transitions, and whether the workload was
    paused at each (the vCPUs must be stopped in ``finish-migrate``)."""

    def __init__(self, vm: Machine) -> None:
        self.vm = vm
        self.seen: list[tuple[str, str]] = []
        self.workload_paused: dict[str, bool] = {}
        vm.add_state_listener(self)

    def __call__(self, old: RunState, new: RunState) -> None:
        self.seen.append((old, new))
        if self.vm.workload is not None and new != RunState.SHUTDOWN:
            self.workload_paused[new] = self.vm.workload.paused

    def take(self) -> list[tuple[str, str]]:
        seen, self.seen = self.seen, []
        return seen


@pytest.mark.usefixtures("no_machine")
def test_saving_a_running_machine_migrates_then_runs_again(tmp_path: Path) -> None:
    with Machine(memory="4M", workload_rate=1 << 20) as vm:
        rec = Recorder(vm)
        vm.cont()
        rec.take()
        vm.save(tmp_path / "s")
        assert rec.take() == [
            ("running", "finish-migrate"),
            ("finish-migrate", "postmigrate"),
            ("postmigrate", "running"),
        ]
        assert rec.workload_paused["finish-migrate"] is True
        assert rec.workload_paused["running"] is False
        assert vm.status == "running" and vm.running


@pytest.mark.usefixtures("no_machine")
@pytest.mark.parametrize("start", ["prelaunch", "paused", "postmigrate"])
def test_saving_a_stopped_machine_ends_in_postmigrate(tmp_path: Path, start: str) -> None:
    with Machine(memory="4M") as vm:
        if start != "prelaunch":
            vm.cont()
            vm.stop()
        if start == "postmigrate":
            vm.save(tmp_path / "first")
        assert vm.status == start
        rec = Recorder(vm)
        vm.save(tmp_path / "s")
        assert rec.take() == [(start, "finish-migrate"), ("finish-migrate", "postmigrate")]
        assert vm.status == RunState.POSTMIGRATE
        vm.cont()  # a migrated source may run again, as after QEMU's cont
        assert rec.take() == [("postmigrate", "running")]


@pytest.mark.usefixtures("no_machine")
@pytest.mark.parametrize("start", ["prelaunch", "running", "paused", "postmigrate"])
@pytest.mark.parametrize("failure", ["hook", "oserror"])
def test_a_failed_save_returns_to_the_state_before(
    tmp_path: Path, flaky_type: str, start: str, failure: str
) -> None:
    with Machine(memory="4M", workload_rate=1 << 20) as vm:
        dev = vm.device_add(flaky_type, id="f")
        if start != "prelaunch":
            vm.cont()
        if start in ("paused", "postmigrate"):
            vm.stop()
        if start == "postmigrate":
            vm.save(tmp_path / "first")
        assert vm.status == start
        rec = Recorder(vm)
        if failure == "hook":
            dev.data["fail"] = True
            with pytest.raises(SaveRefusedError, match="not now"):
                vm.save(tmp_path / "s")
        else:
            with pytest.raises(OSError):
                vm.save(tmp_path / "missing-dir" / "s")
        assert rec.take() == [(start, "finish-migrate"), ("finish-migrate", start)]
        assert vm.status == start
        if start == "running":
            assert vm.workload is not None and not vm.workload.paused
        dev.data["fail"] = False
        vm.save(tmp_path / "s")  # the machine is usable again
        assert vm.status == ("running" if start == "running" else "postmigrate")


@pytest.mark.usefixtures("no_machine")
def test_restoring_is_an_incoming_migration(tmp_path: Path) -> None:
    stream = tmp_path / "s"
    with Machine(memory="4M") as vm:
        vm.save(stream)
    with Machine(memory="4M") as vm:
        rec = Recorder(vm)
        vm.restore(stream)
        assert rec.take() == [("prelaunch", "inmigrate"), ("inmigrate", "paused")]
        vm.cont()
        vm.stop()
        rec.take()
        # A machine that has run is reset to prelaunch first.
        vm.restore(stream)
        assert rec.take() == [
            ("paused", "prelaunch"),
            ("prelaunch", "inmigrate"),
            ("inmigrate", "paused"),
        ]
        vm.save(tmp_path / "again")
        rec.take()
        vm.restore(stream)
        assert rec.take()[0] == ("postmigrate", "prelaunch")
        assert vm.status == "paused"


@pytest.mark.usefixtures("no_machine")
def test_a_failed_restore_stays_in_inmigrate(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    with Machine(memory="4M") as vm:
        vm.save(good)
    bad.write_bytes(good.read_bytes()[:100])
    with Machine(memory="4M") as vm:
        rec = Recorder(vm)
        with pytest.raises(errors.MigrationError):
            vm.restore(bad)
        assert rec.take() == [("prelaunch", "inmigrate")]
        with pytest.raises(MachineStateError, match="inmigrate"):
            vm.cont()
        with pytest.raises(MachineStateError, match="cannot save in state 'inmigrate'"):
            vm.save(tmp_path / "x")
        assert not (tmp_path / "x").exists()
        assert rec.take() == [] and vm.status == "inmigrate"
        vm.restore(good)  # a second try starts from inmigrate itself
        assert rec.take() == [("inmigrate", "paused")]
        vm.cont()
        assert vm.status == "running"


@pytest.mark.usefixtures("no_machine")
def test_restore_is_refused_while_running(tmp_path: Path) -> None:
    with Machine(memory="4M") as vm:
        vm.save(tmp_path / "s")
        vm.cont()
        rec = Recorder(vm)
        with pytest.raises(MachineStateError, match="cannot restore in state 'running'"):
            vm.restore(tmp_path / "s")
        assert rec.take() == [] and vm.status == "running"


@pytest.mark.usefixtures("no_machine")
def test_shutdown_of_a_running_machine(tmp_path: Path) -> None:
    with Machine(memory="4M", workload_rate=1 << 20) as vm:
        vm.cont()
        rec = Recorder(vm)
        vm.shutdown()
        assert rec.take() == [("running", "shutdown")]
        assert vm.status == "shutdown" and vm.shut_down and not vm.running
        vm.shutdown()  # again: nothing happens
        assert rec.take() == []
        for refused in (vm.cont, lambda: vm.save(tmp_path / "s")):
            with pytest.raises(MachineStateError, match="shut down"):
                refused()
        vm.stop()  # not running: nothing to do, as QMP stop
        assert vm.status == "shutdown"


@pytest.mark.usefixtures("no_machine")
def test_shutdown_of_a_stopped_machine_keeps_its_state(tmp_path: Path) -> None:
    with Machine(memory="4M") as vm:
        vm.save(tmp_path / "s")
        vm.cont()
        vm.stop()
        rec = Recorder(vm)
        vm.shutdown()
        assert rec.take() == [] and vm.status == "paused" and vm.shut_down
        for refused in (
            vm.cont,
            lambda: vm.save(tmp_path / "t"),
            lambda: vm.restore(tmp_path / "s"),
        ):
            with pytest.raises(MachineStateError, match="shut down"):
                refused()
        assert rec.take() == [] and vm.status == "paused"


@pytest.mark.usefixtures("no_machine")
def test_a_listener_that_fails_on_finish_migrate_does_not_strand_the_machine(
    tmp_path: Path,
) -> None:
    with Machine(memory="4M", workload_rate=1 << 20) as vm:
        vm.cont()

        def refuse(old: RunState, new: RunState) -> None:
            if new == RunState.FINISH_MIGRATE:
                raise LookupError("listener refused")

        vm.add_state_listener(refuse)
        with pytest.raises(LookupError):
            vm.save(tmp_path / "s")
        assert vm.status == "running"
        assert vm.workload is not None and not vm.workload.paused
        vm.remove_state_listener(refuse)
