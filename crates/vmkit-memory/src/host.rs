//! Host mappings of guest RAM: the crate's one module with `unsafe` code.
//!
//! # Concurrency model
//!
//! Guest RAM is shared between threads exactly as in QEMU: the workload
//! engine (the stand-in for vCPUs) writes it while DMA, migration and dirty
//! rate measurement read it, with no lock. Byte-level races on guest memory
//! are the guest's business: a reader concurrent with a writer may see any
//! mix of old and new bytes, never anything else, and the dirty log (written
//! *after* the data, with release ordering) is what tells a reader that a
//! page must be looked at again.
//!
//! To keep that sound on the Rust side, this module never creates a Rust
//! reference (`&[u8]`, `&mut [u8]`) into the mapping. Every access goes
//! through the raw pointer of the [`memmap2::MmapRaw`]: copies in and out use
//! [`ptr::copy_nonoverlapping`], fills [`ptr::write_bytes`], scans and the
//! checksum unaligned word reads through `*const` pointers. Those are the
//! same primitives `rust-vmm`'s `vm-memory` uses for memory shared with a
//! guest; the only thing the compiler may assume about the bytes is what it
//! read, and it never assumes they stay unchanged.
//!
//! Every method checks its range against the mapping's length first
//! ([`HostMapping::check`]); the `unsafe` blocks below rely only on that
//! check and on the mapping living as long as `self`.
//!
//! File-backed mappings have one hazard no check can remove: if another
//! process truncates the file below the mapped length, touching the missing
//! part raises `SIGBUS`, as it does for QEMU's `mem-path`.

use std::fs::File;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::checksum::{ChecksumState, GOLDEN};
use crate::error::{Error, Result};

/// How to map: both are hints that trade start-up time for speed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapOptions {
    /// Prefault the whole mapping (`MAP_POPULATE`): no page faults on first
    /// touch, at the price of allocating every page now.
    pub populate: bool,
    /// Ask for transparent huge pages (`MADV_HUGEPAGE`). Effective for
    /// anonymous memory when THP is in `madvise` or `always` mode; shmem
    /// (memfd) follows its own `shmem_enabled` setting.
    pub huge_pages: bool,
}

/// A mapping of one RAM block in this process.
///
/// Dropping it unmaps the memory. Pointers from [`HostMapping::as_ptr`] are
/// valid only while the mapping lives.
pub struct HostMapping {
    map: MmapRaw,
    len: u64,
    name: Arc<str>,
}

impl std::fmt::Debug for HostMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMapping")
            .field("name", &self.name)
            .field("ptr", &self.map.as_ptr())
            .field("len", &self.len)
            .finish()
    }
}

fn map_len(name: &str, len: u64) -> Result<usize> {
    if len == 0 {
        return Err(Error::ZeroSize);
    }
    usize::try_from(len).map_err(|_| Error::OutOfBounds {
        name: name.to_owned(),
        offset: 0,
        len,
        size: 0,
    })
}

fn io_err(name: &str, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} for RAM block '{name}'");
    move |source| Error::Io { context, source }
}

impl HostMapping {
    /// Maps `len` bytes of private anonymous memory, zero-filled.
    pub fn anonymous(name: Arc<str>, len: u64, options: MapOptions) -> Result<HostMapping> {
        let n = map_len(&name, len)?;
        let mut o = MmapOptions::new();
        o.len(n);
        if options.populate && !options.huge_pages {
            o.populate();
        }
        let map: MmapRaw = o.map_anon().map_err(io_err(&name, "mmap anonymous"))?.into();
        let host = HostMapping { map, len, name };
        if options.huge_pages {
            // Advise before faulting anything in, so the faults get huge pages.
            host.advise(Advice::HugePage)?;
            if options.populate && host.advise(Advice::PopulateWrite).is_err() {
                // Kernels before 5.14 lack MADV_POPULATE_WRITE: touch every byte instead.
                host.fill(0, len, 0)?;
            }
        }
        Ok(host)
    }

