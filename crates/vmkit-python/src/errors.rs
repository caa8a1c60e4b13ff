//! The exception hierarchy of `vmkit.errors`, and the mapping from core errors.
//!
//! ```text
//! VmkitError
//! └── QomError
//!     ├── TypeNotFoundError, TypeRegistrationError, AbstractTypeError, WrongTypeError
//!     ├── PropertyError
//!     │   ├── PropertyNotFoundError, DuplicatePropertyError
//!     │   ├── PropertyTypeError, PropertyValueError, PropertyAccessError
//!     ├── PathError
//!     │   └── AmbiguousPathError
//!     ├── ObjectFinalizedError
//!     ├── SingletonError
//!     ├── LifecycleError
//!     └── HookError
//! └── GuestMemoryError
//!     ├── AddressError        (out of bounds, overflow, unassigned in strict mode)
//!     ├── AccessError         (refused by a region's constraints, an IOMMU, a read-only target)
//!     ├── RegionLayoutError   (zero/unaligned sizes, aliases beyond targets, overlaps, cycles)
//!     ├── DeviceGoneError     (the region's owner is unrealized or finalized)
//!     └── HostMemoryError     (mmap, memfd, file backing)
//! └── DeviceError             (a device model refused: a BAR, a description)
//! └── MigrationError
//!     ├── StreamError         (the stream's bytes: truncation, bad records, lengths, RAM, configuration)
//!     ├── VMStateError        (a VMState description, or a device body that does not follow it)
//!     └── DeviceStateError    (a device refused to save or load; a section or RAM the stream lacks)
//! ```
//! Migration errors carry `offset` (the stream byte offset, or `None`),
//! `section` (the section idstr, or `None`) and `field` (the field path
//! within the section, or `None`).
//! A Python exception raised inside a hook is re-raised as it is. A
//! `HookError` carries `reason`: what the hook itself said (QEMU's message
//! for a device that refuses to realize or unplug).

use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;
use vmkit_migration::transport::OsFailure;
use vmkit_qom::{CallbackError, Error, ErrorKind};

