//! Transfer request blocks: their layout, types, bits, and the completion
//! codes events carry (numbered as QEMU's `TRBType` and `TRBCCode`).

/// Bytes of a TRB.
pub const TRB_SIZE: u64 = 16;

/// A TRB as it sits in guest memory (little-endian): parameter, status,
/// control (cycle bit 0, type bits 15:10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Trb {
    /// Parameter (a pointer, or immediate data).
    pub parameter: u64,
    /// Status (transfer length, interrupter target; completion code in events).
    pub status: u32,
    /// Control (cycle, flags, type, slot and endpoint ids).
    pub control: u32,
}

impl Trb {
    /// From its 16 bytes.
    pub fn from_bytes(b: &[u8; 16]) -> Trb {
        let mut p = [0u8; 8];
        p.copy_from_slice(&b[..8]);
        Trb {
            parameter: u64::from_le_bytes(p),
            status: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            control: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }

    /// Its 16 bytes.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.parameter.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..].copy_from_slice(&self.control.to_le_bytes());
        b
    }

    /// The cycle bit.
    pub const fn cycle(&self) -> bool {
        self.control & bits::C != 0
    }

    /// The raw type field.
    pub const fn type_code(&self) -> u8 {
        ((self.control >> 10) & 0x3f) as u8
    }

    /// The type, if it is one QEMU names.
    pub fn trb_type(&self) -> Option<TrbType> {
        TrbType::try_from(self.type_code()).ok()
    }

    /// The transfer length of a transfer TRB (17 bits).
    pub const fn transfer_length(&self) -> u32 {
        self.status & 0x1ffff
    }

    /// The interrupter a transfer TRB's events go to.
    pub const fn interrupter(&self) -> u16 {
        ((self.status >> 22) & 0x3ff) as u16
    }

    /// A command TRB's slot id.
    pub const fn slot_id(&self) -> u8 {
        (self.control >> 24) as u8
    }

    /// A command TRB's endpoint id (DCI).
    pub const fn endpoint_id(&self) -> u8 {
        ((self.control >> 16) & 0x1f) as u8
    }

    /// A TRB of `kind` with the other control bits in `control`.
    pub const fn new(kind: TrbType, parameter: u64, status: u32, control: u32) -> Trb {
        Trb {
            parameter,
            status,
            control: control | ((kind as u32) << 10),
        }
    }
}

/// TRB types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrbType {
    /// Normal (bulk and interrupt data).
    Normal = 1,
    /// Setup stage.
    Setup = 2,
    /// Data stage.
    Data = 3,
    /// Status stage.
    Status = 4,
    /// Isochronous.
    Isoch = 5,
    /// Link to another ring segment.
    Link = 6,
    /// Event data.
    EventData = 7,
    /// Transfer no-op.
    NoOp = 8,
    /// Enable Slot command.
    EnableSlot = 9,
    /// Disable Slot command.
    DisableSlot = 10,
    /// Address Device command.
    AddressDevice = 11,
    /// Configure Endpoint command.
    ConfigureEndpoint = 12,
    /// Evaluate Context command.
    EvaluateContext = 13,
    /// Reset Endpoint command.
    ResetEndpoint = 14,
    /// Stop Endpoint command.
    StopEndpoint = 15,
    /// Set TR Dequeue Pointer command.
    SetTrDequeue = 16,
    /// Reset Device command.
    ResetDevice = 17,
    /// Force Event command.
    ForceEvent = 18,
    /// Negotiate Bandwidth command.
    NegotiateBandwidth = 19,
    /// Set Latency Tolerance Value command.
    SetLatencyTolerance = 20,
    /// Get Port Bandwidth command.
    GetPortBandwidth = 21,
    /// Force Header command.
    ForceHeader = 22,
    /// No Op command.
    NoOpCommand = 23,
    /// Transfer event.
    Transfer = 32,
    /// Command Completion event.
    CommandCompletion = 33,
    /// Port Status Change event.
    PortStatusChange = 34,
    /// Bandwidth Request event.
    BandwidthRequest = 35,
    /// Doorbell event.
    Doorbell = 36,
    /// Host Controller event.
    HostController = 37,
    /// Device Notification event.
    DeviceNotification = 38,
    /// MFINDEX Wrap event.
    MfindexWrap = 39,
    /// NEC vendor: firmware revision.
    NecFirmwareRevision = 49,
    /// NEC vendor: challenge/response.
    NecChallengeResponse = 50,
}

impl TryFrom<u8> for TrbType {
    type Error = u8;
    fn try_from(v: u8) -> Result<TrbType, u8> {
        use TrbType::*;
        Ok(match v {
            1 => Normal,
            2 => Setup,
            3 => Data,
            4 => Status,
            5 => Isoch,
            6 => Link,
            7 => EventData,
            8 => NoOp,
            9 => EnableSlot,
            10 => DisableSlot,
            11 => AddressDevice,
            12 => ConfigureEndpoint,
            13 => EvaluateContext,
            14 => ResetEndpoint,
            15 => StopEndpoint,
            16 => SetTrDequeue,
            17 => ResetDevice,
            18 => ForceEvent,
            19 => NegotiateBandwidth,
            20 => SetLatencyTolerance,
            21 => GetPortBandwidth,
            22 => ForceHeader,
            23 => NoOpCommand,
            32 => Transfer,
            33 => CommandCompletion,
            34 => PortStatusChange,
            35 => BandwidthRequest,
            36 => Doorbell,
            37 => HostController,
            38 => DeviceNotification,
            39 => MfindexWrap,
            49 => NecFirmwareRevision,
            50 => NecChallengeResponse,
            other => return Err(other),
        })
    }
}

