"""A machine whose ``qemu-xhci`` does all its DMA through ``intel-iommu``:
the guest driver (``guest_driver``) hands the controller IOVAs that the
IOMMU driver (``iommu_driver``) maps in second-level tables; the tablet
is addressed and configured and an interrupt transfer waits for input.

Also the source side of a live migration run in a process of its own
(one machine per process): :func:`main` builds the scene, leaves a fault
recorded and a tablet report pending, writes the driver's state
(pickled) for the destination and migrates to the URI it is given.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from guest_driver import (
    CC_SUCCESS,
    EV_COMMAND_COMPLETION,
    EV_PORT_STATUS_CHANGE,
    EV_TRANSFER,
    PAGE,
    TRB_NOOP_CMD,
    Ring,
    XhciDriver,
    set_configuration,
)
from iommu_driver import Iommu, IovaWindow, Tables
from vmkit import devices, qom
from vmkit.machine import Machine
from vmkit.migration import Precopy

#: The translation structures' home in guest RAM (the driver's own
#: structures start at 1 MiB and stay far below).
ROOT = 0x0200_0000
DOMAIN = 5
#: Where the IOMMU's fault event goes: the MSI window.
FAULT_MSI = (0xFEE0_0000, 0x4099)
GUARD = 60.0  # seconds: only so that a broken run fails instead of hanging


@dataclass
class Scene:
    """The driver's side of the machine: what a guest keeps in its memory."""

    drv: XhciDriver
    iommu: Iommu
    window: IovaWindow
    slot: int
    ep0: Ring
    ring: Ring
    buf: int

    @property
    def source_id(self) -> int:
        """The controller's requester id (bus 0): its devfn."""
        return self.drv.slot << 3

    def unbind(self) -> None:
        """Drops every handle on the machine (the state stays)."""
        self.drv.unbind()
        del self.iommu.memory

    def bind(self, vm: Machine) -> None:
        """Goes on with ``vm``."""
        self.drv.bind(vm.address_space, vm.io_space)
        self.iommu.memory = vm.address_space

    def noop(self) -> None:
        """Queues a No-op command and rings the command doorbell."""
        self.drv.cmd.push(0, 0, TRB_NOOP_CMD << 10)
        self.drv.ring_doorbell(0)


def add_devices(vm: Machine, levels: int, *, tablet: bool = True) -> None:
    """The devices, in the order (and with the ids) source and destination
    share: the IOMMU first (it must precede what it translates for); a
    4-level table needs ``aw-bits=48`` (SAGAW then offers 48 bits)."""
    vm.device_add("intel-iommu", id="iommu0", **({"aw-bits": 48} if levels == 4 else {}))
    vm.device_add("qemu-xhci", id="xhci")
    if tablet:
        add_tablet(vm)


def add_tablet(vm: Machine) -> None:
    """The tablet on the controller's first USB 2 port."""
    vm.device_add("usb-tablet", id="tab", bus="xhci.0")


def setup(vm: Machine, levels: int = 3) -> Scene:
    """Builds the scene in ``vm`` (devices added here): tables, context
    entry for the controller, translation on, then the xHCI brought up
    and the tablet readied through IOVAs."""
    add_devices(vm, levels, tablet=False)
    iommu = Iommu(vm.address_space)
    tables = Tables(vm.address_space, ROOT)
    window = IovaWindow(tables, tables.alloc(), levels)
    drv = XhciDriver(vm.address_space, vm.io_space, dma=window)
    tables.context(0, drv.slot << 3, window.table, levels=levels, domain=DOMAIN)
    iommu.fault_event_to(*FAULT_MSI)
    iommu.set_root_table(ROOT)
    iommu.enable_translation()
    drv.start()
    add_tablet(vm)  # plugged into the running controller: a port change event
    port = drv.expect(EV_PORT_STATUS_CHANGE).port
    speed = drv.reset_port(port)
    drv.expect(EV_PORT_STATUS_CHANGE)
    slot = drv.enable_slot()
    ep0 = drv.address_device(slot, port, speed)
    drv.control_out(slot, ep0, set_configuration(1))
    ring = drv.configure_interrupt_in(slot, 1, 8, 7)
    buf = drv.queue_in(slot, 1, ring, 6)
    return Scene(drv, iommu, window, slot, ep0, ring, buf)


def command_ring_fault(scene: Scene) -> None:
    """A fault the controller survives: the command ring's page unmapped
    (and the IOTLB invalidated) when a No-op is rung in. The fetch faults
    — recorded as a read by the controller of that page — and, as QEMU's
    ring fetch does on a failed read, command processing just stops: no
    completion, no host controller error. Mapped again, the next doorbell
    runs the command."""
    drv, iommu = scene.drv, scene.iommu
    cmd_page = drv.cmd.base & ~(PAGE - 1)
    scene.window.unmap(cmd_page)
    iommu.invalidate_iotlb(DOMAIN)
    scene.noop()
    assert drv.events() == []
    assert not drv.r32(drv.op + 0x04) & (1 << 12), "no host controller error"
    page, source, reason, pending = iommu.fault_record()
    assert (page, source, reason, pending) == (cmd_page, scene.source_id, 0x6, True)
    scene.window.to_device(scene.window.to_cpu(cmd_page), PAGE)
    drv.ring_doorbell(0)
    ev = drv.expect(EV_COMMAND_COMPLETION)
    assert ev.code == CC_SUCCESS, ev


#: The tablet position reported while no transfer waits: it stays queued
#: in the device (its ``usb-ptr`` section carries it).
PENDING = (0x3333, 0x0444)


def leave_a_report_pending(scene: Scene) -> None:
    """The waiting transfer completes on a first move; a second move
    finds no transfer queued, so its report waits in the tablet."""
    tablet = qom.resolve_path("/machine/peripheral/tab")
    devices.tablet_move(tablet, 0x1111, 0x2222)
    assert scene.drv.expect(EV_TRANSFER).slot == scene.slot
    devices.tablet_move(tablet, *PENDING)
    assert scene.drv.events() == []


def main() -> None:
    """The migration source: ``URI STATE LEVELS``."""
    uri, state, levels = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    with Machine(memory="64M") as vm:
        scene = setup(vm, levels)
        command_ring_fault(scene)  # FSTS/FRCD hold a record when it goes
        leave_a_report_pending(scene)
        facts = {"registers": scene.iommu.registers()}
        vm.cont()
        scene.unbind()
        state.write_bytes(pickle.dumps((scene, facts)))
        result = vm.migrate(Precopy(uri), timeout=GUARD)
        print(json.dumps({"phase": result["phase"], "status": str(vm.status)}))
        del scene


def report_bytes(x: int, y: int) -> bytes:
    """The tablet's report for a move to (x, y), buttons up."""
    return struct.pack("<BHH", 0, x, y)
