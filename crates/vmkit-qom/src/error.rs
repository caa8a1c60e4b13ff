//! Errors of the object model.
//!
//! Every failure the object model can report is a variant of [`Error`]; each
//! carries enough context (type name, property name, object path) to be shown
//! to a user as it is. Callers that need to branch on the kind of failure use
//! [`Error::kind`].

use crate::callback::CallbackError;

/// The result type of every fallible object-model operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the object model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No type of that name is registered.
    #[error("type '{0}' not found")]
    TypeNotFound(String),
    /// A type registration was refused (duplicate name, unknown parent, bad interface...).
    #[error("cannot register type '{name}': {reason}")]
    TypeRegistration {
        /// The type being registered.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// An abstract type (or interface) was instantiated.
    #[error("type '{0}' is abstract")]
    AbstractType(String),
    /// The type is not of the kind an operation needs (e.g. `device_add` of a non-device).
    #[error("type '{type_name}' is not a '{expected}'")]
    WrongType {
        /// The type that was given.
        type_name: String,
        /// The type (or interface) it should have been or implemented.
        expected: String,
    },
    /// No property of that name on the object or type.
    #[error("property '{name}' not found on {object}")]
    PropertyNotFound {
        /// Description of the object or type.
        object: String,
        /// The property asked for.
        name: String,
    },
    /// A property or child of that name already exists.
    #[error("property '{name}' already exists on {object}")]
    DuplicateProperty {
        /// Description of the object or type.
        object: String,
        /// The duplicated name.
        name: String,
    },
    /// The value given has the wrong type for the property.
    #[error("property '{name}' of {object} expects {expected}, got {got}")]
    PropertyType {
        /// Description of the object.
        object: String,
        /// The property.
        name: String,
        /// The property's type, e.g. `uint8` or `link<device>`.
        expected: String,
        /// What was given, e.g. `a string`.
        got: String,
    },
    /// The value has the right type but is not acceptable (range, enum member, size syntax).
    #[error("property '{name}' of {object} expects {expected}: {reason}")]
    PropertyValue {
        /// Description of the object.
        object: String,
        /// The property.
        name: String,
        /// The property's type with its constraint, e.g. `uint8 (0..=255)`.
        expected: String,
        /// What was wrong with the value.
        reason: String,
    },
    /// The property cannot be accessed this way (read-only, write-only, or set after realize).
    #[error("property '{name}' of {object}: {reason}")]
    PropertyAccess {
        /// Description of the object.
        object: String,
        /// The property.
        name: String,
        /// Why the access is refused.
        reason: String,
    },
    /// A path is malformed, names nothing, or is ambiguous.
    #[error("{0}")]
    Path(#[from] PathError),
    /// The object is finalizing or finalized: it can no longer be referenced or used.
    #[error("{object} is {state}: {action} refused")]
    ObjectFinalized {
        /// Description of the object.
        object: String,
        /// `finalizing` or `finalized`.
        state: &'static str,
        /// What was attempted, e.g. `taking a reference`.
        action: String,
    },
    /// A second realized/completed instance of a singleton type.
    #[error("type '{type_name}' is a singleton (of '{singleton_type}'): an instance is already active at '{existing}'")]
    Singleton {
        /// The type being realized or completed.
        type_name: String,
        /// The type that declares the singleton interface.
        singleton_type: String,
        /// The canonical path (or description) of the existing instance.
        existing: String,
    },
    /// A lifecycle transition that is not allowed in the object's current state.
    #[error("{object}: {reason}")]
    Lifecycle {
        /// Description of the object.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// A hook (init, realize, complete, accessor...) failed.
    #[error("{hook} of {object} failed: {source}")]
    Hook {
        /// Which hook, e.g. `realize`.
        hook: String,
        /// Description of the object.
        object: String,
        /// What the hook raised, kept for bindings to re-raise.
        #[source]
        source: CallbackError,
    },
}

/// Path resolution failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is syntactically invalid.
    #[error("invalid path '{path}': {reason}")]
    Invalid {
        /// The path given.
        path: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Nothing lives at that path.
    #[error("no object at path '{0}'")]
    NotFound(String),
    /// A partial path matches more than one object.
    #[error("path '{path}' is ambiguous: it matches {matches}")]
    Ambiguous {
        /// The partial path.
        path: String,
        /// The canonical paths it matches (a few of them).
        matches: String,
    },
}

/// A coarse classification of [`Error`], for bindings that map errors to exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// [`Error::TypeNotFound`]
    TypeNotFound,
    /// [`Error::TypeRegistration`]
    TypeRegistration,
    /// [`Error::AbstractType`]
    AbstractType,
    /// [`Error::WrongType`]
    WrongType,
    /// [`Error::PropertyNotFound`]
    PropertyNotFound,
    /// [`Error::DuplicateProperty`]
    DuplicateProperty,
    /// [`Error::PropertyType`]
    PropertyType,
    /// [`Error::PropertyValue`]
    PropertyValue,
    /// [`Error::PropertyAccess`]
    PropertyAccess,
    /// [`Error::Path`], except an ambiguous partial path
    Path,
    /// [`Error::Path`] with [`PathError::Ambiguous`]: a partial path that
    /// matches more than one object (callers tell it apart from "not found")
    AmbiguousPath,
    /// [`Error::ObjectFinalized`]
    ObjectFinalized,
    /// [`Error::Singleton`]
    Singleton,
    /// [`Error::Lifecycle`]
    Lifecycle,
    /// [`Error::Hook`]
    Hook,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TypeNotFound(_) => ErrorKind::TypeNotFound,
            Error::TypeRegistration { .. } => ErrorKind::TypeRegistration,
            Error::AbstractType(_) => ErrorKind::AbstractType,
            Error::WrongType { .. } => ErrorKind::WrongType,
            Error::PropertyNotFound { .. } => ErrorKind::PropertyNotFound,
            Error::DuplicateProperty { .. } => ErrorKind::DuplicateProperty,
            Error::PropertyType { .. } => ErrorKind::PropertyType,
            Error::PropertyValue { .. } => ErrorKind::PropertyValue,
            Error::PropertyAccess { .. } => ErrorKind::PropertyAccess,
            Error::Path(PathError::Ambiguous { .. }) => ErrorKind::AmbiguousPath,
            Error::Path(_) => ErrorKind::Path,
            Error::ObjectFinalized { .. } => ErrorKind::ObjectFinalized,
            Error::Singleton { .. } => ErrorKind::Singleton,
            Error::Lifecycle { .. } => ErrorKind::Lifecycle,
            Error::Hook { .. } => ErrorKind::Hook,
        }
    }

    /// The same error with the object named as its user knows it (e.g.
    /// `device 'serial0' (demo-isa-serial)`): a property set before the
    /// object is placed would otherwise be described by its internal id.
    pub fn naming_object(self, who: &str) -> Self {
        match self {
            Error::PropertyNotFound { name, .. } => Error::PropertyNotFound {
                object: who.to_string(),
                name,
            },
            Error::PropertyType {
                name, expected, got, ..
            } => Error::PropertyType {
                object: who.to_string(),
                name,
                expected,
                got,
            },
            Error::PropertyValue {
                name, expected, reason, ..
            } => Error::PropertyValue {
                object: who.to_string(),
                name,
                expected,
                reason,
            },
            Error::PropertyAccess { name, reason, .. } => Error::PropertyAccess {
                object: who.to_string(),
                name,
                reason,
            },
            other => other,
        }
    }

    /// Wraps an arbitrary error raised by a hook.
    pub fn hook<E>(hook: impl Into<String>, object: impl Into<String>, err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error::Hook {
            hook: hook.into(),
            object: object.into(),
            source: CallbackError::new(err),
        }
    }

    /// A hook failure with only a message.
    pub fn hook_message(hook: impl Into<String>, object: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Hook {
            hook: hook.into(),
            object: object.into(),
            source: CallbackError::msg(message),
        }
    }
}
