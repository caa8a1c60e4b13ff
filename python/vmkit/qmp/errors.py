"""QMP errors: the ``{"error": {"class": ..., "desc": ...}}`` half of the protocol.

QEMU reports every failure with one of the classes of its ``QapiErrorClass``
enum (``qapi/error.json``). Almost everything is ``GenericError``; the other
classes survive for backward compatibility and mean what their names say.
Clients must not parse ``desc``: it is a human-readable message.

Command handlers raise :class:`QMPError` (or one of its subclasses); the
dispatcher turns it into the error response. :class:`QMPError` is a
:class:`vmkit.errors.VmkitError`. Any other exception escaping a handler is
translated by :func:`to_qmp_error`, the one table from vmkit's exceptions to
QMP error classes and QEMU's messages, and logged.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Mapping
from dataclasses import dataclass

from vmkit import errors

__all__ = [
    "CommandNotFound",
    "DeviceNotActive",
    "DeviceNotFound",
    "ErrorClass",
    "GenericError",
    "KVMMissingCap",
    "QMPError",
    "to_qmp_error",
]


class ErrorClass(enum.StrEnum):
    """The values QEMU puts in an error response's ``class`` member."""

    GENERIC_ERROR = "GenericError"
    COMMAND_NOT_FOUND = "CommandNotFound"
    DEVICE_NOT_ACTIVE = "DeviceNotActive"
    DEVICE_NOT_FOUND = "DeviceNotFound"
    KVM_MISSING_CAP = "KVMMissingCap"


class QMPError(errors.VmkitError):
    """A QMP command failure: an error class plus a human-readable description.

    Raise it from a command handler to make the command fail with exactly this
    ``class`` and ``desc``::

        raise QMPError("Device 'net0' not found", error_class=ErrorClass.DEVICE_NOT_FOUND)

    The subclasses fix the class, so ``raise DeviceNotFound("Device 'net0' not
    found")`` is the same response.
    """

    default_class: ErrorClass = ErrorClass.GENERIC_ERROR
    desc: str
    error_class: ErrorClass

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


# --- vmkit exceptions to QMP errors: the one table ---------------------------


@dataclass(frozen=True)
class _Rule:
    """One row: exceptions of ``kind`` become
    ``qmp_class`` with ``message``, a ``str.format`` template over the
    caller's context and ``{error}`` (the exception's own text)."""

    kind: type[BaseException]
    qmp_class: type[QMPError]
    message: str

    def applies(self, exc: BaseException, context: Mapping[str, object]) -> bool:
        if not isinstance(exc, self.kind):
            return False
        fields = {name for _, name, _, _ in string.Formatter().parse(self.message) if name}
        return fields <= {"error", *context}


# First match wins; a row whose message needs a context member the caller
# did not give is skipped. The messages are QEMU's for the same failure.
_TRANSLATIONS: tuple[_Rule, ...] = (
    _Rule(errors.AmbiguousPathError, GenericError, "Path '{path}' is ambiguous"),
    _Rule(errors.PathError, DeviceNotFound, "Device '{path}' not found"),
    _Rule(
        errors.PropertyNotFoundError, GenericError, "Property '{type_name}.{property}' not found"
    ),
    # qom-list-properties: QEMU's error_set(ERROR_CLASS_DEVICE_NOT_FOUND, ...).
    _Rule(errors.TypeNotFoundError, DeviceNotFound, "Class '{typename}' not found"),
    # A device that refused to realize or unplug: QEMU answers with the
    # device's own message ("PCI: slot 3 function 0 not available ...").
    _Rule(errors.HookError, GenericError, "{reason}"),
    _Rule(Exception, GenericError, "{error}"),
)


def to_qmp_error(exc: BaseException, **context: object) -> QMPError:
    """The QMP error that reports ``exc``: the one translation from vmkit's
    exceptions (and any other) to QMP error classes and messages.

    ``context`` names what the failing command was working on (``path``,
    ``property``, ``type_name``, ``typename``); a :class:`HookError` adds
    its ``reason``; rules whose QEMU message needs a member that is absent
    do not apply. A :class:`QMPError` is
    returned unchanged; anything no rule names becomes a ``GenericError``
    with the exception's text (or its class name when it has none).
    """
    if isinstance(exc, QMPError):
        return exc
    reason = getattr(exc, "reason", None) if isinstance(exc, errors.HookError) else None
    if reason:
        context = {"reason": reason, **context}
    text = str(exc) or type(exc).__name__
    for rule in _TRANSLATIONS:
        if rule.applies(exc, context):
            return rule.qmp_class(rule.message.format(error=text, **context))
    return GenericError(text)  # BaseException outside Exception: KeyboardInterrupt...
