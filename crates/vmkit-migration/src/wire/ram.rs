//! The RAM live section (idstr `"ram"`, instance 0, version 4).
//!
//! Payload records start with a be64 whose low 12 bits are flags and whose
//! high bits are a page offset inside a block (or the total RAM size for
//! MEM_SIZE). Pages are cut into 4096-byte target pages whatever the
//! block's own dirty-tracking page size.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use vmkit_memory::{DirtyPages, RamBlock};

use super::format::{
    RAM_FLAGS_LIMIT, RAM_IDSTR, RAM_VERSION, RamFlag, SectionKind, TARGET_PAGE_FLAG_MASK, TARGET_PAGE_SIZE,
};
use super::section::{SectionHeader, write_footer};
use super::stream::SectionBodyHandler;
use super::writer::WRITE_BUFFER;
use super::{StreamReader, StreamWriter, WireError, WireResult};
use crate::transport::{BATCH_BYTES, BATCH_RECORDS, GatherList};

const PAGE: usize = TARGET_PAGE_SIZE as usize;
/// Size of the encoder's staging buffer: [`WRITE_BUFFER`] plus the largest
/// page record (a header with a 255-byte name, and the page). The stage is
/// sent when the next record does not fit, so each such write is larger
/// than the buffer of [`StreamWriter::buffered`] and goes straight to the
/// sink instead of being copied into that buffer first.
const STAGE: usize = WRITE_BUFFER + 9 + 255 + PAGE;

/// Cap on the number of blocks a MEM_SIZE list may announce (summary mode).
pub const MAX_RAM_BLOCKS: usize = 4096;

/// The address of a RAM block in its memory region, as MEM_SIZE carries it
/// with `x-ignore-shared`: vmkit's blocks are memory-backend regions mapped
/// into the address space through aliases, so this is 0, as for QEMU's
/// backends.
pub const BLOCK_REGION_ADDR: u64 = 0;

fn is_zero(buf: &[u8]) -> bool {
    // Word-wise OR over fixed chunks: the compiler vectorises this.
    buf.chunks_exact(64).all(|c| {
        c.chunks_exact(8).fold(0u64, |acc, w| {
            acc | u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
        }) == 0
    }) && buf.chunks_exact(64).remainder().iter().all(|&b| b == 0)
}

fn mem_err(offset: u64, block: &RamBlock) -> impl FnOnce(vmkit_memory::Error) -> WireError + '_ {
    move |source| WireError::Memory {
        offset,
        block: block.name().to_owned(),
        source: Box::new(source),
    }
}

/// The be64 that opens a page record: `addr` with ZERO or PAGE, and
/// CONTINUE when the record before was of the same block (which `last_block`
/// then becomes).
fn record_word(last_block: &mut Option<usize>, index: usize, addr: u64, zero: bool) -> u64 {
    let mut v = addr | if zero { RamFlag::Zero.bit() } else { RamFlag::Page.bit() };
    if *last_block == Some(index) {
        v |= RamFlag::Continue.bit();
    }
    *last_block = Some(index);
    v
}

/// The offset of page `page` (in the block's own page size) of `block`,
/// or an error if the block has no such page.
fn block_page_start<W: Write>(w: &StreamWriter<W>, block: &RamBlock, page: u64) -> WireResult<u64> {
    page.checked_shl(block.page_shift())
        .filter(|_| page < block.page_count())
        .ok_or_else(|| WireError::PageOutOfRange {
            offset: w.offset(),
            block: block.name().to_owned(),
            addr: page.saturating_mul(block.page_size()),
            len: block.page_size(),
        })
}

/// Pages written by a [`RamSectionWriter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RamWriteStats {
    /// Zero pages (9 + name bytes each at most).
    pub zero_pages: u64,
    /// Raw pages.
    pub normal_pages: u64,
}

/// Encodes RAM sections from a set of source blocks.
///
/// Use [`save_setup`](Self::save_setup) for the START section, then for
/// each PART/END: [`begin_section`](Self::begin_section), any of the
/// `write_*pages` methods, [`end_section`](Self::end_section). Wrap the sink
/// with [`StreamWriter::buffered`] (other records are small); page records
/// are staged and written 1 MiB at a time, and every public method leaves
/// nothing staged, so it can be mixed freely with other writes.
#[derive(Debug)]
pub struct RamSectionWriter {
    blocks: Vec<Arc<RamBlock>>,
    last_block: Option<usize>,
    /// Page records waiting for the sink: `stage[..used]`.
    stage: Vec<u8>,
    used: usize,
    stats: RamWriteStats,
    /// Whether zero pages are sent as zero records (QEMU's
    /// `zero-page-detection` `legacy`) or whole like any other (`none`).
    detect_zero: bool,
    /// With QEMU's `x-ignore-shared`: MEM_SIZE carries each block's
    /// address, and `ignored[i]` (block `i` is shared memory another
    /// process maps too) means its pages are never sent.
    ignore_shared: bool,
    ignored: Vec<bool>,
}

