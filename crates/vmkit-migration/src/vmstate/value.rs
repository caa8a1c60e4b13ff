//! The value tree a description is encoded from and decoded into.

use serde_json::{Map, Value};

/// One value of a field (or of one array element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmValue {
    /// A `Bool` field.
    Bool(bool),
    /// A signed integer field (`I8`..`I64`, `Timer`).
    Int(i64),
    /// An unsigned integer field (`U8`..`U64`).
    UInt(u64),
    /// A `Buffer` or `VBuffer` field.
    Bytes(Vec<u8>),
    /// An array (also a bitmap: its be64 words).
    Array(Vec<VmValue>),
    /// A nested struct.
    Struct(VmStruct),
    /// An absent `Optional` value (the null marker on the wire).
    None,
}

impl VmValue {
    /// The value as a u64: an unsigned integer, a non-negative signed one, or
    /// a bool (0/1).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            VmValue::UInt(v) => Some(v),
            VmValue::Int(v) => u64::try_from(v).ok(),
            VmValue::Bool(b) => Some(u64::from(b)),
            _ => None,
        }
    }

    /// The value as an i64 (an unsigned one only if it fits).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            VmValue::Int(v) => Some(v),
            VmValue::UInt(v) => i64::try_from(v).ok(),
            VmValue::Bool(b) => Some(i64::from(b)),
            _ => None,
        }
    }

    /// An integer as i128 (lossless for both kinds).
    pub(crate) fn as_i128(&self) -> Option<i128> {
        match *self {
            VmValue::Int(v) => Some(i128::from(v)),
            VmValue::UInt(v) => Some(i128::from(v)),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            VmValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes of a buffer.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            VmValue::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn as_array(&self) -> Option<&[VmValue]> {
        match self {
            VmValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A nested struct.
    pub fn as_struct(&self) -> Option<&VmStruct> {
        match self {
            VmValue::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// A nested struct, mutably.
    pub fn as_struct_mut(&mut self) -> Option<&mut VmStruct> {
        match self {
            VmValue::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is the absent optional value.
    pub fn is_none(&self) -> bool {
        matches!(self, VmValue::None)
    }

    /// A JSON rendering for analysis: integers and bools as themselves,
    /// bytes as a lowercase hex string, arrays as arrays, structs as
    /// [`VmStruct::to_json`], `None` as `null`.
    pub fn to_json(&self) -> Value {
        match self {
            VmValue::Bool(b) => Value::Bool(*b),
            VmValue::Int(v) => Value::from(*v),
            VmValue::UInt(v) => Value::from(*v),
            VmValue::Bytes(b) => Value::String(hex(b)),
            VmValue::Array(a) => Value::Array(a.iter().map(VmValue::to_json).collect()),
            VmValue::Struct(s) => s.to_json(),
            VmValue::None => Value::Null,
        }
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The state of one description: its fields in wire order and the
/// subsections it holds (sent or loaded), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmStruct {
    /// `(field name, value)` in order.
    pub fields: Vec<(String, VmValue)>,
    /// `(subsection name, state)` in order.
    pub subsections: Vec<(String, VmStruct)>,
}

impl VmStruct {
    /// An empty struct.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a field, builder style.
    pub fn with(mut self, name: impl Into<String>, value: VmValue) -> Self {
        self.set(name, value);
        self
    }

    /// Adds (or replaces) a subsection, builder style.
    pub fn with_subsection(mut self, name: impl Into<String>, state: VmStruct) -> Self {
        self.set_subsection(name, state);
        self
    }

    /// The field named `name`.
    pub fn get(&self, name: &str) -> Option<&VmValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The field named `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut VmValue> {
        self.fields.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets a field: replaces its value in place or appends it.
    pub fn set(&mut self, name: impl Into<String>, value: VmValue) {
        let name = name.into();
        match self.get_mut(&name) {
            Some(slot) => *slot = value,
            None => self.fields.push((name, value)),
        }
    }

    /// Removes a field, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<VmValue> {
        let i = self.fields.iter().position(|(n, _)| n == name)?;
        Some(self.fields.remove(i).1)
    }

    /// The field `name` as a u64 (see [`VmValue::as_u64`]).
    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name).and_then(VmValue::as_u64)
    }

    /// The field `name` as an i64 (see [`VmValue::as_i64`]).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(VmValue::as_i64)
    }

    /// The subsection named `name` (its full name, e.g. `"ide/pio"`).
    pub fn subsection(&self, name: &str) -> Option<&VmStruct> {
        self.subsections.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The subsection named `name`, mutably.
    pub fn subsection_mut(&mut self, name: &str) -> Option<&mut VmStruct> {
        self.subsections.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets a subsection: replaces it in place or appends it.
    pub fn set_subsection(&mut self, name: impl Into<String>, state: VmStruct) {
        let name = name.into();
        match self.subsection_mut(&name) {
            Some(slot) => *slot = state,
            None => self.subsections.push((name, state)),
        }
    }

    /// The subsection `name`, appended empty if absent.
    pub fn subsection_entry(&mut self, name: &str) -> &mut VmStruct {
        let i = match self.subsections.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.subsections.push((name.to_owned(), VmStruct::new()));
                self.subsections.len() - 1
            }
        };
        &mut self.subsections[i].1
    }

    /// JSON rendering: an object of the fields (by name) plus, if any, a
    /// `"subsections"` object of the subsections (by name).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (name, value) in &self.fields {
            map.insert(name.clone(), value.to_json());
        }
        if !self.subsections.is_empty() {
            let subs: Map<String, Value> = self.subsections.iter().map(|(n, s)| (n.clone(), s.to_json())).collect();
            map.insert("subsections".into(), Value::Object(subs));
        }
        Value::Object(map)
    }

    /// A multi-line, indented rendering for people.
    pub fn pretty(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
    }
}
