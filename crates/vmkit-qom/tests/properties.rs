//! Property kinds, value checking, every property error, size strings,
//! enums, custom accessors and `link<>` properties.
//!
//! Every test registers its own types (named after the test) and puts the
//! objects it needs in the tree under its own uniquely named container.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vmkit_qom::{Error, ErrorKind, Object, PathError, Phase, PropertyDef, PropertyKind, TYPE_DEVICE, TypeInfo, Value};

mod common;
use common::*;

fn on_off_auto() -> PropertyKind {
    PropertyKind::Enum {
        name: "OnOffAuto".into(),
        values: vec!["on".into(), "off".into(), "auto".into()].into(),
    }
}

fn register_kinds(name: &str) -> vmkit_qom::Result<()> {
    TypeInfo::new(name)
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("b", PropertyKind::Bool))
        .class_property(PropertyDef::new("i8", PropertyKind::int(8)).default(-3i64))
        .class_property(PropertyDef::new("i64", PropertyKind::int(64)))
        .class_property(PropertyDef::new("u8", PropertyKind::uint(8)))
        .class_property(PropertyDef::new("u16", PropertyKind::uint(16)).default(0x1234u64))
        .class_property(PropertyDef::new("u32", PropertyKind::uint(32)))
        .class_property(PropertyDef::new("u64", PropertyKind::uint(64)))
        .class_property(
            PropertyDef::new(
                "ranged",
                PropertyKind::Int {
                    bits: 32,
                    min: -10,
                    max: 10,
                },
            )
            .default(1i64),
        )
        .class_property(PropertyDef::new("s", PropertyKind::Str).default("hello"))
        .class_property(PropertyDef::new("mode", on_off_auto()).default("auto"))
        .class_property(PropertyDef::new("e0", on_off_auto()))
        .class_property(PropertyDef::new("mem", PropertyKind::Size).default("1M"))
        .class_property(PropertyDef::new("ro", PropertyKind::uint(32)).default(9u64).read_only())
        .class_property(PropertyDef::new("early", PropertyKind::uint(32)).before_realize())
        .register()
        .map(drop)
}

#[test]
fn defaults_and_zero_values() -> TestResult {
    register_kinds("props-defaults")?;
    let o = Object::new("props-defaults")?;
    let expect = [
        ("b", Value::Bool(false)),
        ("i8", Value::Int(-3)),
        ("i64", Value::Int(0)),
        ("u8", Value::UInt(0)),
        ("u16", Value::UInt(0x1234)),
        ("ranged", Value::Int(1)),
        ("s", Value::str("hello")),
        ("mode", Value::str("auto")),
        ("e0", Value::str("on")),
        ("mem", Value::UInt(1 << 20)),
        ("ro", Value::UInt(9)),
        ("type", Value::str("props-defaults")),
        ("realized", Value::Bool(false)),
    ];
    for (name, value) in expect {
        assert_eq!(o.get(name)?, value, "{name}");
        assert!(o.has_property(name));
    }
    assert!(!o.has_property("nope"));
    // A range that excludes zero starts at the nearest bound.
    TypeInfo::new("props-defaults-clamped")
        .class_property(PropertyDef::new(
            "n",
            PropertyKind::Int {
                bits: 16,
                min: 5,
                max: 9,
            },
        ))
        .register()?;
    assert_eq!(Object::new("props-defaults-clamped")?.get("n")?, Value::Int(5));
    Ok(())
}

