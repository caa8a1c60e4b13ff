//! The process-wide counters of `stats()`.
//!
//! This file holds a single test on purpose: the counters are global, and
//! cargo runs the tests of one file in parallel threads of one process.

use vmkit_qom::{Object, Stats, TYPE_CONTAINER, TYPE_DEVICE, TypeInfo, stats};

mod common;
use common::*;

fn delta(before: &Stats) -> (i64, i64, u64, u64, u64, u64) {
    let now = stats();
    let signed = |a: u64, b: u64| i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX);
    (
        signed(now.live_objects, before.live_objects),
        signed(now.live_storages, before.live_storages),
        now.objects_created - before.objects_created,
        now.objects_finalized - before.objects_finalized,
        now.storages_released - before.storages_released,
        now.resurrections_refused - before.resurrections_refused,
    )
}

#[test]
fn counters_track_objects_and_storages() -> TestResult {
    // Build the type registry and the tree root first: they create objects of their own.
    let _ = vmkit_qom::root();
    TypeInfo::new("stats-region").register()?;
    TypeInfo::new("stats-controller")
        .parent(TYPE_DEVICE)
        .instance_init(|o| o.embed_child("mem", "stats-region").map(drop))
        .register()?;
    TypeInfo::new("stats-wrapper")
        .parent(TYPE_DEVICE)
        .instance_init(|o| o.embed_child("xhci", "stats-controller").map(drop))
        .register()?;
    let base = stats();

    // A plain object: one object, one storage.
    let plain = Object::new(TYPE_CONTAINER)?;
    assert_eq!(delta(&base), (1, 1, 1, 0, 0, 0));
    let h = plain.handle();
    drop(plain);
    assert_eq!(delta(&base), (0, 0, 1, 1, 1, 0));
    assert!(h.try_ref().is_err());
    assert_eq!(delta(&base), (0, 0, 1, 1, 1, 1));

    // Three objects in one storage.
    let base = stats();
    let wrapper = Object::new("stats-wrapper")?;
    assert_eq!(delta(&base), (3, 1, 3, 0, 0, 0));
    let region = wrapper.child("xhci").and_then(|x| x.child("mem")).ok_or("no region")?;
    let outside = region.try_ref()?;
    drop(wrapper);
    // Wrapper and controller are finalized; the storage stays for the region.
    assert_eq!(delta(&base), (1, 1, 3, 2, 0, 0));
    drop(outside);
    assert_eq!(delta(&base), (0, 0, 3, 3, 1, 0));

    // A guard alone keeps a storage.
    let base = stats();
    let o = Object::new(TYPE_CONTAINER)?;
    let g = o.pin_storage()?;
    drop(o);
    assert_eq!(delta(&base), (0, 1, 1, 1, 0, 0));
    drop(g);
    assert_eq!(delta(&base), (0, 0, 1, 1, 1, 0));

    // type_properties leaves nothing alive.
    let base = stats();
    vmkit_qom::type_properties("stats-wrapper")?;
    assert_eq!(delta(&base), (0, 0, 3, 3, 1, 0));
    Ok(())
}
