//! [`analyze`]: the record-by-record analysis behind `vmkit analyze`.
//!
//! Unlike [`summarize`](super::summarize), which only counts, the report lists
//! every record with its offset, the RAM blocks seen, and the fields of each
//! device (FULL) section decoded generically from the VMDESCRIPTION trailer
//! ([`decode_with_vmdesc`](crate::vmstate::decode_with_vmdesc)), or — for a
//! section the trailer does not describe (no trailer: a cut file,
//! `suppress-vmdesc`) — by a known VMState
//! ([`known_vmstate`](crate::savevm::known_vmstate)). Both come from the
//! same [`Walk`]. A damaged stream is not an `Err`: the report
//! keeps the records parsed before the damage and says what broke, where,
//! and in which section, naming the first record that could not be parsed
//! by its type and offset. Without a trailer (a cut file) a device section
//! no known VMState describes is still listed, framed by its footer, its
//! fields undecoded; the trailer's absence is then the report's error
//! ("VMDESCRIPTION trailer missing"), as is a trailer that does not read
//! ("VMDESCRIPTION trailer damaged at offset N: …").
//!
//! Serialised with `serde_json`, the report is the documented JSON object:
//!
//! ```text
//! {"machine_type": null | "pc-q35-9.2", "page_size": 4096, "trailer": "present" | "missing" | "damaged",
//!  "records": [{"offset", "type", "section_id", "idstr", "instance_id", "version_id", ...}],
//!  "ram": {"blocks": [{"idstr", "used_length", "zero_pages", "normal_pages"}]},
//!  "devices": [{"offset", "section_id", "idstr", "instance_id", "version_id", "fields"}],
//!  "length": N,
//!  "error": null | {"offset", "message", "section", "field", "record", "record_offset", "summary"}}
//! ```

use std::io::{Read, Seek};

use serde::Serialize;
use serde_json::Value;

use super::walk::{Bodies, Walk, read_trailer};
use crate::wire::ParserOptions;
use crate::wire::format::TARGET_PAGE_SIZE;
use crate::wire::{RamSectionReader, Record, SectionKind, VmCommand, WireError};

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
    /// Device sections nothing described (no trailer, no known VMState):
    /// `true`, the body found by looking for the section's footer and not
    /// decoded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub framed_by_footer: bool,
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
            framed_by_footer: false,
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
    /// The type of the first record that could not be parsed (`FULL`,
    /// `VMDESCRIPTION`, `header`, ...), when its first byte says;
    /// `None` for bytes that start no known record.
    pub record: Option<&'static str>,
    /// Offset of that record's first byte (for a missing trailer: where it
    /// should have started).
    pub record_offset: u64,
    /// The whole problem in one line, for a person.
    pub summary: String,
}

impl ReportError {
    /// The error for the record starting at `record_offset`.
    fn at_record(
        record: Option<&'static str>,
        record_offset: u64,
        offset: u64,
        message: String,
        section: Option<String>,
        field: Option<String>,
    ) -> ReportError {
        let summary = match record {
            Some("VMDESCRIPTION") => format!("VMDESCRIPTION trailer damaged at offset {record_offset}: {message}"),
            Some("header") => format!("cannot parse the file header at offset {record_offset}: {message}"),
            kind => {
                let kind = kind.map(|k| format!("{k} ")).unwrap_or_default();
                let in_section = section
                    .as_ref()
                    .map(|s| format!(" (section '{s}')"))
                    .unwrap_or_default();
                let in_field = field.as_ref().map(|f| format!(", field '{f}'")).unwrap_or_default();
                format!("cannot parse record {kind}at offset {record_offset}{in_section}: {message}{in_field}")
            }
        };
        ReportError {
            offset,
            message,
            section,
            field,
            record,
            record_offset,
            summary,
        }
    }
}

/// What [`analyze`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisReport {
    /// The machine type the configuration record names, if one was read.
    pub machine_type: Option<String>,
    /// The target page size RAM pages are sent in: `1 << target-page-bits`
    /// when the configuration record sends them, else the trailer's
    /// `page_size`, else QEMU's x86 target page size, 4096.
    pub page_size: u64,
    /// The VMDESCRIPTION trailer at the end of the file: `present` (read),
    /// `missing` (none there: a cut file or `suppress-vmdesc`) or
    /// `damaged` (there but not readable).
    pub trailer: &'static str,
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

impl Default for AnalysisReport {
    fn default() -> AnalysisReport {
        AnalysisReport {
            machine_type: None,
            page_size: TARGET_PAGE_SIZE,
            trailer: "missing",
            records: Vec::new(),
            ram: RamReport::default(),
            devices: Vec::new(),
            length: 0,
            error: None,
        }
    }
}

