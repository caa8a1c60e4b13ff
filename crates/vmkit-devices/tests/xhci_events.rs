//! The event ring and interrupts: the producer cycle bit across a wrap,
//! a full ring, EHB and IMAN.IP, MSI-X messages (masking and pending bits
//! included) and INTx with Command.INTX_DISABLE.

mod xhci_guest;

use vmkit_devices::pci::MsiMessage;
use vmkit_devices::pci::regs::Status;
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{Trb, TrbType};
use xhci_guest::*;

fn noop() -> Trb {
    Trb::new(TrbType::NoOpCommand, 0, 0, 0)
}

const MSG: MsiMessage = MsiMessage {
    address: 0xfee0_0000,
    data: 0x4041,
};

/// Enables MSI-X with vector 0 programmed and unmasked.
fn enable_msix(g: &mut Guest) -> TestResult {
    g.w64(0x3000, MSG.address)?;
    g.w32(0x3008, MSG.data)?;
    g.w32(0x300c, 0)?;
    g.cfg_write(0x92, 2, 0x8000)?;
    Ok(())
}

#[test]
fn the_cycle_bit_flips_when_the_event_ring_wraps() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    // 40 events through a 16-entry ring, consumed as they come.
    for i in 0..40u64 {
        let ev = g.command(noop())?;
        assert_eq!(ccode(&ev), 1, "event {i}");
    }
    // The last event sits at index 40 % 16 - 1 with cycle 0 (third pass).
    let last = g.get_trb(EVENT_RING + 16 * ((40 - 1) % 16))?;
    assert_eq!(
        (last.trb_type(), last.control & bits::C),
        (Some(TrbType::CommandCompletion), 1)
    );
    let older = g.get_trb(EVENT_RING + 16 * 15)?;
    assert_eq!(older.control & bits::C, 0, "written on the second pass");
    let intr = g.dev.core().interrupter(0).cloned().ok_or("no interrupter")?;
    assert_eq!((intr.er_ep_idx, intr.er_pcs), (8, true));
    Ok(())
}

#[test]
fn a_full_ring_gets_one_error_event_then_drops() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    for _ in 0..20 {
        g.queue_command(noop())?;
    }
    g.w32(DOORBELL, 0)?;
    let evs = g.events()?;
    assert_eq!(evs.len(), 15, "14 completions and the ring-full error");
    assert!(evs[..14].iter().all(|e| ccode(e) == 1));
    assert_eq!(
        (evs[14].trb_type(), ccode(&evs[14])),
        (Some(TrbType::HostController), 21)
    );
    // Consumed, the ring takes events again.
    assert_eq!(ccode(&g.command(noop())?), 1);
    Ok(())
}

#[test]
fn erdp_outside_the_segment_is_a_host_controller_error() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.w64(ERDP, EVENT_RING + 16 * 16)?;
    g.queue_command(noop())?;
    g.w32(DOORBELL, 0)?;
    assert_ne!(g.r32(USBSTS)? & 0x1000, 0, "HCE");
    assert_eq!(g.get_trb(EVENT_RING)?.control, 0, "no event written");
    // A segment of a bad size, or more than one segment, also.
    let mut g = Guest::default_config()?;
    g.mem_write_u32(ERST + 8, 8)?;
    g.w32(ERSTSZ, 1)?;
    g.w64(ERSTBA, ERST)?;
    assert_ne!(g.r32(USBSTS)? & 0x1000, 0);
    let mut g = Guest::default_config()?;
    g.w32(ERSTSZ, 2)?;
    g.w64(ERSTBA, ERST)?;
    assert_ne!(g.r32(USBSTS)? & 0x1000, 0);
    Ok(())
}

