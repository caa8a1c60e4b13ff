//! # vmkit-migration: the migration stream
//!
//! QEMU's savevm stream format, version 3, read and written by vmkit:
//!
//! * [`wire`]: the byte level — a bounded, offset-tracking reader and a
//!   writer, the file header, configuration record, section headers and
//!   footers, RAM sections, the VMDESCRIPTION JSON trailer, and a record
//!   parser for analysis. Streams are untrusted input: every length is
//!   checked before anything is allocated from it, and every error names
//!   the byte offset.
//! * [`vmstate`]: VMState descriptions of device state (fields, arrays,
//!   nested structs, subsections, versions, hooks) and their encoding.
//! * [`savevm`]: a whole machine (RAM and device sections) saved to a
//!   stream and restored from one; device types declare their VMState.
//! * [`transport`]: where streams go — files (replaced atomically), FIFOs,
//!   devices, sockets, `exec:` commands — and gathered writes of guest
//!   pages (the crate's only `unsafe` code).
#![deny(unsafe_code)]

mod error;
pub mod savevm;
pub mod transport;
pub mod vmstate;
pub mod wire;

pub use error::{Error, Result};
