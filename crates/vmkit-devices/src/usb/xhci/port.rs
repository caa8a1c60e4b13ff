//! Root hub ports and the devices in them: PORTSC and its write
//! semantics, connect/reset/link changes with their Port Status Change
//! events, attaching and detaching devices, and device wakeups.

use super::core::{Effects, Env, XhciCore};
use super::intr::Event;
use super::regs::{LinkState, PortSc, port_speed};
use super::trb::{CompletionCode, TrbType};
use crate::usb::device::{Speed, SpeedMask, UsbDevice};
use crate::usb::error::UsbError;

/// A port register set and what it is wired to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// PORTSC.
    pub portsc: u32,
    /// Its 1-based number.
    pub number: u8,
    /// Speeds it carries (USB 2: low/full/high; USB 3: super).
    pub speeds: SpeedMask,
    /// The USB port (0-based) it belongs to.
    pub usb_port: usize,
}

impl XhciCore {
    // ---- ports ----

    /// The port register set (0-based) a device on USB port `usb_port`
    /// at `speed` shows up in.
    fn port_index(&self, usb_port: usize, speed: Speed) -> usize {
        match speed {
            Speed::Super => usb_port,
            Speed::Low | Speed::Full | Speed::High => usb_port + self.cfg.p3 as usize,
        }
    }

    fn port_device_speed(&self, i: usize) -> Option<Speed> {
        let port = self.ports.get(i)?;
        let dev = self.devices.get(port.usb_port)?.as_ref()?;
        dev.speed().filter(|s| port.speeds.contains(s.mask()))
    }

    /// QEMU's `xhci_port_notify`: sets change bits and, while running,
    /// queues a Port Status Change event.
    pub(super) fn port_notify(&mut self, i: usize, bits: PortSc, env: Option<&Env<'_>>, fx: &mut Effects) {
        let Some(port) = self.ports.get_mut(i) else { return };
        if port.portsc & bits.bits() == bits.bits() {
            return;
        }
        port.portsc |= bits.bits();
        let mut ev = Event::new(TrbType::PortStatusChange, CompletionCode::Success);
        ev.ptr = u64::from(port.number) << 24;
        if !self.running() {
            return;
        }
        if let Some(env) = env {
            self.event(ev, 0, env, fx);
        }
    }

    /// QEMU's `xhci_port_update`: PORTSC from whether a device is there,
    /// then a connect status change.
    pub(super) fn port_update(&mut self, i: usize, detach: bool, env: Option<&Env<'_>>, fx: &mut Effects) {
        let speed = if detach { None } else { self.port_device_speed(i) };
        let Some(port) = self.ports.get_mut(i) else { return };
        let mut portsc = PortSc::PP.bits();
        let pls = match speed {
            None => LinkState::RxDetect,
            Some(speed) => {
                portsc |= PortSc::CCS.bits();
                let (field, pls) = match speed {
                    Speed::Low => (port_speed::LOW, LinkState::Polling),
                    Speed::Full => (port_speed::FULL, LinkState::Polling),
                    Speed::High => (port_speed::HIGH, LinkState::Polling),
                    Speed::Super => {
                        portsc |= PortSc::PED.bits();
                        (port_speed::SUPER, LinkState::U0)
                    }
                };
                portsc |= field << PortSc::SPEED_SHIFT;
                pls
            }
        };
        port.portsc = PortSc::with_pls(portsc, pls);
        self.port_notify(i, PortSc::CSC, env, fx);
    }

    /// QEMU's `xhci_port_reset`: with a device there, reset it, enable the
    /// port in U0, and report the reset's end.
    fn port_reset(&mut self, i: usize, warm: bool, env: &Env<'_>, fx: &mut Effects) {
        let Some(speed) = self.port_device_speed(i) else { return };
        let usb_port = self.ports[i].usb_port;
        if let Some(dev) = self.devices.get_mut(usb_port).and_then(Option::as_mut) {
            dev.reset();
        }
        let port = &mut self.ports[i];
        if speed == Speed::Super && warm {
            port.portsc |= PortSc::WRC.bits();
        }
        port.portsc = PortSc::with_pls(port.portsc, LinkState::U0) | PortSc::PED.bits();
        port.portsc &= !PortSc::PR.bits();
        self.port_notify(i, PortSc::PRC, Some(env), fx);
    }

    pub(super) fn portsc_write(&mut self, i: usize, val: u32, env: &Env<'_>, fx: &mut Effects) {
        if val & PortSc::WPR.bits() != 0 {
            self.port_reset(i, true, env, fx);
            return;
        }
        if val & PortSc::PR.bits() != 0 {
            self.port_reset(i, false, env, fx);
            return;
        }
        let Some(port) = self.ports.get_mut(i) else { return };
        let mut portsc = port.portsc & !(val & PortSc::CHANGE_BITS.bits());
        let mut notify = None;
        if val & PortSc::LWS.bits() != 0 {
            let old = PortSc::pls(port.portsc);
            match PortSc::pls(val) {
                0 if old != LinkState::U0 as u32 => {
                    portsc = PortSc::with_pls(portsc, LinkState::U0);
                    notify = Some(PortSc::PLC);
                }
                3 if old < LinkState::U3 as u32 => portsc = PortSc::with_pls(portsc, LinkState::U3),
                // Other link states (Resume among them) are ignored.
                _ => {}
            }
        }
        let rw = PortSc::READ_WRITE.bits();
        portsc = (portsc & !rw) | (val & rw);
        port.portsc = portsc;
        if let Some(bits) = notify {
            self.port_notify(i, bits, Some(env), fx);
        }
    }

