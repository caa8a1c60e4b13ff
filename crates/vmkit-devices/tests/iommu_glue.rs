//! intel-iommu in a q35-like board: the singleton on every path, its
//! place before the PCI functions it covers, the register window at
//! 0xfed90000 driven as a guest driver drives it, a PCI function's DMA
//! translated through tables in guest RAM (and refused with a recorded
//! fault and its event), reset, and the `iommu-intel` section.
//!
//! `/machine` is process-wide: every test builds a fresh [`Board`], which
//! holds a lock while it lives.

mod common;

use std::sync::Arc;

use common::{Board, RAM, TestResult};
use vmkit_devices::dma::Dma;
use vmkit_devices::glue::Q35Options;
use vmkit_devices::glue::iommu::{DMAR_BASE, TYPE_INTEL_IOMMU, active_dmar};
use vmkit_devices::glue::pci::{BusMasterDma, PciTestdev, TYPE_PCI_TESTDEV, function_dma_space, pci_device};
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{ContextEntry, Perm, Reg, SourceId};
use vmkit_memory::{AddressSpace, GuestAddr};
use vmkit_migration::savevm::{RestoreOptions, SaveOptions, SaveSet, collect_devices, restore, save};
use vmkit_qom::{ErrorKind, Object, device_add_from_text, device_del};

const ROOT: u64 = 0x10_0000;
const IOVA: u64 = 0x40_0000_1000;
const TARGET: u64 = 0x80_0000;
const MSI_AT: u64 = 0x7000;
const DEV: SourceId = SourceId::new(0, 3 << 3);
const GCMD_TE: u64 = 1 << 31;
const GCMD_SRTP: u64 = 1 << 30;
const FSTS_PPF: u64 = 1 << 1;

impl Board {
    fn reg_write(&self, reg: Reg, size: u32, value: u64) -> Result<(), vmkit_memory::Error> {
        self.memory()
            .write_sized(GuestAddr(DMAR_BASE + reg.offset() as u64), size, value)
    }

    fn reg_read(&self, reg: Reg, size: u32) -> Result<u64, vmkit_memory::Error> {
        self.memory()
            .read_sized(GuestAddr(DMAR_BASE + reg.offset() as u64), size)
    }

    /// Enables bus mastering of the function in `slot` (0xCF8/0xCFC).
    fn master(&self, slot: u8) -> Result<(), vmkit_memory::Error> {
        self.cfg_write(slot, 0x04, 2, 0x4)
    }
}

fn iommu(id: &str, props: &[(&str, &str)]) -> vmkit_qom::Result<Object> {
    let props: Vec<(String, String)> = props.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    device_add_from_text(TYPE_INTEL_IOMMU, Some(id), &props)
}

fn testdev(id: &str, addr: &str) -> vmkit_qom::Result<Object> {
    device_add_from_text(TYPE_PCI_TESTDEV, Some(id), &[("addr".into(), addr.into())])
}

/// `intel-iommu` and a `pci-testdev` at 03.0 behind it, bus mastering on:
/// the function and its DMA.
fn mastering_testdev(b: &Board) -> Result<(Object, BusMasterDma), Box<dyn std::error::Error>> {
    iommu("iommu0", &[])?;
    let t = testdev("t0", "3")?;
    let dma = pci_device::<PciTestdev>(&t).ok_or("no glue")?.dma();
    b.master(3)?;
    Ok((t, dma))
}

