//! The record-by-record analysis report (`vmkit analyze`).

mod wire_support;

use std::io::Cursor;
use std::path::PathBuf;

use serde_json::{Value, json};
use vmkit_migration::analyze::{AnalysisReport, analyze};
use vmkit_migration::vmstate::{
    ArrayLen, FieldKind, VmStateDescription, VmStruct, VmValue, device_entry, encode_described,
};
use vmkit_migration::wire::format::SectionKind;
use vmkit_migration::wire::section::{SectionHeader, write_file_header, write_footer};
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{
    Configuration, ParserOptions, RamSectionWriter, StreamWriter, VmDescDevice, VmDescription,
};
use wire_support::*;

/// A sample stream and the offsets of its records, in order.
struct Sample {
    bytes: Vec<u8>,
    offsets: Vec<u64>,
    /// Offset of the first RAM page record of the PART section.
    part_body: u64,
}

/// Header, configuration, RAM START/PART/END over one 4-page block, a
/// FULL `serial0` section (with a subsection) encoded by
/// [`encode_described`], EOF and the VMDESCRIPTION trailer.
fn sample() -> Sample {
    let fifo = ok(VmStateDescription::builder("serial0/fifo")
        .version(2)
        .simple("depth", FieldKind::U16)
        .needed(|_| Ok(true))
        .build());
    let desc = ok(VmStateDescription::builder("serial0")
        .version(3)
        .simple("ctrl", FieldKind::U8)
        .simple("count", FieldKind::U32)
        .simple(
            "regs",
            FieldKind::Array {
                elem: Box::new(FieldKind::U16),
                len: ArrayLen::Fixed(2),
            },
        )
        .subsection(fifo)
        .build());
    let mut state = VmStruct::new()
        .with("ctrl", VmValue::UInt(5))
        .with("count", VmValue::UInt(0x1234))
        .with("regs", VmValue::Array(vec![VmValue::UInt(7), VmValue::UInt(9)]))
        .with_subsection("serial0/fifo", VmStruct::new().with("depth", VmValue::UInt(16)));

    let mut offsets = Vec::new();
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    offsets.push(w.offset());
    ok(Configuration::new("pc-q35-9.2").write(&mut w));
    let mut ram = ok(RamSectionWriter::new(vec![random_block("pc.ram", 4, 7)]));
    offsets.push(w.offset());
    ok(ram.save_setup(&mut w, 0, true));
    offsets.push(w.offset());
    ok(ram.begin_section(&mut w, SectionKind::Part, 0));
    let part_body = w.offset();
    ok(ram.write_all_pages(&mut w));
    ok(ram.end_section(&mut w, 0, true));
    offsets.push(w.offset());
    ok(ram.begin_section(&mut w, SectionKind::End, 0));
    ok(ram.write_block_pages(&mut w, 0, [1u64]));
    ok(ram.end_section(&mut w, 0, true));
    offsets.push(w.offset());
    ok(SectionHeader::full(1, "serial0", 0, 3).write(&mut w));
    let mut body = Vec::new();
    let (_, body_desc) = ok(encode_described(&desc, &mut state, &mut body, w.offset()));
    ok(w.put_bytes(&body));
    ok(write_footer(&mut w, 1));
    offsets.push(w.offset());
    ok(write_eof(&mut w));
    offsets.push(w.offset());
    let device: VmDescDevice = ok(serde_json::from_value(device_entry("serial0", 0, &body_desc)));
    let vmdesc = VmDescription {
        configuration: None,
        page_size: Some(4096),
        devices: vec![device],
    };
    ok(vmdesc.write(&mut w));
    Sample {
        bytes: w.into_inner(),
        offsets,
        part_body,
    }
}

fn report(bytes: &[u8]) -> AnalysisReport {
    analyze(&mut Cursor::new(bytes), ParserOptions::default())
}

fn expected_fields() -> Value {
    json!({"ctrl": 5, "count": 0x1234, "regs": [7, 9], "subsections": {"serial0/fifo": {"depth": 16}}})
}

#[test]
fn records_ram_and_devices() {
    let s = sample();
    let r = report(&s.bytes);
    assert_eq!(r.error, None);
    assert_eq!(r.length, s.bytes.len() as u64);
    let types: Vec<_> = r.records.iter().map(|r| r.record_type).collect();
    assert_eq!(
        types,
        ["CONFIGURATION", "START", "PART", "END", "FULL", "EOF", "VMDESCRIPTION"]
    );
    let offsets: Vec<_> = r.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, s.offsets);
    assert_eq!(r.records[0].machine_type.as_deref(), Some("pc-q35-9.2"));
    assert_eq!(r.records[0].idstr, None);
    for rec in &r.records[1..4] {
        assert_eq!(rec.idstr.as_deref(), Some("ram"));
        assert_eq!(
            (rec.section_id, rec.instance_id, rec.version_id),
            (Some(0), Some(0), Some(4))
        );
        assert_eq!(rec.fields, None);
    }
    let full = &r.records[4];
    assert_eq!(full.idstr.as_deref(), Some("serial0"));
    assert_eq!(
        (full.section_id, full.instance_id, full.version_id),
        (Some(1), Some(0), Some(3))
    );
    assert_eq!(full.fields, Some(expected_fields()));

    assert_eq!(r.ram.blocks.len(), 1);
    let b = &r.ram.blocks[0];
    assert_eq!((b.idstr.as_str(), b.used_length), ("pc.ram", 4 * 4096));
    // Pages 0 and 3 are zero; PART sends all 4 pages, END page 1 again.
    assert_eq!((b.zero_pages, b.normal_pages), (2, 3));

    assert_eq!(r.devices.len(), 1);
    let d = &r.devices[0];
    assert_eq!(
        (d.idstr.as_str(), d.offset, d.section_id, d.version_id),
        ("serial0", s.offsets[4], 1, 3)
    );
    assert_eq!(d.fields, expected_fields());
}

