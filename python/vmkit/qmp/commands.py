"""QMP commands: the registry, argument checking, and request dispatch.

A command is a name, an argument schema, and a handler. Schemas are written
the way QAPI writes them (``qapi/*.json``)::

    registry = CommandRegistry()

    @registry.command("echo", {"text": "str", "*times": "uint8", "*mode": Enum("Mode", ["a", "b"])})
    def echo(ctx: CommandContext) -> JSONValue:
        return {"text": ctx.arguments["text"] * ctx.arguments.get("times", 1)}

Argument types (:data:`ArgType`):

==============  ===========================================================
``"str"``       a string
``"int"``       an integer in int64 range (``"int64"`` is the same)
``"int8"``..    ``int8``, ``int16``, ``int32``: range-checked integers
``"uint64"``    an integer; negative int64 values are accepted and wrapped
                modulo 2**64 as QEMU does "for backward compatibility"
                (``"uint"`` and ``"size"`` are the same)
``"uint8"``..   ``uint8``, ``uint16``, ``uint32``: range-checked
``"number"``    any JSON number, delivered as ``float``
``"bool"``      ``true`` or ``false``
``"null"``      ``null``
``"any"``       any JSON value, unchecked
``"object"``    any JSON object, members unchecked (not a QAPI type)
``[T]``         an array whose elements are ``T``
``{...}``       a nested struct: a schema of its own
:class:`Enum`   a string from a fixed set
==============  ===========================================================

A leading ``*`` on a member name makes it optional. Arguments are checked
before the handler runs, member by member in schema order, then for unknown
members, with the messages of QEMU's QObject input visitor
(``qapi/qobject-input-visitor.c``, ``qapi/qapi-visit-core.c``):

* ``Parameter 'x' is missing``
* ``Invalid parameter type for 'x', expected: integer`` (``string``,
  ``boolean``, ``number``, ``null``, ``object``, ``array``)
* ``Parameter 'x' expects uint64`` (``uint64`` gets this for any non-integer),
  ``Parameter 'x' expects uint8_t`` (out of range; QEMU names only the member
  here, and ``null`` for array elements)
* ``Parameter 'x' does not accept value 'y'`` (enums)
* ``Parameter 'x' is unexpected``

Nested names read ``a.b`` and ``a[0]``, as QEMU's ``full_name()`` spells them.

:func:`dispatch` answers one parsed request like ``qapi/qmp-dispatch.c`` and
``monitor/qmp.c``; see its docstring.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from vmkit import errors
from vmkit.qmp.errors import CommandNotFound, ErrorClass, GenericError, QMPError, to_qmp_error
from vmkit.qmp.parser import JSONValue

__all__ = [
    "EXTRA_MEMBERS",
    "QMP_CAPABILITIES",
    "ArgType",
    "Command",
    "CommandContext",
    "CommandRegistry",
    "Enum",
    "Handler",
    "Schema",
    "SessionPhase",
    "SessionState",
    "add_builtin_commands",
    "check_arguments",
    "dispatch",
    "dispatch_now",
    "error_response",
]

logger = logging.getLogger(__name__)

QMP_CAPABILITIES = "qmp_capabilities"
"""The one command allowed in capabilities-negotiation mode."""

NEGOTIATION_EXPECTED = "Expecting capabilities negotiation with 'qmp_capabilities'"
NEGOTIATION_COMPLETE = "Capabilities negotiation is already complete, command ignored"


@dataclass(frozen=True)
class Enum:
    """A QAPI enum type: a name (for documentation) and the accepted strings."""

    name: str
    values: Sequence[str]


ArgType: TypeAlias = str | Enum | list["ArgType"] | dict[str, "ArgType"]
"""A member type: a type name, an :class:`Enum`, ``[T]`` or a nested schema."""

Schema: TypeAlias = Mapping[str, ArgType]
"""Member name (``*`` prefix = optional) to member type."""

EXTRA_MEMBERS = "**"
"""Schema key whose type applies to members the schema does not name: for
commands that take free-form properties next to fixed ones, as QEMU's
``device_add`` and ``object-add`` (checked by the device or object later)."""

_INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
}
_UINT_LIMITS = {"uint8": (1 << 8) - 1, "uint16": (1 << 16) - 1, "uint32": (1 << 32) - 1}
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_SCALAR_TYPES = frozenset(
    {"str", "int", "int64", "uint", "uint64", "size", "number", "bool", "null", "any", "object"}
    | set(_INT_RANGES)
    | set(_UINT_LIMITS)
)


def _validate_type(spec: ArgType, where: str) -> None:
    if isinstance(spec, str):
        if spec not in _SCALAR_TYPES:
            raise ValueError(f"{where}: unknown argument type {spec!r}")
    elif isinstance(spec, list):
        if len(spec) != 1:
            raise ValueError(f"{where}: an array type is written [element-type]")
        _validate_type(spec[0], where)
    elif isinstance(spec, dict):
        _validate_schema(spec, where)
    elif not isinstance(spec, Enum):
        raise ValueError(f"{where}: unsupported argument type {spec!r}")


def _validate_schema(schema: Schema, where: str) -> None:
    for key, spec in schema.items():
        if key != EXTRA_MEMBERS and not key.lstrip("*"):
            raise ValueError(f"{where}: empty member name")
        _validate_type(spec, f"{where}.{key.lstrip('*')}")


# --- argument checking -------------------------------------------------------


def _type_error(path: str, expected: str) -> QMPError:
    return GenericError(f"Invalid parameter type for '{path}', expected: {expected}")


def _value_error(name: str, expected: str) -> QMPError:
    return GenericError(f"Parameter '{name}' expects {expected}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(spec: ArgType, value: JSONValue, path: str, name: str) -> JSONValue:
    """Check one value; ``path`` is its full name, ``name`` its member name."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _type_error(path, "object")
        return _check_struct(spec, value, f"{path}.")
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise _type_error(path, "array")
        return [_check_value(spec[0], item, f"{path}[{i}]", "null") for i, item in enumerate(value)]
    if isinstance(spec, Enum):
        if not isinstance(value, str):
            raise _type_error(path, "string")
        if value not in spec.values:
            raise GenericError(f"Parameter '{name}' does not accept value '{value}'")
        return value
    return _check_scalar(spec, value, path, name)


