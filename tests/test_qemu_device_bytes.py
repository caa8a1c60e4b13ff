"""vmkit's intel-iommu and qemu-xhci against QEMU 7.2's bytes, with both
devices on one machine (``-M q35 -nodefaults -S -device intel-iommu
-device qemu-xhci,id=xhci``; the IOMMU first, so that the xHCI sits
behind it; under TCG, 7.2 asks for no ``kernel-irqchip`` setting, not
even with ``intremap=on``: its split-irqchip check is KVM's).

1. At reset, QEMU and ``vmkit run`` with that command line place the xHCI
   at 00:01.0 and write the ``iommu-intel``, ``0000:00:01.0/xhci`` and PCI
   host sections with equal VMDESCRIPTION entries (names, types, sizes,
   versions) and equal bytes.
2. Non-reset state: a QEMU with a ``usb-tablet`` on the xHCI, driven
   through its qtest server (port I/O, MMIO and guest RAM only, as a
   guest), gets an IOMMU with a root table, context and page tables,
   translation on, fault-event registers, a running invalidation queue
   whose wait descriptor completed and a recorded translation fault; and
   an xHCI with BAR0 and bus mastering on, MSI-X enabled and programmed,
   the controller running with DCBAAP, a command ring, interrupter 0's
   event ring and IMOD, a No-op completed through the IOMMU, the
   tablet's port reset, a slot enabled and addressed, a descriptor read
   over its control endpoint, and a command ring left pointing at a page
   the IOMMU refuses. QEMU's stream of that machine loads into vmkit's
   models (sections vmkit does not model — CPU, APIC, ICH9 functions,
   ... — taken by ``report_unmodelled``); the registers read back through
   vmkit's address space as programmed; vmkit's stream of the machine
   then carries the compared sections with QEMU's bytes.

The tablet's own section (``0000:00:01.0/1/usb-ptr``, QEMU's USB device
and HID state, here with the address the driver gave it) loads into
vmkit's ``usb-tablet`` and is written back with QEMU's bytes too.

Deliberate differences: :data:`DIFFERENCES` (none in the compared
sections today).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guest_driver import (
    CC_SUCCESS,
    DMA_BASE,
    EV_PORT_STATUS_CHANGE,
    PORT_CCS,
    PORT_PED,
    TRB_LINK,
    TRB_NOOP_CMD,
    AddressSpace,
    Ring,
    XhciDriver,
    get_descriptor,
)
from iommu_driver import (
    FEADDR,
    FECTL,
    FEDATA,
    FRCD_HI,
    FSTS,
    FSTS_PPF,
    GCMD_SRTP,
    GCMD_TE,
    GSTS,
    RTADDR,
    Iommu,
    Tables,
)
from qmp_peers import (
    Qtest,
    qemu_binary,
    qemu_command,
    qemu_missing_is_failure,
    qemu_save,
    qtest_args,
    short_dir,
    start_peer,
    vmkit_command,
)
from test_pci_qemu import vmdescription
from vmkit import devices, migration, qom
from vmkit.devices import DMAR_BASE
from vmkit.machine import Machine
from vmkit.qmp import QMPSocket

pytestmark = pytest.mark.qemu

GUARD = 30.0
DEVICES = ["-device", "intel-iommu", "-device", "qemu-xhci,id=xhci"]
TABLET = ["-device", "usb-tablet,id=tab,bus=xhci.0"]
IOMMU = "iommu-intel"
XHCI = "0000:00:01.0/xhci"
#: The PCI host sections vmkit's q35 models.
HOST = ("PCIHost", "0000:00:00.0/mch")
COMPARED = (IOMMU, XHCI, *HOST)
TABLET_SECTION = "0000:00:01.0/1/usb-ptr"

#: Where the compared sections differ from QEMU's on purpose (section or
#: field, and why). Empty: every entry and every byte is QEMU's.
DIFFERENCES: dict[str, str] = {}

# Invalidation queue registers and commands (VT-d 3.x, 11.4.9).
IQH, IQT, IQA = 0x80, 0x88, 0x90
GCMD_QIE = 1 << 26
INV_WAIT = 0x5
INV_WAIT_SW = 1 << 5
# Where the test's structures live in guest RAM (the xHCI driver's own
# are at guest_driver.DMA_BASE).
ROOT_TABLE = 0x20_0000
QUEUE = 0x30_0000
WAIT_STATUS = 0x30_1000
UNMAPPED = 0x40_0000
FE_DATA, FE_ADDR = 0x4055, 0xFEE0_0000
IMOD = 0x0000_0FA0
TABLET_PORT = 5  # USB 2 register set of USB port 1


@pytest.fixture(scope="module")
def binary() -> str:
    path = qemu_binary()
    if path is None:
        msg = "qemu-system-x86_64 not found (make system-deps installs qemu-system-x86)"
        if qemu_missing_is_failure():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with short_dir() as d:
        yield d


# --- 1. VMDESCRIPTION entries at reset -------------------------------------------


def reset_stream(kind: str, binary: str, directory: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The stream of a peer paused at start, and its ``query-pci``."""
    sock, stream = directory / f"{kind}-reset.sock", directory / f"{kind}-reset.stream"
    if kind == "qemu":
        command = qemu_command(binary, sock, DEVICES)
    else:
        command = vmkit_command(sock, ["-m", "128M", *DEVICES])
    with start_peer(kind, command, sock) as peer:
        with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
            pci = q.execute("query-pci")
            if kind == "qemu":
                qemu_save(q, stream, GUARD)
            else:
                q.execute("x-vmkit-save", path=str(stream))
            q.execute("quit")
        peer.wait_exit()
    return stream, pci


