//! RAM blocks: the host memory behind guest RAM (QEMU's `RAMBlock`).

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checksum::pattern_base;
use crate::dirty::DirtyLog;
use crate::error::{Error, Result};
use crate::host::{HostMapping, MapOptions};

/// The host page size assumed by default (and QEMU's x86 target page size).
pub const DEFAULT_PAGE_SIZE: u64 = 4096;

/// What backs a RAM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RamBacking {
    /// Private anonymous memory (QEMU's default `memory-backend-ram`).
    Anonymous,
    /// A memfd (`memory-backend-memfd`), mapped shared: another process given
    /// the fd ([`RamBlock::fd`]) maps the same pages.
    Memfd,
    /// A file (`memory-backend-file`, `-mem-path`), created or extended to the
    /// block size; mapped `MAP_SHARED` (`share=on`: writes reach the file) or
    /// `MAP_PRIVATE` (`share=off`: copy on write, the file is only read).
    File {
        /// The file.
        path: PathBuf,
        /// `MAP_SHARED` rather than `MAP_PRIVATE`.
        shared: bool,
    },
}

/// Options of a RAM block beyond its size and backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamOptions {
    /// The dirty-tracking page size: a power of two of at least 64 bytes
    /// dividing the block size. Default 4096.
    pub page_size: u64,
    /// Mapping hints (prefault, transparent huge pages).
    pub map: MapOptions,
}

impl Default for RamOptions {
    fn default() -> RamOptions {
        RamOptions {
            page_size: DEFAULT_PAGE_SIZE,
            map: MapOptions::default(),
        }
    }
}

/// A block of guest RAM, shared as `Arc<RamBlock>` by the regions that map it,
/// the workload engine, DMA and migration.
///
/// All accessors take `&self` and may run on any thread at once (see the
/// concurrency model of [`crate::host`]); writes through [`write`](Self::write),
/// [`fill`](Self::fill) and the pattern helpers mark the pages dirty for every
/// logging client after storing the data.
#[derive(Debug)]
pub struct RamBlock {
    name: Arc<str>,
    size: u64,
    page_size: u64,
    page_shift: u32,
    host: HostMapping,
    backing: RamBacking,
    fd: Option<OwnedFd>,
    dirty: DirtyLog,
}

fn validate(name: &str, size: u64, page_size: u64) -> Result<u32> {
    if size == 0 {
        return Err(Error::ZeroSize);
    }
    if !page_size.is_power_of_two() || page_size < 64 {
        return Err(Error::InvalidPageSize {
            name: name.to_owned(),
            page_size,
        });
    }
    if size % page_size != 0 {
        return Err(Error::Unaligned {
            what: "RAM block size",
            value: size,
            align: page_size,
        });
    }
    if usize::try_from(size).is_err() || isize::try_from(size).is_err() {
        return Err(Error::Refused(format!(
            "RAM block '{name}' of {size:#x} bytes does not fit the address space"
        )));
    }
    Ok(page_size.trailing_zeros())
}

