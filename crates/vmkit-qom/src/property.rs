//! Property definitions: kinds, flags, defaults, accessors and value checking.
//!
//! A [`PropertyDef`] describes one property. Class properties are declared on a
//! type and exist on every instance of it and its subtypes; instance properties
//! are added to one object (by a type's `instance_init`, or at run time, as
//! `child<>` properties are). Plain properties store their value in the object;
//! a property with a custom accessor computes it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::object::Object;
use crate::size::parse_size;
use crate::value::Value;

/// Reads a computed property.
pub type Getter = Arc<dyn Fn(&Object) -> Result<Value> + Send + Sync>;
/// Writes a computed property.
pub type Setter = Arc<dyn Fn(&Object, Value) -> Result<()> + Send + Sync>;

/// Reads a property's value from text (a command line's `prop=value`, or a
/// string given where the kind is not one) in a syntax of the property's
/// own, as QEMU's property types with a custom setter do (a PCI `addr`:
/// "SS.F"). Returns the value of the property's kind, or why the text is
/// not one.
#[derive(Clone)]
pub struct TextParser(Arc<ParseFn>);

/// The function behind a [`TextParser`].
type ParseFn = dyn Fn(&str) -> std::result::Result<Value, String> + Send + Sync;

impl TextParser {
    /// A parser calling `f`.
    pub fn new(f: impl Fn(&str) -> std::result::Result<Value, String> + Send + Sync + 'static) -> TextParser {
        TextParser(Arc::new(f))
    }

    /// Parses `text`.
    pub fn parse(&self, text: &str) -> std::result::Result<Value, String> {
        (self.0)(text)
    }
}

impl fmt::Debug for TextParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TextParser")
    }
}

