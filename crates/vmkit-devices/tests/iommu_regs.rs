//! The register window as a guest drives it: access widths and halves,
//! masks, the GCMD / GSTS protocol, and register-based invalidation.

use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::regs::{Gcmd, Gsts};
use vmkit_devices::iommu::{
    ContextScope, Effect, IntelIommu, IntelIommuProps, IommuError, IotlbScope, IrqChip, OnOffAuto, Reg, SourceId,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

fn device_with(props: IntelIommuProps) -> Fallible<IntelIommu> {
    Ok(IntelIommu::new(props.realize(IrqChip::Userspace)?))
}

fn device() -> Fallible<IntelIommu> {
    device_with(IntelIommuProps::default())
}

fn at(reg: Reg) -> u64 {
    reg.offset() as u64
}

fn gsts(dev: &IntelIommu) -> Fallible<Gsts> {
    Ok(Gsts::from_bits_retain(dev.read(at(Reg::Gsts), 4)? as u32))
}

/// Writes one command on top of the current status, as Linux does (the
/// one-shot pointer bits are not carried over).
fn command(dev: &mut IntelIommu, mem: &TestMemory, cmd: Gcmd) -> Fallible<Vec<Effect>> {
    let status = gsts(dev)?.bits() & !(Gsts::RTPS | Gsts::IRTPS).bits();
    Ok(dev.write(at(Reg::Gcmd), 4, u64::from(status | cmd.bits()), mem)?)
}

/// Turns `cmd` off, keeping the other status bits.
fn command_off(dev: &mut IntelIommu, mem: &TestMemory, cmd: Gcmd) -> Fallible<Vec<Effect>> {
    let status = gsts(dev)?.bits() & !(Gsts::RTPS | Gsts::IRTPS).bits();
    Ok(dev.write(at(Reg::Gcmd), 4, u64::from(status & !cmd.bits()), mem)?)
}

#[test]
fn eight_byte_registers_take_either_half_or_both() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    dev.write(at(Reg::Rtaddr), 4, 0x1234_5000, &mem)?;
    dev.write(at(Reg::RtaddrHi), 4, 0xab, &mem)?;
    assert_eq!(dev.read(at(Reg::Rtaddr), 8)?, 0xab_1234_5000);
    assert_eq!(dev.read(at(Reg::Rtaddr), 4)?, 0x1234_5000);
    assert_eq!(dev.read(at(Reg::RtaddrHi), 4)?, 0xab);
    // Bits 9:0 are not writable.
    dev.write(at(Reg::Rtaddr), 8, 0x7777_7fff, &mem)?;
    assert_eq!(dev.read(at(Reg::Rtaddr), 8)?, 0x7777_7c00);
    // The CAP register read in halves.
    let cap = dev.read(at(Reg::Cap), 8)?;
    assert_eq!(dev.read(at(Reg::Cap) + 4, 4)?, cap >> 32);
    // FEADDR also takes an 8-byte write (some guests do); FEUADDR stays 0.
    dev.write(at(Reg::Feaddr), 8, 0xffff_ffff_fee0_100f, &mem)?;
    assert_eq!(dev.read(at(Reg::Feaddr), 8)?, 0xfee0_100c);
    Ok(())
}

#[test]
fn bad_accesses_are_refused() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    for (offset, size) in [
        (0x20, 2),
        (0x20, 1),
        (0x24, 8),
        (0x22, 4),
        (0x230, 4),
        (0x22c, 8),
        (u64::MAX - 3, 4),
    ] {
        assert!(
            matches!(dev.read(offset, size), Err(IommuError::BadAccess { .. })),
            "read {size} at {offset:#x}"
        );
        assert!(dev.write(offset, size, 0, &mem).is_err(), "write {size} at {offset:#x}");
    }
    // QEMU takes only 4-byte writes at these 32-bit registers.
    for reg in [Reg::Fectl, Reg::Iectl, Reg::Ieaddr] {
        let err = dev.write(at(reg), 8, 0, &mem).err().ok_or("accepted")?;
        assert_eq!(
            err.to_string(),
            format!(
                "intel-iommu register access of 8 bytes at {:#x}: a 32-bit register",
                at(reg)
            )
        );
    }
    Ok(())
}