impl RamSectionWriter {
    /// A writer over `blocks` (sent in this order). Each block's length must
    /// be a multiple of the 4096-byte target page and its name at most 255
    /// bytes.
    pub fn new(blocks: Vec<Arc<RamBlock>>) -> WireResult<RamSectionWriter> {
        for b in &blocks {
            if b.used_length() % TARGET_PAGE_SIZE != 0 || b.name().len() > 255 {
                return Err(WireError::Unsupported {
                    offset: 0,
                    what: format!(
                        "RAM block '{}' of {:#x} bytes (length must be a multiple of {TARGET_PAGE_SIZE}, name at most 255 bytes)",
                        b.name(),
                        b.used_length()
                    ),
                });
            }
        }
        let blocks_len = blocks.len();
        Ok(RamSectionWriter {
            blocks,
            last_block: None,
            stage: vec![0u8; STAGE],
            used: 0,
            stats: RamWriteStats::default(),
            detect_zero: true,
            ignore_shared: false,
            ignored: vec![false; blocks_len],
        })
    }

    /// QEMU's `x-ignore-shared`: shared blocks (a memfd, a `share=on`
    /// file), which the destination maps itself, are listed but their
    /// pages are not sent; MEM_SIZE then carries each block's address in
    /// its memory region (0: vmkit maps RAM blocks through aliases, as
    /// QEMU maps its memory backends).
    pub fn with_ignore_shared(mut self, ignore_shared: bool) -> RamSectionWriter {
        self.ignore_shared = ignore_shared;
        self.ignored = self.blocks.iter().map(|b| ignore_shared && b.fd().is_some()).collect();
        self
    }

    /// Whether block `index`'s pages are left out (`x-ignore-shared`).
    pub fn is_ignored(&self, index: usize) -> bool {
        self.ignored.get(index).copied().unwrap_or(false)
    }

