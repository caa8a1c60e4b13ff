//! VMState: descriptions of device state and their wire encoding.
//!
//! * [`desc`]: [`VmStateDescription`] (built with a validating builder),
//!   [`Field`], [`FieldKind`], [`ArrayLen`], hooks, [`MigrationPriority`].
//! * [`value`]: [`VmValue`] / [`VmStruct`], the value tree that is encoded
//!   and decoded (with a JSON rendering for analysis).
//! * [`codec`]: [`encode`] and [`decode`] / [`decode_into`] of a body
//!   (fields, then subsections), with [`DecodeLimits`] applied before any
//!   allocation.
//! * [`json`]: the VMDESCRIPTION device entry of an encoded body, and a
//!   generic decoder driven by such an entry (for devices vmkit does not
//!   know).
//! * [`spec`]: kinds and priorities written as text (`FromStr`).
//! * [`io`]: the offset-counting, peeking [`VmReader`] and [`VmWriter`].
//!
//! A body has no framing: fields are concatenated raw, so sender and
//! receiver must walk the same description. Versions, field existence and
//! subsections follow QEMU's `migration/vmstate.c`.
//!
//! ```
//! use vmkit_migration::vmstate::{
//!     FieldKind, VmReader, VmStateDescription, VmStruct, VmValue, decode, encode,
//! };
//!
//! let desc = VmStateDescription::builder("timer-dev")
//!     .version(2)
//!     .simple("ctrl", FieldKind::U32)
//!     .simple("expiry", FieldKind::Timer)
//!     .build()?;
//! let mut state = VmStruct::new()
//!     .with("ctrl", VmValue::UInt(1))
//!     .with("expiry", VmValue::Int(-1));
//! let mut bytes = Vec::new();
//! encode(&desc, &mut state, &mut bytes, 0)?;
//! assert_eq!(bytes, [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
//! let back = decode(&desc, 2, &mut VmReader::new(&bytes[..], 0))?;
//! assert_eq!(back, state);
//! # Ok::<(), vmkit_migration::vmstate::VmStateError>(())
//! ```
//!
//! There is deliberately no pointer field type. A value that must survive a
//! restart (for example the host address a DMA range was registered at) is
//! an explicit `U64` field filled in `pre_save` (principle 6: values, not
//! pointers, cross the wire) and put back to use in `post_load`.

pub mod codec;
mod decoder;
pub mod desc;
mod encoder;
pub mod io;
pub mod json;
pub mod spec;
pub mod value;

pub use codec::{DecodeLimits, decode, decode_exact, decode_into, decode_with_limits, encode};
pub use desc::{
    ArrayLen, ExistsHook, Field, FieldKind, MigrationPriority, NeededHook, PostLoadHook, StateHook, VmStateDescription,
    VmStateDescriptionBuilder,
};
pub use io::{VmReader, VmWriter};
pub use json::{decode_with_vmdesc, device_entry, encode_described};
pub use spec::{KIND_SYNTAX, MAX_KIND_DEPTH, SpecError, scalar_kind};
pub use value::{VmStruct, VmValue};

/// VMState errors.
#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    /// A description that cannot be built.
    #[error("invalid VMState description '{name}': {reason}")]
    Description {
        /// The description's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Encoding or decoding a body failed.
    #[error("section '{section}', field '{path}', offset {offset}: {problem}")]
    Body {
        /// The top-level description (section) name.
        section: String,
        /// The field path, e.g. `ide/bus[1]/status` (subsections appear by
        /// the part of their name after the parent's `name/`).
        path: String,
        /// Absolute byte offset where the failing item starts.
        offset: u64,
        /// What was wrong.
        #[source]
        problem: Problem,
    },
}

impl VmStateError {
    /// The problem of a body error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            VmStateError::Body { problem, .. } => Some(problem),
            VmStateError::Description { .. } => None,
        }
    }

    /// The field path of a body error.
    pub fn path(&self) -> Option<&str> {
        match self {
            VmStateError::Body { path, .. } => Some(path),
            VmStateError::Description { .. } => None,
        }
    }

    /// The byte offset of a body error.
    pub fn offset(&self) -> Option<u64> {
        match self {
            VmStateError::Body { offset, .. } => Some(*offset),
            VmStateError::Description { .. } => None,
        }
    }
}

/// What went wrong in a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The input ended inside an item.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the item needs.
        needed: u64,
        /// Bytes there were.
        got: u64,
    },
    /// The stream's version is newer than this side's description.
    #[error("stream version {stream} is too new (newest supported {supported})")]
    TooNew {
        /// The stream's version.
        stream: u32,
        /// `version_id`.
        supported: u32,
    },
    /// The stream's version is older than this side loads.
    #[error("stream version {stream} is too old (oldest supported {minimum})")]
    TooOld {
        /// The stream's version.
        stream: u32,
        /// `minimum_version_id`.
        minimum: u32,
    },
    /// An `Equal` field differs from the receiver's value.
    #[error("value mismatch: stream has {found}, expected {expected}")]
    EqualMismatch {
        /// The receiver's value.
        expected: String,
        /// The stream's value.
        found: String,
    },
    /// Where the null marker 0x30 was required, another byte.
    #[error("bad null marker 0x{found:02x} (expected 0x30)")]
    BadNullMarker {
        /// The byte found.
        found: u8,
    },
    /// A subsection this side does not know.
    #[error("unknown subsection '{name}'")]
    UnknownSubsection {
        /// Its name as sent (lossy UTF-8).
        name: String,
    },
    /// A length or count above the configured cap.
    #[error("{what} {len} is over the cap {cap}")]
    OverCap {
        /// What was counted.
        what: String,
        /// The length asked for.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// Nesting deeper than the configured cap.
    #[error("nesting deeper than {max_depth}")]
    TooDeep {
        /// The cap.
        max_depth: u32,
    },
    /// A length or count field holds an unusable value.
    #[error("length field '{field}' holds {value}")]
    BadLength {
        /// The length field.
        field: String,
        /// Its value, rendered.
        value: String,
    },
    /// A field marked must-exist is absent at this version.
    #[error("field must exist but is absent at version {version}")]
    MustExist {
        /// The version.
        version: u32,
    },
    /// A hook (or an `exists` / `needed` predicate) failed.
    #[error("{hook} failed: {source}")]
    Hook {
        /// Which hook.
        hook: &'static str,
        /// What it raised.
        #[source]
        source: vmkit_qom::CallbackError,
    },
    /// Encoding: the state has no value for a field.
    #[error("no value to encode")]
    MissingValue,
    /// Encoding: the value does not fit the field kind.
    #[error("value {value} does not fit a {kind} field")]
    BadValue {
        /// The value, rendered.
        value: String,
        /// The kind's info name.
        kind: String,
    },
    /// Encoding: an array or buffer length differs from its length field or
    /// fixed size.
    #[error("length {actual} differs from the expected {expected}")]
    LengthMismatch {
        /// The length the value has.
        actual: u64,
        /// The length the description says.
        expected: u64,
    },
    /// A VMDESCRIPTION entry that cannot drive a decode.
    #[error("bad VMDESCRIPTION entry: {reason}")]
    BadVmDesc {
        /// What is wrong.
        reason: String,
    },
    /// Bytes left after a body that should have been the whole input.
    #[error("{count} bytes after the body")]
    TrailingBytes {
        /// How many.
        count: u64,
    },
    /// An I/O error other than the end of input.
    #[error("I/O error: {message}")]
    Io {
        /// The error, rendered.
        message: String,
    },
}
