"""Migration streams: VMState descriptions, save and restore, and the
analyzer report behind ``vmkit analyze``.

Device state is described as in QEMU, by a :class:`VMStateDescription` of
typed fields; a device type that declares one is saved and restored as a
section of its own::

    from vmkit import migration, qom
    from vmkit.migration import VMStateDescription, VMStateField

    timer = VMStateDescription("demo-timer", [
        VMStateField("ctrl", "uint32"),
        VMStateField("count", "uint16"),
        VMStateField("queue", migration.array("uint16", length="count")),
        VMStateField("regs", migration.buffer(8)),
        VMStateField("dma_base", "uint64", since=2),   # an explicit u64, never a pointer
    ], version_id=2, minimum_version_id=1)
    qom.register_type("demo-timer", "device", vmstate=timer)

    dev = qom.new("demo-timer")
    dev.data.update(ctrl=1, count=2, queue=[7, 8], regs=bytes(8), dma_base=0x1000)

By default a device's state lives in its ``data`` dict under the field
names; ``register_type(..., vmstate_save=..., vmstate_load=...)`` replaces
that. :func:`save` writes a paused machine (RAM blocks and the realized
devices below a QOM object) in QEMU's savevm format; :func:`restore` reads
it back into a machine of the same shape, changing no device unless the
whole stream is valid (:class:`vmkit.machine.Machine` wraps both).

:func:`analyze` parses a QEMU savevm stream (version 3, as written by
``migrate "exec:cat > FILE"`` or vmkit) and returns one JSON object, the
documented layout scripts rely on::

    {
      "machine_type": str | None,  # from the configuration record
      "page_size": int,       # target page size: the configuration's page
                              # bits, else the trailer's, else 4096 (x86)
      "trailer": str,         # "present" | "missing" | "damaged"
      "records": [            # every record in stream order (no file header)
        {
          "offset": int,       # offset of the record's first byte
          "type": str,         # "CONFIGURATION" | "START" | "PART" | "END" |
                               # "FULL" | "EOF" | "VMDESCRIPTION" | "COMMAND"
          "section_id": int | None,   # sections only, else null
          "idstr": str | None,        # PART/END: the idstr of their START
          "instance_id": int | None,
          "version_id": int | None,
          # only where they apply:
          "body_len": int,            # sections: body bytes
          "machine_type": str,        # CONFIGURATION
          "command": int, "command_name": str, "data_len": int,  # COMMAND
          "device_count": int,        # VMDESCRIPTION
          "fields": {...} | None,     # FULL device sections: decoded fields
          "framed_by_footer": True,   # a device body found by its footer
        },
        ...
      ],
      "ram": {"blocks": [{"idstr": str, "used_length": int,
                          "zero_pages": int, "normal_pages": int}, ...]},
      "devices": [            # decoded FULL device sections, in order
        {"offset": int, "section_id": int, "idstr": str, "instance_id": int,
         "version_id": int, "fields": {...} | None},
        ...
      ],
      "length": int,          # bytes parsed (where parsing stopped)
      "error": None | {"offset": int, "message": str, "section": str | None,
                       "field": str | None,    # field path, e.g. "dev/queue[3]"
                       "record": str | None,   # the record that did not parse
                       "record_offset": int,   # where it starts
                       "summary": str},        # all of it in one line
    }

Device fields are decoded generically from the stream's VMDESCRIPTION
trailer: integers and bools as themselves, buffers as lowercase hex strings,
arrays as lists, nested structs as objects, absent optional values as
``None``, and the subsections sent under a ``"subsections"`` key (an object
by subsection name). ``"fields"`` is ``None`` for bodies over 16 MiB. A
section the trailer does not describe (no trailer: a file cut short or
written with ``suppress-vmdesc``) is decoded by a known VMState — one
declared in this process for a device type whose description has the
section's name (or its last ``/`` component) — into the same layout.

A damaged stream does not raise: the report keeps the records parsed before
the damage and ``"error"`` says what broke, at which offset, and in which
section (``None`` outside sections), naming the first record that could not
be parsed (``"record"``: its type, ``None`` for a byte that starts no
record; ``"record_offset"``). A file cut short loses its trailer: a device
section no known VMState describes is then still listed, its body found by
its footer (``"framed_by_footer": True``, no ``"fields"``), and the missing
trailer is the error (``"VMDESCRIPTION trailer missing ..."``); a trailer
that does not read is one too (``"VMDESCRIPTION trailer damaged at offset
N: ..."``).

:func:`load_ram` parses the same way and also loads the stream's RAM into
:class:`vmkit.memory.RamBlock` objects, as a migration destination would::

    ram = memory.RamBlock.anonymous("pc.ram", 64 << 20)
    report = migration.load_ram("vm.stream", [ram])
    assert report["error"] is None
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from vmkit._core import migration as _core
from vmkit._core.memory import RamBlock
from vmkit._core.migration import FdRegistry, Listener, Precopy, VMStateDescription, VMStateField
from vmkit._core.qom import Object

__all__ = [
    "FdRegistry",
    "KindSpec",
    "Listener",
    "Precopy",
    "VMStateDescription",
    "VMStateField",
    "analyze",
    "array",
    "bitmap",
    "buffer",
    "equal",
    "load_ram",
    "optional",
    "restore",
    "save",
    "struct",
    "unused",
    "vbuffer",
]

#: A field kind: a scalar name (``"bool"``, ``"uint8"`` .. ``"uint64"``,
#: ``"int8"`` .. ``"int64"``, ``"timer"``) or what a kind helper returns.
KindSpec = str | dict[str, Any]


def buffer(size: int) -> KindSpec:
    """``size`` raw bytes (``VMSTATE_BUFFER``); the value is ``bytes``."""
    return {"buffer": size}


def vbuffer(length_field: str) -> KindSpec:
    """Raw bytes whose count is an earlier integer field (``VMSTATE_VBUFFER``)."""
    return {"vbuffer": length_field}


def unused(size: int) -> KindSpec:
    """``size`` zero bytes on save, skipped on load (``VMSTATE_UNUSED``); no value."""
    return {"unused": size}


def bitmap(nbits: int) -> KindSpec:
    """A bitmap as ``ceil(nbits / 64)`` be64 words; the value is a list of the words."""
    return {"bitmap": nbits}


def array(of: KindSpec, length: int | str) -> KindSpec:
    """Elements of kind ``of``: ``length`` of them, or as many as the earlier
    integer field named ``length`` says (``VMSTATE_VARRAY``); the value is a list."""
    return {"array": of, "length": length}


def struct(desc: VMStateDescription) -> KindSpec:
    """A nested description's body (``VMSTATE_STRUCT``); the value is a dict."""
    return {"struct": desc}