/// The guest's tables: IOVA → TARGET (4 KiB, read and write) for 00:03.0.
fn build_tables(b: &Board) -> TestResult {
    let cpu: &AddressSpace = b.memory();
    let mut tb = TableBuilder::new(cpu, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    tb.map(table, 3, IOVA, TARGET, 1, Perm::READ | Perm::WRITE)?;
    Ok(())
}

/// Latches the root table and turns translation on, one GCMD bit at a
/// time, checking GSTS after each as a driver does.
fn enable_translation(b: &Board) -> TestResult {
    b.reg_write(Reg::Rtaddr, 8, ROOT)?;
    b.reg_write(Reg::Gcmd, 4, GCMD_SRTP)?;
    assert_ne!(b.reg_read(Reg::Gsts, 4)? & GCMD_SRTP, 0, "RTPS");
    b.reg_write(Reg::Gcmd, 4, GCMD_TE)?;
    assert_ne!(b.reg_read(Reg::Gsts, 4)? & GCMD_TE, 0, "TES");
    Ok(())
}

#[test]
fn a_second_iommu_is_refused_naming_the_first_and_introspection_works() -> TestResult {
    let _b = Board::new()?;
    let first = iommu("iommu0", &[])?;
    assert!(first.is_realized());
    let err = iommu("iommu1", &[]).err().ok_or("a second intel-iommu was realized")?;
    assert_eq!(err.kind(), ErrorKind::Singleton);
    assert!(err.to_string().contains("'/machine/peripheral/iommu0'"), "{err}");
    // A temporary instance (introspection) is fine while one is active.
    let probe = Object::new(TYPE_INTEL_IOMMU)?;
    assert_eq!(probe.get("aw-bits")?, vmkit_qom::Value::UInt(39));
    drop(probe);
    let (active, _) = active_dmar().ok_or("no active intel-iommu")?;
    assert_eq!(active, first);
    Ok(())
}

#[test]
fn qemus_realize_checks_refuse_with_qemus_messages() -> TestResult {
    let _b = Board::new()?;
    let err = iommu("i", &[("aw-bits", "40")]).err().ok_or("aw-bits=40 realized")?;
    assert!(
        err.to_string().contains("Supported values for aw-bits are: 39, 48"),
        "{err}"
    );
    let err = iommu("i", &[("eim", "on")]).err().ok_or("eim=on realized")?;
    assert!(
        err.to_string()
            .contains("eim=on requires accel=kvm,kernel-irqchip=split"),
        "{err}"
    );
    // Nothing is left behind by a refusal: a good one realizes now.
    iommu("i", &[("aw-bits", "48"), ("caching-mode", "on")])?;
    // QEMU 7.2's CAP for aw-bits=48 (0x00d2008c222f0606, read from its
    // window) with CM (bit 7) added.
    let b = &_b;
    assert_eq!(b.reg_read(Reg::Cap, 8)?, 0x00d2_008c_222f_0686);
    assert_eq!(b.reg_read(Reg::Ecap, 8)?, 0x00f0_0f4a);
    Ok(())
}

#[test]
fn the_register_file_at_reset_reads_as_qemu_72s() -> TestResult {
    let b = Board::new()?;
    iommu("iommu0", &[])?;
    // Read from QEMU 7.2's window (-device intel-iommu, xp at 0xfed90000).
    assert_eq!(b.reg_read(Reg::Ver, 4)?, 0x10);
    assert_eq!(b.reg_read(Reg::Cap, 8)?, 0x00d2_008c_2226_0206);
    assert_eq!(b.reg_read(Reg::Ecap, 8)?, 0x00f0_0f4a);
    // Not byte accesses: QEMU's window takes 4 and 8.
    assert!(b.memory().read_sized(GuestAddr(DMAR_BASE), 1).is_err());
    Ok(())
}

#[test]
fn the_iommu_comes_before_the_functions_it_translates_for() -> TestResult {
    let _b = Board::new()?;
    let t = testdev("t0", "3")?;
    let err = iommu("iommu0", &[])
        .err()
        .ok_or("intel-iommu realized after a PCI device")?;
    assert!(err.to_string().contains("must be created before"), "{err}");
    assert!(err.to_string().contains("/machine/peripheral/t0 (03.0)"), "{err}");
    assert!(active_dmar().is_none());
    drop(t);
    device_del("t0")?;
    iommu("iommu0", &[])?;
    testdev("t0", "3")?;
    // ... and cannot leave while one is behind it.
    let err = device_del("iommu0").err().ok_or("unplugged under a device")?;
    assert!(err.to_string().contains("still translates the DMA of"), "{err}");
    Ok(())
}

#[test]
fn dma_passes_through_until_translation_is_enabled_then_is_translated() -> TestResult {
    let b = Board::new()?;
    iommu("iommu0", &[])?;
    let t = testdev("t0", "3")?;
    let dev = pci_device::<PciTestdev>(&t).ok_or("no glue")?;
    let dma = dev.dma();
    b.master(3)?;
    build_tables(&b)?;
    // TE clear: untranslated.
    dma.write(0x2000, b"plain")?;
    let mut buf = [0u8; 5];
    b.block.read(0x2000, &mut buf)?;
    assert_eq!(&buf, b"plain");

    enable_translation(&b)?;
    dma.write(IOVA + 0x10, b"mapped")?;
    let mut got = [0u8; 6];
    b.block.read(TARGET + 0x10, &mut got)?;
    assert_eq!(&got, b"mapped", "the bytes land at the translated address");
    let mut back = [0u8; 6];
    dma.read(IOVA + 0x10, &mut back)?;
    assert_eq!(&back, b"mapped");
    // The same space through the public accessor.
    let space = function_dma_space(&t).ok_or("no DMA space")?;
    space.write(GuestAddr(IOVA + 0x20), b"again")?;
    b.block.read(TARGET + 0x20, &mut buf)?;
    assert_eq!(&buf, b"again");
    let (_, dmar) = active_dmar().ok_or("no iommu")?;
    let stats = dmar.with_model(|m| m.stats());
    // One walk; the same page again is answered from the function's last
    // translation, without asking the model.
    assert_eq!((stats.page_walks, stats.iotlb_hits), (1, 0), "{stats:?}");
    Ok(())
}

#[test]
fn a_remembered_translation_is_dropped_by_every_invalidation() -> TestResult {
    // The glue answers a function's DMA of the page it translated last
    // without asking the model; the guest's next invalidation (or any
    // register write, reset, state load) must send it to the model again.
    const TARGET2: u64 = 0x90_0000;
    let b = Board::new()?;
    let (_t, dma) = mastering_testdev(&b)?;
    build_tables(&b)?;
    enable_translation(&b)?;
    let (_, dmar) = active_dmar().ok_or("no iommu")?;
    let landed = |at: u64| -> Result<[u8; 4], Box<dyn std::error::Error>> {
        let mut got = [0u8; 4];
        b.block.read(at, &mut got)?;
        Ok(got)
    };
    dma.write(IOVA, b"one.")?;
    dma.write(IOVA + 4, b"two.")?;
    let stats = dmar.with_model(|m| m.stats());
    assert_eq!(
        (stats.page_walks, stats.iotlb_hits),
        (1, 0),
        "the second access was remembered"
    );
    assert_eq!(&landed(TARGET + 4)?, b"two.");

    // The guest remaps the page (the same tables, another target), then
    // invalidates the IOTLB globally, as a driver must.
    let cpu: &AddressSpace = b.memory();
    let mut tb = TableBuilder::new(cpu, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 3, 1))?;
    tb.map(table, 3, IOVA, TARGET2, 1, Perm::READ | Perm::WRITE)?;
    b.reg_write(Reg::Iotlb, 8, 1 << 63 | 1 << 60)?;
    dma.write(IOVA + 8, b"new.")?;
    assert_eq!(
        &landed(TARGET2 + 8)?,
        b"new.",
        "after the invalidation: the new mapping"
    );
    assert_ne!(&landed(TARGET + 8)?, b"new.", "not the remembered one");

    // Translation off: the same address passes through untranslated.
    dma.write(IOVA + 12, b"tr..")?;
    b.reg_write(Reg::Gcmd, 4, 0)?;
    assert_eq!(b.reg_read(Reg::Gsts, 4)? & GCMD_TE, 0, "TES clear");
    let e = dma.write(IOVA + 16, b"off.").err().map(|e| e.to_string());
    assert_ne!(&landed(TARGET2 + 16)?, b"off.", "passed through, not translated: {e:?}");
    Ok(())
}

