//! Restores arbitrary bytes into a small machine (RAM and two devices with
//! arrays, buffers, nested structs, optional elements and a subsection),
//! and into one without the second device, taking (and decoding by the
//! trailer) what it does not model. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmkit_migration::savevm::fuzz_support::fuzz_restore(data);
    let _ = vmkit_migration::savevm::fuzz_support::fuzz_restore_reporting(data);
});
