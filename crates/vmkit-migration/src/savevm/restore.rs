//! [`restore`]: a stream written by [`save`](super::save) (or by QEMU,
//! for the sections this machine has) into a machine of the same shape.

use std::io::{BufRead, Read, Write};

use crate::vmstate::codec::{DecodeLimits, decode_into};
use crate::vmstate::io::VmReader;
use crate::vmstate::{VmStateDescription, VmStruct};
use crate::wire::format::{RAM_IDSTR, TARGET_PAGE_SIZE};
use crate::wire::{
    Lookahead, ParserOptions, RamSectionReader, Record, RpMessage, SectionBodyHandler, SectionHeader, SectionKind,
    StreamParser, StreamReader, VmCommand, WireError,
};

use super::SavevmError;
use super::save_set::SaveSet;
use super::sections::IGNORE_SHARED;
use super::unmodelled::{Unmodelled, UnmodelledBlock, UnmodelledReport, UnmodelledSections};

/// How [`restore`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Sections end with a footer (must match the writer's setting).
    pub footers: bool,
    /// Caps on lengths taken from device bodies.
    pub limits: DecodeLimits,
    /// QEMU's `x-ignore-shared` on this side: the stream must have been
    /// written with it too (its configuration says so), and shared RAM
    /// blocks, mapped from the source's memfd or file, get no pages.
    pub ignore_shared: bool,
    /// What to do with RAM blocks and device sections this machine does
    /// not have.
    pub unmodelled: Unmodelled,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            footers: true,
            limits: DecodeLimits::default(),
            ignore_shared: false,
            unmodelled: Unmodelled::Refuse,
        }
    }
}

/// What [`restore`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestoreStats {
    /// Stream bytes parsed.
    pub bytes: u64,
    /// Zero-page records applied (to this machine's blocks).
    pub zero_pages: u64,
    /// Full-page records applied (to this machine's blocks).
    pub normal_pages: u64,
    /// Device sections loaded.
    pub devices: u64,
    /// What the stream held that this machine does not model (with
    /// [`Unmodelled::Report`]; empty otherwise).
    pub unmodelled: UnmodelledReport,
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
    /// With [`Unmodelled::Report`]: the sections no device here takes.
    unmodelled: Option<UnmodelledSections>,
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
        r: &mut StreamReader<Lookahead<R>>,
    ) -> crate::Result<()> {
        let index = self
            .set
            .devices
            .iter()
            .position(|d| d.idstr == header.idstr && d.instance_id == header.instance_id)
            .filter(|_| header.kind == SectionKind::Full);
        let Some(index) = index else {
            if let Some(unmodelled) = &mut self.unmodelled {
                return unmodelled.section_body(header, offset, r, &self.limits);
            }
            return Err(WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            }
            .into());
        };
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

