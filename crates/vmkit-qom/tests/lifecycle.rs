//! Reference counting, finalization, resurrection attempts, realize /
//! unrealize / complete, and singleton rules (without a machine: this file
//! never creates `/machine`, so realized devices stay out of the tree).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use vmkit_qom::{
    Error, ErrorKind, Object, Phase, PropertyDef, PropertyKind, TYPE_DEVICE, TYPE_SINGLETON, TYPE_USER_CREATABLE,
    TypeInfo, Value, singleton_instance,
};

mod common;
use common::*;

#[test]
fn finalize_runs_once_when_the_last_reference_goes() -> TestResult {
    let fin = counter();
    TypeInfo::new("life-refs").instance_finalize(bump(&fin)).register()?;
    let a = Object::new("life-refs")?;
    assert_eq!(a.refcount(), 1);
    let b = a.try_ref()?;
    let c = b.clone();
    assert_eq!(a.refcount(), 3);
    assert_eq!(b.handle(), a.handle());
    drop(a);
    drop(b);
    assert_eq!(get(&fin), 0);
    assert_eq!(c.phase(), Phase::Live);
    let h = c.handle();
    drop(c);
    assert_eq!(get(&fin), 1);
    assert_eq!(h.phase(), Phase::Finalized);
    assert_eq!(h.refcount(), 0);
    assert!(h.storage_released());

    // No reference can be taken any more, and the refusal is precise.
    let e = err_of(h.try_ref());
    match &e {
        Error::ObjectFinalized { object, state, action } => {
            assert_eq!(*state, "finalized");
            assert_eq!(action, "taking a reference");
            assert!(object.contains("life-refs"), "{object}");
        }
        other => panic!("{other:?}"),
    }
    assert!(vmkit_qom::stats().resurrections_refused >= 1);
    assert_eq!(err_of(h.pin_storage()).kind(), ErrorKind::ObjectFinalized);
    assert_eq!(
        err_of(h.set_user_data(Arc::new(1u8))).kind(),
        ErrorKind::ObjectFinalized
    );
    assert_eq!(get(&fin), 1);
    // Handles stay comparable and printable.
    assert!(format!("{h:?}").contains("finalized"));
    Ok(())
}

#[test]
fn concurrent_ref_unref_finalizes_exactly_once() -> TestResult {
    let fin = counter();
    TypeInfo::new("life-concurrent")
        .instance_finalize(bump(&fin))
        .register()?;
    for _ in 0..20 {
        let obj = Object::new("life-concurrent")?;
        let h = obj.handle();
        let refs: Vec<_> = (0..4).map(|_| obj.clone()).collect();
        drop(obj);
        std::thread::scope(|s| {
            for r in refs {
                let h = h.clone();
                s.spawn(move || {
                    for i in 0..2000 {
                        if i % 2 == 0 {
                            drop(r.clone());
                        } else if let Ok(extra) = h.try_ref() {
                            assert_eq!(extra.phase(), Phase::Live);
                        }
                    }
                    drop(r);
                    // Whoever comes last: the object is gone for everyone now or soon.
                    for _ in 0..100 {
                        if let Ok(r) = h.try_ref() {
                            assert_eq!(r.phase(), Phase::Live);
                        }
                    }
                });
            }
        });
        assert_eq!(h.phase(), Phase::Finalized);
        assert!(h.storage_released());
    }
    assert_eq!(get(&fin), 20);
    Ok(())
}

