//! Model-based test of reference counting, embedded storage and finalization.
//!
//! Proptest generates one plan of operations per thread (2 to 4 threads), and
//! the plans run concurrently:
//!
//! * each thread owns a disjoint set of objects, checked after every step
//!   against an exact sequential reference model (phase, QOM refcount,
//!   parent, storage count, storage released, finalize count);
//! * all threads also share a "hot" pool of references and handles: objects
//!   created by one thread are referenced, dropped (possibly for the last
//!   time), unparented, pinned and re-referenced with `try_ref` by the others;
//! * a few long-lived objects are hammered with `try_ref` / `clone` / drop
//!   pairs from every thread.
//!
//! Properties checked: an object is never finalized (and its storage never
//! released) while a reference or pin exists; after everything is dropped,
//! every object is finalized exactly once and every storage released;
//! `try_ref` on a finalizing or finalized object is always refused, including
//! from inside the object's own finalize hook.
//!
//! The number of cases defaults to 64; set `PROPTEST_CASES` to change it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Once};

use parking_lot::Mutex;
use proptest::prelude::*;
use vmkit_qom::{ErrorKind, Object, ObjectRef, Phase, StorageGuard, TypeInfo};

const TYPE: &str = "model-obj";

/// How many times each object (by id) was finalized.
static FINALIZED: LazyLock<Mutex<HashMap<u64, u32>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// `try_ref` calls that succeeded inside a finalize hook (must stay 0).
static RESURRECTED: AtomicUsize = AtomicUsize::new(0);

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registered = TypeInfo::new(TYPE)
            .instance_finalize(|o| {
                match o.try_ref() {
                    Ok(r) => {
                        RESURRECTED.fetch_add(1, Ordering::SeqCst);
                        // Keep the count from reaching zero twice.
                        std::mem::forget(r);
                    }
                    Err(e) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized),
                }
                *FINALIZED.lock().entry(o.id()).or_insert(0) += 1;
                Ok(())
            })
            .register();
        if let Err(e) = registered {
            panic!("registering {TYPE}: {e}");
        }
    });
}

fn finalize_count(o: &Object) -> u32 {
    FINALIZED.lock().get(&o.id()).copied().unwrap_or(0)
}

#[derive(Debug, Clone)]
enum Op {
    // Thread-local objects, checked against the exact model.
    Create,
    Embed { on: usize, keep_ref: bool },
    Ref(usize),
    Unref(usize),
    Unparent(usize),
    TryRef(usize),
    Pin(usize),
    Unpin(usize),
    // Objects shared by all threads.
    HotCreate { embed: bool },
    HotEmbed(usize),
    HotTake(usize),
    HotPut(usize),
    HotDrop(usize),
    HotTryRef(usize),
    HotUnparent(usize),
    HotPin(usize),
    HotUnpin(usize),
    Hammer { obj: usize, times: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    prop_oneof![
        3 => Just(Op::Create),
        3 => (i(), any::<bool>()).prop_map(|(on, keep_ref)| Op::Embed { on, keep_ref }),
        3 => i().prop_map(Op::Ref),
        4 => i().prop_map(Op::Unref),
        2 => i().prop_map(Op::Unparent),
        3 => i().prop_map(Op::TryRef),
        1 => i().prop_map(Op::Pin),
        1 => i().prop_map(Op::Unpin),
        2 => any::<bool>().prop_map(|embed| Op::HotCreate { embed }),
        1 => i().prop_map(Op::HotEmbed),
        3 => i().prop_map(Op::HotTake),
        1 => i().prop_map(Op::HotPut),
        3 => i().prop_map(Op::HotDrop),
        3 => i().prop_map(Op::HotTryRef),
        1 => i().prop_map(Op::HotUnparent),
        1 => i().prop_map(Op::HotPin),
        1 => i().prop_map(Op::HotUnpin),
        1 => (0usize..2, 1u8..32).prop_map(|(obj, times)| Op::Hammer { obj, times }),
    ]
}

fn plans() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..48), 2..=4)
}

// ----- the exact model of one thread's objects ---------------------------------

#[derive(Debug)]
struct MObj {
    storage: usize,
    refs: u32,
    parent: Option<usize>,
    children: Vec<usize>,
    finalized: bool,
}

#[derive(Debug)]
struct MStorage {
    count: u32,
    released: bool,
}

#[derive(Default)]
struct Model {
    objs: Vec<MObj>,
    storages: Vec<MStorage>,
}

impl Model {
    fn create(&mut self, storage: Option<usize>, parent: Option<usize>) -> usize {
        let storage = match storage {
            Some(s) => {
                self.storages[s].count += 1;
                s
            }
            None => {
                self.storages.push(MStorage {
                    count: 1,
                    released: false,
                });
                self.storages.len() - 1
            }
        };
        let idx = self.objs.len();
        self.objs.push(MObj {
            storage,
            refs: 1,
            parent,
            children: Vec::new(),
            finalized: false,
        });
        if let Some(p) = parent {
            self.objs[p].children.push(idx);
        }
        idx
    }