    /// Guest RAM bytes whose pages are sent (every block's but the ignored).
    pub fn migrated_bytes(&self) -> u64 {
        self.blocks
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_ignored(*i))
            .map(|(_, b)| b.used_length())
            .sum()
    }

    /// Sends zero pages as zero records (`true`, the default, QEMU's
    /// `zero-page-detection=legacy`) or as whole pages (`false`, `none`:
    /// no page is scanned, which costs bandwidth and saves CPU).
    pub fn with_zero_detection(mut self, detect_zero: bool) -> RamSectionWriter {
        self.detect_zero = detect_zero;
        self
    }

    /// The source blocks.
    pub fn blocks(&self) -> &[Arc<RamBlock>] {
        &self.blocks
    }

    /// Pages written so far.
    pub fn stats(&self) -> RamWriteStats {
        self.stats
    }

    /// The summed block lengths (MEM_SIZE's total).
    pub fn total_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.used_length()).sum()
    }

    /// Writes a section header (START: idstr `ram`, instance 0, version 4).
    /// Each section restarts the CONTINUE chain, so every section can be
    /// decoded on its own.
    pub fn begin_section<W: Write>(
        &mut self,
        w: &mut StreamWriter<W>,
        kind: SectionKind,
        section_id: u32,
    ) -> WireResult<()> {
        self.last_block = None;
        SectionHeader {
            kind,
            section_id,
            idstr: RAM_IDSTR.into(),
            instance_id: 0,
            version_id: RAM_VERSION,
        }
        .write(w)
    }

    /// Writes EOS and (if `footer`) the section footer.
    pub fn end_section<W: Write>(&mut self, w: &mut StreamWriter<W>, section_id: u32, footer: bool) -> WireResult<()> {
        w.put_be64(RamFlag::Eos.bit())?;
        if footer {
            write_footer(w, section_id)?;
        }
        Ok(())
    }

    /// The MEM_SIZE record: total | MEM_SIZE, then per block u8 len, name,
    /// be64 used length.
    pub fn write_mem_size<W: Write>(&mut self, w: &mut StreamWriter<W>) -> WireResult<()> {
        w.put_be64(self.total_bytes() | RamFlag::MemSize.bit())?;
        for b in &self.blocks {
            w.put_name(b.name(), "RAM block name")?;
            w.put_be64(b.used_length())?;
            if self.ignore_shared {
                w.put_be64(BLOCK_REGION_ADDR)?;
            }
        }
        Ok(())
    }

    /// The whole START section: header, MEM_SIZE, EOS, footer.
    pub fn save_setup<W: Write>(&mut self, w: &mut StreamWriter<W>, section_id: u32, footer: bool) -> WireResult<()> {
        self.begin_section(w, SectionKind::Start, section_id)?;
        self.write_mem_size(w)?;
        self.end_section(w, section_id, footer)
    }

    /// Writes one 4096-byte target page at `addr` of block `index`: a zero
    /// record if the page reads as zero, else a raw page. The page is read
    /// once, so the zero test and the bytes sent see the same snapshot.
    pub fn write_target_page<W: Write>(&mut self, w: &mut StreamWriter<W>, index: usize, addr: u64) -> WireResult<()> {
        let staged = self.stage_page(w, index, addr);
        let flushed = self.flush_stage(w);
        staged.and(flushed)
    }

    /// Sends the staged records.
    fn flush_stage<W: Write>(&mut self, w: &mut StreamWriter<W>) -> WireResult<()> {
        if self.used > 0 {
            let used = std::mem::take(&mut self.used);
            w.put_bytes(&self.stage[..used])?;
        }
        Ok(())
    }

    /// Builds one page record in the staging buffer: the page is copied
    /// from guest memory straight into its place after the record header,
    /// tested for zero there, and the header written in front of it (a
    /// zero page then shrinks to its header and a `0` byte). The staging
    /// buffer goes to the sink in writes larger than the 1 MiB `BufWriter`
    /// of [`StreamWriter::buffered`], which bypass it: one copy from guest
    /// memory, one to the sink.
    fn stage_page<W: Write>(&mut self, w: &mut StreamWriter<W>, index: usize, addr: u64) -> WireResult<()> {
        let Some(block) = self.blocks.get(index) else {
            return Err(WireError::Unsupported {
                offset: w.offset() + self.used as u64,
                what: format!("RAM block index {index}"),
            });
        };
        if addr % TARGET_PAGE_SIZE != 0 {
            return Err(WireError::PageOutOfRange {
                offset: w.offset() + self.used as u64,
                block: block.name().to_owned(),
                addr,
                len: TARGET_PAGE_SIZE,
            });
        }
        let cont = self.last_block == Some(index);
        let name = block.name().as_bytes();
        let hdr = if cont { 8 } else { 9 + name.len() };
        if self.used + hdr + PAGE > self.stage.len() {
            let used = std::mem::take(&mut self.used);
            w.put_bytes(&self.stage[..used])?;
        }
        let at = self.used;
        let data = at + hdr;
        // Zero test on guest memory first (no copy for zero pages), then
        // the copy, tested again so the record matches the bytes copied. A
        // page the guest changes meanwhile is dirty again and resent later.
        let err_at = w.offset() + at as u64;
        let mut zero = self.detect_zero && block.is_zero(addr, TARGET_PAGE_SIZE).map_err(mem_err(err_at, block))?;
        if !zero {
            let page = &mut self.stage[data..data + PAGE];
            block.read(addr, page).map_err(mem_err(err_at, block))?;
            zero = self.detect_zero && is_zero(page);
        }
        let word = record_word(&mut self.last_block, index, addr, zero);
        if !cont {
            // `new` checked the name fits a u8 length.
            self.stage[at + 8] = name.len() as u8;
            self.stage[at + 9..data].copy_from_slice(name);
        }
        self.stage[at..at + 8].copy_from_slice(&word.to_be_bytes());
        if zero {
            self.stage[data] = 0;
            self.used = data + 1;
            self.stats.zero_pages += 1;
        } else {
            self.used = data + PAGE;
            self.stats.normal_pages += 1;
        }
        Ok(())
    }

    /// Writes every page of every block straight from guest memory into
    /// `fd`, the descriptor `w` writes to: each batch of page records goes
    /// out in one gathered `writev(2)` whose segments are the record headers
    /// and the guest pages themselves ([`GatherList`]), so a page is copied
    /// only by the kernel, once, as QEMU's `QEMUFile` sends it (and not at
    /// all into `/dev/null`). Each write carries up to the transport's
    /// [`BATCH_BYTES`] or [`BATCH_RECORDS`] page records. The bytes are
    /// those of [`write_all_pages`](Self::write_all_pages). A failed write
    /// reports the stream offset of the first byte that did not go out.
    ///
    /// `w` is flushed first and counts the bytes written here; it must
    /// write to `fd` (possibly through a buffer), or the stream interleaves
    /// wrongly.
    pub fn write_all_pages_to_fd<W: Write>(&mut self, w: &mut StreamWriter<W>, fd: BorrowedFd<'_>) -> WireResult<()> {
        for index in 0..self.blocks.len() {
            if self.is_ignored(index) {
                continue;
            }
            let len = self.blocks[index].used_length();
            self.write_target_pages_to_fd(w, fd, index, (0..len).step_by(PAGE))?;
        }
        Ok(())
    }

    /// [`write_block_pages`](Self::write_block_pages) by gathered writes
    /// into `fd`, as [`write_all_pages_to_fd`](Self::write_all_pages_to_fd)
    /// sends: the same bytes, each page copied once, by the kernel.
    pub fn write_block_pages_to_fd<W: Write, I: IntoIterator<Item = u64>>(
        &mut self,
        w: &mut StreamWriter<W>,
        fd: BorrowedFd<'_>,
        index: usize,
        pages: I,
    ) -> WireResult<()> {
        let block = self.block(w, index)?;
        let mut addrs = Vec::new();
        for page in pages {
            let start = block_page_start(w, &block, page)?;
            if block.page_size() >= TARGET_PAGE_SIZE {
                addrs.extend((start..start + block.page_size()).step_by(PAGE));
            } else {
                let t = start & !TARGET_PAGE_FLAG_MASK;
                if addrs.last() != Some(&t) {
                    addrs.push(t);
                }
            }
        }
        self.write_target_pages_to_fd(w, fd, index, addrs)
    }

    /// Writes the target pages at `addrs` (page-aligned offsets inside
    /// block `index`) by gathered writes into `fd`, in batches of up to
    /// [`BATCH_BYTES`] or [`BATCH_RECORDS`] records.
    fn write_target_pages_to_fd<W: Write, I: IntoIterator<Item = u64>>(
        &mut self,
        w: &mut StreamWriter<W>,
        fd: BorrowedFd<'_>,
        index: usize,
        addrs: I,
    ) -> WireResult<()> {
        // Every public method leaves the stage empty.
        debug_assert_eq!(self.used, 0);
        w.flush()?;
        let block = self.block(w, index)?;
        let mut addrs = addrs.into_iter().peekable();
        // Record headers of one batch, and per record where its header ends
        // and which page (if not zero) follows it.
        let mut headers: Vec<u8> = Vec::with_capacity(BATCH_RECORDS * 10 + 264);
        let mut records: Vec<(usize, Option<u64>)> = Vec::with_capacity(BATCH_RECORDS);
        while addrs.peek().is_some() {
            headers.clear();
            records.clear();
            let mut bytes = 0;
            while records.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
                let Some(addr) = addrs.next() else { break };
                let err_at = w.offset() + bytes as u64;
                if addr % TARGET_PAGE_SIZE != 0 || addr >= block.used_length() {
                    return Err(WireError::PageOutOfRange {
                        offset: err_at,
                        block: block.name().to_owned(),
                        addr,
                        len: TARGET_PAGE_SIZE,
                    });
                }
                let zero =
                    self.detect_zero && block.is_zero(addr, TARGET_PAGE_SIZE).map_err(mem_err(err_at, &block))?;
                let start = headers.len();
                self.push_header(&mut headers, index, addr, zero);
                bytes += headers.len() - start;
                if zero {
                    self.stats.zero_pages += 1;
                    records.push((headers.len(), None));
                } else {
                    self.stats.normal_pages += 1;
                    records.push((headers.len(), Some(addr)));
                    bytes += PAGE;
                }
            }
            let mut list = GatherList::with_capacity(2 * records.len());
            let mut from = 0;
            for &(end, page) in &records {
                list.push_bytes(&headers[from..end]);
                from = end;
                if let Some(page) = page {
                    list.push_host(block.host(), page, TARGET_PAGE_SIZE)
                        .map_err(mem_err(w.offset(), &block))?;
                }
            }
            let sent = list.write_to(fd).map_err(|e| WireError::Io {
                offset: w.offset() + e.written as u64,
                source: e.error,
            })?;
            w.note_written(sent as u64);
        }
        Ok(())
    }

    /// Block `index`, or an error at the writer's offset.
    fn block<W: Write>(&self, w: &StreamWriter<W>, index: usize) -> WireResult<Arc<RamBlock>> {
        self.blocks.get(index).cloned().ok_or_else(|| WireError::Unsupported {
            offset: w.offset(),
            what: format!("RAM block index {index}"),
        })
    }

    /// Appends the header of the record for the page at `addr` of block
    /// `index` (and, for a zero page, its fill byte): the be64 address and
    /// flags, then the block name unless the record continues the block of
    /// the one before.
    fn push_header(&mut self, out: &mut Vec<u8>, index: usize, addr: u64, zero: bool) {
        let cont = self.last_block == Some(index);
        out.extend_from_slice(&record_word(&mut self.last_block, index, addr, zero).to_be_bytes());
        if !cont {
            let name = self.blocks[index].name().as_bytes();
            // `new` checked the name fits a u8 length.
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
        if zero {
            out.push(0);
        }
    }

    /// Writes the given pages of block `index`, numbered in the *block's*
    /// page size (as [`DirtyPages`] are), ascending.
    pub fn write_block_pages<W: Write, I: IntoIterator<Item = u64>>(
        &mut self,
        w: &mut StreamWriter<W>,
        index: usize,
        pages: I,
    ) -> WireResult<()> {
        let block = self.block(w, index)?;
        let page_size = block.page_size();
        let mut last_target: Option<u64> = None;
        for page in pages {
            let start = block_page_start(w, &block, page)?;
            if page_size >= TARGET_PAGE_SIZE {
                let mut a = start;
                while a < start + page_size {
                    self.stage_page(w, index, a)?;
                    a += TARGET_PAGE_SIZE;
                }
            } else {
                let t = start & !TARGET_PAGE_FLAG_MASK;
                if last_target != Some(t) {
                    self.stage_page(w, index, t)?;
                    last_target = Some(t);
                }
            }
        }
        self.flush_stage(w)
    }

    /// Writes every page of every block (a first pass).
    pub fn write_all_pages<W: Write>(&mut self, w: &mut StreamWriter<W>) -> WireResult<()> {
        for index in 0..self.blocks.len() {
            if self.is_ignored(index) {
                continue;
            }
            let len = self.blocks[index].used_length();
            let mut a = 0;
            while a < len {
                self.stage_page(w, index, a)?;
                a += TARGET_PAGE_SIZE;
            }
        }
        self.flush_stage(w)
    }

    /// Writes the dirty pages of block `index`.
    pub fn write_dirty<W: Write>(
        &mut self,
        w: &mut StreamWriter<W>,
        index: usize,
        dirty: &DirtyPages,
    ) -> WireResult<()> {
        self.write_block_pages(w, index, dirty.iter())
    }
}

