//! The byte level of QEMU's savevm stream (version 3).
//!
//! | module | what it holds |
//! |---|---|
//! | [`format`](mod@format) | constants: magic, version, record types, RAM flags, commands |
//! | [`reader`] | [`StreamReader`]: offset-tracking, bounds-checked reads |
//! | [`lookahead`] | [`Lookahead`]: a source whose rest can be read into memory ahead of the parser |
//! | [`writer`] | [`StreamWriter`]: byte-counting writes |
//! | [`section`] | file header, section headers and footers |
//! | [`config`] | the configuration record (`0x07`) |
//! | [`ram`] | the RAM live section: encoder, decoder, summariser |
//! | [`return_path`] | [`RpMessage`]: what a destination answers on the return path (`PONG`, `SHUT`) |
//! | [`vmdesc`] | the VMDESCRIPTION JSON trailer and how to find it in a file |
//! | [`skip`] | [`VmDescBodySkipper`]: walks device bodies by their vmdesc sizes |
//! | [`stream`] | [`StreamParser`]: the record-level parser |
//!
//! The analyzer built on them lives above this layer, in
//! [`crate::analyze`]: nothing here uses `savevm` or the analyzer.
//!
//! Everything read from a stream is untrusted: lengths are checked against
//! caps before anything is allocated from them, and every error carries the
//! byte offset where it was found.

pub mod config;
pub mod format;
pub mod lookahead;
pub mod ram;
pub mod reader;
pub mod return_path;
pub mod section;
pub mod skip;
pub mod stream;
pub mod vmdesc;
pub mod writer;

pub use config::Configuration;
pub use format::{RamFlag, RecordType, SectionKind, VmCommand};
pub use lookahead::Lookahead;
pub use ram::{RamBlockSummary, RamSectionReader, RamSectionWriter, RamSummary};
pub use reader::StreamReader;
pub use return_path::RpMessage;
pub use section::SectionHeader;
pub use skip::VmDescBodySkipper;
pub use stream::{AnalysisHandler, FOOTER_LEN, ParserOptions, Record, SectionBodyHandler, StreamParser};
pub use vmdesc::{
    TrailerBudget, VmDescDevice, VmDescField, VmDescStruct, VmDescription, locate_vmdesc, read_vmdesc_from_end,
    read_vmdesc_from_end_within,
};
pub use writer::StreamWriter;

