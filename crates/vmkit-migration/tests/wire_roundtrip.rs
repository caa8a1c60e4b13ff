//! Round trips of every wire-level item.

mod wire_support;

use std::io::Cursor;

use vmkit_migration::wire::format::{RamFlag, RecordType, SectionKind, VmCommand};
use vmkit_migration::wire::section::{SectionHeader, read_file_header, read_footer, write_file_header, write_footer};
use vmkit_migration::wire::stream::{write_command, write_eof};
use vmkit_migration::wire::{
    AnalysisHandler, Configuration, ParserOptions, RamSectionReader, RamSectionWriter, Record, StreamParser,
    StreamReader, StreamWriter, VmDescBodySkipper, VmDescription, locate_vmdesc, read_vmdesc_from_end,
};
use wire_support::*;

fn writer() -> StreamWriter<Vec<u8>> {
    StreamWriter::new(Vec::new())
}

#[test]
fn integers_and_offsets() {
    let mut w = writer();
    ok(w.put_u8(0xab));
    ok(w.put_be16(0x1234));
    ok(w.put_be32(0xdead_beef));
    ok(w.put_be64(0x0102_0304_0506_0708));
    ok(w.put_name("pc.ram", "name"));
    assert_eq!(w.offset(), 1 + 2 + 4 + 8 + 7);
    let bytes = w.into_inner();
    assert_eq!(&bytes[..3], &[0xab, 0x12, 0x34]);
    let mut r = StreamReader::new(Cursor::new(bytes));
    assert_eq!(ok(r.read_u8("a")), 0xab);
    assert_eq!(ok(r.peek_u8()), Some(0x12));
    assert_eq!(r.offset(), 1);
    assert_eq!(ok(r.read_be16("b")), 0x1234);
    assert_eq!(ok(r.read_be32("c")), 0xdead_beef);
    assert_eq!(ok(r.read_be64("d")), 0x0102_0304_0506_0708);
    assert_eq!(ok(r.read_name("e")), "pc.ram");
    assert_eq!(r.offset(), 22);
    assert_eq!(ok(r.peek_u8()), None);
}

#[test]
fn read_bytes_and_skip_with_peek() {
    let mut r = StreamReader::new(Cursor::new((0u8..20).collect::<Vec<_>>()));
    assert_eq!(ok(r.peek_u8()), Some(0));
    assert_eq!(ok(r.read_bytes(3, 10, "x")), vec![0, 1, 2]);
    assert_eq!(ok(r.peek_u8()), Some(3));
    ok(r.skip(5, "skip"));
    assert_eq!(r.offset(), 8);
    let mut buf = [0u8; 4];
    assert_eq!(ok(r.peek_u8()), Some(8));
    ok(r.read_into(&mut buf, "into"));
    assert_eq!(buf, [8, 9, 10, 11]);
    assert!(r.read_bytes(11, 100, "y").is_err());
    assert!(r.read_bytes(1, 0, "cap").is_err());
}

#[test]
fn header_round_trip() {
    let mut w = writer();
    ok(write_file_header(&mut w));
    let bytes = w.into_inner();
    assert_eq!(bytes, b"QEVM\0\0\0\x03");
    assert_eq!(ok(read_file_header(&mut StreamReader::new(Cursor::new(bytes)))), 3);
}

#[test]
fn section_headers_and_footer_round_trip() {
    let start = SectionHeader::start(5, "ram", 0, 4);
    let full = SectionHeader::full(6, "0000:00:02.0/e1000", 3, 7);
    let part = start.follow_up(SectionKind::Part);
    let mut w = writer();
    for h in [&start, &full, &part] {
        ok(h.write(&mut w));
        ok(write_footer(&mut w, h.section_id));
    }
    let bytes = w.into_inner();
    // START: type, id, len, "ram", instance, version.
    assert_eq!(
        &bytes[..17],
        &[1, 0, 0, 0, 5, 3, b'r', b'a', b'm', 0, 0, 0, 0, 0, 0, 0, 4]
    );
    assert_eq!(&bytes[17..22], &[0x7e, 0, 0, 0, 5]);
    let mut r = StreamReader::new(Cursor::new(bytes));
    assert_eq!(ok(SectionHeader::read(&mut r)), start);
    ok(read_footer(&mut r, 5));
    assert_eq!(ok(SectionHeader::read(&mut r)), full);
    ok(read_footer(&mut r, 6));
    let p = ok(SectionHeader::read(&mut r));
    assert_eq!((p.kind, p.section_id, p.idstr.as_str()), (SectionKind::Part, 5, ""));
    ok(read_footer(&mut r, 5));
}