#[test]
fn a_truncated_stream_keeps_the_records_before_the_cut() {
    let s = sample();
    // Cut inside the first page record of the PART section.
    let cut = s.part_body + 20;
    let r = report(&s.bytes[..cut as usize]);
    let types: Vec<_> = r.records.iter().map(|r| r.record_type).collect();
    assert_eq!(types, ["CONFIGURATION", "START"]);
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!(e.offset, cut);
    assert_eq!(e.section.as_deref(), Some("ram"));
    assert!(e.message.contains("truncated"), "{}", e.message);
    assert_eq!(r.length, cut);

    assert_eq!((e.record, e.record_offset), (Some("PART"), s.offsets[2]));
    assert!(
        e.summary.starts_with(&format!(
            "cannot parse record PART at offset {} (section 'ram'): ",
            s.offsets[2]
        )),
        "{}",
        e.summary
    );

    // Cut in the device body: without the trailer, its footer is looked
    // for, and the cut comes first.
    let cut = s.offsets[4] + 24;
    let r = report(&s.bytes[..cut as usize]);
    assert_eq!(r.records.len(), 4);
    assert_eq!(r.trailer, "missing");
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!(e.offset, cut);
    assert_eq!((e.record, e.record_offset), (Some("FULL"), s.offsets[4]));
    assert_eq!(e.section.as_deref(), Some("serial0"));
    assert!(e.message.contains("VMDESCRIPTION"), "{}", e.message);
}

#[test]
fn without_its_trailer_a_stream_still_lists_its_device_sections() {
    let s = sample();
    // Cut right after EOF: the trailer is all that is missing.
    let r = report(&s.bytes[..s.offsets[6] as usize]);
    assert_eq!(r.records.len(), 6);
    let full = &r.records[4];
    assert_eq!((full.record_type, full.idstr.as_deref()), ("FULL", Some("serial0")));
    assert!(full.framed_by_footer);
    // Header: type, id, idstr length, "serial0", instance, version; then the footer.
    assert_eq!(
        full.body_len,
        Some(s.offsets[5] - s.offsets[4] - (1 + 4 + 1 + 7 + 4 + 4) - 5)
    );
    assert_eq!(full.fields, None);
    assert!(r.devices.is_empty());
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!((e.record, e.record_offset), (Some("VMDESCRIPTION"), s.offsets[6]));
    assert!(e.summary.starts_with("VMDESCRIPTION trailer missing"), "{}", e.summary);
    assert_eq!(r.trailer, "missing");

    // A trailer whose JSON is damaged: the sections are framed the same
    // way, and the trailer is the error, at its offset.
    let mut bytes = s.bytes.clone();
    let json_at = s.offsets[6] as usize + 5;
    bytes[json_at] = b'[';
    let r = report(&bytes);
    assert_eq!(r.trailer, "damaged");
    assert_eq!(r.records.len(), 6);
    assert!(r.records[4].framed_by_footer);
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!((e.record, e.record_offset), (Some("VMDESCRIPTION"), s.offsets[6]));
    assert!(
        e.summary
            .starts_with(&format!("VMDESCRIPTION trailer damaged at offset {}: ", s.offsets[6])),
        "{}",
        e.summary
    );

    // Its length cut short: no trailer is found at the end of the file;
    // the parser meets it and names it.
    let cut = s.bytes.len() - 3;
    let r = report(&s.bytes[..cut]);
    assert_eq!(r.records.len(), 6);
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!((e.record, e.record_offset), (Some("VMDESCRIPTION"), s.offsets[6]));
    assert!(e.summary.contains("trailer damaged at offset"), "{}", e.summary);
}

#[test]
fn the_page_size_comes_from_the_configuration_or_the_trailer() {
    let s = sample();
    let r = report(&s.bytes);
    assert_eq!(r.machine_type.as_deref(), Some("pc-q35-9.2"));
    assert_eq!((r.page_size, r.trailer), (4096, "present"));
    // No trailer, no page bits sent: the x86 target page size.
    let r = report(&s.bytes[..s.offsets[6] as usize]);
    assert_eq!(r.page_size, 4096);
}

