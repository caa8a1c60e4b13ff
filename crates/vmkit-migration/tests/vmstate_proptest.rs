//! Random descriptions (bounded depth) with random values: encode then
//! decode gives the values back, and so does a generic decode driven by the
//! VMDESCRIPTION entry.
//!
//! proptest draws a seed; a small deterministic generator turns it into a
//! description and a state that fits it (lengths agree with their length
//! fields; every struct starts with a tag byte that is neither 0x05 nor
//! 0x30, so the loader's peeks are unambiguous).

use std::sync::Arc;

use proptest::prelude::*;
use vmkit_migration::vmstate::{
    ArrayLen, DecodeLimits, Field, FieldKind, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue, decode,
    decode_with_vmdesc, device_entry, encode_described,
};

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn scalar(&mut self) -> FieldKind {
        match self.below(10) {
            0 => FieldKind::Bool,
            1 => FieldKind::U8,
            2 => FieldKind::U16,
            3 => FieldKind::U32,
            4 => FieldKind::U64,
            5 => FieldKind::I8,
            6 => FieldKind::I16,
            7 => FieldKind::I32,
            8 => FieldKind::I64,
            _ => FieldKind::Timer,
        }
    }

    fn desc(&mut self, name: &str, depth: u32) -> Result<Arc<VmStateDescription>, VmStateError> {
        let version = 1 + self.below(3) as u32;
        // A head byte that is never 0x05 or 0x30: a body that starts with a
        // subsection header or a null marker is ambiguous on the wire (in
        // QEMU too).
        let mut b = VmStateDescription::builder(name)
            .version(version)
            .minimum_version(1)
            .simple("tag", FieldKind::U8);
        let nfields = 1 + self.below(6);
        for i in 0..nfields {
            let fname = format!("f{i}");
            let kind = match self.below(if depth > 0 { 12 } else { 9 }) {
                0..=2 => self.scalar(),
                3 => FieldKind::Buffer {
                    len: self.below(6) as u32,
                },
                4 => FieldKind::Unused {
                    len: self.below(4) as u32,
                },
                5 => FieldKind::Bitmap {
                    nbits: 1 + self.below(150) as u32,
                },
                6 => {
                    let inner =
                        [FieldKind::U8, FieldKind::U16, FieldKind::U32, FieldKind::I32][self.below(4) as usize].clone();
                    FieldKind::Equal(Box::new(inner))
                }
                7 | 8 => {
                    let len_name = format!("len_{i}");
                    let len_kind = [FieldKind::U8, FieldKind::U16, FieldKind::U32][self.below(3) as usize].clone();
                    b = b.simple(len_name.clone(), len_kind);
                    if self.below(2) == 0 {
                        FieldKind::VBuffer { len_field: len_name }
                    } else {
                        FieldKind::Array {
                            elem: Box::new(self.scalar()),
                            len: ArrayLen::Field(len_name),
                        }
                    }
                }
                9 => FieldKind::Struct(self.desc(&format!("{name}.s{i}"), depth - 1)?),
                10 => FieldKind::Array {
                    elem: Box::new(if self.below(2) == 0 {
                        self.scalar()
                    } else {
                        FieldKind::Struct(self.desc(&format!("{name}.a{i}"), depth - 1)?)
                    }),
                    len: ArrayLen::Fixed(1 + self.below(4) as u32),
                },
                _ => {
                    let tagged = self.desc(&format!("{name}.o{i}"), depth - 1)?;
                    FieldKind::Array {
                        elem: Box::new(FieldKind::Optional(Box::new(FieldKind::Struct(tagged)))),
                        len: ArrayLen::Fixed(1 + self.below(4) as u32),
                    }
                }
            };
            let mut field = Field::new(fname, kind);
            match self.below(6) {
                0 => field = field.since(version + 1), // never sent at this version
                1 => field = field.since(version),
                2 => {
                    let present = self.below(2) == 0;
                    field = field.exists_if(move |_, _| Ok(present));
                }
                _ => {}
            }
            b = b.field(field);
        }
        if depth > 0 {
            for k in 0..self.below(3) {
                let sub = self.desc(&format!("{name}/sub{k}"), depth - 1)?;
                let sent = self.below(3) != 0;
                let sub = rebuild_needed(&sub, sent)?;
                b = b.subsection(sub);
            }
        }
        b.build()
    }

    fn int(&mut self, width: u32, signed: bool) -> VmValue {
        let raw = self.next();
        if signed {
            let shift = 64 - 8 * width;
            VmValue::Int(((raw << shift) as i64) >> shift)
        } else if width == 8 {
            VmValue::UInt(raw)
        } else {
            VmValue::UInt(raw & ((1u64 << (8 * width)) - 1))
        }
    }

    fn value(&mut self, kind: &FieldKind, state: &VmStruct, fname: &str) -> Option<VmValue> {
        Some(match kind {
            FieldKind::Bool => VmValue::Bool(self.below(2) == 1),
            FieldKind::U8 | FieldKind::U16 | FieldKind::U32 if fname.starts_with("len_") => {
                VmValue::UInt(1 + self.below(5))
            }
            FieldKind::U8 if fname == "tag" => VmValue::UInt(6 + self.below(0x30 - 6)),
            FieldKind::U8 => self.int(1, false),
            FieldKind::U16 => self.int(2, false),
            FieldKind::U32 => self.int(4, false),
            FieldKind::U64 => self.int(8, false),
            FieldKind::I8 => self.int(1, true),
            FieldKind::I16 => self.int(2, true),
            FieldKind::I32 => self.int(4, true),
            FieldKind::I64 | FieldKind::Timer => self.int(8, true),
            FieldKind::Buffer { len } => VmValue::Bytes((0..*len).map(|_| self.next() as u8).collect()),
            FieldKind::VBuffer { len_field } => {
                let n = state.get_u64(len_field).unwrap_or(0);
                VmValue::Bytes((0..n).map(|_| self.next() as u8).collect())
            }
            FieldKind::Unused { .. } => return None,
            FieldKind::Array { elem, len } => {
                let n = match len {
                    ArrayLen::Fixed(n) => u64::from(*n),
                    ArrayLen::Field(f) => state.get_u64(f).unwrap_or(0),
                };
                VmValue::Array((0..n).filter_map(|_| self.value(elem, state, "")).collect())
            }
            FieldKind::Struct(d) => VmValue::Struct(self.state(d)),
            FieldKind::Optional(inner) => {
                if self.below(3) == 0 {
                    VmValue::None
                } else {
                    self.value(inner, state, fname)?
                }
            }
            FieldKind::Bitmap { nbits } => VmValue::Array(
                (0..u64::from(*nbits).div_ceil(64))
                    .map(|_| VmValue::UInt(self.next()))
                    .collect(),
            ),
            FieldKind::Equal(inner) => self.value(inner, state, fname)?,
        })
    }

    /// A state holding exactly what `desc` sends at its own version.
    fn state(&mut self, desc: &VmStateDescription) -> VmStruct {
        let mut s = VmStruct::new();
        for f in desc.fields() {
            if !f.is_present(&s, desc.version_id()).unwrap_or(false) {
                continue;
            }
            if let Some(v) = self.value(f.kind(), &s, f.name()) {
                s.set(f.name(), v);
            }
        }
        for sub in desc.subsections() {
            if sub.is_needed(&s).unwrap_or(false) {
                let st = self.state(sub);
                s.set_subsection(sub.name(), st);
            }
        }
        s
    }
}

