//! PCI in the machine: the `pci-device` base type and the glue that runs
//! a function's model ([`device`]), root buses ([`bus`]), q35's host
//! bridge and its `mch` function ([`host`]), `pci-testdev` ([`testdev`]),
//! and `query-pci` ([`info`]).

pub mod bus;
pub mod device;
pub mod host;
pub mod info;
mod reentry;
pub mod testdev;

use std::sync::OnceLock;

pub use bus::{DmaRootHook, PciRootBus, TYPE_BUS, TYPE_PCI_BUS, TYPE_PCIE_BUS, find_root_bus};
pub use device::{
    BarRegion, BarRegionKind, BusMasterDma, PciDevice, PciDeviceModel, TYPE_PCI_DEVICE, function_dma_space, pci_device,
    register_pci_type,
};
pub use host::{Ecam, Mch, Q35Host, TYPE_MCH, TYPE_Q35_HOST, q35_host};
pub use info::{class_description, query_pci};
pub use testdev::{PciTestdev, TYPE_PCI_TESTDEV};

use crate::glue::error::GlueError;

/// Registers the PCI types (once per process; a later call returns the
/// first one's outcome).
pub(crate) fn register_types() -> Result<(), GlueError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| register_all().map_err(|e| e.to_string()))
        .clone()
        .map_err(|reason| {
            GlueError::Qom(vmkit_qom::Error::TypeRegistration {
                name: TYPE_PCI_DEVICE.into(),
                reason,
            })
        })
}

fn register_all() -> Result<(), GlueError> {
    for info in bus::type_infos() {
        info.register()?;
    }
    device::type_info().register()?;
    device::register_dev_path()?;
    host::host_type_info().register()?;
    host::register_host_vmstate()?;
    host::register_mch()?;
    testdev::register()?;
    crate::glue::iommu::register_types()?;
    crate::glue::usb::register_types()?;
    Ok(())
}