pyo3::create_exception!(
    vmkit.errors,
    VmkitError,
    PyException,
    "Base class of every vmkit error."
);
pyo3::create_exception!(vmkit.errors, QomError, VmkitError, "An object-model error.");
pyo3::create_exception!(
    vmkit.errors,
    TypeNotFoundError,
    QomError,
    "No type of that name is registered."
);
pyo3::create_exception!(
    vmkit.errors,
    TypeRegistrationError,
    QomError,
    "A type registration was refused."
);
pyo3::create_exception!(
    vmkit.errors,
    AbstractTypeError,
    QomError,
    "An abstract type was instantiated."
);
pyo3::create_exception!(
    vmkit.errors,
    WrongTypeError,
    QomError,
    "A type is not of the kind the operation needs."
);
pyo3::create_exception!(vmkit.errors, PropertyError, QomError, "A property access failed.");
pyo3::create_exception!(
    vmkit.errors,
    PropertyNotFoundError,
    PropertyError,
    "No property of that name."
);
pyo3::create_exception!(
    vmkit.errors,
    DuplicatePropertyError,
    PropertyError,
    "A property or child of that name exists."
);
pyo3::create_exception!(
    vmkit.errors,
    PropertyTypeError,
    PropertyError,
    "The value has the wrong type for the property."
);
pyo3::create_exception!(
    vmkit.errors,
    PropertyValueError,
    PropertyError,
    "The value is out of range or not accepted."
);
pyo3::create_exception!(
    vmkit.errors,
    PropertyAccessError,
    PropertyError,
    "The property cannot be read or written now."
);
pyo3::create_exception!(
    vmkit.errors,
    PathError,
    QomError,
    "A path is malformed, names nothing, or is ambiguous."
);
pyo3::create_exception!(
    vmkit.errors,
    AmbiguousPathError,
    PathError,
    "A partial path matches more than one object."
);
pyo3::create_exception!(
    vmkit.errors,
    ObjectFinalizedError,
    QomError,
    "The object is finalizing or finalized."
);
pyo3::create_exception!(
    vmkit.errors,
    SingletonError,
    QomError,
    "A second instance of a singleton type was refused."
);
pyo3::create_exception!(
    vmkit.errors,
    LifecycleError,
    QomError,
    "A lifecycle transition is not allowed now."
);
pyo3::create_exception!(
    vmkit.errors,
    HookError,
    QomError,
    "A hook failed without a Python exception."
);
pyo3::create_exception!(
    vmkit.errors,
    DeviceError,
    VmkitError,
    "A device model refused (a BAR, a capability, a description)."
);
pyo3::create_exception!(vmkit.errors, MigrationError, VmkitError, "A migration stream error.");
pyo3::create_exception!(
    vmkit.errors,
    StreamError,
    MigrationError,
    "The stream's bytes are not a valid stream for this machine."
);
pyo3::create_exception!(
    vmkit.errors,
    VMStateError,
    MigrationError,
    "A VMState description, or a device body that does not follow it."
);
pyo3::create_exception!(
    vmkit.errors,
    DeviceStateError,
    MigrationError,
    "A device refused its state, or the stream lacks part of the machine."
);
pyo3::create_exception!(vmkit.errors, GuestMemoryError, VmkitError, "A guest-memory error.");
pyo3::create_exception!(
    vmkit.errors,
    AddressError,
    GuestMemoryError,
    "An address or range outside what exists."
);
pyo3::create_exception!(
    vmkit.errors,
    AccessError,
    GuestMemoryError,
    "An access refused by a region or an IOMMU."
);
pyo3::create_exception!(
    vmkit.errors,
    RegionLayoutError,
    GuestMemoryError,
    "A region or layout that cannot be built."
);
pyo3::create_exception!(
    vmkit.errors,
    DeviceGoneError,
    GuestMemoryError,
    "The region's owner is unrealized or finalized."
);
pyo3::create_exception!(
    vmkit.errors,
    HostMemoryError,
    GuestMemoryError,
    "The host could not provide the memory."
);

/// The Python exception a Python callback raised, when `err` was caused
/// by one: every core error keeps a callback's error as a
/// [`CallbackError`] in its chain of sources, whichever crate reports it.
fn raised_by_callback(py: Python<'_>, err: &(dyn std::error::Error + 'static)) -> Option<PyErr> {
    CallbackError::find(err)?
        .downcast_ref::<PyErr>()
        .map(|original| original.clone_ref(py))
}

/// A Python exception as the error of a callback, for the core to carry
/// back to the binding that started the call.
pub(crate) fn callback_error(err: PyErr) -> CallbackError {
    CallbackError::new(err)
}

/// Converts a core error to the matching Python exception; a Python
/// exception raised by a hook is re-raised as it is.
pub(crate) fn to_py(py: Python<'_>, err: Error) -> PyErr {
    if let Some(original) = raised_by_callback(py, &err) {
        return original;
    }
    let msg = err.to_string();
    match err.kind() {
        ErrorKind::TypeNotFound => TypeNotFoundError::new_err(msg),
        ErrorKind::TypeRegistration => TypeRegistrationError::new_err(msg),
        ErrorKind::AbstractType => AbstractTypeError::new_err(msg),
        ErrorKind::WrongType => WrongTypeError::new_err(msg),
        ErrorKind::PropertyNotFound => PropertyNotFoundError::new_err(msg),
        ErrorKind::DuplicateProperty => DuplicatePropertyError::new_err(msg),
        ErrorKind::PropertyType => PropertyTypeError::new_err(msg),
        ErrorKind::PropertyValue => PropertyValueError::new_err(msg),
        ErrorKind::PropertyAccess => PropertyAccessError::new_err(msg),
        ErrorKind::Path => PathError::new_err(msg),
        ErrorKind::AmbiguousPath => AmbiguousPathError::new_err(msg),
        ErrorKind::ObjectFinalized => ObjectFinalizedError::new_err(msg),
        ErrorKind::Singleton => SingletonError::new_err(msg),
        ErrorKind::Lifecycle => LifecycleError::new_err(msg),
        ErrorKind::Hook => {
            let reason = match &err {
                Error::Hook { source, .. } => Some(source.to_string()),
                _ => None,
            };
            let exc = HookError::new_err(msg);
            // Setting an attribute on a fresh exception instance cannot fail.
            let _ = exc.value(py).setattr("reason", reason);
            exc
        }
    }
}