    /// Maps the first `len` bytes of `file` shared (`MAP_SHARED`): writes go
    /// to the file (or memfd) and are seen by every other mapping of it. The
    /// file must be open read-write and at least `len` bytes long.
    pub fn shared(name: Arc<str>, file: &File, len: u64, options: MapOptions) -> Result<HostMapping> {
        let n = map_len(&name, len)?;
        let mut o = MmapOptions::new();
        o.len(n);
        if options.populate {
            o.populate();
        }
        let map = o.map_raw(file).map_err(io_err(&name, "mmap shared"))?;
        let host = HostMapping { map, len, name };
        if options.huge_pages {
            host.advise(Advice::HugePage)?;
        }
        Ok(host)
    }

    /// Maps the first `len` bytes of `file` private (`MAP_PRIVATE`): reads
    /// see the file, writes stay in this process (copy on write).
    pub fn private(name: Arc<str>, file: &File, len: u64, options: MapOptions) -> Result<HostMapping> {
        let n = map_len(&name, len)?;
        let mut o = MmapOptions::new();
        o.len(n);
        if options.populate {
            o.populate();
        }
        // SAFETY: `map_copy` is unsafe because the `MmapMut` it returns
        // derefs to a `&mut [u8]` whose bytes another process could change
        // through the file. We convert it to an `MmapRaw` at once and never
        // form a reference into it (module documentation), so that aliasing
        // assumption is never made.
        let map: MmapRaw = unsafe { o.map_copy(file) }
            .map_err(io_err(&name, "mmap private"))?
            .into();
        let host = HostMapping { map, len, name };
        if options.huge_pages {
            host.advise(Advice::HugePage)?;
        }
        Ok(host)
    }

    fn advise(&self, advice: Advice) -> Result<()> {
        self.map.advise(advice).map_err(io_err(&self.name, "madvise"))
    }

