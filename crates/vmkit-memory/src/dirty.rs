//! Dirty page tracking: atomic bitmaps, their snapshots, and the per-block
//! log with one bitmap per client (QEMU's `DIRTY_MEMORY_*`).
//!
//! # Ordering
//!
//! A writer stores the data first and marks the page afterwards with a
//! release `fetch_or`; a sync takes each bitmap word with an acquire
//! `swap(0)`. A bit set before the swap of its word is in that snapshot, and
//! whoever reads the page after the sync sees the data that preceded the
//! mark; a bit set after the swap stays for the next sync. So no write is ever
//! lost: a page written after sync N (its mark lands after sync N's swap of
//! that word) is reported by sync N + 1 or a later one.
//!
//! # Starting and stopping clients while writers run
//!
//! [`DirtyLog`] keeps, per client, a slot that is filled once with a bitmap
//! (on the client's first `log_start`) and never emptied, plus one `AtomicU8`
//! mask of the clients that are logging. A writer loads the mask (relaxed; a
//! single load when nobody logs) and marks the bitmap of each client whose bit
//! is set. Writers never take a lock. `log_start`, `log_stop` and `sync`
//! serialise on a per-client mutex that writers never touch, so a sync never
//! blocks a writer and a start of one client never blocks a sync of another.
//!
//! `log_start` clears the client's bitmap and then sets its mask bit; a writer
//! that raced with the start may or may not have its page reported (it was
//! concurrent with the start, so either is correct), and a writer still
//! holding a mask loaded before an earlier `log_stop` can leave a stale bit:
//! a log may report a page written just before it started, never miss one
//! written after. Because slots are never freed, a stale writer always marks
//! valid memory.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

const BITS: u64 = 64;

/// One bit per page, set by writers concurrently, taken by syncs.
pub struct DirtyBitmap {
    words: Box<[AtomicU64]>,
    pages: u64,
}

impl std::fmt::Debug for DirtyBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyBitmap")
            .field("pages", &self.pages)
            .field("dirty", &self.count())
            .finish()
    }
}

fn words_for(pages: u64) -> u64 {
    pages.div_ceil(BITS)
}

/// Mask of the bits `[lo, hi)` of a word, `lo < hi <= 64`.
#[inline]
fn bit_mask(lo: u64, hi: u64) -> u64 {
    let upper = if hi == BITS { u64::MAX } else { (1u64 << hi) - 1 };
    upper & !((1u64 << lo) - 1)
}

impl DirtyBitmap {
    /// A bitmap of `pages` clean pages. Fails only if the bitmap cannot be
    /// allocated (or its size does not fit the address space).
    pub fn new(pages: u64) -> Result<DirtyBitmap> {
        let n = usize::try_from(words_for(pages)).map_err(|_| alloc_error(pages))?;
        let mut v: Vec<AtomicU64> = Vec::new();
        v.try_reserve_exact(n).map_err(|_| alloc_error(pages))?;
        v.resize_with(n, || AtomicU64::new(0));
        Ok(DirtyBitmap {
            words: v.into_boxed_slice(),
            pages,
        })
    }

    /// Pages covered.
    #[inline]
    pub fn pages(&self) -> u64 {
        self.pages
    }

    fn range_error(&self, first: u64, count: u64) -> Error {
        Error::PageOutOfRange {
            name: "dirty bitmap".into(),
            first,
            count,
            pages: self.pages,
        }
    }

    #[inline]
    fn word(&self, index: u64) -> &AtomicU64 {
        // Every caller has checked its pages against `self.pages`, so
        // `index < words_for(pages)`, the length of `words`.
        &self.words[index as usize]
    }

    /// Marks one page dirty.
    #[inline]
    pub fn mark(&self, page: u64) -> Result<()> {
        if page >= self.pages {
            return Err(self.range_error(page, 1));
        }
        self.word(page / BITS).fetch_or(1 << (page % BITS), Ordering::Release);
        Ok(())
    }

