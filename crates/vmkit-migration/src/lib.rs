//! # vmkit-migration: the migration stream
//!
//! QEMU's savevm stream format, version 3, read and written by vmkit:
//!
//! * [`wire`]: the byte level — a bounded, offset-tracking reader and a
//!   writer, the file header, configuration record, section headers and
//!   footers, RAM sections, the VMDESCRIPTION JSON trailer, and the
//!   record parser. Streams are untrusted input: every length is
//!   checked before anything is allocated from it, and every error names
//!   the byte offset.
//! * [`vmstate`]: VMState descriptions of device state (fields, arrays,
//!   nested structs, subsections, versions, hooks) and their encoding.
//! * [`device_state`]: the one contract for a device's migratable state
//!   ([`DeviceState`](device_state::DeviceState)): a typed value with one
//!   VMState description, saved and loaded through one trait.
//! * [`savevm`]: a whole machine (RAM and device sections) saved to a
//!   stream and restored from one; device types declare their VMState.
//! * [`precopy`]: live migration's source side — passes of dirty pages
//!   while the guest runs, QEMU's switchover rule, bandwidth pacing,
//!   progress and cancel.
//! * [`analyze`](mod@analyze): what a stream holds, record by record (the
//!   report behind `vmkit analyze`) or counted; above both `wire` and
//!   `savevm`, used by neither.
//! * [`transport`]: where streams go and come from — `unix:` and `tcp:`
//!   sockets (loopback unless allowed), named descriptors (`fd:`), files
//!   (replaced atomically), FIFOs, devices, `exec:` commands — and
//!   gathered writes of guest pages (the crate's only `unsafe` code).
#![deny(unsafe_code)]

pub mod analyze;
pub mod device_state;
mod error;
pub mod precopy;
pub mod savevm;
#[doc(hidden)]
pub mod test_support;
pub mod transport;
pub mod vmstate;
pub mod wire;

pub use error::{Error, Result};