/// How many pages the run of page records starting at `addr` holds, as
/// far as `ahead` shows it: `ahead` starts with that page's payload, and
/// each record after it that is a full page of the same block
/// (CONTINUE | PAGE) at the next address, with its header whole in
/// `ahead`, extends the run, up to the block's end `end`.
fn page_run(ahead: &[u8], addr: u64, end: u64) -> u64 {
    let mut pages = 1;
    let mut next = addr.saturating_add(TARGET_PAGE_SIZE);
    let mut at = PAGE;
    while next < end {
        let Some(word) = ahead.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            break;
        };
        if u64::from_be_bytes(word) != next | RamFlag::Continue.bit() | RamFlag::Page.bit() {
            break;
        }
        pages += 1;
        next += TARGET_PAGE_SIZE;
        at += 8 + PAGE;
    }
    pages
}

/// What a decoder saw of one block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RamBlockSummary {
    /// The block name.
    pub name: String,
    /// Its length (from MEM_SIZE, or the destination's).
    pub length: u64,
    /// Zero-page records.
    pub zero_pages: u64,
    /// Raw-page records.
    pub normal_pages: u64,
    /// Payload bytes of its page records (headers excluded).
    pub bytes: u64,
}

/// What a decoder saw of the RAM sections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RamSummary {
    /// The MEM_SIZE total (0 if none was seen).
    pub total_bytes: u64,
    /// Per block, in MEM_SIZE order (or the destination's order).
    pub blocks: Vec<RamBlockSummary>,
    /// RAM section payloads decoded.
    pub sections: u64,
    /// MULTIFD_FLUSH markers seen.
    pub multifd_flushes: u64,
}

