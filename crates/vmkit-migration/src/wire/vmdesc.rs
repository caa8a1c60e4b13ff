//! The VMDESCRIPTION trailer (`0x06` + be32 length + compact JSON) and
//! QEMU's JSON schema for it.

use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use super::format::{MAX_VMDESC_LEN, RecordType};
use super::{StreamReader, StreamWriter, WireError, WireResult};

/// The whole description: `{"configuration":…, "page_size":N, "devices":[…]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescription {
    /// The configuration vmsd, when the configuration record was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<VmDescStruct>,
    /// The target page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
    /// FULL-section devices, in stream order.
    #[serde(default)]
    pub devices: Vec<VmDescDevice>,
}

/// One device (FULL section) of the description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescDevice {
    /// The section idstr.
    pub name: String,
    /// The section instance id.
    pub instance_id: u32,
    /// The vmsd name.
    pub vmsd_name: String,
    /// The vmsd version written.
    pub version: u32,
    /// Old-style (non-vmsd) handlers: the body size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The fields, in wire order.
    #[serde(default)]
    pub fields: Vec<VmDescField>,
    /// Subsections actually sent, in wire order (key omitted when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsections: Vec<VmDescStruct>,
}

/// A nested vmsd: a struct field's element or a subsection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescStruct {
    /// The vmsd name.
    pub vmsd_name: String,
    /// The vmsd version.
    pub version: u32,
    /// The fields, in wire order.
    #[serde(default)]
    pub fields: Vec<VmDescField>,
    /// Subsections actually sent, in wire order (key omitted when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsections: Vec<VmDescStruct>,
}

/// One field (or run of array elements) of a vmsd body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDescField {
    /// The field name (`f`, or `f[k]` when a name repeats).
    pub name: String,
    /// Compressed arrays: how many elements this entry describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_len: Option<u64>,
    /// Uncompressed arrays: this element's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The VMStateInfo name, or `struct` / `vstruct`.
    #[serde(rename = "type")]
    pub field_type: String,
    /// For `struct`/`vstruct`: the nested vmsd.
    #[serde(rename = "struct", default, skip_serializing_if = "Option::is_none")]
    pub nested: Option<Box<VmDescStruct>>,
    /// Bytes written for one element.
    pub size: u64,
}

impl VmDescription {
    /// The compact JSON text.
    pub fn to_json(&self) -> WireResult<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| WireError::BadJson {
            offset: 0,
            reason: e.to_string(),
        })
    }

    /// Parses JSON text that starts at stream offset `offset` (for errors).
    pub fn from_json(json: &[u8], offset: u64) -> WireResult<VmDescription> {
        serde_json::from_slice(json).map_err(|e| WireError::BadJson {
            offset,
            reason: e.to_string(),
        })
    }

    /// Writes the trailer: `0x06`, be32 length, JSON.
    pub fn write<W: Write>(&self, w: &mut StreamWriter<W>) -> WireResult<()> {
        let json = self.to_json()?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|&l| u64::from(l) <= MAX_VMDESC_LEN)
            .ok_or_else(|| WireError::BadLength {
                offset: w.offset(),
                what: "VMDESCRIPTION JSON".into(),
                len: json.len() as u64,
                max: MAX_VMDESC_LEN,
            })?;
        w.put_u8(RecordType::VmDescription as u8)?;
        w.put_be32(len)?;
        w.put_bytes(&json)
    }

    /// Reads the trailer after its `0x06` byte: be32 length (capped at
    /// [`MAX_VMDESC_LEN`]) and the JSON.
    pub fn read_body<R: Read>(r: &mut StreamReader<R>) -> WireResult<VmDescription> {
        let len = r.read_be32("VMDESCRIPTION length")?;
        let at = r.offset();
        let json = r.read_bytes(u64::from(len), MAX_VMDESC_LEN, "VMDESCRIPTION JSON")?;
        VmDescription::from_json(&json, at)
    }

    /// Checks that everything the description describes, over all its
    /// devices, keeps within `budget`; `offset` (of the JSON) is for the
    /// error, [`WireError::TrailerTooLarge`]. Stops as soon as the budget
    /// is spent, so a description whose counts multiply to astronomical
    /// numbers costs no more than one that just exceeds it.
    pub fn check_budget(&self, budget: &TrailerBudget, offset: u64) -> WireResult<()> {
        let mut tally = Tally {
            budget,
            offset,
            elements: 0,
            bytes: 0,
        };
        if let Some(config) = &self.configuration {
            tally.add_struct(config, 1)?;
        }
        for d in &self.devices {
            tally.add_elements(1)?;
            if d.fields.is_empty() {
                tally.add_bytes(d.size.unwrap_or(0))?;
            }
            tally.add_fields(&d.fields, &d.subsections, 1)?;
        }
        Ok(())
    }

    /// The device for a FULL section.
    pub fn device(&self, idstr: &str, instance_id: u32) -> Option<&VmDescDevice> {
        self.devices
            .iter()
            .find(|d| d.name == idstr && d.instance_id == instance_id)
    }
}