/// What a property holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyKind {
    /// `bool`
    Bool,
    /// `int8` .. `int64`, with an inclusive range.
    Int {
        /// Width in bits: 8, 16, 32 or 64.
        bits: u8,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// `uint8` .. `uint64`, with an inclusive range.
    UInt {
        /// Width in bits: 8, 16, 32 or 64.
        bits: u8,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `str`
    Str,
    /// An enumeration, named like a QAPI enum (e.g. `OnOffAuto`).
    Enum {
        /// The enum's type name.
        name: Arc<str>,
        /// Its members, in order.
        values: Arc<[Arc<str>]>,
    },
    /// `size`: a byte count, settable as an integer or a string like `64K`.
    Size,
    /// `link<TYPE>`: a reference to another object, set by path.
    Link {
        /// The type the target must be or implement.
        target: Arc<str>,
        /// Whether the link holds a reference on its target.
        strong: bool,
    },
    /// `child<TYPE>`: the composition edge to a child (read-only; its value is the child's path).
    Child {
        /// The child's type.
        type_name: Arc<str>,
    },
}

impl PropertyKind {
    /// A signed integer of `bits` width with its full range.
    pub fn int(bits: u8) -> Self {
        let (min, max) = match bits {
            8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
            16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
            32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        PropertyKind::Int {
            bits: normalize_bits(bits),
            min,
            max,
        }
    }

    /// An unsigned integer of `bits` width with its full range.
    pub fn uint(bits: u8) -> Self {
        let max = match bits {
            8 => u64::from(u8::MAX),
            16 => u64::from(u16::MAX),
            32 => u64::from(u32::MAX),
            _ => u64::MAX,
        };
        PropertyKind::UInt {
            bits: normalize_bits(bits),
            min: 0,
            max,
        }
    }

    /// The QOM type string of the property: `bool`, `uint32`, `str`, `size`, `link<device>`...
    pub fn type_name(&self) -> String {
        match self {
            PropertyKind::Bool => "bool".into(),
            PropertyKind::Int { bits, .. } => format!("int{bits}"),
            PropertyKind::UInt { bits, .. } => format!("uint{bits}"),
            PropertyKind::Str => "str".into(),
            PropertyKind::Enum { name, .. } => name.to_string(),
            PropertyKind::Size => "size".into(),
            PropertyKind::Link { target, .. } => format!("link<{target}>"),
            PropertyKind::Child { type_name } => format!("child<{type_name}>"),
        }
    }

    /// The zero value of the kind, used when a property has no explicit default.
    pub fn zero(&self) -> Value {
        match self {
            PropertyKind::Bool => Value::Bool(false),
            PropertyKind::Int { min, max, .. } => Value::Int(0.clamp(*min, *max)),
            PropertyKind::UInt { min, .. } => Value::UInt(*min),
            PropertyKind::Size => Value::UInt(0),
            PropertyKind::Str => Value::str(""),
            PropertyKind::Enum { values, .. } => values.first().map_or(Value::Null, |v| Value::Str(v.clone())),
            PropertyKind::Link { .. } | PropertyKind::Child { .. } => Value::Null,
        }
    }

    /// Checks `value` against the kind and converts it to the stored form
    /// (`size` strings become byte counts, integers are range-checked).
    /// Errors name the property through `ctx`.
    pub fn coerce(&self, value: Value, ctx: &PropCtx<'_>) -> Result<Value> {
        let wrong = |value: &Value| ctx.type_error(&self.type_name(), value);
        match self {
            PropertyKind::Bool => match value {
                Value::Bool(_) => Ok(value),
                other => Err(wrong(&other)),
            },
            PropertyKind::Int { min, max, .. } => {
                let n = value.as_integer().ok_or_else(|| wrong(&value))?;
                if n < i128::from(*min) || n > i128::from(*max) {
                    return Err(ctx.value_error(
                        &format!("{} ({min}..={max})", self.type_name()),
                        format!("{n} is out of range"),
                    ));
                }
                // In range of an i64 by construction.
                Ok(Value::Int(i64::try_from(n).unwrap_or_default()))
            }
            PropertyKind::UInt { min, max, .. } => {
                let n = value.as_integer().ok_or_else(|| wrong(&value))?;
                if n < i128::from(*min) || n > i128::from(*max) {
                    return Err(ctx.value_error(
                        &format!("{} ({min}..={max})", self.type_name()),
                        format!("{n} is out of range"),
                    ));
                }
                Ok(Value::UInt(u64::try_from(n).unwrap_or_default()))
            }
            PropertyKind::Size => match &value {
                Value::Str(s) => parse_size(s)
                    .map(Value::UInt)
                    .map_err(|reason| ctx.value_error("size", reason)),
                Value::Int(i) => u64::try_from(*i)
                    .map(Value::UInt)
                    .map_err(|_| ctx.value_error("size", format!("{i} is negative"))),
                Value::UInt(_) => Ok(value),
                _ => Err(ctx.type_error("size (an integer or a string such as \"64K\")", &value)),
            },
            PropertyKind::Str => match value {
                Value::Str(_) => Ok(value),
                other => Err(wrong(&other)),
            },
            PropertyKind::Enum { name, values } => match &value {
                Value::Str(s) if values.iter().any(|v| **v == **s) => Ok(value),
                Value::Str(s) => Err(ctx.value_error(
                    &format!(
                        "{name} (one of {})",
                        values.iter().map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
                    ),
                    format!("'{s}' is not a member"),
                )),
                other => Err(wrong(other)),
            },
            // Links are set through path resolution by the object, children never.
            PropertyKind::Link { .. } => match value {
                Value::Str(_) | Value::Null => Ok(value),
                other => Err(ctx.type_error(&format!("{} (a path)", self.type_name()), &other)),
            },
            PropertyKind::Child { .. } => Err(ctx.access_error("a child<> property cannot be set")),
        }
    }

    /// Parses a command-line style string (`on`, `off`, `0x10`, `64K`...) into a value of this kind.
    pub fn parse_str(&self, text: &str, ctx: &PropCtx<'_>) -> Result<Value> {
        let value = match self {
            PropertyKind::Bool => match text {
                "on" | "yes" | "true" | "y" => Value::Bool(true),
                "off" | "no" | "false" | "n" => Value::Bool(false),
                _ => return Err(ctx.value_error("bool ('on' or 'off')", format!("'{text}' is not a boolean"))),
            },
            PropertyKind::Int { .. } => parse_int(text)
                .map(Value::Int)
                .ok_or_else(|| ctx.value_error(&self.type_name(), format!("'{text}' is not an integer")))?,
            PropertyKind::UInt { .. } => parse_uint(text)
                .map(Value::UInt)
                .ok_or_else(|| ctx.value_error(&self.type_name(), format!("'{text}' is not an integer")))?,
            _ => Value::str(text),
        };
        self.coerce(value, ctx)
    }
}

/// Why a property type name (with its options) does not make a [`PropertyKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseKindError {
    /// Not a type name that can be declared.
    #[error("unknown property type '{0}' (expected bool, int8..int64, uint8..uint64, str, size, enum or link<TYPE>)")]
    Unknown(String),
    /// `child<TYPE>`: such properties come from adding a child, not from a declaration.
    #[error("'{0}' cannot be declared: child<> properties are made by adding a child")]
    Child(String),
    /// `enum` without its values.
    #[error("an enum property needs 'values'")]
    EnumWithoutValues,
    /// `enum` with an empty list of values.
    #[error("an enum property needs at least one value")]
    EnumEmpty,
    /// A bound outside what the integer type can hold.
    #[error("{0} out of range")]
    BoundOutOfRange(&'static str),
    /// `min` above `max` (after both were narrowed to the type's range).
    #[error("min is greater than max")]
    EmptyRange,
    /// `min`/`max` on a type that is not an integer.
    #[error("min/max apply to integer properties only")]
    RangeOnNonInteger,
}

/// What a property declaration may say besides its type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindOptions {
    /// Smallest accepted value (integers only); narrows the type's range.
    pub min: Option<i128>,
    /// Largest accepted value (integers only); narrows the type's range.
    pub max: Option<i128>,
    /// The members of an `enum` (required for it).
    pub values: Option<Vec<String>>,
    /// The name of an `enum` type (`enum` when not given).
    pub enum_name: Option<String>,
    /// Whether a `link<>` holds a reference on its target.
    pub strong: bool,
}

impl Default for KindOptions {
    /// No range, no enum values, strong links.
    fn default() -> KindOptions {
        KindOptions {
            min: None,
            max: None,
            values: None,
            enum_name: None,
            strong: true,
        }
    }
}

/// Parses a declarable type name: `bool`, `int8`..`int64`, `uint8`..`uint64`,
/// `str` (or `string`), `size`, `link<TYPE>` (strong). `enum` needs its
/// values: see [`PropertyKind::parse_with`].
impl FromStr for PropertyKind {
    type Err = ParseKindError;

    fn from_str(type_name: &str) -> std::result::Result<PropertyKind, ParseKindError> {
        PropertyKind::parse_with(type_name, KindOptions::default())
    }
}

impl PropertyKind {
    /// Parses a type name with the rest of a declaration (range, enum
    /// values, link strength), as a binding's property definition gives them.
    pub fn parse_with(type_name: &str, options: KindOptions) -> std::result::Result<PropertyKind, ParseKindError> {
        let KindOptions {
            min,
            max,
            values,
            enum_name,
            strong,
        } = options;
        let int_bits = |prefix: &str| -> Option<u8> {
            type_name.strip_prefix(prefix).and_then(|b| match b {
                "8" => Some(8),
                "16" => Some(16),
                "32" => Some(32),
                "64" => Some(64),
                _ => None,
            })
        };
        let angle = |prefix: &str| type_name.strip_prefix(prefix).and_then(|t| t.strip_suffix('>'));
        let mut kind = match type_name {
            "bool" => PropertyKind::Bool,
            "str" | "string" => PropertyKind::Str,
            "size" => PropertyKind::Size,
            "enum" => {
                let values = values.ok_or(ParseKindError::EnumWithoutValues)?;
                if values.is_empty() {
                    return Err(ParseKindError::EnumEmpty);
                }
                PropertyKind::Enum {
                    name: enum_name.unwrap_or_else(|| "enum".into()).into(),
                    values: values.into_iter().map(Arc::from).collect(),
                }
            }
            _ => {
                if let Some(bits) = int_bits("uint") {
                    PropertyKind::uint(bits)
                } else if let Some(bits) = int_bits("int") {
                    PropertyKind::int(bits)
                } else if let Some(target) = angle("link<") {
                    PropertyKind::Link {
                        target: target.into(),
                        strong,
                    }
                } else if angle("child<").is_some() {
                    return Err(ParseKindError::Child(type_name.to_string()));
                } else {
                    return Err(ParseKindError::Unknown(type_name.to_string()));
                }
            }
        };
        match &mut kind {
            PropertyKind::Int { min: lo, max: hi, .. } => narrow(lo, hi, min, max)?,
            PropertyKind::UInt { min: lo, max: hi, .. } => narrow(lo, hi, min, max)?,
            _ if min.is_some() || max.is_some() => return Err(ParseKindError::RangeOnNonInteger),
            _ => {}
        }
        Ok(kind)
    }
}

fn normalize_bits(bits: u8) -> u8 {
    match bits {
        8 | 16 | 32 => bits,
        _ => 64,
    }
}

/// Narrows an integer kind's range `[lo, hi]` to the declared bounds.
fn narrow<T: TryFrom<i128> + Ord + Copy>(
    lo: &mut T,
    hi: &mut T,
    min: Option<i128>,
    max: Option<i128>,
) -> std::result::Result<(), ParseKindError> {
    if let Some(m) = min {
        *lo = T::try_from(m)
            .map_err(|_| ParseKindError::BoundOutOfRange("min"))?
            .max(*lo);
    }
    if let Some(m) = max {
        *hi = T::try_from(m)
            .map_err(|_| ParseKindError::BoundOutOfRange("max"))?
            .min(*hi);
    }
    if *lo > *hi {
        return Err(ParseKindError::EmptyRange);
    }
    Ok(())
}

fn parse_uint(text: &str) -> Option<u64> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let t = text.trim();
    match t.strip_prefix('-') {
        Some(rest) => parse_uint(rest).and_then(|u| 0i64.checked_sub_unsigned(u)),
        None => parse_uint(t).and_then(|u| i64::try_from(u).ok()),
    }
}