def _check_scalar(spec: str, value: JSONValue, path: str, name: str) -> JSONValue:
    if spec == "any":
        return value
    if spec == "str":
        if not isinstance(value, str):
            raise _type_error(path, "string")
        return value
    if spec == "bool":
        if not isinstance(value, bool):
            raise _type_error(path, "boolean")
        return value
    if spec == "number":
        if not (_is_int(value) or isinstance(value, float)):
            raise _type_error(path, "number")
        assert isinstance(value, int | float)
        return float(value)
    if spec == "null":
        if value is not None:
            raise _type_error(path, "null")
        return None
    if spec == "object":
        if not isinstance(value, dict):
            raise _type_error(path, "object")
        return value
    if spec in ("uint", "uint64", "size") or spec in _UINT_LIMITS:
        if not _is_int(value):
            raise _value_error(path, "uint64")
        assert isinstance(value, int)
        if not _INT64[0] <= value <= _UINT64_MAX:
            raise _value_error(path, "uint64")
        unsigned = value & _UINT64_MAX
        limit = _UINT_LIMITS.get(spec)
        if limit is not None and unsigned > limit:
            raise _value_error(name, f"{spec}_t")
        return unsigned
    # int, int64, int8, int16, int32
    if not _is_int(value):
        raise _type_error(path, "integer")
    assert isinstance(value, int)
    if not _INT64[0] <= value <= _INT64[1]:
        raise _type_error(path, "integer")
    bounds = _INT_RANGES.get(spec)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise _value_error(name, f"{spec}_t")
    return value


def _check_struct(
    schema: Schema, members: dict[str, JSONValue], prefix: str
) -> dict[str, JSONValue]:
    checked: dict[str, JSONValue] = {}
    known: set[str] = set()
    extra = schema.get(EXTRA_MEMBERS)
    for key, spec in schema.items():
        if key == EXTRA_MEMBERS:
            continue
        name = key.lstrip("*")
        known.add(name)
        if name not in members:
            if key.startswith("*"):
                continue
            raise GenericError(f"Parameter '{prefix}{name}' is missing")
        checked[name] = _check_value(spec, members[name], prefix + name, name)
    for name in members:
        if name in known:
            continue
        if extra is None:
            raise GenericError(f"Parameter '{prefix}{name}' is unexpected")
        checked[name] = _check_value(extra, members[name], prefix + name, name)
    return checked


