//! Criterion benchmarks of the vmkit core live in `benches/`; this library
//! holds what they share.

use std::sync::Arc;

use vmkit_memory::{MapOptions, RamBacking, RamBlock, RamOptions};

/// The target page size the benchmarks use.
pub const PAGE: u64 = 4096;

/// The value of a benchmark's setup step; a failure there aborts the run.
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark setup failed: {e}"))
}

/// A zero-filled anonymous block, prefaulted and on transparent huge pages,
/// as a long-running guest's RAM would be: the benchmarks then measure
/// copying and tracking, not first-touch page faults, and zero memory is
/// real memory rather than the kernel's shared zero page.
pub fn prefaulted_block(name: &str, size: u64) -> Arc<RamBlock> {
    let options = RamOptions {
        page_size: PAGE,
        map: MapOptions {
            populate: true,
            huge_pages: true,
        },
    };
    ok(RamBlock::with_options(name, size, RamBacking::Anonymous, options))
}
