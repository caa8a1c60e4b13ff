"""``qemu-xhci`` behind ``intel-iommu``: the guest driver maps every
structure the controller reaches (DCBAA, command and event rings,
contexts, transfer rings, report buffers) at IOVAs far above RAM, so the
tablet works end to end only through the translation, and its bytes land
at the translated guest-physical addresses. Translation faults are
recorded (FSTS / FRCD: the controller's source id, the page, the reason)
and signalled by the fault event's MSI; the controller reacts as QEMU
7.2's does. The whole, mid-operation — rings half consumed, a fault recorded, a
tablet report pending in the device (its ``usb-ptr`` section) — survives
save/restore and a live migration to a machine in another process.

What the controller does on a DMA fault (QEMU 7.2's ``hcd-xhci.c``, since
its DMA accesses are checked): an event it cannot write is a host
controller error (USBSTS.HCE; the event is lost); a command ring it
cannot read ends command processing silently (no completion, no error).
One difference, on purpose not tested: an IN transfer buffer the IOMMU
refuses — QEMU maps it through its bounce buffer, completes the transfer
with success and drops the data (its write-back faults); the model probes
the buffer before the device runs, records a read fault, and leaves the
transfer queued without an event.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest_driver import (
    CC_SHORT_PACKET,
    CC_SUCCESS,
    EV_COMMAND_COMPLETION,
    EV_TRANSFER,
    get_descriptor,
)
from iommu_driver import FSTS, FSTS_PPF, GCMD_TE, GSTS
from qmp_peers import short_dir
from vmkit import devices, migration, qom
from vmkit.machine import Machine
from vmkit.migration import Listener
from xhci_iommu_scene import (
    DOMAIN,
    FAULT_MSI,
    GUARD,
    PENDING,
    ROOT,
    Scene,
    add_devices,
    command_ring_fault,
    leave_a_report_pending,
    report_bytes,
    setup,
)

pytestmark = pytest.mark.usefixtures("no_machine")

HCE = 1 << 12
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def vm() -> Iterator[Machine]:
    m = Machine(memory="64M")
    try:
        devices.msi_clear()
        yield m
    finally:
        gc.collect()  # a driver's rings and the driver refer to each other
        m.close()


@pytest.mark.parametrize("levels", [3, 4])
def test_the_tablet_works_end_to_end_through_the_iommu(vm: Machine, levels: int) -> None:
    scene = setup(vm, levels)
    drv, window = scene.drv, scene.window
    assert scene.iommu.read(GSTS) & GCMD_TE
    assert drv.dcbaa >= window.offset and scene.buf >= window.offset, "IOVAs, beyond RAM"
    tablet = qom.resolve_path("/machine/peripheral/tab")
    devices.tablet_move(tablet, 0x1234, 0x0567)
    ev = drv.expect(EV_TRANSFER)
    assert ev.slot == scene.slot and ev.code in (CC_SUCCESS, CC_SHORT_PACKET)
    # The report landed where the IOVA is mapped: at the guest-physical page.
    assert vm.ram.read(window.to_cpu(scene.buf), 5) == report_bytes(0x1234, 0x0567)
    assert devices.msi_messages()[-1] == (0xFEE0_0000, 0x4040)  # the xHCI's vector 0
    # A control IN transfer through the tables too: the device descriptor.
    desc = drv.control_in(scene.slot, scene.ep0, get_descriptor(1, 0, 18), 18)
    assert desc[:2] == b"\x12\x01" and desc[8:12] == bytes([0x27, 0x06, 0x01, 0x00])
    assert scene.iommu.read(FSTS) == 0, "no fault on the way"


def test_a_fault_on_the_event_ring_is_recorded_and_is_a_host_controller_error(
    vm: Machine,
) -> None:
    scene = setup(vm)
    drv, iommu = scene.drv, scene.iommu
    ev_page = drv.ev_base
    # Unmapped, but the IOTLB still holds the translation: the stale entry
    # serves the next event (a guest must invalidate; this shows it cached).
    scene.window.unmap(ev_page)
    scene.noop()
    assert drv.expect(EV_COMMAND_COMPLETION).code == CC_SUCCESS
    assert iommu.read(FSTS) == 0
    devices.msi_clear()
    iommu.invalidate_iotlb(DOMAIN)
    scene.noop()
    assert drv.events() == [], "the completion event was not written"
    assert drv.r32(drv.op + 0x04) & HCE, "USBSTS.HCE"
    assert iommu.read(FSTS) & FSTS_PPF
    # The page, the controller (00:01.0), a write without a mapping (VTD_FR_WRITE).
    assert iommu.fault_record() == (ev_page, scene.source_id, 0x5, True)
    assert scene.source_id == 0x08
    # The fault event's MSI, then the interrupter's (QEMU raises it after
    # the lost event too).
    assert devices.msi_messages() == [FAULT_MSI, (0xFEE0_0000, 0x4040)]


def test_a_fault_on_the_command_ring_stops_commands_until_mapped_again(vm: Machine) -> None:
    scene = setup(vm)
    command_ring_fault(scene)
    assert devices.msi_messages()[-2] == FAULT_MSI  # then the completion's vector 0
    scene.iommu.clear_fault()
    assert scene.iommu.read(FSTS) == 0
    assert not scene.iommu.fault_record()[3]


def goes_on(vm: Machine, scene: Scene, registers: dict[str, int]) -> None:
    """The destination's driver continues where the source's stopped:
    the IOMMU registers are the source's (a fault still recorded); the
    report left pending in the tablet arrives as soon as a transfer is
    queued, the next one on new input, both into translated buffers; the
    next command completes, and a new fault is recorded."""
    drv, iommu, to_cpu = scene.drv, scene.iommu, scene.window.to_cpu
    devices.msi_clear()
    assert iommu.registers() == registers
    assert registers["GSTS"] & GCMD_TE and registers["RTADDR"] == ROOT
    assert registers["FSTS"] & FSTS_PPF and registers["FRCD_HI"] >> 63
    iommu.clear_fault()
    assert drv.portsc(5) & 0x3 == 0x3, "connected and enabled"
    buf = drv.queue_in(scene.slot, 1, scene.ring, 6)
    assert drv.expect(EV_TRANSFER).slot == scene.slot
    assert vm.ram.read(to_cpu(buf), 5) == report_bytes(*PENDING)
    buf = drv.queue_in(scene.slot, 1, scene.ring, 6)
    assert drv.events() == [], "nothing more queued in the tablet"
    devices.tablet_move(qom.resolve_path("/machine/peripheral/tab"), 0x7FFF, 0x10)
    assert drv.expect(EV_TRANSFER).slot == scene.slot
    assert vm.ram.read(to_cpu(buf), 5) == report_bytes(0x7FFF, 0x10)
    assert devices.msi_messages() == [(0xFEE0_0000, 0x4040)] * 2
    scene.noop()
    assert drv.expect(EV_COMMAND_COMPLETION).code == CC_SUCCESS
    # The IOTLB is a cache, not state (QEMU's section has none): the
    # destination walks the tables again; a new fault is recorded as ever.
    scene.window.unmap(drv.ev_base)
    iommu.invalidate_iotlb()
    scene.noop()
    assert drv.r32(drv.op + 0x04) & HCE
    assert iommu.fault_record() == (drv.ev_base, scene.source_id, 0x5, True)
    assert devices.msi_messages()[-2] == FAULT_MSI


def test_save_and_restore_with_the_iommu_translating(tmp_path: Path) -> None:
    stream = tmp_path / "vm.stream"
    with Machine(memory="64M") as vm:
        scene = setup(vm)
        command_ring_fault(scene)
        leave_a_report_pending(scene)
        registers = scene.iommu.registers()
        vm.save(stream)
        scene.unbind()
    report = {d["idstr"]: d for d in migration.analyze(stream)["devices"]}
    ids = list(report)
    assert ids.index("iommu-intel") < ids.index("0000:00:01.0/xhci")
    # The tablet's section ("tab" sorts before "xhci": it comes first)
    # loads into the device the controller's section then finds.
    assert "0000:00:01.0/1/usb-ptr" in ids
    hid = report["0000:00:01.0/1/usb-ptr"]["fields"]["hid"]
    assert hid["n"] == 1
    queued = hid["ptr.queue"][hid["head"]]
    assert (queued["xdx"], queued["ydy"]) == PENDING
    gc.collect()
    with Machine(memory="64M") as vm:
        add_devices(vm, 3)
        vm.restore(stream)
        scene.bind(vm)
        goes_on(vm, scene, registers)
        scene.unbind()


@pytest.mark.parametrize("levels", [3, 4])
def test_live_migration_mid_operation_with_the_iommu_translating(
    tmp_path: Path, levels: int
) -> None:
    """The source runs in a process of its own (one machine per process),
    readies the scene, records a fault and migrates live into this
    process's machine, waiting at a listener as ``-incoming`` does; the
    driver's state follows in a file."""
    state = tmp_path / "driver.pickle"
    with short_dir() as d:
        listener = Listener(f"unix:{d / 'in.sock'}")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
        code = "import xhci_iommu_scene as s; s.main()"
        source = subprocess.Popen(
            [sys.executable, "-c", code, listener.uri, str(state), str(levels)],
            cwd=TESTS,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with Machine(memory="64M") as vm:
                add_devices(vm, levels)
                stats = vm.incoming(listener, timeout=GUARD)
                out, err = source.communicate(timeout=GUARD)
                assert source.returncode == 0, err
                assert '"phase": "completed"' in out and "postmigrate" in out, out
                assert stats["bytes"] > 0
                vm.cont()
                scene, facts = pickle.loads(state.read_bytes())
                scene.bind(vm)
                goes_on(vm, scene, facts["registers"])
                scene.unbind()
                del scene
        finally:
            if source.poll() is None:
                source.kill()
                source.wait(GUARD)
