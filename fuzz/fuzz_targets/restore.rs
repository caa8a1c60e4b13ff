//! Restores arbitrary bytes into a small machine (RAM and two devices with
//! arrays, buffers, nested structs, optional elements and a subsection).
//! Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmkit_migration::savevm::fuzz_support::fuzz_restore(data);
});