def check_arguments(schema: Schema, arguments: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """Check ``arguments`` against ``schema`` as QEMU's generated marshallers do.

    Returns the arguments as the handler sees them (unsigned integers wrapped,
    numbers as ``float``; absent optional members stay absent). Raises
    :class:`~vmkit.qmp.errors.QMPError` (``GenericError``) on the first problem.
    """
    return _check_struct(schema, arguments, "")


# --- sessions, contexts, commands --------------------------------------------


class SessionPhase(enum.Enum):
    """Where a QMP session is in its life (QEMU's monitor has the same
    phases: ``qmp_capabilities`` moves it from negotiation to command mode).

    Legal moves: ``NEGOTIATING`` → ``COMMAND`` → ``CLOSING`` or
    ``SHUTTING_DOWN``; ``CLOSING`` → ``SHUTTING_DOWN``; anything → ``CLOSED``
    (the connection is gone). Only commands close a session, and in
    negotiation mode the only command is ``qmp_capabilities``.
    """

    NEGOTIATING = "negotiating"
    """The greeting has been sent: only ``qmp_capabilities`` is allowed."""
    COMMAND = "command"
    """Capabilities negotiated: every command runs, events are delivered."""
    CLOSING = "closing"
    """This connection closes once the current reply has been sent."""
    SHUTTING_DOWN = "shutting-down"
    """The whole server closes once the current reply has been sent (``quit``)."""
    CLOSED = "closed"
    """The connection is gone."""


_PHASE_MOVES: dict[SessionPhase, frozenset[SessionPhase]] = {
    SessionPhase.NEGOTIATING: frozenset({SessionPhase.COMMAND}),
    SessionPhase.COMMAND: frozenset({SessionPhase.CLOSING, SessionPhase.SHUTTING_DOWN}),
    SessionPhase.CLOSING: frozenset({SessionPhase.SHUTTING_DOWN}),
    SessionPhase.SHUTTING_DOWN: frozenset(),
    SessionPhase.CLOSED: frozenset(),
}


@dataclass
class SessionState:
    """Per-connection protocol state the dispatcher reads and commands change."""

    offered_capabilities: tuple[str, ...] = ()
    """Capabilities announced in the greeting (vmkit offers none; QEMU may offer ``oob``)."""
    enabled_capabilities: tuple[str, ...] = ()
    phase: SessionPhase = SessionPhase.NEGOTIATING
    """Change it with :meth:`enter`, which refuses illegal moves."""
    peer: str = ""
    """Human-readable client address, for logs."""
    received_fds: list[int] = field(default_factory=list)
    """Descriptors the client passed with its last message that carried
    any (``SCM_RIGHTS``, UNIX sockets only), not yet taken by a command:
    the session owns them."""

    def fds_received(self, fds: list[int]) -> None:
        """Keeps the descriptors of a new message; as QEMU's monitor, those
        of an earlier message that no command took are closed."""
        self.close_received_fds()
        self.received_fds = list(fds)

    def take_fd(self) -> int | None:
        """The first descriptor passed (the caller owns it now; the others
        are closed, as QEMU's ``getfd`` does), or ``None``."""
        if not self.received_fds:
            return None
        fd = self.received_fds.pop(0)
        self.close_received_fds()
        return fd

    def close_received_fds(self) -> None:
        """Closes the descriptors no command took."""
        fds, self.received_fds = self.received_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def enter(self, phase: SessionPhase) -> None:
        """Moves to ``phase``; ``ValueError`` if the move is not a legal one."""
        if phase is self.phase:
            return
        if phase is not SessionPhase.CLOSED and phase not in _PHASE_MOVES[self.phase]:
            raise ValueError(f"QMP session cannot go from {self.phase.value} to {phase.value}")
        self.phase = phase

    @property
    def negotiated(self) -> bool:
        """Capabilities negotiated and the connection still up: the
        session gets events (until it is closed, as QEMU's ``SHUTDOWN``
        after ``quit``)."""
        return self.phase in (
            SessionPhase.COMMAND,
            SessionPhase.CLOSING,
            SessionPhase.SHUTTING_DOWN,
        )

    @property
    def closing(self) -> bool:
        """Closing or closed: no more requests are read."""
        return self.phase in (
            SessionPhase.CLOSING,
            SessionPhase.SHUTTING_DOWN,
            SessionPhase.CLOSED,
        )


@dataclass
class CommandContext:
    """What a handler gets: its checked arguments and the calling session."""

    command: Command
    arguments: dict[str, JSONValue]
    session: SessionState
    registry: CommandRegistry

    def request_disconnect(self) -> None:
        """Close this client's connection once the reply has been sent."""
        if self.session.phase is not SessionPhase.SHUTTING_DOWN:
            self.session.enter(SessionPhase.CLOSING)

    def request_shutdown(self) -> None:
        """Close the server (every connection, the listening socket) after the reply.

        This is the hook for ``quit``: QEMU answers ``{"return": {}}`` and then exits.
        """
        self.session.enter(SessionPhase.SHUTTING_DOWN)


HandlerResult: TypeAlias = "JSONValue | Awaitable[JSONValue]"
Handler: TypeAlias = Callable[[CommandContext], HandlerResult]
"""A command implementation; returns the ``return`` value (``None`` means ``{}``)."""


@dataclass(frozen=True)
class Command:
    """A registered command."""

    name: str
    handler: Handler
    schema: Schema = field(default_factory=dict)
    allowed_before_negotiation: bool = False
    """Only ``qmp_capabilities`` should set this (QEMU's negotiation-mode command list)."""
    allow_oob: bool = False
    """Always False: this server does not offer out-of-band execution."""


class CommandRegistry:
    """Commands by name, in registration order."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def register(
        self,
        name: str,
        handler: Handler,
        schema: Schema | None = None,
        *,
        allowed_before_negotiation: bool = False,
    ) -> Command:
        """Add a command. Raises ``ValueError`` for a duplicate name or a bad schema."""
        if not name:
            raise ValueError("command name must not be empty")
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        schema = dict(schema or {})
        _validate_schema(schema, name)
        command = Command(name, handler, schema, allowed_before_negotiation)
        self._commands[name] = command
        return command

    def command(
        self,
        name: str,
        schema: Schema | None = None,
        *,
        allowed_before_negotiation: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`; returns the function unchanged."""

        def decorate(handler: Handler) -> Handler:
            self.register(
                name, handler, schema, allowed_before_negotiation=allowed_before_negotiation
            )
            return handler

        return decorate

    def unregister(self, name: str) -> None:
        """Remove a command (``KeyError`` if absent)."""
        del self._commands[name]

    def get(self, name: str) -> Command | None:
        """The command called ``name``, or ``None``."""
        return self._commands.get(name)

    def names(self) -> list[str]:
        """Registered command names, in registration order."""
        return list(self._commands)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(list(self._commands.values()))

    def __len__(self) -> int:
        return len(self._commands)


# --- built-in commands -------------------------------------------------------

_QMP_CAPABILITY = Enum("QMPCapability", ["oob"])


def _qmp_capabilities(ctx: CommandContext) -> JSONValue:
    session = ctx.session
    if session.negotiated:
        raise CommandNotFound(NEGOTIATION_COMPLETE)
    requested = ctx.arguments.get("enable", [])
    assert isinstance(requested, list)
    unavailable = [str(cap) for cap in requested if cap not in session.offered_capabilities]
    if unavailable:
        raise GenericError(f"Capability {', '.join(unavailable)} not available")
    session.enabled_capabilities = tuple(str(cap) for cap in requested)
    session.enter(SessionPhase.COMMAND)
    return None


def _query_commands(ctx: CommandContext) -> JSONValue:
    return [{"name": name} for name in ctx.registry.names()]


def add_builtin_commands(registry: CommandRegistry) -> None:
    """Register ``qmp_capabilities`` and ``query-commands`` unless already present.

    ``query-commands`` answers ``[{"name": ...}, ...]`` for exactly the commands
    in ``registry`` at the time of the call.
    """
    if QMP_CAPABILITIES not in registry:
        registry.register(
            QMP_CAPABILITIES,
            _qmp_capabilities,
            {"*enable": [_QMP_CAPABILITY]},
            allowed_before_negotiation=True,
        )
    if "query-commands" not in registry:
        registry.register("query-commands", _query_commands)


# --- dispatch ----------------------------------------------------------------


def _check_request(request: dict[str, JSONValue]) -> str:
    """Validate the request envelope (``qmp_dispatch_check_obj``); return the command name."""
    has_execute = False
    for key, value in request.items():
        if key == "execute":
            if not isinstance(value, str):
                raise GenericError("QMP input member 'execute' must be a string")
            has_execute = True
        elif key == "arguments":
            if not isinstance(value, dict):
                raise GenericError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise GenericError(f"QMP input member '{key}' is unexpected")
    if not has_execute:
        raise GenericError("QMP input lacks member 'execute'")
    name = request["execute"]
    assert isinstance(name, str)
    return name


def _start(
    registry: CommandRegistry, request: dict[str, JSONValue], session: SessionState
) -> JSONValue | Awaitable[JSONValue]:
    """Checks ``request`` and calls its handler: the result, or an awaitable
    of it for an asynchronous handler. Raises :class:`QMPError`."""
    name = _check_request(request)
    command = registry.get(name)
    if command is None or (not session.negotiated and not command.allowed_before_negotiation):
        # QEMU's negotiation-mode command table holds only qmp_capabilities.
        raise CommandNotFound(f"The command {name} has not been found")
    raw_arguments = request.get("arguments", {})
    assert isinstance(raw_arguments, dict)
    arguments = check_arguments(command.schema, raw_arguments)
    ctx = CommandContext(command, arguments, session, registry)
    try:
        result = command.handler(ctx)
    except QMPError:
        raise
    except Exception as exc:
        _log_failure(name, exc)
        raise to_qmp_error(exc) from exc
    if inspect.isawaitable(result):
        return _finish(name, result)
    return result


def _log_failure(name: str, exc: Exception) -> None:
    if isinstance(exc, errors.VmkitError):  # an expected refusal, reported to the client
        logger.debug("QMP command %s failed: %s", name, exc)
    else:
        logger.exception("QMP command %s failed", name)


async def _finish(name: str, pending: Awaitable[JSONValue]) -> JSONValue:
    try:
        return await pending
    except QMPError:
        raise
    except Exception as exc:
        _log_failure(name, exc)
        raise to_qmp_error(exc) from exc


def error_response(error: QMPError) -> dict[str, JSONValue]:
    """The response object for ``error``, without ``id``."""
    return {"error": {"class": str(error.error_class), "desc": error.desc}}


def _response(
    request: dict[str, JSONValue], negotiating: bool, result: JSONValue, error: QMPError | None
) -> dict[str, JSONValue]:
    if error is not None:
        if negotiating and error.error_class is ErrorClass.COMMAND_NOT_FOUND:
            error = CommandNotFound(NEGOTIATION_EXPECTED)
        response = error_response(error)
    else:
        response = {"return": {} if result is None else result}
    if "id" in request:
        response["id"] = request["id"]
    return response


async def _respond_later(
    request: dict[str, JSONValue], negotiating: bool, pending: Awaitable[JSONValue]
) -> dict[str, JSONValue]:
    try:
        result = await pending
    except QMPError as exc:
        return _response(request, negotiating, None, exc)
    return _response(request, negotiating, result, None)


def dispatch_now(
    registry: CommandRegistry, request: JSONValue, session: SessionState
) -> dict[str, JSONValue] | Awaitable[dict[str, JSONValue]]:
    """Like :func:`dispatch`, but answers at once when the handler is
    synchronous: the response, or an awaitable of it for an asynchronous
    handler (which has started and must be awaited)."""
    if not isinstance(request, dict):
        return error_response(GenericError("QMP input must be a JSON object"))
    negotiating = not session.negotiated
    try:
        result = _start(registry, request, session)
    except QMPError as exc:
        return _response(request, negotiating, None, exc)
    if inspect.isawaitable(result):
        return _respond_later(request, negotiating, result)
    return _response(request, negotiating, result, None)


async def dispatch(
    registry: CommandRegistry, request: JSONValue, session: SessionState
) -> dict[str, JSONValue]:
    """Execute one parsed request and return the response object.

    Mirrors QEMU's ``qmp_dispatch()`` and ``monitor_qmp_dispatch()``:

    * not an object: ``QMP input must be a JSON object``, without ``id``;
    * an object: its ``id`` (any JSON value) is echoed in the response, even
      on error;
    * envelope errors: ``QMP input member 'execute' must be a string``,
      ``QMP input member 'arguments' must be an object``, ``QMP input member
      'x' is unexpected`` (this includes ``exec-oob``, since out-of-band
      execution is never enabled), ``QMP input lacks member 'execute'``;
    * unknown command: ``CommandNotFound``, ``The command x has not been found``;
    * in negotiation mode every ``CommandNotFound`` desc becomes ``Expecting
      capabilities negotiation with 'qmp_capabilities'``;
    * a handler returning ``None`` answers ``{"return": {}}``.
    """
    response = dispatch_now(registry, request, session)
    if inspect.isawaitable(response):
        return await response
    return response