    /// Marks `count` pages from `first` dirty: a `fetch_or` for each partial
    /// word at the ends and one store of all ones per whole word in between
    /// (storing all ones cannot lose a bit a concurrent writer sets, and a
    /// concurrent take gets either none or all of them).
    pub fn mark_range(&self, first: u64, count: u64) -> Result<()> {
        match first.checked_add(count) {
            Some(end) if end <= self.pages => {
                self.mark_range_unchecked(first, end);
                Ok(())
            }
            _ => Err(self.range_error(first, count)),
        }
    }

    /// `[first, end)` with `end <= pages`.
    #[inline]
    fn mark_range_unchecked(&self, first: u64, end: u64) {
        if first >= end {
            return;
        }
        let (fw, lw) = (first / BITS, (end - 1) / BITS);
        if fw == lw {
            self.word(fw)
                .fetch_or(bit_mask(first % BITS, (end - 1) % BITS + 1), Ordering::Release);
            return;
        }
        self.word(fw).fetch_or(bit_mask(first % BITS, BITS), Ordering::Release);
        for w in fw + 1..lw {
            self.word(w).store(u64::MAX, Ordering::Release);
        }
        self.word(lw)
            .fetch_or(bit_mask(0, (end - 1) % BITS + 1), Ordering::Release);
    }

    /// Whether `page` is dirty.
    pub fn is_dirty(&self, page: u64) -> Result<bool> {
        if page >= self.pages {
            return Err(self.range_error(page, 1));
        }
        Ok(self.word(page / BITS).load(Ordering::Acquire) & (1 << (page % BITS)) != 0)
    }

    /// Dirty pages now (a racy count while writers run).
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Takes the dirty bits and clears them, word by word with an atomic
    /// swap: a bit a concurrent writer sets is either in this snapshot or
    /// stays for the next one. Words that read as zero are skipped without a
    /// write (a bit set after that load is simply a later write).
    pub fn take_and_clear(&self) -> DirtyPages {
        let words = self
            .words
            .iter()
            .map(|w| {
                if w.load(Ordering::Relaxed) == 0 {
                    0
                } else {
                    w.swap(0, Ordering::AcqRel)
                }
            })
            .collect();
        DirtyPages {
            words,
            pages: self.pages,
        }
    }

    /// A copy of the bits, leaving them set.
    pub fn snapshot(&self) -> DirtyPages {
        DirtyPages {
            words: self.words.iter().map(|w| w.load(Ordering::Acquire)).collect(),
            pages: self.pages,
        }
    }

    /// Marks every page dirty (migration's first pass sends every page).
    pub fn set_all(&self) {
        self.mark_range_unchecked(0, self.pages);
    }

    /// Clears every bit, dropping them.
    pub fn clear(&self) {
        for w in self.words.iter() {
            w.store(0, Ordering::Release);
        }
    }
}

fn alloc_error(pages: u64) -> Error {
    Error::Io {
        context: format!("allocating a dirty bitmap of {pages:#x} pages"),
        source: std::io::ErrorKind::OutOfMemory.into(),
    }
}

/// A snapshot of dirty pages, as taken by [`DirtyBitmap::take_and_clear`] or
/// [`DirtyLog::sync`].
#[derive(Clone, PartialEq, Eq)]
pub struct DirtyPages {
    words: Vec<u64>,
    pages: u64,
}

impl std::fmt::Debug for DirtyPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyPages")
            .field("pages", &self.pages)
            .field("ranges", &self.ranges().take(16).collect::<Vec<_>>())
            .field("count", &self.count())
            .finish()
    }
}

impl DirtyPages {
    /// An empty snapshot over `pages` pages.
    pub fn empty(pages: u64) -> Result<DirtyPages> {
        let n = usize::try_from(words_for(pages)).map_err(|_| alloc_error(pages))?;
        let mut words = Vec::new();
        words.try_reserve_exact(n).map_err(|_| alloc_error(pages))?;
        words.resize(n, 0);
        Ok(DirtyPages { words, pages })
    }

    /// Pages covered (dirty or not).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Dirty pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is dirty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Whether `page` is dirty (false past the end).
    pub fn is_dirty(&self, page: u64) -> bool {
        self.words
            .get((page / BITS) as usize)
            .is_some_and(|w| w & (1 << (page % BITS)) != 0)
    }

