//! An interrupter: its registers, the event ring it writes (one ERST
//! segment, as QEMU supports), and the events themselves.

use super::regs::{ERDP_EHB, Iman};
use super::trb::{CompletionCode, TRB_SIZE, Trb, TrbType, bits};

/// The smallest and largest event ring segment QEMU accepts (TRBs).
pub const SEGMENT_TRBS: std::ops::RangeInclusive<u32> = 16..=4096;

/// An interrupter's registers and event ring state (QEMU's
/// `XHCIInterrupter`, the part that migrates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Interrupter {
    /// IMAN.
    pub iman: u32,
    /// IMOD.
    pub imod: u32,
    /// ERSTSZ.
    pub erstsz: u32,
    /// ERSTBA, low dword.
    pub erstba_low: u32,
    /// ERSTBA, high dword.
    pub erstba_high: u32,
    /// ERDP, low dword (with EHB).
    pub erdp_low: u32,
    /// ERDP, high dword.
    pub erdp_high: u32,
    /// Whether its MSI-X vector is in use (IMAN.IE while MSI-X was on).
    pub msix_used: bool,
    /// Producer cycle state.
    pub er_pcs: bool,
    /// Guest address of the event ring segment.
    pub er_start: u64,
    /// TRBs in the segment (0: no event ring).
    pub er_size: u32,
    /// Index of the next event to write.
    pub er_ep_idx: u32,
}

impl Interrupter {
    /// The state after a controller reset (registers 0, cycle 1; the
    /// segment and vector use stay, as in QEMU).
    pub fn reset(&mut self) {
        *self = Interrupter {
            msix_used: self.msix_used,
            er_start: self.er_start,
            er_size: self.er_size,
            er_pcs: true,
            ..Interrupter::default()
        };
    }

    /// IMAN's bits.
    pub fn iman(&self) -> Iman {
        Iman::from_bits_retain(self.iman)
    }

    /// ERSTBA.
    pub fn erstba(&self) -> u64 {
        u64::from(self.erstba_high) << 32 | u64::from(self.erstba_low)
    }

    /// ERDP (with its low flag bits).
    pub fn erdp(&self) -> u64 {
        u64::from(self.erdp_high) << 32 | u64::from(self.erdp_low)
    }

    /// Whether EHB is set.
    pub fn busy(&self) -> bool {
        self.erdp_low & ERDP_EHB != 0
    }

    /// The index of the TRB ERDP points at, if it points into the segment.
    pub fn dequeue_index(&self) -> Option<u32> {
        let erdp = self.erdp();
        let end = self
            .er_start
            .checked_add(TRB_SIZE.checked_mul(u64::from(self.er_size))?)?;
        (erdp >= self.er_start && erdp < end).then(|| ((erdp - self.er_start) / TRB_SIZE) as u32)
    }
}

/// An event to queue (QEMU's `XHCIEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Event type.
    pub kind: TrbType,
    /// Completion code.
    pub ccode: CompletionCode,
    /// The parameter: the TRB it completes, a port number << 24, ...
    pub ptr: u64,
    /// Transfer length residue (24 bits).
    pub length: u32,
    /// Extra control flags (ED).
    pub flags: u32,
    /// Slot id.
    pub slot_id: u8,
    /// Endpoint id.
    pub ep_id: u8,
}

impl Event {
    /// An event of `kind` with code `ccode`, everything else 0.
    pub const fn new(kind: TrbType, ccode: CompletionCode) -> Event {
        Event {
            kind,
            ccode,
            ptr: 0,
            length: 0,
            flags: 0,
            slot_id: 0,
            ep_id: 0,
        }
    }

    /// The event TRB with cycle bit `pcs`.
    pub fn to_trb(&self, pcs: bool) -> Trb {
        let mut control =
            u32::from(self.slot_id) << 24 | u32::from(self.ep_id) << 16 | self.flags | (self.kind as u32) << 10;
        if pcs {
            control |= bits::C;
        }
        Trb {
            parameter: self.ptr,
            status: self.length | (self.ccode as u32) << 24,
            control,
        }
    }
}
