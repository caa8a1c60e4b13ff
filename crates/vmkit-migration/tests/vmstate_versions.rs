//! Versions, existence predicates, subsections and hook order.

use std::sync::Arc;

use parking_lot::Mutex;
use vmkit_migration::vmstate::{
    DecodeLimits, Field, FieldKind, MigrationPriority, Problem, VmReader, VmStateDescription, VmStateError, VmStruct,
    VmValue, decode, decode_into, encode,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn enc(desc: &VmStateDescription, state: &mut VmStruct) -> Result<Vec<u8>, VmStateError> {
    let mut out = Vec::new();
    encode(desc, state, &mut out, 0)?;
    Ok(out)
}

fn dec(desc: &VmStateDescription, version: u32, bytes: &[u8]) -> Result<VmStruct, VmStateError> {
    decode(desc, version, &mut VmReader::new(bytes, 0))
}

fn versioned() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("rtc")
        .version(3)
        .minimum_version(2)
        .priority(MigrationPriority::Low)
        .simple("a", FieldKind::U8)
        .field(Field::new("b", FieldKind::U8).since(3))
        .field(Field::new("c", FieldKind::U8).since(4))
        .build()
}

#[test]
fn fields_are_gated_by_version() -> TestResult {
    let desc = versioned()?;
    assert_eq!(desc.priority(), MigrationPriority::Low);
    let mut state = VmStruct::new()
        .with("a", VmValue::UInt(1))
        .with("b", VmValue::UInt(2))
        .with("c", VmValue::UInt(3));
    // Saved at version 3: "c" (since 4) is never written.
    assert_eq!(enc(&desc, &mut state)?, [1, 2]);
    // A version-2 stream has no "b".
    let old = dec(&desc, 2, &[1])?;
    assert_eq!(old.get_u64("a"), Some(1));
    assert_eq!(old.get("b"), None);
    Ok(())
}

#[test]
fn too_new_and_too_old_streams_are_refused_with_both_versions() -> TestResult {
    let desc = versioned()?;
    let err = dec(&desc, 4, &[1, 2, 3]).err().ok_or("too new accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::TooNew {
            stream: 4,
            supported: 3
        })
    );
    let msg = err.to_string();
    assert!(msg.contains("'rtc'") && msg.contains('4') && msg.contains('3'), "{msg}");
    let err = dec(&desc, 1, &[1]).err().ok_or("too old accepted")?;
    assert_eq!(err.problem(), Some(&Problem::TooOld { stream: 1, minimum: 2 }));
    assert!(err.to_string().contains("too old"));
    Ok(())
}

#[test]
fn exists_predicates_replace_the_version_rule() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .version(2)
        .simple("has_extra", FieldKind::Bool)
        .field(
            Field::new("extra", FieldKind::U16)
                .exists_if(|s, _| Ok(s.get("has_extra").and_then(VmValue::as_bool) == Some(true))),
        )
        .field(Field::new("v2", FieldKind::U8).exists_if(|_, v| Ok(v >= 2)))
        .build()?;
    let mut with = VmStruct::new()
        .with("has_extra", VmValue::Bool(true))
        .with("extra", VmValue::UInt(0x102))
        .with("v2", VmValue::UInt(5));
    let bytes = enc(&desc, &mut with)?;
    assert_eq!(bytes, [1, 1, 2, 5]);
    assert_eq!(dec(&desc, 2, &bytes)?, with);

    let mut without = VmStruct::new()
        .with("has_extra", VmValue::Bool(false))
        .with("v2", VmValue::UInt(5));
    let bytes = enc(&desc, &mut without)?;
    assert_eq!(bytes, [0, 5]);
    assert_eq!(dec(&desc, 2, &bytes)?, without);
    // At version 1 the predicate says "v2" is absent.
    assert_eq!(dec(&desc, 1, &[0])?.get("v2"), None);
    Ok(())
}

