//! intel-iommu properties: QEMU's defaults, the realize-time refusals with
//! QEMU's messages, and the register reset values each combination gives.

use vmkit_devices::dma::TestMemory;
use vmkit_devices::iommu::props::{PROPERTIES, check_single_instance};
use vmkit_devices::iommu::{AwBits, IntelIommu, IntelIommuProps, IommuError, IrqChip, OnOffAuto, Reg};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SPLIT: IrqChip = IrqChip::Split { x2apic_api: true };

fn regs_of(props: &IntelIommuProps, irqchip: IrqChip) -> Result<(u64, u64, u64), Box<dyn std::error::Error>> {
    let dev = IntelIommu::new(props.realize(irqchip)?);
    Ok((
        dev.read(Reg::Ver.offset() as u64, 4)?,
        dev.read(Reg::Cap.offset() as u64, 8)?,
        dev.read(Reg::Ecap.offset() as u64, 8)?,
    ))
}

fn refusal(props: IntelIommuProps, irqchip: IrqChip) -> String {
    match props.realize(irqchip) {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_defaults_are_qemus() -> TestResult {
    let p = IntelIommuProps::default();
    assert_eq!(p.aw_bits, 48, "QEMU 9.2 raised aw-bits to 48");
    assert_eq!(IntelIommuProps::compat_9_1().aw_bits, 39);
    assert_eq!((p.intremap, p.eim), (OnOffAuto::Auto, OnOffAuto::Auto));
    assert!(p.pt && p.dma_drain && p.dma_translation && p.fs1gp);
    assert!(!(p.caching_mode || p.device_iotlb || p.x_scalable_mode || p.x_flts || p.x_pasid_mode));
    let names: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "intremap",
            "device-iotlb",
            "pt",
            "eim",
            "x-buggy-eim",
            "aw-bits",
            "caching-mode",
            "x-scalable-mode",
            "x-flts",
            "snoop-control",
            "x-pasid-mode",
            "dma-drain",
            "dma-translation",
            "stale-tm",
            "fs1gp"
        ]
    );
    let aw = PROPERTIES.iter().find(|p| p.name == "aw-bits").ok_or("no aw-bits")?;
    assert_eq!((aw.kind, aw.default), ("uint8", "48"));
    Ok(())
}

#[test]
fn auto_decides_from_the_irqchip() -> TestResult {
    let p = IntelIommuProps::default();
    let tcg = p.realize(IrqChip::Userspace)?;
    assert!(tcg.intremap && !tcg.eim, "TCG: remapping on, EIM off");
    let split = p.realize(SPLIT)?;
    assert!(split.intremap && split.eim, "split irqchip: both on");
    let kernel = p.realize(IrqChip::Kernel)?;
    assert!(!kernel.intremap && !kernel.eim, "all in KVM: remapping off");
    let buggy = IntelIommuProps {
        x_buggy_eim: true,
        ..IntelIommuProps::default()
    };
    assert!(buggy.realize(IrqChip::Userspace)?.eim);
    assert_eq!(p.realize(SPLIT)?.aw_bits, AwBits::Aw48);
    Ok(())
}

#[test]
fn refusals_carry_qemus_messages() {
    let d = IntelIommuProps::default;
    let cases: Vec<(IntelIommuProps, IrqChip, &str)> = vec![
        (
            IntelIommuProps {
                intremap: OnOffAuto::On,
                ..d()
            },
            IrqChip::Kernel,
            "Interrupt Remapping cannot work with kernel-irqchip=on, please use 'split|off'.",
        ),
        (
            IntelIommuProps {
                intremap: OnOffAuto::Off,
                eim: OnOffAuto::On,
                ..d()
            },
            IrqChip::Userspace,
            "eim=on cannot be selected without intremap=on",
        ),
        (
            IntelIommuProps {
                eim: OnOffAuto::On,
                ..d()
            },
            IrqChip::Split { x2apic_api: false },
            "eim=on requires support on the KVM side(X2APIC_API, first shipped in v4.7)",
        ),
        (
            IntelIommuProps { aw_bits: 40, ..d() },
            IrqChip::Userspace,
            "Legacy mode: supported values for aw-bits are: 39, 48",
        ),
        (
            IntelIommuProps {
                aw_bits: 52,
                x_scalable_mode: true,
                ..d()
            },
            IrqChip::Userspace,
            "Scalable mode(flts=off): supported values for aw-bits are: 39, 48",
        ),
        (
            IntelIommuProps { x_flts: true, ..d() },
            IrqChip::Userspace,
            "x-flts is only available in scalable mode",
        ),
        (
            IntelIommuProps {
                x_flts: true,
                x_scalable_mode: true,
                aw_bits: 39,
                ..d()
            },
            IrqChip::Userspace,
            "Scalable mode(flts=on): supported value for aw-bits is: 48",
        ),
        (
            IntelIommuProps {
                x_scalable_mode: true,
                dma_drain: false,
                ..d()
            },
            IrqChip::Userspace,
            "Need to set dma_drain for scalable mode",
        ),
        (
            IntelIommuProps {
                x_pasid_mode: true,
                ..d()
            },
            IrqChip::Userspace,
            "Need to set scalable mode for PASID",
        ),
        (
            IntelIommuProps {
                x_pasid_mode: true,
                x_scalable_mode: true,
                device_iotlb: true,
                ..d()
            },
            IrqChip::Userspace,
            "PASID based device IOTLB is not supported",
        ),
        (
            IntelIommuProps {
                x_scalable_mode: true,
                ..d()
            },
            IrqChip::Userspace,
            "x-scalable-mode=on is not supported: vmkit's intel-iommu translates in legacy mode only",
        ),
    ];
    for (props, irqchip, message) in cases {
        assert_eq!(refusal(props.clone(), irqchip), message, "{props:?}");
    }
    // The KVM check does not apply with the old-kernel escape hatch.
    let buggy = IntelIommuProps {
        eim: OnOffAuto::On,
        x_buggy_eim: true,
        ..d()
    };
    assert!(buggy.realize(IrqChip::Split { x2apic_api: false }).is_ok());
    assert_eq!(
        check_single_instance(true).map_err(|e| e.to_string()),
        Err("QEMU does not support multiple vIOMMUs for x86 yet.".to_string())
    );
    assert_eq!(check_single_instance(false), Ok(()));
}

