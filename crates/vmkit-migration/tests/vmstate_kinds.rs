//! Every field kind encodes to QEMU's bytes and decodes back; `Equal` and
//! the null marker refuse what QEMU refuses.

use std::sync::Arc;

use vmkit_migration::vmstate::{
    ArrayLen, DecodeLimits, FieldKind, Problem, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue, decode,
    decode_into, encode,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn enc(desc: &VmStateDescription, state: &mut VmStruct) -> Result<Vec<u8>, VmStateError> {
    let mut out = Vec::new();
    encode(desc, state, &mut out, 0)?;
    Ok(out)
}

fn dec(desc: &VmStateDescription, version: u32, bytes: &[u8]) -> Result<VmStruct, VmStateError> {
    let mut r = VmReader::new(bytes, 0);
    decode(desc, version, &mut r)
}

/// Encodes one field of `kind` holding `value`, checks the bytes, decodes
/// them back and checks the value.
fn round_trip(kind: FieldKind, value: VmValue, wire: &[u8]) -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .version(1)
        .simple("f", kind)
        .build()?;
    let mut state = VmStruct::new().with("f", value.clone());
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes, wire);
    let back = dec(&desc, 1, &bytes)?;
    assert_eq!(back.get("f"), Some(&value));
    Ok(())
}

#[test]
fn scalars_are_big_endian() -> TestResult {
    round_trip(FieldKind::Bool, VmValue::Bool(true), &[1])?;
    round_trip(FieldKind::Bool, VmValue::Bool(false), &[0])?;
    round_trip(FieldKind::U8, VmValue::UInt(0xab), &[0xab])?;
    round_trip(FieldKind::U16, VmValue::UInt(0x1234), &[0x12, 0x34])?;
    round_trip(FieldKind::U32, VmValue::UInt(0xdead_beef), &[0xde, 0xad, 0xbe, 0xef])?;
    round_trip(FieldKind::U64, VmValue::UInt(u64::MAX), &[0xff; 8])?;
    round_trip(FieldKind::I8, VmValue::Int(-2), &[0xfe])?;
    round_trip(FieldKind::I16, VmValue::Int(-2), &[0xff, 0xfe])?;
    round_trip(FieldKind::I32, VmValue::Int(i64::from(i32::MIN)), &[0x80, 0, 0, 0])?;
    round_trip(FieldKind::I64, VmValue::Int(-1), &[0xff; 8])?;
    round_trip(FieldKind::I64, VmValue::Int(1), &[0, 0, 0, 0, 0, 0, 0, 1])?;
    Ok(())
}

#[test]
fn bool_loads_any_nonzero_as_true() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("b", FieldKind::Bool)
        .build()?;
    assert_eq!(dec(&desc, 0, &[7])?.get("b"), Some(&VmValue::Bool(true)));
    Ok(())
}

#[test]
fn out_of_range_values_are_refused_on_save() -> TestResult {
    let desc = VmStateDescription::builder("dev").simple("x", FieldKind::U8).build()?;
    let err = enc(&desc, &mut VmStruct::new().with("x", VmValue::UInt(256)))
        .err()
        .ok_or("256 fit in a u8")?;
    assert!(matches!(err.problem(), Some(Problem::BadValue { .. })), "{err}");
    assert_eq!(err.path(), Some("dev/x"));
    let err = enc(&desc, &mut VmStruct::new()).err().ok_or("missing value accepted")?;
    assert_eq!(err.problem(), Some(&Problem::MissingValue));
    Ok(())
}

#[test]
fn buffers_unused_bitmap_timer() -> TestResult {
    round_trip(FieldKind::Buffer { len: 3 }, VmValue::Bytes(vec![1, 2, 3]), &[1, 2, 3])?;
    round_trip(
        FieldKind::Bitmap { nbits: 65 },
        VmValue::Array(vec![VmValue::UInt(1), VmValue::UInt(1 << 63)]),
        &[0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 0],
    )?;
    round_trip(FieldKind::Timer, VmValue::Int(-1), &[0xff; 8])?;
    round_trip(FieldKind::Timer, VmValue::Int(1000), &1000u64.to_be_bytes())?;

    // Unused: zeros on save whatever the state holds, skipped on load.
    let desc = VmStateDescription::builder("dev")
        .simple("a", FieldKind::U8)
        .simple("unused", FieldKind::Unused { len: 4 })
        .simple("b", FieldKind::U8)
        .build()?;
    let mut state = VmStruct::new().with("a", VmValue::UInt(1)).with("b", VmValue::UInt(2));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes, [1, 0, 0, 0, 0, 2]);
    let back = dec(&desc, 0, &[1, 9, 9, 9, 9, 2])?;
    assert_eq!(back, state);
    Ok(())
}

