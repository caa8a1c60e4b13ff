//! Conformance of MMIO dispatch with QEMU.
//!
//! Every access size (1, 2, 4, 8) at every offset 0..16 of a 32-byte MMIO
//! region, for every combination of access constraints, through
//! `AddressSpace::read_sized` / `write_sized`, and byte-range transfers
//! (`AddressSpace::read` / `write`, lengths 1..=24 at offsets 0..8), compared
//! with a model of QEMU written here from QEMU's algorithm — it shares no
//! code with the crate's dispatch:
//!
//! - validity: `memory_region_access_valid` (without `accepts`);
//! - splitting and widening: `access_with_adjusted_size` with the signed
//!   shifts of `memory_region_shift_{read,write}_access`;
//! - DMA pieces: `memory_access_size` (bounded by `valid.max`, by the address's
//!   alignment unless `impl.unaligned` — never set here — and rounded down to
//!   a power of two), each piece byte-swapped by `adjust_endianness` when the
//!   device is big-endian (QEMU dispatches DMA pieces host-endian, which on
//!   the little-endian hosts we run on is little-endian).
//!
//! The device records every callback, so the exact sequence of offsets, sizes
//! and values is compared, not only the result.
//!
//! The rest of the file covers accesses straddling a region's end,
//! unassigned accesses, strict mode, read-only memory and memory listeners.

use std::sync::Arc;

use parking_lot::Mutex;
use vmkit_memory::{
    AccessConstraints, AddressSpace, DirtyClient, Endianness, Error, FULL_SPACE, FlatRange, GuestAddr, MemoryListener,
    MemoryRegion, MmioOps, RamBlock, Result, transaction,
};

/// Region changes re-render every live address space and transactions are
/// global, so the tests of this file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// ----- the recording device ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// One callback: which, at what offset, how wide, with what value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Access {
    op: Op,
    offset: u64,
    size: u32,
    value: u64,
}

fn rd(offset: u64, size: u32, value: u64) -> Access {
    Access {
        op: Op::Read,
        offset,
        size,
        value,
    }
}

fn wr(offset: u64, size: u32, value: u64) -> Access {
    Access {
        op: Op::Write,
        offset,
        size,
        value,
    }
}

