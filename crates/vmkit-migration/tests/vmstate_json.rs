//! VMDESCRIPTION entries in QEMU's schema, and decoding a body from its
//! entry alone.

use std::sync::Arc;

use serde_json::json;
use vmkit_migration::vmstate::{
    ArrayLen, DecodeLimits, FieldKind, Problem, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue, decode,
    decode_with_vmdesc, device_entry, encode_described,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sample_desc() -> Result<Arc<VmStateDescription>, VmStateError> {
    let unit_err = VmStateDescription::builder("unit/err")
        .version(1)
        .simple("code", FieldKind::U8)
        .needed(|unit| Ok(unit.get_u64("status").is_some_and(|s| s & 1 != 0)))
        .build()?;
    let unit = VmStateDescription::builder("unit")
        .version(3)
        .simple("status", FieldKind::U8)
        .simple("lba", FieldKind::I64)
        .subsection(unit_err)
        .build()?;
    let slot = VmStateDescription::builder("slot")
        .version(1)
        .simple("id", FieldKind::U16)
        .build()?;
    let dma = VmStateDescription::builder("ide/dma")
        .version(2)
        .simple("addr", FieldKind::U64)
        .build()?;
    VmStateDescription::builder("ide")
        .version(4)
        .simple("nr", FieldKind::Equal(Box::new(FieldKind::U32)))
        .simple("flags", FieldKind::Bool)
        .simple(
            "regs",
            FieldKind::Array {
                elem: Box::new(FieldKind::U16),
                len: ArrayLen::Fixed(4),
            },
        )
        .simple("unused", FieldKind::Unused { len: 3 })
        .simple("serial", FieldKind::Buffer { len: 4 })
        .simple("timer", FieldKind::Timer)
        .simple("dirty", FieldKind::Bitmap { nbits: 100 })
        .simple(
            "bus",
            FieldKind::Array {
                elem: Box::new(FieldKind::Struct(unit)),
                len: ArrayLen::Fixed(2),
            },
        )
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::Optional(Box::new(FieldKind::Struct(slot)))),
                len: ArrayLen::Fixed(3),
            },
        )
        .simple("temp", FieldKind::I8)
        .subsection(dma)
        .build()
}

fn unit(status: u64, lba: i64, err: Option<u64>) -> VmValue {
    let mut s = VmStruct::new()
        .with("status", VmValue::UInt(status))
        .with("lba", VmValue::Int(lba));
    if let Some(code) = err {
        s.set_subsection("unit/err", VmStruct::new().with("code", VmValue::UInt(code)));
    }
    VmValue::Struct(s)
}

fn sample_state() -> VmStruct {
    VmStruct::new()
        .with("nr", VmValue::UInt(2))
        .with("flags", VmValue::Bool(true))
        .with("regs", VmValue::Array((1..=4).map(VmValue::UInt).collect()))
        .with("serial", VmValue::Bytes(b"QM01".to_vec()))
        .with("timer", VmValue::Int(-1))
        .with(
            "dirty",
            VmValue::Array(vec![VmValue::UInt(0xff), VmValue::UInt(1 << 35)]),
        )
        .with("bus", VmValue::Array(vec![unit(1, -5, Some(9)), unit(2, 7, None)]))
        .with(
            "slots",
            VmValue::Array(vec![
                VmValue::Struct(VmStruct::new().with("id", VmValue::UInt(3))),
                VmValue::None,
                VmValue::None,
            ]),
        )
        .with("temp", VmValue::Int(-3))
        .with_subsection("ide/dma", VmStruct::new().with("addr", VmValue::UInt(0xfeed)))
}

fn unit_json(with_err: bool) -> serde_json::Value {
    let mut j = json!({
        "vmsd_name": "unit", "version": 3,
        "fields": [
            {"name": "status", "type": "uint8", "size": 1},
            {"name": "lba", "type": "int64", "size": 8},
        ],
    });
    if with_err {
        j["subsections"] = json!([
            {"vmsd_name": "unit/err", "version": 1,
             "fields": [{"name": "code", "type": "uint8", "size": 1}]}
        ]);
    }
    j
}

