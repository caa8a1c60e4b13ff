//! Gathered writes: caller bytes and guest pages sent to a descriptor in
//! `writev(2)` calls, with the batching policy of the stream's RAM pages.
//!
//! The crate's one module with `unsafe` code: a single `writev` call on raw
//! `iovec`s. Guest memory enters only as [`GuestIoSlice`]s, which
//! `vmkit-memory` bounds-checked and which never become a `&[u8]` (a vCPU may
//! be writing the bytes; see `vmkit_memory::host`). The kernel copies
//! synchronously, so nothing refers to guest memory once a write returns.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::event::{PollFd, PollFlags, poll};
use vmkit_memory::{GuestIoSlice, HostMapping};

/// Most bytes of one gathered write: large writes, few system calls. (Cut
/// smaller for pipes, 16 KiB–1 MiB, writes into `cat` went no faster.)
pub const BATCH_BYTES: usize = 2 << 20;
/// Most page records per gathered write (a run of zero pages costs 9 bytes
/// each, so the byte limit alone would let a batch grow without bound).
pub const BATCH_RECORDS: usize = 4096;

/// Most segments one `writev(2)` takes (Linux's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// A write that failed after `written` bytes reached the descriptor.
#[derive(Debug, thiserror::Error)]
#[error("write failed after {written} bytes: {error}")]
pub struct PartialWrite {
    /// Bytes the descriptor took before the failure.
    pub written: usize,
    /// Why it stopped.
    #[source]
    pub error: io::Error,
}

/// Blocks until `fd` can take more bytes (or reports an error or hangup,
/// which the next write then returns).
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes gathered from caller buffers and guest RAM for vectored writes.
///
/// [`write_to`](Self::write_to) hands the kernel pointers into the mappings
/// (`writev(2)`), so guest pages reach a file, pipe or socket without a copy
/// through a user buffer, as QEMU's `QEMUFile` sends them, and without a
/// Rust reference to memory a vCPU may be writing meanwhile.
///
/// ```
/// use std::sync::Arc;
/// use vmkit_memory::{HostMapping, MapOptions};
/// use vmkit_migration::transport::GatherList;
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

    /// Appends a bounds-checked range of guest memory.
    pub fn push_guest(&mut self, slice: GuestIoSlice<'a>) {
        self.push_raw(slice.as_ptr(), slice.len());
    }

    /// Appends `[offset, offset + len)` of `host`, after a bounds check.
    pub fn push_host(&mut self, host: &'a HostMapping, offset: u64, len: u64) -> vmkit_memory::Result<()> {
        self.push_guest(host.io_slice(offset, len)?);
        Ok(())
    }

    /// Writes everything gathered to `fd`, in as many `writev(2)` calls as
    /// it takes (short writes and `EINTR` are resumed; on a non-blocking
    /// descriptor `EAGAIN` waits in `poll(2)` until it is writable), and
    /// empties the list. Returns the bytes written; on error, how many
    /// reached `fd` before it ([`PartialWrite`]), and the list is emptied
    /// all the same.
    pub fn write_to(&mut self, fd: BorrowedFd<'_>) -> Result<usize, PartialWrite> {
        let total = self.bytes;
        let mut written = 0;
        let mut start = 0;
        let result = loop {
            if start == self.iov.len() {
                break Ok(total);
            }
            let end = self.iov.len().min(start + IOV_MAX);
            let part = &self.iov[start..end];
            // SAFETY: every segment points into a caller slice or a
            // bounds-checked `GuestIoSlice` of a mapping, both borrowed for
            // `'a` and so alive now; the kernel only reads them. `part.len()`
            // is at most IOV_MAX, which fits a c_int.
            let n = unsafe { libc::writev(fd.as_raw_fd(), part.as_ptr(), part.len() as libc::c_int) };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => match wait_writable(fd) {
                        Ok(()) => continue,
                        Err(error) => break Err(PartialWrite { written, error }),
                    },
                    _ => break Err(PartialWrite { written, error }),
                }
            }
            if n == 0 {
                let error = io::Error::new(io::ErrorKind::WriteZero, "writev wrote nothing");
                break Err(PartialWrite { written, error });
            }
            // `n` is positive here, and at most the bytes of `part`.
            let mut left = n as usize;
            written += left;
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

