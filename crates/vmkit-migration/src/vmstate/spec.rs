//! Field kinds and migration priorities written as text.
//!
//! Kinds: a scalar name (`bool`, `uint8`..`uint64` or `u8`..`u64`,
//! `int8`..`int64` or `i8`..`i64`, `timer`) or a constructor:
//! `buffer(N)`, `vbuffer(FIELD)`, `unused(N)`, `bitmap(NBITS)`,
//! `array(KIND, N)` / `array(KIND, FIELD)`, `optional(KIND)`,
//! `equal(KIND)`. A nested struct needs a description object, so it has no
//! text form. Priorities: QEMU's names in lower case with `-`
//! (`default`, `iommu`, `pci-bus`, ...).
//!
//! ```
//! use vmkit_migration::vmstate::{ArrayLen, FieldKind, MigrationPriority};
//!
//! let kind: FieldKind = "array(uint16, count)".parse()?;
//! assert!(matches!(kind, FieldKind::Array { len: ArrayLen::Field(ref f), .. } if f == "count"));
//! assert_eq!("pci-bus".parse::<MigrationPriority>()?, MigrationPriority::PciBus);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use super::desc::{ArrayLen, FieldKind, MigrationPriority};

/// A kind or priority that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} '{text}': {reason}")]
pub struct SpecError {
    /// `kind` or `migration priority`.
    pub what: &'static str,
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What a kind may be, for error messages.
pub const KIND_SYNTAX: &str = "a scalar ('bool', 'uint8'..'uint64', 'int8'..'int64', 'timer') or buffer(N), \
     vbuffer(FIELD), unused(N), bitmap(NBITS), array(KIND, N|FIELD), optional(KIND), equal(KIND)";

/// The scalar kind called `name`, if it is one.
pub fn scalar_kind(name: &str) -> Option<FieldKind> {
    Some(match name {
        "bool" => FieldKind::Bool,
        "uint8" | "u8" => FieldKind::U8,
        "uint16" | "u16" => FieldKind::U16,
        "uint32" | "u32" => FieldKind::U32,
        "uint64" | "u64" => FieldKind::U64,
        "int8" | "i8" => FieldKind::I8,
        "int16" | "i16" => FieldKind::I16,
        "int32" | "i32" => FieldKind::I32,
        "int64" | "i64" => FieldKind::I64,
        "timer" => FieldKind::Timer,
        _ => return None,
    })
}

impl FromStr for FieldKind {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<FieldKind, SpecError> {
        let fail = |reason: String| SpecError {
            what: "kind",
            text: text.to_owned(),
            reason,
        };
        let mut p = Parser { rest: text, depth: 0 };
        let kind = p.kind().map_err(fail)?;
        if !p.rest.trim().is_empty() {
            return Err(fail(format!("unexpected '{}' after the kind", p.rest.trim())));
        }
        Ok(kind)
    }
}

/// How deeply kinds may nest in text (`array(optional(...))`): far more
/// than any description needs, and a bound on the parser's recursion.
pub const MAX_KIND_DEPTH: u32 = 32;

/// A recursive-descent parser over the rest of the text.
struct Parser<'a> {
    rest: &'a str,
    depth: u32,
}

impl<'a> Parser<'a> {
    fn word(&mut self) -> &'a str {
        let s = self.rest.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(s.len());
        self.rest = &s[end..];
        &s[..end]
    }

    fn eat(&mut self, c: char) -> Result<(), String> {
        let s = self.rest.trim_start();
        match s.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(format!("expected '{c}'")),
        }
    }

    fn number(&mut self) -> Result<u32, String> {
        let w = self.word();
        w.parse().map_err(|_| format!("'{w}' is not a count"))
    }

    fn field_name(&mut self) -> Result<String, String> {
        let w = self.word();
        if w.is_empty() {
            return Err("expected a field name".into());
        }
        Ok(w.to_owned())
    }

    fn kind(&mut self) -> Result<FieldKind, String> {
        if self.depth == MAX_KIND_DEPTH {
            return Err(format!("kinds nest deeper than {MAX_KIND_DEPTH}"));
        }
        self.depth += 1;
        let kind = self.kind_here();
        self.depth -= 1;
        kind
    }

    fn kind_here(&mut self) -> Result<FieldKind, String> {
        let name = self.word();
        if let Some(kind) = scalar_kind(name) {
            return Ok(kind);
        }
        let kind = match name {
            "buffer" | "vbuffer" | "unused" | "bitmap" | "array" | "optional" | "equal" => {
                self.eat('(')?;
                let kind = match name {
                    "buffer" => FieldKind::Buffer { len: self.number()? },
                    "vbuffer" => FieldKind::VBuffer {
                        len_field: self.field_name()?,
                    },
                    "unused" => FieldKind::Unused { len: self.number()? },
                    "bitmap" => FieldKind::Bitmap { nbits: self.number()? },
                    "array" => {
                        let elem = Box::new(self.kind()?);
                        self.eat(',')?;
                        let len = self.word();
                        let len = match len.parse::<u32>() {
                            Ok(n) => ArrayLen::Fixed(n),
                            Err(_) if !len.is_empty() => ArrayLen::Field(len.to_owned()),
                            Err(_) => return Err("expected an array length (a count or a field name)".into()),
                        };
                        FieldKind::Array { elem, len }
                    }
                    "optional" => FieldKind::Optional(Box::new(self.kind()?)),
                    _ => FieldKind::Equal(Box::new(self.kind()?)),
                };
                self.eat(')')?;
                kind
            }
            "struct" => return Err("a struct kind takes a description, not text".into()),
            "" => return Err(format!("expected a kind: {KIND_SYNTAX}")),
            other => return Err(format!("unknown kind '{other}': {KIND_SYNTAX}")),
        };
        Ok(kind)
    }
}