#[test]
fn scalar_kinds_round_trip_and_check_ranges() -> TestResult {
    register_kinds("props-scalars")?;
    let o = Object::new("props-scalars")?;
    o.set("b", Value::Bool(true))?;
    assert_eq!(o.get("b")?, Value::Bool(true));

    // Either integer shape is accepted when in range, and stored with the property's signedness.
    o.set("i8", Value::UInt(127))?;
    assert_eq!(o.get("i8")?, Value::Int(127));
    o.set("i8", Value::Int(-128))?;
    assert_eq!(o.get("i8")?, Value::Int(-128));
    o.set("u8", Value::Int(255))?;
    assert_eq!(o.get("u8")?, Value::UInt(255));
    o.set("u64", Value::UInt(u64::MAX))?;
    assert_eq!(o.get("u64")?, Value::UInt(u64::MAX));
    o.set("i64", Value::Int(i64::MIN))?;
    assert_eq!(o.get("i64")?, Value::Int(i64::MIN));
    o.set("u32", Value::UInt(u64::from(u32::MAX)))?;

    for (name, bad) in [
        ("i8", Value::Int(128)),
        ("i8", Value::Int(-129)),
        ("u8", Value::Int(256)),
        ("u8", Value::Int(-1)),
        ("u16", Value::UInt(65536)),
        ("u32", Value::UInt(1 << 32)),
        ("u64", Value::Int(-1)),
        ("i64", Value::UInt(u64::MAX)),
        ("ranged", Value::Int(11)),
        ("ranged", Value::Int(-11)),
    ] {
        let e = err_of(o.set(name, bad.clone()));
        assert_eq!(e.kind(), ErrorKind::PropertyValue, "{name} = {bad}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("'{name}'")) && msg.contains("out of range"),
            "{msg}"
        );
    }
    // A refused write leaves the old value.
    assert_eq!(o.get("u8")?, Value::UInt(255));
    let e = err_of(o.set("ranged", Value::Int(11)));
    assert!(
        matches!(&e, Error::PropertyValue { expected, reason, .. } if expected == "int32 (-10..=10)" && reason == "11 is out of range"),
        "{e:?}"
    );
    let e = err_of(o.set("u8", Value::Int(256)));
    assert!(e.to_string().contains("uint8 (0..=255)"), "{e}");

    o.set("s", Value::str("world"))?;
    assert_eq!(o.get("s")?, Value::str("world"));
    o.set("s", Value::str(""))?;
    assert_eq!(o.get("s")?, Value::str(""));
    Ok(())
}

#[test]
fn wrong_value_types_are_refused_precisely() -> TestResult {
    register_kinds("props-wrong-types")?;
    let o = Object::new("props-wrong-types")?;
    for (name, bad, expected, got) in [
        ("b", Value::Int(1), "bool", "an integer"),
        ("b", Value::str("on"), "bool", "a string"),
        ("u8", Value::str("1"), "uint8", "a string"),
        ("u8", Value::Bool(true), "uint8", "a boolean"),
        ("i64", Value::Null, "int64", "null"),
        ("s", Value::Int(3), "str", "an integer"),
        ("mode", Value::Bool(false), "OnOffAuto", "a boolean"),
        (
            "mem",
            Value::Bool(true),
            "size (an integer or a string such as \"64K\")",
            "a boolean",
        ),
    ] {
        let e = err_of(o.set(name, bad));
        match &e {
            Error::PropertyType {
                object,
                name: n,
                expected: x,
                got: g,
            } => {
                assert_eq!((n.as_str(), x.as_str(), g.as_str()), (name, expected, got));
                assert!(object.contains("props-wrong-types"), "{object}");
            }
            other => panic!("{name}: expected a PropertyType error, got {other:?}"),
        }
    }
    let e = err_of(o.set("u8", Value::str("1")));
    assert_eq!(
        e.to_string(),
        format!("property 'u8' of {} expects uint8, got a string", o.describe())
    );
    Ok(())
}