#[test]
fn must_exist_fields_fail_when_absent() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .version(2)
        .minimum_version(1)
        .field(Field::new("x", FieldKind::U8).since(2).must_exist())
        .build()?;
    let err = dec(&desc, 1, &[]).err().ok_or("absent must-exist field accepted")?;
    assert_eq!(err.problem(), Some(&Problem::MustExist { version: 1 }));
    assert_eq!(err.path(), Some("dev/x"));
    Ok(())
}

fn with_subsections() -> Result<Arc<VmStateDescription>, VmStateError> {
    let pio = VmStateDescription::builder("ide/pio")
        .version(1)
        .simple("pos", FieldKind::U32)
        .needed(|parent| Ok(parent.get_u64("mode") == Some(1)))
        .build()?;
    let dma = VmStateDescription::builder("ide/dma")
        .version(2)
        .simple("addr", FieldKind::U64)
        .build()?;
    VmStateDescription::builder("ide")
        .version(1)
        .simple("mode", FieldKind::U8)
        .subsection(pio)
        .subsection(dma)
        .build()
}

#[test]
fn subsections_are_sent_only_when_needed() -> TestResult {
    let desc = with_subsections()?;
    let mut state = VmStruct::new()
        .with("mode", VmValue::UInt(0))
        .with_subsection("ide/pio", VmStruct::new().with("pos", VmValue::UInt(7)))
        .with_subsection("ide/dma", VmStruct::new().with("addr", VmValue::UInt(0x1000)));
    let bytes = enc(&desc, &mut state)?;
    let mut expected = vec![0u8, 5, 7];
    expected.extend_from_slice(b"ide/dma");
    expected.extend_from_slice(&[0, 0, 0, 2]);
    expected.extend_from_slice(&0x1000u64.to_be_bytes());
    assert_eq!(bytes, expected);
    let back = dec(&desc, 1, &bytes)?;
    assert_eq!(back.subsection("ide/pio"), None);
    assert_eq!(back.subsection("ide/dma").and_then(|s| s.get_u64("addr")), Some(0x1000));

    state.set("mode", VmValue::UInt(1));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(&bytes[1..3], &[5, 7]);
    assert_eq!(&bytes[3..10], b"ide/pio");
    assert_eq!(dec(&desc, 1, &bytes)?, state);
    Ok(())
}

#[test]
fn a_subsection_not_sent_keeps_the_receivers_state() -> TestResult {
    let desc = with_subsections()?;
    // Only the parent's field, then the next section's byte.
    let bytes = [0u8, 0x04];
    let mut target = VmStruct::new()
        .with("mode", VmValue::UInt(9))
        .with_subsection("ide/pio", VmStruct::new().with("pos", VmValue::UInt(42)));
    let mut r = VmReader::new(&bytes[..], 0);
    decode_into(&desc, 1, &mut r, &mut target, &DecodeLimits::default())?;
    assert_eq!(target.get_u64("mode"), Some(0));
    assert_eq!(target.subsection("ide/pio").and_then(|s| s.get_u64("pos")), Some(42));
    assert_eq!(r.offset(), 1);
    Ok(())
}

#[test]
fn subsection_versions_are_checked() -> TestResult {
    let desc = with_subsections()?;
    let mut bytes = vec![0u8, 5, 7];
    bytes.extend_from_slice(b"ide/dma");
    bytes.extend_from_slice(&[0, 0, 0, 3]);
    bytes.extend_from_slice(&[0; 8]);
    let err = dec(&desc, 1, &bytes).err().ok_or("too-new subsection accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::TooNew {
            stream: 3,
            supported: 2
        })
    );
    assert_eq!(err.path(), Some("ide/dma"));
    Ok(())
}

#[test]
fn unknown_subsections_are_fatal() -> TestResult {
    let desc = with_subsections()?;
    let mut bytes = vec![0u8, 5, 7];
    bytes.extend_from_slice(b"ide/xyz");
    bytes.extend_from_slice(&[0, 0, 0, 1]);
    let err = dec(&desc, 1, &bytes).err().ok_or("unknown subsection accepted")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::UnknownSubsection { name: "ide/xyz".into() })
    );
    assert_eq!(err.offset(), Some(1));
    Ok(())
}

