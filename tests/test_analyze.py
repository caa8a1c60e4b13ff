"""`vmkit.migration.analyze` and `vmkit analyze` on a sample stream.

``tests/data/sample.stream`` is written by the Rust test
``python_fixture_is_up_to_date`` in ``crates/vmkit-migration/tests/analyze_report.rs``
(``VMKIT_WRITE_FIXTURES=1`` regenerates it).
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vmkit import migration
from vmkit.analyze_text import format_report, format_value
from vmkit.cli import main

SAMPLE = Path(__file__).parent / "data" / "sample.stream"
TYPES = ["CONFIGURATION", "START", "PART", "END", "FULL", "EOF", "VMDESCRIPTION"]
FIELDS = {
    "ctrl": 5,
    "count": 0x1234,
    "regs": [7, 9],
    "subsections": {"serial0/fifo": {"depth": 16}},
}


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    # 100 bytes into the RAM PART section's body (a page record).
    path = tmp_path / "cut.stream"
    path.write_bytes(SAMPLE.read_bytes()[:176])
    return path


def test_report_layout() -> None:
    report = migration.analyze(SAMPLE)
    assert set(report) == {"records", "ram", "devices", "length", "error"}
    assert report["error"] is None
    assert report["length"] == SAMPLE.stat().st_size
    records = report["records"]
    assert [r["type"] for r in records] == TYPES
    assert [r["offset"] for r in records] == sorted(r["offset"] for r in records)
    assert records[0]["offset"] == 8 and records[0]["machine_type"] == "pc-q35-9.2"
    for r in records:
        assert {"offset", "type", "section_id", "idstr", "instance_id", "version_id"} <= set(r)
    assert [r["idstr"] for r in records[1:4]] == ["ram", "ram", "ram"]
    full = records[4]
    assert (full["idstr"], full["section_id"], full["version_id"]) == ("serial0", 1, 3)
    assert full["fields"] == FIELDS
    assert report["ram"] == {
        "blocks": [{"idstr": "pc.ram", "used_length": 16384, "zero_pages": 2, "normal_pages": 3}]
    }
    assert [d["idstr"] for d in report["devices"]] == ["serial0"]
    assert report["devices"][0]["fields"] == FIELDS


def test_truncated_report(truncated: Path) -> None:
    report = migration.analyze(truncated)
    assert [r["type"] for r in report["records"]] == ["CONFIGURATION", "START"]
    assert report["error"]["offset"] == 176
    assert report["error"]["section"] == "ram"
    assert "truncated" in report["error"]["message"]


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        migration.analyze(tmp_path / "missing.stream")


def test_cli_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(SAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.pop(0) == "machine: pc-q35-9.2  length: 12874 bytes"
    assert lines[0].split() == ["offset", "type", "section", "idstr", "instance", "version"]
    assert lines[1].split() == ["8", "CONFIGURATION", "-", "-", "-", "-"]
    assert lines[5].split() == ["12456", "FULL", "1", "serial0", "0", "3"]
    # Aligned columns: each row's idstr starts under the header's.
    col = lines[0].index("idstr")
    assert lines[5][col:].startswith("serial0") and lines[2][col:].startswith("ram")
    out = "\n".join(lines)
    assert "pc.ram: used_length=0x4000 zero_pages=2 normal_pages=3" in out
    assert (
        "  serial0 (instance 0, version 3): ctrl=5 count=4660 regs=[7,9] serial0/fifo.depth=16"
        in out
    )


def test_cli_one_device_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--device", "ser*", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "devices:",
        "  serial0 (instance 0, version 3):",
        "    ctrl = 5",
        "    count = 4660",
        "    regs = [7,9]",
        "    serial0/fifo.depth = 16",
    ]
    assert main(["analyze", "--device", "nope*", str(SAMPLE)]) == 0
    assert "no device section matches 'nope*'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (list(b"prelaunch") + [0] * 91, '"prelaunch"'),  # globalstate.runstate
        (list(range(1, 41)), "01 02 03 04 05 06 07 08 … (40 bytes)"),
        ([7, 9], "[7,9]"),
        (5, "5"),
        ([1000, 2], "[1000,2]"),
    ],
)
def test_values_read_well(value: object, shown: str) -> None:
    assert format_value(value) == shown


def test_long_lines_are_cut_to_the_width() -> None:
    report = migration.analyze(SAMPLE)
    text = format_report(report, width=40)
    assert all(len(line) <= 40 for line in text.splitlines())
    assert "  serial0 (instance 0, version 3): ctrl…" in text


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--json", str(SAMPLE)]) == 0
    assert json.loads(capsys.readouterr().out) == migration.analyze(SAMPLE)


def test_cli_truncated(truncated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(truncated)]) == 1
    captured = capsys.readouterr()
    assert "START" in captured.out and "PART" not in captured.out
    assert "error at offset 176 (section 'ram')" in captured.err
    assert main(["analyze", "--json", str(truncated)]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["error"]["offset"] == 176
    assert "error at offset 176" in captured.err


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "missing.stream")]) == 1
    assert "No such file" in capsys.readouterr().err


def crafted_trailer_stream(path: Path) -> Path:
    """A stream whose trailer nests a capped array of structs in another:
    2**40 zero-size elements described over an empty device body."""
    cap = 1 << 20
    inner = {"name": "inner", "array_len": cap, "type": "buffer", "size": 0}
    outer = {
        "name": "outer",
        "array_len": cap,
        "type": "struct",
        "struct": {"vmsd_name": "elem", "version": 1, "fields": [inner]},
        "size": 0,
    }
    device = {
        "name": "crafted",
        "instance_id": 0,
        "vmsd_name": "crafted",
        "version": 1,
        "fields": [outer],
    }
    trailer = json.dumps({"page_size": 4096, "devices": [device]}, separators=(",", ":")).encode()
    idstr = b"crafted"
    stream = b"QEVM" + struct.pack(">I", 3)
    # FULL section 1 (idstr, instance 0, version 1), empty body, footer.
    stream += b"\x04" + struct.pack(">IB", 1, len(idstr)) + idstr + struct.pack(">II", 0, 1)
    stream += b"\x7e" + struct.pack(">I", 1)
    stream += b"\x00" + b"\x06" + struct.pack(">I", len(trailer)) + trailer
    path.write_bytes(stream)
    return path


def _limit_memory() -> None:
    # Should the budget ever regress, fail fast instead of eating the machine.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_a_trailer_describing_too_much_is_one_clear_error(tmp_path: Path) -> None:
    stream = crafted_trailer_stream(tmp_path / "crafted.stream")
    report = migration.analyze(stream)
    assert report["error"] is not None
    assert "trailer too large" in report["error"]["message"]
    assert report["devices"] == []
    cli = "import sys; from vmkit.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run(
        [sys.executable, "-c", cli, "analyze", str(stream)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_limit_memory,
    )
    assert run.returncode == 1, run.stderr
    errors = run.stderr.splitlines()
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith("vmkit: error at offset "), errors[0]
    assert "VMDESCRIPTION trailer too large" in errors[0]
    assert "Traceback" not in run.stderr
