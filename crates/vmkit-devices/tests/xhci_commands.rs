//! The command ring driven like a guest driver: Enable Slot → Address
//! Device (and its BSR form) → Configure Endpoint, Evaluate Context,
//! Reset Device, Disable Slot; and the completion codes of bad commands
//! and contexts (never a panic).

mod xhci_guest;

use vmkit_devices::dma::Dma;
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{Trb, TrbType, XhciConfig, XhciPciConfig};
use vmkit_devices::usb::{UsbDevice, UsbHid};
use xhci_guest::*;

const PORT: u8 = 5;

fn guest_with_tablet(cfg: XhciPciConfig) -> Res<Guest> {
    let mut g = Guest::new(cfg)?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.events()?;
    Ok(g)
}

fn slot_cmd(kind: TrbType, slot: u8, parameter: u64, flags: u32) -> Trb {
    Trb::new(kind, parameter, 0, u32::from(slot) << 24 | flags)
}

#[test]
fn enable_address_configure_and_tear_down_a_slot() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    let ev = g.command(Trb::new(TrbType::EnableSlot, 0, 0, 0))?;
    assert_eq!(ev.trb_type(), Some(TrbType::CommandCompletion));
    assert_eq!((ccode(&ev), ev.slot_id()), (1, 1));
    assert_eq!(ev.parameter, CMD_RING, "the completion names the command TRB");
    assert_eq!(g.dev.core().slot_state(1), Some((true, false)));

    let ev = g.address_device(1, PORT, false)?;
    assert_eq!((ccode(&ev), ev.slot_id()), (1, 1));
    assert_eq!(g.dev.core().slot_state(1), Some((true, true)));
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    assert_eq!(tablet.address(), 1, "SET_ADDRESS with the slot id");

    let ev = g.configure_interrupt_in(1)?;
    assert_eq!(ccode(&ev), 1);
    let slot_ctx = g.mem_u32(out_ctx(1))?;
    let state = g.mem_u32(out_ctx(1) + 12)? >> 27;
    assert_eq!(
        (slot_ctx >> 27, state),
        (3, 3),
        "context entries from the input, configured"
    );
    let ep = g.mem_u32(ep_ctx(1, 3) + 4)?;
    assert_eq!(
        (g.mem_u32(ep_ctx(1, 3))? & 7, (ep >> 3) & 7),
        (1, 7),
        "interrupt IN running"
    );

    // Evaluate Context: max exit latency and EP0's max packet size.
    g.mem.write(INPUT_CTX, &[0u8; 3 * 32])?;
    g.mem_write_u32(INPUT_CTX + 4, 0x3)?;
    g.mem_write_u32(INPUT_CTX + 32 + 4, 0x1234)?;
    g.mem_write_u32(INPUT_CTX + 32 + 8, 2 << 22)?;
    g.mem_write_u32(INPUT_CTX + 64 + 4, 512 << 16)?;
    let ev = g.command(slot_cmd(TrbType::EvaluateContext, 1, INPUT_CTX, 0))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.mem_u32(out_ctx(1) + 4)? & 0xffff, 0x1234);
    assert_eq!(g.mem_u32(out_ctx(1) + 8)? >> 22, 2, "interrupter target");
    assert_eq!(g.mem_u32(ep_ctx(1, 1) + 4)? >> 16, 512);

    // Deconfigure: endpoints go, the slot is back to addressed.
    let ev = g.command(slot_cmd(TrbType::ConfigureEndpoint, 1, 0, bits::CR_DC))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.mem_u32(out_ctx(1) + 12)? >> 27, 2);
    assert_eq!(g.mem_u32(ep_ctx(1, 3))? & 7, 0, "disabled");

    let ev = g.command(slot_cmd(TrbType::ResetDevice, 1, 0, 0))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.mem_u32(out_ctx(1) + 12)? >> 27, 1, "default state");

    let ev = g.command(slot_cmd(TrbType::DisableSlot, 1, 0, 0))?;
    assert_eq!((ccode(&ev), ev.slot_id()), (1, 1));
    assert_eq!(g.dev.core().slot_state(1), Some((false, false)));
    assert_eq!(g.mem_u32(ep_ctx(1, 1))? & 7, 0, "EP0 disabled in the context");
    Ok(())
}

