//! Transfer rings: taking transfer descriptors off an endpoint's ring,
//! running them against the device (control: setup/data/status stages;
//! bulk and interrupt: normal TRBs), moving the data through guest memory,
//! and reporting Transfer events as QEMU does (`xhci_kick_epctx`,
//! `xhci_xfer_report`). Isochronous endpoints and streams are not run.

use super::core::{Effects, Env, XhciCore};
use super::intr::Event;
use super::ring::{Chain, RingTrb};
use super::slot::{Endpoint, EpState, EpType, Transfer};
use super::trb::{CompletionCode, TrbType, bits};
use crate::usb::device::{PacketError, SetupPacket, control_transfer};

/// Transfer descriptors run per kick before QEMU stops.
pub const TRANSFER_LIMIT: u32 = 256;
/// The largest descriptor (bytes) moved through a host buffer; QEMU maps
/// guest memory instead of copying and has no such bound.
pub const MAX_TRANSFER: usize = 4 << 20;

/// How running a transfer descriptor ended.
enum Outcome {
    /// Done (successfully or not); events written.
    Complete,
    /// The device had nothing: keep it for the next kick.
    Nak,
    /// It could not be set up (malformed, no device, unmappable); no event.
    Failed,
}

/// A transfer descriptor turned into a USB packet.
struct Packet {
    /// A control transfer's SETUP stage.
    setup: Option<SetupPacket>,
    /// Data moves to the host.
    dir_in: bool,
    /// Guest buffers, in order.
    sgl: Vec<(u64, u32)>,
}

impl Packet {
    fn size(&self) -> usize {
        self.sgl.iter().map(|&(_, len)| len as usize).sum()
    }
}

impl XhciCore {
    /// Kicks endpoint `epid` of slot `id` (QEMU's `xhci_kick_ep`).
    pub(super) fn kick_ep(&mut self, id: u8, epid: u8, _stream: u16, env: &Env<'_>, fx: &mut Effects) {
        if !self.slot(id).is_some_and(|s| s.enabled) {
            return;
        }
        let Some(mut ep) = self.take_ep(id, epid) else { return };
        self.kick_epctx(id, epid, &mut ep, env, fx);
        self.put_ep(id, epid, ep);
    }

    fn kick_epctx(&mut self, id: u8, epid: u8, ep: &mut Endpoint, env: &Env<'_>, fx: &mut Effects) {
        // A device unplugged behind the guest's back: do nothing.
        if !self.slot_device_present(id) {
            return;
        }
        if let Some(xfer) = ep.retry.take() {
            match self.run_td(id, epid, ep, &xfer, env, fx) {
                Outcome::Complete => {
                    let state = ep.state;
                    self.set_ep_state(ep, state, env);
                }
                Outcome::Nak | Outcome::Failed => {
                    ep.retry = Some(xfer);
                    return;
                }
            }
        }
        // Streams are not modelled: the ring pointer of such an endpoint
        // is a stream context array, not TRBs.
        if ep.state == EpState::Halted || ep.max_pstreams != 0 {
            return;
        }
        self.set_ep_state(ep, EpState::Running, env);
        if ep.ring.dequeue == 0 {
            return;
        }
        let mut count = 0;
        while let Chain::Complete(length) = ep.ring.chain_length(env.dma) {
            let mut trbs = Vec::with_capacity(length);
            for _ in 0..length {
                match ep.ring.fetch(env.dma) {
                    Some(t) if t.trb.type_code() != 0 => trbs.push(t),
                    _ => {
                        self.die();
                        return;
                    }
                }
            }
            let xfer = Transfer { trbs };
            let outcome = self.run_td(id, epid, ep, &xfer, env, fx);
            if !self.slot_device_present(id) {
                break;
            }
            match outcome {
                Outcome::Complete => {
                    let state = ep.state;
                    self.set_ep_state(ep, state, env);
                }
                // QEMU keeps such a transfer queued but never runs it again.
                Outcome::Failed => {}
                Outcome::Nak => {
                    if ep.state != EpState::Halted {
                        ep.retry = Some(xfer);
                    }
                    break;
                }
            }
            if ep.state == EpState::Halted {
                break;
            }
            let over = count > TRANSFER_LIMIT;
            count += 1;
            if over {
                break;
            }
        }
    }

