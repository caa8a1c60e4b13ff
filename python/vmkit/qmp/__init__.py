"""The QMP wire-protocol layer: what a QEMU QMP monitor looks like from a socket.

vmkit machines are driven over QMP, so clients written for QEMU (QEMU's own
``qemu.qmp`` library, libvirt-style tools, ``socat`` and a human) work
unchanged. This package is the protocol only; machine commands (``stop``,
``qom-get``, ``device_add``...) are registered into it by their owners.

Layers, one module each:

* :mod:`vmkit.qmp.parser` — bytes to JSON values, accepting QEMU's JSON
  dialect (single-quoted strings, no delimiters) and recovering from bad input
  the way QEMU does, within documented size/token/nesting limits.
* :mod:`vmkit.qmp.errors` — :class:`QMPError` (a :class:`vmkit.errors.VmkitError`),
  the QEMU error classes, and :func:`to_qmp_error`, the one table from
  vmkit's exceptions to QMP errors.
* :mod:`vmkit.qmp.qapi` — vmkit's QMP schema in QEMU's QAPI language (data
  files), read once: argument checking, ``query-qmp-schema``, output
  checking, and the generator of the typed client.
* :mod:`vmkit.qmp.commands` — :class:`CommandRegistry`, whose commands are
  declared in a QAPI schema (or, for ad-hoc servers, in argument tables)
  and checked before a handler runs, and :func:`dispatch`, which answers
  one request like ``qapi/qmp-dispatch.c``.
* :mod:`vmkit.qmp.server` — :class:`QMPServer`: UNIX or TCP sockets, many
  clients, greeting, capabilities negotiation, events, CRLF framing; asyncio
  or a background thread.
* :mod:`vmkit.qmp.client` — :class:`QMPSocket`: a small synchronous client
  that keeps every message as sent (scripts, tests, benchmarks).
* :mod:`vmkit.qmp.typed` — typed clients (asynchronous and synchronous,
  over ``qemu.qmp``) generated from the schema.

Example::

    from vmkit.qmp import CommandContext, CommandRegistry, JSONValue, QMPServer, QMPVersion

    registry = CommandRegistry()

    @registry.command("query-status")
    def query_status(ctx: CommandContext) -> JSONValue:
        return {"status": "running", "running": True}

    @registry.command("echo", {"text": "str", "*times": "uint8"})
    async def echo(ctx: CommandContext) -> JSONValue:   # handlers may be async
        return ctx.arguments                            # checked before we get here

    server = QMPServer(registry, version=QMPVersion(9, 2, 0, "vmkit"))
    server.start_in_thread("/tmp/vm.qmp")
    server.emit("RESUME")
    ...
    server.close()
"""

from vmkit.qmp.client import QMPSocket
from vmkit.qmp.commands import (
    CHECK_OUTPUT_ENV,
    EXTRA_MEMBERS,
    QUERY_QMP_SCHEMA,
    ArgType,
    Command,
    CommandContext,
    CommandRegistry,
    Enum,
    Handler,
    OutputMismatchError,
    Schema,
    SessionPhase,
    SessionState,
    add_builtin_commands,
    check_arguments,
    dispatch,
    error_response,
)
from vmkit.qmp.errors import (
    CommandNotFound,
    DeviceNotActive,
    DeviceNotFound,
    ErrorClass,
    GenericError,
    KVMMissingCap,
    QMPError,
    to_qmp_error,
)
from vmkit.qmp.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_NESTING,
    DEFAULT_MAX_TOKEN_COUNT,
    JSONStreamParser,
    JSONValue,
    ParsedMessage,
    ParseFailure,
    ParseResult,
)
from vmkit.qmp.server import (
    ANSWERS_PER_TURN,
    INPUT_SLICE,
    MAX_PENDING_OUTPUT,
    UNIX_PATH_MAX,
    Address,
    QMPServer,
    QMPVersion,
    SessionStats,
    encode_message,
)

__all__ = [
    "ANSWERS_PER_TURN",
    "CHECK_OUTPUT_ENV",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_NESTING",
    "DEFAULT_MAX_TOKEN_COUNT",
    "EXTRA_MEMBERS",
    "INPUT_SLICE",
    "MAX_PENDING_OUTPUT",
    "QUERY_QMP_SCHEMA",
    "UNIX_PATH_MAX",
    "Address",
    "ArgType",
    "Command",
    "CommandContext",
    "CommandNotFound",
    "CommandRegistry",
    "DeviceNotActive",
    "DeviceNotFound",
    "Enum",
    "ErrorClass",
    "GenericError",
    "Handler",
    "JSONStreamParser",
    "JSONValue",
    "KVMMissingCap",
    "OutputMismatchError",
    "ParseFailure",
    "ParseResult",
    "ParsedMessage",
    "QMPError",
    "QMPServer",
    "QMPSocket",
    "QMPVersion",
    "Schema",
    "SessionPhase",
    "SessionState",
    "SessionStats",
    "add_builtin_commands",
    "check_arguments",
    "dispatch",
    "encode_message",
    "error_response",
    "to_qmp_error",
]
