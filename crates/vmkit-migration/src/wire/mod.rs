//! The byte level of QEMU's savevm stream (version 3).

/// Stream-format errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The stream ended early.
    #[error("stream truncated at offset {offset}: {context}")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: u64,
        /// What was being read.
        context: String,
    },
}
