//! [`analyze_report`]: the record-by-record analysis behind `vmkit analyze`.
//!
//! Unlike [`analyze`](super::analyze()), which only counts, the report lists
//! every record with its offset, the RAM blocks seen, and the fields of each
//! device (FULL) section decoded generically from the VMDESCRIPTION trailer
//! ([`decode_with_vmdesc`]), or — for a section the trailer does not
//! describe (no trailer: a cut file, `suppress-vmdesc`) — by a known
//! VMState ([`known_vmstate`](crate::savevm::known_vmstate)). A damaged stream is not an `Err`: the report
//! keeps the records parsed before the damage and says what broke, where,
//! and in which section.
//!
//! Serialised with `serde_json`, the report is the documented JSON object:
//!
//! ```text
//! {"records": [{"offset", "type", "section_id", "idstr", "instance_id", "version_id", ...}],
//!  "ram": {"blocks": [{"idstr", "used_length", "zero_pages", "normal_pages"}]},
//!  "devices": [{"offset", "section_id", "idstr", "instance_id", "version_id", "fields"}],
//!  "length": N,
//!  "error": null | {"offset", "message", "section", "field"}}
//! ```

use std::cell::RefCell;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value;

use super::format::{RAM_IDSTR, SectionKind, VmCommand};
use super::ram::RamSectionReader;
use super::reader::READ_BUFFER;
use super::section::SectionHeader;
use super::skip::VmDescBodySkipper;
use super::stream::{ParserOptions, Record, SectionBodyHandler, StreamParser};
use super::vmdesc::{VmDescription, read_vmdesc_from_end};
use super::{StreamReader, WireError};
use crate::savevm::{decode_section_body, known_vmstate};
use crate::vmstate::{DecodeLimits, VmReader, VmStruct, decode_with_vmdesc};

/// Largest device body whose fields are decoded (larger ones are skipped,
/// their `"fields"` left `null`).
pub const MAX_DECODED_BODY: usize = 16 << 20;

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordReport {
    /// Offset of the record's first byte.
    pub offset: u64,
    /// `CONFIGURATION`, `START`, `PART`, `END`, `FULL`, `EOF`,
    /// `VMDESCRIPTION` or `COMMAND`.
    #[serde(rename = "type")]
    pub record_type: &'static str,
    /// The section id (sections only).
    pub section_id: Option<u32>,
    /// The section idstr (PART/END: that of their START).
    pub idstr: Option<String>,
    /// The section instance id.
    pub instance_id: Option<u32>,
    /// The section version.
    pub version_id: Option<u32>,
    /// Section body length in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_len: Option<u64>,
    /// Configuration records: the machine type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    /// Commands: the command number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<u16>,
    /// Commands: the command name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_name: Option<String>,
    /// Commands: the payload length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_len: Option<u64>,
    /// VMDESCRIPTION: the number of devices described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_count: Option<u64>,
    /// FULL device sections: the decoded fields (`null` when the body was
    /// too large to decode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Value>,
}

impl RecordReport {
    fn new(offset: u64, record_type: &'static str) -> RecordReport {
        RecordReport {
            offset,
            record_type,
            section_id: None,
            idstr: None,
            instance_id: None,
            version_id: None,
            body_len: None,
            machine_type: None,
            command: None,
            command_name: None,
            data_len: None,
            device_count: None,
            fields: None,
        }
    }
}

/// One RAM block of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RamBlockReport {
    /// The block name.
    pub idstr: String,
    /// Its length from the MEM_SIZE list.
    pub used_length: u64,
    /// Zero-page records.
    pub zero_pages: u64,
    /// Raw-page records.
    pub normal_pages: u64,
}

/// The RAM part of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RamReport {
    /// Blocks, in MEM_SIZE order.
    pub blocks: Vec<RamBlockReport>,
}

/// One decoded device (FULL) section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    /// Offset of the section's type byte.
    pub offset: u64,
    /// The section id.
    pub section_id: u32,
    /// The idstr.
    pub idstr: String,
    /// The instance id.
    pub instance_id: u32,
    /// The section version.
    pub version_id: u32,
    /// The decoded fields ([`VmStruct::to_json`](crate::vmstate::VmStruct::to_json)),
    /// `null` when the body was too large to decode.
    pub fields: Value,
}

