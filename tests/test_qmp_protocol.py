"""Tests for vmkit.qmp: the JSON stream parser, argument checking, and the QMP server.

Server tests talk raw bytes over sockets (so framing, CRLF and error texts are
checked exactly) and also use QEMU's own client library, ``qemu.qmp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit import errors
from vmkit.jobs import JobManager, JobStatus
from vmkit.qmp import (
    UNIX_PATH_MAX,
    CommandContext,
    CommandNotFound,
    CommandRegistry,
    DeviceNotActive,
    DeviceNotFound,
    Enum,
    ErrorClass,
    GenericError,
    JSONStreamParser,
    JSONValue,
    KVMMissingCap,
    ParsedMessage,
    ParseFailure,
    QMPError,
    QMPServer,
    QMPVersion,
    SessionPhase,
    SessionState,
    check_arguments,
    error_response,
    to_qmp_error,
)
from vmkit.qmp import server as server_module
from vmkit.qmp.parser import _fast_parse
from vmkit.qmp.server import _dumps_deep

# --- helpers -------------------------------------------------------------------


def parse_all(data: bytes, **limits: int) -> list[Any]:
    """Feed ``data`` then flush; values as themselves, failures as ParseFailure."""
    parser = JSONStreamParser(**limits)
    results = parser.feed(data) + parser.flush()
    return [r.value if isinstance(r, ParsedMessage) else r for r in results]


def fail(desc: str) -> ParseFailure:
    return ParseFailure(desc)


def syntax(desc: str) -> ParseFailure:
    return ParseFailure(f"JSON parse error, {desc}")


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory: UNIX socket paths must fit in 108 bytes."""
    path = tempfile.mkdtemp(prefix="qmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Gate:
    """Long work the test holds: the ``gated`` command runs a job that
    waits for :meth:`release` (30 s at most, should a test forget)."""

    def __init__(self) -> None:
        self.jobs = JobManager()
        self.event = threading.Event()

    def release(self) -> None:
        self.event.set()

    def running(self) -> int:
        return sum(j.status is JobStatus.RUNNING for j in self.jobs.jobs())

    def wait_released(self, job: object) -> bool:
        return self.event.wait(30)


def demo_registry(server_ref: list[QMPServer], gate: Gate | None = None) -> CommandRegistry:
    """Demo commands; ``server_ref[0]`` is the server they run in."""
    registry = CommandRegistry()
    held = gate if gate is not None else Gate()

    @registry.command("query-version")
    def query_version(ctx: CommandContext) -> JSONValue:
        return server_ref[0].version.to_json()

    @registry.command(
        "echo",
        {
            "text": "str",
            "*count": "int",
            "*ratio": "number",
            "*flag": "bool",
            "*small": "uint8",
            "*big": "uint64",
            "*mode": Enum("EchoMode", ["plain", "upper"]),
            "*tags": ["str"],
            "*opts": {"level": "int8", "*name": "str"},
            "*blob": "any",
        },
    )
    def echo(ctx: CommandContext) -> JSONValue:
        return ctx.arguments

    @registry.command("depth", {"value": "any"})
    def depth(ctx: CommandContext) -> JSONValue:
        value, levels = ctx.arguments["value"], 0
        while isinstance(value, list):
            value, levels = (value[0] if value else None), levels + 1
        return levels

    @registry.command("emit-event", {"name": "str", "*data": "object"})
    def emit_event(ctx: CommandContext) -> JSONValue:
        data = ctx.arguments.get("data")
        assert data is None or isinstance(data, dict)
        name = ctx.arguments["name"]
        assert isinstance(name, str)
        server_ref[0].emit(name, data)
        return None

    @registry.command("sleep", {"ms": "int"})
    async def sleep(ctx: CommandContext) -> JSONValue:
        ms = ctx.arguments["ms"]
        assert isinstance(ms, int)
        await asyncio.sleep(ms / 1000)
        return {"slept": ms}

    @registry.command("gated")
    async def gated(ctx: CommandContext) -> JSONValue:
        return {"released": await held.jobs.start("gated", held.wait_released).wait()}

    @registry.command("emit-many", {"count": "int", "size": "int", "batch": "int"})
    async def emit_many(ctx: CommandContext) -> JSONValue:
        count, size, batch = (int(ctx.arguments[k]) for k in ("count", "size", "batch"))  # type: ignore[call-overload]
        for i in range(count):
            server_ref[0].emit("SMALL", {"n": i, "pad": "p" * size})
            if i % batch == batch - 1:
                await asyncio.sleep(0)  # let the loop write to the clients
        return None

    @registry.command("sessions")
    def sessions(ctx: CommandContext) -> JSONValue:
        return [
            {"peer": s.peer, "parsed": s.bytes_parsed, "received": s.bytes_received}
            for s in server_ref[0].session_stats()
        ]

    @registry.command("fail")
    def fail_command(ctx: CommandContext) -> JSONValue:
        raise DeviceNotFound("Device 'nic0' not found")

    @registry.command("crash")
    def crash(ctx: CommandContext) -> JSONValue:
        raise RuntimeError("boom")

    @registry.command("bad-return")
    def bad_return(ctx: CommandContext) -> JSONValue:
        return float("nan")  # JSON can't carry it

    @registry.command("quit")
    def quit_command(ctx: CommandContext) -> JSONValue:
        ctx.request_shutdown()
        return None

    return registry


def make_server(gate: Gate | None = None, **kwargs: Any) -> QMPServer:
    ref: list[QMPServer] = []
    registry = demo_registry(ref, gate)
    server = QMPServer(registry, version=QMPVersion(9, 2, 1, "vmkit-test"), **kwargs)
    ref.append(server)
    return server


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release()


@pytest.fixture
def server(short_dir: str, gate: Gate) -> Iterator[QMPServer]:
    srv = make_server(gate).start_in_thread(os.path.join(short_dir, "qmp.sock"))
    yield srv
    srv.close()


class RawClient:
    """A blocking QMP client on a raw socket that checks CRLF framing."""

    def __init__(self, address: str | tuple[str, int], *, negotiate: bool = False) -> None:
        if isinstance(address, tuple):
            self.sock = socket.create_connection(address, timeout=10)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(address)
        self.buffer = b""
        self.greeting = self.recv()
        if negotiate:
            assert self.execute("qmp_capabilities") == {"return": {}}

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a TCP/UNIX reset-like abrupt end (no graceful shutdown)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def recv_line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        assert line.endswith(b"\r"), line
        assert line.isascii()
        return line[:-1]

    def recv(self) -> dict[str, Any]:
        message = json.loads(self.recv_line())
        assert isinstance(message, dict)
        return message

    def request(self, obj: object) -> dict[str, Any]:
        self.send(json.dumps(obj))
        return self.recv()

    def execute(self, name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> Any:
        request: dict[str, Any] = {"execute": name, **extra}
        if arguments is not None:
            request["arguments"] = arguments
        return self.request(request)

    def recv_until_id(self, request_id: object) -> list[dict[str, Any]]:
        """Every message up to and including the response with ``request_id``."""
        messages = []
        while True:
            message = self.recv()
            messages.append(message)
            if message.get("id") == request_id and "event" not in message:
                return messages

    def at_eof(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.buffer == b"" and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def connect(server: QMPServer) -> Iterator[Any]:
    clients: list[RawClient] = []

    def factory(*, negotiate: bool = True) -> RawClient:
        address = server.address
        client = RawClient(address, negotiate=negotiate)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def generic(desc: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}, **extra}


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- parser: accepted dialect ------------------------------------------------------


def test_parser_accepts_several_objects_on_one_line_and_single_quotes() -> None:
    data = b"""{"execute": 'query-status'}{'a': 'say "hi"', "b": "it\\'s"} [1, 'x']\r\n"""
    assert parse_all(data) == [
        {"execute": "query-status"},
        {"a": 'say "hi"', "b": "it's"},
        [1, "x"],
    ]


def test_parser_object_split_over_lines_and_single_bytes() -> None:
    data = b'{\n  "execute":\n  "echo",\n  "arguments": {"text": "a\\u00e9\\ud83d\\ude00"}\n}'
    parser = JSONStreamParser()
    results = [r for i in range(len(data)) for r in parser.feed(data[i : i + 1])]
    assert results == [ParsedMessage({"execute": "echo", "arguments": {"text": "aé😀"}})]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-0", 0),
        (b"-12", -12),
        (b"9223372036854775807", 2**63 - 1),
        (b"18446744073709551615", 2**64 - 1),  # uint64 stays an int
        (b"18446744073709551616", float(2**64)),  # beyond uint64: a double
        (b"-9223372036854775809", float(-(2**63) - 1)),
        (b"1" * 5000, float("inf")),  # no int() digit-limit error
        (b"1.5", 1.5),
        (b"-2.5e3", -2500.0),
        (b"1E+2", 100.0),
        (b"true", True),
        (b"false", False),
        (b"null", None),
        (b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\/\b\f\n\r\t'),
        (b"'\\u0041\\''", "A'"),
        (b'"\xc0\x80"', "\0"),  # modified UTF-8 NUL
        (b'"\\u0000"', "\0"),
        (b'"\xe2\x82\xac"', "€"),
    ],
)
def test_parser_scalars(text: bytes, value: object) -> None:
    assert parse_all(text) == [value]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"a" 1}', [syntax("missing : in object pair")]),
        (b'{"a": }', [syntax("expecting value")]),
        (b"{1: 2}", [syntax("key is not a string in object")]),
        (b'{{"x": 1}: 2}', [syntax("key is not a string in object")]),
        (b'{"a": 1 "b": 2}', [syntax("expected separator in dict")]),
        (b"[1 2]", [syntax("expected separator in list")]),
        (b"[1,]", [syntax("expecting value")]),
        (b'{"a": 1,}', [syntax("expecting value")]),
        (b'{"a": 1, "a": 2}', [syntax("duplicate key")]),
        (b'{"a": [1 2], "a": 2}', [syntax("expected separator in list")]),  # first error wins
        (b"[tru]", [syntax("invalid keyword 'tru'")]),
        (b'"\\q"', [syntax("invalid escape sequence in string")]),
        (b'"\\uD800"', [syntax("\\uD800 is not a valid Unicode character")]),
        (b'"\\uDC00\\u0041"', [syntax("\\uDC00 is not a valid Unicode character")]),
        (b'"\\uFFFF"', [syntax("\\uFFFF is not a valid Unicode character")]),
        (b'"\\u12G4"', [syntax("\\u12G4 is not a valid Unicode character")]),
        (b'"\xc3("', [syntax("invalid UTF-8 sequence in string")]),
        (b'"\xef\xbf\xbf"', [syntax("invalid UTF-8 sequence in string")]),  # U+FFFF raw
        (b"}", [syntax("expecting value")]),
        (b"]]", [syntax("expecting value"), syntax("expecting value")]),
        (b'{"a": 1]', [syntax("expected separator in dict")]),
        # Deliberate difference: QEMU would wait for a ']' here.
        (b"[1}", [syntax("expected separator in list")]),
    ],
)
def test_parser_syntax_errors(text: bytes, expected: list[ParseFailure]) -> None:
    assert parse_all(text) == expected


