//! MSI-X: masking, pending bits, and what an unmask sends.

use vmkit_devices::pci::msix::{CONTROL_ENABLE, CONTROL_FUNCTION_MASK};
use vmkit_devices::pci::{MsiMessage, Msix, PciError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn program(msix: &mut Msix, v: u64, address: u64, data: u32) -> Result<(), PciError> {
    msix.table_write(v * 16, 8, address)?;
    msix.table_write(v * 16 + 8, 4, u64::from(data))?;
    Ok(())
}

#[test]
fn vectors_start_masked_and_disabled() -> TestResult {
    let mut msix = Msix::new(16)?;
    assert_eq!(msix.control(), 15);
    assert_eq!(msix.table_read(12, 4)?, 1, "vector control: masked");
    assert_eq!(msix.notify(0), None);
    assert!(!msix.is_pending(0), "while disabled nothing becomes pending");
    assert!(Msix::new(0).is_err() && Msix::new(2049).is_err());
    Ok(())
}

#[test]
fn a_masked_vector_pends_and_unmasking_sends_it_once() -> TestResult {
    let mut msix = Msix::new(4)?;
    program(&mut msix, 2, 0xfee0_0000, 0x4041)?;
    assert!(msix.write_control(CONTROL_ENABLE).is_empty());
    assert_eq!(msix.notify(2), None);
    assert!(msix.is_pending(2));
    assert_eq!(msix.pba_read(0, 4)?, 0b100);
    let sent = msix.table_write(2 * 16 + 12, 4, 0)?;
    assert_eq!(
        sent,
        vec![MsiMessage {
            address: 0xfee0_0000,
            data: 0x4041
        }]
    );
    assert!(!msix.is_pending(2));
    assert_eq!(
        msix.notify(2),
        Some(MsiMessage {
            address: 0xfee0_0000,
            data: 0x4041
        })
    );
    Ok(())
}

#[test]
fn the_function_mask_holds_every_vector() -> TestResult {
    let mut msix = Msix::new(2)?;
    program(&mut msix, 0, 0xfee0_1000, 7)?;
    msix.table_write(12, 4, 0)?;
    msix.write_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
    assert_eq!(msix.notify(0), None);
    assert!(msix.is_pending(0));
    let sent = msix.write_control(CONTROL_ENABLE);
    assert_eq!(
        sent,
        vec![MsiMessage {
            address: 0xfee0_1000,
            data: 7
        }]
    );
    assert_eq!(msix.control() & CONTROL_FUNCTION_MASK, 0);
    Ok(())
}

#[test]
fn bad_accesses_are_errors_and_reset_masks_again() -> TestResult {
    let mut msix = Msix::new(2)?;
    assert!(msix.table_read(2, 4).is_err());
    assert!(msix.table_read(32, 4).is_err());
    assert!(msix.table_read(0, 2).is_err());
    assert!(msix.pba_read(8, 8).is_err());
    msix.table_write(12, 4, 0xffff_fff0)?;
    assert_eq!(msix.table_read(12, 4)?, 0, "reserved bits read as 0");
    msix.write_control(CONTROL_ENABLE);
    msix.reset();
    assert!(msix.is_masked(0) && !msix.enabled());
    Ok(())
}

#[test]
fn the_raw_state_is_the_table_then_the_pending_bits() -> TestResult {
    let mut msix = Msix::new(10)?;
    program(&mut msix, 9, 0xfee0_1000, 0x51)?;
    msix.write_control(CONTROL_ENABLE);
    assert_eq!(msix.notify(9), None, "masked: pending");
    let raw = msix.save_raw();
    assert_eq!(raw.len(), 10 * 16 + 2);
    assert_eq!(&raw[9 * 16..9 * 16 + 4], &0xfee0_1000u32.to_le_bytes());
    assert_eq!(raw[9 * 16 + 12], 1, "vector control: masked");
    assert_eq!(&raw[160..], &[0, 0b10], "vector 9 pending");
    let mut dst = Msix::new(10)?;
    assert!(dst.load_raw(&raw, CONTROL_ENABLE)?.is_empty());
    assert_eq!(dst, msix, "the same state back");
    // A length that is not this function's changes nothing.
    let mut small = Msix::new(4)?;
    let before = small.clone();
    assert!(matches!(small.load_raw(&raw, 0), Err(PciError::BadMsix { .. })));
    assert_eq!(small, before);
    Ok(())
}
