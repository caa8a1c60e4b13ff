//! [`Walk`]: the one pass over a stream that both the report and the
//! summary are built from.
//!
//! The trailer is read first (device bodies have no framing: only its field
//! sizes, or a known VMState, say where a body ends), then records are read
//! front to back. RAM sections go to the RAM decoder; device sections are
//! stepped over by the trailer and, when [`Bodies::Decode`], their fields
//! decoded — generically by the trailer entry, or by a known VMState for a
//! section the trailer does not describe.

use std::cell::RefCell;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use serde_json::Value;

use crate::savevm::IGNORE_SHARED;
use crate::savevm::{decode_by_trailer, decode_section_body, known_vmstate};
use crate::vmstate::{DecodeLimits, VmStruct};
use crate::wire::format::{RAM_IDSTR, RecordType, SectionKind};
use crate::wire::ram::{RamSectionReader, RamSummary};
use crate::wire::reader::READ_BUFFER;
use crate::wire::skip::SkipStats;
use crate::wire::{
    FOOTER_LEN, ParserOptions, Record, SectionBodyHandler, SectionHeader, StreamParser, StreamReader, TrailerBudget,
    VmDescBodySkipper, VmDescription, WireError, WireResult, read_vmdesc_from_end_within,
};

/// Largest device body whose fields are decoded (larger ones are skipped,
/// their `"fields"` left `null`).
pub const MAX_DECODED_BODY: usize = 16 << 20;

/// What the walk does with device bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bodies {
    /// Step over them (by the trailer); memory stays bounded by the trailer.
    Skip,
    /// Also decode their fields (each body up to [`MAX_DECODED_BODY`]).
    Decode,
}

/// Reads the trailer from the end of `f` and rewinds to the start. The
/// trailer must keep within the default [`TrailerBudget`]: the walk does
/// work for every element it describes (decoding it, for the report), so
/// a trailer that nests or repeats capped arrays past the budget is refused
/// before anything is decoded ([`WireError::TrailerTooLarge`]).
pub(crate) fn read_trailer<F: Read + Seek>(f: &mut F) -> (WireResult<Option<VmDescription>>, WireResult<()>) {
    let trailer = read_vmdesc_from_end_within(f, &TrailerBudget::default());
    let rewound = f
        .seek(SeekFrom::Start(0))
        .map(|_| ())
        .map_err(|source| WireError::Io { offset: 0, source });
    (trailer, rewound)
}

/// One record of the walk, with a device section's decoded fields.
pub(crate) struct Step {
    /// The record.
    pub(crate) record: Record,
    /// A device section's fields (`Value::Null` when the body was too large
    /// to decode); `None` for other records and with [`Bodies::Skip`].
    pub(crate) fields: Option<Value>,
}

/// Where the record being read starts, and what it is as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordStart {
    /// Offset of its first byte.
    pub(crate) offset: u64,
    /// Its type name (as in the report), when its first byte says.
    pub(crate) kind: Option<&'static str>,
}

/// The pass over a stream (see the [module](self) documentation).
pub(crate) struct Walk<R: Read> {
    parser: StreamParser<Tee<R>>,
    handler: WalkHandler,
    /// The record the last [`Walk::next`] read (or failed to read).
    start: RecordStart,
    /// Records read so far (the file header first).
    count: u64,
    /// Whether the last record read was EOF (so a `0x06` is the trailer).
    after_eof: bool,
}

impl<'f, F: Read + Seek> Walk<BufReader<&'f mut F>> {
    /// Starts at the current position of `f` (its start: see
    /// [`read_trailer`]). `trailer` is what reading the trailer gave: a
    /// trailer that failed to read is the error of the first device section
    /// that needs it.
    pub(crate) fn new(
        f: &'f mut F,
        opts: ParserOptions,
        ram: RamSectionReader,
        trailer: WireResult<Option<VmDescription>>,
        bodies: Bodies,
    ) -> Self {
        let (vmdesc, trailer_error) = match trailer {
            Ok(d) => (d, None),
            Err(e) => (None, Some(e)),
        };
        let capture = Rc::new(RefCell::new(Capture::default()));
        let handler = WalkHandler {
            ram,
            skipper: vmdesc.as_ref().map(VmDescBodySkipper::new),
            vmdesc,
            trailer_error,
            follow_footers: bodies == Bodies::Decode && opts.footers,
            footer_consumed: false,
            footer_framed: false,
            bodies,
            capture: Rc::clone(&capture),
            current: None,
            decoded: None,
            limits: DecodeLimits::default(),
        };
        let tee = Tee {
            inner: BufReader::with_capacity(READ_BUFFER, f),
            capture,
        };
        Walk {
            parser: StreamParser::from_reader(StreamReader::new(tee), opts),
            handler,
            start: RecordStart { offset: 0, kind: None },
            count: 0,
            after_eof: false,
        }
    }
}

