//! Restoring a stream from a machine with more than the destination
//! models (a real QEMU's firmware blocks and devices): refused by default,
//! taken and listed with `Unmodelled::Report`, every other check intact.

use std::sync::Arc;

use vmkit_memory::RamBlock;
use vmkit_migration::Error;
use vmkit_migration::analyze::analyze;
use vmkit_migration::device_state::DynDeviceState;
use vmkit_migration::savevm::{
    DeviceEntry, RestoreOptions, SaveOptions, SaveSet, SavevmError, Unmodelled, restore, save,
};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::vmstate::{ArrayLen, FieldKind, MigrationPriority, VmStateDescription, VmStruct, VmValue};
use vmkit_migration::wire::{ParserOptions, WireError};

type TestResult = Result<(), Box<dyn std::error::Error>>;
/// A destination: its set, its RAM block and its one device.
type Destination = (SaveSet, Arc<RamBlock>, Arc<ValueDevice>);

const PAGE: u64 = 4096;

/// `uart`: what both machines model. `fw`: only the source has it, with
/// an array counted by a field, a buffer and a subsection; it has a higher
/// priority, so its sections come before `uart`'s in the stream.
fn uart_vmsd() -> Result<Arc<VmStateDescription>, Box<dyn std::error::Error>> {
    Ok(VmStateDescription::builder("uart")
        .version(1)
        .simple("lcr", FieldKind::U8)
        .simple("divider", FieldKind::U16)
        .build()?)
}

fn fw_vmsd() -> Result<Arc<VmStateDescription>, Box<dyn std::error::Error>> {
    let sub = VmStateDescription::builder("fw/dma")
        .version(1)
        .simple("base", FieldKind::U64)
        .build()?;
    Ok(VmStateDescription::builder("fw")
        .version(3)
        .priority(MigrationPriority::PciBus)
        .simple("n", FieldKind::U8)
        .simple(
            "slots",
            FieldKind::Array {
                elem: Box::new(FieldKind::U32),
                len: ArrayLen::Field("n".into()),
            },
        )
        .simple("id", FieldKind::Buffer { len: 4 })
        .subsection(sub)
        .build()?)
}

fn uart(lcr: u64) -> Result<Arc<ValueDevice>, Box<dyn std::error::Error>> {
    Ok(ValueDevice::new(
        uart_vmsd()?,
        VmStruct::new()
            .with("lcr", VmValue::UInt(lcr))
            .with("divider", VmValue::UInt(12)),
    ))
}

fn entry(idstr: &str, instance_id: u32, dev: Arc<ValueDevice>) -> DeviceEntry {
    DeviceEntry::new(idstr, instance_id, dev as Arc<dyn DynDeviceState>)
}

/// The source: `pc.ram` (data every fifth page), `pc.bios` (all data),
/// `uart` and two `fw` devices.
fn source() -> Result<(SaveSet, Arc<RamBlock>), Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous("pc.ram", 32 * PAGE)?;
    for p in (0..32).step_by(5) {
        ram.write(p * PAGE + 9, b"guest data")?;
    }
    let bios = RamBlock::anonymous("pc.bios", 4 * PAGE)?;
    bios.fill(0, 4 * PAGE, 0xea)?;
    let fw = fw_vmsd()?;
    let fw_state = |n: u64| {
        VmStruct::new()
            .with("n", VmValue::UInt(n))
            .with(
                "slots",
                VmValue::Array((0..n).map(|i| VmValue::UInt(100 + i)).collect()),
            )
            .with("id", VmValue::Bytes(b"QEMU".to_vec()))
            .with_subsection("fw/dma", VmStruct::new().with("base", VmValue::UInt(0xfeed_0000)))
    };
    let devices = vec![
        entry("uart", 0, uart(3)?),
        entry("0000:00:1f.0/fw", 0, ValueDevice::new(Arc::clone(&fw), fw_state(2))),
        entry("0000:00:1f.0/fw", 1, ValueDevice::new(fw, fw_state(0))),
    ];
    Ok((SaveSet::new("pc-q35-7.2", vec![Arc::clone(&ram), bios], devices), ram))
}