    /// The bitmap words: bit `i % 64` of word `i / 64` is page `i`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The dirty page indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let base = i as u64 * BITS;
            std::iter::successors((w != 0).then_some(w), |&rest| {
                let next = rest & (rest - 1);
                (next != 0).then_some(next)
            })
            .map(move |rest| base + u64::from(rest.trailing_zeros()))
        })
    }

    /// Runs of dirty pages as `(first_page, n_pages)`, ascending and maximal.
    pub fn ranges(&self) -> Ranges<'_> {
        Ranges {
            words: &self.words,
            pos: 0,
            end: self.pages,
        }
    }

    /// Adds the pages of `other` (migration ORs each sync into its bitmap).
    /// Returns how many pages were newly set.
    pub fn merge(&mut self, other: &DirtyPages) -> Result<u64> {
        if other.pages != self.pages {
            return Err(Error::PageOutOfRange {
                name: "dirty page snapshot".into(),
                first: 0,
                count: other.pages,
                pages: self.pages,
            });
        }
        let mut new = 0;
        for (a, &b) in self.words.iter_mut().zip(&other.words) {
            new += u64::from((b & !*a).count_ones());
            *a |= b;
        }
        Ok(new)
    }
}

/// The iterator of [`DirtyPages::ranges`].
#[derive(Debug, Clone)]
pub struct Ranges<'a> {
    words: &'a [u64],
    pos: u64,
    end: u64,
}

impl Ranges<'_> {
    /// The first page at or after `from` whose bit equals `set`, or `end`.
    fn seek(&self, from: u64, set: bool) -> u64 {
        let mut i = from / BITS;
        let mut w = self.words.get(i as usize).copied().unwrap_or(0);
        if !set {
            w = !w;
        }
        w &= !((1u64 << (from % BITS)) - 1);
        loop {
            if w != 0 {
                return (i * BITS + u64::from(w.trailing_zeros())).min(self.end);
            }
            i += 1;
            if i * BITS >= self.end {
                return self.end;
            }
            w = self.words.get(i as usize).copied().unwrap_or(0);
            if !set {
                w = !w;
            }
        }
    }
}

impl Iterator for Ranges<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.pos >= self.end {
            return None;
        }
        let start = self.seek(self.pos, true);
        if start >= self.end {
            self.pos = self.end;
            return None;
        }
        let stop = self.seek(start, false);
        self.pos = stop;
        Some((start, stop - start))
    }
}

/// A dirty-log client: each has its own bitmap and is started, stopped and
/// synced independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DirtyClient {
    /// Live migration (QEMU's `DIRTY_MEMORY_MIGRATION`).
    Migration = 0,
    /// Display refresh (QEMU's `DIRTY_MEMORY_VGA`).
    Display = 1,
    /// A client users start themselves.
    User = 2,
    /// Dirty-rate measurement ([`crate::dirty_rate`]); kept apart so a
    /// measurement never disturbs migration or a user log.
    DirtyRate = 3,
}

impl DirtyClient {
    /// Every client.
    pub const ALL: [DirtyClient; 4] = [
        DirtyClient::Migration,
        DirtyClient::Display,
        DirtyClient::User,
        DirtyClient::DirtyRate,
    ];

    /// The client's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            DirtyClient::Migration => "migration",
            DirtyClient::Display => "display",
            DirtyClient::User => "user",
            DirtyClient::DirtyRate => "dirty-rate",
        }
    }

    /// The client named `name` (as [`as_str`](Self::as_str) spells it).
    pub fn from_name(name: &str) -> Option<DirtyClient> {
        DirtyClient::ALL.into_iter().find(|c| c.as_str() == name)
    }

    #[inline]
    const fn bit(self) -> u8 {
        1 << self as u8
    }

    #[inline]
    const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DirtyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const CLIENTS: usize = DirtyClient::ALL.len();

/// The dirty log of one RAM block: one bitmap per logging client.
pub struct DirtyLog {
    name: std::sync::Arc<str>,
    size: u64,
    pages: u64,
    page_shift: u32,
    active: AtomicU8,
    slots: [OnceLock<DirtyBitmap>; CLIENTS],
    control: [Mutex<()>; CLIENTS],
}