/// Decodes RAM section payloads, either applying them to destination blocks
/// ([`RamSectionReader::apply_to`]) or only counting
/// ([`RamSectionReader::summarise`]).
#[derive(Debug)]
pub struct RamSectionReader {
    /// Destination blocks: `dest[i]` receives the pages of
    /// `summary.blocks[i]`. Blocks past its end (discard mode) are decoded
    /// and dropped.
    dest: Option<Vec<Arc<RamBlock>>>,
    /// Apply mode: accept MEM_SIZE blocks missing from `dest`, decoding
    /// and discarding their pages.
    discard_unknown: bool,
    by_name: HashMap<String, usize>,
    summary: RamSummary,
    /// Apply mode: per destination block, one bit per target page that a
    /// record has loaded (so a stream that sends one page twice and
    /// another never is told apart from a complete one).
    received: Vec<Vec<u64>>,
    /// Apply mode: the destination block and offset up to which pages
    /// arriving for the first time were populated ahead of their copy.
    populated: Option<(usize, u64)>,
    last_block: Option<usize>,
    buf: Vec<u8>,
    /// The stream was written with `x-ignore-shared`: MEM_SIZE entries
    /// carry a block address, and shared destination blocks get no pages.
    ignore_shared: bool,
}

impl RamSectionReader {
    /// A decoder writing into `blocks`, found by name. Every block the
    /// stream's MEM_SIZE list announces must be among them, with the same
    /// length.
    pub fn apply_to(blocks: Vec<Arc<RamBlock>>) -> RamSectionReader {
        RamSectionReader::apply(blocks, false)
    }

