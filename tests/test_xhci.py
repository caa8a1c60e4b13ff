"""``qemu-xhci``, ``usb-tablet`` and ``usb-kbd`` in a machine, driven by a
guest driver (``tests/guest_driver.py``) through port I/O, MMIO and DMA
only: enumeration, BAR assignment, MSI-X, controller bring-up, port
changes, slots, descriptors, configuration and HID reports; the MSI
window records every interrupt."""

from __future__ import annotations

import gc
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest_driver import (
    CC_SUCCESS,
    EV_PORT_STATUS_CHANGE,
    EV_TRANSFER,
    Ring,
    XhciDriver,
    get_descriptor,
    set_configuration,
)
from qmp_peers import short_dir, start_peer, vmkit_command
from vmkit import devices, errors, migration, qom
from vmkit._core.memory import AddressSpace
from vmkit.machine import Machine
from vmkit.qmp import QMPSocket


@pytest.fixture
def vm() -> Iterator[Machine]:
    if qom.machine() is not None:
        qom.destroy_machine()
    m = Machine(memory="64M")
    try:
        devices.msi_clear()
        yield m
    finally:
        gc.collect()  # a driver's rings and the driver refer to each other
        m.close()


def bring_up(vm: Machine) -> XhciDriver:
    qom.device_add("qemu-xhci", id="xhci")
    drv = XhciDriver(vm.address_space, vm.io_space)
    drv.start()
    return drv


def test_enumeration_and_bar_sizing(vm: Machine) -> None:
    qom.device_add("qemu-xhci", id="xhci")
    drv = XhciDriver(vm.address_space, vm.io_space)
    assert drv.slot == 1  # the first free slot after the mch, as QEMU's q35
    assert drv.bar_size == 0x4000
    assert drv.msix_vectors == 16
    (fn,) = [d for d in devices.query_pci()[0]["devices"] if d["qdev_id"] == "xhci"]
    assert fn["regions"][0]["address"] == drv.bar0
    assert drv.mem.read_sized(drv.bar0, 1) == 0x40  # CAPLENGTH


def test_tablet_end_to_end(vm: Machine) -> None:
    drv = bring_up(vm)
    assert drv.events() == []  # nothing connected yet
    tablet = qom.device_add("usb-tablet", id="tab", bus="xhci.0")
    assert devices.usb_port(tablet) == 1
    ev = drv.expect(EV_PORT_STATUS_CHANGE)
    port = ev.port
    assert port == 5  # USB 2 register set of USB port 1 (after 4 USB 3 ports)
    assert devices.msi_messages()[-1] == (0xFEE0_0000, 0x4040)  # vector 0
    speed = drv.reset_port(port)
    assert speed == 3  # high speed
    assert drv.expect(EV_PORT_STATUS_CHANGE).port == port  # reset change
    slot = drv.enable_slot()
    assert slot == 1
    ep0 = drv.address_device(slot, port, speed)
    device = drv.control_in(slot, ep0, get_descriptor(1, 0, 18), 18)
    length, kind, usb, _cls, _sub, _proto, mps, vendor, product = struct.unpack(
        "<BBHBBBBHH", device[:12]
    )
    assert (length, kind, usb, mps, vendor, product) == (18, 1, 0x0200, 64, 0x0627, 0x0001)
    head = drv.control_in(slot, ep0, get_descriptor(2, 0, 9), 9)
    total = struct.unpack_from("<H", head, 2)[0]
    config = drv.control_in(slot, ep0, get_descriptor(2, 0, total), total)
    assert len(config) == total == 34
    # interface (class 3: HID), HID descriptor, endpoint 0x81 interrupt
    assert config[9 + 1] == 4 and config[9 + 5] == 3
    ep = config[27:34]
    assert ep[1] == 5 and ep[2] == 0x81 and ep[3] & 3 == 3
    max_packet = struct.unpack_from("<H", ep, 4)[0]
    drv.control_out(slot, ep0, set_configuration(config[5]))
    ring = drv.configure_interrupt_in(slot, 1, max_packet, 7)
    buf = drv.queue_in(slot, 1, ring, 6)
    assert drv.events() == []  # no input yet: the transfer waits
    before = devices.msi_count()
    devices.tablet_move(tablet, 0x1234, 0x0567)
    ev = drv.expect(EV_TRANSFER)
    assert ev.code in (CC_SUCCESS, 13) and ev.slot == slot
    assert devices.msi_count() == before + 1
    assert drv.mem.read(buf, 5) == bytes([0, 0x34, 0x12, 0x67, 0x05])
    # a button press: the next report
    buf = drv.queue_in(slot, 1, ring, 6)
    devices.tablet_button(tablet, "left", True)
    drv.expect(EV_TRANSFER)
    assert drv.mem.read(buf, 1) == b"\x01"