#[test]
fn unknown_properties_and_access_errors() -> TestResult {
    register_kinds("props-access")?;
    let o = Object::new("props-access")?;
    for r in [
        o.get("nope").map(drop),
        o.set("nope", Value::Bool(true)),
        o.set_str("nope", "1"),
    ] {
        let e = err_of(r);
        assert!(
            matches!(&e, Error::PropertyNotFound { name, .. } if name == "nope"),
            "{e:?}"
        );
    }
    assert_eq!(err_of(o.remove_property("nope")).kind(), ErrorKind::PropertyNotFound);
    // Class properties cannot be removed.
    assert_eq!(err_of(o.remove_property("u8")).kind(), ErrorKind::PropertyNotFound);

    let e = err_of(o.set("ro", Value::UInt(1)));
    assert!(matches!(&e, Error::PropertyAccess { name, reason, .. } if name == "ro" && reason == "it is read-only"));
    assert_eq!(o.get("ro")?, Value::UInt(9));
    assert_eq!(err_of(o.set("type", Value::str("x"))).kind(), ErrorKind::PropertyAccess);
    assert_eq!(
        err_of(o.set("hotpluggable", Value::Bool(false))).kind(),
        ErrorKind::PropertyAccess
    );

    // before_realize properties: writable until realize, refused while realized, writable again after.
    o.set("early", Value::UInt(1))?;
    o.realize()?;
    let e = err_of(o.set("early", Value::UInt(2)));
    assert!(
        matches!(&e, Error::PropertyAccess { reason, .. } if reason == "it cannot be set after the object was realized"),
        "{e:?}"
    );
    assert_eq!(err_of(o.set_str("early", "3")).kind(), ErrorKind::PropertyAccess);
    o.set("u8", Value::UInt(1))?; // ordinary properties stay writable
    assert_eq!(o.get("early")?, Value::UInt(1));
    o.unrealize()?;
    o.set("early", Value::UInt(4))?;
    assert_eq!(o.get("early")?, Value::UInt(4));
    Ok(())
}

#[test]
fn instance_properties_add_remove_and_duplicates() -> TestResult {
    TypeInfo::new("props-instance")
        .class_property(PropertyDef::new("c", PropertyKind::Bool))
        .instance_property(PropertyDef::new("decl", PropertyKind::uint(8)).default(1u64))
        .register()?;
    let o = Object::new("props-instance")?;
    assert_eq!(o.get("decl")?, Value::UInt(1));
    o.add_property(PropertyDef::new("extra", PropertyKind::Size).default("4K"))?;
    assert_eq!(o.get("extra")?, Value::UInt(4096));
    o.set("extra", Value::str("8K"))?;
    assert_eq!(o.get("extra")?, Value::UInt(8192));

    for dup in ["c", "decl", "extra", "type"] {
        let e = err_of(o.add_property(PropertyDef::new(dup, PropertyKind::Bool)));
        assert!(
            matches!(&e, Error::DuplicateProperty { name, .. } if name == dup),
            "{dup}: {e:?}"
        );
    }
    // A bad default is refused when the property is added.
    let e = err_of(o.add_property(PropertyDef::new("bad", PropertyKind::uint(8)).default(300u64)));
    assert_eq!(e.kind(), ErrorKind::PropertyValue);
    assert!(!o.has_property("bad"));
    let e = err_of(o.add_property(PropertyDef::new(
        "kid",
        PropertyKind::Child {
            type_name: "object".into(),
        },
    )));
    assert_eq!(e.kind(), ErrorKind::PropertyAccess);

    o.remove_property("extra")?;
    assert!(!o.has_property("extra"));
    assert_eq!(err_of(o.get("extra")).kind(), ErrorKind::PropertyNotFound);
    o.add_property(PropertyDef::new("extra", PropertyKind::Bool))?;
    assert_eq!(o.get("extra")?, Value::Bool(false));
    Ok(())
}

