//! Malformed streams: each is refused with the right error and offset.

mod wire_support;

use std::io::Cursor;
use std::sync::Arc;

use vmkit_memory::RamBlock;
use vmkit_migration::Error;
use vmkit_migration::wire::format::RamFlag;
use vmkit_migration::wire::{
    AnalysisHandler, ParserOptions, RamSectionReader, Record, SectionBodyHandler, StreamParser, VmDescBodySkipper,
    WireError,
};
use wire_support::*;

const HEADER: &[u8] = b"QEVM\0\0\0\x03";

fn parse_with<'a>(
    bytes: &'a [u8],
    handler: &mut dyn SectionBodyHandler<Cursor<&'a [u8]>>,
    opts: ParserOptions,
) -> Result<Vec<Record>, WireError> {
    let mut p = StreamParser::new(Cursor::new(bytes), opts);
    match p.parse_all(handler) {
        Ok(r) => Ok(r),
        Err(Error::Wire(e)) => Err(e),
        Err(e) => panic!("not a wire error: {e}"),
    }
}

fn dest() -> Vec<Arc<RamBlock>> {
    vec![ok(RamBlock::anonymous("pc.ram", 4 * 4096))]
}

fn parse_ram(bytes: &[u8]) -> Result<Vec<Record>, WireError> {
    parse_with(bytes, &mut RamSectionReader::apply_to(dest()), ParserOptions::default())
}

fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn start_section(id: u8, version: u8) -> Vec<u8> {
    let mut b = vec![1, 0, 0, 0, id, 3, b'r', b'a', b'm', 0, 0, 0, 0, 0, 0, 0, version];
    b.extend_from_slice(&be64((4 * 4096) | RamFlag::MemSize.bit()));
    b.push(6);
    b.extend_from_slice(b"pc.ram");
    b.extend_from_slice(&be64(4 * 4096));
    b.extend_from_slice(&be64(RamFlag::Eos.bit()));
    b.extend_from_slice(&[0x7e, 0, 0, 0, id]);
    b
}

/// Header + RAM START (id 0) + a PART carrying `payload` (EOS and footer
/// appended). Returns the stream and the offset of the payload.
fn ram_part(payload: &[u8]) -> (Vec<u8>, u64) {
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    b.extend_from_slice(&[2, 0, 0, 0, 0]);
    let at = b.len() as u64;
    b.extend_from_slice(payload);
    b.extend_from_slice(&be64(RamFlag::Eos.bit()));
    b.extend_from_slice(&[0x7e, 0, 0, 0, 0, 0]);
    (b, at)
}

fn named(flags: u64, name: &str) -> Vec<u8> {
    let mut b = be64(flags).to_vec();
    b.push(name.len() as u8);
    b.extend_from_slice(name.as_bytes());
    b
}

#[test]
fn a_valid_ram_part_is_accepted() {
    let mut p = named(4096 | RamFlag::Zero.bit(), "pc.ram");
    p.push(0);
    p.extend_from_slice(&be64((2 * 4096) | RamFlag::Page.bit() | RamFlag::Continue.bit()));
    p.extend_from_slice(&[0x11; 4096]);
    p.extend_from_slice(&be64(RamFlag::MultifdFlush.bit()));
    let (b, _) = ram_part(&p);
    assert!(parse_ram(&b).is_ok());
}

#[test]
fn wrong_magic() {
    let e = parse_ram(b"QEVN\0\0\0\x03\0").err();
    assert!(matches!(e, Some(WireError::BadMagic { found: 0x5145_564e })), "{e:?}");
}

#[test]
fn versions_2_and_4_refused() {
    for v in [2u8, 4] {
        let e = parse_ram(&[b'Q', b'E', b'V', b'M', 0, 0, 0, v, 0]).err();
        assert!(
            matches!(e, Some(WireError::UnsupportedVersion { found }) if found == u32::from(v)),
            "{e:?}"
        );
    }
}

