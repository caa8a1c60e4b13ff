//! VMState descriptions: what a device's state is made of, field by field.
//!
//! A [`VmStateDescription`] is built with [`VmStateDescription::builder`]; the
//! builder checks the rules QEMU only asserts (subsection names, length fields
//! that come earlier and are integers) and refuses a bad description before it
//! can describe any stream.

use std::fmt;
use std::sync::Arc;

use vmkit_qom::CallbackError;

use super::VmStateError;
use super::value::VmStruct;

/// A hook that may change the state and may fail (`pre_save`, `post_save`,
/// `pre_load`). Its error travels unchanged to the caller of the encode or
/// decode (see [`CallbackError`]).
pub type StateHook = Arc<dyn Fn(&mut VmStruct) -> Result<(), CallbackError> + Send + Sync>;
/// `post_load`: gets the version the state was loaded at.
pub type PostLoadHook = Arc<dyn Fn(&mut VmStruct, u32) -> Result<(), CallbackError> + Send + Sync>;
/// `needed`: whether a subsection (or a whole section) is sent.
pub type NeededHook = Arc<dyn Fn(&VmStruct) -> Result<bool, CallbackError> + Send + Sync>;
/// A field's existence predicate: the enclosing state and the version.
pub type ExistsHook = Arc<dyn Fn(&VmStruct, u32) -> Result<bool, CallbackError> + Send + Sync>;

/// QEMU's `MigrationPriority`: sections are saved highest first, FIFO within
/// one priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum MigrationPriority {
    /// `MIG_PRI_UNINITIALIZED` (treated as default by QEMU's sort).
    Uninitialized = 0,
    /// `MIG_PRI_LOW`.
    Low = 1,
    /// `MIG_PRI_DEFAULT`.
    #[default]
    Default = 2,
    /// `MIG_PRI_IOMMU`: IOMMUs before the devices behind them.
    Iommu = 3,
    /// `MIG_PRI_PCI_BUS`: PCI bus state before IOMMUs.
    PciBus = 4,
    /// `MIG_PRI_VIRTIO_MEM`.
    VirtioMem = 5,
    /// `MIG_PRI_GICV3_ITS`.
    Gicv3Its = 6,
    /// `MIG_PRI_GICV3`.
    Gicv3 = 7,
}

/// How many elements an array has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayLen {
    /// A count fixed by the description (`VMSTATE_ARRAY`).
    Fixed(u32),
    /// The count is the value of an earlier integer field of the same struct
    /// (`VMSTATE_VARRAY_*`); the count itself is not on the wire.
    Field(String),
}

/// What one field is and how it is encoded. All integers are big-endian.
#[derive(Debug, Clone)]
pub enum FieldKind {
    /// One byte, 0 or 1 on save; any non-zero byte loads as true.
    Bool,
    /// `uint8`.
    U8,
    /// `uint16`, be16.
    U16,
    /// `uint32`, be32.
    U32,
    /// `uint64`, be64.
    U64,
    /// `int8`.
    I8,
    /// `int16`, be16.
    I16,
    /// `int32`, be32.
    I32,
    /// `int64`, be64.
    I64,
    /// `len` raw bytes (`VMSTATE_BUFFER`).
    Buffer {
        /// Number of bytes.
        len: u32,
    },
    /// Raw bytes whose count is the value of an earlier integer field
    /// (`VMSTATE_VBUFFER`).
    VBuffer {
        /// The earlier integer field holding the length.
        len_field: String,
    },
    /// `len` zero bytes on save, skipped on load (`VMSTATE_UNUSED`). No value
    /// is kept for it.
    Unused {
        /// Number of bytes.
        len: u32,
    },
    /// Elements back to back, no count on the wire.
    Array {
        /// The element kind.
        elem: Box<FieldKind>,
        /// The element count.
        len: ArrayLen,
    },
    /// A nested description's body (no header), at that description's own
    /// version; its hooks and subsections are processed too.
    Struct(Arc<VmStateDescription>),
    /// An optional value (QEMU's array of pointers): `None` is the one-byte
    /// null marker `0x30`, `Some` is the element itself.
    ///
    /// The wire does not say which one follows. As in QEMU, the loader
    /// decides from its own state: when the state being loaded into already
    /// holds a value for this element, `None` there demands exactly `0x30`
    /// and anything else loads an element. Only without a current value does
    /// the loader peek, taking a `0x30` byte as `None` — which is ambiguous
    /// for an element that may itself start with `0x30`. Use this kind for
    /// struct elements or where the receiver's state tells which it is.
    Optional(Box<FieldKind>),
    /// A bitmap of `nbits` bits as `ceil(nbits / 64)` be64 words; the value
    /// is an array of the words (bit `i` is bit `i % 64` of word `i / 64`).
    Bitmap {
        /// Number of bits.
        nbits: u32,
    },
    /// An integer that must equal the receiver's current value
    /// (`VMSTATE_UINT32_EQUAL` and friends); encoded as the inner kind.
    Equal(Box<FieldKind>),
    /// A timer's expiry in ns as be64; `-1` means not armed.
    Timer,
}

