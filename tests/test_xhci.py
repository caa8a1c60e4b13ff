"""``qemu-xhci``, ``usb-tablet`` and ``usb-kbd`` in a machine, driven by a
guest driver (``tests/guest_driver.py``) through port I/O, MMIO and DMA
only: enumeration, BAR assignment, MSI-X, controller bring-up, port
changes, slots, descriptors, configuration and HID reports; the MSI
window records every interrupt."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from guest_driver import (
    EV_PORT_STATUS_CHANGE,
    EV_TRANSFER,
    CC_SUCCESS,
    XhciDriver,
    get_descriptor,
    set_configuration,
)
from vmkit import devices, errors, qom
from vmkit.machine import Machine


@pytest.fixture
def vm() -> Iterator[Machine]:
    if qom.machine() is not None:
        qom.destroy_machine()
    with Machine(memory="64M") as m:
        devices.msi_clear()
        yield m


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
    with pytest.raises(errors.VmkitError, match="Bus 'nope.0' not found"):
        qom.device_add("usb-tablet", bus="nope.0")
    qom.device_add("usb-tablet", id="t", port="1")
    with pytest.raises(errors.VmkitError, match=r"usb port 1 \(bus xhci.0\) not found \(in use\?\)"):
        qom.device_add("usb-kbd", port="1")
    with pytest.raises(errors.VmkitError, match="no free ports"):
        qom.device_add("usb-kbd")
    kbd_t = qom.resolve_path("/machine/peripheral/t")
    with pytest.raises(errors.DeviceError, match="does not take a key event"):
        devices.send_key(kbd_t, "a")

