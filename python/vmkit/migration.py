"""Migration streams: the analyzer report behind ``vmkit analyze``.

:func:`analyze` parses a QEMU savevm stream (version 3, as written by
``migrate "exec:cat > FILE"`` or vmkit) and returns one JSON object, the
documented layout scripts rely on::

    {
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
      "error": None | {"offset": int, "message": str, "section": str | None},
    }

Device fields are decoded generically from the stream's VMDESCRIPTION
trailer: integers and bools as themselves, buffers as lowercase hex strings,
arrays as lists, nested structs as objects, absent optional values as
``None``, and the subsections sent under a ``"subsections"`` key (an object
by subsection name). ``"fields"`` is ``None`` for bodies over 16 MiB.

A damaged stream does not raise: the report keeps the records parsed before
the damage and ``"error"`` says what broke, at which offset, and in which
section (``None`` outside sections). A file cut short loses its trailer, so
its first device section is reported as not decodable.

:func:`load_ram` parses the same way and also loads the stream's RAM into
:class:`vmkit.memory.RamBlock` objects, as a migration destination would::

    ram = memory.RamBlock.anonymous("pc.ram", 64 << 20)
    report = migration.load_ram("vm.stream", [ram])
    assert report["error"] is None
"""

from __future__ import annotations

import json
import os
from typing import Any

from vmkit import _core
from vmkit._core import RamBlock

__all__ = ["analyze", "load_ram"]


def analyze(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Analyzes the migration stream file at ``path`` (layout: module docstring).

    Raises :class:`OSError` only when the file cannot be opened.
    """
    report: dict[str, Any] = json.loads(_core.analyze_stream(path))
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
    report: dict[str, Any] = json.loads(_core.load_ram_from_stream(path, blocks))
    return report
