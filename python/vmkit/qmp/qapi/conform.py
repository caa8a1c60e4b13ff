"""Does a value the server sends match its declared type?

QEMU builds every answer and event through generated code, so its output
cannot stray from its schema; vmkit's handlers build JSON by hand, so this
module checks it: :func:`mismatch` names the first place where a value
does not have its declared type. The server runs it on every answer and
event when output checking is on (``VMKIT_QMP_CHECK_OUTPUT=1``, which the
test suite sets), so a reply the schema does not describe fails loudly.

The rules are strict where a client relies on them: every mandatory
member present, no member the schema does not declare, integers within
their type's range, enum values declared. (Clients must tolerate unknown
members, but vmkit's schema declares everything vmkit sends.)
"""

from __future__ import annotations

from vmkit.qmp.parser import JSONValue
from vmkit.qmp.qapi.model import (
    AlternateType,
    ArrayType,
    BuiltinType,
    EnumType,
    Member,
    ObjectType,
    Type,
)

__all__ = ["mismatch"]

_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
    "size": (0, (1 << 64) - 1),
}


def _kind(value: JSONValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _builtin(typ: BuiltinType, value: JSONValue, path: str) -> str | None:
    name = typ.name
    kind = _kind(value)
    if name == "any":
        return None
    if name in _RANGES:
        if kind != "int":
            return f"{path}: {kind} where {name} is declared"
        assert isinstance(value, int)
        low, high = _RANGES[name]
        if not low <= value <= high:
            return f"{path}: {value} is out of {name}'s range"
        return None
    expected = {"str": "string", "bool": "boolean", "null": "null", "number": "number"}[name]
    if kind == expected or (expected == "number" and kind == "int"):
        return None
    return f"{path}: {kind} where {name} is declared"


def _members(typ: ObjectType, value: dict[str, JSONValue]) -> list[tuple[Member, str]]:
    """The members ``value`` may have (a union's base and its branch's),
    each with the name of the type that has it."""
    members = [(m, typ.name) for m in typ.members()]
    if typ.variants is not None:
        tag = value.get(typ.variants.tag.name)
        branch = typ.variants.cases.get(tag) if isinstance(tag, str) else None
        if branch is not None:
            members += _members(branch, value)
    return members


def _object(typ: ObjectType, value: JSONValue, path: str) -> str | None:
    if not isinstance(value, dict):
        return f"{path}: {_kind(value)} where object {typ.name} is declared"
    members = _members(typ, value)
    prefix = f"{path}." if path else ""
    declared = set()
    for member, owner in members:
        declared.add(member.name)
        if member.name not in value:
            if not member.optional:
                return f"{prefix}{member.name}: missing (declared in {owner})"
            continue
        problem = mismatch(member.type, value[member.name], prefix + member.name)
        if problem is not None:
            return problem
    unknown = sorted(set(value) - declared)
    if unknown:
        return f"{prefix}{unknown[0]}: not a member of {typ.name}"
    return None


def mismatch(typ: Type, value: JSONValue, path: str = "") -> str | None:
    """Where ``value`` departs from ``typ`` and how, or ``None`` if it conforms.

    ``path`` names ``value`` in the message (``ram.total``, ``[3].name``).
    """
    where = path or "(the value)"
    if isinstance(typ, BuiltinType):
        return _builtin(typ, value, where)
    if isinstance(typ, EnumType):
        if not isinstance(value, str):
            return f"{where}: {_kind(value)} where enum {typ.name} is declared"
        if value not in typ.names():
            return f"{where}: '{value}' is not a value of {typ.name}"
        return None
    if isinstance(typ, ArrayType):
        if not isinstance(value, list):
            return f"{where}: {_kind(value)} where an array is declared"
        for i, item in enumerate(value):
            problem = mismatch(typ.element, item, f"{path}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(typ, AlternateType):
        problems = [mismatch(t, value, path) for _, t in typ.branches]
        if any(p is None for p in problems):
            return None
        return f"{where}: matches no branch of {typ.name} ({'; '.join(map(str, problems))})"
    assert isinstance(typ, ObjectType)
    return _object(typ, value, path)
