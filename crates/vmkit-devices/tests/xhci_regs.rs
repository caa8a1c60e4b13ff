//! `qemu-xhci`'s identity and BAR0 registers as a guest reads and writes
//! them: configuration space, capability registers (with the properties
//! clamped as QEMU clamps them), operational registers, MFINDEX on an
//! injected clock, and accesses the register blocks refuse.

mod xhci_guest;

use vmkit_devices::pci::regs::cap_id;
use vmkit_devices::pci::{BarIndex, Command};
use vmkit_devices::usb::UsbError;
use vmkit_devices::usb::xhci::core::MICROFRAME_NS;
use vmkit_devices::usb::xhci::pci::qemu_xhci_config_space;
use vmkit_devices::usb::xhci::{TrbType, XhciBus, XhciConfig, XhciPciConfig};
use xhci_guest::*;

#[test]
fn the_pci_identity_is_qemus() -> TestResult {
    let cfg = qemu_xhci_config_space(XhciBus::ExpressRoot, Some(16))?;
    assert_eq!(cfg.len(), 4096);
    assert_eq!(cfg.read(0x00, 4)?, 0x000d_1b36, "Red Hat, qemu-xhci");
    assert_eq!(cfg.read(0x08, 4)?, 0x0c03_3001, "USB xHCI, revision 1");
    assert_eq!(cfg.read(0x0c, 1)?, 0x10, "cache line size");
    assert_eq!(cfg.read(0x3d, 1)?, 1, "INTA");
    assert_eq!(cfg.read(0x60, 1)?, 0x30, "SBRN: USB 3.0");
    assert_eq!(cfg.read(0x2c, 4)?, 0x1100_1af4);
    // Capabilities: MSI-X at 0x90 first, then PCI Express at 0xa0.
    assert_eq!(cfg.read(0x34, 1)?, 0x90);
    assert_eq!(cfg.read(0x90, 2)?, 0xa0_11);
    assert_eq!(cfg.read(0xa0, 2)?, 0x00_10);
    assert_eq!(cfg.find_capability(cap_id::MSIX), Some(0x90));
    assert_eq!(cfg.read(0x92, 2)?, 15, "16 vectors");
    assert_eq!(cfg.read(0x94, 4)?, 0x3000, "table in BAR0 at 0x3000");
    assert_eq!(cfg.read(0x98, 4)?, 0x3800, "PBA in BAR0 at 0x3800");
    assert_eq!(cfg.read(0xa2, 2)?, 0x0092, "v2, root-complex integrated endpoint");
    assert_eq!(cfg.read(0xc4, 4)?, 0x0030_0000, "DEVCAP2");
    // BAR0: 64-bit memory, 16 KiB.
    let mut cfg = cfg;
    cfg.write(0x10, 4, 0xffff_ffff)?;
    cfg.write(0x14, 4, 0xffff_ffff)?;
    assert_eq!((cfg.read(0x10, 4)?, cfg.read(0x14, 4)?), (0xffff_c004, 0xffff_ffff));
    cfg.write(0x10, 4, 0xfebf_0000)?;
    cfg.write(0x14, 4, 0)?;
    let fx = cfg.write(0x04, 2, u32::from(Command::MEMORY.bits()))?;
    assert_eq!(fx.bar_moves.len(), 1);
    assert_eq!(cfg.bar_mapping(BarIndex::ALL[0]), Some(0xfebf_0000));

    let behind_port = qemu_xhci_config_space(XhciBus::Express, Some(16))?;
    assert_eq!(behind_port.read(0xa2, 2)?, 0x0002, "an endpoint behind a port");
    let conventional = qemu_xhci_config_space(XhciBus::Conventional, None)?;
    assert_eq!(conventional.len(), 256);
    assert_eq!(conventional.read(0x34, 1)?, 0, "no capabilities without MSI-X and PCIe");
    Ok(())
}