#[test]
fn idstr_over_255_is_refused_on_write() {
    let h = SectionHeader::full(1, "x".repeat(256), 0, 1);
    assert!(h.write(&mut writer()).is_err());
}

#[test]
fn configuration_round_trip() {
    for config in [
        Configuration::new("pc-q35-9.2"),
        Configuration {
            machine_type: "pc-i440fx-8.0".into(),
            target_page_bits: Some(12),
            capabilities: Some(vec!["x-ignore-shared".into(), "mapped-ram".into()]),
            uuid: Some([0x5a; 16]),
        },
    ] {
        let mut w = writer();
        ok(config.write(&mut w));
        let bytes = w.into_inner();
        assert_eq!(bytes[0], RecordType::Configuration as u8);
        let mut r = StreamReader::new(Cursor::new(&bytes[1..]));
        assert_eq!(ok(Configuration::read_body(&mut r)), config);
        assert!(ok(r.at_end()));
    }
    let bytes = {
        let mut w = writer();
        ok(Configuration::new("pc-q35-9.2").write(&mut w));
        w.into_inner()
    };
    assert_eq!(&bytes, b"\x07\0\0\0\x0apc-q35-9.2");
}

#[test]
fn ram_records_layout() {
    let b = random_block("pc.ram", 3, 11); // page 0 zero, pages 1, 2 random
    let mut ram = ok(RamSectionWriter::new(vec![b.clone()]));
    let mut w = writer();
    ok(ram.save_setup(&mut w, 2, true));
    let setup = w.into_inner();
    let mut expect = vec![1, 0, 0, 0, 2, 3, b'r', b'a', b'm', 0, 0, 0, 0, 0, 0, 0, 4];
    expect.extend_from_slice(&((3 * 4096u64) | RamFlag::MemSize.bit()).to_be_bytes());
    expect.push(6);
    expect.extend_from_slice(b"pc.ram");
    expect.extend_from_slice(&(3 * 4096u64).to_be_bytes());
    expect.extend_from_slice(&RamFlag::Eos.bit().to_be_bytes());
    expect.extend_from_slice(&[0x7e, 0, 0, 0, 2]);
    assert_eq!(setup, expect);

    let mut w = writer();
    ok(ram.begin_section(&mut w, SectionKind::Part, 2));
    ok(ram.write_all_pages(&mut w));
    ok(ram.end_section(&mut w, 2, false));
    let part = w.into_inner();
    let mut expect = vec![2, 0, 0, 0, 2];
    expect.extend_from_slice(&RamFlag::Zero.bit().to_be_bytes());
    expect.push(6);
    expect.extend_from_slice(b"pc.ram");
    expect.push(0);
    let mut page = vec![0u8; 4096];
    for p in 1..3u64 {
        expect.extend_from_slice(&((p * 4096) | RamFlag::Page.bit() | RamFlag::Continue.bit()).to_be_bytes());
        ok(b.read(p * 4096, &mut page));
        expect.extend_from_slice(&page);
    }
    expect.extend_from_slice(&RamFlag::Eos.bit().to_be_bytes());
    assert_eq!(part, expect);
    assert_eq!(ram.stats().zero_pages, 1);
    assert_eq!(ram.stats().normal_pages, 2);
}

