//! RAM save → load through a byte stream.

mod wire_support;

use std::io::Cursor;
use std::sync::Arc;

use vmkit_memory::{DirtyClient, RamBacking, RamBlock, RamOptions};
use vmkit_migration::wire::format::SectionKind;
use vmkit_migration::wire::section::write_file_header;
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{ParserOptions, RamSectionReader, RamSectionWriter, Record, StreamParser, StreamWriter};
use wire_support::*;

fn save_full(blocks: Vec<Arc<RamBlock>>) -> Vec<u8> {
    let mut w = StreamWriter::buffered(Vec::new());
    ok(write_file_header(&mut w));
    let mut ram = ok(RamSectionWriter::new(blocks));
    ok(ram.save_setup(&mut w, 0, true));
    ok(ram.begin_section(&mut w, SectionKind::End, 0));
    ok(ram.write_all_pages(&mut w));
    ok(ram.end_section(&mut w, 0, true));
    ok(write_eof(&mut w));
    ok(w.flush());
    ok(w.into_inner().into_inner().map_err(|e| e.to_string()))
}

/// Parses a whole stream, feeding RAM sections to `reader`.
fn parse_into(bytes: &[u8], mut reader: RamSectionReader) -> Result<RamSectionReader, String> {
    let mut p = StreamParser::new(Cursor::new(bytes), ParserOptions::default());
    while p.next_record(&mut reader).map_err(|e| e.to_string())?.is_some() {}
    Ok(reader)
}

fn load(bytes: &[u8], dest: Vec<Arc<RamBlock>>) -> Result<RamSectionReader, String> {
    parse_into(bytes, RamSectionReader::apply_to(dest))
}

#[test]
fn save_load_two_blocks_checksums_match() {
    let src = vec![random_block("pc.ram", 64, 1), random_block("vga.vram", 16, 2)];
    let bytes = save_full(src.clone());
    // Destination blocks start with garbage so zero pages must be cleared.
    let dst = vec![
        ok(RamBlock::anonymous("pc.ram", 64 * 4096)),
        ok(RamBlock::anonymous("vga.vram", 16 * 4096)),
    ];
    for b in &dst {
        ok(b.fill(0, b.used_length(), 0xee));
    }
    let reader = ok(load(&bytes, dst.clone()));
    for (s, d) in src.iter().zip(&dst) {
        assert_eq!(ok(s.checksum_all()), ok(d.checksum_all()), "{}", s.name());
    }
    let sum = reader.summary();
    assert_eq!(sum.blocks[0].zero_pages, 22);
    assert_eq!(sum.blocks[0].normal_pages, 42);
    assert_eq!(sum.sections, 2);
}

#[test]
fn dirty_pages_pass_then_load() {
    let src = random_block("pc.ram", 32, 5);
    ok(src.dirty_log().log_start(DirtyClient::Migration));
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
    ok(ram.save_setup(&mut w, 3, true));
    ok(ram.begin_section(&mut w, SectionKind::Part, 3));
    ok(ram.write_all_pages(&mut w));
    ok(ram.end_section(&mut w, 3, true));
    let _ = ok(src.dirty_log().sync(DirtyClient::Migration));
    // The guest writes a few pages, some to zero.
    ok(src.write_page_pattern(4, 99));
    ok(src.fill(7 * 4096, 4096, 0));
    ok(src.write(20 * 4096 + 5, b"hello"));
    let dirty = ok(src.dirty_log().sync(DirtyClient::Migration));
    assert_eq!(dirty.iter().collect::<Vec<_>>(), vec![4, 7, 20]);
    ok(ram.begin_section(&mut w, SectionKind::End, 3));
    ok(ram.write_dirty(&mut w, 0, &dirty));
    ok(ram.end_section(&mut w, 3, true));
    ok(write_eof(&mut w));
    let bytes = w.into_inner();
    let dst = ok(RamBlock::anonymous("pc.ram", 32 * 4096));
    let reader = ok(load(&bytes, vec![dst.clone()]));
    assert_eq!(ok(src.checksum_all()), ok(dst.checksum_all()));
    let s = &reader.summary().blocks[0];
    assert_eq!(s.zero_pages + s.normal_pages, 32 + 3);
}