#[test]
fn address_device_with_bsr_leaves_the_device_at_address_zero() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    let slot = g.enable_slot()?;
    let ev = g.address_device(slot, PORT, true)?;
    assert_eq!(ccode(&ev), 1);
    let dw3 = g.mem_u32(out_ctx(slot) + 12)?;
    assert_eq!((dw3 >> 27, dw3 & 0xff), (1, 0), "default state, no address");
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    assert_eq!(tablet.address(), 0);
    // EP0 works already: GET_DESCRIPTOR(8) as Windows does first.
    let evs = g.control_in(slot, setup(0x80, 6, 0x0100, 0, 8), BUFFERS)?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    assert_eq!(g.read_buf(BUFFERS, 8)?, [18, 1, 0, 2, 0, 0, 0, 64]);
    // Then the real Address Device.
    let ev = g.address_device(slot, PORT, false)?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.mem_u32(out_ctx(slot) + 12)? >> 27, 2);
    Ok(())
}

#[test]
fn bad_commands_complete_with_qemus_codes() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig {
        core: XhciConfig {
            slots: 2,
            ..XhciConfig::default()
        },
        ..XhciPciConfig::default()
    })?;
    // Slot ids out of range and slots not enabled.
    let ev = g.command(slot_cmd(TrbType::DisableSlot, 0, 0, 0))?;
    assert_eq!((ccode(&ev), ev.slot_id()), (5, 0), "TRB error");
    let ev = g.command(slot_cmd(TrbType::AddressDevice, 3, 0, 0))?;
    assert_eq!(ccode(&ev), 5);
    let ev = g.command(slot_cmd(TrbType::ConfigureEndpoint, 1, 0, 0))?;
    assert_eq!(ccode(&ev), 11, "slot not enabled");
    // A command the controller does not implement, a transfer TRB, NEC's.
    for kind in [TrbType::ForceEvent, TrbType::Normal, TrbType::NecFirmwareRevision] {
        let ev = g.command(Trb::new(kind, 0, 0, 0))?;
        assert_eq!(ccode(&ev), 5, "{kind:?}");
    }
    let ev = g.command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    assert_eq!(ccode(&ev), 1);

    let s1 = g.enable_slot()?;
    let s2 = g.enable_slot()?;
    let ev = g.command(Trb::new(TrbType::EnableSlot, 0, 0, 0))?;
    assert_eq!(ccode(&ev), 9, "no slots left");

    // Address Device: bad input control context, no device on the port,
    // a route string through a hub, a port another slot holds.
    let ictx = g.address_input(s1, PORT, 64)?;
    g.mem_write_u32(ictx + 4, 0x7)?;
    let ev = g.command(slot_cmd(TrbType::AddressDevice, s1, ictx, 0))?;
    assert_eq!(ccode(&ev), 5);
    for port in [6u8, 2, 0, 200] {
        let ev = g.address_device(s1, port, false)?;
        assert_eq!(ccode(&ev), 5, "port {port}");
    }
    let ictx = g.address_input(s1, PORT, 64)?;
    g.mem_write_u32(ictx + 32, 1 << 27 | 0x3)?;
    let ev = g.command(slot_cmd(TrbType::AddressDevice, s1, ictx, 0))?;
    assert_eq!(ccode(&ev), 5, "route through a hub");
    assert_eq!(ccode(&g.address_device(s1, PORT, false)?), 1);
    assert_eq!(ccode(&g.address_device(s2, PORT, false)?), 5, "already in slot 1");

    // Configure Endpoint on a slot that is only enabled.
    let ev = g.configure_interrupt_in(s2)?;
    assert_eq!(ccode(&ev), 19, "context state error");
    // Bad add/drop flags.
    g.mem_write_u32(INPUT_CTX, 0x1)?;
    let ev = g.command(slot_cmd(TrbType::ConfigureEndpoint, s1, INPUT_CTX, 0))?;
    assert_eq!(ccode(&ev), 5);
    // Evaluate Context with drop flags.
    g.mem_write_u32(INPUT_CTX, 0x4)?;
    let ev = g.command(slot_cmd(TrbType::EvaluateContext, s1, INPUT_CTX, 0))?;
    assert_eq!(ccode(&ev), 5);

    // Endpoint commands: bad DCI, endpoint not enabled, wrong state.
    let ev = g.command(slot_cmd(TrbType::StopEndpoint, s1, 0, 0))?;
    assert_eq!(ccode(&ev), 5, "DCI 0");
    let ev = g.command(slot_cmd(TrbType::StopEndpoint, s1, 0, 5 << 16))?;
    assert_eq!(ccode(&ev), 12, "endpoint not enabled");
    let ev = g.command(slot_cmd(TrbType::ResetEndpoint, s1, 0, 1 << 16))?;
    assert_eq!(ccode(&ev), 19, "EP0 runs, not halted");
    let ev = g.command(slot_cmd(TrbType::SetTrDequeue, s1, BUFFERS | 1, 1 << 16))?;
    assert_eq!(ccode(&ev), 19, "not stopped");
    let ev = g.command(slot_cmd(TrbType::StopEndpoint, s1, 0, 1 << 16))?;
    assert_eq!(ccode(&ev), 1);
    let ev = g.command(slot_cmd(TrbType::SetTrDequeue, s1, BUFFERS | 1, 1 << 16))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(
        g.mem_u64(ep_ctx(s1, 1) + 8)?,
        BUFFERS | 1,
        "dequeue and cycle in the context"
    );

    // Contexts outside guest memory: the controller errs, no panic.
    let ev = g.command(slot_cmd(TrbType::EvaluateContext, s1, 0xffff_ffff_0000, 0))?;
    assert_eq!(ccode(&ev), 5);
    assert_ne!(g.r32(USBSTS)? & 0x1000, 0, "HCE");
    Ok(())
}

