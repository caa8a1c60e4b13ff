//! Every prefix of a valid stream is refused — with `Truncated` at exactly
//! the prefix length — and never panics.

mod wire_support;

use std::io::Cursor;

use vmkit_migration::Error;
use vmkit_migration::analyze::{fuzz_stream, summarize};
use vmkit_migration::wire::{
    AnalysisHandler, ParserOptions, RamSectionReader, StreamParser, VmDescBodySkipper, WireError,
};
use wire_support::*;

#[test]
fn every_prefix_is_truncated_at_its_length() {
    let bytes = small_stream_with(vec![random_block("pc.ram", 3, 9)]);
    assert!(summarize(&mut Cursor::new(&bytes), ParserOptions::default()).is_ok());
    let desc = vmdesc();
    let opts = ParserOptions {
        require_vmdesc: true,
        expect_machine: Some("pc-q35-9.2".into()),
        ..ParserOptions::default()
    };
    for len in 0..bytes.len() {
        let prefix = &bytes[..len];
        let mut h = AnalysisHandler {
            ram: RamSectionReader::summarise(),
            devices: Some(VmDescBodySkipper::new(&desc)),
        };
        let mut p = StreamParser::new(Cursor::new(prefix), opts.clone());
        match p.parse_all(&mut h) {
            Err(Error::Wire(WireError::Truncated { offset, .. })) => assert_eq!(offset, len as u64, "prefix {len}"),
            other => panic!("prefix {len}: {other:?}"),
        }
        // The whole-file path (trailer located from the end) refuses too.
        assert!(!fuzz_stream(prefix), "prefix {len} accepted");
    }
}

#[test]
fn every_prefix_of_a_ram_load_is_refused() {
    let src = random_block("pc.ram", 3, 4);
    let bytes = small_stream_with(vec![src]);
    let opts = ParserOptions {
        require_vmdesc: true,
        ..ParserOptions::default()
    };
    for len in (0..bytes.len()).step_by(7) {
        let dst = ok(vmkit_memory::RamBlock::anonymous("pc.ram", 3 * 4096));
        let mut h = AnalysisHandler {
            ram: RamSectionReader::apply_to(vec![dst]),
            devices: Some(VmDescBodySkipper::new(&vmdesc())),
        };
        let mut p = StreamParser::new(&bytes[..len], opts.clone());
        assert!(p.parse_all(&mut h).is_err(), "prefix {len}");
    }
}
