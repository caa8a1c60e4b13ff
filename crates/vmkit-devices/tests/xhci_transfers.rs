//! Transfers as a guest driver runs them: control transfers on endpoint 0
//! (GET_DESCRIPTOR into guest memory with a Transfer Event, short packets,
//! STALL and the halted endpoint's recovery) and interrupt IN reports from
//! injected input (NAK while empty, the report after a wakeup).

mod xhci_guest;

use vmkit_devices::dma::Dma;
use vmkit_devices::usb::UsbHid;
use vmkit_devices::usb::hid::{Button, PointerInput};
use vmkit_devices::usb::xhci::slot::EpState;
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{Trb, TrbType};
use xhci_guest::*;

/// The tablet in USB port 1 shows up in the USB 2 port register set
/// after the 4 USB 3 ones: port 5.
const TABLET_PORT: u8 = 5;

fn tablet_guest() -> Res<Guest> {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    let evs = g.events()?;
    assert_eq!(evs.len(), 1, "one port status change: {evs:?}");
    g.w32(portsc_offset(TABLET_PORT), 1 << 4)?; // port reset
    g.events()?;
    Ok(g)
}

#[test]
fn get_descriptor_writes_the_tablets_device_descriptor_with_a_transfer_event() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.enable_slot()?;
    let ev = g.address_device(slot, TABLET_PORT, false)?;
    assert_eq!((ccode(&ev), ev.slot_id()), (1, slot));
    let buf = BUFFERS;
    let evs = g.control_in(slot, setup(0x80, 6, 0x0100, 0, 18), buf)?;
    assert_eq!(evs.len(), 1, "{evs:?}");
    let ev = evs[0];
    assert_eq!(ev.trb_type(), Some(TrbType::Transfer));
    assert_eq!(
        (ccode(&ev), residual(&ev), ev.slot_id(), ev.endpoint_id()),
        (1, 0, slot, 1)
    );
    let ring = g.rings[&(slot, 1)].base;
    assert_eq!(ev.parameter, ring + 32, "the event names the status TRB");
    let desc = g.read_buf(buf, 18)?;
    assert_eq!(
        desc,
        [
            0x12, 0x01, 0x00, 0x02, 0, 0, 0, 64, 0x27, 0x06, 0x01, 0x00, 0x00, 0x00, 1, 3, 10, 1
        ],
        "bLength, DEVICE, bcdUSB 2.0, max packet 64 (high speed), QEMU's ids and strings"
    );
    // The output context: addressed with the slot id as address, EP0 running.
    let slot_dw3 = g.mem_u32(out_ctx(slot) + 12)?;
    assert_eq!((slot_dw3 >> 27, slot_dw3 & 0xff), (2, u32::from(slot)));
    assert_eq!(g.mem_u32(ep_ctx(slot, 1))? & 7, 1);
    // The context's dequeue pointer moved past the descriptor.
    let deq = g.mem_u64(ep_ctx(slot, 1) + 8)?;
    assert_eq!(deq & !0xf, ring + 48);
    Ok(())
}

#[test]
fn a_short_answer_reports_short_packet_on_the_data_stage_then_success() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    // Ask for 255 bytes of the configuration descriptor: 34 come back.
    let evs = g.control_in(slot, setup(0x80, 6, 0x0200, 0, 255), BUFFERS)?;
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(
        (ccode(&evs[0]), residual(&evs[0])),
        (13, 255 - 34),
        "short packet (ISP)"
    );
    assert_eq!((ccode(&evs[1]), residual(&evs[1])), (1, 0));
    let conf = g.read_buf(BUFFERS, 34)?;
    assert_eq!(&conf[..9], [9, 2, 34, 0, 1, 1, 7, 0xa0, 50]);
    assert_eq!(
        &conf[9..18],
        [9, 4, 0, 0, 1, 3, 0, 0, 0],
        "HID interface, no boot protocol"
    );
    assert_eq!(
        &conf[18..27],
        [9, 0x21, 1, 0, 0, 1, 0x22, 74, 0],
        "HID descriptor: 74-byte report"
    );
    assert_eq!(
        &conf[27..],
        [7, 5, 0x81, 3, 8, 0, 4],
        "interrupt IN 1, 8 bytes, 1 ms at high speed"
    );
    // The report descriptor through the interface.
    let evs = g.control_in(slot, setup(0x81, 6, 0x2200, 0, 74), BUFFERS + 0x100)?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    let report = g.read_buf(BUFFERS + 0x100, 74)?;
    assert_eq!(report, UsbHid::tablet().report_descriptor());
    Ok(())
}

