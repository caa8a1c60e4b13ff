"""The object model (QOM): types, objects, properties and the composition tree.

Objects are created from registered types, configured through typed
properties, placed in a tree with canonical paths (``/machine/peripheral/d0``)
and reference counted with checked lifetimes::

    from vmkit import qom

    qom.register_type(
        "my-uart",
        parent="device",
        class_properties=[qom.Property("baud", "uint32", default=115200, before_realize=True)],
        realize=lambda obj: print("realized", obj.path),
    )
    qom.create_machine("none-machine")
    uart = qom.device_add("my-uart", id="uart0", baud=9600)
    assert qom.resolve_path("uart0") == uart
    print(qom.qom_tree("/machine"))
    qom.device_del("uart0")

A handle returned by :func:`new` owns one reference; ``obj.ref()`` and
``obj.unref()`` take and give back more. Handles from lookups own none.
Using an object after it was finalized raises
:class:`vmkit.errors.ObjectFinalizedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from vmkit import errors
from vmkit._core import migration as _migration
from vmkit._core import qom as _core
from vmkit._core.migration import VMStateDescription
from vmkit._core.qom import (
    ClassInit,
    Object,
    Property,
    PropertyInfo,
    StorageGuard,
    TypeSummary,
)

__all__ = [
    "ClassInit",
    "Object",
    "Property",
    "PropertyInfo",
    "PropertyValue",
    "Stats",
    "StorageGuard",
    "TypeSummary",
    "create_machine",
    "destroy_machine",
    "device_add",
    "device_add_from_text",
    "device_del",
    "device_type_properties",
    "format_size",
    "list_types",
    "machine",
    "machine_creation_done",
    "new",
    "object_add",
    "object_add_from_text",
    "object_del",
    "parse_size",
    "qom_tree",
    "register_type",
    "reset_tree",
    "resolve_path",
    "root",
    "singleton_instance",
    "stats",
    "type_interfaces",
    "type_is_a",
    "type_properties",
    "walk",
]

#: What a property holds, seen from Python.
PropertyValue = bool | int | str | None
Hook = Callable[[Object], object]

parse_size = _core.parse_size
format_size = _core.format_size


def _prop_name(obj: Object, key: str) -> str:
    """Maps a Python keyword to a property name: ``mem_path`` finds ``mem-path``."""
    if key in obj or "_" not in key:
        return key
    dashed = key.replace("_", "-")
    return dashed if dashed in obj else key


def _prop_names_for(type_name: str, props: Mapping[str, PropertyValue]) -> dict[str, PropertyValue]:
    """Maps keywords to the property names of ``type_name`` (``_`` for ``-``)."""
    if not any("_" in k for k in props):
        return dict(props)
    try:
        known = {p.name for p in _core.type_properties(type_name)}
    except errors.QomError:
        known = set()  # the command itself will report the bad type
    out: dict[str, PropertyValue] = {}
    for key, value in props.items():
        dashed = key.replace("_", "-")
        out[dashed if key not in known and dashed in known else key] = value
    return out


def _apply(obj: Object, props: Mapping[str, PropertyValue | Object]) -> None:
    for key, value in props.items():
        obj.set(_prop_name(obj, key), value)


def new(type_name: str, /, **props: PropertyValue | Object) -> Object:
    """Creates an object of ``type_name`` and sets ``props`` on it.

    The returned handle owns the object's one reference. Keyword names may
    use ``_`` for ``-`` (``mem_path=`` sets ``mem-path``). If a property
    cannot be set, the object is finalized and the error raised.

    :raises TypeNotFoundError: no such type.
    :raises AbstractTypeError: the type is abstract.
    :raises PropertyError: a property is unknown or its value is refused.
    """
    obj = _core.new(type_name)
    try:
        _apply(obj, props)
    except BaseException:
        obj.release()
        raise
    return obj


def register_type(
    name: str,
    parent: str = "object",
    *,
    abstract: bool = False,
    interfaces: Iterable[str] = (),
    description: str | None = None,
    class_properties: Iterable[Property] = (),
    properties: Iterable[Property] = (),
    class_init: Callable[[ClassInit], object] | None = None,
    instance_init: Hook | None = None,
    instance_post_init: Hook | None = None,
    instance_finalize: Hook | None = None,
    realize: Hook | None = None,
    unrealize: Hook | None = None,
    complete: Hook | None = None,
    can_be_deleted: Callable[[Object], bool] | None = None,
    vmstate: VMStateDescription | None = None,
    vmstate_save: Callable[[Object], dict[str, Any]] | None = None,
    vmstate_load: Callable[[Object, dict[str, Any], int], object] | None = None,
) -> None:
    """Registers a type implemented in Python, alongside the Rust-defined ones.

    ``class_properties`` exist on every instance of the type and its
    subtypes; ``properties`` are added to each instance just before this
    type's ``instance_init`` runs. Hooks run in QEMU's order: ``class_init``,
    ``instance_init``, ``realize`` and ``complete`` base type first;
    ``instance_post_init``, ``unrealize`` and ``instance_finalize``
    most-derived first. An exception raised by a hook propagates to whoever
    triggered it (one from ``instance_finalize`` goes to
    ``sys.unraisablehook``, as for ``__del__``).

    A device type may declare its migration state with ``vmstate`` (see
    :mod:`vmkit.migration`): each realized instance is then one section of
    a saved machine. Its state is read from and written to the object's
    ``data`` dict under the field names, unless ``vmstate_save(obj) ->
    dict`` and ``vmstate_load(obj, state, version_id)`` are given. As QEMU
    loads into the live device, a restore first takes the receiving
    device's current state (``vmstate_save``) and decodes the stream over
    it: fields an older stream version lacks keep their current values.

    :raises TypeRegistrationError: duplicate name, unknown parent or
        interface, or a ``vmstate`` on a type that is not a device.
    """
    if vmstate is None and (vmstate_save or vmstate_load):
        raise TypeError("vmstate_save and vmstate_load need a vmstate description")
    if vmstate is not None and not (parent == "device" or _core.type_is_a(parent, "device")):
        raise errors.TypeRegistrationError(
            f"type '{name}': only device types have a VMState (parent '{parent}' is not a device)"
        )
    _core.register_type(
        name,
        parent,
        abstract=abstract,
        interfaces=list(interfaces),
        description=description,
        class_properties=list(class_properties),
        properties=list(properties),
        class_init=class_init,
        instance_init=instance_init,
        instance_post_init=instance_post_init,
        instance_finalize=instance_finalize,
        realize=realize,
        unrealize=unrealize,
        complete=complete,
        can_be_deleted=can_be_deleted,
    )
    if vmstate is not None:
        _migration.register_device_vmstate(name, vmstate, save=vmstate_save, load=vmstate_load)


def list_types(
    implements: str | None = None, *, include_abstract: bool = False
) -> list[TypeSummary]:
    """Registered types sorted by name (QMP ``qom-list-types``)."""
    return _core.list_types(implements, include_abstract)


def type_is_a(type_name: str, other: str) -> bool:
    """Whether ``type_name`` is, derives from, or implements ``other``."""
    return _core.type_is_a(type_name, other)


def type_interfaces(type_name: str) -> list[str]:
    """The interfaces ``type_name`` implements, inherited ones included."""
    return _core.type_interfaces(type_name)


def type_properties(type_name: str) -> list[PropertyInfo]:
    """Every property of a type (QMP ``qom-list-properties``).

    A concrete type is instantiated temporarily, so instance properties are
    listed too; creating and dropping it has no other effect.
    """
    return _core.type_properties(type_name)


def device_type_properties(type_name: str) -> list[PropertyInfo]:
    """The user-settable properties of a device type (QMP ``device-list-properties``)."""
    return _core.device_type_properties(type_name)


def root() -> Object:
    """The root of the composition tree, ``/``."""
    return _core.root()


def resolve_path(path: str, type_name: str | None = None) -> Object:
    """Resolves an absolute path or an unambiguous partial one.

    :raises AmbiguousPathError: a partial path that matches more than one
        object (a :class:`PathError`).
    :raises PathError: malformed or not found.
    :raises WrongTypeError: the object is not of ``type_name``.
    """
    return _core.resolve_path(path, type_name)


def qom_tree(path: str = "/") -> str:
    """The subtree at ``path`` as QEMU's ``info qom-tree`` prints it."""
    return _core.qom_tree(path)


