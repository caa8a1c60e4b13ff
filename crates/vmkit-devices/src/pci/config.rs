//! [`ConfigSpace`]: a function's configuration bytes with QEMU's three
//! masks, and the effects of guest writes as data.

use super::bar::{Bar, BarIndex, BarKind, BarMove};
use super::error::PciError;
use super::regs::{CONFIG_SPACE_SIZE, Command, HEADER_SIZE, HeaderReg, PCIE_CONFIG_SPACE_SIZE, Status};

/// Conventional (256 bytes) or PCI Express (4 KiB) configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigKind {
    /// 256 bytes.
    Conventional,
    /// 4096 bytes, extended capabilities from 0x100.
    Express,
}

impl ConfigKind {
    /// Bytes of configuration space.
    pub const fn size(self) -> usize {
        match self {
            ConfigKind::Conventional => CONFIG_SPACE_SIZE,
            ConfigKind::Express => PCIE_CONFIG_SPACE_SIZE,
        }
    }
}

/// What identifies a function: the read-only header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class << 16 | sub-class << 8 | programming interface.
    pub class_code: u32,
    /// Subsystem vendor ID (QEMU's default 0x1af4 when both are 0).
    pub subsystem_vendor_id: u16,
    /// Subsystem ID (QEMU's default 0x1100 when both are 0).
    pub subsystem_id: u16,
    /// Header type (0 for an endpoint), multi-function bit included.
    pub header_type: u8,
    /// Interrupt pin: 0 none, 1–4 INTA–INTD.
    pub interrupt_pin: u8,
}

/// What a configuration write (or a reset, or a load) changed that the
/// owner must act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEffects {
    /// BARs that moved, removals first.
    pub bar_moves: Vec<BarMove>,
    /// Bus mastering was turned on (`Some(true)`) or off (`Some(false)`):
    /// the device's DMA and MSI follow Command.MASTER.
    pub bus_master: Option<bool>,
    /// Command.INTX_DISABLE changed: re-evaluate the INTx pin.
    pub intx_disable: Option<bool>,
}

impl ConfigEffects {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bar_moves.is_empty() && self.bus_master.is_none() && self.intx_disable.is_none()
    }
}

/// A function's configuration space, as QEMU models it: the bytes, and per
/// byte `wmask` (what a guest may change), `w1cmask` (what a guest clears
/// by writing 1) and `cmask` (what must match on an incoming migration).
/// Also the BARs declared and where each is mapped, and which bytes of the
/// conventional space a capability (or the header) uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    config: Box<[u8]>,
    wmask: Box<[u8]>,
    w1cmask: Box<[u8]>,
    cmask: Box<[u8]>,
    used: [bool; CONFIG_SPACE_SIZE],
    bars: [Option<Bar>; 7],
    mapped: [Option<u64>; 7],
}

const BARS: std::ops::Range<usize> = 0x10..0x28;
const ROM: std::ops::Range<usize> = 0x30..0x34;
const COMMAND: std::ops::Range<usize> = 0x04..0x06;

fn overlaps(a: &std::ops::Range<usize>, start: usize, len: usize) -> bool {
    start < a.end && a.start < start + len
}