#[test]
fn block_page_sizes_other_than_4096() {
    for page_size in [1024u64, 65536] {
        let opts = RamOptions {
            page_size,
            ..RamOptions::default()
        };
        let src = ok(RamBlock::with_options("pc.ram", 4 * 65536, RamBacking::Anonymous, opts));
        let mut rng = Rng(page_size);
        for p in [1u64, 17, 40, 63] {
            ok(src.write(p * 4096 + rng.below(4000), &rng.next().to_le_bytes()));
        }
        ok(src.dirty_log().log_start(DirtyClient::Migration));
        let mut w = StreamWriter::new(Vec::new());
        ok(write_file_header(&mut w));
        let mut ram = ok(RamSectionWriter::new(vec![src.clone()]));
        ok(ram.save_setup(&mut w, 0, true));
        ok(ram.begin_section(&mut w, SectionKind::Part, 0));
        ok(ram.write_all_pages(&mut w));
        ok(ram.end_section(&mut w, 0, true));
        // A second pass with sub-page dirtying: 1024-byte pages dedupe to
        // one 4096-byte target page, 64 KiB pages expand to 16.
        ok(src.write(17 * 4096 + 1, &[1, 2, 3]));
        ok(src.write(17 * 4096 + 2049, &[4]));
        let dirty = ok(src.dirty_log().sync(DirtyClient::Migration));
        let mut ram2 = ok(RamSectionWriter::new(vec![src.clone()]));
        ok(ram2.begin_section(&mut w, SectionKind::End, 0));
        ok(ram2.write_dirty(&mut w, 0, &dirty));
        ok(ram2.end_section(&mut w, 0, true));
        let st = ram2.stats();
        assert_eq!(st.zero_pages + st.normal_pages, if page_size == 1024 { 1 } else { 16 });
        ok(write_eof(&mut w));
        let dst = ok(RamBlock::anonymous("pc.ram", 4 * 65536));
        ok(load(&w.into_inner(), vec![dst.clone()]));
        assert_eq!(ok(src.checksum_all()), ok(dst.checksum_all()));
    }
}

#[test]
fn summary_mode_writes_nothing_and_counts() {
    let bytes = save_full(vec![random_block("pc.ram", 9, 3)]);
    let mut reader = RamSectionReader::summarise();
    let mut p = StreamParser::new(Cursor::new(&bytes), ParserOptions::default());
    let mut n = 0;
    while let Some(r) = ok(p.next_record(&mut reader)) {
        if matches!(r, Record::Section { .. }) {
            n += 1;
        }
    }
    assert_eq!(n, 2);
    let s = reader.into_summary();
    assert_eq!(s.total_bytes, 9 * 4096);
    assert_eq!((s.blocks[0].zero_pages, s.blocks[0].normal_pages), (3, 6));
    assert_eq!(s.blocks[0].bytes, 3 + 6 * 4096);
}

fn load_some(bytes: &[u8], dest: Vec<Arc<RamBlock>>) -> Result<RamSectionReader, String> {
    parse_into(bytes, RamSectionReader::apply_to_some(dest))
}

#[test]
fn apply_to_some_discards_blocks_not_given() {
    let src = vec![
        random_block("pc.bios", 8, 3),
        random_block("pc.ram", 32, 4),
        random_block("vga.vram", 16, 5),
    ];
    let bytes = save_full(src.clone());
    let dst = ok(RamBlock::anonymous("pc.ram", 32 * 4096));
    ok(dst.fill(0, dst.used_length(), 0xee));
    let reader = ok(load_some(&bytes, vec![dst.clone()]));
    assert_eq!(ok(src[1].checksum_all()), ok(dst.checksum_all()));
    let sum = reader.summary();
    let names: Vec<_> = sum.blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["pc.ram", "pc.bios", "vga.vram"]);
    assert_eq!(sum.blocks[1].length, 8 * 4096);
    assert_eq!(sum.blocks[1].zero_pages + sum.blocks[1].normal_pages, 8);
    assert_eq!(sum.blocks[2].zero_pages + sum.blocks[2].normal_pages, 16);

    // The strict mode still rejects the unknown blocks...
    let err = load(&bytes, vec![ok(RamBlock::anonymous("pc.ram", 32 * 4096))])
        .err()
        .unwrap_or_default();
    assert!(err.contains("pc.bios"), "{err}");
    // ...and both reject a given block of the wrong length.
    let err = load_some(&bytes, vec![ok(RamBlock::anonymous("pc.ram", 16 * 4096))])
        .err()
        .unwrap_or_default();
    assert!(err.contains("pc.ram"), "{err}");
}

#[test]
fn apply_to_some_rejects_pages_of_unannounced_blocks() {
    // The stream announces pc.ram only: a page record naming another
    // block is an error in discard mode too (nothing says how long it is).
    let src = vec![random_block("pc.ram", 4, 6)];
    let mut bytes = save_full(src);
    let at = ok(bytes
        .windows(6)
        .rposition(|w| w == b"pc.ram")
        .ok_or("block name not in stream"));
    // Rename the block of the END section's first page record.
    bytes[at..at + 6].copy_from_slice(b"pc.rom");
    let err = load_some(&bytes, vec![ok(RamBlock::anonymous("pc.ram", 4 * 4096))])
        .err()
        .unwrap_or_default();
    assert!(err.contains("pc.rom"), "{err}");
}
