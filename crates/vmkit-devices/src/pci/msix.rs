//! MSI-X as plain data: the vector table and pending-bit array a device
//! exposes in a BAR, the capability's control bits, and which messages a
//! notification or an unmask sends.
//!
//! The owner maps the table and the PBA (QEMU puts both in one BAR),
//! forwards their accesses and the capability's control writes here, and
//! writes each returned [`MsiMessage`] through the device's bus-master
//! address space (so through an IOMMU, if one sits in between).

use super::error::PciError;

/// Bytes of one table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
/// Vector control: the vector is masked.
const VECTOR_MASKED: u32 = 0x1;
/// Message control (the capability's word at +2): MSI-X enabled.
pub const CONTROL_ENABLE: u16 = 0x8000;
/// Message control: every vector masked.
pub const CONTROL_FUNCTION_MASK: u16 = 0x4000;
/// The most vectors a function can have.
pub const MAX_VECTORS: u16 = 2048;

/// An interrupt message: a 32-bit write of `data` at `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Where the write goes (e.g. 0xfee0_0000 on x86).
    pub address: u64,
    /// What is written.
    pub data: u32,
}

/// The MSI-X state of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msix {
    /// Per vector: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
    /// One pending bit per vector.
    pba: Vec<u64>,
    control: u16,
}

impl Msix {
    /// `vectors` vectors (1–2048), each masked, nothing pending, MSI-X
    /// disabled: the state after reset.
    pub fn new(vectors: u16) -> Result<Msix, PciError> {
        if vectors == 0 || vectors > MAX_VECTORS {
            return Err(PciError::BadMsix {
                reason: format!("{vectors} vectors (1 to {MAX_VECTORS})"),
            });
        }
        Ok(Msix {
            table: vec![[0, 0, 0, VECTOR_MASKED]; usize::from(vectors)],
            pba: vec![0; usize::from(vectors).div_ceil(64)],
            control: 0,
        })
    }

    /// Vectors.
    pub fn vectors(&self) -> u16 {
        self.table.len() as u16
    }

