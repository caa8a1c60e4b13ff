"""A small guest driver for the tests: it programs the machine's PCI
functions and the xHCI controller only through what a guest OS has —
port I/O (0xCF8/0xCFC), MMIO and guest RAM the device reaches by DMA.

:class:`Pci` enumerates and configures functions through 0xCF8/0xCFC;
:class:`XhciDriver` brings a ``qemu-xhci`` up (DCBAAP, command ring, event
ring, run), handles port changes, enables and addresses slots, runs control
transfers and interrupt transfers, as Linux's xhci-hcd does in outline.
Behind an IOMMU the driver hands every structure to the controller as an
IOVA (see :class:`DmaMap` and ``iommu_driver.IovaWindow``), as a guest's
DMA API does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol


class AddressSpace(Protocol):
    """What the drivers use of an address space: vmkit's
    :class:`vmkit._core.memory.AddressSpace`, or a QEMU's reached through
    qtest (``qmp_peers.QtestSpace``)."""

    def read(self, addr: int, length: int) -> bytes: ...
    def write(self, addr: int, data: bytes) -> None: ...
    def read_sized(self, addr: int, size: int) -> int: ...
    def write_sized(self, addr: int, size: int, value: int) -> None: ...


PCI_VENDOR = 0x00
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_CLASS = 0x08
PCI_BAR0 = 0x10
PCI_CAP_PTR = 0x34
CMD_MEM = 0x2
CMD_MASTER = 0x4
STATUS_CAP_LIST = 0x10
CAP_MSIX = 0x11

# TRB types and fields (xHCI 1.2, section 6.4).
TRB_NORMAL = 1
TRB_SETUP = 2
TRB_DATA = 3
TRB_STATUS = 4
TRB_LINK = 6
TRB_ENABLE_SLOT = 9
TRB_ADDRESS_DEVICE = 11
TRB_CONFIGURE_EP = 12
TRB_NOOP_CMD = 23
EV_TRANSFER = 32
EV_COMMAND_COMPLETION = 33
EV_PORT_STATUS_CHANGE = 34
TRB_CYCLE = 1 << 0
TRB_TOGGLE = 1 << 1
TRB_ISP = 1 << 2
TRB_IOC = 1 << 5
TRB_IDT = 1 << 6
CC_SUCCESS = 1
CC_SHORT_PACKET = 13

# PORTSC.
PORT_CCS = 1 << 0
PORT_PED = 1 << 1
PORT_PR = 1 << 4
PORT_PP = 1 << 9
PORT_CHANGES = 0x7F << 17  # CSC .. CEC: write 1 to clear
PORT_SPEED_SHIFT = 10

#: Where the driver's structures live in guest RAM.
DMA_BASE = 0x0010_0000
RING_TRBS = 32
PAGE = 0x1000


@dataclass(frozen=True)
class Event:
    """One event TRB."""

    kind: int
    param: int
    status: int
    control: int

    @property
    def code(self) -> int:
        """The completion code."""
        return self.status >> 24

    @property
    def slot(self) -> int:
        """The slot id (command completion and transfer events)."""
        return self.control >> 24

    @property
    def port(self) -> int:
        """The port id (port status change events)."""
        return (self.param >> 24) & 0xFF


class DmaMap(Protocol):
    """How the driver hands guest RAM to the device: the address the
    device uses for a guest-physical range, and back."""

    def to_device(self, gpa: int, size: int) -> int: ...

    def to_cpu(self, addr: int) -> int: ...

    def bind(self, memory: AddressSpace) -> None: ...

    def unbind(self) -> None: ...


class Direct:
    """No IOMMU translates: the device uses guest-physical addresses."""

    def to_device(self, gpa: int, size: int) -> int:
        """``gpa`` itself."""
        return gpa

    def to_cpu(self, addr: int) -> int:
        """``addr`` itself."""
        return addr

    def bind(self, memory: AddressSpace) -> None:
        """Nothing to hold."""

    def unbind(self) -> None:
        """Nothing held."""


class Pci:
    """Configuration space through ports 0xCF8/0xCFC (bus 0)."""

    def __init__(self, io: AddressSpace) -> None:
        self.io = io

    def _address(self, slot: int, func: int, offset: int) -> None:
        self.io.write_sized(0xCF8, 4, 0x8000_0000 | slot << 11 | func << 8 | (offset & 0xFC))

    def read(self, slot: int, offset: int, size: int = 4, func: int = 0) -> int:
        """Reads configuration space."""
        self._address(slot, func, offset)
        return self.io.read_sized(0xCFC + (offset & 3), size)

    def write(self, slot: int, offset: int, size: int, value: int, func: int = 0) -> None:
        """Writes configuration space."""
        self._address(slot, func, offset)
        self.io.write_sized(0xCFC + (offset & 3), size, value)

    def find(self, class_code: int) -> int | None:
        """The slot of the first function of ``class_code`` (24 bits) on bus 0."""
        for slot in range(32):
            if self.read(slot, PCI_VENDOR, 2) == 0xFFFF:
                continue
            if self.read(slot, PCI_CLASS) >> 8 == class_code:
                return slot
        return None

    def size_bar64(self, slot: int, bar: int) -> int:
        """Sizes a 64-bit memory BAR by the all-ones probe."""
        at = PCI_BAR0 + 4 * bar
        low, high = self.read(slot, at), self.read(slot, at + 4)
        self.write(slot, at, 4, 0xFFFF_FFFF)
        self.write(slot, at + 4, 4, 0xFFFF_FFFF)
        mask = self.read(slot, at + 4) << 32 | (self.read(slot, at) & ~0xF & 0xFFFF_FFFF)
        self.write(slot, at, 4, low)
        self.write(slot, at + 4, 4, high)
        return (~mask + 1) & 0xFFFF_FFFF_FFFF_FFFF

    def capability(self, slot: int, cap_id: int) -> int | None:
        """The offset of capability ``cap_id``, walking the list."""
        if not self.read(slot, PCI_STATUS, 2) & STATUS_CAP_LIST:
            return None
        at = self.read(slot, PCI_CAP_PTR, 1) & 0xFC
        seen = 0
        while at and seen < 48:
            if self.read(slot, at, 1) == cap_id:
                return at
            at = self.read(slot, at + 1, 1) & 0xFC
            seen += 1
        return None


class Ring:
    """A producer ring (command or transfer) in guest RAM with a Link TRB
    at its end that toggles the cycle state."""

    def __init__(self, driver: XhciDriver, base: int) -> None:
        # The driver's memory, not a handle of its own: a driver can be
        # unbound from one machine and bound to another.
        self.driver, self.base, self.index, self.cycle = driver, base, 0, 1
        driver.write(base, bytes(16 * RING_TRBS))

    def push(self, param: int, status: int, control: int) -> int:
        """Queues one TRB (its cycle bit set for the consumer); returns
        its address (as the device sees it)."""
        drv = self.driver
        addr = self.base + 16 * self.index
        drv.write(addr, struct.pack("<QII", param, status, control | self.cycle))
        self.index += 1
        if self.index == RING_TRBS - 1:
            link = self.base + 16 * self.index
            drv.write(
                link, struct.pack("<QII", self.base, 0, TRB_LINK << 10 | TRB_TOGGLE | self.cycle)
            )
            self.index, self.cycle = 0, self.cycle ^ 1
        return addr


class XhciDriver:
    """Drives the first ``qemu-xhci`` on bus 0 with BAR0 at ``bar0``.

    Every structure the controller reaches by DMA is allocated in guest
    RAM and handed to it through ``dma`` (:class:`Direct` by default;
    an :class:`iommu_driver.IovaWindow` makes the controller use IOVAs the
    IOMMU translates). Addresses the driver keeps — ring bases, buffers,
    what :meth:`queue_in` returns — are the device's; :meth:`read` and
    :meth:`write` reach them from the CPU."""

    def __init__(
        self,
        mem: AddressSpace,
        io: AddressSpace,
        *,
        bar0: int = 0xFEBF_0000,
        msix: bool = True,
        dma: DmaMap | None = None,
    ) -> None:
        self.mem, self.pci = mem, Pci(io)
        self.dma: DmaMap = dma if dma is not None else Direct()
        slot = self.pci.find(0x0C0330)
        if slot is None:
            raise LookupError("no xHCI controller on bus 0")
        self.slot = slot
        self.bar_size = self.pci.size_bar64(slot, 0)
        self.bar0 = bar0
        self.pci.write(slot, PCI_BAR0, 4, bar0 | 0x4)  # 64-bit memory BAR
        self.pci.write(slot, PCI_BAR0 + 4, 4, 0)
        self.pci.write(slot, PCI_COMMAND, 2, CMD_MEM | CMD_MASTER)
        self.msix_vectors = 0
        if msix:
            self._enable_msix()
        self._next = DMA_BASE

    # ----- plumbing ------------------------------------------------------

    def unbind(self) -> None:
        """Drops the handles on the machine's address spaces (the driver's
        own state — rings, positions — stays), so the machine can go."""
        del self.mem
        del self.pci.io
        self.dma.unbind()

    def bind(self, mem: AddressSpace, io: AddressSpace) -> None:
        """Goes on with the machine behind ``mem`` and ``io`` (a restored
        or migrated one)."""
        self.mem, self.pci.io = mem, io
        self.dma.bind(mem)

    def alloc(self, size: int, align: int = 64) -> int:
        """Guest RAM for the driver's structures (zeroed), handed to the
        device: returns the device's address of it."""
        addr = (self._next + align - 1) & ~(align - 1)
        self._next = addr + size
        self.mem.write(addr, bytes(size))
        return self.dma.to_device(addr, size)

    def read(self, addr: int, size: int) -> bytes:
        """Reads ``size`` bytes at the device address ``addr`` (through the CPU)."""
        return self.mem.read(self.dma.to_cpu(addr), size)

    def write(self, addr: int, data: bytes) -> None:
        """Writes ``data`` at the device address ``addr`` (through the CPU)."""
        self.mem.write(self.dma.to_cpu(addr), data)

    def r32(self, offset: int) -> int:
        """A 32-bit register of BAR0."""
        return self.mem.read_sized(self.bar0 + offset, 4)

    def w32(self, offset: int, value: int) -> None:
        """Writes a 32-bit register of BAR0."""
        self.mem.write_sized(self.bar0 + offset, 4, value)

    def w64(self, offset: int, value: int) -> None:
        """Writes a 64-bit register as two dwords, low first."""
        self.w32(offset, value & 0xFFFF_FFFF)
        self.w32(offset + 4, value >> 32)

    def _enable_msix(self) -> None:
        cap = self.pci.capability(self.slot, CAP_MSIX)
        if cap is None:
            raise LookupError("no MSI-X capability")
        control = self.pci.read(self.slot, cap + 2, 2)
        self.msix_vectors = (control & 0x7FF) + 1
        table = self.pci.read(self.slot, cap + 4)
        assert table & 7 == 0, "table in BAR0"
        self.msix_table = table & ~7
        for v in range(self.msix_vectors):
            entry = self.bar0 + self.msix_table + 16 * v
            self.mem.write_sized(entry, 4, 0xFEE0_0000)
            self.mem.write_sized(entry + 4, 4, 0)
            self.mem.write_sized(entry + 8, 4, 0x4040 + v)
            self.mem.write_sized(entry + 12, 4, 0)  # unmasked
        self.pci.write(self.slot, cap + 2, 2, control | 0x8000)

    # ----- bring-up ------------------------------------------------------

    def start(self, max_slots: int = 8) -> None:
        """Resets and starts the controller: DCBAAP, command ring, event
        ring of interrupter 0, run with interrupts enabled."""
        self.caplength = self.mem.read_sized(self.bar0, 1)
        self.hcsparams1 = self.r32(0x04)
        self.hccparams1 = self.r32(0x10)
        self.ports = self.hcsparams1 >> 24
        self.ctx_size = 64 if self.hccparams1 & 0x4 else 32
        self.db = self.r32(0x14) & ~0x3
        self.rt = self.r32(0x18) & ~0x1F
        op = self.op = self.caplength
        self.w32(op + 0x00, 0x2)  # HCRST
        assert self.r32(op + 0x00) & 0x2 == 0 and self.r32(op + 0x04) & 0x1  # halted
        self.w32(op + 0x38, max_slots)  # CONFIG
        self.dcbaa = self.alloc(8 * (max_slots + 1))
        self.w64(op + 0x30, self.dcbaa)
        # The command and event rings get a page each, so that one can be
        # unmapped in the IOMMU without touching anything else.
        self.cmd = Ring(self, self.alloc(PAGE, PAGE))
        self.w64(op + 0x18, self.cmd.base | 1)  # CRCR, RCS
        self.ev_base = self.alloc(PAGE, PAGE)
        self.erst = self.alloc(16)
        self.write(self.erst, struct.pack("<QII", self.ev_base, RING_TRBS, 0))
        self.ev_index, self.ev_cycle = 0, 1
        ir0 = self.rt + 0x20
        self.w32(ir0 + 0x08, 1)  # ERSTSZ
        self.w64(ir0 + 0x18, self.ev_base)  # ERDP
        self.w64(ir0 + 0x10, self.erst)  # ERSTBA
        self.w32(ir0 + 0x00, 0x2)  # IMAN.IE
        self.w32(op + 0x00, 0x1 | 0x4)  # RS | INTE
        assert self.r32(op + 0x04) & 0x1 == 0, "running"

    # ----- events --------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event on the ring, consumed (ERDP moves, EHB cleared)."""
        addr = self.ev_base + 16 * self.ev_index
        param, status, control = struct.unpack("<QII", self.read(addr, 16))
        if control & 1 != self.ev_cycle:
            return None
        self.ev_index += 1
        if self.ev_index == RING_TRBS:
            self.ev_index, self.ev_cycle = 0, self.ev_cycle ^ 1
        self.w64(self.rt + 0x20 + 0x18, (self.ev_base + 16 * self.ev_index) | 0x8)
        return Event((control >> 10) & 0x3F, param, status, control)

    def events(self) -> list[Event]:
        """Every pending event."""
        out = []
        while (ev := self.next_event()) is not None:
            out.append(ev)
        return out

    def expect(self, kind: int) -> Event:
        """The next event, which must be of ``kind``."""
        ev = self.next_event()
        if ev is None or ev.kind != kind:
            raise AssertionError(f"expected an event of type {kind}, got {ev}")
        return ev

    # ----- ports ---------------------------------------------------------

    def portsc(self, port: int) -> int:
        """PORTSC of ``port`` (1-based)."""
        return self.r32(self.op + 0x400 + 0x10 * (port - 1))

    def reset_port(self, port: int) -> int:
        """Resets ``port``: clears its change bits, sets PR; returns the
        port's speed (PORTSC speed field) once enabled."""
        at = self.op + 0x400 + 0x10 * (port - 1)
        self.w32(at, PORT_PP | PORT_CHANGES)
        self.w32(at, PORT_PP | PORT_PR)
        sc = self.r32(at)
        assert sc & PORT_PED and sc & PORT_CCS, f"port {port} not enabled: {sc:#x}"
        return (sc >> PORT_SPEED_SHIFT) & 0xF

    # ----- commands ------------------------------------------------------

    def ring_doorbell(self, target: int, slot: int = 0) -> None:
        """Doorbell ``slot`` (0: the command ring) with ``target``."""
        self.w32(self.db + 4 * slot, target)

    def command(self, param: int, status: int, control: int) -> Event:
        """Runs one command; returns its completion event."""
        self.cmd.push(param, status, control)
        self.ring_doorbell(0)
        return self.expect(EV_COMMAND_COMPLETION)

    def enable_slot(self) -> int:
        """Enable Slot; returns the slot id."""
        ev = self.command(0, 0, TRB_ENABLE_SLOT << 10)
        assert ev.code == CC_SUCCESS, ev
        return ev.slot

    def _ctx(self, base: int, index: int) -> int:
        return base + self.ctx_size * index

    def address_device(self, slot: int, port: int, speed: int) -> Ring:
        """Address Device with an input context for ``port``; returns the
        default control endpoint's transfer ring."""
        out_ctx = self.alloc(32 * self.ctx_size)
        self.write(self.dcbaa + 8 * slot, struct.pack("<Q", out_ctx))
        inp = self.alloc(33 * self.ctx_size)
        ep0 = Ring(self, self.alloc(16 * RING_TRBS))
        self.write(inp, struct.pack("<II", 0, 0x3))  # add A0 (slot), A1 (EP0)
        slot_ctx = self._ctx(inp, 1)
        self.write(slot_ctx, struct.pack("<II", speed << 20 | 1 << 27, port << 16))
        max_packet = {1: 64, 2: 8, 3: 64, 4: 512}.get(speed, 64)
        ep0_ctx = self._ctx(inp, 2)
        self.write(
            ep0_ctx, struct.pack("<IIQI", 0, 3 << 1 | 4 << 3 | max_packet << 16, ep0.base | 1, 8)
        )
        ev = self.command(inp, 0, TRB_ADDRESS_DEVICE << 10 | slot << 24)
        assert ev.code == CC_SUCCESS, ev
        self.inputs = getattr(self, "inputs", {})
        self.inputs[slot] = inp
        return ep0

    def control_in(self, slot: int, ep0: Ring, setup: bytes, length: int) -> bytes:
        """A control transfer with an IN data stage of ``length`` bytes."""
        buf = self.alloc(max(length, 8))
        (raw,) = struct.unpack("<Q", setup)
        ep0.push(raw, 8, TRB_IDT | TRB_SETUP << 10 | 3 << 16)
        ep0.push(buf, length, TRB_DATA << 10 | 1 << 16)
        ep0.push(0, 0, TRB_IOC | TRB_STATUS << 10)
        self.ring_doorbell(1, slot)
        ev = self.expect(EV_TRANSFER)
        assert ev.code in (CC_SUCCESS, CC_SHORT_PACKET), ev
        residue = ev.status & 0xFFFFFF
        return self.read(buf, length - residue if ev.code == CC_SHORT_PACKET else length)

    def control_out(self, slot: int, ep0: Ring, setup: bytes) -> None:
        """A control transfer without a data stage."""
        (raw,) = struct.unpack("<Q", setup)
        ep0.push(raw, 8, TRB_IDT | TRB_SETUP << 10)
        ep0.push(0, 0, TRB_IOC | TRB_STATUS << 10 | 1 << 16)
        self.ring_doorbell(1, slot)
        ev = self.expect(EV_TRANSFER)
        assert ev.code == CC_SUCCESS, ev

    def configure_interrupt_in(self, slot: int, ep: int, max_packet: int, interval: int) -> Ring:
        """Configure Endpoint for interrupt IN endpoint ``ep``; returns its ring."""
        dci = 2 * ep + 1
        inp = self.inputs[slot]
        ring = Ring(self, self.alloc(16 * RING_TRBS))
        self.write(inp, struct.pack("<II", 0, 1 | 1 << dci))
        slot_ctx = self._ctx(inp, 1)
        (dword0,) = struct.unpack("<I", self.read(slot_ctx, 4))
        self.write(slot_ctx, struct.pack("<I", (dword0 & ~(0x1F << 27)) | dci << 27))
        ep_ctx = struct.pack(
            "<IIQI", interval << 16, 3 << 1 | 7 << 3 | max_packet << 16, ring.base | 1, 8
        )
        self.write(self._ctx(inp, 1 + dci), ep_ctx)
        ev = self.command(inp, 0, TRB_CONFIGURE_EP << 10 | slot << 24)
        assert ev.code == CC_SUCCESS, ev
        return ring

    def queue_in(self, slot: int, ep: int, ring: Ring, length: int) -> int:
        """Queues a Normal TRB for ``length`` bytes on an IN endpoint and
        rings its doorbell; returns the buffer's address."""
        buf = self.alloc(max(length, 8))
        ring.push(buf, length, TRB_IOC | TRB_ISP | TRB_NORMAL << 10)
        self.ring_doorbell(2 * ep + 1, slot)
        return buf


def get_descriptor(kind: int, index: int, length: int) -> bytes:
    """A standard GET_DESCRIPTOR setup packet."""
    return struct.pack("<BBHHH", 0x80, 6, kind << 8 | index, 0, length)


def set_configuration(value: int) -> bytes:
    """A standard SET_CONFIGURATION setup packet."""
    return struct.pack("<BBHHH", 0x00, 9, value, 0, 0)