impl<R: Read> Walk<R> {
    /// The next record; `Ok(None)` at the end of the stream.
    pub(crate) fn next(&mut self) -> crate::Result<Option<Step>> {
        self.handler.current = None;
        self.handler.decoded = None;
        self.handler.footer_framed = false;
        self.start = RecordStart {
            offset: self.parser.offset(),
            kind: self.peek_kind(),
        };
        let record = self.parser.next_record(&mut self.handler)?;
        self.count += 1;
        self.after_eof = matches!(record, Some(Record::Eof { .. }));
        if let Some(Record::Configuration { config, .. }) = &record {
            // Its MEM_SIZE entries then carry block addresses.
            self.handler.ram.set_ignore_shared(config.has_capability(IGNORE_SHARED));
        }
        Ok(record.map(|record| Step {
            record,
            fields: self.handler.decoded.take(),
        }))
    }

    /// The type of the record about to be read, from its first byte (a
    /// peek: the parser reads that byte again).
    fn peek_kind(&mut self) -> Option<&'static str> {
        if self.count == 0 {
            return Some("header");
        }
        let byte = self.parser.reader_mut().peek_u8().ok()??;
        if self.after_eof {
            return (byte == RecordType::VmDescription as u8).then_some("VMDESCRIPTION");
        }
        Some(match RecordType::try_from(byte).ok()? {
            RecordType::Configuration => "CONFIGURATION",
            RecordType::Command => "COMMAND",
            RecordType::Eof => "EOF",
            RecordType::SectionStart => "START",
            RecordType::SectionPart => "PART",
            RecordType::SectionEnd => "END",
            RecordType::SectionFull => "FULL",
            _ => return None,
        })
    }

    /// The record the last [`next`](Self::next) read or failed to read.
    pub(crate) fn record_start(&self) -> RecordStart {
        self.start
    }

    /// Whether the section the last [`next`](Self::next) read was framed
    /// by looking for its footer (no trailer entry or known VMState to
    /// step over its body by), its fields left undecoded.
    pub(crate) fn footer_framed(&self) -> bool {
        self.handler.footer_framed
    }

    /// Why the trailer at the end of the file could not be read, if no
    /// section needed it yet (then it is still to be reported).
    pub(crate) fn trailer_error(&self) -> Option<&WireError> {
        self.handler.trailer_error.as_ref()
    }

    /// Whether a trailer was found at the end of the file and read.
    pub(crate) fn has_trailer(&self) -> bool {
        self.handler.vmdesc.is_some()
    }

    /// Bytes parsed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.parser.offset()
    }

    /// The idstr of the section whose body was being read when the last
    /// [`next`](Self::next) stopped, if any.
    pub(crate) fn current_section(&self) -> Option<&str> {
        self.handler.current.as_deref()
    }

    /// The RAM summary and the device bodies stepped over.
    pub(crate) fn finish(self) -> (RamSummary, SkipStats) {
        let skipped = self.handler.skipper.map(|s| s.stats()).unwrap_or_default();
        (self.handler.ram.into_summary(), skipped)
    }
}

/// Bytes of device bodies, captured as the parser reads them.
#[derive(Debug, Default)]
struct Capture {
    on: bool,
    overflow: bool,
    buf: Vec<u8>,
}

/// A reader that copies what it reads into a [`Capture`] while it is on.
#[derive(Debug)]
pub(crate) struct Tee<R> {
    inner: R,
    capture: Rc<RefCell<Capture>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut c = self.capture.borrow_mut();
        if c.on && !c.overflow {
            if c.buf.len() + n > MAX_DECODED_BODY + 1 {
                c.overflow = true;
                c.buf = Vec::new();
            } else {
                c.buf.extend_from_slice(&buf[..n]);
            }
        }
        Ok(n)
    }
}

struct WalkHandler {
    ram: RamSectionReader,
    vmdesc: Option<VmDescription>,
    /// Why the trailer could not be read (reported once: by the first
    /// device section that needs it, or by the report at the end when
    /// sections are framed by their footers instead).
    trailer_error: Option<WireError>,
    /// Whether device bodies no trailer entry or known VMState describes
    /// are stepped over by looking for their footer (the report only;
    /// streams with footers only).
    follow_footers: bool,
    /// Whether the last body handled consumed its footer too.
    footer_consumed: bool,
    /// Whether the last section was framed by its footer.
    footer_framed: bool,
    skipper: Option<VmDescBodySkipper>,
    bodies: Bodies,
    capture: Rc<RefCell<Capture>>,
    /// The section whose body is being (or was last) parsed.
    current: Option<String>,
    /// The last decoded device fields.
    decoded: Option<Value>,
    limits: DecodeLimits,
}

