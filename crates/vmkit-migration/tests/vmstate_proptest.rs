//! Random VMState descriptions with random states that fit them.
//!
//! A recursive proptest strategy draws a [`Shape`]: a plain data tree of
//! fields (bool, u8..u64, i8..i64, timer, buffer, unused, bitmap, equal,
//! vbuffer with its length field, fixed and field-counted arrays of
//! scalars, structs and optional elements, nested structs), gates (`since`,
//! constant existence predicates), versions and subsections (with or
//! without a constant `needed`), each field drawn together with its value.
//! No drawn value depends on another (lengths are the lengths of the drawn
//! data; a length field's value is derived), so every part shrinks on its
//! own and a failure shrinks to a minimal description. The test then
//! builds the [`VmStateDescription`] and the [`VmStruct`] from the shape.
//!
//! Properties, for the current sender and for an older one (top level and
//! subsections saved at their `old_version`, loaded by the current
//! receiver at that version):
//! * encoding leaves the state alone, reports the bytes it wrote, and writes
//!   exactly what an independent model of the wire format ([`Wire`]) writes;
//! * loading into a receiver state holding blanks (zeros, the same optional
//!   elements absent, the same `Equal` values: what a QEMU device knows
//!   before it loads) gives the state back and stops at the body's end;
//! * the generic decode driven by the VMDESCRIPTION entry
//!   ([`device_entry`] / [`decode_with_vmdesc`]) gives the state back (an
//!   empty array has no entry, so it has no field there) and stops there;
//! * loading into an empty state gives the state back too, except where the
//!   format is ambiguous (below), where the documented outcome is asserted;
//! * a receiver whose `Equal` field differs refuses the stream with the
//!   field's path and offset; versions above `version_id` or below
//!   `minimum_version_id` are refused before any byte is read.
//!
//! The data holds the subsection marker 0x05 and the null marker 0x30 often:
//! every data byte (buffers, integers, bitmap words) is one of them a third
//! of the time, so they also begin structs and optional elements and
//! follow the ends of structs.
//!
//! Where the loader peeks, and what is ambiguous (in QEMU too):
//! * After a struct's last field (and after each of its subsections) it
//!   peeks for a subsection header: a 0x05 byte, a length byte and a name
//!   that starts with the struct's name. A 0x05 data byte there (the next
//!   field of the enclosing struct, the next array element, ...) is read as
//!   a header only if the bytes after it spell such a name followed by
//!   `/`. Random data does not spell names, so every 0x05 there must load
//!   as data. The one spelling that cannot is asserted below
//!   (`data_spelling_a_subsection_header_after_a_struct_is_taken_as_one`).
//!   Real headers that follow a struct are told apart by name: names end
//!   each segment in `_`, so the only name extending another is a nested
//!   struct's (`<parent>.fN_`) or a subsection's (`<parent>/sN_`), and only
//!   the latter is the parent's (this found a decoder fault, see
//!   `a_nested_structs_subsection_in_the_next_element_is_not_the_elements`).
//! * At an optional element, a receiver that holds a value for the element
//!   knows whether a null marker comes (QEMU always decides this way, from
//!   its own pointers). Only a receiver with no value peeks and takes 0x30
//!   as "absent": ambiguous for a present element whose bytes begin with
//!   0x30 (or that writes nothing and is followed by a 0x30). For exactly
//!   that case ([`Wire::optional_ambiguous`]) the empty-state load must not
//!   return the state (it reads "absent" there); the receiver-state and
//!   generic loads must still. Also asserted below on a fixed stream.

use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use vmkit_migration::vmstate::codec::{NULL_MARKER, SUBSECTION_MARKER};
use vmkit_migration::vmstate::{
    ArrayLen, DecodeLimits, Field, FieldKind, Problem, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue,
    decode, decode_into, decode_with_vmdesc, device_entry, encode_described,
};

// ---- shapes: what a description is made of, as plain data ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    Timer,
}

impl Scalar {
    fn kind(self) -> FieldKind {
        match self {
            Scalar::Bool => FieldKind::Bool,
            Scalar::U8 => FieldKind::U8,
            Scalar::U16 => FieldKind::U16,
            Scalar::U32 => FieldKind::U32,
            Scalar::U64 => FieldKind::U64,
            Scalar::I8 => FieldKind::I8,
            Scalar::I16 => FieldKind::I16,
            Scalar::I32 => FieldKind::I32,
            Scalar::I64 => FieldKind::I64,
            Scalar::Timer => FieldKind::Timer,
        }
    }

    /// Bytes on the wire.
    fn width(self) -> usize {
        match self {
            Scalar::Bool | Scalar::U8 | Scalar::I8 => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::Timer => 8,
        }
    }

    fn signed(self) -> bool {
        matches!(
            self,
            Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64 | Scalar::Timer
        )
    }
}

/// An array element's kind.
#[derive(Debug, Clone)]
enum Elem {
    Scalar(Scalar),
    /// A struct; every element has this shape. The shape's own values are
    /// not used: each element's state comes from its [`Item::Data`].
    Struct(Box<Shape>),
    /// QEMU's array of pointers: present or the null marker.
    Optional(Box<Elem>),
}