    /// A decoder writing into `blocks`, found by name, that decodes and
    /// discards the pages of blocks the MEM_SIZE list announces but
    /// `blocks` lacks (a destination interested in some blocks only, e.g.
    /// a real QEMU's `pc.ram` but not its ROMs). Blocks given must still
    /// match the announced length, and a page record naming a block
    /// MEM_SIZE did not announce is still an error. The summary lists
    /// `blocks` first, then the discarded blocks in MEM_SIZE order.
    pub fn apply_to_some(blocks: Vec<Arc<RamBlock>>) -> RamSectionReader {
        RamSectionReader::apply(blocks, true)
    }

    fn apply(blocks: Vec<Arc<RamBlock>>, discard_unknown: bool) -> RamSectionReader {
        let mut by_name = HashMap::new();
        let mut summary = RamSummary::default();
        for (i, b) in blocks.iter().enumerate() {
            by_name.insert(b.name().to_owned(), i);
            summary.blocks.push(RamBlockSummary {
                name: b.name().to_owned(),
                length: b.used_length(),
                ..RamBlockSummary::default()
            });
        }
        let received = blocks
            .iter()
            .map(|b| vec![0u64; (b.used_length() / TARGET_PAGE_SIZE).div_ceil(64) as usize])
            .collect();
        RamSectionReader {
            dest: Some(blocks),
            discard_unknown,
            by_name,
            summary,
            received,
            populated: None,
            last_block: None,
            buf: vec![0u8; PAGE],
            ignore_shared: false,
        }
    }

    /// A decoder that writes nowhere and only counts; blocks come from the
    /// stream's MEM_SIZE list.
    pub fn summarise() -> RamSectionReader {
        RamSectionReader {
            dest: None,
            discard_unknown: false,
            by_name: HashMap::new(),
            summary: RamSummary::default(),
            received: Vec::new(),
            populated: None,
            last_block: None,
            buf: vec![0u8; PAGE],
            ignore_shared: false,
        }
    }

    /// Reads a stream written with QEMU's `x-ignore-shared` (its
    /// configuration lists the capability): each MEM_SIZE entry carries the
    /// block's address, and a shared destination block (one mapped from the
    /// same memfd or file as the source's) is taken as complete without
    /// pages, once its address matches.
    pub fn set_ignore_shared(&mut self, ignore_shared: bool) {
        self.ignore_shared = ignore_shared;
    }

    /// What was decoded so far.
    pub fn summary(&self) -> &RamSummary {
        &self.summary
    }

    /// Consumes the decoder, returning its summary.
    pub fn into_summary(self) -> RamSummary {
        self.summary
    }

    /// Apply mode: the offset of the first target page of destination
    /// block `index` that no record has loaded, or `None` if every page
    /// has been (or `index` is not a destination block).
    pub fn first_missing_page(&self, index: usize) -> Option<u64> {
        let bits = self.received.get(index)?;
        let pages = self.dest.as_ref()?.get(index)?.used_length() / TARGET_PAGE_SIZE;
        let (word, w) = bits.iter().enumerate().find(|(_, w)| **w != u64::MAX)?;
        let page = word as u64 * 64 + u64::from(w.trailing_ones());
        (page < pages).then_some(page * TARGET_PAGE_SIZE)
    }

    /// Whether a record has loaded the page at `addr` of block `index`.
    fn was_received(&self, index: usize, addr: u64) -> bool {
        let page = addr / TARGET_PAGE_SIZE;
        self.received
            .get(index)
            .and_then(|b| b.get((page / 64) as usize))
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Notes that the page at `addr` of block `index` was loaded.
    fn mark_received(&mut self, index: usize, addr: u64) {
        let page = addr / TARGET_PAGE_SIZE;
        if let Some(w) = self
            .received
            .get_mut(index)
            .and_then(|b| b.get_mut((page / 64) as usize))
        {
            *w |= 1 << (page % 64);
        }
    }

    /// Checks a RAM section header: idstr `ram`, instance 0, and (for
    /// START/FULL) version 4.
    pub fn check_header(header: &SectionHeader, offset: u64) -> WireResult<()> {
        if header.idstr != RAM_IDSTR || header.instance_id != 0 || header.kind == SectionKind::Full {
            return Err(WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            });
        }
        if header.kind == SectionKind::Start && header.version_id != RAM_VERSION {
            return Err(WireError::BadSectionVersion {
                offset,
                idstr: header.idstr.clone(),
                version_id: header.version_id,
                expected: RAM_VERSION,
            });
        }
        Ok(())
    }

