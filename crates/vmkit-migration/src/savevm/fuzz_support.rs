//! The entry point of the `restore` fuzz target: a small machine with
//! varied device state that arbitrary bytes are restored into.

use std::sync::Arc;

use vmkit_memory::RamBlock;

use super::{DeviceEntry, RestoreOptions, SaveOptions, SaveSet, Unmodelled, restore, save};
use crate::test_support::ValueDevice;
use crate::vmstate::{ArrayLen, DecodeLimits, Field, FieldKind, VmStateDescription, VmStruct, VmValue};

/// Arrays counted by fields, a variable buffer, a nested struct, optional
/// elements, a version-gated field and a `needed` subsection.
fn vmsd() -> Option<Arc<VmStateDescription>> {
    let entry = VmStateDescription::builder("fz/entry")
        .version(1)
        .simple("addr", FieldKind::U64)
        .simple("len", FieldKind::U32)
        .build()
        .ok()?;
    let sub = VmStateDescription::builder("fz/extra")
        .version(1)
        .simple("flags", FieldKind::U16)
        .needed(|s| Ok(s.get_u64("n").is_some_and(|n| n > 1)))
        .build()
        .ok()?;
    VmStateDescription::builder("fz")
        .version(2)
        .minimum_version(1)
        .simple("n", FieldKind::U8)
        .simple(
            "ring",
            FieldKind::Array {
                elem: Box::new(FieldKind::Struct(entry)),
                len: ArrayLen::Field("n".into()),
            },
        )
        .simple("blen", FieldKind::U32)
        .simple(
            "blob",
            FieldKind::VBuffer {
                len_field: "blen".into(),
            },
        )
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::Optional(Box::new(FieldKind::U32))),
                len: ArrayLen::Fixed(2),
            },
        )
        .field(Field::new("dma_base", FieldKind::U64).since(2))
        .subsection(sub)
        .build()
        .ok()
}

fn state(n: u64) -> VmStruct {
    let ring = (0..n)
        .map(|i| {
            VmValue::Struct(
                VmStruct::new()
                    .with("addr", VmValue::UInt(0x1000 * i))
                    .with("len", VmValue::UInt(64)),
            )
        })
        .collect();
    VmStruct::new()
        .with("n", VmValue::UInt(n))
        .with("ring", VmValue::Array(ring))
        .with("blen", VmValue::UInt(3))
        .with("blob", VmValue::Bytes(vec![1, 2, 3]))
        .with("slots", VmValue::Array(vec![VmValue::UInt(7), VmValue::None]))
        .with("dma_base", VmValue::UInt(0x7f00_0000_0000))
        .with_subsection("fz/extra", VmStruct::new().with("flags", VmValue::UInt(5)))
}

/// The machine: a 16-page `pc.ram` and two `fz` devices.
fn machine() -> Option<SaveSet> {
    let ram = RamBlock::anonymous("pc.ram", 16 * 4096).ok()?;
    ram.write(4096, b"vmkit").ok()?;
    let vmsd = vmsd()?;
    let devices = (0..2u32)
        .map(|i| DeviceEntry::new("fz", i, ValueDevice::new(Arc::clone(&vmsd), state(u64::from(i) + 1))))
        .collect();
    Some(SaveSet::new("pc-q35-vmkit", vec![ram], devices))
}

/// A valid stream of the fuzz machine (a corpus seed).
pub fn fuzz_seed() -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(set) = machine() {
        let _ = save(&set, &mut out, &SaveOptions::default());
    }
    out
}

fn small_limits() -> DecodeLimits {
    DecodeLimits {
        max_buffer: 1 << 16,
        max_array_len: 1 << 10,
        max_depth: 8,
    }
}

/// Restores `data` into a fresh fuzz machine with small decode limits.
/// Must never panic; returns whether the stream was accepted.
pub fn fuzz_restore(data: &[u8]) -> bool {
    let Some(set) = machine() else {
        return false;
    };
    let opts = RestoreOptions {
        limits: small_limits(),
        ..RestoreOptions::default()
    };
    restore(&set, data, &opts).is_ok()
}

/// Restores `data` into a fuzz machine without its second `fz` device,
/// reporting what it does not model ([`Unmodelled::Report`]): that
/// device's section is decoded by the trailer, from the rest of the
/// stream held in memory. Must never panic; returns whether the stream
/// was accepted.
pub fn fuzz_restore_reporting(data: &[u8]) -> bool {
    let Some(mut set) = machine() else {
        return false;
    };
    set.devices.truncate(1);
    let opts = RestoreOptions {
        limits: small_limits(),
        unmodelled: Unmodelled::Report,
        ..RestoreOptions::default()
    };
    restore(&set, data, &opts).is_ok_and(|stats| stats.unmodelled.sections.len() == 1)
}
