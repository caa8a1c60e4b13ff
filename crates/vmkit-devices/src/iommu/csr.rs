//! The register bytes as QEMU keeps them: `csr` (the values), and per byte
//! `wmask` (guest-writable bits), `w1cmask` (bits a guest clears by writing
//! 1) and `womask` (write-only bits, read as 0). Only `csr` migrates.

use super::props::IommuConfig;
use super::regs::{self, REG_SIZE, Reg};

/// The four parallel arrays of the register window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisterFile {
    csr: [u8; REG_SIZE],
    wmask: [u8; REG_SIZE],
    w1cmask: [u8; REG_SIZE],
    womask: [u8; REG_SIZE],
}

/// An offset checked to leave room for `N` bytes in the window.
fn span<const N: usize>(at: usize) -> Option<std::ops::Range<usize>> {
    let end = at.checked_add(N)?;
    (end <= REG_SIZE).then_some(at..end)
}

fn load<const N: usize>(bytes: &[u8; REG_SIZE], at: usize) -> [u8; N] {
    let mut out = [0; N];
    if let Some(r) = span::<N>(at) {
        out.copy_from_slice(&bytes[r]);
    }
    out
}

fn store<const N: usize>(bytes: &mut [u8; REG_SIZE], at: usize, v: [u8; N]) {
    if let Some(r) = span::<N>(at) {
        bytes[r].copy_from_slice(&v);
    }
}

impl RegisterFile {
    /// The reset state for `config` (QEMU's `vtd_init`).
    pub(crate) fn reset(config: &IommuConfig) -> RegisterFile {
        let mut f = RegisterFile {
            csr: [0; REG_SIZE],
            wmask: [0; REG_SIZE],
            w1cmask: [0; REG_SIZE],
            womask: [0; REG_SIZE],
        };
        let (cap, ecap) = regs::capabilities(config);
        f.define32(Reg::Ver, 0x10, 0, 0);
        f.define64(Reg::Cap, cap, 0, 0);
        f.define64(Reg::Ecap, ecap, 0, 0);
        f.define32(Reg::Gcmd, 0, 0xff80_0000, 0);
        f.write_only32(Reg::Gcmd, 0xff80_0000);
        f.define32(Reg::Gsts, 0, 0, 0);
        f.define64(Reg::Rtaddr, 0, 0xffff_ffff_ffff_fc00, 0);
        f.define64(Reg::Ccmd, 0, 0xe000_0003_ffff_ffff, 0);
        // SID and FM are write-only: the guest reads back 0 there.
        f.write_only64(Reg::Ccmd, 0x3_ffff_0000);
        // PFO and IQE clear by writing 1; PPF follows the records.
        f.define32(Reg::Fsts, 0, 0, 0x11);
        // Fault events start masked.
        f.define32(Reg::Fectl, 0x8000_0000, 0x8000_0000, 0);
        f.define32(Reg::Fedata, 0, 0xffff, 0);
        f.define32(Reg::Feaddr, 0, 0xffff_fffc, 0);
        // No EIM upper address: reserved, reads 0.
        f.define32(Reg::Feuaddr, 0, 0, 0);
        // No protected memory regions in CAP: PMEN read-only.
        f.define32(Reg::Pmen, 0, 0, 0);
        f.define64(Reg::Iqh, 0, 0, 0);
        f.define64(Reg::Iqt, 0, 0x7fff0, 0);
        f.define64(Reg::Iqa, 0, 0xffff_ffff_ffff_f807, 0);
        f.define32(Reg::Ics, 0, 0, 0x1);
        f.define32(Reg::Iectl, 0x8000_0000, 0x8000_0000, 0);
        f.define32(Reg::Iedata, 0, 0xffff_ffff, 0);
        f.define32(Reg::Ieaddr, 0, 0xffff_fffc, 0);
        f.define32(Reg::Ieuaddr, 0, 0, 0);
        f.define64(Reg::Iotlb, 0, 0xb003_ffff_0000_0000, 0);
        f.define64(Reg::Iva, 0, 0xffff_ffff_ffff_f07f, 0);
        f.write_only64(Reg::Iva, 0xffff_ffff_ffff_f07f);
        f.define64(Reg::Frcd0, 0, 0, 0);
        f.define64(Reg::Frcd2, 0, 0, regs::FRCD_F);
        f.define64(Reg::Irta, 0, 0xffff_ffff_ffff_f80f, 0);
        f
    }

