//! The PCI glue in a q35-like board, driven as a guest drives it: config
//! space through 0xCF8/0xCFC and through the ECAM window once PCIEXBAR
//! enables it, BAR sizing and mapping (moves unmap then map the regions
//! in the address spaces), bus mastering, placement by `addr=` with
//! QEMU's refusals, hot-plug rules, reset, and the devices' sections.
//!
//! `/machine` is process-wide: every test builds a fresh [`Board`], which
//! holds a lock while it lives.

mod common;

use std::sync::Arc;

use common::{Board, TestResult};
use vmkit_devices::dma::Dma;
use vmkit_devices::glue::Q35Options;
use vmkit_devices::glue::pci::{PciTestdev, TYPE_PCI_TESTDEV, pci_device, query_pci};
use vmkit_memory::{AddressSpace, GuestAddr};
use vmkit_migration::savevm::{RestoreOptions, SaveOptions, SaveSet, collect_devices, restore, save};
use vmkit_qom::{Object, Value, device_add, device_del, machine_creation_done};

const ECAM: u64 = 0xb000_0000;
const MMIO_BAR: u64 = 0xfebf_0000;
const IO_BAR: u64 = 0xc000;

impl Board {
    /// The name of the region answering at `addr` in `space`, if any.
    fn region_at(space: &AddressSpace, addr: u64) -> Option<String> {
        space
            .flat_view()
            .lookup(GuestAddr(addr))
            .map(|r| r.region.name().to_owned())
    }
}

fn testdev(id: &str, addr: &str) -> vmkit_qom::Result<Object> {
    vmkit_qom::device_add_from_text(TYPE_PCI_TESTDEV, Some(id), &[("addr".into(), addr.into())])
}

/// Sizes and programs BAR0 (memory) and BAR1 (I/O) of the function in
/// `slot`, then enables decoding, as firmware does.
fn program_bars(b: &Board, slot: u8) -> TestResult {
    b.cfg_write(slot, 0x10, 4, 0xffff_ffff)?;
    assert_eq!(b.cfg_read(slot, 0x10, 4)?, 0xffff_f000, "4 KiB, 32-bit memory");
    b.cfg_write(slot, 0x14, 4, 0xffff_ffff)?;
    assert_eq!(b.cfg_read(slot, 0x14, 4)?, 0xffff_ff01, "256 ports");
    b.cfg_write(slot, 0x10, 4, MMIO_BAR)?;
    b.cfg_write(slot, 0x14, 4, IO_BAR | 1)?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), None, "not decoding yet");
    b.cfg_write(slot, 0x04, 2, 0x3)?;
    Ok(())
}

#[test]
fn the_board_has_q35s_host_bridge_and_pcie_0() -> TestResult {
    let b = Board::new()?;
    let tree = vmkit_qom::qom_tree("/machine/q35")?;
    assert!(tree.starts_with("/machine/q35 (q35-pcihost)\n"), "{tree}");
    assert!(
        tree.contains("  /mch (mch)\n") && tree.contains("  /pcie.0 (PCIE)\n"),
        "{tree}"
    );
    let info = query_pci();
    let dev = &info[0]["devices"][0];
    assert_eq!(info[0]["bus"], 0);
    assert_eq!(dev["slot"], 0);
    assert_eq!(
        dev["class_info"],
        serde_json::json!({"desc": "Host bridge", "class": 0x0600})
    );
    assert_eq!(
        dev["id"],
        serde_json::json!({"device": 0x29c0, "vendor": 0x8086, "subsystem": 0x1100, "subsystem-vendor": 0x1af4})
    );
    assert_eq!(dev["qdev_id"], "");
    assert!(dev.get("irq").is_none(), "no interrupt pin, no irq");
    // The system map: RAM in front of `pci`, 0xCF8/0xCFC in I/O space.
    assert_eq!(Board::region_at(b.memory(), 0x1000), Some("pc.ram".into()));
    assert_eq!(Board::region_at(b.memory(), 0xfebf_0000), None);
    assert_eq!(Board::region_at(b.io(), 0xcf8), Some("pci-conf-idx".into()));
    assert_eq!(Board::region_at(b.io(), 0xcfc), Some("pci-conf-data".into()));
    Ok(())
}