/// Stream-format errors. Every variant that concerns stream content names
/// the byte offset (from the start of the stream) where the problem was found.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream ended early.
    #[error("stream truncated at offset {offset}: {context}")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: u64,
        /// What was being read.
        context: String,
    },
    /// The file does not start with the `QEVM` magic.
    #[error("not a migration stream: magic {found:#010x} at offset 0")]
    BadMagic {
        /// The first four bytes, big-endian.
        found: u32,
    },
    /// A stream version other than 3 (2 is the obsolete compat version).
    #[error("unsupported migration stream version {found} at offset 4")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// A top-level record type byte that is not known here.
    #[error("unknown record type {byte:#04x} at offset {offset}")]
    UnknownRecord {
        /// Offset of the type byte.
        offset: u64,
        /// The byte.
        byte: u8,
    },
    /// A section id or (idstr, instance) that no handler or started section
    /// answers to.
    #[error("unknown section {section_id} ('{idstr}' instance {instance_id}) at offset {offset}")]
    UnknownSection {
        /// Offset of the section's type byte.
        offset: u64,
        /// The stream's section id.
        section_id: u32,
        /// The idstr (empty when only the id was known).
        idstr: String,
        /// The instance id (0 when only the id was known).
        instance_id: u32,
    },
    /// A second START/FULL for the same (idstr, instance) or section id.
    #[error("duplicate section '{idstr}' instance {instance_id} at offset {offset}")]
    DuplicateSection {
        /// Offset of the section's type byte.
        offset: u64,
        /// The idstr.
        idstr: String,
        /// The instance id.
        instance_id: u32,
    },
    /// A section version the handler does not accept.
    #[error("section '{idstr}' at offset {offset}: unsupported version {version_id} (expected {expected})")]
    BadSectionVersion {
        /// Offset of the section header.
        offset: u64,
        /// The idstr.
        idstr: String,
        /// The version found.
        version_id: u32,
        /// The version accepted.
        expected: u32,
    },
    /// A section footer missing or naming another section.
    #[error("mismatched section footer at offset {offset}: expected section {expected}, found {found}")]
    FooterMismatch {
        /// Offset of the footer.
        offset: u64,
        /// The section id just parsed.
        expected: u32,
        /// The id in the footer (or the byte found instead of `0x7e`).
        found: u32,
    },
    /// A length field over its cap.
    #[error("{what} at offset {offset}: length {len} exceeds the limit {max}")]
    BadLength {
        /// Offset of the length field (or of the data it announces).
        offset: u64,
        /// What the length was for.
        what: String,
        /// The length found.
        len: u64,
        /// The largest accepted length.
        max: u64,
    },
    /// The configuration record does not match the destination.
    #[error("configuration mismatch: expected {expected}, found {found}")]
    ConfigurationMismatch {
        /// Offset of the configuration record.
        offset: u64,
        /// What the destination has.
        expected: String,
        /// What the stream says.
        found: String,
    },
    /// RAM record flags that are invalid or unknown.
    #[error("bad RAM flags {flags:#x} at offset {offset}")]
    BadRamFlags {
        /// Offset of the record.
        offset: u64,
        /// The flags (low bits of the record's be64).
        flags: u64,
    },
    /// A RAM feature the decoder does not implement (XBZRLE, ...).
    #[error("unsupported {what} at offset {offset}")]
    Unsupported {
        /// Offset of the record.
        offset: u64,
        /// What is not supported.
        what: String,
    },
    /// A RAM block name that the destination does not have.
    #[error("unknown RAM block '{name}' at offset {offset}")]
    UnknownRamBlock {
        /// Offset of the block id.
        offset: u64,
        /// The name.
        name: String,
    },
    /// A RAM block whose length differs from the destination's.
    #[error("RAM block '{name}' at offset {offset}: length {found:#x} in the stream, {expected:#x} here")]
    RamBlockLength {
        /// Offset of the block entry.
        offset: u64,
        /// The block name.
        name: String,
        /// The destination length.
        expected: u64,
        /// The stream length.
        found: u64,
    },
    /// A page beyond its block.
    #[error("page {addr:#x}+{len:#x} beyond RAM block '{block}' at offset {offset}")]
    PageOutOfRange {
        /// Offset of the record.
        offset: u64,
        /// The block name.
        block: String,
        /// The page offset in the block.
        addr: u64,
        /// The page length.
        len: u64,
    },
    /// A CONTINUE page record with no previous block.
    #[error("RAM page with CONTINUE but no previous block at offset {offset}")]
    ContinueWithoutBlock {
        /// Offset of the record.
        offset: u64,
    },
    /// A zero-page record whose fill byte is not zero.
    #[error("zero page with fill byte {found:#04x} at offset {offset}")]
    BadZeroByte {
        /// Offset of the fill byte.
        offset: u64,
        /// The byte.
        found: u8,
    },
    /// The VMDESCRIPTION JSON does not parse (or is not where expected).
    #[error("bad VMDESCRIPTION JSON at offset {offset}: {reason}")]
    BadJson {
        /// Offset of the JSON text (or of the trailer).
        offset: u64,
        /// Why.
        reason: String,
    },
    /// The VMDESCRIPTION trailer describes more than any trailer may
    /// ([`TrailerBudget`]): nested or sibling arrays whose element counts
    /// multiply or add up past the budget.
    #[error("VMDESCRIPTION trailer too large at offset {offset}: it describes more than {limit} {what}")]
    TrailerTooLarge {
        /// Offset of the trailer's JSON.
        offset: u64,
        /// What ran over: `elements` or `bytes of device state`.
        what: &'static str,
        /// The budget.
        limit: u64,
    },
    /// A device body that does not match its description (vmdesc skipper).
    #[error("section '{idstr}' at offset {offset}: {reason}")]
    BadBody {
        /// Where the mismatch was found.
        offset: u64,
        /// The section's idstr.
        idstr: String,
        /// What was wrong.
        reason: String,
    },
    /// Any other malformed content.
    #[error("malformed stream at offset {offset}: {reason}")]
    Malformed {
        /// Where.
        offset: u64,
        /// What.
        reason: String,
    },
    /// A guest-memory error while applying RAM.
    #[error("RAM block '{block}' at offset {offset}: {source}")]
    Memory {
        /// Offset of the record being applied.
        offset: u64,
        /// The block name.
        block: String,
        /// The memory error.
        source: Box<vmkit_memory::Error>,
    },
    /// An I/O error of the underlying reader or writer.
    #[error("I/O error at offset {offset}: {source}")]
    Io {
        /// Stream offset when it happened.
        offset: u64,
        /// The error.
        source: std::io::Error,
    },
}

