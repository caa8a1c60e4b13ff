"""Typed properties: kinds, ranges, sizes, enums, links, access rules and bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit import errors, qom
from vmkit.qom import Property

_TYPE = "t-props-dev"
_TARGET = "t-props-target"
_OTHER = "t-props-other"


@pytest.fixture(scope="module", autouse=True)
def _types() -> None:
    qom.register_type(_TARGET, "device")
    qom.register_type(_OTHER, "object")
    qom.register_type(
        _TYPE,
        "device",
        class_properties=[
            Property("flag", "bool", default=True, description="a switch"),
            Property("i8", "int8"),
            Property("u16", "uint16", default=7, min=1, max=1000),
            Property("u64", "uint64"),
            Property("i64", "int64"),
            Property("name", "str", default="dflt"),
            Property(
                "mode", "enum", values=["on", "off", "auto"], enum_name="OnOffAuto", default="auto"
            ),
            Property("mem", "size", default="64K"),
            Property("fixed", "uint32", default=3, before_realize=True),
            Property("ro", "str", default="const", read_only=True),
            Property("peer", f"link<{_TARGET}>"),
        ],
        properties=[Property("dyn", "uint8", default=9)],
    )


@pytest.fixture
def dev() -> Iterator[qom.Object]:
    with qom.new(_TYPE) as d:
        yield d


def test_defaults(dev: qom.Object) -> None:
    assert dev["flag"] is True
    assert dev["i8"] == 0
    assert dev["u16"] == 7
    assert dev["name"] == "dflt"
    assert dev["mode"] == "auto"
    assert dev["mem"] == 65536
    assert dev["dyn"] == 9
    assert dev["peer"] == ""
    assert dev["type"] == _TYPE
    assert dev["realized"] is False


def test_round_trips(dev: qom.Object) -> None:
    dev["flag"] = False
    dev["i8"] = -128
    dev["u64"] = 2**64 - 1
    dev["i64"] = -(2**63)
    dev["name"] = "héllo"
    dev["mode"] = "off"
    dev["mem"] = "1.5G"
    assert (dev["flag"], dev["i8"], dev["u64"], dev["i64"]) == (False, -128, 2**64 - 1, -(2**63))
    assert (dev["name"], dev["mode"], dev["mem"]) == ("héllo", "off", 3 << 29)
    dev.set_str("flag", "on")
    dev.set_str("u16", "0x10")
    dev.set_str("mem", "2M")
    assert (dev["flag"], dev["u16"], dev["mem"]) == (True, 16, 2 << 20)


@pytest.mark.parametrize(
    ("name", "value", "exc", "message"),
    [
        ("flag", 1, errors.PropertyTypeError, "property 'flag' of .* expects bool, got an integer"),
        ("flag", "yes", errors.PropertyTypeError, "expects bool, got a string"),
        ("i8", 128, errors.PropertyValueError, r"expects int8 \(-128..=127\): 128 is out of range"),
        ("u16", 0, errors.PropertyValueError, r"expects uint16 \(1..=1000\): 0 is out of range"),
        ("u16", 1001, errors.PropertyValueError, "out of range"),
        ("u64", -1, errors.PropertyValueError, "out of range"),
        ("u64", 2**64, errors.PropertyValueError, "does not fit in 64 bits"),
        ("u64", "12", errors.PropertyTypeError, "expects uint64, got a string"),
        ("name", 5, errors.PropertyTypeError, "expects str, got an integer"),
        ("name", None, errors.PropertyTypeError, "got null"),
        ("mode", "maybe", errors.PropertyValueError, "'maybe' is not a member"),
        ("mem", "12Q", errors.PropertyValueError, "unknown size suffix"),
        ("mem", -1, errors.PropertyValueError, "negative"),
        ("mem", "1.5", errors.PropertyValueError, "fraction of a byte"),
        ("ro", "x", errors.PropertyAccessError, "read-only"),
        ("type", "x", errors.PropertyAccessError, "read-only"),
        ("nope", 1, errors.PropertyNotFoundError, "property 'nope' not found on"),
        ("flag", 1.5, errors.PropertyTypeError, "not float"),
        ("flag", [True], errors.PropertyTypeError, "not list"),
    ],
)
def test_bad_values_are_precise_errors(
    dev: qom.Object, name: str, value: object, exc: type[Exception], message: str
) -> None:
    before = {p.name: dev.get(p.name) for p in dev.properties() if p.readable and p.name != "peer"}
    with pytest.raises(exc, match=message):
        dev.set(name, value)  # type: ignore[arg-type]
    # A refused write changes nothing.
    assert {
        p.name: dev.get(p.name) for p in dev.properties() if p.readable and p.name != "peer"
    } == before


def test_errors_share_the_hierarchy(dev: qom.Object) -> None:
    with pytest.raises(errors.PropertyError):
        dev.set("i8", 1000)
    with pytest.raises(errors.QomError):
        dev.get("nope")
    with pytest.raises(errors.VmkitError):
        dev.set("flag", "x")


def test_before_realize_only(dev: qom.Object) -> None:
    dev["fixed"] = 5
    dev.realize()
    with pytest.raises(
        errors.PropertyAccessError, match="cannot be set after the object was realized"
    ):
        dev["fixed"] = 6
    assert dev["fixed"] == 5
    dev["name"] = "still settable"
    dev.unrealize()
    dev["fixed"] = 6
    assert dev["fixed"] == 6


def test_realized_property_drives_the_lifecycle(dev: qom.Object) -> None:
    dev["realized"] = True
    assert dev.realized and dev["realized"] is True
    dev["realized"] = False
    assert not dev.realized


def test_links(dev: qom.Object, machine: qom.Object) -> None:
    target = qom.device_add(_TARGET, id="tgt")
    dev["peer"] = "/machine/peripheral/tgt"
    assert dev["peer"] == "/machine/peripheral/tgt"
    assert dev.get_link("peer") == target
    dev["peer"] = ""
    assert dev.get_link("peer") is None
    dev["peer"] = "tgt"  # partial path
    assert dev.get_link("peer") == target
    dev.set_link("peer", None)
    dev.set("peer", target)  # an Object works too
    assert dev["peer"] == "/machine/peripheral/tgt"
    with pytest.raises(errors.PathError, match="no object at path '/machine/nothing'"):
        dev["peer"] = "/machine/nothing"
    with (
        qom.new(_OTHER) as other,
        pytest.raises(
            errors.PropertyTypeError,
            match=f"expects link<{_TARGET}>, got an object of type '{_OTHER}'",
        ),
    ):
        dev.set_link("peer", other)
    with pytest.raises(errors.PropertyTypeError, match="got an object of type 'container'"):
        dev["peer"] = "/machine/peripheral"
    dev.set_link("peer", None)


def test_strong_link_keeps_its_target_alive(uniq: Callable[[str], str], no_leaks: None) -> None:
    holder = uniq("holder")
    qom.register_type(holder, "object", class_properties=[Property("to", f"link<{_TARGET}>")])
    with qom.new(holder) as h:
        t = qom.new(_TARGET)
        h.set_link("to", t)
        assert t.refcount == 2
        t.unref()
        assert t.alive and t.refcount == 1
        h.set_link("to", None)
        assert t.phase == "finalized"


def test_weak_link_does_not(uniq: Callable[[str], str], no_leaks: None) -> None:
    holder = uniq("holder")
    qom.register_type(
        holder, "object", class_properties=[Property("to", f"link<{_TARGET}>", strong=False)]
    )
    with qom.new(holder) as h, qom.new(_TARGET) as t:
        h.set_link("to", t)
        assert t.refcount == 1


def test_instance_properties(dev: qom.Object) -> None:
    dev.add_property(Property("extra", "str", default="x"))
    assert dev["extra"] == "x"
    info = {p.name: p for p in dev.properties()}
    assert not info["extra"].class_property and info["flag"].class_property
    assert info["flag"].description == "a switch" and info["mode"].type == "OnOffAuto"
    with pytest.raises(errors.DuplicatePropertyError):
        dev.add_property(Property("flag", "bool"))
    dev.remove_property("extra")
    assert "extra" not in dev
    with pytest.raises(errors.PropertyNotFoundError):
        dev.remove_property("extra")


def test_custom_accessors(uniq: Callable[[str], str]) -> None:
    name = uniq("computed")
    qom.register_type(
        name,
        "object",
        class_properties=[
            Property(
                "twice",
                "uint32",
                getter=lambda o: o.data.get("v", 0) * 2,
                setter=lambda o, v: o.data.__setitem__("v", v),
            ),
            Property("wo", "str", setter=lambda o, v: o.data.__setitem__("wo", v)),
        ],
    )
    with qom.new(name) as o:
        o["twice"] = 21
        assert o["twice"] == 42
        with pytest.raises(errors.PropertyValueError):
            o["twice"] = -1  # the kind is checked before the setter runs
        o["wo"] = "hidden"
        assert o.data["wo"] == "hidden"
        with pytest.raises(errors.PropertyAccessError, match="write-only"):
            o.get("wo")


def test_size_parser() -> None:
    assert qom.parse_size("64K") == 65536
    assert qom.parse_size("1G") == 1 << 30
    assert qom.format_size(64 << 10) == "64 KiB"
    for bad in ["", "K", "1Q", "16E", "-1"]:
        with pytest.raises(errors.PropertyValueError):
            qom.parse_size(bad)


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_int8_accepts_exactly_its_range(value: int) -> None:
    with qom.new(_TYPE) as d:
        if -128 <= value <= 127:
            d["i8"] = value
            assert d["i8"] == value
        else:
            with pytest.raises(errors.PropertyValueError):
                d["i8"] = value
            assert d["i8"] == 0


@given(st.integers(min_value=0, max_value=2**33), st.sampled_from(["", "K", "M", "G", "k", "B"]))
def test_size_strings(number: int, suffix: str) -> None:
    shift = {"": 0, "B": 0, "K": 10, "k": 10, "M": 20, "G": 30}[suffix]
    with qom.new(_TYPE) as d:
        d["mem"] = f"{number}{suffix}"
        assert d["mem"] == number << shift