impl ConfigSpace {
    /// A space of `kind` for a function identified by `id`, with QEMU's
    /// default masks: the guest may change the Command bits IO, MEMORY,
    /// MASTER, SERR and INTX_DISABLE, the cache line size, the interrupt
    /// line and every byte past the header (until a capability claims it);
    /// it clears Status error bits by writing 1; a migration must agree on
    /// the identity, Status.CAP_LIST and the capability pointer.
    pub fn new(kind: ConfigKind, id: Identity) -> ConfigSpace {
        let len = kind.size();
        let mut s = ConfigSpace {
            config: vec![0; len].into_boxed_slice(),
            wmask: vec![0; len].into_boxed_slice(),
            w1cmask: vec![0; len].into_boxed_slice(),
            cmask: vec![0; len].into_boxed_slice(),
            used: [false; CONFIG_SPACE_SIZE],
            bars: [None; 7],
            mapped: [None; 7],
        };
        let (svid, ssid) = match (id.subsystem_vendor_id, id.subsystem_id) {
            (0, 0) => (0x1af4, 0x1100),
            ids => ids,
        };
        s.put_word(HeaderReg::VendorId.offset(), id.vendor_id);
        s.put_word(HeaderReg::DeviceId.offset(), id.device_id);
        s.config[HeaderReg::Revision.offset()] = id.revision;
        s.config[HeaderReg::ProgIf.offset()] = id.class_code as u8;
        s.put_word(HeaderReg::ClassDevice.offset(), (id.class_code >> 8) as u16);
        s.config[HeaderReg::HeaderType.offset()] = id.header_type;
        s.put_word(HeaderReg::SubsystemVendorId.offset(), svid);
        s.put_word(HeaderReg::SubsystemId.offset(), ssid);
        s.config[HeaderReg::InterruptPin.offset()] = id.interrupt_pin;

        s.wmask[HeaderReg::CacheLineSize.offset()] = 0xff;
        s.wmask[HeaderReg::InterruptLine.offset()] = 0xff;
        put_word(&mut s.wmask, HeaderReg::Command.offset(), Command::WRITABLE.bits());
        s.wmask[HEADER_SIZE..].fill(0xff);
        put_word(
            &mut s.w1cmask,
            HeaderReg::Status.offset(),
            Status::WRITE_ONE_TO_CLEAR.bits(),
        );
        put_word(&mut s.cmask, HeaderReg::VendorId.offset(), 0xffff);
        put_word(&mut s.cmask, HeaderReg::DeviceId.offset(), 0xffff);
        s.cmask[HeaderReg::Status.offset()] = Status::CAP_LIST.bits() as u8;
        s.cmask[HeaderReg::Revision.offset()] = 0xff;
        s.cmask[HeaderReg::ProgIf.offset()] = 0xff;
        put_word(&mut s.cmask, HeaderReg::ClassDevice.offset(), 0xffff);
        s.cmask[HeaderReg::HeaderType.offset()] = 0xff;
        s.cmask[HeaderReg::CapabilityList.offset()] = 0xff;
        s.used[..HEADER_SIZE].fill(true);
        s
    }

    /// Bytes of configuration space.
    pub fn len(&self) -> usize {
        self.config.len()
    }

    /// Never: a configuration space has at least 256 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bytes, as a migration saves them.
    pub fn bytes(&self) -> &[u8] {
        &self.config
    }

    /// The Command register.
    pub fn command(&self) -> Command {
        Command::from_bits_retain(self.word(HeaderReg::Command.offset()))
    }

    /// The Status register.
    pub fn status(&self) -> Status {
        Status::from_bits_retain(self.word(HeaderReg::Status.offset()))
    }

    /// Sets or clears Status bits from the device side (INTERRUPT, or an
    /// error it signals); no guest mask applies.
    pub fn set_status(&mut self, bits: Status, on: bool) {
        let mut status = self.status();
        status.set(bits, on);
        self.put_word(HeaderReg::Status.offset(), status.bits());
    }

    /// Where BAR `index` is mapped, if it is.
    pub fn bar_mapping(&self, index: BarIndex) -> Option<u64> {
        self.mapped[index.number() as usize]
    }

    /// The BAR declared at `index`.
    pub fn bar(&self, index: BarIndex) -> Option<Bar> {
        self.bars[index.number() as usize]
    }