#[test]
fn wrong_buffer_length_is_refused_on_save() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("buf", FieldKind::Buffer { len: 4 })
        .build()?;
    let err = enc(&desc, &mut VmStruct::new().with("buf", VmValue::Bytes(vec![0; 3])))
        .err()
        .ok_or("short buffer accepted")?;
    assert_eq!(err.problem(), Some(&Problem::LengthMismatch { actual: 3, expected: 4 }));
    Ok(())
}

#[test]
fn vbuffer_and_varray_take_their_length_from_earlier_fields() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("len", FieldKind::U32)
        .simple(
            "data",
            FieldKind::VBuffer {
                len_field: "len".into(),
            },
        )
        .simple("count", FieldKind::U8)
        .simple(
            "regs",
            FieldKind::Array {
                elem: Box::new(FieldKind::U16),
                len: ArrayLen::Field("count".into()),
            },
        )
        .build()?;
    let mut state = VmStruct::new()
        .with("len", VmValue::UInt(2))
        .with("data", VmValue::Bytes(vec![0xaa, 0xbb]))
        .with("count", VmValue::UInt(3))
        .with(
            "regs",
            VmValue::Array(vec![VmValue::UInt(1), VmValue::UInt(2), VmValue::UInt(3)]),
        );
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes, [0, 0, 0, 2, 0xaa, 0xbb, 3, 0, 1, 0, 2, 0, 3]);
    assert_eq!(dec(&desc, 0, &bytes)?, state);

    // A count that disagrees with the array is refused on save.
    state.set("count", VmValue::UInt(2));
    let err = enc(&desc, &mut state).err().ok_or("count mismatch accepted")?;
    assert_eq!(err.problem(), Some(&Problem::LengthMismatch { actual: 3, expected: 2 }));
    assert_eq!(err.path(), Some("dev/regs"));
    Ok(())
}

#[test]
fn length_fields_must_be_earlier_integer_fields() {
    let later = VmStateDescription::builder("dev")
        .simple(
            "data",
            FieldKind::VBuffer {
                len_field: "len".into(),
            },
        )
        .simple("len", FieldKind::U32)
        .build();
    assert!(matches!(later, Err(VmStateError::Description { .. })));
    let not_int = VmStateDescription::builder("dev")
        .simple("len", FieldKind::Buffer { len: 4 })
        .simple(
            "a",
            FieldKind::Array {
                elem: Box::new(FieldKind::U8),
                len: ArrayLen::Field("len".into()),
            },
        )
        .build();
    let msg = not_int.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("not an integer field"), "{msg}");
    let unknown = VmStateDescription::builder("dev")
        .simple(
            "a",
            FieldKind::Array {
                elem: Box::new(FieldKind::U8),
                len: ArrayLen::Field("n".into()),
            },
        )
        .build();
    assert!(unknown.is_err());
    let equal_buf = VmStateDescription::builder("dev")
        .simple("e", FieldKind::Equal(Box::new(FieldKind::Buffer { len: 1 })))
        .build();
    assert!(equal_buf.is_err());
    let dup = VmStateDescription::builder("dev")
        .simple("a", FieldKind::U8)
        .simple("a", FieldKind::U8)
        .build();
    assert!(dup.is_err());
    let bad_versions = VmStateDescription::builder("dev").version(1).minimum_version(2).build();
    assert!(bad_versions.is_err());
}

fn inner_desc() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("unit")
        .version(3)
        .simple("status", FieldKind::U8)
        .simple("lba", FieldKind::U32)
        .build()
}

fn unit(status: u64, lba: u64) -> VmValue {
    VmValue::Struct(
        VmStruct::new()
            .with("status", VmValue::UInt(status))
            .with("lba", VmValue::UInt(lba)),
    )
}

