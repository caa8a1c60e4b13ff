//! BAR0 of `qemu-xhci`: where each register block sits, the register
//! offsets inside each block, and their bits.

use bitflags::bitflags;

/// Bytes of BAR0 (QEMU's `XHCI_LEN_REGS`).
pub const LEN_REGS: u64 = 0x4000;
/// Bytes of the capability registers; also CAPLENGTH.
pub const LEN_CAP: u64 = 0x40;
/// Where the operational registers start.
pub const OFF_OPER: u64 = LEN_CAP;
/// Bytes of the operational registers before the port register sets.
pub const LEN_OPER: u64 = 0x400;
/// Where port register set 0 starts.
pub const OFF_PORTS: u64 = OFF_OPER + LEN_OPER;
/// Bytes of one port register set.
pub const PORT_STRIDE: u64 = 0x10;
/// Where the runtime registers start (RTSOFF).
pub const OFF_RUNTIME: u64 = 0x1000;
/// Bytes of the runtime registers: MFINDEX's block and 16 interrupters.
pub const LEN_RUNTIME: u64 = (MAX_INTRS as u64 + 1) * 0x20;
/// Where interrupter 0's registers start, relative to the runtime block.
pub const INTR_BASE: u64 = 0x20;
/// Bytes of one interrupter register set.
pub const INTR_STRIDE: u64 = 0x20;
/// Where the doorbell array starts (DBOFF).
pub const OFF_DOORBELL: u64 = 0x2000;
/// Bytes of the doorbell block (QEMU reserves 0x20 per slot).
pub const LEN_DOORBELL: u64 = (MAX_SLOTS as u64 + 1) * 0x20;
/// Where the MSI-X table sits in BAR0.
pub const OFF_MSIX_TABLE: u64 = 0x3000;
/// Where the MSI-X pending-bit array sits in BAR0.
pub const OFF_MSIX_PBA: u64 = 0x3800;

// The registers come before the MSI-X structures (the PCI wrapper hands
// every offset below the table to the core without decoding it).
const _: () = assert!(OFF_DOORBELL + LEN_DOORBELL <= OFF_MSIX_TABLE && OFF_MSIX_TABLE < OFF_MSIX_PBA);

/// Most USB2 ports (`p2` is clamped to it).
pub const MAX_PORTS_2: u32 = 15;
/// Most USB3 ports (`p3` is clamped to it).
pub const MAX_PORTS_3: u32 = 15;
/// Most device slots.
pub const MAX_SLOTS: u32 = 64;
/// Most interrupters.
pub const MAX_INTRS: u32 = 16;

/// Capability registers (dword offsets in the block; read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum CapReg {
    /// CAPLENGTH (byte 0) and HCIVERSION (bytes 2–3).
    CapLength = 0x00,
    /// HCSPARAMS1: ports, interrupters, slots.
    HcsParams1 = 0x04,
    /// HCSPARAMS2.
    HcsParams2 = 0x08,
    /// HCSPARAMS3.
    HcsParams3 = 0x0c,
    /// HCCPARAMS1: AC64, MaxPSASize, xECP.
    HccParams1 = 0x10,
    /// DBOFF.
    DbOff = 0x14,
    /// RTSOFF.
    RtsOff = 0x18,
    /// HCCPARAMS2.
    HccParams2 = 0x1c,
    /// Supported Protocol capability, USB 2: ID, next, revision.
    ProtocolUsb2 = 0x20,
    /// USB 2 protocol: name string "USB ".
    ProtocolUsb2Name = 0x24,
    /// USB 2 protocol: compatible port offset and count.
    ProtocolUsb2Ports = 0x28,
    /// USB 2 protocol: slot type (0).
    ProtocolUsb2Slot = 0x2c,
    /// Supported Protocol capability, USB 3.
    ProtocolUsb3 = 0x30,
    /// USB 3 protocol: name string.
    ProtocolUsb3Name = 0x34,
    /// USB 3 protocol: compatible port offset and count.
    ProtocolUsb3Ports = 0x38,
    /// USB 3 protocol: slot type.
    ProtocolUsb3Slot = 0x3c,
}

