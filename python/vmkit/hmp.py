"""The text of QEMU's human monitor commands that vmkit serves: reading
their arguments and writing their output as QEMU 7.2 does. Pure functions
and a little state; the monitor (:mod:`vmkit.monitor`) does the I/O.

* :func:`parse_format` reads the ``/fmt`` of ``xp``, ``i`` and ``o``
  (count, format ``x d u o c``, size ``b h w g``) with QEMU's defaults,
  which each use changes (:class:`FormatDefaults`).
* :func:`parse_number` reads an integer argument (C's literals).
* :func:`memory_dump` renders ``xp``; :func:`port_line` ``i``.
* :func:`info_pci` renders ``info pci`` from ``query-pci``'s answer.

A mistake in the arguments raises :class:`HMPUsageError`, whose text is
what QEMU prints (HMP reports errors as output; the QMP command succeeds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DUMP_BYTES",
    "Format",
    "FormatDefaults",
    "HMPUsageError",
    "info_pci",
    "memory_dump",
    "parse_format",
    "parse_number",
    "port_line",
]

#: The most bytes one ``xp`` shows (QEMU has no bound; vmkit keeps an
#: answer bounded).
MAX_DUMP_BYTES = 1 << 20

_SIZES = {"b": 1, "h": 2, "w": 4, "g": 8, "L": 8}
_FORMATS = "oduxic"


class HMPUsageError(ValueError):
    """Arguments QEMU's monitor would refuse; ``str()`` is QEMU's output."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(f'{message}\nTry "help {command}" for more information\n')


@dataclass
class FormatDefaults:
    """QEMU's remembered ``/fmt`` defaults: what a command without one
    (or with only part of one) uses; every ``/fmt`` given changes them."""

    format: str = "x"
    size: int = 4


@dataclass(frozen=True)
class Format:
    """A ``/fmt``: how many items, in which format, of how many bytes."""

    count: int
    format: str
    size: int


def parse_format(text: str | None, defaults: FormatDefaults, command: str) -> Format:
    """Reads ``/fmt`` (``text`` after the slash, or ``None`` without one),
    filling the missing parts from ``defaults`` and updating them."""
    if text is None:
        return Format(1, defaults.format, defaults.size)
    i = 0
    while i < len(text) and text[i].isdigit():
        i += 1
    count = int(text[:i]) if i else 1
    fmt: str | None = None
    size: int | None = None
    for ch in text[i:]:
        if ch in _FORMATS:
            fmt = ch
        elif ch in _SIZES:
            size = _SIZES[ch]
        else:
            raise HMPUsageError(f"invalid char in format: '{ch}'", command)
    if fmt is None:
        fmt = defaults.format
    if size is None:
        size = defaults.size
    defaults.format, defaults.size = fmt, size
    return Format(count, fmt, size)


def parse_number(text: str | None, command: str) -> int:
    """An integer argument as C writes one (``0x1f``, ``017``, ``31``)."""
    if not text:
        raise HMPUsageError("unexpected end of expression", command)
    body = text[1:] if text[0] == "+" else text
    if body[:2].lower() == "0x":
        digits, base, start = body[2:], 16, 2
    elif body[:1] == "0" and len(body) > 1:
        digits, base, start = body[1:], 8, 1
    else:
        digits, base, start = body, 10, 0
    valid = "0123456789abcdefABCDEF"[: base + (6 if base == 16 else 0)]
    for n, ch in enumerate(digits):
        if ch not in valid:
            raise HMPUsageError(f"invalid char '{body[start + n]}' in expression", command)
    if not digits:
        raise HMPUsageError("unexpected end of expression", command)
    return int(digits, base)


def port_line(size: int, port: int, value: int) -> str:
    """``i``'s answer: ``portw[0x0cfe] = 0x0005`` (QEMU reads a byte for any
    size but 2 and 4, and prints it that wide)."""
    suffix = {2: "w", 4: "l"}.get(size, "b")
    return f"port{suffix}[0x{port:04x}] = 0x{value:0{size * 2}x}\n"


