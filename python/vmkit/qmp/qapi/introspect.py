"""``query-qmp-schema``: the schema as QEMU's ``SchemaInfo`` list.

The answer follows QEMU's introspection (``qapi/introspect.json``): first
one entry per command (``meta-type`` ``command``, ``arg-type``,
``ret-type``, ``allow-oob`` when true) and event (``arg-type``) in
definition order, then one entry per type they use, in the order first
used: ``builtin`` (``json-type``), ``enum`` (``members`` and the deprecated
``values``), ``array`` (``element-type``), ``object`` (``members`` with
``default: null`` for optional ones, and ``tag``/``variants`` for unions,
every value of the tag listed, those without a branch as the empty
object) and ``alternate``. Entries carry ``features`` when they have any.

As QEMU does, types other than built-ins go by opaque numbers ("0", "1",
...) handed out in order of first use, arrays by their element's name in
brackets ("[3]"), and every integer type shows as ``int``: clients are to
learn commands and events, not type names. A command without arguments or
answer uses the empty object.
"""

from __future__ import annotations

from collections.abc import Collection

from vmkit.qmp.parser import JSONValue
from vmkit.qmp.qapi.model import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    ObjectType,
    Schema,
    Type,
)

__all__ = ["schema_info"]


class _Introspector:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names: dict[int, str] = {}
        self.used: list[Type] = []
        self.seen: set[int] = set()
        self.entries: list[dict[str, JSONValue]] = []
        self.int_type = schema.lookup_type("int")
        self.int_list = ArrayType("intList", element=self.int_type)

    def use(self, typ: Type) -> str:
        """Queues ``typ`` for an entry of its own; returns the name the
        answer gives it."""
        if isinstance(typ, BuiltinType) and typ.json_type() == "int":
            typ = self.int_type
        elif (
            isinstance(typ, ArrayType)
            and isinstance(typ.element, BuiltinType)
            and typ.element.json_type() == "int"
        ):
            typ = self.int_list
        if id(typ) not in self.seen:
            self.seen.add(id(typ))
            self.used.append(typ)
        if isinstance(typ, BuiltinType):
            return typ.name
        if isinstance(typ, ArrayType):
            return f"[{self.use(typ.element)}]"
        name = self.names.get(id(typ))
        if name is None:
            name = str(len(self.names))
            self.names[id(typ)] = name
        return name

    def add(
        self, name: str, meta: str, body: dict[str, JSONValue], features: tuple[str, ...]
    ) -> None:
        entry: dict[str, JSONValue] = {"name": name, "meta-type": meta, **body}
        if features:
            entry["features"] = list(features)
        self.entries.append(entry)

    def command(self, command: Command) -> None:
        body: dict[str, JSONValue] = {
            "arg-type": self.use(command.arg_type or self.schema.empty),
            "ret-type": self.use(command.ret_type or self.schema.empty),
        }
        if command.allow_oob:
            body["allow-oob"] = True
        self.add(command.name, "command", body, command.features)

    def type_entry(self, typ: Type) -> None:
        if isinstance(typ, BuiltinType):
            self.add(typ.name, "builtin", {"json-type": typ.json_type()}, ())
        elif isinstance(typ, EnumType):
            members: list[JSONValue] = []
            for value in typ.values:
                member: dict[str, JSONValue] = {"name": value.name}
                if value.features:
                    member["features"] = list(value.features)
                members.append(member)
            values: list[JSONValue] = list(typ.names())
            body: dict[str, JSONValue] = {"members": members, "values": values}
            self.add(self.use(typ), "enum", body, typ.features)
        elif isinstance(typ, ArrayType):
            name = self.use(typ)
            self.add(name, "array", {"element-type": self.use(typ.element)}, ())
        elif isinstance(typ, AlternateType):
            branches: list[JSONValue] = [{"type": self.use(t)} for _, t in typ.branches]
            self.add(self.use(typ), "alternate", {"members": branches}, typ.features)
        else:
            assert isinstance(typ, ObjectType)
            self.object_entry(typ)

    def object_entry(self, typ: ObjectType) -> None:
        name = self.use(typ)
        members: list[JSONValue] = []
        for m in typ.members():
            member: dict[str, JSONValue] = {"name": m.name, "type": self.use(m.type)}
            if m.optional:
                member["default"] = None
            if m.features:
                member["features"] = list(m.features)
            members.append(member)
        body: dict[str, JSONValue] = {"members": members}
        if typ.variants is not None:
            tag = typ.variants.tag
            assert isinstance(tag.type, EnumType)
            cases = dict(typ.variants.cases)
            for value in tag.type.names():
                cases.setdefault(value, self.schema.empty)
            body["tag"] = tag.name
            body["variants"] = [{"case": c, "type": self.use(t)} for c, t in cases.items()]
        self.add(name, "object", body, typ.features)

    def run(self, commands: Collection[str] | None, events: Collection[str] | None) -> None:
        for entity in self.schema.entities:
            if isinstance(entity, Command):
                if commands is None or entity.name in commands:
                    self.command(entity)
            elif events is None or entity.name in events:
                arg = self.use(entity.arg_type or self.schema.empty)
                self.add(entity.name, "event", {"arg-type": arg}, entity.features)
        i = 0
        while i < len(self.used):  # entries queue the types they use
            self.type_entry(self.used[i])
            i += 1


def schema_info(
    schema: Schema,
    *,
    commands: Collection[str] | None = None,
    events: Collection[str] | None = None,
) -> list[JSONValue]:
    """``query-qmp-schema``'s answer for ``schema``, limited to the
    ``commands`` and ``events`` named (all when ``None``) and the types
    they use."""
    introspector = _Introspector(schema)
    introspector.run(commands, events)
    return list(introspector.entries)
