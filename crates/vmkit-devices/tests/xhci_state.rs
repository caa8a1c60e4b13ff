//! The "xhci" VMState: its layout field by field against QEMU's
//! `vmstate_xhci_pci` / `vmstate_xhci`, the bytes on the wire, a save and
//! restore of a running controller (slots rebuilt from guest memory,
//! transfers continuing), and the loads QEMU refuses.

mod xhci_guest;

use vmkit_devices::usb::UsbHid;
use vmkit_devices::usb::xhci::state::{XhciDevice, XhciState, section_idstr, xhci_vmsd};
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{Trb, TrbType, XhciBus, XhciConfig, XhciPci, XhciPciConfig};
use vmkit_migration::device_state::{DeviceState, DynDeviceState, MigrationState};
use vmkit_migration::vmstate::{ArrayLen, FieldKind, VmReader, VmStateDescription, decode, encode, encode_described};
use xhci_guest::*;

/// One line per field, depth-first: path, QEMU info name, element count,
/// the field's version, and for structs the nested description's name
/// and version.
fn layout(desc: &VmStateDescription, prefix: &str, out: &mut Vec<String>) {
    for f in desc.fields() {
        let path = format!("{prefix}{}", f.name());
        let (kind, count) = match f.kind() {
            FieldKind::Array {
                elem,
                len: ArrayLen::Fixed(n),
            } => (elem.as_ref(), *n),
            k => (k, 1),
        };
        let type_name = if count == 1 { f.type_name() } else { kind.info_name() };
        let mut line = format!("{path} {type_name} x{count} v{}", f.version_id());
        if let FieldKind::Buffer { len } = kind {
            line += &format!(" {len}B");
        }
        if let FieldKind::Struct(inner) = kind {
            line += &format!(" {} v{}", inner.name(), inner.version_id());
            out.push(line);
            layout(inner, &format!("{path}/"), out);
            continue;
        }
        out.push(line);
    }
}

/// QEMU's field list for `qemu-xhci` with its defaults on a PCI Express
/// bus (8 ports, 64 slots, 16 interrupters, MSI-X). Where vmkit's
/// description must differ on paper (not on the wire) the line says so.
const QEMU_LAYOUT: &[&str] = &[
    // QEMU names this field and the next both "parent_obj"; its trailer
    // numbers them, and vmkit's names are the trailer's.
    "parent_obj[0] struct x1 v0 PCIDevice v2",
    // "int32 le": a be32 that loads only as 0..=2.
    "parent_obj[0]/version_id int32 le x1 v0",
    // Two "config" fields, sent by a test of the bus (PCI Express here:
    // the second); the trailer numbers them too.
    "parent_obj[0]/config[0] pci config x1 v0 256B",
    "parent_obj[0]/config[1] pci config x1 v0 4096B",
    // Four be32 levels, since version 2.
    "parent_obj[0]/irq_state pci irq state x1 v2 16B",
    "parent_obj[1] struct x1 v0 msix v0",
    // 16 x 16 table bytes, then 2 pending-bit bytes.
    "parent_obj[1]/msix msix state x1 v0 258B",
    "xhci struct x1 v1 xhci-core v1",
    "xhci/ports struct x8 v1 xhci-port v1",
    "xhci/ports/portsc uint32 x1 v0",
    "xhci/slots struct x64 v1 xhci-slot v1",
    "xhci/slots/enabled bool x1 v0",
    "xhci/slots/addressed bool x1 v0",
    "xhci/intr struct x16 v1 xhci-intr v1",
    "xhci/intr/iman uint32 x1 v0",
    "xhci/intr/imod uint32 x1 v0",
    "xhci/intr/erstsz uint32 x1 v0",
    "xhci/intr/erstba_low uint32 x1 v0",
    "xhci/intr/erstba_high uint32 x1 v0",
    "xhci/intr/erdp_low uint32 x1 v0",
    "xhci/intr/erdp_high uint32 x1 v0",
    "xhci/intr/msix_used bool x1 v0",
    "xhci/intr/er_pcs bool x1 v0",
    "xhci/intr/er_start uint64 x1 v0",
    "xhci/intr/er_size uint32 x1 v0",
    "xhci/intr/er_ep_idx uint32 x1 v0",
    "xhci/intr/er_full_unused bool x1 v0",
    "xhci/intr/ev_buffer_put uint32 x1 v0",
    "xhci/intr/ev_buffer_get uint32 x1 v0",
    "xhci/intr/ev_buffer struct x5632 v1 xhci-event v1",
    "xhci/intr/ev_buffer/type uint32 x1 v0",
    "xhci/intr/ev_buffer/ccode uint32 x1 v0",
    "xhci/intr/ev_buffer/ptr uint64 x1 v0",
    "xhci/intr/ev_buffer/length uint32 x1 v0",
    "xhci/intr/ev_buffer/flags uint32 x1 v0",
    "xhci/intr/ev_buffer/slotid uint8 x1 v0",
    "xhci/intr/ev_buffer/epid uint8 x1 v0",
    "xhci/usbcmd uint32 x1 v0",
    "xhci/usbsts uint32 x1 v0",
    "xhci/dnctrl uint32 x1 v0",
    "xhci/crcr_low uint32 x1 v0",
    "xhci/crcr_high uint32 x1 v0",
    "xhci/dcbaap_low uint32 x1 v0",
    "xhci/dcbaap_high uint32 x1 v0",
    "xhci/config uint32 x1 v0",
    "xhci/mfindex_start int64 x1 v0",
    "xhci/mfwrap_timer timer x1 v0",
    "xhci/cmd_ring struct x1 v1 xhci-ring v1",
    "xhci/cmd_ring/dequeue uint64 x1 v0",
    "xhci/cmd_ring/ccs bool x1 v0",
];

