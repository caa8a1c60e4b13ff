//! The machine and QMP-style placement: `device_add` / `device_del` under
//! `/machine/peripheral[-anon]`, `object_add` / `object_del` under
//! `/objects`, rollback on failure, and singletons across them.
//!
//! `/machine` is process-wide, so every test here holds `LOCK`, creates the
//! machine, and destroys it when done (also when it fails).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use vmkit_qom::{
    Creation, Error, ErrorKind, Object, PathError, Phase, PropertyDef, PropertyKind, TYPE_DEVICE, TYPE_MACHINE,
    TYPE_SINGLETON, TYPE_USER_CREATABLE, TypeInfo, Value, create_machine, destroy_machine, device_add, device_del,
    machine, machine_creation_done, machine_ready, new_object, object_add, object_del, qom_tree, resolve_path,
    singleton_instance,
};

mod common;
use common::*;

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the lock and a fresh machine; destroys the machine when dropped.
struct MachineGuard {
    machine: Object,
    _lock: MutexGuard<'static, ()>,
}

impl MachineGuard {
    fn new() -> vmkit_qom::Result<MachineGuard> {
        let lock = LOCK.lock();
        // A previous test that panicked half-way may have left one behind.
        destroy_machine()?;
        let machine = create_machine("none-machine")?;
        Ok(MachineGuard { machine, _lock: lock })
    }
}

impl Drop for MachineGuard {
    fn drop(&mut self) {
        let _ = destroy_machine();
    }
}

fn props(list: &[(&str, Value)]) -> Vec<(String, Value)> {
    list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn machine_creation_and_destruction() -> TestResult {
    let m = MachineGuard::new()?;
    assert_eq!(machine(), Some(m.machine.clone()));
    assert_eq!(m.machine.canonical_path().as_deref(), Some("/machine"));
    assert!(m.machine.is_a(TYPE_MACHINE));
    let names: Vec<String> = m.machine.children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["peripheral", "peripheral-anon", "unattached"]);
    assert_eq!(
        qom_tree("/machine")?,
        "/machine (none-machine)\n  /peripheral (container)\n  /peripheral-anon (container)\n  /unattached (container)\n"
    );
    let e = err_of(create_machine("none-machine"));
    assert!(e.to_string().contains("a machine already exists"), "{e}");
    assert_eq!(err_of(create_machine("container")).kind(), ErrorKind::WrongType);
    assert_eq!(
        err_of(create_machine("place-no-such-machine")).kind(),
        ErrorKind::TypeNotFound
    );

    // Destroying the machine finalizes everything it owns.
    TypeInfo::new("place-destroy-dev").parent(TYPE_DEVICE).register()?;
    let d = device_add("place-destroy-dev", Some("d0"), &[])?;
    let handle = m.machine.clone();
    destroy_machine()?;
    assert!(machine().is_none());
    assert_eq!(handle.phase(), Phase::Finalized);
    assert_eq!(d.phase(), Phase::Finalized);
    // Without a machine, device_add has nowhere to go.
    let e = err_of(device_add("place-destroy-dev", None, &[]));
    assert!(e.to_string().contains("no machine has been created"), "{e}");
    destroy_machine()?;
    assert_eq!(err_of(create_machine(TYPE_MACHINE)).kind(), ErrorKind::AbstractType);
    assert!(machine().is_none());
    Ok(())
}

