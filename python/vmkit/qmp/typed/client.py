"""The typed QMP clients: :class:`AsyncQMP` and :class:`QMP`, over ``qemu.qmp``.

Their methods (one per command of vmkit's schema, from
:mod:`vmkit.qmp.typed.generated`) send the command with
``QMPClient.execute`` and return the answer as the schema types it; an
error answer raises ``qemu.qmp.ExecuteError`` as with ``qemu.qmp`` itself.
They work with any QMP server for the commands it has — ``vmkit run`` or
QEMU. Nothing is checked at run time: the types are for mypy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import Message, QMPClient

from vmkit.qmp.typed.base import AsyncListener, Listener
from vmkit.qmp.typed.generated import EVENT_TYPES, AnyEvent, AsyncCommands, SyncCommands

__all__ = ["QMP", "Address", "AsyncQMP", "event_of"]

Address = str | tuple[str, int]
"""A UNIX socket path or a TCP ``(host, port)``."""

T = TypeVar("T")


def event_of(message: Message) -> AnyEvent:
    """A QMP event message as its typed event object (``timestamp`` in
    seconds; ``-1`` stays ``-1``, QEMU's "no time")."""
    stamp = message.get("timestamp")
    seconds = micros = -1
    if isinstance(stamp, dict):
        seconds, micros = int(stamp.get("seconds", -1)), int(stamp.get("microseconds", -1))
    timestamp = -1.0 if seconds < 0 else seconds + micros / 1_000_000
    return EVENT_TYPES[str(message["event"])](message.get("data", {}), timestamp)


class AsyncQMP(AsyncCommands):
    """An asynchronous typed client::

        async with AsyncQMP() as qmp:
            await qmp.connect("/run/vm.qmp")
            status = await qmp.query_status()      # StatusInfo
            async with qmp.listen("STOP") as events:
                await qmp.stop()
                print((await events.get()).timestamp)

    ``client`` is the underlying ``qemu.qmp.QMPClient``.
    """

    def __init__(self, name: str | None = None) -> None:
        self.client = QMPClient(name)

    async def connect(self, address: Address) -> None:
        """Connects and negotiates capabilities."""
        await self.client.connect(address)

    async def disconnect(self) -> None:
        """Disconnects. After ``quit`` the server has hung up already, as
        QEMU does: that is not an error here."""
        with contextlib.suppress(EOFError):
            await self.client.disconnect()

    async def __aenter__(self) -> AsyncQMP:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def _execute(self, command: str, arguments: dict[str, object]) -> object:
        return await self.client.execute(command, arguments or None)

    def _listen(self, names: tuple[str, ...]) -> AsyncListener[Any]:
        return AsyncListener(self.client, names, event_of)


class QMP(SyncCommands):
    """A synchronous typed client: :class:`AsyncQMP` on an event loop of
    its own, run while a call waits::

        with QMP("/run/vm.qmp") as qmp:
            with qmp.listen("RESUME") as events:
                qmp.cont()
                events.get(timeout=5)
    """

    def __init__(self, address: Address | None = None, *, name: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self.inner = AsyncQMP(name)
        """The asynchronous client it drives."""
        if address is not None:
            self.connect(address)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def connect(self, address: Address) -> None:
        """Connects and negotiates capabilities."""
        self._run(self.inner.connect(address))

    def close(self) -> None:
        """Disconnects and closes the loop."""
        if not self._loop.is_closed():
            try:
                self._run(self.inner.disconnect())
            finally:
                self._loop.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _execute(self, command: str, arguments: dict[str, object]) -> object:
        return self._run(self.inner._execute(command, arguments))

    def _listen(self, names: tuple[str, ...]) -> Listener[Any]:
        return Listener(self.inner._listen(names), self._loop)