def test_parser_syntax_error_resumes_at_next_token() -> None:
    # Nothing is skipped after a syntax error: the next value parses.
    assert parse_all(b'{"a" 1} 5 {"b": 2}') == [syntax("missing : in object pair"), 5, {"b": 2}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The stray token includes the offending byte; skipping starts after it
        # and stops at a structural character or a control character.
        (b'X 123 "s" {"a": 1}', [syntax("stray 'X'"), {"a": 1}]),
        (b'01 2 {"a": 1}', [syntax("stray '01'"), {"a": 1}]),
        (b"-x\n7 ", [syntax("stray '-x'"), 7]),
        (b"1.e5 [2]", [syntax("stray '1.e'"), [2]]),
        (b"1e+ [3]", [syntax("stray '1e+ '"), [3]]),
        (b'"ab\x01cd" [4]', [syntax("stray '\"ab\x01'"), [4]]),
        # TAB is no safe point, a line end is.
        (b'"tab\tin string" 5 ', [syntax("stray '\"tab\t'")]),
        (b'"tab\tin string"\n5 ', [syntax("stray '\"tab\t'"), 5]),
        # Recovery stops at the '}' and reads it: a stray closer.
        (b'{"b": X}', [syntax("stray 'X'"), syntax("expecting value")]),
        # 0xFF in recovery is itself an error: one report each.
        (b"\xff\xff[6]", [syntax("stray '\ufffd'"), syntax("stray '\ufffd'"), [6]]),
        # A NUL ends the %s QEMU prints the token with.
        (b'"a\x00b" [7]', [syntax("stray '\"a'"), [7]]),
        # 0 followed by a letter: two tokens, like QEMU (0, then keyword "e").
        (b"[0e5]", [syntax("expected separator in list")]),
    ],
)
def test_parser_lexical_error_recovery(text: bytes, expected: list[Any]) -> None:
    assert parse_all(text) == expected


def test_parser_control_character_resets_partial_message() -> None:
    data = b'{"execute": "a", "arguments": {"x": [1, 2' + b"\x1b" + b'{"execute": "b"}'
    assert parse_all(data) == [syntax("stray '\x1b'"), {"execute": "b"}]


