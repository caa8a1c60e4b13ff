//! A TRB ring the controller consumes (command or transfer ring): its
//! dequeue pointer and consumer cycle state, and how TRBs are taken off it
//! through link TRBs, with QEMU's bounds.

use super::trb::{TRB_SIZE, Trb, TrbType, bits};
use crate::dma::Dma;

/// Link TRBs followed in one fetch before giving up (a guest's link loop).
pub const TRB_LINK_LIMIT: u32 = 32;
/// The most TRBs one transfer descriptor may have (32 segments of 64 KiB).
pub const MAX_TD_TRBS: usize = TRB_LINK_LIMIT as usize * 65536 / TRB_SIZE as usize;

/// A ring's consumer state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ring {
    /// Guest address of the next TRB.
    pub dequeue: u64,
    /// Consumer cycle state.
    pub ccs: bool,
}

/// A TRB taken off a ring, with where it was and the cycle it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingTrb {
    /// The TRB.
    pub trb: Trb,
    /// Its guest address.
    pub addr: u64,
    /// The ring's cycle state when it was taken.
    pub ccs: bool,
}

/// How long the next transfer descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// A complete descriptor of this many TRBs (links not counted).
    Complete(usize),
    /// The guest has not finished writing it (or nothing is there).
    Incomplete,
    /// Unreadable memory, or longer than [`MAX_TD_TRBS`].
    Bad,
}

fn read_trb(dma: &dyn Dma, addr: u64) -> Option<Trb> {
    let mut b = [0u8; 16];
    dma.read(addr, &mut b).ok()?;
    Some(Trb::from_bytes(&b))
}

impl Ring {
    /// A ring starting at `base` with cycle state 1 (QEMU's
    /// `xhci_ring_init`).
    pub const fn new(base: u64) -> Ring {
        Ring {
            dequeue: base,
            ccs: true,
        }
    }

    /// Takes the next TRB that is not a link (QEMU's `xhci_ring_fetch`):
    /// `None` when the guest does not own it (cycle bit), memory is
    /// unreadable, or more than [`TRB_LINK_LIMIT`] links follow each other.
    /// A reserved-type TRB is returned like any other; callers stop at it.
    pub fn fetch(&mut self, dma: &dyn Dma) -> Option<RingTrb> {
        let mut links = 0;
        loop {
            let trb = read_trb(dma, self.dequeue)?;
            if trb.cycle() != self.ccs {
                return None;
            }
            if trb.type_code() != TrbType::Link as u8 {
                let taken = RingTrb {
                    trb,
                    addr: self.dequeue,
                    ccs: self.ccs,
                };
                self.dequeue = self.dequeue.wrapping_add(TRB_SIZE);
                return Some(taken);
            }
            links += 1;
            if links > TRB_LINK_LIMIT {
                return None;
            }
            self.dequeue = trb.parameter;
            if trb.control & bits::LINK_TC != 0 {
                self.ccs = !self.ccs;
            }
        }
    }

    /// The length of the next transfer descriptor, without taking it
    /// (QEMU's `xhci_ring_chain_length`): TRBs up to one without the chain
    /// bit, a control transfer's setup-to-status stages counted as one.
    pub fn chain_length(&self, dma: &dyn Dma) -> Chain {
        let mut dequeue = self.dequeue;
        let mut ccs = self.ccs;
        let mut control_td = false;
        let mut links = 0;
        let mut length = 0;
        while length < MAX_TD_TRBS {
            let Some(trb) = read_trb(dma, dequeue) else {
                return Chain::Bad;
            };
            if trb.cycle() != ccs {
                return Chain::Incomplete;
            }
            let kind = trb.type_code();
            if kind == TrbType::Link as u8 {
                links += 1;
                if links > TRB_LINK_LIMIT {
                    return Chain::Incomplete;
                }
                dequeue = trb.parameter;
                if trb.control & bits::LINK_TC != 0 {
                    ccs = !ccs;
                }
                continue;
            }
            length += 1;
            dequeue = dequeue.wrapping_add(TRB_SIZE);
            if kind == TrbType::Setup as u8 {
                control_td = true;
            } else if kind == TrbType::Status as u8 {
                control_td = false;
            }
            if !control_td && trb.control & bits::TR_CH == 0 {
                return Chain::Complete(length);
            }
        }
        Chain::Bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::TestMemory;

    fn put(m: &TestMemory, addr: u64, trb: Trb) {
        assert!(m.write(addr, &trb.to_bytes()).is_ok());
    }

    #[test]
    fn links_toggle_the_cycle_and_loops_are_bounded() {
        let m = TestMemory::new(0x1000);
        put(&m, 0x100, Trb::new(TrbType::NoOp, 0, 0, bits::C));
        put(&m, 0x110, Trb::new(TrbType::Link, 0x100, 0, bits::C | bits::LINK_TC));
        let mut ring = Ring::new(0x100);
        assert_eq!(ring.fetch(&m).map(|t| t.addr), Some(0x100));
        assert_eq!(ring.fetch(&m), None, "after the toggle the old TRB is not the guest's");
        assert_eq!((ring.dequeue, ring.ccs), (0x100, false));
        // A link to itself without a toggle never ends: bounded.
        put(&m, 0x200, Trb::new(TrbType::Link, 0x200, 0, bits::C));
        let mut looped = Ring::new(0x200);
        assert_eq!(looped.fetch(&m), None);
        assert_eq!(looped.chain_length(&m), Chain::Incomplete);
        let mut outside = Ring::new(0x2000);
        assert_eq!(outside.fetch(&m), None);
        assert_eq!(outside.chain_length(&m), Chain::Bad);
    }

    #[test]
    fn a_control_descriptor_is_one_chain() {
        let m = TestMemory::new(0x1000);
        put(&m, 0x100, Trb::new(TrbType::Setup, 0, 8, bits::C | bits::TR_IDT));
        put(&m, 0x110, Trb::new(TrbType::Data, 0x800, 18, bits::C | bits::TR_DIR));
        put(&m, 0x120, Trb::new(TrbType::Status, 0, 0, bits::C | bits::TR_IOC));
        assert_eq!(Ring::new(0x100).chain_length(&m), Chain::Complete(3));
    }
}
