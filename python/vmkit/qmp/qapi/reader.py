"""Reading QAPI schema files: text to a list of top-level expressions.

A schema file is written as QEMU writes ``qapi/*.json``: a sequence of JSON
objects with single-quoted strings and ``#`` comments to the end of the
line, one definition per object. ``{ 'include': 'FILE' }`` reads another
file of the same directory in its place (once, however often it is named).
The JSON is parsed by :mod:`vmkit.qmp.parser`, which reads QEMU's dialect;
this module only removes the comments and follows the includes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmkit.qmp.parser import JSONStreamParser, JSONValue, ParsedMessage

__all__ = ["Expression", "SchemaSyntaxError", "read_schema", "strip_comments"]


class SchemaSyntaxError(ValueError):
    """A schema file that is not a sequence of JSON objects."""


@dataclass(frozen=True)
class Expression:
    """One top-level definition and where it was read."""

    value: dict[str, JSONValue]
    file: str
    index: int
    """Its position in its file, from 1 (the parser keeps no line numbers)."""

    def where(self) -> str:
        """``file, definition N`` for messages."""
        return f"{self.file}, definition {self.index}"


def strip_comments(text: str) -> str:
    """``text`` with every ``#`` comment blanked out, strings left alone
    (a ``#`` inside quotes is text). Line ends are kept."""
    out: list[str] = []
    quote = ""
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            out.append(c)
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _parse(text: str, file: str) -> list[dict[str, JSONValue]]:
    # Limits far above any schema file: it is the package's own data.
    parser = JSONStreamParser(max_message_size=1 << 24, max_token_count=1 << 22)
    data = strip_comments(text).encode()
    values: list[dict[str, JSONValue]] = []
    for result in [*parser.feed(data), *parser.flush()]:
        if not isinstance(result, ParsedMessage):
            raise SchemaSyntaxError(f"{file}: {result.desc}")
        if not isinstance(result.value, dict):
            raise SchemaSyntaxError(f"{file}: a definition must be an object")
        values.append(result.value)
    return values


def read_schema(main: str, load: Callable[[str], str]) -> list[Expression]:
    """The definitions of schema file ``main`` and of the files it
    includes, in reading order; ``load(name)`` returns a file's text.

    :raises SchemaSyntaxError: bad JSON, or an ``include`` that is not a
        file name.
    """
    seen: set[str] = set()
    out: list[Expression] = []

    def visit(file: str) -> None:
        if file in seen:
            return
        seen.add(file)
        for index, value in enumerate(_parse(load(file), file), start=1):
            if "include" in value:
                target = value["include"]
                if len(value) != 1 or not isinstance(target, str) or "/" in target:
                    raise SchemaSyntaxError(
                        f"{file}, definition {index}: 'include' takes one file name"
                    )
                visit(target)
            else:
                out.append(Expression(value, file, index))

    visit(main)
    return out