#[test]
fn an_unsupported_request_stalls_halts_ep0_and_reset_endpoint_recovers() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    // GET_PROTOCOL: the tablet has no boot protocol, it stalls.
    let evs = g.control_in(slot, setup(0xa1, 0x03, 0, 0, 1), BUFFERS)?;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(ccode(&evs[0]), 6, "stall");
    let ring = g.rings[&(slot, 1)];
    let setup_trb = ring.enqueue - 48;
    assert_eq!(evs[0].parameter, setup_trb, "reported on the setup stage");
    assert_eq!(g.mem_u32(ep_ctx(slot, 1))? & 7, EpState::Halted.bits());
    assert_eq!(
        g.mem_u64(ep_ctx(slot, 1) + 8)? & !0xf,
        setup_trb,
        "dequeue back at the failed TD"
    );
    // A halted endpoint does not run.
    g.queue(
        slot,
        1,
        &[Trb::new(
            TrbType::Setup,
            setup(0x80, 8, 0, 0, 1).to_u64(),
            8,
            bits::TR_IDT,
        )],
    )?;
    g.ring_doorbell(slot, 1)?;
    assert!(g.events()?.is_empty());
    // Set TR Dequeue refuses a halted endpoint; Reset Endpoint stops it.
    let dci = 1u32 << 16;
    let ev = g.command(Trb::new(
        TrbType::SetTrDequeue,
        ring.enqueue | 1,
        0,
        u32::from(slot) << 24 | dci,
    ))?;
    assert_eq!(ccode(&ev), 19, "context state error");
    let ev = g.command(Trb::new(TrbType::ResetEndpoint, 0, 0, u32::from(slot) << 24 | dci))?;
    assert_eq!(ccode(&ev), 1);
    assert_eq!(g.mem_u32(ep_ctx(slot, 1))? & 7, EpState::Stopped.bits());
    let ev = g.command(Trb::new(TrbType::ResetEndpoint, 0, 0, u32::from(slot) << 24 | dci))?;
    assert_eq!(ccode(&ev), 19, "not halted any more");
    // Skip the abandoned TRBs and continue.
    let fresh = g.new_ring(slot, 1)?;
    let ev = g.command(Trb::new(
        TrbType::SetTrDequeue,
        fresh | 1,
        0,
        u32::from(slot) << 24 | dci,
    ))?;
    assert_eq!(ccode(&ev), 1);
    let evs = g.control_in(slot, setup(0x80, 8, 0, 0, 1), BUFFERS)?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    assert_eq!(g.read_buf(BUFFERS, 1)?, [1], "GET_CONFIGURATION: configured");
    Ok(())
}

fn queue_report(g: &mut Guest, slot: u8) -> Res<u64> {
    let addrs = g.queue(
        slot,
        3,
        &[Trb::new(
            TrbType::Normal,
            BUFFERS + 0x200,
            8,
            bits::TR_IOC | bits::TR_ISP,
        )],
    )?;
    g.ring_doorbell(slot, 3)?;
    Ok(addrs[0])
}