#[test]
fn an_unmapped_iova_faults_records_and_raises_the_event() -> TestResult {
    let b = Board::new()?;
    let (_t, dma) = mastering_testdev(&b)?;
    build_tables(&b)?;
    // The fault event goes to RAM here, where the test can see it.
    b.reg_write(Reg::Feaddr, 4, MSI_AT)?;
    b.reg_write(Reg::Fedata, 4, 0x4321)?;
    b.reg_write(Reg::Fectl, 4, 0)?;
    enable_translation(&b)?;

    let err = dma
        .write(0x1234_5000, b"lost")
        .err()
        .ok_or("an unmapped DMA went through")?;
    assert!(err.reason.contains("intel_iommu_devfn_24"), "{err}");
    assert_ne!(b.reg_read(Reg::Fsts, 4)? & FSTS_PPF, 0, "PPF");
    assert_eq!(b.reg_read(Reg::Frcd0, 8)?, 0x1234_5000, "the faulting page");
    let hi = b.reg_read(Reg::Frcd2, 8)?;
    assert_eq!(hi & 0xffff, u64::from(DEV.0), "source id");
    assert_ne!(hi >> 63, 0, "F");
    // A missing entry is a permission fault, as in QEMU (VTD_FR_WRITE).
    assert_eq!((hi >> 32) & 0xff, 0x5, "a write without a mapping");
    let mut msi = [0u8; 4];
    b.block.read(MSI_AT, &mut msi)?;
    assert_eq!(u32::from_le_bytes(msi), 0x4321, "the fault event's message");
    let (_, dmar) = active_dmar().ok_or("no iommu")?;
    assert_eq!(dmar.stats().interrupts, 1);
    assert_eq!(dmar.stats().faults, 1);
    // Nothing was written anywhere for the faulting access.
    let mut buf = [0u8; 4];
    b.block.read(0x1234_5000 & (RAM - 1), &mut buf)?;
    assert_eq!(&buf, &[0; 4]);
    Ok(())
}