#[test]
fn device_add_places_and_realizes() -> TestResult {
    let _m = MachineGuard::new()?;
    let realized = counter();
    TypeInfo::new("place-nic")
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("mac", PropertyKind::Str).before_realize())
        .class_property(PropertyDef::new("queues", PropertyKind::uint(8)).default(1u64))
        .realize(bump(&realized))
        .register()?;
    let net0 = device_add(
        "place-nic",
        Some("net0"),
        &props(&[("mac", Value::str("52:54:00:12:34:56")), ("queues", Value::UInt(4))]),
    )?;
    assert_eq!(net0.canonical_path().as_deref(), Some("/machine/peripheral/net0"));
    assert!(net0.is_realized());
    assert_eq!(net0.get("queues")?, Value::UInt(4));
    assert_eq!(net0.refcount(), 1, "the tree holds the only reference");
    let anon0 = device_add("place-nic", None, &[])?;
    let anon1 = device_add("place-nic", None, &[])?;
    assert_eq!(
        anon0.canonical_path().as_deref(),
        Some("/machine/peripheral-anon/device[0]")
    );
    assert_eq!(
        anon1.canonical_path().as_deref(),
        Some("/machine/peripheral-anon/device[1]")
    );
    assert_eq!(get(&realized), 3);
    assert_eq!(resolve_path("net0", None)?, net0);
    assert_eq!(
        qom_tree("/machine/peripheral-anon")?,
        "/machine/peripheral-anon (container)\n  /device[0] (place-nic)\n  /device[1] (place-nic)\n"
    );

    // device_del by id and by path: unrealized, removed, finalized.
    let gone = device_del("net0")?;
    assert_eq!(
        gone,
        [vmkit_qom::DeletedDevice {
            path: "/machine/peripheral/net0".into(),
            id: Some("net0".into())
        }]
    );
    assert_eq!(net0.phase(), Phase::Finalized);
    assert!(resolve_path("/machine/peripheral/net0", None).is_err());
    let gone = device_del("/machine/peripheral-anon/device[0]")?;
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].path.as_str(), gone[0].id.as_deref()),
        ("/machine/peripheral-anon/device[0]", None)
    );
    assert_eq!(anon0.phase(), Phase::Finalized);
    // The id can be used again.
    let again = device_add("place-nic", Some("net0"), &[])?;
    assert_eq!(again.canonical_path().as_deref(), Some("/machine/peripheral/net0"));

    let e = err_of(device_del("place-missing"));
    assert!(
        matches!(&e, Error::Path(PathError::NotFound(p)) if p == "place-missing"),
        "{e:?}"
    );
    assert_eq!(err_of(device_del("/machine/nowhere")).kind(), ErrorKind::Path);
    let e = err_of(device_del("/machine/peripheral"));
    assert!(
        matches!(&e, Error::WrongType { expected, .. } if expected == TYPE_DEVICE),
        "{e:?}"
    );
    Ok(())
}

#[test]
fn device_add_failures_leave_nothing_behind() -> TestResult {
    let m = MachineGuard::new()?;
    let (inits, fins) = (counter(), counter());
    let fail_realize = Arc::new(AtomicBool::new(false));
    let fr = fail_realize.clone();
    TypeInfo::new("place-fragile")
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("n", PropertyKind::uint(8)))
        .instance_init(bump(&inits))
        .instance_finalize(bump(&fins))
        .realize(move |o| {
            if fr.load(Ordering::SeqCst) {
                Err(Error::hook_message("realize", o.describe(), "cannot open backend"))
            } else {
                Ok(())
            }
        })
        .register()?;
    TypeInfo::new("place-not-a-device").register()?;

    let tree_before = qom_tree("/machine")?;
    // Refused before anything is created.
    assert_eq!(
        err_of(device_add("place-no-such", None, &[])).kind(),
        ErrorKind::TypeNotFound
    );
    assert_eq!(
        err_of(device_add("place-not-a-device", None, &[])).kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        err_of(device_add(TYPE_DEVICE, None, &[])).kind(),
        ErrorKind::AbstractType
    );
    for bad in ["0abc", "a b", "", "a/b", "x*"] {
        let e = err_of(device_add("place-fragile", Some(bad), &[]));
        assert!(matches!(&e, Error::Path(PathError::Invalid { .. })), "{bad:?}: {e:?}");
    }
    assert_eq!(get(&inits), 0);

    // Bad properties: created, then finalized.
    let e = err_of(device_add(
        "place-fragile",
        Some("f0"),
        &props(&[("n", Value::Int(300))]),
    ));
    assert_eq!(e.kind(), ErrorKind::PropertyValue);
    let e = err_of(device_add(
        "place-fragile",
        Some("f0"),
        &props(&[("nope", Value::Int(1))]),
    ));
    assert_eq!(e.kind(), ErrorKind::PropertyNotFound);
    let e = err_of(device_add("place-fragile", None, &props(&[("n", Value::str("x"))])));
    assert_eq!(e.kind(), ErrorKind::PropertyType);
    // A failing realize: placed, then removed again.
    fail_realize.store(true, Ordering::SeqCst);
    let e = err_of(device_add("place-fragile", Some("f0"), &[]));
    assert!(e.to_string().contains("cannot open backend"), "{e}");
    let e = err_of(device_add("place-fragile", None, &[]));
    assert_eq!(e.kind(), ErrorKind::Hook);
    assert_eq!((get(&inits), get(&fins)), (5, 5));
    assert_eq!(qom_tree("/machine")?, tree_before);
    // The anonymous numbering is not consumed by failures.
    fail_realize.store(false, Ordering::SeqCst);
    let ok = device_add("place-fragile", None, &[])?;
    assert_eq!(
        ok.canonical_path().as_deref(),
        Some("/machine/peripheral-anon/device[0]")
    );

    // A duplicate id is refused without touching the existing device.
    let f0 = device_add("place-fragile", Some("f0"), &props(&[("n", Value::UInt(7))]))?;
    let e = err_of(device_add(
        "place-fragile",
        Some("f0"),
        &props(&[("n", Value::UInt(8))]),
    ));
    assert!(e.to_string().contains("duplicate device id 'f0'"), "{e}");
    assert_eq!(f0.get("n")?, Value::UInt(7));
    assert!(f0.is_realized());
    assert_eq!(get(&inits), 7);
    drop(m);
    assert_eq!(get(&fins), 7);
    Ok(())
}

