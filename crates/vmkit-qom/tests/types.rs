//! Type registration, class building, hook order and introspection.
//!
//! The registry is process-wide and tests run in parallel threads, so every
//! test registers its own types, named after the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use vmkit_qom::{
    Error, ErrorKind, Object, Phase, PropertyDef, PropertyKind, TYPE_DEVICE, TYPE_INTERFACE, TYPE_OBJECT,
    TYPE_SINGLETON, TypeInfo, Value, device_type_properties, list_types, lookup_type, singleton_instance,
    type_properties,
};

mod common;
use common::*;

type Log = Arc<Mutex<Vec<String>>>;

fn log_hook(log: &Log, entry: &str) -> impl Fn(&Object) -> vmkit_qom::Result<()> + Send + Sync + use<> {
    let log = log.clone();
    let entry = entry.to_string();
    move |_| {
        log.lock().push(entry.clone());
        Ok(())
    }
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock())
}

#[test]
fn duplicate_registration_is_refused() -> TestResult {
    TypeInfo::new("types-dup").register()?;
    let e = err_of(TypeInfo::new("types-dup").parent(TYPE_DEVICE).register());
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    let msg = e.to_string();
    assert!(msg.contains("types-dup") && msg.contains("already registered"), "{msg}");
    // The first registration is untouched.
    assert_eq!(
        lookup_type("types-dup")?.parent().map(|p| p.name().to_string()),
        Some(TYPE_OBJECT.into())
    );
    // Built-in names are taken too.
    assert_eq!(
        err_of(TypeInfo::new(TYPE_DEVICE).register()).kind(),
        ErrorKind::TypeRegistration
    );
    Ok(())
}

#[test]
fn unknown_parent_and_bad_names_are_refused() {
    let e = err_of(TypeInfo::new("types-orphan").parent("types-no-such-parent").register());
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    assert!(
        e.to_string().contains("'types-no-such-parent' is not registered"),
        "{e}"
    );
    assert!(
        lookup_type("types-orphan").is_err(),
        "a refused type must not be registered"
    );

    for bad in ["", "types/slash", "types<x>", " types-space", "types-space "] {
        let e = err_of(TypeInfo::new(bad).register());
        assert_eq!(e.kind(), ErrorKind::TypeRegistration, "{bad:?}");
    }
}