/// `Write` on a borrowed descriptor, for the small records around the RAM
/// pages. Writes go through [`GatherList::write_to`], so short writes,
/// `EINTR` and a non-blocking descriptor are handled as for the pages; a
/// write that fails part-way reports the bytes that went out (`Ok(n)`), and
/// the next call the error, as `Write` expects, so a `BufWriter` above it
/// knows exactly how far the stream got.
#[derive(Debug, Clone, Copy)]
pub struct FdWriter<'fd>(pub BorrowedFd<'fd>);

impl io::Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut list = GatherList::with_capacity(1);
        list.push_bytes(buf);
        match list.write_to(self.0) {
            Ok(n) => Ok(n),
            Err(PartialWrite { written, .. }) if written > 0 => Ok(written),
            Err(PartialWrite { error, .. }) => Err(error),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::sync::Arc;

    use vmkit_memory::{Error, MapOptions};

    use super::*;

    fn anon(len: u64) -> HostMapping {
        HostMapping::anonymous(Arc::from("t"), len, MapOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn temp_file(tag: &str) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!("vmkit-gather-{tag}-{}", std::process::id()));
        let file = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        (path, file)
    }

    #[test]
    fn gather_writes_bytes_and_guest_memory_in_order() {
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
        let h = anon(4096);
        let (path, file) = temp_file("gather-ro");
        drop(file);
        let ro = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut list = GatherList::new();
        assert!(list.push_host(&h, 0, 4096).is_ok());
        let err = list.write_to(ro.as_fd()).err();
        assert_eq!(err.as_ref().map(|e| e.written), Some(0));
        assert_eq!(err.and_then(|e| e.error.raw_os_error()), Some(libc::EBADF));
        assert!(list.is_empty());
        let _ = std::fs::remove_file(&path);
    }

    /// A pipe of one page whose reader takes exactly `take` bytes and then
    /// closes its end; returns the write end and the reader's thread.
    fn pipe_read_then_close(take: usize) -> (rustix::fd::OwnedFd, std::thread::JoinHandle<io::Result<usize>>) {
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap_or_else(|e| panic!("{e}"));
        let _ = rustix::pipe::fcntl_setpipe_size(&wr, 4096);
        let reader = std::thread::spawn(move || {
            let mut f = File::from(rd);
            let mut got = vec![0u8; take];
            f.read_exact(&mut got).map(|_| take)
        });
        (wr, reader)
    }

    #[test]
    fn a_write_failing_mid_list_reports_the_bytes_that_went_out() {
        let h = anon(8 * 4096);
        let (wr, reader) = pipe_read_then_close(3 * 4096 + 10);
        let head = [1u8; 100];
        let mut list = GatherList::new();
        list.push_bytes(&head);
        assert!(list.push_host(&h, 0, 8 * 4096).is_ok());
        let err = list.write_to(wr.as_fd()).err();
        assert_eq!(reader.join().ok().and_then(|r| r.ok()), Some(3 * 4096 + 10));
        let written = err.as_ref().map_or(0, |e| e.written);
        // Everything the reader took went out, plus at most what the pipe
        // held when it closed; never the whole list.
        assert!((3 * 4096 + 10..=4 * 4096 + 10 + 4096).contains(&written), "{written}");
        assert_eq!(err.and_then(|e| e.error.raw_os_error()), Some(libc::EPIPE));
    }

    #[test]
    fn fd_writer_returns_the_partial_count_before_the_error() {
        use std::io::Write;
        let (wr, reader) = pipe_read_then_close(4096 + 1);
        let data = vec![7u8; 4 * 4096];
        let mut w = FdWriter(wr.as_fd());
        let mut sent = 0;
        let err = loop {
            match w.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(sent < data.len(), "every byte went out");
        };
        assert_eq!(reader.join().ok().and_then(|r| r.ok()), Some(4096 + 1));
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        assert!((4096 + 1..=3 * 4096).contains(&sent), "{sent}");
    }

    #[test]
    fn gather_resumes_short_writes_on_a_slow_nonblocking_pipe() {
        let h = anon(16 * 4096);
        assert!(h.write_pattern(0, 16 * 4096, 3).is_ok());
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC)
            .unwrap_or_else(|e| panic!("{e}"));
        // The kernel rounds up to a page.
        let _ = rustix::pipe::fcntl_setpipe_size(&wr, 4096);
        let reader = File::from(rd);
        let drain = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            let mut fds = [PollFd::new(&reader, PollFlags::IN)];
            loop {
                let _ = poll(&mut fds, None);
                match (&reader).read(&mut buf) {
                    Ok(0) => break got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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
}