    fn unref(&mut self, idx: usize) {
        let o = &mut self.objs[idx];
        assert!(o.refs > 0 && !o.finalized, "model: unref of a dead object");
        o.refs -= 1;
        if o.refs == 0 {
            self.finalize(idx);
        }
    }

    fn finalize(&mut self, idx: usize) {
        self.objs[idx].finalized = true;
        for c in std::mem::take(&mut self.objs[idx].children) {
            self.objs[c].parent = None;
            self.unref(c);
        }
        self.release(self.objs[idx].storage);
    }

    fn release(&mut self, s: usize) {
        let st = &mut self.storages[s];
        st.count -= 1;
        if st.count == 0 {
            st.released = true;
        }
    }

    fn unparent(&mut self, idx: usize) {
        if let Some(p) = self.objs[idx].parent.take() {
            self.objs[p].children.retain(|&c| c != idx);
            self.unref(idx);
        }
    }
}

/// One thread's own objects: the real ones and their model.
#[derive(Default)]
struct Local {
    model: Model,
    handles: Vec<Object>,
    refs: Vec<(usize, ObjectRef)>,
    guards: Vec<(usize, StorageGuard)>,
}

impl Local {
    fn step(&mut self, op: &Op) {
        match *op {
            Op::Create => {
                let r = Object::new(TYPE).unwrap_or_else(|e| panic!("create: {e}"));
                let idx = self.model.create(None, None);
                self.handles.push(r.handle());
                self.refs.push((idx, r));
            }
            Op::Embed { on, keep_ref } => {
                if self.refs.is_empty() {
                    return;
                }
                let (container, r) = &self.refs[on % self.refs.len()];
                let container = *container;
                let child = r
                    .embed_child("c[*]", TYPE)
                    .unwrap_or_else(|e| panic!("embedding into a referenced object: {e}"));
                let storage = self.model.objs[container].storage;
                let idx = self.model.create(Some(storage), Some(container));
                self.handles.push(child.clone());
                if keep_ref {
                    let cr = child
                        .try_ref()
                        .unwrap_or_else(|e| panic!("try_ref on a fresh child: {e}"));
                    self.model.objs[idx].refs += 1;
                    self.refs.push((idx, cr));
                }
            }
            Op::Ref(k) => {
                if self.refs.is_empty() {
                    return;
                }
                let (idx, r) = &self.refs[k % self.refs.len()];
                let (idx, r) = (*idx, r.clone());
                self.model.objs[idx].refs += 1;
                self.refs.push((idx, r));
            }
            Op::Unref(k) => {
                if self.refs.is_empty() {
                    return;
                }
                let (idx, r) = self.refs.swap_remove(k % self.refs.len());
                drop(r);
                self.model.unref(idx);
            }
            Op::Unparent(h) => {
                if self.handles.is_empty() {
                    return;
                }
                let idx = h % self.handles.len();
                self.handles[idx].unparent().unwrap_or_else(|e| panic!("unparent: {e}"));
                self.model.unparent(idx);
            }
            Op::TryRef(h) => {
                if self.handles.is_empty() {
                    return;
                }
                let idx = h % self.handles.len();
                match (self.handles[idx].try_ref(), self.model.objs[idx].finalized) {
                    (Ok(r), false) => {
                        self.model.objs[idx].refs += 1;
                        self.refs.push((idx, r));
                    }
                    (Err(e), true) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized),
                    (Ok(_), true) => panic!("resurrected finalized object #{idx}"),
                    (Err(e), false) => panic!("try_ref refused on live object #{idx}: {e}"),
                }
            }
            Op::Pin(h) => {
                if self.handles.is_empty() {
                    return;
                }
                let idx = h % self.handles.len();
                match (self.handles[idx].pin_storage(), self.model.objs[idx].finalized) {
                    (Ok(g), false) => {
                        let s = self.model.objs[idx].storage;
                        self.model.storages[s].count += 1;
                        self.guards.push((s, g));
                    }
                    (Err(e), true) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized),
                    (Ok(_), true) => panic!("pinned the storage of finalized object #{idx}"),
                    (Err(e), false) => panic!("pin refused on live object #{idx}: {e}"),
                }
            }
            Op::Unpin(g) => {
                if self.guards.is_empty() {
                    return;
                }
                let (s, guard) = self.guards.swap_remove(g % self.guards.len());
                drop(guard);
                self.model.release(s);
            }
            _ => unreachable!("not a local op"),
        }
    }

    fn check(&self, when: &str) {
        for (idx, (h, m)) in self.handles.iter().zip(&self.model.objs).enumerate() {
            let st = &self.model.storages[m.storage];
            let ctx = || format!("{when}: object #{idx} {m:?}, storage {st:?}");
            let want_phase = if m.finalized { Phase::Finalized } else { Phase::Live };
            assert_eq!(h.phase(), want_phase, "{}", ctx());
            assert_eq!(h.refcount(), if m.finalized { 0 } else { m.refs }, "{}", ctx());
            assert_eq!(finalize_count(h), u32::from(m.finalized), "{}", ctx());
            assert_eq!(h.storage_released(), st.released, "{}", ctx());
            assert_eq!(h.storage_refcount(), st.count, "{}", ctx());
            assert_eq!(h.parent(), m.parent.map(|p| self.handles[p].clone()), "{}", ctx());
            if !m.finalized {
                assert!(!h.storage_released(), "{}: storage released under a live member", ctx());
            }
        }
        for (idx, r) in &self.refs {
            assert_eq!(r.phase(), Phase::Live, "{when}: referenced object #{idx} not live");
            assert!(
                !r.storage_released(),
                "{when}: referenced object #{idx} lost its storage"
            );
        }
        for (s, _) in &self.guards {
            assert!(!self.model.storages[*s].released, "{when}: pinned storage released");
        }
    }

    /// Drops every reference and guard; everything must then be gone.
    fn finish(mut self) {
        while let Some((idx, r)) = self.refs.pop() {
            drop(r);
            self.model.unref(idx);
        }
        while let Some((s, g)) = self.guards.pop() {
            drop(g);
            self.model.release(s);
        }
        self.check("after dropping everything");
        for (idx, h) in self.handles.iter().enumerate() {
            assert!(self.model.objs[idx].finalized, "model: #{idx} unreferenced yet live");
            assert_eq!(h.phase(), Phase::Finalized);
            assert!(h.storage_released());
            assert_eq!(finalize_count(h), 1);
        }
    }
}

