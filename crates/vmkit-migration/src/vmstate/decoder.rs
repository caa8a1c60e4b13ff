//! The decoder behind [`decode_into`](super::codec::decode_into): reads a
//! body into a state with every length capped and every error placed.

use std::io::Read;

use super::codec::{DecodeLimits, NULL_MARKER, Path, SUBSECTION_MARKER, io_problem, render, subsection_segment};
use super::desc::{ArrayLen, Field, FieldKind, VmStateDescription};
use super::io::VmReader;
use super::value::{VmStruct, VmValue};
use super::{Problem, VmStateError};

/// Decodes `bytes` (big-endian) as an integer of the given signedness.
pub(crate) fn int_from_wire(bytes: &[u8], signed: bool) -> VmValue {
    let mut raw: u64 = 0;
    for &b in bytes {
        raw = (raw << 8) | u64::from(b);
    }
    if signed {
        let shift = 64 - 8 * bytes.len() as u32;
        VmValue::Int(((raw << shift) as i64) >> shift)
    } else {
        VmValue::UInt(raw)
    }
}

pub(crate) struct Decoder<'a, R: Read> {
    pub(crate) r: &'a mut VmReader<R>,
    pub(crate) limits: &'a DecodeLimits,
    pub(crate) section: String,
    pub(crate) path: Path,
    pub(crate) depth: u32,
}

impl<'a, R: Read> Decoder<'a, R> {
    pub(crate) fn new(r: &'a mut VmReader<R>, limits: &'a DecodeLimits, section: &str) -> Self {
        Decoder {
            r,
            limits,
            section: section.to_owned(),
            path: Path::new(section),
            depth: 0,
        }
    }

    pub(crate) fn err_at(&self, offset: u64, problem: Problem) -> VmStateError {
        VmStateError::Body {
            section: self.section.clone(),
            path: self.path.as_str().to_owned(),
            offset,
            problem,
        }
    }

    pub(crate) fn err(&self, problem: Problem) -> VmStateError {
        self.err_at(self.r.offset(), problem)
    }

    /// Reads exactly `N` bytes.
    pub(crate) fn read_array<const N: usize>(&mut self) -> Result<[u8; N], VmStateError> {
        let start = self.r.offset();
        let mut buf = [0u8; N];
        let got = self.r.read_up_to(&mut buf).map_err(|e| self.err(io_problem(&e)))?;
        if got < N {
            return Err(self.err_at(
                start,
                Problem::Truncated {
                    needed: N as u64,
                    got: got as u64,
                },
            ));
        }
        Ok(buf)
    }