#[test]
fn the_layout_is_qemus_field_list() -> TestResult {
    let desc = xhci_vmsd(&XhciPciConfig::default())?;
    assert_eq!((desc.name(), desc.version_id()), ("xhci", 1));
    assert_eq!(section_idstr("0000:00:01.0"), "0000:00:01.0/xhci");
    let mut got = Vec::new();
    layout(&desc, "", &mut got);
    assert_eq!(got, QEMU_LAYOUT);
    let pci = match desc.fields().first().map(|f| f.kind()) {
        Some(FieldKind::Struct(d)) => d.clone(),
        _ => return Err("no PCIDevice".into()),
    };
    assert_eq!(pci.minimum_version_id(), 1);
    // The trailer entries of the two PCI parts, as QEMU 7.2 writes them
    // for qemu-xhci on q35's pcie.0 (recorded from its stream).
    let mut tree = XhciPci::new(XhciPciConfig::default())?.save_state().to_vmstate();
    let (_, trailer) = encode_described(&desc, &mut tree, &mut Vec::new(), 0)?;
    assert_eq!(
        trailer["fields"][0],
        serde_json::json!({"name": "parent_obj[0]", "type": "struct", "struct": {
            "vmsd_name": "PCIDevice", "version": 2, "fields": [
                {"name": "version_id", "type": "int32 le", "size": 4},
                {"name": "config[1]", "type": "pci config", "size": 4096},
                {"name": "irq_state", "type": "pci irq state", "size": 16}]},
            "size": 4116})
    );
    assert_eq!(
        trailer["fields"][1],
        serde_json::json!({"name": "parent_obj[1]", "type": "struct", "struct": {
            "vmsd_name": "msix", "version": 0, "fields": [
                {"name": "msix", "type": "msix state", "size": 258}]},
            "size": 258})
    );
    Ok(())
}

