//! QEMU's `x-ignore-shared`: RAM another process maps from the same memfd
//! is listed in the stream but its pages are not sent; both sides must
//! agree, which the configuration record settles.

use std::sync::Arc;

use vmkit_memory::RamBlock;
use vmkit_migration::analyze::summarize;
use vmkit_migration::precopy::{Precopy, PrecopyControl, PrecopyParams};
use vmkit_migration::savevm::{RestoreOptions, SaveOptions, SaveSet, restore, save};
use vmkit_migration::wire::ParserOptions;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PAGE: u64 = 4096;
const SHARED_PAGES: u64 = 64;

/// A source with a shared (memfd) block and a private one, both patterned.
fn source() -> Result<SaveSet, Box<dyn std::error::Error>> {
    let shared = RamBlock::memfd("pc.ram", SHARED_PAGES * PAGE)?;
    let private = RamBlock::anonymous("vga.vram", 4 * PAGE)?;
    for p in 0..SHARED_PAGES {
        shared.write_page_pattern(p, 3)?;
    }
    for p in 0..4 {
        private.write_page_pattern(p, 5)?;
    }
    Ok(SaveSet::new("pc-q35-vmkit", vec![shared, private], Vec::new()))
}

/// A destination that maps the source's memfd (as a process handed the
/// descriptor would) and has a private block of its own.
fn destination(src: &SaveSet) -> Result<SaveSet, Box<dyn std::error::Error>> {
    let fd = src.ram[0]
        .fd()
        .ok_or("memfd block has a descriptor")?
        .try_clone_to_owned()?;
    let shared = RamBlock::from_memfd_fd("pc.ram", SHARED_PAGES * PAGE, fd)?;
    let private = RamBlock::anonymous("vga.vram", 4 * PAGE)?;
    Ok(SaveSet::new("pc-q35-vmkit", vec![shared, private], Vec::new()))
}

fn ignoring() -> SaveOptions {
    SaveOptions {
        ignore_shared: true,
        ..SaveOptions::default()
    }
}

#[test]
fn shared_pages_are_not_sent_and_the_destination_still_equals_the_source() -> TestResult {
    let src = source()?;
    let control = Arc::new(PrecopyControl::new(PrecopyParams {
        stream: ignoring(),
        ..PrecopyParams::default()
    }));
    let mut stream = Vec::new();
    let outcome = Precopy::new(&src, control).run(&mut stream, || Ok(()))?;
    assert_eq!(outcome.snapshot.phase.as_str(), "completed");
    // Only the private block's pages travel.
    assert_eq!(outcome.snapshot.ram.normal, 4);
    assert_eq!(outcome.snapshot.ram.total, 4 * PAGE);
    assert!((stream.len() as u64) < 8 * PAGE);

    let dst = destination(&src)?;
    let opts = RestoreOptions {
        ignore_shared: true,
        ..RestoreOptions::default()
    };
    restore(&dst, stream.as_slice(), &opts)?;
    for (a, b) in src.ram.iter().zip(&dst.ram) {
        assert_eq!(a.checksum_all()?, b.checksum_all()?, "{}", a.name());
    }

    // The analyzer reads the addresses MEM_SIZE then carries.
    let summary = summarize(&mut std::io::Cursor::new(&stream), ParserOptions::default())?;
    assert_eq!(summary.ram.blocks.len(), 2);
    assert_eq!(summary.ram.blocks[0].length, SHARED_PAGES * PAGE);
    Ok(())
}

#[test]
fn both_sides_must_agree_on_ignore_shared() -> TestResult {
    let src = source()?;
    let dst = destination(&src)?;
    let mut ignored = Vec::new();
    save(&src, &mut ignored, &ignoring())?;
    let err = restore(&dst, ignored.as_slice(), &RestoreOptions::default())
        .err()
        .ok_or("a destination without x-ignore-shared refuses the stream")?;
    assert!(
        err.to_string()
            .contains("Capability 'x-ignore-shared' is off, but received capability is on"),
        "{err}"
    );

    let mut whole = Vec::new();
    save(&src, &mut whole, &SaveOptions::default())?;
    let opts = RestoreOptions {
        ignore_shared: true,
        ..RestoreOptions::default()
    };
    let err = restore(&dst, whole.as_slice(), &opts)
        .err()
        .ok_or("a destination with x-ignore-shared refuses a stream without it")?;
    assert!(
        err.to_string()
            .contains("Capability 'x-ignore-shared' is on, but received capability is off"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_private_destination_block_that_gets_no_pages_is_incomplete() -> TestResult {
    // The source's block is shared, the destination's is not its memory:
    // nothing would fill it, so the restore must fail rather than run on
    // zeroes.
    let src = source()?;
    let dst = SaveSet::new(
        "pc-q35-vmkit",
        vec![
            RamBlock::anonymous("pc.ram", SHARED_PAGES * PAGE)?,
            RamBlock::anonymous("vga.vram", 4 * PAGE)?,
        ],
        Vec::new(),
    );
    let mut stream = Vec::new();
    save(&src, &mut stream, &ignoring())?;
    let opts = RestoreOptions {
        ignore_shared: true,
        ..RestoreOptions::default()
    };
    assert!(restore(&dst, stream.as_slice(), &opts).is_err());
    Ok(())
}
