"""The QAPI schema as objects: types, commands and events, resolved.

:func:`build_schema` turns the definitions read by
:mod:`vmkit.qmp.qapi.reader` into a :class:`Schema`, checking them as
QEMU's generator does where it matters to vmkit (known keys, defined and
unique names, optional members, union discriminators and branches,
alternates whose branches JSON can tell apart). It refuses ``if``
conditions: vmkit has no build configurations.

The definitions follow QEMU's QAPI language (``docs/devel/qapi-code-gen``):

* ``{'enum': N, 'data': [V, {'name': V, 'features': [...]}, ...]}``
* ``{'struct': N, 'data': MEMBERS, 'base'?: STRUCT}``
* ``{'union': N, 'base': STRUCT | MEMBERS, 'discriminator': M, 'data':
  {CASE: STRUCT, ...}}`` — the discriminator is an enum member of the base;
  a value without a branch adds no members
* ``{'alternate': N, 'data': {NAME: TYPE, ...}}``
* ``{'command': N, 'data'?: MEMBERS | STRUCT, 'returns'?: TYPE, 'boxed'?,
  'gen'?, 'success-response'?, 'allow-oob'?, 'allow-preconfig'?,
  'coroutine'?}``
* ``{'event': N, 'data'?: MEMBERS | STRUCT, 'boxed'?}``

``MEMBERS`` maps a member name (``*`` first: optional) to a type name,
``[TYPE]`` or ``{'type': TYPE, 'features': [...]}``; any definition may
carry ``'features'``. A command's or event's inline members and a union's
inline base become *implicit* object types (``q_obj_NAME-arg``,
``q_obj_NAME-base``), as in QEMU. ``'gen': false`` means, as for QEMU's
``device_add``, that the command takes members beyond those declared: vmkit
checks the declared ones and hands the others to the handler unchecked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vmkit.qmp.parser import JSONValue
from vmkit.qmp.qapi.reader import Expression

__all__ = [
    "BUILTIN_JSON_TYPES",
    "AlternateType",
    "ArrayType",
    "BuiltinType",
    "Command",
    "EnumType",
    "EnumValue",
    "Event",
    "Member",
    "ObjectType",
    "Schema",
    "SchemaError",
    "Type",
    "Variants",
    "build_schema",
]


class SchemaError(ValueError):
    """A definition QEMU's QAPI generator would refuse (or vmkit cannot serve)."""


#: QAPI's built-in types and the JSON type of their values, as
#: ``query-qmp-schema`` names it (``SchemaInfoBuiltin``'s ``json-type``).
BUILTIN_JSON_TYPES: Mapping[str, str] = {
    "str": "string",
    "number": "number",
    "int": "int",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "uint16": "int",
    "uint32": "int",
    "uint64": "int",
    "size": "int",
    "bool": "boolean",
    "null": "null",
    "any": "value",
}


@dataclass(eq=False)
class Type(ABC):
    """A QAPI type. Compared by identity: each name is defined once."""

    name: str
    features: tuple[str, ...] = ()

    @abstractmethod
    def json_type(self) -> str:
        """What a value of this type is in JSON (``string``, ``int``,
        ``number``, ``boolean``, ``null``, ``object``, ``array``, ``value``)."""


@dataclass(eq=False)
class BuiltinType(Type):
    """``str``, ``int``, ``uint8``, ``size``, ``any``..."""

    def json_type(self) -> str:
        return BUILTIN_JSON_TYPES[self.name]


@dataclass(frozen=True)
class EnumValue:
    """One value of an enum, with its features."""

    name: str
    features: tuple[str, ...] = ()


@dataclass(eq=False)
class EnumType(Type):
    """A string from a fixed list."""

    values: tuple[EnumValue, ...] = ()

    def names(self) -> tuple[str, ...]:
        """The accepted strings, in declaration order."""
        return tuple(v.name for v in self.values)

    def json_type(self) -> str:
        return "string"


@dataclass(eq=False)
class ArrayType(Type):
    """``[element]``; named ``elementList`` as QEMU names array types."""

    element: Type = field(default_factory=lambda: BuiltinType("any"))

    def json_type(self) -> str:
        return "array"


@dataclass(eq=False)
class Member:
    """A member of an object type."""

    name: str
    type: Type
    optional: bool = False
    features: tuple[str, ...] = ()


@dataclass(eq=False)
class Variants:
    """A union's branches: the tag member and the object type per tag value."""

    tag: Member
    cases: dict[str, ObjectType]