/// One array element's value.
#[derive(Debug, Clone)]
enum Item {
    Value(VmValue),
    /// Bytes that [`fill`] turns into a state of the element's shape (the
    /// elements share one shape, so they cannot each carry their own).
    Data(Vec<u8>),
    /// An absent optional element.
    Absent,
}

#[derive(Debug, Clone)]
enum Len {
    /// As many as there are items.
    Fixed,
    /// Counted by an integer field of this kind placed just before.
    Field(Scalar),
}

/// A field's kind and value.
#[derive(Debug, Clone)]
enum Kind {
    Scalar(Scalar, VmValue),
    Buffer(Vec<u8>),
    Unused(u32),
    /// The bit count and the be64 words.
    Bitmap(u32, Vec<VmValue>),
    Equal(Scalar, VmValue),
    /// Its length field (of this kind) is placed just before.
    VBuffer(Scalar, Vec<u8>),
    Array {
        elem: Elem,
        len: Len,
        items: Vec<Item>,
    },
    /// A nested struct; the value is the shape's.
    Struct(Box<Shape>),
}

#[derive(Debug, Clone, Copy)]
enum Gate {
    Always,
    /// `since(v)`: present at versions `>= v`.
    Since(u32),
    /// A constant existence predicate.
    Exists(bool),
}

impl Gate {
    fn present(self, version: u32) -> bool {
        match self {
            Gate::Always => true,
            Gate::Since(v) => v <= version,
            Gate::Exists(p) => p,
        }
    }
}

/// A field (its value is drawn even when the gate leaves it out).
#[derive(Debug, Clone)]
struct FieldShape {
    kind: Kind,
    gate: Gate,
}

#[derive(Debug, Clone)]
struct SubShape {
    shape: Shape,
    /// A constant `needed` hook, or none (always sent). Constant on purpose:
    /// if elements of an array of structs differed (a `needed` reading the
    /// element's state), a header after an element that did not send that
    /// subsection could equally open the next element's. The loader gives it
    /// to the first (QEMU does too), so only equal sets are decidable.
    needed: Option<bool>,
}

impl SubShape {
    fn sent(&self) -> bool {
        self.needed != Some(false)
    }
}

/// A description and the values of its state.
#[derive(Debug, Clone)]
struct Shape {
    version: u32,
    min_version: u32,
    /// What an older sender saves at (`min_version..=version`).
    old_version: u32,
    fields: Vec<FieldShape>,
    subsections: Vec<SubShape>,
}

/// Which sender: the current one, or an older one whose top level and
/// subsections are at their `old_version` (nested structs have no version
/// on the wire, so they stay current).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Current,
    Old,
}

impl Shape {
    fn version_in(&self, era: Era) -> u32 {
        match era {
            Era::Current => self.version,
            Era::Old => self.old_version,
        }
    }
}

fn field_name(i: usize) -> String {
    format!("f{i}")
}

fn len_name(i: usize) -> String {
    format!("f{i}_len")
}

// Every segment ends in `_`, so no name is a prefix of a sibling's
// (`dev.f1_`, `dev.f10_`).
fn struct_name(parent: &str, i: usize) -> String {
    format!("{parent}.f{i}_")
}

fn sub_name(parent: &str, k: usize) -> String {
    format!("{parent}/s{k}_")
}

// ---- values ----

/// A big-endian integer as a value of the given signedness.
fn int_value(bytes: &[u8], signed: bool) -> VmValue {
    let raw = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if signed {
        let shift = 64 - 8 * bytes.len() as u32;
        VmValue::Int(((raw << shift) as i64) >> shift)
    } else {
        VmValue::UInt(raw)
    }
}

/// A value of `s` from its last `width` bytes of `raw` (big-endian), so
/// that any byte can lead it on the wire.
fn scalar_from(s: Scalar, raw: &[u8]) -> VmValue {
    let bytes = &raw[raw.len().saturating_sub(s.width())..];
    match s {
        Scalar::Bool => VmValue::Bool(bytes.last().is_some_and(|b| b & 1 == 1)),
        _ => int_value(bytes, s.signed()),
    }
}

fn count_value(s: Scalar, n: usize) -> VmValue {
    if s.signed() {
        VmValue::Int(n as i64)
    } else {
        VmValue::UInt(n as u64)
    }
}

/// Data bytes for [`fill`], read in order; zeros once used up.
struct Pool<'a>(std::slice::Iter<'a, u8>);

