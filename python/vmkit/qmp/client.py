"""A small synchronous QMP client over a socket.

For scripts, tests and benchmarks that drive ``vmkit run`` or a real QEMU
without asyncio and want to see every message as it was sent: replies come
back whole (``return`` or ``error``), events are kept aside in
:attr:`QMPSocket.events`, and every line received stays in
:attr:`QMPSocket.raw_lines`. For applications, QEMU's own asynchronous
client, ``qemu.qmp``, works with vmkit unchanged.

::

    with QMPSocket("/run/vm.qmp", negotiate=True) as qmp:
        print(qmp.execute("query-status"))
        qmp.execute("qom-set", path="/machine/peripheral/ser0", property="wakeup", value=True)
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from vmkit.qmp.errors import ErrorClass, QMPError

__all__ = ["QMPSocket"]


class QMPSocket:
    """A connection to a QMP server at ``address`` (a UNIX socket path or
    ``(host, port)``), retried until ``timeout`` while the server is
    starting; reads time out after ``timeout`` too. The greeting is read at
    once; ``negotiate`` also sends ``qmp_capabilities``."""

    def __init__(
        self,
        address: str | os.PathLike[str] | tuple[str, int],
        *,
        timeout: float = 10.0,
        negotiate: bool = False,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(address, tuple):
                self.sock = socket.create_connection(address, timeout=timeout)
                break
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(os.fspath(address))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock.settimeout(timeout)
        self.file = self.sock.makefile("rb")
        self.events: list[dict[str, Any]] = []
        """Events received while waiting for replies, in order."""
        self.raw_lines: list[bytes] = []
        """Every line received, as received (CRLF included)."""
        self.greeting: dict[str, Any] = self.read()
        if negotiate:
            self.execute("qmp_capabilities")

    def read(self) -> dict[str, Any]:
        """The next message (reply or event)."""
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        self.raw_lines.append(line)
        message: dict[str, Any] = json.loads(line)
        return message

    def send_bytes(self, data: bytes) -> None:
        """Sends ``data`` as it is (for malformed input, several messages...)."""
        self.sock.sendall(data)

    def send(self, message: dict[str, Any], *, fds: list[int] | None = None) -> dict[str, Any]:
        """Sends ``message``; returns the first reply that is not an event
        (events go to :attr:`events`). ``fds`` travel with it as
        ``SCM_RIGHTS`` (QMP ``getfd``, ``add-fd``; UNIX sockets only)."""
        data = json.dumps(message).encode() + b"\r\n"
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)
        while True:
            reply = self.read()
            if "event" not in reply:
                return reply
            self.events.append(reply)

    def command(self, name: str, **arguments: Any) -> dict[str, Any]:
        """Runs command ``name``; returns the whole reply (``return`` or ``error``)."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        return self.send(message)

    def execute(self, name: str, **arguments: Any) -> Any:
        """Runs command ``name``; returns its ``return`` value (a JSON value,
        typed ``Any`` for scripts' convenience).

        :raises QMPError: the server answered with an error (its class and desc).
        """
        return self.execute_with_fds(name, [], **arguments)

    def execute_with_fds(self, name: str, fds: list[int], **arguments: Any) -> Any:
        """:meth:`execute`, passing ``fds`` along (e.g. ``getfd``)."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        reply = self.send(message, fds=fds)
        if "error" in reply:
            error = reply["error"]
            try:
                error_class: ErrorClass | None = ErrorClass(error.get("class"))
            except ValueError:
                error_class = None
            raise QMPError(str(error.get("desc")), error_class=error_class)
        return reply["return"]

    def next_event(self, name: str | None = None) -> dict[str, Any]:
        """The oldest kept event (named ``name``, if given), else the next one
        to arrive; it is removed from :attr:`events`. Other events stay kept."""
        while True:
            for i, event in enumerate(self.events):
                if name is None or event.get("event") == name:
                    return self.events.pop(i)
            message = self.read()
            if "event" in message:
                self.events.append(message)

    def close(self) -> None:
        """Closes the connection."""
        self.file.close()
        self.sock.close()

    def __enter__(self) -> QMPSocket:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
