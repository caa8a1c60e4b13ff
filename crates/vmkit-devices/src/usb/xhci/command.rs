//! The command ring: slot and endpoint commands over the device contexts
//! in guest memory, with QEMU's completion codes; and the rebuild of
//! slots and endpoints from guest memory after a migration.

use super::core::{Effects, Env, XhciCore};
use super::intr::Event;
use super::regs::Crcr;
use super::ring::Ring;
use super::slot::{CONTEXT_SIZE, Endpoint, EpState, Slot, slot_ctx};
use super::trb::{CompletionCode, Trb, TrbType, bits};
use crate::usb::desc::req;
use crate::usb::device::SetupPacket;

/// Commands run per doorbell before QEMU stops (a guest's endless ring).
pub const COMMAND_LIMIT: u32 = 256;

impl XhciCore {
    /// Runs the command ring until the guest's TRBs end (QEMU's
    /// `xhci_process_commands`), one Command Completion event each.
    pub(super) fn process_commands(&mut self, env: &Env<'_>, fx: &mut Effects) {
        if !self.running() {
            return;
        }
        self.crcr_low |= Crcr::CRR.bits();
        // QEMU's slot id outlives a command: a No Op reports the last one.
        let mut slot_id: u8 = 0;
        let mut count = 0;
        while let Some(cmd) = self.cmd_ring.fetch(env.dma) {
            let code = cmd.trb.type_code();
            if code == 0 {
                break;
            }
            let trb = cmd.trb;
            let ccode = match TrbType::try_from(code) {
                Ok(TrbType::EnableSlot) => match self.slots.iter().position(|s| !s.enabled) {
                    Some(i) => {
                        slot_id = (i + 1) as u8;
                        self.enable_slot(slot_id)
                    }
                    None => CompletionCode::NoSlotsError,
                },
                Ok(TrbType::DisableSlot) => {
                    self.slot_command(&trb, &mut slot_id, |core, id| core.disable_slot(id, env))
                }
                Ok(TrbType::AddressDevice) => self.slot_command(&trb, &mut slot_id, |core, id| {
                    core.address_slot(id, trb.parameter, trb.control & bits::CR_BSR != 0, env)
                }),
                Ok(TrbType::ConfigureEndpoint) => self.slot_command(&trb, &mut slot_id, |core, id| {
                    core.configure_slot(id, trb.parameter, trb.control & bits::CR_DC != 0, env)
                }),
                Ok(TrbType::EvaluateContext) => self.slot_command(&trb, &mut slot_id, |core, id| {
                    core.evaluate_slot(id, trb.parameter, env)
                }),
                Ok(TrbType::StopEndpoint) => self.slot_command(&trb, &mut slot_id, |core, id| {
                    core.stop_ep(id, trb.endpoint_id(), env, fx)
                }),
                Ok(TrbType::ResetEndpoint) => {
                    self.slot_command(&trb, &mut slot_id, |core, id| core.reset_ep(id, trb.endpoint_id(), env))
                }
                Ok(TrbType::SetTrDequeue) => self.slot_command(&trb, &mut slot_id, |core, id| {
                    core.set_tr_dequeue(id, trb.endpoint_id(), trb.parameter, env)
                }),
                Ok(TrbType::ResetDevice) => self.slot_command(&trb, &mut slot_id, |core, id| core.reset_slot(id, env)),
                Ok(TrbType::GetPortBandwidth) => self.get_port_bandwidth(trb.parameter, env),
                Ok(TrbType::NoOpCommand) => CompletionCode::Success,
                // Unimplemented commands, transfer TRBs, and NEC's vendor
                // commands without NEC quirks.
                _ => CompletionCode::TrbError,
            };
            let mut ev = Event::new(TrbType::CommandCompletion, ccode);
            ev.ptr = cmd.addr;
            ev.slot_id = slot_id;
            self.event(ev, 0, env, fx);
            let over = count > COMMAND_LIMIT;
            count += 1;
            if over {
                return;
            }
        }
    }

    /// Runs `f` on the command's slot, or answers QEMU's `xhci_get_slot`
    /// refusals (an id out of range, a slot not enabled).
    fn slot_command(
        &mut self,
        trb: &Trb,
        slot_id: &mut u8,
        f: impl FnOnce(&mut XhciCore, u8) -> CompletionCode,
    ) -> CompletionCode {
        let id = trb.slot_id();
        *slot_id = 0;
        match self.slot(id) {
            None => CompletionCode::TrbError,
            Some(s) if !s.enabled => CompletionCode::SlotNotEnabledError,
            Some(_) => {
                *slot_id = id;
                f(self, id)
            }
        }
    }

