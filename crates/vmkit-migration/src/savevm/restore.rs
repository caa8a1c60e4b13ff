//! [`restore`]: a stream written by [`save`](super::save) (or by QEMU,
//! for the sections this machine has) into a machine of the same shape.

use std::io::{BufRead, Read};

use crate::vmstate::codec::{DecodeLimits, decode_into};
use crate::vmstate::io::VmReader;
use crate::vmstate::{VmStateDescription, VmStruct};
use crate::wire::format::{RAM_IDSTR, TARGET_PAGE_SIZE};
use crate::wire::{
    ParserOptions, RamSectionReader, Record, SectionBodyHandler, SectionHeader, SectionKind, StreamParser,
    StreamReader, WireError,
};

use super::SavevmError;
use super::save_set::SaveSet;

/// How [`restore`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Sections end with a footer (must match the writer's setting).
    pub footers: bool,
    /// Caps on lengths taken from device bodies.
    pub limits: DecodeLimits,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            footers: true,
            limits: DecodeLimits::default(),
        }
    }
}

/// What [`restore`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Stream bytes parsed.
    pub bytes: u64,
    /// Zero-page records applied.
    pub zero_pages: u64,
    /// Full-page records applied.
    pub normal_pages: u64,
    /// Device sections loaded.
    pub devices: u64,
}

/// Decodes the body of section `header` by `vmsd` straight from the
/// stream into `state`, leaving the reader at the byte after the body.
pub(crate) fn decode_section_body<R: Read>(
    vmsd: &VmStateDescription,
    header: &SectionHeader,
    r: &mut StreamReader<R>,
    state: &mut VmStruct,
    limits: &DecodeLimits,
) -> crate::Result<()> {
    let start = r.offset();
    let mut vr = VmReader::new(&mut *r, start);
    decode_into(vmsd, header.version_id, &mut vr, state, limits)?;
    // The decoder looks one byte past the body for a subsection marker;
    // that byte (the footer or the next record) goes back.
    let (_, rest) = vr.into_parts();
    match rest.as_slice() {
        [] => Ok(()),
        [byte] => Ok(r.unread(*byte)?),
        _ => Err(WireError::BadBody {
            offset: r.offset(),
            idstr: header.idstr.clone(),
            reason: "the body is followed by a subsection that does not belong to it".into(),
        }
        .into()),
    }
}

/// Routes RAM to the blocks and stages each device body, decoded and
/// checked, until the stream has ended.
struct RestoreHandler<'a> {
    set: &'a SaveSet,
    ram: RamSectionReader,
    staged: Vec<Option<Staged>>,
    limits: DecodeLimits,
}

/// A device's decoded state, waiting for the end of the stream.
#[derive(Clone)]
struct Staged {
    state: VmStruct,
    version_id: u32,
    /// Where its section started, for errors.
    offset: u64,
}

impl RestoreHandler<'_> {
    fn device_body<R: Read>(
        &mut self,
        header: &SectionHeader,
        offset: u64,
        r: &mut StreamReader<R>,
    ) -> crate::Result<()> {
        let index = self
            .set
            .devices
            .iter()
            .position(|d| d.idstr == header.idstr && d.instance_id == header.instance_id)
            .filter(|_| header.kind == SectionKind::Full)
            .ok_or_else(|| WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            })?;
        let dev = &self.set.devices[index];
        let vmsd = dev.device.description();
        // Decoded over the device's current values, as QEMU loads into the
        // live struct: fields an older version lacks keep their value, and
        // `Equal` fields and optional elements are judged against it.
        let mut state = dev.device.save_vmstate().map_err(|e| dev.failed(Some(offset), e))?;
        decode_section_body(&vmsd, header, r, &mut state, &self.limits)?;
        self.staged[index] = Some(Staged {
            state,
            version_id: header.version_id,
            offset,
        });
        Ok(())
    }
}

impl<R: Read> SectionBodyHandler<R> for RestoreHandler<'_> {
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<R>) -> crate::Result<()> {
        if header.idstr == RAM_IDSTR && header.instance_id == 0 {
            return self.ram.section_body(header, offset, r);
        }
        self.device_body(header, offset, r)
    }
}

/// Reads the stream from `source` into `set`: RAM into its blocks as it
/// arrives, then — only once the stream has ended cleanly (EOF, optional
/// trailer, nothing after) and every check passed — each device's decoded
/// state through [`DeviceState::load_state`](crate::device_state::DeviceState::load_state),
/// in the set's order.
///
/// Checked, each failing with an error naming the offset (and section and
/// field where there is one): the configuration names `set.machine_type`;
/// every RAM block of the stream exists here with the same length, and
/// every block here was announced and received at least one record per
/// page; every device section exists here, is a FULL section, and decodes
/// by the local description (versions included); no live section is left
/// open; every device here that has no `needed` predicate got its
/// section. Wrap unbuffered sources (files, sockets) in a `BufReader`, or
/// use [`restore_buffered`].
///
/// On error no device has been changed, but RAM may be partly loaded.
pub fn restore<R: Read>(set: &SaveSet, source: R, opts: &RestoreOptions) -> crate::Result<RestoreStats> {
    restore_from(set, StreamReader::new(source), opts)
}

