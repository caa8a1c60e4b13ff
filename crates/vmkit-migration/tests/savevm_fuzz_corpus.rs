//! The `restore` fuzz target's entry over its seed and deterministic
//! truncations and byte flips of it; writes the seed corpus with
//! `VMKIT_WRITE_CORPUS=1`.

use std::path::PathBuf;

use vmkit_migration::savevm::fuzz_support::{fuzz_restore, fuzz_restore_reporting, fuzz_seed};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/restore")
}

#[test]
fn the_seed_restores_and_its_mutations_do_not_panic() -> Result<(), Box<dyn std::error::Error>> {
    let seed = fuzz_seed();
    assert!(seed.len() > 4096, "a whole stream: {} bytes", seed.len());
    assert!(fuzz_restore(&seed));
    assert!(fuzz_restore_reporting(&seed));
    let dir = corpus_dir();
    if std::env::var_os("VMKIT_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("valid"), &seed)?;
    }
    assert_eq!(
        std::fs::read(dir.join("valid"))?,
        seed,
        "regenerate with VMKIT_WRITE_CORPUS=1"
    );
    // Every cut within the device sections and trailer, a stride elsewhere.
    let tail_start = seed.len().saturating_sub(2048);
    for cut in (0..tail_start).step_by(251).chain(tail_start..seed.len()) {
        // Only a cut right after EOF (dropping the optional trailer) is whole.
        if fuzz_restore(&seed[..cut]) {
            assert_eq!(seed[cut], 0x06, "cut at {cut} accepted");
        }
        // Reporting needs the trailer to decode the device it lacks (every
        // third cut: each restore builds a machine).
        if cut % 3 == 0 {
            assert!(
                !fuzz_restore_reporting(&seed[..cut]),
                "cut at {cut} accepted while reporting"
            );
        }
    }
    // Byte flips in the device sections: never a panic.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..8_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bad = seed.clone();
        let at = tail_start + (x as usize % (seed.len() - tail_start));
        bad[at] ^= (x >> 32) as u8 | 1;
        let _ = fuzz_restore(&bad);
        if i % 8 == 0 {
            // Slower (the tail is held and decoded generically): fewer flips.
            let _ = fuzz_restore_reporting(&bad);
        }
    }
    Ok(())
}
