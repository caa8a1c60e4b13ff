"""Incremental parser for the JSON dialect QEMU's QMP monitor reads.

Feed it bytes as they arrive; it hands back every complete top-level value and
every error, in input order::

    parser = JSONStreamParser()
    for item in parser.feed(b'{"execute": \\'query-status\\'} {"exec'):
        ...                      # ParsedMessage({"execute": "query-status"})
    parser.feed(b'ute": "stop"}')  # [ParsedMessage({"execute": "stop"})]

What it accepts is what QEMU's ``qobject/json-lexer.c``, ``json-streamer.c`` and
``json-parser.c`` accept (QEMU 3.1 and later):

* RFC 8259 JSON, plus single-quoted strings (which may contain ``"`` unescaped)
  and the ``\\'`` escape in both kinds of string.
* No delimiter between values: several objects on one line, one object spread
  over many lines or chunks, whitespace optional.
* Strings are UTF-8 (QEMU's "modified UTF-8": ``C0 80`` encodes U+0000); raw
  control characters in strings are errors; ``\\uXXXX`` escapes must name
  valid characters (no lone surrogates, no noncharacters); duplicate keys are
  errors (``JSON parse error, duplicate key``).
* Integers are ``int`` when they fit int64 or uint64 and ``float`` beyond;
  numbers with a fraction or exponent are ``float``.

Errors and recovery, as in QEMU:

* A *lexical* error (a byte that can't continue or start a token, e.g. ``X``,
  ``01``, a control character) is reported at once as
  ``JSON parse error, stray '<token so far>'``; the partial message is dropped
  and the lexer then skips input until a safe point: a structural character
  (``{ } [ ] : ,``), an ASCII control character other than TAB (so any line
  end), or a 0xFE/0xFF byte. Skipping starts *after* the offending byte.
  Clients force a reset by sending a control character such as 0x1B or a 0xFF
  byte, which is always a lexical error.
* A *syntax* error (``{"a" 1}``) is reported only when the brackets of the
  top-level value balance (or go negative), with QEMU's messages:
  ``expecting value``, ``missing : in object pair``, ``key is not a string in
  object``, ``expected separator in dict``/``list``, ``invalid keyword 'x'``,
  ``invalid escape sequence in string``, ``invalid UTF-8 sequence in string``,
  ``\\uXXXX is not a valid Unicode character``, ``duplicate key``, each
  prefixed with ``JSON parse error, ``. Nothing is skipped afterwards.
* A limit error (``JSON token size limit exceeded``, ``JSON token count limit
  exceeded``, ``JSON nesting depth limit exceeded``) drops the message being
  read; the tokens after the one that crossed the limit start a new message,
  so the rest of an oversized object adds one ``expecting value`` error per
  closing bracket still to come. The connection stays usable.

Limits (all per top-level value, all configurable):

* :data:`DEFAULT_MAX_MESSAGE_SIZE` = 1 MiB of token bytes (whitespace between
  tokens is not counted, as in QEMU). QEMU allows 64 MiB; a QMP request is
  rarely more than a few KiB, and a Python server holding many clients should
  not build 64 MiB of Python objects for each.
* :data:`DEFAULT_MAX_TOKEN_COUNT` = 131072 tokens (QEMU: 2 Mi tokens, i.e. one
  per 32 bytes of its size limit; ours is one per 8 bytes). It bounds the
  number of Python objects a message can create.
* :data:`DEFAULT_MAX_NESTING` = 1024 open brackets, QEMU's ``MAX_NESTING``. The
  parser is not recursive, so this depth is safe.

Deliberate differences from QEMU, all at the edges:

* QEMU's streamer keeps waiting when braces go negative while brackets are
  still open (``[1}`` is never reported, and it swallows following input until
  a ``]``); here a negative count of either kind ends the message, giving
  ``expected separator in list``.
* A single token longer than the size limit is cut off as soon as it crosses
  it (QEMU re-lexes the rest of an over-long token as new tokens); the lexer
  then skips to a safe point as after a lexical error.
* Limits use ``>`` (a message of exactly the limit is accepted); QEMU's size
  check rejects a message of exactly 64 MiB.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_NESTING",
    "DEFAULT_MAX_TOKEN_COUNT",
    "JSONStreamParser",
    "JSONValue",
    "ParseFailure",
    "ParseResult",
    "ParsedMessage",
]

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"
"""A decoded JSON value."""

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
"""Default limit on the token bytes of one top-level value (QEMU: 64 MiB)."""

DEFAULT_MAX_TOKEN_COUNT = 1 << 17
"""Default limit on the tokens of one top-level value (QEMU: 2 Mi)."""

DEFAULT_MAX_NESTING = 1 << 10
"""Default limit on open brackets and braces (QEMU: 1024)."""


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A complete top-level JSON value."""

    value: JSONValue


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """A lexical, syntax or limit error; ``desc`` is QEMU's message for it."""

    desc: str


