//! Encoding and decoding of a VMState body.
//!
//! Save (`encode`): `pre_save` → the fields present at the description's
//! `version_id` → each subsection whose `needed` holds, as
//! `0x05, u8 name_len, name, be32 version, body` → `post_save` (which also
//! runs when writing failed). A subsection's `needed` gets the parent's
//! state; when it holds, the parent's entry for the subsection is encoded
//! (created empty if absent, for the subsection's `pre_save` to fill).
//!
//! Load (`decode_into`): version check (too new / too old) → `pre_load` → the
//! fields present at the stream's version → subsections while the next byte
//! is `0x05` and the peeked name starts with this description's name and
//! `/` (QEMU checks the name alone; see `Decoder::peek_subsection`) (an
//! unknown name is an error; a known one that repeats or comes before the
//! last one loaded ends the loop, as it cannot be this struct's) →
//! `post_load(version)`.
//!
//! Loading goes *into* a state: fields the stream carries overwrite, the rest
//! (absent fields, subsections not sent) keep what the target held, as a
//! QEMU device keeps what reset or `pre_load` left. The target's current
//! values are also what an `Equal` field is compared with and what tells an
//! `Optional` element whether to expect the null marker; an `Equal` field
//! with no current value is taken as it comes. [`decode`] loads into an
//! empty state.
//!
//! A subsection header cut off by the end of the input is reported by the
//! outermost struct only: a nested struct cannot tell whose header it was.

use std::io::{self, Read, Write};

use super::desc::VmStateDescription;
use super::io::VmReader;
use super::value::{VmStruct, VmValue};
use super::{Problem, VmStateError, decoder, encoder};

/// The subsection marker byte (`QEMU_VM_SUBSECTION`).
pub const SUBSECTION_MARKER: u8 = 0x05;
/// The null marker of an absent optional value (`VMS_NULLPTR_MARKER`).
pub const NULL_MARKER: u8 = 0x30;

/// Caps applied to lengths and counts taken from the stream (or from fields
/// loaded from it) before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest `VBuffer` (and, in generic decoding, any buffer) in bytes.
    pub max_buffer: u64,
    /// Largest variable array element count.
    pub max_array_len: u64,
    /// Deepest nesting of structs and subsections.
    pub max_depth: u32,
}

impl Default for DecodeLimits {
    /// 64 MiB buffers, 1 Mi elements, 64 levels.
    fn default() -> Self {
        DecodeLimits {
            max_buffer: 64 << 20,
            max_array_len: 1 << 20,
            max_depth: 64,
        }
    }
}

/// Encodes `state` by `desc` at `desc`'s version into `writer`, whose next
/// byte is at absolute `start_offset` (used in errors). Hooks may change
/// `state`. Returns the number of bytes written.
pub fn encode<W: Write>(
    desc: &VmStateDescription,
    state: &mut VmStruct,
    writer: &mut W,
    start_offset: u64,
) -> Result<u64, VmStateError> {
    encoder::encode_inner(desc, state, writer, start_offset, false).map(|(n, _)| n)
}

/// Decodes a body at `stream_version` into an empty state, with the default
/// [`DecodeLimits`].
pub fn decode<R: Read>(
    desc: &VmStateDescription,
    stream_version: u32,
    reader: &mut VmReader<R>,
) -> Result<VmStruct, VmStateError> {
    decode_with_limits(desc, stream_version, reader, &DecodeLimits::default())
}

/// Decodes a body at `stream_version` into an empty state.
pub fn decode_with_limits<R: Read>(
    desc: &VmStateDescription,
    stream_version: u32,
    reader: &mut VmReader<R>,
    limits: &DecodeLimits,
) -> Result<VmStruct, VmStateError> {
    let mut state = VmStruct::new();
    decode_into(desc, stream_version, reader, &mut state, limits)?;
    Ok(state)
}

/// Decodes `body`, which must be exactly one body at `stream_version`:
/// bytes left after it are [`Problem::TrailingBytes`] at the offset where
/// they start.
pub fn decode_exact(desc: &VmStateDescription, stream_version: u32, body: &[u8]) -> Result<VmStruct, VmStateError> {
    let mut reader = VmReader::new(body, 0);
    let state = decode(desc, stream_version, &mut reader)?;
    let (unread, peeked) = reader.into_parts();
    let left = unread.len() + peeked.len();
    if left > 0 {
        return Err(VmStateError::Body {
            section: desc.name.clone(),
            path: desc.name.clone(),
            offset: (body.len() - left) as u64,
            problem: Problem::TrailingBytes { count: left as u64 },
        });
    }
    Ok(state)
}

/// Decodes a body at `stream_version` into `target`, the receiver's current
/// state (see the module docs).
pub fn decode_into<R: Read>(
    desc: &VmStateDescription,
    stream_version: u32,
    reader: &mut VmReader<R>,
    target: &mut VmStruct,
    limits: &DecodeLimits,
) -> Result<(), VmStateError> {
    let mut dec = decoder::Decoder::new(reader, limits, &desc.name);
    dec.decode_struct(desc, stream_version, target)
}

/// A field path under construction: `section/field[i]/field`.
#[derive(Debug, Clone)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn new(root: &str) -> Self {
        Path(root.to_owned())
    }

    /// Appends `/segment`; returns the length to truncate back to.
    pub(crate) fn push(&mut self, segment: &str) -> usize {
        let mark = self.0.len();
        self.0.push('/');
        self.0.push_str(segment);
        mark
    }

    /// Appends `[i]`; returns the length to truncate back to.
    pub(crate) fn push_index(&mut self, i: usize) -> usize {
        let mark = self.0.len();
        self.0.push_str(&format!("[{i}]"));
        mark
    }

    pub(crate) fn pop(&mut self, mark: usize) {
        self.0.truncate(mark);
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The part of a subsection name after `parent/` (the whole name otherwise).
pub(crate) fn subsection_segment<'a>(parent: &str, sub: &'a str) -> &'a str {
    sub.strip_prefix(parent)
        .and_then(|s| s.strip_prefix('/'))
        .unwrap_or(sub)
}

pub(crate) fn io_problem(e: &io::Error) -> Problem {
    Problem::Io { message: e.to_string() }
}

pub(crate) fn render(v: &VmValue) -> String {
    v.to_json().to_string()
}
