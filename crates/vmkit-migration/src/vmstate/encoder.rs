//! The encoder behind [`encode`](super::codec::encode) and
//! [`encode_described`](super::json::encode_described): writes a body and,
//! when asked, builds its VMDESCRIPTION entry from what was actually written.

use std::io::Write;

use serde_json::{Map, Value};

use super::codec::{NULL_MARKER, Path, SUBSECTION_MARKER, io_problem, render, subsection_segment};
use super::desc::{ArrayLen, Field, FieldKind, VmStateDescription};
use super::io::VmWriter;
use super::value::{VmStruct, VmValue};
use super::{Problem, VmStateError};

/// Encodes a body; with `describe`, also builds its VMDESCRIPTION entry.
pub(crate) fn encode_inner<W: Write>(
    desc: &VmStateDescription,
    state: &mut VmStruct,
    writer: &mut W,
    start_offset: u64,
    describe: bool,
) -> Result<(u64, Option<Value>), VmStateError> {
    let mut enc = Encoder {
        w: VmWriter::new(writer, start_offset),
        path: Path::new(&desc.name),
        section: desc.name.clone(),
        describe,
    };
    let json = enc.encode_struct(desc, state)?;
    Ok((enc.w.offset() - start_offset, json))
}

/// One encoded element, for the VMDESCRIPTION.
struct ElemInfo {
    size: u64,
    type_name: String,
    struct_json: Option<Value>,
}

struct Encoder<W: Write> {
    w: VmWriter<W>,
    path: Path,
    section: String,
    describe: bool,
}