#[test]
fn interface_rules_are_enforced() -> TestResult {
    // A class cannot derive from an interface, nor an interface from a class.
    let e = err_of(TypeInfo::new("types-iface-child").parent(TYPE_SINGLETON).register());
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    let e = err_of(
        TypeInfo::interface("types-iface-bad-parent")
            .parent(TYPE_DEVICE)
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    // Interfaces carry no instance state or hooks.
    let e = err_of(
        TypeInfo::interface("types-iface-hook")
            .instance_init(|_| Ok(()))
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    let e = err_of(
        TypeInfo::interface("types-iface-prop")
            .instance_property(PropertyDef::new("x", PropertyKind::Bool))
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    let e = err_of(
        TypeInfo::interface("types-iface-unrealize")
            .unrealize(|_| Ok(()))
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    // Implemented interfaces must exist and be interfaces.
    let e = err_of(
        TypeInfo::new("types-impl-unknown")
            .implements("types-no-such-iface")
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    let e = err_of(TypeInfo::new("types-impl-class").implements(TYPE_DEVICE).register());
    assert!(e.to_string().contains("is not an interface"), "{e}");

    // A valid interface, inherited through a sub-interface, shows in is_a and listings.
    TypeInfo::interface("types-iface").register()?;
    TypeInfo::interface("types-iface-sub")
        .parent("types-iface")
        .register()?;
    let base = TypeInfo::new("types-iface-impl")
        .implements("types-iface-sub")
        .register()?;
    TypeInfo::new("types-iface-impl-child")
        .parent("types-iface-impl")
        .register()?;
    assert!(lookup_type("types-iface")?.is_interface());
    assert!(lookup_type("types-iface")?.is_abstract());
    assert!(base.is_a("types-iface") && base.is_a("types-iface-sub") && base.is_a(TYPE_OBJECT));
    let obj = Object::new("types-iface-impl-child")?;
    assert!(obj.is_a("types-iface") && obj.is_a("types-iface-impl") && !obj.is_a(TYPE_DEVICE));
    let names: Vec<String> = list_types(Some("types-iface"), false)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["types-iface-impl", "types-iface-impl-child"]);
    let with_abstract: Vec<String> = list_types(Some("types-iface"), true)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        with_abstract,
        [
            "types-iface",
            "types-iface-impl",
            "types-iface-impl-child",
            "types-iface-sub"
        ]
    );
    Ok(())
}

#[test]
fn abstract_and_unknown_types_cannot_be_instantiated() -> TestResult {
    TypeInfo::new("types-abstract")
        .parent(TYPE_DEVICE)
        .abstract_type(true)
        .register()?;
    TypeInfo::new("types-abstract-leaf")
        .parent("types-abstract")
        .register()?;
    for name in [
        "types-abstract",
        TYPE_DEVICE,
        TYPE_OBJECT,
        TYPE_SINGLETON,
        TYPE_INTERFACE,
    ] {
        let e = err_of(Object::new(name));
        assert_eq!(e.kind(), ErrorKind::AbstractType, "{name}");
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = err_of(Object::new("types-no-such-type"));
    assert!(
        matches!(&e, Error::TypeNotFound(n) if n == "types-no-such-type"),
        "{e:?}"
    );
    assert_eq!(
        err_of(lookup_type("types-no-such-type")).kind(),
        ErrorKind::TypeNotFound
    );

    // Embedding follows the same rules, and leaves nothing behind.
    let leaf = Object::new("types-abstract-leaf")?;
    assert_eq!(
        err_of(leaf.embed_child("c", "types-abstract")).kind(),
        ErrorKind::AbstractType
    );
    assert_eq!(
        err_of(leaf.embed_child("c", "types-no-such-type")).kind(),
        ErrorKind::TypeNotFound
    );
    assert_eq!(leaf.storage_refcount(), 1);
    assert!(leaf.children().is_empty());
    Ok(())
}

#[test]
fn hooks_run_in_qemu_order() -> TestResult {
    let log: Log = Arc::default();
    let level = |name: &str, parent: &str| {
        let tag = name.rsplit('-').next().unwrap_or_default().to_string();
        let hook = |what: &str| log_hook(&log, &format!("{what}:{tag}"));
        let class_log = log.clone();
        let class_tag = tag.clone();
        TypeInfo::new(name)
            .parent(parent)
            .class_init(move |_| {
                class_log.lock().push(format!("class_init:{class_tag}"));
                Ok(())
            })
            .instance_init(hook("init"))
            .instance_post_init(hook("post_init"))
            .realize(hook("realize"))
            .unrealize(hook("unrealize"))
            .instance_finalize(hook("finalize"))
    };
    level("types-order-base", TYPE_DEVICE).abstract_type(true).register()?;
    level("types-order-mid", "types-order-base").register()?;
    level("types-order-leaf", "types-order-mid").register()?;

    let dev = Object::new("types-order-leaf")?;
    assert_eq!(
        take(&log),
        [
            "class_init:base",
            "class_init:mid",
            "class_init:leaf",
            "init:base",
            "init:mid",
            "init:leaf",
            "post_init:leaf",
            "post_init:mid",
            "post_init:base",
        ]
    );
    dev.realize()?;
    assert_eq!(take(&log), ["realize:base", "realize:mid", "realize:leaf"]);
    dev.unrealize()?;
    assert_eq!(take(&log), ["unrealize:leaf", "unrealize:mid", "unrealize:base"]);
    dev.realize()?;
    take(&log);
    // Finalizing a realized device unrealizes it first.
    drop(dev);
    assert_eq!(
        take(&log),
        [
            "unrealize:leaf",
            "unrealize:mid",
            "unrealize:base",
            "finalize:leaf",
            "finalize:mid",
            "finalize:base",
        ]
    );

    // Classes are built once: a second instance (and the mid type) run no class_init.
    let mid = Object::new("types-order-mid")?;
    drop(mid);
    assert_eq!(
        take(&log),
        [
            "init:base",
            "init:mid",
            "post_init:mid",
            "post_init:base",
            "finalize:mid",
            "finalize:base"
        ]
    );
    Ok(())
}

#[test]
fn failing_realize_is_undone_in_reverse() -> TestResult {
    let log: Log = Arc::default();
    TypeInfo::new("types-realize-fail-base")
        .parent(TYPE_DEVICE)
        .realize(log_hook(&log, "realize:base"))
        .unrealize(log_hook(&log, "unrealize:base"))
        .register()?;
    TypeInfo::new("types-realize-fail-mid")
        .parent("types-realize-fail-base")
        .realize(|o| Err(Error::hook_message("realize", o.describe(), "no backend")))
        .unrealize(log_hook(&log, "unrealize:mid"))
        .register()?;
    TypeInfo::new("types-realize-fail-leaf")
        .parent("types-realize-fail-mid")
        .realize(log_hook(&log, "realize:leaf"))
        .register()?;
    let dev = Object::new("types-realize-fail-leaf")?;
    let e = err_of(dev.realize());
    assert_eq!(e.kind(), ErrorKind::Hook);
    assert!(e.to_string().contains("no backend"), "{e}");
    // Only the level that had realized is undone; the failing one and those after it are not.
    assert_eq!(take(&log), ["realize:base", "unrealize:base"]);
    assert!(!dev.is_realized());
    assert_eq!(dev.get("realized")?, Value::Bool(false));
    Ok(())
}

#[test]
fn failing_instance_init_finalizes_only_initialised_levels() -> TestResult {
    let log: Log = Arc::default();
    TypeInfo::new("types-init-fail-base")
        .instance_init(log_hook(&log, "init:base"))
        .instance_finalize(log_hook(&log, "finalize:base"))
        .register()?;
    TypeInfo::new("types-init-fail-leaf")
        .parent("types-init-fail-base")
        .instance_init(|o| Err(Error::hook_message("instance_init", o.describe(), "boom")))
        .instance_finalize(log_hook(&log, "finalize:leaf"))
        .register()?;
    let e = err_of(Object::new("types-init-fail-leaf"));
    assert_eq!(e.kind(), ErrorKind::Hook);
    assert_eq!(take(&log), ["init:base", "finalize:base"]);

    // A failing post-init comes after every level was initialised: all are finalized.
    TypeInfo::new("types-post-init-fail")
        .parent("types-init-fail-base")
        .instance_post_init(|o| Err(Error::hook_message("post_init", o.describe(), "late")))
        .register()?;
    assert_eq!(err_of(Object::new("types-post-init-fail")).kind(), ErrorKind::Hook);
    assert_eq!(take(&log), ["init:base", "finalize:base"]);
    Ok(())
}

#[test]
fn class_init_adds_properties_and_overrides_defaults() -> TestResult {
    TypeInfo::new("types-ci-base")
        .class_property(PropertyDef::new("irq", PropertyKind::uint(8)).default(5u64))
        .register()?;
    TypeInfo::new("types-ci-leaf")
        .parent("types-ci-base")
        .class_init(|c| {
            assert_eq!(c.type_name(), "types-ci-leaf");
            c.set_default("irq", Value::UInt(7))?;
            c.add_property(PropertyDef::new("mem", PropertyKind::Size).default("64K"))
        })
        .register()?;
    let base = Object::new("types-ci-base")?;
    let leaf = Object::new("types-ci-leaf")?;
    assert_eq!(base.get("irq")?, Value::UInt(5));
    assert_eq!(leaf.get("irq")?, Value::UInt(7));
    assert_eq!(leaf.get("mem")?, Value::UInt(65536));
    assert_eq!(err_of(base.get("mem")).kind(), ErrorKind::PropertyNotFound);

    // Errors from class_init surface at first instantiation, every time.
    TypeInfo::new("types-ci-bad-default")
        .parent("types-ci-base")
        .class_init(|c| c.set_default("irq", Value::UInt(300)))
        .register()?;
    assert_eq!(
        err_of(Object::new("types-ci-bad-default")).kind(),
        ErrorKind::PropertyValue
    );
    assert_eq!(
        err_of(Object::new("types-ci-bad-default")).kind(),
        ErrorKind::PropertyValue
    );
    TypeInfo::new("types-ci-dup")
        .parent("types-ci-base")
        .class_init(|c| c.add_property(PropertyDef::new("irq", PropertyKind::Bool)))
        .register()?;
    assert_eq!(err_of(Object::new("types-ci-dup")).kind(), ErrorKind::DuplicateProperty);
    TypeInfo::new("types-ci-unknown")
        .parent("types-ci-base")
        .class_init(|c| c.set_default("nope", Value::Bool(true)))
        .register()?;
    assert_eq!(
        err_of(Object::new("types-ci-unknown")).kind(),
        ErrorKind::PropertyNotFound
    );

    // A class_init that asks for its own class is refused, not deadlocked.
    TypeInfo::new("types-ci-recursive")
        .class_init(|_| Object::new("types-ci-recursive").map(drop))
        .register()?;
    let e = err_of(Object::new("types-ci-recursive"));
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    assert!(e.to_string().contains("class_init asked for the class"), "{e}");

    // Bad defaults given at registration are refused at registration.
    let e = err_of(
        TypeInfo::new("types-bad-default")
            .class_property(PropertyDef::new("n", PropertyKind::uint(8)).default(256u64))
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::PropertyValue);
    assert!(lookup_type("types-bad-default").is_err());
    let e = err_of(
        TypeInfo::new("types-empty-enum")
            .class_property(PropertyDef::new(
                "e",
                PropertyKind::Enum {
                    name: "Empty".into(),
                    values: Vec::new().into(),
                },
            ))
            .register(),
    );
    assert_eq!(e.kind(), ErrorKind::TypeRegistration);
    Ok(())
}

#[test]
fn introspection_lists_class_and_instance_properties() -> TestResult {
    TypeInfo::new("types-intro-base")
        .parent(TYPE_DEVICE)
        .class_property(
            PropertyDef::new("base-prop", PropertyKind::uint(16))
                .default(3u64)
                .description("a base"),
        )
        .register()?;
    TypeInfo::new("types-intro")
        .parent("types-intro-base")
        .class_property(PropertyDef::new("leaf-prop", PropertyKind::Str).before_realize())
        .class_property(PropertyDef::new("legacy-thing", PropertyKind::Bool))
        .instance_property(PropertyDef::new("inst-decl", PropertyKind::Bool).default(true))
        .instance_init(|o| o.add_property(PropertyDef::new("inst-dyn", PropertyKind::Size).read_only()))
        .register()?;

    let props = type_properties("types-intro")?;
    let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "inst-decl",
            "inst-dyn",
            "legacy-thing",
            "leaf-prop",
            "base-prop",
            "hotplugged",
            "hotpluggable",
            "realized",
            "type",
        ]
    );
    let find = |n: &str| props.iter().find(|p| p.name == n).ok_or(format!("no {n}"));
    let inst = find("inst-decl")?;
    assert!(!inst.class_property && inst.writable && inst.readable);
    assert_eq!(inst.default_value, Some(Value::Bool(true)));
    let dynp = find("inst-dyn")?;
    assert!(!dynp.class_property && !dynp.writable);
    assert_eq!(dynp.type_name, "size");
    let base = find("base-prop")?;
    assert!(base.class_property);
    assert_eq!(base.type_name, "uint16");
    assert_eq!(base.description.as_deref(), Some("a base"));
    assert_eq!(base.default_value, Some(Value::UInt(3)));
    assert!(find("leaf-prop")?.before_realize_only);
    let ty = find("type")?;
    assert!(ty.readable && !ty.writable && ty.default_value.is_none());

    // device-list-properties hides the lifecycle and legacy ones.
    let dev: Vec<String> = device_type_properties("types-intro")?
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(dev, ["inst-decl", "inst-dyn", "leaf-prop", "base-prop"]);
    assert_eq!(err_of(device_type_properties("container")).kind(), ErrorKind::WrongType);
    assert_eq!(
        err_of(device_type_properties(TYPE_DEVICE)).kind(),
        ErrorKind::AbstractType
    );
    assert_eq!(err_of(type_properties("types-no-such")).kind(), ErrorKind::TypeNotFound);

    // An abstract type lists its class properties without instantiating.
    TypeInfo::new("types-intro-abstract")
        .parent("types-intro-base")
        .abstract_type(true)
        .instance_init(|_| panic!("an abstract type must not be instantiated for introspection"))
        .register()?;
    let names: Vec<String> = type_properties("types-intro-abstract")?
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["base-prop", "hotplugged", "hotpluggable", "realized", "type"]);

    // An instance's listing matches the type's.
    let obj = Object::new("types-intro")?;
    assert_eq!(obj.property_infos()?, props);
    Ok(())
}

#[test]
fn type_properties_of_a_singleton_leaves_no_instance_and_no_claim() -> TestResult {
    let inits = Arc::new(AtomicUsize::new(0));
    let finalizes = Arc::new(AtomicUsize::new(0));
    let (i, f) = (inits.clone(), finalizes.clone());
    TypeInfo::new("types-intro-singleton")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .class_property(PropertyDef::new("x", PropertyKind::Bool))
        .instance_init(move |_| {
            i.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .instance_finalize(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .register()?;
    let props = type_properties("types-intro-singleton")?;
    assert!(props.iter().any(|p| p.name == "x"));
    device_type_properties("types-intro-singleton")?;
    assert_eq!(inits.load(Ordering::SeqCst), 2);
    assert_eq!(
        finalizes.load(Ordering::SeqCst),
        2,
        "the temporary instances must be finalized"
    );
    assert!(singleton_instance("types-intro-singleton")?.is_none());

    // The singleton slot is free: a real instance realizes.
    let dev = Object::new("types-intro-singleton")?;
    dev.realize()?;
    assert_eq!(singleton_instance("types-intro-singleton")?, Some(dev.handle()));
    // Introspecting while an instance is active is fine too, and leaves it active.
    type_properties("types-intro-singleton")?;
    assert_eq!(singleton_instance("types-intro-singleton")?, Some(dev.handle()));
    drop(dev);
    assert!(singleton_instance("types-intro-singleton")?.is_none());
    assert_eq!(finalizes.load(Ordering::SeqCst), 4);
    assert_eq!(err_of(singleton_instance("container")).kind(), ErrorKind::WrongType);
    Ok(())
}

#[test]
fn construction_has_no_side_effects() -> TestResult {
    TypeInfo::new("types-pure-singleton")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .register()?;
    // Any number of instances may exist; only realize claims the singleton.
    let a = Object::new("types-pure-singleton")?;
    let b = Object::new("types-pure-singleton")?;
    assert!(singleton_instance("types-pure-singleton")?.is_none());
    assert!(a.parent().is_none() && b.parent().is_none());
    assert_eq!(a.phase(), Phase::Live);
    assert_ne!(a.id(), b.id());
    assert_ne!(a.storage_id(), b.storage_id());
    Ok(())
}
