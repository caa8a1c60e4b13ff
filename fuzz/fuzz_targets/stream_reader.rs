//! Feeds arbitrary bytes to the migration stream parser: whole-file
//! analysis (trailer located from the end, RAM summarised, device bodies
//! skipped by the trailer's sizes), then a second parse applying RAM to a
//! destination block. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmkit_migration::analyze::fuzz_stream(data);
});
