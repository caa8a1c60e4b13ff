"""Where a save goes: a failed save keeps the stream that was at its path,
I/O failures are ``OSError`` with the stream offset, and a FIFO nobody reads
ends in a timeout or a signal rather than a hang."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

from vmkit import migration
from vmkit.cli import main
from vmkit.machine import Machine
from vmkit.memory import RamBlock

MACHINE_TYPE = "pc-q35-vmkit"
# Four times the FIFO buffer vmkit asks for, so a pipe cannot hold a stream.
RAM_SIZE = 4 << 20


@pytest.fixture
def ram() -> RamBlock:
    """A block with no zero page: its stream is longer than the block."""
    block = RamBlock.anonymous("pc.ram", RAM_SIZE)
    block.write(0, bytes(range(1, 256)) * (RAM_SIZE // 255) + bytes(RAM_SIZE % 255))
    return block


def save(path: Path, ram: RamBlock, **kw: Any) -> dict[str, int]:
    return migration.save(path, machine_type=MACHINE_TYPE, ram=[ram], **kw)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only): a disk that fills up."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_keeps_the_old_stream_and_leaves_no_file(
    tiny_tmpfs: Path, ram: RamBlock
) -> None:
    path = tiny_tmpfs / "vm.stream"
    path.write_bytes(b"the previous stream")
    with pytest.raises(OSError) as info:
        save(path, ram)
    e = info.value
    assert e.errno == errno.ENOSPC
    assert e.filename == str(path)
    # The temporary file took what fitted beside the old one, then failed.
    assert isinstance(e.offset, int) and 0 < e.offset <= 64 * 1024  # type: ignore[attr-defined]
    assert f"at stream offset {e.offset}" in str(e)  # type: ignore[attr-defined]
    assert path.read_bytes() == b"the previous stream"
    assert sorted(os.listdir(tiny_tmpfs)) == ["vm.stream"]


def test_a_full_device_fails_at_offset_zero(ram: RamBlock) -> None:
    # /dev/full refuses the first write, the flush of the buffered header.
    with pytest.raises(OSError) as info:
        save(Path("/dev/full"), ram)
    assert info.value.errno == errno.ENOSPC
    assert info.value.offset == 0  # type: ignore[attr-defined]


def test_a_good_save_replaces_the_file(tmp_path: Path, ram: RamBlock) -> None:
    path = tmp_path / "vm.stream"
    path.write_bytes(b"old")
    stats = save(path, ram)
    assert path.stat().st_size == stats["bytes"]
    assert sorted(os.listdir(tmp_path)) == ["vm.stream"]
    assert migration.analyze(path)["error"] is None


def test_a_reader_that_goes_away_is_a_broken_pipe_with_its_offset(
    tmp_path: Path, ram: RamBlock
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    took: list[int] = []

    def read_some_then_close() -> None:
        # A blocking open: counts as a reader while it waits for the writer.
        # Unbuffered reads, so `took` is what left the pipe.
        fd = os.open(fifo, os.O_RDONLY)
        try:
            n = 0
            while n < 10_000:
                chunk = os.read(fd, 10_000 - n)
                if not chunk:
                    break
                n += len(chunk)
            took.append(n)
        finally:
            os.close(fd)

    reader = threading.Thread(target=read_some_then_close)
    reader.start()
    try:
        with pytest.raises(BrokenPipeError) as info:
            save(fifo, ram)
    finally:
        reader.join()
    assert info.value.errno == errno.EPIPE
    offset = info.value.offset  # type: ignore[attr-defined]
    # At least what the reader took; at most that and a full pipe buffer.
    assert took and took[0] <= offset <= took[0] + (1 << 20)
    assert fifo.exists()


def test_a_fifo_without_a_reader_times_out(tmp_path: Path, ram: RamBlock) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TimeoutError, match="no reader opened the FIFO") as info:
        save(fifo, ram, open_timeout=0.05)
    assert info.value.errno == errno.ETIMEDOUT
    assert info.value.filename == str(fifo)
    assert info.value.offset is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="open_timeout"):
        save(fifo, ram, open_timeout=-1)


class InterruptedBySignalError(Exception):
    """Raised by the test's signal handler."""


def interrupted_by_signal(during: Callable[[], object], code: CodeType) -> None:
    """Runs ``during`` while another thread sends SIGUSR1 until it returns;
    the handler raises only while the Python frame is ``code`` (the call
    the Rust wait calls back from), so a signal before or after is a no-op.
    ``during`` must end with that exception."""
    returned = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if frame is not None and frame.f_code is code:
            raise InterruptedBySignalError

    def send() -> None:
        while not returned.wait(0.01):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        with pytest.raises(InterruptedBySignalError):
            during()
    finally:
        returned.set()
        sender.join()
        signal.signal(signal.SIGUSR1, previous)


