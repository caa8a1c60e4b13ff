"""What ``-device help``, ``-device TYPE,help``, ``-object help``,
``-object TYPE,help`` and ``-machine help`` print, in QEMU's layout."""

from __future__ import annotations

from vmkit import qom

__all__ = ["device_list", "machine_list", "object_list", "type_options"]


def device_list() -> str:
    """The device types (vmkit has no device categories: QEMU's
    "Uncategorized devices" heading)."""
    lines = ["Uncategorized devices:"]
    for t in qom.list_types("device"):
        lines.append(f'name "{t.name}"')
    return "\n".join(lines) + "\n"


def object_list() -> str:
    """The user-creatable object types."""
    lines = ["List of user creatable objects:"]
    lines.extend(f"  {t.name}" for t in qom.list_types("user-creatable"))
    return "\n".join(lines) + "\n"


def type_options(type_name: str, *, device: bool) -> str:
    """A type's settable properties: ``  name=<type> - description (default: x)``.

    :raises vmkit.errors.VmkitError: no such type.
    """
    props = qom.device_type_properties(type_name) if device else qom.type_properties(type_name)
    props = [p for p in props if p.writable and not p.type.startswith("child<")]
    if not props:
        return f"There are no options for {type_name}.\n"
    lines = [f"{type_name} options:"]
    for p in sorted(props, key=lambda p: p.name):
        line = f"  {p.name}=<{p.type}>"
        description = p.description or ""
        default = "" if p.default_value is None else f" (default: {_shown(p.default_value)})"
        if description or default:
            line = f"{line:<24} - {description}{default}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def machine_list(default: str) -> str:
    """``-machine help``: every machine type vmkit accepts
    (:data:`vmkit.machine_types.MACHINE_TYPES`), ``default`` marked, in
    QEMU's layout."""
    from vmkit.machine_types import MACHINE_TYPES

    lines = ["Supported machines are:"]
    for name, description in MACHINE_TYPES.items():
        mark = " (default)" if name == default else ""
        lines.append(f"{name:<20} {description}{mark}")
    return "\n".join(lines) + "\n"
