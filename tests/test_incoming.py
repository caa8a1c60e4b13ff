"""An incoming migration at a listener (QEMU's ``-incoming URI``): a
stream sent into ``unix:`` or ``tcp:`` loads into a machine of the same
shape, with QEMU's run states; a refused or cut stream leaves it in
``inmigrate``; the wait for a sender ends on a timeout or cancellation."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from vmkit import errors
from vmkit.machine import Machine
from vmkit.migration import Listener

pytestmark = pytest.mark.usefixtures("no_machine")

GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, int]:
    """A stream of a 16 MiB machine with data in RAM, and its RAM checksum."""
    with Machine(memory="16M") as vm:
        vm.ram.write(0x2000, b"migrated by vmkit")
        vm.ram.write(15 << 20, b"\x05\x30" * 512)
        path = tmp_path / "vm.stream"
        vm.save(path)
        return path, vm.ram.checksum()


def send(listener: Listener, data: bytes) -> threading.Thread:
    """Connects to ``listener`` from another thread and sends ``data``."""
    kind, _, where = listener.uri.partition(":")

    def run() -> None:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(where)
        else:
            host, _, port = where.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)))
        with sock:
            sock.sendall(data)

    sender = threading.Thread(target=run)
    sender.start()
    return sender


@pytest.mark.parametrize("where", ["unix", "tcp:127.0.0.1:0"])
def test_a_stream_sent_to_the_listener_loads(
    saved: tuple[Path, int], tmp_path: Path, where: str
) -> None:
    stream, checksum = saved
    uri = f"unix:{tmp_path / 'in.sock'}" if where == "unix" else where
    listener = Listener(uri)
    if where != "unix":
        assert listener.uri.startswith("tcp:127.0.0.1:") and not listener.uri.endswith(":0")
    with Machine(memory="16M") as vm:
        sender = send(listener, stream.read_bytes())
        stats = vm.incoming(listener, timeout=GUARD)
        sender.join(GUARD)
        assert stats["bytes"] == stream.stat().st_size
        assert vm.status == "paused"
        assert vm.ram.checksum() == checksum
    if where == "unix":
        assert not (tmp_path / "in.sock").exists(), "the socket file goes with the listener"


def test_a_cut_stream_leaves_the_machine_in_inmigrate(
    saved: tuple[Path, int], tmp_path: Path
) -> None:
    stream, _ = saved
    listener = Listener(f"unix:{tmp_path / 'in.sock'}")
    with Machine(memory="16M") as vm:
        data = stream.read_bytes()
        sender = send(listener, data[: len(data) // 2])
        with pytest.raises(errors.StreamError, match=r"truncated|end"):
            vm.incoming(listener, timeout=GUARD)
        sender.join(GUARD)
        assert vm.status == "inmigrate"


def test_the_wait_for_a_sender_ends_on_timeout_or_cancel(tmp_path: Path) -> None:
    with Machine(memory="16M") as vm:
        with pytest.raises(TimeoutError):
            vm.incoming(Listener(f"unix:{tmp_path / 'a.sock'}"), timeout=0)
        assert vm.status == "inmigrate"
        with pytest.raises(InterruptedError, match="cancelled"):
            vm.incoming(Listener(f"unix:{tmp_path / 'b.sock'}"), cancelled=lambda: True)


def test_a_listener_is_used_once_and_refuses_remote_addresses(tmp_path: Path) -> None:
    listener = Listener(f"unix:{tmp_path / 'c.sock'}")
    listener.close()
    with Machine(memory="16M") as vm, pytest.raises(ValueError, match="already used"):
        vm.incoming(listener)
    with pytest.raises(PermissionError, match="loopback"):
        Listener("tcp:192.0.2.1:4444")
    with pytest.raises(OSError, match=r"unknown|Unsupported|scheme"):
        Listener("ftp:x")