/// Completion codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompletionCode {
    /// Invalid.
    Invalid = 0,
    /// Success.
    Success = 1,
    /// Data buffer error.
    DataBufferError = 2,
    /// Babble detected.
    BabbleDetected = 3,
    /// USB transaction error.
    UsbTransactionError = 4,
    /// TRB error.
    TrbError = 5,
    /// Stall error.
    StallError = 6,
    /// Resource error.
    ResourceError = 7,
    /// Bandwidth error.
    BandwidthError = 8,
    /// No slots available.
    NoSlotsError = 9,
    /// Invalid stream type.
    InvalidStreamTypeError = 10,
    /// Slot not enabled.
    SlotNotEnabledError = 11,
    /// Endpoint not enabled.
    EpNotEnabledError = 12,
    /// Short packet.
    ShortPacket = 13,
    /// Ring underrun.
    RingUnderrun = 14,
    /// Ring overrun.
    RingOverrun = 15,
    /// VF event ring full.
    VfEventRingFull = 16,
    /// Parameter error.
    ParameterError = 17,
    /// Bandwidth overrun.
    BandwidthOverrun = 18,
    /// Context state error.
    ContextStateError = 19,
    /// No ping response.
    NoPingResponseError = 20,
    /// Event ring full.
    EventRingFullError = 21,
    /// Incompatible device.
    IncompatibleDeviceError = 22,
    /// Missed service.
    MissedServiceError = 23,
    /// Command ring stopped.
    CommandRingStopped = 24,
    /// Command aborted.
    CommandAborted = 25,
    /// Stopped.
    Stopped = 26,
    /// Stopped, length invalid.
    StoppedLengthInvalid = 27,
    /// Max exit latency too large.
    MaxExitLatencyTooLarge = 29,
    /// Isoch buffer overrun.
    IsochBufferOverrun = 31,
    /// Event lost.
    EventLostError = 32,
    /// Undefined.
    UndefinedError = 33,
    /// Invalid stream id.
    InvalidStreamIdError = 34,
    /// Secondary bandwidth error.
    SecondaryBandwidthError = 35,
    /// Split transaction error.
    SplitTransactionError = 36,
}

impl TryFrom<u8> for CompletionCode {
    type Error = u8;
    fn try_from(v: u8) -> Result<CompletionCode, u8> {
        use CompletionCode::*;
        Ok(match v {
            0 => Invalid,
            1 => Success,
            2 => DataBufferError,
            3 => BabbleDetected,
            4 => UsbTransactionError,
            5 => TrbError,
            6 => StallError,
            7 => ResourceError,
            8 => BandwidthError,
            9 => NoSlotsError,
            10 => InvalidStreamTypeError,
            11 => SlotNotEnabledError,
            12 => EpNotEnabledError,
            13 => ShortPacket,
            14 => RingUnderrun,
            15 => RingOverrun,
            16 => VfEventRingFull,
            17 => ParameterError,
            18 => BandwidthOverrun,
            19 => ContextStateError,
            20 => NoPingResponseError,
            21 => EventRingFullError,
            22 => IncompatibleDeviceError,
            23 => MissedServiceError,
            24 => CommandRingStopped,
            25 => CommandAborted,
            26 => Stopped,
            27 => StoppedLengthInvalid,
            29 => MaxExitLatencyTooLarge,
            31 => IsochBufferOverrun,
            32 => EventLostError,
            33 => UndefinedError,
            34 => InvalidStreamIdError,
            35 => SecondaryBandwidthError,
            36 => SplitTransactionError,
            other => return Err(other),
        })
    }
}

/// Control-word bits.
pub mod bits {
    /// Cycle.
    pub const C: u32 = 1 << 0;
    /// Link TRB: toggle cycle.
    pub const LINK_TC: u32 = 1 << 1;
    /// Event: event data (the parameter is an Event Data TRB's).
    pub const EV_ED: u32 = 1 << 2;
    /// Transfer: evaluate next TRB.
    pub const TR_ENT: u32 = 1 << 1;
    /// Transfer: interrupt on short packet.
    pub const TR_ISP: u32 = 1 << 2;
    /// Transfer: no snoop.
    pub const TR_NS: u32 = 1 << 3;
    /// Transfer: chain.
    pub const TR_CH: u32 = 1 << 4;
    /// Transfer: interrupt on completion.
    pub const TR_IOC: u32 = 1 << 5;
    /// Transfer: immediate data (in the parameter).
    pub const TR_IDT: u32 = 1 << 6;
    /// Transfer: block event interrupt.
    pub const TR_BEI: u32 = 1 << 9;
    /// Data/Status stage: direction IN.
    pub const TR_DIR: u32 = 1 << 16;
    /// Isoch: start isoch ASAP.
    pub const TR_SIA: u32 = 1 << 31;
    /// Address Device: block set address request.
    pub const CR_BSR: u32 = 1 << 9;
    /// Configure Endpoint: deconfigure.
    pub const CR_DC: u32 = 1 << 9;
}