#[test]
fn tables_outside_ram_fault_instead_of_reaching_mmio() -> TestResult {
    let b = Board::new()?;
    let (_t, dma) = mastering_testdev(&b)?;
    // The root table inside the IOMMU's own window: the walk must not
    // re-enter the device.
    b.reg_write(Reg::Rtaddr, 8, DMAR_BASE)?;
    b.reg_write(Reg::Gcmd, 4, GCMD_SRTP)?;
    b.reg_write(Reg::Gcmd, 4, GCMD_TE)?;
    assert!(dma.write(0x1000, b"x").is_err());
    assert_eq!((b.reg_read(Reg::Frcd2, 8)? >> 32) & 0xff, 0x8, "root table invalid");
    Ok(())
}

#[test]
fn reset_turns_translation_off() -> TestResult {
    let b = Board::new()?;
    iommu("iommu0", &[])?;
    let t = testdev("t0", "3")?;
    let dma = pci_device::<PciTestdev>(&t).ok_or("no glue")?.dma();
    build_tables(&b)?;
    enable_translation(&b)?;
    vmkit_qom::reset_tree(&b.machine)?;
    assert_eq!(b.reg_read(Reg::Gsts, 4)?, 0);
    assert_eq!(b.reg_read(Reg::Rtaddr, 8)?, 0);
    b.master(3)?;
    dma.write(0x3000, b"raw")?;
    let mut buf = [0u8; 3];
    b.block.read(0x3000, &mut buf)?;
    assert_eq!(&buf, b"raw");
    Ok(())
}