impl<R: Read> SectionBodyHandler<Lookahead<R>> for RestoreHandler<'_> {
    fn section_body(
        &mut self,
        header: &SectionHeader,
        offset: u64,
        r: &mut StreamReader<Lookahead<R>>,
    ) -> crate::Result<()> {
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
/// With [`Unmodelled::Report`], RAM blocks and device sections this
/// machine lacks are taken instead of refused (see
/// [`unmodelled`](super::unmodelled)): such blocks' pages are decoded and
/// dropped, such sections checked and decoded by the stream's
/// VMDESCRIPTION trailer, and both listed in [`RestoreStats::unmodelled`].
/// Every check above still applies to what this machine has.
///
/// On error no device has been changed, but RAM may be partly loaded.
pub fn restore<R: Read>(set: &SaveSet, source: R, opts: &RestoreOptions) -> crate::Result<RestoreStats> {
    restore_from(set, StreamReader::new(Lookahead::new(source)), opts, None)
}

/// [`restore`] from a buffered source (a `BufReader` over a file or
/// socket, a byte slice): each page goes from the source's buffer into
/// guest memory in one copy rather than through a page buffer of its own.
pub fn restore_buffered<R: BufRead>(set: &SaveSet, source: R, opts: &RestoreOptions) -> crate::Result<RestoreStats> {
    restore_answering(set, source, opts, None)
}

/// [`restore_buffered`], answering on `return_path` (the connection's other
/// direction) when the source asks for it (QEMU's `OPEN_RETURN_PATH`
/// command): a `PONG` for each `PING`, and once the load ended a `SHUT`
/// whose status says whether it succeeded (0) or not (1). The stream is
/// then read up to its VMDESCRIPTION trailer, not to the connection's end
/// (the source keeps it open to hear the `SHUT`). A `SHUT` that cannot be
/// sent fails the restore: the source would resume, and exactly one side
/// may run. Without `return_path` a source asking for one is refused.
pub fn restore_answering<R: BufRead>(
    set: &SaveSet,
    source: R,
    opts: &RestoreOptions,
    return_path: Option<&mut dyn Write>,
) -> crate::Result<RestoreStats> {
    // A source answered on a return path keeps the connection open after
    // its trailer: reading ahead for an unmodelled section stops there.
    let source = Lookahead::new(source).stopping_at_trailer(return_path.is_some());
    restore_from(set, StreamReader::from_buf_read(source), opts, return_path)
}

fn restore_from<R: Read>(
    set: &SaveSet,
    reader: StreamReader<Lookahead<R>>,
    opts: &RestoreOptions,
    mut return_path: Option<&mut dyn Write>,
) -> crate::Result<RestoreStats> {
    let mut answering = false;
    let result = restore_inner(set, reader, opts, &mut return_path, &mut answering);
    match (return_path, answering) {
        (Some(rp), true) => {
            let status = u32::from(result.is_err());
            let sent = RpMessage::Shut(status).write_to(rp);
            match (result, sent) {
                (Ok(stats), Err(source)) => Err(WireError::Io {
                    offset: stats.bytes,
                    source,
                }
                .into()),
                (result, _) => result,
            }
        }
        _ => result,
    }
}

fn restore_inner<R: Read>(
    set: &SaveSet,
    reader: StreamReader<Lookahead<R>>,
    opts: &RestoreOptions,
    return_path: &mut Option<&mut dyn Write>,
    answering: &mut bool,
) -> crate::Result<RestoreStats> {
    set.check()?;
    let report = opts.unmodelled == Unmodelled::Report;
    let mut handler = RestoreHandler {
        set,
        ram: if report {
            RamSectionReader::apply_to_some(set.ram.clone())
        } else {
            RamSectionReader::apply_to(set.ram.clone())
        },
        staged: vec![None; set.devices.len()],
        limits: opts.limits,
        unmodelled: report.then(UnmodelledSections::default),
    };
    let popts = ParserOptions {
        footers: opts.footers,
        expect_machine: Some(set.machine_type.clone()),
        require_configuration: true,
        ..ParserOptions::default()
    };
    // Reads straight through unless an unmodelled section needs the trailer.
    let mut parser = StreamParser::from_reader(reader, popts);
    let mut saw_eof = false;
    while let Some(rec) = parser.next_record(&mut handler)? {
        match rec {
            Record::Configuration { offset, config } => {
                let theirs = config.has_capability(IGNORE_SHARED);
                check_capability(IGNORE_SHARED, opts.ignore_shared, theirs, offset)?;
                handler.ram.set_ignore_shared(theirs);
            }
            Record::Command { offset, cmd, data } => {
                answer_command(offset, cmd, &data, return_path, answering)?;
            }
            Record::Eof { .. } => saw_eof = true,
            // The source waits for our answer with the connection open.
            Record::VmDescription { .. } if *answering => break,
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
    let mut summary = handler.ram.into_summary();
    let expected_total: u64 = set.ram.iter().map(|b| b.used_length()).sum();
    // Reporting, the stream may announce more (the blocks not modelled);
    // a block of this machine it did not announce has every page missing.
    let announced_enough = if report {
        summary.total_bytes >= expected_total
    } else {
        summary.total_bytes == expected_total
    };
    if !set.ram.is_empty() && !announced_enough {
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
    // The decoder lists this machine's blocks first, then those it dropped.
    let dropped = summary.blocks.split_off(set.ram.len().min(summary.blocks.len()));
    stats.unmodelled.ram_blocks = dropped.into_iter().map(UnmodelledBlock::from).collect();
    if let Some(unmodelled) = handler.unmodelled.take() {
        stats.unmodelled.sections = unmodelled.sections;
    }
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

/// A capability both sides must agree on (QEMU's configuration check),
/// refused with QEMU's message when they differ.
fn check_capability(name: &str, ours: bool, theirs: bool, offset: u64) -> Result<(), WireError> {
    if ours == theirs {
        return Ok(());
    }
    let (here, there) = if ours { ("on", "off") } else { ("off", "on") };
    Err(WireError::Malformed {
        offset,
        reason: format!("Capability '{name}' is {here}, but received capability is {there}"),
    })
}

/// A command record: the return path opened, or a `PING` answered on it;
/// other commands are left to the parser's checks.
fn answer_command(
    offset: u64,
    cmd: u16,
    data: &[u8],
    return_path: &mut Option<&mut dyn Write>,
    answering: &mut bool,
) -> crate::Result<()> {
    match VmCommand::try_from(cmd) {
        Ok(VmCommand::OpenReturnPath) => {
            if return_path.is_none() {
                return Err(WireError::Unsupported {
                    offset,
                    what: "a return path (OPEN_RETURN_PATH) on a transport with no way back".into(),
                }
                .into());
            }
            *answering = true;
        }
        Ok(VmCommand::Ping) => {
            let value = <[u8; 4]>::try_from(data)
                .map(u32::from_be_bytes)
                .map_err(|_| WireError::Malformed {
                    offset,
                    reason: format!("PING carries {} bytes, not 4", data.len()),
                })?;
            let rp = return_path
                .as_deref_mut()
                .filter(|_| *answering)
                .ok_or_else(|| WireError::Malformed {
                    offset,
                    reason: format!("PING ({value:#x}) received with no return path"),
                })?;
            RpMessage::Pong(value)
                .write_to(rp)
                .map_err(|source| WireError::Io { offset, source })?;
        }
        _ => {}
    }
    Ok(())
}