fn running_guest() -> Res<(Guest, u8)> {
    let mut g = Guest::default_config()?;
    g.w64(0x3000, 0xfee0_0000)?;
    g.w32(0x3008, 0x41)?;
    g.w32(0x300c, 0)?;
    g.cfg_write(0x92, 2, 0x8000)?;
    g.cfg_write(0x10, 4, 0xfebf_0000)?;
    g.cfg_write(0x04, 2, 0x6)?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.w32(portsc_offset(5), 1 << 4)?;
    g.events()?;
    let slot = g.bring_up(5)?;
    // An interrupt IN request waits (NAK) for input.
    g.queue(slot, 3, &[Trb::new(TrbType::Normal, BUFFERS + 0x200, 8, bits::TR_IOC)])?;
    g.ring_doorbell(slot, 3)?;
    assert!(g.events()?.is_empty());
    Ok((g, slot))
}

#[test]
fn the_wire_carries_each_part_where_qemu_puts_it() -> TestResult {
    let (g, _) = running_guest()?;
    let desc = xhci_vmsd(&XhciPciConfig::default())?;
    let mut tree = g.dev.save_state().to_vmstate();
    let mut bytes = Vec::new();
    encode(&desc, &mut tree, &mut bytes, 0)?;
    let pci = 4 + 4096 + 16;
    let msix = 16 * 16 + 2;
    let intr = 7 * 4 + 1 + 1 + 8 + 4 + 4 + 1;
    let core = 8 * 4 + 64 * 2 + 16 * intr + 8 * 4 + 8 + 8 + 8 + 1;
    assert_eq!(bytes.len(), pci + msix + core);
    assert_eq!(&bytes[..4], [0, 0, 0, 2], "PCIDevice.version_id");
    assert_eq!(&bytes[4..8], [0x36, 0x1b, 0x0d, 0x00], "config space, as bytes");
    assert_eq!(&bytes[4 + 0x10..4 + 0x14], [0x04, 0x00, 0xbf, 0xfe], "BAR0");
    assert_eq!(&bytes[4 + 4096..pci], [0u8; 16], "INTx low under MSI-X");
    assert_eq!(
        &bytes[pci..pci + 12],
        [0, 0, 0xe0, 0xfe, 0, 0, 0, 0, 0x41, 0, 0, 0],
        "vector 0, LE"
    );
    let ports = pci + msix;
    let portsc5 = u32::from_be_bytes([
        bytes[ports + 16],
        bytes[ports + 17],
        bytes[ports + 18],
        bytes[ports + 19],
    ]);
    assert_eq!(portsc5 & 0x3, 0x3, "port 5: connected and enabled");
    let slots = ports + 32;
    assert_eq!(&bytes[slots..slots + 4], [1, 1, 0, 0], "slot 1 enabled and addressed");
    let intr0 = slots + 128;
    assert_eq!(&bytes[intr0..intr0 + 4], [0, 0, 0, 2], "IMAN.IE");
    let msix_used = intr0 + 28;
    assert_eq!(bytes[msix_used], 1);
    Ok(())
}