#[test]
fn vmdesc_json_round_trip() {
    let d = vmdesc();
    let json = String::from_utf8(ok(d.to_json())).unwrap_or_default();
    assert!(json.contains(r#""type":"struct""#), "{json}");
    assert!(json.contains(r#""array_len":2"#), "{json}");
    assert!(!json.contains("index"), "{json}");
    assert_eq!(ok(VmDescription::from_json(json.as_bytes(), 0)), d);
    // QEMU's own shape parses.
    let qemu = br#"{"page_size":4096,"devices":[{"name":"timer","instance_id":0,"vmsd_name":"timer","version":2,"fields":[{"name":"cpu_ticks_offset","type":"int64","size":8},{"name":"dummy","type":"int64","size":8},{"name":"cpu_clock_offset","type":"int64","size":8}],"subsections":[{"vmsd_name":"timer/icount","version":1,"fields":[{"name":"qemu_icount_bias","type":"int64","size":8}]}]}]}"#;
    let q = ok(VmDescription::from_json(qemu, 0));
    assert_eq!(q.devices[0].subsections[0].vmsd_name, "timer/icount");
    let mut w = writer();
    ok(d.write(&mut w));
    let bytes = w.into_inner();
    assert_eq!(bytes[0], 6);
    let mut r = StreamReader::new(Cursor::new(&bytes[1..]));
    assert_eq!(ok(VmDescription::read_body(&mut r)), d);
}

#[test]
fn whole_stream_parses_in_order() {
    let block = random_block("pc.ram", 4, 3);
    let mut bytes = small_stream_with(vec![block.clone()]);
    // Insert a command after the configuration: rebuild with one.
    let cfg_end = 8 + 1 + 4 + "pc-q35-9.2".len();
    let mut w = writer();
    ok(write_command(&mut w, VmCommand::Ping as u16, &[0, 0, 0, 9]));
    bytes.splice(cfg_end..cfg_end, w.into_inner());

    let desc = vmdesc();
    let mut handler = AnalysisHandler {
        ram: RamSectionReader::summarise(),
        devices: Some(VmDescBodySkipper::new(&desc)),
    };
    let opts = ParserOptions {
        expect_machine: Some("pc-q35-9.2".into()),
        require_vmdesc: true,
        ..ParserOptions::default()
    };
    let mut p = StreamParser::new(Cursor::new(&bytes), opts);
    let recs = ok(p.parse_all(&mut handler));
    let kinds: Vec<String> = recs
        .iter()
        .map(|r| match r {
            Record::Header { .. } => "H".to_owned(),
            Record::Configuration { .. } => "C".to_owned(),
            Record::Command { cmd, .. } => format!("cmd{cmd}"),
            Record::Section { header, .. } => format!("{:?}:{}", header.kind, header.idstr),
            Record::Eof { .. } => "EOF".to_owned(),
            Record::VmDescription { .. } => "D".to_owned(),
            Record::Trailing { .. } => "T".to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "H",
            "C",
            "cmd2",
            "Start:ram",
            "Part:ram",
            "End:ram",
            "Full:dev0",
            "EOF",
            "D"
        ]
    );
    let s = handler.ram.summary();
    assert_eq!(s.total_bytes, 4 * 4096);
    assert_eq!(s.sections, 3);
    assert_eq!(s.blocks[0].zero_pages, 2); // pages 0 and 3
    assert_eq!(s.blocks[0].normal_pages, 3); // pages 1, 2 and again 1
    let dev = handler.devices.map(|d| d.stats()).unwrap_or_default();
    assert_eq!(
        (dev.bodies, dev.subsections, dev.bytes),
        (1, 1, device_body().len() as u64)
    );
    if let Some(Record::Section { body_len, .. }) = recs
        .iter()
        .find(|r| matches!(r, Record::Section { header, .. } if header.idstr == "dev0"))
    {
        assert_eq!(*body_len, device_body().len() as u64);
    }
}

#[test]
fn vmdesc_is_located_from_the_end() {
    let bytes = small_stream();
    let mut c = Cursor::new(&bytes);
    let loc = ok(locate_vmdesc(&mut c)).unwrap_or_else(|| panic!("no trailer"));
    let json = ok(vmdesc().to_json());
    assert_eq!(loc.json_len as usize, json.len());
    assert_eq!(loc.offset as usize, bytes.len() - json.len() - 5);
    assert_eq!(ok(read_vmdesc_from_end(&mut c)), Some(vmdesc()));
    // Without a trailer: nothing.
    let cut = &bytes[..loc.offset as usize];
    assert_eq!(ok(locate_vmdesc(&mut Cursor::new(cut))), None);
    // A length whose bytes contain 0x06 is still found.
    let mut d = vmdesc();
    d.devices[0].vmsd_name = "y".repeat(0x0106 + 6 - json.len() % 256);
    let mut w = writer();
    ok(write_eof(&mut w));
    ok(d.write(&mut w));
    let tail = w.into_inner();
    assert!(tail[1..5].contains(&6), "{:?}", &tail[1..5]);
    assert_eq!(ok(read_vmdesc_from_end(&mut Cursor::new(&tail))), Some(d));
}

#[test]
fn analyze_summarises_a_file() {
    let bytes = small_stream();
    let a = ok(vmkit_migration::analyze::summarize(
        &mut Cursor::new(&bytes),
        ParserOptions::default(),
    ));
    assert_eq!(a.configuration.map(|c| c.machine_type), Some("pc-q35-9.2".to_owned()));
    assert_eq!(a.section_counts, [1, 1, 1, 1]);
    assert_eq!(a.ram.blocks.len(), 1);
    assert_eq!(a.devices.bodies, 1);
    assert_eq!(a.vmdesc, Some(vmdesc()));
    assert_eq!(a.length, bytes.len() as u64);
    // The fuzz entry point applies RAM to a 16-page `pc.ram`.
    assert!(!vmkit_migration::analyze::fuzz_stream(&bytes));
    let fits = small_stream_with(vec![random_block("pc.ram", 16, 7)]);
    assert!(vmkit_migration::analyze::fuzz_stream(&fits));
}