impl std::fmt::Debug for DirtyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let logging: Vec<_> = DirtyClient::ALL.into_iter().filter(|&c| self.is_logging(c)).collect();
        f.debug_struct("DirtyLog")
            .field("block", &self.name)
            .field("pages", &self.pages)
            .field("logging", &logging)
            .finish()
    }
}

impl DirtyLog {
    /// The log of a block named `name` of `size` bytes in pages of
    /// `page_size` bytes (a power of two; `size` a multiple of it).
    pub(crate) fn new(name: std::sync::Arc<str>, size: u64, page_size: u64) -> DirtyLog {
        DirtyLog {
            name,
            size,
            pages: size / page_size.max(1),
            page_shift: page_size.trailing_zeros(),
            active: AtomicU8::new(0),
            slots: Default::default(),
            control: Default::default(),
        }
    }

    /// Pages covered.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether `client` is logging.
    pub fn is_logging(&self, client: DirtyClient) -> bool {
        self.active.load(Ordering::Acquire) & client.bit() != 0
    }

    /// Whether any client is logging.
    pub fn any_logging(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }

    /// Starts logging for `client` with every page clean (allocating its
    /// bitmap on first use). Fails with [`Error::DirtyLogBusy`] if it is
    /// already logging: one user per client.
    pub fn log_start(&self, client: DirtyClient) -> Result<()> {
        let _guard = self.control[client.index()].lock();
        if self.is_logging(client) {
            return Err(Error::DirtyLogBusy {
                block: self.name.to_string(),
                client: client.as_str(),
            });
        }
        let slot = &self.slots[client.index()];
        match slot.get() {
            Some(bitmap) => bitmap.clear(),
            None => {
                // Under the control lock nobody else fills the slot.
                let _ = slot.set(DirtyBitmap::new(self.pages)?);
            }
        }
        self.active.fetch_or(client.bit(), Ordering::AcqRel);
        Ok(())
    }

    /// Stops logging for `client`; returns whether it was logging. Its
    /// bitmap stays allocated (cleared at the next start).
    pub fn log_stop(&self, client: DirtyClient) -> bool {
        let _guard = self.control[client.index()].lock();
        self.active.fetch_and(!client.bit(), Ordering::AcqRel) & client.bit() != 0
    }

    /// Takes and clears `client`'s dirty pages.
    pub fn sync(&self, client: DirtyClient) -> Result<DirtyPages> {
        let _guard = self.control[client.index()].lock();
        match self.slots[client.index()].get() {
            Some(bitmap) if self.is_logging(client) => Ok(bitmap.take_and_clear()),
            _ => Err(Error::DirtyLogInactive {
                block: self.name.to_string(),
                client: client.as_str(),
            }),
        }
    }

    /// Dirty pages of `client` now, without clearing them (0 when not logging).
    pub fn count(&self, client: DirtyClient) -> u64 {
        match self.slots[client.index()].get() {
            Some(bitmap) if self.is_logging(client) => bitmap.count(),
            _ => 0,
        }
    }

    /// Marks every page dirty for `client` (which must be logging).
    pub fn mark_all(&self, client: DirtyClient) -> Result<()> {
        match self.slots[client.index()].get() {
            Some(bitmap) if self.is_logging(client) => {
                bitmap.set_all();
                Ok(())
            }
            _ => Err(Error::DirtyLogInactive {
                block: self.name.to_string(),
                client: client.as_str(),
            }),
        }
    }

    /// Marks the pages touched by `[offset, offset + len)` (bytes) dirty for
    /// every logging client. When no client logs this is one relaxed load
    /// after the bounds check.
    #[inline]
    pub fn mark_range(&self, offset: u64, len: u64) -> Result<()> {
        let end = match offset.checked_add(len) {
            Some(end) if end <= self.size => end,
            _ => {
                return Err(Error::OutOfBounds {
                    name: self.name.to_string(),
                    offset,
                    len,
                    size: self.size,
                });
            }
        };
        let active = self.active.load(Ordering::Relaxed);
        if active == 0 || len == 0 {
            return Ok(());
        }
        let first = offset >> self.page_shift;
        let last = ((end - 1) >> self.page_shift) + 1;
        self.mark_pages(active, first, last);
        Ok(())
    }