#[test]
fn cf8_cfc_reach_configuration_space() -> TestResult {
    let b = Board::new()?;
    assert_eq!(b.cfg_read(0, 0x00, 4)?, 0x29c0_8086);
    assert_eq!(b.cfg_read(0, 0x02, 2)?, 0x29c0, "a word at 0xCFE");
    assert_eq!(b.cfg_read(0, 0x0b, 1)?, 0x06, "a byte at 0xCFF: base class");
    assert_eq!(b.cfg_read(0, 0x60, 4)?, 0xb000_0000, "PCIEXBAR at reset");
    assert_eq!(b.cfg_read(5, 0x00, 4)?, 0xffff_ffff, "nothing in slot 5");
    // Bus 1 does not exist.
    b.io().write_sized(GuestAddr(0xcf8), 4, 0x8001_0000)?;
    assert_eq!(b.io().read_sized(GuestAddr(0xcfc), 4)?, 0xffff_ffff);
    // The enable bit clear: nothing is addressed.
    b.io().write_sized(GuestAddr(0xcf8), 4, 0x0000_0000)?;
    assert_eq!(b.io().read_sized(GuestAddr(0xcfc), 4)?, 0xffff_ffff);
    // 0xCF8 takes dword writes only, and reads back.
    b.io().write_sized(GuestAddr(0xcf8), 4, 0x8000_0010)?;
    b.io().write_sized(GuestAddr(0xcf8), 1, 0x55)?;
    assert_eq!(b.io().read_sized(GuestAddr(0xcf8), 4)?, 0x8000_0010);
    // Writes go through the function's masks.
    b.cfg_write(0, 0x00, 4, 0)?;
    assert_eq!(b.cfg_read(0, 0x00, 4)?, 0x29c0_8086, "identity is read-only");
    b.cfg_write(0, 0x3c, 1, 0x0b)?;
    assert_eq!(b.cfg_read(0, 0x3c, 1)?, 0x0b, "interrupt line is the guest's");
    Ok(())
}

#[test]
fn the_ecam_window_follows_pciexbar() -> TestResult {
    let b = Board::new()?;
    testdev("t", "3")?;
    assert_eq!(Board::region_at(b.memory(), ECAM), None, "disabled at reset");
    // Firmware's step: PCIEXBAR = 0xb0000000, 256 MiB, enabled.
    b.cfg_write(0, 0x60, 4, ECAM | 1)?;
    assert_eq!(Board::region_at(b.memory(), ECAM), Some("pcie-mmcfg-mmio".into()));
    let host = vmkit_devices::glue::pci::q35_host(&b.q35.host).ok_or("no host glue")?;
    assert_eq!(host.ecam().window(), Some((ECAM, 256 << 20)));
    let mem = b.memory();
    assert_eq!(mem.read_sized(GuestAddr(ECAM), 4)?, 0x29c0_8086);
    let t = ECAM + (3 << 15);
    assert_eq!(mem.read_sized(GuestAddr(t), 4)?, 0x0005_1b36, "pci-testdev at 03.0");
    assert_eq!(mem.read_sized(GuestAddr(t + 0x0a), 2)?, 0x00ff, "class");
    assert_eq!(
        mem.read_sized(GuestAddr(t + 0x100), 4)?,
        0xffff_ffff,
        "a conventional function has no extended space"
    );
    assert_eq!(mem.read_sized(GuestAddr(ECAM + (1 << 20)), 4)?, 0xffff_ffff, "bus 1");
    // A write through ECAM is a configuration write like any other.
    mem.write_sized(GuestAddr(t + 0x10), 4, 0xffff_ffff)?;
    assert_eq!(b.cfg_read(3, 0x10, 4)?, 0xffff_f000);
    // 128 MiB at 0xe0000000, then disabled.
    b.cfg_write(0, 0x60, 4, 0xe000_0003)?;
    assert_eq!(host.ecam().window(), Some((0xe000_0000, 128 << 20)));
    assert_eq!(Board::region_at(mem, ECAM), None, "moved away");
    assert_eq!(mem.read_sized(GuestAddr(0xe000_0000), 4)?, 0x29c0_8086);
    b.cfg_write(0, 0x60, 4, 0xe000_0006)?;
    assert_eq!(host.ecam().window(), None, "the reserved length disables it");
    Ok(())
}

