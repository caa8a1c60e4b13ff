//! Embedded children and shared storage: the storage outlives its container
//! while an embedded child is referenced (the qemu-xhci BAR case), is released
//! exactly when the last member is finalized and no guard pins it, and a
//! child whose container is gone reports that instead of reaching it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vmkit_qom::{
    Error, ErrorKind, Object, ObjectRef, Phase, PropertyDef, PropertyKind, TYPE_CONTAINER, TYPE_DEVICE, TypeInfo,
    Value, root,
};

mod common;
use common::*;

#[test]
fn embedded_children_share_their_container_storage() -> TestResult {
    TypeInfo::new("emb-basic-region")
        .class_property(PropertyDef::new("size", PropertyKind::Size).default("4K"))
        .register()?;
    TypeInfo::new("emb-basic-dev").parent(TYPE_DEVICE).register()?;
    let dev = Object::new("emb-basic-dev")?;
    assert!(!dev.is_embedded());
    assert_eq!(dev.container()?, None);
    assert_eq!(dev.storage_refcount(), 1);
    let region = dev.embed_child("bar", "emb-basic-region")?;
    assert!(region.is_embedded());
    assert_eq!(region.container()?, Some(dev.handle()));
    assert_eq!(region.storage_id(), dev.storage_id());
    assert_eq!(dev.storage_refcount(), 2);
    // The container owns the only reference, through its child<> property.
    assert_eq!(region.refcount(), 1);
    assert_eq!(region.parent(), Some(dev.handle()));
    assert_eq!(dev.child("bar"), Some(region.clone()));
    assert_eq!(region.get("size")?, Value::UInt(4096));
    // Auto-numbered names work as for add_child.
    let r0 = dev.embed_child("r[*]", "emb-basic-region")?;
    let r1 = dev.embed_child("r[*]", "emb-basic-region")?;
    assert_eq!(r0.name_in_parent().as_deref(), Some("r[0]"));
    assert_eq!(r1.name_in_parent().as_deref(), Some("r[1]"));
    assert_eq!(dev.storage_refcount(), 4);

    // Unreferenced embedded children go with their container, and so does the storage.
    let h = dev.handle();
    drop(dev);
    for o in [&h, &region, &r0, &r1] {
        assert_eq!(o.phase(), Phase::Finalized);
        assert!(o.storage_released());
    }
    assert_eq!(h.storage_refcount(), 0);
    assert_eq!(
        err_of(h.embed_child("late", "emb-basic-region")).kind(),
        ErrorKind::ObjectFinalized
    );
    Ok(())
}

#[test]
fn failed_embedding_leaves_nothing_behind() -> TestResult {
    let fin = Arc::new(AtomicUsize::new(0));
    TypeInfo::new("emb-fail-child")
        .instance_finalize(bump(&fin))
        .register()?;
    TypeInfo::new("emb-fail-bad-init")
        .instance_init(|o| Err(Error::hook_message("instance_init", o.describe(), "bad")))
        .register()?;
    let parent = Object::new(TYPE_CONTAINER)?;
    parent.embed_child("c", "emb-fail-child")?;
    assert_eq!(parent.storage_refcount(), 2);
    // A duplicate name is refused before anything is created.
    let e = err_of(parent.embed_child("c", "emb-fail-child"));
    assert_eq!(e.kind(), ErrorKind::DuplicateProperty);
    assert_eq!(fin.load(Ordering::SeqCst), 0);
    assert_eq!(parent.storage_refcount(), 2);
    // A failing instance_init: same.
    assert_eq!(
        err_of(parent.embed_child("d", "emb-fail-bad-init")).kind(),
        ErrorKind::Hook
    );
    assert_eq!(parent.storage_refcount(), 2);
    assert_eq!(parent.children().len(), 1);
    // A bad name.
    assert_eq!(
        err_of(parent.embed_child("a/b", "emb-fail-child")).kind(),
        ErrorKind::Path
    );
    assert_eq!(parent.storage_refcount(), 2);
    // Neither refusal created a child.
    assert_eq!(fin.load(Ordering::SeqCst), 0);
    let h = parent.handle();
    drop(parent);
    assert!(h.storage_released());
    assert_eq!(fin.load(Ordering::SeqCst), 1);
    Ok(())
}

