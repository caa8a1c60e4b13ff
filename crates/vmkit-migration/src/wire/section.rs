//! The file header, section headers and section footers.

use std::io::{Read, Write};

use super::format::{FILE_MAGIC, FILE_VERSION, RecordType, SectionKind};
use super::{StreamReader, StreamWriter, WireError, WireResult};

/// Writes `QEVM` + version 3.
pub fn write_file_header<W: Write>(w: &mut StreamWriter<W>) -> WireResult<()> {
    w.put_be32(FILE_MAGIC)?;
    w.put_be32(FILE_VERSION)
}

/// Reads and checks the file header; returns the version (always 3).
pub fn read_file_header<R: Read>(r: &mut StreamReader<R>) -> WireResult<u32> {
    let magic = r.read_be32("file magic")?;
    if magic != FILE_MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    let version = r.read_be32("file version")?;
    if version != FILE_VERSION {
        return Err(WireError::UnsupportedVersion { found: version });
    }
    Ok(version)
}

/// A section header.
///
/// On the wire, START and FULL carry `idstr`, `instance_id` and
/// `version_id`; PART and END carry only the section id. A header read for
/// PART/END has an empty idstr and zero instance/version until the
/// [`StreamParser`](super::StreamParser) fills them in from the START it
/// refers to; writing a PART/END header ignores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// START, PART, END or FULL.
    pub kind: SectionKind,
    /// The source's section id.
    pub section_id: u32,
    /// The section name (max 255 bytes).
    pub idstr: String,
    /// The instance id.
    pub instance_id: u32,
    /// The handler's version.
    pub version_id: u32,
}

impl SectionHeader {
    /// A START header.
    pub fn start(section_id: u32, idstr: impl Into<String>, instance_id: u32, version_id: u32) -> SectionHeader {
        SectionHeader {
            kind: SectionKind::Start,
            section_id,
            idstr: idstr.into(),
            instance_id,
            version_id,
        }
    }

    /// A FULL header.
    pub fn full(section_id: u32, idstr: impl Into<String>, instance_id: u32, version_id: u32) -> SectionHeader {
        SectionHeader {
            kind: SectionKind::Full,
            ..SectionHeader::start(section_id, idstr, instance_id, version_id)
        }
    }

    /// A PART or END header (`kind` should be one of those) for a started
    /// section.
    pub fn follow_up(&self, kind: SectionKind) -> SectionHeader {
        SectionHeader { kind, ..self.clone() }
    }

    /// Writes the type byte and the header.
    pub fn write<W: Write>(&self, w: &mut StreamWriter<W>) -> WireResult<()> {
        w.put_u8(self.kind.record_type() as u8)?;
        w.put_be32(self.section_id)?;
        if self.kind.has_name() {
            w.put_name(&self.idstr, "section idstr")?;
            w.put_be32(self.instance_id)?;
            w.put_be32(self.version_id)?;
        }
        Ok(())
    }

    /// Reads a header whose type byte (giving `kind`) was already consumed.
    pub fn read_after_type<R: Read>(r: &mut StreamReader<R>, kind: SectionKind) -> WireResult<SectionHeader> {
        let section_id = r.read_be32("section id")?;
        if !kind.has_name() {
            return Ok(SectionHeader {
                kind,
                section_id,
                idstr: String::new(),
                instance_id: 0,
                version_id: 0,
            });
        }
        let idstr = r.read_name("section idstr")?;
        let instance_id = r.read_be32("section instance id")?;
        let version_id = r.read_be32("section version id")?;
        Ok(SectionHeader {
            kind,
            section_id,
            idstr,
            instance_id,
            version_id,
        })
    }

    /// Reads the type byte and the header.
    pub fn read<R: Read>(r: &mut StreamReader<R>) -> WireResult<SectionHeader> {
        let offset = r.offset();
        let byte = r.read_u8("section type")?;
        let kind = RecordType::try_from(byte)
            .ok()
            .and_then(|t| SectionKind::try_from(t).ok())
            .ok_or(WireError::UnknownRecord { offset, byte })?;
        SectionHeader::read_after_type(r, kind)
    }
}

/// Writes a section footer (`0x7e` + be32 id).
pub fn write_footer<W: Write>(w: &mut StreamWriter<W>, section_id: u32) -> WireResult<()> {
    w.put_u8(RecordType::SectionFooter as u8)?;
    w.put_be32(section_id)
}

/// Reads a section footer and checks it names `section_id`. A missing
/// footer byte is reported as [`WireError::FooterMismatch`] with the byte
/// found as `found`.
pub fn read_footer<R: Read>(r: &mut StreamReader<R>, section_id: u32) -> WireResult<()> {
    let offset = r.offset();
    let b = r.read_u8("section footer")?;
    if b != RecordType::SectionFooter as u8 {
        return Err(WireError::FooterMismatch {
            offset,
            expected: section_id,
            found: u32::from(b),
        });
    }
    let found = r.read_be32("section footer id")?;
    if found != section_id {
        return Err(WireError::FooterMismatch {
            offset,
            expected: section_id,
            found,
        });
    }
    Ok(())
}
