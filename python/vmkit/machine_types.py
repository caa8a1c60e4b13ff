"""The machine types ``vmkit run -machine TYPE`` accepts (``-machine help``).

vmkit has one board (q35-shaped: RAM, ``pcie.0`` and the devices given);
the type only names it in migration streams, so a stream can go to or come
from a QEMU of that machine type. The default names vmkit's own board; the
others are QEMU's q35 machine types up to the QEMU version whose behaviour
vmkit follows (``q35`` is, as in QEMU, an alias of the newest).
"""

from __future__ import annotations

from vmkit.machine import DEFAULT_MACHINE_TYPE

__all__ = ["MACHINE_TYPES", "Q35_ALIAS", "resolve"]

_Q35 = "Standard PC (Q35 + ICH9, 2009)"
# QEMU's pc-q35-* versions, oldest first (QEMU 9.2 still has 2.4 onwards).
_VERSIONS = (
    [f"2.{minor}" for minor in range(4, 13)]
    + ["3.0", "3.1", "4.0", "4.0.1", "4.1", "4.2", "5.0", "5.1", "5.2", "6.0", "6.1", "6.2"]
    + ["7.0", "7.1", "7.2", "8.0", "8.1", "8.2", "9.0", "9.1", "9.2"]
)

#: QEMU's alias for its newest q35 machine type.
Q35_ALIAS = "q35"

#: Each accepted machine type and its description, in ``-machine help`` order.
MACHINE_TYPES: dict[str, str] = {
    DEFAULT_MACHINE_TYPE: "vmkit's board: RAM, pcie.0 and the devices given",
    Q35_ALIAS: f"{_Q35} (alias of pc-q35-{_VERSIONS[-1]})",
    **{f"pc-q35-{v}": _Q35 for v in reversed(_VERSIONS)},
}


def resolve(name: str) -> str | None:
    """The machine type ``name`` stands for (an alias resolved), or None
    when vmkit does not accept it."""
    if name == Q35_ALIAS:
        return f"pc-q35-{_VERSIONS[-1]}"
    return name if name in MACHINE_TYPES else None
