"""Helpers of the tests that run QEMU beside vmkit: the two QMP peers, a
QEMU migrated to a file, a qtest client, and shape comparison.

A *peer* is a process serving QMP on a UNIX socket: a real
``qemu-system-x86_64`` (q35, TCG, ``-nodefaults``, no kernel, paused with
``-S``) or ``vmkit run -S``. :class:`vmkit.qmp.QMPSocket` talks to either over a plain
socket (for what ``qemu.qmp`` hides: the greeting, negotiation mode, error
classes of raw replies). :func:`shape` reduces a JSON value to its keys and
JSON types, and :func:`compare_shapes` lists where two shapes differ.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"
TIMEOUT = 20.0


# --- peers ---------------------------------------------------------------------


@dataclass
class Peer:
    """A running QMP server process."""

    kind: str
    """``"qemu"`` or ``"vmkit"``."""
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)


def qemu_command(binary: str, sock: Path, extra: Sequence[str] = ()) -> list[str]:
    """q35 under TCG, no default devices, no guest kernel, paused (``-S``)."""
    return [
        binary,
        "-no-user-config",
        "-nodefaults",
        "-machine",
        "q35,accel=tcg",
        "-m",
        "128M",
        "-display",
        "none",
        "-S",
        *extra,
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]


def qtest_args(sock: Path) -> list[str]:
    """QEMU options serving the qtest protocol on ``sock`` (see :class:`Qtest`).

    The Debian 7.2 build has no ``qtest`` accelerator, but its ``-qtest``
    server works under TCG: with ``-S`` no vCPU runs, and the test is the
    only one touching memory and I/O."""
    return ["-qtest", f"unix:{sock},server=on,wait=off", "-qtest-log", "/dev/null"]


def qemu_save(q: Any, stream: Path, timeout: float = TIMEOUT) -> None:
    """Migrates the QEMU behind the QMP connection ``q`` into the file
    ``stream`` and waits for the migration to end (7.2 has no ``file:``
    URI, so the stream goes through ``exec:cat``)."""
    q.execute("migrate", uri=f"exec:cat > {stream}")
    deadline = time.monotonic() + timeout
    while (status := q.execute("query-migrate").get("status")) != "completed":
        assert status in ("setup", "active", "device"), status
        assert time.monotonic() < deadline, "the migration to a file does not end"
        time.sleep(0.02)


def vmkit_command(sock: Path, extra: Sequence[str] = ()) -> list[str]:
    """``vmkit run -S`` with its QMP monitor on ``sock``, no workload."""
    return [
        sys.executable,
        "-m",
        "vmkit.cli",
        "run",
        "-S",
        "--qmp",
        f"unix:{sock}",
        "--workload-rate",
        "0",
        *extra,
    ]


def _wait_for_socket(peer: Peer, deadline: float) -> None:
    while not peer.socket.exists():
        if peer.proc.poll() is not None:
            raise RuntimeError(f"{peer.kind} exited ({peer.proc.returncode}):\n{peer.output()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{peer.kind}: no QMP socket after {TIMEOUT}s:\n{peer.output()}")
        time.sleep(0.02)


def _wait_for_qmp_line(peer: Peer, stdout: Any, deadline: float) -> None:
    """``vmkit run`` prints ``QMP: unix:PATH`` once it listens."""
    line = stdout.readline()
    if not line.startswith(b"QMP: "):
        peer.proc.kill()
        peer.proc.wait(timeout=TIMEOUT)
        raise RuntimeError(f"vmkit run printed {line!r}, not 'QMP: ...':\n{peer.output()}")
    assert line.decode().strip() == f"QMP: unix:{peer.socket}", line
    _wait_for_socket(peer, deadline)


@contextmanager
def start_peer(kind: str, command: Sequence[str], sock: Path) -> Iterator[Peer]:
    """Starts ``command`` (which serves QMP on ``sock``); kills it on the way
    out unless it has ended, and prints its output if the body raised."""
    log = sock.with_suffix(".log")
    deadline = time.monotonic() + TIMEOUT
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if kind == "vmkit" else out,
            stderr=out,
        )
    peer = Peer(kind, proc, sock, log)
    try:
        if kind == "vmkit":
            assert proc.stdout is not None
            _wait_for_qmp_line(peer, proc.stdout, deadline)
        else:
            _wait_for_socket(peer, deadline)
        yield peer
    except BaseException:
        sys.stderr.write(f"{kind} output:\n{peer.output()}\n")
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory: UNIX socket paths are limited to ~108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="qmpc-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def qemu_binary() -> str | None:
    return shutil.which(QEMU)


def qemu_missing_is_failure() -> bool:
    return bool(os.environ.get("CI"))


# --- qtest ---------------------------------------------------------------------


class Qtest:
    """A client of QEMU's qtest protocol (``docs/devel/qtest.rst``): one
    command line out, one ``OK [value]`` or ``FAIL ...`` line back."""

    def __init__(self, sock: Path, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no qtest socket {sock}")
            time.sleep(0.02)
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.settimeout(timeout)
        self._sock.connect(str(sock))
        self._file = self._sock.makefile("rwb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def command(self, line: str) -> str:
        """Sends ``line``; returns what follows ``OK`` (maybe empty)."""
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        reply = self._file.readline().decode().strip()
        if reply != "OK" and not reply.startswith("OK "):
            raise RuntimeError(f"qtest {line!r}: {reply!r}")
        return reply[3:]

    def memory(self) -> QtestSpace:
        """The CPU's view of memory."""
        return QtestSpace(self, "read", "write")

    def io(self) -> QtestSpace:
        """The I/O port space."""
        return QtestSpace(self, "in", "out")