impl FieldKind {
    /// Whether this is a plain integer kind (usable as a length field).
    pub fn is_integer(&self) -> bool {
        match self {
            FieldKind::U8
            | FieldKind::U16
            | FieldKind::U32
            | FieldKind::U64
            | FieldKind::I8
            | FieldKind::I16
            | FieldKind::I32
            | FieldKind::I64 => true,
            FieldKind::Equal(inner) => inner.is_integer(),
            _ => false,
        }
    }

    /// Wire width and signedness of an integer kind.
    pub(crate) fn int_width(&self) -> Option<(usize, bool)> {
        match self {
            FieldKind::U8 => Some((1, false)),
            FieldKind::U16 => Some((2, false)),
            FieldKind::U32 => Some((4, false)),
            FieldKind::U64 => Some((8, false)),
            FieldKind::I8 => Some((1, true)),
            FieldKind::I16 => Some((2, true)),
            FieldKind::I32 => Some((4, true)),
            FieldKind::I64 | FieldKind::Timer => Some((8, true)),
            _ => None,
        }
    }

    /// QEMU's `VMStateInfo` name for one element of this kind, as it
    /// appears in the VMDESCRIPTION JSON.
    pub fn info_name(&self) -> String {
        match self {
            FieldKind::Bool => "bool".into(),
            FieldKind::U8 => "uint8".into(),
            FieldKind::U16 => "uint16".into(),
            FieldKind::U32 => "uint32".into(),
            FieldKind::U64 => "uint64".into(),
            FieldKind::I8 => "int8".into(),
            FieldKind::I16 => "int16".into(),
            FieldKind::I32 => "int32".into(),
            FieldKind::I64 => "int64".into(),
            FieldKind::Buffer { .. } | FieldKind::VBuffer { .. } => "buffer".into(),
            FieldKind::Unused { .. } => "unused_buffer".into(),
            FieldKind::Array { elem, .. } | FieldKind::Optional(elem) => elem.info_name(),
            FieldKind::Struct(_) => "struct".into(),
            FieldKind::Bitmap { .. } => "bitmap".into(),
            // QEMU names its uint64 equal codec "int64 equal".
            FieldKind::Equal(inner) => match **inner {
                FieldKind::U64 => "int64 equal".into(),
                ref other => format!("{} equal", other.info_name()),
            },
            FieldKind::Timer => "timer".into(),
        }
    }
}

/// One field of a description.
#[derive(Clone)]
pub struct Field {
    pub(crate) name: String,
    pub(crate) kind: FieldKind,
    pub(crate) version_id: u32,
    pub(crate) exists: Option<ExistsHook>,
    pub(crate) must_exist: bool,
    pub(crate) info: Option<String>,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("version_id", &self.version_id)
            .field("exists", &self.exists.is_some())
            .field("must_exist", &self.must_exist)
            .field("info", &self.info)
            .finish()
    }
}

impl Field {
    /// A field present at every version.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Field {
            name: name.into(),
            kind,
            version_id: 0,
            exists: None,
            must_exist: false,
            info: None,
        }
    }

    /// Names the field's type in the VMDESCRIPTION trailer as QEMU's own
    /// `VMStateInfo` does where the bytes are a plain kind's but the
    /// codec is special (`"pci config"`, `"int32 le"`): the wire is
    /// unchanged, the trailer matches QEMU's. Not for array fields.
    pub fn info(mut self, name: impl Into<String>) -> Self {
        self.info = Some(name.into());
        self
    }

    /// The field exists from `version` on (`VMSTATE_*_V`): present iff
    /// `version <= stream version`.
    pub fn since(mut self, version: u32) -> Self {
        self.version_id = version;
        self
    }

    /// An existence predicate (`VMSTATE_*_TEST`); when set it replaces the
    /// version rule. It gets the enclosing state and the version.
    pub fn exists_if(
        mut self,
        predicate: impl Fn(&VmStruct, u32) -> Result<bool, CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.exists = Some(Arc::new(predicate));
        self
    }

    /// An absent field is an error instead of being skipped (`VMS_MUST_EXIST`).
    pub fn must_exist(mut self) -> Self {
        self.must_exist = true;
        self
    }

    /// The field's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The field's kind.
    pub fn kind(&self) -> &FieldKind {
        &self.kind
    }

    /// The type QEMU's VMDESCRIPTION trailer names for one element: the
    /// name given with [`Field::info`], else the kind's.
    pub fn type_name(&self) -> String {
        self.info.clone().unwrap_or_else(|| self.kind.info_name())
    }

    /// The first version that has this field.
    pub fn version_id(&self) -> u32 {
        self.version_id
    }

    /// Whether the field is present in a struct at `version`.
    pub fn is_present(&self, state: &VmStruct, version: u32) -> Result<bool, CallbackError> {
        match &self.exists {
            Some(pred) => pred(state, version),
            None => Ok(self.version_id <= version),
        }
    }
}