@dataclass(eq=False)
class ObjectType(Type):
    """A struct, a union, or the implicit type of inline members."""

    base: ObjectType | None = None
    local_members: list[Member] = field(default_factory=list)
    variants: Variants | None = None
    implicit: bool = False
    """Inline members of a command, event or union base (``q_obj_...``)."""
    extra_members: bool = False
    """Members beyond the declared ones are accepted (``'gen': false``)."""

    def members(self) -> list[Member]:
        """Every member: the base's first, then its own (the union's
        variant members not included)."""
        own = self.local_members
        return [*self.base.members(), *own] if self.base is not None else list(own)

    def is_empty(self) -> bool:
        """No members and no variants."""
        return not self.members() and self.variants is None

    def json_type(self) -> str:
        return "object"


@dataclass(eq=False)
class AlternateType(Type):
    """One of several types that JSON tells apart (``StrOrNull``)."""

    branches: tuple[tuple[str, Type], ...] = ()

    def json_type(self) -> str:
        return "value"


@dataclass(eq=False)
class Command:
    """A QMP command."""

    name: str
    arg_type: ObjectType | None
    ret_type: Type | None
    boxed: bool = False
    gen: bool = True
    success_response: bool = True
    allow_oob: bool = False
    allow_preconfig: bool = False
    coroutine: bool = False
    features: tuple[str, ...] = ()


@dataclass(eq=False)
class Event:
    """A QMP event."""

    name: str
    arg_type: ObjectType | None
    boxed: bool = False
    features: tuple[str, ...] = ()


@dataclass(eq=False)
class Schema:
    """The whole schema: named types, commands and events."""

    types: dict[str, Type]
    commands: dict[str, Command]
    events: dict[str, Event]
    entities: list[Command | Event]
    """Commands and events in definition order (introspection's order)."""
    empty: ObjectType
    """``q_empty``: the arguments of a command without any, the answer
    of one that returns nothing (``{}``)."""

    def lookup_type(self, name: str) -> Type:
        """The type called ``name`` (``KeyError`` if none)."""
        return self.types[name]

    def command(self, name: str) -> Command:
        """The command called ``name`` (``KeyError`` if none)."""
        return self.commands[name]

    def event(self, name: str) -> Event:
        """The event called ``name`` (``KeyError`` if none)."""
        return self.events[name]


# --- building ----------------------------------------------------------------

_META = ("enum", "struct", "union", "alternate", "command", "event")
_KEYS: dict[str, frozenset[str]] = {
    "enum": frozenset({"enum", "data", "prefix", "features"}),
    "struct": frozenset({"struct", "data", "base", "features"}),
    "union": frozenset({"union", "base", "discriminator", "data", "features"}),
    "alternate": frozenset({"alternate", "data", "features"}),
    "command": frozenset(
        {
            "command",
            "data",
            "returns",
            "boxed",
            "gen",
            "success-response",
            "allow-oob",
            "allow-preconfig",
            "coroutine",
            "features",
        }
    ),
    "event": frozenset({"event", "data", "boxed", "features"}),
}
_FLAGS = {
    "boxed": False,
    "gen": True,
    "success-response": True,
    "allow-oob": False,
    "allow-preconfig": False,
    "coroutine": False,
}


