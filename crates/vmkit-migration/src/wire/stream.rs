//! [`StreamParser`]: the record-level parser.
//!
//! Device (FULL) section bodies have no framing — nothing on the wire says
//! how long they are — so the parser cannot step over them by itself. It
//! hands each section's header and the reader to a [`SectionBodyHandler`],
//! which must consume exactly the body; the parser then checks the footer.
//! Handlers: [`RamSectionReader`] (RAM), [`VmDescBodySkipper`] (any device,
//! driven by the VMDESCRIPTION sizes), [`AnalysisHandler`] (both), and the
//! VMState decoder.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};

use super::config::Configuration;
use super::format::{FILE_VERSION, MAX_COMMAND_LEN, RAM_IDSTR, RecordType, SectionKind, VmCommand};
use super::ram::RamSectionReader;
use super::section::{SectionHeader, read_file_header, read_footer};
use super::skip::VmDescBodySkipper;
use super::vmdesc::VmDescription;
use super::{StreamReader, StreamWriter, WireError, WireResult};

/// Bytes of a section footer: `0x7e` and the be32 section id.
pub const FOOTER_LEN: u64 = 5;

/// Cap on the number of distinct sections a stream may start.
pub const MAX_SECTIONS: usize = 1 << 16;

/// Consumes section bodies for a [`StreamParser`].
pub trait SectionBodyHandler<R: Read> {
    /// Consumes the body of the section `header` (whose type byte is at
    /// `offset`) from `r`, leaving the reader at its footer. For PART/END
    /// the header's idstr, instance and version are those of the START.
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<R>) -> crate::Result<()>;

    /// Whether the last [`section_body`](Self::section_body) also consumed
    /// the section's footer: a handler that finds where a body ends by
    /// looking for its footer (no description of the body at hand).
    fn footer_consumed(&mut self) -> bool {
        false
    }
}

/// Routes `ram` sections to a RAM decoder and the others to a device
/// handler (if any): a whole stream's handler when no device is decoded.
#[derive(Debug)]
pub struct AnalysisHandler<D = VmDescBodySkipper> {
    /// The RAM decoder (usually [`RamSectionReader::summarise`]).
    pub ram: RamSectionReader,
    /// The device body handler.
    pub devices: Option<D>,
}

impl<R: Read, D: SectionBodyHandler<R>> SectionBodyHandler<R> for AnalysisHandler<D> {
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<R>) -> crate::Result<()> {
        if header.idstr == RAM_IDSTR && header.instance_id == 0 {
            return self.ram.section_body(header, offset, r);
        }
        match &mut self.devices {
            Some(d) => d.section_body(header, offset, r),
            None => Err(WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            }
            .into()),
        }
    }
}

/// Parser settings.
#[derive(Debug, Clone)]
pub struct ParserOptions {
    /// Sections end with a footer (QEMU's `send-section-footer`, default on).
    pub footers: bool,
    /// Demand a configuration record naming this machine type.
    pub expect_machine: Option<String>,
    /// Demand a configuration record.
    pub require_configuration: bool,
    /// Demand the VMDESCRIPTION trailer after EOF.
    pub require_vmdesc: bool,
    /// Cap on a command's payload.
    pub max_command_len: u64,
}

impl Default for ParserOptions {
    fn default() -> ParserOptions {
        ParserOptions {
            footers: true,
            expect_machine: None,
            require_configuration: false,
            require_vmdesc: false,
            max_command_len: MAX_COMMAND_LEN,
        }
    }
}

/// One top-level record, with the offset of its first byte.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The file header.
    Header {
        /// The version (3).
        version: u32,
    },
    /// The configuration record.
    Configuration {
        /// Offset of the `0x07` byte.
        offset: u64,
        /// Its content.
        config: Configuration,
    },
    /// An in-band command.
    Command {
        /// Offset of the `0x08` byte.
        offset: u64,
        /// The command number (see [`VmCommand`]).
        cmd: u16,
        /// Its payload.
        data: Vec<u8>,
    },
    /// A section, body consumed by the handler.
    Section {
        /// Offset of the type byte.
        offset: u64,
        /// The header (PART/END: completed from the START).
        header: SectionHeader,
        /// Body bytes (between header and footer).
        body_len: u64,
    },
    /// End of device state.
    Eof {
        /// Offset of the `0x00` byte.
        offset: u64,
    },
    /// The JSON trailer.
    VmDescription {
        /// Offset of the `0x06` byte.
        offset: u64,
        /// The description.
        description: Box<VmDescription>,
    },
    /// Bytes after EOF that are not a trailer, or after the trailer (QEMU
    /// only reports these); parsing stops here.
    Trailing {
        /// Offset of the first such byte.
        offset: u64,
        /// The byte.
        byte: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    First,
    Body,
    AfterEof,
    AfterVmdesc,
    Done,
}

