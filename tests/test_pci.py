"""PCI on the q35-like board, over QMP as a management client and a guest
use it: ``device_add`` with ``addr=`` and QEMU's refusals, ``query-pci``
and ``info pci``, ``device_del`` and ``DEVICE_DELETED``, hot-plug rules,
a guest sizing and mapping BARs through 0xCF8/0xCFC (HMP ``o``/``i``) and
reaching them (``xp``, I/O writes), the ECAM window, reset, and the
device's state across save/restore and a live migration between two
``vmkit run`` processes.

``pci-testdev`` (QEMU's 1b36:0005) is the device: BAR0 4 KiB of memory,
BAR1 256 I/O ports; writing N at offset 0 of a BAR starts test N of that
BAR's kind, whose header (test, width, offset, data, hit count, name) any
read returns.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qmp_peers import short_dir, start_peer, vmkit_command
from vmkit import devices, qom
from vmkit.machine import Machine
from vmkit.monitor import MachineMonitor, monitor_version
from vmkit.qmp import CommandRegistry, QMPServer, QMPSocket

pytestmark = pytest.mark.usefixtures("no_machine")

GUARD = 30.0  # seconds: only so that a broken test fails instead of hanging
MMIO = 0xFEBF_0000
PORTS = 0xC000

#: The host bridge's query-pci entry, as QEMU 7.2's q35 gives it.
HOST_BRIDGE = {
    "bus": 0,
    "slot": 0,
    "function": 0,
    "class_info": {"desc": "Host bridge", "class": 0x0600},
    "id": {"device": 0x29C0, "vendor": 0x8086, "subsystem": 0x1100, "subsystem-vendor": 0x1AF4},
    "irq_pin": 0,
    "qdev_id": "",
    "regions": [],
}


def pci_testdev_entry(slot: int, qdev_id: str, mmio: int = -1, ports: int = -1) -> dict[str, Any]:
    """A pci-testdev's query-pci entry (BARs at ``mmio``/``ports``, -1: unmapped)."""
    return {
        "bus": 0,
        "slot": slot,
        "function": 0,
        "class_info": {"class": 0x00FF},
        "id": {"device": 0x0005, "vendor": 0x1B36, "subsystem": 0x1100, "subsystem-vendor": 0x1AF4},
        "irq_pin": 0,
        "qdev_id": qdev_id,
        "regions": [
            {
                "bar": 0,
                "type": "memory",
                "address": mmio,
                "size": 4096,
                "prefetch": False,
                "mem_type_64": False,
            },
            {"bar": 1, "type": "io", "address": ports, "size": 256},
        ],
    }


@dataclass
class Monitored:
    """A QMP client of a machine (in this process, or a ``vmkit run``)."""

    qmp: QMPSocket

    def hmp(self, line: str) -> str:
        out = self.qmp.execute("human-monitor-command", **{"command-line": line})
        assert isinstance(out, str)
        return out.replace("\r\n", "\n")

    def error(self, command: str, **arguments: Any) -> dict[str, Any]:
        reply = self.qmp.command(command, **arguments)
        assert "error" in reply, reply
        return dict(reply["error"])


@contextmanager
def monitored(*cold: tuple[str, str], **machine: Any) -> Iterator[Monitored]:
    """A 64 MiB machine with ``pci-testdev`` plugged at start (as
    ``-device`` does) for each ``(id, addr)`` of ``cold``, behind a QMP
    monitor in this process."""
    directory = tempfile.mkdtemp(prefix="pci")  # a UNIX socket path must be short
    try:
        with Machine(memory="64M", **machine) as vm:
            for dev_id, addr in cold:
                vm.device_add("pci-testdev", id=dev_id, addr=addr)
            vm.creation_done()  # QMP's device_add from now on is a hot-plug
            monitor = MachineMonitor(vm)
            server = QMPServer(monitor.register(CommandRegistry()), version=monitor_version())
            monitor.attach(server)
            with server.start_in_thread(f"{directory}/qmp.sock"):
                with QMPSocket(f"{directory}/qmp.sock", negotiate=True, timeout=GUARD) as qmp:
                    yield Monitored(qmp)
                monitor.jobs.wait_all(GUARD)
    finally:
        shutil.rmtree(directory)