#[test]
fn size_strings() -> TestResult {
    register_kinds("props-size")?;
    let o = Object::new("props-size")?;
    for (text, bytes) in [
        ("0", 0u64),
        ("512", 512),
        ("512B", 512),
        ("64K", 64 << 10),
        ("64k", 64 << 10),
        ("1.5M", 3 << 19),
        ("2G", 2 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("15E", 15 << 60),
        (" 8K ", 8 << 10),
    ] {
        o.set("mem", Value::str(text))?;
        assert_eq!(o.get("mem")?, Value::UInt(bytes), "{text}");
        o.set_str("mem", text)?;
        assert_eq!(o.get("mem")?, Value::UInt(bytes), "{text} via set_str");
    }
    o.set("mem", Value::Int(4096))?;
    assert_eq!(o.get("mem")?, Value::UInt(4096));
    o.set("mem", Value::UInt(u64::MAX))?;
    assert_eq!(o.get("mem")?, Value::UInt(u64::MAX));

    for bad in ["", "K", "1Q", "16E", "1.5", "0.1K", "-1", "1KB", "1..5K", "lots"] {
        let e = err_of(o.set("mem", Value::str(bad)));
        assert!(
            matches!(&e, Error::PropertyValue { name, expected, .. } if name == "mem" && expected == "size"),
            "{bad:?}: {e:?}"
        );
    }
    let e = err_of(o.set("mem", Value::Int(-1)));
    assert!(e.to_string().contains("-1 is negative"), "{e}");
    assert_eq!(o.get("mem")?, Value::UInt(u64::MAX));
    assert_eq!(vmkit_qom::parse_size("64K"), Ok(65536));
    assert_eq!(vmkit_qom::format_size(64 << 10), "64 KiB");
    Ok(())
}

#[test]
fn enums() -> TestResult {
    register_kinds("props-enum")?;
    let o = Object::new("props-enum")?;
    for v in ["on", "off", "auto"] {
        o.set("mode", Value::str(v))?;
        assert_eq!(o.get("mode")?, Value::str(v));
    }
    let e = err_of(o.set("mode", Value::str("maybe")));
    match &e {
        Error::PropertyValue { expected, reason, .. } => {
            assert_eq!(expected, "OnOffAuto (one of 'on', 'off', 'auto')");
            assert_eq!(reason, "'maybe' is not a member");
        }
        other => panic!("{other:?}"),
    }
    // Members are case-sensitive.
    assert_eq!(err_of(o.set("mode", Value::str("ON"))).kind(), ErrorKind::PropertyValue);
    assert_eq!(o.get("mode")?, Value::str("auto"));
    o.set_str("mode", "off")?;
    assert_eq!(o.get("mode")?, Value::str("off"));
    let info = o.property_infos()?;
    let mode = info.iter().find(|p| p.name == "mode").ok_or("no mode")?;
    assert_eq!(mode.type_name, "OnOffAuto");
    Ok(())
}

#[test]
fn command_line_strings() -> TestResult {
    register_kinds("props-set-str")?;
    let o = Object::new("props-set-str")?;
    for (text, v) in [
        ("on", true),
        ("off", false),
        ("yes", true),
        ("no", false),
        ("true", true),
        ("false", false),
    ] {
        o.set_str("b", text)?;
        assert_eq!(o.get("b")?, Value::Bool(v), "{text}");
    }
    assert_eq!(err_of(o.set_str("b", "maybe")).kind(), ErrorKind::PropertyValue);
    o.set_str("u16", "0x10")?;
    assert_eq!(o.get("u16")?, Value::UInt(16));
    o.set_str("u16", "65535")?;
    assert_eq!(err_of(o.set_str("u16", "65536")).kind(), ErrorKind::PropertyValue);
    assert_eq!(err_of(o.set_str("u16", "-1")).kind(), ErrorKind::PropertyValue);
    assert_eq!(err_of(o.set_str("u16", "ten")).kind(), ErrorKind::PropertyValue);
    o.set_str("i8", "-0x80")?;
    assert_eq!(o.get("i8")?, Value::Int(-128));
    assert_eq!(err_of(o.set_str("i8", "-129")).kind(), ErrorKind::PropertyValue);
    o.set_str("s", "free text")?;
    assert_eq!(o.get("s")?, Value::str("free text"));
    Ok(())
}

#[test]
fn custom_accessors() -> TestResult {
    let store = Arc::new(AtomicU64::new(7));
    let (g, s) = (store.clone(), store.clone());
    TypeInfo::new("props-custom")
        .class_property(PropertyDef::new("computed", PropertyKind::uint(8)).accessors(
            Some(Arc::new(move |_| Ok(Value::UInt(g.load(Ordering::SeqCst))))),
            Some(Arc::new(move |_, v| {
                s.store(
                    v.as_integer().and_then(|n| u64::try_from(n).ok()).unwrap_or_default(),
                    Ordering::SeqCst,
                );
                Ok(())
            })),
        ))
        .class_property(PropertyDef::new("wo", PropertyKind::Bool).accessors(None, Some(Arc::new(|_, _| Ok(())))))
        .class_property(PropertyDef::new("failing", PropertyKind::Str).accessors(
            Some(Arc::new(|o| {
                Err(Error::hook_message("get", o.describe(), "backend gone"))
            })),
            None,
        ))
        .register()?;
    let o = Object::new("props-custom")?;
    assert_eq!(o.get("computed")?, Value::UInt(7));
    o.set("computed", Value::Int(200))?;
    assert_eq!(store.load(Ordering::SeqCst), 200);
    // The setter only ever sees checked values.
    assert_eq!(
        err_of(o.set("computed", Value::Int(300))).kind(),
        ErrorKind::PropertyValue
    );
    assert_eq!(store.load(Ordering::SeqCst), 200);
    o.set("wo", Value::Bool(true))?;
    let e = err_of(o.get("wo"));
    assert!(
        matches!(&e, Error::PropertyAccess { reason, .. } if reason == "it is write-only"),
        "{e:?}"
    );
    let e = err_of(o.get("failing"));
    assert!(e.to_string().contains("backend gone"), "{e}");
    assert_eq!(
        err_of(o.set("failing", Value::str("x"))).kind(),
        ErrorKind::PropertyAccess
    );
    let infos = o.property_infos()?;
    let wo = infos.iter().find(|p| p.name == "wo").ok_or("no wo")?;
    assert!(!wo.readable && wo.writable && wo.default_value.is_none());
    Ok(())
}

fn register_link_types(prefix: &str) -> vmkit_qom::Result<()> {
    TypeInfo::new(format!("{prefix}-target"))
        .parent(TYPE_DEVICE)
        .register()?;
    TypeInfo::new(format!("{prefix}-target-sub"))
        .parent(format!("{prefix}-target"))
        .register()?;
    TypeInfo::new(format!("{prefix}-other")).register()?;
    TypeInfo::new(format!("{prefix}-holder"))
        .class_property(PropertyDef::new(
            "weak",
            PropertyKind::Link {
                target: format!("{prefix}-target").into(),
                strong: false,
            },
        ))
        .class_property(PropertyDef::new(
            "strong",
            PropertyKind::Link {
                target: format!("{prefix}-target").into(),
                strong: true,
            },
        ))
        .class_property(PropertyDef::new("n", PropertyKind::uint(8)))
        .register()?;
    Ok(())
}

#[test]
fn links_set_by_object_and_by_path_with_type_checks() -> TestResult {
    register_link_types("props-link")?;
    let scratch = Scratch::new("props-link-scratch")?;
    let target = Object::new("props-link-target")?;
    let sub = Object::new("props-link-target-sub")?;
    let other = Object::new("props-link-other")?;
    scratch.0.add_child("tgt", &target)?;
    scratch.0.add_child("sub", &sub)?;
    scratch.0.add_child("oth", &other)?;
    let holder = Object::new("props-link-holder")?;

    assert_eq!(holder.get("weak")?, Value::str(""));
    assert_eq!(holder.get_link("weak")?, None);

    // By object.
    holder.set_link("weak", Some(&target))?;
    assert_eq!(holder.get_link("weak")?, Some(target.handle()));
    assert_eq!(holder.get("weak")?, Value::str("/props-link-scratch/tgt"));
    // A subtype is accepted.
    holder.set_link("weak", Some(&sub))?;
    assert_eq!(holder.get("weak")?, Value::str("/props-link-scratch/sub"));
    // The wrong type is refused, naming both types, and the old target stays.
    let e = err_of(holder.set_link("weak", Some(&other)));
    match &e {
        Error::PropertyType {
            name, expected, got, ..
        } => {
            assert_eq!(name, "weak");
            assert_eq!(expected, "link<props-link-target>");
            assert_eq!(got, "an object of type 'props-link-other'");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(holder.get_link("weak")?, Some(sub.handle()));
    holder.set_link("weak", None)?;
    assert_eq!(holder.get_link("weak")?, None);

    // By path: absolute, partial, and "" to clear.
    holder.set("weak", Value::str("/props-link-scratch/tgt"))?;
    assert_eq!(holder.get_link("weak")?, Some(target.handle()));
    holder.set("weak", Value::str("props-link-scratch/sub"))?;
    assert_eq!(holder.get_link("weak")?, Some(sub.handle()));
    holder.set_str("weak", "/props-link-scratch/tgt")?;
    assert_eq!(holder.get_link("weak")?, Some(target.handle()));
    let e = err_of(holder.set("weak", Value::str("/props-link-scratch/oth")));
    assert_eq!(e.kind(), ErrorKind::PropertyType);
    let e = err_of(holder.set("weak", Value::str("/props-link-scratch/missing")));
    assert!(
        matches!(&e, Error::Path(PathError::NotFound(p)) if p == "/props-link-scratch/missing"),
        "{e:?}"
    );
    let e = err_of(holder.set("weak", Value::Int(3)));
    assert!(
        matches!(&e, Error::PropertyType { expected, got, .. } if expected == "link<props-link-target> (a path)" && got == "an integer"),
        "{e:?}"
    );
    assert_eq!(holder.get_link("weak")?, Some(target.handle()));
    holder.set("weak", Value::str(""))?;
    assert_eq!(holder.get_link("weak")?, None);

    // set_link / get_link on a property that is not a link.
    assert_eq!(
        err_of(holder.set_link("n", Some(&target))).kind(),
        ErrorKind::PropertyType
    );
    assert_eq!(err_of(holder.get_link("n")).kind(), ErrorKind::PropertyType);
    assert_eq!(
        err_of(holder.set_link("nope", None)).kind(),
        ErrorKind::PropertyNotFound
    );

    // A link through which a path continues.
    holder.set_link("weak", Some(&target))?;
    scratch.0.add_child("holder", &holder)?;
    assert_eq!(
        vmkit_qom::resolve_path("/props-link-scratch/holder/weak", None)?,
        target.handle()
    );
    Ok(())
}

#[test]
fn strong_links_keep_their_target_alive() -> TestResult {
    register_link_types("props-strong")?;
    let holder = Object::new("props-strong-holder")?;
    let target = Object::new("props-strong-target")?;
    let handle = target.handle();
    holder.set_link("strong", Some(&target))?;
    assert_eq!(handle.refcount(), 2);
    drop(target);
    assert_eq!(handle.phase(), Phase::Live, "the strong link holds a reference");
    assert_eq!(handle.refcount(), 1);
    assert_eq!(holder.get_link("strong")?, Some(handle.clone()));
    // Clearing the link drops its reference, which finalizes the target.
    holder.set_link("strong", None)?;
    assert_eq!(handle.phase(), Phase::Finalized);
    assert!(handle.storage_released());
    // A link cannot be set to a finalized object.
    assert_eq!(
        err_of(holder.set_link("strong", Some(&handle))).kind(),
        ErrorKind::ObjectFinalized
    );

    // Replacing the target releases the old one; finalizing the holder releases the current one.
    let a = Object::new("props-strong-target")?;
    let b = Object::new("props-strong-target")?;
    let (ha, hb) = (a.handle(), b.handle());
    holder.set_link("strong", Some(&a))?;
    holder.set_link("strong", Some(&b))?;
    drop((a, b));
    assert_eq!(ha.phase(), Phase::Finalized);
    assert_eq!(hb.phase(), Phase::Live);
    drop(holder);
    assert_eq!(hb.phase(), Phase::Finalized);

    // A weak link does not keep its target.
    let holder = Object::new("props-strong-holder")?;
    let t = Object::new("props-strong-target")?;
    let ht = t.handle();
    holder.set_link("weak", Some(&t))?;
    assert_eq!(ht.refcount(), 1);
    drop(t);
    assert_eq!(ht.phase(), Phase::Finalized);
    Ok(())
}

#[test]
fn a_computed_link_is_not_reported_as_finalizing() -> TestResult {
    register_link_types("props-computed-link")?;
    TypeInfo::new("props-computed-link-computed")
        .class_property(
            PropertyDef::new(
                "link",
                PropertyKind::Link {
                    target: "props-computed-link-target".into(),
                    strong: false,
                },
            )
            .accessors(Some(Arc::new(|_| Ok(Value::str("")))), Some(Arc::new(|_, _| Ok(())))),
        )
        .register()?;
    let holder = Object::new("props-computed-link-computed")?;
    let target = Object::new("props-computed-link-target")?;
    // There is no stored value to point: refused as an access error, not as
    // though the (live) holder were finalizing.
    let e = err_of(holder.set_link("link", Some(&target)));
    assert_eq!(e.kind(), ErrorKind::PropertyAccess, "{e}");
    assert_eq!(holder.phase(), Phase::Live);
    assert_eq!(target.refcount(), 1);
    Ok(())
}

#[test]
fn finalized_objects_refuse_property_access() -> TestResult {
    register_kinds("props-finalized")?;
    let o = Object::new("props-finalized")?;
    let h = o.handle();
    drop(o);
    for r in [
        h.get("u8").map(drop),
        h.set("u8", Value::UInt(1)),
        h.set_str("u8", "1"),
        h.property_infos().map(drop),
        h.add_property(PropertyDef::new("x", PropertyKind::Bool)),
        h.remove_property("u8"),
    ] {
        let e = err_of(r);
        assert!(
            matches!(e, Error::ObjectFinalized { .. } | Error::PropertyNotFound { .. }),
            "{e:?}"
        );
    }
    let e = err_of(h.get("u8"));
    assert!(
        matches!(&e, Error::ObjectFinalized { state, .. } if *state == "finalized"),
        "{e:?}"
    );
    Ok(())
}

#[test]
fn a_property_with_a_syntax_of_its_own() -> TestResult {
    // An int32 that text gives as "SS.F" (a PCI address), as QEMU's `addr`.
    let parser = vmkit_qom::TextParser::new(|text| {
        let (slot, func) = text.split_once('.').unwrap_or((text, "0"));
        let slot = u8::from_str_radix(slot, 16).map_err(|_| format!("doesn't take value '{text}'"))?;
        let func = u8::from_str_radix(func, 16).map_err(|_| format!("doesn't take value '{text}'"))?;
        Ok(Value::Int(i64::from(slot) << 3 | i64::from(func)))
    });
    TypeInfo::new("prop-syntax-dev")
        .parent(TYPE_DEVICE)
        .class_property(
            PropertyDef::new(
                "addr",
                PropertyKind::Int {
                    bits: 32,
                    min: -1,
                    max: 255,
                },
            )
            .default(Value::Int(-1))
            .parser(parser),
        )
        .register()?;
    let dev = Object::new("prop-syntax-dev")?;
    dev.set_str("addr", "3.1")?;
    assert_eq!(dev.get("addr")?, Value::Int(0x19), "command-line text");
    dev.set("addr", Value::str("4"))?;
    assert_eq!(
        dev.get("addr")?,
        Value::Int(0x20),
        "a string where an int32 is expected"
    );
    dev.set("addr", Value::Int(0x28))?;
    assert_eq!(dev.get("addr")?, Value::Int(0x28), "an integer as usual");
    let e = err_of(dev.set_str("addr", "zz"));
    assert_eq!(e.kind(), ErrorKind::PropertyValue);
    assert!(e.to_string().contains("doesn't take value 'zz'"), "{e}");
    assert_eq!(
        err_of(dev.set("addr", Value::Int(256))).kind(),
        ErrorKind::PropertyValue
    );
    assert_eq!(
        err_of(dev.set_str("addr", "20.0")).kind(),
        ErrorKind::PropertyValue,
        "256: out of range"
    );
    assert_eq!(dev.get("addr")?, Value::Int(0x28), "refusals change nothing");
    Ok(())
}
