"""Drives a live migration between two QMP monitors, vmkit's or QEMU's,
with QEMU's own client (``qemu.qmp``): the I/O behind ``vmkit migrate``.

:func:`drive` connects to both monitors, starts the destination's incoming
migration if it waits with ``-incoming defer`` (``migrate-incoming``, by
default on ``tcp:`` port 0 of the destination monitor's host, the port
then read from its ``socket-address``) or takes the URI it listens on,
sets the capabilities and parameters, issues ``migrate`` on the source,
and follows the source's ``query-migrate`` until it ended, reporting each
look to a callback (and answering ``migrate-continue`` when the source
pauses before switchover). Then it waits for the destination to finish loading
and, as libvirt does, runs it if the source was running and the
destination was left paused (``-S``), unless asked not to. It returns the
final ``query-migrate`` of both sides; :mod:`vmkit.migration_report`
makes sense of them.

A mistake or a failure is a :class:`DriveError` carrying one line and the
exit status ``vmkit migrate`` gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from vmkit.migration_report import ENDED, Progress, progress_of

__all__ = [
    "DriveError",
    "MigrationOutcome",
    "MigrationRequest",
    "drive",
    "parse_monitor_address",
    "uri_of_socket_address",
]

#: How often the source's ``query-migrate`` is read while it runs.
POLL_INTERVAL = 0.1
#: How long to wait for a monitor to accept a connection.
CONNECT_TIMEOUT = 10.0
#: How long to wait for one monitor's answer, and for the destination to
#: finish loading once the source completed: guards against a hang.
ANSWER_TIMEOUT = 60.0


class DriveError(Exception):
    """A migration that could not be driven: ``str(e)`` is one line for
    the user, ``status`` the exit status (2: a usage mistake, 1: a failure,
    130: interrupted)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MigrationRequest:
    """What to migrate, where, and how."""

    #: The monitors: ``unix:PATH``, ``tcp:HOST:PORT`` or a socket path.
    source: str
    dest: str
    #: The migration URI; ``None``: the one the destination listens on, or
    #: ``tcp:`` port 0 on the destination monitor's host for a deferred one.
    uri: str | None = None
    #: ``max-bandwidth`` (bytes/s) and ``downtime-limit`` (ms), if given.
    max_bandwidth: int | None = None
    downtime_limit: int | None = None
    #: Capabilities to set, by name.
    capabilities: Mapping[str, bool] = field(default_factory=dict)
    #: Leave a destination that loaded paused, even if the source ran.
    leave_paused: bool = False


@dataclass
class MigrationOutcome:
    """The final ``query-migrate`` of both sides, the URI used, and the
    progress samples taken while the source migrated."""

    source_info: dict[str, Any]
    dest_info: dict[str, Any]
    uri: str
    samples: list[Progress]
    dest_status: str


def parse_monitor_address(text: str) -> str | tuple[str, int]:
    """``unix:PATH`` or a path → the path; ``tcp:HOST:PORT`` → ``(host, port)``.

    :raises DriveError: (status 2) an address that does not parse.
    """
    kind, sep, rest = text.partition(":")
    if sep and kind == "unix":
        if not rest:
            raise DriveError(f"'{text}': expected unix:PATH", 2)
        return rest
    if sep and kind == "tcp":
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DriveError(f"'{text}': expected tcp:HOST:PORT", 2)
        return (host, int(port))
    if not text:
        raise DriveError("a monitor address is empty", 2)
    return text


def uri_of_socket_address(address: Mapping[str, Any]) -> str | None:
    """The migration URI for one of QEMU's ``SocketAddress`` objects."""
    kind = address.get("type")
    if kind == "inet":
        host, port = str(address.get("host", "")), str(address.get("port", ""))
        return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
    if kind == "unix":
        return f"unix:{address.get('path')}"
    if kind == "vsock":
        return f"vsock:{address.get('cid')}:{address.get('port')}"
    return None


class _Monitor:
    """One connected monitor: its role for messages, and its client."""

    def __init__(self, role: str, text: str) -> None:
        self.role = role
        self.text = text
        self.client = QMPClient(f"vmkit-migrate-{role}")

    async def connect(self) -> None:
        address = parse_monitor_address(self.text)
        try:
            await asyncio.wait_for(self.client.connect(address), CONNECT_TIMEOUT)
        except (QMPError, OSError, TimeoutError) as e:
            reason = str(e) or type(e).__name__
            raise DriveError(
                f"cannot connect to the {self.role} monitor {self.text}: {reason}"
            ) from None

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.client.execute(cmd, args), ANSWER_TIMEOUT)
        except ExecuteError as e:
            raise DriveError(f"{self.role}: {cmd}: {e}") from None
        except (QMPError, OSError, EOFError, TimeoutError) as e:
            reason = str(e) or type(e).__name__
            raise DriveError(f"lost the {self.role} monitor during {cmd}: {reason}") from None

    async def close(self) -> None:
        with contextlib.suppress(QMPError, OSError, EOFError):
            await self.client.disconnect()


