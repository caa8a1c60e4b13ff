//! Constants of the savevm format v3 (QEMU's `savevm.h`, `ram.c`).

/// `QEMU_VM_FILE_MAGIC`: "QEVM".
pub const FILE_MAGIC: u32 = 0x5145_564d;
/// `QEMU_VM_FILE_VERSION`.
pub const FILE_VERSION: u32 = 3;
/// `QEMU_VM_FILE_VERSION_COMPAT`: recognised only to be refused.
pub const FILE_VERSION_COMPAT: u32 = 2;

/// The RAM section's idstr.
pub const RAM_IDSTR: &str = "ram";
/// The RAM section's version (the loader refuses others).
pub const RAM_VERSION: u32 = 4;
/// The target page size the RAM section is cut into (x86).
pub const TARGET_PAGE_SIZE: u64 = 4096;
/// `~TARGET_PAGE_MASK`: the flag bits of a RAM record's be64.
pub const TARGET_PAGE_FLAG_MASK: u64 = TARGET_PAGE_SIZE - 1;

/// Largest idstr (a u8 length).
pub const MAX_IDSTR_LEN: usize = 255;
/// Cap on a VMDESCRIPTION JSON trailer.
pub const MAX_VMDESC_LEN: u64 = 64 << 20;
/// Cap on a COMMAND payload (QEMU's largest is a RAM discard list; its
/// packaged command is capped at 16 MiB as well).
pub const MAX_COMMAND_LEN: u64 = 16 << 20;
/// Cap on the machine type name of the configuration record.
pub const MAX_MACHINE_NAME_LEN: u64 = 1024;
/// Cap on the capability count of the configuration record.
pub const MAX_CAPABILITIES: u64 = 256;

/// Declares a wire enum with explicit values and its `TryFrom<repr>`, so
/// each value is written once (the error is the unknown raw value).
macro_rules! wire_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident: $repr:ident {
        $($(#[$vm:meta])* $var:ident = $val:expr,)*
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name { $($(#[$vm])* $var = $val,)* }

        impl TryFrom<$repr> for $name {
            type Error = $repr;

            fn try_from(v: $repr) -> Result<$name, $repr> {
                $(if v == $val { return Ok($name::$var); })*
                Err(v)
            }
        }
    };
}

wire_enum! {
/// A top-level record type byte.
pub enum RecordType: u8 {
    /// `QEMU_VM_EOF`: end of device state.
    Eof = 0x00,
    /// `QEMU_VM_SECTION_START`.
    SectionStart = 0x01,
    /// `QEMU_VM_SECTION_PART`.
    SectionPart = 0x02,
    /// `QEMU_VM_SECTION_END`.
    SectionEnd = 0x03,
    /// `QEMU_VM_SECTION_FULL`.
    SectionFull = 0x04,
    /// `QEMU_VM_SUBSECTION` (only inside vmstate bodies).
    Subsection = 0x05,
    /// `QEMU_VM_VMDESCRIPTION`: the JSON trailer.
    VmDescription = 0x06,
    /// `QEMU_VM_CONFIGURATION`.
    Configuration = 0x07,
    /// `QEMU_VM_COMMAND`.
    Command = 0x08,
    /// `QEMU_VM_SECTION_FOOTER`.
    SectionFooter = 0x7e,
}
}

/// The kind of a section (its record type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// First chunk of a live (iterative) handler: carries name, instance, version.
    Start,
    /// Middle chunk: section id only.
    Part,
    /// Last chunk: section id only.
    End,
    /// Whole state of a vmstate device: carries name, instance, version.
    Full,
}

impl SectionKind {
    /// The record type byte.
    pub fn record_type(self) -> RecordType {
        match self {
            SectionKind::Start => RecordType::SectionStart,
            SectionKind::Part => RecordType::SectionPart,
            SectionKind::End => RecordType::SectionEnd,
            SectionKind::Full => RecordType::SectionFull,
        }
    }

    /// Whether the header carries idstr, instance and version.
    pub fn has_name(self) -> bool {
        matches!(self, SectionKind::Start | SectionKind::Full)
    }
}

impl TryFrom<RecordType> for SectionKind {
    type Error = RecordType;

    fn try_from(t: RecordType) -> Result<SectionKind, RecordType> {
        Ok(match t {
            RecordType::SectionStart => SectionKind::Start,
            RecordType::SectionPart => SectionKind::Part,
            RecordType::SectionEnd => SectionKind::End,
            RecordType::SectionFull => SectionKind::Full,
            other => return Err(other),
        })
    }
}

wire_enum! {
/// RAM record flags (low bits of the record's be64); `try_from` takes a single flag.
pub enum RamFlag: u64 {
    /// Obsolete since 2009.
    Full = 0x01,
    /// A zero page: [block id] + `u8 0`.
    Zero = 0x02,
    /// The block list (START).
    MemSize = 0x04,
    /// A raw page: [block id] + page bytes.
    Page = 0x08,
    /// End of the section's RAM payload.
    Eos = 0x10,
    /// OR'd in: same block as the previous page, no block id.
    Continue = 0x20,
    /// An XBZRLE-encoded page.
    Xbzrle = 0x40,
    /// Reserved for RDMA.
    Hook = 0x80,
    /// Removed in QEMU 9.1.
    CompressPage = 0x100,
    /// Multifd sync point; no payload.
    MultifdFlush = 0x200,
}
}

impl RamFlag {
    /// The flag's bit.
    pub const fn bit(self) -> u64 {
        self as u64
    }
}

/// RAM flags must stay below this value.
pub const RAM_FLAGS_LIMIT: u64 = 0x400;

wire_enum! {
/// In-band commands (`enum qemu_vm_cmd`).
pub enum VmCommand: u16 {
    /// 0.
    Invalid = 0,
    /// 1, len 0.
    OpenReturnPath = 1,
    /// 2, len 4.
    Ping = 2,
    /// 3, len 0 or 16.
    PostcopyAdvise = 3,
    /// 4.
    PostcopyListen = 4,
    /// 5.
    PostcopyRun = 5,
    /// 6.
    PostcopyRamDiscard = 6,
    /// 7: a nested stream follows.
    Packaged = 7,
    /// 8.
    EnableColo = 8,
    /// 9.
    PostcopyResume = 9,
    /// 10.
    RecvBitmap = 10,
    /// 11 (QEMU 10.0).
    SwitchoverStart = 11,
}
}