#[test]
fn resurrection_inside_finalize_is_refused() -> TestResult {
    let fin = counter();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stash: Arc<Mutex<Vec<Object>>> = Arc::default();
    let (f, s, st) = (fin.clone(), seen.clone(), stash.clone());
    TypeInfo::new("life-resurrect")
        .class_property(PropertyDef::new("n", PropertyKind::uint(32)).default(42u64))
        .instance_finalize(move |o| {
            f.fetch_add(1, Ordering::SeqCst);
            let mut log = s.lock();
            log.push(format!("phase:{}", o.phase().as_str()));
            match o.try_ref() {
                Ok(r) => {
                    // Must not happen; keep the reference so the test sees it.
                    log.push("resurrected".into());
                    std::mem::forget(r);
                }
                Err(e) => log.push(format!("refused:{:?}:{e}", e.kind())),
            }
            // The object's own state is still readable while it finalizes.
            log.push(format!("n:{}", o.get("n")?));
            // Smuggling out the handle does not help either.
            st.lock().push(o.clone());
            Ok(())
        })
        .register()?;
    let obj = Object::new("life-resurrect")?;
    let id = obj.id();
    drop(obj);
    assert_eq!(get(&fin), 1);
    let log = seen.lock().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert_eq!(log[0], "phase:finalizing");
    assert!(log[1].starts_with("refused:ObjectFinalized:"), "{log:?}");
    assert!(log[1].contains("is finalizing: taking a reference refused"), "{log:?}");
    assert_eq!(log[2], "n:42");
    let smuggled = stash.lock().pop().ok_or("no handle")?;
    assert_eq!(smuggled.id(), id);
    assert_eq!(smuggled.phase(), Phase::Finalized);
    assert_eq!(err_of(smuggled.try_ref()).kind(), ErrorKind::ObjectFinalized);
    assert_eq!(get(&fin), 1, "finalize runs exactly once");
    Ok(())
}

#[test]
fn finalize_releases_children_and_links_before_the_hook() -> TestResult {
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s = seen.clone();
    TypeInfo::new("life-fin-children")
        .instance_finalize(move |o| {
            s.lock().push(o.children().len());
            Ok(())
        })
        .register()?;
    let parent = Object::new("life-fin-children")?;
    let child = Object::new("life-fin-children")?;
    parent.add_child("kid", &child)?;
    let ch = child.handle();
    drop(child);
    drop(parent);
    assert_eq!(ch.phase(), Phase::Finalized);
    // The child (finalized as its parent drops it) and then the parent: neither sees children.
    assert_eq!(*seen.lock(), [0, 0]);
    Ok(())
}

#[test]
fn realize_unrealize_and_realize_again() -> TestResult {
    let (r, u, f) = (counter(), counter(), counter());
    TypeInfo::new("life-realize")
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("early", PropertyKind::uint(8)).before_realize())
        .realize(bump(&r))
        .unrealize(bump(&u))
        .instance_finalize(bump(&f))
        .register()?;
    let dev = Object::new("life-realize")?;
    assert!(!dev.is_realized());
    dev.realize()?;
    assert!(dev.is_realized());
    assert_eq!(dev.get("realized")?, Value::Bool(true));
    // Realizing a realized device does nothing.
    dev.realize()?;
    assert_eq!((get(&r), get(&u)), (1, 0));
    assert_eq!(
        err_of(dev.set("early", Value::UInt(1))).kind(),
        ErrorKind::PropertyAccess
    );
    dev.unrealize()?;
    assert!(!dev.is_realized());
    // Unrealizing an unrealized device does nothing.
    dev.unrealize()?;
    assert_eq!((get(&r), get(&u)), (1, 1));
    dev.set("early", Value::UInt(2))?;
    dev.realize()?;
    assert_eq!((get(&r), get(&u)), (2, 1));
    // Through the `realized` property.
    dev.set("realized", Value::Bool(false))?;
    assert!(!dev.is_realized());
    dev.set("realized", Value::Bool(true))?;
    assert!(dev.is_realized());
    assert_eq!(
        err_of(dev.set("realized", Value::str("yes"))).kind(),
        ErrorKind::PropertyType
    );
    assert_eq!((get(&r), get(&u)), (3, 2));
    // Dropping a realized device unrealizes, then finalizes.
    let h = dev.handle();
    drop(dev);
    assert_eq!((get(&r), get(&u), get(&f)), (3, 3, 1));
    assert!(!h.is_realized());
    assert_eq!(err_of(h.realize()).kind(), ErrorKind::ObjectFinalized);
    assert_eq!(err_of(h.unrealize()).kind(), ErrorKind::ObjectFinalized);

    // Only devices have the realized lifecycle.
    TypeInfo::new("life-not-a-device").register()?;
    let o = Object::new("life-not-a-device")?;
    assert_eq!(err_of(o.realize()).kind(), ErrorKind::Lifecycle);
    assert_eq!(err_of(o.unrealize()).kind(), ErrorKind::Lifecycle);
    assert_eq!(err_of(o.complete()).kind(), ErrorKind::Lifecycle);
    Ok(())
}

