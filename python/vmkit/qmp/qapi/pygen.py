"""Generates :mod:`vmkit.qmp.typed.generated` from vmkit's QAPI schema.

Run ``python -m vmkit.qmp.qapi.pygen`` (``make qapi``) after changing the
schema; ``--check`` only says whether the committed module is up to date
(the test suite checks that too). The source is passed through ``ruff
format`` (a development tool, as the generator is), so what is committed
is exactly the generator's output.

What the schema becomes:

* an enum: a ``Literal`` of its values;
* a struct: a ``TypedDict`` under its QAPI name, the members under their
  wire names (optional ones ``NotRequired``);
* a union: one ``TypedDict`` per tag value (``Union_case``: the base's
  members with the tag as that value's ``Literal``, then the branch's),
  and the union as their ``|``, so that testing the tag narrows it;
* an alternate: the ``|`` of its branches;
* a command: a method of :class:`AsyncCommands` (``async``) and of
  :class:`SyncCommands`, named as the command with ``_`` for ``-``, whose
  keyword-only parameters are the arguments (``_`` for ``-``; optional
  ones default to ``None`` = absent, or to ``ABSENT`` when ``null`` is a
  value) and whose return type is the declared one (``None`` for none);
  ``'gen': false`` commands also take ``properties``, a mapping of the
  further members (a device's properties, whose names often have ``-``);
* an event: a frozen dataclass ``NameEvent`` with ``data`` (a
  ``TypedDict``) and ``timestamp`` (seconds), and an overload of
  ``listen(name)`` returning a listener of that class.

Integer types become ``int``, ``number`` ``float``, ``any``
:data:`~vmkit.qmp.parser.JSONValue`.
"""

from __future__ import annotations

import argparse
import keyword
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from vmkit.qmp.qapi import vmkit_schema
from vmkit.qmp.qapi.model import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    Event,
    Member,
    ObjectType,
    Schema,
    Type,
)

__all__ = ["OUTPUT", "generate", "main", "render"]

#: Where the generated module lives.
OUTPUT = Path(__file__).resolve().parent.parent / "typed" / "generated.py"

_BUILTINS = {
    "str": "str",
    "number": "float",
    "bool": "bool",
    "null": "None",
    "any": "JSONValue",
}

_HEADER = '''\
"""vmkit's QMP commands, events and types as Python types.

Generated from vmkit's QAPI schema (``vmkit/qmp/qapi/schema/``) by
``python -m vmkit.qmp.qapi.pygen``. Do not edit: change the schema and
generate again (``make qapi``); a test fails while this module is stale.
"""

# Most keys are no identifiers (``calc-time``): every TypedDict is written
# in the functional syntax.
# ruff: noqa: UP013

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, cast, overload

from vmkit.qmp.parser import JSONValue
from vmkit.qmp.typed.base import ABSENT, Absent, AsyncListener, Listener
'''


def _py_name(name: str) -> str:
    """A wire name as a Python identifier."""
    ident = name.replace("-", "_")
    return f"{ident}_" if keyword.iskeyword(ident) else ident


def _camel(name: str) -> str:
    """``MIGRATION_PASS`` -> ``MigrationPass``."""
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))


def _event_class(event: Event) -> str:
    return f"{_camel(event.name)}Event"


#: Names a generated type may use besides the types it defines.
_PLAIN_NAMES = frozenset(
    {"list", "dict", "str", "int", "float", "bool", "None", "Any", "Literal", "JSONValue"}
)