/// Converts an error of the device glue: each layer's error keeps its
/// own class; a model's refusal is a `DeviceError`.
pub(crate) fn glue_err(py: Python<'_>, err: vmkit_devices::glue::GlueError) -> PyErr {
    use vmkit_devices::glue::GlueError as G;
    match err {
        G::Qom(e) => to_py(py, e),
        G::Memory(e) => mem_err(py, e),
        G::Pci(e) => DeviceError::new_err(e.to_string()),
        G::Savevm(e) => migration_err(py, vmkit_migration::Error::Savevm(e)),
        G::VmState(e) => DeviceError::new_err(e.to_string()),
        G::Usb(e) => DeviceError::new_err(e.to_string()),
        G::Device(msg) => DeviceError::new_err(msg),
    }
}

/// Converts a guest-memory error to the matching Python exception; a Python
/// exception raised by a callback is re-raised as it is.
pub(crate) fn mem_err(py: Python<'_>, err: vmkit_memory::Error) -> PyErr {
    use vmkit_memory::Error as E;
    if let Some(original) = raised_by_callback(py, &err) {
        return original;
    }
    let msg = err.to_string();
    match err {
        E::Qom(e) => to_py(py, e),
        E::OutOfBounds { .. } | E::Overflow { .. } | E::Unassigned { .. } | E::PageOutOfRange { .. } => {
            AddressError::new_err(msg)
        }
        E::InvalidAccess { .. } | E::Refused(_) | E::Translation { .. } | E::Callback { .. } => {
            AccessError::new_err(msg)
        }
        E::ZeroSize | E::Unaligned { .. } | E::Layout(_) | E::InvalidPageSize { .. } => RegionLayoutError::new_err(msg),
        E::OwnerGone { .. } => DeviceGoneError::new_err(msg),
        E::Io { .. } => HostMemoryError::new_err(msg),
        E::DirtyLogBusy { .. } | E::DirtyLogInactive { .. } | E::InvalidConfig { .. } => GuestMemoryError::new_err(msg),
    }
}

/// Converts a migration error: a Python exception raised by a callback
/// during the call is re-raised as it is; otherwise the matching
/// `MigrationError` subclass, with `offset`, `section` and `field` set.
pub(crate) fn migration_err(py: Python<'_>, err: vmkit_migration::Error) -> PyErr {
    use vmkit_migration::Error as E;
    use vmkit_migration::savevm::SavevmError as S;
    use vmkit_migration::vmstate::VmStateError as V;
    if let Some(original) = raised_by_callback(py, &err) {
        return original;
    }
    let msg = err.to_string();
    let (exc, offset, section, field): (PyErr, Option<u64>, Option<String>, Option<String>) = match err {
        E::Wire(w) => (
            StreamError::new_err(msg),
            Some(w.offset()),
            w.section().map(str::to_owned),
            None,
        ),
        E::VmState(v) => {
            let section = match &v {
                V::Body { section, .. } => Some(section.clone()),
                V::Description { .. } => None,
            };
            let (offset, field) = (v.offset(), v.path().map(str::to_owned));
            (VMStateError::new_err(msg), offset, section, field)
        }
        E::Savevm(S::Device {
            idstr, offset, source, ..
        }) => (
            DeviceStateError::new_err(msg),
            offset,
            Some(idstr),
            source.path().map(str::to_owned),
        ),
        E::Savevm(S::MissingSection { idstr, .. } | S::DuplicateDevice { idstr, .. }) => {
            (DeviceStateError::new_err(msg), None, Some(idstr), None)
        }
        E::Savevm(S::IncompleteRam { .. }) => (DeviceStateError::new_err(msg), None, None, None),
        E::Savevm(S::Registration { .. }) => return TypeRegistrationError::new_err(msg),
        // Errors of the layers below keep their own classes (an
        // `AmbiguousPathError` stays one).
        E::Savevm(S::Qom(e)) => return to_py(py, e),
        E::Memory(e) => return mem_err(py, e),
        E::Transport(t) => return os_error(py, None, t.os_failure()),
    };
    with_location(py, exc, offset, section, field)
}

