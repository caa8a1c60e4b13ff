"""Stubs of ``vmkit._core.devices``: bindings of the device models (vmkit-devices)."""

from typing import Any

from vmkit._core.memory import AddressSpace, MemoryRegion, RamBlock
from vmkit._core.qom import Object

__all__ = ["dma_space", "q35", "query_pci"]

def q35(
    block: RamBlock, machine: Object, hotplug: bool = True
) -> tuple[MemoryRegion, AddressSpace, AddressSpace]: ...
def query_pci() -> list[dict[str, Any]]: ...
def dma_space(obj: Object) -> AddressSpace | None: ...