#[test]
fn capability_registers_with_default_and_clamped_properties() -> TestResult {
    let mut g = Guest::default_config()?;
    assert_eq!(g.r32(0x00)?, 0x0100_0040);
    assert_eq!(g.read(0x00, 1)?, 0x40, "CAPLENGTH");
    assert_eq!(g.read(0x02, 2)?, 0x0100, "HCIVERSION");
    assert_eq!(g.r32(0x04)?, 0x0800_1040, "8 ports, 16 interrupters, 64 slots");
    assert_eq!(g.r32(0x08)?, 0xf);
    assert_eq!(g.r32(0x10)?, 0x0008_7001, "xECP 0x20, MaxPSASize 7, AC64");
    assert_eq!((g.r32(0x14)?, g.r32(0x18)?), (0x2000, 0x1000), "DBOFF, RTSOFF");
    let usb2: Vec<u32> = (0..4).map(|i| g.r32(0x20 + 4 * i)).collect::<Res<_>>()?;
    assert_eq!(usb2, [0x0200_0402, 0x2042_5355, 0x0405, 0], "USB 2: ports 5..8");
    let usb3: Vec<u32> = (0..4).map(|i| g.r32(0x30 + 4 * i)).collect::<Res<_>>()?;
    assert_eq!(usb3, [0x0300_0002, 0x2042_5355, 0x0401, 0], "USB 3: ports 1..4");
    g.w32(0x04, 0)?;
    assert_eq!(g.r32(0x04)?, 0x0800_1040, "read-only");

    let clamped = XhciConfig {
        p2: 20,
        p3: 1,
        intrs: 5,
        slots: 0,
        streams: false,
    };
    let mut g = Guest::new(XhciPciConfig {
        core: clamped,
        ..XhciPciConfig::default()
    })?;
    assert_eq!(g.r32(0x04)?, 16 << 24 | 8 << 8 | 1, "p2 15 + p3 1, intrs 8, slots 1");
    assert_eq!(g.r32(0x10)?, 0x0008_0001, "no streams");
    assert_eq!(g.r32(0x28)?, 15 << 8 | 2);
    assert_eq!(g.dev.msix().map(|m| m.vectors()), Some(8), "one vector per interrupter");
    let many = XhciConfig {
        intrs: 100,
        slots: 100,
        ..XhciConfig::default()
    };
    let mut g = Guest::new(XhciPciConfig {
        core: many,
        ..XhciPciConfig::default()
    })?;
    assert_eq!(g.r32(0x04)? & 0xffff, 16 << 8 | 64);
    Ok(())
}

#[test]
fn operational_registers_keep_what_qemu_keeps() -> TestResult {
    let mut g = Guest::default_config()?;
    assert_eq!(g.r32(USBSTS)?, 1, "halted after reset");
    assert_eq!(g.r32(OPER + 0x08)?, 1, "4 KiB pages");
    g.w32(OPER + 0x14, 0xffff_ffff)?;
    assert_eq!(g.r32(OPER + 0x14)?, 0xffff, "DNCTRL");
    g.w32(CONFIG, 0x1234)?;
    assert_eq!(g.r32(CONFIG)?, 0x34);
    g.w64(DCBAAP, 0x1_2345_6789)?;
    assert_eq!(g.read(DCBAAP, 8)?, 0x1_2345_6780, "64-byte aligned");
    g.w32(CRCR, 0x4000_0017)?;
    assert_eq!(g.r32(CRCR)?, 0x4000_0001, "CS/CA/CRR read 0; bits 4-5 dropped");
    g.w32(USBCMD, !0x3)?;
    assert_eq!(g.r32(USBCMD)?, 0xc0c, "stored bits only, still halted");
    assert_eq!(g.r32(USBSTS)? & 0x400, 0x400, "CRS set SRE");
    g.w32(USBSTS, 0x400)?;
    assert_eq!(g.r32(USBSTS)? & 0x400, 0, "SRE is write-1-to-clear");
    g.w32(USBCMD, 0x1)?;
    assert_eq!(g.r32(USBSTS)? & 1, 0, "running");
    g.w32(USBCMD, 0x0)?;
    assert_eq!(g.r32(USBSTS)? & 1, 1, "halted again");
    // HCRST brings everything back.
    g.w32(USBCMD, 0x2)?;
    assert_eq!((g.r32(USBCMD)?, g.r32(CONFIG)?, g.read(DCBAAP, 8)?), (0, 0, 0));
    Ok(())
}