/// A VMState description (`VMStateDescription`).
pub struct VmStateDescription {
    pub(crate) name: String,
    pub(crate) version_id: u32,
    pub(crate) minimum_version_id: u32,
    pub(crate) priority: MigrationPriority,
    pub(crate) fields: Vec<Field>,
    pub(crate) subsections: Vec<Arc<VmStateDescription>>,
    pub(crate) pre_save: Option<StateHook>,
    pub(crate) post_save: Option<StateHook>,
    pub(crate) pre_load: Option<StateHook>,
    pub(crate) post_load: Option<PostLoadHook>,
    pub(crate) needed: Option<NeededHook>,
}

impl fmt::Debug for VmStateDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmStateDescription")
            .field("name", &self.name)
            .field("version_id", &self.version_id)
            .field("minimum_version_id", &self.minimum_version_id)
            .field("priority", &self.priority)
            .field("fields", &self.fields)
            .field("subsections", &self.subsections)
            .finish_non_exhaustive()
    }
}

impl VmStateDescription {
    /// Starts a description named `name` (version 0, minimum 0, default
    /// priority, no fields).
    pub fn builder(name: impl Into<String>) -> VmStateDescriptionBuilder {
        VmStateDescriptionBuilder {
            desc: VmStateDescription {
                name: name.into(),
                version_id: 0,
                minimum_version_id: 0,
                priority: MigrationPriority::Default,
                fields: Vec::new(),
                subsections: Vec::new(),
                pre_save: None,
                post_save: None,
                pre_load: None,
                post_load: None,
                needed: None,
            },
        }
    }

    /// The description's name (`vmsd->name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version this side saves at and the newest it loads.
    pub fn version_id(&self) -> u32 {
        self.version_id
    }

    /// The oldest version this side loads.
    pub fn minimum_version_id(&self) -> u32 {
        self.minimum_version_id
    }

    /// The section's save priority.
    pub fn priority(&self) -> MigrationPriority {
        self.priority
    }

    /// The fields in wire order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The subsections in declaration (wire) order.
    pub fn subsections(&self) -> &[Arc<VmStateDescription>] {
        &self.subsections
    }

    /// The subsection named exactly `name`.
    pub fn subsection(&self, name: &str) -> Option<&Arc<VmStateDescription>> {
        self.subsections.iter().find(|s| s.name == name)
    }

    /// Whether this description has a `needed` hook.
    pub fn has_needed(&self) -> bool {
        self.needed.is_some()
    }

    /// Evaluates `needed` (true without a hook). For a top-level section,
    /// `state` is the section's own state and false means the section is not
    /// sent at all; for a subsection, `state` is the parent's state.
    pub fn is_needed(&self, state: &VmStruct) -> Result<bool, CallbackError> {
        self.needed.as_ref().map_or(Ok(true), |n| n(state))
    }
}

/// Builder of a [`VmStateDescription`]; [`build`](Self::build) validates.
pub struct VmStateDescriptionBuilder {
    desc: VmStateDescription,
}

impl VmStateDescriptionBuilder {
    /// `version_id`.
    pub fn version(mut self, version: u32) -> Self {
        self.desc.version_id = version;
        self
    }

    /// `minimum_version_id`.
    pub fn minimum_version(mut self, version: u32) -> Self {
        self.desc.minimum_version_id = version;
        self
    }

    /// The save priority.
    pub fn priority(mut self, priority: MigrationPriority) -> Self {
        self.desc.priority = priority;
        self
    }

    /// Appends a field.
    pub fn field(mut self, field: Field) -> Self {
        self.desc.fields.push(field);
        self
    }

    /// Appends a field of `kind` present at every version.
    pub fn simple(self, name: impl Into<String>, kind: FieldKind) -> Self {
        self.field(Field::new(name, kind))
    }

    /// Appends a subsection; its name must start with this description's
    /// name followed by `/`.
    pub fn subsection(mut self, sub: Arc<VmStateDescription>) -> Self {
        self.desc.subsections.push(sub);
        self
    }