#[test]
fn a_damaged_device_body_names_the_section() {
    let s = sample();
    let mut bytes = s.bytes.clone();
    // The subsection marker after ctrl(1) + count(4) + regs(4).
    let at = s.offsets[4] + 1 + 4 + 1 + 7 + 4 + 4 + 9;
    assert_eq!(bytes[at as usize], 0x05);
    bytes[at as usize] = 0x06;
    let r = report(&bytes);
    assert_eq!(r.records.len(), 4);
    let e = r.error.as_ref().unwrap_or_else(|| panic!("no error"));
    assert_eq!(e.offset, at);
    assert_eq!(e.section.as_deref(), Some("serial0"));
}

#[test]
fn json_layout() {
    let s = sample();
    let v: Value = ok(serde_json::from_str(&report(&s.bytes).to_json()));
    let keys: Vec<_> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    assert_eq!(
        keys,
        [
            "machine_type",
            "page_size",
            "trailer",
            "records",
            "ram",
            "devices",
            "length",
            "error"
        ]
    );
    assert_eq!(
        (v["machine_type"].clone(), v["page_size"].clone()),
        (json!("pc-q35-9.2"), json!(4096))
    );
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["length"], json!(s.bytes.len()));
    let rec = &v["records"][4];
    for k in [
        "offset",
        "type",
        "section_id",
        "idstr",
        "instance_id",
        "version_id",
        "fields",
    ] {
        assert!(rec.get(k).is_some(), "record key {k}");
    }
    assert_eq!(rec["type"], "FULL");
    assert_eq!(v["records"][0]["machine_type"], "pc-q35-9.2");
    assert_eq!(v["records"][0]["section_id"], Value::Null);
    assert_eq!(v["records"][2]["idstr"], "ram");
    assert_eq!(
        v["ram"],
        json!({"blocks": [{"idstr": "pc.ram", "used_length": 16384, "zero_pages": 2, "normal_pages": 3}]})
    );
    assert_eq!(v["devices"][0]["fields"], expected_fields());

    let cut = &s.bytes[..(s.part_body + 20) as usize];
    let v: Value = ok(serde_json::from_str(&report(cut).to_json()));
    assert_eq!(
        v["error"],
        json!({
            "offset": s.part_body + 20,
            "message": v["error"]["message"],
            "section": "ram",
            "field": null,
            "record": "PART",
            "record_offset": s.offsets[2],
            "summary": v["error"]["summary"],
        })
    );
}

/// The sample stream the Python tests analyze: `tests/data/sample.stream`
/// at the top of the repository. `VMKIT_WRITE_FIXTURES=1` rewrites it.
#[test]
fn python_fixture_is_up_to_date() {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "tests", "data", "sample.stream"]
        .iter()
        .collect();
    let bytes = sample().bytes;
    if std::env::var_os("VMKIT_WRITE_FIXTURES").is_some() {
        ok(std::fs::create_dir_all(path.parent().unwrap_or(&path)));
        ok(std::fs::write(&path, &bytes));
    }
    let on_disk = ok(std::fs::read(&path));
    assert!(
        on_disk == bytes,
        "{} is stale: rerun with VMKIT_WRITE_FIXTURES=1",
        path.display()
    );
}

#[test]
fn every_prefix_and_byte_flip_gives_a_report() {
    let s = sample();
    let full = report(&s.bytes);
    // Where each record starts: the file header, then the records listed.
    let starts: Vec<u64> = std::iter::once(0).chain(s.offsets.iter().copied()).collect();
    let framing = |r: &vmkit_migration::analyze::RecordReport| (r.offset, r.record_type, r.idstr.clone(), r.body_len);
    for cut in 0..s.bytes.len() {
        let r = report(&s.bytes[..cut]);
        let e = r.error.as_ref().unwrap_or_else(|| panic!("cut {cut}: no error"));
        assert!(e.offset <= cut as u64, "cut {cut}: error at {}", e.offset);
        // The error names the record the cut falls in, at its offset ...
        let at = starts.iter().rposition(|&o| o <= cut as u64).unwrap_or(0);
        assert_eq!(e.record_offset, starts[at], "cut {cut}: {}", e.summary);
        assert!(
            e.summary.contains(&format!("at offset {}", starts[at])),
            "cut {cut}: {}",
            e.summary
        );
        // ... and every record that ends before the cut is listed, framed
        // as in the whole stream.
        assert_eq!(r.records.len(), at.saturating_sub(1), "cut {cut}: {}", e.summary);
        let got: Vec<_> = r.records.iter().map(framing).collect();
        let want: Vec<_> = full.records[..r.records.len()].iter().map(framing).collect();
        assert_eq!(got, want, "cut {cut}");
    }
    let mut rng = Rng(0x5eed);
    for _ in 0..2000 {
        let mut bytes = s.bytes.clone();
        let i = rng.below(bytes.len() as u64) as usize;
        bytes[i] ^= 1 << rng.below(8);
        let r = report(&bytes);
        if let Some(e) = &r.error {
            assert!(e.offset <= bytes.len() as u64, "flip at {i}: error at {}", e.offset);
        }
    }
}