impl TryFrom<u64> for CapReg {
    type Error = u64;
    fn try_from(offset: u64) -> Result<CapReg, u64> {
        use CapReg::*;
        Ok(match offset {
            0x00 => CapLength,
            0x04 => HcsParams1,
            0x08 => HcsParams2,
            0x0c => HcsParams3,
            0x10 => HccParams1,
            0x14 => DbOff,
            0x18 => RtsOff,
            0x1c => HccParams2,
            0x20 => ProtocolUsb2,
            0x24 => ProtocolUsb2Name,
            0x28 => ProtocolUsb2Ports,
            0x2c => ProtocolUsb2Slot,
            0x30 => ProtocolUsb3,
            0x34 => ProtocolUsb3Name,
            0x38 => ProtocolUsb3Ports,
            0x3c => ProtocolUsb3Slot,
            other => return Err(other),
        })
    }
}

/// Operational registers (offsets from [`OFF_OPER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum OperReg {
    /// USBCMD.
    UsbCmd = 0x00,
    /// USBSTS.
    UsbSts = 0x04,
    /// PAGESIZE (reads 1: 4 KiB).
    PageSize = 0x08,
    /// DNCTRL.
    DnCtrl = 0x14,
    /// CRCR, low dword.
    CrcrLo = 0x18,
    /// CRCR, high dword (writing it starts or stops the command ring).
    CrcrHi = 0x1c,
    /// DCBAAP, low dword.
    DcbaapLo = 0x30,
    /// DCBAAP, high dword.
    DcbaapHi = 0x34,
    /// CONFIG.
    Config = 0x38,
}

impl TryFrom<u64> for OperReg {
    type Error = u64;
    fn try_from(offset: u64) -> Result<OperReg, u64> {
        use OperReg::*;
        Ok(match offset {
            0x00 => UsbCmd,
            0x04 => UsbSts,
            0x08 => PageSize,
            0x14 => DnCtrl,
            0x18 => CrcrLo,
            0x1c => CrcrHi,
            0x30 => DcbaapLo,
            0x34 => DcbaapHi,
            0x38 => Config,
            other => return Err(other),
        })
    }
}

/// A port register set (offsets from the set's base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum PortReg {
    /// PORTSC.
    PortSc = 0x0,
    /// PORTPMSC (reads 0).
    PortPmsc = 0x4,
    /// PORTLI (reads 0).
    PortLi = 0x8,
    /// PORTHLPMC (reads 0).
    PortHlpmc = 0xc,
}

impl TryFrom<u64> for PortReg {
    type Error = u64;
    fn try_from(offset: u64) -> Result<PortReg, u64> {
        Ok(match offset {
            0x0 => PortReg::PortSc,
            0x4 => PortReg::PortPmsc,
            0x8 => PortReg::PortLi,
            0xc => PortReg::PortHlpmc,
            other => return Err(other),
        })
    }
}

/// An interrupter's registers (offsets from its set's base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum IntrReg {
    /// IMAN: IP (W1C), IE.
    Iman = 0x00,
    /// IMOD.
    Imod = 0x04,
    /// ERSTSZ (16 bits).
    Erstsz = 0x08,
    /// ERSTBA, low dword (64-byte aligned).
    ErstbaLo = 0x10,
    /// ERSTBA, high dword (writing it resets the event ring).
    ErstbaHi = 0x14,
    /// ERDP, low dword (EHB W1C).
    ErdpLo = 0x18,
    /// ERDP, high dword.
    ErdpHi = 0x1c,
}

impl TryFrom<u64> for IntrReg {
    type Error = u64;
    fn try_from(offset: u64) -> Result<IntrReg, u64> {
        use IntrReg::*;
        Ok(match offset {
            0x00 => Iman,
            0x04 => Imod,
            0x08 => Erstsz,
            0x10 => ErstbaLo,
            0x14 => ErstbaHi,
            0x18 => ErdpLo,
            0x1c => ErdpHi,
            other => return Err(other),
        })
    }
}

/// Which register of BAR0 an offset names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bar0Reg {
    /// A capability register dword.
    Cap(u64),
    /// An operational register; `Err` for an offset QEMU does not decode
    /// (reads 0, writes ignored).
    Oper(Result<OperReg, u64>),
    /// A port register set: the 0-based port and the register.
    Port(usize, Result<PortReg, u64>),
    /// MFINDEX's block of the runtime registers (offset inside it).
    RuntimeHead(u64),
    /// An interrupter's register: its number and the register.
    Intr(usize, Result<IntrReg, u64>),
    /// Doorbell `n` (0: the host controller's).
    Doorbell(usize),
    /// The MSI-X table (offset inside it).
    MsixTable(u64),
    /// The MSI-X pending-bit array (offset inside it).
    MsixPba(u64),
    /// Nothing decodes here: reads 0, writes are dropped.
    Unassigned,
}

