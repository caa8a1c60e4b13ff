"""One machine: its QOM board, guest RAM, memory map, workload and run state.

The board is q35-like (:func:`vmkit.devices.q35`): PC memory, the I/O
space, the PCI host bridge ``/machine/q35`` with its root bus ``pcie.0``
and the ``mch`` function at 00.0; PCI devices (``pci-testdev``) are added
with ``device_add(..., addr="03.0")`` or ``-device TYPE,addr=03.0``.

A :class:`Machine` is what ``vmkit run`` runs and what save and restore
act on. It follows QEMU's run states: a machine starts in ``prelaunch``
(like ``-S``), :meth:`~Machine.cont` runs it (the workload, standing in for
the vCPUs, writes guest RAM), :meth:`~Machine.stop` pauses it::

    from vmkit.machine import Machine

    with Machine(memory="64M", workload_rate=32 << 20, seed=7) as vm:
        vm.cont()
        ...
        vm.stop()
        vm.save("vm.stream")

    with Machine(memory="64M") as vm:      # a fresh machine of the same shape
        vm.restore("vm.stream")            # now "paused" with the saved state
        vm.cont()

Run states follow QEMU's (:mod:`vmkit.runstate`): every change goes
through QEMU's transition table. :meth:`~Machine.save` is an outgoing
migration to a file (``finish-migrate``, then ``postmigrate``; a machine
that ran runs again), :meth:`~Machine.restore` an incoming one
(``inmigrate``, then ``paused``). A restore that fails leaves the machine in
``inmigrate`` and refuses :meth:`~Machine.cont`: its RAM may be partly
loaded (devices are only changed by a restore that succeeds). Only one
machine exists per process (it lives at ``/machine`` in the QOM tree).
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any, Self

from vmkit import devices, errors, migration, qom
from vmkit._core.memory import AddressSpace, MemoryRegion, RamBlock, Workload
from vmkit._core.qom import Object
from vmkit.runstate import (
    MachineStateError,
    RunState,
    RunStateError,
    RunStateMachine,
    StateListener,
    can_transition,
)

__all__ = [
    "DEFAULT_MACHINE_TYPE",
    "RUN_STATES",
    "Machine",
    "MachineStateError",
    "RunState",
    "RunStateError",
]

log = logging.getLogger(__name__)

#: The machine type a vmkit machine names in its migration streams.
DEFAULT_MACHINE_TYPE = "pc-q35-vmkit"

#: QEMU's run states (``query-status``'s ``status``) that a vmkit machine enters.
RUN_STATES = (
    RunState.PRELAUNCH,
    RunState.RUNNING,
    RunState.PAUSED,
    RunState.FINISH_MIGRATE,
    RunState.POSTMIGRATE,
    RunState.INMIGRATE,
    RunState.SHUTDOWN,
)

# Where a save or a restore may start (vmkit's policy, within QEMU's table).
_SAVE_FROM = frozenset(
    {RunState.PRELAUNCH, RunState.RUNNING, RunState.PAUSED, RunState.POSTMIGRATE}
)
_RESTORE_FROM = frozenset(
    {RunState.PRELAUNCH, RunState.INMIGRATE, RunState.PAUSED, RunState.POSTMIGRATE}
)
# A machine in these states does not run: a failed restore (RAM partly
# loaded) or a save or snapshot in progress.
_NO_CONT = frozenset(
    {RunState.INMIGRATE, RunState.FINISH_MIGRATE, RunState.SAVE_VM, RunState.RESTORE_VM}
)

_BACKENDS = {
    "ram": "memory-backend-ram",
    "memfd": "memory-backend-memfd",
    "file": "memory-backend-file",
}


class Machine:
    """A machine with ``memory`` bytes of RAM from a memory backend.

    :param memory: RAM size, bytes or a size string (``"128M"``).
    :param backend: ``"ram"``, ``"memfd"`` or ``"file"`` (then ``mem_path``).
    :param machine_type: the name the migration stream's configuration
        carries; a restore checks it.
    :param workload_rate: bytes per second the workload writes while the
        machine runs (``None``: as fast as it can; ``0``: no workload).
    :param workload_pattern: ``"sequential"``, ``"uniform"``,
        ``"hot-set"`` or ``"zipf"``.
    :param seed: the workload's seed (same seed, same writes).
    :param pci_hotplug: whether ``pcie.0`` takes devices plugged and
        unplugged while the machine runs (QEMU's q35 root bus does not).
    """

    def __init__(
        self,
        *,
        memory: int | str = "128M",
        backend: str = "ram",
        mem_path: str | None = None,
        share: bool = False,
        machine_type: str = DEFAULT_MACHINE_TYPE,
        workload_rate: int | None = 0,
        workload_pattern: str = "uniform",
        workload_threads: int = 1,
        seed: int = 0,
        pci_hotplug: bool = True,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend '{backend}' (one of {', '.join(_BACKENDS)})")
        if qom.machine() is not None:
            raise MachineStateError("a machine already exists in this process")
        size = memory if isinstance(memory, int) else qom.parse_size(memory)
        self.machine_type = machine_type
        self._lock = threading.RLock()
        self._runstate = RunStateMachine(RunState.PRELAUNCH)
        self._shut_down = False
        self._creation_done = False
        self._workload: Workload | None = None
        self._workload_args: dict[str, Any] | None = None
        if workload_rate != 0:
            self._workload_args = {
                "rate": workload_rate,
                "pattern": workload_pattern,
                "threads": workload_threads,
                "seed": seed,
            }
        self.board: Object = qom.create_machine()
        try:
            props: dict[str, Any] = {"size": size}
            if backend == "file":
                if mem_path is None:
                    raise ValueError("the file backend needs mem_path")
                props["mem_path"] = mem_path
            if backend != "memfd":
                props["share"] = share
            self.backend: Object = qom.object_add(_BACKENDS[backend], id="pc.ram", **props)
            self.ram: RamBlock = RamBlock.of_backend(self.backend)
            board: tuple[MemoryRegion, AddressSpace, AddressSpace] = devices.q35(
                self.ram, self.board, hotplug=pci_hotplug
            )
            self.system, self.address_space, self.io_space = board
        except BaseException:
            self._teardown_qom()
            raise

    # ----- run state ---------------------------------------------------------

    def creation_done(self) -> None:
        """Ends cold-plugging: devices added from now on are hot-plugged
        (their ``hotplugged`` property is true), as after QEMU's machine
        init. The first :meth:`cont` does it too."""
        if not self._creation_done:
            qom.machine_creation_done()
            self._creation_done = True

    @property
    def status(self) -> RunState:
        """The run state, as QEMU's ``query-status`` names it."""
        return self._runstate.state

    @property
    def running(self) -> bool:
        """Whether the guest runs (``query-status``'s ``running``)."""
        return self._runstate.state == RunState.RUNNING

    @property
    def shut_down(self) -> bool:
        """Whether :meth:`shutdown` has run (QEMU's process would have exited)."""
        return self._shut_down

    def add_state_listener(self, listener: StateListener) -> None:
        """Calls ``listener(old, new)`` after every run-state change."""
        self._runstate.add_listener(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        """Stops calling ``listener``."""
        self._runstate.remove_listener(listener)

    def _check_not_shut_down(self) -> None:
        if self._shut_down:
            raise MachineStateError("the machine has been shut down")

    def cont(self) -> None:
        """Runs the machine (QMP ``cont``): the workload starts or resumes.

        :raises MachineStateError: after a failed restore (``inmigrate``),
            during a save, once shut down, or where QEMU's table has no
            way to ``running`` (:class:`RunStateError`).
        """
        with self._lock:
            self._check_not_shut_down()
            status = self.status
            if status == RunState.RUNNING:
                return
            if status in _NO_CONT:
                raise MachineStateError(f"the machine cannot run in state '{status}'")
            if not can_transition(status, RunState.RUNNING):
                raise RunStateError(status, RunState.RUNNING)
            self.creation_done()
            self._resume_workload()
            self._runstate.set(RunState.RUNNING)

    def stop(self) -> None:
        """Pauses the machine (QMP ``stop``): the workload pauses."""
        with self._lock:
            if self.status != RunState.RUNNING:
                return
            self._pause_workload()
            self._runstate.set(RunState.PAUSED)

    def _resume_workload(self) -> None:
        if self._workload_args is None:
            return
        if self._workload is None:
            self._workload = Workload([self.ram], **self._workload_args)
        else:
            self._workload.resume()

    def _pause_workload(self) -> None:
        if self._workload is not None:
            self._workload.pause()

    @property
    def workload(self) -> Workload | None:
        """The workload, once the machine has run."""
        return self._workload

    # ----- devices -----------------------------------------------------------

    def device_add(self, type_name: str, /, id: str | None = None, **props: Any) -> Object:
        """Adds a device to the machine (``-device`` / QMP ``device_add``)."""
        return qom.device_add(type_name, id=id, **props)

    def device_del(self, id_or_path: str) -> list[tuple[str, str | None]]:
        """Removes a device (QMP ``device_del``), with the devices on its
        buses; returns the ``(path, id)`` of each device removed, the
        device itself last (see :func:`vmkit.qom.device_del`)."""
        return qom.device_del(id_or_path)

    def system_reset(self) -> None:
        """Resets every device of the board (QMP ``system_reset``): PCI
        functions unmap their BARs and clear Command, the ECAM window goes
        until the guest enables it again. The run state does not change."""
        with self._lock:
            self._check_not_shut_down()
            qom.reset_tree(self.board)

    # ----- save and restore --------------------------------------------------

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        open_timeout: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> dict[str, int]:
        """Saves RAM and every device with a VMState to ``path``.

        This is QEMU's outgoing migration to a file: the machine stops in
        ``finish-migrate`` while the stream is written and ends in
        ``postmigrate``; a machine that was running then runs again (as
        after ``migrate`` and ``cont``). If the save fails, the machine
        returns to the state it was in (running again if it ran), as QEMU
        does after a failed migration. ``open_timeout`` bounds the wait for
        a FIFO's reader, and ``cancelled`` returning true ends it with
        :class:`InterruptedError` (see :func:`vmkit.migration.save`; a job
        passes its :attr:`~vmkit.jobs.Job.cancel_requested`). Returns the
        statistics of :func:`vmkit.migration.save`.

        :raises MachineStateError: in ``inmigrate`` (RAM may be partly
            loaded), during another save, or once shut down.
        """
        with self._lock:
            self._check_not_shut_down()
            previous = self.status
            if previous not in _SAVE_FROM:
                raise MachineStateError(f"cannot save in state '{previous}'")
            if previous == RunState.RUNNING:
                self._pause_workload()
            try:
                # Inside the try: a listener that raises still gets the
                # machine back to where it was.
                self._runstate.set(RunState.FINISH_MIGRATE)
                stats = migration.save(
                    path,
                    machine_type=self.machine_type,
                    ram=[self.ram],
                    devices=self.board,
                    open_timeout=open_timeout,
                    cancelled=cancelled,
                )
            except BaseException as e:
                _drop_frame_locals(e)
                self._leave_failed_save(previous)
                raise
            self._runstate.set(RunState.POSTMIGRATE)
            if previous == RunState.RUNNING:
                self._resume_workload()
                self._runstate.set(RunState.RUNNING)
            return stats

    def _leave_failed_save(self, previous: RunState) -> None:
        """QEMU's way out of a failed migration: back to the state before."""
        if previous == RunState.RUNNING:
            self._resume_workload()
        self._runstate.set(previous)

    def restore(
        self,
        path: str | os.PathLike[str],
        *,
        cancelled: Callable[[], bool] | None = None,
        report_unmodelled: bool = False,
    ) -> dict[str, Any]:
        """Loads the machine saved at ``path`` into this one (paused after).

        This is QEMU's incoming migration: ``inmigrate`` while the stream
        is read, then ``paused``. QEMU loads a stream only into a machine
        that has not run (started with ``-incoming``), so a paused machine
        is first reset to ``prelaunch``. The machine must have the saved
        one's shape (see :func:`vmkit.migration.restore`). On error it
        stays in ``inmigrate`` and cannot run; restore again to recover.
        ``cancelled`` returning true ends a wait for a FIFO's writer with
        :class:`InterruptedError`. ``report_unmodelled`` takes (and lists)
        RAM blocks and device sections this machine does not model instead
        of refusing them (see :func:`vmkit.migration.restore`).

        :raises MachineStateError: while running or saving, or once shut down.
        """
        return self._load(
            lambda: migration.restore(
                path,
                machine_type=self.machine_type,
                ram=[self.ram],
                devices=self.board,
                cancelled=cancelled,
                report_unmodelled=report_unmodelled,
            )
        )

    def _load(self, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """An incoming migration's run states around ``load``."""
        with self._lock:
            self._check_not_shut_down()
            status = self.status
            if status not in _RESTORE_FROM:
                raise MachineStateError(f"cannot restore in state '{status}'")
            if status != RunState.INMIGRATE:
                self._runstate.set(RunState.PRELAUNCH)
            self._runstate.set(RunState.INMIGRATE)
            try:
                stats = load()
            except BaseException as e:
                _drop_frame_locals(e)
                raise
            self._runstate.set(RunState.PAUSED)
            return stats

    def migrate(
        self,
        precopy: migration.Precopy,
        *,
        timeout: float | None = None,
        progress: Callable[[str, int], object] | None = None,
        on_stop: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Live-migrates this machine with ``precopy`` (see
        :class:`vmkit.migration.Precopy`): the guest keeps running while
        RAM is sent in passes; at switchover the machine stops
        (``finish-migrate``), the last dirty pages and the devices go, and
        a completed migration leaves it in ``postmigrate``, as a QEMU
        source. If the migration fails or is cancelled after the stop, the
        machine returns to the state it was in (running again if it ran).
        Returns the final statistics (``precopy.snapshot()`` with
        ``devices``). ``timeout`` bounds the wait to connect; ``progress``
        is the engine's (see :meth:`vmkit.migration.Precopy.run`), and
        ``on_stop`` runs once the machine stopped for the switchover.

        :raises MachineStateError: in ``inmigrate``, during a save, or once
            shut down.
        """
        with self._lock:
            self._check_not_shut_down()
            previous = self.status
            if previous not in _SAVE_FROM:
                raise MachineStateError(f"cannot migrate in state '{previous}'")
            stopped = False

            def stop() -> None:
                nonlocal stopped
                if previous == RunState.RUNNING:
                    self._pause_workload()
                stopped = True
                self._runstate.set(RunState.FINISH_MIGRATE)
                if on_stop is not None:
                    on_stop()

            try:
                result = precopy.run(
                    machine_type=self.machine_type,
                    ram=[self.ram],
                    devices=self.board,
                    stop=stop,
                    timeout=timeout,
                    progress=progress,
                )
            except BaseException as e:
                _drop_frame_locals(e)
                if stopped:
                    self._leave_failed_save(previous)
                raise
            self._runstate.set(RunState.POSTMIGRATE)
            return result

    def expect_incoming(self) -> None:
        """Waits for an incoming migration from now on (``inmigrate``), as
        QEMU's ``-incoming``: the machine does not run until one loaded.

        :raises MachineStateError: once the machine has run or is shut down.
        """
        with self._lock:
            self._check_not_shut_down()
            if self.status not in (RunState.PRELAUNCH, RunState.INMIGRATE):
                raise MachineStateError(f"cannot wait for a migration in state '{self.status}'")
            self._runstate.set(RunState.INMIGRATE)

    def incoming(
        self,
        listener: migration.Listener,
        *,
        timeout: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        report_unmodelled: bool = False,
    ) -> dict[str, Any]:
        """Waits for a migration stream at ``listener`` (QEMU's ``-incoming
        URI``; see :class:`vmkit.migration.Listener`) and loads it into this
        machine, with the run states of :meth:`restore`: ``inmigrate``
        while it arrives, ``paused`` once it loaded cleanly; on error the
        machine stays in ``inmigrate``. ``timeout`` bounds the wait for the
        sender (``TimeoutError``); ``cancelled`` returning true ends it
        (``InterruptedError``); ``report_unmodelled`` is :meth:`restore`'s.

        :raises MachineStateError: while running or saving, or once shut down.
        """
        return self._load(
            lambda: listener.restore(
                machine_type=self.machine_type,
                ram=[self.ram],
                devices=self.board,
                timeout=timeout,
                cancelled=cancelled,
                report_unmodelled=report_unmodelled,
            )
        )

    # ----- teardown ----------------------------------------------------------

    def shutdown(self) -> None:
        """Stops the workload and ends the machine (QMP ``quit``).

        As QEMU's exit path does, a running machine enters ``shutdown``;
        a stopped one keeps its state (QEMU's table has no way from, say,
        ``paused`` to ``shutdown``). Either way the machine refuses to run,
        save or restore from then on (:attr:`shut_down`).
        """
        with self._lock:
            if self._shut_down:
                return
            if self._workload is not None:
                self._workload.stop()
            if self.status == RunState.RUNNING:
                self._runstate.set(RunState.SHUTDOWN)
            self._shut_down = True

    def close(self) -> None:
        """Shuts down and removes the machine from the QOM tree."""
        self.shutdown()
        self._workload = None
        self._teardown_qom()

    def _teardown_qom(self) -> None:
        # The memory map and the block handle keep the backend in use.
        for attr in ("system", "address_space", "io_space", "ram"):
            self.__dict__.pop(attr, None)
        if qom.machine() is not None:
            qom.destroy_machine()
        try:
            qom.object_del("pc.ram")
        except errors.VmkitError as e:
            log.warning("RAM backend not removed: %s", e)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_args: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Machine {self.machine_type} {self.status}>"


def _drop_frame_locals(e: BaseException) -> None:
    """Clears the locals of the finished frames in ``e``'s traceback: they
    hold the RAM block, which would keep the backend in use after
    :meth:`Machine.close` for as long as the exception is kept."""
    if e.__traceback__ is not None:
        traceback.clear_frames(e.__traceback__)