#[test]
fn unrealize_errors_are_reported_but_cannot_veto() -> TestResult {
    let u = counter();
    TypeInfo::new("life-unrealize-err-base")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .unrealize(bump(&u))
        .register()?;
    TypeInfo::new("life-unrealize-err")
        .parent("life-unrealize-err-base")
        .unrealize(|o| Err(Error::hook_message("unrealize", o.describe(), "busy")))
        .register()?;
    let dev = Object::new("life-unrealize-err")?;
    dev.realize()?;
    let e = err_of(dev.unrealize());
    assert!(e.to_string().contains("busy"), "{e}");
    assert!(!dev.is_realized());
    assert_eq!(get(&u), 1, "every unrealize hook runs");
    assert!(singleton_instance("life-unrealize-err-base")?.is_none());
    Ok(())
}

#[test]
fn singleton_devices() -> TestResult {
    TypeInfo::new("life-single")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .register()?;
    TypeInfo::new("life-single-sub").parent("life-single").register()?;
    let a = Object::new("life-single")?;
    let b = Object::new("life-single-sub")?;
    a.realize()?;
    assert_eq!(singleton_instance("life-single")?, Some(a.handle()));
    assert_eq!(singleton_instance("life-single-sub")?, Some(a.handle()));
    // A subtype shares its base's slot; the error names the active instance.
    let e = err_of(b.realize());
    match &e {
        Error::Singleton {
            type_name,
            singleton_type,
            existing,
        } => {
            assert_eq!(type_name, "life-single-sub");
            assert_eq!(singleton_type, "life-single");
            assert_eq!(existing, &a.describe());
        }
        other => panic!("{other:?}"),
    }
    assert!(!b.is_realized());
    // Once the first is unrealized, another may realize.
    a.unrealize()?;
    assert!(singleton_instance("life-single")?.is_none());
    b.realize()?;
    assert_eq!(err_of(a.realize()).kind(), ErrorKind::Singleton);
    // Finalizing the active one frees the slot.
    drop(b);
    a.realize()?;
    assert_eq!(singleton_instance("life-single")?, Some(a.handle()));
    drop(a);
    assert!(singleton_instance("life-single")?.is_none());

    // A failed realize does not keep the claim.
    TypeInfo::new("life-single-failing")
        .parent(TYPE_DEVICE)
        .implements(TYPE_SINGLETON)
        .realize(|o| Err(Error::hook_message("realize", o.describe(), "nope")))
        .register()?;
    let f = Object::new("life-single-failing")?;
    assert_eq!(err_of(f.realize()).kind(), ErrorKind::Hook);
    assert!(singleton_instance("life-single-failing")?.is_none());
    Ok(())
}

#[test]
fn user_creatable_complete_and_singletons() -> TestResult {
    let (c, f) = (counter(), counter());
    TypeInfo::new("life-uc")
        .implements(TYPE_USER_CREATABLE)
        .class_property(PropertyDef::new("size", PropertyKind::Size).before_realize())
        .class_property(PropertyDef::new("label", PropertyKind::Str))
        .complete(bump(&c))
        .instance_finalize(bump(&f))
        .register()?;
    let o = Object::new("life-uc")?;
    o.set("size", Value::str("2M"))?;
    o.complete()?;
    assert!(o.is_completed());
    assert_eq!(get(&c), 1);
    let e = err_of(o.complete());
    assert_eq!(e.kind(), ErrorKind::Lifecycle);
    assert!(e.to_string().contains("already completed"), "{e}");
    let e = err_of(o.set("size", Value::str("4M")));
    assert!(
        matches!(&e, Error::PropertyAccess { reason, .. } if reason == "it cannot be set after the object was completed"),
        "{e:?}"
    );
    o.set("label", Value::str("ok"))?;
    // A user-creatable object is not a device.
    assert_eq!(err_of(o.realize()).kind(), ErrorKind::Lifecycle);
    drop(o);
    assert_eq!(get(&f), 1);

    let singles = counter();
    TypeInfo::new("life-uc-single")
        .implements(TYPE_USER_CREATABLE)
        .implements(TYPE_SINGLETON)
        .complete(bump(&singles))
        .register()?;
    let a = Object::new("life-uc-single")?;
    let b = Object::new("life-uc-single")?;
    a.complete()?;
    let e = err_of(b.complete());
    assert!(
        matches!(&e, Error::Singleton { existing, .. } if *existing == a.describe()),
        "{e:?}"
    );
    assert!(!b.is_completed());
    assert_eq!(singleton_instance("life-uc-single")?, Some(a.handle()));
    drop(a);
    b.complete()?;
    assert_eq!(singleton_instance("life-uc-single")?, Some(b.handle()));
    assert_eq!(get(&singles), 2);

    // A failing complete does not keep the claim.
    TypeInfo::new("life-uc-single-failing")
        .implements(TYPE_USER_CREATABLE)
        .implements(TYPE_SINGLETON)
        .complete(|o| Err(Error::hook_message("complete", o.describe(), "no file")))
        .register()?;
    let x = Object::new("life-uc-single-failing")?;
    assert_eq!(err_of(x.complete()).kind(), ErrorKind::Hook);
    assert!(!x.is_completed());
    assert!(singleton_instance("life-uc-single-failing")?.is_none());
    Ok(())
}