    fn define32(&mut self, reg: Reg, value: u32, wmask: u32, w1cmask: u32) {
        let at = reg.offset();
        store(&mut self.csr, at, value.to_le_bytes());
        store(&mut self.wmask, at, wmask.to_le_bytes());
        store(&mut self.w1cmask, at, w1cmask.to_le_bytes());
    }

    fn define64(&mut self, reg: Reg, value: u64, wmask: u64, w1cmask: u64) {
        let at = reg.offset();
        store(&mut self.csr, at, value.to_le_bytes());
        store(&mut self.wmask, at, wmask.to_le_bytes());
        store(&mut self.w1cmask, at, w1cmask.to_le_bytes());
    }

    fn write_only32(&mut self, reg: Reg, mask: u32) {
        store(&mut self.womask, reg.offset(), mask.to_le_bytes());
    }

    fn write_only64(&mut self, reg: Reg, mask: u64) {
        store(&mut self.womask, reg.offset(), mask.to_le_bytes());
    }

    /// The raw 32-bit value at `at`.
    pub(crate) fn raw32(&self, at: usize) -> u32 {
        u32::from_le_bytes(load(&self.csr, at))
    }

    /// The raw 64-bit value at `at`.
    pub(crate) fn raw64(&self, at: usize) -> u64 {
        u64::from_le_bytes(load(&self.csr, at))
    }

    /// A register's raw 32-bit value.
    pub(crate) fn get32(&self, reg: Reg) -> u32 {
        self.raw32(reg.offset())
    }

    /// A register's raw 64-bit value.
    pub(crate) fn get64(&self, reg: Reg) -> u64 {
        self.raw64(reg.offset())
    }

    /// Sets a register from the device side, no mask applied.
    pub(crate) fn put64(&mut self, reg: Reg, v: u64) {
        store(&mut self.csr, reg.offset(), v.to_le_bytes());
    }

    /// Clears `clear` then sets `set` in a 32-bit register from the device
    /// side; returns the new value.
    pub(crate) fn update32(&mut self, reg: Reg, clear: u32, set: u32) -> u32 {
        let v = (self.get32(reg) & !clear) | set;
        store(&mut self.csr, reg.offset(), v.to_le_bytes());
        v
    }

    /// Clears `clear` then sets `set` in a 64-bit register from the device
    /// side; returns the new value.
    pub(crate) fn update64(&mut self, reg: Reg, clear: u64, set: u64) -> u64 {
        let v = (self.get64(reg) & !clear) | set;
        store(&mut self.csr, reg.offset(), v.to_le_bytes());
        v
    }

    /// What a guest reads: `len` bytes at `at` with the write-only bits as 0.
    pub(crate) fn guest_read(&self, at: usize, len: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..len.min(8) {
            if let (Some(c), Some(wo)) = (self.csr.get(at + i), self.womask.get(at + i)) {
                v |= u64::from(c & !wo) << (8 * i);
            }
        }
        v
    }

    /// A guest write of `len` bytes at `at`: per byte, the writable bits
    /// take the value, then the written ones clear their w1c bits.
    pub(crate) fn guest_write(&mut self, at: usize, len: usize, value: u64) {
        for i in 0..len.min(8) {
            let b = at + i;
            let (Some(c), Some(&w), Some(&w1c)) = (self.csr.get_mut(b), self.wmask.get(b), self.w1cmask.get(b)) else {
                continue;
            };
            let v = (value >> (8 * i)) as u8;
            *c = ((*c & !w) | (v & w)) & !(w1c & v);
        }
    }

    /// The values, as a migration saves them.
    pub(crate) fn bytes(&self) -> &[u8; REG_SIZE] {
        &self.csr
    }

    /// Takes migrated values; the masks stay this side's.
    pub(crate) fn load_bytes(&mut self, bytes: &[u8; REG_SIZE]) {
        self.csr = *bytes;
    }
}
