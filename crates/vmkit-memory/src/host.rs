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
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// Most segments one `writev(2)` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Blocks until `fd` can take more bytes (or reports an error or hangup,
/// which the next write then returns).
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid, exclusively borrowed `pollfd`, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Bytes gathered from caller buffers and guest RAM for vectored writes.
///
/// [`write_to`](Self::write_to) hands the kernel pointers into the mappings
/// (`writev(2)`), so guest pages reach a file, pipe or socket without a copy
/// through a user buffer, as QEMU's `QEMUFile` sends them, and without a
/// Rust reference to memory a vCPU may be writing meanwhile. The kernel
/// copies synchronously: once `write_to` returns, the sink holds the bytes
/// as they were during the call, whatever the guest does next.
///
/// ```
/// use std::sync::Arc;
/// use vmkit_memory::{GatherList, HostMapping, MapOptions};
///
/// let ram = HostMapping::anonymous(Arc::from("ram"), 8192, MapOptions::default())?;
/// ram.write(4096, b"page")?;
/// let header = *b"hdr:";
/// let mut list = GatherList::new();
/// list.push_bytes(&header);
/// list.push_host(&ram, 4096, 4)?;
/// assert_eq!(list.byte_len(), 8);
/// let path = std::env::temp_dir().join(format!("gather-doc-{}", std::process::id()));
/// let file = std::fs::File::create(&path)?;
/// list.write_to(std::os::fd::AsFd::as_fd(&file))?;
/// assert_eq!(std::fs::read(&path)?, b"hdr:page");
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GatherList<'a> {
    iov: Vec<libc::iovec>,
    bytes: usize,
    /// The segments borrow caller bytes and mappings for `'a`.
    _borrows: PhantomData<&'a [u8]>,
}

impl std::fmt::Debug for GatherList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatherList")
            .field("segments", &self.iov.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Default for GatherList<'_> {
    fn default() -> Self {
        GatherList::new()
    }
}