/// What one trailer may describe in total, over all its devices.
///
/// Arrays are capped one by one where they are decoded; a trailer can still
/// nest capped arrays in capped arrays (their counts multiply) or list many
/// of them side by side (their counts add up), and decoding what it
/// describes would then take gigabytes. The budget caps the totals:
/// *elements* count every field entry times its `array_len`, multiplied
/// through nested structs, plus devices and subsections; *bytes* count each
/// leaf element's `size` (and old-style devices' body size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerBudget {
    /// Most elements a trailer may describe.
    pub max_elements: u64,
    /// Most bytes of device state a trailer may describe.
    pub max_bytes: u64,
}

impl Default for TrailerBudget {
    /// 1 Mi elements and 1 GiB: far above what a machine's device state
    /// takes (RAM is not in the trailer), far below what exhausts memory.
    fn default() -> TrailerBudget {
        TrailerBudget {
            max_elements: 1 << 20,
            max_bytes: 1 << 30,
        }
    }
}

/// The running totals of [`VmDescription::check_budget`].
struct Tally<'a> {
    budget: &'a TrailerBudget,
    offset: u64,
    elements: u64,
    bytes: u64,
}

impl Tally<'_> {
    fn add_elements(&mut self, n: u64) -> WireResult<()> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > self.budget.max_elements {
            return Err(WireError::TrailerTooLarge {
                offset: self.offset,
                what: "elements",
                limit: self.budget.max_elements,
            });
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: u64) -> WireResult<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.budget.max_bytes {
            return Err(WireError::TrailerTooLarge {
                offset: self.offset,
                what: "bytes of device state",
                limit: self.budget.max_bytes,
            });
        }
        Ok(())
    }

    fn add_struct(&mut self, s: &VmDescStruct, times: u64) -> WireResult<()> {
        self.add_fields(&s.fields, &s.subsections, times)
    }

    /// Adds `times` copies of a struct body: its fields, then its subsections.
    fn add_fields(&mut self, fields: &[VmDescField], subsections: &[VmDescStruct], times: u64) -> WireResult<()> {
        for f in fields {
            let n = times.saturating_mul(f.array_len.unwrap_or(1));
            self.add_elements(n)?;
            match &f.nested {
                Some(nested) => self.add_struct(nested, n)?,
                None => self.add_bytes(n.saturating_mul(f.size))?,
            }
        }
        for sub in subsections {
            self.add_elements(times)?;
            self.add_struct(sub, times)?;
        }
        Ok(())
    }
}

/// Where the trailer sits in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmDescLocation {
    /// Offset of the `0x06` byte.
    pub offset: u64,
    /// The JSON length.
    pub json_len: u32,
}

const SCAN_CHUNK: u64 = 64 << 10;

