"""Device models in the machine: the q35-like board and its PCI bus.

:func:`q35` builds the board a :class:`vmkit.machine.Machine` runs on:
PC memory over the RAM block, the ``pci`` space behind it (memory BARs
are mapped there), the 64 KiB ``I/O`` space, the host bridge at
``/machine/q35`` with its root bus ``pcie.0`` and the ``mch`` function at
00.0 (QEMU's q35 identity, 8086:29c0). A guest reaches configuration space
through ports 0xCF8/0xCFC, and through the ECAM window at 0xb0000000 once
it enables it in the ``mch``'s PCIEXBAR, as firmware does::

    from vmkit import devices, qom
    from vmkit.memory import RamBlock

    board = qom.create_machine()
    system, memory, io = devices.q35(RamBlock.anonymous("pc.ram", 64 << 20), board)
    qom.device_add("pci-testdev", id="t0", addr="03.0")
    io.write_sized(0xCF8, 4, 0x8000_1800)          # bus 0, 03.0, offset 0
    assert io.read_sized(0xCFC, 4) == 0x0005_1B36  # Red Hat's test device

``intel-iommu`` (one per machine, created before the PCI devices it
translates for) puts its registers at :data:`DMAR_BASE`; once the guest
enables translation there, each PCI function's DMA (:func:`dma_space`) is
translated through the root, context and page tables in guest RAM, and a
refused access is recorded in its fault registers.

PCI device types (``pci-testdev``, ``qemu-xhci``) take QEMU's ``addr``
("SS" or "SS.F", -1 for the first free slot) and ``multifunction``; their
sections are named after their address (``0000:00:03.0/pci-testdev``,
``0000:00:01.0/xhci``). :func:`query_pci` answers QMP ``query-pci``.

USB: ``qemu-xhci`` (QEMU's properties ``p2``, ``p3``, ``intrs``, ``slots``,
``streams``, ``msix``; ``msi`` stays off) puts a USB bus ``<id>.0`` in the
tree; ``usb-tablet`` and ``usb-kbd`` go on it (``bus=xhci.0``, else the only
controller; ``port=N``, else the first free port), and plugging or
unplugging one shows the guest a port status change. Input reaches them as
QEMU's input layer hands it over::

    tablet = qom.device_add("usb-tablet", bus="xhci.0")
    devices.tablet_move(tablet, 0x4000, 0x2000)     # absolute, 0..0x7fff
    devices.tablet_button(tablet, "left", True)
    devices.send_key(kbd, "a")                      # press and release

The board has no interrupt controller: MSI messages land in a window at
0xfee00000 (QEMU's APIC MSI region) that records them
(:func:`msi_messages`, :func:`msi_count`). Device timers (xHCI's MFINDEX)
read the virtual clock, which moves only by :func:`clock_advance`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vmkit import qom
from vmkit._core import devices as _core
from vmkit._core.memory import AddressSpace, MemoryRegion, RamBlock
from vmkit._core.qom import Object
from vmkit.errors import VmkitError

__all__ = [
    "DMAR_BASE",
    "clock_advance",
    "clock_ns",
    "dma_space",
    "input_devices",
    "input_send_event",
    "key_event",
    "msi_clear",
    "msi_count",
    "msi_messages",
    "q35",
    "qcodes",
    "query_pci",
    "route_input_events",
    "send_key",
    "tablet_button",
    "tablet_move",
    "usb_port",
]


#: Where ``intel-iommu``'s register window sits in system memory (4 KiB).
DMAR_BASE = 0xFED90000


def q35(
    ram: RamBlock, machine: Object, *, hotplug: bool = True
) -> tuple[MemoryRegion, AddressSpace, AddressSpace]:
    """Builds the q35-like board into ``machine`` over ``ram``.

    Returns the ``system`` region, the ``memory`` address space and the
    ``I/O`` address space. ``hotplug``: whether ``pcie.0`` takes devices
    plugged and unplugged at run time (QEMU's q35 root bus does not; vmkit's
    does unless told otherwise, and an unplug completes at once).
    """
    return _core.q35(ram, machine, hotplug)


def query_pci() -> list[dict[str, Any]]:
    """The PCI buses of the machine and their functions, as QMP
    ``query-pci`` answers (QEMU's ``PciInfo``): per function its bus, slot
    and function, ``class_info``, ``id``, ``irq_pin`` (and ``irq`` when it
    has a pin), ``qdev_id`` and ``regions`` (each BAR's type, address — -1
    while unmapped — and size)."""
    return _core.query_pci()


def dma_space(device: Object) -> AddressSpace:
    """The bus-master address space of the realized PCI function
    ``device``: what its DMA reaches — guest memory, through the IOMMU
    when one translates for it; nothing while its Command.MASTER is clear.
    Reading or writing it is a DMA by that device.

    :raises ValueError: ``device`` is not a realized PCI function.
    """
    space = _core.dma_space(device)
    if space is None:
        raise ValueError(f"{device.type_name} is not a realized PCI function")
    return space


def msi_messages() -> list[tuple[int, int]]:
    """The MSI messages written to the window at 0xfee00000 (the last
    1024, oldest first), as ``(address, data)``."""
    return _core.msi_messages()


def msi_count() -> int:
    """How many MSI messages the window received."""
    return _core.msi_count()


def msi_clear() -> None:
    """Forgets the recorded MSI messages and zeroes the count."""
    _core.msi_clear()


def clock_ns() -> int:
    """The virtual clock device models read, in nanoseconds."""
    return _core.clock_ns()


def clock_advance(ns: int) -> int:
    """Moves the virtual clock forward by ``ns`` nanoseconds and fires the
    devices' due timers; returns the new time."""
    if ns < 0:
        raise ValueError("the clock does not go back")
    return _core.clock_advance(ns)


def usb_port(dev: Object) -> int | None:
    """The port a realized ``usb-tablet`` / ``usb-kbd`` sits in (1-based)."""
    return _core.usb_port(dev)


def qcodes() -> list[str]:
    """The QEMU key names (QAPI ``QKeyCode``) :func:`key_event` takes."""
    return _core.qcodes()


def key_event(kbd: Object, key: str | int, down: bool) -> None:
    """A key pressed or released on a ``usb-kbd``: a QEMU key name
    (``"a"``, ``"ret"``, ``"shift"``) or key number (set-1 scancode, 0x80
    added for 0xe0-prefixed keys)."""
    if isinstance(key, int):
        _core.input_key_number(kbd, key, down)
    else:
        _core.input_key(kbd, key, down)


def send_key(kbd: Object, *keys: str) -> None:
    """Presses ``keys`` in order and releases them in reverse (a chord such
    as ``send_key(kbd, "ctrl", "c")``), as HMP ``sendkey`` does."""
    for key in keys:
        key_event(kbd, key, True)
    for key in reversed(keys):
        key_event(kbd, key, False)


def tablet_move(tablet: Object, x: int, y: int) -> None:
    """Moves a ``usb-tablet``'s pointer to (``x``, ``y``), each
    0..0x7fff, as one report."""
    _core.input_abs(tablet, "x", x)
    _core.input_abs(tablet, "y", y)
    _core.input_sync(tablet)


def tablet_button(tablet: Object, button: str, down: bool) -> None:
    """Presses or releases a ``usb-tablet`` button (``left``, ``right``,
    ``middle``, ``wheel-up``, ``wheel-down``), as one report."""
    _core.input_button(tablet, button, down)
    _core.input_sync(tablet)


#: Which device type takes which kind of input event.
_INPUT_TYPES = {"key": "usb-kbd", "btn": "usb-tablet", "abs": "usb-tablet"}


def input_devices() -> list[Object]:
    """The realized ``usb-kbd`` and ``usb-tablet`` devices, the one plugged
    last first (QEMU hands an event to the input handler activated last)."""
    found: list[Object] = []
    root = qom.machine()

    def walk(obj: Object) -> None:
        if obj.realized and (obj.is_a("usb-kbd") or obj.is_a("usb-tablet")):
            found.append(obj)
        for _, child in obj.children():
            walk(child)

    if root is not None:
        walk(root)
    return sorted(found, key=lambda o: o.id, reverse=True)


def route_input_events(
    events: Sequence[Mapping[str, Any]], device: str | None = None
) -> list[tuple[Object, list[Mapping[str, Any]]]]:
    """Which device each event goes to, as QMP ``input-send-event``
    decides: all to ``device`` (an id or a QOM path) when given, else each
    to the device taking its kind. Devices in the order of their first event.

    :raises LookupError: QEMU's message — no such device, or no device
        for an event's kind.
    """
    if device is not None:
        path = device if device.startswith("/") else f"/machine/peripheral/{device}"
        try:
            target = qom.resolve_path(path)
        except VmkitError:
            raise LookupError(f"Device '{device}' not found") from None
        if not target.realized or not (target.is_a("usb-kbd") or target.is_a("usb-tablet")):
            raise LookupError(f"Device '{device}' is not an input device")
        return [(target, list(events))]
    present = input_devices()
    routed: dict[int, tuple[Object, list[Mapping[str, Any]]]] = {}
    for event in events:
        kind = str(event.get("type"))
        wanted = _INPUT_TYPES.get(kind)
        dev = next((d for d in present if wanted is not None and d.is_a(wanted)), None)
        if dev is None:
            raise LookupError(f"Input handler not found for event type {kind}")
        routed.setdefault(dev.id, (dev, []))[1].append(event)
    return list(routed.values())


def input_send_event(dev: Object, events: Sequence[Mapping[str, Any]]) -> None:
    """Hands ``events`` — QAPI ``InputEvent`` values, as QMP
    ``input-send-event`` takes them — to ``dev``, then syncs (one report).

    :raises ValueError: an event of a type or shape the device does not take.
    """
    for event in events:
        kind, data = event.get("type"), event.get("data")
        if not isinstance(data, Mapping):
            raise ValueError(f"input event {event!r} has no data")
        if kind == "key":
            key = data["key"]
            value = key["data"]
            if key["type"] == "number":
                key_event(dev, int(value), bool(data["down"]))
            else:
                key_event(dev, str(value), bool(data["down"]))
        elif kind == "btn":
            _core.input_button(dev, str(data["button"]), bool(data["down"]))
        elif kind == "abs":
            _core.input_abs(dev, str(data["axis"]), int(data["value"]))
        else:
            raise ValueError(f"input event type '{kind}' is not taken by {dev.type_name}")
    _core.input_sync(dev)