fn memfd_io(e: memfd::Error) -> std::io::Error {
    match e {
        memfd::Error::Create(e) | memfd::Error::AddSeals(e) | memfd::Error::GetSeals(e) => e,
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl RamBlock {
    /// A zero-filled anonymous block of `size` bytes in 4 KiB pages.
    pub fn anonymous(name: impl Into<String>, size: u64) -> Result<Arc<RamBlock>> {
        RamBlock::with_options(name, size, RamBacking::Anonymous, RamOptions::default())
    }

    /// A zero-filled memfd block of `size` bytes in 4 KiB pages.
    pub fn memfd(name: impl Into<String>, size: u64) -> Result<Arc<RamBlock>> {
        RamBlock::with_options(name, size, RamBacking::Memfd, RamOptions::default())
    }

    /// A block backed by the file at `path` (created, or extended to `size`
    /// if shorter), mapped shared or private.
    pub fn file(name: impl Into<String>, size: u64, path: impl AsRef<Path>, shared: bool) -> Result<Arc<RamBlock>> {
        let backing = RamBacking::File {
            path: path.as_ref().to_path_buf(),
            shared,
        };
        RamBlock::with_options(name, size, backing, RamOptions::default())
    }

    /// A block with the given backing and options.
    pub fn with_options(
        name: impl Into<String>,
        size: u64,
        backing: RamBacking,
        options: RamOptions,
    ) -> Result<Arc<RamBlock>> {
        let name: Arc<str> = name.into().into();
        let page_shift = validate(&name, size, options.page_size)?;
        let (host, fd) = match &backing {
            RamBacking::Anonymous => (HostMapping::anonymous(name.clone(), size, options.map)?, None),
            RamBacking::Memfd => {
                let memfd = memfd::MemfdOptions::new().create(&*name).map_err(|e| Error::Io {
                    context: format!("memfd_create for '{name}'"),
                    source: memfd_io(e),
                })?;
                let file = memfd.into_file();
                file.set_len(size)
                    .map_err(io(format!("sizing the memfd of '{name}'")))?;
                (
                    HostMapping::shared(name.clone(), &file, size, options.map)?,
                    Some(OwnedFd::from(file)),
                )
            }
            RamBacking::File { path, shared } => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io(format!("opening {} for '{name}'", path.display())))?;
                let len = file
                    .metadata()
                    .map_err(io(format!("stat of {}", path.display())))?
                    .len();
                if len < size {
                    file.set_len(size)
                        .map_err(io(format!("extending {} to {size:#x} bytes", path.display())))?;
                }
                let host = if *shared {
                    HostMapping::shared(name.clone(), &file, size, options.map)?
                } else {
                    HostMapping::private(name.clone(), &file, size, options.map)?
                };
                (host, Some(OwnedFd::from(file)))
            }
        };
        Ok(Arc::new(RamBlock {
            dirty: DirtyLog::new(name.clone(), size, options.page_size),
            name,
            size,
            page_size: options.page_size,
            page_shift,
            host,
            backing,
            fd,
        }))
    }

    /// Maps a memfd received from another process (QEMU's CPR passes RAM
    /// this way): the two processes then share the pages. `fd` must be a
    /// memfd of at least `size` bytes.
    pub fn from_memfd_fd(name: impl Into<String>, size: u64, fd: OwnedFd) -> Result<Arc<RamBlock>> {
        RamBlock::from_memfd_fd_with_options(name, size, fd, RamOptions::default())
    }

    /// [`from_memfd_fd`](Self::from_memfd_fd) with options.
    pub fn from_memfd_fd_with_options(
        name: impl Into<String>,
        size: u64,
        fd: OwnedFd,
        options: RamOptions,
    ) -> Result<Arc<RamBlock>> {
        let name: Arc<str> = name.into().into();
        let page_shift = validate(&name, size, options.page_size)?;
        let file = match memfd::Memfd::try_from_fd(fd) {
            Ok(m) => m.into_file(),
            Err(_) => {
                return Err(Error::Refused(format!(
                    "the fd given for RAM block '{name}' is not a memfd"
                )));
            }
        };
        let len = file
            .metadata()
            .map_err(io(format!("stat of the memfd of '{name}'")))?
            .len();
        if len < size {
            // Mapping past the end of the file would fault with SIGBUS on access.
            return Err(Error::OutOfBounds {
                name: name.to_string(),
                offset: 0,
                len: size,
                size: len,
            });
        }
        let host = HostMapping::shared(name.clone(), &file, size, options.map)?;
        Ok(Arc::new(RamBlock {
            dirty: DirtyLog::new(name.clone(), size, options.page_size),
            name,
            size,
            page_size: options.page_size,
            page_shift,
            host,
            backing: RamBacking::Memfd,
            fd: Some(OwnedFd::from(file)),
        }))
    }

    /// The block's id string (QEMU's `idstr`, e.g. `pc.ram`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The usable size in bytes (QEMU's `used_length`).
    #[inline]
    pub fn used_length(&self) -> u64 {
        self.size
    }

    /// The dirty-tracking page size.
    #[inline]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// `log2(page_size)`.
    #[inline]
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// Pages in the block.
    #[inline]
    pub fn page_count(&self) -> u64 {
        self.size >> self.page_shift
    }

    /// The backing.
    pub fn backing(&self) -> &RamBacking {
        &self.backing
    }

    /// The fd another process can map to share this block's memory: the
    /// memfd, or the file of a shared file mapping. `None` for anonymous
    /// memory and private file mappings (another mapping of the file would
    /// not see this process's copy-on-write pages).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self.backing {
            RamBacking::Anonymous | RamBacking::File { shared: false, .. } => None,
            _ => self.fd.as_ref().map(AsFd::as_fd),
        }
    }

    /// The host mapping (raw access; writes through it are not dirty-tracked).
    pub fn host(&self) -> &HostMapping {
        &self.host
    }

    /// The dirty log.
    #[inline]
    pub fn dirty_log(&self) -> &DirtyLog {
        &self.dirty
    }

    fn page_offset(&self, page: u64) -> Result<u64> {
        if page >= self.page_count() {
            return Err(Error::OutOfBounds {
                name: self.name.to_string(),
                offset: page.saturating_mul(self.page_size),
                len: self.page_size,
                size: self.size,
            });
        }
        Ok(page << self.page_shift)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    #[inline]
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.host.read(offset, buf)
    }

    /// Copies `data` to `offset` and marks the pages dirty.
    #[inline]
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.host.write(offset, data)?;
        self.dirty.mark_range(offset, data.len() as u64)
    }

    /// Sets `len` bytes at `offset` to `byte` and marks the pages dirty.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        self.host.fill(offset, len, byte)?;
        self.dirty.mark_range(offset, len)
    }

    /// Allocates the memory of `len` bytes at `offset` now, faulted in for
    /// writing in one call (see [`HostMapping::populate_write`]): a
    /// receiver that is about to fill fresh RAM saves a page fault per
    /// page. The contents do not change and nothing is marked dirty.
    pub fn populate(&self, offset: u64, len: u64) -> Result<()> {
        self.host.populate_write(offset, len)
    }

    /// Whether `len` bytes at `offset` are zero.
    pub fn is_zero(&self, offset: u64, len: u64) -> Result<bool> {
        self.host.is_zero(offset, len)
    }

    /// Whether page `page` is all zero (migration's zero-page detection).
    pub fn is_zero_page(&self, page: u64) -> Result<bool> {
        self.host.is_zero(self.page_offset(page)?, self.page_size)
    }

    /// The XXH3-64 checksum of `len` bytes at `offset` (see
    /// [`crate::checksum`]).
    pub fn checksum(&self, offset: u64, len: u64) -> Result<u64> {
        self.host.checksum(offset, len)
    }

    /// The checksum of the whole block.
    pub fn checksum_all(&self) -> Result<u64> {
        self.host.checksum(0, self.size)
    }

    /// Fills page `page` with the pattern of `seed` (see [`crate::checksum`])
    /// and marks it dirty.
    pub fn write_page_pattern(&self, page: u64, seed: u64) -> Result<()> {
        self.write_pattern(page, self.page_size, seed)
    }

    /// Writes the first `len` bytes (at most a page) of page `page`'s pattern
    /// for `seed` at the page's start, and marks the page dirty.
    #[inline]
    pub fn write_pattern(&self, page: u64, len: u64, seed: u64) -> Result<()> {
        let offset = self.page_offset(page)?;
        if len > self.page_size {
            return Err(Error::OutOfBounds {
                name: self.name.to_string(),
                offset,
                len,
                size: self.size,
            });
        }
        self.host.write_pattern(offset, len, pattern_base(seed, page))?;
        self.dirty.mark_range(offset, len)
    }

    /// Flushes a shared file backing to disk (`msync`).
    pub fn flush(&self) -> Result<()> {
        self.host.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dirty::DirtyClient;

    #[test]
    fn write_marks_every_logging_client() {
        let b = RamBlock::anonymous("pc.ram", 16 * 4096).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.page_count(), 16);
        assert!(b.dirty_log().log_start(DirtyClient::Migration).is_ok());
        assert!(b.write(4096 * 3 + 4000, &[1u8; 200]).is_ok()); // pages 3 and 4
        assert!(b.write_page_pattern(9, 1).is_ok());
        assert!(b.fill(0, 1, 5).is_ok());
        let pages: Option<Vec<u64>> = b
            .dirty_log()
            .sync(DirtyClient::Migration)
            .ok()
            .map(|p| p.iter().collect());
        assert_eq!(pages, Some(vec![0, 3, 4, 9]));
        assert_eq!(b.is_zero_page(9).ok(), Some(false));
        assert_eq!(b.is_zero_page(10).ok(), Some(true));
        assert!(b.is_zero_page(16).is_err());
        assert!(b.write_pattern(1, 4097, 0).is_err());
        assert!(b.fd().is_none());
    }
}