// ----- the shared objects ------------------------------------------------------

struct Shared {
    /// References any thread may take (and so drop last).
    pool: Mutex<Vec<ObjectRef>>,
    /// Every shared object ever created, for `try_ref` / unparent / pin from anywhere.
    handles: Mutex<Vec<Object>>,
    /// Long-lived objects whose references main holds until every thread is done.
    hammered: Vec<ObjectRef>,
}

#[derive(Default)]
struct Hot {
    held: Vec<ObjectRef>,
    guards: Vec<(Object, StorageGuard)>,
}

fn pick<T: Clone>(v: &Mutex<Vec<T>>, i: usize) -> Option<T> {
    let v = v.lock();
    (!v.is_empty()).then(|| v[i % v.len()].clone())
}

impl Hot {
    fn step(&mut self, shared: &Shared, op: &Op) {
        match *op {
            Op::HotCreate { embed } => {
                let o = Object::new(TYPE).unwrap_or_else(|e| panic!("create: {e}"));
                if embed {
                    let c = o.embed_child("h[*]", TYPE).unwrap_or_else(|e| panic!("embed: {e}"));
                    shared.handles.lock().push(c);
                }
                shared.handles.lock().push(o.handle());
                shared.pool.lock().push(o);
            }
            Op::HotEmbed(i) => {
                if self.held.is_empty() {
                    return;
                }
                let r = &self.held[i % self.held.len()];
                let c = r
                    .embed_child("h[*]", TYPE)
                    .unwrap_or_else(|e| panic!("embedding into a referenced object: {e}"));
                assert_eq!(c.storage_id(), r.storage_id());
                if i % 2 == 0 {
                    let cr = c.try_ref().unwrap_or_else(|e| panic!("try_ref on a fresh child: {e}"));
                    self.held.push(cr);
                }
                shared.handles.lock().push(c);
            }
            Op::HotTake(i) => {
                let mut pool = shared.pool.lock();
                if !pool.is_empty() {
                    let len = pool.len();
                    self.held.push(pool.swap_remove(i % len));
                }
            }
            Op::HotPut(i) => {
                if !self.held.is_empty() {
                    let r = self.held.swap_remove(i % self.held.len());
                    shared.pool.lock().push(r);
                }
            }
            Op::HotDrop(i) => {
                if !self.held.is_empty() {
                    // Possibly the last reference: finalization runs on this thread.
                    drop(self.held.swap_remove(i % self.held.len()));
                }
            }
            Op::HotTryRef(i) => {
                let Some(h) = pick(&shared.handles, i) else { return };
                match h.try_ref() {
                    Ok(r) => {
                        assert_eq!(r.phase(), Phase::Live, "try_ref returned a dying object");
                        assert_eq!(finalize_count(&r), 0, "try_ref returned a finalized object");
                        self.held.push(r);
                    }
                    Err(e) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized),
                }
            }
            Op::HotUnparent(i) => {
                let Some(h) = pick(&shared.handles, i) else { return };
                h.unparent().unwrap_or_else(|e| panic!("unparent: {e}"));
            }
            Op::HotPin(i) => {
                let Some(h) = pick(&shared.handles, i) else { return };
                match h.pin_storage() {
                    Ok(g) => {
                        assert!(!h.storage_released(), "pinned a released storage");
                        self.guards.push((h, g));
                    }
                    Err(e) => assert_eq!(e.kind(), ErrorKind::ObjectFinalized, "{e}"),
                }
            }
            Op::HotUnpin(i) => {
                if !self.guards.is_empty() {
                    let len = self.guards.len();
                    drop(self.guards.swap_remove(i % len));
                }
            }
            Op::Hammer { obj, times } => {
                let base = &shared.hammered[obj % shared.hammered.len()];
                for _ in 0..times {
                    let a = base
                        .try_ref()
                        .unwrap_or_else(|e| panic!("try_ref on a held object: {e}"));
                    let b = a.clone();
                    assert_eq!(b.phase(), Phase::Live);
                    drop(a);
                    drop(b);
                }
            }
            _ => unreachable!("not a shared op"),
        }
    }

    fn check(&self) {
        for r in &self.held {
            assert_eq!(r.phase(), Phase::Live, "a referenced shared object is not live");
            assert!(!r.storage_released(), "a referenced shared object lost its storage");
            assert_eq!(finalize_count(r), 0, "a referenced shared object was finalized");
        }
        for (h, _) in &self.guards {
            assert!(!h.storage_released(), "a pinned storage was released");
        }
    }
}

