//! [`analyze`]: the counting summary of a stream (a migration file), built
//! by the same [`Walk`] as the report, with device bodies stepped over, not
//! decoded. Memory stays bounded: records are counted, not kept.

use std::io::{Read, Seek};

use super::walk::{Bodies, Walk, read_trailer};
use crate::wire::skip::SkipStats;
use crate::wire::{Configuration, ParserOptions, RamSectionReader, RamSummary, Record, SectionKind, VmDescription};

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
/// Device bodies can only be stepped over with the trailer's field sizes
/// (or a known VMState), so the trailer is located first
/// ([`read_vmdesc_from_end`](crate::wire::read_vmdesc_from_end)); a trailer
/// that does not read is an error, and without one the first device
/// section no known VMState describes is an error
/// ([`WireError::BadBody`](crate::wire::WireError::BadBody)).
pub fn summarize<F: Read + Seek>(f: &mut F, opts: ParserOptions) -> crate::Result<StreamAnalysis> {
    let (trailer, rewound) = read_trailer(f);
    let trailer = trailer?;
    rewound?;
    let mut walk = Walk::new(f, opts, RamSectionReader::summarise(), Ok(trailer), Bodies::Skip);
    let mut out = StreamAnalysis::default();
    while let Some(step) = walk.next()? {
        match step.record {
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
    out.length = walk.offset();
    (out.ram, out.devices) = walk.finish();
    Ok(out)
}

/// Block name and size of the destination [`fuzz_stream`] applies RAM to.
pub const FUZZ_BLOCK: (&str, u64) = ("pc.ram", 16 * 4096);

/// The fuzzing entry point. Must never panic, whatever `data` is; returns
/// whether the stream was accepted. Runs [`analyze`] (trailer required),
/// then, if that succeeded, parses again applying the RAM sections to a
/// destination block named [`FUZZ_BLOCK`] (devices stepped over as in the
/// first pass).
pub fn fuzz_stream(data: &[u8]) -> bool {
    let opts = ParserOptions {
        require_vmdesc: true,
        ..ParserOptions::default()
    };
    let Ok(analysis) = summarize(&mut std::io::Cursor::new(data), opts.clone()) else {
        return false;
    };
    let Ok(block) = vmkit_memory::RamBlock::anonymous(FUZZ_BLOCK.0, FUZZ_BLOCK.1) else {
        return false;
    };
    let mut input = std::io::Cursor::new(data);
    let ram = RamSectionReader::apply_to(vec![block]);
    let mut walk = Walk::new(&mut input, opts, ram, Ok(analysis.vmdesc), Bodies::Skip);
    loop {
        match walk.next() {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