TESTDEV = ("t0", "03.0")


def program(m: Monitored, slot: int = 3) -> None:
    """Firmware's part, through 0xCF8/0xCFC: size BAR0 and BAR1, place
    them, enable memory and I/O decoding."""
    cf8 = 0x8000_0000 | slot << 11
    assert m.hmp(f"o /w 0xcf8 {cf8 | 0x10:#x}") == ""
    m.hmp("o /w 0xcfc 0xffffffff")
    assert m.hmp("i /w 0xcfc") == "portl[0x0cfc] = 0xfffff000\n", "4 KiB of memory"
    m.hmp(f"o /w 0xcfc {MMIO:#x}")
    m.hmp(f"o /w 0xcf8 {cf8 | 0x14:#x}")
    m.hmp("o /w 0xcfc 0xffffffff")
    assert m.hmp("i /w 0xcfc") == "portl[0x0cfc] = 0xffffff01\n", "256 I/O ports"
    m.hmp(f"o /w 0xcfc {PORTS | 1:#x}")
    assert m.hmp(f"xp /4bx {MMIO:#x}") == f"{MMIO:016x}: Cannot access memory\n", "not decoding"
    m.hmp(f"o /w 0xcf8 {cf8 | 0x04:#x}")
    m.hmp("o /h 0xcfc 0x3")


def test_device_add_places_by_addr_with_qemus_refusals() -> None:
    with monitored(TESTDEV) as m:
        err = m.error("device_add", driver="pci-testdev", id="t1", addr="3")
        assert err == {
            "class": "GenericError",
            "desc": "PCI: slot 3 function 0 not available for pci-testdev,"
            " in use by pci-testdev,id=t0",
        }
        err = m.error("device_add", driver="pci-testdev", id="t1", addr="0")
        assert err["desc"] == (
            "PCI: slot 0 function 0 not available for pci-testdev, in use by mch,id=(null)"
        )
        # A hot-plugged function beside a present function 0 (QEMU checks
        # this before multifunction).
        err = m.error("device_add", driver="pci-testdev", id="t1", addr="03.1")
        assert err["desc"] == (
            "PCI: slot 3 function 0 already occupied by pci-testdev,"
            " new func pci-testdev cannot be exposed to guest."
        )
        err = m.error("device_add", driver="pci-testdev", id="t1", addr="zz")
        assert err["class"] == "GenericError" and "doesn't take value 'zz'" in err["desc"]
        err = m.error("device_add", driver="pci-testdev", id="t1", bus="nope")
        assert err == {"class": "GenericError", "desc": "Bus 'nope' not found"}
        assert qom.resolve_path("/machine/peripheral").children() == [
            ("t0", qom.resolve_path("/machine/peripheral/t0"))
        ], "refusals leave nothing behind"
        # addr as QEMU takes it: "SS", "SS.F" or the devfn as an integer;
        # bus=pcie.0 is where a PCI device goes anyway.
        assert m.qmp.execute("device_add", driver="pci-testdev", id="t4", addr="4") == {}
        assert m.qmp.execute("device_add", driver="pci-testdev", id="t5", addr=5 << 3) == {}
        assert m.qmp.execute("device_add", driver="pci-testdev", id="t1", bus="pcie.0") == {}
        slots = {d["qdev_id"]: d["slot"] for d in m.qmp.execute("query-pci")[0]["devices"]}
        assert slots == {"": 0, "t1": 1, "t0": 3, "t4": 4, "t5": 5}, "t1: the first free slot"
        assert qom.resolve_path("/machine/peripheral/t1").get("addr") == 1 << 3