    fn enable_slot(&mut self, id: u8) -> CompletionCode {
        if let Some(slot) = self.slot_mut(id) {
            slot.enabled = true;
            slot.usb_port = None;
            slot.eps = vec![None; 31];
        }
        CompletionCode::Success
    }

    pub(super) fn disable_slot(&mut self, id: u8, env: &Env<'_>) -> CompletionCode {
        for epid in 1..=31 {
            self.disable_ep(id, epid, env);
        }
        if let Some(slot) = self.slot_mut(id) {
            slot.enabled = false;
            slot.addressed = false;
            slot.usb_port = None;
            slot.intr = 0;
        }
        CompletionCode::Success
    }

    /// Writes an endpoint's state and ring dequeue pointer into its
    /// context (QEMU's `xhci_set_ep_state`).
    pub(super) fn set_ep_state(&mut self, ep: &mut Endpoint, state: EpState, env: &Env<'_>) {
        let mut ctx: [u32; 5] = self.read_u32s(ep.pctx, env);
        ctx[0] = (ctx[0] & !7) | state.bits();
        ctx[2] = ep.ring.dequeue as u32 | u32::from(ep.ring.ccs);
        ctx[3] = (ep.ring.dequeue >> 32) as u32;
        self.write_u32s(ep.pctx, &ctx, env);
        ep.state = state;
    }

    fn disable_ep(&mut self, id: u8, epid: u8, env: &Env<'_>) -> CompletionCode {
        let Some(mut ep) = self.take_ep(id, epid) else {
            return CompletionCode::Success;
        };
        ep.retry = None;
        // Guest memory is only touched when not resetting the controller.
        if self.dcbaap() != 0 {
            self.set_ep_state(&mut ep, EpState::Disabled, env);
        }
        CompletionCode::Success
    }

    fn enable_ep(&mut self, id: u8, epid: u8, pctx: u64, ctx: &mut [u32; 5], env: &Env<'_>) -> CompletionCode {
        self.disable_ep(id, epid, env);
        let streams = if self.cfg.streams { 7 } else { 0 };
        let ep = Endpoint::from_context(pctx, ctx, streams);
        ctx[0] = (ctx[0] & !7) | EpState::Running.bits();
        self.put_ep(id, epid, ep);
        CompletionCode::Success
    }

    /// The USB port a slot context names: its root hub port, and no hub
    /// in the route string (there are no hubs here). Only ports with a
    /// device count, as QEMU looks among the bus's used ports.
    fn lookup_usb_port(&self, slot: &[u32; 4]) -> Option<usize> {
        let port = slot_ctx::root_port(slot[1]) as usize;
        let usb_port = self.ports.get(port.checked_sub(1)?)?.usb_port;
        let through_hub = slot[0] & 0xf != 0;
        (!through_hub && self.devices.get(usb_port)?.is_some()).then_some(usb_port)
    }

    fn address_slot(&mut self, id: u8, ictx: u64, bsr: bool, env: &Env<'_>) -> CompletionCode {
        let entry = self.dcbaap().wrapping_add(8 * u64::from(id));
        let octx = env.dma.read_u64(entry).unwrap_or(0);
        let ictl: [u32; 2] = self.read_u32s(ictx, env);
        if ictl != [0, 3] {
            return CompletionCode::TrbError;
        }
        let mut slot_ctx: [u32; 4] = self.read_u32s(ictx.wrapping_add(CONTEXT_SIZE), env);
        let mut ep0_ctx: [u32; 5] = self.read_u32s(ictx.wrapping_add(2 * CONTEXT_SIZE), env);
        let Some(usb_port) = self.lookup_usb_port(&slot_ctx) else {
            return CompletionCode::TrbError;
        };
        let taken = self
            .slots
            .iter()
            .enumerate()
            .any(|(i, s)| i + 1 != usize::from(id) && s.usb_port == Some(usb_port));
        if taken {
            return CompletionCode::TrbError;
        }
        if let Some(slot) = self.slot_mut(id) {
            slot.usb_port = Some(usb_port);
            slot.ctx = octx;
            slot.intr = slot_ctx::interrupter(slot_ctx[2]);
        }
        if let Some(dev) = self.devices.get_mut(usb_port).and_then(Option::as_mut) {
            dev.reset();
            if bsr {
                slot_ctx[3] = slot_ctx::DEFAULT << slot_ctx::STATE_SHIFT;
            } else {
                slot_ctx[3] = slot_ctx::ADDRESSED << slot_ctx::STATE_SHIFT | u32::from(id);
                let set_address = SetupPacket {
                    request_type: 0,
                    request: req::SET_ADDRESS,
                    value: u16::from(id),
                    index: 0,
                    length: 0,
                };
                // SET_ADDRESS cannot fail on the devices modelled here.
                let _ = dev.control(&set_address, &[]);
            }
        }
        let res = self.enable_ep(id, 1, octx.wrapping_add(CONTEXT_SIZE), &mut ep0_ctx, env);
        self.write_u32s(octx, &slot_ctx, env);
        self.write_u32s(octx.wrapping_add(CONTEXT_SIZE), &ep0_ctx, env);
        if let Some(slot) = self.slot_mut(id) {
            slot.addressed = true;
        }
        res
    }