async def _incoming_uri(dest: _Monitor, request: MigrationRequest) -> str:
    """Makes the destination listen if it waits with ``defer``; returns the
    URI the source is to connect to."""
    status = (await dest.execute("query-status"))["status"]
    info = await dest.execute("query-migrate")
    incoming = info.get("status", "none")
    if status != "inmigrate" or incoming in ENDED:
        raise DriveError(
            f"the destination is not waiting for a migration (status '{status}',"
            f" migration '{incoming}'): start it with -incoming defer or -incoming URI"
        )
    if incoming == "none":
        # Waits with defer: vmkit migrate chooses where it listens.
        uri = request.uri or _default_uri(request.dest)
        capabilities = _capability_list(request)
        if capabilities:
            # Some (multifd, return-path) must match on both sides.
            await dest.execute("migrate-set-capabilities", {"capabilities": capabilities})
        await dest.execute("migrate-incoming", {"uri": uri})
        info = await dest.execute("query-migrate")
    elif request.uri is not None:
        return request.uri
    for address in info.get("socket-address") or []:
        found = uri_of_socket_address(address)
        if found is not None:
            return found
    if request.uri is not None:
        return request.uri
    raise DriveError(
        "the destination listens but does not say where (no socket-address): give --uri"
    )


def _default_uri(dest_monitor: str) -> str:
    address = parse_monitor_address(dest_monitor)
    if isinstance(address, tuple):
        host = address[0]
        return f"tcp:[{host}]:0" if ":" in host else f"tcp:{host}:0"
    return "tcp:127.0.0.1:0"


def _capability_list(request: MigrationRequest) -> list[dict[str, object]]:
    return [{"capability": name, "state": on} for name, on in request.capabilities.items()]


async def _follow(
    source: _Monitor,
    on_progress: Callable[[Progress], object],
    interrupted: asyncio.Event,
) -> tuple[dict[str, Any], list[Progress]]:
    """Reads the source's ``query-migrate`` until the migration ended."""
    samples: list[Progress] = []
    cancelled = False
    while True:
        info: dict[str, Any] = await source.execute("query-migrate")
        progress = progress_of(info)
        samples.append(progress)
        on_progress(progress)
        if progress.status in ENDED:
            return info, samples
        if progress.status == "pre-switchover" and not interrupted.is_set():
            # pause-before-switchover: nothing else to do there, so go on.
            await source.execute("migrate-continue", {"state": "pre-switchover"})
        if interrupted.is_set() and not cancelled:
            await source.execute("migrate_cancel")
            cancelled = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), POLL_INTERVAL)


async def _dest_done(dest: _Monitor) -> dict[str, Any]:
    """The destination's ``query-migrate`` once its load ended."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        info: dict[str, Any] = await dest.execute("query-migrate")
        if info.get("status") in ENDED:
            return info
        if time.monotonic() > deadline:
            raise DriveError(
                f"the destination did not finish loading (status '{info.get('status')}')"
            )
        await asyncio.sleep(POLL_INTERVAL / 2)


async def drive(
    request: MigrationRequest,
    on_progress: Callable[[Progress], object] = lambda _p: None,
    *,
    handle_sigint: bool = False,
) -> MigrationOutcome:
    """Migrates as ``request`` says (module docstring); calls
    ``on_progress`` with each look at the source. With ``handle_sigint``
    a Ctrl-C cancels the migration (``migrate_cancel``) and ends with a
    :class:`DriveError` of status 130.

    :raises DriveError: the monitors cannot be reached, the destination is
        not waiting, a command is refused, or the migration failed.
    """
    # qemu.qmp logs what it also raises; the error is reported once, by us.
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    source = _Monitor("source", request.source)
    dest = _Monitor("destination", request.dest)
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_sigint:
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        await source.connect()
        await dest.connect()
        source_status = (await source.execute("query-status"))["status"]
        uri = await _incoming_uri(dest, request)
        capabilities = _capability_list(request)
        if capabilities:
            await source.execute("migrate-set-capabilities", {"capabilities": capabilities})
        parameters: dict[str, object] = {}
        if request.max_bandwidth is not None:
            parameters["max-bandwidth"] = request.max_bandwidth
        if request.downtime_limit is not None:
            parameters["downtime-limit"] = request.downtime_limit
        if parameters:
            await source.execute("migrate-set-parameters", parameters)
        if interrupted.is_set():
            raise DriveError("interrupted before the migration began", 130)
        await source.execute("migrate", {"uri": uri})
        source_info, samples = await _follow(source, on_progress, interrupted)
        status = source_info.get("status")
        if status == "cancelled":
            raise DriveError("interrupted: the migration was cancelled", 130)
        if status != "completed":
            desc = source_info.get("error-desc") or "no reason given"
            raise DriveError(f"the migration failed: {desc}")
        dest_info = await _dest_done(dest)
        if dest_info.get("status") != "completed":
            desc = dest_info.get("error-desc") or "no reason given"
            raise DriveError(f"the destination failed to load the migration: {desc}")
        dest_status = (await dest.execute("query-status"))["status"]
        if dest_status == "paused" and source_status == "running" and not request.leave_paused:
            await dest.execute("cont")
            dest_status = (await dest.execute("query-status"))["status"]
            dest_info = await dest.execute("query-migrate")
        return MigrationOutcome(source_info, dest_info, uri, samples, dest_status)
    finally:
        if handle_sigint:
            loop.remove_signal_handler(signal.SIGINT)
        await source.close()
        await dest.close()