#[test]
fn subsection_names_must_extend_the_parent_name() -> TestResult {
    let stray = VmStateDescription::builder("other/x").build()?;
    let err = VmStateDescription::builder("ide").subsection(stray).build();
    assert!(matches!(err, Err(VmStateError::Description { .. })));
    let no_slash = VmStateDescription::builder("idex").build()?;
    assert!(VmStateDescription::builder("ide").subsection(no_slash).build().is_err());
    Ok(())
}

/// An inner struct's loader stops at a subsection that belongs to the outer
/// struct (its name lacks the inner prefix), and the outer one loads it.
#[test]
fn an_outer_subsection_after_an_inner_struct_is_left_to_the_outer() -> TestResult {
    let inner_sub = VmStateDescription::builder("bus/irq")
        .version(1)
        .simple("level", FieldKind::U8)
        .build()?;
    let inner = VmStateDescription::builder("bus")
        .version(1)
        .simple("n", FieldKind::U8)
        .subsection(inner_sub)
        .build()?;
    let outer_sub = VmStateDescription::builder("ctrl/extra")
        .version(1)
        .simple("flags", FieldKind::U16)
        .build()?;
    let outer = VmStateDescription::builder("ctrl")
        .version(1)
        .simple("bus", FieldKind::Struct(inner))
        .subsection(outer_sub)
        .build()?;
    let mut state = VmStruct::new()
        .with(
            "bus",
            VmValue::Struct(
                VmStruct::new()
                    .with("n", VmValue::UInt(1))
                    .with_subsection("bus/irq", VmStruct::new().with("level", VmValue::UInt(1))),
            ),
        )
        .with_subsection("ctrl/extra", VmStruct::new().with("flags", VmValue::UInt(0xabcd)));
    let bytes = enc(&outer, &mut state)?;
    let mut expected = vec![1u8, 5, 7];
    expected.extend_from_slice(b"bus/irq");
    expected.extend_from_slice(&[0, 0, 0, 1, 1, 5, 10]);
    expected.extend_from_slice(b"ctrl/extra");
    expected.extend_from_slice(&[0, 0, 0, 1, 0xab, 0xcd]);
    assert_eq!(bytes, expected);
    assert_eq!(dec(&outer, 1, &bytes)?, state);
    Ok(())
}

fn logging(
    name: &str,
    log: &Arc<Mutex<Vec<String>>>,
    sub: Option<Arc<VmStateDescription>>,
) -> Result<Arc<VmStateDescription>, VmStateError> {
    let (l1, l2, l3, l4, l5, l6) = (
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
    );
    let n = name.to_owned();
    let (n1, n2, n3, n4, n5, n6) = (n.clone(), n.clone(), n.clone(), n.clone(), n.clone(), n);
    let mut b = VmStateDescription::builder(name)
        .version(2)
        .field(Field::new("x", FieldKind::U8).exists_if(move |_, v| {
            l5.lock().push(format!("{n5} field x (v{v})"));
            Ok(true)
        }))
        .pre_save(move |_| {
            l1.lock().push(format!("{n1} pre_save"));
            Ok(())
        })
        .post_save(move |_| {
            l2.lock().push(format!("{n2} post_save"));
            Ok(())
        })
        .pre_load(move |_| {
            l3.lock().push(format!("{n3} pre_load"));
            Ok(())
        })
        .post_load(move |_, v| {
            l4.lock().push(format!("{n4} post_load({v})"));
            Ok(())
        })
        .needed(move |_| {
            l6.lock().push(format!("{n6} needed"));
            Ok(true)
        });
    if let Some(sub) = sub {
        b = b.subsection(sub);
    }
    b.build()
}