ParseResult: TypeAlias = ParsedMessage | ParseFailure


class _Tok(enum.IntEnum):
    LCURLY = enum.auto()
    RCURLY = enum.auto()
    LSQUARE = enum.auto()
    RSQUARE = enum.auto()
    COLON = enum.auto()
    COMMA = enum.auto()
    STRING = enum.auto()
    INTEGER = enum.auto()
    FLOAT = enum.auto()
    KEYWORD = enum.auto()


class _Lex(enum.IntEnum):
    START = enum.auto()
    RECOVERY = enum.auto()
    STRING = enum.auto()
    STRING_ESCAPE = enum.auto()
    ZERO = enum.auto()
    SIGN = enum.auto()
    DIGITS = enum.auto()
    MANTISSA = enum.auto()
    MANTISSA_DIGITS = enum.auto()
    EXP_E = enum.auto()
    EXP_SIGN = enum.auto()
    EXP_DIGITS = enum.auto()
    KEYWORD = enum.auto()


_STRUCTURAL = {
    ord("{"): _Tok.LCURLY,
    ord("}"): _Tok.RCURLY,
    ord("["): _Tok.LSQUARE,
    ord("]"): _Tok.RSQUARE,
    ord(":"): _Tok.COLON,
    ord(","): _Tok.COMMA,
}
_STRUCTURAL_BYTES = {tok: bytes([ch]) for ch, tok in _STRUCTURAL.items()}
_WHITESPACE_RUN = re.compile(rb"[ \t\r\n]*")
_DIGIT_RUN = re.compile(rb"[0-9]*")
_KEYWORD_RUN = re.compile(rb"[a-z]*")
# Bytes a string may contain unescaped: 0x20..0xFD except the quote and backslash.
_STRING_RUN = {
    ord('"'): re.compile(rb'[^"\\\x00-\x1f\xfe\xff]*'),
    ord("'"): re.compile(rb"[^'\\\x00-\x1f\xfe\xff]*"),
}
# Bytes skipped while recovering from a lexical error.
_RECOVERY_RUN = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")
_DIGIT_BYTES = frozenset(b"0123456789")
_NONZERO_DIGIT_BYTES = frozenset(b"123456789")
_KEYWORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
_NONCHARACTER = re.compile(
    "[\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
    + "]"
)
_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1


class _SyntaxError(Exception):
    """A syntax error inside one message; carries QEMU's message without prefix."""


def _is_valid_codepoint(cp: int) -> bool:
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and not 0xFDD0 <= cp <= 0xFDEF
        and (cp & 0xFFFE) != 0xFFFE
    )


def _decode_utf8(raw: bytes) -> str:
    """Decode QEMU's modified UTF-8 (``C0 80`` is U+0000), rejecting noncharacters."""
    try:
        text = "\0".join(part.decode("utf-8") for part in raw.split(b"\xc0\x80"))
    except UnicodeDecodeError:
        raise _SyntaxError("invalid UTF-8 sequence in string") from None
    if _NONCHARACTER.search(text):
        raise _SyntaxError("invalid UTF-8 sequence in string")
    return text


def _hex4(raw: bytes) -> int:
    return int(raw, 16) if _HEX4.fullmatch(raw) else -1


