"""Fault injection for outgoing migrations: vmkit's ``x-vmkit-fault``
migration parameter, checked here; the Rust core applies it to the stream.

A fault is one action at one point of the outgoing stream::

    {"action": "cut" | "corrupt" | "drop" | "delay",
     "at": {"offset": N} | {"pass": N} | {"section": "ram" | IDSTR},
     "length": N,        # corrupt, drop: bytes affected (default 1)
     "delay-ms": N}      # delay: how long the stream stops (required)

* ``cut``: the connection is closed at that point. The source fails with
  a write error (``Broken pipe``) and returns to its run state; the
  destination sees a truncated stream and refuses it.
* ``corrupt``: ``length`` bytes from that point are inverted on their way
  out. The source cannot tell; the destination refuses a damaged record,
  but a flip inside a page's contents arrives unnoticed (the stream
  format has no checksum, nor has QEMU's).
* ``drop``: ``length`` bytes from that point are not sent (the source
  counts them as sent).
* ``delay``: the stream stops there for ``delay-ms`` milliseconds;
  ``migrate_cancel`` ends the wait, and the migration ends ``cancelled``.

``at`` names exactly one point: a stream ``offset`` (the first byte of
the stream is 0), the start of ``pass`` N (1 is the first, full pass;
the final pass after the source stopped counts too), or the start of the
first ``section`` of an idstr (``ram``: the RAM section set up first; a
device's idstr: its state after switchover). A point the stream never
reaches leaves the migration alone. ``query-migrate`` reports the fault
with ``armed-at`` (the offset, once known) and ``fired``.

The parameter is set by ``migrate-set-parameters`` (then it applies to
every migration that starts after, until set to ``null``) or given with
one ``migrate``'s inline ``parameters`` (that migration only). A running
migration keeps the fault it started with. Messages follow QEMU's input
visitor's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ACTIONS", "NAME", "TRIGGERS", "FaultError", "check", "precopy_arguments"]

#: The parameter's name.
NAME = "x-vmkit-fault"

#: The actions, and the members each takes besides ``action`` and ``at``.
ACTIONS: dict[str, tuple[str, ...]] = {
    "cut": (),
    "corrupt": ("length",),
    "drop": ("length",),
    "delay": ("delay-ms",),
}

#: What ``at`` may name.
TRIGGERS = ("offset", "pass", "section")

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


class FaultError(ValueError):
    """A refused ``x-vmkit-fault``, with the message QMP answers."""


def _integer(where: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FaultError(f"Invalid parameter type for '{where}', expected: integer")
    if not low <= value <= high:
        raise FaultError(f"Parameter '{where}' expects a value between {low} and {high}")
    return value


def _trigger(at: object) -> dict[str, int | str]:
    where = f"{NAME}.at"
    if not isinstance(at, Mapping):
        raise FaultError(f"Invalid parameter type for '{where}', expected: object")
    for key in at:
        if key not in TRIGGERS:
            raise FaultError(f"Parameter '{where}.{key}' is unexpected")
    if len(at) != 1:
        raise FaultError(f"Parameter '{where}' expects exactly one of {', '.join(TRIGGERS)}")
    ((kind, value),) = at.items()
    if kind == "offset":
        return {"offset": _integer(f"{where}.offset", value, 0, _U64)}
    if kind == "pass":
        return {"pass": _integer(f"{where}.pass", value, 1, _U32)}
    if not isinstance(value, str):
        raise FaultError(f"Invalid parameter type for '{where}.section', expected: string")
    if not value:
        raise FaultError(f"Parameter '{where}.section' expects a section idstr")
    return {"section": value}


def check(value: object) -> dict[str, Any] | None:
    """``value`` as a fault in its full form (every member the action
    takes, defaults filled in), or ``None`` for ``null`` (no fault).

    :raises FaultError: with the message QMP answers.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise FaultError(f"Invalid parameter type for '{NAME}', expected: object")
    for member in ("action", "at"):
        if member not in value:
            raise FaultError(f"Parameter '{NAME}.{member}' is missing")
    action = value["action"]
    if not isinstance(action, str):
        raise FaultError(f"Invalid parameter type for '{NAME}.action', expected: string")
    if action not in ACTIONS:
        raise FaultError(f"Parameter '{NAME}.action' does not accept value '{action}'")
    takes = ACTIONS[action]
    for key in value:
        if key not in ("action", "at", *takes):
            raise FaultError(f"Parameter '{NAME}.{key}' is unexpected")
    fault: dict[str, Any] = {"action": action, "at": _trigger(value["at"])}
    if "length" in takes:
        fault["length"] = _integer(f"{NAME}.length", value.get("length", 1), 1, _U64)
    if "delay-ms" in takes:
        if "delay-ms" not in value:
            raise FaultError(f"Parameter '{NAME}.delay-ms' is missing")
        fault["delay-ms"] = _integer(f"{NAME}.delay-ms", value["delay-ms"], 0, _U64)
    return fault


def precopy_arguments(fault: Mapping[str, Any]) -> dict[str, Any]:
    """A checked fault as the arguments of
    :meth:`vmkit.migration.Precopy.inject_fault`."""
    ((kind, point),) = fault["at"].items()
    trigger = {"offset": "offset", "pass": "pass_number", "section": "section"}[kind]
    args: dict[str, Any] = {"action": fault["action"], trigger: point}
    if "length" in fault:
        args["length"] = fault["length"]
    if "delay-ms" in fault:
        args["delay_ms"] = fault["delay-ms"]
    return args
