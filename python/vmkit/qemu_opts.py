"""QEMU's command-line option values with QEMU's meanings.

``-m 256`` is 256 MiB, ``-qmp unix:PATH,server=on,wait=off`` listens on
``PATH`` (the options after the address are parsed, never part of it),
``-machine TYPE[,props]``, ``-name NAME[,guest=NAME]``, ``-display none``.
Each parser takes the option's text and returns what it means, or raises
:class:`QemuOptionError` naming the option and what is wrong with it.
"""

from __future__ import annotations

from vmkit import qom
from vmkit.errors import VmkitError

__all__ = [
    "QemuOptionError",
    "parse_display",
    "parse_machine",
    "parse_memory",
    "parse_name",
    "parse_qmp",
    "split_option",
]


class QemuOptionError(VmkitError):
    """An option value that does not parse, or asks for what vmkit does not model."""


def split_option(text: str) -> list[str]:
    """Splits at single commas; ``,,`` stands for a comma in a value."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text.startswith(",,", i):
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    if current or not text.endswith(","):  # a trailing comma ends the list
        items.append("".join(current))
    return items


def _pairs(flag: str, text: str, implied: str) -> dict[str, str]:
    """``VALUE,key=value,...`` → a dict; the first item without ``=`` is
    ``implied`` (QEMU's implied key), a later one is ``key=on``."""
    out: dict[str, str] = {}
    for index, item in enumerate(split_option(text)):
        key, sep, value = item.partition("=")
        if not sep:
            if index == 0:
                key, value = implied, item
            else:
                key, value = item, "on"
        if not key:
            raise QemuOptionError(f"{flag} {text}: invalid parameter '{item}' (no name)")
        out[key] = value
    return out


def _refuse_rest(flag: str, text: str, opts: dict[str, str]) -> None:
    if opts:
        names = ", ".join(f"'{k}'" for k in opts)
        raise QemuOptionError(f"{flag} {text}: parameter {names} not supported by vmkit")


def parse_memory(text: str) -> int:
    """``-m``: ``SIZE`` or ``size=SIZE``, a number without a unit being
    MiB as in QEMU (``256``, ``1G``, ``512M``); returns bytes."""
    opts = _pairs("-m", text, "size")
    size_text = opts.pop("size", "")
    _refuse_rest("-m", text, opts)  # slots, maxmem: vmkit has no memory hotplug
    if not size_text:
        raise QemuOptionError(f"-m {text}: no size given")
    try:
        size = int(size_text) << 20 if size_text.isdigit() else qom.parse_size(size_text)
    except VmkitError as e:
        raise QemuOptionError(f"-m {text}: {e}") from e
    if size <= 0:
        raise QemuOptionError(f"-m {text}: the size must be more than 0")
    return size


def parse_qmp(text: str) -> str:
    """``-qmp``: ``unix:PATH`` or ``tcp:HOST:PORT`` followed by QEMU's
    chardev options (``server``, ``server=on``, ``wait=off``, ``nowait``);
    returns the address alone. vmkit's monitor is always a listening
    server that does not wait for a client, so the options that ask for
    anything else are refused."""
    address, *items = split_option(text)
    for item in items:
        key, sep, value = item.partition("=")
        value = value if sep else "on"
        if key == "server" and value == "on":
            continue
        if (key == "wait" and value == "off") or (key == "nowait" and value == "on"):
            continue
        if key in ("server", "wait"):
            raise QemuOptionError(
                f"-qmp {text}: '{item}' not supported: vmkit's monitor listens and does not"
                " wait for a client (server=on,wait=off)"
            )
        raise QemuOptionError(f"-qmp {text}: parameter '{key}' not supported by vmkit")
    return address


def parse_machine(text: str) -> str:
    """``-machine`` / ``-M``: ``TYPE`` or ``type=TYPE``; returns the type
    (an alias resolved, ``help`` as is). The type must be one of
    :data:`vmkit.machine_types.MACHINE_TYPES`; machine properties
    (``accel=``, ``smm=`` ...) are not modelled."""
    opts = _pairs("-machine", text, "type")
    machine_type = opts.pop("type", "")
    _refuse_rest("-machine", text, opts)
    if not machine_type:
        raise QemuOptionError(f"-machine {text}: no machine type given")
    if machine_type == "help":
        return machine_type
    from vmkit.machine_types import resolve

    resolved = resolve(machine_type)
    if resolved is None:
        raise QemuOptionError(
            f"-machine {text}: unsupported machine type '{machine_type}' (-machine help lists them)"
        )
    return resolved


def parse_name(text: str) -> str:
    """``-name``: ``NAME`` or ``guest=NAME``; returns the name."""
    opts = _pairs("-name", text, "guest")
    name = opts.pop("guest", "")
    _refuse_rest("-name", text, opts)
    return name


def parse_display(text: str) -> str:
    """``-display``: vmkit has no display, so only ``none`` is accepted."""
    if split_option(text)[0] != "none":
        raise QemuOptionError(f"-display {text}: vmkit has no display (only '-display none')")
    return "none"
