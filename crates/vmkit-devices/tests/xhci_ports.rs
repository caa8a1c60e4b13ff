//! Root hub ports: attach, detach and reset with their PORTSC bits and
//! Port Status Change events, link state writes, remote wakeup, and the
//! host side's refusals.

mod xhci_guest;

use vmkit_devices::usb::xhci::{TrbType, XhciConfig, XhciPciConfig};
use vmkit_devices::usb::{UsbError, UsbHid};
use xhci_guest::*;

const CCS: u32 = 1;
const PED: u32 = 1 << 1;
const PR: u32 = 1 << 4;
const PP: u32 = 1 << 9;
const LWS: u32 = 1 << 16;
const CSC: u32 = 1 << 17;
const PEC: u32 = 1 << 18;
const WRC: u32 = 1 << 19;
const PRC: u32 = 1 << 21;
const PLC: u32 = 1 << 22;
const WCE: u32 = 1 << 25;
const WPR: u32 = 1 << 31;

fn pls(v: u32) -> u32 {
    (v >> 5) & 0xf
}

fn speed(v: u32) -> u32 {
    (v >> 10) & 0xf
}

fn psc_ports(evs: &[vmkit_devices::usb::xhci::Trb]) -> Vec<u64> {
    evs.iter()
        .filter(|e| e.trb_type() == Some(TrbType::PortStatusChange))
        .map(|e| e.parameter >> 24)
        .collect()
}

#[test]
fn attach_reset_and_detach_with_port_status_change_events() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    // After the reset every port is powered, empty, waiting for a device.
    let empty = g.r32(portsc_offset(1))?;
    assert_eq!((empty & (PP | CCS | CSC), pls(empty)), (PP | CSC, 5));
    g.w32(portsc_offset(5), CSC)?;
    assert_eq!(g.r32(portsc_offset(5))? & CSC, 0, "CSC is write-1-to-clear");

    g.attach(1, Box::new(UsbHid::tablet()))?;
    let evs = g.events()?;
    assert_eq!(psc_ports(&evs), [5], "the USB 2 register set of USB port 1");
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    let sc = g.r32(portsc_offset(5))?;
    assert_eq!(
        sc & (CCS | PP | CSC | PED),
        CCS | PP | CSC,
        "connected, not enabled yet"
    );
    assert_eq!((speed(sc), pls(sc)), (3, 7), "high speed, polling until reset");
    assert_eq!(g.r32(portsc_offset(1))? & CCS, 0, "the USB 3 register set stays empty");

    g.w32(portsc_offset(5), CSC | PR)?;
    let evs = g.events()?;
    assert_eq!(psc_ports(&evs), [5]);
    let sc = g.r32(portsc_offset(5))?;
    assert_eq!(sc & (PED | PR | PRC), PED | PRC, "enabled, reset done");
    assert_eq!(pls(sc), 0, "U0");
    assert_eq!(sc & CSC, CSC, "a reset ends before the write's other bits count");
    g.w32(portsc_offset(5), CSC | PRC | PEC)?;
    assert_eq!(g.r32(portsc_offset(5))? & (CSC | PRC), 0);
    // Read/write bits stay as written; RO bits do not change.
    g.w32(portsc_offset(5), WCE | PP | CCS)?;
    assert_eq!(g.r32(portsc_offset(5))? & (WCE | PP | CCS | PED), WCE | PP | CCS | PED);

    // A warm reset of a USB 2 device: no WRC.
    g.w32(portsc_offset(5), WPR)?;
    g.events()?;
    assert_eq!(g.r32(portsc_offset(5))? & (WRC | PRC), PRC);

    g.detach(1)?;
    let evs = g.events()?;
    assert_eq!(psc_ports(&evs), [5]);
    let sc = g.r32(portsc_offset(5))?;
    assert_eq!((sc & (CCS | PED | PP | CSC), pls(sc)), (PP | CSC, 5), "empty again");
    // Resetting an empty port does nothing.
    g.w32(portsc_offset(5), CSC | PR)?;
    assert!(g.events()?.is_empty());
    Ok(())
}