impl Pool<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// A state of `shape` (named `name`) at its current version, from `pool`.
fn fill(shape: &Shape, name: &str, pool: &mut Pool<'_>) -> VmStruct {
    let mut out = VmStruct::new();
    for (i, f) in shape.fields.iter().enumerate() {
        let present = f.gate.present(shape.version);
        let inner = struct_name(name, i);
        let value = match &f.kind {
            Kind::VBuffer(ls, _) => {
                let n = usize::from(pool.byte() % 5);
                out.set(len_name(i), count_value(*ls, n));
                VmValue::Bytes(pool.bytes(n))
            }
            Kind::Array {
                elem,
                len: Len::Field(ls),
                ..
            } => {
                let n = usize::from(pool.byte() % 5);
                out.set(len_name(i), count_value(*ls, n));
                VmValue::Array((0..n).map(|_| fill_elem(elem, &inner, pool)).collect())
            }
            Kind::Unused(_) => continue,
            Kind::Scalar(s, _) | Kind::Equal(s, _) => scalar_from(*s, &pool.bytes(s.width())),
            Kind::Buffer(b) => VmValue::Bytes(pool.bytes(b.len())),
            Kind::Bitmap(_, words) => {
                VmValue::Array((0..words.len()).map(|_| int_value(&pool.bytes(8), false)).collect())
            }
            Kind::Array { elem, items, .. } => {
                VmValue::Array(items.iter().map(|_| fill_elem(elem, &inner, pool)).collect())
            }
            Kind::Struct(s) => VmValue::Struct(fill(s, &inner, pool)),
        };
        if present {
            out.set(field_name(i), value);
        }
    }
    for (k, sub) in shape.subsections.iter().enumerate() {
        if sub.sent() {
            let n = sub_name(name, k);
            let st = fill(&sub.shape, &n, pool);
            out.set_subsection(n, st);
        }
    }
    out
}

fn fill_elem(e: &Elem, name: &str, pool: &mut Pool<'_>) -> VmValue {
    match e {
        Elem::Scalar(s) => scalar_from(*s, &pool.bytes(s.width())),
        Elem::Struct(shape) => VmValue::Struct(fill(shape, name, pool)),
        Elem::Optional(inner) => {
            if pool.byte() % 3 == 0 {
                VmValue::None
            } else {
                fill_elem(inner, name, pool)
            }
        }
    }
}

fn item_value(e: &Elem, item: &Item, name: &str) -> VmValue {
    match (e, item) {
        (Elem::Optional(_), Item::Absent) => VmValue::None,
        (Elem::Optional(inner), item) => item_value(inner, item, name),
        (Elem::Struct(shape), Item::Data(d)) => VmValue::Struct(fill(shape, name, &mut Pool(d.iter()))),
        (_, Item::Value(v)) => v.clone(),
        // Not drawn: the strategies pair items with their element kind.
        (_, Item::Data(_) | Item::Absent) => VmValue::None,
    }
}

/// What the description named `name` sends from `shape`'s values: the
/// fields present at its version in `era`, and the subsections it sends.
fn state_of(shape: &Shape, name: &str, era: Era) -> VmStruct {
    let version = shape.version_in(era);
    let mut out = VmStruct::new();
    for (i, f) in shape.fields.iter().enumerate() {
        // A length field is always present; what it counts may not be.
        match &f.kind {
            Kind::VBuffer(ls, b) => out.set(len_name(i), count_value(*ls, b.len())),
            Kind::Array {
                len: Len::Field(ls),
                items,
                ..
            } => out.set(len_name(i), count_value(*ls, items.len())),
            _ => {}
        }
        if !f.gate.present(version) {
            continue;
        }
        let inner = struct_name(name, i);
        let value = match &f.kind {
            Kind::Scalar(_, v) | Kind::Equal(_, v) => v.clone(),
            Kind::Buffer(b) | Kind::VBuffer(_, b) => VmValue::Bytes(b.clone()),
            Kind::Unused(_) => continue,
            Kind::Bitmap(_, words) => VmValue::Array(words.clone()),
            Kind::Array { elem, items, .. } => {
                VmValue::Array(items.iter().map(|it| item_value(elem, it, &inner)).collect())
            }
            Kind::Struct(s) => VmValue::Struct(state_of(s, &inner, Era::Current)),
        };
        out.set(field_name(i), value);
    }
    for (k, sub) in shape.subsections.iter().enumerate() {
        if sub.sent() {
            let n = sub_name(name, k);
            out.set_subsection(n.clone(), state_of(&sub.shape, &n, era));
        }
    }
    out
}

// ---- strategies ----

fn scalar() -> impl Strategy<Value = Scalar> + Clone {
    prop_oneof![
        Just(Scalar::U8),
        Just(Scalar::Bool),
        Just(Scalar::U16),
        Just(Scalar::U32),
        Just(Scalar::U64),
        Just(Scalar::I8),
        Just(Scalar::I16),
        Just(Scalar::I32),
        Just(Scalar::I64),
        Just(Scalar::Timer),
    ]
}

/// Kinds a length field may have (any integer).
fn len_scalar() -> impl Strategy<Value = Scalar> + Clone {
    prop_oneof![
        Just(Scalar::U8),
        Just(Scalar::U16),
        Just(Scalar::U32),
        Just(Scalar::U64),
        Just(Scalar::I8),
        Just(Scalar::I16),
        Just(Scalar::I32),
        Just(Scalar::I64),
    ]
}

/// Kinds under `Equal`. Not U64: QEMU names its codec "int64 equal", so a
/// generic decode reads it as signed.
fn equal_scalar() -> impl Strategy<Value = Scalar> + Clone {
    prop_oneof![
        Just(Scalar::U8),
        Just(Scalar::U16),
        Just(Scalar::U32),
        Just(Scalar::I8),
        Just(Scalar::I16),
        Just(Scalar::I32),
        Just(Scalar::I64),
    ]
}

