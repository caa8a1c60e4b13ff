"""Type registration, hierarchy, hooks order and introspection."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vmkit import errors, qom
from vmkit.qom import Property


def test_builtin_types_are_registered() -> None:
    names = {t.name for t in qom.list_types(include_abstract=True)}
    assert {
        "object",
        "interface",
        "container",
        "device",
        "machine",
        "singleton",
        "user-creatable",
    } <= names
    concrete = {t.name for t in qom.list_types()}
    assert "device" not in concrete and "container" in concrete
    assert [t.name for t in qom.list_types("machine")] == ["none-machine"]


def test_registration_errors(uniq: Callable[[str], str]) -> None:
    name = uniq("dev")
    qom.register_type(name, "device")
    with pytest.raises(errors.TypeRegistrationError, match="already registered"):
        qom.register_type(name, "device")
    with pytest.raises(errors.TypeRegistrationError, match="parent type 'no-such-parent'"):
        qom.register_type(uniq("orphan"), "no-such-parent")
    with pytest.raises(errors.TypeRegistrationError, match="interface 'nope' is not registered"):
        qom.register_type(uniq("x"), interfaces=["nope"])
    with pytest.raises(errors.TypeRegistrationError, match="'device' is not an interface"):
        qom.register_type(uniq("x"), interfaces=["device"])
    with pytest.raises(errors.TypeRegistrationError, match="type name"):
        qom.register_type("bad/name")
    with pytest.raises(errors.TypeRegistrationError, match="min is greater than max"):
        Property("p", "uint8", min=5, max=4)
    with pytest.raises(errors.TypeRegistrationError, match="unknown property type 'float'"):
        Property("p", "float")
    with pytest.raises(errors.PropertyValueError):
        # A default is checked against the property's kind at registration.
        qom.register_type(
            uniq("bad-default"), class_properties=[Property("p", "uint8", default=300)]
        )


def test_unknown_and_abstract_types(uniq: Callable[[str], str]) -> None:
    with pytest.raises(errors.TypeNotFoundError, match="type 'no-such-type' not found"):
        qom.new("no-such-type")
    with pytest.raises(errors.AbstractTypeError, match="'device' is abstract"):
        qom.new("device")
    base = uniq("base")
    qom.register_type(base, "device", abstract=True)
    with pytest.raises(errors.AbstractTypeError):
        qom.new(base)
    with pytest.raises(errors.AbstractTypeError):
        qom.new("singleton")


def test_hooks_run_in_qemu_order(uniq: Callable[[str], str], no_leaks: None) -> None:
    log: list[str] = []
    a, b, c = uniq("a"), uniq("b"), uniq("c")

    def hooks(tag: str) -> dict[str, Callable[[qom.Object], object]]:
        return {
            "instance_init": lambda o: log.append(f"init {tag}"),
            "instance_post_init": lambda o: log.append(f"post {tag}"),
            "instance_finalize": lambda o: log.append(f"finalize {tag}"),
            "realize": lambda o: log.append(f"realize {tag}"),
            "unrealize": lambda o: log.append(f"unrealize {tag}"),
        }

    qom.register_type(
        a,
        "device",
        abstract=True,
        class_init=lambda c: log.append(f"class_init {c.type_name}"),
        **hooks("a"),
    )
    qom.register_type(
        b,
        a,
        abstract=True,
        class_init=lambda c: log.append(f"class_init {c.type_name}"),
        **hooks("b"),
    )
    qom.register_type(
        c, b, class_init=lambda c: log.append(f"class_init {c.type_name}"), **hooks("c")
    )
    obj = qom.new(c)
    assert log == [
        f"class_init {a}",
        f"class_init {b}",
        f"class_init {c}",
        "init a",
        "init b",
        "init c",
        "post c",
        "post b",
        "post a",
    ]
    log.clear()
    obj.realize()
    obj.unrealize()
    assert log == [
        "realize a",
        "realize b",
        "realize c",
        "unrealize c",
        "unrealize b",
        "unrealize a",
    ]
    log.clear()
    obj.unref()
    assert log == ["finalize c", "finalize b", "finalize a"]
    # Class initialisation ran once per type, however many instances follow.
    qom.new(c).release()
    assert log.count(f"class_init {c}") == 0


def test_class_init_adds_properties_and_overrides_defaults(uniq: Callable[[str], str]) -> None:
    base, derived = uniq("base"), uniq("derived")
    qom.register_type(base, "device", class_properties=[Property("queues", "uint16", default=1)])

    def class_init(c: qom.ClassInit) -> None:
        c.set_default("queues", 4)
        c.add_property(Property("mq", "bool", default=True))

    qom.register_type(derived, base, class_init=class_init)
    with qom.new(derived) as d, qom.new(base) as b:
        assert d.get("queues") == 4 and d.get("mq") is True
        assert b.get("queues") == 1 and "mq" not in b


def test_interfaces_and_is_a(uniq: Callable[[str], str]) -> None:
    iommu, intel = uniq("iommu"), uniq("intel")
    qom.register_type(iommu, "device", abstract=True, interfaces=["singleton"])
    qom.register_type(intel, iommu)
    assert (
        qom.type_is_a(intel, "singleton")
        and qom.type_is_a(intel, "device")
        and qom.type_is_a(intel, iommu)
    )
    assert not qom.type_is_a(intel, "user-creatable")
    assert qom.type_interfaces(intel) == ["singleton"]
    with qom.new(intel) as o:
        assert o.is_a("singleton") and o.is_a("object") and not o.is_a("container")


def test_list_properties_of_abstract_type_lists_class_properties(
    uniq: Callable[[str], str],
) -> None:
    base = uniq("base")
    qom.register_type(
        base,
        "device",
        abstract=True,
        class_properties=[Property("irq", "uint8")],
        properties=[Property("dyn", "str")],
    )
    names = [p.name for p in qom.type_properties(base)]
    assert "irq" in names and "realized" in names and "dyn" not in names


def test_instance_init_error_propagates_and_leaves_nothing(
    uniq: Callable[[str], str], no_leaks: None
) -> None:
    name = uniq("broken")
    finalized: list[int] = []

    def init(o: qom.Object) -> None:
        raise RuntimeError("no hardware")

    qom.register_type(
        name, "device", instance_init=init, instance_finalize=lambda o: finalized.append(o.id)
    )
    with pytest.raises(RuntimeError, match="no hardware"):
        qom.new(name)
    # instance_init never completed, so instance_finalize of that level does not run.
    assert finalized == []