/// An I/O failure of a stream's transport as Python's `OSError` (the
/// subclass its errno selects: `BrokenPipeError`, `TimeoutError`, ...),
/// with `filename` and the stream `offset` where writing stopped.
pub(crate) fn os_error(py: Python<'_>, path: Option<&std::path::Path>, failure: OsFailure) -> PyErr {
    let err = match path {
        Some(path) => PyOSError::new_err((failure.errno, failure.message, path.to_string_lossy().into_owned())),
        None => PyOSError::new_err((failure.errno, failure.message)),
    };
    // Setting an attribute on a fresh OSError instance cannot fail.
    let _ = err.value(py).setattr("offset", failure.offset);
    err
}

/// Sets a migration exception's `offset`, `section` and `field`.
fn with_location(
    py: Python<'_>,
    exc: PyErr,
    offset: Option<u64>,
    section: Option<String>,
    field: Option<String>,
) -> PyErr {
    let value = exc.value(py);
    // Setting attributes on a fresh exception instance cannot fail.
    let _ = value.setattr("offset", offset);
    let _ = value.setattr("section", section);
    let _ = value.setattr("field", field);
    exc
}

/// `Result<T, vmkit_qom::Error>` → `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VmkitError", py.get_type::<VmkitError>())?;
    m.add("QomError", py.get_type::<QomError>())?;
    m.add("TypeNotFoundError", py.get_type::<TypeNotFoundError>())?;
    m.add("TypeRegistrationError", py.get_type::<TypeRegistrationError>())?;
    m.add("AbstractTypeError", py.get_type::<AbstractTypeError>())?;
    m.add("WrongTypeError", py.get_type::<WrongTypeError>())?;
    m.add("PropertyError", py.get_type::<PropertyError>())?;
    m.add("PropertyNotFoundError", py.get_type::<PropertyNotFoundError>())?;
    m.add("DuplicatePropertyError", py.get_type::<DuplicatePropertyError>())?;
    m.add("PropertyTypeError", py.get_type::<PropertyTypeError>())?;
    m.add("PropertyValueError", py.get_type::<PropertyValueError>())?;
    m.add("PropertyAccessError", py.get_type::<PropertyAccessError>())?;
    m.add("PathError", py.get_type::<PathError>())?;
    m.add("AmbiguousPathError", py.get_type::<AmbiguousPathError>())?;
    m.add("ObjectFinalizedError", py.get_type::<ObjectFinalizedError>())?;
    m.add("SingletonError", py.get_type::<SingletonError>())?;
    m.add("LifecycleError", py.get_type::<LifecycleError>())?;
    m.add("HookError", py.get_type::<HookError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("GuestMemoryError", py.get_type::<GuestMemoryError>())?;
    m.add("MigrationError", py.get_type::<MigrationError>())?;
    m.add("StreamError", py.get_type::<StreamError>())?;
    m.add("VMStateError", py.get_type::<VMStateError>())?;
    m.add("DeviceStateError", py.get_type::<DeviceStateError>())?;
    m.add("AddressError", py.get_type::<AddressError>())?;
    m.add("AccessError", py.get_type::<AccessError>())?;
    m.add("RegionLayoutError", py.get_type::<RegionLayoutError>())?;
    m.add("DeviceGoneError", py.get_type::<DeviceGoneError>())?;
    m.add("HostMemoryError", py.get_type::<HostMemoryError>())?;
    Ok(())
}
