"""Checking a command's arguments as QEMU's QObject input visitor does.

:func:`compile_type` turns a schema type into a :class:`Checker` once; the
dispatcher then calls :meth:`ObjectChecker.check_arguments` for every
request. Checking returns the arguments as the handler sees them: unsigned
integers wrapped modulo 2**64 as QEMU does "for backward compatibility",
``number`` members as ``float``, absent optional members absent.

Members are checked in declaration order (a union's base, then its
branch), then unknown members are refused, with the messages of
``qapi/qobject-input-visitor.c`` and ``qapi/qapi-visit-core.c``:

* ``Parameter 'x' is missing`` / ``Parameter 'x' is unexpected``
* ``Invalid parameter type for 'x', expected: integer`` (``string``,
  ``boolean``, ``number``, ``null``, ``object``, ``array``); for an
  alternate, ``expected:`` names the alternate type (``StrOrNull``)
* ``Parameter 'x' expects uint64`` (any non-integer for an unsigned type);
  ``Parameter 'x' expects uint8_t`` (out of range)
* ``Parameter 'x' does not accept value 'y'`` (enums)

``x`` is the member's full name (``a.b``, ``a[0]``, QEMU's ``full_name()``)
except where QEMU prints the bare name: out-of-range integers, enum values
and alternates (``null`` for array elements).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from vmkit.qmp.errors import GenericError, QMPError
from vmkit.qmp.parser import JSONValue
from vmkit.qmp.qapi.model import (
    AlternateType,
    ArrayType,
    BuiltinType,
    EnumType,
    ObjectType,
    Type,
)

__all__ = [
    "AlternateChecker",
    "AnyChecker",
    "ArrayChecker",
    "Checker",
    "EnumChecker",
    "ObjectChecker",
    "compile_arguments",
    "compile_type",
    "scalar_checker",
]

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_SIGNED = {"int8": 7, "int16": 15, "int32": 31}
_UNSIGNED = {"uint8": 8, "uint16": 16, "uint32": 32}


def _type_error(path: str, expected: str) -> QMPError:
    return GenericError(f"Invalid parameter type for '{path}', expected: {expected}")


class Checker(ABC):
    """Checks one value; ``parent + key`` is its full name, ``name`` the
    bare name QEMU prints in some messages."""

    __slots__ = ()

    json_kind = "value"
    """Which JSON values it takes (``string``, ``int``, ``number``,
    ``boolean``, ``null``, ``object``, ``array``, ``value``): how an
    alternate picks a branch."""

    @abstractmethod
    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        """``value`` as the handler gets it; raises :class:`QMPError`."""


class AnyChecker(Checker):
    """``any``: every value, unchanged."""

    __slots__ = ()

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        return value


class _Str(Checker):
    __slots__ = ()
    json_kind = "string"

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not str:
            raise _type_error(parent + key, "string")
        return value


class _Bool(Checker):
    __slots__ = ()
    json_kind = "boolean"

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not bool:
            raise _type_error(parent + key, "boolean")
        return value


class _Null(Checker):
    __slots__ = ()
    json_kind = "null"

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if value is not None:
            raise _type_error(parent + key, "null")
        return None


class _Number(Checker):
    __slots__ = ()
    json_kind = "number"

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        kind = type(value)
        if kind is float:
            return value
        if kind is not int:
            raise _type_error(parent + key, "number")
        assert isinstance(value, int)
        return float(value)


class _AnyObject(Checker):
    """Any JSON object, members unchecked (the legacy ``"object"`` type)."""

    __slots__ = ()
    json_kind = "object"

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not dict:
            raise _type_error(parent + key, "object")
        return value


class _Int(Checker):
    __slots__ = ("bits", "label")
    json_kind = "int"

    def __init__(self, bits: int | None, label: str) -> None:
        self.bits = bits
        self.label = label

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not int:
            raise _type_error(parent + key, "integer")
        assert isinstance(value, int)
        if not _INT64[0] <= value <= _INT64[1]:
            raise _type_error(parent + key, "integer")
        bits = self.bits
        if bits is not None and not -(1 << bits) <= value < 1 << bits:
            raise GenericError(f"Parameter '{name}' expects {self.label}_t")
        return value


class _UInt(Checker):
    __slots__ = ("label", "limit")
    json_kind = "int"

    def __init__(self, limit: int | None, label: str) -> None:
        self.limit = limit
        self.label = label

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not int:
            raise GenericError(f"Parameter '{parent + key}' expects uint64")
        assert isinstance(value, int)
        if not _INT64[0] <= value <= _UINT64_MAX:
            raise GenericError(f"Parameter '{parent + key}' expects uint64")
        unsigned = value & _UINT64_MAX
        if self.limit is not None and unsigned > self.limit:
            raise GenericError(f"Parameter '{name}' expects {self.label}_t")
        return unsigned


_SCALARS: dict[str, Checker] = {
    "str": _Str(),
    "bool": _Bool(),
    "null": _Null(),
    "number": _Number(),
    "any": AnyChecker(),
    "object": _AnyObject(),
    "int": _Int(None, "int64"),
    "int64": _Int(None, "int64"),
    "uint": _UInt(None, "uint64"),
    "uint64": _UInt(None, "uint64"),
    "size": _UInt(None, "uint64"),
    **{n: _Int(bits, n) for n, bits in _SIGNED.items()},
    **{n: _UInt((1 << bits) - 1, n) for n, bits in _UNSIGNED.items()},
}


def scalar_checker(name: str) -> Checker:
    """The checker of built-in type ``name`` (plus ``object``, any JSON
    object, and ``uint``, for hand-written argument tables).

    :raises KeyError: not a built-in type.
    """
    return _SCALARS[name]


class EnumChecker(Checker):
    """A string from a fixed list."""

    __slots__ = ("values",)
    json_kind = "string"

    def __init__(self, values: Sequence[str]) -> None:
        self.values = frozenset(values)

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not str:
            raise _type_error(parent + key, "string")
        if value not in self.values:
            raise GenericError(f"Parameter '{name}' does not accept value '{value}'")
        return value


class ArrayChecker(Checker):
    """``[element]``."""

    __slots__ = ("element",)
    json_kind = "array"

    def __init__(self, element: Checker) -> None:
        self.element = element

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not list:
            raise _type_error(parent + key, "array")
        assert isinstance(value, list)
        path = parent + key
        element = self.element
        return [element.check(item, path, f"[{i}]", "null") for i, item in enumerate(value)]


class AlternateChecker(Checker):
    """The branch whose JSON kind the value has (QEMU's
    ``visit_start_alternate`` picks by the value's QType)."""

    __slots__ = ("branches", "type_name")

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        self.branches: dict[type, Checker] = {}

    def set_branches(self, branches: Sequence[Checker]) -> None:
        """Indexes the branches by the Python type of the values each takes."""
        pytypes = {
            "string": (str,),
            "int": (int,),
            "number": (int, float),
            "boolean": (bool,),
            "null": (type(None),),
            "object": (dict,),
            "array": (list,),
        }
        for branch in branches:
            for pytype in pytypes[branch.json_kind]:
                self.branches.setdefault(pytype, branch)

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        branch = self.branches.get(type(value))
        if branch is None:
            raise GenericError(f"Invalid parameter type for '{name}', expected: {self.type_name}")
        return branch.check(value, parent, key, name)


class ObjectChecker(Checker):
    """A struct or union: members in order, then no unknown member (or,
    with ``extra``, the others checked by it)."""

    __slots__ = ("cases", "extra", "known", "members", "tag")
    json_kind = "object"

    def __init__(self) -> None:
        self.members: tuple[tuple[str, bool, Checker], ...] = ()
        self.known: frozenset[str] = frozenset()
        self.extra: Checker | None = None
        self.tag: str | None = None
        self.cases: dict[str, ObjectChecker] = {}

    def set_members(self, members: Sequence[tuple[str, bool, Checker]]) -> None:
        """``(name, optional, checker)`` in order."""
        self.members = tuple(members)
        self.known = frozenset(name for name, _, _ in members)

    def check(self, value: JSONValue, parent: str, key: str, name: str) -> JSONValue:
        if type(value) is not dict:
            raise _type_error(parent + key, "object")
        assert isinstance(value, dict)
        return self.check_members(value, f"{parent}{key}.")

    def check_arguments(self, arguments: dict[str, JSONValue]) -> dict[str, JSONValue]:
        """A command's arguments (an object at the top: names without prefix)."""
        return self.check_members(arguments, "")

    def check_members(self, value: dict[str, JSONValue], prefix: str) -> dict[str, JSONValue]:
        """``value``'s members checked; ``prefix`` is the full name of
        ``value`` plus ``.`` (empty at the top)."""
        out: dict[str, JSONValue] = {}
        known = self._fill(out, value, prefix)
        if len(out) != len(value):
            extra = self.extra
            for member, item in value.items():
                if member in known:
                    continue
                if extra is None:
                    raise GenericError(f"Parameter '{prefix}{member}' is unexpected")
                out[member] = extra.check(item, prefix, member, member)
        return out

    def _fill(
        self, out: dict[str, JSONValue], value: dict[str, JSONValue], prefix: str
    ) -> frozenset[str]:
        """Checks the members (a union's base, then its branch's) into
        ``out``; returns the names they may have."""
        for member, optional, checker in self.members:
            if member in value:
                out[member] = checker.check(value[member], prefix, member, member)
            elif not optional:
                raise GenericError(f"Parameter '{prefix}{member}' is missing")
        if self.tag is None:
            return self.known
        branch = self.cases.get(str(out[self.tag]))
        if branch is None:
            return self.known
        return self.known | branch._fill(out, value, prefix)


def compile_type(typ: Type, cache: dict[int, Checker] | None = None) -> Checker:
    """The checker of ``typ`` (and, through ``cache``, of the types it
    uses: a type that contains itself is compiled once)."""
    if cache is None:
        cache = {}
    found = cache.get(id(typ))
    if found is not None:
        return found
    if isinstance(typ, BuiltinType):
        checker = scalar_checker(typ.name)
        cache[id(typ)] = checker
        return checker
    if isinstance(typ, EnumType):
        checker = EnumChecker(typ.names())
        cache[id(typ)] = checker
        return checker
    if isinstance(typ, ArrayType):
        array = ArrayChecker(AnyChecker())
        cache[id(typ)] = array
        array.element = compile_type(typ.element, cache)
        return array
    if isinstance(typ, AlternateType):
        alternate = AlternateChecker(typ.name)
        cache[id(typ)] = alternate
        alternate.set_branches([compile_type(t, cache) for _, t in typ.branches])
        return alternate
    assert isinstance(typ, ObjectType), typ
    obj = ObjectChecker()
    cache[id(typ)] = obj
    obj.set_members([(m.name, m.optional, compile_type(m.type, cache)) for m in typ.members()])
    if typ.extra_members:
        obj.extra = AnyChecker()
    if typ.variants is not None:
        obj.tag = typ.variants.tag.name
        for case, branch_type in typ.variants.cases.items():
            branch = compile_type(branch_type, cache)
            assert isinstance(branch, ObjectChecker)
            obj.cases[case] = branch
    return obj


def compile_arguments(typ: ObjectType | None, cache: dict[int, Checker]) -> ObjectChecker:
    """The checker of a command's arguments (none: an empty object)."""
    if typ is None:
        empty = ObjectChecker()
        return empty
    checker = compile_type(typ, cache)
    assert isinstance(checker, ObjectChecker)
    return checker