/// A data byte: the two marker bytes a third of the time.
fn byte() -> BoxedStrategy<u8> {
    prop_oneof![
        4 => any::<u8>(),
        1 => Just(SUBSECTION_MARKER),
        1 => Just(NULL_MARKER),
    ]
    .boxed()
}

/// Eight data bytes, for any scalar (the last `width` are used).
fn raw() -> impl Strategy<Value = Vec<u8>> + Clone {
    vec(byte(), 8)
}

/// A scalar kind from `kinds` with a value of it.
fn scalar_with_value(kinds: impl Strategy<Value = Scalar>) -> impl Strategy<Value = (Scalar, VmValue)> {
    (kinds, raw()).prop_map(|(s, raw)| (s, scalar_from(s, &raw)))
}

fn gate() -> impl Strategy<Value = Gate> + Clone {
    prop_oneof![
        3 => Just(Gate::Always),
        1 => (1u32..=4).prop_map(Gate::Since),
        1 => any::<bool>().prop_map(Gate::Exists),
    ]
}

/// An optional element's item: present two times out of three.
fn maybe<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::weighted(0.67, s)
}

/// An array: its element kind and items, fixed or counted by a field.
fn array(structs: Option<BoxedStrategy<Shape>>) -> BoxedStrategy<Kind> {
    let n = 0..4usize;
    let scalars = (scalar(), vec(raw(), n.clone())).prop_map(|(s, raws)| {
        let items = raws.iter().map(|r| Item::Value(scalar_from(s, r))).collect();
        (Elem::Scalar(s), items)
    });
    let optional_scalars = (scalar(), vec(maybe(raw()), n.clone())).prop_map(|(s, raws)| {
        let items = raws
            .iter()
            .map(|r| r.as_ref().map_or(Item::Absent, |r| Item::Value(scalar_from(s, r))))
            .collect();
        (Elem::Optional(Box::new(Elem::Scalar(s))), items)
    });
    let data = || vec(byte(), 0..24);
    let elems = match structs {
        None => prop_oneof![2 => scalars, 1 => optional_scalars].boxed(),
        Some(structs) => prop_oneof![
            1 => scalars,
            1 => optional_scalars,
            1 => (structs.clone(), vec(data().prop_map(Item::Data), n.clone()))
                .prop_map(|(s, items)| (Elem::Struct(Box::new(s)), items)),
            2 => (structs, vec(maybe(data()), n)).prop_map(|(s, data)| {
                let items = data.into_iter().map(|d| d.map_or(Item::Absent, Item::Data)).collect();
                (Elem::Optional(Box::new(Elem::Struct(Box::new(s)))), items)
            }),
        ]
        .boxed(),
    };
    let len = prop_oneof![Just(Len::Fixed), len_scalar().prop_map(Len::Field)];
    (elems, len)
        .prop_map(|((elem, items), len)| Kind::Array { elem, len, items })
        .boxed()
}

fn leaf_kind() -> BoxedStrategy<Kind> {
    prop_oneof![
        4 => scalar_with_value(scalar()).prop_map(|(s, v)| Kind::Scalar(s, v)),
        1 => vec(byte(), 0..6).prop_map(Kind::Buffer),
        1 => (0u32..4).prop_map(Kind::Unused),
        // At least one bit: an empty bitmap would look like an empty array
        // to `without_empty_arrays`.
        1 => (vec(raw(), 1..=3), 0u32..64).prop_map(|(words, extra)| {
            let nbits = 64 * (words.len() as u32 - 1) + 1 + extra;
            Kind::Bitmap(nbits, words.iter().map(|w| int_value(w, false)).collect())
        }),
        1 => scalar_with_value(equal_scalar()).prop_map(|(s, v)| Kind::Equal(s, v)),
        1 => (len_scalar(), vec(byte(), 0..=4)).prop_map(|(ls, b)| Kind::VBuffer(ls, b)),
        2 => array(None),
    ]
    .boxed()
}

fn kind_with(structs: BoxedStrategy<Shape>) -> BoxedStrategy<Kind> {
    prop_oneof![
        5 => leaf_kind(),
        1 => structs.clone().prop_map(|s| Kind::Struct(Box::new(s))),
        2 => array(Some(structs)),
    ]
    .boxed()
}

/// `(version, min_version, old_version)` with `min <= old <= version`
/// (drawn independently and folded into range, so each shrinks alone).
fn versions() -> impl Strategy<Value = (u32, u32, u32)> {
    (1u32..=3, 0u32..3, 0u32..3).prop_map(|(v, a, b)| {
        let min = 1 + a % v;
        (v, min, min + b % (v - min + 1))
    })
}

fn shape_of(kinds: BoxedStrategy<Kind>, subsections: BoxedStrategy<Vec<SubShape>>) -> BoxedStrategy<Shape> {
    let field = (kinds, gate()).prop_map(|(kind, gate)| FieldShape { kind, gate });
    (versions(), vec(field, 0..5), subsections)
        .prop_map(|((version, min_version, old_version), fields, subsections)| Shape {
            version,
            min_version,
            old_version,
            fields,
            subsections,
        })
        .boxed()
}