impl<W: Write> Encoder<W> {
    fn err(&self, problem: Problem) -> VmStateError {
        VmStateError::Body {
            section: self.section.clone(),
            path: self.path.as_str().to_owned(),
            offset: self.w.offset(),
            problem,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), VmStateError> {
        self.w.write_all(bytes).map_err(|e| self.err(io_problem(&e)))
    }

    fn encode_struct(
        &mut self,
        desc: &VmStateDescription,
        state: &mut VmStruct,
    ) -> Result<Option<Value>, VmStateError> {
        if let Some(hook) = &desc.pre_save {
            hook(state).map_err(|source| {
                self.err(Problem::Hook {
                    hook: "pre_save",
                    source,
                })
            })?;
        }
        let body = self.encode_body(desc, state);
        let post = match &desc.post_save {
            Some(hook) => hook(state).map_err(|source| {
                self.err(Problem::Hook {
                    hook: "post_save",
                    source,
                })
            }),
            None => Ok(()),
        };
        let json = body?;
        post?;
        Ok(json)
    }

    fn encode_body(&mut self, desc: &VmStateDescription, state: &mut VmStruct) -> Result<Option<Value>, VmStateError> {
        let version = desc.version_id;
        let mut entries = Vec::new();
        for field in &desc.fields {
            let mark = self.path.push(&field.name);
            let r = self.encode_field(field, state, version, &mut entries);
            self.path.pop(mark);
            r?;
        }
        let mut subs_json = Vec::new();
        for sub in &desc.subsections {
            let needed = sub
                .is_needed(state)
                .map_err(|source| self.err(Problem::Hook { hook: "needed", source }))?;
            if !needed {
                continue;
            }
            let mark = self.path.push(subsection_segment(&desc.name, &sub.name));
            let r = self.encode_subsection(sub, state.subsection_entry(&sub.name));
            self.path.pop(mark);
            if let Some(j) = r? {
                subs_json.push(j);
            }
        }
        if !self.describe {
            return Ok(None);
        }
        let mut obj = Map::new();
        obj.insert("vmsd_name".into(), Value::from(desc.name.clone()));
        obj.insert("version".into(), Value::from(version));
        obj.insert("fields".into(), Value::Array(entries));
        if !subs_json.is_empty() {
            obj.insert("subsections".into(), Value::Array(subs_json));
        }
        Ok(Some(Value::Object(obj)))
    }

    fn encode_subsection(
        &mut self,
        sub: &VmStateDescription,
        state: &mut VmStruct,
    ) -> Result<Option<Value>, VmStateError> {
        let name = sub.name.as_bytes();
        let len = u8::try_from(name.len()).map_err(|_| {
            self.err(Problem::BadValue {
                value: sub.name.clone(),
                kind: "subsection name".into(),
            })
        })?;
        self.put(&[SUBSECTION_MARKER, len])?;
        self.put(name)?;
        self.put(&sub.version_id.to_be_bytes())?;
        self.encode_struct(sub, state)
    }

    /// The value of a length field of `state`.
    fn length_of(&self, state: &VmStruct, len_field: &str) -> Result<u64, VmStateError> {
        match state.get(len_field) {
            Some(v) => v.as_u64().ok_or_else(|| {
                self.err(Problem::BadLength {
                    field: len_field.to_owned(),
                    value: render(v),
                })
            }),
            None => Err(self.err(Problem::BadLength {
                field: len_field.to_owned(),
                value: "nothing".into(),
            })),
        }
    }

    fn encode_field(
        &mut self,
        field: &Field,
        state: &mut VmStruct,
        version: u32,
        entries: &mut Vec<Value>,
    ) -> Result<(), VmStateError> {
        let present = field
            .is_present(state, version)
            .map_err(|source| self.err(Problem::Hook { hook: "exists", source }))?;
        if !present {
            if field.must_exist {
                return Err(self.err(Problem::MustExist { version }));
            }
            return Ok(());
        }
        if let FieldKind::Unused { len } = field.kind {
            let zeros = [0u8; 256];
            let mut left = u64::from(len);
            while left > 0 {
                let n = left.min(256) as usize;
                self.put(&zeros[..n])?;
                left -= n as u64;
            }
            if self.describe {
                entries.push(entry(&field.name, "unused_buffer", u64::from(len), None, None));
            }
            return Ok(());
        }
        let vlen = match &field.kind {
            FieldKind::VBuffer { len_field }
            | FieldKind::Array {
                len: ArrayLen::Field(len_field),
                ..
            } => Some(self.length_of(state, len_field)?),
            _ => None,
        };
        let Some(value) = state.get_mut(&field.name) else {
            return Err(self.err(Problem::MissingValue));
        };
        match &field.kind {
            FieldKind::Array { elem, len } => {
                let infos = self.encode_items(elem, len, value, vlen)?;
                if self.describe {
                    describe_array(&field.name, field.exists.is_none(), elem, &infos, entries);
                }
            }
            kind => {
                let info = self.encode_elem(kind, value, vlen)?;
                if self.describe {
                    let type_name = field.info.as_deref().unwrap_or(&info.type_name);
                    entries.push(entry(&field.name, type_name, info.size, info.struct_json, None));
                }
            }
        }
        Ok(())
    }

    /// Encodes the elements of an array value; returns, per element,
    /// whether it was a null optional and what was written.
    fn encode_items(
        &mut self,
        elem: &FieldKind,
        len: &ArrayLen,
        value: &mut VmValue,
        vlen: Option<u64>,
    ) -> Result<Vec<(bool, ElemInfo)>, VmStateError> {
        let expected = match len {
            ArrayLen::Fixed(n) => u64::from(*n),
            ArrayLen::Field(_) => vlen.unwrap_or(0),
        };
        let VmValue::Array(items) = value else {
            return Err(self.err(Problem::BadValue {
                value: render(value),
                kind: "array".into(),
            }));
        };
        if items.len() as u64 != expected {
            return Err(self.err(Problem::LengthMismatch {
                actual: items.len() as u64,
                expected,
            }));
        }
        let mut infos = Vec::with_capacity(items.len());
        for (i, item) in items.iter_mut().enumerate() {
            let mark = self.path.push_index(i);
            let r = self.encode_elem(elem, item, None);
            self.path.pop(mark);
            infos.push((item.is_none(), r?));
        }
        Ok(infos)
    }

    fn encode_elem(
        &mut self,
        kind: &FieldKind,
        value: &mut VmValue,
        vlen: Option<u64>,
    ) -> Result<ElemInfo, VmStateError> {
        let start = self.w.offset();
        let mut type_name = kind.info_name();
        let mut struct_json = None;
        let bad = |value: &VmValue, kind: &FieldKind| Problem::BadValue {
            value: render(value),
            kind: kind.info_name(),
        };
        match kind {
            FieldKind::Bool => {
                let b = value.as_bool().ok_or_else(|| self.err(bad(value, kind)))?;
                self.put(&[u8::from(b)])?;
            }
            FieldKind::U8
            | FieldKind::U16
            | FieldKind::U32
            | FieldKind::U64
            | FieldKind::I8
            | FieldKind::I16
            | FieldKind::I32
            | FieldKind::I64
            | FieldKind::Timer => {
                let bytes = int_to_wire(kind, value).ok_or_else(|| self.err(bad(value, kind)))?;
                self.put(&bytes)?;
            }
            FieldKind::Buffer { .. } | FieldKind::VBuffer { .. } => {
                let expected = match kind {
                    FieldKind::Buffer { len } => u64::from(*len),
                    _ => vlen.unwrap_or(0),
                };
                let bytes = value.as_bytes().ok_or_else(|| self.err(bad(value, kind)))?;
                if bytes.len() as u64 != expected {
                    return Err(self.err(Problem::LengthMismatch {
                        actual: bytes.len() as u64,
                        expected,
                    }));
                }
                self.w.write_all(bytes).map_err(|e| self.err(io_problem(&e)))?;
            }
            FieldKind::Unused { len } => {
                self.put(&vec![0u8; *len as usize])?;
            }
            FieldKind::Array { elem, len } => {
                self.encode_items(elem, len, value, vlen)?;
                // A nested array is described as one opaque buffer.
                type_name = "buffer".into();
            }
            FieldKind::Struct(desc) => {
                let VmValue::Struct(s) = value else {
                    return Err(self.err(bad(value, kind)));
                };
                struct_json = self.encode_struct(desc, s)?;
            }
            FieldKind::Optional(inner) => {
                if value.is_none() {
                    self.put(&[NULL_MARKER])?;
                    type_name = "nullptr".into();
                } else {
                    let info = self.encode_elem(inner, value, vlen)?;
                    type_name = info.type_name;
                    struct_json = info.struct_json;
                }
            }
            FieldKind::Bitmap { nbits } => {
                let words = u64::from(*nbits).div_ceil(64);
                let VmValue::Array(items) = value else {
                    return Err(self.err(bad(value, kind)));
                };
                if items.len() as u64 != words {
                    return Err(self.err(Problem::LengthMismatch {
                        actual: items.len() as u64,
                        expected: words,
                    }));
                }
                for (i, item) in items.iter().enumerate() {
                    let Some(w) = item.as_u64() else {
                        let mark = self.path.push_index(i);
                        let e = self.err(bad(item, &FieldKind::U64));
                        self.path.pop(mark);
                        return Err(e);
                    };
                    self.put(&w.to_be_bytes())?;
                }
            }
            FieldKind::Equal(inner) => {
                self.encode_elem(inner, value, None)?;
            }
        }
        Ok(ElemInfo {
            size: self.w.offset() - start,
            type_name,
            struct_json,
        })
    }
}

/// One VMDESCRIPTION field entry.
fn entry(name: &str, type_name: &str, size: u64, struct_json: Option<Value>, array: Option<(&str, u64)>) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::from(name));
    if let Some((key, n)) = array {
        obj.insert(key.into(), Value::from(n));
    }
    obj.insert("type".into(), Value::from(type_name));
    if let Some(s) = struct_json {
        obj.insert("struct".into(), s);
    }
    obj.insert("size".into(), Value::from(size));
    Value::Object(obj)
}

