"""One migration, one object (principle 4).

An :class:`OutgoingMigration` is created by QMP ``migrate``: it copies the
monitor's migration settings when it starts (so nothing of an earlier
migration leaks into it), runs the precopy engine on a job, follows QEMU's
``MigrationStatus`` and emits its events, and keeps its final
``MigrationInfo`` after it ended, for ``query-migrate``, until the next
migration replaces it.

Policy lives here (statuses, events, which numbers go in
``MigrationInfo``); the page loop, the transports and the statistics are
the Rust core's (:class:`vmkit.migration.Precopy`).

Beside QEMU's members, ``query-migrate`` carries vmkit's own:

* ``x-vmkit-passes`` (source): one object per pass, in order — ``pass``
  (1, 2, ...), ``dirty-pages`` (the pages the pass set out to send: every
  page for the first, those the dirty sync before it found for the others),
  ``bytes-sent`` (stream bytes it wrote), ``pages-sent`` and ``zero-pages``
  (target pages it sent, and of those the zero pages), ``duration-ms``,
  ``bytes-per-second`` (``bytes-sent`` over ``duration-ms``; ``null`` if
  no time was measured) and ``final`` (the pass after the source stopped).
* ``x-vmkit-guest-pause`` (both sides): the wall-clock stamps of the
  switchover, microseconds since the Unix epoch on ``CLOCK_REALTIME`` —
  ``stop``, ``stopped``, ``synced``, ``ram-sent``, ``devices-sent`` on the
  source, ``loaded`` and ``resumed`` on the destination, each once
  reached. :func:`guest_pause` turns both into the pause the guest felt
  (:mod:`vmkit.migration_report`).
* ``x-vmkit-received`` (destination): what the load read (``bytes``,
  ``zero_pages``, ``normal_pages``, ``devices``).

A destination also reports QEMU's ``socket-address`` while it listens on
a socket, with the port it really bound.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from vmkit import migration_fault
from vmkit.jobs import Job
from vmkit.machine import Machine
from vmkit.migration import FdRegistry, Listener, Precopy
from vmkit.migration_report import GUEST_PAUSE_KEY, guest_pause
from vmkit.migration_settings import MigrationSettings
from vmkit.runstate import RunState

__all__ = [
    "IncomingMigration",
    "MigrationStatus",
    "OutgoingMigration",
    "guest_pause",
    "socket_address",
    "wall_clock_us",
]

#: How a migration reports an event: ``emit(name, data)``.
Emit = Callable[[str, dict[str, Any]], None]

log = logging.getLogger(__name__)


def wall_clock_us() -> int:
    """Microseconds since the Unix epoch on ``CLOCK_REALTIME``: the clock of
    the guest-pause stamps (the engine's is the same)."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) // 1000


def socket_address(uri: str) -> dict[str, str] | None:
    """QEMU's ``SocketAddress`` for a ``tcp:`` or ``unix:`` migration URI
    (``{"type": "inet", "host", "port"}``, the port as a string as QEMU
    gives it, or ``{"type": "unix", "path"}``); ``None`` for other URIs."""
    kind, _, rest = uri.partition(":")
    if kind == "unix" and rest:
        return {"type": "unix", "path": rest}
    if kind == "tcp":
        host, sep, port = rest.rpartition(":")
        if sep and host and port.isdigit():
            return {"type": "inet", "host": host.strip("[]"), "port": port}
    return None


def _pass_entry(p: dict[str, Any]) -> dict[str, Any]:
    """One ``x-vmkit-passes`` entry from the engine's pass record."""
    return {
        "pass": p["pass"],
        "dirty-pages": p["dirty_pages"],
        "bytes-sent": p["bytes"],
        "pages-sent": p["pages"],
        "zero-pages": p["zero_pages"],
        "duration-ms": p["duration_ms"],
        "bytes-per-second": p["bandwidth"],
        "final": p["final"],
    }


class MigrationStatus(enum.StrEnum):
    """QEMU's ``MigrationStatus`` values that vmkit's migrations take."""

    NONE = "none"
    SETUP = "setup"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    PRE_SWITCHOVER = "pre-switchover"
    DEVICE = "device"
    COMPLETED = "completed"
    FAILED = "failed"


# MigrationStats members of what vmkit does not do (postcopy, multifd,
# zero-copy send): always zero, present because QEMU's are mandatory.
_RAM_NOT_MODELLED = {
    "postcopy-requests": 0,
    "multifd-bytes": 0,
    "postcopy-bytes": 0,
    "dirty-sync-missed-zero-copy": 0,
}

_ENDED = (MigrationStatus.COMPLETED, MigrationStatus.FAILED, MigrationStatus.CANCELLED)


class AutoConverge:
    """QEMU's ``auto-converge`` policy as plain logic: after each pass, if
    the guest dirtied more than ``throttle-trigger-threshold`` percent of
    what the pass sent, twice, throttle it — ``cpu-throttle-initial``
    first, then ``cpu-throttle-increment`` more each time, up to
    ``max-cpu-throttle``. With ``cpu-throttle-tailslow`` a step is only
    the current throttle times the share of the dirtying the pass did not
    keep up with (at least 1, at most the increment): vmkit's rule, gentler
    near convergence."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.threshold = int(params["throttle-trigger-threshold"])
        self.initial = int(params["cpu-throttle-initial"])
        self.increment = int(params["cpu-throttle-increment"])
        self.tailslow = bool(params["cpu-throttle-tailslow"])
        self.maximum = int(params["max-cpu-throttle"])
        self.percentage = 0
        self._high = 0

    def after_pass(self, dirtied_bytes: int, sent_bytes: int) -> int:
        """The throttle after a pass that sent ``sent_bytes`` while the
        guest dirtied ``dirtied_bytes``."""
        if dirtied_bytes * 100 <= sent_bytes * self.threshold:
            return self.percentage
        self._high += 1
        if self._high < 2:
            return self.percentage
        self._high = 0
        if self.percentage == 0:
            self.percentage = self.initial
        elif self.tailslow:
            # The share of the dirtying the pass could not keep up with.
            overshoot = self.percentage * (dirtied_bytes - sent_bytes) // dirtied_bytes
            self.percentage += min(self.increment, max(1, overshoot))
        else:
            self.percentage += self.increment
        self.percentage = min(self.percentage, self.maximum)
        return self.percentage


class _Migration:
    """What every migration has: a status that only moves forward until it
    ended, and ``MIGRATION`` events (capability ``events``)."""

    def __init__(self, settings: MigrationSettings, emit: Emit) -> None:
        self._events = settings.capabilities()["events"]
        self._emit = emit
        self._lock = threading.Lock()
        self._status = MigrationStatus.NONE
        self._error: str | None = None

    @property
    def status(self) -> MigrationStatus:
        """Where the migration is."""
        with self._lock:
            return self._status

    @property
    def ended(self) -> bool:
        """Whether it completed, failed or was cancelled."""
        return self.status in _ENDED

    def _set_status(self, status: MigrationStatus) -> None:
        with self._lock:
            if self._status == status or self._status in _ENDED:
                return
            if self._status == MigrationStatus.CANCELLING and status not in _ENDED:
                # As QEMU's compare-and-set: a cancel is not undone by the
                # run reaching its next phase.
                return
            self._status = status
        if self._events:
            self._emit("MIGRATION", {"status": str(status)})

    def _failed(self, e: BaseException) -> None:
        with self._lock:
            if self._status == MigrationStatus.CANCELLING:
                # QEMU's rule: whatever ends a migration being cancelled
                # (a write the cancel broke off) ends it cancelled.
                status = MigrationStatus.CANCELLED
            else:
                self._error = str(e) or type(e).__name__
                status = MigrationStatus.FAILED
        self._set_status(status)


class OutgoingMigration(_Migration):
    """One outgoing live migration of ``machine`` to ``uri``."""

    def __init__(
        self,
        machine: Machine,
        uri: str,
        settings: MigrationSettings,
        emit: Emit,
        *,
        allow_remote: bool = False,
        fds: FdRegistry | None = None,
    ) -> None:
        self.settings = settings.snapshot()
        super().__init__(self.settings, emit)
        self.machine = machine
        params = self.settings.parameters()
        capabilities = self.settings.capabilities()
        self._pause_before_switchover = capabilities["pause-before-switchover"]
        self._auto_converge = AutoConverge(params) if capabilities["auto-converge"] else None
        self._continue = threading.Event()
        self._final: dict[str, Any] | None = None
        # Parsing the URI here refuses a bad one before anything starts.
        self.precopy = Precopy(
            uri,
            max_bandwidth=int(params["max-bandwidth"]),
            downtime_limit_ms=int(params["downtime-limit"]),
            allow_remote=allow_remote,
            fds=fds,
            zero_page_detection=params["zero-page-detection"] != "none",
            ignore_shared=capabilities["x-ignore-shared"],
            return_path=capabilities["return-path"],
        )
        self.fault = self.settings.fault()
        """The ``x-vmkit-fault`` this migration applies (:mod:`vmkit.migration_fault`)."""
        if self.fault is not None:
            self.precopy.inject_fault(**migration_fault.precopy_arguments(self.fault))
        self._set_status(MigrationStatus.SETUP)

    def _progress(self, kind: str, n: int) -> None:
        # QEMU counts passes by dirty-bitmap syncs: the setup's is pass 1.
        if self._events:
            self._emit("MIGRATION_PASS", {"pass": 1 if kind == "setup" else n + 1})
        if kind == "setup":
            self._set_status(MigrationStatus.ACTIVE)
        elif self._auto_converge is not None:
            self._throttle_after_pass()

    def _throttle_after_pass(self) -> None:
        assert self._auto_converge is not None
        snap = self.precopy.snapshot()
        last = snap["passes"][-1]
        page_size = int(snap["ram"]["page-size"]) or 4096
        before = self._auto_converge.percentage
        now = self._auto_converge.after_pass(
            int(last["dirty_pages"]) * page_size, int(last["bytes"])
        )
        workload = self.machine.workload
        if now != before and workload is not None:
            workload.throttle = now

    def run(self, job: Job[None]) -> None:
        """The job's work: migrates, then records how it ended."""
        try:
            self._final = self.machine.migrate(
                self.precopy, progress=self._progress, on_stop=self._stopped
            )
        except InterruptedError:
            self._set_status(MigrationStatus.CANCELLED)
            self._unthrottle()
        except Exception as e:  # every failure is the migration's error-desc
            self._failed(e)
            self._unthrottle()
        else:
            self._set_status(MigrationStatus.COMPLETED)
            self._unthrottle()

    def _unthrottle(self) -> None:
        """The guest runs at full speed again once the migration ended."""
        workload = self.machine.workload
        if self._auto_converge is not None and workload is not None:
            workload.throttle = 0

    def _stopped(self) -> None:
        """The source stopped for the switchover. With
        ``pause-before-switchover`` it waits there (``pre-switchover``)
        until :meth:`continue_` or :meth:`cancel`, as QEMU's does."""
        if self._pause_before_switchover:
            self._set_status(MigrationStatus.PRE_SWITCHOVER)
            self._continue.wait()
            if self.status == MigrationStatus.CANCELLING:
                raise InterruptedError("migration cancelled before switchover")
        self._set_status(MigrationStatus.DEVICE)

    def continue_(self, state: str) -> None:
        """QMP ``migrate-continue {"state"}``: lets a migration paused
        before switchover go on; ``state`` must be the one it is in.

        :raises ValueError: with QEMU's message, when it is not paused there.
        """
        current = self.status
        if state != str(current) or current != MigrationStatus.PRE_SWITCHOVER:
            raise ValueError(f"Migration not in expected state: {current}")
        self._continue.set()

    def cancel(self) -> None:
        """QMP ``migrate_cancel``: the run stops at its next batch (or at
        the pause before switchover)."""
        if not self.ended:
            self._set_status(MigrationStatus.CANCELLING)
            self.precopy.cancel()
            self._continue.set()

    def set_parameters(self, params: dict[str, Any]) -> None:
        """What QEMU applies to a running migration: bandwidth and downtime limit."""
        self.precopy.set_params(
            max_bandwidth=int(params["max-bandwidth"]),
            downtime_limit_ms=int(params["downtime-limit"]),
        )

    def info(self) -> dict[str, Any]:
        """QMP ``query-migrate``: QEMU's ``MigrationInfo`` for this migration."""
        status = self.status
        snap = self._final if self._final is not None else self.precopy.snapshot()
        info: dict[str, Any] = {"status": str(status)}
        if status in (MigrationStatus.ACTIVE, MigrationStatus.DEVICE, MigrationStatus.COMPLETED):
            ram = {**_RAM_NOT_MODELLED, **snap["ram"]}
            # The engine's rates are measured as floats; QEMU's are integers.
            for key in ("dirty-pages-rate", "pages-per-second"):
                ram[key] = round(ram[key])
            info["ram"] = ram
            info["total-time"] = snap["total_time_ms"]
            info["setup-time"] = snap["setup_time_ms"]
        running = status in (MigrationStatus.ACTIVE, MigrationStatus.DEVICE)
        if running and snap["expected_downtime_ms"] is not None:
            info["expected-downtime"] = snap["expected_downtime_ms"]
        if status == MigrationStatus.COMPLETED and snap["downtime_ms"] is not None:
            info["downtime"] = snap["downtime_ms"]
        if self._auto_converge is not None and running:
            info["cpu-throttle-percentage"] = self._auto_converge.percentage
        if status == MigrationStatus.FAILED:
            with self._lock:
                info["error-desc"] = self._error
        # vmkit's own (module docstring): the per-pass history, the
        # switchover's stamps once it began, and the fault.
        info["x-vmkit-passes"] = [_pass_entry(p) for p in snap["passes"]]
        stamps = {k.replace("_", "-"): v for k, v in snap["stamps"].items() if v is not None}
        if stamps:
            info[GUEST_PAUSE_KEY] = stamps
        report = self.precopy.fault()
        if self.fault is not None and report is not None:
            info[migration_fault.NAME] = {**self.fault, **report}
        return info


def _qmp_keys(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's keys as QMP spells them (``zero-pages``); values as they are."""
    return {key.replace("_", "-"): value for key, value in entry.items()}


def _names(kind: str, names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{kind} " + ", ".join(names[:shown]) + more


def _field_summary(fields: object) -> str:
    """A decoded section's first few field (and subsection) names."""
    if not isinstance(fields, dict):
        return "no fields"
    subsections = fields.get("subsections")
    names = [name for name in fields if name != "subsections"]
    text = _names("fields", names) if names else "no fields"
    if isinstance(subsections, dict) and subsections:
        text += "; " + _names("subsections", list(subsections))
    return text


class IncomingMigration(_Migration):
    """One incoming migration (QEMU's ``-incoming URI`` or
    ``migrate-incoming``): it listens from creation on, loads the stream
    into ``machine`` on a job (``inmigrate`` until then), and then leaves
    the machine ``paused``, or ``running`` with ``autostart`` (QEMU's
    ``-incoming`` without ``-S``). A stream that fails leaves the machine in
    ``inmigrate``, never runnable with partial state.

    The stream may come from a real QEMU, whose machine has more than a
    vmkit machine models. With ``report_unmodelled`` its firmware RAM
    blocks and the sections of its devices are taken, not refused (see
    :func:`vmkit.migration.restore`'s ``report_unmodelled``), listed in
    ``query-migrate`` under ``x-vmkit-unmodelled`` and logged, one line
    each, once the stream has loaded; without it they are refused, as QEMU
    refuses them, so a stream from a machine with a device this one lacks
    never loads with that device's state dropped."""

    def __init__(
        self,
        machine: Machine,
        uri: str,
        settings: MigrationSettings,
        emit: Emit,
        *,
        autostart: bool,
        allow_remote: bool = False,
        fds: FdRegistry | None = None,
        wall_clock: Callable[[], int] = wall_clock_us,
        report_unmodelled: bool = False,
    ) -> None:
        super().__init__(settings, emit)
        self.machine = machine
        self.autostart = autostart
        self._stats: dict[str, int] | None = None
        self._wall_clock = wall_clock
        # The guest-pause stamps: the load ended; the machine ran again.
        self._loaded: int | None = None
        self._resumed: int | None = None
        self._unmodelled: dict[str, list[dict[str, Any]]] | None = None
        self.report_unmodelled = report_unmodelled
        self.listener = Listener(
            uri,
            allow_remote=allow_remote,
            fds=fds,
            ignore_shared=settings.capabilities()["x-ignore-shared"],
        )
        self._set_status(MigrationStatus.SETUP)

    @property
    def uri(self) -> str:
        """Where it listens (a ``tcp:`` port 0 replaced by the real one)."""
        return self.listener.uri

    def run(self, job: Job[None]) -> None:
        """The job's work: waits for the stream and loads it."""
        self._set_status(MigrationStatus.ACTIVE)
        try:
            stats = self.machine.incoming(
                self.listener,
                cancelled=lambda: job.cancel_requested,
                report_unmodelled=self.report_unmodelled,
            )
        except Exception as e:  # every failure is the migration's error-desc
            self._failed(e)
            return
        loaded = self._wall_clock()
        # Present only when the load reported what it does not model.
        unmodelled = stats.pop("unmodelled", None)
        with self._lock:
            self._loaded = loaded
            self._stats = stats
            if unmodelled is not None:
                self._unmodelled = {
                    "ram-blocks": [_qmp_keys(b) for b in unmodelled["ram_blocks"]],
                    "sections": [_qmp_keys(s) for s in unmodelled["sections"]],
                }
        if unmodelled is not None:
            self._log_unmodelled(unmodelled)
        # The first run from now on ends the guest's pause, whoever starts
        # it: autostart below, or a later ``cont``.
        self.machine.add_state_listener(self._on_state_change)
        if self.autostart:
            self.machine.cont()
        # As QEMU's: completed once the machine runs (with autostart), so a
        # client that sees it sees the final run state.
        self._set_status(MigrationStatus.COMPLETED)

    def _on_state_change(self, _old: str, new: str) -> None:
        if new != RunState.RUNNING:
            return
        with self._lock:
            if self._resumed is None:
                self._resumed = self._wall_clock()
        self.machine.remove_state_listener(self._on_state_change)

    @staticmethod
    def _log_unmodelled(unmodelled: dict[str, list[dict[str, Any]]]) -> None:
        for b in unmodelled["ram_blocks"]:
            log.info(
                "incoming migration: RAM block '%s' (%d bytes) is not modelled:"
                " %d zero and %d raw pages read and dropped",
                b["name"],
                b["length"],
                b["zero_pages"],
                b["normal_pages"],
            )
        for sec in unmodelled["sections"]:
            log.info(
                "incoming migration: device section '%s' instance %d (version %d, %d bytes)"
                " is not modelled: decoded by the stream's VMDESCRIPTION as '%s', %s",
                sec["idstr"],
                sec["instance_id"],
                sec["version_id"],
                sec["size"],
                sec["vmsd_name"],
                _field_summary(sec["fields"]),
            )

    def cancel(self) -> None:
        """Nothing to cancel on a destination; ``quit`` ends the wait."""

    def info(self) -> dict[str, Any]:
        """QMP ``query-migrate`` on the destination (module docstring)."""
        status = self.status
        info: dict[str, Any] = {"status": str(status)}
        if status in (MigrationStatus.SETUP, MigrationStatus.ACTIVE):
            address = socket_address(self.uri)
            if address is not None:
                info["socket-address"] = [address]
        with self._lock:
            if self._error is not None:
                info["error-desc"] = self._error
            if self._stats is not None:
                info["x-vmkit-received"] = dict(self._stats)
            if self._unmodelled is not None:
                # vmkit's own: what the stream held that this machine does not model.
                info["x-vmkit-unmodelled"] = {k: list(v) for k, v in self._unmodelled.items()}
            stamps = {"loaded": self._loaded, "resumed": self._resumed}
        stamps = {k: v for k, v in stamps.items() if v is not None}
        if stamps:
            info[GUEST_PAUSE_KEY] = stamps
        return info
