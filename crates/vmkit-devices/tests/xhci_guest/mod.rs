//! A small xHCI guest driver for the tests: it lays out DCBAA, a command
//! ring, one event ring segment and transfer rings in a `TestMemory`,
//! programs the controller as Linux does, and reads events back.

#![allow(dead_code)]

use vmkit_devices::dma::{Dma, TestMemory};
use vmkit_devices::pci::MsiMessage;
use vmkit_devices::pci::PciEffects;
use vmkit_devices::usb::xhci::slot::CONTEXT_SIZE;
use vmkit_devices::usb::xhci::trb::bits;
use vmkit_devices::usb::xhci::{Env, Trb, TrbType, XhciPci, XhciPciConfig};
use vmkit_devices::usb::{SetupPacket, UsbError};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub const MEM: usize = 0x10_0000;
pub const DCBAA: u64 = 0x1000;
pub const CMD_RING: u64 = 0x2000;
/// TRBs in the command ring before its link TRB.
pub const CMD_TRBS: u64 = 32;
pub const ERST: u64 = 0x3000;
pub const EVENT_RING: u64 = 0x4000;
pub const EVENT_TRBS: u32 = 16;
pub const INPUT_CTX: u64 = 0x8000;
pub const OUT_CTX: u64 = 0x1_0000;
pub const RINGS: u64 = 0x5_0000;
pub const BUFFERS: u64 = 0x9_0000;
/// TRBs per transfer ring before its link TRB.
pub const RING_TRBS: u64 = 16;

pub const OPER: u64 = 0x40;
pub const USBCMD: u64 = OPER;
pub const USBSTS: u64 = OPER + 0x04;
pub const CRCR: u64 = OPER + 0x18;
pub const DCBAAP: u64 = OPER + 0x30;
pub const CONFIG: u64 = OPER + 0x38;
pub const RUNTIME: u64 = 0x1000;
pub const IR0: u64 = RUNTIME + 0x20;
pub const IMAN: u64 = IR0;
pub const ERSTSZ: u64 = IR0 + 0x08;
pub const ERSTBA: u64 = IR0 + 0x10;
pub const ERDP: u64 = IR0 + 0x18;
pub const DOORBELL: u64 = 0x2000;

pub fn portsc_offset(port: u8) -> u64 {
    0x440 + 0x10 * (u64::from(port) - 1)
}

/// A transfer ring the guest produces on.
#[derive(Debug, Clone, Copy)]
pub struct TransferRing {
    pub base: u64,
    pub enqueue: u64,
    pub cycle: bool,
}

/// The guest.
pub struct Guest {
    pub mem: TestMemory,
    pub dev: XhciPci,
    pub now: i64,
    cmd_enqueue: u64,
    cmd_cycle: bool,
    ev_dequeue: u32,
    ev_cycle: bool,
    pub rings: std::collections::HashMap<(u8, u8), TransferRing>,
    pub messages: Vec<MsiMessage>,
    pub intx: bool,
}

pub fn env(mem: &TestMemory, now: i64) -> Env<'_> {
    Env { dma: mem, now_ns: now }
}

impl Guest {
    pub fn new(cfg: XhciPciConfig) -> Res<Guest> {
        Ok(Guest {
            mem: TestMemory::new(MEM),
            dev: XhciPci::new(cfg)?,
            now: 1_000_000,
            cmd_enqueue: CMD_RING,
            cmd_cycle: true,
            ev_dequeue: 0,
            ev_cycle: true,
            rings: Default::default(),
            messages: Vec::new(),
            intx: false,
        })
    }

    pub fn default_config() -> Res<Guest> {
        Guest::new(XhciPciConfig::default())
    }

    fn note(&mut self, fx: PciEffects) {
        self.messages.extend(fx.messages);
        if let Some(level) = fx.intx {
            self.intx = level;
        }
    }

    pub fn read(&mut self, offset: u64, size: u8) -> Result<u64, UsbError> {
        let env = env(&self.mem, self.now);
        self.dev.bar0_read(offset, size, &env)
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), UsbError> {
        let env = env(&self.mem, self.now);
        let fx = self.dev.bar0_write(offset, size, value, &env)?;
        self.note(fx);
        Ok(())
    }

    pub fn r32(&mut self, offset: u64) -> Res<u32> {
        Ok(self.read(offset, 4)? as u32)
    }

