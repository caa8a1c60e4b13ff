//! What a restore does with the parts of a stream this machine does not
//! model, when asked to take them ([`Unmodelled::Report`]): a real QEMU's
//! firmware RAM blocks (`pc.bios`, `pc.rom`, `/rom@etc/...`) and the
//! sections of its devices.
//!
//! A RAM block is easy: its pages are framed, so they are decoded and
//! dropped as they come. A device body has no framing; only the
//! VMDESCRIPTION trailer, which comes after EOF, says how it is laid out.
//! So at the first such section the rest of the stream is read into
//! memory (at most [`MAX_UNMODELLED_TAIL`] bytes; in a precopy stream the
//! device sections come after RAM, and are small), the trailer is taken
//! from its end, and each unmodelled body is then checked against its
//! trailer entry ([`VmDescBodySkipper`]) and decoded by it, generically, as
//! the analyzer does. Parsing goes on from the buffered bytes, so the
//! stream is still read once, front to back, with every check it had.

use std::io::{Cursor, Read};

use serde::Serialize;
use serde_json::Value;

use crate::vmstate::{DecodeLimits, VmReader, decode_with_vmdesc};
use crate::wire::{
    Lookahead, RamBlockSummary, SectionHeader, SectionKind, StreamReader, TrailerBudget, VmDescBodySkipper,
    VmDescDevice, VmDescription, WireError, read_vmdesc_from_end_within,
};

/// What [`restore`](super::restore) does with what this machine does not model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unmodelled {
    /// A RAM block or device section this machine lacks fails the
    /// restore, as QEMU's loader fails ("Unknown savevm section").
    #[default]
    Refuse,
    /// Such RAM blocks are decoded and dropped, such device sections
    /// decoded by the stream's VMDESCRIPTION trailer, and both are listed
    /// in [`RestoreStats::unmodelled`](super::RestoreStats::unmodelled).
    Report,
}

/// Most bytes held in memory from the first unmodelled device section to
/// the end of the stream (where the trailer is).
pub const MAX_UNMODELLED_TAIL: u64 = 16 << 20;

/// A RAM block of the stream that this machine does not have: its pages
/// were decoded and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnmodelledBlock {
    /// The block name (e.g. `pc.bios`).
    pub name: String,
    /// Its length, from the MEM_SIZE list.
    pub length: u64,
    /// Zero-page records.
    pub zero_pages: u64,
    /// Raw-page records.
    pub normal_pages: u64,
}

impl From<RamBlockSummary> for UnmodelledBlock {
    fn from(b: RamBlockSummary) -> UnmodelledBlock {
        UnmodelledBlock {
            name: b.name,
            length: b.length,
            zero_pages: b.zero_pages,
            normal_pages: b.normal_pages,
        }
    }
}

/// A device section of the stream that no device of this machine takes:
/// decoded by its VMDESCRIPTION entry, and otherwise dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnmodelledSection {
    /// Offset of the section's type byte.
    pub offset: u64,
    /// The section id.
    pub section_id: u32,
    /// The section idstr.
    pub idstr: String,
    /// The instance id.
    pub instance_id: u32,
    /// The section version.
    pub version_id: u32,
    /// The vmsd name the trailer gives.
    pub vmsd_name: String,
    /// Body bytes.
    pub size: u64,
    /// The decoded fields ([`VmStruct::to_json`](crate::vmstate::VmStruct::to_json)).
    pub fields: Value,
}

/// What a restore took without modelling it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnmodelledReport {
    /// RAM blocks, in MEM_SIZE order.
    pub ram_blocks: Vec<UnmodelledBlock>,
    /// Device sections, in stream order.
    pub sections: Vec<UnmodelledSection>,
}

impl UnmodelledReport {
    /// Whether nothing was left unmodelled.
    pub fn is_empty(&self) -> bool {
        self.ram_blocks.is_empty() && self.sections.is_empty()
    }
}