    /// Declares BAR `index` (QEMU's `pci_register_bar`): its register reads
    /// back the type bits, and the guest may write the address bits above
    /// its size (so the all-ones probe reads `~(size - 1)` and the type).
    pub fn register_bar(&mut self, index: BarIndex, bar: Bar) -> Result<(), PciError> {
        bar.check(index)?;
        let n = index.number() as usize;
        let taken = self.bars[n].is_some() || (n > 0 && self.bars[n - 1].is_some_and(|b| b.kind == BarKind::Mem64));
        let high_taken = bar.kind == BarKind::Mem64 && self.bars.get(n + 1).is_some_and(Option::is_some);
        if taken || high_taken {
            return Err(PciError::BadBar {
                index: index.number(),
                reason: "the slot is taken".into(),
            });
        }
        let at = index.offset();
        let wmask = bar.write_mask(index);
        let type_bits = u64::from(bar.type_bits(index));
        let width = if bar.kind == BarKind::Mem64 { 8 } else { 4 };
        for i in 0..width {
            let shift = 8 * i;
            self.config[at + i] = (type_bits >> shift) as u8;
            self.wmask[at + i] = (wmask >> shift) as u8;
            self.cmask[at + i] = 0xff;
        }
        self.bars[n] = Some(bar);
        Ok(())
    }

    /// Reads `size` (1, 2 or 4) bytes at `offset`, little-endian. Past the
    /// end reads as all ones, and an access that runs over the end is cut
    /// there, as QEMU's host bridges do.
    pub fn read(&self, offset: u16, size: u8) -> Result<u32, PciError> {
        let (start, len) = self.span(offset, size)?;
        if len == 0 {
            return Ok(u32::MAX >> (32 - 8 * u32::from(size)));
        }
        let mut value = 0u32;
        for i in 0..len {
            value |= u32::from(self.config[start + i]) << (8 * i);
        }
        Ok(value)
    }

