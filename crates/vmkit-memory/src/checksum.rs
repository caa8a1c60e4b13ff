//! The checksum and page pattern used to verify guest RAM contents.
//!
//! Both are defined word-wise so that another implementation (the Python
//! package, a test) can recompute them exactly. All arithmetic is modulo 2^64
//! and words are read and written **little-endian**.
//!
//! ## Checksum (`vmkit-csum64`)
//!
//! The input of `len` bytes is cut into `m = ceil(len / 8)` 64-bit words
//! `w[0..m]`, the last one padded with zero bytes. Four lanes start at
//!
//! ```text
//! a0 = P1 + P2    a1 = P2    a2 = 0    a3 = 0 - P1
//! ```
//!
//! and word `w[i]` updates lane `a[i mod 4]` with
//! `round(a, w) = rotl64(a + w * P2, 31) * P1`. Then
//!
//! ```text
//! h = rotl64(a0, 1) + rotl64(a1, 7) + rotl64(a2, 12) + rotl64(a3, 18)
//! h = h ^ len
//! h = (h ^ (h >> 33)) * P2
//! h = (h ^ (h >> 29)) * P3
//! h =  h ^ (h >> 32)
//! ```
//!
//! with the xxHash64 primes `P1 = 0x9E3779B185EBCA87`,
//! `P2 = 0xC2B2AE3D27D4EB4F`, `P3 = 0x165667B19E3779F9`. It is xxHash64's
//! inner loop without its merge rounds, so the four lanes run in parallel and
//! the checksum is about as fast as reading memory. It is not cryptographic.
//! In Python:
//!
//! ```text
//! M = (1 << 64) - 1
//! P1, P2, P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
//! rotl = lambda x, r: ((x << r) | (x >> (64 - r))) & M
//! def csum64(data: bytes) -> int:
//!     n = len(data)
//!     data = data + bytes(-n % 8)
//!     a = [(P1 + P2) & M, P2, 0, (-P1) & M]
//!     for i in range(len(data) // 8):
//!         w = int.from_bytes(data[8 * i:8 * i + 8], "little")
//!         a[i % 4] = rotl((a[i % 4] + w * P2) & M, 31) * P1 & M
//!     h = (rotl(a[0], 1) + rotl(a[1], 7) + rotl(a[2], 12) + rotl(a[3], 18)) & M
//!     h ^= n
//!     h = (h ^ (h >> 33)) * P2 & M
//!     h = (h ^ (h >> 29)) * P3 & M
//!     return h ^ (h >> 32)
//! ```
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

/// xxHash64 prime 1.
pub const P1: u64 = 0x9E37_79B1_85EB_CA87;
/// xxHash64 prime 2.
pub const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
/// xxHash64 prime 3.
pub const P3: u64 = 0x1656_67B1_9E37_79F9;
/// The golden-ratio increment of splitmix64, also the pattern's word step.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// One step of the checksum's lane update.
#[inline(always)]
fn round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

/// The running state of a `vmkit-csum64` checksum, fed whole 32-byte blocks
/// and then one tail.
#[derive(Debug, Clone)]
pub(crate) struct Csum64 {
    lanes: [u64; 4],
    len: u64,
}

impl Csum64 {
    pub(crate) fn new() -> Csum64 {
        Csum64 {
            lanes: [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()],
            len: 0,
        }
    }

    /// Four words, in order; the checksum's word index must be a multiple of
    /// 4 here (only whole blocks come before the tail).
    #[inline(always)]
    pub(crate) fn block(&mut self, w: [u64; 4]) {
        self.lanes[0] = round(self.lanes[0], w[0]);
        self.lanes[1] = round(self.lanes[1], w[1]);
        self.lanes[2] = round(self.lanes[2], w[2]);
        self.lanes[3] = round(self.lanes[3], w[3]);
        self.len = self.len.wrapping_add(32);
    }

    /// The last bytes (fewer than 32) and the result.
    pub(crate) fn finish(mut self, tail: &[u8]) -> u64 {
        for (i, chunk) in tail.chunks(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            let lane = i % 4;
            self.lanes[lane] = round(self.lanes[lane], u64::from_le_bytes(bytes));
        }
        let len = self.len.wrapping_add(tail.len() as u64);
        let [a0, a1, a2, a3] = self.lanes;
        let mut h = a0
            .rotate_left(1)
            .wrapping_add(a1.rotate_left(7))
            .wrapping_add(a2.rotate_left(12))
            .wrapping_add(a3.rotate_left(18));
        h ^= len;
        h = (h ^ (h >> 33)).wrapping_mul(P2);
        h = (h ^ (h >> 29)).wrapping_mul(P3);
        h ^ (h >> 32)
    }
}

/// The `vmkit-csum64` checksum of a byte slice (see the module documentation);
/// [`RamBlock::checksum`](crate::RamBlock::checksum) of the same bytes gives
/// the same value.
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Csum64::new();
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        let mut w = [0u64; 4];
        for (dst, src) in w.iter_mut().zip(b.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(src);
            *dst = u64::from_le_bytes(bytes);
        }
        c.block(w);
    }
    c.finish(blocks.remainder())
}

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

    /// A literal transcription of the documented algorithm, word by word.
    fn reference(data: &[u8]) -> u64 {
        let mut padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(8), 0);
        let mut a = [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()];
        for (i, w) in padded.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            a[i % 4] = round(a[i % 4], u64::from_le_bytes(b));
        }
        let mut h = a[0]
            .rotate_left(1)
            .wrapping_add(a[1].rotate_left(7))
            .wrapping_add(a[2].rotate_left(12))
            .wrapping_add(a[3].rotate_left(18));
        h ^= data.len() as u64;
        h = (h ^ (h >> 33)).wrapping_mul(P2);
        h = (h ^ (h >> 29)).wrapping_mul(P3);
        h ^ (h >> 32)
    }

    #[test]
    fn matches_reference_for_all_tail_lengths() {
        let data: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(37) ^ 0x5a) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(checksum(&data[..n]), reference(&data[..n]), "len {n}");
        }
    }

    #[test]
    fn known_values() {
        // Computed with the Python transcription in the module documentation,
        // so the two implementations are pinned to each other.
        assert_eq!(checksum(b""), 0x9090_306c_6e91_ed59);
        assert_eq!(checksum(b"vmkit"), 0x17a1_386b_e2cb_ea96);
        assert_eq!(checksum(&[0u8; 4096]), 0x3f44_b47e_488d_1f90);
        assert_eq!(checksum(&pattern_bytes(1, 2, 4096)), 0xa158_f2e3_c6d5_7d4e);
        assert_ne!(checksum(&[0u8; 8]), checksum(&[0u8; 16]), "length is mixed in");
        assert_ne!(checksum(b"a"), checksum(b"b"));
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
