"""vmkit's q35 PCI against QEMU 7.2's, side by side: the same command line
(``-M q35 -nodefaults -S -device pci-testdev,addr=03.0,id=t0``), the same
QMP commands — ``query-pci``, ``info pci``, and a guest's configuration
cycles through 0xCF8/0xCFC (HMP ``o``/``i``), BAR sizing and mapping,
accesses to the BARs (I/O writes, ``xp`` reads), a BAR move, the ECAM
window, ``system_reset`` — give the same answers, byte for byte.

Deliberate differences, left out of the comparison (:data:`DIFFERENCES`):
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qmp_peers import (
    qemu_binary,
    qemu_command,
    qemu_missing_is_failure,
    qemu_save,
    short_dir,
    start_peer,
    vmkit_command,
)
from vmkit import migration
from vmkit.qmp import QMPSocket

pytestmark = pytest.mark.qemu

GUARD = 30.0

#: Where vmkit's q35 differs from QEMU's on purpose.
DIFFERENCES = {
    "ICH9 functions": "QEMU's q35 always has the ICH9 LPC (1f.0), SATA (1f.2) and SMBus (1f.3)"
    " functions; vmkit models none of them, so their query-pci entries and info pci blocks"
    " are left out",
    "hot-plug on pcie.0": "QEMU's q35 root bus refuses device_add/device_del at run time (hot-plug"
    " takes a pcie-root-port, not modelled); vmkit's pcie.0 takes them unless --no-pci-hotplug,"
    " with which the refusals are QEMU's (compared below)",
    "xp /i": "QEMU disassembles; vmkit has no CPU and says so",
}

DEVICE = ["-device", "pci-testdev,addr=03.0,id=t0"]

#: A guest's steps, each an HMP command line whose output is compared.
GUEST = [
    "info pci",
    # Identity through 0xCF8/0xCFC, in every width.
    "o /w 0xcf8 0x80001800",
    "i /w 0xcfc",
    "i /h 0xcfe",
    "i /b 0xcfd",
    "i /w 0xcf8",
    "o /w 0xcf8 0x80002000",
    "i /w 0xcfc",
    # The host bridge.
    "o /w 0xcf8 0x80000000",
    "i /w 0xcfc",
    "o /w 0xcf8 0x80000060",
    "i /w 0xcfc",
    # BAR0 and BAR1: the all-ones probe, an address, decoding on.
    "o /w 0xcf8 0x80001810",
    "o /w 0xcfc 0xffffffff",
    "i /w 0xcfc",
    "o /w 0xcfc 0xfebf0000",
    "o /w 0xcf8 0x80001814",
    "o /w 0xcfc 0xffffffff",
    "i /w 0xcfc",
    "o /w 0xcfc 0xc001",
    "xp /4bx 0xfebf0000",
    "o /w 0xcf8 0x80001804",
    "o /h 0xcfc 0x3",
    "i /h 0xcfc",
    "xp /4bx 0xfebf0000",
    "info pci",
    # The test device through its BARs.
    "o /b 0xc000 0",
    "o /b 0xc083 0xfa",
    "o /b 0xc083 0xfb",
    "xp /20bx 0xfebf0000",
    "xp /wx 0xfebf000c",
    "xp /17c 0xfebf0010",
    "i /b 0xc004",
    "o /b 0xc000 1",
    "o /b 0xc084 0x12",
    "xp /wx 0xfebf000c",
    "o /h 0xc084 0x1234",
    "xp /wx 0xfebf000c",
    "xp /2gx 0xfebf0000",
    "xp /3hd 0xfebf0000",
    "xp /2ox 0xfebf0000",
    # BAR0 moved while decoding.
    "o /w 0xcf8 0x80001810",
    "o /w 0xcfc 0xfebe0000",
    "xp /bx 0xfebf0000",
    "xp /bx 0xfebe0000",
    # The ECAM window: off at reset, on once PCIEXBAR says so.
    "xp /wx 0xb0018000",
    "o /w 0xcf8 0x80000060",
    "o /w 0xcfc 0xb0000001",
    "xp /wx 0xb0018000",
    "xp /wx 0xb0000000",
    "xp /hx 0xb001800a",
    "info pci",
    # Mistakes, answered as text.
    "o /l 0xcf8 0",
    "xp /4bx zz",
    "i",
    "xp /2wx 0x1000 5",
    "info pci extra",
]


def hmp(q: QMPSocket, line: str) -> str:
    out = q.execute("human-monitor-command", **{"command-line": line})
    assert isinstance(out, str)
    return out


def without_ich9_text(text: str) -> str:
    """``info pci`` without QEMU's device-31 blocks."""
    blocks = text.split("  Bus ")
    kept = [b for b in blocks[1:] if not b.startswith(" 0, device  31,")]
    return blocks[0] + "".join("  Bus " + b for b in kept)