    fn slot_ctx_addr(&self, id: u8) -> u64 {
        self.slot(id).map_or(0, |s| s.ctx)
    }

    fn configure_slot(&mut self, id: u8, ictx: u64, deconfigure: bool, env: &Env<'_>) -> CompletionCode {
        let octx = self.slot_ctx_addr(id);
        if deconfigure {
            for epid in 2..=31 {
                self.disable_ep(id, epid, env);
            }
            let mut slot: [u32; 4] = self.read_u32s(octx, env);
            slot[3] = slot_ctx::with_state(slot[3], slot_ctx::ADDRESSED);
            self.write_u32s(octx, &slot, env);
            return CompletionCode::Success;
        }
        let ictl: [u32; 2] = self.read_u32s(ictx, env);
        if ictl[0] & 3 != 0 || ictl[1] & 3 != 1 {
            return CompletionCode::TrbError;
        }
        let islot: [u32; 4] = self.read_u32s(ictx.wrapping_add(CONTEXT_SIZE), env);
        let mut slot: [u32; 4] = self.read_u32s(octx, env);
        if slot_ctx::state(slot[3]) < slot_ctx::ADDRESSED {
            return CompletionCode::ContextStateError;
        }
        for epid in 2..=31u8 {
            let bit = 1u32 << epid;
            if ictl[0] & bit != 0 {
                self.disable_ep(id, epid, env);
            }
            if ictl[1] & bit != 0 {
                let offset = CONTEXT_SIZE * (u64::from(epid) + 1);
                let mut ep: [u32; 5] = self.read_u32s(ictx.wrapping_add(offset), env);
                let out = octx.wrapping_add(CONTEXT_SIZE * u64::from(epid));
                let res = self.enable_ep(id, epid, out, &mut ep, env);
                if res != CompletionCode::Success {
                    return res;
                }
                self.write_u32s(out, &ep, env);
            }
        }
        let entries = slot_ctx::ENTRIES_MASK << slot_ctx::ENTRIES_SHIFT;
        slot[3] = slot_ctx::with_state(slot[3], slot_ctx::CONFIGURED);
        slot[0] = (slot[0] & !entries) | (islot[0] & entries);
        self.write_u32s(octx, &slot, env);
        CompletionCode::Success
    }

    fn evaluate_slot(&mut self, id: u8, ictx: u64, env: &Env<'_>) -> CompletionCode {
        let octx = self.slot_ctx_addr(id);
        let ictl: [u32; 2] = self.read_u32s(ictx, env);
        if ictl[0] != 0 || ictl[1] & !3 != 0 {
            return CompletionCode::TrbError;
        }
        if ictl[1] & 1 != 0 {
            let islot: [u32; 4] = self.read_u32s(ictx.wrapping_add(CONTEXT_SIZE), env);
            let mut slot: [u32; 4] = self.read_u32s(octx, env);
            // Max exit latency and the interrupter target.
            slot[1] = (slot[1] & !0xffff) | (islot[1] & 0xffff);
            let intr = slot_ctx::interrupter(islot[2]);
            if let Some(s) = self.slot_mut(id) {
                s.intr = intr;
            }
            slot[2] = (slot[2] & !(0x3ff << 22)) | (u32::from(intr) << 22);
            self.write_u32s(octx, &slot, env);
        }
        if ictl[1] & 2 != 0 {
            let iep0: [u32; 5] = self.read_u32s(ictx.wrapping_add(2 * CONTEXT_SIZE), env);
            let out = octx.wrapping_add(CONTEXT_SIZE);
            let mut ep0: [u32; 5] = self.read_u32s(out, env);
            // Max packet size.
            ep0[1] = (ep0[1] & 0xffff) | (iep0[1] & 0xffff_0000);
            self.write_u32s(out, &ep0, env);
        }
        CompletionCode::Success
    }

    fn reset_slot(&mut self, id: u8, env: &Env<'_>) -> CompletionCode {
        let octx = self.slot_ctx_addr(id);
        for epid in 2..=31 {
            self.disable_ep(id, epid, env);
        }
        let mut slot: [u32; 4] = self.read_u32s(octx, env);
        slot[3] = slot_ctx::with_state(slot[3], slot_ctx::DEFAULT);
        self.write_u32s(octx, &slot, env);
        CompletionCode::Success
    }

