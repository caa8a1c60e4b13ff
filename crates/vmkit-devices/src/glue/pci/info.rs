//! `query-pci`'s answer, in the shape of QEMU's QAPI `PciInfo`: one entry
//! per root bus, one `PciDeviceInfo` per function (bus, slot, function,
//! class with QEMU's description, ids, interrupt, `qdev_id`, and each
//! BAR's type, address — -1 while unmapped — and size).

use serde_json::{Map, Value, json};

use super::bus::find_root_bus;
use crate::pci::{BarKind, BarSpace, ConfigSpace, DevFn, HeaderReg};

/// QEMU's table of class descriptions (`pci_class_descriptions`): the
/// class word (base class << 8 | sub-class) and its name.
const CLASS_DESCRIPTIONS: &[(u16, &str)] = &[
    (0x0001, "VGA controller"),
    (0x0100, "SCSI controller"),
    (0x0101, "IDE controller"),
    (0x0102, "Floppy controller"),
    (0x0103, "IPI controller"),
    (0x0104, "RAID controller"),
    (0x0106, "SATA controller"),
    (0x0107, "SAS controller"),
    (0x0180, "Storage controller"),
    (0x0200, "Ethernet controller"),
    (0x0201, "Token Ring controller"),
    (0x0202, "FDDI controller"),
    (0x0203, "ATM controller"),
    (0x0280, "Network controller"),
    (0x0300, "VGA controller"),
    (0x0301, "XGA controller"),
    (0x0302, "3D controller"),
    (0x0380, "Display controller"),
    (0x0400, "Video controller"),
    (0x0401, "Audio controller"),
    (0x0402, "Phone"),
    (0x0403, "Audio controller"),
    (0x0480, "Multimedia controller"),
    (0x0500, "RAM controller"),
    (0x0501, "Flash controller"),
    (0x0580, "Memory controller"),
    (0x0600, "Host bridge"),
    (0x0601, "ISA bridge"),
    (0x0602, "EISA bridge"),
    (0x0603, "MC bridge"),
    (0x0604, "PCI bridge"),
    (0x0605, "PCMCIA bridge"),
    (0x0606, "NUBUS bridge"),
    (0x0607, "CARDBUS bridge"),
    (0x0608, "RACEWAY bridge"),
    (0x0680, "Bridge"),
    (0x0700, "Serial port"),
    (0x0701, "Parallel port"),
    (0x0800, "Interrupt controller"),
    (0x0801, "DMA controller"),
    (0x0802, "Timer"),
    (0x0803, "RTC"),
    (0x0900, "Keyboard"),
    (0x0901, "Pen"),
    (0x0902, "Mouse"),
    (0x0A00, "Dock station"),
    (0x0B00, "i386 cpu"),
    (0x0c00, "Firewire controller"),
    (0x0c01, "Access bus controller"),
    (0x0c02, "SSA controller"),
    (0x0c03, "USB controller"),
    (0x0c04, "Fibre channel controller"),
    (0x0c05, "SMBus"),
];

/// QEMU's description of class word `class`, if its table has one.
pub fn class_description(class: u16) -> Option<&'static str> {
    CLASS_DESCRIPTIONS.iter().find(|(c, _)| *c == class).map(|(_, d)| *d)
}

fn byte(cfg: &ConfigSpace, at: usize) -> u8 {
    cfg.bytes().get(at).copied().unwrap_or(0)
}

fn word(cfg: &ConfigSpace, at: usize) -> u16 {
    u16::from_le_bytes([byte(cfg, at), byte(cfg, at + 1)])
}

/// The `PciDeviceInfo` of the function at `devfn` on bus `bus` with
/// configuration `cfg`, added with id `qdev_id` (empty: none).
pub(crate) fn device_info(bus: u8, devfn: DevFn, cfg: &ConfigSpace, qdev_id: &str) -> Value {
    let class = word(cfg, HeaderReg::ClassDevice.offset());
    let mut class_info = Map::new();
    if let Some(desc) = class_description(class) {
        class_info.insert("desc".into(), json!(desc));
    }
    class_info.insert("class".into(), json!(class));
    let mut id = Map::new();
    id.insert("device".into(), json!(word(cfg, HeaderReg::DeviceId.offset())));
    id.insert("vendor".into(), json!(word(cfg, HeaderReg::VendorId.offset())));
    // Only a type-0 header has a subsystem.
    if byte(cfg, HeaderReg::HeaderType.offset()) & 0x7f == 0 {
        id.insert("subsystem".into(), json!(word(cfg, HeaderReg::SubsystemId.offset())));
        id.insert(
            "subsystem-vendor".into(),
            json!(word(cfg, HeaderReg::SubsystemVendorId.offset())),
        );
    }
    let mut info = Map::new();
    info.insert("bus".into(), json!(bus));
    info.insert("slot".into(), json!(devfn.slot()));
    info.insert("function".into(), json!(devfn.func()));
    info.insert("class_info".into(), Value::Object(class_info));
    info.insert("id".into(), Value::Object(id));
    let pin = byte(cfg, HeaderReg::InterruptPin.offset());
    if pin != 0 {
        info.insert("irq".into(), json!(byte(cfg, HeaderReg::InterruptLine.offset())));
    }
    info.insert("irq_pin".into(), json!(pin));
    info.insert("qdev_id".into(), json!(qdev_id));
    let regions: Vec<Value> = cfg
        .bars()
        .map(|(index, bar, mapped)| {
            let mut r = Map::new();
            r.insert("bar".into(), json!(index.number()));
            let address = mapped.map_or(-1, |a| a as i64);
            match bar.space() {
                BarSpace::Io => {
                    r.insert("type".into(), json!("io"));
                    r.insert("address".into(), json!(address));
                    r.insert("size".into(), json!(bar.size));
                }
                BarSpace::Memory => {
                    r.insert("type".into(), json!("memory"));
                    r.insert("address".into(), json!(address));
                    r.insert("size".into(), json!(bar.size));
                    r.insert("prefetch".into(), json!(bar.prefetchable));
                    r.insert("mem_type_64".into(), json!(bar.kind == BarKind::Mem64));
                }
            }
            Value::Object(r)
        })
        .collect();
    info.insert("regions".into(), Value::Array(regions));
    Value::Object(info)
}

/// `query-pci`: the root bus of the current machine and its functions in
/// device/function order; `[]` without a PCI bus.
pub fn query_pci() -> Value {
    let Some(bus) = find_root_bus() else {
        return json!([]);
    };
    let devices: Vec<Value> = bus.functions().into_iter().map(|(_, f)| f.info()).collect();
    json!([{"bus": bus.number(), "devices": devices}])
}