/// Whether `byte` can start the record after a section: another section,
/// a command, or EOF.
fn starts_record(byte: u8) -> bool {
    [
        RecordType::Eof,
        RecordType::SectionStart,
        RecordType::SectionPart,
        RecordType::SectionEnd,
        RecordType::SectionFull,
        RecordType::Command,
    ]
    .iter()
    .any(|&t| t as u8 == byte)
}

impl WalkHandler {
    /// Steps over a body nothing describes by reading up to its footer
    /// (`0x7e` and the section id, followed by the start of a record or the
    /// end of the stream), which it consumes too. A body that holds those
    /// bytes itself is cut short there; the next record then reports the
    /// damage. Reads byte by byte, keeping nothing.
    fn body_to_footer<R: Read>(&mut self, header: &SectionHeader, r: &mut StreamReader<Tee<R>>) -> crate::Result<()> {
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[0] = RecordType::SectionFooter as u8;
        footer[1..].copy_from_slice(&header.section_id.to_be_bytes());
        let mut window = [0u8; FOOTER_LEN as usize];
        let mut seen = 0u64;
        loop {
            let b = r.read_u8("section body (no VMDESCRIPTION trailer to step over it by: looking for its footer)")?;
            window.rotate_left(1);
            window[window.len() - 1] = b;
            seen += 1;
            if seen >= FOOTER_LEN && window == footer && r.peek_u8()?.is_none_or(starts_record) {
                self.footer_consumed = true;
                self.footer_framed = true;
                return Ok(());
            }
        }
    }

    fn device_body<R: Read>(
        &mut self,
        header: &SectionHeader,
        offset: u64,
        r: &mut StreamReader<Tee<R>>,
    ) -> crate::Result<()> {
        let described = self
            .vmdesc
            .as_ref()
            .is_some_and(|d| d.device(&header.idstr, header.instance_id).is_some());
        if !described && header.kind == SectionKind::Full {
            if let Some(vmsd) = known_vmstate(&header.idstr) {
                let mut state = VmStruct::new();
                decode_section_body(&vmsd, header, r, &mut state, &self.limits)?;
                if self.bodies == Bodies::Decode {
                    self.decoded = Some(state.to_json());
                }
                return Ok(());
            }
        }
        let (Some(vmdesc), Some(skipper)) = (&self.vmdesc, &mut self.skipper) else {
            if self.follow_footers {
                return self.body_to_footer(header, r);
            }
            if let Some(e) = self.trailer_error.take() {
                return Err(e.into());
            }
            return Err(WireError::BadBody {
                offset,
                idstr: header.idstr.clone(),
                reason: "no VMDESCRIPTION trailer to decode this device by (file truncated, or written with \
                         suppress-vmdesc)"
                    .into(),
            }
            .into());
        };
        let entry = vmdesc
            .device(&header.idstr, header.instance_id)
            .filter(|_| self.bodies == Bodies::Decode && header.kind == SectionKind::Full);
        let start = r.offset();
        {
            let mut c = self.capture.borrow_mut();
            c.on = entry.is_some();
            c.overflow = false;
            c.buf.clear();
        }
        let framed = skipper.skip_body(header, offset, r);
        let (overflow, body) = {
            let mut c = self.capture.borrow_mut();
            c.on = false;
            (c.overflow, std::mem::take(&mut c.buf))
        };
        framed?;
        let len = usize::try_from(r.offset() - start).unwrap_or(usize::MAX);
        let Some(entry) = entry else {
            return Ok(());
        };
        if overflow || body.len() < len {
            self.decoded = Some(Value::Null);
            return Ok(());
        }
        self.decoded = Some(decode_by_trailer(entry, &body[..len], start, &self.limits)?);
        Ok(())
    }
}

impl<R: Read> SectionBodyHandler<Tee<R>> for WalkHandler {
    fn footer_consumed(&mut self) -> bool {
        self.footer_consumed
    }

    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<Tee<R>>) -> crate::Result<()> {
        self.current = Some(header.idstr.clone());
        self.footer_consumed = false;
        if header.idstr == RAM_IDSTR && header.instance_id == 0 {
            return self.ram.section_body(header, offset, r);
        }
        self.device_body(header, offset, r)
    }
}