_SUFFIX = {1: "b", 2: "w", 4: "l", 8: "q"}


@dataclass
class QtestSpace:
    """An address space of a QEMU reached through qtest, with the methods
    of :class:`vmkit._core.memory.AddressSpace` the test drivers use."""

    qtest: Qtest
    load: str
    store: str

    def read_sized(self, addr: int, size: int) -> int:
        return int(self.qtest.command(f"{self.load}{_SUFFIX[size]} {addr:#x}"), 16)

    def write_sized(self, addr: int, size: int, value: int) -> None:
        self.qtest.command(f"{self.store}{_SUFFIX[size]} {addr:#x} {value:#x}")

    def read(self, addr: int, length: int) -> bytes:
        return bytes.fromhex(self.qtest.command(f"read {addr:#x} {length:#x}")[2:])

    def write(self, addr: int, data: bytes) -> None:
        if data:
            self.qtest.command(f"write {addr:#x} {len(data):#x} 0x{data.hex()}")


# --- shapes --------------------------------------------------------------------


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


@dataclass
class Shape:
    """The JSON types a value (or the elements of a list) had, and for
    objects the shape of each key; ``keys_seen`` counts in how many of the
    merged objects each key appeared (optional keys appear in fewer)."""

    types: set[str] = field(default_factory=set)
    keys: dict[str, Shape] = field(default_factory=dict)
    elements: Shape | None = None
    objects: int = 0
    lists: int = 0
    empty_lists: int = 0

    def add(self, value: Any) -> None:
        t = json_type(value)
        self.types.add(t)
        if t == "object":
            self.objects += 1
            for k, v in value.items():
                self.keys.setdefault(k, Shape()).add(v)
        elif t == "list":
            self.lists += 1
            if not value:
                self.empty_lists += 1
            if self.elements is None:
                self.elements = Shape()
            for v in value:
                self.elements.add(v)


def shape(value: Any) -> Shape:
    s = Shape()
    s.add(value)
    return s


def compare_shapes(qemu: Shape, vmkit: Shape, path: str = "") -> list[str]:
    """Where the shapes differ, as ``"PATH: what"`` lines.

    ``PATH`` is ``$`` for the top, ``.key`` for object members and ``[]``
    for list elements. Keys are compared by presence (a key only one side
    has) and, where both have it, recursively. The elements of two lists
    are compared only when both sides had some.
    """
    where = path or "$"
    if qemu.types != vmkit.types:
        return [f"{where}: types qemu={sorted(qemu.types)} vmkit={sorted(vmkit.types)}"]
    diffs: list[str] = []
    for key in sorted(qemu.keys.keys() - vmkit.keys.keys()):
        diffs.append(f"{path}.{key}: only qemu")
    for key in sorted(vmkit.keys.keys() - qemu.keys.keys()):
        diffs.append(f"{path}.{key}: only vmkit")
    for key in sorted(qemu.keys.keys() & vmkit.keys.keys()):
        diffs.extend(compare_shapes(qemu.keys[key], vmkit.keys[key], f"{path}.{key}"))
    qe, ve = qemu.elements, vmkit.elements
    if qe is not None and ve is not None and qe.types and ve.types:
        diffs.extend(compare_shapes(qe, ve, f"{path}[]"))
    return diffs