/// A shape with its values; nothing in it depends on another drawn value,
/// so every part shrinks on its own.
fn shape() -> impl Strategy<Value = Shape> {
    let leaf = shape_of(leaf_kind(), Just(Vec::new()).boxed());
    leaf.prop_recursive(3, 24, 4, |inner| {
        let sub = (inner.clone(), prop_oneof![Just(None), any::<bool>().prop_map(Some)])
            .prop_map(|(shape, needed)| SubShape { shape, needed });
        shape_of(kind_with(inner), vec(sub, 0..3).boxed())
    })
}

// ---- from a shape to a description ----

fn elem_kind(e: &Elem, name: &str) -> Result<FieldKind, VmStateError> {
    Ok(match e {
        Elem::Scalar(s) => s.kind(),
        Elem::Struct(shape) => FieldKind::Struct(build(shape, name, Era::Current, None)?),
        Elem::Optional(inner) => FieldKind::Optional(Box::new(elem_kind(inner, name)?)),
    })
}

fn build(shape: &Shape, name: &str, era: Era, needed: Option<bool>) -> Result<Arc<VmStateDescription>, VmStateError> {
    let mut b = VmStateDescription::builder(name)
        .version(shape.version_in(era))
        .minimum_version(shape.min_version);
    if let Some(sent) = needed {
        b = b.needed(move |_| Ok(sent));
    }
    for (i, f) in shape.fields.iter().enumerate() {
        let kind = match &f.kind {
            Kind::Scalar(s, _) => s.kind(),
            Kind::Buffer(b) => FieldKind::Buffer { len: b.len() as u32 },
            Kind::Unused(len) => FieldKind::Unused { len: *len },
            Kind::Bitmap(nbits, _) => FieldKind::Bitmap { nbits: *nbits },
            Kind::Equal(s, _) => FieldKind::Equal(Box::new(s.kind())),
            Kind::VBuffer(ls, _) => {
                b = b.simple(len_name(i), ls.kind());
                FieldKind::VBuffer { len_field: len_name(i) }
            }
            Kind::Array { elem: e, len, items } => {
                let len = match len {
                    Len::Fixed => ArrayLen::Fixed(items.len() as u32),
                    Len::Field(ls) => {
                        b = b.simple(len_name(i), ls.kind());
                        ArrayLen::Field(len_name(i))
                    }
                };
                FieldKind::Array {
                    elem: Box::new(elem_kind(e, &struct_name(name, i))?),
                    len,
                }
            }
            Kind::Struct(inner) => FieldKind::Struct(build(inner, &struct_name(name, i), Era::Current, None)?),
        };
        let mut field = Field::new(field_name(i), kind);
        match f.gate {
            Gate::Always => {}
            Gate::Since(v) => field = field.since(v),
            Gate::Exists(p) => field = field.exists_if(move |_, _| Ok(p)),
        }
        b = b.field(field);
    }
    for (k, sub) in shape.subsections.iter().enumerate() {
        b = b.subsection(build(&sub.shape, &sub_name(name, k), era, sub.needed)?);
    }
    b.build()
}

// ---- an independent model of the wire format ----

/// The bytes a body must have, where each field starts (by
/// `struct name/field name`), and where each present optional element
/// starts (the loader peeks there when it has no value of its own).
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    field_starts: Vec<(String, usize)>,
    present_optionals: Vec<usize>,
}

impl Wire {
    fn scalar(&mut self, s: Scalar, v: Option<&VmValue>) -> Result<(), String> {
        let raw: i128 = match v {
            Some(VmValue::Bool(b)) => i128::from(*b),
            Some(VmValue::Int(x)) => i128::from(*x),
            Some(VmValue::UInt(x)) => i128::from(*x),
            other => return Err(format!("{other:?} for a {s:?}")),
        };
        let all = (raw as u128).to_be_bytes();
        self.bytes.extend_from_slice(&all[16 - s.width()..]);
        Ok(())
    }

    fn elem(&mut self, e: &Elem, v: &VmValue, name: &str) -> Result<(), String> {
        match (e, v) {
            (Elem::Scalar(s), v) => self.scalar(*s, Some(v)),
            (Elem::Struct(shape), VmValue::Struct(s)) => self.body(shape, name, shape.version, Era::Current, s),
            (Elem::Optional(_), VmValue::None) => {
                self.bytes.push(NULL_MARKER);
                Ok(())
            }
            (Elem::Optional(inner), v) => {
                self.present_optionals.push(self.bytes.len());
                self.elem(inner, v, name)
            }
            (e, v) => Err(format!("{v:?} for a {e:?}")),
        }
    }

