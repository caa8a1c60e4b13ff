//! The fuzz target's entry function over the committed corpus and ~100k
//! deterministic mutations of it (the stand-in for a fuzzing run; see
//! `fuzz/README.md`). Also (re)generates the corpus: run with
//! `VMKIT_WRITE_CORPUS=1` to rewrite `fuzz/corpus/stream_reader/`.

mod wire_support;

use std::path::PathBuf;

use vmkit_memory::RamBlock;
use vmkit_migration::analyze::{FUZZ_BLOCK, fuzz_stream};
use vmkit_migration::wire::format::VmCommand;
use vmkit_migration::wire::section::write_file_header;
use vmkit_migration::wire::stream::{write_command, write_eof};
use vmkit_migration::wire::{StreamWriter, VmDescription};
use wire_support::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_reader")
}

/// The corpus: (file name, bytes, valid?).
fn corpus() -> Vec<(String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    // One page of data, one zero page, in the fuzz target's block name.
    let one = ok(RamBlock::anonymous(FUZZ_BLOCK.0, FUZZ_BLOCK.1));
    ok(one.write(4096 + 100, b"vmkit"));
    let full = small_stream_with(vec![one]);
    out.push(("valid-full".to_owned(), full.clone(), true));
    // All-zero RAM.
    let zero = ok(RamBlock::anonymous(FUZZ_BLOCK.0, FUZZ_BLOCK.1));
    out.push(("valid-zero-ram".to_owned(), small_stream_with(vec![zero]), true));
    // Header, a command, EOF, an empty description.
    let mut w = StreamWriter::new(Vec::new());
    ok(write_file_header(&mut w));
    ok(write_command(&mut w, VmCommand::OpenReturnPath as u16, &[]));
    ok(write_command(&mut w, VmCommand::Ping as u16, &[0, 0, 0, 1]));
    ok(write_eof(&mut w));
    ok(VmDescription::default().write(&mut w));
    out.push(("valid-commands".to_owned(), w.into_inner(), true));
    // Truncations of the full stream.
    for cut in [7usize, 40, 120, 4200, full.len() - 30, full.len() - 1] {
        if let Some(prefix) = full.get(..cut) {
            out.push((format!("truncated-{cut}"), prefix.to_vec(), false));
        }
    }
    out
}

#[test]
fn corpus_is_committed_and_classified() {
    let dir = corpus_dir();
    let write = std::env::var_os("VMKIT_WRITE_CORPUS").is_some();
    if write {
        ok(std::fs::create_dir_all(&dir));
    }
    let mut total = 0;
    for (name, bytes, valid) in corpus() {
        assert_eq!(fuzz_stream(&bytes), valid, "{name}");
        total += bytes.len();
        let path = dir.join(&name);
        if write {
            ok(std::fs::write(&path, &bytes));
        } else if let Ok(on_disk) = std::fs::read(&path) {
            assert_eq!(
                on_disk, bytes,
                "{name} differs from the generator (VMKIT_WRITE_CORPUS=1 rewrites it)"
            );
        }
    }
    assert!(total < 64 << 10, "corpus of {total} bytes");
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = b.len() as u64;
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7e, 0xff, 0x10, 0x20][rng.below(13) as usize];
            }
            2 => {
                let i = rng.below(len + 1) as usize;
                b.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len) as usize;
                b.remove(i);
            }
            4 => {
                let cut = rng.below(len + 1) as usize;
                b.truncate(cut);
            }
            5 if len >= 4 => {
                // Overwrite a be32 with an interesting value (lengths).
                let i = rng.below(len - 3) as usize;
                let v = [0u32, 1, 0xff, 0x100, 0xffff, 0x7fff_ffff, 0xffff_ffff, 4096][rng.below(8) as usize];
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            _ if len > 8 => {
                // Duplicate a slice (repeated records).
                let i = rng.below(len) as usize;
                let n = (rng.below(64) as usize).min(b.len() - i);
                let piece = b[i..i + n].to_vec();
                let at = rng.below(b.len() as u64 + 1) as usize;
                b.splice(at..at, piece);
            }
            _ => {}
        }
    }
    b
}

#[test]
fn mutations_never_panic() {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b, _)| b).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n: u64 = std::env::var("VMKIT_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut accepted = 0u64;
    for i in 0..n {
        let seed = &seeds[(i % seeds.len() as u64) as usize];
        let input = mutate(&mut rng, seed);
        if fuzz_stream(&input) {
            accepted += 1;
        }
    }
    // Some mutations (inside page data or names) keep the stream valid.
    assert!(accepted > 0 && accepted < n, "{accepted} of {n} accepted");
}
