"""A migration destination for tests in a process that already has its
machine: a UNIX socket that writes whatever a sender sends into a file
(the stream is QEMU's, so restoring that file into a fresh machine is what
a live destination would have loaded)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging


class Receiver:
    """Accepts one connection on ``directory/dest.sock`` and keeps its bytes."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "dest.sock"
        self.stream = directory / "received.stream"
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(self.path))
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._receive)
        self.thread.start()

    @property
    def uri(self) -> str:
        """The ``migrate`` URI that reaches it."""
        return f"unix:{self.path}"

    def _receive(self) -> None:
        conn, _ = self.sock.accept()
        with conn, self.stream.open("wb") as out:
            while chunk := conn.recv(1 << 20):
                out.write(chunk)

    def close(self) -> None:
        """Waits for the sender to finish and stops listening."""
        self.thread.join(GUARD)
        self.sock.close()