#[test]
fn guest_bar_sizing_and_mapping_map_the_regions() -> TestResult {
    let b = Board::new()?;
    testdev("t", "3")?;
    program_bars(&b, 3)?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), Some("pci-testdev-mmio".into()));
    assert_eq!(
        Board::region_at(b.io(), IO_BAR + 0xff),
        Some("pci-testdev-portio".into())
    );
    // The test device through its BARs: start portio test 0 by an I/O
    // write, hit it, read its header through the memory BAR.
    let (mem, io) = (b.memory(), b.io());
    io.write_sized(GuestAddr(IO_BAR), 1, 0)?;
    io.write_sized(GuestAddr(IO_BAR + 0x83), 1, 0xfa)?;
    io.write_sized(GuestAddr(IO_BAR + 0x83), 1, 0xfb)?;
    assert_eq!(mem.read_sized(GuestAddr(MMIO_BAR), 1)?, 3, "test 3");
    assert_eq!(mem.read_sized(GuestAddr(MMIO_BAR + 4), 4)?, 0x83, "its offset");
    assert_eq!(
        mem.read_sized(GuestAddr(MMIO_BAR + 12), 4)?,
        1,
        "one hit, the matching one"
    );
    let mut name = [0u8; 17];
    mem.read(GuestAddr(MMIO_BAR + 16), &mut name)?;
    assert_eq!(&name, b"portio-no-eventfd");
    // Moving BAR0 while decoding: the old window goes, the new one answers.
    b.cfg_write(3, 0x10, 4, 0xfebe_0000)?;
    assert_eq!(Board::region_at(mem, MMIO_BAR), None);
    assert_eq!(Board::region_at(mem, 0xfebe_0000), Some("pci-testdev-mmio".into()));
    assert_eq!(mem.read_sized(GuestAddr(0xfebe_0000), 1)?, 3);
    // MEMORY off unmaps the memory BAR only; a 0 address is not mapped.
    b.cfg_write(3, 0x04, 2, 0x1)?;
    assert_eq!(Board::region_at(mem, 0xfebe_0000), None);
    assert_eq!(Board::region_at(io, IO_BAR), Some("pci-testdev-portio".into()));
    b.cfg_write(3, 0x14, 4, 0)?;
    assert_eq!(Board::region_at(io, IO_BAR), None);
    let info = query_pci();
    let regions = &info[0]["devices"][1]["regions"];
    assert_eq!(
        regions,
        &serde_json::json!([
            {"bar": 0, "type": "memory", "address": -1, "size": 4096, "prefetch": false, "mem_type_64": false},
            {"bar": 1, "type": "io", "address": -1, "size": 256}
        ])
    );
    Ok(())
}