const PRIORITIES: [(&str, MigrationPriority); 8] = [
    ("uninitialized", MigrationPriority::Uninitialized),
    ("low", MigrationPriority::Low),
    ("default", MigrationPriority::Default),
    ("iommu", MigrationPriority::Iommu),
    ("pci-bus", MigrationPriority::PciBus),
    ("virtio-mem", MigrationPriority::VirtioMem),
    ("gicv3-its", MigrationPriority::Gicv3Its),
    ("gicv3", MigrationPriority::Gicv3),
];

impl FromStr for MigrationPriority {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<MigrationPriority, SpecError> {
        PRIORITIES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|&(_, p)| p)
            .ok_or_else(|| SpecError {
                what: "migration priority",
                text: text.to_owned(),
                reason: format!("one of {}", PRIORITIES.map(|(name, _)| name).join(", ")),
            })
    }
}

impl fmt::Display for MigrationPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = PRIORITIES
            .iter()
            .find(|(_, p)| p == self)
            .map_or("default", |(name, _)| *name);
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Result<FieldKind, SpecError> {
        text.parse()
    }

    #[test]
    fn scalars_by_either_name() {
        for (long, short) in [("uint8", "u8"), ("int64", "i64"), ("uint32", "u32")] {
            assert_eq!(kind(long).map(|k| k.info_name()), kind(short).map(|k| k.info_name()));
        }
        assert!(matches!(kind("bool"), Ok(FieldKind::Bool)));
        assert!(matches!(kind(" timer "), Ok(FieldKind::Timer)));
    }

    #[test]
    fn constructors_nest() -> Result<(), SpecError> {
        assert!(matches!(kind("buffer(16)")?, FieldKind::Buffer { len: 16 }));
        assert!(matches!(kind("vbuffer(len)")?, FieldKind::VBuffer { ref len_field } if len_field == "len"));
        assert!(matches!(kind("unused(4)")?, FieldKind::Unused { len: 4 }));
        assert!(matches!(kind("bitmap(100)")?, FieldKind::Bitmap { nbits: 100 }));
        let FieldKind::Array { elem, len } = kind("array(optional(equal(u32)), 3)")? else {
            panic!("not an array");
        };
        assert!(matches!(len, ArrayLen::Fixed(3)));
        assert!(matches!(*elem, FieldKind::Optional(ref e) if matches!(**e, FieldKind::Equal(_))));
        Ok(())
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("uint7", "unknown kind 'uint7'"),
            ("buffer(x)", "'x' is not a count"),
            ("buffer(4", "expected ')'"),
            ("array(u8)", "expected ','"),
            ("array(u8, )", "expected an array length"),
            ("struct", "takes a description"),
            ("u8 u16", "unexpected 'u16'"),
            ("", "expected a kind"),
            (
                &format!("{}u8{}", "optional(".repeat(100_000), ")".repeat(100_000)),
                "nest deeper than 32",
            ),
        ];
        for (text, says) in cases {
            let e = kind(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn priorities_round_trip_by_name() {
        for (name, p) in PRIORITIES {
            assert_eq!(name.parse::<MigrationPriority>(), Ok(p));
            assert_eq!(p.to_string(), name);
        }
        let e = "high"
            .parse::<MigrationPriority>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("pci-bus"), "{e}");
    }
}
