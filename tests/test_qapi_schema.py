"""vmkit's QAPI schema and what is built from it: reading and checking the
definitions, argument checking with QEMU's messages, ``query-qmp-schema``
in QEMU's SchemaInfo format, and output checking (every answer and event
against its declaration — on for the whole suite, see conftest)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from qmp_peers import short_dir, start_peer, vmkit_command
from vmkit.machine import Machine
from vmkit.monitor import MachineMonitor
from vmkit.qmp import (
    CHECK_OUTPUT_ENV,
    CommandContext,
    CommandRegistry,
    JSONValue,
    OutputMismatchError,
    QMPError,
    QMPSocket,
    SessionPhase,
    SessionState,
    add_builtin_commands,
    dispatch,
)
from vmkit.qmp.qapi import Schema, SchemaError, SchemaSyntaxError, vmkit_schema
from vmkit.qmp.qapi.conform import mismatch
from vmkit.qmp.qapi.introspect import schema_info
from vmkit.qmp.qapi.model import build_schema
from vmkit.qmp.qapi.reader import read_schema, strip_comments
from vmkit.qmp.qapi.visit import compile_type

GUARD = 30.0  # seconds: only so that a broken test fails instead of hanging


def schema_of(text: str) -> Schema:
    """The schema of one file's text."""
    return build_schema(read_schema("t.json", {"t.json": text}.__getitem__))


# --- reading -------------------------------------------------------------------


def test_comments_are_removed_but_not_inside_strings() -> None:
    text = "{ 'enum': 'E', # a comment\n  'data': [ 'a#b', \"c#d\" ] } # end\n# last"
    assert strip_comments(text) == "{ 'enum': 'E', \n  'data': [ 'a#b', \"c#d\" ] } \n"
    assert schema_of(text).types["E"].names() == ("a#b", "c#d")


def test_includes_are_read_in_place_and_once() -> None:
    files = {
        "main.json": "{ 'include': 'a.json' } { 'command': 'x' } { 'include': 'a.json' }",
        "a.json": "{ 'enum': 'E', 'data': ['v'] } { 'include': 'main.json' }",
    }
    read = read_schema("main.json", files.__getitem__)
    assert [(e.file, e.index, next(iter(e.value))) for e in read] == [
        ("a.json", 1, "enum"),
        ("main.json", 2, "command"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{ 'enum': 'E', 'data': [ 'a' 'b' ] }",
            "t.json: JSON parse error, expected separator in list",
        ),
        ("{ 'enum': 'E'", "t.json: JSON parse error, premature EOI"),
        ("[ 'x' ]", "t.json: a definition must be an object"),
        ("{ 'include': 'a/b.json' }", "t.json, definition 1: 'include' takes one file name"),
    ],
)
def test_unreadable_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(SchemaSyntaxError) as info:
        schema_of(text)
    assert str(info.value) == message


