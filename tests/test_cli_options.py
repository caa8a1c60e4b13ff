"""``-device`` / ``-object`` options on the command line, parsed as QEMU's
option parser does: ``,,`` is a comma in a value, and each value is
converted by its property's own type, with errors that name the property
and the type it expects."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmkit import qom
from vmkit.cli import DeviceOption, OptionError, main, parse_device_option
from vmkit.qom import Property

Uniq = Callable[[str], str]


# ----- the syntax -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("e1000", DeviceOption("e1000", None, {})),
        ("e1000,id=n0", DeviceOption("e1000", "n0", {})),
        (
            "e1000,id=n0,mac=52:54:00:12:34:56",
            DeviceOption("e1000", "n0", {"mac": "52:54:00:12:34:56"}),
        ),
        # ",," is a comma inside a value, in the type and in the id too.
        ("x,serial=a,,b", DeviceOption("x", None, {"serial": "a,b"})),
        ("x,serial=,,,,", DeviceOption("x", None, {"serial": ",,"})),
        ("x,serial=a,,,b=2", DeviceOption("x", None, {"serial": "a,", "b": "2"})),
        ("we,,ird,id=i,,d", DeviceOption("we,ird", "i,d", {})),
        # "=" after the first one belongs to the value.
        ("x,path=/a=b", DeviceOption("x", None, {"path": "/a=b"})),
        # A name alone is "on"; an empty value stays empty.
        ("x,wakeup", DeviceOption("x", None, {"wakeup": "on"})),
        ("x,name=", DeviceOption("x", None, {"name": ""})),
        # A trailing comma ends the list; a later value replaces an earlier one.
        ("x,a=1,", DeviceOption("x", None, {"a": "1"})),
        ("x,a=1,a=2", DeviceOption("x", None, {"a": "2"})),
    ],
)
def test_options_split_like_qemus(text: str, expected: DeviceOption) -> None:
    assert parse_device_option(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no type"),
        (",id=x", "no type"),
        ("id=x", "the type comes first"),
        ("x,=1", "invalid parameter '=1'"),
        ("x,a=1,,,=2", "invalid parameter '=2'"),
        ("x,,", None),  # not an error: the type "x,"
    ],
)
def test_malformed_options(text: str, message: str | None) -> None:
    if message is None:
        assert parse_device_option(text).driver == "x,"
        return
    with pytest.raises(OptionError, match=message):
        parse_device_option(text)


# ----- values converted by the property's type -----------------------------


@pytest.fixture
def probe(uniq: Uniq) -> tuple[str, list[dict[str, Any]]]:
    """A device with one property of each kind; realize records their values."""
    name = uniq("probe")
    seen: list[dict[str, Any]] = []
    props = ["count", "offset", "flag", "label", "size", "mode", "narrow"]
    qom.register_type(
        name,
        "device",
        class_properties=[
            Property("count", "uint32"),
            Property("offset", "int64"),
            Property("flag", "bool"),
            Property("label", "str"),
            Property("size", "size"),
            Property("mode", "enum", values=["on", "off", "auto"], enum_name="OnOffAuto"),
            Property("narrow", "uint8", max=15),
        ],
        realize=lambda o: seen.append({p: o[p] for p in props}),
    )
    return name, seen


def save(tmp_path: Path, *device: str) -> int:
    args = ["save", str(tmp_path / "s"), "-m", "4M"]
    for d in device:
        args += ["-device", d]
    return main(args)


@pytest.mark.usefixtures("no_machine")
def test_values_are_parsed_by_the_property_type(
    probe: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    name, seen = probe
    opt = f"{name},id=p0,count=0x10,offset=-7,flag=on,label=a,,b=c,size=64K,mode=auto,narrow=15"
    assert save(tmp_path, opt, f"{name},flag=off,count=4294967295,label=0x10") == 0
    assert seen == [
        {
            "count": 16,
            "offset": -7,
            "flag": True,
            "label": "a,b=c",
            "size": 64 << 10,
            "mode": "auto",
            "narrow": 15,
        },
        {
            "count": 4294967295,
            "offset": 0,
            "flag": False,
            "label": "0x10",  # a string property keeps the text
            "size": 0,
            "mode": "on",
            "narrow": 0,
        },
    ]


@pytest.mark.usefixtures("no_machine")
@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("count=abc", ["'count'", "uint32", "'abc' is not an integer"]),
        ("count=", ["'count'", "uint32"]),
        ("count=-1", ["'count'", "uint32"]),
        ("count=0x100000000", ["'count'", "uint32", "out of range"]),
        ("offset=1.5", ["'offset'", "int64"]),
        ("flag=maybe", ["'flag'", "bool", "'maybe'"]),
        ("size=12Q", ["'size'", "size"]),
        ("mode=sometimes", ["'mode'", "OnOffAuto", "'sometimes'"]),
        ("narrow=16", ["'narrow'", "uint8", "out of range"]),
        ("nope=1", ["'nope'", "not found"]),
    ],
)
def test_a_bad_value_names_the_property_and_its_type(
    probe: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    words: list[str],
) -> None:
    name, seen = probe
    assert save(tmp_path, f"{name},id=p0,{setting}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"vmkit: -device {name},id=p0,{setting}: "), err
    for w in words:
        assert w in err, (w, err)
    assert seen == [], "nothing was realized"
    assert not (tmp_path / "s").exists()
    assert qom.machine() is None, "the machine was taken down"


@pytest.mark.usefixtures("no_machine")
def test_syntax_errors_print_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert save(tmp_path, ",id=x") == 2
    err = capsys.readouterr().err
    assert err == "vmkit: -device ',id=x': no type given (TYPE,prop=value,...)\n"


# ----- through the console script ------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_objects_from_the_command_line(tmp_path: Path) -> None:
    sock = str(tmp_path / "never.sock")
    base = ["run", "--qmp", f"unix:{sock}", "-m", "4M", "--workload-rate", "0"]
    out = run_cli(*base, "-object", "memory-backend-ram,id=m0,size=12Q")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "-object memory-backend-ram,id=m0,size=12Q:" in out.stderr
    assert "'size'" in out.stderr and "size" in out.stderr
    out = run_cli(*base, "-object", "memory-backend-ram,size=1M")
    assert out.returncode == 2 and "an id is required" in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


def test_devices_from_the_command_line(tmp_path: Path) -> None:
    sock = str(tmp_path / "never.sock")
    base = ["run", "--qmp", f"unix:{sock}", "-m", "4M", "--plugin", "vmkit.demo_devices"]
    out = run_cli(*base, "-device", "demo-isa-serial,id=s0,iobase=0x2f8,wakeup=yes,index=x")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "'index'" in out.stderr and "uint32" in out.stderr
    out = run_cli(*base, "-device", "intel-iommu,aw-bits=300")
    assert out.returncode == 2 and "'aw-bits'" in out.stderr and "uint8" in out.stderr
    out = run_cli(*base, "-device", "intel-iommu,intremap=perhaps")
    assert out.returncode == 2 and "OnOffAuto" in out.stderr
    # A value of the right type the device refuses at realize: QEMU's text.
    out = run_cli(*base, "-device", "intel-iommu,aw-bits=49")
    assert out.returncode == 2 and "Supported values for aw-bits are: 39, 48" in out.stderr
