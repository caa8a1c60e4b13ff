//! Device slots and their endpoints as the controller tracks them, and the
//! layout of the slot and endpoint contexts they mirror in guest memory.

use super::ring::{Ring, RingTrb};

/// Bytes of a context (HCCPARAMS1.CSZ = 0).
pub const CONTEXT_SIZE: u64 = 32;

/// Slot context fields.
pub mod slot_ctx {
    /// Dword 3: slot state, bits 31:27.
    pub const STATE_SHIFT: u32 = 27;
    /// Slot state mask (after the shift).
    pub const STATE_MASK: u32 = 0x1f;
    /// Dword 0: context entries, bits 31:27.
    pub const ENTRIES_SHIFT: u32 = 27;
    /// Context entries mask (after the shift).
    pub const ENTRIES_MASK: u32 = 0x1f;
    /// Slot state: enabled (or disabled).
    pub const ENABLED: u32 = 0;
    /// Slot state: default (address 0).
    pub const DEFAULT: u32 = 1;
    /// Slot state: addressed.
    pub const ADDRESSED: u32 = 2;
    /// Slot state: configured.
    pub const CONFIGURED: u32 = 3;

    /// The slot state of dword 3.
    pub const fn state(dw3: u32) -> u32 {
        (dw3 >> STATE_SHIFT) & STATE_MASK
    }

    /// Dword 3 with its slot state set to `state`.
    pub const fn with_state(dw3: u32, state: u32) -> u32 {
        (dw3 & !(STATE_MASK << STATE_SHIFT)) | (state << STATE_SHIFT)
    }

    /// The interrupter target of dword 2 (bits 31:22).
    pub const fn interrupter(dw2: u32) -> u16 {
        ((dw2 >> 22) & 0x3ff) as u16
    }

    /// The root hub port number of dword 1 (bits 23:16).
    pub const fn root_port(dw1: u32) -> u32 {
        (dw1 >> 16) & 0xff
    }
}

/// An endpoint's type (endpoint context dword 1, bits 5:3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpType {
    /// Not valid.
    Invalid = 0,
    /// Isochronous OUT.
    IsoOut = 1,
    /// Bulk OUT.
    BulkOut = 2,
    /// Interrupt OUT.
    IntrOut = 3,
    /// Control (bidirectional).
    Control = 4,
    /// Isochronous IN.
    IsoIn = 5,
    /// Bulk IN.
    BulkIn = 6,
    /// Interrupt IN.
    IntrIn = 7,
}

impl EpType {
    /// From the three bits.
    pub const fn from_bits(bits: u32) -> EpType {
        match bits & 7 {
            1 => EpType::IsoOut,
            2 => EpType::BulkOut,
            3 => EpType::IntrOut,
            4 => EpType::Control,
            5 => EpType::IsoIn,
            6 => EpType::BulkIn,
            7 => EpType::IntrIn,
            _ => EpType::Invalid,
        }
    }

    /// Whether data moves to the host (QEMU takes bit 2 of the type).
    pub const fn is_in(self) -> bool {
        self as u32 >> 2 != 0
    }

    /// Whether it is isochronous (never halted).
    pub const fn is_iso(self) -> bool {
        matches!(self, EpType::IsoIn | EpType::IsoOut)
    }
}

/// An endpoint's state (endpoint context dword 0, bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpState {
    /// Disabled.
    Disabled,
    /// Running.
    Running,
    /// Halted (after a STALL or an error).
    Halted,
    /// Stopped (Stop or Reset Endpoint).
    Stopped,
    /// Error.
    Error,
    /// A reserved value read back from a guest's context (5–7).
    Reserved(u8),
}

impl EpState {
    /// From the three bits.
    pub const fn from_bits(bits: u32) -> EpState {
        match bits & 7 {
            0 => EpState::Disabled,
            1 => EpState::Running,
            2 => EpState::Halted,
            3 => EpState::Stopped,
            4 => EpState::Error,
            other => EpState::Reserved(other as u8),
        }
    }

    /// The three bits.
    pub const fn bits(self) -> u32 {
        match self {
            EpState::Disabled => 0,
            EpState::Running => 1,
            EpState::Halted => 2,
            EpState::Stopped => 3,
            EpState::Error => 4,
            EpState::Reserved(v) => v as u32 & 7,
        }
    }
}

/// A transfer descriptor taken off a ring and not finished (NAKed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Its TRBs.
    pub trbs: Vec<RingTrb>,
}

/// An enabled endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its transfer ring.
    pub ring: Ring,
    /// Its type.
    pub kind: EpType,
    /// Guest address of its endpoint context (in the output context).
    pub pctx: u64,
    /// Max packet size × (max burst + 1).
    pub max_psize: u32,
    /// State.
    pub state: EpState,
    /// MaxPStreams of the context (streams are not run).
    pub max_pstreams: u32,
    /// Linear stream array.
    pub lsa: bool,
    /// Interval exponent (the service interval is 2^n microframes).
    pub interval: u8,
    /// The transfer that was NAKed, retried on the next kick.
    pub retry: Option<Transfer>,
}

impl Endpoint {
    /// An endpoint from its context's five dwords at `pctx` (QEMU's
    /// `xhci_init_epctx`), running.
    pub fn from_context(pctx: u64, ctx: &[u32; 5], streams_mask: u32) -> Endpoint {
        let dequeue = u64::from(ctx[3]) << 32 | u64::from(ctx[2] & !0xf);
        let max_packet = ctx[1] >> 16;
        let burst = (ctx[1] >> 8) & 0xff;
        Endpoint {
            ring: Ring {
                dequeue,
                ccs: ctx[2] & 1 != 0,
            },
            kind: EpType::from_bits(ctx[1] >> 3),
            pctx,
            max_psize: max_packet * (1 + burst),
            state: EpState::Running,
            max_pstreams: (ctx[0] >> 10) & streams_mask,
            lsa: (ctx[0] >> 15) & 1 != 0,
            interval: ((ctx[0] >> 16) & 0xff) as u8,
            retry: None,
        }
    }
}

/// A device slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Enabled by Enable Slot.
    pub enabled: bool,
    /// Addressed by Address Device.
    pub addressed: bool,
    /// Guest address of its output device context.
    pub ctx: u64,
    /// The USB port (0-based) of its device.
    pub usb_port: Option<usize>,
    /// Interrupter target.
    pub intr: u16,
    /// Endpoints by DCI − 1 (31).
    pub eps: Vec<Option<Endpoint>>,
}

impl Default for Slot {
    /// Disabled, without endpoints.
    fn default() -> Slot {
        Slot {
            enabled: false,
            addressed: false,
            ctx: 0,
            usb_port: None,
            intr: 0,
            eps: vec![None; 31],
        }
    }
}
