"""A small guest driver for intel-iommu, as a guest OS programs it: the
registers through the MMIO window at 0xfed90000 (4- and 8-byte accesses),
the root table, context entries and second-level page tables written
into guest RAM through the CPU's view of memory.

Legacy mode (VT-d): a root entry per bus points at a context table; a
context entry per device/function names the page table, its depth (AW:
1 for 3 levels / 39 bits, 2 for 4 levels / 48 bits) and the domain; each
level indexes 9 bits of the IOVA above bit 12.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guest_driver import AddressSpace
from vmkit.devices import DMAR_BASE

VER, CAP, ECAP = 0x00, 0x08, 0x10
GCMD, GSTS, RTADDR = 0x18, 0x1C, 0x20
FSTS, FECTL, FEDATA, FEADDR = 0x34, 0x38, 0x3C, 0x40
FRCD_LO, FRCD_HI = 0x220, 0x228
IVA, IOTLB = 0xF0, 0xF8  # ECAP.IRO = 0xf0: the IOTLB registers' offset

GCMD_TE = 1 << 31
GCMD_SRTP = 1 << 30
FSTS_PPF = 1 << 1
FECTL_IM = 1 << 31
FRCD_F = 1 << 63
IOTLB_IVT = 1 << 63
IOTLB_GLOBAL = 1 << 60
IOTLB_DOMAIN = 2 << 60

READ, WRITE = 1, 2
PAGE = 0x1000


@dataclass
class Iommu:
    """The register window in ``memory`` (the CPU's view)."""

    memory: AddressSpace
    base: int = DMAR_BASE

    def read(self, reg: int, size: int = 4) -> int:
        return self.memory.read_sized(self.base + reg, size)

    def write(self, reg: int, value: int, size: int = 4) -> None:
        self.memory.write_sized(self.base + reg, size, value)

    def command(self, bit: int) -> None:
        """Sets one GCMD bit on top of what GSTS says is on, then checks
        GSTS reports it (the one-bit-at-a-time protocol)."""
        # Linux's mask: the status bits that are also persistent commands.
        on = self.read(GSTS) & 0x96FF_FFFF
        self.write(GCMD, on | bit)
        assert self.read(GSTS) & bit, f"GSTS does not report {bit:#x}"

    def set_root_table(self, addr: int) -> None:
        self.write(RTADDR, addr, 8)
        self.command(GCMD_SRTP)

    def enable_translation(self) -> None:
        self.command(GCMD_TE)

    def fault_record(self) -> tuple[int, int, int, bool]:
        """FRCD 0: (page, source id, reason, F)."""
        lo, hi = self.read(FRCD_LO, 8), self.read(FRCD_HI, 8)
        return lo & ~0xFFF, hi & 0xFFFF, (hi >> 32) & 0xFF, bool(hi >> 63)

    def clear_fault(self) -> None:
        """Clears FRCD 0's F bit and FSTS (both write 1 to clear), as a
        fault handler does once it read the record."""
        self.write(FRCD_HI, FRCD_F, 8)
        self.write(FSTS, self.read(FSTS))

    def fault_event_to(self, address: int, data: int) -> None:
        """Points the fault event's MSI at ``address`` / ``data`` and
        unmasks it."""
        self.write(FEADDR, address)
        self.write(FEDATA, data)
        self.write(FECTL, 0)

    def invalidate_iotlb(self, domain: int | None = None) -> None:
        """Register-based IOTLB invalidation (queued invalidation off):
        global, or of one domain; waits for IVT to clear."""
        scope = IOTLB_GLOBAL if domain is None else IOTLB_DOMAIN | domain << 32
        self.write(IOTLB, IOTLB_IVT | scope, 8)
        assert not self.read(IOTLB, 8) & IOTLB_IVT, "IOTLB invalidation still busy"

    def registers(self) -> dict[str, int]:
        """What a migration must carry over: the status, root pointer,
        fault and fault-event registers."""
        names = {"GSTS": GSTS, "FSTS": FSTS, "FECTL": FECTL, "FEDATA": FEDATA, "FEADDR": FEADDR}
        out = {name: self.read(reg) for name, reg in names.items()}
        out |= {"RTADDR": self.read(RTADDR, 8)}
        out |= {"FRCD_LO": self.read(FRCD_LO, 8), "FRCD_HI": self.read(FRCD_HI, 8)}
        return out


@dataclass
class Tables:
    """Translation structures in guest RAM: the root table at ``root``,
    every further table on the next free page."""

    memory: AddressSpace
    root: int
    _next: int = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.root + PAGE
        self.memory.write(self.root, bytes(PAGE))

    def alloc(self) -> int:
        page, self._next = self._next, self._next + PAGE
        self.memory.write(page, bytes(PAGE))
        return page

    def _u64(self, addr: int) -> int:
        return int.from_bytes(self.memory.read(addr, 8), "little")

    def _put(self, addr: int, value: int) -> None:
        self.memory.write(addr, value.to_bytes(8, "little"))

    def context(self, bus: int, devfn: int, table: int, levels: int = 3, domain: int = 1) -> None:
        """A present context entry translating ``bus``:``devfn`` through
        the ``levels``-level table at ``table``."""
        entry = self.root + bus * 16
        ctx = self._u64(entry)
        if not ctx & 1:
            ctx = self.alloc() | 1
            self._put(entry, ctx)
        slot = (ctx & ~0xFFF) + devfn * 16
        self._put(slot, table | 1)
        self._put(slot + 8, (levels - 2) | domain << 8)

    def map(
        self, table: int, iova: int, gpa: int, perm: int = READ | WRITE, levels: int = 3
    ) -> None:
        """Maps the 4 KiB page at ``iova`` to ``gpa``."""
        t = table
        for level in range(levels, 1, -1):
            slot = t + ((iova >> (12 + 9 * (level - 1))) & 0x1FF) * 8
            pte = self._u64(slot)
            if not pte & 3:
                pte = self.alloc() | READ | WRITE
                self._put(slot, pte)
            t = pte & 0x000F_FFFF_FFFF_F000
        self._put(t + ((iova >> 12) & 0x1FF) * 8, (gpa & ~0xFFF) | perm)

    def _leaf(self, table: int, iova: int, levels: int) -> int | None:
        t = table
        for level in range(levels, 1, -1):
            pte = self._u64(t + ((iova >> (12 + 9 * (level - 1))) & 0x1FF) * 8)
            if not pte & 3:
                return None
            t = pte & 0x000F_FFFF_FFFF_F000
        return t + ((iova >> 12) & 0x1FF) * 8

    def unmap(self, table: int, iova: int, levels: int = 3) -> None:
        """Clears the leaf entry of the page at ``iova`` (the IOTLB may
        still hold it until invalidated)."""
        leaf = self._leaf(table, iova, levels)
        if leaf is not None:
            self._put(leaf, 0)


@dataclass
class IovaWindow:
    """A device's view of guest RAM through the IOMMU: every page the
    driver hands the device is mapped at its guest-physical address plus
    ``offset`` (far above RAM, so an untranslated access cannot land),
    in the ``levels``-level table ``table``. What a guest's DMA API does,
    with one fixed offset instead of an allocator."""

    tables: Tables
    table: int
    levels: int = 3
    offset: int = 0x40_0000_0000

    def to_device(self, gpa: int, size: int) -> int:
        """Maps ``size`` bytes at ``gpa``; returns the IOVA the device uses."""
        for page in range(gpa & ~0xFFF, gpa + max(size, 1), PAGE):
            self.tables.map(self.table, page + self.offset, page, levels=self.levels)
        return gpa + self.offset

    def to_cpu(self, iova: int) -> int:
        """The guest-physical address of ``iova``."""
        return iova - self.offset

    def unmap(self, iova: int) -> None:
        """Removes the page at ``iova`` from the table."""
        self.tables.unmap(self.table, iova, self.levels)

    def bind(self, memory: AddressSpace) -> None:
        """Writes the tables through ``memory`` from now on."""
        self.tables.memory = memory

    def unbind(self) -> None:
        """Drops the handle on the machine's memory."""
        del self.tables.memory


def enable_bus_master(io: AddressSpace, slot: int) -> None:
    """Command.MASTER (and memory decoding) of 00:``slot``.0 through
    0xCF8/0xCFC."""
    io.write_sized(0xCF8, 4, 0x8000_0004 | slot << 11)
    io.write_sized(0xCFC, 2, 0x6)