# --- definitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ 'data': {} }", "expected exactly one of enum, struct, union, alternate"),
        ("{ 'struct': 'S', 'dat': {} }", "unknown key 'dat' in struct 'S'"),
        ("{ 'command': 'c', 'if': 'CONFIG_X' }", "'if' conditions are not supported"),
        ("{ 'struct': 'S', 'data': { 'a': 'T' } }", "S.a: type 'T' is not defined"),
        ("{ 'enum': 'E', 'data': ['a'] } { 'struct': 'E' }", "type 'E' is already defined"),
        ("{ 'command': 'c' } { 'command': 'c' }", "command 'c' is already defined"),
        ("{ 'enum': 'E', 'data': ['a', 'a'] }", "enum 'E': duplicate value 'a'"),
        ("{ 'struct': 'S', 'data': { 'a': 'int', '*a': 'str' } }", "S: duplicate member 'a'"),
        ("{ 'struct': 'S', 'data': { 'a': ['int', 'str'] } }", "an array type is written"),
        (
            "{ 'struct': 'B', 'data': { 'k': 'str' } }"
            "{ 'union': 'U', 'base': 'B', 'discriminator': 'k', 'data': {} }",
            "union 'U': discriminator 'k' must be a mandatory enum member of the base",
        ),
        (
            "{ 'enum': 'K', 'data': ['a'] } { 'struct': 'A' }"
            "{ 'union': 'U', 'base': { 'k': 'K' }, 'discriminator': 'k', 'data': { 'b': 'A' } }",
            "union 'U': 'b' is not a value of K",
        ),
        (
            "{ 'enum': 'K', 'data': ['a'] } { 'struct': 'A', 'data': { 'k': 'int' } }"
            "{ 'union': 'U', 'base': { 'k': 'K' }, 'discriminator': 'k', 'data': { 'a': 'A' } }",
            "branch 'a' repeats member 'k'",
        ),
        (
            "{ 'alternate': 'A', 'data': { 'i': 'int', 'n': 'number' } }",
            "alternate 'A': branch 'n' cannot be told apart from 'i'",
        ),
        ("{ 'alternate': 'A', 'data': { 'v': 'any' } }", "branch 'v' cannot be told apart"),
        ("{ 'command': 'c', 'data': { 'a': 'int' }, 'boxed': true }", "'boxed' needs 'data'"),
        ("{ 'struct': 'S' } { 'command': 'c', 'data': 'S', 'gen': false }", "inline 'data'"),
        ("{ 'command': 'c', 'gen': 1 }", "'c': 'gen' must be true or false"),
        ("{ 'struct': 'S', 'base': 'S' }", "its base chain loops"),
        ("{ 'command': 'c', 'features': [ 'x', 'x' ] }", "duplicate feature 'x'"),
    ],
)
def test_bad_definitions_are_refused(text: str, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        schema_of(text)


def test_the_package_schema_declares_exactly_what_the_monitor_serves(no_machine: None) -> None:
    """No declaration without a handler, no handler without a declaration;
    and query-commands and query-qmp-schema name the same commands."""
    schema = vmkit_schema()
    assert vmkit_schema() is schema, "read once"
    with Machine(memory="16M") as vm:
        registry = MachineMonitor(vm).register(CommandRegistry())
    assert registry.schema is schema
    add_builtin_commands(registry)
    assert set(registry.names()) == set(schema.commands)
    info = registry.schema_info()
    commands = {e["name"] for e in info if isinstance(e, dict) and e["meta-type"] == "command"}
    assert commands == set(registry.names())
    events = {e["name"] for e in info if isinstance(e, dict) and e["meta-type"] == "event"}
    assert events == {
        "STOP",
        "RESUME",
        "RESET",
        "SHUTDOWN",
        "DEVICE_DELETED",
        "MIGRATION",
        "MIGRATION_PASS",
    }


def test_a_bound_registry_takes_declarations_only_from_its_schema() -> None:
    registry = CommandRegistry(schema_of("{ 'command': 'c', 'data': { 'a': 'int' } }"))
    with pytest.raises(ValueError, match="'d' is not declared"):
        registry.register("d", lambda ctx: None)
    with pytest.raises(ValueError, match="declared in the schema, not here"):
        registry.register("c", lambda ctx: None, {"a": "int"})
    registry.register("c", lambda ctx: None)
    with pytest.raises(ValueError, match="before its first command"):
        registry.bind_schema(vmkit_schema())
    unbound = CommandRegistry()
    with pytest.raises(ValueError, match="not bound"):
        unbound.schema_info()


# --- argument checking -----------------------------------------------------------


def check(name: str, arguments: dict[str, JSONValue]) -> dict[str, JSONValue]:
    """``arguments`` checked as vmkit's schema declares command ``name``'s."""
    registry = CommandRegistry(vmkit_schema())
    return registry.register(name, lambda ctx: None).checker.check_arguments(arguments)


def refusal(name: str, arguments: dict[str, JSONValue]) -> str:
    with pytest.raises(QMPError) as info:
        check(name, arguments)
    assert info.value.error_class == "GenericError"
    return info.value.desc


_INET = {"transport": "socket", "type": "inet", "host": "h", "port": "1"}


@pytest.mark.parametrize(
    ("command", "arguments", "desc"),
    [
        # Unions: the base (tag first), then the branch the tag picks.
        (
            "migrate",
            {"channels": [{"channel-type": "main"}]},
            "Parameter 'channels[0].addr' is missing",
        ),
        (
            "migrate",
            {"channels": [{"channel-type": "main", "addr": {}}]},
            "Parameter 'channels[0].addr.transport' is missing",
        ),
        (
            "migrate",
            {"channels": [{"channel-type": "main", "addr": {"transport": "tcp"}}]},
            "Parameter 'transport' does not accept value 'tcp'",
        ),
        (
            "migrate",
            {"channels": [{"channel-type": "main", "addr": {**_INET, "path": "/x"}}]},
            "Parameter 'channels[0].addr.path' is unexpected",
        ),
        (
            "migrate",
            {"channels": [{"channel-type": "main", "addr": {**_INET, "to": 65536}}]},
            "Parameter 'to' expects uint16_t",
        ),
        (
            "migrate",
            {"channels": [{"channel-type": "main", "addr": {"transport": "exec", "args": [1]}}]},
            "Invalid parameter type for 'channels[0].addr.args[0]', expected: string",
        ),
        # Alternates name the member, not its path, and the alternate type.
        (
            "migrate-set-parameters",
            {"tls-creds": 5},
            "Invalid parameter type for 'tls-creds', expected: StrOrNull",
        ),
        (
            "migrate",
            {"uri": "u", "parameters": {"tls-authz": []}},
            "Invalid parameter type for 'tls-authz', expected: StrOrNull",
        ),
        (
            "migrate-set-parameters",
            {"x-vmkit-fault": "cut"},
            "Invalid parameter type for 'x-vmkit-fault', expected: VmkitFaultOrNull",
        ),
        # Enums in arrays are named 'null', as QEMU names array elements.
        ("qmp_capabilities", {"enable": ["x"]}, "Parameter 'null' does not accept value 'x'"),
        (
            "migrate-continue",
            {"state": "paused"},
            "Parameter 'state' does not accept value 'paused'",
        ),
        ("query-status", {"x": 1}, "Parameter 'x' is unexpected"),
        ("query-qmp-schema", {"x": 1}, "Parameter 'x' is unexpected"),
        ("device_add", {"driver": 5}, "Invalid parameter type for 'driver', expected: string"),
        ("calc-dirty-rate", {}, "Parameter 'calc-time' is missing"),
    ],
)
def test_arguments_are_refused_with_qemus_messages(
    command: str, arguments: dict[str, JSONValue], desc: str
) -> None:
    assert refusal(command, arguments) == desc


def test_checked_arguments_are_what_the_handler_gets() -> None:
    channel = {"channel-type": "main", "addr": {**_INET, "to": 7, "numeric": True}}
    assert check("migrate", {"channels": [channel]}) == {"channels": [channel]}
    # 'gen': false commands pass undeclared members through unchecked.
    assert check("device_add", {"driver": "d", "x": [1]}) == {"driver": "d", "x": [1]}
    # Alternates keep null; sizes wrap as QEMU's do.
    assert check("migrate-set-parameters", {"tls-creds": None, "max-bandwidth": -1}) == {
        "tls-creds": None,
        "max-bandwidth": 2**64 - 1,
    }
    fault = {"action": "cut", "at": {"pass": 2}}
    assert check("migrate-set-parameters", {"x-vmkit-fault": fault}) == {"x-vmkit-fault": fault}


def test_a_union_value_without_a_branch_takes_only_the_base() -> None:
    schema = schema_of(
        "{ 'enum': 'K', 'data': ['a', 'b'] } { 'struct': 'A', 'data': { 'x': 'int' } }"
        "{ 'union': 'U', 'base': { 'k': 'K' }, 'discriminator': 'k', 'data': { 'a': 'A' } }"
    )
    checker = compile_type(schema.types["U"])
    assert checker.check({"k": "b"}, "", "u", "u") == {"k": "b"}
    with pytest.raises(QMPError, match=re.escape("'u.x' is unexpected")):
        checker.check({"k": "b", "x": 1}, "", "u", "u")
    assert checker.check({"k": "a", "x": 1}, "", "u", "u") == {"k": "a", "x": 1}


# --- output: mismatch ------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "value", "problem"),
    [
        ("StatusInfo", {"running": True, "status": "running"}, None),
        ("StatusInfo", {"running": True}, "status: missing (declared in StatusInfo)"),
        ("StatusInfo", {"running": 1, "status": "running"}, "running: int where bool is declared"),
        ("StatusInfo", {"running": True, "status": "x"}, "status: 'x' is not a value of RunState"),
        (
            "StatusInfo",
            {"running": True, "status": "running", "singlestep": False},
            "singlestep: not a member of StatusInfo",
        ),
        (
            "DirtyRateInfo",
            {"status": "measured"},
            "start-time: missing (declared in DirtyRateInfo)",
        ),
        ("VmkitGuestPause", {"stop": 1.5}, "stop: number where int is declared"),
        (
            "MigrationParameters",
            {"compress-level": 256},
            "compress-level: 256 is out of uint8's range",
        ),
        ("MigrationParameters", {"max-bandwidth": -1}, "max-bandwidth: -1 is out of size's range"),
        ("SocketAddress", {"type": "unix", "path": "/p"}, None),
        (
            "SocketAddress",
            {"type": "unix", "host": "h"},
            "path: missing (declared in UnixSocketAddress)",
        ),
        ("VmkitNumberOrNull", None, None),
        ("VmkitNumberOrNull", 3, None),
        ("VmkitNumberOrNull", "3", "(the value): matches no branch of VmkitNumberOrNull"),
        ("MigrationInfo", {"socket-address": [{"type": "fd"}]}, "socket-address[0].str: missing"),
    ],
)
def test_mismatch_names_the_first_departure(
    type_name: str, value: Any, problem: str | None
) -> None:
    found = mismatch(vmkit_schema().types[type_name], value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


def _registry(check_output: bool) -> CommandRegistry:
    registry = CommandRegistry(vmkit_schema(), check_output=check_output)
    registry.register("query-status", lambda ctx: {"running": True, "status": "sleepy"})
    registry.register("query-name", lambda ctx: None)

    async def version(ctx: CommandContext) -> JSONValue:
        return {"qemu": {"major": 9, "minor": 2, "micro": 0}}

    registry.register("query-version", version)
    return registry


def _ask(registry: CommandRegistry, name: str) -> dict[str, JSONValue]:
    session = SessionState(phase=SessionPhase.COMMAND)
    return asyncio.run(dispatch(registry, {"execute": name, "id": 1}, session))


def test_output_checking_turns_a_departing_answer_into_an_error() -> None:
    checked = _registry(check_output=True)
    assert _ask(checked, "query-status") == {
        "error": {
            "class": "GenericError",
            "desc": "vmkit: the answer of query-status does not match the schema:"
            " status: 'sleepy' is not a value of RunState",
        },
        "id": 1,
    }
    assert _ask(checked, "query-version")["error"]["desc"].endswith(
        "package: missing (declared in VersionInfo)"
    ), "asynchronous handlers too"
    assert _ask(checked, "query-name") == {"return": {}, "id": 1}, "None is {}"
    unchecked = _registry(check_output=False)
    assert _ask(unchecked, "query-status")["return"] == {"running": True, "status": "sleepy"}


def test_output_checking_refuses_undeclared_or_departing_events() -> None:
    registry = _registry(check_output=True)
    registry.check_event("STOP", None)
    registry.check_event("MIGRATION", {"status": "active"})
    with pytest.raises(OutputMismatchError, match="event NOPE is not declared"):
        registry.check_event("NOPE", None)
    with pytest.raises(OutputMismatchError, match="status: 'x' is not a value"):
        registry.check_event("MIGRATION", {"status": "x"})
    with pytest.raises(OutputMismatchError, match="x: not a member"):
        registry.check_event("STOP", {"x": 1})
    _registry(check_output=False).check_event("NOPE", {"x": 1})


def test_output_checking_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECK_OUTPUT_ENV, "1")
    assert CommandRegistry().check_output
    monkeypatch.setenv(CHECK_OUTPUT_ENV, "0")
    assert not CommandRegistry().check_output
    monkeypatch.delenv(CHECK_OUTPUT_ENV)
    assert not CommandRegistry().check_output


