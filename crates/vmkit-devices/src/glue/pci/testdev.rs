//! `pci-testdev`: QEMU's PCI test device (Red Hat 1b36:0005, class
//! 0x00ff, no interrupt pin), the simplest real PCI function with a
//! memory BAR and an I/O BAR.
//!
//! BAR0 is 4 KiB of memory (`pci-testdev-mmio`), BAR1 256 I/O ports
//! (`pci-testdev-portio`), both accessed a byte at a time; with `membar`
//! a 64-bit prefetchable BAR2 of that size with nothing behind it. The
//! device runs one of six tests: writing N (0–2) at offset 0 of a BAR
//! starts test N of that BAR's kind (`mmio-`, `portio-` ×
//! `no-eventfd`, `wildcard-eventfd`, `datamatch-eventfd`); reading either
//! BAR returns the running test's header (test number, width 1, the
//! offset its hits go to, the data it matches, the hit count, its name).
//! A write of one byte at the test's offset counts a hit when the data
//! matches (0xFA) — except that a test with an ioeventfd has the writes
//! its eventfd matches taken by the eventfd, as in QEMU, so they never
//! reach the device.
//!
//! QEMU's `pci-testdev` has no VMState: QEMU does not migrate it. vmkit's
//! carries its `PCIDevice` part and test state in a section
//! `0000:00:SS.F/pci-testdev` (a QEMU destination would not know it).

use std::sync::Arc;

use vmkit_memory::AccessConstraints;
use vmkit_migration::device_state::{MigrationState, StateError};
use vmkit_migration::vmstate::{ArrayLen, Field, FieldKind, VmStateDescription, VmStruct, VmValue};
use vmkit_qom::{Object, PropertyDef, PropertyKind, TypeInfo, Value};

use super::bus::PciRootBus;
use super::device::{BarRegion, BarRegionKind, PciDeviceModel, register_pci_type};
use crate::glue::error::GlueError;
use crate::pci::state::{PciDeviceState, pci_device_vmsd};
use crate::pci::{Bar, BarIndex, BarKind, ConfigKind, ConfigSpace, Identity, PciEffects, PciError, PciFunction};

/// QEMU's `TYPE_PCI_TEST_DEV`.
pub const TYPE_PCI_TESTDEV: &str = "pci-testdev";
/// Red Hat.
pub const VENDOR_ID: u16 = 0x1b36;
/// `PCI_DEVICE_ID_REDHAT_TEST`.
pub const DEVICE_ID: u16 = 0x0005;
/// `PCI_CLASS_OTHERS`: base class 0x00, sub-class 0xff.
pub const CLASS_CODE: u32 = 0x00_ff_00;
/// Bytes of the memory BAR.
pub const MMIO_SIZE: u64 = 2 * 2048;
/// Ports of the I/O BAR.
pub const PORTIO_SIZE: u64 = 2 * 128;
/// The data a matching test counts.
pub const DATAMATCH: u8 = 0xfa;
/// The data the wildcard test announces.
pub const NOMATCH: u8 = 0xce;
/// Tests per BAR kind.
const TESTS_PER_KIND: usize = 3;
/// Bytes of a test header before its name.
const HEADER_SIZE: usize = 16;

const TEST_NAMES: [&str; TESTS_PER_KIND] = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"];

/// The memory BAR.
const MMIO_BAR: BarIndex = BarIndex::ALL[0];
/// The I/O BAR.
const PORTIO_BAR: BarIndex = BarIndex::ALL[1];
/// The optional `membar`.
const MEMBAR_BAR: BarIndex = BarIndex::ALL[2];

/// One of the six tests.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Test {
    /// 0–2 on the memory BAR, 3–5 on the I/O BAR.
    index: usize,
    /// Where its hits go (past the header area of its BAR).
    offset: u32,
    /// Whether a hit must carry [`DATAMATCH`].
    match_data: bool,
    /// Whether an ioeventfd takes the writes it matches.
    has_eventfd: bool,
    count: u32,
}

impl Test {
    fn new(index: usize) -> Test {
        let kind_size = if index < TESTS_PER_KIND {
            MMIO_SIZE / 2
        } else {
            PORTIO_SIZE / 2
        };
        let test = index % TESTS_PER_KIND;
        Test {
            index,
            offset: kind_size as u32 + index as u32,
            match_data: test != 1,
            has_eventfd: test != 0,
            count: 0,
        }
    }

    fn name(&self) -> String {
        let kind = if self.index < TESTS_PER_KIND { "mmio" } else { "portio" };
        format!("{kind}-{}", TEST_NAMES[self.index % TESTS_PER_KIND])
    }

    fn data(&self) -> u8 {
        if self.match_data { DATAMATCH } else { NOMATCH }
    }