/// Names the property and object in errors raised while checking a value.
pub struct PropCtx<'a> {
    /// The property name.
    pub name: &'a str,
    /// Description of the object (`'my-dev' at /machine/peripheral/d0`).
    pub object: &'a dyn Fn() -> String,
}

impl PropCtx<'_> {
    /// A wrong-type error for this property.
    pub fn type_error(&self, expected: &str, got: &Value) -> Error {
        Error::PropertyType {
            object: (self.object)(),
            name: self.name.to_string(),
            expected: expected.to_string(),
            got: got.kind_name().to_string(),
        }
    }

    /// A bad-value error for this property.
    pub fn value_error(&self, expected: &str, reason: impl Into<String>) -> Error {
        Error::PropertyValue {
            object: (self.object)(),
            name: self.name.to_string(),
            expected: expected.to_string(),
            reason: reason.into(),
        }
    }

    /// An access error for this property.
    pub fn access_error(&self, reason: impl Into<String>) -> Error {
        Error::PropertyAccess {
            object: (self.object)(),
            name: self.name.to_string(),
            reason: reason.into(),
        }
    }
}

/// How a property's value is read and written.
#[derive(Clone, Default)]
pub enum Accessor {
    /// The value is stored in the object (the usual case).
    #[default]
    Stored,
    /// The value is computed by callbacks; a missing getter makes it write-only,
    /// a missing setter read-only.
    Custom {
        /// Reads the value.
        get: Option<Getter>,
        /// Writes the value.
        set: Option<Setter>,
    },
}