def test_a_signal_ends_the_wait_for_a_fifo_reader(tmp_path: Path, ram: RamBlock) -> None:
    # No reader ever comes: only the signal can end the wait (the timeout
    # is a safety net far beyond it).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    interrupted_by_signal(lambda: save(fifo, ram, open_timeout=120), migration.save.__code__)


def test_a_signal_ends_the_wait_for_a_fifo_writer(tmp_path: Path, ram: RamBlock) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    interrupted_by_signal(
        lambda: migration.restore(fifo, machine_type=MACHINE_TYPE, ram=[ram]),
        migration.restore.__code__,
    )


class CancelledOnThirdCall:
    """A ``cancelled`` callable that says yes from its third call on, and
    remembers the threads that called it."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self) -> bool:
        self.calls += 1
        self.threads.add(threading.get_ident())
        return self.calls >= 3


def in_a_thread(work: Callable[[], object]) -> BaseException | None:
    """Runs ``work`` in a thread other than the main one (where no signal
    handler runs); returns what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as e:
            raised.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(60)  # a guard against a hang, not a pace
    assert not worker.is_alive(), "the wait did not end"
    return raised[0] if raised else None


def test_cancelled_ends_the_wait_for_a_fifo_reader_off_the_main_thread(
    tmp_path: Path, ram: RamBlock
) -> None:
    # No reader ever comes and no signal handler runs off the main thread:
    # only ``cancelled`` can end the wait (the timeout is far beyond it).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cancelled = CancelledOnThirdCall()
    error = in_a_thread(lambda: save(fifo, ram, open_timeout=120, cancelled=cancelled))
    assert isinstance(error, InterruptedError)
    assert str(error) == "save cancelled"
    assert cancelled.calls == 3, "polled while waiting, until it said yes"
    assert threading.get_ident() not in cancelled.threads


def test_cancelled_ends_the_wait_for_a_fifo_writer(tmp_path: Path, ram: RamBlock) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cancelled = CancelledOnThirdCall()
    error = in_a_thread(
        lambda: migration.restore(fifo, machine_type=MACHINE_TYPE, ram=[ram], cancelled=cancelled)
    )
    assert isinstance(error, InterruptedError)
    assert str(error) == "restore cancelled"
    assert cancelled.calls == 3


def test_an_error_in_cancelled_ends_the_wait_with_that_error(tmp_path: Path, ram: RamBlock) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def broken() -> bool:
        raise LookupError("no such job")

    with pytest.raises(LookupError, match="no such job"):
        save(fifo, ram, open_timeout=120, cancelled=broken)


@pytest.mark.usefixtures("no_machine")
@pytest.mark.parametrize("running", [False, True])
def test_a_machine_leaves_finish_migrate_after_a_failed_save(tmp_path: Path, running: bool) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Machine(memory="16M", workload_rate=1 << 20) as vm:
        if running:
            vm.cont()
        before = vm.status
        with pytest.raises(TimeoutError):
            vm.save(fifo, open_timeout=0)
        assert vm.status == before
        # And it can save again: a successful save ends in postmigrate,
        # then runs again if the machine ran.
        assert vm.save(tmp_path / "vm.stream")["ram_bytes"] == 16 << 20
        assert vm.status == ("running" if running else "postmigrate")
        if running:
            vm.stop()


@pytest.mark.usefixtures("no_machine")
@pytest.mark.parametrize("running", [False, True])
def test_a_cancelled_machine_save_leaves_finish_migrate(tmp_path: Path, running: bool) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Machine(memory="16M", workload_rate=1 << 20) as vm:
        if running:
            vm.cont()
        before = vm.status
        states: list[str] = []
        vm.add_state_listener(lambda _old, new: states.append(new))
        # In a worker thread, as the monitor's save job runs it.
        error = in_a_thread(lambda: vm.save(fifo, cancelled=lambda: True))
        assert isinstance(error, InterruptedError)
        assert str(error) == "save cancelled"
        assert states == ["finish-migrate", before]
        assert vm.status == before
        if running:
            vm.stop()


@pytest.mark.usefixtures("no_machine")
def test_a_cancelled_machine_restore_stays_in_inmigrate(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Machine(memory="16M") as vm:
        error = in_a_thread(lambda: vm.restore(fifo, cancelled=lambda: True))
        assert isinstance(error, InterruptedError)
        assert str(error) == "restore cancelled"
        assert vm.status == "inmigrate"


@pytest.mark.usefixtures("no_machine")
def test_vmkit_save_reports_a_full_disk_in_one_line(
    tiny_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tiny_tmpfs / "vm.stream"
    path.write_bytes(b"the previous stream")
    # 64 MiB of zero pages is about 147 KiB of stream: more than the disk.
    assert main(["save", str(path), "-m", "64M"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vmkit: {path}: No space left on device at stream offset "), err
    assert err.count("\n") == 1
    assert path.read_bytes() == b"the previous stream"