#[test]
fn msix_sends_interrupter_0s_vector_when_iman_ie_is_set() -> TestResult {
    let mut g = Guest::default_config()?;
    enable_msix(&mut g)?;
    g.start()?;
    g.queue_command(noop())?;
    g.w32(DOORBELL, 0)?;
    assert_eq!(g.messages, [MSG]);
    assert!(!g.intx, "INTx stays low with MSI-X");
    assert_eq!(g.r32(IMAN)?, 0x2, "the message took IP");
    assert_ne!(g.r32(ERDP)? & 0x8, 0, "EHB set");
    assert_ne!(g.r32(USBSTS)? & 0x8, 0, "EINT");
    // While EHB is set, more events do not interrupt again.
    g.queue_command(noop())?;
    g.w32(DOORBELL, 0)?;
    assert_eq!(g.messages.len(), 1);
    // Consuming one of two events and clearing EHB interrupts again.
    g.next_event()?;
    assert_eq!(g.messages.len(), 2, "events remain past ERDP");
    g.next_event()?;
    assert_eq!(g.messages.len(), 2);

    // IMAN.IE off: no message, IP stays.
    g.w32(IMAN, 0)?;
    g.command(noop())?;
    assert_eq!(g.messages.len(), 2);
    assert_eq!(g.r32(IMAN)? & 1, 1);
    Ok(())
}

#[test]
fn a_masked_vector_pends_and_is_sent_on_unmask() -> TestResult {
    let mut g = Guest::default_config()?;
    enable_msix(&mut g)?;
    g.start()?;
    g.w32(0x300c, 1)?;
    g.command(noop())?;
    assert!(g.messages.is_empty());
    assert_eq!(g.r32(0x3800)?, 1, "pending bit");
    g.w32(0x300c, 0)?;
    assert_eq!(g.messages, [MSG]);
    assert_eq!(g.r32(0x3800)?, 0);
    // The function mask holds it too.
    g.cfg_write(0x92, 2, 0xc000)?;
    g.command(noop())?;
    assert_eq!(g.messages.len(), 1);
    g.cfg_write(0x92, 2, 0x8000)?;
    assert_eq!(g.messages.len(), 2);
    Ok(())
}

#[test]
fn without_msix_interrupter_0_drives_inta() -> TestResult {
    let mut g = Guest::default_config()?;
    g.start()?;
    g.command(noop())?;
    assert!(g.intx);
    assert!(g.dev.config_space().status().contains(Status::INTERRUPT));
    assert_eq!(g.r32(IMAN)? & 1, 1, "IP stays until the driver clears it");
    g.w32(IMAN, 0x3)?;
    assert!(!g.intx);
    assert!(!g.dev.irq_level());
    // INTx disabled: the device's level and Status follow, the bus does not.
    g.cfg_write(0x04, 2, 0x0400 | 0x6)?;
    g.command(noop())?;
    assert!(!g.intx);
    assert!(g.dev.irq_level());
    assert!(g.dev.config_space().status().contains(Status::INTERRUPT));
    g.cfg_write(0x04, 2, 0x6)?;
    assert!(g.intx, "enabling INTx shows the asserted line");
    // Enabling MSI-X drops INTx.
    enable_msix(&mut g)?;
    assert!(!g.intx);
    assert!(!g.dev.irq_level());
    // USBCMD.INTE off: no interrupt at all.
    g.w32(IMAN, 0x3)?;
    g.w32(USBCMD, 0x1)?;
    g.messages.clear();
    g.command(noop())?;
    assert!(g.messages.is_empty());
    Ok(())
}

#[test]
fn reset_masks_msix_and_halts_the_controller() -> TestResult {
    let mut g = Guest::default_config()?;
    enable_msix(&mut g)?;
    g.start()?;
    let env = env(&g.mem, g.now);
    let fx = g.dev.reset(&env);
    assert!(fx.messages.is_empty());
    assert_eq!(g.dev.config_read(0x92, 2)?, 15, "MSI-X disabled");
    assert_eq!(g.r32(0x300c)?, 1, "vectors masked");
    assert_eq!(g.r32(USBSTS)? & 1, 1);
    assert_eq!(
        g.dev.config_read(0x0c, 1)?,
        0,
        "cache line size cleared as QEMU's reset does"
    );
    Ok(())
}
