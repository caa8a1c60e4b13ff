//! Model-based tests of dirty tracking: random operation sequences on a
//! `DirtyBitmap` and on a `DirtyLog` with several clients, checked after every
//! step against `BTreeSet` models. Out-of-range operations must fail and
//! change nothing.
//!
//! The number of cases defaults to 256; set `PROPTEST_CASES` to change it.

use std::collections::BTreeSet;

use proptest::prelude::*;
use vmkit_memory::{DirtyBitmap, DirtyClient, DirtyPages, Error, RamBlock};

#[derive(Debug, Clone)]
enum BitOp {
    Mark(u64),
    MarkRange(u64, u64),
    Take,
    SetAll,
    Clear,
    Probe(u64),
}

fn bit_op(pages: u64) -> impl Strategy<Value = BitOp> {
    // Pages a little past the end, so that refusals are exercised too.
    let page = 0..pages + 70;
    prop_oneof![
        4 => page.clone().prop_map(BitOp::Mark),
        6 => (page.clone(), prop_oneof![0..4u64, 0..200u64, Just(u64::MAX)]).prop_map(|(f, n)| BitOp::MarkRange(f, n)),
        3 => Just(BitOp::Take),
        1 => Just(BitOp::SetAll),
        1 => Just(BitOp::Clear),
        2 => page.prop_map(BitOp::Probe),
    ]
}

/// The maximal runs of a sorted set.
fn runs(set: &BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in set {
        match out.last_mut() {
            Some((first, n)) if *first + *n == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

fn check_snapshot(snap: &DirtyPages, model: &BTreeSet<u64>) -> Result<(), TestCaseError> {
    prop_assert_eq!(snap.count(), model.len() as u64);
    prop_assert_eq!(snap.iter().collect::<BTreeSet<_>>(), model.clone());
    prop_assert!(snap.iter().zip(snap.iter().skip(1)).all(|(a, b)| a < b), "iter ascends");
    prop_assert_eq!(snap.ranges().collect::<Vec<_>>(), runs(model));
    prop_assert_eq!(snap.is_empty(), model.is_empty());
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

#[derive(Debug, Clone)]
enum LogOp {
    Start(DirtyClient),
    Stop(DirtyClient),
    Sync(DirtyClient),
    Write(u64, u64),
}

fn client() -> impl Strategy<Value = DirtyClient> {
    prop::sample::select(DirtyClient::ALL.to_vec())
}

fn log_op(size: u64) -> impl Strategy<Value = LogOp> {
    prop_oneof![
        2 => client().prop_map(LogOp::Start),
        1 => client().prop_map(LogOp::Stop),
        2 => client().prop_map(LogOp::Sync),
        6 => (0..size + 300, prop_oneof![0..300u64, 0..5000u64]).prop_map(|(o, n)| LogOp::Write(o, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn bitmap_matches_a_set(pages in 1u64..300, ops in prop::collection::vec(bit_op(300), 1..60)) {
        let bitmap = DirtyBitmap::new(pages).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = BTreeSet::new();
        let mut merged = DirtyPages::empty(pages).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut merged_model = BTreeSet::new();
        for op in ops {
            match op {
                BitOp::Mark(p) => {
                    let r = bitmap.mark(p);
                    if p < pages {
                        prop_assert!(r.is_ok());
                        model.insert(p);
                    } else {
                        prop_assert!(matches!(r, Err(Error::PageOutOfRange { .. })), "{r:?}");
                    }
                }
                BitOp::MarkRange(first, n) => {
                    let r = bitmap.mark_range(first, n);
                    if first.checked_add(n).is_some_and(|end| end <= pages) {
                        prop_assert!(r.is_ok());
                        model.extend(first..first + n);
                    } else {
                        prop_assert!(matches!(r, Err(Error::PageOutOfRange { .. })), "{r:?}");
                    }
                }
                BitOp::Take => {
                    let snap = bitmap.take_and_clear();
                    check_snapshot(&snap, &model)?;
                    let new = merged.merge(&snap).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let before = merged_model.len();
                    merged_model.extend(model.iter().copied());
                    prop_assert_eq!(new, (merged_model.len() - before) as u64);
                    check_snapshot(&merged, &merged_model)?;
                    model.clear();
                }
                BitOp::SetAll => {
                    bitmap.set_all();
                    model.extend(0..pages);
                }
                BitOp::Clear => {
                    bitmap.clear();
                    model.clear();
                }
                BitOp::Probe(p) => {
                    let r = bitmap.is_dirty(p);
                    if p < pages {
                        prop_assert_eq!(r.ok(), Some(model.contains(&p)));
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
            }
            prop_assert_eq!(bitmap.count(), model.len() as u64);
            check_snapshot(&bitmap.snapshot(), &model)?;
        }
    }

    #[test]
    fn log_clients_match_sets(pages in 1u64..40, ops in prop::collection::vec(log_op(40 * 512), 1..60)) {
        const PAGE: u64 = 512;
        let size = pages * PAGE;
        let ram = RamBlock::with_options(
            "pc.ram",
            size,
            vmkit_memory::RamBacking::Anonymous,
            vmkit_memory::RamOptions { page_size: PAGE, ..Default::default() },
        ).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let log = ram.dirty_log();
        let mut models: [Option<BTreeSet<u64>>; 4] = Default::default();
        for op in ops {
            match op {
                LogOp::Start(c) => {
                    let r = log.log_start(c);
                    let slot = &mut models[c as usize];
                    if slot.is_some() {
                        prop_assert!(matches!(r, Err(Error::DirtyLogBusy { .. })), "{r:?}");
                    } else {
                        prop_assert!(r.is_ok());
                        *slot = Some(BTreeSet::new());
                    }
                }
                LogOp::Stop(c) => {
                    prop_assert_eq!(log.log_stop(c), models[c as usize].take().is_some());
                }
                LogOp::Sync(c) => {
                    let r = log.sync(c);
                    match &mut models[c as usize] {
                        Some(model) => {
                            let snap = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                            check_snapshot(&snap, model)?;
                            model.clear();
                        }
                        None => prop_assert!(matches!(r, Err(Error::DirtyLogInactive { .. })), "{r:?}"),
                    }
                }
                LogOp::Write(offset, len) => {
                    let r = ram.fill(offset, len, 0xee);
                    if offset.checked_add(len).is_some_and(|end| end <= size) {
                        prop_assert!(r.is_ok());
                        if len > 0 {
                            for model in models.iter_mut().flatten() {
                                model.extend(offset / PAGE..=(offset + len - 1) / PAGE);
                            }
                        }
                    } else {
                        prop_assert!(matches!(r, Err(Error::OutOfBounds { .. })), "{r:?}");
                    }
                }
            }
            for c in DirtyClient::ALL {
                prop_assert_eq!(log.is_logging(c), models[c as usize].is_some());
                prop_assert_eq!(log.count(c), models[c as usize].as_ref().map_or(0, |m| m.len() as u64));
            }
        }
    }
}