#[test]
fn a_running_controller_saves_and_restores_and_its_transfers_continue() -> TestResult {
    let (mut src, slot) = running_guest()?;
    let src_dev = XhciDevice::new(XhciPciConfig::default())?;
    *src_dev.model() = std::mem::replace(&mut src.dev, XhciPci::new(XhciPciConfig::default())?);
    let saved = src_dev.save_state()?;
    let mut tree = saved.to_vmstate();
    let mut bytes = Vec::new();
    encode(&src_dev.vmsd(), &mut tree, &mut bytes, 0)?;

    // The destination: same properties, the tablet plugged in, guest RAM
    // migrated (the same memory here).
    let dst_dev = XhciDevice::new(XhciPciConfig::default())?;
    {
        let mut model = dst_dev.model();
        let env = env(&src.mem, src.now);
        model.attach(1, Box::new(UsbHid::tablet()), &env)?;
    }
    let decoded = decode(&dst_dev.vmsd(), 1, &mut VmReader::new(&bytes[..], 0))?;
    dst_dev.check_vmstate(&decoded, 1)?;
    dst_dev.load_vmstate(&decoded, 1)?;
    let fx = dst_dev.take_load_effects();
    assert_eq!(fx.config.bar_moves.len(), 1, "BAR0 mapped again");
    assert_eq!(fx.intx, Some(false));
    assert!(dst_dev.model().core().load_pending());

    let mut dst = src;
    dst.dev = std::mem::replace(&mut *dst_dev.model(), XhciPci::new(XhciPciConfig::default())?);
    let env = env(&dst.mem, dst.now);
    let fx = dst.dev.finish_load(&env);
    assert!(fx.messages.is_empty(), "the waiting transfer NAKs again");
    assert_eq!(dst.dev.save_state(), saved, "the state came back whole");

    // Input on the destination completes the transfer that waited.
    dst.messages.clear();
    let tablet = dst.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.move_to(0x100, 0x200);
    dst.wakeup(1, 0x81);
    let evs = dst.events()?;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!((ccode(&evs[0]), evs[0].slot_id(), evs[0].endpoint_id()), (13, slot, 3));
    assert_eq!(dst.messages.len(), 1, "MSI-X vector 0");
    assert_eq!(dst.read_buf(BUFFERS + 0x200, 6)?, [0, 0, 1, 0, 2, 0]);
    // Commands keep working on the restored command ring.
    assert_eq!(ccode(&dst.command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?), 1);
    Ok(())
}

#[test]
fn a_slot_whose_device_did_not_come_along_is_disabled() -> TestResult {
    let (src, _) = running_guest()?;
    let saved = src.dev.save_state();
    let mut dst = XhciPci::new(XhciPciConfig::default())?;
    dst.load_state(saved)?;
    let env = env(&src.mem, src.now);
    dst.finish_load(&env);
    assert_eq!(dst.core().slot_state(1), Some((false, false)));
    Ok(())
}

#[test]
fn loads_qemu_refuses_are_refused_and_change_nothing() -> TestResult {
    let (g, _) = running_guest()?;
    let saved = g.dev.save_state();
    let dst = XhciPci::new(XhciPciConfig::default())?;
    let before = dst.save_state();
    let refuse = |state: XhciState, path: &str, text: &str| -> TestResult {
        let mut dst = XhciPci::new(XhciPciConfig::default())?;
        let err = dst.load_state(state).err().ok_or("accepted")?;
        assert_eq!(err.path(), Some(path), "{err}");
        assert!(err.to_string().contains(text), "{err}");
        assert_eq!(dst.save_state(), before);
        Ok(())
    };
    let mut bad = saved.clone();
    bad.pci.config[0x02] = 0x0e;
    refuse(bad, "parent_obj[0]/config[1]", "Bad config data at 0x2")?;
    let mut bad = saved.clone();
    bad.pci.config.truncate(256);
    refuse(bad, "parent_obj[0]/config[1]", "256 bytes")?;
    let mut bad = saved.clone();
    bad.pci.irq_state[2] = 2;
    refuse(bad, "parent_obj[0]/irq_state[2]", "irq state 2: must be 0 or 1.")?;
    let mut bad = saved.clone();
    bad.pci.version_id = 3;
    refuse(
        bad,
        "parent_obj[0]/version_id",
        "Invalid value 3 expecting positive value <= 2",
    )?;
    let mut bad = saved.clone();
    bad.msix.bytes.pop();
    refuse(bad, "parent_obj[1]/msix", "257 bytes")?;
    let mut bad = saved.clone();
    bad.core.intrs.pop();
    refuse(bad, "xhci/intr", "15 entries")?;
    // A conventional-bus controller's state does not fit a PCI Express one.
    let conventional = XhciPci::new(XhciPciConfig {
        bus: XhciBus::Conventional,
        ..XhciPciConfig::default()
    })?;
    refuse(conventional.save_state(), "parent_obj[0]/config[1]", "256 bytes")?;
    Ok(())
}