impl fmt::Debug for Accessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accessor::Stored => f.write_str("Stored"),
            Accessor::Custom { get, set } => {
                write!(f, "Custom {{ get: {}, set: {} }}", get.is_some(), set.is_some())
            }
        }
    }
}

/// A property definition.
///
/// ```
/// use vmkit_qom::{PropertyDef, PropertyKind, Value};
/// let irq = PropertyDef::new("irq", PropertyKind::uint(8))
///     .default(Value::UInt(5))
///     .before_realize()
///     .description("interrupt line");
/// assert_eq!(irq.kind.type_name(), "uint8");
/// ```
#[derive(Debug, Clone)]
pub struct PropertyDef {
    /// The property's name.
    pub name: Arc<str>,
    /// What it holds.
    pub kind: PropertyKind,
    /// Shown by introspection.
    pub description: Option<Arc<str>>,
    /// The initial value of a stored property (the kind's zero value when `None`).
    pub default: Option<Value>,
    /// Refuse writes.
    pub read_only: bool,
    /// Refuse writes once the object is realized (devices) or completed (user-creatable objects).
    pub before_realize_only: bool,
    /// How the value is read and written.
    pub accessor: Accessor,
    /// Reads text in the property's own syntax (see [`TextParser`]);
    /// `None`: text is read as the kind reads it.
    pub parser: Option<TextParser>,
}

