//! The configuration space as a guest drives it: BAR sizing and mapping,
//! write masks, write-1-to-clear, the capability list, reset and the
//! migration check.

use proptest::prelude::*;
use vmkit_devices::pci::regs::cap_id;
use vmkit_devices::pci::{
    Bar, BarIndex, BarMove, BarSpace, Command, ConfigKind, ConfigSpace, Identity, PciError, Status,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn xhci_like() -> ConfigSpace {
    ConfigSpace::new(
        ConfigKind::Express,
        Identity {
            vendor_id: 0x1b36,
            device_id: 0x000d,
            revision: 1,
            class_code: 0x0c0330,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            header_type: 0,
            interrupt_pin: 1,
        },
    )
}

fn bar(n: u8) -> BarIndex {
    BarIndex::new(n).unwrap_or(BarIndex::ROM)
}

#[test]
fn identity_and_qemus_default_subsystem() -> TestResult {
    let cfg = xhci_like();
    assert_eq!(cfg.len(), 4096);
    assert_eq!(cfg.read(0x00, 4)?, 0x000d_1b36);
    assert_eq!(cfg.read(0x08, 4)?, 0x0c03_3001);
    assert_eq!(cfg.read(0x2c, 4)?, 0x1100_1af4);
    assert_eq!(cfg.read(0x3d, 1)?, 1);
    Ok(())
}

#[test]
fn read_only_bytes_stay_and_writable_ones_change() -> TestResult {
    let mut cfg = xhci_like();
    cfg.write(0x00, 4, 0xffff_ffff)?;
    assert_eq!(cfg.read(0x00, 4)?, 0x000d_1b36, "IDs are read-only");
    cfg.write(0x04, 2, 0xffff)?;
    assert_eq!(cfg.command(), Command::WRITABLE, "only QEMU's writable Command bits");
    cfg.write(0x0c, 1, 0x10)?;
    cfg.write(0x3c, 1, 0x0b)?;
    assert_eq!((cfg.read(0x0c, 1)?, cfg.read(0x3c, 1)?), (0x10, 0x0b));
    cfg.write(0x3d, 1, 4)?;
    assert_eq!(cfg.read(0x3d, 1)?, 1, "interrupt pin is read-only");
    Ok(())
}

#[test]
fn status_error_bits_clear_by_writing_one() -> TestResult {
    let mut cfg = xhci_like();
    cfg.set_status(Status::REC_MASTER_ABORT | Status::SIG_SYSTEM_ERROR, true);
    cfg.write(0x06, 2, Status::REC_MASTER_ABORT.bits().into())?;
    assert_eq!(cfg.status() & Status::WRITE_ONE_TO_CLEAR, Status::SIG_SYSTEM_ERROR);
    cfg.write(0x06, 2, 0)?;
    assert!(
        cfg.status().contains(Status::SIG_SYSTEM_ERROR),
        "writing 0 changes nothing"
    );
    Ok(())
}

#[test]
fn the_all_ones_probe_sizes_each_kind_of_bar() -> TestResult {
    let mut cfg = xhci_like();
    cfg.register_bar(bar(0), Bar::mem64(0x4000))?;
    cfg.register_bar(bar(2), Bar::io(0x20))?;
    cfg.register_bar(bar(3), Bar::mem32(0x1000))?;
    cfg.register_bar(BarIndex::ROM, Bar::mem32(0x10000))?;
    for at in [0x10, 0x14, 0x18, 0x1c, 0x30] {
        cfg.write(at, 4, 0xffff_ffff)?;
    }
    assert_eq!(cfg.read(0x10, 4)?, 0xffff_c004, "64-bit memory: size bits and type");
    assert_eq!(cfg.read(0x14, 4)?, 0xffff_ffff, "its high dword");
    assert_eq!(cfg.read(0x18, 4)?, 0xffff_ffe1, "I/O");
    assert_eq!(cfg.read(0x1c, 4)?, 0xffff_f000, "32-bit memory");
    assert_eq!(cfg.read(0x30, 4)?, 0xffff_0001, "ROM with its enable bit");
    // Decoding is off, so the probe mapped nothing.
    assert!(BarIndex::ALL.iter().all(|&i| cfg.bar_mapping(i).is_none()));
    Ok(())
}

#[test]
fn command_memory_maps_and_a_move_unmaps_first() -> TestResult {
    let mut cfg = xhci_like();
    cfg.register_bar(bar(0), Bar::mem64(0x4000))?;
    cfg.register_bar(bar(2), Bar::mem32(0x1000))?;
    cfg.write(0x10, 4, 0xfebf_0000)?;
    cfg.write(0x14, 4, 0)?;
    cfg.write(0x18, 4, 0xfebf_4000)?;
    let on = cfg.write(0x04, 2, u32::from((Command::MEMORY | Command::MASTER).bits()))?;
    assert_eq!(on.bus_master, Some(true));
    assert_eq!(
        on.bar_moves,
        vec![
            BarMove {
                index: bar(0),
                space: BarSpace::Memory,
                size: 0x4000,
                from: None,
                to: Some(0xfebf_0000)
            },
            BarMove {
                index: bar(2),
                space: BarSpace::Memory,
                size: 0x1000,
                from: None,
                to: Some(0xfebf_4000)
            },
        ]
    );
    // Moving BAR 0 while mapped: one removal, then one addition.
    let moved = cfg.write(0x10, 4, 0xfeb0_0000)?;
    assert_eq!(moved.bar_moves.len(), 2);
    assert_eq!(
        (moved.bar_moves[0].from, moved.bar_moves[0].to),
        (Some(0xfebf_0000), None)
    );
    assert_eq!(
        (moved.bar_moves[1].from, moved.bar_moves[1].to),
        (None, Some(0xfeb0_0000))
    );
    assert_eq!(cfg.bar_mapping(bar(0)), Some(0xfeb0_0000));
    // A write elsewhere moves nothing.
    assert!(cfg.write(0x40, 4, 0x1234_5678)?.is_empty());
    // Memory decoding off unmaps both, removals only.
    let off = cfg.write(0x04, 2, 0)?;
    assert!(off.bar_moves.iter().all(|m| m.to.is_none() && m.from.is_some()));
    assert_eq!((off.bar_moves.len(), off.bus_master), (2, Some(false)));
    Ok(())
}

#[test]
fn a_byte_write_into_a_bar_counts() -> TestResult {
    let mut cfg = xhci_like();
    cfg.register_bar(bar(1), Bar::mem32(0x1000))?;
    cfg.write(0x04, 2, u32::from(Command::MEMORY.bits()))?;
    let moved = cfg.write(0x17, 1, 0xfe)?;
    assert_eq!(moved.bar_moves.len(), 1);
    assert_eq!(cfg.bar_mapping(bar(1)), Some(0xfe00_0000));
    Ok(())
}

#[test]
fn bars_refuse_bad_sizes_and_taken_slots() {
    let mut cfg = xhci_like();
    assert!(cfg.register_bar(bar(0), Bar::mem32(0x1001)).is_err());
    assert!(cfg.register_bar(bar(0), Bar::mem64(0x1000)).is_ok());
    assert!(matches!(
        cfg.register_bar(bar(1), Bar::mem32(0x1000)),
        Err(PciError::BadBar { index: 1, .. })
    ));
    assert!(cfg.register_bar(bar(0), Bar::mem32(0x1000)).is_err());
}

#[test]
fn capabilities_are_prepended_read_only_and_found() -> TestResult {
    let mut cfg = xhci_like();
    let msix = cfg.add_capability(cap_id::MSIX, None, 12)?;
    let exp = cfg.add_capability(cap_id::EXP, Some(0xa0), 0x3c)?;
    assert_eq!((msix, exp), (0x40, 0xa0));
    assert!(cfg.status().contains(Status::CAP_LIST));
    assert_eq!(cfg.read(0x34, 1)?, 0xa0, "the newest heads the list");
    assert_eq!(cfg.read(0xa1, 1)?, 0x40);
    assert_eq!(cfg.read(0x41, 1)?, 0);
    assert_eq!(cfg.find_capability(cap_id::MSIX), Some(0x40));
    assert_eq!(cfg.find_capability(cap_id::MSI), None);
    cfg.write(0x40, 4, 0xffff_ffff)?;
    assert_eq!(cfg.read(0x40, 2)?, 0x0011, "capability bytes are read-only by default");
    let next = cfg.add_capability(cap_id::PM, None, 8)?;
    assert_eq!(next, 0x4c, "the first free aligned gap after the MSI-X one");
    assert!(matches!(
        cfg.add_capability(cap_id::VENDOR, Some(0xa4), 4),
        Err(PciError::BadCapability { .. })
    ));
    Ok(())
}

#[test]
fn reset_clears_command_bars_and_mappings() -> TestResult {
    let mut cfg = xhci_like();
    cfg.register_bar(bar(0), Bar::mem32(0x1000))?;
    cfg.write(0x10, 4, 0xfebf_0000)?;
    cfg.write(0x04, 2, u32::from((Command::MEMORY | Command::MASTER).bits()))?;
    cfg.write(0x3c, 1, 11)?;
    let effects = cfg.reset();
    assert_eq!(effects.bar_moves.len(), 1);
    assert_eq!(effects.bus_master, Some(false));
    assert_eq!(cfg.read(0x10, 4)?, 0);
    assert_eq!(cfg.command(), Command::empty());
    assert_eq!(cfg.read(0x3c, 1)?, 0);
    Ok(())
}

#[test]
fn past_the_end_reads_all_ones_and_bad_sizes_are_errors() -> TestResult {
    let cfg = ConfigSpace::new(
        ConfigKind::Conventional,
        Identity {
            vendor_id: 0x8086,
            device_id: 0x29c0,
            revision: 0,
            class_code: 0x060000,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            header_type: 0,
            interrupt_pin: 0,
        },
    );
    assert_eq!(cfg.read(0x100, 4)?, 0xffff_ffff);
    assert_eq!(cfg.read(0x200, 2)?, 0xffff);
    assert_eq!(cfg.read(0xfe, 4)?, 0, "cut at the end");
    assert!(matches!(cfg.read(0, 3), Err(PciError::BadAccess { .. })));
    Ok(())
}

#[test]
fn a_migration_must_carry_the_same_device() -> TestResult {
    let mut src = xhci_like();
    src.register_bar(bar(0), Bar::mem64(0x4000))?;
    src.write(0x10, 4, 0xfebf_0000)?;
    src.write(0x04, 2, u32::from(Command::MEMORY.bits()))?;
    let mut dst = xhci_like();
    dst.register_bar(bar(0), Bar::mem64(0x4000))?;
    let effects = dst.load(src.bytes())?;
    assert_eq!(dst.bar_mapping(bar(0)), Some(0xfebf_0000));
    assert_eq!(effects.bar_moves.len(), 1);

    let mut other = xhci_like();
    other.register_bar(bar(0), Bar::mem32(0x4000))?; // a 32-bit BAR: type bits differ
    assert!(matches!(
        other.load(src.bytes()),
        Err(PciError::BadConfigData { offset: 0x10, .. })
    ));
    let mut changed = src.bytes().to_vec();
    changed[2] ^= 1; // the device id
    assert!(matches!(
        dst.load(&changed),
        Err(PciError::BadConfigData { offset: 2, .. })
    ));
    Ok(())
}

proptest! {
    /// Whatever a guest writes, bytes it may not change keep their value
    /// (write-1-to-clear bits only go from 1 to 0), and every mapping the
    /// space reports follows QEMU's rule from the bytes it holds.
    #[test]
    fn guest_writes_respect_the_masks(writes in prop::collection::vec((0u16..0x140, prop::sample::select(vec![1u8, 2, 4]), any::<u32>()), 1..64)) {
        let mut cfg = xhci_like();
        cfg.register_bar(bar(0), Bar::mem64(0x4000)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        cfg.register_bar(bar(2), Bar::io(0x20)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        cfg.add_capability(cap_id::MSIX, None, 12).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let fixed: Vec<u8> = cfg.bytes().to_vec();
        for (offset, size, value) in writes {
            cfg.write(offset, size, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Identity, header type, pin, capability bytes: never change.
            for at in [0usize, 1, 2, 3, 8, 9, 10, 11, 0x0e, 0x34, 0x3d, 0x40, 0x41, 0x42] {
                prop_assert_eq!(cfg.bytes()[at], fixed[at], "byte {:#x}", at);
            }
            // BAR flag bits read back as declared.
            prop_assert_eq!(cfg.bytes()[0x10] & 0xf, 0x4);
            prop_assert_eq!(cfg.bytes()[0x18] & 0x3, 0x1);
            let cmd = cfg.command();
            let lo = u64::from(u32::from_le_bytes([cfg.bytes()[0x10], cfg.bytes()[0x11], cfg.bytes()[0x12], cfg.bytes()[0x13]]));
            let hi = u64::from(u32::from_le_bytes([cfg.bytes()[0x14], cfg.bytes()[0x15], cfg.bytes()[0x16], cfg.bytes()[0x17]]));
            let want = Bar::mem64(0x4000).address(bar(0), hi << 32 | lo, cmd.contains(Command::IO), cmd.contains(Command::MEMORY));
            prop_assert_eq!(cfg.bar_mapping(bar(0)), want);
        }
    }
}
