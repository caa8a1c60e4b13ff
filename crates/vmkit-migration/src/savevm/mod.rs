//! Saving a paused machine's whole state to a stream and restoring it.
//!
//! A machine's state, for the stream, is a [`SaveSet`]: the machine type
//! (the configuration record), its RAM blocks (the `ram` live section) and
//! one [`DeviceEntry`] per device with a VMState (a FULL section each).
//! [`save`] writes QEMU's layout: header, configuration, RAM START
//! (MEM_SIZE), one PART with every page, END, the device sections in
//! priority order, EOF and the VMDESCRIPTION trailer. [`restore`] reads
//! such a stream into a set of the same shape — or, with
//! [`Unmodelled::Report`], a stream from a machine with more (a real
//! QEMU's), listing what this one does not model ([`unmodelled`]).
//!
//! Restoring follows principle 5: the stream is untrusted, and a device is
//! only changed once the whole stream has been read and checked. RAM is
//! the exception — gigabytes cannot be staged — so it is written while the
//! stream is read, and a failed restore leaves it partly loaded: the
//! caller must keep the machine from running (vmkit's machine layer marks
//! it `restore-failed`).
//!
//! Each device follows the one device-state contract,
//! [`DeviceState`](crate::device_state::DeviceState). Devices come from the
//! QOM tree: a type declares its VMState with [`register_device_vmstate`]
//! (or [`register_device_model`] for a Rust model kept as user data), and [`collect_devices`] finds every realized
//! device below a root that has one.
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_memory::RamBlock;
//! use vmkit_migration::savevm::{SaveOptions, SaveSet, restore, save};
//!
//! let ram = RamBlock::anonymous("pc.ram", 1 << 20)?;
//! ram.write(0x1000, b"hello")?;
//! let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], Vec::new());
//! let mut stream = Vec::new();
//! save(&set, &mut stream, &SaveOptions::default())?;
//!
//! let fresh = RamBlock::anonymous("pc.ram", 1 << 20)?;
//! let target = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&fresh)], Vec::new());
//! restore(&target, stream.as_slice(), &Default::default())?;
//! let mut buf = [0u8; 5];
//! fresh.read(0x1000, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod device_registry;
#[doc(hidden)]
pub mod fuzz_support;
mod restore;
mod save;
mod save_set;
pub(crate) mod sections;
pub mod unmodelled;

pub use device_registry::{
    DevPath, StateAccessor, collect_devices, device_vmstate, known_vmstate, register_device_model,
    register_device_path, register_device_vmstate,
};
pub(crate) use restore::decode_section_body;
pub use restore::{RestoreOptions, RestoreStats, restore, restore_answering, restore_buffered};
pub use save::{SaveOptions, SaveStats, save, save_to_fd, save_to_sink};
pub use save_set::{DeviceEntry, SaveSet};
pub use sections::IGNORE_SHARED;
pub(crate) use unmodelled::decode_by_trailer;
pub use unmodelled::{Unmodelled, UnmodelledBlock, UnmodelledReport, UnmodelledSection};

/// Errors of whole-machine save and restore that are not about the bytes
/// of the stream (those are [`WireError`](crate::wire::WireError)s and
/// [`VmStateError`](crate::vmstate::VmStateError)s).
#[derive(Debug, thiserror::Error)]
pub enum SavevmError {
    /// A device could not give or take its state.
    #[error("device section '{idstr}' instance {instance_id}: {source}")]
    Device {
        /// The section idstr.
        idstr: String,
        /// The instance id.
        instance_id: u32,
        /// Where the section starts in the stream (restore only).
        offset: Option<u64>,
        /// What went wrong, with the field path where there is one.
        #[source]
        source: crate::device_state::StateError,
    },
    /// The stream ended without a section this machine has.
    #[error("the stream has no section '{idstr}' instance {instance_id}, which this machine needs")]
    MissingSection {
        /// The section idstr.
        idstr: String,
        /// The instance id.
        instance_id: u32,
    },
    /// The stream did not carry (every page of) one of this machine's RAM blocks.
    #[error("RAM block '{block}': {reason}")]
    IncompleteRam {
        /// The block name.
        block: String,
        /// What is missing.
        reason: String,
    },
    /// Two sections of the set share an (idstr, instance id).
    #[error("two device sections are both '{idstr}' instance {instance_id}")]
    DuplicateDevice {
        /// The section idstr.
        idstr: String,
        /// The instance id.
        instance_id: u32,
    },
    /// A VMState declaration that cannot be accepted.
    #[error("VMState for type '{type_name}': {reason}")]
    Registration {
        /// The QOM type.
        type_name: String,
        /// Why.
        reason: String,
    },
    /// A QOM error while collecting devices.
    #[error(transparent)]
    Qom(#[from] vmkit_qom::Error),
}