    /// Reads exactly `n` bytes; the buffer grows with the data, so a large
    /// `n` on a short input allocates only what is there.
    pub(crate) fn read_vec(&mut self, n: u64) -> Result<Vec<u8>, VmStateError> {
        let start = self.r.offset();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while (out.len() as u64) < n {
            let want = (n - out.len() as u64).min(chunk.len() as u64) as usize;
            let got = self
                .r
                .read_up_to(&mut chunk[..want])
                .map_err(|e| self.err(io_problem(&e)))?;
            out.extend_from_slice(&chunk[..got]);
            if got < want {
                return Err(self.err_at(
                    start,
                    Problem::Truncated {
                        needed: n,
                        got: out.len() as u64,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Reads and drops `n` bytes.
    pub(crate) fn skip(&mut self, n: u64) -> Result<(), VmStateError> {
        let start = self.r.offset();
        let mut chunk = [0u8; 4096];
        let mut done = 0u64;
        while done < n {
            let want = (n - done).min(chunk.len() as u64) as usize;
            let got = self
                .r
                .read_up_to(&mut chunk[..want])
                .map_err(|e| self.err(io_problem(&e)))?;
            done += got as u64;
            if got < want {
                return Err(self.err_at(start, Problem::Truncated { needed: n, got: done }));
            }
        }
        Ok(())
    }

    pub(crate) fn read_int(&mut self, width: usize, signed: bool) -> Result<VmValue, VmStateError> {
        let start = self.r.offset();
        let mut buf = [0u8; 8];
        let got = self
            .r
            .read_up_to(&mut buf[..width])
            .map_err(|e| self.err(io_problem(&e)))?;
        if got < width {
            return Err(self.err_at(
                start,
                Problem::Truncated {
                    needed: width as u64,
                    got: got as u64,
                },
            ));
        }
        Ok(int_from_wire(&buf[..width], signed))
    }

    /// Up to `n` upcoming bytes, copied.
    fn peek(&mut self, n: usize) -> Result<Vec<u8>, VmStateError> {
        let offset = self.r.offset();
        match self.r.peek(n) {
            Ok(b) => Ok(b.to_vec()),
            Err(e) => Err(self.err_at(offset, io_problem(&e))),
        }
    }

    pub(crate) fn enter(&mut self) -> Result<(), VmStateError> {
        if self.depth >= self.limits.max_depth {
            return Err(self.err(Problem::TooDeep {
                max_depth: self.limits.max_depth,
            }));
        }
        self.depth += 1;
        Ok(())
    }

    pub(crate) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Peeks a subsection header. `None` when the next bytes are not a
    /// subsection of a struct named `parent` (they belong to an outer
    /// struct or to what follows the body); otherwise the peeked name.
    pub(crate) fn peek_subsection(&mut self, parent: &str) -> Result<Option<Vec<u8>>, VmStateError> {
        let start = self.r.offset();
        // One byte first: at the end of a section body it is all that may
        // be read past the body (a stream reader can take one back).
        if self.peek(1)?.first() != Some(&SUBSECTION_MARKER) {
            return Ok(None);
        }
        let head = self.peek(2)?;
        // A nested struct cannot tell whose header a cut-off one is: it
        // stops and lets the outermost struct report the truncation.
        let Some(&len) = head.get(1) else {
            if self.depth > 0 {
                return Ok(None);
            }
            return Err(self.err_at(start, Problem::Truncated { needed: 2, got: 1 }));
        };
        let len = usize::from(len);
        if len < parent.len() + 1 {
            return Ok(None);
        }
        let all = self.peek(2 + len)?;
        if all.len() < 2 + len {
            if self.depth > 0 {
                return Ok(None);
            }
            let got = all.len() as u64;
            return Err(self.err_at(
                start,
                Problem::Truncated {
                    needed: 2 + len as u64,
                    got,
                },
            ));
        }
        let name = &all[2..];
        // Subsection names are "<parent>/..." (the builder insists). QEMU
        // compares only the "<parent>" prefix, which also matches a
        // subsection of a nested struct named "<parent>.x" in the next
        // array element; that header is not this struct's.
        if !(name.starts_with(parent.as_bytes()) && name.get(parent.len()) == Some(&b'/')) {
            return Ok(None);
        }
        Ok(Some(name.to_vec()))
    }

    pub(crate) fn decode_struct(
        &mut self,
        desc: &VmStateDescription,
        version: u32,
        target: &mut VmStruct,
    ) -> Result<(), VmStateError> {
        if version > desc.version_id {
            return Err(self.err(Problem::TooNew {
                stream: version,
                supported: desc.version_id,
            }));
        }
        if version < desc.minimum_version_id {
            return Err(self.err(Problem::TooOld {
                stream: version,
                minimum: desc.minimum_version_id,
            }));
        }
        if let Some(hook) = &desc.pre_load {
            hook(target).map_err(|source| {
                self.err(Problem::Hook {
                    hook: "pre_load",
                    source,
                })
            })?;
        }
        for field in &desc.fields {
            let mark = self.path.push(&field.name);
            let r = self.decode_field(field, version, target);
            self.path.pop(mark);
            r?;
        }
        // Subsections are sent in declaration order, each at most once: one
        // that repeats or goes back belongs to what follows this struct
        // (e.g. the next element of an array of structs whose bodies are
        // only subsections). QEMU would take it again; vmkit stops.
        let mut next_index = 0;
        loop {
            let start = self.r.offset();
            let Some(name) = self.peek_subsection(&desc.name)? else {
                break;
            };
            let Some(index) = desc.subsections.iter().position(|s| s.name.as_bytes() == name) else {
                return Err(self.err_at(
                    start,
                    Problem::UnknownSubsection {
                        name: String::from_utf8_lossy(&name).into_owned(),
                    },
                ));
            };
            if index < next_index {
                break;
            }
            next_index = index + 1;
            let sub = &desc.subsections[index];
            self.skip(2 + name.len() as u64)?;
            let mark = self.path.push(subsection_segment(&desc.name, &sub.name));
            let r = self.decode_subsection(sub, target);
            self.path.pop(mark);
            r?;
        }
        if let Some(hook) = &desc.post_load {
            hook(target, version).map_err(|source| {
                self.err(Problem::Hook {
                    hook: "post_load",
                    source,
                })
            })?;
        }
        Ok(())
    }

    fn decode_subsection(&mut self, sub: &VmStateDescription, target: &mut VmStruct) -> Result<(), VmStateError> {
        let version = u32::from_be_bytes(self.read_array::<4>()?);
        self.enter()?;
        let r = self.decode_struct(sub, version, target.subsection_entry(&sub.name));
        self.leave();
        r
    }

    /// The value of length field `len_field` of `target`, capped.
    fn length_of(&self, target: &VmStruct, len_field: &str, cap: u64, what: &str) -> Result<u64, VmStateError> {
        let v = target.get(len_field);
        let Some(n) = v.and_then(VmValue::as_u64) else {
            let value = v.map_or_else(|| "nothing".to_owned(), render);
            return Err(self.err(Problem::BadLength {
                field: len_field.to_owned(),
                value,
            }));
        };
        if n > cap {
            return Err(self.err(Problem::OverCap {
                what: what.to_owned(),
                len: n,
                cap,
            }));
        }
        Ok(n)
    }

    fn decode_field(&mut self, field: &Field, version: u32, target: &mut VmStruct) -> Result<(), VmStateError> {
        let present = field
            .is_present(target, version)
            .map_err(|source| self.err(Problem::Hook { hook: "exists", source }))?;
        if !present {
            if field.must_exist {
                return Err(self.err(Problem::MustExist { version }));
            }
            return Ok(());
        }
        let vlen = match &field.kind {
            FieldKind::Unused { len } => return self.skip(u64::from(*len)),
            FieldKind::VBuffer { len_field } => {
                Some(self.length_of(target, len_field, self.limits.max_buffer, "buffer length")?)
            }
            FieldKind::Array {
                len: ArrayLen::Field(len_field),
                ..
            } => Some(self.length_of(target, len_field, self.limits.max_array_len, "array length")?),
            _ => None,
        };
        let value = self.decode_elem(&field.kind, target.get(&field.name), vlen)?;
        target.set(field.name.clone(), value);
        Ok(())
    }

    fn decode_elem(
        &mut self,
        kind: &FieldKind,
        current: Option<&VmValue>,
        vlen: Option<u64>,
    ) -> Result<VmValue, VmStateError> {
        let start = self.r.offset();
        Ok(match kind {
            FieldKind::Bool => VmValue::Bool(self.read_array::<1>()?[0] != 0),
            FieldKind::U8
            | FieldKind::U16
            | FieldKind::U32
            | FieldKind::U64
            | FieldKind::I8
            | FieldKind::I16
            | FieldKind::I32
            | FieldKind::I64
            | FieldKind::Timer => {
                let (width, signed) = kind.int_width().unwrap_or((8, true));
                self.read_int(width, signed)?
            }
            FieldKind::Buffer { len } => VmValue::Bytes(self.read_vec(u64::from(*len))?),
            FieldKind::VBuffer { .. } => VmValue::Bytes(self.read_vec(vlen.unwrap_or(0))?),
            FieldKind::Unused { len } => {
                self.skip(u64::from(*len))?;
                VmValue::Bytes(Vec::new())
            }
            FieldKind::Array { elem, len } => {
                let count = match len {
                    ArrayLen::Fixed(n) => u64::from(*n),
                    ArrayLen::Field(_) => vlen.unwrap_or(0),
                };
                let cur = current.and_then(VmValue::as_array);
                let mut items = Vec::with_capacity(count.min(1024) as usize);
                for i in 0..count as usize {
                    let mark = self.path.push_index(i);
                    let r = self.decode_elem(elem, cur.and_then(|c| c.get(i)), None);
                    self.path.pop(mark);
                    items.push(r?);
                }
                VmValue::Array(items)
            }
            FieldKind::Struct(desc) => {
                let mut s = current.and_then(VmValue::as_struct).cloned().unwrap_or_default();
                self.enter()?;
                let r = self.decode_struct(desc, desc.version_id, &mut s);
                self.leave();
                r?;
                VmValue::Struct(s)
            }
            FieldKind::Optional(inner) => {
                let null = match current {
                    Some(VmValue::None) => true,
                    Some(_) => false,
                    None => {
                        let b = self.peek(1)?;
                        b.first() == Some(&NULL_MARKER)
                    }
                };
                if null {
                    let b = self.read_array::<1>()?[0];
                    if b != NULL_MARKER {
                        return Err(self.err_at(start, Problem::BadNullMarker { found: b }));
                    }
                    VmValue::None
                } else {
                    self.decode_elem(inner, current, vlen)?
                }
            }
            FieldKind::Bitmap { nbits } => {
                let words = u64::from(*nbits).div_ceil(64);
                let mut items = Vec::with_capacity(words.min(1024) as usize);
                for _ in 0..words {
                    items.push(self.read_int(8, false)?);
                }
                VmValue::Array(items)
            }
            FieldKind::Equal(inner) => {
                let v = self.decode_elem(inner, None, None)?;
                if let Some(cur) = current {
                    if cur.as_i128() != v.as_i128() {
                        return Err(self.err_at(
                            start,
                            Problem::EqualMismatch {
                                expected: render(cur),
                                found: render(&v),
                            },
                        ));
                    }
                }
                v
            }
        })
    }
}
