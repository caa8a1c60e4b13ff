"""The machine's QMP commands: what ``vmkit run`` serves on its monitor.

:class:`MachineMonitor` registers QEMU's commands for one
:class:`~vmkit.machine.Machine` into a :class:`~vmkit.qmp.CommandRegistry`
and turns the machine's run-state changes into QMP events (``STOP``,
``RESUME``, ``RESET``, ``SHUTDOWN``, ``DEVICE_DELETED``). Answers and
errors follow QEMU's shapes, classes and messages (vmkit's exceptions are
translated by :func:`vmkit.qmp.to_qmp_error`, the one table for that);
where vmkit differs on purpose the command's docstring says so.

Long commands run as jobs (:mod:`vmkit.jobs`) in worker threads while the
server's event loop keeps serving every client: ``x-vmkit-save`` and
``human-monitor-command`` answer when their job concludes,
``calc-dirty-rate`` answers at once as in QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias, TypeVar

from vmkit import __version__, devices, errors, hmp, memory, qom
from vmkit.jobs import Job, JobManager, JobStatus
from vmkit.machine import Machine
from vmkit.migration import FdRegistry
from vmkit.migration_channels import ChannelError, migration_uri
from vmkit.migration_settings import MigrationSettings
from vmkit.migrations import IncomingMigration, OutgoingMigration
from vmkit.qmp import (
    CommandContext,
    CommandRegistry,
    DeviceNotFound,
    GenericError,
    JSONValue,
    QMPServer,
    QMPVersion,
    to_qmp_error,
)
from vmkit.qmp.qapi import vmkit_schema

__all__ = [
    "QEMU_VERSION",
    "UNMODELLED_POLICIES",
    "VMKIT_COMMANDS",
    "MachineMonitor",
    "monitor_version",
]

log = logging.getLogger(__name__)

#: The QEMU version whose QMP behaviour vmkit follows (greeting, query-version).
QEMU_VERSION = (9, 2, 0)

# QEMU stops the guest for shutdown without a STOP event (do_vm_stop(..., false)).
_RUN_STATE_LEAVING_RUNNING = ("paused", "finish-migrate", "inmigrate")

#: Commands vmkit adds to QEMU's (QAPI's ``x-`` prefix): ``x-vmkit-save``
#: saves the machine to a file until ``migrate`` takes that over.
VMKIT_COMMANDS = ("x-vmkit-save",)

EmitFn: TypeAlias = "Callable[[str, JSONValue | None], None]"

# calc-dirty-rate's bounds, in milliseconds whatever the unit (QEMU's).
_CALC_TIME_MS = (50, 60_000)

# How long a shutdown off the server's loop waits, after a cancelled save
# has let go of the machine, for that save's answer to go out: a guard
# against a loop that is gone, not a pace.
_ANSWER_GUARD = 5.0

T = TypeVar("T")

_U64 = 1 << 64
#: pmemsave copies this much guest memory per read.
_PMEMSAVE_CHUNK = 1 << 20

#: What an incoming migration may do with RAM blocks and device sections
#: the machine does not model: refuse the stream (QEMU's way) or take,
#: decode and list them (for a stream from a real QEMU).
UNMODELLED_POLICIES = ("refuse", "report")


#: The HMP commands vmkit answers through ``human-monitor-command``.
_HMP_COMMANDS = (
    ("help|? [cmd]", "show the help"),
    ("i /fmt addr", "I/O port read"),
    ("info [subcommand]", "show various information about the system state"),
    ("o /fmt addr value", "I/O port write"),
    ("xp /fmt addr", "physical memory dump starting at 'addr'"),
)
_HMP_INFO = (
    ("migrate", "show migration status"),
    ("mtree [-f]", "show memory tree"),
    ("name", "show the current VM name"),
    ("pci", "show PCI info"),
    ("qom-tree [path]", "show QOM composition tree"),
    ("qtree", "show device tree"),
    ("ramblock", "Display system ramblock information"),
    ("status", "show the current VM status (running|paused)"),
    ("version", "show the version of QEMU"),
)


def _devices() -> list[qom.Object]:
    """The devices added by ``-device`` / ``device_add``, in tree order."""
    found: list[qom.Object] = []
    for container in ("/machine/peripheral", "/machine/peripheral-anon"):
        with contextlib.suppress(errors.VmkitError):
            found.extend(obj for _, obj in qom.resolve_path(container).children())
    return found


def monitor_version() -> QMPVersion:
    """The version vmkit announces: QEMU's numbers, vmkit's package string."""
    major, minor, micro = QEMU_VERSION
    return QMPVersion(major, minor, micro, f"vmkit-{__version__}")


def _prop_value(value: object) -> JSONValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _property_info(p: qom.PropertyInfo) -> dict[str, JSONValue]:
    info: dict[str, JSONValue] = {"name": p.name, "type": p.type}
    if p.description is not None:
        info["description"] = p.description
    if p.default_value is not None:
        info["default-value"] = _prop_value(p.default_value)
    return info


def _resolve(path: str) -> qom.Object:
    """QEMU's ``object_resolve_path`` errors: DeviceNotFound / ambiguous."""
    try:
        return qom.resolve_path(path)
    except errors.PathError as e:
        raise to_qmp_error(e, path=path) from None