#[test]
fn link_state_writes_need_the_strobe() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.w32(portsc_offset(5), PR)?;
    g.events()?;
    g.w32(portsc_offset(5), 3 << 5)?;
    assert_eq!(pls(g.r32(portsc_offset(5))?), 0, "ignored without LWS");
    g.w32(portsc_offset(5), LWS | 3 << 5)?;
    assert_eq!(pls(g.r32(portsc_offset(5))?), 3, "U3");
    assert!(g.events()?.is_empty(), "entering U3 reports nothing");
    g.w32(portsc_offset(5), LWS | 5 << 5)?;
    assert_eq!(pls(g.r32(portsc_offset(5))?), 3, "RxDetect cannot be written");
    g.w32(portsc_offset(5), LWS)?;
    let sc = g.r32(portsc_offset(5))?;
    assert_eq!((pls(sc), sc & PLC), (0, PLC), "back to U0 with a link change");
    assert_eq!(psc_ports(&g.events()?), [5]);
    Ok(())
}

#[test]
fn a_suspended_port_resumes_when_its_device_may_wake_the_host() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.w32(portsc_offset(5), PR)?;
    g.events()?;
    let slot = g.bring_up(5)?;
    // SET_FEATURE(DEVICE_REMOTE_WAKEUP), then suspend the port.
    let evs = g.control_nodata(slot, setup(0x00, 3, 1, 0, 0))?;
    assert_eq!(evs.iter().map(ccode).collect::<Vec<_>>(), [1]);
    g.w32(portsc_offset(5), LWS | 3 << 5 | PLC)?;
    let tablet = g.dev.core_mut().device_as::<UsbHid>(1).ok_or("no tablet")?;
    assert!(tablet.move_to(7, 7));
    g.wakeup(1, 0x81);
    let sc = g.r32(portsc_offset(5))?;
    assert_eq!((pls(sc), sc & PLC), (15, PLC), "resume signalled");
    assert_eq!(psc_ports(&g.events()?), [5]);
    Ok(())
}

#[test]
fn a_superspeed_only_controller_refuses_a_usb2_device() {
    let mut g = match Guest::new(XhciPciConfig {
        core: XhciConfig {
            p2: 0,
            p3: 1,
            ..XhciConfig::default()
        },
        ..XhciPciConfig::default()
    }) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let env = env(&g.mem, g.now);
    let err = g.dev.attach(1, Box::new(UsbHid::tablet()), &env).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(
            "Warning: speed mismatch trying to attach usb device \"QEMU USB Tablet\" (full+high speed) \
             to bus \"usb-bus.0\", port \"1\" (super speed)"
                .to_owned()
        )
    );
}

#[test]
fn ports_that_do_not_exist_are_in_use_or_empty_are_refused() -> TestResult {
    let mut g = Guest::default_config()?;
    let env = env(&g.mem, g.now);
    assert_eq!(
        g.dev.attach(0, Box::new(UsbHid::tablet()), &env).err(),
        Some(UsbError::NoSuchPort { port: 0, ports: 4 })
    );
    assert_eq!(
        g.dev.attach(5, Box::new(UsbHid::tablet()), &env).err(),
        Some(UsbError::NoSuchPort { port: 5, ports: 4 })
    );
    g.dev.attach(2, Box::new(UsbHid::keyboard()), &env)?;
    assert_eq!(
        g.dev.attach(2, Box::new(UsbHid::tablet()), &env).err(),
        Some(UsbError::PortInUse(2))
    );
    assert_eq!(
        g.dev.detach(3, &env).err().map(|e| e.to_string()),
        Some("USB port 3 has no device".into())
    );
    // While halted, an attach reports no event but leaves CSC for the driver.
    assert_eq!(g.r32(portsc_offset(6))? & (CCS | CSC), CCS | CSC);
    Ok(())
}

#[test]
fn unplugging_an_addressed_device_stops_its_slot_quietly() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.w32(portsc_offset(5), PR)?;
    g.events()?;
    let slot = g.bring_up(5)?;
    g.queue(
        slot,
        3,
        &[vmkit_devices::usb::xhci::Trb::new(
            TrbType::Normal,
            BUFFERS,
            8,
            vmkit_devices::usb::xhci::trb::bits::TR_IOC,
        )],
    )?;
    g.ring_doorbell(slot, 3)?;
    g.detach(1)?;
    assert_eq!(psc_ports(&g.events()?), [5]);
    // The endpoint has no device to run: nothing happens.
    g.ring_doorbell(slot, 3)?;
    assert!(g.events()?.is_empty());
    // Plugged back in, the old slot does not own it: a new Address Device
    // on another slot may take it.
    g.attach(1, Box::new(UsbHid::tablet()))?;
    g.events()?;
    let again = g.enable_slot()?;
    assert_eq!(ccode(&g.address_device(again, 5, false)?), 1);
    Ok(())
}