    pub fn w32(&mut self, offset: u64, value: u32) -> TestResult {
        Ok(self.write(offset, 4, u64::from(value))?)
    }

    pub fn w64(&mut self, offset: u64, value: u64) -> TestResult {
        Ok(self.write(offset, 8, value)?)
    }

    pub fn cfg_write(&mut self, offset: u16, size: u8, value: u32) -> TestResult {
        let fx = self.dev.config_write(offset, size, value)?;
        self.note(fx);
        Ok(())
    }

    pub fn attach(&mut self, port: usize, dev: Box<dyn vmkit_devices::usb::UsbDevice>) -> TestResult {
        let env = env(&self.mem, self.now);
        let fx = self.dev.attach(port, dev, &env)?;
        self.note(fx);
        Ok(())
    }

    pub fn detach(&mut self, port: usize) -> TestResult {
        let env = env(&self.mem, self.now);
        let (_, fx) = self.dev.detach(port, &env)?;
        self.note(fx);
        Ok(())
    }

    pub fn wakeup(&mut self, port: usize, ep: u8) {
        let env = env(&self.mem, self.now);
        let fx = self.dev.wakeup(port, ep, &env);
        self.note(fx);
    }

    pub fn put_trb(&self, addr: u64, trb: Trb) -> TestResult {
        Ok(self.mem.write(addr, &trb.to_bytes())?)
    }

    pub fn get_trb(&self, addr: u64) -> Res<Trb> {
        let mut b = [0u8; 16];
        self.mem.read(addr, &mut b)?;
        Ok(Trb::from_bytes(&b))
    }

    /// Programs the event ring of interrupter 0 (one segment).
    pub fn setup_event_ring(&mut self, trbs: u32) -> TestResult {
        self.mem.write_u64(ERST, EVENT_RING)?;
        self.mem.write_u32(ERST + 8, trbs)?;
        self.w32(ERSTSZ, 1)?;
        self.w64(ERDP, EVENT_RING)?;
        self.w64(ERSTBA, ERST)?;
        self.ev_dequeue = 0;
        self.ev_cycle = true;
        Ok(())
    }

    /// Resets and starts the controller as a driver does.
    pub fn start(&mut self) -> TestResult {
        self.w32(USBCMD, 0x2)?; // HCRST
        self.w32(CONFIG, 64)?;
        self.w64(DCBAAP, DCBAA)?;
        // Command ring: link back to the start, toggling the cycle.
        self.put_trb(
            CMD_RING + CMD_TRBS * 16,
            Trb::new(TrbType::Link, CMD_RING, 0, bits::LINK_TC),
        )?;
        self.w64(CRCR, CMD_RING | 1)?;
        self.setup_event_ring(EVENT_TRBS)?;
        self.w32(IMAN, 0x2)?; // IE
        self.w32(USBCMD, 0x1 | 0x4)?; // RS | INTE
        Ok(())
    }

    /// Queues a command (cycle bit set by the ring) without ringing.
    pub fn queue_command(&mut self, trb: Trb) -> TestResult {
        let mut trb = trb;
        trb.control = (trb.control & !bits::C) | u32::from(self.cmd_cycle);
        self.put_trb(self.cmd_enqueue, trb)?;
        self.cmd_enqueue += 16;
        if self.cmd_enqueue == CMD_RING + CMD_TRBS * 16 {
            let link = self.get_trb(self.cmd_enqueue)?;
            let mut link = link;
            link.control = (link.control & !bits::C) | u32::from(self.cmd_cycle);
            self.put_trb(self.cmd_enqueue, link)?;
            self.cmd_enqueue = CMD_RING;
            self.cmd_cycle = !self.cmd_cycle;
        }
        Ok(())
    }

    /// Runs one command; returns its completion event.
    pub fn command(&mut self, trb: Trb) -> Res<Trb> {
        self.queue_command(trb)?;
        self.w32(DOORBELL, 0)?;
        let ev = self.next_event()?.ok_or("no command completion")?;
        Ok(ev)
    }

    /// The next event, if the controller wrote one; ERDP is advanced and
    /// EHB cleared as a driver does.
    pub fn next_event(&mut self) -> Res<Option<Trb>> {
        let addr = EVENT_RING + 16 * u64::from(self.ev_dequeue);
        let trb = self.get_trb(addr)?;
        if trb.cycle() != self.ev_cycle {
            return Ok(None);
        }
        self.ev_dequeue += 1;
        if self.ev_dequeue == self.event_ring_size()? {
            self.ev_dequeue = 0;
            self.ev_cycle = !self.ev_cycle;
        }
        let erdp = EVENT_RING + 16 * u64::from(self.ev_dequeue);
        self.w64(ERDP, erdp | 0x8)?;
        Ok(Some(trb))
    }

