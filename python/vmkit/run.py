"""``vmkit run``: one machine in the foreground, driven over QMP.

The process builds a :class:`~vmkit.machine.Machine`, serves QEMU's QMP on
a UNIX socket (mode 0600; by default ``vmkit-<pid>.qmp`` in a per-user
runtime directory, printed on stdout as ``QMP: unix:PATH``) or on a TCP
port (loopback only unless ``--qmp-allow-remote``), and runs until
``quit``, SIGTERM or SIGINT, removing its socket. Logs go to stderr.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from vmkit.machine import Machine
from vmkit.monitor import MachineMonitor, monitor_version
from vmkit.qmp import CommandRegistry, QMPServer

__all__ = [
    "QMPAddressError",
    "default_qmp_path",
    "load_plugins",
    "parse_qmp_address",
    "run_machine",
]

log = logging.getLogger("vmkit.run")


class QMPAddressError(ValueError):
    """A ``--qmp`` value that cannot be used."""


def runtime_dir() -> Path:
    """The per-user directory for sockets: ``$XDG_RUNTIME_DIR/vmkit``, else
    ``<tmp>/vmkit-<uid>``; created with mode 0700, and refused if another
    user owns it or others can write to it."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "vmkit" if base else Path(tempfile.gettempdir()) / f"vmkit-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise QMPAddressError(f"{path} is not a private directory of this user")
    return path


def default_qmp_path() -> str:
    """Where ``vmkit run`` puts its QMP socket when ``--qmp`` is not given."""
    return str(runtime_dir() / f"vmkit-{os.getpid()}.qmp")


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def parse_qmp_address(text: str, *, allow_remote: bool = False) -> str | tuple[str, int]:
    """``unix:PATH`` → the path; ``tcp:HOST:PORT`` → ``(host, port)``.

    A TCP host must resolve to loopback addresses only, unless
    ``allow_remote``: QMP has no authentication.
    """
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise QMPAddressError(f"'{text}': expected unix:PATH or tcp:HOST:PORT")
    if kind == "unix":
        return rest
    if kind == "tcp":
        host, sep, port_text = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
            raise QMPAddressError(f"'{text}': expected tcp:HOST:PORT")
        if not allow_remote and not _is_loopback(host):
            raise QMPAddressError(
                f"'{host}' is not a loopback address; QMP has no authentication"
                " (use --qmp-allow-remote to listen there anyway)"
            )
        return (host, int(port_text))
    raise QMPAddressError(f"'{text}': unknown QMP transport '{kind}' (unix or tcp)")


def _describe(address: str | tuple[str, int]) -> str:
    return f"unix:{address}" if isinstance(address, str) else f"tcp:{address[0]}:{address[1]}"


def load_plugins(modules: list[str]) -> None:
    """Imports each module: a plugin registers device types (or anything
    else) on import."""
    for module in modules:
        importlib.import_module(module)


def run_machine(
    vm: Machine,
    address: str | tuple[str, int] | None = None,
    *,
    start_paused: bool = False,
    name: str | None = None,
    verbose: bool = False,
    out: TextIO | None = None,
    incoming: str | None = None,
    migration_allow_remote: bool = False,
    unmodelled: str = "refuse",
    run_for: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Serves QMP for ``vm`` on ``address`` (default: :func:`default_qmp_path`)
    until ``quit``, SIGTERM or SIGINT; then closes the machine. Prints
    ``QMP: <address>`` on ``out`` (stdout) once listening. Returns the exit
    status: 0, or 1 with one line on stderr when the address cannot be
    served (a path that is not a socket, a socket another server listens
    on, a missing directory, a path too long for a UNIX socket...).
    ``migration_allow_remote`` lets migrations use TCP addresses that are
    not loopback (``--migration-allow-remote``); ``unmodelled`` is what an
    incoming migration does with what the machine does not model
    (``--unmodelled``). With ``run_for`` the machine also ends, as on
    SIGTERM, once it has been served that many seconds (by ``clock``);
    ``on_progress`` is then told the seconds served, several times a
    second (a progress bar)."""
    stream = out if out is not None else sys.stdout
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="vmkit[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    done = threading.Event()
    reason: list[str] = []

    def finish(why: str) -> None:
        reason.append(why)
        done.set()

    server: QMPServer | None = None
    previous: dict[signal.Signals, Any] = {}
    try:
        if address is None:
            address = default_qmp_path()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            finish(signal.Signals(signum).name)

        # Installed before the address is printed, and kept until the end:
        # a signal during start-up or cleanup must not kill the process.
        previous.update({s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)})
        monitor = MachineMonitor(vm, name=name, on_quit=lambda: finish("quit"))
        monitor.migration_allow_remote = migration_allow_remote
        monitor.incoming_unmodelled = unmodelled
        server = QMPServer(monitor.register(CommandRegistry()), version=monitor_version())
        monitor.attach(server)
        try:
            server.start_in_thread(address)
        except OSError as e:
            # One line: the caller's machine is closed below, nothing else failed.
            print(f"vmkit: cannot serve QMP on {_describe(address)}: {e}", file=sys.stderr)
            return 1
        listening: str | None = None
        if incoming == "defer":
            # QEMU's -incoming defer: inmigrate until migrate-incoming.
            vm.expect_incoming()
            monitor.incoming_deferred = True
            monitor.incoming_autostart = not start_paused
        elif incoming is not None:
            # Listening before the address is announced, so a source told
            # both can migrate at once.
            try:
                listening = monitor.start_incoming(incoming, autostart=not start_paused).uri
            except OSError as e:
                why = e.strerror or e  # without Python's "[Errno N]"
                print(f"vmkit: cannot listen for a migration on {incoming}: {why}", file=sys.stderr)
                return 1
        elif not start_paused:
            # Running before the address is announced: a client that read it
            # sees the state the options asked for, never a transient prelaunch.
            vm.cont()
        bound = server.address
        shown = _describe(bound)
        print(f"QMP: {shown}", file=stream, flush=True)
        if listening is not None:
            print(f"incoming: {listening}", file=stream, flush=True)
        log.info("machine %s, QMP on %s", vm.machine_type, shown)
        started = clock()
        step = 0.5 if on_progress is None else 0.1
        while True:
            left = None if run_for is None else run_for - (clock() - started)
            if left is not None and left <= 0:
                finish("run-for")
                break
            if done.wait(step if left is None else min(step, left)):
                break
            if not server.is_serving:
                finish("server closed")
            if on_progress is not None:
                on_progress(clock() - started)
        why = reason[0] if reason else "?"
        if why != "quit":
            monitor.shutdown("host-signal")
        log.info("shutting down (%s)", why)
        return 0
    finally:
        if server is not None:
            server.close()
        vm.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
