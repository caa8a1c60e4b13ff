"""Exceptions raised by vmkit.

Every vmkit error derives from :class:`VmkitError`; object-model errors from
:class:`QomError`::

    VmkitError
    └── QomError
        ├── TypeNotFoundError, TypeRegistrationError, AbstractTypeError, WrongTypeError
        ├── PropertyError
        │   ├── PropertyNotFoundError, DuplicatePropertyError
        │   └── PropertyTypeError, PropertyValueError, PropertyAccessError
        ├── PathError
        ├── ObjectFinalizedError
        ├── SingletonError
        ├── LifecycleError
        └── HookError
    GuestMemoryError
        ├── AddressError       (out of bounds, overflow, unassigned in strict mode)
        ├── AccessError        (refused by a region's constraints or an IOMMU)
        ├── RegionLayoutError  (zero sizes, aliases beyond targets, overlaps, cycles)
        ├── DeviceGoneError    (the region's owner is unrealized or finalized)
        └── HostMemoryError    (mmap, memfd, file backing)

An exception raised by a Python hook (``realize``, ``instance_init``...) or
callback (MMIO ``read``/``write``, IOMMU ``translate``) propagates unchanged
to the caller that triggered it.
"""

from vmkit._core import (
    AbstractTypeError,
    AccessError,
    AddressError,
    DeviceGoneError,
    DuplicatePropertyError,
    GuestMemoryError,
    HookError,
    HostMemoryError,
    LifecycleError,
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
    TypeNotFoundError,
    TypeRegistrationError,
    VmkitError,
    WrongTypeError,
)

__all__ = [
    "AbstractTypeError",
    "AccessError",
    "AddressError",
    "DeviceGoneError",
    "DuplicatePropertyError",
    "GuestMemoryError",
    "HookError",
    "HostMemoryError",
    "LifecycleError",
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
    "TypeNotFoundError",
    "TypeRegistrationError",
    "VmkitError",
    "WrongTypeError",
]