#[test]
fn read_only_and_write_only_registers() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    let before: Vec<u64> = [Reg::Ver, Reg::Cap, Reg::Ecap, Reg::Gsts, Reg::Iqh, Reg::Pmen]
        .iter()
        .map(|&r| dev.read(at(r), 4))
        .collect::<Result<_, _>>()?;
    for r in [Reg::Ver, Reg::Cap, Reg::Ecap, Reg::Gsts, Reg::Iqh, Reg::Pmen] {
        dev.write(at(r), 4, 0xffff_ffff, &mem)?;
    }
    let after: Vec<u64> = [Reg::Ver, Reg::Cap, Reg::Ecap, Reg::Gsts, Reg::Iqh, Reg::Pmen]
        .iter()
        .map(|&r| dev.read(at(r), 4))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, after);
    // GCMD and IVA are write-only; CCMD's SID and FM read 0.
    dev.write(at(Reg::Iva), 8, 0x1234_5003, &mem)?;
    assert_eq!(dev.read(at(Reg::Iva), 8)?, 0);
    dev.write(at(Reg::Ccmd), 4, 0xabcd_1234, &mem)?;
    assert_eq!(dev.read(at(Reg::Ccmd), 4)?, 0x1234, "SID (31:16) is write-only");
    command(&mut dev, &mem, Gcmd::empty())?;
    assert_eq!(dev.read(at(Reg::Gcmd), 4)?, 0);
    Ok(())
}

#[test]
fn srtp_latches_the_root_table_and_te_switches_translation() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device_with(IntelIommuProps::compat_9_1())?;
    // Bits above aw-bits (39) are dropped from the latched pointer.
    dev.write(at(Reg::Rtaddr), 8, 0x0100_0000_0020_3000, &mem)?;
    assert_eq!(dev.root_table(), 0, "nothing latched before SRTP");
    let fx = command(&mut dev, &mem, Gcmd::SRTP)?;
    assert_eq!(fx, [Effect::RootTableChanged { root: 0x20_3000 }]);
    assert_eq!(dev.root_table(), 0x20_3000);
    assert!(gsts(&dev)?.contains(Gsts::RTPS));
    dev.write(at(Reg::Rtaddr), 8, 0x5000, &mem)?;
    assert_eq!(dev.root_table(), 0x20_3000, "RTADDR alone changes nothing");

    assert_eq!(command(&mut dev, &mem, Gcmd::TE)?, [Effect::TranslationEnabled(true)]);
    assert!(dev.translation_enabled() && gsts(&dev)?.contains(Gsts::TES));
    assert!(command(&mut dev, &mem, Gcmd::TE)?.is_empty(), "TE again: no change");
    assert_eq!(
        command_off(&mut dev, &mem, Gcmd::TE)?,
        [Effect::TranslationEnabled(false)]
    );
    assert!(!gsts(&dev)?.contains(Gsts::TES));
    Ok(())
}

#[test]
fn te_is_ignored_without_dma_translation() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device_with(IntelIommuProps {
        dma_translation: false,
        ..IntelIommuProps::default()
    })?;
    assert!(command(&mut dev, &mem, Gcmd::TE)?.is_empty());
    assert!(!dev.translation_enabled());
    Ok(())
}

#[test]
fn interrupt_remapping_commands() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    dev.write(at(Reg::Irta), 8, 0x8000 | (1 << 11) | 0x7, &mem)?;
    let fx = command(&mut dev, &mem, Gcmd::SIRTP)?;
    assert_eq!(
        fx,
        [Effect::InterruptTableChanged {
            addr: 0x8000,
            entries: 256,
            eime: true
        }]
    );
    assert!(gsts(&dev)?.contains(Gsts::IRTPS));
    assert_eq!(command(&mut dev, &mem, Gcmd::IRE)?, [Effect::InterruptRemapping(true)]);
    assert!(dev.interrupt_remapping_enabled() && gsts(&dev)?.contains(Gsts::IRES));

    let mut off = device_with(IntelIommuProps {
        intremap: OnOffAuto::Off,
        ..IntelIommuProps::default()
    })?;
    assert!(command(&mut off, &mem, Gcmd::IRE)?.is_empty());
    assert!(!off.interrupt_remapping_enabled());
    Ok(())
}

#[test]
fn queued_invalidation_latches_its_address_and_size() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    dev.write(at(Reg::Iqa), 8, 0x40_0000 | 2, &mem)?;
    assert_eq!(
        dev.read(at(Reg::Iqa), 8)?,
        2,
        "the address reads back only once latched"
    );
    assert!(command(&mut dev, &mem, Gcmd::QIE)?.is_empty());
    assert!(dev.queued_invalidation_enabled() && gsts(&dev)?.contains(Gsts::QIES));
    assert_eq!(dev.read(at(Reg::Iqa), 8)?, 0x40_0002);
    // Disabling needs a queue drained by a wait descriptor: refused here.
    command_off(&mut dev, &mem, Gcmd::QIE)?;
    assert!(dev.queued_invalidation_enabled() && gsts(&dev)?.contains(Gsts::QIES));
    Ok(())
}

