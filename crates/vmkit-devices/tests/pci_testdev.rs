//! `pci-testdev` as plain data: QEMU's identity and BARs, its six tests,
//! what counts as a hit, and what an ioeventfd takes before the device
//! sees it.

use vmkit_devices::glue::pci::PciTestdev;
use vmkit_devices::pci::{BarIndex, BarKind, PciFunction};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MEM: BarIndex = BarIndex::ALL[0];
const IO: BarIndex = BarIndex::ALL[1];

fn header(dev: &mut PciTestdev, bar: BarIndex) -> Result<(u64, u64, u64, u64), Box<dyn std::error::Error>> {
    Ok((
        dev.bar_read(bar, 0, 1)?,
        dev.bar_read(bar, 4, 4)?,
        dev.bar_read(bar, 8, 1)?,
        dev.bar_read(bar, 12, 4)?,
    ))
}

#[test]
fn qemus_identity_and_bars() -> TestResult {
    let dev = PciTestdev::new(0)?;
    let cfg = dev.config();
    assert_eq!(cfg.read(0x00, 4)?, 0x0005_1b36);
    assert_eq!(cfg.read(0x08, 4)?, 0x00ff_0000, "revision 0, class 0x00ff");
    assert_eq!(cfg.read(0x3d, 1)?, 0, "no interrupt pin");
    assert_eq!(cfg.len(), 256, "conventional, even on PCI Express");
    let bars: Vec<_> = cfg.bars().map(|(i, b, _)| (i.number(), b.kind, b.size)).collect();
    assert_eq!(bars, [(0, BarKind::Mem32, 4096), (1, BarKind::Io, 256)]);
    let with_membar = PciTestdev::new(1 << 20)?;
    let bar2 = with_membar.config().bar(BarIndex::ALL[2]).ok_or("no BAR2")?;
    assert!(bar2.kind == BarKind::Mem64 && bar2.prefetchable && bar2.size == 1 << 20);
    Ok(())
}

#[test]
fn a_test_counts_matching_hits_and_reads_back_its_header() -> TestResult {
    let mut dev = PciTestdev::new(0)?;
    assert_eq!(dev.bar_read(MEM, 0, 4)?, 0, "no test: zeros");
    dev.bar_write(MEM, 0, 1, 0)?;
    assert_eq!(dev.current_test().as_deref(), Some("mmio-no-eventfd"));
    assert_eq!(header(&mut dev, IO)?, (0, 2048, 0xfa, 0), "either BAR reads the header");
    dev.bar_write(MEM, 2048, 1, 0xfa)?;
    dev.bar_write(MEM, 2048, 1, 0xfb)?;
    dev.bar_write(MEM, 2049, 1, 0xfa)?;
    assert_eq!(dev.count(0), Some(1), "only the matching byte at the test's offset");
    // A wider write reaches the device as bytes: the first carries 0xfa.
    dev.bar_write(MEM, 2048, 2, 0x11fa)?;
    assert_eq!(dev.count(0), Some(2));
    // The name, NUL-terminated; the byte before the end reads 0.
    let name: Vec<u8> = (16..31)
        .map(|i| dev.bar_read(MEM, i, 1).map(|b| b as u8))
        .collect::<Result<_, _>>()?;
    assert_eq!(name, b"mmio-no-eventfd");
    assert_eq!(dev.bar_read(MEM, 31, 1)?, 0);
    // Starting a test clears its count; a number past 2 stops it.
    dev.bar_write(MEM, 0, 1, 0)?;
    assert_eq!(dev.count(0), Some(0));
    dev.bar_write(IO, 0, 1, 7)?;
    assert_eq!(dev.current_test(), None);
    Ok(())
}

#[test]
fn an_ioeventfd_takes_the_writes_it_matches() -> TestResult {
    let mut dev = PciTestdev::new(0)?;
    // portio-wildcard-eventfd: any one-byte write at 0x84 is the eventfd's.
    dev.bar_write(IO, 0, 1, 1)?;
    assert_eq!(header(&mut dev, MEM)?, (4, 0x84, 0xce, 0));
    dev.bar_write(IO, 0x84, 1, 0x12)?;
    assert_eq!(dev.count(4), Some(0), "taken by the eventfd");
    dev.bar_write(IO, 0x84, 2, 0x1234)?;
    assert_eq!(
        dev.count(4),
        Some(1),
        "two bytes: not the eventfd's; the first byte hits"
    );
    dev.bar_write(MEM, 0x84, 1, 0x12)?;
    assert_eq!(dev.count(4), Some(2), "the other BAR has no eventfd");
    // portio-datamatch-eventfd: the matching write is the eventfd's, any
    // other is not a hit.
    dev.bar_write(IO, 0, 1, 2)?;
    dev.bar_write(IO, 0x85, 1, 0xfa)?;
    dev.bar_write(IO, 0x85, 1, 0xfb)?;
    assert_eq!(dev.count(5), Some(0));
    dev.reset();
    assert_eq!(dev.current_test(), None);
    Ok(())
}
