//! The one contract for a device's migratable state.
//!
//! A device's migratable state is a typed value ([`MigrationState`]) laid
//! out on the wire by one VMState description, and a device gives and
//! takes it through one trait, [`DeviceState`]. Everything that saves or
//! restores devices — whole-machine save/restore, the analyzer's known
//! descriptions, the QOM glue, Python-defined devices through the bindings
//! — goes through it.
//!
//! The typed value converts to and from the [`VmStruct`] value tree the
//! VMState codec works on; [`VmStruct`] itself is a `MigrationState`, for
//! devices (and tools) whose state is naturally dynamic. Failures are
//! [`StateError`]s, which keep the field path; savevm adds the section and
//! the stream offset.
//!
//! ```
//! use std::sync::Arc;
//! use parking_lot::Mutex;
//! use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
//! use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};
//!
//! /// The registers that migrate.
//! #[derive(Clone, Debug, PartialEq)]
//! struct TimerRegs { ctrl: u32, expiry: i64 }
//!
//! impl MigrationState for TimerRegs {
//!     fn to_vmstate(&self) -> VmStruct {
//!         VmStruct::new().with("ctrl", self.ctrl.into()).with("expiry", self.expiry.into())
//!     }
//!     fn from_vmstate(s: &VmStruct) -> Result<Self, StateError> {
//!         Ok(TimerRegs { ctrl: s.field("ctrl")?, expiry: s.field("expiry")? })
//!     }
//! }
//!
//! struct Timer { vmsd: Arc<VmStateDescription>, regs: Mutex<TimerRegs> }
//!
//! impl DeviceState for Timer {
//!     type State = TimerRegs;
//!     fn vmsd(&self) -> Arc<VmStateDescription> { Arc::clone(&self.vmsd) }
//!     fn save_state(&self) -> Result<TimerRegs, StateError> { Ok(self.regs.lock().clone()) }
//!     fn load_state(&self, regs: TimerRegs, _version_id: u32) -> Result<(), StateError> {
//!         *self.regs.lock() = regs;
//!         Ok(())
//!     }
//! }
//!
//! let vmsd = VmStateDescription::builder("timer")
//!     .simple("ctrl", FieldKind::U32)
//!     .simple("expiry", FieldKind::Timer)
//!     .build()?;
//! let timer = Timer { vmsd, regs: Mutex::new(TimerRegs { ctrl: 1, expiry: -1 }) };
//! let back = TimerRegs::from_vmstate(&timer.save_state()?.to_vmstate())?;
//! assert_eq!(back, TimerRegs { ctrl: 1, expiry: -1 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use vmkit_qom::CallbackError;

use crate::vmstate::{VmStateDescription, VmStruct, VmValue};