    /// Writes `size` (1, 2 or 4) bytes of `value` at `offset`, through the
    /// masks: per byte `cfg = (cfg & !wmask) | (v & wmask)`, then
    /// `cfg &= !(v & w1cmask)`. A write that touches a BAR, the ROM BAR or
    /// Command recomputes every mapping; the moves come back, removals
    /// first. Past the end is ignored.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) -> Result<ConfigEffects, PciError> {
        let (start, len) = self.span(offset, size)?;
        let before = self.command();
        for i in 0..len {
            let at = start + i;
            let v = (value >> (8 * i)) as u8;
            let w = self.wmask[at];
            self.config[at] = (self.config[at] & !w) | (v & w);
            self.config[at] &= !(v & self.w1cmask[at]);
        }
        let mut effects = ConfigEffects::default();
        if overlaps(&BARS, start, len) || overlaps(&ROM, start, len) || overlaps(&COMMAND, start, len) {
            effects.bar_moves = self.remap();
        }
        if overlaps(&COMMAND, start, len) {
            self.command_effects(before, &mut effects);
        }
        Ok(effects)
    }

    /// QEMU's device reset of the generic part: Command and the Status
    /// bits a guest may change cleared, cache line size and interrupt line
    /// 0, BARs back to their type bits (so every mapping goes).
    pub fn reset(&mut self) -> ConfigEffects {
        let before = self.command();
        let cmd = HeaderReg::Command.offset();
        let status = HeaderReg::Status.offset();
        for at in [cmd, cmd + 1, status, status + 1] {
            self.config[at] &= !(self.wmask[at] | self.w1cmask[at]);
        }
        self.config[HeaderReg::CacheLineSize.offset()] = 0;
        self.config[HeaderReg::InterruptLine.offset()] = 0;
        for index in BarIndex::ALL {
            if let Some(bar) = self.bars[index.number() as usize] {
                let at = index.offset();
                let width = if bar.kind == BarKind::Mem64 { 8 } else { 4 };
                let type_bits = u64::from(bar.type_bits(index));
                for i in 0..width {
                    self.config[at + i] = (type_bits >> (8 * i)) as u8;
                }
            }
        }
        let mut effects = ConfigEffects {
            bar_moves: self.remap(),
            ..ConfigEffects::default()
        };
        self.command_effects(before, &mut effects);
        effects
    }

    /// Adds a capability of `size` bytes with id `id` (QEMU's
    /// `pci_add_capability`) at `offset`, or, with `None`, at the first
    /// free 4-byte-aligned gap from 0x40. It goes at the head of the list,
    /// sets Status.CAP_LIST, and its bytes become read-only to the guest
    /// and checked on migration. Returns its offset.
    pub fn add_capability(&mut self, id: u8, offset: Option<u8>, size: u8) -> Result<u8, PciError> {
        let bad = |offset: u16, reason: &str| PciError::BadCapability {
            id,
            offset,
            size,
            reason: reason.into(),
        };
        if size < 2 {
            return Err(bad(
                u16::from(offset.unwrap_or(0)),
                "a capability has at least its id and next pointer",
            ));
        }
        let size_us = usize::from(size);
        let at = match offset {
            Some(o) => {
                let o = usize::from(o);
                if o < HEADER_SIZE || o + size_us > CONFIG_SPACE_SIZE {
                    return Err(bad(o as u16, "outside 0x40-0xff"));
                }
                if let Some(taken) = (o..o + size_us).find(|&b| self.used[b]) {
                    return Err(bad(
                        o as u16,
                        &format!("overlaps the capability or header byte at {taken:#x}"),
                    ));
                }
                o
            }
            None => (HEADER_SIZE..=CONFIG_SPACE_SIZE - size_us)
                .step_by(4)
                .find(|&o| !self.used[o..o + size_us].iter().any(|&u| u))
                .ok_or_else(|| bad(0, "no free space left"))?,
        };
        let list = HeaderReg::CapabilityList.offset();
        self.config[at] = id;
        self.config[at + 1] = self.config[list];
        self.config[list] = at as u8;
        self.set_status(Status::CAP_LIST, true);
        self.used[at..at + size_us].fill(true);
        self.wmask[at..at + size_us].fill(0);
        self.cmask[at..at + size_us].fill(0xff);
        Ok(at as u8)
    }

    /// The offset of the first capability with id `id` in the list.
    pub fn find_capability(&self, id: u8) -> Option<u8> {
        if !self.status().contains(Status::CAP_LIST) {
            return None;
        }
        let mut at = self.config[HeaderReg::CapabilityList.offset()];
        // A list has at most 48 entries in 0x40-0xff; the bound stops a loop.
        for _ in 0..48 {
            if at < HEADER_SIZE as u8 {
                return None;
            }
            if self.config[usize::from(at)] == id {
                return Some(at);
            }
            at = self.config[usize::from(at) + 1];
        }
        None
    }

    /// Makes bytes `offset..offset + len` writable by the guest through
    /// `mask` (a capability's control registers, say), one mask byte per
    /// byte.
    pub fn set_write_mask(&mut self, offset: usize, mask: &[u8]) {
        if let Some(w) = self.wmask.get_mut(offset..offset + mask.len()) {
            w.copy_from_slice(mask);
        }
    }

    /// Makes bytes `offset..offset + len` checked on an incoming migration
    /// through `mask` (QEMU's `cmask`), one mask byte per byte: a load
    /// whose bytes differ from this function's where the mask is set and
    /// the guest cannot write is "Bad config data".
    pub fn set_check_mask(&mut self, offset: usize, mask: &[u8]) {
        if let Some(c) = self.cmask.get_mut(offset..offset + mask.len()) {
            c.copy_from_slice(mask);
        }
    }

    /// The check mask of byte `offset` (0 past the end).
    pub fn check_mask(&self, offset: usize) -> u8 {
        self.cmask.get(offset).copied().unwrap_or(0)
    }

    /// The write mask of byte `offset` (0 past the end).
    pub fn write_mask(&self, offset: usize) -> u8 {
        self.wmask.get(offset).copied().unwrap_or(0)
    }

    /// The configuration space's kind (by its size).
    pub fn kind(&self) -> ConfigKind {
        if self.config.len() == PCIE_CONFIG_SPACE_SIZE {
            ConfigKind::Express
        } else {
            ConfigKind::Conventional
        }
    }

    /// Every declared BAR with where it is mapped, in slot order.
    pub fn bars(&self) -> impl Iterator<Item = (BarIndex, Bar, Option<u64>)> + '_ {
        BarIndex::ALL
            .into_iter()
            .filter_map(|i| self.bars[i.number() as usize].map(|b| (i, b, self.mapped[i.number() as usize])))
    }

    /// Sets bytes from the device side (capability contents), no mask applied.
    pub fn put_bytes(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(c) = self.config.get_mut(offset..offset + bytes.len()) {
            c.copy_from_slice(bytes);
        }
    }

    /// Takes an incoming migration's configuration bytes (QEMU's
    /// `PCIDevice` load): refused with QEMU's "Bad config data" if a byte
    /// the guest cannot change but a migration must agree on differs (a
    /// different device model); else loaded, with the mappings and bus
    /// mastering recomputed.
    pub fn load(&mut self, incoming: &[u8]) -> Result<ConfigEffects, PciError> {
        if incoming.len() != self.config.len() {
            return Err(PciError::BadConfigData {
                offset: 0,
                reason: format!(
                    "{} bytes for a {}-byte configuration space",
                    incoming.len(),
                    self.config.len()
                ),
            });
        }
        for (i, &b) in incoming.iter().enumerate() {
            let checked = self.cmask[i] & !self.wmask[i] & !self.w1cmask[i];
            if (b ^ self.config[i]) & checked != 0 {
                return Err(PciError::BadConfigData {
                    offset: i as u16,
                    reason: format!(
                        "incoming {b:#04x}, this device {:#04x}, checked bits {checked:#04x}",
                        self.config[i]
                    ),
                });
            }
        }
        let before = self.command();
        self.config.copy_from_slice(incoming);
        let mut effects = ConfigEffects {
            bar_moves: self.remap(),
            ..ConfigEffects::default()
        };
        self.command_effects(before, &mut effects);
        Ok(effects)
    }

    fn command_effects(&self, before: Command, effects: &mut ConfigEffects) {
        let after = self.command();
        if before.contains(Command::MASTER) != after.contains(Command::MASTER) {
            effects.bus_master = Some(after.contains(Command::MASTER));
        }
        if before.contains(Command::INTX_DISABLE) != after.contains(Command::INTX_DISABLE) {
            effects.intx_disable = Some(after.contains(Command::INTX_DISABLE));
        }
    }

    /// Recomputes every BAR's mapping; returns the moves, removals first.
    fn remap(&mut self) -> Vec<BarMove> {
        let cmd = self.command();
        let (io_on, mem_on) = (cmd.contains(Command::IO), cmd.contains(Command::MEMORY));
        let mut removals = Vec::new();
        let mut additions = Vec::new();
        for index in BarIndex::ALL {
            let n = index.number() as usize;
            let Some(bar) = self.bars[n] else { continue };
            let at = index.offset();
            let mut value = u64::from(self.dword(at));
            if bar.kind == BarKind::Mem64 {
                value |= u64::from(self.dword(at + 4)) << 32;
            }
            let to = bar.address(index, value, io_on, mem_on);
            let from = self.mapped[n];
            if from == to {
                continue;
            }
            self.mapped[n] = to;
            let mv = BarMove {
                index,
                space: bar.space(),
                size: bar.size,
                from,
                to,
            };
            match (from, to) {
                (Some(_), Some(_)) => {
                    removals.push(BarMove { to: None, ..mv });
                    additions.push(BarMove { from: None, ..mv });
                }
                (Some(_), None) => removals.push(mv),
                (None, _) => additions.push(mv),
            }
        }
        removals.extend(additions);
        removals
    }

    fn span(&self, offset: u16, size: u8) -> Result<(usize, usize), PciError> {
        if !matches!(size, 1 | 2 | 4) {
            return Err(PciError::BadAccess {
                offset,
                size,
                len: self.config.len() as u16,
            });
        }
        let start = usize::from(offset);
        let len = usize::from(size).min(self.config.len().saturating_sub(start));
        Ok((start, len))
    }

    fn word(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.config[at], self.config[at + 1]])
    }

    fn dword(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.config[at],
            self.config[at + 1],
            self.config[at + 2],
            self.config[at + 3],
        ])
    }

    fn put_word(&mut self, at: usize, v: u16) {
        put_word(&mut self.config, at, v);
    }
}

fn put_word(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