    /// The header a read returns: test, width, offset, data, count, name.
    fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        h[0] = self.index as u8;
        h[1] = 1;
        h[4..8].copy_from_slice(&self.offset.to_le_bytes());
        h[8] = self.data();
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h.extend_from_slice(self.name().as_bytes());
        h.push(0);
        h
    }

    /// Whether this test's ioeventfd takes a write of `size` bytes of
    /// `value` at `offset` of its own BAR.
    fn eventfd_takes(&self, offset: u64, size: u8, value: u64) -> bool {
        self.has_eventfd
            && offset == u64::from(self.offset)
            && size == 1
            && (!self.match_data || value == u64::from(DATAMATCH))
    }
}

/// The `pci-testdev` model.
#[derive(Debug)]
pub struct PciTestdev {
    config: ConfigSpace,
    tests: Vec<Test>,
    current: Option<usize>,
    vmsd: Arc<VmStateDescription>,
}

impl PciTestdev {
    /// A test device, with a `membar`-byte BAR2 when `membar` is not 0.
    pub fn new(membar: u64) -> Result<PciTestdev, PciError> {
        let mut config = ConfigSpace::new(
            ConfigKind::Conventional,
            Identity {
                vendor_id: VENDOR_ID,
                device_id: DEVICE_ID,
                revision: 0,
                class_code: CLASS_CODE,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
                header_type: 0,
                interrupt_pin: 0,
            },
        );
        config.register_bar(MMIO_BAR, Bar::mem32(MMIO_SIZE))?;
        config.register_bar(PORTIO_BAR, Bar::io(PORTIO_SIZE))?;
        if membar != 0 {
            config.register_bar(
                MEMBAR_BAR,
                Bar {
                    kind: BarKind::Mem64,
                    prefetchable: true,
                    size: membar,
                },
            )?;
        }
        Ok(PciTestdev {
            config,
            tests: (0..2 * TESTS_PER_KIND).map(Test::new).collect(),
            current: None,
            vmsd: testdev_vmsd()?,
        })
    }

    /// The running test's name, if one runs.
    pub fn current_test(&self) -> Option<String> {
        self.current.map(|t| self.tests[t].name())
    }

    /// Hits counted by test `index` (0–5).
    pub fn count(&self, index: usize) -> Option<u32> {
        self.tests.get(index).map(|t| t.count)
    }

    /// One byte of the running test's header (0 with no test, and from
    /// the byte before the header's end on, as QEMU answers).
    fn read_byte(&self, offset: u64) -> u8 {
        let Some(t) = self.current else { return 0 };
        let header = self.tests[t].header();
        if offset + 1 >= header.len() as u64 {
            return 0;
        }
        header[offset as usize]
    }

    /// A byte write reaching the device through BAR kind `kind` (0
    /// memory, 1 I/O).
    fn write_byte(&mut self, kind: usize, offset: u64, value: u8) {
        if offset == 0 {
            // Stop the running test; start the one named, if there is one.
            self.current = None;
            if usize::from(value) < TESTS_PER_KIND {
                let t = kind * TESTS_PER_KIND + usize::from(value);
                self.tests[t].count = 0;
                self.current = Some(t);
            }
            return;
        }
        let Some(t) = self.current else { return };
        let test = &mut self.tests[t];
        if offset != u64::from(test.offset) || (test.match_data && value != DATAMATCH) {
            return;
        }
        test.count = test.count.wrapping_add(1);
    }

    fn access(&self, bar: BarIndex) -> Result<usize, PciError> {
        match bar {
            MMIO_BAR => Ok(0),
            PORTIO_BAR => Ok(1),
            _ => Err(PciError::BarAccess {
                index: bar.number(),
                offset: 0,
                size: 0,
                reason: "nothing answers there".into(),
            }),
        }
    }
}

impl PciFunction for PciTestdev {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) -> Result<PciEffects, PciError> {
        Ok(PciEffects::from_config(self.config.write(offset, size, value)?))
    }

    fn bar_read(&mut self, bar: BarIndex, offset: u64, size: u8) -> Result<u64, PciError> {
        self.access(bar)?;
        // QEMU's core splits the access into the byte reads the device
        // implements; each reads one header byte.
        Ok((0..u64::from(size)).fold(0, |v, i| v | u64::from(self.read_byte(offset + i)) << (8 * i)))
    }

    fn bar_write(&mut self, bar: BarIndex, offset: u64, size: u8, value: u64) -> Result<PciEffects, PciError> {
        let kind = self.access(bar)?;
        // The ioeventfd sees the access whole, before QEMU's core splits it
        // into byte writes: a write it matches never reaches the device.
        if let Some(t) = self.current {
            let test = &self.tests[t];
            if t / TESTS_PER_KIND == kind && test.eventfd_takes(offset, size, value) {
                return Ok(PciEffects::default());
            }
        }
        for i in 0..u64::from(size) {
            self.write_byte(kind, offset + i, (value >> (8 * i)) as u8);
        }
        Ok(PciEffects::default())
    }

    fn reset(&mut self) -> PciEffects {
        self.current = None;
        PciEffects::from_config(self.config.reset())
    }
}