def without_ich9(buses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**bus, "devices": [d for d in bus["devices"] if d["slot"] != 31]} for bus in buses]


def session(kind: str, sock: Path, extra: list[str]) -> dict[str, Any]:
    """Runs the script against one peer; the answers, by step."""
    if kind == "qemu":
        binary = qemu_binary()
        assert binary is not None
        command = qemu_command(binary, sock, extra)
    else:
        command = vmkit_command(sock, extra)
    out: dict[str, Any] = {}
    with start_peer(kind, command, sock) as peer:
        with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
            out["query-pci"] = q.execute("query-pci")
            for i, line in enumerate(GUEST):
                out[f"{i:02d} {line}"] = hmp(q, line)
            out["query-pci mapped"] = q.execute("query-pci")
            q.execute("system_reset")
            out["query-pci after reset"] = q.execute("query-pci")
            out["xp after reset"] = hmp(q, "xp /bx 0xfebe0000")
            out["cf8 after reset"] = hmp(q, "i /w 0xcf8")
            out["device_add"] = q.command("device_add", driver="pci-testdev", id="t1", addr="4")
            out["device_del"] = q.command("device_del", id="t0")
            q.execute("quit")
        peer.wait_exit()
    return out


@pytest.fixture(scope="module")
def need_qemu() -> None:
    if qemu_binary() is None:
        msg = "qemu-system-x86_64 not found (make system-deps installs qemu-system-x86)"
        if qemu_missing_is_failure():
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def runs(need_qemu: None) -> dict[str, dict[str, Any]]:
    with short_dir() as d:
        return {
            "qemu": session("qemu", d / "qemu.sock", DEVICE),
            # QEMU's hot-plug rule, so that its refusals compare too.
            "vmkit": session("vmkit", d / "vmkit.sock", [*DEVICE, "--no-pci-hotplug"]),
        }


def test_query_pci_equals_qemus(runs: dict[str, dict[str, Any]]) -> None:
    q, v = runs["qemu"], runs["vmkit"]
    for step in ("query-pci", "query-pci mapped", "query-pci after reset"):
        assert without_ich9(q[step]) == v[step], step
    # The comparison is not vacuous: the mapped BARs are where the guest put them.
    regions = v["query-pci mapped"][0]["devices"][1]["regions"]
    assert [(r["bar"], r["address"]) for r in regions] == [(0, 0xFEBE0000), (1, 0xC000)]
    # And what was left out is what DIFFERENCES says.
    ich9 = [d for d in q["query-pci"][0]["devices"] if d["slot"] == 31]
    assert [d["function"] for d in ich9] == [0, 2, 3]


