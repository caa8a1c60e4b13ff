//! The q35-like board: PC memory over a RAM block, the `pci` space (the
//! background of system memory, where memory BARs go) and the `io` space,
//! the host bridge `/machine/q35` with its root bus `pcie.0` and the
//! `mch` function at 00.0, as QEMU's q35 machine lays them out; and the
//! MSI window at 0xfee00000 ([`super::msi`]).

use std::sync::Arc;

use vmkit_memory::{AddressSpace, FULL_SPACE, GuestAddr, MemoryRegion, PcMemory, RamBlock};
use vmkit_qom::Object;

use super::error::GlueError;
use super::msi::{MSI_BASE, MsiSink};
use super::pci::bus::{PciRootBus, TYPE_PCIE_BUS};
use super::pci::host::{Q35Host, TYPE_MCH, TYPE_Q35_HOST, connect_host};

/// Bytes of the I/O space.
pub const IO_SPACE_SIZE: u64 = 0x1_0000;

/// How the board is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Q35Options {
    /// Whether `pcie.0` takes devices plugged and unplugged at run time.
    /// QEMU's q35 root bus does not (it takes them behind a
    /// `pcie-root-port`, which vmkit does not model yet); vmkit's does by
    /// default, and an unplug completes at once (no guest acknowledges it).
    pub hotplug: bool,
}

impl Default for Q35Options {
    fn default() -> Q35Options {
        Q35Options { hotplug: true }
    }
}

/// The board's parts.
#[derive(Clone)]
pub struct Q35Board {
    /// System memory: RAM below and above 4 GiB, `pci` behind them.
    pub memory: PcMemory,
    /// The `pci` container (priority -1 in `system`): memory BARs.
    pub pci: MemoryRegion,
    /// The `io` container (64 KiB): 0xCF8/0xCFC, I/O BARs.
    pub io: MemoryRegion,
    /// The `I/O` address space over `io`.
    pub io_space: Arc<AddressSpace>,
    /// `/machine/q35`.
    pub host: Object,
    /// Its glue.
    pub host_glue: Arc<Q35Host>,
    /// `pcie.0`.
    pub bus: Arc<PciRootBus>,
    /// The MSI window's record of messages.
    pub msi: Arc<MsiSink>,
}

/// Builds the board into `machine` (`/machine`, empty) over `block`.
pub fn build_q35(machine: &Object, block: Arc<RamBlock>, options: Q35Options) -> Result<Q35Board, GlueError> {
    super::register_types()?;
    let memory = PcMemory::new(block, Some(machine))?;
    let pci = MemoryRegion::container("pci", Some(machine), FULL_SPACE)?;
    memory.system.add_subregion_overlap(GuestAddr(0), &pci, -1)?;
    // Above `pci` (a BAR there is shadowed, as by QEMU's APIC).
    let (msi_region, msi) = super::msi::build(machine)?;
    memory
        .system
        .add_subregion_overlap(GuestAddr(MSI_BASE), &msi_region, 0)?;
    let io = MemoryRegion::container("io", Some(machine), u128::from(IO_SPACE_SIZE))?;
    let io_space = AddressSpace::new("I/O", &io);

    let host = Object::new(TYPE_Q35_HOST)?;
    machine.add_child("q35", &host)?;
    let bus_obj = Object::new(TYPE_PCIE_BUS)?;
    host.add_child("pcie.0", &bus_obj)?;
    let bus = PciRootBus::new("pcie.0", 0, true, pci.clone(), io.clone(), memory.system.clone());
    bus.set_hotplug(options.hotplug);
    bus_obj.set_user_data(bus.clone())?;
    let host_glue = connect_host(&host, Arc::clone(&bus), &memory.system)?;
    host.realize()?;

    let mch = Object::new(TYPE_MCH)?;
    mch.set("addr", vmkit_qom::Value::Int(0))?;
    host.add_child("mch", &mch)?;
    mch.realize()?;
    Ok(Q35Board {
        memory,
        pci,
        io,
        io_space,
        host: host.handle(),
        host_glue,
        bus,
        msi,
    })
}