#[test]
fn context_command_reports_the_granularity_done() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    let icc = 1u64 << 63;
    // Global, then domain (done as global, CAIG = 1).
    for cirg in [1u64, 2] {
        let fx = dev.write(at(Reg::Ccmd), 8, icc | cirg << 61 | 5, &mem)?;
        assert_eq!(fx, [Effect::ContextInvalidated(ContextScope::Global)]);
        assert_eq!(
            dev.read(at(Reg::Ccmd), 8)? >> 59,
            cirg << 2 | 1,
            "ICC clear, CIRG kept, CAIG global"
        );
    }
    // Device-selective, through the high half: SID 00:03.0, FM 3.
    dev.write(at(Reg::Ccmd), 4, 0x0018 << 16, &mem)?;
    let fx = dev.write(at(Reg::CcmdHi), 4, (icc | 3 << 61 | 3 << 32) >> 32, &mem)?;
    assert_eq!(
        fx,
        [Effect::ContextInvalidated(ContextScope::Devices {
            source: SourceId::new(0, 0x18),
            fm: 3
        })]
    );
    assert_eq!(dev.read(at(Reg::Ccmd), 8)? >> 59, 0b11_11);
    // No granularity: nothing done, CAIG 0.
    assert!(dev.write(at(Reg::Ccmd), 8, icc, &mem)?.is_empty());
    assert_eq!(dev.read(at(Reg::Ccmd), 8)? >> 59, 0);
    Ok(())
}

#[test]
fn iotlb_register_reports_the_granularity_done() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    let ivt = 1u64 << 63;
    let iotlb = at(Reg::Iotlb);
    assert_eq!(
        dev.write(iotlb, 8, ivt | 1 << 60, &mem)?,
        [Effect::IotlbInvalidated(IotlbScope::Global)]
    );
    // Bits 63:57: IVT clear, IIRG (61:60) kept, IAIG (58:57) global.
    assert_eq!(dev.read(iotlb, 8)? >> 57, 1 << 3 | 1);
    assert_eq!(
        dev.write(iotlb, 8, ivt | 2 << 60 | 7 << 32, &mem)?,
        [Effect::IotlbInvalidated(IotlbScope::Domain(7))]
    );
    assert_eq!(dev.read(iotlb, 8)? >> 57, 2 << 3 | 2, "IIRG kept, IAIG domain");
    dev.write(at(Reg::Iva), 8, 0x12_3000 | 2, &mem)?;
    // A low-half write alone does not start it.
    assert!(dev.write(iotlb, 4, 0, &mem)?.is_empty());
    let fx = dev.write(at(Reg::IotlbHi), 4, (ivt | 3 << 60 | 7 << 32) >> 32, &mem)?;
    assert_eq!(
        fx,
        [Effect::IotlbInvalidated(IotlbScope::Pages {
            domain: 7,
            addr: 0x12_3000,
            am: 2
        })]
    );
    assert_eq!(dev.read(iotlb, 8)? >> 57 & 3, 3);
    // An address mask above MAMV (18) is not done: IAIG 0.
    dev.write(at(Reg::Iva), 8, 19, &mem)?;
    assert!(dev.write(iotlb, 8, ivt | 3 << 60, &mem)?.is_empty());
    assert_eq!(dev.read(iotlb, 8)? >> 57 & 3, 0);
    Ok(())
}

#[test]
fn register_invalidation_is_ignored_while_the_queue_is_on() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = device()?;
    command(&mut dev, &mem, Gcmd::QIE)?;
    assert!(dev.write(at(Reg::Ccmd), 8, 1 << 63 | 1 << 61, &mem)?.is_empty());
    assert_ne!(dev.read(at(Reg::Ccmd), 8)? & 1 << 63, 0, "ICC stays set");
    assert!(dev.write(at(Reg::Iotlb), 8, 1 << 63 | 1 << 60, &mem)?.is_empty());
    assert_ne!(dev.read(at(Reg::Iotlb), 8)? & 1 << 63, 0, "IVT stays set");
    Ok(())
}