def test_query_pci_and_info_pci_are_shaped_as_qemus() -> None:
    with monitored(TESTDEV) as m:
        assert m.qmp.execute("query-pci") == [
            {"bus": 0, "devices": [HOST_BRIDGE, pci_testdev_entry(3, "t0")]}
        ]
        assert m.hmp("info pci") == (
            "  Bus  0, device   0, function 0:\n"
            "    Host bridge: PCI device 8086:29c0\n"
            "      PCI subsystem 1af4:1100\n"
            '      id ""\n'
            "  Bus  0, device   3, function 0:\n"
            "    Class 0255: PCI device 1b36:0005\n"
            "      PCI subsystem 1af4:1100\n"
            "      BAR0: 32 bit memory at 0xffffffffffffffff [0x00000ffe].\n"
            "      BAR1: I/O at 0xffffffffffffffff [0x00fe].\n"
            '      id "t0"\n'
        )
        program(m)
        assert m.qmp.execute("query-pci")[0]["devices"][1] == pci_testdev_entry(
            3, "t0", MMIO, PORTS
        )
        info = m.hmp("info pci")
        assert "      BAR0: 32 bit memory at 0xfebf0000 [0xfebf0fff].\n" in info
        assert "      BAR1: I/O at 0xc000 [0xc0ff].\n" in info


def test_device_del_unplugs_and_emits_device_deleted() -> None:
    with monitored() as m:
        assert m.qmp.execute("device_add", driver="pci-testdev", id="hot", addr="04.0") == {}
        program(m, slot=4)
        assert m.hmp(f"xp /bx {MMIO:#x}").endswith("0x00\n"), "mapped"
        assert m.qmp.execute("device_del", id="hot") == {}
        event = m.qmp.next_event("DEVICE_DELETED")
        assert event["data"] == {"device": "hot", "path": "/machine/peripheral/hot"}
        assert [d["slot"] for d in m.qmp.execute("query-pci")[0]["devices"]] == [0]
        assert m.hmp(f"xp /bx {MMIO:#x}") == f"{MMIO:016x}: Cannot access memory\n", "unmapped"
        m.hmp("o /w 0xcf8 0x80002000")
        assert m.hmp("i /w 0xcfc") == "portl[0x0cfc] = 0xffffffff\n", "the slot is empty"
        assert m.qmp.execute("device_add", driver="pci-testdev", id="again", addr="4") == {}


def test_unplugging_a_usb_controller_takes_its_usb_devices() -> None:
    """QEMU unrealizes a device's buses with it: a ``qemu-xhci``'s USB
    devices leave with the controller, each with its ``DEVICE_DELETED``
    (path order) before the controller's."""
    with monitored() as m:
        m.qmp.execute("device_add", driver="qemu-xhci", id="xhci", addr="05.0")
        m.qmp.execute("device_add", driver="usb-tablet", id="tab")
        m.qmp.execute("device_add", driver="usb-kbd")
        (anon,) = [
            p["name"]
            for p in m.qmp.execute("qom-list", path="/machine/peripheral-anon")
            if p["type"] == "child<usb-kbd>"
        ]
        assert m.qmp.execute("device_del", id="xhci") == {}
        deleted = [m.qmp.next_event("DEVICE_DELETED")["data"] for _ in range(3)]
        assert deleted == [
            {"device": "tab", "path": "/machine/peripheral/tab"},
            {"path": f"/machine/peripheral-anon/{anon}"},
            {"device": "xhci", "path": "/machine/peripheral/xhci"},
        ]
        left = {p["name"] for p in m.qmp.execute("qom-list", path="/machine/peripheral")}
        assert not left & {"tab", "xhci"}
        assert m.error("device_add", driver="usb-tablet", id="tab")["desc"] == (
            "No 'usb-bus' bus found for device 'usb-tablet'"
        )
        # A controller without devices is one event.
        m.qmp.execute("device_add", driver="qemu-xhci", id="xhci2", addr="05.0")
        m.qmp.execute("device_del", id="xhci2")
        assert m.qmp.next_event("DEVICE_DELETED")["data"]["device"] == "xhci2"
        m.qmp.execute("query-status")  # any event sent before this answer is kept by now
        assert not [e for e in m.qmp.events if e["event"] == "DEVICE_DELETED"]


def test_a_bus_without_hot_plug_refuses_plug_and_unplug() -> None:
    with monitored(TESTDEV, pci_hotplug=False) as m:
        refused = {"class": "GenericError", "desc": "Bus 'pcie.0' does not support hotplugging"}
        assert m.error("device_add", driver="pci-testdev", id="hot", addr="4") == refused
        assert m.error("device_del", id="t0") == refused
        assert [d["qdev_id"] for d in m.qmp.execute("query-pci")[0]["devices"]] == ["", "t0"]
        assert not [e for e in m.qmp.events if e["event"] == "DEVICE_DELETED"]