impl PropertyDef {
    /// A stored, writable property with no explicit default.
    pub fn new(name: impl Into<Arc<str>>, kind: PropertyKind) -> Self {
        PropertyDef {
            name: name.into(),
            kind,
            description: None,
            default: None,
            read_only: false,
            before_realize_only: false,
            accessor: Accessor::Stored,
            parser: None,
        }
    }

    /// Sets the default value (checked when the type is initialised).
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<Arc<str>>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Makes the property read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Makes the property settable only before realize/complete.
    pub fn before_realize(mut self) -> Self {
        self.before_realize_only = true;
        self
    }

    /// Gives the property custom accessors.
    pub fn accessors(mut self, get: Option<Getter>, set: Option<Setter>) -> Self {
        if set.is_none() {
            self.read_only = true;
        }
        self.accessor = Accessor::Custom { get, set };
        self
    }

    /// Reads text given for the property with `parser` instead of the
    /// kind's own syntax: on the command line, and where a string is
    /// given for a property whose kind is not a string.
    pub fn parser(mut self, parser: TextParser) -> Self {
        self.parser = Some(parser);
        self
    }

    /// The value `text` stands for: by the property's parser, else by its kind.
    pub fn parse_text(&self, text: &str, ctx: &PropCtx<'_>) -> Result<Value> {
        match &self.parser {
            Some(p) => {
                let value = p
                    .parse(text)
                    .map_err(|reason| ctx.value_error(&self.kind.type_name(), reason))?;
                self.kind.coerce(value, ctx)
            }
            None => self.kind.parse_str(text, ctx),
        }
    }

    /// Whether the value is stored in the object.
    pub fn is_stored(&self) -> bool {
        matches!(self.accessor, Accessor::Stored)
    }

    /// Whether the property can be read.
    pub fn readable(&self) -> bool {
        match &self.accessor {
            Accessor::Stored => true,
            Accessor::Custom { get, .. } => get.is_some(),
        }
    }

    /// Whether the property can be written (at some point of the object's life).
    pub fn writable(&self) -> bool {
        !self.read_only && !matches!(self.kind, PropertyKind::Child { .. })
    }

    /// The value a fresh object starts with.
    pub fn initial_value(&self) -> Value {
        self.default.clone().unwrap_or_else(|| self.kind.zero())
    }
}

/// What introspection reports about a property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyInfo {
    /// The name.
    pub name: String,
    /// The QOM type string (`uint32`, `link<device>`...).
    pub type_name: String,
    /// The description, if any.
    pub description: Option<String>,
    /// The default value of a stored property.
    pub default_value: Option<Value>,
    /// Whether it can be read.
    pub readable: bool,
    /// Whether it can be written.
    pub writable: bool,
    /// Whether writes are refused after realize/complete.
    pub before_realize_only: bool,
    /// Whether it is declared by the class (as opposed to added to the instance).
    pub class_property: bool,
}