/// Parses a stream record by record, sequentially, with bounded memory.
#[derive(Debug)]
pub struct StreamParser<R> {
    r: StreamReader<R>,
    opts: ParserOptions,
    state: State,
    /// START sections not yet ended, by section id.
    live: HashMap<u32, SectionHeader>,
    /// Section ids and (idstr, instance) pairs already started.
    ids: HashSet<u32>,
    names: HashSet<(String, u32)>,
}

impl<R: Read> StreamParser<R> {
    /// A parser at the start of a stream (wrap unbuffered sources in a
    /// `BufReader`, or use [`StreamReader::buffered`] and
    /// [`from_reader`](Self::from_reader)).
    pub fn new(inner: R, opts: ParserOptions) -> StreamParser<R> {
        StreamParser::from_reader(StreamReader::new(inner), opts)
    }

    /// A parser over an existing reader.
    pub fn from_reader(r: StreamReader<R>, opts: ParserOptions) -> StreamParser<R> {
        StreamParser {
            r,
            opts,
            state: State::Header,
            live: HashMap::new(),
            ids: HashSet::new(),
            names: HashSet::new(),
        }
    }

    /// The offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.r.offset()
    }

    /// START sections not (yet) ended by an END, by section id. QEMU does
    /// not require live sections to end before EOF; analyzers may report it.
    pub fn open_sections(&self) -> impl Iterator<Item = &SectionHeader> {
        self.live.values()
    }

    /// The reader.
    pub fn reader_mut(&mut self) -> &mut StreamReader<R> {
        &mut self.r
    }

    /// Parses every record, returning them (an analysis helper; keep only
    /// what you need for large streams by calling
    /// [`next_record`](Self::next_record) yourself).
    pub fn parse_all(&mut self, handler: &mut dyn SectionBodyHandler<R>) -> crate::Result<Vec<Record>> {
        let mut out = Vec::new();
        while let Some(rec) = self.next_record(handler)? {
            out.push(rec);
        }
        Ok(out)
    }

    /// The next record, `None` after the last one. After an error the
    /// parser's state is unspecified; stop using it.
    pub fn next_record(&mut self, handler: &mut dyn SectionBodyHandler<R>) -> crate::Result<Option<Record>> {
        match self.state {
            State::Header => {
                let version = read_file_header(&mut self.r)?;
                debug_assert_eq!(version, FILE_VERSION);
                self.state = State::First;
                Ok(Some(Record::Header { version }))
            }
            State::First | State::Body => self.body_record(handler),
            State::AfterEof => self.after_eof(),
            State::AfterVmdesc => {
                self.state = State::Done;
                Ok(self.trailing()?)
            }
            State::Done => Ok(None),
        }
    }

    fn trailing(&mut self) -> WireResult<Option<Record>> {
        let offset = self.r.offset();
        Ok(self.r.peek_u8()?.map(|byte| Record::Trailing { offset, byte }))
    }

    fn after_eof(&mut self) -> crate::Result<Option<Record>> {
        let offset = self.r.offset();
        match self.r.peek_u8()? {
            Some(b) if b == RecordType::VmDescription as u8 => {
                self.r.read_u8("VMDESCRIPTION")?;
                let description = Box::new(VmDescription::read_body(&mut self.r)?);
                self.state = State::AfterVmdesc;
                Ok(Some(Record::VmDescription { offset, description }))
            }
            None if self.opts.require_vmdesc => Err(WireError::Truncated {
                offset,
                context: "VMDESCRIPTION trailer".into(),
            }
            .into()),
            None => {
                self.state = State::Done;
                Ok(None)
            }
            Some(byte) => {
                self.state = State::Done;
                Ok(Some(Record::Trailing { offset, byte }))
            }
        }
    }

    fn body_record(&mut self, handler: &mut dyn SectionBodyHandler<R>) -> crate::Result<Option<Record>> {
        let first = self.state == State::First;
        self.state = State::Body;
        let offset = self.r.offset();
        let byte = self.r.read_u8("record type")?;
        let ty = RecordType::try_from(byte).map_err(|byte| WireError::UnknownRecord { offset, byte })?;
        if first
            && ty != RecordType::Configuration
            && (self.opts.require_configuration || self.opts.expect_machine.is_some())
        {
            return Err(WireError::Malformed {
                offset,
                reason: format!("configuration record missing (found record type {byte:#04x})"),
            }
            .into());
        }
        match ty {
            RecordType::Configuration if first => {
                let config = Configuration::read_body(&mut self.r)?;
                if let Some(m) = &self.opts.expect_machine {
                    config.check_machine(m, offset)?;
                }
                Ok(Some(Record::Configuration { offset, config }))
            }
            RecordType::Command => {
                let cmd = self.r.read_be16("command number")?;
                let len = self.r.read_be16("command length")?;
                if cmd == VmCommand::Packaged as u16 {
                    return Err(WireError::Unsupported {
                        offset,
                        what: "packaged (postcopy) command".into(),
                    }
                    .into());
                }
                let data = self
                    .r
                    .read_bytes(u64::from(len), self.opts.max_command_len, "command payload")?;
                Ok(Some(Record::Command { offset, cmd, data }))
            }
            RecordType::Eof => {
                self.state = State::AfterEof;
                Ok(Some(Record::Eof { offset }))
            }
            RecordType::SectionStart | RecordType::SectionPart | RecordType::SectionEnd | RecordType::SectionFull => {
                let kind = SectionKind::try_from(ty).map_err(|_| WireError::UnknownRecord { offset, byte })?;
                self.section(handler, kind, offset).map(Some)
            }
            _ => Err(WireError::UnknownRecord { offset, byte }.into()),
        }
    }

    fn section(
        &mut self,
        handler: &mut dyn SectionBodyHandler<R>,
        kind: SectionKind,
        offset: u64,
    ) -> crate::Result<Record> {
        let mut header = SectionHeader::read_after_type(&mut self.r, kind)?;
        if kind.has_name() {
            let key = (header.idstr.clone(), header.instance_id);
            if self.ids.contains(&header.section_id) || self.names.contains(&key) {
                return Err(WireError::DuplicateSection {
                    offset,
                    idstr: header.idstr,
                    instance_id: header.instance_id,
                }
                .into());
            }
            if self.ids.len() >= MAX_SECTIONS {
                return Err(WireError::BadLength {
                    offset,
                    what: "number of sections".into(),
                    len: self.ids.len() as u64 + 1,
                    max: MAX_SECTIONS as u64,
                }
                .into());
            }
            self.ids.insert(header.section_id);
            self.names.insert(key);
            if kind == SectionKind::Start {
                self.live.insert(header.section_id, header.clone());
            }
        } else {
            let Some(start) = self.live.get(&header.section_id) else {
                return Err(WireError::UnknownSection {
                    offset,
                    section_id: header.section_id,
                    idstr: String::new(),
                    instance_id: 0,
                }
                .into());
            };
            header.idstr.clone_from(&start.idstr);
            header.instance_id = start.instance_id;
            header.version_id = start.version_id;
            if kind == SectionKind::End {
                self.live.remove(&header.section_id);
            }
        }
        let body_start = self.r.offset();
        handler.section_body(&header, offset, &mut self.r)?;
        let footer_read = handler.footer_consumed();
        let body_len = (self.r.offset() - body_start).saturating_sub(if footer_read { FOOTER_LEN } else { 0 });
        if self.opts.footers && !footer_read {
            read_footer(&mut self.r, header.section_id)?;
        }
        Ok(Record::Section {
            offset,
            header,
            body_len,
        })
    }
}

/// Writes the EOF record.
pub fn write_eof<W: Write>(w: &mut StreamWriter<W>) -> WireResult<()> {
    w.put_u8(RecordType::Eof as u8)
}

/// Writes a command record.
pub fn write_command<W: Write>(w: &mut StreamWriter<W>, cmd: u16, data: &[u8]) -> WireResult<()> {
    let len = u16::try_from(data.len()).map_err(|_| WireError::BadLength {
        offset: w.offset(),
        what: "command payload".into(),
        len: data.len() as u64,
        max: u64::from(u16::MAX),
    })?;
    w.put_u8(RecordType::Command as u8)?;
    w.put_be16(cmd)?;
    w.put_be16(len)?;
    w.put_bytes(data)
}