#[test]
fn the_description_matches_qemus_schema() -> TestResult {
    let desc = sample_desc()?;
    let mut state = sample_state();
    let mut bytes = Vec::new();
    let (n, body) = encode_described(&desc, &mut state, &mut bytes, 0)?;
    assert_eq!(n, bytes.len() as u64);
    // unit 0 = 1 + 8 + subsection (1 + 1 + 8 + 4 + 1) = 24; unit 1 = 9.
    let expected = json!({
        "vmsd_name": "ide",
        "version": 4,
        "fields": [
            {"name": "nr", "type": "uint32 equal", "size": 4},
            {"name": "flags", "type": "bool", "size": 1},
            {"name": "regs", "array_len": 4, "type": "uint16", "size": 2},
            {"name": "unused", "type": "unused_buffer", "size": 3},
            {"name": "serial", "type": "buffer", "size": 4},
            {"name": "timer", "type": "timer", "size": 8},
            {"name": "dirty", "type": "bitmap", "size": 16},
            {"name": "bus", "index": 0, "type": "struct", "struct": unit_json(true), "size": 24},
            {"name": "bus", "index": 1, "type": "struct", "struct": unit_json(false), "size": 9},
            {"name": "slots", "array_len": 1, "type": "struct", "size": 2,
             "struct": {"vmsd_name": "slot", "version": 1,
                        "fields": [{"name": "id", "type": "uint16", "size": 2}]}},
            {"name": "slots", "array_len": 2, "type": "nullptr", "size": 1},
            {"name": "temp", "type": "int8", "size": 1},
        ],
        "subsections": [
            {"vmsd_name": "ide/dma", "version": 2,
             "fields": [{"name": "addr", "type": "uint64", "size": 8}]}
        ],
    });
    assert_eq!(body, expected);

    let entry = device_entry("0000:00:01.1/ide", 0, &body);
    assert_eq!(entry["name"], "0000:00:01.1/ide");
    assert_eq!(entry["instance_id"], 0);
    assert_eq!(entry["vmsd_name"], "ide");
    Ok(())
}

#[test]
fn no_subsections_key_when_none_was_sent() -> TestResult {
    let sub = VmStateDescription::builder("d/s").needed(|_| Ok(false)).build()?;
    let desc = VmStateDescription::builder("d")
        .simple("x", FieldKind::U8)
        .subsection(sub)
        .build()?;
    let mut state = VmStruct::new().with("x", VmValue::UInt(1));
    let (_, body) = encode_described(&desc, &mut state, &mut Vec::new(), 0)?;
    assert_eq!(
        body,
        json!({"vmsd_name": "d", "version": 0, "fields": [{"name": "x", "type": "uint8", "size": 1}]})
    );
    Ok(())
}

#[test]
fn generic_decoding_from_the_description_gives_the_typed_values() -> TestResult {
    let desc = sample_desc()?;
    let mut state = sample_state();
    let mut bytes = Vec::new();
    let (_, body) = encode_described(&desc, &mut state, &mut bytes, 0)?;
    let entry = device_entry("ide", 0, &body);
    // Follow the body with the next section's byte, which must be left alone.
    bytes.push(0x04);
    let mut r = VmReader::new(&bytes[..], 0);
    let generic = decode_with_vmdesc(&entry, &mut r, &DecodeLimits::default())?;
    assert_eq!(r.offset() as usize, bytes.len() - 1);
    let typed = decode(&desc, 4, &mut VmReader::new(&bytes[..], 0))?;
    assert_eq!(generic, typed);
    assert_eq!(generic, state);
    Ok(())
}

#[test]
fn generic_decoding_of_an_unknown_qemu_device() -> TestResult {
    // As a real QEMU might describe a device vmkit has no description of,
    // including the legacy "uint64" of size 1 for a null pointer.
    let entry = json!({
        "name": "kvmclock", "instance_id": 0, "vmsd_name": "kvmclock", "version": 1,
        "fields": [
            {"name": "clock", "type": "uint64", "size": 8},
            {"name": "adj", "type": "int32 le", "size": 4},
            {"name": "p", "type": "uint64", "size": 1},
            {"name": "blob", "type": "some_private_codec", "size": 3},
        ],
    });
    let mut bytes = 42u64.to_be_bytes().to_vec();
    bytes.extend_from_slice(&(-2i32).to_be_bytes());
    bytes.extend_from_slice(&[0x30, 1, 2, 3]);
    let s = decode_with_vmdesc(&entry, &mut VmReader::new(&bytes[..], 0), &DecodeLimits::default())?;
    assert_eq!(s.get("clock"), Some(&VmValue::UInt(42)));
    assert_eq!(s.get("adj"), Some(&VmValue::Int(-2)));
    assert_eq!(s.get("p"), Some(&VmValue::None));
    assert_eq!(s.get("blob"), Some(&VmValue::Bytes(vec![1, 2, 3])));
    let rendered = s.to_json();
    assert_eq!(rendered["blob"], "010203");
    assert_eq!(rendered["p"], serde_json::Value::Null);

    // A size over the cap is refused before reading.
    let huge = json!({"vmsd_name": "x", "fields": [{"name": "b", "type": "buffer", "size": 1u64 << 40}]});
    let err = decode_with_vmdesc(&huge, &mut VmReader::new(&[0u8][..], 0), &DecodeLimits::default())
        .err()
        .ok_or("huge buffer accepted")?;
    assert!(matches!(err.problem(), Some(Problem::OverCap { .. })), "{err}");
    // So is a malformed entry.
    let bad = json!({"vmsd_name": "x", "fields": [{"name": "b", "size": 1}]});
    let err = decode_with_vmdesc(&bad, &mut VmReader::new(&[0u8][..], 0), &DecodeLimits::default())
        .err()
        .ok_or("entry without type accepted")?;
    assert!(matches!(err.problem(), Some(Problem::BadVmDesc { .. })), "{err}");
    Ok(())
}