impl PropertyInfo {
    pub(crate) fn from_def(def: &PropertyDef, class_property: bool) -> Self {
        PropertyInfo {
            name: def.name.to_string(),
            type_name: def.kind.type_name(),
            description: def.description.as_deref().map(str::to_string),
            default_value: if def.is_stored()
                && !matches!(def.kind, PropertyKind::Link { .. } | PropertyKind::Child { .. })
            {
                Some(def.initial_value())
            } else {
                None
            },
            readable: def.readable(),
            writable: def.writable(),
            before_realize_only: def.before_realize_only,
            class_property,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PropCtx<'static> {
        static DESCR: fn() -> String = || "'t'".to_string();
        PropCtx {
            name: "p",
            object: &DESCR,
        }
    }

    #[test]
    fn integer_ranges() {
        let k = PropertyKind::uint(8);
        assert_eq!(k.coerce(Value::Int(255), &ctx()).ok(), Some(Value::UInt(255)));
        assert!(matches!(
            k.coerce(Value::Int(256), &ctx()),
            Err(Error::PropertyValue { .. })
        ));
        assert!(matches!(
            k.coerce(Value::Int(-1), &ctx()),
            Err(Error::PropertyValue { .. })
        ));
        assert!(matches!(
            k.coerce(Value::str("1"), &ctx()),
            Err(Error::PropertyType { .. })
        ));
        let k = PropertyKind::int(16);
        assert_eq!(k.coerce(Value::Int(-32768), &ctx()).ok(), Some(Value::Int(-32768)));
        assert!(k.coerce(Value::UInt(u64::MAX), &ctx()).is_err());
        let k = PropertyKind::uint(64);
        assert_eq!(
            k.coerce(Value::UInt(u64::MAX), &ctx()).ok(),
            Some(Value::UInt(u64::MAX))
        );
    }

    #[test]
    fn sizes_enums_and_strings() {
        assert_eq!(
            PropertyKind::Size.coerce(Value::str("64K"), &ctx()).ok(),
            Some(Value::UInt(65536))
        );
        assert!(PropertyKind::Size.coerce(Value::Int(-5), &ctx()).is_err());
        assert!(PropertyKind::Size.coerce(Value::Bool(true), &ctx()).is_err());
        let e = PropertyKind::Enum {
            name: "OnOffAuto".into(),
            values: vec!["on".into(), "off".into(), "auto".into()].into(),
        };
        assert!(e.coerce(Value::str("auto"), &ctx()).is_ok());
        let err = e
            .coerce(Value::str("maybe"), &ctx())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("'maybe' is not a member") && err.contains("'auto'"),
            "{err}"
        );
        assert_eq!(e.zero(), Value::str("on"));
    }