/// Decodes a BAR0 offset for a controller with `ports` port register sets
/// and an MSI-X table/PBA of the given sizes (0 without MSI-X).
// Inlined: as a call, its returned enum went through memory on every
// register access.
#[inline(always)]
pub fn decode(offset: u64, ports: usize, msix_table: u64, msix_pba: u64) -> Bar0Reg {
    let port_end = OFF_PORTS + PORT_STRIDE * ports as u64;
    match offset {
        o if o < LEN_CAP => Bar0Reg::Cap(o & !3),
        o if o < OFF_PORTS => Bar0Reg::Oper(OperReg::try_from(o - OFF_OPER)),
        o if o < port_end => {
            let rel = o - OFF_PORTS;
            Bar0Reg::Port((rel / PORT_STRIDE) as usize, PortReg::try_from(rel % PORT_STRIDE))
        }
        o if (OFF_RUNTIME..OFF_RUNTIME + INTR_BASE).contains(&o) => Bar0Reg::RuntimeHead(o - OFF_RUNTIME),
        o if (OFF_RUNTIME + INTR_BASE..OFF_RUNTIME + LEN_RUNTIME).contains(&o) => {
            let rel = o - OFF_RUNTIME - INTR_BASE;
            Bar0Reg::Intr((rel / INTR_STRIDE) as usize, IntrReg::try_from(rel % INTR_STRIDE))
        }
        o if (OFF_DOORBELL..OFF_DOORBELL + LEN_DOORBELL).contains(&o) => {
            Bar0Reg::Doorbell(((o - OFF_DOORBELL) / 4) as usize)
        }
        o if (OFF_MSIX_TABLE..OFF_MSIX_TABLE + msix_table).contains(&o) => Bar0Reg::MsixTable(o - OFF_MSIX_TABLE),
        o if (OFF_MSIX_PBA..OFF_MSIX_PBA + msix_pba).contains(&o) => Bar0Reg::MsixPba(o - OFF_MSIX_PBA),
        _ => Bar0Reg::Unassigned,
    }
}

bitflags! {
    /// USBCMD.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct UsbCmd: u32 {
        /// Run/Stop.
        const RS = 1 << 0;
        /// Host controller reset.
        const HCRST = 1 << 1;
        /// Interrupter enable.
        const INTE = 1 << 2;
        /// Host system error enable.
        const HSEE = 1 << 3;
        /// Light host controller reset.
        const LHCRST = 1 << 7;
        /// Controller save state.
        const CSS = 1 << 8;
        /// Controller restore state.
        const CRS = 1 << 9;
        /// Enable MFINDEX wrap events.
        const EWE = 1 << 10;
        /// Enable U3 MFINDEX stop.
        const EU3S = 1 << 11;
    }
}

impl UsbCmd {
    /// The bits USBCMD keeps (QEMU stores `val & 0xc0f`).
    pub const STORED: u32 = 0xc0f;
}

bitflags! {
    /// USBSTS.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct UsbSts: u32 {
        /// Halted.
        const HCH = 1 << 0;
        /// Host system error.
        const HSE = 1 << 2;
        /// Event interrupt.
        const EINT = 1 << 3;
        /// Port change detect.
        const PCD = 1 << 4;
        /// Save state status.
        const SSS = 1 << 8;
        /// Restore state status.
        const RSS = 1 << 9;
        /// Save/restore error.
        const SRE = 1 << 10;
        /// Controller not ready.
        const CNR = 1 << 11;
        /// Host controller error.
        const HCE = 1 << 12;
    }
}

impl UsbSts {
    /// The bits a guest clears by writing 1.
    pub const WRITE_ONE_TO_CLEAR: UsbSts = UsbSts::HSE.union(UsbSts::EINT).union(UsbSts::PCD).union(UsbSts::SRE);
}

