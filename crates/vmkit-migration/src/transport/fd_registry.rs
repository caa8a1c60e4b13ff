//! [`FdRegistry`]: descriptors a caller handed over by name (QEMU's
//! `getfd` / `closefd`), for `fd:NAME` transports to use.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use parking_lot::Mutex;

/// Named descriptors, owned until taken or closed. Shared between threads
/// (the monitor adds, a migration takes).
///
/// As QEMU's monitor: a name may not start with a digit; adding a name
/// that is already there closes the old descriptor and keeps the new one;
/// a transport that uses a descriptor takes it out of the registry (it is
/// closed when the stream ends).
///
/// ```
/// use vmkit_migration::transport::FdRegistry;
///
/// let fds = FdRegistry::new();
/// fds.add("mig", std::fs::File::open("/dev/null")?.into())?;
/// assert_eq!(fds.names(), ["mig"]);
/// let fd = fds.take("mig")?;
/// assert!(fds.is_empty());
/// drop(fd);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct FdRegistry {
    fds: Mutex<HashMap<String, OwnedFd>>,
}

/// A registry operation refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FdError {
    /// `add` with a name starting with a digit (it would read as a
    /// descriptor number); the descriptor was closed.
    #[error("Parameter 'fdname' expects a name not starting with a digit")]
    BadName {
        /// The name.
        name: String,
    },
    /// `take` of a name nobody added.
    #[error("File descriptor named '{name}' has not been found")]
    NotFound {
        /// The name.
        name: String,
    },
    /// `close` of a name nobody added.
    #[error("File descriptor named '{name}' not found")]
    NotFoundToClose {
        /// The name.
        name: String,
    },
}

impl FdRegistry {
    /// An empty registry.
    pub fn new() -> FdRegistry {
        FdRegistry::default()
    }

    /// Keeps `fd` under `name` (QEMU's `getfd`); a descriptor already
    /// under that name is closed. A name starting with a digit is refused
    /// and `fd` closed.
    pub fn add(&self, name: &str, fd: OwnedFd) -> Result<(), FdError> {
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(FdError::BadName { name: name.to_owned() });
        }
        // The replaced descriptor is closed after the lock is released.
        let old = self.fds.lock().insert(name.to_owned(), fd);
        drop(old);
        Ok(())
    }

    /// Takes the descriptor under `name` out of the registry: the caller
    /// owns it now.
    pub fn take(&self, name: &str) -> Result<OwnedFd, FdError> {
        self.fds
            .lock()
            .remove(name)
            .ok_or_else(|| FdError::NotFound { name: name.to_owned() })
    }

    /// Closes the descriptor under `name` (QEMU's `closefd`).
    pub fn close(&self, name: &str) -> Result<(), FdError> {
        let fd = self.fds.lock().remove(name);
        match fd {
            Some(fd) => {
                drop(fd);
                Ok(())
            }
            None => Err(FdError::NotFoundToClose { name: name.to_owned() }),
        }
    }

    /// The names held, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fds.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// How many descriptors are held.
    pub fn len(&self) -> usize {
        self.fds.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