def optional(of: KindSpec) -> KindSpec:
    """An element that may be absent (``None``, the null marker on the wire)."""
    return {"optional": of}


def equal(of: KindSpec) -> KindSpec:
    """An integer that must equal the receiver's value (``VMSTATE_UINT32_EQUAL``)."""
    return {"equal": of}


def analyze(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Analyzes the migration stream file at ``path`` (layout: module docstring).

    Raises :class:`OSError` only when the file cannot be opened.
    """
    report: dict[str, Any] = json.loads(_core.analyze(path))
    return report


def load_ram(path: str | os.PathLike[str], blocks: list[RamBlock]) -> dict[str, Any]:
    """Loads the RAM of the migration stream at ``path`` into ``blocks``.

    Blocks are matched by name (QEMU names a backend's block after the
    backend id, e.g. ``pc.ram``); each must have the length the stream's
    MEM_SIZE list announces. Blocks the stream announces but ``blocks``
    lacks (QEMU's ROMs, ``pc.bios``, ...) are decoded and discarded; device
    sections are stepped over with the VMDESCRIPTION trailer and decoded as
    by :func:`analyze`.

    Returns the :func:`analyze` report; its ``"ram"`` lists ``blocks`` first,
    then the discarded blocks. A damaged stream does not raise: ``"error"``
    says what broke, and the pages before it stay loaded. Raises
    :class:`OSError` when the file cannot be opened and :class:`ValueError`
    when two blocks share a name. The GIL is released while parsing.
    """
    report: dict[str, Any] = json.loads(_core.load_ram(path, blocks))
    return report


def save(
    path: str | os.PathLike[str],
    *,
    machine_type: str,
    ram: list[RamBlock],
    devices: Object | None = None,
    footers: bool = True,
    vmdesc: bool = True,
    open_timeout: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Saves a machine to the file (or FIFO) at ``path`` in QEMU's savevm format.

    The stream holds the configuration naming ``machine_type``, the RAM
    blocks ``ram`` (one START, one PART with every page, an END), a FULL
    section for every realized device with a VMState below the QOM object
    ``devices`` (none if ``None``), EOF and the VMDESCRIPTION trailer.
    Every device's state is taken before the first byte is written. The
    machine should be paused. RAM pages go from guest memory to the sink
    in gathered writes (``writev``), copied once, by the kernel.

    A regular file is written to a temporary file beside ``path`` and
    renamed over it only when the stream is complete: a failed save leaves
    the file that was there untouched and no partial file behind. A FIFO
    (a reader such as ``cat > FILE`` on the other end), a device or a Unix
    socket is written directly; a FIFO gets a 1 MiB pipe buffer where the
    system allows, and while it has no reader the save waits, for at most
    ``open_timeout`` seconds (``None``: until a reader comes), and a
    Ctrl-C (any signal handler's exception) ends the wait. So does
    ``cancelled``: called every few milliseconds while the save waits
    (from the saving thread, holding the GIL), it ends the save with
    :class:`InterruptedError` once it returns true — the way to stop a
    save running in a thread other than the main one, where no signal
    handler runs. Once the sink is open nothing is polled: a write into a
    reader that has stopped reading blocks until it reads or closes its
    end. Returns ``bytes``, ``ram_bytes``, ``zero_pages``,
    ``normal_pages`` and ``devices``.

    :raises DeviceStateError: a device refused to save.
    :raises VMStateError: a device's state does not fit its description.
    :raises OSError: the sink cannot be opened or written: the subclass
        for its ``errno`` (``BrokenPipeError``, ``TimeoutError`` when no
        reader opened a FIFO in time, ...), ``filename`` the path, and
        ``offset`` the stream offset of the first byte the sink did not
        take (``None`` if the failure was not a write).
    :raises InterruptedError: ``cancelled`` returned true while the save
        waited for a FIFO's reader (``"save cancelled"``).
    """
    return _core.save(
        path,
        machine_type=machine_type,
        ram=ram,
        devices=devices,
        footers=footers,
        vmdesc=vmdesc,
        open_timeout=open_timeout,
        cancelled=cancelled,
    )


def restore(
    path: str | os.PathLike[str],
    *,
    machine_type: str,
    ram: list[RamBlock],
    devices: Object | None = None,
    footers: bool = True,
    cancelled: Callable[[], bool] | None = None,
    report_unmodelled: bool = False,
) -> dict[str, Any]:
    """Restores the stream at ``path`` into ``ram`` and the devices below ``devices``.

    The receiving machine must have the saved one's shape: the same
    machine type, RAM blocks of the same names and lengths, and the same
    devices (sections are matched by idstr and instance id). RAM is loaded
    as it is read; device states are decoded and checked first and only
    installed after the stream ended cleanly, so on any error no device has
    changed — but RAM may be partly loaded: do not run the machine (the
    :class:`~vmkit.machine.Machine` wrapper refuses to). Returns ``bytes``,
    ``zero_pages``, ``normal_pages`` and ``devices``.

    With ``report_unmodelled``, what the stream holds beyond this
    machine's shape is taken instead of refused — a real QEMU's firmware
    RAM blocks (``pc.bios``, ``pc.rom``, ``/rom@etc/...``) and the sections
    of its devices — and listed under ``"unmodelled"``::

        {"ram_blocks": [{"name", "length", "zero_pages", "normal_pages"}],
         "sections": [{"offset", "section_id", "idstr", "instance_id",
                       "version_id", "vmsd_name", "size", "fields"}]}

    Such a block's pages are decoded and dropped. Such a section's body
    is checked against the stream's VMDESCRIPTION trailer and decoded by
    it (``fields``, in :func:`analyze`'s layout): as the trailer comes
    last, the rest of the stream from the first such section on is held
    in memory, at most 16 MiB (a precopy stream's device sections follow
    its RAM). Every other check still applies to what this machine has;
    a stream without a trailer, or whose trailer does not describe such a
    section, is refused.

    :raises StreamError: the stream is damaged or is another machine's
        (``offset`` says where; ``section`` which section).
    :raises VMStateError: a device body does not follow its description
        (``offset``, ``section`` and ``field`` say where).
    :raises DeviceStateError: a device refused the state, or the stream
        lacks one of this machine's devices or RAM blocks.
    :raises OSError: the file cannot be opened. (A FIFO is waited on until
        a writer sends something; a Ctrl-C, or any signal handler's
        exception, ends the wait.)
    :raises InterruptedError: ``cancelled`` (polled as by :func:`save`)
        returned true while the restore waited for a FIFO's writer
        (``"restore cancelled"``).
    """
    return _core.restore(
        path,
        machine_type=machine_type,
        ram=ram,
        devices=devices,
        footers=footers,
        cancelled=cancelled,
        report_unmodelled=report_unmodelled,
    )