    fn stop_ep(&mut self, id: u8, epid: u8, env: &Env<'_>, fx: &mut Effects) -> CompletionCode {
        if !(1..=31).contains(&epid) {
            return CompletionCode::TrbError;
        }
        let Some(mut ep) = self.take_ep(id, epid) else {
            return CompletionCode::EpNotEnabledError;
        };
        // A NAKed transfer waiting for data ends with "stopped".
        if let Some(xfer) = ep.retry.take() {
            self.xfer_report(id, epid, &xfer.trbs, CompletionCode::Stopped, 0, env, fx);
        }
        self.set_ep_state(&mut ep, EpState::Stopped, env);
        self.put_ep(id, epid, ep);
        CompletionCode::Success
    }

    fn reset_ep(&mut self, id: u8, epid: u8, env: &Env<'_>) -> CompletionCode {
        if !(1..=31).contains(&epid) {
            return CompletionCode::TrbError;
        }
        let Some(mut ep) = self.take_ep(id, epid) else {
            return CompletionCode::EpNotEnabledError;
        };
        let res = if ep.state != EpState::Halted {
            CompletionCode::ContextStateError
        } else {
            ep.retry = None;
            if self.slot_device_present(id) {
                self.set_ep_state(&mut ep, EpState::Stopped, env);
                CompletionCode::Success
            } else {
                CompletionCode::UsbTransactionError
            }
        };
        self.put_ep(id, epid, ep);
        res
    }

    fn set_tr_dequeue(&mut self, id: u8, epid: u8, dequeue: u64, env: &Env<'_>) -> CompletionCode {
        if !(1..=31).contains(&epid) {
            return CompletionCode::TrbError;
        }
        let Some(mut ep) = self.take_ep(id, epid) else {
            return CompletionCode::EpNotEnabledError;
        };
        let res = if ep.state != EpState::Stopped {
            CompletionCode::ContextStateError
        } else {
            ep.ring = Ring {
                dequeue: dequeue & !0xf,
                ccs: dequeue & 1 != 0,
            };
            self.set_ep_state(&mut ep, EpState::Stopped, env);
            CompletionCode::Success
        };
        self.put_ep(id, epid, ep);
        res
    }

    /// QEMU answers 80 % for every port.
    fn get_port_bandwidth(&mut self, ctx: u64, env: &Env<'_>) -> CompletionCode {
        let mut table = vec![80u8; self.ports.len() + 1];
        table[0] = 0;
        match env.dma.write(ctx, &table) {
            Ok(()) => CompletionCode::Success,
            Err(_) => CompletionCode::TrbError,
        }
    }

    /// Whether slot `id`'s device is (still) plugged in.
    pub(super) fn slot_device_present(&self, id: u8) -> bool {
        self.slot(id)
            .and_then(|s| s.usb_port)
            .and_then(|u| self.devices.get(u))
            .is_some_and(Option::is_some)
    }

    /// Rebuilds slots and endpoints from guest memory after a load (QEMU's
    /// `usb_xhci_post_load`): each addressed slot's output context is read
    /// back through DCBAAP, its device found by root port; a slot whose
    /// device is not there is disabled. Running endpoints are kicked.
    pub(super) fn post_load(&mut self, env: &Env<'_>) -> Effects {
        self.pending_post_load = false;
        let mut fx = Effects::default();
        let dcbaap = self.dcbaap();
        let mut kicks = Vec::new();
        for id in 1..=self.slots.len() as u8 {
            if !self.slot(id).is_some_and(|s| s.addressed) {
                continue;
            }
            let ctx = env.dma.read_u64(dcbaap.wrapping_add(8 * u64::from(id))).unwrap_or(0);
            let slot_words: [u32; 4] = self.read_u32s(ctx, env);
            let Some(usb_port) = self.lookup_usb_port(&slot_words) else {
                if let Some(slot) = self.slot_mut(id) {
                    *slot = Slot::default();
                }
                continue;
            };
            if let Some(slot) = self.slot_mut(id) {
                slot.ctx = ctx;
                slot.usb_port = Some(usb_port);
            }
            for epid in 1..=31u8 {
                let pctx = ctx.wrapping_add(CONTEXT_SIZE * u64::from(epid));
                let words: [u32; 5] = self.read_u32s(pctx, env);
                let state = EpState::from_bits(words[0]);
                if state == EpState::Disabled {
                    continue;
                }
                let streams = if self.cfg.streams { 7 } else { 0 };
                let mut ep = Endpoint::from_context(pctx, &words, streams);
                ep.state = state;
                if state == EpState::Running {
                    kicks.push((id, epid));
                }
                self.put_ep(id, epid, ep);
            }
        }
        for (id, epid) in kicks {
            self.kick_ep(id, epid, 0, env, &mut fx);
        }
        fx
    }
}