    fn event_ring_size(&self) -> Res<u32> {
        Ok(self.mem.read_u32(ERST + 8)?)
    }

    /// Every event waiting.
    pub fn events(&mut self) -> Res<Vec<Trb>> {
        let mut out = Vec::new();
        while let Some(ev) = self.next_event()? {
            out.push(ev);
        }
        Ok(out)
    }

    pub fn enable_slot(&mut self) -> Res<u8> {
        let ev = self.command(Trb::new(TrbType::EnableSlot, 0, 0, 0))?;
        if ccode(&ev) != 1 {
            return Err(format!("enable slot: completion code {}", ccode(&ev)).into());
        }
        Ok(ev.slot_id())
    }

    /// Writes an input context for Address Device: slot context naming
    /// root port `port`, endpoint 0 with a transfer ring.
    pub fn address_input(&mut self, slot: u8, port: u8, max_packet: u16) -> Res<u64> {
        let ictx = INPUT_CTX;
        self.mem.write(ictx, &[0u8; 33 * 32])?;
        self.mem.write_u32(ictx, 0)?;
        self.mem.write_u32(ictx + 4, 0x3)?;
        // Slot: one context entry, speed, root hub port.
        self.mem.write_u32(ictx + 32, 1 << 27)?;
        self.mem.write_u32(ictx + 32 + 4, u32::from(port) << 16)?;
        let ring = self.new_ring(slot, 1)?;
        // EP0: control, CErr 3, max packet size.
        self.mem
            .write_u32(ictx + 64 + 4, (u32::from(max_packet) << 16) | (4 << 3) | (3 << 1))?;
        self.mem.write_u64(ictx + 64 + 8, ring | 1)?;
        self.mem.write_u64(DCBAA + 8 * u64::from(slot), out_ctx(slot))?;
        Ok(ictx)
    }

    pub fn address_device(&mut self, slot: u8, port: u8, bsr: bool) -> Res<Trb> {
        let ictx = self.address_input(slot, port, 64)?;
        let bsr = if bsr { bits::CR_BSR } else { 0 };
        self.command(Trb::new(TrbType::AddressDevice, ictx, 0, u32::from(slot) << 24 | bsr))
    }

    /// Configure Endpoint adding interrupt IN endpoint 1 (DCI 3).
    pub fn configure_interrupt_in(&mut self, slot: u8) -> Res<Trb> {
        let ictx = INPUT_CTX;
        self.mem.write(ictx, &[0u8; 33 * 32])?;
        self.mem.write_u32(ictx + 4, 1 | 1 << 3)?;
        self.mem.write_u32(ictx + 32, 3 << 27)?;
        let ring = self.new_ring(slot, 3)?;
        let ep = ictx + 32 + 32 * 3;
        // Interval 2^3, interrupt IN, max packet 8.
        self.mem.write_u32(ep, 3 << 16)?;
        self.mem.write_u32(ep + 4, (8 << 16) | (7 << 3) | (3 << 1))?;
        self.mem.write_u64(ep + 8, ring | 1)?;
        self.command(Trb::new(TrbType::ConfigureEndpoint, ictx, 0, u32::from(slot) << 24))
    }

    /// A fresh transfer ring for slot/DCI, linked to itself.
    pub fn new_ring(&mut self, slot: u8, dci: u8) -> Res<u64> {
        let base = RINGS + (u64::from(slot) * 32 + u64::from(dci)) * 0x200;
        self.mem.write(base, &[0u8; 0x200])?;
        self.put_trb(base + RING_TRBS * 16, Trb::new(TrbType::Link, base, 0, bits::LINK_TC))?;
        self.rings.insert(
            (slot, dci),
            TransferRing {
                base,
                enqueue: base,
                cycle: true,
            },
        );
        Ok(base)
    }