#[test]
fn mfindex_follows_the_injected_clock_and_wraps_with_an_event() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    let t0 = g.now;
    g.now = t0 + 10 * MICROFRAME_NS + 1;
    assert_eq!(g.r32(RUNTIME)?, 10);
    g.now = t0 + (0x4000 + 3) * MICROFRAME_NS;
    assert_eq!(g.r32(RUNTIME)?, 3, "14 bits");
    assert_eq!(g.dev.core().next_deadline(), None, "no wrap events without EWE");
    g.w32(USBCMD, 0x1 | 0x4 | 0x400)?; // RS | INTE | EWE
    let deadline = g.dev.core().next_deadline().ok_or("no deadline")?;
    assert_eq!(deadline, t0 + 2 * 0x4000 * MICROFRAME_NS);
    g.now = deadline - 1;
    let fx = g.dev.run_timers(&env(&g.mem, g.now));
    assert!(fx.is_empty());
    assert!(g.events()?.is_empty());
    g.now = deadline;
    let fx = g.dev.run_timers(&env(&g.mem, g.now));
    assert_eq!(fx.intx, Some(true), "MSI-X is off: INTA rises");
    let evs = g.events()?;
    assert_eq!(
        evs.iter().map(|e| e.trb_type()).collect::<Vec<_>>(),
        [Some(TrbType::MfindexWrap)]
    );
    assert_eq!(g.dev.core().next_deadline(), Some(deadline + 0x4000 * MICROFRAME_NS));
    Ok(())
}

#[test]
fn sizes_and_holes_as_the_register_blocks_take_them() -> TestResult {
    let mut g = Guest::default_config()?;
    let bad = |offset, size| UsbError::BadAccess { offset, size };
    assert_eq!(g.read(USBCMD, 2), Err(bad(USBCMD, 2)), "operational: 4 or 8 bytes");
    assert_eq!(g.read(USBSTS + 2, 4), Err(bad(USBSTS + 2, 4)), "operational: aligned");
    assert_eq!(g.r32(OPER + 0x0c)?, 0, "an operational hole reads 0");
    assert_eq!(g.read(0x441, 1), Err(bad(0x441, 1)));
    assert_eq!(g.read(0x440, 8), Err(bad(0x440, 8)), "ports: 4 bytes");
    assert_eq!(g.write(DOORBELL, 2, 0), Err(bad(DOORBELL, 2)), "doorbells: 4 bytes");
    assert_eq!(g.read(0x02, 4), Err(bad(0x02, 4)), "unaligned");
    assert_eq!(g.read(0x4000, 4), Err(bad(0x4000, 4)), "past BAR0");
    assert_eq!(g.read(0x08, 8), Err(bad(0x08, 8)), "capabilities: at most 4");
    // Holes read 0 and drop writes.
    g.w32(0x1800, 0xffff_ffff)?;
    assert_eq!(g.r32(0x1800)?, 0);
    assert_eq!(g.r32(0x440 + 0x10 * 8)?, 0, "past the last port");
    assert_eq!(g.r32(0x444)?, 0, "PORTPMSC");
    assert_eq!(g.r32(DOORBELL + 4)?, 0, "doorbells read 0");
    // Interrupters past `intrs` still hold their registers (QEMU's array).
    g.w32(IR0 + 0x20 * 15 + 4, 0x55)?;
    assert_eq!(g.r32(IR0 + 0x20 * 15 + 4)?, 0x55);
    // MSI-X table: 4 or 8 bytes, vectors start masked.
    assert_eq!(g.r32(0x300c)?, 1);
    assert_eq!(g.read(0x3000, 2), Err(bad(0x3000, 2)));
    assert_eq!(g.r32(0x3800)?, 0);
    Ok(())
}