#[test]
fn realize_without_parent_goes_to_unattached() -> TestResult {
    let _m = MachineGuard::new()?;
    TypeInfo::new("place-loose").parent(TYPE_DEVICE).register()?;
    let a = Object::new("place-loose")?;
    let b = Object::new("place-loose")?;
    a.realize()?;
    b.realize()?;
    assert_eq!(a.canonical_path().as_deref(), Some("/machine/unattached/device[0]"));
    assert_eq!(b.canonical_path().as_deref(), Some("/machine/unattached/device[1]"));
    assert_eq!(a.refcount(), 2);
    // Unrealize does not move it; realize again keeps its place.
    a.unrealize()?;
    a.realize()?;
    assert_eq!(a.canonical_path().as_deref(), Some("/machine/unattached/device[0]"));
    // A failed realize does not leave it placed.
    TypeInfo::new("place-loose-failing")
        .parent(TYPE_DEVICE)
        .realize(|o| Err(Error::hook_message("realize", o.describe(), "no")))
        .register()?;
    let c = Object::new("place-loose-failing")?;
    assert!(c.realize().is_err());
    assert_eq!(c.parent(), None);
    assert_eq!(c.refcount(), 1);
    Ok(())
}

#[test]
fn singleton_devices_through_device_add() -> TestResult {
    let _m = MachineGuard::new()?;
    TypeInfo::new("place-single")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .register()?;
    let first = device_add("place-single", Some("s0"), &[])?;
    let e = err_of(device_add("place-single", Some("s1"), &[]));
    match &e {
        Error::Singleton {
            existing,
            singleton_type,
            ..
        } => {
            assert_eq!(existing, "/machine/peripheral/s0");
            assert_eq!(singleton_type, "place-single");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("/machine/peripheral/s0"));
    assert!(resolve_path("/machine/peripheral/s1", None).is_err(), "rolled back");
    let e = err_of(device_add("place-single", None, &[]));
    assert_eq!(e.kind(), ErrorKind::Singleton);
    assert!(qom_tree("/machine/peripheral-anon")?.lines().count() == 1);
    // Construction alone is fine while one is active.
    let spare = Object::new("place-single")?;
    assert_eq!(singleton_instance("place-single")?, Some(first.clone()));
    // After unplugging the first, another realizes.
    device_del("s0")?;
    assert_eq!(first.phase(), Phase::Finalized);
    assert!(singleton_instance("place-single")?.is_none());
    let second = device_add("place-single", Some("s1"), &[])?;
    assert_eq!(singleton_instance("place-single")?, Some(second.clone()));
    assert_eq!(err_of(spare.realize()).kind(), ErrorKind::Singleton);
    // Unrealized in place (still in the tree) frees the slot too.
    second.unrealize()?;
    spare.realize()?;
    assert_eq!(spare.canonical_path().as_deref(), Some("/machine/unattached/device[0]"));
    let e = err_of(second.realize());
    assert!(
        matches!(&e, Error::Singleton { existing, .. } if existing == "/machine/unattached/device[0]"),
        "{e:?}"
    );
    Ok(())
}

#[test]
fn object_add_and_object_del() -> TestResult {
    let _m = MachineGuard::new()?;
    let (completes, fins) = (counter(), counter());
    let deletable = Arc::new(AtomicBool::new(true));
    let dl = deletable.clone();
    TypeInfo::new("place-memdev")
        .implements(TYPE_USER_CREATABLE)
        .class_property(PropertyDef::new("size", PropertyKind::Size).before_realize())
        .complete(bump(&completes))
        .instance_finalize(bump(&fins))
        .can_be_deleted(move |_| dl.load(Ordering::SeqCst))
        .register()?;
    let mem = object_add("place-memdev", "place-mem0", &props(&[("size", Value::str("1G"))]))?;
    assert_eq!(mem.canonical_path().as_deref(), Some("/objects/place-mem0"));
    assert!(mem.is_completed());
    assert_eq!(mem.get("size")?, Value::UInt(1 << 30));
    assert_eq!(get(&completes), 1);
    assert_eq!(
        err_of(mem.set("size", Value::str("2G"))).kind(),
        ErrorKind::PropertyAccess
    );

    let e = err_of(object_add("place-memdev", "place-mem0", &[]));
    assert!(e.to_string().contains("duplicate object id 'place-mem0'"), "{e}");
    assert_eq!(
        err_of(object_add("container", "place-x", &[])).kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        err_of(object_add("place-memdev", "9lives", &[])).kind(),
        ErrorKind::Path
    );
    let e = err_of(object_add(
        "place-memdev",
        "place-mem1",
        &props(&[("size", Value::str("1Q"))]),
    ));
    assert_eq!(e.kind(), ErrorKind::PropertyValue);
    assert!(resolve_path("/objects/place-mem1", None).is_err());

    // In use: object_del refuses and keeps it.
    deletable.store(false, Ordering::SeqCst);
    let e = err_of(object_del("place-mem0"));
    assert!(e.to_string().contains("is in use"), "{e}");
    assert_eq!(mem.phase(), Phase::Live);
    deletable.store(true, Ordering::SeqCst);
    object_del("place-mem0")?;
    assert_eq!(mem.phase(), Phase::Finalized);
    let e = err_of(object_del("place-mem0"));
    assert!(
        matches!(&e, Error::Path(PathError::NotFound(p)) if p == "/objects/place-mem0"),
        "{e:?}"
    );
    assert_eq!(get(&fins), 2, "the one refused for its size and the deleted one");

    // A failing complete is rolled back.
    TypeInfo::new("place-bad-complete")
        .implements(TYPE_USER_CREATABLE)
        .complete(|o| Err(Error::hook_message("complete", o.describe(), "no such file")))
        .register()?;
    let e = err_of(object_add("place-bad-complete", "place-bad", &[]));
    assert_eq!(e.kind(), ErrorKind::Hook);
    assert!(resolve_path("/objects/place-bad", None).is_err());
    Ok(())
}

#[test]
fn singleton_user_creatable_through_object_add() -> TestResult {
    let _m = MachineGuard::new()?;
    TypeInfo::new("place-uc-single")
        .implements(TYPE_USER_CREATABLE)
        .implements(TYPE_SINGLETON)
        .register()?;
    let first = object_add("place-uc-single", "place-only", &[])?;
    let e = err_of(object_add("place-uc-single", "place-second", &[]));
    match &e {
        Error::Singleton { existing, .. } => assert_eq!(existing, "/objects/place-only"),
        other => panic!("{other:?}"),
    }
    assert!(resolve_path("/objects/place-second", None).is_err(), "rolled back");
    object_del("place-only")?;
    assert_eq!(first.phase(), Phase::Finalized);
    let second = object_add("place-uc-single", "place-second", &[])?;
    assert_eq!(singleton_instance("place-uc-single")?, Some(second));
    object_del("place-second")?;
    assert!(singleton_instance("place-uc-single")?.is_none());
    Ok(())
}

#[test]
fn devices_made_after_machine_creation_done_are_hotplugged() -> TestResult {
    let m = MachineGuard::new()?;
    TypeInfo::new("place-hotplug-dev").parent(TYPE_DEVICE).register()?;
    assert!(!machine_ready());
    let cold = device_add("place-hotplug-dev", Some("cold"), &[])?;
    assert!(!new_object("place-hotplug-dev")?.is_hotplugged());
    machine_creation_done()?;
    assert!(machine_ready());
    let hot = device_add("place-hotplug-dev", Some("hot"), &[])?;
    assert_eq!(cold.get("hotplugged")?, Value::Bool(false));
    assert_eq!(hot.get("hotplugged")?, Value::Bool(true));
    assert!(hot.is_hotplugged() && !cold.is_hotplugged());
    // Only devices: other objects have no such notion.
    let plain = Object::new("container")?;
    assert!(!plain.is_hotplugged());
    // Created the management layer's way, a device is hot-plugged too, and
    // so is a device embedded in it; the object layer itself creates cold
    // unless told otherwise.
    let loose = new_object("place-hotplug-dev")?;
    assert!(loose.is_hotplugged());
    let inner = loose.embed_child("inner", "place-hotplug-dev")?;
    assert!(inner.is_hotplugged());
    assert!(!new_object("container")?.is_hotplugged());
    assert!(!Object::new("place-hotplug-dev")?.is_hotplugged());
    let ty = vmkit_qom::lookup_type("place-hotplug-dev")?;
    assert!(Object::create(&ty, Creation { hotplugged: true })?.is_hotplugged());
    let container = vmkit_qom::lookup_type("container")?;
    assert!(!Object::create(&container, Creation { hotplugged: true })?.is_hotplugged());
    drop(m);
    assert!(!machine_ready(), "destroying the machine clears the flag");
    assert_eq!(err_of(machine_creation_done()).kind(), ErrorKind::Lifecycle);
    Ok(())
}

#[test]
fn an_unplug_hook_may_refuse_device_del_and_the_device_stays() -> TestResult {
    let _m = MachineGuard::new()?;
    let allow = Arc::new(AtomicBool::new(false));
    let gate = allow.clone();
    TypeInfo::new("place-fixed-dev")
        .parent(TYPE_DEVICE)
        .unplug(move |o| {
            if gate.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Error::hook_message(
                    "unplug",
                    o.describe(),
                    "Bus 'x' does not support hotplugging",
                ))
            }
        })
        .register()?;
    let dev = device_add("place-fixed-dev", Some("fixed"), &[])?;
    let e = err_of(device_del("fixed"));
    assert!(e.to_string().ends_with("Bus 'x' does not support hotplugging"), "{e}");
    assert!(dev.is_realized(), "refused: still plugged");
    assert_eq!(resolve_path("/machine/peripheral/fixed", None)?, dev);
    allow.store(true, Ordering::SeqCst);
    device_del("fixed")?;
    assert!(resolve_path("/machine/peripheral/fixed", None).is_err());
    Ok(())
}