    /// Runs one transfer descriptor against the slot's device.
    fn run_td(
        &mut self,
        id: u8,
        epid: u8,
        ep: &mut Endpoint,
        xfer: &Transfer,
        env: &Env<'_>,
        fx: &mut Effects,
    ) -> Outcome {
        let packet = if epid == 1 {
            self.control_packet(&xfer.trbs)
        } else {
            self.data_packet(ep.kind, &xfer.trbs)
        };
        let Some(packet) = packet else {
            return Outcome::Failed;
        };
        let Some(result) = self.exchange(id, epid, &packet, env) else {
            return Outcome::Failed;
        };
        let status = match result {
            Ok(actual) => {
                self.xfer_report(id, epid, &xfer.trbs, CompletionCode::Success, actual, env, fx);
                return Outcome::Complete;
            }
            Err(PacketError::Nak) => return Outcome::Nak,
            Err(PacketError::Stall) => CompletionCode::StallError,
            Err(PacketError::Babble) => CompletionCode::BabbleDetected,
            Err(PacketError::IoError | PacketError::NoDevice) => CompletionCode::UsbTransactionError,
        };
        self.xfer_report(id, epid, &xfer.trbs, status, 0, env, fx);
        self.stall_ep(ep, &xfer.trbs, env);
        Outcome::Complete
    }

    /// A control transfer descriptor checked as QEMU checks it: SETUP
    /// first (immediate, 8 bytes), STATUS last (an Event Data TRB may
    /// follow it).
    fn control_packet(&mut self, trbs: &[RingTrb]) -> Option<Packet> {
        let first = trbs.first()?;
        let mut last = trbs.len() - 1;
        if trbs[last].trb.type_code() == TrbType::EventData as u8 && trbs.len() > 2 {
            last -= 1;
        }
        let setup_trb = first.trb;
        let ok = setup_trb.type_code() == TrbType::Setup as u8
            && trbs[last].trb.type_code() == TrbType::Status as u8
            && setup_trb.control & bits::TR_IDT != 0
            && setup_trb.transfer_length() == 8;
        if !ok {
            return None;
        }
        let setup = SetupPacket::from_u64(setup_trb.parameter);
        let sgl = self.create_sgl(trbs, setup.is_in())?;
        Some(Packet {
            setup: Some(setup),
            dir_in: setup.is_in(),
            sgl,
        })
    }

    fn data_packet(&mut self, kind: EpType, trbs: &[RingTrb]) -> Option<Packet> {
        match kind {
            EpType::BulkIn | EpType::BulkOut | EpType::IntrIn | EpType::IntrOut => {}
            // Isochronous transfers are not run; invalid types never were.
            EpType::Invalid | EpType::Control | EpType::IsoIn | EpType::IsoOut => return None,
        }
        let dir_in = kind.is_in();
        let sgl = self.create_sgl(trbs, dir_in)?;
        Some(Packet {
            setup: None,
            dir_in,
            sgl,
        })
    }

    /// The guest buffers of a descriptor (QEMU's `xhci_xfer_create_sgl`):
    /// a Data stage against the transfer's direction, or immediate data on
    /// IN or over 8 bytes, is a host controller error.
    fn create_sgl(&mut self, trbs: &[RingTrb], dir_in: bool) -> Option<Vec<(u64, u32)>> {
        let mut sgl = Vec::new();
        for t in trbs {
            let kind = t.trb.type_code();
            if kind == TrbType::Data as u8 && (t.trb.control & bits::TR_DIR != 0) != dir_in {
                self.die();
                return None;
            }
            let data = [TrbType::Data as u8, TrbType::Normal as u8, TrbType::Isoch as u8];
            if !data.contains(&kind) {
                continue;
            }
            let len = t.trb.transfer_length();
            if t.trb.control & bits::TR_IDT != 0 {
                if len > 8 || dir_in {
                    self.die();
                    return None;
                }
                // Immediate data sits in the TRB's own parameter field.
                sgl.push((t.addr, len));
            } else {
                sgl.push((t.trb.parameter, len));
            }
        }
        Some(sgl)
    }

