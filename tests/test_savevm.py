"""VMState descriptions from Python, device state in saved machines, and
save/restore of a whole machine through the Python API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit import errors, migration, qom
from vmkit.machine import Machine, MachineStateError
from vmkit.migration import VMStateDescription, VMStateField

Uniq = Callable[[str], str]

# ----- descriptions ---------------------------------------------------------


def timer_vmsd(version: int = 2, name: str = "demo-timer") -> VMStateDescription:
    # As in QEMU, `needed` sees the parent's state; without it a
    # subsection is always sent.
    armed = VMStateDescription(
        f"{name}/armed",
        [VMStateField("deadline", "int64")],
        needed=lambda s: f"{name}/armed" in s,
    )
    return VMStateDescription(
        name,
        [
            VMStateField("ctrl", "uint32"),
            VMStateField("count", "uint16"),
            VMStateField("queue", migration.array("uint16", length="count")),
            VMStateField("regs", migration.buffer(4)),
            VMStateField("enabled", "bool"),
            VMStateField("dma_base", "uint64", since=2),
        ],
        version_id=version,
        minimum_version_id=1,
        subsections=[armed],
    )


def test_fields_encode_big_endian_as_qemu_does() -> None:
    vmsd = timer_vmsd()
    body = vmsd.encode(
        {
            "ctrl": 0x01020304,
            "count": 2,
            "queue": [0xAABB, 0xCCDD],
            "regs": b"\x00\x11\x22\x33",
            "enabled": True,
            "dma_base": 0x1000,
        }
    )
    assert body == (
        b"\x01\x02\x03\x04"
        + b"\x00\x02"
        + b"\xaa\xbb\xcc\xdd"
        + b"\x00\x11\x22\x33"
        + b"\x01"
        + (0x1000).to_bytes(8, "big")
    )
    state = vmsd.decode(body)
    assert state["queue"] == [0xAABB, 0xCCDD]
    assert state["regs"] == b"\x00\x11\x22\x33"
    assert state["enabled"] is True
    # A version 1 body has no dma_base.
    assert "dma_base" not in vmsd.decode(body[:-8], version_id=1)


def test_a_subsection_is_sent_only_when_needed() -> None:
    sub = VMStateDescription(
        "dev/extra", [VMStateField("x", "uint8")], needed=lambda s: s["flag"] != 0
    )
    vmsd = VMStateDescription("dev", [VMStateField("flag", "uint8")], subsections=[sub])
    assert vmsd.encode({"flag": 0, "dev/extra": {"x": 9}}) == b"\x00"
    body = vmsd.encode({"flag": 1, "dev/extra": {"x": 9}})
    assert body == b"\x01" + b"\x05" + bytes([9]) + b"dev/extra" + (1).to_bytes(4, "big") + b"\x09"
    assert vmsd.decode(body) == {"flag": 1, "dev/extra": {"x": 9}}


def test_hooks_see_and_change_the_state() -> None:
    calls: list[tuple[str, Any]] = []

    def pre_save(state: dict[str, Any]) -> None:
        # Principle 6: a host address survives as an explicit u64.
        state["dma_base"] = 0x7F00_0000_1000
        calls.append(("pre_save", dict(state)))

    def post_load(state: dict[str, Any], version: int) -> None:
        calls.append(("post_load", version))
        state["ready"] = True

    vmsd = VMStateDescription(
        "dev",
        [VMStateField("ctrl", "uint8"), VMStateField("dma_base", "uint64")],
        pre_save=pre_save,
        post_load=post_load,
    )
    body = vmsd.encode({"ctrl": 1})
    assert body[1:] == (0x7F00_0000_1000).to_bytes(8, "big")
    state = vmsd.decode(body)
    assert state["ready"] is True
    assert calls[0][0] == "pre_save" and calls[1] == ("post_load", 1)


def test_a_hook_exception_propagates_unchanged() -> None:
    class BoomError(Exception):
        pass

    def pre_save(state: dict[str, Any]) -> None:
        raise BoomError("device busy")

    vmsd = VMStateDescription("dev", [VMStateField("a", "uint8")], pre_save=pre_save)
    with pytest.raises(BoomError, match="device busy"):
        vmsd.encode({"a": 1})


def test_predicate_exceptions_propagate_unchanged() -> None:
    # `exists` and `needed` fail like any hook: the caller gets the
    # exception, not a quietly absent field or subsection.
    class PredicateError(Exception):
        pass

    def broken(*_args: object) -> bool:
        raise PredicateError("cannot tell")

    exists = VMStateDescription("dev", [VMStateField("a", "uint8", exists=broken)])
    with pytest.raises(PredicateError, match="cannot tell"):
        exists.encode({"a": 1})
    with pytest.raises(PredicateError, match="cannot tell"):
        exists.decode(b"\x01")
    sub = VMStateDescription("dev/sub", [VMStateField("b", "uint8")], needed=broken)
    needed = VMStateDescription("dev", [VMStateField("a", "uint8")], subsections=[sub])
    with pytest.raises(PredicateError, match="cannot tell"):
        needed.encode({"a": 1, "dev/sub": {"b": 2}})


def test_kinds_as_text_are_parsed_by_the_core() -> None:
    as_text = VMStateDescription(
        "dev",
        [
            VMStateField("n", "uint8"),
            VMStateField("q", "array(uint16, n)"),
            VMStateField("tag", "buffer(2)"),
        ],
    )
    as_helpers = VMStateDescription(
        "dev",
        [
            VMStateField("n", "uint8"),
            VMStateField("q", migration.array("uint16", length="n")),
            VMStateField("tag", migration.buffer(2)),
        ],
    )
    state = {"n": 2, "q": [1, 0x0530], "tag": b"\x05\x30"}
    assert as_text.encode(state) == as_helpers.encode(state)
    with pytest.raises(ValueError, match=r"bad kind 'array\(uint16\)': expected ','"):
        VMStateField("q", "array(uint16)")


@pytest.mark.parametrize(
    ("fields", "kwargs", "exc"),
    [
        ([VMStateField("a", "uint8"), VMStateField("a", "uint8")], {}, errors.VMStateError),
        (
            [VMStateField("a", "uint8")],
            {"version_id": 1, "minimum_version_id": 2},
            errors.VMStateError,
        ),
        (
            [VMStateField("q", migration.array("uint8", length="n"))],
            {},
            errors.VMStateError,
        ),
        ([VMStateField("a", "uint8")], {"priority": "urgent"}, ValueError),
    ],
    ids=["duplicate-field", "minimum-above-version", "length-field-missing", "bad-priority"],
)
def test_bad_descriptions_are_refused(
    fields: list[VMStateField], kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    with pytest.raises(exc):
        VMStateDescription("dev", fields, **kwargs)


@pytest.mark.parametrize(
    "kind", ["uint7", {"buffer": -1}, {"array": "uint8"}, {"struct": 3}, 12, {"nothing": 1}]
)
def test_bad_kinds_are_refused(kind: Any) -> None:
    with pytest.raises((ValueError, TypeError, OverflowError)):
        VMStateField("f", kind)


def test_values_that_do_not_fit_are_refused_with_the_field() -> None:
    vmsd = VMStateDescription("dev", [VMStateField("small", "uint8")])
    with pytest.raises(errors.VMStateError, match="small"):
        vmsd.encode({"small": 300})
    with pytest.raises(errors.VMStateError, match="small"):
        vmsd.encode({})
    with pytest.raises(TypeError, match="small"):
        vmsd.encode({"small": 1.5})


def test_damaged_bodies_name_section_field_and_offset() -> None:
    vmsd = timer_vmsd()
    with pytest.raises(errors.VMStateError) as info:
        vmsd.decode(b"\x00\x00\x00\x01\x00\x09\x00")  # 9 queue entries, 1 byte left
    e = info.value
    assert e.section == "demo-timer"
    assert e.field == "demo-timer/queue[0]"
    assert e.offset is not None and e.offset >= 6
    with pytest.raises(errors.VMStateError, match="too new"):
        vmsd.decode(b"", version_id=3)
    with pytest.raises(errors.VMStateError, match="after the body"):
        VMStateDescription("d", [VMStateField("a", "uint8")]).decode(b"\x01\x02")


@given(
    ctrl=st.integers(0, 2**32 - 1),
    queue=st.lists(st.integers(0, 2**16 - 1), max_size=20),
    regs=st.binary(min_size=4, max_size=4),
    enabled=st.booleans(),
    dma=st.integers(0, 2**64 - 1),
    deadline=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_any_state_round_trips(
    ctrl: int, queue: list[int], regs: bytes, enabled: bool, dma: int, deadline: int | None
) -> None:
    vmsd = timer_vmsd()
    state: dict[str, Any] = {
        "ctrl": ctrl,
        "count": len(queue),
        "queue": queue,
        "regs": regs,
        "enabled": enabled,
        "dma_base": dma,
    }
    if deadline is not None:
        state["demo-timer/armed"] = {"deadline": deadline}
    assert vmsd.decode(vmsd.encode(state)) == state


# ----- devices in machines --------------------------------------------------


@pytest.fixture
def timer_type(uniq: Uniq) -> str:
    name = uniq("timer")
    qom.register_type(name, "device", vmstate=timer_vmsd(name=name))
    return name


def timer_state(base: int) -> dict[str, Any]:
    return {
        "ctrl": base,
        "count": 3,
        "queue": [base, base + 1, base + 2],
        "regs": bytes([base & 0xFF] * 4),
        "enabled": bool(base & 1),
        "dma_base": 0x7F00_0000_0000 + base,
    }


def build(timer_type: str, bases: list[int], **kw: Any) -> tuple[Machine, list[qom.Object]]:
    vm = Machine(memory="16M", **kw)
    devs = []
    for i, base in enumerate(bases):
        dev = vm.device_add(timer_type, id=f"timer{i}")
        dev.data.update(timer_state(base))
        devs.append(dev)
    return vm, devs


@pytest.mark.usefixtures("no_machine")
def test_a_machine_saves_and_restores_into_a_fresh_one(timer_type: str, tmp_path: Path) -> None:
    stream = tmp_path / "vm.stream"
    vm, devs = build(timer_type, [10, 21], workload_rate=64 << 20, seed=4)
    with vm:
        vm.cont()
        assert vm.workload is not None and vm.workload.wait_ops(1, timeout=60)
        vm.stop()
        vm.address_space.write(0x2000, b"written by DMA")
        saved_sum = vm.ram.checksum()
        saved_devs = [{k: d.data[k] for k in timer_state(0)} for d in devs]
        stats = vm.save(stream)
        assert vm.status == "postmigrate"  # as QEMU's source after a migration
    # The two timers and the q35 host bridge (its 0xCF8 register, its mch).
    assert stats["devices"] == 4 and stats["ram_bytes"] == 16 << 20
    assert stats["normal_pages"] > 0

    vm2, devs2 = build(timer_type, [0, 0])
    with vm2:
        rs = vm2.restore(stream)
        assert rs["devices"] == 4 and rs["bytes"] == stats["bytes"]
        assert vm2.status == "paused"
        assert vm2.ram.checksum() == saved_sum
        assert vm2.address_space.read(0x2000, 14) == b"written by DMA"
        assert [{k: d.data[k] for k in timer_state(0)} for d in devs2] == saved_devs
        vm2.cont()
        assert vm2.status == "running"

    report = migration.analyze(stream)
    assert report["error"] is None
    idstrs = [d["idstr"] for d in report["devices"]]
    assert idstrs == [timer_type, timer_type, "PCIHost", "0000:00:00.0/mch"]
    fields = [d["fields"] for d in report["devices"][:2]]
    assert [f["ctrl"] for f in fields] == [10, 21]
    assert fields[0]["regs"] == "0a0a0a0a"


@pytest.mark.usefixtures("no_machine")
def test_custom_save_and_load_functions(uniq: Uniq, tmp_path: Path) -> None:
    name = uniq("counter")
    loads: list[tuple[dict[str, Any], int]] = []
    vmsd = VMStateDescription(name, [VMStateField("count", "uint64")])
    qom.register_type(
        name,
        "device",
        vmstate=vmsd,
        vmstate_save=lambda obj: {"count": obj.data.get("n", 0) * 2},
        vmstate_load=lambda obj, state, version: loads.append((state, version)),
    )
    with Machine(memory="4M") as vm:
        vm.device_add(name, id="c").data["n"] = 21
        vm.save(tmp_path / "s")
    with Machine(memory="4M") as vm:
        vm.device_add(name, id="c")
        vm.restore(tmp_path / "s")
    assert loads == [({"count": 42}, 1)]


def test_vmstate_needs_a_device_type(uniq: Uniq) -> None:
    vmsd = VMStateDescription("x", [])
    with pytest.raises(errors.TypeRegistrationError, match="device"):
        qom.register_type(uniq("plain"), vmstate=vmsd)
    with pytest.raises(TypeError):
        qom.register_type(uniq("dev"), "device", vmstate_save=lambda o: {})


def test_kinds_nested_past_the_limit_are_refused_not_a_crash() -> None:
    deep: migration.KindSpec = "uint8"
    for _ in range(10_000):
        deep = migration.optional(deep)
    with pytest.raises(ValueError, match="nest deeper than 32"):
        VMStateField("x", deep)
    with pytest.raises(ValueError, match="nest deeper than 32"):
        VMStateField("x", "optional(" * 100_000 + "u8" + ")" * 100_000)


@pytest.fixture
def saved(timer_type: str, tmp_path: Path, no_machine: None) -> Path:
    stream = tmp_path / "vm.stream"
    vm, _ = build(timer_type, [10, 21])
    with vm:
        vm.ram.write(0x5000, b"\xab" * 4096)
        vm.save(stream)
    return stream


def refused(
    timer_type: str, stream: Path, exc: type[BaseException], bases: tuple[int, ...] = (1, 2)
) -> BaseException:
    """Restores ``stream`` into a fresh machine expecting ``exc``; checks
    that no device changed and the machine cannot run."""
    vm, devs = build(timer_type, list(bases))
    with vm:
        before = [dict(d.data) for d in devs]
        with pytest.raises(exc) as info:
            vm.restore(stream)
        assert [dict(d.data) for d in devs] == before
        assert vm.status == "inmigrate"
        with pytest.raises(MachineStateError):
            vm.cont()
    return info.value


def test_truncated_streams_are_refused_at_every_cut(
    saved: Path, timer_type: str, tmp_path: Path
) -> None:
    data = saved.read_bytes()
    report = migration.analyze(saved)
    eof = next(r["offset"] for r in report["records"] if r["type"] == "EOF")
    cuts = [0, 3, 4, 7, 9, 40, 60, 5000, eof - 200, eof - 50, eof - 5, eof - 1, eof]
    for cut in cuts:
        part = tmp_path / f"cut{cut}"
        part.write_bytes(data[:cut])
        e = refused(timer_type, part, errors.MigrationError)
        assert isinstance(e, errors.MigrationError)
        assert e.offset is not None and e.offset <= cut, (cut, str(e))


def test_a_corrupted_device_body_names_section_and_field(
    saved: Path, timer_type: str, tmp_path: Path
) -> None:
    report = migration.analyze(saved)
    full = next(r for r in report["records"] if r["type"] == "FULL")
    header_len = 1 + 4 + 1 + len(full["idstr"]) + 4 + 4
    count_at = full["offset"] + header_len + 4  # after ctrl
    data = bytearray(saved.read_bytes())
    data[count_at : count_at + 2] = (0xFFFF).to_bytes(2, "big")
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    e = refused(timer_type, bad, errors.MigrationError)
    assert e.section == full["idstr"]  # type: ignore[attr-defined]
    assert e.offset is not None and e.offset > count_at  # type: ignore[attr-defined]


def test_another_machine_shape_is_refused(saved: Path, timer_type: str) -> None:
    e = refused(timer_type, saved, errors.StreamError, bases=(1,))
    assert "unknown section" in str(e)
    e = refused(timer_type, saved, errors.DeviceStateError, bases=(1, 2, 3))
    assert "timer" in str(e) or "no section" in str(e)


def test_sections_of_devices_a_machine_lacks_can_be_taken_and_listed(
    saved: Path, timer_type: str
) -> None:
    """``report_unmodelled``: the second timer's section, which no device
    here takes, is decoded by the stream's trailer and listed; the first
    timer loads as usual."""
    vm, devs = build(timer_type, [1])
    with vm:
        stats = vm.restore(saved, report_unmodelled=True)
        assert vm.status == "paused"
        assert devs[0].data["ctrl"] == 10
    assert stats["devices"] == 3  # the first timer and the host bridge's two sections
    unmodelled = stats["unmodelled"]
    assert unmodelled["ram_blocks"] == []
    (section,) = unmodelled["sections"]
    assert (section["idstr"], section["instance_id"]) == (timer_type, 1)
    assert section["vmsd_name"] == timer_type and section["size"] > 0
    device = migration.analyze(saved)["devices"][1]
    assert section["fields"] == device["fields"] and section["offset"] == device["offset"]
    assert section["fields"]["ctrl"] == 21 and section["fields"]["queue"] == [21, 22, 23]


def test_a_stream_for_another_machine_type_is_refused(saved: Path, timer_type: str) -> None:
    vm, devs = build(timer_type, [1, 2], machine_type="pc-i440fx-vmkit")
    with vm:
        with pytest.raises(errors.StreamError, match="machine type") as info:
            vm.restore(saved)
        assert info.value.offset == 8
        assert devs[0].data["ctrl"] == 1


def test_a_load_exception_propagates_unchanged(uniq: Uniq, tmp_path: Path) -> None:
    class RefusedError(Exception):
        pass

    def load(obj: qom.Object, state: dict[str, Any], version: int) -> None:
        raise RefusedError("not now")

    name = uniq("dev")
    qom.register_type(
        name,
        "device",
        vmstate=VMStateDescription(name, [VMStateField("a", "uint8")]),
        vmstate_load=load,
    )
    if qom.machine() is not None:
        qom.destroy_machine()
    with Machine(memory="4M") as vm:
        vm.device_add(name).data["a"] = 1
        vm.save(tmp_path / "s")
    with Machine(memory="4M") as vm:
        vm.device_add(name)
        with pytest.raises(RefusedError, match="not now"):
            vm.restore(tmp_path / "s")
        assert vm.status == "inmigrate"


@pytest.mark.usefixtures("no_machine")
def test_state_listeners_see_run_state_changes(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    with Machine(memory="4M") as vm:
        vm.add_state_listener(lambda old, new: seen.append((old, new)))
        vm.cont()
        vm.save(tmp_path / "s")
        vm.stop()
    assert seen == [
        ("prelaunch", "running"),
        ("running", "finish-migrate"),
        ("finish-migrate", "postmigrate"),
        ("postmigrate", "running"),
        ("running", "paused"),
    ]
    # Closing a paused machine keeps its state (QEMU has no paused -> shutdown).
    assert vm.status == "paused" and vm.shut_down


# ----- CLI -------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_save_then_restore_gives_the_same_ram(tmp_path: Path) -> None:
    stream = str(tmp_path / "cli.stream")
    # Until 2000 writes, not for a time: the result does not depend on the load.
    out = run_cli("save", stream, "-m", "32M", "--run-ops", "2000", "--seed", "9", "--json")
    assert out.returncode == 0, out.stderr
    saved = json.loads(out.stdout)
    assert saved["ram_bytes"] == 32 << 20 and saved["normal_pages"] > 0
    out = run_cli("restore", stream, "-m", "32M", "--json")
    assert out.returncode == 0, out.stderr
    restored = json.loads(out.stdout)
    assert restored["ram_xxh3_64"] == saved["ram_xxh3_64"]
    assert restored["status"] == "paused"
    out = run_cli("restore", stream, "-m", "16M")
    assert out.returncode == 1
    assert "length 0x2000000 in the stream, 0x1000000 here" in out.stderr
    out = run_cli("save", stream, "--device", "no-such-type")
    assert out.returncode == 2 and "no-such-type" in out.stderr


def test_the_analyzer_decodes_known_sections_without_a_trailer(
    timer_type: str, tmp_path: Path, no_machine: None
) -> None:
    stream = tmp_path / "novmdesc"
    vm, devs = build(timer_type, [5, 6])
    with vm:
        devs[1].data[f"{timer_type}/armed"] = {"deadline": -1}
        migration.save(stream, machine_type="m", ram=[vm.ram], devices=vm.board, vmdesc=False)
    report = migration.analyze(stream)
    assert report["error"] is None
    assert report["records"][-1]["type"] == "EOF"
    # The host bridge's sections decode by their declared VMStates too.
    assert [d["idstr"] for d in report["devices"]][2:] == ["PCIHost", "0000:00:00.0/mch"]
    assert report["devices"][3]["fields"]["parent_obj"]["version_id"] == 2
    fields = [d["fields"] for d in report["devices"][:2]]
    assert [f["ctrl"] for f in fields] == [5, 6]
    assert fields[1]["subsections"] == {f"{timer_type}/armed": {"deadline": -1}}
    # Damage inside the second body: the error names section and field.
    data = stream.read_bytes()
    second = report["devices"][1]["offset"]
    cut = second + 1 + 4 + 1 + len(timer_type) + 4 + 4 + 4 + 2 + 1
    (tmp_path / "cut").write_bytes(data[:cut])
    err = migration.analyze(tmp_path / "cut")["error"]
    assert err["section"] == timer_type
    assert err["field"] == f"{timer_type}/queue[0]"
