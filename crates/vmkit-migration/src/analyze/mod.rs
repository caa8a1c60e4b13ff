//! The analyzer: what a migration stream holds, as `vmkit analyze` and
//! `vmkit.migration.analyze` show it.
//!
//! It sits above both [`wire`](crate::wire) (the byte level it parses with)
//! and [`savevm`](crate::savevm) (whose known VMStates decode sections a
//! stream's trailer does not describe); neither of them uses it.
//!
//! | module | what it holds |
//! |---|---|
//! | `walk` | the one pass over a stream: trailer first, then records front to back, RAM decoded, device bodies stepped over by the trailer and (for the report) decoded |
//! | [`report`] | [`analyze`]: every record with its offset, RAM blocks, decoded device fields, and what broke where (never an `Err`) |
//! | [`summary`] | [`summarize`]: counts only, in bounded memory (an `Err` on damage); [`fuzz_stream`], the fuzzing entry point |

pub mod report;
pub mod summary;
mod walk;

pub use report::{
    AnalysisReport, DeviceReport, RamBlockReport, RamReport, RecordReport, ReportError, analyze, analyze_with_ram,
};
pub use summary::{FUZZ_BLOCK, StreamAnalysis, fuzz_stream, summarize};
pub use walk::MAX_DECODED_BODY;
