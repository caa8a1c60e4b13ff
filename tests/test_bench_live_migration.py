"""A smoke run of ``benches/py/bench_live_migration.py`` (the benchmark
itself runs with ``make bench``): 16 MiB machines, one round, vmkit only,
so that the benchmark keeps working as the code under it changes. It
checks what the benchmark reports, never how fast anything was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benches" / "py" / "bench_live_migration.py"


def test_the_live_migration_benchmark_runs(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--smoke",
            "--no-qemu",
            "--no-ceiling",
            "--quiet",
            "--json",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    runs = report["throughput"]["16M"]
    assert set(runs) == {"unix", "tcp"}
    for transport in runs.values():
        sample = transport["samples"]["vmkit"][0]
        assert sample["normal_pages"] == (16 << 20) // 4096
        assert transport["gbps"]["vmkit"] > 0
    conv = report["convergence"]
    for key in ("25%", "50%", "150% auto-converge"):
        (run,) = conv[key]["runs"]
        assert run["switchover"] == "converged", run
        assert run["pause_ms"] > 0 and run["transferred"] >= 16 << 20
    # Nothing left behind in the work directory.
    assert list(tmp_path.iterdir()) == []
