//! A VMDESCRIPTION trailer may describe only so much in total.
//!
//! Each array is capped on its own when decoded, but a crafted trailer can
//! nest a capped array of structs in another (the counts multiply) or list
//! many capped arrays side by side (they add up), of elements that take no
//! bytes, so the stream itself stays tiny while decoding what the trailer
//! describes takes gigabytes. The analyzer refuses such a trailer up front
//! as "trailer too large", with the trailer's offset.

mod wire_support;

use std::io::Cursor;

use vmkit_migration::Error;
use vmkit_migration::analyze::{analyze, fuzz_stream, summarize};
use vmkit_migration::vmstate::DecodeLimits;
use vmkit_migration::wire::section::{SectionHeader, write_file_header, write_footer};
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{
    ParserOptions, StreamWriter, TrailerBudget, VmDescDevice, VmDescField, VmDescStruct, VmDescription, WireError,
};
use wire_support::*;

/// The largest array the decoder accepts on its own.
fn cap() -> u64 {
    DecodeLimits::default().max_array_len
}

/// `len` zero-size elements: no bytes on the wire, one value each decoded.
fn empty_array(name: &str, len: u64) -> VmDescField {
    VmDescField {
        name: name.into(),
        array_len: Some(len),
        field_type: "buffer".into(),
        size: 0,
        ..VmDescField::default()
    }
}

/// `len` structs of `inner`.
fn struct_array(name: &str, len: u64, inner: Vec<VmDescField>) -> VmDescField {
    VmDescField {
        name: name.into(),
        array_len: Some(len),
        field_type: "struct".into(),
        nested: Some(Box::new(VmDescStruct {
            vmsd_name: format!("{name}-elem"),
            version: 1,
            fields: inner,
            subsections: vec![],
        })),
        size: 0,
        ..VmDescField::default()
    }
}

fn description(fields: Vec<VmDescField>) -> VmDescription {
    VmDescription {
        configuration: None,
        page_size: Some(4096),
        devices: vec![VmDescDevice {
            name: "crafted".into(),
            instance_id: 0,
            vmsd_name: "crafted".into(),
            version: 1,
            size: None,
            fields,
            subsections: vec![],
        }],
    }
}

/// A capped array of structs, each holding a capped array: cap² elements.
fn nested() -> VmDescription {
    description(vec![struct_array("outer", cap(), vec![empty_array("inner", cap())])])
}

/// Many capped arrays side by side: 64 × cap elements.
fn siblings() -> VmDescription {
    description((0..64).map(|i| empty_array(&format!("a{i}"), cap())).collect())
}

/// Header, one FULL section with an empty body (all its elements are
/// zero-size), EOF and `desc` as the trailer. Returns the stream and the
/// offset of the trailer's JSON.
fn stream_with(desc: &VmDescription) -> (Vec<u8>, u64) {
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    ok(SectionHeader::full(1, "crafted", 0, 1).write(&mut w));
    ok(write_footer(&mut w, 1));
    ok(write_eof(&mut w));
    let json_at = w.offset() + 5;
    ok(desc.write(&mut w));
    (w.into_inner(), json_at)
}

fn check_refused(desc: &VmDescription) {
    let (bytes, json_at) = stream_with(desc);
    let report = analyze(&mut Cursor::new(&bytes), ParserOptions::default());
    let Some(err) = &report.error else {
        panic!("a trailer describing {} elements was accepted", described(desc));
    };
    assert!(err.message.contains("trailer too large"), "{}", err.message);
    assert_eq!(err.offset, json_at, "{}", err.message);
    assert_eq!(err.section, None, "the trailer is at fault, not the section");
    assert!(report.devices.is_empty());
    match summarize(&mut Cursor::new(&bytes), ParserOptions::default()) {
        Err(Error::Wire(WireError::TrailerTooLarge { offset, what, limit })) => {
            assert_eq!(offset, json_at);
            assert_eq!((what, limit), ("elements", TrailerBudget::default().max_elements));
        }
        other => panic!("{other:?}"),
    }
    assert!(!fuzz_stream(&bytes));
}

/// Elements described, by saturating products and sums.
fn described(desc: &VmDescription) -> u64 {
    fn walk(fields: &[VmDescField], times: u64) -> u64 {
        fields.iter().fold(0u64, |acc, f| {
            let n = times.saturating_mul(f.array_len.unwrap_or(1));
            let nested = f.nested.as_ref().map_or(0, |s| walk(&s.fields, n));
            acc.saturating_add(n).saturating_add(nested)
        })
    }
    desc.devices.iter().map(|d| walk(&d.fields, 1)).sum()
}

#[test]
fn a_capped_array_nested_in_a_capped_array_is_refused() {
    let desc = nested();
    // Each array alone is within the decoder's cap.
    assert!(desc.devices[0].fields.iter().all(|f| f.array_len <= Some(cap())));
    check_refused(&desc);
}

#[test]
fn many_sibling_capped_arrays_are_refused() {
    let desc = siblings();
    assert!(desc.devices[0].fields.iter().all(|f| f.array_len == Some(cap())));
    check_refused(&desc);
}

#[test]
fn the_budget_counts_totals_exactly() {
    // 1 device + 3 structs + 3 × 4 leaves = 16 elements; 12 × 2 = 24 bytes.
    let mut inner = empty_array("leaf", 4);
    inner.size = 2;
    let desc = description(vec![struct_array("s", 3, vec![inner])]);
    let within = TrailerBudget {
        max_elements: 16,
        max_bytes: 24,
    };
    assert!(desc.check_budget(&within, 7).is_ok());
    let fewer = TrailerBudget {
        max_elements: 15,
        ..within
    };
    assert!(matches!(
        desc.check_budget(&fewer, 7),
        Err(WireError::TrailerTooLarge {
            offset: 7,
            what: "elements",
            limit: 15
        })
    ));
    let smaller = TrailerBudget {
        max_bytes: 23,
        ..within
    };
    let e = desc.check_budget(&smaller, 7).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("VMDESCRIPTION trailer too large at offset 7: it describes more than 23 bytes of device state")
    );
    // Counts that overflow u64 saturate instead of wrapping to something small.
    let huge = description(vec![struct_array(
        "a",
        u64::MAX,
        vec![struct_array("b", u64::MAX, vec![empty_array("c", 2)])],
    )]);
    assert!(huge.check_budget(&TrailerBudget::default(), 0).is_err());
}

#[test]
fn a_trailer_within_the_budget_still_decodes() {
    // Half the budget in one array: decoded, every element reported.
    let n = TrailerBudget::default().max_elements / 2;
    let desc = description(vec![empty_array("half", n)]);
    let (bytes, _) = stream_with(&desc);
    let report = analyze(&mut Cursor::new(&bytes), ParserOptions::default());
    assert_eq!(report.error, None);
    let fields = &report.devices[0].fields;
    assert_eq!(fields["half"].as_array().map(Vec::len), Some(n as usize));
}
