"""UNIX-socket connections that keep the descriptors a client passes.

QEMU's ``getfd`` and ``add-fd`` take a descriptor the client sent with the
command as ``SCM_RIGHTS`` ancillary data. asyncio's transports (and
uvloop's) read with ``recv`` and so drop ancillary data: the kernel closes
the descriptors. This module is a small event-loop transport for accepted
UNIX-socket connections that reads with ``recvmsg`` and hands received
descriptors to its protocol's ``fds_received`` before the bytes they came
with. It speaks the subset of :class:`asyncio.Transport` a QMP session
uses: writes buffered past what the socket takes, ``pause_writing`` /
``resume_writing`` at high and low water marks, reading paused and
resumed, close after the buffer drained, and abort.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["FdReceiver", "UnixFdServer", "UnixFdTransport"]

logger = logging.getLogger(__name__)

#: Descriptors accepted with one message; more are closed by the kernel
#: (``MSG_CTRUNC``). QEMU's monitor takes up to 16 too.
MAX_FDS_PER_MESSAGE = 16

# Below glibc's mmap threshold, and read into one buffer reused for every
# read: a fresh large buffer per read would be mmapped and freed each time,
# which raises glibc's threshold and leaves freed memory in the heap.
_READ_SIZE = 64 << 10
_HIGH_WATER = 64 << 10
_LOW_WATER = 16 << 10
_ACCEPTS_PER_WAKEUP = 64


class FdReceiver(Protocol):
    """A protocol that wants the descriptors passed to it: it owns them
    (and must close those it does not keep)."""

    def fds_received(self, fds: list[int]) -> None: ...


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            numbers = array.array("i")
            numbers.frombytes(data[: len(data) - len(data) % numbers.itemsize])
            fds.extend(numbers)
    return fds


class UnixFdTransport(asyncio.Transport):
    """One accepted connection (see the module's description)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buffer = bytearray()
        self._rbuf = bytearray(_READ_SIZE)
        self._closing = False
        self._lost = False
        self._reading = False
        self._eof = False
        self._writing_paused = False
        self._high_water = _HIGH_WATER
        self._low_water = _LOW_WATER
        loop.call_soon(self._start)

    def _start(self) -> None:
        self._protocol.connection_made(self)
        if not self._closing:
            self.resume_reading()

    # --- asyncio.BaseTransport / ReadTransport --------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            with contextlib.suppress(OSError):
                return self._sock.getpeername()
            return default
        if name == "sockname":
            with contextlib.suppress(OSError):
                return self._sock.getsockname()
        return default

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and not self._eof:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def _read_ready(self) -> None:
        try:
            n, ancdata, flags, _ = self._sock.recvmsg_into(
                [self._rbuf], socket.CMSG_SPACE(MAX_FDS_PER_MESSAGE * 4)
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        fds = _received_fds(ancdata)
        if flags & socket.MSG_CTRUNC:
            logger.warning(
                "client passed more than %d descriptors; the rest were closed", MAX_FDS_PER_MESSAGE
            )
        if fds:
            receiver: Callable[[list[int]], None] | None = getattr(
                self._protocol, "fds_received", None
            )
            if receiver is None:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        socket.close(fd)
            else:
                receiver(fds)
        if n:
            self._protocol.data_received(bytes(memoryview(self._rbuf)[:n]))
            return
        # End of input.
        self.pause_reading()
        self._eof = True
        if not self._protocol.eof_received():
            self.close()

    # --- asyncio.WriteTransport -------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        view = memoryview(data)
        if not self._buffer:
            try:
                sent = self._sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._force_close(exc)
                return
            if sent == len(view):
                return
            view = view[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += view
        if not self._writing_paused and len(self._buffer) > self._high_water:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        del self._buffer[:sent]
        if self._writing_paused and len(self._buffer) <= self._low_water:
            self._writing_paused = False
            self._protocol.resume_writing()
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._connection_lost(None)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water, self._high_water

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = _HIGH_WATER if high is None else high
        self._low_water = self._high_water // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Closes once the buffered output has been written."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._buffer:
            self._loop.call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        self._closing = True
        self.pause_reading()
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class UnixFdServer:
    """Accepts connections on a listening UNIX socket and gives each a
    :class:`UnixFdTransport` with a protocol from ``factory``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        sock.setblocking(False)
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._factory = factory
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        sock = self._sock
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE and the like: log, keep listening
                logger.warning("QMP accept failed: %s", exc)
                return
            UnixFdTransport(self._loop, conn, self._factory())

    def close(self) -> None:
        """Stops listening (connections already accepted stay)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: closing is immediate."""