#[test]
fn unknown_record_type() {
    let mut b = HEADER.to_vec();
    b.push(0x09);
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::UnknownRecord { offset: 8, byte: 9 })),
        "{e:?}"
    );
    // A subsection or footer byte at the top level is unknown too.
    b[8] = 0x05;
    assert!(matches!(
        parse_ram(&b).err(),
        Some(WireError::UnknownRecord { offset: 8, byte: 5 })
    ));
    // A configuration record after the first record.
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    let at = b.len() as u64;
    b.extend_from_slice(b"\x07\0\0\0\x01x");
    assert!(matches!(parse_ram(&b).err(), Some(WireError::UnknownRecord { offset, byte: 7 }) if offset == at));
}

#[test]
fn part_for_a_never_started_section() {
    let mut b = HEADER.to_vec();
    b.extend_from_slice(&[2, 0, 0, 0, 9]);
    let e = parse_ram(&b).err();
    assert!(
        matches!(
            e,
            Some(WireError::UnknownSection {
                offset: 8,
                section_id: 9,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn part_after_end() {
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    b.extend_from_slice(&[3, 0, 0, 0, 0]);
    b.extend_from_slice(&be64(RamFlag::Eos.bit()));
    b.extend_from_slice(&[0x7e, 0, 0, 0, 0]);
    let at = b.len() as u64;
    b.extend_from_slice(&[2, 0, 0, 0, 0]);
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::UnknownSection { offset, .. }) if offset == at),
        "{e:?}"
    );
}

#[test]
fn duplicate_start() {
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    let at = b.len() as u64;
    b.extend(start_section(1, 4));
    let e = parse_ram(&b).err();
    assert!(
        matches!(&e, Some(WireError::DuplicateSection { offset, idstr, instance_id: 0 }) if *offset == at && idstr == "ram"),
        "{e:?}"
    );
}

#[test]
fn ram_version_other_than_4() {
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 3));
    let e = parse_ram(&b).err();
    assert!(
        matches!(
            e,
            Some(WireError::BadSectionVersion {
                offset: 8,
                version_id: 3,
                expected: 4,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn footer_mismatch() {
    let mut b = HEADER.to_vec();
    let mut s = start_section(0, 4);
    let n = s.len();
    s[n - 1] = 1;
    b.extend(s);
    let at = (b.len() - 5) as u64;
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::FooterMismatch { offset, expected: 0, found: 1 }) if offset == at),
        "{e:?}"
    );
    // Footer byte missing altogether.
    b[at as usize] = 0x00;
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::FooterMismatch { offset, found: 0, .. }) if offset == at),
        "{e:?}"
    );
    // Without footers configured, the same bytes are a following record.
    let opts = ParserOptions {
        footers: false,
        ..ParserOptions::default()
    };
    let mut b2 = HEADER.to_vec();
    let s = start_section(0, 4);
    b2.extend_from_slice(&s[..s.len() - 5]);
    b2.push(0);
    assert!(parse_with(&b2, &mut RamSectionReader::apply_to(dest()), opts).is_ok());
}

#[test]
fn huge_vmdesc_length_refused_without_allocating() {
    let mut b = HEADER.to_vec();
    b.push(0); // EOF
    b.push(6);
    b.extend_from_slice(&[0xff; 4]);
    let e = parse_ram(&b).err();
    assert!(
        matches!(
            e,
            Some(WireError::BadLength {
                offset: 14,
                len: 0xffff_ffff,
                ..
            })
        ),
        "{e:?}"
    );
    // Under the cap but longer than the data: truncated, not allocated.
    let mut b = HEADER.to_vec();
    b.extend_from_slice(&[0, 6, 0x03, 0xff, 0xff, 0xff, b'{']);
    let e = parse_ram(&b).err();
    assert!(matches!(e, Some(WireError::Truncated { offset: 15, .. })), "{e:?}");
    // Bad JSON.
    let mut b = HEADER.to_vec();
    b.extend_from_slice(&[0, 6, 0, 0, 0, 2, b'{', b'x']);
    let e = parse_ram(&b).err();
    assert!(matches!(e, Some(WireError::BadJson { offset: 14, .. })), "{e:?}");
}