impl WireError {
    /// The stream offset the error refers to (0 for the header errors).
    pub fn offset(&self) -> u64 {
        match self {
            WireError::BadMagic { .. } => 0,
            WireError::UnsupportedVersion { .. } => 4,
            WireError::Truncated { offset, .. }
            | WireError::UnknownRecord { offset, .. }
            | WireError::UnknownSection { offset, .. }
            | WireError::DuplicateSection { offset, .. }
            | WireError::BadSectionVersion { offset, .. }
            | WireError::FooterMismatch { offset, .. }
            | WireError::BadLength { offset, .. }
            | WireError::ConfigurationMismatch { offset, .. }
            | WireError::BadRamFlags { offset, .. }
            | WireError::Unsupported { offset, .. }
            | WireError::UnknownRamBlock { offset, .. }
            | WireError::RamBlockLength { offset, .. }
            | WireError::PageOutOfRange { offset, .. }
            | WireError::ContinueWithoutBlock { offset }
            | WireError::BadZeroByte { offset, .. }
            | WireError::BadJson { offset, .. }
            | WireError::TrailerTooLarge { offset, .. }
            | WireError::BadBody { offset, .. }
            | WireError::Malformed { offset, .. }
            | WireError::Memory { offset, .. }
            | WireError::Io { offset, .. } => *offset,
        }
    }
}

impl WireError {
    /// The section (idstr) the error is about, where it names one: the
    /// device section, or `ram` for a RAM block that does not match.
    pub fn section(&self) -> Option<&str> {
        match self {
            WireError::UnknownSection { idstr, .. }
            | WireError::DuplicateSection { idstr, .. }
            | WireError::BadSectionVersion { idstr, .. }
            | WireError::BadBody { idstr, .. } => Some(idstr.as_str()).filter(|s| !s.is_empty()),
            WireError::UnknownRamBlock { .. } | WireError::RamBlockLength { .. } | WireError::PageOutOfRange { .. } => {
                Some("ram")
            }
            WireError::BadRamFlags { .. }
            | WireError::ContinueWithoutBlock { .. }
            | WireError::BadZeroByte { .. }
            | WireError::Memory { .. }
            | WireError::Truncated { .. }
            | WireError::BadMagic { .. }
            | WireError::UnsupportedVersion { .. }
            | WireError::UnknownRecord { .. }
            | WireError::FooterMismatch { .. }
            | WireError::BadLength { .. }
            | WireError::ConfigurationMismatch { .. }
            | WireError::Unsupported { .. }
            | WireError::BadJson { .. }
            | WireError::Malformed { .. }
            | WireError::TrailerTooLarge { .. }
            | WireError::Io { .. } => None,
        }
    }
}

/// The result type of the wire layer.
pub type WireResult<T> = std::result::Result<T, WireError>;