/// Whether elements of `kind` can share one compressed array entry
/// (QEMU's `vmsd_can_compress`).
fn kind_compressible(kind: &FieldKind) -> bool {
    match kind {
        // Fields whose size depends on the state vary from element to
        // element, so their struct cannot share one entry.
        FieldKind::Struct(d) => {
            d.subsections.is_empty()
                && d.fields.iter().all(|f| {
                    f.exists.is_none()
                        && !matches!(
                            f.kind,
                            FieldKind::VBuffer { .. }
                                | FieldKind::Array {
                                    len: ArrayLen::Field(_),
                                    ..
                                }
                        )
                        && kind_compressible(&f.kind)
                })
        }
        FieldKind::Optional(_) => false,
        FieldKind::Array { elem, .. } => kind_compressible(elem),
        _ => true,
    }
}

/// The entries of an array field: one compressed entry, runs of null /
/// non-null elements for optional elements, or one entry per element.
fn describe_array(name: &str, no_exists: bool, elem: &FieldKind, infos: &[(bool, ElemInfo)], entries: &mut Vec<Value>) {
    let inner = match elem {
        FieldKind::Optional(inner) => Some(inner.as_ref()),
        _ => None,
    };
    let compress = |k: &FieldKind| no_exists && kind_compressible(k);
    let mut i = 0;
    while i < infos.len() {
        let null = infos[i].0;
        let run_end = if inner.is_some() {
            infos[i..]
                .iter()
                .position(|(n, _)| *n != null)
                .map_or(infos.len(), |p| i + p)
        } else {
            infos.len()
        };
        let can_compress = if null { true } else { compress(inner.unwrap_or(elem)) };
        if can_compress {
            let info = &infos[i].1;
            entries.push(entry(
                name,
                &info.type_name,
                info.size,
                info.struct_json.clone(),
                Some(("array_len", (run_end - i) as u64)),
            ));
        } else {
            for (k, (_, info)) in infos.iter().enumerate().take(run_end).skip(i) {
                entries.push(entry(
                    name,
                    &info.type_name,
                    info.size,
                    info.struct_json.clone(),
                    Some(("index", k as u64)),
                ));
            }
        }
        i = run_end;
    }
}

/// The big-endian bytes of an integer value for an integer kind, if it fits.
fn int_to_wire(kind: &FieldKind, value: &VmValue) -> Option<Vec<u8>> {
    let (width, signed) = kind.int_width()?;
    let v = value.as_i128()?;
    let bits = 8 * width as u32;
    let (lo, hi) = if signed {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if v < lo || v > hi {
        return None;
    }
    let all = (v as u128).to_be_bytes();
    Some(all[16 - width..].to_vec())
}
