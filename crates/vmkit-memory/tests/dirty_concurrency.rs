//! Dirty tracking with writers, syncs and client starts/stops on different
//! threads at once.
//!
//! * Every write made after sync N completed is reported by sync N + 1 or a
//!   later one, and the union of all syncs is exactly the set of pages written.
//! * A migration-style copier that only copies the pages its syncs report ends
//!   with an exact copy of the source: a sync that reports a page makes the
//!   data written before the mark visible.
//! * Starting and stopping one client while writers run never disturbs
//!   another client's log.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use vmkit_memory::{DirtyClient, DirtyPages, RamBlock};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;

/// xorshift64*, enough to scatter test writes.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn writes_after_sync_n_appear_in_a_later_sync() -> TestResult {
    const PAGES: u64 = 4096;
    const WRITERS: u64 = 3;
    const WRITES: usize = 20_000;
    let ram = RamBlock::anonymous("pc.ram", PAGES * PAGE)?;
    ram.dirty_log().log_start(DirtyClient::Migration)?;
    let completed = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let snaps: Mutex<Vec<DirtyPages>> = Mutex::new(Vec::new());

    let writes: Vec<Vec<(u64, usize)>> = std::thread::scope(|s| {
        let syncer = s.spawn(|| -> vmkit_memory::Result<()> {
            while !done.load(Ordering::SeqCst) {
                let snap = ram.dirty_log().sync(DirtyClient::Migration)?;
                snaps.lock().push(snap);
                completed.fetch_add(1, Ordering::SeqCst);
                std::thread::yield_now();
            }
            Ok(())
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (ram, completed) = (&ram, &completed);
                s.spawn(move || -> vmkit_memory::Result<Vec<(u64, usize)>> {
                    let mut next = rng(t + 1);
                    let mut log = Vec::with_capacity(WRITES);
                    for i in 0..WRITES {
                        // Only a third of the pages are ever written, each by one thread.
                        let page = (next() % (PAGES / WRITERS / 3)) * WRITERS + t;
                        let before = completed.load(Ordering::SeqCst);
                        if i % 2 == 0 {
                            ram.write_page_pattern(page, i as u64)?;
                        } else {
                            ram.write(page * PAGE + (i as u64 % PAGE), &[i as u8 | 1])?;
                        }
                        log.push((page, before));
                    }
                    Ok(log)
                })
            })
            .collect();
        let logs: Vec<_> = writers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("writer panicked")))
            .collect();
        done.store(true, Ordering::SeqCst);
        let synced = syncer.join().unwrap_or_else(|_| panic!("syncer panicked"));
        assert!(synced.is_ok(), "{synced:?}");
        logs.into_iter()
            .collect::<vmkit_memory::Result<Vec<_>>>()
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let mut snaps = snaps.into_inner();
    snaps.push(ram.dirty_log().sync(DirtyClient::Migration)?); // the final sync
    assert!(snaps.len() >= 3, "only {} syncs ran", snaps.len());

    // The last sync index reporting each page.
    let mut last_seen = vec![None::<usize>; PAGES as usize];
    let mut union = BTreeSet::new();
    for (i, snap) in snaps.iter().enumerate() {
        for p in snap.iter() {
            last_seen[p as usize] = Some(i);
            union.insert(p);
        }
    }
    let mut written = BTreeSet::new();
    for (page, before) in writes.iter().flatten() {
        written.insert(*page);
        // Snapshot index `before` is sync number `before + 1`.
        let seen = last_seen[*page as usize];
        assert!(
            seen.is_some_and(|i| i >= *before),
            "page {page} written after sync {before}, last seen {seen:?}"
        );
    }
    assert_eq!(union, written, "syncs report exactly the pages written");
    assert!(ram.dirty_log().sync(DirtyClient::Migration)?.is_empty());
    Ok(())
}