/// What broke, where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportError {
    /// Byte offset of the problem.
    pub offset: u64,
    /// The error message.
    pub message: String,
    /// The idstr of the section being parsed, if any.
    pub section: Option<String>,
    /// The field path within the section (`section/field[i]/...`), when a
    /// device body did not decode.
    pub field: Option<String>,
}

/// What [`analyze_report`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnalysisReport {
    /// The records, in stream order (the file header is not listed).
    pub records: Vec<RecordReport>,
    /// The RAM summary.
    pub ram: RamReport,
    /// The device sections decoded.
    pub devices: Vec<DeviceReport>,
    /// Bytes parsed (the offset where parsing stopped).
    pub length: u64,
    /// The error that stopped parsing; `None` for an intact stream.
    pub error: Option<ReportError>,
}

impl AnalysisReport {
    /// The compact JSON text of the report.
    pub fn to_json(&self) -> String {
        // Serialising plain data (string keys only) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
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
struct Tee<R> {
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

struct ReportHandler {
    ram: RamSectionReader,
    vmdesc: Option<VmDescription>,
    skipper: Option<VmDescBodySkipper>,
    capture: Rc<RefCell<Capture>>,
    /// The section whose body is being (or was last) parsed.
    current: Option<String>,
    /// The last decoded device fields.
    decoded: Option<Value>,
    limits: DecodeLimits,
}

impl ReportHandler {
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
                self.decoded = Some(state.to_json());
                return Ok(());
            }
        }
        let (Some(vmdesc), Some(skipper)) = (&self.vmdesc, &mut self.skipper) else {
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
            .filter(|_| header.kind == SectionKind::Full)
            .map(serde_json::to_value);
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
        let Some(Ok(entry)) = entry else {
            return Ok(());
        };
        if overflow || body.len() < len {
            self.decoded = Some(Value::Null);
            return Ok(());
        }
        let mut vr = VmReader::new(&body[..len], start);
        let fields = decode_with_vmdesc(&entry, &mut vr, &self.limits)?;
        self.decoded = Some(fields.to_json());
        Ok(())
    }
}

impl<R: Read> SectionBodyHandler<Tee<R>> for ReportHandler {
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<Tee<R>>) -> crate::Result<()> {
        self.current = Some(header.idstr.clone());
        if header.idstr == RAM_IDSTR && header.instance_id == 0 {
            return self.ram.section_body(header, offset, r);
        }
        self.device_body(header, offset, r)
    }
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Start => "START",
        SectionKind::Part => "PART",
        SectionKind::End => "END",
        SectionKind::Full => "FULL",
    }
}

fn command_name(cmd: u16) -> Option<String> {
    VmCommand::try_from(cmd).ok().map(|c| format!("{c:?}"))
}

fn error_section(e: &crate::Error) -> Option<String> {
    match e {
        crate::Error::Wire(
            WireError::UnknownSection { idstr, .. }
            | WireError::DuplicateSection { idstr, .. }
            | WireError::BadSectionVersion { idstr, .. }
            | WireError::BadBody { idstr, .. },
        ) if !idstr.is_empty() => Some(idstr.clone()),
        _ => None,
    }
}

fn error_offset(e: &crate::Error, fallback: u64) -> u64 {
    match e {
        crate::Error::Wire(w) => w.offset(),
        crate::Error::VmState(v) => v.offset().unwrap_or(fallback),
        _ => fallback,
    }
}

/// Analyzes a seekable stream record by record (see the [module](self)
/// documentation). Never fails: problems, including I/O errors, end up in
/// [`AnalysisReport::error`].
pub fn analyze_report<F: Read + Seek>(f: &mut F, opts: ParserOptions) -> AnalysisReport {
    analyze_report_with_ram(f, opts, RamSectionReader::summarise())
}