#[test]
fn structs_and_arrays_of_structs() -> TestResult {
    let inner = inner_desc()?;
    let desc = VmStateDescription::builder("ide")
        .version(2)
        .simple("main", FieldKind::Struct(inner.clone()))
        .simple(
            "bus",
            FieldKind::Array {
                elem: Box::new(FieldKind::Struct(inner)),
                len: ArrayLen::Fixed(2),
            },
        )
        .build()?;
    let mut state = VmStruct::new()
        .with("main", unit(1, 2))
        .with("bus", VmValue::Array(vec![unit(3, 4), unit(5, 6)]));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes, [1, 0, 0, 0, 2, 3, 0, 0, 0, 4, 5, 0, 0, 0, 6]);
    // The nested struct is loaded at its own version (3), whatever the
    // section's stream version.
    assert_eq!(dec(&desc, 2, &bytes)?, state);
    Ok(())
}

#[test]
fn equal_fields_compare_with_the_current_value() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("nr", FieldKind::Equal(Box::new(FieldKind::U32)))
        .simple("x", FieldKind::U8)
        .build()?;
    let bytes = enc(
        &desc,
        &mut VmStruct::new().with("nr", VmValue::UInt(4)).with("x", VmValue::UInt(9)),
    )?;
    assert_eq!(bytes, [0, 0, 0, 4, 9]);

    let mut same = VmStruct::new().with("nr", VmValue::UInt(4));
    decode_into(
        &desc,
        0,
        &mut VmReader::new(&bytes[..], 100),
        &mut same,
        &DecodeLimits::default(),
    )?;
    assert_eq!(same.get_u64("x"), Some(9));

    let mut other = VmStruct::new().with("nr", VmValue::UInt(8));
    let err = decode_into(
        &desc,
        0,
        &mut VmReader::new(&bytes[..], 100),
        &mut other,
        &DecodeLimits::default(),
    )
    .err()
    .ok_or("mismatch accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::EqualMismatch {
            expected: "8".into(),
            found: "4".into()
        })
    );
    assert_eq!(err.path(), Some("dev/nr"));
    assert_eq!(err.offset(), Some(100));
    let msg = err.to_string();
    assert!(msg.contains("section 'dev'") && msg.contains("offset 100"), "{msg}");
    // Without a current value there is nothing to compare with.
    assert_eq!(dec(&desc, 0, &bytes)?.get_u64("nr"), Some(4));
    Ok(())
}

#[test]
fn optional_elements_use_the_null_marker() -> TestResult {
    let inner = inner_desc()?;
    let desc = VmStateDescription::builder("dev")
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::Optional(Box::new(FieldKind::Struct(inner)))),
                len: ArrayLen::Fixed(3),
            },
        )
        .build()?;
    let mut state = VmStruct::new().with("slots", VmValue::Array(vec![unit(1, 2), VmValue::None, unit(3, 4)]));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes, [1, 0, 0, 0, 2, 0x30, 3, 0, 0, 0, 4]);
    // Without receiver state the loader peeks the marker.
    assert_eq!(dec(&desc, 0, &bytes)?, state);
    // With receiver state, the receiver's None demands exactly 0x30.
    let mut target = state.clone();
    let mut bad = bytes.clone();
    bad[5] = 0x31;
    let err = decode_into(
        &desc,
        0,
        &mut VmReader::new(&bad[..], 0),
        &mut target,
        &DecodeLimits::default(),
    )
    .err()
    .ok_or("bad marker accepted")?;
    assert_eq!(err.problem(), Some(&Problem::BadNullMarker { found: 0x31 }));
    assert_eq!(err.path(), Some("dev/slots[1]"));
    assert_eq!(err.offset(), Some(5));
    Ok(())
}

#[test]
fn peeked_bytes_after_the_body_stay_readable() -> TestResult {
    use std::io::Read;
    let desc = VmStateDescription::builder("dev").simple("x", FieldKind::U8).build()?;
    let bytes = [7u8, 0x7e, 1, 2];
    let mut r = VmReader::new(&bytes[..], 10);
    let state = decode(&desc, 0, &mut r)?;
    assert_eq!(state.get_u64("x"), Some(7));
    assert_eq!(r.offset(), 11);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    assert_eq!(rest, [0x7e, 1, 2]);
    Ok(())
}