    /// Runs before the fields are written; may fill fields (for example a
    /// host address saved as an explicit u64).
    pub fn pre_save(
        mut self,
        hook: impl Fn(&mut VmStruct) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.desc.pre_save = Some(Arc::new(hook));
        self
    }

    /// Runs after the fields and subsections were written, also when writing
    /// failed.
    pub fn post_save(
        mut self,
        hook: impl Fn(&mut VmStruct) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.desc.post_save = Some(Arc::new(hook));
        self
    }

    /// Runs before any field is loaded, on the state being loaded into.
    pub fn pre_load(
        mut self,
        hook: impl Fn(&mut VmStruct) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.desc.pre_load = Some(Arc::new(hook));
        self
    }

    /// Runs after the fields and subsections were loaded, with the stream's
    /// version.
    pub fn post_load(
        mut self,
        hook: impl Fn(&mut VmStruct, u32) -> Result<(), CallbackError> + Send + Sync + 'static,
    ) -> Self {
        self.desc.post_load = Some(Arc::new(hook));
        self
    }

    /// Whether the subsection (or the whole section) is sent.
    pub fn needed(mut self, hook: impl Fn(&VmStruct) -> Result<bool, CallbackError> + Send + Sync + 'static) -> Self {
        self.desc.needed = Some(Arc::new(hook));
        self
    }

    /// Validates and returns the description.
    ///
    /// Refused: an empty name, `minimum_version > version`, a field name used
    /// twice (`Unused` fields excepted), a length field that is not an earlier
    /// integer field, a field-length inside another kind, an `Equal` over a
    /// non-integer, a subsection whose name does not start with
    /// `"<name>/"`, and two subsections with one name.
    pub fn build(self) -> Result<Arc<VmStateDescription>, VmStateError> {
        let d = self.desc;
        let refuse = |reason: String| VmStateError::Description {
            name: d.name.clone(),
            reason,
        };
        if d.name.is_empty() {
            return Err(refuse("the name is empty".into()));
        }
        if d.name.len() > 255 {
            return Err(refuse("the name is longer than 255 bytes".into()));
        }
        if d.minimum_version_id > d.version_id {
            return Err(refuse(format!(
                "minimum_version_id {} is above version_id {}",
                d.minimum_version_id, d.version_id
            )));
        }
        for (i, field) in d.fields.iter().enumerate() {
            let earlier = &d.fields[..i];
            if !matches!(field.kind, FieldKind::Unused { .. }) && earlier.iter().any(|f| f.name == field.name) {
                return Err(refuse(format!("field '{}' is declared twice", field.name)));
            }
            check_kind(&field.name, &field.kind, earlier, true).map_err(refuse)?;
        }
        let prefix = format!("{}/", d.name);
        for (i, sub) in d.subsections.iter().enumerate() {
            if !sub.name.starts_with(&prefix) || sub.name.len() == prefix.len() {
                return Err(refuse(format!(
                    "subsection '{}' does not start with '{prefix}'",
                    sub.name
                )));
            }
            if d.subsections[..i].iter().any(|s| s.name == sub.name) {
                return Err(refuse(format!("subsection '{}' is declared twice", sub.name)));
            }
        }
        Ok(Arc::new(d))
    }
}

fn check_kind(name: &str, kind: &FieldKind, earlier: &[Field], outer: bool) -> Result<(), String> {
    let check_len_field = |len_field: &str| -> Result<(), String> {
        if !outer {
            return Err(format!(
                "field '{name}': a length taken from field '{len_field}' is only allowed \
                 as the field's outermost kind"
            ));
        }
        match earlier.iter().rev().find(|f| f.name == len_field) {
            Some(f) if f.kind.is_integer() => Ok(()),
            Some(_) => Err(format!(
                "field '{name}': length field '{len_field}' is not an integer field"
            )),
            None => Err(format!(
                "field '{name}': length field '{len_field}' is not an earlier field"
            )),
        }
    };
    match kind {
        FieldKind::VBuffer { len_field } => check_len_field(len_field),
        FieldKind::Array { elem, len } => {
            if let ArrayLen::Field(len_field) = len {
                check_len_field(len_field)?;
            }
            check_kind(name, elem, earlier, false)
        }
        FieldKind::Optional(elem) => check_kind(name, elem, earlier, false),
        FieldKind::Equal(inner) => {
            if inner.int_width().is_some() && !matches!(**inner, FieldKind::Timer) {
                Ok(())
            } else {
                Err(format!("field '{name}': Equal only applies to an integer kind"))
            }
        }
        _ => Ok(()),
    }
}
