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

An exception raised by a Python hook (``realize``, ``instance_init``...)
propagates unchanged to the caller that triggered the hook.
"""

from vmkit._core import (
    AbstractTypeError,
    DuplicatePropertyError,
    HookError,
    LifecycleError,
    ObjectFinalizedError,
    PathError,
    PropertyAccessError,
    PropertyError,
    PropertyNotFoundError,
    PropertyTypeError,
    PropertyValueError,
    QomError,
    SingletonError,
    TypeNotFoundError,
    TypeRegistrationError,
    VmkitError,
    WrongTypeError,
)

__all__ = [
    "AbstractTypeError",
    "DuplicatePropertyError",
    "HookError",
    "LifecycleError",
    "ObjectFinalizedError",
    "PathError",
    "PropertyAccessError",
    "PropertyError",
    "PropertyNotFoundError",
    "PropertyTypeError",
    "PropertyValueError",
    "QomError",
    "SingletonError",
    "TypeNotFoundError",
    "TypeRegistrationError",
    "VmkitError",
    "WrongTypeError",
]
