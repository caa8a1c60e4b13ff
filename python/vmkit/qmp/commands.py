"""QMP commands: the registry, argument checking, and request dispatch.

A command is a name, a handler and the declaration of its arguments. A
registry bound to a QAPI schema (:mod:`vmkit.qmp.qapi`, as ``vmkit run``'s)
takes each command's declaration from the schema: registering is naming the
handler, and ``query-qmp-schema`` is served::

    registry = CommandRegistry(vmkit_schema())
    registry.register("query-status", lambda ctx: {"status": "running", "running": True})

A registry without a schema takes hand-written argument tables in QAPI's
notation, for ad-hoc servers and tests::

    registry = CommandRegistry()

    @registry.command("echo", {"text": "str", "*times": "uint8", "*mode": Enum("Mode", ["a", "b"])})
    def echo(ctx: CommandContext) -> JSONValue:
        return {"text": ctx.arguments["text"] * ctx.arguments.get("times", 1)}

Argument types of a table (:data:`ArgType`):

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
``{...}``       a nested struct: a table of its own
:class:`Enum`   a string from a fixed set
==============  ===========================================================

A leading ``*`` on a member name makes it optional; the key
:data:`EXTRA_MEMBERS` types the members a table does not name. Either way,
arguments are checked before the handler runs, with the messages of QEMU's
QObject input visitor (:mod:`vmkit.qmp.qapi.visit`).

With output checking on (``VMKIT_QMP_CHECK_OUTPUT=1``, set by the test
suite), a schema-bound registry also checks every answer against the
command's declared return type and every event against its declaration
(:mod:`vmkit.qmp.qapi.conform`): an answer that departs is replaced by a
``GenericError`` saying where, an event that departs raises.

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
from vmkit.qmp import qapi
from vmkit.qmp.errors import CommandNotFound, ErrorClass, GenericError, QMPError, to_qmp_error
from vmkit.qmp.parser import JSONValue
from vmkit.qmp.qapi.conform import mismatch
from vmkit.qmp.qapi.introspect import schema_info
from vmkit.qmp.qapi.visit import (
    ArrayChecker,
    Checker,
    EnumChecker,
    ObjectChecker,
    compile_arguments,
    scalar_checker,
)

__all__ = [
    "CHECK_OUTPUT_ENV",
    "EXTRA_MEMBERS",
    "QMP_CAPABILITIES",
    "QUERY_QMP_SCHEMA",
    "ArgType",
    "Command",
    "CommandContext",
    "CommandRegistry",
    "Enum",
    "Handler",
    "OutputMismatchError",
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

QUERY_QMP_SCHEMA = "query-qmp-schema"
"""The introspection command, served by registries bound to a schema."""

CHECK_OUTPUT_ENV = "VMKIT_QMP_CHECK_OUTPUT"
"""Environment variable: ``1`` turns output checking on for registries
created without an explicit ``check_output``."""

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

_TABLE_SCALARS = frozenset(
    {"str", "int", "int64", "uint", "uint64", "size", "number", "bool", "null", "any", "object"}
    | {"int8", "int16", "int32", "uint8", "uint16", "uint32"}
)


def _compile_table_type(spec: ArgType, where: str) -> Checker:
    if isinstance(spec, str):
        if spec not in _TABLE_SCALARS:
            raise ValueError(f"{where}: unknown argument type {spec!r}")
        return scalar_checker(spec)
    if isinstance(spec, list):
        if len(spec) != 1:
            raise ValueError(f"{where}: an array type is written [element-type]")
        return ArrayChecker(_compile_table_type(spec[0], where))
    if isinstance(spec, dict):
        return _compile_table(spec, where)
    if isinstance(spec, Enum):
        return EnumChecker(spec.values)
    raise ValueError(f"{where}: unsupported argument type {spec!r}")


def _compile_table(schema: Schema, where: str) -> ObjectChecker:
    """The checker of a hand-written argument table."""
    members: list[tuple[str, bool, Checker]] = []
    checker = ObjectChecker()
    for key, spec in schema.items():
        if key == EXTRA_MEMBERS:
            checker.extra = _compile_table_type(spec, f"{where}.**")
            continue
        name = key.lstrip("*")
        if not name:
            raise ValueError(f"{where}: empty member name")
        members.append((name, key.startswith("*"), _compile_table_type(spec, f"{where}.{name}")))
    checker.set_members(members)
    return checker


def check_arguments(schema: Schema, arguments: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """Check ``arguments`` against the table ``schema`` as QEMU's generated
    marshallers do.

    Returns the arguments as the handler sees them (unsigned integers wrapped,
    numbers as ``float``; absent optional members stay absent). Raises
    :class:`~vmkit.qmp.errors.QMPError` (``GenericError``) on the first problem.
    """
    return _compile_table(schema, "arguments").check_arguments(arguments)


class OutputMismatchError(ValueError):
    """An answer or event that does not match its declaration (output checking)."""


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
    """Its hand-written argument table (empty when declared in a QAPI schema)."""
    allowed_before_negotiation: bool = False
    """Only ``qmp_capabilities`` should set this (QEMU's negotiation-mode command list)."""
    allow_oob: bool = False
    """Always False: this server does not offer out-of-band execution."""
    declaration: qapi.Command | None = None
    """Its declaration, for a registry bound to a QAPI schema."""
    checker: ObjectChecker = field(default_factory=ObjectChecker, compare=False)
    """Checks its arguments (from the declaration or the table)."""

    def check_answer(self, result: JSONValue) -> str | None:
        """Where ``result`` (``None``: ``{}``) departs from the declared
        return type, or ``None``; always ``None`` without a declaration."""
        declaration = self.declaration
        if declaration is None:
            return None
        ret = declaration.ret_type
        if ret is None:
            return None if result is None or result == {} else "answer: not {} (returns nothing)"
        return mismatch(ret, {} if result is None else result)


class CommandRegistry:
    """Commands by name, in registration order.

    Bound to a QAPI ``schema`` (:meth:`bind_schema`), every command must be
    declared there and takes its argument checking from the declaration;
    ``query-qmp-schema`` then describes the registered commands and the
    schema's events. Unbound, each command brings its argument table.
    ``check_output`` (default: ``VMKIT_QMP_CHECK_OUTPUT=1`` in the
    environment) checks answers and events against the schema.
    """

    def __init__(
        self, schema: qapi.Schema | None = None, *, check_output: bool | None = None
    ) -> None:
        self._commands: dict[str, Command] = {}
        self._schema: qapi.Schema | None = None
        self._checkers: dict[int, Checker] = {}
        self._schema_info: list[JSONValue] | None = None
        self.check_output = (
            os.environ.get(CHECK_OUTPUT_ENV) == "1" if check_output is None else check_output
        )
        """Whether answers and events are checked against the schema."""
        if schema is not None:
            self.bind_schema(schema)

    @property
    def schema(self) -> qapi.Schema | None:
        """The QAPI schema the commands are declared in, if bound."""
        return self._schema

    def bind_schema(self, schema: qapi.Schema) -> None:
        """Declares this registry's commands in ``schema`` (done once,
        before any command is registered; binding the same schema again
        does nothing). Raises ``ValueError`` otherwise."""
        if self._schema is schema:
            return
        if self._schema is not None or self._commands:
            raise ValueError("a registry is bound to a schema before its first command, once")
        self._schema = schema

    def register(
        self,
        name: str,
        handler: Handler,
        schema: Schema | None = None,
        *,
        allowed_before_negotiation: bool = False,
    ) -> Command:
        """Add a command. Raises ``ValueError`` for a duplicate name, a bad
        table, a table given to a schema-bound registry, or a name the
        bound schema does not declare."""
        if not name:
            raise ValueError("command name must not be empty")
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        declaration: qapi.Command | None = None
        if self._schema is not None:
            if schema is not None:
                raise ValueError(f"{name}: its arguments are declared in the schema, not here")
            declaration = self._schema.commands.get(name)
            if declaration is None:
                raise ValueError(f"command {name!r} is not declared in the QAPI schema")
            checker = compile_arguments(declaration.arg_type, self._checkers)
            table: Schema = {}
        else:
            table = dict(schema or {})
            checker = _compile_table(table, name)
        command = Command(
            name,
            handler,
            table,
            allowed_before_negotiation,
            declaration=declaration,
            checker=checker,
        )
        self._commands[name] = command
        self._schema_info = None
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
        self._schema_info = None

    def get(self, name: str) -> Command | None:
        """The command called ``name``, or ``None``."""
        return self._commands.get(name)

    def names(self) -> list[str]:
        """Registered command names, in registration order."""
        return list(self._commands)

    def schema_info(self) -> list[JSONValue]:
        """``query-qmp-schema``'s answer: the registered commands, the
        schema's events and the types they use (computed once, until the
        commands change). ``ValueError`` without a schema."""
        if self._schema is None:
            raise ValueError("the registry is not bound to a QAPI schema")
        if self._schema_info is None:
            self._schema_info = schema_info(self._schema, commands=set(self._commands))
        return self._schema_info

    def check_event(self, name: str, data: JSONValue | None) -> None:
        """With output checking on and a schema, raises
        :class:`OutputMismatchError` if event ``name`` is not declared or
        ``data`` does not match its declaration."""
        if not self.check_output or self._schema is None:
            return
        event = self._schema.events.get(name)
        if event is None:
            raise OutputMismatchError(f"event {name} is not declared in the QAPI schema")
        arg = event.arg_type or self._schema.empty
        problem = mismatch(arg, {} if data is None else data)
        if problem is not None:
            raise OutputMismatchError(f"event {name} does not match its declaration: {problem}")

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


def _query_qmp_schema(ctx: CommandContext) -> JSONValue:
    return ctx.registry.schema_info()


def add_builtin_commands(registry: CommandRegistry) -> None:
    """Register ``qmp_capabilities``, ``query-commands`` and, for a
    registry bound to a schema, ``query-qmp-schema``, unless present.

    ``query-commands`` answers ``[{"name": ...}, ...]`` for exactly the commands
    in ``registry`` at the time of the call.
    """
    bound = registry.schema is not None
    if QMP_CAPABILITIES not in registry:
        registry.register(
            QMP_CAPABILITIES,
            _qmp_capabilities,
            None if bound else {"*enable": [_QMP_CAPABILITY]},
            allowed_before_negotiation=True,
        )
    if "query-commands" not in registry:
        registry.register("query-commands", _query_commands)
    if bound and QUERY_QMP_SCHEMA not in registry:
        registry.register(QUERY_QMP_SCHEMA, _query_qmp_schema)


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
    arguments = command.checker.check_arguments(raw_arguments)
    ctx = CommandContext(command, arguments, session, registry)
    try:
        result = command.handler(ctx)
    except QMPError:
        raise
    except Exception as exc:
        _log_failure(name, exc)
        raise to_qmp_error(exc) from exc
    if inspect.isawaitable(result):
        return _finish(command, result, registry.check_output)
    if registry.check_output:
        _check_answer(command, result)
    return result


def _check_answer(command: Command, result: JSONValue) -> None:
    """Output checking: an answer that departs from its declaration
    becomes an error the client sees (and the log)."""
    problem = command.check_answer(result)
    if problem is not None:
        logger.error("QMP %s: the answer does not match the schema: %s", command.name, problem)
        raise GenericError(
            f"vmkit: the answer of {command.name} does not match the schema: {problem}"
        )


def _log_failure(name: str, exc: Exception) -> None:
    if isinstance(exc, errors.VmkitError):  # an expected refusal, reported to the client
        logger.debug("QMP command %s failed: %s", name, exc)
    else:
        logger.exception("QMP command %s failed", name)


async def _finish(command: Command, pending: Awaitable[JSONValue], check: bool) -> JSONValue:
    try:
        result = await pending
    except QMPError:
        raise
    except Exception as exc:
        _log_failure(command.name, exc)
        raise to_qmp_error(exc) from exc
    if check:
        _check_answer(command, result)
    return result


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
