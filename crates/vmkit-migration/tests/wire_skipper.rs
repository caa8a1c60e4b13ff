//! The vmdesc-driven body skipper on nested structs, arrays, subsections
//! and old-style devices; property round trips of headers.

mod wire_support;

use std::io::Cursor;

use proptest::prelude::*;
use vmkit_migration::wire::section::{SectionHeader, write_file_header, write_footer};
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{
    ParserOptions, Record, StreamParser, StreamReader, StreamWriter, VmDescBodySkipper, VmDescDevice, VmDescField,
    VmDescStruct, VmDescription,
};
use wire_support::*;

fn field(name: &str, size: u64) -> VmDescField {
    VmDescField {
        name: name.into(),
        field_type: "uint8".into(),
        size,
        ..VmDescField::default()
    }
}

fn desc() -> VmDescription {
    let elem = VmDescStruct {
        vmsd_name: "elem".into(),
        version: 1,
        fields: vec![field("a", 2), field("b", 1)],
        subsections: vec![VmDescStruct {
            vmsd_name: "elem/extra".into(),
            version: 1,
            fields: vec![field("c", 4)],
            subsections: vec![],
        }],
    };
    VmDescription {
        configuration: None,
        page_size: Some(4096),
        devices: vec![
            VmDescDevice {
                name: "0000:00:02.0/nested".into(),
                instance_id: 2,
                vmsd_name: "nested".into(),
                version: 3,
                size: None,
                fields: vec![
                    VmDescField {
                        array_len: Some(2),
                        field_type: "struct".into(),
                        nested: Some(Box::new(elem)),
                        ..field("elems", 10)
                    },
                    VmDescField {
                        array_len: Some(u64::MAX),
                        field_type: "struct".into(),
                        nested: Some(Box::new(VmDescStruct::default())),
                        ..field("empty", 0)
                    },
                    VmDescField {
                        index: Some(0),
                        ..field("tail[0]", 3)
                    },
                ],
                subsections: vec![],
            },
            VmDescDevice {
                name: "oldstyle".into(),
                instance_id: 0,
                vmsd_name: "oldstyle".into(),
                version: 1,
                size: Some(5),
                fields: vec![],
                subsections: vec![],
            },
        ],
    }
}

fn stream(bodies: &[(&SectionHeader, Vec<u8>)]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    for (h, body) in bodies {
        ok(h.write(&mut w));
        ok(w.put_bytes(body));
        ok(write_footer(&mut w, h.section_id));
    }
    ok(write_eof(&mut w));
    ok(desc().write(&mut w));
    w.into_inner()
}

fn elem_body(k: u8) -> Vec<u8> {
    let mut b = vec![k, k, k, 5, 10];
    b.extend_from_slice(b"elem/extra");
    b.extend_from_slice(&[0, 0, 0, 1, k, k, k, k]);
    b
}

#[test]
fn nested_arrays_subsections_and_old_style() {
    let nested = SectionHeader::full(4, "0000:00:02.0/nested", 2, 3);
    let old = SectionHeader::full(5, "oldstyle", 0, 1);
    let mut body = elem_body(1);
    body.extend(elem_body(2));
    body.extend_from_slice(&[7, 7, 7]);
    let bytes = stream(&[(&nested, body.clone()), (&old, vec![1, 2, 3, 4, 5])]);
    let mut skipper = VmDescBodySkipper::new(&desc());
    let mut p = StreamParser::new(Cursor::new(&bytes), ParserOptions::default());
    let recs = ok(p.parse_all(&mut skipper));
    let lens: Vec<u64> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Section { body_len, .. } => Some(*body_len),
            _ => None,
        })
        .collect();
    assert_eq!(lens, vec![body.len() as u64, 5]);
    let s = skipper.stats();
    assert_eq!((s.bodies, s.subsections), (2, 2));
    // A version the description does not have is refused.
    let wrong = SectionHeader::full(4, "0000:00:02.0/nested", 2, 4);
    let bytes = stream(&[(&wrong, body)]);
    let mut p = StreamParser::new(Cursor::new(&bytes), ParserOptions::default());
    assert!(p.parse_all(&mut VmDescBodySkipper::new(&desc())).is_err());
}

proptest! {
    #[test]
    fn section_header_round_trip(id in any::<u32>(), idstr in "[a-z0-9:./-]{0,255}", inst in any::<u32>(), ver in any::<u32>(), full in any::<bool>()) {
        let h = if full { SectionHeader::full(id, idstr, inst, ver) } else { SectionHeader::start(id, idstr, inst, ver) };
        let mut w = StreamWriter::new(Vec::new());
        prop_assert!(h.write(&mut w).is_ok());
        let bytes = w.into_inner();
        let mut r = StreamReader::new(Cursor::new(&bytes));
        let back = SectionHeader::read(&mut r).ok();
        prop_assert_eq!(back, Some(h));
        prop_assert_eq!(r.offset(), bytes.len() as u64);
    }

    #[test]
    fn vmdesc_round_trip(names in proptest::collection::vec("[a-z]{1,12}", 0..8), size in 0u64..1000) {
        let d = VmDescription {
            configuration: None,
            page_size: Some(4096),
            devices: names.iter().enumerate().map(|(i, n)| VmDescDevice {
                name: n.clone(),
                instance_id: i as u32,
                vmsd_name: n.clone(),
                version: 1,
                size: None,
                fields: vec![field(n, size)],
                subsections: vec![],
            }).collect(),
        };
        let json = d.to_json().ok().unwrap_or_default();
        prop_assert_eq!(VmDescription::from_json(&json, 0).ok(), Some(d));
    }
}
