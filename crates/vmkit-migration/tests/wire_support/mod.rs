//! Helpers shared by the `wire_*` tests: small valid streams and blocks.
#![allow(dead_code)]

use std::sync::Arc;

use vmkit_memory::RamBlock;
use vmkit_migration::wire::format::SectionKind;
use vmkit_migration::wire::section::{SectionHeader, write_file_header, write_footer};
use vmkit_migration::wire::stream::write_eof;
use vmkit_migration::wire::{
    Configuration, RamSectionWriter, StreamWriter, VmDescDevice, VmDescField, VmDescStruct, VmDescription,
};

/// A deterministic pseudo-random generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A block of `pages` 4 KiB pages: random content, every third page zero.
pub fn random_block(name: &str, pages: u64, seed: u64) -> Arc<RamBlock> {
    let b = ok(RamBlock::anonymous(name, pages * 4096));
    let mut rng = Rng(seed | 1);
    let mut page = vec![0u8; 4096];
    for p in 0..pages {
        if p % 3 == 0 {
            continue;
        }
        for chunk in page.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        ok(b.write(p * 4096, &page));
    }
    b
}

/// The description of [`device_body`].
pub fn device_desc() -> VmDescDevice {
    let field = |name: &str, ty: &str, size: u64| VmDescField {
        name: name.into(),
        field_type: ty.into(),
        size,
        ..VmDescField::default()
    };
    VmDescDevice {
        name: "dev0".into(),
        instance_id: 0,
        vmsd_name: "dev0".into(),
        version: 1,
        size: None,
        fields: vec![
            field("a", "uint32", 4),
            VmDescField {
                array_len: Some(2),
                ..field("arr", "uint16", 2)
            },
            VmDescField {
                nested: Some(Box::new(VmDescStruct {
                    vmsd_name: "inner".into(),
                    version: 1,
                    fields: vec![field("x", "uint8", 1)],
                    subsections: vec![],
                })),
                ..field("s", "struct", 1)
            },
        ],
        subsections: vec![VmDescStruct {
            vmsd_name: "dev0/sub".into(),
            version: 2,
            fields: vec![field("q", "uint64", 8)],
            subsections: vec![],
        }],
    }
}

/// A device body matching [`device_desc`].
pub fn device_body() -> Vec<u8> {
    let mut b = vec![0, 0, 0, 7, 0, 1, 0, 2, 9, 5, 8];
    b.extend_from_slice(b"dev0/sub");
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
    b
}

pub fn vmdesc() -> VmDescription {
    VmDescription {
        configuration: None,
        page_size: Some(4096),
        devices: vec![device_desc()],
    }
}

/// A small valid stream: header, configuration, RAM START/PART/END over
/// `blocks`, one FULL device section, EOF, VMDESCRIPTION.
pub fn small_stream_with(blocks: Vec<Arc<RamBlock>>) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    ok(Configuration::new("pc-q35-9.2").write(&mut w));
    let mut ram = ok(RamSectionWriter::new(blocks));
    ok(ram.save_setup(&mut w, 0, true));
    ok(ram.begin_section(&mut w, SectionKind::Part, 0));
    ok(ram.write_all_pages(&mut w));
    ok(ram.end_section(&mut w, 0, true));
    ok(ram.begin_section(&mut w, SectionKind::End, 0));
    ok(ram.write_block_pages(&mut w, 0, [1u64]));
    ok(ram.end_section(&mut w, 0, true));
    ok(SectionHeader::full(1, "dev0", 0, 1).write(&mut w));
    ok(w.put_bytes(&device_body()));
    ok(write_footer(&mut w, 1));
    ok(write_eof(&mut w));
    ok(vmdesc().write(&mut w));
    w.into_inner()
}

/// [`small_stream_with`] over one block of 4 pages.
pub fn small_stream() -> Vec<u8> {
    small_stream_with(vec![random_block("pc.ram", 4, 7)])
}
