//! The q35-like board the glue tests drive as a guest would.
//!
//! `/machine` is process-wide: a [`Board`] holds a lock for its lifetime
//! and builds the machine afresh, and destroys it when dropped.

// Each test file uses what it needs of this module.
#![allow(dead_code)]

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use vmkit_devices::glue::{Q35Board, Q35Options, build_q35};
use vmkit_memory::{AddressSpace, GuestAddr, RamBlock};
use vmkit_qom::{Object, create_machine, destroy_machine};

/// What a test returns.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

static LOCK: Mutex<()> = Mutex::new(());

/// Bytes of guest RAM.
pub const RAM: u64 = 64 << 20;

/// A board on a fresh machine, destroyed when dropped.
pub struct Board {
    pub machine: Object,
    pub block: Arc<RamBlock>,
    pub q35: Q35Board,
    _lock: MutexGuard<'static, ()>,
}

impl Board {
    /// The default board (hot-plug on).
    pub fn new() -> Result<Board, Box<dyn std::error::Error>> {
        Board::with(Q35Options::default())
    }

    /// A board built with `options`.
    pub fn with(options: Q35Options) -> Result<Board, Box<dyn std::error::Error>> {
        let lock = LOCK.lock();
        destroy_machine()?;
        let machine = create_machine("none-machine")?;
        let block = RamBlock::anonymous("pc.ram", RAM)?;
        let q35 = build_q35(&machine, Arc::clone(&block), options)?;
        Ok(Board {
            machine,
            block,
            q35,
            _lock: lock,
        })
    }

    /// System memory as the CPU sees it.
    pub fn memory(&self) -> &Arc<AddressSpace> {
        &self.q35.memory.space
    }

    /// The I/O space.
    pub fn io(&self) -> &Arc<AddressSpace> {
        &self.q35.io_space
    }

    /// Selects `slot`.`func`'s dword at `offset` in 0xCF8.
    pub fn cf8(&self, slot: u8, func: u8, offset: u8) -> Result<(), vmkit_memory::Error> {
        let v = 0x8000_0000 | u32::from(slot) << 11 | u32::from(func) << 8 | u32::from(offset & 0xfc);
        self.io().write_sized(GuestAddr(0xcf8), 4, u64::from(v))
    }

    /// A configuration read of function 0 of `slot` through 0xCF8/0xCFC.
    pub fn cfg_read(&self, slot: u8, offset: u8, size: u32) -> Result<u64, vmkit_memory::Error> {
        self.cf8(slot, 0, offset)?;
        self.io().read_sized(GuestAddr(0xcfc + u64::from(offset & 3)), size)
    }

    /// A configuration write to function 0 of `slot` through 0xCF8/0xCFC.
    pub fn cfg_write(&self, slot: u8, offset: u8, size: u32, value: u64) -> Result<(), vmkit_memory::Error> {
        self.cf8(slot, 0, offset)?;
        self.io()
            .write_sized(GuestAddr(0xcfc + u64::from(offset & 3)), size, value)
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = destroy_machine();
    }
}
