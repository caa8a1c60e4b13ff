//! Whole-machine save and restore: RAM and device sections round-trip,
//! and every refused stream leaves the devices untouched.

use std::sync::Arc;

use vmkit_memory::RamBlock;
use vmkit_migration::Error;
use vmkit_migration::analyze::analyze;
use vmkit_migration::device_state::{DeviceState, DynDeviceState, StateError};
use vmkit_migration::savevm::{
    DeviceEntry, RestoreOptions, SaveOptions, SaveSet, SavevmError, restore, restore_buffered, save,
};
use vmkit_migration::test_support::ValueDevice;
use vmkit_migration::vmstate::{ArrayLen, FieldKind, MigrationPriority, VmStateDescription, VmStruct, VmValue};
use vmkit_migration::wire::{ParserOptions, WireError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn timer_vmsd(version: u32) -> Result<Arc<VmStateDescription>, Box<dyn std::error::Error>> {
    let sub = VmStateDescription::builder("timer/armed")
        .version(1)
        .simple("deadline", FieldKind::U64)
        // As in QEMU, `needed` sees the parent's state.
        .needed(|s| {
            Ok(s.subsection("timer/armed")
                .and_then(|a| a.get_u64("deadline"))
                .is_some_and(|d| d != 0))
        })
        .build()?;
    let mut b = VmStateDescription::builder("timer")
        .version(version)
        .minimum_version(1)
        .simple("ctrl", FieldKind::U32)
        .simple("qlen", FieldKind::U16)
        .simple(
            "queue",
            FieldKind::Array {
                elem: Box::new(FieldKind::U16),
                len: ArrayLen::Field("qlen".into()),
            },
        )
        .simple("regs", FieldKind::Buffer { len: 8 })
        .subsection(sub);
    if version >= 2 {
        b = b.field(vmkit_migration::vmstate::Field::new("dma_base", FieldKind::U64).since(2));
    }
    Ok(b.build()?)
}

fn timer_state(ctrl: u64, deadline: u64) -> VmStruct {
    VmStruct::new()
        .with("ctrl", VmValue::UInt(ctrl))
        .with("qlen", VmValue::UInt(3))
        .with(
            "queue",
            VmValue::Array(vec![VmValue::UInt(1), VmValue::UInt(2), VmValue::UInt(3)]),
        )
        .with("regs", VmValue::Bytes(vec![0xaa; 8]))
        .with("dma_base", VmValue::UInt(0x7f00_1234_0000))
        .with_subsection("timer/armed", VmStruct::new().with("deadline", VmValue::UInt(deadline)))
}

fn device(vmsd: Arc<VmStateDescription>, state: VmStruct) -> Arc<ValueDevice> {
    ValueDevice::new(vmsd, state)
}

fn section(idstr: &str, instance_id: u32, dev: &Arc<ValueDevice>) -> DeviceEntry {
    DeviceEntry {
        idstr: idstr.into(),
        instance_id,
        device: Arc::clone(dev) as Arc<dyn DynDeviceState>,
    }
}

fn patterned_ram(name: &str, pages: u64) -> Result<Arc<RamBlock>, Box<dyn std::error::Error>> {
    let ram = RamBlock::anonymous(name, pages * 4096)?;
    for p in (0..pages).step_by(3) {
        ram.write(p * 4096 + 17, &(p + 1).to_le_bytes())?;
    }
    Ok(ram)
}

struct Machine {
    ram: Vec<Arc<RamBlock>>,
    timers: Vec<Arc<ValueDevice>>,
    set: SaveSet,
}

fn machine(version: u32, ctrl: u64) -> Result<Machine, Box<dyn std::error::Error>> {
    let ram = vec![patterned_ram("pc.ram", 64)?, RamBlock::anonymous("vga.vram", 8 * 4096)?];
    let vmsd = timer_vmsd(version)?;
    let timers = vec![
        device(Arc::clone(&vmsd), timer_state(ctrl, 99)),
        device(vmsd, timer_state(ctrl + 1, 0)),
    ];
    let devices = vec![section("timer", 0, &timers[0]), section("timer", 1, &timers[1])];
    let set = SaveSet::new("pc-q35-vmkit", ram.clone(), devices);
    Ok(Machine { ram, timers, set })
}

fn blank(version: u32) -> Result<Machine, Box<dyn std::error::Error>> {
    let ram = vec![
        RamBlock::anonymous("pc.ram", 64 * 4096)?,
        RamBlock::anonymous("vga.vram", 8 * 4096)?,
    ];
    let vmsd = timer_vmsd(version)?;
    let timers = vec![
        device(Arc::clone(&vmsd), timer_state(0, 0)),
        device(vmsd, timer_state(0, 0)),
    ];
    let devices = vec![section("timer", 0, &timers[0]), section("timer", 1, &timers[1])];
    let set = SaveSet::new("pc-q35-vmkit", ram.clone(), devices);
    Ok(Machine { ram, timers, set })
}

fn ram_bytes(ram: &[Arc<RamBlock>]) -> Result<Vec<Vec<u8>>, Box<dyn std::error::Error>> {
    ram.iter()
        .map(|b| {
            let mut v = vec![0u8; b.used_length() as usize];
            b.read(0, &mut v)?;
            Ok(v)
        })
        .collect()
}

fn saved(m: &Machine) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    save(&m.set, &mut out, &SaveOptions::default())?;
    Ok(out)
}