#[test]
fn bars_swapping_addresses_end_where_the_guest_put_them() -> TestResult {
    let b = Board::new()?;
    testdev("a", "3")?;
    testdev("c", "4")?;
    program_bars(&b, 3)?;
    b.cfg_write(4, 0x10, 4, 0xfebe_0000)?;
    b.cfg_write(4, 0x04, 2, 0x2)?;
    // Swap them: each BAR's region leaves its old address before it
    // takes the new one.
    b.cfg_write(3, 0x10, 4, 0xfebe_0000)?;
    b.cfg_write(4, 0x10, 4, MMIO_BAR)?;
    let view = b.memory().flat_view();
    let at = |addr| view.lookup(GuestAddr(addr)).map(|r| r.region.owner().cloned());
    let a = vmkit_qom::resolve_path("/machine/peripheral/a", None)?;
    let c = vmkit_qom::resolve_path("/machine/peripheral/c", None)?;
    assert_eq!(at(0xfebe_0000), Some(Some(a)));
    assert_eq!(at(MMIO_BAR), Some(Some(c)));
    Ok(())
}

#[test]
fn bus_mastering_switches_the_dma_space() -> TestResult {
    let b = Board::new()?;
    let t = testdev("t", "3")?;
    let dev = pci_device::<PciTestdev>(&t).ok_or("no glue")?;
    let dma = dev.dma();
    dma.write(0x1000, b"early")?;
    let mut buf = [0u8; 5];
    b.block.read(0x1000, &mut buf)?;
    assert_eq!(&buf, &[0; 5], "MASTER clear: the write goes nowhere");
    b.cfg_write(3, 0x04, 2, 0x4)?;
    dma.write(0x1000, b"hello")?;
    b.block.read(0x1000, &mut buf)?;
    assert_eq!(&buf, b"hello", "MASTER set: guest RAM");
    b.cfg_write(3, 0x04, 2, 0)?;
    dma.write(0x1000, b"later")?;
    b.block.read(0x1000, &mut buf)?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

#[test]
fn placement_by_addr_with_qemus_refusals() -> TestResult {
    let _b = Board::new()?;
    let err = |r: vmkit_qom::Result<Object>| -> String {
        match r {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    };
    assert!(
        err(testdev("t0", "0"))
            .ends_with("PCI: slot 0 function 0 not available for pci-testdev, in use by mch,id=(null)")
    );
    testdev("t3", "03.0")?;
    assert!(
        err(testdev("t3b", "3"))
            .ends_with("PCI: slot 3 function 0 not available for pci-testdev, in use by pci-testdev,id=t3")
    );
    assert!(err(testdev("t31", "3.1")).ends_with("PCI: single function device can't be populated in function 3.1"));
    let e = err(testdev("bad", "zz"));
    assert!(e.contains("doesn't take value 'zz'"), "{e}");
    assert!(err(testdev("bad", "20")).contains("doesn't take value '20'"));
    // Automatic placement: the first free slot; addr then reads back.
    let auto = device_add(TYPE_PCI_TESTDEV, Some("auto"), &[])?;
    assert_eq!(auto.get("addr")?, Value::Int(0x08), "slot 1");
    // A refused device leaves nothing behind.
    assert!(vmkit_qom::resolve_path("/machine/peripheral/t3b", None).is_err());
    let slots: Vec<_> = query_pci()[0]["devices"]
        .as_array()
        .ok_or("no devices")?
        .iter()
        .map(|d| d["slot"].clone())
        .collect();
    assert_eq!(slots, [0, 1, 3]);
    // multifunction=on takes functions beside it.
    vmkit_qom::device_add_from_text(
        TYPE_PCI_TESTDEV,
        Some("m0"),
        &[("addr".into(), "5".into()), ("multifunction".into(), "on".into())],
    )?;
    testdev("m1", "5.1")?;
    let header = query_pci()[0]["devices"][3]["function"].clone();
    assert_eq!(header, 0);
    Ok(())
}

#[test]
fn hot_plug_follows_the_bus() -> TestResult {
    let b = Board::with(Q35Options { hotplug: false })?;
    testdev("cold", "3")?;
    machine_creation_done()?;
    let e = testdev("hot", "4").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.ends_with("Bus 'pcie.0' does not support hotplugging"), "{e}");
    let e = device_del("cold").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.ends_with("Bus 'pcie.0' does not support hotplugging"), "{e}");
    assert!(vmkit_qom::resolve_path("/machine/peripheral/cold", None)?.is_realized());
    // A bus that takes it: plugged, reset, unplugged, the slot free again.
    b.q35.bus.set_hotplug(true);
    testdev("hot", "4")?;
    assert_eq!(b.cfg_read(4, 0x00, 4)?, 0x0005_1b36);
    program_bars(&b, 4)?;
    let region = pci_device::<PciTestdev>(&vmkit_qom::resolve_path("/machine/peripheral/hot", None)?)
        .and_then(|d| d.bar_region(vmkit_devices::pci::BarIndex::ALL[0]))
        .ok_or("no BAR0 region")?;
    device_del("hot")?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), None, "unmapped");
    assert_eq!(b.cfg_read(4, 0x00, 4)?, 0xffff_ffff, "the slot is empty");
    // A region kept past the unplug fails cleanly.
    let space = AddressSpace::new("kept", &region);
    let e = space
        .read_sized(GuestAddr(0), 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("unusable"), "{e}");
    testdev("again", "4")?;
    Ok(())
}