    /// Queues TRBs on a transfer ring; returns their addresses.
    pub fn queue(&mut self, slot: u8, dci: u8, trbs: &[Trb]) -> Res<Vec<u64>> {
        let mut ring = *self.rings.get(&(slot, dci)).ok_or("no ring")?;
        let mut addrs = Vec::new();
        for trb in trbs {
            let mut trb = *trb;
            trb.control = (trb.control & !bits::C) | u32::from(ring.cycle);
            self.put_trb(ring.enqueue, trb)?;
            addrs.push(ring.enqueue);
            ring.enqueue += 16;
            if ring.enqueue == ring.base + RING_TRBS * 16 {
                let mut link = self.get_trb(ring.enqueue)?;
                link.control = (link.control & !bits::C) | u32::from(ring.cycle);
                self.put_trb(ring.enqueue, link)?;
                ring.enqueue = ring.base;
                ring.cycle = !ring.cycle;
            }
        }
        self.rings.insert((slot, dci), ring);
        Ok(addrs)
    }

    pub fn ring_doorbell(&mut self, slot: u8, dci: u8) -> TestResult {
        self.w32(DOORBELL + 4 * u64::from(slot), u32::from(dci))
    }

    /// A control transfer with an IN data stage of `len` bytes into
    /// `buf`; returns the events.
    pub fn control_in(&mut self, slot: u8, setup: SetupPacket, buf: u64) -> Res<Vec<Trb>> {
        let len = u32::from(setup.length);
        let trbs = [
            Trb::new(TrbType::Setup, setup.to_u64(), 8, bits::TR_IDT | (3 << 16)),
            Trb::new(TrbType::Data, buf, len, bits::TR_DIR | bits::TR_ISP),
            Trb::new(TrbType::Status, 0, 0, bits::TR_IOC),
        ];
        self.queue(slot, 1, &trbs)?;
        self.ring_doorbell(slot, 1)?;
        self.events()
    }

    /// A control transfer without data stage.
    pub fn control_nodata(&mut self, slot: u8, setup: SetupPacket) -> Res<Vec<Trb>> {
        let trbs = [
            Trb::new(TrbType::Setup, setup.to_u64(), 8, bits::TR_IDT),
            Trb::new(TrbType::Status, 0, 0, bits::TR_IOC | bits::TR_DIR),
        ];
        self.queue(slot, 1, &trbs)?;
        self.ring_doorbell(slot, 1)?;
        self.events()
    }

    pub fn mem_u32(&self, addr: u64) -> Res<u32> {
        Ok(self.mem.read_u32(addr)?)
    }

    pub fn mem_write_u32(&self, addr: u64, v: u32) -> TestResult {
        Ok(self.mem.write_u32(addr, v)?)
    }

    pub fn mem_u64(&self, addr: u64) -> Res<u64> {
        Ok(self.mem.read_u64(addr)?)
    }

    pub fn read_buf(&self, addr: u64, len: usize) -> Res<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.mem.read(addr, &mut b)?;
        Ok(b)
    }

    /// Enable Slot, Address Device and SET_CONFIGURATION(1) for the device
    /// on root port `port`; interrupt IN endpoint configured.
    pub fn bring_up(&mut self, port: u8) -> Res<u8> {
        let slot = self.enable_slot()?;
        let ev = self.address_device(slot, port, false)?;
        if ccode(&ev) != 1 {
            return Err(format!("address device: {}", ccode(&ev)).into());
        }
        let ev = self.configure_interrupt_in(slot)?;
        if ccode(&ev) != 1 {
            return Err(format!("configure endpoint: {}", ccode(&ev)).into());
        }
        let evs = self.control_nodata(slot, setup(0x00, 9, 1, 0, 0))?;
        if evs.len() != 1 || ccode(&evs[0]) != 1 {
            return Err(format!("set configuration: {evs:?}").into());
        }
        Ok(slot)
    }
}

pub fn out_ctx(slot: u8) -> u64 {
    OUT_CTX + u64::from(slot) * 0x800
}

/// The output endpoint context of `dci`.
pub fn ep_ctx(slot: u8, dci: u8) -> u64 {
    out_ctx(slot) + CONTEXT_SIZE * u64::from(dci)
}

pub fn setup(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> SetupPacket {
    SetupPacket {
        request_type,
        request,
        value,
        index,
        length,
    }
}

/// An event's completion code.
pub fn ccode(ev: &Trb) -> u8 {
    (ev.status >> 24) as u8
}

/// An event's residual length.
pub fn residual(ev: &Trb) -> u32 {
    ev.status & 0xff_ffff
}
