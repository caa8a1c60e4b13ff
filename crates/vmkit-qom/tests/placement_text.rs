//! `device_add_from_text` / `object_add_from_text`: command-line values,
//! each parsed by its property's own type, with errors that name the
//! property and the type, and nothing left behind on failure.

use std::sync::Arc;

use vmkit_qom::{
    ErrorKind, PropertyDef, PropertyKind, TYPE_DEVICE, TYPE_USER_CREATABLE, TypeInfo, Value, create_machine,
    destroy_machine, device_add_from_text, object_add_from_text, resolve_path,
};

mod common;
use common::*;

fn text(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn register() -> vmkit_qom::Result<()> {
    let values: Arc<[Arc<str>]> = ["on", "off", "auto"].iter().map(|&v| Arc::from(v)).collect();
    TypeInfo::new("text-dev")
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("count", PropertyKind::uint(32)))
        .class_property(PropertyDef::new("offset", PropertyKind::int(64)))
        .class_property(PropertyDef::new("flag", PropertyKind::Bool))
        .class_property(PropertyDef::new("label", PropertyKind::Str))
        .class_property(PropertyDef::new("window", PropertyKind::Size))
        .class_property(PropertyDef::new(
            "mode",
            PropertyKind::Enum {
                name: "OnOffAuto".into(),
                values,
            },
        ))
        .register()?;
    TypeInfo::new("text-obj")
        .implements(TYPE_USER_CREATABLE)
        .class_property(PropertyDef::new("size", PropertyKind::Size))
        .register()?;
    Ok(())
}

/// One test, so that the process-wide machine is not shared between threads.
#[test]
fn text_values_take_their_property_type() -> TestResult {
    register()?;
    create_machine("none-machine")?;
    let dev = device_add_from_text(
        "text-dev",
        Some("d0"),
        &text(&[
            ("count", "0x10"),
            ("offset", "-7"),
            ("flag", "on"),
            ("label", "0x10"),
            ("window", "64K"),
            ("mode", "auto"),
        ]),
    )?;
    assert_eq!(dev.get("count")?, Value::UInt(16));
    assert_eq!(dev.get("offset")?, Value::Int(-7));
    assert_eq!(dev.get("flag")?, Value::Bool(true));
    assert_eq!(dev.get("label")?, Value::str("0x10"));
    assert_eq!(dev.get("window")?, Value::UInt(64 << 10));
    assert_eq!(dev.get("mode")?, Value::str("auto"));
    assert!(dev.is_realized());

    for (name, value, kind, words) in [
        ("count", "abc", ErrorKind::PropertyValue, &["'count'", "uint32"][..]),
        (
            "count",
            "4294967296",
            ErrorKind::PropertyValue,
            &["'count'", "uint32", "out of range"][..],
        ),
        ("flag", "maybe", ErrorKind::PropertyValue, &["'flag'", "bool"][..]),
        ("window", "1Q", ErrorKind::PropertyValue, &["'window'", "size"][..]),
        ("mode", "never", ErrorKind::PropertyValue, &["'mode'", "OnOffAuto"][..]),
        ("nope", "1", ErrorKind::PropertyNotFound, &["'nope'"][..]),
    ] {
        let e = err_of(device_add_from_text("text-dev", Some("d1"), &text(&[(name, value)])));
        assert_eq!(e.kind(), kind, "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "{w} in {e}");
        }
        assert!(
            resolve_path("/machine/peripheral/d1", None).is_err(),
            "nothing left behind"
        );
    }

    let obj = object_add_from_text("text-obj", "o0", &text(&[("size", "2M")]))?;
    assert_eq!(obj.get("size")?, Value::UInt(2 << 20));
    let e = err_of(object_add_from_text("text-obj", "o1", &text(&[("size", "-1")])));
    assert_eq!(e.kind(), ErrorKind::PropertyValue, "{e}");
    assert!(resolve_path("/objects/o1", None).is_err());
    destroy_machine()?;
    Ok(())
}