    #[inline]
    fn mark_pages(&self, mut active: u8, first: u64, end: u64) {
        while active != 0 {
            let i = active.trailing_zeros() as usize;
            active &= active - 1;
            // A client whose slot is not visible yet started concurrently with
            // this write; skipping it is allowed (module documentation).
            if let Some(bitmap) = self.slots.get(i).and_then(OnceLock::get) {
                bitmap.mark_range_unchecked(first, end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(bit_mask(0, 64), u64::MAX);
        assert_eq!(bit_mask(0, 1), 1);
        assert_eq!(bit_mask(63, 64), 1 << 63);
        assert_eq!(bit_mask(4, 8), 0xf0);
    }

    #[test]
    fn bitmap_basics() {
        let b = DirtyBitmap::new(200).unwrap_or_else(|e| panic!("{e}"));
        assert!(b.mark(199).is_ok());
        assert!(matches!(b.mark(200), Err(Error::PageOutOfRange { first: 200, .. })));
        assert!(b.mark_range(60, 80).is_ok()); // 60..140: partial, whole, partial
        assert!(b.mark_range(199, 2).is_err());
        assert!(b.mark_range(u64::MAX, 2).is_err());
        assert!(b.mark_range(200, 0).is_ok());
        assert_eq!(b.count(), 81);
        assert_eq!(b.is_dirty(60).ok(), Some(true));
        assert_eq!(b.is_dirty(59).ok(), Some(false));
        let snap = b.take_and_clear();
        assert_eq!(b.count(), 0);
        assert_eq!(snap.count(), 81);
        assert_eq!(snap.ranges().collect::<Vec<_>>(), vec![(60, 80), (199, 1)]);
        assert_eq!(snap.iter().take(3).collect::<Vec<_>>(), vec![60, 61, 62]);
        assert_eq!(snap.iter().last(), Some(199));
        b.set_all();
        assert_eq!(b.count(), 200);
        let all = b.take_and_clear();
        assert_eq!(all.ranges().collect::<Vec<_>>(), vec![(0, 200)]);
        assert!(b.take_and_clear().is_empty());
    }

    #[test]
    fn log_clients_are_independent() {
        let log = DirtyLog::new("ram".into(), 64 * 4096, 4096);
        assert!(log.mark_range(0, 4096).is_ok()); // nobody logs
        assert!(matches!(
            log.sync(DirtyClient::User),
            Err(Error::DirtyLogInactive { client: "user", .. })
        ));
        assert!(log.log_start(DirtyClient::Migration).is_ok());
        assert!(matches!(
            log.log_start(DirtyClient::Migration),
            Err(Error::DirtyLogBusy { .. })
        ));
        assert!(log.mark_range(4095, 2).is_ok()); // pages 0 and 1
        assert!(log.log_start(DirtyClient::Display).is_ok());
        assert!(log.mark_range(10 * 4096, 1).is_ok());
        let m = log.sync(DirtyClient::Migration).map(|p| p.iter().collect::<Vec<_>>());
        let d = log.sync(DirtyClient::Display).map(|p| p.iter().collect::<Vec<_>>());
        assert_eq!(m.ok(), Some(vec![0, 1, 10]));
        assert_eq!(d.ok(), Some(vec![10]));
        assert!(log.log_stop(DirtyClient::Migration));
        assert!(!log.log_stop(DirtyClient::Migration));
        assert!(log.mark_range(20 * 4096, 1).is_ok());
        assert!(log.sync(DirtyClient::Migration).is_err());
        assert_eq!(log.sync(DirtyClient::Display).map(|p| p.count()).ok(), Some(1));
        assert!(log.mark_range(64 * 4096, 1).is_err());
        assert!(log.mark_range(64 * 4096, 0).is_ok());
        // A restart starts clean.
        assert!(log.log_start(DirtyClient::Migration).is_ok());
        assert_eq!(log.sync(DirtyClient::Migration).map(|p| p.count()).ok(), Some(0));
    }
}
