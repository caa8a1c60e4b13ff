//! The VMDESCRIPTION JSON of a body, both ways.
//!
//! * [`encode_described`] encodes a body and returns its description in
//!   QEMU's schema (`migration-stream` §7): `{"vmsd_name", "version",
//!   "fields": [...], "subsections": [...]}` with one entry per field (or per
//!   array element or run, see below), each with the QEMU info `"type"` name
//!   and the `"size"` in bytes actually written for one element. Nested
//!   structs carry `"struct": {...}`. `"subsections"` appears only when one
//!   was sent. [`device_entry`] adds the section's `"name"` and
//!   `"instance_id"`.
//! * [`decode_with_vmdesc`] walks such an entry to decode a body without
//!   knowing the device: integers by the size the entry gives (signed for
//!   `int*`/`timer`), `"struct"` recursively, `"nullptr"` as the null marker,
//!   `"unused_buffer"` skipped, bitmaps as be64 words, anything else as raw
//!   bytes of `size`; subsections by name.
//!
//! Arrays follow QEMU: one entry with `"array_len"` for a whole array whose
//! elements cannot vary (no existence predicate; structs without
//! subsections or varying fields), runs of null / non-null elements for
//! optional elements, else one entry per element with `"index"`. Unlike
//! QEMU, a one-element array also gets `"array_len": 1` so that a generic
//! decode gives an array; an empty array gets no entry (nothing was
//! written). An array nested directly in an array is described as one
//! `"buffer"` per outer element.

use std::io::{Read, Write};

use serde_json::{Map, Value};

use super::codec::{DecodeLimits, NULL_MARKER};
use super::decoder::Decoder;
use super::desc::VmStateDescription;
use super::encoder;
use super::io::VmReader;
use super::value::{VmStruct, VmValue};
use super::{Problem, VmStateError};

/// Encodes like [`encode`](super::codec::encode) and also returns the body's description
/// (`{"vmsd_name", "version", "fields", "subsections"?}`).
pub fn encode_described<W: Write>(
    desc: &VmStateDescription,
    state: &mut VmStruct,
    writer: &mut W,
    start_offset: u64,
) -> Result<(u64, Value), VmStateError> {
    let (n, json) = encoder::encode_inner(desc, state, writer, start_offset, true)?;
    Ok((n, json.unwrap_or(Value::Null)))
}

/// A VMDESCRIPTION `devices[]` entry: the section's idstr and instance id
/// in front of a body description from [`encode_described`].
pub fn device_entry(idstr: &str, instance_id: u32, body: &Value) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::from(idstr));
    obj.insert("instance_id".into(), Value::from(instance_id));
    if let Value::Object(fields) = body {
        for (k, v) in fields {
            obj.insert(k.clone(), v.clone());
        }
    }
    Value::Object(obj)
}

