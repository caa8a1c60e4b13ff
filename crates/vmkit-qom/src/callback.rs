//! The one way an error raised outside the core travels through it.
//!
//! Hooks, accessors, MMIO and IOMMU callbacks, VMState hooks and device
//! state functions may be written in another language (Python, through the
//! bindings). When one fails, its error is wrapped in a [`CallbackError`]
//! and carried, unchanged, as the `source` of whatever core error reports
//! the failure: QOM's `Error::Hook`, guest memory's `Error::Callback`,
//! migration's hook and device-state errors. The binding that started the
//! core call finds it again with [`CallbackError::find`] and hands the
//! original back to its caller, so an exception raised in a hook is the
//! exception the user sees.
//!
//! Every crate above this one uses this type; none keeps a side channel
//! (thread-local or global) for callback failures.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// An error raised by a callback, kept whole (shared, so errors that carry
/// it stay `Clone`).
#[derive(Clone)]
pub struct CallbackError(Arc<dyn StdError + Send + Sync + 'static>);

/// A callback failure that is only a message.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

impl CallbackError {
    /// Wraps the error a callback returned.
    pub fn new<E: StdError + Send + Sync + 'static>(err: E) -> CallbackError {
        CallbackError(Arc::new(err))
    }

    /// A callback failure described by `message` alone.
    pub fn msg(message: impl Into<String>) -> CallbackError {
        CallbackError::new(Message(message.into()))
    }

    /// The original error, if it is an `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// The first `CallbackError` in `err`'s chain of sources (`err`
    /// itself included): the failure of the callback that started it all.
    pub fn find<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a CallbackError> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<CallbackError>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallbackError").field(&self.0).finish()
    }
}

/// A message, as a hook's `Err("...".into())` or `?` on an
/// `Option::ok_or("...")` gives it.
impl From<&str> for CallbackError {
    fn from(message: &str) -> CallbackError {
        CallbackError::msg(message)
    }
}

impl From<String> for CallbackError {
    fn from(message: String) -> CallbackError {
        CallbackError::msg(message)
    }
}

// The chain ends here: what the callback raised is reached with
// `downcast_ref`, not by walking further.
impl StdError for CallbackError {}

/// Two callback errors are equal when they are the same error or say the
/// same thing (so error enums that carry one can derive `PartialEq`).
impl PartialEq for CallbackError {
    fn eq(&self, other: &CallbackError) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }
}

impl Eq for CallbackError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {source}")]
    struct Outer {
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle {
        #[source]
        source: CallbackError,
    }

    #[derive(Debug, thiserror::Error, PartialEq)]
    #[error("original {0}")]
    struct Original(u32);

    #[test]
    fn the_original_is_found_through_the_chain() {
        let err = Outer {
            source: Middle {
                source: CallbackError::new(Original(7)),
            },
        };
        let found = CallbackError::find(&err).and_then(|c| c.downcast_ref::<Original>());
        assert_eq!(found, Some(&Original(7)));
        assert_eq!(err.to_string(), "outer: middle");
    }

    #[test]
    fn a_chain_without_a_callback_has_none() {
        let err = std::io::Error::other("plain");
        assert!(CallbackError::find(&err).is_none());
    }

    #[test]
    fn a_message_displays_as_itself_and_compares_by_text() {
        let a = CallbackError::msg("no backend");
        assert_eq!(a.to_string(), "no backend");
        assert_eq!(a, CallbackError::msg("no backend"));
        assert_ne!(a, CallbackError::msg("other"));
        assert!(a.downcast_ref::<Original>().is_none());
    }
}