#[test]
fn the_iommu_intel_section_round_trips() -> TestResult {
    let b = Board::new()?;
    let (_t, dma) = mastering_testdev(&b)?;
    build_tables(&b)?;
    enable_translation(&b)?;
    let sections = collect_devices(&b.machine)?;
    assert!(
        sections.iter().any(|s| s.idstr == "iommu-intel" && s.instance_id == 0),
        "{:?}",
        sections.iter().map(|s| &s.idstr).collect::<Vec<_>>()
    );
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&b.block)], sections);
    let mut stream = Vec::new();
    save(&set, &mut stream, &SaveOptions::default())?;
    vmkit_qom::reset_tree(&b.machine)?;
    assert_eq!(b.reg_read(Reg::Gsts, 4)? & GCMD_TE, 0);
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&b.block)], collect_devices(&b.machine)?);
    restore(&set, stream.as_slice(), &RestoreOptions::default())?;
    assert_eq!(b.reg_read(Reg::Rtaddr, 8)?, ROOT);
    assert_ne!(b.reg_read(Reg::Gsts, 4)? & GCMD_TE, 0, "translation on again");
    dma.write(IOVA, b"restored")?;
    let mut got = [0u8; 8];
    b.block.read(TARGET, &mut got)?;
    assert_eq!(&got, b"restored");
    Ok(())
}

#[test]
fn without_pci_hotplug_a_late_iommu_is_refused_as_qemu_does() -> TestResult {
    let _b = Board::with(Q35Options { hotplug: false })?;
    vmkit_qom::machine_creation_done()?;
    let err = iommu("iommu0", &[]).err().ok_or("hot-plugged")?;
    assert!(
        err.to_string()
            .contains("Parameter 'driver' expects a pluggable device type"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_machine_with_a_translating_iommu_tears_down_whole() -> TestResult {
    let b = Board::new()?;
    let i = iommu("iommu0", &[])?;
    let t = testdev("t0", "3")?;
    b.master(3)?;
    build_tables(&b)?;
    enable_translation(&b)?;
    pci_device::<PciTestdev>(&t).ok_or("no glue")?.dma().write(IOVA, b"x")?;
    let block = Arc::clone(&b.block);
    // The IOMMU's view of system memory references the RAM and its own
    // window; destroying the machine unrealizes it, so nothing is kept.
    drop(b);
    assert_eq!(i.phase(), vmkit_qom::Phase::Finalized);
    assert_eq!(t.phase(), vmkit_qom::Phase::Finalized);
    assert_eq!(Arc::strong_count(&block), 1, "no region holds the RAM block");
    Ok(())
}

#[test]
fn a_wait_descriptor_writes_its_status_and_sends_the_completion_event() -> TestResult {
    const QUEUE: u64 = 0x20_0000;
    const STATUS: u64 = 0x21_0000;
    const IE_MSI: u64 = 0x7100;
    let b = Board::new()?;
    iommu("iommu0", &[])?;
    b.reg_write(Reg::Ieaddr, 4, IE_MSI)?;
    b.reg_write(Reg::Iedata, 4, 0xbeef)?;
    b.reg_write(Reg::Iectl, 4, 0)?;
    // Queue of 256 descriptors at QUEUE; one wait descriptor with a status
    // write (SW) of 0x600d to STATUS and an interrupt (IF).
    let cpu: &AddressSpace = b.memory();
    cpu.write_u64(QUEUE, 5 | 1 << 5 | 1 << 4 | 0x600d << 32)?;
    cpu.write_u64(QUEUE + 8, STATUS)?;
    b.reg_write(Reg::Iqa, 8, QUEUE)?;
    b.reg_write(Reg::Gcmd, 4, 1 << 26)?;
    assert_ne!(b.reg_read(Reg::Gsts, 4)? & (1 << 26), 0, "QIES");
    b.reg_write(Reg::Iqt, 8, 0x10)?;
    assert_eq!(b.reg_read(Reg::Iqh, 8)?, 0x10, "the descriptor was consumed");
    assert_eq!(cpu.read_u32(STATUS)?, 0x600d, "the status write reached RAM");
    assert_eq!(b.reg_read(Reg::Ics, 4)?, 1, "IWC");
    assert_eq!(cpu.read_u32(IE_MSI)?, 0xbeef, "the completion event's message");
    let (_, dmar) = active_dmar().ok_or("no iommu")?;
    assert_eq!(dmar.stats().interrupts, 1);
    Ok(())
}