#[test]
fn user_data_lives_until_the_storage_is_released() -> TestResult {
    TypeInfo::new("life-user-data").register()?;
    let data = Arc::new(5u32);
    let obj = Object::new("life-user-data")?;
    obj.set_user_data(data.clone())?;
    assert_eq!(Arc::strong_count(&data), 2);
    let back = obj.user_data().ok_or("no data")?;
    assert_eq!(back.downcast_ref::<u32>(), Some(&5));
    drop(back);
    let guard = obj.pin_storage()?;
    drop(obj);
    assert_eq!(Arc::strong_count(&data), 2, "a pinned storage keeps the state");
    drop(guard);
    assert_eq!(Arc::strong_count(&data), 1, "released with the storage");
    Ok(())
}

#[test]
fn a_realize_hook_cannot_start_another_transition_of_its_device() -> TestResult {
    let seen: Arc<Mutex<Vec<ErrorKind>>> = Arc::default();
    let s = seen.clone();
    TypeInfo::new("lc-reentrant-realize")
        .parent(TYPE_DEVICE)
        .realize(move |o| {
            let nested = [o.realize(), o.unrealize()];
            s.lock()
                .extend(nested.into_iter().filter_map(|r| r.err().map(|e| e.kind())));
            Ok(())
        })
        .register()?;
    let dev = Object::new("lc-reentrant-realize")?;
    dev.realize()?;
    assert!(dev.is_realized());
    assert_eq!(*seen.lock(), vec![ErrorKind::Lifecycle, ErrorKind::Lifecycle]);
    // Once the first transition is over, the next one works.
    dev.unrealize()?;
    assert!(!dev.is_realized());
    Ok(())
}

#[test]
fn reset_runs_base_first_on_realized_devices_children_before_parents() -> TestResult {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let hook = |tag: &'static str| {
        let log = log.clone();
        move |o: &Object| {
            log.lock()
                .push(format!("{tag}:{}", o.name_in_parent().unwrap_or_default()));
            Ok(())
        }
    };
    TypeInfo::new("lc-reset-base")
        .parent(TYPE_DEVICE)
        .reset(hook("base"))
        .register()?;
    TypeInfo::new("lc-reset-leaf")
        .parent("lc-reset-base")
        .reset(hook("leaf"))
        .register()?;
    let scratch = Scratch::new("lc-reset")?;
    let parent = Object::new("lc-reset-leaf")?;
    scratch.0.add_child("p", &parent)?;
    for name in ["b", "a"] {
        let child = Object::new("lc-reset-base")?;
        parent.add_child(name, &child)?;
        child.realize()?;
    }
    let idle = Object::new("lc-reset-base")?;
    scratch.0.add_child("idle", &idle)?;
    parent.realize()?;
    vmkit_qom::reset_tree(&scratch.0)?;
    assert_eq!(
        *log.lock(),
        ["base:a", "base:b", "base:p", "leaf:p"],
        "idle is not realized"
    );
    log.lock().clear();
    parent.reset()?;
    assert_eq!(*log.lock(), ["base:p", "leaf:p"], "one device: its own hooks only");
    Ok(())
}