    fn body(&mut self, shape: &Shape, name: &str, version: u32, era: Era, s: &VmStruct) -> Result<(), String> {
        for (i, f) in shape.fields.iter().enumerate() {
            let fname = field_name(i);
            match &f.kind {
                Kind::VBuffer(ls, _)
                | Kind::Array {
                    len: Len::Field(ls), ..
                } => self.scalar(*ls, s.get(&len_name(i)))?,
                _ => {}
            }
            if !f.gate.present(version) {
                continue;
            }
            self.field_starts.push((format!("{name}/{fname}"), self.bytes.len()));
            let v = s.get(&fname);
            match (&f.kind, v) {
                (Kind::Unused(n), _) => self.bytes.extend(vec![0; *n as usize]),
                (Kind::Scalar(sc, _) | Kind::Equal(sc, _), v) => self.scalar(*sc, v)?,
                (Kind::Buffer(_) | Kind::VBuffer(..), Some(VmValue::Bytes(b))) => self.bytes.extend_from_slice(b),
                (Kind::Bitmap(..), Some(VmValue::Array(words))) => {
                    for w in words {
                        self.scalar(Scalar::U64, Some(w))?;
                    }
                }
                (Kind::Array { elem: e, .. }, Some(VmValue::Array(items))) => {
                    for item in items {
                        self.elem(e, item, &struct_name(name, i))?;
                    }
                }
                (Kind::Struct(inner), Some(VmValue::Struct(st))) => {
                    self.body(inner, &struct_name(name, i), inner.version, Era::Current, st)?;
                }
                (k, v) => return Err(format!("{name}/{fname}: {v:?} for a {k:?}")),
            }
        }
        for (k, sub) in shape.subsections.iter().enumerate() {
            if !sub.sent() {
                continue;
            }
            let n = sub_name(name, k);
            let v = sub.shape.version_in(era);
            self.bytes.push(SUBSECTION_MARKER);
            self.bytes.push(n.len() as u8);
            self.bytes.extend_from_slice(n.as_bytes());
            self.bytes.extend_from_slice(&v.to_be_bytes());
            let st = s.subsection(&n).ok_or_else(|| format!("no state for {n}"))?;
            self.body(&sub.shape, &n, v, era, st)?;
        }
        Ok(())
    }

    /// Whether a loader without receiver state meets a 0x30 where a present
    /// optional element starts.
    fn optional_ambiguous(&self, footer: u8) -> bool {
        self.present_optionals
            .iter()
            .any(|&at| self.bytes.get(at).copied().unwrap_or(footer) == NULL_MARKER)
    }
}

// ---- receiver state ----

/// A receiver's state before loading: the same fields in the same order,
/// holding zeros, with the same optional elements absent and the same
/// `Equal` values (what a QEMU device knows before it loads).
fn blank_struct(shape: &Shape, name: &str, s: &VmStruct) -> VmStruct {
    let mut out = VmStruct::new();
    for (fname, v) in &s.fields {
        let at = shape.fields.iter().enumerate().find(|(i, _)| field_name(*i) == *fname);
        let blanked = match at {
            Some((
                _,
                FieldShape {
                    kind: Kind::Equal(..), ..
                },
            )) => v.clone(),
            Some((
                i,
                FieldShape {
                    kind: Kind::Struct(inner),
                    ..
                },
            )) => match v {
                VmValue::Struct(st) => VmValue::Struct(blank_struct(inner, &struct_name(name, i), st)),
                other => blank_plain(other),
            },
            Some((
                i,
                FieldShape {
                    kind: Kind::Array { elem: e, .. },
                    ..
                },
            )) => match v {
                VmValue::Array(items) => {
                    VmValue::Array(items.iter().map(|x| blank_elem(e, &struct_name(name, i), x)).collect())
                }
                other => blank_plain(other),
            },
            _ => blank_plain(v),
        };
        out.fields.push((fname.clone(), blanked));
    }
    for (k, sub) in shape.subsections.iter().enumerate() {
        let n = sub_name(name, k);
        if let Some(st) = s.subsection(&n) {
            out.subsections.push((n.clone(), blank_struct(&sub.shape, &n, st)));
        }
    }
    out
}

fn blank_elem(e: &Elem, name: &str, v: &VmValue) -> VmValue {
    match (e, v) {
        (Elem::Struct(shape), VmValue::Struct(s)) => VmValue::Struct(blank_struct(shape, name, s)),
        (Elem::Optional(_), VmValue::None) => VmValue::None,
        (Elem::Optional(inner), v) => blank_elem(inner, name, v),
        (_, v) => blank_plain(v),
    }
}

/// Zeros of the same shape (scalars, buffers, bitmaps).
fn blank_plain(v: &VmValue) -> VmValue {
    match v {
        VmValue::Bool(_) => VmValue::Bool(false),
        VmValue::Int(_) => VmValue::Int(0),
        VmValue::UInt(_) => VmValue::UInt(0),
        VmValue::Bytes(b) => VmValue::Bytes(vec![0; b.len()]),
        VmValue::Array(items) => VmValue::Array(items.iter().map(blank_plain).collect()),
        VmValue::Struct(_) | VmValue::None => v.clone(),
    }
}

/// What a generic decode gives: an empty array writes nothing and has no
/// VMDESCRIPTION entry, so it has no field.
fn without_empty_arrays(s: &VmStruct) -> VmStruct {
    fn value(v: &VmValue) -> VmValue {
        match v {
            VmValue::Array(items) => VmValue::Array(items.iter().map(value).collect()),
            VmValue::Struct(s) => VmValue::Struct(without_empty_arrays(s)),
            other => other.clone(),
        }
    }
    VmStruct {
        fields: s
            .fields
            .iter()
            .filter(|(_, v)| !matches!(v, VmValue::Array(a) if a.is_empty()))
            .map(|(n, v)| (n.clone(), value(v)))
            .collect(),
        subsections: s
            .subsections
            .iter()
            .map(|(n, st)| (n.clone(), without_empty_arrays(st)))
            .collect(),
    }
}

