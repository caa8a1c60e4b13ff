//! The checksum and page pattern used to verify guest RAM contents.
//!
//! Both can be recomputed outside vmkit, from the definitions below.
//!
//! ## Checksum (XXH3-64)
//!
//! A RAM checksum is XXH3's 64-bit hash with seed 0 (`XXH3_64bits`) of the
//! bytes, the hash the `xxhsum -H3` tool prints, computed here with the
//! `xxhash-rust` crate. Any XXH3 implementation recomputes it; in Python,
//! with the `xxhash` package (which `vmkit.memory.xxh3_64` wraps):
//!
//! ```text
//! import xxhash
//! xxhash.xxh3_64_intdigest(data)   # == RamBlock.checksum() over `data`
//! ```
//!
//! It is fast (about as fast as reading memory) and not cryptographic.
//! [`HostMapping::checksum`](crate::HostMapping::checksum) feeds guest memory
//! to the streaming state in chunks; the result equals the one-shot hash of
//! the same bytes.
//!
//! ## Page pattern
//!
//! [`RamBlock::write_page_pattern`](crate::RamBlock::write_page_pattern)
//! fills page `p` of a block, for a `seed`, with the words
//!
//! ```text
//! base = splitmix64(seed ^ splitmix64(p))
//! word[i] = base + i * 0x9E3779B97F4A7C15
//! ```
//!
//! where `splitmix64(x)` is `z = x + 0x9E3779B97F4A7C15;
//! z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//! z ^ (z >> 31)`. A write of `n` bytes of the pattern (the workload's partial
//! page writes) stores the first `n` bytes of that sequence at the page start.

/// The golden-ratio increment of splitmix64, also the pattern's word step.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The XXH3-64 checksum of a byte slice (see the module documentation);
/// [`RamBlock::checksum`](crate::RamBlock::checksum) of the same bytes gives
/// the same value.
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// The streaming state of the checksum, fed bytes in any chunks.
pub(crate) use xxhash_rust::xxh3::Xxh3 as ChecksumState;

/// splitmix64's output function applied to `x` (one step from state `x`).
#[inline]
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first word of page `page`'s pattern for `seed`; word `i` is
/// `pattern_base(seed, page) + i * GOLDEN`.
#[inline]
pub const fn pattern_base(seed: u64, page: u64) -> u64 {
    splitmix64(seed ^ splitmix64(page))
}

/// The first `len` bytes of page `page`'s pattern for `seed`, as bytes.
pub fn pattern_bytes(seed: u64, page: u64, len: usize) -> Vec<u8> {
    pattern_bytes_from_base(pattern_base(seed, page), len)
}

/// The first `len` bytes of the word sequence `base + i * GOLDEN`.
pub fn pattern_bytes_from_base(base: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.next_multiple_of(8));
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&base.wrapping_add(i.wrapping_mul(GOLDEN)).to_le_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The XXH3-64 (seed 0) test vectors every implementation agrees on:
        // `xxhsum -H3` and Python's `xxhash.xxh3_64_intdigest` print these.
        assert_eq!(checksum(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(checksum(b"a"), 0xe6c6_32b6_1e96_4e1f);
        assert_ne!(checksum(&[0u8; 8]), checksum(&[0u8; 16]), "length is mixed in");
    }

    #[test]
    fn streaming_equals_one_shot_for_any_chunking() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(37) ^ 0x5a) as u8).collect();
        for chunk in [1usize, 7, 64, 240, 241, 1024, 4999] {
            let mut state = ChecksumState::new();
            for c in data.chunks(chunk) {
                state.update(c);
            }
            assert_eq!(state.digest(), checksum(&data), "chunk {chunk}");
        }
    }

    #[test]
    fn pattern_words() {
        let b = pattern_bytes(7, 3, 20);
        assert_eq!(b.len(), 20);
        let base = pattern_base(7, 3);
        assert_eq!(&b[..8], &base.to_le_bytes());
        assert_eq!(&b[8..16], &base.wrapping_add(GOLDEN).to_le_bytes());
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }
}