def _char(value: int) -> str:
    escapes = {ord("'"): "\\'", ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r"}
    if value in escapes:
        text = escapes[value]
    elif 32 <= value <= 126:
        text = chr(value)
    else:
        text = f"\\x{value:02x}"
    return f"'{text}'"


def _item(fmt: str, size: int, value: int) -> str:
    bits = size * 8
    if fmt == "o":
        return f"{('0' + format(value, 'o')) if value else '0':>{-(-bits // 3)}}"
    if fmt in "ud":
        # Only a 64-bit item reads back negative (QEMU loads the smaller
        # ones zero-extended).
        if fmt == "d" and size == 8 and value >= 1 << 63:
            value -= 1 << 64
        return f"{value:>{-(-bits * 10 // 33)}}"
    if fmt == "c":
        return _char(value)
    return f"0x{value:0{bits // 4}x}"


def memory_dump(addr: int, fmt: Format, read: Callable[[int, int], bytes | None]) -> str:
    """``xp``'s answer: lines of 8 bytes (1-byte items) or 16, each
    ``%016x:`` and the items; ``read(addr, n)`` gives the bytes or
    ``None`` where nothing answers (QEMU's "Cannot access memory", which
    ends the dump)."""
    size = 1 if fmt.format == "c" else fmt.size
    line = 8 if fmt.size == 1 else 16
    remaining = fmt.size * fmt.count
    out: list[str] = []
    while remaining > 0:
        n = min(remaining, line)
        data = read(addr, n)
        head = f"{addr & ((1 << 64) - 1):016x}:"
        if data is None:
            out.append(f"{head} Cannot access memory\n")
            break
        items = [
            _item(fmt.format, size, int.from_bytes(data[i : i + size], "little"))
            for i in range(0, n - size + 1, size)
        ]
        out.append(head + "".join(f" {item}" for item in items) + "\n")
        addr += n
        remaining -= n
    return "".join(out)


def _regions(dev: Mapping[str, Any]) -> list[str]:
    lines = []
    for r in dev.get("regions", []):
        addr, size = int(r["address"]), int(r["size"])
        addr &= (1 << 64) - 1
        last = (addr + size - 1) & ((1 << 64) - 1)
        if r["type"] == "io":
            lines.append(f"      BAR{r['bar']}: I/O at 0x{addr:04x} [0x{last:04x}].\n")
        else:
            bits = 64 if r.get("mem_type_64") else 32
            prefetch = " prefetchable" if r.get("prefetch") else ""
            where = f"0x{addr:08x} [0x{last:08x}]"
            lines.append(f"      BAR{r['bar']}: {bits} bit{prefetch} memory at {where}.\n")
    return lines


def info_pci(buses: Sequence[Mapping[str, Any]]) -> str:
    """``info pci`` from ``query-pci``'s answer, as QEMU renders it."""
    out: list[str] = []
    for bus in buses:
        for dev in bus.get("devices", []):
            out.append(
                f"  Bus {dev['bus']:2d}, device {dev['slot']:3d}, function {dev['function']}:\n"
            )
            cls = dev["class_info"]
            desc = cls.get("desc")
            label = desc if desc is not None else f"Class {cls['class']:04d}"
            ids = dev["id"]
            out.append(f"    {label}: PCI device {ids['vendor']:04x}:{ids['device']:04x}\n")
            if "subsystem" in ids and "subsystem-vendor" in ids:
                out.append(
                    f"      PCI subsystem {ids['subsystem-vendor']:04x}:{ids['subsystem']:04x}\n"
                )
            if "irq" in dev:
                pin = chr(ord("A") + int(dev["irq_pin"]) - 1)
                out.append(f"      IRQ {dev['irq']}, pin {pin}\n")
            out.extend(_regions(dev))
            out.append(f'      id "{dev["qdev_id"]}"\n')
    return "".join(out)