// ---- the properties ----

/// The byte after a body: a section footer.
const FOOTER: u8 = 0x7e;
/// Where the body starts in the stream.
const START: u64 = 7;

fn fail(e: VmStateError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Encodes `state` with the `era` sender, then loads it with the current
/// receiver every way there is.
fn check(shape: &Shape, era: Era) -> Result<(), TestCaseError> {
    let sender = build(shape, "dev", era, None).map_err(fail)?;
    let receiver = build(shape, "dev", Era::Current, None).map_err(fail)?;
    let version = shape.version_in(era);
    let original = state_of(shape, "dev", era);

    let mut state = original.clone();
    let mut bytes = Vec::new();
    let (n, body) = encode_described(&sender, &mut state, &mut bytes, START).map_err(fail)?;
    prop_assert_eq!(n as usize, bytes.len());
    prop_assert_eq!(&state, &original);

    let mut model = Wire::default();
    model
        .body(shape, "dev", version, era, &original)
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(&bytes, &model.bytes, "the encoder and the wire model differ");
    bytes.push(FOOTER);
    let end = START + n;

    // A receiver that knows its own optional elements and Equal values.
    let mut target = blank_struct(shape, "dev", &original);
    let mut r = VmReader::new(&bytes[..], START);
    decode_into(&receiver, version, &mut r, &mut target, &DecodeLimits::default()).map_err(fail)?;
    prop_assert_eq!(&target, &original);
    prop_assert_eq!(r.offset(), end);

    // Driven by the VMDESCRIPTION entry alone.
    let entry = device_entry("dev", 0, &body);
    let mut r = VmReader::new(&bytes[..], START);
    let generic = decode_with_vmdesc(&entry, &mut r, &DecodeLimits::default()).map_err(fail)?;
    prop_assert_eq!(&generic, &without_empty_arrays(&original));
    prop_assert_eq!(r.offset(), end);

    // A receiver whose Equal field holds another value refuses the stream
    // there.
    let equal = shape.fields.iter().enumerate().find_map(|(i, f)| match &f.kind {
        Kind::Equal(_, v) if f.gate.present(version) => Some((field_name(i), v)),
        _ => None,
    });
    if let Some((fname, v)) = equal {
        let other = match v {
            VmValue::Int(x) => VmValue::Int(x ^ 1),
            VmValue::UInt(x) => VmValue::UInt(x ^ 1),
            other => other.clone(),
        };
        let mut target = blank_struct(shape, "dev", &original);
        target.set(fname.clone(), other);
        let mut r = VmReader::new(&bytes[..], START);
        let err = decode_into(&receiver, version, &mut r, &mut target, &DecodeLimits::default()).err();
        let path = format!("dev/{fname}");
        let at = model
            .field_starts
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, at)| START + *at as u64);
        let mismatch = matches!(
            err.as_ref().and_then(VmStateError::problem),
            Some(Problem::EqualMismatch { .. })
        );
        prop_assert!(mismatch, "{err:?}");
        prop_assert_eq!(err.as_ref().and_then(VmStateError::path), Some(path.as_str()));
        prop_assert_eq!(err.as_ref().and_then(VmStateError::offset), at);
    }

    // Versions this receiver does not load are refused before any byte.
    let mut r = VmReader::new(&bytes[..], START);
    let err = decode(&receiver, shape.version + 1, &mut r).err();
    prop_assert_eq!(
        err.as_ref().and_then(VmStateError::problem),
        Some(&Problem::TooNew {
            stream: shape.version + 1,
            supported: shape.version
        })
    );
    prop_assert_eq!(err.as_ref().and_then(VmStateError::offset), Some(START));
    if shape.min_version > 1 {
        let mut r = VmReader::new(&bytes[..], START);
        let err = decode(&receiver, shape.min_version - 1, &mut r).err();
        prop_assert_eq!(
            err.as_ref().and_then(VmStateError::problem),
            Some(&Problem::TooOld {
                stream: shape.min_version - 1,
                minimum: shape.min_version
            })
        );
    }

    // A receiver with nothing: it peeks at optional elements.
    let mut r = VmReader::new(&bytes[..], START);
    let empty = decode(&receiver, version, &mut r);
    if model.optional_ambiguous(FOOTER) {
        // A present element read as the null marker: never the state.
        prop_assert!(!empty.is_ok_and(|s| s == original));
    } else {
        prop_assert_eq!(&empty.map_err(fail)?, &original);
        prop_assert_eq!(r.offset(), end);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_descriptions_round_trip(shape in shape()) {
        check(&shape, Era::Current)?;
    }

    #[test]
    fn older_senders_load_at_their_version(shape in shape()) {
        check(&shape, Era::Old)?;
    }
}

// ---- the ambiguous spellings, asserted as documented ----