/// The qemu-xhci case: a PCI wrapper embeds the controller, which embeds a
/// memory region; something else (a pending memory transaction) holds a
/// reference to the region when the wrapper is unplugged.
#[test]
fn xhci_region_outlives_its_containers() -> TestResult {
    let fin = Arc::new(AtomicUsize::new(0));
    TypeInfo::new("emb-xhci-region")
        .class_property(PropertyDef::new("size", PropertyKind::Size).default("64K"))
        .class_property(PropertyDef::new("name", PropertyKind::Str).default("xhci-bar"))
        .instance_finalize(bump(&fin))
        .register()?;
    TypeInfo::new("emb-xhci-controller")
        .parent(TYPE_DEVICE)
        .class_property(PropertyDef::new("numports", PropertyKind::uint(32)).default(4u64))
        .instance_init(|o| o.embed_child("mem", "emb-xhci-region").map(drop))
        .instance_finalize(bump(&fin))
        .register()?;
    TypeInfo::new("emb-xhci-pci")
        .parent(TYPE_DEVICE)
        .instance_init(|o| o.embed_child("xhci", "emb-xhci-controller").map(drop))
        .realize(|o| {
            let xhci = o
                .child("xhci")
                .ok_or_else(|| Error::hook_message("realize", o.describe(), "no xhci"))?;
            xhci.realize()
        })
        .instance_finalize(bump(&fin))
        .register()?;

    let place = Object::new(TYPE_CONTAINER)?;
    root().add_child("emb-xhci-scratch", &place)?;
    let wrapper = Object::new("emb-xhci-pci")?;
    place.add_child("usb", &wrapper)?;
    wrapper.realize()?;
    let controller = wrapper.child("xhci").ok_or("no controller")?;
    let region = controller.child("mem").ok_or("no region")?;
    assert_eq!(
        region.canonical_path().as_deref(),
        Some("/emb-xhci-scratch/usb/xhci/mem")
    );
    assert!(controller.is_realized());
    assert_eq!(region.storage_id(), wrapper.storage_id());
    assert_eq!(controller.storage_id(), wrapper.storage_id());
    assert_eq!(wrapper.storage_refcount(), 3);

    // Someone outside takes a reference to the region.
    let outside: ObjectRef = region.try_ref()?;
    let w = wrapper.handle();
    drop(wrapper);
    // Unplug: the wrapper is unparented and, unreferenced, finalized.
    w.unparent()?;
    assert_eq!(w.phase(), Phase::Finalized);
    assert_eq!(controller.phase(), Phase::Finalized);
    assert!(!controller.is_realized());
    assert_eq!(fin.load(Ordering::SeqCst), 2);
    // The region is intact: live, its storage (shared with the dead containers) kept.
    assert_eq!(outside.phase(), Phase::Live);
    assert!(!outside.storage_released());
    assert!(!w.storage_released());
    assert_eq!(outside.storage_refcount(), 1);
    assert_eq!(outside.get("size")?, Value::UInt(65536));
    assert_eq!(outside.get("name")?, Value::str("xhci-bar"));
    outside.set("name", Value::str("still-here"))?;
    assert_eq!(outside.get("name")?, Value::str("still-here"));
    assert!(outside.parent().is_none(), "its container dropped it");
    assert_eq!(outside.canonical_path(), None);
    // Anything that needs the container fails cleanly.
    let e = err_of(outside.container());
    match &e {
        Error::ObjectFinalized { object, state, .. } => {
            assert_eq!(*state, "finalized");
            assert!(object.contains("emb-xhci-controller"), "{object}");
        }
        other => panic!("{other:?}"),
    }
    // The controller's own state, though finalized, is not freed either: the
    // handle refuses access rather than reading freed state.
    assert_eq!(err_of(controller.get("numports")).kind(), ErrorKind::ObjectFinalized);
    // More references can still be taken on the live region.
    let again = outside.try_ref()?;
    drop(again);

    // The last outside reference goes: the region is finalized and the storage released.
    drop(outside);
    assert_eq!(region.phase(), Phase::Finalized);
    assert_eq!(fin.load(Ordering::SeqCst), 3);
    assert!(region.storage_released());
    assert!(w.storage_released());
    assert_eq!(region.storage_refcount(), 0);
    assert_eq!(err_of(region.try_ref()).kind(), ErrorKind::ObjectFinalized);
    assert_eq!(err_of(region.get("size")).kind(), ErrorKind::ObjectFinalized);
    place.unparent()?;
    Ok(())
}

