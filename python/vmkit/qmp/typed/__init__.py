"""Typed QMP clients generated from vmkit's QAPI schema.

``qemu.qmp`` speaks the protocol; this package adds the vocabulary: a
method per command, keyword arguments and answers typed as the schema
declares them, events as typed objects, so that mypy catches a misspelt
argument or member in a script::

    import asyncio
    from vmkit.qmp.typed import AsyncQMP

    async def main() -> None:
        async with AsyncQMP() as qmp:
            await qmp.connect("/tmp/vm.qmp")
            status = await qmp.query_status()          # StatusInfo
            print(status["status"])
            async with qmp.listen("MIGRATION") as events:
                await qmp.migrate(uri="unix:/tmp/dest.sock", capabilities=[
                    {"capability": "events", "state": True}])
                while (await events.get()).data["status"] != "completed":
                    pass

    asyncio.run(main())

:class:`QMP` is the synchronous flavour. Subscribing is entering the
``listen`` block, before the command runs, so no event the command causes
is missed, even one sent before its answer. The clients work with QEMU
too, for the commands it has.

The types and methods live in :mod:`vmkit.qmp.typed.generated`, which
``python -m vmkit.qmp.qapi.pygen`` writes from the schema.
"""

from vmkit.qmp.typed.base import ABSENT, Absent, AsyncListener, Listener
from vmkit.qmp.typed.client import QMP, Address, AsyncQMP, event_of
from vmkit.qmp.typed.generated import *  # noqa: F403 - the schema's types
from vmkit.qmp.typed.generated import __all__ as _generated

__all__ = [
    "ABSENT",
    "QMP",
    "Absent",
    "Address",
    "AsyncListener",
    "AsyncQMP",
    "Listener",
    "event_of",
    *_generated,
]
