"""intel-iommu in the machine: a guest driver programs it through its MMIO
window and guest RAM, a PCI function's DMA is translated (or refused with
a recorded fault and its event), the ``iommu-intel`` section saves and
restores, and the singleton is refused on every path — ``-device`` on
``vmkit run``, QMP ``device_add`` — naming the active instance, while
introspection always works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iommu_driver import (
    CAP,
    ECAP,
    FEADDR,
    FECTL,
    FEDATA,
    FSTS,
    FSTS_PPF,
    GCMD_TE,
    GSTS,
    RTADDR,
    VER,
    Iommu,
    Tables,
    enable_bus_master,
)
from qmp_peers import short_dir, start_peer, vmkit_command
from vmkit import devices, errors, migration
from vmkit.machine import Machine
from vmkit.qmp import QMPSocket
from vmkit.qom import Object

ROOT = 0x10_0000
IOVA = 0x40_0000_1000
TARGET = 0x80_0000
MSI_AT = 0x7000
SLOT = 3
SOURCE = SLOT << 3  # 00:03.0
GUARD = 30.0

#: QEMU 7.2's registers at reset for ``-device intel-iommu`` (read from
#: its window with ``xp``): VER, CAP, ECAP.
QEMU_RESET = {VER: 0x10, CAP: 0x00D2008C22260206, ECAP: 0x0000000000F00F4A}


@pytest.fixture
def vm() -> Iterator[Machine]:
    with Machine(memory="64M") as m:
        yield m


def translating(vm: Machine) -> tuple[Iommu, Object]:
    """intel-iommu, then pci-testdev at 03.0 mastering; IOVA → TARGET
    mapped in tables at ROOT, translation not yet on."""
    vm.device_add("intel-iommu", id="iommu0")
    dev = vm.device_add("pci-testdev", id="t0", addr=f"{SLOT:02x}.0")
    enable_bus_master(vm.io_space, SLOT)
    tables = Tables(vm.address_space, ROOT)
    table = tables.alloc()
    tables.context(0, SOURCE, table)
    tables.map(table, IOVA, TARGET)
    return Iommu(vm.address_space), dev


def test_the_register_file_at_reset_is_qemus(vm: Machine) -> None:
    vm.device_add("intel-iommu")
    iommu = Iommu(vm.address_space)
    assert iommu.read(VER) == QEMU_RESET[VER]
    assert iommu.read(CAP, 8) == QEMU_RESET[CAP]
    assert iommu.read(ECAP, 8) == QEMU_RESET[ECAP]
    assert iommu.read(GSTS) == 0


def test_a_devices_dma_is_translated_once_the_guest_enables_it(vm: Machine) -> None:
    iommu, dev = translating(vm)
    dma = devices.dma_space(dev)
    # GCMD.TE clear: DMA passes through.
    dma.write(0x2000, b"untranslated")
    assert vm.ram.read(0x2000, 12) == b"untranslated"
    iommu.set_root_table(ROOT)
    assert iommu.read(RTADDR, 8) == ROOT
    iommu.enable_translation()
    assert iommu.read(GSTS) & GCMD_TE
    dma.write(IOVA + 0x10, b"through the tables")
    assert vm.ram.read(TARGET + 0x10, 18) == b"through the tables"
    assert dma.read(IOVA + 0x10, 18) == b"through the tables"
    assert vm.ram.read(0x2000, 12) == b"untranslated"
    vm.system_reset()
    assert iommu.read(GSTS) == 0, "a reset turns translation off"


def test_an_unmapped_iova_records_a_fault_and_sends_its_event(vm: Machine) -> None:
    iommu, dev = translating(vm)
    dma = devices.dma_space(dev)
    # The fault event's message goes to RAM, where the test sees it.
    iommu.write(FEADDR, MSI_AT)
    iommu.write(FEDATA, 0x4321)
    iommu.write(FECTL, 0)
    iommu.set_root_table(ROOT)
    iommu.enable_translation()
    vm.ram.fill(0x5000, 16, 0)
    with pytest.raises(errors.AccessError, match="intel_iommu_devfn_24"):
        dma.write(0x5000, b"lost")
    assert iommu.read(FSTS) & FSTS_PPF
    # The page, 00:03.0, a write without a mapping (VTD_FR_WRITE), F set.
    assert iommu.fault_record() == (0x5000, SOURCE, 0x5, True)
    assert int.from_bytes(vm.ram.read(MSI_AT, 4), "little") == 0x4321
    assert vm.ram.read(0x5000, 4) == bytes(4), "nothing was written"


def save_translating(stream: Path) -> None:
    with Machine(memory="64M") as vm:
        iommu, dev = translating(vm)
        iommu.set_root_table(ROOT)
        iommu.enable_translation()
        vm.save(stream)
        # Nothing of the machine may outlive it (its address space keeps
        # its RAM referenced): the next machine needs the same backend id.
        del iommu, dev


def restore_and_translate(stream: Path) -> None:
    with Machine(memory="64M") as fresh:
        fresh.device_add("intel-iommu", id="iommu0")
        dev = fresh.device_add("pci-testdev", id="t0", addr=f"{SLOT:02x}.0")
        again = Iommu(fresh.address_space)
        assert again.read(GSTS) == 0
        fresh.restore(stream)
        assert again.read(RTADDR, 8) == ROOT
        assert again.read(GSTS) & GCMD_TE
        devices.dma_space(dev).write(IOVA, b"restored")
        assert fresh.ram.read(TARGET, 8) == b"restored"
        del again, dev


def test_the_iommu_intel_section_round_trips(tmp_path: Path) -> None:
    stream = tmp_path / "vm.stream"
    save_translating(stream)
    report = migration.analyze(stream)
    ids = [d["idstr"] for d in report["devices"]]
    # MIG_PRI_IOMMU: the IOMMU's section comes before the devices it covers.
    assert ids.index("iommu-intel") < ids.index(f"0000:00:{SLOT:02x}.0/pci-testdev")
    fields = next(d["fields"] for d in report["devices"] if d["idstr"] == "iommu-intel")
    assert fields["root"] == ROOT and fields["dmar_enabled"] is True
    restore_and_translate(stream)


def test_the_iommu_comes_before_the_devices_it_covers(vm: Machine) -> None:
    vm.device_add("pci-testdev", id="t0", addr="03.0")
    with pytest.raises(errors.QomError, match=r"before the PCI devices .* /machine/peripheral/t0"):
        vm.device_add("intel-iommu", id="iommu0")


# --- vmkit run -------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "run", "-m", "16M", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_command_line_refuses_a_second_iommu_naming_the_first() -> None:
    out = run_cli("-device", "intel-iommu,id=iommu0", "-device", "intel-iommu,id=iommu1")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("vmkit: -device intel-iommu,id=iommu1: ")
    assert "is a singleton" in out.stderr
    assert "already active at '/machine/peripheral/iommu0'" in out.stderr


@pytest.mark.parametrize(
    ("devices_", "message"),
    [
        (["intel-iommu,aw-bits=40"], "Supported values for aw-bits are: 39, 48"),
        (["intel-iommu,eim=on"], "eim=on requires accel=kvm,kernel-irqchip=split"),
        (["intel-iommu,eim=on,intremap=off"], "eim=on cannot be selected without intremap=on"),
        (["intel-iommu,x-pasid-mode=on"], "Need to set scalable mode for PASID"),
        (
            ["pci-testdev,id=t0", "intel-iommu"],
            "intel-iommu must be created before the PCI devices it translates for",
        ),
    ],
)
def test_the_command_line_gives_qemus_realize_errors(devices_: list[str], message: str) -> None:
    args = [a for d in devices_ for a in ("-device", d)]
    out = run_cli(*args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


def test_device_help_lists_qemu_72s_properties() -> None:
    out = run_cli("-device", "intel-iommu,help")
    assert out.returncode == 0, out.stderr
    names = [line.split("=")[0].strip() for line in out.stdout.splitlines()[1:]]
    assert names == [
        "aw-bits",
        "caching-mode",
        "device-iotlb",
        "dma-drain",
        "dma-translation",
        "eim",
        "intremap",
        "pt",
        "snoop-control",
        "version",
        "x-buggy-eim",
        "x-pasid-mode",
        "x-scalable-mode",
    ]
    assert "aw-bits=<uint8>        -  (default: 39)" in out.stdout


def test_qmp_introspection_device_add_and_device_del() -> None:
    with short_dir() as d:
        sock = d / "v.sock"
        extra = [
            "-m",
            "64M",
            "-device",
            "intel-iommu,id=iommu0",
            "-device",
            "pci-testdev,id=t0,addr=03.0",
        ]
        with start_peer("vmkit", vmkit_command(sock, extra), sock) as peer:
            with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
                for _ in range(2):  # introspection claims nothing
                    props = q.execute("device-list-properties", typename="intel-iommu")
                    assert {"aw-bits", "intremap", "caching-mode", "x-buggy-eim"} <= {
                        p["name"] for p in props
                    }
                    listed = q.execute("qom-list-properties", typename="intel-iommu")
                    assert "dma-drain" in {p["name"] for p in listed}
                refused = q.command("device_add", driver="intel-iommu", id="iommu1")
                assert refused["error"]["class"] == "GenericError"
                assert "'/machine/peripheral/iommu0'" in refused["error"]["desc"]
                assert "singleton" in refused["error"]["desc"]
                peripherals = q.execute("qom-list", path="/machine/peripheral")
                assert "iommu1" not in {p["name"] for p in peripherals}
                aw = q.execute("qom-get", path="/machine/peripheral/iommu0", property="aw-bits")
                assert aw == 39
                cap = q.execute("human-monitor-command", **{"command-line": "xp /gx 0xfed90008"})
                assert cap == "00000000fed90008: 0x00d2008c22260206\r\n"
                held = q.command("device_del", id="iommu0")
                assert "still translates the DMA of /machine/peripheral/t0" in held["error"]["desc"]
                stream = d / "v.stream"
                q.execute("x-vmkit-save", path=str(stream))
                q.execute("quit")
            peer.wait_exit()
        ids = [dev["idstr"] for dev in migration.analyze(stream)["devices"]]
        assert "iommu-intel" in ids
