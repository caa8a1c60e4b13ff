"""An asyncio QMP server: sockets, sessions, greeting, responses and events.

Each connection is one QMP session, as a QEMU QMP monitor serves one client:
greeting, capabilities negotiation, then command mode. Unlike QEMU, one
server accepts any number of simultaneous clients; their sessions are
independent (own parser, own negotiation state).

Wire behaviour mirrored from QEMU (``monitor/qmp.c``, ``monitor/monitor.c``):

* Every message sent is one line of compact ASCII JSON (non-ASCII escaped as
  ``\\uXXXX``) ending in CRLF: QEMU appends ``\\n`` and its monitor output
  layer turns every ``\\n`` into ``\\r\\n``.
* Greeting: ``{"QMP": {"version": {"qemu": {"micro", "minor", "major"},
  "package"}, "capabilities": []}}``. ``oob`` is never offered (QEMU offers it
  only on monitors with an I/O thread).
* Requests of one session run one at a time, in order; the session parses
  nothing more while a command runs (QEMU suspends the monitor the same way
  when OOB is off). Parse errors are answered in order with the other
  responses.
* Events reach only sessions in command mode; sessions still negotiating
  miss them (QEMU does not queue them either).
* Oversized or malformed input is answered with errors and the session goes
  on (see :mod:`vmkit.qmp.parser`); a disconnect drops the session's partial
  input and nothing else.

Deliberate additions: a client that stops reading while events pile up beyond
``max_pending_output`` bytes (default :data:`MAX_PENDING_OUTPUT`) is
disconnected, logged once (QEMU would buffer without bound); a response that
can't be encoded as JSON (NaN, a non-JSON type) becomes a ``GenericError``
"Response cannot be encoded: ..." with the id, while one nested deeper than
the encoder recurses is encoded without recursion. Each session's input is
worked through in bounded turns (:data:`INPUT_SLICE`,
:data:`ANSWERS_PER_TURN`), so one client's flood cannot stall the others.
Sync handlers run on the event loop thread, so they also run one at a time
across clients, like QEMU's single dispatcher; async handlers (long work
runs as a :mod:`vmkit.jobs` job they await) of different clients interleave.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import typing
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from vmkit.qmp.commands import (
    CommandRegistry,
    SessionPhase,
    SessionState,
    add_builtin_commands,
    dispatch_now,
    error_response,
)
from vmkit.qmp.errors import GenericError
from vmkit.qmp.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_NESTING,
    DEFAULT_MAX_TOKEN_COUNT,
    JSONStreamParser,
    JSONValue,
    ParseFailure,
    ParseResult,
)
from vmkit.qmp.unix_transport import UnixFdServer

__all__ = [
    "ANSWERS_PER_TURN",
    "INPUT_SLICE",
    "MAX_PENDING_OUTPUT",
    "UNIX_PATH_MAX",
    "Address",
    "QMPServer",
    "QMPVersion",
    "SessionStats",
    "encode_message",
]

logger = logging.getLogger(__name__)

Address: TypeAlias = "str | os.PathLike[str] | tuple[str, int]"
"""A UNIX socket path, or a TCP ``(host, port)`` (port 0 picks a free port)."""

MAX_PENDING_OUTPUT = 16 << 20
"""Default bytes of unsent output after which a session is dropped, not buffered further."""

INPUT_SLICE = 512
"""Default input bytes of one client lexed per event-loop turn (about a
millisecond of the lexer's work at worst, one token per byte); a read that
is one whole plain request goes through the fast path whatever its size."""

ANSWERS_PER_TURN = 64
"""Default replies (responses, parse errors) to one client per event-loop turn."""

UNIX_PATH_MAX = 108
"""``sizeof(sun_path)``: a UNIX socket path must be shorter (it ends in NUL)."""

_FLUSH_CHUNK = 64 << 10  # queued output handed to the transport per write
_INBOX_LIMIT = 64 << 10  # unparsed input of one client before reading pauses


@dataclass(frozen=True)
class QMPVersion:
    """The version a greeting (and typically ``query-version``) reports."""

    major: int = 0
    minor: int = 0
    micro: int = 0
    package: str = ""

    def to_json(self) -> dict[str, JSONValue]:
        """QEMU's ``VersionInfo``: ``{"qemu": {"micro", "minor", "major"}, "package"}``."""
        return {
            "qemu": {"micro": self.micro, "minor": self.minor, "major": self.major},
            "package": self.package,
        }


def encode_message(message: dict[str, JSONValue]) -> bytes:
    """One wire message: ASCII JSON plus CRLF. Raises ``ValueError``/``TypeError``
    for values JSON can't carry. Values nested deeper than the JSON encoder's
    recursion allows (an ``id`` the parser accepted can be 1023 levels deep)
    are encoded without recursion, to the same text."""
    try:
        text = json.dumps(message, ensure_ascii=True, allow_nan=False)
    except RecursionError:
        text = _dumps_deep(message)
    return text.encode("ascii") + b"\r\n"


def _dumps_deep(value: JSONValue) -> str:
    """``json.dumps(value, ensure_ascii=True, allow_nan=False)`` with an explicit stack."""
    parts: list[str] = []
    # Each entry is literal text (str) or a value still to encode (a 1-tuple).
    stack: list[str | tuple[JSONValue]] = [(value,)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        (current,) = item
        work: list[str | tuple[JSONValue]]
        if isinstance(current, dict):
            work = ["{"]
            for i, (key, member) in enumerate(current.items()):
                if not isinstance(key, str):
                    raise TypeError(f"keys must be str, not {type(key).__name__}")
                work += [(", " if i else "") + json.dumps(key) + ": ", (member,)]
            work.append("}")
        elif isinstance(current, list):
            work = ["["]
            for i, element in enumerate(current):
                work += [", "] if i else []
                work.append((element,))
            work.append("]")
        else:
            parts.append(json.dumps(current, ensure_ascii=True, allow_nan=False))
            continue
        stack.extend(reversed(work))
    return "".join(parts)


def _event_message(name: str, data: JSONValue | None) -> dict[str, JSONValue]:
    now = time.time_ns() // 1000
    message: dict[str, JSONValue] = {
        "event": name,
        "timestamp": {"seconds": now // 1_000_000, "microseconds": now % 1_000_000},
    }
    if data is not None:
        message["data"] = data
    return message


@dataclass
class SessionStats:
    """Counters of one session, for monitoring and tests (a snapshot)."""

    peer: str
    phase: SessionPhase
    bytes_received: int = 0
    """Input bytes read from the client."""
    bytes_parsed: int = 0
    """Input bytes handed to the parser so far (the rest waits its turn)."""
    answers: int = 0
    """Responses and parse-error replies sent."""
    output_queued: int = 0
    """Output bytes not yet written to the socket (ours plus the transport's)."""
    output_peak: int = 0
    """The most ``output_queued`` has been."""


class _Session(asyncio.Protocol):
    """One client connection, driven by the event loop's callbacks.

    Input is worked through in *turns*: each turn parses at most
    ``input_slice`` bytes and answers at most ``answers_per_turn`` messages,
    then yields to the loop if more is left, so one client's flood of input
    cannot keep the loop from the others. Unparsed input is bounded: reading
    pauses while 64 KiB wait. A command whose handler is synchronous is
    answered within its turn; an asynchronous handler (a job, see
    :mod:`vmkit.jobs`) runs as a task and the session parses nothing more
    until it is answered, so a client's commands still run one at a time,
    in order.

    Output goes straight to the transport until it asks us to pause
    (its buffer passed the high-water mark); then it is kept in one
    ``bytearray`` whose length is the real memory it takes. Past
    ``max_pending_output`` queued bytes the client is disconnected.
    """

    def __init__(self, server: QMPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.state = SessionState()
        self.parser = JSONStreamParser(
            max_message_size=server.max_message_size,
            max_token_count=server.max_token_count,
            max_nesting=server.max_nesting,
        )
        self.inbox = bytearray()
        self.pending: collections.deque[ParseResult] = collections.deque()
        self.command: asyncio.Task[dict[str, JSONValue]] | None = None
        self.writing_paused = False
        self.outbox = bytearray()
        self.eof = False
        self.turn_scheduled = False
        self.stats = SessionStats(peer="", phase=self.state.phase)
        self.closed = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        self.transport = typing.cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        number = next(self.server._session_numbers)
        self.state.peer = f"#{number} {peer}" if peer else f"#{number} unix"
        self.stats.peer = self.state.peer
        if not self.server.is_serving:
            self.transport.close()
            return
        self.server._sessions.add(self)
        logger.debug("QMP %s: connected", self.state.peer)
        self.send({"QMP": {"version": self.server.version.to_json(), "capabilities": []}})

    def data_received(self, data: bytes) -> None:
        if self.state.closing:
            return
        self.stats.bytes_received += len(data)
        self.inbox += data
        if not self.turn_scheduled:
            self._turn()
        else:
            self._update_reading()

    def eof_received(self) -> bool:
        self.eof = True
        # Idle: close our side too. Else keep the transport open to answer
        # what was sent before the EOF; _turn closes it when done.
        return not self._idle()

    def fds_received(self, fds: list[int]) -> None:
        """Descriptors passed with ``SCM_RIGHTS`` (UNIX sockets), kept for
        ``getfd``."""
        if self.state.closing:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            return
        self.state.fds_received(fds)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._sessions.discard(self)
        self.state.enter(SessionPhase.CLOSED)
        self.state.close_received_fds()
        self.inbox.clear()
        self.pending.clear()
        self.outbox = bytearray()
        if self.command is not None:
            self.command.cancel()
        if exc is not None:
            logger.debug("QMP %s: connection lost: %s", self.state.peer, exc)
        logger.debug("QMP %s: disconnected", self.state.peer)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._flush_outbox()
        if not self.writing_paused and not self.turn_scheduled:
            self._turn()

    # --- input, in turns ----------------------------------------------------

    def _idle(self) -> bool:
        """Nothing left to parse, run or send."""
        return not self.inbox and not self.pending and self.command is None and not self.outbox

    def _can_work(self) -> bool:
        return self.command is None and not self.writing_paused and not self.state.closing

    def _turn(self) -> None:
        """One bounded slice of work; schedules the next if more is left."""
        self.turn_scheduled = False
        answers = 0
        parsed = 0
        while self._can_work():
            if self.pending:
                if answers >= self.server.answers_per_turn:
                    break
                self._answer(self.pending.popleft())
                answers += 1
            elif self.inbox and parsed < self.server.input_slice:
                if not parsed:  # the usual case: the input is one whole request
                    whole = self.parser.feed_whole(self.inbox)
                    if whole is not None:
                        parsed = len(self.inbox)
                        self.stats.bytes_parsed += parsed
                        self.inbox.clear()
                        self.pending.append(whole)
                        continue
                size = min(len(self.inbox), self.server.input_slice)
                chunk = bytes(self.inbox[:size])
                del self.inbox[:size]
                parsed += size
                self.stats.bytes_parsed += size
                self.pending.extend(self.parser.feed(chunk))
            else:
                break
        if self._can_work() and (self.pending or self.inbox):
            self.turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)
        self._update_reading()
        if self.eof and self._idle() and not self.state.closing:
            self.close()

    def _answer(self, item: ParseResult) -> None:
        if isinstance(item, ParseFailure):
            logger.debug("QMP %s: %s", self.state.peer, item.desc)
            self.send(error_response(GenericError(item.desc)))
            return
        response = dispatch_now(self.server.registry, item.value, self.state)
        if isinstance(response, dict):
            self._answered(response)
            return
        self.command = asyncio.ensure_future(response)
        self.server._tasks.add(self.command)
        self.command.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task[dict[str, JSONValue]]) -> None:
        self.server._tasks.discard(task)
        self.command = None
        if task.cancelled():
            return
        self._answered(task.result())
        if not self.turn_scheduled:
            self._turn()

    def _answered(self, response: dict[str, JSONValue]) -> None:
        self.send(response)
        phase = self.state.phase
        if phase is SessionPhase.SHUTTING_DOWN:
            self.server._shutdown_soon()
        if phase in (SessionPhase.CLOSING, SessionPhase.SHUTTING_DOWN):
            # After what the command scheduled to follow its answer (QEMU
            # sends SHUTDOWN after quit's answer).
            asyncio.get_running_loop().call_soon(self.close)

    def _update_reading(self) -> None:
        # Reading goes on while a command runs (so a client that hangs up
        # is noticed at once) until the unparsed input reaches the bound.
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.eof or self.writing_paused or len(self.inbox) >= _INBOX_LIMIT:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # --- output -----------------------------------------------------------

    def send(self, message: dict[str, JSONValue]) -> None:
        """Queue one message; falls back to an error response if it can't be encoded."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.state.phase is SessionPhase.CLOSED:
            return
        try:
            data = encode_message(message)
        except (ValueError, TypeError) as exc:
            logger.error("QMP %s: cannot encode %r: %s", self.state.peer, list(message), exc)
            fallback = error_response(GenericError(f"Response cannot be encoded: {exc}"))
            with contextlib.suppress(ValueError, TypeError):
                if "id" in message:
                    encode_message({"id": message["id"]})
                    fallback["id"] = message["id"]
            data = encode_message(fallback)
        queued = len(self.outbox) + transport.get_write_buffer_size()
        if queued > self.server.max_pending_output:
            self._drop_slow_client(queued)
            return
        if self.writing_paused:
            self.outbox += data
        else:
            transport.write(data)
        if "event" not in message and "QMP" not in message:
            self.stats.answers += 1
        self.stats.output_peak = max(self.stats.output_peak, queued + len(data))

    def _flush_outbox(self) -> None:
        transport = self.transport
        while self.outbox and not self.writing_paused and transport is not None:
            if transport.is_closing():
                break
            size = min(len(self.outbox), _FLUSH_CHUNK)
            chunk = bytes(self.outbox[:size])
            del self.outbox[:size]
            transport.write(chunk)
        if not self.outbox:
            self.outbox = bytearray()  # give the memory back

    def _drop_slow_client(self, queued: int) -> None:
        """Disconnects a client that does not read what it is sent (logged
        once: the session is closed from here on)."""
        logger.warning(
            "QMP %s: client is not reading (%d bytes queued); disconnecting",
            self.state.peer,
            queued,
        )
        self.state.enter(SessionPhase.CLOSED)
        self.outbox = bytearray()
        if self.transport is not None:
            self.transport.abort()

    def send_event(self, message: dict[str, JSONValue]) -> None:
        if self.state.negotiated:
            self.send(message)

    def snapshot(self) -> SessionStats:
        """A copy of this session's counters."""
        transport = self.transport
        buffered = 0
        if transport is not None and not transport.is_closing():
            buffered = transport.get_write_buffer_size()
        return dataclasses.replace(
            self.stats, phase=self.state.phase, output_queued=len(self.outbox) + buffered
        )

    def close(self) -> None:
        """Closes the connection once what was sent has been written
        (queued output included)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.outbox:
            transport.write(bytes(self.outbox))
            self.outbox = bytearray()
        transport.close()


class QMPServer:
    """A QMP server for the commands of a :class:`~vmkit.qmp.commands.CommandRegistry`.

    asyncio use::

        server = QMPServer(registry, version=QMPVersion(9, 2, 0))
        await server.start("/run/vm.qmp")      # or ("127.0.0.1", 4444)
        server.emit("STOP")
        await server.wait_closed()             # until close() or a quit handler

    From synchronous code, ``server.start_in_thread(address)`` runs the same
    server on an event loop in a daemon thread; ``server.close()`` stops it.
    ``emit()`` may be called from any thread.

    ``qmp_capabilities`` and ``query-commands`` (and ``query-qmp-schema``,
    for a registry bound to a schema) are added to the registry if it lacks
    them.
    """

    def __init__(
        self,
        registry: CommandRegistry | None = None,
        *,
        version: QMPVersion | Sequence[int] = QMPVersion(),
        package: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_token_count: int = DEFAULT_MAX_TOKEN_COUNT,
        max_nesting: int = DEFAULT_MAX_NESTING,
        max_pending_output: int = MAX_PENDING_OUTPUT,
        input_slice: int = INPUT_SLICE,
        answers_per_turn: int = ANSWERS_PER_TURN,
    ) -> None:
        if min(input_slice, answers_per_turn) < 1:
            raise ValueError("input_slice and answers_per_turn must be positive")
        self.registry = registry if registry is not None else CommandRegistry()
        add_builtin_commands(self.registry)
        if not isinstance(version, QMPVersion):
            major, minor, micro = version
            version = QMPVersion(major, minor, micro)
        if package is not None:
            version = QMPVersion(version.major, version.minor, version.micro, package)
        self.version = version
        self.max_message_size = max_message_size
        self.max_token_count = max_token_count
        self.max_nesting = max_nesting
        self.max_pending_output = max_pending_output
        self.input_slice = input_slice
        self.answers_per_turn = answers_per_turn
        self._server: asyncio.Server | UnixFdServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: set[_Session] = set()
        self._session_numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[typing.Any]] = set()
        self._unix_path: str | None = None
        self._unix_inode: tuple[int, int] | None = None
        self._address: str | tuple[str, int] | None = None
        self._closed = threading.Event()
        self._closed_async: asyncio.Event | None = None
        self._closing: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: asyncio.Event | None = None

    # --- properties -----------------------------------------------------

    @property
    def address(self) -> str | tuple[str, int]:
        """The bound address: the socket path, or ``(host, port)`` with the real port."""
        if self._address is None:
            raise RuntimeError("server is not started")
        return self._address

    @property
    def session_count(self) -> int:
        """Connected clients."""
        return len(self._sessions)

    def session_stats(self) -> list[SessionStats]:
        """The counters of every connected client (safe from any thread)."""
        return [session.snapshot() for session in list(self._sessions)]

    @property
    def is_serving(self) -> bool:
        """True between a successful start and the beginning of close."""
        return self._server is not None and self._closing is None and not self._closed.is_set()

    # --- asyncio API ----------------------------------------------------

    async def start(self, address: Address) -> None:
        """Listen on ``address``; returns once the socket accepts connections.

        A UNIX socket is created with mode 0600 (bound in a private temporary
        directory, then renamed into place, so it is never reachable with a
        wider mode). A stale socket at the path (nobody listening) is
        replaced, as QEMU does; a socket another server listens on, any other
        existing file (directory, symbolic link...), a missing directory and
        a path of :data:`UNIX_PATH_MAX` bytes or more are refused with an
        ``OSError`` whose message says which.
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.get_running_loop()
        self._closed_async = asyncio.Event()
        if isinstance(address, tuple):
            host, port = address
            tcp = await self._loop.create_server(self._new_session, host, port)
            self._server = tcp
            sockname = tcp.sockets[0].getsockname()
            self._address = (str(sockname[0]), int(sockname[1]))
        else:
            path = os.fspath(address)
            sock = _bind_private_unix_socket(path)
            st = os.stat(path)
            self._unix_path, self._unix_inode = path, (st.st_dev, st.st_ino)
            # Our own transport: it keeps descriptors passed with SCM_RIGHTS.
            self._server = UnixFdServer(self._loop, sock, self._new_session)
            self._address = path
        logger.info("QMP server listening on %s", self._address)

    def emit(self, name: str, data: JSONValue | None = None) -> None:
        """Send event ``name`` (with ``data`` unless ``None``) to every negotiated client.

        The timestamp is taken now. Safe to call from any thread; does nothing
        if the server isn't running. With output checking on, an event the
        registry's schema does not declare so raises
        :class:`~vmkit.qmp.commands.OutputMismatchError` (a ``ValueError``).
        """
        self.registry.check_event(name, data)
        message = _event_message(name, data)
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed.is_set():
            logger.debug("QMP event %s dropped: server not running", name)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._broadcast(message)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: dict[str, JSONValue]) -> None:
        for session in list(self._sessions):
            session.send_event(message)

    async def aclose(self) -> None:
        """Stop listening, disconnect every client, remove the UNIX socket file."""
        if self._closing is None:
            self._closing = asyncio.current_task()
            try:
                await self._do_close()
            finally:
                self._closed.set()
                if self._closed_async is not None:
                    self._closed_async.set()
        elif self._closing is not asyncio.current_task():
            await self.wait_closed()

    async def _do_close(self) -> None:
        server = self._server
        if server is not None:
            server.close()
        self._remove_socket_file()
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sessions = list(self._sessions)
        for session in sessions:
            session.close()
        if sessions:
            # Closing flushes what was queued (a quit's answer, SHUTDOWN).
            await asyncio.wait([s.closed for s in sessions], timeout=5.0)
            for session in sessions:
                if session.transport is not None and not session.closed.done():
                    session.transport.abort()
        if server is not None:
            await server.wait_closed()
        logger.info("QMP server on %s closed", self._address)

    async def wait_closed(self) -> None:
        """Wait until the server has been closed (by :meth:`aclose` or a shutdown request)."""
        if self._closed.is_set():
            return
        if self._closed_async is None:
            raise RuntimeError("server is not started")
        await self._closed_async.wait()

    def _shutdown_soon(self) -> None:
        if self._closing is None and self._loop is not None:
            task = self._loop.create_task(self.aclose())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _remove_socket_file(self) -> None:
        path, inode = self._unix_path, self._unix_inode
        if path is None:
            return
        self._unix_path = None
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == inode:
                os.unlink(path)

    def _new_session(self) -> _Session:
        return _Session(self)

    # --- thread API -----------------------------------------------------

    def start_in_thread(self, address: Address, *, timeout: float = 10.0) -> QMPServer:
        """Run the server on its own event loop in a daemon thread; return ``self``.

        Returns once the socket is listening; raises whatever :meth:`start`
        raised. Stop it with :meth:`close` (or use the server as a context
        manager).
        """
        if self._thread is not None or self._server is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._thread_stop = asyncio.Event()
            try:
                await self.start(address)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            stop = asyncio.create_task(self._thread_stop.wait())
            closed = asyncio.create_task(self.wait_closed())
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stop, closed):
                task.cancel()
            await self.aclose()

        self._thread = threading.Thread(
            target=_run_event_loop, args=(main(),), name="qmp-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("QMP server thread did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start_in_thread` and join its thread."""
        thread = self._thread
        if thread is None:
            if self._closed.is_set() or self._server is None:
                return  # already stopped, or never started (start failed)
            raise RuntimeError("close() is for start_in_thread(); use 'await aclose()'")
        loop, stop = self._loop, self._thread_stop
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("QMP server thread did not stop")
        self._thread = None

    def wait_for_close(self, timeout: float | None = None) -> bool:
        """Block until the server is closed (e.g. by a ``quit`` handler); False on timeout."""
        return self._closed.wait(timeout)

    def __enter__(self) -> QMPServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self.close()


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Runs ``main`` on uvloop when it is installed (a dependency of vmkit on
    Linux), else on asyncio's own loop. A QMP round trip is mostly event-loop
    work; uvloop's loop, written in C, makes it about 1.6 times cheaper."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _check_unix_path(path: str) -> tuple[int, int] | None:
    """Refuses a path no client could reach, one that is not a socket, and a
    socket another server is listening on. A socket nobody listens on (left
    by a process that died) may be replaced: its ``(st_dev, st_ino)`` is
    returned; ``None`` when nothing is at the path."""
    size = len(os.fsencode(path))
    if size >= UNIX_PATH_MAX:
        raise OSError(
            f"socket path is {size} bytes; a UNIX socket path must be under {UNIX_PATH_MAX}",
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise FileExistsError(f"{path} is a symbolic link, not a socket")
    if stat.S_ISDIR(mode):
        raise FileExistsError(f"{path} is a directory, not a socket")
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return (st.st_dev, st.st_ino)  # stale: nobody listens
        except TimeoutError:
            pass  # listening, with a full backlog
    raise FileExistsError(f"another server is listening on {path}")


def _clear_unix_path(path: str) -> None:
    """Checks ``path`` (:func:`_check_unix_path`) and removes the socket
    there only if the check found it stale, and it is still that file."""
    stale = _check_unix_path(path)
    if stale is None:
        return
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == stale:
            os.unlink(path)


# Attempts at putting the socket in place while others keep creating a
# stale socket at the path; each failed attempt checks the path again.
_INSTALL_ATTEMPTS = 3


def _install_unix_socket(staging: str, path: str) -> None:
    """Gives the socket bound at ``staging`` the name ``path``. ``link(2)``
    never replaces a file (unlike ``rename(2)``): if something appeared at
    ``path`` since it was checked, the link fails, the path is checked
    again, and a live socket there is refused instead of being taken
    over."""
    for _ in range(_INSTALL_ATTEMPTS):
        try:
            os.link(staging, path)
            return
        except FileExistsError:
            _clear_unix_path(path)
    raise FileExistsError(f"{path} keeps being created by another process")


def _bind_private_unix_socket(path: str) -> socket.socket:
    """A listening UNIX socket at ``path`` with mode 0600, never exposed
    wider, never put over a socket another server listens on."""
    _clear_unix_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # "<dir>/.qmp-XXXXXXXX/s" must fit sun_path (108 bytes with its NUL).
        if len(os.fsencode(directory)) + len("/.qmp-XXXXXXXX/s") < 108:
            private_dir = tempfile.mkdtemp(prefix=".qmp-", dir=directory)  # mode 0700
            staging = os.path.join(private_dir, "s")
            try:
                sock.bind(staging)
                os.chmod(staging, 0o600)
                _install_unix_socket(staging, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging)
                os.rmdir(private_dir)
        else:  # no room for the staging directory: bind in place, then restrict
            # (bind(2) fails with EADDRINUSE if something appeared meanwhile).
            sock.bind(path)
            os.chmod(path, 0o600)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
