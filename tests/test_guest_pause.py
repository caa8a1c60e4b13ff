"""The pause the guest felt, put together from both sides' stamps: its
arithmetic on constructed stamps (segments add up to the total, none is
negative, stamps out of order are refused), and the destination's own
stamps on an injected clock."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmkit.jobs import JobManager
from vmkit.machine import Machine
from vmkit.migration_report import (
    DESTINATION_STAMPS,
    SEGMENTS,
    SOURCE_STAMPS,
    GuestPause,
    guest_pause,
    pass_points,
    progress_of,
    summarize,
)
from vmkit.migration_settings import MigrationSettings
from vmkit.migrations import IncomingMigration, socket_address

EPOCH_US = 1_700_000_000_000_000
GUARD = 60.0  # seconds: only so that a broken test fails instead of hanging


def infos(stamps: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """query-migrate answers of both sides carrying ``stamps`` in order."""
    names = SOURCE_STAMPS + DESTINATION_STAMPS
    assert len(stamps) == len(names)
    by_name = dict(zip(names, stamps, strict=True))
    source = {"status": "completed", "x-vmkit-guest-pause": {n: by_name[n] for n in SOURCE_STAMPS}}
    dest = {
        "status": "completed",
        "x-vmkit-guest-pause": {n: by_name[n] for n in DESTINATION_STAMPS},
    }
    return source, dest


def test_each_segment_is_the_time_between_two_stamps() -> None:
    # stop, stopped, synced, ram-sent, devices-sent, loaded, resumed
    source, dest = infos([EPOCH_US + t for t in (0, 300, 310, 2310, 2400, 3400, 3450)])
    pause = guest_pause(source, dest)
    assert pause == GuestPause(
        3450,
        (
            ("stop", 300),
            ("final sync", 10),
            ("final RAM", 2000),
            ("device state", 90),
            ("destination load", 1000),
            ("handover", 50),
        ),
    )
    assert pause.total_ms == 3.45
    assert pause.as_dict() == {
        "total-ms": 3.45,
        "segments-ms": {
            "stop": 0.3,
            "final sync": 0.01,
            "final RAM": 2.0,
            "device state": 0.09,
            "destination load": 1.0,
            "handover": 0.05,
        },
    }
    assert [name for name, _, _ in SEGMENTS] == [name for name, _ in pause.segments]


@given(st.lists(st.integers(0, 10**9), min_size=7, max_size=7))
def test_the_segments_add_up_to_the_total_and_none_is_negative(gaps: list[int]) -> None:
    stamps = [EPOCH_US]
    for gap in gaps[1:]:
        stamps.append(stamps[-1] + gap)
    pause = guest_pause(*infos(stamps))
    assert pause is not None
    assert sum(us for _, us in pause.segments) == pause.total_us == stamps[-1] - stamps[0]
    assert all(us >= 0 for _, us in pause.segments)


@pytest.mark.parametrize("late", range(1, 7))
def test_stamps_out_of_order_are_refused(late: int) -> None:
    """A stamp before the one it follows (two hosts' clocks apart) makes no
    figure at all rather than a wrong one."""
    stamps = [EPOCH_US + 1000 * i for i in range(7)]
    stamps[late] = stamps[late - 1] - 1
    with pytest.raises(ValueError, match=r"out of order.*clocks synchronized"):
        guest_pause(*infos(stamps))
    summary = summarize(*infos(stamps))
    assert summary.guest_pause is None
    assert summary.guest_pause_note is not None and "out of order" in summary.guest_pause_note


def test_no_figure_without_both_sides_stamps() -> None:
    source, dest = infos([EPOCH_US + i for i in range(7)])
    qemu: dict[str, Any] = {"status": "completed", "downtime": 12}
    assert guest_pause(qemu, dest) is None
    assert guest_pause(source, qemu) is None
    assert summarize(qemu, dest).guest_pause_note == "needs vmkit on both sides"
    not_resumed = {"x-vmkit-guest-pause": {"loaded": EPOCH_US + 99}}
    assert guest_pause(source, not_resumed) is None
    assert summarize(source, not_resumed).guest_pause_note == (
        "the destination has not run since the migration"
    )
    # A stamp that is not an integer counts as missing.
    assert guest_pause(source, {"x-vmkit-guest-pause": {"loaded": 1, "resumed": True}}) is None


def test_progress_and_passes_from_query_migrate() -> None:
    info: dict[str, Any] = {
        "status": "active",
        "expected-downtime": 42,
        "ram": {
            "transferred": 5 << 20,
            "remaining": 3 << 20,
            "total": 16 << 20,
            "dirty-sync-count": 2,
            "page-size": 4096,
            "mbps": 80.0,
            "dirty-pages-rate": 256.0,
        },
        "x-vmkit-passes": [
            {
                "pass": 1,
                "dirty-pages": 4096,
                "bytes-sent": 5 << 20,
                "pages-sent": 4096,
                "zero-pages": 100,
                "duration-ms": 500.0,
                "bytes-per-second": 10e6,
                "final": False,
            }
        ],
    }
    p = progress_of(info)
    assert (p.status, p.dirty_sync_count, p.remaining, p.total) == ("active", 2, 3 << 20, 16 << 20)
    assert p.throughput == 10e6 and p.dirty_rate == 256 * 4096 and p.expected_downtime_ms == 42
    [point] = pass_points(info)
    assert (point.number, point.remaining, point.bytes_sent) == (1, 16 << 20, 5 << 20)
    assert point.throughput == 10e6 and not point.final
    # A QEMU source has no history: one point per dirty sync seen while active.
    qemu = {k: v for k, v in info.items() if k != "x-vmkit-passes"}
    samples = [progress_of(qemu), progress_of(qemu)]
    assert [q.number for q in pass_points(qemu, samples)] == [2]
    idle = progress_of({"status": "setup"})
    assert idle.throughput is None and idle.dirty_rate is None and idle.expected_downtime_ms is None


def test_socket_address_of_a_listener_uri() -> None:
    assert socket_address("tcp:127.0.0.1:4444") == {
        "type": "inet",
        "host": "127.0.0.1",
        "port": "4444",
    }
    assert socket_address("tcp:[::1]:5") == {"type": "inet", "host": "::1", "port": "5"}
    assert socket_address("unix:/run/x.sock") == {"type": "unix", "path": "/run/x.sock"}
    assert socket_address("file:/tmp/x") is None
    assert socket_address("tcp:nohost") is None


# ----- the destination's stamps, on an injected clock -----------------------


class Ticks:
    """A wall clock that moves one microsecond per reading."""

    def __init__(self) -> None:
        self.now = EPOCH_US
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.now += 1
            return self.now


@pytest.fixture
def stream(tmp_path: Path, no_machine: None) -> bytes:
    """The stream of a 16 MiB machine (saved, and the machine gone)."""
    with Machine(memory="16M") as vm:
        vm.ram.write(0x3000, b"stamped")
        vm.save(tmp_path / "src.stream")
    return (tmp_path / "src.stream").read_bytes()


def load(
    vm: Machine, stream: bytes, tmp_path: Path, *, autostart: bool, clock: Ticks
) -> IncomingMigration:
    """Sends ``stream`` into an incoming migration of ``vm``; returns the
    migration once it ended."""
    sock = tmp_path / "in.sock"
    vm.expect_incoming()
    mig = IncomingMigration(
        vm, f"unix:{sock}", MigrationSettings(), lambda _n, _d: None,
        autostart=autostart, wall_clock=clock,
    )  # fmt: skip
    assert mig.info()["socket-address"] == [{"type": "unix", "path": str(sock)}]
    job = JobManager().start("incoming", mig.run)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(stream)
    job.join(GUARD)
    assert mig.status == "completed", mig.info()
    return mig


def test_autostart_stamps_the_load_then_the_resume(stream: bytes, tmp_path: Path) -> None:
    clock = Ticks()
    with Machine(memory="16M") as vm:
        mig = load(vm, stream, tmp_path, autostart=True, clock=clock)
        assert vm.status == "running"
        stamps = mig.info()["x-vmkit-guest-pause"]
        assert stamps == {"loaded": EPOCH_US + 1, "resumed": EPOCH_US + 2}
        assert "socket-address" not in mig.info()
        vm.stop()
        vm.cont()
        assert mig.info()["x-vmkit-guest-pause"] == stamps, "only the first run ends the pause"


def test_a_destination_left_paused_is_stamped_when_it_first_runs(
    stream: bytes, tmp_path: Path
) -> None:
    clock = Ticks()
    with Machine(memory="16M") as vm:
        mig = load(vm, stream, tmp_path, autostart=False, clock=clock)
        assert vm.status == "paused"
        assert mig.info()["x-vmkit-guest-pause"] == {"loaded": EPOCH_US + 1}
        clock.now += 5000
        vm.cont()
        assert mig.info()["x-vmkit-guest-pause"] == {
            "loaded": EPOCH_US + 1,
            "resumed": EPOCH_US + 5002,
        }