/// Finds the VMDESCRIPTION trailer at the end of a seekable stream.
///
/// The trailer is the last thing in the file: `00` (EOF) `06` `len:be32`
/// JSON, where JSON is exactly the `len` bytes up to the end of the file.
/// Compact JSON never contains a raw `0x06` byte (control characters must
/// be escaped inside strings, and UTF-8 continuation bytes are ≥ 0x80), so
/// scanning backwards from the end, the trailer's `0x06` is among the first
/// five `0x06` bytes found (the four length bytes may hold others). Each
/// candidate `p` is verified: `be32 at p+1 == end - p - 5`, the byte at
/// `p+5` is `{`, and the byte before `p` is `00` (EOF). At most
/// [`MAX_VMDESC_LEN`] + 5 bytes are scanned, in 64 KiB chunks. `Ok(None)`
/// means no trailer (a stream with `suppress_vmdesc`, or a truncated file).
pub fn locate_vmdesc<F: Read + Seek>(f: &mut F) -> WireResult<Option<VmDescLocation>> {
    let io = |offset: u64| move |source| WireError::Io { offset, source };
    let end = f.seek(SeekFrom::End(0)).map_err(io(0))?;
    let floor = end.saturating_sub(MAX_VMDESC_LEN + 5);
    let mut candidates = 0;
    let mut hi = end;
    let mut chunk = vec![0u8; SCAN_CHUNK as usize];
    while hi > floor && candidates < 5 {
        let lo = hi.saturating_sub(SCAN_CHUNK).max(floor);
        let n = (hi - lo) as usize;
        let buf = &mut chunk[..n];
        f.seek(SeekFrom::Start(lo)).map_err(io(lo))?;
        f.read_exact(buf).map_err(io(lo))?;
        for i in (0..n).rev() {
            if buf[i] != RecordType::VmDescription as u8 {
                continue;
            }
            candidates += 1;
            let p = lo + i as u64;
            if let Some(loc) = check_candidate(f, p, end)? {
                return Ok(Some(loc));
            }
            if candidates >= 5 {
                break;
            }
        }
        hi = lo;
    }
    Ok(None)
}

fn check_candidate<F: Read + Seek>(f: &mut F, p: u64, end: u64) -> WireResult<Option<VmDescLocation>> {
    if p == 0 || end - p < 6 {
        return Ok(None);
    }
    let mut b = [0u8; 7];
    f.seek(SeekFrom::Start(p - 1))
        .and_then(|_| f.read_exact(&mut b))
        .map_err(|source| WireError::Io { offset: p - 1, source })?;
    let len = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    if b[0] == RecordType::Eof as u8 && u64::from(len) == end - p - 5 && b[6] == b'{' {
        return Ok(Some(VmDescLocation {
            offset: p,
            json_len: len,
        }));
    }
    Ok(None)
}

/// Locates ([`locate_vmdesc`]) and parses the trailer of a seekable stream.
pub fn read_vmdesc_from_end<F: Read + Seek>(f: &mut F) -> WireResult<Option<VmDescription>> {
    Ok(read_located_vmdesc(f)?.map(|(desc, _)| desc))
}

/// [`read_vmdesc_from_end`] within `budget` ([`VmDescription::check_budget`]):
/// for callers that do work per element described (decoding device bodies
/// by the trailer), where the trailer, not the stream, says how much.
pub fn read_vmdesc_from_end_within<F: Read + Seek>(
    f: &mut F,
    budget: &TrailerBudget,
) -> WireResult<Option<VmDescription>> {
    let Some((desc, json_at)) = read_located_vmdesc(f)? else {
        return Ok(None);
    };
    desc.check_budget(budget, json_at)?;
    Ok(Some(desc))
}

/// The trailer at the end of `f` and the offset of its JSON.
fn read_located_vmdesc<F: Read + Seek>(f: &mut F) -> WireResult<Option<(VmDescription, u64)>> {
    let Some(loc) = locate_vmdesc(f)? else {
        return Ok(None);
    };
    let at = loc.offset + 1;
    f.seek(SeekFrom::Start(at))
        .map_err(|source| WireError::Io { offset: at, source })?;
    let mut r = StreamReader::with_offset(f, at);
    let desc = VmDescription::read_body(&mut r)?;
    // The JSON follows the be32 length.
    Ok(Some((desc, at + 4)))
}