class _Generator:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.lines: list[str] = []
        self.done: set[int] = set()
        self.names: dict[int, str] = {}
        self.exports: list[str] = []

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def block(self, *lines: str) -> None:
        """A top-level definition, two blank lines before it."""
        self.emit("", "", *lines)

    # --- types ----------------------------------------------------------

    def ref(self, typ: Type) -> str:
        """The Python type of ``typ`` (defining it first if needed)."""
        if isinstance(typ, BuiltinType):
            return "int" if typ.json_type() == "int" else _BUILTINS[typ.name]
        if isinstance(typ, ArrayType):
            return f"list[{self.ref(typ.element)}]"
        self.define(typ)
        return self.names[id(typ)]

    def define(self, typ: Type) -> None:
        if id(typ) in self.done:
            return
        self.done.add(id(typ))
        self.names[id(typ)] = typ.name
        if isinstance(typ, EnumType):
            values = [f'    "{v}",' for v in typ.names()]
            self.block(f"{typ.name}: TypeAlias = Literal[", *values, "]")
        elif isinstance(typ, AlternateType):
            branches = " | ".join(self.ref(t) for _, t in typ.branches)
            self.block(f"{typ.name}: TypeAlias = {branches}")
        elif isinstance(typ, ObjectType) and typ.variants is None:
            members = [(m, self.ref(m.type)) for m in typ.members()]
            self.typed_dict(typ.name, members)
        elif isinstance(typ, ObjectType):
            variants = list(self.variants(typ, typ.name, []))
            self.block(f"{typ.name}: TypeAlias = (", *[f"    {v}" for v in _or(variants)], ")")
        self.exports.append(typ.name)

    def variants(
        self, typ: ObjectType, prefix: str, outer: list[tuple[Member, str]]
    ) -> Iterator[str]:
        """Defines one TypedDict per tag value of union ``typ`` (with the
        members of the unions it is a branch of, ``outer``); yields their names."""
        assert typ.variants is not None
        tag = typ.variants.tag
        assert isinstance(tag.type, EnumType)
        for case in tag.type.names():
            members = list(outer)
            for m in typ.members():
                members.append((m, f'Literal["{case}"]' if m is tag else self.ref(m.type)))
            name = f"{prefix}_{_py_name(case)}"
            branch = typ.variants.cases.get(case)
            if branch is not None and branch.variants is not None:
                yield from self.variants(branch, name, members)
                continue
            if branch is not None:
                members += [(m, self.ref(m.type)) for m in branch.members()]
            self.typed_dict(name, members)
            self.exports.append(name)
            yield name

    def typed_dict(self, name: str, members: list[tuple[Member, str]]) -> None:
        # A functional TypedDict evaluates its member types at once: a type
        # defined later (a recursive pair such as PciBridgeInfo and
        # PciDeviceInfo) is written as a string, a forward reference.
        known = set(self.exports) | _PLAIN_NAMES | {name}

        def spelled(t: str) -> str:
            later = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", t)) - known
            return f'"{t}"' if later and '"' not in t else t

        fields = [
            f'        "{m.name}": {f"NotRequired[{spelled(t)}]" if m.optional else spelled(t)},'
            for m, t in members
        ]
        if not fields:
            self.block(f'{name} = TypedDict("{name}", {{}})')
            return
        self.block(f"{name} = TypedDict(", f'    "{name}",', "    {", *fields, "    },", ")")

    # --- events ---------------------------------------------------------

    def event(self, event: Event) -> None:
        cls = _event_class(event)
        if event.arg_type is None:
            data = "NoData"
        elif event.arg_type.implicit:
            data = f"{cls}Data"
            members = [(m, self.ref(m.type)) for m in event.arg_type.members()]
            self.typed_dict(data, members)
            self.exports.append(data)
        else:
            data = self.ref(event.arg_type)
        self.block(
            "@dataclass(frozen=True, slots=True)",
            f"class {cls}(ABC):",
            f'    """``{event.name}``: ``data`` as sent, ``timestamp`` in seconds."""',
            "",
            f"    data: {data}",
            "    timestamp: float",
            f'    name: Literal["{event.name}"] = "{event.name}"',
        )
        self.exports.append(cls)

    # --- commands -------------------------------------------------------

    def parameters(self, command: Command) -> list[tuple[str, str, str, str]]:
        """``(wire name, python name, annotation, default or '')``."""
        out: list[tuple[str, str, str, str]] = []
        if command.arg_type is None:
            return out
        if command.arg_type.variants is not None:
            raise ValueError(f"{command.name}: union arguments are not supported")
        for m in command.arg_type.members():
            t = self.ref(m.type)
            if isinstance(m.type, ArrayType):
                t = f"Sequence[{self.ref(m.type.element)}]"
            if not m.optional:
                out.append((m.name, _py_name(m.name), t, ""))
            elif _admits_null(m.type):
                out.append((m.name, _py_name(m.name), f"{t} | Absent", "ABSENT"))
            else:
                out.append((m.name, _py_name(m.name), f"{t} | None", "None"))
        return out

    def method(self, command: Command, asynchronous: bool) -> None:
        params = self.parameters(command)
        ret = "None" if command.ret_type is None else self.ref(command.ret_type)
        head = "    async def" if asynchronous else "    def"
        name = _py_name(command.name)
        sig = ["        self,"]
        if params or not command.gen:
            sig.append("        *,")
        for _, py, ann, default in params:
            sig.append(f"        {py}: {ann}{f' = {default}' if default else ''},")
        if not command.gen:
            sig.append("        properties: Mapping[str, JSONValue] | None = None,")
        if len(sig) == 1:
            self.emit("", f"{head} {name}(self) -> {ret}:")
        else:
            self.emit("", f"{head} {name}(", *sig, f"    ) -> {ret}:")
        notes = ", ".join(command.features)
        self.emit(f'        """``{command.name}``{f" ({notes})" if notes else ""}."""')
        required = [f'"{wire}": {py}' for wire, py, _, default in params if not default]
        self.emit(f"        arguments: dict[str, object] = {{{', '.join(required)}}}")
        for wire, py, _, default in params:
            if default == "None":
                self.emit(
                    f"        if {py} is not None:", f'            arguments["{wire}"] = {py}'
                )
            elif default:
                self.emit(
                    f"        if not isinstance({py}, Absent):",
                    f'            arguments["{wire}"] = {py}',
                )
        if not command.gen:
            self.emit(
                "        if properties is not None:", "            arguments.update(properties)"
            )
        call = f'self._execute("{command.name}", arguments)'
        if asynchronous:
            call = f"await {call}"
        if command.ret_type is None:
            self.emit(f"        {call}")
        else:
            self.emit(f"        return cast({ret}, {call})")

    def listen(self, events: list[Event], asynchronous: bool) -> None:
        listener = "AsyncListener" if asynchronous else "Listener"
        for event in events:
            self.emit(
                "",
                "    @overload",
                "    def listen(",
                f'        self, name: Literal["{event.name}"], /',
                f"    ) -> {listener}[{_event_class(event)}]: ...",
            )
        self.emit(
            "",
            "    @overload",
            "    def listen(",
            "        self, name: EventName, /, *names: EventName",
            f"    ) -> {listener}[AnyEvent]: ...",
            "",
            f"    def listen(self, name: EventName, /, *names: EventName) -> {listener}[Any]:",
            '        """Events called ``name`` (or any of ``names``) from the moment',
            "        the ``with`` block is entered: enter it, then run the command",
            '        that causes them, and none is missed."""',
            "        return self._listen((name, *names))",
        )

    def commands_class(self, asynchronous: bool) -> None:
        cls = "AsyncCommands" if asynchronous else "SyncCommands"
        flavour = "asynchronous" if asynchronous else "synchronous"
        listener = "AsyncListener" if asynchronous else "Listener"
        self.block(
            f"class {cls}:",
            f'    """vmkit\'s QMP commands as {flavour} methods; subclasses send them."""',
            "",
            "    @abstractmethod",
            f"    {'async ' if asynchronous else ''}def _execute(",
            "        self, command: str, arguments: dict[str, object]",
            "    ) -> object:",
            '        """Sends ``command``; returns its answer."""',
            "",
            "    @abstractmethod",
            f"    def _listen(self, names: tuple[str, ...]) -> {listener}[Any]:",
            '        """Subscribes to the events named ``names``."""',
        )
        for command in self.schema.commands.values():
            self.method(command, asynchronous)
        self.listen(list(self.schema.events.values()), asynchronous)

    def run(self) -> str:
        self.emit(_HEADER.rstrip("\n"))
        self.block('NoData = TypedDict("NoData", {})')
        self.exports.append("NoData")
        # Every type a command or event uses, dependencies first.
        for command in self.schema.commands.values():
            self.parameters(command)
            if command.ret_type is not None:
                self.ref(command.ret_type)
        events = list(self.schema.events.values())
        for event in events:
            self.event(event)
        names = [f'    "{e.name}",' for e in events]
        self.block("EventName: TypeAlias = Literal[", *names, "]")
        classes = [_event_class(e) for e in events]
        self.block("AnyEvent: TypeAlias = (", *[f"    {c}" for c in _or(classes)], ")")
        factories = [f'    "{e.name}": {_event_class(e)},' for e in events]
        self.block(
            "EVENT_TYPES: dict[str, Callable[[Any, float], AnyEvent]] = {",
            *factories,
            "}",
            '"""The event class of each event name (called as ``cls(data, timestamp)``)."""',
        )
        self.exports += ["EventName", "AnyEvent", "EVENT_TYPES", "AsyncCommands", "SyncCommands"]
        self.commands_class(asynchronous=True)
        self.commands_class(asynchronous=False)
        # Sorted as ruff sorts __all__: constants first.
        ordered = sorted(self.exports, key=lambda n: (not n.isupper(), n))
        exports = [f'    "{name}",' for name in ordered]
        body = "\n".join(self.lines)
        head, _, rest = body.partition("\n\n\nNoData")
        return "\n".join([head, "", "__all__ = [", *exports, "]", "", "", "NoData" + rest]) + "\n"


def _or(names: list[str]) -> list[str]:
    """``a``, ``| b``, ``| c``: a union spread over lines."""
    return [names[0], *[f"| {n}" for n in names[1:]]]


def _admits_null(typ: Type) -> bool:
    if isinstance(typ, BuiltinType):
        return typ.name in ("null", "any")
    if isinstance(typ, AlternateType):
        return any(_admits_null(t) for _, t in typ.branches)
    return False


def generate(schema: Schema | None = None) -> str:
    """The module's source for ``schema`` (default: vmkit's), unformatted."""
    return _Generator(schema or vmkit_schema()).run()


def render(schema: Schema | None = None) -> str:
    """:func:`generate`'s source as ``ruff format`` (with the project's
    settings) leaves it: the committed module."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(OUTPUT), "-"],
        input=generate(schema),
        capture_output=True,
        text=True,
        check=False,
        cwd=OUTPUT.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ruff format failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """Writes (or with ``--check``, compares) the generated module."""
    parser = argparse.ArgumentParser(prog="python -m vmkit.qmp.qapi.pygen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check it is up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    text = render()
    current = args.output.read_text() if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run python -m vmkit.qmp.qapi.pygen")
            return 1
        return 0
    if current != text:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
