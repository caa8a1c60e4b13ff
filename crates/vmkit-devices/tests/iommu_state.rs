//! The "iommu-intel" section: QEMU's field list and wire layout, a
//! round trip through the codec and through a saved machine, and the
//! states a device refuses to load.

use std::sync::Arc;

use serde_json::json;
use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::state::{VMSTATE_NAME, vmstate_description};
use vmkit_devices::iommu::testing::TableBuilder;
use vmkit_devices::iommu::{
    Access, ContextEntry, Effect, IntelIommu, IntelIommuDevice, IntelIommuProps, IntelIommuState, IrqChip, Perm, Reg,
    SourceId,
};
use vmkit_migration::device_state::{DynDeviceState, MigrationState};
use vmkit_migration::savevm::{DeviceEntry, RestoreOptions, SaveOptions, SaveSet, restore, save};
use vmkit_migration::vmstate::{MigrationPriority, VmValue, decode_exact, encode, encode_described};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

const MEM: usize = 4 << 20;
const ROOT: u64 = 0x10_0000;
const QUEUE: u64 = 0x20_0000;
const DEV: SourceId = SourceId::new(0, 0x18);

fn at(reg: Reg) -> u64 {
    reg.offset() as u64
}

fn fresh() -> Fallible<IntelIommu> {
    Ok(IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?))
}

/// A device a guest has programmed: root table latched, translation on,
/// queued invalidation on with two descriptors done, interrupt remapping
/// on, a fault recorded.
fn programmed(mem: &TestMemory) -> Fallible<IntelIommu> {
    let mut tb = TableBuilder::new(mem, ROOT);
    let table = tb.alloc()?;
    tb.set_context(DEV, ContextEntry::translated(table, 4, 5))?;
    tb.map(table, 4, 0x1000, 0xa000, 1, Perm::READ)?;
    let mut dev = fresh()?;
    dev.write(at(Reg::Rtaddr), 8, ROOT, mem)?;
    dev.write(at(Reg::Iqa), 8, QUEUE | 1, mem)?;
    dev.write(at(Reg::Irta), 8, 0x40_0000 | 1 << 11 | 7, mem)?;
    dev.write(at(Reg::Fedata), 4, 0x41, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 30, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 31, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 31 | 1 << 26, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 31 | 1 << 26 | 1 << 24, mem)?;
    dev.write(at(Reg::Gcmd), 4, 1 << 31 | 1 << 26 | 1 << 25, mem)?;
    // An IOTLB global invalidation, then a fence wait.
    for (i, (lo, hi)) in [(2u64 | 1 << 4, 0u64), (5 | 1 << 6, 0)].into_iter().enumerate() {
        let slot = QUEUE + 16 * i as u64;
        vmkit_devices::dma::Dma::write_u64(mem, slot, lo)?;
        vmkit_devices::dma::Dma::write_u64(mem, slot + 8, hi)?;
    }
    dev.write(at(Reg::Iqt), 8, 2 << 4, mem)?;
    assert!(dev.translate(DEV, 0x1000, Access::Write, mem).is_err());
    Ok(dev)
}

fn registers(dev: &IntelIommu) -> Fallible<Vec<u64>> {
    Ok((0..0x230)
        .step_by(4)
        .map(|off| dev.read(off, 4))
        .collect::<Result<_, _>>()?)
}