def test_unplug_shows_a_disconnect(vm: Machine) -> None:
    drv = bring_up(vm)
    qom.device_add("usb-kbd", id="kbd")
    port = drv.expect(EV_PORT_STATUS_CHANGE).port
    assert drv.portsc(port) & 1
    qom.device_del("kbd")
    assert drv.expect(EV_PORT_STATUS_CHANGE).port == port
    assert drv.portsc(port) & 1 == 0


def test_usb_device_errors(vm: Machine) -> None:
    with pytest.raises(errors.VmkitError, match="No 'usb-bus' bus found for device 'usb-tablet'"):
        qom.device_add("usb-tablet")
    qom.device_add("qemu-xhci", id="xhci", p2=1, p3=1)
    with pytest.raises(errors.VmkitError, match=r"Bus 'nope\.0' not found"):
        qom.device_add("usb-tablet", bus="nope.0")
    qom.device_add("usb-tablet", id="t", port="1")
    in_use = r"usb port 1 \(bus xhci\.0\) not found \(in use\?\)"
    with pytest.raises(errors.VmkitError, match=in_use):
        qom.device_add("usb-kbd", port="1")
    with pytest.raises(errors.VmkitError, match="no free ports"):
        qom.device_add("usb-kbd")
    kbd_t = qom.resolve_path("/machine/peripheral/t")
    with pytest.raises(errors.DeviceError, match="does not take a key event"):
        devices.send_key(kbd_t, "a")


def tablet_ready(vm: Machine) -> tuple[XhciDriver, qom.Object, int, Ring, int]:
    """A running controller with the tablet addressed, configured and an
    interrupt transfer waiting: (driver, tablet, slot, ring, buffer)."""
    drv = bring_up(vm)
    tablet = qom.device_add("usb-tablet", id="tab", bus="xhci.0")
    port = drv.expect(EV_PORT_STATUS_CHANGE).port
    speed = drv.reset_port(port)
    drv.expect(EV_PORT_STATUS_CHANGE)
    slot = drv.enable_slot()
    ep0 = drv.address_device(slot, port, speed)
    drv.control_out(slot, ep0, set_configuration(1))
    ring = drv.configure_interrupt_in(slot, 1, 8, 7)
    buf = drv.queue_in(slot, 1, ring, 6)
    return drv, tablet, slot, ring, buf


def test_mid_operation_state_survives_save_and_restore(tmp_path: Path) -> None:
    """Saved with an interrupt transfer waiting on the tablet's ring: the
    restored machine (same devices) completes it on the next input, into
    the same buffer, with an MSI."""
    stream = tmp_path / "vm.stream"
    if qom.machine() is not None:
        qom.destroy_machine()
    with Machine(memory="64M") as vm:
        drv, _tablet, slot, _ring, buf = tablet_ready(vm)
        vm.save(stream)
        drv.unbind()  # the driver's memory handles would keep the RAM in use
    sections = [d["idstr"] for d in migration.analyze(stream)["devices"]]
    assert "0000:00:01.0/xhci" in sections
    with Machine(memory="64M") as vm:
        qom.device_add("qemu-xhci", id="xhci")
        tablet = qom.device_add("usb-tablet", id="tab", bus="xhci.0")
        vm.restore(stream)
        devices.msi_clear()
        drv.bind(vm.address_space, vm.io_space)  # the driver goes on where it was
        assert drv.portsc(5) & 0x3 == 0x3  # connected and enabled
        devices.tablet_move(tablet, 0x7FFF, 0)
        ev = drv.expect(EV_TRANSFER)
        assert ev.slot == slot
        assert drv.mem.read(buf, 5) == bytes([0, 0xFF, 0x7F, 0, 0])
        assert devices.msi_count() == 1
        drv.unbind()


def test_mfindex_follows_the_virtual_clock(vm: Machine) -> None:
    drv = bring_up(vm)
    first = drv.r32(drv.rt) & 0x3FFF
    assert drv.r32(drv.rt) & 0x3FFF == first, "time stands still until the clock moves"
    devices.clock_advance(1_000_000)  # 1 ms: 8 microframes
    assert (drv.r32(drv.rt) & 0x3FFF) - first == 8
    with pytest.raises(ValueError, match="does not go back"):
        devices.clock_advance(-1)


def test_a_dma_into_its_own_bar_is_refused_not_recursed(vm: Machine) -> None:
    """The event ring placed over the controller's own BAR0: the event
    write reaches the device's MMIO from inside the device; it is refused
    (QEMU's re-entrancy guard) and the controller reports a host
    controller error instead of recursing or deadlocking."""
    drv = bring_up(vm)
    ir0 = drv.rt + 0x20
    drv.w32(drv.op, 0)  # stop
    erst = drv.alloc(16)
    drv.mem.write(erst, struct.pack("<QII", drv.bar0 + 0x2000, 16, 0))
    drv.w64(ir0 + 0x18, drv.bar0 + 0x2000)
    drv.w64(ir0 + 0x10, erst)
    drv.w32(drv.op, 0x5)
    qom.device_add("usb-kbd")  # a port status change event, written by DMA
    assert drv.r32(drv.op + 0x04) & (1 << 12), "USBSTS.HCE"