#[test]
fn interrupt_in_naks_until_input_arrives_then_reports_it() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    let trb = queue_report(&mut g, slot)?;
    assert!(g.events()?.is_empty(), "nothing queued: NAK, no event");
    assert_eq!(g.mem_u32(ep_ctx(slot, 3))? & 7, EpState::Running.bits());
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.pointer_event(PointerInput::Button {
        button: Button::Left,
        down: true,
    });
    assert!(tablet.move_to(0x1234, 0x0567));
    g.wakeup(1, 0x81);
    let evs = g.events()?;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(
        (ccode(&evs[0]), residual(&evs[0])),
        (13, 2),
        "6 of 8 bytes: short packet"
    );
    assert_eq!((evs[0].parameter, evs[0].endpoint_id()), (trb, 3));
    assert_eq!(g.read_buf(BUFFERS + 0x200, 6)?, [0x01, 0x34, 0x12, 0x67, 0x05, 0x00]);
    // The queue is empty again: the next request waits.
    queue_report(&mut g, slot)?;
    assert!(g.events()?.is_empty());
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.pointer_event(PointerInput::Button {
        button: Button::Left,
        down: false,
    });
    tablet.pointer_sync();
    g.wakeup(1, 0x81);
    let evs = g.events()?;
    assert_eq!(evs.len(), 1);
    assert_eq!(g.read_buf(BUFFERS + 0x200, 1)?, [0x00], "button released");
    Ok(())
}

#[test]
fn stop_endpoint_ends_a_waiting_interrupt_transfer_with_stopped() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    let trb = queue_report(&mut g, slot)?;
    assert!(g.events()?.is_empty());
    let ev_cmd = Trb::new(TrbType::StopEndpoint, 0, 0, u32::from(slot) << 24 | 3 << 16);
    g.queue_command(ev_cmd)?;
    g.w32(DOORBELL, 0)?;
    let evs = g.events()?;
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0].trb_type(), Some(TrbType::Transfer));
    assert_eq!((ccode(&evs[0]), evs[0].parameter, residual(&evs[0])), (26, trb, 8));
    assert_eq!(
        (evs[1].trb_type(), ccode(&evs[1])),
        (Some(TrbType::CommandCompletion), 1)
    );
    assert_eq!(g.mem_u32(ep_ctx(slot, 3))? & 7, EpState::Stopped.bits());
    // Input now does not reach the stopped transfer.
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.move_to(1, 1);
    g.wakeup(1, 0x81);
    // A kick restarts the endpoint from its dequeue pointer (past the
    // stopped TD): nothing left to run.
    assert!(g.events()?.is_empty());
    Ok(())
}

#[test]
fn the_keyboard_reports_keys_through_its_interrupt_endpoint() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.attach(2, Box::new(UsbHid::keyboard()))?;
    g.events()?;
    let port = 6;
    g.w32(portsc_offset(port), 1 << 4)?;
    g.events()?;
    let slot = g.bring_up(port)?;
    // SET_PROTOCOL boot, SET_IDLE 0: the usual driver sequence.
    let evs = g.control_nodata(slot, setup(0x21, 0x0b, 0, 0, 0))?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    let evs = g.control_nodata(slot, setup(0x21, 0x0a, 0, 0, 0))?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    let kbd = g.dev.core_mut().device_as::<UsbHid>(2).ok_or("no keyboard")?;
    assert_eq!(kbd.hid().protocol(), 0);
    assert!(kbd.key_event(0x2a, true)); // left shift
    assert!(kbd.key_event(0x1e, true)); // a
    g.wakeup(2, 0x81);
    queue_report(&mut g, slot)?;
    queue_report(&mut g, slot)?;
    let evs = g.events()?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(g.read_buf(BUFFERS + 0x200, 8)?, [0x02, 0, 0x04, 0, 0, 0, 0, 0]);
    // LEDs through SET_REPORT.
    g.mem.write_u32(BUFFERS + 0x300, 0x02)?;
    let trbs = [
        Trb::new(
            TrbType::Setup,
            setup(0x21, 0x09, 0x0200, 0, 1).to_u64(),
            8,
            bits::TR_IDT | (2 << 16),
        ),
        Trb::new(TrbType::Data, BUFFERS + 0x300, 1, 0),
        Trb::new(TrbType::Status, 0, 0, bits::TR_IOC | bits::TR_DIR),
    ];
    g.queue(slot, 1, &trbs)?;
    g.ring_doorbell(slot, 1)?;
    assert_eq!(g.events()?.iter().map(ccode).collect::<Vec<_>>(), [1]);
    let kbd = g.dev.core_mut().device_as::<UsbHid>(2).ok_or("no keyboard")?;
    assert_eq!(kbd.hid().leds(), 0x02, "caps lock");
    Ok(())
}