def test_a_guest_sizes_maps_and_drives_the_bars() -> None:
    """Through 0xCF8/0xCFC and the BARs only, as a guest: the I/O BAR
    starts a test and hits it, the memory BAR reads the header back."""
    with monitored(TESTDEV) as m:
        m.hmp("o /w 0xcf8 0x80001800")
        assert m.hmp("i /w 0xcfc") == "portl[0x0cfc] = 0x00051b36\n"
        assert m.hmp("i /h 0xcfe") == "portw[0x0cfe] = 0x0005\n"
        assert m.hmp("i /b 0xcfd") == "portb[0x0cfd] = 0x1b\n"
        program(m)
        assert m.hmp(f"xp /4bx {MMIO:#x}") == f"{MMIO:016x}: 0x00 0x00 0x00 0x00\n", "no test yet"
        m.hmp(f"o /b {PORTS:#x} 0")  # portio-no-eventfd: hits at 0x83 with 0xfa
        m.hmp(f"o /b {PORTS + 0x83:#x} 0xfa")
        m.hmp(f"o /b {PORTS + 0x83:#x} 0xfb")
        assert m.hmp(f"xp /16bx {MMIO:#x}") == (
            f"{MMIO:016x}: 0x03 0x01 0x00 0x00 0x83 0x00 0x00 0x00\n"
            f"{MMIO + 8:016x}: 0xfa 0x00 0x00 0x00 0x01 0x00 0x00 0x00\n"
        )
        assert m.hmp(f"xp /wx {MMIO + 12:#x}") == f"{MMIO + 12:016x}: 0x00000001\n", "one hit"
        name = m.hmp(f"xp /17c {MMIO + 16:#x}")
        assert "'p' 'o' 'r' 't' 'i' 'o' '-' 'n' 'o' '-'" in name
        assert m.hmp(f"i /b {PORTS + 4:#x}") == "portb[0xc004] = 0x83\n", "the I/O BAR reads it too"
        # Moving BAR0 while decoding: the old window goes, the new one answers.
        m.hmp("o /w 0xcf8 0x80001810")
        m.hmp("o /w 0xcfc 0xfebe0000")
        assert m.hmp(f"xp /bx {MMIO:#x}") == f"{MMIO:016x}: Cannot access memory\n"
        assert m.hmp("xp /bx 0xfebe0000") == "00000000febe0000: 0x03\n"
        # The ECAM window, once PCIEXBAR enables it (firmware's step).
        assert m.hmp("xp /wx 0xb0018000") == "00000000b0018000: Cannot access memory\n"
        m.hmp("o /w 0xcf8 0x80000060")
        m.hmp("o /w 0xcfc 0xb0000001")
        assert m.hmp("xp /wx 0xb0018000") == "00000000b0018000: 0x00051b36\n"
        assert m.hmp("xp /wx 0xb0000000") == "00000000b0000000: 0x29c08086\n", "the mch"


def test_system_reset_unmaps_the_bars_and_keeps_running() -> None:
    with monitored(TESTDEV) as m:
        m.qmp.execute("cont")
        program(m)
        assert m.qmp.execute("system_reset") == {}
        assert m.qmp.next_event("RESET")["data"] == {
            "guest": False,
            "reason": "host-qmp-system-reset",
        }
        assert m.qmp.execute("query-pci")[0]["devices"][1] == pci_testdev_entry(3, "t0")
        assert m.qmp.execute("query-status")["status"] == "running"