def test_parser_flush() -> None:
    parser = JSONStreamParser()
    assert parser.feed(b"12") == []  # a number may continue
    assert parser.flush() == [ParsedMessage(12)]
    assert parser.feed(b'{"a": [1') == []
    assert parser.flush() == [syntax("premature EOI")]
    assert parser.feed(b'"abc') == []
    assert parser.flush() == [syntax("stray '\"abc'")]
    assert parser.feed(b'{"ok": true}') == [ParsedMessage({"ok": True})]


def test_parser_reset_drops_partial_input() -> None:
    parser = JSONStreamParser()
    parser.feed(b'{"a": "half')
    parser.reset()
    assert parser.feed(b'{"b": 1}') == [ParsedMessage({"b": 1})]


# --- parser: limits ----------------------------------------------------------------


def test_parser_message_size_limit_then_recovers() -> None:
    big = b'{"execute": "echo", "arguments": {"text": "' + b"x" * 5000 + b'"}}\n'
    results = parse_all(big + b'{"execute": "next"}', max_message_size=1000)
    assert results[0] == fail("JSON token size limit exceeded")
    # The rest of the oversized object: one stray error per closing brace.
    assert results[1:] == [syntax("expecting value")] * 2 + [{"execute": "next"}]


def test_parser_message_size_counts_tokens_not_whitespace() -> None:
    data = b"[" + b" " * 5000 + b"1" + b" " * 5000 + b"]"
    assert parse_all(data, max_message_size=3) == [[1]]
    assert parse_all(b"[1, 2]", max_message_size=5) == [[1, 2]]  # 5 token bytes
    assert parse_all(b"[1, 2]", max_message_size=4) == [fail("JSON token size limit exceeded")]


def test_parser_token_count_limit() -> None:
    assert parse_all(b"[1, 2, 3]", max_token_count=7) == [[1, 2, 3]]
    results = parse_all(b"[1, 2, 3, 4]", max_token_count=7)
    assert results[0] == fail("JSON token count limit exceeded")


def test_parser_nesting_limit_default_is_qemus_1024() -> None:
    ok = b"[" * 1024 + b"]" * 1024
    (value,) = parse_all(ok)
    depth = 1
    while value:
        value, depth = value[0], depth + 1
    assert depth == 1024  # built without recursion
    results = parse_all(b"[" * 1025 + b"]" * 1025 + b'{"after": 1}')
    assert results[0] == fail("JSON nesting depth limit exceeded")
    assert results[-1] == {"after": 1}


def _profile_events(work: Any) -> int:
    """How many Python and C function calls ``work()`` makes (this thread)."""
    calls = 0

    def count(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def test_parser_is_linear_in_input_size() -> None:
    # 2 MiB string in 1 KiB chunks. Re-scanning what came before would make
    # the later chunks cost more than the earlier ones; counted in calls, the
    # two halves cost the same. (The rate itself is in benches/py/bench_qmp.py.)
    chunk = 1024
    payload = b'{"s": "' + b"y" * (2 << 20) + b'"}'
    parser = JSONStreamParser(max_message_size=4 << 20)
    results: list[Any] = []
    half = len(payload) // 2 // chunk * chunk

    def feed(start: int, end: int) -> None:
        for i in range(start, end, chunk):
            results.extend(parser.feed(payload[i : i + chunk]))

    first = _profile_events(lambda: feed(0, half))
    second = _profile_events(lambda: feed(half, 2 * half))
    feed(2 * half, len(payload))
    assert results == [ParsedMessage({"s": "y" * (2 << 20)})]
    assert first > 0 and abs(second - first) <= first // 100, (first, second)


def test_parser_rejects_bad_limits() -> None:
    with pytest.raises(ValueError):
        JSONStreamParser(max_nesting=0)


# --- parser: properties ----------------------------------------------------------

_NONCHARS = {*range(0xFDD0, 0xFDF0)} | {p << 16 | 0xFFFE for p in range(17)}
_NONCHARS |= {p << 16 | 0xFFFF for p in range(17)}
_texts = st.text(
    st.characters(blacklist_categories=("Cs",)).filter(lambda c: ord(c) not in _NONCHARS),
    max_size=8,
)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_texts, children, max_size=4),
    max_leaves=12,
)