def test_a_guests_accesses_answer_as_qemus(runs: dict[str, dict[str, Any]]) -> None:
    q, v = runs["qemu"], runs["vmkit"]
    steps = [k for k in v if k[:2].isdigit()]
    assert len(steps) == len(GUEST)
    differ = []
    for step in steps:
        qemu_text = q[step]
        if step.endswith("info pci"):
            qemu_text = without_ich9_text(qemu_text)
        if qemu_text != v[step]:
            differ.append(f"{step}:\n  qemu:  {qemu_text!r}\n  vmkit: {v[step]!r}")
    assert not differ, "\n".join(differ)
    assert q["xp after reset"] == v["xp after reset"]
    assert q["cf8 after reset"] == v["cf8 after reset"], "a reset keeps 0xCF8"
    # Spot checks that the script did what it says.
    assert v["05 i /w 0xcf8"] == "portl[0x0cf8] = 0x80001800\r\n"
    assert "0x00051b36" in v[f"{GUEST.index('xp /wx 0xb0018000', 46):02d} xp /wx 0xb0018000"]


def test_hot_plug_refusals_equal_qemus(runs: dict[str, dict[str, Any]]) -> None:
    q, v = runs["qemu"], runs["vmkit"]
    expected = {"class": "GenericError", "desc": "Bus 'pcie.0' does not support hotplugging"}
    for step in ("device_add", "device_del"):
        assert q[step] == v[step] == {"error": expected}, step


def test_the_differences_are_listed() -> None:
    assert __doc__ is not None
    assert json.dumps(DIFFERENCES)  # each one says why
    assert all(len(reason) > 40 for reason in DIFFERENCES.values())


# --- the host bridge's sections ------------------------------------------------


def vmdescription(stream: Path) -> dict[str, Any]:
    """The VMDESCRIPTION trailer of ``stream``: the last 0x06 byte followed
    by a be32 length and that much JSON."""
    data = stream.read_bytes()
    for at in range(len(data) - 5, 0, -1):
        if data[at] != 0x06:
            continue
        length = int.from_bytes(data[at + 1 : at + 5], "big")
        if at + 5 + length == len(data):
            parsed: dict[str, Any] = json.loads(data[at + 5 :])
            return parsed
    raise AssertionError(f"no VMDESCRIPTION trailer in {stream}")


def saved_stream(kind: str, directory: Path) -> Path:
    """The stream of a peer paused at start (QEMU: ``migrate`` to a file;
    vmkit: ``x-vmkit-save``)."""
    sock, stream = directory / f"{kind}.sock", directory / f"{kind}.stream"
    if kind == "qemu":
        binary = qemu_binary()
        assert binary is not None
        command = qemu_command(binary, sock, [])
    else:
        command = vmkit_command(sock, ["-m", "128M"])
    with start_peer(kind, command, sock) as peer:
        with QMPSocket(str(sock), negotiate=True, timeout=GUARD) as q:
            if kind == "qemu":
                qemu_save(q, stream, GUARD)
            else:
                q.execute("x-vmkit-save", path=str(stream))
            q.execute("quit")
        peer.wait_exit()
    return stream


@pytest.mark.usefixtures("need_qemu")
def test_the_host_bridges_sections_are_qemus() -> None:
    """The q35 host bridge's sections at reset — the 0xCF8 register
    ("PCIHost") and the mch function ("0000:00:00.0/mch") — have QEMU's
    trailer entries (names, types, sizes, versions) and QEMU's bytes."""
    with short_dir() as d:
        streams = {kind: saved_stream(kind, d) for kind in ("qemu", "vmkit")}
        entries = {
            kind: {e["name"]: e for e in vmdescription(s)["devices"]} for kind, s in streams.items()
        }
        decoded = {
            kind: {dev["idstr"]: dev["fields"] for dev in migration.analyze(s)["devices"]}
            for kind, s in streams.items()
        }
    for name in ("PCIHost", "0000:00:00.0/mch"):
        assert entries["qemu"][name] == entries["vmkit"][name], name
        assert decoded["qemu"][name] == decoded["vmkit"][name], name
    config = bytes.fromhex(decoded["vmkit"]["0000:00:00.0/mch"]["parent_obj"]["config[0]"])
    assert config[:4] == bytes.fromhex("8680c029") and config[0x60:0x64] == bytes(3) + b"\xb0"