def test_hmp_access_commands_read_their_arguments_as_qemus() -> None:
    with monitored() as m:
        assert m.hmp("o /l 0xcf8 0") == (
            "invalid char in format: 'l'\nTry \"help o\" for more information\n"
        )
        assert m.hmp("xp /4bx zz") == (
            "invalid char 'z' in expression\nTry \"help xp\" for more information\n"
        )
        assert m.hmp("i") == 'unexpected end of expression\nTry "help i" for more information\n'
        assert m.hmp("xp /2wx 0x1000 5") == (
            'xp: extraneous characters at the end of line\nTry "help xp" for more information\n'
        )
        # The size and format last given are the defaults of the next.
        assert m.hmp("xp /2bx 0x1000") == "0000000000001000: 0x00 0x00\n"
        assert m.hmp("xp 0x1000") == "0000000000001000: 0x00\n"
        assert m.hmp("xp /2d 0x1000") == "0000000000001000:   0   0\n"
        assert m.hmp("i /w 0x1234") == "portl[0x1234] = 0xffffffff\n", "nothing there"


def test_the_pci_state_survives_save_and_restore(tmp_path: Path) -> None:
    stream = tmp_path / "vm.stream"
    with monitored(TESTDEV) as m:
        program(m)
        m.hmp(f"o /b {PORTS:#x} 0")
        m.hmp(f"o /b {PORTS + 0x83:#x} 0xfa")
        m.qmp.execute("x-vmkit-save", path=str(stream))
        saved = m.qmp.execute("query-pci")
    with Machine(memory="64M") as vm:
        vm.device_add("pci-testdev", id="t0", addr="03.0")
        vm.restore(stream)
        assert devices.query_pci() == saved
        assert vm.address_space.read_sized(MMIO + 12, 4) == 1, "the hit count"
        assert vm.io_space.read_sized(PORTS, 1) == 3, "the running test"


def test_a_machine_with_the_pci_device_migrates_live() -> None:
    """Two ``vmkit run`` processes with the same ``-device``: the source,
    its BARs programmed and a test hit, migrates to a destination waiting
    with ``--incoming defer``; the destination's device answers at the
    same addresses with the same state."""
    device = ["-device", "pci-testdev,addr=03.0,id=t0"]
    with short_dir() as d:
        src_sock, dst_sock = d / "src.qmp", d / "dst.qmp"
        with (
            start_peer("vmkit", vmkit_command(src_sock, device), src_sock) as src_peer,
            start_peer(
                "vmkit", vmkit_command(dst_sock, [*device, "--incoming", "defer"]), dst_sock
            ) as dst_peer,
            QMPSocket(str(src_sock), negotiate=True, timeout=GUARD) as src,
            QMPSocket(str(dst_sock), negotiate=True, timeout=GUARD) as dst,
        ):
            source = Monitored(src)
            program(source)
            source.hmp(f"o /b {PORTS:#x} 0")
            source.hmp(f"o /b {PORTS + 0x83:#x} 0xfa")
            before = src.execute("query-pci")
            header = source.hmp(f"xp /16bx {MMIO:#x}")
            uri = f"unix:{d / 'mig.sock'}"
            dst.execute("migrate-incoming", uri=uri)
            src.execute("migrate", uri=uri)
            deadline = time.monotonic() + GUARD
            while src.execute("query-migrate").get("status") != "completed":
                assert time.monotonic() < deadline, src.execute("query-migrate")
                time.sleep(0.02)
            while dst.execute("query-migrate").get("status") != "completed":
                assert time.monotonic() < deadline, dst.execute("query-migrate")
                time.sleep(0.02)
            destination = Monitored(dst)
            assert dst.execute("query-pci") == before
            assert destination.hmp(f"xp /16bx {MMIO:#x}") == header
            assert destination.hmp(f"i /b {PORTS:#x}") == "portb[0xc000] = 0x03\n"
            for q in (src, dst):
                q.execute("quit")
            assert src_peer.wait_exit() == 0 and dst_peer.wait_exit() == 0


def test_device_option_refusals_are_one_line_in_qemus_words() -> None:
    """``-device`` refusals name the option, then QEMU's message; a
    command line the machine refuses is a usage error (status 2)."""
    with short_dir() as d:
        sock = d / "x.qmp"
        out = subprocess.run(
            vmkit_command(
                sock,
                ["-device", "pci-testdev,addr=3,id=a", "-device", "pci-testdev,addr=3"],
            ),
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=False,
        )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "vmkit: -device pci-testdev,addr=3: PCI: slot 3 function 0 not available for"
        " pci-testdev, in use by pci-testdev,id=a"
    )
