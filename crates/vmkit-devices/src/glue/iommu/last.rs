//! One PCI function's last translation, kept beside its IOMMU region and
//! read without the model's lock (QEMU's callers keep an `IOMMUTLBEntry`
//! the same way): a DMA of the same page again, the common case of a
//! device streaming through a buffer, skips the lock and the IOTLB.
//!
//! Validity is an epoch: the glue bumps it after anything that may change
//! an answer of the model (every register write — invalidations, the
//! invalidation queue, GCMD, the root table —, reset, a state load, direct
//! access to the model). An entry is used only while the epoch it was
//! computed under is the current one. The entry itself is a sequence lock
//! over plain atomics: a reader that sees a write in progress, or a
//! sequence that moved, misses and asks the model.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, fence};

const READ: u8 = 1;
const WRITE: u8 = 2;

/// A translation as the fast path hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    /// The translated address of the page's first byte.
    pub translated: u64,
    /// The page mask (the translation covers `mask + 1` bytes).
    pub mask: u64,
    /// Whether reads are allowed.
    pub read: bool,
    /// Whether writes are allowed.
    pub write: bool,
}

/// The last translation of one function.
#[derive(Debug, Default)]
pub struct LastTranslation {
    /// Odd while an entry is being written.
    seq: AtomicU64,
    epoch: AtomicU64,
    page: AtomicU64,
    mask: AtomicU64,
    translated: AtomicU64,
    /// `READ | WRITE` bits; 0 for no entry.
    perm: AtomicU8,
}

impl LastTranslation {
    /// The remembered translation of `iova`, if it was computed under
    /// `epoch` and allows the access.
    #[inline]
    pub fn get(&self, iova: u64, is_write: bool, epoch: u64) -> Option<Remembered> {
        let before = self.seq.load(Ordering::Acquire);
        if before & 1 != 0 {
            return None;
        }
        let e = self.epoch.load(Ordering::Relaxed);
        let page = self.page.load(Ordering::Relaxed);
        let mask = self.mask.load(Ordering::Relaxed);
        let translated = self.translated.load(Ordering::Relaxed);
        let perm = self.perm.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != before {
            return None;
        }
        let needed = if is_write { WRITE } else { READ };
        (e == epoch && iova & !mask == page && perm & needed != 0).then_some(Remembered {
            translated,
            mask,
            read: perm & READ != 0,
            write: perm & WRITE != 0,
        })
    }

    /// Remembers `t` for the page of `iova`, computed under `epoch` (read
    /// before the model was asked). Skipped while another thread writes.
    pub fn set(&self, iova: u64, t: Remembered, epoch: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 != 0
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.page.store(iova & !t.mask, Ordering::Relaxed);
        self.mask.store(t.mask, Ordering::Relaxed);
        self.translated.store(t.translated & !t.mask, Ordering::Relaxed);
        let perm = if t.read { READ } else { 0 } | if t.write { WRITE } else { 0 };
        self.perm.store(perm, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Remembered = Remembered {
        translated: 0x5000,
        mask: 0xfff,
        read: true,
        write: true,
    };

    #[test]
    fn a_page_is_remembered_for_its_epoch_only() {
        let last = LastTranslation::default();
        assert_eq!(last.get(0x1234, false, 0), None, "empty");
        last.set(0x1234, RW, 7);
        assert_eq!(last.get(0x1000, true, 7), Some(RW));
        assert_eq!(last.get(0x1fff, false, 7), Some(RW));
        assert_eq!(last.get(0x2000, false, 7), None, "another page");
        assert_eq!(last.get(0x1000, false, 8), None, "a later epoch");
    }

    #[test]
    fn an_access_the_mapping_does_not_allow_is_not_answered() {
        let last = LastTranslation::default();
        let ro = Remembered { write: false, ..RW };
        last.set(0x1000, ro, 1);
        assert_eq!(last.get(0x1000, false, 1), Some(ro));
        assert_eq!(last.get(0x1000, true, 1), None, "the model records the fault");
    }

    #[test]
    fn readers_never_see_a_torn_entry() {
        // Two writers alternate two entries whose fields agree with each
        // other; a reader must only ever see one of them whole.
        let last = LastTranslation::default();
        let a = Remembered {
            translated: 0xa000,
            mask: 0xfff,
            read: true,
            write: false,
        };
        let b = Remembered {
            translated: 0x20_0000,
            mask: 0x1f_ffff,
            read: true,
            write: true,
        };
        std::thread::scope(|s| {
            for t in [a, b] {
                let last = &last;
                s.spawn(move || {
                    for _ in 0..20_000 {
                        last.set(0, t, 1);
                    }
                });
            }
            for _ in 0..20_000 {
                if let Some(r) = last.get(0, false, 1) {
                    assert!(r == a || r == b, "torn: {r:?}");
                }
            }
        });
    }
}
