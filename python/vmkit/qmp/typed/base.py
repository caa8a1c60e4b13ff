"""What the generated typed client is built on: event listeners over
``qemu.qmp`` and the ``ABSENT`` marker.

A listener is subscribed when its ``with`` block is entered, before
anything in the block runs, so the events a command in the block causes
reach it whenever the server sends them — before the command's answer or
after::

    async with qmp.listen("MIGRATION") as events:
        await qmp.migrate(uri="unix:/run/dest.sock")
        while (await events.get()).data["status"] != "completed":
            ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Generic, TypeVar

from qemu.qmp import EventListener, Message, QMPClient

__all__ = ["ABSENT", "Absent", "AsyncListener", "Listener"]

E_co = TypeVar("E_co", covariant=True)


class Absent:
    """The type of :data:`ABSENT`."""

    _instance: Absent | None = None

    def __new__(cls) -> Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent()
"""The default of an optional argument whose type admits ``null``
(``tls-creds``): leaving it out is not the same as sending ``None``."""


class AsyncListener(Generic[E_co]):
    """Events with the names given, as typed objects, from the moment the
    ``async with`` block is entered until it is left."""

    def __init__(
        self,
        client: QMPClient,
        names: Sequence[str],
        make: Callable[[Message], E_co],
    ) -> None:
        if not names:
            raise ValueError("listen to at least one event name")
        self._client = client
        self._listener = EventListener(list(names))
        self._make = make

    async def __aenter__(self) -> AsyncListener[E_co]:
        self._client.register_listener(self._listener)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.remove_listener(self._listener)

    def subscribe(self) -> None:
        """What entering the block does, for callers without one."""
        self._client.register_listener(self._listener)

    def unsubscribe(self) -> None:
        """What leaving the block does."""
        self._client.remove_listener(self._listener)

    async def get(self) -> E_co:
        """The next event, waiting for it if none has arrived."""
        return self._make(await self._listener.get())

    def empty(self) -> bool:
        """No event waiting."""
        return self._listener.empty()

    def __aiter__(self) -> AsyncIterator[E_co]:
        return self

    async def __anext__(self) -> E_co:
        return await self.get()


class Listener(Generic[E_co]):
    """:class:`AsyncListener` for the synchronous client: ``with`` instead
    of ``async with``, and :meth:`get` waits by running the client's loop."""

    def __init__(self, inner: AsyncListener[E_co], loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def __enter__(self) -> Listener[E_co]:
        self._inner.subscribe()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inner.unsubscribe()

    def get(self, timeout: float | None = None) -> E_co:
        """The next event; ``TimeoutError`` after ``timeout`` seconds without one."""
        return self._loop.run_until_complete(asyncio.wait_for(self._inner.get(), timeout))

    def empty(self) -> bool:
        """No event waiting (among those read so far)."""
        return self._inner.empty()

    def __iter__(self) -> Iterator[E_co]:
        while True:
            yield self.get()
