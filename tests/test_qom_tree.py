"""The composition tree: containers, paths, resolution, placement commands."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vmkit import errors, qom
from vmkit.qom import Property


def test_root_and_machine_containers(machine: qom.Object) -> None:
    assert qom.root().path == "/"
    names = [n for n, _ in qom.root().children()]
    assert {"objects", "chardevs", "backend", "machine"} <= set(names)
    assert machine.path == "/machine"
    assert [n for n, _ in machine.children()] == ["peripheral", "peripheral-anon", "unattached"]
    assert qom.resolve_path("/machine/unattached").type_name == "container"
    with pytest.raises(errors.LifecycleError, match="a machine already exists"):
        qom.create_machine("none-machine")
    with pytest.raises(errors.WrongTypeError):
        qom.create_machine("container")


def test_child_edges_and_numbering(uniq: Callable[[str], str], no_leaks: None) -> None:
    with qom.new("container") as box:
        a = qom.new("container")
        b = qom.new("container")
        assert box.add_child("slot[*]", a) == "slot[0]"
        assert box.add_child("slot[*]", b) == "slot[1]"
        assert a.refcount == 2
        a.unref()
        b.unref()
        assert [n for n, _ in box.children()] == ["slot[0]", "slot[1]"]
        assert box["slot[0]"] == ""  # not under the root: no canonical path
        assert a.parent == box and a.name == "slot[0]"
        c = qom.new("container")
        with pytest.raises(errors.DuplicatePropertyError):
            box.add_child("slot[0]", c)
        with pytest.raises(errors.LifecycleError, match="already has a parent"):
            qom.new("container").add_child("x", a)
        with pytest.raises(errors.LifecycleError, match="cycle"):
            a.add_child("up", box)
        with pytest.raises(errors.PathError, match="cannot contain '/'"):
            box.add_child("a/b", c)
        with pytest.raises(errors.PathError, match="cannot be empty"):
            box.add_child("", c)
        a.unparent()
        assert a.phase == "finalized"
        assert box.add_child("slot[*]", c) == "slot[0]"  # the freed number is reused
        c.unref()


def test_paths_and_resolution(machine: qom.Object, uniq: Callable[[str], str]) -> None:
    dev = uniq("dev")
    qom.register_type(dev, "device", instance_init=lambda o: o.embed_child("bus", "container"))
    d0 = qom.device_add(dev, id="d0")
    d1 = qom.device_add(dev)
    assert d0.path == "/machine/peripheral/d0"
    assert d1.path == "/machine/peripheral-anon/device[0]"
    assert qom.resolve_path("/machine/peripheral/d0") == d0
    assert qom.resolve_path("d0") == d0
    assert qom.resolve_path("peripheral/d0") == d0
    assert qom.resolve_path("d0/bus").path == "/machine/peripheral/d0/bus"
    assert qom.resolve_path("/") == qom.root()
    assert qom.resolve_path("/machine//peripheral/d0/") == d0
    with pytest.raises(errors.PathError, match="ambiguous: it matches"):
        qom.resolve_path("bus")
    with pytest.raises(errors.PathError, match="no object at path 'nothing'"):
        qom.resolve_path("nothing")
    with pytest.raises(errors.PathError, match="no object at path '/machine/nothing'"):
        qom.resolve_path("/machine/nothing")
    with pytest.raises(errors.PathError, match="empty path"):
        qom.resolve_path("")
    with pytest.raises(errors.PathError, match="empty path component"):
        qom.resolve_path("a//b")
    with pytest.raises(errors.WrongTypeError):
        qom.resolve_path("/machine/peripheral/d0", "container")
    assert qom.resolve_path("d0", dev) == d0

    # qom-list: every property with its type
    listing = {p.name: p.type for p in d0.properties()}
    assert (
        listing["bus"] == "child<container>"
        and listing["type"] == "str"
        and listing["realized"] == "bool"
    )


def test_an_ambiguous_partial_path_is_its_own_error(
    machine: qom.Object, uniq: Callable[[str], str]
) -> None:
    dev = uniq("dev")
    qom.register_type(dev, "device", instance_init=lambda o: o.embed_child("port", "container"))
    qom.device_add(dev, id="a0")
    qom.device_add(dev, id="a1")
    with pytest.raises(errors.AmbiguousPathError, match="ambiguous: it matches") as amb:
        qom.resolve_path("port")
    assert isinstance(amb.value, errors.PathError)
    assert "/machine/peripheral/a0/port" in str(amb.value)
    with pytest.raises(errors.PathError) as missing:
        qom.resolve_path("no-such-port")
    assert not isinstance(missing.value, errors.AmbiguousPathError)
    assert qom.resolve_path("a1/port").path == "/machine/peripheral/a1/port"


def test_link_path_components_are_followed(machine: qom.Object, uniq: Callable[[str], str]) -> None:
    dev = uniq("linker")
    target = uniq("target")
    qom.register_type(target, "device")
    qom.register_type(dev, "device", class_properties=[Property("peer", f"link<{target}>")])
    t = qom.device_add(target, id="t")
    d = qom.device_add(dev, id="d", peer="/machine/peripheral/t")
    assert qom.resolve_path("/machine/peripheral/d/peer") == t
    assert d["peer"] == "/machine/peripheral/t"


def test_qom_tree_shape(machine: qom.Object, uniq: Callable[[str], str]) -> None:
    dev = uniq("dev")
    qom.register_type(dev, "device", instance_init=lambda o: o.embed_child("core", "container"))
    qom.device_add(dev, id="zeta")
    qom.device_add(dev, id="alpha")
    expected = f"""/machine (none-machine)
  /peripheral (container)
    /alpha ({dev})
      /core (container)
    /zeta ({dev})
      /core (container)
  /peripheral-anon (container)
  /unattached (container)