#[test]
fn a_hot_plugged_device_is_reset_when_realized() -> TestResult {
    let _m = MachineGuard::new()?;
    let resets = counter();
    TypeInfo::new("place-reset-dev")
        .parent(TYPE_DEVICE)
        .reset(bump(&resets))
        .register()?;
    device_add("place-reset-dev", Some("cold"), &[])?;
    assert_eq!(get(&resets), 0, "cold-plugged: reset with the machine");
    machine_creation_done()?;
    device_add("place-reset-dev", Some("hot"), &[])?;
    assert_eq!(get(&resets), 1, "hot-plugged: reset at realize");
    Ok(())
}

#[test]
fn destroying_the_machine_unrealizes_its_devices_first() -> TestResult {
    let m = MachineGuard::new()?;
    // A device that keeps the machine referenced while realized (as a
    // device's bus-master address space does) must not keep it alive.
    let holds: Arc<Mutex<Option<vmkit_qom::ObjectRef>>> = Arc::default();
    let (take, release) = (holds.clone(), holds.clone());
    TypeInfo::new("place-holding-dev")
        .parent(TYPE_DEVICE)
        .realize(move |_| {
            *take.lock() = Some(
                machine()
                    .ok_or(Error::hook_message("realize", "", "no machine"))?
                    .try_ref()?,
            );
            Ok(())
        })
        .unrealize(move |_| {
            release.lock().take();
            Ok(())
        })
        .register()?;
    let dev = device_add("place-holding-dev", Some("holder"), &[])?;
    let machine_obj = m.machine.clone();
    destroy_machine()?;
    assert!(!dev.is_realized());
    assert_eq!(machine_obj.phase(), Phase::Finalized, "nothing kept it");
    assert!(holds.lock().is_none());
    Ok(())
}