    fn block_for<R: Read>(&mut self, r: &mut StreamReader<R>, cont: bool, at: u64) -> WireResult<usize> {
        if cont {
            return self.last_block.ok_or(WireError::ContinueWithoutBlock { offset: at });
        }
        let name_at = r.offset();
        let name = r.read_name("RAM block name")?;
        let index = *self
            .by_name
            .get(&name)
            .ok_or(WireError::UnknownRamBlock { offset: name_at, name })?;
        self.last_block = Some(index);
        Ok(index)
    }

    fn check_page(&self, index: usize, addr: u64, at: u64) -> WireResult<()> {
        let b = self.summary.blocks.get(index);
        let length = b.map_or(0, |b| b.length);
        if addr.checked_add(TARGET_PAGE_SIZE).is_none_or(|end| end > length) {
            return Err(WireError::PageOutOfRange {
                offset: at,
                block: b.map(|b| b.name.clone()).unwrap_or_default(),
                addr,
                len: TARGET_PAGE_SIZE,
            });
        }
        Ok(())
    }

    fn read_mem_size<R: Read>(&mut self, r: &mut StreamReader<R>, total: u64, at: u64) -> WireResult<()> {
        self.summary.total_bytes = total;
        let mut remaining = total;
        while remaining > 0 {
            let entry_at = r.offset();
            let name = r.read_name("RAM block name (MEM_SIZE)")?;
            let length = r.read_be64("RAM block length (MEM_SIZE)")?;
            if length == 0 || length > remaining {
                return Err(WireError::Malformed {
                    offset: entry_at,
                    reason: format!(
                        "RAM block '{name}' length {length:#x} does not fit the announced total {total:#x} (record at {at})"
                    ),
                });
            }
            remaining -= length;
            let region_addr = if self.ignore_shared {
                Some(r.read_be64("RAM block address (MEM_SIZE, x-ignore-shared)")?)
            } else {
                None
            };
            match (&self.dest, self.by_name.get(&name).copied()) {
                (Some(dest), Some(i)) if i < dest.len() => {
                    let expected = dest[i].used_length();
                    if expected != length {
                        return Err(WireError::RamBlockLength {
                            offset: entry_at,
                            name,
                            expected,
                            found: length,
                        });
                    }
                    if let Some(addr) = region_addr
                        && dest[i].fd().is_some()
                    {
                        if addr != BLOCK_REGION_ADDR {
                            return Err(WireError::Malformed {
                                offset: entry_at,
                                reason: format!(
                                    "Mismatched GPAs for block {name} {BLOCK_REGION_ADDR} != {addr} (x-ignore-shared)"
                                ),
                            });
                        }
                        // Shared with the source: its pages are already here.
                        if let Some(bits) = self.received.get_mut(i) {
                            bits.fill(u64::MAX);
                        }
                    }
                }
                (Some(_), _) if !self.discard_unknown => {
                    return Err(WireError::UnknownRamBlock { offset: entry_at, name });
                }
                // Seen before (summary mode, or a block being discarded):
                // a repeated MEM_SIZE (a second START) must agree.
                (_, Some(i)) => {
                    if self.summary.blocks.get(i).map(|b| b.length) != Some(length) {
                        return Err(WireError::Malformed {
                            offset: entry_at,
                            reason: format!("RAM block '{name}' announced twice with different lengths"),
                        });
                    }
                }
                // New (summary mode, or a block to discard, whose summary
                // entry then lies past the destination blocks).
                (_, None) => {
                    if self.summary.blocks.len() >= MAX_RAM_BLOCKS {
                        return Err(WireError::BadLength {
                            offset: entry_at,
                            what: "RAM block count (MEM_SIZE)".into(),
                            len: self.summary.blocks.len() as u64 + 1,
                            max: MAX_RAM_BLOCKS as u64,
                        });
                    }
                    self.by_name.insert(name.clone(), self.summary.blocks.len());
                    self.summary.blocks.push(RamBlockSummary {
                        name,
                        length,
                        ..RamBlockSummary::default()
                    });
                }
            }
        }
        Ok(())
    }