# --- query-qmp-schema ---------------------------------------------------------------


_SMALL = """
{ 'enum': 'Kind', 'data': [ 'one', { 'name': 'x-two', 'features': [ 'unstable' ] }, 'three' ] }
{ 'struct': 'One', 'data': { 'n': 'uint8', '*list': [ 'size' ] } }
{ 'union': 'Thing', 'base': { 'kind': 'Kind', '*name': 'str' }, 'discriminator': 'kind',
  'data': { 'one': 'One', 'x-two': 'One' } }
{ 'alternate': 'NumOrNull', 'data': { 'n': 'number', 'none': 'null' } }
{ 'command': 'stop' }
{ 'event': 'DONE', 'data': { 'thing': 'Thing' } }
{ 'command': 'get', 'data': { 'which': 'NumOrNull' }, 'returns': [ 'Thing' ],
  'features': [ 'unstable' ] }
"""


def test_schema_info_is_qemus_format_with_opaque_names() -> None:
    assert schema_info(schema_of(_SMALL)) == [
        {"name": "stop", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
        {"name": "DONE", "meta-type": "event", "arg-type": "1"},
        {
            "name": "get",
            "meta-type": "command",
            "arg-type": "2",
            "ret-type": "[3]",
            "features": ["unstable"],
        },
        {"name": "0", "meta-type": "object", "members": []},
        {"name": "1", "meta-type": "object", "members": [{"name": "thing", "type": "3"}]},
        {"name": "2", "meta-type": "object", "members": [{"name": "which", "type": "4"}]},
        {"name": "[3]", "meta-type": "array", "element-type": "3"},
        {
            "name": "3",
            "meta-type": "object",
            "members": [
                {"name": "kind", "type": "5"},
                {"name": "name", "type": "str", "default": None},
            ],
            "tag": "kind",
            # Every tag value, those without a branch as the empty object.
            "variants": [
                {"case": "one", "type": "6"},
                {"case": "x-two", "type": "6"},
                {"case": "three", "type": "0"},
            ],
        },
        {"name": "4", "meta-type": "alternate", "members": [{"type": "number"}, {"type": "null"}]},
        {
            "name": "5",
            "meta-type": "enum",
            "members": [
                {"name": "one"},
                {"name": "x-two", "features": ["unstable"]},
                {"name": "three"},
            ],
            "values": ["one", "x-two", "three"],
        },
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {
            "name": "6",
            "meta-type": "object",
            # Every integer type shows as int; arrays of them as [int].
            "members": [
                {"name": "n", "type": "int"},
                {"name": "list", "type": "[int]", "default": None},
            ],
        },
        {"name": "number", "meta-type": "builtin", "json-type": "number"},
        {"name": "null", "meta-type": "builtin", "json-type": "null"},
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
        {"name": "[int]", "meta-type": "array", "element-type": "int"},
    ]


def test_schema_info_of_vmkit_is_a_schema_info_list_of_served_commands() -> None:
    schema = vmkit_schema()
    info = schema_info(schema, commands={"query-status", "migrate"}, events=set())
    assert mismatch(schema.types["SchemaInfoList"], info) is None
    assert [e["name"] for e in info if e["meta-type"] in ("command", "event")] == [
        "query-status",
        "migrate",
    ]
    names = [e["name"] for e in info]
    assert len(names) == len(set(names)), "each type once"
    by_name = {e["name"]: e for e in info}
    migrate = by_name[by_name["migrate"]["arg-type"]]
    members = {m["name"]: m for m in migrate["members"]}
    assert members["parameters"]["features"] == ["unstable"]
    assert members["uri"] == {"name": "uri", "type": "str", "default": None}


def test_query_qmp_schema_is_computed_once_per_command_set() -> None:
    registry = CommandRegistry(vmkit_schema())
    registry.register("stop", lambda ctx: None)
    first = registry.schema_info()
    assert registry.schema_info() is first
    registry.register("cont", lambda ctx: None)
    second = registry.schema_info()
    assert second is not first
    assert [e["name"] for e in second if e["meta-type"] == "command"] == ["stop", "cont"]


# --- every command, as `vmkit run` answers it -----------------------------------------


def _wait(what: str, probe: Any) -> Any:
    deadline = time.monotonic() + GUARD
    while not (value := probe()):
        assert time.monotonic() < deadline, f"no {what} within {GUARD}s"
        time.sleep(0.02)
    return value


def test_every_command_answers_as_its_schema_declares() -> None:
    """Each command of ``vmkit run`` once with an answer (not an error),
    in two processes that check their own output (conftest sets
    ``VMKIT_QMP_CHECK_OUTPUT``): a departing answer would be an error and
    an event that departs would end the process's command with one."""
    assert os.environ.get(CHECK_OUTPUT_ENV) == "1"
    answered: set[str] = set()

    def run(q: QMPSocket, name: str, **arguments: Any) -> Any:
        result = q.execute(name, **arguments)
        answered.add(name)
        return result

    with short_dir() as d:
        src_cmd = vmkit_command(d / "s.qmp", ["-m", "16M", "--plugin", "vmkit.demo_devices"])
        dst_cmd = vmkit_command(d / "d.qmp", ["-m", "16M", "--incoming", "defer"])
        with (
            start_peer("vmkit", src_cmd, d / "s.qmp") as src,
            start_peer("vmkit", dst_cmd, d / "d.qmp") as dst,
            QMPSocket(src.socket, timeout=GUARD) as s,
            QMPSocket(dst.socket, timeout=GUARD) as t,
        ):
            run(s, "qmp_capabilities")
            run(t, "qmp_capabilities")
            names = {c["name"] for c in run(s, "query-commands")}
            for name in ("query-version", "query-status", "query-name", "query-qmp-schema"):
                run(s, name)
            # The same PCI device on both sides: the migration below carries it.
            for side in (s, t):
                run(side, "device_add", driver="pci-testdev", id="pt0", addr="03.0")
                run(side, "device_add", driver="qemu-xhci", id="xhci", addr="04.0")
                run(side, "device_add", driver="usb-kbd", id="kbd", bus="xhci.0")
            key = {"type": "qcode", "data": "a"}
            run(s, "input-send-event", events=[{"type": "key", "data": {"down": True, "key": key}}])
            assert any(d["qdev_id"] == "pt0" for d in run(s, "query-pci")[0]["devices"])
            run(s, "qom-list", path="/machine")
            run(s, "qom-get", path="/objects/pc.ram", property="size")
            run(s, "qom-list-types", abstract=True)
            run(s, "qom-list-properties", typename="demo-isa-serial")
            run(s, "device-list-properties", typename="demo-isa-serial")
            run(s, "device_add", driver="demo-isa-serial", id="ser0")
            run(s, "qom-set", path="/machine/peripheral/ser0", property="wakeup", value=True)
            run(s, "device_del", id="ser0")
            assert s.next_event("DEVICE_DELETED")["data"]["device"] == "ser0"
            run(s, "object-add", **{"qom-type": "demo-sev-guest", "id": "sev0"})
            run(s, "object-del", id="sev0")
            run(s, "calc-dirty-rate", **{"calc-time": 50, "calc-time-unit": "millisecond"})
            _wait("measurement", lambda: run(s, "query-dirty-rate")["status"] == "measured")
            run(s, "human-monitor-command", **{"command-line": "info status"})
            run(s, "x-vmkit-save", path=str(d / "save.stream"))
            run(s, "pmemsave", val=0, size=4096, filename=str(d / "mem"))
            a, b = socket.socketpair()
            with a, b:
                s.execute_with_fds("getfd", [a.fileno()], fdname="f1")
                answered.add("getfd")
            run(s, "closefd", fdname="f1")
            run(s, "cont")
            run(s, "stop")
            run(s, "system_reset")
            assert run(s, "query-migrate") == {}
            caps = [
                {"capability": "events", "state": True},
                {"capability": "pause-before-switchover", "state": True},
            ]
            run(s, "migrate-set-capabilities", capabilities=caps)
            run(t, "migrate-set-capabilities", capabilities=caps[:1])
            run(s, "query-migrate-capabilities")
            run(s, "migrate-set-parameters", **{"downtime-limit": 1000, "tls-creds": None})
            run(s, "query-migrate-parameters")
            mig = str(d / "mig.sock")
            run(t, "migrate-incoming", uri=f"unix:{mig}")
            run(t, "query-migrate")
            run(s, "migrate", uri=f"unix:{mig}")
            while s.next_event("MIGRATION")["data"]["status"] != "pre-switchover":
                pass
            run(s, "query-migrate")
            run(s, "migrate-continue", state="pre-switchover")
            while s.next_event("MIGRATION")["data"]["status"] != "completed":
                pass
            info = run(s, "query-migrate")
            assert info["status"] == "completed" and info["ram"]["postcopy-requests"] == 0
            while t.next_event("MIGRATION")["data"]["status"] != "completed":
                pass
            assert "x-vmkit-received" in run(t, "query-migrate")
            run(s, "migrate_cancel")
            run(t, "quit")
            run(s, "quit")
            assert src.wait_exit() == 0 and dst.wait_exit() == 0
    assert answered == names, names ^ answered


def test_schema_files_are_package_data() -> None:
    """The files live in the package (read through importlib.resources)."""
    import vmkit.qmp.qapi as qapi_pkg

    directory = Path(qapi_pkg.__file__).parent / "schema"
    assert (directory / "qapi-schema.json").is_file()
    assert len(list(directory.glob("*.json"))) >= 10