/// [`analyze_report`] with the given RAM decoder: with one from
/// [`RamSectionReader::apply_to`] or [`RamSectionReader::apply_to_some`]
/// the RAM sections are loaded into its destination blocks while the
/// report is built (the report's `ram.blocks` then follow the decoder's
/// summary order: destination blocks first). An error applying a page ends
/// the report like any other damage; pages before it stay applied.
pub fn analyze_report_with_ram<F: Read + Seek>(
    f: &mut F,
    opts: ParserOptions,
    ram: RamSectionReader,
) -> AnalysisReport {
    // A trailer that does not parse is reported when the parser reaches it.
    let vmdesc = read_vmdesc_from_end(f).ok().flatten();
    let mut report = AnalysisReport::default();
    if let Err(source) = f.seek(SeekFrom::Start(0)) {
        report.error = Some(ReportError {
            offset: 0,
            message: WireError::Io { offset: 0, source }.to_string(),
            section: None,
            field: None,
        });
        return report;
    }
    let capture = Rc::new(RefCell::new(Capture::default()));
    let mut handler = ReportHandler {
        ram,
        skipper: vmdesc.as_ref().map(VmDescBodySkipper::new),
        vmdesc,
        capture: Rc::clone(&capture),
        current: None,
        decoded: None,
        limits: DecodeLimits::default(),
    };
    let tee = Tee {
        inner: BufReader::with_capacity(READ_BUFFER, f),
        capture,
    };
    let mut parser = StreamParser::from_reader(StreamReader::new(tee), opts);
    loop {
        handler.current = None;
        handler.decoded = None;
        let rec = match parser.next_record(&mut handler) {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) => {
                let offset = error_offset(&e, parser.offset());
                report.error = Some(ReportError {
                    offset,
                    message: e.to_string(),
                    section: error_section(&e).or_else(|| handler.current.clone()),
                    field: match &e {
                        crate::Error::VmState(v) => v.path().map(str::to_owned),
                        _ => None,
                    },
                });
                break;
            }
        };
        match rec {
            Record::Header { .. } => {}
            Record::Configuration { offset, config } => {
                let mut r = RecordReport::new(offset, "CONFIGURATION");
                r.machine_type = Some(config.machine_type);
                report.records.push(r);
            }
            Record::Command { offset, cmd, data } => {
                let mut r = RecordReport::new(offset, "COMMAND");
                r.command = Some(cmd);
                r.command_name = command_name(cmd);
                r.data_len = Some(data.len() as u64);
                report.records.push(r);
            }
            Record::Section {
                offset,
                header,
                body_len,
            } => {
                let mut r = RecordReport::new(offset, kind_name(header.kind));
                r.section_id = Some(header.section_id);
                r.idstr = Some(header.idstr.clone());
                r.instance_id = Some(header.instance_id);
                r.version_id = Some(header.version_id);
                r.body_len = Some(body_len);
                if let Some(fields) = handler.decoded.take() {
                    r.fields = Some(fields.clone());
                    report.devices.push(DeviceReport {
                        offset,
                        section_id: header.section_id,
                        idstr: header.idstr,
                        instance_id: header.instance_id,
                        version_id: header.version_id,
                        fields,
                    });
                }
                report.records.push(r);
            }
            Record::Eof { offset } => report.records.push(RecordReport::new(offset, "EOF")),
            Record::VmDescription { offset, description } => {
                let mut r = RecordReport::new(offset, "VMDESCRIPTION");
                r.device_count = Some(description.devices.len() as u64);
                report.records.push(r);
            }
            Record::Trailing { offset, byte } => {
                report.error = Some(ReportError {
                    offset,
                    message: format!("unexpected byte {byte:#04x} after the end of the stream at offset {offset}"),
                    section: None,
                    field: None,
                });
            }
        }
    }
    report.length = parser.offset();
    report.ram.blocks = handler
        .ram
        .into_summary()
        .blocks
        .into_iter()
        .map(|b| RamBlockReport {
            idstr: b.name,
            used_length: b.length,
            zero_pages: b.zero_pages,
            normal_pages: b.normal_pages,
        })
        .collect();
    report
}