def _decode_string(token: bytes) -> str:
    """The value of a string token, quotes included in ``token``."""
    body = token[1:-1]
    if b"\\" not in body:
        return _decode_utf8(body)
    parts: list[str] = []
    pos = 0
    while True:
        slash = body.find(b"\\", pos)
        if slash < 0:
            parts.append(_decode_utf8(body[pos:]))
            return "".join(parts)
        parts.append(_decode_utf8(body[pos:slash]))
        kind = body[slash + 1]  # the lexer guarantees a byte after a backslash
        simple = _SIMPLE_ESCAPES.get(kind)
        if simple is not None:
            parts.append(simple)
            pos = slash + 2
            continue
        if kind != ord("u"):
            raise _SyntaxError("invalid escape sequence in string")
        end = slash + 6
        cp = _hex4(body[slash + 2 : end])
        if 0xD800 <= cp <= 0xDBFF and body[end : end + 2] == b"\\u":
            trailing = _hex4(body[end + 2 : end + 6])
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) | (trailing & 0x3FF)
                end += 6
            else:
                cp = -1
        if not _is_valid_codepoint(cp):
            shown = body[slash:end].decode("utf-8", "replace")
            raise _SyntaxError(f"{shown} is not a valid Unicode character")
        parts.append(chr(cp))
        pos = end


def _decode_integer(token: bytes) -> int | float:
    # More than 20 digits never fits uint64 (and int() refuses > 4300 digits).
    if len(token) <= 21:
        value = int(token)
        if _INT_MIN <= value <= _UINT_MAX:
            return value
    return float(token)


# --- fast path -----------------------------------------------------------------

#: Largest chunk the fast path tries (a typical command is well under this).
_FAST_PATH_MAX = 4096
#: Bytes that send a chunk to the full lexer: control characters other than
#: TAB/CR/LF, single quotes (QEMU's extension) and anything non-ASCII.
_FAST_PATH_REFUSED = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f'\x7f-\xff]")


class _NotFastError(Exception):
    """Raised inside ``json.loads`` hooks: leave this chunk to the lexer."""


