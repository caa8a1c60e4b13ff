//! [`save`]: a whole machine state into one stream.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};

use crate::wire::{RamSectionWriter, SectionKind, StreamWriter};

use super::save_set::SaveSet;
use super::sections::{EncodedDevices, RAM_SECTION_ID, write_preamble};
use crate::transport::{FdWriter, Sink};

/// How [`save`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveOptions {
    /// End every section with a footer (QEMU's `send-section-footer`,
    /// on by default; the reader must agree).
    pub footers: bool,
    /// Append the VMDESCRIPTION trailer (QEMU omits it with
    /// `suppress-vmdesc`).
    pub vmdesc: bool,
    /// Send zero pages as zero records (QEMU's `zero-page-detection`
    /// `legacy`, the default) or whole (`none`).
    pub zero_page_detection: bool,
    /// QEMU's `x-ignore-shared`: shared RAM blocks are listed, not sent;
    /// the configuration record says so, and the destination must agree.
    pub ignore_shared: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            footers: true,
            vmdesc: true,
            zero_page_detection: true,
            ignore_shared: false,
        }
    }
}

/// What [`save`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Stream bytes.
    pub bytes: u64,
    /// Guest RAM bytes covered.
    pub ram_bytes: u64,
    /// Zero pages (sent as a flag and one byte).
    pub zero_pages: u64,
    /// Pages sent whole.
    pub normal_pages: u64,
    /// Device sections.
    pub devices: u64,
}

/// Writes the state of `set` to `sink` as one savevm stream (layout in the
/// [module](super) docs). The machine should be paused: pages are read
/// once each, and a page written meanwhile may be saved old or new.
///
/// Every device's state is taken and encoded before the first byte is
/// written, so a device that refuses to save costs nothing. `sink` is
/// written through a 1 MiB buffer and flushed at the end; RAM pages are
/// copied into a staging buffer on their way. [`save_to_fd`] writes the
/// same bytes to a descriptor without that copy.
pub fn save<W: Write>(set: &SaveSet, sink: W, opts: &SaveOptions) -> crate::Result<SaveStats> {
    save_with(set, sink, None, opts)
}

/// [`save`] to a file, pipe, socket or device: the same stream, with the
/// RAM pages handed to the kernel straight from guest memory in gathered
/// writes (`writev(2)`, as QEMU's `QEMUFile` does), so each page is copied
/// once, by the kernel, into the sink. Into `/dev/null` nothing is copied
/// at all. A non-blocking descriptor is waited on with `poll(2)`.
///
/// ```
/// use std::sync::Arc;
/// use vmkit_memory::RamBlock;
/// use vmkit_migration::savevm::{SaveOptions, SaveSet, save, save_to_fd};
///
/// let ram = RamBlock::anonymous("pc.ram", 1 << 20)?;
/// ram.write(0x1000, b"hello")?;
/// let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&ram)], Vec::new());
/// let path = std::env::temp_dir().join(format!("save-doc-{}", std::process::id()));
/// let stats = save_to_fd(&set, std::fs::File::create(&path)?, &SaveOptions::default())?;
/// let mut staged = Vec::new();
/// save(&set, &mut staged, &SaveOptions::default())?;
/// assert_eq!(std::fs::read(&path)?, staged);
/// assert_eq!(stats.bytes, staged.len() as u64);
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_to_fd<F: AsFd>(set: &SaveSet, sink: F, opts: &SaveOptions) -> crate::Result<SaveStats> {
    let fd = sink.as_fd();
    save_with(set, FdWriter(fd), Some(fd), opts)
}

/// [`save_to_fd`] into an opened [`Sink`], committed when the whole stream
/// is written (a file then replaces the one at its path). On any error the
/// sink is dropped uncommitted: a file that was at the path is untouched
/// and no partial file is left.
pub fn save_to_sink(set: &SaveSet, sink: Sink, opts: &SaveOptions) -> crate::Result<SaveStats> {
    let stats = save_to_fd(set, sink.as_fd(), opts)?;
    sink.commit()?;
    Ok(stats)
}

/// [`save`], with RAM pages sent by gathered writes on `direct` (the
/// descriptor `sink` writes to) when there is one.
fn save_with<W: Write>(
    set: &SaveSet,
    sink: W,
    direct: Option<BorrowedFd<'_>>,
    opts: &SaveOptions,
) -> crate::Result<SaveStats> {
    set.check()?;
    let devices = EncodedDevices::take(set)?;
    let mut w = StreamWriter::buffered(sink);
    write_preamble(&mut w, set, opts)?;
    let mut ram = RamSectionWriter::new(set.ram.clone())?
        .with_zero_detection(opts.zero_page_detection)
        .with_ignore_shared(opts.ignore_shared);
    ram.save_setup(&mut w, RAM_SECTION_ID, opts.footers)?;
    ram.begin_section(&mut w, SectionKind::Part, RAM_SECTION_ID)?;
    match direct {
        Some(fd) => ram.write_all_pages_to_fd(&mut w, fd)?,
        None => ram.write_all_pages(&mut w)?,
    }
    ram.end_section(&mut w, RAM_SECTION_ID, opts.footers)?;
    ram.begin_section(&mut w, SectionKind::End, RAM_SECTION_ID)?;
    ram.end_section(&mut w, RAM_SECTION_ID, opts.footers)?;

    let device_count = devices.len() as u64;
    devices.write_tail(&mut w, opts.footers, opts.vmdesc)?;
    w.flush()?;
    let ram_stats = ram.stats();
    Ok(SaveStats {
        bytes: w.offset(),
        ram_bytes: ram.total_bytes(),
        zero_pages: ram_stats.zero_pages,
        normal_pages: ram_stats.normal_pages,
        devices: device_count,
    })
}