@pytest.fixture(scope="module")
def at_reset(binary: str, workdir: Path) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    return {kind: reset_stream(kind, binary, workdir) for kind in ("qemu", "vmkit")}


def entries(stream: Path) -> dict[str, dict[str, Any]]:
    """The VMDESCRIPTION entries of the compared sections, by name."""
    return {e["name"]: e for e in vmdescription(stream)["devices"] if e["name"] in COMPARED}


def test_the_xhci_is_placed_as_qemu_places_it(
    at_reset: dict[str, tuple[Path, list[dict[str, Any]]]],
) -> None:
    def placed(pci: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
        return {d["qdev_id"]: (d["slot"], d["function"]) for d in pci[0]["devices"] if d["qdev_id"]}

    assert placed(at_reset["qemu"][1]) == placed(at_reset["vmkit"][1]) == {"xhci": (1, 0)}


def test_the_vmdescription_entries_are_qemus(
    at_reset: dict[str, tuple[Path, list[dict[str, Any]]]],
) -> None:
    qemu, vmkit = (entries(at_reset[k][0]) for k in ("qemu", "vmkit"))
    assert sorted(qemu) == sorted(COMPARED)
    assert qemu == vmkit


def test_the_sections_at_reset_are_qemus_bytes(
    at_reset: dict[str, tuple[Path, list[dict[str, Any]]]],
) -> None:
    qemu, vmkit = (section_bodies(at_reset[k][0]) for k in ("qemu", "vmkit"))
    for idstr in COMPARED:
        assert vmkit[idstr] == qemu[idstr], idstr


# --- 2. non-reset state: QEMU's sections through vmkit's models -------------------


@dataclass
class Programmed:
    """QEMU's stream after the guest's steps, and what they left."""

    stream: Path
    bar0: int
    msix_table: int
    dcbaa: int
    erst: int
    erdp: int
    iq_head: int
    fault_page: int
    driver: XhciDriver
    """The guest's driver, unbound from QEMU: it goes on in vmkit."""
    slot: int
    ep0: Ring


def program_iommu(iommu: Iommu, tables: Tables) -> None:
    """Root table, fault event registers, the invalidation queue with one
    completed wait descriptor; translation is turned on later."""
    table = tables.alloc()
    tables.context(0, 1 << 3, table)  # 00:01.0, the xHCI
    for page in range(16):
        tables.map(table, DMA_BASE + page * 0x1000, DMA_BASE + page * 0x1000)
    iommu.set_root_table(ROOT_TABLE)
    iommu.write(FEDATA, FE_DATA)
    iommu.write(FEADDR, FE_ADDR)
    iommu.write(FECTL, 0)  # unmasked
    tables.memory.write(QUEUE, bytes(0x1000))
    iommu.write(IQA, QUEUE, 8)  # 256 entries
    iommu.command(GCMD_QIE)
    wait = INV_WAIT | INV_WAIT_SW | 0x5A5A << 32
    tables.memory.write(QUEUE, struct.pack("<QQ", wait, WAIT_STATUS))
    iommu.write(IQT, 0x10, 8)


@pytest.fixture(scope="module")
def programmed(binary: str, workdir: Path) -> Programmed:
    sock, qsock = workdir / "qemu-run.sock", workdir / "qemu-run.qtest"
    stream = workdir / "qemu-run.stream"
    command = qemu_command(binary, sock, [*DEVICES, *TABLET, *qtest_args(qsock)])
    with start_peer("qemu", command, sock) as peer:
        qtest = Qtest(qsock)
        try:
            mem, io = qtest.memory(), qtest.io()
            iommu, tables = Iommu(mem), Tables(mem, ROOT_TABLE)
            program_iommu(iommu, tables)
            assert iommu.read(IQH, 8) == 0x10
            assert mem.read(WAIT_STATUS, 4) == struct.pack("<I", 0x5A5A)
            drv = XhciDriver(mem, io)
            drv.start()
            drv.w32(drv.rt + 0x24, IMOD)
            iommu.command(GCMD_TE)
            # DMA through the IOMMU from here on.
            assert drv.command(0, 0, TRB_NOOP_CMD << 10).code == CC_SUCCESS
            port = TABLET_PORT
            assert drv.portsc(port) & PORT_CCS
            speed = drv.reset_port(port)
            assert {ev.kind for ev in drv.events()} == {EV_PORT_STATUS_CHANGE}
            slot = drv.enable_slot()
            ep0 = drv.address_device(slot, port, speed)
            assert len(drv.control_in(slot, ep0, get_descriptor(1, 0, 18), 18)) == 18
            # A Link TRB to a page the IOMMU does not map: the next fetch faults.
            drv.cmd.push(UNMAPPED, 0, TRB_LINK << 10)
            drv.ring_doorbell(0)
            assert iommu.read(FSTS) & FSTS_PPF
            erdp = drv.r32(drv.rt + 0x38) | drv.r32(drv.rt + 0x3C) << 32
            with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
                qemu_save(q, stream, GUARD)
                q.execute("quit")
            out = Programmed(
                stream=stream,
                bar0=drv.bar0,
                msix_table=drv.msix_table,
                dcbaa=drv.dcbaa,
                erst=drv.erst,
                erdp=erdp,
                iq_head=0x10,
                fault_page=UNMAPPED,
                driver=drv,
                slot=slot,
                ep0=ep0,
            )
            drv.unbind()
        finally:
            qtest.close()
        peer.wait_exit()
    return out


@dataclass
class Reloaded:
    """vmkit's machine after loading QEMU's stream, and its own stream."""

    loaded: dict[str, Any]
    registers: dict[str, int]
    stream: Path
    descriptor: bytes
    """The tablet's device descriptor, read by the guest's driver after
    the load, through vmkit's xHCI and IOMMU."""
    interrupts: int
    """MSI messages vmkit's window received meanwhile."""


def read_back(mem: AddressSpace, programmed: Programmed) -> dict[str, int]:
    """The registers the guest programmed, read through ``mem``."""
    bar0 = programmed.bar0

    def xhci(offset: int) -> int:
        return mem.read_sized(bar0 + offset, 4)

    def dmar(offset: int, size: int = 4) -> int:
        return mem.read_sized(DMAR_BASE + offset, size)

    op = xhci(0) & 0xFF
    rt = xhci(0x18) & ~0x1F
    return {
        "USBCMD": xhci(op),
        "USBSTS": xhci(op + 0x04),
        "CONFIG": xhci(op + 0x38),
        "PORTSC": xhci(op + 0x400 + 0x10 * (TABLET_PORT - 1)),
        "DCBAAP": xhci(op + 0x30) | xhci(op + 0x34) << 32,
        "IMAN": xhci(rt + 0x20),
        "IMOD": xhci(rt + 0x24),
        "ERSTSZ": xhci(rt + 0x28),
        "ERSTBA": xhci(rt + 0x30) | xhci(rt + 0x34) << 32,
        "ERDP": xhci(rt + 0x38) | xhci(rt + 0x3C) << 32,
        "MSIX0_DATA": xhci(programmed.msix_table + 8),
        "GSTS": dmar(GSTS),
        "RTADDR": dmar(RTADDR, 8),
        "FECTL": dmar(FECTL),
        "FEDATA": dmar(FEDATA),
        "FEADDR": dmar(FEADDR),
        "FSTS": dmar(FSTS),
        "FRCD0_HI": dmar(FRCD_HI, 8),
        "FRCD0_LO": dmar(FRCD_HI - 8, 8),
        "IQA": dmar(IQA, 8),
        "IQH": dmar(IQH, 8),
        "IQT": dmar(IQT, 8),
    }


@pytest.fixture(scope="module")
def reloaded(programmed: Programmed, workdir: Path) -> Reloaded:
    if qom.machine() is not None:
        qom.destroy_machine()
    machine_type = next(
        r["machine_type"]
        for r in migration.analyze(programmed.stream)["records"]
        if r["type"] == "CONFIGURATION"
    )
    stream = workdir / "vmkit-run.stream"
    with Machine(memory="128M", machine_type=machine_type) as vm:
        qom.device_add("intel-iommu")
        qom.device_add("qemu-xhci", id="xhci")
        qom.device_add("usb-tablet", id="tab", bus="xhci.0")
        loaded = vm.restore(programmed.stream, report_unmodelled=True)
        registers = read_back(vm.address_space, programmed)
        vm.save(stream)
        # The guest goes on where it was in QEMU: a control transfer on the
        # tablet's endpoint 0, DMA translated by the loaded root table.
        drv = programmed.driver
        drv.bind(vm.address_space, vm.io_space)
        devices.msi_clear()
        try:
            descriptor = drv.control_in(
                programmed.slot, programmed.ep0, get_descriptor(1, 0, 18), 18
            )
        finally:
            drv.unbind()
        interrupts = devices.msi_count()
    return Reloaded(loaded, registers, stream, descriptor, interrupts)


def test_qemus_sections_load_into_vmkits_models(reloaded: Reloaded) -> None:
    unmodelled = {s["idstr"] for s in reloaded.loaded["unmodelled"]["sections"]}
    assert not unmodelled & set(COMPARED), "vmkit took them generically, not into its models"
    assert "cpu" in unmodelled  # not vacuous: the report lists what vmkit lacks
    assert TABLET_SECTION not in unmodelled


def test_the_loaded_registers_read_back_as_programmed(
    programmed: Programmed, reloaded: Reloaded
) -> None:
    r = reloaded.registers
    assert r["USBCMD"] & 0x5 == 0x5  # RS | INTE
    assert r["USBSTS"] & 0x1 == 0  # running
    assert r["CONFIG"] == 8
    assert r["PORTSC"] & (PORT_CCS | PORT_PED) == PORT_CCS | PORT_PED
    assert r["DCBAAP"] == programmed.dcbaa
    assert r["IMAN"] & 0x2  # IE
    assert r["IMOD"] == IMOD
    assert r["ERSTSZ"] == 1
    assert r["ERSTBA"] == programmed.erst
    assert r["ERDP"] == programmed.erdp != 0
    assert r["MSIX0_DATA"] == 0x4040
    assert r["GSTS"] & (GCMD_TE | GCMD_SRTP | GCMD_QIE) == GCMD_TE | GCMD_SRTP | GCMD_QIE
    assert r["RTADDR"] == ROOT_TABLE
    assert (r["FEDATA"], r["FEADDR"]) == (FE_DATA, FE_ADDR)
    assert r["FSTS"] & FSTS_PPF
    assert r["FRCD0_HI"] >> 63 == 1  # F: a fault recorded
    assert r["FRCD0_HI"] & 0xFFFF == 1 << 3  # source: 00:01.0
    assert r["FRCD0_LO"] & ~0xFFF == programmed.fault_page
    assert r["IQA"] == QUEUE
    assert r["IQH"] == r["IQT"] == programmed.iq_head


def section_bodies(stream: Path) -> dict[str, bytes]:
    """The body of each FULL section, by idstr (the bytes between the
    section header and its footer)."""
    data = stream.read_bytes()
    out = {}
    for record in migration.analyze(stream)["records"]:
        if record["type"] != "FULL":
            continue
        idstr = record["idstr"]
        # type (1), section id (4), idstr length (1) and idstr, instance (4), version (4)
        start = record["offset"] + 1 + 4 + 1 + len(idstr) + 4 + 4
        out[idstr] = data[start : start + record["body_len"]]
    return out


def test_vmkit_writes_qemus_bytes_back(programmed: Programmed, reloaded: Reloaded) -> None:
    qemu, vmkit = section_bodies(programmed.stream), section_bodies(reloaded.stream)
    for idstr in (*COMPARED, TABLET_SECTION):
        assert vmkit[idstr] == qemu[idstr], idstr
    # Not vacuous: the bodies carry the programmed state.
    assert struct.pack("<Q", ROOT_TABLE) in qemu[IOMMU]
    assert struct.pack("<Q", programmed.dcbaa) in qemu[XHCI]
    assert qemu[TABLET_SECTION][0] == programmed.slot != 0  # USBDevice.addr: the slot's


def test_the_entries_of_the_programmed_streams_are_equal(
    programmed: Programmed, reloaded: Reloaded
) -> None:
    assert entries(reloaded.stream) == entries(programmed.stream)


def test_the_guest_goes_on_in_vmkit(reloaded: Reloaded) -> None:
    length, kind, _usb, _cls, _sub, _proto, _mps, vendor, product = struct.unpack(
        "<BBHBBBBHH", reloaded.descriptor[:12]
    )
    assert (length, kind, vendor, product) == (18, 1, 0x0627, 0x0001)
    assert reloaded.interrupts == 1  # the transfer event's MSI-X vector 0


def test_the_differences_are_listed() -> None:
    assert __doc__ is not None
    assert all(len(reason) > 40 for reason in DIFFERENCES.values())