#[test]
fn the_description_follows_the_properties() -> TestResult {
    let small = XhciPciConfig {
        core: XhciConfig {
            p2: 2,
            p3: 0,
            intrs: 3,
            slots: 8,
            streams: true,
        },
        msix: false,
        bus: XhciBus::Conventional,
        path: None,
    };
    let desc = xhci_vmsd(&small)?;
    let mut got = Vec::new();
    layout(&desc, "", &mut got);
    assert!(
        got.contains(&"parent_obj[1]/msix msix state x1 v0 0B".to_owned()),
        "no MSI-X: nothing sent"
    );
    assert!(got.contains(&"xhci/ports struct x2 v1 xhci-port v1".to_owned()));
    assert!(
        got.contains(&"xhci/intr struct x4 v1 xhci-intr v1".to_owned()),
        "rounded up"
    );
    let dev = XhciPci::new(small)?;
    let mut tree = dev.save_state().to_vmstate();
    let mut bytes = Vec::new();
    let (_, trailer) = encode_described(&desc, &mut tree.clone(), &mut Vec::new(), 0)?;
    assert_eq!(
        trailer["fields"][0]["struct"]["fields"][1],
        serde_json::json!({"name": "config[0]", "type": "pci config", "size": 256}),
        "a conventional function sends the first config field"
    );
    encode(&desc, &mut tree, &mut bytes, 0)?;
    let decoded = decode(&desc, 1, &mut VmReader::new(&bytes[..], 0))?;
    let back = XhciState::from_vmstate(&decoded)?;
    let mut again = XhciPci::new(XhciPciConfig {
        core: XhciConfig {
            p2: 2,
            p3: 0,
            intrs: 3,
            slots: 8,
            streams: true,
        },
        msix: false,
        bus: XhciBus::Conventional,
        path: None,
    })?;
    again.load_state(back)?;
    assert_eq!(again.save_state(), dev.save_state());
    Ok(())
}

#[test]
fn the_wrap_timer_travels_as_its_expiry() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    assert_eq!(g.dev.save_state().core.mfwrap_timer, -1, "not armed");
    g.w32(USBCMD, 0x1 | 0x4 | 0x400)?;
    let deadline = g.dev.core().next_deadline().ok_or("not armed")?;
    let saved = g.dev.save_state();
    assert_eq!(saved.core.mfwrap_timer, deadline);
    let mut dst = XhciPci::new(XhciPciConfig::default())?;
    dst.load_state(saved)?;
    assert_eq!(dst.core().next_deadline(), Some(deadline));
    Ok(())
}

#[test]
fn a_pending_masked_vector_stays_pending_across_a_load() -> TestResult {
    let (mut g, _) = running_guest()?;
    g.w32(0x300c, 1)?;
    g.command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    assert_eq!(g.r32(0x3800)?, 1);
    let saved = g.dev.save_state();
    assert_eq!(saved.msix.bytes[256..], [1, 0]);
    g.dev = XhciPci::new(XhciPciConfig::default())?;
    g.dev.load_state(saved.clone())?;
    assert_eq!(g.r32(0x3800)?, 1, "still pending");
    assert_eq!(g.r32(0x300c)?, 1, "still masked");
    g.messages.clear();
    g.w32(0x300c, 0)?;
    assert_eq!(g.messages.len(), 1, "sent on unmask");
    // Pending but no longer masked in the stream: QEMU's load clears it
    // without a message (the vector is not in use yet).
    let mut unmasked = saved;
    unmasked.msix.bytes[12] = 0;
    let mut dst = XhciPci::new(XhciPciConfig::default())?;
    let fx = dst.load_state(unmasked)?;
    assert!(fx.messages.is_empty());
    assert_eq!(dst.msix().map(|m| m.is_pending(0)), Some(false));
    Ok(())
}
