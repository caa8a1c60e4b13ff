//! The MSI window: QEMU's APIC takes the memory writes at 0xfee00000
//! (1 MiB) that deliver message-signalled interrupts. vmkit has no local
//! APIC, so the board puts a sink there that counts and records each
//! message (address, data): what a device signalled is observable by
//! tests and the Python API.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use vmkit_memory::{AccessConstraints, MemoryRegion, MmioOps};
use vmkit_qom::Object;

/// Where the window starts (QEMU's `APIC_DEFAULT_ADDRESS`).
pub const MSI_BASE: u64 = 0xfee0_0000;
/// Its size (QEMU's `APIC_SPACE_SIZE`).
pub const MSI_SIZE: u64 = 0x10_0000;
/// Messages kept (the oldest go first; the count goes on).
pub const MSI_LOG: usize = 1024;

/// One message as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiRecord {
    /// The address written (in the window).
    pub address: u64,
    /// The data written.
    pub data: u32,
}

#[derive(Debug, Default)]
struct Log {
    count: u64,
    recent: VecDeque<MsiRecord>,
}

/// The sink's record of messages.
#[derive(Debug, Default)]
pub struct MsiSink {
    log: Mutex<Log>,
}

impl MsiSink {
    /// Messages received since the machine was built (or the last clear).
    pub fn count(&self) -> u64 {
        self.log.lock().count
    }

    /// The last [`MSI_LOG`] messages, oldest first.
    pub fn messages(&self) -> Vec<MsiRecord> {
        self.log.lock().recent.iter().copied().collect()
    }

    /// Forgets the messages and zeroes the count.
    pub fn clear(&self) {
        *self.log.lock() = Log::default();
    }

    fn record(&self, rec: MsiRecord) {
        let mut log = self.log.lock();
        log.count += 1;
        if log.recent.len() == MSI_LOG {
            log.recent.pop_front();
        }
        log.recent.push_back(rec);
    }
}

struct SinkOps(Arc<MsiSink>);

impl MmioOps for SinkOps {
    fn read(&self, _offset: u64, _size: u32) -> vmkit_memory::Result<u64> {
        // Reads of the window return nothing meaningful on real hardware.
        Ok(0)
    }

    fn write(&self, offset: u64, _size: u32, value: u64) -> vmkit_memory::Result<()> {
        self.0.record(MsiRecord {
            address: MSI_BASE + offset,
            data: value as u32,
        });
        Ok(())
    }

    fn constraints(&self) -> AccessConstraints {
        AccessConstraints {
            impl_min: 4,
            impl_max: 4,
            ..AccessConstraints::default()
        }
    }
}

static CURRENT: OnceLock<Mutex<Option<Arc<MsiSink>>>> = OnceLock::new();

fn current_slot() -> &'static Mutex<Option<Arc<MsiSink>>> {
    CURRENT.get_or_init(|| Mutex::new(None))
}

/// The sink of the machine built last, if any.
pub fn current() -> Option<Arc<MsiSink>> {
    current_slot().lock().clone()
}

/// The window's region (`apic-msi`, owned by `owner`) and its sink, which
/// becomes the current one.
pub(crate) fn build(owner: &Object) -> vmkit_memory::Result<(MemoryRegion, Arc<MsiSink>)> {
    let sink = Arc::new(MsiSink::default());
    let region = MemoryRegion::mmio("apic-msi", Some(owner), MSI_SIZE, Arc::new(SinkOps(Arc::clone(&sink))))?;
    *current_slot().lock() = Some(Arc::clone(&sink));
    Ok((region, sink))
}