    /// Decodes one section's payload up to and including its EOS record.
    pub fn read_payload<R: Read>(&mut self, r: &mut StreamReader<R>) -> WireResult<()> {
        loop {
            let at = r.offset();
            let v = r.read_be64("RAM record")?;
            let flags = v & TARGET_PAGE_FLAG_MASK;
            let addr = v & !TARGET_PAGE_FLAG_MASK;
            if flags >= RAM_FLAGS_LIMIT {
                return Err(WireError::BadRamFlags { offset: at, flags });
            }
            let cont = flags & RamFlag::Continue.bit() != 0;
            match RamFlag::try_from(flags & !RamFlag::Continue.bit()) {
                Ok(RamFlag::MemSize) if !cont => self.read_mem_size(r, addr, at)?,
                Ok(RamFlag::Zero) => {
                    let index = self.block_for(r, cont, at)?;
                    self.check_page(index, addr, at)?;
                    let fill_at = r.offset();
                    let fill = r.read_u8("zero page fill byte")?;
                    if fill != 0 {
                        return Err(WireError::BadZeroByte {
                            offset: fill_at,
                            found: fill,
                        });
                    }
                    if let Some(block) = self.dest.as_ref().and_then(|d| d.get(index)) {
                        if !block.is_zero(addr, TARGET_PAGE_SIZE).map_err(mem_err(at, block))? {
                            block.fill(addr, TARGET_PAGE_SIZE, 0).map_err(mem_err(at, block))?;
                        }
                    }
                    self.mark_received(index, addr);
                    if let Some(s) = self.summary.blocks.get_mut(index) {
                        s.zero_pages += 1;
                        s.bytes += 1;
                    }
                }
                Ok(RamFlag::Page) => {
                    let index = self.block_for(r, cont, at)?;
                    self.check_page(index, addr, at)?;
                    // From the reader's buffer into guest memory in one
                    // copy where the reader lends its buffer out.
                    let dest = self.dest.as_ref().and_then(|d| d.get(index));
                    if let Some(block) = dest {
                        // A page arriving for the first time (a fresh
                        // destination's untouched RAM): fault in the run of
                        // page records buffered behind it in one call, rather
                        // than one fault per page as each is copied. Only
                        // pages that carry data: zero pages stay unallocated.
                        let ahead = self.populated.is_none_or(|(i, end)| i != index || addr >= end);
                        if ahead && !self.was_received(index, addr) {
                            if let Some(buffered) = r.lookahead()? {
                                let len = page_run(buffered, addr, block.used_length()) * TARGET_PAGE_SIZE;
                                // A hint: the copy faults the pages in anyway.
                                let _ = block.populate(addr, len);
                                self.populated = Some((index, addr + len));
                            }
                        }
                        r.read_with(&mut self.buf, "RAM page", |page| block.write(addr, page))?
                            .map_err(mem_err(at, block))?;
                    } else {
                        r.read_into(&mut self.buf, "RAM page")?;
                    }
                    self.mark_received(index, addr);
                    if let Some(s) = self.summary.blocks.get_mut(index) {
                        s.normal_pages += 1;
                        s.bytes += TARGET_PAGE_SIZE;
                    }
                }
                Ok(RamFlag::Eos) if !cont && addr == 0 => {
                    self.summary.sections += 1;
                    return Ok(());
                }
                Ok(RamFlag::MultifdFlush) if !cont && addr == 0 => self.summary.multifd_flushes += 1,
                Ok(RamFlag::Xbzrle) => {
                    return Err(WireError::Unsupported {
                        offset: at,
                        what: "XBZRLE-encoded RAM page".into(),
                    });
                }
                _ => return Err(WireError::BadRamFlags { offset: at, flags }),
            }
        }
    }
}

impl<R: Read> SectionBodyHandler<R> for RamSectionReader {
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<R>) -> crate::Result<()> {
        RamSectionReader::check_header(header, offset)?;
        self.read_payload(r)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` payloads, each followed by the header of a page record.
    fn records(headers: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for h in headers {
            out.extend_from_slice(&[7u8; PAGE]);
            out.extend_from_slice(&h.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_page_run_follows_continued_full_pages_at_the_next_addresses() {
        let p = RamFlag::Page.bit() | RamFlag::Continue.bit();
        let z = RamFlag::Zero.bit() | RamFlag::Continue.bit();
        const A: u64 = 0x10_000;
        const P: u64 = TARGET_PAGE_SIZE;
        // Three more pages in a row, then a zero page: four.
        let ahead = records(&[(A + P) | p, (A + 2 * P) | p, (A + 3 * P) | p, (A + 4 * P) | z]);
        assert_eq!(page_run(&ahead, A, 1 << 30), 4);
        // A gap in the addresses ends it; so does the block's end.
        assert_eq!(page_run(&records(&[(A + 2 * P) | p]), A, 1 << 30), 1);
        assert_eq!(page_run(&ahead, A, A + 2 * P), 2);
        // A record naming its block (no CONTINUE) ends it, and so does a
        // header cut off by the end of the buffer.
        assert_eq!(page_run(&records(&[(A + P) | RamFlag::Page.bit()]), A, 1 << 30), 1);
        let cut = records(&[(A + P) | p]);
        assert_eq!(page_run(&cut[..PAGE + 7], A, 1 << 30), 1);
        assert_eq!(page_run(&[], A, 1 << 30), 1);
    }
}
