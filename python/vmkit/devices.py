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

PCI device types (``pci-testdev``) take QEMU's ``addr`` ("SS" or "SS.F",
-1 for the first free slot) and ``multifunction``; their sections are
named after their address (``0000:00:03.0/pci-testdev``).
:func:`query_pci` answers QMP ``query-pci``.
"""

from __future__ import annotations

from typing import Any

from vmkit._core import devices as _core
from vmkit._core.memory import AddressSpace, MemoryRegion, RamBlock
from vmkit._core.qom import Object

__all__ = ["DMAR_BASE", "dma_space", "q35", "query_pci"]


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
