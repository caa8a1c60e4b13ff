"""The `vmkit` console script and `python -m vmkit.demo`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import vmkit
from vmkit.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"vmkit {vmkit.__version__}"


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points as e;"
            "print([x.value for x in e(group='console_scripts') if x.name == 'vmkit'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "vmkit.cli:run" in out.stdout


def test_types_and_props(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "--all"]) == 0
    out = capsys.readouterr().out
    assert "device (abstract)  <- object" in out and "none-machine  <- machine" in out
    assert main(["props", "none-machine"]) == 0
    assert "peripheral: child<container>" in capsys.readouterr().out


def test_errors_exit_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["props", "no-such-type"]) == 1
    assert "type 'no-such-type' not found" in capsys.readouterr().err
    assert main([]) == 2


def test_tree_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vmkit.cli", "tree"], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0] == "/machine (none-machine)"
    assert "  /peripheral (container)" in out


def test_demo_runs(tmp_path: Path) -> None:
    """``make demo`` as it runs it: the live migration between two ``vmkit
    run`` processes verifies and writes its plot, and the tour follows."""
    out = subprocess.run(
        [sys.executable, "-m", "vmkit.demo", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=180,  # a guard against a hang, not a pace
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # The main job: a live migration, its summary, the checks and the plot.
    assert "migration summary" in text and "completed" in text
    assert "guest pause" in text and "handover" in text and "downtime" in text
    assert "guest RAM (pmemsave of 128 MiB on each side): equal byte for byte" in text
    assert "serial0 scratch register (qom-get): 0x5a / 0x5a" in text
    assert "device state (every section of a save of each side, decoded): equal" in text
    assert "verdict: the same machine" in text
    plot = tmp_path / "out" / "migration.png"
    assert f"plot: {plot}" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("exited with status 0") == 2
    # The tour.
    assert "/machine (none-machine)" in text
    assert "refused: type 'intel-iommu' is a singleton" in text
    assert "already active at '/machine/peripheral/iommu0'" in text
    assert "iommu0's CAP register at 0xfed90008: 0x00d2008c22260206" in text
    assert "is finalizing: taking a reference refused" in text
    assert "(kept by the region)" in text
    assert "RAM checksum equal: True" in text
    assert "cont refused" in text