#[test]
fn the_description_is_qemus() -> TestResult {
    let desc = vmstate_description()?;
    assert_eq!(
        (desc.name(), desc.version_id(), desc.minimum_version_id()),
        (VMSTATE_NAME, 1, 1)
    );
    assert_eq!(VMSTATE_NAME, "iommu-intel");
    assert_eq!(desc.priority(), MigrationPriority::Iommu);
    assert!(desc.subsections().is_empty());
    let mut state = fresh()?.save_state().to_vmstate();
    let mut bytes = Vec::new();
    let (n, body) = encode_described(&desc, &mut state, &mut bytes, 0)?;
    // QEMU's vtd_vmstate, as its VMDESCRIPTION lists it.
    let expected = json!({
        "vmsd_name": "iommu-intel",
        "version": 1,
        "fields": [
            {"name": "root", "type": "uint64", "size": 8},
            {"name": "intr_root", "type": "uint64", "size": 8},
            {"name": "iq", "type": "uint64", "size": 8},
            {"name": "intr_size", "type": "uint32", "size": 4},
            {"name": "iq_head", "type": "uint16", "size": 2},
            {"name": "iq_tail", "type": "uint16", "size": 2},
            {"name": "iq_size", "type": "uint16", "size": 2},
            {"name": "next_frcd_reg", "type": "uint16", "size": 2},
            {"name": "csr", "array_len": 0x230, "type": "uint8", "size": 1},
            {"name": "iq_last_desc_type", "type": "uint8", "size": 1},
            {"name": "unused", "type": "unused_buffer", "size": 1},
            {"name": "dmar_enabled", "type": "bool", "size": 1},
            {"name": "qi_enabled", "type": "bool", "size": 1},
            {"name": "intr_enabled", "type": "bool", "size": 1},
            {"name": "intr_eime", "type": "bool", "size": 1},
        ],
    });
    assert_eq!(body, expected);
    assert_eq!((n, bytes.len()), (602, 602));
    Ok(())
}

#[test]
fn the_wire_layout_puts_each_field_where_qemu_does() -> TestResult {
    let mem = TestMemory::new(MEM);
    let dev = programmed(&mem)?;
    let mut bytes = Vec::new();
    let desc = vmstate_description()?;
    encode(&desc, &mut dev.save_state().to_vmstate(), &mut bytes, 0)?;
    assert_eq!(bytes[..8], ROOT.to_be_bytes(), "root, big-endian");
    assert_eq!(bytes[8..16], 0x40_0000u64.to_be_bytes(), "intr_root");
    assert_eq!(bytes[16..24], QUEUE.to_be_bytes(), "iq");
    assert_eq!(bytes[24..28], 256u32.to_be_bytes(), "intr_size");
    assert_eq!(bytes[28..30], 2u16.to_be_bytes(), "iq_head");
    assert_eq!(bytes[30..32], 2u16.to_be_bytes(), "iq_tail");
    assert_eq!(bytes[32..34], 512u16.to_be_bytes(), "iq_size");
    assert_eq!(bytes[34..36], 0u16.to_be_bytes(), "next_frcd_reg");
    // csr: the register bytes as the guest sees them, little-endian.
    assert_eq!(bytes[36], 0x10, "VER");
    assert_eq!(
        bytes[36 + 0x1c..36 + 0x20],
        0xc700_0000u32.to_le_bytes(),
        "GSTS: TES RTPS QIES IRES IRTPS"
    );
    assert_eq!(bytes[36 + 0x34], 0x2, "FSTS: PPF");
    assert_eq!(bytes[596], 5, "iq_last_desc_type: wait");
    assert_eq!(bytes[597], 0, "unused");
    assert_eq!(bytes[598..602], [1, 1, 1, 1], "dmar, qi, intr, eime");
    Ok(())
}

#[test]
fn a_programmed_device_round_trips_through_the_codec() -> TestResult {
    let mem = TestMemory::new(MEM);
    let src = programmed(&mem)?;
    let desc = vmstate_description()?;
    let mut bytes = Vec::new();
    encode(&desc, &mut src.save_state().to_vmstate(), &mut bytes, 0)?;
    let state = IntelIommuState::from_vmstate(&decode_exact(&desc, 1, &bytes)?)?;
    assert_eq!(state, src.save_state());

    let mut dst = fresh()?;
    let fx = dst.load_state(state)?;
    assert_eq!(fx, [Effect::TranslationEnabled(true), Effect::InterruptRemapping(true)]);
    assert_eq!(registers(&dst)?, registers(&src)?);
    assert_eq!(dst.root_table(), ROOT);
    assert!(dst.queued_invalidation_enabled() && dst.interrupt_remapping_enabled());
    assert_eq!(dst.interrupt_table(), (0x40_0000, 256, true));
    assert_eq!(dst.fault_record(), src.fault_record());
    assert_eq!(dst.iotlb_len(), 0, "caches do not migrate");
    // The destination translates from the same guest memory.
    let m = dst
        .translate(DEV, 0x1008, Access::Read, &mem)?
        .mapping()
        .ok_or("interrupt")?;
    assert_eq!(m.output(0x1008), Some(0xa008));
    Ok(())
}

