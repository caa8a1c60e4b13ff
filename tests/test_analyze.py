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
    assert set(report) == {
        "machine_type", "page_size", "trailer", "records", "ram", "devices", "length", "error"
    }  # fmt: skip
    assert report["error"] is None
    assert (report["machine_type"], report["page_size"]) == ("pc-q35-9.2", 4096)
    assert report["trailer"] == "present"
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
    assert (report["error"]["record"], report["error"]["record_offset"]) == ("PART", 76)


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        migration.analyze(tmp_path / "missing.stream")


def test_cli_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(SAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.pop(0) == (
        "machine: pc-q35-9.2  page size: 4096  length: 12874 bytes  trailer: present"
    )
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
        # Buffers come as hex: the same rules.
        (bytes(range(1, 41)).hex(), "01 02 03 04 05 06 07 08 … (40 bytes)"),
        ((b"running" + bytes(93)).hex(), '"running"'),
        ("00000000", '"00000000"'),
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
    assert "START" in captured.out
    assert captured.out.splitlines()[4].split() == ["76", "PART", "(not", "parsed)"]
    assert captured.err == (
        "vmkit: cannot parse record PART at offset 76 (section 'ram'):"
        " stream truncated at offset 176: RAM page\n"
    )
    assert main(["analyze", "--json", str(truncated)]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["error"]["offset"] == 176
    assert [r["type"] for r in report["records"]] == ["CONFIGURATION", "START"]
    assert "cannot parse record PART at offset 76" in captured.err


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
    assert errors[0].startswith("vmkit: VMDESCRIPTION trailer damaged at offset "), errors[0]
    assert "VMDESCRIPTION trailer too large" in errors[0]
    assert "Traceback" not in run.stderr


# ----- damaged streams: a real saved one, cut and flipped -----------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A stream ``vmkit save`` writes: RAM, a demo device, the host bridge."""
    path = tmp_path_factory.mktemp("saved") / "vm.stream"
    args = ["save", str(path), "-m", "1", "--plugin", "vmkit.demo_devices", "--quiet"]
    assert main([*args, "-device", "demo-isa-serial,id=serial0"]) == 0
    return path.read_bytes()


def _starts(report: dict[str, object]) -> list[int]:
    """Where each record starts: the file header, then the records listed."""
    records = report["records"]
    assert isinstance(records, list)
    return [0, *(r["offset"] for r in records)]


def _framing(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["offset"], r["type"], r["idstr"], r.get("body_len")) for r in records]


def test_a_cut_names_the_record_it_falls_in_and_keeps_those_before(
    saved: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "whole.stream"
    path.write_bytes(saved)
    whole = migration.analyze(path)
    assert whole["error"] is None and whole["trailer"] == "present"
    starts = _starts(whole)
    assert [r["type"] for r in whole["records"]][-2:] == ["EOF", "VMDESCRIPTION"]
    cut_path = tmp_path / "cut.stream"
    # Every fifth offset, and each record's first bytes and the ones before.
    near = {start + d for start in starts for d in (-1, 0, 1, 2, 5)}
    cuts = sorted(c for c in {*range(0, len(saved), 5), *near} if 0 <= c < len(saved))
    for n, cut in enumerate(cuts):
        cut_path.write_bytes(saved[:cut])
        report = migration.analyze(cut_path)
        err = report["error"]
        if cut == starts[-1]:
            # Only the trailer is missing; every device here has a known
            # VMState in this process (the plugin is loaded), so none needed it.
            assert report["trailer"] == "missing"
            assert err is None and len(report["devices"]) == len(whole["devices"])
            continue
        assert err is not None, cut
        at = max(i for i, start in enumerate(starts) if start <= cut)
        assert err["record_offset"] == starts[at], (cut, err)
        assert f"at offset {starts[at]}" in err["summary"], (cut, err)
        assert _framing(report["records"]) == _framing(whole["records"][: max(at - 1, 0)]), cut
        if at == len(starts) - 1:  # the trailer
            assert "trailer damaged at offset" in err["summary"], (cut, err)
        if n % 25 == 0:  # the CLI, text and JSON: one line on stderr
            assert main(["analyze", str(cut_path)]) == 1
            captured = capsys.readouterr()
            assert captured.err == f"vmkit: {err['summary']}\n"
            assert main(["analyze", "--json", str(cut_path)]) == 1
            captured = capsys.readouterr()
            assert json.loads(captured.out) == report
            assert captured.err.count("\n") == 1


def test_flipped_bytes_are_named_never_raised(saved: bytes, tmp_path: Path) -> None:
    path = tmp_path / "whole.stream"
    path.write_bytes(saved)
    whole = migration.analyze(path)
    starts = _starts(whole)
    flipped = tmp_path / "flipped.stream"
    damaged = 0
    for i in range(0, len(saved), 3):
        data = bytearray(saved)
        data[i] ^= 0x41
        flipped.write_bytes(data)
        report = migration.analyze(flipped)
        err = report["error"]
        if err is None:
            continue
        damaged += 1
        # The records that end before the damage are listed as in the whole
        # stream (a flipped length may move the later ones), and the record
        # named is the one after the last listed.
        assert f"at offset {err['record_offset']}" in err["summary"], (i, err)
        # (A flip in the trailer can move any: its sizes frame the devices.)
        limit = i if i < starts[-1] else 0
        intact = [r for r, end in zip(whole["records"], starts[2:], strict=False) if end <= limit]
        assert _framing(report["records"][: len(intact)]) == _framing(intact), i
        assert all(r["offset"] < err["record_offset"] for r in report["records"]), (i, err)
    assert damaged > len(saved) // 6  # header, framing and trailer bytes are many


def test_a_damaged_stream_is_one_line_without_traceback(saved: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.stream"
    whole = tmp_path / "whole.stream"
    whole.write_bytes(saved)
    starts = _starts(migration.analyze(whole))
    for cut in (starts[3] + 40, starts[-1], len(saved) - 2):  # RAM, no trailer, half a trailer
        path.write_bytes(saved[:cut])
        run = subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "analyze", str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert len(run.stderr.splitlines()) == 1, run.stderr
        assert "offset" in run.stderr
        assert "EOF" in run.stdout or cut < starts[-1]