    #[test]
    fn type_names_parse_into_kinds() {
        let parse = |t: &str| t.parse::<PropertyKind>();
        assert_eq!(parse("bool"), Ok(PropertyKind::Bool));
        assert_eq!(parse("str"), Ok(PropertyKind::Str));
        assert_eq!(parse("string"), Ok(PropertyKind::Str));
        assert_eq!(parse("size"), Ok(PropertyKind::Size));
        for bits in [8u8, 16, 32, 64] {
            assert_eq!(parse(&format!("uint{bits}")), Ok(PropertyKind::uint(bits)));
            assert_eq!(parse(&format!("int{bits}")), Ok(PropertyKind::int(bits)));
        }
        assert_eq!(
            parse("link<pci-device>"),
            Ok(PropertyKind::Link {
                target: "pci-device".into(),
                strong: true
            })
        );
        // What a kind reports as its type name parses back to it (enums
        // report their own name, which needs their values).
        for kind in [
            PropertyKind::Bool,
            PropertyKind::int(16),
            PropertyKind::uint(64),
            PropertyKind::Size,
        ] {
            assert_eq!(parse(&kind.type_name()), Ok(kind));
        }
        for bad in ["float", "uint", "int7", "uint128", "link<x", "link", "", "Bool"] {
            let e = parse(bad);
            assert_eq!(e, Err(ParseKindError::Unknown(bad.to_string())), "{bad}");
        }
        let msg = parse("float").err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            msg,
            "unknown property type 'float' (expected bool, int8..int64, uint8..uint64, str, size, enum or link<TYPE>)"
        );
        assert_eq!(parse("child<dev>"), Err(ParseKindError::Child("child<dev>".into())));
        assert_eq!(parse("enum"), Err(ParseKindError::EnumWithoutValues));
        assert_eq!(
            ParseKindError::EnumWithoutValues.to_string(),
            "an enum property needs 'values'"
        );
    }

    #[test]
    fn declaration_options_shape_the_kind() {
        let with = |t: &str, o: KindOptions| PropertyKind::parse_with(t, o);
        let range = |min, max| KindOptions {
            min,
            max,
            ..KindOptions::default()
        };
        assert_eq!(
            with("uint16", range(Some(1), Some(1000))),
            Ok(PropertyKind::UInt {
                bits: 16,
                min: 1,
                max: 1000
            })
        );
        // Bounds only narrow the type's own range.
        assert_eq!(
            with("int8", range(Some(-1000), Some(5))),
            Ok(PropertyKind::Int {
                bits: 8,
                min: -128,
                max: 5
            })
        );
        assert_eq!(
            with("uint8", range(Some(-1), None)),
            Err(ParseKindError::BoundOutOfRange("min"))
        );
        assert_eq!(
            with("int64", range(None, Some(i128::MAX))),
            Err(ParseKindError::BoundOutOfRange("max"))
        );
        assert_eq!(with("uint8", range(Some(9), Some(3))), Err(ParseKindError::EmptyRange));
        assert_eq!(
            with("str", range(Some(0), None)),
            Err(ParseKindError::RangeOnNonInteger)
        );
        assert_eq!(
            ParseKindError::RangeOnNonInteger.to_string(),
            "min/max apply to integer properties only"
        );
        assert_eq!(ParseKindError::BoundOutOfRange("min").to_string(), "min out of range");
        assert_eq!(ParseKindError::EmptyRange.to_string(), "min is greater than max");
        let values = |v: &[&str]| KindOptions {
            values: Some(v.iter().map(|s| s.to_string()).collect()),
            ..KindOptions::default()
        };
        assert_eq!(
            with("enum", values(&["on", "off"])),
            Ok(PropertyKind::Enum {
                name: "enum".into(),
                values: vec![Arc::from("on"), Arc::from("off")].into()
            })
        );
        let named = KindOptions {
            enum_name: Some("OnOffAuto".into()),
            ..values(&["auto"])
        };
        assert_eq!(with("enum", named).map(|k| k.type_name()), Ok("OnOffAuto".to_string()));
        assert_eq!(with("enum", values(&[])), Err(ParseKindError::EnumEmpty));
        let weak = KindOptions {
            strong: false,
            ..KindOptions::default()
        };
        assert_eq!(
            with("link<dev>", weak),
            Ok(PropertyKind::Link {
                target: "dev".into(),
                strong: false
            })
        );
    }

    #[test]
    fn command_line_strings() {
        assert_eq!(PropertyKind::Bool.parse_str("on", &ctx()).ok(), Some(Value::Bool(true)));
        assert!(PropertyKind::Bool.parse_str("maybe", &ctx()).is_err());
        assert_eq!(
            PropertyKind::uint(32).parse_str("0x10", &ctx()).ok(),
            Some(Value::UInt(16))
        );
        assert_eq!(PropertyKind::int(32).parse_str("-7", &ctx()).ok(), Some(Value::Int(-7)));
        assert_eq!(
            PropertyKind::int(64).parse_str("-9223372036854775808", &ctx()).ok(),
            Some(Value::Int(i64::MIN))
        );
        assert!(PropertyKind::int(8).parse_str("200", &ctx()).is_err());
    }
}