#[test]
fn ram_and_devices_round_trip() -> TestResult {
    let src = machine(2, 0x40)?;
    let mut stream = Vec::new();
    let stats = save(&src.set, &mut stream, &SaveOptions::default())?;
    assert_eq!(stats.bytes, stream.len() as u64);
    assert_eq!(stats.devices, 2);
    assert_eq!(stats.ram_bytes, 72 * 4096);
    assert_eq!(stats.normal_pages, 22, "every third page of pc.ram holds data");
    assert_eq!(stats.zero_pages, 72 - 22);

    let dst = blank(2)?;
    let rs = restore(&dst.set, stream.as_slice(), &RestoreOptions::default())?;
    assert_eq!(rs.bytes, stream.len() as u64);
    assert_eq!(rs.devices, 2);
    assert_eq!((rs.zero_pages, rs.normal_pages), (stats.zero_pages, stats.normal_pages));
    assert_eq!(ram_bytes(&dst.ram)?, ram_bytes(&src.ram)?);
    for (a, b) in src.timers.iter().zip(&dst.timers) {
        assert_eq!(a.get(), b.get());
    }
    // The unneeded subsection of timer 1 was not sent and the receiver's
    // value (0) stays; timer 0's was.
    assert_eq!(
        dst.timers[0]
            .get()
            .subsection("timer/armed")
            .and_then(|s| s.get_u64("deadline")),
        Some(99)
    );
    Ok(())
}

#[test]
fn a_buffered_restore_loads_the_same_machine() -> TestResult {
    let src = machine(2, 0x40)?;
    let stream = saved(&src)?;
    // A buffer smaller than a page record and not a divisor of one: pages
    // straddle its end and come the copying way, others are lent out.
    for capacity in [1000, 5000, 1 << 20] {
        let dst = blank(2)?;
        let reader = std::io::BufReader::with_capacity(capacity, stream.as_slice());
        let rs = restore_buffered(&dst.set, reader, &RestoreOptions::default())?;
        assert_eq!(rs.bytes, stream.len() as u64, "buffer {capacity}");
        assert_eq!(ram_bytes(&dst.ram)?, ram_bytes(&src.ram)?, "buffer {capacity}");
        for (a, b) in src.timers.iter().zip(&dst.timers) {
            assert_eq!(a.get(), b.get());
        }
    }
    // A damaged stream is refused the same way.
    let cut = &stream[..stream.len() / 2];
    let dst = blank(2)?;
    let (Err(a), Err(b)) = (
        restore(&dst.set, cut, &RestoreOptions::default()),
        restore_buffered(&dst.set, cut, &RestoreOptions::default()),
    ) else {
        return Err("a truncated stream was accepted".into());
    };
    assert_eq!(a.to_string(), b.to_string());
    Ok(())
}