    // ---- devices ----

    fn check_port(&self, port: usize) -> Result<usize, UsbError> {
        let n = self.devices.len();
        match port.checked_sub(1) {
            Some(i) if i < n => Ok(i),
            _ => Err(UsbError::NoSuchPort { port, ports: n }),
        }
    }

    fn usb_port_speeds(&self, i: usize) -> SpeedMask {
        let mut mask = SpeedMask::empty();
        if i < self.cfg.p2 as usize {
            mask |= SpeedMask::LOW | SpeedMask::FULL | SpeedMask::HIGH;
        }
        if i < self.cfg.p3 as usize {
            mask |= SpeedMask::SUPER;
        }
        mask
    }

    /// Plugs `dev` into USB port `port` (1-based): it attaches at the
    /// fastest speed both support, in the USB 2 or USB 3 port register set
    /// of that port, with a connect status change (and an event while the
    /// controller runs).
    pub fn attach(&mut self, port: usize, mut dev: Box<dyn UsbDevice>, env: &Env<'_>) -> Result<Effects, UsbError> {
        let i = self.check_port(port)?;
        if self.devices[i].is_some() {
            return Err(UsbError::PortInUse(port));
        }
        let port_speeds = self.usb_port_speeds(i);
        let Some(speed) = dev.speed_mask().best_common(port_speeds) else {
            return Err(UsbError::SpeedMismatch {
                device: dev.product().to_owned(),
                device_speeds: dev.speed_mask().to_string(),
                bus: self.bus_name.clone(),
                port: port.to_string(),
                port_speeds: port_speeds.to_string(),
            });
        };
        dev.attach(speed, &port.to_string(), self.host_path.as_deref());
        self.devices[i] = Some(dev);
        let mut fx = Effects::default();
        let p = self.port_index(i, speed);
        self.port_update(p, false, Some(env), &mut fx);
        Ok(fx)
    }

    /// Unplugs the device in USB port `port` (1-based): its slot loses it
    /// (queued transfers dropped), the port shows a disconnect.
    pub fn detach(&mut self, port: usize, env: &Env<'_>) -> Result<(Box<dyn UsbDevice>, Effects), UsbError> {
        let i = self.check_port(port)?;
        let speed = self.devices[i].as_ref().and_then(|d| d.speed());
        let Some(dev) = self.devices[i].take() else {
            return Err(UsbError::PortEmpty(port));
        };
        for slot in &mut self.slots {
            if slot.usb_port == Some(i) {
                for ep in slot.eps.iter_mut().flatten() {
                    ep.retry = None;
                }
                slot.usb_port = None;
                break;
            }
        }
        let mut fx = Effects::default();
        if let Some(speed) = speed {
            let p = self.port_index(i, speed);
            self.port_update(p, true, Some(env), &mut fx);
        }
        Ok((dev, fx))
    }

    /// The device in USB port `port` (1-based).
    pub fn device(&self, port: usize) -> Option<&dyn UsbDevice> {
        self.devices.get(port.checked_sub(1)?)?.as_deref()
    }

    /// The device in USB port `port`, mutably.
    pub fn device_mut(&mut self, port: usize) -> Option<&mut (dyn UsbDevice + 'static)> {
        self.devices.get_mut(port.checked_sub(1)?)?.as_deref_mut()
    }

    /// The device in USB port `port` as its concrete model (to inject
    /// input into a [`UsbHid`](crate::usb::UsbHid)).
    pub fn device_as<T: UsbDevice>(&mut self, port: usize) -> Option<&mut T> {
        self.device_mut(port)?.as_any_mut().downcast_mut::<T>()
    }

    /// The device in USB port `port` has something for endpoint
    /// `endpoint_address` (0x81: IN 1) — QEMU's `usb_wakeup`: a suspended
    /// port resumes if the device may wake the host, and the endpoint is
    /// kicked in the slot that holds the device. (QEMU finds the slot by
    /// the device's USB address, which Address Device sets to the slot
    /// id; the slot's own record also holds after a migration, where the
    /// device's address is not carried.)
    pub fn wakeup(&mut self, port: usize, endpoint_address: u8, env: &Env<'_>) -> Effects {
        let mut fx = Effects::default();
        if self.pending_post_load {
            fx.extend(self.post_load(env));
        }
        let Ok(i) = self.check_port(port) else { return fx };
        let Some(dev) = self.devices[i].as_ref() else { return fx };
        let (wake, speed) = (dev.remote_wakeup(), dev.speed());
        if let (true, Some(speed)) = (wake, speed) {
            let p = self.port_index(i, speed);
            if self
                .ports
                .get(p)
                .is_some_and(|p| PortSc::pls(p.portsc) == LinkState::U3 as u32)
            {
                self.ports[p].portsc = PortSc::with_pls(self.ports[p].portsc, LinkState::Resume);
                self.port_notify(p, PortSc::PLC, Some(env), &mut fx);
            }
        }
        let nr = endpoint_address & 0x0f;
        let epid = match (nr, endpoint_address & 0x80 != 0) {
            (0, _) => 1,
            (nr, true) => nr * 2 + 1,
            (nr, false) => nr * 2,
        };
        let slot = self.slots.iter().position(|s| s.enabled && s.usb_port == Some(i));
        if let Some(slot) = slot {
            self.kick_ep((slot + 1) as u8, epid, 0, env, &mut fx);
        }
        fx
    }
}