def walk(start: Object | None = None) -> Iterator[Object]:
    """Every object below ``start`` (default: the root), depth first, parents before children."""
    stack = [start if start is not None else root()]
    while stack:
        obj = stack.pop()
        yield obj
        stack.extend(child for _, child in reversed(obj.children()))


def create_machine(type_name: str = "none-machine") -> Object:
    """Creates the machine at ``/machine`` with its standard containers."""
    return _core.create_machine(type_name)


def destroy_machine() -> None:
    """Removes ``/machine`` and finalizes everything it owns (its devices
    are unrealized first, children before parents)."""
    _core.destroy_machine()


def reset_tree(root: Object) -> None:
    """Resets every realized device under ``root`` (QEMU's device reset),
    children before parents: a PCI function's BARs unmap, its Command
    register clears."""
    _core.reset_tree(root)


def machine_creation_done() -> None:
    """Marks the machine complete (QEMU's machine-ready phase): devices
    created from now on report ``hotplugged``, as QEMU's do after
    ``device_add``. Cleared when the machine is created or destroyed.

    :raises LifecycleError: no machine exists.
    """
    _core.machine_creation_done()


def machine() -> Object | None:
    """The machine, if one was created."""
    return _core.machine()


def device_add(type_name: str, /, id: str | None = None, **props: PropertyValue) -> Object:
    """Creates, places and realizes a device, as QMP ``device_add`` does.

    With ``id`` it goes to ``/machine/peripheral/<id>``, else to
    ``/machine/peripheral-anon/device[N]``. On failure nothing is left behind.
    """
    return _core.device_add(type_name, id, _prop_names_for(type_name, props))