/// Decodes a body driven by its VMDESCRIPTION entry (a `devices[]` entry or
/// a nested `"struct"` object).
pub fn decode_with_vmdesc<R: Read>(
    entry: &Value,
    reader: &mut VmReader<R>,
    limits: &DecodeLimits,
) -> Result<VmStruct, VmStateError> {
    let section = entry
        .get("name")
        .or_else(|| entry.get("vmsd_name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let mut dec = Decoder::new(reader, limits, section);
    let mut out = VmStruct::new();
    decode_generic(&mut dec, entry, &mut out)?;
    Ok(out)
}

fn bad<R: Read>(dec: &Decoder<'_, R>, reason: impl Into<String>) -> VmStateError {
    dec.err(Problem::BadVmDesc { reason: reason.into() })
}

fn decode_generic<R: Read>(dec: &mut Decoder<'_, R>, obj: &Value, target: &mut VmStruct) -> Result<(), VmStateError> {
    // Old-style (non-vmsd) sections may come without a vmsd name; such a
    // body has no subsections.
    let name = match obj.get("vmsd_name") {
        Some(v) => v.as_str().ok_or_else(|| bad(dec, "\"vmsd_name\" is not a string"))?,
        None => "",
    };
    let empty = Vec::new();
    let fields = match obj.get("fields") {
        Some(Value::Array(a)) => a,
        None => &empty,
        Some(_) => return Err(bad(dec, "\"fields\" is not an array")),
    };
    for f in fields {
        let Some(fname) = f.get("name").and_then(Value::as_str) else {
            return Err(bad(dec, "a field has no \"name\""));
        };
        let mark = dec.path.push(fname);
        let r = decode_generic_field(dec, f, fname, target);
        dec.path.pop(mark);
        r?;
    }
    let subs = match obj.get("subsections") {
        Some(Value::Array(a)) => a,
        None => &empty,
        Some(_) => return Err(bad(dec, "\"subsections\" is not an array")),
    };
    let mut next_index = 0;
    while !name.is_empty() {
        let start = dec.r.offset();
        let Some(sub_name) = dec.peek_subsection(name)? else {
            break;
        };
        let Some(index) = subs
            .iter()
            .position(|s| s.get("vmsd_name").and_then(Value::as_str).map(str::as_bytes) == Some(&sub_name))
        else {
            return Err(dec.err_at(
                start,
                Problem::UnknownSubsection {
                    name: String::from_utf8_lossy(&sub_name).into_owned(),
                },
            ));
        };
        if index < next_index {
            break;
        }
        next_index = index + 1;
        let sub = &subs[index];
        let sub_name = String::from_utf8_lossy(&sub_name).into_owned();
        dec.skip(2 + sub_name.len() as u64)?;
        let segment = sub_name
            .strip_prefix(name)
            .and_then(|s| s.strip_prefix('/'))
            .unwrap_or(&sub_name)
            .to_owned();
        let mark = dec.path.push(&segment);
        let r = (|| {
            dec.read_array::<4>()?;
            dec.enter()?;
            let r = decode_generic(dec, sub, target.subsection_entry(&sub_name));
            dec.leave();
            r
        })();
        dec.path.pop(mark);
        r?;
    }
    Ok(())
}

fn decode_generic_field<R: Read>(
    dec: &mut Decoder<'_, R>,
    f: &Value,
    fname: &str,
    target: &mut VmStruct,
) -> Result<(), VmStateError> {
    let Some(ftype) = f.get("type").and_then(Value::as_str) else {
        return Err(bad(dec, "a field has no \"type\""));
    };
    let Some(size) = f.get("size").and_then(Value::as_u64) else {
        return Err(bad(dec, "a field has no \"size\""));
    };
    if let Some(n) = f.get("array_len") {
        let Some(n) = n.as_u64() else {
            return Err(bad(dec, "\"array_len\" is not a count"));
        };
        if n > dec.limits.max_array_len {
            return Err(dec.err(Problem::OverCap {
                what: "array length".into(),
                len: n,
                cap: dec.limits.max_array_len,
            }));
        }
        let first = existing_len(target, fname);
        let mut vals = Vec::with_capacity(n.min(1024) as usize);
        for i in 0..n as usize {
            let mark = dec.path.push_index(first + i);
            let r = decode_one(dec, f, ftype, size);
            dec.path.pop(mark);
            if let Some(v) = r? {
                vals.push(v);
            }
        }
        append(target, fname, vals);
    } else if f.get("index").is_some() {
        let mark = dec.path.push_index(existing_len(target, fname));
        let r = decode_one(dec, f, ftype, size);
        dec.path.pop(mark);
        if let Some(v) = r? {
            append(target, fname, vec![v]);
        }
    } else if let Some(v) = decode_one(dec, f, ftype, size)? {
        target.set(fname, v);
    }
    Ok(())
}

/// Elements already collected for an array field being continued.
fn existing_len(target: &VmStruct, name: &str) -> usize {
    match target.fields.last() {
        Some((n, VmValue::Array(a))) if n == name => a.len(),
        _ => 0,
    }
}

/// Appends to the array field `name` when it is the last field (a run or an
/// indexed element continuing it), else starts it.
fn append(target: &mut VmStruct, name: &str, vals: Vec<VmValue>) {
    match target.fields.last_mut() {
        Some((n, VmValue::Array(a))) if n == name => a.extend(vals),
        _ => target.set(name, VmValue::Array(vals)),
    }
}

fn decode_one<R: Read>(
    dec: &mut Decoder<'_, R>,
    f: &Value,
    ftype: &str,
    size: u64,
) -> Result<Option<VmValue>, VmStateError> {
    let base = ftype.strip_suffix(" equal").unwrap_or(ftype);
    if ftype == "nullptr" || (ftype == "uint64" && size == 1) {
        let start = dec.r.offset();
        let b = dec.read_array::<1>()?[0];
        if b != NULL_MARKER {
            return Err(dec.err_at(start, Problem::BadNullMarker { found: b }));
        }
        return Ok(Some(VmValue::None));
    }
    match base {
        "unused_buffer" => {
            dec.skip(size)?;
            Ok(None)
        }
        "struct" | "vstruct" => {
            let Some(sub) = f.get("struct") else {
                return Err(bad(dec, "a struct field has no \"struct\""));
            };
            let mut s = VmStruct::new();
            dec.enter()?;
            let r = decode_generic(dec, sub, &mut s);
            dec.leave();
            r?;
            Ok(Some(VmValue::Struct(s)))
        }
        "bool" if size == 1 => Ok(Some(VmValue::Bool(dec.read_array::<1>()?[0] != 0))),
        "int8" | "int16" | "int32" | "int64" | "int32 le" | "timer" | "uint8" | "uint16" | "uint32" | "uint64"
            if matches!(size, 1 | 2 | 4 | 8) =>
        {
            let signed = base.starts_with("int") || base == "timer";
            Ok(Some(dec.read_int(size as usize, signed)?))
        }
        "bitmap" if size % 8 == 0 => {
            cap_buffer(dec, size)?;
            let mut words = Vec::with_capacity((size / 8).min(1024) as usize);
            for _ in 0..size / 8 {
                words.push(dec.read_int(8, false)?);
            }
            Ok(Some(VmValue::Array(words)))
        }
        _ => {
            cap_buffer(dec, size)?;
            Ok(Some(VmValue::Bytes(dec.read_vec(size)?)))
        }
    }
}

fn cap_buffer<R: Read>(dec: &Decoder<'_, R>, size: u64) -> Result<(), VmStateError> {
    if size > dec.limits.max_buffer {
        return Err(dec.err(Problem::OverCap {
            what: "buffer length".into(),
            len: size,
            cap: dec.limits.max_buffer,
        }));
    }
    Ok(())
}
