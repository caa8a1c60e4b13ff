//! VMState: descriptions of device state and their wire encoding.

/// VMState errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmStateError {
    /// A description that cannot be built.
    #[error("invalid VMState description '{name}': {reason}")]
    Description {
        /// The description's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}