def device_add_from_text(
    type_name: str, /, id: str | None = None, props: Mapping[str, str] | None = None
) -> Object:
    """:func:`device_add` with property values as text, as on a command
    line (``-device TYPE,prop=value``): each is parsed by its property's
    own type (``on``, ``0x10``, ``64K``, an enum member, a path).

    :raises PropertyNotFoundError: a property the type does not have.
    :raises PropertyValueError: a value its property's type does not
        accept; the message names the property and the expected type.
    """
    return _core.device_add_from_text(type_name, id, list((props or {}).items()))


def device_del(id_or_path: str) -> list[tuple[str, str | None]]:
    """Unrealizes a device and removes it from the tree (QMP ``device_del``).

    Devices on its buses go with it, as in QEMU (a ``qemu-xhci``'s USB
    devices). Returns the ``(path, id)`` of every device that left the
    tree, those that went with it first and the device itself last; ``id``
    is ``None`` for a device without one.
    """
    return _core.device_del(id_or_path)


def object_add(type_name: str, /, id: str, **props: PropertyValue) -> Object:
    """Creates and completes a user-creatable object at ``/objects/<id>`` (QMP ``object-add``)."""
    return _core.object_add(type_name, id, _prop_names_for(type_name, props))


def object_add_from_text(
    type_name: str, /, id: str, props: Mapping[str, str] | None = None
) -> Object:
    """:func:`object_add` with property values as text (``-object
    TYPE,id=ID,prop=value``), parsed as :func:`device_add_from_text` does."""
    return _core.object_add_from_text(type_name, id, list((props or {}).items()))


def object_del(id: str) -> None:
    """Deletes ``/objects/<id>`` unless it is in use (QMP ``object-del``)."""
    _core.object_del(id)


def singleton_instance(type_name: str) -> Object | None:
    """The realized or completed instance of a singleton type, if any."""
    return _core.singleton_instance(type_name)


@dataclass(frozen=True)
class Stats:
    """Object-model counters (see :func:`stats`)."""

    live_objects: int
    live_storages: int
    objects_created: int
    objects_finalized: int
    storages_released: int
    resurrections_refused: int


def stats() -> Stats:
    """Counters of live objects and storages, so tests can prove nothing leaks."""
    return Stats(**_core.stats())