    /// The block name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mapped length in bytes (never zero).
    #[inline]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: mappings are never empty. (For clippy's `len` rule.)
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Checks `[offset, offset + len)` against the mapping and returns
    /// `offset` as a `usize`. Every pointer computation below is preceded by
    /// this check; an `offset + len` that overflows is out of bounds.
    #[inline]
    pub fn check(&self, offset: u64, len: u64) -> Result<usize> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(offset as usize), // offset <= len, which fits a usize
            _ => Err(Error::OutOfBounds {
                name: self.name.to_string(),
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// The start of the mapping.
    ///
    /// # Contract for users of the pointer
    ///
    /// The pointer is valid for reads and writes of [`len`](Self::len) bytes
    /// for as long as this mapping (and so its `RamBlock`) is alive; whoever
    /// exposes it (a Python `memoryview`) must keep the block alive for that
    /// time. Other threads read and write the same bytes at any moment, so
    /// the memory must be treated as shared with another agent: copy it with
    /// raw-pointer operations (`ptr::copy_nonoverlapping`, volatile or
    /// unaligned reads), never hold a `&[u8]` / `&mut [u8]` over it across a
    /// point where other threads run, and never assume bytes stay unchanged.
    /// Writes through the pointer bypass dirty tracking: mark the pages
    /// through the block's [`DirtyLog`](crate::DirtyLog) after writing.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The pointer to `[offset, offset + len)` after a bounds check; same
    /// contract as [`as_ptr`](Self::as_ptr).
    pub fn ptr_at(&self, offset: u64, len: u64) -> Result<*mut u8> {
        let off = self.check(offset, len)?;
        Ok(self.as_ptr().wrapping_add(off))
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let off = self.check(offset, buf.len() as u64)?;
        // SAFETY: `check` proved `[off, off + buf.len())` lies inside the
        // mapping, which is live while `self` is. `buf` is a distinct Rust
        // allocation, so the ranges do not overlap. Concurrent guest writes
        // may be copied half-old half-new (module documentation).
        unsafe { ptr::copy_nonoverlapping(self.as_ptr().add(off), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let off = self.check(offset, data.len() as u64)?;
        // SAFETY: as in `read`, with the copy going the other way; `data`
        // cannot point into the mapping because no reference into it is
        // ever created.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(off), data.len()) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        let off = self.check(offset, len)?;
        // SAFETY: `check` bounds `[off, off + len)` inside the live mapping;
        // `len` fits a usize because it is at most the mapping's length.
        unsafe { ptr::write_bytes(self.as_ptr().add(off), byte, len as usize) };
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` within this mapping; the
    /// ranges may overlap (`memmove`).
    pub fn copy_within(&self, src: u64, dst: u64, len: u64) -> Result<()> {
        let s = self.check(src, len)?;
        let d = self.check(dst, len)?;
        // SAFETY: both ranges were bounds-checked against the live mapping;
        // `ptr::copy` allows overlap.
        unsafe { ptr::copy(self.as_ptr().add(s), self.as_ptr().add(d), len as usize) };
        Ok(())
    }

    /// Copies `len` bytes at `src_offset` of `src` to `dst_offset` of this
    /// mapping (DMA between blocks, migration into a destination block).
    pub fn copy_from(&self, dst_offset: u64, src: &HostMapping, src_offset: u64, len: u64) -> Result<()> {
        let s = src.check(src_offset, len)?;
        let d = self.check(dst_offset, len)?;
        // SAFETY: both ranges were bounds-checked against their live
        // mappings. They may be the same mapping, so use the overlapping copy.
        unsafe { ptr::copy(src.as_ptr().add(s), self.as_ptr().add(d), len as usize) };
        Ok(())
    }

    /// Faults the pages of `[offset, offset + len)` in for writing now
    /// (`MADV_POPULATE_WRITE`), in one call instead of one page fault per
    /// page on first touch; the contents do not change. Kernels before
    /// 5.14 refuse it ([`Error::Io`]).
    pub fn populate_write(&self, offset: u64, len: u64) -> Result<()> {
        let off = self.check(offset, len)?;
        self.map
            .advise_range(Advice::PopulateWrite, off, len as usize)
            .map_err(io_err(&self.name, "madvise(MADV_POPULATE_WRITE)"))
    }

    /// Whether the `len` bytes at `offset` are all zero.
    ///
    /// Scans 256 bytes at a time, ORing 32 unaligned words so the compiler
    /// emits wide vector loads, and stops at the first non-zero block.
    pub fn is_zero(&self, offset: u64, len: u64) -> Result<bool> {
        let off = self.check(offset, len)?;
        let mut p = self.as_ptr().wrapping_add(off).cast_const();
        let mut left = len as usize;
        const BLOCK: usize = 256;
        while left >= BLOCK {
            let mut acc = 0u64;
            for i in 0..BLOCK / 8 {
                // SAFETY: `p + BLOCK <= off + len`, inside the bounds-checked
                // range of the live mapping; unaligned reads need no alignment.
                acc |= unsafe { p.cast::<u64>().add(i).read_unaligned() };
            }
            if acc != 0 {
                return Ok(false);
            }
            // SAFETY: stays within the checked range (at most its end).
            p = unsafe { p.add(BLOCK) };
            left -= BLOCK;
        }
        let mut acc = 0u64;
        while left >= 8 {
            // SAFETY: 8 bytes left in the checked range.
            acc |= unsafe { p.cast::<u64>().read_unaligned() };
            // SAFETY: at most the end of the checked range.
            p = unsafe { p.add(8) };
            left -= 8;
        }
        for i in 0..left {
            // SAFETY: `i < left`, the bytes remaining in the checked range.
            acc |= u64::from(unsafe { p.add(i).read() });
        }
        Ok(acc == 0)
    }

    /// The XXH3-64 checksum of `len` bytes at `offset` (see
    /// [`crate::checksum`]).
    ///
    /// The bytes are copied out in 64 KiB chunks (cache-sized, so the copy
    /// costs little next to the read) and hashed from the copy: the hasher
    /// takes a `&[u8]`, which must never point into guest memory.
    pub fn checksum(&self, offset: u64, len: u64) -> Result<u64> {
        const CHUNK: usize = 64 << 10;
        let off = self.check(offset, len)?;
        let mut state = ChecksumState::new();
        let mut chunk = vec![0u8; CHUNK.min(len as usize)];
        let mut at = off;
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(CHUNK);
            // SAFETY: `[at, at + n)` lies inside the range `check` bounded in
            // the live mapping; `chunk` is a distinct local buffer of at
            // least `n` bytes.
            unsafe { ptr::copy_nonoverlapping(self.as_ptr().add(at), chunk.as_mut_ptr(), n) };
            state.update(&chunk[..n]);
            at += n;
            left -= n;
        }
        Ok(state.digest())
    }

    /// Writes the first `len` bytes of the word pattern starting at `base`
    /// (`word[i] = base + i * GOLDEN`, little-endian) to `offset`.
    pub fn write_pattern(&self, offset: u64, len: u64, base: u64) -> Result<()> {
        let off = self.check(offset, len)?;
        let p = self.as_ptr().wrapping_add(off);
        let len = len as usize;
        let words = len / 8;
        let mut w = base;
        for i in 0..words {
            // SAFETY: `8 * i + 8 <= len`, inside the bounds-checked range of
            // the live mapping; unaligned writes need no alignment.
            unsafe { p.cast::<u64>().add(i).write_unaligned(w.to_le()) };
            w = w.wrapping_add(GOLDEN);
        }
        let rest = len % 8;
        if rest != 0 {
            let bytes = w.to_le_bytes();
            // SAFETY: the last `rest` bytes of the checked range; `bytes` is
            // a local array of 8 >= rest bytes.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(words * 8), rest) };
        }
        Ok(())
    }

    /// Flushes a shared file mapping to its file (`msync`); a no-op in effect
    /// for anonymous and memfd memory.
    pub fn flush(&self) -> Result<()> {
        self.map.flush().map_err(io_err(&self.name, "msync"))
    }
}

/// A bounds-checked range of guest memory for the kernel to read, borrowed
/// from its [`HostMapping`] for `'a`: a raw pointer and a length, never a
/// `&[u8]` (the guest may write the bytes meanwhile; module documentation).
///
/// It exists to build the `iovec`s of a gathered write (`writev(2)`), which
/// copies synchronously: once the call returns, nothing refers to the
/// memory any more. Whoever hands [`as_ptr`](Self::as_ptr) to the kernel may
/// rely on `len` bytes from it being mapped for as long as the slice lives.
///
/// ```
/// use std::sync::Arc;
/// use vmkit_memory::{HostMapping, MapOptions};
///
/// let ram = HostMapping::anonymous(Arc::from("ram"), 8192, MapOptions::default())?;
/// let page = ram.io_slice(4096, 4096)?;
/// assert_eq!(page.len(), 4096);
/// assert!(ram.io_slice(4096, 4097).is_err());
/// # Ok::<(), vmkit_memory::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GuestIoSlice<'a> {
    ptr: *const u8,
    len: usize,
    _mapping: PhantomData<&'a HostMapping>,
}

// SAFETY: a `GuestIoSlice` is a pointer into a mapping that is itself
// shared between threads (`MmapRaw` is `Send + Sync`); it grants no access
// beyond what the mapping's own raw pointer does.
unsafe impl Send for GuestIoSlice<'_> {}
// SAFETY: as for `Send`: the slice is read-only and never dereferenced in
// Rust.
unsafe impl Sync for GuestIoSlice<'_> {}

impl GuestIoSlice<'_> {
    /// The first byte; valid for reads of [`len`](Self::len) bytes by the
    /// kernel (or raw-pointer copies) while the slice lives.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl HostMapping {
    /// `[offset, offset + len)` as a [`GuestIoSlice`], after a bounds check.
    pub fn io_slice(&self, offset: u64, len: u64) -> Result<GuestIoSlice<'_>> {
        let ptr = self.ptr_at(offset, len)?;
        Ok(GuestIoSlice {
            ptr: ptr.cast_const(),
            // `check` bounded `len` by the mapping's length, which fits a usize.
            len: len as usize,
            _mapping: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(len: u64) -> HostMapping {
        HostMapping::anonymous("t".into(), len, MapOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bounds_and_overflow() {
        let h = anon(8192);
        let mut b = [0u8; 16];
        assert!(h.read(8192 - 16, &mut b).is_ok());
        assert!(matches!(h.read(8192 - 15, &mut b), Err(Error::OutOfBounds { .. })));
        assert!(matches!(h.fill(u64::MAX, 2, 0), Err(Error::OutOfBounds { .. })));
        assert!(matches!(h.is_zero(1, u64::MAX), Err(Error::OutOfBounds { .. })));
        assert!(h.check(8192, 0).is_ok());
        assert!(h.check(8193, 0).is_err());
        assert!(matches!(
            HostMapping::anonymous("z".into(), 0, MapOptions::default()),
            Err(Error::ZeroSize)
        ));
    }

    #[test]
    fn zero_scan_every_position() {
        let h = anon(4096);
        assert_eq!(h.is_zero(0, 4096).ok(), Some(true));
        for pos in [0u64, 1, 7, 8, 255, 256, 300, 4000, 4095] {
            assert!(h.fill(pos, 1, 0x80).is_ok());
            assert_eq!(h.is_zero(0, 4096).ok(), Some(false), "byte {pos}");
            assert_eq!(h.is_zero(pos + 1, 4096 - pos - 1).ok(), Some(true), "after {pos}");
            if pos > 0 {
                assert_eq!(h.is_zero(0, pos).ok(), Some(true), "before {pos}");
            }
            assert!(h.fill(pos, 1, 0).is_ok());
        }
    }

    #[test]
    fn checksum_and_pattern_match_safe_versions() {
        let h = anon(4096);
        assert!(h.write_pattern(5, 1001, 42).is_ok());
        let mut buf = vec![0u8; 4096];
        assert!(h.read(0, &mut buf).is_ok());
        let mut want = vec![0u8; 5];
        want.extend_from_slice(&crate::checksum::pattern_bytes_from_base(42, 1001));
        want.resize(4096, 0);
        assert_eq!(buf, want);
        for (o, n) in [(0u64, 4096u64), (3, 77), (5, 1001), (100, 0), (4095, 1)] {
            let range = &buf[o as usize..(o + n) as usize];
            assert_eq!(h.checksum(o, n).ok(), Some(crate::checksum::checksum(range)), "{o}+{n}");
        }
    }

    #[test]
    fn io_slices_are_bounds_checked() {
        let h = anon(8192);
        assert!(h.write(4096, b"page").is_ok());
        let s = h.io_slice(4096, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.len(), s.is_empty()), (4, false));
        let mut b = [0u8; 4];
        // SAFETY: the slice is 4 bytes of the live mapping `h`.
        unsafe { ptr::copy_nonoverlapping(s.as_ptr(), b.as_mut_ptr(), 4) };
        assert_eq!(&b, b"page");
        assert!(h.io_slice(8192, 0).is_ok_and(|s| s.is_empty()));
        assert!(matches!(h.io_slice(4096, 4097), Err(Error::OutOfBounds { .. })));
        assert!(matches!(h.io_slice(u64::MAX, 2), Err(Error::OutOfBounds { .. })));
    }

    #[test]
    fn copies() {
        let h = anon(4096);
        assert!(h.write(0, b"abcdef").is_ok());
        assert!(h.copy_within(0, 2, 6).is_ok());
        let mut b = [0u8; 8];
        assert!(h.read(0, &mut b).is_ok());
        assert_eq!(&b, b"ababcdef");
        let g = anon(4096);
        assert!(g.copy_from(100, &h, 0, 8).is_ok());
        assert!(g.read(100, &mut b).is_ok());
        assert_eq!(&b, b"ababcdef");
        assert!(g.copy_from(4090, &h, 0, 8).is_err());
    }
}
