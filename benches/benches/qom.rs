//! Criterion benchmarks of the object model's hot paths: taking and dropping
//! references (alone and contended), a device's whole life, and property access.
//!
//! Run with `cargo bench -p vmkit-benches`.

use std::hint::black_box;
use std::sync::{Barrier, Once};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use vmkit_qom::{Object, ObjectRef, PropertyDef, PropertyKind, TYPE_DEVICE, TypeInfo, Value};

/// A leaf device with four stored properties and no hooks of its own.
const LEAF: &str = "bench-leaf-device";

fn ok<T>(r: vmkit_qom::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark setup failed: {e}"))
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        ok(TypeInfo::new(LEAF)
            .parent(TYPE_DEVICE)
            .class_property(PropertyDef::new("irq", PropertyKind::uint(32)).default(5u64))
            .class_property(PropertyDef::new("iobase", PropertyKind::uint(64)).default(0x3f8u64))
            .class_property(PropertyDef::new("enabled", PropertyKind::Bool).default(true))
            .class_property(PropertyDef::new("label", PropertyKind::Str).default("com1"))
            .register());
    });
}

fn leaf() -> ObjectRef {
    register();
    ok(Object::new(LEAF))
}

fn ref_unref(c: &mut Criterion) {
    let obj = leaf();
    let mut g = c.benchmark_group("ref_unref");
    g.bench_function("single_thread", |b| {
        b.iter(|| drop(black_box(ok(black_box(&*obj).try_ref()))));
    });
    g.bench_function("clone_drop", |b| {
        b.iter(|| drop(black_box(black_box(&obj).clone())));
    });
    // Each iteration is one try_ref + drop pair on each of two threads, on the
    // same object at the same time; the time reported is wall-clock per pair.
    g.bench_function("contended_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            let h: &Object = &obj;
                            start.wait();
                            let t0 = Instant::now();
                            for _ in 0..iters {
                                drop(black_box(ok(black_box(h).try_ref())));
                            }
                            (t0, Instant::now())
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_else(|_| panic!("benchmark thread panicked")))
                    .collect()
            });
            let first = spans.iter().map(|s| s.0).min();
            let last = spans.iter().map(|s| s.1).max();
            match (first, last) {
                (Some(a), Some(b)) => b.duration_since(a),
                _ => Duration::ZERO,
            }
        });
    });
    g.finish();
}

fn device_lifecycle(c: &mut Criterion) {
    register();
    let mut g = c.benchmark_group("device_lifecycle");
    // Create, realize, unrealize, and drop the only reference (finalize).
    g.bench_function("leaf_4_props", |b| {
        b.iter(|| {
            let dev = ok(Object::new(black_box(LEAF)));
            ok(dev.realize());
            ok(dev.unrealize());
            drop(dev);
        });
    });
    g.finish();
}

fn property(c: &mut Criterion) {
    let obj = leaf();
    let mut g = c.benchmark_group("property");
    g.bench_function("get_uint", |b| {
        b.iter(|| black_box(ok(obj.get(black_box("irq")))));
    });
    let mut n = 0u64;
    g.bench_function("set_uint", |b| {
        b.iter(|| {
            n = (n + 1) & 0xff;
            ok(obj.set(black_box("irq"), Value::UInt(n)));
        });
    });
    g.finish();
}

criterion_group!(benches, ref_unref, device_lifecycle, property);
criterion_main!(benches);
