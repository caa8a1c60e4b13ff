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

use std::io::{Read, Seek};

use serde::Serialize;
use serde_json::Value;

use super::walk::{Bodies, Walk, read_trailer};
use crate::wire::ParserOptions;
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

/// What [`analyze`] found.
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
        report.error = Some(ReportError {
            offset: 0,
            message: e.to_string(),
            section: None,
            field: None,
        });
        return report;
    }
    let mut walk = Walk::new(f, opts, ram, trailer, Bodies::Decode);
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
                report.error = Some(ReportError {
                    offset,
                    message: e.to_string(),
                    section,
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