@given(
    values=st.lists(_json_values, min_size=1, max_size=6),
    ensure_ascii=st.booleans(),
    separators=st.lists(
        st.sampled_from([" ", "\n", "\r\n", "\t", "  \n "]), min_size=6, max_size=6
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_parser_any_chunking_yields_the_same_messages(
    values: list[JSONValue], ensure_ascii: bool, separators: list[str], cuts: list[int]
) -> None:
    stream = "".join(
        json.dumps(v, ensure_ascii=ensure_ascii) + sep
        for v, sep in zip(values, separators, strict=False)
    ).encode()
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    parser = JSONStreamParser()
    results = [r for chunk in chunks for r in parser.feed(chunk)] + parser.flush()
    assert results == [ParsedMessage(v) for v in values]


@given(garbage=st.binary(max_size=200), cut=st.integers(min_value=0, max_value=300))
def test_parser_survives_garbage_and_recovers(garbage: bytes, cut: int) -> None:
    # Garbage never raises; a 0xFF byte (always a lexical error) resets the
    # parser, so the next object parses whatever state the garbage left.
    parser = JSONStreamParser()
    data = garbage + b"\xff" + b'{"execute": "query-status", "id": 1}'
    cut %= len(data) + 1
    results = parser.feed(data[:cut]) + parser.feed(data[cut:])
    assert all(isinstance(r, ParsedMessage | ParseFailure) for r in results)
    assert results[-1] == ParsedMessage({"execute": "query-status", "id": 1})


# --- argument checking ----------------------------------------------------------------

_ECHO_SCHEMA = demo_registry([]).get("echo").schema  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("arguments", "desc"),
    [
        ({}, "Parameter 'text' is missing"),
        ({"text": 1}, "Invalid parameter type for 'text', expected: string"),
        ({"text": "a", "bogus": 1}, "Parameter 'bogus' is unexpected"),
        ({"text": "a", "count": "1"}, "Invalid parameter type for 'count', expected: integer"),
        ({"text": "a", "count": 1.5}, "Invalid parameter type for 'count', expected: integer"),
        ({"text": "a", "count": True}, "Invalid parameter type for 'count', expected: integer"),
        ({"text": "a", "count": 2**63}, "Invalid parameter type for 'count', expected: integer"),
        ({"text": "a", "ratio": "x"}, "Invalid parameter type for 'ratio', expected: number"),
        ({"text": "a", "flag": 1}, "Invalid parameter type for 'flag', expected: boolean"),
        ({"text": "a", "small": 256}, "Parameter 'small' expects uint8_t"),
        ({"text": "a", "small": "1"}, "Parameter 'small' expects uint64"),
        ({"text": "a", "big": 2**64}, "Parameter 'big' expects uint64"),
        ({"text": "a", "mode": "loud"}, "Parameter 'mode' does not accept value 'loud'"),
        ({"text": "a", "mode": 1}, "Invalid parameter type for 'mode', expected: string"),
        ({"text": "a", "tags": "x"}, "Invalid parameter type for 'tags', expected: array"),
        ({"text": "a", "tags": ["x", 2]}, "Invalid parameter type for 'tags[1]', expected: string"),
        ({"text": "a", "opts": []}, "Invalid parameter type for 'opts', expected: object"),
        ({"text": "a", "opts": {}}, "Parameter 'opts.level' is missing"),
        ({"text": "a", "opts": {"level": 1, "x": 0}}, "Parameter 'opts.x' is unexpected"),
        ({"text": "a", "opts": {"level": 200}}, "Parameter 'level' expects int8_t"),
        ({"text": "a", "count": None}, "Invalid parameter type for 'count', expected: integer"),
        # Members are checked in schema order before unknown members.
        ({"bogus": 1}, "Parameter 'text' is missing"),
    ],
)
def test_check_arguments_errors(arguments: dict[str, JSONValue], desc: str) -> None:
    with pytest.raises(QMPError) as info:
        check_arguments(_ECHO_SCHEMA, arguments)
    assert (info.value.error_class, info.value.desc) == ("GenericError", desc)


def test_check_arguments_converts_like_qemu() -> None:
    checked = check_arguments(
        _ECHO_SCHEMA,
        {"text": "t", "ratio": 2, "big": -1, "small": 255, "blob": {"x": [None]}},
    )
    assert checked == {
        "text": "t",
        "ratio": 2.0,
        "big": 2**64 - 1,
        "small": 255,
        "blob": {"x": [None]},
    }
    assert isinstance(checked["ratio"], float)


def test_registry_rejects_duplicates_and_bad_schemas() -> None:
    registry = CommandRegistry()
    registry.register("a", lambda ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", lambda ctx: None)
    with pytest.raises(ValueError, match="unknown argument type"):
        registry.register("b", lambda ctx: None, {"x": "integer"})
    with pytest.raises(ValueError, match="array type"):
        registry.register("c", lambda ctx: None, {"x": ["int", "str"]})
    assert registry.names() == ["a"]


# --- server: greeting, framing, negotiation --------------------------------------------


def test_greeting_shape_crlf_and_socket_mode(server: QMPServer, connect: Any) -> None:
    client = connect(negotiate=False)
    assert client.greeting == {
        "QMP": {
            "version": {"qemu": {"micro": 1, "minor": 2, "major": 9}, "package": "vmkit-test"},
            "capabilities": [],
        }
    }
    path = server.address
    assert isinstance(path, str)
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(os.path.dirname(path)) == ["qmp.sock"]  # no staging leftovers


def test_socket_file_removed_on_close(short_dir: str) -> None:
    path = os.path.join(short_dir, "q.sock")
    with make_server().start_in_thread(path) as srv:
        assert os.path.exists(path)
        RawClient(path).close()
        assert not srv.wait_for_close(0)
    assert not os.path.exists(path)


@pytest.mark.parametrize("kind", ["directory", "symlink", "missing-directory", "too-long"])
def test_unusable_socket_paths_are_refused(short_dir: str, kind: str) -> None:
    path = os.path.join(short_dir, "qmp.sock")
    expected = {
        "directory": "is a directory, not a socket",
        "symlink": "is a symbolic link, not a socket",
        "missing-directory": "does not exist",
        "too-long": f"a UNIX socket path must be under {UNIX_PATH_MAX}",
    }[kind]
    if kind == "directory":
        os.mkdir(path)
    elif kind == "symlink":
        os.symlink(os.path.join(short_dir, "elsewhere"), path)
    elif kind == "missing-directory":
        path = os.path.join(short_dir, "missing", "qmp.sock")
    else:
        path = os.path.join(short_dir, "x" * (UNIX_PATH_MAX - len(short_dir)))
    with pytest.raises(OSError, match=expected):
        make_server().start_in_thread(path)
    assert os.listdir(short_dir) in ([], ["qmp.sock"]), "nothing left behind"


def test_live_socket_is_not_taken_over_but_a_stale_one_is(short_dir: str) -> None:
    path = os.path.join(short_dir, "qmp.sock")
    with make_server().start_in_thread(path):
        with pytest.raises(OSError, match="another server is listening"):
            make_server().start_in_thread(path)
        client = RawClient(path, negotiate=True)  # the first server still serves
        assert client.execute("echo", {"text": "first"})["return"] == {"text": "first"}
        client.close()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file nobody listens on
    stale.close()
    with make_server().start_in_thread(path):
        client = RawClient(path, negotiate=True)
        assert client.execute("echo", {"text": "second"})["return"] == {"text": "second"}
        client.close()


def test_a_socket_that_goes_live_after_the_check_is_not_taken_over(
    short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server binds the path between the check and the install:
    the install does not replace its socket, and the start is refused."""
    path = os.path.join(short_dir, "qmp.sock")
    real_check = server_module._check_unix_path
    rival = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    checks = 0

    def check_then_lose_the_race(p: str) -> tuple[int, int] | None:
        nonlocal checks
        checks += 1
        found = real_check(p)
        if checks == 1:  # the path was free; the rival gets there first
            rival.bind(p)
            rival.listen(1)
        return found

    monkeypatch.setattr(server_module, "_check_unix_path", check_then_lose_the_race)
    with rival:
        with pytest.raises(OSError, match="another server is listening"):
            make_server().start_in_thread(path)
        assert checks == 2, "checked again once the install found the path taken"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)  # still the rival's socket, listening
            conn, _ = rival.accept()
            conn.close()
    assert os.listdir(short_dir) == ["qmp.sock"], "no staging leftovers"


def test_close_of_a_server_that_failed_to_start_is_quiet(short_dir: str) -> None:
    server = make_server()
    with pytest.raises(OSError):
        server.start_in_thread(os.path.join(short_dir, "missing", "s"))
    server.close()  # nothing to stop, and no second error


def test_existing_regular_file_is_not_replaced(short_dir: str) -> None:
    path = os.path.join(short_dir, "q.sock")
    with open(path, "w") as f:
        f.write("keep")
    with pytest.raises(FileExistsError):
        make_server().start_in_thread(path)
    with open(path) as f:
        assert f.read() == "keep"


def test_negotiation_mode(connect: Any) -> None:
    client = connect(negotiate=False)
    expecting = "Expecting capabilities negotiation with 'qmp_capabilities'"
    not_found = {"error": {"class": "CommandNotFound", "desc": expecting}}
    assert client.execute("query-version", id=1) == {**not_found, "id": 1}
    assert client.execute("no-such-command") == not_found
    # Envelope errors keep their own text in negotiation mode.
    assert client.request({"id": 2}) == generic("QMP input lacks member 'execute'", id=2)
    assert client.execute("qmp_capabilities", {"enable": ["oob"]}) == generic(
        "Capability oob not available"
    )
    assert client.execute("qmp_capabilities", {"enable": ["bogus"]}) == generic(
        "Parameter 'null' does not accept value 'bogus'"
    )
    assert client.execute("qmp_capabilities", id="n") == {"return": {}, "id": "n"}
    assert client.execute("query-version")["return"]["qemu"]["major"] == 9
    assert client.execute("qmp_capabilities") == {
        "error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored",
        }
    }


@pytest.mark.parametrize(
    "request_id", [1, "a string", None, [1, {"x": 2}], {"nested": {"id": True}}, 2.5, -(2**63)]
)
def test_id_is_echoed_verbatim(connect: Any, request_id: object) -> None:
    client = connect()
    assert client.execute("echo", {"text": "hi"}, id=request_id) == {
        "return": {"text": "hi"},
        "id": request_id,
    }
    assert client.execute("fail", id=request_id)["id"] == request_id


@pytest.mark.parametrize(
    ("raw", "response"),
    [
        (b"[1, 2]", generic("QMP input must be a JSON object")),
        (b'"execute"', generic("QMP input must be a JSON object")),
        (b"42 ", generic("QMP input must be a JSON object")),
        (b'{"id": 7}', generic("QMP input lacks member 'execute'", id=7)),
        (b'{"execute": 1, "id": 7}', generic("QMP input member 'execute' must be a string", id=7)),
        (b'{"execute": "echo", "foo": 1}', generic("QMP input member 'foo' is unexpected")),
        (
            b'{"exec-oob": "echo", "id": 3}',
            generic("QMP input member 'exec-oob' is unexpected", id=3),
        ),
        (
            b'{"execute": "echo", "arguments": [], "id": 7}',
            generic("QMP input member 'arguments' must be an object", id=7),
        ),
        (
            b'{"execute": "nope", "id": 7}',
            {
                "error": {
                    "class": "CommandNotFound",
                    "desc": "The command nope has not been found",
                },
                "id": 7,
            },
        ),
        (b'{"execute": "echo", "id": 8}', generic("Parameter 'text' is missing", id=8)),
        (
            b'{"execute": "echo", "arguments": {"text": "a", "x": 1}, "id": 9}',
            generic("Parameter 'x' is unexpected", id=9),
        ),
        (
            b'{"execute": "echo", "arguments": {"text": "a", "count": "3"}}',
            generic("Invalid parameter type for 'count', expected: integer"),
        ),
        (b'{"execute": "echo" "id": 1}', generic("JSON parse error, expected separator in dict")),
        (
            b"{'execute': 'fail', 'id': 'q'}",
            {"error": {"class": "DeviceNotFound", "desc": "Device 'nic0' not found"}, "id": "q"},
        ),
        (b'{"execute": "crash"}', generic("boom")),
    ],
)
def test_malformed_requests_get_qemus_errors(
    connect: Any, raw: bytes, response: dict[str, Any]
) -> None:
    client = connect()
    client.send(raw)
    assert client.recv() == response
    assert client.execute("echo", {"text": "still fine"}, id="next") == {
        "return": {"text": "still fine"},
        "id": "next",
    }


def test_several_requests_in_one_write_and_one_request_in_many(connect: Any) -> None:
    client = connect()
    client.send(b'{"execute": "echo", "arguments": {"text": "a"}, "id": 1}{"execute": \'echo\', ')
    assert client.recv() == {"return": {"text": "a"}, "id": 1}
    client.send(b"'arguments': {'text': 'b'},\n")
    client.send(b"'id': 2}\r\n")
    assert client.recv() == {"return": {"text": "b"}, "id": 2}


def test_commands_of_one_client_run_in_order(connect: Any) -> None:
    client = connect()
    client.send(
        b'{"execute": "sleep", "arguments": {"ms": 100}, "id": 1}'
        b'{"execute": "echo", "arguments": {"text": "x"}, "id": 2}'
    )
    assert [m["id"] for m in (client.recv(), client.recv())] == [1, 2]


def test_clients_are_independent(connect: Any, gate: Gate) -> None:
    # A long job holds the first client's command; the second is answered
    # meanwhile (the job is still running when its answers arrive).
    slow, fast = connect(), connect(negotiate=False)
    slow.send(b'{"execute": "gated", "id": "slow"}')
    wait_until(lambda: gate.running() == 1)
    assert fast.execute("qmp_capabilities") == {"return": {}}
    assert fast.execute("echo", {"text": "f"}, id="fast")["id"] == "fast"
    assert fast.execute("sessions", id="s")["id"] == "s"
    assert gate.running() == 1 and not gate.event.is_set()
    gate.release()
    assert slow.recv() == {"return": {"released": True}, "id": "slow"}


def test_query_commands_lists_exactly_the_registry(server: QMPServer, connect: Any) -> None:
    client = connect()
    names = [entry["name"] for entry in client.execute("query-commands")["return"]]
    assert sorted(names) == sorted(server.registry.names())
    assert {"qmp_capabilities", "query-commands", "echo", "quit"} <= set(names)
    assert len(names) == len(set(names)) == 14


def test_unencodable_response_becomes_an_error(connect: Any) -> None:
    client = connect()
    assert client.execute("bad-return", id=4) == generic(
        "Response cannot be encoded: Out of range float values are not JSON compliant", id=4
    )


@pytest.mark.parametrize(
    ("error", "error_class"),
    [
        (QMPError("x"), "GenericError"),
        (GenericError("x"), "GenericError"),
        (CommandNotFound("x"), "CommandNotFound"),
        (DeviceNotActive("x"), "DeviceNotActive"),
        (DeviceNotFound("x"), "DeviceNotFound"),
        (KVMMissingCap("x"), "KVMMissingCap"),
        (QMPError("x", error_class=ErrorClass.DEVICE_NOT_FOUND), "DeviceNotFound"),
    ],
)
def test_error_classes(error: QMPError, error_class: str) -> None:
    assert error.to_error_object() == {"class": error_class, "desc": "x"}
    assert error_response(error) == {"error": {"class": error_class, "desc": "x"}}


def test_qmp_errors_are_vmkit_errors() -> None:
    for cls in (QMPError, GenericError, CommandNotFound, DeviceNotFound, DeviceNotActive):
        assert issubclass(cls, errors.VmkitError)
    with pytest.raises(errors.VmkitError):
        raise DeviceNotFound("Device 'x' not found")


@pytest.mark.parametrize(
    ("exc", "context", "expected"),
    [
        (
            errors.PathError("no object at 'x'"),
            {"path": "x"},
            ("DeviceNotFound", "Device 'x' not found"),
        ),
        (
            errors.AmbiguousPathError("partial path 'x' is ambiguous"),
            {"path": "x"},
            ("GenericError", "Path 'x' is ambiguous"),
        ),
        (errors.PathError("no object at 'x'"), {}, ("GenericError", "no object at 'x'")),
        (
            errors.PropertyNotFoundError("no property"),
            {"type_name": "t", "property": "p"},
            ("GenericError", "Property 't.p' not found"),
        ),
        (
            errors.TypeNotFoundError("unknown type"),
            {"typename": "nope"},
            ("DeviceNotFound", "Class 'nope' not found"),
        ),
        (errors.TypeNotFoundError("unknown type"), {}, ("GenericError", "unknown type")),
        (errors.PropertyValueError("bad value"), {"path": "x"}, ("GenericError", "bad value")),
        (
            OSError(28, "No space left on device"),
            {},
            ("GenericError", "[Errno 28] No space left on device"),
        ),
        (RuntimeError(), {}, ("GenericError", "RuntimeError")),
        (DeviceNotActive("off"), {"path": "x"}, ("DeviceNotActive", "off")),
    ],
)
def test_one_table_translates_exceptions(
    exc: BaseException, context: dict[str, str], expected: tuple[str, str]
) -> None:
    error = to_qmp_error(exc, **context)
    assert isinstance(error, QMPError)
    assert (str(error.error_class), error.desc) == expected
    if isinstance(exc, QMPError):
        assert error is exc


def test_session_phases_move_only_forward() -> None:
    state = SessionState()
    assert state.phase is SessionPhase.NEGOTIATING and not state.negotiated
    with pytest.raises(ValueError, match="negotiating to closing"):
        state.enter(SessionPhase.CLOSING)
    state.enter(SessionPhase.COMMAND)
    assert state.negotiated and not state.closing
    with pytest.raises(ValueError):
        state.enter(SessionPhase.NEGOTIATING)
    state.enter(SessionPhase.CLOSING)
    assert state.closing and state.negotiated  # events until the connection is gone
    state.enter(SessionPhase.SHUTTING_DOWN)
    with pytest.raises(ValueError):
        state.enter(SessionPhase.COMMAND)
    state.enter(SessionPhase.CLOSED)
    assert state.closing and not state.negotiated


# --- server: hostile input ---------------------------------------------------------------


def test_huge_message_gets_error_and_connection_recovers(connect: Any) -> None:
    client = connect()
    client.send(b'{"execute": "echo", "arguments": {"text": "' + b"z" * (2 << 20) + b'"}}\n')
    client.send(b'{"execute": "echo", "arguments": {"text": "after"}, "id": "after"}')
    messages = client.recv_until_id("after")
    assert messages[0] == generic("JSON token size limit exceeded")
    assert messages[1:-1] == [generic("JSON parse error, expecting value")] * 2
    assert messages[-1] == {"return": {"text": "after"}, "id": "after"}


def test_deep_nesting(connect: Any) -> None:
    client = connect()
    nested = "[" * 1020 + "]" * 1020  # + 3 levels of request envelope = 1023
    client.send(f'{{"execute": "depth", "arguments": {{"value": {nested}}}, "id": 1}}')
    assert client.recv() == {"return": 1020, "id": 1}
    too_deep = "[" * 1030 + "]" * 1030
    client.send(f'{{"execute": "depth", "arguments": {{"value": {too_deep}}}}}')
    client.send('{"execute": "echo", "arguments": {"text": "ok"}, "id": 2}')
    messages = client.recv_until_id(2)
    # As in QEMU: the '[' that crosses the limit is dropped with the message so
    # far; the 7 '[' after it form a new (non-object) value; every remaining
    # closer is a stray.
    assert messages[0] == generic("JSON nesting depth limit exceeded")
    assert messages[1] == generic("QMP input must be a JSON object")
    assert messages[2:-1] == [generic("JSON parse error, expecting value")] * (1030 - 7 + 2)
    assert messages[-1] == {"return": {"text": "ok"}, "id": 2}


def test_flood_of_malformed_lines_does_not_disturb_others(connect: Any) -> None:
    flooder, victim = connect(), connect()
    lines = 3000

    def flood() -> None:
        flooder.send(b"This is not JSON\n" * lines)

    thread = threading.Thread(target=flood)
    thread.start()
    for i in range(20):
        assert victim.execute("echo", {"text": str(i)}, id=i) == {
            "return": {"text": str(i)},
            "id": i,
        }
    errors = [flooder.recv() for _ in range(lines)]
    thread.join()
    assert errors == [generic("JSON parse error, stray 'T'")] * lines
    assert flooder.execute("echo", {"text": "sane"}, id="sane")["id"] == "sane"


def test_disconnect_mid_message_leaves_others_alone(server: QMPServer, connect: Any) -> None:
    survivor = connect()
    for abrupt in (False, True):
        leaver = connect()
        wait_until(lambda: server.session_count == 2)
        leaver.send(b'{"execute": "echo", "arguments": {"text": "never fini')
        if abrupt:
            leaver.abort()
        else:
            leaver.close()
        wait_until(lambda: server.session_count == 1)
        assert survivor.execute("echo", {"text": "here"}, id=abrupt) == {
            "return": {"text": "here"},
            "id": abrupt,
        }


def test_client_that_stops_reading_is_dropped(short_dir: str) -> None:
    path = os.path.join(short_dir, "s.sock")
    with make_server(max_pending_output=64 << 10).start_in_thread(path) as srv:
        stalled = RawClient(path, negotiate=True)
        healthy = RawClient(path, negotiate=True)
        try:
            wait_until(lambda: srv.session_count == 2)
            for _ in range(500):  # 5 MB of events; the stalled client reads none
                srv.emit("BIG", {"pad": "p" * 10_000})
                assert healthy.recv()["event"] == "BIG"
                if srv.session_count == 1:
                    break
            assert srv.session_count == 1
            healthy.send(b'{"execute": "echo", "arguments": {"text": "fine"}, "id": 1}')
            assert healthy.recv_until_id(1)[-1] == {"return": {"text": "fine"}, "id": 1}
        finally:
            stalled.close()
            healthy.close()


def test_client_that_disconnects_while_command_runs(
    server: QMPServer, connect: Any, gate: Gate
) -> None:
    leaver, survivor = connect(), connect()
    leaver.send(b'{"execute": "gated"}')
    wait_until(lambda: gate.running() == 1)
    leaver.abort()
    assert survivor.execute("echo", {"text": "during"})["return"] == {"text": "during"}
    # The session ends when its command does (an answer is owed to a client
    # that only shut down its sending side).
    gate.release()
    wait_until(lambda: server.session_count == 1)
    assert gate.running() == 0
    assert survivor.execute("echo", {"text": "ok"})["return"] == {"text": "ok"}


def test_flood_of_bad_tokens_is_answered_in_slices(short_dir: str) -> None:
    """256 KiB of '}' from one client: another client is answered while most
    of the flood is still unparsed, and the flooder gets every error."""
    path = os.path.join(short_dir, "f.sock")
    flood = b"}" * (256 << 10)
    error_line = (
        b'{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}'
    )
    with make_server().start_in_thread(path) as srv:
        flooder = RawClient(path, negotiate=True)
        healthy = RawClient(path, negotiate=True)
        got: list[int] = []

        def read_errors() -> None:
            count = 0
            while count < len(flood):
                line = flooder.recv_line()
                assert line == error_line, line
                count += 1
            got.append(count)

        reader = threading.Thread(target=read_errors)
        reader.start()
        sender = threading.Thread(target=flooder.send, args=(flood,))
        sender.start()
        wait_until(lambda: any(st.bytes_parsed for st in srv.session_stats()))
        answer = healthy.execute("sessions", id="h")
        flooder_parsed = min(entry["parsed"] for entry in answer["return"])
        assert answer["id"] == "h"
        assert flooder_parsed < len(flood) // 2, answer  # answered mid-flood
        sender.join()
        reader.join(60)
        assert got == [len(flood)]
        assert flooder.execute("echo", {"text": "after"}, id=1) == {
            "return": {"text": "after"},
            "id": 1,
        }
        flooder.close()
        healthy.close()


def _resident_bytes() -> int:
    """This process's resident memory, after giving back what is free: a
    collection, then glibc's ``malloc_trim`` (memory freed by earlier tests'
    threads otherwise stays resident in their arenas and blurs the count)."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _stalled_clients_scenario(directory: str) -> None:
    """The scenario of the test below, run in a fresh interpreter: the
    resident count is the process's, and allocations earlier tests left in
    malloc's arenas (freed or not) would blur it."""
    import logging

    bound = 2 << 20
    path = os.path.join(directory, "m.sock")
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "not reading" in record.getMessage():
                warnings.append(record.getMessage())

    logging.getLogger("vmkit.qmp.server").addHandler(Collect(logging.WARNING))
    with make_server(max_pending_output=bound).start_in_thread(path) as srv:
        stalled = [RawClient(path, negotiate=True) for _ in range(2)]
        control = RawClient(path, negotiate=True)
        try:
            resident = _resident_bytes()
            queued = 0
            # 100 steps of 500 events of ~90 bytes: 4.5 MB per client, more
            # than twice the bound. The control client reads each step's
            # events before asking for the next, so it never falls behind.
            for step in range(100):
                control.send(
                    json.dumps(
                        {
                            "execute": "emit-many",
                            "arguments": {"count": 500, "size": 30, "batch": 50},
                            "id": step,
                        }
                    )
                )
                events = 0
                while (message := control.recv()).get("event") == "SMALL":
                    events += 1
                assert (events, message) == (500, {"return": {}, "id": step})
                queued = max([queued, *(st.output_queued for st in srv.session_stats())])
            assert srv.session_count == 1  # both stalled clients are gone
            assert bound // 2 < queued <= bound + 200, queued
            retained = _resident_bytes() - resident
            assert retained < bound, retained
            assert len(warnings) == 2 and warnings[0] != warnings[1], warnings
        finally:
            for client in (*stalled, control):
                client.close()


def test_clients_that_stop_reading_cost_bounded_memory(short_dir: str) -> None:
    """Small events flow to two clients that read nothing: what the server
    queues for each stays within the bound, each is disconnected and logged
    once, and the memory comes back afterwards (it piled up in the event
    loop's write queue before)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import test_qmp_protocol as t; t._stalled_clients_scenario(sys.argv[2])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, here, short_dir],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("depth", [1, 900, 1000, 1022])
def test_reply_echoes_a_deeply_nested_id(connect: Any, depth: int) -> None:
    """Within the parser's 1024 levels (the request object is one of them)
    the id comes back whatever its nesting, past the JSON encoder's recursion
    limit too."""
    client = connect()
    nested = "[" * depth + "]" * depth
    client.send(f'{{"execute": "echo", "arguments": {{"text": "d"}}, "id": {nested}}}')
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * depth))  # for this test's json.loads
    try:
        reply = client.recv()
    finally:
        sys.setrecursionlimit(limit)
    levels, value = 0, reply["id"]
    while isinstance(value, list):
        levels, value = levels + 1, (value[0] if value else None)
    assert (levels, reply["return"]) == (depth, {"text": "d"})
    obj_id = '{"a": ' * (depth // 2) + "1" + "}" * (depth // 2)
    client.send(f'{{"execute": "fail", "id": {obj_id}}}')
    line = client.recv_line().decode()
    assert line.startswith('{"error": {"class": "DeviceNotFound"')
    assert line.endswith(f', "id": {obj_id}}}')  # the encoder's own spacing, without recursion


def test_id_past_the_nesting_limit_is_a_parse_error_without_id(connect: Any) -> None:
    client = connect()
    nested = "[" * 1024 + "]" * 1024  # 1025 levels with the request object
    client.send(f'{{"execute": "echo", "arguments": {{"text": "d"}}, "id": {nested}}}')
    client.send(b'{"execute": "echo", "arguments": {"text": "after"}, "id": "after"}')
    messages = client.recv_until_id("after")
    assert messages[0] == generic("JSON nesting depth limit exceeded")
    assert all("id" not in m for m in messages[:-1])
    assert messages[-1] == {"return": {"text": "after"}, "id": "after"}


def test_client_that_shuts_down_its_sending_side_gets_every_answer(
    server: QMPServer, connect: Any
) -> None:
    client = connect()
    client.send(b'{"execute": "echo", "arguments": {"text": "x"}, "id": 1}' * 200)
    client.sock.shutdown(socket.SHUT_WR)
    replies = [client.recv() for _ in range(200)]
    assert replies == [{"return": {"text": "x"}, "id": 1}] * 200
    assert client.at_eof()


# --- server: events ---------------------------------------------------------------------


def test_events_reach_every_negotiated_client_only(server: QMPServer, connect: Any) -> None:
    first, second, pending = connect(), connect(), connect(negotiate=False)
    before = time.time()
    first.send(
        json.dumps(
            {"execute": "emit-event", "arguments": {"name": "MY_EVENT", "data": {"n": 1}}, "id": 1}
        )
    )
    # The event is broadcast before the reply is written.
    for client in (first, second):
        event = client.recv()
        assert set(event) == {"event", "data", "timestamp"}
        assert (event["event"], event["data"]) == ("MY_EVENT", {"n": 1})
        stamp = event["timestamp"]
        assert set(stamp) == {"seconds", "microseconds"}
        assert 0 <= stamp["microseconds"] < 1_000_000
        assert before - 1 <= stamp["seconds"] + stamp["microseconds"] / 1e6 <= time.time() + 1
    assert first.recv() == {"return": {}, "id": 1}

    server.emit("STOP")  # from another thread, without data
    for client in (first, second):
        event = client.recv()
        assert event["event"] == "STOP" and "data" not in event

    # The un-negotiated client got nothing: its next message is its own reply.
    assert pending.execute("qmp_capabilities", id="caps") == {"return": {}, "id": "caps"}
    server.emit("RESUME")
    assert pending.recv()["event"] == "RESUME"


# --- server: lifecycle --------------------------------------------------------------------


def test_quit_replies_then_closes_server(server: QMPServer, connect: Any) -> None:
    client, other = connect(), connect()
    path = server.address
    assert client.execute("quit", id="bye") == {"return": {}, "id": "bye"}
    assert server.wait_for_close(5)
    assert client.at_eof() and other.at_eof()
    assert isinstance(path, str) and not os.path.exists(path)


def test_tcp_server() -> None:
    with make_server().start_in_thread(("127.0.0.1", 0)) as srv:
        host, port = srv.address  # type: ignore[misc]
        assert host == "127.0.0.1" and port > 0
        client = RawClient((host, port), negotiate=True)
        assert client.execute("echo", {"text": "tcp"})["return"] == {"text": "tcp"}
        client.close()


def test_plain_asyncio_use(short_dir: str) -> None:
    path = os.path.join(short_dir, "a.sock")

    async def main() -> None:
        server = make_server()
        await server.start(path)
        reader, writer = await asyncio.open_unix_connection(path)
        greeting = await reader.readline()
        assert greeting.endswith(b"\r\n") and b'"QMP"' in greeting
        writer.write(b'{"execute": "qmp_capabilities"}{"execute": "sleep", "arguments": {"ms": 1}}')
        assert json.loads(await reader.readline()) == {"return": {}}
        assert json.loads(await reader.readline()) == {"return": {"slept": 1}}
        server.emit("PING", {"x": 1})
        assert json.loads(await reader.readline())["event"] == "PING"
        await server.aclose()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await server.wait_closed()

    asyncio.run(main())
    assert not os.path.exists(path)


# --- interoperability with QEMU's own client library -----------------------------------


def test_qemu_qmp_client_session(server: QMPServer) -> None:
    qmp = pytest.importorskip("qemu.qmp")
    ExecuteError, QMPClient = qmp.ExecuteError, qmp.QMPClient  # noqa: N806

    async def main() -> None:
        client = QMPClient("vmkit-test")
        await client.connect(server.address)
        try:
            assert client.greeting is not None
            assert client.greeting.QMP.version["qemu"] == {"micro": 1, "minor": 2, "major": 9}
            assert client.greeting.QMP.capabilities == []
            version = await client.execute("query-version")
            assert version == {
                "qemu": {"micro": 1, "minor": 2, "major": 9},
                "package": "vmkit-test",
            }
            echoed = await client.execute("echo", {"text": "hi", "tags": ["a"], "mode": "upper"})
            assert echoed == {"text": "hi", "tags": ["a"], "mode": "upper"}

            with pytest.raises(ExecuteError) as info:
                await client.execute("echo", {"text": 5})
            assert info.value.error_class == "GenericError"
            assert (
                info.value.error.error.desc == "Invalid parameter type for 'text', expected: string"
            )

            with pytest.raises(ExecuteError) as info:
                await client.execute("no-such-command")
            assert info.value.error_class == "CommandNotFound"

            with client.listener("DEMO_EVENT") as listener:
                await client.execute("emit-event", {"name": "DEMO_EVENT", "data": {"k": "v"}})
                event = await asyncio.wait_for(listener.get(), 5)
            assert event["event"] == "DEMO_EVENT" and event["data"] == {"k": "v"}
            assert set(event["timestamp"]) == {"seconds", "microseconds"}

            with client.listener("FROM_OUTSIDE") as listener:
                server.emit("FROM_OUTSIDE")
                event = await asyncio.wait_for(listener.get(), 5)
            assert event["event"] == "FROM_OUTSIDE"

            assert await client.execute("quit") == {}
        finally:
            # After 'quit' the server closes the stream, and qemu.qmp reports the
            # EOF from disconnect() -- with a real QEMU too (QEMU's own
            # machine.py suppresses it the same way).
            with contextlib.suppress(EOFError):
                await client.disconnect()

    asyncio.run(main())
    assert server.wait_for_close(5)


# --- the single-message fast path agrees with the lexer ----------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    value=st.dictionaries(st.text(max_size=6), _json_values, max_size=5), ascii_only=st.booleans()
)
def test_fast_path_equals_lexer(value: dict[str, Any], ascii_only: bool) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only).encode() + b"\r\n"
    whole = JSONStreamParser().feed(data)
    slow = JSONStreamParser()
    bytewise: list[Any] = []
    for i in range(len(data)):  # one byte at a time never takes the fast path
        bytewise.extend(slow.feed(data[i : i + 1]))
    assert whole == bytewise


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": NaN}',
        b'{"a": "\\u0000"}',
        b'{"a": "\\ud800"}',
        b'{"a": 123456789012345678901234567890}',
        b"{'execute': 'x'}",
        b'{"a": 1}{"b": 2}',
        b'{"a": [' + b"[" * 1100 + b"]" * 1100 + b"]}",
    ],
)
def test_fast_path_leaves_qemu_cases_to_the_lexer(data: bytes) -> None:
    slow = JSONStreamParser()
    bytewise: list[Any] = []
    for i in range(len(data)):
        bytewise.extend(slow.feed(data[i : i + 1]))
    bytewise.extend(slow.flush())
    # The fast path declines each of these (it would answer them differently
    # from QEMU), and the full lexer, given the data at once, reports exactly
    # what it reports byte by byte.
    assert _fast_parse(data, 1024) is None
    fast = JSONStreamParser()
    assert fast.feed(data) + fast.flush() == bytewise
    assert bytewise  # every case yields a value or an error


@given(value=_json_values)
def test_deep_encoder_writes_what_json_dumps_writes(value: Any) -> None:
    assert _dumps_deep(value) == json.dumps(value, ensure_ascii=True, allow_nan=False)