#[test]
fn a_saved_machine_restores_the_iommu_through_the_device_state_contract() -> TestResult {
    let mem = TestMemory::new(MEM);
    let src = Arc::new(IntelIommuDevice::new(programmed(&mem)?)?);
    let set = SaveSet::new(
        "pc-q35",
        Vec::new(),
        vec![DeviceEntry::new(
            VMSTATE_NAME,
            0,
            Arc::clone(&src) as Arc<dyn DynDeviceState>,
        )],
    );
    let mut stream = Vec::new();
    save(&set, &mut stream, &SaveOptions::default())?;

    let dst = Arc::new(IntelIommuDevice::new(fresh()?)?);
    let dst_set = SaveSet::new(
        "pc-q35",
        Vec::new(),
        vec![DeviceEntry::new(
            VMSTATE_NAME,
            0,
            Arc::clone(&dst) as Arc<dyn DynDeviceState>,
        )],
    );
    let stats = restore(&dst_set, &stream[..], &RestoreOptions::default())?;
    assert_eq!(stats.devices, 1);
    assert_eq!(dst.with(|d| registers(d))?, src.with(|s| registers(s))?);
    assert_eq!(
        dst.take_effects(),
        [Effect::TranslationEnabled(true), Effect::InterruptRemapping(true)]
    );
    assert!(dst.take_effects().is_empty(), "taken once");
    Ok(())
}

#[test]
fn a_state_from_differently_configured_sides_is_refused() -> TestResult {
    let mem = TestMemory::new(MEM);
    let state = programmed(&mem)?.save_state();
    let narrow = IntelIommu::new(IntelIommuProps::compat_9_1().realize(IrqChip::Userspace)?);
    let err = narrow.check_state(&state).err().ok_or("accepted")?;
    assert_eq!(err.path(), Some("csr"));
    assert!(
        err.to_string()
            .contains("Cap is 0xd2008c222f0606, this device's is 0xd2008c22260206"),
        "{err}"
    );
    // Through the device: refused before anything is loaded.
    let dev = IntelIommuDevice::new(narrow)?;
    let before = dev.with(|d| registers(d))?;
    let tree = state.to_vmstate();
    assert!(dev.check_vmstate(&tree, 1).is_err());
    assert!(dev.load_vmstate(&tree, 1).is_err());
    assert_eq!(dev.with(|d| registers(d))?, before);
    Ok(())
}

#[test]
fn impossible_states_are_refused_with_the_field_named() -> TestResult {
    let mem = TestMemory::new(MEM);
    let dev = programmed(&mem)?;
    let good = dev.save_state();
    let cases: Vec<(IntelIommuState, &str)> = vec![
        (
            IntelIommuState {
                next_frcd_reg: 1,
                ..good.clone()
            },
            "next_frcd_reg",
        ),
        (
            IntelIommuState {
                iq_size: 300,
                ..good.clone()
            },
            "iq_size",
        ),
        (
            IntelIommuState {
                iq_head: 512,
                ..good.clone()
            },
            "iq_head",
        ),
    ];
    for (state, field) in cases {
        let err = dev.check_state(&state).err().ok_or("accepted")?;
        assert_eq!(err.path(), Some(field), "{err}");
    }
    // With the queue off its indexes are not used: accepted.
    let off = IntelIommuState {
        qi_enabled: false,
        iq_size: 0,
        iq_head: 9,
        ..good.clone()
    };
    assert!(dev.check_state(&off).is_ok());
    // A csr of the wrong length never becomes a typed state.
    let short = good
        .to_vmstate()
        .with("csr", VmValue::Array(vec![VmValue::UInt(0); 16]));
    let err = IntelIommuState::from_vmstate(&short).err().ok_or("accepted")?;
    assert_eq!(err.path(), Some("csr"));
    let wide = good
        .to_vmstate()
        .with("csr", VmValue::Array(vec![VmValue::UInt(256); 0x230]));
    assert_eq!(
        IntelIommuState::from_vmstate(&wide)
            .err()
            .and_then(|e| e.path().map(String::from)),
        Some("csr[0]".to_string())
    );
    Ok(())
}