/// `sub` with a constant `needed`.
fn rebuild_needed(sub: &VmStateDescription, sent: bool) -> Result<Arc<VmStateDescription>, VmStateError> {
    let mut b = VmStateDescription::builder(sub.name())
        .version(sub.version_id())
        .minimum_version(sub.minimum_version_id())
        .needed(move |_| Ok(sent));
    for f in sub.fields() {
        b = b.field(f.clone());
    }
    for s in sub.subsections() {
        b = b.subsection(s.clone());
    }
    b.build()
}

fn round_trip(seed: u64) -> Result<(), TestCaseError> {
    let fail = |e: VmStateError| TestCaseError::fail(e.to_string());
    let mut g = Gen(seed);
    let depth = g.below(4) as u32;
    let desc = g.desc("dev", depth).map_err(fail)?;
    let mut state = g.state(&desc);
    let original = state.clone();
    let mut bytes = Vec::new();
    let (n, body) = encode_described(&desc, &mut state, &mut bytes, 7).map_err(fail)?;
    prop_assert_eq!(n as usize, bytes.len());
    prop_assert_eq!(&state, &original);

    bytes.push(0x7e); // the section footer that follows a body
    let mut r = VmReader::new(&bytes[..], 7);
    let back = decode(&desc, desc.version_id(), &mut r).map_err(fail)?;
    prop_assert_eq!(&back, &original);
    prop_assert_eq!(r.offset(), 7 + n);

    let entry = device_entry("dev", 0, &body);
    let mut r = VmReader::new(&bytes[..], 7);
    let generic = decode_with_vmdesc(&entry, &mut r, &DecodeLimits::default()).map_err(fail)?;
    prop_assert_eq!(&generic, &original);
    prop_assert_eq!(r.offset(), 7 + n);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_descriptions_round_trip(seed in any::<u64>()) {
        round_trip(seed)?;
    }
}
