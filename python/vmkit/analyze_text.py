"""``vmkit analyze FILE`` as text: what :func:`vmkit.migration.analyze`
reports, laid out for a reader.

The machine type and page size come first, then one line per record (a
damaged stream's last line is the record that did not parse), the RAM blocks,
and one line per device section with its fields flattened
(``serial0/fifo.depth=16``). Byte arrays that hold text are shown as
text (``runstate="prelaunch"``); long ones as their first bytes and their
length. Lines are cut to ``width`` unless the device was picked with
``--device`` (a glob), whose fields are then listed one per line in full.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["format_report", "format_value"]

#: Byte arrays longer than this are shown as their first bytes and length.
_SHOWN_BYTES = 8


def _is_bytes(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 4  # shorter ones read better as numbers
        and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value)
    )


def _as_bytes(value: object) -> bytes | None:
    """The bytes a field holds: a byte array, or a buffer (which the
    report gives as lowercase hex)."""
    if isinstance(value, list) and _is_bytes(value):
        return bytes(value)
    hex_digits = "0123456789abcdef"
    if isinstance(value, str) and len(value) >= 8 and all(c in hex_digits for c in value):
        return bytes.fromhex(value) if len(value) % 2 == 0 else None
    return None


def format_value(value: Any, *, full: bool = False) -> str:
    """One field's value: text for a NUL-padded printable byte array or
    buffer, ``01 02 … (N bytes)`` for a long one unless ``full``, JSON
    otherwise."""
    data = _as_bytes(value)
    if data is not None:
        text = data.rstrip(b"\0")
        if len(text) >= 2 and all(32 <= b < 127 for b in text):
            return json.dumps(text.decode("ascii"))
        if not full and len(data) > _SHOWN_BYTES:
            head = " ".join(f"{b:02x}" for b in data[:_SHOWN_BYTES])
            return f"{head} … ({len(data)} bytes)"
    return json.dumps(value, separators=(",", ":"))


def _fields(prefix: str, fields: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in fields.items():
        if key == "subsections" and isinstance(value, dict):
            for sub, sub_fields in value.items():
                if isinstance(sub_fields, dict):
                    yield from _fields(f"{sub}.", sub_fields)
            continue
        if isinstance(value, dict):
            yield from _fields(f"{prefix}{key}.", value)
        else:
            yield f"{prefix}{key}", value


def _cut(line: str, width: int) -> str:
    return line if width <= 0 or len(line) <= width else line[: width - 1] + "…"


def format_report(report: dict[str, Any], *, width: int = 0, device: str | None = None) -> str:
    """The report as text; ``width`` cuts long lines (0: never),
    ``device`` (a glob on the section's idstr) lists only those devices,
    each field in full on its own line."""
    out: list[str] = [
        f"machine: {report['machine_type'] or '-'}  page size: {report['page_size']}"
        f"  length: {report['length']} bytes  trailer: {report['trailer']}"
    ]
    if device is None:
        rows = [
            [
                str(r["offset"]),
                r["type"],
                *("-" if r[k] is None else str(r[k]) for k in _COLUMNS),
            ]
            for r in report["records"]
        ]
        err = report["error"]
        if err is not None:  # the record that did not parse ends the list
            missing = err["summary"].startswith("VMDESCRIPTION trailer missing")
            what = "(missing)" if missing else "(not parsed)"
            rows.append([str(err["record_offset"]), err["record"] or "?", "", what, "", ""])
        header = ["offset", "type", "section", "idstr", "instance", "version"]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        blocks = report["ram"]["blocks"]
        if blocks:
            out.append("ram:")
            for b in blocks:
                out.append(
                    f"  {b['idstr']}: used_length={b['used_length']:#x}"
                    f" zero_pages={b['zero_pages']} normal_pages={b['normal_pages']}"
                )
    devices = [
        d for d in report["devices"] if device is None or fnmatch.fnmatchcase(d["idstr"], device)
    ]
    if devices:
        out.append("devices:")
    for d in devices:
        head = f"  {d['idstr']} (instance {d['instance_id']}, version {d['version_id']})"
        if device is None:
            shown = " ".join(f"{k}={format_value(v)}" for k, v in _fields("", d["fields"]))
            out.append(f"{head}: {shown}")
        else:
            out.append(f"{head}:")
            out.extend(
                f"    {k} = {format_value(v, full=True)}" for k, v in _fields("", d["fields"])
            )
    if device is not None and not devices:
        out.append(f"no device section matches '{device}'")
    cut_width = width if device is None else 0
    return "".join(_cut(line, cut_width) + "\n" for line in out)


_COLUMNS = ("section_id", "idstr", "instance_id", "version_id")