/// The destination: `pc.ram` and `uart` only.
fn destination() -> Result<Destination, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous("pc.ram", 32 * PAGE)?;
    ram.fill(0, 32 * PAGE, 0x5a)?; // zero pages must clear it
    let dev = uart(0)?;
    let set = SaveSet::new(
        "pc-q35-7.2",
        vec![Arc::clone(&ram)],
        vec![entry("uart", 0, Arc::clone(&dev))],
    );
    Ok((set, ram, dev))
}

fn stream(vmdesc: bool) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let (set, _) = source()?;
    let mut out = Vec::new();
    save(
        &set,
        &mut out,
        &SaveOptions {
            footers: true,
            vmdesc,
            ..SaveOptions::default()
        },
    )?;
    Ok(out)
}

fn reporting() -> RestoreOptions {
    RestoreOptions {
        unmodelled: Unmodelled::Report,
        ..RestoreOptions::default()
    }
}

fn read_all(b: &RamBlock) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut v = vec![0u8; b.used_length() as usize];
    b.read(0, &mut v)?;
    Ok(v)
}

#[test]
fn by_default_what_is_not_modelled_is_refused() -> TestResult {
    let s = stream(true)?;
    let (set, _, dev) = destination()?;
    let Err(e) = restore(&set, s.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(
        matches!(&e, Error::Wire(WireError::UnknownRamBlock { name, .. }) if name == "pc.bios"),
        "{e}"
    );
    assert_eq!(dev.loads(), 0);
    // With the block, the first unmodelled section is refused.
    let (set, ram, dev) = destination()?;
    let bios = RamBlock::anonymous("pc.bios", 4 * PAGE)?;
    let set = SaveSet::new(set.machine_type.clone(), vec![ram, bios], set.devices.clone());
    let Err(e) = restore(&set, s.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(
        matches!(&e, Error::Wire(WireError::UnknownSection { idstr, instance_id: 0, .. }) if idstr == "0000:00:1f.0/fw"),
        "{e}"
    );
    assert_eq!(dev.loads(), 0);
    Ok(())
}

#[test]
fn reporting_takes_and_lists_what_is_not_modelled() -> TestResult {
    let s = stream(true)?;
    let (src, src_ram) = source()?;
    drop(src);
    let (set, ram, dev) = destination()?;
    let stats = restore(&set, s.as_slice(), &reporting())?;
    assert_eq!(stats.bytes, s.len() as u64);
    assert_eq!(read_all(&ram)?, read_all(&src_ram)?);
    // The modelled device after the unmodelled ones loaded from the
    // bytes held ahead.
    assert_eq!(dev.loads(), 1);
    assert_eq!(dev.get().get_u64("lcr"), Some(3));
    assert_eq!(stats.devices, 1);
    // Counts are this machine's blocks only.
    assert_eq!((stats.normal_pages, stats.zero_pages), (7, 25));

    let blocks = &stats.unmodelled.ram_blocks;
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (
            blocks[0].name.as_str(),
            blocks[0].length,
            blocks[0].normal_pages,
            blocks[0].zero_pages
        ),
        ("pc.bios", 4 * PAGE, 4, 0)
    );

    // The sections, decoded as the analyzer decodes them.
    let report = analyze(&mut std::io::Cursor::new(&s), ParserOptions::default());
    let sections = &stats.unmodelled.sections;
    assert_eq!(sections.len(), 2);
    for (sec, instance) in sections.iter().zip(0..) {
        assert_eq!((sec.idstr.as_str(), sec.instance_id), ("0000:00:1f.0/fw", instance));
        assert_eq!((sec.version_id, sec.vmsd_name.as_str()), (3, "fw"));
        let analyzed = report
            .devices
            .iter()
            .find(|d| d.idstr == sec.idstr && d.instance_id == instance)
            .ok_or("not in the analyzer's report")?;
        assert_eq!(sec.fields, analyzed.fields);
        assert_eq!(sec.offset, analyzed.offset);
        let record = report
            .records
            .iter()
            .find(|r| r.offset == sec.offset)
            .ok_or("no record")?;
        assert_eq!(Some(sec.size), record.body_len);
    }
    assert_eq!(sections[0].fields["slots"], serde_json::json!([100, 101]));
    assert_eq!(sections[0].fields["id"], "51454d55");
    assert_eq!(sections[0].fields["subsections"]["fw/dma"]["base"], 0xfeed_0000_u64);
    assert_eq!(sections[1].fields["n"], 0);
    Ok(())
}

#[test]
fn reporting_keeps_every_check_on_what_is_modelled() -> TestResult {
    let s = stream(true)?;
    // A device this machine has that the stream lacks.
    let (set, _, dev) = destination()?;
    let extra = uart(0)?;
    let mut devices = set.devices.clone();
    devices.push(entry("uart", 1, Arc::clone(&extra)));
    let set = SaveSet::new(set.machine_type.clone(), set.ram.clone(), devices);
    let Err(e) = restore(&set, s.as_slice(), &reporting()) else {
        return Err("accepted".into());
    };
    assert!(
        matches!(&e, Error::Savevm(SavevmError::MissingSection { instance_id: 1, .. })),
        "{e}"
    );
    assert_eq!((dev.loads(), extra.loads()), (0, 0));

    // A modelled block of another length.
    let short = SaveSet::new(
        "pc-q35-7.2",
        vec![RamBlock::anonymous("pc.ram", 16 * PAGE)?],
        Vec::new(),
    );
    let Err(e) = restore(&short, s.as_slice(), &reporting()) else {
        return Err("accepted".into());
    };
    assert!(matches!(&e, Error::Wire(WireError::RamBlockLength { .. })), "{e}");
    Ok(())
}

#[test]
fn an_unmodelled_section_needs_the_trailer() -> TestResult {
    let (set, _, dev) = destination()?;
    let Err(e) = restore(&set, stream(false)?.as_slice(), &reporting()) else {
        return Err("accepted".into());
    };
    let msg = e.to_string();
    assert!(matches!(&e, Error::Wire(WireError::BadBody { idstr, .. }) if idstr == "0000:00:1f.0/fw"));
    assert!(msg.contains("no VMDESCRIPTION trailer"), "{msg}");
    assert_eq!(dev.loads(), 0);

    // A cut trailer: not found, or found short.
    let s = stream(true)?;
    for cut in [s.len() - 1, s.len() - 40] {
        let (set, _, dev) = destination()?;
        let Err(e) = restore(&set, &s[..cut], &reporting()) else {
            return Err(format!("cut at {cut} accepted").into());
        };
        assert!(e.to_string().contains("VMDESCRIPTION"), "{cut}: {e}");
        assert_eq!(dev.loads(), 0);
    }
    Ok(())
}

#[test]
fn a_body_the_trailer_does_not_describe_is_refused() -> TestResult {
    let s = stream(true)?;
    let report = analyze(&mut std::io::Cursor::new(&s), ParserOptions::default());
    let fw = report
        .records
        .iter()
        .find(|r| r.idstr.as_deref() == Some("0000:00:1f.0/fw"))
        .ok_or("no fw section")?;
    let header_len = 1 + 4 + 1 + "0000:00:1f.0/fw".len() + 4 + 4;
    let body_end = fw.offset as usize + header_len + fw.body_len.ok_or("no body length")? as usize;
    // The subsection marker: 0x05, name length, name, be32 version, be64 base.
    let marker = body_end - 8 - 4 - "fw/dma".len() - 1 - 1;
    assert_eq!(s[marker], 0x05);
    let mut bad = s.clone();
    bad[marker] = 0x07;
    let (set, _, dev) = destination()?;
    let Err(e) = restore(&set, bad.as_slice(), &reporting()) else {
        return Err("accepted".into());
    };
    assert!(e.to_string().contains("fw"), "{e}");
    assert_eq!(dev.loads(), 0, "a refused stream changes no device");
    Ok(())
}