#[test]
fn version_capabilities_and_extended_capabilities_per_configuration() -> TestResult {
    let d = IntelIommuProps::default;
    // CAP: FRO 0x22, ND 6, MAMV 18, PSI, 2 MiB and 1 GiB pages, drain,
    // SAGAW 39+48, MGAW 47. ECAP: QI, IRO 0xf, IR, MHMV 15, PT.
    assert_eq!(
        regs_of(&d(), IrqChip::Userspace)?,
        (0x10, 0x00d2_008c_222f_0606, 0xf0_0f4a)
    );
    // aw-bits=39: SAGAW 39 only, MGAW 38 (Linux prints "cap d2008c22260206").
    assert_eq!(
        regs_of(&IntelIommuProps::compat_9_1(), IrqChip::Userspace)?.1,
        0x00d2_008c_2226_0206
    );
    let cases: Vec<(IntelIommuProps, IrqChip, u64, u64)> = vec![
        (
            IntelIommuProps {
                caching_mode: true,
                ..d()
            },
            IrqChip::Userspace,
            0x00d2_008c_222f_0686,
            0xf0_0f4a,
        ),
        (
            IntelIommuProps {
                dma_drain: false,
                ..d()
            },
            IrqChip::Userspace,
            0x0012_008c_222f_0606,
            0xf0_0f4a,
        ),
        (
            IntelIommuProps {
                dma_translation: false,
                ..d()
            },
            IrqChip::Userspace,
            0x00d2_008c_222f_0006,
            0xf0_0f4a,
        ),
        (
            IntelIommuProps {
                intremap: OnOffAuto::Off,
                ..d()
            },
            IrqChip::Userspace,
            0x00d2_008c_222f_0606,
            0xf42,
        ),
        (d(), SPLIT, 0x00d2_008c_222f_0606, 0xf0_0f5a),
        (
            IntelIommuProps {
                device_iotlb: true,
                pt: false,
                ..d()
            },
            IrqChip::Userspace,
            0x00d2_008c_222f_0606,
            0xf0_0f0e,
        ),
        (
            IntelIommuProps {
                snoop_control: true,
                ..d()
            },
            IrqChip::Userspace,
            0x00d2_008c_222f_0606,
            0xf0_0fca,
        ),
    ];
    for (props, irqchip, cap, ecap) in cases {
        let (ver, got_cap, got_ecap) = regs_of(&props, irqchip)?;
        assert_eq!(ver, 0x10);
        assert_eq!(
            (got_cap, got_ecap),
            (cap, ecap),
            "{props:?} {irqchip:?}: {got_cap:#x} {got_ecap:#x}"
        );
    }
    Ok(())
}

#[test]
fn other_registers_reset_as_qemus() -> TestResult {
    let mem = TestMemory::new(0x1000);
    let mut dev = IntelIommu::new(IntelIommuProps::default().realize(IrqChip::Userspace)?);
    // Event controls start masked; everything else reads 0.
    assert_eq!(dev.read(Reg::Fectl.offset() as u64, 4)?, 0x8000_0000);
    assert_eq!(dev.read(Reg::Iectl.offset() as u64, 4)?, 0x8000_0000);
    for off in (0x18..0x230u64).step_by(4) {
        if off != 0x38 && off != 0xa0 {
            assert_eq!(dev.read(off, 4)?, 0, "offset {off:#x}");
        }
    }
    // Reset undoes guest programming.
    dev.write(Reg::Fedata.offset() as u64, 4, 0x41, &mem)?;
    dev.write(Reg::Rtaddr.offset() as u64, 8, 0x2000, &mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 30, &mem)?;
    dev.write(Reg::Gcmd.offset() as u64, 4, 1 << 31, &mem)?;
    assert!(dev.translation_enabled());
    let fx = dev.reset();
    assert!(!dev.translation_enabled());
    assert_eq!(dev.root_table(), 0);
    assert_eq!(
        fx,
        [
            vmkit_devices::iommu::Effect::TranslationEnabled(false),
            vmkit_devices::iommu::Effect::InterruptRemapping(false)
        ]
    );
    for off in [0x1c, 0x20, 0x3c] {
        assert_eq!(dev.read(off, 4)?, 0, "offset {off:#x}");
    }
    Ok(())
}

#[test]
fn a_refusal_is_an_error_value() {
    let err = IntelIommuProps {
        aw_bits: 0,
        ..IntelIommuProps::default()
    }
    .realize(IrqChip::Userspace);
    assert_eq!(err, Err(IommuError::AwBits { mode: "Legacy mode" }));
}