#[test]
fn page_beyond_block() {
    let mut p = named((4 * 4096) | RamFlag::Page.bit(), "pc.ram");
    p.extend_from_slice(&[0; 4096]);
    let (b, at) = ram_part(&p);
    let e = parse_ram(&b).err();
    assert!(
        matches!(&e, Some(WireError::PageOutOfRange { offset, addr: 0x4000, block, .. }) if *offset == at && block == "pc.ram"),
        "{e:?}"
    );
    // The address maximum does not overflow.
    let (b, _) = ram_part(&named(!0xfff | RamFlag::Zero.bit(), "pc.ram"));
    assert!(matches!(parse_ram(&b).err(), Some(WireError::PageOutOfRange { .. })));
}

#[test]
fn continue_first() {
    let mut p = be64(RamFlag::Zero.bit() | RamFlag::Continue.bit()).to_vec();
    p.push(0);
    let (b, at) = ram_part(&p);
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::ContinueWithoutBlock { offset }) if offset == at),
        "{e:?}"
    );
}

#[test]
fn zero_page_with_non_zero_fill() {
    let mut p = named(RamFlag::Zero.bit(), "pc.ram");
    p.push(0x55);
    let (b, at) = ram_part(&p);
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::BadZeroByte { offset, found: 0x55 }) if offset == at + 15),
        "{e:?}"
    );
}

#[test]
fn unknown_block_name() {
    let mut p = named(RamFlag::Zero.bit(), "pc.rom");
    p.push(0);
    let (b, at) = ram_part(&p);
    let e = parse_ram(&b).err();
    assert!(
        matches!(&e, Some(WireError::UnknownRamBlock { offset, name }) if *offset == at + 8 && name == "pc.rom"),
        "{e:?}"
    );
    // In MEM_SIZE, against destination blocks.
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    // header 8 + START header 17 + MEM_SIZE be64 8: the entry is at 33.
    b[33 + 1 + 4] = b'x'; // "pc.ram" -> "pc.rxm"
    let e = parse_ram(&b).err();
    assert!(
        matches!(&e, Some(WireError::UnknownRamBlock { offset: 33, name }) if name == "pc.rxm"),
        "{e:?}"
    );
}

