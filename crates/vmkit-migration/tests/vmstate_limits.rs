//! Untrusted input: lengths are capped before allocation, and a body cut at
//! any byte gives an error naming the field at that offset, never a panic.

use std::sync::Arc;

use vmkit_migration::vmstate::{
    ArrayLen, DecodeLimits, FieldKind, Problem, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue, decode,
    decode_with_limits, encode,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn vbuffer_desc(len_kind: FieldKind) -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("dev")
        .simple("len", len_kind)
        .simple(
            "data",
            FieldKind::VBuffer {
                len_field: "len".into(),
            },
        )
        .build()
}

#[test]
fn a_huge_vbuffer_length_is_refused_before_allocation() -> TestResult {
    let desc = vbuffer_desc(FieldKind::U32)?;
    let input = [0xff, 0xff, 0xff, 0xff, 1, 2];
    let err = decode(&desc, 0, &mut VmReader::new(&input[..], 0))
        .err()
        .ok_or("4 GiB buffer accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::OverCap {
            what: "buffer length".into(),
            len: 0xffff_ffff,
            cap: 64 << 20
        })
    );
    assert_eq!(err.path(), Some("dev/data"));
    assert_eq!(err.offset(), Some(4));

    // Even with no cap, a short input only allocates what is there.
    let limits = DecodeLimits {
        max_buffer: u64::MAX,
        ..DecodeLimits::default()
    };
    let err = decode_with_limits(&desc, 0, &mut VmReader::new(&input[..], 0), &limits)
        .err()
        .ok_or("short input accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::Truncated {
            needed: 0xffff_ffff,
            got: 2
        })
    );
    Ok(())
}

#[test]
fn a_negative_length_is_refused() -> TestResult {
    let desc = vbuffer_desc(FieldKind::I32)?;
    let err = decode(&desc, 0, &mut VmReader::new(&[0xff, 0xff, 0xff, 0xfe][..], 0))
        .err()
        .ok_or("negative length accepted")?;
    assert!(matches!(err.problem(), Some(Problem::BadLength { .. })), "{err}");
    Ok(())
}

#[test]
fn a_huge_varray_count_is_refused_before_allocation() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("n", FieldKind::U32)
        .simple(
            "items",
            FieldKind::Array {
                elem: Box::new(FieldKind::U64),
                len: ArrayLen::Field("n".into()),
            },
        )
        .build()?;
    let input = [0xff, 0xff, 0xff, 0xff, 0];
    let err = decode(&desc, 0, &mut VmReader::new(&input[..], 0))
        .err()
        .ok_or("huge array accepted")?;
    assert!(
        matches!(err.problem(), Some(Problem::OverCap { len: 0xffff_ffff, .. })),
        "{err}"
    );
    let limits = DecodeLimits {
        max_array_len: 2,
        ..DecodeLimits::default()
    };
    let err = decode_with_limits(&desc, 0, &mut VmReader::new(&[0, 0, 0, 3][..], 0), &limits)
        .err()
        .ok_or("count over the cap accepted")?;
    assert!(
        matches!(err.problem(), Some(Problem::OverCap { len: 3, cap: 2, .. })),
        "{err}"
    );
    Ok(())
}

#[test]
fn nesting_is_capped() -> TestResult {
    let mut desc = VmStateDescription::builder("d0").simple("x", FieldKind::U8).build()?;
    for i in 1..4 {
        desc = VmStateDescription::builder(format!("d{i}"))
            .simple("inner", FieldKind::Struct(desc))
            .build()?;
    }
    let limits = DecodeLimits {
        max_depth: 2,
        ..DecodeLimits::default()
    };
    let err = decode_with_limits(&desc, 0, &mut VmReader::new(&[1u8][..], 0), &limits)
        .err()
        .ok_or("depth over the cap accepted")?;
    assert_eq!(err.problem(), Some(&Problem::TooDeep { max_depth: 2 }));
    assert_eq!(err.path(), Some("d3/inner/inner/inner"));
    let ok = decode(&desc, 0, &mut VmReader::new(&[1u8][..], 0))?;
    assert!(ok.get("inner").is_some());
    Ok(())
}