#[test]
fn data_spelling_a_subsection_header_after_a_struct_is_taken_as_one() -> Result<(), VmStateError> {
    // `inner` ends with no subsection of its own; the outer struct's next
    // field is a buffer whose bytes spell a header of a name under
    // "inner". The loader (like QEMU's) cannot tell, takes it as inner's
    // subsection and, not knowing the name, fails.
    let inner = VmStateDescription::builder("inner")
        .simple("x", FieldKind::U8)
        .build()?;
    let spelled = [SUBSECTION_MARKER, 7, b'i', b'n', b'n', b'e', b'r', b'/', b'z'];
    let desc = VmStateDescription::builder("dev")
        .simple("s", FieldKind::Struct(inner))
        .simple(
            "b",
            FieldKind::Buffer {
                len: spelled.len() as u32,
            },
        )
        .build()?;
    let original = VmStruct::new()
        .with("s", VmValue::Struct(VmStruct::new().with("x", VmValue::UInt(1))))
        .with("b", VmValue::Bytes(spelled.to_vec()));
    let mut state = original.clone();
    let mut bytes = Vec::new();
    encode_described(&desc, &mut state, &mut bytes, 0)?;
    bytes.push(FOOTER);
    let err = decode(&desc, 0, &mut VmReader::new(&bytes[..], 0)).err();
    assert_eq!(
        err.as_ref().and_then(VmStateError::problem),
        Some(&Problem::UnknownSubsection { name: "inner/z".into() })
    );
    assert_eq!(err.as_ref().and_then(VmStateError::offset), Some(1));
    // A name not under "inner" is data.
    let mut other = bytes.clone();
    other[3] = b'X';
    let back = decode(&desc, 0, &mut VmReader::new(&other[..], 0))?;
    assert_eq!(back.get("b").and_then(VmValue::as_bytes), Some(&other[1..10]));
    Ok(())
}

#[test]
fn a_present_optional_starting_with_the_null_marker_needs_the_receivers_state() -> Result<(), VmStateError> {
    let desc = VmStateDescription::builder("dev")
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::Optional(Box::new(FieldKind::U16))),
                len: ArrayLen::Fixed(2),
            },
        )
        .build()?;
    let original = VmStruct::new().with("slots", VmValue::Array(vec![VmValue::UInt(0x3005), VmValue::None]));
    let mut state = original.clone();
    let mut bytes = Vec::new();
    encode_described(&desc, &mut state, &mut bytes, 0)?;
    assert_eq!(bytes, [0x30, 0x05, 0x30]);
    // With the receiver's state (as QEMU always loads) it is unambiguous.
    let mut target = VmStruct::new().with("slots", VmValue::Array(vec![VmValue::UInt(0), VmValue::None]));
    decode_into(
        &desc,
        0,
        &mut VmReader::new(&bytes[..], 0),
        &mut target,
        &DecodeLimits::default(),
    )?;
    assert_eq!(target, original);
    // Without it the loader peeks: the element's first byte reads as the
    // null marker, and the next element starts one byte early.
    let empty = decode(&desc, 0, &mut VmReader::new(&bytes[..], 0))?;
    assert_eq!(
        empty,
        VmStruct::new().with("slots", VmValue::Array(vec![VmValue::None, VmValue::UInt(0x0530)]))
    );
    Ok(())
}

// ---- faults the property test found ----

/// Elements end with a nested struct that sends a subsection. After
/// element 0 the loader meets element 1's `dev.e.n/x` header: it starts with
/// the element's name `dev.e` but not with `dev.e/`, so it is not the
/// element's subsection. (QEMU compares the prefix alone and would refuse
/// the stream with "does not exist"; vmkit took it as an unknown subsection
/// too.)
#[test]
fn a_nested_structs_subsection_in_the_next_element_is_not_the_elements() -> Result<(), VmStateError> {
    let sub = VmStateDescription::builder("dev.e.n/x")
        .simple("v", FieldKind::U8)
        .build()?;
    let nested = VmStateDescription::builder("dev.e.n").subsection(sub).build()?;
    let elem = VmStateDescription::builder("dev.e")
        .simple("n", FieldKind::Struct(nested))
        .build()?;
    let desc = VmStateDescription::builder("dev")
        .simple(
            "a",
            FieldKind::Array {
                elem: Box::new(FieldKind::Struct(elem)),
                len: ArrayLen::Fixed(2),
            },
        )
        .build()?;
    let element = |v: u64| {
        let n = VmStruct::new().with_subsection("dev.e.n/x", VmStruct::new().with("v", VmValue::UInt(v)));
        VmValue::Struct(VmStruct::new().with("n", VmValue::Struct(n)))
    };
    let original = VmStruct::new().with("a", VmValue::Array(vec![element(1), element(2)]));
    let mut state = original.clone();
    let mut bytes = Vec::new();
    let (n, body) = encode_described(&desc, &mut state, &mut bytes, 0)?;
    bytes.push(FOOTER);
    let mut r = VmReader::new(&bytes[..], 0);
    assert_eq!(decode(&desc, 0, &mut r)?, original);
    assert_eq!(r.offset(), n);
    let mut r = VmReader::new(&bytes[..], 0);
    let generic = decode_with_vmdesc(&device_entry("dev", 0, &body), &mut r, &DecodeLimits::default())?;
    assert_eq!(generic, original);
    assert_eq!(r.offset(), n);
    Ok(())
}