#[test]
fn unparenting_a_referenced_embedded_child_keeps_both_alive() -> TestResult {
    TypeInfo::new("emb-unparent-child").register()?;
    let parent = Object::new(TYPE_CONTAINER)?;
    let child = parent.embed_child("c", "emb-unparent-child")?;
    let r = child.try_ref()?;
    child.unparent()?;
    assert!(parent.child("c").is_none());
    assert_eq!(r.refcount(), 1);
    // Still embedded in (and reaching) its live container.
    assert_eq!(r.container()?, Some(parent.handle()));
    assert_eq!(parent.storage_refcount(), 2);
    drop(r);
    assert_eq!(child.phase(), Phase::Finalized);
    assert_eq!(parent.storage_refcount(), 1);
    assert!(!parent.storage_released());
    Ok(())
}

#[test]
fn storage_guards_pin_the_storage() -> TestResult {
    TypeInfo::new("emb-pin-child").register()?;
    let parent = Object::new(TYPE_CONTAINER)?;
    let child = parent.embed_child("c", "emb-pin-child")?;
    let guard = child.pin_storage()?;
    assert_eq!(guard.storage_id(), parent.storage_id());
    assert_eq!(parent.storage_refcount(), 3);
    let h = parent.handle();
    drop(parent);
    assert_eq!(h.phase(), Phase::Finalized);
    assert_eq!(child.phase(), Phase::Finalized);
    assert!(!h.storage_released(), "the guard pins the storage");
    assert_eq!(h.storage_refcount(), 1);
    // Pinning is refused once the object is finalized, even if its storage is kept.
    assert_eq!(err_of(child.pin_storage()).kind(), ErrorKind::ObjectFinalized);
    drop(guard);
    assert!(h.storage_released());

    // Several guards: released with the last one.
    let o = Object::new(TYPE_CONTAINER)?;
    let g1 = o.pin_storage()?;
    let g2 = o.pin_storage()?;
    let h = o.handle();
    drop(o);
    drop(g1);
    assert!(!h.storage_released());
    drop(g2);
    assert!(h.storage_released());
    Ok(())
}

#[test]
fn nested_embedding_with_outside_refs_at_every_level() -> TestResult {
    TypeInfo::new("emb-nest").register()?;
    let top = Object::new("emb-nest")?;
    let mid = top.embed_child("mid", "emb-nest")?;
    let leaf = mid.embed_child("leaf", "emb-nest")?;
    assert_eq!(leaf.container()?, Some(mid.clone()));
    assert_eq!(mid.container()?, Some(top.handle()));
    let mid_ref = mid.try_ref()?;
    let leaf_ref = leaf.try_ref()?;
    let t = top.handle();
    drop(top);
    // mid is referenced: live; it still owns leaf; top's finalization broke mid's tie.
    assert_eq!(t.phase(), Phase::Finalized);
    assert_eq!(mid.phase(), Phase::Live);
    assert_eq!(leaf.parent(), Some(mid.clone()));
    assert_eq!(err_of(mid.container()).kind(), ErrorKind::ObjectFinalized);
    assert_eq!(leaf.container()?, Some(mid.clone()));
    assert_eq!(t.storage_refcount(), 2);
    drop(mid_ref);
    assert_eq!(mid.phase(), Phase::Finalized);
    assert_eq!(leaf.phase(), Phase::Live);
    assert_eq!(err_of(leaf.container()).kind(), ErrorKind::ObjectFinalized);
    assert!(!t.storage_released());
    drop(leaf_ref);
    assert!(t.storage_released());
    Ok(())
}