class _Builder:
    def __init__(self, expressions: Sequence[Expression]) -> None:
        self.expressions = expressions
        self.types: dict[str, Type] = {name: BuiltinType(name) for name in BUILTIN_JSON_TYPES}
        self.arrays: dict[str, ArrayType] = {}
        self.commands: dict[str, Command] = {}
        self.events: dict[str, Event] = {}
        self.entities: list[Command | Event] = []
        self.empty = ObjectType("q_empty", implicit=True)
        self.types[self.empty.name] = self.empty
        self.where = ""

    def fail(self, message: str) -> SchemaError:
        return SchemaError(f"{self.where}: {message}")

    # --- pieces ---------------------------------------------------------

    def features(self, expr: Mapping[str, JSONValue]) -> tuple[str, ...]:
        raw = expr.get("features", [])
        if not isinstance(raw, list):
            raise self.fail("'features' must be an array")
        out: list[str] = []
        for item in raw:
            if isinstance(item, dict):
                if set(item) - {"name"}:
                    raise self.fail(f"feature {item!r}: only 'name' is known")
                item = item.get("name")
            if not isinstance(item, str) or not item:
                raise self.fail(f"feature names must be strings, not {item!r}")
            if item in out:
                raise self.fail(f"duplicate feature '{item}'")
            out.append(item)
        return tuple(out)

    def name_of(self, expr: Mapping[str, JSONValue], meta: str) -> str:
        name = expr[meta]
        if not isinstance(name, str) or not name:
            raise self.fail(f"'{meta}' must name it with a non-empty string")
        if "if" in expr:
            raise self.fail("'if' conditions are not supported (vmkit has no build options)")
        unknown = set(expr) - _KEYS[meta]
        if unknown:
            raise self.fail(f"unknown key '{min(unknown)}' in {meta} '{name}'")
        return name

    def type_ref(self, ref: JSONValue, what: str) -> Type:
        if isinstance(ref, list):
            if len(ref) != 1 or not isinstance(ref[0], str):
                raise self.fail(f"{what}: an array type is written ['TYPE']")
            return self.array_of(self.named(ref[0], what))
        if not isinstance(ref, str):
            raise self.fail(f"{what}: a type is a name or ['NAME'], not {ref!r}")
        return self.named(ref, what)

    def named(self, name: str, what: str) -> Type:
        typ = self.types.get(name)
        if typ is None:
            raise self.fail(f"{what}: type '{name}' is not defined")
        return typ

    def array_of(self, element: Type) -> ArrayType:
        array = self.arrays.get(element.name)
        if array is None:
            array = ArrayType(f"{element.name}List", element=element)
            self.arrays[element.name] = array
        return array

    def members(self, data: JSONValue, owner: str) -> list[Member]:
        if not isinstance(data, dict):
            raise self.fail(f"{owner}: members are an object of 'name': TYPE")
        out: list[Member] = []
        seen: set[str] = set()
        for key, spec in data.items():
            optional = key.startswith("*")
            name = key[1:] if optional else key
            if not name:
                raise self.fail(f"{owner}: empty member name")
            if name in seen:
                raise self.fail(f"{owner}: duplicate member '{name}'")
            seen.add(name)
            features: tuple[str, ...] = ()
            if isinstance(spec, dict):
                if "type" not in spec or set(spec) - {"type", "features"}:
                    raise self.fail(f"{owner}.{name}: write {{'type': T, 'features': [...]}}")
                features = self.features(spec)
                spec = spec["type"]
            out.append(Member(name, self.type_ref(spec, f"{owner}.{name}"), optional, features))
        return out

    def object_named(self, name: JSONValue, what: str) -> ObjectType:
        if not isinstance(name, str):
            raise self.fail(f"{what}: expected the name of a struct")
        typ = self.named(name, what)
        if not isinstance(typ, ObjectType):
            raise self.fail(f"{what}: '{name}' is not an object type")
        return typ

    # --- passes ---------------------------------------------------------

    def declare(self) -> None:
        """First pass: every named type exists, so definitions may refer
        to types defined after them."""
        for e in self.expressions:
            self.where = e.where()
            metas = [m for m in _META if m in e.value]
            if len(metas) != 1:
                raise self.fail(f"expected exactly one of {', '.join(_META)}")
            meta = metas[0]
            name = self.name_of(e.value, meta)
            if meta in ("command", "event"):
                continue
            if name in self.types:
                raise self.fail(f"type '{name}' is already defined")
            features = self.features(e.value)
            if meta == "enum":
                self.types[name] = EnumType(name, features)
            elif meta == "alternate":
                self.types[name] = AlternateType(name, features)
            else:
                self.types[name] = ObjectType(name, features)

    def define(self) -> None:
        for e in self.expressions:
            self.where = e.where()
            expr = e.value
            meta = next(m for m in _META if m in expr)
            name = str(expr[meta])
            getattr(self, f"define_{meta}")(name, expr)

    def define_enum(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        typ = self.types[name]
        assert isinstance(typ, EnumType)
        data = expr.get("data")
        if not isinstance(data, list):
            raise self.fail(f"enum '{name}': 'data' must be an array of values")
        values: list[EnumValue] = []
        for item in data:
            features: tuple[str, ...] = ()
            if isinstance(item, dict):
                if set(item) - {"name", "features"}:
                    raise self.fail(f"enum '{name}': write {{'name': V, 'features': [...]}}")
                features = self.features(item)
                item = item.get("name")
            if not isinstance(item, str) or not item:
                raise self.fail(f"enum '{name}': values are non-empty strings")
            if any(v.name == item for v in values):
                raise self.fail(f"enum '{name}': duplicate value '{item}'")
            values.append(EnumValue(item, features))
        typ.values = tuple(values)

    def define_struct(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        typ = self.types[name]
        assert isinstance(typ, ObjectType)
        if "base" in expr:
            typ.base = self.object_named(expr["base"], f"struct '{name}' base")
        typ.local_members = self.members(expr.get("data", {}), name)

    def define_union(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        typ = self.types[name]
        assert isinstance(typ, ObjectType)
        base = expr.get("base")
        if isinstance(base, dict):
            implicit = ObjectType(f"q_obj_{name}-base", implicit=True)
            implicit.local_members = self.members(base, name)
            self.types[implicit.name] = implicit
            typ.base = implicit
        else:
            typ.base = self.object_named(base, f"union '{name}' base")
        tag_name = expr.get("discriminator")
        tag = next((m for m in typ.base.members() if m.name == tag_name), None)
        if tag is None or tag.optional or not isinstance(tag.type, EnumType):
            raise self.fail(
                f"union '{name}': discriminator {tag_name!r} must be a mandatory"
                " enum member of the base"
            )
        data = expr.get("data")
        if not isinstance(data, dict):
            raise self.fail(f"union '{name}': 'data' maps tag values to branch types")
        cases: dict[str, ObjectType] = {}
        for case, spec in data.items():
            if case not in tag.type.names():
                raise self.fail(f"union '{name}': '{case}' is not a value of {tag.type.name}")
            if isinstance(spec, dict) and set(spec) == {"type"}:
                spec = spec["type"]
            branch = self.object_named(spec, f"union '{name}' branch '{case}'")
            cases[case] = branch
        typ.variants = Variants(tag, cases)

    def define_alternate(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        typ = self.types[name]
        assert isinstance(typ, AlternateType)
        data = expr.get("data")
        if not isinstance(data, dict) or not data:
            raise self.fail(f"alternate '{name}': 'data' maps branch names to types")
        branches: list[tuple[str, Type]] = []
        kinds: dict[str, str] = {}
        for branch, spec in data.items():
            if isinstance(spec, dict) and set(spec) == {"type"}:
                spec = spec["type"]
            btype = self.type_ref(spec, f"{name}.{branch}")
            kind = btype.json_type()
            if kind == "number":
                kind = "int"  # JSON numbers: one branch takes them all
            if kind == "value" or kind in kinds:
                raise self.fail(
                    f"alternate '{name}': branch '{branch}' cannot be told apart"
                    + (f" from '{kinds[kind]}'" if kind in kinds else "")
                )
            kinds[kind] = branch
            branches.append((branch, btype))
        typ.branches = tuple(branches)

    def entity_args(self, name: str, expr: Mapping[str, JSONValue]) -> ObjectType | None:
        data = expr.get("data")
        if data is None:
            return None
        if isinstance(data, dict):
            implicit = ObjectType(f"q_obj_{name}-arg", implicit=True)
            implicit.local_members = self.members(data, name)
            self.types[implicit.name] = implicit
            return implicit
        args = self.object_named(data, f"'{name}' data")
        if args.variants is not None and not expr.get("boxed"):
            raise self.fail(f"'{name}': a union as 'data' needs 'boxed': true")
        return args

    def flags(self, name: str, expr: Mapping[str, JSONValue]) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for key, default in _FLAGS.items():
            value = expr.get(key, default)
            if not isinstance(value, bool):
                raise self.fail(f"'{name}': '{key}' must be true or false")
            out[key.replace("-", "_")] = value
        return out

    def define_command(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        if name in self.commands:
            raise self.fail(f"command '{name}' is already defined")
        args = self.entity_args(name, expr)
        flags = self.flags(name, expr)
        if flags["boxed"] and (args is None or args.implicit):
            raise self.fail(f"'{name}': 'boxed' needs 'data' to name a type")
        if not flags["gen"]:
            if args is None or not args.implicit:
                raise self.fail(f"'{name}': 'gen': false needs inline 'data'")
            args.extra_members = True
        ret = None
        if "returns" in expr:
            ret = self.type_ref(expr["returns"], f"'{name}' returns")
        command = Command(name, args, ret, features=self.features(expr), **flags)
        self.commands[name] = command
        self.entities.append(command)

    def define_event(self, name: str, expr: Mapping[str, JSONValue]) -> None:
        if name in self.events:
            raise self.fail(f"event '{name}' is already defined")
        args = self.entity_args(name, expr)
        boxed = self.flags(name, expr)["boxed"]
        event = Event(name, args, boxed, self.features(expr))
        self.events[name] = event
        self.entities.append(event)

    def build(self) -> Schema:
        self.declare()
        self.define()
        for typ in list(self.types.values()):
            self.where = f"type '{typ.name}'"
            if isinstance(typ, ObjectType):
                self.check_object(typ)
        types = dict(self.types)
        for array in self.arrays.values():
            types[array.name] = array
        return Schema(types, self.commands, self.events, self.entities, self.empty)

    def check_object(self, typ: ObjectType) -> None:
        seen: set[str] = set()
        chain: list[ObjectType] = []
        base: ObjectType | None = typ
        while base is not None:
            if base in chain:
                raise self.fail("its base chain loops")
            chain.append(base)
            base = base.base
        for member in typ.members():
            if member.name in seen:
                raise self.fail(f"member '{member.name}' is defined twice (base and own)")
            seen.add(member.name)
        if typ.variants is not None:
            for case, branch in typ.variants.cases.items():
                clash = seen & {m.name for m in branch.members()}
                if clash:
                    raise self.fail(f"branch '{case}' repeats member '{min(clash)}'")


def build_schema(expressions: Sequence[Expression]) -> Schema:
    """The resolved :class:`Schema` of ``expressions``.

    :raises SchemaError: naming the file and definition at fault.
    """
    return _Builder(expressions).build()