#[test]
fn block_length_mismatch() {
    let dst = vec![ok(RamBlock::anonymous("pc.ram", 8 * 4096))];
    let mut b = HEADER.to_vec();
    b.extend(start_section(0, 4));
    let e = parse_with(&b, &mut RamSectionReader::apply_to(dst), ParserOptions::default()).err();
    assert!(
        matches!(
            e,
            Some(WireError::RamBlockLength {
                offset: 33,
                expected: 0x8000,
                found: 0x4000,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn bad_flags() {
    for flags in [
        0x800u64,
        RamFlag::Zero.bit() | RamFlag::Page.bit(),
        RamFlag::Full.bit(),
        RamFlag::Hook.bit(),
        0,
        RamFlag::Eos.bit() | RamFlag::Continue.bit(),
    ] {
        let (b, at) = ram_part(&be64(flags));
        let e = parse_ram(&b).err();
        assert!(
            matches!(e, Some(WireError::BadRamFlags { offset, flags: f }) if offset == at && f == flags),
            "{flags:#x}: {e:?}"
        );
    }
    let (b, at) = ram_part(&named(RamFlag::Xbzrle.bit(), "pc.ram"));
    let e = parse_ram(&b).err();
    assert!(
        matches!(e, Some(WireError::Unsupported { offset, .. }) if offset == at),
        "{e:?}"
    );
}

#[test]
fn configuration_for_another_machine() {
    let mut b = HEADER.to_vec();
    b.extend_from_slice(b"\x07\0\0\0\x0dpc-i440fx-9.2\0");
    let opts = ParserOptions {
        expect_machine: Some("pc-q35-9.2".into()),
        ..ParserOptions::default()
    };
    let e = parse_with(&b, &mut RamSectionReader::summarise(), opts.clone()).err();
    assert!(
        matches!(&e, Some(WireError::ConfigurationMismatch { offset: 8, found, .. }) if found.contains("i440fx")),
        "{e:?}"
    );
    // Missing configuration when one is expected.
    let mut b = HEADER.to_vec();
    b.push(0);
    let e = parse_with(&b, &mut RamSectionReader::summarise(), opts).err();
    assert!(matches!(e, Some(WireError::Malformed { offset: 8, .. })), "{e:?}");
    // Unknown configuration subsection.
    let mut b = HEADER.to_vec();
    b.extend_from_slice(b"\x07\0\0\0\x01m\x05\x11configuration/foo\0\0\0\x01");
    let e = parse_with(&b, &mut RamSectionReader::summarise(), ParserOptions::default()).err();
    assert!(
        matches!(&e, Some(WireError::Malformed { offset: 14, reason }) if reason.contains("configuration/foo")),
        "{e:?}"
    );
}

#[test]
fn command_over_cap_and_packaged() {
    let mut b = HEADER.to_vec();
    b.extend_from_slice(&[8, 0, 2, 0, 5, 1, 2, 3, 4, 5]);
    let opts = ParserOptions {
        max_command_len: 4,
        ..ParserOptions::default()
    };
    let e = parse_with(&b, &mut RamSectionReader::summarise(), opts).err();
    assert!(
        matches!(
            e,
            Some(WireError::BadLength {
                offset: 13,
                len: 5,
                max: 4,
                ..
            })
        ),
        "{e:?}"
    );
    let mut b = HEADER.to_vec();
    b.extend_from_slice(&[8, 0, 7, 0, 4, 0, 0, 0, 0]);
    let e = parse_with(&b, &mut RamSectionReader::summarise(), ParserOptions::default()).err();
    assert!(matches!(e, Some(WireError::Unsupported { offset: 8, .. })), "{e:?}");
}

#[test]
fn device_sections_need_a_description() {
    let bytes = small_stream();
    let mut h: AnalysisHandler = AnalysisHandler {
        ram: RamSectionReader::summarise(),
        devices: None,
    };
    let e = parse_with(&bytes, &mut h, ParserOptions::default()).err();
    assert!(
        matches!(&e, Some(WireError::UnknownSection { idstr, .. }) if idstr == "dev0"),
        "{e:?}"
    );
    // A description whose subsection differs from the stream.
    let mut d = vmdesc();
    d.devices[0].subsections[0].vmsd_name = "dev0/other".into();
    let mut h = AnalysisHandler {
        ram: RamSectionReader::summarise(),
        devices: Some(VmDescBodySkipper::new(&d)),
    };
    let e = parse_with(&bytes, &mut h, ParserOptions::default()).err();
    assert!(
        matches!(&e, Some(WireError::BadBody { reason, .. }) if reason.contains("dev0/other")),
        "{e:?}"
    );
    // A description without the subsection: the 0x05 left over is refused.
    let mut d = vmdesc();
    d.devices[0].subsections.clear();
    let mut h = AnalysisHandler {
        ram: RamSectionReader::summarise(),
        devices: Some(VmDescBodySkipper::new(&d)),
    };
    let e = parse_with(&bytes, &mut h, ParserOptions::default()).err();
    assert!(
        matches!(&e, Some(WireError::BadBody { reason, .. }) if reason.contains("not listed")),
        "{e:?}"
    );
}

#[test]
fn every_error_has_an_offset_inside_the_stream() {
    let (b, _) = ram_part(&named(RamFlag::Zero.bit(), "nope"));
    let e = parse_ram(&b).err().map(|e| e.offset());
    assert!(e.is_some_and(|o| o < b.len() as u64));
}