#[test]
fn the_analyzer_decodes_a_saved_stream_by_its_trailer() -> TestResult {
    let src = machine(2, 0x40)?;
    let stream = saved(&src)?;
    let report = analyze(&mut std::io::Cursor::new(&stream), ParserOptions::default());
    assert!(report.error.is_none(), "{:?}", report.error);
    let kinds: Vec<_> = report.records.iter().map(|r| r.record_type).collect();
    assert_eq!(
        kinds,
        [
            "CONFIGURATION",
            "START",
            "PART",
            "END",
            "FULL",
            "FULL",
            "EOF",
            "VMDESCRIPTION"
        ]
    );
    assert_eq!(report.devices.len(), 2);
    assert_eq!(report.devices[1].fields["ctrl"], 0x41);
    assert_eq!(report.devices[0].fields["queue"], serde_json::json!([1, 2, 3]));
    assert_eq!(report.ram.blocks[0].idstr, "pc.ram");
    assert_eq!(report.ram.blocks[0].normal_pages, 22);
    Ok(())
}

#[test]
fn an_older_stream_version_loads_and_keeps_newer_fields() -> TestResult {
    let src = machine(1, 7)?;
    let stream = saved(&src)?;
    let dst = blank(2)?;
    {
        let mut st = dst.timers[0].get();
        st.set("dma_base", VmValue::UInt(0x5000));
        dst.timers[0].set(st);
    }
    restore(&dst.set, stream.as_slice(), &RestoreOptions::default())?;
    let st = dst.timers[0].get();
    assert_eq!(st.get_u64("ctrl"), Some(7));
    assert_eq!(st.get_u64("dma_base"), Some(0x5000), "a v1 stream has no dma_base");
    Ok(())
}

/// Restores `stream` into a blank machine, expecting an error; checks no
/// device was touched. Returns the error.
fn refused(stream: &[u8], version: u32) -> Result<Error, Box<dyn std::error::Error>> {
    let dst = blank(version)?;
    let before: Vec<VmStruct> = dst.timers.iter().map(|t| t.get()).collect();
    let Err(e) = restore(&dst.set, stream, &RestoreOptions::default()) else {
        return Err("the stream was accepted".into());
    };
    for (t, b) in dst.timers.iter().zip(&before) {
        assert_eq!(t.loads(), 0, "a device was loaded before the stream ended: {e}");
        assert_eq!(t.get(), *b);
    }
    Ok(e)
}

#[test]
fn truncation_at_any_byte_is_refused_without_touching_devices() -> TestResult {
    let stream = saved(&machine(2, 1)?)?;
    // Everything up to the end of EOF must be there; the trailer is optional.
    let through_eof = {
        let report = analyze(&mut std::io::Cursor::new(&stream), ParserOptions::default());
        let eof = report.records.iter().find(|r| r.record_type == "EOF").ok_or("no EOF")?;
        eof.offset as usize + 1
    };
    // Every byte of the header, configuration, MEM_SIZE and device
    // sections; the pages in between at a stride (each cut re-parses).
    let head = 200.min(through_eof);
    let tail = through_eof.saturating_sub(600).max(head);
    let cuts = (0..head).chain((head..tail).step_by(97)).chain(tail..through_eof);
    for cut in cuts {
        let e = refused(&stream[..cut], 2)?;
        assert!(
            e.to_string().contains("truncated") || e.to_string().contains("offset"),
            "{cut}: {e}"
        );
    }
    // Cut inside the trailer: the trailer is read and found short.
    refused(&stream[..stream.len() - 1], 2)?;
    Ok(())
}

