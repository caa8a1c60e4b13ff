//! `usb-tablet` and `usb-kbd` without a controller: the descriptors a
//! driver parses, the standard and HID class requests, and the bounded
//! input queues behind the interrupt endpoint.

use proptest::prelude::*;
use vmkit_devices::usb::device::control_transfer;
use vmkit_devices::usb::hid::{Axis, Button, HidKind, PointerInput, QUEUE_LENGTH};
use vmkit_devices::usb::{PacketError, SetupPacket, Speed, SpeedMask, UsbDevice, UsbError, UsbHid};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type,
        request,
        value,
        index,
        length,
    }
}

fn attached(mut dev: UsbHid, speed: Speed) -> UsbHid {
    dev.attach(speed, "1", Some("0000:00:01.0"));
    dev
}

fn get(dev: &mut UsbHid, value: u16, length: u16) -> Result<Vec<u8>, PacketError> {
    control_transfer(dev, &setup(0x80, 6, value, 0, length), &[])
}

/// Walks a configuration descriptor as a driver does: (type, bytes) per
/// descriptor, checking each length.
fn walk(conf: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let total = usize::from(u16::from_le_bytes([conf[2], conf[3]]));
    if total != conf.len() {
        return Err(format!("wTotalLength {total} for {} bytes", conf.len()));
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < conf.len() {
        let len = usize::from(conf[at]);
        if len < 2 || at + len > conf.len() {
            return Err(format!("bad descriptor length {len} at {at}"));
        }
        out.push((conf[at + 1], conf[at..at + len].to_vec()));
        at += len;
    }
    Ok(out)
}

#[test]
fn the_tablet_describes_itself_as_qemus_at_both_speeds() -> TestResult {
    let mut full = attached(UsbHid::new(HidKind::Tablet, 1)?, Speed::Full);
    let dev = get(&mut full, 0x0100, 18)?;
    // Microsoft OS descriptors in use: bcdUSB reads 2.0 at full speed too.
    assert_eq!(dev, [18, 1, 0, 2, 0, 0, 0, 8, 0x27, 6, 1, 0, 0, 0, 1, 3, 10, 1]);
    let conf = get(&mut full, 0x0200, 255)?;
    let descs = walk(&conf)?;
    let kinds: Vec<u8> = descs.iter().map(|d| d.0).collect();
    assert_eq!(kinds, [2, 4, 0x21, 5], "config, interface, HID, endpoint");
    assert_eq!(descs[3].1, [7, 5, 0x81, 3, 8, 0, 10], "10 ms at full speed");
    // No high-speed set: no qualifier.
    assert_eq!(get(&mut full, 0x0600, 10), Err(PacketError::Stall));

    let mut high = attached(UsbHid::tablet(), Speed::High);
    let qual = get(&mut high, 0x0600, 10)?;
    assert_eq!(qual, [10, 6, 0x00, 0x01, 0, 0, 0, 8, 1, 0], "the full-speed set");
    let other = get(&mut high, 0x0700, 255)?;
    assert_eq!(other[1], 7, "other-speed configuration");
    let bos = get(&mut high, 0x0f00, 255)?;
    assert_eq!(
        bos,
        [5, 0x0f, 12, 0, 1, 7, 0x10, 2, 2, 0, 0, 0],
        "USB 2.0 extension: LPM"
    );
    Ok(())
}

#[test]
fn strings_and_the_serial_number_follow_qemus_form() -> TestResult {
    let mut tablet = attached(UsbHid::tablet(), Speed::High);
    assert_eq!(get(&mut tablet, 0x0300, 255)?, [4, 3, 0x09, 0x04], "English (US)");
    let text = |d: Vec<u8>| -> String { d[2..].chunks(2).map(|c| char::from(c[0])).collect() };
    assert_eq!(text(get(&mut tablet, 0x0303, 255)?), "QEMU USB Tablet");
    assert_eq!(text(get(&mut tablet, 0x030a, 255)?), "28754-0000:00:01.0-1");
    assert_eq!(text(get(&mut tablet, 0x03ee, 255)?), "MSFT100Q");
    assert_eq!(
        get(&mut tablet, 0x0330, 255)?,
        Vec::<u8>::new(),
        "no such string: empty answer"
    );
    // wLength cuts the answer.
    assert_eq!(get(&mut tablet, 0x0303, 2)?, [32, 3]);
    Ok(())
}

#[test]
fn configuration_address_and_remote_wakeup() -> TestResult {
    let mut kbd = attached(UsbHid::keyboard(), Speed::High);
    assert_eq!(control_transfer(&mut kbd, &setup(0x80, 8, 0, 0, 1), &[])?, [0]);
    control_transfer(&mut kbd, &setup(0x00, 9, 1, 0, 0), &[])?;
    assert_eq!(control_transfer(&mut kbd, &setup(0x80, 8, 0, 0, 1), &[])?, [1]);
    // QEMU takes an unknown configuration value without a change.
    control_transfer(&mut kbd, &setup(0x00, 9, 7, 0, 0), &[])?;
    assert_eq!(kbd.desc().configuration(), 1);
    control_transfer(&mut kbd, &setup(0x00, 5, 9, 0, 0), &[])?;
    assert_eq!(kbd.address(), 9);
    assert_eq!(control_transfer(&mut kbd, &setup(0x80, 0, 0, 0, 2), &[])?, [0, 0]);
    control_transfer(&mut kbd, &setup(0x00, 3, 1, 0, 0), &[])?;
    assert!(kbd.remote_wakeup());
    assert_eq!(control_transfer(&mut kbd, &setup(0x80, 0, 0, 0, 2), &[])?, [2, 0]);
    assert_eq!(control_transfer(&mut kbd, &setup(0x81, 10, 0, 0, 1), &[])?, [0]);
    // A bus reset clears the address and remote wakeup, not the configuration.
    kbd.reset();
    assert_eq!(
        (kbd.address(), kbd.remote_wakeup(), kbd.desc().configuration()),
        (0, false, 1)
    );
    // More than QEMU's 4 KiB control buffer stalls.
    assert_eq!(
        control_transfer(&mut kbd, &setup(0x80, 6, 0x0100, 0, 4097), &[]),
        Err(PacketError::Stall)
    );
    Ok(())
}

#[test]
fn hid_class_requests() -> TestResult {
    let mut kbd = attached(UsbHid::keyboard(), Speed::High);
    assert_eq!(kbd.hid().protocol(), 0, "QEMU's state before the first reset");
    kbd.reset(); // the port reset: the report protocol (QEMU's hid_reset)
    let report = control_transfer(&mut kbd, &setup(0x81, 6, 0x2200, 0, 255), &[])?;
    assert_eq!(report.len(), 63);
    assert_eq!(&report[..4], [0x05, 0x01, 0x09, 0x06], "generic desktop, keyboard");
    assert_eq!(
        control_transfer(&mut kbd, &setup(0xa1, 3, 0, 0, 1), &[])?,
        [1],
        "report protocol"
    );
    control_transfer(&mut kbd, &setup(0x21, 0x0b, 0, 0, 0), &[])?;
    assert_eq!(
        control_transfer(&mut kbd, &setup(0xa1, 3, 0, 0, 1), &[])?,
        [0],
        "boot protocol"
    );
    control_transfer(&mut kbd, &setup(0x21, 0x0a, 0x7d00, 0, 0), &[])?;
    assert_eq!(control_transfer(&mut kbd, &setup(0xa1, 2, 0, 0, 1), &[])?, [0x7d]);
    assert_eq!(
        control_transfer(&mut kbd, &setup(0xa1, 1, 0x0100, 0, 8), &[])?,
        [0; 8],
        "GET_REPORT with nothing pressed"
    );
    control_transfer(&mut kbd, &setup(0x21, 9, 0x0200, 0, 1), &[0x05])?;
    assert_eq!(kbd.hid().leds(), 0x05);

    let mut tablet = attached(UsbHid::tablet(), Speed::High);
    assert_eq!(
        control_transfer(&mut tablet, &setup(0x21, 0x0b, 0, 0, 0), &[]),
        Err(PacketError::Stall),
        "the tablet has no boot protocol"
    );
    assert_eq!(
        control_transfer(&mut tablet, &setup(0x21, 9, 0x0200, 0, 1), &[1]),
        Err(PacketError::Stall)
    );
    tablet.move_to(100, 200);
    assert_eq!(
        control_transfer(&mut tablet, &setup(0xa1, 1, 0x0100, 0, 6), &[])?,
        [0, 100, 0, 200, 0, 0],
        "GET_REPORT polls the queue"
    );
    assert_eq!(
        control_transfer(&mut tablet, &setup(0x81, 6, 0x2100, 0, 9), &[]),
        Err(PacketError::Stall),
        "the HID descriptor only comes inside the configuration"
    );
    Ok(())
}

#[test]
fn the_interrupt_endpoint_naks_when_empty_and_stalls_elsewhere() -> TestResult {
    let mut tablet = attached(UsbHid::tablet(), Speed::High);
    assert_eq!(tablet.data_in(1, 8), Err(PacketError::Nak));
    assert_eq!(tablet.data_in(2, 8), Err(PacketError::Stall));
    assert_eq!(tablet.data_out(1, &[0]), Err(PacketError::Stall));
    tablet.pointer_event(PointerInput::Abs {
        axis: Axis::X,
        value: 0x7fff,
    });
    tablet.pointer_event(PointerInput::Button {
        button: Button::WheelUp,
        down: true,
    });
    assert!(tablet.pointer_sync());
    assert_eq!(tablet.data_in(1, 8)?, [0, 0xff, 0x7f, 0, 0, 1], "wheel up reads +1");
    assert_eq!(tablet.data_in(1, 8), Err(PacketError::Nak));
    // A keyboard ignores pointer input and a tablet key input.
    assert!(!tablet.key_event(0x1e, true));
    let mut kbd = attached(UsbHid::keyboard(), Speed::Full);
    assert!(!kbd.move_to(1, 1));
    Ok(())
}

#[test]
fn keyboard_queue_is_bounded_and_rollover_reports_error() -> TestResult {
    let mut kbd = attached(UsbHid::keyboard(), Speed::High);
    for code in 0x10..0x18u8 {
        assert!(kbd.key_event(code, true));
    }
    for code in 0x18..0x20u8 {
        assert!(kbd.key_event(code, true));
    }
    assert_eq!(kbd.hid().queued(), QUEUE_LENGTH);
    assert!(!kbd.key_event(0x20, true), "a full queue drops the key");
    kbd.data_in(1, 8)?;
    assert!(!kbd.key_event(0x9d, true), "an extended key needs two free entries");
    assert!(kbd.key_event(0x1e, true));
    for _ in 0..4 {
        kbd.data_in(1, 8)?;
    }
    assert_eq!(kbd.data_in(1, 8)?, [0, 0, 0x14, 0x1a, 0x08, 0x15, 0x17, 0x1c]);
    assert_eq!(
        kbd.data_in(1, 8)?,
        [0, 0, 1, 1, 1, 1, 1, 1],
        "seven keys down: rollover"
    );
    Ok(())
}

#[test]
fn usb_version_and_speeds() {
    assert_eq!(UsbHid::new(HidKind::Tablet, 3), Err(UsbError::BadUsbVersion(3)));
    assert_eq!(
        UsbHid::new(HidKind::Keyboard, 0).map(|_| ()).map_err(|e| e.to_string()),
        Err("Invalid usb version 0 for usb hid device".to_owned())
    );
    assert_eq!(UsbHid::tablet().speed_mask(), SpeedMask::FULL | SpeedMask::HIGH);
    assert_eq!(
        UsbHid::new(HidKind::Keyboard, 1).map(|d| d.speed_mask()),
        Ok(SpeedMask::FULL)
    );
    assert_eq!(UsbHid::tablet().speed(), None, "not attached");
}

proptest! {
    /// Any sequence of input and polls keeps the queue within its bound
    /// and never panics; a poll of a non-empty queue gives a report.
    #[test]
    fn input_queues_stay_bounded(ops in proptest::collection::vec((0u8..5, any::<u8>(), any::<i16>()), 0..200)) {
        let mut tablet = attached(UsbHid::tablet(), Speed::High);
        let mut kbd = attached(UsbHid::keyboard(), Speed::High);
        for (op, a, b) in ops {
            match op {
                0 => { tablet.move_to(i32::from(b), i32::from(a)); }
                1 => {
                    let button = [Button::Left, Button::Right, Button::Middle, Button::WheelUp, Button::WheelDown][usize::from(a % 5)];
                    tablet.pointer_event(PointerInput::Button { button, down: b % 2 == 0 });
                    tablet.pointer_sync();
                }
                2 => { kbd.key_event(a, b % 2 == 0); }
                3 => { kbd.pause_event(b % 2 == 0); }
                _ => {
                    let len = usize::from(a % 10);
                    let had = kbd.hid().has_events();
                    let r = kbd.data_in(1, len);
                    prop_assert_eq!(r.is_ok(), had);
                    let _ = tablet.data_in(1, len);
                }
            }
            prop_assert!(tablet.hid().queued() < QUEUE_LENGTH);
            prop_assert!(kbd.hid().queued() <= QUEUE_LENGTH);
        }
    }
}