/// vmkit's "pci-testdev" VMState (v1): the `PCIDevice` part, the running
/// test (-1: none) and each test's hit count.
pub fn testdev_vmsd() -> Result<Arc<VmStateDescription>, PciError> {
    VmStateDescription::builder(TYPE_PCI_TESTDEV)
        .version(1)
        .minimum_version(1)
        .simple(
            "parent_obj",
            FieldKind::Struct(pci_device_vmsd(ConfigKind::Conventional)?),
        )
        .simple("current", FieldKind::I32)
        .field(Field::new(
            "count",
            FieldKind::Array {
                elem: Box::new(FieldKind::U32),
                len: ArrayLen::Fixed((2 * TESTS_PER_KIND) as u32),
            },
        ))
        .build()
        .map_err(|e| PciError::Description(e.to_string()))
}

/// The migrated state of a `pci-testdev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestdevState {
    /// `PCIDevice`.
    pub pci: PciDeviceState,
    /// The running test, -1 for none.
    pub current: i32,
    /// Each test's hits.
    pub count: Vec<u32>,
}

impl MigrationState for TestdevState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new()
            .with("parent_obj", VmValue::Struct(self.pci.to_vmstate()))
            .with("current", self.current.into())
            .with("count", VmValue::Array(self.count.iter().map(|&c| c.into()).collect()))
    }

    fn from_vmstate(s: &VmStruct) -> Result<TestdevState, StateError> {
        let pci = s
            .get("parent_obj")
            .and_then(VmValue::as_struct)
            .ok_or_else(|| StateError::field("parent_obj", "missing or not a struct"))?;
        let pci = PciDeviceState::from_vmstate(pci).map_err(|e| match e {
            StateError::Field { path, reason } => StateError::field(format!("parent_obj/{path}"), reason),
            other => other,
        })?;
        let count = s
            .get("count")
            .and_then(VmValue::as_array)
            .ok_or_else(|| StateError::field("count", "missing or not an array"))?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| StateError::field(format!("count[{i}]"), "not a uint32"))
            })
            .collect::<Result<Vec<u32>, StateError>>()?;
        Ok(TestdevState {
            pci,
            current: s.field("current")?,
            count,
        })
    }
}

impl PciDeviceModel for PciTestdev {
    type State = TestdevState;

    fn realize(obj: &Object, _bus: &PciRootBus) -> Result<PciTestdev, String> {
        let membar = match obj.get("membar").map_err(|e| e.to_string())? {
            Value::UInt(v) => v,
            _ => 0,
        };
        if membar != 0 && (!membar.is_power_of_two() || membar < 16) {
            return Err(format!(
                "pci-testdev: membar size {membar:#x} is not a power of two of at least 16 bytes"
            ));
        }
        PciTestdev::new(membar).map_err(|e| e.to_string())
    }

    fn bar_region(&self, bar: BarIndex) -> BarRegion {
        // Whole accesses reach the model, which splits them into bytes
        // itself after the ioeventfd check, as QEMU's core does.
        let whole_accesses = BarRegionKind::Mmio(AccessConstraints {
            impl_min: 1,
            impl_max: 8,
            ..AccessConstraints::default()
        });
        match bar {
            MMIO_BAR => BarRegion {
                name: "pci-testdev-mmio".into(),
                kind: whole_accesses,
            },
            PORTIO_BAR => BarRegion {
                name: "pci-testdev-portio".into(),
                kind: whole_accesses,
            },
            _ => BarRegion {
                name: "pci-testdev-membar".into(),
                kind: BarRegionKind::Container,
            },
        }
    }

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> TestdevState {
        TestdevState {
            pci: PciDeviceState::capture(&self.config, [false; 4]),
            current: self.current.map_or(-1, |t| t as i32),
            count: self.tests.iter().map(|t| t.count).collect(),
        }
    }

    fn check_state(&self, state: &TestdevState) -> Result<(), StateError> {
        state.pci.check(&self.config, "parent_obj")?;
        if !(-1..self.tests.len() as i32).contains(&state.current) {
            return Err(StateError::field(
                "current",
                format!("test {} does not exist (-1 to {})", state.current, self.tests.len() - 1),
            ));
        }
        if state.count.len() != self.tests.len() {
            return Err(StateError::field(
                "count",
                format!("{} tests, this device has {}", state.count.len(), self.tests.len()),
            ));
        }
        Ok(())
    }

    fn load_state(&mut self, state: TestdevState) -> Result<PciEffects, StateError> {
        self.check_state(&state)?;
        let fx = state.pci.apply(&mut self.config, "parent_obj")?;
        self.current = usize::try_from(state.current).ok();
        for (t, c) in self.tests.iter_mut().zip(state.count) {
            t.count = c;
        }
        Ok(PciEffects::from_config(fx))
    }
}

/// Registers `pci-testdev`.
pub(crate) fn register() -> Result<(), GlueError> {
    register_pci_type::<PciTestdev>(
        TypeInfo::new(TYPE_PCI_TESTDEV)
            .description("PCI Test Device")
            .class_property(
                PropertyDef::new("membar", PropertyKind::Size)
                    .default(Value::UInt(0))
                    .before_realize(),
            ),
        Some(testdev_vmsd()?),
    )
}
