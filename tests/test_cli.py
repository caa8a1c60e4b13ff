"""The `vmkit` console script and `python -m vmkit.demo`."""

from __future__ import annotations

import subprocess
import sys

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
    assert "vmkit.cli:main" in out.stdout


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


def test_demo_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vmkit.demo"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "/machine (none-machine)" in out
    assert "refused: type 'demo-intel-iommu' is a singleton" in out
    assert "is finalizing: taking a reference refused" in out
    assert "(kept by the region)" in out
    # The main job: vmkit run driven over QMP.
    assert "events seen: DEVICE_DELETED, RESUME, STOP, RESUME, SHUTDOWN" in out
    assert "a second IOMMU refused (GenericError)" in out
    assert "vmkit run exited with status 0; socket removed: True" in out
    # Save/restore.
    assert "RAM checksum equal: True" in out
    assert "cont refused" in out
