"""What a new migration starts from: QEMU's migration capabilities and
parameters, with QEMU 7.2's names, defaults, validation and messages.

The legacy QMP commands ``migrate-set-capabilities``,
``query-migrate-capabilities``, ``migrate-set-parameters`` and
``query-migrate-parameters`` set and show these defaults. Each migration
copies them when it starts (principle 4: nothing of one migration leaks into
the next), so this module only keeps and checks the settings; it runs
nothing.

A change is checked whole before anything is applied: a refused
``migrate-set-parameters`` or ``migrate-set-capabilities`` changes nothing,
as in QEMU. Messages are QEMU's, including its use of ``_`` in the names of
range errors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vmkit import migration_fault

__all__ = [
    "CAPABILITIES",
    "PARAMETERS",
    "MigrationSettings",
    "SettingsError",
]

#: QEMU 7.2's migration capabilities, in its order; all off by default.
CAPABILITIES: tuple[str, ...] = (
    "xbzrle",
    "rdma-pin-all",
    "auto-converge",
    "zero-blocks",
    "compress",
    "events",
    "postcopy-ram",
    "x-colo",
    "release-ram",
    "block",
    "return-path",
    "pause-before-switchover",
    "multifd",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "x-ignore-shared",
    "validate-uuid",
    "background-snapshot",
    "zero-copy-send",
    "postcopy-preempt",
)

# What background-snapshot cannot be combined with (QEMU checks them in this order).
_NOT_WITH_BACKGROUND_SNAPSHOT = (
    "postcopy-ram",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "return-path",
    "multifd",
    "pause-before-switchover",
    "auto-converge",
    "release-ram",
    "rdma-pin-all",
    "compress",
    "xbzrle",
    "x-colo",
    "validate-uuid",
    "zero-copy-send",
)

_U64 = 1 << 64
_TARGET_PAGE_SIZE = 4096


class SettingsError(ValueError):
    """A refused capability or parameter change, with QEMU's message."""


@dataclass(frozen=True)
class Param:
    """One migration parameter: its QAPI type and default."""

    kind: str  # "bool", "uint8", "uint32", "uint64", "str" (StrOrNull), or "enum"
    default: bool | int | str
    choices: tuple[str, ...] = ()


#: QEMU 7.2's migration parameters and their defaults.
PARAMETERS: dict[str, Param] = {
    "announce-initial": Param("uint64", 50),
    "announce-max": Param("uint64", 550),
    "announce-rounds": Param("uint64", 5),
    "announce-step": Param("uint64", 100),
    "compress-level": Param("uint8", 1),
    "compress-threads": Param("uint8", 8),
    "compress-wait-thread": Param("bool", True),
    "decompress-threads": Param("uint8", 2),
    "throttle-trigger-threshold": Param("uint8", 50),
    "cpu-throttle-initial": Param("uint8", 20),
    "cpu-throttle-increment": Param("uint8", 10),
    "cpu-throttle-tailslow": Param("bool", False),
    "tls-creds": Param("str", ""),
    "tls-hostname": Param("str", ""),
    "tls-authz": Param("str", ""),
    "max-bandwidth": Param("uint64", 128 << 20),
    "downtime-limit": Param("uint64", 300),
    "x-checkpoint-delay": Param("uint32", 20000),
    "block-incremental": Param("bool", False),
    "multifd-channels": Param("uint8", 2),
    "xbzrle-cache-size": Param("uint64", 64 << 20),
    "max-postcopy-bandwidth": Param("uint64", 0),
    "max-cpu-throttle": Param("uint8", 99),
    "multifd-compression": Param("enum", "none", ("none", "zlib", "zstd")),
    "multifd-zlib-level": Param("uint8", 1),
    "multifd-zstd-level": Param("uint8", 1),
    # QEMU 9.0's (vmkit's QMP follows 9.2): whether zero pages are found and
    # sent as zero records. vmkit has no multifd, so "multifd" (the
    # default) detects them as "legacy" does, in the migration thread.
    "zero-page-detection": Param("enum", "multifd", ("none", "legacy", "multifd")),
}

_BITS = {"uint8": 8, "uint32": 32}


def _typed(name: str, param: Param, value: Any) -> bool | int | str:
    """``value`` as the parameter's type, refused as QEMU's input visitor
    refuses it (integers wrap to uint64 first, as QAPI's do)."""
    if param.kind == "bool":
        if not isinstance(value, bool):
            raise SettingsError(f"Invalid parameter type for '{name}', expected: boolean")
        return value
    if param.kind == "str":
        if value is None:
            return ""
        if not isinstance(value, str):
            raise SettingsError(f"Invalid parameter type for '{name}', expected: StrOrNull")
        return value
    if param.kind == "enum":
        if not isinstance(value, str):
            raise SettingsError(f"Invalid parameter type for '{name}', expected: string")
        if value not in param.choices:
            raise SettingsError(f"Parameter '{name}' does not accept value '{value}'")
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise SettingsError(f"Parameter '{name}' expects uint64")
    number = value % _U64
    bits = _BITS.get(param.kind)
    if bits is not None and number >= 1 << bits:
        raise SettingsError(f"Parameter '{name}' expects uint{bits}_t")
    return number


def _between(name: str, low: int, high: int, style: str = "value") -> Callable[[Any], str | None]:
    key = name.replace("-", "_")
    if style == "value":
        message = f"Parameter '{key}' expects a value between {low} and {high}"
    else:
        message = f"Parameter '{key}' expects an integer in the range of {low} to {high}"
    return lambda p: message if not low <= p[name] <= high else None