impl AnalysisReport {
    /// The compact JSON text of the report.
    pub fn to_json(&self) -> String {
        // Serialising plain data (string keys only) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
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

/// What is wrong with the trailer of a stream parsed to its end without
/// error: it did not read (and no section reported it), or it is missing
/// while sections had to be framed by their footers for want of it.
fn trailer_problem<R: Read>(walk: &Walk<R>, report: &AnalysisReport, eof_end: Option<u64>) -> Option<ReportError> {
    let trailer_at = report
        .records
        .iter()
        .find(|r| r.record_type == "VMDESCRIPTION")
        .map(|r| r.offset);
    if let Some(e) = walk.trailer_error() {
        let at = trailer_at.or(eof_end).unwrap_or_else(|| e.offset());
        return Some(ReportError::at_record(
            Some("VMDESCRIPTION"),
            at,
            e.offset(),
            e.to_string(),
            None,
            None,
        ));
    }
    let undecoded = report.records.iter().any(|r| r.framed_by_footer);
    match eof_end {
        Some(end) if undecoded && !walk.has_trailer() && trailer_at.is_none() => {
            let message = format!(
                "VMDESCRIPTION trailer missing: the stream ends at offset {end}, after its EOF record, so device \
                 sections no known VMState describes are listed undecoded"
            );
            Some(ReportError {
                offset: end,
                summary: message.clone(),
                message,
                section: None,
                field: None,
                record: Some("VMDESCRIPTION"),
                record_offset: end,
            })
        }
        _ => None,
    }
}

/// Analyzes a seekable stream record by record (see the [module](self)
/// documentation). Never fails: problems, including I/O errors, end up in
/// [`AnalysisReport::error`].
pub fn analyze<F: Read + Seek>(f: &mut F, opts: ParserOptions) -> AnalysisReport {
    analyze_with_ram(f, opts, RamSectionReader::summarise())
}

/// [`analyze`] with the given RAM decoder: with one from
/// [`RamSectionReader::apply_to`] or [`RamSectionReader::apply_to_some`]
/// the RAM sections are loaded into its destination blocks while the
/// report is built (the report's `ram.blocks` then follow the decoder's
/// summary order: destination blocks first). An error applying a page ends
/// the report like any other damage; pages before it stay applied.
pub fn analyze_with_ram<F: Read + Seek>(f: &mut F, opts: ParserOptions, ram: RamSectionReader) -> AnalysisReport {
    // A trailer that does not read is reported by the first device section
    // that needs it, or when the parser reaches it.
    let (trailer, rewound) = read_trailer(f);
    let mut report = AnalysisReport::default();
    if let Err(e) = rewound {
        report.error = Some(ReportError::at_record(None, 0, 0, e.to_string(), None, None));
        return report;
    }
    report.trailer = match &trailer {
        Ok(Some(d)) => {
            if let Some(size) = d.page_size {
                report.page_size = size;
            }
            "present"
        }
        Ok(None) => "missing",
        Err(_) => "damaged",
    };
    let mut walk = Walk::new(f, opts, ram, trailer, Bodies::Decode);
    let mut eof_end = None;
    loop {
        let (rec, decoded) = match walk.next() {
            Ok(Some(step)) => (step.record, step.fields),
            Ok(None) => break,
            Err(e) => {
                let offset = error_offset(&e, walk.offset());
                let section = match &e {
                    // The trailer's own fault, not the section's that needed it.
                    crate::Error::Wire(WireError::BadJson { .. } | WireError::TrailerTooLarge { .. }) => None,
                    _ => error_section(&e).or_else(|| walk.current_section().map(str::to_owned)),
                };
                let field = match &e {
                    crate::Error::VmState(v) => v.path().map(str::to_owned),
                    _ => None,
                };
                let start = walk.record_start();
                if start.kind == Some("VMDESCRIPTION") {
                    report.trailer = "damaged";
                }
                report.error = Some(ReportError::at_record(
                    start.kind,
                    start.offset,
                    offset,
                    e.to_string(),
                    section,
                    field,
                ));
                break;
            }
        };
        match rec {
            Record::Header { .. } => {}
            Record::Configuration { offset, config } => {
                let mut r = RecordReport::new(offset, "CONFIGURATION");
                if let Some(bits) = config.target_page_bits.filter(|&b| b < 64) {
                    report.page_size = 1 << bits;
                }
                report.machine_type = Some(config.machine_type.clone());
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
                r.framed_by_footer = walk.footer_framed();
                if let Some(fields) = decoded {
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
            Record::Eof { offset } => {
                eof_end = Some(offset + 1);
                report.records.push(RecordReport::new(offset, "EOF"));
            }
            Record::VmDescription { offset, description } => {
                let mut r = RecordReport::new(offset, "VMDESCRIPTION");
                r.device_count = Some(description.devices.len() as u64);
                report.records.push(r);
            }
            Record::Trailing { offset, byte } => {
                report.error = Some(ReportError::at_record(
                    None,
                    offset,
                    offset,
                    format!("unexpected byte {byte:#04x} after the end of the stream at offset {offset}"),
                    None,
                    None,
                ));
            }
        }
    }
    if report.error.is_none() {
        report.error = trailer_problem(&walk, &report, eof_end);
    }
    report.length = walk.offset();
    let (ram, _) = walk.finish();
    report.ram.blocks = ram
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
