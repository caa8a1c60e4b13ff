"""``qemu-xhci``'s migration section against QEMU 7.2's: the same command
line (``-M q35 -nodefaults -S -device qemu-xhci,id=xhci``) saved by QEMU
(``migrate`` to a file) and by vmkit (``x-vmkit-save``) gives the section
``0000:00:01.0/xhci`` with the same VMDESCRIPTION entry (names, types,
sizes, versions) and the same content at reset, apart from the fields
listed in :data:`DIFFERENCES` with their reasons. The same for
``usb-tablet`` and ``usb-kbd`` on its ports: sections ``usb-ptr`` and
``usb-kbd`` named by the USB path (``0000:00:01.0/1/usb-ptr``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qmp_peers import (
    qemu_binary,
    qemu_command,
    qemu_save,
    short_dir,
    start_peer,
    vmkit_command,
)
from test_pci_qemu import vmdescription
from vmkit import migration
from vmkit.qmp import QMPSocket

SECTION = "0000:00:01.0/xhci"
DEVICE = ["-device", "qemu-xhci,id=xhci"]
GUARD = 30.0  # seconds: only so that a broken test fails instead of hanging

#: Fields whose content differs from QEMU's at reset, with the reason
#: (none: configuration space, MSI-X table and the controller's registers
#: are QEMU's byte for byte).
DIFFERENCES: dict[str, str] = {}


#: usb-tablet on USB port 1, usb-kbd on port 2.
USB_DEVICES = [
    *DEVICE,
    "-device",
    "usb-tablet,bus=xhci.0,port=1",
    "-device",
    "usb-kbd,bus=xhci.0,port=2",
]
USB_SECTIONS = ["0000:00:01.0/1/usb-ptr", "0000:00:01.0/2/usb-kbd"]


def saved(kind: str, directory: Path, devices: list[str] = DEVICE) -> Path:
    sock, stream = directory / f"{kind}.sock", directory / f"{kind}.stream"
    if kind == "qemu":
        binary = qemu_binary()
        assert binary is not None
        command = qemu_command(binary, sock, devices)
    else:
        command = vmkit_command(sock, ["-m", "128M", *devices])
    with start_peer(kind, command, sock) as peer:
        with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
            if kind == "qemu":
                qemu_save(q, stream, GUARD)
            else:
                q.execute("x-vmkit-save", path=str(stream))
            q.execute("quit")
        peer.wait_exit()
    return stream


@pytest.fixture(scope="module")
def streams() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    if qemu_binary() is None:
        pytest.skip("qemu-system-x86_64 not found")
    out = {}
    with short_dir() as d:
        for kind in ("qemu", "vmkit"):
            s = saved(kind, d)
            entries = {e["name"]: e for e in vmdescription(s)["devices"]}
            decoded = {dev["idstr"]: dev["fields"] for dev in migration.analyze(s)["devices"]}
            out[kind] = (entries[SECTION], decoded[SECTION])
    return out


def test_the_xhci_trailer_entry_is_qemus(
    streams: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    assert streams["vmkit"][0] == streams["qemu"][0]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else k))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def test_the_xhci_content_at_reset_is_qemus(
    streams: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    qemu, vmkit = (flatten(streams[k][1]) for k in ("qemu", "vmkit"))
    assert qemu.keys() == vmkit.keys()
    differ = sorted(k for k in qemu if qemu[k] != vmkit[k])
    assert differ == sorted(DIFFERENCES), {k: (qemu[k], vmkit[k]) for k in differ}


@pytest.fixture(scope="module")
def usb_streams() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    if qemu_binary() is None:
        pytest.skip("qemu-system-x86_64 not found")
    out = {}
    with short_dir() as d:
        for kind in ("qemu", "vmkit"):
            s = saved(kind, d, USB_DEVICES)
            entries = {e["name"]: e for e in vmdescription(s)["devices"]}
            decoded = {dev["idstr"]: dev["fields"] for dev in migration.analyze(s)["devices"]}
            out[kind] = (
                {name: entries[name] for name in USB_SECTIONS},
                {name: decoded[name] for name in USB_SECTIONS},
            )
    return out


def test_the_hid_sections_are_qemus_in_trailer_and_content(
    usb_streams: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    assert usb_streams["vmkit"][0] == usb_streams["qemu"][0]
    qemu, vmkit = (flatten(usb_streams[k][1]) for k in ("qemu", "vmkit"))
    assert qemu.keys() == vmkit.keys()
    assert {k: v for k, v in vmkit.items() if qemu[k] != v} == {}, qemu