def _no_duplicates(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _NotFastError  # the lexer reports "duplicate key"
    return obj


def _refuse_constant(_name: str) -> JSONValue:
    raise _NotFastError  # NaN / Infinity are not JSON for QEMU


def _fast_int(text: str) -> int | float:
    value = int(text)
    if len(text) > 21 or not _INT_MIN <= value <= _UINT_MAX:
        raise _NotFastError  # the lexer's own rule turns it into a float
    return value


def _fast_parse(data: bytes | bytearray, max_nesting: int) -> JSONValue:
    """The value of ``data`` if it is exactly one plain JSON object (ASCII,
    double quotes, nothing before or after but whitespace, within the
    nesting limit) — the common case of one command per read — else
    ``None``, and the full lexer handles it with QEMU's rules and errors.
    Both give the same value for what the fast path accepts."""
    if len(data) > _FAST_PATH_MAX:
        return None
    text = data.strip(b" \t\r\n")
    if not (text.startswith(b"{") and text.endswith(b"}")) or _FAST_PATH_REFUSED.search(text):
        return None
    if text.count(b"{") + text.count(b"[") > max_nesting or b"\\u" in text:
        return None  # too deep, or \u escapes (NUL and lone surrogates are QEMU errors)
    try:
        value: JSONValue = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
            parse_int=_fast_int,
        )
    except (_NotFastError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _decode_keyword(token: bytes) -> bool | None:
    if token == b"true":
        return True
    if token == b"false":
        return False
    if token == b"null":
        return None
    raise _SyntaxError(f"invalid keyword '{token.decode('ascii')}'")


class _Expect(enum.IntEnum):
    """What the value builder expects next inside a container."""

    KEY_OR_END = enum.auto()  # after '{'
    KEY = enum.auto()  # after ',' in an object
    COLON = enum.auto()
    MEMBER_VALUE = enum.auto()
    OBJECT_SEPARATOR = enum.auto()  # ',' or '}'
    ELEMENT_OR_END = enum.auto()  # after '['
    ELEMENT = enum.auto()  # after ',' in an array
    ARRAY_SEPARATOR = enum.auto()  # ',' or ']'


class _Frame:
    __slots__ = ("container", "expect", "key")

    def __init__(self, container: dict[str, JSONValue] | list[JSONValue], expect: _Expect) -> None:
        self.container = container
        self.expect = expect
        self.key = ""


_VALUE_SLOTS = frozenset(
    {_Expect.KEY_OR_END, _Expect.KEY, _Expect.MEMBER_VALUE, _Expect.ELEMENT_OR_END, _Expect.ELEMENT}
)


class _ValueBuilder:
    """Builds one top-level value from tokens, without recursion.

    The first syntax error wins, as in QEMU's recursive-descent parser: tokens
    are consumed in the same left-to-right order, so the same error is found.
    """

    __slots__ = ("done", "stack", "value")

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        self.done = False
        self.value: JSONValue = None

    def feed(self, tok: _Tok, text: bytes) -> None:
        frame = self.stack[-1] if self.stack else None
        expect = frame.expect if frame is not None else None
        if frame is None or expect in _VALUE_SLOTS:
            if tok is _Tok.LCURLY:
                self.stack.append(_Frame({}, _Expect.KEY_OR_END))
            elif tok is _Tok.LSQUARE:
                self.stack.append(_Frame([], _Expect.ELEMENT_OR_END))
            elif (tok is _Tok.RCURLY and expect is _Expect.KEY_OR_END) or (
                tok is _Tok.RSQUARE and expect is _Expect.ELEMENT_OR_END
            ):
                self._close()
            elif tok is _Tok.STRING:
                self._complete(_decode_string(text))
            elif tok is _Tok.INTEGER:
                self._complete(_decode_integer(text))
            elif tok is _Tok.FLOAT:
                self._complete(float(text))
            elif tok is _Tok.KEYWORD:
                self._complete(_decode_keyword(text))
            else:
                raise _SyntaxError("expecting value")
        elif expect is _Expect.COLON:
            if tok is not _Tok.COLON:
                raise _SyntaxError("missing : in object pair")
            frame.expect = _Expect.MEMBER_VALUE
        elif expect is _Expect.OBJECT_SEPARATOR:
            if tok is _Tok.RCURLY:
                self._close()
            elif tok is _Tok.COMMA:
                frame.expect = _Expect.KEY
            else:
                raise _SyntaxError("expected separator in dict")
        else:  # ARRAY_SEPARATOR
            if tok is _Tok.RSQUARE:
                self._close()
            elif tok is _Tok.COMMA:
                frame.expect = _Expect.ELEMENT
            else:
                raise _SyntaxError("expected separator in list")

    def _close(self) -> None:
        self._complete(self.stack.pop().container)

    def _complete(self, value: JSONValue) -> None:
        if not self.stack:
            self.value = value
            self.done = True
            return
        frame = self.stack[-1]
        container = frame.container
        if isinstance(container, list):
            container.append(value)
            frame.expect = _Expect.ARRAY_SEPARATOR
        elif frame.expect is _Expect.MEMBER_VALUE:
            if frame.key in container:
                raise _SyntaxError("duplicate key")
            container[frame.key] = value
            frame.expect = _Expect.OBJECT_SEPARATOR
        else:  # a key
            if not isinstance(value, str):
                raise _SyntaxError("key is not a string in object")
            frame.key = value
            frame.expect = _Expect.COLON


class JSONStreamParser:
    """Turns a byte stream into top-level JSON values and errors, incrementally.

    Each :meth:`feed` scans only the new bytes (regular expressions consume
    runs of string, number and whitespace bytes), so a message split into many
    chunks costs the same as one chunk. Not thread-safe; use one per stream.
    """

    def __init__(
        self,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_token_count: int = DEFAULT_MAX_TOKEN_COUNT,
        max_nesting: int = DEFAULT_MAX_NESTING,
    ) -> None:
        if min(max_message_size, max_token_count, max_nesting) < 1:
            raise ValueError("parser limits must be positive")
        self.max_message_size = max_message_size
        self.max_token_count = max_token_count
        self.max_nesting = max_nesting
        self._results: list[ParseResult] = []
        self.reset()

    def reset(self) -> None:
        """Forget any partial token or message (e.g. when a client reconnects)."""
        self._state = _Lex.START
        self._quote = 0
        self._token = bytearray()
        self._reset_message()

    def _reset_message(self) -> None:
        self._braces = 0
        self._brackets = 0
        self._size = 0
        self._count = 0
        self._builder = _ValueBuilder()
        self._error: str | None = None

    def feed(self, data: bytes) -> list[ParseResult]:
        """Consume ``data``; return the values and errors it completed, in order."""
        if not isinstance(data, bytes):
            data = memoryview(data).tobytes()
        whole = self.feed_whole(data)
        if whole is not None:
            return [whole]
        self._lex(data)
        results, self._results = self._results, []
        return results

    def feed_whole(self, data: bytes | bytearray) -> ParsedMessage | None:
        """The message ``data`` holds if it is exactly one plain JSON object
        (the fast path, a few KiB at most) and no partial input is pending;
        else ``None``, and nothing is consumed: :meth:`feed` it, in slices
        if it is long."""
        if self._state is not _Lex.START or self._count or self._token:
            return None
        value = _fast_parse(data, self.max_nesting)
        return None if value is None else ParsedMessage(value)

    def flush(self) -> list[ParseResult]:
        """End of input: finish a pending number or keyword, report anything incomplete."""
        state = self._state
        if state in (_Lex.ZERO, _Lex.DIGITS):
            self._emit_token(_Tok.INTEGER)
        elif state in (_Lex.MANTISSA_DIGITS, _Lex.EXP_DIGITS):
            self._emit_token(_Tok.FLOAT)
        elif state is _Lex.KEYWORD:
            self._emit_token(_Tok.KEYWORD)
        elif state not in (_Lex.START, _Lex.RECOVERY):
            self._lexical_error()
        self._state = _Lex.START
        if self._count:
            self._results.append(ParseFailure("JSON parse error, premature EOI"))
            self._reset_message()
        results, self._results = self._results, []
        return results

    # --- lexer ------------------------------------------------------------

    def _lex(self, data: bytes) -> None:
        pos = 0
        end = len(data)
        token = self._token
        while pos < end:
            state = self._state
            if state is _Lex.START:
                pos = _WHITESPACE_RUN.match(data, pos).end()  # type: ignore[union-attr]
                if pos == end:
                    break
                ch = data[pos]
                pos += 1
                structural = _STRUCTURAL.get(ch)
                if structural is not None:
                    self._process(structural, _STRUCTURAL_BYTES[structural])
                    continue
                token.append(ch)
                if ch == 0x22 or ch == 0x27:  # " or '
                    self._quote = ch
                    self._state = _Lex.STRING
                elif ch == 0x30:  # 0
                    self._state = _Lex.ZERO
                elif ch in _NONZERO_DIGIT_BYTES:
                    self._state = _Lex.DIGITS
                elif ch == 0x2D:  # -
                    self._state = _Lex.SIGN
                elif ch in _KEYWORD_BYTES:
                    self._state = _Lex.KEYWORD
                else:
                    self._lexical_error()
            elif state is _Lex.RECOVERY:
                pos = _RECOVERY_RUN.match(data, pos).end()  # type: ignore[union-attr]
                if pos < end:
                    self._state = _Lex.START  # the byte at pos is re-read in START
            elif state is _Lex.STRING:
                run_end = _STRING_RUN[self._quote].match(data, pos).end()  # type: ignore[union-attr]
                token += data[pos:run_end]
                pos = run_end
                if self._token_too_long():
                    continue
                if pos == end:
                    break
                ch = data[pos]
                pos += 1
                token.append(ch)
                if ch == self._quote:
                    self._emit_token(_Tok.STRING)
                elif ch == 0x5C:  # backslash
                    self._state = _Lex.STRING_ESCAPE
                else:
                    self._lexical_error()
            elif state is _Lex.STRING_ESCAPE:
                ch = data[pos]
                pos += 1
                token.append(ch)
                if 0x20 <= ch <= 0xFD:
                    self._state = _Lex.STRING
                else:
                    self._lexical_error()
            elif state is _Lex.KEYWORD:
                run_end = _KEYWORD_RUN.match(data, pos).end()  # type: ignore[union-attr]
                token += data[pos:run_end]
                pos = run_end
                if not self._token_too_long() and pos < end:
                    self._emit_token(_Tok.KEYWORD)  # lookahead: data[pos] not consumed
            else:
                pos = self._lex_number(state, data, pos)

    def _lex_number(self, state: _Lex, data: bytes, pos: int) -> int:
        """One step of the number automaton; returns the new position."""
        token = self._token
        if state in (_Lex.DIGITS, _Lex.MANTISSA_DIGITS, _Lex.EXP_DIGITS):
            run_end = _DIGIT_RUN.match(data, pos).end()  # type: ignore[union-attr]
            token += data[pos:run_end]
            pos = run_end
            if self._token_too_long() or pos == len(data):
                return pos
        ch = data[pos]
        if state is _Lex.ZERO:
            if ch in _DIGIT_BYTES:
                token.append(ch)
                self._lexical_error()
                return pos + 1
            if ch == 0x2E:  # .
                token.append(ch)
                self._state = _Lex.MANTISSA
                return pos + 1
            self._emit_token(_Tok.INTEGER)
            return pos
        if state is _Lex.DIGITS:
            if ch == 0x2E:
                token.append(ch)
                self._state = _Lex.MANTISSA
                return pos + 1
            if ch in (0x65, 0x45):  # e E
                token.append(ch)
                self._state = _Lex.EXP_E
                return pos + 1
            self._emit_token(_Tok.INTEGER)
            return pos
        if state is _Lex.MANTISSA_DIGITS:
            if ch in (0x65, 0x45):
                token.append(ch)
                self._state = _Lex.EXP_E
                return pos + 1
            self._emit_token(_Tok.FLOAT)
            return pos
        if state is _Lex.EXP_DIGITS:
            self._emit_token(_Tok.FLOAT)
            return pos
        # States that need one more specific byte: anything else is an error.
        token.append(ch)
        if state is _Lex.SIGN:
            if ch == 0x30:
                self._state = _Lex.ZERO
            elif ch in _NONZERO_DIGIT_BYTES:
                self._state = _Lex.DIGITS
            else:
                self._lexical_error()
        elif state is _Lex.EXP_E and ch in (0x2B, 0x2D):  # + -
            self._state = _Lex.EXP_SIGN
        elif ch in _DIGIT_BYTES:  # MANTISSA, EXP_E, EXP_SIGN
            self._state = _Lex.MANTISSA_DIGITS if state is _Lex.MANTISSA else _Lex.EXP_DIGITS
        else:
            self._lexical_error()
        return pos + 1

    def _token_too_long(self) -> bool:
        """Cut off a token that by itself pushes the message over the size limit."""
        if self._size + len(self._token) <= self.max_message_size:
            return False
        self._token.clear()
        self._state = _Lex.RECOVERY
        self._fail("JSON token size limit exceeded")
        return True

    def _emit_token(self, tok: _Tok) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _Lex.START
        self._process(tok, text)

    def _lexical_error(self) -> None:
        text = bytes(self._token).split(b"\0", 1)[0]  # QEMU prints it with %s
        self._token.clear()
        self._state = _Lex.RECOVERY
        self._fail(f"JSON parse error, stray '{text.decode('utf-8', 'replace')}'")

    # --- streamer -----------------------------------------------------------

    def _fail(self, desc: str) -> None:
        self._results.append(ParseFailure(desc))
        self._reset_message()

    def _process(self, tok: _Tok, text: bytes) -> None:
        if tok is _Tok.LCURLY:
            self._braces += 1
        elif tok is _Tok.RCURLY:
            self._braces -= 1
        elif tok is _Tok.LSQUARE:
            self._brackets += 1
        elif tok is _Tok.RSQUARE:
            self._brackets -= 1

        if self._size + len(text) > self.max_message_size:
            self._fail("JSON token size limit exceeded")
            return
        if self._count + 1 > self.max_token_count:
            self._fail("JSON token count limit exceeded")
            return
        if self._braces + self._brackets > self.max_nesting:
            self._fail("JSON nesting depth limit exceeded")
            return
        self._size += len(text)
        self._count += 1

        if self._error is None:
            try:
                self._builder.feed(tok, text)
            except _SyntaxError as exc:
                self._error = f"JSON parse error, {exc}"

        if self._braces >= 0 and self._brackets >= 0 and (self._braces or self._brackets):
            return  # the top-level value is still open
        builder = self._builder
        if self._error is not None:
            self._results.append(ParseFailure(self._error))
        elif builder.done:
            self._results.append(ParsedMessage(builder.value))
        else:  # unreachable with balanced brackets; kept as a safety net
            self._results.append(ParseFailure("JSON parse error, premature EOI"))
        self._reset_message()