impl<'a> GatherList<'a> {
    /// An empty list.
    pub fn new() -> GatherList<'a> {
        GatherList::with_capacity(0)
    }

    /// An empty list with room for `segments` segments.
    pub fn with_capacity(segments: usize) -> GatherList<'a> {
        GatherList {
            iov: Vec::with_capacity(segments),
            bytes: 0,
            _borrows: PhantomData,
        }
    }

    /// Bytes gathered so far.
    pub fn byte_len(&self) -> usize {
        self.bytes
    }

    /// Segments gathered so far.
    pub fn segments(&self) -> usize {
        self.iov.len()
    }

    /// Whether nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    fn push_raw(&mut self, base: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        // Bytes that continue the previous segment extend it: runs of small
        // records from one buffer cost one segment.
        if let Some(last) = self.iov.last_mut() {
            if (last.iov_base as *const u8).wrapping_add(last.iov_len) == base {
                last.iov_len += len;
                self.bytes += len;
                return;
            }
        }
        self.iov.push(libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: len,
        });
        self.bytes += len;
    }

    /// Appends the caller's `bytes`.
    pub fn push_bytes(&mut self, bytes: &'a [u8]) {
        self.push_raw(bytes.as_ptr(), bytes.len());
    }

    /// Appends `[offset, offset + len)` of `host`, after a bounds check.
    pub fn push_host(&mut self, host: &'a HostMapping, offset: u64, len: u64) -> Result<()> {
        let base = host.ptr_at(offset, len)?;
        // `check` bounded `len` by the mapping's length, which fits a usize.
        self.push_raw(base, len as usize);
        Ok(())
    }

    /// Writes everything gathered to `fd`, in as many `writev(2)` calls as
    /// it takes (short writes and `EINTR` are resumed; on a non-blocking
    /// descriptor `EAGAIN` waits in `poll(2)` until it is writable), and
    /// empties the list. On error, the bytes before the failure were written and the
    /// list is emptied all the same; the error says how far it got in its
    /// text only, as `write_all` does.
    pub fn write_to(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let total = self.bytes;
        let mut start = 0;
        let result = loop {
            if start == self.iov.len() {
                break Ok(total);
            }
            let end = self.iov.len().min(start + IOV_MAX);
            let part = &self.iov[start..end];
            // SAFETY: every segment points into a caller slice or a
            // bounds-checked range of a mapping, both borrowed for `'a`
            // and so alive now; the kernel only reads them. `part.len()`
            // is at most IOV_MAX, which fits a c_int.
            let n = unsafe { libc::writev(fd.as_raw_fd(), part.as_ptr(), part.len() as libc::c_int) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => match wait_writable(fd) {
                        Ok(()) => continue,
                        Err(e) => break Err(e),
                    },
                    _ => break Err(err),
                }
            }
            if n == 0 {
                break Err(io::Error::new(io::ErrorKind::WriteZero, "writev wrote nothing"));
            }
            // `n` is positive here, and at most the bytes of `part`.
            let mut left = n as usize;
            while left > 0 && start < end {
                let seg = &mut self.iov[start];
                if left >= seg.iov_len {
                    left -= seg.iov_len;
                    start += 1;
                } else {
                    // A short write stopped inside this segment: resume
                    // after the bytes that went out. Only pointer
                    // arithmetic, inside the same segment.
                    seg.iov_base = (seg.iov_base as *mut u8).wrapping_add(left) as *mut libc::c_void;
                    seg.iov_len -= left;
                    left = 0;
                }
            }
        };
        self.iov.clear();
        self.bytes = 0;
        result
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

    fn temp_file(tag: &str) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("vmkit-host-{tag}-{}", std::process::id()));
        let file = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        (path, file)
    }

    #[test]
    fn gather_writes_bytes_and_guest_memory_in_order() {
        use std::os::fd::AsFd;
        let h = anon(3 * 4096);
        assert!(h.write_pattern(0, 3 * 4096, 7).is_ok());
        let mut want = Vec::new();
        let mut ram = vec![0u8; 3 * 4096];
        assert!(h.read(0, &mut ram).is_ok());
        // More segments than one writev takes, so the list is sent in parts;
        // adjacent header bytes merge into one segment.
        let headers: Vec<[u8; 3]> = (0..1500u32).map(|i| [i as u8, (i >> 8) as u8, 0xAA]).collect();
        let mut list = GatherList::new();
        for (i, hdr) in headers.iter().enumerate() {
            list.push_bytes(hdr);
            want.extend_from_slice(hdr);
            let off = (i as u64 * 13) % (3 * 4096 - 100);
            assert!(list.push_host(&h, off, 100).is_ok());
            want.extend_from_slice(&ram[off as usize..off as usize + 100]);
        }
        assert!(list.segments() > IOV_MAX);
        assert_eq!(list.byte_len(), want.len());
        let (path, file) = temp_file("gather");
        assert_eq!(list.write_to(file.as_fd()).ok(), Some(want.len()));
        assert!(list.is_empty() && list.segments() == 0);
        assert_eq!(std::fs::read(&path).ok(), Some(want));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn gather_merges_contiguous_bytes_and_checks_bounds() {
        let h = anon(4096);
        let buf = [1u8, 2, 3, 4];
        let mut list = GatherList::new();
        list.push_bytes(&buf[..2]);
        list.push_bytes(&buf[2..]);
        list.push_bytes(&[]);
        assert_eq!((list.segments(), list.byte_len()), (1, 4));
        assert!(matches!(list.push_host(&h, 4000, 97), Err(Error::OutOfBounds { .. })));
        assert!(matches!(
            list.push_host(&h, u64::MAX, 2),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!((list.segments(), list.byte_len()), (1, 4));
    }

    #[test]
    fn gather_reports_a_failed_write_and_empties() {
        use std::os::fd::AsFd;
        let h = anon(4096);
        let (path, file) = temp_file("gather-ro");
        drop(file);
        let ro = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut list = GatherList::new();
        assert!(list.push_host(&h, 0, 4096).is_ok());
        let err = list.write_to(ro.as_fd()).err();
        assert_eq!(err.and_then(|e| e.raw_os_error()), Some(libc::EBADF));
        assert!(list.is_empty());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn gather_resumes_short_writes_on_a_slow_nonblocking_pipe() {
        use std::io::Read;
        use std::os::fd::{AsFd, FromRawFd, OwnedFd};
        let h = anon(16 * 4096);
        assert!(h.write_pattern(0, 16 * 4096, 3).is_ok());
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns.
        let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(made, 0);
        // SAFETY: pipe2 succeeded, so both are new descriptors we own.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our own pipe; the kernel rounds up to a page.
        unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        let mut reader = std::fs::File::from(rd);
        let drain = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let head = [9u8; 5];
        let mut list = GatherList::new();
        list.push_bytes(&head);
        assert!(list.push_host(&h, 0, 16 * 4096).is_ok());
        assert_eq!(list.write_to(wr.as_fd()).ok(), Some(5 + 16 * 4096));
        drop(wr);
        let got = drain.join().unwrap_or_else(|_| panic!("reader"));
        let mut want = head.to_vec();
        let mut ram = vec![0u8; 16 * 4096];
        assert!(h.read(0, &mut ram).is_ok());
        want.extend_from_slice(&ram);
        assert_eq!(got.len(), want.len());
        assert!(got == want);
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