fn sample() -> Result<(Arc<VmStateDescription>, VmStruct), VmStateError> {
    let unit = VmStateDescription::builder("unit")
        .simple("status", FieldKind::U8)
        .simple("lba", FieldKind::U32)
        .build()?;
    let sub = VmStateDescription::builder("dev/s")
        .version(1)
        .simple("x", FieldKind::U16)
        .build()?;
    let desc = VmStateDescription::builder("dev")
        .simple("a", FieldKind::U8)
        .simple("len", FieldKind::U16)
        .simple(
            "data",
            FieldKind::VBuffer {
                len_field: "len".into(),
            },
        )
        .simple(
            "regs",
            FieldKind::Array {
                elem: Box::new(FieldKind::U32),
                len: ArrayLen::Fixed(2),
            },
        )
        .simple("unit", FieldKind::Struct(unit))
        .subsection(sub)
        .build()?;
    let state = VmStruct::new()
        .with("a", VmValue::UInt(1))
        .with("len", VmValue::UInt(3))
        .with("data", VmValue::Bytes(vec![7, 8, 9]))
        .with("regs", VmValue::Array(vec![VmValue::UInt(10), VmValue::UInt(11)]))
        .with(
            "unit",
            VmValue::Struct(
                VmStruct::new()
                    .with("status", VmValue::UInt(2))
                    .with("lba", VmValue::UInt(3)),
            ),
        )
        .with_subsection("dev/s", VmStruct::new().with("x", VmValue::UInt(0x55)));
    Ok((desc, state))
}

#[test]
fn truncation_at_every_byte_names_the_field_there() -> TestResult {
    let (desc, mut state) = sample()?;
    let mut bytes = Vec::new();
    encode(&desc, &mut state, &mut bytes, 1000)?;
    assert_eq!(bytes.len(), 32);
    // (first byte, path, item start) of each item, in order.
    let items: &[(usize, &str, u64)] = &[
        (0, "dev/a", 0),
        (1, "dev/len", 1),
        (3, "dev/data", 3),
        (6, "dev/regs[0]", 6),
        (10, "dev/regs[1]", 10),
        (14, "dev/unit/status", 14),
        (15, "dev/unit/lba", 15),
        // 19: the end of the fields; a cut here is a body without subsections.
        (20, "dev", 19),
        (26, "dev/s", 26),
        (30, "dev/s/x", 30),
    ];
    for cut in 0..bytes.len() {
        let r = decode(&desc, 0, &mut VmReader::new(&bytes[..cut], 1000));
        if cut == 19 {
            let s = r?;
            assert!(s.subsection("dev/s").is_none());
            continue;
        }
        let err = r.err().ok_or_else(|| format!("cut at {cut} accepted"))?;
        let &(_, path, start) = items
            .iter()
            .rev()
            .find(|(first, _, _)| *first <= cut)
            .ok_or("no item")?;
        assert!(
            matches!(err.problem(), Some(Problem::Truncated { .. })),
            "cut {cut}: {err}"
        );
        assert_eq!(err.path(), Some(path), "cut {cut}: {err}");
        assert_eq!(err.offset(), Some(1000 + start), "cut {cut}: {err}");
    }
    assert_eq!(decode(&desc, 0, &mut VmReader::new(&bytes[..], 1000))?, state);
    Ok(())
}

#[test]
fn garbage_never_panics() -> TestResult {
    let (desc, _) = sample()?;
    let mut seed = 0x1234_5678_9abc_def0u64;
    for len in 0..200usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = decode(&desc, 0, &mut VmReader::new(&bytes[..], 0));
    }
    Ok(())
}