def test_bar_access_after_hot_unplug_is_a_clear_error(vm: Machine) -> None:
    """A reference to BAR0's region held across device_del: the region is
    owned by the embedded core, so it stays valid memory; an access
    through it fails with a clear error instead of reaching freed state."""
    qom.device_add("qemu-xhci", id="xhci")
    XhciDriver(vm.address_space, vm.io_space)  # BAR0 mapped
    (pci,) = [r for r, _, _ in vm.system.subregions() if r.name == "pci"]
    (bar,) = [r for r, _, _ in pci.subregions() if r.name == "xhci"]
    assert bar.owner is not None and bar.owner.path == "/machine/peripheral/xhci/xhci-core"
    held = AddressSpace("held", bar)  # a view of BAR0 alone, kept across the unplug
    assert held.read_sized(0, 1) == 0x40
    qom.device_del("xhci")
    with pytest.raises(errors.DeviceGoneError, match="region 'xhci' is unusable"):
        held.read_sized(0, 4)
    with pytest.raises(errors.DeviceGoneError, match="region 'xhci' is unusable"):
        held.write_sized(0x40, 4, 1)


def test_keyboard_reports_through_the_interrupt_endpoint(vm: Machine) -> None:
    drv = bring_up(vm)
    kbd = qom.device_add("usb-kbd", id="kbd")
    port = drv.expect(EV_PORT_STATUS_CHANGE).port
    speed = drv.reset_port(port)
    drv.expect(EV_PORT_STATUS_CHANGE)
    slot = drv.enable_slot()
    ep0 = drv.address_device(slot, port, speed)
    drv.control_out(slot, ep0, set_configuration(1))
    ring = drv.configure_interrupt_in(slot, 1, 8, 7)
    buf = drv.queue_in(slot, 1, ring, 8)
    devices.key_event(kbd, "shift", True)
    drv.expect(EV_TRANSFER)
    assert drv.mem.read(buf, 8) == bytes([0x02, 0, 0, 0, 0, 0, 0, 0])
    buf = drv.queue_in(slot, 1, ring, 8)
    devices.key_event(kbd, "a", True)
    drv.expect(EV_TRANSFER)
    assert drv.mem.read(buf, 8) == bytes([0x02, 0, 0x04, 0, 0, 0, 0, 0])
    with pytest.raises(errors.DeviceError, match="unknown key 'nope'"):
        devices.key_event(kbd, "nope", True)


def test_input_events_are_routed_as_qemu_routes_them(vm: Machine) -> None:
    qom.device_add("qemu-xhci", id="xhci")
    with pytest.raises(LookupError, match="Input handler not found for event type key"):
        devices.route_input_events([{"type": "key", "data": {}}])
    kbd = qom.device_add("usb-kbd", id="kbd")
    tab = qom.device_add("usb-tablet", id="tab")
    key = {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}}
    move = {"type": "abs", "data": {"axis": "x", "value": 5}}
    routed = devices.route_input_events([key, move])
    assert [(d.path, len(e)) for d, e in routed] == [(kbd.path, 1), (tab.path, 1)]
    with pytest.raises(LookupError, match="Device 'nope' not found"):
        devices.route_input_events([key], "nope")


def test_vmkit_run_takes_the_usb_devices_on_its_command_line() -> None:
    """``-device qemu-xhci,id=xhci -device usb-tablet,bus=xhci.0,port=2``;
    QMP ``input-send-event`` reaches the tablet (by id) and the keyboard
    plugged with ``device_add``; its refusals are QEMU's."""
    extra = ["-device", "qemu-xhci,id=xhci", "-device", "usb-tablet,id=tab,bus=xhci.0,port=2"]
    with short_dir() as d:
        sock = d / "v.qmp"
        with start_peer("vmkit", vmkit_command(sock, extra), sock) as peer:
            with QMPSocket(str(sock), negotiate=True, timeout=30.0) as q:
                tree = q.execute("qom-list", path="/machine/peripheral/xhci")
                assert {"name": "xhci.0", "type": "child<usb-bus>"} in tree
                move = {"type": "abs", "data": {"axis": "x", "value": 100}}
                assert q.execute("input-send-event", device="tab", events=[move]) == {}
                key = {"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": "a"}}}
                err = q.command("input-send-event", events=[key])
                assert err["error"]["desc"] == "Input handler not found for event type key"
                q.execute("device_add", driver="usb-kbd", id="kbd", bus="xhci.0")
                assert q.execute("input-send-event", events=[key]) == {}
                err = q.command("device_add", driver="usb-kbd", bus="pcie.0")
                assert err["error"]["desc"] == "Device 'usb-kbd' can't go on PCIE bus"
                q.execute("quit")
            assert peer.wait_exit() == 0