#[test]
fn within_one_doorbell_the_slot_id_outlives_its_command_as_in_qemu() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    g.queue_command(Trb::new(TrbType::EnableSlot, 0, 0, 0))?;
    g.queue_command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    g.w32(DOORBELL, 0)?;
    let evs = g.events()?;
    assert_eq!(
        evs.iter().map(|e| (ccode(e), e.slot_id())).collect::<Vec<_>>(),
        [(1, 1), (1, 1)]
    );
    let ev = g.command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    assert_eq!(ev.slot_id(), 0, "a new doorbell starts from 0");
    // A port's USB 3 register set names the same USB port as its USB 2
    // one: QEMU finds the device by port path, whatever the speed.
    let ev = g.address_device(1, 1, false)?;
    assert_eq!(ccode(&ev), 1);
    Ok(())
}

#[test]
fn get_port_bandwidth_answers_eighty_percent() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    let ev = g.command(Trb::new(TrbType::GetPortBandwidth, BUFFERS, 0, 0))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.read_buf(BUFFERS, 9)?, [0, 80, 80, 80, 80, 80, 80, 80, 80]);
    let ev = g.command(Trb::new(TrbType::GetPortBandwidth, 0xffff_ffff_0000, 0, 0))?;
    assert_eq!(ccode(&ev), 5);
    Ok(())
}

#[test]
fn the_command_ring_stops_on_abort_and_follows_links() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    // 40 no-ops wrap the 32-entry ring through its link TRB.
    for _ in 0..40 {
        let ev = g.command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
        assert_eq!(ccode(&ev), 1);
    }
    // CRR is set while the ring runs; abort stops it with code 24.
    g.w32(CRCR, 0x4)?;
    g.w32(CRCR + 4, 0)?;
    let evs = g.events()?;
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].trb_type(), ccode(&evs[0])),
        (Some(TrbType::CommandCompletion), 24)
    );
    // Stopped: rewriting CRCR now sets a new ring.
    g.w64(CRCR, BUFFERS | 1)?;
    assert_eq!(g.dev.core().command_ring().dequeue, BUFFERS);
    Ok(())
}

#[test]
fn an_endless_command_ring_is_bounded_per_doorbell() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    // A ring of one no-op and a link back to it, without toggling.
    g.put_trb(BUFFERS, Trb::new(TrbType::NoOpCommand, 0, 0, bits::C))?;
    g.put_trb(BUFFERS + 16, Trb::new(TrbType::Link, BUFFERS, 0, bits::C))?;
    g.w64(CRCR, BUFFERS | 1)?;
    // The 16-entry event ring fills; the controller stops after QEMU's limit.
    g.w32(DOORBELL, 0)?;
    let evs = g.events()?;
    assert!(evs.len() <= 16, "{}", evs.len());
    assert!(evs.iter().any(|e| ccode(e) == 21), "event ring full error reported");
    Ok(())
}

#[test]
fn doorbells_are_ignored_while_halted() -> TestResult {
    let mut g = guest_with_tablet(XhciPciConfig::default())?;
    g.w32(USBCMD, 0x4)?; // halt, INTE kept
    g.queue_command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    g.w32(DOORBELL, 0)?;
    assert!(g.events()?.is_empty());
    assert_eq!(
        u64::from(g.r32(CRCR)?),
        CMD_RING | 1,
        "the pointer reads back, CS/CA/CRR do not"
    );
    g.w32(USBCMD, 0x5)?;
    assert!(g.events()?.is_empty(), "running again does not replay the doorbell");
    g.w32(DOORBELL, 0)?;
    assert_eq!(g.events()?.iter().map(ccode).collect::<Vec<_>>(), [1]);
    // Doorbell 0 with a non-zero value, or a slot doorbell past the slots
    // or with DCI 0, does nothing.
    g.queue_command(Trb::new(TrbType::NoOpCommand, 0, 0, 0))?;
    g.w32(DOORBELL, 1)?;
    g.w32(DOORBELL + 4 * 65, 1)?;
    g.w32(DOORBELL + 4, 0)?;
    assert!(g.events()?.is_empty());
    Ok(())
}