/// [`restore`] from a buffered source (a `BufReader` over a file or
/// socket, a byte slice): each page goes from the source's buffer into
/// guest memory in one copy rather than through a page buffer of its own.
pub fn restore_buffered<R: BufRead>(set: &SaveSet, source: R, opts: &RestoreOptions) -> crate::Result<RestoreStats> {
    restore_from(set, StreamReader::from_buf_read(source), opts)
}

fn restore_from<R: Read>(set: &SaveSet, reader: StreamReader<R>, opts: &RestoreOptions) -> crate::Result<RestoreStats> {
    set.check()?;
    let mut handler = RestoreHandler {
        set,
        ram: RamSectionReader::apply_to(set.ram.clone()),
        staged: vec![None; set.devices.len()],
        limits: opts.limits,
    };
    let popts = ParserOptions {
        footers: opts.footers,
        expect_machine: Some(set.machine_type.clone()),
        require_configuration: true,
        ..ParserOptions::default()
    };
    let mut parser = StreamParser::from_reader(reader, popts);
    let mut saw_eof = false;
    while let Some(rec) = parser.next_record(&mut handler)? {
        match rec {
            Record::Eof { .. } => saw_eof = true,
            Record::Trailing { offset, byte } => {
                return Err(WireError::Malformed {
                    offset,
                    reason: format!("unexpected byte {byte:#04x} after the end of the stream"),
                }
                .into());
            }
            _ => {}
        }
    }
    let end = parser.offset();
    if !saw_eof {
        return Err(WireError::Truncated {
            offset: end,
            context: "end of stream (EOF record)".into(),
        }
        .into());
    }
    if let Some(open) = parser.open_sections().next() {
        return Err(WireError::Malformed {
            offset: end,
            reason: format!(
                "live section '{}' (id {}) was started but never ended",
                open.idstr, open.section_id
            ),
        }
        .into());
    }
    let missing: Vec<Option<u64>> = (0..set.ram.len()).map(|i| handler.ram.first_missing_page(i)).collect();
    let summary = handler.ram.into_summary();
    let expected_total: u64 = set.ram.iter().map(|b| b.used_length()).sum();
    if !set.ram.is_empty() && summary.total_bytes != expected_total {
        return Err(SavevmError::IncompleteRam {
            block: set.ram.iter().map(|b| b.name()).collect::<Vec<_>>().join(","),
            reason: format!(
                "the stream announced {:#x} bytes of RAM, this machine has {expected_total:#x}",
                summary.total_bytes
            ),
        }
        .into());
    }
    let mut stats = RestoreStats {
        bytes: end,
        ..RestoreStats::default()
    };
    for ((block, seen), missing) in set.ram.iter().zip(&summary.blocks).zip(missing) {
        if let Some(addr) = missing {
            return Err(SavevmError::IncompleteRam {
                block: block.name().to_owned(),
                reason: format!(
                    "the page at {addr:#x} was never sent ({} page records for {} pages)",
                    seen.zero_pages + seen.normal_pages,
                    block.used_length() / TARGET_PAGE_SIZE
                ),
            }
            .into());
        }
        stats.zero_pages += seen.zero_pages;
        stats.normal_pages += seen.normal_pages;
    }
    for (dev, staged) in set.devices.iter().zip(&handler.staged) {
        if staged.is_none() && !dev.device.description().has_needed() {
            return Err(SavevmError::MissingSection {
                idstr: dev.idstr.clone(),
                instance_id: dev.instance_id,
            }
            .into());
        }
    }
    // Every device converts and checks its state before any is loaded,
    // so a refusal changes no device.
    for (dev, staged) in set.devices.iter().zip(&handler.staged) {
        let Some(staged) = staged else { continue };
        dev.device
            .check_vmstate(&staged.state, staged.version_id)
            .map_err(|e| dev.failed(Some(staged.offset), e))?;
    }
    for (dev, staged) in set.devices.iter().zip(handler.staged) {
        let Some(staged) = staged else { continue };
        dev.device
            .load_vmstate(&staged.state, staged.version_id)
            .map_err(|e| dev.failed(Some(staged.offset), e))?;
        stats.devices += 1;
    }
    Ok(stats)
}