fn is_local(op: &Op) -> bool {
    matches!(
        op,
        Op::Create
            | Op::Embed { .. }
            | Op::Ref(_)
            | Op::Unref(_)
            | Op::Unparent(_)
            | Op::TryRef(_)
            | Op::Pin(_)
            | Op::Unpin(_)
    )
}

fn run(plans: &[Vec<Op>]) {
    register();
    let shared = Shared {
        pool: Mutex::new(Vec::new()),
        handles: Mutex::new(Vec::new()),
        hammered: (0..2)
            .map(|_| Object::new(TYPE).unwrap_or_else(|e| panic!("create: {e}")))
            .collect(),
    };
    std::thread::scope(|s| {
        for plan in plans {
            let shared = &shared;
            s.spawn(move || {
                let mut local = Local::default();
                let mut hot = Hot::default();
                for (n, op) in plan.iter().enumerate() {
                    if is_local(op) {
                        local.step(op);
                        local.check(&format!("after step {n} ({op:?})"));
                    } else {
                        hot.step(shared, op);
                    }
                    hot.check();
                }
                local.finish();
                drop(hot);
            });
        }
    });

    // Every thread balanced its ref/unref pairs on the hammered objects.
    for h in &shared.hammered {
        assert_eq!(h.refcount(), 1, "contended ref/unref pairs left the count off");
    }
    let Shared {
        pool,
        handles,
        hammered,
    } = shared;
    let hammered_handles: Vec<Object> = hammered.iter().map(ObjectRef::handle).collect();
    drop(pool);
    drop(hammered);
    for h in handles.into_inner().iter().chain(&hammered_handles) {
        assert_eq!(h.phase(), Phase::Finalized, "{h:?} is unreferenced but not finalized");
        assert!(h.storage_released(), "{h:?}: storage not released");
        assert_eq!(h.storage_refcount(), 0);
        assert_eq!(finalize_count(h), 1, "{h:?} finalized {} times", finalize_count(h));
        assert!(h.try_ref().is_err());
    }
    assert_eq!(
        RESURRECTED.load(Ordering::SeqCst),
        0,
        "a finalize hook resurrected its object"
    );
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn refcounts_match_the_model(plans in plans()) {
        run(&plans);
    }
}

/// A fixed, larger run of the scenario most likely to race: every thread
/// takes, drops and re-takes references to the same freshly created objects.
#[test]
fn hot_pool_stress() {
    let mut plans = Vec::new();
    for t in 0..4usize {
        let mut plan = Vec::new();
        for i in 0..400usize {
            plan.push(match (i + t) % 9 {
                0 => Op::HotCreate { embed: i % 2 == 0 },
                1 | 5 => Op::HotTake(i * 7 + t),
                2 | 6 => Op::HotTryRef(i * 13 + t),
                3 => Op::HotDrop(i),
                4 => Op::HotPin(i * 3),
                7 => Op::HotUnparent(i * 11),
                _ => {
                    if i % 2 == 0 {
                        Op::HotUnpin(i)
                    } else {
                        Op::HotDrop(i + 1)
                    }
                }
            });
        }
        plans.push(plan);
    }
    run(&plans);
}
