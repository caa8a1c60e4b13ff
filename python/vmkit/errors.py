"""Exceptions raised by vmkit.

Every vmkit error derives from :class:`VmkitError`; object-model errors from
:class:`QomError`::

    VmkitError
    ├── QomError
    │   ├── TypeNotFoundError, TypeRegistrationError, AbstractTypeError, WrongTypeError
    │   ├── PropertyError
    │   │   ├── PropertyNotFoundError, DuplicatePropertyError
    │   │   └── PropertyTypeError, PropertyValueError, PropertyAccessError
    │   ├── PathError
    │   │   └── AmbiguousPathError  (a partial path that matches more than one object)
    │   ├── ObjectFinalizedError
    │   ├── SingletonError
    │   ├── LifecycleError
    │   └── HookError          (reason: what the hook said, e.g. QEMU's message of a refused device)
    ├── GuestMemoryError
    │   ├── AddressError       (out of bounds, overflow, unassigned in strict mode)
    │   ├── AccessError        (refused by a region's constraints or an IOMMU)
    │   ├── RegionLayoutError  (zero sizes, aliases beyond targets, overlaps, cycles)
    │   ├── DeviceGoneError    (the region's owner is unrealized or finalized)
    │   └── HostMemoryError    (mmap, memfd, file backing)
    ├── DeviceError            (a device model refused: a BAR, a capability, a description)
    ├── MigrationError         (attributes: offset, section, field — each or None)
    │   ├── StreamError        (the stream's bytes: truncation, records, lengths, RAM, config)
    │   ├── VMStateError       (a VMState description, or a device body that does not follow it)
    │   └── DeviceStateError   (a device refused its state; a section or RAM the stream lacks)
    └── vmkit.qmp.QMPError     (and QEMU's error classes, GenericError ...)

A stream's I/O failure while saving or restoring (a full disk, a closed
pipe, a FIFO nobody opened in time) is Python's own ``OSError`` (its errno
picks the subclass: ``BrokenPipeError``, ``TimeoutError`` ...), with
``filename`` and ``offset`` (the first stream byte that did not get out).

An exception raised by a Python hook (``realize``, ``instance_init``...) or
callback (MMIO ``read``/``write``, IOMMU ``translate``, VMState hooks and
device ``save``/``load`` functions) propagates unchanged
to the caller that triggered it.
"""

from vmkit._core import (
    AbstractTypeError,
    AccessError,
    AddressError,
    AmbiguousPathError,
    DeviceError,
    DeviceGoneError,
    DeviceStateError,
    DuplicatePropertyError,
    GuestMemoryError,
    HookError,
    HostMemoryError,
    LifecycleError,
    MigrationError,
    ObjectFinalizedError,
    PathError,
    PropertyAccessError,
    PropertyError,
    PropertyNotFoundError,
    PropertyTypeError,
    PropertyValueError,
    QomError,
    RegionLayoutError,
    SingletonError,
    StreamError,
    TypeNotFoundError,
    TypeRegistrationError,
    VmkitError,
    VMStateError,
    WrongTypeError,
)

__all__ = [
    "AbstractTypeError",
    "AccessError",
    "AddressError",
    "AmbiguousPathError",
    "DeviceError",
    "DeviceGoneError",
    "DeviceStateError",
    "DuplicatePropertyError",
    "GuestMemoryError",
    "HookError",
    "HostMemoryError",
    "LifecycleError",
    "MigrationError",
    "ObjectFinalizedError",
    "PathError",
    "PropertyAccessError",
    "PropertyError",
    "PropertyNotFoundError",
    "PropertyTypeError",
    "PropertyValueError",
    "QomError",
    "RegionLayoutError",
    "SingletonError",
    "StreamError",
    "TypeNotFoundError",
    "TypeRegistrationError",
    "VMStateError",
    "VmkitError",
    "WrongTypeError",
]