"""
    assert qom.qom_tree("/machine") == expected
    assert (
        qom.qom_tree("/machine/peripheral/alpha")
        == f"/machine/peripheral/alpha ({dev})\n  /core (container)\n"
    )


def test_walk_visits_parents_first(machine: qom.Object) -> None:
    paths = [o.path for o in qom.walk(machine)]
    assert paths[0] == "/machine"
    assert paths.index("/machine/peripheral") < len(paths)


def test_device_add_and_del(
    machine: qom.Object, uniq: Callable[[str], str], no_leaks: None
) -> None:
    dev = uniq("nic")
    qom.register_type(
        dev,
        "device",
        class_properties=[Property("mac_bits", "uint8"), Property("queue-count", "uint8")],
    )
    d = qom.device_add(dev, id="net0", mac_bits=3, queue_count=2)
    assert d.realized and d["queue-count"] == 2 and d.refcount == 1
    with pytest.raises(errors.LifecycleError, match="duplicate device id 'net0'"):
        qom.device_add(dev, id="net0")
    with pytest.raises(errors.PathError, match="must start with a letter"):
        qom.device_add(dev, id="0bad")
    with pytest.raises(errors.WrongTypeError, match="is not a 'device'"):
        qom.device_add("container", id="c")
    with pytest.raises(errors.PropertyNotFoundError):
        qom.device_add(dev, id="net1", bogus=1)
    assert qom.resolve_path("/machine/peripheral").child("net1") is None
    qom.device_del("net0")
    assert d.phase == "finalized" and not d.realized
    with pytest.raises(errors.PathError):
        qom.device_del("net0")


def test_failed_realize_leaves_nothing_behind(
    machine: qom.Object, uniq: Callable[[str], str], no_leaks: None
) -> None:
    dev = uniq("flaky")

    def realize(o: qom.Object) -> None:
        raise OSError("device busy")

    qom.register_type(dev, "device", realize=realize)
    with pytest.raises(OSError, match="device busy"):
        qom.device_add(dev, id="f")
    assert qom.resolve_path("/machine/peripheral").children() == []


def test_realize_without_parent_goes_to_unattached(
    machine: qom.Object, uniq: Callable[[str], str]
) -> None:
    dev = uniq("dev")
    qom.register_type(dev, "device")
    with qom.new(dev) as d:
        d.realize()
        assert d.path == "/machine/unattached/device[0]"
        d.unparent()


def test_object_add_and_del(
    machine: qom.Object, uniq: Callable[[str], str], no_leaks: None
) -> None:
    backend = uniq("backend")
    in_use: dict[str, bool] = {"v": False}
    completed: list[str] = []
    qom.register_type(
        backend,
        interfaces=["user-creatable"],
        class_properties=[Property("size", "size", before_realize=True)],
        complete=lambda o: completed.append(str(o["size"])),
        can_be_deleted=lambda o: not in_use["v"],
    )
    o = qom.object_add(backend, "mem0", size="1G")
    assert o.path == "/objects/mem0" and o.completed and completed == [str(1 << 30)]
    with pytest.raises(errors.PropertyAccessError, match="after the object was completed"):
        o["size"] = "2G"
    with pytest.raises(errors.LifecycleError, match="already completed"):
        o.complete()
    with pytest.raises(errors.LifecycleError, match="duplicate object id 'mem0'"):
        qom.object_add(backend, "mem0")
    with pytest.raises(errors.WrongTypeError, match="user-creatable"):
        qom.object_add("container", "c0")
    in_use["v"] = True
    with pytest.raises(errors.LifecycleError, match="is in use, can not be deleted"):
        qom.object_del("mem0")
    in_use["v"] = False
    qom.object_del("mem0")
    assert o.phase == "finalized"
    with pytest.raises(errors.PathError):
        qom.object_del("mem0")