    /// Moves a packet's data between guest memory and the device. `None`
    /// when it could not be set up (no device, buffers out of memory).
    fn exchange(&mut self, id: u8, epid: u8, packet: &Packet, env: &Env<'_>) -> Option<Result<usize, PacketError>> {
        let usb_port = self.slot(id)?.usb_port?;
        let size = packet.size();
        if size > MAX_TRANSFER {
            return None;
        }
        let out = if packet.dir_in {
            // QEMU maps the buffers before the device runs: check them.
            for &(addr, len) in &packet.sgl {
                let mut b = [0u8; 1];
                let end = addr.wrapping_add(u64::from(len).saturating_sub(1));
                if len > 0 && (env.dma.read(addr, &mut b).is_err() || env.dma.read(end, &mut b).is_err()) {
                    return None;
                }
            }
            Vec::new()
        } else {
            // A control OUT stage hands the device wLength bytes at most.
            let want = packet.setup.map_or(size, |s| usize::from(s.length).min(size));
            let mut out = vec![0u8; want];
            let mut at = 0;
            for &(addr, len) in &packet.sgl {
                let take = (len as usize).min(want - at);
                if take == 0 {
                    break;
                }
                env.dma.read(addr, &mut out[at..at + take]).ok()?;
                at += take;
            }
            out
        };
        let dev = self.devices.get_mut(usb_port)?.as_mut()?;
        let answer = match packet.setup {
            Some(setup) => control_transfer(dev.as_mut(), &setup, &out).map(|data| {
                if packet.dir_in {
                    data
                } else {
                    // An OUT data stage counts what the device was given.
                    out
                }
            }),
            None if packet.dir_in => dev.data_in(epid >> 1, size),
            None => dev.data_out(epid >> 1, &out).map(|()| out),
        };
        let data = match answer {
            Ok(data) => data,
            Err(e) => return Some(Err(e)),
        };
        if !packet.dir_in {
            return Some(Ok(data.len()));
        }
        let n = data.len().min(size);
        let mut at = 0;
        for &(addr, len) in &packet.sgl {
            if at >= n {
                break;
            }
            let take = (len as usize).min(n - at);
            if env.dma.write(addr, &data[at..at + take]).is_err() {
                self.die();
                return None;
            }
            at += take;
        }
        Some(Ok(n))
    }

    /// Transfer events for a finished descriptor (QEMU's
    /// `xhci_xfer_report`): one where a TRB asks (IOC; ISP on a short
    /// packet), or at the first TRB after the data ran out on an error.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn xfer_report(
        &mut self,
        id: u8,
        epid: u8,
        trbs: &[RingTrb],
        status: CompletionCode,
        actual: usize,
        env: &Env<'_>,
        fx: &mut Effects,
    ) {
        let mut edtla: u32 = 0;
        let mut left = u32::try_from(actual).unwrap_or(u32::MAX);
        let mut reported = false;
        let mut short = false;
        let ok = status == CompletionCode::Success;
        for t in trbs {
            let kind = TrbType::try_from(t.trb.type_code()).ok();
            let mut chunk = 0;
            match kind {
                Some(TrbType::Setup) => chunk = t.trb.transfer_length().min(8),
                Some(TrbType::Data | TrbType::Normal | TrbType::Isoch) => {
                    chunk = t.trb.transfer_length();
                    if chunk > left {
                        chunk = left;
                        if ok {
                            short = true;
                        }
                    }
                    left -= chunk;
                    edtla = edtla.wrapping_add(chunk);
                }
                Some(TrbType::Status) => {
                    reported = false;
                    short = false;
                }
                _ => {}
            }
            let control = t.trb.control;
            let wanted = control & bits::TR_IOC != 0 || (short && control & bits::TR_ISP != 0) || (!ok && left == 0);
            if !reported && wanted {
                let mut ev = Event::new(TrbType::Transfer, status);
                ev.slot_id = id;
                ev.ep_id = epid;
                ev.length = t.trb.transfer_length() - chunk;
                ev.ptr = t.addr;
                if ok && short {
                    ev.ccode = CompletionCode::ShortPacket;
                }
                if kind == Some(TrbType::EventData) {
                    ev.ptr = t.trb.parameter;
                    ev.flags |= bits::EV_ED;
                    ev.length = edtla & 0xff_ffff;
                    edtla = 0;
                }
                self.event(ev, t.trb.interrupter(), env, fx);
                reported = true;
                if !ok {
                    return;
                }
            }
            if kind == Some(TrbType::Setup) {
                reported = false;
                short = false;
            }
        }
    }

    /// Halts the endpoint with its dequeue pointer back at the failed
    /// descriptor (isochronous endpoints never halt).
    fn stall_ep(&mut self, ep: &mut Endpoint, trbs: &[RingTrb], env: &Env<'_>) {
        if ep.kind.is_iso() {
            return;
        }
        if let Some(first) = trbs.first() {
            ep.ring.dequeue = first.addr;
            ep.ring.ccs = first.ccs;
        }
        self.set_ep_state(ep, EpState::Halted, env);
    }
}