#[test]
fn the_ecam_window_follows_hot_plug_and_unplug() -> TestResult {
    let b = Board::new()?;
    machine_creation_done()?;
    b.cfg_write(0, 0x60, 4, ECAM | 1)?;
    let mem = b.memory();
    let slot5 = ECAM + (5 << 15);
    assert_eq!(mem.read_sized(GuestAddr(slot5), 4)?, 0xffff_ffff, "nothing at 05.0 yet");
    let hot = testdev("hot", "5")?;
    assert_eq!(
        mem.read_sized(GuestAddr(slot5), 4)?,
        0x0005_1b36,
        "plugged: ECAM reaches it"
    );
    mem.write_sized(GuestAddr(slot5 + 0x10), 4, 0xffff_ffff)?;
    assert_eq!(
        mem.read_sized(GuestAddr(slot5 + 0x10), 4)?,
        0xffff_f000,
        "and writes to it"
    );
    assert_eq!(
        mem.read_sized(GuestAddr(ECAM), 4)?,
        0x29c0_8086,
        "the others still answer"
    );
    device_del("hot")?;
    assert_eq!(
        mem.read_sized(GuestAddr(slot5), 4)?,
        0xffff_ffff,
        "unplugged: the slot is empty"
    );
    // The window it was reached through does not keep it.
    assert_eq!(hot.phase(), vmkit_qom::Phase::Finalized);
    let host = vmkit_devices::glue::pci::q35_host(&b.q35.host).ok_or("no host glue")?;
    assert_eq!(host.ecam().window(), Some((ECAM, 256 << 20)));
    Ok(())
}

#[test]
fn reset_unmaps_and_restarts() -> TestResult {
    let b = Board::new()?;
    let t = testdev("t", "3")?;
    program_bars(&b, 3)?;
    b.cfg_write(0, 0x60, 4, ECAM | 1)?;
    b.io().write_sized(GuestAddr(IO_BAR), 1, 1)?;
    let dev = pci_device::<PciTestdev>(&t).ok_or("no glue")?;
    assert!(dev.model().current_test().is_some());
    vmkit_qom::reset_tree(&b.machine)?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), None);
    assert_eq!(Board::region_at(b.io(), IO_BAR), None);
    assert_eq!(Board::region_at(b.memory(), ECAM), None, "PCIEXBAR back to disabled");
    assert_eq!(b.cfg_read(3, 0x04, 2)?, 0, "Command cleared");
    assert_eq!(b.cfg_read(3, 0x10, 4)?, 0, "BAR0 back to its type bits");
    assert_eq!(dev.model().current_test(), None);
    Ok(())
}