def _xbzrle_cache_size(p: Mapping[str, Any]) -> str | None:
    size = p["xbzrle-cache-size"]
    if size < _TARGET_PAGE_SIZE or size & (size - 1):
        return (
            "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size"
        )
    return None


def _max_cpu_throttle(p: Mapping[str, Any]) -> str | None:
    if not p["cpu-throttle-initial"] <= p["max-cpu-throttle"] <= 99:
        return (
            "Parameter 'max_cpu_throttle' expects an integer in the range of "
            "cpu_throttle_initial to 99"
        )
    return None


def _downtime_limit(p: Mapping[str, Any]) -> str | None:
    if p["downtime-limit"] > 2000 * 1000:
        return "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms"
    return None


# QEMU's checks of the whole set, in its order: the first failing one is reported.
_CHECKS: tuple[Callable[[Mapping[str, Any]], str | None], ...] = (
    _between("compress-level", 0, 9),
    _between("compress-threads", 1, 255),
    _between("decompress-threads", 1, 255),
    _between("throttle-trigger-threshold", 1, 100, "range"),
    _between("cpu-throttle-initial", 1, 99, "range"),
    _between("cpu-throttle-increment", 1, 99, "range"),
    _downtime_limit,
    _between("multifd-channels", 1, 255),
    _xbzrle_cache_size,
    _max_cpu_throttle,
    _between("announce-initial", 0, 100000),
    _between("announce-max", 0, 100000),
    _between("announce-rounds", 0, 1000),
    lambda p: (
        "Parameter 'announce_step' expects a value between 0 and 10000"
        if not 1 <= p["announce-step"] <= 10000
        else None
    ),
)


def _capability_conflict(caps: Mapping[str, bool]) -> str | None:
    """QEMU's refusal of a capability set, or ``None``."""
    if caps["postcopy-preempt"] and not caps["postcopy-ram"]:
        return "Postcopy preempt requires postcopy-ram"
    if caps["background-snapshot"]:
        for other in _NOT_WITH_BACKGROUND_SNAPSHOT:
            if caps[other]:
                return f"Background-snapshot is not compatible with {other}"
    if caps["zero-copy-send"] and not caps["multifd"]:
        return "Zero copy only available for non-compressed non-TLS multifd migration"
    return None


class MigrationSettings:
    """The capabilities and parameters a new migration starts from."""

    def __init__(self) -> None:
        self._capabilities = dict.fromkeys(CAPABILITIES, False)
        self._parameters: dict[str, bool | int | str] = {
            name: p.default for name, p in PARAMETERS.items()
        }
        self._fault: dict[str, Any] | None = None

    def capabilities(self) -> dict[str, bool]:
        """Each capability's state."""
        return dict(self._capabilities)

    def parameters(self) -> dict[str, Any]:
        """Each parameter's value; vmkit's ``x-vmkit-fault`` only while
        one is set (:mod:`vmkit.migration_fault`)."""
        values: dict[str, Any] = dict(self._parameters)
        if self._fault is not None:
            values[migration_fault.NAME] = copy.deepcopy(self._fault)
        return values

    def fault(self) -> dict[str, Any] | None:
        """The ``x-vmkit-fault`` a migration starting now applies, if any."""
        return copy.deepcopy(self._fault)

    def query_capabilities(self) -> list[dict[str, str | bool]]:
        """``query-migrate-capabilities``: ``[{capability, state}]`` in QEMU's order."""
        return [{"capability": c, "state": s} for c, s in self._capabilities.items()]

    def set_capabilities(self, entries: object) -> None:
        """``migrate-set-capabilities``: ``entries`` is the command's
        ``capabilities`` list; all or nothing."""
        if not isinstance(entries, list):
            raise SettingsError("Invalid parameter type for 'capabilities', expected: array")
        changed = dict(self._capabilities)
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise SettingsError(
                    f"Invalid parameter type for 'capabilities[{i}]', expected: object"
                )
            for member in ("capability", "state"):
                if member not in entry:
                    raise SettingsError(f"Parameter 'capabilities[{i}].{member}' is missing")
            name, state = entry["capability"], entry["state"]
            if not isinstance(name, str) or name not in changed:
                raise SettingsError(f"Parameter 'capability' does not accept value '{name}'")
            if not isinstance(state, bool):
                raise SettingsError(
                    f"Invalid parameter type for 'capabilities[{i}].state', expected: boolean"
                )
            extra = set(entry) - {"capability", "state"}
            if extra:
                raise SettingsError(f"Parameter 'capabilities[{i}].{min(extra)}' is unexpected")
            changed[name] = state
        problem = _capability_conflict(changed)
        if problem is not None:
            raise SettingsError(problem)
        self._capabilities = changed

    def set_parameters(self, values: Mapping[str, Any]) -> None:
        """``migrate-set-parameters``: any subset; all or nothing."""
        changed = dict(self._parameters)
        fault = self._fault
        for name, value in values.items():
            if name == migration_fault.NAME:
                try:
                    fault = migration_fault.check(value)
                except migration_fault.FaultError as e:
                    raise SettingsError(str(e)) from None
                continue
            param = PARAMETERS.get(name)
            if param is None:
                raise SettingsError(f"Parameter '{name}' is unexpected")
            changed[name] = _typed(name, param, value)
        for check in _CHECKS:
            problem = check(changed)
            if problem is not None:
                raise SettingsError(problem)
        self._parameters = changed
        self._fault = fault

    def snapshot(self) -> MigrationSettings:
        """A copy, for a migration to start from."""
        return copy.deepcopy(self)
