"""Run states: QEMU's names and its table of allowed transitions.

:class:`RunState` holds the values of QEMU's QAPI ``RunState`` enum, the
``status`` that ``query-status`` reports. It is a :class:`~enum.StrEnum`,
so a state compares equal to its QAPI name (``RunState.PAUSED ==
"paused"``) and serialises as it.

:data:`TRANSITIONS` says, for every state, which states may follow it; it
holds the same pairs as QEMU's transition table (``runstate_transitions_def``
in ``system/runstate.c``, QEMU 8.x and 9.x). :class:`RunStateMachine` holds
one current state and is the only way to change it: :meth:`RunStateMachine.set`
checks the table and raises :class:`RunStateError` (naming both states) for a
transition QEMU would refuse, where QEMU aborts. Setting the current state
again is allowed and changes nothing, as in QEMU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from enum import StrEnum
from types import MappingProxyType

from vmkit import errors

__all__ = [
    "TRANSITIONS",
    "MachineStateError",
    "RunState",
    "RunStateError",
    "RunStateMachine",
    "StateListener",
    "can_transition",
]

log = logging.getLogger(__name__)


class RunState(StrEnum):
    """A run state, valued by its QAPI name."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


_S = RunState

# Grouped by the state left; a state missing from a set cannot follow it.
# Most states can go to ``prelaunch`` (a reset) and to ``finish-migrate``
# (the end of an outgoing migration).
TRANSITIONS: Mapping[RunState, frozenset[RunState]] = MappingProxyType(
    {
        _S.PRELAUNCH: frozenset({_S.RUNNING, _S.INMIGRATE, _S.FINISH_MIGRATE}),
        _S.RUNNING: frozenset(
            {
                _S.PAUSED,
                _S.SUSPENDED,
                _S.DEBUG,
                _S.FINISH_MIGRATE,
                _S.SAVE_VM,
                _S.RESTORE_VM,
                _S.SHUTDOWN,
                _S.INTERNAL_ERROR,
                _S.IO_ERROR,
                _S.WATCHDOG,
                _S.GUEST_PANICKED,
                _S.COLO,
            }
        ),
        _S.PAUSED: frozenset(
            {_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE, _S.POSTMIGRATE, _S.COLO}
        ),
        _S.SUSPENDED: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE, _S.COLO}),
        _S.DEBUG: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE, _S.SUSPENDED}),
        # Outgoing migration: running/paused/... -> finish-migrate -> postmigrate.
        _S.FINISH_MIGRATE: frozenset(
            {
                _S.POSTMIGRATE,
                _S.RUNNING,
                _S.PAUSED,
                _S.PRELAUNCH,
                _S.SUSPENDED,
                _S.SHUTDOWN,
                _S.INTERNAL_ERROR,
                _S.IO_ERROR,
                _S.WATCHDOG,
                _S.GUEST_PANICKED,
                _S.COLO,
            }
        ),
        _S.POSTMIGRATE: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE}),
        # Incoming migration: prelaunch -> inmigrate -> the source's state.
        _S.INMIGRATE: frozenset(
            {
                _S.PAUSED,
                _S.RUNNING,
                _S.SUSPENDED,
                _S.PRELAUNCH,
                _S.FINISH_MIGRATE,
                _S.POSTMIGRATE,
                _S.SHUTDOWN,
                _S.INTERNAL_ERROR,
                _S.IO_ERROR,
                _S.WATCHDOG,
                _S.GUEST_PANICKED,
                _S.COLO,
            }
        ),
        # Internal snapshots (savevm / loadvm) of a running guest.
        _S.SAVE_VM: frozenset({_S.RUNNING}),
        _S.RESTORE_VM: frozenset({_S.RUNNING, _S.PRELAUNCH}),
        _S.SHUTDOWN: frozenset({_S.PAUSED, _S.PRELAUNCH, _S.FINISH_MIGRATE, _S.COLO}),
        _S.INTERNAL_ERROR: frozenset({_S.PAUSED, _S.PRELAUNCH, _S.FINISH_MIGRATE}),
        _S.IO_ERROR: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE}),
        _S.WATCHDOG: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE, _S.COLO}),
        _S.GUEST_PANICKED: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.FINISH_MIGRATE}),
        _S.COLO: frozenset({_S.RUNNING, _S.PRELAUNCH, _S.SHUTDOWN}),
    }
)


def can_transition(old: RunState | str, new: RunState | str) -> bool:
    """Whether ``new`` may follow ``old`` (a state may always follow itself)."""
    old, new = RunState(old), RunState(new)
    return old == new or new in TRANSITIONS[old]


class MachineStateError(errors.VmkitError):
    """The operation is not allowed in the machine's current run state."""


class RunStateError(MachineStateError):
    """A run-state change that QEMU's transition table does not allow.

    :ivar old: the state the machine is in.
    :ivar new: the state that was asked for.
    """

    def __init__(self, old: RunState, new: RunState) -> None:
        super().__init__(f"invalid run state transition: '{old}' -> '{new}'")
        self.old = old
        self.new = new


StateListener = Callable[[RunState, RunState], object]


class RunStateMachine:
    """One current run state, changed only through :meth:`set`.

    Listeners are called as ``listener(old, new)`` after every change, in
    the order they were added; one that raises stops the others and the
    exception reaches the caller of :meth:`set` (the state has changed).
    Not thread-safe on its own: the owner serialises changes.
    """

    def __init__(self, initial: RunState | str = RunState.PRELAUNCH) -> None:
        self._state = RunState(initial)
        self._listeners: list[StateListener] = []

    @property
    def state(self) -> RunState:
        """The current state."""
        return self._state

    def set(self, new: RunState | str) -> None:
        """Changes to ``new``.

        :raises RunStateError: the table does not allow the change; the
            state stays as it was and no listener runs.
        """
        new = RunState(new)
        old = self._state
        if old == new:
            return
        if new not in TRANSITIONS[old]:
            raise RunStateError(old, new)
        self._state = new
        log.debug("run state %s -> %s", old, new)
        for listener in list(self._listeners):
            listener(old, new)

    def add_listener(self, listener: StateListener) -> None:
        """Calls ``listener(old, new)`` after every change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        """Stops calling ``listener``."""
        self._listeners.remove(listener)

    def __repr__(self) -> str:
        return f"<RunStateMachine {self._state}>"
