"""vmkit's QMP schema, written in QEMU's QAPI language, and what is built from it.

Every command and event ``vmkit run`` serves is declared once, in the data
files under ``schema/`` (``qapi-schema.json`` includes the others), the way
QEMU declares its own in ``qapi/*.json``. From that one declaration:

* the server checks each command's arguments before its handler runs, with
  QEMU's messages (:mod:`vmkit.qmp.qapi.visit`);
* ``query-qmp-schema`` answers in QEMU's ``SchemaInfo`` format
  (:mod:`vmkit.qmp.qapi.introspect`);
* answers and events are checked against their declared types when output
  checking is on, as in the test suite (:mod:`vmkit.qmp.qapi.conform`);
* the typed client :mod:`vmkit.qmp.typed` is generated
  (:mod:`vmkit.qmp.qapi.pygen`).

Modules: :mod:`~vmkit.qmp.qapi.reader` (files to definitions),
:mod:`~vmkit.qmp.qapi.model` (definitions to a checked :class:`Schema`).
:func:`vmkit_schema` loads the package's schema once per process.
"""

from __future__ import annotations

import functools
from importlib import resources

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
    SchemaError,
    Type,
    build_schema,
)
from vmkit.qmp.qapi.reader import SchemaSyntaxError, read_schema

__all__ = [
    "MAIN_FILE",
    "AlternateType",
    "ArrayType",
    "BuiltinType",
    "Command",
    "EnumType",
    "Event",
    "Member",
    "ObjectType",
    "Schema",
    "SchemaError",
    "SchemaSyntaxError",
    "Type",
    "load_schema",
    "vmkit_schema",
]

#: The schema file that includes all the others.
MAIN_FILE = "qapi-schema.json"


def load_schema(directory: str = "schema", main: str = MAIN_FILE) -> Schema:
    """Reads and checks the schema in ``directory`` of this package.

    :raises SchemaSyntaxError: a file is not QAPI's JSON.
    :raises SchemaError: a definition is refused.
    """
    root = resources.files(__package__).joinpath(directory)
    return build_schema(read_schema(main, lambda name: root.joinpath(name).read_text("utf-8")))


@functools.cache
def vmkit_schema() -> Schema:
    """The schema of ``vmkit run``'s monitor, read once per process."""
    return load_schema()
