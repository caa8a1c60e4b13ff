"""``vmkit migrate`` between two ``vmkit run`` processes: the migration
completes, the destination holds the source's RAM, the summary and the
plot say what happened; user mistakes and failures are one line on stderr.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_vmkit_run import VmkitProcess, start_vmkit
from vmkit.migration_driver import parse_monitor_address, uri_of_socket_address
from vmkit.migration_report import DESTINATION_STAMPS, SOURCE_STAMPS, guest_pause
from vmkit.qmp import QMPSocket

GUARD = 120.0  # seconds: only so that a broken test fails instead of hanging
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PASS_KEYS = {
    "pass",
    "dirty-pages",
    "bytes-sent",
    "pages-sent",
    "zero-pages",
    "duration-ms",
    "bytes-per-second",
    "final",
}


def vmkit_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "migrate", *args],
        # Wide enough that no table cell wraps.
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )


def one_line_error(out: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    """The command failed with ``status`` and one stderr line containing ``text``."""
    assert out.returncode == status, (out.stdout, out.stderr)
    assert out.stderr.startswith("vmkit: ") and out.stderr.count("\n") == 1, out.stderr
    assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def procs() -> Iterator[list[VmkitProcess]]:
    """Processes the test starts; each must exit cleanly."""
    started: list[VmkitProcess] = []
    yield started
    assert [p.stop() for p in started] == [0] * len(started), [p.stderr for p in started]


def test_migrate_between_two_vmkit_processes(tmp_path: Path, procs: list[VmkitProcess]) -> None:
    src = start_vmkit("-m", "32M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "8M")
    procs.append(src)
    # No workload on the destination: its RAM stays as it was loaded.
    dst = start_vmkit(
        "-m", "32M", "--qmp", f"unix:{tmp_path / 'd.qmp'}",
        "--workload-rate", "0", "--incoming", "tcp:127.0.0.1:0",
    )  # fmt: skip
    procs.append(dst)
    plot = tmp_path / "passes.png"
    out = vmkit_migrate(
        f"unix:{src.socket}", f"unix:{dst.socket}", "--json", "--plot", str(plot),
        "--max-bandwidth", "256M", "--downtime-limit", "300",
    )  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and summary["error-desc"] is None
    assert summary["destination-status"] == "running", "autostart: the destination runs"
    assert summary["uri"].startswith("tcp:127.0.0.1:") and not summary["uri"].endswith(":0")
    assert summary["ram-total"] == 32 << 20 and summary["transferred"] > 0
    assert isinstance(summary["downtime-ms"], int) and isinstance(summary["total-time-ms"], int)
    passes = summary["passes"]
    assert summary["pass-count"] == len(passes) >= 2
    assert [p["pass"] for p in passes] == list(range(1, len(passes) + 1))
    assert [p["final"] for p in passes] == [False] * (len(passes) - 1) + [True]
    assert passes[0]["remaining"] == 32 << 20, "the first pass sends every page"
    pause = summary["guest-pause"]
    assert summary["guest-pause-note"] is None
    segments = pause["segments-ms"]
    assert list(segments) == [
        "stop", "final sync", "final RAM", "device state", "destination load", "handover",
    ]  # fmt: skip
    assert all(ms >= 0 for ms in segments.values())
    assert sum(segments.values()) == pytest.approx(pause["total-ms"], abs=1e-6)
    assert summary["plot"] == str(plot) and plot.read_bytes()[:8] == PNG_MAGIC

    with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
        source, dest = s.execute("query-migrate"), d.execute("query-migrate")
        assert all(set(p) == PASS_KEYS for p in source["x-vmkit-passes"])
        stamps = source["x-vmkit-guest-pause"]
        assert list(stamps) == list(SOURCE_STAMPS)
        assert list(stamps.values()) == sorted(stamps.values())
        assert list(dest["x-vmkit-guest-pause"]) == list(DESTINATION_STAMPS)
        again = guest_pause(source, dest)
        assert again is not None and again.total_ms == pause["total-ms"]
        assert s.execute("query-status")["status"] == "postmigrate"
        assert d.execute("query-status")["status"] == "running"
        for qmp, name in ((s, "src.mem"), (d, "dst.mem")):
            qmp.execute("pmemsave", val=0, size=32 << 20, filename=str(tmp_path / name))
    assert filecmp.cmp(tmp_path / "src.mem", tmp_path / "dst.mem", shallow=False)


def test_migrate_into_a_deferred_destination_left_paused(
    tmp_path: Path, procs: list[VmkitProcess]
) -> None:
    """``-incoming defer``: vmkit migrate issues migrate-incoming on the
    given URI, sets the capabilities on both sides, lets the source go on
    from its pause before switchover (``migrate-continue``), and with
    ``--leave-paused`` the destination waits; the pause the guest feels
    ends when it is run."""
    src = start_vmkit("-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "4M")
    procs.append(src)
    dst = start_vmkit(
        "-S", "-m", "16M", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "--incoming", "defer"
    )
    procs.append(dst)
    uri = f"unix:{tmp_path / 'mig.sock'}"
    out = vmkit_migrate(
        f"unix:{src.socket}", dst.socket, "--uri", uri, "--leave-paused",
        "--capability", "events=on", "--capability", "pause-before-switchover=on", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = out.stdout
    assert "migration summary" in text and "completed" in text
    assert "the destination has not run since the migration" in text
    assert f"destination: paused (migrated over {uri})" in text
    with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
        for qmp in (s, d):
            caps = {c["capability"]: c["state"] for c in qmp.execute("query-migrate-capabilities")}
            assert caps["events"] is True and caps["pause-before-switchover"] is True
        assert d.execute("query-status")["status"] == "paused"
        assert list(d.execute("query-migrate")["x-vmkit-guest-pause"]) == ["loaded"]
        d.execute("cont")
        pause = guest_pause(s.execute("query-migrate"), d.execute("query-migrate"))
        assert pause is not None and dict(pause.segments)["handover"] >= 0


def test_ctrl_c_cancels_the_migration(tmp_path: Path, procs: list[VmkitProcess]) -> None:
    """SIGINT while it migrates: migrate_cancel, exit 130, the source runs on."""
    src = start_vmkit("-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "8M")
    procs.append(src)
    dst = start_vmkit(
        "-m", "16M", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "--incoming", "tcp:127.0.0.1:0"
    )
    procs.append(dst)
    # 64 KiB/s: the first pass alone takes far longer than the test.
    cli = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", "migrate", f"unix:{src.socket}",
         f"unix:{dst.socket}", "--max-bandwidth", "64K", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with QMPSocket(src.socket, negotiate=True) as s:
            deadline = time.monotonic() + GUARD
            while s.execute("query-migrate").get("status") != "active":
                assert time.monotonic() < deadline and cli.poll() is None
                time.sleep(0.02)
            cli.send_signal(signal.SIGINT)
            _, err = cli.communicate(timeout=GUARD)
            assert cli.returncode == 130, err
            assert err == "vmkit: interrupted: the migration was cancelled\n"
            assert s.execute("query-migrate")["status"] == "cancelled"
            assert s.execute("query-status")["status"] == "running"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--capability", "events=maybe"], "expected NAME=on or NAME=off"),
        (["--capability", "=on"], "expected NAME=on or NAME=off"),
        (["--max-bandwidth", "fast"], "--max-bandwidth"),
        (["--downtime-limit=soon"], "not a number of milliseconds"),
        (["--uri="], "--uri is empty"),
        (["--plot", "/nonexistent/dir/p.png"], "--plot: no directory"),
    ],
)
def test_option_mistakes_exit_2(args: list[str], text: str) -> None:
    one_line_error(vmkit_migrate("unix:/nonexistent/s", "unix:/nonexistent/d", *args), 2, text)


def test_address_mistakes_and_unreachable_monitors() -> None:
    one_line_error(vmkit_migrate("tcp:nohost", "unix:/x"), 2, "expected tcp:HOST:PORT")
    one_line_error(vmkit_migrate("unix:", "unix:/x"), 2, "expected unix:PATH")
    one_line_error(
        vmkit_migrate("unix:/nonexistent/s.qmp", "unix:/nonexistent/d.qmp"),
        1,
        "cannot connect to the source monitor unix:/nonexistent/s.qmp",
    )


def test_refusals_and_failures_are_one_line(tmp_path: Path, procs: list[VmkitProcess]) -> None:
    src = start_vmkit("-S", "-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}")
    procs.append(src)
    plain = start_vmkit("-S", "-m", "16M", "--qmp", f"unix:{tmp_path / 'p.qmp'}")
    procs.append(plain)
    one_line_error(
        vmkit_migrate(f"unix:{src.socket}", f"unix:{plain.socket}"),
        1,
        "the destination is not waiting for a migration (status 'prelaunch'",
    )
    deferred = start_vmkit(
        "-m", "16M", "--qmp", f"unix:{tmp_path / 'w.qmp'}", "--incoming", "defer"
    )
    procs.append(deferred)
    one_line_error(
        vmkit_migrate(f"unix:{src.socket}", deferred.socket, "--capability", "no-such-cap=on"),
        1,
        "destination: migrate-set-capabilities:",
    )
    # A destination of another shape refuses the stream.
    small = start_vmkit(
        "-m", "8M", "--qmp", f"unix:{tmp_path / 'x.qmp'}", "--incoming", "tcp:127.0.0.1:0"
    )
    procs.append(small)
    out = vmkit_migrate(f"unix:{src.socket}", f"unix:{small.socket}", "--quiet")
    one_line_error(out, 1, "fail")
    with QMPSocket(small.socket, negotiate=True) as q:
        assert q.execute("query-migrate")["status"] == "failed"
        assert q.execute("query-status")["status"] == "inmigrate"


def test_monitor_addresses_and_socket_addresses() -> None:
    assert parse_monitor_address("unix:/run/a.qmp") == "/run/a.qmp"
    assert parse_monitor_address("/run/a.qmp") == "/run/a.qmp"
    assert parse_monitor_address("tcp:[::1]:4444") == ("::1", 4444)
    assert parse_monitor_address("tcp:localhost:1") == ("localhost", 1)
    inet: dict[str, Any] = {"type": "inet", "host": "::1", "port": "5"}
    assert uri_of_socket_address(inet) == "tcp:[::1]:5"
    assert uri_of_socket_address({"type": "inet", "host": "10.0.0.1", "port": "7"}) == (
        "tcp:10.0.0.1:7"
    )
    assert uri_of_socket_address({"type": "unix", "path": "/m.sock"}) == "unix:/m.sock"
    assert uri_of_socket_address({"type": "fd", "str": "3"}) is None
