//! Whole-stream analysis of a seekable stream (a migration file): find the
//! VMDESCRIPTION trailer at the end, then parse the stream front to back
//! with the RAM summariser and the vmdesc body skipper. Memory stays
//! bounded: records are counted, not kept.

use std::io::{BufReader, Read, Seek, SeekFrom};

use super::config::Configuration;
use super::format::SectionKind;
use super::ram::{RamSectionReader, RamSummary};
use super::reader::READ_BUFFER;
use super::skip::{SkipStats, VmDescBodySkipper};
use super::stream::{AnalysisHandler, ParserOptions, Record, StreamParser};
use super::vmdesc::{VmDescription, read_vmdesc_from_end};
use super::{StreamReader, WireError};

/// What [`analyze`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamAnalysis {
    /// The configuration record, if any.
    pub configuration: Option<Configuration>,
    /// Commands, as (offset, command number, payload length).
    pub commands: Vec<(u64, u16, usize)>,
    /// START / PART / END / FULL sections seen.
    pub section_counts: [u64; 4],
    /// RAM decoded (summary only).
    pub ram: RamSummary,
    /// Device bodies skipped.
    pub devices: SkipStats,
    /// The trailer, if present.
    pub vmdesc: Option<VmDescription>,
    /// Offset of the EOF record.
    pub eof_offset: Option<u64>,
    /// Offset of bytes after EOF that are not a trailer (or after it).
    pub trailing_offset: Option<u64>,
    /// Stream length parsed.
    pub length: u64,
}

/// Cap on commands remembered by [`analyze`].
const MAX_COMMANDS_KEPT: usize = 1024;

/// Analyzes a seekable stream.
///
/// Device bodies can only be stepped over with the trailer's field sizes,
/// so the trailer is located first ([`read_vmdesc_from_end`]); without one,
/// the first FULL section is an error ([`WireError::UnknownSection`]).
pub fn analyze<F: Read + Seek>(f: &mut F, opts: ParserOptions) -> crate::Result<StreamAnalysis> {
    let vmdesc = read_vmdesc_from_end(f)?;
    f.seek(SeekFrom::Start(0))
        .map_err(|source| WireError::Io { offset: 0, source })?;
    let mut handler = AnalysisHandler {
        ram: RamSectionReader::summarise(),
        devices: vmdesc.as_ref().map(VmDescBodySkipper::new),
    };
    let mut parser = StreamParser::from_reader(StreamReader::new(BufReader::with_capacity(READ_BUFFER, f)), opts);
    let mut out = StreamAnalysis::default();
    while let Some(rec) = parser.next_record(&mut handler)? {
        match rec {
            Record::Header { .. } => {}
            Record::Configuration { config, .. } => out.configuration = Some(config),
            Record::Command { offset, cmd, data } => {
                if out.commands.len() < MAX_COMMANDS_KEPT {
                    out.commands.push((offset, cmd, data.len()));
                }
            }
            Record::Section { header, .. } => {
                let i = match header.kind {
                    SectionKind::Start => 0,
                    SectionKind::Part => 1,
                    SectionKind::End => 2,
                    SectionKind::Full => 3,
                };
                out.section_counts[i] += 1;
            }
            Record::Eof { offset } => out.eof_offset = Some(offset),
            Record::VmDescription { description, .. } => out.vmdesc = Some(*description),
            Record::Trailing { offset, .. } => out.trailing_offset = Some(offset),
        }
    }
    out.length = parser.offset();
    out.ram = handler.ram.into_summary();
    out.devices = handler.devices.map(|d| d.stats()).unwrap_or_default();
    Ok(out)
}

/// Block name and size of the destination [`fuzz_stream`] applies RAM to.
pub const FUZZ_BLOCK: (&str, u64) = ("pc.ram", 16 * 4096);

/// The fuzzing entry point. Must never panic, whatever `data` is; returns
/// whether the stream was accepted. Runs [`analyze`] (trailer required),
/// then, if that succeeded, parses again applying the RAM sections to a
/// destination block named [`FUZZ_BLOCK`] (devices skipped by the
/// trailer).
pub fn fuzz_stream(data: &[u8]) -> bool {
    let opts = ParserOptions {
        require_vmdesc: true,
        ..ParserOptions::default()
    };
    let Ok(analysis) = analyze(&mut std::io::Cursor::new(data), opts.clone()) else {
        return false;
    };
    let Ok(block) = vmkit_memory::RamBlock::anonymous(FUZZ_BLOCK.0, FUZZ_BLOCK.1) else {
        return false;
    };
    let mut handler = AnalysisHandler {
        ram: RamSectionReader::apply_to(vec![block]),
        devices: analysis.vmdesc.as_ref().map(VmDescBodySkipper::new),
    };
    let mut parser = StreamParser::new(data, opts);
    loop {
        match parser.next_record(&mut handler) {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