#[test]
fn hooks_run_in_qemus_order() -> TestResult {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sub = logging("dev/sub", &log, None)?;
    let desc = logging("dev", &log, Some(sub))?;
    let mut state = VmStruct::new()
        .with("x", VmValue::UInt(1))
        .with_subsection("dev/sub", VmStruct::new().with("x", VmValue::UInt(2)));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        [
            "dev pre_save",
            "dev field x (v2)",
            "dev/sub needed",
            "dev/sub pre_save",
            "dev/sub field x (v2)",
            "dev/sub post_save",
            "dev post_save",
        ]
    );
    // Loaded as a version-1 stream; the subsection's own header says 2.
    let back = dec(&desc, 1, &bytes)?;
    assert_eq!(back, state);
    assert_eq!(
        std::mem::take(&mut *log.lock()),
        [
            "dev pre_load",
            "dev field x (v1)",
            "dev/sub pre_load",
            "dev/sub field x (v2)",
            "dev/sub post_load(2)",
            "dev post_load(1)",
        ]
    );
    Ok(())
}

#[test]
fn hook_failures_are_reported_and_post_save_still_runs() -> TestResult {
    let ran = Arc::new(Mutex::new(false));
    let ran2 = ran.clone();
    let desc = VmStateDescription::builder("dev")
        .simple("x", FieldKind::U8)
        .post_save(move |_| {
            *ran2.lock() = true;
            Ok(())
        })
        .post_load(|_, _| Err("bad index".into()))
        .build()?;
    // A field fails to encode; post_save runs anyway.
    let err = enc(&desc, &mut VmStruct::new()).err().ok_or("missing value accepted")?;
    assert_eq!(err.problem(), Some(&Problem::MissingValue));
    assert!(*ran.lock());
    let err = dec(&desc, 0, &[1]).err().ok_or("post_load error ignored")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::Hook {
            hook: "post_load",
            source: "bad index".into()
        })
    );
    assert!(err.to_string().contains("bad index"));

    let failing = VmStateDescription::builder("dev")
        .pre_save(|_| Err("busy".into()))
        .build()?;
    let err = enc(&failing, &mut VmStruct::new())
        .err()
        .ok_or("pre_save error ignored")?;
    assert_eq!(
        err.problem(),
        Some(&Problem::Hook {
            hook: "pre_save",
            source: "busy".into()
        })
    );
    Ok(())
}

#[test]
fn whole_section_needed() -> TestResult {
    let desc = VmStateDescription::builder("dev")
        .simple("on", FieldKind::Bool)
        .needed(|s| Ok(s.get("on").and_then(VmValue::as_bool) == Some(true)))
        .build()?;
    assert!(!desc.is_needed(&VmStruct::new().with("on", VmValue::Bool(false)))?);
    assert!(desc.is_needed(&VmStruct::new().with("on", VmValue::Bool(true)))?);
    Ok(())
}

/// Subsections come in declaration order, each at most once, so a header
/// that repeats one already loaded belongs to the next array element.
#[test]
fn a_repeated_subsection_belongs_to_the_next_element() -> TestResult {
    let sub = VmStateDescription::builder("slot/cfg")
        .version(1)
        .simple("v", FieldKind::U8)
        .build()?;
    let slot = VmStateDescription::builder("slot").version(1).subsection(sub).build()?;
    let desc = VmStateDescription::builder("dev")
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::Struct(slot)),
                len: vmkit_migration::vmstate::ArrayLen::Fixed(2),
            },
        )
        .build()?;
    let elem = |v: u64| {
        VmValue::Struct(VmStruct::new().with_subsection("slot/cfg", VmStruct::new().with("v", VmValue::UInt(v))))
    };
    let mut state = VmStruct::new().with("slots", VmValue::Array(vec![elem(1), elem(2)]));
    let bytes = enc(&desc, &mut state)?;
    assert_eq!(bytes.len(), 2 * (2 + 8 + 4 + 1));
    assert_eq!(dec(&desc, 0, &bytes)?, state);
    Ok(())
}