class _MachineHold:
    """A command whose job holds the machine's lock (a save): the job, the
    task answering the command (``None`` when not run as a task), and
    whether that answer has been sent."""

    def __init__(self, job: Job[Any], task: asyncio.Task[Any] | None) -> None:
        self.job = job
        self.task = task
        self.answered = threading.Event()
        if task is None:
            job.add_done_callback(lambda _job: self.answered.set())
        else:
            # After the server's own done callback, which sends the answer.
            task.add_done_callback(lambda _task: self.answered.set())

    def over(self) -> bool:
        return self.job.done() and self.answered.is_set()


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _finished(job: Job[T]) -> T:
    """The result of ``job`` once it concludes; its error as a QMP error."""
    try:
        return await job.wait()
    except Exception as e:
        raise to_qmp_error(e) from None


class MachineMonitor:
    """QEMU's QMP commands over ``machine``.

    ``emit(name, data)`` sends an event (normally ``QMPServer.emit``); the
    monitor calls it for run-state changes, resets, shutdown and device
    removal. ``on_quit`` runs after ``quit`` has been answered.
    """

    def __init__(
        self,
        machine: Machine,
        *,
        name: str | None = None,
        emit: EmitFn | None = None,
        on_quit: Callable[[], object] | None = None,
    ) -> None:
        self.machine = machine
        self.name = name
        self._emit: EmitFn = emit or (lambda _n, _d: None)
        self._on_quit = on_quit
        self.jobs = JobManager()
        """The long operations of this monitor's commands."""
        self.incoming_unmodelled = "refuse"
        """What an incoming migration does with what this machine does not
        model (one of :data:`UNMODELLED_POLICIES`; ``vmkit run --unmodelled``)."""
        self.migration_allow_remote = False
        """Whether migrations may use TCP addresses that are not loopback."""
        self.fds = FdRegistry()
        """Descriptors clients passed with ``getfd``, by name."""
        self.migration_settings = MigrationSettings()
        """The capabilities and parameters a new migration starts from."""
        self.migration: OutgoingMigration | IncomingMigration | None = None
        """The current or last migration, either way (``query-migrate``)."""
        self.incoming_deferred = False
        """Whether the machine waits for ``migrate-incoming`` (``--incoming
        defer``)."""
        self.incoming_autostart = False
        """Whether a deferred incoming migration, once loaded, starts the
        machine (``--incoming defer`` without ``-S``, as QEMU's autostart)."""
        self._formats = hmp.FormatDefaults()
        """QEMU's remembered ``/fmt`` of ``xp``, ``i`` and ``o``."""
        self._dirty_lock = threading.Lock()
        # Saves holding the machine's lock, and whether shutdown has begun
        # (after which no save starts), under one lock: shutdown cancels
        # every save that could take the machine's lock before it does.
        self._holds_lock = threading.Lock()
        self._holds: list[_MachineHold] = []
        self._closing = False
        self._dirty: dict[str, JSONValue] = {
            "status": "unstarted",
            "start-time": 0,
            "calc-time": 0,
            "calc-time-unit": "second",
            "sample-pages": 512,
            "mode": "page-sampling",
        }
        machine.add_state_listener(self._on_state_change)

    # ----- events --------------------------------------------------------

    def attach(self, server: QMPServer) -> None:
        """Sends this monitor's events through ``server``."""
        self._emit = server.emit

    def emit(self, event: str, data: JSONValue | None = None) -> None:
        """Sends ``event`` to every negotiated client."""
        self._emit(event, data)

    def emit_after_reply(self, event: str, data: JSONValue | None = None) -> None:
        """Sends ``event`` once the running command has been answered, as
        QEMU does for the events its main loop raises later (``RESET``,
        ``SHUTDOWN`` after ``quit``, ``DEVICE_DELETED``).

        A synchronous command is answered before the loop runs its next
        callback; an asynchronous one (a coroutine, run as a task) when its
        task is done, by the server's done callback: the event follows that
        one. Off the server's loop there is nothing to wait for."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.emit(event, data)
            return
        task = asyncio.current_task()
        if task is None:
            loop.call_soon(self.emit, event, data)
        else:
            task.add_done_callback(lambda _task: self.emit(event, data))

    def _on_state_change(self, old: str, new: str) -> None:
        if new == "running":
            self.emit("RESUME")
        elif old == "running" and new in _RUN_STATE_LEAVING_RUNNING:
            self.emit("STOP")

    def shutdown(self, reason: str) -> None:
        """Shuts the machine down and emits ``SHUTDOWN`` (``host-signal``,
        ``host-qmp-quit``, ...), after the answer of a running command.

        First every job of the monitor is cancelled and no save starts any
        more: a save waiting for a FIFO's reader fails (its client gets the
        error) instead of holding the machine's lock forever. Off the
        server's loop (a signal), this waits for the saves to let go of the
        machine and for their answers to be sent. A save blocked writing
        into a reader that has stopped reading cannot be interrupted: it is
        waited for (see :func:`vmkit.migration.save`)."""
        holds = self._begin_shutdown()
        if not _on_a_loop():
            for hold in holds:
                hold.job.join()
                hold.answered.wait(_ANSWER_GUARD)
        if self.machine.status != "shutdown":
            self.machine.shutdown()
        self.emit_after_reply("SHUTDOWN", {"guest": False, "reason": reason})

    def _begin_shutdown(self) -> list[_MachineHold]:
        """Cancels every job and refuses new saves; returns the saves that
        may still hold the machine or be unanswered."""
        with self._holds_lock:
            self._closing = True
            self.jobs.cancel_all()
            return [hold for hold in self._holds if not hold.over()]

    # ----- registration --------------------------------------------------

    def register(self, registry: CommandRegistry) -> CommandRegistry:
        """Adds the machine commands to ``registry`` (bound to vmkit's QAPI
        schema, which declares their arguments and answers); returns it."""
        registry.bind_schema(vmkit_schema())
        r = registry.register
        r("query-version", self._query_version)
        r("query-status", self._query_status)
        r("query-name", self._query_name)
        r("query-pci", self._query_pci)
        r("input-send-event", self._input_send_event)
        r("stop", self._stop)
        r("cont", self._cont)
        r("system_reset", self._system_reset)
        r("quit", self._quit)
        r("qom-list", self._qom_list)
        r("qom-get", self._qom_get)
        r("qom-set", self._qom_set)
        r("qom-list-types", self._qom_list_types)
        r("qom-list-properties", self._qom_list_properties)
        r("device-list-properties", self._device_list_properties)
        r("device_add", self._device_add)
        r("device_del", self._device_del)
        r("object-add", self._object_add)
        r("object-del", self._object_del)
        r("calc-dirty-rate", self._calc_dirty_rate)
        r("query-dirty-rate", self._query_dirty_rate)
        r("human-monitor-command", self._human_monitor_command)
        r("x-vmkit-save", self._save)
        r("pmemsave", self._pmemsave)
        r("query-migrate", self._query_migrate)
        r("migrate", self._migrate)
        r("migrate_cancel", self._migrate_cancel)
        r("migrate-continue", self._migrate_continue)
        r("migrate-incoming", self._migrate_incoming)
        r("getfd", self._getfd)
        r("closefd", self._closefd)
        r("query-migrate-capabilities", self._query_migrate_capabilities)
        r("migrate-set-capabilities", self._migrate_set_capabilities)
        r("query-migrate-parameters", self._query_migrate_parameters)
        r("migrate-set-parameters", self._migrate_set_parameters)
        return registry

    # ----- commands ------------------------------------------------------

    def _query_version(self, ctx: CommandContext) -> JSONValue:
        v = monitor_version()
        return {
            "qemu": {"major": v.major, "minor": v.minor, "micro": v.micro},
            "package": v.package,
        }

    def _query_status(self, ctx: CommandContext) -> JSONValue:
        return {"status": self.machine.status, "running": self.machine.running}

    def _query_name(self, ctx: CommandContext) -> JSONValue:
        return {} if self.name is None else {"name": self.name}

    def _query_pci(self, ctx: CommandContext) -> JSONValue:
        """QEMU's ``query-pci``: ``pcie.0`` and its functions. vmkit's q35
        has the host bridge (00.0) but not QEMU's ICH9 functions (LPC at
        1f.0, SATA at 1f.2, SMBus at 1f.3), which it does not model."""
        buses: list[JSONValue] = list(devices.query_pci())
        return buses

    def _input_send_event(self, ctx: CommandContext) -> JSONValue:
        """QEMU's ``input-send-event``: to ``device``, or each event to the
        input device taking its kind; each device's events are one report."""
        raw = ctx.arguments.get("events")
        events = [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
        device = ctx.arguments.get("device")
        try:
            routed = devices.route_input_events(events, None if device is None else str(device))
            for dev, batch in routed:
                devices.input_send_event(dev, batch)
        except (LookupError, ValueError, errors.VmkitError) as e:
            raise GenericError(str(e)) from None
        return None

    def _when_machine_free(
        self, action: Callable[[], object]
    ) -> JSONValue | Coroutine[Any, Any, JSONValue]:
        """Runs ``action`` (a run-state change, which takes the machine's
        lock) now, or once the jobs holding the machine (a save) have
        concluded and their commands have been answered: awaited, so that
        the loop keeps serving meanwhile instead of blocking on the lock."""
        with self._holds_lock:
            self._holds = [hold for hold in self._holds if not hold.over()]
            busy = list(self._holds)
        if not busy:
            action()
            return None

        async def later() -> JSONValue:
            for hold in busy:
                with contextlib.suppress(Exception):  # its own client hears of it
                    await hold.job.wait()
                if hold.task is not None and hold.task is not asyncio.current_task():
                    await asyncio.wait([hold.task])
            action()
            return None

        return later()

    def _stop(self, ctx: CommandContext) -> JSONValue | Awaitable[JSONValue]:
        incoming = self.migration
        if isinstance(incoming, IncomingMigration) and not incoming.ended:
            # As QEMU's: a destination still waiting does not run when the
            # migration has loaded (no autostart); nothing to wait for now.
            incoming.autostart = False
            return None
        if self.incoming_deferred and incoming is None:
            # Likewise before migrate-incoming: the machine stays paused.
            self.incoming_autostart = False
            return None
        return self._when_machine_free(self.machine.stop)

    def _cont(self, ctx: CommandContext) -> JSONValue | Awaitable[JSONValue]:
        status = self.machine.status
        if status == "inmigrate":
            raise GenericError("Guest is waiting for an incoming migration")
        return self._when_machine_free(self.machine.cont)

    def _system_reset(self, ctx: CommandContext) -> JSONValue | Awaitable[JSONValue]:
        """Resets the machine's devices (the run state stays) and emits
        ``RESET`` after the answer, as QEMU does."""

        def reset() -> None:
            self.machine.system_reset()
            self.emit_after_reply("RESET", {"guest": False, "reason": "host-qmp-system-reset"})

        return self._when_machine_free(reset)

    def _quit(self, ctx: CommandContext) -> JSONValue | Awaitable[JSONValue]:
        # Before anything waits for the machine: a save waiting for a FIFO's
        # reader ends now, its client answered with the error.
        self._begin_shutdown()

        def quit_now() -> None:
            self.shutdown("host-qmp-quit")
            ctx.request_shutdown()
            if self._on_quit is not None:
                self._on_quit()

        return self._when_machine_free(quit_now)

    def _qom_list(self, ctx: CommandContext) -> JSONValue:
        obj = _resolve(str(ctx.arguments["path"]))
        return [{"name": p.name, "type": p.type} for p in obj.properties()]

    def _qom_get(self, ctx: CommandContext) -> JSONValue:
        obj = _resolve(str(ctx.arguments["path"]))
        prop = str(ctx.arguments["property"])
        if prop == "type" and obj.path == self.machine.board.path:
            # QEMU's board object is of the type "<machine type>-machine"; vmkit's
            # board is one generic object, named here as the streams name it.
            return f"{self.machine.machine_type}-machine"
        try:
            return _prop_value(obj.get(prop))
        except errors.VmkitError as e:
            raise to_qmp_error(e, type_name=obj.type_name, property=prop) from None

    def _qom_set(self, ctx: CommandContext) -> JSONValue:
        obj = _resolve(str(ctx.arguments["path"]))
        prop = str(ctx.arguments["property"])
        value = ctx.arguments["value"]
        if not (value is None or isinstance(value, bool | int | str)):
            raise GenericError(f"Invalid parameter type for '{prop}', expected: a scalar value")
        try:
            obj.set(prop, value)
        except errors.VmkitError as e:
            raise to_qmp_error(e, type_name=obj.type_name, property=prop) from None
        return None

    def _qom_list_types(self, ctx: CommandContext) -> JSONValue:
        implements = ctx.arguments.get("implements")
        abstract = bool(ctx.arguments.get("abstract", False))
        if implements is not None and not any(
            t.name == implements for t in qom.list_types(include_abstract=True)
        ):
            return []
        out: list[JSONValue] = []
        for t in qom.list_types(str(implements) if implements else None, include_abstract=abstract):
            info: dict[str, JSONValue] = {"name": t.name}
            if t.abstract:
                info["abstract"] = True
            if t.parent is not None:
                info["parent"] = t.parent
            out.append(info)
        return out

    def _qom_list_properties(self, ctx: CommandContext) -> JSONValue:
        name = str(ctx.arguments["typename"])
        try:
            props = qom.type_properties(name)
        except errors.VmkitError as e:
            raise to_qmp_error(e, typename=name) from None
        if not qom.type_is_a(name, "object"):
            # An interface: QEMU's object_class_dynamic_cast(klass, TYPE_OBJECT) fails.
            raise GenericError("Parameter 'typename' expects a QOM type")
        return [_property_info(p) for p in props]

    def _device_list_properties(self, ctx: CommandContext) -> JSONValue:
        name = str(ctx.arguments["typename"])
        summaries = {t.name: t for t in qom.list_types(include_abstract=True)}
        if name not in summaries:
            raise DeviceNotFound(f"Device '{name}' not found")
        if not qom.type_is_a(name, "device"):
            raise GenericError("Parameter 'typename' expects device")
        if summaries[name].abstract:
            raise GenericError("Parameter 'typename' expects non-abstract device")
        return [_property_info(p) for p in qom.device_type_properties(name)]

    def _device_add(self, ctx: CommandContext) -> JSONValue:
        args = dict(ctx.arguments)
        driver = str(args.pop("driver"))
        dev_id = args.pop("id", None)
        # QEMU's qdev_get_device_class: the driver is checked before the bus.
        known = {t.name: t for t in qom.list_types(include_abstract=True)}
        if driver not in known or not qom.type_is_a(driver, "device"):
            raise GenericError(f"'{driver}' is not a valid device model name")
        if known[driver].abstract:
            raise GenericError("Parameter 'driver' expects a non-abstract device type")
        if "bus" in args:
            bus = str(args.pop("bus"))
            self._check_bus(driver, bus)
            if qom.type_is_a(driver, "usb-device"):
                args["bus"] = bus  # the device finds its controller by it
        if dev_id is not None and qom.machine() is not None:
            taken = [c for c, _ in qom.resolve_path("/machine/peripheral").children()]
            if dev_id in taken:
                raise GenericError(f"Duplicate device ID '{dev_id}'")
        props = self._scalar_props(args)
        self.machine.device_add(driver, id=None if dev_id is None else str(dev_id), **props)
        return None

    @staticmethod
    def _check_bus(driver: str, name: str) -> None:
        """QEMU's ``bus=``: the bus must exist and take the device (the
        machine has one bus a device can go on, ``pcie.0``, where a PCI
        device goes without it too)."""
        try:
            bus = qom.resolve_path(name, "bus")
        except errors.QomError:
            raise GenericError(f"Bus '{name}' not found") from None
        if bus.is_a("usb-bus") and qom.type_is_a(driver, "usb-device"):
            return
        if not (bus.is_a("PCI") and qom.type_is_a(driver, "pci-device")):
            raise GenericError(f"Device '{driver}' can't go on {bus.type_name} bus")

    @staticmethod
    def _scalar_props(args: dict[str, JSONValue]) -> dict[str, qom.PropertyValue]:
        props: dict[str, qom.PropertyValue] = {}
        for key, value in args.items():
            if not (value is None or isinstance(value, bool | int | str)):
                raise GenericError(f"Invalid parameter type for '{key}', expected: a scalar value")
            props[key.replace("-", "_")] = value
        return props

    def _device_del(self, ctx: CommandContext) -> JSONValue:
        ident = str(ctx.arguments["id"])
        try:
            dev = qom.resolve_path(
                ident if ident.startswith("/") else f"/machine/peripheral/{ident}"
            )
        except errors.PathError as e:
            raise to_qmp_error(e, path=ident) from None
        if not dev.is_a("device"):
            raise GenericError(f"{ident} is not a hotpluggable device")
        # One event per device that left, those on its buses first (a
        # USB controller's devices), as QEMU sends them.
        for path, dev_id in self.machine.device_del(dev.path or ident):
            data: dict[str, JSONValue] = {"path": path}
            if dev_id is not None:
                data = {"device": dev_id, "path": path}
            self.emit_after_reply("DEVICE_DELETED", data)
        return None

    def _object_add(self, ctx: CommandContext) -> JSONValue:
        args = dict(ctx.arguments)
        qom_type = str(args.pop("qom-type"))
        obj_id = str(args.pop("id"))
        known = {t.name: t for t in qom.list_types(include_abstract=True)}
        if (
            qom_type not in known
            or not qom.type_is_a(qom_type, "user-creatable")
            or known[qom_type].abstract
        ):
            # QEMU's 'qom-type' is the QAPI enum ObjectType (the concrete
            # user-creatable types): anything else fails in the enum visitor.
            raise GenericError(f"Parameter 'qom-type' does not accept value '{qom_type}'")
        props = self._scalar_props(args)
        qom.object_add(qom_type, id=obj_id, **props)
        return None

    def _object_del(self, ctx: CommandContext) -> JSONValue:
        obj_id = str(ctx.arguments["id"])
        if obj_id not in (name for name, _ in qom.resolve_path("/objects").children()):
            raise GenericError(f"object '{obj_id}' not found")
        qom.object_del(obj_id)
        return None

    # ----- dirty rate ----------------------------------------------------

    def _calc_dirty_rate(self, ctx: CommandContext) -> JSONValue:
        """``calc-dirty-rate``: starts a measurement and answers at once, as
        QEMU does. QEMU takes ``calc-time`` in ``calc-time-unit`` (seconds
        by default) and accepts 50 ms to 60 s, whatever the unit."""
        args = ctx.arguments
        unit = str(args.get("calc-time-unit", "second"))
        calc_time = int(args["calc-time"])  # type: ignore[arg-type]
        ms = calc_time if unit == "millisecond" else calc_time * 1000
        if not _CALC_TIME_MS[0] <= ms <= _CALC_TIME_MS[1]:
            low, high = _CALC_TIME_MS
            raise GenericError(f"Calculation time is out of range [{low}ms, {high}ms].")
        seconds = ms / 1000
        sample_pages = int(args.get("sample-pages", 512))  # type: ignore[arg-type]
        mode = str(args.get("mode", "page-sampling"))
        with self._dirty_lock:
            # The status, not the job: the job is done a moment after it
            # reported "measured", and a client may start again at once.
            if self._dirty["status"] == "measuring":
                raise GenericError("Dirty rate measurement is already in progress")
            self._dirty = {
                "status": "measuring",
                "start-time": int(time.monotonic()),
                "calc-time": calc_time,
                "calc-time-unit": unit,
                "sample-pages": sample_pages,
                "mode": mode,
            }
            # QEMU answers at once; query-dirty-rate reports the outcome.
            self.jobs.start("dirty-rate", lambda _job: self._measure(seconds))
        return None

    def _measure(self, seconds: float) -> None:
        """The measurement job. A failed one ends ``measured`` like any
        other (QEMU's ``DirtyRateStatus`` has no failed state, and a client
        polls for ``measured``) but without ``dirty-rate`` — never a
        made-up rate — and with vmkit's ``x-vmkit-error`` saying why."""
        outcome: dict[str, JSONValue]
        try:
            result = memory.measure_dirty_rate([self.machine.ram], seconds)
            outcome = {"dirty-rate": int(result["dirty_rate"])}  # type: ignore[call-overload]
        except Exception as e:
            # The traceback is formatted now, not kept in the log record:
            # its frames hold the machine's RAM blocks, which must be free to
            # go when the machine closes.
            log.error("dirty rate measurement failed:\n%s", "".join(traceback.format_exception(e)))
            outcome = {"x-vmkit-error": str(e) or type(e).__name__}
        with self._dirty_lock:
            self._dirty = {**self._dirty, "status": "measured", **outcome}

    def _query_dirty_rate(self, ctx: CommandContext) -> JSONValue:
        with self._dirty_lock:
            return dict(self._dirty)

    # ----- save ----------------------------------------------------------

    async def _save(self, ctx: CommandContext) -> JSONValue:
        """``x-vmkit-save {"path"}``: saves the machine to the file ``path``
        (:meth:`Machine.save`) and answers when the save is complete, with its
        statistics. The save runs as a job: other clients are served
        meanwhile. ``quit`` or a signal cancels it while it waits for a
        FIFO's reader: the answer is then the error ``save cancelled``.
        vmkit's own command; ``migrate`` to a ``file:`` URI will supersede
        it."""
        path = str(ctx.arguments["path"])

        def save(job: Job[dict[str, int]]) -> dict[str, int]:
            return self.machine.save(path, cancelled=lambda: job.cancel_requested)

        with self._holds_lock:
            if self._closing:
                raise GenericError("The machine is shutting down")
            job = self.jobs.start("save", save)
            self._holds.append(_MachineHold(job, asyncio.current_task()))
        stats = await _finished(job)
        return {key.replace("_", "-"): value for key, value in stats.items()}

    async def _pmemsave(self, ctx: CommandContext) -> JSONValue:
        """QEMU's ``pmemsave {"val", "size", "filename"}``: ``size`` bytes of
        guest-physical memory from ``val`` into the file ``filename``, as the
        guest would read them (holes read as all ones). ``val`` is taken as
        QEMU takes it, an unsigned 64-bit address (-1 is the last byte's
        page); a negative ``size`` is refused (QEMU 7.2 loops on one). Runs
        as a job, a chunk at a time."""
        val, size = ctx.arguments["val"], ctx.arguments["size"]
        assert isinstance(val, int) and isinstance(size, int)  # the schema checked both
        addr = val & (_U64 - 1)
        filename = str(ctx.arguments["filename"])
        if size < 0:
            raise GenericError("Parameter 'size' expects a size of zero or more bytes")
        if addr + size > _U64:
            raise GenericError(f"Range {addr:#x}+{size:#x} passes the end of the address space")
        space = self.machine.address_space
        try:
            out = open(filename, "wb")  # noqa: SIM115 - closed by the job
        except OSError as e:
            raise GenericError(f"Could not open '{filename}': {e.strerror}") from None

        def copy(job: Job[None]) -> None:
            with out:
                done = 0
                while done < size and not job.cancel_requested:
                    n = min(_PMEMSAVE_CHUNK, size - done)
                    out.write(space.read(addr + done, n))
                    done += n

        await _finished(self.jobs.start("pmemsave", copy))
        return {}

    # ----- migration settings -------------------------------------------

    def _query_migrate(self, ctx: CommandContext) -> JSONValue:
        """The current or last migration's ``MigrationInfo``; ``{}`` while
        no migration has happened, as in QEMU."""
        migration = self.migration
        return {} if migration is None else migration.info()

    def _migrate(self, ctx: CommandContext) -> JSONValue:
        """``migrate {"uri"}``: starts a live migration and answers at once,
        as QEMU does; ``query-migrate`` and the ``MIGRATION`` events
        (capability ``events``) follow it. The migration copies the
        current capabilities and parameters; vmkit's
        ``capabilities`` (a ``migrate-set-capabilities`` list) and
        ``parameters`` (a ``migrate-set-parameters`` object) change
        that copy only, checked as those commands check them, so nothing of
        one migration's settings is left for the next (principle 4).
        vmkit's parameter ``x-vmkit-fault`` breaks the outgoing stream on
        purpose (:mod:`vmkit.migration_fault`)."""
        if ctx.arguments.get("resume") or ctx.arguments.get("blk") or ctx.arguments.get("inc"):
            raise GenericError("vmkit migrates without postcopy recovery or block migration")
        if self.machine.status == "inmigrate":
            raise GenericError("Guest is waiting for an incoming migration")
        current = self.migration
        if current is not None and not current.ended:
            raise GenericError("There's a migration process in progress")
        uri = self._migration_uri(ctx, "migrate")
        settings = self.migration_settings.snapshot()
        if "capabilities" in ctx.arguments:
            settings.set_capabilities(ctx.arguments["capabilities"])
        if "parameters" in ctx.arguments:
            inline = ctx.arguments["parameters"]
            if not isinstance(inline, dict):
                raise GenericError("Invalid parameter type for 'parameters', expected: object")
            settings.set_parameters(inline)
        try:
            migration = OutgoingMigration(
                self.machine,
                uri,
                settings,
                self.emit,
                fds=self.fds,
                allow_remote=self.migration_allow_remote,
            )
        except OSError:
            raise GenericError("Parameter 'uri' expects a valid migration protocol") from None
        with self._holds_lock:
            if self._closing:
                raise GenericError("The machine is shutting down")
            self.migration = migration
            job = self.jobs.start("migrate", migration.run)
            job.add_status_listener(
                lambda _job, status: migration.cancel() if status is JobStatus.ABORTING else None
            )
            self._holds.append(_MachineHold(job, None))
        return {}

    def start_incoming(
        self, uri: str, *, autostart: bool, unmodelled: str | None = None
    ) -> IncomingMigration:
        """Listens at ``uri`` and loads the migration that arrives there
        into the machine, on a job (``vmkit run --incoming URI``, QMP
        ``migrate-incoming``). The machine waits in ``inmigrate``.
        ``unmodelled`` (default :attr:`incoming_unmodelled`): ``refuse`` a
        stream with RAM blocks or device sections this machine lacks, as
        QEMU does, or ``report`` them (decoded by the stream's trailer,
        listed in ``query-migrate``; for streams from a real QEMU).

        :raises OSError: ``uri`` is not a transport, or cannot be listened on.
        """
        self.machine.expect_incoming()
        migration = IncomingMigration(
            self.machine,
            uri,
            self.migration_settings,
            self.emit,
            autostart=autostart,
            fds=self.fds,
            allow_remote=self.migration_allow_remote,
            report_unmodelled=(unmodelled or self.incoming_unmodelled) == "report",
        )
        with self._holds_lock:
            if self._closing:
                raise GenericError("The machine is shutting down")
            self.migration = migration
            job = self.jobs.start("migrate-incoming", migration.run)
            self._holds.append(_MachineHold(job, None))
        return migration

    def _migrate_incoming(self, ctx: CommandContext) -> JSONValue:
        if not self.incoming_deferred:
            raise GenericError("'-incoming' was not specified on the command line")
        if isinstance(self.migration, IncomingMigration):
            raise GenericError("The incoming migration has already been started")
        try:
            policy = ctx.arguments.get("x-vmkit-unmodelled")
            self.start_incoming(
                self._migration_uri(ctx, "migrate-incoming"),
                autostart=self.incoming_autostart,
                unmodelled=None if policy is None else str(policy),
            )
        except OSError as e:
            raise GenericError(str(e)) from None
        return {}

    def _migration_uri(self, ctx: CommandContext, command: str) -> str:
        """The URI of ``uri`` or ``channels``; an ``fd:NAME`` must name a
        descriptor ``getfd`` kept (QEMU refuses the command otherwise)."""
        try:
            uri = migration_uri(ctx.arguments, command)
        except ChannelError as e:
            raise GenericError(str(e)) from None
        if uri.startswith("fd:") and uri[3:] not in self.fds.names():
            raise GenericError(f"File descriptor named '{uri[3:]}' has not been found")
        return uri

    def _getfd(self, ctx: CommandContext) -> JSONValue:
        """QEMU's ``getfd {"fdname"}``: keeps the descriptor the client
        passed with the command (``SCM_RIGHTS`` on a UNIX socket) under
        ``fdname``, for ``fd:NAME`` migration URIs."""
        fd = ctx.session.take_fd()
        if fd is None:
            raise GenericError("No file descriptor supplied via SCM_RIGHTS")
        try:
            self.fds.add(str(ctx.arguments["fdname"]), fd)
        except ValueError as e:
            raise GenericError(str(e)) from None
        finally:
            os.close(fd)  # the registry keeps its own duplicate
        return {}

    def _closefd(self, ctx: CommandContext) -> JSONValue:
        """QEMU's ``closefd {"fdname"}``."""
        try:
            self.fds.close(str(ctx.arguments["fdname"]))
        except ValueError as e:
            raise GenericError(str(e)) from None
        return {}

    def _migrate_continue(self, ctx: CommandContext) -> JSONValue:
        migration = self.migration
        if not isinstance(migration, OutgoingMigration):
            raise GenericError("Migration not in expected state: none")
        try:
            migration.continue_(str(ctx.arguments["state"]))
        except ValueError as e:
            raise GenericError(str(e)) from None
        return {}

    def _migrate_cancel(self, ctx: CommandContext) -> JSONValue:
        migration = self.migration
        if migration is not None:
            migration.cancel()
        return {}

    def _query_migrate_capabilities(self, ctx: CommandContext) -> JSONValue:
        return [dict(entry) for entry in self.migration_settings.query_capabilities()]

    def _migrate_set_capabilities(self, ctx: CommandContext) -> JSONValue:
        self.migration_settings.set_capabilities(ctx.arguments["capabilities"])
        return {}

    def _query_migrate_parameters(self, ctx: CommandContext) -> JSONValue:
        return dict(self.migration_settings.parameters())

    def _migrate_set_parameters(self, ctx: CommandContext) -> JSONValue:
        self.migration_settings.set_parameters(ctx.arguments)
        migration = self.migration
        if isinstance(migration, OutgoingMigration) and not migration.ended:
            # As QEMU's: a running migration takes the new limits at once.
            migration.set_parameters(self.migration_settings.parameters())
        return {}

    # ----- HMP -----------------------------------------------------------

    async def _human_monitor_command(self, ctx: CommandContext) -> JSONValue:
        line = str(ctx.arguments["command-line"])
        # A job: an ``info qom-tree`` of a large tree takes a while.
        text = await _finished(self.jobs.start("hmp", lambda _job: self._hmp(line)))
        # QEMU's monitor output layer turns every "\n" into "\r\n".
        return text.replace("\r\n", "\n").replace("\n", "\r\n")

    def _hmp(self, command_line: str) -> str:
        line = command_line.strip()
        words = line.split()
        if words[:2] == ["info", "qom-tree"]:
            return qom.qom_tree(words[2] if len(words) > 2 else "/machine")
        if words == ["info", "mtree"]:
            return memory.mtree()
        if words in (["info", "mtree", "-f"], ["info", "mtree", "-f", "-d"]):
            return memory.mtree_flat()
        if words == ["info", "ramblock"]:
            return self._info_ramblock()
        if words[:2] == ["info", "pci"]:
            if len(words) > 2:
                return str(
                    hmp.HMPUsageError("pci: extraneous characters at the end of line", "info pci")
                )
            return hmp.info_pci(devices.query_pci())
        if words and words[0] in ("xp", "i", "o"):
            try:
                return self._hmp_access(words[0], words[1:])
            except hmp.HMPUsageError as e:
                return str(e)
        if words == ["info", "status"]:
            # QEMU's hmp_info_status: "running" or "paused", plus the run
            # state in parentheses when it is neither (e.g. "prelaunch").
            state = self.machine.status
            running = self.machine.running
            text = "running" if running else "paused"
            if not running and state != "paused":
                text += f" ({state})"
            return f"VM status: {text}\r\n"
        if words in (["help"], ["?"]):
            return "".join(f"{usage:<28} -- {what}\r\n" for usage, what in _HMP_COMMANDS)
        if words == ["info"]:
            return "".join(f"info {usage:<23} -- {what}\r\n" for usage, what in _HMP_INFO)
        if words == ["info", "version"]:
            major, minor, micro = QEMU_VERSION
            return f"{major}.{minor}.{micro} (vmkit-{__version__})\r\n"
        if words == ["info", "name"]:
            return "" if self.name is None else f"{self.name}\r\n"
        if words == ["info", "qtree"]:
            return self._info_qtree()
        if words == ["info", "migrate"]:
            return self._info_migrate()
        if not words:
            return ""
        # HMP reports its errors as output, and the QMP command succeeds.
        name = words[0] if words[0] != "info" or len(words) < 2 else f"info {words[1]}"
        return f"unknown command: '{name}'\r\n"

    def _hmp_access(self, command: str, args: list[str]) -> str:
        """``xp /fmt addr`` (guest-physical memory), ``i /fmt port`` and
        ``o /fmt port value`` (I/O ports), as a guest's accesses: they reach
        RAM, device registers and 0xCF8/0xCFC alike."""
        fmt_text = args[0][1:] if args and args[0].startswith("/") else None
        rest = args[1:] if fmt_text is not None else args
        fmt = hmp.parse_format(fmt_text, self._formats, command)
        wanted = 2 if command == "o" else 1
        values = [
            hmp.parse_number(rest[i] if i < len(rest) else None, command) for i in range(wanted)
        ]
        if len(rest) > wanted:
            raise hmp.HMPUsageError(f"{command}: extraneous characters at the end of line", command)
        if command == "xp":
            return self._hmp_xp(values[0], fmt)
        port = values[0] & 0xFFFF
        # QEMU reads and writes a byte for any size but 2 and 4.
        width = fmt.size if fmt.size in (2, 4) else 1
        space = self.machine.io_space
        if command == "o":
            with contextlib.suppress(errors.GuestMemoryError):
                space.write_sized(port, width, values[1] & ((1 << (8 * width)) - 1))
            return ""
        try:
            value = space.read_sized(port, width)
        except errors.GuestMemoryError:
            value = (1 << (8 * width)) - 1
        return hmp.port_line(fmt.size, port, value)

    def _hmp_xp(self, addr: int, fmt: hmp.Format) -> str:
        if fmt.format == "i":
            return "xp: vmkit has no CPU to disassemble for\n"
        if fmt.count * fmt.size > hmp.MAX_DUMP_BYTES:
            return f"xp: vmkit shows at most {hmp.MAX_DUMP_BYTES} bytes at a time\n"
        space = self.machine.address_space
        covered = [(r.start, r.start + r.size) for r in space.flat_view()]

        def read(at: int, n: int) -> bytes | None:
            # QEMU's read fails where no region answers: "Cannot access memory".
            pos, end = at, at + n
            for start, stop in covered:
                if start <= pos < stop:
                    pos = stop
                if pos >= end:
                    break
            if pos < end:
                return None
            try:
                return space.read(at, n)
            except errors.GuestMemoryError:
                return None

        return hmp.memory_dump(addr, fmt, read)

    def _info_qtree(self) -> str:
        """The devices as QEMU's ``info qtree`` lists them: each with its
        type, id and properties (vmkit has no buses, so the list is flat)."""
        lines = ["bus: main-system-bus", "  type System"]
        for dev in _devices():
            parent = dev.parent
            ident = dev.name if parent is not None and parent.path == "/machine/peripheral" else ""
            lines.append(f'  dev: {dev.type_name}, id "{ident}"')
            for p in dev.properties():
                if p.type.startswith(("child<", "link<")) or p.name in ("type", "realized"):
                    continue
                try:
                    value = dev.get(p.name)
                except errors.VmkitError:
                    continue
                shown = f'"{value}"' if isinstance(value, str) else value
                lines.append(f"    {p.name} = {shown}")
        return "\r\n".join(lines) + "\r\n"

    def _info_migrate(self) -> str:
        """QEMU's ``info migrate`` in brief: the status and RAM counters."""
        info = self.migration.info() if self.migration is not None else {}
        if not info:
            return ""
        lines = [f"Migration status: {info.get('status', 'none')}"]
        ram = info.get("ram")
        if isinstance(ram, dict):
            for key in ("transferred", "remaining", "total", "duplicate", "normal"):
                if key in ram:
                    lines.append(f"{key} ram: {ram[key]}")
        for key in ("total-time", "downtime", "setup-time"):
            if key in info:
                lines.append(f"{key}: {info[key]} ms")
        return "\r\n".join(lines) + "\r\n"

    def _info_ramblock(self) -> str:
        ram = self.machine.ram
        blocks = [(ram.name, ram.page_size, ram.size)]
        # As QEMU: every memory backend (-object memory-backend-*) has a block.
        with contextlib.suppress(errors.VmkitError):
            for name, obj in qom.resolve_path("/objects").children():
                if name != ram.name and qom.type_is_a(obj.type_name, "memory-backend"):
                    size = obj.get("size")
                    blocks.append((name, ram.page_size, size if isinstance(size, int) else 0))
        lines = [f"{'Block Name':>24} {'PSize':>8}  {'Offset':>18} {'Used':>18} {'Total':>18}"]
        offset = 0
        for name, page_size, size in blocks:
            lines.append(
                f"{name:>24} {page_size // 1024:>4} KiB  0x{offset:016x}"
                f" 0x{size:016x} 0x{size:016x}"
            )
            offset += size
        return "\r\n".join(lines) + "\r\n"