/// Why a device could not give or take its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A field of the state is missing, or its value does not fit the
    /// device's typed state.
    #[error("field '{path}': {reason}")]
    Field {
        /// The field path, e.g. `regs/ctrl`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The device cannot give or take its state now (not realized, busy).
    #[error("{0}")]
    Refused(String),
    /// A callback (a device's save or load function in another language)
    /// failed; its error is kept for the binding to re-raise.
    #[error("{0}")]
    Callback(#[source] CallbackError),
}

impl StateError {
    /// A field error at `path`.
    pub fn field(path: impl Into<String>, reason: impl Into<String>) -> StateError {
        StateError::Field {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The field path of a [`StateError::Field`].
    pub fn path(&self) -> Option<&str> {
        match self {
            StateError::Field { path, .. } => Some(path),
            StateError::Refused(_) | StateError::Callback(_) => None,
        }
    }
}

impl From<CallbackError> for StateError {
    fn from(err: CallbackError) -> StateError {
        StateError::Callback(err)
    }
}

/// A typed value that is (part of) a device's migratable state: it
/// converts to the [`VmStruct`] its VMState description encodes, and back
/// from a decoded one.
pub trait MigrationState: Sized + Send {
    /// The value as a value tree for the encoder.
    fn to_vmstate(&self) -> VmStruct;
    /// The typed value of a decoded (and checked) tree. Errors name the
    /// field path.
    fn from_vmstate(state: &VmStruct) -> Result<Self, StateError>;
}

impl MigrationState for VmStruct {
    fn to_vmstate(&self) -> VmStruct {
        self.clone()
    }

    fn from_vmstate(state: &VmStruct) -> Result<Self, StateError> {
        Ok(state.clone())
    }
}

/// The contract every migratable device implements.
///
/// `save_state` gives the current state (the description's `pre_save`
/// hook then runs on its tree); `load_state` receives a fully decoded and
/// checked state, after `post_load`. A device is never handed a partial
/// state: a restore stages every device's state, converts each to its
/// typed state and asks every device to `check_state` it, and only then —
/// when no conversion or check failed — loads them. A device that refuses
/// in `check_state` therefore changes no device; `load_state` should not
/// fail on a state `check_state` accepted.
pub trait DeviceState: Send + Sync {
    /// The device's typed state.
    type State: MigrationState;
    /// The description its state follows on the wire; its name is the
    /// section idstr.
    fn vmsd(&self) -> Arc<VmStateDescription>;
    /// The current state.
    fn save_state(&self) -> Result<Self::State, StateError>;
    /// Whether `state`, decoded from a stream written at `version_id`,
    /// can be loaded; called for every device of a restore before any is
    /// loaded. Accepts everything unless the device overrides it.
    fn check_state(&self, state: &Self::State, version_id: u32) -> Result<(), StateError> {
        let _ = (state, version_id);
        Ok(())
    }
    /// Installs a state decoded from a stream written at `version_id`.
    fn load_state(&self, state: Self::State, version_id: u32) -> Result<(), StateError>;
}

mod sealed {
    pub trait Sealed {}
    impl<T: super::DeviceState> Sealed for T {}
}

/// A [`DeviceState`] seen through its value tree, so devices of different
/// state types can sit side by side (`Arc<dyn DynDeviceState>`). Every
/// `DeviceState` is one; nothing else can be (the trait is sealed), so
/// there is still one contract to implement.
pub trait DynDeviceState: sealed::Sealed + Send + Sync {
    /// [`DeviceState::vmsd`].
    fn description(&self) -> Arc<VmStateDescription>;
    /// [`DeviceState::save_state`], as a tree.
    fn save_vmstate(&self) -> Result<VmStruct, StateError>;
    /// The tree converted to the typed state, then [`DeviceState::check_state`].
    fn check_vmstate(&self, state: &VmStruct, version_id: u32) -> Result<(), StateError>;
    /// [`DeviceState::load_state`] of a tree.
    fn load_vmstate(&self, state: &VmStruct, version_id: u32) -> Result<(), StateError>;
}

impl<T: DeviceState> DynDeviceState for T {
    fn description(&self) -> Arc<VmStateDescription> {
        self.vmsd()
    }

    fn save_vmstate(&self) -> Result<VmStruct, StateError> {
        Ok(self.save_state()?.to_vmstate())
    }

    fn check_vmstate(&self, state: &VmStruct, version_id: u32) -> Result<(), StateError> {
        self.check_state(&T::State::from_vmstate(state)?, version_id)
    }

    fn load_vmstate(&self, state: &VmStruct, version_id: u32) -> Result<(), StateError> {
        self.load_state(T::State::from_vmstate(state)?, version_id)
    }
}

/// A Rust type a scalar or buffer field converts to and from.
pub trait FieldValue: Sized {
    /// The value of a field of this type, or `None` if it does not fit.
    fn from_value(value: &VmValue) -> Option<Self>;
    /// What the field holds, for errors (`uint32`, `bytes`).
    const EXPECTED: &'static str;
}

macro_rules! unsigned_field {
    ($($t:ty => $name:literal),*) => {$(
        impl FieldValue for $t {
            fn from_value(value: &VmValue) -> Option<Self> {
                value.as_u64().and_then(|v| <$t>::try_from(v).ok())
            }
            const EXPECTED: &'static str = $name;
        }
        impl From<$t> for VmValue {
            fn from(v: $t) -> VmValue {
                VmValue::UInt(u64::from(v))
            }
        }
    )*};
}

macro_rules! signed_field {
    ($($t:ty => $name:literal),*) => {$(
        impl FieldValue for $t {
            fn from_value(value: &VmValue) -> Option<Self> {
                value.as_i64().and_then(|v| <$t>::try_from(v).ok())
            }
            const EXPECTED: &'static str = $name;
        }
        impl From<$t> for VmValue {
            fn from(v: $t) -> VmValue {
                VmValue::Int(i64::from(v))
            }
        }
    )*};
}

unsigned_field!(u8 => "uint8", u16 => "uint16", u32 => "uint32", u64 => "uint64");
signed_field!(i8 => "int8", i16 => "int16", i32 => "int32", i64 => "int64");

impl FieldValue for bool {
    fn from_value(value: &VmValue) -> Option<Self> {
        value.as_bool()
    }
    const EXPECTED: &'static str = "bool";
}

impl From<bool> for VmValue {
    fn from(v: bool) -> VmValue {
        VmValue::Bool(v)
    }
}

impl FieldValue for Vec<u8> {
    fn from_value(value: &VmValue) -> Option<Self> {
        value.as_bytes().map(<[u8]>::to_vec)
    }
    const EXPECTED: &'static str = "bytes";
}

impl From<Vec<u8>> for VmValue {
    fn from(v: Vec<u8>) -> VmValue {
        VmValue::Bytes(v)
    }
}

impl VmStruct {
    /// The field `name` as a `T`; a missing field or a value that does not
    /// fit is a [`StateError::Field`] naming it.
    pub fn field<T: FieldValue>(&self, name: &str) -> Result<T, StateError> {
        let value = self.get(name).ok_or_else(|| StateError::field(name, "missing"))?;
        T::from_value(value).ok_or_else(|| StateError::field(name, format!("{value:?} is not a {}", T::EXPECTED)))
    }
}