/// Decodes the body of a FULL section by its trailer entry `device`:
/// `body` is exactly the body, whose first byte is at stream offset
/// `start`. The analyzer and the restore both decode this way.
pub(crate) fn decode_by_trailer(
    device: &VmDescDevice,
    body: &[u8],
    start: u64,
    limits: &DecodeLimits,
) -> crate::Result<Value> {
    let entry = serde_json::to_value(device).map_err(|e| WireError::BadJson {
        offset: start,
        reason: format!("description of '{}': {e}", device.name),
    })?;
    let mut r = VmReader::new(body, start);
    Ok(decode_with_vmdesc(&entry, &mut r, limits)?.to_json())
}

/// The unmodelled device sections of one restore (see the [module](self)
/// documentation).
#[derive(Debug, Default)]
pub(crate) struct UnmodelledSections {
    /// The trailer and a skipper by it, once read.
    trailer: Option<(VmDescription, VmDescBodySkipper)>,
    pub(crate) sections: Vec<UnmodelledSection>,
}

impl UnmodelledSections {
    /// Consumes, checks and decodes the body of `header` (at `offset`),
    /// which no device of this machine takes.
    pub(crate) fn section_body<R: Read>(
        &mut self,
        header: &SectionHeader,
        offset: u64,
        r: &mut StreamReader<Lookahead<R>>,
        limits: &DecodeLimits,
    ) -> crate::Result<()> {
        let refuse = |reason: String| WireError::BadBody {
            offset,
            idstr: header.idstr.clone(),
            reason,
        };
        if header.kind != SectionKind::Full {
            // A live handler's chunks are described by nothing.
            return Err(WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            }
            .into());
        }
        if self.trailer.is_none() {
            self.trailer = Some(read_trailer(r).map_err(&refuse)?);
        }
        let Some((desc, skipper)) = &mut self.trailer else {
            return Ok(());
        };
        let device = desc.device(&header.idstr, header.instance_id).ok_or_else(|| {
            refuse("this machine does not model it, and the VMDESCRIPTION trailer does not describe it".into())
        })?;
        let start = r.offset();
        skipper.skip_body(header, offset, r)?;
        let end = r.offset();
        let body = r
            .read_ahead_bytes(start, end)
            .ok_or_else(|| refuse("internal: the body was not read ahead".into()))?;
        let fields = decode_by_trailer(device, body, start, limits)?;
        self.sections.push(UnmodelledSection {
            offset,
            section_id: header.section_id,
            idstr: header.idstr.clone(),
            instance_id: header.instance_id,
            version_id: header.version_id,
            vmsd_name: device.vmsd_name.clone(),
            size: end - start,
            fields,
        });
        Ok(())
    }
}

/// Reads the rest of the stream ahead and takes the trailer from its end;
/// the error is the reason the section cannot be decoded.
fn read_trailer<R: Read>(r: &mut StreamReader<Lookahead<R>>) -> Result<(VmDescription, VmDescBodySkipper), String> {
    let start = r.offset();
    let tail = match r.read_ahead_to_end(MAX_UNMODELLED_TAIL, "stream after an unmodelled device section") {
        Ok(tail) => tail,
        Err(WireError::BadLength { max, .. }) => {
            return Err(format!(
                "this machine does not model it, and the VMDESCRIPTION trailer that describes it is more than \
                 {max} bytes further on"
            ));
        }
        Err(e) => return Err(format!("this machine does not model it, and reading on failed: {e}")),
    };
    match read_vmdesc_from_end_within(&mut Cursor::new(tail), &TrailerBudget::default()) {
        Ok(Some(desc)) => {
            let skipper = VmDescBodySkipper::new(&desc);
            Ok((desc, skipper))
        }
        Ok(None) => Err(
            "this machine does not model it, and the stream has no VMDESCRIPTION trailer to decode it by \
             (cut short, or sent with suppress-vmdesc)"
                .into(),
        ),
        Err(e) => Err(format!(
            "this machine does not model it, and the VMDESCRIPTION trailer to decode it by is bad ({e}; offsets \
             counted from {start})"
        )),
    }
}