    /// Bytes of the table.
    pub fn table_size(&self) -> u64 {
        self.table.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the pending-bit array (whole 64-bit words).
    pub fn pba_size(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// The capability's message-control word as the guest reads it: the
    /// table size (vectors − 1) and the enable and function-mask bits.
    pub fn control(&self) -> u16 {
        self.control | (self.vectors() - 1)
    }

    /// Whether MSI-X is enabled (INTx must then stay deasserted).
    pub fn enabled(&self) -> bool {
        self.control & CONTROL_ENABLE != 0
    }

    /// Whether vector `v` is pending.
    pub fn is_pending(&self, v: u16) -> bool {
        let v = usize::from(v);
        self.pba.get(v / 64).is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    /// Whether vector `v` cannot be sent now: MSI-X off, the function
    /// masked, or the vector masked.
    pub fn is_masked(&self, v: u16) -> bool {
        let function = !self.enabled() || self.control & CONTROL_FUNCTION_MASK != 0;
        function || self.table.get(usize::from(v)).is_none_or(|e| e[3] & VECTOR_MASKED != 0)
    }

    /// The guest wrote the capability's message control: keeps the enable
    /// and function-mask bits; vectors unmasked by it that were pending
    /// are sent (and no longer pending).
    pub fn write_control(&mut self, control: u16) -> Vec<MsiMessage> {
        let was: Vec<bool> = (0..self.vectors()).map(|v| self.is_masked(v)).collect();
        self.control = control & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        (0..self.vectors())
            .filter(|&v| was[usize::from(v)])
            .filter_map(|v| self.deliver_if_pending(v))
            .collect()
    }

    /// The device signals vector `v`: its message if it can be sent now,
    /// else it becomes pending (nothing at all while MSI-X is disabled, as
    /// QEMU's `msix_notify`).
    pub fn notify(&mut self, v: u16) -> Option<MsiMessage> {
        if !self.enabled() || usize::from(v) >= self.table.len() {
            return None;
        }
        if self.is_masked(v) {
            self.set_pending(v, true);
            return None;
        }
        Some(self.message(v))
    }

    /// Reads `size` (4 or 8) bytes of the table at `offset`.
    pub fn table_read(&self, offset: u64, size: u8) -> Result<u64, PciError> {
        let (entry, word) = self.table_slot(offset, size)?;
        let lo = u64::from(self.table[entry][word]);
        if size == 8 {
            let hi = u64::from(self.table[entry][word + 1]);
            return Ok(hi << 32 | lo);
        }
        Ok(lo)
    }

    /// Writes `size` (4 or 8) bytes of the table at `offset`; unmasking a
    /// pending vector sends it.
    pub fn table_write(&mut self, offset: u64, size: u8, value: u64) -> Result<Vec<MsiMessage>, PciError> {
        let (entry, word) = self.table_slot(offset, size)?;
        let v = entry as u16;
        let was_masked = self.is_masked(v);
        self.table[entry][word] = value as u32;
        if size == 8 {
            self.table[entry][word + 1] = (value >> 32) as u32;
        }
        // Reserved vector-control bits read as 0.
        self.table[entry][3] &= VECTOR_MASKED;
        Ok(if was_masked {
            self.deliver_if_pending(v).into_iter().collect()
        } else {
            Vec::new()
        })
    }

    /// Reads `size` (4 or 8) bytes of the pending-bit array; writes to it
    /// are ignored (it is read-only).
    pub fn pba_read(&self, offset: u64, size: u8) -> Result<u64, PciError> {
        if !matches!(size, 4 | 8) || offset % u64::from(size) != 0 || offset + u64::from(size) > self.pba_size() {
            return Err(PciError::BadMsix {
                reason: format!("PBA access of {size} bytes at {offset:#x}"),
            });
        }
        let word = self.pba[(offset / 8) as usize];
        Ok(match (size, offset % 8) {
            (8, _) => word,
            (_, 0) => word & 0xffff_ffff,
            _ => word >> 32,
        })
    }

    /// The table and pending bits as QEMU's `msix state` codec saves them:
    /// 16 bytes per vector (little-endian dwords as the guest wrote them),
    /// then one pending bit per vector in whole bytes.
    pub fn save_raw(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(super::state::msix_state_len(self.vectors()) as usize);
        for entry in &self.table {
            for dword in entry {
                out.extend_from_slice(&dword.to_le_bytes());
            }
        }
        let mut pba = vec![0u8; self.table.len().div_ceil(8)];
        for v in 0..self.vectors() {
            if self.is_pending(v) {
                pba[usize::from(v / 8)] |= 1 << (v % 8);
            }
        }
        out.extend_from_slice(&pba);
        out
    }

    /// Takes what [`Msix::save_raw`] gave (an incoming migration's table
    /// and pending bits) under message control `control` (the capability's
    /// word, loaded with the configuration space). As QEMU's load: a
    /// vector that is pending but can be sent under the loaded masks is
    /// no longer pending, and no message goes (its vector is not in use
    /// yet); a pending masked vector stays pending. Refused, changing
    /// nothing, when the length is not this function's.
    pub fn load_raw(&mut self, raw: &[u8], control: u16) -> Result<Vec<MsiMessage>, PciError> {
        let vectors = self.vectors();
        let want = super::state::msix_state_len(vectors) as usize;
        if raw.len() != want {
            return Err(PciError::BadMsix {
                reason: format!(
                    "{} bytes of table and pending bits, this function's have {want}",
                    raw.len()
                ),
            });
        }
        let (table, pba) = raw.split_at(usize::from(vectors) * ENTRY_SIZE as usize);
        let mut fresh = Msix::new(vectors)?;
        // Enabled and function-masked: a notify makes a vector pending.
        fresh.write_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        for (i, word) in table.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            fresh.table_write(i as u64 * 4, 4, u64::from(v))?;
        }
        let function_masked = control & CONTROL_ENABLE == 0 || control & CONTROL_FUNCTION_MASK != 0;
        for v in 0..vectors {
            let pending = pba.get(usize::from(v / 8)).is_some_and(|b| b & (1 << (v % 8)) != 0);
            let vector_masked = fresh.table[usize::from(v)][3] & VECTOR_MASKED != 0;
            if pending && (function_masked || vector_masked) {
                fresh.notify(v);
            }
        }
        let sent = fresh.write_control(control);
        *self = fresh;
        Ok(sent)
    }

    /// Back to the reset state: every vector masked and zeroed, nothing
    /// pending, disabled.
    pub fn reset(&mut self) {
        self.table.fill([0, 0, 0, VECTOR_MASKED]);
        self.pba.fill(0);
        self.control = 0;
    }

    fn message(&self, v: u16) -> MsiMessage {
        let e = self.table[usize::from(v)];
        MsiMessage {
            address: u64::from(e[1]) << 32 | u64::from(e[0]),
            data: e[2],
        }
    }

    fn deliver_if_pending(&mut self, v: u16) -> Option<MsiMessage> {
        if self.is_masked(v) || !self.is_pending(v) {
            return None;
        }
        self.set_pending(v, false);
        Some(self.message(v))
    }

    fn set_pending(&mut self, v: u16, on: bool) {
        let v = usize::from(v);
        if let Some(w) = self.pba.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    fn table_slot(&self, offset: u64, size: u8) -> Result<(usize, usize), PciError> {
        let ok =
            matches!(size, 4 | 8) && offset % u64::from(size) == 0 && offset + u64::from(size) <= self.table_size();
        if !ok {
            return Err(PciError::BadMsix {
                reason: format!("table access of {size} bytes at {offset:#x}"),
            });
        }
        Ok(((offset / ENTRY_SIZE) as usize, ((offset % ENTRY_SIZE) / 4) as usize))
    }
}