#[test]
fn malformed_transfer_descriptors_end_without_events_or_with_host_controller_error() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    // A SETUP without immediate data is dropped silently (QEMU does so).
    g.queue(
        slot,
        1,
        &[
            Trb::new(TrbType::Setup, setup(0x80, 6, 0x0100, 0, 18).to_u64(), 8, 0),
            Trb::new(TrbType::Status, 0, 0, bits::TR_IOC),
        ],
    )?;
    g.ring_doorbell(slot, 1)?;
    assert!(g.events()?.is_empty());
    assert_eq!(g.r32(USBSTS)? & 0x1000, 0);
    // A data stage against the request's direction is a host controller error.
    g.queue(
        slot,
        1,
        &[
            Trb::new(TrbType::Setup, setup(0x80, 6, 0x0100, 0, 18).to_u64(), 8, bits::TR_IDT),
            Trb::new(TrbType::Data, BUFFERS, 18, 0),
            Trb::new(TrbType::Status, 0, 0, bits::TR_IOC),
        ],
    )?;
    g.ring_doorbell(slot, 1)?;
    assert!(g.events()?.is_empty());
    assert_ne!(g.r32(USBSTS)? & 0x1000, 0, "HCE");
    Ok(())
}

#[test]
fn buffers_outside_guest_memory_do_not_reach_the_device() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.bring_up(TABLET_PORT)?;
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.move_to(5, 5);
    g.queue(slot, 3, &[Trb::new(TrbType::Normal, 0xdead_0000_0000, 8, bits::TR_IOC)])?;
    g.ring_doorbell(slot, 3)?;
    assert!(g.events()?.is_empty());
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    assert_eq!(tablet.hid().queued(), 1, "the report is still there");
    Ok(())
}

#[test]
fn an_endpoint_with_streams_is_not_run() -> TestResult {
    let mut g = tablet_guest()?;
    let slot = g.enable_slot()?;
    assert_eq!(ccode(&g.address_device(slot, TABLET_PORT, false)?), 1);
    // Configure endpoint 1 IN with MaxPStreams 1 (streams are not modelled).
    g.mem.write(INPUT_CTX, &[0u8; 33 * 32])?;
    g.mem.write_u32(INPUT_CTX + 4, 1 | 1 << 3)?;
    g.mem.write_u32(INPUT_CTX + 32, 3 << 27)?;
    let ring = g.new_ring(slot, 3)?;
    let ep = INPUT_CTX + 32 + 32 * 3;
    g.mem.write_u32(ep, 1 << 10)?;
    g.mem.write_u32(ep + 4, (8 << 16) | (6 << 3))?;
    g.mem.write_u64(ep + 8, ring | 1)?;
    let ev = g.command(Trb::new(
        TrbType::ConfigureEndpoint,
        INPUT_CTX,
        0,
        u32::from(slot) << 24,
    ))?;
    assert_eq!(ccode(&ev), 1);
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    tablet.move_to(3, 3);
    queue_report(&mut g, slot)?;
    assert!(g.events()?.is_empty());
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    assert_eq!(tablet.hid().queued(), 1);
    Ok(())
}