/// What the device's read callback returns: a mix of (offset, size) with all
/// 64 bits set at random, so bits above the access size must be masked off.
fn device_value(offset: u64, size: u32) -> u64 {
    let mut z = ((offset << 8) | u64::from(size)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Recorder {
    constraints: AccessConstraints,
    log: Mutex<Vec<Access>>,
}

impl Recorder {
    fn new(constraints: AccessConstraints) -> Arc<Recorder> {
        Arc::new(Recorder {
            constraints,
            log: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Vec<Access> {
        std::mem::take(&mut *self.log.lock())
    }
}

impl MmioOps for Recorder {
    fn read(&self, offset: u64, size: u32) -> Result<u64> {
        let value = device_value(offset, size);
        self.log.lock().push(rd(offset, size, value));
        Ok(value)
    }
    fn write(&self, offset: u64, size: u32, value: u64) -> Result<()> {
        self.log.lock().push(wr(offset, size, value));
        Ok(())
    }
    fn constraints(&self) -> AccessConstraints {
        self.constraints
    }
}

// ----- the model of QEMU ---------------------------------------------------------

/// The fields of QEMU's `MemoryRegionOps` the model needs, as plain numbers.
#[derive(Debug, Clone, Copy)]
struct QemuOps {
    valid_min: u32,
    valid_max: u32,
    valid_unaligned: bool,
    impl_min: u32,
    impl_max: u32,
    big_endian: bool,
}

/// `MAKE_64BIT_MASK(0, bytes * 8)`.
fn qmask(bytes: u32) -> u64 {
    if bytes == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * bytes)) - 1
    }
}

/// QEMU's `pow2floor`.
fn pow2floor(v: u64) -> u64 {
    let mut p = 1;
    while p * 2 <= v {
        p *= 2;
    }
    p
}

/// A `size`-byte value byte-swapped (QEMU's `bswap16/32/64`; a no-op for one byte).
fn bswap(value: u64, size: u32) -> u64 {
    let mut out = 0;
    for b in 0..size {
        out |= ((value >> (8 * b)) & 0xff) << (8 * (size - 1 - b));
    }
    out
}

/// One piece of `access_with_adjusted_size`: the offset, the width and the
/// signed shift of `memory_region_shift_{read,write}_access`.
struct Piece {
    addr: u64,
    size: u32,
    shift: i64,
}

impl QemuOps {
    fn constraints(&self) -> AccessConstraints {
        AccessConstraints {
            valid_min: self.valid_min,
            valid_max: self.valid_max,
            valid_unaligned: self.valid_unaligned,
            impl_min: self.impl_min,
            impl_max: self.impl_max,
            endianness: if self.big_endian {
                Endianness::Big
            } else {
                Endianness::Little
            },
        }
    }

    /// Whether our constructor should accept these (QEMU asserts nothing; we
    /// refuse a minimum above the maximum).
    fn consistent(&self) -> bool {
        let valid_ok = self.valid_max == 0 || self.valid_min.max(1) <= self.valid_max;
        let impl_max = if self.impl_max == 0 { 4 } else { self.impl_max };
        valid_ok && self.impl_min.max(1) <= impl_max
    }

    /// `memory_region_access_valid`.
    fn access_valid(&self, addr: u64, size: u32) -> bool {
        if !self.valid_unaligned && (addr & u64::from(size - 1)) != 0 {
            return false;
        }
        if self.valid_max == 0 {
            return true;
        }
        // `size < valid.min_access_size` never holds for a minimum of 0.
        !(size > self.valid_max || size < self.valid_min)
    }

    /// The pieces `access_with_adjusted_size` issues for a `size`-byte access at `addr`.
    fn pieces(&self, addr: u64, size: u32) -> Vec<Piece> {
        let min = if self.impl_min == 0 { 1 } else { self.impl_min };
        let max = if self.impl_max == 0 { 4 } else { self.impl_max };
        let access = size.min(max).max(min);
        (0..size)
            .step_by(access as usize)
            .map(|i| {
                let shift = if self.big_endian {
                    (i64::from(size) - i64::from(access) - i64::from(i)) * 8
                } else {
                    i64::from(i) * 8
                };
                Piece {
                    addr: addr + u64::from(i),
                    size: access,
                    shift,
                }
            })
            .collect()
    }

    /// A sized read: the value (the caller keeps `size` bytes) and the
    /// callbacks, or `None` when the access is invalid (no callback runs).
    fn read(&self, addr: u64, size: u32) -> Option<(u64, Vec<Access>)> {
        if !self.access_valid(addr, size) {
            return None;
        }
        let mut value = 0u64;
        let mut log = Vec::new();
        for p in self.pieces(addr, size) {
            let tmp = device_value(p.addr, p.size);
            log.push(rd(p.addr, p.size, tmp));
            let masked = tmp & qmask(p.size);
            value |= if p.shift >= 0 {
                masked << p.shift
            } else {
                masked >> -p.shift
            };
        }
        Some((value & qmask(size), log))
    }

    /// A sized write of the `size`-byte `value`: the callbacks, or `None` when invalid.
    fn write(&self, addr: u64, size: u32, value: u64) -> Option<Vec<Access>> {
        if !self.access_valid(addr, size) {
            return None;
        }
        let log = self
            .pieces(addr, size)
            .into_iter()
            .map(|p| {
                let tmp = if p.shift >= 0 {
                    (value >> p.shift) & qmask(p.size)
                } else {
                    (value << -p.shift) & qmask(p.size)
                };
                wr(p.addr, p.size, tmp)
            })
            .collect();
        Some(log)
    }

    /// `memory_access_size(mr, l, addr)` with `impl.unaligned` false.
    fn dma_piece(&self, addr: u64, l: u64) -> u32 {
        let mut max = if self.valid_max == 0 {
            4
        } else {
            u64::from(self.valid_max)
        };
        let align = addr & addr.wrapping_neg();
        if align != 0 && align < max {
            max = align;
        }
        pow2floor(l.min(max)) as u32
    }

    /// A DMA read of `len` bytes at `addr` (`flatview_read_continue` over one
    /// MMIO section): the bytes, every callback, and how many of them were
    /// made before the first invalid piece (`None`: every piece was valid).
    /// Like QEMU, it goes on past an invalid piece (which reads as 0).
    fn dma_read(&self, addr: u64, len: u64) -> (Vec<u8>, Vec<Access>, Option<usize>) {
        let (mut bytes, mut log, mut first_error) = (Vec::new(), Vec::new(), None);
        let mut done = 0;
        while done < len {
            let a = addr + done;
            let l = self.dma_piece(a, len - done);
            let val = match self.read(a, l) {
                Some((v, calls)) => {
                    log.extend(calls);
                    v
                }
                None => {
                    first_error.get_or_insert(log.len());
                    0
                }
            };
            // adjust_endianness, then stn_he_p.
            let val = if self.big_endian { bswap(val, l) } else { val };
            bytes.extend_from_slice(&val.to_le_bytes()[..l as usize]);
            done += u64::from(l);
        }
        (bytes, log, first_error)
    }

    /// A DMA write of `data` at `addr` (`flatview_write_continue`); see [`QemuOps::dma_read`].
    fn dma_write(&self, addr: u64, data: &[u8]) -> (Vec<Access>, Option<usize>) {
        let (mut log, mut first_error) = (Vec::new(), None);
        let mut done = 0usize;
        while done < data.len() {
            let a = addr + done as u64;
            let l = self.dma_piece(a, (data.len() - done) as u64);
            // ldn_he_p, then adjust_endianness.
            let mut val = 0u64;
            for (k, b) in data[done..done + l as usize].iter().enumerate() {
                val |= u64::from(*b) << (8 * k);
            }
            let val = if self.big_endian { bswap(val, l) } else { val };
            match self.write(a, l, val) {
                Some(calls) => log.extend(calls),
                None => {
                    first_error.get_or_insert(log.len());
                }
            }
            done += l as usize;
        }
        (log, first_error)
    }
}

/// Every combination of the constraint fields.
fn all_ops() -> Vec<QemuOps> {
    let mut out = Vec::new();
    for valid_min in [0, 1, 2, 4, 8] {
        for valid_max in [0, 1, 2, 4, 8] {
            for valid_unaligned in [false, true] {
                for impl_min in [0, 1, 2, 4] {
                    for impl_max in [0, 1, 2, 4, 8] {
                        for big_endian in [false, true] {
                            out.push(QemuOps {
                                valid_min,
                                valid_max,
                                valid_unaligned,
                                impl_min,
                                impl_max,
                                big_endian,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// A 32-byte MMIO region with `ops` at `base` in a root container, and an address space over it.
struct Rig {
    space: Arc<AddressSpace>,
    dev: Arc<Recorder>,
}

const REGION: u64 = 32;

fn rig(ops: &QemuOps, base: u64) -> Result<Rig> {
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let dev = Recorder::new(ops.constraints());
    let mr = MemoryRegion::mmio("dev", None, REGION, dev.clone())?;
    root.add_subregion(GuestAddr(base), &mr)?;
    let space = AddressSpace::new("conformance", &root);
    Ok(Rig { space, dev })
}

fn is_invalid_access(r: &Error, offset: u64, size: u64) -> bool {
    matches!(r, Error::InvalidAccess { addr, len, .. } if *addr == GuestAddr(offset) && *len == size)
}

// ----- the model checked by hand --------------------------------------------------

#[test]
fn model_agrees_with_hand_computed_qemu_cases() {
    let le = QemuOps {
        valid_min: 1,
        valid_max: 0,
        valid_unaligned: false,
        impl_min: 1,
        impl_max: 4,
        big_endian: false,
    };
    // An 8-byte read split into two 4-byte pieces, low half first.
    let (v, log) = le.read(8, 8).unwrap_or_default();
    let (lo, hi) = (device_value(8, 4) & 0xffff_ffff, device_value(12, 4) & 0xffff_ffff);
    assert_eq!(v, lo | (hi << 32));
    assert_eq!(log, vec![rd(8, 4, device_value(8, 4)), rd(12, 4, device_value(12, 4))]);
    assert!(le.read(2, 4).is_none(), "unaligned");

    let be = QemuOps {
        impl_min: 4,
        big_endian: true,
        ..le
    };
    // A 1-byte access widened to 4 on a big-endian device: the byte is the
    // most significant one of the piece (shift -24).
    let (v, _) = be.read(4, 1).unwrap_or_default();
    assert_eq!(v, (device_value(4, 4) >> 24) & 0xff);
    assert_eq!(be.write(4, 2, 0xabcd), Some(vec![wr(4, 4, 0xabcd_0000)]));
    // Split big-endian: the first piece is the most significant.
    let be2 = QemuOps {
        impl_min: 1,
        impl_max: 2,
        ..be
    };
    assert_eq!(
        be2.write(0, 4, 0x1122_3344),
        Some(vec![wr(0, 2, 0x1122), wr(2, 2, 0x3344)])
    );
    // DMA: 7 bytes at offset 1, max 4, aligned: pieces 1, 2, 4.
    let (_, log, err) = le.dma_read(1, 7);
    assert_eq!(
        log.iter().map(|a| (a.offset, a.size)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (4, 4)]
    );
    assert_eq!(err, None);
    // A big-endian register is laid out most significant byte first.
    let be_dma = QemuOps { impl_min: 1, ..be };
    let (bytes, _, _) = be_dma.dma_read(0, 2);
    let v = device_value(0, 2);
    assert_eq!(bytes, vec![(v >> 8) as u8, v as u8]);
    // valid_min 4: a 2-byte DMA piece is refused, and QEMU carries on.
    let min4 = QemuOps {
        valid_min: 4,
        valid_max: 4,
        ..le
    };
    let (_, log, err) = min4.dma_read(2, 6);
    assert_eq!(err, Some(0));
    assert_eq!(log, vec![rd(4, 4, device_value(4, 4))]);
}

// ----- sized accesses: every combination --------------------------------------------

#[test]
fn sized_accesses_match_qemu_for_every_constraint_combination() -> Result<()> {
    let _serial = SERIAL.lock();
    let (mut checked, mut invalid, mut split, mut widened, mut refused_sets) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for ops in all_ops() {
        let c = ops.constraints();
        // Our constructor refuses the inconsistent combinations; QEMU has no such check.
        assert_eq!(c.check().is_ok(), ops.consistent(), "{ops:?}");
        if !ops.consistent() {
            let r = MemoryRegion::mmio("bad", None, REGION, Recorder::new(c));
            assert!(matches!(r, Err(Error::Layout(_))), "{ops:?} must be refused");
            refused_sets += 1;
            continue;
        }
        // An odd base too: alignment is judged on the offset in the region.
        for base in [0x1000_0000u64, 0x2_0003] {
            let Rig { space, dev } = rig(&ops, base)?;
            for size in [1u32, 2, 4, 8] {
                for off in 0..16u64 {
                    let addr = GuestAddr(base + off);
                    let what = format!("{ops:?} base {base:#x} offset {off} size {size}");

                    // Read.
                    let before = space.stats().invalid_accesses;
                    let got = space.read_sized(addr, size);
                    let log = dev.take();
                    match ops.read(off, size) {
                        Some((value, calls)) => {
                            match got {
                                Ok(v) => assert_eq!(v, value, "read value: {what}"),
                                Err(e) => panic!("read refused ({e}): {what}"),
                            }
                            assert_eq!(log, calls, "read callbacks: {what}");
                            split += u64::from(calls.len() > 1);
                            widened += u64::from(calls.iter().any(|a| a.size > size));
                        }
                        None => {
                            match got {
                                Ok(v) => panic!("read returned {v:#x} instead of an error: {what}"),
                                Err(e) => assert!(is_invalid_access(&e, off, u64::from(size)), "{e}: {what}"),
                            }
                            assert_eq!(log, vec![], "no callback for an invalid read: {what}");
                            assert_eq!(space.stats().invalid_accesses, before + 1, "counted: {what}");
                            invalid += 1;
                        }
                    }

                    // Write, with garbage above the access size: only the low
                    // `size` bytes are the data, as with QEMU's typed stores.
                    let data = device_value(off | 0x100, size);
                    let got = space.write_sized(addr, size, data);
                    let log = dev.take();
                    match ops.write(off, size, data & qmask(size)) {
                        Some(calls) => {
                            if let Err(e) = got {
                                panic!("write refused ({e}): {what}");
                            }
                            assert_eq!(log, calls, "write callbacks: {what}");
                        }
                        None => {
                            match got {
                                Ok(()) => panic!("invalid write accepted: {what}"),
                                Err(e) => assert!(is_invalid_access(&e, off, u64::from(size)), "{e}: {what}"),
                            }
                            assert_eq!(log, vec![], "no callback for an invalid write: {what}");
                        }
                    }
                    checked += 2;
                }
            }
        }
    }
    // The enumeration really exercised every path.
    assert!(refused_sets > 0 && invalid > 0 && split > 0 && widened > 0);
    eprintln!(
        "{checked} sized accesses checked ({invalid} invalid reads, {split} split, {widened} widened); \
         {refused_sets} inconsistent constraint sets refused"
    );
    Ok(())
}

#[test]
fn sizes_other_than_1_2_4_8_are_refused() -> Result<()> {
    let _serial = SERIAL.lock();
    let ops = QemuOps {
        valid_min: 0,
        valid_max: 0,
        valid_unaligned: true,
        impl_min: 0,
        impl_max: 0,
        big_endian: false,
    };
    let Rig { space, dev } = rig(&ops, 0x1000)?;
    for size in [0u32, 3, 5, 16] {
        assert!(space.read_sized(GuestAddr(0x1000), size).is_err(), "size {size}");
        assert!(space.write_sized(GuestAddr(0x1000), size, 0).is_err(), "size {size}");
        // Also where nothing is mapped.
        assert!(space.read_sized(GuestAddr(0x9000), size).is_err(), "size {size}");
    }
    assert_eq!(dev.take(), vec![]);
    Ok(())
}

// ----- byte-range transfers (DMA) against MMIO -------------------------------------------

#[test]
fn dma_pieces_match_qemu_memory_access_size() -> Result<()> {
    let _serial = SERIAL.lock();
    let (mut transfers, mut refused) = (0u64, 0u64);
    for ops in all_ops().into_iter().filter(QemuOps::consistent) {
        let base = 0x4000u64;
        let Rig { space, dev } = rig(&ops, base)?;
        for off in 0..8u64 {
            for len in 1..=24u64 {
                let what = format!("{ops:?} offset {off} len {len}");

                let mut buf = vec![0u8; len as usize];
                let got = space.read(GuestAddr(base + off), &mut buf);
                let log = dev.take();
                let (bytes, calls, first_error) = ops.dma_read(off, len);
                match first_error {
                    None => {
                        if let Err(e) = got {
                            panic!("DMA read refused ({e}): {what}");
                        }
                        assert_eq!(buf, bytes, "DMA read bytes: {what}");
                        assert_eq!(log, calls, "DMA read callbacks: {what}");
                    }
                    Some(n) => {
                        // QEMU completes the other pieces and reports the
                        // error at the end; we stop at the first refused piece.
                        assert!(matches!(got, Err(Error::InvalidAccess { .. })), "{what}");
                        assert_eq!(log, calls[..n], "DMA read callbacks before the error: {what}");
                        refused += 1;
                    }
                }

                let data: Vec<u8> = (0..len).map(|i| (off * 31 + len * 7 + i * 13) as u8 ^ 0xa5).collect();
                let got = space.write(GuestAddr(base + off), &data);
                let log = dev.take();
                let (calls, first_error) = ops.dma_write(off, &data);
                match first_error {
                    None => {
                        if let Err(e) = got {
                            panic!("DMA write refused ({e}): {what}");
                        }
                        assert_eq!(log, calls, "DMA write callbacks: {what}");
                    }
                    Some(n) => {
                        assert!(matches!(got, Err(Error::InvalidAccess { .. })), "{what}");
                        assert_eq!(log, calls[..n], "DMA write callbacks before the error: {what}");
                    }
                }
                transfers += 2;
            }
        }
    }
    assert!(refused > 0);
    eprintln!("{transfers} DMA transfers checked ({refused} refused reads)");
    Ok(())
}

// ----- straddling a region's end ---------------------------------------------------------

fn ram_block(name: &str, size: u64) -> Result<Arc<RamBlock>> {
    RamBlock::anonymous(name, size)
}

#[test]
fn sized_access_straddling_an_mmio_region_end_takes_the_byte_path() -> Result<()> {
    let _serial = SERIAL.lock();
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let dev = Recorder::new(AccessConstraints::default());
    root.add_subregion(GuestAddr(0x1000), &MemoryRegion::mmio("dev", None, 0x10, dev.clone())?)?;
    let block = ram_block("straddle.ram", 0x1000)?;
    block.write(0, &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7])?;
    root.add_subregion(
        GuestAddr(0x1010),
        &MemoryRegion::ram("ram", None, block.clone(), 0, 0x1000)?,
    )?;
    // A second device right after a hole, to straddle into nothing.
    let dev2 = Recorder::new(AccessConstraints::default());
    root.add_subregion(
        GuestAddr(0x3000),
        &MemoryRegion::mmio("dev2", None, 0x10, dev2.clone())?,
    )?;
    let space = AddressSpace::new("straddle", &root);

    // 4 bytes at 0x100e: 2 from the device (one 2-byte access), 2 from RAM.
    let v = space.read_sized(GuestAddr(0x100e), 4)?;
    assert_eq!(dev.take(), vec![rd(0xe, 2, device_value(0xe, 2))]);
    assert_eq!(v, (device_value(0xe, 2) & 0xffff) | (0xa1a0 << 16));

    // 8 bytes at 0x100f: 1 device byte, 7 RAM bytes.
    let v = space.read_sized(GuestAddr(0x100f), 8)?;
    assert_eq!(dev.take(), vec![rd(0xf, 1, device_value(0xf, 1))]);
    assert_eq!(v, (device_value(0xf, 1) & 0xff) | (0x00a6_a5a4_a3a2_a1a0 << 8));

    // A write splits the same way; the RAM half lands in RAM.
    space.write_sized(GuestAddr(0x100c), 8, 0x1122_3344_5566_7788)?;
    assert_eq!(dev.take(), vec![wr(0xc, 4, 0x5566_7788)]);
    let mut ram = [0u8; 4];
    block.read(0, &mut ram)?;
    assert_eq!(ram, [0x44, 0x33, 0x22, 0x11]);

    // Into a hole: the missing bytes read as all ones, once counted.
    let before = space.stats().unassigned_reads;
    let v = space.read_sized(GuestAddr(0x300c), 8)?;
    assert_eq!(dev2.take(), vec![rd(0xc, 4, device_value(0xc, 4))]);
    assert_eq!(v, (device_value(0xc, 4) & 0xffff_ffff) | (0xffff_ffff << 32));
    assert_eq!(space.stats().unassigned_reads, before + 1);

    // The device's constraints still apply to its part.
    let strict_dev = Recorder::new(AccessConstraints {
        valid_min: 4,
        valid_max: 4,
        ..Default::default()
    });
    root.add_subregion(
        GuestAddr(0x5000),
        &MemoryRegion::mmio("min4", None, 0x10, strict_dev.clone())?,
    )?;
    root.add_subregion(
        GuestAddr(0x5010),
        &MemoryRegion::ram("ram2", None, ram_block("straddle.ram2", 0x1000)?, 0, 0x1000)?,
    )?;
    let e = space.read_sized(GuestAddr(0x500e), 4);
    assert!(matches!(e, Err(Error::InvalidAccess { .. })), "{e:?}");
    assert_eq!(strict_dev.take(), vec![]);
    Ok(())
}

// ----- unassigned accesses, strict mode ---------------------------------------------------

fn unassigned_rig() -> Result<(Arc<AddressSpace>, Arc<RamBlock>)> {
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let block = ram_block("unassigned.ram", 0x1000)?;
    block.fill(0, 0x1000, 0x5a)?;
    root.add_subregion(
        GuestAddr(0x1000),
        &MemoryRegion::ram("ram", None, block.clone(), 0, 0x1000)?,
    )?;
    Ok((AddressSpace::new("unassigned", &root), block))
}

#[test]
fn unassigned_reads_are_all_ones_and_counted() -> Result<()> {
    let _serial = SERIAL.lock();
    let (space, _block) = unassigned_rig()?;
    let mut reads = 0;
    for size in [1u32, 2, 4, 8] {
        for addr in [0u64, 0x3, 0x8000_0000, u64::MAX - 7] {
            assert_eq!(
                space.read_sized(GuestAddr(addr), size)?,
                qmask(size),
                "{size} bytes at {addr:#x}"
            );
            reads += 1;
            assert_eq!(space.stats().unassigned_reads, reads);
        }
    }
    for size in [1u32, 2, 4, 8] {
        space.write_sized(GuestAddr(0x9000), size, u64::MAX)?;
    }
    assert_eq!(space.stats().unassigned_writes, 4);

    // DMA across the end of RAM: RAM bytes, then 0xff for the hole, counted once.
    let mut buf = [0u8; 16];
    space.read(GuestAddr(0x1ff8), &mut buf)?;
    assert_eq!(
        buf,
        [
            0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ]
    );
    assert_eq!(space.stats().unassigned_reads, reads + 1);
    // A hole in the middle of a transfer, with RAM on both sides.
    let mut buf = [0u8; 0x10];
    space.read(GuestAddr(0xff8), &mut buf)?;
    assert_eq!(&buf[..8], &[0xff; 8]);
    assert_eq!(&buf[8..], &[0x5a; 8]);
    assert_eq!(space.stats().unassigned_reads, reads + 2);
    Ok(())
}

#[test]
fn strict_mode_makes_unassigned_accesses_errors() -> Result<()> {
    let _serial = SERIAL.lock();
    let (space, block) = unassigned_rig()?;
    space.set_strict(true);
    assert!(space.is_strict());
    for size in [1u32, 2, 4, 8] {
        let r = space.read_sized(GuestAddr(0x9000), size);
        assert!(
            matches!(r, Err(Error::Unassigned { addr, len, .. }) if addr == GuestAddr(0x9000) && len == u64::from(size)),
            "{r:?}"
        );
        let w = space.write_sized(GuestAddr(0x9000), size, 0);
        assert!(matches!(w, Err(Error::Unassigned { .. })), "{w:?}");
    }
    let mut buf = [0u8; 16];
    // The unassigned part of a transfer is an error, reported where it starts.
    let r = space.read(GuestAddr(0x1ff8), &mut buf);
    assert!(
        matches!(r, Err(Error::Unassigned { addr, len, .. }) if addr == GuestAddr(0x2000) && len == 8),
        "{r:?}"
    );
    assert!(matches!(
        space.write(GuestAddr(0x1ff8), &buf),
        Err(Error::Unassigned { .. })
    ));
    // Mapped accesses are unaffected; failures are still counted.
    assert_eq!(space.read_sized(GuestAddr(0x1000), 4)?, 0x5a5a_5a5a);
    space.write_sized(GuestAddr(0x1000), 2, 0x1234)?;
    let mut two = [0u8; 2];
    block.read(0, &mut two)?;
    assert_eq!(two, [0x34, 0x12]);
    let s = space.stats();
    assert_eq!((s.unassigned_reads, s.unassigned_writes), (5, 5));
    space.set_strict(false);
    assert_eq!(space.read_sized(GuestAddr(0x9000), 4)?, 0xffff_ffff);
    Ok(())
}

// ----- read-only memory ----------------------------------------------------------------

#[test]
fn read_only_ram_drops_writes_and_counts_them() -> Result<()> {
    let _serial = SERIAL.lock();
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let block = ram_block("ro.ram", 0x4000)?;
    block.fill(0, 0x4000, 0x11)?;
    let ram = MemoryRegion::ram("ro", None, block.clone(), 0, 0x2000)?;
    root.add_subregion(GuestAddr(0x10_0000), &ram)?;
    // A writable neighbour, to check a transfer keeps going past the dropped part.
    let rw = MemoryRegion::ram("rw", None, block.clone(), 0x2000, 0x2000)?;
    root.add_subregion(GuestAddr(0x10_2000), &rw)?;
    let space = AddressSpace::new("readonly", &root);
    block.dirty_log().log_start(DirtyClient::Migration)?;

    ram.set_readonly(true);
    let ranges = space
        .flat_view()
        .ranges()
        .iter()
        .map(|r| r.readonly)
        .collect::<Vec<_>>();
    assert_eq!(ranges, vec![true, false]);

    space.write_sized(GuestAddr(0x10_0010), 4, 0xdead_beef)?;
    assert_eq!(space.read_sized(GuestAddr(0x10_0010), 4)?, 0x1111_1111);
    assert_eq!(space.stats().readonly_writes, 1);
    // DMA over the read-only region and into the writable one: the first
    // part is dropped (one count), the second written.
    space.write(GuestAddr(0x10_1ffc), &[0x22; 8])?;
    assert_eq!(space.stats().readonly_writes, 2);
    let mut buf = [0u8; 8];
    space.read(GuestAddr(0x10_1ffc), &mut buf)?;
    assert_eq!(buf, [0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]);
    // Dropped writes dirty nothing; the written page (block page 2) is dirty.
    let dirty = block.dirty_log().sync(DirtyClient::Migration)?;
    assert_eq!(dirty.ranges().collect::<Vec<_>>(), vec![(2, 1)]);

    // Writable again.
    ram.set_readonly(false);
    space.write_sized(GuestAddr(0x10_0010), 4, 0xdead_beef)?;
    assert_eq!(space.read_sized(GuestAddr(0x10_0010), 4)?, 0xdead_beef);
    assert_eq!(space.stats().readonly_writes, 2);

    // A read-only ancestor makes its RAM read-only too; so is ROM.
    let holder = MemoryRegion::container("holder", None, 0x1000)?;
    let inner = MemoryRegion::ram("inner", None, ram_block("ro.inner", 0x1000)?, 0, 0x1000)?;
    holder.add_subregion(GuestAddr(0), &inner)?;
    root.add_subregion(GuestAddr(0x20_0000), &holder)?;
    holder.set_readonly(true);
    let rom = MemoryRegion::rom("rom", None, ram_block("ro.rom", 0x1000)?, 0, 0x1000)?;
    root.add_subregion(GuestAddr(0x30_0000), &rom)?;
    for addr in [0x20_0000u64, 0x30_0000] {
        space.write_sized(GuestAddr(addr), 8, u64::MAX)?;
        assert_eq!(space.read_sized(GuestAddr(addr), 8)?, 0, "{addr:#x}");
    }
    assert_eq!(space.stats().readonly_writes, 4);
    Ok(())
}

// ----- memory listeners ---------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Add(&'static str, String, u64, u128, u64),
    Del(&'static str, String, u64, u128, u64),
    Commit(&'static str),
}

/// Records into a log it may share with other listeners.
struct Listener {
    tag: &'static str,
    log: Arc<Mutex<Vec<Ev>>>,
}

impl Listener {
    fn new(tag: &'static str, log: &Arc<Mutex<Vec<Ev>>>) -> Arc<Listener> {
        Arc::new(Listener { tag, log: log.clone() })
    }
}

fn describe(r: &FlatRange) -> (String, u64, u128, u64) {
    (
        r.region.name().to_string(),
        r.range.start().0,
        r.range.size(),
        r.offset_in_region,
    )
}

impl MemoryListener for Listener {
    fn region_add(&self, space: &AddressSpace, range: &FlatRange) {
        assert_eq!(space.name(), "listened");
        let (n, s, z, o) = describe(range);
        self.log.lock().push(Ev::Add(self.tag, n, s, z, o));
    }
    fn region_del(&self, space: &AddressSpace, range: &FlatRange) {
        assert_eq!(space.name(), "listened");
        let (n, s, z, o) = describe(range);
        self.log.lock().push(Ev::Del(self.tag, n, s, z, o));
    }
    fn commit(&self, _space: &AddressSpace) {
        self.log.lock().push(Ev::Commit(self.tag));
    }
}

fn add(tag: &'static str, name: &str, start: u64, size: u128, offset: u64) -> Ev {
    Ev::Add(tag, name.to_string(), start, size, offset)
}

fn del(tag: &'static str, name: &str, start: u64, size: u128, offset: u64) -> Ev {
    Ev::Del(tag, name.to_string(), start, size, offset)
}

fn drain(log: &Mutex<Vec<Ev>>) -> Vec<Ev> {
    std::mem::take(&mut *log.lock())
}

#[test]
fn listeners_see_adds_dels_moves_and_enables() -> Result<()> {
    let _serial = SERIAL.lock();
    let log = Arc::new(Mutex::new(Vec::new()));
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let a = MemoryRegion::ram("a", None, ram_block("listen.a", 0x1000)?, 0, 0x1000)?;
    root.add_subregion(GuestAddr(0), &a)?;
    let space = AddressSpace::new("listened", &root);

    let first = Listener::new("1", &log);
    space.add_listener(first.clone());
    assert_eq!(drain(&log), vec![add("1", "a", 0, 0x1000, 0), Ev::Commit("1")]);

    let b = MemoryRegion::mmio("b", None, 0x100, Recorder::new(AccessConstraints::default()))?;
    root.add_subregion(GuestAddr(0x1_0000), &b)?;
    assert_eq!(drain(&log), vec![add("1", "b", 0x1_0000, 0x100, 0), Ev::Commit("1")]);

    // A move is one change: the old range goes, then the new one comes.
    b.set_address(GuestAddr(0x2_0000))?;
    assert_eq!(
        drain(&log),
        vec![
            del("1", "b", 0x1_0000, 0x100, 0),
            add("1", "b", 0x2_0000, 0x100, 0),
            Ev::Commit("1")
        ]
    );

    b.set_enabled(false);
    assert_eq!(drain(&log), vec![del("1", "b", 0x2_0000, 0x100, 0), Ev::Commit("1")]);
    b.set_enabled(true);
    assert_eq!(drain(&log), vec![add("1", "b", 0x2_0000, 0x100, 0), Ev::Commit("1")]);

    root.del_subregion(&b)?;
    assert_eq!(drain(&log), vec![del("1", "b", 0x2_0000, 0x100, 0), Ev::Commit("1")]);

    // Overlapping `a` splits its range: the whole goes, the pieces come.
    let c = MemoryRegion::mmio("c", None, 0x100, Recorder::new(AccessConstraints::default()))?;
    root.add_subregion_overlap(GuestAddr(0x400), &c, 1)?;
    assert_eq!(
        drain(&log),
        vec![
            del("1", "a", 0, 0x1000, 0),
            add("1", "a", 0, 0x400, 0),
            add("1", "c", 0x400, 0x100, 0),
            add("1", "a", 0x500, 0xb00, 0x500),
            Ev::Commit("1"),
        ]
    );

    // A listener registered late hears of every existing range; the first hears nothing.
    let second = Listener::new("2", &log);
    space.add_listener(second.clone());
    assert_eq!(
        drain(&log),
        vec![
            add("2", "a", 0, 0x400, 0),
            add("2", "c", 0x400, 0x100, 0),
            add("2", "a", 0x500, 0xb00, 0x500),
            Ev::Commit("2"),
        ]
    );

    // With two listeners: removals in reverse registration order, additions
    // in order, range by range; commits only after every addition.
    c.set_address(GuestAddr(0x800))?;
    assert_eq!(
        drain(&log),
        vec![
            del("2", "a", 0, 0x400, 0),
            del("1", "a", 0, 0x400, 0),
            del("2", "c", 0x400, 0x100, 0),
            del("1", "c", 0x400, 0x100, 0),
            del("2", "a", 0x500, 0xb00, 0x500),
            del("1", "a", 0x500, 0xb00, 0x500),
            add("1", "a", 0, 0x800, 0),
            add("2", "a", 0, 0x800, 0),
            add("1", "c", 0x800, 0x100, 0),
            add("2", "c", 0x800, 0x100, 0),
            add("1", "a", 0x900, 0x700, 0x900),
            add("2", "a", 0x900, 0x700, 0x900),
            Ev::Commit("1"),
            Ev::Commit("2"),
        ]
    );

    // A removed listener hears nothing more.
    let second: Arc<dyn MemoryListener> = second;
    space.remove_listener(&second);
    root.del_subregion(&c)?;
    assert_eq!(
        drain(&log),
        vec![
            del("1", "a", 0, 0x800, 0),
            del("1", "c", 0x800, 0x100, 0),
            del("1", "a", 0x900, 0x700, 0x900),
            add("1", "a", 0, 0x1000, 0),
            Ev::Commit("1"),
        ]
    );
    drop(first);
    Ok(())
}

#[test]
fn a_transaction_batches_changes_into_one_commit() -> Result<()> {
    let _serial = SERIAL.lock();
    let log = Arc::new(Mutex::new(Vec::new()));
    let root = MemoryRegion::container("root", None, FULL_SPACE)?;
    let space = AddressSpace::new("listened", &root);
    space.add_listener(Listener::new("1", &log));
    assert_eq!(drain(&log), vec![Ev::Commit("1")]);

    let d = MemoryRegion::mmio("d", None, 0x100, Recorder::new(AccessConstraints::default()))?;
    let e = MemoryRegion::mmio("e", None, 0x100, Recorder::new(AccessConstraints::default()))?;
    let f = MemoryRegion::mmio("f", None, 0x100, Recorder::new(AccessConstraints::default()))?;
    transaction(|| -> Result<()> {
        root.add_subregion(GuestAddr(0x3_0000), &d)?;
        root.add_subregion(GuestAddr(0x4_0000), &e)?;
        root.add_subregion(GuestAddr(0x6_0000), &f)?;
        d.set_address(GuestAddr(0x5_0000))?;
        f.set_enabled(false);
        // Nothing is told, and the view is unchanged, until the commit.
        assert_eq!(drain(&log), vec![]);
        assert!(space.flat_view().ranges().is_empty());
        Ok(())
    })?;
    // Only the end state, in address order, then one commit.
    assert_eq!(
        drain(&log),
        vec![
            add("1", "e", 0x4_0000, 0x100, 0),
            add("1", "d", 0x5_0000, 0x100, 0),
            Ev::Commit("1")
        ]
    );

    // Nested transactions commit once, at the outermost end.
    vmkit_memory::begin();
    vmkit_memory::begin();
    root.del_subregion(&e)?;
    vmkit_memory::commit();
    assert_eq!(drain(&log), vec![]);
    f.set_enabled(true);
    vmkit_memory::commit();
    assert_eq!(
        drain(&log),
        vec![
            del("1", "e", 0x4_0000, 0x100, 0),
            add("1", "f", 0x6_0000, 0x100, 0),
            Ev::Commit("1")
        ]
    );
    Ok(())
}