#[test]
fn another_machine_type_is_refused() -> TestResult {
    let stream = saved(&machine(2, 1)?)?;
    let mut dst = blank(2)?;
    dst.set.machine_type = "pc-i440fx-vmkit".into();
    let Err(e) = restore(&dst.set, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(matches!(e, Error::Wire(WireError::ConfigurationMismatch { .. })), "{e}");
    assert_eq!(dst.timers[0].loads(), 0);
    Ok(())
}

#[test]
fn a_newer_device_version_is_refused_with_section_and_field() -> TestResult {
    let stream = saved(&machine(2, 1)?)?;
    let e = refused(&stream, 1)?;
    let text = e.to_string();
    assert!(text.contains("timer") && text.contains("too new"), "{text}");
    Ok(())
}

#[test]
fn sections_the_receiver_lacks_or_misses_are_refused() -> TestResult {
    let stream = saved(&machine(2, 1)?)?;
    // The receiver has one timer only: the second section is unknown.
    let dst = blank(2)?;
    let one = SaveSet::new(
        "pc-q35-vmkit",
        dst.ram.clone(),
        vec![section("timer", 0, &dst.timers[0])],
    );
    let Err(e) = restore(&one, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(
        matches!(e, Error::Wire(WireError::UnknownSection { instance_id: 1, .. })),
        "{e}"
    );
    assert_eq!(dst.timers[0].loads(), 0);

    // The receiver has a third timer: its section is missing.
    let extra = device(timer_vmsd(2)?, timer_state(0, 0));
    let mut devices = dst.set.devices.clone();
    devices.push(section("timer", 2, &extra));
    let three = SaveSet::new("pc-q35-vmkit", dst.ram.clone(), devices);
    let Err(e) = restore(&three, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(
        matches!(e, Error::Savevm(SavevmError::MissingSection { instance_id: 2, .. })),
        "{e}"
    );
    assert_eq!(dst.timers[0].loads(), 0);
    Ok(())
}

#[test]
fn ram_the_receiver_lacks_or_misses_is_refused() -> TestResult {
    let stream = saved(&machine(2, 1)?)?;
    let dst = blank(2)?;
    // One block fewer: the stream names a block the receiver lacks.
    let less = SaveSet::new("pc-q35-vmkit", dst.ram[..1].to_vec(), dst.set.devices.clone());
    let Err(e) = restore(&less, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(matches!(e, Error::Wire(WireError::UnknownRamBlock { .. })), "{e}");
    // One block more: the stream never announced it.
    let mut ram = dst.ram.clone();
    ram.push(RamBlock::anonymous("extra", 4096)?);
    let more = SaveSet::new("pc-q35-vmkit", ram, dst.set.devices.clone());
    let Err(e) = restore(&more, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(matches!(e, Error::Savevm(SavevmError::IncompleteRam { .. })), "{e}");
    assert_eq!(dst.timers[0].loads(), 0);
    Ok(())
}

#[test]
fn a_device_that_refuses_to_save_costs_no_bytes() -> TestResult {
    struct Refuses(Arc<VmStateDescription>);
    impl DeviceState for Refuses {
        type State = VmStruct;
        fn vmsd(&self) -> Arc<VmStateDescription> {
            Arc::clone(&self.0)
        }
        fn save_state(&self) -> Result<VmStruct, StateError> {
            Err(StateError::Refused("busy".into()))
        }
        fn load_state(&self, _: VmStruct, _: u32) -> Result<(), StateError> {
            Ok(())
        }
    }
    let m = machine(2, 1)?;
    let mut devices = m.set.devices.clone();
    devices.push(DeviceEntry::new(
        "busy",
        0,
        Arc::new(Refuses(VmStateDescription::builder("busy").build()?)),
    ));
    let set = SaveSet::new("pc-q35-vmkit", m.ram.clone(), devices);
    let mut out = Vec::new();
    let Err(e) = save(&set, &mut out, &SaveOptions::default()) else {
        return Err("saved".into());
    };
    assert!(e.to_string().contains("busy"), "{e}");
    assert!(out.is_empty());
    Ok(())
}

#[test]
fn priority_orders_device_sections() -> TestResult {
    let low = device(VmStateDescription::builder("low").build()?, VmStruct::new());
    let iommu = device(
        VmStateDescription::builder("iommu")
            .priority(MigrationPriority::Iommu)
            .build()?,
        VmStruct::new(),
    );
    let set = SaveSet::new(
        "m",
        Vec::new(),
        vec![section("low", 0, &low), section("iommu", 0, &iommu)],
    );
    let mut out = Vec::new();
    save(&set, &mut out, &SaveOptions::default())?;
    let report = analyze(&mut std::io::Cursor::new(&out), ParserOptions::default());
    let names: Vec<_> = report.devices.iter().map(|d| d.idstr.as_str()).collect();
    assert_eq!(names, ["iommu", "low"]);
    restore(&set, out.as_slice(), &RestoreOptions::default())?;
    Ok(())
}

#[test]
fn duplicate_sections_in_a_set_are_refused() -> TestResult {
    let m = machine(2, 1)?;
    let mut devices = m.set.devices.clone();
    devices.push(devices[0].clone());
    let set = SaveSet::new("m", Vec::new(), devices);
    let Err(e) = save(&set, Vec::new(), &SaveOptions::default()) else {
        return Err("saved".into());
    };
    assert!(matches!(e, Error::Savevm(SavevmError::DuplicateDevice { .. })), "{e}");
    Ok(())
}

/// A stream whose RAM records number as many as the pages but send one
/// page twice and another never: refused, naming the missing page.
#[test]
fn a_page_sent_twice_does_not_stand_for_one_never_sent() -> TestResult {
    use vmkit_migration::wire::section::write_file_header;
    use vmkit_migration::wire::stream::write_eof;
    use vmkit_migration::wire::{Configuration, RamSectionWriter, SectionKind, StreamWriter};

    let src = patterned_ram("pc.ram", 4)?;
    let mut w = StreamWriter::new(Vec::new());
    write_file_header(&mut w)?;
    Configuration::new("pc-q35-vmkit").write(&mut w)?;
    let mut ram = RamSectionWriter::new(vec![Arc::clone(&src)])?;
    ram.save_setup(&mut w, 1, true)?;
    ram.begin_section(&mut w, SectionKind::Part, 1)?;
    ram.write_block_pages(&mut w, 0, [0u64, 1, 1, 3])?;
    ram.end_section(&mut w, 1, true)?;
    ram.begin_section(&mut w, SectionKind::End, 1)?;
    ram.end_section(&mut w, 1, true)?;
    write_eof(&mut w)?;
    let stream = w.into_inner();

    let dst = RamBlock::anonymous("pc.ram", 4 * 4096)?;
    let set = SaveSet::new("pc-q35-vmkit", vec![dst], Vec::new());
    let Err(e) = restore(&set, stream.as_slice(), &RestoreOptions::default()) else {
        return Err("accepted".into());
    };
    assert!(matches!(e, Error::Savevm(SavevmError::IncompleteRam { .. })), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("0x2000 was never sent") && text.contains("4 page records for 4 pages"),
        "{text}"
    );
    Ok(())
}

/// Resident kilobytes (`Rss` in `/proc/self/smaps`) of the mapping that
/// holds `addr`. Anonymous mappings may have merged with a neighbour, so
/// compare two readings rather than trust one.
fn rss_kib(addr: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let holds = |line: &str| {
        let range = line.split(' ').next()?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        Some(start <= addr && addr < end)
    };
    let mut lines = smaps.lines().skip_while(|l| holds(l) != Some(true));
    lines.next()?;
    let rss = lines.find_map(|l| l.strip_prefix("Rss:"))?;
    rss.trim().trim_end_matches("kB").trim().parse().ok()
}

#[test]
fn a_buffered_restore_allocates_the_pages_that_carry_data_only() -> TestResult {
    // 16 MiB with data in the first half of every 256 KiB: runs of 32
    // pages (populated ahead of their copy) between runs of zero pages
    // (never allocated), the whole stream through a 1 MiB buffer.
    const MIB: u64 = 1 << 20;
    let src = RamBlock::anonymous("pc.ram", 16 * MIB)?;
    for chunk in (0..16 * MIB).step_by(256 << 10) {
        src.fill(chunk, 128 << 10, 0x5A)?;
    }
    let mut stream = Vec::new();
    save(
        &SaveSet::new("m", vec![src.clone()], Vec::new()),
        &mut stream,
        &SaveOptions::default(),
    )?;
    let dst = RamBlock::anonymous("pc.ram", 16 * MIB)?;
    let set = SaveSet::new("m", vec![dst.clone()], Vec::new());
    let reader = std::io::BufReader::with_capacity(1 << 20, stream.as_slice());
    let at = dst.host().as_ptr() as usize;
    let before = rss_kib(at).ok_or("no smaps entry")?;
    let stats = restore_buffered(&set, reader, &RestoreOptions::default())?;
    let grown = rss_kib(at).ok_or("no smaps entry")? - before;
    assert_eq!((stats.normal_pages, stats.zero_pages), (2048, 2048));
    assert_eq!(dst.checksum_all()?, src.checksum_all()?);
    // The 8 MiB of data (and at most the reader's 1 MiB buffer, should its
    // mapping have merged with the block's): not the 8 MiB of zero pages.
    assert!((8 * 1024..10 * 1024).contains(&grown), "{grown} kB allocated");
    Ok(())
}