bitflags! {
    /// PORTSC's one-bit fields (PLS, speed and PIC are fields: see
    /// [`PortSc::pls`] and [`PortSc::speed`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PortSc: u32 {
        /// Current connect status.
        const CCS = 1 << 0;
        /// Port enabled.
        const PED = 1 << 1;
        /// Over-current active.
        const OCA = 1 << 3;
        /// Port reset.
        const PR = 1 << 4;
        /// Port power.
        const PP = 1 << 9;
        /// Link write strobe.
        const LWS = 1 << 16;
        /// Connect status change.
        const CSC = 1 << 17;
        /// Port enabled/disabled change.
        const PEC = 1 << 18;
        /// Warm port reset change.
        const WRC = 1 << 19;
        /// Over-current change.
        const OCC = 1 << 20;
        /// Port reset change.
        const PRC = 1 << 21;
        /// Port link state change.
        const PLC = 1 << 22;
        /// Port config error change.
        const CEC = 1 << 23;
        /// Cold attach status.
        const CAS = 1 << 24;
        /// Wake on connect enable.
        const WCE = 1 << 25;
        /// Wake on disconnect enable.
        const WDE = 1 << 26;
        /// Wake on over-current enable.
        const WOE = 1 << 27;
        /// Device removable.
        const DR = 1 << 30;
        /// Warm port reset.
        const WPR = 1 << 31;
    }
}

impl PortSc {
    /// The change bits a guest clears by writing 1.
    pub const CHANGE_BITS: PortSc = PortSc::CSC
        .union(PortSc::PEC)
        .union(PortSc::WRC)
        .union(PortSc::OCC)
        .union(PortSc::PRC)
        .union(PortSc::PLC)
        .union(PortSc::CEC);
    /// The bits a guest writes as they are.
    pub const READ_WRITE: PortSc = PortSc::PP.union(PortSc::WCE).union(PortSc::WDE).union(PortSc::WOE);
    /// Shift of the port link state field.
    pub const PLS_SHIFT: u32 = 5;
    /// Mask of the port link state field (after the shift).
    pub const PLS_MASK: u32 = 0xf;
    /// Shift of the port speed field.
    pub const SPEED_SHIFT: u32 = 10;
    /// Mask of the port speed field (after the shift).
    pub const SPEED_MASK: u32 = 0xf;

    /// The link state field of a PORTSC value.
    pub const fn pls(raw: u32) -> u32 {
        (raw >> Self::PLS_SHIFT) & Self::PLS_MASK
    }

    /// `raw` with its link state set to `pls`.
    pub const fn with_pls(raw: u32, pls: LinkState) -> u32 {
        (raw & !(Self::PLS_MASK << Self::PLS_SHIFT)) | ((pls as u32) << Self::PLS_SHIFT)
    }

    /// The port speed field of a PORTSC value (1 full, 2 low, 3 high, 4 super).
    pub const fn speed(raw: u32) -> u32 {
        (raw >> Self::SPEED_SHIFT) & Self::SPEED_MASK
    }
}

/// Port link states (PORTSC.PLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkState {
    /// U0: active.
    U0 = 0,
    /// U1.
    U1 = 1,
    /// U2.
    U2 = 2,
    /// U3: suspended.
    U3 = 3,
    /// Disabled.
    Disabled = 4,
    /// Waiting for a connection.
    RxDetect = 5,
    /// Inactive.
    Inactive = 6,
    /// Polling: a USB2 device waits for a port reset.
    Polling = 7,
    /// Recovery.
    Recovery = 8,
    /// Hot reset.
    HotReset = 9,
    /// Compliance mode.
    Compliance = 10,
    /// Test mode.
    TestMode = 11,
    /// Resume.
    Resume = 15,
}

/// PORTSC speed field values.
pub mod port_speed {
    /// Full speed.
    pub const FULL: u32 = 1;
    /// Low speed.
    pub const LOW: u32 = 2;
    /// High speed.
    pub const HIGH: u32 = 3;
    /// SuperSpeed.
    pub const SUPER: u32 = 4;
}

bitflags! {
    /// CRCR's low bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Crcr: u32 {
        /// Ring cycle state.
        const RCS = 1 << 0;
        /// Command stop.
        const CS = 1 << 1;
        /// Command abort.
        const CA = 1 << 2;
        /// Command ring running.
        const CRR = 1 << 3;
    }
}

bitflags! {
    /// IMAN.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Iman: u32 {
        /// Interrupt pending (W1C).
        const IP = 1 << 0;
        /// Interrupt enable.
        const IE = 1 << 1;
    }
}

/// ERDP: event handler busy (W1C).
pub const ERDP_EHB: u32 = 1 << 3;