/// QEMU 7.2's `mch` configuration space at reset (read from a
/// `qemu-system-x86_64 -M q35 -S` through 0xCF8/0xCFC).
fn qemu_mch_config() -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[..4].copy_from_slice(&[0x86, 0x80, 0xc0, 0x29]);
    c[0x0b] = 0x06;
    c[0x2c..0x30].copy_from_slice(&[0xf4, 0x1a, 0x00, 0x11]);
    c[0x50] = 0x10;
    c[0x63] = 0xb0;
    c[0x9d] = 0x02;
    c[0x9e] = 0x38;
    c
}

#[test]
fn devices_migrate_in_sections_named_as_qemus() -> TestResult {
    let b = Board::new()?;
    testdev("t", "3")?;
    let sections = collect_devices(&b.machine)?;
    let names: Vec<_> = sections.iter().map(|s| (s.idstr.as_str(), s.instance_id)).collect();
    assert_eq!(
        names,
        [
            ("0000:00:03.0/pci-testdev", 0),
            // The host bridge's 0xCF8 register, QEMU's "PCIHost".
            ("PCIHost", 0),
            ("0000:00:00.0/mch", 0)
        ]
    );
    // The mch section at reset, byte for byte as QEMU's: PCIDevice
    // (version 2, the 256 bytes, four low pins), then the unused byte.
    let mch = &sections[2].device;
    let mut body = Vec::new();
    vmkit_migration::vmstate::encode(&mch.description(), &mut mch.save_vmstate()?, &mut body, 0)?;
    let mut want = vec![0, 0, 0, 2];
    want.extend(qemu_mch_config());
    want.extend([0u8; 17]);
    assert_eq!(body, want);

    // A programmed machine saved, reset, and restored: BARs, ECAM and the
    // test's state come back, mapped.
    program_bars(&b, 3)?;
    b.cfg_write(0, 0x60, 4, ECAM | 1)?;
    b.io().write_sized(GuestAddr(IO_BAR), 1, 0)?;
    b.io().write_sized(GuestAddr(IO_BAR + 0x83), 1, 0xfa)?;
    b.cf8(3, 0, 0x08)?;
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&b.block)], collect_devices(&b.machine)?);
    let mut stream = Vec::new();
    save(&set, &mut stream, &SaveOptions::default())?;
    vmkit_qom::reset_tree(&b.machine)?;
    b.cf8(5, 0, 0)?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), None);
    let set = SaveSet::new("pc-q35-vmkit", vec![Arc::clone(&b.block)], collect_devices(&b.machine)?);
    restore(&set, stream.as_slice(), &RestoreOptions::default())?;
    assert_eq!(Board::region_at(b.memory(), MMIO_BAR), Some("pci-testdev-mmio".into()));
    assert_eq!(Board::region_at(b.io(), IO_BAR), Some("pci-testdev-portio".into()));
    assert_eq!(Board::region_at(b.memory(), ECAM), Some("pcie-mmcfg-mmio".into()));
    assert_eq!(b.memory().read_sized(GuestAddr(MMIO_BAR + 12), 4)?, 1, "the hit count");
    assert_eq!(
        b.io().read_sized(GuestAddr(0xcf8), 4)?,
        0x8000_1808,
        "0xCF8 as the guest left it"
    );
    Ok(())
}

#[test]
fn a_machine_with_busy_devices_tears_down_whole() -> TestResult {
    let b = Board::new()?;
    let t = testdev("t", "3")?;
    program_bars(&b, 3)?;
    b.cfg_write(3, 0x04, 2, 0x7)?;
    b.cfg_write(0, 0x60, 4, ECAM | 1)?;
    let (host, block) = (b.q35.host.clone(), Arc::clone(&b.block));
    // Bus mastering on, BARs and ECAM mapped: each device's bus-master
    // view references the machine's RAM and the BARs. Destroying the
    // machine unrealizes them first, so nothing keeps it alive.
    drop(b);
    assert_eq!(host.phase(), vmkit_qom::Phase::Finalized);
    assert_eq!(t.phase(), vmkit_qom::Phase::Finalized);
    assert_eq!(Arc::strong_count(&block), 1, "no region holds the RAM block");
    Ok(())
}
