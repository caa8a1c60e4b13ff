"""QMP errors: the ``{"error": {"class": ..., "desc": ...}}`` half of the protocol.

QEMU reports every failure with one of the classes of its ``QapiErrorClass``
enum (``qapi/error.json``). Almost everything is ``GenericError``; the other
classes survive for backward compatibility and mean what their names say.
Clients must not parse ``desc``: it is a human-readable message.

Command handlers raise :class:`QMPError` (or one of its subclasses); the
dispatcher turns it into the error response. Any other exception escaping a
handler becomes a ``GenericError`` and is logged.
"""

from __future__ import annotations

import enum

__all__ = [
    "CommandNotFound",
    "DeviceNotActive",
    "DeviceNotFound",
    "ErrorClass",
    "GenericError",
    "KVMMissingCap",
    "QMPError",
]


class ErrorClass(enum.StrEnum):
    """The values QEMU puts in an error response's ``class`` member."""

    GENERIC_ERROR = "GenericError"
    COMMAND_NOT_FOUND = "CommandNotFound"
    DEVICE_NOT_ACTIVE = "DeviceNotActive"
    DEVICE_NOT_FOUND = "DeviceNotFound"
    KVM_MISSING_CAP = "KVMMissingCap"


class QMPError(Exception):
    """A QMP command failure: an error class plus a human-readable description.

    Raise it from a command handler to make the command fail with exactly this
    ``class`` and ``desc``::

        raise QMPError("Device 'net0' not found", error_class=ErrorClass.DEVICE_NOT_FOUND)

    The subclasses fix the class, so ``raise DeviceNotFound("Device 'net0' not
    found")`` is the same response.
    """

    default_class: ErrorClass = ErrorClass.GENERIC_ERROR

    def __init__(self, desc: str, *, error_class: ErrorClass | None = None) -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class if error_class is not None else self.default_class

    def to_error_object(self) -> dict[str, str]:
        """The value of the ``error`` member of the response: ``{"class", "desc"}``."""
        return {"class": str(self.error_class), "desc": self.desc}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.desc!r}, error_class={self.error_class.value!r})"


class GenericError(QMPError):
    """``GenericError``: the class of nearly every QMP error."""

    default_class = ErrorClass.GENERIC_ERROR


class CommandNotFound(QMPError):  # noqa: N818 - QEMU's class name
    """``CommandNotFound``: unknown command, or a command not allowed in this mode."""

    default_class = ErrorClass.COMMAND_NOT_FOUND


class DeviceNotActive(QMPError):  # noqa: N818 - QEMU's class name
    """``DeviceNotActive``: a device exists but is not active (e.g. a disabled balloon)."""

    default_class = ErrorClass.DEVICE_NOT_ACTIVE


class DeviceNotFound(QMPError):  # noqa: N818 - QEMU's class name
    """``DeviceNotFound``: the requested device has not been found."""

    default_class = ErrorClass.DEVICE_NOT_FOUND


class KVMMissingCap(QMPError):  # noqa: N818 - QEMU's class name
    """``KVMMissingCap``: the operation needs a KVM capability the host lacks."""

    default_class = ErrorClass.KVM_MISSING_CAP