#[test]
fn copying_reported_pages_converges_to_an_exact_copy() -> TestResult {
    const PAGES: u64 = 1024;
    let src = RamBlock::anonymous("src", PAGES * PAGE)?;
    let dst = RamBlock::anonymous("dst", PAGES * PAGE)?;
    src.dirty_log().log_start(DirtyClient::Migration)?;
    src.dirty_log().mark_all(DirtyClient::Migration)?; // the first pass sends everything
    let done = AtomicBool::new(false);
    let copy = |pages: &DirtyPages| -> vmkit_memory::Result<()> {
        for (first, n) in pages.ranges() {
            dst.host().copy_from(first * PAGE, src.host(), first * PAGE, n * PAGE)?;
        }
        Ok(())
    };
    let passes = std::thread::scope(|s| {
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let src = &src;
                s.spawn(move || -> vmkit_memory::Result<()> {
                    let mut next = rng(t + 7);
                    for i in 0..30_000u64 {
                        let page = (next() % (PAGES / 2)) * 2 + t;
                        src.write_page_pattern(page, i)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let copier = s.spawn(|| -> vmkit_memory::Result<u64> {
            let mut passes = 0;
            while !done.load(Ordering::SeqCst) {
                copy(&src.dirty_log().sync(DirtyClient::Migration)?)?;
                passes += 1;
            }
            Ok(passes)
        });
        for w in writers {
            let r = w.join().unwrap_or_else(|_| panic!("writer panicked"));
            assert!(r.is_ok(), "{r:?}");
        }
        done.store(true, Ordering::SeqCst);
        copier.join().unwrap_or_else(|_| panic!("copier panicked"))
    })?;
    // Guest stopped: the final pass.
    copy(&src.dirty_log().sync(DirtyClient::Migration)?)?;
    assert!(passes >= 1);
    assert_eq!(src.checksum_all()?, dst.checksum_all()?);
    Ok(())
}

#[test]
fn toggling_one_client_never_disturbs_another() -> TestResult {
    const PAGES: u64 = 2048;
    let ram = RamBlock::anonymous("pc.ram", PAGES * PAGE)?;
    ram.dirty_log().log_start(DirtyClient::Migration)?;
    let stop = AtomicBool::new(false);
    let (written, display_rounds) = std::thread::scope(|s| {
        let writer = s.spawn(|| -> vmkit_memory::Result<BTreeSet<u64>> {
            let mut next = rng(99);
            let mut written = BTreeSet::new();
            for _ in 0..50_000 {
                let page = next() % PAGES;
                ram.write(page * PAGE, &[1, 2, 3])?;
                written.insert(page);
            }
            Ok(written)
        });
        let toggler = s.spawn(|| -> vmkit_memory::Result<u64> {
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) {
                ram.dirty_log().log_start(DirtyClient::Display)?;
                ram.dirty_log().log_start(DirtyClient::User)?;
                // Pages written after this sync show up in a later one: write one ourselves.
                ram.dirty_log().sync(DirtyClient::Display)?;
                ram.write(5 * PAGE, &[9])?;
                let later = ram.dirty_log().sync(DirtyClient::Display)?;
                assert!(later.is_dirty(5), "a write after a sync must show in the next one");
                ram.dirty_log().log_stop(DirtyClient::User);
                ram.dirty_log().log_stop(DirtyClient::Display);
                rounds += 1;
            }
            Ok(rounds)
        });
        let written = writer.join().unwrap_or_else(|_| panic!("writer panicked"));
        stop.store(true, Ordering::SeqCst);
        let rounds = toggler.join().unwrap_or_else(|_| panic!("toggler panicked"));
        (written, rounds)
    });
    let mut written = written?;
    written.insert(5);
    assert!(display_rounds? > 0);
    let migration: BTreeSet<u64> = ram.dirty_log().sync(DirtyClient::Migration)?.iter().collect();
    assert_eq!(
        migration, written,
        "the migration log saw every write despite the display/user toggling"
    );
    assert!(!ram.dirty_log().is_logging(DirtyClient::Display));
    assert!(ram.dirty_log().is_logging(DirtyClient::Migration));
    Ok(())
}
