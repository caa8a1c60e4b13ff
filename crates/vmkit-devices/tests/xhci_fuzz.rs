//! Whatever a guest writes — registers, TRBs, contexts — and whatever a
//! migration stream carries, the controller answers with register values,
//! completion codes, events or HCE: never a panic or a hang.

mod xhci_guest;

use proptest::prelude::*;
use vmkit_devices::dma::{Dma, TestMemory};
use vmkit_devices::usb::UsbHid;
use vmkit_devices::usb::xhci::state::XhciState;
use vmkit_devices::usb::xhci::{Env, Trb, XhciPci, XhciPciConfig};
use vmkit_devices::usb::{UsbDevice, UsbError};
use xhci_guest::*;

/// Sizes and offsets a guest may try, valid or not.
fn access() -> impl Strategy<Value = (u64, u8, u64)> {
    (
        prop_oneof![
            0u64..0x80,
            0x400u64..0x4c0,
            0x1000u64..0x1240,
            0x2000u64..0x2110,
            0x3000u64..0x3810,
            any::<u64>()
        ],
        prop_oneof![Just(1u8), Just(2), Just(4), Just(8), any::<u8>()],
        any::<u64>(),
    )
}

/// A TRB with a random type and flags, its parameter often inside guest memory.
fn trb() -> impl Strategy<Value = Trb> {
    (
        prop_oneof![0u64..MEM as u64, any::<u64>()],
        any::<u32>(),
        any::<u32>(),
        0u32..64,
    )
        .prop_map(|(parameter, status, control, kind)| Trb {
            parameter,
            status,
            control: (control & !(0x3f << 10)) | kind << 10,
        })
}

fn config(ports: (u32, u32), msix: bool) -> XhciPciConfig {
    let mut cfg = XhciPciConfig::default();
    cfg.core.p2 = ports.0;
    cfg.core.p3 = ports.1;
    cfg.msix = msix;
    cfg
}

fn check(r: Result<(), UsbError>) -> Result<(), TestCaseError> {
    match r {
        Ok(()) | Err(UsbError::BadAccess { .. }) => Ok(()),
        Err(e) => Err(TestCaseError::fail(e.to_string())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random register traffic, doorbells included, over random memory.
    #[test]
    fn register_writes_never_panic(
        ports in (0u32..20, 0u32..20),
        msix in any::<bool>(),
        ops in proptest::collection::vec((access(), any::<bool>()), 1..120),
        noise in proptest::collection::vec((0u64..MEM as u64, any::<u64>()), 0..64),
    ) {
        let mut g = Guest::new(config(ports, msix)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (addr, v) in noise {
            let _ = g.mem.write_u64(addr & !7, v);
        }
        let _ = g.start();
        let _ = g.attach(1, Box::new(UsbHid::tablet()));
        for ((offset, size, value), write) in ops {
            if write {
                check(g.write(offset, size, value))?;
            } else {
                check(g.read(offset, size).map(|_| ()))?;
            }
        }
        let env = env(&g.mem, g.now + 1_000_000_000);
        let _ = g.dev.run_timers(&env);
    }

    /// Random commands and transfer TRBs on a running controller with a
    /// tablet in a configured slot.
    #[test]
    fn random_trbs_end_in_completion_codes(
        commands in proptest::collection::vec(trb(), 0..24),
        transfers in proptest::collection::vec((prop_oneof![Just(1u8), Just(3), 0u8..32], trb()), 0..24),
        input in any::<bool>(),
    ) {
        let mut g = Guest::default_config().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let setup = (|| -> Res<u8> {
            g.start()?;
            g.attach(1, Box::new(UsbHid::tablet()))?;
            g.w32(portsc_offset(5), 1 << 4)?;
            g.events()?;
            g.bring_up(5)
        })();
        let slot = setup.map_err(|e| TestCaseError::fail(e.to_string()))?;
        for c in commands {
            let _ = g.queue_command(c);
        }
        let _ = g.w32(DOORBELL, 0);
        for (dci, t) in transfers {
            if g.rings.contains_key(&(slot, dci)) {
                let _ = g.queue(slot, dci, &[t]);
            }
            let _ = g.w32(DOORBELL + 4 * u64::from(slot), u32::from(dci));
        }
        if input {
            if let Some(t) = g.dev.core_mut().device_as::<UsbHid>(1) {
                t.move_to(1, 2);
            }
            g.wakeup(1, 0x81);
        }
        let evs = g.events().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(evs.len() <= EVENT_TRBS as usize);
    }

    /// A migration stream's values are untrusted: anything `check_state`
    /// accepts loads, and the controller keeps working on it.
    #[test]
    fn any_accepted_state_runs(
        regs in proptest::collection::vec(any::<u32>(), 8),
        intr in proptest::collection::vec(any::<u32>(), 10),
        er_start in prop_oneof![0u64..MEM as u64, any::<u64>()],
        ring in (any::<u64>(), any::<bool>()),
        slots in proptest::collection::vec((any::<bool>(), any::<bool>()), 64),
        ops in proptest::collection::vec(access(), 0..40),
    ) {
        let mem = TestMemory::new(MEM);
        let env = Env { dma: &mem, now_ns: 5 };
        let mut src = XhciPci::new(XhciPciConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = src.attach(1, Box::new(UsbHid::tablet()), &env);
        let mut state: XhciState = src.save_state();
        let c = &mut state.core;
        (c.usbcmd, c.usbsts, c.dnctrl, c.crcr_low, c.crcr_high, c.dcbaap_low, c.dcbaap_high, c.config) =
            (regs[0], regs[1], regs[2], regs[3], regs[4], regs[5], regs[6], regs[7]);
        c.cmd_ring.dequeue = ring.0;
        c.cmd_ring.ccs = ring.1;
        if let Some(i) = c.intrs.first_mut() {
            (i.iman, i.erstsz, i.erdp_low, i.erdp_high, i.er_size, i.er_ep_idx) =
                (intr[0], intr[1], intr[2], intr[3], intr[4], intr[5]);
            i.er_start = er_start;
            i.er_pcs = intr[6] & 1 != 0;
        }
        for (s, (enabled, addressed)) in c.slots.iter_mut().zip(slots) {
            s.enabled = enabled;
            s.addressed = addressed;
        }
        let mut dst = XhciPci::new(XhciPciConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let tablet: Box<dyn UsbDevice> = Box::new(UsbHid::tablet());
        let _ = dst.attach(1, tablet, &env);
        prop_assert!(dst.check_state(&state).is_ok());
        dst.load_state(state).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = dst.finish_load(&env);
        for (offset, size, value) in ops {
            match dst.bar0_write(offset, size, value, &env) {
                Ok(_) | Err(UsbError::BadAccess { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
        }
        let _ = dst.bar0_write(DOORBELL, 4, 0, &env);
        let _ = dst.wakeup(1, 0x81, &env);
    }
}
